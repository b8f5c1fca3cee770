"""Training: one visible loop, :func:`fit`, driven by a :class:`TrainConfig`.

The loop's pieces are plain functions, usable on their own (benchmarks/train_speed.py times
them): :func:`training_pair` makes a batch, :func:`pretrain_step` and :func:`gan_step` take one
step of each phase and return its loss terms, :func:`save_checkpoint` and :func:`resume` write
and restore the training state, and :func:`resume_config` is the one ``--resume`` merge rule.

Two phases as in Ledig et al. 2017:

1. ``pretrain_steps`` of pixel loss (MSE or L1) with Adam: this alone gives SRResNet.
2. ``gan_steps`` of adversarial training, the generator starting from phase 1: each step
   first updates the discriminator (real HR vs generated SR), then the generator with
   ``content + 1e-3 * adversarial + 2e-8 * TV``. Content is VGG19 features (the paper's
   VGG54, needs ImageNet weights: online, or ``vgg_weights=PATH``) or pixel MSE
   (``content_loss="mse"``, the paper's SRGAN-MSE variant, for machines without VGG weights).

Data: random HR patches from a folder (:mod:`srgan.data`); LR inputs are made on the
training device by :func:`srgan.degrade.degrade`. Photo presets train on RGB in [0, 1];
the astro preset trains on noise-unit data through the model's asinh
:class:`~srgan.normalize.Normalization`, with sky and noise measured on each LR patch and the
same affine map applied to LR input and HR target, so the loss lives in network space.

Reproducibility: every random draw of step ``i`` (patch choice, crop, flip, degradation
noise, torch's global RNG) is seeded from ``(seed, rank, i)``, so a run resumed from any
checkpoint reaches bit-identical weights to an uninterrupted one on the CPU. The learning
rate is a pure function of the step (:func:`get_lr`), so there is no scheduler state to lose.

Run directory (``config.out``)::

    checkpoint.safetensors  training state (G, D, optimisers, step, config, RNG), atomic
    model.safetensors       the generator as an srgan model file (load_model / srgan upscale)
    srresnet.safetensors    the phase-1 generator, when a GAN phase follows
    metrics.jsonl           one JSON object per logged step and per validation
    samples/step_NNNNNNN.png  LR-bicubic | SR | HR triptychs at each validation

Distributed: under ``torchrun`` (RANK/WORLD_SIZE set) each process trains on its own batches
(``batch_size`` per process, seeded by rank); the generator is wrapped in
DistributedDataParallel, the discriminator's gradients are averaged with an all-reduce
(it runs several forwards per step, which DDP handles poorly); rank 0 alone writes files.
"""

from __future__ import annotations

import atexit
import json
import logging
import math
import os
import signal
import threading
import time
from contextlib import nullcontext
from dataclasses import asdict, dataclass, fields, replace
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

from srgan.checkpoint import atomic_write, load_model, load_state, save_model, save_state
from srgan.data import PatchDataset, StepBatches, find_images, load_images, step_seed, to_float
from srgan.degrade import PRESETS, degrade
from srgan.device import resolve_device
from srgan.errors import ConfigError, InputError, TrainingDivergedError, WeightsUnavailableError
from srgan.losses import (GAN_LOSSES, PIXEL_LOSSES, LossWeights, VGGContentLoss, discriminator_loss_terms,
                          generator_loss, pixel_loss)
from srgan.models import Discriminator, Generator, GeneratorConfig
from srgan.normalize import Normalization, sky_and_noise_torch

log = logging.getLogger(__name__)

SCHEDULES = ("constant", "step", "cosine")
CONTENT_LOSSES = ("vgg", "mse")
AMP_MODES = ("auto", "bf16", "off")
CHECKPOINT = "checkpoint.safetensors"  # the training state in a run directory
# options that may differ from the stored run on --resume (longer runs, other hardware, paths)
RESUMABLE = ("hr", "val", "pretrain_steps", "gan_steps", "val_every", "checkpoint_every", "log_every",
             "device", "workers", "cache", "progress", "resume", "command", "amp")


@dataclass
class TrainConfig:
    hr: str = ""  # folder of HR training images (searched recursively)
    out: str = ""  # run directory (checkpoint, model file, metrics, samples)
    scale: int | None = None  # 2, 4 or 8; None: 4, or the --init model's
    preset: str | None = None  # degradation: bicubic, photo or astro; None: bicubic, or the --init model's
    pretrain_steps: int = 100_000  # phase 1: pixel-loss steps (SRResNet)
    gan_steps: int = 0  # phase 2: adversarial steps (SRGAN); 0 skips it
    batch_size: int = 16  # patches per step (per process under torchrun)
    patch_size: int = 96  # HR patch side in pixels, a multiple of scale
    blocks: int | None = None  # residual blocks; None: 16, or the --init model's
    channels: int | None = None  # feature maps; None: 64, or the --init model's
    batch_norm: bool | None = None  # BatchNorm in the generator; None: True, or the --init model's
    lr: float = 1e-4  # Adam learning rate at the start of each phase
    schedule: str = "cosine"  # per phase: constant, step (x0.1 after half: the paper's) or cosine (to lr/100)
    grad_clip: float = 1.0  # max global gradient norm per network; 0 disables clipping
    val: str | None = None  # folder of HR validation images; None: hold out a few training images
    val_every: int = 1000  # steps between validations (and sample triptychs)
    checkpoint_every: int = 1000  # steps between checkpoints (also at each phase end and on Ctrl-C)
    log_every: int = 10  # steps between metrics.jsonl lines (losses averaged over them)
    resume: bool = False  # continue the run in `out` from its checkpoint
    init: str | None = None  # start the generator from a model file or embedded model name (its scale may differ: init_weights)
    content_loss: str = "vgg"  # GAN phase: vgg (VGG19 features) or mse (SRGAN-MSE)
    vgg_weights: str | None = "imagenet"  # "imagenet" (torchvision download), a .pth/.safetensors path, or "random" (tests only)
    vgg_layer: str = "relu5_4"  # VGG feature map: relu5_4 (the paper's VGG54) or relu2_2 (VGG22)
    gan_loss: str = "bce"  # bce (the paper's), relativistic (ESRGAN) or wgan-gp
    pixel_loss: str = "mse"  # phase 1 loss: mse or l1
    content_weight: float = 1.0
    adversarial_weight: float = 1e-3
    tv_weight: float = 2e-8
    gp_weight: float = 10.0  # gradient-penalty weight for wgan-gp
    device: str = "auto"  # auto (cuda if available, else cpu), cpu, cuda, cuda:N
    seed: int = 0
    amp: str = "auto"  # bf16 autocast: auto (on CUDA only), bf16 (also on CPU) or off
    channels_last: bool = True  # NHWC memory layout (faster convolutions on GPU and oneDNN CPUs)
    workers: int = 0  # DataLoader worker processes making patches (0: in the training process)
    cache: bool = True  # keep decoded training images in memory
    progress: bool = True  # tqdm progress bar on stderr
    command: str = ""  # the command line, recorded in the model file


# ----------------------------------------------------------------------------- config


def init_weights(generator: torch.nn.Module, init: torch.nn.Module) -> list[str]:
    """Copy ``init``'s weights into ``generator``; returns the names that stayed as initialised.

    Same architecture: everything (strict). Another scale (e.g. an x2 model started from
    photo-x4): the head, the residual trunk, the upsampling stages both have (x2 has the first
    of x4's two) and the tail are copied, and the stages ``init`` lacks start from the seed, as
    EDSR starts its x3/x4 models from x2: the trunk's features are the expensive part to learn.
    """
    mine, theirs = generator.state_dict(), init.state_dict()
    same = {k: v for k, v in theirs.items() if k in mine and mine[k].shape == v.shape}
    if len(same) == len(mine) == len(theirs):
        generator.load_state_dict(theirs)
        return []
    generator.load_state_dict(same, strict=False)
    return sorted(k for k in mine if k not in same)


def _default(value, init_value, default):
    return value if value is not None else (init_value if init_value is not None else default)


def resolve_config(config: TrainConfig) -> tuple[TrainConfig, GeneratorConfig, Normalization]:
    """Check the options and fill the ``None`` ones from ``--init`` or the defaults.

    Returns the completed config, the generator architecture and the input normalisation.
    Raises ConfigError for invalid or conflicting options.
    """
    init_info = None
    if config.init:
        from srgan.checkpoint import read_model_info

        init_info = read_model_info(config.init)
        ic = init_info.config
        given = {"blocks": config.blocks, "channels": config.channels, "batch_norm": config.batch_norm}
        conflicts = [f"--{k.replace('_', '-')} {v} (model has {getattr(ic, k)})"
                     for k, v in given.items() if v is not None and v != getattr(ic, k)]
        if conflicts:
            raise ConfigError(f"--init {config.init} fixes the architecture; drop or change "
                              f"{', '.join(conflicts)}")
    ic = init_info.config if init_info else None
    config = replace(
        config,
        scale=_default(config.scale, ic and ic.scale, 4),
        blocks=_default(config.blocks, ic and ic.blocks, 16),
        channels=_default(config.channels, ic and ic.channels, 64),
        batch_norm=_default(config.batch_norm, ic.batch_norm if ic else None, True),
        preset=_default(config.preset, init_info and init_info.preset, "bicubic"),
    )
    if not config.hr:
        raise ConfigError("no training images given: set --hr DIR")
    if not config.out:
        raise ConfigError("no run directory given: set --out DIR")
    if config.preset not in PRESETS:
        raise ConfigError(f"unknown --preset {config.preset!r}; choose one of {', '.join(PRESETS)}")
    for name, value, allowed in (("--schedule", config.schedule, SCHEDULES),
                                 ("--content-loss", config.content_loss, CONTENT_LOSSES),
                                 ("--gan-loss", config.gan_loss, GAN_LOSSES),
                                 ("--pixel-loss", config.pixel_loss, PIXEL_LOSSES),
                                 ("--amp", config.amp, AMP_MODES)):
        if value not in allowed:
            raise ConfigError(f"{name} must be one of {', '.join(allowed)}, got {value!r}")
    for name in ("pretrain_steps", "gan_steps", "workers"):
        if getattr(config, name) < 0:
            raise ConfigError(f"--{name.replace('_', '-')} must be >= 0, got {getattr(config, name)}")
    for name in ("batch_size", "val_every", "checkpoint_every", "log_every"):
        if getattr(config, name) < 1:
            raise ConfigError(f"--{name.replace('_', '-')} must be >= 1, got {getattr(config, name)}")
    if config.patch_size % config.scale or config.patch_size < 2 * config.scale:
        raise ConfigError(f"--patch-size must be a multiple of --scale {config.scale} and at least "
                          f"{2 * config.scale} px, got {config.patch_size}")
    if config.gan_steps and config.patch_size < 16:
        raise ConfigError(f"the discriminator needs --patch-size >= 16 for the GAN phase, got {config.patch_size}")
    if config.lr <= 0:
        raise ConfigError(f"--lr must be > 0, got {config.lr}")
    channels = 1 if config.preset == "astro" else 3
    arch = GeneratorConfig(scale=config.scale, in_channels=channels, out_channels=channels,
                           channels=config.channels, blocks=config.blocks, batch_norm=config.batch_norm)
    normalization = Normalization("asinh") if config.preset == "astro" else Normalization("unit")
    if init_info is not None:
        if init_info.config.in_channels != channels:
            raise ConfigError(f"--init {config.init} has {init_info.config.in_channels} input channel(s) but "
                              f"--preset {config.preset} trains {channels}; use a matching --preset")
        if init_info.normalization.kind != normalization.kind:
            raise ConfigError(f"--init {config.init} uses {init_info.normalization.kind!r} normalisation, "
                              f"--preset {config.preset} needs {normalization.kind!r}; use a matching --preset")
        normalization = init_info.normalization
    return config, arch, normalization


def resume_config(config: TrainConfig, stored: TrainConfig) -> TrainConfig:
    """The options of a resumed run: the ``stored`` ones, with what ``config`` may change.

    This is the one merge rule of ``--resume`` (the library's ``fit`` and ``srgan train``).
    A field of ``config`` left at its TrainConfig default takes the stored value, so
    ``TrainConfig(out=RUN, resume=True, pretrain_steps=N)`` extends a run. A changed
    ``RESUMABLE`` field (step counts, data paths, device, logging) replaces the stored one; a
    change to any other field would not continue the same run and is a ConfigError.

    Returns the merged config with ``resume=True``. Raises ConfigError listing what differs.
    """
    defaults = TrainConfig()
    given = {f.name: getattr(config, f.name) for f in fields(TrainConfig)
             if getattr(config, f.name) != getattr(defaults, f.name)}  # left at defaults: take the run's
    changed = [n for n, v in given.items() if n not in RESUMABLE and v is not None and v != getattr(stored, n)]
    if changed:
        raise ConfigError(f"--resume continues {config.out} with its stored options; these differ: "
                          + ", ".join(f"{n}={getattr(config, n)!r} (run has {getattr(stored, n)!r})" for n in changed)
                          + "; start a new --out with --init to change them")
    return replace(stored, **{n: v for n, v in given.items() if n in RESUMABLE and n != "resume"}, resume=True)


def get_lr(step: int, config: TrainConfig) -> float:
    """Learning rate of a step: each phase restarts at ``config.lr`` and decays per ``schedule``.

    ``constant``; ``step``: x0.1 for the second half of the phase (the paper's SRGAN
    schedule: 1e-4 then 1e-5); ``cosine``: cosine decay to lr/100 at the phase end.
    """
    if step < config.pretrain_steps:
        t, n = step, config.pretrain_steps
    else:
        t, n = step - config.pretrain_steps, max(config.gan_steps, 1)
    if config.schedule == "constant":
        return config.lr
    if config.schedule == "step":
        return config.lr if t < n / 2 else config.lr * 0.1
    low = config.lr * 0.01
    return low + 0.5 * (config.lr - low) * (1 + math.cos(math.pi * t / n))


# ----------------------------------------------------------------------------- helpers


def to_network(lr: torch.Tensor, hr: torch.Tensor, normalization: Normalization):
    """LR input and HR target in network space; asinh: one per-sample affine map from the LR's sky/noise."""
    if normalization.kind == "unit":
        return lr, hr
    sky, noise = sky_and_noise_torch(lr)
    return normalization.forward(lr, sky, noise), normalization.forward(hr, sky, noise)


@torch.no_grad()
def training_pair(hr: torch.Tensor, config: TrainConfig, normalization: Normalization,
                  generator: torch.Generator | None = None):
    """(input, target) in network space for an HR batch (B, C, P, P): degrade, then normalise.

    ``generator`` draws the degradation's randomness; the loop seeds it per step with
    ``step_seed(seed, rank, step, 2)`` on the training device.
    """
    lr = degrade(hr, config.preset, config.scale, generator=generator)
    return to_network(lr, hr, normalization)


def torch_bicubic_upsample(x: torch.Tensor, scale: int) -> torch.Tensor:
    """(B, C, h, w) -> (B, C, h*scale, w*scale) float, torch's bicubic (a = -0.75), unclipped.

    The validation baseline, on network-space tensors on the device. Not the published
    protocol's baseline: :func:`srgan.evaluate.bicubic_upsample` is Pillow's bicubic on 8-bit
    images (a = -0.5, rounded to uint8), so their scores differ slightly.
    """
    return F.interpolate(x, scale_factor=scale, mode="bicubic", align_corners=False)


def _average_gradients(module, world_size: int) -> None:
    """All-reduce (mean) of a module's gradients across processes: every rank ends with the same ones."""
    import torch.distributed as dist

    grads = [p.grad for p in module.parameters() if p.grad is not None]
    if not grads:
        return
    flat = torch.cat([g.reshape(-1) for g in grads])
    dist.all_reduce(flat)
    flat /= world_size
    offset = 0
    for g in grads:
        g.copy_(flat[offset:offset + g.numel()].view_as(g))
        offset += g.numel()


def _adam(params, lr):
    return torch.optim.Adam(params, lr=lr, betas=(0.9, 0.999))


def _new_discriminator(config: TrainConfig, channels: int, device, memory_format):
    """(discriminator, its Adam): D initialised from the seed alone (same weights whenever it is built)."""
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(step_seed(config.seed, 1 << 20))
        discriminator = Discriminator(in_channels=channels).to(device)
    discriminator = discriminator.to(memory_format=memory_format)
    return discriminator, _adam(discriminator.parameters(), config.lr)


def _make_content_loss(config: TrainConfig, device):
    """The GAN phase's content loss module, built before training starts (fail fast offline)."""
    if config.content_loss == "mse":
        return None
    weights = None if config.vgg_weights == "random" else config.vgg_weights
    try:
        return VGGContentLoss(layer=config.vgg_layer, weights=weights).to(device).eval()
    except WeightsUnavailableError as e:
        raise WeightsUnavailableError(f"{e} Without VGG19 weights, train SRGAN-MSE with --content-loss mse.") from e


# ----------------------------------------------------------------------------- one step of each phase


def _autocast(device: torch.device, amp: bool, cache: bool = True):
    return torch.autocast(device.type, dtype=torch.bfloat16, cache_enabled=cache) if amp else nullcontext()


def loss_weights(config: TrainConfig) -> LossWeights:
    """The GAN phase's loss weights from the config (no pixel term: content is VGG or pixel MSE)."""
    return LossWeights(pixel=0.0, content=config.content_weight, adversarial=config.adversarial_weight,
                       tv=config.tv_weight, gradient_penalty=config.gp_weight)


def pretrain_step(generator: torch.nn.Module, opt_g: torch.optim.Optimizer, x: torch.Tensor, y: torch.Tensor,
                  config: TrainConfig, *, amp: bool = False, amp_cache: bool = True) -> dict[str, torch.Tensor]:
    """One phase-1 (SRResNet) step: pixel loss of ``generator(x)`` against ``y``, backward, clip, Adam.

    Args:
        generator: the generator, or its DistributedDataParallel wrapper (whose backward
            all-reduces the gradients, so every rank takes the same step).
        opt_g: its optimiser, with this step's learning rate already set.
        x: (B, C, h, w) input, y: (B, C, h*scale, w*scale) target, in network space
            (:func:`training_pair`).
        config: ``pixel_loss`` (mse or l1) and ``grad_clip`` (0: no clipping) are read.
        amp: run the forward pass under bf16 autocast (the loss is computed in fp32).
        amp_cache: autocast's cache of casted weights; False when the step is captured as a
            CUDA graph (a replay must redo the casts of the updated weights).

    Returns:
        {"pixel": loss, "grad_norm_g": G's gradient norm before clipping}, detached 0-d tensors.
    """
    with _autocast(x.device, amp, amp_cache):
        sr = generator(x)
    sr = sr.float()
    loss = pixel_loss(sr, y, kind=config.pixel_loss)
    opt_g.zero_grad(set_to_none=True)
    loss.backward()
    terms = {"pixel": loss.detach(), "grad_norm_g": _clip(generator, config.grad_clip)}
    opt_g.step()
    return terms


def gan_step(generator: torch.nn.Module, discriminator: Discriminator, opt_g: torch.optim.Optimizer,
             opt_d: torch.optim.Optimizer, x: torch.Tensor, y: torch.Tensor, config: TrainConfig, *,
             content: torch.nn.Module | None = None, amp: bool = False, rng: torch.Generator | None = None,
             world_size: int = 1, amp_cache: bool = True) -> dict[str, torch.Tensor]:
    """One phase-2 (SRGAN) step: the discriminator's update, then the generator's.

    ``sr = generator(x)`` once; D steps on (y, sr detached) with ``config.gan_loss`` (plus the
    gradient penalty for wgan-gp); then, with D frozen, G steps on
    ``content + adversarial + TV`` (weights from :func:`loss_weights`) against the updated D.
    Each network's gradients are clipped to ``config.grad_clip`` before its Adam step.

    Args:
        generator: the generator, or its DistributedDataParallel wrapper.
        discriminator: the discriminator (never DDP-wrapped: it runs several forwards a step).
        opt_g, opt_d: their optimisers, with this step's learning rate already set.
        x: (B, C, h, w) input, y: (B, C, h*scale, w*scale) target, in network space.
        config: ``gan_loss``, ``grad_clip`` and the loss weights are read.
        content: the VGG content loss module; None: pixel MSE (SRGAN-MSE).
        amp: bf16 autocast of the forward passes.
        rng: draws the gradient penalty's interpolation weights (wgan-gp).
        world_size: processes under torchrun; above 1, D's gradients are all-reduced (mean)
            before clipping, so every rank takes the same D step (G's are DDP's job).
        amp_cache: autocast's weight-cast cache (False for a CUDA-graph capture, as in
            :func:`pretrain_step`).

    Returns:
        The unweighted G terms ("content", "adversarial", "tv"), "generator" (G's weighted
        total), D's "d_loss", "d_real", "d_fake" (mean logits), "gp" (wgan-gp only), and
        "grad_norm_g", "grad_norm_d" (before clipping): detached 0-d tensors.
    """
    weights = loss_weights(config)
    with _autocast(x.device, amp, amp_cache):
        sr = generator(x)
    sr = sr.float()

    discriminator.requires_grad_(True)
    with _autocast(x.device, amp, amp_cache):
        d_total, d_terms = discriminator_loss_terms(discriminator, y, sr, gan_loss=config.gan_loss,
                                                    weights=weights, generator=rng)
    opt_d.zero_grad(set_to_none=True)
    d_total.float().backward()
    if world_size > 1:
        _average_gradients(discriminator, world_size)
    d_norm = _clip(discriminator, config.grad_clip)
    opt_d.step()

    discriminator.requires_grad_(False)  # G step: gradients reach G through D, D stays put
    with _autocast(x.device, amp, amp_cache):
        loss, terms = generator_loss(sr, y, weights=weights, discriminator=discriminator, content=content,
                                     gan_loss=config.gan_loss)
    opt_g.zero_grad(set_to_none=True)
    loss.float().backward()
    terms = {**terms, "generator": loss.detach(), **d_terms,
             "grad_norm_g": _clip(generator, config.grad_clip), "grad_norm_d": d_norm}
    opt_g.step()
    return terms


# ----------------------------------------------------------------------------- checkpoints


def save_checkpoint(path, *, step: int, config: TrainConfig, generator: Generator, opt_g: torch.optim.Optimizer,
                    discriminator: Discriminator | None = None, opt_d: torch.optim.Optimizer | None = None,
                    wall_time: float = 0.0) -> None:
    """Write the training state after ``step`` steps (atomic): what :func:`resume` continues from.

    Holds both networks and their Adam states, the step, the config, the learning rate,
    torch's RNG states (CPU, and CUDA on a GPU) and the training time so far, as tensors and
    JSON in a safetensors file (never pickle). ``generator`` is the plain module, not DDP's.
    """
    device = next(generator.parameters()).device
    rng = {"torch": torch.get_rng_state(), "cuda": torch.cuda.get_rng_state(device) if device.type == "cuda" else None}
    save_state(path, {
        "step": step, "phase": "gan" if step > config.pretrain_steps else "pretrain",  # of the last step
        "config": asdict(config), "generator": generator.state_dict(), "opt_g": opt_g.state_dict(),
        "discriminator": discriminator.state_dict() if discriminator is not None else None,
        "opt_d": opt_d.state_dict() if opt_d is not None else None,
        "schedule": {"kind": config.schedule, "lr": get_lr(max(step - 1, 0), config)},
        "rng": rng, "wall_time": wall_time,
    })


def read_checkpoint(run) -> dict:
    """The training state in a run directory (``save_checkpoint``'s dict); ConfigError when there is none."""
    path = Path(run) / CHECKPOINT
    if not path.is_file():
        raise ConfigError(f"--resume: no checkpoint at {path}; start the run without --resume")
    return load_state(path)


def resume(state: dict, config: TrainConfig, generator: Generator, opt_g: torch.optim.Optimizer, *,
           memory_format=torch.contiguous_format) -> tuple[int, float, Discriminator | None, torch.optim.Optimizer | None]:
    """Load a checkpoint's state into a freshly built generator and its optimiser.

    Rebuilds the discriminator and its Adam when the GAN phase had begun, and restores
    torch's RNG states, so that the next step is the one an uninterrupted run would take.

    Returns:
        (step, wall_time, discriminator or None, opt_d or None).
    """
    device = next(generator.parameters()).device
    generator.load_state_dict(state["generator"])
    opt_g.load_state_dict(state["opt_g"])
    discriminator = opt_d = None
    if state["discriminator"] is not None:
        discriminator, opt_d = _new_discriminator(config, generator.config.in_channels, device, memory_format)
        discriminator.load_state_dict(state["discriminator"])
        opt_d.load_state_dict(state["opt_d"])
    torch.set_rng_state(state["rng"]["torch"])
    if device.type == "cuda" and state["rng"]["cuda"] is not None:
        torch.cuda.set_rng_state(state["rng"]["cuda"], device)
    return state["step"], state["wall_time"], discriminator, opt_d


# ----------------------------------------------------------------------------- validation


class Validation:
    """Fixed validation pairs (LR made once with a fixed seed) and their bicubic scores."""

    def __init__(self, images, config: TrainConfig, normalization: Normalization, device):
        self.scale, self.normalization, self.device = config.scale, normalization, device
        self.astro = config.preset == "astro"
        self.pairs = []
        for i, image in enumerate(images):
            hr = to_float(image)
            h, w = (s - s % config.scale for s in hr.shape[-2:])
            hr = hr[None, :, :h, :w].to(device)
            g = torch.Generator(device=device).manual_seed(step_seed(config.seed, 1 << 21, i))
            lr = degrade(hr, config.preset, config.scale, generator=g)
            self.pairs.append(to_network(lr, hr, normalization))
        scores = [self.score(torch_bicubic_upsample(x, self.scale), y) for x, y in self.pairs]
        self.bicubic = {k: float(np.mean([s[k] for s in scores])) for k in scores[0]} if scores else {}

    def score(self, sr: torch.Tensor, hr: torch.Tensor) -> dict:
        """PSNR/SSIM: Y channel of 8-bit RGB for photos (border = scale), the data itself for astro."""
        from skimage.metrics import structural_similarity

        from srgan.metrics import psnr_data, psnr_y, shave, ssim_y

        s = self.scale
        if not self.astro:
            a = sr[0].clamp(0, 1).permute(1, 2, 0).float().cpu().numpy()
            b = hr[0].permute(1, 2, 0).float().cpu().numpy()
            if a.shape[2] == 1:
                a, b = a[..., 0], b[..., 0]
            return {"psnr": psnr_y(a, b, border=s), "ssim": ssim_y(a, b, border=s)}
        a, b = sr[0, 0].float().cpu().numpy(), hr[0, 0].float().cpu().numpy()
        rng = float(shave(b, s).max() - shave(b, s).min()) or 1.0
        return {"psnr": psnr_data(a, b, border=s, data_range=rng),
                "ssim": float(structural_similarity(shave(b, s), shave(a, s), data_range=rng))}

    @torch.no_grad()
    def run(self, generator: Generator) -> tuple[dict, np.ndarray | None]:
        """Mean scores of ``generator`` and an (H, 3W, C) uint8 triptych of the first image."""
        was_training = generator.training
        generator.eval()
        scores, triptych = [], None
        for i, (x, y) in enumerate(self.pairs):
            sr = generator(x)
            scores.append(self.score(sr, y))
            if i == 0:
                triptych = self._triptych(torch_bicubic_upsample(x, self.scale), sr, y)
        generator.train(was_training)
        return {k: float(np.mean([s[k] for s in scores])) for k in scores[0]}, triptych

    def _triptych(self, bic, sr, hr, size: int = 192) -> np.ndarray:
        h, w = hr.shape[-2:]
        top, left = max(0, (h - size) // 2), max(0, (w - size) // 2)
        crops = [t[0, :, top:top + size, left:left + size].float().cpu() for t in (bic, sr, hr)]
        if self.astro:  # network space (asinh) shown between the HR crop's 0.5 and 99.5 percentiles
            lo, hi = np.percentile(crops[2].numpy(), [0.5, 99.5])
            crops = [(c - lo) / max(hi - lo, 1e-6) for c in crops]
        gap = torch.ones(crops[0].shape[0], crops[0].shape[1], 4)
        row = torch.cat([crops[0], gap, crops[1], gap, crops[2]], dim=2).clamp(0, 1)
        out = (row * 255).round().byte().permute(1, 2, 0).numpy()
        return out[..., 0] if out.shape[2] == 1 else out


def _save_png(path: Path, image: np.ndarray) -> None:
    from PIL import Image

    atomic_write(path, lambda tmp: Image.fromarray(image).save(tmp, format="PNG"))


def _validation_images(paths: list[Path], channels: int, min_size: int, held_out: bool) -> list[torch.Tensor]:
    """The validation images; unreadable ones are skipped with a warning (by load_images). When
    none of the held-out files is usable, validation is skipped with a warning instead of
    stopping a run that has enough readable training images; an unusable --val is an error."""
    try:
        return [im for _, im in load_images(paths, channels, min_size=min_size, what="--val")]
    except InputError as e:
        if not held_out:
            raise
        log.warning("validation skipped: none of the held-out images is usable (%s); pass --val FOLDER", e)
        return []


def _split_validation(paths: list[Path], seed: int) -> tuple[list[Path], list[Path]]:
    """Hold out validation images when no --val is given: min(5, max(1, n // 10)) files drawn by the seed."""
    if len(paths) < 2:
        return paths, []
    k = min(5, max(1, len(paths) // 10))
    order = torch.randperm(len(paths), generator=torch.Generator().manual_seed(seed)).tolist()
    held = set(order[:k])
    return [p for i, p in enumerate(paths) if i not in held], [p for i, p in enumerate(paths) if i in held]


# ----------------------------------------------------------------------------- the loop


class _Interrupt:
    """SIGINT sets a flag that the loop checks at the end of each step; a second one raises at once."""

    def __init__(self):
        self.requested = False
        self._previous = None

    def __enter__(self):
        if threading.current_thread() is threading.main_thread():
            self._previous = signal.signal(signal.SIGINT, self._handle)
        return self

    def _handle(self, signum, frame):
        if self.requested:
            raise KeyboardInterrupt
        self.requested = True

    def __exit__(self, *exc):
        if self._previous is not None:
            signal.signal(signal.SIGINT, self._previous)


def _setup_distributed(config: TrainConfig):
    """(rank, world_size, device); initialises the process group under torchrun."""
    device = resolve_device(config.device)  # auto/cuda: cuda:LOCAL_RANK, one GPU per process
    world = int(os.environ.get("WORLD_SIZE", "1"))
    if world <= 1:
        return 0, 1, device
    import torch.distributed as dist

    if device.type == "cuda":
        torch.cuda.set_device(device)
    if not dist.is_initialized():
        dist.init_process_group(backend="nccl" if device.type == "cuda" else "gloo")
        atexit.register(lambda: dist.is_initialized() and dist.destroy_process_group())
    return dist.get_rank(), dist.get_world_size(), device


def _ignore_sigint(worker_id: int) -> None:
    """DataLoader workers leave Ctrl-C to the training process, which checkpoints first."""
    signal.signal(signal.SIGINT, signal.SIG_IGN)


def fit(config: TrainConfig) -> Path:
    """Train a generator as ``config`` says; returns the run directory.

    With ``config.resume`` the run continues from ``out/checkpoint.safetensors`` with the
    stored options, merged by :func:`resume_config`: fields left at their TrainConfig defaults
    take the stored values, the ``RESUMABLE`` ones (step counts, paths, device, logging) may
    change, and any other difference is a ConfigError (start a new run with ``init=`` to
    change those).

    Raises:
        ConfigError: invalid options, or ``--resume`` with changed architecture/loss options.
        InputError: no usable training image, or all smaller than the patch.
        WeightsUnavailableError: VGG content loss without obtainable VGG19 weights.
        TrainingDivergedError: a loss or gradient became NaN/inf (the last checkpoint is kept).
    """
    from tqdm.auto import tqdm

    t_start = time.time()
    run = Path(config.out)
    ckpt_path, model_path, metrics_path = run / CHECKPOINT, run / "model.safetensors", run / "metrics.jsonl"
    state = None
    if config.resume:
        state = read_checkpoint(run)
        config = resume_config(config, TrainConfig(**state["config"]))
    elif ckpt_path.exists():
        raise ConfigError(f"{run} already holds a training run: add --resume to continue it or choose another --out")
    config, arch, normalization = resolve_config(config)
    rank, world, device = _setup_distributed(config)
    main = rank == 0
    cuda = device.type == "cuda"
    if cuda:
        torch.backends.cudnn.benchmark = True
        torch.backends.cuda.matmul.allow_tf32 = torch.backends.cudnn.allow_tf32 = True
    use_amp = config.amp == "bf16" or (config.amp == "auto" and cuda)
    memory_format = torch.channels_last if config.channels_last else torch.contiguous_format
    total = config.pretrain_steps + config.gan_steps

    # VGG weights first: offline without them, fail before loading any data
    content_loss = _make_content_loss(config, device) if config.gan_steps else None

    # --- data: training patches and validation pairs (errors before any training) ---
    paths = find_images(config.hr)
    if config.val:
        train_paths, val_paths = paths, find_images(config.val)
    else:
        train_paths, val_paths = _split_validation(paths, config.seed)
        if not val_paths and main:
            log.warning("only one training image and no --val: validation is skipped")
    dataset = PatchDataset(train_paths, config.patch_size, arch.in_channels, cache=config.cache)
    val_images = _validation_images(val_paths, arch.in_channels, 2 * config.scale, held_out=not config.val) \
        if val_paths and main else []
    validation = Validation(val_images, config, normalization, device) if val_images else None

    # --- models and optimisers (D is built at the first GAN step), or the checkpoint's ---
    torch.manual_seed(config.seed)
    generator = Generator(arch)
    if config.init and state is None:
        fresh = init_weights(generator, load_model(config.init))
        if fresh and main:
            log.info("--init %s: %d tensors start from the seed (%s)", config.init, len(fresh),
                     ", ".join(sorted({k.rsplit(".", 1)[0] for k in fresh})))
    generator = generator.to(device).to(memory_format=memory_format).train()
    opt_g = _adam(generator.parameters(), config.lr)
    discriminator = opt_d = None
    step, wall_time = 0, 0.0
    if state is not None:
        step, wall_time, discriminator, opt_d = resume(state, config, generator, opt_g, memory_format=memory_format)
        if main:
            log.info("resuming %s at step %d of %d", run, step, total)
            _truncate_metrics(metrics_path, step)
    g_train = generator  # what the steps run: DDP's wrapper all-reduces G's gradients in backward
    if world > 1:
        from torch.nn.parallel import DistributedDataParallel

        g_train = DistributedDataParallel(generator, device_ids=[device.index] if cuda else None)

    summary = {"data": str(config.hr), "images": dataset.files, "image_planes": len(dataset),
               "validation_images": len(val_images), "preset": config.preset, "scale": config.scale,
               "batch_size": config.batch_size, "world_size": world, "patch_size": config.patch_size,
               "pretrain_steps": config.pretrain_steps, "gan_steps": config.gan_steps,
               "content_loss": config.content_loss, "gan_loss": config.gan_loss, "lr": config.lr,
               "schedule": config.schedule, "seed": config.seed, "device": str(device),
               "amp": use_amp, "command": config.command}

    def write_metrics(record: dict) -> None:
        if main:
            with open(metrics_path, "a") as f:
                f.write(json.dumps(record) + "\n")

    if main:
        run.mkdir(parents=True, exist_ok=True)
    last_val: dict = {}
    loader = iter(torch.utils.data.DataLoader(
        StepBatches(dataset, config.batch_size, config.seed, rank), batch_size=None,
        sampler=range(step, total), num_workers=config.workers, pin_memory=cuda,
        worker_init_fn=_ignore_sigint if config.workers else None))
    bar = tqdm(total=total, initial=step, unit="step", dynamic_ncols=True, disable=not (config.progress and main))
    pending: list[tuple[int, dict]] = []  # (step, loss terms as tensors) since the last log line
    t_log, step_log = time.time(), step

    with _Interrupt() as interrupt:
        try:
            while step < total:
                gan = step >= config.pretrain_steps
                if gan and discriminator is None:  # first GAN step: keep the SRResNet, build D, fresh Adam for G
                    if main:
                        save_model(run / "srresnet.safetensors", generator, normalization=normalization,
                                   preset=config.preset, training=dict(summary, steps=step, gan_steps=0,
                                                                       validation=last_val))
                    discriminator, opt_d = _new_discriminator(config, arch.in_channels, device, memory_format)
                    opt_g = _adam(generator.parameters(), config.lr)
                lr_now = get_lr(step, config)
                for opt in (opt_g, opt_d):
                    for group in (opt.param_groups if opt is not None else []):
                        group["lr"] = lr_now
                torch.manual_seed(step_seed(config.seed, rank, step, 1))  # any global-RNG use is per step too

                # batch: HR patches -> LR on the device -> network space
                hr = next(loader).to(device, non_blocking=True)
                g = torch.Generator(device=device).manual_seed(step_seed(config.seed, rank, step, 2))
                x, y = training_pair(hr, config, normalization, g)
                x = x.contiguous(memory_format=memory_format)
                y = y.contiguous(memory_format=memory_format)

                if gan:  # phase 2: discriminator step, then generator step
                    terms = gan_step(g_train, discriminator, opt_g, opt_d, x, y, config, content=content_loss,
                                     amp=use_amp, rng=g, world_size=world)
                else:  # phase 1: pixel loss
                    terms = pretrain_step(g_train, opt_g, x, y, config, amp=use_amp)
                step += 1
                pending.append((step, terms))
                bar.update(1)

                # log, validate, checkpoint (a NaN check guards every write)
                boundary = step == total or step == config.pretrain_steps
                do_val = validation is not None and (step % config.val_every == 0 or boundary)
                stop = interrupt.requested
                if world > 1:  # every rank stops at the same step when any saw Ctrl-C
                    import torch.distributed as dist

                    flag = torch.tensor([float(stop)], device=device)
                    dist.all_reduce(flag, op=dist.ReduceOp.MAX)
                    stop = bool(flag.item())
                do_ckpt = step % config.checkpoint_every == 0 or boundary or stop
                if step % config.log_every == 0 or boundary or do_val or do_ckpt:
                    means = _check_and_average(pending, config)
                    now = time.time()
                    rate = (step - step_log) / max(now - t_log, 1e-9)
                    t_log, step_log = now, step
                    write_metrics({"step": step, "phase": "gan" if gan else "pretrain", "lr": lr_now,
                                   **means, "steps_per_s": round(rate, 4),
                                   "time_s": round(wall_time + now - t_start, 2)})
                    bar.set_postfix({k: f"{v:.4g}" for k, v in means.items() if not k.startswith("grad")}, refresh=False)
                    pending.clear()
                if do_val and main:
                    last_val, triptych = validation.run(generator)
                    write_metrics({"step": step, **{f"val_{k}": v for k, v in last_val.items()},
                                   **{f"val_{k}_bicubic": v for k, v in validation.bicubic.items()}})
                    _save_png(run / "samples" / f"step_{step:07d}.png", triptych)
                    log.info("step %d: validation %s (bicubic %s)", step, last_val, validation.bicubic)
                if do_ckpt and main:  # the training state, then the model file; both atomic
                    elapsed = wall_time + time.time() - t_start
                    save_checkpoint(ckpt_path, step=step, config=config, generator=generator, opt_g=opt_g,
                                    discriminator=discriminator, opt_d=opt_d, wall_time=elapsed)
                    training = dict(summary, steps=step, wall_time_s=round(elapsed, 3), validation=last_val,
                                    validation_bicubic=validation.bicubic if validation else {})
                    save_model(model_path, generator, normalization=normalization, preset=config.preset,
                               training=training)
                if stop:
                    raise KeyboardInterrupt
        except KeyboardInterrupt:
            # Saved above when the first Ctrl-C was seen at a step boundary; an interrupt
            # raised mid-step (a second Ctrl-C) keeps the last checkpoint instead of saving
            # half-updated weights.
            bar.close()
            log.warning("interrupted at step %d; continue with --resume from the last checkpoint", step)
            raise
    bar.close()
    if world > 1:
        import torch.distributed as dist

        dist.barrier()
    return run


def _clip(module, max_norm: float) -> torch.Tensor:
    params = [p for p in module.parameters() if p.grad is not None]
    if max_norm > 0:
        return torch.nn.utils.clip_grad_norm_(params, max_norm).detach()
    return torch.linalg.vector_norm(torch.stack([torch.linalg.vector_norm(p.grad) for p in params])).detach()


def _check_and_average(pending: list[tuple[int, dict]], config: TrainConfig) -> dict:
    """Mean of each loss term since the last log line; raises TrainingDivergedError on NaN/inf."""
    values: dict[str, list[float]] = {}
    for s, terms in pending:
        row = {k: float(v) for k, v in terms.items()}
        bad = [f"{k} = {v}" for k, v in row.items() if not math.isfinite(v)]
        if bad:
            raise TrainingDivergedError(
                f"training diverged at step {s} ({', '.join(bad)}); stopped without saving, the last "
                f"checkpoint in {config.out} is intact: resume it with a lower --lr, or --amp off, "
                "or --gan-loss wgan-gp")
        for k, v in row.items():
            values.setdefault(k, []).append(v)
    return {k: sum(v) / len(v) for k, v in values.items()}


def _truncate_metrics(path: Path, step: int) -> None:
    """Drop metric lines logged after the checkpoint we resume from (they will be logged again)."""
    if not path.is_file():
        return
    keep = [line for line in path.read_text().splitlines() if line.strip() and json.loads(line).get("step", 0) <= step]
    atomic_write(path, lambda tmp: Path(tmp).write_text("".join(line + "\n" for line in keep)))
