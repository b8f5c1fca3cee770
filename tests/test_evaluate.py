import json
import math

import numpy as np
import pytest
from click.testing import CliRunner
from PIL import Image, ImageOps

from srgan.checkpoint import ModelInfo
from srgan.cli import main
from srgan.errors import ConfigError, InputError, ModelError
from srgan.evaluate import (bicubic_upsample, evaluate, evaluate_folders, flux_error_vs_hr, markdown, modcrop,
                            photo_lr, richardson_lucy_baseline)
from srgan.galaxies import GalaxyConfig, make_galaxies
from srgan.metrics import psnr_y, ssim_y
from srgan.models import GeneratorConfig
from srgan.normalize import Normalization

RGB_OFFSET_PSNR = 20 * math.log10(255 / (219 / 255))  # +1 on R, G, B = +219/255 on Y
GRAY_OFFSET_PSNR = 20 * math.log10(255)


def _smooth(h, w, seed, channels=3):
    rng = np.random.default_rng(seed)
    small = rng.uniform(30, 220, size=(h // 6 + 2, w // 6 + 2, channels))
    im = Image.fromarray(small.astype(np.uint8).squeeze()).resize((w, h), Image.BICUBIC)
    return np.asarray(im)


@pytest.fixture
def photos(tmp_path):
    d = tmp_path / "photos"
    d.mkdir()
    Image.fromarray(_smooth(37, 45, 1)).save(d / "a.png")  # odd sizes: modcrop to 36x44
    Image.fromarray(_smooth(40, 34, 2)).save(d / "b.png")
    Image.fromarray(_smooth(33, 38, 3, channels=1)).save(d / "c_gray.png")  # mode L
    return d


@pytest.fixture
def tiny_photo_model(tmp_path, make_model_file):
    return make_model_file(tmp_path / "tiny.safetensors", scale=2, channels=8, blocks=1)


class Oracle:
    """An 'upscaler' that returns the HR plus one grey level: its scores are known by hand."""

    def __init__(self, folder, scale=2):
        self.scale = scale
        self.info = ModelInfo(config=GeneratorConfig(scale=scale), name="oracle", sha256="0" * 64)
        self.answers = {}
        for p in folder.iterdir():
            hr = modcrop(np.asarray(Image.open(p).convert("RGB")), scale)
            self.answers[photo_lr(hr, scale).tobytes()] = hr + 1

    def upscale(self, lr):
        return self.answers[lr.tobytes()]


def test_known_case_scores_are_hand_computed(photos):
    result = evaluate(Oracle(photos), photos, preset="bicubic")
    rows = {r.image: r for r in result.images}
    assert list(rows) == ["a.png", "b.png", "c_gray.png"]
    assert (rows["a.png"].height, rows["a.png"].width) == (36, 44)
    assert rows["a.png"].scores["model"]["psnr_y"] == pytest.approx(RGB_OFFSET_PSNR, abs=1e-9)
    assert rows["b.png"].scores["model"]["psnr_y"] == pytest.approx(RGB_OFFSET_PSNR, abs=1e-9)
    # grayscale: scored on the gray values themselves
    assert rows["c_gray.png"].scores["model"]["psnr_y"] == pytest.approx(GRAY_OFFSET_PSNR, abs=1e-9)
    assert rows["a.png"].scores["model"]["ssim_y"] > 0.999
    # the bicubic baseline is Pillow bicubic upsampling of the 8-bit LR, shave = scale
    hr = modcrop(np.asarray(Image.open(photos / "a.png")), 2)
    bic = bicubic_upsample(photo_lr(hr, 2), 2)
    assert rows["a.png"].scores["bicubic"] == {"psnr_y": psnr_y(bic, hr, 2), "ssim_y": ssim_y(bic, hr, 2)}
    gray = modcrop(np.asarray(Image.open(photos / "c_gray.png")), 2)
    gbic = np.asarray(Image.fromarray(photo_lr(np.stack([gray] * 3, -1), 2)[..., 0]).resize((38, 32), Image.BICUBIC))
    assert rows["c_gray.png"].scores["bicubic"]["psnr_y"] == pytest.approx(psnr_y(gbic, gray, 2))
    mean = result.mean()
    assert mean["model"]["psnr_y"] == pytest.approx((2 * RGB_OFFSET_PSNR + GRAY_OFFSET_PSNR) / 3)


def test_cli_json_and_markdown(photos, tiny_photo_model, tmp_path):
    out = tmp_path / "scores.json"
    runner = CliRunner()
    r = runner.invoke(main, ["eval", "--model", str(tiny_photo_model), "--hr", str(photos), "--json", str(out),
                             "--device", "cpu"])
    assert r.exit_code == 0, r.output
    assert r.stdout.startswith("photos (3 images, x2, bicubic): model: psnr_y ")
    d = json.loads(out.read_text())
    assert d["model"] == "tiny" and len(d["model_sha256"]) == 64 and d["scale"] == 2
    [ds] = d["datasets"]
    assert ds["methods"] == ["model", "bicubic"] and ds["metrics"] == ["psnr_y", "ssim_y"]
    assert [row["image"] for row in ds["images"]] == ["a.png", "b.png", "c_gray.png"]
    for method in ds["methods"]:
        for metric in ds["metrics"]:
            values = [row[method][metric] for row in ds["images"]]
            assert ds["mean"][method][metric] == pytest.approx(np.mean(values))
    oracle = evaluate(Oracle(photos), photos, preset="bicubic")  # same baseline in another run
    assert ds["mean"]["bicubic"] == pytest.approx(oracle.mean()["bicubic"])

    r = runner.invoke(main, ["eval", "--model", str(tiny_photo_model), "--hr", str(photos), "--markdown",
                             "--device", "cpu"])
    assert r.exit_code == 0, r.output
    lines = r.stdout.splitlines()
    assert lines[0] == "| Dataset | Images | Bicubic PSNR-Y (dB) / SSIM-Y | **tiny** PSNR-Y (dB) / SSIM-Y |"
    assert lines[1] == "|---|---:|---:|---:|"
    bic = ds["mean"]["bicubic"]
    assert lines[2].startswith(f"| photos | 3 | {bic['psnr_y']:.2f} / {bic['ssim_y']:.4f} | ")
    assert f"Generated with `srgan eval --model {tiny_photo_model} --hr {photos} --markdown`" in r.stdout
    assert markdown(d, command=f"srgan eval --model {tiny_photo_model} --hr {photos} --markdown") + "\n" == r.stdout


def test_user_errors_are_one_line(photos, tiny_photo_model):
    runner = CliRunner()
    base = ["eval", "--model", str(tiny_photo_model), "--hr", str(photos), "--device", "cpu"]
    r = runner.invoke(main, base + ["--scale", "4"])
    assert r.exit_code == 1 and r.output.startswith("Error: model 'tiny' upscales x2, not x4")
    r = runner.invoke(main, base + ["--preset", "astro"])
    assert r.exit_code == 1 and r.output.startswith("Error: no FITS images in")
    r = runner.invoke(main, base + ["--preset", "nope"])  # a click.Choice: a usage error before any work
    assert r.exit_code == 2 and "Invalid value for '--preset': 'nope' is not one of 'bicubic', 'photo', 'astro'" in r.output
    r = runner.invoke(main, base + ["--tile", "-1"])
    assert r.exit_code == 2 and "Invalid value for '--tile': -1 is not in the range x>=0" in r.output


@pytest.fixture
def galaxies(tmp_path):
    d = tmp_path / "gal"
    make_galaxies(d, 2, seed=3, config=GalaxyConfig(size=40))
    return d


@pytest.fixture
def tiny_astro_model(tmp_path, make_model_file):
    return make_model_file(tmp_path / "astro.safetensors", normalization=Normalization("asinh"), preset="astro",
                           scale=2, in_channels=1, out_channels=1, channels=8, blocks=1)


def test_astro_eval_scores_model_bicubic_and_richardson_lucy(galaxies, tiny_astro_model):
    a = evaluate(str(tiny_astro_model), galaxies, device="cpu", rl_iterations=5)  # preset from the model
    assert a.preset == "astro" and a.methods == ("model", "bicubic", "richardson-lucy")
    assert a.metrics == ("psnr_asinh", "psnr_linear", "flux_error", "flux_error_lr")
    assert [r.image for r in a.images] == ["galaxy_00000.fits", "galaxy_00001.fits"]
    for row in a.images:
        assert (row.height, row.width) == (40, 40)
        for method in a.methods:
            assert all(np.isfinite(v) for v in row.scores[method].values())
        # block-mean binning keeps per-pixel units: bicubic needs no flux rescaling
        assert row.scores["bicubic"]["flux_error"] < 0.2
        assert row.scores["bicubic"]["flux_error_lr"] < 0.01  # bicubic adds (almost) no flux to its input
        assert row.scores["richardson-lucy"]["psnr_linear"] != row.scores["bicubic"]["psnr_linear"]
    b = evaluate(str(tiny_astro_model), galaxies, device="cpu", rl_iterations=5)
    assert [r.scores for r in a.images] == [r.scores for r in b.images]  # fixed noise seed per file
    report = evaluate_folders(str(tiny_astro_model), [galaxies], device="cpu", rl_iterations=5)
    d = report.to_dict()
    assert d["datasets"][0]["astro_setup"]["kind"] == "moffat"
    text = markdown(d)
    assert "| Bicubic PSNR asinh (dB) / PSNR linear (dB) / flux err vs HR / vs LR | Richardson-Lucy" in text
    assert "| gal | 2 |" in text and "%" in text


@pytest.mark.parametrize("tagged", [False, True])
def test_eval_scores_exactly_what_srgan_upscale_writes(galaxies, tiny_astro_model, tmp_path, monkeypatch, tagged):
    """score_fits' model output is upscale_fits' output for the same LR, bit for bit. With the FITS
    pipeline patched to shift its output, both move: eval has no pixel pipeline of its own."""
    from astropy.io import fits

    from srgan.data import load_fits_planes
    from srgan.degrade import PRESETS
    from srgan.evaluate import AstroSetup, astro_lr, astro_outputs, score_fits
    from srgan.fits import FitsOptions, pipeline, upscale_fits
    from srgan.metrics import psnr_data
    from srgan.upscale import Upscaler

    if tagged:
        real = pipeline.upscale_plane

        def shifted(upscaler, plane, out, options, kernel=None, **kw):
            result = real(upscaler, plane, out, options, kernel, **kw)
            out[...] = np.asarray(out) + np.float32(7.0)
            return result

        monkeypatch.setattr(pipeline, "upscale_plane", shifted)
    up = Upscaler.from_pretrained(tiny_astro_model, device="cpu")
    setup = AstroSetup.from_preset(PRESETS["astro"])
    path = sorted(galaxies.glob("*.fits"))[0]
    hr = modcrop(load_fits_planes(path)[0], 2).astype(np.float32)
    lr = astro_lr(hr, 2, setup, path.name)
    fits.PrimaryHDU(lr).writeto(tmp_path / "lr.fits")
    upscale_fits(up, tmp_path / "lr.fits", tmp_path / "sr.fits", flux="surface-brightness")  # block
    upscale_fits(up, tmp_path / "lr.fits", tmp_path / "sr_global.fits",
                 options=FitsOptions(flux="surface-brightness", correction="global"))
    block = fits.getdata(tmp_path / "sr.fits").astype(np.float32)
    assert not np.array_equal(astro_outputs(up, lr, 2, setup, rl_iterations=1)["model"], block)
    written = fits.getdata(tmp_path / "sr_global.fits").astype(np.float32)  # eval scores the network's resolution
    assert np.array_equal(astro_outputs(up, lr, 2, setup, rl_iterations=1)["model"], written)
    _, _, scores = score_fits(up, path, 2, setup, rl_iterations=1)
    assert scores["model"]["psnr_linear"] == psnr_data(written, hr, 2)
    assert scores["model"]["flux_error"] == flux_error_vs_hr(written, hr)
    assert (written.mean() > hr.mean() + 6) == tagged  # the shift really reached the output


def test_a_photo_model_is_refused_on_fits_as_by_srgan_upscale(galaxies, tiny_photo_model):
    with pytest.raises(ModelError, match="trained on photos.*--model"):
        evaluate(str(tiny_photo_model), galaxies, preset="astro", device="cpu", rl_iterations=1)


def test_richardson_lucy_baseline_sharpens_any_sign_data():
    from scipy.signal import fftconvolve

    y, x = np.mgrid[-20:21, -20:21]
    truth = 50 * np.exp(-(x**2 + y**2) / (2 * 1.0**2)) - 2.0  # a compact source on a negative sky
    psf = np.exp(-(x[15:26, 15:26] ** 2 + y[15:26, 15:26] ** 2) / (2 * 2.0**2))
    psf /= psf.sum()
    blurred = fftconvolve(truth + 2.0, psf, mode="same") - 2.0
    rl = richardson_lucy_baseline(blurred, psf, iterations=30)
    assert blurred.min() < 0
    assert np.abs(rl - truth).sum() < 0.5 * np.abs(blurred - truth).sum()
    assert rl.max() > blurred.max()
    assert rl.sum() == pytest.approx(blurred.sum(), rel=0.01)


def test_flux_error_vs_hr_definition():
    hr = np.array([[3.0, -1.0], [2.0, 0.0]])  # sum 4, sum |.| 6
    assert flux_error_vs_hr(hr + 0.5, hr) == pytest.approx(2.0 / 6.0)
    assert flux_error_vs_hr(hr, hr) == 0.0


def test_folder_without_images_is_an_input_error(tmp_path, tiny_photo_model):
    (tmp_path / "empty").mkdir()
    with pytest.raises(InputError, match="no photo"):
        evaluate(str(tiny_photo_model), tmp_path / "empty", device="cpu")
    with pytest.raises(ConfigError, match="--scale"):
        evaluate(str(tiny_photo_model), tmp_path / "empty", device="cpu", scale=8)


def test_photos_are_read_upright_and_16_bit_is_refused(tmp_path):
    from srgan.evaluate import _load_photo

    rgb = _smooth(20, 28, 4)
    exif = Image.Exif()
    exif[0x0112] = 8  # display rotated 90 degrees counter-clockwise
    Image.fromarray(rgb).save(tmp_path / "turned.jpg", quality=95, exif=exif.tobytes())
    hr, gray = _load_photo(tmp_path / "turned.jpg")
    assert not gray and np.array_equal(hr, np.asarray(ImageOps.exif_transpose(Image.open(tmp_path / "turned.jpg"))))
    Image.fromarray(rgb[..., 0]).convert("LA").save(tmp_path / "la.png")
    hr, gray = _load_photo(tmp_path / "la.png")
    assert gray and hr.shape == (20, 28, 3) and np.array_equal(hr[..., 2], rgb[..., 0])
    Image.fromarray(rgb[..., 0].astype(np.uint16) * 257).save(tmp_path / "g16.png")
    with pytest.raises(InputError, match="g16.png: 16-bit images are not part of the 8-bit benchmark protocol"):
        _load_photo(tmp_path / "g16.png")
