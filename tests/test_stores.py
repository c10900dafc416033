"""Vector stores: one congruence suite over FAISS, Qdrant Edge and qdrant-client, plus backend specifics."""

from __future__ import annotations

import json
import subprocess
import sys
import textwrap

import numpy as np
import pytest

from genretrieval.errors import GenRetError
from genretrieval.stores import StoreHit, VectorStore, open_store

DIM = 64
N = 2000
K = 10
BACKENDS = ["faiss", "qdrant-edge", "qdrant-memory"]


def clustered(n: int, dim: int, clusters: int, seed: int) -> np.ndarray:
    """Unit vectors drawn around ``clusters`` random centres, float32 (n, dim)."""
    rng = np.random.default_rng(seed)
    centres = rng.standard_normal((clusters, dim))
    x = centres[rng.integers(0, clusters, n)] + 0.6 * rng.standard_normal((n, dim))
    return (x / np.linalg.norm(x, axis=1, keepdims=True)).astype(np.float32)


@pytest.fixture(scope="module")
def corpus():
    """2,000 clustered 64-d points with payloads, and 20 queries near them."""
    vectors = clustered(N, DIM, 40, seed=0)
    ids = [f"doc-{i}" for i in range(N)]
    payloads = [{"source": f"file{i % 10}.md", "lang": "en" if i % 3 else "de", "chunk": i} for i in range(N)]
    rng = np.random.default_rng(1)
    q = vectors[rng.choice(N, 20, replace=False)] + 0.3 * rng.standard_normal((20, DIM)).astype(np.float32)
    queries = (q / np.linalg.norm(q, axis=1, keepdims=True)).astype(np.float32)
    return ids, vectors, payloads, queries


def exact_topk(vectors: np.ndarray, queries: np.ndarray, k: int, mask: np.ndarray | None = None):
    """Brute-force reference: (indices, scores) of the top k per query, optionally among ``mask`` rows."""
    sims = queries.astype(np.float64) @ vectors.astype(np.float64).T
    if mask is not None:
        sims[:, ~mask] = -np.inf
    order = np.argsort(-sims, axis=1)[:, :k]
    return order, np.take_along_axis(sims, order, axis=1)


def open_backend(kind: str, tmp_path, create: bool = True, **opts) -> VectorStore:
    """Open one of the three stores under test."""
    if kind == "faiss":
        return open_store("faiss", tmp_path / "faiss", DIM, create=create, **opts)
    if kind == "qdrant-edge":
        return open_store("qdrant", tmp_path / "edge", DIM, create=create, **opts)
    return open_store("qdrant", None, DIM, url=":memory:", create=create, **opts)


@pytest.fixture(params=BACKENDS)
def store(request, tmp_path, corpus):
    """A store of each kind holding the corpus."""
    ids, vectors, payloads, _ = corpus
    s = open_backend(request.param, tmp_path)
    s.upsert(ids, vectors, payloads)
    yield s
    s.close()


def assert_same_as_reference(hits: list[list[StoreHit]], ids, order, scores) -> None:
    """Every query's hits are the reference ids (in order) with the reference scores within 1e-4."""
    assert len(hits) == len(order)
    for row_hits, row_order, row_scores in zip(hits, order, scores):
        finite = np.isfinite(row_scores)
        assert [h.id for h in row_hits] == [ids[i] for i in row_order[finite]]
        np.testing.assert_allclose([h.score for h in row_hits], row_scores[finite], atol=1e-4)


# ---------------------------------------------------------------------------------- congruence suite


def test_backends_agree(tmp_path, corpus):
    ids, vectors, payloads, queries = corpus
    results = {}
    for kind in BACKENDS:
        s = open_backend(kind, tmp_path)
        s.upsert(ids, vectors, payloads)
        results[kind] = (s.search(queries, K), s.search(queries, K, where={"source": "file7.md"}))
        s.close()
    reference = results.pop("faiss")
    for kind, got in results.items():
        for ref_rows, got_rows in zip(reference, got):
            for ref, row in zip(ref_rows, got_rows):
                assert [h.id for h in row] == [h.id for h in ref], kind
                np.testing.assert_allclose([h.score for h in row], [h.score for h in ref], atol=1e-4)
                assert [h.payload for h in row] == [h.payload for h in ref], kind


def test_is_a_vector_store(store):
    assert isinstance(store, VectorStore)
    assert store.dim == DIM
    assert store.count() == N


def test_exact_search_matches_reference(store, corpus):
    ids, vectors, payloads, queries = corpus
    order, scores = exact_topk(vectors, queries, K)
    hits = store.search(queries, K)
    assert_same_as_reference(hits, ids, order, scores)
    first = hits[0][0]
    assert first.payload == payloads[order[0, 0]]


def test_filtered_search(store, corpus):
    ids, vectors, payloads, queries = corpus
    where = {"source": ["file1.md", "file2.md"], "lang": "en"}
    mask = np.array([p["source"] in where["source"] and p["lang"] == "en" for p in payloads])
    order, scores = exact_topk(vectors, queries, K, mask)
    hits = store.search(queries, K, where=where)
    assert_same_as_reference(hits, ids, order, scores)
    for row in hits:
        assert all(h.payload["source"] in where["source"] and h.payload["lang"] == "en" for h in row)


def test_integer_filter_and_rare_value(store, corpus):
    ids, vectors, _, queries = corpus
    hits = store.search(queries[:2], K, where={"chunk": [5, 17]})
    assert [sorted(h.id for h in row) for row in hits] == [["doc-17", "doc-5"]] * 2
    order, scores = exact_topk(vectors[[5, 17]], queries[:2], 2)
    np.testing.assert_allclose([[h.score for h in row] for row in hits], scores, atol=1e-4)


def test_list_payload_values_match_any_element(store):
    vecs = clustered(3, DIM, 1, seed=5)
    store.upsert(["t1", "t2", "t3"], vecs, [{"tags": ["a", "b"]}, {"tags": "b"}, {"tags": ["c"]}])
    assert sorted(store.ids(where={"tags": "b"})) == ["t1", "t2"]
    assert sorted(store.ids(where={"tags": ["a", "c"]})) == ["t1", "t3"]
    assert {h.id for h in store.search(vecs, 5, where={"tags": "a"})[2]} == {"t1"}


def test_upsert_replaces(store, corpus):
    ids, vectors, payloads, queries = corpus
    store.upsert(["doc-7"], queries[:1], [{"source": "new.md", "lang": "fr"}])
    assert store.count() == N
    top = store.search(queries[:1], 1)[0][0]
    assert top.id == "doc-7"
    assert top.score == pytest.approx(1.0, abs=1e-4)
    assert store.get(["doc-7"]) == {"doc-7": {"source": "new.md", "lang": "fr"}}
    assert "doc-7" not in store.ids(where={"source": payloads[7]["source"]})
    assert store.ids(where={"lang": "fr"}) == ["doc-7"]


def test_delete_by_id_and_filter(store, corpus):
    ids, vectors, payloads, queries = corpus
    assert store.delete(ids=["doc-0", "doc-1", "missing"]) == 2
    assert store.count() == N - 2
    assert store.get(["doc-0", "doc-2"]).keys() == {"doc-2"}
    n_file3 = sum(p["source"] == "file3.md" for p in payloads)
    assert store.delete(where={"source": "file3.md"}) == n_file3
    assert store.count() == N - 2 - n_file3
    assert store.ids(where={"source": "file3.md"}) == []
    # ids and where together: only the listed ids that match.
    assert store.delete(ids=["doc-4", "doc-5"], where={"source": "file4.md"}) == 1
    assert "doc-5" in store.get(["doc-5"])
    gone = {"doc-0", "doc-1", "doc-4"} | {i for i, p in zip(ids, payloads) if p["source"] == "file3.md"}
    mask = np.array([i not in gone for i in ids])
    order, scores = exact_topk(vectors, queries, K, mask)
    assert_same_as_reference(store.search(queries, K), ids, order, scores)
    assert store.delete(ids=[]) == 0
    with pytest.raises(GenRetError, match="needs ids or a where"):
        store.delete()
    with pytest.raises(GenRetError, match="needs ids or a where"):  # an empty filter is no filter
        store.delete(where={})
    assert store.count() == N - 3 - n_file3


def test_ids_get_count(store, corpus):
    ids, _, payloads, _ = corpus
    assert sorted(store.ids()) == sorted(ids)
    expected = sorted(i for i, p in zip(ids, payloads) if p["lang"] == "de")
    assert sorted(store.ids(where={"lang": "de"})) == expected
    assert store.get(["doc-3", "nope"]) == {"doc-3": payloads[3]}
    assert store.get([]) == {}


def test_unknown_filter_field(store, corpus):
    _, _, _, queries = corpus
    message = r"^no field 'author' in this index; known fields: chunk, lang, source$"
    with pytest.raises(GenRetError, match=message):
        store.search(queries, K, where={"author": "x"})
    with pytest.raises(GenRetError, match="no field 'author'"):
        store.ids(where={"author": "x"})
    with pytest.raises(GenRetError, match="no field 'author'"):
        store.delete(where={"author": "x"})


def test_bad_input(store, corpus):
    _, vectors, _, queries = corpus
    with pytest.raises(GenRetError, match=r"shape \(n, 64\)"):
        store.search(queries[:, :10], K)
    with pytest.raises(GenRetError, match="same id twice"):
        store.upsert(["a", "a"], vectors[:2], [{}, {}])
    with pytest.raises(GenRetError, match="reserved"):
        store.upsert(["a"], vectors[:1], [{"_id": "b"}])
    with pytest.raises(GenRetError, match="k must be"):
        store.search(queries, 0)
    with pytest.raises(GenRetError, match="must be a str, int or bool"):
        store.search(queries, K, where={"source": 1.5})
    assert store.count() == N


@pytest.mark.parametrize("kind", BACKENDS)
def test_empty_store(kind, tmp_path, corpus):
    s = open_backend(kind, tmp_path)
    assert s.count() == 0
    assert s.search(corpus[3][:2], K) == [[], []]
    assert s.ids() == []
    s.close()


# ---------------------------------------------------------------------------------- persistence


@pytest.mark.parametrize("kind", ["faiss", "qdrant-edge"])
def test_persistence_round_trip(kind, tmp_path, corpus):
    ids, vectors, payloads, queries = corpus
    s = open_backend(kind, tmp_path)
    s.upsert(ids, vectors, payloads)
    s.delete(where={"source": "file5.md"})
    s.upsert(["doc-9"], queries[:1], [{"source": "moved.md", "lang": "en"}])
    before = s.search(queries, K)
    before_filtered = s.search(queries, K, where={"lang": "de"})
    count = s.count()
    s.close()
    s = open_backend(kind, tmp_path, create=False)
    assert s.count() == count
    assert s.search(queries, K) == before
    assert s.search(queries, K, where={"lang": "de"}) == before_filtered
    assert s.get(["doc-9"]) == {"doc-9": {"source": "moved.md", "lang": "en"}}
    with pytest.raises(GenRetError, match="no field 'author'"):
        s.search(queries, K, where={"author": "x"})
    s.close()
    with pytest.raises(GenRetError, match="holds 64-d vectors, not 32-d"):
        if kind == "faiss":
            open_store("faiss", tmp_path / "faiss", 32, create=False)
        else:
            open_store("qdrant", tmp_path / "edge", 32, create=False)


@pytest.mark.parametrize("kind", ["faiss", "qdrant-edge"])
def test_missing_store_without_create(kind, tmp_path):
    with pytest.raises(GenRetError, match="no .* store at"):
        open_backend(kind, tmp_path, create=False)


def test_missing_memory_collection_without_create():
    with pytest.raises(GenRetError, match="no Qdrant collection 'genret'"):
        open_store("qdrant", None, DIM, url=":memory:", create=False)


# ---------------------------------------------------------------------------------- FAISS specifics


def test_faiss_hnsw_refuses_delete_and_replace(tmp_path, corpus):
    ids, vectors, payloads, queries = corpus
    s = open_store("faiss", tmp_path / "h", DIM, faiss_index="HNSW32", create=True, ef_search=128)
    s.upsert(ids, vectors, payloads)
    with pytest.raises(GenRetError, match="cannot delete"):
        s.delete(ids=["doc-1"])
    with pytest.raises(GenRetError, match="cannot replace"):
        s.upsert(["doc-1"], vectors[:1], [{}])
    assert s.delete(ids=["not-there"]) == 0
    s.upsert(["extra"], queries[:1], [{"source": "x.md"}])
    assert s.count() == N + 1
    assert s.search(queries[:1], 1)[0][0].id == "extra"
    order, _ = exact_topk(vectors, queries, K)
    found = s.search(queries, K + 1)
    recall = np.mean([len({ids[i] for i in o} & {h.id for h in f}) / K for o, f in zip(order, found)])
    assert recall > 0.9
    s.close()


def test_faiss_ivf_trains_and_keeps_recall(tmp_path, corpus):
    ids, vectors, payloads, queries = corpus
    s = open_store(
        "faiss",
        tmp_path / "ivf",
        DIM,
        faiss_index="IVF32,Flat",
        create=True,
        nprobe=8,
        train_size=1000,
        exact_filter_max=50,
    )
    # Below train_size the points wait in an exact staging index.
    s.upsert(ids[:500], vectors[:500], payloads[:500])
    order, scores = exact_topk(vectors[:500], queries, K)
    assert_same_as_reference(s.search(queries, K), ids[:500], order, scores)
    s.flush()
    assert (tmp_path / "ivf" / "staging.faiss").exists()
    s.upsert(ids[500:], vectors[500:], payloads[500:])
    s.flush()
    assert (tmp_path / "ivf" / "index.faiss").exists() and not (tmp_path / "ivf" / "staging.faiss").exists()
    order, _ = exact_topk(vectors, queries, K)
    found = s.search(queries, K)
    recall = np.mean([len({ids[i] for i in o} & {h.id for h in f}) / K for o, f in zip(order, found)])
    assert recall >= 0.8
    # Filtered: a small subset is searched exactly, a large one by over-fetching.
    small = s.search(queries, K, where={"chunk": list(range(40))})
    order, scores = exact_topk(vectors, queries, K, np.arange(N) < 40)
    assert_same_as_reference(small, ids, order, scores)
    large = s.search(queries, K, where={"lang": "en"})
    assert all(len(row) == K and all(h.payload["lang"] == "en" for h in row) for row in large)
    # IVF can delete and replace.
    assert s.delete(ids=["doc-1", "doc-2"]) == 2
    s.upsert(["doc-3"], queries[:1], [{"source": "r.md"}])
    assert s.search(queries[:1], 1)[0][0].id == "doc-3"
    assert s.count() == N - 2
    s.close()
    s = open_store("faiss", tmp_path / "ivf", DIM, create=False)
    assert s.count() == N - 2 and s.search(queries[:1], 1)[0][0].id == "doc-3"
    s.close()


def test_faiss_invalid_factory_string(tmp_path):
    with pytest.raises(GenRetError, match="invalid faiss index string 'IVFbogus'"):
        open_store("faiss", tmp_path / "bad", DIM, faiss_index="IVFbogus", create=True)


CRASH_SCRIPT = textwrap.dedent(
    """
    import os, signal, sys
    import numpy as np
    from genretrieval.stores import open_store
    path, data = sys.argv[1], np.load(sys.argv[2])
    s = open_store("faiss", path, data.shape[1], create=True)
    ids = [f"doc-{i}" for i in range(1000)]
    s.upsert(ids, data[:1000], [{"source": f"f{i % 4}"} for i in range(1000)])
    s.flush()
    s.upsert([f"new-{i}" for i in range(300)], data[1000:1300], [{"source": "new"}] * 300)
    s.delete(ids=ids[:100])
    s.upsert(ids[100:150], data[1300:1350], [{"source": "replaced"}] * 50)
    s._write_index()  # the index file is replaced ...
    os.kill(os.getpid(), signal.SIGKILL)  # ... and the process dies before the SQLite commit
    """
)


def test_faiss_crash_between_index_write_and_commit(tmp_path, corpus):
    _, vectors, _, queries = corpus
    np.save(tmp_path / "data.npy", vectors)
    proc = subprocess.run([sys.executable, "-c", CRASH_SCRIPT, tmp_path / "s", tmp_path / "data.npy"])
    assert proc.returncode == -9
    s = open_store("faiss", tmp_path / "s", DIM, create=False)
    # Committed state: doc-0..999. The index holds the uncommitted state. Reconciled: points present in
    # both, i.e. doc-150..999 (new-* were never committed; doc-0..149 lost their old vectors).
    survivors = [f"doc-{i}" for i in range(150, 1000)]
    assert sorted(s.ids()) == sorted(survivors)
    assert s.count() == len(survivors)
    order, scores = exact_topk(vectors[150:1000], queries, K)
    assert_same_as_reference(s.search(queries, K), survivors, order, scores)
    s.close()
    s = open_store("faiss", tmp_path / "s", DIM, create=False)
    assert s.count() == len(survivors)
    s.close()


def _file_hashes(folder) -> dict:
    import hashlib

    return {p.name: hashlib.sha256(p.read_bytes()).hexdigest() for p in sorted(folder.iterdir())}


def test_faiss_reader_after_a_crash_reads_committed_state_and_writes_nothing(tmp_path, corpus):
    _, vectors, _, queries = corpus
    np.save(tmp_path / "data.npy", vectors)
    proc = subprocess.run([sys.executable, "-c", CRASH_SCRIPT, tmp_path / "s", tmp_path / "data.npy"])
    assert proc.returncode == -9
    before = _file_hashes(tmp_path / "s")
    s = open_store("faiss", tmp_path / "s", DIM, create=False, read_only=True)
    survivors = [f"doc-{i}" for i in range(150, 1000)]  # committed rows that still have their vectors
    assert s.count() == len(survivors)
    order, scores = exact_topk(vectors[150:1000], queries, K)
    assert_same_as_reference(s.search(queries, K), survivors, order, scores)
    for write in (lambda: s.upsert(["x"], vectors[:1], [{}]), lambda: s.delete(ids=["doc-500"]), s.flush):
        with pytest.raises(GenRetError, match="open for reading only"):
            write()
    s.close()
    assert _file_hashes(tmp_path / "s") == before  # no "repair": only a writer may do that


def test_read_only_stores_refuse_changes(tmp_path, corpus):
    ids, vectors, payloads, _ = corpus
    with pytest.raises(ValueError):
        open_store("qdrant", tmp_path / "edge", DIM, create=True, read_only=True)
    s = open_store("qdrant", tmp_path / "edge", DIM, create=True)
    s.upsert(ids[:50], vectors[:50], payloads[:50])
    s.close()
    s = open_store("qdrant", tmp_path / "edge", DIM, create=False, read_only=True)
    assert s.count() == 50 and s.search(vectors[:1], 1, where={"lang": "de"})[0][0].payload["lang"] == "de"
    with pytest.raises(GenRetError, match="open for reading only"):
        s.delete(ids=ids[:1])
    s.close()


def test_edge_shard_open_elsewhere_is_one_line(tmp_path, corpus):
    ids, vectors, payloads, _ = corpus
    s = open_store("qdrant", tmp_path / "edge", DIM, create=True)
    s.upsert(ids[:10], vectors[:10], payloads[:10])
    s.flush()
    code = (
        f"from genretrieval.stores import open_store; open_store('qdrant', {str(tmp_path / 'edge')!r}, {DIM}, "
        "create=False)"
    )
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert proc.returncode == 1 and "open in another process" in proc.stderr and "WouldBlock" not in proc.stderr
    s.close()


def test_corrupt_edge_metadata_is_one_line(tmp_path):
    s = open_store("qdrant", tmp_path / "edge", DIM, create=True)
    s.close()
    (tmp_path / "edge" / "store.json").write_text("{oops")
    with pytest.raises(GenRetError, match="corrupt store metadata"):
        open_store("qdrant", tmp_path / "edge", DIM, create=False)


def test_faiss_hnsw_reconcile_rebuilds(tmp_path, corpus):
    ids, vectors, payloads, queries = corpus
    s = open_store("faiss", tmp_path / "h", DIM, faiss_index="HNSW16", create=True)
    s.upsert(ids[:300], vectors[:300], payloads[:300])
    s.flush()
    s.upsert(ids[300:400], vectors[300:400], payloads[300:400])
    s._write_index()
    s._db.close()  # dies without committing: the rows of ids[300:400] are rolled back
    s = open_store("faiss", tmp_path / "h", DIM, create=False)
    assert s.count() == 300
    assert sorted(s.ids()) == sorted(ids[:300])
    assert {h.id for row in s.search(queries, K) for h in row} <= set(ids[:300])
    s.close()


# ---------------------------------------------------------------------------------- factory


def test_open_store_errors(tmp_path):
    with pytest.raises(GenRetError, match="unknown store backend"):
        open_store("milvus", tmp_path, DIM, create=True)
    with pytest.raises(GenRetError, match="needs a directory"):
        open_store("faiss", None, DIM, create=True)
    with pytest.raises(GenRetError, match="needs a directory"):
        open_store("qdrant", None, DIM, create=True)


def test_unreachable_qdrant_server():
    with pytest.raises(GenRetError, match=r"^cannot reach Qdrant at http://127\.0\.0\.1:9: [^\n]+$"):
        open_store("qdrant", None, DIM, url="http://127.0.0.1:9", create=True, timeout=2)


def test_missing_engine_hint(monkeypatch):
    monkeypatch.setitem(sys.modules, "qdrant_edge", None)
    monkeypatch.delitem(sys.modules, "genretrieval.stores.qdrant_edge", raising=False)
    with pytest.raises(GenRetError, match=r"pip install 'qdrant-edge-py"):
        open_store("qdrant", "/nonexistent", DIM, create=True)


def test_qdrant_server_splits_uploads_under_request_limit(corpus, monkeypatch):
    ids, vectors, payloads, _ = corpus
    s = open_store("qdrant", None, DIM, url=":memory:", create=True, max_request_bytes=20_000)
    batches = []
    upsert = s._client.upsert

    def counting_upsert(collection, points, **kw):
        batches.append(len(points))
        return upsert(collection, points, **kw)

    monkeypatch.setattr(s._client, "upsert", counting_upsert)
    s.upsert(ids[:200], vectors[:200], payloads[:200])
    assert s.count() == 200 and sum(batches) == 200 and len(batches) > 1
    # Each request's estimated JSON size (20 bytes per float + 100 + payload) stays under the limit.
    sizes = [20 * DIM + 100 + len(json.dumps(p)) for p in payloads[:200]]
    starts = np.cumsum([0, *batches])
    assert all(sum(sizes[a:b]) <= 20_000 for a, b in zip(starts, starts[1:]))
    s.close()


def test_edge_builds_hnsw_on_optimize_not_on_every_flush(tmp_path):
    vectors = clustered(600, DIM, 20, seed=3)
    ids = [f"p{i}" for i in range(len(vectors))]
    s = open_store("qdrant", tmp_path / "e", DIM, create=True, exact_threshold=200)
    s.upsert(ids, vectors, [{"source": f"s{i % 7}"} for i in range(len(ids))])
    s.flush()
    exact = [[h.id for h in hits] for hits in s.search(vectors[:20], 10)]
    s.optimize()
    approx = [[h.id for h in hits] for hits in s.search(vectors[:20], 10)]
    recall = np.mean([len(set(a) & set(e)) / 10 for a, e in zip(approx, exact)])
    assert recall >= 0.9
    s.close()
    reopened = open_store("qdrant", tmp_path / "e", DIM, create=False, exact_threshold=200)
    assert reopened.count() == 600
    reopened.close()


@pytest.mark.parametrize("kind", ["qdrant-edge", "qdrant-memory"])
def test_qdrant_stores_share_filters_indexes_and_deletes(kind, tmp_path):
    """Both Qdrant engines run stores/qdrant_common.py's logic: any-of and mixed-type filters, an index per newly
    filtered field, deletes by filter and the delete guard."""
    from genretrieval.stores.qdrant_common import QdrantBase

    store = open_backend(kind, tmp_path)
    assert isinstance(store, QdrantBase)
    payloads = [{"s": "a", "n": 1, "m": 2}, {"s": "b", "n": 2, "m": "x"}, {"s": "a", "n": 3, "m": "y"}, {"n": 1}]
    store.upsert(["p1", "p2", "p3", "p4"], clustered(4, DIM, 1, seed=3), payloads)
    assert sorted(store.ids(where={"s": "a"})) == ["p1", "p3"]
    assert sorted(store.ids(where={"n": [1, 3]})) == ["p1", "p3", "p4"]
    assert sorted(store.ids(where={"m": [2, "x"]})) == ["p1", "p2"]  # mixed types: one condition per value
    assert {"s", "n", "m"} <= store._indexed
    assert store.get(["p2", "nope"]) == {"p2": payloads[1]}
    assert store.delete(ids=["p1", "p2"], where={"s": "b"}) == 1 and store.count() == 3
    with pytest.raises(GenRetError, match="needs ids or a where"):
        store.delete()
    store.close()
