"""Community super-resolution models (ESRGAN, Real-ESRGAN, SwinIR, HAT, DAT, ...) through spandrel.

People already own model files from other projects. spandrel (the loader chaiNNer uses; an
optional extra, ``pip install 'srgan[community]'``) recognises the architecture and its
hyper-parameters from a state dict; this module reads the file *weights-only*, asks spandrel
to build the network, checks that it is a single-image super-resolution model srgan can run,
and wraps it in :class:`CommunityModel`, a module with the call contract of srgan's
:class:`~srgan.models.Generator` as the tiled engine uses it: (B, C, h, w) float RGB in
[0, 1] -> (B, C, h*scale, w*scale) in [0, 1], any h and w.

Pickle safety: ``.pth``/``.ckpt``/``.pt`` files are read only by
``torch.load(weights_only=True)``, which unpickles tensors and plain containers and refuses
any other global, so code hidden in a file (a ``__reduce__`` that writes a file, say) is
never run; spandrel's own loader is not used for files. TorchScript archives (code) are
refused. ``.safetensors`` files hold no code at all.

What the engine needs comes from spandrel's descriptor, in :class:`CommunityConfig`: the
scale (1, 2, 3, 4 or 8), the channel counts, the size requirements (inputs padded to a
multiple of the window size or to a minimum size by reflection, outputs cropped back; see
:func:`pad_to_requirements`), the fp16/bf16 support flags (:func:`community_precision`) and
a default tile overlap for the architecture's family (measured by
``benchmarks/community_seams.py``, figures in the README).
"""

from __future__ import annotations

import math
import pickle
import re
import warnings
from dataclasses import asdict, dataclass
from pathlib import Path

import torch
from torch import nn

from srgan.checkpoint import MODEL_FORMAT, STATE_FORMAT, ModelInfo, atomic_write, file_sha256
from srgan.errors import ConfigError, ModelError
from srgan.normalize import Normalization
from srgan.tiling import reflect_index

INSTALL = "pip install 'srgan[community]'"
PICKLE_SUFFIXES = (".pth", ".ckpt", ".pt")
SCALES = (1, 2, 3, 4, 8)
CONVERTED_FORMAT = "srgan-community-state-dict/1"  # metadata of files written by convert_to_safetensors

# spandrel architectures that also make x2-x8 models: their x1 files (spandrel's purpose
# "Restoration" only because the scale is 1) run with the same contract, so srgan accepts
# them. Pure restoration architectures (DnCNN, NAFNet, SCUNet, FBCNN, ...), face models
# (GFPGAN, RestoreFormer) and inpainting (LaMa) are refused. From spandrel 0.4.2's sources:
# the architectures whose purpose is "Restoration" if the scale is 1 else "SR".
SR_ARCHITECTURES = frozenset({
    "ATD", "CRAFT", "Compact", "DAT", "DCTLSA", "DITN", "DRCT", "ESRGAN", "FDAT", "GRL", "HAT",
    "IPT", "MMRealSR", "MoESR", "OmniSR", "PLKSR", "RCAN", "RGT", "SAFMN", "SPAN", "SeemoRe",
    "SwiftSRGAN", "Swin2SR", "SwinIR",
})

# Default tile overlap (LR px). Measured with benchmarks/community_seams.py (README, "Community
# models"): local CNNs whose seam error was measured get CNN_OVERLAP; every other architecture
# (window attention, and any family not measured) gets the larger ATTENTION_OVERLAP.
CNN_ARCHITECTURES = frozenset({"ESRGAN", "Compact"})
CNN_OVERLAP = 16
ATTENTION_OVERLAP = 32


@dataclass(frozen=True)
class CommunityConfig:
    """What srgan's engine reads from a community model (from spandrel's descriptor).

    Same field names as :class:`~srgan.models.GeneratorConfig` where the engine reads them
    (``scale``, ``in_channels``, ``out_channels``, ``channels``).
    """

    architecture: str  # spandrel's architecture id, e.g. "ESRGAN", "SwinIR"
    scale: int  # 1, 2, 3, 4 or 8
    in_channels: int
    out_channels: int
    channels: int  # widest convolution input: a rough activation-memory estimate for the auto tile size
    multiple_of: int = 1  # input height and width must be multiples of this (padded by reflection)
    minimum: int = 0  # input height and width must be at least this (padded by reflection)
    supports_fp16: bool = False
    supports_bf16: bool = False
    overlap: int = ATTENTION_OVERLAP  # default tile overlap for this family (LR px)
    align: int = 1  # tile windows start on this grid: the attention window size and multiple_of (see _align)
    whole_image: bool = False  # spandrel says the model tiles internally: run images in one pass
    tags: tuple[str, ...] = ()  # spandrel's tags, e.g. ("64nf", "23nb")

    def to_dict(self) -> dict:
        return asdict(self)


def pad_to_requirements(x: torch.Tensor, multiple_of: int = 1, minimum: int = 0) -> torch.Tensor:
    """Pad (B, C, h, w) at the bottom and right to at least ``minimum`` px and a multiple of
    ``multiple_of`` on both axes, by reflection (:func:`srgan.tiling.reflect_index`: mirrored
    about the edge pixels, repeatedly when the image is smaller than the padding).

    The caller crops the model's output back to (h * scale, w * scale); the padding sits
    beyond the last row and column, so as with the engine's tile margins, only pixels near
    the bottom and right edges can see it.

    >>> y = pad_to_requirements(torch.arange(6.).view(1, 1, 2, 3), multiple_of=4)
    >>> tuple(y.shape), y[0, 0, 0].tolist(), y[0, 0, :, 0].tolist()
    ((1, 1, 4, 4), [0.0, 1.0, 2.0, 1.0], [0.0, 3.0, 0.0, 3.0])
    """
    h, w = x.shape[-2:]
    H = -(-max(h, minimum) // multiple_of) * multiple_of
    W = -(-max(w, minimum) // multiple_of) * multiple_of
    if (H, W) == (h, w):
        return x
    rows = torch.as_tensor(reflect_index(0, H, h), device=x.device)
    cols = torch.as_tensor(reflect_index(0, W, w), device=x.device)
    return x.index_select(-2, rows).index_select(-1, cols)


class CommunityModel(nn.Module):
    """A spandrel model with the engine's call contract: (B, in_channels, h, w) float in
    [0, 1] -> (B, out_channels, h*scale, w*scale) in [0, 1] (spandrel clamps), any h, w >= 1.

    Inputs are padded to the size requirements (:func:`pad_to_requirements`) and the output
    cropped back, so the tiled engine runs it unchanged, window by window.

    Attributes:
        config: :class:`CommunityConfig`.
        info: :class:`~srgan.checkpoint.ModelInfo` (normalisation ``unit``: photos).
        net: the architecture's module (spandrel's ``descriptor.model``).
    """

    def __init__(self, descriptor, config: CommunityConfig, info: ModelInfo):
        super().__init__()
        self.net = descriptor.model  # a submodule: .to(), .eval() and channels_last reach it
        self._descriptor = descriptor
        self.config = config
        self.info = info

    def __repr__(self):
        c = self.config
        return (f"CommunityModel({c.architecture}, x{c.scale}, {c.in_channels}->{c.out_channels} channels, "
                f"tags={list(c.tags)})")

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h, w = x.shape[-2:]
        s = self.config.scale
        y = self._descriptor(pad_to_requirements(x, self.config.multiple_of, self.config.minimum))
        return y[..., : h * s, : w * s]


# --- reading files, weights only -----------------------------------------------------------


def is_community_file(path) -> bool:
    """Whether ``load_model`` should hand ``path`` to this module: a PyTorch pickle file
    (``.pth``, ``.ckpt``, ``.pt``), or a readable ``.safetensors`` file that is not an srgan
    model or training checkpoint. Needs no spandrel."""
    path = Path(path)
    suffix = path.suffix.lower()
    if suffix in PICKLE_SUFFIXES:
        return True
    if suffix != ".safetensors":
        return False
    from safetensors import safe_open

    try:
        with safe_open(str(path), framework="pt") as f:
            meta = f.metadata() or {}
    except Exception:  # unreadable: srgan's own loader reports it
        return False
    return meta.get("format") not in (MODEL_FORMAT, STATE_FORMAT)


def _import_spandrel(path: Path):
    try:
        import spandrel
    except ImportError:
        if path.suffix.lower() in PICKLE_SUFFIXES:
            raise ModelError(f"{path}: PyTorch pickle files are read only through the community extra, "
                             f"weights-only (their code is never run): {INSTALL}; srgan's own models "
                             "are .safetensors files") from None
        raise ModelError(f"{path} is not an srgan model file; models from other projects (ESRGAN, "
                         f"Real-ESRGAN, SwinIR, HAT, ...) load with the community extra: {INSTALL}") from None
    return spandrel


def _weights_only_reason(e: Exception) -> str:
    """The useful part of torch's long weights-only refusal, e.g. 'Unsupported global: GLOBAL getattr'."""
    m = re.search(r"WeightsUnpickler error:\s*(.+?)(?: was not an allowed global|\. Please|\n\n|$)", str(e), re.S)
    reason = m.group(1) if m else str(e).splitlines()[0] if str(e) else type(e).__name__
    return " ".join(reason.split())


def read_state_dict(path) -> dict:
    """The tensors of a model file, never running code from it.

    ``.safetensors``: read by safetensors. ``.pth``/``.ckpt``/``.pt``: ``torch.load(...,
    weights_only=True)`` on the CPU (an explicit ``weights_only=True`` is not overridden by
    ``TORCH_FORCE_NO_WEIGHTS_ONLY_LOAD``). Wrappers such as ``{"params_ema": ...}`` are kept;
    :func:`load_community_model` unwraps them with spandrel.

    Raises:
        ModelError: unreadable, not a dict, a TorchScript archive, or a pickle holding
            anything but tensors and plain containers (refused before any of it runs).
    """
    path = Path(path)
    suffix = path.suffix.lower()
    if suffix == ".safetensors":
        from safetensors.torch import load_file

        try:
            return load_file(str(path), device="cpu")
        except Exception as e:  # safetensors raises several types for corrupt files
            raise ModelError(f"{path} is not a readable safetensors file: {e}") from e
    if suffix not in PICKLE_SUFFIXES:
        raise ModelError(f"{path}: unknown model file type {suffix!r}; expected .safetensors, .pth, .ckpt or .pt")
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # torch's TorchScript notice; the archive is refused below
            state = torch.load(str(path), map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as e:
        raise ModelError(f"{path}: refused: it pickles more than tensors and plain containers, or is corrupt "
                         f"({_weights_only_reason(e)}); srgan never runs code from model files. If you trust "
                         "its source, convert it to .safetensors (README: Community models)") from None
    except RuntimeError as e:
        if "TorchScript" in str(e):
            raise ModelError(f"{path}: refused: a TorchScript archive holds code, which srgan never runs; "
                             "save the model's state_dict() instead (README: Community models)") from None
        raise ModelError(f"{path} is not a readable PyTorch weights file: {e}") from None
    except Exception as e:  # corrupt or truncated: EOFError, KeyError, zipfile errors, ...
        raise ModelError(f"{path} is not a readable PyTorch weights file "
                         f"({type(e).__name__}: {e})") from None
    if not isinstance(state, dict):
        raise ModelError(f"{path} holds a {type(state).__name__}, not a state dict of tensors")
    return state


# --- checking and wrapping a spandrel descriptor ---------------------------------------------


def _family_overlap(architecture: str) -> int:
    return CNN_OVERLAP if architecture in CNN_ARCHITECTURES else ATTENTION_OVERLAP


def _align(module: nn.Module, multiple_of: int) -> int:
    """The grid tile windows must start on for tiled output to match a whole-image pass.

    A window-attention network partitions its input into windows from the input's top-left
    corner, and a pixel-unshuffle into blocks, so a tile whose origin is off that grid sees
    the image cut differently: with SwinIR-light that leaves 1.2 8-bit levels of error
    whatever the overlap (benchmarks/community_seams.py). The window is the module's own
    ``window_size`` hyper-parameter (SwinIR, Swin2SR, HAT, ATD, CRAFT, DRCT, OmniSR, GRL);
    architectures that do not expose one (DAT, RGT, ...) are not aligned beyond ``multiple_of``.
    """
    window = getattr(module, "window_size", None)
    sizes = [window] if isinstance(window, int) else list(window) if isinstance(window, (tuple, list)) else []
    sizes = [v for v in sizes if isinstance(v, int) and v > 0]
    return math.lcm(multiple_of, *sizes)


def _widest_conv(module: nn.Module) -> int:
    widths = [m.in_channels for m in module.modules() if isinstance(m, nn.Conv2d)]
    return max(widths, default=64)


def community_model(descriptor, *, name: str = "", sha256: str = "", source: str = "") -> CommunityModel:
    """Check a spandrel descriptor and wrap it for srgan's engine (eval mode, on the CPU).

    Raises:
        ModelError: not a single-image super-resolution model (inpainting, face
            restoration, a restoration-only architecture), an unsupported scale, or size
            requirements srgan cannot meet (square inputs).
    """
    from spandrel import ImageModelDescriptor, ModelTiling

    label = name or "model"
    arch = descriptor.architecture.id
    purpose = descriptor.purpose
    if not isinstance(descriptor, ImageModelDescriptor) or purpose == "Inpainting":
        raise ModelError(f"{label} is a {arch} inpainting model (it needs a mask): srgan runs only "
                         "single-image super-resolution models")
    if purpose == "FaceSR":
        raise ModelError(f"{label} is a {arch} face-restoration model: srgan runs only single-image "
                         "super-resolution models, not face restoration")
    if purpose == "Restoration" and arch not in SR_ARCHITECTURES:
        raise ModelError(f"{label} is a {arch} restoration model (denoising, deblurring or JPEG "
                         "removal at x1, not super-resolution): srgan runs only super-resolution "
                         "architectures (x1 files of those are accepted)")
    if purpose not in ("SR", "Restoration"):
        raise ModelError(f"{label}: spandrel says its purpose is {purpose!r}; srgan runs only super-resolution models")
    if descriptor.scale not in SCALES:
        raise ModelError(f"{label} ({arch}) upscales x{descriptor.scale}; srgan runs scales "
                         f"{', '.join(map(str, SCALES))}")
    req = descriptor.size_requirements
    if req.square:
        raise ModelError(f"{label} ({arch}) needs square inputs, which srgan's tiler does not make")
    config = CommunityConfig(
        architecture=arch, scale=descriptor.scale, in_channels=descriptor.input_channels,
        out_channels=descriptor.output_channels, channels=_widest_conv(descriptor.model),
        multiple_of=req.multiple_of, minimum=req.minimum, supports_fp16=descriptor.supports_half,
        supports_bf16=descriptor.supports_bfloat16, overlap=_family_overlap(arch),
        align=_align(descriptor.model, req.multiple_of),
        whole_image=descriptor.tiling == ModelTiling.INTERNAL, tags=tuple(descriptor.tags))
    info = ModelInfo(config=config, normalization=Normalization("unit"), preset="unknown",
                     training={"source": source or "community", "architecture": arch, "tags": list(descriptor.tags)},
                     name=name, sha256=sha256)
    return CommunityModel(descriptor, config, info).eval()


def _describe(state: dict, path: Path, spandrel):
    try:
        return spandrel.MAIN_REGISTRY.load(spandrel.canonicalize_state_dict(state))
    except spandrel.UnsupportedModelError:
        raise ModelError(f"{path}: spandrel {spandrel.__version__} does not recognise this model's "
                         "architecture (README: Community models lists the families)") from None
    except Exception as e:  # a recognised layout with missing or mis-shaped tensors
        raise ModelError(f"{path}: looks like a known architecture but its weights do not fit it "
                         f"({type(e).__name__}: {e})") from None


def load_community_model(path, device="cpu") -> CommunityModel:
    """Load a model file from another project (``.safetensors``, ``.pth``, ``.ckpt``, ``.pt``).

    The file is read weights-only (:func:`read_state_dict`); spandrel recognises the
    architecture; :func:`community_model` checks and wraps it. Non-finite weights are
    refused (they would give black images).

    Raises:
        ModelError: spandrel not installed, unreadable or unsafe file, unknown
            architecture, not a super-resolution model, non-finite weights.
    """
    path = Path(path)
    spandrel = _import_spandrel(path)
    state = read_state_dict(path)
    descriptor = _describe(state, path, spandrel)
    bad = [k for k, v in descriptor.model.state_dict().items()
           if v.is_floating_point() and not torch.isfinite(v).all()]
    if bad:
        raise ModelError(f"{path}: {len(bad)} weight tensor(s) hold NaN or infinite values ({bad[0]}, ...)")
    model = community_model(descriptor, name=path.stem, sha256=file_sha256(path), source=path.suffix.lower()[1:])
    return model.to(device)


def convert_to_safetensors(src, dst) -> CommunityConfig:
    """Write the weights of a community model file as ``.safetensors`` (atomically).

    ``src`` is read weights-only and must be a model spandrel recognises and srgan can run;
    the state dict is unwrapped (``params_ema``, ``module.`` prefixes) and stored as it is.
    Returns the model's :class:`CommunityConfig`.
    """
    from safetensors.torch import save_file

    src, dst = Path(src), Path(dst)
    if dst.suffix != ".safetensors":
        raise ConfigError(f"output {dst} must end in .safetensors")
    if dst.resolve() == src.resolve():
        raise ConfigError(f"output {dst} is the input file; choose another name")
    spandrel = _import_spandrel(src)
    state = spandrel.canonicalize_state_dict(read_state_dict(src))
    tensors = {k: v for k, v in state.items() if isinstance(v, torch.Tensor)}
    config = community_model(_describe(dict(tensors), src, spandrel), name=src.stem).config
    tensors = {k: v.contiguous() for k, v in tensors.items()}
    atomic_write(dst, lambda tmp: save_file(tensors, tmp, metadata={"format": CONVERTED_FORMAT}))
    return config


# --- precision ------------------------------------------------------------------------------


def community_precision(config: CommunityConfig, precision: str, resolved: torch.dtype | None):
    """The autocast dtype for a community model, given ``resolved`` =
    :func:`srgan.upscale.resolve_precision` (precision, device).

    ``auto`` keeps what the architecture supports (spandrel's flags): bf16, else fp16, else
    fp32. An explicit ``fp16`` or ``bf16`` the architecture does not support is an error
    (SwinIR, HAT, DAT: no fp16), never a silent change.

    >>> c = CommunityConfig("SwinIR", 2, 3, 3, 60, supports_fp16=False, supports_bf16=True)
    >>> community_precision(c, "auto", torch.float16) is None, community_precision(c, "auto", torch.bfloat16)
    (True, torch.bfloat16)
    """
    ok = {torch.float16: config.supports_fp16, torch.bfloat16: config.supports_bf16, None: True}
    if ok[resolved]:
        return resolved
    if precision != "auto":
        fallback = "bf16 or fp32" if config.supports_bf16 else "fp16 or fp32" if config.supports_fp16 else "fp32"
        raise ConfigError(f"--precision {precision}: {config.architecture} models do not support it "
                          f"(spandrel's flags); use --precision {fallback}")
    if resolved is torch.bfloat16 and config.supports_fp16:
        return torch.float16
    return None
