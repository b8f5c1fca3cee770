"""`srgan models PATH...` describes srgan and community model files; `srgan eval --model FILE.pth`."""

import importlib.util
import json

import pytest
import torch
from click.testing import CliRunner
from safetensors.torch import save_file

from srgan.checkpoint import save_model
from srgan.cli import main
from srgan.model_files import describe, model_paths
from srgan.models import Generator, GeneratorConfig

from helpers import make_photos

pytestmark = [pytest.mark.skipif(importlib.util.find_spec("spandrel") is None,
                                 reason="spandrel is not installed (pip install -e '.[community]')"),
              pytest.mark.filterwarnings("ignore:torch.meshgrid")]


def compact_sd(scale=2):
    from spandrel.architectures.Compact import Compact

    torch.manual_seed(0)
    m = Compact(num_in_ch=3, num_out_ch=3, num_feat=8, num_conv=2, upscale=scale)
    return {k: v.contiguous() for k, v in m.state_dict().items()}


@pytest.fixture
def folder(tmp_path):
    d = tmp_path / "models"
    d.mkdir()
    torch.save({"params_ema": compact_sd()}, d / "compact-x2.pth")
    save_file(compact_sd(4), str(d / "compact-x4.safetensors"))
    save_model(d / "tiny.safetensors", Generator(GeneratorConfig(scale=2, channels=8, blocks=1)))
    (d / "notes.txt").write_text("not a model")
    return d


def test_folder_lists_model_files_only(folder):
    assert [p.name for p in model_paths([folder])] == ["compact-x2.pth", "compact-x4.safetensors", "tiny.safetensors"]
    m = describe(folder / "compact-x2.pth")
    assert (m.family, m.architecture, m.scale, m.in_channels) == ("community", "Compact", 2, 3)
    assert m.parameters == sum(v.numel() for v in compact_sd().values() if v.is_floating_point())
    t = describe(folder / "tiny.safetensors")
    assert (t.family, t.architecture, t.scale) == ("srgan", "SRResNet", 2)


def test_cli_models_paths(folder):
    r = CliRunner().invoke(main, ["models", str(folder)])
    assert r.exit_code == 0, r.output
    assert f"{folder / 'compact-x2.pth'}: community Compact, x2, 3->3 channels" in r.output
    assert f"{folder / 'compact-x4.safetensors'}: community Compact, x4, 3->3 channels" in r.output
    assert f"{folder / 'tiny.safetensors'}: srgan SRResNet, x2, 3->3 channels" in r.output


def test_cli_models_reports_a_bad_file_and_exits_1(folder):
    (folder / "broken.pth").write_bytes(b"not a pickle")
    r = CliRunner().invoke(main, ["models", str(folder)])
    assert r.exit_code == 1
    assert f"{folder / 'broken.pth'}: Error:" in r.output
    assert "1 of 4 model file(s) cannot be used" in r.output
    assert "community Compact, x2" in r.output  # the others are still listed


def test_cli_models_convert(folder, tmp_path):
    out = tmp_path / "c.safetensors"
    r = CliRunner().invoke(main, ["models", str(folder / "compact-x2.pth"), "--convert", str(out)])
    assert r.exit_code == 0, r.output
    assert f"wrote {out}: Compact x2" in r.output
    assert describe(out).architecture == "Compact"
    r = CliRunner().invoke(main, ["models", str(folder / "compact-x2.pth"), str(folder / "tiny.safetensors"),
                                  "--convert", str(out)])
    assert r.exit_code == 1 and "--convert takes exactly one model file as PATH" in r.output


def test_eval_scores_a_community_file(folder, tmp_path, one_thread):
    hr = make_photos(tmp_path / "hr", 2, size=48)
    report = tmp_path / "r.json"
    args = ["eval", "--model", str(folder / "compact-x2.pth"), "--hr", str(hr), "--device", "cpu"]
    r = CliRunner().invoke(main, args)
    assert r.exit_code == 1 and "compact-x2 does not say which degradation it was trained for: pass --preset" in r.output
    r = CliRunner().invoke(main, [*args, "--preset", "bicubic", "--json", str(report)])
    assert r.exit_code == 0, r.output
    data = json.loads(report.read_text())
    ds = data["datasets"][0]
    assert ds["scale"] == 2 and ds["n_images"] == 2 and set(ds["mean"]) == {"model", "bicubic"}
