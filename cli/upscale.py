"""`srgan upscale`: plan the jobs, load the model(s), run the batch, report."""

import functools
import sys

import click

from srgan.batch import check_existing, check_writable, plan_jobs, rank_and_world_size, run_jobs, shard
from srgan.errors import ConfigError
from srgan.imageio import DEFAULT_MAX_PIXELS, FORMATS
from srgan.outscale import Outscaler, check_fits_outscale
from srgan.pretrained import default_model
from srgan.upscale import PRECISIONS, Upscaler

from .options import device_option, model_option, overwrite_option, report_errors, tile_option


def _scale(ctx, param, value):
    return None if value is None else int(value)


def _hdu(ctx, param, value):
    if value is None:
        return None
    if value.strip().lstrip("-").isdigit():
        if int(value) < 0:
            raise click.BadParameter(f"{value} is negative; HDU indices count from 0 (the primary HDU)")
        return int(value)
    return value


def _psf(ctx, param, value):
    if value is None:
        return None
    try:
        return float(value)  # a FWHM in input pixels
    except ValueError:
        return value  # a PSF FITS file


def _dq_bits(ctx, param, value):
    if value is None:
        return None
    try:
        bits = int(value, 0)  # 1, 0x1, 0b1
    except ValueError:
        raise click.BadParameter(f"{value!r} is not an integer bit mask (e.g. 1, 0x1, 0 to ignore DQ)") from None
    if bits < 0:
        raise click.BadParameter(f"{value} is negative; a bit mask is >= 0 (0 ignores DQ)")
    return bits


@click.command("upscale")
@click.argument("input", type=click.Path(exists=True))
@click.argument("output", type=click.Path())
@model_option(default="photo-x4 for photos, galaxy-x4 for FITS (galaxy-x2 with --scale 2)")
@tile_option
@click.option("--scale", type=click.Choice(["2", "4"]), default=None, callback=_scale,
              help="Upscaling factor: picks the embedded model of that scale for the input kind "
                   "(FITS: galaxy-x2 or galaxy-x4; photos: photo-x4 only, so far); with --model, must be "
                   "that model's.  [default: the model's]")
@click.option("--overlap", type=click.IntRange(min=0), default=None,
              help="Context margin around each tile, in LR pixels.  [default: FITS models: the receptive "
                   "radius, so tiled output equals whole-image output; photo models: at most 16 px "
                   "(photo-x4: 0.004% of 8-bit values differ by one level); community models: 16 px "
                   "for ESRGAN/Compact, 32 px for the others; smaller is faster but leaves seams]")
@click.option("--batch-size", type=click.IntRange(min=1), default=None,
              help="Tiles per forward pass.  [default: 1 on the CPU, 4 on a GPU]")
@device_option
@click.option("--precision", type=click.Choice(PRECISIONS), default="auto", show_default=True,
              help="Arithmetic: auto = bf16 (or fp16) autocast on a GPU; on the CPU bf16 autocast for "
                   "photo models where the processor has native bf16 (AVX512-BF16/AMX), else fp32; FITS "
                   "models fp32. The environment variable SRGAN_PRECISION replaces auto (e.g. fp32).")
@click.option("--self-ensemble", is_flag=True,
              help="Average the model over the 8 flips/rotations of the input: a little sharper "
                   "and more accurate, 8x slower.")
@click.option("--outscale", type=click.FloatRange(1, 16), default=None, metavar="F",
              help="Photos: output exactly round(F x input size), F from 1 to 16: the model's scale, then an "
                   "antialiased bicubic resize. FITS: integer scales only (use --scale).  [default: the model's scale]")
@click.option("--denoise", type=click.FloatRange(0, 1), default=None, metavar="S",
              help="Photos: blend the weights of photo-x4 (S=0, keeps noise as detail) and photo-x4-real "
                   "(S=1, removes noise and JPEG blocks); not with --model.")
@click.option("--alpha", type=click.Choice(["bicubic", "model"]), default="bicubic", show_default=True,
              help="Photos with alpha: upscale the alpha channel bicubically, or run it through the model as gray "
                   "(sharper soft edges, one more model pass).")
@click.option("--format", "fmt", type=click.Choice(["keep", *FORMATS]), default="keep", show_default=True,
              help="Output format of photos; keep = the input's (GIF -> PNG). FITS stay FITS. 16-bit "
                   "input stays 16-bit in png and tiff; jpg and webp are 8-bit.")
@click.option("--quality", type=click.IntRange(1, 100), default=95, show_default=True,
              help="JPEG/WebP quality (1-100).")
@click.option("--skip-existing", is_flag=True,
              help="Leave outputs that already exist (outputs are written atomically, so these are "
                   "complete): resumes an interrupted run.")
@overwrite_option
@click.option("--glob", "pattern", default=None, metavar="PATTERN",
              help="Only files whose name or path relative to INPUT matches (ignoring case), e.g. '*.jpg'.  [default: "
                   "every PNG, JPEG, TIFF, WebP, BMP, GIF and FITS file; hidden files skipped]")
@click.option("--workers", type=click.IntRange(min=1), default=2, show_default=True,
              help="I/O threads decoding the next files and encoding finished ones while the model runs.")
@click.option("--dry-run", is_flag=True, help="List the planned INPUT -> OUTPUT pairs and stop.")
@click.option("--max-pixels", type=click.IntRange(min=0), default=DEFAULT_MAX_PIXELS, show_default=True,
              help="Refuse photos with more input pixels than this (checked before decoding; protects "
                   "against decompression bombs). 0 = no limit.")
@click.option("--hdu", default=None, callback=_hdu, metavar="N|NAME",
              help="FITS: upscale only this HDU (index or EXTNAME).  [default: every 2-D image HDU]")
@click.option("--flux", type=click.Choice(["conserve", "surface-brightness"]), default=None,
              help="FITS: conserve = each output pixel holds 1/scale^2 of the flux (total flux kept); "
                   "surface-brightness = values comparable per pixel with the input's.  [default: "
                   "surface-brightness when BUNIT is per solid angle (MJy/sr, .../arcsec2), else conserve]")
@click.option("--flux-correction", "correction", type=click.Choice(["block", "global"]), default="block",
              show_default=True,
              help="FITS: block = each input pixel's flux kept exactly in its scale x scale output pixels "
                   "(photometry); global = the network's output with only its total flux corrected "
                   "(pictures, not for photometry).")
@click.option("--consistency/--no-consistency", default=False, show_default=True,
              help="FITS: correct the output by back-projection until re-degrading it reproduces the "
                   "input within the noise.")
@click.option("--psf", default=None, callback=_psf, metavar="FILE|FWHM",
              help="FITS: PSF for --consistency/--residual: a FITS image or a Gaussian FWHM in input "
                   "pixels.  [default: the model's training PSF]")
@click.option("--residual", is_flag=True,
              help="FITS: add an SRRESID HDU, (degrade(output) - input) / sigma.")
@click.option("--dq-bits", default=None, callback=_dq_bits, metavar="MASK",
              help="FITS: DQ bits that mark do-not-use pixels (not super-resolved, flat in the output); "
                   "0 ignores DQ.  [default: 1 (DO_NOT_USE) for JWST, any flag otherwise]")
@click.option("--progress/--no-progress", default=None,
              help="Progress bars over files and tiles.  [default: when stderr is a terminal]")
@report_errors
def upscale_command(input, output, model, scale, tile, overlap, batch_size, device, precision, self_ensemble,
                    outscale, denoise, alpha, fmt, quality,
                    skip_existing, overwrite, pattern, workers, dry_run, max_pixels, hdu, flux, correction,
                    consistency, psf,
                    residual, dq_bits, progress):
    """Upscale photos and FITS images: INPUT file -> OUTPUT file, or INPUT folder -> OUTPUT folder.

    A folder is searched recursively and its tree mirrored under OUTPUT; file names are kept
    (the suffix follows --format). For a file INPUT, OUTPUT is a folder when it is one, ends
    with '/' or has no suffix; otherwise it is the output file and its suffix sets the format. Inputs are never overwritten, existing outputs only with --overwrite
    (--skip-existing keeps them); outputs are written to a
    temporary name and renamed, so an interrupted run resumes with --skip-existing. Bad
    files are reported one per line and skipped; the exit code is 1 if any failed. Under
    torchrun each rank takes every WORLD_SIZE-th file.

    \b
    Examples:
      srgan upscale photo.jpg photo_x4.jpg
      srgan upscale ~/Pictures/trip out/ --format png --skip-existing
      srgan upscale galaxy.fits galaxy_x4.fits --model runs/galaxy/model.safetensors
      torchrun --nproc-per-node 4 -m srgan.cli upscale big_folder/ out/
    """
    jobs = plan_jobs(input, output, format=fmt, glob=pattern)
    rank, world = rank_and_world_size()
    mine = shard(jobs, rank, world)
    prefix = f"[rank {rank}/{world}] " if world > 1 else ""
    check_existing(mine, overwrite=overwrite, skip_existing=skip_existing)
    if dry_run:
        check_writable(jobs, create=False)
        for job in mine:
            note = "  (exists, skipped)" if skip_existing and job.dst.exists() else ""
            click.echo(f"{job.src} -> {job.dst}{note}")
        return
    fits_options = None
    if any(job.kind == "fits" for job in mine):  # srgan.fits imports astropy: only for FITS jobs
        from srgan.fits import FitsOptions

        fits_options = FitsOptions(hdu=hdu, flux=flux, correction=correction, consistency=consistency, psf=psf,
                                   residual=residual, dq_bits=dq_bits)
    check_writable(mine)

    options = dict(device=device, precision=precision, tile=tile, overlap=overlap, batch_size=batch_size,
                   self_ensemble=self_ensemble)

    @functools.cache
    def load(name):
        return Upscaler.from_pretrained(name, **options)

    def get_upscaler(kind):
        if kind == "photo" and denoise is not None:  # photo-options hook (srgan.blend, srgan.outscale)
            up = _denoised(denoise, model, options)
            if scale is not None and up.scale != scale:
                raise ConfigError(f"--scale {scale} conflicts with --denoise, which blends x{up.scale} models: "
                                  "leave out one of them")
        else:
            up = load(model or default_model(kind, scale))
        if scale is not None and up.scale != scale:
            raise ConfigError(f"--scale {scale} conflicts with --model {model}, which upscales x{up.scale}: "
                              "leave out one of them")
        if kind == "fits":
            check_fits_outscale(outscale, up.scale)
            return up
        return up if outscale is None and alpha == "bicubic" else Outscaler(up, outscale, alpha)

    show = sys.stderr.isatty() if progress is None else progress
    result = run_jobs(mine, get_upscaler, quality=quality, skip_existing=skip_existing, workers=workers,
                      max_pixels=max_pixels, fits_options=fits_options, progress=show,
                      report=lambda line: _echo_err(f"{prefix}Error: {line}"))
    click.echo(prefix + result.summary(), err=True)
    if not result.ok:
        failures = "\n".join(f"  {src}: {reason}" for src, reason in result.failed)
        raise click.ClickException(f"{prefix}{len(result.failed)} of {len(mine)} file(s) failed:\n{failures}")


def _denoised(strength, model, options) -> Upscaler:
    """The --denoise blend of photo-x4 and photo-x4-real (srgan.blend)."""
    from srgan.blend import DENOISE_MODELS, blended_model

    if model is not None:
        raise ConfigError(f"--denoise blends {' and '.join(DENOISE_MODELS)}: leave out --model {model}")
    return Upscaler(blended_model(strength), **options)


def _echo_err(line: str) -> None:
    from tqdm.auto import tqdm

    tqdm.write(line, file=sys.stderr)  # does not break a progress bar
