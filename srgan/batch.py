"""Batch jobs: which files to upscale where, and running them robustly.

Planning (:func:`plan_jobs`) maps INPUT (a file or a folder, walked recursively) to output
paths, mirroring the folder tree under OUTPUT, and refuses before any work: OUTPUT equal to
INPUT, any output resolving to an input file, two inputs landing on the same output, an
output folder that cannot be created or written. An OUTPUT folder inside INPUT is never
read as input. Under ``torchrun`` each rank takes ``jobs[rank::world_size]`` of the sorted
list (:func:`shard`), so no two ranks write the same file.

Running (:func:`run_jobs`): a pool of I/O threads decodes the next files and encodes
finished ones while the model works; each output is written to a temporary name and
renamed, so a killed run never leaves a truncated file under its final name and
``skip_existing`` resumes it. A bad file (corrupt, truncated, empty, not an image) is
recorded with one line naming it and the rest are processed; this holds for every
exception one file can cause, in planning (a symlink loop) as in reading, computing and
writing. :class:`BatchResult` says what was done, skipped and failed. Temporary files are
owned by their process (:mod:`srgan.atomic`), so concurrent runs into one folder never
delete each other's files. Existing outputs are never replaced silently
(:func:`check_existing`).
"""

from __future__ import annotations

import os
import tempfile
import time
from collections import deque
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from fnmatch import fnmatchcase
from pathlib import Path
from typing import TYPE_CHECKING, Callable

from srgan.atomic import remove_stale_temps
from srgan.errors import ConfigError, InputError, SrganError, describe
from srgan.filekinds import is_fits, is_photo
from srgan.guard import check_photo_model
from srgan.nonfinite import upscale_photo_pixels
from srgan.warn import file_warnings
from srgan.imageio import DEFAULT_MAX_PIXELS, FORMATS, Photo, format_for, output_suffix, \
    read_photo, write_photo

if TYPE_CHECKING:  # srgan.fits (astropy) is imported only when a FITS job runs
    from srgan.fits import FitsOptions


@dataclass(frozen=True)
class Job:
    src: Path
    dst: Path
    kind: str  # "photo" or "fits"
    error: str | None = None  # why planning could not use this file (it fails alone)


# --- planning --------------------------------------------------------------------------


def plan_jobs(input, output, *, format: str = "keep", glob: str | None = None) -> list[Job]:
    """Map INPUT to output paths, sorted by input path.

    Args:
        input: an image/FITS file, or a folder searched recursively.
        output: for a file INPUT, the output file, or a folder when it is an existing
            folder, ends with a path separator or has no suffix; for a folder INPUT, a folder
            (created when missing) that receives the same tree.
        format: ``keep`` or one of png, jpg, tiff, webp (photos only; FITS stay FITS).
        glob: pattern matched, ignoring case, against each file's name and its path
            relative to INPUT (e.g. ``*.jpg``, ``2024/*``). Default: every image and FITS file by suffix;
            hidden files and folders are skipped.
    Raises:
        InputError: INPUT missing or matching no files. ConfigError: a refused OUTPUT.
    """
    if format != "keep" and format not in FORMATS:
        raise ConfigError(f"--format must be keep, {', '.join(FORMATS)}; got {format!r}")
    src, out = Path(input), Path(output)
    if not src.exists():
        raise InputError(f"INPUT {src} does not exist")
    if _same(src, out):
        raise ConfigError(f"OUTPUT {out} is INPUT itself: choose another output path (inputs are never overwritten)")
    if src.is_file():
        jobs = [_file_job(src, out, format)]
    else:
        if out.exists() and not out.is_dir():
            raise ConfigError(f"INPUT {src} is a folder, so OUTPUT must be a folder, but {out} is a file")
        files = _list_inputs(src, out, glob)
        if not files:
            what = f"matching --glob {glob!r}" if glob else "with an image or FITS suffix"
            raise InputError(f"no files {what} under {src}")
        jobs = [_folder_job(f, src, out, format) for f in files]
    _refuse_overwrites(jobs)
    return jobs


def _same(a: Path, b: Path) -> bool:
    return a.resolve() == b.resolve()


def _dst_relative(rel: Path, format: str) -> Path:
    if is_fits(rel):
        return rel
    return rel.with_suffix(output_suffix(rel, format))


def _folder_job(f: Path, src: Path, out: Path, format: str) -> Job:
    """The job of one file under a folder INPUT; a file that cannot be resolved (a symlink
    loop, a broken link) becomes a job that fails alone."""
    job = Job(f, out / _dst_relative(f.relative_to(src), format), "fits" if is_fits(f) else "photo")
    try:
        f.resolve(strict=True)
    except (OSError, RuntimeError) as e:  # RuntimeError: symlink loop (Python < 3.13)
        return Job(job.src, job.dst, job.kind, error=f"cannot be read: {describe(e)}")
    return job


def _file_job(src: Path, out: Path, format: str) -> Job:
    kind = "fits" if is_fits(src) else "photo"
    as_folder = out.is_dir() or str(out).endswith(("/", os.sep)) or (not out.suffix and not out.exists())
    if as_folder:
        return Job(src, out / _dst_relative(Path(src.name), format), kind)
    if kind == "photo":
        fmt = format_for(out)  # the output's suffix says the format
        if format != "keep" and FORMATS[format][0] != fmt:
            raise ConfigError(f"OUTPUT {out.name} is a {fmt} name but --format {format} was given: "
                              "change one of them")
    return Job(src, out, kind)


def _list_inputs(root: Path, out: Path, glob: str | None) -> list[Path]:
    """Files under ``root`` (sorted), skipping hidden entries and an OUTPUT folder inside it."""
    out_resolved = out.resolve()
    files = []
    for dirpath, dirnames, filenames in os.walk(root):
        here = Path(dirpath)
        dirnames[:] = sorted(d for d in dirnames if not d.startswith(".") and not _same_safe(here / d, out_resolved))
        for name in filenames:
            if name.startswith("."):
                continue
            path = here / name
            rel = path.relative_to(root).as_posix()
            if glob is not None:
                pattern = glob.lower()  # case-insensitive: *.jpg also finds IMG_0001.JPG
                if fnmatchcase(name.lower(), pattern) or fnmatchcase(rel.lower(), pattern):
                    files.append(path)
            elif is_fits(path) or is_photo(path):
                files.append(path)
    return sorted(files)


def _same_safe(path: Path, resolved: Path) -> bool:
    try:
        return path.resolve() == resolved
    except (OSError, RuntimeError):  # a looping link is not OUTPUT
        return False


def _refuse_overwrites(jobs: list[Job]) -> None:
    jobs = [j for j in jobs if j.error is None]
    inputs = {j.src.resolve(): j.src for j in jobs}
    seen: dict[Path, Path] = {}
    for j in jobs:
        dst = j.dst.resolve()
        if dst in inputs:
            raise ConfigError(f"output {j.dst} would overwrite the input {inputs[dst]}: choose another OUTPUT")
        if dst in seen:
            raise ConfigError(f"{seen[dst]} and {j.src} would both be written to {j.dst}: "
                              "use --format keep or separate folders")
        seen[dst] = j.src


def check_existing(jobs: list[Job], *, overwrite: bool = False, skip_existing: bool = False) -> None:
    """The one overwrite policy: an existing output is replaced only with ``overwrite`` (or kept
    with ``skip_existing``); otherwise the run is refused before any work, naming one of them."""
    if overwrite and skip_existing:
        raise ConfigError("--overwrite and --skip-existing contradict each other: give one of them")
    if overwrite or skip_existing:
        return
    existing = [j.dst for j in jobs if j.error is None and j.dst.exists()]
    if existing:
        more = f" and {len(existing) - 1} more" if len(existing) > 1 else ""
        raise ConfigError(f"output {existing[0]}{more} already exist(s): pass --skip-existing to keep "
                          "existing outputs or --overwrite to replace them")


def check_writable(jobs: list[Job], create: bool = True) -> None:
    """Make sure every output folder can be created and written, before any work.

    With ``create`` the folders are made and a probe file is written and removed in each;
    without (``--dry-run``) the nearest existing parent is checked with os.access.
    """
    for folder in sorted({j.dst.parent for j in jobs if j.error is None}):
        existing = folder
        while not existing.exists():
            existing = existing.parent
        if not existing.is_dir():
            raise ConfigError(f"cannot create output folder {folder}: {existing} is a file; choose another OUTPUT")
        if not create:
            if not os.access(existing, os.W_OK | os.X_OK):
                raise ConfigError(f"output folder {existing} is not writable; choose another OUTPUT")
            continue
        try:
            folder.mkdir(parents=True, exist_ok=True)
            fd, probe = tempfile.mkstemp(prefix=".srgan-write-test.", dir=folder)
            os.close(fd)
            os.unlink(probe)
        except OSError as e:
            raise ConfigError(f"output folder {folder} is not writable ({e.strerror or e}); "
                              "choose another OUTPUT") from e


def rank_and_world_size(env=os.environ) -> tuple[int, int]:
    """(RANK, WORLD_SIZE) as set by torchrun; (0, 1) outside it."""
    try:
        rank, world = int(env.get("RANK", 0)), int(env.get("WORLD_SIZE", 1))
    except ValueError as e:
        raise ConfigError(f"RANK/WORLD_SIZE must be integers: {e}") from e
    if world < 1 or not 0 <= rank < world:
        raise ConfigError(f"need 0 <= RANK < WORLD_SIZE, got RANK={rank} WORLD_SIZE={world}")
    return rank, world


def shard(jobs: list[Job], rank: int, world_size: int) -> list[Job]:
    """This rank's share: ``rank::world_size`` of the jobs sorted by input path."""
    return sorted(jobs, key=lambda j: str(j.src))[rank::world_size]


# --- running ---------------------------------------------------------------------------


@dataclass
class BatchResult:
    done: list[Path] = field(default_factory=list)  # outputs written
    skipped: list[Path] = field(default_factory=list)  # outputs that already existed
    failed: list[tuple[Path, str]] = field(default_factory=list)  # (input, reason)
    megapixels_in: float = 0.0
    megapixels_out: float = 0.0
    seconds: float = 0.0

    @property
    def ok(self) -> bool:
        return not self.failed

    @property
    def exit_code(self) -> int:
        return 0 if self.ok else 1

    def summary(self) -> str:
        rate = self.megapixels_out / self.seconds if self.seconds > 0 else 0.0
        return (f"{len(self.done)} done, {len(self.skipped)} skipped, {len(self.failed)} failed; "
                f"{self.megapixels_in:.3g} Mpx in -> {self.megapixels_out:.3g} Mpx out in "
                f"{self.seconds:.1f} s ({rate:.3g} Mpx/s out)")


def run_jobs(
    jobs: list[Job],
    get_upscaler: Callable[[str], object],
    *,
    quality: int = 95,
    skip_existing: bool = False,
    workers: int = 2,
    max_pixels: int | None = DEFAULT_MAX_PIXELS,
    fits_options: FitsOptions | None = None,
    progress: bool = False,
    report: Callable[[str], None] | None = None,
) -> BatchResult:
    """Upscale every job; never raises for a bad input file.

    Args:
        jobs: from :func:`plan_jobs` (and :func:`shard`).
        get_upscaler: ``"photo"`` or ``"fits"`` -> an :class:`srgan.upscale.Upscaler`; called
            once per kind present, before any work, so a missing model fails early.
        quality: JPEG/WebP quality.
        skip_existing: leave outputs that already exist (complete, since writes are atomic).
        workers: I/O threads decoding upcoming files and encoding finished ones.
        max_pixels: refuse photos above this many input pixels (0/None: no limit).
        fits_options: the :class:`srgan.fits.FitsOptions` of every FITS job (None: the defaults).
        progress: tqdm bar over files (and over tiles for large images).
        report: called with one line per failed file (the CLI prints it).
    Returns:
        a :class:`BatchResult`; ``result.exit_code`` is 1 when anything failed.
    """
    result = BatchResult()
    start = time.perf_counter()
    todo = []
    planned_bad = []
    for job in jobs:
        if job.error is not None:
            planned_bad.append(job)
        elif skip_existing and job.dst.exists():
            result.skipped.append(job.dst)
        else:
            todo.append(job)
    upscalers = {kind: get_upscaler(kind) for kind in sorted({j.kind for j in todo})}
    if "photo" in upscalers:
        check_photo_model(upscalers["photo"])  # a whole-run error: before any work
    bar = None
    if progress:
        from tqdm.auto import tqdm

        bar = tqdm(total=len(todo), unit="file", desc="upscale")

    def fail(job: Job, e: Exception | str):
        reason = (e if isinstance(e, str) else describe(e)).removeprefix(f"{job.src}: ")
        result.failed.append((job.src, reason))
        if report is not None:
            report(f"{job.src}: {reason}")

    for job in planned_bad:
        fail(job, job.error)

    def write(job: Job, photo: Photo, mpx_out: float):
        remove_stale_temps(job.dst)
        write_photo(job.dst, photo, quality=quality)
        return mpx_out

    workers = max(1, int(workers))
    pool = ThreadPoolExecutor(max_workers=workers, thread_name_prefix="srgan-io")
    decoding: deque = deque()  # (job, future) for upcoming photo jobs, decoded ahead
    writing: deque = deque()  # (job, future) outputs being encoded
    queue = deque(todo)

    def fill():
        while queue and len(decoding) < workers:
            job = queue.popleft()
            fut = pool.submit(read_photo, job.src, max_pixels) if job.kind == "photo" else None
            decoding.append((job, fut))

    def drain(limit: int):
        while len(writing) > limit:
            job, fut = writing.popleft()
            try:
                result.megapixels_out += fut.result()
                result.done.append(job.dst)
            except Exception as e:  # one file's failure, whatever it is, never stops the batch
                fail(job, e)

    try:
        fill()
        while decoding:
            job, fut = decoding.popleft()
            fill()
            try:
                if job.kind == "fits":
                    with file_warnings(job.src):
                        mpx_in, mpx_out = _run_fits(upscalers["fits"], job, fits_options)
                    result.done.append(job.dst)
                    result.megapixels_out += mpx_out
                else:
                    photo = fut.result()
                    h, w = photo.pixels.shape[:2]
                    mpx_in = h * w / 1e6
                    up = upscalers["photo"]
                    large = h * w > 4 * max(up.tile, 1) ** 2
                    with file_warnings(job.src):
                        pixels = upscale_photo_pixels(up, photo.pixels, progress=progress and large)
                    out = Photo(pixels, photo.format, photo.exif, photo.icc_profile)
                    writing.append((job, pool.submit(write, job, out, pixels.shape[0] * pixels.shape[1] / 1e6)))
                    drain(limit=workers)  # bound the finished images held in memory
                result.megapixels_in += mpx_in
            except Exception as e:  # one file's failure, whatever it is, never stops the batch
                fail(job, e)
            if bar is not None:
                bar.update(1)
                elapsed = time.perf_counter() - start
                bar.set_postfix_str(f"{result.megapixels_out / max(elapsed, 1e-9):.3g} Mpx/s", refresh=False)
        drain(limit=0)
    finally:
        pool.shutdown(wait=True, cancel_futures=True)
        if bar is not None:
            bar.close()
    result.seconds = time.perf_counter() - start
    return result


def _run_fits(upscaler, job: Job, options: FitsOptions | None) -> tuple[float, float]:
    from srgan import fits

    job.dst.parent.mkdir(parents=True, exist_ok=True)
    remove_stale_temps(job.dst)
    fits.upscale_fits(upscaler, job.src, job.dst, options=options)
    return _fits_megapixels(job.src), _fits_megapixels(job.dst)


def _fits_megapixels(path: Path) -> float:
    """Pixels in all image HDUs, from the headers (0 when unreadable)."""
    try:
        from astropy.io import fits as afits

        total = 0
        with afits.open(path, memmap=True, lazy_load_hdus=True) as hdul:
            for hdu in hdul:
                if (getattr(hdu, "is_image", False) and hdu.header.get("NAXIS", 0) >= 2
                        and hdu.header.get("EXTNAME") != "SRRESID"):  # residual maps are not output pixels
                    n = 1
                    for i in range(1, hdu.header["NAXIS"] + 1):
                        n *= hdu.header.get(f"ZNAXIS{i}", hdu.header.get(f"NAXIS{i}", 0))
                    total += n
        return total / 1e6
    except Exception:
        return 0.0
