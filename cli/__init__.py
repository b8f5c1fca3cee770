"""The ``srgan`` command line: one module per command; logic lives in the srgan library.

Installed as ``srgan.cli`` (see setup.cfg), so ``python -m srgan.cli`` works under torchrun.
"""

import click

from srgan import __version__

from .eval import eval_command
from .make_galaxies import make_galaxies_command
from .models import models_command
from .train import train_command
from .upscale import upscale_command


@click.group(context_settings={"help_option_names": ["-h", "--help"], "max_content_width": 100})
@click.version_option(__version__, prog_name="srgan")
def main():
    """srgan: SRGAN super-resolution for photos and astronomical FITS images.

    \b
    Quick start:
      srgan upscale data/photos out/          # embedded default model, tile by tile
      srgan upscale galaxy.fits galaxy_x4.fits
      srgan train --hr ./images --out runs/my-model
    """


main.add_command(train_command)
main.add_command(upscale_command)
main.add_command(eval_command)
main.add_command(models_command)
main.add_command(make_galaxies_command)
