"""Hostile inputs and faults (issue 13): each case gives one clear line, keeps the batch going,
never reports success for a wrong output and leaves no temporary file behind."""

import errno
import json
import os
import struct
import subprocess
import sys
import warnings
import zlib
from pathlib import Path

import numpy as np
import pytest
import torch
from astropy.io import fits
from click.testing import CliRunner
from helpers import make_photos, tiny_upscaler
from PIL import Image
from safetensors.torch import save_file

from srgan.checkpoint import MODEL_FORMAT, save_model
from srgan.cli import main
from srgan.errors import ConfigError
from srgan.models import Generator, GeneratorConfig, receptive_radius
from srgan.upscale import Upscaler


@pytest.fixture(scope="module")
def photo_model(tmp_path_factory):
    path = tmp_path_factory.mktemp("model") / "tiny.safetensors"
    torch.manual_seed(0)
    save_model(path, Generator(GeneratorConfig(scale=2, channels=4, blocks=1)).eval())
    return path


@pytest.fixture(scope="module")
def fits_model(tmp_path_factory):
    path = tmp_path_factory.mktemp("fmodel") / "astro.safetensors"
    tiny_upscaler(path)
    return path


def upscale(*args):
    return CliRunner().invoke(main, ["upscale", *map(str, args)])


def error_lines(result, path) -> list[str]:
    return [line for line in result.output.splitlines() if line.startswith(f"Error: {path}:")]


def temps(folder: Path) -> list[Path]:
    return [p for p in folder.rglob("*.tmp")]


def galaxy(path: Path, size: int = 16, seed: int = 0) -> Path:
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[0:size, 0:size]
    data = 5 * np.exp(-((yy - size / 2) ** 2 + (xx - size / 2) ** 2) / 8) + rng.normal(0, 0.1, (size, size))
    path.parent.mkdir(parents=True, exist_ok=True)
    fits.PrimaryHDU(data.astype(np.float32)).writeto(path)
    return path


# --- every exception of one file stays with that file ---------------------------------------


def test_symlink_loop_while_planning_is_one_error_line(tmp_path, photo_model):
    src = make_photos(tmp_path / "in", 1)
    (src / "loop.png").symlink_to("loop.png")  # resolves to itself: RuntimeError in pathlib
    result = upscale(src, tmp_path / "out", "--model", photo_model)
    assert result.exit_code == 1 and not isinstance(result.exception, RuntimeError), result.output
    assert len(error_lines(result, src / "loop.png")) == 1
    assert "1 done, 0 skipped, 1 failed" in result.output
    assert Image.open(tmp_path / "out" / "img00.png").size == (96, 96)


def test_an_unexpected_exception_fails_one_file_only(tmp_path, photo_model, monkeypatch):
    import srgan.batch

    src = make_photos(tmp_path / "in", 3)
    real = srgan.batch.read_photo

    def read(path, max_pixels):
        if Path(path).name == "img01.png":
            raise IndexError("list index out of range")
        return real(path, max_pixels)

    monkeypatch.setattr(srgan.batch, "read_photo", read)
    result = upscale(src, tmp_path / "out", "--model", photo_model)
    assert result.exit_code == 1 and isinstance(result.exception, SystemExit), result.output
    assert error_lines(result, src / "img01.png") == [f"Error: {src / 'img01.png'}: IndexError: list index out of range"]
    assert "2 done, 0 skipped, 1 failed" in result.output
    assert sorted(p.name for p in (tmp_path / "out").iterdir()) == ["img00.png", "img02.png"]


def test_hdu_out_of_range_is_one_line_and_negative_is_refused(tmp_path, fits_model):
    src = galaxy(tmp_path / "g.fits")
    result = upscale(src, tmp_path / "out.fits", "--model", fits_model, "--hdu", "9")
    assert result.exit_code == 1 and isinstance(result.exception, SystemExit), result.output
    assert error_lines(result, src)[0].startswith(f"Error: {src}: no HDU 9 in the file")
    negative = upscale(src, tmp_path / "out.fits", "--model", fits_model, "--hdu", "-2")
    assert negative.exit_code == 2 and "HDU indices count from 0" in negative.output
    assert not (tmp_path / "out.fits").exists()


# --- full disk, concurrent runs -------------------------------------------------------------


@pytest.mark.parametrize("how", ["fallocate", "free space"])
def test_full_disk_in_a_streamed_fits_write_fails_that_file_and_removes_its_temp(tmp_path, fits_model,
                                                                                 monkeypatch, how):
    import shutil

    src = tmp_path / "in"
    galaxy(src / "a.fits"), galaxy(src / "b.fits", seed=1)
    calls = []
    real_usage = shutil.disk_usage

    def fallocate(fd, offset, length):
        calls.append(length)
        if len(calls) == 1:  # the first file meets a full disk
            raise OSError(errno.ENOSPC if how == "fallocate" else errno.EOPNOTSUPP, "patched")

    def usage(folder):
        u = real_usage(folder)
        return u._replace(free=0) if len(calls) == 1 else u

    monkeypatch.setattr(os, "posix_fallocate", fallocate)
    if how == "free space":
        monkeypatch.setattr(shutil, "disk_usage", usage)
    result = upscale(src, tmp_path / "out", "--model", fits_model)
    assert result.exit_code == 1, result.output
    [line] = error_lines(result, src / "a.fits")
    assert "no space for the output" in line and "free some space or choose another OUTPUT" in line
    assert "1 done, 0 skipped, 1 failed" in result.output
    assert not (tmp_path / "out" / "a.fits").exists() and temps(tmp_path / "out") == []
    with fits.open(tmp_path / "out" / "b.fits") as hdul:
        assert hdul[0].data.shape == (32, 32) and np.isfinite(hdul[0].data).all()


def test_temps_of_live_processes_are_kept_and_of_dead_ones_removed(tmp_path, photo_model):
    src = make_photos(tmp_path / "in", 1)
    out = tmp_path / "out"
    out.mkdir()
    live = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"])
    dead = subprocess.Popen([sys.executable, "-c", "pass"])
    dead.wait()
    try:
        theirs = out / f".img00.png.pid{live.pid}.abc123.tmp"  # another run's write in flight
        stale = out / f".img00.png.pid{dead.pid}.def456.tmp"  # what a killed run left
        theirs.write_bytes(b"in flight"), stale.write_bytes(b"stale")
        result = upscale(src, out, "--model", photo_model)
        assert result.exit_code == 0, result.output
        assert theirs.exists() and not stale.exists()
    finally:
        live.kill()
        live.wait()


@pytest.mark.slow
def test_two_concurrent_runs_into_one_folder_both_complete(tmp_path, photo_model):
    """A race, so a probabilistic check (the deterministic one is the test above): with the old
    cleanup about half of such runs lost a file to the other run."""
    src = make_photos(tmp_path / "in", 24, size=96)
    cmd = [sys.executable, "-m", "srgan.cli", "upscale", str(src), str(tmp_path / "out"), "--model",
           str(photo_model), "--overwrite", "--no-progress"]
    env = dict(os.environ, OMP_NUM_THREADS="1")
    procs = [subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, env=env)
             for _ in range(2)]
    outputs = [p.communicate(timeout=300)[0] for p in procs]
    assert [p.returncode for p in procs] == [0, 0], outputs
    assert all("24 done, 0 skipped, 0 failed" in o for o in outputs)
    assert len(list((tmp_path / "out").glob("*.png"))) == 24 and temps(tmp_path / "out") == []


# --- options that would do the wrong thing --------------------------------------------------


def test_overlap_is_clamped_to_the_receptive_radius_and_tiny_tiles_warn():
    g = Generator(GeneratorConfig(scale=2, channels=4, blocks=1))
    with pytest.warns(UserWarning, match="beyond the model's receptive radius"):
        up = Upscaler(g, device="cpu", overlap=10000)
    assert up.overlap == receptive_radius(g.config)
    with pytest.warns(UserWarning, match="--tile 7 with .* computes .*x the pixels it keeps"):
        Upscaler(g, device="cpu", tile=7)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        Upscaler(g, device="cpu", tile=0)  # the whole image: no warning


def test_a_pass_that_does_not_fit_memory_is_refused_naming_tile(monkeypatch):
    from srgan import guard

    monkeypatch.setattr(guard, "available_memory", lambda: 1 << 20)  # 1 MiB free
    up = Upscaler(Generator(GeneratorConfig(scale=2, channels=4, blocks=1)), device="cpu", tile=0)
    with pytest.raises(ConfigError, match=r"needs about .* GiB of activations.*use --tile \d+"):
        up.upscale(np.zeros((256, 256, 3), np.uint8))


# --- silent wrong results -------------------------------------------------------------------


def test_nan_in_a_float_photo_is_filled_restored_and_warned(tmp_path, photo_model):
    a = np.random.default_rng(0).random((12, 10), dtype=np.float32)
    a[3, 4] = np.nan
    Image.fromarray(a, mode="F").save(tmp_path / "f.tif")
    result = upscale(tmp_path / "f.tif", tmp_path / "o.tif", "--model", photo_model)
    assert result.exit_code == 0, result.output
    assert f"Warning: {tmp_path / 'f.tif'}: 1 NaN/infinite pixel(s) were filled" in result.output
    out = np.asarray(Image.open(tmp_path / "o.tif"))
    assert out.shape == (24, 20)
    expected = np.zeros((24, 20), bool)
    expected[6:8, 8:10] = True
    assert np.array_equal(~np.isfinite(out), expected)


def test_non_finite_weights_are_refused_before_any_work(tmp_path):
    g = Generator(GeneratorConfig(scale=2, channels=4, blocks=1)).eval()
    with torch.no_grad():
        next(g.parameters())[0].fill_(float("nan"))
    save_model(tmp_path / "nan.safetensors", g)
    make_photos(tmp_path / "in", 1)
    result = upscale(tmp_path / "in", tmp_path / "out", "--model", tmp_path / "nan.safetensors")
    assert result.exit_code == 1
    assert result.output.strip().splitlines()[-1].startswith(f"Error: {tmp_path / 'nan.safetensors'}: 1 weight tensor(s) hold NaN")
    assert not (tmp_path / "out").exists() or list((tmp_path / "out").iterdir()) == []


def test_an_all_nan_fits_output_is_an_error_not_done(tmp_path, fits_model, monkeypatch):
    def nan_model(self, planes, *, sky=None, noise=None, out=None, progress=False):
        out[...] = np.nan
        return out

    monkeypatch.setattr(Upscaler, "upscale_planes", nan_model)
    src = galaxy(tmp_path / "g.fits")
    result = upscale(src, tmp_path / "out.fits", "--model", fits_model)
    assert result.exit_code == 1, result.output
    assert "the model produced" in error_lines(result, src)[0]
    assert "0 done, 0 skipped, 1 failed" in result.output
    assert not (tmp_path / "out.fits").exists() and temps(tmp_path) == []


def test_a_non_finite_photo_output_is_an_error(tmp_path, photo_model, monkeypatch):
    monkeypatch.setattr(Upscaler, "upscale", lambda self, a, progress=False: np.full((24, 20), np.nan, np.float32))
    Image.fromarray(np.ones((12, 10), np.float32), mode="F").save(tmp_path / "f.tif")
    result = upscale(tmp_path / "f.tif", tmp_path / "o.tif", "--model", photo_model)
    assert result.exit_code == 1 and "NaN/infinite pixel(s)" in error_lines(result, tmp_path / "f.tif")[0]
    assert not (tmp_path / "o.tif").exists()


# --- messages -------------------------------------------------------------------------------


def test_malformed_config_json_is_one_line(tmp_path, photo_model):
    bad = tmp_path / "bad.safetensors"
    save_file({"w": torch.zeros(1)}, bad, metadata={"format": MODEL_FORMAT, "config": "{not json"})
    make_photos(tmp_path / "in", 1)
    result = upscale(tmp_path / "in", tmp_path / "out", "--model", bad)
    assert result.exit_code == 1 and isinstance(result.exception, SystemExit)
    assert result.output.splitlines()[-1].startswith(f"Error: {bad}: metadata field 'config' is not valid JSON")


def test_a_pickle_named_safetensors_says_how_to_convert(tmp_path):
    fake = tmp_path / "model.safetensors"
    torch.save({"w": torch.zeros(1)}, fake)
    make_photos(tmp_path / "in", 1)
    result = upscale(tmp_path / "in", tmp_path / "out", "--model", fake)
    assert result.exit_code == 1 and "header too large" not in result.output
    assert "is a PyTorch pickle file" in result.output and "convert_to_safetensors" in result.output


def test_decompression_bomb_message_quotes_max_pixels(tmp_path, photo_model, monkeypatch):
    monkeypatch.setattr(Image, "MAX_IMAGE_PIXELS", 89_478_485)  # Pillow's default (--max-pixels 0 elsewhere lifts it)
    def chunk(kind, data):
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))

    header = struct.pack(">IIBBBBB", 30000, 30000, 8, 0, 0, 0, 0)  # 900 Mpx claimed, no pixels
    (tmp_path / "bomb.png").write_bytes(b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", header) + chunk(b"IEND", b""))
    result = upscale(tmp_path / "bomb.png", tmp_path / "o.png", "--model", photo_model)
    assert result.exit_code == 1
    [line] = error_lines(result, tmp_path / "bomb.png")
    assert "900.0 Mpx above the --max-pixels limit of 50 Mpx" in line and "178956970" not in line


def test_a_fits_model_on_a_photo_says_so(tmp_path, fits_model):
    make_photos(tmp_path / "in", 1)
    result = upscale(tmp_path / "in", tmp_path / "out", "--model", fits_model)
    assert result.exit_code == 1
    assert "is a 1-channel FITS (astronomy) model" in result.output.splitlines()[-1]


def test_animated_gif_warns_in_one_line_naming_the_file(tmp_path, photo_model):
    frames = [Image.fromarray(np.full((8, 8, 3), 60 * i, np.uint8)) for i in range(3)]
    frames[0].save(tmp_path / "a.gif", save_all=True, append_images=frames[1:])
    result = upscale(tmp_path / "a.gif", tmp_path / "o.png", "--model", photo_model)
    assert result.exit_code == 0, result.output
    warns = [line for line in result.output.splitlines() if "Warning" in line]
    assert warns == [f"Warning: {tmp_path / 'a.gif'}: animated image with 3 frames: only the first frame is "
                     "upscaled (split the frames into files to upscale them all)"]


# --- one overwrite policy -------------------------------------------------------------------


def test_existing_outputs_are_never_replaced_without_overwrite(tmp_path, photo_model):
    src = make_photos(tmp_path / "in", 1)
    assert upscale(src, tmp_path / "out", "--model", photo_model).exit_code == 0
    before = (tmp_path / "out" / "img00.png").stat().st_mtime_ns
    again = upscale(src, tmp_path / "out", "--model", photo_model)
    assert again.exit_code == 1
    assert again.output.splitlines()[-1] == (f"Error: output {tmp_path / 'out' / 'img00.png'} already exist(s): "
                                             "pass --skip-existing to keep existing outputs or --overwrite to replace them")
    assert (tmp_path / "out" / "img00.png").stat().st_mtime_ns == before
    assert upscale(src, tmp_path / "out", "--model", photo_model, "--skip-existing").exit_code == 0
    assert upscale(src, tmp_path / "out", "--model", photo_model, "--overwrite").exit_code == 0
    assert (tmp_path / "out" / "img00.png").stat().st_mtime_ns != before


def test_eval_json_is_not_replaced_without_overwrite(tmp_path):
    (tmp_path / "scores.json").write_text("{}")
    make_photos(tmp_path / "hr", 1)
    result = CliRunner().invoke(main, ["eval", "--model", "photo-x4", "--hr", str(tmp_path / "hr"),
                                       "--json", str(tmp_path / "scores.json")])
    assert result.exit_code == 1 and "pass --overwrite to replace it" in result.output
    assert (tmp_path / "scores.json").read_text() == "{}"


# --- training -------------------------------------------------------------------------------


def test_unreadable_held_out_files_skip_validation_not_the_run(tmp_path):
    from srgan.train import TrainConfig, _split_validation, fit

    hr = make_photos(tmp_path / "hr", 12, size=32)
    _, held_out = _split_validation(sorted(hr.glob("*.png")), seed=3)
    for path in held_out:
        path.write_bytes(b"not an image")
    run = fit(TrainConfig(hr=str(hr), out=str(tmp_path / "run"), scale=2, blocks=1, channels=4, batch_size=2,
                          patch_size=16, pretrain_steps=2, gan_steps=0, val_every=1000, checkpoint_every=1000,
                          log_every=1, progress=False, content_loss="mse", seed=3))
    assert (run / "model.safetensors").exists()


def test_train_draws_no_progress_bar_into_a_log(monkeypatch, tmp_path):
    import srgan.cli.train

    seen = {}
    monkeypatch.setattr(srgan.cli.train, "fit", lambda config: seen.setdefault("config", config) and tmp_path)
    make_photos(tmp_path / "hr", 2)
    CliRunner().invoke(main, ["train", "--hr", str(tmp_path / "hr"), "--out", str(tmp_path / "run")])
    assert seen["config"].progress is False  # CliRunner's stderr is not a terminal
