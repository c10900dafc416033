"""`genret serve`: the HTTP API against a real uvicorn on 127.0.0.1 (a thread, or a `genret serve` process), with
a real HTTP client, on the tiny random backbone; and `genret search --server`."""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import threading
import time
from concurrent.futures import ThreadPoolExecutor

import pytest
from conftest import write_corpus

httpx = pytest.importorskip("httpx")
pytest.importorskip("fastapi")
uvicorn = pytest.importorskip("uvicorn")

from typer.testing import CliRunner  # noqa: E402

from genretrieval import GenRetError  # noqa: E402
from genretrieval.cli import app as cli  # noqa: E402
from genretrieval.index import Index  # noqa: E402
from genretrieval.serve import LOOPBACK_HOSTS, Limits, create_app  # noqa: E402

TOKEN = "test-token-0123456789abcdef"
AUTH = {"Authorization": f"Bearer {TOKEN}"}
LIMITS = Limits(max_k=20, max_batch=4, max_documents=8, max_body=20_000)
TIMEOUT = 60.0
runner = CliRunner()


def _build(path, enc, backbone):
    """A small FAISS index whose manifest names the tiny backbone (so `genret serve` can load it)."""
    idx = Index.create(
        path,
        enc,
        "faiss",
        chunk_size=16,
        overlap=4,
        encoder_spec={"kind": "gen", "backbone": backbone, "adapter": None},
    )
    idx.add(write_corpus(path.parent / f"{path.name}-corpus"), progress=False)
    return idx


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class Server:
    """uvicorn serving ``app`` in a thread, on a socket bound here to a free port of 127.0.0.1."""

    def __init__(self, app):
        self.sock = socket.socket()
        self.sock.bind(("127.0.0.1", 0))
        self.url = f"http://127.0.0.1:{self.sock.getsockname()[1]}"
        self.server = uvicorn.Server(uvicorn.Config(app, log_level="warning", lifespan="off"))
        self.thread = threading.Thread(target=self.server.run, kwargs={"sockets": [self.sock]}, daemon=True)

    def __enter__(self) -> "Server":
        self.thread.start()
        deadline = time.monotonic() + TIMEOUT
        while not self.server.started and self.thread.is_alive() and time.monotonic() < deadline:
            time.sleep(0.02)
        if not self.server.started:
            self.__exit__()
            raise RuntimeError("uvicorn did not start")
        return self

    def __exit__(self, *exc) -> None:
        self.server.should_exit = True
        self.thread.join(timeout=TIMEOUT)
        self.sock.close()
        assert not self.thread.is_alive(), "uvicorn did not stop"


@pytest.fixture(scope="module")
def writer(tmp_path_factory, enc, tiny_backbone):
    """The index, open for writing (as `genret serve` opens it when a token is set)."""
    idx = _build(tmp_path_factory.mktemp("serve") / "idx", enc, tiny_backbone)
    yield idx
    idx.close()


@pytest.fixture(scope="module")
def api(writer):
    """A server with a token over the writable index; a client for it."""
    app = create_app(writer, token=TOKEN, limits=LIMITS, allowed_hosts=LOOPBACK_HOSTS)
    with Server(app) as server, httpx.Client(base_url=server.url, timeout=TIMEOUT) as client:
        yield client


@pytest.fixture(scope="module")
def reader_api(writer, enc):
    """A server without a token over the same index, open for reading (as `genret serve` without a token)."""
    idx = Index.open(writer.path, enc)
    try:
        with (
            Server(create_app(idx, limits=LIMITS)) as server,
            httpx.Client(base_url=server.url, timeout=TIMEOUT) as client,
        ):
            yield client
    finally:
        idx.close()


def _expected(index, queries, k=5, where=None):
    return [[h.to_dict() for h in hits] for hits in index.search(queries, k=k, where=where)]


def test_health_and_info(api, reader_api, writer):
    health = api.get("/health")
    assert health.status_code == 200 and health.json() == {"status": "ok", "index": str(writer.path), "writes": True}
    assert reader_api.get("/health").json()["writes"] is False
    info = api.get("/info").json()
    assert info["chunks"] == writer.count() > 0 and info["backend"] == "faiss"
    assert info["encoder"] == writer.manifest.encoder and info["store"] == "FaissStore"
    assert info["server"] == {
        "writes": True,
        "limits": {"max_k": 20, "max_batch": 4, "max_documents": 8, "max_body": 20_000},
    }


def test_search_matches_the_library(api, writer):
    r = api.post("/search", json={"query": "the capital of France", "k": 5})
    assert r.status_code == 200
    body = r.json()
    assert body["query"] == "the capital of France"
    assert body["hits"] == _expected(writer, ["the capital of France"])[0] and len(body["hits"]) == 5
    assert api.post("/search", json={"query": "bread", "k": 2}).json()["hits"] == _expected(writer, ["bread"], 2)[0]


def test_batch_and_filter(api, writer):
    queries = ["paris", "the river flows", "bread and water"]
    r = api.post("/search/batch", json={"queries": queries, "k": 3})
    assert r.status_code == 200
    assert r.json() == {"results": [{"query": q, "hits": h} for q, h in zip(queries, _expected(writer, queries, 3))]}
    fr = api.post("/search", json={"query": "river", "k": 5, "filter": {"lang": "fr"}}).json()["hits"]
    assert fr == _expected(writer, ["river"], 5, {"lang": "fr"})[0]
    assert fr and all(h["metadata"]["lang"] == "fr" and h["source"] == "sub/c.jsonl" for h in fr)
    both = api.post("/search/batch", json={"queries": ["river"], "k": 5, "filter": {"lang": ["en", "fr"]}}).json()
    assert {h["metadata"]["lang"] for h in both["results"][0]["hits"]} == {"en", "fr"}
    only_b = api.post("/search", json={"query": "river", "filter": {"source": "b.txt"}}).json()["hits"]
    assert [h["source"] for h in only_b] == ["b.txt"]
    unknown = api.post("/search", json={"query": "river", "filter": {"nope": "x"}})
    assert unknown.status_code == 400 and "no field 'nope'" in unknown.json()["error"]


def test_add_search_replace_delete(api, reader_api, writer):
    doc = {"id": "n1", "title": "Water", "text": "how to bake bread with water", "topic": "baking"}
    r = api.post("/documents", json=[doc], headers=AUTH)
    assert r.status_code == 200, r.text
    added = r.json()
    assert (added["added"], added["updated"], added["unchanged"], added["deleted"]) == (1, 0, 0, 0)
    assert added["documents"] == [{"id": "api#n1", "chunks": ["api#n1::0"]}] and added["total"] == writer.count()
    hits = api.post("/search", json={"query": "bake bread", "filter": {"topic": "baking"}}).json()["hits"]
    assert [(h["id"], h["title"], h["source"], h["metadata"]) for h in hits] == [
        ("api#n1::0", "Water", "api", {"topic": "baking"})
    ]
    # The server that opened the index for reading catches up with the writer.
    assert [
        h["id"]
        for h in reader_api.post("/search", json={"query": "bread", "filter": {"topic": "baking"}}).json()["hits"]
    ] == ["api#n1::0"]
    # Posting it again changes nothing; a new text replaces it; {"documents": [...]} is taken too.
    again = api.post("/documents", json={"documents": [doc]}, headers=AUTH).json()
    assert (again["added"], again["updated"], again["unchanged"]) == (0, 0, 1)
    changed = api.post("/documents", json=[{**doc, "text": "bread is made of water"}], headers=AUTH).json()
    assert changed["updated"] == 1 and changed["total"] == added["total"]
    # A document without an id gets one from its content; a source of its own.
    anon = api.post(
        "/documents", json=[{"text": "hello world", "source": "notes", "metadata": {"n": 3}}], headers=AUTH
    ).json()
    (anon_doc,) = anon["documents"]
    assert anon_doc["id"].startswith("notes#") and anon["total"] == added["total"] + 1
    gone = api.request("DELETE", "/documents", json={"doc_ids": ["api#n1"]}, headers=AUTH)
    assert gone.status_code == 200 and gone.json() == {"deleted": 1, "total": added["total"]}
    assert api.post("/search", json={"query": "bread", "filter": {"topic": "baking"}}).json()["hits"] == []
    by_source = api.request("DELETE", "/documents", json={"source": "notes"}, headers=AUTH).json()
    assert by_source == {"deleted": 1, "total": added["total"] - 1} and writer.count() == added["total"] - 1
    nothing = api.request("DELETE", "/documents", json={}, headers=AUTH)
    assert nothing.status_code == 400 and "nothing to delete" in nothing.json()["error"]


def test_delete_by_chunk_id(api, writer):
    ids = api.post("/documents", json=[{"id": "gone", "text": "the city river"}], headers=AUTH).json()
    (chunk,) = ids["documents"][0]["chunks"]
    r = api.request("DELETE", "/documents", json={"ids": [chunk]}, headers=AUTH)
    assert r.json()["deleted"] == 1 and not writer.store.get([chunk])


def test_writes_need_the_token(api, reader_api):
    doc = [{"text": "hello"}]
    for method, path, body in (("POST", "/documents", doc), ("DELETE", "/documents", {"source": "api"})):
        refused = reader_api.request(method, path, json=body, headers=AUTH)  # no token configured there
        assert refused.status_code == 403 and "GENRET_API_TOKEN" in refused.json()["error"]
        missing = api.request(method, path, json=body)
        assert missing.status_code == 401 and missing.headers["www-authenticate"] == "Bearer"
        assert "bearer token" in missing.json()["error"]
        wrong = api.request(method, path, json=body, headers={"Authorization": f"Bearer {TOKEN}x"})
        assert wrong.status_code == 401 and wrong.json()["error"]
        basic = api.request(method, path, json=body, headers={"Authorization": f"Basic {TOKEN}"})
        assert basic.status_code == 401
    assert api.post("/documents", json=doc, headers=AUTH).status_code == 200
    assert api.request("DELETE", "/documents", json={"doc_ids": ["api#x"]}, headers=AUTH).status_code == 200


def test_limits(api):
    over_k = api.post("/search", json={"query": "paris", "k": 21})
    assert over_k.status_code == 400 and "limit of 20" in over_k.json()["error"]
    zero_k = api.post("/search", json={"query": "paris", "k": 0})
    assert zero_k.status_code == 400 and "k must be >= 1" in zero_k.json()["error"]
    batch = api.post("/search/batch", json={"queries": ["a", "b", "c", "d", "e"]})
    assert batch.status_code == 400 and "5 queries" in batch.json()["error"] and "limit of 4" in batch.json()["error"]
    docs = api.post("/documents", json=[{"text": f"doc {i}"} for i in range(9)], headers=AUTH)
    assert docs.status_code == 400 and "9 documents" in docs.json()["error"]
    big = api.post("/search", json={"query": "paris " * 5000})
    assert big.status_code == 413 and "20000 bytes" in big.json()["error"]

    def chunks():  # no Content-Length: counted as it streams
        for _ in range(30):
            yield b" " * 1000

    streamed = api.post("/search", content=chunks(), headers={"Content-Type": "application/json"})
    assert streamed.status_code == 413 and streamed.json()["error"]
    assert api.get("/health").status_code == 200  # and the server is still fine


def test_bad_requests_get_json_errors(api):
    bad_json = api.post("/search", content=b'{"query": "paris",', headers={"Content-Type": "application/json"})
    assert bad_json.status_code == 400 and bad_json.json()["error"].startswith("invalid JSON")
    missing = api.post("/search", json={"k": 3})
    assert missing.status_code == 422 and "query: Field required" in missing.json()["error"]
    typo = api.post("/search", json={"query": "paris", "top_k": 3})
    assert typo.status_code == 422 and "top_k" in typo.json()["error"]
    wrong_type = api.post("/search/batch", json={"queries": "paris"})
    assert wrong_type.status_code == 422 and wrong_type.json()["error"]
    bad_filter = api.post("/search", json={"query": "paris", "filter": {"lang": 1.5}})
    assert bad_filter.status_code == 422 and "must be a string, an integer or a boolean" in bad_filter.json()["error"]
    empty = api.post("/search", json={"query": "  "})
    assert empty.status_code == 400 and empty.json() == {"error": "empty query"}
    bad_task = api.post("/search", json={"query": "paris", "task": "nope"})
    assert bad_task.status_code == 400 and "nope" in bad_task.json()["error"]
    form = api.post("/search", content=b'{"query": "paris"}', headers={"Content-Type": "text/plain"})
    assert form.status_code == 415 and "application/json" in form.json()["error"]
    nested = api.post("/documents", json=[{"text": "x", "deep": {"a": 1}}], headers=AUTH)
    assert nested.status_code == 422 and "deep: Value error, must be a string, a number" in nested.json()["error"]
    reserved = api.post("/documents", json=[{"text": "x", "chunk_no": 3}], headers=AUTH)
    assert reserved.status_code == 400 and "'chunk_no' is reserved" in reserved.json()["error"]
    no_text = api.post("/documents", json=[{"id": "e", "text": " "}], headers=AUTH)
    assert no_text.status_code == 400 and "has no text" in no_text.json()["error"]
    twice = api.post("/documents", json=[{"id": 1, "text": "a"}, {"id": 1, "text": "b"}], headers=AUTH)
    assert twice.status_code == 400 and "given twice" in twice.json()["error"]
    assert api.get("/nowhere").status_code == 404 and api.get("/nowhere").json() == {"error": "Not Found"}
    assert api.get("/search").status_code == 405 and "error" in api.get("/search").json()
    rebound = api.get("/health", headers={"Host": "evil.example:80"})  # DNS rebinding
    assert rebound.status_code == 400 and "does not answer to host" in rebound.json()["error"]
    assert api.get("/health", headers={"Host": "localhost"}).status_code == 200


def test_openapi_lists_the_routes(api):
    spec = api.get("/openapi.json").json()
    routes = {(path, method) for path, item in spec["paths"].items() for method in item}
    assert routes >= {
        ("/health", "get"),
        ("/info", "get"),
        ("/search", "post"),
        ("/search/batch", "post"),
        ("/documents", "post"),
        ("/documents", "delete"),
    }
    assert "HTTPBearer" in spec["components"]["securitySchemes"]


def test_concurrent_requests(api, writer):
    queries = ["paris", "river", "bread", "water", "the city", "sea", "capital", "france"]
    expected = [_expected(writer, [q], 3)[0] for q in queries]  # one at a time, as the server encodes them

    def one(q):
        return api.post("/search", json={"query": q, "k": 3}).json()["hits"]

    with ThreadPoolExecutor(4) as pool:
        got = list(pool.map(one, queries, timeout=TIMEOUT))
    assert got == expected


def test_cli_search_server(api, writer):
    url = str(api.base_url)
    res = runner.invoke(cli, ["search", "--server", url, "the river", "-k", "3"])
    assert res.exit_code == 0, res.output
    expected = _expected(writer, ["the river"], 3)[0]
    assert res.stdout.splitlines() == [json.dumps(h, ensure_ascii=False) for h in expected]
    many = runner.invoke(cli, ["search", "--server", url, "paris", "bread", "-k", "2", "--filter", "lang=en"])
    lines = [json.loads(line) for line in many.stdout.splitlines()]
    assert [(row.pop("query"), row) for row in lines] == [
        (q, h)
        for q, hits in zip(["paris", "bread"], _expected(writer, ["paris", "bread"], 2, {"lang": ["en"]}))
        for h in hits
    ]
    plain = runner.invoke(cli, ["search", "--server", url, "paris", "-k", "2", "--plain"])
    top = _expected(writer, ["paris"], 2)[0][0]
    assert plain.stdout.splitlines()[0] == "# paris" and plain.stdout.splitlines()[1].startswith(
        f"  1. {top['score']:.4f}  {top['source']} [{top['chunk_no']}]"
    )
    too_many = runner.invoke(cli, ["search", "--server", url, "paris", "-k", "50"])
    assert too_many.exit_code == 1 and "limit of 20" in too_many.stderr
    local = runner.invoke(cli, ["search", "--server", url, "--index-dir", str(writer.path), "paris"])
    assert local.exit_code == 1 and "--index-dir applies to a local search" in local.stderr
    port = _free_port()
    down = runner.invoke(cli, ["search", "--server", f"http://127.0.0.1:{port}", "paris"])
    assert down.exit_code == 1 and "cannot reach the server" in down.stderr
    bad = runner.invoke(cli, ["search", "--server", "ftp://x", "paris"])
    assert bad.exit_code == 1 and "invalid server URL" in bad.stderr


def _wait_healthy(proc: subprocess.Popen, url: str) -> None:
    deadline = time.monotonic() + 180
    while time.monotonic() < deadline and proc.poll() is None:
        try:
            if httpx.get(url + "/health", timeout=5).status_code == 200:
                return
        except httpx.TransportError:
            pass
        time.sleep(0.2)
    proc.kill()
    out, err = proc.communicate(timeout=TIMEOUT)
    raise AssertionError(f"genret serve did not come up (exit {proc.returncode}): {err.decode()[-2000:]}")


def test_genret_serve_process_holds_the_write_lock(tmp_path, enc, tiny_backbone):
    """The real command: with a token it opens the index for writing (the lock keeps `genret index` out while it
    runs), serves, and on SIGTERM (as on Ctrl-C) stops gracefully and lets go of the index."""
    where = tmp_path / "idx"
    _build(where, enc, tiny_backbone).close()
    port = _free_port()
    url = f"http://127.0.0.1:{port}"
    proc = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "genretrieval.cli",
            "serve",
            "--index-dir",
            str(where),
            "--port",
            str(port),
            "--dtype",
            "fp32",
            "--max-k",
            "7",
        ],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        env={**os.environ, "GENRET_API_TOKEN": TOKEN, "GENRET_PROGRESS": "0"},
    )
    try:
        _wait_healthy(proc, url)
        with pytest.raises(GenRetError, match=f"is being written by pid {proc.pid}"):
            Index.open(where, with_encoder=False, writable=True)
        assert httpx.get(url + "/info", timeout=TIMEOUT).json()["server"]["limits"]["max_k"] == 7
        r = httpx.post(url + "/documents", json=[{"id": "p", "text": "hello world"}], headers=AUTH, timeout=TIMEOUT)
        assert r.status_code == 200 and r.json()["added"] == 1
        res = runner.invoke(cli, ["search", "--server", url, "hello world", "-k", "1", "--filter", "source=api"])
        assert res.exit_code == 0 and json.loads(res.stdout)["id"] == "api#p::0"
    finally:
        proc.send_signal(signal.SIGTERM)
        try:
            out, err = proc.communicate(timeout=TIMEOUT)
        except subprocess.TimeoutExpired:
            proc.kill()
            out, err = proc.communicate(timeout=TIMEOUT)
    assert proc.returncode == 0, err.decode()[-2000:]
    assert "writes enabled (bearer token)" in err.decode() and err.decode().rstrip().endswith("server stopped")
    with Index.open(where, with_encoder=False, writable=True) as idx:  # the lock is free again
        assert idx.store.get(["api#p::0"])


def test_missing_extra_is_one_line():
    code = (
        "import sys; sys.modules['fastapi'] = None; from genretrieval.cli import main; "
        "sys.argv = ['genret', 'serve', '--index-dir', 'nowhere']; main()"
    )
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=TIMEOUT)
    assert proc.returncode == 1
    assert proc.stderr.strip() == (
        "error: the server needs the serve extra: pip install 'genretrieval[serve]' (FastAPI and uvicorn)"
    )
