"""Frozen features: the mean final hidden state at the K compression tokens, cached per text.

While the special-token rows stay fixed, the backbone's hidden states at those tokens do not change, and since
``recon`` and ``align`` are linear, ``mean_k align(recon(h_k)) = align(recon(mean_k h_k))``. So one forward pass
per example gives everything the read-out needs, and the read-out then trains for many epochs in seconds.
"""

from __future__ import annotations

import hashlib
import time
from pathlib import Path
from typing import Sequence

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import torch

from ..fileio import write_parquet_atomic
from ..progress import progress_bar


def default_feature_dir() -> Path:
    """``$GENRET_HOME/cache/features``: where ``genret eval`` caches the features of corpora and queries."""
    from .backbones import genret_home

    return genret_home() / "cache" / "features"


def features_key(encoder, instruction: str) -> str:
    """What the cached features depend on: backbone weights, token rows, instruction, truncation, dtype."""
    h = hashlib.sha256()
    h.update(f"{encoder.config.backbone_weights}|{instruction}|{encoder.max_length}|{encoder.dtype}".encode())
    h.update(encoder.model.special.detach().float().cpu().numpy().tobytes())
    return h.hexdigest()[:16]


def _read(directory: Path) -> dict[str, np.ndarray]:
    out: dict[str, np.ndarray] = {}
    for part in sorted(directory.glob("part-*.parquet")):
        t = pq.read_table(part)
        vecs = np.asarray(t.column("h").to_pylist(), dtype=np.float32)
        out.update(zip(t.column("id").to_pylist(), vecs))
    return out


@torch.inference_mode()
def cached_features(
    encoder,
    texts: Sequence[str],
    instruction: str,
    directory: str | Path,
    batch_size: int = 16,
    part_size: int = 256,
    progress: bool = True,
    log=print,
) -> np.ndarray:
    """Mean hidden state at the K tokens of ``instruction + text`` for each text: (N, H) float32.

    Cached by the text's sha256 under ``directory/<features_key>/`` in Parquet parts of ``part_size`` rows,
    each written atomically, so an interrupted run keeps what it finished. Texts take the search path exactly
    (``GenEncoder.tokenize``: instruction prefix, truncation that keeps the special tokens, left padding).
    """
    ids = [hashlib.sha256(t.encode("utf-8")).hexdigest()[:32] for t in texts]
    where = Path(directory) / features_key(encoder, instruction)
    where.mkdir(parents=True, exist_ok=True)
    cache = _read(where)
    todo = list({rid: i for i, rid in enumerate(ids) if rid not in cache}.values())  # each new text once
    if todo:
        rows = encoder.tokenize([texts[i] for i in todo], instruction)
        t0, n_tokens = time.time(), 0
        with progress_bar(f"features ({where.name})", len(todo), progress) as advance:
            for p in range(0, len(todo), part_size):
                # Sorted by length inside a part: little padding, and parts still follow the given order.
                part = sorted(range(p, min(p + part_size, len(todo))), key=lambda j: len(rows[j]))
                out_ids, out_vecs = [], []
                for b in range(0, len(part), batch_size):
                    batch = part[b : b + batch_size]
                    ids_t, mask = encoder.pad([rows[j] for j in batch])
                    h = encoder.model.compress(ids_t, mask).mean(dim=1).cpu().numpy()
                    out_ids += [ids[todo[j]] for j in batch]
                    out_vecs += list(h)
                    n_tokens += int(mask.sum())
                    advance(len(batch))
                n = len(list(where.glob("part-*.parquet")))
                table = pa.table(
                    {
                        "id": pa.array(out_ids, pa.string()),
                        "h": pa.array([v.tolist() for v in out_vecs], pa.list_(pa.float32())),
                    }
                )
                write_parquet_atomic(where / f"part-{n:06d}.parquet", table)
                cache.update(zip(out_ids, out_vecs))
                log(f"features: {p + len(part)}/{len(todo)} new, {n_tokens / (time.time() - t0):.0f} tokens/s")
    return np.stack([cache[rid] for rid in ids]).astype(np.float32)
