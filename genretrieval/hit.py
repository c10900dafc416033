"""The search result type, shared by local search (``Index.search``) and the server client (stdlib only)."""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import Any


@dataclass
class Hit:
    """One search result: a chunk, its cosine score and where it came from."""

    id: str
    score: float
    text: str
    title: str
    source: str
    chunk_no: int
    metadata: dict[str, Any] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)
