"""Tiling options checked against the model and each image, before any big allocation.

``--overlap`` beyond the generator's receptive radius cannot change an srgan model's output
(for community models, whose radius is measured, not exact: beyond the image size), so it is clamped (with a warning,
not silently costing 100 GB); a tile much smaller than its margins mostly computes context
(warned); and on the CPU a pass whose activations would not fit the available memory is
refused with the option that fixes it, instead of swapping or being killed.
"""

from __future__ import annotations

import math
import os
import warnings

from srgan.errors import ConfigError, ModelError


def clamp_overlap(overlap: int, radius: int, exact: bool) -> int:
    """``overlap`` limited to the receptive ``radius`` when that is exact (srgan models): more
    margin gives bit-identical output at a quadratic cost. Warns when it clamps."""
    if exact and overlap > radius:
        warnings.warn(f"--overlap {overlap} is beyond the model's receptive radius ({radius} px), where more "
                      f"context cannot change the output; using {radius}", stacklevel=3)
        return radius
    return overlap


def overlap_for_image(overlap: int, height: int, width: int) -> int:
    """The margin used on an image by a model whose receptive radius is not known exactly
    (community models): at most the image's longer side."""
    return min(overlap, max(height, width))


def warn_small_tile(tile: int, overlap: int) -> None:
    """Warn when each window is mostly margin: (tile + 2 overlap)^2 / tile^2 > 4."""
    if tile > 0 and tile < 2 * overlap:
        ratio = ((tile + 2 * overlap) / tile) ** 2
        warnings.warn(f"--tile {tile} with {overlap} px of --overlap computes {ratio:.0f}x the pixels it keeps; "
                      f"use a --tile of at least {4 * overlap} (or 0, the whole image)", stacklevel=3)


def available_memory() -> int | None:
    """Bytes of memory available to a new allocation on this machine (None if unknown)."""
    try:
        with open("/proc/meminfo") as f:
            for line in f:
                if line.startswith("MemAvailable:"):
                    return int(line.split()[1]) * 1024
    except (OSError, ValueError, IndexError):
        pass
    try:
        return os.sysconf("SC_AVPHYS_PAGES") * os.sysconf("SC_PAGE_SIZE")
    except (ValueError, OSError, AttributeError):
        return None


def check_pass_memory(window_h: int, window_w: int, batch_size: int, per_pixel: int, tile: int,
                      available: int | None = None) -> None:
    """Raise ConfigError when one forward pass of ``batch_size`` windows needs more than the
    ``available`` memory (default: what the machine has free), naming --tile and --overlap."""
    need = window_h * window_w * batch_size * per_pixel
    available = available_memory() if available is None else available
    if available is None or need <= available:
        return
    fit = max(16, math.isqrt(available // (per_pixel * batch_size)) // 2)
    where = f"--tile {tile}" if tile > 0 else "--tile 0 (the whole image)"
    raise ConfigError(f"one pass over {window_w}x{window_h} px windows ({where}, --batch-size {batch_size}) needs "
                      f"about {need / 2**30:.1f} GiB of activations, {available / 2**30:.1f} GiB available: "
                      f"use --tile {fit} or less (and a smaller --overlap)")


def check_photo_model(upscaler) -> None:
    """Refuse a data (FITS) model for photos before any work: it expects asinh-stretched sky
    data, not [0, 1] pixels, and gives meaningless images (or a shape error) on a photo."""
    info = getattr(upscaler, "info", None)
    norm = getattr(getattr(info, "normalization", None), "kind", "unit")
    if norm == "unit":
        return
    cin = upscaler.model.config.in_channels
    name = getattr(info, "name", "the model")
    raise ModelError(f"{name} is a {cin}-channel FITS (astronomy) model for {norm}-stretched data, not for "
                     "photos: use a photo model (--model photo-x4) for photos, or give it FITS files")
