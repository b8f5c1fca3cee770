"""srgan.device.resolve_device: names, LOCAL_RANK under torchrun, no silent CPU fallback."""

import pytest
import torch

import srgan.upscale
from srgan.device import resolve_device
from srgan.errors import ConfigError


@pytest.fixture
def no_cuda(monkeypatch):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)


@pytest.fixture
def two_gpus(monkeypatch):
    """A machine with two CUDA devices, as far as resolve_device can tell (no GPU needed)."""
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "device_count", lambda: 2)
    monkeypatch.delenv("LOCAL_RANK", raising=False)


def test_cpu_and_auto_without_cuda(no_cuda):
    assert resolve_device("cpu") == resolve_device(torch.device("cpu")) == torch.device("cpu")
    assert resolve_device("auto") == resolve_device() == torch.device("cpu")


def test_cuda_without_cuda_is_an_error_naming_the_fix(no_cuda):
    for name in ("cuda", "cuda:1"):
        with pytest.raises(ConfigError, match=f"--device {name}: CUDA is not available here; use --device cpu"):
            resolve_device(name)


def test_unknown_name():
    with pytest.raises(ConfigError, match="unknown device 'tpu9': use --device auto, cpu, cuda or cuda:N"):
        resolve_device("tpu9")


def test_auto_and_cuda_pick_cuda_local_rank(two_gpus, monkeypatch):
    assert resolve_device("auto") == resolve_device("cuda") == torch.device("cuda:0")  # LOCAL_RANK unset
    monkeypatch.setenv("LOCAL_RANK", "1")  # torchrun's second process on this machine
    assert resolve_device("auto") == resolve_device("cuda") == torch.device("cuda:1")
    assert resolve_device("cuda", local_rank=0) == torch.device("cuda:0")  # an explicit rank wins
    assert resolve_device("cuda:0") == torch.device("cuda:0")  # an explicit index is taken as given
    assert resolve_device("cpu") == torch.device("cpu")


def test_more_processes_or_indices_than_gpus_is_an_error(two_gpus, monkeypatch):
    monkeypatch.setenv("LOCAL_RANK", "2")
    with pytest.raises(ConfigError, match=r"LOCAL_RANK is 2 but this machine has 2 CUDA device\(s\)"):
        resolve_device("auto")
    with pytest.raises(ConfigError, match=r"--device cuda:5 but this machine has 2 CUDA device\(s\): use --device "
                                          r"cuda:0 to 1, or start at most 2 processes per machine"):
        resolve_device("cuda:5")


def test_upscale_and_training_share_it():
    import srgan.train

    assert srgan.upscale.resolve_device is srgan.train.resolve_device is resolve_device


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")
def test_real_gpu():
    assert resolve_device("cuda") == torch.device("cuda:0") and resolve_device("auto").type == "cuda"
    torch.zeros(1, device=resolve_device("auto"))
