"""Plain helpers shared by several test files (fixtures live in conftest.py).

Test files import these as ``from helpers import ...`` (pytest puts tests/ on sys.path); they
never import each other or conftest.py.
"""

from pathlib import Path
from typing import Callable

import numpy as np
import pytest
import torch
from PIL import Image, ImageDraw

from srgan.checkpoint import load_model, save_model
from srgan.models import Generator, GeneratorConfig
from srgan.normalize import Normalization
from srgan.upscale import Upscaler

REPO = Path(__file__).resolve().parents[1]
SHARED = REPO.parent / "shared" / "datasets"


def shared_dataset(name: str) -> Path:
    """Path to a set in ../shared/datasets, or skip the test with the reason."""
    path = SHARED / name
    if not path.is_dir():
        pytest.skip(f"shared dataset {name} not found at {path} (CI clones ../shared beside the repo)")
    return path


def draw_shapes(im: Image.Image, rng: np.random.Generator, count: tuple[int, int], min_side: int,
                colour: Callable[[np.random.Generator], int | tuple]) -> Image.Image:
    """Draw a seeded number in [count) of ellipses, rectangles and 2 px lines onto square ``im``
    (sides from ``min_side`` to a third of the image, fills from ``colour(rng)``); returns ``im``."""
    size = im.width
    draw = ImageDraw.Draw(im)
    for _ in range(int(rng.integers(*count))):
        x0, y0 = (int(v) for v in rng.integers(0, size - 4, 2))
        w, h = (int(v) for v in rng.integers(min_side, size // 3, 2))
        color = colour(rng)
        shape = int(rng.integers(3))
        if shape == 0:
            draw.ellipse([x0, y0, x0 + w, y0 + h], fill=color)
        elif shape == 1:
            draw.rectangle([x0, y0, x0 + w, y0 + h], fill=color)
        else:
            draw.line([x0, y0, x0 + w, y0 + h], fill=color, width=2)
    return im


def synthetic_image(rng: np.random.Generator, size: int = 48) -> Image.Image:
    """A gradient background with flat-coloured ellipses, rectangles and lines (edges bicubic blurs)."""
    yy, xx = np.mgrid[0:size, 0:size] / size
    c0, cx, cy = rng.random(3), rng.random(3) - 0.5, rng.random(3) - 0.5
    bg = np.clip(c0 + cx * xx[..., None] + cy * yy[..., None], 0, 1)
    im = Image.fromarray((bg * 255).astype(np.uint8))
    return draw_shapes(im, rng, (6, 12), 3, lambda r: tuple(int(v) for v in r.integers(0, 256, 3)))


def make_photos(folder: Path, n: int, size: int = 48, seed: int = 0) -> Path:
    """``n`` seeded synthetic RGB PNGs of ``size`` px in ``folder`` (created); returns the folder."""
    folder.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(seed)
    for i in range(n):
        synthetic_image(rng, size).save(folder / f"img{i:02d}.png")
    return folder


def tiny_upscaler(path: Path, scale: int = 2, normalization: Normalization = Normalization("asinh"),
                  channels: int = 1) -> Upscaler:
    """A 4-channel, 1-block astro model saved to ``path`` and wrapped in an Upscaler."""
    torch.manual_seed(0)
    g = Generator(GeneratorConfig(scale=scale, in_channels=channels, out_channels=channels, channels=4, blocks=1))
    save_model(path, g.eval(), normalization=normalization, preset="astro")
    up = Upscaler(load_model(path), device="cpu")
    up.model.to(memory_format=torch.channels_last)  # 4-channel convs run ~10x faster so on the CPU
    return up
