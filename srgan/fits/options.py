"""What a FITS upscale is asked to do: one frozen :class:`FitsOptions`, checked when it is built.

``srgan upscale`` builds it from its flags, :func:`srgan.batch.run_jobs` hands it to every FITS
job, and the core functions (:func:`srgan.fits.pipeline.upscale_array`, the streaming writer)
take it as one argument instead of a dict of keywords.
"""

from __future__ import annotations

import numbers
import os
from dataclasses import dataclass, fields

import numpy as np

from srgan.errors import ConfigError

FLUX_MODES = ("conserve", "surface-brightness")
CORRECTIONS = ("block", "global")  # how the network's output is made to keep the input's flux


@dataclass(frozen=True)
class FitsOptions:
    """Options of :func:`srgan.fits.upscale_fits`, :func:`~srgan.fits.upscale_hdu` and friends.

    Args:
        hdu: the HDU to upscale: index, EXTNAME or (EXTNAME, EXTVER); None = every image
            HDU with 2 or more axes (``upscale_fits``) or the only one. Used by the functions
            that read files or HDULists (``--hdu``).
        flux: ``"conserve"`` (the output sums to the input's flux), ``"surface-brightness"``
            (output values on the input's per-pixel scale), or None: chosen from BUNIT
            (surface-brightness for units per solid angle such as MJy/sr, else conserve;
            conserve for bare arrays) (``--flux``).
        correction: ``"block"`` (every input pixel's flux kept exactly in its s x s output
            pixels: photometry-grade, the default) or ``"global"`` (the network's raw output
            with one correction of the total flux: for pictures, not for photometry)
            (``--flux-correction``).
        consistency: back-project until the re-degraded output reproduces the input within
            its noise (``--consistency``).
        psf: PSF of the forward operator for ``consistency``/``residual``: a Gaussian FWHM in
            input pixels (> 0), a PSF FITS file, a 2-D array on the input grid, or None (the
            model's training preset) (``--psf``).
        residual: also produce the ``SRRESID`` map ``(A(SR) - input) / sigma`` (``--residual``).
        dq_bits: which bits of a pipeline product's ``DQ`` plane mark do-not-use pixels (treated
            like saturated ones: filled for the network, flat in the output); 0 ignores DQ;
            None: by TELESCOP, JWST's DO_NOT_USE (1) for JWST, any flag otherwise
            (:func:`srgan.fits.products.do_not_use_bits`) (``--dq-bits``).
    Raises:
        ConfigError: a field of the wrong type or value; the message names the option.

    >>> FitsOptions(flux="surface-brightness", residual=True).flux
    'surface-brightness'
    >>> FitsOptions(flux="total")
    Traceback (most recent call last):
    ...
    srgan.errors.ConfigError: flux must be one of ('conserve', 'surface-brightness'), got 'total' (--flux)
    """

    hdu: int | str | tuple[str, int] | None = None
    flux: str | None = None
    correction: str = "block"
    consistency: bool = False
    psf: float | str | os.PathLike | np.ndarray | None = None
    residual: bool = False
    dq_bits: int | None = None

    def __post_init__(self):
        hdu = self.hdu
        named = isinstance(hdu, tuple) and len(hdu) == 2 and isinstance(hdu[0], str) and _is_int(hdu[1])
        if _is_int(hdu) and int(hdu) < 0:
            raise ConfigError(f"hdu must be >= 0 (0 is the primary HDU), got {hdu} (--hdu N or NAME)")
        if not (hdu is None or _is_int(hdu) or isinstance(hdu, str) or named):
            raise ConfigError(f"hdu must be an index, an EXTNAME or (EXTNAME, EXTVER), got {hdu!r} (--hdu N or NAME)")
        if self.flux is not None and self.flux not in FLUX_MODES:
            raise ConfigError(f"flux must be one of {FLUX_MODES}, got {self.flux!r} (--flux)")
        if self.correction not in CORRECTIONS:
            raise ConfigError(f"correction must be one of {CORRECTIONS}, got {self.correction!r} (--flux-correction)")
        for name, flag in (("consistency", "--consistency/--no-consistency"), ("residual", "--residual")):
            if not isinstance(getattr(self, name), (bool, np.bool_)):
                raise ConfigError(f"{name} must be True or False, got {getattr(self, name)!r} ({flag})")
        if self.dq_bits is not None and not (_is_int(self.dq_bits) and int(self.dq_bits) >= 0):
            raise ConfigError(f"dq_bits must be a bit mask >= 0 (0 ignores DQ), got {self.dq_bits!r} (--dq-bits)")
        psf = self.psf
        if isinstance(psf, (bool, np.bool_)):
            raise ConfigError(f"psf must be a FWHM in input pixels, a PSF FITS file or an array, got {psf!r} (--psf)")
        if isinstance(psf, numbers.Real) and not psf > 0:
            raise ConfigError(f"PSF FWHM must be > 0 input pixels, got {psf} (--psf FWHM or a PSF FITS file)")

    @property
    def applied_correction(self) -> str:
        """The flux correction the pipeline applies: ``"consistency"`` (back-projection, then the
        total flux) replaces ``correction`` when ``consistency`` is on."""
        return "consistency" if self.consistency else self.correction

    def is_default(self) -> bool:
        """True when every field has its default value (nothing was asked for)."""
        return all(_same(getattr(self, f.name), f.default) for f in fields(self))


def resolve_options(options: FitsOptions | None, given: FitsOptions) -> FitsOptions:
    """The options of a public FITS function: ``options`` when passed, else the keywords (``given``).

    Raises TypeError when both are used: one call states its options one way.
    """
    if options is None:
        return given
    if not isinstance(options, FitsOptions):
        raise TypeError(f"options must be a srgan.fits.FitsOptions, got {type(options).__name__}")
    if not given.is_default():
        raise TypeError("pass the FITS options either as options=FitsOptions(...) or as keywords, not both")
    return options


def _is_int(v) -> bool:
    return isinstance(v, numbers.Integral) and not isinstance(v, (bool, np.bool_))


def _same(value, default) -> bool:
    """``value`` is ``default`` (None, a bool or a string; arrays are never a default)."""
    return value is default or (type(value) is type(default) and isinstance(value, (str, bool)) and value == default)
