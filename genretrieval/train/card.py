"""The model card (``README.md``) beside a trained adapter: data, training, and evaluation results.

``python -m genretrieval.train.card ADAPTER_DIR [REPORT.json ...]`` rewrites the card of an adapter directory,
adding one table per evaluation report written by ``genret eval`` (``benchmarks/results/*.json``).
"""

from __future__ import annotations

import json
import sys
from collections.abc import Sequence
from pathlib import Path

from ..encoder.adapter import CONFIG_FILE, AdapterConfig


def _training_lines(config: AdapterConfig) -> list[str]:
    p = config.provenance
    lines = [
        "## Training data (responses used for training, by source)",
        "",
        "| file | source | license | rows |",
        "|---|---|---|---:|",
    ]
    lines += [f"| {d['file']} | {d['source']} | {d['license']} | {d['rows']} |" for d in p.get("data", [])]
    lines.append(f"| total | | | {sum(d['rows'] for d in p.get('data', []))} |")
    if p.get("corpus_data"):
        lines += [
            "",
            "Passages no query asked about, read on the document path (stage `readout`, `--readout-corpus`):",
            "",
            "| file | source | license | rows |",
            "|---|---|---|---:|",
            *(f"| {d['file']} | {d['source']} | {d['license']} | {d['rows']} |" for d in p["corpus_data"]),
        ]
    if p.get("stage") == "readout":
        return lines + _readout_lines(p) + _recon_lines(p.get("recon"))
    if p.get("tokens_only"):
        trained = "the token rows only (align re-fitted after the last step)"
    elif p.get("recon_only"):
        trained = "recon only, on the reconstruction loss (align re-folded each step: the embeddings are unchanged)"
    else:
        trained = "the token rows and both projections"
    final = p.get("final", {})
    lines += [
        "",
        "## Training",
        "",
        f"- steps: {p.get('steps')} at batch {p.get('batch_size')}, lr {p.get('lr')}, loss weights recon "
        f"{p.get('recon_weight')} / align {p.get('align_weight')}, align initialised {p.get('init_align')}, "
        f"responses <= {p.get('max_response_tokens')} tokens; trained: {trained}",
        f"- wall time: {p.get('train_seconds')} s (optimisation only)",
        f"- final batch losses: total {final.get('loss')}, recon {final.get('recon')}, "
        f"align {final.get('align')}, cosine to teacher {final.get('cos')}",
        f"- held-out cosine to the teacher's embedding of the response: {p.get('heldout_cos')} "
        f"({p.get('heldout')} held-out responses)",
        f"- torch {p.get('torch')}, transformers {p.get('transformers')}",
        "",
        "Made with:",
        "",
        "```",
        p.get("command") or "genretrieval.train.train(TrainConfig(...))",
        "```",
        "",
        "The exact settings are in `adapter.json` (provenance) and the run's `train_config.json`.",
    ]
    return lines + _recon_lines(p.get("recon"))


def _init_name(init: str | None) -> str:
    return "the adapter shipped before for this backbone" if init == "shipped" else f"`{init}`"


def _readout_lines(p: dict) -> list[str]:
    r = p.get("readout", {})
    held = r.get("heldout", {})
    return [
        "",
        "## Training",
        "",
        f"- token rows and `recon` from {_init_name(p.get('init_adapter'))}, kept fixed; `align` is the "
        f"read-out fitted on their cached features (stage `readout`): InfoNCE at temperature "
        f"{r.get('temperature')}, batch "
        f"{r.get('batch_size')}, lr {r.get('lr')}, {r.get('epochs')} epochs, answers also read as passages: "
        f"{r.get('passages')}, query-passage weight {r.get('query_passage_weight')}, duplicates above teacher "
        f"cosine {r.get('duplicate_threshold')} are not negatives"
        + (
            f"; {r.get('corpus_passages')} corpus passages pulled towards the teacher's embedding of themselves "
            f"(weight {r.get('corpus_weight')})"
            if r.get("corpus")
            else ""
        ),
        f"- chosen epoch {r.get('best_epoch')} by held-out retrieval ({p.get('heldout')} training rows nothing "
        f"trained on; each query retrieves its own answer among theirs"
        + (f" and {r.get('corpus_heldout')} held-out corpus passages" if r.get("corpus") else "")
        + f"): nDCG@10 {held.get('ndcg@10')}, "
        f"MRR@10 {held.get('mrr@10')}, cosine to the teacher's answer embedding {held.get('cos')}",
        f"- wall time: {p.get('train_seconds')} s (features and fit)",
        f"- torch {p.get('torch')}, transformers {p.get('transformers')}",
        "",
        "Made with:",
        "",
        "```",
        p.get("command") or "genretrieval.train.train(TrainConfig(...))",
        "```",
        "",
        "The exact settings are in `adapter.json` (provenance) and the run's `train_config.json`.",
    ]


def _recon_lines(r: dict | None) -> list[str]:
    """The reconstruction step of ``genret train --recon-only`` on top of an adapter, if it had one."""
    if not r:
        return []
    final = r.get("final") or {}
    return [
        "",
        "## Reconstruction (decoding)",
        "",
        f"- `recon` trained alone on the reconstruction loss (`--recon-only`): {r.get('steps')} steps at batch "
        f"{r.get('batch_size')}, lr {r.get('lr')}, on {r.get('responses_used')} answers cut to "
        f"{r.get('max_response_tokens')} tokens; final recon loss {final.get('recon')}; wall time "
        f"{r.get('train_seconds')} s",
        "- `align` was re-folded after every step, so every embedding, and every figure on this card, is unchanged"
        if r.get("same_embeddings_as")
        else "- the read-out above was fitted on the features through this `recon`",
        "",
        "```",
        r.get("command") or "genretrieval.train.train(TrainConfig(recon_only=True, ...))",
        "```",
    ]


def _report_lines(report: dict, adapter_ids: set[str]) -> list[str]:
    """One Markdown table per benchmark of a ``genret eval`` JSON report; this adapter's row is marked."""
    from ..evaluation.report import by_benchmark, markdown_table
    from ..evaluation.result import EvalResult

    def mine(result: EvalResult) -> bool:
        return (result.identity or {}).get("adapter") in adapter_ids

    lines: list[str] = []
    for benchmark, results in by_benchmark([EvalResult.from_dict(r) for r in report["results"]]).items():
        lines += [
            f"### {benchmark}",
            "",
            *markdown_table(results, highlight=mine, note=" (this adapter)"),
            "",
            *(f"Command: `{c}`" for c in report.get("commands", [])),
            "",
        ]
    return lines


def write_model_card(directory: str | Path, reports: Sequence[str | Path] = ()) -> Path:
    """Write ``README.md`` in an adapter directory from its ``adapter.json`` and the given eval reports."""
    from ..encoder.adapter import adapter_hash, read_adapter

    directory = Path(directory)
    config, tensors = read_adapter(directory)
    adapter_id = adapter_hash(config, tensors)
    lines = [
        f"# genretrieval adapter for {config.backbone}",
        "",
        f"K = {config.num_compression} compression tokens, T = {config.num_thought} thought tokens, "
        f"{config.dim}-d output aligned to {config.teacher}. Adapter id `{adapter_id}`.",
        "",
        *_training_lines(config),
        "",
    ]
    # A recon-only step keeps every embedding: its start adapter's eval rows are this adapter's.
    same = (config.provenance.get("recon") or {}).get("same_embeddings_as")
    ids = {adapter_id} | ({same} if same else set())
    if reports:
        lines += ["## Evaluation", ""]
        for path in reports:
            lines += _report_lines(json.loads(Path(path).read_text(encoding="utf-8")), ids)
    path = directory / "README.md"
    path.write_text("\n".join(lines).rstrip() + "\n", encoding="utf-8")
    return path


def main(argv: Sequence[str]) -> int:
    if not argv or not (Path(argv[0]) / CONFIG_FILE).is_file():
        print("usage: python -m genretrieval.train.card ADAPTER_DIR [REPORT.json ...]", file=sys.stderr)
        return 2
    print(write_model_card(argv[0], argv[1:]))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
