"""Self-ensemble ("x8"): average a generator's outputs over the 8 flips and rotations of its input.

Test-time augmentation of EDSR (Lim et al. 2017): the input is transformed by each of the 8
symmetries of the square (4 rotations by 90 degrees, each with and without a mirror), the
generator is run on each, each output is transformed back and the 8 are averaged. It gains
a little PSNR at 8 times the compute, with no retraining.

:class:`SelfEnsemble` is a module with the generator's ``.config`` and ``.info``, so the
tiled engine (``srgan.tiling``) and :class:`srgan.upscale.Upscaler` run it like any
generator: a flip or a rotation moves no input pixel further from the output pixel it
feeds, so the receptive radius, and with it the tiled == whole-image guarantee, is the
generator's. The 8 passes run one after the other, so the activation memory of a pass (the
tile sizing) is the generator's too.
"""

from __future__ import annotations

from dataclasses import replace

import torch
from torch import nn

from srgan.checkpoint import ModelInfo

# (k, mirror): rotate by k * 90 degrees after mirroring left-right when mirror is True
DIHEDRAL = tuple((k, mirror) for mirror in (False, True) for k in range(4))


def transform(x: torch.Tensor, k: int, mirror: bool) -> torch.Tensor:
    """The symmetry ``(k, mirror)`` of the last two axes of ``x``."""
    return torch.rot90(x.flip(-1) if mirror else x, k, dims=(-2, -1))


def untransform(y: torch.Tensor, k: int, mirror: bool) -> torch.Tensor:
    """The inverse of :func:`transform`: ``untransform(transform(x, k, m), k, m) == x``."""
    y = torch.rot90(y, -k, dims=(-2, -1))
    return y.flip(-1) if mirror else y


class SelfEnsemble(nn.Module):
    """``generator`` averaged over the 8 symmetries of its input (same shapes in and out).

    ``.config`` is the generator's; ``.info`` is the generator's with `` (self-ensemble)``
    added to its name, so eval reports and FITS headers say which outputs were ensembled.
    """

    def __init__(self, generator: nn.Module):
        super().__init__()
        self.generator = generator
        self.config = generator.config
        info = getattr(generator, "info", None) or ModelInfo(config=generator.config, name=type(generator).__name__)
        self.info = replace(info, name=f"{info.name} (self-ensemble)")

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        total = None
        for k, mirror in DIHEDRAL:
            y = untransform(self.generator(transform(x, k, mirror)), k, mirror).float()
            total = y if total is None else total + y
        return total / len(DIHEDRAL)
