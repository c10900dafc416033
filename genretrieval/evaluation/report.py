"""Benchmark reports: JSON, a Markdown comparison table and a PNG bar chart, each stamped with command and versions."""

from __future__ import annotations

import json
import platform
import shlex
import sys
from collections.abc import Sequence
from dataclasses import replace
from datetime import UTC, datetime
from importlib import metadata
from pathlib import Path
from typing import Any

from ..encoder.teacher import TEACHER_NAME
from ..fileio import atomic_write, write_json_atomic, write_text_atomic
from .refusal import REFUSAL_TEXT
from .result import EvalResult

DEFAULT_OUTPUT_DIR = Path("benchmarks/results")
_PACKAGES = (
    "genretrieval",
    "numpy",
    "torch",
    "transformers",
    "sentence-transformers",
    "bm25s",
    "PyStemmer",
    "pytrec-eval-terrier",
    "pyarrow",
    "datasets",
)


def package_versions() -> dict[str, str]:
    """Python, platform and the installed versions of the packages that shape the numbers."""
    versions = {"python": platform.python_version(), "platform": platform.platform()}
    for package in _PACKAGES:
        try:
            versions[package] = metadata.version(package)
        except metadata.PackageNotFoundError:
            continue
    return versions


def comparison_table(results: Sequence[EvalResult]) -> tuple[list[str], list[list[float]]]:
    """Columns and one row of values per result, for results of one benchmark.

    BRIGHT results (with ``subsets``) get one nDCG@10 column per subset plus their mean; others get one
    column per metric in ``metrics``.
    """
    first = results[0]
    if first.subsets is not None:
        columns = [*first.subsets, "mean"]
        rows = []
        for r in results:
            assert r.subsets is not None  # one benchmark: every BRIGHT result has its subsets
            rows.append([r.subsets[s].metrics["ndcg@10"] for s in columns[:-1]] + [r.metrics["ndcg@10"]])
        return columns, rows
    columns = list(first.metrics)
    return columns, [[r.metrics[c] for c in columns] for r in results]


def row_label(result: EvalResult, results: Sequence[EvalResult]) -> str:
    """The row label: the system, with its query count when it ran on fewer queries than the others (HyDE)."""
    most = max(r.num_queries or 0 for r in results)
    n = most if result.num_queries is None else result.num_queries
    return f"{result.system} ({n} queries)" if n < most else result.system


def markdown_table(results: Sequence[EvalResult], highlight=lambda result: False, note: str = "") -> list[str]:
    """The Markdown comparison table of one benchmark's results; rows where ``highlight(result)`` is true are
    set in bold with ``note`` after the label."""
    columns, rows = comparison_table(results)
    lines = ["| system | " + " | ".join(columns) + " |", "|---|" + "---:|" * len(columns)]
    for r, row in zip(results, rows):
        label = f"**{row_label(r, results)}{note}**" if highlight(r) else row_label(r, results)
        lines.append(f"| {label} | " + " | ".join(f"{v:.3f}" for v in row) + " |")
    return lines


REFUSAL_COLUMNS: tuple[tuple[str, str, str], ...] = (
    ("n harmful", "num_queries", "harmful"),
    ("n nq-wiki", "num_queries", "nq-wiki"),
    ("n alpaca", "num_queries", "alpaca"),
    ("ROC-AUC all benign", "roc_auc", "all"),
    ("ROC-AUC nq-wiki", "roc_auc", "nq-wiki"),
    ("ROC-AUC alpaca", "roc_auc", "alpaca"),
    ("cos harmful", "mean_cosine", "harmful"),
    ("cos nq-wiki", "mean_cosine", "nq-wiki"),
    ("cos alpaca", "mean_cosine", "alpaca"),
)
"""Refusal-check columns: (header, field of the result's ``refusal``, key in it)."""


def refusal_rows(results: Sequence[EvalResult]) -> list[list[float | None]]:
    """One row of ``REFUSAL_COLUMNS`` values per result; None where a result has no refusal check (BM25, a
    skipped check, a result from before the check)."""
    return [[(getattr(r.refusal, key, None) or {}).get(sub) for _, key, sub in REFUSAL_COLUMNS] for r in results]


def refusal_table(results: Sequence[EvalResult]) -> list[str]:
    """The Markdown refusal-check table of one benchmark's results; no lines when none of them has the check."""
    if all(r.refusal is None for r in results):
        return []
    lines = [
        "### Refusal check",
        "",
        "Score: cosine between a query's embedding (the system's query path) and the teacher's "
        f'({TEACHER_NAME}) embedding of the canned refusal "{REFUSAL_TEXT}". '
        "ROC-AUC of that score separating the harmful queries above from benign ones (nq-wiki questions, "
        "Alpaca instructions; 0.5 is chance), and the mean cosine per group. Empty: no query embedding.",
        "",
        "| system | " + " | ".join(c for c, _, _ in REFUSAL_COLUMNS) + " |",
        "|---|" + "---:|" * len(REFUSAL_COLUMNS),
    ]
    for r, row in zip(results, refusal_rows(results)):
        cells = [
            "" if v is None else str(v) if key == "num_queries" else f"{v:.3f}"
            for v, (_, key, _) in zip(row, REFUSAL_COLUMNS)
        ]
        lines.append(f"| {row_label(r, results)} | " + " | ".join(cells) + " |")
    return lines


def by_benchmark(results: Sequence[EvalResult]) -> dict[str, list[EvalResult]]:
    groups: dict[str, list[EvalResult]] = {}
    for r in results:
        groups.setdefault(r.benchmark, []).append(r)
    return groups


def _markdown(groups: dict[str, list[EvalResult]], header: dict[str, Any]) -> str:
    lines = [
        f"# Benchmark results ({header['created']})",
        "",
        *(f"Command: `{c}`" for c in header["commands"]),
        "",
        "Versions: " + ", ".join(f"{k} {v}" for k, v in header["versions"].items()),
        "",
    ]
    for benchmark, results in groups.items():
        metric = " (nDCG@10)" if results[0].subsets is not None else ""
        lines += [f"## {benchmark}{metric}", "", *markdown_table(results), ""]
        if refusal := refusal_table(results):
            lines += [*refusal, ""]
    return "\n".join(lines)


def _chart(groups: dict[str, list[EvalResult]], header: dict[str, Any], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import numpy as np

    panels = []  # (title, columns, rows, results)
    for benchmark, results in groups.items():
        columns, rows = comparison_table(results)
        panels.append((benchmark + (" (nDCG@10)" if results[0].subsets is not None else ""), columns, rows, results))
        if any(r.refusal is not None for r in results):
            auc = [i for i, (_, key, _) in enumerate(REFUSAL_COLUMNS) if key == "roc_auc"]
            rows = [[np.nan if (v := row[i]) is None else v for i in auc] for row in refusal_rows(results)]
            columns = [REFUSAL_COLUMNS[i][0] for i in auc]
            panels.append((f"{benchmark}: refusal check (harmful vs benign, 0.5 is chance)", columns, rows, results))
    fig, axes = plt.subplots(len(panels), 1, figsize=(12, 4.5 * len(panels)), squeeze=False)
    for ax, (title, columns, rows, results) in zip(axes[:, 0], panels):
        x = np.arange(len(columns))
        width = 0.8 / len(results)
        for n, (r, row) in enumerate(zip(results, rows)):
            ax.bar(x + (n - (len(results) - 1) / 2) * width, row, width, label=row_label(r, results))
        ax.set_xticks(x, columns, rotation=30, ha="right", fontsize=8)
        ax.set_ylim(0, 1.15)
        ax.set_title(title)
        ax.legend(fontsize=8, loc="upper right", ncol=min(4, len(results)))
    versions = ", ".join(f"{k} {v}" for k, v in header["versions"].items() if k != "platform")
    fig.text(0.01, 0.005, "\n".join([*header["commands"], versions]), fontsize=6, va="bottom", wrap=True)
    fig.tight_layout(rect=(0, 0.05, 1, 1))
    atomic_write(path, lambda tmp: fig.savefig(tmp, dpi=120, format="png"))
    plt.close(fig)


def write_report(
    results: Sequence[EvalResult],
    output_dir: str | Path = DEFAULT_OUTPUT_DIR,
    name: str | None = None,
    command: str | None = None,
    merge: bool = False,
) -> dict[str, Path]:
    """Write ``<name>.json``, ``<name>.md`` and ``<name>.png`` for the results of the ``run_*`` functions.

    Results of the same benchmark (e.g. several encoders) share one table and one chart panel. ``name``
    defaults to the benchmark names joined by "+"; ``command`` to this process's command line; each result
    records the command that produced it. ``merge=True`` keeps the systems of an existing ``<name>.json`` that
    this run did not re-evaluate, so slow systems can be added one run at a time (reports written before
    ``format_version`` included). Returns the written paths by kind ("json", "markdown", "png"). The JSON holds
    the header and ``"results"``: each result's ``to_dict()``.
    """
    if not results:
        raise ValueError("no results to report")
    command = command or shlex.join(sys.argv)
    results = [replace(r, command=r.command or command) for r in results]  # re-rendering keeps its own
    name = name or "+".join(by_benchmark(results))
    out = Path(output_dir)
    paths = {"json": out / f"{name}.json", "markdown": out / f"{name}.md", "png": out / f"{name}.png"}
    if merge and paths["json"].exists():
        previous = json.loads(paths["json"].read_text(encoding="utf-8"))
        rerun = {(r.benchmark, r.system) for r in results}
        kept = [r for r in map(EvalResult.from_dict, previous["results"]) if (r.benchmark, r.system) not in rerun]
        results = kept + results
    groups = by_benchmark(results)
    header = {
        "created": datetime.now(UTC).isoformat(timespec="seconds"),
        "commands": list(dict.fromkeys(r.command for r in results)),
        "versions": package_versions(),
    }
    out.mkdir(parents=True, exist_ok=True)
    write_json_atomic(paths["json"], {**header, "results": [r.to_dict() for r in results]}, indent=1, default=str)
    write_text_atomic(paths["markdown"], _markdown(groups, header))
    _chart(groups, header, paths["png"])
    return paths
