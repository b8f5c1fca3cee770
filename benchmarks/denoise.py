"""--denoise S: photo-x4 / photo-x4-real blends scored at several S, on two degradations.

`srgan eval`'s protocol (PSNR/SSIM on Y, x4, 4 px shaved) with the blended generator of
srgan.blend at each S, on LR made by the ``photo`` preset (blur, noise, JPEG; seed 0, as
`srgan eval --preset photo`) and by the ``bicubic`` preset (clean inputs).

    python benchmarks/denoise.py --hr ../shared/datasets/Set5 --hr ../shared/datasets/Set14
    python benchmarks/denoise.py --smoke     # two S values, one tiny synthetic set: seconds
"""

from __future__ import annotations

import argparse
import json
import tempfile
from pathlib import Path

import numpy as np

from srgan.blend import blended_model
from srgan.evaluate import evaluate_folders
from srgan.upscale import Upscaler

STRENGTHS = (0.0, 0.25, 0.5, 0.75, 1.0)


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--hr", action="append", default=[])
    ap.add_argument("--strength", type=float, action="append", default=None)
    ap.add_argument("--preset", action="append", default=None, help="default: photo and bicubic")
    ap.add_argument("--json", default=None)
    ap.add_argument("--smoke", action="store_true")
    a = ap.parse_args(argv)
    strengths = a.strength or ((0.0, 1.0) if a.smoke else STRENGTHS)
    presets = a.preset or ["photo", "bicubic"]
    hr = a.hr
    if a.smoke:
        from PIL import Image

        d = Path(tempfile.mkdtemp())
        Image.fromarray(np.random.default_rng(0).integers(0, 255, (40, 40, 3), dtype=np.uint8)).save(d / "a.png")
        hr, presets = [str(d)], presets[:1]
    rows = []
    for s in strengths:
        up = Upscaler(blended_model(s), device="cpu", precision="fp32")
        row = {"denoise": s}
        for preset in presets:
            data = evaluate_folders(up, hr, scale=4, preset=preset, device="cpu").to_dict()
            for ds in data["datasets"]:
                row[f"{ds['name']} {preset}"] = ds["mean"]["model"]
                row[f"{ds['name']} {preset} bicubic"] = ds["mean"]["bicubic"]
        rows.append(row)
        print(json.dumps(row), flush=True)
    cols = [k for k in rows[0] if k != "denoise" and not k.endswith(" bicubic")]
    print("\n| S | " + " | ".join(f"{c} PSNR / SSIM" for c in cols) + " |")
    print("|---|" + "---|" * len(cols))
    for r in rows:
        print(f"| {r['denoise']:g} | " + " | ".join(f"{r[c]['psnr_y']:.2f} / {r[c]['ssim_y']:.4f}" for c in cols) + " |")
    print("| bicubic | " + " | ".join(f"{rows[0][c + ' bicubic']['psnr_y']:.2f} / {rows[0][c + ' bicubic']['ssim_y']:.4f}"
                                      for c in cols) + " |")
    if a.json:
        Path(a.json).write_text(json.dumps(rows, indent=1) + "\n")
    return rows


if __name__ == "__main__":
    main()
