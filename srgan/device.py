"""The one rule that turns ``--device`` into a :class:`torch.device`, for training and inference.

Under ``torchrun`` every process on a machine has a ``LOCAL_RANK`` (0, 1, ...), and each one
should drive its own GPU: ``cuda`` and ``auto`` (on a CUDA machine) therefore pick
``cuda:LOCAL_RANK``. Outside torchrun ``LOCAL_RANK`` is unset and that is ``cuda:0``.
``cuda:N`` and ``cpu`` are taken as given, in every process. Nothing falls back silently: CUDA
asked for but absent, or more processes than GPUs, is a ConfigError naming the fix.
"""

from __future__ import annotations

import os

import torch

from srgan.errors import ConfigError


def resolve_device(device="auto", local_rank: int | None = None) -> torch.device:
    """The device that ``device`` names.

    Args:
        device: ``"auto"`` (the CUDA GPU when there is one, else the CPU), ``"cpu"``,
            ``"cuda"``, ``"cuda:N"``, another torch device name, or a :class:`torch.device`.
        local_rank: this process's GPU on the machine, used by ``auto`` and ``cuda``; None
            reads ``LOCAL_RANK`` from the environment (set by torchrun; 0 when unset).

    Returns:
        A torch.device; ``auto`` and ``cuda`` give ``cuda:local_rank`` on a CUDA machine.

    Raises:
        ConfigError: not a device name; CUDA asked for but not available; a GPU index (from
            ``cuda:N`` or LOCAL_RANK) beyond the GPUs of this machine.

    >>> resolve_device("cpu")
    device(type='cpu')
    >>> resolve_device(torch.device("cpu"))
    device(type='cpu')
    """
    name = str(device)
    if name == "auto" and not torch.cuda.is_available():
        return torch.device("cpu")
    if name in ("auto", "cuda"):
        if local_rank is None:
            local_rank = int(os.environ.get("LOCAL_RANK", "0"))
        name = f"cuda:{local_rank}"
    try:
        dev = torch.device(name)
    except RuntimeError as e:
        raise ConfigError(f"unknown device {device!r}: use --device auto, cpu, cuda or cuda:N") from e
    if dev.type == "cuda":
        if not torch.cuda.is_available():
            raise ConfigError(f"--device {device}: CUDA is not available here; use --device cpu")
        count = torch.cuda.device_count()
        if dev.index is not None and dev.index >= count:
            why = f"LOCAL_RANK is {local_rank}" if str(device) in ("auto", "cuda") else f"--device {device}"
            raise ConfigError(f"{why} but this machine has {count} CUDA device(s): use --device cuda:0 to "
                              f"{count - 1}, or start at most {count} processes per machine (torchrun --nproc-per-node)")
    return dev


BF16_FLAGS = ("avx512_bf16", "amx_bf16")  # /proc/cpuinfo flags of x86 CPUs with bf16 dot products


def cpu_native_bf16() -> bool:
    """True when this CPU computes bf16 natively (AVX512-BF16 or AMX-BF16 on x86), so bf16
    autocast is faster than fp32; elsewhere oneDNN emulates bf16 and it is several times slower.

    oneDNN's own check (``torch.ops.mkldnn._is_mkldnn_bf16_supported``) also accepts plain
    AVX-512, which emulates bf16, so the CPU flags decide; where /proc/cpuinfo is missing
    (macOS, Windows) the answer is False: fp32.

    >>> isinstance(cpu_native_bf16(), bool)
    True
    """
    if torch.backends.cpu.get_cpu_capability() != "AVX512":  # the kernels torch dispatches to here
        return False
    return bool(set(_cpu_flags()) & set(BF16_FLAGS))


def _cpu_flags() -> list[str]:
    """The ``flags`` of the first processor in /proc/cpuinfo ([] where there is none)."""
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("flags"):
                    return line.split(":", 1)[1].split()
    except OSError:
        pass
    return []
