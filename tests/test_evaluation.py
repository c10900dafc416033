"""Tests for genretrieval.evaluation: metrics, loaders on the real data, BRIGHT with a fixture, runners, reports."""

from __future__ import annotations

import json
import re
import sys
import zlib
from pathlib import Path

import numpy as np
import pytest

from genretrieval.errors import GenRetError
from genretrieval.evaluation import (
    BM25Retriever,
    DenseRetriever,
    EvalResult,
    RefusalCheck,
    RetrievalSet,
    advbench_metrics,
    evaluate_set,
    load_advbench_ir,
    load_beir,
    load_benign_queries,
    load_bright,
    load_bright_queries,
    refusal_check,
    roc_auc,
    run_advbench_ir,
    run_beir,
    run_bright,
    trec_metrics,
    write_report,
)
from genretrieval.evaluation.metrics import advbench_query_metrics
from genretrieval.evaluation.refusal import REFUSAL_TEXT, default_teacher, refusal_scores
from genretrieval.evaluation.retrieval import best_k, corpus_key, top_k
from genretrieval.evaluation.runner import as_retriever, query_subset, system_label
from genretrieval.instructions import BRIGHT_SUBSETS

DATA = Path(__file__).resolve().parents[1] / ".." / "shared" / "data"
BRIGHT_DOCS = Path(__file__).resolve().parent / "fixtures" / "bright_docs"
needs_data = pytest.mark.skipif(not DATA.is_dir(), reason="offline data ../shared/data not present")


class HashEncoder:
    """Hashing bag-of-words encoder satisfying the Encoder protocol; records every call."""

    dim = 512

    def __init__(self):
        self.calls: list[tuple[str, str, int]] = []

    def identity(self):
        return {"name": "hash-bow", "dim": self.dim}

    def _encode(self, kind, texts, task, normalize):
        self.calls.append((kind, task, len(texts)))
        out = np.zeros((len(texts), self.dim), dtype=np.float32)
        for row, text in enumerate(texts):
            for token in re.findall(r"\w+", text.lower()):
                out[row, zlib.crc32(token.encode()) % self.dim] += 1.0
        if normalize:
            out /= np.maximum(np.linalg.norm(out, axis=1, keepdims=True), 1e-12)
        return out

    def encode_queries(self, texts, task="retrieval", batch_size=16, normalize=True, progress=False):
        return self._encode("query", texts, task, normalize)

    def encode_documents(self, texts, task="retrieval", batch_size=16, normalize=True, progress=False):
        return self._encode("document", texts, task, normalize)


class FixedRetriever:
    """A Retriever returning preset rankings, to test what the runner does with them."""

    def __init__(self, rankings):
        self.rankings = rankings
        self.asked_k = None

    def identity(self):
        return {"name": "fixed"}

    def index(self, documents, task="retrieval"):
        pass

    def search(self, queries, k, task="retrieval"):
        self.asked_k = k
        return [r[:k] for r in self.rankings]


class FakeTeacher:
    """Embeds every text as the first basis vector: the refusal direction of the refusal check."""

    def __init__(self, dim=512):
        self.dim, self.texts = dim, []

    def identity(self):
        return {"name": "fake-teacher", "dim": self.dim}

    def encode_documents(self, texts, task="retrieval", batch_size=16, normalize=True, progress=False):
        self.texts += list(texts)
        out = np.zeros((len(texts), self.dim), dtype=np.float32)
        out[:, 0] = 1.0
        return out

    encode_queries = encode_documents


class RefusalOracle(HashEncoder):
    """Queries among ``harmful`` embed near the refusal direction (basis vector 0), others away from it
    (``sign=-1`` swaps the two); a seeded per-text jitter keeps the scores distinct."""

    def __init__(self, harmful, sign=1.0):
        super().__init__()
        self.harmful, self.sign = set(harmful), sign

    def identity(self):
        return {"name": "refusal-oracle", "sign": self.sign}

    def encode_queries(self, texts, task="retrieval", batch_size=16, normalize=True, progress=False):
        out = self._encode("query", texts, task, normalize)
        for row, text in enumerate(texts):
            jitter = np.random.default_rng(zlib.crc32(text.encode())).uniform(0.5, 1.5)
            out[row, 0] = self.sign * jitter * (1.0 if text in self.harmful else -1.0)
        return out / np.linalg.norm(out, axis=1, keepdims=True)


# --- metrics ---------------------------------------------------------------------------------------------------


def test_advbench_query_metrics_by_hand():
    harmful = np.array([True, True, True, False, False, False])
    # ranking: benign, someone else's harmful chunk, benign, own chunk, ...
    m = advbench_query_metrics([3, 2, 4, 0, 5, 1], harmful, own=[0, 1], ks=(1, 2, 4, 6))
    assert (m["accuracy@1"], m["accuracy@2"], m["accuracy@4"], m["accuracy@6"]) == (0, 0, 1, 1)
    assert (m["any_harm@1"], m["any_harm@2"], m["any_harm@4"]) == (0, 1, 1)
    assert m["malicious_frequency@1"] == 0
    assert m["malicious_frequency@2"] == 0.5
    assert m["malicious_frequency@4"] == 0.5
    assert m["malicious_frequency@6"] == 0.5


def test_advbench_metrics_mean_and_ids():
    harmful = np.array([True, True, False, False])
    result = advbench_metrics(
        [[0, 2], [2, 3], [3, 1]], harmful, own=[[0], [1], [1]], query_ids=["a", "b", "c"], ks=(1, 2)
    )
    assert result["per_query"]["a"]["accuracy@1"] == 1.0
    assert result["per_query"]["c"]["accuracy@1"] == 0.0 and result["per_query"]["c"]["accuracy@2"] == 1.0
    assert result["mean"]["accuracy@1"] == pytest.approx(1 / 3)
    assert result["mean"]["accuracy@2"] == pytest.approx(2 / 3)
    assert result["mean"]["malicious_frequency@2"] == pytest.approx((0.5 + 0 + 0.5) / 3)


def test_roc_auc_by_hand():
    # pairs (positive, negative): 0.9 and 0.8 beat both negatives (4), 0.5 ties 0.5 (1/2) and beats 0.1 (1)
    assert roc_auc([0.9, 0.8, 0.5], [0.5, 0.1]) == pytest.approx(5.5 / 6)
    assert roc_auc([3, 4], [1, 2]) == 1.0 and roc_auc([1, 2], [3, 4]) == 0.0
    assert roc_auc([1, 1], [1, 1, 1]) == 0.5
    with pytest.raises(ValueError):
        roc_auc([], [1.0])
    with pytest.raises(ValueError):
        roc_auc([np.nan], [1.0])


def test_roc_auc_matches_pairwise_count_with_ties():
    rng = np.random.default_rng(3)
    pos, neg = rng.integers(0, 6, 40), rng.integers(0, 5, 30)  # many ties
    pairs = (pos[:, None] > neg[None, :]).sum() + 0.5 * (pos[:, None] == neg[None, :]).sum()
    assert roc_auc(pos, neg) == pytest.approx(pairs / (40 * 30))


def test_trec_metrics_by_hand():
    qrels = {"q1": {"d2": 1}, "q2": {"d1": 1, "d9": 1}}
    run = {"q1": {"d1": 3.0, "d2": 2.0, "d3": 1.0}, "q2": {"d1": 1.0}}
    m = trec_metrics(run, qrels)["per_query"]
    assert m["q1"]["ndcg@10"] == pytest.approx(1 / np.log2(3))
    assert m["q1"]["mrr@10"] == pytest.approx(0.5)
    assert m["q1"]["recall@10"] == 1.0
    assert m["q2"]["recall@10"] == 0.5
    assert m["q2"]["ndcg@10"] == pytest.approx(1 / (1 + 1 / np.log2(3)))


def test_mrr_is_cut_at_10_and_missing_queries_count_as_zero():
    run = {"q": {f"d{i:02d}": 100.0 - i for i in range(20)}}
    result = trec_metrics(run, {"q": {"d10": 1}, "unanswered": {"d1": 1}, "unjudged": {}})
    assert result["per_query"]["q"]["mrr@10"] == 0.0
    assert result["per_query"]["q"]["recall@100"] == 1.0
    assert result["per_query"]["unanswered"] == {
        "ndcg@10": 0.0,
        "recall@10": 0.0,
        "recall@100": 0.0,
        "mrr@10": 0.0,
    }
    assert "unjudged" not in result["per_query"]
    assert result["mean"]["recall@100"] == 0.5


def test_trec_metrics_match_pytrec_eval():
    import pytrec_eval

    rng = np.random.default_rng(0)
    qrels = {f"q{q}": {f"d{d}": int(rng.integers(1, 3)) for d in rng.choice(200, 5, replace=False)} for q in range(30)}
    run = {q: {f"d{d}": float(s) for d, s in enumerate(rng.normal(size=200))} for q in qrels}
    ours = trec_metrics(run, qrels)["per_query"]
    full = pytrec_eval.RelevanceEvaluator(qrels, {"ndcg_cut.10", "recall.10", "recall.100"}).evaluate(run)
    cut = {q: dict(sorted(d.items(), key=lambda x: -x[1])[:10]) for q, d in run.items()}
    rr = pytrec_eval.RelevanceEvaluator(qrels, {"recip_rank"}).evaluate(cut)
    for q in qrels:
        assert ours[q]["ndcg@10"] == pytest.approx(full[q]["ndcg_cut_10"])
        assert ours[q]["recall@10"] == pytest.approx(full[q]["recall_10"])
        assert ours[q]["recall@100"] == pytest.approx(full[q]["recall_100"])
        assert ours[q]["mrr@10"] == pytest.approx(rr[q]["recip_rank"])


# --- ranking and the dense retriever -----------------------------------------------------------------------------


def test_top_k_matches_full_sort_in_any_block_size():
    rng = np.random.default_rng(1)
    q, d = rng.normal(size=(7, 16)).astype(np.float32), rng.normal(size=(50, 16)).astype(np.float32)
    expected = np.argsort(-(q @ d.T), axis=1, kind="stable")[:, :5]
    for block_bytes in (1, 4 * 50 * 3, 1 << 27):
        indices, scores = top_k(q, d, 5, max_block_bytes=block_bytes)
        assert indices.shape == (7, 5) and scores.dtype == np.float32
        np.testing.assert_array_equal(indices, expected)
    assert top_k(q, d, 500)[0].shape == (7, 50)


def test_best_k_breaks_ties_by_index():
    indices, scores = best_k(np.array([[1.0, 2.0, 2.0, 0.0, 2.0]]), 3)
    assert indices.tolist() == [[1, 2, 4]] and scores.tolist() == [[2.0, 2.0, 2.0]]


def test_dense_retriever_caches_corpus_vectors(tmp_path):
    encoder = HashEncoder()
    docs = ["red apples grow on trees", "the ocean is deep and blue", "bananas are yellow fruit"]
    first = DenseRetriever(encoder, cache_dir=tmp_path)
    first.index(docs, task="retrieval")
    assert len(list(tmp_path.glob("*.npy"))) == 1
    encoded = len(encoder.calls)

    again = DenseRetriever(encoder, cache_dir=tmp_path)
    again.index(list(reversed(docs)), task="retrieval")
    assert len(encoder.calls) == encoded, "a reordered corpus must come from the cache"
    np.testing.assert_array_equal(again.embeddings, first.embeddings[::-1])
    assert again.search(["blue ocean"], 1)[0][0][0] == 1

    DenseRetriever(encoder, cache_dir=tmp_path).index(docs, task="advbench-ir")
    assert encoder.calls[-1] == ("document", "advbench-ir", 3) and len(list(tmp_path.glob("*.npy"))) == 2
    DenseRetriever(encoder, cache=False, cache_dir=tmp_path / "unused").index(docs)
    assert not (tmp_path / "unused").exists()


def test_corpus_key_depends_on_identity_task_and_texts_not_order():
    key = corpus_key({"name": "a"}, "retrieval", ["x", "y"], True)
    assert key == corpus_key({"name": "a"}, "retrieval", ["y", "x"], True)
    assert key != corpus_key({"name": "b"}, "retrieval", ["x", "y"], True)
    assert key != corpus_key({"name": "a"}, "advbench-ir", ["x", "y"], True)
    assert key != corpus_key({"name": "a"}, "retrieval", ["x", "z"], True)
    assert key != corpus_key({"name": "a"}, "retrieval", ["x", "y"], False)


def test_default_cache_dir_follows_genret_home(tmp_path, monkeypatch):
    from genretrieval.evaluation.retrieval import default_cache_dir

    monkeypatch.setenv("GENRET_HOME", str(tmp_path))
    assert default_cache_dir() == tmp_path / "cache" / "embeddings"


def test_as_retriever_and_query_subset():
    assert isinstance(as_retriever(HashEncoder()), DenseRetriever)
    fixed = FixedRetriever([])
    assert as_retriever(fixed) is fixed
    with pytest.raises(GenRetError):
        as_retriever(object())
    assert query_subset(10, None) == list(range(10))
    assert query_subset(10, 3) == [0, 3, 6] == query_subset(10, 3)
    with pytest.raises(GenRetError):
        query_subset(10, 0)


def test_system_label():
    assert system_label(HashEncoder()) == "hash-bow"
    assert system_label(HashEncoder(), "mine") == "mine"
    assert system_label(FixedRetriever([])) == "fixed"

    class Gen(HashEncoder):
        def identity(self):
            return {"kind": "gen", "backbone": "Qwen2.5-0.5B"}

    assert system_label(Gen()) == "gen:Qwen2.5-0.5B"


def test_bm25_retriever_ranks_matching_document_first():
    bm25 = BM25Retriever()
    bm25.index(["the cat sat on the mat", "dogs were running in the park", "a cat and a dog"])
    results = bm25.search(["running dogs", "the"], k=2)
    assert results[0][0][0] == 1 and len(results[0]) == 2
    assert [s for _, s in results[1]] == [0.0, 0.0]


# --- excluded ids ------------------------------------------------------------------------------------------------


def test_excluded_documents_are_removed_before_scoring():
    data = RetrievalSet(
        name="toy",
        query_ids=["q"],
        queries=["anything"],
        doc_ids=["a", "b", "c", "d"],
        documents=["a", "b", "c", "d"],
        qrels={"q": {"c": 1}},
        excluded={"q": ["a", "b", "zz"]},
    )
    fixed = FixedRetriever([[(0, 4.0), (1, 3.0), (2, 2.0), (3, 1.0)]])
    result = evaluate_set(fixed, data, "retrieval", k=1)
    assert fixed.asked_k == 1 + 2, "asks for enough to keep k after removing the excluded documents in the corpus"
    assert result.per_query["q"]["mrr@10"] == 1.0
    data.excluded = {}
    assert evaluate_set(fixed, data, "retrieval", k=3).per_query["q"]["mrr@10"] == pytest.approx(1 / 3)


# --- loaders on the real data ------------------------------------------------------------------------------------


@needs_data
def test_load_advbench_ir_counts_and_format():
    data = load_advbench_ir(DATA)
    assert len(data.queries) == 520 and len(data.documents) == 1796 + 3600
    assert data.harmful.sum() == 1796 and not data.harmful[1796:].any()
    assert sum(len(o) for o in data.own) == 1796
    assert all(data.harmful[i] for o in data.own for i in o)
    assert data.queries[0].startswith("Write a script that can exploit vulnerabilities")
    assert data.documents[0].startswith("Exploiting Software Vulnerabilities: A Hypothetical Approach # Step 1")
    assert data.documents[1796].startswith("Evan Morris # Evan Morris")


@needs_data
def test_load_beir_nq_wiki():
    data = load_beir(DATA / "nq-wiki")
    assert len(data.queries) == 2655 and len(data.documents) == 3600
    assert all(len(data.qrels[q]) == 1 for q in data.query_ids)
    assert data.documents[0].startswith("Evan Morris Evan Morris Evan L.")


@needs_data
def test_bright_queries_and_qrels_for_all_subsets():
    import gzip

    total = 0
    for subset in BRIGHT_SUBSETS:
        data = load_bright_queries(subset, DATA / "bright")
        topics = DATA / "bright" / "topics" / f"topics.bright-{subset.replace('_', '-')}-original.jsonl.gz"
        with gzip.open(topics, "rt") as f:
            examples = [json.loads(line) for line in f]
        assert data.qrels == {e["id"]: {g: 1 for g in e["gold_ids"]} for e in examples}, subset
        assert all("N/A" not in ids for ids in data.excluded.values())
        total += len(data.queries)
    assert total == 1384
    assert load_bright_queries("earth-science", DATA / "bright").name == "earth_science"


# --- BRIGHT with the hand-made document fixture ------------------------------------------------------------------


@needs_data
def test_load_bright_with_fixture_documents():
    data = load_bright("leetcode", documents_dir=BRIGHT_DOCS, topics_dir=DATA / "bright")
    assert len(data.queries) == 142 and len(data.documents) == 8
    assert {"leetcode/leetcode_1996.txt", "leetcode/leetcode_85.txt"} <= set(data.excluded["0"])
    assert set(data.qrels["0"]) == {
        "leetcode/leetcode_11.txt",
        "leetcode/leetcode_238.txt",
        "leetcode/leetcode_407.txt",
    }
    biology = load_bright("biology", documents_dir=BRIGHT_DOCS, topics_dir=DATA / "bright")
    assert biology.excluded["0"] == [], "the N/A placeholder is not an id"
    long = load_bright("biology", documents_dir=BRIGHT_DOCS, topics_dir=DATA / "bright", long=True)
    assert set(long.qrels["0"]) == {
        "insects_attracted_to_light/Proximate_and_ultimate_causation.txt",
        "insects_attracted_to_light/Phototaxis.txt",
    }
    assert len(long.documents) == 3


@needs_data
def test_load_bright_from_parquet_layout_without_topics(tmp_path):
    import gzip

    import pyarrow as pa
    import pyarrow.parquet as pq

    rows = [json.loads(line) for line in (BRIGHT_DOCS / "documents" / "biology.jsonl").read_text().splitlines()]
    (tmp_path / "documents").mkdir()
    pq.write_table(pa.Table.from_pylist(rows), tmp_path / "documents" / "biology-00000-of-00001.parquet")
    with gzip.open(DATA / "bright" / "topics" / "topics.bright-biology-original.jsonl.gz", "rt") as f:
        examples = [json.loads(line) for line in f]
    (tmp_path / "examples").mkdir()
    pq.write_table(pa.Table.from_pylist(examples), tmp_path / "examples" / "biology-00000-of-00001.parquet")
    from_parquet = load_bright("biology", documents_dir=tmp_path, topics_dir=None)
    from_topics = load_bright("biology", documents_dir=BRIGHT_DOCS, topics_dir=DATA / "bright")
    assert from_parquet.doc_ids == from_topics.doc_ids and from_parquet.documents == from_topics.documents
    assert from_parquet.qrels == from_topics.qrels and from_parquet.queries == from_topics.queries


@needs_data
def test_bright_errors_are_one_line(monkeypatch):
    with pytest.raises(GenRetError, match="unknown BRIGHT subset"):
        load_bright("chemistry", documents_dir=BRIGHT_DOCS)
    with pytest.raises(GenRetError, match="no long documents"):
        load_bright("leetcode", documents_dir=BRIGHT_DOCS, long=True)
    with pytest.raises(GenRetError, match="no BRIGHT documents for 'aops'"):
        load_bright("aops", documents_dir=BRIGHT_DOCS, topics_dir=DATA / "bright")
    with pytest.raises(GenRetError, match="folder not found"):
        load_bright("aops", documents_dir=BRIGHT_DOCS / "missing", topics_dir=DATA / "bright")
    monkeypatch.setitem(sys.modules, "datasets", None)
    with pytest.raises(GenRetError, match="pip install datasets") as e:
        load_bright("biology", documents_dir=None, topics_dir=DATA / "bright")
    assert "\n" not in str(e.value)


@needs_data
def test_run_bright_removes_excluded_ids_and_uses_subset_instructions():
    encoder = HashEncoder()
    result = run_bright(
        encoder, ["leetcode", "biology"], documents_dir=BRIGHT_DOCS, topics_dir=DATA / "bright", cache=False
    )
    assert result.benchmark == "bright" and set(result.subsets) == {"leetcode", "biology"}
    assert {task for _, task, _ in encoder.calls} == {"bright-leetcode", "bright-biology"}
    leetcode = result.subsets["leetcode"]
    assert leetcode.num_queries == 142 and leetcode.num_documents == 8
    # The two excluded restatements of query 0 would rank first; once removed, a gold document leads.
    assert leetcode.per_query["0"]["mrr@10"] == 1.0
    data = load_bright("leetcode", documents_dir=BRIGHT_DOCS, topics_dir=DATA / "bright")
    data.excluded = {}
    unfiltered = evaluate_set(HashEncoder(), data, "bright-leetcode", 1000, cache=False)
    assert unfiltered.per_query["0"]["mrr@10"] < 1.0
    means = [result.subsets[s].metrics["ndcg@10"] for s in ("leetcode", "biology")]
    assert result.metrics["ndcg@10"] == pytest.approx(np.mean(means))
    assert result.subsets["biology"].per_query["1"]["ndcg@10"] > 0


# --- runners end to end with the fake encoder --------------------------------------------------------------------


@needs_data
def test_run_beir_end_to_end_with_fake_encoder(tmp_path):
    encoder = HashEncoder()
    result = run_beir(encoder, DATA / "nq-wiki", max_queries=40, cache_dir=tmp_path)
    assert result.benchmark == "nq-wiki" and result.system == "hash-bow"
    assert result.num_queries == 40 == len(result.per_query) and result.num_documents == 3600
    assert set(result.metrics) == {"ndcg@10", "recall@10", "recall@100", "mrr@10"}
    assert result.metrics["recall@100"] >= result.metrics["recall@10"] > 0.3
    assert {(kind, task) for kind, task, _ in encoder.calls} == {
        ("document", "retrieval"),
        ("query", "retrieval"),
    }
    again = run_beir(encoder, DATA / "nq-wiki", max_queries=40, cache_dir=tmp_path)
    assert [c[0] for c in encoder.calls].count("document") == 1, "the corpus comes from the cache the second time"
    assert again.metrics == result.metrics


@needs_data
def test_run_advbench_ir_with_fake_encoder_and_report(tmp_path):
    encoder = HashEncoder()
    dense = run_advbench_ir(encoder, DATA, max_queries=20, cache=False, name="hash", refusal_teacher=FakeTeacher())
    assert {task for _, task, _ in encoder.calls} == {"advbench-ir"}
    assert dense.num_queries == 20 and dense.num_documents == 5396
    assert set(dense.metrics) == {
        f"{m}@{k}" for m in ("accuracy", "any_harm", "malicious_frequency") for k in (1, 5, 20, 100)
    }
    bm25 = run_advbench_ir(BM25Retriever(), DATA, max_queries=20)
    paths = write_report([dense, bm25], tmp_path, command="genret eval advbench-ir")
    table = paths["markdown"].read_text()
    assert "genret eval advbench-ir" in table and "| hash |" in table and "| bm25 |" in table
    assert "numpy" in table and "accuracy@5" in table
    saved = json.loads(paths["json"].read_text())
    assert saved["commands"] == ["genret eval advbench-ir"] and len(saved["results"]) == 2
    assert paths["png"].read_bytes()[:4] == b"\x89PNG"


# --- the refusal check -------------------------------------------------------------------------------------------


def test_refusal_scores_near_one_when_harmful_sit_nearer_the_refusal_and_near_zero_reversed():
    rng = np.random.default_rng(0)
    refusal = np.eye(8)[0]

    def vectors(n, toward):  # unit vectors whose cosine to the refusal is ``toward`` +- 0.05
        cos = np.clip(toward + rng.uniform(-0.05, 0.05, n), -1, 1)
        rest = rng.normal(size=(n, 7))
        rest *= (np.sqrt(1 - cos**2) / np.linalg.norm(rest, axis=1))[:, None]
        return np.column_stack([cos, rest])

    benign = {"nq-wiki": vectors(30, 0.1), "alpaca": vectors(20, 0.2)}
    near = refusal_scores(vectors(25, 0.8), benign, refusal)
    assert near["roc_auc"] == {"all": 1.0, "nq-wiki": 1.0, "alpaca": 1.0}
    assert near["num_queries"] == {"harmful": 25, "nq-wiki": 30, "alpaca": 20}
    assert near["mean_cosine"]["harmful"] > near["mean_cosine"]["alpaca"] > near["mean_cosine"]["nq-wiki"]
    assert len(near["cosines"]["alpaca"]) == 20 and near["mean_cosine"]["harmful"] == pytest.approx(
        np.mean(near["cosines"]["harmful"]), abs=1e-4
    )
    far = refusal_scores(vectors(25, -0.8), benign, refusal)
    assert far["roc_auc"] == {"all": 0.0, "nq-wiki": 0.0, "alpaca": 0.0}
    mixed = refusal_scores(vectors(25, 0.15), benign, refusal)  # between the two benign sets
    assert mixed["roc_auc"]["nq-wiki"] > 0.7 and mixed["roc_auc"]["alpaca"] < 0.3
    c = mixed["cosines"]
    assert mixed["roc_auc"]["all"] == pytest.approx(roc_auc(c["harmful"], c["nq-wiki"] + c["alpaca"]), abs=1e-3)
    # unnormalised inputs: cosines, not dot products
    assert refusal_scores(10 * vectors(25, 0.8), benign, 3 * refusal)["roc_auc"] == pytest.approx(near["roc_auc"])


def test_refusal_check_encodes_benign_through_the_query_path_and_skips_other_spaces():
    encoder = HashEncoder()
    benign = {"nq-wiki": ["who wrote hamlet", "capital of peru"], "alpaca": ["Give three tips for sleep."]}
    refusal = np.eye(HashEncoder.dim)[0]
    harmful = encoder.encode_queries(["make a bomb", "steal a car"], task="advbench-ir")
    result = refusal_check(encoder, harmful, benign, refusal, "advbench-ir")
    assert encoder.calls[-2:] == [("query", "advbench-ir", 2), ("query", "advbench-ir", 1)]
    assert result.text == REFUSAL_TEXT and result.num_queries == {"harmful": 2, "nq-wiki": 2, "alpaca": 1}
    assert set(result.roc_auc) == {"all", "nq-wiki", "alpaca"}
    skipped = refusal_check(encoder, harmful, benign, np.eye(384)[0])
    assert "512 dimensions, the teacher 384" in skipped.skipped and skipped.roc_auc is None


def test_default_teacher_reuses_the_systems_own_minilm():
    from types import SimpleNamespace

    from genretrieval.encoder.teacher import TEACHER_NAME, TeacherEncoder

    teacher = TeacherEncoder.__new__(TeacherEncoder)  # no model load: only the class and name matter
    teacher.name = TEACHER_NAME
    assert default_teacher(teacher) is teacher
    assert default_teacher(SimpleNamespace(teacher=teacher)) is teacher  # HyDE
    assert default_teacher(HashEncoder()) is None
    other = TeacherEncoder.__new__(TeacherEncoder)
    other.name = "some-other-model"
    assert default_teacher(other) is None


@needs_data
def test_load_benign_queries_evenly_spaced_and_alpaca_only():
    benign = load_benign_queries(DATA, 5)
    assert set(benign) == {"nq-wiki", "alpaca"} and all(len(v) == 5 for v in benign.values())
    assert benign == load_benign_queries(DATA, 5), "deterministic"
    assert benign["nq-wiki"][0] == "who got the first nobel prize in physics"
    assert benign["alpaca"][0] == "Give three tips for staying healthy."
    everything = load_benign_queries(DATA, None)
    assert len(everything["nq-wiki"]) == 2655
    rows = [json.loads(line) for line in (DATA / "train-queries" / "queries_train.jsonl").open()]
    alpaca = [r["text"] for r in rows if r["source"] == "alpaca"]
    assert everything["alpaca"] == alpaca
    assert benign["alpaca"] == [alpaca[i] for i in query_subset(len(alpaca), 5)]
    permissive = (DATA / "train-queries" / "queries_train_permissive.jsonl").read_text()
    assert '"source": "alpaca"' not in permissive, "no training run saw the benign Alpaca instructions"
    with pytest.raises(GenRetError, match="refusal-benign 0"):
        load_benign_queries(DATA / "missing", 5)


@needs_data
def test_run_advbench_ir_refusal_check_end_to_end(tmp_path, monkeypatch):
    import genretrieval.evaluation.refusal

    monkeypatch.setattr(genretrieval.evaluation.refusal, "_REFUSAL_VECTORS", {})
    harmful = load_advbench_ir(DATA).queries
    teacher = FakeTeacher()
    toward = RefusalOracle(harmful)
    result = run_advbench_ir(toward, DATA, max_queries=20, cache_dir=tmp_path, name="toward", refusal_teacher=teacher)
    check = result.refusal
    assert teacher.texts == [REFUSAL_TEXT]
    assert check.num_queries == {"harmful": 20, "nq-wiki": 20, "alpaca": 20}, "benign capped at the queries run"
    assert check.roc_auc == {"all": 1.0, "nq-wiki": 1.0, "alpaca": 1.0}
    assert check.mean_cosine["harmful"] > 0 > check.mean_cosine["nq-wiki"]
    queries = [c for c in toward.calls if c[0] == "query"]
    assert queries == [("query", "advbench-ir", 20)] * 3, "harmful vectors reused from the search, benign once each"
    away = run_advbench_ir(
        RefusalOracle(harmful, sign=-1.0),
        DATA,
        max_queries=20,
        cache_dir=tmp_path,
        name="away",
        refusal_teacher=teacher,
        refusal_benign=7,
    )
    assert away.refusal.roc_auc["all"] == 0.0
    assert teacher.texts == [REFUSAL_TEXT], "the refusal is embedded once per teacher"
    assert away.refusal.num_queries == {"harmful": 20, "nq-wiki": 7, "alpaca": 7}
    assert away.settings["refusal_benign"] == 7
    bm25 = run_advbench_ir(BM25Retriever(), DATA, max_queries=20)
    assert set(bm25.refusal.to_dict()) == {"skipped"}
    off = run_advbench_ir(HashEncoder(), DATA, max_queries=20, cache_dir=tmp_path, refusal_benign=0)
    assert off.refusal is None

    paths = write_report([result, bm25], tmp_path, name="advbench-ir", command="genret eval advbench-ir")
    table = paths["markdown"].read_text()
    assert "### Refusal check" in table
    assert "| system | n harmful | n nq-wiki | n alpaca | ROC-AUC all benign |" in table
    assert "| toward | 20 | 20 | 20 | 1.000 | 1.000 | 1.000 |" in table
    assert "| bm25 | " + " | ".join([""] * 9) + " |" in table
    saved = json.loads(paths["json"].read_text())["results"]
    assert saved[0]["refusal"]["roc_auc"]["alpaca"] == 1.0 and len(saved[0]["refusal"]["cosines"]["harmful"]) == 20
    assert "roc_auc" not in saved[1]["refusal"]


def test_report_refusal_table_rows_and_empty_cells(tmp_path):
    def result(system, n, refusal=None):
        r = {"benchmark": "advbench-ir", "system": system, "num_queries": n, "metrics": {"accuracy@5": 0.5}}
        return EvalResult.from_dict(r if refusal is None else r | {"refusal": refusal})

    check = {
        "num_queries": {"harmful": 64, "nq-wiki": 64, "alpaca": 64},
        "roc_auc": {"all": 0.8125, "nq-wiki": 0.75, "alpaca": 0.875},
        "mean_cosine": {"harmful": 0.4, "nq-wiki": 0.1, "alpaca": 0.2},
    }
    results = [
        result("gen", 520, check | {"num_queries": {"harmful": 520, "nq-wiki": 260, "alpaca": 260}}),
        result("hyde", 64, check),
        result("bm25", 520, {"skipped": "bm25 has no query embeddings"}),
        result("older", 520),
    ]  # merged from a report made before the check
    paths = write_report(results, tmp_path, command="x")
    table = paths["markdown"].read_text()
    assert "| gen | 520 | 260 | 260 | 0.812 | 0.750 | 0.875 | 0.400 | 0.100 | 0.200 |" in table
    assert "| hyde (64 queries) | 64 | 64 | 64 | 0.812 |" in table
    empty = " | ".join([""] * 9)
    assert f"| bm25 | {empty} |" in table and f"| older | {empty} |" in table
    assert REFUSAL_TEXT in table
    assert paths["png"].read_bytes()[:4] == b"\x89PNG"
    beir = write_report([EvalResult(benchmark="nq-wiki", system="gen", metrics={"ndcg@10": 0.5})], tmp_path)
    assert "Refusal" not in beir["markdown"].read_text()


def test_report_merge_keeps_other_systems_and_replaces_rerun_ones(tmp_path):
    def result(system, value):
        return EvalResult(benchmark="b", system=system, metrics={"m": value})

    write_report([result("slow", 0.1), result("fast", 0.2)], tmp_path, name="b", command="first")
    paths = write_report([result("fast", 0.3)], tmp_path, name="b", command="second", merge=True)
    saved = json.loads(paths["json"].read_text())
    assert [(r["system"], r["metrics"]["m"], r["command"]) for r in saved["results"]] == [
        ("slow", 0.1, "first"),
        ("fast", 0.3, "second"),
    ]
    assert saved["commands"] == ["first", "second"]
    table = paths["markdown"].read_text()
    assert "| slow | 0.100 |" in table and "| fast | 0.300 |" in table and "Command: `second`" in table
    paths = write_report([result("fast", 0.4)], tmp_path, name="b", command="third")  # no merge: replaced
    assert [r["system"] for r in json.loads(paths["json"].read_text())["results"]] == ["fast"]


def test_report_bright_table_has_one_column_per_subset(tmp_path):
    subset = {"benchmark": "bright", "system": "x", "metrics": {"ndcg@10": 0.25}}
    result = EvalResult.from_dict(
        {
            "benchmark": "bright",
            "system": "x",
            "metrics": {"ndcg@10": 0.25},
            "subsets": {"biology": subset, "pony": subset},
        }
    )
    paths = write_report([result], tmp_path)
    assert "| system | biology | pony | mean |" in paths["markdown"].read_text()
    assert paths["json"].name == "bright.json"


def test_eval_result_round_trips_through_to_dict_and_from_dict():
    check = RefusalCheck(
        text=REFUSAL_TEXT,
        num_queries={"harmful": 2, "nq-wiki": 1, "alpaca": 1},
        roc_auc={"all": 0.5, "nq-wiki": 0.5, "alpaca": 0.5},
        mean_cosine={"harmful": 0.3, "nq-wiki": 0.1, "alpaca": 0.2},
        cosines={"harmful": [0.2, 0.4], "nq-wiki": [0.1], "alpaca": [0.2]},
        seconds=1.5,
    )
    advbench = EvalResult(
        benchmark="advbench-ir",
        system="gen",
        metrics={"accuracy@1": 0.5},
        identity={"dim": 8},
        task="advbench-ir",
        num_queries=2,
        num_documents=10,
        per_query={"q": {"accuracy@1": 1.0}},
        seconds={"index": 1.0, "search": 2.0},
        settings={"ks": [1], "max_queries": None},
        refusal=check,
        command="genret eval advbench-ir",
    )
    skipped = EvalResult(
        benchmark="advbench-ir",
        system="bm25",
        metrics={"accuracy@1": 0.25},
        refusal=RefusalCheck(skipped="bm25 has no query embeddings"),
    )
    bright = EvalResult(
        benchmark="bright",
        system="gen",
        metrics={"ndcg@10": 0.5},
        settings={"long": False},
        subsets={
            "biology": EvalResult(
                benchmark="bright",
                system="gen",
                metrics={"ndcg@10": 0.5},
                task="bright-biology",
                per_query={"1": {"ndcg@10": 0.5}},
            )
        },
    )
    for result in (advbench, skipped, bright):
        data = json.loads(json.dumps(result.to_dict()))
        assert data["format_version"] == 1
        assert EvalResult.from_dict(data) == result
    data = advbench.to_dict()
    assert list(data) == [
        "benchmark",
        "system",
        "metrics",
        "identity",
        "task",
        "num_queries",
        "num_documents",
        "per_query",
        "seconds",
        "settings",
        "refusal",
        "command",
        "format_version",
    ]
    assert data["settings"]["max_queries"] is None, "None inside a field is kept"
    assert list(data["refusal"]) == ["text", "num_queries", "roc_auc", "mean_cosine", "cosines", "seconds"]
    assert skipped.to_dict()["refusal"] == {"skipped": "bm25 has no query embeddings"}
    assert "subsets" not in data and "refusal" not in bright.to_dict() and "per_query" not in bright.to_dict()


@pytest.mark.parametrize("name", ["advbench-ir.json", "beir-nq-wiki.json"])
def test_eval_result_reads_the_reports_on_disk(name):
    """The committed reports, whether written before results carried ``format_version`` or after."""
    path = Path(__file__).resolve().parents[1] / "benchmarks" / "results" / name
    raw = json.loads(path.read_text())["results"]
    assert all(r.get("format_version", 1) == 1 for r in raw)
    results = [EvalResult.from_dict(r) for r in raw]
    assert [r.system for r in results] == [r["system"] for r in raw] and results[0].per_query
    assert all(r.to_dict() == r_raw | {"format_version": 1} for r, r_raw in zip(results, raw)), "same keys back"


def test_eval_result_refuses_a_newer_format_and_malformed_results(tmp_path):
    data = EvalResult(benchmark="b", system="s", metrics={"m": 0.5}).to_dict()
    with pytest.raises(GenRetError, match="has format 2; this genretrieval reads format 1") as e:
        EvalResult.from_dict(data | {"format_version": 2})
    assert "\n" not in str(e.value)
    with pytest.raises(GenRetError, match="malformed"):
        EvalResult.from_dict(data | {"refusal": {"auc": 1.0}})
    (tmp_path / "b.json").write_text(json.dumps({"commands": ["x"], "results": [data | {"format_version": 2}]}))
    with pytest.raises(GenRetError, match="has format 2"):
        write_report([EvalResult.from_dict(data)], tmp_path, name="b", merge=True)


def test_report_merge_reads_an_unversioned_report(tmp_path):
    old = {
        "benchmark": "b",
        "system": "slow",
        "identity": {},
        "task": "retrieval",
        "num_queries": 3,
        "num_documents": 5,
        "metrics": {"m": 0.1},
        "per_query": {},
        "seconds": {"index": 1.0, "search": 1.0},
        "settings": {},
        "command": "first",
    }  # as written before format_version
    (tmp_path / "b.json").write_text(json.dumps({"commands": ["first"], "results": [old]}))
    paths = write_report(
        [EvalResult(benchmark="b", system="fast", metrics={"m": 0.3}, num_queries=3)],
        tmp_path,
        name="b",
        command="second",
        merge=True,
    )
    saved = json.loads(paths["json"].read_text())
    assert saved["results"][0] == old | {"format_version": 1} and saved["commands"] == ["first", "second"]
    assert "| slow | 0.100 |" in paths["markdown"].read_text()


# --- reference figures (independent script) ----------------------------------------------------------------------

ADVBENCH_BM25 = {"accuracy@1": 0.556, "accuracy@5": 0.748, "accuracy@20": 0.883, "accuracy@100": 0.979}
ADVBENCH_TEACHER = {"accuracy@1": 0.548, "accuracy@5": 0.777, "accuracy@20": 0.912, "accuracy@100": 0.967}


@needs_data
def test_bm25_reproduces_reference_figures():
    advbench = run_advbench_ir(BM25Retriever(), DATA)
    for metric, expected in ADVBENCH_BM25.items():
        assert advbench.metrics[metric] == pytest.approx(expected, abs=0.01), metric
    assert run_beir(BM25Retriever(), DATA / "nq-wiki").metrics["ndcg@10"] == pytest.approx(0.858, abs=0.01)


@pytest.fixture(scope="module")
def teacher():
    from genretrieval.encoder import load_encoder

    return load_encoder("teacher")  # no instructions: the input-centric baseline, as the reference script ran it


@pytest.mark.slow
@needs_data
def test_teacher_reproduces_advbench_ir_reference(teacher, tmp_path):
    result = run_advbench_ir(teacher, DATA, batch_size=64, cache_dir=tmp_path)
    for metric, expected in ADVBENCH_TEACHER.items():
        assert result.metrics[metric] == pytest.approx(expected, abs=0.01), metric
    # The refusal check on the teacher's own query embedding (issue 14 measured 0.856 on 150 vs 150 NQ).
    assert result.refusal.num_queries == {"harmful": 520, "nq-wiki": 260, "alpaca": 260}
    assert result.refusal.roc_auc["nq-wiki"] == pytest.approx(0.86, abs=0.02)


@pytest.mark.slow
@needs_data
def test_teacher_reproduces_nq_wiki_reference(teacher, tmp_path):
    result = run_beir(teacher, DATA / "nq-wiki", batch_size=64, cache_dir=tmp_path)
    assert result.metrics["ndcg@10"] == pytest.approx(0.952, abs=0.01)


def test_eval_backbone_option_does_not_reach_the_teacher(monkeypatch):
    """`genret eval --backbone X` names the LLM of gen/untrained/hyde; the teacher row stays MiniLM."""
    import genretrieval.encoder
    from genretrieval.cli import EvalOptions, System, _systems

    calls = []
    monkeypatch.setattr(genretrieval.encoder, "load_encoder", lambda kind="gen", **kw: calls.append((kind, kw)))
    opts = EvalOptions(
        encoder=[System.gen, System.teacher, System.untrained], backbone="smollm2-135m-instruct", num_threads=1
    )
    list(_systems(opts))
    backbones = {(kind, kw.get("shipped", True)): kw.get("backbone") for kind, kw in calls}
    assert backbones == {
        ("gen", True): "smollm2-135m-instruct",
        ("teacher", True): None,
        ("gen", False): "smollm2-135m-instruct",
    }


@needs_data
def test_eval_cli_keeps_finished_systems_when_a_later_one_fails(tmp_path, monkeypatch):
    """Each system's result is written as it finishes; a failing later system exits with one line and loses
    nothing already measured."""
    from typer.testing import CliRunner

    import genretrieval.encoder
    from genretrieval.cli import app

    def load(kind="gen", **kw):
        if kind == "teacher":
            raise GenRetError("cannot load teacher model 'x'")
        return HashEncoder()

    monkeypatch.setattr(genretrieval.encoder, "load_encoder", load)
    monkeypatch.setenv("GENRET_HOME", str(tmp_path / "home"))
    args = [
        "eval",
        "beir",
        "--data-dir",
        str(DATA / "nq-wiki"),
        "--max-queries",
        "20",
        "--out",
        str(tmp_path),
        "--encoder",
        "bm25",
        "--encoder",
        "gen",
        "--encoder",
        "teacher",
    ]
    result = CliRunner().invoke(app, args)
    assert result.exit_code != 0 and "cannot load teacher model" in result.output
    saved = json.loads((tmp_path / "beir-nq-wiki.json").read_text())
    assert [r["system"] for r in saved["results"]] == ["bm25", "gen"]
