"""README.md's Python examples run as written, on the bundled samples in data/, and give what
their comments say.

The ```python blocks are executed in order, each in a fresh namespace, with the working
directory a temporary copy of data/'s parent: the examples' relative paths resolve there and
whatever they write stays out of the repository. Tracebacks point at README.md's lines.
"""

import re
import shutil
from pathlib import Path

import numpy as np
import torch
from astropy.io import fits
from astropy.nddata import CCDData
from PIL import Image

REPO = Path(__file__).resolve().parents[1]
README = REPO / "README.md"

# name defined by some block -> what its comment promises (a renamed variable fails loudly).
PROMISES = {
    "big": lambda v: isinstance(v, np.ndarray) and v.shape == (512, 512, 3) and v.dtype == np.uint8,
    "im": lambda v: isinstance(v, Image.Image) and v.size == (512, 512) and v.mode == "RGB",
    "t": lambda v: isinstance(v, torch.Tensor) and tuple(v.shape) == (3, 128, 128),
    "g": lambda v: isinstance(v, torch.nn.Module) and v.info.name == "photo-x4" and len(v.info.sha256) == 64,
    "hdu_x4": lambda v: isinstance(v, fits.ImageHDU) and v.data.shape == (400, 400),
    "ccd_x4": lambda v: isinstance(v, CCDData) and v.shape == (400, 400),
}


NOT_RUN = "# (needs your own model file)"  # first line of a block that names a file only a user has


def python_blocks(text: str) -> list[tuple[int, str]]:
    """(first line number, code) of every ```python block in ``text``, except NOT_RUN ones."""
    return [(text.count("\n", 0, m.start(1)) + 1, m.group(1))
            for m in re.finditer(r"^```python\n(.*?)^```$", text, flags=re.M | re.S)
            if not m.group(1).startswith(NOT_RUN)]


def test_python_blocks_are_found():
    blocks = python_blocks("intro\n```python\nx = 1\n```\n```bash\nls\n```\n```python\ny = 2\nz = 3\n```\n")
    assert blocks == [(3, "x = 1\n"), (9, "y = 2\nz = 3\n")]
    assert python_blocks(f"```python\n{NOT_RUN}\nx = 1\n```\n") == []


def test_readme_python_examples_run_and_keep_their_promises(tmp_path, monkeypatch):
    shutil.copytree(REPO / "data", tmp_path / "data")
    monkeypatch.chdir(tmp_path)
    blocks = python_blocks(README.read_text())
    assert len(blocks) >= 2, "README.md should hold the Python API and the FITS examples"
    defined = {}
    for line, code in blocks:
        namespace = {"__name__": "readme"}
        exec(compile("\n" * (line - 1) + code, str(README), "exec"), namespace)
        defined |= {k: v for k, v in namespace.items() if k in PROMISES}
    assert sorted(defined) == sorted(PROMISES), "a README example renamed a variable: update PROMISES"
    for name, promise in PROMISES.items():
        assert promise(defined[name]), f"README.md: `{name}` is not what its comment says: {defined[name]!r}"
    with fits.open(tmp_path / "out" / "m51_x4.fits") as hdul:  # upscale_fits, file to file
        assert hdul[0].data.shape == (512, 512) and hdul[0].header["SRFLUX"] == "surface-brightness"
