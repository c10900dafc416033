"""FAISS vector store: any faiss index factory string, with payloads in a transactional SQLite docstore."""

from __future__ import annotations

import json
import logging
import os
import sqlite3
from pathlib import Path

import faiss
import numpy as np

from genretrieval.errors import GenRetError
from genretrieval.fileio import atomic_write
from genretrieval.stores.base import (
    StoreHit,
    as_matrix,
    check_delete,
    check_k,
    check_points,
    dumps_payload,
    normalize_where,
    payload_fields,
)

logger = logging.getLogger(__name__)

_SQL_CHUNK = 900  # ids per "IN (...)" clause, under SQLite's bound-parameter limit
_Results = tuple[np.ndarray, np.ndarray]  # faiss search output: scores (Q, k) and int64 ids (Q, k)


class FaissStore:
    """A FAISS index plus a SQLite docstore (``docstore.sqlite``) in one directory.

    Layout: ``index.faiss`` (the index), ``staging.faiss`` (exact staging index while a trainable index
    waits for data) and ``docstore.sqlite`` (tables ``points(iid, id, payload)``, ``fields``, ``meta``).
    String ids map to int64 ids (``iid``); a replaced point gets a fresh iid.

    Index types: ``factory`` is a faiss index factory string, built with inner-product metric.
    "Flat" (default) is exact. Indexes that need training (IVF, PQ, ...) start as an exact flat
    staging index; once ``train_size`` vectors have arrived (default max(4096, 30 x nlist)) the real
    index is trained on all of them and takes over. Until then every search is exact. IVF indexes hold
    the ids themselves (with a hashtable direct map, so they can delete and reconstruct); all others
    are wrapped in IndexIDMap2. HNSW indexes cannot delete or replace points: both are refused.
    ``factory`` only applies when the store is created; reopening keeps the stored index type.

    Filters: a ``where`` filter selects the matching iids in SQLite. Exact indexes then search only
    those ids (``SearchParameters(sel=IDSelectorBatch)``); approximate indexes search exactly over the
    reconstructed vectors of small subsets (<= ``exact_filter_max``) and otherwise over-fetch and
    filter, growing k until every query has k hits or the index is exhausted.

    Durability: changes live in memory and in an open SQLite transaction until :meth:`flush`, which
    writes the index to a temporary file, fsyncs it, renames it over the old one (atomic), and only
    then commits SQLite. Opening for writing reconciles the two: index ids without a SQLite row are removed
    from the index and rows without a vector are deleted. A crash (even kill -9) between the rename and the
    commit therefore loses at most the points of the last unflushed batch, never leaves them half-stored.

    Readers (``read_only=True``) never write: they open SQLite read-only, ignore (in memory) vectors
    without a committed row, and refuse changes. A reader may run beside a writer in another process: it
    sees the last committed state, and works on a read-only folder too.

    GPU: when ``use_gpu`` and ``faiss.get_num_gpus() > 0``, unfiltered and over-fetch searches run on
    a GPU copy of the index (``index_cpu_to_all_gpus``), rebuilt after writes; the CPU index stays the
    one that is written to disk. HNSW stays on the CPU.
    """

    INDEX_FILE = "index.faiss"
    STAGING_FILE = "staging.faiss"
    DOCSTORE_FILE = "docstore.sqlite"

    def __init__(
        self,
        path: Path | str,
        dim: int,
        *,
        factory: str = "Flat",
        create: bool,
        nprobe: int = 16,
        ef_search: int = 64,
        train_size: int | None = None,
        exact_filter_max: int = 20_000,
        use_gpu: bool = True,
        read_only: bool = False,
    ) -> None:
        if read_only and create:
            raise ValueError("a read-only store cannot be created")
        self.path = Path(path)
        self.dim = dim
        self.read_only = read_only
        self.exact_filter_max = exact_filter_max
        self._nprobe = nprobe
        self._ef_search = ef_search
        self._use_gpu = use_gpu
        self._gpu_index: faiss.Index | None = None
        self._closed = False
        db_path = self.path / self.DOCSTORE_FILE
        self._db = _connect(db_path, read_only) if db_path.exists() else None
        stored = _read_meta(self._db, db_path)
        if stored is None and not create:
            self._close_db()
            raise GenRetError(f"no faiss store at {self.path} (build the index first)")
        if stored is not None and int(stored["dim"]) != dim:
            self._close_db()
            raise GenRetError(f"the faiss store at {self.path} holds {stored['dim']}-d vectors, not {dim}-d")
        self.factory = factory if stored is None else stored["factory"]
        try:
            self._set_kind(self._new_index())  # also validates the factory string
            if not read_only:
                self._init_db(db_path)
            if stored is None:
                self._create(factory)
            else:
                self._index = self._load_index()
            self._apply_search_params(self._index)
            self._train_size = train_size or max(4096, 30 * self._nlist)
            self._fields = {row[0] for row in self._sql.execute("SELECT name FROM fields")}
            index_iids = self._index_iids()
            row_iids = np.array([r[0] for r in self._sql.execute("SELECT iid FROM points")], dtype=np.int64)
        except sqlite3.DatabaseError as e:
            self._close_db()
            raise GenRetError(f"corrupt faiss docstore {db_path}: {e}") from None
        except BaseException:
            self._close_db()
            raise
        self._next_iid = int(max(row_iids.max(initial=0), index_iids.max(initial=0))) + 1
        self._reconcile(index_iids, row_iids)

    def _init_db(self, db_path: Path) -> None:
        """Open the docstore for writing and create its tables."""
        self.path.mkdir(parents=True, exist_ok=True)
        if self._db is None:
            self._db = sqlite3.connect(db_path, check_same_thread=False)
        self._db.executescript(
            "CREATE TABLE IF NOT EXISTS points (iid INTEGER PRIMARY KEY, id TEXT NOT NULL UNIQUE,"
            " payload TEXT NOT NULL);"
            "CREATE TABLE IF NOT EXISTS fields (name TEXT PRIMARY KEY);"
            "CREATE TABLE IF NOT EXISTS meta (key TEXT PRIMARY KEY, value TEXT NOT NULL);"
        )

    def _create(self, factory: str) -> None:
        """Start a new store: an empty index file and the meta rows."""
        for name in (self.INDEX_FILE, self.STAGING_FILE):
            (self.path / name).unlink(missing_ok=True)
        self._index = self._fresh_active_index()
        self._sql.executemany(
            "INSERT OR REPLACE INTO meta VALUES (?, ?)",
            [("dim", str(self.dim)), ("factory", factory), ("format", "1")],
        )
        self._write_index()
        self._sql.commit()

    def _close_db(self) -> None:
        if self._db is not None:
            self._db.close()
            self._db = None

    @property
    def _sql(self) -> sqlite3.Connection:
        """The docstore connection, open from ``__init__`` until :meth:`close`."""
        assert self._db is not None, "the faiss store is closed"
        return self._db

    # ------------------------------------------------------------------ index construction

    def _new_index(self) -> faiss.Index:
        """An empty index of the configured type, wrapped so that it takes int64 ids."""
        try:
            index = faiss.index_factory(self.dim, self.factory, faiss.METRIC_INNER_PRODUCT)
        except RuntimeError as e:
            reason = str(e).strip().splitlines()[-1].rsplit(": ", 1)[-1]  # drop faiss's C++ location
            raise GenRetError(f"invalid faiss index string '{self.factory}': {reason}") from None
        if isinstance(index, faiss.IndexIDMap):
            return index
        ivf = faiss.try_extract_index_ivf(index)
        if ivf is not None and isinstance(index, (faiss.IndexIVF, faiss.IndexPreTransform)):
            ivf.set_direct_map_type(faiss.DirectMap.Hashtable)  # type: ignore[attr-defined]  # not in faiss's stubs
            return index
        return faiss.IndexIDMap2(index)

    def _set_kind(self, template: faiss.Index) -> None:
        """Record what the configured index type can do (from an empty instance of it)."""
        ivf = faiss.try_extract_index_ivf(template)
        self._native_ids = not isinstance(template, faiss.IndexIDMap)
        self._nlist = ivf.nlist if ivf is not None else 1
        self._needs_training = not template.is_trained
        inner = faiss.downcast_index(template.index) if isinstance(template, faiss.IndexIDMap) else None
        self._hnsw = isinstance(inner, faiss.IndexHNSW)
        self._removable = self._native_ids or isinstance(inner, faiss.IndexFlatCodes)
        self._flat = isinstance(inner, faiss.IndexFlat)

    def _fresh_active_index(self) -> faiss.Index:
        """An empty index to write into: the real one, or the exact staging index if it needs training."""
        self._staging = self._needs_training
        return faiss.IndexIDMap2(faiss.IndexFlatIP(self.dim)) if self._staging else self._new_index()

    def _load_index(self) -> faiss.Index:
        """Read the index from disk (the trained index wins over a leftover staging file)."""
        main, staging = self.path / self.INDEX_FILE, self.path / self.STAGING_FILE
        for file, is_staging in ((main, False), (staging, True)):
            if file.exists():
                self._staging = is_staging
                try:
                    return faiss.read_index(str(file))
                except RuntimeError:
                    raise GenRetError(f"corrupt faiss index file {file}; rebuild the index") from None
        logger.warning("faiss store %s had no index file; starting an empty one", self.path)
        return self._fresh_active_index()

    def _apply_search_params(self, index: faiss.Index) -> None:
        """Set nprobe (IVF) and efSearch (HNSW) on the index."""
        ivf = faiss.try_extract_index_ivf(index)
        if ivf is not None:
            ivf.nprobe = self._nprobe
        if isinstance(index, faiss.IndexIDMap):
            inner = faiss.downcast_index(index.index)
            if isinstance(inner, faiss.IndexHNSW):
                inner.hnsw.efSearch = self._ef_search

    @property
    def _exact(self) -> bool:
        """Whether the active index searches exactly."""
        return self._staging or self._flat

    # ------------------------------------------------------------------ index primitives

    def _index_iids(self) -> np.ndarray:
        """All int64 ids held by the active index."""
        if isinstance(self._index, faiss.IndexIDMap):
            return faiss.vector_to_array(self._index.id_map).astype(np.int64)
        ivf = faiss.extract_index_ivf(self._index)
        lists = ivf.invlists
        assert lists is not None  # an IVF index always owns its inverted lists
        parts = [
            faiss.rev_swig_ptr(lists.get_ids(i), lists.list_size(i)).copy()
            for i in range(ivf.nlist)
            if lists.list_size(i)
        ]
        return np.concatenate(parts).astype(np.int64) if parts else np.empty(0, np.int64)

    def _remove_iids(self, iids: np.ndarray) -> None:
        """Remove these ids from the active index (the caller checked that it can)."""
        iids = np.ascontiguousarray(iids, dtype=np.int64)
        if self._native_ids and not self._staging:
            # A hashtable direct map only accepts an array selector.
            self._index.remove_ids(faiss.IDSelectorArray(iids))
        else:
            self._index.remove_ids(faiss.IDSelectorBatch(iids))

    def _reconstruct(self, iids: np.ndarray) -> np.ndarray:
        """The stored (possibly compressed) vectors of these ids, float32 (n, dim)."""
        return self._index.reconstruct_batch(np.ascontiguousarray(iids, dtype=np.int64))

    def _train(self) -> None:
        """Train the real index on everything staged so far and move the points into it."""
        iids = self._index_iids()
        vectors = self._reconstruct(iids)
        index = self._new_index()
        index.train(vectors)
        index.add_with_ids(vectors, iids)
        self._index, self._staging = index, False
        self._apply_search_params(index)
        logger.info("trained faiss index '%s' on %d vectors", self.factory, len(iids))

    def _rebuild_without(self, drop: np.ndarray) -> None:
        """Rebuild an index that cannot delete (HNSW) from its own vectors, leaving out ``drop``."""
        keep = np.setdiff1d(self._index_iids(), drop)
        vectors = self._reconstruct(keep)
        index = self._new_index()
        if not index.is_trained:
            index.train(vectors)
        index.add_with_ids(vectors, keep)
        self._index = index
        self._apply_search_params(index)

    def _reconcile(self, index_iids: np.ndarray, row_iids: np.ndarray) -> None:
        """Make the index and the docstore agree after a crash between writing one and the other.

        A reader only drops, in memory, the vectors that have no committed row (a writer may be between
        its index write and its commit); rows without a vector are never found by a search."""
        orphan_vectors = np.setdiff1d(index_iids, row_iids)
        orphan_rows = np.setdiff1d(row_iids, index_iids)
        if self.read_only:
            if orphan_vectors.size:
                self._drop_vectors(orphan_vectors)
            return
        if not orphan_vectors.size and not orphan_rows.size:
            return
        logger.warning(
            "faiss store %s: dropping %d vectors without a docstore row and %d rows without a vector "
            "(an interrupted flush)",
            self.path,
            orphan_vectors.size,
            orphan_rows.size,
        )
        if orphan_vectors.size:
            self._drop_vectors(orphan_vectors)
        for chunk in _chunks(orphan_rows.tolist()):
            self._sql.execute(f"DELETE FROM points WHERE iid IN ({_marks(chunk)})", chunk)
        self._write_index()
        self._sql.commit()

    def _drop_vectors(self, iids: np.ndarray) -> None:
        """Remove these ids from the in-memory index, rebuilding it where the index type cannot delete."""
        if self._removable or self._staging:
            self._remove_iids(iids)
        else:
            self._rebuild_without(iids)

    def _check_writable(self) -> None:
        if self.read_only:
            raise GenRetError(f"the faiss store at {self.path} is open for reading only")

    def _write_index(self) -> None:
        """Atomically replace the index file on disk (temporary file, fsync, rename, fsync dir)."""
        name = self.STAGING_FILE if self._staging else self.INDEX_FILE
        atomic_write(self.path / name, lambda tmp: faiss.write_index(self._index, str(tmp)))
        if not self._staging:
            (self.path / self.STAGING_FILE).unlink(missing_ok=True)

    def _searcher(self, k: int) -> faiss.Index:
        """A GPU copy of the index if there is a GPU and k <= 2048 (the GPU limit), else the CPU index."""
        if k > 2048:
            return self._index
        if self._gpu_index is None and self._use_gpu and not self._hnsw and faiss.get_num_gpus() > 0:
            try:
                self._gpu_index = faiss.index_cpu_to_all_gpus(self._index)
            except (RuntimeError, AttributeError) as e:
                logger.warning("faiss GPU copy failed (%s); searching on the CPU", e)
                self._use_gpu = False
        return self._gpu_index if self._gpu_index is not None else self._index

    # ------------------------------------------------------------------ docstore helpers

    def _where_sql(self, where: dict | None) -> tuple[str, list]:
        """A SQL condition (and its parameters) for an equality filter on the payload JSON."""
        cond = normalize_where(where, self._fields)
        if cond is None:
            return "1", []
        parts, params = [], []
        for key, values in cond.items():
            json_path = '$."' + key.replace('"', '\\"') + '"'
            parts.append(f"EXISTS (SELECT 1 FROM json_each(points.payload, ?) WHERE value IN ({_marks(values)}))")
            params += [json_path, *values]
        return " AND ".join(parts), params

    def _iids_for_ids(self, ids: list[str]) -> dict[str, int]:
        """The iids of those of ``ids`` that are stored."""
        found: dict[str, int] = {}
        for chunk in _chunks(ids):
            found.update(self._sql.execute(f"SELECT id, iid FROM points WHERE id IN ({_marks(chunk)})", chunk))
        return found

    def _rows(self, iids: list[int]) -> dict[int, tuple[str, str]]:
        """iid -> (id, payload JSON) for these iids."""
        rows: dict[int, tuple[str, str]] = {}
        for chunk in _chunks(iids):
            sql = f"SELECT iid, id, payload FROM points WHERE iid IN ({_marks(chunk)})"
            rows.update((iid, (pid, payload)) for iid, pid, payload in self._sql.execute(sql, chunk))
        return rows

    # ------------------------------------------------------------------ public API

    def upsert(self, ids: list[str], vectors: np.ndarray, payloads: list[dict]) -> None:
        """Insert points, replacing existing ids (refused for HNSW). vectors: float32 (n, dim)."""
        self._check_writable()
        arr = check_points(ids, vectors, payloads, self.dim)
        if not ids:
            return
        docs = [dumps_payload(i, p) for i, p in zip(ids, payloads)]
        existing = self._iids_for_ids(ids)
        if existing and not self._removable:
            first = next(iter(existing))
            raise GenRetError(
                f"the faiss '{self.factory}' index cannot replace points ('{first}' exists); "
                "rebuild the index or use a Flat or IVF index"
            )
        if existing:
            self._remove_iids(np.fromiter(existing.values(), np.int64))
        iids = np.arange(self._next_iid, self._next_iid + len(ids), dtype=np.int64)
        self._next_iid += len(ids)
        self._index.add_with_ids(arr, iids)
        self._gpu_index = None
        for chunk in _chunks(list(existing)):
            self._sql.execute(f"DELETE FROM points WHERE id IN ({_marks(chunk)})", chunk)
        self._sql.executemany("INSERT INTO points VALUES (?, ?, ?)", zip(iids.tolist(), ids, docs))
        new_fields = payload_fields(payloads) - self._fields
        if new_fields:
            self._sql.executemany("INSERT INTO fields VALUES (?)", [(f,) for f in sorted(new_fields)])
            self._fields |= new_fields
        if self._staging and self._index.ntotal >= self._train_size:
            self._train()

    def delete(self, ids: list[str] | None = None, where: dict | None = None) -> int:
        """Delete points by id and/or filter (both: both must hold); returns the count deleted."""
        self._check_writable()
        check_delete(ids, where)
        cond, params = self._where_sql(where)
        if ids is None:
            iids = [r[0] for r in self._sql.execute(f"SELECT iid FROM points WHERE {cond}", params)]
        else:
            iids = []
            for chunk in _chunks(list(ids)):
                sql = f"SELECT iid FROM points WHERE id IN ({_marks(chunk)}) AND {cond}"
                iids += [r[0] for r in self._sql.execute(sql, chunk + params)]
        if not iids:
            return 0
        if not self._removable:
            raise GenRetError(
                f"the faiss '{self.factory}' index cannot delete points; rebuild the index or use a Flat or IVF index"
            )
        self._remove_iids(np.array(iids, dtype=np.int64))
        self._gpu_index = None
        for chunk in _chunks(iids):
            self._sql.execute(f"DELETE FROM points WHERE iid IN ({_marks(chunk)})", chunk)
        return len(iids)

    def search(self, vectors: np.ndarray, k: int, where: dict | None = None) -> list[list[StoreHit]]:
        """Top-k hits per query. vectors: float32 (Q, dim); returns Q lists of at most k hits, best first."""
        check_k(k)
        queries = as_matrix(vectors, self.dim)
        cond, params = self._where_sql(where)
        n = self._index.ntotal
        if n == 0 or len(queries) == 0:
            return [[] for _ in range(len(queries))]
        if where is None:
            scores, iids = self._searcher(k).search(queries, min(k, n))
        else:
            rows = self._sql.execute(f"SELECT iid FROM points WHERE {cond}", params)
            allowed = np.array([r[0] for r in rows], dtype=np.int64)
            if allowed.size == 0:
                return [[] for _ in range(len(queries))]
            if self._exact:
                # faiss's stubs omit the keyword-argument constructor its Python wrapper adds
                sel = faiss.SearchParameters(sel=faiss.IDSelectorBatch(allowed))  # type: ignore[call-arg]
                scores, iids = self._index.search(queries, min(k, allowed.size), params=sel)
            elif allowed.size <= self.exact_filter_max:
                scores, iids = self._search_subset(queries, k, allowed)
            else:
                scores, iids = self._search_overfetch(queries, k, allowed)
        return self._hits(scores, iids)

    def _search_subset(self, queries: np.ndarray, k: int, allowed: np.ndarray) -> _Results:
        """Exact search over the reconstructed vectors of a small set of ids (over-fetch if it cannot)."""
        try:
            sims = queries @ self._reconstruct(allowed).T
        except RuntimeError:  # an index type without reconstruct
            return self._search_overfetch(queries, k, allowed)
        kk = min(k, allowed.size)
        top = np.argpartition(-sims, kk - 1, axis=1)[:, :kk]
        top_scores = np.take_along_axis(sims, top, axis=1)
        order = np.argsort(-top_scores, axis=1, kind="stable")
        return np.take_along_axis(top_scores, order, axis=1), allowed[np.take_along_axis(top, order, axis=1)]

    def _search_overfetch(self, queries: np.ndarray, k: int, allowed: np.ndarray) -> _Results:
        """Approximate search for k x (1 / selectivity) x 2 candidates, growing 4x until k pass the filter."""
        n = self._index.ntotal
        out_scores = np.full((len(queries), k), -np.inf, dtype=np.float32)
        out_iids = np.full((len(queries), k), -1, dtype=np.int64)
        todo = np.arange(len(queries))
        fetch = min(n, max(2 * k, int(2 * k * n / allowed.size)))
        while todo.size:
            scores, iids = self._searcher(fetch).search(queries[todo], fetch)
            keep = np.isin(iids, allowed)
            unresolved = []
            for row, q in enumerate(todo):
                hit_scores, hit_iids = scores[row][keep[row]][:k], iids[row][keep[row]][:k]
                out_scores[q, : hit_iids.size], out_iids[q, : hit_iids.size] = hit_scores, hit_iids
                exhausted = fetch >= n or (iids[row] < 0).any()
                if hit_iids.size < k and not exhausted:
                    unresolved.append(q)
            todo = np.array(unresolved, dtype=np.int64)
            fetch = min(n, fetch * 4)
        return out_scores, out_iids

    def _hits(self, scores: np.ndarray, iids: np.ndarray) -> list[list[StoreHit]]:
        """Turn faiss result arrays into StoreHit lists (dropping the -1 padding)."""
        rows = self._rows(sorted({int(i) for i in iids.ravel() if i >= 0}))
        results = []
        for row_scores, row_iids in zip(scores, iids):
            hits = []
            for score, iid in zip(row_scores.tolist(), row_iids.tolist()):
                if iid >= 0 and iid in rows:
                    pid, payload = rows[iid]
                    hits.append(StoreHit(pid, score, json.loads(payload)))
            results.append(hits)
        return results

    def get(self, ids: list[str]) -> dict[str, dict]:
        """Payloads by id; missing ids are absent."""
        out: dict[str, dict] = {}
        for chunk in _chunks(list(ids)):
            sql = f"SELECT id, payload FROM points WHERE id IN ({_marks(chunk)})"
            out.update((pid, json.loads(payload)) for pid, payload in self._sql.execute(sql, chunk))
        return out

    def ids(self, where: dict | None = None) -> list[str]:
        """All ids, optionally only those matching ``where``."""
        cond, params = self._where_sql(where)
        return [r[0] for r in self._sql.execute(f"SELECT id FROM points WHERE {cond} ORDER BY iid", params)]

    def count(self) -> int:
        """Number of points."""
        return int(self._index.ntotal)

    def optimize(self) -> None:
        """Nothing to do: the index is kept ready for search as points arrive."""

    def flush(self) -> None:
        """Write the index atomically, then commit the docstore (see the class docstring)."""
        self._check_writable()
        self._write_index()
        self._sql.commit()

    def close(self) -> None:
        """Flush and close; safe to call twice."""
        if self._closed:
            return
        if not self.read_only:
            self.flush()
        self._close_db()
        self._closed = True
        del self._index  # frees the index; using a closed store fails as it did when this was set to None
        self._gpu_index = None


def _connect(db_path: Path, read_only: bool) -> sqlite3.Connection:
    """A connection to the docstore. A reader's connection cannot write (``query_only``); it opens the file
    read-write only where the folder is writable, so that SQLite can roll back a dead writer's journal
    (restoring the last committed state), and read-only otherwise (a read-only folder or volume)."""
    if not read_only:
        return sqlite3.connect(db_path, check_same_thread=False)
    mode = "rw" if os.access(db_path.parent, os.W_OK) and os.access(db_path, os.W_OK) else "ro"
    try:
        db = sqlite3.connect(f"{db_path.resolve().as_uri()}?mode={mode}", uri=True, check_same_thread=False)
        db.execute("PRAGMA query_only = ON")
    except sqlite3.OperationalError as e:
        raise GenRetError(f"cannot read the faiss docstore {db_path}: {e}") from None
    except sqlite3.DatabaseError as e:
        raise GenRetError(f"corrupt faiss docstore {db_path}: {e}") from None
    return db


def _read_meta(db: sqlite3.Connection | None, db_path: Path) -> dict[str, str] | None:
    """The meta table of an existing docstore, or None if there is no initialised store there."""
    if db is None:
        return None
    try:
        meta = dict(db.execute("SELECT key, value FROM meta"))
    except sqlite3.OperationalError as e:
        if "no such table" in str(e):
            return None
        db.close()
        raise GenRetError(f"cannot read the faiss docstore {db_path}: {e}") from None
    except sqlite3.DatabaseError as e:
        db.close()
        raise GenRetError(f"corrupt faiss docstore {db_path}: {e}") from None
    return meta if "dim" in meta else None


def _chunks(items: list) -> list[list]:
    """``items`` in slices small enough for one SQL statement."""
    return [items[i : i + _SQL_CHUNK] for i in range(0, len(items), _SQL_CHUNK)]


def _marks(items: list) -> str:
    """``?, ?, ...`` for a parameter list."""
    return ", ".join("?" * len(items))
