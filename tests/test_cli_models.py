import json

import pytest
from click.testing import CliRunner

from srgan import checkpoint
from srgan.checkpoint import save_model
from srgan.cli import main
from srgan.models import count_parameters
from srgan.normalize import Normalization
from srgan.pretrained import MODELS, embedded_models, eval_path


@pytest.fixture
def weights(tmp_path, monkeypatch):
    folder = tmp_path / "weights"
    monkeypatch.setattr(checkpoint, "WEIGHTS_DIR", folder)
    return folder


def _report(sha, psnr=30.5):
    return {"model": "galaxy-x4", "model_sha256": sha, "scale": 2, "datasets": [{
        "name": "gal", "n_images": 2, "metrics": ["psnr_asinh", "flux_error"],
        "methods": ["model", "bicubic"],
        "mean": {"model": {"psnr_asinh": psnr, "flux_error": 0.0123},
                 "bicubic": {"psnr_asinh": 28.25, "flux_error": 0.02}}}]}


@pytest.mark.parametrize("create", [False, True])
def test_no_models_is_a_clear_line_and_exit_0(weights, create):
    if create:
        weights.mkdir()
    r = CliRunner().invoke(main, ["models"])
    assert r.exit_code == 0, r.output
    assert r.output.startswith("no embedded models installed")
    assert embedded_models() == []


def test_lists_a_model_with_metadata_and_not_evaluated(weights, make_generator):
    g = make_generator(scale=2, in_channels=1, out_channels=1)
    save_model(weights / "galaxy-x4.safetensors", g, normalization=Normalization("asinh"), preset="astro",
               training={"data": "galaxies/", "images": 12, "steps": 30})
    [m] = embedded_models()
    assert m.name == "galaxy-x4" and m.parameters == count_parameters(g) and m.scores is None
    r = CliRunner().invoke(main, ["models"])
    assert r.exit_code == 0, r.output
    lines = r.output.splitlines()
    assert lines[0] == (f"galaxy-x4: x2, 1->1 channels, {count_parameters(g):,} parameters, preset astro, "
                        "normalization asinh")
    assert lines[1] == f"  {MODELS['galaxy-x4']['summary']}"
    assert lines[2] == f"  trained on: {MODELS['galaxy-x4']['data']}"
    assert lines[3] == "  eval: not evaluated"


def test_shows_scores_and_flags_stale_ones(weights, make_generator):
    path = weights / "tiny.safetensors"
    save_model(path, make_generator(), training={"data": "T91", "steps": 5})
    sha = checkpoint.file_sha256(path)
    eval_path(path).write_text(json.dumps(_report(sha)))
    r = CliRunner().invoke(main, ["models"])
    assert r.exit_code == 0, r.output
    assert "  trained on: T91, 5 steps" in r.output  # not in MODELS: words from the file's metadata
    assert "  eval:\n    gal (2 img, psnr_asinh / flux_error): 30.50 / 1.23%  [bicubic 28.25 / 2.00%]" in r.output
    eval_path(path).write_text(json.dumps(_report("0" * 64)))
    r = CliRunner().invoke(main, ["models"])
    assert "STALE" in r.output


def test_broken_eval_json_is_ignored_with_a_warning(weights, make_generator):
    path = weights / "tiny.safetensors"
    save_model(path, make_generator())
    eval_path(path).write_text("{not json")
    with pytest.warns(UserWarning, match="not an `srgan eval --json` report"):
        [m] = embedded_models()
    assert m.scores is None


def test_corrupt_model_file_is_one_error_line(weights):
    weights.mkdir()
    (weights / "bad.safetensors").write_bytes(b"junk")
    r = CliRunner().invoke(main, ["models"])
    assert r.exit_code == 1
    assert r.output.startswith("Error: ") and "not a readable safetensors model file" in r.output
