"""Smoke test: every real galaxy FITS in ../shared/datasets/galaxies-fits upscales cleanly."""

import warnings

import numpy as np
from astropy.io import fits
from astropy.wcs import WCS
from helpers import shared_dataset, tiny_upscaler

from srgan import fits as sf


def test_every_shared_galaxy_upscales(tmp_path):
    files = sorted(shared_dataset("galaxies-fits").glob("*.fits"))
    assert len(files) >= 80, "the galaxies-fits set should hold 85 files"
    up = tiny_upscaler(tmp_path / "tiny.safetensors")  # 4 channels, 1 block, x2: a few seconds in all
    s = up.scale
    problems = []
    for i, src in enumerate(files):
        flux = ("conserve", "surface-brightness")[i % 2]
        dst = tmp_path / "out.fits"
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # e.g. MJy/sr with flux='conserve'
            sf.upscale_fits(up, src, dst, flux=flux)
        with fits.open(src) as fin, fits.open(dst) as fout:
            x, y = fin[0].data.astype(np.float64), fout[0].data
            hin, hout = fin[0].header, fout[0].header
            footprint = np.repeat(np.repeat(np.isfinite(x), s, 0), s, 1)
            if y.dtype.newbyteorder("=") != np.float32 or y.shape != (x.shape[0] * s, x.shape[1] * s):
                problems.append(f"{src.name}: output {y.dtype} {y.shape}")
                continue
            if not np.array_equal(np.isfinite(y), footprint):
                problems.append(f"{src.name}: finite pixels do not match the input's footprint")
            total = np.nansum(y, dtype=np.float64) / (1 if flux == "conserve" else s * s)
            err = abs(total - np.nansum(x)) / np.nansum(np.abs(x))
            if err > 0.005:
                problems.append(f"{src.name}: flux error {100 * err:.2f}% ({flux})")
            if "CTYPE1" in hin:
                with warnings.catch_warnings():
                    warnings.simplefilter("ignore")
                    old, new = WCS(hin), WCS(hout)
                if not new.has_celestial:
                    problems.append(f"{src.name}: WCS lost")
                    continue
                p = np.array([[0.0, 0.0], [x.shape[1] - 1.0, x.shape[0] - 1.0]])  # 0-based input corners
                sky = old.all_pix2world(p, 0)
                back = new.all_world2pix(sky, 0)
                if np.abs(back - ((p + 0.5) * s - 0.5)).max() > 0.01:
                    problems.append(f"{src.name}: WCS off by {np.abs(back - ((p + 0.5) * s - 0.5)).max():.3f} px")
    assert not problems, "\n".join(problems)
