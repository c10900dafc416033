"""The generative encoder: embeds what the LLM would answer to a text, in one forward pass."""

from __future__ import annotations

from typing import Any, Sequence

import numpy as np
import torch

from ..instructions import Task, get_task
from ..progress import progress_bar
from .adapter import AdapterConfig
from .base import check_texts
from .model import GenModel, left_pad


class GenEncoder:
    """LLM2Vec-Gen encoder over a frozen backbone and an adapter.

    ``encode_queries`` / ``encode_documents`` return float32 (N, dim), L2-normalised by default. Texts are
    prefixed with the task's instruction, truncated to ``max_length - (T + K)`` tokens (the special tokens always
    survive), left-padded, and batched in length order; the result does not depend on ``batch_size``.
    """

    def __init__(self, model: GenModel, tokenizer, config: AdapterConfig, adapter_id: str,
                 device: str = "cpu", max_length: int = 512):
        self.model = model
        self.tokenizer = tokenizer
        self.config = config
        self.adapter_id = adapter_id
        self.device = device
        self.max_length = max_length
        self.dim = model.dim

    @property
    def dtype(self) -> torch.dtype:
        return self.model.lm.get_input_embeddings().weight.dtype

    def identity(self) -> dict[str, Any]:
        return {"kind": "gen", "backbone": self.config.backbone, "backbone_weights": self.config.backbone_weights,
                "adapter": self.adapter_id, "trained": self.config.trained, "dim": self.dim,
                "num_compression": self.config.num_compression, "num_thought": self.config.num_thought,
                "max_length": self.max_length, "dtype": str(self.dtype).removeprefix("torch.")}

    def task(self, name: str) -> Task:
        """The task preset, with any instruction overrides stored in the adapter."""
        base = get_task(name)
        override = self.config.instructions.get(name, {})
        return Task(name, override.get("query", base.query), override.get("document", base.document))

    def encode_queries(self, texts: Sequence[str], task: str = "retrieval", batch_size: int = 16,
                       normalize: bool = True, progress: bool = False) -> np.ndarray:
        return self.encode(texts, self.task(task).query, batch_size, normalize, progress)

    def encode_documents(self, texts: Sequence[str], task: str = "retrieval", batch_size: int = 16,
                         normalize: bool = True, progress: bool = False) -> np.ndarray:
        return self.encode(texts, self.task(task).document, batch_size, normalize, progress)

    def tokenize(self, texts: Sequence[str], instruction: str = "") -> list[list[int]]:
        """Token ids of ``instruction + " " + text``, truncated to leave room for the special tokens."""
        prefix = f"{instruction} " if instruction else ""
        budget = self.max_length - self.model.num_special
        enc = self.tokenizer([prefix + t for t in texts], truncation=True, max_length=budget,
                             add_special_tokens=True)
        return enc["input_ids"]

    def pad(self, rows: Sequence[Sequence[int]]) -> tuple[torch.Tensor, torch.Tensor]:
        """Left-pad token id lists to (B, L) ``input_ids`` and ``attention_mask`` on the encoder's device."""
        ids, mask = left_pad(rows, self.tokenizer.pad_token_id)
        return ids.to(self.device), mask.to(self.device)

    @torch.inference_mode()
    def encode(self, texts: Sequence[str], instruction: str = "", batch_size: int = 16, normalize: bool = True,
               progress: bool = False) -> np.ndarray:
        """Embed ``texts`` with an explicit instruction. Returns float32 (N, dim)."""
        texts = check_texts(texts)
        rows = self.tokenize(texts, instruction)
        order = np.argsort([-len(r) for r in rows], kind="stable")
        out = np.empty((len(texts), self.dim), dtype=np.float32)
        with progress_bar("encoding", len(texts), progress) as advance:
            for start in range(0, len(order), max(1, batch_size)):
                idx = order[start:start + batch_size]
                ids, mask = self.pad([rows[i] for i in idx])
                emb = self.model(ids, mask)["embedding"]
                if normalize:
                    emb = torch.nn.functional.normalize(emb, dim=-1)
                out[idx] = emb.cpu().numpy()
                advance(len(idx))
        return out
