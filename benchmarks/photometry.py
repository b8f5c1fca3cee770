"""Does a super-resolved FITS image measure like its input? photutils and reproject say.

For each FITS image: photutils segmentation at 5 sigma (background and sigma from 3-sigma
clipped stats, 5 connected pixels), centroids of the segments, circular apertures of r = 3, 6,
10 INPUT pixels on the input and (radius x s, positions moved through the input WCS and the
output WCS) on the output, for the sources with S/N >= 20 in that aperture on the input
(S/N = flux / (sigma sqrt(area))). Reported per method: median and worst flux ratio
output/input, the fraction of sources off by more than 0.5%, the median centroid shift (centre
of mass in a 7 input px box, in input px) and the RMS, in sigma, of the reproject_exact round
trip of the output back onto the input grid. Files without a celestial WCS get a TAN WCS made
up for the measurement (the same on both sides, through srgan's rescaled WCS).

Methods: bicubic, and srgan's network with each flux correction: ``global`` (one factor for
the total), ``smooth`` (block deficits smoothed over 1 input px and added bilinearly),
``backproject`` (iterative back-projection through the binning operator), ``block`` (the
default: exact per input pixel). ``--psnr`` also scores each on the held-out galaxies in the
``srgan eval`` protocol (degraded HR; PSNR of asinh(x/3) vs HR), with Richardson-Lucy.

    python benchmarks/photometry.py --heldout --psnr --json photometry.json   # CPU, a few minutes
    python benchmarks/photometry.py --heldout --truth                         # apertures vs the true flux
    python benchmarks/photometry.py --limit 2 path/to/*.fits                  # a quick look
    python benchmarks/photometry.py --smoke                                   # tiny model, synthetic field
"""

from __future__ import annotations

import argparse
import json
import sys
import time
import warnings
from pathlib import Path

import numpy as np
import torch

ROOT = Path(__file__).resolve().parents[1]
SHARED = ROOT.parent / "shared" / "datasets" / "galaxies-fits"
RADII = (3, 6, 10)  # input pixels
SNR_MIN = 20.0
OFF = 0.005  # "off" means |ratio - 1| > 0.5%
METHODS = ("bicubic", "global", "smooth", "backproject", "block")


# ---------------------------------------------------------------------------- outputs

def bicubic(data: np.ndarray, scale: int) -> np.ndarray:
    """Bicubic upsampling (per-pixel units) with NaNs filled by the median (and NaN again after)."""
    import torch.nn.functional as F

    x = np.where(np.isfinite(data), data, np.nanmedian(data)).astype(np.float64)
    out = F.interpolate(torch.from_numpy(x)[None, None], scale_factor=scale, mode="bicubic",
                        align_corners=False)[0, 0].numpy()
    return np.where(np.repeat(np.repeat(np.isfinite(data), scale, 0), scale, 1), out, np.nan)


def outputs(up, data: np.ndarray, header, methods=METHODS) -> dict[str, np.ndarray]:
    """{method: (sH, sW) output in per-pixel (surface-brightness) units}."""
    from srgan import consistency as cons
    from srgan.fits import FitsOptions, upscale_array
    from srgan.fits.header import saturation_level

    s, sat = up.scale, saturation_level(header) if header is not None else None
    res = {}
    if "bicubic" in methods:
        res["bicubic"] = bicubic(data, s)
    raw = None
    for m in methods:
        if m == "bicubic":
            continue
        if m == "block":
            res[m] = upscale_array(up, data, FitsOptions(flux="surface-brightness"), saturation=sat)[0]
            continue
        if raw is None:
            raw = upscale_array(up, data, FitsOptions(flux="surface-brightness", correction="global"),
                                saturation=sat)[0]
        x = raw.copy()
        lr = np.where(np.isfinite(data), data, np.nanmedian(data))
        xf = np.where(np.isfinite(x), x, np.repeat(np.repeat(lr, s, 0), s, 1))
        if m == "smooth":
            cons.smooth_correction(xf, lr, s)
        elif m == "backproject":
            cons.backproject_binning(xf, lr, s)

        res[m] = np.where(np.isfinite(x), xf, np.nan)
    return res


# ---------------------------------------------------------------------------- measurements

def wcs_pair(header, shape, scale: int):
    """(input WCS, output WCS): the header's celestial WCS, or a made-up TAN one."""
    from astropy.wcs import WCS

    from srgan.fits import rescale_wcs
    from srgan.fits.header import header_wcs

    w = header_wcs(header) if header is not None else None
    if w is None or not w.has_celestial:
        w = WCS(naxis=2)
        w.wcs.ctype = ["RA---TAN", "DEC--TAN"]
        w.wcs.crval = [150.0, 2.0]
        w.wcs.crpix = [shape[1] / 2 + 0.5, shape[0] / 2 + 0.5]
        w.wcs.cdelt = [-1e-5, 1e-5]
    else:
        w = w.celestial
    w.pixel_shape = (shape[1], shape[0])
    return w, rescale_wcs(w, scale).celestial


def measure(data: np.ndarray, out: np.ndarray, scale: int, w_in, w_out, cat=None) -> dict:
    """Photometry of one output (per-pixel units) against its input; see the module doc."""
    from astropy.stats import sigma_clipped_stats
    from photutils.aperture import CircularAperture, aperture_photometry
    from reproject import reproject_exact

    cat = cat or catalog(data)
    med, std, x, y = cat["sky"], cat["sigma"], cat["x"], cat["y"]
    h, w = data.shape
    res = {"sources": int(len(x))}
    if len(x):
        ra_dec = w_in.pixel_to_world(x, y)
        xo, yo = w_out.world_to_pixel(ra_dec)
        bad_in, bad_out = ~np.isfinite(data), ~np.isfinite(out)
        for r in RADII:
            inside = (x - r >= -0.5) & (x + r <= w - 0.5) & (y - r >= -0.5) & (y + r <= h - 0.5)
            fin = aperture_photometry(data - med, CircularAperture(np.c_[x, y], r), mask=bad_in,
                                      method="exact")["aperture_sum"].data
            fout = aperture_photometry(out - med, CircularAperture(np.c_[xo, yo], r * scale), mask=bad_out,
                                       method="exact")["aperture_sum"].data / scale**2
            keep = inside & (fin / (std * np.sqrt(np.pi * r * r)) >= SNR_MIN)
            ratio = fout[keep] / fin[keep]
            res[f"r{r}"] = {"n": int(keep.sum()),
                            "median_ratio": float(np.median(ratio)) if keep.any() else None,
                            "median_abs_dev": float(np.median(np.abs(ratio - 1))) if keep.any() else None,
                            "worst_ratio": float(ratio[np.argmax(np.abs(ratio - 1))]) if keep.any() else None,
                            "frac_off": float(np.mean(np.abs(ratio - 1) > OFF)) if keep.any() else None,
                            "ratios": [float(v) for v in ratio]}
        shift = []
        for i in range(len(x)):  # first moments in the same r = 3 input px circle on both
            c_in = _moment(data - med, CircularAperture((x[i], y[i]), 3))
            c_out = _moment(out - med, CircularAperture((xo[i], yo[i]), 3 * scale))
            if c_in is not None and c_out is not None:
                bx, by = w_in.world_to_pixel(w_out.pixel_to_world(*c_out))
                shift.append(float(np.hypot(bx - c_in[0], by - c_in[1])))
        res["centroid_shift_median"] = float(np.median(shift)) if shift else None
        res["centroid_shift_max"] = float(np.max(shift)) if shift else None
    back, _ = reproject_exact((np.nan_to_num(out, nan=med), w_out), w_in, shape_out=data.shape)
    d = ((back - data) / std)[np.isfinite(data)]
    res["roundtrip_rms_sigma"] = float(np.sqrt(np.mean(d * d)))
    return res


def _moment(img: np.ndarray, aperture):
    """Flux-weighted centroid (x, y) of ``img`` in ``aperture`` (exact overlap weights), or None."""
    m = aperture.to_mask(method="exact")
    cut = m.multiply(np.nan_to_num(img))
    b = m.bbox
    if cut is None or b.ixmin < 0 or b.iymin < 0 or b.ixmax > img.shape[1] or b.iymax > img.shape[0]:
        return None
    total = cut.sum()
    if not total > 0:
        return None
    yy, xx = np.mgrid[m.bbox.iymin:m.bbox.iymax, m.bbox.ixmin:m.bbox.ixmax]
    return float((cut * xx).sum() / total), float((cut * yy).sum() / total)


def catalog(data: np.ndarray) -> dict:
    """Sky, sigma and segment centroids (photutils, 5 sigma, 5 connected pixels) of an input image."""
    from astropy.stats import sigma_clipped_stats
    from photutils.segmentation import SourceCatalog, detect_sources

    _, med, std = sigma_clipped_stats(data[np.isfinite(data)], sigma=3.0)
    img = np.nan_to_num(data - med)
    seg = detect_sources(img, 5 * std, n_pixels=5)
    if seg is None:
        return {"sky": med, "sigma": std, "x": np.zeros(0), "y": np.zeros(0)}
    cat = SourceCatalog(img, seg)
    x, y = np.asarray(cat.x_centroid, float), np.asarray(cat.y_centroid, float)
    ok = np.isfinite(x) & np.isfinite(y)
    return {"sky": float(med), "sigma": float(std), "x": x[ok], "y": y[ok]}


def summarise(per_file: list[dict], methods) -> dict:
    """Pool the sources of all files: {method: {r3: {...}, centroid, roundtrip}}."""
    out = {}
    for m in methods:
        rows = [f[m] for f in per_file if m in f]
        summ = {}
        for r in RADII:
            ratio = np.array([v for f in rows for v in f.get(f"r{r}", {}).get("ratios", [])])
            summ[f"r{r}"] = {"n": int(ratio.size),
                             "median_abs_dev": float(np.median(np.abs(ratio - 1))) if ratio.size else None,
                             "median_ratio": float(np.median(ratio)) if ratio.size else None,
                             "worst_ratio": float(ratio[np.argmax(np.abs(ratio - 1))]) if ratio.size else None,
                             "frac_off": float(np.mean(np.abs(ratio - 1) > OFF)) if ratio.size else None}
        shifts = [f["centroid_shift_median"] for f in rows if f.get("centroid_shift_median") is not None]
        summ["centroid_shift_median"] = float(np.median(shifts)) if shifts else None
        summ["roundtrip_rms_sigma_median"] = float(np.median([f["roundtrip_rms_sigma"] for f in rows]))
        out[m] = summ
    return out


# ---------------------------------------------------------------------------- resolution (eval protocol)

def psnr_scores(up, files: list[Path], methods) -> dict:
    """Mean PSNR asinh (dB) vs HR per method in the ``srgan eval`` protocol, plus Richardson-Lucy."""
    from srgan.data import load_fits_planes
    from srgan.degrade import PRESETS
    from srgan.evaluate import ASINH_SOFTENING, AstroSetup, astro_lr, astro_outputs, modcrop
    from srgan.metrics import psnr_data

    s = up.scale
    setup = AstroSetup.from_preset(PRESETS[up.info.preset])
    scores: dict[str, list[float]] = {}
    for path in files:
        hr = modcrop(load_fits_planes(path)[0], s).astype(np.float32)
        lr = astro_lr(hr, s, setup, path.name)
        outs = outputs(up, lr, None, [m for m in methods if m != "bicubic"])
        outs["bicubic"] = astro_outputs(up, lr, s, setup)["bicubic"]
        outs["richardson-lucy"] = astro_outputs(up, lr, s, setup)["richardson-lucy"]
        for m, o in outs.items():
            p = psnr_data(np.arcsinh(o / ASINH_SOFTENING), np.arcsinh(hr / ASINH_SOFTENING), border=s)
            scores.setdefault(m, []).append(float(p))
    return {m: float(np.mean(v)) for m, v in scores.items()}


# ---------------------------------------------------------------------------- against the truth (eval protocol)

def truth_scores(up, files: list[Path], methods, noise: bool = True) -> dict:
    """Aperture fluxes against the truth, on held-out HR galaxies degraded in the ``srgan eval`` protocol.

    The LR is HR through the PSF, block-mean binned, plus noise, so what each LR pixel holds is
    the PSF-blurred HR integrated over it: the truth inside an aperture is that blurred HR
    (noise-free, at the output's resolution) summed inside it. Measured like :func:`measure`
    (sources of the LR at 5 sigma, S/N >= 20, r = 3/6/10 LR px), for the input's own
    measurement (flat pixels: what photometry of the LR assumes) and for every method.
    ``noise=False``: the LR without the noise draw (PSF and binning only), so that input and
    truth differ only by how flux is distributed inside pixels.
    Returns {"r3": {"input": median |flux/true - 1|, method: ...}, ...} pooled over files.
    """
    from photutils.aperture import CircularAperture, aperture_photometry

    from srgan.data import load_fits_planes
    from srgan.degrade import PRESETS, astro_forward, convolve_psf, psf_kernel
    from srgan.evaluate import AstroSetup, astro_lr, modcrop

    s = up.scale
    setup = AstroSetup.from_preset(PRESETS[up.info.preset])
    kernel = psf_kernel(setup.kind, setup.fwhm, beta=setup.beta)
    pooled: dict[int, dict[str, list[float]]] = {r: {} for r in RADII}
    for path in files:
        hr = modcrop(load_fits_planes(path)[0], s).astype(np.float32)
        lr = astro_lr(hr, s, setup, path.name) if noise else astro_forward(
            torch.from_numpy(hr)[None, None], setup.fwhm, s, setup.kind, setup.beta)[0, 0].numpy()
        truth = convolve_psf(torch.from_numpy(hr)[None, None], kernel)[0, 0].numpy().astype(np.float64)
        cat = catalog(lr)
        if not len(cat["x"]):
            continue
        images = {"input": (lr, 1), "truth": (truth, s),
                  **{m: (o, s) for m, o in outputs(up, lr, None, methods).items()}}
        h, w = lr.shape
        x, y = cat["x"], cat["y"]
        for r in RADII:
            flux = {}
            for name, (img, k) in images.items():
                pos = np.c_[(x + 0.5) * k - 0.5, (y + 0.5) * k - 0.5]
                flux[name] = aperture_photometry(img - cat["sky"], CircularAperture(pos, r * k), mask=~np.isfinite(img),
                                                 method="exact")["aperture_sum"].data / k**2
            inside = (x - r >= -0.5) & (x + r <= w - 0.5) & (y - r >= -0.5) & (y + r <= h - 0.5)
            keep = inside & (flux["input"] / (cat["sigma"] * np.sqrt(np.pi * r * r)) >= SNR_MIN)
            for name, f in flux.items():
                if name != "truth":
                    pooled[r].setdefault(name, []).extend(np.abs(f[keep] / flux["truth"][keep] - 1).tolist())
    return {f"r{r}": {name: float(np.median(v)) if v else None for name, v in d.items()} | {
        "n": len(d.get("input", []))} for r, d in pooled.items()}


# ---------------------------------------------------------------------------- main

def heldout_files() -> list[Path]:
    names = [ln.strip() for ln in (ROOT / "benchmarks" / "galaxy-heldout.txt").read_text().splitlines()
             if ln.strip() and not ln.startswith("#")]
    return [SHARED / n for n in names]


def load(path: Path):
    from astropy.io import fits

    with fits.open(path) as f:
        hdu = next(h for h in f if h.is_image and h.data is not None and h.data.ndim == 2)
        return np.asarray(hdu.data, np.float32), hdu.header.copy()


def smoke_setup(tmp: Path):
    """A tiny astro model and one synthetic galaxy field (``srgan make-galaxies``)."""
    from srgan.checkpoint import load_model, save_model
    from srgan.galaxies import GalaxyConfig, make_galaxies
    from srgan.models import Generator, GeneratorConfig
    from srgan.normalize import Normalization
    from srgan.upscale import Upscaler

    files = make_galaxies(tmp, 1, seed=3, config=GalaxyConfig(size=64))
    torch.manual_seed(0)
    g = Generator(GeneratorConfig(scale=2, in_channels=1, out_channels=1, channels=4, blocks=1, batch_norm=False))
    save_model(tmp / "tiny.safetensors", g.eval(), normalization=Normalization("asinh"), preset="astro")
    return Upscaler(load_model(tmp / "tiny.safetensors"), device="cpu"), files


def run(up, files: list[Path], methods=METHODS, psnr_files=None, truth: bool = False) -> dict:
    per_file, t0 = [], time.perf_counter()
    for path in files:
        data, header = load(path)
        cat = catalog(data)
        w_in, w_out = wcs_pair(header, data.shape, up.scale)
        outs = outputs(up, data, header, methods)
        per_file.append({"file": path.name, **{m: measure(data, o, up.scale, w_in, w_out, cat)
                                               for m, o in outs.items()}})
    record = {"model": up.info.name, "scale": up.scale, "files": [f["file"] for f in per_file],
              "radii_input_px": list(RADII), "snr_min": SNR_MIN, "summary": summarise(per_file, methods),
              "per_file": per_file}
    if psnr_files:
        record["psnr_asinh_db"] = psnr_scores(up, psnr_files, methods)
    if truth:
        record["vs_truth"] = truth_scores(up, files, methods)
        record["vs_truth_noise_free"] = truth_scores(up, files, methods, noise=False)
    record["seconds"] = round(time.perf_counter() - t0, 1)
    return record


def table(record: dict) -> str:
    """Markdown table of the summary."""
    psnr = "psnr_asinh_db" in record
    head = ("| method | " + " | ".join(f"r={r}: median \\|ratio-1\\| / worst / off >0.5%" for r in RADII)
            + " | centroid shift (px) | round trip (sigma) |" + (" PSNR asinh (dB) |" if psnr else ""))
    lines = [head, "|---" * (len(RADII) + 3 + ("psnr_asinh_db" in record)) + "|"]
    for m, s in record["summary"].items():
        cells = []
        for r in RADII:
            v = s[f"r{r}"]
            cells.append("-" if v["n"] == 0 else f"{100 * v['median_abs_dev']:.2f}% / {v['worst_ratio']:.3f} / "
                         f"{100 * v['frac_off']:.0f}% (n={v['n']})")
        c = s["centroid_shift_median"]
        c = "-" if c is None else f"{c:.3f}"
        row = f"| {m} | " + " | ".join(cells) + f" | {c} | {s['roundtrip_rms_sigma_median']:.3f} |"
        if "psnr_asinh_db" in record:
            row += f" {record['psnr_asinh_db'].get(m, float('nan')):.2f} |"
        lines.append(row)
    if "psnr_asinh_db" in record and "richardson-lucy" in record["psnr_asinh_db"]:
        lines.append(f"\nRichardson-Lucy PSNR asinh: {record['psnr_asinh_db']['richardson-lucy']:.2f} dB")
    for key, what in (("vs_truth", "eval protocol"), ("vs_truth_noise_free", "LR without noise")):
        if key not in record:
            continue
        t = record[key]
        names = [n for n in t["r3"] if n != "n"]
        lines += ["", f"Against the truth ({what}: median |flux / true flux - 1|; input = flat-pixel photometry "
                  "of the LR)", "| r (LR px) | sources | " + " | ".join(names) + " |", "|---" * (len(names) + 2) + "|"]
        for r in RADII:
            v = t[f"r{r}"]
            lines.append(f"| {r} | {v['n']} | " + " | ".join("-" if v[n] is None else f"{100 * v[n]:.2f}%"
                                                          for n in names) + " |")
    return "\n".join(lines)


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("files", nargs="*", type=Path, help="FITS images (default with --heldout: the held-out galaxies)")
    p.add_argument("--heldout", action="store_true", help="the galaxies of benchmarks/galaxy-heldout.txt in ../shared")
    p.add_argument("--model", default="galaxy-x4")
    p.add_argument("--limit", type=int, default=None, help="only the first N files")
    p.add_argument("--methods", default=",".join(METHODS))
    p.add_argument("--psnr", action="store_true", help="also PSNR vs HR in the srgan eval protocol (same files)")
    p.add_argument("--truth", action="store_true",
                   help="also aperture fluxes against the truth: the files as HR, degraded in the eval protocol")
    p.add_argument("--smoke", action="store_true", help="tiny model, one synthetic field: seconds")
    p.add_argument("--json", type=Path, default=None)
    a = p.parse_args(argv)
    methods = tuple(a.methods.split(","))
    torch.set_num_threads(1)
    if a.smoke:
        import tempfile

        with tempfile.TemporaryDirectory() as tmp:
            up, files = smoke_setup(Path(tmp))
            record = run(up, files, methods, psnr_files=files if a.psnr else None, truth=a.truth)
    else:
        from srgan.upscale import Upscaler

        files = list(a.files) or (heldout_files() if a.heldout else [])
        if not files:
            p.error("give FITS files or --heldout")
        missing = [f for f in files if not f.exists()]
        if missing:
            p.error(f"missing: {missing[0]} (the shared datasets are in ../shared)")
        files = files[:a.limit] if a.limit else files
        up = Upscaler.from_pretrained(a.model, device="cpu")
        record = run(up, files, methods, psnr_files=files if a.psnr else None, truth=a.truth)
    print(table(record))
    if a.json:
        tmp = a.json.with_suffix(a.json.suffix + ".tmp")
        tmp.write_text(json.dumps(record, indent=1))
        tmp.replace(a.json)
    return 0


if __name__ == "__main__":
    sys.exit(main())
