"""HR -> LR degradations: how training pairs and benchmark inputs are made.

Three presets (``PRESETS``), each a frozen :class:`DegradeConfig`:

- ``bicubic``: antialiased bicubic downsampling only, the classic benchmark protocol
  (matches Pillow's ``Image.resize(..., Image.BICUBIC)``). Input and output in [0, 1].
- ``photo``: a real-world first-order pipeline after Real-ESRGAN (Wang et al. 2021):
  random Gaussian blur (isotropic or anisotropic and rotated) -> downsampling (bicubic,
  bilinear or area, drawn per sample) -> Gaussian or Poisson noise (colour or grey) ->
  clamp -> JPEG at a random quality -> clamp. Input and output in [0, 1].
- ``astro``: LINEAR data, any sign, never clamped. PSF convolution (Gaussian or Moffat,
  random FWHM per sample) -> flux-conserving block-mean binning -> sky shot noise + read
  noise. See :func:`sky_read_noise` for the units. :func:`astro_forward` is the same
  operator without noise, for back-projection (``--consistency``) and residual maps.

Every step is a pure function on (B, C, H, W) tensors that runs on the tensor's device and
can be used alone. Random parameters are drawn per sample from the explicit
``torch.Generator`` passed in (or torch's global RNG when it is None), so a seeded generator
reproduces a batch exactly. Draws are made on the generator's device and moved to the
data's device: for speed on a GPU pass ``torch.Generator(device=hr.device)``.

Example:
    >>> hr = torch.rand(2, 3, 32, 32)
    >>> degrade(hr, "bicubic", 4).shape
    torch.Size([2, 3, 8, 8])
"""

from __future__ import annotations

import math
from dataclasses import dataclass, fields

import kornia
import torch
import torch.nn.functional as F

from srgan.errors import ConfigError, InputError

PIPELINES = ("photo", "astro")
PSF_KINDS = ("gaussian", "moffat")
RESIZE_MODES = ("bicubic", "bilinear", "area")
FWHM_PER_SIGMA = 2.0 * math.sqrt(2.0 * math.log(2.0))  # Gaussian FWHM = 2.3548 sigma
MOFFAT_BETA = 4.765  # Trujillo et al. 2001: the Moffat beta of a pure Kolmogorov seeing PSF


@dataclass(frozen=True)
class DegradeConfig:
    """Parameters of one degradation pipeline; every (lo, hi) range is drawn per sample."""

    pipeline: str = "photo"  # "photo": [0, 1] images, clamped; "astro": linear data, not clamped
    # photo: Gaussian blur before downsampling; sigma in HR pixels
    blur_prob: float = 0.0  # chance that a sample is blurred
    blur_sigma: tuple[float, float] = (0.2, 3.0)  # uniform; per axis for anisotropic kernels
    blur_anisotropic_prob: float = 0.0  # chance that a blurred sample gets a rotated anisotropic kernel
    # photo: downsampling by `scale`; one mode drawn per sample
    resize_modes: tuple[str, ...] = ("bicubic",)  # "bicubic"/"bilinear" antialiased, "area" = block mean
    # photo: noise after downsampling, intensities in [0, 1]
    gaussian_noise_prob: float = 0.0  # chance of additive Gaussian noise
    gaussian_noise_sigma: tuple[float, float] = (1 / 255, 25 / 255)  # uniform, noise std
    poisson_noise_prob: float = 0.0  # chance of Poisson (shot) noise
    poisson_peak: tuple[float, float] = (30.0, 3000.0)  # log-uniform, photons at white (1.0); lower = noisier
    gray_noise_prob: float = 0.0  # chance that the noise is the same in every channel
    # photo: JPEG compression (kornia's differentiable codec)
    jpeg_prob: float = 0.0  # chance of JPEG compression
    jpeg_quality: tuple[float, float] = (30.0, 95.0)  # uniform, JPEG quality 0-100
    # astro: point-spread function; FWHM in HR pixels
    psf_kinds: tuple[str, ...] = ("gaussian", "moffat")  # one drawn per sample
    psf_fwhm: tuple[float, float] = (1.5, 4.0)  # uniform, FWHM in HR pixels
    moffat_beta: tuple[float, float] = (2.5, MOFFAT_BETA)  # uniform, Moffat wing slope
    # astro: noise after binning, in the data's units (noise units: HR noise sigma = 1)
    sky: tuple[float, float] = (1.0, 10.0)  # uniform, sky level added before shot noise, then removed
    gain: tuple[float, float] = (1.0, 10.0)  # log-uniform; shot-noise variance = (signal + sky) / gain
    read_noise: tuple[float, float] = (0.1, 1.0)  # uniform, Gaussian read-noise std

    def __post_init__(self):
        if self.pipeline not in PIPELINES:
            raise ConfigError(f"degradation pipeline must be one of {PIPELINES}, got {self.pipeline!r}")
        for name in ("resize_modes", "psf_kinds"):
            allowed = RESIZE_MODES if name == "resize_modes" else PSF_KINDS
            values = getattr(self, name)
            if not values or any(v not in allowed for v in values):
                raise ConfigError(f"{name} must be a non-empty tuple of {allowed}, got {values!r}")
        for f in fields(self):
            value = getattr(self, f.name)
            if f.name.endswith("_prob") and not 0.0 <= value <= 1.0:
                raise ConfigError(f"{f.name} must be a probability in [0, 1], got {value}")
            if f.type.startswith("tuple[float, float]") and not (len(value) == 2 and value[0] <= value[1]):
                raise ConfigError(f"{f.name} must be a (low, high) range with low <= high, got {value!r}")
        if min(self.poisson_peak) <= 0 or min(self.gain) <= 0 or min(self.psf_fwhm) <= 0:
            raise ConfigError("poisson_peak, gain and psf_fwhm ranges must be > 0")


PRESETS: dict[str, DegradeConfig] = {
    "bicubic": DegradeConfig(),
    "photo": DegradeConfig(
        blur_prob=0.8, blur_anisotropic_prob=0.5,
        resize_modes=("bicubic", "bilinear", "area"),
        gaussian_noise_prob=0.5, poisson_noise_prob=0.3, gray_noise_prob=0.4,
        jpeg_prob=0.8,
    ),
    "astro": DegradeConfig(pipeline="astro"),
}


# ---------------------------------------------------------------------------- checks, draws

def _check_image(x: torch.Tensor, scale: int = 1) -> None:
    if not isinstance(x, torch.Tensor) or x.dim() != 4:
        shape = tuple(x.shape) if isinstance(x, torch.Tensor) else type(x).__name__
        raise InputError(f"expected a (B, C, H, W) tensor, got {shape}")
    if not x.is_floating_point():
        raise InputError(f"expected a floating-point tensor, got {x.dtype}")
    if not isinstance(scale, int) or scale < 1:
        raise ConfigError(f"scale must be a positive integer, got {scale!r}")
    h, w = x.shape[-2:]
    if h % scale or w % scale:
        raise InputError(f"image height and width must be multiples of the scale {scale}, got {h}x{w}; "
                         f"crop the input (or change --patch-size) to a multiple of {scale}")


def _rand(n: int, generator: torch.Generator | None, device) -> torch.Tensor:
    """(n,) uniform [0, 1) float32 draws from `generator`, moved to `device`."""
    where = generator.device if generator is not None else device
    return torch.rand(n, generator=generator, device=where).to(device)


def _uniform(bounds, n, generator, device, log=False) -> torch.Tensor:
    lo, hi = bounds
    u = _rand(n, generator, device)
    if log:
        return torch.exp(math.log(lo) + u * (math.log(hi) - math.log(lo)))
    return lo + (hi - lo) * u


def _randn_like(x: torch.Tensor, generator: torch.Generator | None, shape=None) -> torch.Tensor:
    where = generator.device if generator is not None else x.device
    return torch.randn(shape or x.shape, generator=generator, device=where, dtype=x.dtype).to(x.device)


def _per_sample(v, n: int, device) -> torch.Tensor:
    """A float or (B,) tensor -> (B,) float32 tensor on `device`."""
    t = torch.as_tensor(v, dtype=torch.float32, device=device)
    return t.expand(n) if t.dim() == 0 else t


# ---------------------------------------------------------------------------- resampling

def bicubic_downsample(x: torch.Tensor, scale: int) -> torch.Tensor:
    """Antialiased bicubic downsampling (a = -0.5), the same filter as Pillow's BICUBIC resize.

    Args:
        x: (B, C, H, W) float, H and W multiples of `scale`.
    Returns:
        (B, C, H/scale, W/scale), not clamped (bicubic overshoots slightly at edges).
    """
    _check_image(x, scale)
    h, w = x.shape[-2:]
    return F.interpolate(x, size=(h // scale, w // scale), mode="bicubic", antialias=True, align_corners=False)


def bin_mean(x: torch.Tensor, scale: int) -> torch.Tensor:
    """Flux-conserving block-mean binning: each LR pixel is the mean of a scale x scale block.

    ``bin_mean(x, s).sum() * s**2 == x.sum()`` up to float rounding (values keep their
    per-HR-pixel units, i.e. surface brightness).

    Args:
        x: (B, C, H, W) float, H and W multiples of `scale`.
    Returns:
        (B, C, H/scale, W/scale).
    """
    _check_image(x, scale)
    return F.avg_pool2d(x, scale) if scale > 1 else x


def downsample(x: torch.Tensor, scale: int, mode: str = "bicubic") -> torch.Tensor:
    """Downsample by `scale` with mode "bicubic" / "bilinear" (antialiased) or "area" (block mean).

    Args:
        x: (B, C, H, W) float, H and W multiples of `scale`.
    Returns:
        (B, C, H/scale, W/scale).
    """
    if mode == "area":
        return bin_mean(x, scale)
    if mode == "bicubic":
        return bicubic_downsample(x, scale)
    if mode == "bilinear":
        _check_image(x, scale)
        h, w = x.shape[-2:]
        return F.interpolate(x, size=(h // scale, w // scale), mode="bilinear", antialias=True, align_corners=False)
    raise ConfigError(f"downsampling mode must be one of {RESIZE_MODES}, got {mode!r}")


# ---------------------------------------------------------------------------- kernels, blur

def _grid(size: int, device) -> tuple[torch.Tensor, torch.Tensor]:
    r = torch.arange(size, dtype=torch.float32, device=device) - (size - 1) / 2
    yy, xx = torch.meshgrid(r, r, indexing="ij")
    return yy, xx


def _odd_size(radius: float) -> int:
    return 2 * max(1, math.ceil(radius)) + 1


def gaussian_kernel(sigma_x, sigma_y=None, angle=None, size: int | None = None) -> torch.Tensor:
    """Normalised Gaussian kernels, optionally anisotropic and rotated, sampled at pixel centres.

    Args:
        sigma_x: float or (B,) tensor, std along the kernel's first axis (pixels).
        sigma_y: like sigma_x (default: sigma_x, isotropic).
        angle: float or (B,) tensor, rotation in radians (default 0).
        size: odd kernel width (default: covers 3 sigma of the widest kernel).
    Returns:
        (B, k, k) float32 kernels each summing to 1 ((1, k, k) for float inputs).
    """
    sx = torch.as_tensor(sigma_x, dtype=torch.float32).reshape(-1)
    device = sx.device
    sy = sx if sigma_y is None else torch.as_tensor(sigma_y, dtype=torch.float32, device=device).reshape(-1)
    th = torch.zeros_like(sx)
    if angle is not None:
        th = torch.as_tensor(angle, dtype=torch.float32, device=device).reshape(-1)
    if size is None:
        size = _odd_size(3 * float(torch.maximum(sx, sy).max()))
    yy, xx = _grid(size, device)
    c, s = torch.cos(th)[:, None, None], torch.sin(th)[:, None, None]
    u = c * xx + s * yy
    v = -s * xx + c * yy
    k = torch.exp(-0.5 * ((u / sx[:, None, None]) ** 2 + (v / sy[:, None, None]) ** 2))
    return k / k.sum(dim=(-2, -1), keepdim=True)


def filter_per_sample(x: torch.Tensor, kernel: torch.Tensor) -> torch.Tensor:
    """Convolve each sample with its own kernel, reflect padding, same size out.

    Args:
        x: (B, C, H, W) float.
        kernel: (k, k), (1, k, k) or (B, k, k); not renormalised.
    Returns:
        (B, C, H, W).
    Raises:
        InputError: when the image is smaller than the kernel's radius + 1 (reflect padding).
    """
    _check_image(x)
    if kernel.dim() == 2:
        kernel = kernel[None]
    k = kernel.shape[-1]
    if k // 2 >= min(x.shape[-2:]):
        raise InputError(f"image {x.shape[-2]}x{x.shape[-1]} is too small for a {k}x{k} kernel; "
                         f"use images (or --patch-size) larger than {k // 2} pixels")
    kernel = kernel.to(device=x.device, dtype=x.dtype)
    return kornia.filters.filter2d(x, kernel, border_type="reflect", behaviour="conv")


def gaussian_blur(x: torch.Tensor, sigma_x, sigma_y=None, angle=None) -> torch.Tensor:
    """Blur with a per-sample (optionally anisotropic, rotated) Gaussian; see :func:`gaussian_kernel`.

    Args:
        x: (B, C, H, W) float.
        sigma_x, sigma_y, angle: floats or (B,) tensors (pixels, pixels, radians).
    Returns:
        (B, C, H, W).
    """
    return filter_per_sample(x, gaussian_kernel(sigma_x, sigma_y, angle))


def psf_kernel(kind: str, fwhm, size: int | None = None, beta=MOFFAT_BETA) -> torch.Tensor:
    """A point-spread function sampled at pixel centres, normalised to sum 1.

    Gaussian: ``exp(-r^2 / (2 sigma^2))`` with ``sigma = fwhm / 2.3548``.
    Moffat: ``(1 + r^2 / alpha^2)^-beta`` with ``alpha = fwhm / (2 sqrt(2^(1/beta) - 1))``
    (heavier wings than a Gaussian of the same FWHM; beta=4.765 is Kolmogorov seeing).

    Args:
        kind: "gaussian" or "moffat".
        fwhm: float or (B,) tensor, full width at half maximum in pixels.
        size: odd kernel width; default covers 2 FWHM (Gaussian, 4.7 sigma) or 3 FWHM
            (Moffat) on each side of the centre of the widest kernel. The truncated wings
            are renormalised away.
        beta: float or (B,) tensor, Moffat slope (ignored for Gaussians).
    Returns:
        (k, k) for a float `fwhm`, (B, k, k) for a tensor; float32, each summing to 1.

    Example:
        >>> k = psf_kernel("moffat", 3.0)
        >>> k.shape, round(float(k.sum()), 6)
        (torch.Size([19, 19]), 1.0)
    """
    if kind not in PSF_KINDS:
        raise ConfigError(f"PSF kind must be one of {PSF_KINDS}, got {kind!r}")
    batched = isinstance(fwhm, torch.Tensor) and fwhm.dim() > 0
    f = torch.as_tensor(fwhm, dtype=torch.float32).reshape(-1)
    if (f <= 0).any():
        raise ConfigError(f"PSF FWHM must be > 0 pixels, got {fwhm}")
    if size is None:
        size = _odd_size((2.0 if kind == "gaussian" else 3.0) * float(f.max()))
    if size % 2 == 0:
        raise ConfigError(f"PSF kernel size must be odd, got {size}")
    yy, xx = _grid(size, f.device)
    r2 = (xx**2 + yy**2)[None]  # (1, k, k)
    if kind == "gaussian":
        sigma = (f / FWHM_PER_SIGMA)[:, None, None]
        k = torch.exp(-0.5 * r2 / sigma**2)
    else:
        b = torch.as_tensor(beta, dtype=torch.float32, device=f.device).reshape(-1)[:, None, None]
        alpha = f[:, None, None] / (2.0 * torch.sqrt(2.0 ** (1.0 / b) - 1.0))
        k = (1.0 + r2 / alpha**2) ** (-b)
    k = k / k.sum(dim=(-2, -1), keepdim=True)
    return k if batched else k[0]


def convolve_psf(x: torch.Tensor, kernel: torch.Tensor) -> torch.Tensor:
    """Convolve with a PSF kernel, reflect padding (flux conserved away from the borders).

    Args:
        x: (B, C, H, W) float, linear data.
        kernel: (k, k) shared or (B, k, k) per sample, e.g. from :func:`psf_kernel`;
            used as given (normalise it to sum 1 to conserve flux).
    Returns:
        (B, C, H, W).
    """
    return filter_per_sample(x, kernel)


# ---------------------------------------------------------------------------- noise, JPEG

def gaussian_noise(x: torch.Tensor, sigma, gray=False, generator: torch.Generator | None = None) -> torch.Tensor:
    """Add zero-mean Gaussian noise of std `sigma` (per sample); grey noise is shared by all channels.

    Args:
        x: (B, C, H, W) float.
        sigma: float or (B,) tensor, noise std in the data's units.
        gray: bool or (B,) bool tensor.
    Returns:
        (B, C, H, W), not clamped.
    """
    _check_image(x)
    b, c, h, w = x.shape
    sigma = _per_sample(sigma, b, x.device).to(x.dtype)[:, None, None, None]
    gray = torch.as_tensor(gray, device=x.device).expand(b)[:, None, None, None]
    color = _randn_like(x, generator)
    mono = _randn_like(x, generator, (b, 1, h, w))
    return x + sigma * torch.where(gray, mono.expand_as(x), color)


def poisson_noise(x: torch.Tensor, peak, generator: torch.Generator | None = None) -> torch.Tensor:
    """Shot noise: ``Poisson(x * peak) / peak`` with `peak` photons at 1.0 (per sample).

    Args:
        x: (B, C, H, W) float in [0, 1] (negative values count as 0 photons).
        peak: float or (B,) tensor > 0; lower is noisier.
    Returns:
        (B, C, H, W), not clamped.
    """
    _check_image(x)
    peak = _per_sample(peak, x.shape[0], x.device)[:, None, None, None]
    rate = (x.float().clamp_min(0) * peak)
    where = generator.device if generator is not None else x.device
    counts = torch.poisson(rate.to(where), generator=generator).to(x.device)
    return (counts / peak).to(x.dtype)


def jpeg(x: torch.Tensor, quality) -> torch.Tensor:
    """JPEG compress and decode (kornia's differentiable codec) at a per-sample quality.

    Args:
        x: (B, C, H, W) in [0, 1], C = 3 (RGB) or 1 (grey, coded as grey RGB).
        quality: float or (B,) tensor, 0-100.
    Returns:
        (B, C, H, W) in about [0, 1].
    """
    _check_image(x)
    b, c = x.shape[:2]
    if c not in (1, 3):
        raise InputError(f"JPEG needs 1 or 3 channels, got {c}")
    q = _per_sample(quality, b, x.device)
    rgb = x.expand(-1, 3, -1, -1) if c == 1 else x
    out = kornia.enhance.jpeg_codec_differentiable(rgb.clamp(0, 1), q)
    return out.mean(dim=1, keepdim=True) if c == 1 else out


def sky_read_noise(x: torch.Tensor, sky, gain, read_noise, generator: torch.Generator | None = None) -> torch.Tensor:
    """CCD-like noise for linear data: shot noise of signal + sky, then read noise.

    Units: everything is in the data's units; for training, "noise units", i.e. HR data
    divided by its own background noise sigma, so the HR noise std is 1. The model: a
    sky level `sky` is added, photon noise is drawn with variance ``(x + sky) / gain``
    (Gaussian approximation of Poisson; ``gain`` = counts per data unit, negative signal
    counts as 0), the sky is subtracted again, and Gaussian read noise of std `read_noise`
    is added. The result has the input's mean (zero-mean noise), so flux is preserved on
    average; the background noise std is ``sqrt(sky / gain + read_noise**2)``.

    Args:
        x: (B, C, H, W) float, linear (any sign).
        sky, gain, read_noise: floats or (B,) tensors.
    Returns:
        (B, C, H, W), not clamped.
    """
    _check_image(x)
    b = x.shape[0]
    sky, gain, read = (_per_sample(v, b, x.device)[:, None, None, None] for v in (sky, gain, read_noise))
    var = (x.float() + sky).clamp_min(0) / gain + read**2
    return x + (var.sqrt() * _randn_like(x.float(), generator)).to(x.dtype)


# ---------------------------------------------------------------------------- pipelines

def astro_forward(x: torch.Tensor, fwhm, scale: int, kind: str = "gaussian", beta=MOFFAT_BETA) -> torch.Tensor:
    """The deterministic astro forward operator: PSF convolution then block-mean binning, no noise.

    This is what ``--consistency`` inverts: ``astro_forward(sr, ...)`` should reproduce the LR
    data. Flux: ``astro_forward(x).sum() * scale**2 == x.sum()`` for sources away from the
    borders (reflect padding at the borders).

    Args:
        x: (B, C, H, W) float, linear data, H and W multiples of `scale`.
        fwhm: PSF FWHM in HR pixels (float or (B,) tensor), or a PSF image as a (k, k) or
            (B, k, k) tensor (e.g. read from a PSF FITS file), normalised here to sum 1.
        scale: integer binning factor.
        kind, beta: PSF shape when `fwhm` is a width (see :func:`psf_kernel`).
    Returns:
        (B, C, H/scale, W/scale).
    """
    _check_image(x, scale)
    if isinstance(fwhm, torch.Tensor) and fwhm.dim() >= 2:
        kernel = fwhm.float() / fwhm.float().sum(dim=(-2, -1), keepdim=True)
    else:
        kernel = psf_kernel(kind, fwhm, beta=beta)
    return bin_mean(convolve_psf(x, kernel.to(x.device)), scale)


def _degrade_photo(hr: torch.Tensor, cfg: DegradeConfig, scale: int, g) -> torch.Tensor:
    b, dev = hr.shape[0], hr.device
    x = hr
    # 1. blur (HR)
    blur = _rand(b, g, dev) < cfg.blur_prob
    aniso = _rand(b, g, dev) < cfg.blur_anisotropic_prob
    sx = _uniform(cfg.blur_sigma, b, g, dev)
    sy = torch.where(aniso, _uniform(cfg.blur_sigma, b, g, dev), sx)
    angle = _uniform((0.0, math.pi), b, g, dev)
    if bool(blur.any()):
        size = _odd_size(3 * cfg.blur_sigma[1])
        kernel = gaussian_kernel(sx, sy, angle, size=size)
        x = torch.where(blur[:, None, None, None], filter_per_sample(x, kernel), x)
    # 2. downsample, one mode per sample
    mode = (_rand(b, g, dev) * len(cfg.resize_modes)).long().clamp_max(len(cfg.resize_modes) - 1)
    lr = None
    for i, name in enumerate(cfg.resize_modes):
        down = downsample(x, scale, name)
        lr = down if lr is None else torch.where((mode == i)[:, None, None, None], down, lr)
    x = lr
    # 3. noise: Gaussian or Poisson (Gaussian wins when both are drawn)
    gauss = _rand(b, g, dev) < cfg.gaussian_noise_prob
    poisson = (_rand(b, g, dev) < cfg.poisson_noise_prob) & ~gauss
    gray = _rand(b, g, dev) < cfg.gray_noise_prob
    sigma = _uniform(cfg.gaussian_noise_sigma, b, g, dev)
    peak = _uniform(cfg.poisson_peak, b, g, dev, log=True)
    if bool(gauss.any()):
        x = torch.where(gauss[:, None, None, None], gaussian_noise(x, sigma, gray, g), x)
    if bool(poisson.any()):
        noisy = poisson_noise(x, peak, g)
        if bool((poisson & gray).any()):  # grey shot noise: same relative fluctuation in every channel
            lum = x.mean(dim=1, keepdim=True)
            noisy = torch.where(gray[:, None, None, None], x + (poisson_noise(lum, peak, g) - lum), noisy)
        x = torch.where(poisson[:, None, None, None], noisy, x)
    x = x.clamp(0, 1)
    # 4. JPEG
    jpg = _rand(b, g, dev) < cfg.jpeg_prob
    quality = _uniform(cfg.jpeg_quality, b, g, dev)
    if bool(jpg.any()):
        x = torch.where(jpg[:, None, None, None], jpeg(x, quality), x)
    return x.clamp(0, 1)


def _degrade_astro(hr: torch.Tensor, cfg: DegradeConfig, scale: int, g) -> torch.Tensor:
    b, dev = hr.shape[0], hr.device
    fwhm = _uniform(cfg.psf_fwhm, b, g, dev)
    beta = _uniform(cfg.moffat_beta, b, g, dev)
    kind = (_rand(b, g, dev) * len(cfg.psf_kinds)).long().clamp_max(len(cfg.psf_kinds) - 1)
    sky = _uniform(cfg.sky, b, g, dev)
    gain = _uniform(cfg.gain, b, g, dev, log=True)
    read = _uniform(cfg.read_noise, b, g, dev)
    # one kernel size for the batch: wide enough for the widest PSF the config allows
    size = max(_odd_size((2.0 if name == "gaussian" else 3.0) * cfg.psf_fwhm[1]) for name in cfg.psf_kinds)
    kernel = None
    for i, name in enumerate(cfg.psf_kinds):
        k = psf_kernel(name, fwhm, size=size, beta=beta)
        kernel = k if kernel is None else torch.where((kind == i)[:, None, None], k, kernel)
    lr = bin_mean(convolve_psf(hr, kernel), scale)
    return sky_read_noise(lr, sky, gain, read, g)


def degrade(hr: torch.Tensor, preset: str | DegradeConfig, scale: int,
            generator: torch.Generator | None = None) -> torch.Tensor:
    """Make the LR input for an HR batch with a named preset or a :class:`DegradeConfig`.

    Args:
        hr: (B, C, H, W) float; [0, 1] for photo pipelines, linear data in noise units
            (any sign) for "astro". H and W multiples of `scale`.
        preset: "bicubic", "photo", "astro" (see module doc) or a DegradeConfig.
        scale: integer downscaling factor.
        generator: source of every random draw (per-sample parameters and noise); None uses
            torch's global RNG.
    Returns:
        (B, C, H/scale, W/scale), same dtype and device; clamped to [0, 1] for photo
        pipelines, not clamped for "astro".
    Raises:
        InputError: not 4-D, not float, or H/W not multiples of `scale`.
        ConfigError: unknown preset name.
    """
    if isinstance(preset, str):
        if preset not in PRESETS:
            raise ConfigError(f"unknown degradation preset {preset!r}; use --preset with one of {tuple(PRESETS)}")
        cfg = PRESETS[preset]
    elif isinstance(preset, DegradeConfig):
        cfg = preset
    else:
        raise ConfigError(f"preset must be a name in {tuple(PRESETS)} or a DegradeConfig, got {type(preset).__name__}")
    _check_image(hr, scale)
    if cfg.pipeline == "astro":
        return _degrade_astro(hr, cfg, scale, generator)
    return _degrade_photo(hr, cfg, scale, generator)
