"""Training queries and passages: read JSONL files, validate, deduplicate, and sample reproducibly."""

from __future__ import annotations

import random
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Sequence

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

    def parse(f: Path, where: str, row: dict) -> Query | None:
        if text_field not in row or id_field not in row:
            raise GenRetError(f"{where}: missing field {text_field!r} or {id_field!r}")
        text = str(row[text_field]).strip()
        return _row(f, row[id_field], text, row) if text else None

    rng = random.Random(seed)
    out = sorted(_read_sampled(files, ("query", "queries"), parse, rng).values(), key=lambda q: q.id)
    rng.shuffle(out)
    return out[:max_queries] if max_queries else out


def load_passages(files: Sequence[str | Path], seed: int = 0) -> list[Query]:
    """Passages that no query asked about, for stage ``readout`` (``--readout-corpus``): JSONL rows with ``text``,
    an optional ``title`` (read as ``title + " " + text``, as BEIR corpora are) and ``id`` or ``_id``. A file
    given as ``path:N`` contributes a seeded sample of N rows. Sorted by id, so the held-out split is stable."""

    def parse(f: Path, where: str, row: dict) -> Query:
        rid = row.get("id", row.get("_id"))
        if rid is None or not str(row.get("text") or "").strip():
            raise GenRetError(f"{where}: a passage needs 'id' (or '_id') and a non-empty 'text'")
        title = str(row.get("title") or "").strip()
        text = str(row["text"]).strip()
        return _row(f, rid, f"{title} {text}" if title else text, row)

    return sorted(
        _read_sampled(files, ("passage", "passages"), parse, random.Random(seed)).values(), key=lambda q: q.id
    )


def _row(f: Path, rid, text: str, row: dict) -> Query:
    """A row of file ``f``, its id prefixed with the file stem to stay unique across files."""
    return Query(f"{f.stem}:{rid}", text, str(row.get("source", f.stem)), str(row.get("license", "")))


def _read_sampled(
    files: Sequence[str | Path],
    what: tuple[str, str],
    parse: Callable[[Path, str, dict], Query | None],
    rng: random.Random,
) -> dict[str, Query]:
    """Every file's rows (``parse`` returns None to skip one), each ``path:N`` file sampled to N with ``rng``;
    by id, deduplicated across files. ``what``: the row's name, singular and plural. A missing or empty file is
    an error."""
    out: dict[str, Query] = {}
    for spec in map(str, files):
        f, cap = _split_cap(spec)
        if not f.is_file():
            raise GenRetError(f"{what[0]} file not found: {f}")
        rows = [q for where, row in iter_jsonl(f) if (q := parse(f, where, row)) is not None]
        if not rows:
            raise GenRetError(f"{what[0]} file {f} has no {what[1]}")
        if cap is not None and cap < len(rows):
            rows = rng.sample(rows, cap)
        out.update((q.id, q) for q in rows)
    return out


def _split_cap(spec: str) -> tuple[Path, int | None]:
    path, _, cap = spec.rpartition(":")
    if path and cap.isdigit() and not Path(spec).exists():
        return Path(path), int(cap)
    return Path(spec), None
