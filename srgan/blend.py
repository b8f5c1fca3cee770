"""Denoise strength (``--denoise S``): network interpolation of photo-x4 and photo-x4-real.

As Real-ESRGAN's ``-dn`` (and ESRGAN's network interpolation, Wang et al. 2018): two
generators of the same architecture are blended weight by weight, ``(1 - S) * A + S * B``,
once at load time, so the blend costs nothing per image. S = 0 is photo-x4 (bicubic
training: keeps noise and JPEG blocks as detail), S = 1 is photo-x4-real (trained on the
photo preset's blur, noise and JPEG: removes them, smoother); values between trade one for
the other. ``torch.lerp`` gives both ends exactly (S = 0 is A's weights bit for bit, S = 1
B's). Measured in README: Upscaling photos (``benchmarks/denoise.py``).
"""

from __future__ import annotations

from dataclasses import replace

import torch

from srgan.checkpoint import load_model
from srgan.errors import ConfigError

DENOISE_MODELS = ("photo-x4", "photo-x4-real")  # S = 0, S = 1


def blend_state_dicts(a: dict, b: dict, s: float) -> dict:
    """``(1 - s) * a + s * b`` for every floating-point tensor (others must be equal and are
    taken from ``a``). Raises ConfigError when the two do not have the same keys and shapes."""
    if a.keys() != b.keys():
        raise ConfigError("cannot blend models with different layers")
    out = {}
    for k, va in a.items():
        vb = b[k]
        if va.shape != vb.shape:
            raise ConfigError(f"cannot blend models: {k} has shape {tuple(va.shape)} and {tuple(vb.shape)}")
        out[k] = torch.lerp(va, vb.to(va.dtype), float(s)) if va.is_floating_point() else va.clone()
    return out


def check_strength(s: float) -> float:
    s = float(s)
    if not 0.0 <= s <= 1.0:
        raise ConfigError(f"--denoise must be between 0 and 1, got {s:g}")
    return s


def blended_model(s: float, models: tuple[str, str] = DENOISE_MODELS, device="cpu"):
    """The generator ``(1 - s) * models[0] + s * models[1]`` (names or srgan model files of
    one architecture), with ``.info`` naming the blend.

    >>> blended_model(0.5).info.name
    'photo-x4 + photo-x4-real (denoise 0.5)'
    """
    s = check_strength(s)
    a, b = (load_model(m, device="cpu") for m in models)
    if a.config != b.config:
        raise ConfigError(f"--denoise blends {models[0]} and {models[1]}, which have different architectures")
    a.load_state_dict(blend_state_dicts(a.state_dict(), b.state_dict(), s))
    a.info = replace(a.info, name=f"{a.info.name} + {b.info.name} (denoise {s:g})",
                     sha256="", training={**a.info.training, "denoise": s, "blend": list(models)})
    return a.to(device).eval()
