"""The Upscaler API: every input kind comes back as the same kind, dtype and layout."""

import warnings

import numpy as np
import pytest
import torch
from PIL import Image

from srgan.errors import ConfigError, InputError
from srgan.models import receptive_radius
from srgan.normalize import Normalization
from srgan.tiling import reflect_pad
from srgan.upscale import Upscaler


@pytest.fixture(scope="module")
def up(make_generator):
    torch.manual_seed(0)
    return Upscaler(make_generator(scale=2, channels=8, blocks=1), device="cpu", tile=6)


def reference(up, rgb01: np.ndarray, clamp=True) -> np.ndarray:
    """Whole-image output (in [0, 1] with clamp) for an (H, W, 3) float image (reflect-padded by overlap)."""
    r, s = up.overlap, up.scale
    x = reflect_pad(torch.from_numpy(rgb01.transpose(2, 0, 1).copy()).float()[None], r)
    with torch.no_grad():
        y = up.model(x)[0, :, r * s:-r * s, r * s:-r * s]
    y = y.clamp(0, 1) if clamp else y
    return y.numpy().transpose(1, 2, 0)


def test_defaults_come_from_the_model(up):
    assert up.overlap == receptive_radius(up.model.config) == up.radius
    assert up.scale == 2 and up.device.type == "cpu" and up.batch_size == 1
    assert "scale=2" in repr(up)


def test_numpy_uint8_rgb_matches_whole_image_inference(up):
    a = np.random.randint(0, 256, (9, 13, 3), dtype=np.uint8)
    out = up.upscale(a)
    assert out.dtype == np.uint8 and out.shape == (18, 26, 3)
    want = np.round(reference(up, a / 255.0) * 255)
    assert np.abs(out.astype(int) - want).max() <= 1


def test_numpy_float_is_clipped_to_unit_range_and_keeps_dtype(up):
    a = np.random.rand(7, 5, 3)
    out = up.upscale(a)
    assert out.dtype == np.float64 and out.shape == (14, 10, 3)
    assert out.min() >= 0 and out.max() <= 1
    assert np.abs(out - reference(up, a)).max() <= 1e-5


def test_uint16_is_not_quantised_to_8_bits(up):
    a = (np.random.rand(8, 8, 3) * 65535).astype(np.uint16)
    out = up.upscale(a)
    assert out.dtype == np.uint16 and out.shape == (16, 16, 3)
    want = np.round(reference(up, a / 65535.0) * 65535)
    assert np.abs(out.astype(np.int64) - want).max() <= 2  # within fp32 rounding of 16-bit steps
    assert np.array_equal(up.upscale(a.astype(">u2")), out)  # big-endian (FITS, PIL I;16B) too
    inside = out[(out > 0) & (out < 65535)]
    assert inside.size > 50 and (inside % 257 != 0).mean() > 0.9  # values between 8-bit levels


def test_gray_goes_through_as_replicated_rgb_and_comes_back_gray(up):
    g = np.random.randint(0, 256, (6, 9), dtype=np.uint8)
    out = up.upscale(g)
    assert out.shape == (12, 18) and out.dtype == np.uint8
    rgb = reference(up, np.repeat(g[..., None] / 255.0, 3, axis=2), clamp=False)
    want = np.round(np.clip(rgb.mean(axis=2), 0, 1) * 255)  # mean of the 3 outputs, then clipped
    assert np.abs(out.astype(int) - want).max() <= 1
    assert up.upscale(g[..., None]).shape == (12, 18, 1)


def test_alpha_is_upscaled_bicubically_and_kept(up):
    rgba = np.random.randint(0, 256, (6, 8, 4), dtype=np.uint8)
    rgba[..., 3] = 200
    out = up.upscale(rgba)
    assert out.shape == (12, 16, 4)
    assert (out[..., 3] == 200).all()  # bicubic of a constant is the constant
    assert np.abs(out[..., :3].astype(int) - up.upscale(rgba[..., :3]).astype(int)).max() == 0
    la = np.stack([rgba[..., 0], rgba[..., 3]], axis=-1)
    assert up.upscale(la).shape == (12, 16, 2)


def test_torch_inputs_keep_layout_dtype_and_device(up):
    x = torch.rand(3, 5, 6)
    y = up.upscale(x)
    assert isinstance(y, torch.Tensor) and y.shape == (3, 10, 12) and y.dtype == torch.float32
    assert np.abs(y.numpy().transpose(1, 2, 0) - reference(up, x.numpy().transpose(1, 2, 0))).max() <= 1e-5
    batch = up.upscale(torch.stack([x, x]))
    assert batch.shape == (2, 3, 10, 12) and torch.allclose(batch[1], y, atol=1e-6)
    u8 = up.upscale((x * 255).to(torch.uint8))
    assert u8.dtype == torch.uint8 and u8.shape == (3, 10, 12)


def test_pil_images_come_back_as_pil_with_their_mode(up):
    rgb = Image.fromarray(np.random.randint(0, 256, (5, 7, 3), dtype=np.uint8))
    for mode, want in [("RGB", "RGB"), ("L", "L"), ("RGBA", "RGBA"), ("LA", "LA"), ("P", "RGB"), ("1", "L")]:
        out = up.upscale(rgb.convert(mode))
        assert isinstance(out, Image.Image) and out.mode == want and out.size == (14, 10), mode
    i16 = Image.fromarray((np.random.rand(5, 7) * 65535).astype(np.uint16))
    out = up.upscale(i16)
    assert out.mode == "I;16" and out.size == (14, 10)
    p = rgb.convert("P")
    p.info["transparency"] = 0
    assert up.upscale(p).mode == "RGBA"
    i32 = Image.fromarray((np.random.rand(5, 7) * 65535).astype(np.int32))  # mode I holding 16-bit data
    out = up.upscale(i32)
    assert out.mode == "I" and np.array_equal(np.asarray(out), up.upscale(np.asarray(i32).astype(np.uint16)))
    with pytest.raises(InputError, match="PIL image: 32-bit integer"):
        up.upscale(Image.fromarray(np.full((3, 3), 70000, np.int32)))


def test_one_channel_model_runs_each_colour_channel_as_a_plane(make_generator):
    g = make_generator(scale=2, in_channels=1, out_channels=1, channels=4, blocks=1)
    up1 = Upscaler(g, device="cpu")
    rgb = np.random.randint(0, 256, (6, 5, 3), dtype=np.uint8)
    out = up1.upscale(rgb)
    assert out.shape == (12, 10, 3)
    for c in range(3):
        assert np.array_equal(out[..., c], up1.upscale(rgb[..., c]))


def test_bad_inputs_are_clear_errors(up):
    with pytest.raises(InputError, match="expected an"):
        up.upscale(np.zeros((2, 2, 2, 2), np.uint8))
    with pytest.raises(InputError, match="unsupported pixel type int32"):
        up.upscale(np.zeros((4, 4, 3), np.int32))
    with pytest.raises(InputError, match="5 channels"):
        up.upscale(np.zeros((4, 4, 5), np.uint8))
    with pytest.raises(TypeError, match="numpy array, a torch tensor or a PIL image"):
        up.upscale([[1, 2], [3, 4]])


def test_options_are_checked(make_generator):
    g = make_generator(scale=2, channels=4, blocks=1)
    with pytest.raises(ConfigError, match="--precision"):
        Upscaler(g, device="cpu", precision="fp8")
    with pytest.raises(ConfigError, match="--tile"):
        Upscaler(g, device="cpu", tile=-2)
    with pytest.raises(ConfigError, match="--batch-size"):
        Upscaler(g, device="cpu", batch_size=0)
    with pytest.raises(ConfigError, match="--overlap"):
        Upscaler(g, device="cpu", overlap=-1)
    with pytest.raises(ConfigError, match="unknown device"):
        Upscaler(g, device="tpu9")
    if not torch.cuda.is_available():
        with pytest.raises(ConfigError, match="--device cpu"):
            Upscaler(g, device="cuda")
    with pytest.raises(ConfigError, match="Generator"):
        Upscaler(torch.nn.Conv2d(3, 3, 1))


def test_from_pretrained_and_bf16_on_cpu(tmp_path, make_model_file):
    make_model_file(tmp_path / "m.safetensors", scale=2, channels=8, blocks=1)
    up32 = Upscaler.from_pretrained(tmp_path / "m.safetensors", device="cpu")
    assert up32.info.name == "m" and len(up32.info.sha256) == 64
    x = np.random.rand(12, 12, 3).astype(np.float32)
    upbf = Upscaler.from_pretrained(tmp_path / "m.safetensors", device="cpu", precision="bf16")
    a, b = up32.upscale(x), upbf.upscale(x)
    assert b.dtype == np.float32
    mse = float(np.mean((a - b) ** 2))
    assert 0 < mse and 10 * np.log10(1 / mse) > 35  # bf16 differs, but only slightly


@pytest.fixture
def asinh_up(tmp_path, make_model_file):
    """A tiny one-plane asinh model saved and loaded back, tiles of 5 px."""
    path = make_model_file(tmp_path / "astro.safetensors", normalization=Normalization("asinh", 3.0),
                           scale=2, in_channels=1, out_channels=1, channels=4, blocks=1)
    return Upscaler.from_pretrained(path, device="cpu", tile=5)


def test_upscale_planes_applies_the_normalisation_per_tile(asinh_up):
    up = asinh_up
    planes = (np.random.randn(1, 11, 9) * 2 + 100).astype(np.float32)
    out = up.upscale_planes(planes, sky=100.0, noise=2.0)
    assert out.shape == (1, 22, 18) and out.dtype == np.float32
    norm, r = up.info.normalization, up.overlap
    with torch.no_grad():
        y = up.model(reflect_pad(norm.forward(torch.from_numpy(planes)[None], 100.0, 2.0), r))
    want = norm.inverse(y[0, :, 2 * r:-2 * r, 2 * r:-2 * r], 100.0, 2.0).numpy()
    assert np.abs(out - want).max() <= 1e-3 * np.abs(want).max()


def test_upscale_planes_estimates_sky_and_noise_and_writes_into_out(tmp_path, asinh_up):
    up = asinh_up
    planes = (np.random.randn(1, 10, 10) + 5).astype(np.float32)
    mm = np.lib.format.open_memmap(tmp_path / "o.npy", mode="w+", dtype=np.float32, shape=(1, 20, 20))
    assert up.upscale_planes(planes, out=mm) is mm
    from srgan.normalize import sky_and_noise

    sky, noise = sky_and_noise(planes)
    assert np.allclose(np.asarray(mm), up.upscale_planes(planes, sky=sky, noise=noise), atol=1e-5)
    # numpy (H, W) float in, same kind out: goes through upscale_planes for data models
    assert np.allclose(up.upscale(planes[0]), np.asarray(mm)[0], atol=1e-5)
    with pytest.raises(InputError, match=r"\(1, H, W\)"):
        up.upscale_planes(np.zeros((3, 4, 4), np.float32))
    with pytest.raises(InputError, match="out must have shape"):
        up.upscale_planes(planes, out=np.zeros((1, 5, 5), np.float32))


def test_fits_methods_delegate_to_srgan_fits(monkeypatch, up):
    import srgan.fits

    calls = []
    for name in ("upscale_hdu", "upscale_fits", "upscale_nddata"):
        monkeypatch.setattr(srgan.fits, name, lambda *a, _n=name, **k: calls.append((_n, a, k)) or _n)
    assert up.upscale_hdu("H", flux="conserve") == "upscale_hdu"
    assert up.upscale_fits("a.fits", "b.fits", residual=True) == "upscale_fits"
    assert up.upscale_nddata("nd") == "upscale_nddata"
    assert calls[0] == ("upscale_hdu", (up, "H"), {"flux": "conserve"})
    assert calls[1] == ("upscale_fits", (up, "a.fits", "b.fits"), {"residual": True})


def test_no_warning_for_default_options(up):
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        up.upscale(np.zeros((3, 3, 3), np.uint8))
