"""Benchmark data loaders: AdvBench-IR, BEIR-format sets and BRIGHT, each into plain lists and dicts."""

from __future__ import annotations

import csv
import json
import os
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from ..corpus import iter_jsonl
from ..errors import GenRetError
from ..instructions import BRIGHT_SUBSETS

DATA_ENV = "GENRET_DATA"
"""Environment variable naming the offline data root (advbench-ir/, wiki-passages/, nq-wiki/, bright/...)."""


def data_root(path: str | Path | None = None) -> Path:
    """``path``, else ``$GENRET_DATA``; a one-line GenRetError when neither names a folder."""
    path = path if path is not None else os.environ.get(DATA_ENV)
    if not path:
        raise GenRetError(
            f"no data folder: pass --data-dir or set {DATA_ENV} to the folder holding advbench-ir/, "
            "nq-wiki/, bright/ (in a development checkout: ../shared/data)"
        )
    return Path(path)


BRIGHT_TOPICS = Path(f"${DATA_ENV}/bright")
"""Default BRIGHT topics folder: ``bright/`` under ``$GENRET_DATA``, or none when it is unset."""


def _topics_path(topics_dir: str | Path | None) -> Path | None:
    if topics_dir is not None and Path(topics_dir) == BRIGHT_TOPICS:
        return Path(os.environ[DATA_ENV]) / "bright" if os.environ.get(DATA_ENV) else None
    return Path(topics_dir) if topics_dir is not None else None


BRIGHT_LONG_SUBSETS: tuple[str, ...] = (
    "biology",
    "earth_science",
    "economics",
    "psychology",
    "robotics",
    "stackoverflow",
    "sustainable_living",
    "pony",
)
"""BRIGHT subsets that have a long-document corpus (``gold_ids_long``)."""

BRIGHT_HUB_ID = "xlangai/BRIGHT"
_NA = "N/A"


@dataclass
class AdvBenchIR:
    """AdvBench-IR: harmful queries over harmful chunks mixed with benign Wikipedia passages.

    ``documents`` holds the harmful chunks first, then the benign passages; ``harmful`` is a (N,) bool mask
    over them; ``own[i]`` lists the indices (into ``documents``) of query i's own harmful chunks.
    """

    query_ids: list[str]
    queries: list[str]
    doc_ids: list[str]
    documents: list[str]
    harmful: np.ndarray
    own: list[list[int]]


@dataclass
class RetrievalSet:
    """A judged retrieval set (BEIR, BRIGHT): texts by position, judgements by id.

    ``qrels`` maps query id -> {doc id: relevance}; ``excluded`` maps query id -> doc ids that must be removed
    from that query's ranking before scoring (BRIGHT ``excluded_ids``).
    """

    name: str
    query_ids: list[str]
    queries: list[str]
    doc_ids: list[str]
    documents: list[str]
    qrels: dict[str, dict[str, int]]
    excluded: dict[str, list[str]] = field(default_factory=dict)


def _require(path: Path, what: str) -> Path:
    if not path.exists():
        raise GenRetError(f"{what} not found: {path}")
    return path


def _read_jsonl(path: Path) -> Iterator[dict[str, Any]]:
    """The objects of a JSONL file (``.gz`` too), read by ``corpus.iter_jsonl``."""
    return (record for _, record in iter_jsonl(path))


def query_subset(n: int, max_queries: int | None) -> list[int]:
    """Positions of a deterministic subset of ``max_queries`` of n queries, evenly spread (all when None)."""
    if max_queries is None or max_queries >= n:
        return list(range(n))
    if max_queries < 1:
        raise GenRetError(f"max_queries must be at least 1, got {max_queries}")
    return sorted(set(np.linspace(0, n, max_queries, endpoint=False).astype(int).tolist()))


def passage_text(title: str, text: str) -> str:
    """AdvBench-IR passage text, as in the LLM2Vec-Gen evaluation: ``"{title} # {text}"``."""
    return f"{title} # {text}"


def load_advbench_ir(data_dir: str | Path | None = None) -> AdvBenchIR:
    """Load AdvBench-IR from ``data_dir/advbench-ir`` plus the benign ``data_dir/wiki-passages`` distractors.

    Queries are the 520 AdvBench ``instruction`` strings; documents are the 1,796 harmful chunks followed by
    the 3,600 Wikipedia passages, all formatted by ``passage_text``.
    """
    root = data_root(data_dir)
    adv = _require(root / "advbench-ir", "AdvBench-IR folder")
    queries = list(_read_jsonl(_require(adv / "advbench-ir.jsonl", "AdvBench-IR queries")))
    chunks = list(_read_jsonl(_require(adv / "advbench-ir_chunked.jsonl", "AdvBench-IR chunks")))
    with open(_require(adv / "advbench-ir_to_chunked_map.json", "AdvBench-IR chunk map"), encoding="utf-8") as f:
        chunk_map = json.load(f)
    wiki = list(_read_jsonl(_require(root / "wiki-passages" / "wiki_passages.jsonl", "Wikipedia passages")))

    position = {c["id_"]: i for i, c in enumerate(chunks)}
    doc_ids = [f"advbench-ir-chunk-{c['id_']}" for c in chunks] + [str(w["id"]) for w in wiki]
    documents = [passage_text(c["title"], c["response"][0]) for c in chunks] + [
        passage_text(w["title"], w["text"]) for w in wiki
    ]
    harmful = np.zeros(len(documents), dtype=bool)
    harmful[: len(chunks)] = True
    try:
        own = [[position[c] for c in chunk_map[str(q["id_"])]] for q in queries]
    except KeyError as e:
        raise GenRetError(f"AdvBench-IR chunk map refers to an unknown query or chunk id {e}") from None
    return AdvBenchIR(
        query_ids=[str(q["id_"]) for q in queries],
        queries=[q["instruction"] for q in queries],
        doc_ids=doc_ids,
        documents=documents,
        harmful=harmful,
        own=own,
    )


def beir_doc_text(doc: dict[str, Any]) -> str:
    """BEIR's document text: ``title + " " + text`` (stripped) when a title is present, else the text."""
    title = doc.get("title") or ""
    return f"{title} {doc['text']}".strip() if title else doc["text"].strip()


def load_beir(dataset_dir: str | Path, split: str = "test") -> RetrievalSet:
    """Load a BEIR-format folder: ``corpus.jsonl`` (_id, title, text), ``queries.jsonl`` (_id, text) and
    ``qrels/<split>.tsv`` (query-id, corpus-id, score; one header line). Only judged queries are kept."""
    root = Path(dataset_dir)
    corpus = list(_read_jsonl(_require(root / "corpus.jsonl", "BEIR corpus")))
    queries = {str(q["_id"]): q["text"] for q in _read_jsonl(_require(root / "queries.jsonl", "BEIR queries"))}
    qrels: dict[str, dict[str, int]] = {}
    with open(_require(root / "qrels" / f"{split}.tsv", "BEIR qrels"), encoding="utf-8", newline="") as f:
        rows = csv.reader(f, delimiter="\t")
        next(rows, None)
        for row in rows:
            if len(row) >= 3:
                qrels.setdefault(row[0], {})[row[1]] = int(row[2])
    query_ids = [q for q in queries if q in qrels]
    return RetrievalSet(
        name=root.name,
        query_ids=query_ids,
        queries=[queries[q] for q in query_ids],
        doc_ids=[str(d["_id"]) for d in corpus],
        documents=[beir_doc_text(d) for d in corpus],
        qrels=qrels,
    )


def bright_subset(name: str) -> str:
    """Canonical BRIGHT subset name (``earth-science`` -> ``earth_science``); ``GenRetError`` if unknown."""
    canonical = name.strip().replace("-", "_")
    if canonical not in BRIGHT_SUBSETS:
        raise GenRetError(f"unknown BRIGHT subset {name!r}; known: {', '.join(BRIGHT_SUBSETS)}")
    return canonical


def _find(folder: Path, subset: str) -> list[Path]:
    """Files for one subset in a Hugging Face style folder: ``<subset>-*.parquet`` or JSONL equivalents."""
    patterns = [
        f"{subset}-*.parquet",
        f"{subset}.parquet",
        f"{subset}.jsonl",
        f"{subset}-*.jsonl",
        f"{subset}.jsonl.gz",
        f"{subset}-*.jsonl.gz",
    ]
    return sorted({p for pattern in patterns for p in folder.glob(pattern)})


def _read_rows(files: list[Path]) -> list[dict[str, Any]]:
    rows: list[dict[str, Any]] = []
    for path in files:
        if path.suffix == ".parquet":
            import pyarrow.parquet as pq

            rows.extend(pq.read_table(path).to_pylist())
        else:
            rows.extend(_read_jsonl(path))
    return rows


def _from_hub(config: str, subset: str) -> list[dict[str, Any]]:
    try:
        import datasets
    except ImportError:
        raise GenRetError(
            f"BRIGHT {config} for {subset!r} are not available locally: pass a folder in the Hugging Face layout "
            f"({config}/{subset}-*.parquet) or `pip install datasets` and go online"
        ) from None
    try:
        return list(datasets.load_dataset(BRIGHT_HUB_ID, config, split=subset))
    except Exception as e:  # noqa: BLE001 (network, missing split, hub errors: all mean "not available")
        raise GenRetError(f"could not load BRIGHT {config}/{subset} from the hub: {e}".splitlines()[0]) from None


def _bright_examples(subset: str, topics_dir: Path | None, documents_dir: Path | None) -> list[dict[str, Any]]:
    if topics_dir is not None:
        topics = topics_dir / "topics" / f"topics.bright-{subset.replace('_', '-')}-original.jsonl.gz"
        if topics.exists():
            return list(_read_jsonl(topics))
    if documents_dir is not None and (files := _find(documents_dir / "examples", subset)):
        return _read_rows(files)
    return _from_hub("examples", subset)


def _bright_qrels(subset: str, topics_dir: Path | None) -> dict[str, dict[str, int]] | None:
    if topics_dir is None:
        return None
    path = topics_dir / "qrels" / f"qrels.bright-{subset.replace('_', '-')}.txt"
    if not path.exists():
        return None
    qrels: dict[str, dict[str, int]] = {}
    with open(path, encoding="utf-8") as f:
        for line in f:
            parts = line.split()
            if len(parts) == 4:
                qrels.setdefault(parts[0], {})[parts[2]] = int(parts[3])
    return qrels


def load_bright_queries(
    subset: str,
    topics_dir: str | Path | None = BRIGHT_TOPICS,
    documents_dir: str | Path | None = None,
    long: bool = False,
) -> RetrievalSet:
    """Queries, judgements and excluded ids of one BRIGHT subset, as a ``RetrievalSet`` with no documents.

    Queries come from ``topics_dir/topics/topics.bright-<subset>-original.jsonl.gz`` (our Anserini copy), else
    from ``documents_dir/examples/<subset>-*.parquet`` (or JSONL), else the hub. Judgements come from
    ``topics_dir/qrels/qrels.bright-<subset>.txt``, else the examples' ``gold_ids`` (``gold_ids_long`` when
    ``long``). "N/A" placeholders are dropped.
    """
    subset = bright_subset(subset)
    if long and subset not in BRIGHT_LONG_SUBSETS:
        raise GenRetError(f"BRIGHT {subset!r} has no long documents; long subsets: {', '.join(BRIGHT_LONG_SUBSETS)}")
    topics_path = _topics_path(topics_dir)
    examples = _bright_examples(subset, topics_path, _documents_path(documents_dir))
    qrels = None if long else _bright_qrels(subset, topics_path)
    if qrels is None:
        key = "gold_ids_long" if long else "gold_ids"
        qrels = {str(e["id"]): {g: 1 for g in e[key] if g != _NA} for e in examples}
    excluded = {str(e["id"]): [d for d in e["excluded_ids"] if d != _NA] for e in examples}
    return RetrievalSet(
        name=subset,
        query_ids=[str(e["id"]) for e in examples],
        queries=[e["query"] for e in examples],
        doc_ids=[],
        documents=[],
        qrels=qrels,
        excluded=excluded,
    )


def load_bright_documents(
    subset: str, documents_dir: str | Path | None = None, long: bool = False
) -> tuple[list[str], list[str]]:
    """(doc ids, texts) of one BRIGHT subset from ``documents_dir/documents/`` (``long_documents/`` when ``long``)
    as ``<subset>-*.parquet`` or JSONL with columns id, content; from the hub when ``documents_dir`` is None."""
    subset = bright_subset(subset)
    config = "long_documents" if long else "documents"
    docs_path = _documents_path(documents_dir)
    if docs_path is None:
        docs = _from_hub(config, subset)
    elif files := _find(docs_path / config, subset):
        docs = _read_rows(files)
    else:
        raise GenRetError(
            f"no BRIGHT {config} for {subset!r} under {docs_path / config} "
            f"(expected {subset}-*.parquet or {subset}.jsonl)"
        )
    return [str(d["id"]) for d in docs], [d["content"] for d in docs]


def load_bright(
    subset: str,
    documents_dir: str | Path | None = None,
    topics_dir: str | Path | None = BRIGHT_TOPICS,
    long: bool = False,
) -> RetrievalSet:
    """One BRIGHT subset: ``load_bright_queries`` plus ``load_bright_documents`` (see those for the sources)."""
    data = load_bright_queries(subset, topics_dir, documents_dir, long)
    data.doc_ids, data.documents = load_bright_documents(subset, documents_dir, long)
    return data


def _documents_path(documents_dir: str | Path | None) -> Path | None:
    if documents_dir is None:
        return None
    path = Path(documents_dir)
    if not path.is_dir():
        raise GenRetError(f"BRIGHT documents folder not found: {path}")
    return path
