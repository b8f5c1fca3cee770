"""Seam error of tiling community architectures (spandrel), to choose their default overlap.

srgan's own generators have a receptive radius computed from the architecture; community
models (``srgan.community``) do not, and for deep ones (RRDBNet: hundreds of px) it is too
large to use. This script measures what tiling with a given overlap costs for each family:
a real photo crop is upscaled whole (one pass, reflected context of ``--reference`` px) and
tile by tile with srgan's engine for several overlaps; for each, the maximum and RMS
difference from the whole-image output, its PSNR and the fraction of 8-bit values that
change. Differences are in 8-bit units of the output's range (255 x diff / (max - min) of the
whole-image output), because random-weight networks do not output [0, 1] images; the raw,
unclamped network output is compared.

Weights are random (no downloads): the architectures are spandrel's own classes in the
layouts of well-known files (Real-ESRGAN x4plus, realesr-general-x4v3, SwinIR-light x4),
and each is recognised by spandrel from its state dict first. Windows start on the model's
attention-window grid (``CommunityConfig.align``, as ``srgan.Upscaler`` does); window
models are also measured without that alignment, to show why it is needed. As a check of what random
weights say about trained ones, srgan's trained ``photo-x4`` (SRResNet) is measured beside a
random-weight network of the same architecture.

    python benchmarks/community_seams.py --image ../shared/datasets/BSD100/101085.jpg
    python benchmarks/community_seams.py --smoke
"""

from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np
import torch
from PIL import Image

from srgan import Generator, GeneratorConfig, load_model
from srgan.community import community_model, pad_to_requirements
from srgan.tiling import upscale_tiled

from common import parse, parser


def spandrel_models(smoke: bool) -> dict:
    """name -> (family, nn.Module with random weights), in well-known file layouts."""
    from spandrel.architectures.Compact import Compact
    from spandrel.architectures.ESRGAN import ESRGAN
    from spandrel.architectures.SwinIR import SwinIR

    if smoke:
        return {
            "RRDBNet tiny": ("CNN", ESRGAN(num_filters=8, num_blocks=1, scale=2)),
            "SwinIR tiny": ("window attention", SwinIR(img_size=16, embed_dim=12, depths=[2], num_heads=[2],
                                                       window_size=8, mlp_ratio=2, upscale=2,
                                                       upsampler="pixelshuffledirect")),
        }
    return {
        "RRDBNet (Real-ESRGAN x4plus: 64 nf, 23 blocks)": ("CNN", ESRGAN(num_filters=64, num_blocks=23, scale=4)),
        "SRVGGNetCompact (realesr-general-x4v3: 64 nf, 32 convs)": ("CNN", Compact(num_feat=64, num_conv=32, upscale=4)),
        "SwinIR-light x4 (60 dim, 4x6 blocks, window 8)": (
            "window attention", SwinIR(img_size=64, embed_dim=60, depths=[6] * 4, num_heads=[6] * 4, window_size=8,
                                       mlp_ratio=2, upscale=4, upsampler="pixelshuffledirect")),
    }


def raw_fn(module: torch.nn.Module):
    """The engine's view of a spandrel module without spandrel's final clamp: padded to its
    size requirements, cropped back. Returns (fn, scale, family default overlap, align)."""
    from spandrel import MAIN_REGISTRY

    model = community_model(MAIN_REGISTRY.load(dict(module.state_dict())))  # spandrel recognises the layout
    c = model.config
    net = model.net.eval()

    def fn(x):
        h, w = x.shape[-2:]
        return net(pad_to_requirements(x, c.multiple_of, c.minimum))[..., : h * c.scale, : w * c.scale]

    return fn, c.scale, c.overlap, c.align


def upscale_float(fn, scale: int, lr: np.ndarray, tile: int, overlap: int, align: int = 1) -> np.ndarray:
    """(H, W, 3) uint8 -> the network's float output (3, sH, sW), tiled by srgan's engine."""
    src = torch.from_numpy(lr).permute(2, 0, 1).float().div(255)
    out = torch.zeros(3, lr.shape[0] * scale, lr.shape[1] * scale)
    upscale_tiled(fn, src, out, scale=scale, tile=tile, overlap=overlap, device="cpu", align=align)
    return out.numpy()


def seam_rows(fn, scale: int, lr: np.ndarray, tile: int, overlaps: list[int], reference: int,
              align: int = 1) -> list[dict]:
    """Differences from the whole-image output for each overlap, in 8-bit units of its range."""
    whole = upscale_float(fn, scale, lr, tile=0, overlap=reference, align=align)
    lo, span = float(whole.min()), float(whole.max() - whole.min()) or 1.0

    def levels(y):
        return np.clip(np.round((y - lo) * (255 / span)), 0, 255)

    rows = []
    for o in sorted({-(-o // align) * align for o in overlaps}):  # the engine rounds overlaps up to the grid
        tiled = upscale_float(fn, scale, lr, tile=tile, overlap=o, align=align)
        diff = np.abs(tiled - whole) * (255 / span)
        rms = float(np.sqrt((diff ** 2).mean()))
        rows.append({"overlap": o, "max_abs_diff": float(diff.max()), "rms_diff": rms,
                     "psnr_db": 20 * math.log10(255 / rms) if rms > 0 else math.inf,
                     "uint8_pixels_changed": float((levels(tiled) != levels(whole)).mean())})
    return rows


def main(argv=None) -> list[dict]:
    p = parser(__doc__)
    p.add_argument("--image", type=Path, help="an RGB photo (a centre crop is the LR input) [default: random pixels]")
    p.add_argument("--size", type=int, default=60,
                   help="LR crop side [default: 60, not a multiple of the attention windows]")
    p.add_argument("--tile", type=int, default=32, help="tile side [default: 32: four tiles, two seams]")
    p.add_argument("--overlaps", default="0,4,8,16,24,32,48", help="comma-separated [default: 0,4,8,16,24,32,48]")
    p.add_argument("--reference", type=int, default=64,
                   help="reflected context of the whole-image pass [default: 64]")
    p.add_argument("--no-calibration", action="store_true", help="skip photo-x4 vs its random-weight twin")
    p.add_argument("--only", default=None, metavar="TEXT", help="only the models whose name contains TEXT")
    args = parse(p, argv, "tiny random models and image: seconds")
    torch.manual_seed(0)
    torch.set_grad_enabled(False)
    overlaps = [int(o) for o in args.overlaps.split(",")]
    if args.smoke:
        args.size, args.tile, args.reference, overlaps = 24, 12, 24, [0, 4, 24]
    if args.image and not args.smoke:
        im = np.asarray(Image.open(args.image).convert("RGB"))
        y, x = (im.shape[0] - args.size) // 2, (im.shape[1] - args.size) // 2
        lr = np.ascontiguousarray(im[y:y + args.size, x:x + args.size])
        source = f"{args.image.name}, centre {args.size}x{args.size}"
    else:
        lr = np.random.default_rng(0).integers(0, 256, (args.size, args.size, 3), dtype=np.uint8)
        source = f"random pixels {args.size}x{args.size}"

    models = []  # (name, family, fn, scale, default overlap or None, align)
    if not args.smoke and not args.no_calibration:
        trained = load_model("photo-x4")
        twin = Generator(trained.config).eval()
        models += [("SRResNet photo-x4, trained (calibration)", "CNN", trained, 4, None, 1),
                   ("SRResNet photo-x4 architecture, random weights", "CNN", twin, 4, None, 1)]
    for name, (family, module) in spandrel_models(args.smoke).items():
        fn, scale, default, align = raw_fn(module.eval())
        models.append((name, family, fn, scale, default, align))
        if align > 1 and not args.smoke:  # what the engine did before it aligned windows
            models.append((f"{name}, windows not aligned", family, fn, scale, default, 1))

    if args.only:
        models = [m for m in models if args.only.lower() in m[0].lower()]
    results = []
    print(f"LR input: {source}; tile {args.tile}; differences from one whole-image pass "
          f"({args.reference} px reflected context), in 8-bit units of the output's range")
    print("| model | family | overlap (LR px) | max abs diff | PSNR vs whole | 8-bit values changed |")
    print("|---|---|---:|---:|---:|---:|")
    for name, family, fn, scale, default, align in models:
        rows = seam_rows(fn, scale, lr, args.tile, overlaps, args.reference, align)
        results.append({"model": name, "family": family, "scale": scale, "default_overlap": default,
                        "align": align, "rows": rows})
        for r in rows:
            psnr = "exact" if math.isinf(r["psnr_db"]) else f"{r['psnr_db']:.1f} dB"
            mark = " (default)" if r["overlap"] == default else ""
            print(f"| {name} | {family} | {r['overlap']}{mark} | {r['max_abs_diff']:.2g} | {psnr} | "
                  f"{100 * r['uint8_pixels_changed']:.3f}% |", flush=True)
    if args.json:
        Path(args.json).write_text(json.dumps({"source": source, "tile": args.tile, "reference": args.reference,
                                               "models": results}, indent=2))
    return results


if __name__ == "__main__":
    main()
