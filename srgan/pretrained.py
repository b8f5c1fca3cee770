"""The embedded models in ``srgan/weights/``: what ``srgan models`` lists.

A model is embedded by dropping ``<name>.safetensors`` (an srgan model file: weights plus
config, normalisation, preset and training summary in its metadata) into ``srgan/weights/``,
with its model card ``<name>.md`` and, optionally, its scores ``<name>.eval.json`` written by
``srgan eval --model <name> --hr ... --json srgan/weights/<name>.eval.json``.

``MODELS`` is a plain dict of what the metadata cannot say: a one-line summary and the
training data in words. Files in the folder but not in the dict are listed too.
"""

from __future__ import annotations

import json
import warnings
from dataclasses import dataclass
from pathlib import Path

from srgan import checkpoint
from srgan.checkpoint import ModelInfo, read_model_info
from srgan.errors import ConfigError

MODELS: dict[str, dict[str, str]] = {
    "photo-x4": {
        "summary": "SRResNet x4 for photos (16 blocks, 64 channels, no BatchNorm), pixel (L1) loss, bicubic degradation",
        "data": "T91 + BSD200 + General100 (50 of 100) from ../shared/datasets, the training sets",
    },
    "photo-x2": {
        "summary": "SRResNet x2 for photos (16 blocks, 64 channels, no BatchNorm), started from photo-x4's trunk, "
                   "pixel (L1) loss, bicubic degradation, trained on the CPU",
        "data": "T91 + BSD200 + General100 (50 of 100) from ../shared/datasets, the training sets",
    },
    "photo-x4-real": {
        "summary": "photo-x4 fine-tuned for real-world photos: the photo preset (blur, resize, noise, JPEG)",
        "data": "T91 + BSD200 + General100 (50 of 100) from ../shared/datasets, the training sets",
    },
    "galaxy-x4": {
        "summary": "x4 for single-channel astronomical images (FITS): 8 blocks, 32 channels, astro degradation, asinh input",
        "data": "256 synthetic galaxies (srgan make-galaxies --n 256 --size 128 --seed 1) + 70 of the 85 real "
                "galaxy FITS in ../shared/datasets/galaxies-fits (15 held out by object for evaluation: "
                "benchmarks/galaxy-heldout.txt)",
    },
    "galaxy-x2": {
        "summary": "x2 for single-channel astronomical images (FITS): galaxy-x4's architecture and data at x2, "
                   "trained on the CPU",
        "data": "256 synthetic galaxies (srgan make-galaxies --n 256 --size 128 --seed 1) + 70 of the 85 real "
                "galaxy FITS in ../shared/datasets/galaxies-fits (the 15 of benchmarks/galaxy-heldout.txt held "
                "out by object for evaluation, as for galaxy-x4)",
    },
}


# The model `srgan upscale` uses for an input kind ("photo" or "fits") at a scale; the x4 one
# when no --scale is given.
DEFAULTS: dict[tuple[str, int], str] = {
    ("photo", 4): "photo-x4",
    ("photo", 2): "photo-x2",
    ("fits", 4): "galaxy-x4",
    ("fits", 2): "galaxy-x2",
}
DEFAULT_SCALE = 4


def default_model(kind: str, scale: int | None = None) -> str:
    """The embedded model for ``kind`` ("photo" or "fits") at ``scale`` (None: x4).

    Raises ConfigError, naming the scales there are, when no embedded model of that scale
    fits the input kind.
    """
    scale = DEFAULT_SCALE if scale is None else scale
    if (kind, scale) in DEFAULTS:
        return DEFAULTS[(kind, scale)]
    have = ", ".join(f"x{s}" for k, s in sorted(DEFAULTS) if k == kind) or "none"
    raise ConfigError(f"no embedded {kind} model at x{scale} (embedded {kind} scales: {have}); "
                      f"pass a x{scale} model file with --model, or leave out --scale")


@dataclass
class EmbeddedModel:
    name: str
    path: Path
    info: ModelInfo
    parameters: int
    summary: str  # from MODELS, "" when the file is not described there
    data: str  # training data in words (MODELS), else the file's training metadata
    scores: dict | None  # the <name>.eval.json report, None when absent or unreadable
    scores_stale: bool  # True when the scores were measured on other weights (sha256 differs)
    card: Path | None  # <name>.md when present


def eval_path(model_path) -> Path:
    """``<dir>/<name>.eval.json`` next to ``<dir>/<name>.safetensors``."""
    model_path = Path(model_path)
    return model_path.with_name(model_path.stem + ".eval.json")


def _parameters(info: ModelInfo) -> int:
    from srgan.models import Generator, count_parameters

    return count_parameters(Generator(info.config))


def _read_scores(path: Path) -> dict | None:
    if not path.is_file():
        return None
    try:
        scores = json.loads(path.read_text())
        if not isinstance(scores, dict) or not isinstance(scores.get("datasets"), list):
            raise ValueError("no 'datasets' list")
        return scores
    except (OSError, ValueError) as e:
        warnings.warn(f"ignoring {path}: not an `srgan eval --json` report ({e})", stacklevel=3)
        return None


def _data_words(name: str, info: ModelInfo) -> str:
    if name in MODELS and MODELS[name].get("data"):
        return MODELS[name]["data"]
    t = info.training
    if not t:
        return "not recorded"
    parts = [str(t.get("data", "?"))]
    if "images" in t:
        parts.append(f"{t['images']} images")
    if "steps" in t:
        parts.append(f"{t['steps']} steps")
    return ", ".join(parts)


def embedded_models(weights_dir=None) -> list[EmbeddedModel]:
    """Every ``*.safetensors`` model in ``weights_dir`` (default: the package's ``srgan/weights``).

    An empty or missing folder gives an empty list. Unreadable model files raise ModelError.
    """
    folder = Path(weights_dir) if weights_dir is not None else checkpoint.WEIGHTS_DIR
    if not folder.is_dir():
        return []
    models = []
    for path in sorted(folder.glob("*.safetensors")):
        info = read_model_info(path)
        scores = _read_scores(eval_path(path))
        stale = bool(scores and scores.get("model_sha256") not in (None, info.sha256))
        card = path.with_suffix(".md")
        models.append(EmbeddedModel(
            name=path.stem, path=path, info=info, parameters=_parameters(info),
            summary=MODELS.get(path.stem, {}).get("summary", ""), data=_data_words(path.stem, info),
            scores=scores, scores_stale=stale, card=card if card.is_file() else None,
        ))
    return models
