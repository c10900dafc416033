"""Benchmarks (AdvBench-IR with its refusal check, BEIR-format sets, BRIGHT): data loaders, retrievers, runners,
metrics and reports."""

from .baselines import BM25Retriever
from .data import (
    BRIGHT_TOPICS,
    AdvBenchIR,
    RetrievalSet,
    data_root,
    load_advbench_ir,
    load_beir,
    load_bright,
    load_bright_documents,
    load_bright_queries,
)
from .metrics import advbench_metrics, roc_auc, trec_metrics
from .refusal import REFUSAL_TEXT, load_benign_queries, refusal_check
from .report import write_report
from .result import EvalResult, RefusalCheck
from .retrieval import DenseRetriever, Retriever
from .runner import evaluate_set, run_advbench_ir, run_beir, run_bright

__all__ = [
    "BRIGHT_TOPICS",
    "REFUSAL_TEXT",
    "AdvBenchIR",
    "BM25Retriever",
    "DenseRetriever",
    "EvalResult",
    "RefusalCheck",
    "RetrievalSet",
    "Retriever",
    "advbench_metrics",
    "data_root",
    "evaluate_set",
    "load_benign_queries",
    "load_advbench_ir",
    "load_beir",
    "load_bright",
    "load_bright_documents",
    "load_bright_queries",
    "refusal_check",
    "roc_auc",
    "run_advbench_ir",
    "run_beir",
    "run_bright",
    "trec_metrics",
    "write_report",
]
