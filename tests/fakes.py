"""A fake, deterministic encoder for fast CLI tests (like the ``embed-demo`` model of simonw/llm's tests).

``FakeEncoder`` implements ``genretrieval.encoder.base.Encoder`` without torch or a model: a text's vector is
its hashed bag of words, so a query that shares words with a document ranks it first. Its ``FakeTokenizer``
gives word and punctuation tokens with character offsets, which is all that chunking reads. The
``fake_backbone`` fixture (``conftest.py``) makes ``--backbone fake`` load it wherever ``load_encoder`` runs
in-process (the CLI, ``Index.open`` from a manifest, ``genret embed``); other backbones load as usual.
"""

from __future__ import annotations

import hashlib
import re
from typing import Any, Sequence

import numpy as np

from genretrieval.encoder.base import check_texts, log_truncation
from genretrieval.instructions import Task, get_task
from genretrieval.progress import item_counter, progress_bar

FAKE_BACKBONE = "fake"
FAKE_DIM = 256
TOKEN = re.compile(r"\w+|[^\w\s]")
WORD = re.compile(r"\w+")


def _bucket(word: str, dim: int) -> tuple[int, float]:
    """A word's dimension and sign: stable across processes (unlike ``hash``)."""
    digest = hashlib.blake2b(word.encode(), digest_size=8).digest()
    return int.from_bytes(digest[:7], "little") % dim, 1.0 if digest[7] & 1 else -1.0


class FakeTokenizer:
    """Words and punctuation marks as tokens, answering the calls chunking and ``text_budget`` make:
    ``tok(text or texts, add_special_tokens=..., return_offsets_mapping=...)``."""

    pad_token_id = 0

    def __call__(
        self, text: str | Sequence[str], add_special_tokens: bool = True, return_offsets_mapping: bool = False, **_: Any
    ) -> dict[str, list]:
        if not isinstance(text, str):
            rows = [self(t, add_special_tokens, return_offsets_mapping) for t in text]
            return {key: [r[key] for r in rows] for key in rows[0]} if rows else {"input_ids": []}
        spans = [m.span() for m in TOKEN.finditer(text)]
        out: dict[str, list] = {
            "input_ids": [1 + _bucket(text[s:e], 50_000)[0] for s, e in spans],
            "attention_mask": [1] * len(spans),
        }
        if return_offsets_mapping:
            out["offset_mapping"] = spans
        return out

    def tokenize(self, text: str) -> list[str]:
        return TOKEN.findall(text)


class FakeEncoder:
    """Hashed bag-of-words vectors, float32 (N, ``dim``), L2-normalised unless ``normalize=False``.

    Like the generative encoder it knows the task presets (an unknown task is the same one-line error) and
    reads at most ``text_budget(instruction)`` tokens of a text (``max_length`` minus the instruction's tokens);
    the instruction itself does not change the vector.
    """

    def __init__(self, dim: int = FAKE_DIM, max_length: int = 512):
        self.dim = dim
        self.max_length = max_length
        self.tokenizer = FakeTokenizer()

    def identity(self) -> dict[str, Any]:
        return {"kind": "fake", "backbone": FAKE_BACKBONE, "dim": self.dim, "max_length": self.max_length}

    def task(self, name: str) -> Task:
        return get_task(name)

    def text_budget(self, instruction: str = "") -> int:
        return max(0, self.max_length - len(self.tokenizer(instruction)["input_ids"]))

    @property
    def max_text_tokens(self) -> int:
        task = self.task("retrieval")
        return min(self.text_budget(task.query), self.text_budget(task.document))

    def encode_queries(
        self,
        texts: Sequence[str],
        task: str = "retrieval",
        batch_size: int = 16,
        normalize: bool = True,
        progress: bool = False,
    ) -> np.ndarray:
        return self.encode(texts, self.task(task).query, normalize, progress)

    def encode_documents(
        self,
        texts: Sequence[str],
        task: str = "retrieval",
        batch_size: int = 16,
        normalize: bool = True,
        progress: bool = False,
    ) -> np.ndarray:
        return self.encode(texts, self.task(task).document, normalize, progress)

    def encode(
        self, texts: Sequence[str], instruction: str = "", normalize: bool = True, progress: bool = False
    ) -> np.ndarray:
        texts = check_texts(texts)
        budget = self.text_budget(instruction)
        out = np.zeros((len(texts), self.dim), dtype=np.float32)
        with progress_bar("encoding", len(texts), progress) as own:
            count = item_counter(own)
            for i, text in enumerate(texts):
                tokens = TOKEN.findall(text)
                if len(tokens) > budget:
                    log_truncation(
                        self,
                        f"text {i} was cut to the {budget} tokens the encoder reads: "
                        f"{len(tokens) - budget:,} tokens at its end were dropped",
                    )
                words = [t.lower() for t in tokens[:budget] if WORD.fullmatch(t)] or [""]
                for word in words:
                    j, sign = _bucket(word, self.dim)
                    out[i, j] += sign
                count(1)
        if normalize:
            norms = np.linalg.norm(out, axis=1, keepdims=True)
            out /= np.where(norms > 0, norms, 1.0)
        return out
