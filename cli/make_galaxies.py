"""`srgan make-galaxies` (not implemented yet)."""

import click


@click.command("make-galaxies")
def make_galaxies_command():
    """Not implemented yet."""
    raise click.ClickException("srgan make-galaxies is not implemented yet")
