"""--outscale above the model's scale: a second model pass or a resize? Scored on Set5/Set14.

Protocol of `srgan eval` (datasets/README.md): HR modcropped to a multiple of F, LR = the
bicubic preset's x F downscale, PSNR/SSIM on BT.601 Y with F pixels shaved. Methods at
F = 8 with an x4 model (and any --outscale given):

- resize: model x4, then antialiased bicubic up to x F (srgan.outscale, SECOND_PASS = False)
- second-pass: model x4 twice (x16), then antialiased resize down to x F (SECOND_PASS = True)
- bicubic: Pillow bicubic x F (the baseline)

    python benchmarks/outscale.py --hr ../shared/datasets/Set5 --hr ../shared/datasets/Set14
    python benchmarks/outscale.py --smoke     # tiny random model, synthetic photos: seconds
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import numpy as np

from srgan.evaluate import _load_photo, bicubic_upsample, modcrop, photo_lr
from srgan.metrics import psnr_y, ssim_y
from srgan.outscale import Outscaler
from srgan.upscale import Upscaler


def score(up, files, outscale: int) -> dict:
    """{set: {method: {psnr_y, ssim_y}}} means, and per-method model seconds."""
    methods = {"resize": Outscaler(up, outscale, second_pass=False),
               "second-pass": Outscaler(up, outscale, second_pass=True)}
    sums, seconds, n = {}, {m: 0.0 for m in methods}, 0
    for path in files:
        hr, _ = _load_photo(path)
        hr = modcrop(hr, outscale)
        lr = photo_lr(hr, outscale, "bicubic")
        outs = {"bicubic": bicubic_upsample(lr, outscale)}
        for name, o in methods.items():
            t = time.perf_counter()
            outs[name] = o.upscale(lr)
            seconds[name] += time.perf_counter() - t
        for name, sr in outs.items():
            s = sums.setdefault(name, {"psnr_y": 0.0, "ssim_y": 0.0})
            s["psnr_y"] += psnr_y(sr, hr, outscale)
            s["ssim_y"] += ssim_y(sr, hr, outscale)
        n += 1
    return {"n_images": n, "mean": {m: {k: v / n for k, v in s.items()} for m, s in sums.items()},
            "model_seconds": seconds}


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--model", default="photo-x4")
    ap.add_argument("--hr", action="append", default=[])
    ap.add_argument("--outscale", type=int, action="append", default=None, help="default: 8")
    ap.add_argument("--json", default=None)
    ap.add_argument("--smoke", action="store_true")
    a = ap.parse_args(argv)
    if a.smoke:
        import tempfile

        from PIL import Image

        from srgan.models import Generator, GeneratorConfig

        d = Path(tempfile.mkdtemp())
        rng = np.random.default_rng(0)
        for i in range(2):
            Image.fromarray(rng.integers(0, 255, (48, 40, 3), dtype=np.uint8)).save(d / f"{i}.png")
        up = Upscaler(Generator(GeneratorConfig(scale=2, channels=8, blocks=1)), device="cpu")
        sets, scales = {"smoke": sorted(d.glob("*.png"))}, [4]
    else:
        up = Upscaler.from_pretrained(a.model, device="cpu", precision="fp32")
        sets = {Path(h).name: sorted(p for p in Path(h).iterdir() if p.suffix.lower() == ".png") for h in a.hr}
        scales = a.outscale or [8]
    report = {"model": a.model if not a.smoke else "smoke", "results": []}
    for f in scales:
        for name, files in sets.items():
            r = score(up, files, f)
            report["results"].append({"set": name, "outscale": f, **r})
            cells = "  ".join(f"{m} {v['psnr_y']:.2f} dB / {v['ssim_y']:.4f}" for m, v in r["mean"].items())
            secs = ", ".join(f"{m} {s:.1f} s" for m, s in r["model_seconds"].items())
            print(f"{name} x{f} ({r['n_images']} img): {cells}  [model time: {secs}]", flush=True)
    if a.json:
        Path(a.json).write_text(json.dumps(report, indent=1) + "\n")
    return report


if __name__ == "__main__":
    main()
