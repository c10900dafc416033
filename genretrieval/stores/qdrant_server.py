"""Qdrant server or cluster vector store through qdrant-client."""

from __future__ import annotations

import ipaddress
import os
import warnings
from collections.abc import Iterable
from pathlib import Path

import numpy as np
from qdrant_client import QdrantClient, models
from qdrant_client.http.exceptions import UnexpectedResponse

from genretrieval.errors import GenRetError
from genretrieval.stores.base import (
    ID_KEY,
    StoreHit,
    as_matrix,
    check_k,
    check_points,
    check_url,
    dumps_payload,
    hit_from_payload,
    payload_fields,
    point_uuid,
)
from genretrieval.stores.qdrant_common import QdrantBase

#: Set to 1 to allow sending QDRANT_API_KEY over plain http to a host that is not this machine.
ALLOW_INSECURE_KEY = "GENRET_ALLOW_INSECURE_KEY"
_FIELDS_KEY = "genret_fields"  # collection metadata key holding the known payload fields
_SCROLL_PAGE = 10_000
_QUERY_BATCH = 256
_SCHEMA = {
    "bool": models.PayloadSchemaType.BOOL,
    "integer": models.PayloadSchemaType.INTEGER,
    "keyword": models.PayloadSchemaType.KEYWORD,
}
#: Payload bytes per point that a bulk upload's requests leave room for (about 1,300 points of 384-d per request).
UPLOAD_PAYLOAD_BYTES = 16 * 1024


class QdrantServerStore(QdrantBase):
    """One collection on a Qdrant server or cluster.

    ``url`` is the server address, or ":memory:" for qdrant-client's in-process local mode (used by the
    tests). The API key (``api_key`` or the ``QDRANT_API_KEY`` environment variable) is only sent when
    ``url_from_user`` (the caller named this server, not an index manifest, which may come from anywhere),
    and over plain http only to this machine unless ``GENRET_ALLOW_INSECURE_KEY=1``. With
    ``local_path`` instead, local mode persists to that directory. New collections use Dot distance,
    ``shard_number`` and ``replication_factor``, and keyword payload indexes on ``index_fields``; other
    fields are indexed the first time they are filtered on. Points are stored under uuid5 ids with the
    string id in the payload as ``_id``; the known payload fields live in the collection metadata.
    Uploads are split into requests of at most ``max_request_bytes`` (estimated JSON size; the
    server's default limit is 32 MiB) and wait for the server's acknowledgement, so :meth:`flush`
    has nothing left to do. Search is exact below ``exact_threshold`` points, HNSW above.
    """

    _models = models

    def __init__(
        self,
        url: str | None,
        dim: int,
        *,
        collection: str = "genret",
        create: bool,
        api_key: str | None = None,
        local_path: Path | str | None = None,
        timeout: int = 60,
        prefer_grpc: bool = False,
        shard_number: int | None = None,
        replication_factor: int | None = None,
        exact_threshold: int = 20_000,
        hnsw_ef: int | None = None,
        index_fields: tuple[str, ...] = ("source",),
        max_request_bytes: int = 30 * 2**20,
        url_from_user: bool = True,
        read_only: bool = False,
    ) -> None:
        self.dim = dim
        self.collection = collection
        self.exact_threshold = exact_threshold
        self.hnsw_ef = hnsw_ef
        self.max_request_bytes = max_request_bytes
        self.read_only = read_only
        self._closed = False
        self._local = url == ":memory:" or local_path is not None
        where = str(local_path) if local_path is not None else url
        if local_path is not None:
            self._client = QdrantClient(path=str(local_path))
        elif url == ":memory:":
            self._client = QdrantClient(":memory:")
        elif url:
            key = api_key_for(url, api_key or os.environ.get("QDRANT_API_KEY"), url_from_user)
            # No background version check: for an unreachable server it warns after our own error.
            try:
                with warnings.catch_warnings():  # plain http with a key: api_key_for has allowed it already
                    warnings.filterwarnings("ignore", message="Api key is used with an insecure connection")
                    self._client = QdrantClient(
                        url=url, api_key=key, timeout=timeout, prefer_grpc=prefer_grpc, check_compatibility=False
                    )
            except Exception as e:  # noqa: BLE001 - the client's URL parser raises several types
                raise GenRetError(f"invalid Qdrant URL {url!r}: {_one_line(e)}") from None
        else:
            raise GenRetError("the Qdrant server store needs a url")
        try:
            exists = self._client.collection_exists(collection)
        except UnexpectedResponse as e:
            if e.status_code in (401, 403):
                hint = (
                    "check QDRANT_API_KEY"
                    if url_from_user
                    else (
                        "no API key is sent to a server named only by an index's manifest: name it with --url or "
                        "GENRET_URL (with QDRANT_API_KEY set)"
                    )
                )
                raise GenRetError(f"Qdrant at {where} refused the request: {hint}") from None
            raise GenRetError(f"Qdrant at {where} answered HTTP {e.status_code}: {_one_line(e)}") from None
        except Exception as e:  # noqa: BLE001 - httpx, grpc and socket errors all mean "unreachable"
            raise GenRetError(f"cannot reach Qdrant at {where}: {_one_line(e)}") from None
        if exists:
            info = self._client.get_collection(collection)
            vectors = info.config.params.vectors
            if not isinstance(vectors, models.VectorParams):  # named vectors: not a collection genret made
                raise GenRetError(f"Qdrant collection '{collection}' does not hold one unnamed vector per point")
            size = vectors.size
            if size != dim:
                raise GenRetError(f"Qdrant collection '{collection}' holds {size}-d vectors, not {dim}-d")
            self._fields = set((info.config.metadata or {}).get(_FIELDS_KEY, []))
            self._indexed = set(info.payload_schema)
        elif not create:
            raise GenRetError(f"no Qdrant collection '{collection}' at {where} (build the index first)")
        else:
            self._client.create_collection(
                collection,
                vectors_config=models.VectorParams(size=dim, distance=models.Distance.DOT),
                shard_number=shard_number,
                replication_factor=replication_factor,
                metadata={_FIELDS_KEY: []},
            )
            self._fields, self._indexed = set(), set()
            for field in index_fields:
                self._ensure_index(field, "")

    def _prepare(self, ids: list[str], vectors: np.ndarray, payloads: list[dict]) -> tuple[np.ndarray, list[int]]:
        """Check an upload, record its new payload fields; returns the vectors and each payload's JSON size."""
        arr = check_points(ids, vectors, payloads, self.dim)
        sizes = [len(dumps_payload(i, p).encode()) for i, p in zip(ids, payloads)]
        new_fields = payload_fields(payloads) - self._fields
        if new_fields:
            # Known fields are recorded before the points, so they are never fewer than the stored ones.
            self._fields |= new_fields
            self._client.update_collection(self.collection, metadata={_FIELDS_KEY: sorted(self._fields)})
        return arr, sizes

    def upload(self, batches: Iterable[tuple[list[str], np.ndarray, list[dict]]], parallel: int = 1) -> None:
        """Bulk insert (replacing existing ids) from ``(ids, vectors, payloads)`` batches, with the client's own
        ``upload_points`` in ``parallel`` processes, waiting for the server's acknowledgements.

        Requests hold a fixed number of points, chosen so that a request of points with payloads of up to
        ``UPLOAD_PAYLOAD_BYTES`` each stays under ``max_request_bytes``; a point with a larger payload is sent in a
        request of its own.
        """
        per_point = 20 * self.dim + 100 + UPLOAD_PAYLOAD_BYTES
        per_request = max(1, self.max_request_bytes // per_point)

        def points():
            for ids, vectors, payloads in batches:
                arr, sizes = self._prepare(ids, vectors, payloads)
                for pid, row, payload, size in zip(ids, arr.tolist(), payloads, sizes):
                    point = models.PointStruct(id=point_uuid(pid), vector=row, payload={**payload, ID_KEY: pid})
                    if size > UPLOAD_PAYLOAD_BYTES:
                        self._client.upsert(self.collection, [point], wait=True)
                    else:
                        yield point

        self._client.upload_points(
            self.collection, points(), batch_size=per_request, parallel=max(1, parallel), max_retries=3, wait=True
        )

    def upsert(self, ids: list[str], vectors: np.ndarray, payloads: list[dict]) -> None:
        """Insert points, replacing existing ids, in requests under ``max_request_bytes``."""
        arr, sizes = self._prepare(ids, vectors, payloads)
        vector_bytes = 20 * self.dim + 100  # JSON floats take up to ~20 characters each
        batch: list[models.PointStruct] = []
        batch_bytes = 0
        for pid, row, payload, size in zip(ids, arr.tolist(), payloads, sizes):
            if batch and batch_bytes + vector_bytes + size > self.max_request_bytes:
                self._client.upsert(self.collection, batch, wait=True)
                batch, batch_bytes = [], 0
            batch.append(models.PointStruct(id=point_uuid(pid), vector=row, payload={**payload, ID_KEY: pid}))
            batch_bytes += vector_bytes + size
        if batch:
            self._client.upsert(self.collection, batch, wait=True)

    def search(self, vectors: np.ndarray, k: int, where: dict | None = None) -> list[list[StoreHit]]:
        """Top-k hits per query. vectors: float32 (Q, dim); returns Q lists of at most k hits, best first."""
        check_k(k)
        queries = as_matrix(vectors, self.dim)
        flt = self._filter(where)
        if self._local:  # local mode is always exact and warns about search params
            params = None
        elif self._client.count(self.collection, exact=False).count < self.exact_threshold:
            params = models.SearchParams(exact=True)
        else:
            params = models.SearchParams(hnsw_ef=self.hnsw_ef)
        out: list[list[StoreHit]] = []
        rows = queries.tolist()
        for start in range(0, len(rows), _QUERY_BATCH):
            requests = [
                models.QueryRequest(query=q, limit=k, filter=flt, params=params, with_payload=True)
                for q in rows[start : start + _QUERY_BATCH]
            ]
            for response in self._client.query_batch_points(self.collection, requests):
                out.append([hit_from_payload(p.score, p.payload) for p in response.points])
        return out

    def count(self) -> int:
        """Number of points."""
        return self._client.count(self.collection, exact=True).count

    def drop(self) -> None:
        """Delete the whole collection from the server."""
        self._client.delete_collection(self.collection)

    def optimize(self) -> None:
        """Nothing to do: the index is kept ready for search as points arrive."""

    def flush(self) -> None:
        """Nothing to do: every write already waited for the server's acknowledgement."""

    def close(self) -> None:
        """Close the client connection; safe to call twice."""
        if not self._closed:
            self._client.close()
            self._closed = True

    def _check_writable(self) -> None:
        """Nothing to check: writes go to the server (``read_only`` only keeps this store from making payload
        indexes)."""

    # ------------------------------------------------------------------------ the engine calls QdrantBase makes
    def _has_id(self, uuids: list[str]) -> models.HasIdCondition:
        point_ids: list[models.ExtendedPointId] = list(uuids)
        return models.HasIdCondition(has_id=point_ids)

    def _create_index(self, key: str, kind: str) -> None:
        if not self._local:  # local mode ignores payload indexes (and warns about them)
            self._client.create_payload_index(self.collection, key, _SCHEMA[kind], wait=True)

    def _count(self, flt: models.Filter | None) -> int:
        return self._client.count(self.collection, count_filter=flt, exact=True).count

    def _delete_matching(self, flt: models.Filter) -> None:
        self._client.delete(self.collection, models.FilterSelector(filter=flt), wait=True)

    def _retrieve(self, uuids: list[str]) -> list:
        return self._client.retrieve(self.collection, uuids, with_payload=True)

    def _scroll(self, flt: models.Filter | None, offset):
        return self._client.scroll(
            self.collection,
            scroll_filter=flt,
            limit=_SCROLL_PAGE,
            offset=offset,
            with_payload=[ID_KEY],
            with_vectors=False,
        )


def api_key_for(url: str, key: str | None, url_from_user: bool) -> str | None:
    """The API key to send to ``url``: none unless the user named the server; refused (GenRetError) over
    plain http to another machine unless ``GENRET_ALLOW_INSECURE_KEY=1``. Also checks that ``url`` is one."""
    parts = check_url(url)
    if not key or not url_from_user:
        return None
    host = parts.hostname
    assert host is not None  # check_url refuses a URL without one
    if parts.scheme == "http" and not _is_loopback(host) and os.environ.get(ALLOW_INSECURE_KEY) != "1":
        raise GenRetError(
            f"refusing to send QDRANT_API_KEY over plain http to {host}: use https, or set "
            f"{ALLOW_INSECURE_KEY}=1 if the network to it is trusted"
        )
    return key


def _is_loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def _one_line(error: Exception) -> str:
    """An exception message squeezed onto one line."""
    return " ".join(str(error).split()) or type(error).__name__
