"""Writing upscaled HDUs into an open FITS file, streamed through a memory map when possible.

An uncompressed output HDU is written as its header, then a data block the size of the
upscaled image that is memory-mapped and filled plane by plane by the pixel pipeline
(:func:`srgan.fits.pipeline.upscale_array`), so memory holds about one input plane, not the
output. Inputs that are plain float images are read through a paged read-only mapping too.
Gzipped and tile-compressed outputs are built one HDU at a time in memory.

A write into a memory map that the disk cannot hold arrives as SIGBUS, which kills the
process: the data block is therefore allocated on disk before it is mapped
(:func:`reserve`), so a full disk is an ordinary :class:`~srgan.errors.OutputError`.
"""

from __future__ import annotations

import contextlib
import errno
import io
import mmap
import os
import shutil
import warnings
from pathlib import Path

import numpy as np
from astropy.io import fits

from srgan.errors import InputError, OutputError
from srgan.fits.header import history_notes, output_header, saturation_level
from srgan.fits.options import FitsOptions
from srgan.fits.paged import PagedArray
from srgan.fits.parse import hdu_data
from srgan.fits.pipeline import upscale_array


def compressed_hdu(data: np.ndarray, header: fits.Header, like: fits.CompImageHDU) -> fits.CompImageHDU:
    """Tile-compressed float32 HDU, lossless (GZIP_2 with quantisation off)."""
    algo = like.compression_type if like.compression_type in ("GZIP_1", "GZIP_2") else "GZIP_2"
    return fits.CompImageHDU(data, header=header, compression_type=algo, quantize_level=0.0)


def close_mapping(mm) -> None:
    """Close a memory map; one still referenced by a view (only after an exception) is left to the GC."""
    try:
        mm.close()
    except BufferError:
        pass


def input_array(hdu, path: Path, mappings: contextlib.ExitStack, where: str):
    """An HDU's data for upscaling: for plain float images a paged read-only mapping of the file
    (see :class:`PagedArray`: reading a large input does not pile up resident memory), else
    astropy's array (scaled integers, compressed or gzipped files)."""
    h = hdu.header
    with open(path, "rb") as f:
        plain = f.read(6) == b"SIMPLE"  # not gzip/bzip2-compressed
    info = hdu.fileinfo() if plain else None
    if (type(hdu) not in (fits.PrimaryHDU, fits.ImageHDU) or h.get("BITPIX") not in (-32, -64) or info is None
            or any(k in h for k in ("BSCALE", "BZERO", "BLANK")) or h.get("NAXIS", 0) < 1):
        return hdu_data(hdu, where)
    shape = tuple(int(h[f"NAXIS{k}"]) for k in range(h["NAXIS"], 0, -1))
    with open(path, "rb") as f:
        mm = mmap.mmap(f.fileno(), 0, access=mmap.ACCESS_READ)
    mappings.callback(close_mapping, mm)
    try:
        array = np.ndarray(shape, dtype=">f4" if h["BITPIX"] == -32 else ">f8", buffer=mm, offset=info["datLoc"])
    except TypeError as e:
        raise InputError(f"{where}: the image data cannot be read ({e}); the file may be truncated") from e
    return PagedArray(array, mm)


_FULL = (errno.ENOSPC, getattr(errno, "EDQUOT", errno.ENOSPC), errno.EFBIG)


def disk_full_error(e: OSError, folder, nbytes: int) -> OutputError:
    """The one message for a disk that cannot hold an output."""
    try:
        free = f", {shutil.disk_usage(folder).free / 1e6:.1f} MB free"
    except OSError:
        free = ""
    return OutputError(f"no space for the output in {folder} ({e.strerror or e}; needs "
                       f"{nbytes / 1e6:.1f} MB more{free}); nothing was written: free some space or choose another OUTPUT")


def reserve(f, offset: int, nbytes: int) -> None:
    """Allocate ``nbytes`` of the open file ``f`` from ``offset`` on disk, before it is memory-mapped.

    ``posix_fallocate`` makes the blocks real, so filling the mapping cannot meet a full disk
    (which would be SIGBUS); where a filesystem does not support it, the free space is checked.
    Raises OutputError when the disk cannot hold them.
    """
    folder = os.path.dirname(os.path.abspath(f.name)) if isinstance(f.name, str) else "."
    try:
        os.posix_fallocate(f.fileno(), offset, nbytes)
        return
    except OSError as e:
        if e.errno in _FULL:
            raise disk_full_error(e, folder, nbytes) from e
        if e.errno not in (errno.EOPNOTSUPP, errno.EINVAL, errno.ENOSYS, getattr(errno, "ENOTSUP", 0)):
            raise
    except AttributeError:  # no posix_fallocate on this platform
        pass
    try:
        free = shutil.disk_usage(folder).free
    except OSError:
        return
    if free < nbytes:
        raise disk_full_error(OSError(errno.ENOSPC, os.strerror(errno.ENOSPC)), folder, nbytes)


def gzip_open(path, mode):
    """gzip.open for the output file (gzip streams cannot be opened for update: no '+')."""
    import gzip

    return gzip.open(path, mode.replace("+", ""))


def hdu_bytes(hdu, primary: bool) -> bytes:
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


def write_upscaled(f, upscaler, hdu, data, primary: bool, *, stream: bool, options: FitsOptions, what: str | None,
                   notes=(), flagged=None, error=None):
    """Upscale one HDU (its ``data``) and append it to the open output file ``f``; returns (residual, results).

    ``what`` describes the PSF for the HISTORY notes (None without consistency/residual);
    ``notes``: more HISTORY notes (e.g. how the flux mode was chosen); ``flagged``/``error``:
    do-not-use pixels and per-pixel sigma from the HDU's DQ/ERR planes
    (:func:`srgan.fits.pipeline.upscale_array`).
    """
    masks = {"saturation": saturation_level(hdu.header), "flagged": flagged, "error": error}
    s = upscaler.scale
    shape = (*data.shape[:-2], data.shape[-2] * s, data.shape[-1] * s)
    if isinstance(hdu, fits.CompImageHDU) or not stream:
        out, resid, results = upscale_array(upscaler, data, options, **masks)
        h = output_header(hdu.header, upscaler, options.flux, correction=options.applied_correction,
                          notes=history_notes(results, options.consistency, what) + list(notes))
        if isinstance(hdu, fits.CompImageHDU):
            f.write(hdu_bytes(compressed_hdu(out, h, hdu), primary=False))
        else:
            header = _image_header(h, shape, primary)
            f.write(header.tostring().encode("ascii"))
            raw = out.astype(">f4").tobytes()
            f.write(raw + b"\0" * (-len(raw) % 2880))
        return resid, results
    # streaming: the header first, then a memory-mapped data block. The back-projection note is
    # known only after the pixels: a placeholder of the same length is written first.
    cards = output_header(hdu.header, upscaler, options.flux, correction=options.applied_correction,
                          notes=history_notes([], options.consistency, what) + list(notes))
    header = _image_header(cards, shape, primary)
    start = f.tell()
    f.write(header.tostring().encode("ascii"))
    offset = f.tell()
    nbytes = int(np.prod(shape)) * 4
    f.flush()
    reserve(f, offset, nbytes + (-nbytes % 2880))
    f.seek(offset + nbytes + (-nbytes % 2880) - 1)
    f.write(b"\0")
    f.flush()
    mm = mmap.mmap(f.fileno(), 0)
    try:
        out = PagedArray(np.ndarray(shape, dtype=">f4", buffer=mm, offset=offset), mm)
        _, resid, results = upscale_array(upscaler, data, options, out=out, **masks)
        out.release()
        del out
    finally:
        close_mapping(mm)
    if options.consistency:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # the header's warnings were given on the first pass
            cards = output_header(hdu.header, upscaler, options.flux, correction=options.applied_correction,
                                  notes=history_notes(results, True, what) + list(notes))
        final = _image_header(cards, shape, primary).tostring().encode("ascii")
        if len(final) != offset - start:
            raise RuntimeError("streamed FITS header changed size")  # cannot happen: fixed-width notes
        f.seek(start)
        f.write(final)
    f.seek(offset + nbytes + (-nbytes % 2880))
    return resid, results
