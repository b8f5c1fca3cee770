"""Engine levers one at a time: each a single change to the tiled engine, timed against the
engine's defaults on the same weights and image, in the same process (issue 17).

Each lever is a :class:`Setup`: the ``Upscaler`` options (tile, batch size, precision), the
memory layout, ``cudnn.benchmark``, ``torch.compile`` (default, ``max-autotune``,
``reduce-overhead`` = CUDA graphs for the engine's fixed window shape) and how pixels move
between host and device:

  numpy     ``Upscaler.upscale(uint8 array)``, what ``srgan upscale`` runs: windows are read on
            the host, copied to the device per batch and each batch's output copied back.
  device    the image is copied to the device whole, windows are cut there, the output is
            assembled there and copied back once (``Upscaler.upscale`` on a device tensor).
  streamed  windows are read on the host into two pinned buffers and copied to the device on a
            second stream while the previous batch computes; output assembled on the device,
            copied back once (:func:`streamed_upscale`, a prototype for the engine).

Every lever runs on the same uint8 RGB image (scikit-image's astronaut resized to ``--size``)
and returns the uint8 upscaled image. Quality against the fp32 engine with TF32 off: PSNR of
the float output (data range 1) and the fraction of 8-bit output values that differ. The
one-tile loop of other tools (``throughput.one_tile_at_a_time``: tile 256 + pad 10, one tile
per pass, fp16 on a GPU) is timed in the same rounds, so each lever also gets its ratio to it.

Levers are measured in chunks: the plain ones together, each ``torch.compile`` lever alone with
the defaults (compile time is the first call, reported apart); times are medians of
interleaved rounds. The JSON is rewritten after every lever, so a run cut short keeps what
finished.

    python benchmarks/gpu_levers.py --json levers.json                  # a GPU: 2048^2 LR
    python benchmarks/gpu_levers.py --skip-compile --size 1024
    python benchmarks/gpu_levers.py --base-tile 512 --base-batch 8     # levers on top of another base
    python benchmarks/gpu_levers.py --smoke                             # tiny model on the CPU: seconds
"""

from __future__ import annotations

import contextlib
import copy
import time
from dataclasses import asdict, dataclass, replace

import numpy as np
import torch

from srgan.metrics import psnr_data
from srgan.tiling import plan_tiles, read_window, window_size
from srgan.upscale import Upscaler

from common import parse, parser, setup_device
from throughput import (conv_flops_per_output_pixel, default_model, engine_work, machine_info, machine_line,
                        matmul_peak, measure, one_tile_at_a_time, sync, test_image, write_json)

IO_MODES = ("numpy", "device", "streamed")
COMPILE_MODES = ("default", "max-autotune", "reduce-overhead")


@dataclass(frozen=True)
class Setup:
    """One way of running the engine; ``None`` leaves the Upscaler's default."""

    tile: int | None = None  # LR px; 0 = whole image in one window
    batch_size: int | None = None  # windows per forward pass
    precision: str = "auto"  # auto (bf16 on a GPU, fp32 on the CPU), fp32, fp16, bf16
    channels_last: bool = True  # the engine's layout; False = NCHW
    cudnn_benchmark: bool = False  # cuDNN autotuning of the convolutions
    compile_mode: str | None = None  # torch.compile mode (COMPILE_MODES); None = eager
    io: str = "numpy"  # IO_MODES

    def __post_init__(self):
        if self.io not in IO_MODES:
            raise ValueError(f"io must be one of {IO_MODES}, got {self.io!r}")
        if self.compile_mode is not None and self.compile_mode not in COMPILE_MODES:
            raise ValueError(f"compile_mode must be one of {COMPILE_MODES}, got {self.compile_mode!r}")


@dataclass(frozen=True)
class Lever:
    id: str  # short name for --only
    label: str  # what changed, for the table
    setup: Setup


def lever_list(base: Setup, precision: str, gpu: bool, smoke: bool) -> list[Lever]:
    """The defaults, then one change at a time: tile sizes; one window per pass; batch sizes at
    tile 512 (a 2048^2 image has 16 such windows, 4 at the default tile); the other precisions
    (``precision`` is what the defaults resolve to; no fp16 on a CPU); NCHW; cuDNN autotuning;
    the other host/device copy modes; the torch.compile modes."""
    r = replace
    tiles, tile_b, batches = ((8, 0), 8, (4,)) if smoke else ((256, 512, 1024, 0), 512, (1, 8, 16))
    levers = [Lever("defaults", "defaults", base)]
    levers += [Lever(f"tile{t}", f"tile {t}" if t else "whole image (tile 0)", r(base, tile=t)) for t in tiles]
    levers.append(Lever("batch1", "batch 1", r(base, batch_size=1)))
    levers += [Lever(f"tile{tile_b}-batch{b}", f"tile {tile_b}, batch {b}", r(base, tile=tile_b, batch_size=b))
               for b in batches]
    others = [p for p in (("fp32", "bf16", "fp16") if gpu else ("fp32", "bf16")) if p != precision]
    levers += [Lever(p, f"precision {p}", r(base, precision=p)) for p in others]
    levers.append(Lever("nchw" if base.channels_last else "channels-last",
                        "NCHW" if base.channels_last else "channels_last", r(base, channels_last=not base.channels_last)))
    if gpu:
        levers.append(Lever("cudnn-benchmark", "cudnn.benchmark", r(base, cudnn_benchmark=True)))
    levers += [Lever(f"io-{io}", f"io {io}", r(base, io=io)) for io in IO_MODES if io != base.io]
    levers += [Lever("compile" if m == "default" else f"compile-{m}", f"torch.compile {m}", r(base, compile_mode=m))
               for m in COMPILE_MODES if m != base.compile_mode]
    return levers


# ----------------------------------------------------------------------------- running a setup


class Runner:
    """An Upscaler built for a Setup; ``run(image)`` upscales an (H, W, 3) numpy image."""

    def __init__(self, model, setup: Setup, device: torch.device, compile_backend: str = "inductor"):
        self.setup = setup
        up = Upscaler(copy.deepcopy(model), device=device, precision=setup.precision, tile=setup.tile,
                      batch_size=setup.batch_size)
        if not setup.channels_last:
            up.channels_last = False
            up.model = up.model.to(memory_format=torch.contiguous_format)
        if setup.compile_mode is not None:
            mode = {} if setup.compile_mode == "default" else {"mode": setup.compile_mode}
            up.model = torch.compile(up.model, backend=compile_backend, dynamic=False, **mode)
        self.up = up

    def run(self, image: np.ndarray) -> np.ndarray:
        with _cudnn_benchmark(self.setup.cudnn_benchmark):
            if self.setup.io == "numpy":
                return self.up.upscale(image)
            if self.setup.io == "device":
                return device_upscale(self.up, image)
            return streamed_upscale(self.up, image)


@contextlib.contextmanager
def _cudnn_benchmark(on: bool):
    before = torch.backends.cudnn.benchmark
    torch.backends.cudnn.benchmark = on or before
    try:
        yield
    finally:
        torch.backends.cudnn.benchmark = before


@contextlib.contextmanager
def no_tf32():
    """True fp32 convolutions and matmuls on a GPU (cuDNN uses TF32 for fp32 by default)."""
    before = torch.backends.cudnn.allow_tf32, torch.backends.cuda.matmul.allow_tf32
    torch.backends.cudnn.allow_tf32 = torch.backends.cuda.matmul.allow_tf32 = False
    try:
        yield
    finally:
        torch.backends.cudnn.allow_tf32, torch.backends.cuda.matmul.allow_tf32 = before


def _host_copy(y: torch.Tensor) -> np.ndarray:
    """(H, W, C) device tensor -> numpy, through page-locked memory on CUDA (torch caches it)."""
    y = y.contiguous()
    if y.device.type != "cuda":
        return y.numpy()
    host = torch.empty(y.shape, dtype=y.dtype, pin_memory=True)
    host.copy_(y)  # blocking: the result is complete when this returns
    return host.numpy()


def device_upscale(up: Upscaler, image: np.ndarray) -> np.ndarray:
    """The image to the device whole, windows cut and output assembled there, one copy back."""
    x = torch.from_numpy(np.ascontiguousarray(image)).to(up.device).permute(2, 0, 1)
    return _host_copy(up.upscale(x).permute(1, 2, 0))


def _forward(up: Upscaler, x: torch.Tensor) -> torch.Tensor:
    if up.autocast_dtype is None:
        return up.model(x)
    with torch.autocast(up.device.type, dtype=up.autocast_dtype):
        return up.model(x).float()


def streamed_upscale(up: Upscaler, image: np.ndarray) -> np.ndarray:
    """Tiled upscaling of an (H, W, 3) uint8 or float [0, 1] image with host->device copies
    overlapping compute: windows are read into one of two pinned host buffers and copied on a
    second stream while the previous batch computes; cores are pasted into an output on the
    device, copied back once. Same tiles, overlap and arithmetic as ``up.upscale``.

    On the CPU there are no streams or pinned memory: the same steps run in order.
    """
    dev, s, o, B = up.device, up.scale, up.overlap, up.batch_size
    cuda = dev.type == "cuda"
    H, W, C = image.shape
    src = image.transpose(2, 0, 1)  # (C, H, W) view
    tiles = plan_tiles(H, W, up.tile)
    th, tw = window_size(H, up.tile), window_size(W, up.tile)
    groups = [tiles[i:i + B] for i in range(0, len(tiles), B)]
    dtype = torch.from_numpy(image[:0, :0]).dtype
    maxval = 255.0 if image.dtype == np.uint8 else None
    shape = (min(B, len(tiles)), C, th + 2 * o, tw + 2 * o)
    host = [torch.empty(shape, dtype=dtype, pin_memory=cuda) for _ in range(2)]
    staged = [torch.empty(shape, dtype=dtype, device=dev) for _ in range(2)]
    out = torch.empty((C, H * s, W * s), dtype=dtype, device=dev)
    copy_stream = torch.cuda.Stream(dev) if cuda else None
    compute = torch.cuda.current_stream(dev) if cuda else None
    copied, consumed = [None, None], [None, None]  # CUDA events per slot: copy done, compute done with it
    with torch.inference_mode():
        for k, group in enumerate(groups):
            slot, n = k % 2, len(group)
            if copied[slot] is not None:
                copied[slot].synchronize()  # this host buffer's previous copy is done: refill it
            for b, t in enumerate(group):
                host[slot][b].numpy()[...] = read_window(src, t.y, t.x, th, tw, o)
            with torch.cuda.stream(copy_stream) if cuda else contextlib.nullcontext():
                if consumed[slot] is not None:
                    copy_stream.wait_event(consumed[slot])  # the device buffer's last batch is computed
                staged[slot][:n].copy_(host[slot][:n], non_blocking=cuda)
                copied[slot] = copy_stream.record_event() if cuda else None
            if cuda:
                compute.wait_event(copied[slot])
            x = staged[slot][:n].float()
            x = x * (1 / maxval) if maxval else x
            y = _forward(up, x.contiguous(memory_format=torch.channels_last) if up.channels_last else x)
            y = y.float().clamp_(0, 1)
            y = (y * maxval).round_().to(dtype) if maxval else y
            consumed[slot] = compute.record_event() if cuda else None
            for b, t in enumerate(group):
                out[:, t.y0 * s:t.y1 * s, t.x0 * s:t.x1 * s] = \
                    y[b, :, (o + t.y0 - t.y) * s:(o + t.y1 - t.y) * s, (o + t.x0 - t.x) * s:(o + t.x1 - t.x) * s]
    return _host_copy(out.permute(1, 2, 0))


# ----------------------------------------------------------------------------- measuring


def quality(run, image_u8: np.ndarray, image_f: np.ndarray, ref_f: np.ndarray, out_u8: np.ndarray) -> dict:
    """PSNR of the float output against the fp32 reference, and 8-bit values that differ from it."""
    out_f = run(image_f)
    ref_u8 = np.round(np.clip(ref_f, 0, 1) * 255).astype(np.uint8)
    diff = np.abs(out_u8.astype(np.int16) - ref_u8.astype(np.int16))
    max_abs = float(np.abs(out_f - ref_f).max())
    return {"psnr_db": psnr_data(out_f, ref_f, data_range=1.0) if max_abs > 0 else None,  # None: identical
            "max_abs_diff": max_abs, "uint8_changed_fraction": float((diff > 0).mean()),
            "uint8_max_diff": int(diff.max())}


def _error_line(e: BaseException) -> str:
    lines = str(e).strip().splitlines()
    return f"{type(e).__name__}: {lines[0][:300] if lines else ''}"


def _row_setup(runner: Runner, size: int) -> dict:
    up = runner.up
    return {"tile": up.tile, "overlap": up.overlap, "batch_size": up.batch_size, "precision": up.precision,
            "work": round(engine_work(up, size, size), 4)}


def parse_args(argv=None):
    p = parser(__doc__)
    p.add_argument("--size", type=int, default=2048, help="LR side of the test image [default: 2048]")
    p.add_argument("--device", default="auto")
    p.add_argument("--model", default=None, help="model name or .safetensors [default: photo-x4, else random-init]")
    p.add_argument("--repeats", type=int, default=3, help="timing rounds per chunk [default: 3]")
    p.add_argument("--budget", type=float, default=60.0, help="seconds per chunk after which no new round "
                   "starts [default: 60]")
    p.add_argument("--only", default="", help="lever ids, comma-separated (defaults always run); see the table")
    p.add_argument("--skip-compile", action="store_true", help="leave out the torch.compile levers")
    p.add_argument("--compile-backend", default="inductor", help="torch.compile backend [default: inductor; "
                   "smoke: eager]")
    p.add_argument("--base-tile", type=int, default=None, help="the defaults' tile [default: the engine's]")
    p.add_argument("--base-batch", type=int, default=None, help="the defaults' batch size [default: the engine's]")
    p.add_argument("--base-precision", default="auto")
    p.add_argument("--base-io", choices=IO_MODES, default="numpy")
    p.add_argument("--base-compile", choices=COMPILE_MODES, default=None)
    return parse(p, argv, "tiny model and image, one round, eager compile: seconds")


def main(argv=None) -> dict:
    args = parse_args(argv)
    device = setup_device(args)
    gpu = device.type == "cuda"
    size, repeats = (40, 1) if args.smoke else (args.size, args.repeats)
    backend = "eager" if args.smoke else args.compile_backend
    warmup = 1 if gpu else 0
    machine = machine_info(device)
    device_name = machine["gpu"] or f"cpu: {machine['cpu']}"
    print(machine_line(machine))
    model, model_info = default_model(args.model, args.smoke)
    flops = conv_flops_per_output_pixel(model)
    peak = matmul_peak(device, 256 if args.smoke else None)
    # pin the engine's default tile once: later Upscalers would size it from less free memory
    probe = Upscaler(copy.deepcopy(model), device=device, precision=args.base_precision, batch_size=args.base_batch)
    base = Setup(tile=probe.tile if args.base_tile is None else args.base_tile, batch_size=probe.batch_size,
                 precision=args.base_precision, io=args.base_io, compile_mode=args.base_compile)
    precision = {None: "fp32", torch.bfloat16: "bf16", torch.float16: "fp16"}[probe.autocast_dtype]
    del probe
    levers = lever_list(base, precision, gpu, args.smoke)
    known = {lv.id for lv in levers}
    only = {i for i in args.only.split(",") if i}
    if only - known:
        raise SystemExit(f"--only: unknown lever ids {sorted(only - known)}; known: {', '.join(sorted(known))}")
    levers = [lv for lv in levers if lv.id == "defaults" or not only or lv.id in only]
    if args.skip_compile:
        levers = [lv for lv in levers if lv.setup.compile_mode is None or lv.id == "defaults"]
    image = test_image(size)
    image_f = image.astype(np.float32) * np.float32(1 / 255)
    out_mpix = (size * model.config.scale) ** 2 / 1e6
    print(f"model: {model_info['name']}; {flops:,.0f} FLOP per output pixel; matmul peak "
          f"{peak['flops_per_s'] / 1e12:.1f} TFLOP/s ({peak['dtype']}); image {size}^2 LR -> {out_mpix:.1f} MPix")
    print(f"defaults: {base}")

    with no_tf32():
        reference = Upscaler(copy.deepcopy(model), device=device, precision="fp32", tile=base.tile,
                             batch_size=base.batch_size).upscale(image_f)  # float (H', W', 3), clipped to [0, 1]
    record = {"benchmark": "gpu_levers", "device": device_name, "machine": machine, "model": model_info,
              "size": size, "output_mpix": out_mpix, "flops_per_output_pixel": flops, "matmul_peak": peak,
              "base": asdict(base), "compile_backend": backend,
              "reference": "the fp32 engine with the defaults' tiles, TF32 off", "levers": []}

    one_tile_model = copy.deepcopy(model).to(device=device, memory_format=torch.contiguous_format)
    one_tile_model = one_tile_model.half() if gpu else one_tile_model
    one_tile_args = (16, 4) if args.smoke else (256, 10)

    def one_tile(im):
        return one_tile_at_a_time(one_tile_model, im, device, *one_tile_args, half=gpu)

    defaults = Runner(model, base, device, backend)
    chunks = [[lv for lv in levers if lv.setup.compile_mode is None and lv.id != "defaults"]]
    chunks += [[lv] for lv in levers if lv.setup.compile_mode is not None and lv.id != "defaults"]
    one_tile_rate = None
    print(f"\n{'lever':>28} {'MPix/s':>9} {'x defaults':>10} {'x one-tile':>10} {'work':>5} {'PSNR dB':>8} "
          f"{'8-bit changed':>13} {'first call s':>12} {'CUDA MB':>8}")
    for c, chunk in enumerate(chunks):
        runners, rows = {}, {}
        entries = ([Lever("defaults", "defaults", base)] if c == 0 else []) + chunk
        for lv in entries:
            row = {"id": lv.id, "label": lv.label, "setup": asdict(lv.setup), "chunk": c}
            try:
                runner = defaults if lv.id == "defaults" else Runner(model, lv.setup, device, backend)
                sync(device)
                t0 = time.perf_counter()
                out = runner.run(image)  # first call: compile / autotune / warm-up, timed apart
                sync(device)
                row["first_call_s"] = round(time.perf_counter() - t0, 3)
                row.update(_row_setup(runner, size), **quality(runner.run, image, image_f, reference, out))
                runners[lv.id] = runner
            except Exception as e:  # one lever failing (e.g. a compile error) must not stop the others
                row["error"] = _error_line(e)
                print(f"{lv.label:>28} error: {row['error']}", flush=True)
                record["levers"].append(row)
                write_json(args.json, record, quiet=True)
                _reset_compile(lv)
                continue
            rows[lv.id] = row
        fns = {"defaults": defaults.run, **{i: r.run for i, r in runners.items() if i != "defaults"}}
        if c == 0:
            fns["one-tile"] = one_tile
        stats = measure({i: (lambda f=f: f(image)) for i, f in fns.items()}, device, repeats, warmup, args.budget,
                        on_error=lambda name, e: _error_line(e))
        if c == 0 and "skipped" not in stats["one-tile"]:
            one_tile_rate = out_mpix / stats["one-tile"]["seconds"]
            record["one_tile"] = {"tile": one_tile_args[0], "pad": one_tile_args[1],
                                  "precision": "fp16" if gpu else "fp32", "mpix_per_s": one_tile_rate,
                                  **stats["one-tile"]}
        base_s = stats["defaults"].get("seconds")
        for lid, row in rows.items():
            st = stats[lid]
            row.update(st)
            if "skipped" in st:
                row["error"] = st["skipped"]
            else:
                row["mpix_per_s"] = out_mpix / st["seconds"]
                row["speedup"] = base_s / st["seconds"] if base_s else None
                row["over_one_tile"] = row["mpix_per_s"] / one_tile_rate if one_tile_rate else None
                row["fraction_of_peak"] = row["mpix_per_s"] * 1e6 * flops / peak["flops_per_s"]
                row["compile_s"] = round(max(row["first_call_s"] - st["seconds"], 0.0), 3)
            if lid != "defaults" or c == 0:
                record["levers"].append(row)
                _print_row(row)
        write_json(args.json, record, quiet=True)
        for lv in chunk:
            runners.pop(lv.id, None)
            _reset_compile(lv)
    if one_tile_rate:
        print(f"{'one-tile loop':>28} {one_tile_rate:>9.3f}")
    write_json(args.json, record)
    print()
    for row in record["levers"]:
        if "error" in row:
            print(f"LEVER id={row['id']} error={row['error']!r}")
        else:
            psnr = "same" if row["psnr_db"] is None else round(row["psnr_db"], 1)
            print(f"LEVER id={row['id']} mpix_s={row['mpix_per_s']:.4g} speedup={_fmt(row['speedup'])} "
                  f"over_one_tile={_fmt(row['over_one_tile'])} psnr_db={psnr} first_call_s={row['first_call_s']}")
    return record


def _reset_compile(lever: Lever) -> None:
    """Drop compiled graphs and cached memory after a compile lever (each compiles afresh)."""
    if lever.setup.compile_mode is not None:
        torch._dynamo.reset()
    if torch.cuda.is_available():
        torch.cuda.empty_cache()


def _fmt(v) -> str:
    return "n/a" if v is None else f"{v:.2f}"


def _print_row(row: dict) -> None:
    if "error" in row:
        print(f"{row['label']:>28} error: {row['error']}", flush=True)
        return
    psnr = "same" if row["psnr_db"] is None else f"{row['psnr_db']:.1f}"
    cuda = row.get("cuda_max_allocated_mb")
    print(f"{row['label']:>28} {row['mpix_per_s']:>9.3f} {_fmt(row['speedup']):>10} {_fmt(row['over_one_tile']):>10} "
          f"{row['work']:>5.2f} {psnr:>8} {100 * row['uint8_changed_fraction']:>12.3f}% {row['first_call_s']:>12.1f} "
          f"{cuda if cuda is not None else '-':>8}", flush=True)


if __name__ == "__main__":
    main()
