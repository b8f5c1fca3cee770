"""Where the time of one generator forward pass goes: torch.profiler's table of kernels.

Runs the default x4 photo model (or ``--model``) on a random (1, 3, S, S) input in the
engine's precision and memory layout (bf16 autocast + channels_last on a GPU, fp32 on the
CPU), after warm-up passes, and prints the operators (grouped by input shape) sorted by their own device time (CPU time on the
CPU), so that an engine change can aim at the ops that dominate.

    python benchmarks/profile_forward.py --size 1024            # a GPU: bf16, channels_last
    python benchmarks/profile_forward.py --size 128 --device cpu
    python benchmarks/profile_forward.py --smoke                 # tiny model: seconds
"""

from __future__ import annotations

import argparse
from contextlib import nullcontext

import torch
from torch.profiler import ProfilerActivity, profile

from srgan import Generator, GeneratorConfig, Upscaler
from srgan.errors import ModelError


def parse_args(argv=None):
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--size", type=int, default=512, help="LR side in pixels [default: 512]")
    p.add_argument("--batch", type=int, default=1, help="images per pass [default: 1]")
    p.add_argument("--device", default="auto")
    p.add_argument("--model", default="photo-x4", help="model name or .safetensors [default: photo-x4]")
    p.add_argument("--rows", type=int, default=20, help="table rows [default: 20]")
    p.add_argument("--smoke", action="store_true", help="tiny model and input: seconds")
    return p.parse_args(argv)


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
    x = torch.rand(args.batch, net.config.in_channels, args.size, args.size, device=device)
    x = x.contiguous(memory_format=torch.channels_last)
    dtype = up.autocast_dtype
    cast = torch.autocast(device.type, dtype=dtype) if dtype is not None else nullcontext()
    cuda = device.type == "cuda"
    with torch.inference_mode(), cast:
        for _ in range(3):
            net(x)
        if cuda:
            torch.cuda.synchronize()
        activities = [ProfilerActivity.CPU] + ([ProfilerActivity.CUDA] if cuda else [])
        with profile(activities=activities, record_shapes=True) as prof:
            net(x)
            if cuda:
                torch.cuda.synchronize()
    key = "self_cuda_time_total" if cuda else "self_cpu_time_total"
    table = prof.key_averages(group_by_input_shape=True).table(sort_by=key, row_limit=args.rows)
    print(f"{up!r}\ninput {tuple(x.shape)}, autocast {dtype}\n{table}")
    return table


if __name__ == "__main__":
    main()
