"""Agreement between a super-resolved image and the data it came from.

The input (LR) image is modelled as ``LR = A(SR) + noise`` with the forward operator
``A = block-mean binning after PSF convolution`` (:func:`srgan.degrade.astro_forward`, the
operator the astro models were trained to invert). This module measures and enforces that:

- :func:`forward` / :func:`adjoint`: ``A`` and ``s^2 A^T`` on 2-D numpy planes (or memmaps),
  row strip by row strip, so a 40k x 40k output never has to fit in memory.
- :func:`back_project`: iterative back-projection (Irani & Peleg 1991; a Landweber iteration
  on ``||A(SR) - LR||^2``): ``SR += s^2 A^T (LR - A(SR))`` until the residual RMS reaches the
  noise level (the discrepancy principle: fitting further would fit the noise).
- :func:`residual_map`: ``(A(SR) - LR) / sigma``, where the output disagrees with the data.
- :func:`project_blocks`: the default exact flux correction of FITS outputs (every input
  pixel's flux in its s x s block); :func:`conserve_flux`: the global one (total flux only).
- :func:`resolve_psf`: the PSF of ``A`` from a FWHM in input pixels, a PSF image on the input
  grid, or the model's training preset.

All arrays are in "surface brightness" units: an SR pixel has the input's per-pixel scale, so
``bin_mean(SR) ~ LR`` and the flux of SR is ``SR.sum() / s^2``.
"""

from __future__ import annotations

import warnings
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from srgan.degrade import PRESETS, astro_forward, convolve_psf, psf_kernel
from srgan.errors import ConfigError, InputError

STRIP_PIXELS = 1 << 22  # output pixels per row strip (16 MB of float32)


# ---------------------------------------------------------------------------- the PSF

def resolve_psf(psf, scale: int, preset: str | None = None) -> tuple[torch.Tensor, str]:
    """The PSF of the forward operator, sampled on the OUTPUT grid, and a short description.

    Args:
        psf: None (the model's training preset: the middle of its PSF FWHM range, Gaussian;
            a delta PSF, i.e. plain binning, for presets without a PSF), a number (Gaussian
            FWHM in INPUT pixels, what a user measures on the image: seeing / pixel scale),
            a path to a FITS file whose first image is the PSF sampled on the input grid, or a
            2-D array sampled on the input grid. Images are resampled to the output grid
            (cubic interpolation about the central pixel) and normalised to sum 1.
        scale: upscaling factor s.
        preset: degradation preset name the model was trained with (``ModelInfo.preset``).
    Returns:
        ((k, k) float32 tensor summing to 1, k odd; description for the FITS header).
    Raises:
        ConfigError: non-positive FWHM, unreadable PSF file, PSF image not 2-D or not finite.

    >>> k, what = resolve_psf(1.0, 2)
    >>> k.shape, what
    (torch.Size([9, 9]), 'gaussian FWHM 1 input px')
    """
    if psf is None:
        cfg = PRESETS.get(preset or "")
        if cfg is None or cfg.pipeline != "astro":
            return torch.ones(1, 1), f"delta (preset {preset!r} has no PSF)"
        fwhm_hr = 0.5 * (cfg.psf_fwhm[0] + cfg.psf_fwhm[1])  # preset ranges are in HR pixels
        return psf_kernel("gaussian", fwhm_hr), f"gaussian FWHM {fwhm_hr / scale:.3g} input px ({preset} preset)"
    if isinstance(psf, str) and not Path(psf).exists():
        try:
            psf = float(psf)  # "--psf 2.5" from the command line
        except ValueError:
            raise ConfigError(f"PSF file not found: {psf}; pass --psf a FITS file or a FWHM in input pixels") from None
    if isinstance(psf, (int, float)) and not isinstance(psf, bool):
        if not psf > 0:
            raise ConfigError(f"PSF FWHM must be > 0 input pixels, got {psf}; pass --psf FWHM or a PSF FITS file")
        return psf_kernel("gaussian", float(psf) * scale), f"gaussian FWHM {psf:g} input px"
    if isinstance(psf, (str, Path)):
        image, what = _read_psf_file(Path(psf)), f"image {Path(psf).name}"
    else:
        image, what = np.asarray(psf, dtype=np.float64), "image (array)"
    return _psf_to_output_grid(image, scale), what


def _read_psf_file(path: Path) -> np.ndarray:
    from astropy.io import fits

    try:
        with fits.open(path) as hdul:
            for h in hdul:
                if h.is_image and h.data is not None and h.data.ndim == 2:
                    return np.asarray(h.data, dtype=np.float64)
    except (OSError, TypeError, ValueError) as e:
        raise ConfigError(f"cannot read the PSF file {path}: {e}; "
                          "pass --psf a FITS file or a FWHM in input pixels") from e
    raise ConfigError(f"PSF file {path} has no 2-D image HDU; pass --psf a FITS image of the PSF or a FWHM")


def _psf_to_output_grid(image: np.ndarray, scale: int) -> torch.Tensor:
    """Resample a PSF image on the input grid to the output grid, odd size, sum 1."""
    from scipy.ndimage import map_coordinates

    if image.ndim != 2 or not np.isfinite(image).all() or image.sum() <= 0:
        raise ConfigError("a PSF image must be 2-D, finite and have a positive sum; pass --psf FILE or a FWHM")
    cy, cx = np.unravel_index(np.argmax(image), image.shape)  # centre on the peak
    radius = max(image.shape) // 2 * scale + scale // 2
    d = np.arange(-radius, radius + 1) / scale  # output-pixel offsets in input pixels
    yy, xx = np.meshgrid(cy + d, cx + d, indexing="ij")
    k = map_coordinates(image, [yy, xx], order=3, mode="constant", cval=0.0).clip(min=0)
    if k.sum() <= 0:
        raise ConfigError("the PSF image resampled to the output grid is empty; pass a centred PSF image")
    return torch.from_numpy((k / k.sum()).astype(np.float32))


# ---------------------------------------------------------------------------- A and A^T on strips

def strip_rows(height: int, width: int, scale: int) -> int:
    """LR rows per strip so that a strip holds about STRIP_PIXELS output pixels."""
    return max(1, STRIP_PIXELS // max(1, width * scale * scale))


def _halo(kernel: torch.Tensor, scale: int) -> int:
    """LR rows of context a strip needs so that strips equal the whole-image result."""
    return kernel.shape[-1] // 2 // scale + 1


def forward(sr: np.ndarray, kernel: torch.Tensor, scale: int) -> np.ndarray:
    """``A(SR)``: PSF convolution (reflect borders) then s x s block mean.

    Args:
        sr: (sH, sW) float array or memmap, no NaNs.
        kernel: (k, k) PSF on the output grid (:func:`resolve_psf`).
        scale: s.
    Returns:
        (H, W) float32.
    """
    sh, sw = sr.shape
    h, w = sh // scale, sw // scale
    out = np.empty((h, w), np.float32)
    halo, rows = _halo(kernel, scale), strip_rows(h, w, scale)
    for a in range(0, h, rows):
        b = min(h, a + rows)
        a0, b0 = max(0, a - halo), min(h, b + halo)
        x = torch.from_numpy(np.ascontiguousarray(sr[a0 * scale:b0 * scale], dtype=np.float32))[None, None]
        y = astro_forward(x, kernel, scale)[0, 0].numpy()
        out[a:b] = y[a - a0:b - a0]
    return out


def adjoint(r: np.ndarray, kernel: torch.Tensor, scale: int, out: np.ndarray, step: float = 1.0) -> None:
    """``out += step * s^2 A^T r``: nearest upsampling then convolution with the flipped PSF.

    ``s^2 A^T`` maps a constant LR image to the same constant, so one step with ``step=1``
    removes the residual's mean exactly (away from borders).

    Args:
        r: (H, W) float residual (zero where the data are missing).
        kernel: (k, k) PSF on the output grid.
        out: (sH, sW) float array or memmap, updated in place strip by strip.
    """
    h, w = r.shape
    flipped = torch.flip(kernel, dims=(-2, -1))
    halo, rows = _halo(kernel, scale), strip_rows(h, w, scale)
    for a in range(0, h, rows):
        b = min(h, a + rows)
        a0, b0 = max(0, a - halo), min(h, b + halo)
        up = np.repeat(np.repeat(np.asarray(r[a0:b0], np.float32), scale, 0), scale, 1)
        x = convolve_psf(torch.from_numpy(up)[None, None], flipped)[0, 0].numpy()
        out[a * scale:b * scale] += step * x[(a - a0) * scale:(b - a0) * scale]


# ---------------------------------------------------------------------------- residuals, back-projection

def residual_map(sr: np.ndarray, lr: np.ndarray, kernel: torch.Tensor, scale: int, noise: float,
                 valid: np.ndarray | None = None) -> np.ndarray:
    """``(A(SR) - LR) / noise``: about N(0, 1) where the output agrees with the data.

    Args:
        sr: (sH, sW) output in the input's per-pixel units, no NaNs.
        lr: (H, W) input (NaNs allowed where ``valid`` is False).
        noise: the input's noise sigma (same units).
        valid: (H, W) bool, False where the input had no data (NaN there in the result).
    Returns:
        (H, W) float32.
    """
    res = (forward(sr, kernel, scale) - lr) / np.float32(noise)
    if valid is not None:
        res[~valid] = np.nan
    return res.astype(np.float32, copy=False)


@dataclass
class BackProjection:
    """What :func:`back_project` did (recorded in the FITS header)."""

    iterations: int
    rms_before: float  # residual RMS / noise before the first step
    rms_after: float  # and after the last one
    converged: bool  # reached the stopping rule before ``max_iter``
    frac_before: float = 0.0  # fraction of valid pixels with |residual| > 3 sigma, before
    frac_after: float = 0.0  # and after
    frac_expected: float = 0.0  # what pure Gaussian noise gives (plus 3 binomial sigmas)
    max_after: float = 0.0  # largest |residual| / sigma after the last step
    noise_from: str = "pixel differences"  # where sigma came from


GAUSS_BEYOND_3 = 0.0026998  # P(|N(0, 1)| > 3)


def pixel_noise(lr: np.ndarray, valid: np.ndarray | None = None) -> float:
    """Noise sigma from second differences of neighbours: ``1.4826 MAD(x[i-1] - 2 x[i] + x[i+1]) / sqrt(6)``.

    A galaxy's light is locally smooth, and second differences cancel its gradients, so unlike
    sigma-clipped stats of the whole stamp (or first differences on a steep profile) the
    estimate is not inflated when a galaxy fills the image. Along rows and columns; all three
    pixels must be valid. Raises InputError when nothing is left or the differences are all zero.
    """
    x = np.asarray(lr, dtype=np.float64)
    m = np.ones(x.shape, bool) if valid is None else np.asarray(valid, bool)
    parts = []
    for a, v in ((x, m), (x.T, m.T)):
        d = a[:, :-2] - 2 * a[:, 1:-1] + a[:, 2:]
        ok = v[:, :-2] & v[:, 1:-1] & v[:, 2:] & np.isfinite(d)
        parts.append(d[ok])
    d = np.concatenate(parts)
    if not d.size:
        raise InputError("no three neighbouring valid pixels: the noise cannot be estimated")
    sigma = 1.4826 * float(np.median(np.abs(d - np.median(d)))) / np.sqrt(6.0)
    if not sigma > 0:
        sigma = float(np.std(d)) / np.sqrt(6.0)
    if not sigma > 0:
        raise InputError("neighbouring pixels are all equal: the noise cannot be estimated")
    return sigma


def expected_beyond_3(n: int) -> float:
    """The largest fraction of ``n`` pure-noise pixels beyond 3 sigma, to 3 binomial sigmas."""
    p = GAUSS_BEYOND_3
    return p + 3.0 * float(np.sqrt(p * (1 - p) / max(1, n)))


def _stats(r: np.ndarray, valid: np.ndarray | None, sigma) -> tuple[float, float, float]:
    """(RMS, fraction beyond 3, max |z|) of ``z = r / sigma`` over valid pixels."""
    z = r / sigma
    v = z if valid is None else z[valid]
    if not v.size:
        return 0.0, 0.0, 0.0
    a = np.abs(v, dtype=np.float64)
    return float(np.sqrt(np.mean(a * a))), float(np.mean(a > 3.0)), float(a.max())


def back_project(sr: np.ndarray, lr: np.ndarray, kernel: torch.Tensor, scale: int, noise, *,
                 valid: np.ndarray | None = None, bounds: tuple[float, float] | None = None,
                 max_iter: int = 100) -> BackProjection:
    """Correct ``sr`` in place until ``A(sr)`` reproduces ``lr`` pixel by pixel within the noise.

    Landweber iteration ``SR += s^2 A^T (LR - A(SR))`` (the eigenvalues of ``s^2 A A^T`` lie in
    (0, 1], so the residual shrinks), projected onto ``bounds`` after every step so no
    ringing goes below the data's range. It stops when no more pixels are beyond 3 sigma
    than pure noise puts there (:func:`expected_beyond_3`: 0.27% plus 3 binomial sigmas), a
    per-pixel rule that a global RMS, dominated by the sky, would not enforce in galaxy
    cores; or after ``max_iter`` steps (warned). Structure the data cannot constrain is left as
    the network made it.

    Args:
        sr: (sH, sW) float array or memmap in the input's per-pixel units, no NaNs.
        lr: (H, W) input with NaNs filled; ``valid`` marks the real data.
        kernel: (k, k) PSF on the output grid.
        noise: input noise sigma: a number (e.g. :func:`pixel_noise`) or an (H, W) array (ERR).
        bounds: (lo, hi) range the output is clipped to, or None.
    Returns:
        :class:`BackProjection`.
    """
    sigma = noise if np.ndim(noise) else float(noise)
    if not np.all(np.asarray(sigma) > 0):
        got = noise if np.ndim(noise) == 0 else "an ERR plane with values <= 0"
        raise InputError(f"noise sigma must be > 0 for back-projection, got {got}")
    n = int(valid.sum()) if valid is not None else lr.size
    target = expected_beyond_3(n)
    first = None
    k = 0
    while True:
        r = lr - forward(sr, kernel, scale)
        if valid is not None:
            r[~valid] = 0.0
        stats = _stats(r, valid, sigma)
        first = stats if first is None else first
        if stats[1] <= target or k >= max_iter:
            break
        adjoint(r, kernel, scale, sr)
        if bounds is not None:
            _clip(sr, scale, *bounds)
        k += 1
    done = stats[1] <= target
    if not done:
        warnings.warn(f"back-projection stopped after {k} iterations with {100 * stats[1]:.2f}% of pixels beyond "
                      f"3 sigma (noise predicts {100 * target:.2f}%); the PSF may be wider than the data's",
                      stacklevel=2)
    return BackProjection(iterations=k, rms_before=first[0], rms_after=stats[0], converged=done,
                          frac_before=first[1], frac_after=stats[1], frac_expected=target, max_after=stats[2])


def _clip(sr, scale: int, lo: float, hi: float) -> None:
    rows = max(1, STRIP_PIXELS // max(1, sr.shape[1]))
    for a in range(0, sr.shape[0], rows):
        sr[a:a + rows] = np.clip(sr[a:a + rows], lo, hi)


def output_bounds(lr: np.ndarray, valid: np.ndarray | None, scale: int) -> tuple[float, float]:
    """(lo, hi) an output pixel may take: the input's minimum, and the value of a block whose
    flux above that minimum sits in one of its s^2 pixels (per-pixel units)."""
    v = np.asarray(lr, np.float64) if valid is None else np.asarray(lr, np.float64)[valid]
    lo, hi = float(v.min()), float(v.max())
    return lo, lo + scale * scale * (hi - lo)


# ---------------------------------------------------------------------------- flux

def conserve_flux(sr: np.ndarray, lr: np.ndarray, scale: int, sky: float, noise: float,
                  valid: np.ndarray | None = None) -> float:
    """Make the output's total flux equal the input's exactly; returns the flux moved.

    The deficit ``d = s^2 * sum(LR) - sum(SR)`` (over valid pixels) is added in proportion to
    ``w = |SR - sky| + noise``: mostly on the sources the network brightened or dimmed (like a
    gain correction), a little on the sky (like an offset), and stable when the total flux of a
    sky-subtracted image is near zero, where a multiplicative rescale would blow up.

    Args:
        sr: (sH, sW) float array or memmap, updated in place (no NaNs).
        lr: (H, W) input with NaNs filled.
        sky, noise: robust sky level and noise of the input.
        valid: (H, W) bool, False where the input had no data (excluded on both sides).
    """
    h, w = lr.shape
    rows = strip_rows(h, w, scale)
    target = total = weight = 0.0
    for a in range(0, h, rows):
        b = min(h, a + rows)
        target += float(np.sum(lr[a:b], where=True if valid is None else valid[a:b], dtype=np.float64)) * scale**2
        x, m = _strip(sr, valid, a, b, scale)
        total += float(np.sum(x, where=m, dtype=np.float64))
        weight += float(np.sum(np.abs(x - sky) + noise, where=m, dtype=np.float64))
    deficit = target - total
    if weight > 0 and deficit != 0:
        c = deficit / weight
        for a in range(0, h, rows):
            b = min(h, a + rows)
            x, m = _strip(sr, valid, a, b, scale)
            sr[a * scale:b * scale] = np.where(m, x + c * (np.abs(x - sky) + noise), x)
    return deficit


def project_blocks(sr: np.ndarray, lr: np.ndarray, scale: int, sky: float, noise: float,
                   valid: np.ndarray | None = None) -> float:
    """Make every s x s output block carry exactly the flux of its input pixel; returns the flux moved.

    The default FITS correction (``correction="block"``): any aperture made of whole input
    pixels measures the input's flux, and the network only decides how the flux is spread
    inside each block. Each block's deficit ``d = s^2 LR - sum(block)`` is added in proportion to
    ``w = |SR - sky| + noise`` within the block (mostly on what the network made bright, a
    little everywhere), so it stays exact and stable for blocks whose net flux is near zero.

    Args:
        sr: (sH, sW) float array or memmap, per-pixel units, updated in place (no NaNs).
        lr: (H, W) input with NaNs filled. sky, noise: the input's.
        valid: (H, W) bool; invalid blocks are left alone.
    """
    h, w = lr.shape
    rows = strip_rows(h, w, scale)
    moved = 0.0
    for a in range(0, h, rows):
        b = min(h, a + rows)
        x = np.asarray(sr[a * scale:b * scale], dtype=np.float64).reshape(b - a, scale, w, scale)
        wt = np.abs(x - sky) + noise
        d = np.asarray(lr[a:b], np.float64) * scale**2 - x.sum(axis=(1, 3))  # (rows, w) flux deficits
        if valid is not None:
            d = np.where(valid[a:b], d, 0.0)
        x += (d / wt.sum(axis=(1, 3)))[:, None, :, None] * wt
        sr[a * scale:b * scale] = x.reshape((b - a) * scale, w * scale)
        moved += float(np.abs(d).sum())
    return moved


def bin_mean(sr: np.ndarray, scale: int) -> np.ndarray:
    """(H, W) float64 s x s block means of a (sH, sW) array (the binning operator, no PSF)."""
    sh, sw = sr.shape
    return np.asarray(sr, np.float64).reshape(sh // scale, scale, sw // scale, scale).mean(axis=(1, 3))


def smooth_correction(sr: np.ndarray, lr: np.ndarray, scale: int, width: float = 1.0) -> None:
    """Alternative to :func:`project_blocks`, measured in benchmarks/photometry.py: add the
    block deficits ``LR - bin(SR)`` smoothed by a Gaussian of ``width`` input pixels and
    upsampled bilinearly. Smooth, but not exact per pixel. Whole arrays in memory."""
    import torch.nn.functional as F
    from scipy.ndimage import gaussian_filter

    d = gaussian_filter(np.asarray(lr, np.float64) - bin_mean(sr, scale), width, mode="nearest")
    up = F.interpolate(torch.from_numpy(d)[None, None], scale_factor=scale, mode="bilinear", align_corners=False)
    sr += up[0, 0].numpy().astype(sr.dtype)


def backproject_binning(sr: np.ndarray, lr: np.ndarray, scale: int, tol: float = 1e-4, max_iter: int = 200) -> int:
    """Alternative to :func:`project_blocks`, measured in benchmarks/photometry.py: iterative
    back-projection through the binning operator with a bilinear back-projection kernel
    (Irani & Peleg), ``SR += up(LR - bin(SR))`` until ``max |LR - bin(SR)| <= tol * std(LR)``.
    Converges to block-exact fluxes with a smooth correction; returns the iterations."""
    import torch.nn.functional as F

    lr64 = np.asarray(lr, np.float64)
    stop = tol * float(np.std(lr64))
    for k in range(max_iter):
        d = lr64 - bin_mean(sr, scale)
        if np.abs(d).max() <= stop:
            return k
        up = F.interpolate(torch.from_numpy(d)[None, None], scale_factor=scale, mode="bilinear", align_corners=False)
        sr += up[0, 0].numpy().astype(sr.dtype)
    return max_iter


def _strip(sr, valid, a: int, b: int, scale: int):
    """Rows a..b (LR) of sr as float64 and the matching output-grid validity mask."""
    x = np.asarray(sr[a * scale:b * scale], dtype=np.float64)
    if valid is None:
        return x, np.ones(x.shape, bool)
    m = np.repeat(np.repeat(valid[a:b], scale, 0), scale, 1)
    return x, m


def flux_error_vs_input(sr_flux: float, lr: np.ndarray, valid: np.ndarray | None = None) -> float:
    """Relative flux error of an output (its summed flux ``sr_flux``) against the INPUT it was made from.

    ``|sr_flux - sum(LR)| / sum(|LR|)``, strip by strip over a possibly memory-mapped input
    (what ``srgan upscale`` checks; :func:`srgan.evaluate.flux_error_vs_hr` compares two images
    against a ground truth instead): the denominator is the total absolute signal, so the
    measure stays meaningful for sky-subtracted images whose net flux is near zero (where
    ``|sum(LR)|`` could be 0); it equals the plain relative error for all-positive images.
    """
    net = ref = 0.0
    rows = max(1, STRIP_PIXELS // max(1, lr.shape[-1]))
    for a in range(0, lr.shape[0], rows):  # strips: no full-size temporaries
        x = np.asarray(lr[a:a + rows], dtype=np.float64)
        m = np.isfinite(x) if valid is None else valid[a:a + rows]
        net += float(np.sum(x, where=m))
        ref += float(np.sum(np.abs(x), where=m))
    return abs(sr_flux - net) / ref if ref > 0 else 0.0
