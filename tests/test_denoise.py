"""--denoise S: photo-x4 / photo-x4-real network interpolation, exact at both ends."""

import numpy as np
import pytest
import torch
from click.testing import CliRunner
from PIL import Image

from srgan.blend import DENOISE_MODELS, blend_state_dicts, blended_model
from srgan.checkpoint import load_model
from srgan.cli import main
from srgan.errors import ConfigError


@pytest.fixture(scope="module")
def ends():
    return [load_model(m).state_dict() for m in DENOISE_MODELS]


@pytest.mark.parametrize("s, which", [(0.0, 0), (1.0, 1)])
def test_ends_equal_the_two_models_exactly(ends, s, which):
    got = blended_model(s).state_dict()
    assert got.keys() == ends[which].keys()
    for k, v in got.items():
        assert torch.equal(v, ends[which][k]), k


def test_middle_is_the_weight_average(ends):
    got = blended_model(0.25).state_dict()
    k = next(k for k, v in got.items() if v.is_floating_point())
    torch.testing.assert_close(got[k], 0.75 * ends[0][k] + 0.25 * ends[1][k])
    assert not torch.equal(got[k], ends[0][k])


def test_blend_refuses_other_layouts():
    a = {"w": torch.zeros(2, 3)}
    with pytest.raises(ConfigError, match="different layers"):
        blend_state_dicts(a, {"v": torch.zeros(2, 3)}, 0.5)
    with pytest.raises(ConfigError, match="has shape"):
        blend_state_dicts(a, {"w": torch.zeros(3, 2)}, 0.5)
    with pytest.raises(ConfigError, match="--denoise must be between 0 and 1"):
        blended_model(1.5)


def test_cli_denoise_ends_and_model_conflict(tmp_path, one_thread):
    src = tmp_path / "a.png"
    Image.fromarray(np.random.default_rng(0).integers(0, 256, (6, 8, 3), dtype=np.uint8)).save(src)

    def run(*args):
        return CliRunner().invoke(main, ["upscale", str(src), *map(str, args)])

    for s, model in (("0", "photo-x4"), ("1", "photo-x4-real")):
        assert run(tmp_path / f"d{s}.png", "--denoise", s).exit_code == 0
        assert run(tmp_path / f"m{s}.png", "--model", model).exit_code == 0
        np.testing.assert_array_equal(np.asarray(Image.open(tmp_path / f"d{s}.png")),
                                      np.asarray(Image.open(tmp_path / f"m{s}.png")))
    r = run(tmp_path / "x.png", "--denoise", "0.5", "--model", "photo-x4")
    assert r.exit_code == 1 and "--denoise blends photo-x4 and photo-x4-real: leave out --model photo-x4" in r.output


def test_cli_denoise_with_another_scale_is_one_line(tmp_path):
    src = tmp_path / "a.png"
    Image.fromarray(np.zeros((4, 4, 3), np.uint8)).save(src)
    r = CliRunner().invoke(main, ["upscale", str(src), str(tmp_path / "o.png"), "--denoise", "0.5", "--scale", "2"])
    assert r.exit_code == 1 and "--scale 2 conflicts with --denoise, which blends x4 models" in r.output
