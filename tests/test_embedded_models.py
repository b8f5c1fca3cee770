"""The models shipped in srgan/weights: they load offline, match their documentation, work."""

import shutil
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from click.testing import CliRunner
from helpers import shared_dataset

from srgan import Upscaler, load_model
from srgan.checkpoint import WEIGHTS_DIR
from srgan.cli import main

# name -> (scale, channels, normalisation kind, preset), as README and the model cards say.
DOCUMENTED = {
    "photo-x4": (4, 3, "unit", "bicubic"),
    "photo-x2": (2, 3, "unit", "bicubic"),
    "photo-x4-real": (4, 3, "unit", "photo"),
    "galaxy-x4": (4, 1, "asinh", "astro"),
    "galaxy-x2": (2, 1, "asinh", "astro"),
}
REPO = Path(__file__).resolve().parents[1]


def test_every_documented_model_is_embedded_and_small():
    for name in DOCUMENTED:
        path = WEIGHTS_DIR / f"{name}.safetensors"
        assert path.is_file(), f"{name} missing from srgan/weights"
        assert path.stat().st_size <= 10 * 2**20
        assert (WEIGHTS_DIR / f"{name}.md").is_file(), f"{name} has no model card"


@pytest.mark.parametrize("name", sorted(DOCUMENTED))
def test_embedded_model_loads_and_upscales(name):
    scale, channels, kind, preset = DOCUMENTED[name]
    g = load_model(name)
    assert (g.config.scale, g.config.in_channels, g.config.out_channels) == (scale, channels, channels)
    assert g.info.normalization.kind == kind and g.info.preset == preset
    up = Upscaler(g, device="cpu")
    if channels == 3:
        out = up.upscale(np.random.default_rng(0).integers(0, 256, (12, 10, 3), dtype=np.uint8))
        assert out.shape == (12 * scale, 10 * scale, 3) and out.dtype == np.uint8
    elif scale == 4:
        _assert_restores_the_sample_galaxy(up)
    else:  # galaxy-x2: guarded on held-out galaxies by test_galaxy_models_beat_bicubic_and_richardson_lucy_...
        out = up.upscale(np.random.default_rng(0).normal(0, 1, (12, 10)).astype(np.float32))
        assert out.shape == (12 * scale, 10 * scale) and np.isfinite(out).all()


def _assert_restores_the_sample_galaxy(up):
    """The bundled CEERS galaxy (100x100, in galaxy-x4's training set: a regression guard, not a
    score), degraded as in training to 25x25 and upscaled by the network alone (plain arrays get
    no flux correction): shipped galaxy-x4 is 11.5 dB above bicubic, its flux within 1.3%; with
    zeroed weights -8.4 dB and 31% of the flux, with its last layer halved -7.1 dB and 49%."""
    from astropy.io import fits

    from srgan.degrade import degrade
    from srgan.normalize import sky_and_noise

    hr = fits.getdata(REPO / "data" / "galaxies" / "ceers_f200w_29185.fits").astype(np.float32)
    sky, noise = sky_and_noise(hr)
    lr = degrade(torch.from_numpy((hr - sky) / noise)[None, None], "astro", 4,
                 generator=torch.Generator().manual_seed(0))[0, 0].numpy() * noise + sky
    out = up.upscale(lr)
    assert lr.shape == (25, 25) and out.shape == (100, 100) and out.dtype == np.float32
    bicubic = F.interpolate(torch.from_numpy(lr)[None, None], scale_factor=4, mode="bicubic")[0, 0].numpy()
    gain_db = 20 * np.log10(np.sqrt(np.mean((bicubic - hr) ** 2) / np.mean((out - hr) ** 2)))
    assert gain_db > 5, gain_db
    assert out.sum() / 16 == pytest.approx(lr.sum(), rel=0.05)


@pytest.mark.parametrize("model, margin", [("photo-x4", 1.5), ("photo-x2", 2.0)])
def test_photo_models_beat_bicubic_on_set5_images(tmp_path, model, margin):
    """Regression guard: the photo models must stay clearly above bicubic on two Set5 images
    (shipped photo-x4: +1.64 and +3.31 dB, mean +2.47 dB; photo-x2: +1.54 and +4.76, mean +3.15)."""
    from srgan.evaluate import evaluate

    set5 = shared_dataset("Set5")
    for stem in ("baby", "bird"):
        shutil.copy(set5 / f"{stem}.png", tmp_path / f"{stem}.png")
    result = evaluate(model, tmp_path, device="cpu")
    mean = result.mean()
    assert mean["model"]["psnr_y"] > mean["bicubic"]["psnr_y"] + margin, mean


@pytest.mark.parametrize("model", ["galaxy-x4", "galaxy-x2"])
def test_galaxy_models_beat_bicubic_and_richardson_lucy_on_held_out_galaxies(tmp_path, model):
    """Regression guard on two galaxies held out of the galaxy models' training (benchmarks/galaxy-heldout.txt);
    shipped galaxy-x4: asinh PSNR +6.5 / +3.3 dB over bicubic, more over Richardson-Lucy."""
    from srgan.evaluate import evaluate

    fits_dir = shared_dataset("galaxies-fits")
    for name in ("ceers_jwst_nircam_f200w_13670.fits", "galsim_aegis_acs_f606w_9024.fits"):
        shutil.copy(fits_dir / name, tmp_path / name)
    mean = evaluate(model, tmp_path, device="cpu").mean()
    for baseline in ("bicubic", "richardson-lucy"):
        assert mean["model"]["psnr_asinh"] > mean[baseline]["psnr_asinh"] + 2.0, mean
        assert mean["model"]["psnr_linear"] > mean[baseline]["psnr_linear"], mean
    assert mean["model"]["flux_error_lr"] < 1e-4, mean  # flux of the LR input kept


def test_quick_start_upscales_the_sample_photos_with_the_default_model(tmp_path):
    """README's first command: `srgan upscale data/photos OUT` with no model flag."""
    result = CliRunner().invoke(main, ["upscale", str(REPO / "data" / "photos"), str(tmp_path / "out")])
    assert result.exit_code == 0, result.output
    outputs = sorted(p.name for p in (tmp_path / "out").iterdir())
    inputs = sorted(p.name for p in (REPO / "data" / "photos").glob("*.png"))
    assert outputs == inputs


def test_photo_default_overlap_matches_the_exact_output_in_8_bits():
    """photo-x4 tiles with 16 px of context (not its 40 px receptive radius): on a real photo
    cut into many small tiles, the 8-bit output must equal the exact one almost everywhere."""
    from PIL import Image

    lr = np.asarray(Image.open(REPO / "data" / "photos" / "tiger.png").convert("RGB"))[:96, :96].copy()
    fast = Upscaler.from_pretrained("photo-x4", device="cpu", tile=32)
    exact = Upscaler.from_pretrained("photo-x4", device="cpu", tile=32, overlap=fast.radius)
    assert fast.overlap == 16 and exact.overlap == 40
    a, b = fast.upscale(lr).astype(int), exact.upscale(lr).astype(int)
    assert np.abs(a - b).max() <= 1 and (a != b).mean() < 1e-3
    galaxy = Upscaler.from_pretrained("galaxy-x4", device="cpu")
    assert galaxy.overlap == galaxy.radius  # FITS keep the exact default


def test_models_command_lists_every_embedded_model_with_the_lr_preset_of_its_scores():
    r = CliRunner().invoke(main, ["models"])
    assert r.exit_code == 0, r.output
    for name in DOCUMENTED:
        assert f"{name}: x{DOCUMENTED[name][0]}," in r.output
    assert "BSD100 (100 img, photo LR, psnr_y / ssim_y)" in r.output  # photo-x4-real's scores
    assert "Set5 (5 img, bicubic LR, psnr_y / ssim_y)" in r.output  # photo-x4's
