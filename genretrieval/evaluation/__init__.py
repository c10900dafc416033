"""Benchmarks (AdvBench-IR, BEIR-format sets, BRIGHT): data loaders, retrievers, runners, metrics and reports."""

from .baselines import BM25Retriever
from .data import (
    AdvBenchIR,
    RetrievalSet,
    load_advbench_ir,
    load_beir,
    load_bright,
    load_bright_documents,
    load_bright_queries,
)
from .metrics import advbench_metrics, trec_metrics
from .report import write_report
from .retrieval import DenseRetriever, Retriever
from .runner import evaluate_set, run_advbench_ir, run_beir, run_bright

__all__ = [
    "AdvBenchIR",
    "BM25Retriever",
    "DenseRetriever",
    "RetrievalSet",
    "Retriever",
    "advbench_metrics",
    "evaluate_set",
    "load_advbench_ir",
    "load_beir",
    "load_bright",
    "load_bright_documents",
    "load_bright_queries",
    "run_advbench_ir",
    "run_beir",
    "run_bright",
    "trec_metrics",
    "write_report",
]
