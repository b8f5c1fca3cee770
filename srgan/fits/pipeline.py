"""FITS in, FITS out: super-resolution whose output is still science data.

Every input form an astropy user holds is accepted (:func:`parse_input`), and the output keeps:

- coordinates: the celestial (and any linear) WCS is rescaled to the finer pixel grid with the
  half-pixel offset of FITS pixel centres, ``CRPIX' = (CRPIX - 0.5) * s + 0.5``; ``CDELT`` or
  the ``CD``/``PC`` columns of the two image axes are divided by s; SIP polynomials are
  rescaled (``A'_p_q = A_p_q * s^(1-p-q)``, same for B, AP, BP); TPV/PV terms, which act on
  intermediate world coordinates, are kept. What cannot be rescaled (lookup-table distortion)
  is removed with a warning naming it (:func:`rescale_header`).
- flux: ``flux="conserve"`` (default): each output pixel holds its share of the flux, so the
  sum over the output equals the sum over the input; ``flux="surface-brightness"``: output
  pixel values are on the input's per-pixel scale (the sum is s^2 larger). Either way the
  network's output is corrected so that the total flux is exactly the input's
  (:func:`srgan.consistency.conserve_flux`); the mode is written to the ``SRFLUX`` card.
- precision and range: float32 out, never quantised (compressed output is lossless GZIP_2);
  the model sees the image through the asinh stretch of its robust sky and noise
  (:mod:`srgan.normalize`), so negative sky and bright cores pass through.
- missing data: NaN/BLANK pixels are filled for the network by Gaussian interpolation from
  their neighbours (the sky level deep inside large holes), and are NaN again at their
  upscaled positions in the output.
- provenance: HISTORY cards with the srgan version, model name and sha256, scale, tiling and
  flux mode; ``SRSCALE``, ``SRFLUX``, ``SRMODEL``, ``SRMODSHA`` cards. All other cards are kept
  except the ones that must change (structural cards, BSCALE/BZERO/BLANK, DATAMIN/DATAMAX,
  CHECKSUM/DATASUM).

Optional, honest about what the network invented (:mod:`srgan.consistency`):
``consistency=True`` back-projects until the output, re-blurred by the PSF and binned,
reproduces the input to within its noise; ``residual=True`` adds an ``SRRESID`` image HDU
``(A(SR) - input) / sigma`` on the input grid.

:func:`upscale_fits` streams: each upscaled image is memory-mapped straight into the output
file and post-processed strip by strip, so memory is bounded by the input plane, not the
output (except for gzip or tile-compressed output, built one HDU at a time in memory).
"""

from __future__ import annotations

import contextlib
import io
import logging
import math
import mmap
import os
import re
import warnings
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from astropy.io import fits
from astropy.wcs import WCS, FITSFixedWarning

from srgan import consistency as cons
from srgan.checkpoint import atomic_write
from srgan.errors import ConfigError, InputError, ModelError

log = logging.getLogger(__name__)

FLUX_MODES = ("conserve", "surface-brightness")
FLUX_COMMENTS = {
    "conserve": "sum of pixels = input flux",
    "surface-brightness": "pixel values on the input scale",
}
ACCEPTED = ("a path, an HDUList (with hdu=), a PrimaryHDU/ImageHDU/CompImageHDU, "
            "(array, Header), (array, WCS) or NDData/CCDData")
DISTORTION_EXTNAMES = ("WCSDVARR", "D2IMARR")  # lookup tables of other HDUs, never upscaled
RESIDUAL_EXTNAME = "SRRESID"
STRUCTURAL = {"SIMPLE", "XTENSION", "BITPIX", "NAXIS", "EXTEND", "PCOUNT", "GCOUNT", "BSCALE", "BZERO",
              "BLANK", "DATAMIN", "DATAMAX", "CHECKSUM", "DATASUM", "GROUPS", "THEAP", "TFIELDS"}
PIXEL_SCALE_CARDS = ("PIXSCALE", "PIXSCAL1", "PIXSCAL2", "PXSCAL1", "PXSCAL2", "SECPIX", "SECPIX1", "SECPIX2")
STATS_PIXELS = 4_000_000  # sky/noise are estimated on at most this many pixels (a regular subsample)
FILL_STDDEV = 2.0  # Gaussian NaN-interpolation kernel sigma, input pixels
_NAXIS = re.compile(r"^NAXIS\d+$")


# ---------------------------------------------------------------------------- input parsing

def open_fits(path) -> fits.HDUList:
    """Open a FITS file (plain, gzipped or tile-compressed) memory-mapped; InputError if unreadable."""
    path = Path(path)
    if not path.is_file():
        raise InputError(f"FITS file not found: {path}")
    try:
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            hdul = fits.open(path)  # memory-mapped unless scaling (BSCALE/BZERO/BLANK) needs a copy
            len(hdul)  # read every header now: a truncated or corrupt file fails here, not later
    except Exception as e:  # astropy raises OSError, ValueError, TypeError, EOFError on bad files
        raise InputError(f"{path} is not a readable FITS file ({e})") from e
    for w in caught:
        if "truncated" in str(w.message):
            hdul.close()
            raise InputError(f"{path} is truncated ({w.message}); the file is incomplete")
        warnings.warn_explicit(w.message, w.category, w.filename, w.lineno)
    return hdul


def _data(hdu, where: str) -> np.ndarray | None:
    """An HDU's data (scaled by BSCALE/BZERO, BLANK -> NaN by astropy); InputError if unreadable."""
    try:
        return hdu.data
    except Exception as e:
        raise InputError(f"{where}: the image data cannot be read ({e}); the file may be truncated") from e


def _describe(hdul) -> list[str]:
    out = []
    for i, h in enumerate(hdul):
        shape = "x".join(str(n) for n in reversed(h.shape)) if h.is_image and h.header.get("NAXIS", 0) else "-"
        out.append(f"{i} ({h.name or 'no name'}, {type(h).__name__}, {shape})")
    return out


def image_hdus(hdul, min_ndim: int = 2) -> list[int]:
    """Indices of the image HDUs with at least ``min_ndim`` data axes (distortion tables excluded)."""
    return [i for i, h in enumerate(hdul)
            if h.is_image and h.name not in DISTORTION_EXTNAMES and h.header.get("NAXIS", 0) >= min_ndim
            and all(h.header.get(f"NAXIS{k}", 0) > 0 for k in range(1, h.header["NAXIS"] + 1))]


def select_hdu(hdul, hdu) -> int:
    """Index of the HDU named by ``hdu`` (index, EXTNAME, (EXTNAME, EXTVER)) or the only image HDU.

    Raises InputError when ``hdu`` is None and the file has no or several 2-D image HDUs, or
    when ``hdu`` does not exist.
    """
    if hdu is None:
        candidates = image_hdus(hdul)
        if len(candidates) == 1:
            return candidates[0]
        if not candidates:
            raise InputError(f"no image HDU with 2-D data; HDUs: {'; '.join(_describe(hdul))}")
        listed = "; ".join(_describe(hdul)[i] for i in candidates)
        raise InputError(f"{len(candidates)} image HDUs: {listed}; choose one with hdu=N or NAME (--hdu)")
    if isinstance(hdu, str) and hdu.strip().lstrip("-").isdigit():
        hdu = int(hdu)
    try:
        return hdul.index_of(hdu)
    except (KeyError, IndexError) as e:
        raise InputError(f"no HDU {hdu!r} in the file; HDUs: {'; '.join(_describe(hdul))} (--hdu N or NAME)") from e


def _header_wcs(header: fits.Header) -> WCS | None:
    """The WCS a header describes, or None when it has no WCS cards."""
    if not any(_WCS_KEY.match(k) for k in header) and "A_ORDER" not in header:
        return None
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", FITSFixedWarning)
        try:
            return WCS(header)
        except Exception as e:  # astropy raises many types for malformed WCS cards
            warnings.warn(f"the header's WCS cannot be parsed ({e}); it is kept as cards but not used", stacklevel=3)
            return None


def parse_input(data, hdu=None) -> tuple[np.ndarray, fits.Header, WCS | None]:
    """Turn any FITS-like input into ``(array, header, wcs)``.

    Accepted: a path (str or Path; memory-mapped), an HDUList (``hdu`` = index, EXTNAME or
    (EXTNAME, EXTVER) when it holds several image HDUs), a PrimaryHDU, ImageHDU or
    CompImageHDU, a tuple ``(array, Header)`` or ``(array, WCS)``, or an astropy NDData
    (CCDData included; its header is ``meta`` when that is a Header).

    Returns:
        array: (..., H, W) at least 2-D, as stored (astropy has applied BSCALE/BZERO and
            turned BLANK into NaN); header: a copy; wcs: astropy WCS or None without one.
    Raises:
        TypeError: any other input (the message lists the accepted forms).
        InputError: unreadable file, no or several image HDUs, fewer than 2 data axes.

    >>> import numpy as np
    >>> a, h, w = parse_input((np.zeros((3, 4)), fits.Header({"BUNIT": "Jy"})))
    >>> a.shape, h["BUNIT"], w
    ((3, 4), 'Jy', None)
    """
    from astropy.nddata import NDData

    if isinstance(data, (str, os.PathLike)):
        with open_fits(data) as hdul:
            return parse_input(hdul, hdu)  # memmapped data stays valid after close
    if isinstance(data, fits.HDUList):
        i = select_hdu(data, hdu)
        if not data[i].is_image:
            raise InputError(f"HDU {hdu!r} is a {type(data[i]).__name__}, not an image; choose an image HDU (--hdu)")
        return parse_input(data[i])
    if isinstance(data, (fits.PrimaryHDU, fits.ImageHDU, fits.CompImageHDU)):
        array, header = _data(data, f"HDU {data.name or type(data).__name__}"), data.header.copy()
    elif isinstance(data, NDData):
        array = np.asarray(data.data)
        meta = data.meta
        header = meta.copy() if isinstance(meta, fits.Header) else fits.Header(
            [(k, v) for k, v in dict(meta or {}).items() if isinstance(k, str) and len(k) <= 8
             and isinstance(v, (str, int, float, bool))])
        if data.wcs is not None:
            if isinstance(data.wcs, WCS):  # the WCS object wins over WCS cards left in meta
                for key in [k for k in header if _WCS_KEY.match(k) or _SIP_KEY.match(k) or k.startswith("PV")
                            or k in ("WCSAXES", "A_ORDER", "B_ORDER", "AP_ORDER", "BP_ORDER")]:
                    del header[key]
                header.update(data.wcs.to_header(relax=True))
            else:
                warnings.warn(f"NDData WCS of type {type(data.wcs).__name__} is not a FITS WCS; it is dropped",
                              stacklevel=2)
    elif isinstance(data, tuple) and len(data) == 2 and isinstance(data[1], (fits.Header, WCS)):
        array = np.asarray(data[0])
        header = data[1].copy() if isinstance(data[1], fits.Header) else data[1].to_header(relax=True)
    else:
        raise TypeError(f"cannot read FITS-like input of type {type(data).__name__}; expected {ACCEPTED}")
    if array is None or array.ndim < 2:
        ndim = 0 if array is None else array.ndim
        raise InputError(f"expected image data with at least 2 axes, got {ndim}; "
                         "choose a 2-D image HDU with hdu=N or NAME (--hdu)")
    return array, header, _header_wcs(header)


# ---------------------------------------------------------------------------- header and WCS

_WCS_KEY = re.compile(r"^(?:(CRPIX|CRVAL|CDELT|CTYPE|CUNIT|CROTA)(\d+)([A-Z]?)|(CD|PC)(\d+)_(\d+)([A-Z]?))$")
_SIP_KEY = re.compile(r"^(A|B|AP|BP)_(\d+)_(\d+)$")
_LOOKUP = ("CPDIS", "CQDIS", "D2IMDIS")  # lookup-table distortion (Paper IV draft, HST)
_SECTION = re.compile(r"^\[(\d+):(\d+),(\d+):(\d+)\]$")


def _wcs_axes(header: fits.Header) -> dict[str, int]:
    """Alternate WCS letters ('' = primary) present in the header -> their number of axes."""
    alts: dict[str, int] = {}
    for key in header:
        m = _WCS_KEY.match(key)
        if m:
            alt = m.group(3) if m.group(1) else m.group(7)
            n = int(m.group(2)) if m.group(1) else max(int(m.group(5)), int(m.group(6)))
            alts[alt] = max(alts.get(alt, 0), n)
    return {a: max(n, int(header.get(f"WCSAXES{a}", 0)), int(header.get("NAXIS", 0))) for a, n in alts.items()}


def _rescale_linear(h: fits.Header, alt: str, n: int, s: int) -> None:
    """CRPIX with the half-pixel offset, and the linear transform's columns of pixel axes 1 and 2."""
    for j in (1, 2):
        key = f"CRPIX{j}{alt}"
        h[key] = (float(h.get(key, 0.0)) - 0.5) * s + 0.5
    cd = [(k, m) for k in h if (m := re.fullmatch(rf"CD(\d+)_(\d+){alt}", k))]
    for k, m in cd:  # CDi_j for pixel axes j = 1, 2
        if int(m.group(2)) in (1, 2):
            h[k] = float(h[k]) / s
    has_pc = any(re.fullmatch(rf"(PC\d+_\d+|CDELT\d+){alt}", k) for k in h)
    if cd and not has_pc:
        return
    pc = np.eye(n)
    for i in range(1, n + 1):
        for j in range(1, n + 1):
            pc[i - 1, j - 1] = float(h.get(f"PC{i}_{j}{alt}", pc[i - 1, j - 1]))
    rows = [i for i in range(n) if pc[i, 0] != 0 or pc[i, 1] != 0]  # world axes fed by pixel axes 1, 2
    block = all(pc[i, j] == 0 for i in rows for j in range(2, n))
    if block:  # the usual case: scale CDELT of those world axes
        for i in rows:
            key = f"CDELT{i + 1}{alt}"
            h[key] = float(h.get(key, 1.0)) / s
    else:  # pixel axes 1, 2 mixed with others: scale the PC columns instead
        for i in range(n):
            for j in (0, 1):
                if pc[i, j] != 0:
                    h[f"PC{i + 1}_{j + 1}{alt}"] = pc[i, j] / s


def rescale_header(header: fits.Header, scale: int) -> fits.Header:
    """A copy of ``header`` describing the same sky on a grid ``scale`` times finer on axes 1, 2.

    FITS pixel i (1-based) spans i-0.5..i+0.5, so input pixel p and output pixel p' see the
    same point when ``p' = (p - 0.5) * s + 0.5``. Changed: CRPIXj (every alternate WCS),
    CDELTi or CDi_j / PCi_j columns of pixel axes 1 and 2, SIP A/B/AP/BP coefficients
    (``* s^(1-p-q)``) and A_DMAX/B_DMAX, IRAF LTVj/LTMi_j, DATASEC/TRIMSEC/BIASSEC, the
    pixel-scale cards in PIXEL_SCALE_CARDS (divided by s), NAXIS1/NAXIS2. Other instrument cards in
    pixel units (e.g. Spitzer's PTGDIFFX, ORIGCD11) describe the original frame and are kept.
    Kept: everything else, including TPV/PV terms and other axes of cubes.
    Removed with a warning: lookup-table distortions (CPDIS/CQDIS/D2IMDIS and their DP/DQ/D2IM
    records), which srgan cannot rescale. Warned: -TAB axes, old-style PC00i00j/CD00i00j.
    """
    s = int(scale)
    h = header.copy()
    for alt, n in _wcs_axes(header).items():
        _rescale_linear(h, alt, max(n, 2), s)
        for i in range(1, n + 1):
            if str(h.get(f"CTYPE{i}{alt}", "")).endswith("-TAB"):
                warnings.warn(f"CTYPE{i}{alt} = {h[f'CTYPE{i}{alt}']!r}: -TAB lookup coordinates are not "
                              "rescaled; that axis of the output WCS is wrong", stacklevel=2)
    for key in list(h):
        m = _SIP_KEY.match(key)
        if m:
            p, q = int(m.group(2)), int(m.group(3))
            h[key] = float(h[key]) * float(s) ** (1 - p - q)
    for key in ("A_DMAX", "B_DMAX"):
        if key in h:
            h[key] = float(h[key]) * s
    lookup = sorted({k for k in h if k.startswith(_LOOKUP)})
    if lookup:
        dropped = [k for k in h if k.startswith(_LOOKUP) or re.match(r"^(DP|DQ)\d", k) or k.startswith("D2IM")]
        for k in dropped:
            del h[k]
        warnings.warn(f"lookup-table distortion ({', '.join(lookup)}) cannot be rescaled by srgan and was removed "
                      "from the output header; positions are off by up to that distortion's size", stacklevel=2)
    old_style = [k for k in h if re.fullmatch(r"(PC|CD)\d{3}\d{3}", k)]
    if old_style:
        warnings.warn(f"old-style WCS matrix cards {old_style} are not rescaled; convert them to PCi_j/CDi_j",
                      stacklevel=2)
    if any(k.startswith(("LTV", "LTM")) for k in h):  # IRAF: image = LTM . physical + LTV
        for i in (1, 2):
            h[f"LTV{i}"] = float(h.get(f"LTV{i}", 0.0)) * s + 0.5 - 0.5 * s
            for j in (1, 2):
                key = f"LTM{i}_{j}"
                if key in h or i == j:
                    h[key] = float(h.get(key, 1.0 if i == j else 0.0)) * s
    for key in ("DATASEC", "TRIMSEC", "BIASSEC"):
        if key in h:
            m = _SECTION.match(str(h[key]).replace(" ", ""))
            if m:
                x1, x2, y1, y2 = (int(v) for v in m.groups())
                h[key] = f"[{_sec(x1, x2, s)},{_sec(y1, y2, s)}]"
            else:
                warnings.warn(f"{key} = {h[key]!r} is not a simple [x1:x2,y1:y2] section; not rescaled", stacklevel=2)
    for key in PIXEL_SCALE_CARDS:
        if isinstance(h.get(key), (int, float)) and not isinstance(h.get(key), bool):
            h[key] = h[key] / s
    for i in (1, 2):
        if f"NAXIS{i}" in h:
            h[f"NAXIS{i}"] = h[f"NAXIS{i}"] * s
    return h


def _sec(a: int, b: int, s: int) -> str:
    lo, hi = min(a, b), max(a, b)
    lo, hi = (lo - 1) * s + 1, hi * s
    return f"{lo}:{hi}" if a <= b else f"{hi}:{lo}"


def rescale_wcs(wcs: WCS, scale: int) -> WCS:
    """A WCS for the grid ``scale`` times finer (via :func:`rescale_header`; SIP kept)."""
    out = _header_wcs(rescale_header(wcs.to_header(relax=True), scale))
    if wcs.pixel_shape is not None:
        out.pixel_shape = tuple(n * scale if i < 2 else n for i, n in enumerate(wcs.pixel_shape))
    return out


def _content_cards(header: fits.Header) -> fits.Header:
    """The header without structural and data-dependent cards (an HDU class adds its own)."""
    h = fits.Header()
    for card in header.cards:
        if card.keyword not in STRUCTURAL and not _NAXIS.match(card.keyword):
            h.append(card, end=True)
    return h


def _is_surface_brightness(bunit) -> bool:
    import astropy.units as u

    try:
        unit = u.Unit(str(bunit), parse_strict="silent")
        return any((b == u.sr and p < 0) or (b.physical_type == "angle" and p <= -2)
                   for b, p in zip(unit.bases, unit.powers))
    except (ValueError, TypeError, AttributeError):
        return False


def output_header(header: fits.Header, upscaler, flux: str, notes=()) -> fits.Header:
    """Rescaled content cards plus srgan's provenance cards (SRSCALE, SRFLUX, SRMODEL, SRMODSHA, HISTORY)."""
    from srgan import __version__

    info, s = upscaler.info, upscaler.scale
    h = _content_cards(rescale_header(header, s))
    if flux == "conserve" and "BUNIT" in h and _is_surface_brightness(h["BUNIT"]):
        warnings.warn(f"BUNIT {h['BUNIT']!r} is a surface brightness, but flux='conserve' divides pixel values "
                      f"by {s * s}; use flux='surface-brightness' (--flux surface-brightness) to keep that unit "
                      "meaningful", stacklevel=3)
    h["SRSCALE"] = (s, "srgan output pixels per input pixel per axis")
    h["SRFLUX"] = (flux, FLUX_COMMENTS[flux])
    h["SRMODEL"] = (str(info.name)[:60], "srgan model")
    h["SRMODSHA"] = str(info.sha256)
    tile = "auto" if upscaler.tile is None else upscaler.tile
    overlap = "auto" if upscaler.overlap is None else upscaler.overlap
    h.add_history(f"srgan {__version__}: upscaled x{s} by model {info.name}")  # one card each (<= 72 chars)
    h.add_history(f"sha256 {info.sha256}")
    h.add_history(f"srgan: tile {tile} px, overlap {overlap} px (input pixels)")
    h.add_history(f"srgan: flux {flux}: {FLUX_COMMENTS[flux]}")
    for note in notes:
        h.add_history(f"srgan: {note}")
    return h


# ---------------------------------------------------------------------------- pixels

@dataclass
class PlaneResult:
    """What happened to one 2-D plane (used for HISTORY notes and by tests)."""

    sky: float
    noise: float
    flux_error: float  # |flux out - flux in| / sum(|input|) over valid pixels
    backprojection: cons.BackProjection | None = None


def _check_options(upscaler, flux: str) -> None:
    if flux not in FLUX_MODES:
        raise ConfigError(f"flux must be one of {FLUX_MODES}, got {flux!r} (--flux)")
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


def sky_and_noise_plane(plane: np.ndarray) -> tuple[float, float]:
    """Robust sky and noise of a plane (NaNs ignored), on a regular subsample of large planes."""
    from srgan.normalize import sky_and_noise

    step = max(1, math.ceil(math.sqrt(plane.size / STATS_PIXELS)))
    sample = np.asarray(plane[::step, ::step], dtype=np.float32)
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
        sub = np.where(valid[a0:b0], np.asarray(plane[a0:b0], np.float64), np.nan)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # astropy warns about the NaNs it is asked to fill
            filled = interpolate_replace_nans(sub, kernel, boundary="extend")
        filled[~np.isfinite(filled)] = sky
        out[a:b] = filled[a - a0:b - a0]
    return out


class PagedArray:
    """An array in a memory-mapped file that hands its pages back as it goes.

    Pages of a mapped file that a process has touched count in its resident memory (RSS)
    until they are unmapped, so writing a 6 GB output through one memmap shows as 6 GB of
    RSS. Every ``chunk`` bytes read or written through this wrapper, the mapping is flushed
    to the file and its pages released (``madvise(MADV_DONTNEED)``, safe for a shared file
    mapping after ``msync``): RSS stays near ``chunk``. Indexing returns plain numpy views
    (valid after a release: their pages are read back from the file); :meth:`view` gives a
    wrapper of a reshaped or indexed part that shares the counter.
    """

    def __init__(self, array: np.ndarray, mm, chunk: int = 1 << 26, _count=None):
        self.array, self.mm, self.chunk = array, mm, chunk
        self._count = _count if _count is not None else [0]

    shape = property(lambda self: self.array.shape)
    ndim = property(lambda self: self.array.ndim)
    dtype = property(lambda self: self.array.dtype)
    size = property(lambda self: self.array.size)

    def __array__(self, dtype=None, copy=None):  # whole-array numpy maths (no paging)
        return np.asarray(self.array, dtype=dtype)

    def view(self, fn) -> "PagedArray":
        return PagedArray(fn(self.array), self.mm, self.chunk, self._count)

    def __getitem__(self, key):
        part = self.array[key]
        self._touch(part.nbytes)
        return part

    def __setitem__(self, key, value):
        self.array[key] = value
        self._touch(np.asarray(value).nbytes)

    def _touch(self, nbytes: int) -> None:
        self._count[0] += nbytes
        if self._count[0] >= self.chunk:
            self.release()

    def release(self) -> None:
        self._count[0] = 0
        if self.array.flags.writeable:
            self.mm.flush()
        if hasattr(self.mm, "madvise") and hasattr(mmap, "MADV_DONTNEED"):
            self.mm.madvise(mmap.MADV_DONTNEED)


def _sub(out, fn):
    """``fn(out)`` for arrays, a sharing view for :class:`PagedArray`."""
    return out.view(fn) if isinstance(out, PagedArray) else fn(out)


def _run_model(upscaler, lr: np.ndarray, sky: float, noise: float, out: np.ndarray) -> None:
    """Network output for one filled plane, in pixel units, written into ``out`` (sH, sW)."""
    if upscaler.info.config.in_channels == 1:
        upscaler.upscale_planes(_sub(lr, lambda a: a[None]), sky=sky, noise=noise, out=_sub(out, lambda a: a[None]))
    else:  # a 3-channel astronomy model: the plane in every channel, the channels averaged
        rgb = upscaler.upscale_planes(np.repeat(np.asarray(lr)[None], 3, axis=0), sky=sky, noise=noise)
        out[...] = rgb.mean(axis=0)


def _upscale_plane(upscaler, plane, out, *, flux, kernel, consistency, residual):
    """Upscale one (H, W) plane into ``out`` (sH, sW); returns (PlaneResult, residual or None)."""
    s = upscaler.scale
    raw = plane if plane.dtype.kind == "f" else np.asarray(plane, dtype=np.float32)  # memmaps stay memmaps
    valid = finite_mask(raw)
    if not valid.any():
        raise InputError("an image plane has no finite pixels (all NaN/BLANK); nothing to upscale")
    sky, noise = sky_and_noise_plane(raw)
    all_valid = bool(valid.all())
    lr = raw if all_valid else fill_nans(raw, valid, sky)
    mask = None if all_valid else valid
    _run_model(upscaler, lr, sky, noise, out)
    bp = None
    if consistency:
        bp = cons.back_project(out, lr, kernel, s, noise, valid=mask)
    cons.conserve_flux(out, lr, s, sky, noise, valid=mask)
    resid = cons.residual_map(out, lr, kernel, s, noise, valid=mask) if residual else None
    # NaN footprint, flux units, and the measured flux, strip by strip
    h, w = lr.shape
    rows = cons.strip_rows(h, w, s)
    divide = float(s * s) if flux == "conserve" else 1.0
    total = 0.0
    for a in range(0, h, rows):
        b = min(h, a + rows)
        x = np.asarray(out[a * s:b * s], dtype=np.float32)
        if mask is not None:
            x = np.where(np.repeat(np.repeat(mask[a:b], s, 0), s, 1), x, np.float32(np.nan))
        x = x / np.float32(divide)
        total += float(np.nansum(x, dtype=np.float64))
        out[a * s:b * s] = x
    flux_in = total if flux == "conserve" else total / (s * s)
    err = cons.flux_error_vs_input(flux_in, raw, mask)
    if err > 0.005:  # cannot happen after conserve_flux, short of float overflow
        warnings.warn(f"output flux differs from the input's by {100 * err:.2f}% of the total absolute flux",
                      stacklevel=3)
    return PlaneResult(sky, noise, err, bp), resid


def upscale_array(upscaler, data: np.ndarray, *, flux: str = "conserve", consistency: bool = False,
                  psf=None, residual: bool = False, out: np.ndarray | None = None):
    """Upscale (..., H, W) data plane by plane (the array core of every FITS function).

    Args:
        upscaler: an :class:`srgan.upscale.Upscaler` with a 1-channel asinh model.
        data: (..., H, W) float array (memmap ok); NaNs mark missing pixels.
        out: optional (..., sH, sW) float32 array or memmap to write into.
    Returns:
        (out (..., sH, sW) float32, residual (..., H, W) float32 or None, [PlaneResult per plane]).
    """
    _check_options(upscaler, flux)
    s = upscaler.scale
    h, w = data.shape[-2:]
    lead = data.shape[:-2]
    if out is None:
        out = np.empty((*lead, h * s, w * s), np.float32)
    kernel = None
    if consistency or residual:
        kernel, _ = cons.resolve_psf(psf, s, getattr(upscaler.info, "preset", None))
        if kernel.shape[-1] // 2 >= min(h, w) * s:
            raise InputError(f"image {w}x{h} is too small for the PSF ({kernel.shape[-1]} output pixels wide); "
                             "pass a narrower --psf FWHM")
    planes = _sub(data, lambda a: a.reshape(-1, h, w))
    outs = _sub(out, lambda a: a.reshape(-1, h * s, w * s))
    resid = np.empty((*lead, h, w), np.float32) if residual else None
    resids = resid.reshape(-1, h, w) if residual else None
    results = []
    for i in range(planes.shape[0]):
        result, r = _upscale_plane(upscaler, _sub(planes, lambda a: a[i]), _sub(outs, lambda a: a[i]), flux=flux,
                                   kernel=kernel, consistency=consistency, residual=residual)
        if residual:
            resids[i] = r
        results.append(result)
        log.info("plane %d: sky %.4g noise %.4g flux error %.2e", i, result.sky, result.noise, result.flux_error)
    return out, resid, results


def _notes(results: list[PlaneResult], consistency: bool, psf_what: str | None) -> list[str]:
    """HISTORY notes; fixed-width numbers, so a streamed header keeps its size when rewritten."""
    if not consistency:
        return []
    bps = [r.backprojection or cons.BackProjection(0, 0.0, 0.0, True) for r in results] or [
        cons.BackProjection(0, 0.0, 0.0, True)]
    return [f"back-projection, PSF {psf_what}:",
            f"{sum(b.iterations for b in bps):5d} iterations, residual RMS {max(b.rms_before for b in bps):8.3g} "
            f"->{max(b.rms_after for b in bps):8.3g} sigma"]


def _psf_what(upscaler, psf, consistency, residual) -> str | None:
    if not (consistency or residual):
        return None
    return cons.resolve_psf(psf, upscaler.scale, getattr(upscaler.info, "preset", None))[1]


def _residual_hdu(resid: np.ndarray, header: fits.Header, results, psf_what: str, ver: int) -> fits.ImageHDU:
    """SRRESID on the input grid, with the input's WCS."""
    wcs = _header_wcs(header)
    h = wcs.to_header(relax=True) if wcs is not None else fits.Header()
    h["EXTNAME"] = RESIDUAL_EXTNAME
    h["EXTVER"] = ver
    h.add_comment("SRRESID = (A(SR) - input) / SRNOISE: dimensionless, about N(0, 1) where SR agrees with the data")
    if len(results) == 1:
        h["SRNOISE"] = (results[0].noise, "input noise sigma, input units")
    h["SRPSF"] = (psf_what[:40], "PSF of forward op A")
    h.add_history("srgan: A = PSF convolution then block-mean binning to the input grid")
    return fits.ImageHDU(resid, header=h)


# ---------------------------------------------------------------------------- public API

def _compressed(data: np.ndarray, header: fits.Header, like: fits.CompImageHDU) -> fits.CompImageHDU:
    """Tile-compressed float32 HDU, lossless (GZIP_2 with quantisation off)."""
    algo = like.compression_type if like.compression_type in ("GZIP_1", "GZIP_2") else "GZIP_2"
    return fits.CompImageHDU(data, header=header, compression_type=algo, quantize_level=0.0)


def upscale_hdu(upscaler, hdu, *, flux: str = "conserve", consistency: bool = False, psf=None,
                residual: bool = False):
    """Upscale one image HDU (or anything :func:`parse_input` accepts) in memory.

    Args:
        upscaler: :class:`srgan.upscale.Upscaler` with a 1-channel asinh model.
        hdu: PrimaryHDU/ImageHDU/CompImageHDU (or path, HDUList with one image, (array, Header), ...).
        flux: "conserve" (output sums to the input flux) or "surface-brightness".
        consistency: back-project until A(SR) reproduces the input within the noise.
        psf: PSF of A: FWHM in input pixels, PSF FITS file or array on the input grid, or None
            (the model's training preset).
        residual: also return the SRRESID image (A(SR) - input) / sigma.
    Returns:
        ImageHDU (CompImageHDU for a compressed input) with the rescaled header and float32
        data; with ``residual=True`` an HDUList [PrimaryHDU (SR), ImageHDU SRRESID] (an empty
        PrimaryHDU first for compressed input).
    """
    data, header, _ = parse_input(hdu)
    out, resid, results = upscale_array(upscaler, data, flux=flux, consistency=consistency, psf=psf,
                                        residual=residual)
    what = _psf_what(upscaler, psf, consistency, residual)
    h = output_header(header, upscaler, flux, _notes(results, consistency, what))
    compressed = isinstance(hdu, fits.CompImageHDU)
    if compressed:
        image = _compressed(out, h, hdu)
    else:
        image = fits.ImageHDU(out, header=h)
    if not residual:
        return image
    first = [fits.PrimaryHDU(), image] if compressed else [fits.PrimaryHDU(out, header=h)]
    return fits.HDUList([*first, _residual_hdu(resid, header, results, what, 1)])


def upscale_nddata(upscaler, nd, *, flux: str = "conserve", consistency: bool = False, psf=None,
                   residual: bool = False):
    """Upscale an astropy NDData/CCDData; returns the same class.

    data: upscaled; wcs: rescaled (None if none); mask: upscaled by repetition (each output
    pixel inherits its parent's mask); unit and meta kept (meta: rescaled header with
    provenance when it is a Header). Uncertainty: StdDev/Variance/InverseVariance are
    repeated onto the output grid and scaled like the data (divided by s^2 in "conserve"
    mode, squared for variances). This is an approximation: the s^2 output pixels of one input
    pixel are fully correlated, so summed over that block they give the input's uncertainty.
    Other uncertainty types and ``psf`` are dropped with a warning.

    With ``residual=True`` returns ``(upscaled, residual)``, residual an NDData on the input grid.
    """
    from astropy.nddata import InverseVariance, NDData, StdDevUncertainty, VarianceUncertainty

    if not isinstance(nd, NDData):
        raise TypeError(f"expected an astropy NDData or CCDData, got {type(nd).__name__}")
    data, header, wcs = parse_input(nd)
    s = upscaler.scale
    out, resid, results = upscale_array(upscaler, np.asarray(data, dtype=np.float32), flux=flux,
                                        consistency=consistency, psf=psf, residual=residual)
    what = _psf_what(upscaler, psf, consistency, residual)
    h = output_header(header, upscaler, flux, _notes(results, consistency, what))
    new_wcs = rescale_wcs(wcs, s) if wcs is not None else None

    def up(a):
        return np.repeat(np.repeat(np.asarray(a), s, axis=-2), s, axis=-1)

    mask = up(nd.mask) if nd.mask is not None and np.ndim(nd.mask) == data.ndim else nd.mask
    uncertainty = None
    if nd.uncertainty is not None:
        u, k = nd.uncertainty, float(s * s) if flux == "conserve" else 1.0
        scaled = {StdDevUncertainty: 1 / k, VarianceUncertainty: 1 / k**2, InverseVariance: k**2}
        kind = type(u)
        if kind in scaled:
            uncertainty = kind(up(u.array) * scaled[kind], unit=u.unit)
        else:
            warnings.warn(f"uncertainty of type {kind.__name__} cannot be propagated and is dropped", stacklevel=2)
    if getattr(nd, "psf", None) is not None:
        warnings.warn("NDData.psf is on the input grid and is dropped from the output", stacklevel=2)
    meta = h if isinstance(nd.meta, fits.Header) else dict(nd.meta or {})
    result = type(nd)(out, uncertainty=uncertainty, mask=mask, wcs=new_wcs, meta=meta, unit=nd.unit)
    if not residual:
        return result
    return result, NDData(resid, wcs=wcs)


def _same_file(a: Path, b: Path) -> bool:
    if a.resolve() == b.resolve():
        return True
    return a.exists() and b.exists() and os.path.samefile(a, b)


def upscale_fits(upscaler, path_in, path_out, *, hdu=None, flux: str = "conserve", consistency: bool = False,
                 psf=None, residual: bool = False) -> Path:
    """Upscale a FITS file into a new FITS file, written atomically.

    Every image HDU with 2 or more axes is upscaled (cubes plane by plane), or only ``hdu``
    (index, EXTNAME or (EXTNAME, EXTVER)); all other HDUs (tables, other images, distortion
    arrays) are copied unchanged. Plain, gzipped (``.gz``) and tile-compressed (``.fz``,
    CompImageHDU) input is read; a compressed image HDU is written compressed (lossless
    GZIP_2), output names ending in ``.gz`` are gzipped. With ``residual=True`` an ``SRRESID``
    HDU follows each upscaled HDU. See :func:`upscale_hdu` for the other options.

    Uncompressed outputs are streamed: the upscaled data are memory-mapped in the output file
    and written strip by strip, so memory holds about one input plane, not the output.

    Returns:
        path_out.
    Raises:
        InputError: unreadable or truncated file, no 2-D image HDU, all-NaN plane; nothing is
            written then. ConfigError: path_out is path_in, unknown flux mode. ModelError: a
            photo model.
    """
    path_in, path_out = Path(path_in), Path(path_out)
    if _same_file(path_in, path_out):
        raise ConfigError(f"output {path_out} is the input file; choose another output path (srgan never "
                          "overwrites its input)")
    _check_options(upscaler, flux)
    with open_fits(path_in) as hdul, contextlib.ExitStack() as mappings:
        targets = image_hdus(hdul) if hdu is None else [select_hdu(hdul, hdu)]
        if not targets:
            raise InputError(f"{path_in}: no image HDU with 2-D data to upscale; HDUs: {'; '.join(_describe(hdul))}")
        inputs = {i: _input_array(hdul[i], path_in, mappings, f"{path_in} HDU {i}") for i in targets}
        for i in targets:
            ndim = 0 if inputs[i] is None else inputs[i].ndim
            if ndim < 2:
                raise InputError(f"{path_in}: HDU {i} has {ndim}-D data; "
                                 "only images with 2 or more axes can be upscaled (--hdu N or NAME)")
        what = _psf_what(upscaler, psf, consistency, residual)
        opts = dict(flux=flux, consistency=consistency, psf=psf, residual=residual)
        gz = path_out.name.lower().endswith(".gz")

        def write(tmp):
            opener = _gzip_open if gz else open
            with opener(tmp, "wb+") as f:
                nres = 0
                for i, h in enumerate(hdul):
                    if i not in targets:
                        f.write(_hdu_bytes(h, primary=i == 0))
                        continue
                    resid, results = _write_upscaled(f, upscaler, h, inputs[i], i == 0, stream=not gz, opts=opts,
                                                     what=what)
                    if residual:
                        nres += 1
                        f.write(_hdu_bytes(_residual_hdu(resid, h.header, results, what, nres), primary=False))

        try:
            atomic_write(path_out, write)
        finally:
            inputs.clear()  # drop the views so that the input mappings can be closed
    return path_out


def _close(mm) -> None:
    try:
        mm.close()
    except BufferError:  # a view is still referenced (only after an exception): the GC closes it
        pass


def _input_array(hdu, path: Path, mappings: contextlib.ExitStack, where: str):
    """An HDU's data for upscaling: for plain float images a paged read-only mapping of the file
    (see :class:`PagedArray`: reading a large input does not pile up resident memory), else
    astropy's array (scaled integers, compressed or gzipped files)."""
    h = hdu.header
    with open(path, "rb") as f:
        plain = f.read(6) == b"SIMPLE"  # not gzip/bzip2-compressed
    info = hdu.fileinfo() if plain else None
    if (type(hdu) not in (fits.PrimaryHDU, fits.ImageHDU) or h.get("BITPIX") not in (-32, -64) or info is None
            or any(k in h for k in ("BSCALE", "BZERO", "BLANK")) or h.get("NAXIS", 0) < 1):
        return _data(hdu, where)
    shape = tuple(int(h[f"NAXIS{k}"]) for k in range(h["NAXIS"], 0, -1))
    with open(path, "rb") as f:
        mm = mmap.mmap(f.fileno(), 0, access=mmap.ACCESS_READ)
    mappings.callback(_close, mm)
    try:
        array = np.ndarray(shape, dtype=">f4" if h["BITPIX"] == -32 else ">f8", buffer=mm, offset=info["datLoc"])
    except TypeError as e:
        raise InputError(f"{where}: the image data cannot be read ({e}); the file may be truncated") from e
    return PagedArray(array, mm)


def _gzip_open(path, mode):
    import gzip

    return gzip.open(path, mode.replace("+", ""))


def _hdu_bytes(hdu, primary: bool) -> bytes:
    """One HDU serialised by astropy (as the primary HDU, or as an extension)."""
    buf = io.BytesIO()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", fits.verify.VerifyWarning)
        if primary:
            fits.HDUList([hdu]).writeto(buf, output_verify="silentfix")
            return buf.getvalue()
        empty = fits.PrimaryHDU()
        fits.HDUList([empty, hdu]).writeto(buf, output_verify="silentfix")
    return buf.getvalue()[len(empty.header.tostring()):]


def _image_header(cards: fits.Header, shape, primary: bool) -> fits.Header:
    """A complete float32 image header: structural cards for ``shape`` (numpy order), then ``cards``."""
    h = fits.Header()
    if primary:
        h["SIMPLE"] = (True, "conforms to FITS standard")
    else:
        h["XTENSION"] = ("IMAGE", "Image extension")
    h["BITPIX"] = (-32, "array data type")
    h["NAXIS"] = (len(shape), "number of array dimensions")
    for k, n in enumerate(reversed(shape), 1):
        h[f"NAXIS{k}"] = n
    if primary:
        h["EXTEND"] = True
    else:
        h["PCOUNT"] = 0
        h["GCOUNT"] = 1
    for card in cards.cards:
        h.append(card, end=True)
    return h


def _write_upscaled(f, upscaler, hdu, data, primary: bool, *, stream: bool, opts: dict, what):
    """Upscale one HDU (its ``data``) and append it to the open output file ``f``; returns (residual, results)."""
    s = upscaler.scale
    shape = (*data.shape[:-2], data.shape[-2] * s, data.shape[-1] * s)
    if isinstance(hdu, fits.CompImageHDU) or not stream:
        out, resid, results = upscale_array(upscaler, data, **opts)
        h = output_header(hdu.header, upscaler, opts["flux"], _notes(results, opts["consistency"], what))
        if isinstance(hdu, fits.CompImageHDU):
            f.write(_hdu_bytes(_compressed(out, h, hdu), primary=False))
        else:
            header = _image_header(h, shape, primary)
            f.write(header.tostring().encode("ascii"))
            raw = out.astype(">f4").tobytes()
            f.write(raw + b"\0" * (-len(raw) % 2880))
        return resid, results
    # streaming: the header first, then a memory-mapped data block. The back-projection note is
    # known only after the pixels: a placeholder of the same length is written first.
    cards = output_header(hdu.header, upscaler, opts["flux"], _notes([], opts["consistency"], what))
    header = _image_header(cards, shape, primary)
    start = f.tell()
    f.write(header.tostring().encode("ascii"))
    offset = f.tell()
    nbytes = int(np.prod(shape)) * 4
    f.seek(offset + nbytes + (-nbytes % 2880) - 1)
    f.write(b"\0")
    f.flush()
    mm = mmap.mmap(f.fileno(), 0)
    try:
        out = PagedArray(np.ndarray(shape, dtype=">f4", buffer=mm, offset=offset), mm)
        _, resid, results = upscale_array(upscaler, data, out=out, **opts)
        out.release()
        del out
    finally:
        _close(mm)
    if opts["consistency"]:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # the header's warnings were given on the first pass
            cards = output_header(hdu.header, upscaler, opts["flux"], _notes(results, True, what))
        final = _image_header(cards, shape, primary).tostring().encode("ascii")
        if len(final) != offset - start:
            raise RuntimeError("streamed FITS header changed size")  # cannot happen: fixed-width notes
        f.seek(start)
        f.write(final)
    f.seek(offset + nbytes + (-nbytes % 2880))
    return resid, results
