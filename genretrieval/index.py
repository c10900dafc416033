"""Indexes: a corpus embedded into a vector store, bound to its encoder by a manifest."""

from __future__ import annotations

import fcntl
import os
import shutil
import time
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any, Iterable, Literal, Mapping, cast

from .corpus import Chunk, ChunkDiff, Document, chunk_document, diff_chunks, scan
from .encoder.base import Encoder
from .encoder.spec import EncoderSpec
from .errors import GenRetError
from .hit import Hit
from .manifest import (
    FIELDS,
    MANIFEST,
    Backend,
    IndexSettings,
    Manifest,
    binding_differs,
    describe_encoder,
    read_manifest,
    timestamp,
)
from .progress import progress_bar
from .stores.base import ID_KEY, StoreOptions, check_k

LOCK = "index.lock"
STORE = "store"
INDEX_HOME = Path("indexes")
DEFAULT_NAME = "default"
CHUNK_SIZE = 256
OVERLAP = 32
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


class _Lock:
    """``index.lock`` in an index folder, locked exclusively (flock, without waiting) while an Index is open
    for writing, or open at all on Qdrant Edge (whose engine lets one process at a time load a shard).

    The file holds "<pid> <role>" of the holder, so that the process refused can say who holds it. Only the
    holder ever removes the file (a failed first run removes the lock file it made), and a process that
    locked a file removed meanwhile takes the new one instead.
    """

    def __init__(self, directory: Path, role: str):
        self.path = directory / LOCK
        for _ in range(5):
            fd, created = self._open()
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                message = _busy(directory, fd)
                os.close(fd)
                raise GenRetError(message) from None
            if _same_file(fd, self.path):
                break
            os.close(fd)
        else:
            raise GenRetError(f"index {directory} is locked by another process")
        self.fd: int | None = fd
        self.created = created
        os.ftruncate(fd, 0)
        os.pwrite(fd, f"{os.getpid()} {role}\n".encode(), 0)

    def _open(self) -> tuple[int, bool]:
        """The lock file's descriptor, and whether this call created the file."""
        try:
            try:
                return os.open(self.path, os.O_RDWR | os.O_CREAT | os.O_EXCL, 0o644), True
            except FileExistsError:
                return os.open(self.path, os.O_RDWR), False
        except OSError as e:
            raise GenRetError(f"cannot write to the index folder {self.path.parent}: {e.strerror}") from None

    def release(self, remove: bool = False) -> None:
        """Unlock; with ``remove``, delete the lock file first, while still holding it."""
        if self.fd is None:
            return
        if remove:
            self.path.unlink(missing_ok=True)
        else:
            os.ftruncate(self.fd, 0)
        fcntl.flock(self.fd, fcntl.LOCK_UN)
        os.close(self.fd)
        self.fd = None


def _same_file(fd: int, path: Path) -> bool:
    try:
        st, fst = os.stat(path), os.fstat(fd)
    except FileNotFoundError:
        return False
    return (st.st_dev, st.st_ino) == (fst.st_dev, fst.st_ino)


def _busy(directory: Path, fd: int) -> str:
    """The one-line error for an index whose lock another process holds (read from the lock file)."""
    holder = os.pread(fd, 64, 0).decode(errors="replace").split()
    pid = holder[0] if holder else "?"
    if holder[1:2] == ["read"]:
        return (
            f"index {directory} is open in pid {pid} (a Qdrant Edge index can be open in one process at a "
            "time); try again when it is closed"
        )
    return f"index {directory} is being written by pid {pid}; try again when it finishes"


def lock_holder(directory: str | Path) -> str | None:
    """Why the index in ``directory`` cannot be opened for writing now (another process holds it), or None.
    Creates nothing: a quick check before loading a model."""
    try:
        fd = os.open(Path(directory) / LOCK, os.O_RDONLY)
    except OSError:
        return None
    try:
        fcntl.flock(fd, fcntl.LOCK_SH | fcntl.LOCK_NB)
    except BlockingIOError:
        return _busy(Path(directory), fd)
    finally:
        os.close(fd)  # also drops the shared lock
    return None


def _missing_dirs(path: Path) -> list[Path]:
    """The folders that ``path.mkdir(parents=True)`` would create, deepest first."""
    missing = []
    p = Path(os.path.abspath(path))
    while not p.exists() and not p.is_symlink() and p != p.parent:
        missing.append(p)
        p = p.parent
    return missing


def _undo(made: list[Path], lock: _Lock | None, new_dirs: list[Path]) -> None:
    """Remove what a failed first run made, newest first: its entries (manifest, store), then the lock file
    if it made it, then the folders it made if they are empty. Nothing it did not make is touched."""
    for entry in reversed(made):
        if entry.is_dir() and not entry.is_symlink():
            shutil.rmtree(entry, ignore_errors=True)
        else:
            entry.unlink(missing_ok=True)
    if lock is not None:
        lock.release(remove=lock.created)
    for folder in new_dirs:
        try:
            folder.rmdir()
        except OSError:
            break


def _check_store_folder(folder: Path) -> None:
    """Refuse to create a store in a ``store`` folder that holds something else (a user's own folder)."""
    if (
        folder.is_dir()
        and any(folder.iterdir())
        and not any((folder / name).exists() for name in ("docstore.sqlite", "store.json", "shard"))
    ):
        raise GenRetError(f"{folder} exists and is not a genretrieval store; choose another index folder")


def _stamp(path: Path, manifest: Manifest) -> tuple | None:
    """What the files of a local FAISS index look like now (name, inode, size, mtime of the manifest and of each
    store file), so that a reader can tell that a writer changed them; None for other backends."""
    if manifest.backend != "faiss" or manifest.url:
        return None
    entries = [path / MANIFEST]
    try:
        entries += sorted(e for e in (path / STORE).iterdir() if not e.name.endswith((".tmp", "-journal")))
    except OSError:
        pass
    out = []
    for entry in entries:
        try:
            st = entry.stat()
        except OSError:
            continue
        out.append((entry.name, st.st_ino, st.st_size, st.st_mtime_ns))
    return tuple(out)


def _close_quietly(store) -> None:
    try:
        store.close()
    except Exception:  # noqa: BLE001 - already failing; the first error is the one to report
        pass


class Index:
    """A searchable index in a directory: ``manifest.json`` plus a FAISS or embedded Qdrant store (or a
    pointer to a Qdrant server collection).

    Build with ``Index.create`` (or reopen with ``Index.open``), then ``add`` a corpus, ``search``, ``delete``.
    An index open for writing holds the folder's lock until ``close``; reading never changes the index.
    """

    def __init__(
        self,
        path: Path,
        manifest: Manifest,
        encoder: Encoder | None,
        store,
        *,
        writable: bool = False,
        lock: _Lock | None = None,
    ):
        self.path, self.manifest, self.encoder, self.store = path, manifest, encoder, store
        self.writable = writable
        self._lock = lock
        self._made: list[Path] = []  # what create() made for a new index, removed by discard()
        self._new_dirs: list[Path] = []
        self._stamp: tuple | None = None  # a reader's view of its files on disk, for refresh()

    # ------------------------------------------------------------------------------------------ lifecycle
    @classmethod
    def create(
        cls,
        path: str | Path,
        encoder: Encoder,
        backend: Literal["faiss", "qdrant"] = "qdrant",
        *,
        url: str | None = None,
        collection: str | None = None,
        faiss_index: str = "Flat",
        task: str = "retrieval",
        chunk_size: int = CHUNK_SIZE,
        overlap: int = OVERLAP,
        fields: Mapping[str, Any] | None = None,
        encoder_spec: dict | EncoderSpec | None = None,
        store_options: dict | StoreOptions | None = None,
        rebuild: bool = False,
    ) -> "Index":
        """Open the index at ``path`` for writing, creating it (store first, then the manifest) when it has no
        manifest yet.

        An existing index must have been built with the same backend and an encoder of the same identity.
        ``encoder_spec`` records how to rebuild the encoder (kind, backbone, adapter path) for ``open``;
        ``fields`` the record fields (``id_field``, ``title_field``, ``text_field``) for ``add``.
        ``store_options`` go to the store at creation (e.g. ``shard_number``, ``replication_factor`` for a
        new Qdrant server collection). ``url`` names a Qdrant server (the API key is sent to it).
        ``rebuild`` first removes the index's own manifest and store (for a server index, its collection).
        If creating fails, what this call made is removed again; ``discard`` does the same later.
        """
        path = Path(path)
        if backend not in ("faiss", "qdrant"):
            raise GenRetError(f"unknown backend {backend!r}; use faiss or qdrant")
        new_dirs = _missing_dirs(path)
        try:
            path.mkdir(parents=True, exist_ok=True)
        except OSError as e:
            raise GenRetError(f"cannot create the index folder {path}: {e.strerror or e}") from None
        lock = store = None
        made: list[Path] = []
        try:
            lock = _Lock(path, "write")  # decided under the lock: is there an index here already?
            if rebuild:
                cls._remove_entries(path, url)
            if (path / MANIFEST).exists():
                manifest = read_manifest(path)
                if manifest.backend != backend:
                    raise GenRetError(f"index {path} uses backend {manifest.backend}, not {backend}")
                return cls._attach(path, manifest, encoder, lock=lock, url=url, writable=True)
            if not url:
                _check_store_folder(path / STORE)
                if not (path / STORE).exists():
                    made.append(path / STORE)
            identity = encoder.identity()
            manifest = Manifest(
                backend=backend,
                url=url,
                collection=collection or f"genret-{path.absolute().name}",
                faiss_index=faiss_index,
                encoder=identity,
                encoder_spec=EncoderSpec.from_dict(encoder_spec or {"kind": identity["kind"]}),
                task=task,
                chunk_size=chunk_size,
                overlap=overlap,
                fields={**FIELDS, **(fields or {})},
                store_options=store_options
                if isinstance(store_options, StoreOptions)
                else StoreOptions.from_dict(store_options),
            )
            store = cls._open_store(path, manifest, create=True, url=url, **manifest.store_options.to_dict())
            made.append(path / MANIFEST)
            manifest.write(path)
        except BaseException as e:
            if store is not None:
                _close_quietly(store)
            _undo(made, lock, new_dirs)
            if isinstance(e, OSError):
                raise GenRetError(f"cannot write the index {path}: {e.strerror or e}") from None
            raise
        index = cls(path, manifest, encoder, store, writable=True, lock=lock)
        index._made, index._new_dirs = made, new_dirs
        return index

    @classmethod
    def open(
        cls,
        path: str | Path,
        encoder: Encoder | None = None,
        *,
        with_encoder: bool = True,
        writable: bool = False,
        url: str | None = None,
        **encoder_overrides,
    ) -> "Index":
        """Open an existing index: for searching, or with ``writable`` for ``add`` and ``delete`` too.

        Without ``encoder``, the one recorded in the manifest is loaded (``encoder_overrides`` such as
        ``device`` go to ``load_encoder``). A different encoder is refused. ``with_encoder=False`` opens the
        store alone: enough for ``info``, ``count`` and ``delete``. ``url`` names the Qdrant server of an index
        kept on one; only a server named so (not one read from the manifest) gets the ``QDRANT_API_KEY``.

        Opening for reading never changes the index. A FAISS index can be read while another process writes
        it (the reader sees the last committed state) and from a read-only folder. Qdrant Edge writes to its
        folder even to read, so an Edge index is open in one process at a time (the next one gets a one-line
        error naming the holder's pid) and cannot be read from a read-only folder.
        """
        path = Path(path)
        manifest = read_manifest(path)
        lock = None
        if writable:
            lock = _Lock(path, "write")
        elif manifest.backend == "qdrant" and not manifest.url:
            store = path / STORE
            if not os.access(path, os.W_OK) or (store.exists() and not os.access(store, os.W_OK)):
                from .stores.qdrant_edge import read_only_message

                raise GenRetError(read_only_message(path / STORE))
            lock = _Lock(path, "read")
        try:
            return cls._attach(
                path,
                manifest,
                encoder,
                lock=lock,
                url=url,
                writable=writable,
                with_encoder=with_encoder,
                **encoder_overrides,
            )
        except BaseException:
            if lock is not None:
                lock.release()
            raise

    @classmethod
    def _attach(
        cls,
        path: Path,
        manifest: Manifest,
        encoder: Encoder | None,
        *,
        lock: _Lock | None,
        url: str | None,
        writable: bool,
        with_encoder: bool = True,
        **encoder_overrides,
    ) -> "Index":
        """The Index over an existing manifest: load or check the encoder, then open the store."""
        if with_encoder:
            if encoder is None:
                encoder = manifest.encoder_spec.load(**encoder_overrides)
            cls._check_encoder(path, manifest.encoder, encoder.identity())
        stamp = None if writable else _stamp(path, manifest)  # taken first: a change while opening is seen later
        store = cls._open_store(path, manifest, create=False, read_only=not writable, url=url)
        index = cls(path, manifest, encoder, store, writable=writable, lock=lock)
        index._stamp = stamp
        return index

    @staticmethod
    def _check_encoder(path: Path, built: dict, now: dict) -> None:
        if binding_differs(built, now):
            raise GenRetError(
                f"index {path} was built with the {describe_encoder(built)}, but this is the "
                f"{describe_encoder(now)}; use the same --encoder/--backbone/--adapter, or rebuild the "
                f"index with `genret index CORPUS --index-dir {path} --rebuild`"
            )

    @staticmethod
    def _open_store(
        path: Path, manifest: Manifest, *, create: bool, read_only: bool = False, url: str | None = None, **options
    ):
        """The index's store. A server index connects to ``url`` (named by the caller, so it gets the API
        key) or else to the manifest's URL (without the key); a local index ignores ``url``."""
        from .stores import open_store

        server = (url or manifest.url) if manifest.url else None
        try:
            return open_store(
                manifest.backend,
                path / STORE,
                manifest.encoder["dim"],
                url=server,
                collection=manifest.collection,
                faiss_index=manifest.faiss_index,
                create=create,
                read_only=read_only,
                url_from_user=url is not None,
                **options,
            )
        except OSError as e:
            raise GenRetError(f"cannot open the store of index {path}: {e.strerror or e}") from None

    @classmethod
    def _remove_entries(cls, path: Path, url: str | None) -> None:
        """For a rebuild (under the lock): remove the index's store (and server collection), then its manifest;
        nothing else in the folder. The store goes first, so a manifest never points to another build's store."""
        if not (path / MANIFEST).exists():
            return
        try:
            manifest = read_manifest(path)
        except GenRetError:
            manifest = None  # a damaged manifest: remove the local entries
        if manifest is not None and manifest.url:
            if not url:
                raise GenRetError(
                    f"index {path} is on a Qdrant server: name it with --url (or GENRET_URL) to rebuild it"
                )
            store = cls._open_store(path, manifest, create=True, url=url)
            try:
                store.drop()
            finally:
                store.close()
        if (path / STORE).is_dir() and not (path / STORE).is_symlink():
            shutil.rmtree(path / STORE)
        (path / MANIFEST).unlink()

    def refresh(self) -> bool:
        """For an index open for reading: catch up with what another process wrote since it was opened (or last
        refreshed), by re-reading the manifest and reopening the store when their files changed on disk. Returns
        whether it reopened. Only a local FAISS index can change under a reader (a Qdrant Edge index is open in
        one process at a time, a server collection is always current): for the others, and for an index open
        for writing, this does nothing. GenRetError, with the old store kept open, when the index can no longer
        be read or was rebuilt with another encoder or backend."""
        if self._stamp is None:
            return False
        stamp = _stamp(self.path, self.manifest)
        if stamp == self._stamp:
            return False
        manifest = read_manifest(self.path)
        if manifest.backend != "faiss" or manifest.url:
            raise GenRetError(f"index {self.path} was rebuilt with another backend; open it again")
        if self.encoder is not None:
            self._check_encoder(self.path, manifest.encoder, self.encoder.identity())
        store = self._open_store(self.path, manifest, create=False, read_only=True)
        old, self.store, self.manifest, self._stamp = self.store, store, manifest, stamp
        _close_quietly(old)
        return True

    def close(self) -> None:
        """Close the store and release the folder's lock; safe to call twice."""
        try:
            self.store.close()
        finally:
            if self._lock is not None:
                self._lock.release()
                self._lock = None

    def discard(self) -> None:
        """Close, and if ``create`` made this index (it had no manifest), remove what it made: the manifest,
        the store, the lock file if it made it, and the folders it made if they are then empty. Nothing else
        is removed, and an index that existed before is only closed. For a first run that failed."""
        _close_quietly(self.store)
        _undo(self._made, self._lock, self._new_dirs)
        self._lock, self._made, self._new_dirs = None, [], []

    def __enter__(self) -> "Index":
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    # ------------------------------------------------------------------------------------------ writing
    def _existing_hashes(self, where: dict | None = None) -> dict[str, str | None]:
        ids = self.store.ids(where=where) if where else self.store.ids()
        out: dict[str, str | None] = {}
        for s in range(0, len(ids), 1000):
            for pid, payload in self.store.get(ids[s : s + 1000]).items():
                out[pid] = payload.get("content_hash")
        return out

    @staticmethod
    def _payload(chunk: Chunk) -> dict[str, Any]:
        meta = {k: v for k, v in chunk.metadata.items() if k not in RESERVED and k != ID_KEY}
        return {
            **meta,
            "text": chunk.text,
            "title": chunk.title,
            "source": chunk.source,
            "doc_id": chunk.doc_id,
            "chunk_no": chunk.chunk_no,
            "char_start": chunk.char_start,
            "char_end": chunk.char_end,
            "content_hash": chunk.content_hash,
        }

    def _require_encoder(self) -> Encoder:
        if self.encoder is None:
            raise GenRetError(f"index {self.path} was opened without its encoder (with_encoder=False)")
        return self.encoder

    def _tokenizer(self) -> Any:
        """The encoder's tokenizer, which chunking counts tokens with (the Encoder protocol does not name it:
        every encoder that builds an index has one)."""
        encoder: Any = self._require_encoder()
        return encoder.tokenizer

    def _check_writable(self) -> None:
        if not self.writable:
            raise GenRetError(
                f"index {self.path} is open for reading; open it with Index.open(..., writable=True) "
                "or Index.create to change it"
            )

    def add(
        self,
        corpus: str | Path,
        *,
        sync: bool = False,
        batch_size: int = 16,
        flush_every: int = 256,
        progress: bool = True,
        **fields,
    ) -> IndexStats:
        """Embed a file or directory into the index, incrementally.

        Unchanged chunks (same content hash) are skipped, changed ones re-embedded, chunks that a re-read file
        no longer produces are deleted, and with ``sync`` so are the chunks of files that disappeared.
        Work is flushed every ``flush_every`` chunks, so an interrupted run keeps what it finished and a
        re-run completes it. ``fields`` (``id_field``, ``text_field``...) go to the corpus reader; the
        manifest's are the defaults, and the ones used are recorded there.
        """
        self._check_writable()
        fields = {**FIELDS, **self.manifest.fields, **fields}
        t0 = time.perf_counter()
        stats = IndexStats()
        try:
            tokenizer = self._tokenizer()
            chunks, ingest = scan(corpus, tokenizer, self.manifest.chunk_size, self.manifest.overlap, **fields)
            existing = self._existing_hashes()
            todo, unchanged, stale = diff_chunks(existing, chunks, ingest, sync=sync)
            stats.files, stats.chunks, stats.skipped = ingest.files_read, len(chunks), len(unchanged)
            stats.updated = sum(1 for c in todo if c.id in existing)
            stats.added = len(todo) - stats.updated
            stats.notes = ingest.skipped_summary()
            self._embed(todo, stats, batch_size, flush_every, progress)
            self._commit(stale, stats, corpus=str(Path(corpus).resolve()), fields={k: fields[k] for k in FIELDS})
        except OSError as e:
            raise GenRetError(f"cannot write the index {self.path}: {e.strerror or e}") from None
        stats.seconds = time.perf_counter() - t0
        return stats

    def _embed(self, todo: list[Chunk], stats: IndexStats, batch_size: int, flush_every: int, progress: bool) -> None:
        """Embed ``todo`` and upsert it, flushing every ``flush_every`` chunks; adds to ``stats.encode_seconds``.

        Each part of ``flush_every`` chunks goes to the encoder whole: it sorts the texts by length into batches
        of ``batch_size`` and reports each batch (each layer, for the generative encoder) to the bar shown here.
        """
        with progress_bar("embedding chunks", len(todo), progress and bool(todo)) as advance:
            for s in range(0, len(todo), flush_every):
                part = todo[s : s + flush_every]
                te = time.perf_counter()
                vectors = self._require_encoder().encode_documents(
                    [self._doc_text(c) for c in part], task=self.manifest.task, batch_size=batch_size
                )
                stats.encode_seconds += time.perf_counter() - te
                advance(len(part))
                self.store.upsert([c.id for c in part], vectors, [self._payload(c) for c in part])
                self.store.flush()

    def _commit(self, stale: list[str], stats, **manifest) -> None:
        """Delete the ``stale`` chunks (``stats.deleted``), make every change durable and ready to search, then
        record ``manifest`` entries and the time in the manifest."""
        if stale:
            stats.deleted = self.store.delete(ids=stale)
        self.store.flush()
        self.store.optimize()
        self.manifest = replace(self.manifest, **manifest, updated=timestamp())
        self.manifest.write(self.path)

    def add_documents(
        self, documents: Iterable[Document], *, batch_size: int = 16, flush_every: int = 256, progress: bool = False
    ) -> IndexStats:
        """Embed documents given in memory (``corpus.Document``), chunked as ``add`` chunks the files of a corpus.

        A document whose ``doc_id`` the index holds already is replaced: its unchanged chunks are skipped, changed
        ones re-embedded, and the chunks it no longer produces deleted. Other documents are not touched, and the
        manifest's corpus root stays as it is. ``stats.files`` counts the documents.
        """
        self._check_writable()
        docs = list(documents)
        doc_ids = [d.doc_id for d in docs]
        if len(set(doc_ids)) != len(doc_ids):
            twice = next(i for i in doc_ids if doc_ids.count(i) > 1)
            raise GenRetError(f"document id {twice!r} given twice")
        t0 = time.perf_counter()
        stats = IndexStats(files=len(docs))
        try:
            tokenizer = self._tokenizer()
            chunks = [
                c for d in docs for c in chunk_document(d, tokenizer, self.manifest.chunk_size, self.manifest.overlap)
            ]
            existing: dict[str, str | None] = {}
            if doc_ids and self.store.count():
                for s in range(0, len(doc_ids), 500):
                    existing.update(self._existing_hashes({"doc_id": doc_ids[s : s + 500]}))
            diff = ChunkDiff(existing)
            todo = list(diff.changed(chunks))
            stale = sorted(set(existing) - diff.produced)
            stats.chunks, stats.skipped = len(chunks), len(diff.unchanged)
            stats.updated = sum(1 for c in todo if c.id in existing)
            stats.added = len(todo) - stats.updated
            self._embed(todo, stats, batch_size, flush_every, progress)
            self._commit(stale, stats)
        except OSError as e:
            raise GenRetError(f"cannot write the index {self.path}: {e.strerror or e}") from None
        stats.seconds = time.perf_counter() - t0
        return stats

    @staticmethod
    def _doc_text(chunk: Chunk) -> str:
        return f"{chunk.title} # {chunk.text}" if chunk.title else chunk.text

    def delete(self, ids: Iterable[str] | None = None, source: str | None = None, where: dict | None = None) -> int:
        """Delete chunks by id, by source file, or by payload filter; returns how many went."""
        self._check_writable()
        where = dict(where or {})
        if source is not None:
            where["source"] = source
        ids = list(ids) if ids is not None else None
        if not ids and not where:
            raise GenRetError("nothing to delete: give ids, a source or a filter")
        n = self.store.delete(ids=ids or None, where=self._with_sources(where) or None)
        self.store.flush()
        return n

    # ------------------------------------------------------------------------------------------ reading
    def search(
        self,
        queries: str | list[str],
        k: int = 10,
        where: dict | None = None,
        task: str | None = None,
        batch_size: int = 16,
    ) -> list[list[Hit]]:
        """Top-``k`` chunks per query (cosine), optionally filtered by payload equality. A ``source`` may be
        given as stored (relative to the corpus root) or as a path from the current folder."""
        check_k(k)
        queries = [queries] if isinstance(queries, str) else list(queries)
        vectors = self._require_encoder().encode_queries(
            queries, task=task or self.manifest.task, batch_size=batch_size
        )
        results = self.store.search(vectors, k, where=self._with_sources(where))
        return [[self._hit(h) for h in hits] for hits in results]

    def _with_sources(self, where: dict | None) -> dict | None:
        """``where`` with each ``source`` value also given relative to the corpus root, where it names a path
        under that root from the current folder (sources are stored relative to the root)."""
        if not where or "source" not in where:
            return where
        values = where["source"]
        values = list(values) if isinstance(values, (list, tuple, set, frozenset)) else [values]
        out = []
        for value in values:
            out.append(value)
            if isinstance(value, str) and (stored := self.stored_source(value)) not in (None, value):
                out.append(stored)
        return {**where, "source": list(dict.fromkeys(out))}

    def stored_source(self, path: str) -> str | None:
        """How the file at ``path`` (from the current folder) is named in the index: relative to the corpus
        root the manifest records; None if it is not under that root."""
        corpus = self.manifest.corpus
        if not corpus:
            return None
        root, target = Path(corpus), Path(path).resolve()
        if target == root:
            return root.name  # a single-file corpus
        return target.relative_to(root).as_posix() if root in target.parents else None

    @staticmethod
    def _hit(h) -> Hit:
        p = dict(h.payload)
        core = {k: p.pop(k, None) for k in RESERVED}
        return Hit(
            h.id, h.score, core["text"] or "", core["title"] or "", core["source"] or "", int(core["chunk_no"] or 0), p
        )

    def count(self) -> int:
        return self.store.count()

    def info(self) -> dict[str, Any]:
        """The manifest plus live counts."""
        return {
            "path": str(self.path),
            **self.manifest.to_dict(),
            "chunks": self.count(),
            "store": type(self.store).__name__,
        }


def check_writable(where: Path) -> None:
    """A one-line error, before any model loads, when the index folder (or the folder it would go in) is not
    writable."""
    if where.exists() and not where.is_dir():
        raise GenRetError(f"{where} is a file, not an index folder")
    folder = where.absolute()
    while not folder.exists() and folder != folder.parent:
        folder = folder.parent
    if not os.access(folder, os.W_OK | os.X_OK):
        raise GenRetError(f"cannot write to {folder}: permission denied (the index folder must be writable)")


def build_index(
    where: str | Path,
    settings: IndexSettings,
    *,
    corpus: str | Path | None = None,
    embeddings: str | Path | None = None,
    given: set[str] | frozenset[str] = frozenset(),
    rebuild: bool = False,
    named_url: str | None = None,
    sync: bool = False,
    batch_size: int = 16,
    follow_symlinks: bool = False,
    parallel: int = 4,
    progress: bool = True,
    **runtime: Any,
) -> tuple[IndexStats, int]:
    """What `genret index` does: embed ``corpus`` (or bulk-load the ``embeddings`` folder of `genret embed`)
    into the index at ``where``, creating it if needed. Returns the run's stats and the chunks in the index.

    An existing index keeps the settings it was built with: ``settings`` named in ``given`` must match them
    unless ``rebuild`` (see ``IndexSettings.settle``). Every check runs before a model loads. A chunk size above
    what the encoder reads is refused when given, else lowered to it for a new index. ``runtime`` (device,
    dtype, num_threads, trust_remote_code) goes to the encoder. A failed first run removes what it made, and
    only that; an interrupted one keeps its flushed work for the next run.
    """
    where = Path(where)
    if busy := lock_holder(where):
        raise GenRetError(busy)
    manifest = None
    if (where / MANIFEST).exists():
        try:
            manifest = read_manifest(where)
        except GenRetError:
            if not rebuild:
                raise
    settings = settings.settle(manifest, set(given), where, rebuild=rebuild, named_url=named_url)
    backend = cast(Backend, settings.backend)  # settle() checked it
    check_writable(where)
    if embeddings is not None:
        from .embed import index_from_embeddings

        return index_from_embeddings(
            embeddings,
            where,
            backend,
            url=named_url,
            faiss_index=settings.faiss_index,
            store_options=settings.store_options,
            rebuild=rebuild,
            sync=sync,
            parallel=parallel,
            progress=progress,
        )
    if corpus is None:
        raise GenRetError("give the corpus PATH to index (or --from-embeddings DIR)")
    encoder = settings.spec.load(**runtime)
    budget = (
        encoder.text_budget(encoder.task(settings.task).document)
        if hasattr(encoder, "text_budget")
        else encoder.max_text_tokens
    )
    if settings.chunk_size > budget:
        if "chunk_size" in given:
            raise GenRetError(
                f"--chunk-size {settings.chunk_size} is more than this encoder reads ({budget} tokens "
                f"after its instruction); use at most {budget}"
            )
        if manifest is None or rebuild:
            settings.chunk_size = budget
    idx = Index.create(
        where,
        encoder,
        backend,
        url=named_url,
        faiss_index=settings.faiss_index,
        task=settings.task,
        chunk_size=settings.chunk_size,
        overlap=settings.overlap,
        fields=settings.fields,
        encoder_spec=settings.spec,
        store_options=settings.store_options,
        rebuild=rebuild,
    )
    try:
        stats = idx.add(
            corpus,
            sync=sync,
            batch_size=batch_size,
            follow_symlinks=follow_symlinks,
            progress=progress,
            **settings.fields,
        )
        return stats, idx.count()
    except GenRetError:
        idx.discard()  # a failed first run removes what it made, and only that
        raise
    finally:
        idx.close()
