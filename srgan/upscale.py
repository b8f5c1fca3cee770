"""The Python API for upscaling: ``Upscaler`` wraps a generator with the tiled engine.

>>> import numpy as np
>>> from srgan.models import Generator, GeneratorConfig
>>> up = Upscaler(Generator(GeneratorConfig(scale=2, channels=8, blocks=1)), device="cpu")
>>> up.upscale(np.zeros((5, 7, 3), np.uint8)).shape
(10, 14, 3)

This module is the engine: device, precision, tile size, CUDA out-of-memory retries and the
model's pixel normalisation (:meth:`Upscaler.upscale_planes`). What a photo (numpy, torch, PIL;
8/16-bit, gray, alpha) becomes on its way through it is :mod:`srgan.photo`; FITS and astropy
objects are :mod:`srgan.fits`, also reachable as ``Upscaler.upscale_hdu/upscale_fits/upscale_nddata``.
"""

from __future__ import annotations

import copy
import math
import os
import warnings

import numpy as np
import torch

from srgan import guard, photo
from srgan.checkpoint import ModelInfo, load_model
from srgan.device import cpu_native_bf16, resolve_device  # the one device rule, shared with training
from srgan.community import CommunityConfig, community_precision
from srgan.errors import ConfigError, InputError
from srgan.models import GeneratorConfig, receptive_radius
from srgan.normalize import sky_and_noise
from srgan.tiling import auto_tile, bytes_per_pixel, upscale_tiled, window_size

PRECISIONS = ("auto", "fp32", "fp16", "bf16")
PRECISION_ENV = "SRGAN_PRECISION"  # replaces precision="auto" (e.g. fp32 to force fp32)
CPU_BUDGET = 2**30  # activation memory per forward pass on the CPU (bytes): keeps a 10k x 10k FITS under 2 GB RSS
GPU_FRACTION = 0.5  # of the free GPU memory, per forward pass
PHOTO_OVERLAP = 16  # default context margin for photo models (see Upscaler._default_overlap)
MIN_TILE = 16  # CUDA out-of-memory retries halve the tile down to this
SKY_SAMPLE = 4_000_000  # pixels used to estimate sky and noise on large images


def resolve_precision(precision: str, device: torch.device, photo: bool = True) -> torch.dtype | None:
    """The autocast dtype for ``precision`` (None = plain fp32).

    ``auto``: on a GPU bf16 where supported, else fp16; on the CPU bf16 for photo models
    (``photo``) when the processor computes bf16 natively (:func:`srgan.device.cpu_native_bf16`:
    about 2x fp32 at 56 dB PSNR for photo-x4, README Performance), else fp32. FITS (data)
    models stay fp32 on the CPU. The environment variable ``SRGAN_PRECISION`` (one of
    PRECISIONS) replaces ``auto``, e.g. ``SRGAN_PRECISION=fp32`` to force fp32 everywhere.
    """
    if precision not in PRECISIONS:
        raise ConfigError(f"--precision must be one of {', '.join(PRECISIONS)}, got {precision!r}")
    if precision == "auto":
        precision = os.environ.get(PRECISION_ENV) or "auto"
        if precision not in PRECISIONS:
            raise ConfigError(f"{PRECISION_ENV} must be one of {', '.join(PRECISIONS)}, got {precision!r}")
    if precision == "auto":
        if device.type == "cuda":
            return torch.bfloat16 if torch.cuda.is_bf16_supported() else torch.float16
        return torch.bfloat16 if device.type == "cpu" and photo and cpu_native_bf16() else None
    return {"fp32": None, "fp16": torch.float16, "bf16": torch.bfloat16}[precision]


class Upscaler:
    """A generator ready to upscale images of any size, tile by tile.

    Args:
        model: a :class:`srgan.models.Generator` (or any module with a GeneratorConfig
            ``.config``), or a :class:`srgan.community.CommunityModel` (ESRGAN, SwinIR, ...
            from :func:`srgan.load_model`); put in eval mode and moved to ``device``. Its
            ``.info`` (from :func:`srgan.load_model`) gives the pixel normalisation.
        device: ``auto`` (CUDA when available), ``cpu``, ``cuda`` or ``cuda:N``.
        precision: ``auto`` (GPU: bf16/fp16 autocast; CPU: bf16 autocast for photo models where
            the processor has native bf16, else fp32; see :func:`resolve_precision`), ``fp32``,
            ``fp16``, ``bf16``.
        tile: tile size in LR pixels; 0 = whole image in one pass; None = sized for the
            device (CPU: about 1 GiB of activations per pass, 256 px for photo-x4 in fp32, 384 in bf16, and 352 px
            for galaxy-x4; GPU: half of the free memory). On CUDA out-of-memory the tile is halved
            and the image retried.
        overlap: context margin in LR pixels; None = the generator's receptive radius for
            FITS models, which makes tiled output equal to whole-image output, and at most
            16 px for photo models (8-bit output: 0.004% of values differ by one level from
            a whole-image pass with photo-x4); community models: their family's measured
            default (``CommunityConfig.overlap``). Smaller is faster and leaves seams.
        batch_size: tiles per forward pass; None = 1 on the CPU, 4 on a GPU.
        self_ensemble: average the model over the 8 flips/rotations of each tile
            (:class:`srgan.ensemble.SelfEnsemble`): a little more PSNR for 8x the compute.
    """

    def __init__(self, model, device="auto", precision="auto", tile=None, overlap=None, batch_size=None,
                 self_ensemble=False):
        config = getattr(model, "config", None)
        community = isinstance(config, CommunityConfig)  # community hook (srgan.community)
        if not isinstance(config, GeneratorConfig) and not community:
            raise ConfigError("Upscaler needs a srgan Generator (a module with a GeneratorConfig .config) "
                              "or a community model from srgan.load_model")
        if self_ensemble:
            from srgan.ensemble import SelfEnsemble

            model = SelfEnsemble(model)
        self.device = resolve_device(device)
        self.precision = precision
        self.info = getattr(model, "info", None) or ModelInfo(config=config, name=type(model).__name__)
        # CPU bf16 by default only for srgan photo generators (measured); community models stay fp32 there
        cpu_bf16_ok = self.is_photo_model and not community
        self.autocast_dtype = resolve_precision(precision, self.device, photo=cpu_bf16_ok)
        if community:  # the architecture's fp16/bf16 support (spandrel's flags)
            self.autocast_dtype = community_precision(config, precision, self.autocast_dtype)
        self.channels_last = True  # NHWC convolutions: ~1.8x faster on this CPU (oneDNN), and on GPUs
        self.model = model.to(self.device).eval()
        if self.channels_last:
            self.model = self.model.to(memory_format=torch.channels_last)
        if self.device.type == "cpu" and self.autocast_dtype is torch.bfloat16 and not community:
            # a bf16 copy: autocast would re-cast every weight on every tile (8% of a CPU forward),
            # the output is bit-identical; the caller's model stays fp32
            self.model = copy.deepcopy(self.model).to(torch.bfloat16)
        self.scale = config.scale
        self.radius = config.overlap if community else receptive_radius(config)  # community: measured default
        self.overlap = self._default_overlap() if overlap is None else int(overlap)
        if self.overlap < 0:
            raise ConfigError(f"--overlap must be >= 0, got {overlap}")
        self.overlap = guard.clamp_overlap(self.overlap, self.radius, exact=not community)
        self.batch_size = (4 if self.device.type == "cuda" else 1) if batch_size is None else int(batch_size)
        if self.batch_size < 1:
            raise ConfigError(f"--batch-size must be >= 1, got {batch_size}")
        self.tile = self._default_tile() if tile is None else int(tile)
        if self.tile < 0:
            raise ConfigError(f"--tile must be >= 0 (0 = whole image), got {tile}")
        if tile is not None:
            guard.warn_small_tile(self.tile, self.overlap)

    @classmethod
    def from_pretrained(cls, name_or_path, **options) -> "Upscaler":
        """An embedded model name (``photo-x4``, ``galaxy-x4``), a ``.safetensors`` model file, or a
        community model file (``.pth``, ``.safetensors``: ESRGAN, SwinIR, ...; needs srgan[community])."""
        return cls(load_model(name_or_path, device="cpu"), **options)

    def __repr__(self):
        return (f"Upscaler(model={self.info.name!r}, scale={self.scale}, device={str(self.device)!r}, "
                f"precision={self.precision!r}, tile={self.tile}, overlap={self.overlap}, "
                f"batch_size={self.batch_size})")

    def _default_overlap(self) -> int:
        """FITS (science data): the receptive radius, tiled == whole. Photos (8/16-bit output):
        at most PHOTO_OVERLAP, which changes 0.004% of 8-bit values by one level for photo-x4
        (benchmarks/seams.py) and cuts the recomputed margin from 2.25x to 1.27x at 512^2 on the CPU.
        Community models: their family's default (benchmarks/community_seams.py)."""
        if isinstance(self.model.config, CommunityConfig):
            return self.radius
        return min(self.radius, PHOTO_OVERLAP) if self.is_photo_model else self.radius

    def _default_tile(self) -> int:
        cfg = self.model.config
        if isinstance(cfg, CommunityConfig) and cfg.whole_image:  # the model tiles internally (spandrel)
            return 0
        per_pixel = bytes_per_pixel(cfg.channels, cfg.scale, half=self.autocast_dtype is not None)
        if self.device.type == "cuda":
            free, _ = torch.cuda.mem_get_info(self.device)
            return auto_tile(GPU_FRACTION * free, per_pixel, self.overlap, self.batch_size, multiple=64)
        return auto_tile(CPU_BUDGET, per_pixel, self.overlap, self.batch_size, multiple=32)

    def _forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.autocast_dtype is None:
            return self.model(x)
        with torch.autocast(self.device.type, dtype=self.autocast_dtype):
            return self.model(x).float()

    @property
    def is_photo_model(self) -> bool:
        """True for photo models (Normalization ``unit``: RGB in [0, 1]), False for data models."""
        return self.info.normalization.kind == "unit"

    def run_tiled(self, src, out, pre, post, *, fn=None, tile=None, overlap=None, progress=False):
        """:func:`srgan.tiling.upscale_tiled` with this upscaler's settings; CUDA out-of-memory
        halves the tile and retries (down to 16 px; later calls start from the size that fitted).

        Args:
            src: (C, H, W) numpy array, memmap or tensor; out: (C', sH, sW), written in place.
            pre, post: per-batch maps into and out of the model's input space (on the device).
            fn: the per-tile function; None = the model (with autocast, channels_last).
            tile, overlap: override this upscaler's (e.g. for the bicubic alpha pass).
        Returns:
            ``out``.
        """
        model_pass = fn is None
        fn = self._forward if model_pass else fn
        tile = self.tile if tile is None else tile
        overlap = self.overlap if overlap is None else overlap
        cfg = self.model.config  # community hook: windows on the model's attention/unshuffle grid
        align = cfg.align if model_pass and isinstance(cfg, CommunityConfig) else 1
        if isinstance(cfg, CommunityConfig):  # srgan models: already at most the (exact) receptive radius
            overlap = guard.overlap_for_image(overlap, *src.shape[-2:])
        if model_pass and self.device.type == "cpu":
            h, w = src.shape[-2:]
            per_pixel = bytes_per_pixel(getattr(cfg, "channels", 64), self.scale, half=self.autocast_dtype is not None)
            guard.check_pass_memory(window_size(h, tile) + 2 * overlap, window_size(w, tile) + 2 * overlap,
                                    self.batch_size, per_pixel, tile)
        while True:
            try:
                return upscale_tiled(fn, src, out, scale=self.scale, tile=tile, overlap=overlap,
                                     batch_size=self.batch_size, device=self.device, pre=pre, post=post,
                                     channels_last=self.channels_last and model_pass, progress=progress,
                                     align=align)
            except torch.cuda.OutOfMemoryError:
                current = tile if tile > 0 else max(src.shape[-2:])
                smaller = current // 2
                if smaller < MIN_TILE:
                    raise ConfigError(f"out of {self.device} memory even with --tile {current}; "
                                      "use --batch-size 1 or --device cpu") from None
                warnings.warn(f"out of {self.device} memory with tile {current} px; retrying with tile {smaller}",
                              RuntimeWarning, stacklevel=3)
                if self.device.type == "cuda":
                    torch.cuda.empty_cache()
                tile = smaller
                if model_pass:
                    self.tile = smaller  # later images start from the size that fitted

    # --- images (adapters in srgan.photo) -----------------------------------------------

    def upscale(self, image, *, progress: bool = False):
        """Upscale a numpy array ((H, W) or (H, W, C); uint8, uint16 or float), a torch tensor
        ((C, H, W), (B, C, H, W) or (H, W)) or a PIL image; returns the same kind (see :mod:`srgan.photo`).

        Raises:
            InputError: unsupported dtype, shape or channel count.
            TypeError: any other kind of input.
        """
        return photo.upscale_image(self, image, progress=progress)

    # --- data (FITS) ---------------------------------------------------------------------

    def upscale_planes(self, planes, *, sky=None, noise=None, out=None, progress: bool = False) -> np.ndarray:
        """Upscale float data planes in pixel units, e.g. a FITS image.

        The model's :class:`~srgan.normalize.Normalization` is applied tile by tile on the
        device: for ``asinh`` models with ``sky`` and ``noise`` (floats, or one value per
        plane) estimated robustly from the whole input when not given (sigma-clipped, on a
        regular subsample of at most 4 Mpx for larger images). Values are not clipped.

        Args:
            planes: (C, H, W) float array, C = the model's in_channels; may be a memmap
                (read tile by tile). No NaNs: callers fill them first.
            sky, noise: normalisation parameters (ignored by ``unit`` models).
            out: optional (C_out, H*scale, W*scale) array (e.g. a memmap) to write into.
            progress: tqdm bar over tiles.
        Returns:
            ``out`` or a new float32 (C_out, H*scale, W*scale) array.
        """
        cfg = self.model.config
        if planes.ndim != 3 or planes.shape[0] != cfg.in_channels:
            raise InputError(f"expected planes of shape ({cfg.in_channels}, H, W) for this model, "
                             f"got {tuple(planes.shape)}")
        H, W = planes.shape[1:]
        shape = (cfg.out_channels, H * self.scale, W * self.scale)
        if out is None:
            out = np.empty(shape, np.float32)
        elif tuple(out.shape) != shape:
            raise InputError(f"out must have shape {shape}, got {tuple(out.shape)}")
        norm = self.info.normalization
        if norm.kind != "unit" and (sky is None or noise is None):
            est_sky, est_noise = sky_and_noise(_subsample(planes, SKY_SAMPLE))
            sky = est_sky if sky is None else sky
            noise = est_noise if noise is None else noise
        sky_t, noise_t = self._param(sky), self._param(noise)

        def pre(x):
            return norm.forward(x.float(), sky_t, noise_t)

        def post(y):
            return norm.inverse(y.float(), sky_t, noise_t)

        return self.run_tiled(planes, out, pre, post, progress=progress)

    def _param(self, v):
        """A float, or per-plane values as a (1, C, 1, 1) tensor on the device."""
        if v is None or np.ndim(v) == 0:
            return 0.0 if v is None else float(v)
        return torch.as_tensor(np.asarray(v, np.float32), device=self.device).view(1, -1, 1, 1)

    # --- FITS / astropy: thin forwards to srgan.fits, imported on first use (astropy) -------

    def upscale_hdu(self, hdu, **kw):
        """Upscale an astropy image HDU; returns an ImageHDU with the updated header and WCS.
        See :func:`srgan.fits.upscale_hdu`."""
        from srgan import fits

        return fits.upscale_hdu(self, hdu, **kw)

    def upscale_fits(self, path_in, path_out, **kw):
        """Upscale a FITS file into a new one (atomic write). See :func:`srgan.fits.upscale_fits`."""
        from srgan import fits

        return fits.upscale_fits(self, path_in, path_out, **kw)

    def upscale_nddata(self, nd, **kw):
        """Upscale an astropy NDData/CCDData. See :func:`srgan.fits.upscale_nddata`."""
        from srgan import fits

        return fits.upscale_nddata(self, nd, **kw)


def _subsample(planes, max_pixels: int) -> np.ndarray:
    """A regular subsample of (C, H, W) planes with at most about ``max_pixels`` values."""
    step = max(1, math.ceil(math.sqrt(planes.size / max_pixels)))
    return np.asarray(planes[:, ::step, ::step], dtype=np.float32)
