"""FITS-like input -> (array, header, WCS): files, HDULists, HDUs, tuples and NDData alike.

Like reproject's ``parse_input_data``: every FITS function accepts the same forms
(:data:`ACCEPTED`), an ambiguous HDUList needs ``hdu=`` (``--hdu``), and unreadable or truncated
files fail with one InputError line before anything is written.
"""

from __future__ import annotations

import os
import warnings
from pathlib import Path

import numpy as np
from astropy.io import fits
from astropy.wcs import WCS

from srgan.errors import InputError
from srgan.fits.header import header_wcs, wcs_keys

ACCEPTED = ("a path, an HDUList (with hdu=), a PrimaryHDU/ImageHDU/CompImageHDU, "
            "(array, Header), (array, WCS) or NDData/CCDData")
DISTORTION_EXTNAMES = ("WCSDVARR", "D2IMARR")  # lookup tables of other HDUs, never upscaled


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


def hdu_data(hdu, where: str) -> np.ndarray | None:
    """An HDU's data (scaled by BSCALE/BZERO, BLANK -> NaN by astropy); InputError if unreadable."""
    try:
        return hdu.data
    except Exception as e:
        raise InputError(f"{where}: the image data cannot be read ({e}); the file may be truncated") from e


def describe_hdus(hdul) -> list[str]:
    """One short line per HDU (index, name, class, shape) for error messages."""
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

    With ``hdu=None``, a pipeline product's one ``SCI`` HDU is its science image (its ERR, DQ,
    ... planes describe it). Raises InputError when ``hdu`` is None and the file has no 2-D
    image HDU, or several and not exactly one SCI, or when ``hdu`` does not exist.
    """
    if hdu is None:
        candidates = image_hdus(hdul)
        if len(candidates) == 1:
            return candidates[0]
        sci = [i for i in candidates if (hdul[i].name or "").upper() == "SCI"]
        if len(sci) == 1:
            return sci[0]
        if not candidates:
            raise InputError(f"no image HDU with 2-D data; HDUs: {'; '.join(describe_hdus(hdul))}")
        listed = "; ".join(describe_hdus(hdul)[i] for i in candidates)
        raise InputError(f"{len(candidates)} image HDUs: {listed}; choose one with hdu=N or NAME (--hdu)")
    if isinstance(hdu, str) and hdu.strip().lstrip("-").isdigit():
        hdu = int(hdu)
    try:
        index = hdul.index_of(hdu)
        if not 0 <= index < len(hdul):  # index_of returns any int unchecked
            raise IndexError(index)
        return index
    except (KeyError, IndexError) as e:
        raise InputError(f"no HDU {hdu!r} in the file; HDUs: {'; '.join(describe_hdus(hdul))} (--hdu N or NAME)") from e


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
        array, header = hdu_data(data, f"HDU {data.name or type(data).__name__}"), data.header.copy()
    elif isinstance(data, NDData):
        array = np.asarray(data.data)
        meta = data.meta
        header = meta.copy() if isinstance(meta, fits.Header) else fits.Header(
            [(k, v) for k, v in dict(meta or {}).items() if isinstance(k, str) and len(k) <= 8
             and isinstance(v, (str, int, float, bool))])
        if data.wcs is not None:
            if isinstance(data.wcs, WCS):  # the WCS object wins over WCS cards left in meta
                for key in wcs_keys(header):
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
    return array, header, header_wcs(header)
