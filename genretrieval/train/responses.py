"""Stage a: the backbone answers every query through its chat template; answers cached as Parquet parts."""

from __future__ import annotations

import time
from pathlib import Path
from typing import Sequence

import pyarrow as pa
import pyarrow.parquet as pq
import torch

from ..encoder.generate import chat_prompt_ids, generate
from ..fileio import write_parquet_atomic
from ..progress import progress_bar
from .data import Query

SCHEMA = pa.schema(
    [
        ("id", pa.string()),
        ("query", pa.string()),
        ("source", pa.string()),
        ("response", pa.string()),
        ("response_tokens", pa.int32()),
        ("finished", pa.bool_()),
    ]
)


def read_responses(directory: str | Path) -> pa.Table:
    """All cached responses in ``directory`` (one Parquet part per finished batch)."""
    parts = sorted(Path(directory).glob("part-*.parquet"))
    if not parts:
        return SCHEMA.empty_table()
    return pa.concat_tables([pq.read_table(p, schema=SCHEMA) for p in parts])


def _write_part(directory: Path, rows: list[dict]) -> None:
    """Write ``rows`` as the next part, atomically: a part is either complete or absent."""
    n = len(list(directory.glob("part-*.parquet")))
    write_parquet_atomic(directory / f"part-{n:06d}.parquet", pa.Table.from_pylist(rows, schema=SCHEMA))


@torch.inference_mode()
def generate_responses(
    lm,
    tokenizer,
    queries: Sequence[Query],
    directory: str | Path,
    batch_size: int = 32,
    max_new_tokens: int = 128,
    max_query_tokens: int = 256,
    progress: bool = True,
    log=print,
) -> pa.Table:
    """Greedy answers to ``queries`` not yet in ``directory``; each batch is written as it finishes.

    Interrupting and re-running resumes where it stopped. Returns every cached response.
    """
    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    done = set(read_responses(directory).column("id").to_pylist())
    todo = [q for q in queries if q.id not in done]
    if not todo:
        return read_responses(directory)
    eos = {
        tokenizer.eos_token_id,
        *(tokenizer.convert_tokens_to_ids(t) for t in ("<|im_end|>",) if t in tokenizer.get_vocab()),
    }
    eos.discard(None)
    t0, tokens = time.time(), 0
    # Chunks in the given (random) order, sorted by length inside a chunk to limit padding.
    chunk = batch_size * 8
    with progress_bar("generating responses", len(todo), progress) as advance:
        for c in range(0, len(todo), chunk):
            block = todo[c : c + chunk]
            prompts = [p[-max_query_tokens:] for p in chat_prompt_ids(tokenizer, [q.text for q in block])]
            order = sorted(range(len(block)), key=lambda i: len(prompts[i]))
            for idx, out in generate(
                lm, tokenizer, prompts, batch_size, max_new_tokens, order, eos_token_id=sorted(eos)
            ):
                rows = []
                for r, i in enumerate(idx):
                    seq = out[r].tolist()
                    cut = next((j for j, t in enumerate(seq) if t in eos), None)
                    body = seq if cut is None else seq[:cut]
                    tokens += len(body)
                    rows.append(
                        {
                            "id": block[i].id,
                            "query": block[i].text,
                            "source": block[i].source,
                            "response": tokenizer.decode(body, skip_special_tokens=True).strip(),
                            "response_tokens": len(body),
                            "finished": cut is not None,
                        }
                    )
                _write_part(directory, rows)
                advance(len(idx))
            log(f"responses: {c + len(block)}/{len(todo)} new, {tokens / (time.time() - t0):.1f} tokens/s")
    return read_responses(directory)
