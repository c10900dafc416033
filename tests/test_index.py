"""Index layer on a tiny random backbone: incremental indexing, binding, locking, crash safety, the CLI."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time

import pytest
from typer.testing import CliRunner

from genretrieval import GenRetError
from genretrieval.cli import app
from genretrieval.encoder import load_encoder
from genretrieval.index import MANIFEST, Index

runner = CliRunner()
BACKENDS = ["faiss", "qdrant"]


def _create(tmp_path, enc, backend, **kw) -> Index:
    return Index.create(tmp_path / f"idx-{backend}", enc, backend, chunk_size=16, overlap=4, **kw)


@pytest.mark.parametrize("backend", BACKENDS)
def test_incremental_add_update_delete(tmp_path, enc, corpus, backend):
    with _create(tmp_path, enc, backend) as idx:
        first = idx.add(corpus, progress=False)
        n = idx.count()
        assert first.added == n == first.chunks and first.files == 3
        again = idx.add(corpus, progress=False)
        assert (again.added, again.updated, again.skipped, again.deleted) == (0, 0, n, 0)
        (corpus / "b.txt").write_text("bread is baked")
        changed = idx.add(corpus, progress=False)
        assert changed.updated == 1 and changed.added == 0 and changed.skipped == n - 1
        (corpus / "a.md").unlink()
        kept = idx.add(corpus, progress=False)
        assert kept.deleted == 0 and idx.count() == n  # without --sync, vanished files stay
        synced = idx.add(corpus, sync=True, progress=False)
        assert synced.deleted > 0 and idx.count() == n - synced.deleted
        assert all(not h.source.endswith("a.md") for h in idx.search("paris", k=50)[0])


def test_each_flush_part_goes_to_the_encoder_whole_and_the_bar_moves_per_batch(tmp_path, enc, corpus, monkeypatch):
    """The encoder sorts and batches a part (``batch_size``); the index only cuts the parts it flushes."""
    import io

    from genretrieval import progress as prog

    calls, moves = [], []
    encode_documents, partial = enc.encode_documents, prog.Progress.partial
    monkeypatch.setattr(
        enc,
        "encode_documents",
        lambda texts, **kw: (
            calls.append((len(texts), kw["batch_size"], prog.active().description)) or encode_documents(texts, **kw)
        ),
    )
    monkeypatch.setattr(prog.Progress, "partial", lambda bar, n: moves.append((bar.description, n)) or partial(bar, n))
    monkeypatch.setattr("sys.stderr", io.StringIO())
    with _create(tmp_path, enc, "faiss") as idx:
        stats = idx.add(corpus, batch_size=2, flush_every=3)
        assert [n for n, _, _ in calls] == [3] * (stats.added // 3) + ([stats.added % 3] if stats.added % 3 else [])
        assert {(b, d) for _, b, d in calls} == {(2, "embedding chunks")} and idx.count() == stats.added
    assert ("embedding chunks", 2) in moves  # the first batch of a part, before the part is done


@pytest.mark.parametrize("backend", BACKENDS)
def test_search_hits_and_filters(tmp_path, enc, corpus, backend):
    with _create(tmp_path, enc, backend) as idx:
        idx.add(corpus, progress=False)
        (hits,) = idx.search("the river flows to the sea", k=3)
        assert 1 <= len(hits) <= 3 and hits[0].score >= hits[-1].score
        (fr,) = idx.search("river", k=5, where={"lang": "fr"})
        assert fr and all(h.metadata["lang"] == "fr" and h.source == "sub/c.jsonl" for h in fr)
        with pytest.raises(GenRetError, match="no field 'nope'"):
            idx.search("river", where={"nope": "x"})
        with pytest.raises(GenRetError, match="k must be >= 1"):
            idx.search("river", k=0)
        before = idx.count()
        assert idx.delete(source="b.txt") == 1
        english = idx.delete(where={"lang": "en"})
        assert english >= 1 and idx.count() == before - 1 - english


def test_reopen_with_another_encoder_is_refused(tmp_path, enc, corpus, tiny_backbone_wide):
    with _create(tmp_path, enc, "faiss") as idx:
        idx.add(corpus, progress=False)
    other = load_encoder("gen", backbone=tiny_backbone_wide, dtype="fp32")
    with pytest.raises(GenRetError, match="was built with the gen encoder on .* but this is the gen encoder on"):
        Index.open(tmp_path / "idx-faiss", other)
    reopened = Index.open(tmp_path / "idx-faiss", enc)
    assert reopened.count() > 0
    reopened.close()


def test_manifest_is_written_atomically(tmp_path, enc):
    idx = _create(tmp_path, enc, "faiss")
    idx.close()
    files = os.listdir(tmp_path / "idx-faiss")
    assert MANIFEST in files and not [f for f in files if f.endswith(".tmp")]
    manifest = json.loads((tmp_path / "idx-faiss" / MANIFEST).read_text())
    assert manifest["encoder"]["adapter"] == enc.identity()["adapter"] and manifest["encoder"]["dim"] == 384


def test_second_writer_gets_locked_error(tmp_path, enc, corpus):
    with _create(tmp_path, enc, "faiss") as idx:
        with pytest.raises(GenRetError, match=f"is being written by pid {os.getpid()}"):
            Index.open(idx.path, enc, writable=True)
        with pytest.raises(GenRetError, match="is being written by pid"):
            _create(tmp_path, enc, "faiss")
        idx.add(corpus, progress=False)  # the refusals took nothing from the writer
    with Index.open(tmp_path / "idx-faiss", with_encoder=False, writable=True) as idx:
        assert idx.count() > 0


def _genret(*args, env=None) -> subprocess.Popen:
    return subprocess.Popen(
        [sys.executable, "-m", "genretrieval.cli", *args],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        env={**os.environ, **(env or {})},
    )


@pytest.mark.parametrize("backend", BACKENDS)
def test_kill_9_at_any_moment_then_resume(tmp_path, tiny_backbone, backend):
    """kill -9 during `genret index` leaves an index that opens and searches; a re-run completes it exactly."""
    root = tmp_path / "big"
    root.mkdir()
    for i in range(600):
        (root / f"doc{i:04d}.txt").write_text(f"document {i} about the river and the city of paris " * 2)
    where = tmp_path / "idx"
    args = [
        "index",
        str(root),
        "--backend",
        backend,
        "--index-dir",
        str(where),
        "--backbone",
        tiny_backbone,
        "--dtype",
        "fp32",
        "--chunk-size",
        "64",
        "--batch-size",
        "4",
    ]
    counts = []
    for delay in (0.0, 0.3, 0.8, 1.5):  # seconds after the manifest appears: before, between and during flushes
        proc = _genret(*args)
        deadline = time.time() + 120
        while not (where / MANIFEST).exists() and proc.poll() is None and time.time() < deadline:
            time.sleep(0.02)
        time.sleep(delay)
        proc.send_signal(signal.SIGKILL)
        proc.wait()
        res = runner.invoke(app, ["search", "--index-dir", str(where), "river", "-k", "3"])
        assert res.exit_code == 0, res.output
        with Index.open(where, with_encoder=False) as idx:
            counts.append(idx.count())
    done = _genret(*args)
    _, err = done.communicate(timeout=600)
    assert done.returncode == 0, err.decode()[-2000:]
    with Index.open(where, with_encoder=False) as idx:
        ids = idx.store.ids()
        assert idx.count() == len(ids) == len(set(ids)) == 600
    assert all(0 <= c <= 600 for c in counts)


def test_cli_index_search_info_delete(tmp_path, tiny_backbone, corpus):
    where = str(tmp_path / "cli-idx")
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
            tiny_backbone,
            "--dtype",
            "fp32",
            "--chunk-size",
            "16",
            "--overlap",
            "4",
        ],
    )
    assert res.exit_code == 0, res.output
    assert "3 files" in res.stderr and "added" in res.stderr
    res = runner.invoke(app, ["search", "--index-dir", where, "river", "-k", "2"])
    rows = [json.loads(line) for line in res.stdout.splitlines()]
    assert res.exit_code == 0 and len(rows) == 2
    assert set(rows[0]) >= {"id", "score", "text", "source", "metadata"}
    res = runner.invoke(
        app, ["search", "--index-dir", where, "-", "-k", "1", "--format", "json"], input="river\nbread\n"
    )
    assert [r["query"] for r in json.loads(res.stdout)] == ["river", "bread"]
    res = runner.invoke(app, ["search", "--index-dir", where, "river", "--plain", "--filter", "lang=fr"])
    lines = res.stdout.splitlines()
    assert res.exit_code == 0 and lines[0] == "# river" and all("sub/c.jsonl" in line for line in lines[1:])
    info = json.loads(runner.invoke(app, ["info", "--index-dir", where]).stdout)
    assert info["backend"] == "faiss" and info["chunks"] > 0 and info["encoder"]["kind"] == "gen"
    assert info["this_machine"]["dtype"] in ("float32", "bfloat16") and info["this_machine"]["why"]
    res = runner.invoke(app, ["delete", "--index-dir", where, "--source", "b.txt"])
    assert res.exit_code == 0 and "deleted 1" in res.stderr


@pytest.mark.parametrize(
    "args, message",
    [
        (["index", "/nonexistent/path"], "path not found"),
        (["search", "--index-dir", "/nonexistent/idx", "q"], "no index at"),
        (["search", "--index-dir", "/nonexistent/idx", "  "], "empty query"),
        (["search", "--index-dir", "/nonexistent/idx", "q", "-k", "0"], "k must be >= 1"),
        (["index", ".", "--backend", "milvus"], "milvus"),
        (["delete", "--index-dir", "/nonexistent/idx", "--id", "x"], "no index at"),
    ],
)
def test_cli_bad_input_is_one_line(args, message):
    res = runner.invoke(app, args)
    assert res.exit_code != 0
    assert message in res.output
    assert "Traceback" not in res.output


def test_cli_empty_and_binary_corpora(tmp_path, fake_backbone):
    empty = tmp_path / "empty"
    empty.mkdir()
    binary = tmp_path / "binary"
    binary.mkdir()
    (binary / "x.txt").write_bytes(b"\x00\x01\x02" * 100)
    for corpus in (empty, binary):
        where = tmp_path / f"idx-{corpus.name}"
        res = runner.invoke(
            app,
            [
                "index",
                str(corpus),
                "--backend",
                "faiss",
                "--index-dir",
                str(where),
                "--backbone",
                fake_backbone,
                "--dtype",
                "fp32",
            ],
        )
        assert res.exit_code == 1 and res.stderr.splitlines()[-1].startswith("error: no readable documents")
        assert not where.exists()  # nothing half-written


def test_cli_unreachable_qdrant(tmp_path, fake_backbone, corpus):
    res = runner.invoke(
        app,
        [
            "index",
            str(corpus),
            "--backend",
            "qdrant",
            "--url",
            "http://127.0.0.1:1",
            "--index-dir",
            str(tmp_path / "remote"),
            "--backbone",
            fake_backbone,
        ],
    )
    assert res.exit_code == 1 and "cannot reach Qdrant" in res.stderr
    assert not (tmp_path / "remote").exists()


def test_qdrant_server_code_path_with_shard_settings(tmp_path, enc, corpus):
    """The server store (here qdrant-client's in-process ':memory:' engine, same API) behind the index."""
    with Index.create(
        tmp_path / "remote",
        enc,
        "qdrant",
        url=":memory:",
        chunk_size=16,
        overlap=4,
        store_options={"shard_number": 2, "replication_factor": 1},
    ) as idx:
        stats = idx.add(corpus, progress=False)
        assert idx.count() == stats.added > 0
        (hits,) = idx.search("river", k=2, where={"lang": "fr"})
        assert hits and hits[0].metadata["lang"] == "fr"
        assert idx.manifest.store_options.to_dict() == {"shard_number": 2, "replication_factor": 1}


def test_manifest_round_trip_and_settings(tmp_path):
    """The manifest's typed form reads back what it writes, and `genret index` settles settings against it."""
    from genretrieval.encoder.spec import EncoderSpec
    from genretrieval.errors import GenRetError
    from genretrieval.manifest import IndexSettings, Manifest
    from genretrieval.stores.base import StoreOptions

    manifest = Manifest(
        backend="qdrant",
        collection="c",
        encoder={"kind": "teacher", "dim": 384},
        encoder_spec=EncoderSpec("teacher"),
        url="http://q:6333",
        chunk_size=64,
        store_options=StoreOptions(shard_number=2),
    )
    manifest.write(tmp_path)
    again = Manifest.read(tmp_path)
    assert again == manifest and again.store_options.to_dict() == {"shard_number": 2}
    assert json.loads((tmp_path / MANIFEST).read_text())["format_version"] == 1

    built = IndexSettings.of(manifest)
    assert (built.backend, built.chunk_size, built.shards, built.encoder) == ("qdrant", 64, 2, "teacher")
    mine = IndexSettings(chunk_size=32, overlap=8)
    # Options not given take the index's values; a given one that differs is refused, unless rebuilding.
    assert mine.settle(manifest, set(), tmp_path, named_url="http://q:6333").chunk_size == 64
    with pytest.raises(GenRetError, match="built with --chunk-size 64; leave out --chunk-size"):
        mine.settle(manifest, {"chunk_size"}, tmp_path)
    assert mine.settle(manifest, {"chunk_size"}, tmp_path, rebuild=True, named_url="http://q:6333").chunk_size == 32
    with pytest.raises(GenRetError, match="name it with --url"):  # a server index is rebuilt only when named
        mine.settle(manifest, {"chunk_size"}, tmp_path, rebuild=True)
    with pytest.raises(GenRetError, match="--shards and --replicas apply to a Qdrant server"):
        IndexSettings(shards=2).settle(None, {"shards"}, tmp_path)
    with pytest.raises(GenRetError, match="unknown encoder setting 'device'"):
        EncoderSpec.from_dict({"kind": "gen", "device": "cpu"})
