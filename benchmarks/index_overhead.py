"""Share of `genret index` wall time spent outside encoding (target <= 10%), per store, in one run.

    python -m benchmarks.index_overhead [--passages 200] [--backbone qwen2.5-coder-0.5b-instruct]

Each backend indexes the same Wikipedia passages (a JSONL corpus) in a fresh `genret index` process; the wall
time includes start-up, model load, chunking, store writes and flushes. Results go to
benchmarks/results/index_overhead.{json,md}.
"""

from __future__ import annotations

import argparse
import json
import re
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
DATA = ROOT.parent / "shared" / "data"


def measure(backend: str, corpus: Path, backbone: str, workdir: Path) -> dict:
    cmd = [
        sys.executable,
        "-m",
        "genretrieval.cli",
        "index",
        str(corpus),
        "--backend",
        backend,
        "--index-dir",
        str(workdir / f"idx-{backend}"),
        "--backbone",
        backbone,
    ]
    t = time.perf_counter()
    proc = subprocess.run(cmd, capture_output=True, text=True, cwd=ROOT)
    wall = time.perf_counter() - t
    if proc.returncode != 0:
        raise RuntimeError(proc.stderr[-2000:])
    summary = proc.stderr.strip().splitlines()[-1]
    m = re.search(r"(\d+) chunks: .* ([\d.]+)s \(([\d.]+)s encoding\)", summary)
    chunks, add_s, encode_s = int(m.group(1)), float(m.group(2)), float(m.group(3))
    return {
        "backend": backend,
        "chunks": chunks,
        "wall_s": wall,
        "add_s": add_s,
        "encode_s": encode_s,
        "non_encoding_share": (wall - encode_s) / wall,
        "add_non_encoding_share": (add_s - encode_s) / add_s,
    }


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--passages", type=int, default=200)
    p.add_argument("--backbone", default="qwen2.5-coder-0.5b-instruct")
    p.add_argument("--out", type=Path, default=ROOT / "benchmarks" / "results")
    a = p.parse_args(argv)
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        corpus = tmp / "wiki.jsonl"
        with (DATA / "wiki-passages" / "wiki_passages.jsonl").open() as f, corpus.open("w") as out:
            for _, line in zip(range(a.passages), f):
                out.write(line)
        rows = [measure(b, corpus, a.backbone, tmp) for b in ("faiss", "qdrant")]
    command = f"python -m benchmarks.index_overhead --passages {a.passages} --backbone {a.backbone}"
    lines = [
        "# `genret index` time outside encoding",
        "",
        f"Command: `{command}`",
        "",
        "| backend | chunks | process wall s | Index.add s | encoding s | non-encoding share of wall "
        "(target <= 10%) | non-encoding share of Index.add |",
        "|---|---:|---:|---:|---:|---:|---:|",
    ]
    for r in rows:
        lines.append(
            f"| {r['backend']} | {r['chunks']} | {r['wall_s']:.1f} | {r['add_s']:.1f} | {r['encode_s']:.1f} "
            f"| {100 * r['non_encoding_share']:.1f}% | {100 * r['add_non_encoding_share']:.1f}% |"
        )
    lines += [
        "",
        "Wall time is the whole `genret index` process (Python start-up, imports, backbone load from the "
        "safetensors cache, chunking, embedding, store writes, flushes).",
    ]
    a.out.mkdir(parents=True, exist_ok=True)
    (a.out / "index_overhead.json").write_text(json.dumps({"command": command, "results": rows}, indent=2) + "\n")
    (a.out / "index_overhead.md").write_text("\n".join(lines) + "\n")
    print("\n".join(lines))


if __name__ == "__main__":
    main()
