"""Encoders: the generative encoder (LLM2Vec-Gen) and the teacher baseline, built by ``load_encoder``."""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Literal

from ..errors import GenRetError
from .adapter import AdapterConfig, adapter_hash, adapter_tensors, load_into, read_adapter, shipped_adapter
from .backbones import DEFAULT_BACKBONE, load_backbone, resolve_backbone
from .base import Encoder
from .device import resolve_device, resolve_dtype, set_threads
from .gen import GenEncoder
from .hyde import HydeEncoder
from .model import GenModel
from .teacher import TEACHER_NAME, TeacherEncoder

__all__ = [
    "Encoder",
    "GenEncoder",
    "GenModel",
    "HydeEncoder",
    "TeacherEncoder",
    "load_encoder",
    "load_gen_model",
    "DEFAULT_BACKBONE",
]

log = logging.getLogger("genretrieval")

UNTRAINED_WARNING = (
    "UNTRAINED adapter for {backbone}: the special tokens and projections are random, so the "
    "embeddings do not mean anything yet. Train one with `genret train` or pass --adapter."
)


def load_gen_model(
    backbone: str | None = None,
    adapter: str | Path | None = None,
    device: str | None = None,
    dtype: str | None = None,
    num_compression: int = 10,
    num_thought: int = 0,
    dim: int = 384,
    use_shipped: bool = True,
    trust_remote_code: bool = False,
) -> tuple[GenModel, object, AdapterConfig, str]:
    """Build ``(model, tokenizer, adapter_config, adapter_id)``.

    The adapter is ``adapter`` if given, else the one shipped for the backbone (unless ``use_shipped`` is
    False), else a seeded untrained one (``num_compression``, ``num_thought`` and ``dim`` apply to that case).
    ``trust_remote_code`` lets a backbone run code from its repository (refused otherwise).
    """
    device = resolve_device(device)
    tensors = None
    if adapter is not None:
        config, tensors = read_adapter(adapter)
        backbone = backbone or config.backbone
    ref = resolve_backbone(backbone)
    if adapter is None and use_shipped and (shipped := shipped_adapter(ref.name)) is not None:
        adapter = shipped
        config, tensors = read_adapter(shipped)
    lm, tok = load_backbone(ref, resolve_dtype(dtype, device), device, trust_remote_code)
    if tensors is None:
        config = AdapterConfig(
            backbone=ref.name,
            backbone_weights=ref.weights_id,
            hidden_size=lm.config.hidden_size,
            dim=dim,
            num_compression=num_compression,
            num_thought=num_thought,
            trained=False,
        )
    elif config.backbone_weights != ref.weights_id and config.hidden_size == lm.config.hidden_size:
        log.warning(
            "adapter %s was trained on %s, not %s; results may be meaningless", adapter, config.backbone, ref.name
        )
    model = GenModel(lm, config.num_compression, config.num_thought, config.dim, init=tensors is None)
    if tensors is not None:
        load_into(model, config, tensors, str(adapter))
    else:
        tensors = adapter_tensors(model)
    return model, tok, config, adapter_hash(config, tensors)


def load_encoder(
    kind: Literal["gen", "teacher", "hyde"] = "gen",
    backbone: str | None = None,
    adapter: str | Path | None = None,
    device: str | None = None,
    dtype: str | None = None,
    num_threads: int | None = None,
    max_length: int = 512,
    shipped: bool = True,
    trust_remote_code: bool = False,
) -> Encoder:
    """One entry point for every encoder.

    ``kind="gen"``: the generative encoder on ``backbone`` (registry name, local path or Hugging Face id;
    default Qwen2.5-Coder-0.5B-Instruct) with ``adapter`` (default: the shipped one). ``kind="teacher"``: the
    input-centric baseline (all-MiniLM-L6-v2, or the sentence-transformers model named by ``backbone``).
    ``kind="hyde"``: the backbone generates an answer per query, the teacher embeds it (slow baseline).
    ``shipped=False`` ignores the shipped adapter (the untrained baseline when ``adapter`` is None).
    ``trust_remote_code=True`` lets a backbone run code from its repository; without it such a backbone is
    refused with a one-line ``GenRetError`` (never an interactive prompt).
    """
    set_threads(num_threads)
    if kind == "teacher":
        return TeacherEncoder(backbone or TEACHER_NAME, resolve_device(device))
    if kind == "hyde":
        ref = resolve_backbone(backbone)
        device = resolve_device(device)
        lm, tok = load_backbone(ref, resolve_dtype(dtype, device), device, trust_remote_code)
        return HydeEncoder(lm, tok, TeacherEncoder(device=device), ref.name)
    if kind != "gen":
        raise GenRetError(f"unknown encoder kind {kind!r}; use gen, teacher or hyde")
    model, tok, config, adapter_id = load_gen_model(
        backbone, adapter, device, dtype, use_shipped=shipped, trust_remote_code=trust_remote_code
    )
    if not config.trained:
        log.warning(UNTRAINED_WARNING.format(backbone=config.backbone))
    return GenEncoder(model, tok, config, adapter_id, resolve_device(device), max_length)
