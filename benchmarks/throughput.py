"""Upscaling throughput: output MPix/s and peak memory of the default x4 photo model.

Ways of running the same weights on the same images, in the same process:

  (a) whole       one forward pass on the whole image (where it fits in memory), with the
                  engine's precision and memory layout: the plain PyTorch reference.
  (b) engine      ``srgan.Upscaler`` with its defaults (tile, overlap, batch size, precision:
                  bf16 autocast for photos on a CPU with native bf16, channels_last): what
                  ``srgan upscale`` runs.
  (b') engine-fp32 the same engine with ``precision="fp32"``: the CPU engine before bf16
                  (only where the default is not fp32 already); the reference for PSNR and
                  the fraction of 8-bit values that differ by more than one level.
  (c) one-tile    the usual approach of other tools (Real-ESRGAN's ``tile_process`` and
                  similar), written out plainly in :func:`one_tile_at_a_time`: tiles of 256 LR px
                  plus a 10 px context pad, one tile per forward pass, NCHW, fp32 on the CPU /
                  fp16 on a GPU, each output tile cropped and pasted.
  (c') one-tile-cl the same with the model in channels_last (RealESRGANer plus one line).

The roofline reference is a measured convolution peak (:func:`conv_peak`: the generator's
64 -> 64 3x3 layer in channels_last, fp32 and bf16), not a matrix multiply.

Then the levers, one at a time, on the engine (BatchNorm folding, torch.compile, other
precisions, whole image through the engine), with the PSNR of each output against the fp32
output, and the analytic FLOPs per output pixel and the fraction of the measured convolution
peak (at the engine's precision) that (b) reaches.

    python benchmarks/throughput.py --sizes 128,512 --json results.json
    python benchmarks/throughput.py --smoke            # tiny model and images: seconds

Times are medians over ``--repeats`` rounds, the variants interleaved within each round so
that changes in the machine's load hit them alike (no new round once ``--budget`` seconds
were spent on a size); CPU seconds of the process are recorded too (on a shared machine,
CPU-time ratios are steadier than wall-time ones). Each variant
takes a uint8 (H, W, 3) numpy image and returns the uint8 upscaled image, so decode/encode
is excluded but host<->device copies and quantisation are included. Peak RSS is sampled
from /proc/self/statm every 5 ms during the run (else the process-lifetime ru_maxrss).
"""

from __future__ import annotations

import contextlib
import copy
import ctypes
import json
import math
import os
import platform
import resource
import statistics
import sys
import threading
import time
from pathlib import Path

import numpy as np
import torch

from srgan import Generator, GeneratorConfig, load_model
from srgan.errors import ModelError
from srgan.fold import fold_batchnorm
from srgan.metrics import psnr_data
from srgan.models import count_parameters
from srgan.tiling import bytes_per_pixel, plan_tiles, window_size
from srgan.upscale import Upscaler

from common import parse, parser, setup_device

PAPER_FLOPS = 277_272  # issue 7: FLOP per output pixel of SRResNet B16/C64 x4 (RGB)
BUDGET_S = 600.0  # per image size: no further timing round once this is spent (at least one)


# ----------------------------------------------------------------------------- machine


def machine_info(device: torch.device) -> dict:
    """CPU model, cores, torch threads, load, GPU name: the context every figure needs."""
    cpu = platform.processor() or platform.machine()
    with contextlib.suppress(OSError):
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    info = {"cpu": cpu, "cpu_cores": os.cpu_count(), "torch_threads": torch.get_num_threads(),
            "torch": torch.__version__, "python": platform.python_version(), "platform": platform.platform(),
            "device": str(device), "gpu": None}
    with contextlib.suppress(AttributeError, RuntimeError):
        info["cpu_capability"] = torch.backends.cpu.get_cpu_capability()  # e.g. AVX2, AVX512
        info["cpu_native_bf16"] = bool(torch.ops.mkldnn._is_mkldnn_bf16_supported())
    with contextlib.suppress(OSError, AttributeError):
        info["load_avg_1m"] = round(os.getloadavg()[0], 2)
    with contextlib.suppress(OSError, ValueError):
        kb = int(next(l for l in Path("/proc/meminfo").read_text().splitlines() if l.startswith("MemTotal")).split()[1])
        info["memory_gb"] = round(kb / 2**20, 1)
    if device.type == "cuda":
        props = torch.cuda.get_device_properties(device)
        info.update(gpu=props.name, gpu_memory_gb=round(props.total_memory / 2**30, 1),
                    cuda=torch.version.cuda, cudnn=torch.backends.cudnn.version())
    return info


def machine_line(info: dict) -> str:
    load = f", load {info['load_avg_1m']}" if "load_avg_1m" in info else ""
    gpu = f", GPU {info['gpu']}" if info.get("gpu") else ""
    isa = f", {info['cpu_capability']}" if "cpu_capability" in info else ""
    if "cpu_native_bf16" in info:
        isa += ", native bf16" if info["cpu_native_bf16"] else ", no native bf16"
    return (f"machine: {info['cpu']} ({info['cpu_cores']} cores{isa}, torch threads {info['torch_threads']}{load}){gpu}; "
            f"torch {info['torch']}, device {info['device']}")


def write_json(path, record: dict, quiet: bool = False) -> None:
    """Write ``record`` to ``path`` (if given) atomically: a reader never sees half a file, so a
    script rewriting it after each row can be stopped at any time."""
    if path:
        tmp = Path(f"{path}.tmp")
        tmp.write_text(json.dumps(record, indent=2) + "\n")
        os.replace(tmp, path)
        if not quiet:
            print(f"wrote {path}")


def sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def _rss_bytes() -> int | None:
    try:
        with open("/proc/self/statm") as f:
            return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")
    except (OSError, ValueError):
        return None


def _malloc_trim() -> None:
    """Give freed heap memory back to the OS (glibc), so one run's leftovers don't count in the next."""
    with contextlib.suppress(OSError, AttributeError):
        ctypes.CDLL("libc.so.6").malloc_trim(0)


class PeakMemory:
    """Peak RSS over a with-block (sampled every 5 ms), and CUDA max allocated on a GPU.

    Attributes after exit: ``base_mb`` (RSS at entry), ``peak_mb``, ``kind`` ("sampled" or
    "process-peak" where /proc is missing: then ru_maxrss, the peak of the whole process),
    ``cuda_mb`` (None on the CPU).
    """

    def __init__(self, device: torch.device):
        self.device = device
        self.cuda_mb = None

    def __enter__(self):
        _malloc_trim()
        self.base = _rss_bytes()
        self.kind = "sampled" if self.base is not None else "process-peak"
        self.peak = self.base or 0
        self._stop = threading.Event()
        if self.base is not None:
            self._thread = threading.Thread(target=self._sample, daemon=True)
            self._thread.start()
        if self.device.type == "cuda":
            torch.cuda.reset_peak_memory_stats(self.device)
        return self

    def _sample(self):
        while not self._stop.wait(0.005):
            self.peak = max(self.peak, _rss_bytes() or 0)

    def __exit__(self, *exc):
        self._stop.set()
        if self.base is not None:
            self._thread.join()
            self.peak = max(self.peak, _rss_bytes() or 0)
        else:  # ru_maxrss: kilobytes on Linux, bytes on macOS
            rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
            self.peak = rss if sys.platform == "darwin" else rss * 1024
        self.base_mb = round((self.base or 0) / 2**20, 1)
        self.peak_mb = round(self.peak / 2**20, 1)
        if self.device.type == "cuda":
            self.cuda_mb = round(torch.cuda.max_memory_allocated(self.device) / 2**20, 1)
        return False


def _cpu_seconds() -> float:
    r = resource.getrusage(resource.RUSAGE_SELF)
    return r.ru_utime + r.ru_stime


def timed_run(fn, device: torch.device) -> dict:
    """One run of ``fn()``: wall seconds, CPU seconds of this process (all threads) and peak memory."""
    sync(device)
    with PeakMemory(device) as mem:
        c0, t0 = _cpu_seconds(), time.perf_counter()
        fn()
        sync(device)
        wall, cpu = time.perf_counter() - t0, _cpu_seconds() - c0
    return {"seconds": wall, "cpu_seconds": cpu, "peak_rss_mb": mem.peak_mb, "rss_before_mb": mem.base_mb,
            "rss_kind": mem.kind, "cuda_max_allocated_mb": mem.cuda_mb}


def measure(fns: dict, device: torch.device, repeats: int, warmup: int = 0, budget_s: float = float("inf"),
            on_error=None) -> dict:
    """Time several functions in interleaved rounds (a, b, c, a, b, c, ...), so that a change
    in the machine's load hits all of them alike; medians per function.

    At least one round; further rounds up to ``repeats`` while less than ``budget_s`` has
    been spent. ``on_error(name, exception)`` may return a reason to drop a function
    (e.g. out of memory) instead of raising. Returns {name: stats}; a dropped function
    gets {"skipped": reason}.
    """
    runs = {name: [] for name in fns}
    skipped = {}

    def attempt(name, fn, record):
        try:
            sample = timed_run(fn, device)
        except (RuntimeError, MemoryError) as e:
            reason = on_error(name, e) if on_error else None
            if reason is None:
                raise
            skipped[name] = reason
            return
        if record:
            runs[name].append(sample)

    t_start = time.perf_counter()
    for _ in range(warmup):
        for name, fn in fns.items():
            if name not in skipped:
                attempt(name, fn, False)
    for r in range(repeats):
        if r and time.perf_counter() - t_start > budget_s:
            break
        for name, fn in fns.items():
            if name not in skipped:
                attempt(name, fn, True)
    stats = {}
    for name, samples in runs.items():
        if name in skipped:
            stats[name] = {"skipped": skipped[name]}
            continue
        walls = [x["seconds"] for x in samples]
        stats[name] = {
            "seconds": statistics.median(walls), "times": [round(t, 4) for t in walls],
            "cpu_seconds": statistics.median(x["cpu_seconds"] for x in samples),
            "peak_rss_mb": max(x["peak_rss_mb"] for x in samples),
            "rss_before_mb": min(x["rss_before_mb"] for x in samples), "rss_kind": samples[0]["rss_kind"],
            "cuda_max_allocated_mb": (max(x["cuda_max_allocated_mb"] for x in samples)
                                      if samples[0]["cuda_max_allocated_mb"] is not None else None),
        }
    return stats


def matmul_peak(device: torch.device, n: int | None = None, repeats: int = 5) -> dict:
    """Measured matrix-multiply FLOP/s: bf16 on a GPU, fp32 on the CPU (an n x n @ n x n product).
    Used by gpu_levers.py; this script's roofline is :func:`conv_peak`."""
    dtype = torch.bfloat16 if device.type == "cuda" else torch.float32
    n = n or (8192 if device.type == "cuda" else 2048)
    a = torch.randn(n, n, device=device, dtype=dtype)
    b = torch.randn(n, n, device=device, dtype=dtype)
    times = []
    if device.type == "cuda":
        for _ in range(3):
            a @ b
        for _ in range(repeats):
            start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
            start.record()
            for _ in range(10):
                a @ b
            end.record()
            end.synchronize()
            times.append(start.elapsed_time(end) / 1000 / 10)
    else:
        a @ b
        for _ in range(repeats):
            t0 = time.perf_counter()
            a @ b
            times.append(time.perf_counter() - t0)
    seconds = statistics.median(times)
    return {"dtype": str(dtype).replace("torch.", ""), "n": n, "flops_per_s": 2 * n**3 / seconds}


def conv_peak(device: torch.device, dtype: torch.dtype, size: int = 256, repeats: int = 5) -> dict:
    """Measured convolution FLOP/s: a 64 -> 64 channel 3x3 convolution on a (1, 64, size, size)
    channels_last input, the layer that makes 33 of the generator's 37 convolutions, in ``dtype``
    (bf16 directly, not autocast). The roofline reference for the engine: what the same kernels
    reach without tiles, elementwise work or memory traffic between layers."""
    conv = torch.nn.Conv2d(64, 64, 3, padding=1).to(device, dtype).to(memory_format=torch.channels_last)
    x = torch.randn(1, 64, size, size, device=device, dtype=dtype).contiguous(memory_format=torch.channels_last)
    times = []
    with torch.inference_mode():
        conv(x)
        conv(x)
        for _ in range(repeats):
            sync(device)
            t0 = time.perf_counter()
            conv(x)
            sync(device)
            times.append(time.perf_counter() - t0)
    seconds = statistics.median(times)
    return {"dtype": str(dtype).replace("torch.", ""), "size": size, "flops_per_s": 2 * 64 * 64 * 9 * size**2 / seconds}


# ----------------------------------------------------------------------------- model


def conv_flops_per_output_pixel(model: Generator) -> float:
    """2 x the multiply-adds of every Conv2d, per output pixel, from the modules and the shapes
    they see on a probe input (biases, BN, PReLU, residual adds and PixelShuffle not counted)."""
    macs = []

    def hook(module, inputs, output):
        k = module.kernel_size[0] * module.kernel_size[1] * module.in_channels // module.groups
        macs.append(output.numel() * k)

    cfg = model.config
    handles = [m.register_forward_hook(hook) for m in model.modules() if isinstance(m, torch.nn.Conv2d)]
    try:
        param = next(model.parameters())
        with torch.inference_mode():
            model(torch.zeros(1, cfg.in_channels, 8, 8, device=param.device, dtype=param.dtype))
    finally:
        for h in handles:
            h.remove()
    return 2 * sum(macs) / (8 * cfg.scale) ** 2


def default_model(name: str | None, smoke: bool) -> tuple[Generator, dict]:
    """The embedded photo model, else a random-init default generator (same FLOPs and speed)."""
    if smoke:
        torch.manual_seed(0)
        g = Generator(GeneratorConfig(scale=4, channels=8, blocks=1)).eval()
        return g, {"name": "tiny (smoke)", "source": "random-init"}
    try:
        g = load_model(name or "photo-x4")
        return g, {"name": g.info.name, "source": "embedded" if name is None else "file", "sha256": g.info.sha256}
    except ModelError:
        if name is not None:
            raise
    torch.manual_seed(0)
    g = Generator(GeneratorConfig()).eval()
    return g, {"name": "GeneratorConfig() random-init", "source": "random-init"}


def test_image(size: int) -> np.ndarray:
    """A natural (size, size, 3) uint8 image: scikit-image's astronaut, resized (bicubic)."""
    from PIL import Image
    from skimage.data import astronaut

    return np.array(Image.fromarray(astronaut()).resize((size, size), Image.BICUBIC))


# ----------------------------------------------------------------------------- variants


def _to_uint8(y: torch.Tensor) -> np.ndarray:
    """(1, C, H, W) network output -> (H, W, C) uint8 on the host."""
    return y[0].float().clamp_(0, 1).mul_(255).round_().to(torch.uint8).permute(1, 2, 0).cpu().numpy()


def whole_pass(model, image: np.ndarray, device, autocast_dtype, channels_last: bool) -> np.ndarray:
    """(a) One forward pass over the whole image (the network's own zero padding at the border)."""
    x = torch.from_numpy(image).to(device).permute(2, 0, 1)[None].float().div_(255)
    if channels_last:
        x = x.contiguous(memory_format=torch.channels_last)
    amp = torch.autocast(device.type, dtype=autocast_dtype) if autocast_dtype else contextlib.nullcontext()
    with torch.inference_mode():
        with amp:
            y = model(x)
        return _to_uint8(y)


def one_tile_at_a_time(model, image: np.ndarray, device, tile: int = 256, pad: int = 10,
                       half: bool = False) -> np.ndarray:
    """(c) The usual approach, as in Real-ESRGAN's ``RealESRGANer.tile_process``.

    The image goes to the device whole; for each ``tile`` x ``tile`` block in row-major
    order, the block plus ``pad`` px of context (clipped at the image border: no reflection)
    is run through the model alone (no batching), in NCHW, fp16 weights and input when
    ``half`` (``model`` must then be a half copy), and the output is cropped to the block
    and pasted into an output tensor on the device.
    """
    s = model.config.scale
    img = torch.from_numpy(image).to(device).permute(2, 0, 1)[None]
    img = img.to(torch.float16 if half else torch.float32).div_(255)
    _, _, h, w = img.shape
    output = img.new_zeros((1, model.config.out_channels, h * s, w * s))
    with torch.inference_mode():
        for y0 in range(0, h, tile):
            for x0 in range(0, w, tile):
                y1, x1 = min(y0 + tile, h), min(x0 + tile, w)
                py0, px0 = max(y0 - pad, 0), max(x0 - pad, 0)
                py1, px1 = min(y1 + pad, h), min(x1 + pad, w)
                out_tile = model(img[:, :, py0:py1, px0:px1])
                oy, ox = (y0 - py0) * s, (x0 - px0) * s
                output[:, :, y0 * s:y1 * s, x0 * s:x1 * s] = \
                    out_tile[:, :, oy:oy + (y1 - y0) * s, ox:ox + (x1 - x0) * s]
        return _to_uint8(output)


def engine_work(up: Upscaler, h: int, w: int) -> float:
    """LR pixels the engine pushes through the network, per image pixel (overlap and border margin)."""
    tiles = plan_tiles(h, w, up.tile)
    th, tw = window_size(h, up.tile), window_size(w, up.tile)
    return len(tiles) * (th + 2 * up.overlap) * (tw + 2 * up.overlap) / (h * w)


def one_tile_work(h: int, w: int, tile: int, pad: int) -> float:
    total = 0
    for y0 in range(0, h, tile):
        for x0 in range(0, w, tile):
            total += (min(y0 + tile + pad, h) - max(y0 - pad, 0)) * (min(x0 + tile + pad, w) - max(x0 - pad, 0))
    return total / (h * w)


def _fits(model, size: int, device, half: bool) -> tuple[bool, float]:
    """Whether one whole-image pass should fit: estimated activation bytes vs free memory."""
    cfg = model.config
    need = bytes_per_pixel(cfg.channels, cfg.scale, half) * size * size * 1.3
    if device.type == "cuda":
        free, _ = torch.cuda.mem_get_info(device)
    else:
        try:
            line = next(l for l in Path("/proc/meminfo").read_text().splitlines() if l.startswith("MemAvailable"))
            free = int(line.split()[1]) * 1024
        except (OSError, StopIteration):
            free = float("inf")
    return need < 0.8 * free, need / 2**30


def _is_oom(e: BaseException) -> bool:
    return isinstance(e, torch.cuda.OutOfMemoryError) or "memory" in str(e).lower()


# ----------------------------------------------------------------------------- main


def parse_args(argv=None):
    p = parser(__doc__)
    p.add_argument("--sizes", default=None, help="LR sizes, comma-separated [default: 128,512,2048 "
                   "(plus 4096 on a GPU)]")
    p.add_argument("--device", default="auto", help="auto, cpu, cuda or cuda:N [default: auto]")
    p.add_argument("--model", default=None, help="model name or .safetensors [default: photo-x4 if "
                   "embedded, else a random-init GeneratorConfig()]")
    p.add_argument("--repeats", type=int, default=3, help="timing rounds; medians reported [default: 3]")
    p.add_argument("--budget", type=float, default=BUDGET_S, help="seconds per size after which no new "
                   f"round starts (one round at least) [default: {BUDGET_S:.0f}]")
    p.add_argument("--threads", type=int, default=None, help="torch.set_num_threads [default: torch's]")
    p.add_argument("--lever-size", type=int, default=None, help="LR size for the levers [default: 256 on "
                   "the CPU, 2048 on a GPU]")
    p.add_argument("--lever-tiles", default="", help="extra levers: engine tile sizes, comma-separated "
                   "(e.g. 128,192,384)")
    p.add_argument("--variants", default=None, help="only these variants, comma-separated (engine always): "
                   "whole, engine-fp32, one-tile, one-tile-cl [default: all]")
    p.add_argument("--no-levers", action="store_true", help="skip the levers section")
    p.add_argument("--no-compile", action="store_true", help="skip the torch.compile lever")
    return parse(p, argv, "tiny model and images, one round: seconds")


def main(argv=None) -> dict:
    args = parse_args(argv)
    device = setup_device(args)
    gpu = device.type == "cuda"
    if args.smoke:
        sizes, repeats, lever_size, usual_tile, peak_size = [24, 40], 1, 24, 16, 32
    else:
        default_sizes = "128,512,2048,4096" if gpu else "128,512,2048"
        sizes = [int(s) for s in (args.sizes or default_sizes).split(",")]
        repeats, lever_size, usual_tile = args.repeats, args.lever_size or (2048 if gpu else 256), 256
        peak_size = 1024 if gpu else 256
    usual_pad = 10
    warmup = 1 if gpu else 0  # GPU: one untimed round (cuDNN and allocator warm-up); CPU: the probe warms up
    machine = machine_info(device)
    print(machine_line(machine))

    model, model_info = default_model(args.model, args.smoke)
    cfg = model.config
    flops = conv_flops_per_output_pixel(model)
    model_info.update(config=cfg.to_dict(), parameters=count_parameters(model))
    print(f"model: {model_info['name']} ({model_info['source']}; random weights have the same FLOPs and speed), "
          f"{cfg.blocks} blocks, {cfg.channels} channels, x{cfg.scale}, {model_info['parameters']:,} parameters")
    note = ""
    if (cfg.blocks, cfg.channels, cfg.scale, cfg.in_channels, cfg.out_channels) == (16, 64, 4, 3, 3):
        note = (f" (issue 7 says {PAPER_FLOPS:,}: "
                + ("the same count: convolutions only, 2 FLOP per multiply-add)" if round(flops) == PAPER_FLOPS
                   else f"differs by {flops - PAPER_FLOPS:+,.0f})"))
    print(f"analytic: {flops:,.0f} FLOP per output pixel in convolutions{note}")

    peaks = {name: conv_peak(device, dt, peak_size) for name, dt in (("fp32", torch.float32), ("bf16", torch.bfloat16))}
    print("measured conv peak (64->64 3x3, channels_last, "
          f"{peak_size}^2): " + ", ".join(f"{k} {v['flops_per_s'] / 1e9:,.1f} GFLOP/s" for k, v in peaks.items()))

    up = Upscaler(model, device=device)  # the engine's defaults; moves the model to its layout
    up32 = Upscaler(model, device=device, precision="fp32")  # the engine before bf16 (issue 15's "today")
    usual_model = copy.deepcopy(model).to(memory_format=torch.contiguous_format)
    if gpu:
        usual_model = usual_model.half()
    usual_cl = copy.deepcopy(usual_model).to(memory_format=torch.channels_last)  # RealESRGANer + one line
    autocast_dtype, channels_last = up.autocast_dtype, up.channels_last
    precision = precision_name(autocast_dtype)
    peak = peaks.get(precision, peaks["bf16"])  # the roofline at the engine's precision (fp16: bf16's)
    print(f"engine: {up!r}, autocast {precision}, channels_last={channels_last}")
    print(f"engine-fp32: {up32!r} (the engine in fp32: what it was before bf16 on the CPU)")
    print(f"one-tile reference: tile {usual_tile} + pad {usual_pad}, batch 1, {'fp16' if gpu else 'fp32'}, "
          "NCHW (one-tile) and channels_last (one-tile-cl)")

    outputs = {}

    def keep(name, fn):
        def run(im):
            outputs[name] = fn(im)
        return run

    variants = {
        "whole": keep("whole", lambda im: whole_pass(up.model, im, device, autocast_dtype, channels_last)),
        "engine": keep("engine", up.upscale),
        "engine-fp32": keep("engine-fp32", up32.upscale),
        "one-tile": lambda im: one_tile_at_a_time(usual_model, im, device, usual_tile, usual_pad, half=gpu),
        "one-tile-cl": lambda im: one_tile_at_a_time(usual_cl, im, device, usual_tile, usual_pad, half=gpu),
    }
    if up32.autocast_dtype == up.autocast_dtype:  # fp32 already: the same engine
        del variants["engine-fp32"]
    if args.variants:
        wanted = {"engine", *args.variants.split(",")}
        variants = {k: v for k, v in variants.items() if k in wanted}

    # probe: seconds per network LR pixel of each variant's model setup, for the time estimate
    probe = test_image(16 if args.smoke else 64)
    per_px = {}
    for name, fn in (("engine", lambda im: whole_pass(up.model, im, device, autocast_dtype, channels_last)),
                     ("one-tile", lambda im: one_tile_at_a_time(usual_model, im, device, 1 << 30, 0, half=gpu))):
        fn(probe)
        per_px[name] = timed_run(lambda: fn(probe), device)["seconds"] / probe.shape[0] ** 2
    work = {s: {"whole": 1.0, "engine": engine_work(up, s, s), "engine-fp32": engine_work(up32, s, s),
                "one-tile": one_tile_work(s, s, usual_tile, usual_pad),
                "one-tile-cl": one_tile_work(s, s, usual_tile, usual_pad)} for s in sizes}
    round_s = {s: s * s * (per_px["engine"] * (work[s]["whole"] + work[s]["engine"] + work[s]["engine-fp32"])
                           + per_px["one-tile"] * 2 * work[s]["one-tile"]) for s in sizes}
    estimates = {s: max(1, min(repeats, math.ceil(args.budget / round_s[s]) if round_s[s] else repeats))
                 * round_s[s] + warmup * round_s[s] for s in sizes}
    print("estimated time (from a 64 px probe): "
          + ", ".join(f"{s} px ~{_duration(estimates[s])}" for s in sizes) + "; choose with --sizes")

    def on_error(name, e):
        if not _is_oom(e):
            return None
        if gpu:
            torch.cuda.empty_cache()
        return f"out of memory: {str(e).splitlines()[0][:120]}"

    results, ratios = [], []
    header = (f"\n{'LR size':>8} {'variant':>11} {'MPix/s':>9} {'seconds':>9} {'CPU s':>8} {'work':>5} "
              f"{'peak RSS MB':>12} {'CUDA MB':>8}")
    print(header)
    for size in sizes:
        image = test_image(size)
        out_mpix = (size * cfg.scale) ** 2 / 1e6
        fits, need_gb = _fits(model, size, device, autocast_dtype is not None)
        fns = {name: (lambda fn=fn: fn(image)) for name, fn in variants.items() if name != "whole" or fits}
        stats = measure(fns, device, repeats, warmup, args.budget, on_error)
        if not fits and "whole" in variants:
            stats["whole"] = {"skipped": f"does not fit: needs about {need_gb:.1f} GB"}
        for name in variants:
            row = {"size": size, "variant": name, "output_mpix": out_mpix, "work": round(work[size][name], 4),
                   **stats[name]}
            if "skipped" not in row:
                row["mpix_per_s"] = out_mpix / row["seconds"]
                row["mpix_per_cpu_s"] = out_mpix / row["cpu_seconds"] if row["cpu_seconds"] > 0 else None
            results.append(row)
            _print_row(row)
        by = {r["variant"]: r for r in results if r["size"] == size}
        fp32 = "engine-fp32" if "engine-fp32" in by else "engine"  # the engine in fp32 (the same one when fp32)
        ratio = {"size": size}
        for key, a, b in (("engine_over_whole", "engine", "whole"), ("engine_over_one_tile", "engine", "one-tile"),
                          ("engine_over_one_tile_cl", "engine", "one-tile-cl"), ("engine_over_fp32", "engine", fp32),
                          ("fp32_over_one_tile_cl", fp32, "one-tile-cl")):
            a, b = by.get(a, {"skipped": "not run"}), by.get(b, {"skipped": "not run"})
            ok = "skipped" not in a and "skipped" not in b
            ratio[key] = a["mpix_per_s"] / b["mpix_per_s"] if ok else None
            ratio[key + "_cpu_time"] = (b["cpu_seconds"] / a["cpu_seconds"]
                                        if ok and a["cpu_seconds"] > 0 else None)
        if "skipped" not in by["engine"]:
            ratio["engine_flops_per_s"] = by["engine"]["mpix_per_s"] * 1e6 * flops
            ratio["fraction_of_peak"] = ratio["engine_flops_per_s"] / peak["flops_per_s"]
            ratio["executed_fraction_of_peak"] = ratio["fraction_of_peak"] * work[size]["engine"]
        if "engine" in outputs and "engine-fp32" in outputs:  # reduced precision vs the fp32 engine, 8-bit
            ratio.update(quality_8bit(outputs["engine"], outputs["engine-fp32"]))
        outputs.clear()
        ratios.append(ratio)

    print()
    for r in ratios:
        frac = (f"; engine {r['engine_flops_per_s'] / 1e9:,.1f} useful GFLOP/s = {100 * r['fraction_of_peak']:.1f}% "
                f"of the {precision} conv peak ({100 * r['executed_fraction_of_peak']:.1f}% counting recomputed margins)"
                if "fraction_of_peak" in r else "")
        quality = (f"; vs engine-fp32: PSNR {r['psnr_vs_fp32_db']:.1f} dB, {100 * r['frac_over_1_level']:.4f}% of "
                   f"8-bit values differ by >1 level (max {r['max_level_diff']})" if "psnr_vs_fp32_db" in r else "")
        print(f"RATIO size={r['size']} engine/whole={_fmt(r['engine_over_whole'])} "
              f"engine/one-tile={_fmt(r['engine_over_one_tile'])} engine/one-tile-cl={_fmt(r['engine_over_one_tile_cl'])} "
              f"engine/engine-fp32={_fmt(r['engine_over_fp32'])} engine-fp32/one-tile-cl={_fmt(r['fp32_over_one_tile_cl'])} "
              f"(CPU time: {_fmt(r['engine_over_whole_cpu_time'])}, {_fmt(r['engine_over_one_tile_cpu_time'])}){frac}{quality}")

    tiles = [int(t) for t in args.lever_tiles.split(",") if t]
    levers = [] if args.no_levers else run_levers(model, device, lever_size, repeats, warmup, args.budget,
                                                  compile_=not (args.no_compile or args.smoke), tiles=tiles)
    record = {"benchmark": "throughput", "machine": machine, "model": model_info,
              "flops_per_output_pixel": flops, "flops_issue7": PAPER_FLOPS, "conv_peak": peaks,
              "engine": {"tile": up.tile, "overlap": up.overlap, "batch_size": up.batch_size,
                         "precision": precision,
                         "channels_last": channels_last},
              "one_tile": {"tile": usual_tile, "pad": usual_pad, "precision": "fp16" if gpu else "fp32"},
              "repeats": repeats, "estimated_seconds": estimates, "results": results, "ratios": ratios,
              "levers": levers}
    write_json(args.json, record)
    return record


def precision_name(autocast_dtype) -> str:
    return {None: "fp32", torch.bfloat16: "bf16", torch.float16: "fp16"}[autocast_dtype]


def quality_8bit(a: np.ndarray, b: np.ndarray) -> dict:
    """8-bit image ``a`` against reference ``b``: PSNR (dB, peak 255), the fraction of values that
    differ by more than one level, and the largest difference in levels."""
    d = np.abs(a.astype(np.int16) - b.astype(np.int16))
    mse = float(np.mean(d.astype(np.float64) ** 2))
    return {"psnr_vs_fp32_db": 10 * math.log10(255**2 / mse) if mse > 0 else float("inf"),
            "frac_over_1_level": float(np.mean(d > 1)), "max_level_diff": int(d.max())}


def _fmt(v) -> str:
    return f"{v:.2f}" if v is not None else "n/a"


def _print_row(row: dict) -> None:
    if "skipped" in row:
        print(f"{row['size']:>8} {row['variant']:>11} {'-':>9} {'-':>9} {'-':>8} {row['work']:>5.2f}  "
              f"skipped: {row['skipped']}")
        return
    cuda = row["cuda_max_allocated_mb"]
    print(f"{row['size']:>8} {row['variant']:>11} {row['mpix_per_s']:>9.3f} {row['seconds']:>9.2f} "
          f"{row['cpu_seconds']:>8.1f} {row['work']:>5.2f} {row['peak_rss_mb']:>12.0f} "
          f"{cuda if cuda is not None else '-':>8}", flush=True)


def _duration(seconds: float) -> str:
    if seconds < 90:
        return f"{seconds:.0f} s"
    if seconds < 5400:
        return f"{seconds / 60:.0f} min"
    return f"{seconds / 3600:.1f} h"


def run_levers(model, device, size: int, repeats: int, warmup: int, budget_s: float, compile_: bool,
               tiles=()) -> list[dict]:
    """The engine with one option changed at a time, timed in interleaved rounds on float
    planes (raw network output, not clipped); each output is compared with the fp32 engine
    output: PSNR with the fp32 output's peak-to-peak as data range, and the max abs difference."""
    planes = test_image(size).transpose(2, 0, 1).astype(np.float32) / 255
    out_mpix = (size * model.config.scale) ** 2 / 1e6
    folded = fold_batchnorm(model)
    gpu = device.type == "cuda"
    default_precision = precision_name(Upscaler(model, device=device).autocast_dtype)
    setups = {"defaults": lambda: Upscaler(model, device=device),
              "fold BN": lambda: Upscaler(folded, device=device),
              "whole image (tile 0)": lambda: Upscaler(model, device=device, tile=0)}
    for t in tiles:
        setups[f"tile {t}"] = lambda t=t: Upscaler(model, device=device, tile=t)
    if gpu:
        setups["batch 16"] = lambda: Upscaler(model, device=device, batch_size=16)
        setups["cudnn.benchmark"] = lambda: _CudnnBenchmark(Upscaler(model, device=device))
    for precision in ("fp32", "bf16", "fp16"):
        if precision != default_precision and (gpu or precision != "fp16"):
            setups[f"precision {precision}"] = lambda p=precision: Upscaler(model, device=device, precision=p)
    if compile_:
        setups["fold BN + torch.compile"] = lambda: _compiled(Upscaler(folded, device=device))
    reference = Upscaler(model, device=device, precision="fp32").upscale_planes(planes)
    span = float(reference.max() - reference.min())
    print(f"\nlevers: engine at {size} px LR, one change at a time (PSNR vs the fp32 engine output, "
          f"data range {span:.3g})")
    ups, rows = {}, {}
    for name, make in setups.items():
        up = ups[name] = make()
        t0 = time.perf_counter()
        out = up.upscale_planes(planes)  # first call: compile / autotune / warm-up, timed apart
        sync(device)
        diff = float(np.abs(out - reference).max())
        rows[name] = {"setting": name, "size": size, "output_mpix": out_mpix,
                      "first_call_s": round(time.perf_counter() - t0, 3), "tile": up.tile, "overlap": up.overlap,
                      "work": round(engine_work(up, size, size), 4),
                      "batch_size": up.batch_size, "precision": up.precision, "max_abs_diff": diff,
                      "psnr_db": psnr_data(out, reference, data_range=span) if diff > 0 else None}  # None: identical
    stats = measure({n: (lambda u=u: u.upscale_planes(planes)) for n, u in ups.items()}, device, repeats,
                    max(warmup - 1, 0), budget_s)
    print(f"{'setting':>24} {'MPix/s':>9} {'x defaults':>10} {'x (CPU s)':>9} {'work':>5} {'PSNR dB':>8} "
          f"{'max diff':>9} {'first call s':>12} {'peak RSS MB':>12}")
    base = stats["defaults"]
    for name, row in rows.items():
        row.update(stats[name])
        row["mpix_per_s"] = out_mpix / row["seconds"]
        row["speedup"] = base["seconds"] / row["seconds"]
        row["speedup_cpu_time"] = base["cpu_seconds"] / row["cpu_seconds"] if row["cpu_seconds"] > 0 else None
        psnr = "same" if row["psnr_db"] is None else f"{row['psnr_db']:.1f}"
        print(f"{name:>24} {row['mpix_per_s']:>9.3f} {row['speedup']:>10.2f} {_fmt(row['speedup_cpu_time']):>9} "
              f"{row['work']:>5.2f} {psnr:>8} {row['max_abs_diff']:>9.2e} {row['first_call_s']:>12.1f} "
              f"{row['peak_rss_mb']:>12.0f}")
    for name, row in rows.items():
        print(f"LEVER setting={name!r} mpix_s={row['mpix_per_s']:.4g} speedup={row['speedup']:.3f} "
              f"psnr_db={'same' if row['psnr_db'] is None else round(row['psnr_db'], 1)}")
    return list(rows.values())


class _CudnnBenchmark:
    """An Upscaler whose calls run with torch.backends.cudnn.benchmark on (autotuned kernels)."""

    def __init__(self, up: Upscaler):
        self.up = up

    def __getattr__(self, name):
        return getattr(self.up, name)

    def upscale_planes(self, planes):
        before = torch.backends.cudnn.benchmark
        torch.backends.cudnn.benchmark = True
        try:
            return self.up.upscale_planes(planes)
        finally:
            torch.backends.cudnn.benchmark = before


def _compiled(up: Upscaler) -> Upscaler:
    """The engine with its network wrapped in torch.compile (default mode)."""
    up.model = torch.compile(up.model)
    return up


if __name__ == "__main__":
    main()
