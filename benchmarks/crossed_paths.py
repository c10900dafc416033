"""Which path limits retrieval: the generative encoder's queries against the teacher's passages, and the reverse.

    python -m benchmarks.crossed_paths --backbone qwen2.5-coder-0.5b-instruct --num-threads 1

The read-out is trained to put both paths in the teacher's space (each query near the teacher embedding of its
answer, each passage near the teacher embedding of itself), so the two encoders' embeddings can be crossed. On a
BEIR set (default nq-wiki) the four combinations are scored with nDCG@10 and Recall@100: a crossed row far above
gen x gen says the other path is the one that loses. Diagnostic only; nothing is chosen by it. The generative
encoder reads the feature cache that ``genret eval`` fills, so a corpus already evaluated is not re-encoded.
Writes ``benchmarks/results/crossed_paths-<backbone>.{json,md}``.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import numpy as np


def score(queries: np.ndarray, docs: np.ndarray, data, k: int = 100) -> dict[str, float]:
    from genretrieval.evaluation.metrics import trec_metrics
    from genretrieval.evaluation.retrieval import best_k

    idx, vals = best_k(queries @ docs.T, k)
    run = {q: {data.doc_ids[i]: float(v) for i, v in zip(ii, vv)} for q, ii, vv in zip(data.query_ids, idx, vals)}
    m = trec_metrics(run, {q: data.qrels.get(q, {}) for q in data.query_ids})["mean"]
    return {"ndcg@10": m["ndcg@10"], "recall@100": m["recall@100"]}


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--backbone", default="qwen2.5-coder-0.5b-instruct")
    ap.add_argument("--adapter", default=None, help="adapter directory (default: the shipped one)")
    ap.add_argument("--dataset", default=None, help="BEIR folder (default: $GENRET_DATA/nq-wiki)")
    ap.add_argument("--num-threads", type=int, default=None)
    ap.add_argument("--out", default="benchmarks/results")
    args = ap.parse_args(argv)

    from genretrieval.encoder import load_encoder
    from genretrieval.encoder.features import default_feature_dir
    from genretrieval.evaluation.data import data_root, load_beir

    dataset = Path(args.dataset) if args.dataset else data_root() / "nq-wiki"
    data = load_beir(dataset)
    gen = load_encoder("gen", backbone=args.backbone, adapter=args.adapter, num_threads=args.num_threads)
    gen.feature_cache = default_feature_dir()  # type: ignore[attr-defined]
    teacher = load_encoder("teacher", num_threads=args.num_threads)
    emb = {}
    for name, enc in (("gen", gen), ("teacher", teacher)):
        emb[name] = (
            enc.encode_queries(data.queries, task="retrieval", progress=True),
            enc.encode_documents(data.documents, task="retrieval", progress=True),
        )
    rows = [
        {"queries": q, "passages": p, **score(emb[q][0], emb[p][1], data)}
        for q, p in (("gen", "gen"), ("gen", "teacher"), ("teacher", "gen"), ("teacher", "teacher"))
    ]
    command = "python -m benchmarks.crossed_paths " + " ".join(argv if argv is not None else sys.argv[1:])
    out, name = Path(args.out), f"crossed_paths-{args.backbone}"
    out.mkdir(parents=True, exist_ok=True)
    meta = {"backbone": args.backbone, "adapter": args.adapter or "shipped", "dataset": str(dataset)}
    (out / f"{name}.json").write_text(json.dumps({**meta, "command": command, "rows": rows}, indent=2) + "\n")
    lines = [
        f"# Crossed paths, {args.backbone} ({dataset.name}, {len(data.query_ids)} queries, "
        f"{len(data.doc_ids)} passages)",
        "",
        "| queries | passages | nDCG@10 | Recall@100 |",
        "|---|---|---:|---:|",
        *(f"| {r['queries']} | {r['passages']} | {r['ndcg@10']:.3f} | {r['recall@100']:.3f} |" for r in rows),
        "",
        f"Command: `{command}`",
        "",
    ]
    (out / f"{name}.md").write_text("\n".join(lines))
    print("\n".join(lines))
    return 0


if __name__ == "__main__":
    sys.exit(main())
