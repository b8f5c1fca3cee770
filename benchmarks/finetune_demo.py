"""Fine-tuning demo: a few hundred steps on a small folder of another domain beat the shipped model there.

The domain is line art and text (rendered here with Pillow: words in several sizes, lines,
outlines and filled shapes on plain backgrounds), which natural-photo training sets barely
contain. The script

1. renders ``--train`` training images and ``--test`` test images (different seeds),
2. fine-tunes the shipped ``photo-x4`` on the training folder with
   ``srgan train --init photo-x4 --pretrain-steps STEPS`` (the command is printed),
3. scores the shipped and the fine-tuned model on the test folder with ``srgan eval``'s
   protocol (bicubic LR, PSNR/SSIM on Y), and writes a README-ready table and a figure
   (bicubic | photo-x4 | fine-tuned | HR crops of the first test image).

    python benchmarks/finetune_demo.py --out runs/finetune-demo          # ~10 min on 2 CPU cores
    python benchmarks/finetune_demo.py --out /tmp/demo --smoke           # tiny: seconds
"""

from __future__ import annotations

import argparse
import json
import random
import shlex
import shutil
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
from PIL import Image, ImageDraw, ImageFont

from srgan import Upscaler
from srgan.degrade import degrade
from srgan.evaluate import evaluate_folders, markdown

WORDS = ("super resolution", "galaxy", "SRGAN", "tile", "pixel", "flux", "x4", "Set5", "PSNR 31.2 dB",
         "astropy", "kornia", "torch", "WCS", "NGC 5194", "M51", "readme", "batch", "0123456789", "arXiv:1609.04802")


def render_lineart(path: Path, size: int, rng: random.Random) -> None:
    """One line-art image: a light background, then text, lines, outlines and filled shapes."""
    bg = tuple(rng.randint(225, 255) for _ in range(3))
    im = Image.new("RGB", (size, size), bg)
    draw = ImageDraw.Draw(im)

    def ink():
        return tuple(rng.randint(0, 120) for _ in range(3)) if rng.random() < 0.7 else \
            tuple(rng.randint(0, 255) for _ in range(3))

    def point():
        return rng.randint(0, size), rng.randint(0, size)

    for _ in range(rng.randint(3, 7)):  # shapes under the text
        x0, y0 = point()
        x1, y1 = x0 + rng.randint(10, size // 2), y0 + rng.randint(10, size // 2)
        kind = rng.choice(("rect", "ellipse", "line", "poly"))
        width = rng.randint(1, 4)
        if kind == "rect":
            draw.rectangle((x0, y0, x1, y1), outline=ink(), width=width, fill=ink() if rng.random() < 0.3 else None)
        elif kind == "ellipse":
            draw.ellipse((x0, y0, x1, y1), outline=ink(), width=width)
        elif kind == "line":
            draw.line((x0, y0, x1, y1), fill=ink(), width=width)
        else:
            draw.polygon([point() for _ in range(rng.randint(3, 5))], outline=ink(), width=width)
    for _ in range(rng.randint(4, 9)):  # text of several sizes
        font = ImageFont.load_default(size=rng.randint(10, 36))
        draw.text(point(), rng.choice(WORDS), fill=ink(), font=font, anchor="mm")
    im.save(path)


def render_folder(folder: Path, n: int, size: int, seed: int) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    rng = random.Random(seed)
    for i in range(n):
        render_lineart(folder / f"lineart_{seed}_{i:03d}.png", size, rng)
    return folder


def busiest_window(image: np.ndarray, size: int, stride: int = 16) -> tuple[int, int]:
    """Top-left corner of the size x size window with the most edge energy (where SR matters)."""
    g = image.astype(np.float32).mean(axis=2)
    energy = np.abs(np.diff(g, axis=0))[:, :-1] + np.abs(np.diff(g, axis=1))[:-1]
    best, corner = -1.0, (0, 0)
    for y in range(0, energy.shape[0] - size + 1, stride):
        for x in range(0, energy.shape[1] - size + 1, stride):
            e = float(energy[y:y + size, x:x + size].sum())
            if e > best:
                best, corner = e, (y, x)
    return corner


def figure(models: dict[str, Upscaler], hr_path: Path, out: Path, crop: int = 96) -> None:
    """bicubic | each model | HR: the busiest crop of the first test image, x 2 (nearest)."""
    import torch

    hr = np.array(Image.open(hr_path).convert("RGB"))
    h, w = (s // 4 * 4 for s in hr.shape[:2])
    hr = hr[:h, :w]
    lr_t = degrade(torch.from_numpy(hr).permute(2, 0, 1)[None].float() / 255, "bicubic", 4)
    lr = (lr_t[0].permute(1, 2, 0).clamp(0, 1) * 255).round().byte().numpy()
    bic = np.asarray(Image.fromarray(lr).resize((w, h), Image.BICUBIC))
    panels = [bic] + [up.upscale(lr) for up in models.values()] + [hr]
    y0, x0 = busiest_window(hr, crop)
    tiles = [Image.fromarray(p[y0:y0 + crop, x0:x0 + crop]).resize((crop * 2, crop * 2), Image.NEAREST) for p in panels]
    canvas = Image.new("RGB", (len(tiles) * (crop * 2 + 4) - 4, crop * 2), (255, 255, 255))
    for i, t in enumerate(tiles):
        canvas.paste(t, (i * (crop * 2 + 4), 0))
    canvas.save(out)


def main(argv=None) -> dict:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--out", type=Path, required=True, help="work folder (data, run, results)")
    p.add_argument("--steps", type=int, default=300, help="fine-tuning steps [default: 300]")
    p.add_argument("--batch-size", type=int, default=8)
    p.add_argument("--lr", type=float, default=1e-4)
    p.add_argument("--train", type=int, default=40, help="training images [default: 40]")
    p.add_argument("--test", type=int, default=10, help="test images [default: 10]")
    p.add_argument("--device", default="auto")
    p.add_argument("--smoke", action="store_true", help="tiny settings: seconds")
    args = p.parse_args(argv)
    size = 192
    if args.smoke:
        args.steps, args.batch_size, args.train, args.test, size = 2, 2, 4, 2, 64
    train = render_folder(args.out / "lineart-train", args.train, size, seed=1)
    test = render_folder(args.out / "lineart-test", args.test, 256 if not args.smoke else 64, seed=2)
    run = args.out / "run"
    cmd = ["srgan", "train", "--init", "photo-x4", "--hr", str(train), "--out", str(run),
           "--pretrain-steps", str(args.steps), "--gan-steps", "0", "--batch-size", str(args.batch_size),
           "--patch-size", "96" if not args.smoke else "32", "--lr", str(args.lr), "--schedule", "cosine",
           "--pixel-loss", "l1", "--val-every", str(max(args.steps // 3, 1)), "--log-every", "10",
           "--device", args.device, "--no-progress", "--seed", "0"]
    print("$", shlex.join(cmd), flush=True)
    t0 = time.time()
    subprocess.run([sys.executable, "-m", "srgan.cli", *cmd[1:]], check=True)
    train_s = time.time() - t0
    tuned = args.out / "photo-x4-lineart.safetensors"  # the file name is the model's name in the tables
    shutil.copyfile(run / "model.safetensors", tuned)
    models = {"photo-x4": Upscaler.from_pretrained("photo-x4", device="cpu", precision="fp32"),
              "fine-tuned": Upscaler.from_pretrained(tuned, device="cpu", precision="fp32")}
    results, tables = {}, []
    for name, up in models.items():
        report = evaluate_folders(up, [test])
        results[name] = report.datasets[0].mean()
        tables.append(markdown(report))
    first = sorted(test.glob("*.png"))[0]
    figure(models, first, args.out / "finetune-lineart.png")
    gain = results["fine-tuned"]["model"]["psnr_y"] - results["photo-x4"]["model"]["psnr_y"]
    summary = {"steps": args.steps, "batch_size": args.batch_size, "train_images": args.train,
               "test_images": args.test, "train_seconds": round(train_s, 1), "command": shlex.join(cmd),
               "bicubic": results["photo-x4"]["bicubic"], "photo-x4": results["photo-x4"]["model"],
               "fine-tuned": results["fine-tuned"]["model"], "psnr_gain_db": gain}
    (args.out / "finetune_demo.json").write_text(json.dumps(summary, indent=2))
    print("\n\n".join(tables))
    print(f"\nFINETUNE steps={args.steps} train_s={train_s:.0f} psnr_y photo-x4={summary['photo-x4']['psnr_y']:.2f} "
          f"fine-tuned={summary['fine-tuned']['psnr_y']:.2f} bicubic={summary['bicubic']['psnr_y']:.2f} "
          f"gain={gain:+.2f} dB; figure {args.out / 'finetune-lineart.png'}")
    return summary


if __name__ == "__main__":
    main()
