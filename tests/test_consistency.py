"""srgan.consistency: forward operator, back-projection, residual maps, flux correction."""

import numpy as np
import pytest
import torch
from astropy.io import fits

from srgan import consistency as cons
from srgan.degrade import astro_forward, psf_kernel
from srgan.errors import ConfigError


def galaxy(n=64, seed=0):
    """A smooth (n, n) HR scene: two Gaussian blobs on a flat sky, float32."""
    rng = np.random.default_rng(seed)
    y, x = np.mgrid[:n, :n]
    img = 50 * np.exp(-((x - n / 2) ** 2 + (y - n / 2.3) ** 2) / (2 * (n / 10) ** 2))
    img += 20 * np.exp(-((x - n / 4) ** 2 + (y - 3 * n / 4) ** 2) / (2 * 2.0**2))
    return (img + 1.0 + 0.01 * rng.standard_normal((n, n))).astype(np.float32)


def observe(hr, kernel, scale, sigma, seed=1):
    lr = astro_forward(torch.from_numpy(hr)[None, None], kernel, scale)[0, 0].numpy()
    return lr + sigma * np.random.default_rng(seed).standard_normal(lr.shape).astype(np.float32)


class TestResolvePsf:
    def test_fwhm_in_input_pixels(self):
        k, what = cons.resolve_psf(1.5, 4)
        assert k.shape[-1] % 2 == 1 and abs(float(k.sum()) - 1) < 1e-6
        assert torch.allclose(k, psf_kernel("gaussian", 6.0))  # 1.5 input px = 6 output px
        assert "1.5 input px" in what

    def test_preset_default_and_delta(self):
        k, what = cons.resolve_psf(None, 2, "astro")
        assert torch.allclose(k, psf_kernel("gaussian", 2.75)) and "astro" in what
        k, what = cons.resolve_psf(None, 2, "bicubic")
        assert k.shape == (1, 1) and "delta" in what

    def test_image_on_input_grid_is_resampled(self, tmp_path):
        small = psf_kernel("gaussian", 2.0, size=9).numpy()  # FWHM 2 input px
        path = tmp_path / "psf.fits"
        fits.PrimaryHDU(small).writeto(path)
        k, what = cons.resolve_psf(str(path), 2)
        assert k.shape[-1] % 2 == 1 and abs(float(k.sum()) - 1) < 1e-5 and "psf.fits" in what
        c = k.shape[-1] // 2
        assert float(k[c, c]) == float(k.max())  # centred
        # second moment: sigma of FWHM 2 input px = 4 output px -> 1.70 output px
        r2 = (torch.arange(k.shape[-1]) - c).float() ** 2
        sigma = float(((k.sum(0) * r2).sum()) ** 0.5)
        assert abs(sigma - 4.0 / 2.3548) < 0.15

    @pytest.mark.parametrize("bad", [0.0, -1.0, np.zeros((5, 5)), np.full((3, 3), np.nan)])
    def test_bad_psf(self, bad):
        with pytest.raises(ConfigError):
            cons.resolve_psf(bad, 2)

    def test_unreadable_psf_file(self, tmp_path):
        path = tmp_path / "psf.fits"
        path.write_text("not fits")
        with pytest.raises(ConfigError, match="--psf"):
            cons.resolve_psf(path, 2)


class TestOperator:
    def test_strips_equal_whole_image(self, monkeypatch):
        sr = galaxy(64)
        k = psf_kernel("gaussian", 3.0)
        whole = astro_forward(torch.from_numpy(sr)[None, None], k, 2)[0, 0].numpy()
        monkeypatch.setattr(cons, "STRIP_PIXELS", 64 * 2 * 2 * 3)  # 3 LR rows per strip
        np.testing.assert_allclose(cons.forward(sr, k, 2), whole, rtol=1e-5, atol=1e-5)
        r = np.random.default_rng(0).standard_normal((32, 32)).astype(np.float32)
        a = np.zeros((64, 64), np.float32)
        cons.adjoint(r, k, 2, a)
        monkeypatch.setattr(cons, "STRIP_PIXELS", 1 << 22)
        b = np.zeros((64, 64), np.float32)
        cons.adjoint(r, k, 2, b)
        np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-5)

    def test_adjoint_step_keeps_constants(self):
        out = np.zeros((32, 32), np.float32)
        cons.adjoint(np.full((16, 16), 3.0, np.float32), psf_kernel("moffat", 3.0), 2, out)
        np.testing.assert_allclose(out, 3.0, rtol=1e-5)

    def test_adjoint_is_transpose_away_from_borders(self):
        rng = np.random.default_rng(0)
        k = psf_kernel("gaussian", 2.5)
        x = np.zeros((64, 64), np.float32)
        x[16:48, 16:48] = rng.standard_normal((32, 32))
        y = np.zeros((32, 32), np.float32)
        y[8:24, 8:24] = rng.standard_normal((16, 16))
        aty = np.zeros_like(x)
        cons.adjoint(y, k, 2, aty)  # s^2 A^T y
        lhs = float((cons.forward(x, k, 2) * y).sum())
        rhs = float((x * aty).sum()) / 4
        assert abs(lhs - rhs) < 1e-4 * max(1.0, abs(lhs))


class TestBackProjection:
    def test_reaches_noise_level_and_conserves_flux(self):
        hr = galaxy(64)
        k = psf_kernel("gaussian", 3.0)
        sigma = 0.05
        lr = observe(hr, k, 2, sigma)
        sr = np.repeat(np.repeat(lr, 2, 0), 2, 1) * 0.5 + 0.3  # a poor first guess
        before = np.sqrt(np.mean((cons.forward(sr, k, 2) - lr) ** 2)) / sigma
        bp = cons.back_project(sr, lr, k, 2, sigma)
        after = np.sqrt(np.mean((cons.forward(sr, k, 2) - lr) ** 2)) / sigma
        assert before > 20 and bp.converged and after <= 1.0
        assert bp.rms_before == pytest.approx(before, rel=1e-3) and bp.rms_after == pytest.approx(after, rel=1e-3)
        assert abs(sr.sum() / 4 - lr.sum()) / np.abs(lr).sum() < 0.005

    def test_ignores_invalid_pixels_and_warns_when_stopped(self):
        hr = galaxy(32)
        k = psf_kernel("gaussian", 2.0)
        lr = observe(hr, k, 2, 0.01)
        valid = np.ones(lr.shape, bool)
        valid[4:8, 4:8] = False
        lr[~valid] = 1e6  # must not pull the output
        sr = np.zeros((32, 32), np.float32)
        with pytest.warns(UserWarning, match="stopped after 2 iterations"):
            bp = cons.back_project(sr, lr, k, 2, 0.01, valid=valid, max_iter=2)
        assert bp.iterations == 2 and not bp.converged and np.abs(sr).max() < 1e3


def test_residual_map_has_unit_scatter_for_the_truth():
    hr = galaxy(128)
    k = psf_kernel("gaussian", 3.0)
    lr = observe(hr, k, 2, 0.1)
    valid = np.ones(lr.shape, bool)
    valid[:3] = False
    res = cons.residual_map(hr, lr, k, 2, 0.1, valid)
    assert res.shape == lr.shape and res.dtype == np.float32
    assert np.isnan(res[:3]).all() and np.isfinite(res[3:]).all()
    assert 0.9 < np.nanstd(res) < 1.1 and abs(np.nanmean(res)) < 0.1


class TestConserveFlux:
    def test_exact_total(self):
        lr = galaxy(32)
        sr = 1.07 * np.repeat(np.repeat(lr, 2, 0), 2, 1) + 0.2  # network with gain and offset errors
        cons.conserve_flux(sr, lr, 2, sky=1.0, noise=0.01)
        assert sr.sum(dtype=np.float64) / 4 == pytest.approx(lr.sum(dtype=np.float64), rel=1e-6)

    def test_near_zero_net_flux_is_stable(self):
        rng = np.random.default_rng(0)
        lr = rng.standard_normal((32, 32)).astype(np.float32)
        lr -= lr.mean()  # sky-subtracted noise: net flux ~ 0
        sr = np.repeat(np.repeat(lr, 2, 0), 2, 1) + 0.05
        before = sr.copy()
        cons.conserve_flux(sr, lr, 2, sky=0.0, noise=1.0)
        assert abs(sr.sum() / 4 - lr.sum()) < 1e-3
        assert np.abs(sr - before).max() < 0.2  # a rescale would have multiplied by ~0

    def test_invalid_pixels_excluded(self):
        lr = galaxy(16)
        valid = np.ones(lr.shape, bool)
        valid[:2] = False
        sr = np.repeat(np.repeat(lr, 2, 0), 2, 1) * 0.9
        sr[:4] = 1e4  # garbage under the missing rows
        cons.conserve_flux(sr, lr, 2, 1.0, 0.01, valid=valid)
        assert np.all(sr[:4] == 1e4)
        assert sr[4:].sum(dtype=np.float64) / 4 == pytest.approx(lr[2:].sum(dtype=np.float64), rel=1e-6)


def test_flux_error_vs_input_uses_absolute_flux():
    lr = np.array([[1.0, -1.0], [2.0, -2.0]])  # net 0, absolute 6
    assert cons.flux_error_vs_input(0.06, lr) == pytest.approx(0.01)
    assert cons.flux_error_vs_input(1.0, np.array([[1.0, np.nan]]), np.array([[True, False]])) == 0.0


def test_psf_from_the_command_line_string(tmp_path):
    k, what = cons.resolve_psf("2.5", 2)
    assert torch.allclose(k, psf_kernel("gaussian", 5.0)) and "2.5 input px" in what
    with pytest.raises(ConfigError, match="PSF file not found"):
        cons.resolve_psf(str(tmp_path / "nope.fits"), 2)
