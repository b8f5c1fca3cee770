"""`srgan train` (not implemented yet)."""

import click


@click.command("train")
def train_command():
    """Not implemented yet."""
    raise click.ClickException("srgan train is not implemented yet")
