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
@report_errors
def models_command():
    """List the embedded models: scale, channels, parameters, training data, preset, scores.

    Scores come from `srgan eval --json srgan/weights/<name>.eval.json` ("not evaluated"
    when that file is absent). Use a model with `--model <name>` in upscale, eval and train.

    \b
    Example:
      srgan models
    """
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
