"""NaN and infinity: filled before the network, restored after, and never passed off as output.

Float photos (mode F TIFFs) may hold NaN pixels like FITS images do; one NaN fed to a
convolutional network spreads over its whole receptive field and, through normalisation,
over the whole image. :func:`upscale_photo_pixels` fills them from their neighbours, upscales,
puts NaN back at their upscaled positions and warns. :func:`check_finite_output` is the
last word before an output is written: non-finite pixels where the input was finite mean the
model (or the arithmetic) failed, which is an error, not a success.
"""

from __future__ import annotations

import warnings

import numpy as np

from srgan.errors import InputError, OutputError


def fill_nonfinite(a: np.ndarray, bad: np.ndarray) -> np.ndarray:
    """``a`` ((H, W) or (H, W, C) float) with the pixels where ``bad`` ((H, W) bool) is True
    filled channel by channel as FITS holes are (:func:`srgan.fits.pipeline.fill_nans`: a
    Gaussian-weighted mean of the valid pixels around them, the channel's median beyond).
    Returns a new float32 array."""
    from srgan.fits.pipeline import fill_nans

    x = np.array(a, dtype=np.float32)
    planes = x[..., None] if x.ndim == 2 else x
    valid = ~bad
    for c in range(planes.shape[-1]):
        p = planes[..., c]
        planes[..., c] = fill_nans(p, valid, float(np.median(p[valid])))
    return x


def check_finite_output(out: np.ndarray, expected_bad: np.ndarray | None = None) -> None:
    """Raise OutputError when ``out`` has non-finite pixels beyond ``expected_bad`` (the
    input's NaNs at their upscaled positions, same (H, W); None: none expected)."""
    bad = ~np.isfinite(out)
    if bad.ndim == 3 and expected_bad is not None and expected_bad.ndim == 2:
        bad = bad.any(axis=-1)
    if expected_bad is not None:
        bad = bad & ~expected_bad
    n = int(bad.sum())
    if n:
        raise OutputError(f"the model produced {n} NaN/infinite pixel(s) of {bad.size} where the input is finite; "
                          "nothing was written (the model file may be broken: try another --model, or "
                          "--precision fp32)")


def upscale_photo_pixels(upscaler, pixels: np.ndarray, *, progress: bool = False) -> np.ndarray:
    """``upscaler.upscale(pixels)`` that survives NaN/inf in float photos and refuses a
    non-finite result. Returns the upscaled pixels (NaN where the input was NaN)."""
    bad = None
    if np.issubdtype(pixels.dtype, np.floating):
        nonfinite = ~np.isfinite(pixels)
        if nonfinite.any():
            bad = nonfinite if nonfinite.ndim == 2 else nonfinite.any(axis=-1)
            if bad.all():
                raise InputError("the image has no finite pixel (all NaN/infinite); nothing to upscale")
            warnings.warn(f"{int(bad.sum())} NaN/infinite pixel(s) were filled from their neighbours for the "
                          "model and are NaN again in the output", stacklevel=2)
            pixels = fill_nonfinite(pixels, bad)
    out = upscaler.upscale(pixels, progress=progress)
    expected = None
    if bad is not None:
        s = out.shape[0] // pixels.shape[0]
        expected = np.repeat(np.repeat(bad, s, axis=0), s, axis=1)
    if np.issubdtype(out.dtype, np.floating):
        check_finite_output(out, expected)
        if expected is not None:
            out = out.copy()
            out[expected] = np.nan
    return out
