"""Read-out ablations on cached features: one lever at a time, each scored on held-out training rows.

    python -m benchmarks.readout_ablation --backbone smollm2-135m-instruct --run runs/smollm2-135m-instruct \
        --queries ../shared/data/train-queries/queries_train_permissive.jsonl:2500 \
        --queries ../shared/data/safety-prompts/safety_prompts_train.jsonl:500

Rows: the chosen recipe (stage ``readout`` defaults), then one changed setting per row, the training-data curve,
the init adapter's own read-out and a ridge read-out on the same features, and the teacher (its embedding of
the query against its embedding of the answer). The metric of record is nDCG@10 of each held-out query's own
answer (read as a passage) among the held-out answers. Features are computed once and cached in the run
directory. Writes ``benchmarks/results/readout_ablation-<backbone>.{json,md}``.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from dataclasses import replace
from pathlib import Path

import numpy as np
import torch

VARIANTS = {  # name -> ReadoutConfig changes against the chosen recipe
    "chosen: InfoNCE, queries + passages, query-passage term, duplicates masked": {},
    "queries only (no passage training)": {"passages": False},
    "no query-passage term": {"query_passage_weight": 0.0},
    "no duplicate masking": {"duplicate_threshold": 1.01},
    "temperature 0.1": {"temperature": 0.1},
    "temperature 0.02": {"temperature": 0.02},
}
FRACTIONS = (0.125, 0.25, 0.5, 1.0)


class Linear(torch.nn.Module):
    def __init__(self, weight: torch.Tensor, bias: torch.Tensor):
        super().__init__()
        self.weight, self.bias = weight, bias

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x @ self.weight.T + self.bias


def ridge(x: np.ndarray, y: np.ndarray, penalty: float = 100.0) -> Linear:
    """Ridge regression on standardised features to unit targets (the recipe of the shipped adapters)."""
    x64, y64 = torch.from_numpy(x).double(), torch.nn.functional.normalize(torch.from_numpy(y).double(), dim=-1)
    mu, sd = x64.mean(0), x64.std(0) + 1e-6
    z = (x64 - mu) / sd
    w = torch.linalg.solve(z.T @ z + penalty * torch.eye(z.shape[1], dtype=z.dtype), z.T @ (y64 - y64.mean(0)))
    weight = (w / sd[:, None]).T
    return Linear(weight.float(), (y64.mean(0) - (mu / sd) @ w).float())


def save_with_align(prep, state: tuple[torch.Tensor, torch.Tensor], directory: Path, rows: int) -> None:
    """The init adapter with ``align`` replaced by a fitted read-out (for evaluating a data-curve point)."""
    from genretrieval.encoder.adapter import save_adapter

    model = prep.model
    keep = (model.align.weight.detach().clone(), model.align.bias.detach().clone())
    with torch.no_grad():
        model.align.weight.copy_(state[0])
        model.align.bias.copy_(state[1])
        cfg = replace(
            prep.adapter_cfg,
            trained=True,
            provenance={
                "stage": "readout",
                "responses_used": rows,
                "note": "data-curve point of the read-out ablation",
            },
        )
        save_adapter(model, cfg, directory)
        model.align.weight.copy_(keep[0])
        model.align.bias.copy_(keep[1])


def main(argv: list[str] | None = None) -> int:
    from genretrieval.train.readout import fit_best, readout_config, readout_data, retrieval_scores
    from genretrieval.train.trainer import TrainConfig, prepare

    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--backbone", required=True)
    ap.add_argument("--run", required=True, help="run directory holding responses/ (features are cached there)")
    ap.add_argument("--queries", action="append", required=True)
    ap.add_argument("--init-adapter", default="shipped")
    ap.add_argument("--num-threads", type=int, default=None)
    ap.add_argument("--out", default="benchmarks/results")
    ap.add_argument(
        "--save-curve",
        default=None,
        help="also write the adapter of each data-curve row here (curve-<rows>/), for genret eval",
    )
    args = ap.parse_args(argv)
    cfg = TrainConfig(
        queries=args.queries,
        out=args.run,
        backbone=args.backbone,
        stages=["readout"],
        init_adapter=args.init_adapter,
        num_threads=args.num_threads,
    )
    quiet = lambda *_: None  # noqa: E731
    prep = prepare(cfg, progress=False, log=quiet)
    data = readout_data(
        cfg,
        prep.model,
        prep.tokenizer,
        prep.adapter_cfg,
        prep.rows,
        prep.targets,
        Path(args.run),
        progress=False,
        log=quiet,
    )
    held = data.held
    rows = []

    def record(name: str, scores: dict, **extra) -> None:
        rows.append({"system": name, **{k: round(v, 4) for k, v in scores.items()}, **extra})
        print(f"{name:75s} " + " ".join(f"{k} {v:.4f}" for k, v in scores.items()), file=sys.stderr)

    base = readout_config(cfg)
    for name, changes in VARIANTS.items():
        t0 = time.time()
        best, _ = fit_best(data, replace(base, **changes), progress=False, log=quiet)
        record(name, best["scores"], epoch=best["epoch"], seconds=round(time.time() - t0, 1))
    rng = np.random.default_rng(0)
    for frac in FRACTIONS:
        sub = data.train if frac == 1.0 else rng.choice(data.train, int(frac * len(data.train)), replace=False)
        best, _ = fit_best(replace(data, train=sub), base, progress=False, log=quiet)
        record(f"chosen recipe on {len(sub)} training rows", best["scores"], epoch=best["epoch"], rows=len(sub))
        if args.save_curve:
            save_with_align(prep, best["state"], Path(args.save_curve) / f"curve-{len(sub)}", len(sub))
    own = Linear(prep.model.align.weight.detach().float().cpu(), prep.model.align.bias.detach().float().cpu())
    record("the init adapter's own read-out", retrieval_scores(own, data.q[held], data.p[held], data.t[held]))
    tr = data.train
    fitted = ridge(np.concatenate([data.q[tr], data.p[tr]]), np.concatenate([data.t[tr], data.t[tr]]))
    record(
        "ridge read-out on queries + passages (MSE-optimal)",
        retrieval_scores(fitted, data.q[held], data.p[held], data.t[held]),
    )
    from genretrieval.encoder.teacher import TeacherEncoder

    teacher = TeacherEncoder()
    cut = prep.tokenizer(
        [prep.rows[i]["response"] for i in held],
        truncation=True,
        max_length=cfg.max_passage_tokens,
        add_special_tokens=False,
    )["input_ids"]
    tq = teacher.encode([prep.rows[i]["query"] for i in held], normalize=False)
    tp = teacher.encode([prep.tokenizer.decode(c, skip_special_tokens=True) for c in cut], normalize=False)
    ident = torch.nn.Identity()
    scores = retrieval_scores(ident, tq, tp, data.t[held])
    record("teacher (MiniLM embeds the query and the answer)", scores)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    name = f"readout_ablation-{prep.adapter_cfg.backbone}"
    command = "python -m benchmarks.readout_ablation " + " ".join(argv if argv is not None else sys.argv[1:])
    report = {"command": command, "heldout_rows": int(len(held)), "training_rows": int(len(tr)), "rows": rows}
    (out / f"{name}.json").write_text(json.dumps(report, indent=2) + "\n")
    lines = [
        f"# Read-out ablation, {prep.adapter_cfg.backbone}",
        "",
        f"{len(held)} held-out training rows (each query retrieves its own answer, read as a passage, among "
        f"theirs; near-duplicate answers do not count against it); {len(tr)} training rows.",
        "",
        "| system | nDCG@10 | MRR@10 | cosine to teacher | epoch |",
        "|---|---:|---:|---:|---:|",
    ]
    lines += [
        f"| {r['system']} | {r['ndcg@10']:.3f} | {r['mrr@10']:.3f} | {r['cos']:.3f} | {r.get('epoch', '')} |"
        for r in rows
    ]
    lines += ["", f"Command: `{command}`", ""]
    (out / f"{name}.md").write_text("\n".join(lines))
    print("\n".join(lines))
    return 0


if __name__ == "__main__":
    sys.exit(main())
