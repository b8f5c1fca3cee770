"""Photo adapters for :class:`srgan.upscale.Upscaler`: numpy, torch and PIL images in, the same kind out.

numpy -> numpy (same dtype and layout), torch -> torch (same dtype and device), PIL -> PIL
(same mode; palette images as RGB/RGBA, through :func:`srgan.imageio.pil_pixels`, the mode
table that reading files uses too).

Photo models (Normalization "unit") see RGB in [0, 1]: uint8 and uint16 are scaled by
1/255 and 1/65535 on the device and quantised back to the same dtype (16-bit data never goes
through 8 bits); float input is taken as already in [0, 1] and the output is clipped to
[0, 1]. A grayscale image goes through a 3-channel model as replicated RGB and comes back as
one channel (the mean of the three output channels); a 1-channel model runs each channel of
a colour image as its own plane. An alpha channel is kept and upscaled with bicubic
interpolation (``alpha="bicubic"``, the default) or by the model itself, run on the alpha
plane as a gray image (``alpha="model"``: sharper soft edges, one more model pass).

Data models (Normalization "asinh", e.g. for FITS) get float pixel values through
:meth:`Upscaler.upscale_planes <srgan.upscale.Upscaler.upscale_planes>`.

Every function takes the upscaler first and leaves tiling, device and precision to its
:meth:`~srgan.upscale.Upscaler.run_tiled`.
"""

from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F

from srgan.errors import InputError
from srgan.imageio import pil_pixels

ALPHA_TILE, ALPHA_OVERLAP = 1024, 2  # alpha is upscaled bicubically, which reaches 2 LR px
ALPHA_MODES = ("bicubic", "model")  # how an alpha channel is upscaled (--alpha)


def upscale_image(up, image, progress: bool = False, alpha: str = "bicubic"):
    """:meth:`Upscaler.upscale <srgan.upscale.Upscaler.upscale>`: dispatch on the kind of ``image``.

    Raises:
        TypeError: not a numpy array, torch tensor or PIL image.
    """
    if isinstance(image, np.ndarray):
        return upscale_array(up, image, progress, alpha)
    if isinstance(image, torch.Tensor):
        return upscale_tensor(up, image, progress, alpha)
    from PIL import Image

    if isinstance(image, Image.Image):
        return upscale_pil(up, image, progress, alpha)
    raise TypeError(f"upscale takes a numpy array, a torch tensor or a PIL image, got {type(image).__name__}")


def upscale_array(up, a: np.ndarray, progress: bool = False, alpha: str = "bicubic") -> np.ndarray:
    """(H, W) or (H, W, C) uint8, uint16 or float -> (sH, sW[, C]), same dtype (data models: float32)."""
    if a.ndim not in (2, 3) or min(a.shape[:2]) < 1:
        raise InputError(f"expected an (H, W) or (H, W, C) image array, got shape {a.shape}")
    chw = a[None] if a.ndim == 2 else a.transpose(2, 0, 1)  # a view, no copy
    if not up.is_photo_model:
        planes = up.upscale_planes(chw.astype(np.float32, copy=False), progress=progress)
        return planes[0] if a.ndim == 2 else planes.transpose(1, 2, 0)
    H, W = chw.shape[1:]
    out = np.empty((H * up.scale, W * up.scale, chw.shape[0]), a.dtype)
    upscale_pixels(up, chw, out.transpose(2, 0, 1), progress, alpha)
    return out[..., 0] if a.ndim == 2 else out


def upscale_tensor(up, x: torch.Tensor, progress: bool = False, alpha: str = "bicubic") -> torch.Tensor:
    """(C, H, W), (B, C, H, W) or (H, W) -> the same layout upscaled, same dtype and device."""
    if x.ndim == 2:
        return upscale_tensor(up, x[None], progress, alpha)[0]
    if x.ndim == 4:
        return torch.stack([upscale_tensor(up, xb, progress, alpha) for xb in x])
    if x.ndim != 3 or min(x.shape[1:]) < 1:
        raise InputError(f"expected a (C, H, W) or (B, C, H, W) tensor, got shape {tuple(x.shape)}")
    if not up.is_photo_model:
        planes = up.upscale_planes(x.detach().float().cpu().numpy(), progress=progress)
        return torch.from_numpy(planes).to(x.device, x.dtype)
    C, H, W = x.shape
    out = torch.empty((C, H * up.scale, W * up.scale), dtype=x.dtype, device=x.device)
    upscale_pixels(up, x.detach(), out, progress, alpha)
    return out


def upscale_pil(up, im, progress: bool = False, alpha: str = "bicubic"):
    """A PIL image -> a PIL image of the same mode (P/PA: RGB/RGBA, 1: L); ICC profile and EXIF kept."""
    from PIL import Image

    out = upscale_array(up, pil_pixels(im, name="PIL image"), progress, alpha)
    result = Image.fromarray(out.astype(np.int32) if im.mode == "I" else out)  # I stays I, not I;16
    for key in ("icc_profile", "exif"):
        if key in im.info:
            result.info[key] = im.info[key]
    return result


def upscale_pixels(up, src, out, progress: bool = False, alpha: str = "bicubic") -> None:
    """The photo path: ``src`` (C, H, W) integer or float pixels -> ``out`` (C, sH, sW), same dtype.

    ``src``/``out`` are numpy arrays or torch tensors (``out`` may be a strided view). The
    colour channels go through the model, an alpha channel through bicubic interpolation
    (``alpha="bicubic"``) or through the model as a gray image (``alpha="model"``).
    """
    if alpha not in ALPHA_MODES:
        raise InputError(f"--alpha must be one of {', '.join(ALPHA_MODES)}, got {alpha!r}")
    cin, cout = up.model.config.in_channels, up.model.config.out_channels
    if cin != cout:
        raise InputError(f"model maps {cin} to {cout} channels: use upscale_planes for such models")
    C = src.shape[0]
    has_alpha = (C in (2, 4)) if cin in (1, 3) else (C == cin + 1)
    colour = C - 1 if has_alpha else C
    if cin == 3 and colour not in (1, 3) or cin not in (1, 3) and colour != cin:
        raise InputError(f"the model takes {cin}-channel images; got {C} channels "
                         "(expected gray, gray+alpha, RGB or RGBA)")
    maxval = integer_max(src.dtype)
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

    up.run_tiled(src[:colour], out[:colour], pre, post, progress=progress)
    if has_alpha and alpha == "model":  # the alpha plane as a gray image through the model
        def pre_gray(x):
            x = to_unit(x)
            return x.expand(-1, cin, -1, -1) if cin > 1 else x

        def post_gray(y):
            return to_pixels(y.mean(1, keepdim=True) if y.shape[1] > 1 else y)

        up.run_tiled(src[colour:], out[colour:], pre_gray, post_gray, progress=progress)
    elif has_alpha:
        def bicubic(x):
            return F.interpolate(x, scale_factor=up.scale, mode="bicubic", align_corners=False)

        up.run_tiled(src[colour:], out[colour:], pre=to_unit, post=to_pixels, fn=bicubic,
                     tile=ALPHA_TILE, overlap=ALPHA_OVERLAP)


def integer_max(dtype) -> float | None:
    """255 for uint8, 65535 for uint16, None for floats (numpy or torch dtypes).

    Raises:
        InputError: any other pixel type.

    >>> integer_max(np.dtype(">u2")), integer_max(torch.float32)
    (65535.0, None)
    """
    name = dtype.name if isinstance(dtype, np.dtype) else str(dtype).replace("torch.", "")  # '>u2' -> uint16
    if name in ("uint8", "uint16"):
        return float(np.iinfo(name).max)
    if name in ("float16", "bfloat16", "float32", "float64"):
        return None
    raise InputError(f"unsupported pixel type {name}: expected uint8, uint16 or float")


def _torch_dtype(dtype: np.dtype) -> torch.dtype:
    return torch.from_numpy(np.empty(0, dtype.newbyteorder("="))).dtype
