"""Embedded Qdrant vector store through qdrant-edge-py (Qdrant's Rust engine, in-process)."""

from __future__ import annotations

import json
from pathlib import Path
from uuid import UUID

import numpy as np
import qdrant_edge
from qdrant_edge import (
    CountRequest,
    Distance,
    EdgeConfig,
    EdgeShard,
    EdgeVectorParams,
    Filter,
    HasIdCondition,
    HnswIndexConfig,
    PayloadSchemaType,
    PayloadSelector,
    Point,
    Query,
    QueryBatchRequest,
    QueryRequest,
    ScrollRequest,
    SearchParams,
    UpdateOperation,
)

from genretrieval.errors import GenRetError
from genretrieval.fileio import write_json_atomic
from genretrieval.stores.base import (
    ID_KEY,
    StoreHit,
    as_matrix,
    check_k,
    check_points,
    dumps_payload,
    hit_from_payload,
    payload_fields,
    point_uuid,
)
from genretrieval.stores.qdrant_common import QdrantBase

_UPSERT_BATCH = 4096
_SCROLL_PAGE = 10_000
_SCHEMA = {"bool": PayloadSchemaType.Bool, "integer": PayloadSchemaType.Integer, "keyword": PayloadSchemaType.Keyword}


class QdrantEdgeStore(QdrantBase):
    """A Qdrant Edge shard in ``path/shard`` plus ``path/store.json`` (dimension and known payload fields).

    Points are stored under uuid5 ids derived from the string ids, which are kept in the payload as
    ``_id``; distance is Dot (vectors arrive normalised, so scores are cosines). Keyword payload
    indexes are created for ``index_fields`` at creation and for any other field the first time it
    is filtered on. Search is exact while the store holds fewer than ``exact_threshold`` points, and
    uses HNSW (``hnsw_ef`` candidates) above that. :meth:`flush` flushes the shard and, once the
    store is at least ``exact_threshold`` points large, runs the segment optimizer, which builds the
    HNSW graph: that flush can take a minute per 50k 384-d vectors on two cores. Updates are logged
    in the shard's write-ahead log as they happen; flush makes the segments themselves durable.

    Qdrant Edge has no read-only mode: loading a shard locks its write-ahead log and rewrites some of its
    files, so only one process can have a shard open at a time, and a read-only folder cannot be opened.
    With ``read_only=True`` the store refuses changes and closes without optimizing or flushing; opening a
    read-only folder, or a shard open in another process, is a one-line GenRetError.
    """

    SHARD_DIR = "shard"
    META_FILE = "store.json"
    _models = qdrant_edge

    def __init__(
        self,
        path: Path | str,
        dim: int,
        *,
        create: bool,
        exact_threshold: int = 20_000,
        hnsw_ef: int | None = None,
        hnsw_m: int = 16,
        ef_construct: int = 100,
        index_fields: tuple[str, ...] = ("source",),
        max_search_threads: int | None = None,
        read_only: bool = False,
    ) -> None:
        if read_only and create:
            raise ValueError("a read-only store cannot be created")
        self.path = Path(path)
        self.dim = dim
        self.exact_threshold = exact_threshold
        self.hnsw_ef = hnsw_ef
        self.read_only = read_only
        self._closed = False
        meta_path, shard_path = self.path / self.META_FILE, self.path / self.SHARD_DIR
        if meta_path.exists() and shard_path.exists():
            meta = _read_meta(meta_path)
            if meta["dim"] != dim:
                raise GenRetError(f"the Qdrant store at {self.path} holds {meta['dim']}-d vectors, not {dim}-d")
            self._fields = set(meta["fields"])
            self._shard = _load_shard(shard_path)
        elif not create:
            raise GenRetError(f"no Qdrant store at {self.path} (build the index first)")
        else:
            self._fields = set()
            self.path.mkdir(parents=True, exist_ok=True)
            self._write_meta()
            config = EdgeConfig(
                vectors=EdgeVectorParams(size=dim, distance=Distance.Dot),
                hnsw_config=HnswIndexConfig(m=hnsw_m, ef_construct=ef_construct, full_scan_threshold=10_000),
                max_search_threads=max_search_threads,
            )
            try:
                self._shard = EdgeShard.create(str(shard_path), config)
            except Exception as e:  # noqa: BLE001 - qdrant-edge raises plain Exception with a message
                message = " ".join(str(e).split())
                raise GenRetError(f"cannot create a Qdrant Edge store at {self.path}: {message}") from None
            for field in index_fields:
                self._shard.update(UpdateOperation.create_field_index(field, PayloadSchemaType.Keyword))
        self._indexed = set(self._shard.info().payload_schema)

    def _write_meta(self) -> None:
        """Atomically write ``store.json``."""
        write_json_atomic(self.path / self.META_FILE, {"format": 1, "dim": self.dim, "fields": sorted(self._fields)})

    def upsert(self, ids: list[str], vectors: np.ndarray, payloads: list[dict]) -> None:
        """Insert points, replacing existing ids. vectors: float32 (n, dim)."""
        self._check_writable()
        arr = check_points(ids, vectors, payloads, self.dim)
        for point_id, payload in zip(ids, payloads):
            dumps_payload(point_id, payload)
        new_fields = payload_fields(payloads) - self._fields
        if new_fields:
            # Known fields are written before the points, so they are never fewer than the stored ones.
            self._fields |= new_fields
            self._write_meta()
        for start in range(0, len(ids), _UPSERT_BATCH):
            rows = arr[start : start + _UPSERT_BATCH].tolist()
            points = [
                Point(point_uuid(pid), row, {**payload, ID_KEY: pid})
                for pid, row, payload in zip(ids[start:], rows, payloads[start:])
            ]
            self._shard.update(UpdateOperation.upsert_points(points))

    def search(self, vectors: np.ndarray, k: int, where: dict | None = None) -> list[list[StoreHit]]:
        """Top-k hits per query. vectors: float32 (Q, dim); returns Q lists of at most k hits, best first."""
        check_k(k)
        queries = as_matrix(vectors, self.dim)
        flt = self._filter(where)
        if len(queries) == 0:
            return []
        exact = self._shard.info().points_count < self.exact_threshold  # exact count() costs ms
        params = SearchParams(exact=True) if exact else SearchParams(hnsw_ef=self.hnsw_ef)
        requests = [
            QueryRequest(limit=k, query=Query.Nearest(q), filter=flt, params=params, with_payload=True)
            for q in queries.tolist()
        ]
        results = self._shard.query_batch(QueryBatchRequest(requests))
        return [[hit_from_payload(p.score, p.payload) for p in points] for points in results]

    def count(self) -> int:
        """Number of points."""
        return self._shard.count(CountRequest(exact=True))

    def flush(self) -> None:
        """Flush the shard (WAL and segments) to disk (nothing to do for a read-only store)."""
        if not self.read_only:
            self._shard.flush()

    def optimize(self) -> None:
        """After a bulk load: build the HNSW graph once the store holds ``exact_threshold`` points or more."""
        if not self.read_only and self._shard.info().points_count >= self.exact_threshold:
            self._shard.optimize()
            self._shard.flush()

    def close(self) -> None:
        """Optimize, flush and close (a read-only store only closes); safe to call twice."""
        if self._closed:
            return
        if not self.read_only:
            self.optimize()
            self.flush()
        self._shard.close()
        self._closed = True

    def _check_writable(self) -> None:
        if self.read_only:
            raise GenRetError(f"the Qdrant store at {self.path} is open for reading only")

    # ------------------------------------------------------------------------ the engine calls QdrantBase makes
    def _has_id(self, uuids: list[str]) -> HasIdCondition:
        return HasIdCondition(set(uuids))

    def _create_index(self, key: str, kind: str) -> None:
        self._shard.update(UpdateOperation.create_field_index(key, _SCHEMA[kind]))

    def _count(self, flt: Filter | None) -> int:
        return self._shard.count(CountRequest(exact=True, filter=flt))

    def _delete_matching(self, flt: Filter) -> None:
        self._shard.update(UpdateOperation.delete_points_by_filter(flt))

    def _retrieve(self, uuids: list[str]) -> list:
        point_ids: list[int | UUID | str] = list(uuids)
        return self._shard.retrieve(point_ids, True, False)

    def _scroll(self, flt: Filter | None, offset):
        request = ScrollRequest(
            offset=offset,
            limit=_SCROLL_PAGE,
            filter=flt,
            with_payload=PayloadSelector.Include([ID_KEY]),
            with_vector=False,
        )
        return self._shard.scroll(request)


def _read_meta(meta_path: Path) -> dict:
    """``store.json``: dimension and known payload fields, or GenRetError if it is damaged."""
    try:
        meta = json.loads(meta_path.read_text())
        if isinstance(meta, dict) and isinstance(meta.get("dim"), int) and isinstance(meta.get("fields"), list):
            return meta
    except (OSError, UnicodeDecodeError, json.JSONDecodeError):
        pass
    raise GenRetError(f"corrupt store metadata {meta_path}; rebuild the index")


def _load_shard(shard_path: Path) -> EdgeShard:
    """Load a shard, turning the engine's errors into one line that says what to do."""
    try:
        return EdgeShard.load(str(shard_path))
    except Exception as e:  # noqa: BLE001 - qdrant-edge raises plain Exception with a message
        message = " ".join(str(e).split())
    if "WouldBlock" in message:
        raise GenRetError(
            f"the Qdrant Edge store at {shard_path.parent} is open in another process "
            "(Qdrant Edge allows one process at a time); try again when it is closed"
        ) from None
    if "Permission denied" in message or "Read-only file system" in message or "os error 30" in message:
        raise GenRetError(read_only_message(shard_path.parent)) from None
    raise GenRetError(f"cannot open the Qdrant Edge store at {shard_path.parent}: {message}") from None


def read_only_message(path: Path) -> str:
    """Why a read-only Qdrant Edge store cannot be opened, and what to do instead."""
    return (
        f"the Qdrant Edge store at {path} is read-only, and Qdrant Edge cannot open a store without "
        "writing to it; copy the index folder somewhere writable and use the copy, or build the index "
        "with --backend faiss, which reads read-only folders"
    )
