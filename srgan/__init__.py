"""srgan: SRGAN super-resolution for photos and astronomical FITS images.

The public classes below are imported on first use (PEP 562 ``__getattr__``), so that
``import srgan.imageio`` or ``srgan.atomic`` reads and writes images without loading torch.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING

__version__ = "0.1.0"

from srgan.errors import SrganError  # noqa: E402  (plain Python, no dependencies)

if TYPE_CHECKING:  # what the names below are, for type checkers and jump-to-definition
    from srgan.checkpoint import ModelInfo, load_model, save_model
    from srgan.models import Discriminator, Generator, GeneratorConfig
    from srgan.upscale import Upscaler

# public name -> the module that defines it
_HOMES = {
    "Generator": "srgan.models", "GeneratorConfig": "srgan.models", "Discriminator": "srgan.models",
    "ModelInfo": "srgan.checkpoint", "load_model": "srgan.checkpoint", "save_model": "srgan.checkpoint",
    "Upscaler": "srgan.upscale",
}

__all__ = ["__version__", "SrganError", *_HOMES]


def __getattr__(name: str):
    if name not in _HOMES:
        raise AttributeError(f"module 'srgan' has no attribute {name!r}")
    value = getattr(importlib.import_module(_HOMES[name]), name)
    globals()[name] = value  # later look-ups skip this function
    return value


def __dir__():
    return sorted(set(globals()) | set(_HOMES))
