"""The Retriever interface the runners score, and the dense retriever over an Encoder with cached corpus vectors."""

from __future__ import annotations

import hashlib
import json
from collections.abc import Sequence
from pathlib import Path
from typing import Any, Protocol, runtime_checkable

import numpy as np

from ..encoder.backbones import genret_home
from ..encoder.base import Encoder
from ..fileio import atomic_write

Ranking = list[tuple[int, float]]
"""One query's results: (document index, score) pairs, best first."""


@runtime_checkable
class Retriever(Protocol):
    """Anything the benchmark runners can score: BM25, HyDE, a dense encoder (through ``DenseRetriever``).

    ``index`` is called once with the whole corpus; ``search`` returns, per query, up to k
    (document index, score) pairs, best first, where the index is a position in the indexed documents.
    ``task`` names the instruction preset of the benchmark (see ``genretrieval.instructions``).
    """

    def identity(self) -> dict[str, Any]:
        """JSON-able description of the system (shown in reports)."""
        ...

    def index(self, documents: Sequence[str], task: str = "retrieval") -> None: ...

    def search(self, queries: Sequence[str], k: int, task: str = "retrieval") -> list[Ranking]: ...


def default_cache_dir() -> Path:
    """Where corpus embeddings are cached: ``$GENRET_HOME/cache/embeddings`` (GENRET_HOME: ~/.cache/genretrieval)."""
    return genret_home() / "cache" / "embeddings"


def corpus_key(identity: dict[str, Any], task: str, documents: Sequence[str], normalize: bool) -> str:
    """sha256 naming a corpus embedding: encoder identity, task, normalisation and the sorted document texts."""
    texts = hashlib.sha256()
    for text in sorted(documents):
        texts.update(hashlib.sha256(text.encode("utf-8")).digest())
    payload = json.dumps(
        {"encoder": identity, "task": task, "normalize": normalize, "documents": texts.hexdigest()},
        sort_keys=True,
        default=str,
    )
    return hashlib.sha256(payload.encode("utf-8")).hexdigest()


def best_k(scores: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
    """The k highest of each row of ``scores`` (B, N): (indices (B, min(k, N)) int64, scores (B, min(k, N))).

    Best first; equal scores are ordered by document index, so results are deterministic.
    """
    n = scores.shape[1]
    k = min(k, n)
    part = np.argpartition(-scores, k - 1, axis=1)[:, :k] if k < n else np.tile(np.arange(n), (len(scores), 1))
    part_scores = np.take_along_axis(scores, part, axis=1)
    order = np.lexsort((part, -part_scores), axis=-1)
    return np.take_along_axis(part, order, axis=1), np.take_along_axis(part_scores, order, axis=1)


def top_k(
    queries: np.ndarray, documents: np.ndarray, k: int, max_block_bytes: int = 1 << 27
) -> tuple[np.ndarray, np.ndarray]:
    """Exact top k by dot product: ``queries`` (Q, D) against ``documents`` (N, D).

    Returns (indices (Q, min(k, N)) int64, scores (Q, min(k, N)) float32), as ``best_k``. Scores are
    computed in blocks of queries holding at most ``max_block_bytes`` of similarities.
    """
    block = max(1, max_block_bytes // (4 * max(documents.shape[0], 1)))
    results = [best_k(queries[start : start + block] @ documents.T, k) for start in range(0, len(queries), block)]
    return np.concatenate([r[0] for r in results]), np.concatenate([r[1] for r in results]).astype(np.float32)


class DenseRetriever:
    """Exact dot-product search over an ``Encoder``'s vectors; corpus vectors are cached on disk.

    The cache file is ``<cache_dir>/<corpus_key>.npy`` holding (N, dim) float32 rows in sorted-text order, so
    re-running a benchmark or reordering the corpus re-encodes nothing (``cache=False`` turns this off).
    ``normalize=True`` scores by cosine (both sides L2-normalised); ``False`` scores raw dot products.
    """

    def __init__(
        self,
        encoder: Encoder,
        cache_dir: str | Path | None = None,
        cache: bool = True,
        batch_size: int = 16,
        normalize: bool = True,
        progress: bool = False,
    ):
        self.encoder = encoder
        self.cache_dir = (Path(cache_dir) if cache_dir else default_cache_dir()) if cache else None
        self.batch_size = batch_size
        self.normalize = normalize
        self.progress = progress
        self.embeddings: np.ndarray | None = None
        self.query_embeddings: np.ndarray | None = None
        """The last ``search``'s query vectors (Q, dim), kept for checks that reuse them (the refusal check)."""

    def identity(self) -> dict[str, Any]:
        """The wrapped encoder's identity."""
        return self.encoder.identity()

    def index(self, documents: Sequence[str], task: str = "retrieval") -> None:
        """Encode (or load from the cache) the corpus: sets ``embeddings`` to (N, dim) float32."""
        documents = list(documents)
        order = sorted(range(len(documents)), key=documents.__getitem__)
        path = None
        if self.cache_dir is not None:
            path = self.cache_dir / f"{corpus_key(self.encoder.identity(), task, documents, self.normalize)}.npy"
        sorted_vectors = _load(path, (len(documents), self.encoder.dim))
        if sorted_vectors is None:
            sorted_vectors = np.asarray(
                self.encoder.encode_documents(
                    [documents[i] for i in order],
                    task=task,
                    batch_size=self.batch_size,
                    normalize=self.normalize,
                    progress=self.progress,
                ),
                dtype=np.float32,
            )
            if path is not None:
                _save(path, sorted_vectors)
        self.embeddings = np.empty_like(sorted_vectors)
        self.embeddings[order] = sorted_vectors

    def search(self, queries: Sequence[str], k: int, task: str = "retrieval") -> list[Ranking]:
        """Encode ``queries`` with the task's query instruction and return the k best documents for each.

        The query vectors stay in ``query_embeddings`` until the next call."""
        if self.embeddings is None:
            raise RuntimeError("call index() before search()")
        vectors = np.asarray(
            self.encoder.encode_queries(
                list(queries),
                task=task,
                batch_size=self.batch_size,
                normalize=self.normalize,
                progress=self.progress,
            ),
            dtype=np.float32,
        )
        self.query_embeddings = vectors
        indices, scores = top_k(vectors, self.embeddings, k)
        return [list(zip(i.tolist(), s.tolist())) for i, s in zip(indices, scores)]


def _load(path: Path | None, shape: tuple[int, int]) -> np.ndarray | None:
    if path is None or not path.exists():
        return None
    try:
        vectors = np.load(path)
    except (OSError, ValueError):
        return None
    return vectors if vectors.shape == shape and vectors.dtype == np.float32 else None


def _save(path: Path, vectors: np.ndarray) -> None:
    def write(tmp: Path) -> None:
        with open(tmp, "wb") as f:  # a file, not a name: np.save would add ".npy" to the name
            np.save(f, vectors)

    path.parent.mkdir(parents=True, exist_ok=True)
    atomic_write(path, write)
