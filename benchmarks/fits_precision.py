"""galaxy-x4 (FITS) in bf16 against fp32 on the CPU: speed, and what bf16 does to photometry.

A synthetic field (sky 100, Gaussian noise 5, three Gaussian sources of known flux) is upscaled
with ``precision="fp32"`` and ``"bf16"`` in interleaved rounds; for each source the aperture
flux (radius 3 sigma, output summed / scale^2, sky subtracted) of both outputs is compared,
plus the largest and the rms output difference in noise sigmas. This decides whether bf16 may
become the FITS default (it stays fp32 unless photometry does not move).

    python benchmarks/fits_precision.py --size 192 --repeats 2
    python benchmarks/fits_precision.py --smoke      # tiny random model: seconds
"""

from __future__ import annotations

import argparse
import statistics
import time

import numpy as np
import torch

from srgan import Generator, GeneratorConfig, load_model
from srgan.checkpoint import ModelInfo
from srgan.normalize import Normalization
from srgan.upscale import Upscaler

from throughput import machine_info, machine_line, write_json

SKY, NOISE = 100.0, 5.0


def field(size: int, seed: int = 0) -> tuple[np.ndarray, list[tuple[float, float, float, float]]]:
    """(1, size, size) float32 field and its sources (y, x, sigma, flux), positions relative to size."""
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[:size, :size]
    img = SKY + rng.normal(0, NOISE, (size, size))
    sources = [(0.2 * size, 0.26 * size, 3, 2000.0), (0.62 * size, 0.47 * size, 6, 8000.0),
               (0.78 * size, 0.83 * size, 2, 500.0)]
    for y, x, s, f in sources:
        img += f / (2 * np.pi * s * s) * np.exp(-((yy - y) ** 2 + (xx - x) ** 2) / (2 * s * s))
    return img[None].astype(np.float32), sources


def aperture_flux(out: np.ndarray, scale: int, y: float, x: float, radius: float) -> float:
    """Sky-subtracted flux of an (sH, sW) output within ``radius`` LR px of LR position (y, x)."""
    g = (np.arange(out.shape[0]) + 0.5) / scale - 0.5
    Y, X = np.meshgrid(g, (np.arange(out.shape[1]) + 0.5) / scale - 0.5, indexing="ij")
    mask = (Y - y) ** 2 + (X - x) ** 2 < radius**2
    return float((out[mask] - SKY).sum() / scale**2)


def main(argv=None) -> dict:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--size", type=int, default=192, help="LR side [default: 192]")
    p.add_argument("--repeats", type=int, default=2, help="interleaved timing rounds [default: 2]")
    p.add_argument("--json", default=None, metavar="FILE")
    p.add_argument("--smoke", action="store_true", help="tiny random model, 48 px: seconds")
    args = p.parse_args(argv)
    print(machine_line(machine_info(torch.device("cpu"))))
    if args.smoke:
        torch.manual_seed(0)
        model = Generator(GeneratorConfig(scale=4, channels=8, blocks=1, in_channels=1, out_channels=1)).eval()
        model.info = ModelInfo(config=model.config, normalization=Normalization("asinh", 3.0), name="tiny")
        size, repeats = 48, 1
    else:
        model, size, repeats = load_model("galaxy-x4"), args.size, args.repeats
    planes, sources = field(size)
    ups = {p: Upscaler(model, device="cpu", precision=p) for p in ("fp32", "bf16")}
    outs, times = {}, {p: [] for p in ups}
    for p, up in ups.items():  # warm-up
        outs[p] = up.upscale_planes(planes, sky=SKY, noise=NOISE)
    for _ in range(repeats):
        for p, up in ups.items():
            t0 = time.perf_counter()
            outs[p] = up.upscale_planes(planes, sky=SKY, noise=NOISE)
            times[p].append(time.perf_counter() - t0)
    scale = model.config.scale
    rows = []
    for y, x, s, f in sources:
        a, b = (aperture_flux(outs[p][0], scale, y, x, 3 * s) for p in ("fp32", "bf16"))
        rows.append({"true_flux": f, "fp32": a, "bf16": b, "rel_diff": (b - a) / a})
        print(f"FLUX true={f:.0f} fp32={a:.1f} bf16={b:.1f} rel_diff={(b - a) / a:+.2e}")
    diff = np.abs(outs["bf16"] - outs["fp32"])
    speedup = statistics.median(times["fp32"]) / statistics.median(times["bf16"])
    record = {"benchmark": "fits_precision", "model": getattr(model.info, "name", ""), "size": size,
              "times": times, "bf16_speedup": speedup, "sources": rows,
              "max_diff_sigma": float(diff.max() / NOISE), "rms_diff_sigma": float(np.sqrt(np.mean(diff**2)) / NOISE)}
    print(f"FITS bf16/fp32 speed={speedup:.2f}x max_diff={record['max_diff_sigma']:.3f} sigma "
          f"rms_diff={record['rms_diff_sigma']:.4f} sigma")
    write_json(args.json, record)
    return record


if __name__ == "__main__":
    main()
