"""srgan.train: the fit() loop on tiny models and synthetic images (CPU, seconds each)."""

import json
import math
import os
import signal
from dataclasses import replace

import numpy as np
import pytest
import torch
from astropy.io import fits
from helpers import draw_shapes, make_photos
from PIL import Image

import srgan.train as train
from srgan.checkpoint import load_model, load_state, read_model_info, save_model
from srgan.data import PatchDataset, StepBatches, find_images, step_seed
from srgan.errors import ConfigError, TrainingDivergedError
from srgan.models import Generator, GeneratorConfig
from srgan.train import TrainConfig, fit, get_lr, init_weights, resolve_config, training_pair


pytestmark = pytest.mark.usefixtures("one_thread")


@pytest.fixture(scope="module")
def photos(tmp_path_factory):
    root = tmp_path_factory.mktemp("photos")
    return make_photos(root / "train", 6), make_photos(root / "val", 2, seed=1)


def tiny(tmp_path, photos, **kw) -> TrainConfig:
    """A tiny, fast configuration: scale 2, 8 channels, 1 block, 16 px patches."""
    hr, val = photos
    base = dict(hr=str(hr), out=str(tmp_path / "run"), val=str(val), scale=2, blocks=1, channels=8,
                batch_size=4, patch_size=16, pretrain_steps=4, gan_steps=0, val_every=1000,
                checkpoint_every=1000, log_every=1, progress=False, content_loss="mse", seed=3)
    base.update(kw)
    return TrainConfig(**base)


def metrics(run):
    return [json.loads(line) for line in open(run / "metrics.jsonl")]


def weights(run):
    return load_state(run / "checkpoint.safetensors")


def assert_same_state(a, b):
    for key in ("generator", "discriminator"):
        if a[key] is None:
            assert b[key] is None
            continue
        assert a[key].keys() == b[key].keys()
        for k in a[key]:
            assert torch.equal(a[key][k], b[key][k]), f"{key}.{k} differs"
    for key in ("opt_g", "opt_d"):
        if a[key] is not None:
            for i, s in a[key]["state"].items():
                for name, t in s.items():
                    assert torch.equal(t, b[key]["state"][i][name]), f"{key} state {i}.{name} differs"
    assert a["step"] == b["step"]


def test_run_dir_contents(tmp_path, photos):
    run = fit(tiny(tmp_path, photos, pretrain_steps=3, val_every=2))
    assert {p.name for p in run.iterdir()} >= {"model.safetensors", "checkpoint.safetensors", "metrics.jsonl", "samples"}
    model = load_model(run / "model.safetensors")
    assert model.config == GeneratorConfig(scale=2, channels=8, blocks=1)
    info = model.info
    assert info.preset == "bicubic" and info.normalization.kind == "unit"
    assert info.training["images"] == 6 and info.training["steps"] == 3 and info.training["patch_size"] == 16
    assert info.training["data"].endswith("train") and info.training["wall_time_s"] > 0
    lines = metrics(run)
    losses = [r for r in lines if "pixel" in r]
    assert [r["step"] for r in losses] == [1, 2, 3] and all(math.isfinite(r["pixel"]) for r in losses)
    vals = [r for r in lines if "val_psnr" in r]
    assert [r["step"] for r in vals] == [2, 3] and all(r["val_psnr_bicubic"] > 20 for r in vals)
    assert sorted(p.name for p in (run / "samples").iterdir()) == ["step_0000002.png", "step_0000003.png"]
    sample = np.asarray(Image.open(run / "samples" / "step_0000002.png"))
    assert sample.shape == (48, 3 * 48 + 8, 3)  # LR-bicubic | SR | HR with 4 px gaps
    state = weights(run)
    assert state["step"] == 3 and state["discriminator"] is None and state["config"]["blocks"] == 1


def test_schedule_restarts_per_phase():
    c = TrainConfig(pretrain_steps=10, gan_steps=4, lr=1e-3, schedule="cosine")
    assert get_lr(0, c) == 1e-3 and get_lr(10, c) == 1e-3
    assert get_lr(9, c) < 1e-4 and get_lr(5, c) == pytest.approx(0.505e-3)
    s = replace(c, schedule="step")
    assert get_lr(4, s) == 1e-3 and get_lr(5, s) == pytest.approx(1e-4) and get_lr(12, s) == pytest.approx(1e-4)
    assert get_lr(7, replace(c, schedule="constant")) == 1e-3


@pytest.mark.parametrize("pretrain, gan, stop_at", [(5, 0, 2), (2, 3, 3)])
def test_ctrl_c_then_resume_is_bit_identical(tmp_path, photos, monkeypatch, pretrain, gan, stop_at):
    config = tiny(tmp_path, photos, pretrain_steps=pretrain, gan_steps=gan, checkpoint_every=2)
    straight = weights(fit(replace(config, out=str(tmp_path / "straight"))))

    calls = {"n": 0}
    real_degrade = train.degrade

    def degrade_then_ctrl_c(hr, *args, **kw):
        calls["n"] += hr.shape[0] == config.batch_size  # training batches, not validation images
        if calls["n"] == stop_at:  # Ctrl-C during step `stop_at`: saved when that step ends
            os.kill(os.getpid(), signal.SIGINT)
        return real_degrade(hr, *args, **kw)

    monkeypatch.setattr(train, "degrade", degrade_then_ctrl_c)
    with pytest.raises(KeyboardInterrupt):
        fit(config)
    monkeypatch.setattr(train, "degrade", real_degrade)
    run = tmp_path / "run"
    assert weights(run)["step"] == stop_at
    assert max(r["step"] for r in metrics(run)) == stop_at
    fit(replace(config, resume=True))
    assert_same_state(weights(run), straight)
    logged = [r["step"] for r in metrics(run) if "phase" in r]
    assert logged == list(range(1, pretrain + gan + 1))  # no duplicated lines after the resume


def test_resume_can_extend_but_not_change_architecture(tmp_path, photos):
    config = tiny(tmp_path, photos, pretrain_steps=2)
    fit(config)
    with pytest.raises(ConfigError, match="already holds a training run"):
        fit(config)
    with pytest.raises(ConfigError, match="batch_size=8"):
        fit(replace(config, resume=True, batch_size=8))
    fit(replace(config, resume=True, pretrain_steps=3))
    assert weights(tmp_path / "run")["step"] == 3
    with pytest.raises(ConfigError, match="no checkpoint"):
        fit(replace(config, out=str(tmp_path / "none"), resume=True))


def test_init_starts_from_the_given_weights(tmp_path, photos):
    arch = GeneratorConfig(scale=2, channels=8, blocks=1)
    torch.manual_seed(42)
    init = Generator(arch)
    save_model(tmp_path / "init.safetensors", init)
    config = tiny(tmp_path, photos, init=str(tmp_path / "init.safetensors"), scale=None, blocks=None,
                  channels=None, pretrain_steps=1, channels_last=False, device="cpu")  # fp32: no TF32/bf16
    run = fit(config)
    # the first step's loss is the init model's loss on the first batch
    resolved, _, norm = resolve_config(config)
    dataset = PatchDataset(find_images(config.hr), config.patch_size)
    hr = StepBatches(dataset, config.batch_size, config.seed)[0]
    g = torch.Generator().manual_seed(step_seed(config.seed, 0, 0, 2))
    x, y = training_pair(hr, resolved, norm, g)
    with torch.no_grad():
        expected = torch.nn.functional.mse_loss(init.train()(x), y).item()
    assert metrics(run)[0]["pixel"] == pytest.approx(expected, rel=1e-5)
    assert load_model(run / "model.safetensors").config == arch
    with pytest.raises(ConfigError, match="--blocks 2"):
        fit(replace(config, blocks=2, out=str(tmp_path / "x")))
    with pytest.raises(ConfigError, match="--preset"):
        fit(replace(config, preset="astro", out=str(tmp_path / "y")))


def test_init_from_another_scale_keeps_trunk_and_tail(tmp_path, photos):
    """--init photo-x4 --scale 2 (EDSR's cross-scale start): everything both models have is copied."""
    torch.manual_seed(1)
    x4 = Generator(GeneratorConfig(scale=4, channels=8, blocks=2, batch_norm=False))
    save_model(tmp_path / "x4.safetensors", x4)
    x2 = Generator(GeneratorConfig(scale=2, channels=8, blocks=2, batch_norm=False))
    assert init_weights(x2, x4) == []  # x2's single upsampling stage is x4's first
    for name, tensor in x2.state_dict().items():
        assert torch.equal(tensor, x4.state_dict()[name]), name
    back = Generator(GeneratorConfig(scale=4, channels=8, blocks=2, batch_norm=False))
    assert init_weights(back, x2) == ["upsample.1.act.weight", "upsample.1.conv.bias", "upsample.1.conv.weight"]
    # through training: the run is x2, its first step starts from x4's trunk
    config = tiny(tmp_path, photos, init=str(tmp_path / "x4.safetensors"), scale=2, blocks=None, channels=None,
                  batch_norm=None, pretrain_steps=1, device="cpu")
    run = fit(config)
    model = load_model(run / "model.safetensors")
    assert model.config.scale == 2 and model.config.blocks == 2


@pytest.mark.parametrize("gan_loss, content", [("bce", "mse"), ("relativistic", "mse"), ("wgan-gp", "mse"),
                                               ("bce", "vgg")])
def test_gan_phase_runs(tmp_path, photos, gan_loss, content):
    run = fit(tiny(tmp_path, photos, pretrain_steps=1, gan_steps=2, gan_loss=gan_loss, content_loss=content,
                   vgg_weights="random", vgg_layer="relu2_2"))
    gan_lines = [r for r in metrics(run) if r.get("phase") == "gan"]
    assert [r["step"] for r in gan_lines] == [2, 3]
    for r in gan_lines:
        for term in ("content", "adversarial", "tv", "generator", "d_loss", "d_real", "d_fake"):
            assert math.isfinite(r[term]), term
        assert ("gp" in r) == (gan_loss == "wgan-gp")
    state = weights(run)
    assert state["discriminator"] is not None and state["phase"] == "gan"
    assert (run / "srresnet.safetensors").is_file()  # the phase-1 generator
    assert read_model_info(run / "srresnet.safetensors").training["steps"] == 1


def test_nan_guard_stops_without_saving(tmp_path, photos, monkeypatch):
    calls = {"n": 0}
    real = train.pixel_loss

    def poisoned(sr, hr, kind="mse"):
        calls["n"] += 1
        loss = real(sr, hr, kind)
        return loss * float("nan") if calls["n"] == 3 else loss

    monkeypatch.setattr(train, "pixel_loss", poisoned)
    config = tiny(tmp_path, photos, pretrain_steps=6, checkpoint_every=2, log_every=5)
    with pytest.raises(TrainingDivergedError, match="step 3"):
        fit(config)
    run = tmp_path / "run"
    assert weights(run)["step"] == 2
    model = load_model(run / "model.safetensors")
    assert model.info.training["steps"] == 2
    assert all(torch.isfinite(p).all() for p in model.parameters())


def fits_galaxies(folder, n=3, size=48, seed=0):
    folder.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[0:size, 0:size]
    for i in range(n):
        cx, cy = rng.uniform(10, size - 10, 2)
        galaxy = 300 * np.exp(-(((xx - cx) / 4) ** 2 + ((yy - cy) / 2.5) ** 2))
        data = (50 + galaxy + 3 * rng.standard_normal((size, size))).astype(np.float32)
        data[0, i] = np.nan
        fits.PrimaryHDU(data).writeto(folder / f"g{i}.fits")
    return folder


def test_astro_preset_trains_on_fits(tmp_path):
    hr = fits_galaxies(tmp_path / "fits")
    run = fit(TrainConfig(hr=str(hr), out=str(tmp_path / "run"), preset="astro", scale=2, blocks=1, channels=8,
                          batch_size=2, patch_size=16, pretrain_steps=2, log_every=1, progress=False))
    model = load_model(run / "model.safetensors")
    assert model.config.in_channels == 1 and model.info.preset == "astro"
    assert model.info.normalization.kind == "asinh"
    vals = [r for r in metrics(run) if "val_psnr" in r]
    assert vals and math.isfinite(vals[-1]["val_psnr"]) and math.isfinite(vals[-1]["val_psnr_bicubic"])
    assert model.info.training["validation_images"] == 1  # held out: no --val given
    assert np.asarray(Image.open(run / "samples" / "step_0000002.png")).ndim == 2


def test_bad_config_errors(tmp_path, photos):
    with pytest.raises(ConfigError, match="multiple of --scale"):
        fit(tiny(tmp_path, photos, patch_size=15))
    with pytest.raises(ConfigError, match="--gan-loss"):
        fit(tiny(tmp_path, photos, gan_loss="hinge"))
    with pytest.raises(ConfigError, match="--preset"):
        fit(tiny(tmp_path, photos, preset="jpeg"))
    assert not (tmp_path / "run").exists()


def binary_shapes(rng, size=64):
    """Black and white shapes and lines: bicubic blurs every edge, a small CNN learns to sharpen them."""
    im = draw_shapes(Image.new("L", (size, size), 0), rng, (12, 20), 4, lambda r: 255 if r.random() < 0.6 else 0)
    return im.convert("RGB")


def test_smoke_training_beats_bicubic(tmp_path):
    """300 steps of a tiny x2 model (about 30 s on 2 CPU cores) end above bicubic on held-out images."""
    rng = np.random.default_rng(0)
    for split, n in (("train", 12), ("val", 3)):
        (tmp_path / split).mkdir()
        for i in range(n):
            binary_shapes(rng).save(tmp_path / split / f"{i}.png")
    run = fit(TrainConfig(hr=str(tmp_path / "train"), val=str(tmp_path / "val"), out=str(tmp_path / "run"),
                          scale=2, blocks=1, channels=16, batch_size=8, patch_size=32, pretrain_steps=300,
                          lr=2e-3, grad_clip=0, val_every=60, checkpoint_every=1000, log_every=50,
                          progress=False, channels_last=False))
    vals = [r for r in metrics(run) if "val_psnr" in r]
    assert [r["step"] for r in vals] == [60, 120, 180, 240, 300]
    bicubic = vals[0]["val_psnr_bicubic"]
    assert 18 < bicubic < 21  # measured 19.73 dB
    assert vals[-1]["val_psnr"] > vals[0]["val_psnr"] + 1  # it learns (measured 18.65 -> 20.65 dB)
    assert vals[-1]["val_psnr"] > bicubic + 0.4  # and ends above bicubic (measured +0.91 dB)


def test_dataloader_workers_do_not_change_the_result(tmp_path, photos):
    a = weights(fit(tiny(tmp_path, photos, pretrain_steps=2, out=str(tmp_path / "w0"))))
    b = weights(fit(tiny(tmp_path, photos, pretrain_steps=2, out=str(tmp_path / "w1"), workers=1)))
    assert_same_state(a, b)


def test_library_resume_takes_stored_options(tmp_path, photos):
    config = tiny(tmp_path, photos, pretrain_steps=2)
    fit(config)
    fit(TrainConfig(out=config.out, resume=True, pretrain_steps=3, progress=False))  # everything else stored
    state = weights(tmp_path / "run")
    assert state["step"] == 3 and state["config"]["channels"] == 8 and state["config"]["hr"] == config.hr
