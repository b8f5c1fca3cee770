"""Tile-by-tile inference: any image size in bounded memory, identical to one whole pass.

An LR image (C, H, W) is cut into tiles of ``tile`` LR pixels; each tile is read together
with an ``overlap`` margin of context on every side, the network runs on ``batch_size``
windows per forward pass, and only each window's core (the tile itself, times the scale) is
pasted into the output. Beyond the image border the context is the image mirrored
(``reflect``, repeated for images thinner than the margin; a 1-px strip is replicated),
never zeros.

Whole-image inference is defined the same way: the network applied once to the image
reflect-padded by ``overlap``, cropped back. Pixels of a tile's core are at least
``overlap`` LR px from its window edge, so when ``overlap >= receptive_radius(config)``
(and BatchNorm is in eval mode) they never see the network's internal zero padding and the
tiled result equals the whole-image one up to float rounding. A smaller overlap is faster
and leaves faint seams (measured in the README).

The source is only read window by window, so a numpy memmap is never loaded whole; the
output is pasted into ``out`` (a numpy array, a memmap or a tensor) allocated once by the
caller. ``pre`` and ``post`` map pixel values to the network's space and back on the
device (dtype conversion, normalisation, channel replication, quantisation).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Callable

import numpy as np
import torch

from srgan.errors import ConfigError


def reflect_index(start: int, stop: int, size: int) -> np.ndarray:
    """Source indices for positions ``start .. stop-1`` of an axis of length ``size``.

    Outside ``[0, size)`` positions are mirrored about the edge pixels (numpy/torch
    ``reflect``), repeatedly when the margin exceeds the image; a 1-px axis is replicated.

    >>> reflect_index(-3, 6, 4).tolist()
    [3, 2, 1, 0, 1, 2, 3, 2, 1]
    """
    i = np.arange(start, stop)
    if size == 1:
        return np.zeros_like(i)
    period = 2 * (size - 1)
    i = np.mod(i, period)
    return np.where(i >= size, period - i, i)


def reflect_pad(x, pad: int):
    """Pad the last two axes of ``x`` (numpy array or tensor, (..., H, W)) by ``pad`` on
    every side with :func:`reflect_index` semantics (works for any size, even 1 px)."""
    h, w = x.shape[-2:]
    rows = reflect_index(-pad, h + pad, h)
    cols = reflect_index(-pad, w + pad, w)
    if isinstance(x, torch.Tensor):
        rows_t = torch.as_tensor(rows, device=x.device)
        cols_t = torch.as_tensor(cols, device=x.device)
        return x.index_select(-2, rows_t).index_select(-1, cols_t)
    return x[..., rows, :][..., cols]


@dataclass(frozen=True)
class Tile:
    """One tile: the window origin (top-left of the tile proper, before the margin) and the
    core it owns in the LR image, ``[y0, y1) x [x0, x1)``."""

    y: int
    x: int
    y0: int
    y1: int
    x0: int
    x1: int


def window_size(size: int, tile: int, align: int = 1) -> int:
    """Window length along an axis of ``size`` px for tiles of at most ``tile`` px.

    The fewest windows that cover the axis, made as equal as possible (rounded up to a
    multiple of 8, which convolution kernels like), so no window recomputes much of its
    neighbour: 2048 px with tile 1216 gives two 1024-px windows, not 1216 + 1216.
    ``align`` > 1 (``size`` a multiple of it): a multiple of ``align`` too, at least ``align``.

    >>> window_size(2048, 1216), window_size(1000, 448), window_size(300, 512), window_size(7, 0)
    (1024, 336, 300, 7)
    >>> window_size(96, 40, align=16), window_size(96, 8, align=16)
    (32, 16)
    """
    if tile <= 0 or tile >= size:
        return size
    if align > 1:
        tile = max(tile // align * align, align)
        if tile >= size:
            return size
    n = math.ceil(size / tile)
    m = math.lcm(8, align)
    return min(tile, -(-math.ceil(size / n) // m) * m)


def _spans(size: int, tile: int, align: int = 1) -> list[tuple[int, int, int]]:
    """(start, core_start, core_stop) along one axis; every window has length window_size(size, tile, align)."""
    tile = window_size(size, tile, align)
    if tile >= size:
        return [(0, 0, size)]
    starts = list(range(0, size - tile, tile)) + [size - tile]  # last window flush with the edge
    spans, prev = [], 0
    for s in starts:
        spans.append((s, prev, s + tile))
        prev = s + tile
    return spans


def plan_tiles(height: int, width: int, tile: int, align: int = 1) -> list[Tile]:
    """Tiles covering an (height, width) image in row-major order.

    All windows have the same size (``window_size`` of each axis), so any number of them can
    be stacked into one batch: the last tile of a row or column is shifted back to end at
    the image edge and owns only the pixels not owned yet. ``tile=0`` gives one tile.
    ``align`` > 1 (height and width multiples of it): every tile starts on a multiple of it.

    >>> [(t.y, t.y0, t.y1) for t in plan_tiles(10, 4, 4)]
    [(0, 0, 4), (4, 4, 8), (6, 8, 10)]
    """
    return [Tile(y, x, y0, y1, x0, x1)
            for y, y0, y1 in _spans(height, tile, align)
            for x, x0, x1 in _spans(width, tile, align)]


def read_window(src, y: int, x: int, h: int, w: int, margin: int):
    """Rows ``y-margin .. y+h+margin`` and columns ``x-margin .. x+w+margin`` of ``src``
    ((C, H, W) numpy array, memmap or tensor), mirrored beyond the border.

    Reads only the in-bounds box around the window (a plain slice for interior tiles),
    so a memmapped source is never loaded whole.

    Returns:
        (C, h + 2 margin, w + 2 margin), same type and dtype as ``src``.
    """
    H, W = src.shape[-2:]
    rows = reflect_index(y - margin, y + h + margin, H)
    cols = reflect_index(x - margin, x + w + margin, W)
    r0, r1, c0, c1 = rows.min(), rows.max() + 1, cols.min(), cols.max() + 1
    block = src[:, r0:r1, c0:c1]
    row_slice = np.array_equal(rows, np.arange(r0, r1))  # interior: no mirrored rows
    col_slice = np.array_equal(cols, np.arange(c0, c1))
    if isinstance(src, torch.Tensor):
        if not row_slice:
            block = block.index_select(1, torch.as_tensor(rows - r0, device=src.device))
        if not col_slice:
            block = block.index_select(2, torch.as_tensor(cols - c0, device=src.device))
        return block
    if not row_slice:
        block = block[:, rows - r0]
    if not col_slice:
        block = block[:, :, cols - c0]
    return block


def _to_device(windows: list, device: torch.device) -> torch.Tensor:
    """Stack windows into (B, C, h, w) on ``device``; pinned, non-blocking copies on CUDA."""
    if isinstance(windows[0], torch.Tensor):
        return torch.stack(windows).to(device, non_blocking=True)
    dtype = windows[0].dtype.newbyteorder("=")  # FITS memmaps are big-endian
    shape = (len(windows),) + windows[0].shape
    if device.type == "cuda":  # stack straight into page-locked memory (torch caches it)
        buf = torch.empty(shape, dtype=torch.from_numpy(np.empty(0, dtype)).dtype, pin_memory=True)
        np.stack(windows, out=buf.numpy())
        return buf.to(device, non_blocking=True)
    batch = np.empty(shape, dtype)
    np.stack(windows, out=batch)
    x = torch.from_numpy(batch)
    return x if device.type == "cpu" else x.to(device)


def _paste(out, y_core: torch.Tensor, rows: slice, cols: slice) -> None:
    if isinstance(out, torch.Tensor):
        out[:, rows, cols] = y_core.to(out.device, out.dtype)
    else:
        out[:, rows, cols] = y_core.numpy()


def upscale_tiled(
    fn: Callable[[torch.Tensor], torch.Tensor],
    src,
    out,
    *,
    scale: int,
    tile: int = 0,
    overlap: int = 0,
    batch_size: int = 1,
    device="cpu",
    pre: Callable[[torch.Tensor], torch.Tensor] | None = None,
    post: Callable[[torch.Tensor], torch.Tensor] | None = None,
    channels_last: bool = False,
    progress: bool = False,
    align: int = 1,
):
    """Run ``fn`` tile by tile over ``src`` and paste the result into ``out``.

    Args:
        fn: the network, (B, C', h, w) -> (B, C'', h*scale, w*scale), in network space.
        src: (C, H, W) numpy array, memmap or tensor, any dtype; read window by window.
        out: (C_out, H*scale, W*scale) numpy array, memmap or tensor; written core by core
            (values are cast to its dtype on assignment).
        scale: the upscaling factor of ``fn``.
        tile: tile size in LR pixels (0: the whole image in one window).
        overlap: context margin in LR pixels on every side of a tile.
        batch_size: windows per forward pass.
        device: where ``pre``, ``fn`` and ``post`` run.
        pre: (B, C, h', w') source-dtype tensor on ``device`` -> network input. Default: float32.
        post: network output -> (B, C_out, h'*scale, w'*scale) values to store. Default: identity.
        channels_last: hand ``fn`` channels-last input (faster convolutions on most devices).
        progress: show a tqdm bar over tiles when there are several batches.
        align: start every window on this grid of the (whole-image) window, for networks
            whose output depends on where their own windows fall (window attention, pixel
            unshuffle; see ``srgan.community``), so that every window partitions the image
            on the same grid as the whole-image pass: ``overlap`` is rounded up to a multiple
            of ``align`` and the image is planned as if extended by reflection to one (the
            extension is read mirrored like any margin and never pasted). 1 = the plain plan.

    Returns:
        ``out``.
    """
    if src.ndim != 3:
        raise ConfigError(f"tiling expects a (C, H, W) source, got shape {tuple(src.shape)}")
    if tile < 0 or overlap < 0 or batch_size < 1 or align < 1:
        raise ConfigError(f"need tile >= 0, overlap >= 0, batch_size >= 1, align >= 1; "
                          f"got {tile}, {overlap}, {batch_size}, {align}")
    _, H, W = src.shape
    if out.shape[-2:] != (H * scale, W * scale):
        raise ConfigError(f"out must be (C, {H * scale}, {W * scale}), got {tuple(out.shape)}")
    device = torch.device(device)
    pre = pre or (lambda t: t.float())
    post = post or (lambda t: t)
    Ha, Wa = -(-H // align) * align, -(-W // align) * align  # = H, W when align is 1
    overlap = -(-overlap // align) * align
    tiles = plan_tiles(Ha, Wa, tile, align)
    th, tw = window_size(Ha, tile, align), window_size(Wa, tile, align)
    o, s = overlap, scale
    batches = [tiles[i:i + batch_size] for i in range(0, len(tiles), batch_size)]
    bar = None
    if progress and len(batches) > 1:
        from tqdm.auto import tqdm

        bar = tqdm(total=len(tiles), unit="tile", leave=False, desc="tiles")

    def finish(pending):
        """Paste a computed batch; on CUDA waits for its device->host copy first."""
        y, event, group = pending
        if event is not None:
            event.synchronize()
        for b, t in enumerate(group):
            y1, x1 = min(t.y1, H), min(t.x1, W)  # cores end at the image, not at its aligned extension
            core = y[b, :, (o + t.y0 - t.y) * s:(o + y1 - t.y) * s, (o + t.x0 - t.x) * s:(o + x1 - t.x) * s]
            _paste(out, core, slice(t.y0 * s, y1 * s), slice(t.x0 * s, x1 * s))
        if bar is not None:
            bar.update(len(group))

    # One batch in flight: while the device computes batch k, the host reads the windows of
    # batch k+1 and pastes batch k-1 (CUDA work is asynchronous until the event wait).
    pending = None
    try:
        with torch.inference_mode():
            for group in batches:
                windows = [read_window(src, t.y, t.x, th, tw, o) for t in group]
                x = pre(_to_device(windows, device))
                if channels_last:
                    x = x.contiguous(memory_format=torch.channels_last)
                y = post(fn(x))
                event = None
                if y.device.type == "cuda" and not (isinstance(out, torch.Tensor) and out.device == y.device):
                    y = y.to("cpu", non_blocking=True)
                    event = torch.cuda.Event()
                    event.record()
                elif not isinstance(out, torch.Tensor):
                    y = y.cpu()
                if pending is not None:
                    finish(pending)
                pending = (y, event, group)
            if pending is not None:
                finish(pending)
    finally:
        if bar is not None:
            bar.close()
    return out


def bytes_per_pixel(channels: int, scale: int, half: bool = False) -> int:
    """Rough peak activation memory of an SRResNet per LR window pixel during inference.

    The upsampling stages dominate: a (4C)-channel conv output and the PixelShuffle copy on
    the fine grid, plus the input of the next op, about 3 C scale^2 values. Measured on the
    CPU for C=64, x4: 12 KB per LR pixel (this formula: 12.3 KB).
    """
    return 3 * channels * scale * scale * (2 if half else 4)


def auto_tile(budget_bytes: float, per_pixel: int, overlap: int, batch_size: int = 1,
              multiple: int = 32, min_tile: int = 32, max_tile: int = 2048) -> int:
    """Largest tile (a multiple of ``multiple``) whose ``batch_size`` windows of
    (tile + 2 overlap)^2 pixels fit ``budget_bytes`` at ``per_pixel`` bytes each."""
    window = math.isqrt(max(int(budget_bytes / (per_pixel * batch_size)), 1))
    tile = (window - 2 * overlap) // multiple * multiple
    return int(min(max(tile, min_tile), max_tile))
