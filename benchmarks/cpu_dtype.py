"""CPU dtype: encoding speed in bf16 against fp32 on this machine, and the dtype the default picks.

    python -m benchmarks.cpu_dtype --backbone smollm2-135m-instruct --passages 16

Both dtypes encode the same nq-wiki passages, alternating, in one process; the ratio is what counts (these
machines are noisy). Writes benchmarks/results/cpu_dtype.{json,md}.
"""

from __future__ import annotations

import argparse
import json
import platform
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
DATA = ROOT.parent / "shared" / "data"


def main(argv: list[str] | None = None) -> int:
    import numpy as np

    from genretrieval.encoder import load_encoder
    from genretrieval.encoder.device import cpu_supports_bf16, default_precision

    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--backbone", default="smollm2-135m-instruct")
    ap.add_argument("--passages", type=int, default=16)
    ap.add_argument("--repeats", type=int, default=2)
    ap.add_argument("--num-threads", type=int, default=2)
    ap.add_argument("--out", default=str(ROOT / "benchmarks" / "results"))
    args = ap.parse_args(argv)
    rows = [json.loads(line) for line in (DATA / "wiki-passages" / "wiki_passages.jsonl").open()][: args.passages]
    texts = [f"{r['title']} # {r['text']}" for r in rows]
    encoders = {
        d: load_encoder("gen", backbone=args.backbone, dtype=d, device="cpu", num_threads=args.num_threads)
        for d in ("fp32", "bf16")
    }
    tokens = sum(len(r) for r in encoders["fp32"].tokenize(texts, encoders["fp32"].task("retrieval").document))
    seconds = {d: [] for d in encoders}
    vectors = {}
    for _ in range(args.repeats):
        for d, enc in encoders.items():
            t0 = time.perf_counter()
            vectors[d] = enc.encode_documents(texts)
            seconds[d].append(time.perf_counter() - t0)
    best = {d: min(s) for d, s in seconds.items()}
    result = {
        "command": "python -m benchmarks.cpu_dtype " + " ".join(argv if argv is not None else sys.argv[1:]),
        "backbone": args.backbone,
        "passages": len(texts),
        "tokens": tokens,
        "threads": args.num_threads,
        "cpu": platform.processor() or platform.machine(),
        "native_bf16": cpu_supports_bf16(),
        "default": default_precision(),
        "tokens_per_s": {d: round(tokens / s, 1) for d, s in best.items()},
        "bf16_over_fp32_time": round(best["bf16"] / best["fp32"], 2),
        "cosine_bf16_vs_fp32": round(float(np.min(np.sum(vectors["bf16"] * vectors["fp32"], axis=1))), 5),
    }
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    (out / "cpu_dtype.json").write_text(json.dumps(result, indent=2) + "\n")
    md = [
        f"# CPU dtype ({args.backbone}, {len(texts)} passages, {tokens} tokens, {args.num_threads} threads)",
        "",
        f"Native bf16 (avx512_bf16/amx_bf16): {result['native_bf16']}; default here: "
        f"{result['default']['dtype']} ({result['default']['why']}).",
        "",
        "| dtype | tokens/s |",
        "|---|---:|",
        *(f"| {d} | {v} |" for d, v in result["tokens_per_s"].items()),
        "",
        f"bf16 takes {result['bf16_over_fp32_time']}x the time of fp32; lowest cosine between the two: "
        f"{result['cosine_bf16_vs_fp32']}.",
        "",
        f"Command: `{result['command']}`",
        "",
    ]
    (out / "cpu_dtype.md").write_text("\n".join(md))
    print("\n".join(md))
    return 0


if __name__ == "__main__":
    sys.exit(main())
