"""Reading and writing photos without losing what photographers care about.

- Bit depth: 8-bit in -> 8-bit out; 16-bit PNG and TIFF (gray, gray+alpha, RGB, RGBA) ->
  16-bit out, never through 8 bits. Pillow decodes 16-bit colour PNGs to 8 bits, so those
  are decoded twice by Pillow's own PNG decoder (high bytes, then low bytes) and written by
  a small PNG encoder here; 16-bit colour TIFFs go through tifffile.
- Channels: gray stays gray (L), alpha is kept (LA, RGBA), palette images become RGB, or
  RGBA when they have transparency; CMYK/YCbCr become RGB.
- Orientation: the EXIF orientation is applied to the pixels and reset to 1 in the EXIF
  written out, so every viewer shows the output upright.
- Metadata: EXIF (with the pixel dimensions updated) and the ICC colour profile are
  carried to the output (16-bit colour TIFF: ICC and the main IFD's text tags only).
- Size guard: images above ``max_pixels`` are refused from the header, before decoding.
- Writes are atomic (temporary file in the target folder, then renamed).
"""

from __future__ import annotations

import struct
import warnings
import zlib
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from srgan.atomic import atomic_write
from srgan.errors import ConfigError, InputError
from srgan.warn import FileWarning


DEFAULT_MAX_PIXELS = 50_000_000  # input pixels; x4 output of 50 MPix RGB is 2.4 GB in memory
# --format choice -> (Pillow format name, file suffix)
FORMATS = {"png": ("PNG", ".png"), "jpg": ("JPEG", ".jpg"), "tiff": ("TIFF", ".tif"), "webp": ("WEBP", ".webp")}
SUFFIX_FORMATS = {".png": "PNG", ".jpg": "JPEG", ".jpeg": "JPEG", ".tif": "TIFF", ".tiff": "TIFF",
                  ".webp": "WEBP", ".bmp": "BMP"}

_ORIENTATION, _EXIF_IFD, _PIXEL_X, _PIXEL_Y = 0x0112, 0x8769, 0xA002, 0xA003
_SUB_IFDS, _INTEROP_IFD = (0x8769, 0x8825), 0xA005  # Exif, GPS; Interop (dropped)
# TIFF tags describing the source file's pixel layout; they must not reach the output
_LAYOUT_TAGS = frozenset({254, 255, 256, 257, 258, 259, 262, 263, 266, 273, 277, 278, 279, 280, 281, 284,
                          317, 320, 322, 323, 324, 325, 338, 339, 340, 341, 347, 513, 514, 529, 530, 531,
                          532, 700, 33723, 34377, 34675})
_TIFF_TEXT_TAGS = (270, 271, 272, 305, 306, 315, 33432)  # description, make, model, software, date, artist, copyright


@dataclass
class Photo:
    """Decoded pixels plus the metadata to carry to the output."""

    pixels: np.ndarray  # (H, W) or (H, W, C) uint8 / uint16 (or float32 gray); C: 2 gray+alpha, 3 RGB, 4 RGBA
    format: str = "PNG"  # Pillow format name of the source file
    exif: bytes | None = None  # raw EXIF, orientation already reset to 1
    icc_profile: bytes | None = None


def output_suffix(src, fmt: str = "keep") -> str:
    """The output file suffix for ``src`` under ``--format fmt``.

    ``keep`` keeps PNG, JPEG, TIFF, WebP and BMP; other inputs (GIF) become PNG.
    """
    if fmt == "keep":
        suffix = Path(src).suffix.lower()
        return Path(src).suffix if suffix in SUFFIX_FORMATS else ".png"
    if fmt not in FORMATS:
        raise ConfigError(f"--format must be keep, {', '.join(FORMATS)}; got {fmt!r}")
    return FORMATS[fmt][1]


def format_for(path) -> str:
    """Pillow format name from a file suffix (ConfigError for unknown suffixes)."""
    suffix = Path(path).suffix.lower()
    if suffix not in SUFFIX_FORMATS:
        raise ConfigError(f"cannot tell the output format from {Path(path).name!r}: "
                          f"use a suffix in {', '.join(sorted(SUFFIX_FORMATS))} or --format")
    return SUFFIX_FORMATS[suffix]


def check_size(width: int, height: int, max_pixels: int | None, name="image") -> None:
    if max_pixels and width * height > max_pixels:
        raise InputError(f"{name} is {width}x{height} = {width * height / 1e6:.1f} Mpx, above the "
                         f"{max_pixels / 1e6:g} Mpx limit: raise --max-pixels (0 = no limit) if that is intended")


# --- reading ---------------------------------------------------------------------------


def read_photo(path, max_pixels: int | None = DEFAULT_MAX_PIXELS) -> Photo:
    """Decode an image file into :class:`Photo` (upright, with its EXIF and ICC profile).

    Raises:
        InputError: empty, truncated, corrupt or non-image file, unsupported mode, or more
            than ``max_pixels`` pixels (checked from the header before decoding; 0 or None:
            no limit).
    """
    from PIL import Image

    path = Path(path)
    if path.stat().st_size == 0:
        raise InputError(f"{path}: empty file")
    _allow_pil_size(max_pixels)
    try:
        im = Image.open(path)
    except Image.DecompressionBombError as e:
        raise InputError(bomb_message(path, e, max_pixels)) from None
    except Exception as e:  # UnidentifiedImageError, OSError, SyntaxError ... from plugins
        if _is_tiff(path):  # e.g. 16-bit gray+alpha, which Pillow does not open
            return _read_tifffile(path, max_pixels)
        raise InputError(f"{path}: not an image file Pillow can read ({_why(e)})") from e
    with im:
        check_size(*im.size, max_pixels, name=str(path))
        frames = getattr(im, "n_frames", 1) if getattr(im, "is_animated", False) else 1
        if frames > 1:
            warnings.warn(f"{path}: animated image with {frames} frames: only the first frame is upscaled "
                          "(split the frames into files to upscale them all)", FileWarning, stacklevel=2)
        try:
            pixels = _decode(path, im)
            # EXIF after decoding: Pillow already turns TIFFs upright on load and drops their
            # orientation tag, so reading it now never rotates twice.
            exif = im.getexif()
        except InputError:
            raise
        except Exception as e:  # truncated data, broken streams, bad headers
            raise InputError(f"{path}: corrupt or truncated image ({_why(e)})") from e
        icc = im.info.get("icc_profile") or None
        if im.mode == "CMYK" and icc:
            warnings.warn(f"{path}: CMYK converted to RGB; its CMYK ICC profile is not carried", FileWarning,
                          stacklevel=2)
            icc = None
        fmt = im.format or "PNG"
    pixels = apply_orientation(pixels, exif.get(_ORIENTATION, 1))
    return Photo(pixels=pixels, format=fmt, exif=_portable_exif(exif), icc_profile=icc)


def bomb_message(path, e: Exception, max_pixels) -> str:
    """Pillow's decompression-bomb refusal in srgan's terms: the size and the --max-pixels limit."""
    import re

    m = re.search(r"\((\d+) pixels\)", str(e))
    size = f" of {int(m.group(1)) / 1e6:.1f} Mpx" if m else ""
    limit = f"the --max-pixels limit of {max_pixels / 1e6:g} Mpx" if max_pixels else "what Pillow will decode"
    return (f"{path}: image{size} above {limit} (refused before decoding: a possible decompression bomb); "
            "raise --max-pixels (0 = no limit) if that is intended")


def _is_tiff(path: Path) -> bool:
    with open(path, "rb") as f:
        return f.read(4) in (b"II*\x00", b"MM\x00*")


def _read_tifffile(path: Path, max_pixels) -> Photo:
    """A TIFF Pillow cannot open, via tifffile; ICC profile, orientation and text tags kept."""
    import tifffile
    from PIL import Image

    try:
        with tifffile.TiffFile(path) as tif:
            page = tif.pages[0]
            check_size(page.imagewidth, page.imagelength, max_pixels, name=str(path))
            tags = {t.code: t.value for t in page.tags}
    except InputError:
        raise
    except Exception as e:
        raise InputError(f"{path}: corrupt or unreadable TIFF ({_why(e)})") from e
    pixels = _tiff_high_depth(path)
    exif = Image.Exif()
    for code in _TIFF_TEXT_TAGS:
        if isinstance(tags.get(code), str):
            exif[code] = tags[code]
    pixels = apply_orientation(pixels, int(tags.get(274, 1)))
    icc = tags.get(34675)
    return Photo(pixels=pixels, format="TIFF", exif=exif.tobytes() if len(exif) else None,
                 icc_profile=bytes(icc) if icc is not None else None)


def _portable_exif(exif) -> bytes | None:
    """The EXIF worth carrying: IFD0 without the source file's layout tags (a TIFF's
    width, strips, compression...), plus the Exif and GPS sub-IFDs; orientation reset to 1."""
    from PIL import Image

    out = Image.Exif()
    for tag, value in exif.items():
        if tag in _LAYOUT_TAGS:
            continue
        if tag in _SUB_IFDS:
            value = {k: v for k, v in exif.get_ifd(tag).items() if k != _INTEROP_IFD}
            if not value:
                continue
        out[tag] = value
    if _ORIENTATION in out:
        out[_ORIENTATION] = 1
    return out.tobytes() if len(out) else None


def _why(e: Exception) -> str:
    return str(e) or type(e).__name__


def _allow_pil_size(max_pixels) -> None:
    """Let Pillow open what ``max_pixels`` allows: we check the size ourselves."""
    from PIL import Image

    if not max_pixels:
        Image.MAX_IMAGE_PIXELS = None
    elif Image.MAX_IMAGE_PIXELS is not None and Image.MAX_IMAGE_PIXELS < max_pixels:
        Image.MAX_IMAGE_PIXELS = max_pixels


def _rawmode(im) -> str:
    args = im.tile[0][3] if im.tile else ""
    return args if isinstance(args, str) else (args[0] if args else "")


def _decode(path: Path, im) -> np.ndarray:
    """Pixels as (H, W) or (H, W, C) uint8/uint16/float32, keeping the source bit depth."""
    mode = im.mode
    if im.format == "PNG" and _rawmode(im).endswith(";16B") and mode in ("RGB", "RGBA"):
        return _png16_colour(path, im)
    if im.format == "TIFF" and mode not in ("I;16", "I;16B", "I;16L", "I", "F"):
        bits = im.tag_v2.get(258, (8,))
        if max(bits if isinstance(bits, tuple) else (bits,)) > 8:
            return _tiff_high_depth(path)
    return pil_pixels(im, name=str(path))


def pil_pixels(im, name: str = "image") -> np.ndarray:
    """A PIL image's pixels as (H, W) or (H, W, C) uint8, uint16 or float32, at its bit depth.

    srgan's one table of PIL modes (files and PIL images given to ``Upscaler.upscale`` alike):
    L, LA, RGB, RGBA and I;16 as stored (native byte order); F as float32; P and PA become
    RGB, or RGBA when they have transparency; 1 becomes L; CMYK, YCbCr, LAB, HSV, RGBX and
    RGBa become RGB; I (32-bit integers, typically 16-bit data) becomes uint16.

    Args:
        im: a PIL image (decoded on access).
        name: what to call it in error messages (a file name).
    Raises:
        InputError: another mode, or an I image with values outside 0..65535.

    >>> from PIL import Image
    >>> pil_pixels(Image.new("P", (3, 2))).shape
    (2, 3, 3)
    """
    mode = im.mode
    if mode in ("P", "PA"):
        im = im.convert("RGBA" if mode == "PA" or "transparency" in im.info else "RGB")
    elif mode == "1":
        im = im.convert("L")
    elif mode in ("CMYK", "YCbCr", "LAB", "HSV", "RGBX", "RGBa"):
        im = im.convert("RGB")
    elif mode == "I":
        a = np.asarray(im)
        if a.size and (a.min() < 0 or a.max() > 65535):
            raise InputError(f"{name}: 32-bit integer (mode I) values outside 0..65535 are not supported: "
                             "convert the image to 16 bits or to mode F (float)")
        return a.astype(np.uint16)
    elif mode not in ("L", "LA", "RGB", "RGBA", "I;16", "I;16B", "I;16L", "F"):
        raise InputError(f"{name}: unsupported image mode {mode}")
    a = np.asarray(im)
    return a.astype(a.dtype.newbyteorder("="), copy=False)


def to_channels(pixels: np.ndarray, channels: int) -> np.ndarray:
    """Photo pixels (H, W) or (H, W, C) -> (H, W, channels) of the same dtype, alpha dropped.

    ``channels`` 3: RGB, gray replicated. ``channels`` 1: gray, RGB reduced to luma with
    Pillow's ITU-R 601-2 weights in the same integer arithmetic, so 8-bit results equal
    ``Image.convert("L")`` (16-bit data keeps 16 bits).

    >>> to_channels(np.array([[[255, 0, 0, 9]]], np.uint8), 1).tolist()
    [[[76]]]
    >>> to_channels(np.array([[7]], np.uint8), 3).tolist()
    [[[7, 7, 7]]]
    """
    if channels not in (1, 3):
        raise ConfigError(f"photos are read as 1 (gray) or 3 (RGB) channels, not {channels}")
    a = pixels[..., None] if pixels.ndim == 2 else pixels
    colour = a[..., :1] if a.shape[-1] in (1, 2) else a[..., :3]  # gray(+alpha) or RGB(A)
    if colour.shape[-1] == channels:
        return colour
    if channels == 3:
        return np.repeat(colour, 3, axis=-1)
    if colour.dtype.kind == "f":
        return (colour @ np.array([0.299, 0.587, 0.114], colour.dtype))[..., None]
    weighted = colour.astype(np.uint32) @ np.array([19595, 38470, 7471], np.uint32)  # 601-2 weights * 2^16
    return ((weighted + 0x8000) >> 16).astype(colour.dtype)[..., None]


def _png16_colour(path: Path, im) -> np.ndarray:
    """16-bit RGB(A) or gray+alpha PNG, exactly.

    Pillow unfilters these PNGs itself but keeps only the high byte of each sample; its
    ``;16L`` unpackers take the second byte instead, which for PNG's big-endian samples is
    the low byte. Gray+alpha (opened as RGBA with rawmode LA;16B) is read byte for byte.
    """
    from PIL import Image, ImageFile

    def decode_as(rawmode):
        with Image.open(path) as again:
            tile = again.tile[0]
            args = rawmode if isinstance(tile[3], str) else (rawmode,) + tuple(tile[3][1:])
            again.tile = [ImageFile._Tile(tile[0], tile[1], tile[2], args)] if hasattr(ImageFile, "_Tile") \
                else [(tile[0], tile[1], tile[2], args)]
            return np.asarray(again)

    raw = _rawmode(im)
    if raw == "LA;16B":  # bytes L_hi L_lo A_hi A_lo
        b = decode_as("RGBA").astype(np.uint16)
        return np.stack([b[..., 0] << 8 | b[..., 1], b[..., 2] << 8 | b[..., 3]], axis=-1)
    hi = np.asarray(im).astype(np.uint16)
    lo = decode_as(raw.replace(";16B", ";16L"))
    return hi << 8 | lo


def _tiff_high_depth(path: Path) -> np.ndarray:
    """16-bit colour TIFF (Pillow would reduce it to 8 bits): first page via tifffile."""
    import tifffile

    try:
        with tifffile.TiffFile(path) as tif:
            page = tif.pages[0]
            a = page.asarray()
            axes = page.axes
    except Exception as e:
        raise InputError(f"{path}: corrupt or truncated TIFF ({_why(e)})") from e
    if axes.startswith("S") and a.ndim == 3:  # planar configuration: (S, Y, X)
        a = np.moveaxis(a, 0, -1)
    if a.dtype not in (np.uint8, np.uint16) or a.ndim not in (2, 3) or (a.ndim == 3 and a.shape[-1] not in (2, 3, 4)):
        raise InputError(f"{path}: unsupported TIFF layout (axes {axes}, {a.dtype}); expected 8/16-bit gray or RGB(A)")
    return np.ascontiguousarray(a)


def apply_orientation(a: np.ndarray, orientation: int) -> np.ndarray:
    """Apply an EXIF orientation (1-8) to (H, W[, C]) pixels, like ImageOps.exif_transpose."""
    ops = {
        2: lambda x: x[:, ::-1],
        3: lambda x: x[::-1, ::-1],
        4: lambda x: x[::-1],
        5: lambda x: x.swapaxes(0, 1),
        6: lambda x: np.rot90(x, -1),
        7: lambda x: x.swapaxes(0, 1)[::-1, ::-1],
        8: lambda x: np.rot90(x, 1),
    }
    if orientation not in ops:
        return a
    return np.ascontiguousarray(ops[orientation](a))


# --- writing ---------------------------------------------------------------------------


def write_photo(path, photo: Photo, format: str | None = None, quality: int = 95) -> None:
    """Encode ``photo`` to ``path`` atomically, in ``format`` (Pillow name) or the suffix's.

    8/16-bit depth, gray/alpha, EXIF and ICC profile are kept where the format can hold
    them; JPEG and WebP are 8-bit (16-bit data is rounded to 8 bits with a warning) and
    JPEG drops alpha (with a warning). ``quality`` (1-100) applies to JPEG and WebP.
    """
    path = Path(path)
    fmt = (format or format_for(path)).upper()
    fmt = "JPEG" if fmt == "JPG" else fmt
    if not 1 <= quality <= 100:
        raise ConfigError(f"--quality must be in 1..100, got {quality}")
    a = photo.pixels
    exif = _updated_exif(photo.exif, a.shape[1], a.shape[0])
    icc = photo.icc_profile
    channels = 1 if a.ndim == 2 else a.shape[2]
    if fmt in ("JPEG", "WEBP", "BMP"):
        if a.dtype != np.uint8:
            warnings.warn(f"{path.name}: {fmt} holds 8 bits per channel; {a.dtype} data rounded to 8 bits "
                          "(use --format png or tiff to keep 16 bits)", FileWarning, stacklevel=2)
            a = _to_uint8(a)
        if channels == 2 or (fmt == "JPEG" and channels == 4):
            warnings.warn(f"{path.name}: {fmt} has no alpha channel; alpha dropped "
                          "(use --format png, tiff or webp to keep it)", FileWarning, stacklevel=2)
            a = a[..., 0] if channels == 2 else a[..., :3]
        return _write_pil(path, a, fmt, exif, icc, quality=quality)
    if fmt == "PNG":
        if a.dtype == np.uint16 and channels > 1:
            return atomic_write(path, lambda tmp: Path(tmp).write_bytes(_encode_png16(a, icc, exif)))
        if a.dtype not in (np.uint8, np.uint16):
            raise ConfigError(f"{path.name}: PNG holds 8 or 16-bit integers, not {a.dtype}: use --format tiff")
        return _write_pil(path, a, fmt, exif, icc)
    if fmt == "TIFF":
        if a.dtype == np.uint8 or channels == 1:
            return _write_pil(path, a, fmt, exif, icc)
        return _write_tifffile(path, a, exif, icc)
    raise ConfigError(f"cannot write {fmt}: use --format png, jpg, tiff or webp")


def _to_uint8(a: np.ndarray) -> np.ndarray:
    if a.dtype == np.uint16:
        return np.round(a / 257.0).astype(np.uint8)
    return np.round(np.clip(a, 0, 1) * 255).astype(np.uint8)


def _updated_exif(exif: bytes | None, width: int, height: int) -> bytes | None:
    """EXIF with PixelXDimension/PixelYDimension set to the new size, when present."""
    if not exif:
        return None
    from PIL import Image

    e = Image.Exif()
    e.load(exif)
    ifd = e.get_ifd(_EXIF_IFD)
    if _PIXEL_X in ifd:
        ifd[_PIXEL_X] = width
    if _PIXEL_Y in ifd:
        ifd[_PIXEL_Y] = height
    return e.tobytes()


def _write_pil(path: Path, a: np.ndarray, fmt: str, exif, icc, quality: int = 95) -> None:
    from PIL import Image

    im = Image.fromarray(a)  # L, LA, RGB, RGBA; uint16 (H, W): I;16; float32: F
    params = {}
    if exif:
        params["exif"] = exif
    if icc:
        params["icc_profile"] = icc
    if fmt in ("JPEG", "WEBP"):
        params["quality"] = quality
    if fmt == "JPEG" and quality >= 90:
        params["subsampling"] = 0  # 4:4:4: keeps colour detail the upscaling created
    if fmt == "PNG":
        params["compress_level"] = 6
    if fmt == "TIFF" and not (exif and _has_exif_ifd(exif)):
        # Pillow's libtiff encoder (needed for compression) cannot write an EXIF sub-IFD,
        # so TIFFs carrying camera EXIF are written uncompressed to keep it whole.
        params["compression"] = "tiff_adobe_deflate"
    atomic_write(path, lambda tmp: im.save(tmp, format=fmt, **params))


def _has_exif_ifd(exif: bytes) -> bool:
    from PIL import Image

    e = Image.Exif()
    e.load(exif)
    return _EXIF_IFD in e


def _write_tifffile(path: Path, a: np.ndarray, exif, icc) -> None:
    """16-bit colour TIFF via tifffile: ICC profile and the main IFD text tags carried."""
    import tifffile

    extratags = []
    if exif:
        from PIL import Image

        e = Image.Exif()
        e.load(exif)
        for tag in _TIFF_TEXT_TAGS:
            if isinstance(e.get(tag), str):
                extratags.append((tag, "s", 0, e[tag], True))
    photometric = "minisblack" if a.shape[-1] == 2 else "rgb"
    extrasamples = {"extrasamples": (2,)} if a.shape[-1] in (2, 4) else {}  # unassociated alpha

    def write(tmp):
        tifffile.imwrite(tmp, a, photometric=photometric, compression="zlib", iccprofile=icc,
                         extratags=extratags, **extrasamples)

    atomic_write(path, write)


def _png_chunk(kind: bytes, data: bytes) -> bytes:
    return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data) & 0xFFFFFFFF)


def _encode_png16(a: np.ndarray, icc: bytes | None, exif: bytes | None, rows_per_chunk: int = 256) -> bytes:
    """A 16-bit gray+alpha / RGB / RGBA PNG (Pillow cannot write these), Paeth-filtered.

    Rows are filtered and compressed in blocks, so memory stays a few times one block.
    """
    h, w, c = a.shape
    color_type = {2: 4, 3: 2, 4: 6}[c]
    bpp = 2 * c  # bytes per pixel
    out = [b"\x89PNG\r\n\x1a\n", _png_chunk(b"IHDR", struct.pack(">IIBBBBB", w, h, 16, color_type, 0, 0, 0))]
    if icc:
        out.append(_png_chunk(b"iCCP", b"ICC Profile\x00\x00" + zlib.compress(icc)))
    if exif:
        out.append(_png_chunk(b"eXIf", exif[6:] if exif.startswith(b"Exif\x00\x00") else exif))
    z = zlib.compressobj(6)
    data = []
    prev = np.zeros((1, w * bpp), np.int16)  # the row above the first row is zeros
    for r in range(0, h, rows_per_chunk):
        raw = a[r:r + rows_per_chunk].astype(">u2").view(np.uint8).reshape(-1, w * bpp).astype(np.int16)
        up = np.concatenate([prev, raw[:-1]])
        left = np.zeros_like(raw)
        left[:, bpp:] = raw[:, :-bpp]
        upleft = np.zeros_like(raw)
        upleft[:, bpp:] = up[:, :-bpp]
        p = left + up - upleft
        pa, pb, pc = np.abs(p - left), np.abs(p - up), np.abs(p - upleft)
        pred = np.where((pa <= pb) & (pa <= pc), left, np.where(pb <= pc, up, upleft))
        filtered = ((raw - pred) & 0xFF).astype(np.uint8)
        block = np.concatenate([np.full((len(raw), 1), 4, np.uint8), filtered], axis=1)  # filter type 4
        data.append(z.compress(block.tobytes()))
        prev = raw[-1:]
    data.append(z.flush())
    out += [_png_chunk(b"IDAT", b"".join(data)), _png_chunk(b"IEND", b"")]
    return b"".join(out)
