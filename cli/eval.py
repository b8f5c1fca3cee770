"""`srgan eval`: score a model next to the baselines (logic in srgan.evaluate)."""

import json
import os
import shlex

import click

from .options import device_option, model_option, overwrite_option, preset_option, report_errors, tile_option


def _command_line(model, hr, scale, preset, tile, seed, self_ensemble) -> str:
    parts = ["srgan", "eval", "--model", str(model)]
    for d in hr:
        parts += ["--hr", str(d)]
    for flag, value in (("--scale", scale), ("--preset", preset), ("--tile", tile)):
        if value is not None:
            parts += [flag, str(value)]
    if seed:
        parts += ["--seed", str(seed)]
    if self_ensemble:
        parts.append("--self-ensemble")
    return " ".join(shlex.quote(p) for p in parts + ["--markdown"])


@click.command("eval")
@model_option(required=True)
@click.option("--hr", "hr", required=True, multiple=True, type=click.Path(exists=True),
              help="Folder of HR images (photos, or FITS with --preset astro); repeat for several sets.")
@click.option("--scale", type=int, default=None, help="Upscaling factor; must match the model (default: the model's).")
@preset_option(default="the preset the model was trained for")
@click.option("--json", "json_path", type=click.Path(dir_okay=False), default=None,
              help="Write per-image scores and means to this JSON file.")
@click.option("--markdown", is_flag=True, help="Print README-ready tables instead of the summary.")
@click.option("--seed", type=int, default=0, show_default=True,
              help="Seed of random degradations (photo preset, astro noise).")
@click.option("--rl-iterations", type=int, default=30, show_default=True,
              help="Richardson-Lucy iterations of the astro baseline.")
@tile_option
@click.option("--self-ensemble", is_flag=True,
              help="Score the model averaged over the 8 flips/rotations of its input (8x the compute).")
@device_option
@overwrite_option
@report_errors
def eval_command(model, hr, scale, preset, json_path, markdown, seed, rl_iterations, tile, self_ensemble, device,
                 overwrite):
    """Score a model and the baselines on folders of HR images.

    Each HR image is cropped to a multiple of the scale, degraded with the preset, upscaled
    by the model and by the baselines (bicubic; for FITS also Richardson-Lucy), and scored:
    PSNR/SSIM on Y with `scale` pixels shaved for photos; PSNR of the asinh-stretched data
    and relative flux error for FITS.

    \b
    Example:
      srgan eval --model photo-x4 --hr ../shared/datasets/Set5 --hr ../shared/datasets/Set14 --markdown
      srgan eval --model galaxy-x4 --hr galaxies/ --preset astro --json scores.json
    """
    from srgan.atomic import atomic_write
    from srgan.errors import ConfigError
    from srgan.evaluate import evaluate_folders, markdown as markdown_tables

    if json_path and os.path.exists(json_path) and not overwrite:  # the one overwrite policy, before any work
        raise ConfigError(f"--json {json_path} already exists: pass --overwrite to replace it")

    report = evaluate_folders(model, hr, scale=scale, preset=preset, device=device, tile=tile,
                              self_ensemble=self_ensemble, seed=seed, rl_iterations=rl_iterations, progress=True)
    data = report.to_dict()
    if json_path:
        text = json.dumps(data, indent=1) + "\n"
        atomic_write(json_path, lambda tmp: open(tmp, "w").write(text))
    if markdown:
        click.echo(markdown_tables(data, command=_command_line(model, hr, scale, preset, tile, seed, self_ensemble)))
        return
    for ds in data["datasets"]:
        mean = ds["mean"]
        cells = [f"{m}: " + " / ".join(f"{k} {mean[m][k]:.4g}" for k in ds["metrics"]) for m in ds["methods"]]
        click.echo(f"{ds['name']} ({ds['n_images']} images, x{ds['scale']}, {ds['preset']}): " + "; ".join(cells))
    if json_path:
        click.echo(f"wrote {json_path}")
