"""The LLM2Vec-Gen module: a frozen causal LM, trainable special-token rows, and the recon/align projections."""

from __future__ import annotations

from typing import Any

import torch
from torch import nn


def position_ids_from_mask(mask: torch.Tensor) -> torch.Tensor:
    """Positions counted over real tokens only, so left padding does not shift them. (B, L) -> (B, L)."""
    return (mask.long().cumsum(-1) - 1).clamp(min=0)


def left_pad(rows, pad_id: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Token id lists -> left-padded ``input_ids`` and ``attention_mask``, both (B, L) long, on the CPU."""
    width = max(len(r) for r in rows)
    ids = torch.full((len(rows), width), pad_id, dtype=torch.long)
    mask = torch.zeros((len(rows), width), dtype=torch.long)
    for i, r in enumerate(rows):
        if len(r):
            ids[i, width - len(r) :] = torch.as_tensor(r, dtype=torch.long)
            mask[i, width - len(r) :] = 1
    return ids, mask


class GenModel(nn.Module):
    """Frozen ``causal_lm`` plus the trainable adapter.

    Trainable (fp32): ``special`` (T+K, H) token rows appended after the text (T thought tokens, then K
    compression tokens), ``recon`` Linear(H, H) and ``align`` Linear(H, D). The embedding of a text is
    ``mean_k align(recon(h_k))`` over the K compression positions of the last (post-norm) hidden state.
    ``init=False`` skips the seeded initialisation, for an adapter about to be loaded.
    """

    def __init__(
        self,
        causal_lm: nn.Module,
        num_compression: int = 10,
        num_thought: int = 0,
        dim: int = 384,
        seed: int = 0,
        init: bool = True,
    ):
        super().__init__()
        if num_compression <= 0:
            raise ValueError("num_compression must be >= 1")
        if num_thought < 0:
            raise ValueError("num_thought must be >= 0")
        # A Hugging Face causal LM: its methods (get_input_embeddings, get_decoder, generate...) are duck-typed.
        lm: Any = causal_lm
        self.lm = lm
        self.lm.requires_grad_(False)
        self.num_compression = num_compression
        self.num_thought = num_thought
        emb = lm.get_input_embeddings().weight
        hidden = emb.shape[1]
        self.special = nn.Parameter(torch.zeros(num_thought + num_compression, hidden, device=emb.device))
        self.recon = nn.Linear(hidden, hidden, device=emb.device)
        self.align = nn.Linear(hidden, dim, device=emb.device)
        if init:
            self.reset_adapter(seed)

    @torch.no_grad()
    def reset_adapter(self, seed: int = 0) -> None:
        """Seeded initial adapter, independent of the global RNG and of the backbone's load dtype."""
        g = torch.Generator().manual_seed(seed)
        # New rows start near the average token so the frozen LM sees in-distribution inputs. Statistics of the
        # bf16-rounded table keep a seeded untrained adapter identical whichever dtype the backbone loads in.
        table = self.lm.get_input_embeddings().weight.detach().to(torch.bfloat16).float()
        mean, std = table.mean(0), table.std()
        noise = torch.randn(self.special.shape, generator=g)
        self.special.copy_(mean.cpu() + 0.1 * std.cpu() * noise)
        for lin in (self.recon, self.align):
            bound = lin.in_features**-0.5
            lin.weight.copy_(torch.empty(lin.weight.shape).uniform_(-bound, bound, generator=g))
            lin.bias.zero_()

    @property
    def hidden_size(self) -> int:
        return self.special.shape[1]

    @property
    def dim(self) -> int:
        return self.align.out_features

    @property
    def num_special(self) -> int:
        return self.num_thought + self.num_compression

    def backbone(self) -> nn.Module:
        """The decoder without its lm_head (encoding never needs the vocabulary projection)."""
        return self.lm.get_decoder() if hasattr(self.lm, "get_decoder") else self.lm.model

    def adapter_parameters(self) -> list[nn.Parameter]:
        return [self.special, *self.recon.parameters(), *self.align.parameters()]

    def compress(self, input_ids: torch.Tensor, attention_mask: torch.Tensor) -> torch.Tensor:
        """Hidden states at the K compression positions.

        input_ids, attention_mask: (B, L), left-padded text. Returns (B, K, H) fp32.
        """
        embed = self.lm.get_input_embeddings()
        dtype = embed.weight.dtype
        b = input_ids.shape[0]
        special = self.special.to(dtype).unsqueeze(0).expand(b, -1, -1)
        inputs = torch.cat([embed(input_ids), special], dim=1)
        mask = torch.cat([attention_mask, attention_mask.new_ones(b, self.num_special)], dim=1)
        out = self.backbone()(
            inputs_embeds=inputs, attention_mask=mask, position_ids=position_ids_from_mask(mask), use_cache=False
        )
        return out.last_hidden_state[:, -self.num_compression :].float()

    def forward(self, input_ids: torch.Tensor, attention_mask: torch.Tensor) -> dict[str, torch.Tensor]:
        """Returns ``h`` (B, K, H), ``soft_prompt`` = recon(h) (B, K, H) and ``embedding`` (B, D), all fp32."""
        h = self.compress(input_ids, attention_mask)
        soft = self.recon(h)
        return {"h": h, "soft_prompt": soft, "embedding": self.align(soft).mean(dim=1)}
