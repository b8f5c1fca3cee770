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


def _smoke(script: str, tmp_path, *extra: str, machine_line: bool = True) -> tuple[str, dict]:
    """Run benchmarks/SCRIPT.py --smoke and return its stdout and JSON."""
    out = tmp_path / f"{script}.json"
    proc = subprocess.run([sys.executable, str(BENCH / f"{script}.py"), "--smoke", "--json", str(out), *extra],
                          capture_output=True, text=True, timeout=600, cwd=tmp_path)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    if machine_line:
        assert proc.stdout.startswith("machine: ")
    return proc.stdout, json.loads(out.read_text())


@pytest.mark.slow
def test_throughput_smoke(tmp_path):
    stdout, record = _smoke("throughput", tmp_path, "--device", "cpu")  # a GPU's fp32 convs use TF32
    assert "FLOP per output pixel" in stdout and "measured conv peak" in stdout
    assert "RATIO size=24 engine/whole=" in stdout and "RATIO size=40 " in stdout
    assert record["benchmark"] == "throughput" and record["machine"]["cpu_cores"] >= 1
    rows = {(r["size"], r["variant"]): r for r in record["results"]}
    assert {(s, v) for s in (24, 40) for v in ("whole", "engine", "one-tile", "one-tile-cl")} <= set(rows)
    for r in rows.values():
        assert r["mpix_per_s"] > 0 and r["peak_rss_mb"] > 0
    assert rows[(24, "engine")]["work"] > 1  # the overlap margin is counted
    assert record["ratios"][0]["engine_over_whole"] > 0 and record["conv_peak"]["bf16"]["flops_per_s"] > 0
    levers = {r["setting"]: r for r in record["levers"]}
    assert levers["fold BN"]["max_abs_diff"] < 1e-5  # folding is exact up to rounding
    assert levers["precision bf16"]["psnr_db"] > 30


@pytest.mark.slow
def test_train_speed_smoke(tmp_path):
    stdout, record = _smoke("train_speed", tmp_path)
    assert "TRAIN batch=2 patch=32 phase=pretrain steps_per_s=" in stdout
    assert "TRAIN batch=2 patch=32 phase=gan steps_per_s=" in stdout
    assert [r["phase"] for r in record["results"]] == ["pretrain", "gan"]
    assert all(r["steps_per_s"] > 0 and 0 <= r["degrade_share"] for r in record["results"])
    assert record["vgg_weights"].startswith("random")


@pytest.mark.slow
def test_fits_memory_smoke(tmp_path):
    stdout, record = _smoke("fits_memory", tmp_path, "--tmpdir", str(tmp_path))
    assert "FITS size=96 peak_rss_mb=" in stdout
    assert tuple(record["output_check"]["shape"]) == (384, 384)
    assert record["output_check"]["finite_fraction"] == 1.0
    assert 0 < record["peak_rss_mb"] < 100_000 and record["wall_s"] > 0
    assert not list(Path(tmp_path).glob("srgan-fits-memory-*"))  # temp files cleaned up
    _, record = _smoke("fits_memory", tmp_path, "--tmpdir", str(tmp_path), "--product")
    assert record["product"] and record["output_check"]["planes"] == {n: [384, 384] for n in ("SCI", "ERR", "DQ")}


def test_flop_count_matches_issue_for_default_model(make_generator):
    assert throughput.conv_flops_per_output_pixel(Generator(GeneratorConfig())) == throughput.PAPER_FLOPS
    tiny = make_generator(scale=2, channels=8, blocks=1)
    # head 9x9x3x8 + 3 convs 3x3x8x8 + up 3x3x8x32 on LR px, tail 9x9x8x3 on output px
    macs = (81 * 3 * 8 + 3 * 9 * 64 + 9 * 8 * 32) / 4 + 81 * 8 * 3
    assert throughput.conv_flops_per_output_pixel(tiny) == pytest.approx(2 * macs)


def test_one_tile_reference_equals_whole_pass_with_enough_pad(make_generator):
    """The (c) reference loop pastes correctly: with pad >= the receptive radius it equals
    the whole-image pass (both clip at the border, i.e. the network's zero padding)."""
    g = make_generator(scale=2)
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


@pytest.mark.slow
def test_profile_forward_smoke(tmp_path):
    proc = subprocess.run([sys.executable, str(BENCH / "profile_forward.py"), "--smoke", "--device", "cpu"],
                          capture_output=True, text=True, timeout=300, cwd=tmp_path)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert "Upscaler(" in proc.stdout and "aten::" in proc.stdout and "Self CPU" in proc.stdout


@pytest.mark.slow
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


@pytest.mark.slow
def test_seams_smoke(tmp_path):
    rows = _smoke("seams", tmp_path, machine_line=False)[1]["rows"]
    assert rows[0]["overlap"] == 0 and rows[0]["max_abs_diff"] > 0.01  # no context: seams
    assert rows[-1]["max_abs_diff"] < 1e-3 and rows[-1]["uint8_pixels_changed"] == 0  # receptive radius: exact


@pytest.mark.slow
def test_photo_memory_smoke(tmp_path):
    rows = _smoke("photo_memory", tmp_path, machine_line=False)[1]["rows"]
    assert [r["tiles"] for r in rows] == [64, 4]  # 256 px photo in 32 px and 128 px tiles
    assert all(r["peak_rss_mb"] > 0 for r in rows)


def test_denoise_smoke(tmp_path):
    stdout, rows = _smoke("denoise", tmp_path, machine_line=False)
    assert [r["denoise"] for r in rows] == [0.0, 1.0]
    assert "| S |" in stdout


def test_outscale_smoke(tmp_path):
    (row,) = _smoke("outscale", tmp_path, machine_line=False)[1]["results"]
    assert set(row["mean"]) == {"bicubic", "resize", "second-pass"} and row["n_images"] == 2


# ----------------------------------------------------------------------------- the GPU session's run (issue 17)

import gpu_levers  # noqa: E402
import gpu_run  # noqa: E402
import profile_forward  # noqa: E402
import train_speed  # noqa: E402


def test_streamed_and_device_copies_equal_the_engine():
    """The copy-mode levers compute exactly what the engine does (same tiles, overlap, batches)."""
    from srgan.upscale import Upscaler

    g = Generator(GeneratorConfig(scale=2, channels=8, blocks=1)).eval()
    with torch.no_grad():
        g.tail.bias.fill_(0.5)
    up = Upscaler(g, device="cpu", tile=8, batch_size=3)  # 12 windows: 4 batches, both buffer slots reused
    image = np.random.default_rng(0).integers(0, 256, (21, 30, 3), dtype=np.uint8)
    engine = up.upscale(image)
    assert np.array_equal(gpu_levers.streamed_upscale(up, image), engine)
    assert np.array_equal(gpu_levers.device_upscale(up, image), engine)
    image_f = image.astype(np.float32) / 255
    assert np.abs(gpu_levers.streamed_upscale(up, image_f) - up.upscale(image_f)).max() < 1e-6


def test_gpu_levers_smoke(tmp_path):
    stdout, record = _smoke("gpu_levers", tmp_path, "--device", "cpu", "--skip-compile")
    assert record["device"].startswith("cpu: ") and record["one_tile"]["mpix_per_s"] > 0
    levers = {r["id"]: r for r in record["levers"]}
    assert {"defaults", "tile8", "tile0", "batch1", "bf16", "nchw", "io-device", "io-streamed"} <= set(levers)
    assert not any(i.startswith("compile") for i in levers)
    for r in levers.values():
        assert "error" not in r and r["mpix_per_s"] > 0 and r["speedup"] > 0, r
    assert levers["defaults"]["speedup"] == 1.0
    for same in ("io-device", "io-streamed", "nchw"):  # same arithmetic as the fp32 reference
        assert levers[same]["max_abs_diff"] < 1e-5 and levers[same]["uint8_max_diff"] <= 1
    assert 30 < levers["bf16"]["psnr_db"] < 120
    assert levers["tile8"]["work"] > levers["tile0"]["work"]
    assert "LEVER id=io-streamed mpix_s=" in stdout


def test_batch_speed_smoke(tmp_path):
    stdout, record = _smoke("batch_speed", tmp_path, "--device", "cpu", "--tmpdir", str(tmp_path))
    assert [r["workers"] for r in record["runs"]] == [1, 2]
    for r in record["runs"]:
        assert r["files"] == 3 and r["images_per_s"] > 0 and 0 <= r["idle_fraction"] <= 1
    assert record["engine_images_per_s"] > 0 and record["encode_s_per_image"] > 0
    assert not list(tmp_path.glob("srgan-batch-speed-*"))  # temporary folders removed
    assert "BATCH workers=2 images_per_s=" in stdout


def test_sync_free_degrade_equals_the_bicubic_preset():
    arch = GeneratorConfig(scale=4, channels=8, blocks=1)
    cpu = torch.device("cpu")
    hr = torch.rand(3, 3, 32, 32, generator=torch.Generator().manual_seed(0))
    plain = train_speed.Trainer(arch, cpu, amp=False, preset="bicubic", vgg_layer="relu2_2", disc_base=8)
    fast = train_speed.Trainer(arch, cpu, amp=False, preset="bicubic", vgg_layer="relu2_2", disc_base=8,
                               options=train_speed.StepOptions(sync_free_degrade=True))
    (x0, y0), (x1, y1) = (t.batch(hr, torch.Generator().manual_seed(1)) for t in (plain, fast))
    assert x1.shape == (3, 3, 8, 8) and torch.equal(x0, x1) and torch.equal(y0, y1)
    with pytest.raises(ValueError, match="bicubic preset only"):
        train_speed.Trainer(arch, cpu, amp=False, preset="photo", vgg_layer="relu2_2", disc_base=8,
                            options=train_speed.StepOptions(sync_free_degrade=True))


def test_training_ladder_adds_one_lever_per_row():
    rows = train_speed.ladder(log_every=20)
    assert rows[0] == train_speed.StepOptions() and rows[0].label() == "baseline"
    changed = [sum(getattr(a, f) != getattr(b, f) for f in vars(a)) for a, b in zip(rows, rows[1:])]
    assert changed == [1, 1, 1, 1, 2]  # the last row swaps the CUDA graph for torch.compile
    assert rows[-1].compile_mode == "default" and not rows[-1].cuda_graph and rows[-1].fused_adam


def test_device_busy_counts_overlapping_work_once():
    from torch.autograd import DeviceType

    class Event:
        def __init__(self, start, duration, kind):
            self.start, self.duration, self.kind = start, duration, kind

        def start_ns(self):
            return self.start

        def duration_ns(self):
            return self.duration

        def device_type(self):
            return self.kind

    class Prof:
        class profiler:
            class kineto_results:
                @staticmethod
                def events():  # a host op spanning 0..100; device work 10..30 and 20..40 overlap, 60..70 apart
                    return [Event(0, 100, DeviceType.CPU), Event(10, 20, DeviceType.CUDA),
                            Event(20, 20, DeviceType.CUDA), Event(60, 10, DeviceType.CUDA)]

    busy = profile_forward.device_busy(Prof, cuda=True)
    assert busy["busy_fraction"] == pytest.approx(0.4) and busy["events"] == 3
    assert profile_forward.device_busy(Prof, cuda=False)["busy_fraction"] == 1.0


def test_gpu_run_marker_detection(tmp_path):
    (tmp_path / "setup.cfg").write_text("[tool:pytest]\nmarkers =\n    slow: slow tests\n")
    assert not gpu_run.gpu_marker_registered(tmp_path)
    (tmp_path / "setup.cfg").write_text("[tool:pytest]\nmarkers =\n    slow: slow tests\n    gpu: needs CUDA\n")
    assert gpu_run.gpu_marker_registered(tmp_path)


def test_gpu_run_stage_errors_and_time_limits_are_recorded(tmp_path):
    """A failing stage gives its last output line; one past its limit is killed and keeps the
    JSON it wrote so far."""
    fail = gpu_run.Stage("fail", ("-c", "import sys; print('working'); sys.exit('broke: no GPU')"), 30)
    entry = gpu_run.run_stage(fail, 30, tmp_path)
    assert entry["status"] == "error" and entry["error"] == "broke: no GPU" and entry["returncode"] == 1
    assert "working" in entry["log"]
    slow = gpu_run.Stage("slow", ("-c", "import json, sys, time; open(sys.argv[2], 'w').write(json.dumps({'rows': [1]}));"
                                  " time.sleep(60)"), 60)
    entry = gpu_run.run_stage(slow, 3, tmp_path)
    assert entry["status"] == "timeout" and entry["seconds"] < 30 and entry["record"] == {"rows": [1]}
    ok = gpu_run.Stage("ok", ("-c", "import json, sys; open(sys.argv[2], 'w').write(json.dumps({'x': 2.5}))"), 30)
    entry = gpu_run.run_stage(ok, 30, tmp_path)
    assert entry["status"] == "ok" and entry["record"] == {"x": 2.5}


@pytest.mark.slow
def test_gpu_run_smoke(tmp_path):
    """The whole GPU session's run, every stage tiny on the CPU, through gpu_run.sh."""
    import os

    env = dict(os.environ, PYTHON=sys.executable, OUT=str(tmp_path / "out"))
    proc = subprocess.run(["bash", str(BENCH / "gpu_run.sh"), "--smoke"], capture_output=True, text=True,
                          timeout=900, env=env)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    record = json.loads((tmp_path / "out" / "gpu_run.json").read_text())
    assert (tmp_path / "out" / "gpu_run.log").stat().st_size > 0
    stages = {s["name"]: s for s in record["stages"]}
    assert list(stages) == ["tests", "throughput", "levers", "profile", "train", "train_levers", "batch",
                            "levers_compile"]
    assert record["device"].startswith("cpu: ")
    for s in stages.values():
        assert s["device"] == record["device"] and s["status"] in ("ok", "failed", "error", "timeout"), s["name"]
        assert s["status"] == "ok" or s["error"], s["name"]  # a stage that did not finish says why
        assert isinstance(s["record"], dict) and s["record"]["device"], s["name"]
    assert stages["tests"]["record"]["tests"] >= 1  # test_degrade's CUDA test, skipped here
    assert all(r["mpix_per_s"] > 0 for r in stages["throughput"]["record"]["results"])
    assert all(r["mpix_per_s"] > 0 for r in stages["levers"]["record"]["levers"])
    compiled = {r["id"]: r for r in stages["levers_compile"]["record"]["levers"]}
    assert {"compile", "compile-reduce-overhead", "compile-max-autotune"} <= set(compiled)
    assert all(r.get("mpix_per_s", 0) > 0 or r["error"] for r in compiled.values())
    assert 0 < stages["profile"]["record"]["busy"]["busy_fraction"] <= 1
    ladder = stages["train_levers"]["record"]["results"]
    assert len(ladder) == 2 * 5 and all(r["steps_per_s"] > 0 for r in ladder)  # no CUDA graph row on the CPU
    assert all(r["images_per_s"] > 0 for r in stages["batch"]["record"]["runs"])
    assert "SUMMARY" in proc.stdout and "levers_compile" in proc.stdout.split("SUMMARY")[-1]

def test_self_ensemble_smoke(tmp_path):
    stdout, record = _smoke("self_ensemble", tmp_path)
    assert "GAIN photos (3 img): psnr_y " in stdout and "COST forward wall x" in stdout
    (row,) = record["results"]
    assert row["n_images"] == 3 and set(row["gain"]) == {"psnr_y", "ssim_y"}
    assert row["gain"]["psnr_y"] == pytest.approx(row["self_ensemble"]["psnr_y"] - row["plain"]["psnr_y"])
    assert row["gain"]["psnr_y"] != 0  # the ensembled model scores differently
    assert record["cost"]["forward_cpu_ratio"] > 2  # 8 passes instead of 1
