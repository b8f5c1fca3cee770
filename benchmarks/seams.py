"""Seam error of tiling with less context than the receptive radius, on a real image.

The engine's default overlap is the generator's receptive radius (40 LR px for 16 blocks),
which makes tiled output equal to one whole-image pass. Less overlap is less recomputation
(faster), at the price of seams. This script measures that price for an embedded model on a
real photo: for each overlap, the maximum and RMS difference from the whole-image output
(float, in 8-bit units), its PSNR, and the fraction of pixels whose 8-bit value changes.

    python benchmarks/seams.py --image ../shared/datasets/BSD100/<file> --size 192 --tile 48
    python benchmarks/seams.py --smoke
"""

from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np
import torch
from PIL import Image

from srgan import Generator, GeneratorConfig, Upscaler
from srgan.tiling import upscale_tiled

from common import parse, parser


def upscale_float(up: Upscaler, lr: np.ndarray, tile: int, overlap: int) -> np.ndarray:
    """(H, W, 3) uint8 -> float32 network output in [0, 255] (before rounding), tiled."""
    src = torch.from_numpy(lr).permute(2, 0, 1).float().div(255)
    out = torch.zeros(3, lr.shape[0] * up.scale, lr.shape[1] * up.scale)
    upscale_tiled(up.model, src, out, scale=up.scale, tile=tile, overlap=overlap, device=up.device,
                  channels_last=True)
    return out.permute(1, 2, 0).mul(255).numpy()


def main(argv=None) -> list[dict]:
    p = parser(__doc__)
    p.add_argument("--image", type=Path, help="an RGB photo (a centre crop is used as the LR input)")
    p.add_argument("--model", default="photo-x4")
    p.add_argument("--size", type=int, default=192, help="LR crop side [default: 192]")
    p.add_argument("--tile", type=int, default=48, help="tile side, small so that there are many seams [default: 48]")
    p.add_argument("--overlaps", default="0,4,8,16,24,32", help="comma-separated [default: 0,4,8,16,24,32]")
    args = parse(p, argv, "tiny random model and image: seconds")
    torch.manual_seed(0)
    if args.smoke:
        up = Upscaler(Generator(GeneratorConfig(channels=8, blocks=2)), device="cpu", precision="fp32")
        lr = np.random.default_rng(0).integers(0, 256, (32, 32, 3), dtype=np.uint8)
        args.tile, overlaps = 8, [0, 2, up.overlap]
    else:
        up = Upscaler.from_pretrained(args.model, device="cpu", precision="fp32")
        im = np.asarray(Image.open(args.image).convert("RGB"))
        y, x = (im.shape[0] - args.size) // 2, (im.shape[1] - args.size) // 2
        lr = np.ascontiguousarray(im[y:y + args.size, x:x + args.size])
        overlaps = [int(o) for o in args.overlaps.split(",")] + [up.overlap]
    with torch.inference_mode():
        whole = upscale_float(up, lr, tile=0, overlap=up.overlap)
        rows = []
        for o in overlaps:
            tiled = upscale_float(up, lr, tile=args.tile, overlap=o)
            diff = np.abs(tiled - whole)
            rms = float(np.sqrt((diff ** 2).mean()))
            changed = float((np.clip(np.round(tiled), 0, 255) != np.clip(np.round(whole), 0, 255)).mean())
            rows.append({"overlap": o, "max_abs_diff": float(diff.max()), "rms_diff": rms,
                         "psnr_db": 20 * math.log10(255 / rms) if rms > 0 else math.inf,
                         "uint8_pixels_changed": changed})
    print(f"model {up.info.name}, LR crop {lr.shape[1]}x{lr.shape[0]}, tile {args.tile}, "
          f"receptive radius {up.overlap}; differences from the whole-image output, in 8-bit units")
    print("| overlap (LR px) | max abs diff | PSNR vs whole | 8-bit values changed |\n|---:|---:|---:|---:|")
    for r in rows:
        psnr = "exact" if math.isinf(r["psnr_db"]) else f"{r['psnr_db']:.1f} dB"
        print(f"| {r['overlap']} | {r['max_abs_diff']:.2g} | {psnr} | {100 * r['uint8_pixels_changed']:.3f}% |")
    if args.json:
        Path(args.json).write_text(json.dumps({"model": up.info.name, "tile": args.tile, "rows": rows}, indent=2))
    return rows


if __name__ == "__main__":
    main()
