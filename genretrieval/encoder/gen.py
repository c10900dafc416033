"""The generative encoder: embeds what the LLM would answer to a text, in one forward pass."""

from __future__ import annotations

import logging
from contextlib import contextmanager
from pathlib import Path
from typing import Any, Callable, Iterator, Sequence

import numpy as np
import torch

from ..instructions import Task, get_task
from ..progress import Progress, active, item_counter, progress_bar
from .adapter import AdapterConfig
from .base import check_texts, log_truncation
from .model import GenModel, left_pad

log = logging.getLogger("genretrieval")

# How far (1 - cosine) a text's vector may move with the batch around it, by the backbone's dtype (see encode).
BATCH_TOLERANCE = {torch.float32: 1e-5, torch.bfloat16: 5e-3, torch.float16: 5e-3}


class GenEncoder:
    """LLM2Vec-Gen encoder over a frozen backbone and an adapter.

    ``encode_queries`` / ``encode_documents`` return float32 (N, dim), L2-normalised by default. Texts are
    prefixed with the task's instruction, truncated to ``max_length - (T + K)`` tokens (the special tokens always
    survive; the first cut in an encoder's life is logged as a warning), left-padded, and batched in length
    order; the result does not depend on ``batch_size`` (to the tolerance stated in ``encode``).
    """

    def __init__(
        self,
        model: GenModel,
        tokenizer,
        config: AdapterConfig,
        adapter_id: str,
        device: str = "cpu",
        max_length: int = 512,
    ):
        self.model = model
        self.tokenizer = tokenizer
        self.config = config
        self.adapter_id = adapter_id
        self.device = device
        self.max_length = max_length
        self.dim = model.dim
        # When set, pooled hidden states are cached per text under this folder (encoder/features.py), so a
        # read-out that changes only recon/align re-embeds a corpus without a forward pass.
        self.feature_cache: Path | None = None

    @property
    def dtype(self) -> torch.dtype:
        return self.model.lm.get_input_embeddings().weight.dtype

    def identity(self) -> dict[str, Any]:
        return {
            "kind": "gen",
            "backbone": self.config.backbone,
            "backbone_weights": self.config.backbone_weights,
            "adapter": self.adapter_id,
            "trained": self.config.trained,
            "dim": self.dim,
            "num_compression": self.config.num_compression,
            "num_thought": self.config.num_thought,
            "max_length": self.max_length,
            "dtype": str(self.dtype).removeprefix("torch."),
        }

    def task(self, name: str) -> Task:
        """The task preset, with any instruction overrides stored in the adapter."""
        base = get_task(name)
        override = self.config.instructions.get(name, {})
        return Task(name, override.get("query", base.query), override.get("document", base.document))

    def encode_queries(
        self,
        texts: Sequence[str],
        task: str = "retrieval",
        batch_size: int = 16,
        normalize: bool = True,
        progress: bool = False,
    ) -> np.ndarray:
        return self.encode(texts, self.task(task).query, batch_size, normalize, progress)

    def encode_documents(
        self,
        texts: Sequence[str],
        task: str = "retrieval",
        batch_size: int = 16,
        normalize: bool = True,
        progress: bool = False,
    ) -> np.ndarray:
        return self.encode(texts, self.task(task).document, batch_size, normalize, progress)

    def text_budget(self, instruction: str = "") -> int:
        """Tokens of text the encoder reads after ``instruction``: ``max_length`` minus the T + K special tokens,
        the tokenizer's own special tokens and the instruction (counted with its trailing space, so this errs
        by at most one token on the safe side)."""
        prefix = f"{instruction} " if instruction else ""
        overhead = len(self.tokenizer(prefix, add_special_tokens=True)["input_ids"])
        return max(0, self.max_length - self.model.num_special - overhead)

    @property
    def max_text_tokens(self) -> int:
        """Tokens of text read on both paths of the ``retrieval`` task (492 for both shipped adapters): a
        longer text is cut. For another task: ``text_budget(enc.task(name).document)``."""
        task = self.task("retrieval")
        return min(self.text_budget(task.query), self.text_budget(task.document))

    def tokenize(self, texts: Sequence[str], instruction: str = "") -> list[list[int]]:
        """Token ids of ``instruction + " " + text``, truncated to leave room for the special tokens.

        A text longer than that loses its end; the first time this happens to an encoder it logs a warning
        saying how many tokens were dropped (later cuts are logged at debug level).
        """
        prefix = f"{instruction} " if instruction else ""
        budget = self.max_length - self.model.num_special
        full = [prefix + t for t in texts]
        rows = self.tokenizer(full, add_special_tokens=True, verbose=False)["input_ids"]
        long = [i for i, r in enumerate(rows) if len(r) > budget]
        if long:
            cut = self.tokenizer([full[i] for i in long], truncation=True, max_length=budget, add_special_tokens=True)[
                "input_ids"
            ]
            dropped = [len(rows[i]) - len(c) for i, c in zip(long, cut)]
            for i, c in zip(long, cut):
                rows[i] = c
            self._report_truncation(long, dropped, budget, len(texts))
        return rows

    def _report_truncation(self, which: list[int], dropped: list[int], budget: int, of: int) -> None:
        worst = int(np.argmax(dropped))
        label = "the text" if of == 1 else f"text {which[worst]}"
        others = f" ({len(which)} texts were cut in this call)" if len(which) > 1 else ""
        log_truncation(
            self,
            f"{label} was cut to the {budget} tokens the encoder reads (instruction "
            f"included): {dropped[worst]:,} tokens at its end were dropped{others}",
        )

    def pad(self, rows: Sequence[Sequence[int]]) -> tuple[torch.Tensor, torch.Tensor]:
        """Left-pad token id lists to (B, L) ``input_ids`` and ``attention_mask`` on the encoder's device."""
        ids, mask = left_pad(rows, self.tokenizer.pad_token_id)
        return ids.to(self.device), mask.to(self.device)

    @torch.inference_mode()
    def encode(
        self,
        texts: Sequence[str],
        instruction: str = "",
        batch_size: int = 16,
        normalize: bool = True,
        progress: bool = False,
    ) -> np.ndarray:
        """Embed ``texts`` with an explicit instruction. Returns float32 (N, dim).

        Batch-size invariance (a text alone against the same text in a batch of other lengths, 1 - cosine):
        at most ``BATCH_TOLERANCE[dtype]``. fp32, the CPU default without native bf16, agrees to 1e-5
        (measured about 2e-7); bf16 and fp16 to 5e-3 (measured 2e-3, cosine 0.998, for the default backbone
        in bf16: padding changes the shapes of the matrix products, and with them the rounding).

        ``progress`` shows a bar that also moves within a batch, layer by layer; without it, a bar shown by the
        caller (``genretrieval.progress.active()``, e.g. an index's) gets that in-batch progress.
        """
        texts = check_texts(texts)
        if self.feature_cache is not None:
            from .features import cached_features

            h = cached_features(
                self, texts, instruction, self.feature_cache, batch_size, progress=progress, log=log.debug
            )
            emb = self.model.align(self.model.recon(torch.from_numpy(h).to(self.model.align.weight.device)))
            if normalize:
                emb = torch.nn.functional.normalize(emb, dim=-1)
            return emb.float().cpu().numpy()
        rows = self.tokenize(texts, instruction)
        order = np.argsort([-len(r) for r in rows], kind="stable")
        out = np.empty((len(texts), self.dim), dtype=np.float32)
        batch_size = max(1, batch_size)
        with progress_bar("encoding", len(texts), progress) as own:
            count = item_counter(own)
            bar = active()  # ours when shown, else the caller's (e.g. an index's), else None
            with self._layer_progress(bar) as start_batch:
                for start in range(0, len(order), batch_size):
                    idx = order[start : start + batch_size]
                    start_batch(0 if bar is own else start, len(idx))  # a caller's bar counts this call's items
                    ids, mask = self.pad([rows[i] for i in idx])
                    emb = self.model(ids, mask)["embedding"]
                    if normalize:
                        emb = torch.nn.functional.normalize(emb, dim=-1)
                    out[idx] = emb.cpu().numpy()
                    count(len(idx))
        return out

    @contextmanager
    def _layer_progress(self, bar: Progress | None) -> Iterator[Callable[[float, int], None]]:
        """While a bar is shown, report each decoder layer's end as a fraction of the batch in flight.

        Yields ``start_batch(offset, n)``: the next forward pass carries ``n`` items, ``offset`` already done.
        """
        layers = getattr(self.model.backbone(), "layers", None)
        if bar is None or not layers:
            yield lambda offset, n: None
            return
        state = {"offset": 0.0, "n": 0, "layer": 0}

        def start_batch(offset: float, n: int) -> None:
            state.update(offset=offset, n=n, layer=0)

        def after_layer(*_) -> None:
            state["layer"] += 1
            bar.partial(state["offset"] + state["n"] * min(state["layer"], len(layers)) / len(layers))

        hooks = [layer.register_forward_hook(after_layer) for layer in layers]
        try:
            yield start_batch
        finally:
            for h in hooks:
                h.remove()
