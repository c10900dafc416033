"""How embedding, loading and search time grow with the number of chunks, and what `genret serve` sustains.

    python -m benchmarks.scale [--sizes 1000 3000 10000 30000 100000] [--quick] [--url http://HOST:6333]

At each size N, in one process:

- **embed**: a synthetic JSONL corpus of N short records (one chunk each) goes through the library path of
  `genret embed` (``genretrieval.embed.embed_corpus``: planning, reading, chunking, encoding, Parquet parts) with
  the tiny random 2-layer backbone of the tests (tests/conftest.py), so that the model is cheap and the rest of the
  pipeline shows. The time inside ``encode_documents`` is reported apart from the rest.
- **load**: the Parquet output is bulk-loaded with the path of `genret index --from-embeddings`
  (``index_from_embeddings``) into FAISS (Flat, the default) and Qdrant Edge (its defaults: exact search below
  20,000 points, an HNSW graph built at the end of a load above that); with ``--url``, also into a collection on
  that Qdrant server (qdrant-client's local mode is no stand-in for a server, so nothing runs without a URL).
- **search**: the index is opened for reading as `genret search` opens it, and a few hundred query vectors
  (encoded by the same tiny encoder) are searched one at a time, k=10, in the store: the part of a search that
  depends on N (encoding a query does not).

Then log(time) is fitted against log(N) per stage and store, and the exponent printed (1 = linear). Last,
``genret serve`` runs in a subprocess over the FAISS index of ``--serve-size`` chunks on a free loopback port,
and ``--clients`` threads each send ``--requests`` POST /search requests (k=10) on a kept-alive connection:
queries per second and p50/p99 latency under that bounded load (after one client alone, for the unloaded
latency). A bare FAISS search over 100k random vectors, timed at the start and the end, says how busy the machine
was (the cores here are shared). Writes benchmarks/results/scale.{json,md}.
"""

from __future__ import annotations

import argparse
import contextlib
import http.client
import importlib.util
import json
import logging
import os
import platform
import shlex
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from datetime import datetime, timezone
from importlib.metadata import version
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parent.parent
K = 10
SIZES = [1_000, 3_000, 10_000, 30_000, 100_000]
QUICK_SIZES = [1_000, 3_000]
STORES = ("faiss", "qdrant")
#: Qdrant Edge's (and the server store's) default: exact search below this many points, HNSW above.
QDRANT_EXACT_THRESHOLD = 20_000
#: FAISS Flat query ms at 100k, 384-d, on a quiet machine (benchmarks/results/stores.md, 2026-11-24).
STORES_QUIET_100K_MS = 5.91


def tiny_backbone(directory: Path) -> tuple[Path, tuple[str, ...]]:
    """The tests' tiny random Qwen2 (tests/conftest.py ``build_tiny_backbone``), written to ``directory``, and its
    word list."""
    spec = importlib.util.spec_from_file_location("_genret_tests_conftest", ROOT / "tests" / "conftest.py")
    conftest = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(conftest)
    return conftest.build_tiny_backbone(directory), tuple(conftest.WORDS)


def texts(n: int, words: tuple[str, ...], length: int, seed: int) -> list[str]:
    rng = np.random.default_rng(seed)
    return [" ".join(rng.choice(words, length)) for _ in range(n)]


def write_corpus(path: Path, n: int, words: tuple[str, ...]) -> None:
    """N records of 24 words from the tiny tokenizer's vocabulary, with a filterable field: one chunk each."""
    with path.open("w") as f:
        for i, text in enumerate(texts(n, words, 24, seed=n)):
            f.write(
                json.dumps({"id": f"r{i}", "title": f"record {i}", "text": text, "lang": "en fr".split()[i % 2]}) + "\n"
            )


# ------------------------------------------------------------------------------------------- stages


def embed(encoder, corpus: Path, out: Path) -> dict:
    """`genret embed` in one process; seconds in total and inside the encoder."""
    from genretrieval.embed import embed_corpus

    spent = []
    encode = encoder.encode_documents

    def timed(*args, **kwargs):
        t = time.perf_counter()
        try:
            return encode(*args, **kwargs)
        finally:
            spent.append(time.perf_counter() - t)

    encoder.encode_documents = timed
    try:
        t0 = time.perf_counter()
        stats = embed_corpus(corpus, out, encoder, batch_size=16, progress=False)
        seconds = time.perf_counter() - t0
    finally:
        del encoder.encode_documents
    return {
        "chunks": stats.chunks,
        "parts": stats.parts,
        "seconds": seconds,
        "encode_s": sum(spent),
        "other_s": seconds - sum(spent),
        "chunks_per_s": stats.chunks / seconds,
    }


def load(embeddings: Path, where: Path, backend: str, url: str | None = None) -> dict:
    """`genret index --from-embeddings`: create the index and bulk-load the folder."""
    from genretrieval.embed import index_from_embeddings

    t0 = time.perf_counter()
    stats, total = index_from_embeddings(embeddings, where, backend, url=url, rebuild=url is not None, progress=False)
    seconds = time.perf_counter() - t0
    return {"chunks": total, "seconds": seconds, "rows_per_s": total / seconds}


def search(where: Path, queries: np.ndarray, url: str | None = None) -> dict:
    """Open the index for reading (as `genret search` does, without the encoder) and search one query at a time."""
    from genretrieval.index import Index

    t0 = time.perf_counter()
    idx = Index.open(where, with_encoder=False, url=url)
    open_s = time.perf_counter() - t0
    try:
        idx.store.search(queries[:5], K)  # warm-up
        latencies = []
        for q in queries:
            t = time.perf_counter()
            hits = idx.store.search(q[None], K)
            latencies.append(time.perf_counter() - t)
            assert len(hits[0]) == K
        t = time.perf_counter()
        idx.store.search(queries, K)
        batched_s = time.perf_counter() - t
        if url is not None:
            idx.store.drop()  # the collection this benchmark made on the server
    finally:
        idx.close()
    ms = 1000 * np.asarray(latencies)
    return {
        "open_s": open_s,
        "p50_ms": float(np.median(ms)),
        "p99_ms": float(np.percentile(ms, 99)),
        "mean_ms": float(ms.mean()),
        "batched_qps": len(queries) / batched_s,
        "queries": len(queries),
    }


# ------------------------------------------------------------------------------------------- serving


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@contextlib.contextmanager
def server(index: Path, log: Path, timeout: float = 300.0):
    """`genret serve` over ``index`` in a subprocess on a free loopback port; yields the port."""
    port = free_port()
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    env.pop("GENRET_API_TOKEN", None)  # searches only
    cmd = [
        sys.executable,
        "-m",
        "genretrieval.cli",
        "serve",
        "--index-dir",
        str(index),
        "--port",
        str(port),
        "--num-threads",
        "1",
    ]
    with log.open("w") as out:
        proc = subprocess.Popen(cmd, stdout=out, stderr=subprocess.STDOUT, env=env, cwd=ROOT)
    try:
        deadline = time.monotonic() + timeout
        while True:
            if proc.poll() is not None:
                raise RuntimeError(f"genret serve exited with {proc.returncode}:\n{log.read_text()[-2000:]}")
            try:
                conn = http.client.HTTPConnection("127.0.0.1", port, timeout=5)
                conn.request("GET", "/health")
                if conn.getresponse().status == 200:
                    conn.close()
                    break
            except OSError:
                pass
            if time.monotonic() > deadline:
                raise RuntimeError(f"genret serve did not answer within {timeout:.0f}s:\n{log.read_text()[-2000:]}")
            time.sleep(0.5)
        yield port
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=30)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


def _client(port: int, queries: list[str], latencies: list[float], errors: list[str]) -> None:
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=120)
    try:
        for q in queries:
            body = json.dumps({"query": q, "k": K})
            t = time.perf_counter()
            conn.request("POST", "/search", body=body, headers={"Content-Type": "application/json"})
            response = conn.getresponse()
            data = response.read()
            latencies.append(time.perf_counter() - t)
            if response.status != 200 or len(json.loads(data)["hits"]) != K:
                errors.append(f"{response.status}: {data[:200]!r}")
    except Exception as e:  # noqa: BLE001 - reported with the results
        errors.append(f"{type(e).__name__}: {e}")
    finally:
        conn.close()


def load_test(port: int, clients: int, requests: int, queries: list[str]) -> dict:
    """``clients`` threads, each sending ``requests`` searches one after another on its own connection."""
    latencies: list[float] = []
    errors: list[str] = []
    threads = [
        threading.Thread(
            target=_client,
            args=(port, [queries[(c * requests + i) % len(queries)] for i in range(requests)], latencies, errors),
        )
        for c in range(clients)
    ]
    t0 = time.perf_counter()
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    wall = time.perf_counter() - t0
    ms = 1000 * np.asarray(latencies)
    return {
        "clients": clients,
        "requests": len(latencies),
        "errors": len(errors),
        "first_error": errors[:1],
        "seconds": wall,
        "qps": len(latencies) / wall,
        "p50_ms": float(np.median(ms)),
        "p99_ms": float(np.percentile(ms, 99)),
        "mean_ms": float(ms.mean()),
    }


# ------------------------------------------------------------------------------------------- fitting and report


def exponent(sizes: list[int], values: list[float]) -> float | None:
    """Slope of log(value) against log(N): time ~ N^slope."""
    if len(sizes) < 2:
        return None
    return float(np.polyfit(np.log(sizes), np.log(values), 1)[0])


def fits(rows: list[dict], stores: list[str]) -> dict[str, dict]:
    """Exponent and end-to-end ratio of every measured series; for a Qdrant store, also below and above its
    exact-search threshold apart (exact search below it; above it a load ends by building an HNSW graph)."""
    series = {
        "embed total": [(r["n"], r["embed"]["seconds"]) for r in rows],
        "embed encoder": [(r["n"], r["embed"]["encode_s"]) for r in rows],
        "embed outside encoder": [(r["n"], r["embed"]["other_s"]) for r in rows],
    }
    for stage, key in (("load", "seconds"), ("search", "p50_ms")):
        for s in stores:
            points = [(r["n"], r[stage][s][key]) for r in rows]
            series[f"{stage} {s}" + (" p50" if stage == "search" else "")] = points
            if s.startswith("qdrant"):
                below = [p for p in points if p[0] < QDRANT_EXACT_THRESHOLD]
                above = [p for p in points if p[0] >= QDRANT_EXACT_THRESHOLD]
                if len(below) >= 2 and len(above) >= 2:
                    series[f"{stage} {s}, exact (< {QDRANT_EXACT_THRESHOLD:,})"] = below
                    series[f"{stage} {s}, HNSW (>= {QDRANT_EXACT_THRESHOLD:,})"] = above
    out = {}
    for name, points in series.items():
        sizes, values = [p[0] for p in points], [p[1] for p in points]
        out[name] = {
            "exponent": exponent(sizes, values),
            "ratio": values[-1] / values[0],
            "n_ratio": sizes[-1] / sizes[0],
            "sizes": sizes,
        }
    return out


def reference_search(n: int = 100_000, queries: int = 100) -> float:
    """Median ms of one exact top-10 search of a bare FAISS IndexFlatIP over ``n`` random 384-d unit vectors: a
    fixed workload, timed at the start and the end of a run, to compare how busy the machine was with the
    stores benchmark's quiet-machine figure for FAISS Flat at 100k (benchmarks/results/stores.md)."""
    import faiss

    rng = np.random.default_rng(0)
    x = rng.standard_normal((n, 384), dtype=np.float32)
    x /= np.linalg.norm(x, axis=1, keepdims=True)
    index = faiss.IndexFlatIP(384)
    index.add(x)
    index.search(x[:5], K)
    latencies = []
    for q in x[:queries]:
        t = time.perf_counter()
        index.search(q[None], K)
        latencies.append(time.perf_counter() - t)
    return 1000 * statistics.median(latencies)


def environment(argv: list[str]) -> dict:
    return {
        "command": " ".join(["python -m benchmarks.scale", shlex.join(argv)]).strip(),
        "date": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        "python": platform.python_version(),
        "machine": platform.machine(),
        "versions": {
            p: version(p)
            for p in ("torch", "numpy", "pyarrow", "faiss-cpu", "qdrant-edge-py", "qdrant-client", "fastapi", "uvicorn")
        },
        "cpus": os.cpu_count(),
        "omp_num_threads": os.environ.get("OMP_NUM_THREADS"),
        "nice": os.nice(0),
        "load_average_start": os.getloadavg(),
    }


def report(payload: dict) -> str:
    env, rows, settings = payload["environment"], payload["results"], payload["settings"]
    stores = payload["stores"]
    versions = ", ".join(f"{k} {v}" for k, v in env["versions"].items())
    load_avg = " ".join(f"{x:.1f}" for x in env["load_average_start"])
    md = [
        f"# Scale: embedding, loading, search and serving from {rows[0]['n']:,} to {rows[-1]['n']:,} chunks",
        "",
        f"Command: `{env['command']}`  ",
        f"Date: {env['date']}; Python {env['python']}; {versions}; {env['cpus']} CPUs, "
        f"OMP_NUM_THREADS={env['omp_num_threads']}, nice {env['nice']}; 1/5/15-minute load average at the start "
        f"{load_avg}, end {' '.join(f'{x:.1f}' for x in payload['load_average_end'])} (other work shares these "
        f"cores: read exponents and ratios, not absolutes). Total {payload['seconds'] / 60:.1f} min.",
        "",
        f"Corpus: N JSONL records of 24 random words (one chunk each) embedded by `embed_corpus` (the `genret embed` "
        f"path) with the tests' tiny random 2-layer Qwen2 (hidden 32, fp32, 1 thread, batch 16, 384-d untrained "
        f"adapter): a stand-in whose cost per chunk is a small fraction of a real backbone's, so that the rest of "
        f"the pipeline shows. Load: those Parquet parts into FAISS Flat and Qdrant Edge (defaults: exact search "
        f"below 20,000 points, HNSW m 16 built at the end of a larger load) with `index_from_embeddings` (`genret "
        f"index --from-embeddings`). Search: the index opened for reading, {settings['queries']} encoded queries "
        f"one at a time in the store, k={K} (query encoding excluded: it does not depend on N).",
        "",
        "| chunks | embed s | of which encoder s | outside encoder s | embed chunks/s | "
        + " | ".join(f"load {s} s | load {s} rows/s" for s in stores)
        + " | "
        + " | ".join(f"{s} open s | {s} p50 ms | {s} p99 ms | {s} batched QPS" for s in stores)
        + " |",
        "|" + "---:|" * (5 + 2 * len(stores) + 4 * len(stores)),
    ]
    for r in rows:
        e = r["embed"]
        cells = [
            f"{r['n']:,}",
            f"{e['seconds']:.1f}",
            f"{e['encode_s']:.1f}",
            f"{e['other_s']:.1f}",
            f"{e['chunks_per_s']:,.0f}",
        ]
        cells += [x for s in stores for x in (f"{r['load'][s]['seconds']:.2f}", f"{r['load'][s]['rows_per_s']:,.0f}")]
        cells += [
            x
            for s in stores
            for x in (
                f"{r['search'][s]['open_s']:.2f}",
                f"{r['search'][s]['p50_ms']:.2f}",
                f"{r['search'][s]['p99_ms']:.2f}",
                f"{r['search'][s]['batched_qps']:,.0f}",
            )
        ]
        md.append("| " + " | ".join(cells) + " |")
    md += [
        "",
        "Least-squares fits of log(time) against log(N): time ~ N^exponent (1.0 = linear, 0 = flat):",
        "",
        "| series | sizes | exponent | time ratio largest/smallest | N ratio |",
        "|---|---|---:|---:|---:|",
    ]
    for name, f in payload["fits"].items():
        exp = "n/a" if f["exponent"] is None else f"{f['exponent']:.2f}"
        sizes = f"{f['sizes'][0]:,}-{f['sizes'][-1]:,} ({len(f['sizes'])})"
        md.append(f"| {name} | {sizes} | {exp} | {f['ratio']:.1f}x | {f['n_ratio']:.1f}x |")
    ref = payload["reference"]
    md += [
        "",
        f"How busy the machine was: one exact top-{K} search of a bare FAISS IndexFlatIP over 100k random "
        f"384-d vectors took {ref['start_ms']:.1f} ms (median of 100) at the start of this run and "
        f"{ref['end_ms']:.1f} ms at the end; the stores benchmark measured FAISS Flat at 100k at "
        f"{STORES_QUIET_100K_MS} ms on a quiet machine (benchmarks/results/stores.md): this run's CPU-bound "
        f"times are about {ref['start_ms'] / STORES_QUIET_100K_MS:.1f}x a quiet machine's, and other "
        "workloads may be slowed by other factors, so read the exponents and ratios, not the absolutes.",
    ]
    if (s := payload.get("serve")) is not None:
        md += [
            "",
            f"## `genret serve` on loopback ({s['n']:,} chunks, FAISS Flat, tiny encoder, 1 torch thread)",
            "",
            f"`genret serve` in its own process (uvicorn, one worker), searched over HTTP by client threads in "
            f"the benchmark's process, each sending {s['requests_per_client']} POST /search (k={K}) one after "
            "another on a kept-alive connection. The server serves one request at a time (a lock around the "
            "encoder and the store), so more clients add queueing, not throughput; the clients and the server "
            "share the 2 cores.",
            "",
            "| clients | requests | errors | wall s | queries/s | p50 ms | p99 ms | mean ms |",
            "|---:|---:|---:|---:|---:|---:|---:|---:|",
        ]
        for run in s["runs"]:
            md.append(
                f"| {run['clients']} | {run['requests']} | {run['errors']} | {run['seconds']:.1f} | "
                f"{run['qps']:.1f} | {run['p50_ms']:.1f} | {run['p99_ms']:.1f} | {run['mean_ms']:.1f} |"
            )
        md += ["", f"Server start to first answer (imports, tiny encoder, index open): {s['start_s']:.1f} s."]
    if payload.get("notes"):
        md += ["", *payload["notes"]]
    return "\n".join(md) + "\n"


# ------------------------------------------------------------------------------------------- main


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else list(argv)
    ap = argparse.ArgumentParser(prog="python -m benchmarks.scale", description=__doc__.split("\n")[0])
    ap.add_argument("--sizes", type=int, nargs="+", help=f"chunk counts (default {SIZES})")
    ap.add_argument("--quick", action="store_true", help=f"small sizes ({QUICK_SIZES}) and a short serve run")
    ap.add_argument("--queries", type=int, default=300, help="query vectors searched per store and size")
    ap.add_argument(
        "--url", help="also load into and search a Qdrant server at this URL (a collection per size, dropped after)"
    )
    ap.add_argument(
        "--serve-size",
        type=int,
        default=10_000,
        help="chunks in the index served (default 10,000; the largest size run if that is not one)",
    )
    ap.add_argument("--clients", type=int, default=8)
    ap.add_argument("--requests", type=int, help="requests per client (default 50, --quick 20)")
    ap.add_argument("--no-serve", action="store_true", help="skip the serving test")
    ap.add_argument("--out", type=Path, default=ROOT / "benchmarks" / "results")
    args = ap.parse_args(argv)
    sizes = sorted(args.sizes or (QUICK_SIZES if args.quick else SIZES))
    requests = args.requests or (20 if args.quick else 50)
    serve_n = args.serve_size if args.serve_size in sizes else sizes[-1]
    stores = [*STORES, *(["qdrant server"] if args.url else [])]
    env = environment(argv)
    logging.getLogger("genretrieval").setLevel(logging.ERROR)  # the untrained-adapter warning, once per load
    t_start = time.perf_counter()

    from genretrieval.encoder import load_encoder

    reference = {"start_ms": reference_search()}
    print(f"reference: bare FAISS Flat, 100k x 384-d, one query: {reference['start_ms']:.2f} ms", flush=True)
    rows: list[dict] = []
    serve = None
    with tempfile.TemporaryDirectory(prefix="genret-scale-") as tmp:
        tmp = Path(tmp)
        backbone, words = tiny_backbone(tmp / "backbone")
        encoder = load_encoder("gen", backbone=str(backbone), dtype="fp32", max_length=128, num_threads=1)
        query_texts = texts(max(args.queries, args.clients * requests), words, 8, seed=1)
        queries = encoder.encode_queries(query_texts[: args.queries], batch_size=32)
        (tmp / "warm-up").mkdir()  # first forward passes, lazy imports: not part of the first size's time
        write_corpus(tmp / "warm-up" / "records.jsonl", 200, words)
        embed(encoder, tmp / "warm-up", tmp / "emb-warm-up")
        for n in sizes:
            (tmp / f"corpus-{n}").mkdir()
            corpus = tmp / f"corpus-{n}" / "records.jsonl"
            write_corpus(corpus, n, words)
            emb = tmp / f"emb-{n}"
            row = {"n": n, "embed": embed(encoder, corpus, emb), "load": {}, "search": {}}
            if row["embed"]["chunks"] != n:
                raise RuntimeError(f"{n} records gave {row['embed']['chunks']} chunks, not one each")
            for store in stores:
                url = args.url if store == "qdrant server" else None
                where = tmp / f"index-{store.replace(' ', '-')}-{n}"
                if url:  # the server's collection is named after this folder: one of this run's own
                    where = tmp / f"index-scale-{n}-{tmp.name.rsplit('-', 1)[-1]}"
                row["load"][store] = load(emb, where, "qdrant" if url else store, url=url)
                row["search"][store] = search(where, queries, url=url)
                if not (store == "faiss" and n == serve_n):
                    for p in sorted(where.rglob("*"), reverse=True):  # free the disk as we go
                        p.unlink() if p.is_file() or p.is_symlink() else p.rmdir()
            for p in sorted(emb.rglob("*"), reverse=True):
                p.unlink() if p.is_file() or p.is_symlink() else p.rmdir()
            rows.append(row)
            e = row["embed"]
            print(
                f"{n:>7,} chunks: embed {e['seconds']:.1f}s ({e['encode_s']:.1f}s encoder); "
                + "; ".join(
                    f"{s} load {row['load'][s]['seconds']:.2f}s, search p50 {row['search'][s]['p50_ms']:.2f} ms"
                    for s in stores
                ),
                flush=True,
            )
        del encoder
        if not args.no_serve:
            t0 = time.perf_counter()
            with server(tmp / f"index-faiss-{serve_n}", tmp / "serve.log") as port:
                start_s = time.perf_counter() - t0
                runs = [load_test(port, 1, requests, query_texts), load_test(port, args.clients, requests, query_texts)]
            serve = {"n": serve_n, "requests_per_client": requests, "start_s": start_s, "runs": runs}
            for r in runs:
                print(
                    f"serve, {r['clients']} client(s): {r['qps']:.1f} queries/s, p50 {r['p50_ms']:.1f} ms, "
                    f"p99 {r['p99_ms']:.1f} ms, {r['errors']} errors",
                    flush=True,
                )
    reference["end_ms"] = reference_search()
    settings = {**vars(args), "out": str(args.out), "sizes": sizes, "requests": requests, "serve_size": serve_n}
    payload = {
        "environment": env,
        "reference": reference,
        "settings": settings,
        "stores": stores,
        "results": rows,
        "fits": fits(rows, stores),
        "serve": serve,
        "seconds": time.perf_counter() - t_start,
        "load_average_end": os.getloadavg(),
    }
    print()
    for name, f in payload["fits"].items():
        exp = "n/a" if f["exponent"] is None else f"{f['exponent']:.2f}"
        print(f"{name:>34}: exponent {exp}, {f['ratio']:.1f}x the time for {f['n_ratio']:.1f}x the chunks")
    print(
        f"reference search {reference['start_ms']:.1f} ms at the start, {reference['end_ms']:.1f} ms at the end "
        f"({STORES_QUIET_100K_MS} ms on a quiet machine)"
    )
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "scale.json").write_text(json.dumps(payload, indent=2, default=str) + "\n")
    (args.out / "scale.md").write_text(report(payload))
    print(f"\nwrote {args.out / 'scale.md'} and {args.out / 'scale.json'} in {payload['seconds'] / 60:.1f} min")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
