"""`srgan eval` (not implemented yet)."""

import click


@click.command("eval")
def eval_command():
    """Not implemented yet."""
    raise click.ClickException("srgan eval is not implemented yet")
