"""FITS in, FITS out: super-resolution whose output is still science data.

Every input form an astropy user holds is accepted (:func:`parse_input`), and the output keeps:

- coordinates: the celestial (and any linear) WCS is rescaled to the finer pixel grid with the
  half-pixel offset of FITS pixel centres, ``CRPIX' = (CRPIX - 0.5) * s + 0.5``; ``CDELT`` or
  the ``CD``/``PC`` columns of the two image axes are divided by s; SIP polynomials are
  rescaled (``A'_p_q = A_p_q * s^(1-p-q)``, same for B, AP, BP); TPV/PV terms, which act on
  intermediate world coordinates, are kept. What cannot be rescaled (lookup-table distortion)
  is removed with a warning naming it (:func:`rescale_header`).
- flux: ``flux="conserve"``: each output pixel holds its share of the flux, so the
  sum over the output equals the sum over the input; ``flux="surface-brightness"``: output
  pixel values are on the input's per-pixel scale (the sum is s^2 larger); default (None):
  surface-brightness when BUNIT is per solid angle (MJy/sr, ...), else conserve. Either way the
  network's output is corrected so that every input pixel's flux is exactly in its s x s
  output block (``correction="block"``, :func:`srgan.consistency.project_blocks`), or only the
  total (``correction="global"``, :func:`srgan.consistency.conserve_flux`: pictures, not
  photometry); the mode is written to the ``SRFLUX`` card.
- precision and range: float32 out, never quantised (compressed output is lossless GZIP_2);
  the model sees the image through the asinh stretch of its robust sky and noise
  (:mod:`srgan.normalize`), so negative sky and bright cores pass through.
- missing data: NaN/BLANK pixels are filled for the network by Gaussian interpolation from
  their neighbours (the sky level deep inside large holes), and are NaN again at their
  upscaled positions in the output.
- provenance: HISTORY cards with the srgan version, model name and sha256, scale, tiling and
  flux mode; ``SRSCALE``, ``SRFLUX``, ``SRMODEL``, ``SRMODSHA`` cards. All other cards are kept
  except the ones that must change (structural cards, BSCALE/BZERO/BLANK, DATAMIN/DATAMAX,
  CHECKSUM/DATASUM).

Optional, honest about what the network invented (:mod:`srgan.consistency`):
``consistency=True`` back-projects until the output, re-blurred by the PSF and binned,
reproduces the input to within its noise; ``residual=True`` adds an ``SRRESID`` image HDU
``(A(SR) - input) / sigma`` on the input grid.

:func:`upscale_fits` streams: each upscaled image is memory-mapped straight into the output
file and post-processed strip by strip, so memory is bounded by the input plane, not the
output (except for gzip or tile-compressed output, built one HDU at a time in memory).

Options are keywords of the public functions, or one frozen :class:`FitsOptions` (``options=``),
validated when built with errors that name the ``srgan upscale`` flag.

One module per job (the public names below are importable from ``srgan.fits``):

- :mod:`srgan.fits.parse`: any FITS-like input -> (array, header, WCS); HDU selection.
- :mod:`srgan.fits.header`: header and WCS maths, provenance cards, the SRRESID header.
- :mod:`srgan.fits.pipeline`: the pixel pipeline, :func:`upscale_plane` / :func:`upscale_array`
  (also what ``srgan eval`` scores).
- :mod:`srgan.fits.paged`, :mod:`srgan.fits.stream`: memory-mapped arrays and the streaming writer.
- :mod:`srgan.fits.high_level`: :func:`upscale_fits`, :func:`upscale_hdu`, :func:`upscale_nddata`.
- :mod:`srgan.fits.products`: pipeline products (SCI + ERR/VAR/WHT/DQ/CON): which plane goes
  through the network, the others propagated by nearest neighbour; the flux mode from BUNIT.
- :mod:`srgan.fits.options`: :class:`FitsOptions`.
"""

from srgan.fits.header import (FLUX_COMMENTS, PIXEL_SCALE_CARDS, RESIDUAL_EXTNAME, STRUCTURAL, header_wcs,
                               output_header, rescale_header, rescale_wcs)
from srgan.fits.high_level import upscale_fits, upscale_hdu, upscale_nddata
from srgan.fits.options import FLUX_MODES, FitsOptions
from srgan.fits.paged import PagedArray
from srgan.fits.parse import ACCEPTED, DISTORTION_EXTNAMES, image_hdus, open_fits, parse_input, select_hdu
from srgan.fits.pipeline import (FILL_STDDEV, STATS_PIXELS, PlaneResult, fill_nans, finite_mask,
                                 sky_and_noise_plane, upscale_array, upscale_plane)

__all__ = [
    "upscale_fits", "upscale_hdu", "upscale_nddata", "upscale_array", "upscale_plane", "FitsOptions",
    "parse_input", "open_fits", "select_hdu", "image_hdus", "rescale_header", "rescale_wcs", "header_wcs",
    "output_header", "PlaneResult", "finite_mask", "sky_and_noise_plane", "fill_nans", "PagedArray",
    "FLUX_MODES", "FLUX_COMMENTS", "ACCEPTED", "DISTORTION_EXTNAMES", "RESIDUAL_EXTNAME", "STRUCTURAL",
    "PIXEL_SCALE_CARDS", "STATS_PIXELS", "FILL_STDDEV",
]
