"""PSNR and SSIM as the super-resolution literature reports them.

Protocol (reproduces the published bicubic rows, see ../shared/datasets/README.md): images
as 8-bit RGB, converted to studio-range ITU-R BT.601 luma (Y in 16..235), ``shave`` border
pixels removed on each side, PSNR with data range 255, SSIM with MATLAB's settings
(Gaussian window, sigma 1.5, population covariance). Single-channel images are scored on
the data itself. Metrics come from scikit-image.
"""

from __future__ import annotations

import numpy as np
from skimage.color import rgb2ycbcr
from skimage.metrics import peak_signal_noise_ratio, structural_similarity


def to_uint8(image) -> np.ndarray:
    """Float in [0, 1] (any shape) -> uint8 by rounding, as an SR output is saved."""
    image = np.asarray(image)
    if image.dtype == np.uint8:
        return image
    return np.clip(np.round(image * 255.0), 0, 255).astype(np.uint8)


def rgb_to_y(image: np.ndarray) -> np.ndarray:
    """(H, W, 3) 8-bit RGB -> (H, W) float64 BT.601 studio-range luma; 2-D input is returned as float.

    ``skimage.color.rgb2ycbcr``'s Y (16 + (65.481 R + 128.553 G + 24.966 B) / 255, the MATLAB
    ``rgb2ycbcr`` of the published tables); values are taken on the 0-255 scale whatever the dtype.

    >>> float(rgb_to_y(np.full((1, 1, 3), 255, np.uint8))[0, 0])
    235.0
    """
    image = np.asarray(image)
    if image.ndim == 2 or (image.ndim == 3 and image.shape[2] == 1):
        return image.reshape(image.shape[:2]).astype(np.float64)
    return rgb2ycbcr(image if image.dtype == np.uint8 else image / 255.0)[..., 0]  # skimage scales uint8 by 1/255


def shave(image: np.ndarray, border: int) -> np.ndarray:
    """Remove ``border`` pixels from each side of the two leading axes."""
    return image[border:-border, border:-border] if border > 0 else image


def psnr_y(sr, hr, border: int = 0) -> float:
    """PSNR (dB) on Y of two 8-bit images (H, W[, 3]) of the same size, after shaving."""
    a, b = shave(rgb_to_y(to_uint8(sr)), border), shave(rgb_to_y(to_uint8(hr)), border)
    return float(peak_signal_noise_ratio(b, a, data_range=255))


def ssim_y(sr, hr, border: int = 0) -> float:
    """SSIM on Y with the MATLAB settings of the published tables, after shaving."""
    a, b = shave(rgb_to_y(to_uint8(sr)), border), shave(rgb_to_y(to_uint8(hr)), border)
    return float(structural_similarity(b, a, gaussian_weights=True, sigma=1.5,
                                       use_sample_covariance=False, data_range=255))


def psnr_data(sr: np.ndarray, hr: np.ndarray, border: int = 0, data_range: float | None = None) -> float:
    """PSNR (dB) on float data (e.g. normalised FITS); data range defaults to the HR's peak-to-peak."""
    a, b = shave(np.asarray(sr, np.float64), border), shave(np.asarray(hr, np.float64), border)
    if data_range is None:
        data_range = float(b.max() - b.min())
    return float(peak_signal_noise_ratio(b, a, data_range=data_range))
