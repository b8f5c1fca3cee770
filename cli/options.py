"""Options shared by several commands, as decorators (one definition, one help text)."""

import functools

import click

from srgan.errors import SrganError

device_option = click.option(
    "--device", default="auto", show_default=True,
    help="Where to run: auto (CUDA GPU when there is one, else CPU), cpu, cuda or cuda:N.",
)


def report_errors(fn):
    """Turn an SrganError into click's one-line 'Error: ...' and exit code 1."""

    @functools.wraps(fn)
    def wrapper(*args, **kwargs):
        try:
            return fn(*args, **kwargs)
        except SrganError as e:
            raise click.ClickException(str(e)) from e

    return wrapper
