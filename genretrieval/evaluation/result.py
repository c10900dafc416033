"""Evaluation results as types, and their versioned JSON form (the ``results`` of ``benchmarks/results/*.json``).

A field that is None is absent from the JSON, so each kind of result keeps the keys it always had: BRIGHT results
have ``subsets`` and no per-query scores, results without the refusal check have no ``refusal``.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, fields
from typing import Any

from ..errors import GenRetError

FORMAT_VERSION = 1
"""Version of ``EvalResult.to_dict``; results written before it was recorded have none and read as 1."""


@dataclass
class RefusalCheck:
    """The refusal check of one system (``refusal.refusal_check``), or only ``skipped``: why it did not run."""

    text: str | None = None  # the refusal
    num_queries: dict[str, int] | None = None  # group ("harmful", benign set) -> queries
    roc_auc: dict[str, float] | None = None  # "all" and each benign set
    mean_cosine: dict[str, float] | None = None  # group -> mean cosine to the refusal
    cosines: dict[str, list[float]] | None = None  # group -> per query
    seconds: float | None = None  # benign encoding
    skipped: str | None = None

    def to_dict(self) -> dict[str, Any]:
        return {k: v for k, v in asdict(self).items() if v is not None}


@dataclass
class EvalResult:
    """One system on one benchmark (``runner.run_*``); a BRIGHT result holds one result per subset in ``subsets``
    and the means over them in ``metrics``."""

    benchmark: str
    system: str
    metrics: dict[str, float]  # means over queries (BRIGHT: over subsets)
    identity: dict[str, Any] | None = None  # the system's identity()
    task: str | None = None
    num_queries: int | None = None
    num_documents: int | None = None
    per_query: dict[str, dict[str, float]] | None = None  # query id -> metrics
    seconds: dict[str, float] | None = None  # "index", "search"
    settings: dict[str, Any] | None = None
    refusal: RefusalCheck | None = None
    subsets: dict[str, EvalResult] | None = None
    command: str | None = None  # the command line that produced it (set by write_report)

    def to_dict(self) -> dict[str, Any]:
        out: dict[str, Any] = {}
        for f in fields(self):
            value = getattr(self, f.name)
            if value is None:
                continue
            if f.name == "refusal":
                value = value.to_dict()
            elif f.name == "subsets":
                value = {name: r.to_dict() for name, r in value.items()}
            out[f.name] = value
        return out | {"format_version": FORMAT_VERSION}

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> EvalResult:
        """Read ``to_dict``'s output, or a result written before ``format_version``; a newer format is refused."""
        data = dict(data)
        version = data.pop("format_version", 1)
        who = f"evaluation result {data.get('benchmark')!r} / {data.get('system')!r}"
        if version != FORMAT_VERSION:
            raise GenRetError(
                f"{who} has format {version!r}; this genretrieval reads format {FORMAT_VERSION} (upgrade genretrieval)"
            )
        try:
            if data.get("refusal") is not None:
                data["refusal"] = RefusalCheck(**data["refusal"])
            if data.get("subsets") is not None:
                data["subsets"] = {name: cls.from_dict(r) for name, r in data["subsets"].items()}
            return cls(**data)
        except TypeError as e:
            raise GenRetError(f"malformed {who}: {e}") from None
