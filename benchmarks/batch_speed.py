"""A folder of photos through the batch runner: images/s against the engine's pure compute rate.

Writes ``--count`` synthetic ``--size``^2 images (scikit-image's astronaut resized, each file
flipped and rolled differently) into a temporary folder, then upscales the folder with
``srgan.batch.run_jobs`` -- what ``srgan upscale IN/ OUT/`` runs: I/O worker threads decode
file n+1 and encode file n-1 while file n is upscaled -- once per ``--workers`` value, with the
model loaded once. On the same decoded images it times, one at a time:

  engine   ``Upscaler.upscale`` alone (host<->device copies included, no decode or encode):
           the rate the folder run would reach if the GPU never waited for I/O;
  decode   ``srgan.imageio.read_photo`` of one file (one thread);
  encode   ``srgan.imageio.write_photo`` of one upscaled image (one thread).

Idle: ``1 - count x engine seconds per image / folder seconds``, the share of the folder run
the model was not computing; on a GPU also the mean NVML utilisation sampled every 50 ms
(``GPU %``, needs ``pynvml``).

    python benchmarks/batch_speed.py --json batch.json            # 6 files of 2048^2, workers 1,2,4
    python benchmarks/batch_speed.py --size 512 --count 4 --workers 2 --device cpu
    python benchmarks/batch_speed.py --smoke                      # tiny model and files: seconds
"""

from __future__ import annotations

import shutil
import statistics
import tempfile
import time
from pathlib import Path

import numpy as np

from srgan.batch import plan_jobs, run_jobs
from srgan.imageio import Photo, read_photo, write_photo
from srgan.upscale import Upscaler

from common import parse, parser, setup_device
from throughput import default_model, machine_info, machine_line, sync, test_image, write_json
from train_speed import GpuUtilisation


def write_folder(folder: Path, count: int, size: int, suffix: str) -> list[Path]:
    """``count`` distinct (size, size, 3) uint8 images saved as ``img_NNN{suffix}`` in ``folder``."""
    from PIL import Image

    base = test_image(size)
    paths = []
    for i in range(count):
        im = np.roll(base[:, ::-1] if i % 2 else base, shift=(37 * i, 53 * i), axis=(0, 1))
        path = folder / f"img_{i:03d}{suffix}"
        Image.fromarray(np.ascontiguousarray(im)).save(path, **({"quality": 95} if suffix == ".jpg" else {}))
        paths.append(path)
    return paths


def _median_time(fn, items) -> float:
    times = []
    for item in items:
        t0 = time.perf_counter()
        fn(item)
        times.append(time.perf_counter() - t0)
    return statistics.median(times)


def parse_args(argv=None):
    p = parser(__doc__)
    p.add_argument("--size", type=int, default=2048, help="LR side of each file [default: 2048]")
    p.add_argument("--count", type=int, default=6, help="files in the folder [default: 6]")
    p.add_argument("--workers", default="1,2,4", help="I/O worker counts, comma-separated [default: 1,2,4; "
                   "srgan upscale's default is 2]")
    p.add_argument("--format", choices=("png", "jpg"), default="png", help="input (and output) format [default: png]")
    p.add_argument("--device", default="auto")
    p.add_argument("--model", default=None, help="model name or .safetensors [default: photo-x4, else random-init]")
    p.add_argument("--tmpdir", default=None, help="where the temporary folders go [default: the system's]")
    return parse(p, argv, "tiny model and files: seconds")


def main(argv=None) -> dict:
    args = parse_args(argv)
    device = setup_device(args)
    size, count = (32, 3) if args.smoke else (args.size, args.count)
    workers = [int(w) for w in ("1,2" if args.smoke else args.workers).split(",") if w]
    suffix = f".{args.format}"
    machine = machine_info(device)
    print(machine_line(machine))
    model, model_info = default_model(args.model, args.smoke)
    up = Upscaler(model, device=device)
    print(f"model: {model_info['name']}; engine {up!r}; {count} files of {size}^2 {args.format}, workers {workers}")
    root = Path(tempfile.mkdtemp(prefix="srgan-batch-speed-", dir=args.tmpdir))
    try:
        src = root / "in"
        src.mkdir()
        paths = write_folder(src, count, size, suffix)
        photos = [read_photo(p) for p in paths]
        up.upscale(photos[0].pixels)  # warm-up: cuDNN, allocator
        sync(device)

        def engine(photo):
            up.upscale(photo.pixels)
            sync(device)

        engine_s = _median_time(engine, photos)
        decode_s = _median_time(read_photo, paths)
        upscaled = Photo(up.upscale(photos[0].pixels), photos[0].format)
        encode_s = _median_time(lambda i: write_photo(root / f"encode_{i}{suffix}", upscaled), range(min(count, 3)))
        out_mpix = (size * up.scale) ** 2 / 1e6
        print(f"per image: engine {engine_s:.3f} s ({out_mpix / engine_s:.1f} output MPix/s), "
              f"decode {decode_s:.3f} s, encode {encode_s:.3f} s (one thread each)")
        runs = []
        for w in workers:
            dst = root / f"out-{w}"
            jobs = plan_jobs(src, dst)
            with GpuUtilisation(device) as util:
                t0 = time.perf_counter()
                result = run_jobs(jobs, lambda kind: up, workers=w)
                sync(device)
                wall = time.perf_counter() - t0
            if not result.ok:
                raise RuntimeError(f"batch run with {w} workers failed: {result.failed[:3]}")
            busy = count * engine_s / wall
            row = {"workers": w, "files": len(result.done), "seconds": wall, "images_per_s": count / wall,
                   "output_mpix_per_s": result.megapixels_out / wall, "over_engine": busy,
                   "idle_fraction": max(0.0, 1.0 - busy), "gpu_utilisation": util.mean,
                   "summary": result.summary()}
            runs.append(row)
            shutil.rmtree(dst)
        print(f"\n{'workers':>7} {'seconds':>8} {'images/s':>9} {'MPix/s':>8} {'x engine':>8} {'idle':>6} {'GPU %':>6}")
        for r in runs:
            util = f"{r['gpu_utilisation']:.0f}" if r["gpu_utilisation"] is not None else "-"
            print(f"{r['workers']:>7} {r['seconds']:>8.2f} {r['images_per_s']:>9.3f} {r['output_mpix_per_s']:>8.1f} "
                  f"{r['over_engine']:>8.2f} {100 * r['idle_fraction']:>5.0f}% {util:>6}")
        print(f"{'engine':>7} {count * engine_s:>8.2f} {1 / engine_s:>9.3f} {out_mpix / engine_s:>8.1f}")
        print()
        for r in runs:
            print(f"BATCH workers={r['workers']} images_per_s={r['images_per_s']:.4g} "
                  f"engine_images_per_s={1 / engine_s:.4g} idle_fraction={r['idle_fraction']:.3f}")
    finally:
        shutil.rmtree(root, ignore_errors=True)
    record = {"benchmark": "batch_speed", "device": machine["gpu"] or f"cpu: {machine['cpu']}", "machine": machine,
              "model": model_info, "engine": repr(up), "size": size, "count": count, "format": args.format,
              "output_mpix_per_image": out_mpix, "engine_s_per_image": engine_s,
              "engine_images_per_s": 1 / engine_s, "decode_s_per_image": decode_s, "encode_s_per_image": encode_s,
              "runs": runs}
    write_json(args.json, record)
    return record


if __name__ == "__main__":
    main()
