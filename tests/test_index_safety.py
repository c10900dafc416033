"""What `genret index` may touch, concurrent processes, read-only indexes, credentials and one-line errors.

Every error case checks: exit status 1, one line on stderr, and nothing written or lost.
"""

from __future__ import annotations

import ctypes
import hashlib
import http.server
import json
import os
import stat
import subprocess
import sys
import textwrap
import threading
from contextlib import contextmanager
from pathlib import Path

import pytest
from typer.testing import CliRunner

from genretrieval.cli import app
from genretrieval.index import LOCK, MANIFEST, STORE, Index

runner = CliRunner()
BACKENDS = ["faiss", "qdrant"]


def build(where: Path, enc, corpus: Path, backend: str, backbone: str) -> int:
    """An index of ``corpus`` in ``where`` whose manifest reloads ``enc`` as ``--backbone backbone`` (the tiny
    backbone, or ``fake`` for the fake encoder); returns its chunk count."""
    with Index.create(
        where, enc, backend, chunk_size=16, overlap=4, encoder_spec={"kind": "gen", "backbone": backbone}
    ) as idx:
        idx.add(corpus, progress=False)
        return idx.count()


def snapshot(folder: Path) -> dict[str, str]:
    """Every entry under ``folder``: relative path -> sha256 of a file's bytes, or "dir".

    Qdrant Edge's WAL pre-allocates its next segment (``wal/tmp-open-N``) in a background thread of the process
    holding the index, so those files come and go on their own: they are left out.
    """
    if not folder.exists():
        return {}
    return {
        p.relative_to(folder).as_posix(): "dir" if p.is_dir() else hashlib.sha256(p.read_bytes()).hexdigest()
        for p in sorted(folder.rglob("*"))
        if not (p.parent.name == "wal" and p.name.startswith("tmp-open-"))
    }


def one_line_error(res, *fragments: str) -> None:
    """A CliRunner result or CompletedProcess that failed with one line on stderr containing ``fragments``."""
    code = res.exit_code if hasattr(res, "exit_code") else res.returncode
    lines = res.stderr.strip().splitlines()
    assert code == 1, res.stderr
    assert len(lines) == 1 and lines[0].startswith("error: "), res.stderr
    for fragment in fragments:
        assert fragment in lines[0], lines[0]


def genret(*args: str, env: dict | None = None, preexec_fn=None) -> subprocess.CompletedProcess:
    """`genret ARGS` in a separate process."""
    return subprocess.run(
        [sys.executable, "-m", "genretrieval.cli", *args],
        capture_output=True,
        text=True,
        env={**os.environ, **(env or {})},
        preexec_fn=preexec_fn,
        timeout=300,
    )


# ------------------------------------------------------------------------- a failed run removes only its own


@pytest.mark.parametrize("backend", BACKENDS)
def test_bad_jsonl_into_an_existing_folder_keeps_the_folder(tmp_path, fake_backbone, backend):
    bad = tmp_path / "badjsonl"
    bad.mkdir()
    (bad / "x.jsonl").write_text('{"id": 1, "text": "fine"}\n{not json\n')
    victim = tmp_path / "victim"
    victim.mkdir()
    (victim / "notes.txt").write_text("mine")
    (victim / "sub").mkdir()
    (victim / "sub" / "data.bin").write_bytes(b"\x00\x01")
    before = snapshot(victim)
    res = runner.invoke(
        app,
        [
            "index",
            str(bad),
            "--index-dir",
            str(victim),
            "--backend",
            backend,
            "--backbone",
            fake_backbone,
            "--dtype",
            "fp32",
        ],
    )
    one_line_error(res, "x.jsonl")
    assert snapshot(victim) == before  # the user's files stay; no manifest, store or lock file is left


def test_mistyped_adapter_touches_nothing(tmp_path, tiny_backbone, corpus):
    victim = tmp_path / "victim"
    victim.mkdir()
    (victim / "notes.txt").write_text("mine")
    res = runner.invoke(
        app,
        [
            "index",
            str(corpus),
            "--index-dir",
            str(victim),
            "--backbone",
            tiny_backbone,
            "--adapter",
            str(tmp_path / "no-such-adapter"),
        ],
    )
    assert res.exit_code == 1 and "Traceback" not in res.output
    assert snapshot(victim) == {"notes.txt": hashlib.sha256(b"mine").hexdigest()}


def test_corpus_folder_as_index_folder_keeps_the_corpus(tmp_path, fake_backbone, corpus):
    (corpus / "broken.jsonl").write_text("{oops\n")
    before = snapshot(corpus)
    res = runner.invoke(
        app,
        [
            "index",
            str(corpus),
            "--index-dir",
            str(corpus),
            "--backend",
            "faiss",
            "--backbone",
            fake_backbone,
            "--dtype",
            "fp32",
        ],
    )
    one_line_error(res, "broken.jsonl")
    assert snapshot(corpus) == before


def test_failed_first_run_removes_the_folders_it_made(tmp_path, fake_backbone):
    bad = tmp_path / "bad.jsonl"
    bad.write_text("{oops\n")
    res = runner.invoke(
        app,
        [
            "index",
            str(bad),
            "--index-dir",
            str(tmp_path / "new" / "deeper" / "idx"),
            "--backend",
            "faiss",
            "--backbone",
            fake_backbone,
            "--dtype",
            "fp32",
        ],
    )
    one_line_error(res, "bad.jsonl")
    assert not (tmp_path / "new").exists()


def test_failed_rerun_keeps_the_existing_index(tmp_path, fake_enc, fake_backbone, corpus):
    where = tmp_path / "idx"
    n = build(where, fake_enc, corpus, "faiss", fake_backbone)
    (corpus / "broken.jsonl").write_text("{oops\n")
    res = runner.invoke(app, ["index", str(corpus), "--index-dir", str(where)])
    one_line_error(res, "broken.jsonl")
    with Index.open(where, with_encoder=False) as idx:
        assert idx.count() == n


def test_discard_removes_only_what_create_made(tmp_path, enc):
    where = tmp_path / "idx"
    where.mkdir()
    (where / "keep.txt").write_text("mine")
    idx = Index.create(where, enc, "faiss")
    assert {p.name for p in where.iterdir()} == {"keep.txt", MANIFEST, STORE, LOCK}
    idx.discard()
    assert [p.name for p in where.iterdir()] == ["keep.txt"]
    idx = Index.create(where, enc, "faiss")  # an index that exists is only closed by discard
    idx.close()
    Index.create(where, enc, "faiss").discard()
    assert {p.name for p in where.iterdir()} == {"keep.txt", MANIFEST, STORE, LOCK}


def test_a_foreign_store_folder_is_refused(tmp_path, enc):
    (tmp_path / "idx" / STORE).mkdir(parents=True)
    (tmp_path / "idx" / STORE / "code.py").write_text("print()")
    with pytest.raises(Exception, match="is not a genretrieval store"):
        Index.create(tmp_path / "idx", enc, "faiss")
    assert [p.name for p in (tmp_path / "idx").iterdir()] == [STORE]


# ------------------------------------------------------------------------- two real processes

HOLDER = textwrap.dedent("""
    import sys
    import numpy as np
    from genretrieval.index import Index

    path, mode, backend, backbone = sys.argv[1:5]
    if mode == "create":  # a first writer: makes a new index, then waits before adding the corpus
        from genretrieval.encoder import load_encoder
        enc = load_encoder("gen", backbone=backbone, dtype="fp32", max_length=64)
        idx = Index.create(path, enc, backend, chunk_size=16, overlap=4,
                           encoder_spec={"kind": "gen", "backbone": backbone})
    else:
        idx = Index.open(path, with_encoder=False, writable=mode == "write")
    if mode == "write":  # in the middle of a write: 48 new points, the index file written, no commit yet
        v = np.random.default_rng(0).standard_normal((48, 384)).astype("float32")
        v /= np.linalg.norm(v, axis=1, keepdims=True)
        idx.store.upsert([f"new-{i}" for i in range(48)], v, [{"text": "new", "source": "new.txt"}] * 48)
        if backend == "faiss":
            idx.store._write_index()
    print("ready", flush=True)
    sys.stdin.readline()
    if mode == "create":
        idx.add(sys.argv[5], progress=False)
    if idx.writable:
        idx.store.flush()
    print("count", idx.count(), flush=True)
    idx.close()
""")


@contextmanager
def holder(path: Path, mode: str, backend: str, backbone: str, *extra: str):
    """A process holding the index at ``path`` open (mode write, read or create) until the block ends;
    yields it, with ``finish()`` returning the count it prints on the way out."""
    proc = subprocess.Popen(
        [sys.executable, "-c", HOLDER, str(path), mode, backend, backbone, *extra],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )

    def finish() -> int:
        out, err = proc.communicate("go\n", timeout=300)
        assert proc.returncode == 0, err[-2000:]
        return int(out.split()[-1])

    try:
        line = proc.stdout.readline()
        assert line.strip() == "ready", proc.stderr.read()[-2000:] if proc.poll() is not None else line
        proc.finish = finish
        yield proc
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()


def test_faiss_reader_during_a_write_reads_the_committed_state(tmp_path, enc, tiny_backbone, corpus):
    where = tmp_path / "idx"
    n = build(where, enc, corpus, "faiss", tiny_backbone)
    with holder(where, "write", "faiss", tiny_backbone) as writer:
        before = snapshot(where)
        res = genret("info", "--index-dir", str(where))
        assert res.returncode == 0, res.stderr
        assert json.loads(res.stdout)["chunks"] == n
        res = genret("search", "--index-dir", str(where), "river", "-k", "50")
        assert res.returncode == 0, res.stderr
        hits = [json.loads(line) for line in res.stdout.splitlines()]
        assert len(hits) == n and not [h for h in hits if h["id"].startswith("new-")]
        assert snapshot(where) == before  # the readers wrote nothing, "repaired" nothing
        assert writer.finish() == n + 48
    with Index.open(where, with_encoder=False) as idx:
        assert idx.count() == n + 48  # nothing of the write was lost


def test_edge_reader_during_a_write_gets_one_line(tmp_path, enc, tiny_backbone, corpus):
    where = tmp_path / "idx"
    n = build(where, enc, corpus, "qdrant", tiny_backbone)
    with holder(where, "write", "qdrant", tiny_backbone) as writer:
        before = snapshot(where)
        one_line_error(genret("info", "--index-dir", str(where)), f"is being written by pid {writer.pid}")
        one_line_error(genret("search", "--index-dir", str(where), "river"), f"being written by pid {writer.pid}")
        assert snapshot(where) == before
        assert writer.finish() == n + 48


def test_edge_writer_blocked_by_a_reader_gets_one_line(tmp_path, enc, tiny_backbone, corpus):
    where = tmp_path / "idx"
    n = build(where, enc, corpus, "qdrant", tiny_backbone)
    with holder(where, "read", "qdrant", tiny_backbone) as reader:
        before = snapshot(where)
        res = genret("index", str(corpus), "--index-dir", str(where))
        one_line_error(res, f"is open in pid {reader.pid}", "Qdrant Edge")
        assert snapshot(where) == before
        assert reader.finish() == n


@pytest.mark.parametrize("backend", BACKENDS)
def test_second_writer_on_a_new_index_touches_nothing(tmp_path, tiny_backbone, corpus, backend):
    where = tmp_path / "idx"
    with holder(where, "create", backend, tiny_backbone, str(corpus)) as first:
        before = snapshot(where)
        res = genret(
            "index",
            str(corpus),
            "--index-dir",
            str(where),
            "--backend",
            backend,
            "--backbone",
            tiny_backbone,
            "--dtype",
            "fp32",
        )
        one_line_error(res, f"is being written by pid {first.pid}")
        assert snapshot(where) == before
        assert first.finish() > 0  # the first writer finished its job


# ------------------------------------------------------------------------- read-only index folders


def _without_dac_override() -> None:
    """In a child process of root: give up the right to ignore file permissions (before exec)."""
    libc = ctypes.CDLL(None, use_errno=True)
    for cap in (1, 2):  # CAP_DAC_OVERRIDE, CAP_DAC_READ_SEARCH, dropped from the bounding set
        if libc.prctl(24, cap, 0, 0, 0) != 0:  # PR_CAPBSET_DROP
            raise OSError(ctypes.get_errno(), "prctl(PR_CAPBSET_DROP)")


@pytest.fixture()
def read_only(tmp_path):
    """``make(folder)`` removes every write bit under ``folder``; ``run(*args)`` runs genret in a process that
    permissions bind (as root, one without CAP_DAC_OVERRIDE). Write bits are restored afterwards."""
    folders: list[Path] = []
    preexec = _without_dac_override if os.geteuid() == 0 else None

    def make(folder: Path) -> None:
        for p in [folder, *folder.rglob("*")]:
            p.chmod(stat.S_IMODE(p.stat().st_mode) & ~0o222)
        folders.append(folder)
        probe = subprocess.run(
            [sys.executable, "-c", f"open({str(folder / 'probe')!r}, 'w')"], preexec_fn=preexec, capture_output=True
        )
        if probe.returncode == 0:
            (folder / "probe").unlink()
            pytest.skip("cannot make a folder read-only for this user here")

    def run(*args: str, env: dict | None = None) -> subprocess.CompletedProcess:
        return genret(*args, env=env, preexec_fn=preexec)

    yield make, run
    for folder in folders:
        for p in [folder, *folder.rglob("*")]:
            p.chmod(stat.S_IMODE(p.stat().st_mode) | 0o200)


def test_faiss_search_and_info_on_a_read_only_index(tmp_path, enc, tiny_backbone, corpus, read_only):
    make, run = read_only
    where = tmp_path / "idx"
    n = build(where, enc, corpus, "faiss", tiny_backbone)
    make(where)
    before = snapshot(where)
    res = run("info", "--index-dir", str(where))
    assert res.returncode == 0, res.stderr
    assert json.loads(res.stdout)["chunks"] == n
    res = run("search", "--index-dir", str(where), "river", "-k", "2", "--filter", "lang=fr")
    assert res.returncode == 0, res.stderr
    langs = [json.loads(line)["metadata"]["lang"] for line in res.stdout.splitlines()]
    assert langs and set(langs) == {"fr"}
    one_line_error(run("delete", "--index-dir", str(where), "--source", "b.txt"), "cannot write")
    assert snapshot(where) == before


def test_edge_on_a_read_only_index_says_what_to_do(tmp_path, enc, tiny_backbone, corpus, read_only):
    make, run = read_only
    where = tmp_path / "idx"
    build(where, enc, corpus, "qdrant", tiny_backbone)
    make(where)
    before = snapshot(where)
    one_line_error(run("info", "--index-dir", str(where)), "read-only", "--backend faiss")
    one_line_error(run("search", "--index-dir", str(where), "river"), "read-only", "copy the index folder")
    assert snapshot(where) == before


def test_unwritable_index_folder_is_one_line(tmp_path, tiny_backbone, corpus, read_only):
    make, run = read_only
    parent = tmp_path / "locked"
    parent.mkdir()
    make(parent)
    res = run("index", str(corpus), "--index-dir", str(parent / "idx"), "--backbone", tiny_backbone)
    one_line_error(res, "cannot write to", "permission denied")
    assert snapshot(parent) == {}


# ------------------------------------------------------------------------- credentials go only where named


class _Recorder(http.server.BaseHTTPRequestHandler):
    """Answers 401 to everything, keeping each request's headers."""

    seen: list[dict] = []

    def do_GET(self):  # noqa: N802 - http.server's naming
        type(self).seen.append(dict(self.headers))
        body = b'{"status": {"error": "unauthorized"}}'
        self.send_response(401)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, *args):
        pass


@pytest.fixture()
def listener():
    _Recorder.seen = []
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), _Recorder)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{server.server_address[1]}", _Recorder.seen
    server.shutdown()
    server.server_close()


def _server_index(where: Path, url: str) -> None:
    """An index folder whose manifest points to a Qdrant server (as one from elsewhere might)."""
    where.mkdir()
    (where / MANIFEST).write_text(
        json.dumps(
            {
                "backend": "qdrant",
                "url": url,
                "collection": "genret-x",
                "faiss_index": "Flat",
                "encoder": {"kind": "teacher", "model": "all-MiniLM-L6-v2", "dim": 384},
                "encoder_spec": {"kind": "teacher"},
                "task": "retrieval",
                "chunk_size": 256,
                "overlap": 32,
            }
        )
    )


def test_api_key_never_goes_to_a_url_from_a_manifest(tmp_path, listener, monkeypatch):
    url, seen = listener
    _server_index(tmp_path / "idx", url)
    monkeypatch.setenv("QDRANT_API_KEY", "s3cret")
    monkeypatch.delenv("GENRET_URL", raising=False)
    res = runner.invoke(app, ["info", "--index-dir", str(tmp_path / "idx")])
    one_line_error(res, "refused", "--url")
    assert seen and not [h for h in seen if "s3cret" in json.dumps(h)]
    seen.clear()
    res = runner.invoke(app, ["info", "--index-dir", str(tmp_path / "idx"), "--url", url])  # named: sent
    assert res.exit_code == 1 and seen and all(h.get("api-key") == "s3cret" for h in seen)
    seen.clear()
    monkeypatch.setenv("GENRET_URL", url)
    runner.invoke(app, ["info", "--index-dir", str(tmp_path / "idx")])
    assert seen and all(h.get("api-key") == "s3cret" for h in seen)


def test_api_key_over_plain_http_only_to_this_machine(monkeypatch):
    from genretrieval.errors import GenRetError
    from genretrieval.stores.qdrant_server import api_key_for

    monkeypatch.delenv("GENRET_ALLOW_INSECURE_KEY", raising=False)
    assert api_key_for("http://localhost:6333", "k", True) == "k"
    assert api_key_for("http://[::1]:6333", "k", True) == "k"
    assert api_key_for("https://qdrant.example.com", "k", True) == "k"
    assert api_key_for("https://qdrant.example.com", "k", False) is None  # from a manifest
    with pytest.raises(GenRetError, match="GENRET_ALLOW_INSECURE_KEY=1"):
        api_key_for("http://10.1.2.3:6333", "k", True)
    assert api_key_for("http://10.1.2.3:6333", None, True) is None  # no key, nothing to refuse
    monkeypatch.setenv("GENRET_ALLOW_INSECURE_KEY", "1")
    assert api_key_for("http://10.1.2.3:6333", "k", True) == "k"


def test_insecure_key_is_refused_before_connecting(tmp_path, monkeypatch):
    import genretrieval.stores.qdrant_server as server

    monkeypatch.setattr(server, "QdrantClient", lambda **kw: pytest.fail(f"connected with {kw}"))
    monkeypatch.setenv("QDRANT_API_KEY", "s3cret")
    monkeypatch.delenv("GENRET_ALLOW_INSECURE_KEY", raising=False)
    _server_index(tmp_path / "idx", "http://10.1.2.3:6333")
    res = runner.invoke(app, ["info", "--index-dir", str(tmp_path / "idx"), "--url", "http://10.1.2.3:6333"])
    one_line_error(res, "refusing to send QDRANT_API_KEY over plain http", "GENRET_ALLOW_INSECURE_KEY")


# ------------------------------------------------------------------------- one line instead of a traceback


# A complete manifest of a teacher-encoder FAISS index, for damaging one part at a time.
_GOOD = (
    '{"backend": "faiss", "url": null, "collection": "c", "faiss_index": "Flat", "encoder": {"kind": "teacher", '
    '"dim": 384}, "task": "retrieval", "chunk_size": 256, "overlap": 32, "encoder_spec": {"kind": "teacher"}}'
)


@pytest.mark.parametrize(
    "content, message",
    [
        ("", "empty file"),
        ("{}", "incomplete manifest"),
        (
            '{"backend": "faiss", "url": null, "collection": "c", "faiss_index": "Flat", "encoder": {"dim": 384}, '
            '"task": "retrieval", "chunk_size": 256, "overlap": 32}',
            "no encoder_spec",
        ),
        ("[1, 2]", "not a JSON object"),
        (_GOOD.replace('"kind": "teacher"}', '"kind": "teacher", "junk": 1}'), "unknown encoder setting 'junk'"),
        (
            _GOOD.replace('"kind": "teacher"}', '"kind": "teacher"}, "store_options": {"shards": 2}'),
            "unknown store option 'shards'",
        ),
        (_GOOD.replace('"backend": "faiss"', '"backend": "faiss", "format_version": 2'), "format version 2, newer"),
        (_GOOD.replace('"backend": "faiss"', '"backend": "milvus"'), "unknown backend 'milvus'"),
    ],
)
def test_damaged_manifest_is_one_line(tmp_path, content, message):
    (tmp_path / "idx").mkdir()
    (tmp_path / "idx" / MANIFEST).write_text(content)
    before = snapshot(tmp_path / "idx")
    for args in (["info"], ["search", "q"], ["delete", "--id", "x"]):
        one_line_error(runner.invoke(app, [*args, "--index-dir", str(tmp_path / "idx")]), message, "--rebuild")
    assert snapshot(tmp_path / "idx") == before


@pytest.mark.parametrize("backend, damaged", [("qdrant", "store.json"), ("faiss", "docstore.sqlite")])
def test_damaged_store_is_one_line(tmp_path, fake_enc, fake_backbone, corpus, backend, damaged):
    where = tmp_path / "idx"
    build(where, fake_enc, corpus, backend, fake_backbone)
    (where / STORE / damaged).write_text("{not json" if damaged.endswith(".json") else "garbage" * 100)
    before = snapshot(where)
    one_line_error(runner.invoke(app, ["info", "--index-dir", str(where)]), "corrupt")
    assert snapshot(where) == before


@pytest.mark.parametrize("url", ["not a url", "http://host:notaport", "ftp://host"])
def test_bad_url_is_one_line_before_loading_a_model(tmp_path, corpus, url, monkeypatch):
    import genretrieval.encoder

    monkeypatch.setattr(genretrieval.encoder, "load_encoder", lambda *a, **k: pytest.fail("model loaded"))
    monkeypatch.setenv("GENRET_URL", url)
    res = runner.invoke(app, ["index", str(corpus), "--index-dir", str(tmp_path / "idx")])
    one_line_error(res, "invalid Qdrant URL")
    assert not (tmp_path / "idx").exists()


# ------------------------------------------------------------------------- an index remembers how it was built


def test_manifest_options_are_defaults_and_conflicts_refused_early(tmp_path, fake_backbone, corpus, monkeypatch):
    where = str(tmp_path / "idx")
    res = runner.invoke(
        app,
        [
            "index",
            str(corpus),
            "--index-dir",
            where,
            "--backend",
            "faiss",
            "--backbone",
            fake_backbone,
            "--dtype",
            "fp32",
            "--chunk-size",
            "16",
            "--overlap",
            "4",
        ],
    )
    assert res.exit_code == 0, res.output
    res = runner.invoke(app, ["index", str(corpus), "--index-dir", where, "--dtype", "fp32"])  # no options needed
    assert res.exit_code == 0 and "0 added" in res.stderr, res.output
    import genretrieval.encoder

    monkeypatch.setattr(genretrieval.encoder, "load_encoder", lambda *a, **k: pytest.fail("model loaded"))
    before = snapshot(tmp_path / "idx")
    for args, message in [
        (["--backend", "qdrant"], "built with --backend faiss"),
        (["--encoder", "teacher"], "built with --encoder gen"),
        (["--chunk-size", "32"], "built with --chunk-size 16"),
        (["--backbone", "smollm2-135m-instruct"], "--backbone"),
        (["--text-field", "body"], "built with --text-field text"),
        (["--url", "http://127.0.0.1:6333"], "not one on a Qdrant server"),
        (["--faiss-index", "HNSW32"], "built with --faiss-index Flat"),
    ]:
        res = runner.invoke(app, ["index", str(corpus), "--index-dir", where, *args])
        one_line_error(res, message, "--rebuild")
    assert snapshot(tmp_path / "idx") == before
    monkeypatch.undo()
    res = runner.invoke(app, ["index", str(corpus), "--index-dir", where, "--backbone", fake_backbone])  # the same
    assert res.exit_code == 0, res.output


def test_rebuild_removes_only_the_index_entries(tmp_path, fake_backbone, corpus):
    where = tmp_path / "idx"
    base = ["index", str(corpus), "--index-dir", str(where), "--backbone", fake_backbone, "--dtype", "fp32"]
    assert runner.invoke(app, [*base, "--backend", "faiss", "--chunk-size", "16", "--overlap", "4"]).exit_code == 0
    (where / "notes.txt").write_text("mine")
    res = runner.invoke(app, [*base, "--rebuild", "--chunk-size", "64"])
    assert res.exit_code == 0, res.output
    manifest = json.loads((where / MANIFEST).read_text())
    assert (manifest["backend"], manifest["chunk_size"], manifest["overlap"]) == ("faiss", 64, 4)  # kept the rest
    assert (where / "notes.txt").read_text() == "mine"


def test_source_filter_as_typed_and_why_nothing_matched(tmp_path, fake_backbone, corpus, monkeypatch):
    where = tmp_path / "idx"
    res = runner.invoke(
        app,
        [
            "index",
            str(corpus),
            "--index-dir",
            str(where),
            "--backend",
            "faiss",
            "--backbone",
            fake_backbone,
            "--dtype",
            "fp32",
            "--chunk-size",
            "16",
            "--overlap",
            "4",
        ],
    )
    assert res.exit_code == 0, res.output
    monkeypatch.chdir(tmp_path)
    res = runner.invoke(app, ["search", "--index-dir", "idx", "river", "--filter", "source=corpus/sub/c.jsonl"])
    hits = [json.loads(line) for line in res.stdout.splitlines()]
    assert res.exit_code == 0 and hits and {h["source"] for h in hits} == {"sub/c.jsonl"}
    res = runner.invoke(app, ["search", "--index-dir", "idx", "river", "--filter", "source=nope.md"])
    assert res.exit_code == 0 and not res.stdout and "relative to the corpus root" in res.stderr
    res = runner.invoke(app, ["delete", "--index-dir", "idx", "--source", "corpus/b.txt"])
    assert res.exit_code == 0 and "deleted 1 chunk from" in res.stderr


def test_missing_index_name_says_where_it_looked(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    res = runner.invoke(app, ["search", "--index", "nosuch", "q"])
    one_line_error(res, f"no index named 'nosuch' at {tmp_path / 'indexes' / 'nosuch'}", "--index-dir")
    assert not (tmp_path / "indexes").exists()
