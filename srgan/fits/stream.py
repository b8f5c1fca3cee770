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
from srgan.fits.paged import PagedArray, sub
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


STRIP_BYTES = 1 << 24  # output bytes per strip of a propagated plane (write_propagated)
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


#: numpy dtype -> (BITPIX, BZERO or None): FITS stores unsigned 16/32/64-bit and signed 8-bit
#: integers as the other signedness plus an offset
_FITS_TYPES = {"f4": (-32, None), "f8": (-64, None), "u1": (8, None), "i1": (8, -128), "i2": (16, None),
               "u2": (16, 2**15), "i4": (32, None), "u4": (32, 2**31), "i8": (64, None), "u8": (64, 2**63)}


def _disk(dtype: np.dtype) -> tuple[int, int | None, np.dtype]:
    """(BITPIX, BZERO, big-endian dtype on disk) of an array dtype."""
    dtype = np.dtype(dtype)
    key = f"{dtype.kind}{dtype.itemsize}"
    if key not in _FITS_TYPES:
        raise InputError(f"an image plane of dtype {dtype} cannot be written to FITS")
    bitpix, bzero = _FITS_TYPES[key]
    kind = "f" if bitpix < 0 else ("u" if bitpix == 8 else "i")
    return bitpix, bzero, np.dtype(f">{kind}{abs(bitpix) // 8}")


def _to_disk(a: np.ndarray) -> np.ndarray:
    """Values of ``a`` as FITS stores them (minus BZERO for the offset integer types)."""
    _, bzero, disk = _disk(a.dtype)
    if bzero is None:
        return a.astype(disk, copy=False)
    if a.dtype.kind == "u":  # x - 2^(n-1) == x with its top bit flipped, seen as signed
        top = np.array(1 << (8 * a.dtype.itemsize - 1), a.dtype)
        return (a ^ top).view(a.dtype.str.replace("u", "i")).astype(disk, copy=False)
    return (a.astype(np.int16) + 128).astype(disk)  # int8 -> uint8


def _image_header(cards: fits.Header, shape, primary: bool, dtype=np.float32) -> fits.Header:
    """A complete image header: structural cards for ``shape`` (numpy order) and ``dtype``, then ``cards``."""
    bitpix, bzero, _ = _disk(dtype)
    h = fits.Header()
    if primary:
        h["SIMPLE"] = (True, "conforms to FITS standard")
    else:
        h["XTENSION"] = ("IMAGE", "Image extension")
    h["BITPIX"] = (bitpix, "array data type")
    h["NAXIS"] = (len(shape), "number of array dimensions")
    for k, n in enumerate(reversed(shape), 1):
        h[f"NAXIS{k}"] = n
    if primary:
        h["EXTEND"] = True
    else:
        h["PCOUNT"] = 0
        h["GCOUNT"] = 1
    if bzero is not None:
        h["BSCALE"] = 1
        h["BZERO"] = bzero
    for card in cards.cards:
        h.append(card, end=True)
    return h


def _mapped_block(f, shape, disk_dtype: np.dtype):
    """Reserve and map the data block of an HDU whose header was just written; (mmap, offset, nbytes)."""
    offset = f.tell()
    nbytes = int(np.prod(shape)) * disk_dtype.itemsize
    f.flush()
    reserve(f, offset, nbytes + (-nbytes % 2880))
    f.seek(offset + nbytes + (-nbytes % 2880) - 1)
    f.write(b"\0")
    f.flush()
    return mmap.mmap(f.fileno(), 0), offset, nbytes


def write_propagated(f, hdu, data, kind: str, scale: int, flux: str, primary: bool, sci_header=None) -> None:
    """Append a non-network plane (ERR, VAR_*, WHT, DQ, ...) to ``f``, streamed row strip by row strip.

    The same values as :func:`srgan.fits.products.propagated_hdu` (nearest neighbour, scaled for
    ``flux``; flags with their dtype and bits) written into a memory-mapped data block, so a
    product's planes, like its SCI, never need their s^2-times larger output in memory.
    ``data``: the plane's input array (:func:`input_array`).
    """
    from srgan.fits import products

    s = scale
    dtype = products.propagated_dtype(data.dtype, kind)
    shape = (*data.shape[:-2], data.shape[-2] * s, data.shape[-1] * s)
    cards = products.propagated_header(hdu, kind, s, flux, sci_header)
    f.write(_image_header(cards, shape, primary, dtype).tostring().encode("ascii"))
    _, _, disk = _disk(dtype)
    mm, offset, nbytes = _mapped_block(f, shape, disk)
    try:
        out = PagedArray(np.ndarray(shape, dtype=disk, buffer=mm, offset=offset), mm)
        h, w = data.shape[-2:]
        planes = sub(data, lambda a: a.reshape(-1, h, w))
        outs = out.view(lambda a: a.reshape(-1, h * s, w * s))
        rows = max(1, STRIP_BYTES // max(1, w * s * s * disk.itemsize))
        for i in range(planes.shape[0]):
            for a in range(0, h, rows):
                part = np.asarray(planes[i, a:a + rows])
                outs[i, a * s:(a + rows) * s] = _to_disk(products.propagate(part, kind, s, flux))
        out.release()
        del out, outs
    finally:
        close_mapping(mm)
    f.seek(offset + nbytes + (-nbytes % 2880))


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
    mm, offset, nbytes = _mapped_block(f, shape, np.dtype(">f4"))
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
