"""Self-ensemble: the mean of the 8 flipped/rotated passes, exactly equivariant, tiled == whole."""

import numpy as np
import pytest
import torch
from click.testing import CliRunner
from PIL import Image

from srgan.checkpoint import load_model, save_model
from srgan.cli import main
from srgan.ensemble import SelfEnsemble
from srgan.errors import ConfigError
from srgan.evaluate import evaluate
from srgan.models import Generator, GeneratorConfig
from srgan.normalize import Normalization
from srgan.upscale import Upscaler

# the 8 symmetries of the square written another way than srgan.ensemble does (transpose and
# flips instead of rotations), each with its inverse
FLIP_H, FLIP_W = (lambda t: t.flip(-2)), (lambda t: t.flip(-1))
T = lambda t: t.transpose(-2, -1)  # noqa: E731
BY_HAND = [
    (lambda t: t, lambda t: t),
    (FLIP_H, FLIP_H),
    (FLIP_W, FLIP_W),
    (lambda t: t.flip(-2, -1), lambda t: t.flip(-2, -1)),
    (T, T),
    (lambda t: FLIP_H(T(t)), lambda t: T(FLIP_H(t))),
    (lambda t: FLIP_W(T(t)), lambda t: T(FLIP_W(t))),
    (lambda t: T(t).flip(-2, -1), lambda t: T(t.flip(-2, -1))),
]


@pytest.fixture
def generator():
    torch.manual_seed(0)
    return Generator(GeneratorConfig(scale=2, channels=8, blocks=1)).eval()


def test_output_is_the_mean_of_the_8_transformed_passes_computed_by_hand(generator):
    x = torch.rand(2, 3, 7, 10)
    with torch.no_grad():
        got = SelfEnsemble(generator)(x)
        want = sum(inv(generator(fwd(x))) for fwd, inv in BY_HAND) / 8
        plain = generator(x)
    assert got.shape == (2, 3, 14, 20) and got.dtype == torch.float32
    assert torch.allclose(got, want, atol=1e-6)
    assert (got - plain).abs().max() > 1e-3  # a random model is not symmetric: the ensemble changes it


def test_ensemble_is_exactly_equivariant_to_flips_and_rotations(generator):
    x = torch.rand(1, 3, 6, 9)
    ens = SelfEnsemble(generator)
    with torch.no_grad():
        out = ens(x)
        for fwd, _ in BY_HAND:
            assert torch.allclose(ens(fwd(x)), fwd(out), atol=1e-5)


def test_config_and_info_are_the_generators_with_a_marked_name(tmp_path, generator):
    save_model(tmp_path / "m.safetensors", generator)
    model = load_model(tmp_path / "m.safetensors")
    ens = SelfEnsemble(model)
    assert ens.config is model.config
    assert ens.info.name == "m (self-ensemble)" and ens.info.sha256 == model.info.sha256
    assert Upscaler(model, device="cpu", self_ensemble=True).info.name == "m (self-ensemble)"


def test_tiled_equals_whole_image_with_the_ensemble(tmp_path):
    cfg = GeneratorConfig(scale=2, in_channels=1, out_channels=1, channels=4, blocks=2)
    torch.manual_seed(1)
    save_model(tmp_path / "astro.safetensors", Generator(cfg).eval(), normalization=Normalization("asinh", 3.0))
    planes = (np.random.default_rng(0).normal(size=(1, 23, 17)) * 2 + 5).astype(np.float32)

    def run(tile, ensemble):
        up = Upscaler.from_pretrained(tmp_path / "astro.safetensors", device="cpu", precision="fp32",
                                      tile=tile, self_ensemble=ensemble)
        return up.upscale_planes(planes, sky=5.0, noise=2.0)

    whole, tiled = run(0, True), run(6, True)
    assert np.abs(tiled - whole).max() <= 1e-5 * np.abs(whole).max()
    assert np.abs(whole - run(0, False)).max() > 1e-3


def test_evaluate_refuses_the_flag_with_a_ready_upscaler(tmp_path, generator):
    with pytest.raises(ConfigError, match="self_ensemble=True"):
        evaluate(Upscaler(generator, device="cpu"), tmp_path, self_ensemble=True)


def test_cli_flags(tmp_path, generator):
    save_model(tmp_path / "m.safetensors", generator)
    a = np.random.default_rng(0).integers(0, 256, (9, 11, 3), dtype=np.uint8)
    (tmp_path / "hr").mkdir()
    Image.fromarray(np.kron(a, np.ones((2, 2, 1), np.uint8))).save(tmp_path / "hr" / "a.png")
    Image.fromarray(a).save(tmp_path / "a.png")
    runner = CliRunner()
    for flags, out in (([], "plain.png"), (["--self-ensemble"], "ens.png")):
        result = runner.invoke(main, ["upscale", str(tmp_path / "a.png"), str(tmp_path / out),
                                      "--model", str(tmp_path / "m.safetensors"), *flags])
        assert result.exit_code == 0, result.output
    ens = np.asarray(Image.open(tmp_path / "ens.png"))
    want = Upscaler.from_pretrained(tmp_path / "m.safetensors", device="cpu", self_ensemble=True).upscale(a)
    assert np.array_equal(ens, want)
    assert not np.array_equal(ens, np.asarray(Image.open(tmp_path / "plain.png")))

    result = runner.invoke(main, ["eval", "--model", str(tmp_path / "m.safetensors"), "--hr", str(tmp_path / "hr"),
                                  "--self-ensemble", "--markdown"])
    assert result.exit_code == 0, result.output
    assert "**m (self-ensemble)**" in result.output and "--self-ensemble --markdown" in result.output
