"""The vector-store interface shared by every backend, and the checks all backends apply alike."""

from __future__ import annotations

import json
import uuid
from collections.abc import Iterable
from dataclasses import asdict, dataclass, fields
from typing import Protocol, runtime_checkable
from urllib.parse import SplitResult, urlsplit

import numpy as np

from genretrieval.errors import GenRetError

#: Payload key the Qdrant stores use to keep the caller's string id; reserved in every store.
ID_KEY = "_id"

#: Namespace of the uuid5 ids that Qdrant stores derive from string ids (changing it orphans stored points).
_ID_NAMESPACE = uuid.uuid5(uuid.NAMESPACE_DNS, "points.genretrieval")

FilterValue = str | int | bool


@dataclass
class StoreHit:
    """One search result: the point's id, its score (inner product = cosine) and its payload."""

    id: str
    score: float
    payload: dict


@dataclass(frozen=True)
class StoreOptions:
    """Settings of a new Qdrant server collection, kept in the index's manifest (None: the server's default)."""

    shard_number: int | None = None
    replication_factor: int | None = None

    @classmethod
    def from_dict(cls, data: dict | None, where: str = "the store options") -> "StoreOptions":
        """The options in ``data``; an unknown key is a one-line GenRetError naming ``where``."""
        known = [f.name for f in fields(cls)]
        if unknown := sorted(set(data or {}) - set(known)):
            raise GenRetError(f"unknown store option {unknown[0]!r} in {where} (known: {', '.join(known)})")
        return cls(**(data or {}))

    def to_dict(self) -> dict:
        """The options that are set: what ``open_store`` passes to the store class."""
        return {k: v for k, v in asdict(self).items() if v is not None}


@runtime_checkable
class VectorStore(Protocol):
    """A store of (id, vector, payload) points with exact or approximate inner-product search.

    Vectors arrive L2-normalised as float32 arrays of shape (n, dim); scores are inner products.
    ``where`` filters are equality filters on top-level payload keys, e.g. ``{"source": "a.md"}``;
    all keys must match, and a list value means any-of. A payload value that is a list matches
    when any of its elements does. Filtering on a key that no point ever had raises GenRetError.
    """

    dim: int

    def upsert(self, ids: list[str], vectors: np.ndarray, payloads: list[dict]) -> None:
        """Insert points, replacing any with the same ids. vectors: float32 (n, dim)."""

    def delete(self, ids: list[str] | None = None, where: dict | None = None) -> int:
        """Delete points by id and/or ``where`` filter (given both, both must hold); returns the count."""

    def search(self, vectors: np.ndarray, k: int, where: dict | None = None) -> list[list[StoreHit]]:
        """Top-k hits per query, best first. vectors: float32 (Q, dim); returns Q lists of at most k hits."""

    def get(self, ids: list[str]) -> dict[str, dict]:
        """Payloads by id; ids not in the store are absent from the result."""

    def ids(self, where: dict | None = None) -> list[str]:
        """All ids (optionally only those matching ``where``), in no particular order."""

    def count(self) -> int:
        """Number of points."""

    def flush(self) -> None:
        """Make every change so far durable."""

    def optimize(self) -> None:
        """Build search structures after a bulk load (a no-op where the engine keeps them up to date)."""

    def close(self) -> None:
        """Flush and release the store; it cannot be used afterwards."""


def check_url(url: str) -> SplitResult:
    """A Qdrant server URL split into its parts, or GenRetError unless it is http(s)://HOST[:PORT][/...]."""
    try:
        parts = urlsplit(url)
        _ = parts.port  # raises ValueError for a bad port
    except ValueError as e:
        raise GenRetError(f"invalid Qdrant URL {url!r}: {e}") from None
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise GenRetError(f"invalid Qdrant URL {url!r}: use http(s)://HOST[:PORT]")
    return parts


def point_uuid(point_id: str) -> str:
    """The deterministic UUID (uuid5) under which Qdrant stores the point with string id ``point_id``."""
    return str(uuid.uuid5(_ID_NAMESPACE, point_id))


def as_matrix(vectors: np.ndarray, dim: int) -> np.ndarray:
    """``vectors`` as a C-contiguous float32 array of shape (n, dim), or GenRetError."""
    arr = np.ascontiguousarray(vectors, dtype=np.float32)
    if arr.ndim != 2 or arr.shape[1] != dim:
        raise GenRetError(f"expected vectors of shape (n, {dim}), got {tuple(arr.shape)}")
    if not np.isfinite(arr).all():
        raise GenRetError("vectors contain NaN or infinite values")
    return arr


def check_points(ids: list[str], vectors: np.ndarray, payloads: list[dict], dim: int) -> np.ndarray:
    """Validate an upsert batch; returns the vectors as float32 (n, dim)."""
    arr = as_matrix(vectors, dim)
    if not (len(ids) == len(arr) == len(payloads)):
        raise GenRetError(f"upsert got {len(ids)} ids, {len(arr)} vectors and {len(payloads)} payloads")
    if not all(isinstance(i, str) for i in ids):
        raise GenRetError("point ids must be strings")
    if len(set(ids)) != len(ids):
        raise GenRetError("upsert got the same id twice in one batch")
    for point_id, payload in zip(ids, payloads):
        if not isinstance(payload, dict):
            raise GenRetError(f"payload of '{point_id}' is not a dict")
        if ID_KEY in payload:
            raise GenRetError(f"payload key '{ID_KEY}' is reserved (point '{point_id}')")
    return arr


def check_k(k: int) -> None:
    """Refuse a non-positive k (stores, ``Index.search``, ``genret search`` and the server)."""
    if k < 1:
        raise GenRetError(f"k must be >= 1, got {k}")


def check_delete(ids: list[str] | None, where: dict | None) -> None:
    """Refuse a store delete that names neither ids nor a filter (it would match every point); an empty
    ``where`` is no filter."""
    if ids is None and not where:
        raise GenRetError("delete needs ids or a where filter")


def dumps_payload(point_id: str, payload: dict) -> str:
    """The payload as JSON, or GenRetError if it cannot be serialised."""
    try:
        return json.dumps(payload, ensure_ascii=False)
    except (TypeError, ValueError) as e:
        raise GenRetError(f"payload of '{point_id}' is not JSON-serialisable: {e}") from None


def payload_fields(payloads: Iterable[dict]) -> set[str]:
    """The top-level keys that occur in ``payloads``."""
    keys: set[str] = set()
    for payload in payloads:
        keys.update(payload)
    return keys


def normalize_where(where: dict | None, known_fields: set[str]) -> dict[str, list[FilterValue]] | None:
    """Check an equality filter against the known fields; returns {key: [allowed values]} or None.

    Raises GenRetError for a key no point has ever had, an empty list, or a value that is not
    str, int or bool (floats and objects cannot be matched exactly by every engine).
    """
    if not where:
        return None
    out: dict[str, list[FilterValue]] = {}
    for key, value in where.items():
        if key not in known_fields:
            known = ", ".join(sorted(known_fields)) or "(none)"
            raise GenRetError(f"no field '{key}' in this index; known fields: {known}")
        values = list(value) if isinstance(value, (list, tuple, set, frozenset)) else [value]
        if not values:
            raise GenRetError(f"filter on '{key}' has an empty list of values")
        for v in values:
            if not isinstance(v, (str, int)):
                raise GenRetError(f"filter value {v!r} for '{key}' must be a str, int or bool")
        out[key] = values
    return out


def hit_from_payload(score: float, payload: dict | None) -> StoreHit:
    """A StoreHit from a Qdrant payload, which carries the string id under ``_id``."""
    payload = dict(payload or {})
    return StoreHit(payload.pop(ID_KEY), float(score), payload)
