"""Vector-store benchmark: upsert rate, query latency, batched QPS and recall@10 of every store backend."""

from __future__ import annotations

import argparse
import json
import os
import platform
import shlex
import statistics
import sys
import tempfile
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass
from datetime import datetime, timezone
from importlib.metadata import version
from pathlib import Path

import numpy as np

from genretrieval.stores import VectorStore, open_store

K = 10
UPSERT_BATCH = 4_096

# ------------------------------------------------------------------------------------------- data


def make_corpus(n: int, dim: int, clusters: int, n_queries: int, seed: int = 0) -> tuple[np.ndarray, ...]:
    """Unit vectors around gaussian centres: a corpus (n, dim) and held-out queries (n_queries, dim)."""
    rng = np.random.default_rng(seed)
    centres = rng.standard_normal((clusters, dim)).astype(np.float32)
    x = centres[rng.integers(0, clusters, n + n_queries)]
    x += 0.5 * rng.standard_normal(x.shape).astype(np.float32)
    x /= np.linalg.norm(x, axis=1, keepdims=True)
    return x[:n], x[n:]


def exact_top_ids(corpus: np.ndarray, queries: np.ndarray, k: int) -> np.ndarray:
    """Exact top-k row indices per query by brute force, (Q, k)."""
    out = []
    for start in range(0, len(queries), 256):
        sims = queries[start : start + 256] @ corpus.T
        top = np.argpartition(-sims, k - 1, axis=1)[:, :k]
        order = np.argsort(-np.take_along_axis(sims, top, axis=1), axis=1)
        out.append(np.take_along_axis(top, order, axis=1))
    return np.concatenate(out)


# ------------------------------------------------------------------------------------------- engines


@dataclass
class Engine:
    """A store configuration to benchmark; ``max_points`` caps slow engines."""

    name: str
    open: Callable[[Path, int, int], VectorStore]  # (directory, n, dim) -> empty store
    max_points: int | None = None
    max_queries: int | None = None


def _ivf_string(n: int) -> str:
    """IVF with about 4 sqrt(n) lists (rounded down to a power of two), flat codes."""
    nlist = 2 ** int(np.log2(max(16, 4 * np.sqrt(n))))
    return f"IVF{nlist},Flat"


def _qdrant_local(path: Path, n: int, dim: int) -> VectorStore:
    """qdrant-client's local mode persisted to ``path`` (the pure-Python engine)."""
    from genretrieval.stores.qdrant_server import QdrantServerStore

    return QdrantServerStore(None, dim, create=True, local_path=path)


def engines(local_cap: int) -> list[Engine]:
    """All configurations, in table order."""
    return [
        Engine("faiss Flat", lambda p, n, d: open_store("faiss", p, d, create=True)),
        Engine(
            "faiss IVF (nprobe 16)",
            lambda p, n, d: open_store("faiss", p, d, faiss_index=_ivf_string(n), create=True, nprobe=16),
        ),
        Engine(
            "faiss HNSW32 (ef 64)",
            lambda p, n, d: open_store("faiss", p, d, faiss_index="HNSW32", create=True, ef_search=64),
        ),
        Engine(
            "qdrant-edge exact",
            lambda p, n, d: open_store("qdrant", p, d, create=True, exact_threshold=sys.maxsize),
        ),
        Engine(
            "qdrant-edge HNSW (m 16, ef 128)",
            lambda p, n, d: open_store("qdrant", p, d, create=True, exact_threshold=0, hnsw_ef=128),
        ),
        Engine("qdrant-client local", _qdrant_local, max_points=local_cap, max_queries=100),
    ]


# ------------------------------------------------------------------------------------------- runner


@dataclass
class Result:
    """One engine at one corpus size."""

    engine: str
    n: int
    upsert_points_per_s: float
    flush_s: float
    latency_ms_median: float
    batched_qps: float
    n_queries: int
    recall_at_10: float


def recall_at_k(found: list[list[str]], truth: np.ndarray) -> float:
    """Mean fraction of the exact top-k ids found, over queries."""
    k = truth.shape[1]
    return float(np.mean([len({int(h) for h in row} & set(t.tolist())) / k for row, t in zip(found, truth)]))


def run_engine(engine: Engine, corpus: np.ndarray, queries: np.ndarray, workdir: Path) -> Result:
    """Upsert ``corpus`` in batches of UPSERT_BATCH, flush, then time single and batched queries."""
    n = min(len(corpus), engine.max_points or len(corpus))
    corpus = corpus[:n]
    queries = queries[: engine.max_queries or len(queries)]
    truth = exact_top_ids(corpus, queries, K)
    store = engine.open(workdir, n, corpus.shape[1])
    ids = [str(i) for i in range(n)]
    start = time.perf_counter()
    for a in range(0, n, UPSERT_BATCH):
        b = min(n, a + UPSERT_BATCH)
        store.upsert(ids[a:b], corpus[a:b], [{"source": f"doc{i // 20}.md"} for i in range(a, b)])
    upsert_s = time.perf_counter() - start
    start = time.perf_counter()
    store.flush()
    store.optimize()
    flush_s = time.perf_counter() - start
    store.search(queries[:5], K)  # warm-up
    latencies = []
    for q in queries[:200]:
        t0 = time.perf_counter()
        store.search(q[None], K)
        latencies.append(time.perf_counter() - t0)
    start = time.perf_counter()
    hits = store.search(queries, K)
    batched_s = time.perf_counter() - start
    store.close()
    return Result(
        engine=engine.name,
        n=n,
        upsert_points_per_s=n / upsert_s,
        flush_s=flush_s,
        latency_ms_median=1000 * statistics.median(latencies),
        batched_qps=len(queries) / batched_s,
        n_queries=len(queries),
        recall_at_10=recall_at_k([[h.id for h in row] for row in hits], truth),
    )


# ------------------------------------------------------------------------------------------- report


def table(results: list[Result]) -> str:
    """The results as a Markdown table."""
    lines = [
        "| engine | points | upsert pts/s | flush/build s | query ms (median) | batched QPS | recall@10 |",
        "|---|---:|---:|---:|---:|---:|---:|",
    ]
    for r in results:
        lines.append(
            f"| {r.engine} | {r.n:,} | {r.upsert_points_per_s:,.0f} | {r.flush_s:.2f} | "
            f"{r.latency_ms_median:.2f} | {r.batched_qps:,.0f} ({r.n_queries:,} q) | {r.recall_at_10:.3f} |"
        )
    return "\n".join(lines)


def target_checks(results: list[Result]) -> list[str]:
    """The two targets this benchmark reports against, each with the measured value and met / missed."""
    lines = []
    edge = [r.upsert_points_per_s for r in results if r.engine.startswith("qdrant-edge")]
    if edge:
        verdict = "met" if min(edge) >= 20_000 else "missed"
        measured = f"{min(edge):,.0f}-{max(edge):,.0f}"
        lines.append(f"embedded Qdrant upsert >= 20,000 points/s: {measured}, {verdict}")
    flat = [r.batched_qps for r in results if r.engine == "faiss Flat" and r.n >= 100_000]
    if flat:
        verdict = "met" if min(flat) >= 1_000 else "missed"
        lines.append(f"FAISS Flat batched search >= 1,000 QPS at 100k: {min(flat):,.0f}, {verdict}")
    return lines


def environment(argv: list[str]) -> dict:
    """Command line, library versions and machine facts for the results file."""
    return {
        "command": " ".join(["python -m benchmarks.stores", shlex.join(argv)]).strip(),
        "date": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        "python": platform.python_version(),
        "versions": {p: version(p) for p in ("numpy", "faiss-cpu", "qdrant-client", "qdrant-edge-py")},
        "cpus": os.cpu_count(),
        "omp_num_threads": os.environ.get("OMP_NUM_THREADS"),
        "omp_wait_policy": os.environ.get("OMP_WAIT_POLICY"),
        "load_average": os.getloadavg()[0],
    }


def write_results(results: list[Result], env: dict, args: argparse.Namespace, out_dir: Path) -> None:
    """Write ``stores.md`` and ``stores.json`` into ``out_dir``."""
    out_dir.mkdir(parents=True, exist_ok=True)
    payload = {
        "environment": env,
        "settings": vars(args) | {"out": str(args.out)},
        "targets": target_checks(results),
        "results": [asdict(r) for r in results],
    }
    (out_dir / "stores.json").write_text(json.dumps(payload, indent=2) + "\n")
    versions = ", ".join(f"{k} {v}" for k, v in env["versions"].items())
    md = [
        "# Vector-store benchmark",
        "",
        f"Command: `{env['command']}`  ",
        f"Date: {env['date']}; Python {env['python']}; {versions}; {env['cpus']} CPUs, "
        f"OMP_NUM_THREADS={env['omp_num_threads']}, OMP_WAIT_POLICY={env['omp_wait_policy']}.",
        "",
        f"Data: {args.clusters:,} gaussian clusters in {args.dim} dimensions, unit vectors; "
        f"{args.queries:,} held-out queries from the same distribution; recall@10 against exact brute "
        f"force. Upserts in batches of {UPSERT_BATCH:,}; training and graph building done during upserts "
        "count towards the rate; 'flush/build' is the flush after the last upsert (for Qdrant Edge HNSW it "
        f"builds the graph). qdrant-client local mode is capped at {args.local_cap:,} points and 100 "
        "queries. faiss IVF lists: " + ", ".join(f"{_ivf_string(n)} at {n:,}" for n in args.sizes) + ". "
        f"1-minute load average at start: {env['load_average']:.1f} (other processes share the CPUs).",
        "",
        table(results),
        "",
        "Targets:",
        "",
        *[f"- {line}" for line in target_checks(results)],
        "",
    ]
    (out_dir / "stores.md").write_text("\n".join(md))


def main(argv: list[str] | None = None) -> int:
    """Run the benchmark; ``argv`` as on the command line (e.g. ``["--sizes", "10000"]``)."""
    argv = sys.argv[1:] if argv is None else list(argv)
    parser = argparse.ArgumentParser(prog="python -m benchmarks.stores", description=__doc__)
    parser.add_argument("--sizes", type=int, nargs="+", default=[10_000, 100_000])
    parser.add_argument("--dim", type=int, default=384)
    parser.add_argument("--clusters", type=int, default=1_000)
    parser.add_argument("--queries", type=int, default=1_000)
    parser.add_argument("--local-cap", type=int, default=5_000, help="point cap for qdrant-client local")
    parser.add_argument("--engines", nargs="*", help="substrings of engine names to run (default: all)")
    parser.add_argument("--out", type=Path, default=Path(__file__).parent / "results")
    args = parser.parse_args(argv)
    wanted = args.engines or [""]
    selected = [e for e in engines(args.local_cap) if any(s in e.name for s in wanted)]
    env = environment(argv)
    results: list[Result] = []
    for n in args.sizes:
        corpus, queries = make_corpus(n, args.dim, args.clusters, args.queries)
        for engine in selected:
            if any(r.engine == engine.name and r.n == min(n, engine.max_points or n) for r in results):
                continue  # a capped engine already ran at this size
            with tempfile.TemporaryDirectory(prefix="genret-bench-") as tmp:
                result = run_engine(engine, corpus, queries, Path(tmp) / "store")
            results.append(result)
            print(table([result]).splitlines()[-1], flush=True)
    print()
    print(table(results))
    write_results(results, env, args, args.out)
    print(f"\nwrote {args.out / 'stores.md'} and {args.out / 'stores.json'}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
