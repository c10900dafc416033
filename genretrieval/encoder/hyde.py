"""HyDE baseline: the backbone writes a hypothetical answer, the teacher embeds it (one generation per query)."""

from __future__ import annotations

from typing import Any, Sequence

import numpy as np
import torch

from ..progress import progress_bar
from .base import check_texts
from .generate import chat_prompt_ids, generate
from .teacher import TeacherEncoder


class HydeEncoder:
    """Queries: greedy chat answer of up to ``max_new_tokens`` tokens, embedded by the teacher.

    Documents: embedded by the teacher directly. Outputs float32 (N, teacher dim).
    """

    def __init__(
        self, lm, tokenizer, teacher: TeacherEncoder, backbone: str, max_new_tokens: int = 128, min_new_tokens: int = 0
    ):
        self.lm, self.tokenizer, self.teacher = lm, tokenizer, teacher
        self.backbone = backbone
        self.max_new_tokens, self.min_new_tokens = max_new_tokens, min_new_tokens
        self.dim = teacher.dim

    @property
    def max_text_tokens(self) -> int:
        """Documents go to the teacher, so its limit applies."""
        return self.teacher.max_text_tokens

    def identity(self) -> dict[str, Any]:
        return {
            "kind": "hyde",
            "backbone": self.backbone,
            "teacher": self.teacher.name,
            "dim": self.dim,
            "max_new_tokens": self.max_new_tokens,
        }

    @torch.inference_mode()
    def generate(self, texts: Sequence[str], batch_size: int = 16, progress: bool = False) -> list[str]:
        """Greedy answers, one per text, through the chat template."""
        prompts = chat_prompt_ids(self.tokenizer, check_texts(texts))
        answers: list[str] = []
        with progress_bar("HyDE generation", len(prompts), progress) as advance:
            for idx, new in generate(
                self.lm, self.tokenizer, prompts, batch_size, self.max_new_tokens, min_new_tokens=self.min_new_tokens
            ):
                answers += self.tokenizer.batch_decode(new, skip_special_tokens=True)
                advance(len(idx))
        return [a.strip() or t for a, t in zip(answers, texts)]

    def encode_queries(
        self,
        texts: Sequence[str],
        task: str = "retrieval",
        batch_size: int = 16,
        normalize: bool = True,
        progress: bool = False,
    ) -> np.ndarray:
        return self.teacher.encode(self.generate(texts, batch_size, progress), normalize=normalize)

    def encode_documents(
        self,
        texts: Sequence[str],
        task: str = "retrieval",
        batch_size: int = 64,
        normalize: bool = True,
        progress: bool = False,
    ) -> np.ndarray:
        return self.teacher.encode(texts, batch_size, normalize, progress)
