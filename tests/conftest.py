"""Shared fixtures: device/dtype (--device, --dtype), tiny models, seeding, one-thread runs.

``pytest --device cuda --dtype float64`` runs the tests that take the ``device``/``dtype``
fixtures there (default: cpu, float32), as kornia's test suite does. Tests marked ``gpu`` are
skipped when torch sees no CUDA device; tests marked ``slow`` are the long subprocess ones
(``pytest -m "not slow"`` leaves them out). Plain helpers are in tests/helpers.py.
"""

import numpy as np
import pytest
import torch

from srgan.checkpoint import save_model
from srgan.models import Generator, GeneratorConfig
from srgan.normalize import Normalization

DTYPES = {"float16": torch.float16, "bfloat16": torch.bfloat16, "float32": torch.float32, "float64": torch.float64}
TINY = dict(scale=2, channels=8, blocks=1)  # 8,059 parameters: milliseconds per call on a CPU


def pytest_addoption(parser):
    group = parser.getgroup("srgan")
    group.addoption("--device", default="cpu",
                    help="torch device for tests taking the `device` fixture: cpu, cuda, cuda:1 (default: cpu)")
    group.addoption("--dtype", default="float32", choices=sorted(DTYPES),
                    help="floating dtype for tests taking the `dtype` fixture (default: float32)")


def pytest_configure(config):
    device = torch.device(config.getoption("--device"))
    if device.type == "cuda" and not torch.cuda.is_available():
        raise pytest.UsageError(f"--device {device}: torch sees no CUDA device")


def pytest_collection_modifyitems(config, items):
    if torch.cuda.is_available():
        return
    skip = pytest.mark.skip(reason="needs a CUDA GPU (torch sees none)")
    for item in items:
        if "gpu" in item.keywords:
            item.add_marker(skip)


@pytest.fixture(scope="session")
def device(request) -> torch.device:
    return torch.device(request.config.getoption("--device"))


@pytest.fixture(scope="session")
def dtype(request) -> torch.dtype:
    return DTYPES[request.config.getoption("--dtype")]


@pytest.fixture(autouse=True)
def _seed():
    torch.manual_seed(0)
    np.random.seed(0)


@pytest.fixture
def one_thread():
    """Tiny models run as fast on one thread, and never stall in OpenMP spin-waits on a busy machine."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


@pytest.fixture(scope="session")
def make_generator():
    """Factory of tiny generators, in eval mode on the CPU in float32 (tests move them).

    ``make_generator(**config)`` is ``Generator(GeneratorConfig(**config))`` with the tiny
    defaults x2, 8 channels, 1 block filled in; pass what a test depends on explicitly.
    Session-scoped (it holds no state) so that module-scoped fixtures can build with it too.
    """
    def make(**config) -> Generator:
        return Generator(GeneratorConfig(**{**TINY, **config})).eval()
    return make


@pytest.fixture(scope="session")
def make_model_file(make_generator):
    """Factory of tiny model files: ``make_model_file(path, normalization=, preset=, **config)``
    saves ``make_generator(**config)`` with :func:`srgan.checkpoint.save_model` and returns ``path``."""
    def make(path, *, normalization: Normalization = Normalization(), preset: str = "bicubic", **config):
        save_model(path, make_generator(**config), normalization=normalization, preset=preset)
        return path
    return make


@pytest.fixture
def tiny_config():
    return GeneratorConfig(**TINY)


@pytest.fixture
def tiny_generator(make_generator):
    return make_generator()
