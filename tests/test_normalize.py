import numpy as np
import pytest
import torch

from srgan.errors import ConfigError, InputError
from srgan.normalize import Normalization, sky_and_noise, sky_and_noise_torch


def test_asinh_is_invertible_and_keeps_negative_sky():
    n = Normalization("asinh", softening=3.0)
    x = np.array([-5.0, -0.1, 0.0, 2.0, 1e6])
    y = n.forward(x, sky=1.0, noise=0.5)
    assert np.allclose(n.inverse(y, sky=1.0, noise=0.5), x, rtol=1e-12, atol=1e-12)
    assert y[0] < y[1] < y[2] < y[3] < y[4]  # monotone, negatives not clipped
    t = torch.tensor(x)
    assert torch.allclose(n.inverse(n.forward(t, 1.0, 0.5), 1.0, 0.5), t)


def test_unit_normalization_is_identity():
    x = np.random.rand(4, 4)
    assert Normalization().forward(x) is x


def test_bad_kind_is_rejected():
    with pytest.raises(ConfigError):
        Normalization("log")


def test_sky_and_noise_on_gaussian_sky_with_a_source():
    rng = np.random.default_rng(1)
    img = rng.normal(10.0, 2.0, (200, 200))
    img[90:110, 90:110] += 500  # a bright source must not bias the estimates
    img[0, 0] = np.nan
    sky, noise = sky_and_noise(img)
    assert abs(sky - 10) < 0.1 and abs(noise - 2) < 0.1


def test_sky_and_noise_torch_agrees_with_astropy():
    rng = np.random.default_rng(2)
    img = rng.normal(-1.0, 0.3, (64, 64)).astype(np.float32)
    img[20:30, 20:30] += 50
    sky, noise = sky_and_noise(img)
    tsky, tnoise = sky_and_noise_torch(torch.from_numpy(img)[None, None])
    assert abs(tsky.item() - sky) < 0.02 and abs(tnoise.item() / noise - 1) < 0.05


def test_all_nan_image_is_a_clear_error():
    with pytest.raises(InputError, match="no finite pixels"):
        sky_and_noise(np.full((4, 4), np.nan))
