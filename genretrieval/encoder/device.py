"""Device, dtype and thread settings: CUDA with bf16 when present, else CPU (bf16 where supported)."""

from __future__ import annotations

import os

import torch

from ..errors import GenRetError

_DTYPES = {"bf16": torch.bfloat16, "bfloat16": torch.bfloat16, "fp16": torch.float16, "float16": torch.float16,
           "fp32": torch.float32, "float32": torch.float32}


def resolve_device(device: str | None) -> str:
    """``None``/``"auto"`` -> ``"cuda"`` when available, else ``"cpu"``."""
    if device in (None, "auto"):
        return "cuda" if torch.cuda.is_available() else "cpu"
    if device.startswith("cuda") and not torch.cuda.is_available():
        raise GenRetError(f"device {device!r} requested but CUDA is not available")
    if not (device == "cpu" or device.startswith(("cuda", "mps"))):
        raise GenRetError(f"unknown device {device!r}; use auto, cpu, cuda or cuda:N")
    return device


def cpu_supports_bf16() -> bool:
    return bool(torch.backends.mkldnn.is_available() and torch.ops.mkldnn._is_mkldnn_bf16_supported())


def resolve_dtype(dtype: str | torch.dtype | None, device: str) -> torch.dtype:
    """``None`` -> bf16 on CUDA (when supported) or on a CPU with native bf16, else fp32."""
    if isinstance(dtype, torch.dtype):
        return dtype
    if dtype in (None, "auto"):
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
