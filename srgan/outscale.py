"""Any output scale for photos (``--outscale F``): model passes, then an antialiased resize to F.

Output size: ``(round(H * F), round(W * F))`` for an H x W input (at least 1 px each way),
for any F from 1 to 16. The model runs at its own scale s; when F > s either the model runs
again on its output (``SECOND_PASS``) or its output is resized up: for x8 with an x4 model,
x4 and a resize up x2, or x4 twice (x16) and a resize down (``benchmarks/outscale.py``
measured both, README: Upscaling photos; the resize won, ``SECOND_PASS = False``). The
result is resized to the exact size with torch's antialiased bicubic (``F.interpolate(...,
antialias=True)``; ``srgan.photo`` upscales alpha with the same bicubic), in float, so 16-bit
stays 16-bit. F equal to the model's scale gives the model's output unchanged.

FITS keep integer scales: flux and WCS are exact only for integer blocks of output pixels,
so :func:`check_fits_outscale` refuses a fractional F, and an integer one other than the
model's scale (use ``--scale``/``--model`` for that).
"""

from __future__ import annotations

import math

import numpy as np
import torch
import torch.nn.functional as F

from srgan.errors import ConfigError, InputError

MIN_OUTSCALE, MAX_OUTSCALE = 1.0, 16.0
# Above the model's scale: run the model again (True) or resize its output up (False).
# Measured by benchmarks/outscale.py on Set5 + Set14 (README: Upscaling photos).
SECOND_PASS = False


def check_outscale(outscale: float) -> float:
    """``outscale`` as a float in [1, 16]; ConfigError otherwise."""
    f = float(outscale)
    if not (MIN_OUTSCALE <= f <= MAX_OUTSCALE) or not math.isfinite(f):
        raise ConfigError(f"--outscale must be between {MIN_OUTSCALE:g} and {MAX_OUTSCALE:g}, got {outscale}")
    return f


def check_fits_outscale(outscale: float | None, model_scale: int) -> None:
    """FITS: only the model's integer scale. Raises ConfigError naming the option."""
    if outscale is None or float(outscale) == model_scale:
        return
    if float(outscale) != int(outscale):
        raise ConfigError(f"--outscale {outscale:g} is fractional: FITS outputs keep integer scales (flux and WCS "
                          "stay exact only for whole blocks of output pixels); leave out --outscale for FITS "
                          "or use --scale 2|4")
    raise ConfigError(f"--outscale {outscale:g} differs from the FITS model's x{model_scale}: FITS are not "
                      "resized; use --scale or --model for another integer scale")


def output_size(h: int, w: int, outscale: float) -> tuple[int, int]:
    """The output (height, width) of an h x w input at ``outscale``.

    >>> output_size(10, 7, 3.5)
    (35, 24)
    """
    return max(1, round(h * outscale)), max(1, round(w * outscale))


def model_passes(model_scale: int, outscale: float, second_pass: bool = SECOND_PASS) -> int:
    """How many times the model runs for ``outscale``: 1, or with ``second_pass`` as many as
    reach at least ``outscale`` (x4 for x8: two passes, x16, resized down).

    >>> model_passes(4, 3.5), model_passes(4, 8, True), model_passes(4, 16, True), model_passes(4, 8, False)
    (1, 2, 2, 1)
    """
    passes = 1
    if model_scale > 1:
        while second_pass and model_scale ** passes < outscale - 1e-9:
            passes += 1
    return passes


def resize(pixels, size: tuple[int, int]):
    """Antialiased bicubic resize of photo pixels to ``size`` = (height, width).

    ``pixels``: (H, W) or (H, W, C) numpy uint8/uint16/float, or a (C, H, W) / (B, C, H, W)
    tensor; the same kind, dtype and layout come back. Integers are rounded and clipped to
    their range, floats clipped to [0, 1] (photo values). One channel at a time (memory).
    """
    from srgan.photo import integer_max

    if isinstance(pixels, np.ndarray):
        hwc = pixels[..., None] if pixels.ndim == 2 else pixels
        chw = torch.from_numpy(np.ascontiguousarray(hwc.transpose(2, 0, 1)).astype(np.float32))
        out = _resize_chw(chw, size, integer_max(pixels.dtype))
        out = out.numpy().transpose(1, 2, 0).astype(pixels.dtype)
        return out[..., 0] if pixels.ndim == 2 else out
    if isinstance(pixels, torch.Tensor):
        if pixels.ndim == 4:
            return torch.stack([resize(p, size) for p in pixels])
        if pixels.ndim == 2:
            return resize(pixels[None], size)[0]
        return _resize_chw(pixels.float(), size, integer_max(pixels.dtype)).to(pixels.dtype)
    raise InputError(f"resize takes a numpy array or a torch tensor, got {type(pixels).__name__}")


def _resize_chw(x: torch.Tensor, size, maxval) -> torch.Tensor:
    if tuple(x.shape[-2:]) == tuple(size):
        return x
    out = torch.empty((x.shape[0], *size), dtype=torch.float32, device=x.device)
    for c in range(x.shape[0]):
        out[c] = F.interpolate(x[c][None, None], size=size, mode="bicubic", align_corners=False,
                               antialias=True)[0, 0]
    hi = 1.0 if maxval is None else maxval
    out.clamp_(0, hi)
    return out if maxval is None else out.round_()


class Outscaler:
    """An :class:`srgan.upscale.Upscaler` for photos at any ``outscale`` (None: the model's
    scale), with the alpha channel path ``alpha`` ("bicubic" or "model", :mod:`srgan.photo`).

    Has the upscaler's attributes (``tile``, ``info``, ...); ``upscale`` takes and returns
    what :meth:`Upscaler.upscale` does, at :func:`output_size`.
    """

    def __init__(self, upscaler, outscale: float | None = None, alpha: str = "bicubic",
                 second_pass: bool = SECOND_PASS):
        self.upscaler = upscaler
        self.outscale = None if outscale is None else check_outscale(outscale)
        self.alpha = alpha
        self.passes = 1 if self.outscale is None else model_passes(upscaler.scale, self.outscale, second_pass)

    def __getattr__(self, name):  # tile, info, device, ... of the wrapped upscaler
        return getattr(self.upscaler, name)

    def upscale(self, image, *, progress: bool = False):
        from srgan import photo

        h, w = _height_width(image)
        out = image
        for _ in range(self.passes):
            out = photo.upscale_image(self.upscaler, out, progress=progress, alpha=self.alpha)
        if self.outscale is None:
            return out
        size = output_size(h, w, self.outscale)
        if _height_width(out) == size:
            return out
        if not isinstance(out, (np.ndarray, torch.Tensor)):  # PIL
            from PIL import Image

            resized = Image.fromarray(resize(np.asarray(out), size))
            resized.info.update({k: v for k, v in out.info.items() if k in ("icc_profile", "exif")})
            return resized
        return resize(out, size)


def _height_width(image) -> tuple[int, int]:
    if isinstance(image, np.ndarray):
        return image.shape[0], image.shape[1]
    if isinstance(image, torch.Tensor):
        return tuple(image.shape[-2:])
    return image.height, image.width
