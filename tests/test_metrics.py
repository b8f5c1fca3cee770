import math

import numpy as np
import pytest
from helpers import shared_dataset
from skimage.metrics import structural_similarity

from srgan.metrics import psnr_data, psnr_y, rgb_to_y, shave, ssim_y, to_uint8


def _image(h=24, w=20, seed=0):
    return np.random.default_rng(seed).integers(20, 220, size=(h, w, 3), dtype=np.uint8)


def test_y_conversion_is_studio_range_bt601():
    px = np.array([[[0, 0, 0], [255, 255, 255], [255, 0, 0], [0, 255, 0], [0, 0, 255]]], np.uint8)
    assert rgb_to_y(px)[0] == pytest.approx([16.0, 235.0, 16 + 65.481, 16 + 128.553, 16 + 24.966])
    gray = np.arange(12, dtype=np.uint8).reshape(3, 4)
    assert np.array_equal(rgb_to_y(gray), gray.astype(np.float64))  # 2-D: the data itself
    assert np.array_equal(rgb_to_y(gray[..., None]), gray.astype(np.float64))
    rgb = _image()
    assert np.allclose(rgb_to_y(rgb.astype(np.float64)), rgb_to_y(rgb), atol=1e-12)  # 0-255 scale in any dtype


def test_psnr_of_one_grey_level_offset_is_hand_computed():
    gray = np.full((16, 16), 100, np.uint8)
    assert psnr_y(gray + 1, gray) == pytest.approx(20 * math.log10(255), abs=1e-9)  # 48.13 dB
    rgb = _image()
    # +1 on R, G and B moves Y by (65.481 + 128.553 + 24.966) / 255 = 219 / 255
    assert psnr_y(rgb + 1, rgb) == pytest.approx(20 * math.log10(255 / (219 / 255)), abs=1e-9)


def test_shave_ignores_the_border():
    a = _image(30, 30)
    b = a.copy()
    b[:4] = 0
    b[:, -4:] = 255
    b[4:-4, 4:-4] += 1
    assert shave(a, 4).shape == (22, 22, 3)
    assert shave(a, 0) is a
    assert psnr_y(b, a, border=4) == pytest.approx(20 * math.log10(255 / (219 / 255)), abs=1e-9)
    assert psnr_y(b, a, border=0) < 30


def test_ssim_uses_the_matlab_settings():
    a = _image(40, 40, 1)
    b = np.clip(a.astype(int) + np.random.default_rng(2).integers(-60, 61, a.shape), 0, 255).astype(np.uint8)
    ya, yb = rgb_to_y(a)[3:-3, 3:-3], rgb_to_y(b)[3:-3, 3:-3]
    matlab = structural_similarity(ya, yb, gaussian_weights=True, sigma=1.5, use_sample_covariance=False,
                                   data_range=255)
    assert ssim_y(b, a, border=3) == pytest.approx(matlab, abs=1e-12)
    assert abs(ssim_y(b, a, border=3) - structural_similarity(ya, yb, data_range=255)) > 1e-3
    assert ssim_y(a, a) == pytest.approx(1.0)


def test_to_uint8_rounds_and_clips():
    x = np.array([-0.1, 0.0, 0.5 / 255, 1.49 / 255, 0.5, 1.2])
    assert to_uint8(x).tolist() == [0, 0, 0, 1, 128, 255]  # numpy rounds half to even
    u = np.arange(5, dtype=np.uint8)
    assert to_uint8(u) is u


def test_psnr_data_default_range_is_hr_peak_to_peak():
    hr = np.linspace(-2.0, 8.0, 100).reshape(10, 10)
    assert psnr_data(hr + 0.1, hr) == pytest.approx(20 * math.log10(10.0 / 0.1))
    assert psnr_data(hr + 0.1, hr, data_range=1.0) == pytest.approx(20.0)


@pytest.mark.parametrize("name, published", [("baby", 31.78), ("bird", 30.18)])
def test_bicubic_baseline_reproduces_the_published_set5_rows(name, published):
    """x4 bicubic on Set5 (Y, shave 4): the per-image values behind the published 28.42 dB mean."""
    from srgan.evaluate import _load_photo, bicubic_upsample, modcrop, photo_lr

    path = shared_dataset("Set5") / f"{name}.png"
    if not path.is_file():
        pytest.skip(f"{path} not found")
    hr = modcrop(_load_photo(path)[0], 4)
    lr = photo_lr(hr, 4, "bicubic")
    assert lr.dtype == np.uint8 and lr.shape == (hr.shape[0] // 4, hr.shape[1] // 4, 3)
    assert psnr_y(bicubic_upsample(lr, 4), hr, border=4) == pytest.approx(published, abs=0.015)
