"""Photo I/O: bit depth, channels, orientation and metadata survive a read/upscale/write."""

import os
import struct
import zlib

import numpy as np
import pytest
import tifffile
import torch
from PIL import Image, ImageCms, ImageOps

from srgan.errors import ConfigError, InputError
from srgan.imageio import Photo, apply_orientation, output_suffix, pil_pixels, read_photo, to_channels, write_photo
from srgan.upscale import Upscaler

ICC = ImageCms.ImageCmsProfile(ImageCms.createProfile("sRGB")).tobytes()


@pytest.fixture(scope="module")
def up(make_generator):
    torch.manual_seed(0)
    return Upscaler(make_generator(scale=2, channels=4, blocks=1), device="cpu")


def rand(shape, dtype=np.uint8):
    return np.random.randint(0, np.iinfo(dtype).max + 1, shape).astype(dtype)


def round_trip(up, src, dst):
    """read -> upscale -> write -> read back."""
    photo = read_photo(src)
    write_photo(dst, Photo(up.upscale(photo.pixels), photo.format, photo.exif, photo.icc_profile))
    return photo, read_photo(dst)


@pytest.mark.parametrize("mode,shape", [("RGB", (6, 7, 3)), ("L", (6, 7)), ("RGBA", (6, 7, 4)), ("LA", (6, 7, 2))])
def test_8bit_png_round_trip_keeps_mode(up, tmp_path, mode, shape):
    Image.fromarray(rand(shape)).save(tmp_path / "a.png")
    src, out = round_trip(up, tmp_path / "a.png", tmp_path / "b.png")
    assert out.pixels.dtype == np.uint8 and out.pixels.shape == (12, 14) + shape[2:]
    assert Image.open(tmp_path / "b.png").mode == mode
    if mode in ("RGBA", "LA"):
        assert np.array_equal(out.pixels[..., -1], up.upscale(src.pixels)[..., -1])  # alpha kept


def test_8bit_gray_jpeg_stays_gray(up, tmp_path):
    Image.fromarray(rand((8, 8))).save(tmp_path / "g.jpg")
    _, out = round_trip(up, tmp_path / "g.jpg", tmp_path / "o.jpg")
    assert Image.open(tmp_path / "o.jpg").mode == "L" and out.pixels.shape == (16, 16)


def test_palette_images_become_rgb_or_rgba(tmp_path):
    rgb = Image.fromarray(rand((5, 6, 3)))
    rgb.convert("P").save(tmp_path / "p.png")
    assert read_photo(tmp_path / "p.png").pixels.shape == (5, 6, 3)
    p = rgb.convert("P")
    p.save(tmp_path / "pt.png", transparency=0)
    assert read_photo(tmp_path / "pt.png").pixels.shape == (5, 6, 4)
    p.save(tmp_path / "p.gif")
    assert output_suffix(tmp_path / "p.gif") == ".png"  # palette-only formats are written as PNG


def test_16bit_gray_png_and_tiff_round_trip(up, tmp_path):
    a = rand((5, 6), np.uint16)
    Image.fromarray(a).save(tmp_path / "g.png")  # mode I;16
    tifffile.imwrite(tmp_path / "g.tif", a)
    for name in ("g.png", "g.tif"):
        src, out = round_trip(up, tmp_path / name, tmp_path / f"o_{name}")
        assert np.array_equal(src.pixels, a)
        assert out.pixels.dtype == np.uint16 and out.pixels.shape == (10, 12)
        assert np.array_equal(out.pixels, up.upscale(a))  # exactly what the model gave: no 8-bit step


@pytest.mark.parametrize("channels", [2, 3, 4])
def test_16bit_colour_png_and_tiff_round_trip(up, tmp_path, channels):
    a = rand((7, 5, channels), np.uint16)
    tifffile.imwrite(tmp_path / "c.tif", a, photometric="rgb" if channels > 2 else "minisblack",
                     extrasamples=(2,) if channels != 3 else None)
    write_photo(tmp_path / "c.png", Photo(a))
    for name in ("c.png", "c.tif"):
        src, out = round_trip(up, tmp_path / name, tmp_path / f"o_{name}")
        assert np.array_equal(src.pixels, a), name
        assert out.pixels.dtype == np.uint16 and out.pixels.shape == (14, 10, channels)
        assert np.array_equal(out.pixels, up.upscale(a))


def test_16bit_png_encoder_agrees_with_pillows_decoder(tmp_path):
    """Pillow decodes our Paeth-filtered 16-bit PNG to its high bytes: an independent check."""
    a = rand((9, 11, 3), np.uint16)
    a[:, :5] = np.linspace(0, 65535, 5).astype(np.uint16)[None, :, None]  # smooth part
    write_photo(tmp_path / "c.png", Photo(a))
    assert np.array_equal(np.asarray(Image.open(tmp_path / "c.png")), (a >> 8).astype(np.uint8))


def _png16_with_filters(a: np.ndarray) -> bytes:
    """A 16-bit RGB PNG whose rows cycle through filter types 0-4 (like libpng's adaptive filtering)."""
    h, w, c = a.shape
    raw = a.astype(">u2").view(np.uint8).reshape(h, -1).astype(np.int32)
    bpp = 2 * c
    rows = []
    for y in range(h):
        x = raw[y]
        up = raw[y - 1] if y else np.zeros_like(x)
        left = np.concatenate([np.zeros(bpp, np.int32), x[:-bpp]])
        ul = np.concatenate([np.zeros(bpp, np.int32), up[:-bpp]])
        kind = y % 5
        if kind == 0:
            pred = 0
        elif kind == 1:
            pred = left
        elif kind == 2:
            pred = up
        elif kind == 3:
            pred = (left + up) // 2
        else:
            p = left + up - ul
            pa, pb, pc = abs(p - left), abs(p - up), abs(p - ul)
            pred = np.where((pa <= pb) & (pa <= pc), left, np.where(pb <= pc, up, ul))
        rows.append(bytes([kind]) + ((x - pred) & 255).astype(np.uint8).tobytes())

    def chunk(t, d):
        return struct.pack(">I", len(d)) + t + d + struct.pack(">I", zlib.crc32(t + d) & 0xFFFFFFFF)

    return (b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", struct.pack(">IIBBBBB", w, h, 16, 2, 0, 0, 0))
            + chunk(b"IDAT", zlib.compress(b"".join(rows))) + chunk(b"IEND", b""))


def test_16bit_png_with_every_filter_type_reads_exactly(tmp_path):
    a = rand((11, 9, 3), np.uint16)
    (tmp_path / "f.png").write_bytes(_png16_with_filters(a))
    assert np.array_equal(read_photo(tmp_path / "f.png").pixels, a)


@pytest.mark.parametrize("ext,fmt", [("jpg", "JPEG"), ("png", "PNG"), ("webp", "WEBP"), ("tif", "TIFF")])
def test_exif_and_icc_are_carried_and_orientation_applied(up, tmp_path, ext, fmt):
    exif = Image.Exif()
    exif[0x0112] = 6  # rotate 90 degrees clockwise to display
    exif[0x010F] = "TestCam"
    exif.get_ifd(0x8769)[0x829A] = 0.004  # exposure time, in the Exif sub-IFD
    Image.fromarray(rand((6, 10, 3))).save(tmp_path / f"a.{ext}", fmt, exif=exif.tobytes(), icc_profile=ICC)
    upright = np.asarray(ImageOps.exif_transpose(Image.open(tmp_path / f"a.{ext}")))
    src, out = round_trip(up, tmp_path / f"a.{ext}", tmp_path / f"b.{ext}")
    assert np.array_equal(src.pixels, upright) and src.pixels.shape == (10, 6, 3)
    written = Image.open(tmp_path / f"b.{ext}")
    assert written.size == (12, 20)  # upright, x2
    e = written.getexif()
    assert e.get(0x0112, 1) == 1 and e.get(0x010F) == "TestCam"
    assert e.get_ifd(0x8769).get(0x829A) == pytest.approx(0.004)
    assert written.info.get("icc_profile") == ICC


def test_16bit_colour_tiff_keeps_icc_and_text_tags(up, tmp_path):
    a = rand((4, 5, 3), np.uint16)
    tifffile.imwrite(tmp_path / "a.tif", a, photometric="rgb", iccprofile=ICC,
                     extratags=[(271, "s", 0, "TestCam", True)])
    _, out = round_trip(up, tmp_path / "a.tif", tmp_path / "b.tif")
    assert out.icc_profile == ICC and out.pixels.shape == (8, 10, 3)
    with tifffile.TiffFile(tmp_path / "b.tif") as t:
        assert t.pages[0].tags[271].value == "TestCam"


@pytest.mark.parametrize("orientation", range(1, 9))
def test_every_exif_orientation_matches_pillow(tmp_path, orientation):
    exif = Image.Exif()
    exif[0x0112] = orientation
    Image.fromarray(rand((3, 5, 3))).save(tmp_path / "o.png", exif=exif.tobytes())
    want = np.asarray(ImageOps.exif_transpose(Image.open(tmp_path / "o.png")))
    assert np.array_equal(read_photo(tmp_path / "o.png").pixels, want)
    assert apply_orientation(want, 1) is want


def test_8bit_only_formats_warn_when_rounding_or_dropping_alpha(tmp_path):
    a16 = rand((4, 4, 3), np.uint16)
    with pytest.warns(UserWarning, match="rounded to 8 bits"):
        write_photo(tmp_path / "a.jpg", Photo(a16))
    assert np.asarray(Image.open(tmp_path / "a.jpg")).dtype == np.uint8
    with pytest.warns(UserWarning, match="alpha dropped"):
        write_photo(tmp_path / "b.jpg", Photo(rand((4, 4, 4))))
    assert Image.open(tmp_path / "b.jpg").mode == "RGB"
    write_photo(tmp_path / "c.webp", Photo(rand((4, 4, 4))))
    assert Image.open(tmp_path / "c.webp").mode == "RGBA"


def test_bad_files_are_input_errors_naming_the_file(tmp_path):
    (tmp_path / "empty.png").write_bytes(b"")
    (tmp_path / "text.png").write_text("not an image")
    Image.fromarray(rand((64, 64, 3))).save(tmp_path / "full.png")
    data = (tmp_path / "full.png").read_bytes()
    (tmp_path / "cut.png").write_bytes(data[: len(data) // 2])
    for name, match in [("empty.png", "empty file"), ("text.png", "not an image"), ("cut.png", "truncated")]:
        with pytest.raises(InputError, match=match) as err:
            read_photo(tmp_path / name)
        assert name in str(err.value)


def test_too_many_pixels_is_refused_before_decoding(tmp_path):
    Image.fromarray(rand((30, 40, 3))).save(tmp_path / "big.png")
    with pytest.raises(InputError, match="--max-pixels"):
        read_photo(tmp_path / "big.png", max_pixels=1000)
    assert read_photo(tmp_path / "big.png", max_pixels=1200).pixels.shape == (30, 40, 3)


def test_writes_are_atomic_and_formats_checked(tmp_path):
    write_photo(tmp_path / "a.png", Photo(rand((4, 4, 3))))
    assert sorted(p.name for p in tmp_path.iterdir()) == ["a.png"]  # no temporary file left
    umask = os.umask(0)
    os.umask(umask)
    assert (tmp_path / "a.png").stat().st_mode & 0o777 == 0o666 & ~umask  # not mkstemp's 0600
    with pytest.raises(ConfigError, match="output format"):
        write_photo(tmp_path / "a.xyz", Photo(rand((4, 4, 3))))
    with pytest.raises(ConfigError, match="--quality"):
        write_photo(tmp_path / "a.jpg", Photo(rand((4, 4, 3))), quality=0)
    assert output_suffix("x/a.JPG") == ".JPG" and output_suffix("a.png", "jpg") == ".jpg"


@pytest.mark.parametrize("mode,shape,dtype", [
    ("RGB", (3, 4, 3), np.uint8), ("L", (3, 4), np.uint8), ("LA", (3, 4, 2), np.uint8), ("P", (3, 4, 3), np.uint8),
    ("PA", (3, 4, 4), np.uint8), ("1", (3, 4), np.uint8), ("CMYK", (3, 4, 3), np.uint8), ("YCbCr", (3, 4, 3), np.uint8),
    ("I;16", (3, 4), np.uint16), ("I;16B", (3, 4), np.uint16), ("I", (3, 4), np.uint16), ("F", (3, 4), np.float32)])
def test_pil_mode_table(mode, shape, dtype):
    im = Image.new(mode, (4, 3))
    a = pil_pixels(im)
    assert a.shape == shape and a.dtype == dtype and a.dtype.isnative, mode


def test_pil_modes_that_cannot_be_kept_are_input_errors():
    with pytest.raises(InputError, match="x.png: unsupported image mode La"):
        pil_pixels(Image.new("La", (2, 2)), name="x.png")
    with pytest.raises(InputError, match="mode I.*outside 0..65535"):
        pil_pixels(Image.fromarray(np.array([[-1, 70000]], np.int32)))


def test_to_channels_rgb_to_luma_equals_pillow_and_keeps_16_bits():
    r, g, b = np.meshgrid(np.arange(256), np.arange(256), np.arange(0, 256, 15), indexing="ij")
    rgb = np.stack([r, g, b], axis=-1).astype(np.uint8).reshape(256, -1, 3)
    assert np.array_equal(to_channels(rgb, 1)[..., 0], np.asarray(Image.fromarray(rgb).convert("L")))
    rgba = np.dstack([rgb, np.zeros(rgb.shape[:2], np.uint8)])
    assert np.array_equal(to_channels(rgba, 3), rgb) and np.array_equal(to_channels(rgba, 1), to_channels(rgb, 1))
    white16 = np.full((1, 2, 3), 65535, np.uint16)
    assert to_channels(white16, 1).dtype == np.uint16 and (to_channels(white16, 1) == 65535).all()
    gray_alpha = np.array([[[10, 255], [20, 0]]], np.uint16)
    assert to_channels(gray_alpha, 3).tolist() == [[[10, 10, 10], [20, 20, 20]]]
    assert to_channels(gray_alpha, 1).tolist() == [[[10], [20]]]
    with pytest.raises(ConfigError, match="1 \\(gray\\) or 3 \\(RGB\\)"):
        to_channels(rgb, 4)
