"""Training speed: steps/s of the pre-training (pixel loss) and GAN phases.

The default architecture (SRResNet B16/C64 x4, the paper's discriminator) trained with the
step functions ``srgan.train.fit`` calls, ``pretrain_step`` and ``gan_step``: HR patches on the
device, the LR input made there by ``srgan.train.training_pair`` (the degradation preset, then
the normalisation), channels_last, bf16 autocast on CUDA (``--amp auto``, fit's default), Adam,
gradient clipping at 1.0; the GAN step updates D (BCE) then G with VGG54 content + 1e-3
adversarial + 2e-8 TV (TrainConfig's defaults).

The VGG19 of the content loss is built with ``weights=None`` (random): the same layers and
FLOPs as the ImageNet weights, so the same speed, without a download. Patches are random
crops and flips of one natural image already on the device, so the figures are the compute
speed of a step; the share of each step spent in the degradation is reported too (it runs
on the device inside the step, as in fit).

    python benchmarks/train_speed.py --json train.json          # 16x96 and a large batch
    python benchmarks/train_speed.py --configs 16x96 --steps 5
    python benchmarks/train_speed.py --smoke                    # tiny model: seconds
"""

from __future__ import annotations

import argparse
import statistics
import threading
import time

import numpy as np
import torch

from srgan.degrade import PRESETS
from srgan.device import resolve_device
from srgan.losses import VGGContentLoss
from srgan.models import Discriminator, Generator, GeneratorConfig, count_parameters
from srgan.normalize import Normalization
from srgan.train import TrainConfig, gan_step, pretrain_step, training_pair

from throughput import PeakMemory, machine_info, machine_line, sync, write_json


def hr_source(device, size: int = 512) -> torch.Tensor:
    """(3, size, size) natural image in [0, 1] on the device (scikit-image's astronaut)."""
    from PIL import Image
    from skimage.data import astronaut

    im = np.array(Image.fromarray(astronaut()).resize((size, size), Image.BICUBIC))
    return torch.from_numpy(im).permute(2, 0, 1).float().div(255).to(device)


def random_patches(src: torch.Tensor, batch: int, patch: int, g: torch.Generator) -> torch.Tensor:
    """(batch, C, patch, patch) random crops with random flips, made on src's device."""
    _, h, w = src.shape
    ys = torch.randint(0, h - patch + 1, (batch,), generator=g, device="cpu").tolist()
    xs = torch.randint(0, w - patch + 1, (batch,), generator=g, device="cpu").tolist()
    flips = torch.rand(batch, generator=g).tolist()
    crops = [src[:, y:y + patch, x:x + patch] for y, x in zip(ys, xs)]
    crops = [c.flip(-1) if f < 0.5 else c for c, f in zip(crops, flips)]
    return torch.stack(crops)


class Trainer:
    """The models and optimisers of ``srgan.train.fit``, and one step of each phase with its functions."""

    def __init__(self, arch: GeneratorConfig, device, *, amp: bool, preset: str, vgg_layer: str = "relu5_4",
                 lr: float = 1e-4, grad_clip: float = 1.0, disc_base: int = 64):
        self.device, self.amp = device, amp
        self.memory_format = torch.channels_last
        # what training_pair and the steps read; loss weights and --gan-loss bce are fit's defaults
        self.config = TrainConfig(scale=arch.scale, preset=preset, lr=lr, grad_clip=grad_clip)
        self.normalization = Normalization("asinh") if preset == "astro" else Normalization("unit")
        self.generator = Generator(arch).to(device).to(memory_format=self.memory_format).train()
        self.discriminator = Discriminator(arch.in_channels, disc_base).to(device).to(memory_format=self.memory_format)
        self.content = VGGContentLoss(layer=vgg_layer, weights=None).to(device).eval()
        adam = lambda params: torch.optim.Adam(params, lr=lr, betas=(0.9, 0.999))  # noqa: E731
        self.opt_g, self.opt_d = adam(self.generator.parameters()), adam(self.discriminator.parameters())

    def batch(self, hr: torch.Tensor, g: torch.Generator):
        x, y = training_pair(hr, self.config, self.normalization, g)
        return x.contiguous(memory_format=self.memory_format), y.contiguous(memory_format=self.memory_format)

    def pretrain_step(self, hr, g):
        x, y = self.batch(hr, g)
        return pretrain_step(self.generator, self.opt_g, x, y, self.config, amp=self.amp)["pixel"]

    def gan_step(self, hr, g):
        x, y = self.batch(hr, g)
        terms = gan_step(self.generator, self.discriminator, self.opt_g, self.opt_d, x, y, self.config,
                         content=self.content, amp=self.amp, rng=g)
        return terms["generator"]


class GpuUtilisation:
    """Mean of torch.cuda.utilization() sampled every 50 ms (None without NVML / on the CPU)."""

    def __init__(self, device):
        self.device, self.samples = device, []

    def __enter__(self):
        self._stop = threading.Event()
        self._thread = None
        if self.device.type == "cuda":
            try:
                torch.cuda.utilization(self.device)
            except Exception:  # pynvml missing or NVML unavailable: report None
                return self
            self._thread = threading.Thread(target=self._run, daemon=True)
            self._thread.start()
        return self

    def _run(self):
        while not self._stop.wait(0.05):
            self.samples.append(torch.cuda.utilization(self.device))

    def __exit__(self, *exc):
        self._stop.set()
        if self._thread is not None:
            self._thread.join()
        return False

    @property
    def mean(self):
        return statistics.mean(self.samples) if self.samples else None


def time_phase(trainer: Trainer, step_fn, src, batch: int, patch: int, steps: int, warmup: int) -> dict:
    """steps/s of ``step_fn`` over ``steps`` timed steps after ``warmup`` ones, plus the
    degradation's share (timed alone on the same batches) and the peak memory."""
    device = trainer.device
    g_cpu = torch.Generator().manual_seed(0)
    g_dev = torch.Generator(device=device).manual_seed(1)
    batches = [random_patches(src, batch, patch, g_cpu) for _ in range(warmup + steps)]
    for hr in batches[:warmup]:
        step_fn(hr, g_dev)
    sync(device)
    times = []
    with PeakMemory(device) as mem, GpuUtilisation(device) as util:
        t_all = time.perf_counter()
        for hr in batches[warmup:]:
            t0 = time.perf_counter()
            loss = step_fn(hr, g_dev)
            sync(device)
            times.append(time.perf_counter() - t0)
        total = time.perf_counter() - t_all
    if not torch.isfinite(loss):
        raise RuntimeError(f"non-finite loss {float(loss)} while timing")
    sync(device)
    t0 = time.perf_counter()
    for hr in batches[warmup:]:
        trainer.batch(hr, g_dev)
    sync(device)
    degrade_s = (time.perf_counter() - t0) / steps
    step_s = statistics.median(times)
    return {"steps": steps, "warmup": warmup, "steps_per_s": steps / total, "median_step_s": step_s,
            "times": [round(t, 4) for t in times], "samples_per_s": batch * steps / total,
            "hr_mpix_per_s": batch * patch * patch * steps / total / 1e6,
            "degrade_s_per_step": degrade_s, "degrade_share": degrade_s / step_s,
            "peak_rss_mb": mem.peak_mb, "cuda_max_allocated_mb": mem.cuda_mb, "gpu_utilisation": util.mean}


def parse_args(argv=None):
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--configs", default=None, help="BATCHxPATCH list [default: 16x96,64x128 on a GPU, "
                   "16x96,32x96 on the CPU]")
    p.add_argument("--phases", default="pretrain,gan", help="pretrain, gan or both [default: both]")
    p.add_argument("--steps", type=int, default=None, help="timed steps per phase [default: 20 GPU, 3 CPU]")
    p.add_argument("--warmup", type=int, default=None, help="untimed steps first [default: 3 GPU, 1 CPU]")
    p.add_argument("--device", default="auto")
    p.add_argument("--amp", choices=("auto", "bf16", "off"), default="auto",
                   help="bf16 autocast: auto = on CUDA only (fit's default)")
    p.add_argument("--preset", choices=tuple(PRESETS), default="bicubic", help="degradation [default: bicubic]")
    p.add_argument("--threads", type=int, default=None)
    p.add_argument("--json", default=None, metavar="FILE")
    p.add_argument("--smoke", action="store_true", help="tiny models and patches, 1 step, no warm-up: seconds")
    return p.parse_args(argv)


def main(argv=None) -> dict:
    args = parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    device = resolve_device(args.device)
    gpu = device.type == "cuda"
    if gpu:
        torch.backends.cudnn.benchmark = True  # as fit does
        torch.backends.cuda.matmul.allow_tf32 = torch.backends.cudnn.allow_tf32 = True
    amp = args.amp == "bf16" or (args.amp == "auto" and gpu)
    if args.smoke:
        arch, configs, steps, warmup, disc_base, layer = GeneratorConfig(scale=4, channels=8, blocks=1), \
            [(2, 32)], 1, 0, 8, "relu2_2"
    else:
        arch, disc_base, layer = GeneratorConfig(), 64, "relu5_4"
        spec = args.configs or ("16x96,64x128" if gpu else "16x96,32x96")
        configs = [tuple(int(v) for v in c.lower().split("x")) for c in spec.split(",")]
        steps = args.steps or (20 if gpu else 3)
        warmup = args.warmup if args.warmup is not None else (3 if gpu else 1)
    phases = [p for p in args.phases.split(",") if p]
    machine = machine_info(device)
    print(machine_line(machine))
    print(f"generator: {arch.blocks} blocks, {arch.channels} channels, x{arch.scale} "
          f"({count_parameters(Generator(arch)):,} parameters); discriminator base {disc_base}; "
          f"VGG19 to {layer} with random weights (same FLOPs as ImageNet's); preset {args.preset} on {device}; "
          f"amp {'bf16' if amp else 'off'}; channels_last")
    src = hr_source(device)
    results = []
    print(f"\n{'batch':>6} {'patch':>6} {'phase':>9} {'steps/s':>9} {'samples/s':>10} {'s/step':>8} "
          f"{'degrade %':>9} {'peak RSS MB':>12} {'CUDA MB':>8} {'GPU %':>6}")
    for batch, patch in configs:
        torch.manual_seed(0)
        trainer = Trainer(arch, device, amp=amp, preset=args.preset, vgg_layer=layer, disc_base=disc_base)
        for phase in phases:
            fn = trainer.pretrain_step if phase == "pretrain" else trainer.gan_step
            row = {"batch": batch, "patch": patch, "phase": phase}
            row.update(time_phase(trainer, fn, src, batch, patch, steps, warmup))
            results.append(row)
            cuda = f"{row['cuda_max_allocated_mb']:>8.0f}" if row["cuda_max_allocated_mb"] is not None else f"{'-':>8}"
            util = f"{row['gpu_utilisation']:>6.0f}" if row["gpu_utilisation"] is not None else f"{'-':>6}"
            print(f"{batch:>6} {patch:>6} {phase:>9} {row['steps_per_s']:>9.3f} {row['samples_per_s']:>10.2f} "
                  f"{row['median_step_s']:>8.3f} {100 * row['degrade_share']:>9.1f} {row['peak_rss_mb']:>12.0f} "
                  f"{cuda} {util}", flush=True)
        del trainer
        if gpu:
            torch.cuda.empty_cache()
    print()
    for r in results:
        print(f"TRAIN batch={r['batch']} patch={r['patch']} phase={r['phase']} steps_per_s={r['steps_per_s']:.4g} "
              f"degrade_share={r['degrade_share']:.3f}")
    record = {"benchmark": "train_speed", "machine": machine,
              "generator": arch.to_dict(), "discriminator_base": disc_base, "vgg_layer": layer,
              "vgg_weights": "random (same FLOPs as ImageNet weights)", "preset": args.preset,
              "amp": "bf16" if amp else "off", "channels_last": True, "results": results}
    write_json(args.json, record)
    return record


if __name__ == "__main__":
    main()
