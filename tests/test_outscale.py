"""--outscale F: exact output sizes, model passes, the antialiased resize, FITS refusal."""

import numpy as np
import pytest
import torch
from click.testing import CliRunner
from PIL import Image

from srgan.cli import main
from srgan.errors import ConfigError
from srgan.models import Generator, GeneratorConfig
from srgan.outscale import Outscaler, check_fits_outscale, check_outscale, model_passes, output_size, resize
from srgan.upscale import Upscaler


@pytest.fixture
def up(one_thread):
    return Upscaler(Generator(GeneratorConfig(scale=2, channels=8, blocks=1)), device="cpu", tile=0)


@pytest.mark.parametrize("f", [1, 1.5, 2, 3.5, 4, 7.3, 16])
def test_sizes_exact_for_every_kind(up, f):
    rng = np.random.default_rng(0)
    a8 = rng.integers(0, 256, (9, 13, 3), dtype=np.uint8)
    want = (round(9 * f), round(13 * f))
    o = Outscaler(up, f)
    assert o.upscale(a8).shape == (*want, 3) and o.upscale(a8).dtype == np.uint8
    a16 = rng.integers(0, 65536, (9, 13, 4), dtype=np.uint16)
    assert o.upscale(a16).shape == (*want, 4) and o.upscale(a16).dtype == np.uint16
    assert o.upscale(a8[..., 0]).shape == want  # gray
    t = torch.from_numpy(a8).permute(2, 0, 1).contiguous()
    assert tuple(o.upscale(t).shape) == (3, *want) and o.upscale(t).dtype == torch.uint8
    assert o.upscale(Image.fromarray(a8)).size == (want[1], want[0])


def test_output_size_rule():
    assert output_size(10, 7, 3.5) == (35, 24)  # round(24.5) -> 24 (round half to even)
    assert output_size(1, 1, 1.2) == (1, 1)


def test_model_scale_is_the_models_output_unchanged(up):
    a = np.random.default_rng(1).integers(0, 256, (8, 10, 3), dtype=np.uint8)
    np.testing.assert_array_equal(Outscaler(up, 2).upscale(a), up.upscale(a))


def test_below_model_scale_is_the_resized_model_output(up):
    a = np.random.default_rng(1).integers(0, 256, (8, 10, 3), dtype=np.uint8)
    np.testing.assert_array_equal(Outscaler(up, 1.5).upscale(a), resize(up.upscale(a), (12, 15)))


def test_second_pass_runs_the_model_on_its_output(up):
    assert model_passes(4, 8, True) == 2 and model_passes(4, 8, False) == 1 and model_passes(2, 16, True) == 4
    a = np.random.default_rng(2).integers(0, 256, (6, 7, 3), dtype=np.uint8)
    twice = Outscaler(up, 3, second_pass=True).upscale(a)
    np.testing.assert_array_equal(twice, resize(up.upscale(up.upscale(a)), (18, 21)))
    once = Outscaler(up, 3, second_pass=False).upscale(a)
    np.testing.assert_array_equal(once, resize(up.upscale(a), (18, 21)))


def test_resize_is_antialiased():
    """A 1-px checkerboard shrunk x3 is near mid-gray everywhere (a plain resize samples it: 0s and 255s)."""
    board = ((np.indices((33, 33)).sum(0) % 2) * 255).astype(np.uint8)
    third = resize(board, (11, 11))
    assert third[2:-2, 2:-2].min() >= 100 and third[2:-2, 2:-2].max() <= 155


def test_resize_keeps_range_and_float():
    a = np.random.default_rng(3).random((5, 5, 3)).astype(np.float32)
    out = resize(a, (17, 17))
    assert out.dtype == np.float32 and out.min() >= 0 and out.max() <= 1


@pytest.mark.parametrize("bad", [0.5, 16.5, float("nan")])
def test_outscale_range(bad):
    with pytest.raises(ConfigError, match="--outscale must be between 1 and 16"):
        check_outscale(bad)


def test_fits_refuses_fractional_and_other_integers():
    check_fits_outscale(None, 4)
    check_fits_outscale(4, 4)
    with pytest.raises(ConfigError, match="fractional: FITS outputs keep integer scales"):
        check_fits_outscale(2.5, 4)
    with pytest.raises(ConfigError, match="differs from the FITS model's x4"):
        check_fits_outscale(8, 4)


def test_cli_outscale_photo_and_fits(tmp_path, one_thread):
    src = tmp_path / "a.png"
    Image.fromarray(np.random.default_rng(0).integers(0, 256, (6, 10, 3), dtype=np.uint8)).save(src)
    r = CliRunner().invoke(main, ["upscale", str(src), str(tmp_path / "o.png"), "--outscale", "2.5"])
    assert r.exit_code == 0, r.output
    assert Image.open(tmp_path / "o.png").size == (25, 15)
    from astropy.io import fits

    fsrc = tmp_path / "g.fits"
    fits.PrimaryHDU(np.random.default_rng(0).random((8, 8)).astype(np.float32)).writeto(fsrc)
    r = CliRunner().invoke(main, ["upscale", str(fsrc), str(tmp_path / "g4.fits"), "--outscale", "3.5"])
    assert r.exit_code == 1
    assert "--outscale 3.5 is fractional: FITS outputs keep integer scales" in r.output
    assert not (tmp_path / "g4.fits").exists()

