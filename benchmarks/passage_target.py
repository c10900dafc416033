"""How close the read-out's cheap passage target is to the faithful one.

    python -m benchmarks.passage_target --backbone qwen2.5-coder-0.5b-instruct \
        --run runs/qwen2.5-coder-0.5b-instruct --n 300 --num-threads 2
    python -m benchmarks.passage_target --backbone qwen2.5-coder-0.5b-instruct \
        --corpus runs/corpus/foldoc.jsonl --n 200 --num-threads 2

Stage ``readout`` reads each cached answer (cut to 64 tokens) as a training passage on the document path and
pulls it towards the teacher embedding of the answer itself. The method's target for a document is the teacher
embedding of what the backbone answers to it: its reply to "Summarize the following passage: <passage>". For a
seeded sample of the run's answers, this generates that summary and reports the teacher cosine between the two
targets (mean and percentiles), against the cosine of unrelated pairs as the floor, and how often a summary's
embedding ranks its own passage's cheap target first among the sample's. With ``--corpus`` the passages are a
sample of a ``--readout-corpus`` file instead (the teacher embedding of the passage is its cheap target there
too). Writes ``benchmarks/results/passage_target-<backbone>[-<corpus>].{json,md}``.
"""

from __future__ import annotations

import argparse
import json
import random
import sys
import time
from pathlib import Path

import numpy as np


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--backbone", default="qwen2.5-coder-0.5b-instruct")
    src = ap.add_mutually_exclusive_group(required=True)
    src.add_argument("--run", help="training run directory (its responses/ are the passages)")
    src.add_argument("--corpus", help="a --readout-corpus JSONL file (its passages, read as stage readout reads them)")
    ap.add_argument("--n", type=int, default=300, help="passages sampled")
    ap.add_argument("--max-passage-tokens", type=int, default=64)
    ap.add_argument("--max-new-tokens", type=int, default=64, help="summary length")
    ap.add_argument("--batch-size", type=int, default=32)
    ap.add_argument("--num-threads", type=int, default=None)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--out", default="benchmarks/results")
    args = ap.parse_args(argv)

    from genretrieval.encoder import load_encoder
    from genretrieval.instructions import DOCUMENT_DEFAULT
    from genretrieval.train.data import load_passages
    from genretrieval.train.responses import read_responses

    if args.corpus:
        rows = [{"id": p.id, "response": p.text} for p in load_passages([args.corpus])]
    else:
        rows = [r for r in read_responses(Path(args.run) / "responses").to_pylist() if r["response"].strip()]
    rows = random.Random(args.seed).sample(sorted(rows, key=lambda r: r["id"]), min(args.n, len(rows)))
    hyde = load_encoder("hyde", backbone=args.backbone, num_threads=args.num_threads)
    hyde.max_new_tokens = args.max_new_tokens  # type: ignore[attr-defined]
    tok = hyde.tokenizer  # type: ignore[attr-defined]
    cut = tok(
        [r["response"] for r in rows], truncation=True, max_length=args.max_passage_tokens, add_special_tokens=False
    )["input_ids"]
    passages = [tok.decode(ids, skip_special_tokens=True) for ids in cut]
    t0 = time.time()
    summaries = hyde.generate([f"{DOCUMENT_DEFAULT} {p}" for p in passages], args.batch_size, progress=True)  # type: ignore[attr-defined]
    seconds = time.time() - t0
    teacher = hyde.teacher  # type: ignore[attr-defined]
    cheap = teacher.encode([r["response"] for r in rows], normalize=True)
    faithful = teacher.encode(summaries, normalize=True)
    sims = faithful @ cheap.T
    own = np.diag(sims)
    unrelated = sims[~np.eye(len(rows), dtype=bool)]
    stats = {
        "n": len(rows),
        "cos_mean": float(own.mean()),
        "cos_p10": float(np.percentile(own, 10)),
        "cos_p50": float(np.percentile(own, 50)),
        "unrelated_cos_mean": float(unrelated.mean()),
        "own_first": float((sims.argmax(1) == np.arange(len(rows))).mean()),
        "summary_seconds": seconds,
    }
    examples = [{"passage": p, "summary": s} for p, s in list(zip(passages, summaries))[:3]]
    command = "python -m benchmarks.passage_target " + " ".join(argv if argv is not None else sys.argv[1:])
    out, name = (
        Path(args.out),
        f"passage_target-{args.backbone}" + (f"-{Path(args.corpus).stem}" if args.corpus else ""),
    )
    out.mkdir(parents=True, exist_ok=True)
    (out / f"{name}.json").write_text(
        json.dumps({"backbone": args.backbone, "command": command, **stats, "examples": examples}, indent=2) + "\n"
    )
    lines = [
        f"# Passage targets, {args.backbone}: the answer itself against the backbone's summary of it",
        "",
        f"{stats['n']} {'corpus passages' if args.corpus else 'cached answers'} (cut to {args.max_passage_tokens} "
        "tokens) read as passages; summaries of up to "
        f"{args.max_new_tokens} tokens ({seconds:.0f} s).",
        "",
        "| teacher cos(summary, answer): mean | p10 | p50 | unrelated pairs: mean | summary finds its answer first |",
        "|---:|---:|---:|---:|---:|",
        f"| {stats['cos_mean']:.3f} | {stats['cos_p10']:.3f} | {stats['cos_p50']:.3f} | "
        f"{stats['unrelated_cos_mean']:.3f} | {stats['own_first']:.3f} |",
        "",
        "Examples:",
        "",
        *(f"- passage: {e['passage']!r}\n  - summary: {e['summary']!r}" for e in examples),
        "",
        f"Command: `{command}`",
        "",
    ]
    (out / f"{name}.md").write_text("\n".join(lines))
    print("\n".join(lines))
    return 0


if __name__ == "__main__":
    sys.exit(main())
