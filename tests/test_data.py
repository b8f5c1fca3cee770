"""srgan.data: finding and decoding training images, patches, determinism, bad inputs."""

import struct
import zlib

import numpy as np
import pytest
import tifffile
import torch
from astropy.io import fits
from PIL import Image, ImageOps

from srgan.data import (PatchDataset, StepBatches, augment, find_images, is_fits, load_image, load_images,
                        step_seed)
from srgan.errors import InputError


def write_png16(path, a):
    """(H, W, 3) uint16 -> 16-bit RGB PNG (Pillow cannot write these)."""
    h, w, _ = a.shape
    raw = b"".join(b"\x00" + a[y].astype(">u2").tobytes() for y in range(h))

    def chunk(kind, data):
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data) & 0xFFFFFFFF)

    header = struct.pack(">IIBBBBB", w, h, 16, 2, 0, 0, 0)
    path.write_bytes(b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", header) + chunk(b"IDAT", zlib.compress(raw)) + chunk(b"IEND", b""))


@pytest.fixture
def rgb():
    return np.random.default_rng(1).integers(0, 256, (20, 30, 3), dtype=np.uint8)


def test_find_images_recursive_sorted_and_filtered(tmp_path, rgb):
    (tmp_path / "sub" / "deeper").mkdir(parents=True)
    (tmp_path / ".hidden").mkdir()
    for name in ("b.png", "sub/a.JPG", "sub/deeper/c.tiff", "d.webp", "e.bmp", ".hidden/x.png"):
        Image.fromarray(rgb).save(tmp_path / name, format={"png": "PNG", "jpg": "JPEG", "tiff": "TIFF",
                                                           "webp": "WEBP", "bmp": "BMP"}[name.rsplit(".", 1)[1].lower()])
    for name in ("f.fits", "g.fits.gz", "h.fz", "i.fit", "j.fts"):
        (tmp_path / name).write_bytes(b"")
    (tmp_path / "notes.txt").write_text("not an image")
    found = [p.relative_to(tmp_path).as_posix() for p in find_images(tmp_path)]
    assert found == sorted(["b.png", "d.webp", "e.bmp", "f.fits", "g.fits.gz", "h.fz", "i.fit", "j.fts",
                            "sub/a.JPG", "sub/deeper/c.tiff"])
    assert find_images(tmp_path / "b.png") == [tmp_path / "b.png"]
    with pytest.raises(InputError, match="not found"):
        find_images(tmp_path / "missing")
    assert is_fits("x.FITS.gz") and not is_fits("x.png")


def test_load_png_8bit_exact(tmp_path, rgb):
    Image.fromarray(rgb).save(tmp_path / "a.png")
    x = load_image(tmp_path / "a.png")
    assert x.dtype == torch.float32 and x.shape == (3, 20, 30)
    assert torch.equal(x, torch.from_numpy(rgb).permute(2, 0, 1).float() / 255)


def test_load_png_16bit_rgb_and_gray_scaled_by_65535(tmp_path):
    a = np.random.default_rng(2).integers(0, 65536, (6, 7, 3)).astype(np.uint16)
    write_png16(tmp_path / "c16.png", a)
    x = load_image(tmp_path / "c16.png")
    assert torch.allclose(x, torch.from_numpy(a.astype(np.float32)).permute(2, 0, 1) / 65535)
    g = a[..., 0]
    Image.fromarray(g).save(tmp_path / "g16.png")  # mode I;16
    Image.fromarray(g).save(tmp_path / "g16.tiff")
    for name in ("g16.png", "g16.tiff"):
        y = load_image(tmp_path / name)
        assert y.shape == (3, 6, 7)
        assert torch.allclose(y[1], torch.from_numpy(g.astype(np.float32)) / 65535), name


def test_gray_palette_alpha_become_rgb(tmp_path, rgb):
    gray = rgb[..., 0]
    Image.fromarray(gray).save(tmp_path / "gray.png")
    x = load_image(tmp_path / "gray.png")
    assert x.shape == (3, 20, 30) and torch.equal(x[0], x[2])
    assert torch.equal(x[0], torch.from_numpy(gray).float() / 255)
    rgba = np.dstack([rgb, np.full(rgb.shape[:2], 7, np.uint8)])
    Image.fromarray(rgba).save(tmp_path / "rgba.png")
    assert torch.equal(load_image(tmp_path / "rgba.png"), load_image_from_array(rgb))  # alpha dropped
    Image.fromarray(rgb).convert("P", palette=Image.ADAPTIVE, colors=16).save(tmp_path / "pal.png")
    pal = load_image(tmp_path / "pal.png")
    assert pal.shape == (3, 20, 30) and len(torch.unique(pal.reshape(3, -1), dim=1).T) <= 16
    Image.fromarray(rgb).save(tmp_path / "a.bmp")
    assert torch.equal(load_image(tmp_path / "a.bmp"), load_image_from_array(rgb))
    # a 1-channel run reads photos as luma
    assert load_image(tmp_path / "a.bmp", channels=1).shape == (1, 20, 30)


def test_photos_are_decoded_like_srgan_upscale_reads_them(tmp_path, rgb):
    """One reader (srgan.imageio.read_photo): EXIF orientation applied, 16-bit gray+alpha TIFF
    read (Pillow cannot open it), luma of a 1-channel run equal to Pillow's convert("L")."""
    exif = Image.Exif()
    exif[0x0112] = 6  # display rotated 90 degrees clockwise
    Image.fromarray(rgb).save(tmp_path / "turned.png", exif=exif.tobytes())
    upright = np.array(ImageOps.exif_transpose(Image.open(tmp_path / "turned.png")))
    assert torch.equal(load_image(tmp_path / "turned.png"), load_image_from_array(upright))  # (3, 30, 20)
    gray = np.array(Image.fromarray(upright).convert("L"))
    assert torch.equal(load_image(tmp_path / "turned.png", channels=1)[0], torch.from_numpy(gray).float() / 255)
    la16 = np.random.default_rng(4).integers(0, 65536, (5, 6, 2)).astype(np.uint16)
    tifffile.imwrite(tmp_path / "la16.tif", la16, photometric="minisblack", extrasamples=(2,))
    x = load_image(tmp_path / "la16.tif")
    assert x.shape == (3, 5, 6) and torch.equal(x[2], torch.from_numpy(la16[..., 0].astype(np.float32)) / 65535)


def load_image_from_array(a):
    return torch.from_numpy(a).permute(2, 0, 1).float() / 255


def test_fits_nan_filled_and_in_noise_units(tmp_path):
    rng = np.random.default_rng(3)
    data = (100.0 + 5.0 * rng.standard_normal((64, 64))).astype(np.float32)
    data[30:34, 30:34] += 500  # a source
    data[3, 4] = np.nan
    fits.HDUList([fits.PrimaryHDU(), fits.ImageHDU(data)]).writeto(tmp_path / "g.fits")  # data in extension 1
    x = load_image(tmp_path / "g.fits")
    assert x.shape == (1, 64, 64) and x.dtype == torch.float32
    assert torch.isfinite(x).all()
    assert abs(float(x[0, 3, 4])) < 1e-6  # NaN -> sky -> 0 in noise units
    assert abs(float(x.median())) < 0.1 and 0.85 < float(x[0, :20, :20].std()) < 1.15
    cube = np.stack([data, 2 * data])
    fits.PrimaryHDU(cube).writeto(tmp_path / "cube.fits.gz")
    assert load_image(tmp_path / "cube.fits.gz").shape == (2, 64, 64)


def test_unreadable_files_skipped_with_one_warning_each(tmp_path, rgb):
    Image.fromarray(rgb).save(tmp_path / "good.png")
    (tmp_path / "broken.png").write_bytes(b"\x89PNG not really")
    (tmp_path / "broken.fits").write_bytes(b"SIMPLE  = nonsense")
    fits.PrimaryHDU().writeto(tmp_path / "empty.fits")  # no image data
    with pytest.warns(UserWarning) as record:
        images = load_images(find_images(tmp_path), channels=3, min_size=8)
    assert [p.name for p, _ in images] == ["good.png"]
    messages = [str(w.message) for w in record]
    assert len(messages) == 3
    for name in ("broken.png", "broken.fits", "empty.fits"):
        assert sum(name in m for m in messages) == 1, messages
    assert any("--preset astro" in m for m in messages)  # FITS in an RGB run


def test_bad_inputs_raise_clear_errors(tmp_path, rgb):
    (tmp_path / "empty").mkdir()
    with pytest.raises(InputError, match="no image files"):
        PatchDataset(find_images(tmp_path / "empty"), patch_size=16)
    (tmp_path / "junk").mkdir()
    (tmp_path / "junk" / "a.jpg").write_text("not a jpeg")
    with pytest.warns(UserWarning, match="a.jpg"), pytest.raises(InputError, match="could be read"):
        PatchDataset(find_images(tmp_path / "junk"), patch_size=16)
    (tmp_path / "small").mkdir()
    Image.fromarray(rgb).save(tmp_path / "small" / "a.png")  # 30 x 20
    with pytest.warns(UserWarning, match="smaller than"), pytest.raises(InputError, match="--patch-size"):
        PatchDataset(find_images(tmp_path / "small"), patch_size=24)


def test_patches_deterministic_and_cache_independent(tmp_path, rgb):
    for i in range(3):
        Image.fromarray(np.roll(rgb, i, axis=1)).save(tmp_path / f"{i}.png")
    paths = find_images(tmp_path)
    ds = PatchDataset(paths, patch_size=8)
    a, b, c = ds.batch(5, seed=11), ds.batch(5, seed=11), ds.batch(5, seed=12)
    assert a.shape == (5, 3, 8, 8) and a.dtype == torch.float32
    assert torch.equal(a, b) and not torch.equal(a, c)
    assert torch.equal(PatchDataset(paths, patch_size=8, cache=False).batch(5, seed=11), a)
    # every patch is a crop of some image up to a flip/rotation
    images = [load_image(p) for p in paths]
    for patch in a:
        assert any(torch.equal(augment(patch, 0), augment(im[:, y:y + 8, x:x + 8], k))
                   for im in images for y in range(13) for x in range(23) for k in range(8))


def test_augment_gives_the_8_symmetries():
    x = torch.arange(9.0).view(1, 3, 3)
    outs = {tuple(augment(x, k).flatten().tolist()) for k in range(8)}
    assert len(outs) == 8
    assert torch.equal(augment(x, 0), x)


def test_step_batches_same_with_workers():
    ds = PatchDataset.from_tensors([torch.rand(3, 40, 50), torch.rand(3, 30, 30)], patch_size=16)
    steps = StepBatches(ds, batch_size=2, seed=5)
    direct = [steps[i] for i in range(3, 6)]
    loader = torch.utils.data.DataLoader(steps, batch_size=None, sampler=range(3, 6), num_workers=1)
    assert all(torch.equal(a, b) for a, b in zip(direct, loader))
    assert len({step_seed(5, 0, i) for i in range(100)} | {step_seed(5, 1, i) for i in range(100)}) == 200
