"""Adapter files: the trainable rows and projections as safetensors plus ``adapter.json``; never pickled."""

from __future__ import annotations

import hashlib
import json
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import torch
from safetensors import SafetensorError
from safetensors.torch import load_file, save_file

from ..errors import GenRetError
from ..fileio import atomic_write, write_json_atomic
from .model import GenModel
from .teacher import TEACHER_NAME

FORMAT_VERSION = 1
WEIGHTS_FILE = "adapter.safetensors"
CONFIG_FILE = "adapter.json"
SHIPPED_DIR = Path(__file__).resolve().parent.parent / "adapters"


@dataclass
class AdapterConfig:
    """Everything about an adapter except its tensors. ``instructions`` overrides task presets by name."""

    backbone: str
    backbone_weights: str
    hidden_size: int
    dim: int
    num_compression: int = 10
    num_thought: int = 0
    teacher: str = TEACHER_NAME
    trained: bool = False
    instructions: dict[str, dict[str, str]] = field(default_factory=dict)
    provenance: dict[str, Any] = field(default_factory=dict)
    format_version: int = FORMAT_VERSION


def adapter_tensors(model: GenModel) -> dict[str, torch.Tensor]:
    return {
        "special": model.special.detach().float().cpu().contiguous(),
        "recon.weight": model.recon.weight.detach().float().cpu().contiguous(),
        "recon.bias": model.recon.bias.detach().float().cpu().contiguous(),
        "align.weight": model.align.weight.detach().float().cpu().contiguous(),
        "align.bias": model.align.bias.detach().float().cpu().contiguous(),
    }


def save_adapter(model: GenModel, config: AdapterConfig, directory: str | Path) -> Path:
    """Write ``adapter.safetensors`` and ``adapter.json`` into ``directory`` (each written then renamed)."""
    return write_adapter(adapter_tensors(model), config, directory)


def write_adapter(tensors: dict[str, torch.Tensor], config: AdapterConfig, directory: str | Path) -> Path:
    """``save_adapter`` for tensors that are not in a ``GenModel`` (the names and shapes of ``adapter_tensors``)."""
    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    atomic_write(directory / WEIGHTS_FILE, lambda tmp: save_file(tensors, tmp))
    write_json_atomic(directory / CONFIG_FILE, asdict(config), indent=2)
    return directory


def read_adapter(directory: str | Path) -> tuple[AdapterConfig, dict[str, torch.Tensor]]:
    """Read an adapter directory; raises ``GenRetError`` for missing or malformed files."""
    directory = Path(directory)
    cfg_path, weights_path = directory / CONFIG_FILE, directory / WEIGHTS_FILE
    for p in (cfg_path, weights_path):
        if not p.is_file():
            raise GenRetError(f"adapter file missing: {p}")
    try:
        raw = json.loads(cfg_path.read_text())
        config = AdapterConfig(**raw)
    except (json.JSONDecodeError, UnicodeDecodeError, TypeError) as e:
        raise GenRetError(f"malformed {cfg_path}: {e}") from None
    except OSError as e:
        raise GenRetError(f"cannot read {cfg_path}: {e.strerror or e}") from None
    if config.format_version > FORMAT_VERSION:
        raise GenRetError(
            f"{cfg_path} has format {config.format_version}; this genretrieval reads up to "
            f"{FORMAT_VERSION} (upgrade genretrieval)"
        )
    try:
        tensors = load_file(weights_path)
    except SafetensorError as e:  # zero bytes, truncated, or not safetensors at all
        reason = str(e).splitlines()[0] if str(e) else type(e).__name__
        raise GenRetError(
            f"adapter weights {weights_path} are corrupt or truncated ({reason}); copy the adapter again or retrain it"
        ) from None
    except OSError as e:
        raise GenRetError(f"cannot read {weights_path}: {e.strerror or e}") from None
    return config, tensors


def load_into(model: GenModel, config: AdapterConfig, tensors: dict[str, torch.Tensor], where: str) -> None:
    """Copy adapter tensors into ``model``; refuses shape mismatches with the backbone."""
    if config.hidden_size != model.hidden_size:
        raise GenRetError(
            f"adapter {where} was trained for hidden size {config.hidden_size} "
            f"({config.backbone}), but this backbone has {model.hidden_size}"
        )
    expected = adapter_tensors(model)
    for name, t in expected.items():
        if name not in tensors or tuple(tensors[name].shape) != tuple(t.shape):
            got = tuple(tensors[name].shape) if name in tensors else "missing"
            raise GenRetError(f"adapter {where}: tensor {name} is {got}, expected {tuple(t.shape)}")
    with torch.no_grad():
        model.special.copy_(tensors["special"])
        for lin in ("recon", "align"):
            getattr(model, lin).weight.copy_(tensors[f"{lin}.weight"])
            getattr(model, lin).bias.copy_(tensors[f"{lin}.bias"])


def adapter_hash(config: AdapterConfig, tensors: dict[str, torch.Tensor]) -> str:
    """Stable identity: sha256 over the tensors' bytes and the config fields that change the vectors."""
    h = hashlib.sha256()
    for name in sorted(tensors):
        t = tensors[name].float().contiguous()
        h.update(name.encode())
        h.update(str(tuple(t.shape)).encode())
        h.update(t.numpy().tobytes())
    h.update(
        json.dumps(
            {
                "backbone_weights": config.backbone_weights,
                "num_compression": config.num_compression,
                "num_thought": config.num_thought,
                "instructions": config.instructions,
            },
            sort_keys=True,
        ).encode()
    )
    return h.hexdigest()


def shipped_adapter(backbone: str) -> Path | None:
    """The adapter shipped inside the package for a registered backbone, if any."""
    path = SHIPPED_DIR / backbone
    return path if (path / CONFIG_FILE).is_file() else None
