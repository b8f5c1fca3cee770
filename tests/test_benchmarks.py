"""The benchmark scripts run in --smoke mode (so they never rot), and their helpers are right."""

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

from srgan.models import Generator, GeneratorConfig, receptive_radius

BENCH = Path(__file__).resolve().parents[1] / "benchmarks"
sys.path.insert(0, str(BENCH))

import throughput  # noqa: E402


def _smoke(script: str, tmp_path, *extra: str) -> tuple[str, dict]:
    out = tmp_path / f"{script}.json"
    proc = subprocess.run([sys.executable, str(BENCH / f"{script}.py"), "--smoke", "--json", str(out), *extra],
                          capture_output=True, text=True, timeout=600, cwd=tmp_path)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert proc.stdout.startswith("machine: ")
    return proc.stdout, json.loads(out.read_text())


def test_throughput_smoke(tmp_path):
    stdout, record = _smoke("throughput", tmp_path, "--device", "cpu")  # a GPU's fp32 convs use TF32
    assert "FLOP per output pixel" in stdout and "measured matmul peak" in stdout
    assert "RATIO size=24 engine/whole=" in stdout and "RATIO size=40 " in stdout
    assert record["benchmark"] == "throughput" and record["machine"]["cpu_cores"] >= 1
    rows = {(r["size"], r["variant"]): r for r in record["results"]}
    assert set(rows) == {(s, v) for s in (24, 40) for v in ("whole", "engine", "one-tile")}
    for r in rows.values():
        assert r["mpix_per_s"] > 0 and r["peak_rss_mb"] > 0
    assert rows[(24, "engine")]["work"] > 1  # the overlap margin is counted
    assert record["ratios"][0]["engine_over_whole"] > 0 and record["matmul_peak"]["flops_per_s"] > 0
    levers = {r["setting"]: r for r in record["levers"]}
    assert levers["fold BN"]["max_abs_diff"] < 1e-5  # folding is exact up to rounding
    assert levers["precision bf16"]["psnr_db"] > 30


def test_train_speed_smoke(tmp_path):
    stdout, record = _smoke("train_speed", tmp_path)
    assert "TRAIN batch=2 patch=32 phase=pretrain steps_per_s=" in stdout
    assert "TRAIN batch=2 patch=32 phase=gan steps_per_s=" in stdout
    assert [r["phase"] for r in record["results"]] == ["pretrain", "gan"]
    assert all(r["steps_per_s"] > 0 and 0 <= r["degrade_share"] for r in record["results"])
    assert record["vgg_weights"].startswith("random")


def test_fits_memory_smoke(tmp_path):
    stdout, record = _smoke("fits_memory", tmp_path, "--tmpdir", str(tmp_path))
    assert "FITS size=96 peak_rss_mb=" in stdout
    assert tuple(record["output_check"]["shape"]) == (384, 384)
    assert record["output_check"]["finite_fraction"] == 1.0
    assert 0 < record["peak_rss_mb"] < 100_000 and record["wall_s"] > 0
    assert not list(Path(tmp_path).glob("srgan-fits-memory-*"))  # temp files cleaned up


def test_flop_count_matches_issue_for_default_model():
    assert throughput.conv_flops_per_output_pixel(Generator(GeneratorConfig())) == throughput.PAPER_FLOPS
    tiny = Generator(GeneratorConfig(scale=2, channels=8, blocks=1))
    # head 9x9x3x8 + 3 convs 3x3x8x8 + up 3x3x8x32 on LR px, tail 9x9x8x3 on output px
    macs = (81 * 3 * 8 + 3 * 9 * 64 + 9 * 8 * 32) / 4 + 81 * 8 * 3
    assert throughput.conv_flops_per_output_pixel(tiny) == pytest.approx(2 * macs)


def test_one_tile_reference_equals_whole_pass_with_enough_pad():
    """The (c) reference loop pastes correctly: with pad >= the receptive radius it equals
    the whole-image pass (both clip at the border, i.e. the network's zero padding)."""
    g = Generator(GeneratorConfig(scale=2, channels=8, blocks=1)).eval()
    with torch.no_grad():
        g.tail.bias.fill_(0.5)  # mid-grey output: no clipping hides a pasting error
    image = np.random.default_rng(0).integers(0, 256, (21, 30, 3), dtype=np.uint8)
    cpu = torch.device("cpu")
    whole = throughput.whole_pass(g, image, cpu, None, channels_last=False)
    tiled = throughput.one_tile_at_a_time(g, image, cpu, tile=8, pad=receptive_radius(g.config))
    assert tiled.shape == (42, 60, 3) and 5 < whole.mean() < 250
    assert np.abs(tiled.astype(int) - whole.astype(int)).max() <= 1
    short = throughput.one_tile_at_a_time(g, image, cpu, tile=8, pad=1)  # too little context: seams
    assert np.abs(short.astype(int) - whole.astype(int)).max() > 1


def test_work_ratios():
    assert throughput.one_tile_work(512, 512, 256, 10) == pytest.approx(4 * 266 * 266 / 512**2)
    assert throughput.one_tile_work(100, 100, 256, 10) == 1.0


def test_profile_forward_smoke(tmp_path):
    proc = subprocess.run([sys.executable, str(BENCH / "profile_forward.py"), "--smoke", "--device", "cpu"],
                          capture_output=True, text=True, timeout=300, cwd=tmp_path)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert "Upscaler(" in proc.stdout and "aten::" in proc.stdout and "Self CPU" in proc.stdout


def test_finetune_demo_smoke(tmp_path):
    proc = subprocess.run([sys.executable, str(BENCH / "finetune_demo.py"), "--smoke", "--out", str(tmp_path / "demo"),
                           "--device", "cpu"], capture_output=True, text=True, timeout=600, cwd=tmp_path)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert "$ srgan train --init photo-x4" in proc.stdout and "FINETUNE steps=2" in proc.stdout
    summary = json.loads((tmp_path / "demo" / "finetune_demo.json").read_text())
    assert summary["train_images"] == 4 and summary["test_images"] == 2
    for name in ("bicubic", "photo-x4", "fine-tuned"):
        assert 5 < summary[name]["psnr_y"] < 60, summary
    from PIL import Image

    assert Image.open(tmp_path / "demo" / "finetune-lineart.png").size == (4 * 192 + 12, 192)  # 4 panels


def test_seams_smoke(tmp_path):
    proc = subprocess.run([sys.executable, str(BENCH / "seams.py"), "--smoke", "--json", str(tmp_path / "s.json")],
                          capture_output=True, text=True, timeout=300, cwd=tmp_path)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    rows = json.loads((tmp_path / "s.json").read_text())["rows"]
    assert rows[0]["overlap"] == 0 and rows[0]["max_abs_diff"] > 0.01  # no context: seams
    assert rows[-1]["max_abs_diff"] < 1e-3 and rows[-1]["uint8_pixels_changed"] == 0  # receptive radius: exact


def test_photo_memory_smoke(tmp_path):
    proc = subprocess.run([sys.executable, str(BENCH / "photo_memory.py"), "--smoke", "--json", str(tmp_path / "m.json")],
                          capture_output=True, text=True, timeout=300, cwd=tmp_path)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    rows = json.loads((tmp_path / "m.json").read_text())["rows"]
    assert [r["tiles"] for r in rows] == [64, 4]  # 256 px photo in 32 px and 128 px tiles
    assert all(r["peak_rss_mb"] > 0 for r in rows)


def test_self_ensemble_smoke(tmp_path):
    stdout, record = _smoke("self_ensemble", tmp_path)
    assert "GAIN photos (3 img): psnr_y " in stdout and "COST forward wall x" in stdout
    (row,) = record["results"]
    assert row["n_images"] == 3 and set(row["gain"]) == {"psnr_y", "ssim_y"}
    assert row["gain"]["psnr_y"] == pytest.approx(row["self_ensemble"]["psnr_y"] - row["plain"]["psnr_y"])
    assert row["gain"]["psnr_y"] != 0  # the ensembled model scores differently
    assert record["cost"]["forward_cpu_ratio"] > 2  # 8 passes instead of 1
