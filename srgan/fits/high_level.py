"""The public FITS functions: parse the input, run the pixel pipeline, build the output.

Like reproject's ``_high_level.py``: each function accepts what an astropy user holds
(:func:`srgan.fits.parse.parse_input`), calls the one pixel pipeline
(:func:`srgan.fits.pipeline.upscale_array`) and returns astropy objects with the rescaled
header (:mod:`srgan.fits.header`). Options come as keywords, or as one
:class:`~srgan.fits.options.FitsOptions` (``options=``) from programs that pass them along.
"""

from __future__ import annotations

import contextlib
import dataclasses
import os
import warnings
from pathlib import Path

import numpy as np
from astropy.io import fits

from srgan.checkpoint import atomic_write
from srgan.errors import ConfigError, InputError
from srgan.fits import products
from srgan.fits.header import history_notes, output_header, rescale_wcs, residual_hdu, saturation_level
from srgan.fits.options import FitsOptions, resolve_options
from srgan.fits.parse import describe_hdus, image_hdus, open_fits, parse_input, select_hdu
from srgan.fits.pipeline import check_model, psf_description, upscale_array
from srgan.fits.stream import compressed_hdu, gzip_open, hdu_bytes, input_array, write_propagated, write_upscaled


def upscale_hdu(upscaler, hdu, *, flux: str | None = None, consistency: bool = False, psf=None,
                residual: bool = False, correction: str = "block", options: FitsOptions | None = None):
    """Upscale one image HDU (or anything :func:`parse_input` accepts) in memory.

    Args:
        upscaler: :class:`srgan.upscale.Upscaler` with a 1-channel asinh model.
        hdu: PrimaryHDU/ImageHDU/CompImageHDU (or path, HDUList with one image, (array, Header), ...).
        flux: "conserve" (output sums to the input flux), "surface-brightness", or None: from
            BUNIT (surface-brightness for units per solid angle such as MJy/sr, else conserve).
        consistency: back-project until A(SR) reproduces the input within the noise.
        psf: PSF of A: FWHM in input pixels, PSF FITS file or array on the input grid, or None
            (the model's training preset).
        residual: also return the SRRESID image (A(SR) - input) / sigma.
        correction: "block" (default: each input pixel's flux kept exactly in its s x s output
            pixels, photometry-grade) or "global" (the network's output with only its total
            flux corrected: pictures, not photometry).
        options: all of the above (and ``hdu`` for a path or HDUList) as one
            :class:`FitsOptions`, instead of the keywords.
    Returns:
        ImageHDU (CompImageHDU for a compressed input) with the rescaled header and float32
        data; with ``residual=True`` an HDUList [PrimaryHDU (SR), ImageHDU SRRESID] (an empty
        PrimaryHDU first for compressed input).
    Raises:
        ConfigError: a bad option (naming it). ModelError: a photo model. InputError: bad data.
    """
    o = resolve_options(options, FitsOptions(flux=flux, consistency=consistency, psf=psf, residual=residual,
                                               correction=correction))
    data, header, _ = parse_input(hdu, o.hdu)
    flux, note = products.flux_mode(o.flux, header.get("BUNIT"))
    o = dataclasses.replace(o, flux=flux)
    out, resid, results = upscale_array(upscaler, data, o, saturation=saturation_level(header))
    what = psf_description(upscaler, o)
    h = output_header(header, upscaler, o.flux, correction=o.applied_correction,
                      notes=history_notes(results, o.consistency, what) + ([note] if note else []))
    compressed = isinstance(hdu, fits.CompImageHDU)
    if compressed:
        image = compressed_hdu(out, h, hdu)
    else:
        image = fits.ImageHDU(out, header=h)
    if not o.residual:
        return image
    first = [fits.PrimaryHDU(), image] if compressed else [fits.PrimaryHDU(out, header=h)]
    return fits.HDUList([*first, residual_hdu(resid, header, results, what, 1)])


def upscale_nddata(upscaler, nd, *, flux: str | None = None, consistency: bool = False, psf=None,
                   residual: bool = False, correction: str = "block", options: FitsOptions | None = None):
    """Upscale an astropy NDData/CCDData; returns the same class.

    data: upscaled; wcs: rescaled (None if none); mask: upscaled by repetition (each output
    pixel inherits its parent's mask); unit and meta kept (meta: rescaled header with
    provenance when it is a Header). ``flux=None`` (default) picks the mode from ``unit`` (or
    BUNIT): surface-brightness for units per solid angle (MJy/sr, ...), else conserve.
    Uncertainty: StdDev/Variance/InverseVariance are repeated onto the output grid and scaled
    like the data (:func:`srgan.fits.products.propagate`: in "conserve" mode sigma / s^2,
    variance / s^4, inverse variance * s^4; unchanged in "surface-brightness" mode). The s^2
    output pixels of one input pixel are fully correlated, so summed (conserve) or averaged
    over that block they give the input's uncertainty; what the network adds is not included.
    Other uncertainty types and ``NDData.psf`` are dropped with a warning. Masked pixels
    (``mask`` True) are treated like a DQ do-not-use flag: filled for the network, flat in the
    output; with ``consistency`` the uncertainty is the per-pixel sigma. Options as in
    :func:`upscale_hdu` (``options.hdu`` and ``dq_bits`` do not apply).

    With ``residual=True`` returns ``(upscaled, residual)``, residual an NDData on the input grid.
    """
    from astropy.nddata import InverseVariance, NDData, StdDevUncertainty, VarianceUncertainty

    o = resolve_options(options, FitsOptions(flux=flux, consistency=consistency, psf=psf, residual=residual,
                                               correction=correction))
    if not isinstance(nd, NDData):
        raise TypeError(f"expected an astropy NDData or CCDData, got {type(nd).__name__}")
    data, header, wcs = parse_input(nd)
    s = upscaler.scale
    flux, note = products.flux_mode(o.flux, nd.unit if nd.unit is not None else header.get("BUNIT"))
    o = dataclasses.replace(o, flux=flux)
    kinds = {StdDevUncertainty: products.STDDEV, VarianceUncertainty: products.VARIANCE,
             InverseVariance: products.WEIGHT}  # what each uncertainty class is, as a FITS plane
    u = nd.uncertainty
    error = products.to_sigma(u.array, kinds[type(u)]) if o.consistency and type(u) in kinds else None
    flagged = np.asarray(nd.mask, bool) if nd.mask is not None and np.shape(nd.mask) == np.shape(data) else None
    out, resid, results = upscale_array(upscaler, np.asarray(data, dtype=np.float32), o,
                                        saturation=saturation_level(header), flagged=flagged, error=error)
    what = psf_description(upscaler, o)
    h = output_header(header, upscaler, o.flux, correction=o.applied_correction,
                      notes=history_notes(results, o.consistency, what) + ([note] if note else []))
    new_wcs = rescale_wcs(wcs, s) if wcs is not None else None

    mask = products.upsample(nd.mask, s) if nd.mask is not None and np.ndim(nd.mask) == data.ndim else nd.mask
    uncertainty = None
    if u is not None:
        kind = type(u)
        if kind in kinds:  # the same propagation as the ERR/VAR/WHT planes of a FITS file
            uncertainty = kind(products.propagate(u.array, kinds[kind], s, o.flux), unit=u.unit)
        else:
            warnings.warn(f"uncertainty of type {kind.__name__} cannot be propagated and is dropped", stacklevel=2)
    if getattr(nd, "psf", None) is not None:
        warnings.warn("NDData.psf is on the input grid and is dropped from the output", stacklevel=2)
    meta = h if isinstance(nd.meta, fits.Header) else dict(nd.meta or {})
    result = type(nd)(out, uncertainty=uncertainty, mask=mask, wcs=new_wcs, meta=meta, unit=nd.unit)
    if not o.residual:
        return result
    return result, NDData(resid, wcs=wcs)


def _same_file(a: Path, b: Path) -> bool:
    if a.resolve() == b.resolve():
        return True
    return a.exists() and b.exists() and os.path.samefile(a, b)


def upscale_fits(upscaler, path_in, path_out, *, hdu=None, flux: str | None = None, consistency: bool = False,
                 psf=None, residual: bool = False, correction: str = "block", dq_bits: int | None = None,
                 options: FitsOptions | None = None) -> Path:
    """Upscale a FITS file into a new FITS file, written atomically.

    Every image HDU with 2 or more axes is upscaled (cubes plane by plane), or only ``hdu``
    (index, EXTNAME or (EXTNAME, EXTVER)); all other HDUs (tables, other images, distortion
    arrays) are copied unchanged. Pipeline products (JWST i2d/cal, HST drz/flt): only SCI goes
    through the network; ERR, VAR_*, WHT, DQ, CON and the other planes are put on the new grid
    by nearest neighbour with uncertainties scaled for the flux mode (:mod:`srgan.fits.products`).
    SCI pixels whose DQ has any of ``dq_bits`` set (None: JWST's DO_NOT_USE for JWST, any flag
    otherwise; 0: DQ ignored) are not super-resolved and come out flat, like saturated ones;
    ``consistency`` takes its per-pixel sigma from ERR (else VAR_*, else an inverse-variance WHT).
    ``flux=None`` (default): from the science plane's BUNIT (surface-brightness for MJy/sr
    and other units per solid angle, else conserve). Plain, gzipped (``.gz``) and tile-compressed (``.fz``,
    CompImageHDU) input is read; a compressed image HDU is written compressed (lossless
    GZIP_2), output names ending in ``.gz`` are gzipped. With ``residual=True`` an ``SRRESID``
    HDU follows each upscaled HDU. See :func:`upscale_hdu` for the other options; ``options``
    gives them all (``hdu`` included) as one :class:`FitsOptions`.

    Uncompressed outputs are streamed: the upscaled data are memory-mapped in the output file
    and written strip by strip, so memory holds about one input plane, not the output.

    Returns:
        path_out.
    Raises:
        InputError: unreadable or truncated file, no 2-D image HDU, all-NaN plane; nothing is
            written then. ConfigError: path_out is path_in, unknown flux mode. ModelError: a
            photo model.
    """
    o = resolve_options(options, FitsOptions(hdu=hdu, flux=flux, consistency=consistency, psf=psf,
                                             residual=residual, correction=correction, dq_bits=dq_bits))
    path_in, path_out = Path(path_in), Path(path_out)
    if _same_file(path_in, path_out):
        raise ConfigError(f"output {path_out} is the input file; choose another output path (srgan never "
                          "overwrites its input)")
    check_model(upscaler)
    with open_fits(path_in) as hdul, contextlib.ExitStack() as mappings:
        plan = products.plan_hdus(hdul, o.hdu)
        targets = [i for i, kind in plan.items() if kind == products.NETWORK]
        if not targets:
            raise InputError(f"{path_in}: no image HDU with 2-D data to upscale; HDUs: {'; '.join(describe_hdus(hdul))}")
        inputs = {i: input_array(hdul[i], path_in, mappings, f"{path_in} HDU {i}") for i in targets}
        for i in targets:
            ndim = 0 if inputs[i] is None else inputs[i].ndim
            if ndim < 2:
                raise InputError(f"{path_in}: HDU {i} has {ndim}-D data; "
                                 "only images with 2 or more axes can be upscaled (--hdu N or NAME)")
        flux, note = products.flux_mode(o.flux, products.file_bunit(hdul, plan))
        o = dataclasses.replace(o, flux=flux)
        notes = [note] if note else []
        if any(products.is_datamodel_tree(h) for h in hdul):
            notes.append(f"ASDF extension kept as {products.ASDF_KEPT_AS}: its gwcs is for the input grid")
        sci = {hdul[i].ver: hdul[i].header for i in reversed(targets) if (hdul[i].name or "").upper() == "SCI"}
        bits = products.do_not_use_bits(hdul[0].header, o.dq_bits)
        what = psf_description(upscaler, o)
        gz = path_out.name.lower().endswith(".gz")

        def write(tmp):
            opener = gzip_open if gz else open
            with opener(tmp, "wb+") as f:
                nres = 0
                for i, h in enumerate(hdul):
                    kind = plan.get(i, products.COPY)
                    if kind not in (products.NETWORK, products.COPY):
                        if gz or isinstance(h, fits.CompImageHDU):
                            out = products.propagated_hdu(h, kind, upscaler.scale, o.flux, i == 0, sci.get(h.ver))
                            f.write(hdu_bytes(out, primary=i == 0))
                        else:
                            write_propagated(f, h, input_array(h, path_in, mappings, f"{path_in} HDU {i}"), kind,
                                             upscaler.scale, o.flux, i == 0, sci.get(h.ver))
                        continue
                    if i not in targets:
                        f.write(hdu_bytes(products.renamed_datamodel_tree(h) if products.is_datamodel_tree(h) else h,
                                          primary=i == 0))
                        continue
                    flagged, error, more = products.sci_masks(hdul, i, bits, want_error=o.consistency)
                    resid, results = write_upscaled(f, upscaler, h, inputs[i], i == 0, stream=not gz, options=o,
                                                    what=what, notes=[*notes, *more], flagged=flagged, error=error)
                    del flagged, error
                    if o.residual:
                        nres += 1
                        f.write(hdu_bytes(residual_hdu(resid, h.header, results, what, nres), primary=False))

        try:
            atomic_write(path_out, write)
        finally:
            inputs.clear()  # drop the views so that the input mappings can be closed
    return path_out
