"""Options shared by several commands, as decorators (one definition, one type, one help text).

Where a command gives an option a different default, the decorator takes only the text that
says so (appended to the help as ``[default: ...]``); the type and the help stay the same.
"""

import functools

import click

from srgan.degrade import PRESETS
from srgan.errors import SrganError

device_option = click.option(
    "--device", default="auto", show_default=True,
    help="Where to run: auto (CUDA GPU when there is one, else CPU), cpu, cuda or cuda:N.",
)

tile_option = click.option(
    "--tile", type=click.IntRange(min=0), default=None,
    help="Tile size in LR (input) pixels; 0 = whole image in one pass.  [default: auto: about 1 GiB of "
         "activations per pass on the CPU (256 px for photo-x4, 352 px for galaxy-x4), half the free memory "
         "on a GPU; halved and retried on GPU out-of-memory]",
)


overwrite_option = click.option(
    "--overwrite", is_flag=True,
    help="Replace output files that already exist (without it, srgan refuses before any work).",
)


def model_option(required: bool = False, default: str | None = None):
    """``--model NAME|PATH``: an embedded model or a .safetensors file; ``default`` says what
    a command does without it (shown in --help)."""
    return click.option("--model", required=required, default=None, metavar="NAME|PATH",
                        help=_with_default("Embedded model name (see `srgan models`) or a model file: srgan .safetensors, or a community model (ESRGAN, Real-ESRGAN, SwinIR, ... as .pth or .safetensors, read weights-only; pip install 'srgan[community]').",
                                           default))


def preset_option(default: str):
    """``--preset``, a choice of :data:`srgan.degrade.PRESETS`; ``default`` says what a command
    uses without it (shown in --help)."""
    return click.option("--preset", type=click.Choice(tuple(PRESETS)), default=None,
                        help=_with_default("Degradation that makes LR inputs from HR images: bicubic (the benchmark "
                                           "protocol), photo (blur, noise, JPEG), astro (PSF, binning, sky + read "
                                           "noise; 1-channel FITS).", default))


def _with_default(help_text: str, default: str | None) -> str:
    return f"{help_text}  [default: {default}]" if default else help_text


def report_errors(fn):
    """Turn an SrganError into click's one-line 'Error: ...' and exit code 1, and print the
    command's warnings as one ``Warning: ...`` line each (:func:`srgan.warn.one_line`)."""

    @functools.wraps(fn)
    def wrapper(*args, **kwargs):
        import warnings

        from srgan.warn import one_line

        def show(message, category, filename, lineno, file=None, line=None):
            click.echo(one_line(message, category, filename, lineno).rstrip("\n"), err=True)

        saved = warnings.showwarning
        warnings.showwarning = show
        try:
            return fn(*args, **kwargs)
        except SrganError as e:
            raise click.ClickException(str(e)) from e
        finally:
            warnings.showwarning = saved

    return wrapper
