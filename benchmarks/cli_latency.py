"""Where the seconds of one `genret search` go: process start, imports, model load, encode, store lookup.

    python -m benchmarks.cli_latency [--backbone smollm2-135m-instruct --backbone qwen2.5-coder-0.5b-instruct]
                                     [--repeats 3] [--backend qdrant]

Indexes docs/ once per backbone in a temporary folder, then in fresh processes, ``--repeats`` times each:
``genret --help`` and ``genret search`` end to end (wall time), and a driver that walks the same path as
``genret search`` (read the manifest, load the encoder it names, open the index, search one query) with a clock
between the steps. The backbone cache under $GENRET_HOME must be built already (run any command with each
backbone once). Prints a table and writes benchmarks/results/cli_latency.{json,md}.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
QUERY = "how do I resume an interrupted index?"
HEAVY = ("torch", "transformers", "sentence_transformers", "faiss", "qdrant_edge", "qdrant_client", "scipy")

# Runs in a fresh interpreter: argv = index folder, query, the parent's time.time() just before the spawn.
DRIVER = r"""
import sys, time
t_spawn = float(sys.argv[3])
t0 = time.time(); p0 = time.perf_counter()
import genretrieval.cli  # what `genret --help` loads
p1 = time.perf_counter()
import torch, transformers.modeling_utils  # model code: what every command that encodes needs
import genretrieval.encoder, genretrieval.index
p2 = time.perf_counter()
from genretrieval.encoder import load_encoder
from genretrieval.index import Index, read_manifest
enc = read_manifest(sys.argv[1]).encoder_spec.load()
p3 = time.perf_counter()
spent = []
encode = enc.encode_queries
def timed(*args, **kwargs):
    t = time.perf_counter()
    try:
        return encode(*args, **kwargs)
    finally:
        spent.append(time.perf_counter() - t)
enc.encode_queries = timed
with Index.open(sys.argv[1], encoder=enc) as idx:
    p4 = time.perf_counter()
    hits = idx.search([sys.argv[2]], k=10)
    p5 = time.perf_counter()
import json
heavy = sorted({m.split(".")[0] for m in sys.modules} & set(sys.argv[4].split(",")))
print(json.dumps({"start_s": t0 - t_spawn + (p1 - p0), "imports_s": p2 - p1, "load_s": p3 - p2,
                  "open_s": p4 - p3, "encode_s": sum(spent), "lookup_s": p5 - p4 - sum(spent),
                  "total_s": time.time() - t_spawn, "hits": len(hits[0]), "dtype": enc.identity().get("dtype"),
                  "modules": heavy}))
"""


def genret(*args: str, env: dict | None = None) -> tuple[float, subprocess.CompletedProcess]:
    t = time.perf_counter()
    proc = subprocess.run(
        [sys.executable, "-m", "genretrieval.cli", *args], capture_output=True, text=True, cwd=ROOT, env=env
    )
    wall = time.perf_counter() - t
    if proc.returncode != 0:
        raise RuntimeError(f"genret {' '.join(args)} failed: {proc.stderr.strip()[-2000:]}")
    return wall, proc


def driver(index: Path) -> dict:
    proc = subprocess.run(
        [sys.executable, "-c", DRIVER, str(index), QUERY, repr(time.time()), ",".join(HEAVY)],
        capture_output=True,
        text=True,
        cwd=ROOT,
    )
    if proc.returncode != 0:
        raise RuntimeError(f"driver failed: {proc.stderr.strip()[-2000:]}")
    return json.loads(proc.stdout.strip().splitlines()[-1])


def median(rows: list[dict], key: str) -> float:
    return statistics.median(r[key] for r in rows)


def measure(backbone: str, backend: str, repeats: int, workdir: Path) -> dict:
    index = workdir / f"idx-{backbone}"
    index_s, _ = genret(
        "index", str(ROOT / "docs"), "--index-dir", str(index), "--backbone", backbone, "--backend", backend
    )
    walls, phases = [], []
    for _ in range(repeats):  # alternate, so a burst of load on the machine hits both alike
        walls.append(genret("search", QUERY, "--index-dir", str(index), "-k", "10")[0])
        phases.append(driver(index))
    keys = ("start_s", "imports_s", "load_s", "open_s", "encode_s", "lookup_s", "total_s")
    return {
        "backbone": backbone,
        "backend": backend,
        "index_docs_s": index_s,
        "search_wall_s": walls,
        "search_wall_median_s": statistics.median(walls),
        "phases": phases,
        "phases_median_s": {k: median(phases, k) for k in keys},
        "dtype": phases[0]["dtype"],
        "modules_loaded": phases[0]["modules"],
    }


def python_start(repeats: int) -> float:
    walls = []
    for _ in range(repeats):
        t = time.perf_counter()
        subprocess.run([sys.executable, "-c", "pass"], check=True)
        walls.append(time.perf_counter() - t)
    return statistics.median(walls)


def markdown(result: dict) -> str:
    lines = [
        "# `genret search`: where the time goes",
        "",
        f"Command: `{result['command']}`",
        "",
        f"Machine: {result['machine']}, {result['cpus']} CPUs, load average {result['loadavg']} at the start "
        f"(other work shares these cores: read ratios, not absolutes). Medians of {result['repeats']} fresh "
        "processes each.",
        "",
        f"`python -c pass`: {result['python_start_s']:.2f} s; `genret --help`: {result['help_wall_median_s']:.2f} s.",
        "",
        "| backbone | dtype | start (interpreter + CLI) s | imports (torch, transformers) s | model load s "
        "| open index s | encode s | store lookup s | driver total s | `genret search` wall s |",
        "|---|---|---:|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for r in result["rows"]:
        m = r["phases_median_s"]
        lines.append(
            f"| {r['backbone']} | {r['dtype']} | {m['start_s']:.2f} | {m['imports_s']:.2f} | "
            f"{m['load_s']:.2f} | {m['open_s']:.2f} | {m['encode_s']:.2f} | {m['lookup_s']:.2f} | "
            f"{m['total_s']:.2f} | {r['search_wall_median_s']:.2f} |"
        )
    lines += [
        "",
        "Model load is `load_encoder` from the cached backbone (weights mapped from the dtype's copy, "
        "tokenizer snapshot, adapter); encode is the one query's forward pass, the first after the load "
        "(it touches every weight page). Heavy modules loaded by a search: "
        + ", ".join(result["rows"][0]["modules_loaded"])
        + ".",
    ]
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument(
        "--backbone", action="append", help="Repeatable (default: smollm2-135m-instruct and the default backbone)."
    )
    p.add_argument("--backend", default="qdrant")
    p.add_argument("--repeats", type=int, default=3)
    p.add_argument("--out", type=Path, default=ROOT / "benchmarks" / "results")
    a = p.parse_args(argv)
    backbones = a.backbone or ["smollm2-135m-instruct", "qwen2.5-coder-0.5b-instruct"]
    command = (
        "python -m benchmarks.cli_latency "
        + " ".join(f"--backbone {b}" for b in backbones)
        + f" --backend {a.backend} --repeats {a.repeats}"
    )
    result = {
        "command": command,
        "machine": platform.processor() or platform.machine(),
        "cpus": os.cpu_count(),
        "loadavg": " ".join(f"{x:.1f}" for x in os.getloadavg()),
        "python": platform.python_version(),
        "repeats": a.repeats,
        "query": QUERY,
        "python_start_s": python_start(a.repeats),
        "help_wall_median_s": statistics.median(genret("--help")[0] for _ in range(a.repeats)),
    }
    with tempfile.TemporaryDirectory() as tmp:
        result["rows"] = [measure(b, a.backend, a.repeats, Path(tmp)) for b in backbones]
    a.out.mkdir(parents=True, exist_ok=True)
    (a.out / "cli_latency.json").write_text(json.dumps(result, indent=2) + "\n")
    text = markdown(result)
    (a.out / "cli_latency.md").write_text(text)
    print(text)


if __name__ == "__main__":
    main()
