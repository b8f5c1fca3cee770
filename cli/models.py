"""`srgan models`: list the embedded models and their scores (logic in srgan.pretrained)."""

import click

from .options import report_errors


def _score_line(ds: dict) -> str:
    mean, metrics = ds["mean"], ds["metrics"]

    def cell(method):
        parts = []
        for k in metrics:
            v = mean[method][k]
            if k.startswith("flux_error"):
                parts.append(f"{100 * v:.2f}%")
            else:
                parts.append(f"{v:.2f}" if k.startswith("psnr") else f"{v:.4f}")
        return " / ".join(parts)

    baselines = ", ".join(f"{m} {cell(m)}" for m in ds["methods"] if m != "model")
    lr = f"{ds['preset']} LR, " if ds.get("preset") else ""  # which degradation made the inputs
    return f"{ds['name']} ({ds['n_images']} img, {lr}{' / '.join(metrics)}): {cell('model')}  [{baselines}]"


@click.command("models")
@click.argument("paths", nargs=-1, type=click.Path(exists=True))
@click.option("--convert", "convert_to", type=click.Path(dir_okay=False), default=None, metavar="OUT.safetensors",
              help="Write the one community model file given as PATH as .safetensors (weights only, no pickle).")
@report_errors
def models_command(paths, convert_to):
    """List the embedded models: scale, channels, parameters, training data, preset, scores.

    Scores come from `srgan eval --json srgan/weights/<name>.eval.json` ("not evaluated"
    when that file is absent). Use a model with `--model <name>` in upscale, eval and train.

    With PATHS (model files, or folders holding .safetensors/.pth/.ckpt/.pt files), describe
    those instead: srgan files and community models (ESRGAN, Real-ESRGAN, SwinIR, ...; read
    weights-only, needs srgan[community]); a file that cannot be used is one line and exit 1.

    \b
    Examples:
      srgan models
      srgan models ~/models/ RealESRGAN_x4plus.pth
      srgan models RealESRGAN_x4plus.pth --convert RealESRGAN_x4plus.safetensors
    """
    if convert_to is not None:
        return _convert(paths, convert_to)
    if paths:
        return _describe_files(paths)
    from srgan import checkpoint
    from srgan.pretrained import embedded_models

    models = embedded_models()
    if not models:
        click.echo(f"no embedded models installed (looked in {checkpoint.WEIGHTS_DIR}); "
                   "pass a trained model file with --model PATH")
        return
    for m in models:
        c = m.info.config
        click.echo(f"{m.name}: x{c.scale}, {c.in_channels}->{c.out_channels} channels, "
                   f"{m.parameters:,} parameters, preset {m.info.preset}, "
                   f"normalization {m.info.normalization.kind}")
        if m.summary:
            click.echo(f"  {m.summary}")
        click.echo(f"  trained on: {m.data}")
        if m.scores is None:
            click.echo("  eval: not evaluated")
        else:
            stale = " (STALE: measured on other weights, rerun srgan eval)" if m.scores_stale else ""
            click.echo(f"  eval{stale}:")
            for ds in m.scores["datasets"]:
                click.echo(f"    {_score_line(ds)}")
        if m.card:
            click.echo(f"  model card: {m.card}")


def _describe_files(paths) -> None:
    from srgan.model_files import describe_all

    found = describe_all(paths)
    if not found:
        raise click.ClickException(f"no model files (.safetensors, .pth, .ckpt, .pt) in {', '.join(paths)}")
    bad = 0
    for path, m in found:
        if isinstance(m, Exception):
            bad += 1
            click.echo(f"{path}: Error: {m}", err=True)
            continue
        click.echo(f"{path}: {m.family} {m.architecture}, x{m.scale}, {m.in_channels}->{m.out_channels} channels, "
                   f"{m.parameters:,} parameters")
        click.echo(f"  {m.detail}")
    if bad:
        raise click.ClickException(f"{bad} of {len(found)} model file(s) cannot be used")


def _convert(paths, dst) -> None:
    from srgan.community import convert_to_safetensors

    if len(paths) != 1:
        raise click.ClickException("--convert takes exactly one model file as PATH")
    c = convert_to_safetensors(paths[0], dst)
    click.echo(f"wrote {dst}: {c.architecture} x{c.scale}, {c.in_channels}->{c.out_channels} channels")
