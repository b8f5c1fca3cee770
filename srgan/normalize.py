"""The invertible map between pixel values and the network's input space.

Photos: RGB in [0, 1] go to the network as they are (``kind="unit"``).

Astronomical images (``kind="asinh"``): units differ from file to file (e-/s, MJy/sr, DN,
none) and the sky may or may not be subtracted, so each image is first put in units of its
own noise with robust, sigma-clipped estimates of the sky level and the noise, then
compressed with an asinh stretch (Lupton et al. 1999)::

    y = asinh((x - sky) / (softening * noise))        x = sky + softening * noise * sinh(y)

It is linear within a few sigma of the sky (negative sky values pass through untouched) and
logarithmic on bright cores, so a float image is neither clipped nor quantised, and the map
is exactly invertible. Training uses the same estimator on each LR patch (in torch) that the
upscaler uses on a whole LR image (astropy), so the network sees inputs on the same scale.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass

import numpy as np
import torch

from srgan.errors import ConfigError, InputError

KINDS = ("unit", "asinh")


@dataclass(frozen=True)
class Normalization:
    kind: str = "unit"  # "unit" (photos in [0, 1]) or "asinh" (astronomy, see module doc)
    softening: float = 3.0  # asinh knee, in noise sigmas (only for kind="asinh")

    def __post_init__(self):
        if self.kind not in KINDS:
            raise ConfigError(f"normalization kind must be one of {KINDS}, got {self.kind!r}")
        if self.softening <= 0:
            raise ConfigError(f"softening must be > 0, got {self.softening}")

    def to_dict(self) -> dict:
        return asdict(self)

    @classmethod
    def from_dict(cls, d: dict) -> "Normalization":
        return cls(**d)

    def forward(self, x, sky=0.0, noise=1.0):
        """Pixel values -> network space. Works on numpy arrays and torch tensors."""
        if self.kind == "unit":
            return x
        z = (x - sky) / (self.softening * noise)
        return torch.asinh(z) if isinstance(z, torch.Tensor) else np.arcsinh(z)

    def inverse(self, y, sky=0.0, noise=1.0):
        """Network space -> pixel values; exact inverse of :meth:`forward`."""
        if self.kind == "unit":
            return y
        s = torch.sinh(y) if isinstance(y, torch.Tensor) else np.sinh(y)
        return sky + self.softening * noise * s


def sky_and_noise(image: np.ndarray, sigma: float = 3.0, maxiters: int = 5) -> tuple[float, float]:
    """Robust sky level and noise of a 2-D image: sigma-clipped median and standard deviation.

    NaNs are ignored. Raises InputError when no finite pixel is left or the image is flat.
    """
    from astropy.stats import sigma_clipped_stats

    finite = np.isfinite(image)
    if not finite.any():
        raise InputError("image has no finite pixels (all NaN or inf)")
    # float64: float32 squares overflow above ~1e19 and vanish below ~1e-19, which made data in
    # cm^-2 (1e20) all NaN and data scaled by 1e-30 "constant"; the stats are scale-equivariant
    _, median, std = sigma_clipped_stats(np.asarray(image[finite], np.float64), sigma=sigma, maxiters=maxiters)
    if not np.isfinite(std) or std <= 0:
        # Flat sky (e.g. noiseless simulations or zero-filled stamps): fall back to the
        # spread of all finite pixels so the stretch stays defined.
        std = float(np.std(image[finite]))
    if std <= 0:
        raise InputError("image is constant: no noise or signal to normalise by")
    return float(median), float(std)


def sky_and_noise_torch(x: torch.Tensor, sigma: float = 3.0, maxiters: int = 5):
    """Batched torch version of :func:`sky_and_noise` for training patches.

    Args:
        x: (B, C, H, W) float tensor without NaNs.
    Returns:
        (sky, noise), each (B, 1, 1, 1); noise is floored at a tiny positive value.
    """
    flat = x.flatten(1)  # (B, N)
    keep = torch.ones_like(flat, dtype=torch.bool)
    for _ in range(maxiters):
        masked = torch.where(keep, flat, torch.nan)
        med = masked.nanmedian(dim=1, keepdim=True).values
        n = keep.sum(dim=1, keepdim=True).clamp_min(1)
        std = (torch.where(keep, flat - masked.nanmean(dim=1, keepdim=True), 0.0).square().sum(1, keepdim=True) / n).sqrt()
        new_keep = (flat - med).abs() <= sigma * std
        if torch.equal(new_keep, keep):
            break
        keep = new_keep
    masked = torch.where(keep, flat, torch.nan)
    med = masked.nanmedian(dim=1, keepdim=True).values
    n = keep.sum(dim=1, keepdim=True).clamp_min(1)
    std = (torch.where(keep, flat - masked.nanmean(dim=1, keepdim=True), 0.0).square().sum(1, keepdim=True) / n).sqrt()
    std = torch.where(std > 0, std, flat.std(dim=1, keepdim=True)).clamp_min(1e-12)
    return med.view(-1, 1, 1, 1), std.view(-1, 1, 1, 1)
