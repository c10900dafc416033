"""Embeddings as files (genret embed), the same job on Ray, and bulk loading them into an index."""

from __future__ import annotations

import json
import os
import sys

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from typer.testing import CliRunner

from genretrieval import GenRetError
from genretrieval.cli import app
from genretrieval.corpus import scan
from genretrieval.embed import (
    ENCODER_KEY,
    PART_KEY,
    PartWriter,
    embed_corpus,
    embed_corpus_ray,
    index_from_embeddings,
    load_embeddings,
    part_path,
)
from genretrieval.encoder import load_encoder
from genretrieval.index import Index

runner = CliRunner()
CHUNKING = {"chunk_size": 16, "overlap": 4}
QUERIES = ["the river flows to the sea", "capital of france", "bread and water"]


def _rows(out) -> dict[str, dict]:
    """Every row of every part under ``out``, by id (vector as a numpy array)."""
    rows = {}
    for path in sorted(out.rglob("*.parquet")):
        for row in pq.read_table(path).to_pylist():
            row["vector"] = np.asarray(row["vector"], dtype=np.float32)
            rows[row["id"]] = row
    return rows


def _parts(out) -> list[str]:
    return sorted(p.relative_to(out).as_posix() for p in out.rglob("*.parquet"))


def _assert_same_rows(a: dict, b: dict) -> None:
    assert list(a) == list(b)
    for key in a:
        ra, rb = dict(a[key]), dict(b[key])
        va, vb = ra.pop("vector"), rb.pop("vector")
        assert ra == rb
        assert float(va @ vb) >= 0.9999


def test_parts_hold_the_chunks_vectors_and_encoder_identity(tmp_path, enc, corpus):
    out = tmp_path / "emb"
    stats = embed_corpus(corpus, out, enc, part_documents=1, progress=False, **CHUNKING)
    # One part per document: a.md, b.txt, and the two records of sub/c.jsonl.
    assert _parts(out) == [
        "a.md.part00000.parquet",
        "b.txt.part00000.parquet",
        "sub/c.jsonl.part00000.parquet",
        "sub/c.jsonl.part00001.parquet",
    ]
    chunks, _ = scan(corpus, enc.tokenizer, **CHUNKING)
    assert (stats.files, stats.embedded_files, stats.parts, stats.chunks) == (3, 3, 4, len(chunks))
    table = pq.read_table(part_path(out, "sub/c.jsonl", 1))
    schema = table.schema
    assert schema.field("vector").type == pa.list_(pa.float32(), enc.dim)
    assert [f.name for f in schema][:6] == ["id", "doc_id", "text", "title", "source", "chunk_no"]
    assert {"metadata", "content_hash"} <= set(schema.names)
    assert json.loads(schema.metadata[ENCODER_KEY]) == enc.identity()  # exactly what an index manifest stores
    meta = json.loads(schema.metadata[PART_KEY])
    assert (meta["source"], meta["part"], meta["last"], meta["chunk_size"], meta["overlap"]) == (
        "sub/c.jsonl",
        1,
        True,
        16,
        4,
    )
    assert json.loads(table.column("metadata")[0].as_py()) == {"lang": "fr"}
    # The rows are the corpus's chunks in scan order, embedded as Index.add embeds them.
    rows = _rows(out)
    assert sorted(rows) == sorted(c.id for c in chunks)
    texts = [Index._doc_text(c) for c in chunks]
    direct = enc.encode_documents(texts, batch_size=4)
    for chunk, vector in zip(chunks, direct):
        row = rows[chunk.id]
        assert (row["text"], row["source"], row["chunk_no"], row["content_hash"]) == (
            chunk.text,
            chunk.source,
            chunk.chunk_no,
            chunk.content_hash,
        )
        assert float(row["vector"] @ vector) >= 0.9999
        assert abs(np.linalg.norm(row["vector"]) - 1) < 1e-5


def test_output_does_not_depend_on_batch_size(tmp_path, enc, corpus):
    one = embed_corpus(corpus, tmp_path / "b1", enc, batch_size=1, progress=False, **CHUNKING)
    many = embed_corpus(corpus, tmp_path / "b16", enc, batch_size=16, progress=False, **CHUNKING)
    assert one.parts == many.parts and _parts(tmp_path / "b1") == _parts(tmp_path / "b16")
    _assert_same_rows(_rows(tmp_path / "b1"), _rows(tmp_path / "b16"))


def _mtimes(out) -> dict[str, int]:
    return {name: (out / name).stat().st_mtime_ns for name in _parts(out)}


def test_rerun_skips_unchanged_files_and_redoes_changed_ones(tmp_path, enc, corpus):
    out = tmp_path / "emb"
    embed_corpus(corpus, out, enc, part_documents=1, progress=False, **CHUNKING)
    before = _mtimes(out)
    again = embed_corpus(corpus, out, enc, progress=False)  # settings come from the folder
    assert (again.skipped, again.embedded_files, again.embedded) == (3, 0, 0) and _mtimes(out) == before

    (corpus / "b.txt").write_text("bread is baked in the city")
    changed = embed_corpus(corpus, out, enc, progress=False)
    assert (changed.skipped, changed.embedded_files, changed.embedded) == (2, 1, 1)
    assert _rows(out)["b.txt::0"]["text"] == "bread is baked in the city"

    # A record appended to a record file: its earlier parts keep their vectors, only the new part is embedded.
    with open(corpus / "sub" / "c.jsonl", "a") as f:
        f.write(json.dumps({"id": "r3", "text": "water of the river", "lang": "en"}) + "\n")
    appended = embed_corpus(corpus, out, enc, progress=False)
    assert (appended.embedded_files, appended.parts, appended.embedded) == (1, 3, 1)
    assert part_path(out, "sub/c.jsonl", 2).exists()

    # The file shrinks: the parts it no longer has are removed.
    lines = (corpus / "sub" / "c.jsonl").read_text().splitlines()
    (corpus / "sub" / "c.jsonl").write_text(lines[0] + "\n")
    shrunk = embed_corpus(corpus, out, enc, progress=False)
    assert shrunk.removed == 2 and shrunk.embedded == 0
    assert not part_path(out, "sub/c.jsonl", 1).exists()

    # A file that disappeared keeps its parts unless sync.
    (corpus / "a.md").unlink()
    assert embed_corpus(corpus, out, enc, progress=False).removed == 0 and part_path(out, "a.md", 0).exists()
    assert embed_corpus(corpus, out, enc, sync=True, progress=False).removed == 1
    assert not part_path(out, "a.md", 0).exists()


def test_an_output_folder_inside_the_corpus_is_not_read_as_corpus(tmp_path, enc, corpus):
    first = embed_corpus(corpus, corpus / "emb", enc, progress=False, **CHUNKING)
    again = embed_corpus(corpus, corpus / "emb", enc, progress=False)
    assert first.files == again.files == again.skipped == 3 and again.parts == 0


def test_an_interrupted_run_resumes_where_it_stopped(tmp_path, enc, corpus, monkeypatch):
    out = tmp_path / "emb"
    process, calls = PartWriter.process, []

    def failing(self, row):
        if len(calls) == 2:
            raise KeyboardInterrupt
        calls.append(row["source"])
        return process(self, row)

    monkeypatch.setattr(PartWriter, "process", failing)
    with pytest.raises(KeyboardInterrupt):
        embed_corpus(corpus, out, enc, part_documents=1, progress=False, **CHUNKING)
    monkeypatch.setattr(PartWriter, "process", process)
    assert len(_parts(out)) == 2
    (out / ".b.txt.part00000.parquet.999.tmp").write_bytes(b"left by a killed run")
    resumed = embed_corpus(corpus, out, enc, progress=False)
    assert resumed.skipped == 2 and resumed.parts == 2 and len(_parts(out)) == 4
    assert not [p for p in out.rglob("*") if p.name.endswith(".tmp")]
    embed_corpus(corpus, tmp_path / "full", enc, part_documents=1, progress=False, **CHUNKING)
    _assert_same_rows(_rows(out), _rows(tmp_path / "full"))


def test_conflicting_settings_and_encoders_are_refused(tmp_path, enc, corpus, tiny_backbone_wide):
    out = tmp_path / "emb"
    embed_corpus(corpus, out, enc, progress=False, **CHUNKING)
    with pytest.raises(GenRetError, match=r"made with --chunk-size 16; leave out --chunk-size"):
        embed_corpus(corpus, out, enc, chunk_size=32, progress=False)
    (corpus / "b.txt").write_text("changed, so the encoder is loaded")
    other = load_encoder("gen", backbone=tiny_backbone_wide, dtype="fp32", max_length=64)
    with pytest.raises(GenRetError, match=r"holds embeddings made with the gen encoder on .* but this is"):
        embed_corpus(corpus, out, other, progress=False)
    with pytest.raises(GenRetError, match="more than this encoder reads"):
        embed_corpus(corpus, tmp_path / "big", enc, chunk_size=1000, progress=False)
    with pytest.raises(GenRetError, match="path not found"):
        embed_corpus(tmp_path / "nope", tmp_path / "x", enc, progress=False)
    (tmp_path / "empty").mkdir()
    with pytest.raises(GenRetError, match="no readable documents"):
        embed_corpus(tmp_path / "empty", tmp_path / "x", enc, progress=False)
    assert not (tmp_path / "x").exists()  # a failed first run leaves no folder


def _search(idx) -> list[list[tuple]]:
    """Every chunk ranked for each query; chunks with equal text tie, and a store orders ties its own way."""
    return [
        sorted(
            ((-round(h.score, 4), h.id, h.text, h.title, h.source, h.chunk_no, h.metadata) for h in hits),
            key=lambda t: t[:2],
        )
        for hits in idx.search(QUERIES, k=100)
    ]


@pytest.mark.parametrize("backend", ["faiss", "qdrant"])
def test_bulk_load_gives_the_hits_of_a_direct_index(tmp_path, enc, corpus, backend):
    with Index.create(tmp_path / "direct", enc, backend, **CHUNKING) as idx:
        idx.add(corpus, progress=False)
        expected = _search(idx)
    embed_corpus(corpus, tmp_path / "emb", enc, part_documents=1, progress=False, **CHUNKING)
    stats, total = index_from_embeddings(tmp_path / "emb", tmp_path / "bulk", backend, progress=False)
    assert stats.added == total == stats.chunks and stats.files == 4
    with Index.open(tmp_path / "bulk", enc) as idx:
        assert _search(idx) == expected
        assert idx.manifest.chunk_size == 16 and idx.manifest.corpus == str(corpus.resolve())
        (fr,) = idx.search("river", k=5, where={"lang": "fr"})
        assert fr and all(h.source == "sub/c.jsonl" and h.metadata == {"lang": "fr"} for h in fr)
    # Loading again changes nothing; a file that changed updates only its chunks.
    again, _ = index_from_embeddings(tmp_path / "emb", tmp_path / "bulk", backend, progress=False)
    assert (again.added, again.updated, again.skipped, again.deleted) == (0, 0, total, 0)
    (corpus / "b.txt").write_text("bread is baked")
    embed_corpus(corpus, tmp_path / "emb", enc, progress=False)
    changed, n = index_from_embeddings(tmp_path / "emb", tmp_path / "bulk", backend, progress=False)
    assert (changed.updated, changed.added, n) == (1, 0, total)


def test_bulk_load_into_a_qdrant_server_store(tmp_path, enc, corpus, monkeypatch):
    """The server store (qdrant-client's local mode, as in test_stores.py) loads with upload_points in requests
    under its size limit."""
    with Index.create(tmp_path / "direct", enc, "faiss", **CHUNKING) as idx:
        idx.add(corpus, progress=False)
        expected = _search(idx)
    embed_corpus(corpus, tmp_path / "emb", enc, progress=False, **CHUNKING)
    idx = Index.create(tmp_path / "server", enc, "qdrant", url=":memory:", **CHUNKING)
    sizes = []
    upload = idx.store._client.upload_points

    def counting(collection, points, batch_size, **kw):
        sizes.append(batch_size)
        return upload(collection, points, batch_size=batch_size, **kw)

    monkeypatch.setattr(idx.store._client, "upload_points", counting)
    stats = load_embeddings(idx, tmp_path / "emb", parallel=2, progress=False)
    assert stats.added == idx.count() > 0
    assert sizes and all(0 < b * (20 * enc.dim + 100 + 16 * 1024) <= idx.store.max_request_bytes for b in sizes)
    assert _search(idx) == expected
    idx.close()


@pytest.mark.skipif(
    not os.environ.get("GENRET_TEST_QDRANT_URL"),
    reason="needs a running Qdrant server: set GENRET_TEST_QDRANT_URL (tests/test_stores.py only has "
    "qdrant-client's local mode, tested above)",
)
def test_bulk_load_into_a_real_qdrant_server(tmp_path, enc, corpus):
    url = os.environ["GENRET_TEST_QDRANT_URL"]
    embed_corpus(corpus, tmp_path / "emb", enc, progress=False, **CHUNKING)
    stats, total = index_from_embeddings(
        tmp_path / "emb",
        tmp_path / "srv",
        "qdrant",
        url=url,
        store_options={"shard_number": 2},
        rebuild=True,
        progress=False,
    )
    assert stats.added == total > 0
    with Index.open(tmp_path / "srv", enc, url=url) as idx:
        assert idx.search("river", k=3)[0]


def test_bulk_load_refuses_other_encoders_and_incomplete_folders(tmp_path, enc, corpus, tiny_backbone_wide):
    embed_corpus(corpus, tmp_path / "emb", enc, part_documents=1, progress=False, **CHUNKING)
    other = load_encoder("gen", backbone=tiny_backbone_wide, dtype="fp32", max_length=64)
    Index.create(tmp_path / "other", other, "faiss", **CHUNKING).close()
    with pytest.raises(GenRetError, match=r"^\S+\.parquet was made with the gen encoder on .* but index .* holds"):
        index_from_embeddings(tmp_path / "emb", tmp_path / "other", "faiss", progress=False)
    Index.create(tmp_path / "chunked", enc, "faiss", chunk_size=32, overlap=4).close()
    with pytest.raises(GenRetError, match="was made with chunk_size 16, but index"):
        index_from_embeddings(tmp_path / "emb", tmp_path / "chunked", "faiss", progress=False)
    part_path(tmp_path / "emb", "sub/c.jsonl", 1).unlink()  # the file's last part
    with pytest.raises(GenRetError, match="embeddings of sub/c.jsonl in .* are incomplete"):
        index_from_embeddings(tmp_path / "emb", tmp_path / "new", "faiss", progress=False)
    assert not (tmp_path / "new").exists()
    with pytest.raises(GenRetError, match="no embeddings in"):
        index_from_embeddings(tmp_path / "other", tmp_path / "new", "faiss", progress=False)


def test_cli_embed_then_index_from_embeddings(tmp_path, tiny_backbone, corpus):
    out, where = str(tmp_path / "emb"), str(tmp_path / "idx")
    enc_opts = ["--backbone", tiny_backbone, "--dtype", "fp32"]
    res = runner.invoke(app, ["embed", str(corpus), "--out", out, *enc_opts, "--chunk-size", "16", "--overlap", "4"])
    assert res.exit_code == 0, res.output
    assert "3 files: 0 already embedded, 3 written" in res.stderr and "embedding files: 3/3 done" in res.stderr
    res = runner.invoke(app, ["embed", str(corpus), "--out", out, *enc_opts])
    assert res.exit_code == 0 and "3 already embedded, 0 written" in res.stderr
    res = runner.invoke(app, ["index", "--from-embeddings", out, "--index-dir", where, "--backend", "faiss"])
    assert res.exit_code == 0, res.output
    assert "added" in res.stderr and json.load(open(f"{where}/manifest.json"))["chunk_size"] == 16
    res = runner.invoke(app, ["search", "--index-dir", where, "--dtype", "fp32", "river", "-k", "2"])
    assert res.exit_code == 0, res.output
    assert len(res.stdout.splitlines()) == 2
    for args, message in (
        (
            ["index", "--from-embeddings", out, "--index-dir", where, "--backbone", "x"],
            "--backbone does not apply with --from-embeddings",
        ),
        (["index", str(corpus), "--from-embeddings", out, "--index-dir", where], "not both"),
        (["index", "--index-dir", where], "give the corpus PATH"),
        (["embed", str(corpus), "--out", out, "--workers", "2"], "--workers applies to --ray"),
        (["embed", str(corpus), "--out", out, "--overlap", "8"], "made with --overlap 4"),
    ):
        res = runner.invoke(app, args)
        assert res.exit_code == 1 and res.stderr.startswith("error: ") and message in res.stderr, res.output
        assert len(res.stderr.strip().splitlines()) == 1


def test_missing_ray_is_a_one_line_hint(tmp_path, corpus, monkeypatch):
    monkeypatch.setitem(sys.modules, "ray", None)
    with pytest.raises(GenRetError, match=r"pip install 'genretrieval\[ray\]'"):
        embed_corpus_ray(corpus, tmp_path / "emb", {"kind": "gen"})


# ---------------------------------------------------------------------------------------------- Ray


@pytest.fixture(scope="module")
def ray_cluster():
    """One local Ray cluster for the module's Ray tests: 2 CPUs, no dashboard, shut down at the end."""
    ray = pytest.importorskip("ray")
    # Ray gives its raylet 30 s to register; on a loaded 2-core machine that can pass, so try twice.
    for attempt in range(2):
        try:
            ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False, logging_level="ERROR")
            break
        except Exception as e:  # noqa: BLE001 - Ray raises a bare Exception on a startup timeout
            ray.shutdown()
            if attempt or "timed out during startup" not in str(e):
                raise
    yield ray
    ray.shutdown()


@pytest.mark.filterwarnings("ignore::DeprecationWarning:ray")
def test_ray_gives_the_rows_and_vectors_of_one_process(tmp_path, enc, corpus, tiny_backbone, ray_cluster):
    single = embed_corpus(corpus, tmp_path / "one", enc, part_documents=1, progress=False, **CHUNKING)
    spec = {"kind": "gen", "backbone": tiny_backbone, "dtype": "fp32", "max_length": 64, "num_threads": 1}
    distributed = embed_corpus_ray(
        corpus, tmp_path / "ray", spec, workers=2, part_documents=1, progress=False, **CHUNKING
    )
    assert (distributed.parts, distributed.chunks) == (single.parts, single.chunks)
    assert _parts(tmp_path / "ray") == _parts(tmp_path / "one")
    _assert_same_rows(_rows(tmp_path / "ray"), _rows(tmp_path / "one"))
    for name in _parts(tmp_path / "one"):
        a, b = (pq.read_schema(tmp_path / d / name).metadata for d in ("one", "ray"))
        assert json.loads(a[ENCODER_KEY]) == json.loads(b[ENCODER_KEY])
    # A re-run finds everything done (and starts no pipeline); the result bulk-loads like the single run's.
    again = embed_corpus_ray(corpus, tmp_path / "ray", spec, progress=False)
    assert (again.skipped, again.parts) == (3, 0)
    _, total = index_from_embeddings(tmp_path / "ray", tmp_path / "idx", "faiss", progress=False)
    assert total == single.chunks
