"""FITS in, FITS out (being split into one module per job; see srgan/fits/pipeline.py)."""

from srgan.fits.pipeline import *  # noqa: F401,F403
