"""--alpha bicubic|model: the alpha channel upscaled bicubically (default) or by the model as gray."""

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from click.testing import CliRunner
from PIL import Image

from srgan.cli import main
from srgan.errors import InputError
from srgan.models import Generator, GeneratorConfig
from srgan.photo import upscale_image
from srgan.upscale import Upscaler


def soft_rgba(h=12, w=16, seed=0):
    """Random colour with a soft-edged alpha: a horizontal ramp 0 -> 255."""
    rgb = np.random.default_rng(seed).integers(0, 256, (h, w, 3), dtype=np.uint8)
    ramp = np.linspace(0, 255, w).round().astype(np.uint8)
    return np.dstack([rgb, np.broadcast_to(ramp, (h, w))])


@pytest.fixture
def up(one_thread):
    return Upscaler(Generator(GeneratorConfig(scale=2, channels=8, blocks=1)), device="cpu", tile=0)


def test_model_alpha_is_the_model_on_the_alpha_plane_as_gray(up):
    a = soft_rgba()
    out = upscale_image(up, a, alpha="model")
    np.testing.assert_array_equal(out[..., 3], up.upscale(np.ascontiguousarray(a[..., 3])))  # gray path
    np.testing.assert_array_equal(out[..., :3], up.upscale(a)[..., :3])  # colour untouched by --alpha


def test_bicubic_alpha_is_the_default_and_bicubic(up):
    a = soft_rgba()
    out = up.upscale(a)
    np.testing.assert_array_equal(out, upscale_image(up, a, alpha="bicubic"))
    x = torch.from_numpy(a[..., 3].astype(np.float32) / 255)[None, None]
    ref = (F.interpolate(x, scale_factor=2, mode="bicubic", align_corners=False).clamp(0, 1) * 255).round()
    inner = np.s_[4:-4, 4:-4]  # the engine pads tiles by reflection, interpolate replicates the edge
    np.testing.assert_array_equal(out[..., 3][inner], ref[0, 0].numpy().astype(np.uint8)[inner])
    assert not np.array_equal(out[..., 3], upscale_image(up, a, alpha="model")[..., 3])


def test_photo_x4_keeps_a_soft_alpha_soft(one_thread):
    """A ramp through photo-x4: within 2 levels of the HR ramp on average, not a hard edge."""
    hr_ramp = np.linspace(0, 255, 128)
    hr = np.broadcast_to(hr_ramp, (32, 128))
    lr = np.asarray(Image.fromarray(hr.round().astype(np.uint8)).resize((32, 8), Image.BICUBIC))
    rgba = np.dstack([np.full((8, 32, 3), 128, np.uint8), lr])
    up = Upscaler.from_pretrained("photo-x4", device="cpu", tile=0)
    alpha = upscale_image(up, rgba, alpha="model")[..., 3].astype(float)
    err = np.abs(alpha - hr)[4:-4, 8:-8]
    assert err.mean() < 2.0
    assert len(np.unique(alpha[16, 8:-8])) > 64  # still a gradient


def test_unknown_alpha_mode(up):
    with pytest.raises(InputError, match="--alpha must be one of bicubic, model"):
        upscale_image(up, soft_rgba(), alpha="nearest")


def test_cli_alpha_model(tmp_path, one_thread):
    src = tmp_path / "a.png"
    Image.fromarray(soft_rgba(6, 8)).save(src)
    for mode in ("bicubic", "model"):
        r = CliRunner().invoke(main, ["upscale", str(src), str(tmp_path / f"{mode}.png"), "--alpha", mode])
        assert r.exit_code == 0, r.output
    b, m = (np.asarray(Image.open(tmp_path / f"{k}.png")) for k in ("bicubic", "model"))
    assert b.shape == m.shape == (24, 32, 4)
    np.testing.assert_array_equal(b[..., :3], m[..., :3])
    assert not np.array_equal(b[..., 3], m[..., 3])
