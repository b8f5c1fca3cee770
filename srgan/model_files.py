"""Model files a user owns, described for ``srgan models PATH...``: srgan files and community files.

A path is a model file or a folder searched (not recursively) for ``*.safetensors`` and
PyTorch files (``.pth``, ``.ckpt``, ``.pt``). srgan files are described from their metadata;
community files are loaded weights-only through :mod:`srgan.community` (spandrel), so an
unsafe, unknown or broken file is reported as one line instead of listed.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from srgan.community import PICKLE_SUFFIXES, is_community_file
from srgan.errors import InputError, SrganError

MODEL_SUFFIXES = (".safetensors", *PICKLE_SUFFIXES)


@dataclass
class ModelFile:
    path: Path
    family: str  # "srgan" or "community"
    architecture: str  # "SRResNet" for srgan files, spandrel's id for community files
    scale: int
    in_channels: int
    out_channels: int
    parameters: int
    detail: str  # srgan: preset and normalisation; community: tags, size rules, precision


def model_paths(paths) -> list[Path]:
    """The model files among ``paths`` (files as given, folders' model files, sorted).

    Raises InputError for a path that does not exist.
    """
    found = []
    for p in map(Path, paths):
        if not p.exists():
            raise InputError(f"{p} does not exist")
        if p.is_dir():
            found += sorted(f for f in p.iterdir() if f.is_file() and f.suffix.lower() in MODEL_SUFFIXES
                            and not f.name.startswith("."))
        else:
            found.append(p)
    return found


def describe(path) -> ModelFile:
    """Read one model file (weights-only for community files). Raises SrganError subclasses."""
    from srgan.models import count_parameters

    path = Path(path)
    if is_community_file(path):
        from srgan.community import load_community_model

        m = load_community_model(path)
        c = m.config
        precision = "/".join(p for p, ok in (("fp16", c.supports_fp16), ("bf16", c.supports_bf16)) if ok) or "fp32 only"
        sizes = f"input padded to a multiple of {c.multiple_of}" if c.multiple_of > 1 else "any input size"
        tags = f"tags {', '.join(c.tags)}; " if c.tags else ""
        return ModelFile(path, "community", c.architecture, c.scale, c.in_channels, c.out_channels,
                         count_parameters(m.net), f"{tags}{sizes}; half precision: {precision}")
    from srgan.checkpoint import read_model_info
    from srgan.models import Generator

    info = read_model_info(path)
    c = info.config
    return ModelFile(path, "srgan", "SRResNet", c.scale, c.in_channels, c.out_channels,
                     count_parameters(Generator(c)),
                     f"preset {info.preset}, normalization {info.normalization.kind}")


def describe_all(paths) -> list[tuple[Path, ModelFile | SrganError]]:
    """(path, ModelFile or the error that file raised) for every model file under ``paths``."""
    out = []
    for p in model_paths(paths):
        try:
            out.append((p, describe(p)))
        except SrganError as e:
            out.append((p, e))
    return out
