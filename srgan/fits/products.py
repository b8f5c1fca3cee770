"""Pipeline products (JWST ``_i2d``/``_cal``, HST ``_drz``/``_flt``): which HDU goes through the network.

A pipeline product holds one science image (``SCI``) and planes that describe it: its
uncertainty (``ERR``, ``VAR_*``, ``WHT``), flags (``DQ``, ``CON``) and tables. Only SCI is
super-resolved; the others are put on the same finer grid analytically, by nearest neighbour
(each output pixel takes its parent input pixel's value), so flags keep their dtype and bits
and uncertainties follow the flux mode:

=============  =============================  ===========================
plane          ``flux="conserve"``            ``flux="surface-brightness"``
=============  =============================  ===========================
ERR (sigma)    ERR / s^2                      ERR
VAR, VAR_*     VAR / s^4                      VAR
WHT, IVM       WHT * s^4 (inverse variance)   WHT
=============  =============================  ===========================

That is exact for an output that is the input repeated (divided by s^2 in conserve mode): the
s x s output pixels of one input pixel are fully correlated, so their sum (conserve) or mean
(surface brightness) has the input pixel's uncertainty. What the network adds is not included.

:func:`plan_hdus` classifies the HDUs of a file, :func:`flux_mode` picks the flux mode from
BUNIT, :func:`propagated_hdu` builds one non-network plane, and :func:`sci_masks` reads what
the SCI pipeline takes from its planes: do-not-use pixels from DQ, per-pixel sigma from
ERR/VAR/WHT. Pure functions of HDUs and arrays.
"""

from __future__ import annotations

import warnings

import numpy as np
from astropy.io import fits

from srgan.fits.header import _is_surface_brightness, content_cards, header_wcs, rescale_header, wcs_keys
from srgan.fits.parse import hdu_data, image_hdus, select_hdu

NETWORK, STDDEV, VARIANCE, WEIGHT, FLAGS, NEAREST, COPY = (
    "network", "stddev", "variance", "weight", "flags", "nearest", "copy")
STDDEV_NAMES = ("ERR",)
VARIANCE_NAMES = ("VAR",)  # and every VAR_* (JWST VAR_POISSON, VAR_RNOISE, VAR_FLAT)
WEIGHT_NAMES = ("WHT", "IVM")
FLAG_NAMES = ("DQ", "CON", "CTX", "SAMP")  # bitmasks, context images, sample counts
#: what each kind of plane becomes (HISTORY text; s = scale)
DESCRIPTIONS = {
    STDDEV: {"conserve": "ERR / s^2", "surface-brightness": "values kept"},
    VARIANCE: {"conserve": "VAR / s^4", "surface-brightness": "values kept"},
    WEIGHT: {"conserve": "WHT * s^4", "surface-brightness": "values kept"},
    FLAGS: {"conserve": "dtype and bits kept", "surface-brightness": "dtype and bits kept"},
    NEAREST: {"conserve": "values kept", "surface-brightness": "values kept"},
}


JWST_DO_NOT_USE = 1  # bit 0 of a JWST DQ plane
ANY_FLAG = -1  # every bit (two's complement): any nonzero DQ value


def do_not_use_bits(primary: fits.Header, requested: int | None = None) -> int:
    """The DQ bits that mark pixels the network must not see: ``requested`` (0: DQ ignored), else by TELESCOP.

    JWST: ``DO_NOT_USE`` (1) only; its pipeline sets that bit on every pixel to exclude, beside
    the bit that says why, and leaves it off informational flags (``JUMP_DET``, ...) whose
    pixels are good. Other files (HST calacs/calwf3 ``_flt``, ...): :data:`ANY_FLAG`, since their
    DQ bits mark anomalies (bad, hot or warm pixels, cosmic rays, saturation); a user who
    trusts some of them passes the others, e.g. ``dq_bits=~64 & 0xFFFF`` to keep HST warm pixels.

    >>> do_not_use_bits(fits.Header({"TELESCOP": "JWST"}))
    1
    >>> do_not_use_bits(fits.Header({"TELESCOP": "HST"}))
    -1
    """
    if requested is not None:
        return int(requested)
    return JWST_DO_NOT_USE if str(primary.get("TELESCOP", "")).strip().upper() == "JWST" else ANY_FLAG


def describe_bits(bits: int) -> str:
    """``bits`` for a HISTORY line: 'any flag' or the hexadecimal mask."""
    return "any flag" if bits == ANY_FLAG else f"bits {bits:#x}"


def exposure_weights(primary: fits.Header) -> bool:
    """True when the header says WHT is an exposure-time map, not an inverse variance
    (HST drizzle ``FINALWHT = 'EXP'``, JWST resample ``RESWHT = 'exptime'``)."""
    hst = str(primary.get("FINALWHT", "")).strip().upper()
    jwst = str(primary.get("RESWHT", "")).strip().lower()
    return hst == "EXP" or jwst == "exptime"


def plane_kind(hdu, has_sci: bool, exposure: bool = False) -> str:
    """The kind of one image HDU by its EXTNAME (and dtype in a file with SCI).

    SCI -> network; ERR -> stddev; VAR/VAR_* -> variance; WHT/IVM -> weight (nearest with
    ``exposure``); DQ/CON/CTX/SAMP -> flags; in a file with SCI, other integer planes -> flags
    and other float planes (AREA, TIME, ...) -> nearest; otherwise network (a plain image file).
    """
    name = (hdu.name or "").strip().upper()
    if name == "SCI":
        return NETWORK
    if name in STDDEV_NAMES:
        return STDDEV
    if name in VARIANCE_NAMES or name.startswith("VAR_"):
        return VARIANCE
    if name in WEIGHT_NAMES:
        return NEAREST if exposure else WEIGHT
    if name in FLAG_NAMES:
        return FLAGS
    if not has_sci:
        return NETWORK
    integer = int(hdu.header.get("BITPIX", -32)) > 0 and float(hdu.header.get("BSCALE", 1)) == 1.0
    return FLAGS if integer else NEAREST


def plan_hdus(hdul, hdu=None) -> dict[int, str]:
    """HDU index -> kind for every image HDU with 2 or more axes that changes grid (others: copied).

    Without ``hdu``: every such HDU by :func:`plane_kind`. With ``hdu`` (index, EXTNAME or
    (EXTNAME, EXTVER)): that HDU goes through the network and the planes of its EXTVER that
    describe it (ERR, VAR_*, WHT, DQ, ...; only when it is a SCI) are propagated; the rest is copied.
    """
    images = image_hdus(hdul)
    has_sci = any((hdul[i].name or "").upper() == "SCI" for i in images)
    exposure = exposure_weights(hdul[0].header)
    kinds = {i: plane_kind(hdul[i], has_sci, exposure) for i in images}
    if hdu is None:
        return kinds
    chosen = select_hdu(hdul, hdu)
    plan = {chosen: NETWORK}
    if (hdul[chosen].name or "").upper() == "SCI":
        ver = hdul[chosen].ver
        plan.update({i: k for i, k in kinds.items() if k != NETWORK and hdul[i].ver == ver})
    return plan


def flux_mode(requested: str | None, bunit) -> tuple[str, str | None]:
    """(flux mode, HISTORY note or None): ``requested`` when given, else from BUNIT.

    BUNIT per solid angle (MJy/sr, erg/s/cm2/A/arcsec2, ...) -> ``"surface-brightness"``;
    anything else (counts, electron/s, Jy, no BUNIT) -> ``"conserve"``.

    >>> flux_mode(None, "MJy/sr")
    ('surface-brightness', "flux surface-brightness chosen from BUNIT 'MJy/sr'")
    >>> flux_mode(None, "electron/s")
    ('conserve', None)
    """
    if requested is not None:
        return requested, None
    if bunit is not None and _is_surface_brightness(bunit):
        return "surface-brightness", f"flux surface-brightness chosen from BUNIT {str(bunit)[:30]!r}"
    return "conserve", None


def companions(hdul, index: int) -> dict[str, int]:
    """EXTNAME -> HDU index of the planes that describe the SCI HDU ``index``: same EXTVER and same (H, W).

    Empty unless HDU ``index`` is a SCI (a plain image has no companions).
    """
    sci = hdul[index]
    if (sci.name or "").strip().upper() != "SCI":
        return {}
    shape = (sci.header.get("NAXIS2"), sci.header.get("NAXIS1"))
    found = {}
    for i in image_hdus(hdul):
        h = hdul[i]
        name = (h.name or "").strip().upper()
        if i != index and h.ver == sci.ver and (h.header.get("NAXIS2"), h.header.get("NAXIS1")) == shape:
            found.setdefault(name, i)
    return found


def sci_masks(hdul, index: int, bits: int, want_error: bool) -> tuple[np.ndarray | None, np.ndarray | None, list[str]]:
    """(flagged, error, HISTORY notes) that the SCI HDU ``index`` takes from its companion planes.

    flagged: pixels whose ``DQ`` has any of ``bits`` set (:func:`do_not_use_bits`), or None (no
    DQ, ``bits`` 0, nothing flagged). error (only with ``want_error``, for
    ``--consistency``): the per-pixel sigma in SCI's units, from ``ERR``, else the square root
    of the summed ``VAR_*`` (or ``VAR``) planes, else ``1/sqrt(WHT)`` for an inverse-variance
    ``WHT``/``IVM``; None without any. Values that are not finite or <= 0 (masked pixels) are
    NaN here and replaced by the pipeline's own noise estimate.
    """
    found = companions(hdul, index)
    notes = []
    flagged = None
    if bits and "DQ" in found:
        dq = np.asarray(hdu_data(hdul[found["DQ"]], "HDU DQ"))
        if dq.dtype.kind in "iu":
            flagged = (dq.astype(np.int64, copy=False) & bits) != 0
            n = int(flagged.sum())
            flagged = flagged if n else None
            notes.append(f"DQ {describe_bits(bits)}: {n} pixels not super-resolved, flat in their blocks")
    error = None
    if want_error:
        variances = [i for name, i in found.items() if name.startswith("VAR_")] or (
            [found["VAR"]] if "VAR" in found else [])
        weight = next((found[n] for n in WEIGHT_NAMES if n in found), None)
        if "ERR" in found:
            error, source = to_sigma(hdu_data(hdul[found["ERR"]], "HDU ERR"), STDDEV), "ERR"
        elif variances:
            var = sum(np.asarray(hdu_data(hdul[i], f"HDU {hdul[i].name}"), np.float64) for i in variances)
            error, source = to_sigma(var, VARIANCE), "+".join(hdul[i].name for i in variances)
        elif weight is not None and not exposure_weights(hdul[0].header):
            error, source = to_sigma(hdu_data(hdul[weight], "HDU WHT"), WEIGHT), hdul[weight].name
        if error is not None:
            notes.append(f"--consistency noise sigma per pixel from {source}")
    return flagged, error, notes


def to_sigma(a, kind: str) -> np.ndarray:
    """Per-pixel sigma (float32) from a plane of ``kind``: STDDEV as is, sqrt(VARIANCE),
    1/sqrt(WEIGHT). Masked values (<= 0, NaN) give NaN or inf, which the pipeline replaces
    by its own noise estimate (:func:`srgan.fits.pipeline.upscale_plane`)."""
    if kind == STDDEV:
        return np.asarray(a, np.float32)
    a = np.asarray(a, np.float64)  # a variance of 1e30-scale data overflows float32, of 1e-30 underflows
    with np.errstate(divide="ignore", invalid="ignore"):
        return (np.sqrt(a) if kind == VARIANCE else 1 / np.sqrt(a)).astype(np.float32)


ASDF_EXTNAME, ASDF_KEPT_AS = "ASDF", "ASDF_IN"


def is_datamodel_tree(hdu) -> bool:
    """True for a JWST datamodel's ``ASDF`` table extension (its metadata tree, gwcs included)."""
    return isinstance(hdu, fits.BinTableHDU) and (hdu.name or "").strip().upper() == ASDF_EXTNAME


def renamed_datamodel_tree(hdu) -> fits.BinTableHDU:
    """The ``ASDF`` extension, renamed ``ASDF_IN`` with a HISTORY line; bytes of the tree unchanged.

    The tree describes the input: array shapes and, for JWST, the gwcs that maps input pixels
    to the sky. Left as ``ASDF``, ``stdatamodels``/``jwst.datamodels`` would give that gwcs for
    the upscaled grid (positions off by the scale); under another name they ignore it and read
    the FITS headers, whose WCS srgan rescaled. Nothing is lost: the tree is still there.
    """
    out = hdu.copy()
    out.name = ASDF_KEPT_AS
    out.header.add_history(f"srgan: was {ASDF_EXTNAME}; its datamodel tree and gwcs describe the input grid, "
                           "the rescaled WCS is in the SCI header")
    return out


def file_bunit(hdul, plan: dict[int, str]):
    """BUNIT of the first network HDU, else of the primary header (None without one)."""
    for i, kind in plan.items():
        if kind == NETWORK and "BUNIT" in hdul[i].header:
            return hdul[i].header["BUNIT"]
    return hdul[0].header.get("BUNIT")


def upsample(a: np.ndarray, s: int) -> np.ndarray:
    """Nearest-neighbour upsampling of the last two axes by ``s`` (dtype and values kept exactly).

    >>> upsample(np.array([[1, 2]], np.uint8), 2)
    array([[1, 1, 2, 2],
           [1, 1, 2, 2]], dtype=uint8)
    """
    return np.repeat(np.repeat(np.asarray(a), s, axis=-2), s, axis=-1)


def propagate(a: np.ndarray, kind: str, s: int, flux: str) -> np.ndarray:
    """One plane on the grid ``s`` times finer: nearest neighbour, scaled per the module table.

    Float planes come out float32 (float64 stays float64); flags keep their dtype.
    """
    if kind == FLAGS:
        return upsample(a, s)
    a = np.asarray(a)
    a = a.astype(propagated_dtype(a.dtype, kind), copy=False)  # native float32, or float64 (either byte order)
    k = float(s * s) if flux == "conserve" else 1.0
    factor = {STDDEV: 1 / k, VARIANCE: 1 / k**2, WEIGHT: k**2}.get(kind, 1.0)
    out = upsample(a, s)
    if factor != 1.0:
        out *= a.dtype.type(factor)
    return out


def propagated_dtype(dtype, kind: str) -> np.dtype:
    """The output dtype of a plane of ``kind``: flags keep theirs, float64 stays, the rest float32."""
    dtype = np.dtype(dtype).newbyteorder("=")
    if kind == FLAGS:
        return dtype
    return np.dtype(np.float64) if dtype == np.float64 else np.dtype(np.float32)


def propagated_header(hdu, kind: str, s: int, flux: str, sci_header: fits.Header | None = None) -> fits.Header:
    """The content cards of a non-network plane's output: rescaled header, SRSCALE/SRFLUX, HISTORY.

    ``sci_header``: the SCI input header whose rescaled WCS is copied into a plane that has no
    WCS of its own and the same (H, W) (JWST writes the WCS only in SCI).
    """
    h = content_cards(rescale_header(hdu.header, s))
    notes = [f"srgan: x{s} nearest-neighbour, not by the network: {DESCRIPTIONS[kind][flux]}"]
    if sci_header is not None and header_wcs(hdu.header) is None and sci_header.get("NAXIS1") == hdu.header.get(
            "NAXIS1") and sci_header.get("NAXIS2") == hdu.header.get("NAXIS2"):
        sci = rescale_header(sci_header, s)
        keys = wcs_keys(sci)
        if keys:
            for key in keys:
                h[key] = (sci[key], sci.comments[key])
            notes.append("srgan: WCS copied from SCI (this plane had none)")
    h["SRSCALE"] = (s, "srgan output pixels per input pixel per axis")
    h["SRFLUX"] = (flux, "flux mode of the SCI plane")
    for note in notes:
        h.add_history(note)
    return h


def propagated_hdu(hdu, kind: str, s: int, flux: str, primary: bool, sci_header: fits.Header | None = None):
    """The output HDU of a non-network plane, built in memory: :func:`propagate` d data and
    :func:`propagated_header`. A compressed input plane stays compressed (lossless).
    (Uncompressed outputs stream instead: :func:`srgan.fits.stream.write_propagated`.)
    """
    from srgan.fits.stream import compressed_hdu

    out = propagate(hdu_data(hdu, f"HDU {hdu.name}"), kind, s, flux)
    h = propagated_header(hdu, kind, s, flux, sci_header)
    if isinstance(hdu, fits.CompImageHDU):
        if out.dtype.kind == "f":
            return compressed_hdu(out.astype(np.float32), h, hdu)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", fits.verify.VerifyWarning)
            return fits.CompImageHDU(out, header=h, compression_type=hdu.compression_type)
    if primary:
        return fits.PrimaryHDU(out, header=h)
    return fits.ImageHDU(out, header=h)
