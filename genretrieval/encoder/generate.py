"""Greedy generation through the chat template: HyDE's hypothetical answers and the training responses."""

from __future__ import annotations

from typing import Iterator, Sequence

import torch

from .model import left_pad


def chat_prompt_ids(tokenizer, texts: Sequence[str]) -> list[list[int]]:
    """Token ids of each text as a single user turn, with the generation prompt."""
    return [
        tokenizer.apply_chat_template(
            [{"role": "user", "content": t}], add_generation_prompt=True, tokenize=True, return_dict=False
        )
        for t in texts
    ]


@torch.inference_mode()
def generate(
    lm,
    tokenizer,
    prompts: Sequence[list[int]],
    batch_size: int,
    max_new_tokens: int,
    order: Sequence[int] | None = None,
    **options,
) -> Iterator[tuple[list[int], torch.Tensor]]:
    """Greedy continuations of token-id ``prompts``, ``batch_size`` at a time (left-padded together), taken in
    ``order`` (default: as given). Yields each batch's prompt indices and its new tokens, (B, new) on the CPU.
    ``options`` (``eos_token_id``, ``min_new_tokens``...) go to ``lm.generate``."""
    order = range(len(prompts)) if order is None else order
    device = lm.get_input_embeddings().weight.device
    for start in range(0, len(order), batch_size):
        idx = list(order[start : start + batch_size])
        ids, mask = left_pad([prompts[i] for i in idx], tokenizer.pad_token_id)
        out = lm.generate(
            input_ids=ids.to(device),
            attention_mask=mask.to(device),
            do_sample=False,
            max_new_tokens=max_new_tokens,
            pad_token_id=tokenizer.pad_token_id,
            **options,
        )
        yield idx, out[:, ids.shape[1] :].cpu()
