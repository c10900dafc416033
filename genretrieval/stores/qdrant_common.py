"""What the two Qdrant stores share: filters, payload indexes made as fields are first filtered on, deletes, and
reading payloads and ids back. Each engine's calls stay in its own file (qdrant_edge.py, qdrant_server.py)."""

from __future__ import annotations

from typing import Any

from genretrieval.stores.base import ID_KEY, check_delete, hit_from_payload, normalize_where, point_uuid


class QdrantBase:
    """Base of ``QdrantEdgeStore`` and ``QdrantServerStore``.

    A subclass keeps ``_fields`` (payload keys ever stored), ``_indexed`` (keys with a payload index) and
    ``read_only``; sets ``_models`` to its engine's filter classes (``FieldCondition``, ``MatchValue``, ``MatchAny``
    and ``Filter``, which take the same keyword arguments in both engines); and makes the engine calls in
    ``_has_id``, ``_create_index``, ``_count``, ``_delete_matching``, ``_retrieve``, ``_scroll`` and
    ``_check_writable``.
    """

    _models: Any
    _fields: set[str]
    _indexed: set[str]
    read_only: bool

    # The engine calls, made by each subclass.
    def _has_id(self, uuids: list[str]) -> Any:
        raise NotImplementedError

    def _create_index(self, key: str, kind: str) -> None:
        raise NotImplementedError

    def _check_writable(self) -> None:
        raise NotImplementedError

    def _count(self, flt: Any) -> int:
        raise NotImplementedError

    def _delete_matching(self, flt: Any) -> None:
        raise NotImplementedError

    def _retrieve(self, uuids: list[str]) -> list:
        raise NotImplementedError

    def _scroll(self, flt: Any, offset: Any) -> tuple[list, Any]:
        """One page of records matching ``flt`` from ``offset``, and the next offset (None after the last)."""
        raise NotImplementedError

    def _filter(self, where: dict | None, ids: list[str] | None = None) -> Any:
        """A Qdrant filter for an equality filter and/or a set of ids (None for neither); indexes newly filtered
        fields."""
        cond = normalize_where(where, self._fields)
        must: list = [] if ids is None else [self._has_id([point_uuid(i) for i in ids])]
        for key, values in (cond or {}).items():
            self._ensure_index(key, values[0])
            must.append(self._condition(key, values))
        return self._models.Filter(must=must) if must else None

    def _condition(self, key: str, values: list) -> Any:
        """Match ``key`` against one value or any of several."""
        m = self._models
        if len(values) == 1:
            return m.FieldCondition(key=key, match=m.MatchValue(value=values[0]))
        if all(isinstance(v, str) for v in values) or all(type(v) is int for v in values):
            return m.FieldCondition(key=key, match=m.MatchAny(any=values))
        return m.Filter(should=[m.FieldCondition(key=key, match=m.MatchValue(value=v)) for v in values])

    def _ensure_index(self, key: str, sample: str | int | bool) -> None:
        """Create a payload index on ``key``, typed after a filter value ("bool", "integer" or "keyword"), unless
        there is one (or the store is read-only: filters work without an index, only slower)."""
        if key in self._indexed or self.read_only:
            return
        kind = "bool" if isinstance(sample, bool) else "integer" if isinstance(sample, int) else "keyword"
        self._create_index(key, kind)
        self._indexed.add(key)

    def delete(self, ids: list[str] | None = None, where: dict | None = None) -> int:
        """Delete points by id and/or filter (both: both must hold); returns the count deleted."""
        self._check_writable()
        check_delete(ids, where)
        if ids is not None and not ids:
            return 0
        flt = self._filter(where, ids)
        n = self._count(flt)
        if n:
            self._delete_matching(flt)
        return n

    def get(self, ids: list[str]) -> dict[str, dict]:
        """Payloads by id; missing ids are absent."""
        if not ids:
            return {}
        records = self._retrieve([point_uuid(i) for i in ids])
        return {h.id: h.payload for h in (hit_from_payload(0.0, r.payload) for r in records)}

    def ids(self, where: dict | None = None) -> list[str]:
        """All ids, optionally only those matching ``where``."""
        flt = self._filter(where)
        out: list[str] = []
        offset = None
        while True:
            records, offset = self._scroll(flt, offset)
            out += [r.payload[ID_KEY] for r in records]
            if offset is None:
                return out
