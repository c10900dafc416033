"""Device, dtype and thread settings: CUDA with bf16 when present, else CPU (bf16 only with native bf16 units)."""

from __future__ import annotations

import os
from pathlib import Path

import torch

from ..errors import GenRetError

_DTYPES = {
    "bf16": torch.bfloat16,
    "bfloat16": torch.bfloat16,
    "fp16": torch.float16,
    "float16": torch.float16,
    "fp32": torch.float32,
    "float32": torch.float32,
}


def resolve_device(device: str | None) -> str:
    """``None``/``"auto"`` -> ``"cuda"`` when available, else ``"cpu"``."""
    if device is None or device == "auto":
        return "cuda" if torch.cuda.is_available() else "cpu"
    if device.startswith("cuda") and not torch.cuda.is_available():
        raise GenRetError(f"device {device!r} requested but CUDA is not available")
    if not (device == "cpu" or device.startswith(("cuda", "mps"))):
        raise GenRetError(f"unknown device {device!r}; use auto, cpu, cuda or cuda:N")
    return device


_NATIVE_BF16_FLAGS = ("avx512_bf16", "amx_bf16")


def cpu_supports_bf16(cpuinfo: str | None = None) -> bool:
    """True when the CPU computes bf16 natively (avx512_bf16 or amx_bf16 in ``/proc/cpuinfo``).

    oneDNN's own check (``_is_mkldnn_bf16_supported``) also says yes on CPUs with plain avx512f, where bf16 is
    emulated and measured 3.4-3.8x slower than fp32; so the flags decide. No ``/proc/cpuinfo`` (macOS, Windows):
    False, i.e. fp32.
    """
    if cpuinfo is None:
        try:
            cpuinfo = Path("/proc/cpuinfo").read_text(errors="replace")
        except OSError:
            return False
    flags = set()
    for line in cpuinfo.splitlines():
        if line.startswith("flags"):
            flags.update(line.partition(":")[2].split())
    return any(f in flags for f in _NATIVE_BF16_FLAGS)


def resolve_dtype(dtype: str | torch.dtype | None, device: str) -> torch.dtype:
    """``None`` -> bf16 on CUDA (when supported) or on a CPU with native bf16, else fp32."""
    if isinstance(dtype, torch.dtype):
        return dtype
    if dtype is None or dtype == "auto":
        if device.startswith("cuda"):
            return torch.bfloat16 if torch.cuda.is_bf16_supported() else torch.float16
        return torch.bfloat16 if device == "cpu" and cpu_supports_bf16() else torch.float32
    try:
        return _DTYPES[dtype]
    except KeyError:
        raise GenRetError(f"unknown dtype {dtype!r}; use auto, bf16, fp16 or fp32") from None


def set_threads(num_threads: int | None) -> None:
    """Set torch's CPU threads from the argument or ``GENRET_NUM_THREADS`` (default: torch's own choice)."""
    n = num_threads or int(os.environ.get("GENRET_NUM_THREADS", "0") or 0)
    if n > 0:
        torch.set_num_threads(n)


def default_precision() -> dict[str, str]:
    """The device and dtype an encoder gets on this machine by default, and why (shown by ``genret info``)."""
    device = resolve_device(None)
    dtype = str(resolve_dtype(None, device)).removeprefix("torch.")
    if device.startswith("cuda"):
        why = "CUDA device"
    elif cpu_supports_bf16():
        why = "CPU with native bf16 (avx512_bf16 or amx_bf16)"
    else:
        why = "CPU without native bf16 (no avx512_bf16 or amx_bf16 flag), where bf16 is emulated and slower"
    return {"device": device, "dtype": dtype, "why": why}
