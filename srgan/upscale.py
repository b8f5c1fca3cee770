"""The Python API for upscaling: ``Upscaler`` wraps a generator with the tiled engine.

>>> import numpy as np
>>> from srgan.models import Generator, GeneratorConfig
>>> up = Upscaler(Generator(GeneratorConfig(scale=2, channels=8, blocks=1)), device="cpu")
>>> up.upscale(np.zeros((5, 7, 3), np.uint8)).shape
(10, 14, 3)

Inputs come back as the same kind: numpy -> numpy (same dtype and layout), torch -> torch
(same dtype and device), PIL -> PIL (same mode, palette images as RGB/RGBA).

Photo models (Normalization "unit") see RGB in [0, 1]: uint8 and uint16 are scaled by
1/255 and 1/65535 on the device and quantised back to the same dtype (16-bit data never goes
through 8 bits); float input is taken as already in [0, 1] and the output is clipped to
[0, 1]. A grayscale image goes through a 3-channel model as replicated RGB and comes back as
one channel (the mean of the three output channels); a 1-channel model runs each channel of
a colour image as its own plane. An alpha channel is upscaled with bicubic interpolation
(not by the model) and kept.

Data models (Normalization "asinh", e.g. for FITS) work on float pixel values: see
:meth:`Upscaler.upscale_planes`.
"""

from __future__ import annotations

import math
import os
import warnings

import numpy as np
import torch
import torch.nn.functional as F

from srgan.checkpoint import ModelInfo, load_model
from srgan.errors import ConfigError, InputError
from srgan.models import GeneratorConfig, receptive_radius
from srgan.normalize import sky_and_noise
from srgan.tiling import auto_tile, bytes_per_pixel, upscale_tiled

PRECISIONS = ("auto", "fp32", "fp16", "bf16")
CPU_BUDGET = 2**30  # activation memory per forward pass on the CPU (bytes): keeps a 10k x 10k FITS under 2 GB RSS
GPU_FRACTION = 0.5  # of the free GPU memory, per forward pass
PHOTO_OVERLAP = 16  # default context margin for photo models (see Upscaler._default_overlap)
MIN_TILE = 16  # CUDA out-of-memory retries halve the tile down to this
ALPHA_TILE, ALPHA_OVERLAP = 1024, 2  # bicubic reaches 2 LR px
SKY_SAMPLE = 4_000_000  # pixels used to estimate sky and noise on large images


def resolve_device(device="auto") -> torch.device:
    """``auto``: the CUDA GPU when there is one (``cuda:LOCAL_RANK`` under torchrun), else the CPU.

    Raises ConfigError when CUDA is asked for and not available (no silent CPU fallback).
    """
    if isinstance(device, torch.device):
        device = str(device)
    if device == "auto":
        if not torch.cuda.is_available():
            return torch.device("cpu")
        local_rank = int(os.environ.get("LOCAL_RANK", 0))
        return torch.device("cuda", local_rank % torch.cuda.device_count())
    try:
        dev = torch.device(device)
    except RuntimeError as e:
        raise ConfigError(f"unknown device {device!r}: use --device auto, cpu, cuda or cuda:N") from e
    if dev.type == "cuda":
        if not torch.cuda.is_available():
            raise ConfigError(f"--device {device}: CUDA is not available here; use --device cpu")
        if dev.index is not None and dev.index >= torch.cuda.device_count():
            raise ConfigError(f"--device {device}: only {torch.cuda.device_count()} CUDA device(s); use cuda:0")
    return dev


def resolve_precision(precision: str, device: torch.device) -> torch.dtype | None:
    """The autocast dtype for ``precision`` (None = plain fp32).

    ``auto``: fp32 on the CPU, bf16 on a GPU that supports it, else fp16.
    """
    if precision not in PRECISIONS:
        raise ConfigError(f"--precision must be one of {', '.join(PRECISIONS)}, got {precision!r}")
    if precision == "auto":
        if device.type != "cuda":
            return None
        return torch.bfloat16 if torch.cuda.is_bf16_supported() else torch.float16
    return {"fp32": None, "fp16": torch.float16, "bf16": torch.bfloat16}[precision]


def _integer_max(dtype) -> float | None:
    """255 for uint8, 65535 for uint16, None for floats; InputError for other dtypes."""
    name = dtype.name if isinstance(dtype, np.dtype) else str(dtype).replace("torch.", "")  # '>u2' -> uint16
    if name in ("uint8", "uint16"):
        return float(np.iinfo(name).max)
    if name in ("float16", "bfloat16", "float32", "float64"):
        return None
    raise InputError(f"unsupported pixel type {name}: expected uint8, uint16 or float")


class Upscaler:
    """A generator ready to upscale images of any size, tile by tile.

    Args:
        model: a :class:`srgan.models.Generator` (or any module with a GeneratorConfig
            ``.config``); put in eval mode and moved to ``device``. Its ``.info``
            (from :func:`srgan.load_model`) gives the pixel normalisation.
        device: ``auto`` (CUDA when available), ``cpu``, ``cuda`` or ``cuda:N``.
        precision: ``auto`` (fp32 on CPU, bf16/fp16 autocast on GPU), ``fp32``, ``fp16``, ``bf16``.
        tile: tile size in LR pixels; 0 = whole image in one pass; None = sized for the
            device (CPU: about 1 GiB of activations per pass, 256 px for photo-x4 and 352 px
            for galaxy-x4; GPU: half of the free memory). On CUDA out-of-memory the tile is halved
            and the image retried.
        overlap: context margin in LR pixels; None = the generator's receptive radius for
            FITS models, which makes tiled output equal to whole-image output, and at most
            16 px for photo models (8-bit output: 0.004% of values differ by one level from
            a whole-image pass with photo-x4). Smaller is faster and leaves seams.
        batch_size: tiles per forward pass; None = 1 on the CPU, 4 on a GPU.
        self_ensemble: average the model over the 8 flips/rotations of each tile
            (:class:`srgan.ensemble.SelfEnsemble`): a little more PSNR for 8x the compute.
    """

    def __init__(self, model, device="auto", precision="auto", tile=None, overlap=None, batch_size=None,
                 self_ensemble=False):
        config = getattr(model, "config", None)
        if not isinstance(config, GeneratorConfig):
            raise ConfigError("Upscaler needs a srgan Generator (a module with a GeneratorConfig .config)")
        if self_ensemble:
            from srgan.ensemble import SelfEnsemble

            model = SelfEnsemble(model)
        self.device = resolve_device(device)
        self.precision = precision
        self.autocast_dtype = resolve_precision(precision, self.device)
        self.channels_last = True  # NHWC convolutions: ~1.8x faster on this CPU (oneDNN), and on GPUs
        self.model = model.to(self.device).eval()
        if self.channels_last:
            self.model = self.model.to(memory_format=torch.channels_last)
        self.info = getattr(model, "info", None) or ModelInfo(config=config, name=type(model).__name__)
        self.scale = config.scale
        self.radius = receptive_radius(config)
        self.overlap = self._default_overlap() if overlap is None else int(overlap)
        if self.overlap < 0:
            raise ConfigError(f"--overlap must be >= 0, got {overlap}")
        self.batch_size = (4 if self.device.type == "cuda" else 1) if batch_size is None else int(batch_size)
        if self.batch_size < 1:
            raise ConfigError(f"--batch-size must be >= 1, got {batch_size}")
        self.tile = self._default_tile() if tile is None else int(tile)
        if self.tile < 0:
            raise ConfigError(f"--tile must be >= 0 (0 = whole image), got {tile}")

    @classmethod
    def from_pretrained(cls, name_or_path, **options) -> "Upscaler":
        """An embedded model name (``photo-x4``, ``galaxy-x4``) or a ``.safetensors`` model file."""
        return cls(load_model(name_or_path, device="cpu"), **options)

    def __repr__(self):
        return (f"Upscaler(model={self.info.name!r}, scale={self.scale}, device={str(self.device)!r}, "
                f"precision={self.precision!r}, tile={self.tile}, overlap={self.overlap}, "
                f"batch_size={self.batch_size})")

    def _default_overlap(self) -> int:
        """FITS (science data): the receptive radius, tiled == whole. Photos (8/16-bit output):
        at most PHOTO_OVERLAP, which changes 0.004% of 8-bit values by one level for photo-x4
        (benchmarks/seams.py) and cuts the recomputed margin from 2.25x to 1.27x at 512^2 on the CPU."""
        return min(self.radius, PHOTO_OVERLAP) if self._is_photo_model() else self.radius

    def _default_tile(self) -> int:
        cfg = self.model.config
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

    def _run(self, src, out, pre, post, *, fn=None, tile=None, overlap=None, progress=False):
        """upscale_tiled with this upscaler's settings; CUDA OOM halves the tile and retries."""
        model_pass = fn is None
        fn = self._forward if model_pass else fn
        tile = self.tile if tile is None else tile
        overlap = self.overlap if overlap is None else overlap
        while True:
            try:
                return upscale_tiled(fn, src, out, scale=self.scale, tile=tile, overlap=overlap,
                                     batch_size=self.batch_size, device=self.device, pre=pre, post=post,
                                     channels_last=self.channels_last and model_pass, progress=progress)
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

    # --- images --------------------------------------------------------------------------

    def upscale(self, image, *, progress: bool = False):
        """Upscale a numpy array ((H, W) or (H, W, C); uint8, uint16 or float), a torch tensor
        ((C, H, W), (B, C, H, W) or (H, W)) or a PIL image; returns the same kind.

        Raises:
            InputError: unsupported dtype, shape or channel count.
            TypeError: any other kind of input.
        """
        if isinstance(image, np.ndarray):
            return self._upscale_numpy(image, progress)
        if isinstance(image, torch.Tensor):
            return self._upscale_tensor(image, progress)
        try:
            from PIL import Image
        except ImportError:  # pragma: no cover - pillow is a dependency
            Image = None
        if Image is not None and isinstance(image, Image.Image):
            return self._upscale_pil(image, progress)
        raise TypeError(f"upscale takes a numpy array, a torch tensor or a PIL image, got {type(image).__name__}")

    def _upscale_numpy(self, a: np.ndarray, progress: bool) -> np.ndarray:
        if a.ndim not in (2, 3) or min(a.shape[:2]) < 1:
            raise InputError(f"expected an (H, W) or (H, W, C) image array, got shape {a.shape}")
        chw = a[None] if a.ndim == 2 else a.transpose(2, 0, 1)  # a view, no copy
        if not self._is_photo_model():
            planes = self.upscale_planes(chw.astype(np.float32, copy=False), progress=progress)
            return planes[0] if a.ndim == 2 else planes.transpose(1, 2, 0)
        H, W = chw.shape[1:]
        out = np.empty((H * self.scale, W * self.scale, chw.shape[0]), a.dtype)
        self._upscale_chw(chw, out.transpose(2, 0, 1), progress)
        return out[..., 0] if a.ndim == 2 else out

    def _upscale_tensor(self, x: torch.Tensor, progress: bool) -> torch.Tensor:
        if x.ndim == 2:
            return self._upscale_tensor(x[None], progress)[0]
        if x.ndim == 4:
            return torch.stack([self._upscale_tensor(xb, progress) for xb in x])
        if x.ndim != 3 or min(x.shape[1:]) < 1:
            raise InputError(f"expected a (C, H, W) or (B, C, H, W) tensor, got shape {tuple(x.shape)}")
        if not self._is_photo_model():
            planes = self.upscale_planes(x.detach().float().cpu().numpy(), progress=progress)
            return torch.from_numpy(planes).to(x.device, x.dtype)
        C, H, W = x.shape
        out = torch.empty((C, H * self.scale, W * self.scale), dtype=x.dtype, device=x.device)
        self._upscale_chw(x.detach(), out, progress)
        return out

    def _upscale_pil(self, im, progress: bool):
        from PIL import Image

        if im.mode in ("P", "PA"):
            im = im.convert("RGBA" if im.mode == "PA" or "transparency" in im.info else "RGB")
        elif im.mode == "1":
            im = im.convert("L")
        elif im.mode in ("CMYK", "YCbCr", "LAB", "HSV", "RGBX", "RGBa"):
            im = im.convert("RGB")
        a = np.asarray(im)
        if im.mode == "I":  # 32-bit integer gray, typically 16-bit data
            if a.min() < 0 or a.max() > 65535:
                raise InputError("mode I image has values outside 0..65535: convert it to F (float) first")
            result = Image.fromarray(self._upscale_numpy(a.astype(np.uint16), progress).astype(np.int32))
        else:
            result = Image.fromarray(self._upscale_numpy(a.astype(a.dtype.newbyteorder("=")), progress))
        for key in ("icc_profile", "exif"):
            if key in im.info:
                result.info[key] = im.info[key]
        return result

    def _is_photo_model(self) -> bool:
        return self.info.normalization.kind == "unit"

    def _upscale_chw(self, src, out, progress: bool) -> None:
        """Photo path: src (C, H, W) integer or float pixels -> out (C, sH, sW), same dtype."""
        cin, cout = self.model.config.in_channels, self.model.config.out_channels
        if cin != cout:
            raise InputError(f"model maps {cin} to {cout} channels: use upscale_planes for such models")
        C = src.shape[0]
        has_alpha = (C in (2, 4)) if cin in (1, 3) else (C == cin + 1)
        colour = C - 1 if has_alpha else C
        if cin == 3 and colour not in (1, 3) or cin not in (1, 3) and colour != cin:
            raise InputError(f"the model takes {cin}-channel images; got {C} channels "
                             "(expected gray, gray+alpha, RGB or RGBA)")
        maxval = _integer_max(src.dtype)
        target = src.dtype if isinstance(src, torch.Tensor) else _torch_dtype(src.dtype)

        def to_unit(x):  # source dtype -> float in [0, 1]
            return x.float() if maxval is None else x.float() * (1 / maxval)

        def to_pixels(y):  # (B, c, sh, sw) network output -> stored values
            y = y.float().clamp_(0, 1)
            return y if maxval is None else (y * maxval).round_().to(target)

        def pre(x):  # (B, colour, h, w) source dtype -> (B', cin, h, w) in [0, 1]
            x = to_unit(x)
            if cin == 3 and colour == 1:
                return x.expand(-1, 3, -1, -1)
            if cin == 1 and colour > 1:
                return x.reshape(-1, 1, *x.shape[-2:])
            return x

        def post(y):
            if cin == 3 and colour == 1:
                y = y.mean(1, keepdim=True)  # gray in, gray out
            elif cin == 1 and colour > 1:
                y = y.reshape(-1, colour, *y.shape[-2:])
            return to_pixels(y)

        self._run(src[:colour], out[:colour], pre, post, progress=progress)
        if has_alpha:
            def bicubic(x):
                return F.interpolate(x, scale_factor=self.scale, mode="bicubic", align_corners=False)

            self._run(src[colour:], out[colour:], pre=to_unit, post=to_pixels, fn=bicubic,
                      tile=ALPHA_TILE, overlap=ALPHA_OVERLAP)

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

        return self._run(planes, out, pre, post, progress=progress)

    def _param(self, v):
        """A float, or per-plane values as a (1, C, 1, 1) tensor on the device."""
        if v is None or np.ndim(v) == 0:
            return 0.0 if v is None else float(v)
        return torch.as_tensor(np.asarray(v, np.float32), device=self.device).view(1, -1, 1, 1)

    # --- FITS / astropy (implemented in srgan.fits) --------------------------------------

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


def _torch_dtype(dtype: np.dtype) -> torch.dtype:
    return torch.from_numpy(np.empty(0, dtype.newbyteorder("="))).dtype


def _subsample(planes, max_pixels: int) -> np.ndarray:
    """A regular subsample of (C, H, W) planes with at most about ``max_pixels`` values."""
    step = max(1, math.ceil(math.sqrt(planes.size / max_pixels)))
    return np.asarray(planes[:, ::step, ::step], dtype=np.float32)
