"""Shared fixtures: tiny models, synthetic images, the shared datasets folder."""

from pathlib import Path

import numpy as np
import pytest
import torch

from srgan.models import Generator, GeneratorConfig

SHARED = Path(__file__).resolve().parents[1].parent / "shared" / "datasets"


def shared_dataset(name: str) -> Path:
    """Path to a set in ../shared/datasets, or skip the test with the reason."""
    path = SHARED / name
    if not path.is_dir():
        pytest.skip(f"shared dataset {name} not found at {path} (CI clones ../shared beside the repo)")
    return path


@pytest.fixture(autouse=True)
def _seed():
    torch.manual_seed(0)
    np.random.seed(0)


@pytest.fixture
def tiny_config():
    return GeneratorConfig(scale=2, channels=8, blocks=1)


@pytest.fixture
def tiny_generator(tiny_config):
    return Generator(tiny_config).eval()
