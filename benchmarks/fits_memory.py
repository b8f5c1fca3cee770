"""Peak memory of ``srgan upscale`` on a large single-channel FITS image (target: < 2 GB).

Writes a synthetic sky (noise, sky level, a few thousand Gaussian sources, a TAN WCS) of
``--size`` x ``--size`` float32 pixels to a temporary FITS file, streaming it row block by
row block (the script never holds the image), then runs

    srgan upscale in.fits out.fits --model MODEL --device cpu

in a subprocess under ``/usr/bin/time -v`` (else ``getrusage(RUSAGE_CHILDREN)``) and reports
its peak resident memory and wall time, checks the output's shape and a sample of its
values, and deletes both files.

MODEL is the embedded ``galaxy-x4`` when installed; otherwise a tiny random 1-channel asinh
generator saved to the temp folder (16 channels, 2 blocks). The engine sizes its tiles to a
fixed activation budget, so peak memory is about the same for both, but the wall time of the
tiny model says nothing about the real model's speed.

    python benchmarks/fits_memory.py                  # 10000^2 in (400 MB), 40000^2 out (6.4 GB)
    python benchmarks/fits_memory.py --size 2000      # quick
    python benchmarks/fits_memory.py --smoke          # seconds
    python benchmarks/fits_memory.py --product --size 3000   # PRIMARY + SCI, ERR, DQ: the planes stream too

``--product`` writes a JWST-style file instead (empty PRIMARY, then SCI = the sky, ERR float32
and DQ uint32 of the same size): the ERR and DQ planes are propagated onto the x4 grid without
the network, streamed like SCI, so the peak should stay that of SCI alone.

Disk: input 4 size^2 bytes plus output 64 size^2 bytes in ``--tmpdir``.
"""

from __future__ import annotations

import os
import re
import resource
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch
from astropy.io import fits

from srgan.checkpoint import resolve_model_path, save_model
from srgan.errors import ModelError
from srgan.models import Generator, GeneratorConfig
from srgan.normalize import Normalization

from common import parse, parser
from throughput import machine_info, machine_line, write_json

TARGET_MB = 2048
TIME = "/usr/bin/time"


def write_plane(path: Path, header: fits.Header, size: int, block_fn, rows: int = 512) -> None:
    """Append one (size, size) HDU to ``path`` (the primary HDU when the file is new), streamed:
    ``block_fn(r0, r1)`` gives rows r0..r1."""
    stream = fits.StreamingHDU(str(path), header)
    try:
        for r0 in range(0, size, rows):
            stream.write(block_fn(r0, min(r0 + rows, size)))
    finally:
        stream.close()


def write_product(path: Path, size: int) -> None:
    """PRIMARY (no data), SCI (:func:`write_sky` as an extension), ERR (float32), DQ (uint32 as int32 +
    BZERO, as JWST writes it; ~1% flagged with bit 31 set)."""
    fits.PrimaryHDU().writeto(path)
    write_sky(path, size, extension="SCI")
    rng = np.random.default_rng(1)
    for name, bitpix, fn in (
            ("ERR", -32, lambda r0, r1: np.full((r1 - r0, size), 5.0, np.float32)),
            ("DQ", 32, lambda r0, r1: (np.where(rng.random((r1 - r0, size)) < 0.01, 2**31 + 5, 0).astype(np.uint32)
                                       ^ np.uint32(2**31)).view(np.int32))):  # stored: value - BZERO
        h = fits.Header()
        h.update(XTENSION="IMAGE", BITPIX=bitpix, NAXIS=2, NAXIS1=size, NAXIS2=size, PCOUNT=0, GCOUNT=1)
        if name == "DQ":
            h.update(BSCALE=1, BZERO=2**31)
        h["EXTNAME"] = name
        write_plane(path, h, size, fn)


def write_sky(path: Path, size: int, seed: int = 0, rows: int = 512, extension: str | None = None) -> None:
    """A (size, size) float32 sky in a FITS primary HDU (or, appended, an ``extension`` of
    that EXTNAME), written in blocks of ``rows`` rows.

    Sky level 100, Gaussian noise of sigma 5, one Gaussian source (sigma 1-3 px, peak
    20-2000) per 40x40 px on average; a TAN WCS at 0.2 arcsec/px.
    """
    rng = np.random.default_rng(seed)
    n_src = max(1, size * size // 1600)
    ys, xs = rng.uniform(0, size, n_src), rng.uniform(0, size, n_src)
    sig, amp = rng.uniform(1, 3, n_src), 10 ** rng.uniform(np.log10(20), np.log10(2000), n_src)
    order = np.argsort(ys)
    ys, xs, sig, amp = ys[order], xs[order], sig[order], amp[order]
    header = fits.Header()
    first = dict(SIMPLE=True) if extension is None else dict(XTENSION="IMAGE")
    header.update(**first, BITPIX=-32, NAXIS=2, NAXIS1=size, NAXIS2=size,
                  **({} if extension is None else dict(PCOUNT=0, GCOUNT=1, EXTNAME=extension)), BUNIT="adu",
                  CTYPE1="RA---TAN", CTYPE2="DEC--TAN", CRPIX1=size / 2, CRPIX2=size / 2,
                  CRVAL1=150.0, CRVAL2=2.0, CDELT1=-0.2 / 3600, CDELT2=0.2 / 3600, CUNIT1="deg", CUNIT2="deg")

    def block_fn(r0, r1):
        block = rng.normal(100.0, 5.0, (r1 - r0, size)).astype(np.float32)
        lo, hi = np.searchsorted(ys, [r0 - 12, r1 + 12])
        for y, x, s, a in zip(ys[lo:hi], xs[lo:hi], sig[lo:hi], amp[lo:hi]):
            rad = int(4 * s) + 1
            y0, y1 = max(int(y) - rad, r0), min(int(y) + rad + 1, r1)
            x0, x1 = max(int(x) - rad, 0), min(int(x) + rad + 1, size)
            if y0 >= y1 or x0 >= x1:
                continue
            yy, xx = np.mgrid[y0:y1, x0:x1]
            block[y0 - r0:y1 - r0, x0:x1] += a * np.exp(-((yy - y) ** 2 + (xx - x) ** 2) / (2 * s * s))
        return block

    write_plane(path, header, size, block_fn, rows)


def pick_model(name: str | None, tmp: Path, smoke: bool) -> tuple[str, str]:
    """(model argument for the CLI, description): galaxy-x4 when embedded, else a tiny saved one."""
    if not smoke:
        try:
            return str(resolve_model_path(name or "galaxy-x4")), f"{name or 'galaxy-x4'} (embedded or given)"
        except ModelError:
            if name is not None:
                raise
    torch.manual_seed(0)
    config = GeneratorConfig(scale=4, in_channels=1, out_channels=1, channels=8 if smoke else 16, blocks=1 if smoke else 2)
    path = tmp / "tiny-asinh-x4.safetensors"
    save_model(path, Generator(config).eval(), normalization=Normalization("asinh"), preset="astro")
    return str(path), (f"tiny random 1-channel asinh model ({config.channels} channels, {config.blocks} blocks; "
                       "galaxy-x4 not installed): memory is representative, speed is not")


def srgan_command() -> list[str]:
    exe = shutil.which("srgan")
    return [exe] if exe else [sys.executable, "-m", "srgan.cli"]


def run_measured(cmd: list[str]) -> dict:
    """Run ``cmd``; its peak RSS (MB) and wall time (s), via /usr/bin/time -v when present."""
    use_time = os.access(TIME, os.X_OK)
    full = [TIME, "-v", *cmd] if use_time else cmd
    before = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss
    t0 = time.perf_counter()
    proc = subprocess.run(full, capture_output=True, text=True)
    wall = time.perf_counter() - t0
    if proc.returncode != 0:
        raise SystemExit(f"command failed ({proc.returncode}): {' '.join(cmd)}\n{proc.stdout}\n{proc.stderr}")
    after = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss
    peak_kb, method = after, "getrusage(RUSAGE_CHILDREN)"
    if use_time:
        m = re.search(r"Maximum resident set size \(kbytes\): (\d+)", proc.stderr)
        if m:
            peak_kb, method = int(m.group(1)), "/usr/bin/time -v"
    elif after <= before:
        method += " (an earlier child was larger: upper bound)"
    if sys.platform == "darwin" and not use_time:
        peak_kb //= 1024  # bytes there
    return {"peak_rss_mb": round(peak_kb / 1024, 1), "wall_s": round(wall, 2), "rss_method": method,
            "stderr_tail": proc.stderr.strip().splitlines()[-25:]}


def check_output(path: Path, size: int, scale: int = 4, hdu=0) -> dict:
    """Shape, header and a sample of rows of the output's HDU ``hdu`` (read through a memmap)."""
    with fits.open(path, memmap=True) as hdul:
        data = hdul[hdu].data
        shape = tuple(data.shape)
        rows = np.linspace(0, shape[0] - 1, min(16, shape[0])).astype(int)
        sample = np.asarray(data[rows], np.float64)
        header = hdul[hdu].header
        result = {"shape": shape, "expected_shape": (size * scale, size * scale),
                  "finite_fraction": float(np.isfinite(sample).mean()),
                  "sample_mean": float(np.nanmean(sample)), "cdelt2": header.get("CDELT2"),
                  "crpix1": header.get("CRPIX1")}
        if hdu != 0:  # a product: its other planes on the same grid
            result["planes"] = {h.name: list(h.shape) for h in hdul[1:]}
        del data
    return result


def parse_args(argv=None):
    p = parser(__doc__)
    p.add_argument("--size", type=int, default=10000, help="input side in pixels [default: 10000]")
    p.add_argument("--model", default=None, help="model name or file [default: galaxy-x4, else a tiny one]")
    p.add_argument("--device", default="cpu", help="--device for srgan upscale [default: cpu]")
    p.add_argument("--tile", type=int, default=None, help="--tile for srgan upscale [default: the engine's]")
    p.add_argument("--tmpdir", default=None, help="where the temporary files go [default: the system's]")
    p.add_argument("--product", action="store_true", help="a PRIMARY + SCI/ERR/DQ file instead of one image")
    p.add_argument("--tiny-model", action="store_true",
                   help="the tiny random model even when galaxy-x4 is installed (memory only, quick)")
    return parse(p, argv, "a 96 px image and a tiny model: seconds")


def main(argv=None) -> dict:
    args = parse_args(argv)
    size = 96 if args.smoke else args.size
    machine = machine_info(torch.device("cpu"))
    print(machine_line(machine))
    tmp_root = Path(args.tmpdir or tempfile.gettempdir())
    need = 4 * size * size * (1 + 16) * 1.05 * (3 if args.product else 1)
    free = shutil.disk_usage(tmp_root).free
    if need > free:
        raise SystemExit(f"need about {need / 2**30:.1f} GB free in {tmp_root}, have {free / 2**30:.1f} GB: "
                         "use --tmpdir or a smaller --size")
    with tempfile.TemporaryDirectory(prefix="srgan-fits-memory-", dir=tmp_root) as tmp:
        tmp = Path(tmp)
        src, dst = tmp / "in.fits", tmp / "out.fits"
        t0 = time.perf_counter()
        write_product(src, size) if args.product else write_sky(src, size)
        write_s = time.perf_counter() - t0
        model, model_note = pick_model(args.model, tmp, args.smoke or args.tiny_model)
        print(f"input: {size}x{size} float32, {src.stat().st_size / 2**20:.0f} MB (written in {write_s:.1f} s)")
        print(f"model: {model_note}")
        cmd = [*srgan_command(), "upscale", str(src), str(dst), "--model", model, "--device", args.device,
               "--no-progress"]
        if args.tile is not None:
            cmd += ["--tile", str(args.tile)]
        print("running: " + " ".join(cmd), flush=True)
        run = run_measured(cmd)
        out_mb = dst.stat().st_size / 2**20
        check = check_output(dst, size, hdu="SCI" if args.product else 0)
    ok_shape = tuple(check["shape"]) == tuple(check["expected_shape"])
    out_mpix = (4 * size) ** 2 / 1e6
    if args.product:
        ok_shape = ok_shape and all(tuple(v) == tuple(check["expected_shape"]) for v in check["planes"].values())
    record = {"benchmark": "fits_memory", "machine": machine, "size": size, "product": args.product, "model": model_note,
              "command": cmd, "input_mb": round(4 * size * size / 2**20, 1), "output_mb": round(out_mb, 1),
              **{k: v for k, v in run.items() if k != "stderr_tail"}, "output_mpix_per_s": out_mpix / run["wall_s"],
              "target_mb": TARGET_MB, "under_target": run["peak_rss_mb"] < TARGET_MB, "output_check": check}
    print(f"output: {check['shape'][0]}x{check['shape'][1]} ({out_mb:.0f} MB), shape {'ok' if ok_shape else 'WRONG'}, "
          f"finite fraction of sampled rows {check['finite_fraction']:.3f}")
    print(f"peak RSS {run['peak_rss_mb']:.0f} MB ({run['rss_method']}), wall {run['wall_s']:.1f} s, "
          f"{record['output_mpix_per_s']:.2f} output MPix/s")
    print(f"FITS size={size} peak_rss_mb={run['peak_rss_mb']:.0f} wall_s={run['wall_s']:.1f} "
          f"target_mb={TARGET_MB} {'PASS' if record['under_target'] else 'FAIL'}")
    write_json(args.json, record)
    if not ok_shape:
        raise SystemExit(f"output shape {check['shape']} != {check['expected_shape']}")
    return record


if __name__ == "__main__":
    main()
