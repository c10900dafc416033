"""Training passages from FOLDOC, the Free On-line Dictionary of Computing, as Debian packages it (``dict-foldoc``).

    apt-get download dict-foldoc && python -m genretrieval.train.foldoc dict-foldoc_*.deb --out passages.jsonl

Stage ``readout`` trains the document path on passages that no query asked about (``--readout-corpus``): text
like the corpora users index, not only the backbone's own answers. FOLDOC's entries are encyclopedic paragraphs
under a title, like the Wikipedia passages of the benchmarks, and share no text with any evaluation set. Each
entry (aliases that point to the same text count once) becomes one passage: its first ``--words`` words, markup
removed, with the headword as title. Writes JSONL rows ``id, title, text, source, license`` in a seeded order.
"""

from __future__ import annotations

import argparse
import gzip
import json
import random
import re
import subprocess
import sys
import tempfile
from pathlib import Path

_B64 = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/"
LICENSE = "GFDL-1.1-or-later (FOLDOC, Denis Howe)"


def _b64(s: str) -> int:
    n = 0
    for c in s:
        n = n * 64 + _B64.index(c)
    return n


def clean(body: str) -> str:
    """One entry's text without dictd markup: ``{link}`` -> link, ``{text (url)}`` -> text, no ``<category>``,
    no trailing ``(date)``, whitespace collapsed."""
    body = re.sub(r"\{([^{}]*?)\s*\([^(){}]*\)\}", r"\1", body)  # {text (url)}
    body = re.sub(r"[{}]", "", body)
    body = re.sub(r"<[^<>]*>", "", body)
    body = re.sub(r"\(\d{4}-\d{2}-\d{2}\)\s*$", "", body.strip())
    return re.sub(r"\s+", " ", body).strip()


def read_dictd(index: Path, data: Path) -> list[tuple[str, str]]:
    """``(headword, cleaned text)`` per distinct entry of a dictd index and its (gzip or dictzip) data file."""
    raw = gzip.decompress(data.read_bytes()) if data.suffix == ".dz" else data.read_bytes()
    seen: set[int] = set()
    out = []
    for line in index.read_text(encoding="utf-8").splitlines():
        word, offset, length = line.split("\t")[:3]
        start = _b64(offset)
        if word.startswith("00-database") or start in seen:
            continue
        seen.add(start)
        body = raw[start : start + _b64(length)].decode("utf-8", errors="replace")
        title, _, text = body.partition("\n")
        out.append((title.strip(), clean(text)))
    return out


def passages(entries: list[tuple[str, str]], words: int, min_words: int, n: int | None, seed: int) -> list[dict]:
    """Entries with at least ``min_words`` words, cut to ``words``, in a seeded order (the first ``n``)."""
    rows = [
        {
            "id": f"foldoc:{i}",
            "title": title,
            "text": " ".join(text.split()[:words]),
            "source": "foldoc",
            "license": LICENSE,
        }
        for i, (title, text) in enumerate(entries)
        if len(text.split()) >= min_words
    ]
    random.Random(seed).shuffle(rows)
    return rows[:n] if n else rows


def _unpack(deb: Path, where: Path) -> tuple[Path, Path]:
    subprocess.run(["dpkg-deb", "-x", str(deb), str(where)], check=True)
    base = where / "usr" / "share" / "dictd"
    return base / "foldoc.index", base / "foldoc.dict.dz"


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("source", type=Path, help="dict-foldoc .deb, or the folder holding foldoc.index and foldoc.dict.dz")
    ap.add_argument("--out", type=Path, required=True)
    ap.add_argument("--words", type=int, default=100, help="words kept per passage (the benchmarks' passages: ~100)")
    ap.add_argument("--min-words", type=int, default=30)
    ap.add_argument("-n", type=int, default=None, help="passages written (default: all)")
    ap.add_argument("--seed", type=int, default=0)
    args = ap.parse_args(argv)
    with tempfile.TemporaryDirectory() as tmp:
        if args.source.is_dir():
            index, data = args.source / "foldoc.index", args.source / "foldoc.dict.dz"
        else:
            index, data = _unpack(args.source, Path(tmp))
        rows = passages(read_dictd(index, data), args.words, args.min_words, args.n, args.seed)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text("".join(json.dumps(r, ensure_ascii=False) + "\n" for r in rows), encoding="utf-8")
    print(f"{len(rows)} passages -> {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
