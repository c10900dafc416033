"""Indexes: a corpus embedded into a vector store, bound to its encoder by a manifest."""

from __future__ import annotations

import fcntl
import json
import os
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Iterable, Literal

import numpy as np

from . import __version__
from .corpus import Chunk, ChunkDiff, scan
from .encoder.base import Encoder
from .errors import GenRetError
from .progress import progress_bar
from .stores.base import ID_KEY

MANIFEST = "manifest.json"
LOCK = "index.lock"
INDEX_HOME = Path("indexes")
DEFAULT_NAME = "default"
CHUNK_SIZE = 256
OVERLAP = 32
# Identity fields that must match between the encoder that built an index and the one searching it.
BINDING = ("kind", "model", "backbone", "backbone_weights", "adapter", "dim", "num_compression", "num_thought")
# Payload fields the index itself writes; metadata keys with these names (or the stores' "_id") are dropped.
RESERVED = ("text", "title", "source", "doc_id", "chunk_no", "char_start", "char_end", "content_hash")


def index_dir(name: str | None = None, directory: str | Path | None = None) -> Path:
    """``directory`` if given, else ``./indexes/<name>`` (name default ``default``)."""
    if directory is not None:
        return Path(directory)
    name = name or DEFAULT_NAME
    if not name or "/" in name or name.startswith("."):
        raise GenRetError(f"invalid index name {name!r} (use --index-dir for a path)")
    return INDEX_HOME / name


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


@dataclass
class IndexStats:
    """What one ``Index.add`` did."""

    files: int = 0
    chunks: int = 0
    added: int = 0
    updated: int = 0
    skipped: int = 0
    deleted: int = 0
    seconds: float = 0.0
    encode_seconds: float = 0.0
    notes: str = ""


def _describe(identity: dict[str, Any]) -> str:
    if identity.get("kind") == "gen":
        return (f"gen encoder on {identity.get('backbone')} with adapter {str(identity.get('adapter'))[:12]}"
                f"{'' if identity.get('trained', True) else ' (untrained)'}")
    return f"{identity.get('kind')} encoder {identity.get('model') or identity.get('backbone')}"


def _write_json_atomic(path: Path, data: dict) -> None:
    tmp = path.with_name(f".{path.name}.tmp")
    tmp.write_text(json.dumps(data, indent=2) + "\n")
    with open(tmp) as f:
        os.fsync(f.fileno())
    os.replace(tmp, path)


class _WriteLock:
    """An exclusive, non-blocking lock on the index directory; a second writer gets a clear error."""

    def __init__(self, directory: Path):
        self.path = directory / LOCK
        self.fd: int | None = None

    def __enter__(self) -> "_WriteLock":
        self.fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o644)
        try:
            fcntl.flock(self.fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            holder = os.pread(self.fd, 32, 0).decode(errors="replace").strip() or "?"
            os.close(self.fd)
            raise GenRetError(f"index {self.path.parent} is locked by another writer (pid {holder})") from None
        os.ftruncate(self.fd, 0)
        os.pwrite(self.fd, str(os.getpid()).encode(), 0)
        return self

    def __exit__(self, *exc) -> None:
        if self.fd is not None:
            os.ftruncate(self.fd, 0)
            fcntl.flock(self.fd, fcntl.LOCK_UN)
            os.close(self.fd)
            self.fd = None


class Index:
    """A searchable index in a directory: ``manifest.json`` plus a FAISS or embedded Qdrant store (or a
    pointer to a Qdrant server collection).

    Build with ``Index.create`` (or reopen with ``Index.open``), then ``add`` a corpus, ``search``, ``delete``.
    """

    def __init__(self, path: Path, manifest: dict, encoder: Encoder | None, store):
        self.path, self.manifest, self.encoder, self.store = path, manifest, encoder, store

    # ------------------------------------------------------------------------------------------ lifecycle
    @classmethod
    def create(cls, path: str | Path, encoder: Encoder, backend: Literal["faiss", "qdrant"] = "qdrant", *,
               url: str | None = None, collection: str | None = None, faiss_index: str = "Flat",
               task: str = "retrieval", chunk_size: int = CHUNK_SIZE, overlap: int = OVERLAP,
               encoder_spec: dict | None = None, store_options: dict | None = None) -> "Index":
        """Open the index at ``path``, creating it (manifest first) when it does not exist yet.

        An existing index must have been built with the same backend and an encoder of the same identity.
        ``encoder_spec`` records how to rebuild the encoder (kind, backbone, adapter path) for ``open``.
        ``store_options`` go to the store at creation (e.g. ``shard_number``, ``replication_factor`` for a
        new Qdrant server collection).
        """
        path = Path(path)
        if (path / MANIFEST).exists():
            index = cls.open(path, encoder)
            if index.manifest["backend"] != backend:
                raise GenRetError(f"index {path} uses backend {index.manifest['backend']}, not {backend}")
            return index
        if backend not in ("faiss", "qdrant"):
            raise GenRetError(f"unknown backend {backend!r}; use faiss or qdrant")
        path.mkdir(parents=True, exist_ok=True)
        identity = encoder.identity()
        manifest = {
            "format_version": 1, "genretrieval": __version__, "backend": backend, "url": url,
            "collection": collection or f"genret-{path.name}", "faiss_index": faiss_index,
            "encoder": identity, "encoder_spec": encoder_spec or {"kind": identity["kind"]},
            "task": task, "normalized": True, "chunk_size": chunk_size, "overlap": overlap,
            "store_options": store_options or {}, "created": time.strftime("%Y-%m-%dT%H:%M:%S%z"), "corpus": None,
        }
        with _WriteLock(path):
            store = cls._open_store(path, manifest, create=True, **manifest["store_options"])
            _write_json_atomic(path / MANIFEST, manifest)
        return cls(path, manifest, encoder, store)

    @classmethod
    def open(cls, path: str | Path, encoder: Encoder | None = None, *, with_encoder: bool = True,
             **encoder_overrides) -> "Index":
        """Open an existing index. Without ``encoder``, the one recorded in the manifest is loaded
        (``encoder_overrides`` such as ``device`` go to ``load_encoder``). A different encoder is refused.
        ``with_encoder=False`` opens the store alone: enough for ``info``, ``count`` and ``delete``."""
        path = Path(path)
        try:
            manifest = json.loads((path / MANIFEST).read_text())
        except FileNotFoundError:
            raise GenRetError(f"no index at {path} (build one with `genret index PATH`)") from None
        except json.JSONDecodeError as e:
            raise GenRetError(f"corrupt manifest {path / MANIFEST}: {e}") from None
        if not with_encoder:
            return cls(path, manifest, None, cls._open_store(path, manifest, create=False))
        if encoder is None:
            from .encoder import load_encoder

            spec = {**manifest["encoder_spec"], **{k: v for k, v in encoder_overrides.items() if v is not None}}
            encoder = load_encoder(**spec)
        cls._check_encoder(path, manifest["encoder"], encoder.identity())
        return cls(path, manifest, encoder, cls._open_store(path, manifest, create=False))

    @staticmethod
    def _check_encoder(path: Path, built: dict, now: dict) -> None:
        if any(built.get(k) != now.get(k) for k in BINDING):
            raise GenRetError(f"index {path} was built with the {_describe(built)}, but this is the "
                              f"{_describe(now)}; use the same --encoder/--backbone/--adapter or rebuild the index")

    @staticmethod
    def _open_store(path: Path, manifest: dict, create: bool, **options):
        from .stores import open_store

        return open_store(manifest["backend"], path / "store", manifest["encoder"]["dim"], url=manifest["url"],
                          collection=manifest["collection"], faiss_index=manifest["faiss_index"], create=create,
                          **options)

    def close(self) -> None:
        self.store.close()

    def __enter__(self) -> "Index":
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    # ------------------------------------------------------------------------------------------ writing
    def _existing_hashes(self) -> dict[str, str | None]:
        ids = self.store.ids()
        out: dict[str, str | None] = {}
        for s in range(0, len(ids), 1000):
            for pid, payload in self.store.get(ids[s:s + 1000]).items():
                out[pid] = payload.get("content_hash")
        return out

    @staticmethod
    def _payload(chunk: Chunk) -> dict[str, Any]:
        meta = {k: v for k, v in chunk.metadata.items() if k not in RESERVED and k != ID_KEY}
        return {**meta, "text": chunk.text, "title": chunk.title, "source": chunk.source, "doc_id": chunk.doc_id,
                "chunk_no": chunk.chunk_no, "char_start": chunk.char_start, "char_end": chunk.char_end,
                "content_hash": chunk.content_hash}

    def add(self, corpus: str | Path, *, sync: bool = False, batch_size: int = 16, flush_every: int = 256,
            progress: bool = True, **fields) -> IndexStats:
        """Embed a file or directory into the index, incrementally.

        Unchanged chunks (same content hash) are skipped, changed ones re-embedded, chunks that a re-read file
        no longer produces are deleted, and with ``sync`` so are the chunks of files that disappeared.
        Work is flushed every ``flush_every`` chunks, so an interrupted run keeps what it finished and a
        re-run completes it. ``fields`` (``id_field``, ``text_field``...) go to the corpus reader.
        """
        t0 = time.perf_counter()
        stats = IndexStats()
        with _WriteLock(self.path):
            tokenizer = self.encoder.tokenizer
            chunks, ingest = scan(corpus, tokenizer, self.manifest["chunk_size"], self.manifest["overlap"],
                                  **fields)
            existing = self._existing_hashes()
            diff = ChunkDiff(existing)
            todo = list(diff.changed(chunks))
            stale = diff.stale(ingest, sync=sync)
            stats.files, stats.chunks, stats.skipped = ingest.files_read, len(chunks), len(diff.unchanged)
            stats.updated = sum(1 for c in todo if c.id in existing)
            stats.added = len(todo) - stats.updated
            stats.notes = ingest.skipped_summary()
            # Longest first, so each encoder batch holds texts of similar length (little padding).
            todo.sort(key=lambda c: len(c.text) + len(c.title), reverse=True)
            with progress_bar("embedding chunks", len(todo), progress and bool(todo)) as advance:
                for s in range(0, len(todo), flush_every):
                    part = todo[s:s + flush_every]
                    vectors = []
                    for b in range(0, len(part), batch_size):
                        te = time.perf_counter()
                        vectors.append(self.encoder.encode_documents(
                            [self._doc_text(c) for c in part[b:b + batch_size]], task=self.manifest["task"],
                            batch_size=batch_size))
                        stats.encode_seconds += time.perf_counter() - te
                        advance(len(vectors[-1]))
                    self.store.upsert([c.id for c in part], np.concatenate(vectors), [self._payload(c) for c in part])
                    self.store.flush()
            if stale:
                stats.deleted = self.store.delete(ids=stale)
            self.store.flush()
            self.store.optimize()
            self.manifest["corpus"] = str(Path(corpus).resolve())
            self.manifest["updated"] = time.strftime("%Y-%m-%dT%H:%M:%S%z")
            _write_json_atomic(self.path / MANIFEST, self.manifest)
        stats.seconds = time.perf_counter() - t0
        return stats

    @staticmethod
    def _doc_text(chunk: Chunk) -> str:
        return f"{chunk.title} # {chunk.text}" if chunk.title else chunk.text

    def delete(self, ids: Iterable[str] | None = None, source: str | None = None,
               where: dict | None = None) -> int:
        """Delete chunks by id, by source file, or by payload filter; returns how many went."""
        where = dict(where or {})
        if source is not None:
            where["source"] = source
        ids = list(ids) if ids is not None else None
        if not ids and not where:
            raise GenRetError("nothing to delete: give ids, a source or a filter")
        with _WriteLock(self.path):
            n = self.store.delete(ids=ids or None, where=where or None)
            self.store.flush()
        return n

    # ------------------------------------------------------------------------------------------ reading
    def search(self, queries: str | list[str], k: int = 10, where: dict | None = None, task: str | None = None,
               batch_size: int = 16) -> list[list[Hit]]:
        """Top-``k`` chunks per query (cosine), optionally filtered by payload equality."""
        if k <= 0:
            raise GenRetError(f"k must be >= 1, got {k}")
        queries = [queries] if isinstance(queries, str) else list(queries)
        vectors = self.encoder.encode_queries(queries, task=task or self.manifest["task"], batch_size=batch_size)
        results = self.store.search(vectors, k, where=where)
        return [[self._hit(h) for h in hits] for hits in results]

    @staticmethod
    def _hit(h) -> Hit:
        p = dict(h.payload)
        core = {k: p.pop(k, None) for k in RESERVED}
        return Hit(h.id, h.score, core["text"] or "", core["title"] or "", core["source"] or "",
                   int(core["chunk_no"] or 0), p)

    def count(self) -> int:
        return self.store.count()

    def info(self) -> dict[str, Any]:
        """The manifest plus live counts."""
        return {"path": str(self.path), **self.manifest, "chunks": self.count(),
                "store": type(self.store).__name__}
