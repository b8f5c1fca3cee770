"""The CPU engine: bf16 autocast only where the processor has native bf16, for photo models only,
fp32 forced by option or environment, the channels_last fp32 path exact, bf16 close enough."""

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

import srgan.device
import srgan.upscale
from srgan.checkpoint import ModelInfo, load_model
from srgan.errors import ConfigError
from srgan.models import Generator, GeneratorConfig, receptive_radius
from srgan.normalize import Normalization
from srgan.tiling import reflect_pad
from srgan.upscale import PRECISION_ENV, Upscaler

TINY = GeneratorConfig(scale=2, channels=8, blocks=1)


@pytest.fixture
def auto_precision(monkeypatch):
    """precision="auto" as a user gets it (the root conftest pins SRGAN_PRECISION=fp32 for the other tests)."""
    monkeypatch.delenv(PRECISION_ENV, raising=False)


def native_bf16(monkeypatch, present: bool):
    monkeypatch.setattr(srgan.upscale, "cpu_native_bf16", lambda: present)


def data_model() -> Generator:
    g = Generator(GeneratorConfig(scale=2, channels=8, blocks=1, in_channels=1, out_channels=1))
    g.info = ModelInfo(config=g.config, normalization=Normalization("asinh", 3.0), name="astro")
    return g


def test_bf16_is_the_photo_default_only_with_native_bf16(auto_precision, monkeypatch):
    native_bf16(monkeypatch, True)
    assert Upscaler(Generator(TINY), device="cpu").autocast_dtype is torch.bfloat16
    native_bf16(monkeypatch, False)
    assert Upscaler(Generator(TINY), device="cpu").autocast_dtype is None


def test_data_models_stay_fp32_on_a_bf16_cpu(auto_precision, monkeypatch):
    native_bf16(monkeypatch, True)
    up = Upscaler(data_model(), device="cpu")
    assert not up.is_photo_model and up.autocast_dtype is None


def test_fp32_forced_by_option_or_environment(auto_precision, monkeypatch):
    native_bf16(monkeypatch, True)
    assert Upscaler(Generator(TINY), device="cpu", precision="fp32").autocast_dtype is None
    monkeypatch.setenv(PRECISION_ENV, "fp32")
    assert Upscaler(Generator(TINY), device="cpu").autocast_dtype is None
    monkeypatch.setenv(PRECISION_ENV, "fp8")
    with pytest.raises(ConfigError, match=PRECISION_ENV):
        Upscaler(Generator(TINY), device="cpu")


@pytest.mark.parametrize("capability, flags, native", [
    ("AVX512", ["avx2", "avx512f", "avx512_bf16"], True),
    ("AVX512", ["avx2", "amx_bf16", "avx512f"], True),
    ("AVX512", ["avx2", "avx512f", "avx512_vnni"], False),  # AVX-512 without bf16: oneDNN emulates it
    ("AVX2", ["avx2", "avx512_bf16"], False),  # torch not dispatching AVX-512 kernels
])
def test_cpu_native_bf16_reads_the_cpu_flags(monkeypatch, capability, flags, native):
    monkeypatch.setattr(torch.backends.cpu, "get_cpu_capability", lambda: capability)
    monkeypatch.setattr(srgan.device, "_cpu_flags", lambda: flags)
    assert srgan.device.cpu_native_bf16() is native


def test_fp32_channels_last_engine_equals_the_nchw_whole_pass():
    """Tiles in channels_last (the engine's layout) against one NCHW pass on a separate copy."""
    torch.manual_seed(0)
    plain = Generator(TINY).eval()
    ref_model = Generator(TINY).eval()
    ref_model.load_state_dict(plain.state_dict())
    r = receptive_radius(TINY)
    up = Upscaler(plain, device="cpu", precision="fp32", tile=8, overlap=r)
    assert up.channels_last and up.autocast_dtype is None
    a = np.random.rand(3, 19, 23).astype(np.float32)
    out = up.upscale_planes(a)
    with torch.no_grad():
        want = ref_model(reflect_pad(torch.from_numpy(a)[None], r))[0, :, 2 * r:-2 * r, 2 * r:-2 * r].numpy()
    assert np.abs(out - want).max() <= 1e-5


def test_bf16_output_of_photo_x4_is_within_50_db_of_fp32():
    skimage = pytest.importorskip("skimage.data")
    image = skimage.astronaut()[100:164, 180:244]  # 64 x 64 of a natural photo (face and hair)
    model = load_model("photo-x4")
    out32 = Upscaler(model, device="cpu", precision="fp32").upscale(image).astype(np.float64)
    out16 = Upscaler(model, device="cpu", precision="bf16").upscale(image).astype(np.float64)
    psnr = 10 * np.log10(255**2 / np.mean((out16 - out32) ** 2))
    assert psnr > 50
    assert np.mean(np.abs(out16 - out32) > 1) < 1e-3  # at most one 8-bit level on nearly all values


@pytest.mark.slow
def test_fits_precision_benchmark_smoke(tmp_path):
    script = Path(__file__).resolve().parents[1] / "benchmarks" / "fits_precision.py"
    out = tmp_path / "fits_precision.json"
    proc = subprocess.run([sys.executable, str(script), "--smoke", "--json", str(out)],
                          capture_output=True, text=True, timeout=300, cwd=tmp_path)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert "FITS bf16/fp32 speed=" in proc.stdout and proc.stdout.count("FLUX true=") == 3
    record = json.loads(out.read_text())
    assert record["bf16_speedup"] > 0 and 0 < record["max_diff_sigma"] < 1


def test_cpu_bf16_keeps_bf16_weights_and_leaves_the_callers_model_alone():
    """Weights cast once (autocast would re-cast them every tile), output identical to autocast."""
    torch.manual_seed(0)
    g = Generator(TINY).eval()
    up = Upscaler(g, device="cpu", precision="bf16", tile=8)
    assert next(up.model.parameters()).dtype is torch.bfloat16
    assert next(g.parameters()).dtype is torch.float32
    a = np.random.rand(3, 13, 11).astype(np.float32)
    x = reflect_pad(torch.from_numpy(a)[None], up.overlap).contiguous(memory_format=torch.channels_last)
    with torch.inference_mode(), torch.autocast("cpu", dtype=torch.bfloat16):
        want = g(x).float()[0, :, 2 * up.overlap:-2 * up.overlap, 2 * up.overlap:-2 * up.overlap].numpy()
    up.tile = 0  # one window, as the reference
    assert np.abs(up.upscale_planes(a) - want).max() <= 1e-6
