"""Corpus ingestion: formats, skipped files, errors, token chunks with exact spans, incremental diffs."""

from __future__ import annotations

import json
import os
import random
import re
import sys

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
    snippet,
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
    write(
        tmp_path / "page.html",
        """<!doctype html><html><head><title>  My
        Page </title><style>p { color: red }</style><script>var hidden = "<p>no</p>";</script></head>
        <body><h1>Heading</h1><p>Hello
           world &amp; friends.</p><div>line one<br>line two</div>
        <ul><li>first</li> <li>second <b>bold</b></li></ul>
        <table><tr><td>c1</td><td>c2</td></tr></table><noscript>enable js</noscript>
        <pre>  keep
    indent</pre></body></html>""",
    )
    write(tmp_path / "other.htm", "<p>no title here</p>")
    docs, _ = docs_of(tmp_path)
    other, page = docs
    assert other.title == "" and other.text == "no title here"
    assert page.title == "My Page"
    assert page.text == (
        "Heading\n\nHello world & friends.\n\nline one\nline two\n\nfirst\nsecond bold\n\nc1 c2\n\n  keep\n    indent"
    )
    for dropped in ("color", "hidden", "enable js", "My Page"):
        assert dropped not in page.text


def test_jsonl_ids_fallbacks_and_default_metadata(tmp_path):
    rows = [
        {
            "id": 7,
            "title": "T7",
            "text": "seven",
            "lang": "en",
            "year": 2020,
            "ok": True,
            "score": 0.5,
            "tags": ["x"],
            "nested": {"a": 1},
            "none": None,
        },
        {"_id": "d2", "content": "two via content"},
        {"body": "third via body"},
        {"id": "empty", "text": "   "},
        {"id": "missing"},
    ]
    write(
        tmp_path / "c.jsonl",
        "\n".join(json.dumps(r) for r in rows[:2]) + "\n\n" + "\n".join(json.dumps(r) for r in rows[2:]) + "\n",
    )
    docs, stats = docs_of(tmp_path)
    assert [d.doc_id for d in docs] == ["c.jsonl#7", "c.jsonl#d2", "c.jsonl#3"]
    assert [d.text for d in docs] == ["seven", "two via content", "third via body"]
    assert docs[0].title == "T7" and docs[1].title == ""
    assert docs[0].metadata == {"lang": "en", "year": 2020, "ok": True, "score": 0.5}
    assert docs[1].metadata == {} and all(d.source == "c.jsonl" for d in docs)
    assert stats.records_without_text == 2 and stats.documents == 3


def test_custom_field_names(tmp_path):
    record = {
        "pid": "p1",
        "heading": "H",
        "passage": "the passage",
        "text": "no",
        "tags": ["a", "b"],
        "lang": "en",
        "extra": 1,
    }
    write(tmp_path / "c.jsonl", json.dumps(record) + "\n")
    docs, _ = docs_of(
        tmp_path,
        id_field="pid",
        title_field="heading",
        text_field="passage",
        metadata_fields=["tags", "lang", "absent"],
    )
    assert [(d.doc_id, d.title, d.text, d.metadata) for d in docs] == [
        ("c.jsonl#p1", "H", "the passage", {"tags": ["a", "b"], "lang": "en"})
    ]
    # An explicit field has no fallback: "id" is not used when id_field names another field.
    write(tmp_path / "c.jsonl", json.dumps({"id": "x", "passage": "p"}) + "\n")
    docs, _ = docs_of(tmp_path, id_field="pid", text_field="passage")
    assert docs[0].doc_id == "c.jsonl#1"


def test_json_shapes(tmp_path):
    write(tmp_path / "list.json", json.dumps([{"id": "a", "text": "A"}, {"text": "B"}]))
    write(tmp_path / "keyed.json", json.dumps({"version": 2, "documents": [{"id": "k", "text": "K"}]}))
    write(tmp_path / "single.json", json.dumps({"id": "s", "title": "S", "text": "single object"}))
    docs, _ = docs_of(tmp_path)
    assert [(d.doc_id, d.text) for d in docs] == [
        ("keyed.json#k", "K"),
        ("list.json#a", "A"),
        ("list.json#2", "B"),
        ("single.json#s", "single object"),
    ]
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
    write(
        tmp_path / "t.csv",
        b'\xef\xbb\xbfid,title,text,lang\n1,One,"first, with comma",en\n'
        b'2,Two,"multi\nline ""quoted""",fr\n3,Three,,de\n',
    )
    docs, stats = docs_of(tmp_path)
    assert [(d.doc_id, d.title, d.text, d.metadata) for d in docs] == [
        ("t.csv#1", "One", "first, with comma", {"lang": "en"}),
        ("t.csv#2", "Two", 'multi\nline "quoted"', {"lang": "fr"}),
    ]
    assert stats.records_without_text == 1 and stats.decode_errors == 0


def test_csv_quote_never_closed_is_an_error(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    # Read leniently, the open quote would swallow every row after it into one field.
    write(tmp_path / "c" / "t.csv", 'id,text\n1,fine\n2,"open\n3,swallowed\n4,rows\n')
    with pytest.raises(GenRetError, match=r"^c/t\.csv:3: invalid CSV \(a quoted field is never closed\)$"):
        docs_of("c")
    write(tmp_path / "c" / "t.csv", 'id,text\n1,fine\n2,"closed" then more\n')
    with pytest.raises(GenRetError, match=r"^c/t\.csv:3: invalid CSV \(.*expected after"):
        docs_of("c")


def test_parquet(tmp_path):
    import pyarrow as pa
    import pyarrow.parquet as pq

    table = pa.table(
        {
            "_id": ["p1", "p2", "p3"],
            "title": ["A", None, "C"],
            "text": ["alpha", "beta", None],
            "n": [1, 2, 3],
            "vec": [[0.1], [0.2], [0.3]],
        }
    )
    pq.write_table(table, tmp_path / "t.parquet", row_group_size=2)
    docs, stats = docs_of(tmp_path)
    assert [(d.doc_id, d.title, d.text, d.metadata) for d in docs] == [
        ("t.parquet#p1", "A", "alpha", {"n": 1}),
        ("t.parquet#p2", "", "beta", {"n": 2}),
    ]
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
    assert [d.doc_id for d in docs] == ["bad.jsonl#1", "bad.jsonl#2", "good.txt", "late-nul.txt", "latin1.txt"]
    by_id = {d.doc_id: d for d in docs}
    assert by_id["latin1.txt"].text == "caf\ufffd cr\ufffdme"
    assert by_id["bad.jsonl#2"].text == "\ufffd\ufffd"
    assert stats.skipped_binary == 1 and stats.skipped_unreadable == 2 and stats.decode_errors == 2
    assert (stats.files_seen, stats.files_read) == (7, 4)
    assert "image.txt" in stats.sources_seen and "image.txt" not in stats.sources_read
    assert stats.skipped_summary() == "1 binary, 2 unreadable skipped; invalid UTF-8 replaced in 2 files"


def test_symlinks_out_of_the_corpus_are_skipped_unless_followed(tmp_path):
    corpus, outside = tmp_path / "corpus", tmp_path / "outside"
    write(corpus / "a.txt", "inside")
    write(corpus / "sub" / "b.txt", "inside too")
    write(outside / "secret.txt", "a file from elsewhere")
    write(outside / "dir" / "c.txt", "a folder from elsewhere")
    os.symlink(outside / "secret.txt", corpus / "secret.txt")
    os.symlink(outside / "dir", corpus / "linked-dir")
    os.symlink(corpus / "sub" / "b.txt", corpus / "b-link.txt")  # stays inside: read
    os.symlink(corpus, corpus / "sub" / "loop")  # a directory link inside: not entered
    docs, stats = docs_of(corpus)
    assert [d.doc_id for d in docs] == ["a.txt", "b-link.txt", "sub/b.txt"]
    assert stats.skipped_outside == 2 and "secret.txt" not in stats.sources_seen
    assert stats.skipped_summary() == "2 symlinks out of the corpus skipped"

    docs, stats = docs_of(corpus, follow_symlinks=True)
    assert [d.doc_id for d in docs] == ["a.txt", "b-link.txt", "secret.txt", "linked-dir/c.txt", "sub/b.txt"]
    assert stats.skipped_outside == 0  # and the loop back to the corpus folder was walked once

    (corpus / "a.txt").unlink()
    (corpus / "b-link.txt").unlink()
    (corpus / "sub" / "b.txt").unlink()
    with pytest.raises(
        GenRetError,
        match=r"no readable documents in .*corpus \(2 symlinks out of the corpus "
        r"skipped\)$",
    ):
        list(iter_chunks(corpus, whitespace_tokenizer))


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
    expected = (
        r"no readable documents in .*bad "
        r"\(2 binary, 1 unreadable, 1 unsupported skipped; 1 without text\)$"
    )
    with pytest.raises(GenRetError, match=expected):
        docs_of(bad)


# ---------------------------------------------------------------------------------------------- chunking


def doc(text: str, title: str = "", doc_id: str = "d.txt") -> Document:
    return Document(doc_id, title, text, doc_id)


def chunky_tokenizer(text, add_special_tokens=False, return_offsets_mapping=True):
    """Like a BPE tokenizer on odd input: a token per 8 characters of a word, per 16 of a whitespace run."""
    return {"offset_mapping": [m.span() for m in re.finditer(r"\S{1,8}|\s{1,16}", text)]}


VOCAB = (
    "river sea bread oven city water paris france capital model token index chunk search vector store query "
    "answer light stone garden winter summer market"
).split()


def prose(paragraphs: int, seed: int = 0) -> str:
    """Paragraphs of one to six sentences of 4 to 16 words."""
    rng = random.Random(seed)
    out = []
    for _ in range(paragraphs):
        sentences = []
        for _ in range(rng.randint(1, 6)):
            ws = [rng.choice(VOCAB) for _ in range(rng.randint(4, 16))]
            sentences.append(" ".join([ws[0].capitalize(), *ws[1:]]) + rng.choice(".!?"))
        out.append(" ".join(sentences))
    return "\n\n".join(out)


def check_spans(d: Document, chunks, chunk_size: int, tokens=ntokens) -> None:
    """Exact trimmed slices within the budget that together cover every non-space character."""
    covered = set()
    for c in chunks:
        assert d.text[c.char_start : c.char_end] == c.text and c.text == c.text.strip()
        assert tokens(c.text) <= chunk_size
        covered.update(range(c.char_start, c.char_end))
    assert all(i in covered for i, ch in enumerate(d.text) if not ch.isspace())
    assert [c.chunk_no for c in chunks] == list(range(len(chunks)))


def test_chunks_hold_whole_sentences_and_overlap_by_sentences():
    d = doc(prose(40))
    chunks = chunk_document(d, whitespace_tokenizer, chunk_size=40, overlap=8)
    assert len(chunks) > 10
    check_spans(d, chunks, 40)
    overlaps = 0
    for c in chunks:
        before = d.text[: c.char_start].rstrip()
        assert before == "" or before[-1] in ".!?"  # starts a sentence
        assert c.text[-1] in ".!?"  # ends one
    for a, b in zip(chunks, chunks[1:]):
        if b.char_start < a.char_end:  # the overlap: whole sentences of one paragraph, at most 8 tokens
            shared = d.text[b.char_start : a.char_end]
            assert ntokens(shared) <= 8 and "\n" not in shared and shared[-1] in ".!?"
            overlaps += 1
        else:
            assert b.char_start > a.char_end
    assert overlaps > 0
    no_overlap = chunk_document(d, whitespace_tokenizer, chunk_size=40, overlap=0)
    assert all(a.char_end < b.char_start for a, b in zip(no_overlap, no_overlap[1:]))


def test_no_chunk_starts_mid_word_with_a_byte_level_hf_tokenizer():
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import PreTrainedTokenizerFast

    tk = Tokenizer(models.BPE(unk_token=None))
    tk.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tk.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(vocab_size=300, initial_alphabet=pre_tokenizers.ByteLevel.alphabet())
    tk.train_from_iterator(["the river runs to the sea. café naïve"] * 4, trainer)
    tok = PreTrainedTokenizerFast(tokenizer_object=tk)

    def count(text):
        return len(tok(text, add_special_tokens=False)["input_ids"])

    text = "The river runs, déjà vu — 川 flows. To the sea! " * 3 + "\n\nThe sea. " * 3 + "The end, sea. " * 12
    d = doc(text)
    chunks = chunk_document(d, tok, chunk_size=40, overlap=8)
    assert len(chunks) > 3
    check_spans(d, chunks, 40 + 1, count)  # +1: a chunk's text may tokenize a little differently on its own
    for c in chunks:
        assert c.text.startswith(("The ", "To ")) and text[: c.char_start].rstrip()[-1:] in ("", ".", "!")
    # This tokenizer splits unknown words into letters: sentences over the budget are split between words.
    d = doc(prose(6))
    chunks = chunk_document(d, tok, chunk_size=24, overlap=0)
    check_spans(d, chunks, 24 + 1, count)
    assert all(c.char_start == 0 or d.text[c.char_start - 1].isspace() for c in chunks)


def test_long_sentences_split_at_words_then_tokens():
    d = doc("  " + words(100) + "\n")  # one sentence without a full stop: split between words
    chunks = chunk_document(d, whitespace_tokenizer, chunk_size=30, overlap=5)
    check_spans(d, chunks, 30)
    assert chunks[0].char_start == 2 and chunks[-1].char_end == len(d.text) - 1
    for a, b in zip(chunks, chunks[1:]):
        shared = len(set(a.text.split()) & set(b.text.split()))
        assert 1 <= shared <= 5 and b.text.split()[0] in a.text.split()  # overlap by whole words
    no_overlap = chunk_document(d, whitespace_tokenizer, chunk_size=30, overlap=0)
    assert " ".join(c.text for c in no_overlap) == words(100)

    d = doc("Short start. " + "x" * 2000 + " and a tail.")  # a word of 250 tokens: split between tokens
    chunks = chunk_document(d, chunky_tokenizer, chunk_size=64, overlap=8)
    check_spans(d, chunks, 64, lambda t: len(chunky_tokenizer(t)["offset_mapping"]))
    assert len(chunks) >= 4 and chunks[0].text.startswith("Short start.")


def test_short_document_is_one_chunk():
    d = doc("\n  a short document.  \n", title="T")
    (c,) = chunk_document(d, whitespace_tokenizer, chunk_size=4, overlap=1)
    assert (c.text, c.char_start, c.char_end, c.chunk_no, c.id, c.title) == (
        "a short document.",
        3,
        20,
        0,
        "d.txt::0",
        "T",
    )
    assert chunk_document(doc("exactly four tokens here"), whitespace_tokenizer, 4, 1)[0].text.count(" ") == 3
    assert chunk_document(doc(" \n "), whitespace_tokenizer, 4, 1) == []


def test_chunks_prefer_paragraph_breaks_and_keep_headings_with_their_text():
    sections = [f"## Section {i}\n\n" + prose(2, seed=i) for i in range(12)]
    d = doc("# Title\n\n" + "\n\n".join(sections))
    chunks = chunk_document(d, whitespace_tokenizer, chunk_size=60, overlap=0)
    check_spans(d, chunks, 60)
    assert len(chunks) > 5
    for c in chunks:
        assert not c.text.rsplit("\n", 1)[-1].startswith("#")  # no chunk ends with a heading
    at_paragraph = sum(d.text[: c.char_start].endswith("\n\n") for c in chunks[1:])
    assert at_paragraph >= 0.8 * (len(chunks) - 1)


def test_an_edit_re_embeds_only_the_chunks_that_hold_it():
    text = prose(40)
    before = chunk_document(doc(text), whitespace_tokenizer, chunk_size=40, overlap=8)
    index = {c.id: c.content_hash for c in before}

    def reembedded(edited: str):
        diff = ChunkDiff(index)
        after = chunk_document(doc(edited), whitespace_tokenizer, chunk_size=40, overlap=8)
        return list(diff.changed(after)), len(diff.stale(_stats_for(after)))

    # One word changed in the middle of a long sentence in the middle of the document.
    sentence = next(
        m
        for m in re.finditer(r"[A-Z][^.!?]*[.!?]", text)
        if m.start() > len(text) // 2 and len(m.group().split()) >= 12
    )
    at = sentence.start() + sentence.group().index(" ", len(sentence.group()) // 2) + 1
    word = text[at : text.index(" ", at)]
    edited = text[:at] + "lighthouse" + text[at + len(word) :]
    changed, deleted = reembedded(edited)
    assert len(changed) == 1 and deleted == 0
    assert changed[0].char_start <= at < changed[0].char_end

    # Inserting words into any sentence never re-embeds more than a few chunks around it, and every chunk
    # further away keeps its id and content hash.
    sentences = list(re.finditer(r"[A-Z][^.!?]*[.!?]", text))
    counts = []
    for m in sentences[len(sentences) // 4 : 3 * len(sentences) // 4]:
        edited = text[: m.end() - 1] + " and a few more words" + text[m.end() - 1 :]
        changed, _ = reembedded(edited)
        assert 1 <= len(changed) <= 3
        assert all(abs(c.char_start - m.start()) < 600 for c in changed)
        counts.append(len(changed))
    assert counts.count(1) >= 0.6 * len(counts)


def _stats_for(chunks) -> IngestStats:
    stats = IngestStats()
    stats.sources_seen = stats.sources_read = {c.source for c in chunks}
    return stats


def test_text_added_at_the_top_keeps_later_chunk_ids():
    text = prose(40)
    before = chunk_document(doc(text), whitespace_tokenizer, chunk_size=40, overlap=8)
    after = chunk_document(doc("A new opening paragraph is here.\n\n" + text), whitespace_tokenizer, 40, 8)
    old = {c.id: c.content_hash for c in before}
    kept = [c for c in after if old.get(c.id) == c.content_hash]
    assert len(kept) >= len(before) - 3


def test_chunking_work_grows_linearly_with_the_text():
    """A 5 MB single-line file once took minutes: measure work (function calls) rather than time."""
    calls = []

    def counting_tokenizer(text, **kwargs):
        calls.append(len(text))
        return chunky_tokenizer(text, **kwargs)

    def work(n: int) -> int:
        text = "Some words, then a full stop. " * n + " " * (40 * n) + "y" * (8 * n) + " lorem ipsum" * n
        count = 0

        def profile(frame, event, arg):
            nonlocal count
            count += event in ("call", "c_call")

        sys.setprofile(profile)
        try:
            chunks = chunk_document(doc(text), counting_tokenizer, chunk_size=64, overlap=8)
        finally:
            sys.setprofile(None)
        assert len(chunks) > 10
        return count

    small, large = work(200), work(800)
    assert len(calls) == 2  # one tokenizer call a document
    assert large < 4.6 * small  # 4x the text; quadratic work would be 16x


def test_snippet():
    assert snippet("  A short\n text.  ") == "A short text."
    text = "First sentence is here. Second one follows it! A third sentence would not fit in the width at all."
    assert snippet(text, width=60) == "First sentence is here. Second one follows it!"
    cut = snippet("word " * 50, width=30)
    assert cut == "word word word word word word…" and len(cut) <= 30
    assert snippet("Tiny. " + "long " * 40, width=40) == "Tiny. long long long long long long…"
    assert snippet("See e.g. the manual, and more and more.", width=30) == "See e.g. the manual, and more…"
    assert snippet("x" * 100, width=20) == "x" * 19 + "…"
    assert snippet('He said "Stop." Then he left the room quietly and slowly.', width=30) == 'He said "Stop."'
    assert snippet("Steps:\n1. Open the lid and look inside.\n2. Close it.", width=44) == (
        "Steps: 1. Open the lid and look inside."
    )  # "1." numbers a list item: it ends no sentence


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
    # The first chunk of a document is "::0", a later one is named by the text it starts with.
    text_ids = [c.id for c in first if c.source == "a.txt"]
    rec = [c for c in first if c.source == "r.jsonl"]
    assert len(text_ids) > 2 and len(rec) > 1 and len(text_ids) + len(rec) == len(first) == stats.chunks
    assert text_ids[0] == "a.txt::0" and all(re.fullmatch(r"a\.txt::[0-9a-f]{8}", i) for i in text_ids[1:])
    assert rec[0].id == "r.jsonl#r1::0" and re.fullmatch(r"r\.jsonl#r1::[0-9a-f]{8}", rec[1].id)
    assert len({c.id for c in first}) == len(first)
    assert all(re.fullmatch(r"[0-9a-f]{64}", c.content_hash) for c in first)
    assert len({c.content_hash for c in first}) == len(first)
    assert rec[0].metadata == {"lang": "en"} and rec[0].title == "T" and stats.documents == 2
    other_settings, _ = scan(tmp_path, whitespace_tokenizer, chunk_size=16, overlap=3)
    assert other_settings[0].text == first[0].text and other_settings[0].content_hash != first[0].content_hash
    write(tmp_path / "r.jsonl", json.dumps({**record, "title": "T2"}) + "\n")
    retitled, _ = scan(tmp_path, whitespace_tokenizer, chunk_size=16, overlap=4)
    assert retitled[-1].text == first[-1].text and retitled[-1].content_hash != first[-1].content_hash
    assert retitled[0].content_hash == first[0].content_hash

    # Names repeat with a suffix when two chunks of a document start alike.
    chunks = chunk_document(doc("Same start here. " * 40), whitespace_tokenizer, chunk_size=16, overlap=0)
    assert len({c.id for c in chunks}) == len(chunks) > 3 and any(c.id.endswith(".2") for c in chunks)


# ---------------------------------------------------------------------------------------------- incremental


def build_corpus(root):
    write(root / "same.txt", words(40, "s"))
    write(root / "edit.txt", words(40, "e"))
    write(root / "shrink.txt", words(40, "k"))
    write(root / "gone.txt", words(40, "g"))
    write(root / "later-binary.txt", words(10, "b"))
    write(root / "recs.jsonl", "".join(json.dumps({"id": i, "text": f"record {i}"}) + "\n" for i in (0, "x#1", 2)))
    write(root / "notes#1.txt", "a file name with a hash")


def index_of(chunks) -> dict[str, str]:
    return {c.id: c.content_hash for c in chunks}


def ids_of(chunks, source: str) -> list[str]:
    return sorted(c.id for c in chunks if c.source == source)


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
    write(tmp_path / "recs.jsonl", "".join(json.dumps({"id": i, "text": f"record {i}"}) + "\n" for i in (0, 2)))
    (tmp_path / "notes#1.txt").unlink()
    chunks, stats = scan(tmp_path, whitespace_tokenizer, 16, 4)

    upsert, unchanged, stale = diff_chunks(index, chunks, stats)
    assert sorted(c.id for c in upsert) == sorted(ids_of(chunks, "edit.txt") + ["shrink.txt::0"])
    assert len(ids_of(before, "edit.txt")) > 2 and ids_of(chunks, "shrink.txt") == ["shrink.txt::0"]
    assert sorted(unchanged) == sorted(["recs.jsonl#0::0", "recs.jsonl#2::0"] + ids_of(before, "same.txt"))
    old_names = [i for i in ids_of(before, "edit.txt") + ids_of(before, "shrink.txt") if not i.endswith("::0")]
    assert stale == sorted(["recs.jsonl#x#1::0"] + old_names)

    _, _, synced = diff_chunks(index, chunks, stats, sync=True)
    assert synced == sorted(stale + ["elsewhere/x.txt::0", "notes#1.txt::0"] + ids_of(before, "gone.txt"))
    assert "later-binary.txt::0" in index and "later-binary.txt::0" not in synced  # skipped, not deleted


def test_chunk_diff_streams_with_iter_chunks(tmp_path):
    build_corpus(tmp_path)
    before = scan(tmp_path, whitespace_tokenizer, 16, 4)[0]
    index = index_of(before)
    index["same.txt::0"] = None  # hash unknown: always updated
    write(tmp_path / "same.txt", words(14, "s"))
    (tmp_path / "gone.txt").unlink()
    stats = IngestStats()
    diff = ChunkDiff(index)
    changed = diff.changed(iter_chunks(tmp_path, whitespace_tokenizer, 16, 4, stats=stats))
    assert next(changed).id == "same.txt::0" and stats.files_read == 4  # lazily: shrink.txt not yet read
    assert [c.id for c in changed] == []
    later = ids_of(before, "same.txt")[1:]
    assert len(later) > 1 and diff.stale(stats) == later
    assert diff.stale(stats, sync=True) == sorted(ids_of(before, "gone.txt") + later)


def test_an_index_inside_the_corpus_is_not_read(tmp_path):
    # `genret index victim --index-dir victim`: the index's own files sit beside the user's.
    write(tmp_path / "notes.md", "The user's own notes.")
    write(tmp_path / "manifest.json", '{"backend": "faiss"}')
    write(tmp_path / "index.lock", "")
    write(tmp_path / "store" / "docstore.json", '{"x": 1}')
    write(tmp_path / "sub" / "manifest.json", '{"id": 1, "text": "A user file with the same name."}')
    docs = list(iter_documents(tmp_path))
    assert sorted(d.source for d in docs) == ["notes.md", "sub/manifest.json"]


def test_iter_jsonl_reads_gzip_and_names_the_bad_line(tmp_path):
    """One JSONL reader for corpora, training queries and benchmark data (which comes gzipped too)."""
    import gzip

    from genretrieval.corpus import iter_jsonl
    from genretrieval.evaluation.data import _read_jsonl

    path = tmp_path / "topics.jsonl.gz"
    with gzip.open(path, "wt", encoding="utf-8") as f:
        f.write('{"_id": "1", "text": "a"}\n\n{"_id": "2"}\nnot json\n')
    rows = iter_jsonl(path)
    assert [next(rows), next(rows)] == [(f"{path}:1", {"_id": "1", "text": "a"}), (f"{path}:3", {"_id": "2"})]
    with pytest.raises(GenRetError, match=r"topics\.jsonl\.gz:4: invalid JSON"):
        next(rows)
    with pytest.raises(GenRetError, match=r"topics\.jsonl\.gz:4: invalid JSON"):
        list(_read_jsonl(path))
