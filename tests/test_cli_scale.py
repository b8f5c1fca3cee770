"""`srgan upscale --scale 2|4`: the embedded model of that scale for the input kind, or one clear error."""

import numpy as np
import pytest
from click.testing import CliRunner
from PIL import Image

from srgan import checkpoint, pretrained
from srgan.checkpoint import save_model
from srgan.cli import main
from srgan.errors import ConfigError
from srgan.models import Generator, GeneratorConfig
from srgan.pretrained import default_model


@pytest.fixture
def weights(tmp_path, monkeypatch):
    """A weights folder with a tiny x2 photo model 'tiny-x2', the default for photos at x2."""
    folder = tmp_path / "weights"
    folder.mkdir()
    save_model(folder / "tiny-x2.safetensors", Generator(GeneratorConfig(scale=2, channels=4, blocks=1)).eval())
    monkeypatch.setattr(checkpoint, "WEIGHTS_DIR", folder)
    monkeypatch.setattr(pretrained, "DEFAULTS", {("photo", 2): "tiny-x2", ("fits", 4): "galaxy-x4"})
    return folder


@pytest.fixture
def photo(tmp_path):
    path = tmp_path / "a.png"
    Image.fromarray(np.random.default_rng(0).integers(0, 256, (5, 6, 3), dtype=np.uint8)).save(path)
    return path


def upscale(*args):
    return CliRunner().invoke(main, ["upscale", *map(str, args)])


def test_default_model_by_kind_and_scale(weights):
    assert default_model("photo", 2) == "tiny-x2"
    assert default_model("fits") == "galaxy-x4"  # no --scale: x4
    with pytest.raises(ConfigError, match=r"^no embedded photo model at x4 \(embedded photo scales: x2\)"):
        default_model("photo")


def test_scale_picks_the_embedded_model_of_that_scale(weights, photo, tmp_path):
    result = upscale(photo, tmp_path / "out.png", "--scale", "2")
    assert result.exit_code == 0, result.output
    assert Image.open(tmp_path / "out.png").size == (12, 10)


def test_no_embedded_model_at_that_scale_is_one_error_line(weights, photo, tmp_path):
    result = upscale(photo, tmp_path / "out.png", "--scale", "4")
    assert result.exit_code == 1
    assert result.output.splitlines() == [
        "Error: no embedded photo model at x4 (embedded photo scales: x2); "
        "pass a x4 model file with --model, or leave out --scale"]
    assert not (tmp_path / "out.png").exists()


def test_shipped_photo_x2_is_the_photo_default_at_scale_2(photo, tmp_path):
    from srgan import Upscaler

    result = upscale(photo, tmp_path / "out.png", "--scale", "2")
    assert result.exit_code == 0, result.output
    expected = Upscaler.from_pretrained("photo-x2", device="cpu").upscale(np.asarray(Image.open(photo)))
    np.testing.assert_array_equal(np.asarray(Image.open(tmp_path / "out.png")), expected)


def test_scale_conflicting_with_the_model_is_an_error(weights, photo, tmp_path):
    model = weights / "tiny-x2.safetensors"
    result = upscale(photo, tmp_path / "out.png", "--model", model, "--scale", "4")
    assert result.exit_code == 1
    assert result.output.splitlines() == [f"Error: --scale 4 conflicts with --model {model}, which upscales x2: "
                                          "leave out one of them"]
    assert not (tmp_path / "out.png").exists()
    assert upscale(photo, tmp_path / "out.png", "--model", model, "--scale", "2").exit_code == 0


def test_scale_must_be_2_or_4(photo, tmp_path):
    result = upscale(photo, tmp_path / "out.png", "--scale", "3")
    assert result.exit_code == 2 and "'3' is not one of '2', '4'" in result.output


def test_fits_scale_2_uses_the_embedded_galaxy_x2(tmp_path):
    from astropy.io import fits

    data = np.random.default_rng(0).normal(10, 1, (20, 18)).astype(np.float32)
    fits.PrimaryHDU(data).writeto(tmp_path / "in.fits")
    for flags, name, scale in (([], "galaxy-x4", 4), (["--scale", "2"], "galaxy-x2", 2)):
        out = tmp_path / f"x{scale}.fits"
        result = upscale(tmp_path / "in.fits", out, *flags)
        assert result.exit_code == 0, result.output
        with fits.open(out) as f:
            assert f[0].data.shape == (20 * scale, 18 * scale) and f[0].header["SRMODEL"] == name
