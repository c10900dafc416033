"""Corpus ingestion: formats, skipped files, errors, token chunks with exact spans, incremental diffs."""

from __future__ import annotations

import json
import os
import re

import pytest

from genretrieval import GenRetError
from genretrieval.corpus import (
    ChunkDiff,
    Document,
    IngestStats,
    chunk_document,
    diff_chunks,
    iter_chunks,
    iter_documents,
    scan,
)


def whitespace_tokenizer(text, add_special_tokens=False, return_offsets_mapping=True):
    """One token per run of non-space characters, with its character span."""
    assert add_special_tokens is False and return_offsets_mapping is True
    return {"offset_mapping": [m.span() for m in re.finditer(r"\S+", text)]}


def ntokens(text: str) -> int:
    return len(whitespace_tokenizer(text)["offset_mapping"])


def write(path, content: str | bytes) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    if isinstance(content, bytes):
        path.write_bytes(content)
    else:
        path.write_text(content, encoding="utf-8")


def docs_of(path, **kwargs) -> tuple[list[Document], IngestStats]:
    stats = IngestStats()
    return list(iter_documents(path, stats=stats, **kwargs)), stats


def words(n: int, prefix: str = "w") -> str:
    return " ".join(f"{prefix}{i}" for i in range(n))


# ---------------------------------------------------------------------------------------------- formats


def test_plain_files_sorted_recursive_hidden_and_unsupported_skipped(tmp_path):
    write(tmp_path / "b.txt", "bee text\n")
    write(tmp_path / "a.md", "\n# The Title\n\nSome *markdown*.\n")
    write(tmp_path / "sub" / "c.rst", "Heading\n=======\n\nrest text")
    write(tmp_path / "sub" / "deeper" / "D.TXT", "upper-case extension")
    write(tmp_path / ".hidden.txt", "hidden")
    write(tmp_path / ".git" / "config.txt", "hidden dir")
    write(tmp_path / "script.py", "print('not a document')")
    docs, stats = docs_of(tmp_path)
    assert [d.doc_id for d in docs] == ["a.md", "b.txt", "sub/c.rst", "sub/deeper/D.TXT"]
    assert [d.source for d in docs] == [d.doc_id for d in docs]
    assert docs[0].title == "The Title" and docs[0].text == "\n# The Title\n\nSome *markdown*.\n"
    assert docs[1].title == "" and docs[1].text == "bee text\n" and docs[1].metadata == {}
    assert docs[2].title == ""  # only Markdown headings become titles
    assert (stats.files_seen, stats.files_read, stats.skipped_unsupported, stats.documents) == (5, 4, 1, 4)
    assert stats.sources_seen == stats.sources_read == {"a.md", "b.txt", "sub/c.rst", "sub/deeper/D.TXT"}


def test_single_file_path(tmp_path):
    write(tmp_path / "dir" / "one.txt", "just one")
    docs, stats = docs_of(tmp_path / "dir" / "one.txt")
    assert [(d.doc_id, d.source, d.text) for d in docs] == [("one.txt", "one.txt", "just one")]
    assert stats.files_seen == stats.files_read == 1


def test_html_extraction(tmp_path):
    write(tmp_path / "page.html", """<!doctype html><html><head><title>  My
        Page </title><style>p { color: red }</style><script>var hidden = "<p>no</p>";</script></head>
        <body><h1>Heading</h1><p>Hello
           world &amp; friends.</p><div>line one<br>line two</div>
        <ul><li>first</li> <li>second <b>bold</b></li></ul>
        <table><tr><td>c1</td><td>c2</td></tr></table><noscript>enable js</noscript>
        <pre>  keep
    indent</pre></body></html>""")
    write(tmp_path / "other.htm", "<p>no title here</p>")
    docs, _ = docs_of(tmp_path)
    other, page = docs
    assert other.title == "" and other.text == "no title here"
    assert page.title == "My Page"
    assert page.text == ("Heading\n\nHello world & friends.\n\nline one\nline two\n\nfirst\nsecond bold\n\n"
                         "c1 c2\n\n  keep\n    indent")
    for dropped in ("color", "hidden", "enable js", "My Page"):
        assert dropped not in page.text


def test_jsonl_ids_fallbacks_and_default_metadata(tmp_path):
    rows = [
        {"id": 7, "title": "T7", "text": "seven", "lang": "en", "year": 2020, "ok": True, "score": 0.5,
         "tags": ["x"], "nested": {"a": 1}, "none": None},
        {"_id": "d2", "content": "two via content"},
        {"body": "third via body"},
        {"id": "empty", "text": "   "},
        {"id": "missing"},
    ]
    write(tmp_path / "c.jsonl", "\n".join(json.dumps(r) for r in rows[:2]) + "\n\n" +
          "\n".join(json.dumps(r) for r in rows[2:]) + "\n")
    docs, stats = docs_of(tmp_path)
    assert [d.doc_id for d in docs] == ["c.jsonl#7", "c.jsonl#d2", "c.jsonl#3"]
    assert [d.text for d in docs] == ["seven", "two via content", "third via body"]
    assert docs[0].title == "T7" and docs[1].title == ""
    assert docs[0].metadata == {"lang": "en", "year": 2020, "ok": True, "score": 0.5}
    assert docs[1].metadata == {} and all(d.source == "c.jsonl" for d in docs)
    assert stats.records_without_text == 2 and stats.documents == 3


def test_custom_field_names(tmp_path):
    record = {"pid": "p1", "heading": "H", "passage": "the passage", "text": "no", "tags": ["a", "b"],
              "lang": "en", "extra": 1}
    write(tmp_path / "c.jsonl", json.dumps(record) + "\n")
    docs, _ = docs_of(tmp_path, id_field="pid", title_field="heading", text_field="passage",
                      metadata_fields=["tags", "lang", "absent"])
    assert [(d.doc_id, d.title, d.text, d.metadata) for d in docs] == [
        ("c.jsonl#p1", "H", "the passage", {"tags": ["a", "b"], "lang": "en"})]
    # An explicit field has no fallback: "id" is not used when id_field names another field.
    write(tmp_path / "c.jsonl", json.dumps({"id": "x", "passage": "p"}) + "\n")
    docs, _ = docs_of(tmp_path, id_field="pid", text_field="passage")
    assert docs[0].doc_id == "c.jsonl#1"


def test_json_shapes(tmp_path):
    write(tmp_path / "list.json", json.dumps([{"id": "a", "text": "A"}, {"text": "B"}]))
    write(tmp_path / "keyed.json", json.dumps({"version": 2, "documents": [{"id": "k", "text": "K"}]}))
    write(tmp_path / "single.json", json.dumps({"id": "s", "title": "S", "text": "single object"}))
    docs, _ = docs_of(tmp_path)
    assert [(d.doc_id, d.text) for d in docs] == [("keyed.json#k", "K"), ("list.json#a", "A"),
                                                  ("list.json#2", "B"), ("single.json#s", "single object")]
    write(tmp_path / "list.json", json.dumps({"a": [{"text": "x"}], "b": [{"text": "y"}]}))
    with pytest.raises(GenRetError, match=r"list\.json: ambiguous JSON.*keys a, b"):
        docs_of(tmp_path)
    write(tmp_path / "list.json", json.dumps(["not", "objects"]))
    with pytest.raises(GenRetError, match=r"list\.json: record 1: expected a JSON object, got str"):
        docs_of(tmp_path)
    write(tmp_path / "list.json", '[{"text": "a"},\n {"text": }]')
    with pytest.raises(GenRetError, match=r"list\.json:2: invalid JSON"):
        docs_of(tmp_path)


def test_csv(tmp_path):
    write(tmp_path / "t.csv", b'\xef\xbb\xbfid,title,text,lang\n1,One,"first, with comma",en\n'
                              b'2,Two,"multi\nline ""quoted""",fr\n3,Three,,de\n')
    docs, stats = docs_of(tmp_path)
    assert [(d.doc_id, d.title, d.text, d.metadata) for d in docs] == [
        ("t.csv#1", "One", "first, with comma", {"lang": "en"}),
        ("t.csv#2", "Two", 'multi\nline "quoted"', {"lang": "fr"})]
    assert stats.records_without_text == 1 and stats.decode_errors == 0


def test_parquet(tmp_path):
    import pyarrow as pa
    import pyarrow.parquet as pq

    table = pa.table({"_id": ["p1", "p2", "p3"], "title": ["A", None, "C"], "text": ["alpha", "beta", None],
                      "n": [1, 2, 3], "vec": [[0.1], [0.2], [0.3]]})
    pq.write_table(table, tmp_path / "t.parquet", row_group_size=2)
    docs, stats = docs_of(tmp_path)
    assert [(d.doc_id, d.title, d.text, d.metadata) for d in docs] == [
        ("t.parquet#p1", "A", "alpha", {"n": 1}), ("t.parquet#p2", "", "beta", {"n": 2})]
    assert stats.records_without_text == 1
    write(tmp_path / "t.parquet", b"PAR1 this is not parquet")
    with pytest.raises(GenRetError, match=r"t\.parquet: invalid Parquet file"):
        docs_of(tmp_path)


# ---------------------------------------------------------------------------------------------- robustness


def test_binary_unreadable_and_invalid_utf8_are_counted(tmp_path):
    write(tmp_path / "good.txt", "fine")
    write(tmp_path / "image.txt", b"\x89PNG\r\n\x1a\n\x00\x00\x00\rIHDR")
    write(tmp_path / "late-nul.txt", b"a" * 9000 + b"\x00")  # NUL after the first 8 KB: not binary
    write(tmp_path / "latin1.txt", "caf\xe9 cr\xe8me".encode("latin-1"))
    write(tmp_path / "bad.jsonl", b'{"id": 1, "text": "ok"}\n{"id": 2, "text": "\xff\xfe"}\n')
    os.symlink(tmp_path / "nowhere.txt", tmp_path / "dangling.txt")
    os.mkfifo(tmp_path / "pipe.md")
    docs, stats = docs_of(tmp_path)
    assert [d.doc_id for d in docs] == ["bad.jsonl#1", "bad.jsonl#2", "good.txt", "late-nul.txt",
                                        "latin1.txt"]
    by_id = {d.doc_id: d for d in docs}
    assert by_id["latin1.txt"].text == "caf\ufffd cr\ufffdme"
    assert by_id["bad.jsonl#2"].text == "\ufffd\ufffd"
    assert stats.skipped_binary == 1 and stats.skipped_unreadable == 2 and stats.decode_errors == 2
    assert (stats.files_seen, stats.files_read) == (7, 4)
    assert "image.txt" in stats.sources_seen and "image.txt" not in stats.sources_read


def test_malformed_jsonl_names_file_and_line(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    write(tmp_path / "corpus" / "a.jsonl", '{"text": "one"}\n\n{"text": "three",}\n')
    with pytest.raises(GenRetError, match=r"^corpus/a\.jsonl:3: invalid JSON \(.*column \d+\)$"):
        docs_of("corpus")
    with pytest.raises(GenRetError, match=r"^corpus/a\.jsonl:3: invalid JSON"):
        docs_of("corpus/a.jsonl")
    write(tmp_path / "corpus" / "a.jsonl", '{"text": "one"}\n[1, 2]\n')
    with pytest.raises(GenRetError, match=r"a\.jsonl:2: expected a JSON object, got list"):
        docs_of(tmp_path / "corpus")


def test_duplicate_ids_in_a_file(tmp_path):
    write(tmp_path / "d.jsonl", '{"id": "x", "text": "a"}\n{"id": "x", "text": "b"}\n')
    with pytest.raises(GenRetError, match=r"d\.jsonl:2: duplicate document id 'd\.jsonl#x'"):
        docs_of(tmp_path)


def test_missing_empty_and_nothing_usable(tmp_path):
    with pytest.raises(GenRetError, match=r"^path not found: .*nope$"):
        iter_documents(tmp_path / "nope")  # raised at once, before iterating
    (tmp_path / "empty").mkdir()
    write(tmp_path / "empty" / ".hidden.txt", "hidden")
    with pytest.raises(GenRetError, match=r"^no readable documents in .*empty \(no files found\)$"):
        docs_of(tmp_path / "empty")
    bad = tmp_path / "bad"
    write(bad / "a.txt", b"\x00\x01")
    write(bad / "b.md", b"\x00")
    write(bad / "c.pdf", b"%PDF")
    write(bad / "d.jsonl", '{"id": 1}\n')
    os.symlink(bad / "gone.txt", bad / "e.txt")
    expected = (r"no readable documents in .*bad "
                r"\(2 binary, 1 unreadable, 1 unsupported skipped; 1 without text\)$")
    with pytest.raises(GenRetError, match=expected):
        docs_of(bad)


# ---------------------------------------------------------------------------------------------- chunking


def doc(text: str, title: str = "", doc_id: str = "d.txt") -> Document:
    return Document(doc_id, title, text, doc_id)


def test_chunk_sizes_overlap_and_exact_spans():
    d = doc("  " + words(100) + "\n")
    chunks = chunk_document(d, whitespace_tokenizer, chunk_size=30, overlap=5)
    assert [ntokens(c.text) for c in chunks] == [30, 30, 30, 25]
    assert [c.text.split()[0] for c in chunks] == ["w0", "w25", "w50", "w75"]
    for a, b in zip(chunks, chunks[1:]):
        assert a.text.split()[-5:] == b.text.split()[:5]
    assert [c.chunk_no for c in chunks] == [0, 1, 2, 3]
    assert [c.id for c in chunks] == [f"d.txt::{i}" for i in range(4)]
    for c in chunks:
        assert d.text[c.char_start:c.char_end] == c.text and c.text == c.text.strip()
        assert (c.doc_id, c.source, c.title) == ("d.txt", "d.txt", "")
    assert chunks[0].char_start == 2 and chunks[-1].char_end == len(d.text) - 1
    no_overlap = chunk_document(d, whitespace_tokenizer, chunk_size=30, overlap=0)
    assert " ".join(c.text for c in no_overlap) == words(100)


def test_short_document_is_one_chunk():
    d = doc("\n  a short document.  \n", title="T")
    (c,) = chunk_document(d, whitespace_tokenizer, chunk_size=4, overlap=1)
    assert (c.text, c.char_start, c.char_end, c.chunk_no, c.title) == ("a short document.", 3, 20, 0, "T")
    assert chunk_document(doc("exactly four tokens here"), whitespace_tokenizer, 4, 1)[0].text.count(" ") == 3


def test_chunks_prefer_sentence_and_paragraph_boundaries():
    # A sentence ends at token 18 of 20, inside the last 15% (3 tokens): the chunk ends there.
    d = doc(words(18, "a") + ". " + words(30, "b"))
    first = chunk_document(d, whitespace_tokenizer, chunk_size=20, overlap=2)[0]
    assert first.text.endswith("a17.") and ntokens(first.text) == 18
    # One at token 10 is too early: the chunk is cut at the full window.
    d = doc(words(10, "a") + ". " + words(30, "b"))
    assert ntokens(chunk_document(d, whitespace_tokenizer, chunk_size=20, overlap=2)[0].text) == 20
    # A paragraph break beats a later sentence end; closing quotes after the full stop still end a sentence.
    d = doc(words(17, "a") + "\n\n" + 'x y." ' + words(30, "b"))
    assert chunk_document(d, whitespace_tokenizer, chunk_size=20, overlap=2)[0].text.endswith("a16")
    d = doc(words(17, "a") + ' y." ' + words(30, "b"))
    assert chunk_document(d, whitespace_tokenizer, chunk_size=20, overlap=2)[0].text.endswith('y."')


def test_chunking_with_a_byte_level_hf_tokenizer():
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import PreTrainedTokenizerFast

    tk = Tokenizer(models.BPE(unk_token=None))
    tk.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tk.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(vocab_size=300, initial_alphabet=pre_tokenizers.ByteLevel.alphabet())
    tk.train_from_iterator(["the river runs to the sea. café naïve"] * 4, trainer)
    tok = PreTrainedTokenizerFast(tokenizer_object=tk)
    text = "The river runs, déjà vu — 川 flows.\n\nTo the sea! " * 12
    d = doc(text)
    chunks = chunk_document(d, tok, chunk_size=40, overlap=8)
    assert len(chunks) > 3
    covered = set()
    for c in chunks:
        assert d.text[c.char_start:c.char_end] == c.text and c.text == c.text.strip()
        assert len(tok(c.text, add_special_tokens=False)["input_ids"]) <= 40 + 1
        covered.update(range(c.char_start, c.char_end))
    assert all(i in covered for i, ch in enumerate(text) if not ch.isspace())


def test_bad_chunk_settings_and_tokenizers(tmp_path):
    write(tmp_path / "a.txt", "text")
    for size, overlap in ((0, 0), (-5, 0), (10, 10), (10, 12), (10, -1)):
        with pytest.raises(GenRetError, match="chunk"):
            iter_chunks(tmp_path, whitespace_tokenizer, size, overlap)  # raised before iterating
        with pytest.raises(GenRetError, match="chunk"):
            chunk_document(doc("text"), whitespace_tokenizer, size, overlap)

    def slow_tokenizer(text, **kwargs):
        raise NotImplementedError("return_offset_mapping is not available when using Python tokenizers")

    with pytest.raises(GenRetError, match="fast"):
        chunk_document(doc("text"), slow_tokenizer)


def test_ids_and_hashes_are_stable_and_track_content(tmp_path):
    write(tmp_path / "a.txt", words(50))
    record = {"id": "r1", "title": "T", "text": words(20), "lang": "en"}
    write(tmp_path / "r.jsonl", json.dumps(record) + "\n")
    first, stats = scan(tmp_path, whitespace_tokenizer, chunk_size=16, overlap=4)
    second, _ = scan(tmp_path, whitespace_tokenizer, chunk_size=16, overlap=4)
    assert [(c.id, c.content_hash) for c in first] == [(c.id, c.content_hash) for c in second]
    assert [c.id for c in first] == ["a.txt::0", "a.txt::1", "a.txt::2", "a.txt::3",
                                     "r.jsonl#r1::0", "r.jsonl#r1::1"]
    assert all(re.fullmatch(r"[0-9a-f]{64}", c.content_hash) for c in first)
    assert len({c.content_hash for c in first}) == len(first)
    assert first[4].metadata == {"lang": "en"} and first[4].title == "T"
    assert stats.chunks == 6 and stats.documents == 2
    other_settings, _ = scan(tmp_path, whitespace_tokenizer, chunk_size=16, overlap=3)
    assert other_settings[0].text == first[0].text and other_settings[0].content_hash != first[0].content_hash
    write(tmp_path / "r.jsonl", json.dumps({**record, "title": "T2"}) + "\n")
    retitled, _ = scan(tmp_path, whitespace_tokenizer, chunk_size=16, overlap=4)
    assert retitled[4].text == first[4].text and retitled[4].content_hash != first[4].content_hash
    assert retitled[0].content_hash == first[0].content_hash


# ---------------------------------------------------------------------------------------------- incremental


def build_corpus(root):
    write(root / "same.txt", words(40, "s"))
    write(root / "edit.txt", words(40, "e"))
    write(root / "shrink.txt", words(40, "k"))
    write(root / "gone.txt", words(40, "g"))
    write(root / "later-binary.txt", words(10, "b"))
    write(root / "recs.jsonl", "".join(json.dumps({"id": i, "text": f"record {i}"}) + "\n"
                                       for i in (0, "x#1", 2)))
    write(root / "notes#1.txt", "a file name with a hash")


def index_of(chunks) -> dict[str, str]:
    return {c.id: c.content_hash for c in chunks}


def test_incremental_diff(tmp_path):
    build_corpus(tmp_path)
    before, _ = scan(tmp_path, whitespace_tokenizer, chunk_size=16, overlap=4)
    index = index_of(before)
    index["elsewhere/x.txt::0"] = "feed"  # a point from another corpus root

    upsert, unchanged, stale = diff_chunks(index, *scan(tmp_path, whitespace_tokenizer, 16, 4))
    assert upsert == [] and sorted(unchanged) == sorted(c.id for c in before) and stale == []

    write(tmp_path / "edit.txt", words(40, "E"))
    write(tmp_path / "shrink.txt", words(14, "k"))
    (tmp_path / "gone.txt").unlink()
    write(tmp_path / "later-binary.txt", b"\x00binary now")
    write(tmp_path / "recs.jsonl", "".join(json.dumps({"id": i, "text": f"record {i}"}) + "\n"
                                           for i in (0, 2)))
    (tmp_path / "notes#1.txt").unlink()
    chunks, stats = scan(tmp_path, whitespace_tokenizer, 16, 4)

    upsert, unchanged, stale = diff_chunks(index, chunks, stats)
    assert sorted(c.id for c in upsert) == ["edit.txt::0", "edit.txt::1", "edit.txt::2", "shrink.txt::0"]
    assert sorted(unchanged) == ["recs.jsonl#0::0", "recs.jsonl#2::0", "same.txt::0", "same.txt::1",
                                 "same.txt::2"]
    assert stale == ["recs.jsonl#x#1::0", "shrink.txt::1", "shrink.txt::2"]

    _, _, synced = diff_chunks(index, chunks, stats, sync=True)
    assert synced == sorted(stale + ["elsewhere/x.txt::0", "gone.txt::0", "gone.txt::1", "gone.txt::2",
                                     "notes#1.txt::0"])
    assert "later-binary.txt::0" in index and "later-binary.txt::0" not in synced  # skipped, not deleted


def test_chunk_diff_streams_with_iter_chunks(tmp_path):
    build_corpus(tmp_path)
    index = index_of(scan(tmp_path, whitespace_tokenizer, 16, 4)[0])
    index["same.txt::0"] = None  # hash unknown: always updated
    write(tmp_path / "same.txt", words(14, "s"))
    (tmp_path / "gone.txt").unlink()
    stats = IngestStats()
    diff = ChunkDiff(index)
    changed = diff.changed(iter_chunks(tmp_path, whitespace_tokenizer, 16, 4, stats=stats))
    assert next(changed).id == "same.txt::0" and stats.files_read == 4  # lazily: shrink.txt not yet read
    assert [c.id for c in changed] == []
    assert diff.stale(stats) == ["same.txt::1", "same.txt::2"]
    assert diff.stale(stats, sync=True) == ["gone.txt::0", "gone.txt::1", "gone.txt::2", "same.txt::1",
                                            "same.txt::2"]
