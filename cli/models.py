"""`srgan models` (not implemented yet)."""

import click


@click.command("models")
def models_command():
    """Not implemented yet."""
    raise click.ClickException("srgan models is not implemented yet")
