"""Training passages from a dictd dictionary in FOLDOC's format (written here; the real package is a Debian .deb)."""

from __future__ import annotations

import gzip
import json

from genretrieval.train.foldoc import _B64, clean, main, read_dictd


def _b64(n: int) -> str:
    out = ""
    while True:
        out = _B64[n % 64] + out
        n //= 64
        if not n:
            return out


def test_clean_removes_markup():
    body = "   <language> {Lisp} was made by {John McCarthy (mccarthy.html)}\n   in 1958.\n\n   (2003-01-02)\n"
    assert clean(body) == "Lisp was made by John McCarthy in 1958."


def test_foldoc_entries_become_passages(tmp_path):
    entries = [
        ("00-database-info", "about the database"),
        ("Lisp", "Lisp\n\n   <language> A family of {programming languages} with " + "many words " * 20 + "\n"),
        ("tiny", "tiny\n\n   Too short.\n"),
    ]
    data, index, offsets = b"", [], {}
    for word, body in entries:
        raw = body.encode()
        offsets[word] = (len(data), len(raw))
        data += raw
        index.append(f"{word}\t{_b64(len(data) - len(raw))}\t{_b64(len(raw))}")
    index.append(f"LISP\t{_b64(offsets['Lisp'][0])}\t{_b64(offsets['Lisp'][1])}")  # an alias: counted once
    (tmp_path / "foldoc.index").write_text("\n".join(index) + "\n")
    (tmp_path / "foldoc.dict.dz").write_bytes(gzip.compress(data))
    assert [t for t, _ in read_dictd(tmp_path / "foldoc.index", tmp_path / "foldoc.dict.dz")] == ["Lisp", "tiny"]
    out = tmp_path / "passages.jsonl"
    assert main([str(tmp_path), "--out", str(out), "--words", "10"]) == 0
    rows = [json.loads(line) for line in out.read_text().splitlines()]
    assert len(rows) == 1 and rows[0]["title"] == "Lisp" and rows[0]["source"] == "foldoc"
    assert rows[0]["text"] == "A family of programming languages with many words many words"
