"""Encoding throughput: generative encoder vs a bare backbone forward (the limit) and vs HyDE, in one run.

    python -m benchmarks.encode_throughput --backbone smollm2-135m-instruct --backbone qwen2.5-coder-0.5b-instruct

Each backbone runs in its own process so its peak RSS is its own. Results merge into
benchmarks/results/encode_throughput.{json,md}.
"""

from __future__ import annotations

import argparse
import json
import platform
import resource
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
DATA = ROOT.parent / "shared" / "data"


def _texts(data_dir: Path, passages: int, queries: int) -> tuple[list[str], list[str]]:
    docs = [json.loads(line) for line in (data_dir / "wiki-passages" / "wiki_passages.jsonl").open()][:passages]
    qs = [json.loads(line)["text"] for line in (data_dir / "nq-wiki" / "queries.jsonl").open()][:queries]
    return [f"{d['title']} # {d['text']}" for d in docs], qs


def _peak_rss_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def measure(
    backbone: str,
    passages: int,
    queries: int,
    batch_size: int,
    data_dir: Path,
    max_new_tokens: int = 128,
    repeats: int = 2,
) -> dict:
    """All measurements for one backbone, in this process."""
    import torch

    from genretrieval.encoder import load_encoder
    from genretrieval.encoder.hyde import HydeEncoder
    from genretrieval.encoder.model import position_ids_from_mask
    from genretrieval.encoder.teacher import TeacherEncoder

    docs, qs = _texts(data_dir, passages, queries)
    enc = load_encoder("gen", backbone=backbone)
    teacher = TeacherEncoder()
    instruction = enc.task("retrieval").document
    rows = enc.tokenize(docs, instruction)
    order = sorted(range(len(rows)), key=lambda i: -len(rows[i]))
    batches = [enc.pad([rows[i] for i in order[s : s + batch_size]]) for s in range(0, len(order), batch_size)]
    tokens = sum(len(r) for r in rows)
    enc.encode_documents(docs[:batch_size], batch_size=batch_size)  # warm-up

    # The physical limit: the decoder alone over the very same padded batches, no special tokens, no heads.
    # Interleaved repeats, best of each, so a noisy neighbour hits both sides alike.
    decoder = enc.model.backbone()
    bare_s = enc_s = float("inf")
    for _ in range(repeats):
        with torch.inference_mode():
            t = time.perf_counter()
            for ids, mask in batches:
                decoder(input_ids=ids, attention_mask=mask, position_ids=position_ids_from_mask(mask), use_cache=False)
            bare_s = min(bare_s, time.perf_counter() - t)
        t = time.perf_counter()
        enc.encode_documents(docs, batch_size=batch_size)
        enc_s = min(enc_s, time.perf_counter() - t)

    # HyDE: the same backbone writes a hypothetical answer, then the teacher embeds it.
    t = time.perf_counter()
    enc.encode_queries(qs, batch_size=batch_size)
    gen_q_s = time.perf_counter() - t
    hyde = HydeEncoder(enc.model.lm, enc.tokenizer, teacher, backbone, max_new_tokens, min_new_tokens=max_new_tokens)
    t = time.perf_counter()
    hyde.encode_queries(qs, batch_size=batch_size)
    hyde_s = time.perf_counter() - t
    return {
        "backbone": backbone,
        "dtype": str(enc.dtype).removeprefix("torch."),
        "threads": torch.get_num_threads(),
        "passages": len(docs),
        "passage_tokens": tokens,
        "batch_size": batch_size,
        "encode_tokens_per_s": tokens / enc_s,
        "bare_forward_tokens_per_s": tokens / bare_s,
        "encode_vs_bare": bare_s / enc_s,
        "queries": len(qs),
        "gen_queries_per_s": len(qs) / gen_q_s,
        "hyde_queries_per_s": len(qs) / hyde_s,
        "hyde_new_tokens": max_new_tokens,
        "gen_vs_hyde": hyde_s / gen_q_s,
        "peak_rss_mb": _peak_rss_mb(),
    }


def _markdown(results: dict, command: str) -> str:
    lines = [
        "# Encoding throughput",
        "",
        f"Command: `{command}`",
        "",
        f"Machine: {platform.processor() or platform.machine()}, Python {platform.python_version()}",
        "",
        "| backbone | dtype | threads | encode tok/s | bare forward tok/s | encode / bare (target >= 0.9) | "
        "gen q/s | HyDE q/s | gen / HyDE (target >= 20) | peak RSS MB |",
        "|---|---|---|---|---|---|---|---|---|---|",
    ]
    for r in results.values():
        lines.append(
            f"| {r['backbone']} | {r['dtype']} | {r['threads']} | {r['encode_tokens_per_s']:.0f} | "
            f"{r['bare_forward_tokens_per_s']:.0f} | {r['encode_vs_bare']:.3f} | "
            f"{r['gen_queries_per_s']:.2f} | {r['hyde_queries_per_s']:.3f} | {r['gen_vs_hyde']:.1f}x | "
            f"{r['peak_rss_mb']:.0f} |"
        )
    lines += [
        "",
        f"{next(iter(results.values()))['passages']} Wikipedia passages (about 100 words) encoded as "
        "documents, length-sorted batches; the bare forward runs the decoder over the same padded batches "
        "without the special tokens or the heads. HyDE generates exactly "
        f"{next(iter(results.values()))['hyde_new_tokens']} tokens per NQ query and embeds them with "
        "all-MiniLM-L6-v2. Ratios come from one process each, so machine noise cancels within a row.",
    ]
    return "\n".join(lines) + "\n"


def run(
    backbones: list[str],
    passages: int = 64,
    queries: int = 16,
    batch_size: int = 16,
    out: Path = ROOT / "benchmarks" / "results",
    data_dir: Path = DATA,
) -> dict:
    """Measure each backbone in a child process, merge into ``out``/encode_throughput.{json,md}, print the table."""
    out.mkdir(parents=True, exist_ok=True)
    path = out / "encode_throughput.json"
    results = json.loads(path.read_text())["results"] if path.exists() else {}
    for b in backbones:
        cmd = [
            sys.executable,
            "-m",
            "benchmarks.encode_throughput",
            "--child",
            "--backbone",
            b,
            "--passages",
            str(passages),
            "--queries",
            str(queries),
            "--batch-size",
            str(batch_size),
            "--data-dir",
            str(data_dir),
        ]
        proc = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True)
        if proc.returncode != 0:
            raise RuntimeError(f"benchmark for {b} failed:\n{proc.stderr[-3000:]}")
        results[b] = json.loads(proc.stdout.strip().splitlines()[-1])
    command = (
        "python -m benchmarks.encode_throughput "
        + " ".join(f"--backbone {b}" for b in backbones)
        + f" --passages {passages} --queries {queries} --batch-size {batch_size}"
    )
    path.write_text(json.dumps({"command": command, "results": results}, indent=2) + "\n")
    md = _markdown(results, command)
    (out / "encode_throughput.md").write_text(md)
    print(md)
    return results


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--backbone", action="append", default=None)
    p.add_argument("--passages", type=int, default=64)
    p.add_argument("--queries", type=int, default=16)
    p.add_argument("--batch-size", type=int, default=16)
    p.add_argument("--data-dir", type=Path, default=DATA)
    p.add_argument("--out", type=Path, default=ROOT / "benchmarks" / "results")
    p.add_argument("--child", action="store_true", help=argparse.SUPPRESS)
    a = p.parse_args(argv)
    backbones = a.backbone or ["smollm2-135m-instruct"]
    if a.child:
        print(json.dumps(measure(backbones[0], a.passages, a.queries, a.batch_size, a.data_dir)))
    else:
        run(backbones, a.passages, a.queries, a.batch_size, a.out, a.data_dir)


if __name__ == "__main__":
    main()
