"""Lexical baseline retrievers for the benchmarks: BM25 through bm25s."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np

from .retrieval import Ranking, best_k


class BM25Retriever:
    """BM25 (bm25s, Lucene variant) with English stopwords and the Snowball English stemmer.

    Implements ``Retriever``; ``task`` is ignored (BM25 has no instructions). Scores of every document are
    computed exactly and ranked with ``best_k``, so ties are broken by document index.
    """

    def __init__(self, k1: float = 0.9, b: float = 0.4, stopwords: str = "en", stemmer_language: str = "english"):
        import bm25s
        import Stemmer

        self.k1, self.b, self.stopwords, self.stemmer_language = k1, b, stopwords, stemmer_language
        self._bm25s = bm25s
        self._stemmer = Stemmer.Stemmer(stemmer_language)
        self._model: Any = None

    def identity(self) -> dict[str, Any]:
        """Name, parameters and bm25s version."""
        return {
            "name": "bm25",
            "k1": self.k1,
            "b": self.b,
            "stopwords": self.stopwords,
            "stemmer": self.stemmer_language,
            "bm25s": self._bm25s.__version__,
        }

    def _tokenize(self, texts: Sequence[str]) -> list[list[str]]:
        return self._bm25s.tokenize(
            list(texts),
            stopwords=self.stopwords,
            stemmer=self._stemmer,
            return_ids=False,
            show_progress=False,
        )

    def index(self, documents: Sequence[str], task: str = "retrieval") -> None:
        """Tokenize and index the corpus (N documents)."""
        self._model = self._bm25s.BM25(k1=self.k1, b=self.b)
        self._model.index(self._tokenize(documents), show_progress=False)

    def search(self, queries: Sequence[str], k: int, task: str = "retrieval") -> list[Ranking]:
        """The k best (document index, BM25 score) pairs per query, best first."""
        if self._model is None:
            raise RuntimeError("call index() before search()")
        results = []
        for tokens in self._tokenize(queries):
            scores = self._model.get_scores_from_ids(self._model.get_tokens_ids(tokens))
            indices, best = best_k(np.asarray(scores, dtype=np.float32)[None, :], k)
            results.append(list(zip(indices[0].tolist(), best[0].tolist())))
        return results
