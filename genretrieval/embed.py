"""Embeddings as files: ``genret embed`` writes a corpus's chunks and their vectors to Parquet, in one process or
on a Ray cluster, and ``genret index --from-embeddings`` bulk-loads them into an index.

Layout of an output folder ``DIR``: one or more *parts* per corpus file, at ``DIR/<source>.partNNNNN.parquet``
(``source`` is the file's path relative to the corpus root, as an index stores it). A part holds the chunks of
``part_documents`` consecutive documents of its file (a plain, Markdown or HTML file is one document; a record file
has one per record), so where parts begin depends only on the corpus, never on the batch size or the number of
workers. Columns: ``id``, ``doc_id``, ``text``, ``title``, ``source``, ``chunk_no``, ``char_start``, ``char_end``,
``metadata`` (a JSON object, as a string), ``content_hash`` and ``vector`` (a fixed-size list of float32,
L2-normalised). The schema metadata holds, under ``genret.encoder``, the encoder identity exactly as an index's
manifest stores it (``encoder.identity()``), and under ``genret.part`` the rest as JSON: the settings (task,
chunking, record fields, ``part_documents``), the encoder spec an index needs to load the encoder again, the
source, the part's number, whether it is the file's last part, and the sha256 of the corpus file it was read from.

Resuming: each part is written to a temporary file and renamed into place. A re-run skips every file whose parts
are all there and were read from the same bytes (sha256). A file that changed is read again: a part whose chunks
(ids and content hashes) are exactly those already on disk keeps its vectors, any other part is embedded again,
and parts the file no longer has are removed. So an interrupted run, or records appended to a JSONL file,
re-embed only what is missing or new; an edit early in a big record file re-embeds the parts after it.
"""

from __future__ import annotations

import contextvars
import fcntl
import hashlib
import json
import logging
import os
import pickle
import re
import socket
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

import numpy as np

from . import __version__
from .corpus import SUPPORTED_FORMATS, Chunk, ChunkDiff, Document, IngestStats, chunk_document
from .encoder.spec import EncoderSpec
from .errors import GenRetError
from .fileio import write_parquet_atomic
from .index import IndexStats
from .manifest import Manifest, binding_differs, describe_encoder
from .progress import progress_bar
from .stores.base import StoreOptions

FORMAT_VERSION = 1
#: Documents per part: the unit of resuming and of work on Ray (a part of short records is a few MB).
PART_DOCUMENTS = 1000
DEFAULT_CHUNK_SIZE = 256
DEFAULT_OVERLAP = 32
ENCODER_KEY = b"genret.encoder"
PART_KEY = b"genret.part"
LOCK = ".genret-embed.lock"
#: Settings every part of an output folder shares; a later run defaults to them and refuses others.
SETTINGS = ("task", "chunk_size", "overlap", "part_documents", "id_field", "title_field", "text_field")
#: Rows read from a Parquet file per upload batch when bulk-loading.
LOAD_BATCH = 4096
#: Rows between flushes of a local store while bulk-loading (a FAISS flush rewrites the whole index file).
LOAD_FLUSH_EVERY = 100_000
_PART_NAME = re.compile(r"^(?P<source>.+)\.part(?P<part>\d{5,})\.parquet$")
_COLUMNS = (
    "id",
    "doc_id",
    "text",
    "title",
    "source",
    "chunk_no",
    "char_start",
    "char_end",
    "metadata",
    "content_hash",
    "vector",
)


@dataclass
class EmbedStats:
    """What one ``embed_corpus`` run did."""

    files: int = 0  # corpus files in a supported format
    skipped: int = 0  # of those, already embedded from the same bytes
    embedded_files: int = 0  # read and written in this run
    parts: int = 0  # part files written
    chunks: int = 0  # rows in the parts written
    embedded: int = 0  # chunks encoded (the others kept their vectors)
    removed: int = 0  # part files removed (a file lost parts, or with sync its file is gone)
    workers: int = 0  # processes that wrote parts
    seconds: float = 0.0
    notes: str = ""


@dataclass
class _Source:
    """A corpus file to (re-)embed."""

    file: str  # absolute path
    source: str  # relative to the corpus root, as stored
    display: str  # as shown in errors
    sha256: str
    size: int


@dataclass
class _Part:
    """What a part file says about itself (its footer), read without its rows."""

    path: Path
    meta: dict
    identity: dict


# ---------------------------------------------------------------------------------------------- files


def part_path(out: Path, source: str, part: int) -> Path:
    """Where part ``part`` of corpus file ``source`` goes under ``out``."""
    return out / f"{source}.part{part:05d}.parquet"


def read_part_info(path: Path) -> _Part:
    """A part's metadata, read from the file's footer; GenRetError if it is not a part file."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    try:
        meta = pq.read_schema(path).metadata or {}
    except (OSError, pa.ArrowInvalid) as e:
        raise GenRetError(f"cannot read {path}: {e}") from None
    if PART_KEY not in meta or ENCODER_KEY not in meta:
        raise GenRetError(f"{path} is not a part written by genret embed (no {PART_KEY.decode()} metadata)")
    return _Part(path, json.loads(meta[PART_KEY]), json.loads(meta[ENCODER_KEY]))


def list_parts(out: Path, *, strict: bool = False) -> dict[str, dict[int, _Part]]:
    """The part files under ``out``, by source and part number. A file named like a part that cannot be read
    is skipped (it is written again), or with ``strict`` a GenRetError naming it."""
    found: dict[str, dict[int, _Part]] = {}
    if not out.is_dir():
        return found
    for dirpath, dirnames, filenames in os.walk(out):
        dirnames[:] = sorted(d for d in dirnames if not d.startswith("."))
        for name in sorted(filenames):
            if name.startswith(".") or not _PART_NAME.match(name):
                continue
            try:
                info = read_part_info(Path(dirpath, name))
            except GenRetError:
                if strict:
                    raise
                continue
            found.setdefault(info.meta["source"], {})[int(info.meta["part"])] = info
    return found


def _complete(parts: dict[int, _Part], sha256: str | None = None) -> tuple[bool, list[Path]]:
    """Whether a source's parts are complete (its last part and all before it, read from the same bytes, and
    ``sha256`` when given), and the part files past the last one (left by an interrupted run; to remove)."""
    last = [p for p in parts.values() if p.meta.get("last")]
    if len(last) != 1:
        return False, []
    n, sha = int(last[0].meta["part"]), last[0].meta["file_sha256"]
    if sha256 is not None and sha != sha256:
        return False, []
    ok = all(i in parts and parts[i].meta["file_sha256"] == sha for i in range(n + 1))
    return ok, [p.path for i, p in sorted(parts.items()) if i > n] if ok else []


def _sha256(path: str) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def _remove_temporaries(out: Path) -> None:
    """Temporary part files left by a killed run (only under the folder's lock, so no run is writing them)."""
    for dirpath, _, filenames in os.walk(out):
        for name in filenames:
            if name.startswith(".") and name.endswith(".tmp") and ".parquet." in name:
                Path(dirpath, name).unlink(missing_ok=True)


class _FolderLock:
    """``DIR/.genret-embed.lock``, locked exclusively (flock, without waiting) while a run writes ``DIR``."""

    def __init__(self, out: Path):
        try:
            out.mkdir(parents=True, exist_ok=True)
            self.fd: int | None = os.open(out / LOCK, os.O_RDWR | os.O_CREAT, 0o644)
        except OSError as e:
            raise GenRetError(f"cannot write to {out}: {e.strerror or e}") from None
        try:
            fcntl.flock(self.fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            holder = os.pread(self.fd, 32, 0).decode(errors="replace").strip() or "?"
            os.close(self.fd)
            raise GenRetError(
                f"{out} is being written by pid {holder} (another genret embed); try again when it finishes"
            ) from None
        os.ftruncate(self.fd, 0)
        os.pwrite(self.fd, f"{os.getpid()}\n".encode(), 0)
        self.created = False  # whether this run made the folder

    def release(self) -> None:
        if self.fd is not None:
            os.ftruncate(self.fd, 0)
            fcntl.flock(self.fd, fcntl.LOCK_UN)
            os.close(self.fd)
            self.fd = None


# ---------------------------------------------------------------------------------------------- settings


def _other_encoder(out, expected: dict, identity: dict) -> str:
    return (
        f"{out} holds embeddings made with the {describe_encoder(expected)}, but this is the "
        f"{describe_encoder(identity)}; write to another --out"
    )


def resolve_settings(recorded: dict | None, given: dict, out: Path) -> dict:
    """The settings of a run: those given (not None), else those the folder's parts were made with, else the
    defaults (``chunk_size`` None: the default fitted to the encoder, decided once it is loaded). A given value
    that differs from the recorded one is a one-line error."""
    defaults = {
        "task": "retrieval",
        "chunk_size": None,
        "overlap": DEFAULT_OVERLAP,
        "part_documents": PART_DOCUMENTS,
        "id_field": "id",
        "title_field": "title",
        "text_field": "text",
    }
    settings = {}
    for name in SETTINGS:
        value, old = given.get(name), (recorded or {}).get(name)
        if value is not None and old is not None and value != old:
            flag = "--" + name.replace("_", "-")
            raise GenRetError(
                f"{out} holds embeddings made with {flag} {old}; leave out {flag} (the folder "
                f"remembers it), or write to another --out"
            )
        settings[name] = value if value is not None else old if old is not None else defaults[name]
    return settings


def fit_chunk_size(encoder, task: str, chunk_size: int | None) -> int:
    """``chunk_size``, or for None the default (256) cut to what the encoder reads after its document
    instruction, as ``genret index`` does; GenRetError when an explicit size is more than the encoder reads."""
    if hasattr(encoder, "text_budget"):
        budget = encoder.text_budget(encoder.task(task).document)
    else:
        budget = encoder.max_text_tokens
    if chunk_size is None:
        return min(DEFAULT_CHUNK_SIZE, budget)
    if chunk_size > budget:
        raise GenRetError(
            f"--chunk-size {chunk_size} is more than this encoder reads ({budget} tokens after its "
            f"instruction); use at most {budget}"
        )
    return chunk_size


def _recorded(existing: dict[str, dict[int, _Part]]) -> _Part | None:
    for parts in existing.values():
        for part in parts.values():
            return part
    return None


# ---------------------------------------------------------------------------------------------- planning


def _plan(
    root: Path,
    out: Path,
    shown: str,
    follow_symlinks: bool,
    existing: dict[str, dict[int, _Part]],
    stats: IngestStats,
    run: EmbedStats,
) -> tuple[list[_Source], list[Path]]:
    """The corpus files to (re-)embed, and part files to remove (past a file's last part). A file is skipped when
    its parts are complete and were read from the same bytes."""
    from .corpus import _walk

    todo, remove = [], []
    out_real = out.resolve()
    for file, source, display in _walk(root, shown, follow_symlinks, stats):
        if out_real == file.resolve().parent or out_real in file.resolve().parents:
            stats.files_seen -= 1  # the output folder inside the corpus is not part of the corpus
            continue
        if file.suffix.lower() not in SUPPORTED_FORMATS:
            stats.skipped_unsupported += 1
            continue
        stats.sources_seen.add(source)
        run.files += 1
        try:
            sha, size = _sha256(str(file)), file.stat().st_size
        except OSError:
            stats.skipped_unreadable += 1
            continue
        done, surplus = _complete(existing.get(source, {}), sha)
        if done:
            run.skipped += 1
            remove += surplus
        else:
            todo.append(_Source(str(file.absolute()), source, display, sha, size))
    if not stats.sources_seen:
        detail = stats.skipped_summary() or ("no files found" if root.is_dir() else "")
        raise GenRetError(f"no readable documents in {shown}" + (f" ({detail})" if detail else ""))
    return todo, remove


def _read_source(src: dict, settings: dict) -> Iterator[dict]:
    """The parts of one corpus file, as rows: ``part``, ``last``, ``docs`` (pickled ``Document`` list) and the
    file's details. A file that cannot be read (binary, unreadable) gives one row with ``part`` -1. Reads with
    corpus.py, as ``genret index`` does; the last row carries the read's counts (JSON)."""
    from .corpus import _Fields, _file_documents

    fields = _Fields.of(settings["id_field"], settings["title_field"], settings["text_field"], None)
    stats = IngestStats()
    size = settings["part_documents"]

    def row(n: int, docs: list[Document], last: bool) -> dict:
        counts = (
            {
                k: getattr(stats, k)
                for k in ("skipped_binary", "skipped_unreadable", "decode_errors", "records_without_text")
            }
            if last
            else {}
        )
        return {
            **src,
            "part": n,
            "last": last,
            "docs": pickle.dumps(docs),
            "text_bytes": sum(len(d.text.encode()) for d in docs),
            "counts": json.dumps(counts),
        }

    n, pending, buf = 0, None, []
    for doc in _file_documents(Path(src["file"]), src["source"], src["display"], fields, stats):
        buf.append(doc)
        if len(buf) == size:
            if pending is not None:
                yield row(n, pending, False)
                n += 1
            pending, buf = buf, []
    if pending is not None:
        yield row(n, pending, not buf)
        n += 1
    if buf or (n == 0 and src["source"] in stats.sources_read):
        yield row(n, buf, True)  # the last part, or an empty one for a file without text
    elif n == 0:
        yield {**row(-1, [], True), "part": -1}


# ---------------------------------------------------------------------------------------------- embedding


class PartWriter:
    """Chunks, embeds and writes parts with one encoder: the whole job in one process, or one Ray worker.

    ``encoder`` is a loaded encoder, or None to load one from ``spec`` (``load_encoder`` arguments). With
    ``expected`` (the identity of parts already in the folder), another encoder is refused.
    """

    def __init__(
        self,
        out: str,
        settings: dict,
        spec: dict | None = None,
        encoder=None,
        expected: dict | None = None,
        batch_size: int = 16,
        manifest_spec: dict | None = None,
        corpus: str = "",
    ):
        if encoder is None:
            from .encoder import load_encoder

            encoder = load_encoder(**(spec or {}))
        self.encoder, self.out, self.batch_size = encoder, Path(out), batch_size
        self.identity = encoder.identity()
        if expected is not None and binding_differs(expected, self.identity):
            raise GenRetError(_other_encoder(out, expected, self.identity))
        self.settings = {**settings, "chunk_size": fit_chunk_size(encoder, settings["task"], settings["chunk_size"])}
        self.manifest_spec = manifest_spec or {"kind": self.identity["kind"]}
        self.corpus = corpus

    def process(self, row: dict) -> dict:
        """Write one part (``_read_source``'s row); returns what was done."""
        result = {
            "source": row["source"],
            "part": int(row["part"]),
            "last": bool(row["last"]),
            "size": int(row["size"]),
            "text_bytes": int(row["text_bytes"]),
            "counts": row["counts"],
            "rows": 0,
            "embedded": 0,
            "worker": f"{socket.gethostname()}:{os.getpid()}",
        }
        if result["part"] < 0:
            return result
        docs: list[Document] = pickle.loads(row["docs"])
        tok, s = self.encoder.tokenizer, self.settings
        chunks = [c for d in docs for c in chunk_document(d, tok, s["chunk_size"], s["overlap"])]
        path = part_path(self.out, row["source"], result["part"])
        vectors = self._reuse(path, chunks)
        if vectors is None:
            vectors = np.zeros((0, self.identity["dim"]), dtype=np.float32)
            if chunks:
                from .index import Index

                # In a context of its own: the encoder would report its progress, in texts, to our bar of files.
                vectors = contextvars.Context().run(
                    self.encoder.encode_documents,
                    [Index._doc_text(c) for c in chunks],
                    task=s["task"],
                    batch_size=self.batch_size,
                )
                result["embedded"] = len(chunks)
        meta = {
            "format_version": FORMAT_VERSION,
            "genretrieval": __version__,
            **s,
            "encoder_spec": self.manifest_spec,
            "corpus": self.corpus,
            "source": row["source"],
            "part": result["part"],
            "last": result["last"],
            "file_sha256": row["sha256"],
            "rows": len(chunks),
        }
        path.parent.mkdir(parents=True, exist_ok=True)
        write_parquet_atomic(path, _table(chunks, vectors, self.identity, meta))
        result["rows"] = len(chunks)
        return result

    def _reuse(self, path: Path, chunks: list[Chunk]) -> np.ndarray | None:
        """The vectors of the part already at ``path`` when it holds exactly these chunks (ids and content
        hashes), made by an encoder of the same identity with the same settings; else None."""
        import pyarrow.parquet as pq

        if not chunks or not path.exists():
            return None
        try:
            old = read_part_info(path)
            if binding_differs(old.identity, self.identity) or any(
                old.meta.get(k) != self.settings[k] for k in SETTINGS
            ):
                return None
            table = pq.read_table(path, columns=["id", "content_hash", "vector"])
        except (GenRetError, OSError, ValueError):
            return None
        if table.column("id").to_pylist() != [c.id for c in chunks] or table.column("content_hash").to_pylist() != [
            c.content_hash for c in chunks
        ]:
            return None
        return _vectors(table.column("vector"), self.identity["dim"])

    def __call__(self, batch: dict[str, np.ndarray]) -> dict[str, list]:
        """Ray Data: a batch of part rows (columns as arrays) to one result row per part."""
        rows = [{k: v[i] for k, v in batch.items()} for i in range(len(batch["part"]))]
        results = [self.process(r) for r in rows]
        return {k: [r[k] for r in results] for k in results[0]} if results else {}


def _table(chunks: list[Chunk], vectors: np.ndarray, identity: dict, meta: dict):
    import pyarrow as pa

    dim = int(identity["dim"])
    schema = pa.schema(
        [
            ("id", pa.string()),
            ("doc_id", pa.string()),
            ("text", pa.string()),
            ("title", pa.string()),
            ("source", pa.string()),
            ("chunk_no", pa.int32()),
            ("char_start", pa.int64()),
            ("char_end", pa.int64()),
            ("metadata", pa.string()),
            ("content_hash", pa.string()),
            ("vector", pa.list_(pa.float32(), dim)),
        ],
        metadata={ENCODER_KEY: json.dumps(identity), PART_KEY: json.dumps(meta)},
    )
    flat = pa.array(np.ascontiguousarray(vectors, dtype=np.float32).reshape(-1), type=pa.float32())
    columns = [
        [c.id for c in chunks],
        [c.doc_id for c in chunks],
        [c.text for c in chunks],
        [c.title for c in chunks],
        [c.source for c in chunks],
        [c.chunk_no for c in chunks],
        [c.char_start for c in chunks],
        [c.char_end for c in chunks],
        [json.dumps(c.metadata, ensure_ascii=False, default=str) for c in chunks],
        [c.content_hash for c in chunks],
    ]
    arrays = [pa.array(col, type=f.type) for col, f in zip(columns, schema)]
    arrays.append(pa.FixedSizeListArray.from_arrays(flat, dim))
    return pa.Table.from_arrays(arrays, schema=schema)


def _vectors(column, dim: int) -> np.ndarray:
    """A fixed-size-list column as a float32 (n, dim) array."""
    import pyarrow as pa

    if isinstance(column, pa.ChunkedArray):
        column = column.combine_chunks() if column.num_chunks != 1 else column.chunk(0)
    return np.asarray(column.flatten().to_numpy(zero_copy_only=False), dtype=np.float32).reshape(-1, dim)


class _Run:
    """Bookkeeping shared by the one-process and the Ray run: stats, progress, and removing surplus parts.

    Progress counts files; a file with several parts shows as partly done by the share of its bytes that its
    finished parts read (parts may finish in any order on Ray)."""

    def __init__(self, out: Path, stats: EmbedStats, ingest: IngestStats, progress):
        self.out, self.stats, self.ingest, self.progress = out, stats, ingest, progress
        self.started: dict[str, float] = {}  # share of each unfinished file done so far
        self.finished: set[str] = set()
        self.workers: set[str] = set()

    def done(self, r: dict) -> None:
        source, size = r["source"], r["size"]
        if r["part"] >= 0:
            self.stats.parts += 1
            self.stats.chunks += r["rows"]
            self.stats.embedded += r["embedded"]
            self.workers.add(r["worker"])
            self.stats.workers = len(self.workers)
        info = f"{self.stats.chunks} chunks, {self.stats.embedded} embedded"
        if r["last"]:
            for k, v in json.loads(r["counts"]).items():
                setattr(self.ingest, k, getattr(self.ingest, k) + v)
            if r["part"] >= 0:
                self.stats.embedded_files += 1
                self.ingest.sources_read.add(source)
                self._remove_after(source, r["part"])
            self.started.pop(source, None)
            self.finished.add(source)
            self.progress.advance(1, info=info)
        elif source not in self.finished:  # on Ray a file's last part may finish before the others
            share = self.started.get(source, 0.0) + (r["text_bytes"] / size if size else 0.0)
            self.started[source] = min(share, 0.99)
            self.progress.info = info
        self.progress.partial(sum(self.started.values()))

    def _remove_after(self, source: str, last: int) -> None:
        """Remove the parts of ``source`` numbered past ``last`` (the file got shorter)."""
        n = last + 1
        while (path := part_path(self.out, source, n)).exists():
            path.unlink()
            self.stats.removed += 1
            n += 1


def _prepare(
    path, out, settings_given: dict, follow_symlinks: bool, sync: bool
) -> tuple[_FolderLock, Path, dict, EmbedStats, IngestStats, list[_Source], _Part | None]:
    """Lock the folder, read its parts, resolve the settings and plan the run (no model is loaded)."""
    root = Path(path)
    if not root.exists() and not root.is_symlink():
        raise GenRetError(f"path not found: {path}")
    out = Path(out)
    if out.exists() and not out.is_dir():
        raise GenRetError(f"{out} is a file, not a folder for embeddings")
    if root.is_dir() and out.resolve() == root.resolve():
        raise GenRetError(f"--out {out} is the corpus folder itself; write the embeddings elsewhere")
    created = not out.exists()
    lock = _FolderLock(out)
    try:
        _remove_temporaries(out)
        existing = list_parts(out)
        recorded = _recorded(existing)
        settings = resolve_settings(recorded.meta if recorded else None, settings_given, out)
        stats, ingest = EmbedStats(), IngestStats()
        todo, remove = _plan(root, out, str(path), follow_symlinks, existing, ingest, stats)
        if sync:  # parts of files no longer in the corpus
            remove += [
                p.path
                for source, parts in existing.items()
                if source not in ingest.sources_seen
                for p in parts.values()
            ]
        for p in remove:
            p.unlink(missing_ok=True)
        stats.removed += len(remove)
    except BaseException:
        lock.release()
        _drop_if_new(out, created)
        raise
    lock.created = created
    return lock, out, settings, stats, ingest, todo, recorded


@contextmanager
def _locked_run(out: Path, lock: _FolderLock, cleanup: Callable[[], None] | None = None) -> Iterator[None]:
    """Around a run's work: an OSError is a one-line GenRetError; at the end the folder's lock is released, a first
    run that failed leaves no folder behind, and ``cleanup`` runs."""
    finished = False
    try:
        yield
        finished = True
    except OSError as e:
        raise GenRetError(f"cannot write to {out}: {e.strerror or e}") from None
    finally:
        lock.release()
        if not finished:
            _drop_if_new(out, lock.created)
        if cleanup is not None:
            cleanup()


def _drop_if_new(out: Path, created: bool) -> None:
    """A first run that failed before writing a part leaves no folder behind (only its lock file is there)."""
    if created and os.listdir(out) == [LOCK]:
        (out / LOCK).unlink(missing_ok=True)
        try:
            out.rmdir()
        except OSError:
            pass


def _manifest_spec(spec: dict | None, identity: dict | None = None) -> dict:
    """What an index's manifest records to load the encoder again (as ``genret index`` records it): from the
    spec the encoder was loaded with (less its runtime options), else from a loaded encoder's identity."""
    if spec is None and identity is not None:
        spec = {"kind": identity["kind"], "backbone": identity.get("backbone") or identity.get("model")}
    spec = spec or {}
    return EncoderSpec(spec.get("kind") or "gen", spec.get("backbone"), spec.get("adapter")).resolved().to_dict()


def embed_corpus(
    path: str | os.PathLike,
    out: str | os.PathLike,
    encoder=None,
    *,
    encoder_spec: dict | None = None,
    task: str | None = None,
    chunk_size: int | None = None,
    overlap: int | None = None,
    part_documents: int | None = None,
    id_field: str | None = None,
    title_field: str | None = None,
    text_field: str | None = None,
    batch_size: int = 16,
    sync: bool = False,
    follow_symlinks: bool = False,
    progress: bool = True,
) -> EmbedStats:
    """Chunk and embed the corpus at ``path`` into Parquet parts under ``out``, in this process (see the module
    docstring for the layout and how a re-run resumes).

    ``encoder`` is a loaded encoder; without one, ``encoder_spec`` (``load_encoder`` arguments: kind, backbone,
    adapter, device, dtype...) loads it, and only when some file needs embedding. Settings left as None take
    the values the folder's parts were made with, else the defaults; a different explicit value is refused.
    ``sync`` also removes the parts of files that are no longer in the corpus.
    """
    t0 = time.perf_counter()
    given = {
        "task": task,
        "chunk_size": chunk_size,
        "overlap": overlap,
        "part_documents": part_documents,
        "id_field": id_field,
        "title_field": title_field,
        "text_field": text_field,
    }
    lock, out, settings, stats, ingest, todo, recorded = _prepare(path, out, given, follow_symlinks, sync)
    with _locked_run(out, lock):
        if todo:
            writer = PartWriter(
                str(out),
                settings,
                spec=encoder_spec,
                encoder=encoder,
                expected=recorded.identity if recorded else None,
                batch_size=batch_size,
                manifest_spec=_manifest_spec(encoder_spec, encoder and encoder.identity()),
                corpus=str(Path(path).resolve()),
            )
            with progress_bar("embedding files", len(todo), progress) as advance:
                run = _Run(out, stats, ingest, advance)
                for src in todo:
                    for row in _read_source(vars(src), settings):
                        run.done(writer.process(row))
    stats.notes = ingest.skipped_summary()
    stats.seconds = time.perf_counter() - t0
    return stats


# ---------------------------------------------------------------------------------------------- Ray

RAY_HINT = "Ray is not installed: pip install 'genretrieval[ray]' (or pip install 'ray[data]==2.60.0')"


def _import_ray():
    try:
        import ray
        import ray.data  # noqa: F401
    except ImportError:
        raise GenRetError(RAY_HINT) from None
    return ray


def _unwrap(error: BaseException) -> GenRetError | None:
    """The GenRetError behind an exception raised in a Ray worker, if any."""
    seen: set[int] = set()
    stack: list[BaseException | None] = [error]
    while stack:
        e = stack.pop()
        if e is None or id(e) in seen:
            continue
        seen.add(id(e))
        if isinstance(e, GenRetError):
            return GenRetError(str(e).strip().splitlines()[-1] if str(e).strip() else "failed in a Ray worker")
        stack += [e.__cause__, e.__context__, getattr(e, "cause", None)]
    text = str(error)
    if "GenRetError: " in text:
        return GenRetError(text.rsplit("GenRetError: ", 1)[1].strip().splitlines()[0])
    return None


def embed_corpus_ray(
    path: str | os.PathLike,
    out: str | os.PathLike,
    encoder_spec: dict,
    *,
    address: str | None = None,
    workers: int | None = None,
    task: str | None = None,
    chunk_size: int | None = None,
    overlap: int | None = None,
    part_documents: int | None = None,
    id_field: str | None = None,
    title_field: str | None = None,
    text_field: str | None = None,
    batch_size: int = 16,
    sync: bool = False,
    follow_symlinks: bool = False,
    progress: bool = True,
) -> EmbedStats:
    """``embed_corpus`` as a Ray Data pipeline: the same parts, rows and layout.

    Files are read into parts by Ray tasks (``flat_map``); parts are chunked, embedded and written by a pool of
    ``workers`` actors (``map_batches``), each holding one encoder built from ``encoder_spec``: by default one
    actor per GPU (``num_gpus=1``) when the cluster has GPUs, else one per 4 CPUs (``num_threads`` in the spec
    sets the CPUs, and torch threads, of each). The chunking runs in the actors, with their encoder's tokenizer.
    The driver plans (which files need work), loads the encoder once in a Ray task to check it (its identity
    against the folder's, the chunk size against what it reads), shows progress and removes parts a shorter file
    no longer has; it loads no model itself. ``out`` must be a folder
    every worker can write (a shared filesystem on a multi-node cluster), and the workers need genretrieval
    installed. Uses the running Ray session if there is one; else joins ``address`` (``auto``, ``ray://HOST:PORT``)
    or, without one, starts a local cluster with this machine's CPUs; a cluster it connected to is disconnected
    at the end.
    """
    ray = _import_ray()
    t0 = time.perf_counter()
    given = {
        "task": task,
        "chunk_size": chunk_size,
        "overlap": overlap,
        "part_documents": part_documents,
        "id_field": id_field,
        "title_field": title_field,
        "text_field": text_field,
    }
    lock, out, settings, stats, ingest, todo, recorded = _prepare(path, out, given, follow_symlinks, sync)
    started = False
    quiet = logging.getLogger("ray.data")
    level = quiet.level
    # Ray Data's own plan, progress and error lines: ours are enough, and a worker's error comes back as one line.
    quiet.setLevel(logging.CRITICAL)

    def cleanup() -> None:
        quiet.setLevel(level)
        if started:
            ray.shutdown()

    with _locked_run(out, lock, cleanup):
        if todo:
            if not ray.is_initialized():
                # Workers' logs stay in Ray's session folder (/tmp/ray/session_latest/logs).
                if address:
                    try:
                        ray.init(address=address, logging_level="ERROR", log_to_driver=False)
                    except (ConnectionError, RuntimeError, ValueError) as e:
                        first = next((line for line in str(e).splitlines() if line.strip()), type(e).__name__)
                        raise GenRetError(f"cannot join the Ray cluster at {address}: {first}") from None
                else:
                    ray.init(
                        num_cpus=len(os.sched_getaffinity(0)),
                        include_dashboard=False,
                        logging_level="ERROR",
                        log_to_driver=False,
                    )
                started = True
            resources = _resources(ray, workers, encoder_spec)
            if not resources["gpus"]:
                # torch would take every core in each actor: each gets the threads of its share of the CPUs
                encoder_spec = {**encoder_spec, "num_threads": resources["threads"]}
            # One encoder loaded by a task on a worker's resources: a bad encoder option, or another encoder than
            # the folder's, is then one line here rather than an actor failing to start.
            probe = ray.remote(_probe).options(**resources["actor"], max_retries=0)
            answer = ray.get(probe.remote(encoder_spec, settings["task"], settings["chunk_size"]))
            if "error" in answer:
                raise GenRetError(answer["error"])
            expected = recorded.identity if recorded else None
            if expected is not None and binding_differs(expected, answer["identity"]):
                raise GenRetError(_other_encoder(out, expected, answer["identity"]))
            settings = {**settings, "chunk_size": answer["chunk_size"]}
            writer_args = {
                "out": str(out.resolve()),
                "settings": settings,
                "spec": encoder_spec,
                "expected": expected or answer["identity"],
                "batch_size": batch_size,
                "manifest_spec": _manifest_spec(encoder_spec),
                "corpus": str(Path(path).resolve()),
            }
            with progress_bar("embedding files", len(todo), progress) as advance:
                run = _Run(out, stats, ingest, advance)
                try:
                    for result in _ray_pipeline(ray, todo, settings, writer_args, resources):
                        run.done(result)
                except GenRetError:
                    raise
                except Exception as e:  # noqa: BLE001 - Ray wraps a worker's error in its own types
                    if (inner := _unwrap(e)) is not None:
                        raise inner from None
                    raise
    stats.notes = ingest.skipped_summary()
    stats.seconds = time.perf_counter() - t0
    return stats


def _probe(spec: dict, task: str, chunk_size: int | None) -> dict:
    """In a Ray task: load the encoder, and return its identity and the chunk size (or the error, as text)."""
    try:
        from .encoder import load_encoder

        encoder = load_encoder(**spec)
        return {"identity": encoder.identity(), "chunk_size": fit_chunk_size(encoder, task, chunk_size)}
    except GenRetError as e:
        return {"error": str(e)}


def _resources(ray, workers: int | None, spec: dict) -> dict:
    """How many encoder actors, and what each asks for: a GPU each when the cluster has GPUs, else a share of the
    CPUs (by default about 4 per actor, each actor holding a copy of the model) and as many torch threads."""
    resources = ray.cluster_resources()
    gpus, cpus = int(resources.get("GPU", 0)), max(1, int(resources.get("CPU", 1)))
    if str(spec.get("device") or "").startswith("cpu"):
        gpus = 0  # --device cpu on a cluster with GPUs
    threads = spec.get("num_threads")
    if workers is None:
        workers = gpus or max(1, cpus // (threads or min(4, cpus)))
    if gpus:
        return {"workers": workers, "actor": {"num_gpus": 1, "num_cpus": 1}, "gpus": gpus, "threads": threads}
    # The encoders share the CPUs, less a little for reading files (were reading to wait for a whole CPU, actors
    # holding them all would starve it).
    share = (cpus - 0.2) / workers
    threads = threads or max(1, round(share))
    return {"workers": workers, "actor": {"num_cpus": max(0.1, min(threads, share))}, "gpus": 0, "threads": threads}


def _ray_pipeline(ray, todo: list[_Source], settings: dict, writer_args: dict, resources: dict) -> Iterator[dict]:
    """Run the pipeline; yields one result per part as parts finish."""
    from ray.data import ActorPoolStrategy, DataContext

    DataContext.get_current().enable_progress_bars = False  # ours is enough
    items = [vars(s) for s in todo]
    ds = ray.data.from_items(items, override_num_blocks=len(items))
    # Reading is light next to encoding; asking for less CPU than the actors also keeps Ray from fusing the two
    # stages (which would tie each file to one actor).
    ds = ds.flat_map(_read_source, fn_kwargs={"settings": settings}, num_cpus=0.1)
    ds = ds.map_batches(
        PartWriter,
        fn_constructor_kwargs=writer_args,
        batch_size=1,
        batch_format="numpy",
        compute=ActorPoolStrategy(size=resources["workers"]),
        **resources["actor"],
    )
    for row in ds.iter_rows():
        yield {k: (v.item() if hasattr(v, "item") else v) for k, v in row.items()}


# ---------------------------------------------------------------------------------------------- bulk load


class RecordedEncoder:
    """Stands in for the encoder of embeddings made elsewhere: it has their identity, and embeds nothing. Lets
    ``Index.create`` write a manifest without loading a model; to search, open the index again."""

    def __init__(self, identity: dict):
        self._identity = dict(identity)
        self.dim = int(identity["dim"])

    def identity(self) -> dict:
        return dict(self._identity)

    def _refuse(self, *_, **__):
        raise GenRetError("this index was opened to load embeddings; open it with Index.open to search it")

    encode_queries = encode_documents = _refuse


def read_embeddings(directory: str | os.PathLike) -> tuple[list[_Part], _Part]:
    """The part files of an embeddings folder, checked: complete (every file's parts from one run of its bytes)
    and from one encoder and one set of settings. Returns the parts (by source, then number) and the first."""
    directory = Path(directory)
    if not directory.is_dir():
        raise GenRetError(f"no embeddings folder at {directory}")
    found = list_parts(directory, strict=True)
    if not found:
        raise GenRetError(f"no embeddings in {directory} (write them with `genret embed CORPUS --out {directory}`)")
    parts: list[_Part] = []
    for source in sorted(found):
        ok, surplus = _complete(found[source])
        if not ok or surplus:
            raise GenRetError(
                f"the embeddings of {source} in {directory} are incomplete (an interrupted or running "
                "genret embed); run it again to finish them"
            )
        parts += [p for _, p in sorted(found[source].items())]
    first = parts[0]
    for p in parts:
        if binding_differs(first.identity, p.identity):
            raise GenRetError(
                f"{p.path} was made with the {describe_encoder(p.identity)}, but {first.path} with the "
                f"{describe_encoder(first.identity)}; one folder holds one encoder's embeddings"
            )
        if any(p.meta.get(k) != first.meta.get(k) for k in SETTINGS):
            raise GenRetError(f"{p.path} was made with other settings than {first.path}")
    return parts, first


def check_index_matches(manifest: Manifest, first: _Part, where: Path) -> None:
    """Refuse embeddings whose encoder or chunking differs from an existing index's (one line)."""
    if binding_differs(manifest.encoder, first.identity):
        raise GenRetError(
            f"{first.path} was made with the {describe_encoder(first.identity)}, but index {where} "
            f"holds the {describe_encoder(manifest.encoder)}; load them into another index, or add "
            "--rebuild"
        )
    for key in ("task", "chunk_size", "overlap"):
        if getattr(manifest, key) != first.meta.get(key):
            raise GenRetError(
                f"{first.path} was made with {key} {first.meta.get(key)}, but index {where} with "
                f"{getattr(manifest, key)}; load them into another index, or add --rebuild"
            )


def load_embeddings(
    index,
    directory: str | os.PathLike,
    *,
    sync: bool = False,
    parallel: int = 4,
    batch_rows: int = LOAD_BATCH,
    flush_every: int = LOAD_FLUSH_EVERY,
    progress: bool = True,
) -> IndexStats:
    """Bulk-load an embeddings folder into an index open for writing, without encoding anything.

    Every file's encoder identity must match the index's (``BINDING`` fields), and its task and chunking too;
    else a one-line GenRetError names the file. Loading is incremental like ``Index.add``: chunks the index
    holds with the same content hash are skipped, and a loaded source's chunks that its parts no longer have
    are deleted (with ``sync``, also the chunks of sources not in the folder). Rows are read ``batch_rows`` at a
    time; a Qdrant server store uploads them with the client's ``upload_points`` in ``parallel`` processes, in
    requests under its ``max_request_bytes`` (30 MiB; the server refuses requests over 32 MiB by default).
    """
    import pyarrow.parquet as pq

    from .index import Index

    t0 = time.perf_counter()
    index._check_writable()
    directory = Path(directory)
    parts, first = read_embeddings(directory)
    check_index_matches(index.manifest, first, index.path)
    dim = int(first.identity["dim"])
    stats = IndexStats(files=len(parts))
    sources: set[str] = set()
    existing = index._existing_hashes() if index.store.count() else {}
    diff = ChunkDiff(existing)
    try:
        total = sum(int(p.meta.get("rows", 0)) for p in parts)
        with progress_bar("loading embeddings", total, progress and total > 0) as advance:

            def batches() -> Iterator[tuple[list[str], np.ndarray, list[dict]]]:
                """(ids, vectors, payloads) of the chunks to add or update, ``batch_rows`` rows read at a time."""
                for part in parts:
                    sources.add(part.meta["source"])
                    for batch in pq.ParquetFile(part.path).iter_batches(batch_size=batch_rows, columns=list(_COLUMNS)):
                        chunks = _chunks(batch)
                        changed = {c.id for c in diff.changed(chunks)}  # also records the unchanged ones
                        stats.chunks += len(chunks)
                        rows = [i for i, c in enumerate(chunks) if c.id in changed]
                        if rows:
                            stats.updated += sum(1 for i in rows if chunks[i].id in existing)
                            yield (
                                [chunks[i].id for i in rows],
                                _vectors(batch.column("vector"), dim)[rows],
                                [Index._payload(chunks[i]) for i in rows],
                            )
                        advance(len(chunks))

            if (upload := getattr(index.store, "upload", None)) is not None:
                upload(batches(), parallel=parallel)  # a server: the client's parallel upload
            else:
                since_flush = 0
                for ids, vectors, payloads in batches():
                    index.store.upsert(ids, vectors, payloads)
                    since_flush += len(ids)
                    if since_flush >= flush_every:
                        index.store.flush()
                        since_flush = 0
        stats.skipped = len(diff.unchanged)
        stats.added = stats.chunks - stats.skipped - stats.updated
        stale = diff.stale(IngestStats(sources_seen=set(sources), sources_read=set(sources)), sync=sync)
        index._commit(
            stale,
            stats,
            corpus=first.meta.get("corpus") or index.manifest.corpus,
            fields={k: first.meta[k] for k in ("id_field", "title_field", "text_field")},
            embeddings=str(directory.resolve()),
        )
    except OSError as e:
        raise GenRetError(f"cannot write the index {index.path}: {e.strerror or e}") from None
    stats.seconds = time.perf_counter() - t0
    return stats


def _chunks(batch) -> list[Chunk]:
    """The chunks of a record batch of a part file."""
    cols = {name: batch.column(name).to_pylist() for name in _COLUMNS if name != "vector"}
    return [
        Chunk(
            id=cols["id"][i],
            doc_id=cols["doc_id"][i],
            text=cols["text"][i],
            title=cols["title"][i],
            source=cols["source"][i],
            chunk_no=cols["chunk_no"][i],
            char_start=cols["char_start"][i],
            char_end=cols["char_end"][i],
            content_hash=cols["content_hash"][i],
            metadata=json.loads(cols["metadata"][i]),
        )
        for i in range(batch.num_rows)
    ]


def index_from_embeddings(
    directory: str | os.PathLike,
    where: str | os.PathLike,
    backend: Literal["faiss", "qdrant"] = "qdrant",
    *,
    url: str | None = None,
    faiss_index: str = "Flat",
    store_options: StoreOptions | dict | None = None,
    rebuild: bool = False,
    sync: bool = False,
    parallel: int = 4,
    progress: bool = True,
) -> tuple[IndexStats, int]:
    """Create (or open) the index at ``where`` and bulk-load an embeddings folder into it, loading no model.

    A new index takes its encoder identity and spec, task, chunking and record fields from the files; an
    existing one must match them. Returns the load's stats and the number of chunks in the index. A failed
    first load removes what it made.
    """
    from .index import MANIFEST, Index, read_manifest

    where = Path(where)
    parts, first = read_embeddings(directory)
    if (where / MANIFEST).exists() and not rebuild:
        check_index_matches(read_manifest(where), first, where)
    meta = first.meta
    idx = Index.create(
        where,
        RecordedEncoder(first.identity),
        backend,
        url=url,
        faiss_index=faiss_index,
        task=meta["task"],
        chunk_size=meta["chunk_size"],
        overlap=meta["overlap"],
        fields={k: meta[k] for k in ("id_field", "title_field", "text_field")},
        encoder_spec=meta.get("encoder_spec") or {"kind": first.identity["kind"]},
        store_options=store_options,
        rebuild=rebuild,
    )
    try:
        stats = load_embeddings(idx, directory, sync=sync, parallel=parallel, progress=progress)
        total = idx.count()
    except BaseException:
        idx.discard()
        raise
    idx.close()
    return stats, total
