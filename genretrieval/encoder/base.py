"""The interface every encoder implements, and input validation shared by all of them."""

from __future__ import annotations

import logging
from typing import Any, Protocol, Sequence, runtime_checkable

import numpy as np

from ..errors import GenRetError


@runtime_checkable
class Encoder(Protocol):
    """Embeds queries and documents into one space.

    Both methods return float32 arrays of shape (N, dim), L2-normalised unless ``normalize=False``.
    ``task`` names an instruction preset (see ``genretrieval.instructions.TASKS``).
    """

    dim: int

    def identity(self) -> dict[str, Any]:
        """JSON-able description that changes whenever the vectors would change (used by manifests, caches)."""
        ...

    def encode_queries(
        self,
        texts: Sequence[str],
        task: str = "retrieval",
        batch_size: int = 16,
        normalize: bool = True,
        progress: bool = False,
    ) -> np.ndarray: ...

    def encode_documents(
        self,
        texts: Sequence[str],
        task: str = "retrieval",
        batch_size: int = 16,
        normalize: bool = True,
        progress: bool = False,
    ) -> np.ndarray: ...


def check_texts(texts: Sequence[str]) -> list[str]:
    """Validate a batch of input texts; raise ``GenRetError`` naming the first problem."""
    if isinstance(texts, str):
        raise GenRetError("expected a list of texts, got a single string (wrap it in a list)")
    if texts is None:
        raise GenRetError("expected a list of texts, got None")
    texts = list(texts)
    if not texts:
        raise GenRetError("no texts to encode (empty list)")
    for i, t in enumerate(texts):
        if t is None:
            raise GenRetError(f"text {i} is None")
        if not isinstance(t, str):
            raise GenRetError(f"text {i} is {type(t).__name__}, not str")
        if not t.strip():
            raise GenRetError(f"text {i} is empty")
    return texts


def log_truncation(encoder: Any, message: str) -> None:
    """Log that texts were cut: a warning the first time for ``encoder``, later at debug level."""
    log = logging.getLogger("genretrieval")
    if getattr(encoder, "_warned_truncation", False):
        log.debug(message)
    else:
        encoder._warned_truncation = True
        log.warning(message + "; later cuts by this encoder are not reported")
