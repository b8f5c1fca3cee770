"""Community models through spandrel: weights-only loading, the engine's contract, refusals.

Every model is built here with random weights from spandrel's own architecture classes and
saved as .safetensors and as a weights-only .pth ({"params_ema": state_dict}), so nothing is
downloaded. Tests that need spandrel skip without it (``pip install -e '.[test]'`` installs it).
"""

import dataclasses
import importlib.util
import json
import pickle
import re
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from click.testing import CliRunner
from PIL import Image
from safetensors.torch import save_file

from srgan import community, load_model
from srgan.checkpoint import save_model
from srgan.community import (ATTENTION_OVERLAP, CNN_OVERLAP, CommunityConfig, community_precision,
                             pad_to_requirements, read_state_dict)
from srgan.errors import ConfigError, ModelError
from srgan.models import Generator, GeneratorConfig
from srgan.tiling import reflect_pad, upscale_tiled
from srgan.upscale import Upscaler

needs_spandrel = pytest.mark.skipif(importlib.util.find_spec("spandrel") is None,
                                    reason="spandrel is not installed (pip install -e '.[community]')")
pytestmark = pytest.mark.filterwarnings("ignore:torch.meshgrid")  # SwinIR's, inside spandrel

BENCH = Path(__file__).resolve().parents[1] / "benchmarks"
SEAM_LEVELS = 1  # tiled vs whole, default overlap: at most one 8-bit level (README: Community models)


# --- tiny models from spandrel's classes -------------------------------------------------------


def rrdbnet(scale=4, shuffle=None):
    """Real-ESRGAN's RRDBNet, tiny (8 features, 2 blocks); shuffle=2: the x2plus layout (pixel-unshuffle input)."""
    from spandrel.architectures.ESRGAN import ESRGAN

    in_nc = 3 * shuffle**2 if shuffle else 3
    return ESRGAN(in_nc=in_nc, out_nc=3, num_filters=8, num_blocks=2, scale=scale, shuffle_factor=shuffle).eval()


def compact(scale=4):
    """realesr-general-x4v3's SRVGGNetCompact, tiny (8 features, 2 convs)."""
    from spandrel.architectures.Compact import Compact

    return Compact(num_in_ch=3, num_out_ch=3, num_feat=8, num_conv=2, upscale=scale).eval()


def swinir(scale=2, upsampler="pixelshuffledirect"):
    """SwinIR-light's layout (pixelshuffledirect, window 8), tiny (12 dims, one group of 2 blocks)."""
    from spandrel.architectures.SwinIR import SwinIR

    return SwinIR(img_size=16, in_chans=3, embed_dim=12, depths=[2], num_heads=[2], window_size=8, mlp_ratio=2,
                  upscale=scale, upsampler=upsampler, resi_connection="1conv").eval()


def real_esrgan_layout(sd: dict) -> dict:
    """spandrel's (ESRGAN "old arch") RRDBNet keys -> BasicSR's, as in RealESRGAN_x4plus.pth."""
    top = sorted(int(m.group(1)) for k in sd if (m := re.fullmatch(r"model\.(\d+)\.weight", k)))
    names = {top[0]: "conv_first", top[-2]: "conv_hr", top[-1]: "conv_last"}
    names.update({i: f"conv_up{n + 1}" for n, i in enumerate(top[1:-2])})
    blocks = max(int(m.group(1)) for k in sd if (m := re.match(r"model\.1\.sub\.(\d+)\.RDB", k))) + 1
    out = {}
    for k, v in sd.items():
        if m := re.fullmatch(r"model\.1\.sub\.(\d+)\.RDB(\d)\.conv(\d)\.0\.(weight|bias)", k):
            out[f"body.{m[1]}.rdb{m[2]}.conv{m[3]}.{m[4]}"] = v
        elif m := re.fullmatch(rf"model\.1\.sub\.{blocks}\.(weight|bias)", k):
            out[f"conv_body.{m[1]}"] = v
        else:
            i, kind = re.fullmatch(r"model\.(\d+)\.(weight|bias)", k).groups()
            out[f"{names[int(i)]}.{kind}"] = v
    return out


def save(module_or_sd, path: Path) -> Path:
    """A .safetensors state dict, or a weights-only .pth holding {"params_ema": state_dict}."""
    sd = module_or_sd if isinstance(module_or_sd, dict) else module_or_sd.state_dict()
    sd = {k: v.detach().contiguous() for k, v in sd.items()}
    if path.suffix == ".safetensors":
        save_file(sd, str(path))
    else:
        torch.save({"params_ema": sd}, path)
    return path


def reference(module, x):
    """What the original module gives (spandrel's contract: outputs clamped to [0, 1])."""
    with torch.no_grad():
        return module(x).clamp(0, 1)


def image(h=13, w=11, seed=0):
    return np.random.default_rng(seed).integers(0, 256, (h, w, 3), dtype=np.uint8)


# --- loading and equality with the original module ---------------------------------------------


@needs_spandrel
@pytest.mark.parametrize("suffix", [".safetensors", ".pth"])
@pytest.mark.parametrize("build, layout, arch", [
    (lambda: rrdbnet(4), real_esrgan_layout, "ESRGAN"),  # RealESRGAN_x4plus.pth's keys
    (lambda: rrdbnet(4), dict, "ESRGAN"),  # the original ESRGAN keys
    (lambda: compact(4), dict, "Compact"),
    (lambda: swinir(2), dict, "SwinIR"),
])
def test_community_file_loads_and_equals_the_original_module(tmp_path, suffix, build, layout, arch):
    torch.manual_seed(0)
    module = build()
    path = save(layout(module.state_dict()), tmp_path / f"model{suffix}")
    model = load_model(path)
    assert isinstance(model, community.CommunityModel) and model.config.architecture == arch
    assert model.info.normalization.kind == "unit" and model.info.name == "model" and len(model.info.sha256) == 64
    x = torch.rand(2, 3, 16, 20)
    with torch.no_grad():
        got = model(x)
    assert got.shape == (2, 3, 16 * model.config.scale, 20 * model.config.scale)
    assert (got - reference(module, x)).abs().max() <= 1e-5


@needs_spandrel
def test_upscaler_from_pretrained_runs_a_pth_and_matches_the_module(tmp_path):
    torch.manual_seed(0)
    module = compact(2)
    up = Upscaler.from_pretrained(save(module, tmp_path / "c.pth"), device="cpu", tile=0)
    a = image()
    out = up.upscale(a)
    x = reflect_pad(torch.from_numpy(a).permute(2, 0, 1)[None].float() / 255, up.overlap)  # the engine's border
    o = up.overlap * 2
    want = (reference(module, x)[0, :, o:-o, o:-o].permute(1, 2, 0).numpy() * 255).round()
    assert out.shape == (26, 22, 3) and out.dtype == np.uint8
    assert np.abs(out.astype(int) - want).max() <= 1  # float rounding may flip a level


@needs_spandrel
@pytest.mark.parametrize("build, scale", [
    (compact, 1), (compact, 2), (compact, 3), (compact, 4), (rrdbnet, 8), (lambda s: swinir(s), 3),
])
def test_scales_give_exact_output_sizes(tmp_path, build, scale):
    torch.manual_seed(0)
    model = load_model(save(build(scale), tmp_path / "m.safetensors"))
    assert model.config.scale == scale
    up = Upscaler(model, device="cpu", tile=8)
    assert up.scale == scale
    assert up.upscale(image(13, 11)).shape == (13 * scale, 11 * scale, 3)
    assert up.upscale(np.zeros((5, 3), np.uint8)).shape == (5 * scale, 3 * scale)  # gray, tinier than any window


@needs_spandrel
def test_a_gray_model_runs_each_colour_plane(tmp_path):
    from spandrel.architectures.Compact import Compact

    torch.manual_seed(0)
    net = Compact(num_in_ch=1, num_out_ch=1, num_feat=8, num_conv=2, upscale=2).eval()
    up = Upscaler(load_model(save(net, tmp_path / "gray.pth")), device="cpu", tile=0)
    assert up.model.config.in_channels == 1
    rgb = image(9, 7)
    out = up.upscale(rgb)
    assert out.shape == (18, 14, 3)
    assert np.array_equal(out[..., 1], up.upscale(np.ascontiguousarray(rgb[..., 1])))  # plane by plane


@needs_spandrel
@pytest.mark.parametrize("build, overlap", [(lambda: rrdbnet(4), CNN_OVERLAP), (lambda: swinir(2), ATTENTION_OVERLAP)])
def test_tiled_output_is_within_the_documented_tolerance(tmp_path, build, overlap):
    torch.manual_seed(0)
    model = load_model(save(build(), tmp_path / "m.safetensors"))
    tiled = Upscaler(model, device="cpu", tile=16)
    assert tiled.overlap == overlap  # the family default
    a = image(40, 36)
    whole = Upscaler(model, device="cpu", tile=0).upscale(a).astype(int)
    assert np.abs(tiled.upscale(a).astype(int) - whole).max() <= SEAM_LEVELS
    no_context = Upscaler(model, device="cpu", tile=16, overlap=0).upscale(a).astype(int)
    assert np.abs(no_context - whole).max() > SEAM_LEVELS  # the check can fail: seams without overlap


def block_mean(x):
    """A network whose output depends on where its 4x4 blocks fall, like window attention."""
    return F.interpolate(F.avg_pool2d(pad_to_requirements(x, multiple_of=4), 4), scale_factor=8)[
        ..., : 2 * x.shape[-2], : 2 * x.shape[-1]]


def test_aligned_tiles_reproduce_a_grid_dependent_network_exactly():
    src = torch.rand(3, 21, 18)
    whole, tiled, unaligned = (torch.zeros(3, 42, 36) for _ in range(3))
    upscale_tiled(block_mean, src, whole, scale=2, tile=0, overlap=0, align=4)
    upscale_tiled(block_mean, src, tiled, scale=2, tile=6, overlap=2, align=4)  # tile 4, overlap 4
    assert torch.equal(tiled, whole)
    upscale_tiled(block_mean, src, unaligned, scale=2, tile=6, overlap=2)
    assert (unaligned - whole).abs().max() > 0.01


@needs_spandrel
def test_window_attention_tiles_start_on_the_window_grid(tmp_path):
    torch.manual_seed(0)
    model = load_model(save(swinir(2), tmp_path / "s.safetensors"))
    assert model.config.align == 8  # SwinIR's window_size
    a = np.random.default_rng(0).random((37, 30, 3)).astype(np.float32)  # not multiples of the window
    whole = Upscaler(model, device="cpu", tile=0).upscale(a)
    assert np.abs(Upscaler(model, device="cpu", tile=16).upscale(a) - whole).max() <= 1e-5
    model.config = dataclasses.replace(model.config, align=1)
    assert np.abs(Upscaler(model, device="cpu", tile=16).upscale(a) - whole).max() > 1e-4  # off the grid


# --- size requirements -------------------------------------------------------------------------


def test_pad_to_requirements_reflects_to_the_multiple_and_the_minimum():
    x = torch.arange(15.).view(1, 1, 3, 5)
    y = pad_to_requirements(x, multiple_of=4)
    assert y.shape == (1, 1, 4, 8)
    assert torch.equal(y[..., :3, :5], x)  # the image itself untouched, at the top left
    assert torch.equal(y, F.pad(x, (0, 3, 0, 1), mode="reflect"))
    tiny = pad_to_requirements(x, minimum=16)
    assert tiny.shape == (1, 1, 16, 16)  # more padding than the image: mirrored again and again
    assert tiny[0, 0, :, 0].tolist() == [0, 5, 10, 5] * 4
    assert pad_to_requirements(x) is x


@needs_spandrel
def test_window_and_multiple_padding_is_exact_on_odd_sizes(tmp_path):
    torch.manual_seed(0)
    x2plus = rrdbnet(4, shuffle=2)  # RealESRGAN_x2plus: pixel-unshuffle input, sizes must be multiples of 4
    model = load_model(save(real_esrgan_layout(x2plus.state_dict()), tmp_path / "x2plus.pth"))
    assert (model.config.scale, model.config.multiple_of) == (2, 4)
    x = torch.rand(1, 3, 13, 11)
    want = reference(x2plus, F.pad(x, (0, 1, 0, 3), mode="reflect"))[..., :26, :22]
    with torch.no_grad():
        got = model(x)
    assert got.shape == (1, 3, 26, 22) and (got - want).abs().max() <= 1e-5

    swin = swinir(2)  # window 8: SwinIR pads to the window itself; srgan pads to spandrel's minimum (16)
    model = load_model(save(swin, tmp_path / "swinir.safetensors"))
    assert model.config.minimum == 16
    x = torch.rand(1, 3, 17, 19)  # above the minimum, not a multiple of the window
    with torch.no_grad():
        got = model(x)
    assert got.shape == (1, 3, 34, 38) and (got - reference(swin, x)).abs().max() <= 1e-5
    small = torch.rand(1, 3, 9, 7)  # below the minimum: reflected up to 16 x 16, cropped back
    with torch.no_grad():
        got = model(small)
    want = reference(swin, pad_to_requirements(small, minimum=16))[..., :18, :14]
    assert got.shape == (1, 3, 18, 14) and (got - want).abs().max() <= 1e-5


# --- pickle safety -----------------------------------------------------------------------------


class WritesAFile:
    """A pickle payload: unpickling it calls Path.write_text (arbitrary code)."""

    def __init__(self, target):
        self.target = target

    def __reduce__(self):
        return (Path.write_text, (self.target, "pwned"))


@pytest.mark.parametrize("writer", ["torch.save", "pickle.dump"])
def test_malicious_pickle_is_refused_and_never_run(tmp_path, writer):
    target = tmp_path / "pwned.txt"
    path = tmp_path / "evil.pth"
    payload = {"params_ema": {"conv.weight": torch.zeros(1)}, "x": WritesAFile(target)}
    if writer == "torch.save":
        torch.save(payload, path)
    else:
        with open(path, "wb") as f:
            pickle.dump(payload, f)
    with pytest.raises(ModelError) as e:
        read_state_dict(path)
    message = str(e.value)
    assert "refused" in message and "never runs code" in message and "\n" not in message
    assert not target.exists()
    if importlib.util.find_spec("spandrel") is not None:
        with pytest.raises(ModelError, match="refused"):
            load_model(path)
        assert not target.exists()


@pytest.mark.filterwarnings("ignore:`torch.jit.script` is deprecated")
def test_torchscript_archive_is_refused(tmp_path):
    path = tmp_path / "scripted.pt"
    torch.jit.script(torch.nn.Conv2d(3, 3, 1)).save(str(path))
    with pytest.raises(ModelError, match="TorchScript archive holds code"):
        read_state_dict(path)


def test_corrupt_pth_is_one_clear_line(tmp_path):
    path = tmp_path / "truncated.pth"
    torch.save({"params_ema": {"w": torch.zeros(1000)}}, path)
    path.write_bytes(path.read_bytes()[:300])
    with pytest.raises(ModelError, match="not a readable PyTorch weights file") as e:
        read_state_dict(path)
    assert "\n" not in str(e.value)


def test_pth_without_spandrel_says_how_to_get_it(tmp_path, monkeypatch):
    monkeypatch.setitem(sys.modules, "spandrel", None)  # import spandrel -> ImportError
    path = tmp_path / "RealESRGAN_x4plus.pth"
    torch.save({"params_ema": {"conv_first.weight": torch.zeros(1)}}, path)
    with pytest.raises(ModelError) as e:
        load_model(path)
    assert "pickle files are read only through the community extra" in str(e.value)
    assert "pip install 'srgan[community]'" in str(e.value)
    other = tmp_path / "other.safetensors"
    save_file({"conv_first.weight": torch.zeros(1)}, str(other))
    with pytest.raises(ModelError, match=r"not an srgan model file.*pip install 'srgan\[community\]'"):
        load_model(other)


def test_srgan_model_files_load_without_spandrel(tmp_path, monkeypatch):
    monkeypatch.setitem(sys.modules, "spandrel", None)
    path = tmp_path / "own.safetensors"
    save_model(path, Generator(GeneratorConfig(scale=2, channels=4, blocks=1)))
    assert isinstance(load_model(path), Generator)
    assert isinstance(load_model("photo-x4"), Generator)


def test_missing_pth_is_file_not_found(tmp_path):
    with pytest.raises(ModelError, match="model file not found"):
        load_model(tmp_path / "nope.pth")


# --- refusals and descriptor fields ------------------------------------------------------------


@needs_spandrel
def test_restoration_only_architecture_is_refused(tmp_path):
    from spandrel.architectures.DnCNN import DnCNN

    path = save(DnCNN(in_nc=3, out_nc=3, nc=8, nb=5), tmp_path / "dncnn.pth")
    with pytest.raises(ModelError, match="DnCNN restoration model .* not super-resolution"):
        load_model(path)


@needs_spandrel
def test_x1_files_of_super_resolution_architectures_are_accepted(tmp_path):
    model = load_model(save(compact(1), tmp_path / "1x_compact.pth"))
    assert model._descriptor.purpose == "Restoration" and model.config.scale == 1  # spandrel's word for x1


@needs_spandrel
def test_face_restoration_and_inpainting_are_refused():
    from spandrel import MAIN_REGISTRY, ImageModelDescriptor, MaskedImageModelDescriptor

    net = torch.nn.Conv2d(3, 3, 1)
    face = ImageModelDescriptor(net, net.state_dict(), architecture=MAIN_REGISTRY["GFPGAN"].architecture,
                                purpose="FaceSR", tags=[], supports_half=False, supports_bfloat16=False, scale=1,
                                input_channels=3, output_channels=3)
    with pytest.raises(ModelError, match="GFPGAN face-restoration model"):
        community.community_model(face, name="face")
    inpaint = MaskedImageModelDescriptor(net, net.state_dict(), architecture=MAIN_REGISTRY["LaMa"].architecture,
                                         purpose="Inpainting", tags=[], supports_half=False,
                                         supports_bfloat16=False, input_channels=3, output_channels=3)
    with pytest.raises(ModelError, match="LaMa inpainting model"):
        community.community_model(inpaint, name="lama")


@needs_spandrel
def test_unknown_architecture_and_non_finite_weights_are_refused(tmp_path):
    with pytest.raises(ModelError, match="does not recognise this model's architecture"):
        load_model(save({"foo.weight": torch.zeros(3, 3)}, tmp_path / "unknown.pth"))
    sd = compact(2).state_dict()
    sd["body.0.weight"][0, 0, 0, 0] = float("nan")
    with pytest.raises(ModelError, match="NaN or infinite"):
        load_model(save(sd, tmp_path / "nan.safetensors"))


@needs_spandrel
def test_descriptor_fields_reach_the_config_and_the_engine(tmp_path):
    swin = load_model(save(swinir(2), tmp_path / "s.safetensors")).config
    assert (swin.architecture, swin.supports_fp16, swin.supports_bf16, swin.overlap) == ("SwinIR", False, True,
                                                                                          ATTENTION_OVERLAP)
    cnn = load_model(save(rrdbnet(4), tmp_path / "r.safetensors")).config
    assert (cnn.supports_fp16, cnn.supports_bf16, cnn.overlap, cnn.in_channels, cnn.out_channels) == (
        True, True, CNN_OVERLAP, 3, 3)
    with pytest.raises(ConfigError, match="--precision fp16: SwinIR models do not support it"):
        Upscaler(load_model(tmp_path / "s.safetensors"), device="cpu", precision="fp16")


def test_precision_follows_the_architecture_flags():
    swin = CommunityConfig("SwinIR", 2, 3, 3, 60, supports_fp16=False, supports_bf16=True)
    aura = CommunityConfig("AuraSR", 4, 3, 3, 64, supports_fp16=False, supports_bf16=False)
    esrgan = CommunityConfig("ESRGAN", 4, 3, 3, 64, supports_fp16=True, supports_bf16=True)
    assert community_precision(swin, "auto", torch.bfloat16) is torch.bfloat16
    assert community_precision(swin, "auto", torch.float16) is None  # a GPU without bf16: fp32
    assert community_precision(aura, "auto", torch.bfloat16) is None
    assert community_precision(esrgan, "fp16", torch.float16) is torch.float16
    with pytest.raises(ConfigError, match="use --precision fp32"):
        community_precision(aura, "bf16", torch.bfloat16)


@needs_spandrel
def test_a_model_that_tiles_internally_runs_whole_images(tmp_path):
    from spandrel import MAIN_REGISTRY, ImageModelDescriptor, ModelTiling

    net = compact(2)
    d = ImageModelDescriptor(net, net.state_dict(), architecture=MAIN_REGISTRY["Compact"].architecture,
                             purpose="SR", tags=[], supports_half=True, supports_bfloat16=True, scale=2,
                             input_channels=3, output_channels=3, tiling=ModelTiling.INTERNAL)
    assert Upscaler(community.community_model(d), device="cpu").tile == 0
    assert Upscaler(load_model(save(net, tmp_path / "c.pth")), device="cpu").tile > 0


@needs_spandrel
def test_fits_refuse_community_models(tmp_path):
    from astropy.io import fits

    fits.PrimaryHDU(np.ones((8, 8), np.float32)).writeto(tmp_path / "g.fits")
    up = Upscaler(load_model(save(compact(2), tmp_path / "c.pth")), device="cpu")
    with pytest.raises(ModelError, match="trained on photos"):
        up.upscale_fits(tmp_path / "g.fits", tmp_path / "g_x2.fits")
    assert not (tmp_path / "g_x2.fits").exists()


@needs_spandrel
def test_spandrel_reads_rrdbnet_x3_files_as_x2(tmp_path):
    """A spandrel limitation the README states: ESRGAN x3 (one x3 upconv) has x2's tensors."""
    assert load_model(save(rrdbnet(3), tmp_path / "x3.safetensors")).config.scale == 2


@needs_spandrel
def test_sr_architecture_ids_are_spandrel_ids():
    from spandrel import MAIN_REGISTRY

    for arch in community.SR_ARCHITECTURES | community.CNN_ARCHITECTURES:
        assert arch in MAIN_REGISTRY, arch


# --- conversion, CLI, benchmark ----------------------------------------------------------------


@needs_spandrel
def test_convert_to_safetensors_round_trips(tmp_path):
    torch.manual_seed(0)
    module = rrdbnet(4)
    src = save(real_esrgan_layout(module.state_dict()), tmp_path / "RealESRGAN_x4plus.pth")
    config = community.convert_to_safetensors(src, tmp_path / "x4plus.safetensors")
    assert config.architecture == "ESRGAN" and config.scale == 4
    x = torch.rand(1, 3, 12, 10)
    with torch.no_grad():
        got = load_model(tmp_path / "x4plus.safetensors")(x)
    assert (got - reference(module, x)).abs().max() <= 1e-5
    with pytest.raises(ConfigError, match="must end in .safetensors"):
        community.convert_to_safetensors(src, tmp_path / "out.pth")


@needs_spandrel
def test_cli_upscales_a_folder_with_a_pth_model(tmp_path):
    from srgan.cli import main

    model = save(compact(3), tmp_path / "3x_compact.pth")
    (tmp_path / "in").mkdir()
    Image.fromarray(image(7, 9)).save(tmp_path / "in" / "a.png")
    result = CliRunner().invoke(main, ["upscale", str(tmp_path / "in"), str(tmp_path / "out"), "--model", str(model)])
    assert result.exit_code == 0, result.output
    assert Image.open(tmp_path / "out" / "a.png").size == (27, 21)


@needs_spandrel
def test_community_seams_benchmark_smoke(tmp_path):
    out = tmp_path / "seams.json"
    proc = subprocess.run([sys.executable, str(BENCH / "community_seams.py"), "--smoke", "--json", str(out)],
                          capture_output=True, text=True, timeout=300, cwd=tmp_path)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    models = json.loads(out.read_text())["models"]
    assert {m["family"] for m in models} == {"CNN", "window attention"}
    for m in models:
        assert m["rows"][0]["overlap"] == 0 and m["rows"][0]["max_abs_diff"] > 1  # no context: seams
    for m in models:  # context beyond the tiny models' reach, windows on SwinIR's grid: exact
        assert m["rows"][-1]["max_abs_diff"] < 1e-3, m
