"""Corpus ingestion for ``genret index``: files to documents, token chunks, and diffs against an index."""

from __future__ import annotations

import csv
import gzip
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

_ID_FALLBACKS = {"id": ("id", "_id")}
_TEXT_FALLBACKS = {"text": ("text", "content", "body")}


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
    """A piece of a document, of whole sentences where it can; ``text == document.text[char_start:char_end]``.

    ``id`` is ``f"{doc_id}::{name}"``: the name is "0" for a document's first chunk, and for a later one a hash
    of the text it starts with (after the overlap), so that a chunk keeps its id when text before it changes;
    ``chunk_no`` is its position in the document. ``content_hash`` is the sha256 (hex) of the title, text,
    metadata and chunk settings, so an unchanged hash means there is nothing to re-embed or update.
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
    counts records (and plain/HTML files) with no text; ``skipped_outside`` counts symbolic links (to files or
    directories) that lead out of the corpus folder. ``sources_seen`` holds every corpus file in a supported
    format, ``sources_read`` those read to the end: the incremental diff needs both.
    """

    files_seen: int = 0
    files_read: int = 0
    skipped_binary: int = 0
    skipped_unreadable: int = 0
    skipped_unsupported: int = 0
    skipped_outside: int = 0
    decode_errors: int = 0
    records_without_text: int = 0
    documents: int = 0
    chunks: int = 0
    sources_seen: set[str] = field(default_factory=set)
    sources_read: set[str] = field(default_factory=set)

    def skipped_summary(self) -> str:
        """What was skipped or repaired, in words, or "": e.g. ``"2 binary, 1 symlink out of the corpus
        skipped; 3 without text; invalid UTF-8 replaced in 1 file"``."""
        links = f"symlink{'s' * (self.skipped_outside != 1)} out of the corpus"
        skipped = [
            f"{n} {what}"
            for n, what in (
                (self.skipped_binary, "binary"),
                (self.skipped_unreadable, "unreadable"),
                (self.skipped_unsupported, "unsupported"),
                (self.skipped_outside, links),
            )
            if n
        ]
        parts = [", ".join(skipped) + " skipped"] if skipped else []
        if self.records_without_text:
            parts.append(f"{self.records_without_text} without text")
        if self.decode_errors:
            parts.append(f"invalid UTF-8 replaced in {self.decode_errors} file{'s' * (self.decode_errors != 1)}")
        return "; ".join(parts)


@dataclass(frozen=True)
class _Fields:
    ids: tuple[str, ...]
    titles: tuple[str, ...]
    texts: tuple[str, ...]
    metadata: tuple[str, ...] | None

    @classmethod
    def of(cls, id_field: str, title_field: str, text_field: str, metadata_fields: Sequence[str] | None) -> _Fields:
        return cls(
            _ID_FALLBACKS.get(id_field, (id_field,)),
            (title_field,),
            _TEXT_FALLBACKS.get(text_field, (text_field,)),
            None if metadata_fields is None else tuple(metadata_fields),
        )


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


def iter_documents(
    path: str | os.PathLike,
    *,
    id_field: str = "id",
    title_field: str = "title",
    text_field: str = "text",
    metadata_fields: Sequence[str] | None = None,
    follow_symlinks: bool = False,
    stats: IngestStats | None = None,
) -> Iterator[Document]:
    """Stream the documents under ``path`` (a directory, read recursively, or a single file).

    Files are visited in sorted order, skipping hidden files and directories; the format follows the
    extension (``SUPPORTED_FORMATS``). Record files (.jsonl, .json, .csv, .parquet) give one document per
    record: the id comes from ``id_field`` (default "id", falling back to "_id"), the text from
    ``text_field`` (default "text", falling back to "content" then "body"), the title from ``title_field``,
    and the metadata from ``metadata_fields`` (default: every other scalar field). A .json file holds a
    list of objects, an object with one list of objects under some key, or a single object.

    A symbolic link inside the folder is read when it leads to a file inside the folder; links that lead out
    of it (to a file or a directory) are skipped and counted, and linked directories are not entered, unless
    ``follow_symlinks`` is true (each directory is then still read once, so a link loop ends).

    Binary, unreadable and unsupported files and records without text are skipped and counted in
    ``stats``; files with invalid UTF-8 are read with U+FFFD in its place and counted. Raises GenRetError for
    a missing path, a malformed record file (naming file and line, e.g. a CSV quote that is never closed), a
    duplicate id within a file, or, once the walk ends, when no document was found.
    """
    root = Path(path)
    if not root.exists() and not root.is_symlink():
        raise GenRetError(f"path not found: {path}")
    fields = _Fields.of(id_field, title_field, text_field, metadata_fields)
    return _documents(root, str(path), fields, follow_symlinks, IngestStats() if stats is None else stats)


def _documents(
    root: Path, shown: str, fields: _Fields, follow_symlinks: bool, stats: IngestStats
) -> Iterator[Document]:
    start = stats.documents
    for file, source, display in _walk(root, shown, follow_symlinks, stats):
        for doc in _file_documents(file, source, display, fields, stats):
            stats.documents += 1
            yield doc
    if stats.documents == start:
        empty = root.is_dir() and not stats.files_seen
        detail = stats.skipped_summary() or ("no files found" if empty else "")
        raise GenRetError(f"no readable documents in {shown}" + (f" ({detail})" if detail else ""))


INDEX_ENTRIES = ("manifest.json", "index.lock", "store")  # what genretrieval.index writes into an index folder


def _walk(root: Path, shown: str, follow_symlinks: bool, stats: IngestStats) -> Iterator[tuple[Path, str, str]]:
    """(file, source, display path) for each non-hidden file under ``root``, in sorted order; symbolic links as
    ``iter_documents`` says."""
    if not root.is_dir():
        stats.files_seen += 1
        yield root, root.name, shown
        return
    real_root = root.resolve()

    def leads_out(path: Path) -> bool:
        return not follow_symlinks and path.is_symlink() and not path.resolve().is_relative_to(real_root)

    def unreadable_dir(_: OSError) -> None:
        stats.skipped_unreadable += 1

    walked: set[str] = set()
    for dirpath, dirnames, filenames in os.walk(root, onerror=unreadable_dir, followlinks=follow_symlinks):
        if follow_symlinks and os.path.realpath(dirpath) in walked:  # reached again through a link
            dirnames[:] = []
            continue
        walked.add(os.path.realpath(dirpath))
        # A genretrieval index inside the corpus (even the corpus folder itself) is not part of the corpus.
        own = INDEX_ENTRIES if INDEX_ENTRIES[0] in filenames and INDEX_ENTRIES[1] in filenames else ()
        dirnames[:] = sorted(d for d in dirnames if not d.startswith(".") and d not in own)
        filenames = [f for f in filenames if f not in own]
        stats.skipped_outside += sum(leads_out(Path(dirpath, d)) for d in dirnames)
        for name in sorted(f for f in filenames if not f.startswith(".")):
            file = Path(dirpath, name)
            source = file.relative_to(root).as_posix()
            stats.files_seen += 1
            if leads_out(file):
                stats.skipped_outside += 1
                continue
            yield file, source, os.path.join(shown, source)


def _file_documents(file: Path, source: str, display: str, fields: _Fields, stats: IngestStats) -> Iterator[Document]:
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


def _record_documents(
    records: Iterator[tuple[str, dict]], source: str, fields: _Fields, stats: IngestStats
) -> Iterator[Document]:
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
            metadata = {k: v for k, v in record.items() if k not in used and isinstance(v, (str, int, float, bool))}
        else:
            metadata = {
                k: json.loads(json.dumps(record[k], default=str)) for k in fields.metadata if record.get(k) is not None
            }
        yield Document(doc_id, "" if title_key is None else str(title), text, source, metadata)


def _first(record: dict, names: tuple[str, ...]) -> tuple[str | None, Any]:
    """The first of ``names`` with a value in ``record`` (None and "" count as missing), and that value."""
    for name in names:
        value = record.get(name)
        if value is not None and value != "":
            return name, value
    return None, None


def _read_jsonl(f: Iterable[bytes], decode: _Decoder, display: str) -> Iterator[tuple[str, dict]]:
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
    """``("file:line", record)`` for each JSON object of a JSONL file (UTF-8, invalid bytes replaced; gzipped when
    the name ends in ``.gz``).

    A line that is not a JSON object raises ``GenRetError`` naming the file and line.
    """
    with (gzip.open if str(path).endswith(".gz") else open)(path, "rb") as f:
        yield from _read_jsonl(f, _Decoder(), str(path))


def _read_json(f: BinaryIO, decode: _Decoder, display: str) -> Iterator[tuple[str, dict]]:
    try:
        data = json.loads(decode(f.read()).removeprefix("\ufeff"))
    except json.JSONDecodeError as e:
        raise GenRetError(f"{display}:{e.lineno}: invalid JSON ({e.msg} at column {e.colno})") from None
    if isinstance(data, dict):
        lists = [k for k, v in data.items() if isinstance(v, list) and v and all(isinstance(r, dict) for r in v)]
        if len(lists) > 1:
            raise GenRetError(
                f"{display}: ambiguous JSON, lists of objects under keys {', '.join(lists)}; "
                "write one list (or JSONL) instead"
            )
        data = data[lists[0]] if lists else [data]
    if not isinstance(data, list):
        raise GenRetError(f"{display}: expected a JSON list of objects, got {type(data).__name__}")
    for i, record in enumerate(data):
        if not isinstance(record, dict):
            raise GenRetError(f"{display}: record {i + 1}: expected a JSON object, got {type(record).__name__}")
        yield f"{display}: record {i + 1}", record


def _read_csv(f: BinaryIO, decode: _Decoder, display: str) -> Iterator[tuple[str, dict]]:
    lines = (decode(raw).removeprefix("\ufeff") if i == 0 else decode(raw) for i, raw in enumerate(f))
    # strict: a quote that is never closed is an error, not a field that swallows every row after it
    reader = csv.DictReader(lines, strict=True)
    record_line = 1  # where the record being read starts
    try:
        if reader.fieldnames is not None:  # reads the header
            record_line = reader.line_num + 1
        for row in reader:
            yield f"{display}:{reader.line_num}", {k: v for k, v in row.items() if isinstance(k, str)}
            record_line = reader.line_num + 1
    except csv.Error as e:
        problem = "a quoted field is never closed" if "unexpected end of data" in str(e) else str(e)
        raise GenRetError(f"{display}:{record_line}: invalid CSV ({problem})") from None


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
    ".jsonl": _read_jsonl,
    ".json": _read_json,
    ".csv": _read_csv,
    ".parquet": _read_parquet,
}


class _HTMLText(HTMLParser):
    """Visible text and ``<title>`` of an HTML page; block elements become line breaks, table cells spaces."""

    SKIP = {"script", "style", "noscript", "template"}
    LINE = {"br", "li", "tr", "dt", "dd", "option"}
    BLOCK = {
        "p",
        "div",
        "h1",
        "h2",
        "h3",
        "h4",
        "h5",
        "h6",
        "ul",
        "ol",
        "dl",
        "table",
        "thead",
        "tbody",
        "tfoot",
        "section",
        "article",
        "header",
        "footer",
        "nav",
        "aside",
        "main",
        "pre",
        "blockquote",
        "hr",
        "figure",
        "figcaption",
        "form",
        "fieldset",
        "address",
        "details",
        "summary",
        "body",
    }

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

# How strong the boundary after a unit of text is; chunks are cut at the strongest ones.
_TOKEN, _WORD, _LINE, _SENTENCE, _PARAGRAPH = range(5)

#: Where a sentence-like unit ends: a sentence end (with any closing quotes and brackets) before whitespace, a CJK
#: full stop, a blank line, or a line break before a Markdown block (heading, quote, table row, list item, fence).
_BREAK = re.compile(
    r"[.!?…][\"')\]}»”’]*\s+|[。！？][\"')\]}»”’」』]*\s*|\n[ \t]*\n\s*"
    r"|\n[ \t]*(?=#|>|\||[-*+][ \t]|\d+[.)][ \t]|```)"
)
#: Finer places to split a unit too long for a chunk: line breaks, then any whitespace (then tokens).
_FINER = ((_LINE, re.compile(r"\n\s*")), (_WORD, re.compile(r"\s+")))
_ATX_HEADING = re.compile(r"#{1,6}[ \t]")
_LIST_NUMBER = re.compile(r"(?:^|\n)[ \t]*\d{1,9}$")
#: A boundary is a chunk cut when it outscores every boundary within this fraction of a chunk on either side; so
#: cuts are at least that far apart, and chunks typically hold about half their budget.
CUT_REACH = 1 / 3
#: Characters on either side of a boundary that decide its score (with the boundary's level).
SCORE_CONTEXT = 24
#: Characters at the start of a chunk (after its overlap) that name it, unless it is a document's first chunk.
NAME_CHARS = 32


@dataclass(slots=True)
class _Unit:
    """A stretch of text that a chunk holds whole: ``text[start:end]`` (trimmed) and its tokens
    ``[tok0, tok1)``; ``level`` is the strength of the boundary after it."""

    start: int
    end: int
    level: int
    tok0: int = 0
    tok1: int = 0

    @property
    def tokens(self) -> int:
        return self.tok1 - self.tok0


def _check_chunking(chunk_size: int, overlap: int) -> None:
    if chunk_size <= 0:
        raise GenRetError(f"chunk size must be positive, got {chunk_size}")
    if not 0 <= overlap < chunk_size:
        raise GenRetError(
            f"chunk overlap must be at least 0 and less than the chunk size ({chunk_size}), got {overlap}"
        )


def _token_offsets(tokenizer: Any, text: str) -> list[tuple[int, int]]:
    try:
        enc = tokenizer(text, add_special_tokens=False, return_offsets_mapping=True)
    except NotImplementedError:
        raise GenRetError(
            "this tokenizer gives no character offsets; chunking needs a fast (Rust-backed) Hugging Face tokenizer"
        ) from None
    return enc["offset_mapping"]


def _is_sentence_end(text: str, m: re.Match) -> bool:
    """Whether a ``_BREAK`` match ends a unit: not a full stop before a lower-case word ("e.g. this"), nor the
    one of a numbered list item ("2. Then")."""
    if m.group()[0] not in ".!?…" or m.group().count("\n") >= 2:
        return True
    if m.end() < len(text) and text[m.end()].islower():
        return False
    return not (m.group()[0] == "." and _LIST_NUMBER.search(text, max(0, m.start() - 16), m.start()))


def _add_unit(units: list[_Unit], text: str, start: int, end: int, level: int) -> None:
    """Append ``text[start:end]``, trimmed, as a unit unless it is blank."""
    piece = text[start:end]
    stripped = piece.strip()
    if not stripped:
        return
    start += len(piece) - len(piece.lstrip())
    if level >= _SENTENCE and _is_heading(stripped):
        level = _WORD  # a heading belongs with the text after it
    units.append(_Unit(start, start + len(stripped), level))


def _is_heading(text: str) -> bool:
    """Whether ``text`` is a one-line Markdown heading or ends in a reStructuredText underline."""
    if "\n" not in text:
        return _ATX_HEADING.match(text) is not None
    last = text[text.rfind("\n") + 1 :]
    return len(last) >= 3 and last[0] in "=-~^*+#\"'`" and last == last[0] * len(last)


def _sentences(text: str) -> list[_Unit]:
    """The sentence-like units of ``text`` (sentences, Markdown blocks), each with its boundary's level."""
    units: list[_Unit] = []
    start = 0
    for m in _BREAK.finditer(text):
        if _is_sentence_end(text, m):
            gap = m.group()
            _add_unit(units, text, start, m.end(), _PARAGRAPH if gap.count("\n") >= 2 else _SENTENCE)
            start = m.end()
    _add_unit(units, text, start, len(text), _PARAGRAPH)
    return units


def _assign_tokens(units: list[_Unit], offsets: Sequence[tuple[int, int]], tok0: int, tok1: int) -> None:
    """Give each unit the tokens ``[tok0, tok1)`` whose last character lies in it or in the gap after it."""
    k = tok0
    for i, unit in enumerate(units):
        limit = units[i + 1].start if i + 1 < len(units) else None
        unit.tok0 = k
        while k < tok1 and (limit is None or max(offsets[k][1] - 1, offsets[k][0]) < limit):
            k += 1
        unit.tok1 = k


def _split_unit(text: str, offsets: Sequence[tuple[int, int]], unit: _Unit, limit: int, depth: int = 0) -> list[_Unit]:
    """``unit`` as units of at most ``limit`` tokens: whole, else split at lines, then words, then into runs of
    tokens."""
    if unit.tokens <= limit:
        return [unit]
    if depth == len(_FINER):
        return _token_runs(offsets, unit, max(1, limit // 4))
    level, gap = _FINER[depth]
    parts: list[_Unit] = []
    start = unit.start
    for m in gap.finditer(text, unit.start, unit.end):
        _add_unit(parts, text, start, m.start(), level)
        start = m.end()
    _add_unit(parts, text, start, unit.end, unit.level)
    _assign_tokens(parts, offsets, unit.tok0, unit.tok1)
    return [piece for part in parts for piece in _split_unit(text, offsets, part, limit, depth + 1)]


def _token_runs(offsets: Sequence[tuple[int, int]], unit: _Unit, size: int) -> list[_Unit]:
    """``unit`` (one long word: a URL, a base64 blob) as runs of about ``size`` tokens each, never splitting a
    character (tokens that share one, as parts of a UTF-8 character may, stay together)."""
    runs: list[_Unit] = []
    for k in range(unit.tok0, unit.tok1):
        start, end = max(offsets[k][0], unit.start), min(offsets[k][1], unit.end)
        last = runs[-1] if runs else None
        if last and (last.tokens < size or start < last.end or end <= start or last.end <= last.start):
            last.end, last.tok1 = max(last.end, end), k + 1
        else:
            runs.append(_Unit(start, end, _TOKEN, k, k + 1))
    runs[0].start = unit.start
    runs[-1].end, runs[-1].level = unit.end, unit.level
    return runs


def _scores(text: str, units: list[_Unit]) -> list[int]:
    """A score for the boundary after each unit but the last: its level, then a hash of the ``SCORE_CONTEXT``
    characters on either side of it. So which boundaries win depends on nearby text only, and an edit inside a
    sentence changes no score."""
    scores = []
    for a, b in zip(units, units[1:]):
        around = text[max(a.start, a.end - SCORE_CONTEXT) : min(b.end, b.start + SCORE_CONTEXT)]
        digest = hashlib.blake2b(around.encode("utf-8", "surrogatepass"), digest_size=8).digest()
        scores.append(a.level << 64 | int.from_bytes(digest, "big"))
    return scores


def _local_maxima(scores: list[int], ends: list[int], total: int, reach: int) -> list[int]:
    """The boundaries whose score beats every other boundary less than ``reach`` tokens away (an earlier equal
    score wins) and that lie at least ``reach`` tokens from both ends; ``ends[i]`` is the token position of
    boundary ``i``. Computed with two monotonic stacks, in linear time."""
    n = len(scores)
    ok = [reach <= ends[i] <= total - reach for i in range(n)]
    stack: list[int] = []
    for i in range(n):  # nearest earlier boundary with a score at least as high
        while stack and scores[stack[-1]] < scores[i]:
            stack.pop()
        ok[i] = ok[i] and (not stack or ends[i] - ends[stack[-1]] >= reach)
        stack.append(i)
    stack = []
    for i in reversed(range(n)):  # nearest later boundary with a higher score
        while stack and scores[stack[-1]] <= scores[i]:
            stack.pop()
        ok[i] = ok[i] and (not stack or ends[stack[-1]] - ends[i] >= reach)
        stack.append(i)
    return [i for i in range(n) if ok[i]]


def _split_long(lo: int, hi: int, cum: list[int], scores: list[int], limit: int) -> list[tuple[int, int]]:
    """Units ``[lo, hi)`` as pieces of at most ``limit`` tokens: whole if they fit, else split in two at the
    best-scoring boundary in their middle third (at the best one anywhere if none is there), and so on."""
    if cum[hi] - cum[lo] <= limit or hi - lo == 1:
        return [(lo, hi)]
    third = (cum[hi] - cum[lo]) / 3
    inner = range(lo, hi - 1)  # boundary k lies after unit k
    middle = [k for k in inner if cum[k + 1] - cum[lo] >= third and cum[hi] - cum[k + 1] >= third] or inner
    cut = max(middle, key=lambda k: scores[k]) + 1
    return _split_long(lo, cut, cum, scores, limit) + _split_long(cut, hi, cum, scores, limit)


def chunk_document(doc: Document, tokenizer: Any, chunk_size: int = 256, overlap: int = 32) -> list[Chunk]:
    """Split ``doc`` into chunks of at most ``chunk_size`` tokens made of whole sentences.

    ``tokenizer`` is a Hugging Face fast tokenizer, or any callable answering
    ``tokenizer(text, add_special_tokens=False, return_offsets_mapping=True)`` with a mapping whose
    ``"offset_mapping"`` lists one (start, end) character span per token; it is called once per document.

    The text is cut into units: sentences and Markdown blocks, and only where one alone would not fit, its lines,
    then words, then tokens. A document that fits is one chunk. Otherwise chunks end at content-defined
    boundaries: each boundary between units gets a score (paragraph breaks above sentence ends above the finer
    ones, ties broken by a hash of the text around it), and a boundary is a cut when it outscores every other
    boundary within ``CUT_REACH`` of a chunk on either side. So where the cuts fall depends only on nearby text:
    editing a sentence changes the chunks around it, not every later chunk. Stretches between cuts that are too
    long are split at their best boundaries. Each chunk after the first starts with the whole units that end the
    previous one (all but its first), up to ``overlap`` tokens, unless a paragraph ends there.

    Chunk texts are exact slices of ``doc.text`` (trimmed). Runs in time linear in the length of the text.
    Raises GenRetError for bad settings or a tokenizer without offsets.
    """
    _check_chunking(chunk_size, overlap)
    text = doc.text
    offsets = _token_offsets(tokenizer, text)
    sentences = _sentences(text)
    _assign_tokens(sentences, offsets, 0, len(offsets))
    if not sentences:
        return []
    if len(offsets) <= chunk_size:
        return [_make_chunk(doc, sentences[0].start, sentences[-1].end, 0, "0", chunk_size, overlap)]
    limit = chunk_size - overlap  # tokens of new text per chunk, leaving room for the overlap
    units = [u for s in sentences for u in _split_unit(text, offsets, s, limit)]
    cum = [0]
    for unit in units:
        cum.append(cum[-1] + unit.tokens)
    scores = _scores(text, units)
    cuts = _local_maxima(scores, cum[1:-1], cum[-1], max(1, int(limit * CUT_REACH)))
    pieces = []
    for lo, hi in zip([0] + [c + 1 for c in cuts], [c + 1 for c in cuts] + [len(units)]):
        pieces += _split_long(lo, hi, cum, scores, limit)
    chunks: list[Chunk] = []
    names: dict[str, int] = {}
    prev = 0
    for lo, hi in pieces:
        first = lo
        while first - 1 > prev and units[first - 1].level < _PARAGRAPH and cum[lo] - cum[first - 1] <= overlap:
            first -= 1
        name = _chunk_name(text, units[lo].start, names) if chunks else "0"
        chunks.append(_make_chunk(doc, units[first].start, units[hi - 1].end, len(chunks), name, chunk_size, overlap))
        prev = lo
    return chunks


def _chunk_name(text: str, start: int, names: dict[str, int]) -> str:
    """A chunk's id within its document: 8 hex digits of a hash of the ``NAME_CHARS`` characters at ``start``,
    with ".2", ".3"... for chunks of the document that start the same way."""
    name = hashlib.blake2b(text[start : start + NAME_CHARS].encode("utf-8", "surrogatepass"), digest_size=4).hexdigest()
    names[name] = names.get(name, 0) + 1
    return name if names[name] == 1 else f"{name}.{names[name]}"


def _make_chunk(
    doc: Document, char_start: int, char_end: int, chunk_no: int, name: str, chunk_size: int, overlap: int
) -> Chunk:
    text = doc.text[char_start:char_end]
    key = json.dumps([doc.title, text, doc.metadata, chunk_size, overlap], ensure_ascii=False, sort_keys=True)
    return Chunk(
        id=f"{doc.doc_id}::{name}",
        doc_id=doc.doc_id,
        text=text,
        title=doc.title,
        source=doc.source,
        chunk_no=chunk_no,
        char_start=char_start,
        char_end=char_end,
        content_hash=hashlib.sha256(key.encode()).hexdigest(),
        metadata=dict(doc.metadata),
    )


def snippet(text: str, width: int = 160) -> str:
    """A one-line preview of ``text`` (a chunk's) of at most ``width`` characters, for people to read.

    Whitespace is collapsed. Text that fits is returned whole; otherwise as many whole sentences as fit, if they
    fill at least half of ``width``; otherwise the text is cut at the last word boundary that fits and ends with
    "…" (a single word longer than ``width`` is cut inside).
    """
    flat = " ".join(text.split())
    if len(flat) <= width:
        return flat
    head = ""
    for unit in _sentences(text):
        longer = " ".join([head, *text[unit.start : unit.end].split()]).lstrip()
        if len(longer) > width:
            break
        head = longer
    if len(head) >= width // 2:
        return head
    cut = flat.rfind(" ", 0, width)
    return (flat[:cut].rstrip(",;:-–— ") if cut > 0 else flat[: width - 1]) + "…"


def iter_chunks(
    path: str | os.PathLike,
    tokenizer: Any,
    chunk_size: int = 256,
    overlap: int = 32,
    *,
    id_field: str = "id",
    title_field: str = "title",
    text_field: str = "text",
    metadata_fields: Sequence[str] | None = None,
    follow_symlinks: bool = False,
    stats: IngestStats | None = None,
) -> Iterator[Chunk]:
    """Stream the chunks of every document under ``path``; one document is in memory at a time.

    Settings and the path are checked at once; the rest as ``iter_documents`` and ``chunk_document``
    describe. Pass ``stats`` to read the counts once the iterator is exhausted.
    """
    _check_chunking(chunk_size, overlap)
    stats = IngestStats() if stats is None else stats
    docs = iter_documents(
        path,
        id_field=id_field,
        title_field=title_field,
        text_field=text_field,
        metadata_fields=metadata_fields,
        follow_symlinks=follow_symlinks,
        stats=stats,
    )
    return _chunks(docs, tokenizer, chunk_size, overlap, stats)


def _chunks(
    docs: Iterator[Document], tokenizer: Any, chunk_size: int, overlap: int, stats: IngestStats
) -> Iterator[Chunk]:
    for doc in docs:
        for chunk in chunk_document(doc, tokenizer, chunk_size, overlap):
            stats.chunks += 1
            yield chunk


def scan(
    path: str | os.PathLike,
    tokenizer: Any,
    chunk_size: int = 256,
    overlap: int = 32,
    *,
    id_field: str = "id",
    title_field: str = "title",
    text_field: str = "text",
    metadata_fields: Sequence[str] | None = None,
    follow_symlinks: bool = False,
) -> tuple[list[Chunk], IngestStats]:
    """All chunks under ``path`` and the scan's counts: ``iter_chunks`` collected into a list."""
    stats = IngestStats()
    chunks = list(
        iter_chunks(
            path,
            tokenizer,
            chunk_size,
            overlap,
            id_field=id_field,
            title_field=title_field,
            text_field=text_field,
            metadata_fields=metadata_fields,
            follow_symlinks=follow_symlinks,
            stats=stats,
        )
    )
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


def diff_chunks(
    existing: Mapping[str, str | None], chunks: Iterable[Chunk], stats: IngestStats, sync: bool = False
) -> tuple[list[Chunk], list[str], list[str]]:
    """``(to_add_or_update, unchanged_ids, stale_ids)`` for a scan against an index; see ``ChunkDiff``.

    ``chunks`` must be the scan that filled ``stats`` (a list from ``scan``, or an ``iter_chunks``
    iterator, which this consumes before reading ``stats``).
    """
    diff = ChunkDiff(existing)
    upsert = list(diff.changed(chunks))
    return upsert, diff.unchanged, diff.stale(stats, sync)
