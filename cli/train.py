"""`srgan train`: parse options into a TrainConfig and call srgan.train.fit."""

import logging
import shlex
import sys
import warnings

import click

from srgan.losses import GAN_LOSSES, PIXEL_LOSSES
from srgan.train import AMP_MODES, CONTENT_LOSSES, SCHEDULES, TrainConfig, fit

from .options import device_option, preset_option, report_errors

# option name -> TrainConfig field, where they differ
_FIELDS = {"hr_dir": "hr", "out_dir": "out", "val_dir": "val"}


def _command_line(ctx) -> str:
    """The options the user gave, as an `srgan train` command line (recorded in the model file)."""
    words = ["srgan", "train"]
    for param in ctx.command.params:
        if ctx.get_parameter_source(param.name) == click.core.ParameterSource.DEFAULT:
            continue
        value = ctx.params[param.name]
        if getattr(param, "is_flag", False) and param.secondary_opts:
            words.append(param.opts[0] if value else param.secondary_opts[0])
        elif getattr(param, "is_flag", False):
            words += [param.opts[0]] if value else []
        else:
            words += [param.opts[0], str(value)]
    return shlex.join(words)


def _show_warning(message, category, filename, lineno, file=None, line=None):
    click.echo(f"Warning: {message}", err=True)


@click.command("train")
@click.option("--hr", "hr_dir", type=click.Path(exists=True, file_okay=False), help="Folder of high-resolution training images, searched recursively (PNG, JPEG, TIFF, WebP, BMP, GIF, FITS).")
@click.option("--out", "out_dir", required=True, type=click.Path(file_okay=False), help="Run directory: checkpoint.safetensors, model.safetensors, metrics.jsonl, samples/.")
@click.option("--scale", type=click.Choice(["2", "4", "8"]), default=None, callback=lambda c, p, v: v and int(v), help="Upscaling factor.  [default: 4, or the --init model's]")
@preset_option(default="bicubic, or the --init model's")
@click.option("--pretrain-steps", type=click.IntRange(min=0), default=TrainConfig.pretrain_steps, show_default=True, help="Phase 1: pixel-loss steps (SRResNet).")
@click.option("--gan-steps", type=click.IntRange(min=0), default=TrainConfig.gan_steps, show_default=True, help="Phase 2: adversarial steps (SRGAN), starting from phase 1's generator; 0 skips it.")
@click.option("--batch-size", type=click.IntRange(min=1), default=TrainConfig.batch_size, show_default=True, help="Patches per step (per process under torchrun).")
@click.option("--patch-size", type=click.IntRange(min=2), default=TrainConfig.patch_size, show_default=True, help="HR patch side in pixels, a multiple of --scale (the LR patch is patch/scale).")
@click.option("--blocks", type=click.IntRange(min=1), default=None, help="Residual blocks in the generator.  [default: 16, or the --init model's]")
@click.option("--channels", type=click.IntRange(min=1), default=None, help="Feature maps in the generator's trunk.  [default: 64, or the --init model's]")
@click.option("--batch-norm/--no-batch-norm", default=None, help="BatchNorm in the generator (the paper's); --no-batch-norm often trains better PSNR models.  [default: on, or the --init model's]")
@click.option("--lr", type=click.FloatRange(min=0, min_open=True), default=TrainConfig.lr, show_default=True, help="Adam learning rate at the start of each phase.")
@click.option("--schedule", type=click.Choice(SCHEDULES), default=TrainConfig.schedule, show_default=True, help="Learning-rate decay within each phase: constant, step (x0.1 after half, the paper's) or cosine (to lr/100).")
@click.option("--grad-clip", type=click.FloatRange(min=0), default=TrainConfig.grad_clip, show_default=True, help="Maximum gradient norm per network; 0 disables clipping.")
@click.option("--val", "val_dir", type=click.Path(exists=True, file_okay=False), default=None, help="Folder of HR validation images.  [default: hold out min(5, n/10) training images]")
@click.option("--val-every", type=click.IntRange(min=1), default=TrainConfig.val_every, show_default=True, help="Steps between validations (PSNR/SSIM vs bicubic, sample triptychs).")
@click.option("--checkpoint-every", type=click.IntRange(min=1), default=TrainConfig.checkpoint_every, show_default=True, help="Steps between checkpoints (also written at each phase end and on Ctrl-C).")
@click.option("--log-every", type=click.IntRange(min=1), default=TrainConfig.log_every, show_default=True, help="Steps between metrics.jsonl lines (losses averaged over them).")
@click.option("--resume", is_flag=True, help="Continue the run in --out from its checkpoint (other options default to the run's; step counts, --val, --device may change).")
@click.option("--init", "init", default=None, metavar="NAME|PATH", help="Start the generator from an embedded model (e.g. photo-x4) or a model file, to fine-tune it; its architecture is used, except that --scale may differ (the trunk and tail are copied, upsampling stages it lacks start fresh).")
@click.option("--content-loss", type=click.Choice(CONTENT_LOSSES), default=TrainConfig.content_loss, show_default=True, help="GAN-phase content loss: vgg (VGG19 features, needs ImageNet weights) or mse (the paper's SRGAN-MSE).")
@click.option("--vgg-weights", default=TrainConfig.vgg_weights, show_default=True, metavar="imagenet|PATH", help="VGG19 weights: imagenet (torchvision download / torch hub cache) or a .pth/.safetensors file.")
@click.option("--vgg-layer", type=click.Choice(["relu5_4", "relu2_2"]), default=TrainConfig.vgg_layer, show_default=True, help="VGG feature map: relu5_4 (the paper's VGG54) or relu2_2 (VGG22).")
@click.option("--gan-loss", type=click.Choice(GAN_LOSSES), default=TrainConfig.gan_loss, show_default=True, help="Adversarial loss: bce (the paper's), relativistic (ESRGAN) or wgan-gp (for unstable runs).")
@click.option("--pixel-loss", type=click.Choice(PIXEL_LOSSES), default=TrainConfig.pixel_loss, show_default=True, help="Phase-1 loss.")
@click.option("--content-weight", type=float, default=TrainConfig.content_weight, show_default=True, help="Weight of the content loss in the GAN phase.")
@click.option("--adversarial-weight", type=float, default=TrainConfig.adversarial_weight, show_default=True, help="Weight of the adversarial loss (the paper's 1e-3).")
@click.option("--tv-weight", type=float, default=TrainConfig.tv_weight, show_default=True, help="Weight of the total-variation loss (the paper's 2e-8, on the summed TV).")
@click.option("--gp-weight", type=float, default=TrainConfig.gp_weight, show_default=True, help="Gradient-penalty weight for --gan-loss wgan-gp.")
@device_option
@click.option("--seed", type=int, default=TrainConfig.seed, show_default=True, help="Seed of every random draw (initialisation, patches, degradations).")
@click.option("--amp", type=click.Choice(AMP_MODES), default=TrainConfig.amp, show_default=True, help="bf16 autocast: auto (on CUDA only), bf16 (also on the CPU) or off.")
@click.option("--channels-last/--no-channels-last", default=TrainConfig.channels_last, show_default=True, help="NHWC memory layout (faster convolutions).")
@click.option("--workers", type=click.IntRange(min=0), default=TrainConfig.workers, show_default=True, help="DataLoader processes making patches (0: in the training process).")
@click.option("--cache/--no-cache", default=TrainConfig.cache, show_default=True, help="Keep decoded training images in memory.")
@click.option("--progress/--no-progress", default=None, help="Show a progress bar.  [default: when stderr is a terminal, so logs get no bars]")
@click.pass_context
@report_errors
def train_command(ctx, **options):
    """Train an SRGAN (or SRResNet) generator on a folder of HR images.

    Phase 1 trains with pixel loss (--pretrain-steps), phase 2 adversarially (--gan-steps).
    LR inputs are made on the fly with --preset. The run directory gets model.safetensors
    (use it with `srgan upscale --model RUN/model.safetensors`), checkpoint.safetensors
    (--resume continues bit-exactly), metrics.jsonl and samples/. Under torchrun the same
    command trains on several processes (DistributedDataParallel).

    \b
    Example:
      srgan train --hr images/ --out runs/x4 --pretrain-steps 20000 --val Set5/
      srgan train --out runs/x4 --resume --pretrain-steps 40000
      srgan train --init photo-x4 --hr my_photos/ --out runs/mine --pretrain-steps 500
      torchrun --nproc-per-node 2 -m srgan.cli train --hr images/ --out runs/ddp
    """
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    warnings.showwarning = _show_warning
    given = {_FIELDS.get(name, name): value for name, value in options.items()
             if ctx.get_parameter_source(name) != click.core.ParameterSource.DEFAULT}
    given["command"] = _command_line(ctx)
    if options["progress"] is None:  # a bar only on a terminal: logs and pipes get none
        options["progress"] = given["progress"] = sys.stderr.isatty()
    if options["resume"]:  # only what was given: fit merges it into the run's stored options (resume_config)
        config = TrainConfig(**given)
    else:
        if not options["hr_dir"]:
            raise click.UsageError("Missing option '--hr' (the folder of training images).")
        config = TrainConfig(**{_FIELDS.get(name, name): value for name, value in options.items()},
                             command=given["command"])
    run = fit(config)
    click.echo(f"model: {run / 'model.safetensors'}")
