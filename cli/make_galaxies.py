"""`srgan make-galaxies`: synthetic HR galaxy FITS for training (logic in srgan.galaxies)."""

import click

from .options import overwrite_option, report_errors


@click.command("make-galaxies")
@click.argument("out_dir", type=click.Path(file_okay=False))
@click.option("--n", "n", type=int, default=64, show_default=True, help="Number of galaxies.")
@click.option("--size", type=int, default=128, show_default=True, help="Image side in pixels.")
@click.option("--seed", type=int, default=0, show_default=True,
              help="Random seed: the same seed gives byte-identical files.")
@click.option("--pixel-scale", type=float, default=0.03, show_default=True,
              help="Arcsec per pixel, for the WCS and the sky level per pixel (0.03: HST/JWST).")
@click.option("--engine", type=click.Choice(["astropy", "galsim"]), default="astropy", show_default=True,
              help="Renderer: astropy.modeling (built in) or GalSim (pip install srgan[galaxies]).")
@click.option("--sky-subtracted", is_flag=True, help="Subtract the sky level, as survey stamps often are.")
@overwrite_option
@report_errors
def make_galaxies_command(out_dir, n, size, seed, pixel_scale, engine, sky_subtracted, overwrite):
    """Write N synthetic galaxy images to OUT_DIR/galaxy_00000.fits ...

    Each is a float32 FITS image in electron/s with a TAN WCS: bulge + exponential disk,
    star-forming knots, field stars, all through a Moffat PSF, plus sky, Poisson and read
    noise. Every generation parameter is a header card (GALMAG, BT, DISK_RE, PSFFWHM, ...).

    \b
    Example:
      srgan make-galaxies galaxies/ --n 256 --size 128 --seed 1
      srgan train --hr galaxies/ --preset astro --out runs/galaxy
    """
    from srgan.galaxies import GalaxyConfig, make_galaxies

    config = GalaxyConfig(size=size, pixel_scale=pixel_scale, engine=engine, subtract_sky=sky_subtracted)
    paths = make_galaxies(out_dir, n, seed=seed, config=config, overwrite=overwrite, progress=True)
    click.echo(f"wrote {len(paths)} galaxies to {out_dir}")
