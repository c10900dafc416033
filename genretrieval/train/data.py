"""Training queries and passages: read JSONL files, validate, deduplicate, and sample reproducibly."""

from __future__ import annotations

import random
from dataclasses import dataclass
from pathlib import Path
from typing import Sequence

from ..corpus import iter_jsonl
from ..errors import GenRetError


@dataclass(frozen=True)
class Query:
    id: str
    text: str
    source: str = ""
    license: str = ""


def load_queries(
    files: Sequence[str | Path],
    id_field: str = "id",
    text_field: str = "text",
    max_queries: int | None = None,
    seed: int = 0,
) -> list[Query]:
    """Read queries from JSONL files (one object per line), in a seeded random order.

    The order is what generation follows, so a partly finished run covers an unbiased sample of every file.
    A file given as ``path:N`` contributes a seeded sample of N of its queries. ``max_queries`` keeps the
    first N of the final order. Ids are prefixed with the file stem to stay unique.
    """
    if not files:
        raise GenRetError("no query files given")
    queries: dict[str, Query] = {}
    rng = random.Random(seed)
    for spec in map(str, files):
        f, cap = _split_cap(spec)
        if not f.is_file():
            raise GenRetError(f"query file not found: {f}")
        rows: list[Query] = []
        for where, row in iter_jsonl(f):
            if text_field not in row or id_field not in row:
                raise GenRetError(f"{where}: missing field {text_field!r} or {id_field!r}")
            text = str(row[text_field]).strip()
            if text:
                rows.append(
                    Query(
                        f"{f.stem}:{row[id_field]}", text, str(row.get("source", f.stem)), str(row.get("license", ""))
                    )
                )
        if not rows:
            raise GenRetError(f"query file {f} has no queries")
        if cap is not None and cap < len(rows):
            rows = rng.sample(rows, cap)
        queries.update((q.id, q) for q in rows)
    out = sorted(queries.values(), key=lambda q: q.id)
    rng.shuffle(out)
    return out[:max_queries] if max_queries else out


def load_passages(files: Sequence[str | Path], seed: int = 0) -> list[Query]:
    """Passages that no query asked about, for stage ``readout`` (``--readout-corpus``): JSONL rows with ``text``,
    an optional ``title`` (read as ``title + " " + text``, as BEIR corpora are) and ``id`` or ``_id``. A file
    given as ``path:N`` contributes a seeded sample of N rows. Sorted by id, so the held-out split is stable."""
    out: dict[str, Query] = {}
    rng = random.Random(seed)
    for spec in map(str, files):
        f, cap = _split_cap(spec)
        if not f.is_file():
            raise GenRetError(f"passage file not found: {f}")
        rows = []
        for where, row in iter_jsonl(f):
            rid = row.get("id", row.get("_id"))
            if rid is None or not str(row.get("text") or "").strip():
                raise GenRetError(f"{where}: a passage needs 'id' (or '_id') and a non-empty 'text'")
            title = str(row.get("title") or "").strip()
            text = f"{title} {str(row['text']).strip()}" if title else str(row["text"]).strip()
            rows.append(Query(f"{f.stem}:{rid}", text, str(row.get("source", f.stem)), str(row.get("license", ""))))
        if cap is not None and cap < len(rows):
            rows = rng.sample(rows, cap)
        out.update((q.id, q) for q in rows)
    if not out:
        raise GenRetError("the passage files hold no passages")
    return sorted(out.values(), key=lambda q: q.id)


def _split_cap(spec: str) -> tuple[Path, int | None]:
    path, _, cap = spec.rpartition(":")
    if path and cap.isdigit() and not Path(spec).exists():
        return Path(path), int(cap)
    return Path(spec), None
