"""`srgan upscale` (not implemented yet)."""

import click


@click.command("upscale")
def upscale_command():
    """Not implemented yet."""
    raise click.ClickException("srgan upscale is not implemented yet")
