"""Training speed: steps/s of the pre-training (pixel loss) and GAN phases.

The default architecture (SRResNet B16/C64 x4, the paper's discriminator) trained the way
``srgan.train.fit`` trains it: HR patches on the device, the LR input made there by
``srgan.train.training_pair`` (the degradation preset, then the normalisation), channels_last,
bf16 autocast on CUDA (``--amp auto``, fit's default), Adam, gradient clipping at 1.0; the GAN
step updates D (BCE) then G with VGG54 content + 1e-3 adversarial + 2e-8 TV.

The VGG19 of the content loss is built with ``weights=None`` (random): the same layers and
FLOPs as the ImageNet weights, so the same speed, without a download. Patches are random
crops and flips of one natural image already on the device, so the figures are the compute
speed of a step; the share of each step spent in the degradation is reported too (it runs
on the device inside the step, as in fit).

Step levers (each an option; ``--ladder`` runs them cumulatively, one more per row, in one
process): ``--log-every N`` reads the loss on the host every N steps instead of after every
step (fit logs every ``--log-every`` steps; 1 = a host sync per step, this script's old
timing); ``--sync-free-degrade`` makes the bicubic preset's LR with ``srgan.degrade.downsample``
directly (the same values; ``degrade`` asks the host whether any sample needs blur, noise or
JPEG, a sync per question); ``--fused-adam``; ``--cuda-graph`` captures the step after the
degradation (models, losses, backward, clipping, Adam) as one CUDA graph and replays it;
``--compile MODE`` wraps G, D and the VGG in ``torch.compile``.

Besides steps/s: host syncs per step (CUDA's sync debug mode, one extra step) and the share
of a few profiled steps during which the GPU runs a kernel (``torch.profiler``: the union of
the device's kernel and copy intervals over the span of the steps).

    python benchmarks/train_speed.py --json train.json          # 16x96 and a large batch
    python benchmarks/train_speed.py --configs 16x96 --steps 5
    python benchmarks/train_speed.py --configs 64x128 --ladder  # the step levers, cumulatively
    python benchmarks/train_speed.py --smoke                    # tiny model: seconds

The steps are fit's own (``srgan.train.pretrain_step`` and ``gan_step``), called on the
modules the levers make (fused or capturable Adam, compiled wrappers); a CUDA-graph capture
turns off autocast's weight-cast cache through their ``amp_cache`` argument.
"""

from __future__ import annotations

import statistics
import threading
import time
import warnings
from collections import Counter
from dataclasses import asdict, dataclass, replace

import numpy as np
import torch

from srgan.degrade import PRESETS, downsample
from srgan.losses import VGGContentLoss
from srgan.models import Discriminator, Generator, GeneratorConfig, count_parameters
from srgan.normalize import Normalization
from srgan.train import TrainConfig, gan_step, pretrain_step, training_pair

from common import parse, parser, setup_device
from profile_forward import device_busy
from throughput import PeakMemory, machine_info, machine_line, sync, write_json

COMPILE_MODES = ("default", "reduce-overhead", "max-autotune")


@dataclass(frozen=True)
class StepOptions:
    """How the step runs; the defaults are fit's step as it is."""

    log_every: int = 1  # read the loss on the host every N steps (1: after every step)
    sync_free_degrade: bool = False  # bicubic LR made without degrade()'s host-side checks
    fused_adam: bool = False  # torch.optim.Adam(fused=True)
    cuda_graph: bool = False  # capture the step after the degradation as one CUDA graph
    compile_mode: str | None = None  # torch.compile G, D and VGG with this mode (COMPILE_MODES)

    def label(self) -> str:
        parts = [f"log every {self.log_every}"] if self.log_every != 1 else []
        parts += [name for name, on in (("sync-free degrade", self.sync_free_degrade), ("fused Adam", self.fused_adam),
                                        ("CUDA graph", self.cuda_graph)) if on]
        parts += [f"compile {self.compile_mode}"] if self.compile_mode else []
        return ", ".join(parts) or "baseline"


def ladder(log_every: int = 20) -> list[StepOptions]:
    """The step levers added one at a time; the compiled step replaces the graph (last, slowest)."""
    rows = [StepOptions()]
    for change in ({"log_every": log_every}, {"sync_free_degrade": True}, {"fused_adam": True}, {"cuda_graph": True}):
        rows.append(replace(rows[-1], **change))
    rows.append(replace(rows[-1], cuda_graph=False, compile_mode="default"))
    return rows


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
    """The models, optimisers and one step of each phase, as in ``srgan.train.fit``, run the
    way ``options`` says."""

    def __init__(self, arch: GeneratorConfig, device, *, amp: bool, preset: str, vgg_layer: str = "relu5_4",
                 lr: float = 1e-4, grad_clip: float = 1.0, disc_base: int = 64,
                 options: StepOptions = StepOptions(), compile_backend: str = "inductor"):
        if options.cuda_graph and device.type != "cuda":
            raise ValueError("--cuda-graph needs a CUDA device")
        if options.sync_free_degrade and preset != "bicubic":
            raise ValueError(f"--sync-free-degrade is for the bicubic preset only, not {preset!r}")
        self.device, self.amp, self.options = device, amp, options
        self.memory_format = torch.channels_last
        # what training_pair and the steps read; fit's defaults: MSE pixel loss, BCE GAN loss,
        # content 1 + adversarial 1e-3 + TV 2e-8
        self.config = TrainConfig(scale=arch.scale, preset=preset, lr=lr, grad_clip=grad_clip, vgg_layer=vgg_layer)
        self.normalization = Normalization("asinh") if preset == "astro" else Normalization("unit")
        self.generator = Generator(arch).to(device).to(memory_format=self.memory_format).train()
        self.discriminator = Discriminator(arch.in_channels, disc_base).to(device).to(memory_format=self.memory_format)
        self.content = VGGContentLoss(layer=vgg_layer, weights=None).to(device).eval()
        extra = {"fused": True} if options.fused_adam else {}
        extra.update({"capturable": True} if options.cuda_graph else {})
        adam = lambda params: torch.optim.Adam(params, lr=lr, betas=(0.9, 0.999), **extra)  # noqa: E731
        self.opt_g, self.opt_d = adam(self.generator.parameters()), adam(self.discriminator.parameters())
        # the modules the steps call; compiled wrappers share the parameters of the originals
        self.g, self.d, self.vgg = self.generator, self.discriminator, self.content
        if options.compile_mode is not None:
            mode = {} if options.compile_mode == "default" else {"mode": options.compile_mode}
            self.g, self.d, self.vgg = (torch.compile(m, backend=compile_backend, **mode)
                                        for m in (self.generator, self.discriminator, self.content))
        self._graphs = {}

    def batch(self, hr: torch.Tensor, g: torch.Generator):
        if self.options.sync_free_degrade:  # = degrade(hr, "bicubic") with no host-side checks; unit normalisation
            x, y = downsample(hr, self.config.scale, "bicubic").clamp(0, 1), hr
        else:
            x, y = training_pair(hr, self.config, self.normalization, g)
        return x.contiguous(memory_format=self.memory_format), y.contiguous(memory_format=self.memory_format)

    def step(self, phase: str, hr: torch.Tensor, g: torch.Generator) -> torch.Tensor:
        """One step of ``phase`` ("pretrain" or "gan") on an HR batch; returns the loss (on the device)."""
        core = self.pretrain_core if phase == "pretrain" else self.gan_core
        x, y = self.batch(hr, g)
        if self.options.compile_mode == "reduce-overhead":
            torch.compiler.cudagraph_mark_step_begin()
        if not self.options.cuda_graph:
            return core(x, y)
        if phase not in self._graphs:
            self._graphs[phase] = CapturedStep(core, x, y)
        return self._graphs[phase](x, y)

    def pretrain_core(self, x, y):
        """fit's phase-1 step (``srgan.train.pretrain_step``); returns the pixel loss."""
        return pretrain_step(self.g, self.opt_g, x, y, self.config, amp=self.amp,
                             amp_cache=not self.options.cuda_graph)["pixel"]

    def gan_core(self, x, y):
        """fit's phase-2 step (``srgan.train.gan_step``: D, then G); returns G's weighted loss."""
        return gan_step(self.g, self.d, self.opt_g, self.opt_d, x, y, self.config, content=self.vgg, amp=self.amp,
                        amp_cache=not self.options.cuda_graph)["generator"]


class CapturedStep:
    """A training step captured once as a CUDA graph (the PyTorch recipe for whole-network
    capture): warm-up steps on a side stream, then one captured step on static inputs; each
    call copies the batch into them and replays. Adam must be ``capturable``."""

    def __init__(self, core, x: torch.Tensor, y: torch.Tensor, warmup: int = 3):
        self.x, self.y = x.clone(), y.clone()
        side = torch.cuda.Stream()
        side.wait_stream(torch.cuda.current_stream())
        with torch.cuda.stream(side):
            for _ in range(warmup):
                core(self.x, self.y)
        torch.cuda.current_stream().wait_stream(side)
        self.graph = torch.cuda.CUDAGraph()
        with torch.cuda.graph(self.graph):
            self.loss = core(self.x, self.y)

    def __call__(self, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        self.x.copy_(x)
        self.y.copy_(y)
        self.graph.replay()
        return self.loss


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


def time_phase(trainer: Trainer, phase: str, src, batch: int, patch: int, steps: int, warmup: int,
               profile_steps: int = 0) -> dict:
    """steps/s of ``phase`` over ``steps`` timed steps after ``warmup`` ones (the loss read on the
    host every ``trainer.options.log_every`` steps and after the last), plus the degradation's
    share (timed alone on the same batches), host syncs per step, the GPU's busy share over
    ``profile_steps`` profiled steps, and the peak memory."""
    device, log_every = trainer.device, trainer.options.log_every
    cuda = device.type == "cuda"
    g_cpu = torch.Generator().manual_seed(0)
    g_dev = torch.Generator(device=device).manual_seed(1)
    batches = [random_patches(src, batch, patch, g_cpu) for _ in range(warmup + steps)]
    extra = [random_patches(src, batch, patch, g_cpu) for _ in range(1 + profile_steps)]
    for hr in batches[:warmup]:
        trainer.step(phase, hr, g_dev)
    sync(device)
    host_times, marks = [], []
    with PeakMemory(device) as mem, GpuUtilisation(device) as util:
        t_all = time.perf_counter()
        for i, hr in enumerate(batches[warmup:]):
            t0 = time.perf_counter()
            loss = trainer.step(phase, hr, g_dev)
            if cuda:  # device-side step boundaries: no host sync
                marks.append(torch.cuda.Event(enable_timing=True))
                marks[-1].record()
            if (i + 1) % log_every == 0 or i == steps - 1:
                value = float(loss)  # what logging does: a host sync
                host_times.append(time.perf_counter() - t0)
        sync(device)
        total = time.perf_counter() - t_all
    if not np.isfinite(value):
        raise RuntimeError(f"non-finite loss {value} while timing")
    # per-step times: on CUDA between consecutive step-end events; else the host's (steps read one by one)
    times = ([a.elapsed_time(b) / 1000 for a, b in zip(marks, marks[1:])] if cuda and len(marks) > 1
             else host_times if log_every == 1 else [total / steps])
    t0 = time.perf_counter()
    for hr in batches[warmup:]:
        trainer.batch(hr, g_dev)
    sync(device)
    degrade_s = (time.perf_counter() - t0) / steps
    step_s = statistics.median(times)
    row = {"steps": steps, "warmup": warmup, "steps_per_s": steps / total, "median_step_s": step_s,
           "times": [round(t, 5) for t in times], "samples_per_s": batch * steps / total,
           "hr_mpix_per_s": batch * patch * patch * steps / total / 1e6,
           "degrade_s_per_step": degrade_s, "degrade_share": degrade_s / step_s,
           "peak_rss_mb": mem.peak_mb, "cuda_max_allocated_mb": mem.cuda_mb, "gpu_utilisation": util.mean}
    row.update(count_syncs(lambda: trainer.step(phase, extra[0], g_dev), device))
    if profile_steps:
        row.update(profiled_busy(lambda hr: trainer.step(phase, hr, g_dev), extra[1:], device))
    return row


def count_syncs(fn, device) -> dict:
    """Host syncs in one call of ``fn`` (CUDA's sync debug mode: a warning per synchronising
    call) and where they come from; None on the CPU, where there is nothing to wait for."""
    if device.type != "cuda":
        return {"host_syncs_per_step": None, "sync_sites": None}
    sync(device)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        torch.cuda.set_sync_debug_mode("warn")
        try:
            fn()
        finally:
            torch.cuda.set_sync_debug_mode("default")
    sync(device)
    hits = [w for w in caught if "synchroniz" in str(w.message)]
    sites = Counter(f"{w.filename.rsplit('/', 1)[-1]}:{w.lineno}" for w in hits)
    return {"host_syncs_per_step": len(hits), "sync_sites": dict(sites.most_common(8))}


def profiled_busy(fn, batches, device) -> dict:
    """``fn`` on each batch under torch.profiler: the share of the span during which the device
    (the CPU when there is no GPU) was running something, and device events per step."""
    from torch.profiler import ProfilerActivity, profile

    cuda = device.type == "cuda"
    sync(device)
    activities = [ProfilerActivity.CPU] + ([ProfilerActivity.CUDA] if cuda else [])
    with profile(activities=activities) as prof:
        for hr in batches:
            fn(hr)
        sync(device)
    busy = device_busy(prof, cuda)
    return {"profiled_steps": len(batches), "profiler_busy_fraction": busy["busy_fraction"],
            "profiler_events_per_step": busy["events"] / len(batches), "profiler_span_s": busy["span_s"],
            "profiler_device": busy["device"]}


def parse_args(argv=None):
    p = parser(__doc__)
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
    p.add_argument("--log-every", type=int, default=1, help="read the loss on the host every N steps "
                   "[default: 1, a host sync per step]")
    p.add_argument("--sync-free-degrade", action="store_true", help="bicubic LR without degrade()'s host checks")
    p.add_argument("--fused-adam", action="store_true", help="torch.optim.Adam(fused=True)")
    p.add_argument("--cuda-graph", action="store_true", help="capture the step after the degradation as a CUDA graph")
    p.add_argument("--compile", choices=COMPILE_MODES, default=None, help="torch.compile G, D and VGG with this mode")
    p.add_argument("--compile-backend", default="inductor", help="torch.compile backend [default: inductor; "
                   "smoke: eager]")
    p.add_argument("--ladder", action="store_true", help="instead of one setting: the step levers added one at a "
                   "time (log every --ladder-log-every steps, sync-free degrade, fused Adam, CUDA graph on CUDA, "
                   "compile instead of the graph)")
    p.add_argument("--ladder-log-every", type=int, default=20)
    p.add_argument("--profile-steps", type=int, default=None, help="steps profiled for the GPU's busy share "
                   "[default: 5 on a GPU, 1 on the CPU; 0: none]")
    return parse(p, argv, "tiny models and patches, 1 step, no warm-up: seconds",
                 json="also write the results as JSON (rewritten after each row)")


def main(argv=None) -> dict:
    args = parse_args(argv)
    device = setup_device(args)
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
    profile_steps = args.profile_steps if args.profile_steps is not None else (5 if gpu else 1)
    backend = "eager" if args.smoke else args.compile_backend
    if args.ladder:
        settings = [o for o in ladder(args.ladder_log_every) if gpu or not o.cuda_graph]
    else:
        settings = [StepOptions(log_every=args.log_every, sync_free_degrade=args.sync_free_degrade,
                                fused_adam=args.fused_adam, cuda_graph=args.cuda_graph, compile_mode=args.compile)]
    machine = machine_info(device)
    print(machine_line(machine))
    print(f"generator: {arch.blocks} blocks, {arch.channels} channels, x{arch.scale} "
          f"({count_parameters(Generator(arch)):,} parameters); discriminator base {disc_base}; "
          f"VGG19 to {layer} with random weights (same FLOPs as ImageNet's); preset {args.preset} on {device}; "
          f"amp {'bf16' if amp else 'off'}; channels_last")
    src = hr_source(device)
    record = {"benchmark": "train_speed", "device": machine["gpu"] or f"cpu: {machine['cpu']}", "machine": machine,
              "generator": arch.to_dict(), "discriminator_base": disc_base, "vgg_layer": layer,
              "vgg_weights": "random (same FLOPs as ImageNet weights)", "preset": args.preset,
              "amp": "bf16" if amp else "off", "channels_last": True, "compile_backend": backend, "results": []}
    results = record["results"]
    print(f"\n{'batch':>6} {'patch':>6} {'phase':>9} {'steps/s':>9} {'samples/s':>10} {'s/step':>8} "
          f"{'degrade %':>9} {'syncs':>5} {'busy %':>6} {'peak RSS MB':>12} {'CUDA MB':>8} {'GPU %':>6}  setting")
    failed = False
    for batch, patch in configs:
        for options in settings:
            torch.manual_seed(0)
            trainer = None
            for phase in phases:
                row = {"batch": batch, "patch": patch, "phase": phase, "setting": options.label(),
                       "options": asdict(options)}
                try:
                    if trainer is None:
                        trainer = Trainer(arch, device, amp=amp, preset=args.preset, vgg_layer=layer,
                                          disc_base=disc_base, options=options, compile_backend=backend)
                    row.update(time_phase(trainer, phase, src, batch, patch, steps, warmup, profile_steps))
                except Exception as e:  # one setting failing (capture, compile) must not stop the others
                    failed = True
                    row["error"] = f"{type(e).__name__}: {(str(e).strip().splitlines() or [''])[0][:300]}"
                    print(f"{batch:>6} {patch:>6} {phase:>9} error: {row['error']}  ({options.label()})", flush=True)
                    results.append(row)
                    write_json(args.json, record, quiet=True)
                    continue
                results.append(row)
                write_json(args.json, record, quiet=True)
                _print_row(row)
            del trainer
            if options.compile_mode is not None:
                torch._dynamo.reset()
            if gpu:
                torch.cuda.empty_cache()
    print()
    for r in results:
        if "error" in r:
            print(f"TRAIN batch={r['batch']} patch={r['patch']} phase={r['phase']} setting={r['setting']!r} "
                  f"error={r['error']!r}")
        else:
            print(f"TRAIN batch={r['batch']} patch={r['patch']} phase={r['phase']} steps_per_s={r['steps_per_s']:.4g} "
                  f"degrade_share={r['degrade_share']:.3f} busy={_pct(r.get('profiler_busy_fraction'))} "
                  f"setting={r['setting']!r}")
    write_json(args.json, record)
    if failed:
        raise SystemExit(1)
    return record


def _pct(v) -> str:
    return "-" if v is None else f"{100 * v:.0f}%"


def _print_row(row: dict) -> None:
    cuda = f"{row['cuda_max_allocated_mb']:>8.0f}" if row["cuda_max_allocated_mb"] is not None else f"{'-':>8}"
    util = f"{row['gpu_utilisation']:>6.0f}" if row["gpu_utilisation"] is not None else f"{'-':>6}"
    syncs = row["host_syncs_per_step"] if row["host_syncs_per_step"] is not None else "-"
    print(f"{row['batch']:>6} {row['patch']:>6} {row['phase']:>9} {row['steps_per_s']:>9.3f} "
          f"{row['samples_per_s']:>10.2f} {row['median_step_s']:>8.3f} {100 * row['degrade_share']:>9.1f} "
          f"{syncs:>5} {_pct(row.get('profiler_busy_fraction')):>6} {row['peak_rss_mb']:>12.0f} {cuda} {util}  "
          f"{row['setting']}", flush=True)


if __name__ == "__main__":
    main()
