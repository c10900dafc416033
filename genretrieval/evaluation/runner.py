"""Benchmark runners: index a corpus with an Encoder or Retriever, rank the queries, score the rankings."""

from __future__ import annotations

import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from ..encoder.base import Encoder
from ..errors import GenRetError
from ..instructions import BRIGHT_SUBSETS
from .data import (
    BRIGHT_TOPICS,
    RetrievalSet,
    bright_subset,
    data_root,
    load_advbench_ir,
    load_beir,
    load_bright,
    query_subset,
)
from .metrics import ADVBENCH_KS, advbench_metrics, trec_metrics
from .refusal import REFUSAL_BENIGN, default_teacher, load_benign_queries, query_encoder, refusal_check, refusal_vector
from .result import EvalResult, RefusalCheck
from .retrieval import DenseRetriever, Ranking, Retriever

BEIR_DEPTH = 100
"""Documents ranked per BEIR query (enough for Recall@100)."""
BRIGHT_DEPTH = 1000
"""Documents kept per BRIGHT query after removing excluded ids, as in the official evaluation."""


def as_retriever(
    system: Encoder | Retriever,
    cache_dir: str | Path | None = None,
    cache: bool = True,
    batch_size: int = 16,
    normalize: bool = True,
    progress: bool = False,
) -> Retriever:
    """A ``Retriever`` as is; an ``Encoder`` wrapped in a ``DenseRetriever`` with the other arguments."""
    if isinstance(system, Retriever):
        return system
    if isinstance(system, Encoder):
        return DenseRetriever(
            system,
            cache_dir=cache_dir,
            cache=cache,
            batch_size=batch_size,
            normalize=normalize,
            progress=progress,
        )
    raise GenRetError(f"cannot evaluate a {type(system).__name__}: expected an Encoder or a Retriever")


def system_label(system: Encoder | Retriever, name: str | None = None) -> str:
    """``name``, else "<kind>:<name, model or backbone>" from the system's identity, else its class name."""
    if name:
        return name
    identity = system.identity()
    what = identity.get("name") or identity.get("model") or identity.get("backbone")
    label = ":".join(str(part) for part in (identity.get("kind"), what) if part)
    return label or type(system).__name__


def _rank(
    retriever: Retriever,
    documents: Sequence[str],
    queries: Sequence[str],
    k: int,
    task: str,
    exclude: Sequence[set[int]] | None = None,
) -> tuple[list[Ranking], dict[str, float]]:
    """Index, search, drop each query's excluded documents, keep k; also returns the seconds spent."""
    start = time.perf_counter()
    retriever.index(documents, task=task)
    indexed = time.perf_counter()
    extra = max((len(e) for e in exclude), default=0) if exclude else 0
    rankings = retriever.search(queries, k + extra, task=task)
    if exclude:
        rankings = [[(i, s) for i, s in r if i not in e][:k] for r, e in zip(rankings, exclude)]
    seconds = {"index": indexed - start, "search": time.perf_counter() - indexed}
    return rankings, seconds


def _result(
    benchmark: str,
    system: Encoder | Retriever,
    name: str | None,
    task: str,
    num_queries: int,
    num_documents: int,
    scores: dict,
    seconds: dict[str, float],
    settings: dict[str, Any],
) -> EvalResult:
    return EvalResult(
        benchmark=benchmark,
        system=system_label(system, name),
        identity=system.identity(),
        task=task,
        num_queries=num_queries,
        num_documents=num_documents,
        metrics=scores["mean"],
        per_query=scores["per_query"],
        seconds=seconds,
        settings=settings,
    )


def run_advbench_ir(
    system: Encoder | Retriever,
    data_dir: str | Path | None = None,
    *,
    max_queries: int | None = None,
    ks: Sequence[int] = ADVBENCH_KS,
    name: str | None = None,
    batch_size: int = 16,
    normalize: bool = True,
    cache_dir: str | Path | None = None,
    cache: bool = True,
    progress: bool = False,
    refusal_benign: int = REFUSAL_BENIGN,
    refusal_teacher: Encoder | None = None,
) -> EvalResult:
    """AdvBench-IR: how often harmful queries retrieve harmful passages (lower is safer), plus the refusal check.

    ``data_dir`` (default ``$GENRET_DATA``) holds ``advbench-ir/`` and ``wiki-passages/`` (and, for the refusal
    check, ``nq-wiki/`` and ``train-queries/``). Queries and documents use the ``advbench-ir`` task. Returns an
    ``EvalResult`` whose ``metrics`` are the accuracy@k, any_harm@k and malicious_frequency@k means.

    ``refusal``: the cosine between each query's embedding (this system's query path) and the teacher's embedding
    of the canned refusal (``refusal.REFUSAL_TEXT``) as a harmfulness score, with its ROC-AUC separating the
    evaluated harmful queries from ``min(refusal_benign, queries evaluated)`` benign queries of each set
    (nq-wiki, Alpaca; see ``refusal.load_benign_queries``); see ``refusal.refusal_check``. The harmful query
    vectors are those the search computed. Systems without query embeddings (BM25) get a check with only
    ``skipped`` (the reason); ``refusal_benign=0`` leaves ``refusal`` None. ``refusal_teacher`` embeds the
    refusal (default: the system's own all-MiniLM-L6-v2 when it has one, else a freshly loaded one).
    """
    data_dir = data_root(data_dir)
    data = load_advbench_ir(data_dir)
    keep = query_subset(len(data.queries), max_queries)
    retriever = as_retriever(system, cache_dir, cache, batch_size, normalize, progress)
    encoder = query_encoder(retriever)
    check = bool(refusal_benign) and encoder is not None
    if check:  # before the search, so missing data or teacher fail before the expensive part
        benign = load_benign_queries(data_dir, min(refusal_benign, len(keep)))
        teacher = refusal_teacher if refusal_teacher is not None else default_teacher(encoder)
        refusal = refusal_vector(teacher)
    rankings, seconds = _rank(retriever, data.documents, [data.queries[i] for i in keep], max(ks), "advbench-ir")
    scores = advbench_metrics(
        [[i for i, _ in r] for r in rankings],
        data.harmful,
        [data.own[i] for i in keep],
        query_ids=[data.query_ids[i] for i in keep],
        ks=ks,
    )
    settings = {
        "data_dir": str(data_dir),
        "max_queries": max_queries,
        "ks": list(ks),
        "batch_size": batch_size,
        "normalize": normalize,
        "refusal_benign": refusal_benign,
    }
    result = _result(
        "advbench-ir", system, name, "advbench-ir", len(keep), len(data.documents), scores, seconds, settings
    )
    if check:
        assert encoder is not None and isinstance(retriever, DenseRetriever)  # query_encoder found its encoder
        harmful = np.asarray(retriever.query_embeddings, dtype=np.float32)
        result.refusal = refusal_check(
            encoder, harmful, benign, refusal, "advbench-ir", batch_size=batch_size, progress=progress
        )
    elif refusal_benign:
        result.refusal = RefusalCheck(skipped=f"{result.system} has no query embeddings")
    return result


def evaluate_set(
    system: Encoder | Retriever,
    data: RetrievalSet,
    task: str,
    k: int,
    *,
    max_queries: int | None = None,
    name: str | None = None,
    benchmark: str | None = None,
    batch_size: int = 16,
    normalize: bool = True,
    cache_dir: str | Path | None = None,
    cache: bool = True,
    progress: bool = False,
) -> EvalResult:
    """Rank a judged set's queries (top ``k`` after removing ``data.excluded``) and score them with
    ``trec_metrics`` (nDCG@10, Recall@10/100, MRR@10); the ``EvalResult`` has no ``refusal``."""
    keep = query_subset(len(data.queries), max_queries)
    query_ids = [data.query_ids[i] for i in keep]
    position = {d: i for i, d in enumerate(data.doc_ids)}
    exclude = [{position[d] for d in data.excluded.get(q, ()) if d in position} for q in query_ids]
    retriever = as_retriever(system, cache_dir, cache, batch_size, normalize, progress)
    rankings, seconds = _rank(retriever, data.documents, [data.queries[i] for i in keep], k, task, exclude)
    run = {q: {data.doc_ids[i]: s for i, s in r} for q, r in zip(query_ids, rankings)}
    scores = trec_metrics(run, {q: data.qrels.get(q, {}) for q in query_ids})
    settings = {"max_queries": max_queries, "depth": k, "batch_size": batch_size, "normalize": normalize}
    return _result(
        benchmark or data.name, system, name, task, len(keep), len(data.documents), scores, seconds, settings
    )


def run_beir(
    system: Encoder | Retriever,
    dataset_dir: str | Path | None = None,
    *,
    split: str = "test",
    task: str = "retrieval",
    max_queries: int | None = None,
    name: str | None = None,
    batch_size: int = 16,
    normalize: bool = True,
    cache_dir: str | Path | None = None,
    cache: bool = True,
    progress: bool = False,
) -> EvalResult:
    """A BEIR-format set (default: ``$GENRET_DATA/nq-wiki``), top 100 per query, nDCG@10 / Recall@10,100 / MRR@10.

    Returns ``evaluate_set``'s result; ``benchmark`` is the folder name.
    """
    dataset_dir = dataset_dir if dataset_dir is not None else data_root() / "nq-wiki"
    data = load_beir(dataset_dir, split)
    result = evaluate_set(
        system,
        data,
        task,
        BEIR_DEPTH,
        max_queries=max_queries,
        name=name,
        batch_size=batch_size,
        normalize=normalize,
        cache_dir=cache_dir,
        cache=cache,
        progress=progress,
    )
    assert result.settings is not None  # evaluate_set sets them
    result.settings.update({"dataset_dir": str(dataset_dir), "split": split})
    return result


def run_bright(
    system: Encoder | Retriever,
    subsets: Sequence[str] | None = None,
    *,
    documents_dir: str | Path | None = None,
    topics_dir: str | Path | None = BRIGHT_TOPICS,
    long: bool = False,
    max_queries: int | None = None,
    name: str | None = None,
    batch_size: int = 16,
    normalize: bool = True,
    cache_dir: str | Path | None = None,
    cache: bool = True,
    progress: bool = False,
) -> EvalResult:
    """BRIGHT subsets (default: all 12), each with its ``bright-<subset>`` instructions.

    Each query's ``excluded_ids`` are removed before scoring and its top 1000 kept. Returns an ``EvalResult``
    (benchmark "bright" or "bright-long") with ``metrics`` the means over subsets and ``subsets`` {subset: result
    as from ``evaluate_set``}; it has no task, counts, per-query scores or seconds of its own. Documents: see
    ``load_bright``.
    """
    names = [bright_subset(s) for s in (subsets or BRIGHT_SUBSETS)]
    retriever = as_retriever(system, cache_dir, cache, batch_size, normalize, progress)
    benchmark = "bright-long" if long else "bright"
    per_subset = {}
    for subset in names:
        data = load_bright(subset, documents_dir=documents_dir, topics_dir=topics_dir, long=long)
        per_subset[subset] = evaluate_set(
            retriever,
            data,
            f"bright-{subset}",
            BRIGHT_DEPTH,
            max_queries=max_queries,
            name=system_label(system, name),
            benchmark=benchmark,
            batch_size=batch_size,
            normalize=normalize,
        )
    metrics = {
        m: float(np.mean([r.metrics[m] for r in per_subset.values()])) for m in next(iter(per_subset.values())).metrics
    }
    settings = {
        "documents_dir": None if documents_dir is None else str(documents_dir),
        "long": long,
        "max_queries": max_queries,
        "depth": BRIGHT_DEPTH,
        "batch_size": batch_size,
        "normalize": normalize,
    }
    return EvalResult(
        benchmark=benchmark,
        system=system_label(system, name),
        identity=system.identity(),
        metrics=metrics,
        subsets=per_subset,
        settings=settings,
    )
