"""The `genret` command line: output formats and one-line errors with non-zero exits.

These test the command line, not a model: they run on the fake encoder (``--backbone fake``, see fakes.py). The
real-model CLI runs are in test_index.py (index, search, info, delete), test_embed.py and test_decode.py."""

from __future__ import annotations

import json

from fakes import FAKE_DIM, FakeEncoder
from typer.testing import CliRunner

from genretrieval.cli import app
from genretrieval.encoder.base import Encoder

runner = CliRunner()


def test_fake_encoder_ranks_the_document_sharing_words_first():
    enc = FakeEncoder()
    assert isinstance(enc, Encoder)
    docs = enc.encode_documents(["Paris is the capital of France.", "bread is made of water", "the river flows"])
    scores = enc.encode_queries(["capital of France", "bread", "which river"]) @ docs.T
    assert docs.shape == (3, FAKE_DIM) and scores.argmax(axis=1).tolist() == [0, 1, 2]
    assert (enc.encode_queries(["bread"]) == enc.encode_queries(["bread"])).all()


def test_encode_prints_json_lines(fake_backbone):
    res = runner.invoke(app, ["encode", "--backbone", fake_backbone, "--dtype", "fp32", "hello", "the city"])
    assert res.exit_code == 0, res.output
    rows = [json.loads(line) for line in res.stdout.splitlines()]
    assert [r["text"] for r in rows] == ["hello", "the city"]
    assert len(rows[0]["embedding"]) == FAKE_DIM


def test_encode_reads_stdin(fake_backbone):
    res = runner.invoke(app, ["encode", "--backbone", fake_backbone, "--document", "-"], input="a\n\nb\n")
    assert res.exit_code == 0, res.output
    assert len(res.stdout.splitlines()) == 2


def test_errors_are_one_line():
    for args in (["encode", "--backbone", "no-such-model", "x"], ["encode", "--adapter", "/nonexistent", "x"]):
        res = runner.invoke(app, args)
        assert res.exit_code == 1
        assert res.stderr.startswith("error: ") and len(res.stderr.strip().splitlines()) == 1
        assert "Traceback" not in res.output


def test_unknown_task_is_one_line(fake_backbone):
    res = runner.invoke(app, ["encode", "--backbone", fake_backbone, "--task", "nope", "x"])
    assert res.exit_code == 1 and "unknown task 'nope'" in res.stderr


def test_train_cli_rejects_bad_settings(tmp_path):
    queries = tmp_path / "q.jsonl"
    queries.write_text('{"id": 1, "text": "hello"}\n')
    backbone = tmp_path / "local-model"  # a local model folder without a shipped adapter; never loaded here
    backbone.mkdir()
    (backbone / "config.json").write_text("{}")
    base = ["train", "--queries", str(queries), "--out", str(tmp_path / "run"), "--backbone", str(backbone)]
    res = runner.invoke(app, [*base, "--stage", "dream"])
    assert res.exit_code == 1 and "unknown stage" in res.stderr
    res = runner.invoke(app, [*base, "-k", "0"])
    assert res.exit_code == 1 and "must be >= 1" in res.stderr
    res = runner.invoke(app, [*base, "--stage", "optimize", "--stage", "readout"])
    assert res.exit_code == 1 and "run one of them" in res.stderr
    res = runner.invoke(app, [*base, "--stage", "readout", "--init-adapter", "shipped"])
    assert res.exit_code == 1 and "no adapter ships for backbone" in res.stderr
    empty = tmp_path / "empty.jsonl"
    empty.write_text("")
    res = runner.invoke(app, ["train", "--queries", str(empty), "--out", str(tmp_path / "r2")])
    assert res.exit_code == 1 and "has no queries" in res.stderr


def _help(*command: str) -> str:
    res = runner.invoke(app, [*command, "--help"], env={"COLUMNS": "200", "TERM": "dumb"})
    assert res.exit_code == 0, res.output
    return " ".join(res.output.split())


def test_help_describes_every_option():
    index = _help("index")
    assert "Texts per forward pass" in index and "field holding each record's id" in index
    assert "field holding the title" in index and "field holding the text" in index and "--rebuild" in index
    search = _help("search")
    assert all(field in search for field in ("id, score, text, title, source, chunk_no, metadata",))
    assert "--num-threads" in _help("explain")
    assert "qrels/<split>.tsv" in _help("eval", "beir")
    train = _help("train")
    for text in (
        "Queries are cut to",
        "Responses are cut to",
        "when generating responses",
        "between checkpoints",
        "Seed of the query sample",
    ):
        assert text in train


def test_delete_says_chunk_or_chunks(tmp_path, fake_backbone):
    corpus = tmp_path / "c"
    corpus.mkdir()
    (corpus / "a.txt").write_text("hello world")
    (corpus / "b.txt").write_text("the city")
    where = str(tmp_path / "idx")
    res = runner.invoke(
        app,
        [
            "index",
            str(corpus),
            "--backend",
            "faiss",
            "--index-dir",
            where,
            "--backbone",
            fake_backbone,
            "--dtype",
            "fp32",
        ],
    )
    assert res.exit_code == 0, res.output
    res = runner.invoke(app, ["delete", "--index-dir", where, "--source", "a.txt"])
    assert res.exit_code == 0 and f"deleted 1 chunk from {where}" in res.stderr
    res = runner.invoke(app, ["delete", "--index-dir", where, "--source", "a.txt"])
    assert res.exit_code == 0 and "deleted 0 chunks" in res.stderr and "relative to the corpus root" in res.stderr
