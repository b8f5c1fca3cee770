"""Model files and training checkpoints, in safetensors: loading never unpickles code.

A *model file* (``*.safetensors``) holds a generator's weights and, in the file's metadata,
everything needed to rebuild and use it: the GeneratorConfig, the input Normalization, the
degradation preset it was trained for and a summary of its training. ``load_model(path)``
therefore needs no flags.

A *training checkpoint* holds the whole training state (generator, discriminator,
optimisers, schedulers, step, RNG states): nested dicts are flattened into named tensors
plus a JSON skeleton in the metadata, so it is plain data too.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass, field
from pathlib import Path

import torch
from safetensors import safe_open
from safetensors.torch import save_file

from srgan.atomic import atomic_write
from srgan.errors import ModelError
from srgan.models import Generator, GeneratorConfig
from srgan.normalize import Normalization

MODEL_FORMAT = "srgan-generator/1"
STATE_FORMAT = "srgan-training-state/1"
WEIGHTS_DIR = Path(__file__).parent / "weights"


@dataclass
class ModelInfo:
    """What a model file says about itself."""

    config: GeneratorConfig
    normalization: Normalization = Normalization()
    preset: str = "bicubic"  # the degradation the model was trained to invert
    training: dict = field(default_factory=dict)  # data summary, steps, command, ...
    name: str = ""  # embedded model name or file stem
    sha256: str = ""  # of the model file, to record provenance (FITS HISTORY, model cards)


def file_sha256(path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def save_model(path, generator: Generator, *, normalization: Normalization = Normalization(),
               preset: str = "bicubic", training: dict | None = None) -> None:
    """Write the generator's weights and self-description to ``path`` atomically."""
    tensors = {k: v.detach().cpu().contiguous() for k, v in generator.state_dict().items()}
    metadata = {
        "format": MODEL_FORMAT,
        "config": json.dumps(generator.config.to_dict()),
        "normalization": json.dumps(normalization.to_dict()),
        "preset": preset,
        "training": json.dumps(training or {}),
    }
    atomic_write(path, lambda tmp: save_file(tensors, tmp, metadata=metadata))


MODEL_SUFFIXES = (".safetensors", ".pth", ".ckpt", ".pt")  # .pth/.ckpt/.pt: community models (srgan.community)


def resolve_model_path(name_or_path) -> Path:
    """An embedded model name (``photo-x4``) or a path to a model file (``.safetensors``;
    community models also ``.pth``, ``.ckpt``, ``.pt``)."""
    path = Path(name_or_path)
    if path.suffix.lower() in MODEL_SUFFIXES or path.exists():
        if not path.is_file():
            raise ModelError(f"model file not found: {path}")
        return path
    embedded = WEIGHTS_DIR / f"{name_or_path}.safetensors"
    if embedded.is_file():
        return embedded
    names = sorted(p.stem for p in WEIGHTS_DIR.glob("*.safetensors"))
    raise ModelError(
        f"unknown model {str(name_or_path)!r}: give a path to a model file (.safetensors, or .pth with srgan[community]) "
        f"or one of the embedded models: {', '.join(names) or '(none installed)'}"
    )


def read_model_info(name_or_path) -> ModelInfo:
    """Read a model file's metadata without loading its weights."""
    path = resolve_model_path(name_or_path)
    try:
        with safe_open(str(path), framework="pt") as f:
            meta = f.metadata() or {}
    except Exception as e:  # safetensors raises several types for corrupt files
        if _is_pickle(path):
            raise ModelError(pickle_message(path)) from None
        raise ModelError(f"{path} is not a readable safetensors model file: {e}") from e
    if meta.get("format") != MODEL_FORMAT:
        raise ModelError(
            f"{path} is not an srgan model file (format {meta.get('format')!r}, expected "
            f"{MODEL_FORMAT!r}); training checkpoints are exported with `srgan train`'s model.safetensors"
        )
    try:
        config = GeneratorConfig.from_dict(_json_field(meta, "config", None))
        normalization = Normalization.from_dict(_json_field(meta, "normalization", "{}"))
        training = _json_field(meta, "training", "{}")
    except ModelError as e:
        raise ModelError(f"{path}: {e}; the file is damaged or was edited: re-export it with `srgan train`") from None
    except (TypeError, ValueError, KeyError) as e:
        raise ModelError(f"{path}: its metadata does not describe an srgan model ({type(e).__name__}: {e}); "
                         "the file is damaged or was edited: re-export it with `srgan train`") from None
    return ModelInfo(config=config, normalization=normalization, preset=meta.get("preset", "bicubic"),
                     training=training, name=path.stem, sha256=file_sha256(path))


def _json_field(meta: dict, key: str, default: str | None):
    """One JSON metadata field of a model file (ModelError naming it when missing or malformed)."""
    text = meta.get(key, default)
    if text is None:
        raise ModelError(f"metadata field {key!r} is missing")
    try:
        return json.loads(text)
    except ValueError as e:
        raise ModelError(f"metadata field {key!r} is not valid JSON ({e})") from None


def _is_pickle(path: Path) -> bool:
    """Whether a file looks like a PyTorch save (a zip archive or a bare pickle), whatever its suffix."""
    try:
        with open(path, "rb") as f:
            head = f.read(4)
    except OSError:
        return False
    return head.startswith(b"PK\x03\x04") or head[:1] == b"\x80"


def pickle_message(path: Path) -> str:
    """Why a PyTorch pickle is not an srgan model file, and the two ways forward."""
    return (f"{path} is a PyTorch pickle file (torch.save), not a safetensors file: srgan never unpickles "
            "its own model files (a pickle can run code). A community model (ESRGAN, Real-ESRGAN, ...) "
            "saved as .pth loads weights-only with --model FILE.pth (pip install 'srgan[community]'), "
            "or convert it once: python -c \"from srgan.community import convert_to_safetensors as c; "
            f"c('{path}', '{path.with_suffix('.safetensors').name}')\" (README: Community models)")


def check_finite_weights(state: dict, path) -> None:
    """Refuse weights holding NaN or infinity: they give black or NaN images, never an error."""
    bad = [k for k, v in state.items() if v.is_floating_point() and not torch.isfinite(v).all()]
    if bad:
        raise ModelError(f"{path}: {len(bad)} weight tensor(s) hold NaN or infinite values ({bad[0]}, ...); "
                         "the model is broken (a diverged training run?): use another --model")


def load_model(name_or_path, device="cpu") -> Generator:
    """Rebuild a generator from a model file or embedded name, in eval mode.

    The returned module carries its :class:`ModelInfo` as ``generator.info``. A model file
    from another project (a ``.pth``/``.ckpt``/``.pt`` pickle, or a ``.safetensors`` file that
    is not an srgan file) is loaded weights-only by :func:`srgan.community.load_community_model`
    (needs ``pip install 'srgan[community]'``) and comes back as a ``CommunityModel``.
    """
    from safetensors.torch import load_file

    from srgan import community  # community hook: needs no spandrel until a community file is loaded

    path = resolve_model_path(name_or_path)
    if community.is_community_file(path):
        return community.load_community_model(path, device=device)
    info = read_model_info(name_or_path)
    generator = Generator(info.config)
    state = load_file(str(path), device="cpu")
    check_finite_weights(state, path)
    try:
        generator.load_state_dict(state)
    except RuntimeError as e:
        raise ModelError(f"{path}: weights do not match its config {info.config}: {e}") from e
    generator.info = info
    return generator.to(device).eval()


# --- training checkpoints -------------------------------------------------------------


def _flatten(obj, prefix, tensors):
    """Replace tensors in a nested structure by references, collecting them in ``tensors``."""
    if isinstance(obj, torch.Tensor):
        key = prefix or "_"
        tensors[key] = obj.detach().cpu().contiguous()
        return {"__tensor__": key}
    if isinstance(obj, dict):
        return {"__dict__": [[_flatten(k, f"{prefix}.k{i}", tensors), _flatten(v, f"{prefix}.{i}", tensors)]
                             for i, (k, v) in enumerate(obj.items())]}
    if isinstance(obj, (list, tuple)):
        kind = "__list__" if isinstance(obj, list) else "__tuple__"
        return {kind: [_flatten(v, f"{prefix}.{i}", tensors) for i, v in enumerate(obj)]}
    if obj is None or isinstance(obj, (bool, int, float, str)):
        return obj
    raise TypeError(f"cannot store {type(obj).__name__} in a training checkpoint")


def _unflatten(obj, tensors):
    if isinstance(obj, dict):
        if "__tensor__" in obj:
            return tensors[obj["__tensor__"]]
        if "__dict__" in obj:
            return {_unflatten(k, tensors): _unflatten(v, tensors) for k, v in obj["__dict__"]}
        if "__list__" in obj:
            return [_unflatten(v, tensors) for v in obj["__list__"]]
        if "__tuple__" in obj:
            return tuple(_unflatten(v, tensors) for v in obj["__tuple__"])
    return obj


def save_state(path, state: dict) -> None:
    """Atomically save a nested dict of tensors and plain values (a training checkpoint)."""
    tensors: dict[str, torch.Tensor] = {}
    skeleton = _flatten(state, "s", tensors)
    metadata = {"format": STATE_FORMAT, "skeleton": json.dumps(skeleton)}
    atomic_write(path, lambda tmp: save_file(tensors, tmp, metadata=metadata))


def load_state(path) -> dict:
    """Inverse of :func:`save_state`; tensors come back on the CPU."""
    from safetensors.torch import load_file

    try:
        with safe_open(str(path), framework="pt") as f:
            meta = f.metadata() or {}
        tensors = load_file(str(path), device="cpu")
    except Exception as e:
        raise ModelError(f"{path} is not a readable training checkpoint: {e}") from e
    if meta.get("format") != STATE_FORMAT:
        raise ModelError(f"{path} is not an srgan training checkpoint (format {meta.get('format')!r})")
    return _unflatten(json.loads(meta["skeleton"]), tensors)
