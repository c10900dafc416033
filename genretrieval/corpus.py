"""Corpus ingestion for ``genret index``: files to documents, token chunks, and diffs against an index."""

from __future__ import annotations

import csv
import hashlib
import json
import os
import re
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from html.parser import HTMLParser
from pathlib import Path
from typing import Any, BinaryIO

from .errors import GenRetError

PLAIN_FORMATS = (".txt", ".md", ".rst")
HTML_FORMATS = (".html", ".htm")
RECORD_FORMATS = (".jsonl", ".json", ".csv", ".parquet")
#: Every extension ``iter_documents`` reads (compared case-insensitively).
SUPPORTED_FORMATS = PLAIN_FORMATS + HTML_FORMATS + RECORD_FORMATS

#: A file with a NUL byte in its first ``BINARY_SNIFF`` bytes is binary and skipped.
BINARY_SNIFF = 8192

#: Fraction of the chunk window at its end in which ``chunk_document`` looks for a boundary to cut at.
BOUNDARY_WINDOW = 0.15

_ID_FALLBACKS = {"id": ("id", "_id")}
_TEXT_FALLBACKS = {"text": ("text", "content", "body")}
_SENTENCE_END = ".!?…。！？"
_CLOSERS = "\"')]}»”’"


@dataclass
class Document:
    """One document: a plain or HTML file, or one record of a record file (JSONL, JSON, CSV, Parquet).

    ``source`` is the file's path relative to the corpus root (posix); ``doc_id`` is ``source`` for plain and
    HTML files, ``"{source}#{id}"`` for records with an id, and ``"{source}#{n}"`` (n: 1-based record number)
    for records without one.
    """

    doc_id: str
    title: str
    text: str
    source: str
    metadata: dict[str, Any] = field(default_factory=dict)


@dataclass
class Chunk:
    """A token window of a document; ``text == document.text[char_start:char_end]``.

    ``id`` is ``f"{doc_id}::{chunk_no}"``; ``content_hash`` is the sha256 (hex) of the title, text, metadata
    and chunk settings, so an unchanged hash means there is nothing to re-embed or update.
    """

    id: str
    doc_id: str
    text: str
    title: str
    source: str
    chunk_no: int
    char_start: int
    char_end: int
    content_hash: str
    metadata: dict[str, Any] = field(default_factory=dict)


@dataclass
class IngestStats:
    """What a scan saw and skipped; filled in as ``iter_documents`` / ``iter_chunks`` are consumed.

    ``decode_errors`` counts files read with invalid UTF-8 replaced by U+FFFD; ``records_without_text``
    counts records (and plain/HTML files) with no text. ``sources_seen`` holds every corpus file in a
    supported format, ``sources_read`` those read to the end: the incremental diff needs both.
    """

    files_seen: int = 0
    files_read: int = 0
    skipped_binary: int = 0
    skipped_unreadable: int = 0
    skipped_unsupported: int = 0
    decode_errors: int = 0
    records_without_text: int = 0
    documents: int = 0
    chunks: int = 0
    sources_seen: set[str] = field(default_factory=set)
    sources_read: set[str] = field(default_factory=set)

    def skipped_summary(self) -> str:
        """The skip counts in words, e.g. ``"2 binary, 1 unreadable skipped; 3 without text"``, or ""."""
        skipped = [f"{n} {what}" for n, what in ((self.skipped_binary, "binary"),
                                                 (self.skipped_unreadable, "unreadable"),
                                                 (self.skipped_unsupported, "unsupported")) if n]
        parts = [", ".join(skipped) + " skipped"] if skipped else []
        if self.records_without_text:
            parts.append(f"{self.records_without_text} without text")
        return "; ".join(parts)


@dataclass(frozen=True)
class _Fields:
    ids: tuple[str, ...]
    titles: tuple[str, ...]
    texts: tuple[str, ...]
    metadata: tuple[str, ...] | None

    @classmethod
    def of(cls, id_field: str, title_field: str, text_field: str,
           metadata_fields: Sequence[str] | None) -> _Fields:
        return cls(_ID_FALLBACKS.get(id_field, (id_field,)), (title_field,),
                   _TEXT_FALLBACKS.get(text_field, (text_field,)),
                   None if metadata_fields is None else tuple(metadata_fields))


class _Decoder:
    """Decodes UTF-8 with replacement, remembering whether anything had to be replaced."""

    def __init__(self) -> None:
        self.replaced = False

    def __call__(self, data: bytes) -> str:
        try:
            return data.decode("utf-8")
        except UnicodeDecodeError:
            self.replaced = True
            return data.decode("utf-8", errors="replace")


# ---------------------------------------------------------------------------------------------- documents


def iter_documents(path: str | os.PathLike, *, id_field: str = "id", title_field: str = "title",
                   text_field: str = "text", metadata_fields: Sequence[str] | None = None,
                   stats: IngestStats | None = None) -> Iterator[Document]:
    """Stream the documents under ``path`` (a directory, read recursively, or a single file).

    Files are visited in sorted order, skipping hidden files and directories; the format follows the
    extension (``SUPPORTED_FORMATS``). Record files (.jsonl, .json, .csv, .parquet) give one document per
    record: the id comes from ``id_field`` (default "id", falling back to "_id"), the text from
    ``text_field`` (default "text", falling back to "content" then "body"), the title from ``title_field``,
    and the metadata from ``metadata_fields`` (default: every other scalar field). A .json file holds a
    list of objects, an object with one list of objects under some key, or a single object.

    Binary, unreadable and unsupported files and records without text are skipped and counted in
    ``stats``. Raises GenRetError for a missing path, a malformed record file (naming file and line), a
    duplicate id within a file, or, once the walk ends, when no document was found.
    """
    root = Path(path)
    if not root.exists() and not root.is_symlink():
        raise GenRetError(f"path not found: {path}")
    fields = _Fields.of(id_field, title_field, text_field, metadata_fields)
    return _documents(root, str(path), fields, IngestStats() if stats is None else stats)


def _documents(root: Path, shown: str, fields: _Fields, stats: IngestStats) -> Iterator[Document]:
    start = stats.documents
    for file, source, display in _walk(root, shown, stats):
        for doc in _file_documents(file, source, display, fields, stats):
            stats.documents += 1
            yield doc
    if stats.documents == start:
        empty = root.is_dir() and not stats.files_seen
        detail = stats.skipped_summary() or ("no files found" if empty else "")
        raise GenRetError(f"no readable documents in {shown}" + (f" ({detail})" if detail else ""))


def _walk(root: Path, shown: str, stats: IngestStats) -> Iterator[tuple[Path, str, str]]:
    """(file, source, display path) for each non-hidden file under ``root``, in sorted order."""
    if not root.is_dir():
        stats.files_seen += 1
        yield root, root.name, shown
        return

    def unreadable_dir(_: OSError) -> None:
        stats.skipped_unreadable += 1

    for dirpath, dirnames, filenames in os.walk(root, onerror=unreadable_dir):
        dirnames[:] = sorted(d for d in dirnames if not d.startswith("."))
        for name in sorted(f for f in filenames if not f.startswith(".")):
            file = Path(dirpath, name)
            source = file.relative_to(root).as_posix()
            stats.files_seen += 1
            yield file, source, os.path.join(shown, source)


def _file_documents(file: Path, source: str, display: str, fields: _Fields,
                    stats: IngestStats) -> Iterator[Document]:
    ext = file.suffix.lower()
    if ext not in SUPPORTED_FORMATS:
        stats.skipped_unsupported += 1
        return
    stats.sources_seen.add(source)
    if not file.is_file():  # a dangling link, a FIFO, a socket
        stats.skipped_unreadable += 1
        return
    decode = _Decoder()
    try:
        with open(file, "rb") as f:
            if ext != ".parquet" and b"\0" in f.read(BINARY_SNIFF):
                stats.skipped_binary += 1
                return
            f.seek(0)
            if ext in RECORD_FORMATS:
                yield from _record_documents(_RECORD_READERS[ext](f, decode, display), source, fields, stats)
            else:
                text = decode(f.read()).removeprefix("\ufeff")
                title, text = _html_text(text) if ext in HTML_FORMATS else (_markdown_title(text, ext), text)
                if text.strip():
                    yield Document(source, title, text, source)
                else:
                    stats.records_without_text += 1
    except OSError:
        stats.skipped_unreadable += 1
        return
    stats.files_read += 1
    stats.decode_errors += decode.replaced
    stats.sources_read.add(source)


def _markdown_title(text: str, ext: str) -> str:
    """The first line of a Markdown file when it is a level-1 ATX heading (``# Title``), else ""."""
    if ext != ".md":
        return ""
    first = text.lstrip().split("\n", 1)[0]
    return first[2:].strip() if first.startswith("# ") else ""


def _record_documents(records: Iterator[tuple[str, dict]], source: str, fields: _Fields,
                      stats: IngestStats) -> Iterator[Document]:
    seen: set[str] = set()
    for n, (where, record) in enumerate(records, 1):
        text_key, text = _first(record, fields.texts)
        if not isinstance(text, str) or not text.strip():
            stats.records_without_text += 1
            continue
        id_key, rid = _first(record, fields.ids)
        doc_id = f"{source}#{rid if id_key else n}"
        if doc_id in seen:
            raise GenRetError(f"{where}: duplicate document id {doc_id!r}")
        seen.add(doc_id)
        title_key, title = _first(record, fields.titles)
        if fields.metadata is None:
            used = {*fields.ids, *fields.titles, *fields.texts}
            metadata = {k: v for k, v in record.items()
                        if k not in used and isinstance(v, (str, int, float, bool))}
        else:
            metadata = {k: json.loads(json.dumps(record[k], default=str))
                        for k in fields.metadata if record.get(k) is not None}
        yield Document(doc_id, "" if title_key is None else str(title), text, source, metadata)


def _first(record: dict, names: tuple[str, ...]) -> tuple[str | None, Any]:
    """The first of ``names`` with a value in ``record`` (None and "" count as missing), and that value."""
    for name in names:
        value = record.get(name)
        if value is not None and value != "":
            return name, value
    return None, None


def _read_jsonl(f: BinaryIO, decode: _Decoder, display: str) -> Iterator[tuple[str, dict]]:
    for lineno, raw in enumerate(f, 1):
        line = decode(raw)
        if lineno == 1:
            line = line.removeprefix("\ufeff")
        if not line.strip():
            continue
        try:
            record = json.loads(line)
        except json.JSONDecodeError as e:
            raise GenRetError(f"{display}:{lineno}: invalid JSON ({e.msg} at column {e.colno})") from None
        if not isinstance(record, dict):
            raise GenRetError(f"{display}:{lineno}: expected a JSON object, got {type(record).__name__}")
        yield f"{display}:{lineno}", record


def iter_jsonl(path: str | os.PathLike) -> Iterator[tuple[str, dict]]:
    """``("file:line", record)`` for each JSON object of a JSONL file (UTF-8, invalid bytes replaced).

    A line that is not a JSON object raises ``GenRetError`` naming the file and line.
    """
    with open(path, "rb") as f:
        yield from _read_jsonl(f, _Decoder(), str(path))


def _read_json(f: BinaryIO, decode: _Decoder, display: str) -> Iterator[tuple[str, dict]]:
    try:
        data = json.loads(decode(f.read()).removeprefix("\ufeff"))
    except json.JSONDecodeError as e:
        raise GenRetError(f"{display}:{e.lineno}: invalid JSON ({e.msg} at column {e.colno})") from None
    if isinstance(data, dict):
        lists = [k for k, v in data.items()
                 if isinstance(v, list) and v and all(isinstance(r, dict) for r in v)]
        if len(lists) > 1:
            raise GenRetError(f"{display}: ambiguous JSON, lists of objects under keys {', '.join(lists)}; "
                              "write one list (or JSONL) instead")
        data = data[lists[0]] if lists else [data]
    if not isinstance(data, list):
        raise GenRetError(f"{display}: expected a JSON list of objects, got {type(data).__name__}")
    for i, record in enumerate(data):
        if not isinstance(record, dict):
            raise GenRetError(f"{display}: record {i + 1}: expected a JSON object, "
                              f"got {type(record).__name__}")
        yield f"{display}: record {i + 1}", record


def _read_csv(f: BinaryIO, decode: _Decoder, display: str) -> Iterator[tuple[str, dict]]:
    lines = (decode(raw).removeprefix("\ufeff") if i == 0 else decode(raw) for i, raw in enumerate(f))
    reader = csv.DictReader(lines)
    try:
        for row in reader:
            yield f"{display}:{reader.line_num}", {k: v for k, v in row.items() if isinstance(k, str)}
    except csv.Error as e:
        raise GenRetError(f"{display}:{reader.line_num}: invalid CSV ({e})") from None


def _read_parquet(f: BinaryIO, decode: _Decoder, display: str) -> Iterator[tuple[str, dict]]:
    import pyarrow as pa
    import pyarrow.parquet as pq

    row = 0
    try:
        for batch in pq.ParquetFile(f).iter_batches(batch_size=1024):
            for record in batch.to_pylist():
                row += 1
                yield f"{display}: row {row}", record
    except pa.ArrowInvalid as e:
        raise GenRetError(f"{display}: invalid Parquet file ({e})") from None


_RECORD_READERS: dict[str, Callable[[BinaryIO, _Decoder, str], Iterator[tuple[str, dict]]]] = {
    ".jsonl": _read_jsonl, ".json": _read_json, ".csv": _read_csv, ".parquet": _read_parquet}


class _HTMLText(HTMLParser):
    """Visible text and ``<title>`` of an HTML page; block elements become line breaks, table cells spaces."""

    SKIP = {"script", "style", "noscript", "template"}
    LINE = {"br", "li", "tr", "dt", "dd", "option"}
    BLOCK = {"p", "div", "h1", "h2", "h3", "h4", "h5", "h6", "ul", "ol", "dl", "table", "thead", "tbody",
             "tfoot", "section", "article", "header", "footer", "nav", "aside", "main", "pre", "blockquote",
             "hr", "figure", "figcaption", "form", "fieldset", "address", "details", "summary", "body"}

    def __init__(self) -> None:
        super().__init__(convert_charrefs=True)
        self.parts: list[str] = []
        self.title: list[str] = []
        self.skip = 0
        self.pre = 0
        self.in_title = False

    def handle_starttag(self, tag: str, attrs: list) -> None:
        if tag in self.SKIP:
            self.skip += 1
        elif tag == "title":
            self.in_title = True
        self._break(tag)
        if tag == "pre":
            self.pre += 1

    def handle_endtag(self, tag: str) -> None:
        if tag in self.SKIP:
            self.skip = max(0, self.skip - 1)
        elif tag == "title":
            self.in_title = False
        if tag == "pre":
            self.pre = max(0, self.pre - 1)
        self._break(tag)

    def handle_startendtag(self, tag: str, attrs: list) -> None:
        self._break(tag)

    def handle_data(self, data: str) -> None:
        if self.in_title:
            self.title.append(data)
        elif not self.skip:
            if not self.pre:
                data = re.sub(r"\s+", " ", data)
                if not self.parts or self.parts[-1].endswith("\n"):
                    data = data.lstrip()
            if data:
                self.parts.append(data)

    def _break(self, tag: str) -> None:
        at_line_start = not self.parts or self.parts[-1].endswith("\n")
        if tag == "br" or (tag in self.LINE and not at_line_start):
            self.parts.append("\n")
        elif tag in self.BLOCK:
            self.parts.append("\n\n")
        elif tag in ("td", "th") and self.parts and not self.parts[-1][-1].isspace():
            self.parts.append(" ")


def _html_text(html: str) -> tuple[str, str]:
    """(title, text) of an HTML page: script/style dropped, blocks separated by newlines."""
    parser = _HTMLText()
    parser.feed(html)
    parser.close()
    lines = "".join(parser.parts).split("\n")
    text = re.sub(r"\n{3,}", "\n\n", "\n".join(line.rstrip() for line in lines)).strip()
    return " ".join("".join(parser.title).split()), text


# ---------------------------------------------------------------------------------------------- chunking


def _check_chunking(chunk_size: int, overlap: int) -> None:
    if chunk_size <= 0:
        raise GenRetError(f"chunk size must be positive, got {chunk_size}")
    if not 0 <= overlap < chunk_size:
        raise GenRetError(f"chunk overlap must be at least 0 and less than the chunk size ({chunk_size}), "
                          f"got {overlap}")


def _token_offsets(tokenizer: Any, text: str) -> list[tuple[int, int]]:
    try:
        enc = tokenizer(text, add_special_tokens=False, return_offsets_mapping=True)
    except NotImplementedError:
        raise GenRetError("this tokenizer gives no character offsets; chunking needs a fast (Rust-backed) "
                          "Hugging Face tokenizer") from None
    return [(int(s), int(e)) for s, e in enc["offset_mapping"]]


def _boundary_rank(text: str, pos: int) -> int:
    """How good a place to end a chunk character position ``pos`` is: 4 paragraph break, 3 line break,
    2 sentence end, 1 other whitespace, 0 inside a word."""
    lo, hi = pos, pos
    while lo > 0 and text[lo - 1].isspace():
        lo -= 1
    while hi < len(text) and text[hi].isspace():
        hi += 1
    gap = text[lo:hi]
    if not gap:
        return 0
    if gap.count("\n") >= 2:
        return 4
    if "\n" in gap:
        return 3
    while lo > 0 and text[lo - 1] in _CLOSERS:
        lo -= 1
    return 2 if lo > 0 and text[lo - 1] in _SENTENCE_END else 1


def chunk_document(doc: Document, tokenizer: Any, chunk_size: int = 256, overlap: int = 32) -> list[Chunk]:
    """Split ``doc`` into windows of at most ``chunk_size`` tokens; consecutive ones share ``overlap``.

    ``tokenizer`` is a Hugging Face fast tokenizer, or any callable answering
    ``tokenizer(text, add_special_tokens=False, return_offsets_mapping=True)`` with a mapping whose
    ``"offset_mapping"`` lists one (start, end) character span per token. A window is cut early at the best
    paragraph, line, sentence or word boundary in its last ``BOUNDARY_WINDOW`` of tokens, if there is one.
    Chunk texts are exact slices of ``doc.text`` (leading and trailing whitespace trimmed); a document of at
    most ``chunk_size`` tokens is a single chunk. Raises GenRetError for bad settings.
    """
    _check_chunking(chunk_size, overlap)
    offsets = _token_offsets(tokenizer, doc.text)
    n = len(offsets)
    window = int(chunk_size * BOUNDARY_WINDOW)
    chunks: list[Chunk] = []
    start, prev_end = 0, 0
    while start < n:
        end = min(start + chunk_size, n)
        if end < n:
            candidates = range(max(start + 1, prev_end + 1, end - window), end + 1)
            rank, best = max((_boundary_rank(doc.text, offsets[k - 1][1]), k) for k in candidates)
            end = best if rank else end
        chunk = _make_chunk(doc, offsets[start:end], len(chunks), chunk_size, overlap)
        if chunk is not None:
            chunks.append(chunk)
        if end >= n:
            break
        start, prev_end = max(end - overlap, start + 1), end
    return chunks


def _make_chunk(doc: Document, offsets: list[tuple[int, int]], chunk_no: int, chunk_size: int,
                overlap: int) -> Chunk | None:
    spans = [(s, e) for s, e in offsets if e > s]
    if not spans:
        return None
    char_start, char_end = min(s for s, _ in spans), max(e for _, e in spans)
    while char_start < char_end and doc.text[char_start].isspace():
        char_start += 1
    while char_end > char_start and doc.text[char_end - 1].isspace():
        char_end -= 1
    if char_start == char_end:
        return None
    text = doc.text[char_start:char_end]
    key = json.dumps([doc.title, text, doc.metadata, chunk_size, overlap], ensure_ascii=False, sort_keys=True)
    return Chunk(id=f"{doc.doc_id}::{chunk_no}", doc_id=doc.doc_id, text=text, title=doc.title,
                 source=doc.source, chunk_no=chunk_no, char_start=char_start, char_end=char_end,
                 content_hash=hashlib.sha256(key.encode()).hexdigest(), metadata=dict(doc.metadata))


def iter_chunks(path: str | os.PathLike, tokenizer: Any, chunk_size: int = 256, overlap: int = 32, *,
                id_field: str = "id", title_field: str = "title", text_field: str = "text",
                metadata_fields: Sequence[str] | None = None,
                stats: IngestStats | None = None) -> Iterator[Chunk]:
    """Stream the chunks of every document under ``path``; one document is in memory at a time.

    Settings and the path are checked at once; the rest as ``iter_documents`` and ``chunk_document``
    describe. Pass ``stats`` to read the counts once the iterator is exhausted.
    """
    _check_chunking(chunk_size, overlap)
    stats = IngestStats() if stats is None else stats
    docs = iter_documents(path, id_field=id_field, title_field=title_field, text_field=text_field,
                          metadata_fields=metadata_fields, stats=stats)
    return _chunks(docs, tokenizer, chunk_size, overlap, stats)


def _chunks(docs: Iterator[Document], tokenizer: Any, chunk_size: int, overlap: int,
            stats: IngestStats) -> Iterator[Chunk]:
    for doc in docs:
        for chunk in chunk_document(doc, tokenizer, chunk_size, overlap):
            stats.chunks += 1
            yield chunk


def scan(path: str | os.PathLike, tokenizer: Any, chunk_size: int = 256, overlap: int = 32, *,
         id_field: str = "id", title_field: str = "title", text_field: str = "text",
         metadata_fields: Sequence[str] | None = None) -> tuple[list[Chunk], IngestStats]:
    """All chunks under ``path`` and the scan's counts: ``iter_chunks`` collected into a list."""
    stats = IngestStats()
    chunks = list(iter_chunks(path, tokenizer, chunk_size, overlap, id_field=id_field,
                              title_field=title_field, text_field=text_field,
                              metadata_fields=metadata_fields, stats=stats))
    return chunks, stats


# ---------------------------------------------------------------------------------------------- incremental


class ChunkDiff:
    """Compares a fresh scan with what an index holds, for incremental (re-)indexing, while streaming.

    ``existing`` maps the index's chunk ids to their ``content_hash`` (None when unknown: always updated).
    Pass the scan's chunks through ``changed`` (it yields those to add or update, and records the unchanged
    ids in ``unchanged``); once they are exhausted, ``stale`` lists the ids to delete::

        diff = ChunkDiff(store_hashes)
        for chunk in diff.changed(iter_chunks(path, tok, stats=stats)):
            ...embed and upsert...
        store.delete(diff.stale(stats, sync=args.sync))
    """

    def __init__(self, existing: Mapping[str, str | None]):
        self.existing = existing
        self.unchanged: list[str] = []
        self.produced: set[str] = set()

    def changed(self, chunks: Iterable[Chunk]) -> Iterator[Chunk]:
        """The chunks that are new or whose ``content_hash`` differs from the index's."""
        for chunk in chunks:
            self.produced.add(chunk.id)
            if self.existing.get(chunk.id) == chunk.content_hash:
                self.unchanged.append(chunk.id)
            else:
                yield chunk

    def stale(self, stats: IngestStats, sync: bool = False) -> list[str]:
        """Sorted index ids that the scan no longer produces and that should be deleted.

        An id is stale when its source file was read in this scan (``stats.sources_read``) but did not give
        this chunk id again: the document shrank, lost a record, or became empty. With ``sync=True`` the
        ids whose source file no longer exists in the scanned corpus (not in ``stats.sources_seen``: the
        file was deleted or renamed, or the id came from elsewhere, e.g. another corpus root) are stale too,
        so the index mirrors the corpus. Ids of files that still exist but were skipped this time (now
        binary or unreadable) are always kept.
        """
        out = []
        for chunk_id in self.existing:
            if chunk_id in self.produced:
                continue
            source = _source_of(chunk_id, stats.sources_seen)
            if (source is None and sync) or source in stats.sources_read:
                out.append(chunk_id)
        return sorted(out)


def _source_of(chunk_id: str, sources: set[str]) -> str | None:
    """The longest source among ``sources`` that ``chunk_id`` (``source[#id]::n``) belongs to, if any."""
    doc_id = chunk_id.rpartition("::")[0]
    if doc_id in sources:
        return doc_id
    cut = doc_id.rfind("#")
    while cut > 0:
        if doc_id[:cut] in sources:
            return doc_id[:cut]
        cut = doc_id.rfind("#", 0, cut)
    return None


def diff_chunks(existing: Mapping[str, str | None], chunks: Iterable[Chunk], stats: IngestStats,
                sync: bool = False) -> tuple[list[Chunk], list[str], list[str]]:
    """``(to_add_or_update, unchanged_ids, stale_ids)`` for a scan against an index; see ``ChunkDiff``.

    ``chunks`` must be the scan that filled ``stats`` (a list from ``scan``, or an ``iter_chunks``
    iterator, which this consumes before reading ``stats``).
    """
    diff = ChunkDiff(existing)
    upsert = list(diff.changed(chunks))
    return upsert, diff.unchanged, diff.stale(stats, sync)
