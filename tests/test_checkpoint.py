import json

import pytest
import torch
from safetensors.torch import save_file

from srgan.checkpoint import load_model, load_state, read_model_info, save_model, save_state
from srgan.errors import ModelError
from srgan.normalize import Normalization


def test_model_round_trip_rebuilds_from_metadata(tmp_path, make_generator):
    g = make_generator(scale=4, in_channels=1, out_channels=1, batch_norm=False)
    cfg = g.config
    path = tmp_path / "m.safetensors"
    save_model(path, g, normalization=Normalization("asinh", 2.0), preset="astro", training={"steps": 3})
    loaded = load_model(path)
    assert loaded.config == cfg
    assert loaded.info.normalization == Normalization("asinh", 2.0)
    assert loaded.info.preset == "astro" and loaded.info.training == {"steps": 3}
    assert len(loaded.info.sha256) == 64
    x = torch.rand(1, 1, 6, 6)
    with torch.no_grad():
        assert torch.equal(loaded(x), g(x))


def test_unknown_model_name_lists_choices():
    with pytest.raises(ModelError, match="unknown model"):
        load_model("no-such-model")


def test_non_srgan_safetensors_is_refused(tmp_path):
    path = tmp_path / "other.safetensors"
    save_file({"w": torch.zeros(2)}, str(path))
    with pytest.raises(ModelError, match="not an srgan model file"):
        read_model_info(path)


def test_corrupt_model_file_is_a_clear_error(tmp_path):
    path = tmp_path / "bad.safetensors"
    path.write_bytes(b"not a model")
    with pytest.raises(ModelError, match="not a readable"):
        load_model(path)


def test_training_state_round_trip(tmp_path, make_generator):
    g = make_generator(channels=4).train()
    opt = torch.optim.Adam(g.parameters(), lr=1e-3)
    g(torch.rand(1, 3, 4, 4)).mean().backward()
    opt.step()
    gen = torch.Generator().manual_seed(3)
    state = {"step": 7, "opt": opt.state_dict(), "rng": gen.get_state(), "pair": (1, "a"), "none": None}
    save_state(tmp_path / "s.safetensors", state)
    back = load_state(tmp_path / "s.safetensors")
    assert back["step"] == 7 and back["pair"] == (1, "a") and back["none"] is None
    assert torch.equal(back["rng"], gen.get_state())
    opt2 = torch.optim.Adam(g.parameters(), lr=1e-3)
    opt2.load_state_dict(back["opt"])
    assert json.dumps(str(opt2.state_dict()["param_groups"])) == json.dumps(str(opt.state_dict()["param_groups"]))
    for k, v in opt.state_dict()["state"].items():
        assert torch.equal(opt2.state_dict()["state"][k]["exp_avg"], v["exp_avg"])
