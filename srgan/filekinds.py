"""What kind of image a file is, from its name: FITS or photo.

One set of suffixes for every command: ``srgan upscale`` picks up the same files in a folder
as ``srgan train`` and ``srgan eval`` do. Names only (no file is opened), and no heavy
imports, so planning a batch or listing a training folder stays fast.
"""

from __future__ import annotations

from pathlib import Path

FITS_SUFFIXES = (".fits", ".fit", ".fts", ".fits.gz", ".fit.gz", ".fts.gz", ".fz")
PHOTO_SUFFIXES = (".png", ".jpg", ".jpeg", ".tif", ".tiff", ".webp", ".bmp", ".gif")


def is_fits(path) -> bool:
    """True when the file name says FITS (``.fits``, ``.fit``, ``.fts``, gzipped, or ``.fz``), ignoring case.

    >>> is_fits("m51.FITS.gz"), is_fits("m51.png")
    (True, False)
    """
    return Path(path).name.lower().endswith(FITS_SUFFIXES)


def is_photo(path) -> bool:
    """True for PNG, JPEG, TIFF, WebP, BMP and GIF file names, ignoring case.

    >>> is_photo("IMG_0001.JPG"), is_photo("notes.txt")
    (True, False)
    """
    return Path(path).name.lower().endswith(PHOTO_SUFFIXES)


def is_image(path) -> bool:
    """A photo or a FITS file name: what a folder of images is searched for."""
    return is_photo(path) or is_fits(path)
