"""Where the time of one generator forward pass goes: torch.profiler's table of kernels.

Runs the default x4 photo model (or ``--model``) on a random (1, 3, S, S) input in the
engine's precision and memory layout (bf16 autocast + channels_last on a GPU; on the CPU
bf16 autocast where the processor has native bf16, else fp32), after warm-up passes, and prints the operators (grouped by input shape) sorted by their own device time (CPU time on the
CPU), so that an engine change can aim at the ops that dominate.

With ``--engine`` it profiles one whole engine pass instead: ``Upscaler.upscale`` of an S x S
uint8 image (windows read on the host, copies both ways, pasting), so the host's share shows
too. Either way it reports the share of the profiled span during which the device was running
a kernel or a copy (:func:`device_busy`).

    python benchmarks/profile_forward.py --size 1024            # a GPU: bf16, channels_last
    python benchmarks/profile_forward.py --engine --size 2048 --json profile.json
    python benchmarks/profile_forward.py --size 128 --device cpu
    python benchmarks/profile_forward.py --smoke                 # tiny model: seconds
"""

from __future__ import annotations

from contextlib import nullcontext

import numpy as np
import torch
from torch.autograd import DeviceType
from torch.profiler import ProfilerActivity, profile

from srgan import Generator, GeneratorConfig, Upscaler
from srgan.errors import ModelError

from common import parse, parser
from throughput import machine_info, write_json


def device_busy(prof, cuda: bool) -> dict:
    """The share of a profile's span (first to last event of any kind) during which the GPU ran
    a kernel or a copy: the union of the device's activity intervals, so overlapping work
    counts once. Without CUDA it is the CPU's operators' union (always near 1: a sanity check).

    Returns ``{"busy_fraction", "busy_s", "span_s", "events", "device"}`` (events: the device's).
    """
    events = prof.profiler.kineto_results.events()
    want = DeviceType.CUDA if cuda else DeviceType.CPU
    spans = [(e.start_ns(), e.start_ns() + e.duration_ns(), e.device_type() == want) for e in events]
    mine = sorted((a, b) for a, b, ok in spans if ok)
    busy, end = 0, None
    for a, b in mine:
        if end is None or a > end:
            busy += b - a
            end = b
        elif b > end:
            busy += b - end
            end = b
    span = (max(b for _, b, _ in spans) - min(a for a, _, _ in spans)) if spans else 0
    return {"busy_fraction": busy / span if span else None, "busy_s": busy / 1e9, "span_s": span / 1e9,
            "events": len(mine), "device": "cuda" if cuda else "cpu"}


def _self_time(avg, cuda: bool) -> float:
    """An averaged event's own device time in microseconds (the attribute was renamed in torch 2.4)."""
    if not cuda:
        return avg.self_cpu_time_total
    return getattr(avg, "self_device_time_total", None) or getattr(avg, "self_cuda_time_total", 0.0)


def parse_args(argv=None):
    p = parser(__doc__)
    p.add_argument("--size", type=int, default=512, help="LR side in pixels [default: 512]")
    p.add_argument("--batch", type=int, default=1, help="images per pass [default: 1]")
    p.add_argument("--engine", action="store_true", help="profile Upscaler.upscale of an S x S uint8 image "
                   "instead of one forward pass")
    p.add_argument("--device", default="auto")
    p.add_argument("--model", default="photo-x4", help="model name or .safetensors [default: photo-x4]")
    p.add_argument("--rows", type=int, default=20, help="table rows [default: 20]")
    return parse(p, argv, "tiny model and input: seconds", json="also write the top operators and busy share as JSON")


def main(argv=None) -> str:
    args = parse_args(argv)
    if args.smoke:
        up = Upscaler(Generator(GeneratorConfig(channels=8, blocks=1)), device=args.device)
        args.size, args.rows = 16, 5
    else:
        try:
            up = Upscaler.from_pretrained(args.model, device=args.device)
        except ModelError:
            up = Upscaler(Generator(GeneratorConfig()), device=args.device)
    net, device = up.model, up.device
    dtype = up.autocast_dtype
    cuda = device.type == "cuda"
    if args.engine:
        image = np.random.default_rng(0).integers(0, 256, (args.size, args.size, 3), dtype=np.uint8)
        shape, context = image.shape, nullcontext()

        def work():
            up.upscale(image)
    else:
        x = torch.rand(args.batch, net.config.in_channels, args.size, args.size, device=device)
        x = x.contiguous(memory_format=torch.channels_last)
        shape = tuple(x.shape)
        context = torch.inference_mode()
        cast = torch.autocast(device.type, dtype=dtype) if dtype is not None else nullcontext()

        def work():
            with cast:
                net(x)
    with context:
        for _ in range(1 if args.engine else 3):
            work()
        if cuda:
            torch.cuda.synchronize()
        activities = [ProfilerActivity.CPU] + ([ProfilerActivity.CUDA] if cuda else [])
        with profile(activities=activities, record_shapes=True) as prof:
            work()
            if cuda:
                torch.cuda.synchronize()
    key = "self_cuda_time_total" if cuda else "self_cpu_time_total"
    table = prof.key_averages(group_by_input_shape=True).table(sort_by=key, row_limit=args.rows)
    busy = device_busy(prof, cuda)
    what = "engine pass (Upscaler.upscale)" if args.engine else "forward pass"
    print(f"{up!r}\n{what}, input {shape}, autocast {dtype}\n{table}")
    print(f"PROFILE {'engine' if args.engine else 'forward'} size={args.size} busy_fraction="
          f"{busy['busy_fraction'] if busy['busy_fraction'] is None else round(busy['busy_fraction'], 3)} "
          f"span_s={busy['span_s']:.4f} device={busy['device']}")
    if args.json:
        machine = machine_info(device)
        avgs = sorted(prof.key_averages(), key=lambda a: _self_time(a, cuda), reverse=True)
        top = [{"name": a.key, "count": a.count, "self_time_us": _self_time(a, cuda),
                "self_cpu_time_us": a.self_cpu_time_total} for a in avgs[:args.rows]]
        record = {"benchmark": "profile_forward", "device": machine["gpu"] or f"cpu: {machine['cpu']}",
                  "machine": machine, "engine": repr(up), "what": what, "input_shape": list(shape),
                  "autocast": str(dtype), "busy": busy, "top": top, "table": table}
        write_json(args.json, record)
    return table


if __name__ == "__main__":
    main()
