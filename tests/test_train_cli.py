"""`srgan train` on the command line: help, errors, resume, kill -9, torchrun/DDP with gloo."""

import os
import signal
import subprocess
import sys
import time

import pytest
import torch
from click.testing import CliRunner
from helpers import make_photos

from srgan.checkpoint import load_model, load_state
from srgan.cli import main
from srgan.train import TrainConfig, fit

TINY = ["--scale", "2", "--blocks", "1", "--channels", "8", "--batch-size", "2", "--patch-size", "16",
        "--device", "cpu", "--no-progress", "--log-every", "1", "--seed", "3"]
ENV = dict(os.environ, OMP_NUM_THREADS="1", OMP_WAIT_POLICY="PASSIVE", PYTHONWARNINGS="ignore")
pytestmark = pytest.mark.usefixtures("one_thread")


@pytest.fixture(scope="module")
def data(tmp_path_factory):
    root = tmp_path_factory.mktemp("cli")
    return make_photos(root / "train", 4, size=32), make_photos(root / "val", 1, size=32, seed=1)


def test_help_lists_every_option():
    result = CliRunner().invoke(main, ["train", "--help"])
    assert result.exit_code == 0
    for option in ("--hr", "--out", "--scale", "--preset", "--pretrain-steps", "--gan-steps", "--batch-size",
                   "--patch-size", "--blocks", "--channels", "--val", "--resume", "--vgg-weights", "--device",
                   "--seed", "--init", "--gan-loss", "--content-loss", "--schedule", "--amp", "--workers",
                   "--checkpoint-every", "--val-every", "Example"):
        assert option in result.output, option
    assert "default: 96;" in result.output and "[default: bce]" in result.output


def test_train_then_resume_from_the_stored_config(tmp_path, data):
    hr, val = data
    runner = CliRunner()
    out = tmp_path / "run"
    result = runner.invoke(main, ["train", "--hr", str(hr), "--val", str(val), "--out", str(out),
                                  "--pretrain-steps", "2", *TINY])
    assert result.exit_code == 0, result.output
    assert f"model: {out / 'model.safetensors'}" in result.output
    assert "--pretrain-steps 2" in load_model(out / "model.safetensors").info.training["command"]
    # --resume needs only --out; the architecture and data come from the checkpoint
    result = runner.invoke(main, ["train", "--out", str(out), "--resume", "--pretrain-steps", "3", "--no-progress"])
    assert result.exit_code == 0, result.output
    state = load_state(out / "checkpoint.safetensors")
    assert state["step"] == 3 and state["config"]["channels"] == 8 and state["config"]["batch_size"] == 2


def test_errors_are_one_line(tmp_path, data, make_model_file):
    hr, _ = data
    runner = CliRunner()
    result = runner.invoke(main, ["train", "--out", str(tmp_path / "none"), "--resume"])
    assert result.exit_code == 1 and result.output.startswith("Error: --resume: no checkpoint")
    result = runner.invoke(main, ["train", "--out", str(tmp_path / "x")])
    assert result.exit_code == 2 and "--hr" in result.output
    make_model_file(tmp_path / "m.safetensors", scale=2, channels=8, blocks=1)
    result = runner.invoke(main, ["train", "--hr", str(hr), "--out", str(tmp_path / "y"), "--init",
                                  str(tmp_path / "m.safetensors"), "--blocks", "3", "--pretrain-steps", "1"])
    assert result.exit_code == 1 and "Error: --init" in result.output and "--blocks 3 (model has 1)" in result.output
    result = runner.invoke(main, ["train", "--hr", str(hr), "--out", str(tmp_path / "z"), "--init", "no-such-model"])
    assert result.exit_code == 1 and "Error: unknown model 'no-such-model'" in result.output


@pytest.mark.slow
def test_kill_9_leaves_a_checkpoint_that_resumes_exactly(tmp_path, data):
    hr, val = data
    steps = 40
    args = ["--hr", str(hr), "--val", str(val), "--pretrain-steps", str(steps), "--checkpoint-every", "1", *TINY]
    out = tmp_path / "killed"
    same_threads = dict(ENV, OMP_NUM_THREADS=str(torch.get_num_threads()))  # bit-exact needs the same threads
    proc = subprocess.Popen([sys.executable, "-m", "srgan.cli", "train", "--out", str(out), *args], env=same_threads,
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    ckpt = out / "checkpoint.safetensors"
    deadline = time.time() + 120
    while not ckpt.exists() and proc.poll() is None and time.time() < deadline:
        time.sleep(0.02)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    killed_at = load_state(ckpt)["step"]  # readable: written atomically
    assert 1 <= killed_at < steps  # killed mid-run
    config = TrainConfig(hr=str(hr), val=str(val), out=str(out), scale=2, blocks=1, channels=8, batch_size=2,
                         patch_size=16, pretrain_steps=steps, checkpoint_every=1, log_every=1, seed=3,
                         device="cpu", progress=False, resume=True)
    fit(config)
    straight = fit(TrainConfig(**{**config.__dict__, "out": str(tmp_path / "straight"), "resume": False}))
    a, b = load_state(ckpt), load_state(straight / "checkpoint.safetensors")
    assert a["step"] == b["step"] == steps
    for k in a["generator"]:
        assert torch.equal(a["generator"][k], b["generator"][k]), k


@pytest.mark.slow
def test_torchrun_ddp_two_gloo_processes(tmp_path, data):
    hr, val = data
    out = tmp_path / "ddp"
    common = ["--hr", str(hr), "--val", str(val), "--pretrain-steps", "2", "--gan-steps", "2",
              "--content-loss", "mse", "--no-batch-norm", *TINY]
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc-per-node", "2",
           "-m", "srgan.cli", "train", "--out", str(out), *common]
    result = subprocess.run(cmd, env=ENV, capture_output=True, text=True, timeout=180)
    assert result.returncode == 0, result.stderr[-3000:]
    state = load_state(out / "checkpoint.safetensors")
    assert state["step"] == 4 and state["discriminator"] is not None
    assert load_model(out / "model.safetensors").info.training["world_size"] == 2
    steps = [line for line in (out / "metrics.jsonl").read_text().splitlines() if '"phase"' in line]
    assert len(steps) == 4  # rank 0 alone writes
    # rank 1's batches reached rank 0's weights through the gradient all-reduce
    single = fit(TrainConfig(hr=str(hr), val=str(val), out=str(tmp_path / "single"), scale=2, blocks=1, channels=8,
                             batch_size=2, patch_size=16, pretrain_steps=2, gan_steps=2, content_loss="mse",
                             batch_norm=False, seed=3, device="cpu", progress=False))
    one = load_state(single / "checkpoint.safetensors")
    assert any(not torch.equal(state["generator"][k], one["generator"][k]) for k in one["generator"])
    assert any(not torch.equal(state["discriminator"][k], one["discriminator"][k]) for k in one["discriminator"])
