import math

import numpy as np
import pytest
import torch
from PIL import Image

from srgan import degrade as D
from srgan.errors import ConfigError, InputError


def gen(seed):
    return torch.Generator().manual_seed(seed)


def galaxy(size=64, flux=100.0):
    """A compact source well inside a zero border: convolution keeps all of its flux."""
    y, x = torch.meshgrid(torch.arange(size, dtype=torch.float64), torch.arange(size, dtype=torch.float64),
                          indexing="ij")
    img = torch.exp(-((x - size / 2 + 0.3) ** 2 + (y - size / 2 - 0.2) ** 2) / (2 * 2.0**2))
    return (flux * img / img.sum()).float()[None, None]


# ---------------------------------------------------------------- presets

@pytest.mark.parametrize("preset", list(D.PRESETS))
@pytest.mark.parametrize("channels", [1, 3])
@pytest.mark.parametrize("scale", [2, 4])
def test_degrade_shapes_dtype(preset, channels, scale):
    hr = torch.rand(3, channels, 32, 48)
    lr = D.degrade(hr, preset, scale, generator=gen(0))
    assert lr.shape == (3, channels, 32 // scale, 48 // scale)
    assert lr.dtype == hr.dtype and lr.device == hr.device
    assert torch.isfinite(lr).all()


@pytest.mark.parametrize("preset", ["bicubic", "photo"])
def test_photo_presets_stay_in_unit_range(preset):
    hr = (torch.rand(8, 3, 32, 32) * 1.4 - 0.2).clamp(0, 1)  # many saturated pixels
    lr = D.degrade(hr, preset, 4, generator=gen(3))
    assert lr.min() >= 0 and lr.max() <= 1


def test_astro_is_not_clamped():
    hr = torch.randn(4, 1, 32, 32) * 3 - 1  # sky-subtracted data, negative values
    lr = D.degrade(hr, "astro", 4, generator=gen(0))
    assert lr.min() < 0 and lr.max() > 1


@pytest.mark.parametrize("preset", ["photo", "astro"])
def test_degrade_determinism_under_seed(preset):
    hr = torch.rand(4, 3, 32, 32)
    a = D.degrade(hr, preset, 2, generator=gen(7))
    b = D.degrade(hr, preset, 2, generator=gen(7))
    c = D.degrade(hr, preset, 2, generator=gen(8))
    assert torch.equal(a, b)
    assert not torch.equal(a, c)


def test_global_rng_when_no_generator():
    hr = torch.rand(2, 1, 32, 32)
    torch.manual_seed(5)
    a = D.degrade(hr, "astro", 2)
    torch.manual_seed(5)
    b = D.degrade(hr, "astro", 2)
    assert torch.equal(a, b)


@pytest.mark.parametrize("preset", ["photo", "astro"])
def test_per_sample_random_parameters(preset):
    hr = torch.rand(1, 3, 32, 32).expand(6, -1, -1, -1).contiguous()  # six identical images
    lr = D.degrade(hr, preset, 2, generator=gen(1))
    diffs = [(lr[i] - lr[0]).abs().max().item() for i in range(1, 6)]
    assert min(diffs) > 0


def test_bicubic_preset_is_bicubic_downsample():
    hr = torch.rand(2, 3, 32, 32)
    expected = D.bicubic_downsample(hr, 4).clamp(0, 1)
    assert torch.equal(D.degrade(hr, "bicubic", 4, generator=gen(0)), expected)


def test_bicubic_downsample_matches_pillow():
    rng = np.random.default_rng(0)
    # smooth content plus texture, like a photo
    yy, xx = np.mgrid[0:64, 0:96]
    img = 127 + 80 * np.sin(xx / 5.0)[..., None] * np.cos(yy / 7.0)[..., None] + rng.normal(0, 20, (64, 96, 3))
    img = np.clip(img, 0, 255).astype(np.uint8)
    for scale in (2, 4):
        ref = np.asarray(Image.fromarray(img).resize((96 // scale, 64 // scale), Image.BICUBIC)).astype(int)
        x = torch.from_numpy(img).permute(2, 0, 1)[None].float() / 255
        out = D.bicubic_downsample(x, scale)[0].permute(1, 2, 0).clamp(0, 1).mul(255).round().numpy().astype(int)
        assert np.abs(out - ref).max() <= 2
        assert np.abs(out - ref).mean() < 0.5


def test_degrade_with_custom_config():
    cfg = D.DegradeConfig(jpeg_prob=1.0, jpeg_quality=(10, 10))
    hr = torch.rand(2, 3, 32, 32)
    lr = D.degrade(hr, cfg, 2, generator=gen(0))
    plain = D.degrade(hr, "bicubic", 2)
    assert lr.shape == plain.shape and (lr - plain).abs().mean() > 0.01


# ---------------------------------------------------------------- errors

def test_bad_inputs_raise():
    with pytest.raises(InputError, match="multiples of the scale 4"):
        D.degrade(torch.rand(1, 3, 30, 32), "bicubic", 4)
    with pytest.raises(InputError, match=r"\(B, C, H, W\)"):
        D.degrade(torch.rand(3, 32, 32), "bicubic", 2)
    with pytest.raises(InputError, match="floating-point"):
        D.degrade(torch.zeros(1, 3, 32, 32, dtype=torch.uint8), "bicubic", 2)
    with pytest.raises(ConfigError, match="--preset"):
        D.degrade(torch.rand(1, 3, 32, 32), "nope", 2)
    with pytest.raises(InputError, match="too small"):
        D.convolve_psf(torch.rand(1, 1, 8, 8), D.psf_kernel("moffat", 4.0))
    with pytest.raises(ConfigError):
        D.DegradeConfig(blur_prob=1.5)
    with pytest.raises(ConfigError):
        D.DegradeConfig(psf_fwhm=(3.0, 2.0))
    with pytest.raises(ConfigError):
        D.DegradeConfig(psf_kinds=("airy",))
    with pytest.raises(ConfigError):
        D.psf_kernel("gaussian", -1.0)


def test_config_is_frozen():
    with pytest.raises(Exception):
        D.PRESETS["astro"].psf_fwhm = (1.0, 2.0)


# ---------------------------------------------------------------- astro steps

def test_bin_mean_conserves_flux():
    x = torch.randn(2, 1, 32, 48, dtype=torch.float64)
    for s in (2, 4, 8):
        lr = D.bin_mean(x, s)
        assert lr.shape == (2, 1, 32 // s, 48 // s)
        torch.testing.assert_close(lr.sum() * s**2, x.sum())
    assert torch.equal(D.bin_mean(x, 1), x)
    torch.testing.assert_close(D.bin_mean(x, 2)[0, 0, 0, 0], x[0, 0, :2, :2].mean())


@pytest.mark.parametrize("kind", ["gaussian", "moffat"])
def test_astro_forward_conserves_flux(kind):
    hr = galaxy(64, flux=250.0)
    lr = D.astro_forward(hr, 3.0, 4, kind=kind, beta=3.0)
    assert lr.shape == (1, 1, 16, 16)
    assert abs(lr.sum().item() * 16 - 250.0) < 1e-3
    # the PSF widens the source: the peak drops
    assert lr.max() < D.bin_mean(hr, 4).max()


def test_astro_forward_batch_and_per_sample_fwhm():
    hr = torch.cat([galaxy(32), 2 * galaxy(32)])
    shared = D.astro_forward(hr, 2.0, 2)
    torch.testing.assert_close(shared[1], 2 * shared[0])
    per_sample = D.astro_forward(hr, torch.tensor([2.0, 4.0]), 2)
    torch.testing.assert_close(per_sample[0], shared[0])
    assert per_sample[1].max() < shared[1].max()


def test_astro_forward_accepts_psf_image():
    hr = galaxy(64)
    kernel = D.psf_kernel("gaussian", 2.5) * 7.0  # not normalised: astro_forward normalises
    a = D.astro_forward(hr, kernel, 2)
    b = D.astro_forward(hr, 2.5, 2)
    torch.testing.assert_close(a, b)


def test_convolve_keeps_constant_image():
    x = torch.full((1, 1, 32, 32), 3.0)
    out = D.convolve_psf(x, D.psf_kernel("moffat", 3.0))
    torch.testing.assert_close(out, x)


def _fitted_fwhm(kernel, kind):
    from astropy.modeling import fitting, models

    k = kernel.double().numpy()
    c = (k.shape[0] - 1) / 2
    yy, xx = np.mgrid[: k.shape[0], : k.shape[1]]
    if kind == "gaussian":
        model = models.Gaussian2D(k.max(), c, c, 1.0, 1.0)
        fit = fitting.LevMarLSQFitter()(model, xx, yy, k)
        return float(np.sqrt(fit.x_fwhm * fit.y_fwhm))
    model = models.Moffat2D(k.max(), c, c, 1.0, 3.0)
    fit = fitting.LevMarLSQFitter()(model, xx, yy, k)
    return float(fit.fwhm)


@pytest.mark.parametrize("kind", ["gaussian", "moffat"])
@pytest.mark.parametrize("fwhm", [1.5, 3.0, 5.0])
def test_psf_kernel_sum_and_fwhm(kind, fwhm):
    k = D.psf_kernel(kind, fwhm, beta=3.0)
    assert k.dim() == 2 and k.shape[0] == k.shape[1] and k.shape[0] % 2 == 1
    assert abs(k.sum().item() - 1) < 1e-5
    assert k.argmax().item() == (k.numel() - 1) // 2  # centred
    assert abs(_fitted_fwhm(k, kind) - fwhm) / fwhm < 0.03


def test_psf_kernel_batched_matches_single():
    fwhm = torch.tensor([1.5, 2.5, 4.0])
    beta = torch.tensor([2.5, 3.5, 4.765])
    batch = D.psf_kernel("moffat", fwhm, size=25, beta=beta)
    assert batch.shape == (3, 25, 25)
    for i in range(3):
        torch.testing.assert_close(batch[i], D.psf_kernel("moffat", float(fwhm[i]), size=25, beta=float(beta[i])))


def test_moffat_has_heavier_wings_than_gaussian():
    g = D.psf_kernel("gaussian", 3.0, size=31)
    m = D.psf_kernel("moffat", 3.0, size=31, beta=2.5)
    assert m[15, 28] > 10 * g[15, 28]


def test_sky_read_noise_statistics():
    x = torch.zeros(1, 1, 256, 256)
    out = D.sky_read_noise(x, sky=8.0, gain=2.0, read_noise=1.0, generator=gen(0))
    expected = math.sqrt(8.0 / 2.0 + 1.0)
    assert abs(out.std().item() - expected) / expected < 0.03
    assert abs(out.mean().item()) < 0.05  # sky removed again
    bright = D.sky_read_noise(x + 100.0, sky=8.0, gain=2.0, read_noise=1.0, generator=gen(0))
    assert bright.std() > 2 * out.std()  # shot noise grows with the signal


# ---------------------------------------------------------------- photo steps

def test_gaussian_kernel_anisotropic_rotation():
    k0 = D.gaussian_kernel(torch.tensor([3.0]), torch.tensor([1.0]), torch.tensor([0.0]), size=21)[0]
    k90 = D.gaussian_kernel(torch.tensor([3.0]), torch.tensor([1.0]), torch.tensor([math.pi / 2]), size=21)[0]
    assert abs(k0.sum().item() - 1) < 1e-5
    torch.testing.assert_close(k90, k0.T, atol=1e-6, rtol=1e-4)
    assert k0[10, 16] > k0[16, 10]  # wide along x (the last axis) at angle 0


def test_gaussian_blur_per_sample():
    x = torch.zeros(2, 1, 21, 21)
    x[:, :, 10, 10] = 1.0
    out = D.gaussian_blur(x, torch.tensor([0.5, 2.0]))
    assert out[0, 0, 10, 10] > out[1, 0, 10, 10]
    torch.testing.assert_close(out.sum(dim=(1, 2, 3)), torch.ones(2))


def test_gaussian_noise_std_and_gray():
    x = torch.full((2, 3, 128, 128), 0.5)
    out = D.gaussian_noise(x, torch.tensor([0.1, 0.1]), torch.tensor([False, True]), generator=gen(0))
    assert abs((out - x).std().item() - 0.1) < 0.005
    assert (out[0, 0] - out[0, 1]).abs().max() > 0  # colour noise
    assert torch.equal(out[1, 0], out[1, 1])  # grey noise


def test_poisson_noise_mean_and_variance():
    x = torch.full((1, 1, 256, 256), 0.25)
    out = D.poisson_noise(x, 100.0, generator=gen(0))
    assert abs(out.mean().item() - 0.25) < 0.005
    assert abs(out.var().item() - 0.25 / 100) / (0.25 / 100) < 0.05


@pytest.mark.parametrize("channels", [1, 3])
def test_jpeg_quality_orders_error(channels):
    y, x = torch.meshgrid(torch.linspace(0, 1, 32), torch.linspace(0, 1, 32), indexing="ij")
    img = (0.5 + 0.4 * torch.sin(12 * x) * torch.cos(9 * y))[None, None].repeat(2, channels, 1, 1)
    out = D.jpeg(img, torch.tensor([95.0, 10.0]))
    assert out.shape == img.shape
    err = (out - img).abs().mean(dim=(1, 2, 3))
    assert err[0] < err[1]
    assert err[0] < 0.02


def test_downsample_modes():
    x = torch.rand(1, 3, 16, 16)
    assert torch.equal(D.downsample(x, 2, "area"), D.bin_mean(x, 2))
    assert D.downsample(x, 2, "bilinear").shape == (1, 3, 8, 8)
    with pytest.raises(ConfigError):
        D.downsample(x, 2, "lanczos")


@pytest.mark.gpu
def test_degrade_on_cuda_with_cuda_generator():
    hr = torch.rand(2, 3, 32, 32, device="cuda")
    g = torch.Generator(device="cuda").manual_seed(0)
    for preset in D.PRESETS:
        assert D.degrade(hr, preset, 2, generator=g).device.type == "cuda"
