"""Header and WCS maths: the output header describes the same sky on the finer grid.

FITS pixel i (1-based) spans i-0.5..i+0.5, so input pixel p and output pixel p' see the same
point when ``p' = (p - 0.5) * s + 0.5``. :func:`rescale_header` applies that to every card in
pixel units it can (CRPIX, CDELT/CD/PC, SIP, IRAF LTV/LTM, sections, pixel-scale cards) and
removes, with a warning, what it cannot (lookup-table distortion); :func:`output_header` adds
srgan's provenance cards. Pure functions of headers: no pixels here.
"""

from __future__ import annotations

import re
import warnings

import numpy as np
from astropy.io import fits
from astropy.wcs import WCS, FITSFixedWarning

from srgan import consistency as cons

FLUX_COMMENTS = {
    "conserve": "sum of pixels = input flux",
    "surface-brightness": "pixel values on the input scale",
}
RESIDUAL_EXTNAME = "SRRESID"
STRUCTURAL = {"SIMPLE", "XTENSION", "BITPIX", "NAXIS", "EXTEND", "PCOUNT", "GCOUNT", "BSCALE", "BZERO",
              "BLANK", "DATAMIN", "DATAMAX", "CHECKSUM", "DATASUM", "GROUPS", "THEAP", "TFIELDS"}
PIXEL_SCALE_CARDS = ("PIXSCALE", "PIXSCAL1", "PIXSCAL2", "PXSCAL1", "PXSCAL2", "SECPIX", "SECPIX1", "SECPIX2")
_NAXIS = re.compile(r"^NAXIS\d+$")
_WCS_KEY = re.compile(r"^(?:(CRPIX|CRVAL|CDELT|CTYPE|CUNIT|CROTA)(\d+)([A-Z]?)|(CD|PC)(\d+)_(\d+)([A-Z]?))$")
_SIP_KEY = re.compile(r"^(A|B|AP|BP)_(\d+)_(\d+)$")
_LOOKUP = ("CPDIS", "CQDIS", "D2IMDIS")  # lookup-table distortion (Paper IV draft, HST)
_SECTION = re.compile(r"^\[(\d+):(\d+),(\d+):(\d+)\]$")


def header_wcs(header: fits.Header) -> WCS | None:
    """The WCS a header describes, or None when it has no WCS cards (or they cannot be parsed: warned)."""
    if not any(_WCS_KEY.match(k) for k in header) and "A_ORDER" not in header:
        return None
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", FITSFixedWarning)
        try:
            return WCS(header)
        except Exception as e:  # astropy raises many types for malformed WCS cards
            warnings.warn(f"the header's WCS cannot be parsed ({e}); it is kept as cards but not used", stacklevel=3)
            return None


def wcs_keys(header: fits.Header) -> list[str]:
    """The cards of ``header`` that describe a WCS (linear, SIP, PV, WCSAXES, *_ORDER)."""
    return [k for k in header if _WCS_KEY.match(k) or _SIP_KEY.match(k) or k.startswith("PV")
            or k in ("WCSAXES", "A_ORDER", "B_ORDER", "AP_ORDER", "BP_ORDER")]


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
    out = header_wcs(rescale_header(wcs.to_header(relax=True), scale))
    if wcs.pixel_shape is not None:
        out.pixel_shape = tuple(n * scale if i < 2 else n for i, n in enumerate(wcs.pixel_shape))
    return out



def content_cards(header: fits.Header) -> fits.Header:
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


LEVEL_CARDS = ("SATURATE", "SATLEVEL", "SKYLEVEL", "SKY", "SKYVAL", "BACKGND", "MEDSKY", "SKY_MED")
NOISE_CARDS = ("NOISEVAR", "SKYSIG", "SKYRMS", "SKYNOISE", "SKY_SIG")


def saturation_level(header: fits.Header) -> float | None:
    """The header's SATURATE value (pixel units), or None when absent or not a finite number."""
    v = header.get("SATURATE")
    if isinstance(v, (int, float)) and not isinstance(v, bool) and np.isfinite(v):
        return float(v)
    return None


def rescale_value_cards(h: fits.Header, flux: str, scale: int) -> list[str]:
    """Rescale, in place, the cards in pixel-value units for the flux mode; returns HISTORY notes.

    Levels (SATURATE, sky levels: LEVEL_CARDS) are divided by s^2 for ``flux="conserve"`` (pixel
    values are), kept for surface brightness. Per-pixel noise cards (NOISE_CARDS) are removed in
    both modes: the output's per-pixel noise is not the input's (the network denoises, and the
    s^2 pixels of a block share one input pixel's noise).
    """
    notes = []
    if saturation_level(h) is not None:
        notes.append("pixels >= SATURATE: not super-resolved, flat in their blocks")
    for key in LEVEL_CARDS:
        v = h.get(key)
        if flux == "conserve" and isinstance(v, (int, float)) and not isinstance(v, bool):
            h[key] = v / scale**2
            notes.append(f"{key} divided by {scale * scale} (pixel values are, flux conserve)")
    for key in NOISE_CARDS:
        if key in h:
            del h[key]
            notes.append(f"{key} removed: per-pixel noise of the output is not the input's")
    return notes


CORRECTION_NOTES = {
    "block": "flux correction block: each input pixel's flux in its block",
    "global": "flux correction global: total only, not for photometry",
    "consistency": "flux correction: back-projection (below), then the total",
}


def output_header(header: fits.Header, upscaler, flux: str, notes=(), correction: str = "block") -> fits.Header:
    """Rescaled content cards plus srgan's provenance cards (SRSCALE, SRFLUX, SRMODEL, SRMODSHA, HISTORY)."""
    from srgan import __version__

    info, s = upscaler.info, upscaler.scale
    h = content_cards(rescale_header(header, s))
    notes = [*rescale_value_cards(h, flux, s), *notes]
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
    h.add_history(f"srgan: {CORRECTION_NOTES[correction]}")
    for note in notes:
        h.add_history(f"srgan: {note}")
    return h


def history_notes(results, consistency: bool, psf_what: str | None) -> list[str]:
    """HISTORY notes on the back-projection of ``results`` (:class:`~srgan.fits.pipeline.PlaneResult`);
    fixed-width numbers, so a streamed header keeps its size when rewritten."""
    notes = []
    if not consistency:
        return notes
    bps = [r.backprojection or cons.BackProjection(0, 0.0, 0.0, True) for r in results] or [
        cons.BackProjection(0, 0.0, 0.0, True)]
    return [*notes, f"back-projection, PSF {psf_what}:",
            f"{sum(b.iterations for b in bps):5d} iterations, residual RMS {max(b.rms_before for b in bps):8.3g} "
            f"->{max(b.rms_after for b in bps):8.3g} sigma",
            f">3 sigma {100 * max(b.frac_before for b in bps):7.3f}% ->{100 * max(b.frac_after for b in bps):7.3f}%"
            f" (noise: {100 * max(b.frac_expected for b in bps):6.3f}%),"
            f" max {max(b.max_after for b in bps):8.3g} sigma",
            f"noise from {bps[0].noise_from:17s}, output clipped to the input range"]


def residual_hdu(resid: np.ndarray, header: fits.Header, results, psf_what: str, ver: int) -> fits.ImageHDU:
    """SRRESID on the input grid, with the input's WCS."""
    wcs = header_wcs(header)
    h = wcs.to_header(relax=True) if wcs is not None else fits.Header()
    h["EXTNAME"] = RESIDUAL_EXTNAME
    h["EXTVER"] = ver
    h.add_comment("SRRESID = (A(SR) - input) / SRNOISE: dimensionless, about N(0, 1) where SR agrees with the data")
    if len(results) == 1:
        h["SRNOISE"] = (results[0].noise, "input noise sigma, input units")
    h["SRPSF"] = (psf_what[:40], "PSF of forward op A")
    h.add_history("srgan: A = PSF convolution then block-mean binning to the input grid")
    return fits.ImageHDU(resid, header=h)
