"""`pip install .` gives a complete srgan: the wheel carries the embedded models with their
scores, and the installed `srgan` command works from outside the repository.

The wheel is built from a copy of the sources (a setuptools build writes build/ and
*.egg-info beside setup.cfg, which must not land in the repository), with pip's default build
isolation (setuptools and wheel from the package index or its mirror), then installed with
--no-deps into a fresh venv that sees this environment's torch, numpy, ... through
--system-site-packages.
"""

import os
import shutil
import subprocess
import sys
import venv
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from srgan import Upscaler

REPO = Path(__file__).resolve().parents[1]
BUILD_INPUTS = ("setup.cfg", "pyproject.toml", "README.md", "srgan", "cli")  # what setup.cfg reads
ENV = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"} | {"OMP_NUM_THREADS": "1",
                                                                    "PYTHONWARNINGS": "ignore"}


def _run(*args, cwd: Path) -> str:
    proc = subprocess.run([str(a) for a in args], cwd=cwd, env=ENV, capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, f"{' '.join(map(str, args))}\n{proc.stdout}\n{proc.stderr}"
    return proc.stdout


@pytest.mark.slow
def test_wheel_installs_the_models_with_their_scores_and_upscales(tmp_path):
    src = tmp_path / "src"
    src.mkdir()
    for name in BUILD_INPUTS:
        path = REPO / name
        if path.is_dir():
            shutil.copytree(path, src / name, ignore=shutil.ignore_patterns("__pycache__", "*.pyc"))
        else:
            shutil.copy2(path, src / name)
    _run(sys.executable, "-m", "pip", "wheel", "--no-deps", "-q", "-w", tmp_path / "dist", src, cwd=tmp_path)
    (wheel,) = (tmp_path / "dist").glob("srgan-*.whl")

    env = tmp_path / "venv"
    venv.create(env, system_site_packages=True, with_pip=False)
    python, srgan = env / "bin" / "python", env / "bin" / "srgan"
    _run(sys.executable, "-m", "pip", "--python", python, "install", "--no-deps", "--no-index", "-q", wheel,
         cwd=tmp_path)

    outside = tmp_path / "elsewhere"  # not the repository: nothing is imported from the source tree
    outside.mkdir()
    where = _run(python, "-c", "import srgan.cli; print(srgan.__file__)", cwd=outside)
    assert Path(where.strip()).is_relative_to(env), where

    models = _run(srgan, "models", cwd=outside)
    for name in ("photo-x4", "photo-x4-real", "galaxy-x4"):
        assert f"{name}: x4" in models
    assert "not evaluated" not in models and "STALE" not in models, models
    assert "Set5 (5 img, bicubic LR, psnr_y / ssim_y)" in models  # photo-x4's scores, from its .eval.json

    crop = Image.open(REPO / "data" / "photos" / "flower.png").convert("RGB").crop((0, 0, 32, 32))
    crop.save(outside / "flower32.png")
    _run(srgan, "upscale", "flower32.png", "flower32_x4.png", "--device", "cpu", cwd=outside)
    with Image.open(outside / "flower32_x4.png") as im:
        out = np.asarray(im.convert("RGB")).astype(int)
    assert out.shape == (128, 128, 3)
    expected = Upscaler.from_pretrained("photo-x4", device="cpu").upscale(np.asarray(crop)).astype(int)
    assert np.abs(out - expected).max() <= 1  # the installed weights and code give the source tree's pixels
