"""The pixel pipeline: :func:`upscale_plane` is THE path from an input plane to an output plane.

Every FITS entry point (:mod:`srgan.fits.high_level`, the streaming writer) and ``srgan eval``
(:func:`srgan.evaluate.score_fits`) run their pixels through it, so what eval scores is what
users get. Per (H, W) plane, in this order:

1. finite mask; robust sky and noise (:func:`sky_and_noise_plane`, on a regular subsample of
   large planes);
2. NaN/BLANK pixels filled for the network by Gaussian interpolation (:func:`fill_nans`);
3. the model, through its asinh normalisation with that sky and noise (a 3-channel astronomy
   model sees the plane in every channel; the channels are averaged);
4. the flux correction: by default every input pixel's flux exactly in its s x s output
   block (:func:`srgan.consistency.project_blocks`); ``correction="global"``: only the total
   (:func:`srgan.consistency.conserve_flux`); with ``consistency``: back-projection until
   A(SR) matches the input pixel by pixel within the noise, clipped to the input's range, then
   the total;
5. saturated (SATURATE) and flagged pixels: filled like NaNs in step 2, flat in the output;
6. with ``residual``: the residual map (A(SR) - input) / sigma;
7. strip by strip: NaN again at the upscaled positions of missing pixels, pixel values divided
   by s^2 for ``flux="conserve"``, and the achieved flux measured.

Planes may be memory-mapped (:class:`srgan.fits.paged.PagedArray`): everything works in strips.
"""

from __future__ import annotations

import dataclasses
import logging
import math
import warnings
from dataclasses import dataclass

import numpy as np

from srgan import consistency as cons
from srgan.errors import InputError, ModelError
from srgan.fits.options import FitsOptions
from srgan.fits.paged import PagedArray, sub
from srgan.nonfinite import check_finite_output

log = logging.getLogger(__name__)

STATS_PIXELS = 4_000_000  # sky/noise are estimated on at most this many pixels (a regular subsample)
FILL_STDDEV = 2.0  # Gaussian NaN-interpolation kernel sigma, input pixels


@dataclass
class PlaneResult:
    """What happened to one 2-D plane (used for HISTORY notes and by tests)."""

    sky: float
    noise: float
    flux_error: float  # |flux out - flux in| / sum(|input|) over valid pixels
    backprojection: cons.BackProjection | None = None
    saturated: int = 0  # input pixels saturated or flagged (output flat there)


def check_model(upscaler) -> None:
    """ModelError unless the upscaler's model can run FITS planes (asinh normalisation, 1 or 3 channels)."""
    info = upscaler.info
    cfg = info.config
    if info.normalization.kind != "asinh":
        raise ModelError(f"model {info.name!r} was trained on photos (normalization {info.normalization.kind!r}); "
                         "FITS data need an astronomy model with asinh normalization: choose one with --model "
                         "(e.g. galaxy-x4)")
    if (cfg.in_channels, cfg.out_channels) not in ((1, 1), (3, 3)):
        raise ModelError(f"model {info.name!r} maps {cfg.in_channels} to {cfg.out_channels} channels; "
                         "FITS planes need a 1-channel astronomy model (--model)")


def finite_mask(plane) -> np.ndarray:
    """``np.isfinite(plane)`` computed in row strips (a memory-mapped plane is never read whole)."""
    valid = np.empty(plane.shape, bool)
    rows = max(1, STATS_PIXELS // max(1, plane.shape[-1]))
    for a in range(0, plane.shape[0], rows):
        valid[a:a + rows] = np.isfinite(plane[a:a + rows])
    return valid


def sky_and_noise_plane(plane: np.ndarray, usable: np.ndarray | None = None) -> tuple[float, float]:
    """Robust sky and noise of a plane (NaNs and pixels outside ``usable`` ignored), on a regular
    subsample of large planes."""
    from srgan.normalize import sky_and_noise

    step = max(1, math.ceil(math.sqrt(plane.size / STATS_PIXELS)))
    sample = np.asarray(plane[::step, ::step], dtype=np.float32)
    if usable is not None:  # saturated and flagged pixels say nothing about the sky
        sample = np.where(usable[::step, ::step], sample, np.float32(np.nan))
    if isinstance(plane, PagedArray):
        plane.release()  # the strided read touched pages all over the file
    return sky_and_noise(sample)


def fill_nans(plane: np.ndarray, valid: np.ndarray, sky: float, stddev: float = FILL_STDDEV) -> np.ndarray:
    """A copy of ``plane`` with invalid pixels interpolated for the network.

    Invalid pixels get the Gaussian-weighted (``stddev`` input pixels) mean of the valid
    pixels around them (astropy ``interpolate_replace_nans``); those with no valid pixel within
    4 sigma get the sky level. Never zeros: a zero-filled hole in a bright galaxy or on a
    non-zero sky is a sharp edge the network would ring around. Works in row strips.

    Args:
        plane: (H, W) float; valid: (H, W) bool; sky: fill for large holes.
    Returns:
        (H, W) float32 without NaNs.
    """
    from astropy.convolution import Gaussian2DKernel, interpolate_replace_nans

    out = np.empty(plane.shape, np.float32)
    kernel = Gaussian2DKernel(stddev)
    halo = kernel.shape[0] // 2
    rows = max(256, STATS_PIXELS // max(1, plane.shape[1]))
    h = plane.shape[0]
    for a in range(0, h, rows):
        b = min(h, a + rows)
        out[a:b] = plane[a:b]
        if valid[a:b].all():
            continue
        a0, b0 = max(0, a - halo), min(h, b + halo)
        part = np.where(valid[a0:b0], np.asarray(plane[a0:b0], np.float64), np.nan)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # astropy warns about the NaNs it is asked to fill
            filled = interpolate_replace_nans(part, kernel, boundary="extend")
        filled[~np.isfinite(filled)] = sky
        out[a:b] = filled[a - a0:b - a0]
    return out


def _run_model(upscaler, lr: np.ndarray, sky: float, noise: float, out: np.ndarray) -> None:
    """Network output for one filled plane, in pixel units, written into ``out`` (sH, sW)."""
    if upscaler.info.config.in_channels == 1:
        upscaler.upscale_planes(sub(lr, lambda a: a[None]), sky=sky, noise=noise, out=sub(out, lambda a: a[None]))
    else:  # a 3-channel astronomy model: the plane in every channel, the channels averaged
        rgb = upscaler.upscale_planes(np.repeat(np.asarray(lr)[None], 3, axis=0), sky=sky, noise=noise)
        out[...] = rgb.mean(axis=0)


def threshold_mask(plane, valid: np.ndarray, level: float | None) -> np.ndarray | None:
    """(H, W) bool: valid pixels at or above ``level`` (the header's SATURATE), or None when none are."""
    if level is None:
        return None
    sat = np.zeros(plane.shape, bool)
    rows = max(1, STATS_PIXELS // max(1, plane.shape[-1]))
    for a in range(0, plane.shape[0], rows):
        with np.errstate(invalid="ignore"):
            sat[a:a + rows] = valid[a:a + rows] & (np.asarray(plane[a:a + rows]) >= level)
    return sat if sat.any() else None


def upscale_plane(upscaler, plane, out, options: FitsOptions, kernel=None, *,
                  saturation: float | None = None, flagged: np.ndarray | None = None,
                  error: np.ndarray | None = None) -> tuple[PlaneResult, np.ndarray | None]:
    """Upscale one plane into ``out``: the whole pixel pipeline (steps 1-7 of the module doc).

    Args:
        upscaler: an :class:`srgan.upscale.Upscaler` (or anything with ``info``, ``scale`` and
            ``upscale_planes``) whose model passed :func:`check_model`.
        plane: (H, W) float array, memmap or :class:`PagedArray`; NaNs mark missing pixels.
        out: (sH, sW) float array to write into (a memmap or :class:`PagedArray` streams).
        options: flux mode, correction, consistency and residual (``hdu`` and ``psf`` are not used here).
        kernel: (k, k) PSF on the output grid (:func:`psf_kernel`); needed for consistency/residual.
        saturation: pixels at or above it (the header's SATURATE) are saturated.
        flagged: (H, W) bool, further do-not-use pixels (e.g. from a DQ plane), treated like saturated ones.
        error: (H, W) per-pixel sigma of the input (an ERR plane) for ``consistency``; where it
            is not finite or <= 0, the noise estimated from the data is used.
    Saturated and flagged pixels are filled for the network like NaNs, take no part in the
    flux correction or back-projection, and come out flat: each output pixel of such a block
    holds the input value (per-pixel units), so they stay at or above the rescaled SATURATE.
    Returns:
        (:class:`PlaneResult`, residual (H, W) float32 or None without ``options.residual``).
    Raises:
        InputError: the plane has no finite pixel.
    """
    if options.flux is None:  # no header here to choose from (srgan.fits.products.flux_mode): conserve
        options = dataclasses.replace(options, flux="conserve")
    s = upscaler.scale
    raw = plane if plane.dtype.kind == "f" else np.asarray(plane, dtype=np.float32)  # memmaps stay memmaps
    valid = finite_mask(raw)
    if not valid.any():
        raise InputError("an image plane has no finite pixels (all NaN/BLANK); nothing to upscale")
    sat = threshold_mask(raw, valid, saturation)
    if flagged is not None:
        sat = (valid & flagged) if sat is None else (sat | (valid & flagged))
    usable = valid if sat is None else valid & ~sat
    if not usable.any():
        raise InputError("every pixel of an image plane is saturated or flagged; nothing to upscale")
    sky, noise = sky_and_noise_plane(raw, None if sat is None else usable)
    all_valid = bool(usable.all())
    lr = raw if all_valid else fill_nans(raw, usable, sky)
    mask = None if all_valid else usable
    _run_model(upscaler, lr, sky, noise, out)
    bp = None
    if options.consistency:
        sigma = cons.pixel_noise(lr, mask)
        if error is not None:  # the ERR plane where it has a value (finite, > 0), the estimate elsewhere
            error = np.asarray(error)
            with np.errstate(invalid="ignore"):
                sigma = np.where(np.isfinite(error) & (error > 0), error, np.float32(sigma))
        bp = cons.back_project(out, lr, kernel, s, sigma, valid=mask, bounds=cons.output_bounds(lr, mask, s))
        bp.noise_from = "ERR" if error is not None else "pixel differences"
        cons.conserve_flux(out, lr, s, sky, noise, valid=mask)
    elif options.correction == "block":
        cons.project_blocks(out, lr, s, sky, noise, valid=mask)
    else:
        cons.conserve_flux(out, lr, s, sky, noise, valid=mask)
    resid = cons.residual_map(out, lr, kernel, s, noise, valid=mask) if options.residual else None
    # NaN footprint, saturated blocks flat, flux units, and the measured flux, strip by strip
    h, w = lr.shape
    rows = cons.strip_rows(h, w, s)
    divide = float(s * s) if options.flux == "conserve" else 1.0
    total = 0.0
    for a in range(0, h, rows):
        b = min(h, a + rows)
        x = np.asarray(out[a * s:b * s], dtype=np.float32)
        if mask is not None:  # never pass off NaN output (saturated blocks are replaced below)
            check_finite_output(x, ~_up(mask[a:b], s))
        else:
            check_finite_output(x, None)
        if sat is not None:
            x = np.where(_up(sat[a:b], s), _up(np.asarray(raw[a:b], np.float32), s), x)
        if mask is not None:
            x = np.where(_up(valid[a:b], s), x, np.float32(np.nan))
        x = x / np.float32(divide)
        total += float(np.nansum(x, dtype=np.float64))
        out[a * s:b * s] = x
    flux_in = total if options.flux == "conserve" else total / (s * s)
    err = cons.flux_error_vs_input(flux_in, raw, None if all_valid and sat is None else valid)
    if err > 0.005:  # cannot happen after the flux correction, short of float overflow
        warnings.warn(f"output flux differs from the input's by {100 * err:.2f}% of the total absolute flux",
                      stacklevel=3)
    return PlaneResult(sky, noise, err, bp, 0 if sat is None else int(sat.sum())), resid


def _up(a: np.ndarray, s: int) -> np.ndarray:
    return np.repeat(np.repeat(a, s, 0), s, 1)


def psf_kernel(upscaler, options: FitsOptions):
    """(PSF kernel on the output grid, its description) for consistency/residual, else (None, None).

    See :func:`srgan.consistency.resolve_psf`; ConfigError for a bad ``options.psf``.
    """
    if not (options.consistency or options.residual):
        return None, None
    return cons.resolve_psf(options.psf, upscaler.scale, getattr(upscaler.info, "preset", None))


def psf_description(upscaler, options: FitsOptions) -> str | None:
    """The PSF description for the HISTORY/SRPSF cards; None without consistency/residual."""
    return psf_kernel(upscaler, options)[1]


def upscale_array(upscaler, data: np.ndarray, options: FitsOptions = FitsOptions(), out: np.ndarray | None = None,
                  *, saturation: float | None = None, flagged: np.ndarray | None = None,
                  error: np.ndarray | None = None):
    """Upscale (..., H, W) data plane by plane with :func:`upscale_plane` (the array core of every FITS function).

    Args:
        upscaler: an :class:`srgan.upscale.Upscaler` with a 1-channel (or 3-channel) asinh model.
        data: (..., H, W) float array (memmap ok); NaNs mark missing pixels.
        options: :class:`FitsOptions` (``hdu`` is not used: the data are already chosen).
        out: optional (..., sH, sW) float32 array or memmap to write into.
        saturation: the header's SATURATE (see :func:`upscale_plane`), or None.
        flagged: do-not-use pixels (bool, the shape of ``data`` or (H, W) for every plane), or None.
        error: per-pixel sigma for ``consistency`` (the shape of ``data`` or (H, W)), or None.
    Returns:
        (out (..., sH, sW) float32, residual (..., H, W) float32 or None, [PlaneResult per plane]).
    Raises:
        ModelError: a photo model. InputError: an all-NaN plane, an image too small for the PSF.
    """
    check_model(upscaler)
    s = upscaler.scale
    h, w = data.shape[-2:]
    lead = data.shape[:-2]
    if out is None:
        out = np.empty((*lead, h * s, w * s), np.float32)
    kernel, _ = psf_kernel(upscaler, options)
    if kernel is not None and kernel.shape[-1] // 2 >= min(h, w) * s:
        raise InputError(f"image {w}x{h} is too small for the PSF ({kernel.shape[-1]} output pixels wide); "
                         "pass a narrower --psf FWHM")
    planes = sub(data, lambda a: a.reshape(-1, h, w))
    outs = sub(out, lambda a: a.reshape(-1, h * s, w * s))
    resid = np.empty((*lead, h, w), np.float32) if options.residual else None
    resids = resid.reshape(-1, h, w) if options.residual else None
    flags, errors = (None if a is None else _per_plane(a, data.shape, name)
                     for a, name in ((flagged, "flagged"), (error, "error")))
    results = []
    for i in range(planes.shape[0]):
        result, r = upscale_plane(upscaler, sub(planes, lambda a: a[i]), sub(outs, lambda a: a[i]), options, kernel,
                                  saturation=saturation, flagged=None if flags is None else flags[i],
                                  error=None if errors is None else errors[i])
        if options.residual:
            resids[i] = r
        results.append(result)
        log.info("plane %d: sky %.4g noise %.4g flux error %.2e", i, result.sky, result.noise, result.flux_error)
    return out, resid, results


def _per_plane(a: np.ndarray, shape: tuple, name: str) -> np.ndarray:
    """(N, H, W) view of a mask or sigma array given for (..., H, W) data, broadcasting one (H, W) plane."""
    a = np.asarray(a)
    if a.shape == tuple(shape[-2:]):
        a = np.broadcast_to(a, shape)
    if a.shape != tuple(shape):
        raise InputError(f"{name} has shape {a.shape}, the data {tuple(shape)}")
    return a.reshape(-1, *shape[-2:])
