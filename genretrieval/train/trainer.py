"""`genret train`: stages responses, teacher (targets), then optimize or readout (train/readout.py); each resumable."""

from __future__ import annotations

import csv
import itertools
import json
import math
import os
import platform
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Literal

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import torch
import torch.nn.functional as F

from ..encoder.device import set_threads
from ..encoder.model import GenModel, left_pad, position_ids_from_mask
from ..encoder.teacher import TEACHER_NAME
from ..errors import GenRetError
from ..fileio import atomic_write, write_parquet_atomic
from ..progress import progress_bar
from .data import load_passages, load_queries
from .responses import generate_responses

if TYPE_CHECKING:
    from ..encoder.adapter import AdapterConfig

Stage = Literal["responses", "teacher", "optimize", "readout"]
STAGES: tuple[Stage, ...] = ("responses", "teacher", "optimize", "readout")
DEFAULT_STAGES: list[Stage] = ["responses", "teacher", "optimize"]


@dataclass
class TrainConfig:
    """Every training setting, with the defaults used for the shipped adapter unless noted."""

    queries: list[str]  # JSONL files (``path:N`` samples N of a file)
    out: str  # run directory: responses/, teacher.parquet, checkpoints/, adapter/, losses.csv, loss.png
    backbone: str | None = None  # default: qwen2.5-coder-0.5b-instruct
    teacher: str = TEACHER_NAME
    num_compression: int = 10
    num_thought: int = 0
    recon_weight: float = 1.0
    align_weight: float = 1.0
    lr: float = 3e-4
    weight_decay: float = 0.0
    warmup_ratio: float = 0.05
    batch_size: int = 16
    grad_accum: int = 1
    epochs: float = 1.0
    steps: int | None = None  # optimizer steps; overrides ``epochs``
    max_queries: int | None = None
    max_query_tokens: int = 64
    max_response_tokens: int = 128
    max_new_tokens: int = 128
    gen_batch_size: int = 32
    holdout: int = 64  # responses kept out of training to measure cosine to the teacher
    eval_every: int = 25
    checkpoint_every: int = 25
    keep_checkpoints: int = 2
    gradient_checkpointing: bool = False
    group_by_length: bool = True  # batches of similar query length: less padding, same examples per epoch
    init_align: Literal["ridge", "random"] = "ridge"  # start ``align`` from a ridge fit to the teacher targets
    ridge: float = 100.0  # L2 penalty of that fit, on standardised features
    tokens_only: bool = False  # train only the token rows; with a ridge start, align is re-fit after the last step
    # Train only recon, on L_recon (token rows fixed, align re-folded every step so embeddings do not change): makes
    # an adapter decode without touching its retrieval. Queries take the search path (the query instruction).
    recon_only: bool = False
    seed: int = 0
    device: str | None = None
    dtype: str | None = None
    num_threads: int | None = None
    command: str | None = None  # the command line that started the run, for the model card
    stages: list[Stage] = field(default_factory=lambda: list(DEFAULT_STAGES))
    init_adapter: str | None = None  # start from this adapter directory ("shipped": the backbone's shipped one)
    # Stage "readout": recon and align fitted on cached frozen features (train/readout.py), the tokens kept.
    readout_epochs: int = 30
    readout_batch_size: int = 256
    readout_lr: float = 1e-3
    temperature: float = 0.05
    passages: bool = True  # also train the document path, on the backbone's answers read as passages
    max_passage_tokens: int = 64  # answers read as passages are cut to this many tokens (cheaper features)
    query_passage_weight: float = 1.0
    duplicate_threshold: float = 0.9
    readout_holdout: int = 500
    # Passages no query asked about (JSONL, ``path:N``): trained on the document path towards the teacher's
    # embedding of the passage itself, with weight ``corpus_weight`` (0: held-out distractors only).
    readout_corpus: list[str] = field(default_factory=list)
    corpus_weight: float = 1.0

    def validate(self) -> None:
        if self.num_compression <= 0:
            raise GenRetError("K (--num-compression) must be >= 1")
        if self.num_thought < 0:
            raise GenRetError("T (--num-thought) must be >= 0")
        if self.recon_weight < 0 or self.align_weight < 0 or self.recon_weight + self.align_weight == 0:
            raise GenRetError("loss weights must be >= 0 and not both 0")
        for name in (
            "batch_size",
            "grad_accum",
            "max_query_tokens",
            "max_response_tokens",
            "max_new_tokens",
            "checkpoint_every",
            "eval_every",
        ):
            if getattr(self, name) <= 0:
                raise GenRetError(f"{name} must be >= 1")
        if self.steps is not None and self.steps <= 0:
            raise GenRetError("steps must be >= 1")
        if self.lr <= 0:
            raise GenRetError("learning rate must be > 0")
        if self.tokens_only and self.init_align != "ridge":
            raise GenRetError("--tokens-only needs --init-align ridge (align is otherwise never trained)")
        if self.recon_only and (self.tokens_only or self.align_weight > 0 or self.recon_weight <= 0):
            raise GenRetError(
                "--recon-only trains recon on the reconstruction loss alone: pass --align-weight 0, "
                "a --recon-weight above 0 and no --tokens-only"
            )
        if self.init_align not in ("ridge", "random"):
            raise GenRetError(f"unknown --init-align {self.init_align!r}; use ridge or random")
        if not self.stages or (unknown := set(self.stages) - set(STAGES)):
            raise GenRetError(f"unknown stage(s) {sorted(unknown) if self.stages else []}; use " + ", ".join(STAGES))
        if "readout" in self.stages and "optimize" in self.stages:
            raise GenRetError("stages optimize and readout both write the adapter: run one of them")
        if self.corpus_weight < 0:
            raise GenRetError("--corpus-weight must be >= 0")


# --------------------------------------------------------------------------------------- stage teacher


def teacher_targets(
    teacher, ids: list[str], texts: list[str], path: Path, progress: bool = True, compute: bool = True
) -> np.ndarray:
    """Raw (unnormalised) teacher mean pools of ``texts``, cached by id in ``path``. Returns (N, D) float32.

    With ``compute=False`` (stage "teacher" not requested) only the cache is read, and a missing target is an error.
    """
    cached: dict[str, np.ndarray] = {}
    if path.exists():
        table = pq.read_table(path)
        cached = dict(
            zip(table.column("id").to_pylist(), np.asarray(table.column("embedding").to_pylist(), dtype=np.float32))
        )
    missing = [i for i, rid in enumerate(ids) if rid not in cached]
    if missing and not compute:
        raise GenRetError(
            f"{len(missing)} of {len(ids)} responses have no teacher target in {path}; add --stage teacher"
        )
    if missing:
        vecs = teacher.encode([texts[i] for i in missing], normalize=False, progress=progress)
        cached.update((ids[i], v) for i, v in zip(missing, vecs))
        write_parquet_atomic(path, pa.table({"id": list(cached), "embedding": [v.tolist() for v in cached.values()]}))
    return np.stack([cached[rid] for rid in ids]).astype(np.float32)


# -------------------------------------------------------------------------------------- stage optimize


class Batcher:
    """Tokenised training examples and the padded tensors for both losses."""

    def __init__(
        self,
        model,
        tokenizer,
        queries: list[str],
        responses: list[str],
        targets: np.ndarray,
        cfg: TrainConfig,
        device: str,
    ):
        self.model, self.tok, self.device = model, tokenizer, device
        # Queries are embedded as given (optimize passes the raw text: as the LLM answered it).
        self.q_ids = tokenizer(
            list(queries), truncation=True, max_length=cfg.max_query_tokens, add_special_tokens=True
        )["input_ids"]
        self.r_ids = tokenizer(
            responses, truncation=True, max_length=cfg.max_response_tokens, add_special_tokens=False
        )["input_ids"]
        self.targets = torch.from_numpy(targets)

    def __len__(self) -> int:
        return len(self.q_ids)

    def queries(self, idx: list[int]) -> tuple[torch.Tensor, torch.Tensor]:
        """Left-padded query ids and attention mask (B, L) of the examples ``idx``."""
        ids, mask = left_pad([self.q_ids[i] for i in idx], self.tok.pad_token_id)
        return ids.to(self.device), mask.to(self.device)

    def losses(self, idx: list[int], cfg: TrainConfig) -> dict[str, torch.Tensor]:
        """Recon (token cross-entropy), align (squared distance of unit vectors) and cosine to the teacher."""
        ids, mask = self.queries(idx)
        out = self.model(ids, mask)
        target = self.targets[idx].to(self.device)
        cos = F.cosine_similarity(out["embedding"], target, dim=-1)
        # |u - v|^2 between unit vectors = 2 - 2 cos: the direction is what cosine search uses, and the
        # scale (0..4) sits next to a cross-entropy near 1 instead of vanishing beside it.
        align = (2 - 2 * cos).mean()
        result = {"align": align, "cos": cos.mean().detach()}
        if cfg.recon_weight > 0:
            result["recon"] = self._recon(out["soft_prompt"], [self.r_ids[i] for i in idx])
        else:
            result["recon"] = torch.zeros((), device=self.device)
        result["loss"] = cfg.recon_weight * result["recon"] + cfg.align_weight * align
        return result

    def _recon(self, soft: torch.Tensor, responses: list[list[int]]) -> torch.Tensor:
        """Cross-entropy of the frozen LM regenerating each response from its K soft-prompt vectors.

        soft: (B, K, H) fp32. Layout per row: [pads][K soft vectors][response], pads only at the far left.
        """
        lm = self.model.lm
        embed = lm.get_input_embeddings()
        dtype = embed.weight.dtype
        b, k, _ = soft.shape
        width = k + max(len(r) for r in responses)
        pad = embed(torch.tensor([self.tok.pad_token_id], device=self.device))[0]
        rows, masks, pred_rows, targets = [], [], [], []
        for i, r in enumerate(responses):
            n_pad = width - k - len(r)
            r_t = torch.tensor(r, dtype=torch.long, device=self.device)
            rows.append(torch.cat([pad.expand(n_pad, -1), soft[i].to(dtype), embed(r_t)], dim=0))
            masks.append(torch.cat([torch.zeros(n_pad, dtype=torch.long), torch.ones(k + len(r), dtype=torch.long)]))
            # The token at position p is predicted from position p - 1: the first from the last soft vector.
            pred_rows.append(torch.arange(width - len(r) - 1, width - 1) + i * width)
            targets.append(r_t)
        inputs, mask = torch.stack(rows), torch.stack(masks).to(self.device)
        hidden = self.model.backbone()(
            inputs_embeds=inputs, attention_mask=mask, position_ids=position_ids_from_mask(mask), use_cache=False
        ).last_hidden_state
        # Gather the labelled rows into one 2-D block before the vocabulary projection.
        picked = hidden.reshape(b * width, -1)[torch.cat(pred_rows).to(self.device)]
        logits = lm.get_output_embeddings()(picked).float()
        return F.cross_entropy(logits, torch.cat(targets))


def _schedule(step: int, total: int, warmup: int) -> float:
    if step < warmup:
        return (step + 1) / warmup
    return max(0.0, (total - step) / max(1, total - warmup))


def _epoch_order(n: int, seed: int, epoch: int) -> list[int]:
    return torch.randperm(n, generator=torch.Generator().manual_seed(seed * 1_000_003 + epoch)).tolist()


def _epoch_batches(lengths: list[int], cfg: TrainConfig, epoch: int) -> list[list[int]]:
    """One epoch's micro-batches (lists of example indices); the last partial batch is dropped.

    With ``group_by_length`` the shuffled examples are cut into windows of 64 batches, each window is sorted by
    length and cut into batches, and the batches are shuffled: batches hold similar lengths (about half the
    padding of random batches on the shipped data) while every epoch still visits each example once.
    """
    order = _epoch_order(len(lengths), cfg.seed, epoch)
    order = order[: len(order) // cfg.batch_size * cfg.batch_size]
    if not cfg.group_by_length:
        return [order[i : i + cfg.batch_size] for i in range(0, len(order), cfg.batch_size)]
    window = 64 * cfg.batch_size
    batches = []
    for w in range(0, len(order), window):
        chunk = sorted(order[w : w + window], key=lengths.__getitem__)
        batches += [chunk[i : i + cfg.batch_size] for i in range(0, len(chunk), cfg.batch_size)]
    shuffle = _epoch_order(len(batches), cfg.seed + 1, epoch)
    return [batches[i] for i in shuffle]


def _batches(lengths: list[int], cfg: TrainConfig, total_micro: int):
    """The deterministic sequence of micro-batches, epoch after epoch (``total_micro`` of them)."""
    epochs = (_epoch_batches(lengths, cfg, epoch) for epoch in itertools.count())
    return itertools.islice(itertools.chain.from_iterable(epochs), total_micro)


def _save_checkpoint(run: Path, step: int, model, opt, sched, adapter_cfg, keep: int) -> None:
    from ..encoder.adapter import save_adapter

    ckpt_root = run / "checkpoints"
    tmp = ckpt_root / f".step-{step:06d}.tmp"
    save_adapter(model, adapter_cfg, tmp)
    state = {"step": step, "optimizer": opt.state_dict(), "scheduler": sched.state_dict()}
    atomic_write(tmp / "trainer_state.pt", lambda p: torch.save(state, p))
    final = ckpt_root / f"step-{step:06d}"
    os.replace(tmp, final)
    for old in sorted(ckpt_root.glob("step-*"))[:-keep]:
        for f in old.iterdir():
            f.unlink()
        old.rmdir()


def _latest_checkpoint(run: Path) -> Path | None:
    ckpts = sorted((run / "checkpoints").glob("step-*"))
    return ckpts[-1] if ckpts else None


def plot_losses(csv_path: Path, png_path: Path) -> None:
    """PNG of the training losses and held-out cosine to the teacher."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    with csv_path.open() as f:
        rows = list(csv.DictReader(f))
    if not rows:
        return
    step = [int(r["step"]) for r in rows]
    fig, (a, b) = plt.subplots(1, 2, figsize=(11, 4))
    for key in ("loss", "recon", "align"):
        a.plot(step, [float(r[key]) for r in rows], label=key)
    a.set_xlabel("step"), a.set_title("training losses"), a.legend()
    ev = [(int(r["step"]), float(r["heldout_cos"])) for r in rows if r["heldout_cos"]]
    b.plot(step, [float(r["cos"]) for r in rows], label="train batch", alpha=0.5)
    if ev:
        b.plot(*zip(*ev), marker="o", label="held-out")
    b.set_xlabel("step"), b.set_title("cosine to the teacher"), b.legend()
    fig.tight_layout()
    fig.savefig(png_path, dpi=100)
    plt.close(fig)


CSV_FIELDS = ["step", "loss", "recon", "align", "cos", "heldout_cos", "lr", "seconds"]


@dataclass
class Prepared:
    """What every stage after the responses works from (``prepare``)."""

    queries: list
    model: GenModel
    tokenizer: object
    adapter_cfg: AdapterConfig
    rows: list[dict]  # usable responses, sorted by id
    targets: np.ndarray | None  # (N, D) raw teacher embeddings of the responses (None: no stage needs them)
    corpus: list = field(default_factory=list)  # stage readout's --readout-corpus passages, sorted by id
    corpus_targets: np.ndarray | None = None  # (M, D) raw teacher embeddings of those passages


def prepare(cfg: TrainConfig, progress: bool = True, log=print) -> Prepared:
    """Stages "responses" and "teacher" as configured: the queries, the model (from ``cfg.init_adapter`` if
    given), the cached responses (generated first with stage "responses") and the teacher's targets (computed
    with stage "teacher", else read from the run's cache). The embedding dimension is the teacher's."""
    from ..encoder import load_gen_model
    from ..encoder.device import resolve_device
    from ..encoder.teacher import TeacherEncoder
    from .responses import read_responses

    cfg.validate()
    set_threads(cfg.num_threads)
    run = Path(cfg.out)
    queries = load_queries(cfg.queries, max_queries=cfg.max_queries, seed=cfg.seed)
    init: str | Path | None = cfg.init_adapter
    if init == "shipped":
        from ..encoder.adapter import shipped_adapter
        from ..encoder.backbones import resolve_backbone

        if (init := shipped_adapter(resolve_backbone(cfg.backbone).name)) is None:
            raise GenRetError(f"no adapter ships for backbone {cfg.backbone!r}; pass a directory to --init-adapter")
    teacher = TeacherEncoder(cfg.teacher, resolve_device(cfg.device))
    model, tok, adapter_cfg, _ = load_gen_model(
        cfg.backbone,
        init,
        cfg.device,
        cfg.dtype,
        cfg.num_compression,
        cfg.num_thought,
        dim=teacher.dim,
        use_shipped=False,
    )
    if adapter_cfg.dim != teacher.dim:
        raise GenRetError(
            f"adapter {init} embeds into {adapter_cfg.dim} dimensions, teacher {cfg.teacher} into "
            f"{teacher.dim}; train with that adapter's teacher"
        )

    if "responses" in cfg.stages:
        generate_responses(
            model.lm,
            tok,
            queries,
            run / "responses",
            cfg.gen_batch_size,
            cfg.max_new_tokens,
            progress=progress,
            log=log,
        )
    table = read_responses(run / "responses")
    wanted = {q.id for q in queries}
    rows = [r for r in table.to_pylist() if r["id"] in wanted and r["response"].strip()]
    rows.sort(key=lambda r: r["id"])
    if len(rows) < cfg.batch_size + 1:
        raise GenRetError(f"only {len(rows)} responses available; generate more (stage 'responses') first")
    log(f"responses: {len(rows)} usable of {len(queries)} queries")

    targets = None
    if {"teacher", "optimize", "readout"} & set(cfg.stages):
        targets = teacher_targets(
            teacher,
            [r["id"] for r in rows],
            [r["response"] for r in rows],
            run / "teacher.parquet",
            progress,
            compute="teacher" in cfg.stages,
        )
    corpus, corpus_targets = [], None
    if "readout" in cfg.stages and cfg.readout_corpus:
        corpus = load_passages(cfg.readout_corpus, cfg.seed)
        log(f"readout corpus: {len(corpus)} passages")
        corpus_targets = teacher_targets(
            teacher, [p.id for p in corpus], [p.text for p in corpus], run / "corpus_teacher.parquet", progress
        )
    return Prepared(queries, model, tok, adapter_cfg, rows, targets, corpus, corpus_targets)


def train(cfg: TrainConfig, progress: bool = True, log=print) -> Path:
    """Run the configured stages; returns the adapter directory (``out/adapter``), or ``out`` when no stage
    writes one.

    Interrupting and re-running with the same config resumes each stage where it stopped: cached responses,
    teacher vectors and features are reused, and optimisation restarts from the last checkpoint with the same
    step, optimizer state and data order.
    """
    from .readout import train_readout

    cfg.validate()
    torch.manual_seed(cfg.seed)
    run = Path(cfg.out)
    run.mkdir(parents=True, exist_ok=True)
    (run / "train_config.json").write_text(json.dumps(asdict(cfg), indent=2) + "\n")
    data = prepare(cfg, progress, log)
    if "readout" in cfg.stages:
        return train_readout(cfg, data, run, progress, log)
    if "optimize" in cfg.stages:
        return optimize(cfg, data, progress, log)
    return run


def _resume(run: Path, model, opt, sched, log) -> int:
    """Load the latest checkpoint into the model, optimizer and schedule; returns its step (0 without one)."""
    from ..encoder.adapter import load_into, read_adapter

    if (ckpt := _latest_checkpoint(run)) is None:
        return 0
    ck_cfg, tensors = read_adapter(ckpt)
    load_into(model, ck_cfg, tensors, str(ckpt))
    state = torch.load(ckpt / "trainer_state.pt", weights_only=True)
    opt.load_state_dict(state["optimizer"])
    sched.load_state_dict(state["scheduler"])
    log(f"resuming from {ckpt.name} (step {state['step']})")
    return int(state["step"])


def _start_log(csv_path: Path, start: int) -> list[dict]:
    """Rewrite ``losses.csv`` with the rows up to ``start`` (a resumed run drops what came after its checkpoint)."""
    kept = []
    if csv_path.exists() and start:
        with csv_path.open() as f:
            kept = [r for r in csv.DictReader(f) if int(r["step"]) <= start]
    with csv_path.open("w", newline="") as f:
        w = csv.DictWriter(f, fieldnames=CSV_FIELDS)
        w.writeheader()
        w.writerows(kept)
    return kept


def optimize(cfg: TrainConfig, data: Prepared, progress: bool = True, log=print) -> Path:
    """Stage "optimize": AdamW on L_recon + L_align over the responses (a held-out share measures the cosine to
    the teacher), checkpointed every ``cfg.checkpoint_every`` steps; writes ``adapter/`` and its model card."""
    from ..encoder.adapter import adapter_hash, adapter_tensors, save_adapter
    from .card import write_model_card

    run = Path(cfg.out)
    model, tok, adapter_cfg, rows, targets = data.model, data.tokenizer, data.adapter_cfg, data.rows, data.targets
    assert targets is not None  # prepare computes them for stage optimize
    device = str(model.special.device)
    hold = min(cfg.holdout, len(rows) // 10)
    split = _epoch_order(len(rows), cfg.seed, -1)
    held, train_idx = split[:hold], split[hold:]

    prefix = ""  # queries as the LLM answered them; with recon_only, the search path that `genret explain` decodes
    if cfg.recon_only:
        from ..encoder.gen import GenEncoder

        prefix = GenEncoder(model, tok, adapter_cfg, "", device).task("retrieval").query + " "

    def batcher_for(idx: list[int]) -> Batcher:
        return Batcher(
            model,
            tok,
            [prefix + rows[i]["query"] for i in idx],
            [rows[i]["response"] for i in idx],
            targets[idx],
            cfg,
            device,
        )

    batcher = batcher_for(train_idx)
    held_batcher = batcher_for(held) if hold else None
    micro_per_epoch = len(batcher) // cfg.batch_size
    if micro_per_epoch == 0:
        raise GenRetError(f"{len(batcher)} training responses do not fill one batch of {cfg.batch_size}")
    total = cfg.steps or max(1, math.ceil(cfg.epochs * micro_per_epoch / cfg.grad_accum))
    warmup = max(1, int(cfg.warmup_ratio * total))
    if cfg.tokens_only:
        trainable = [model.special]
    elif cfg.recon_only:
        trainable = list(model.recon.parameters())
    else:
        trainable = model.adapter_parameters()
    for p in model.adapter_parameters():
        p.requires_grad_(any(p is t for t in trainable))
    opt = torch.optim.AdamW(trainable, lr=cfg.lr, weight_decay=cfg.weight_decay)
    sched = torch.optim.lr_scheduler.LambdaLR(opt, lambda s: _schedule(s, total, warmup))
    start_provenance = dict(adapter_cfg.provenance)
    start_id = adapter_hash(adapter_cfg, adapter_tensors(model)) if cfg.recon_only else None
    adapter_cfg.trained, adapter_cfg.teacher = True, cfg.teacher
    start = _resume(run, model, opt, sched, log)
    csv_path = run / "losses.csv"
    kept = _start_log(csv_path, start)

    if start == 0 and cfg.init_align == "ridge" and not cfg.recon_only:
        fit_align_ridge(batcher, cfg, progress)
        if held_batcher is not None:
            log(f"held-out cosine after the ridge start of align: {evaluate_cosine(held_batcher, cfg):.4f}")
    if cfg.gradient_checkpointing:
        model.lm.gradient_checkpointing_enable(gradient_checkpointing_kwargs={"use_reentrant": False})
    model.train()  # no dropout in these backbones; needed for gradient checkpointing
    t0 = time.time() - (float(kept[-1]["seconds"]) if kept else 0.0)  # wall time accumulates across resumes
    micro = _batches([len(q) for q in batcher.q_ids], cfg, total * cfg.grad_accum)
    for _ in range(start * cfg.grad_accum):  # skip what the checkpoint already consumed
        next(micro)
    with progress_bar("training", total, progress, initial=start) as advance:
        for step in range(start, total):
            opt.zero_grad(set_to_none=True)
            parts = {"loss": 0.0, "recon": 0.0, "align": 0.0, "cos": 0.0}
            for _ in range(cfg.grad_accum):
                res = batcher.losses(next(micro), cfg)
                (res["loss"] / cfg.grad_accum).backward()
                for key in parts:
                    parts[key] += res[key].item() / cfg.grad_accum
            torch.nn.utils.clip_grad_norm_(trainable, 1.0)
            before = [p.detach().clone() for p in model.recon.parameters()] if cfg.recon_only else None
            opt.step()
            if before is not None:
                refold_align(model, *before)
            sched.step()
            done = step + 1
            heldout = ""
            if held_batcher is not None and (done % cfg.eval_every == 0 or done == total):
                heldout = f"{evaluate_cosine(held_batcher, cfg):.4f}"
                model.train()
            with csv_path.open("a", newline="") as f:
                csv.DictWriter(f, fieldnames=CSV_FIELDS).writerow(
                    {
                        "step": done,
                        **{k: f"{v:.5f}" for k, v in parts.items()},
                        "heldout_cos": heldout,
                        "lr": f"{sched.get_last_lr()[0]:.3g}",
                        "seconds": f"{time.time() - t0:.1f}",
                    }
                )
            advance(
                1,
                info=f"loss {parts['loss']:.3f} recon {parts['recon']:.3f} cos {parts['cos']:.3f}"
                + (f" held-out {heldout}" if heldout else ""),
            )
            if done % cfg.checkpoint_every == 0 or done == total:
                _save_checkpoint(run, done, model, opt, sched, adapter_cfg, cfg.keep_checkpoints)
                plot_losses(csv_path, run / "loss.png")
    refit_cos = None
    if cfg.tokens_only and cfg.init_align == "ridge":
        # The read-out fitted to the initial tokens is re-fitted to the trained ones.
        fit_align_ridge(batcher, cfg, progress)
        if held_batcher is not None:
            refit_cos = f"{evaluate_cosine(held_batcher, cfg):.4f}"
            log(f"held-out cosine after re-fitting align: {refit_cos}")
    model.eval()
    made = provenance(cfg, len(rows), hold, total, csv_path)
    by_id = {q.id: q for q in data.queries}
    made["data"] = data_summary([by_id[rows[i]["id"]] for i in train_idx])
    if cfg.recon_only and start_provenance:
        # The embeddings are the start adapter's, so its provenance stays; the reconstruction step is added.
        made["same_embeddings_as"] = start_id  # eval reports of that adapter hold for this one
        adapter_cfg.provenance = {**start_provenance, "recon_trained": True, "recon": made}
    else:
        adapter_cfg.provenance = made
    if refit_cos is not None:
        adapter_cfg.provenance["heldout_cos"] = refit_cos
    out = save_adapter(model, adapter_cfg, run / "adapter")
    write_model_card(out)
    return out


@torch.no_grad()
def fit_align_ridge(batcher: Batcher, cfg: TrainConfig, progress: bool = True) -> None:
    """Set ``align`` to the ridge regression (on standardised features) from the pooled ``recon(h)`` of the
    current model to the unit teacher targets: the best linear read-out of the current tokens.

    Used as the start of training (``init_align="ridge"``) and, with ``tokens_only``, again after the last step.
    The final hidden states are badly scaled (a few dimensions about ten times the typical one), so gradient
    descent conditions ``align`` slowly; on the shipped data the fit reaches a held-out cosine of 0.45 before any step,
    against 0.34 after 60 AdamW steps from a random start. The fitted read-out is sensitive to small moves of
    ``recon`` and the tokens, so fine-tune all parameters from it only at a small learning rate, or use
    ``tokens_only`` (see docs/training.md).
    """
    model = batcher.model
    model.eval()
    order = sorted(range(len(batcher)), key=lambda i: len(batcher.q_ids[i]))
    feats = []
    with progress_bar("fitting align", len(order), progress) as advance:
        for s in range(0, len(order), cfg.batch_size):
            idx = order[s : s + cfg.batch_size]
            feats.append(model(*batcher.queries(idx))["soft_prompt"].mean(dim=1).double().cpu())
            advance(len(idx))
    x = torch.cat(feats)
    y = F.normalize(batcher.targets[order].double(), dim=-1)
    mu, sd = x.mean(0), x.std(0) + 1e-6
    z = (x - mu) / sd
    w = torch.linalg.solve(z.T @ z + cfg.ridge * torch.eye(z.shape[1], dtype=z.dtype), z.T @ (y - y.mean(0)))
    model.align.weight.copy_((w / sd[:, None]).T.float())
    model.align.bias.copy_((y.mean(0) - (mu / sd) @ w).float())
    model.train()


@torch.no_grad()
def refold_align(model, weight: torch.Tensor, bias: torch.Tensor) -> None:
    """Keep ``align(recon(h))`` the same function of ``h`` after ``recon`` moved from ``(weight, bias)``.

    With A the align and R the recon map, the new align is A R_old R_new^-1 (solved in float64).
    """
    w_new, b_new = model.recon.weight.double(), model.recon.bias.double()
    w_a, b_a = model.align.weight.double(), model.align.bias.double()
    old = w_a @ weight.double()  # (D, H): the old map of h
    w = torch.linalg.solve(w_new.T, old.T).T  # old @ inv(w_new)
    model.align.bias.copy_((w_a @ bias.double() + b_a - w @ b_new).float())
    model.align.weight.copy_(w.float())


@torch.no_grad()
def evaluate_cosine(batcher: Batcher, cfg: TrainConfig) -> float:
    """Mean cosine between the student's embedding of each held-out query and the teacher's of its response."""
    batcher.model.eval()
    cos = []
    for s in range(0, len(batcher), cfg.batch_size):
        idx = list(range(s, min(len(batcher), s + cfg.batch_size)))
        ids, mask = batcher.queries(idx)
        emb = batcher.model(ids, mask)["embedding"]
        cos.append(F.cosine_similarity(emb, batcher.targets[idx].to(emb.device), dim=-1))
    return float(torch.cat(cos).mean())


def data_summary(queries) -> list[dict]:
    """Training rows per (query file, source, license)."""
    counts: dict[tuple[str, str, str], int] = {}
    for q in queries:
        key = (q.id.split(":", 1)[0], q.source, q.license)
        counts[key] = counts.get(key, 0) + 1
    return [{"file": f, "source": s, "license": lic, "rows": n} for (f, s, lic), n in sorted(counts.items())]


def provenance(cfg: TrainConfig, n_rows: int, hold: int, steps: int, csv_path: Path) -> dict:
    """What made this adapter: data, settings, final losses, wall time, versions."""
    import transformers

    with csv_path.open() as f:
        rows = list(csv.DictReader(f))
    last = rows[-1] if rows else {}
    evals = [r["heldout_cos"] for r in rows if r["heldout_cos"]]
    return {
        "command": cfg.command,
        "queries": cfg.queries,
        "responses_used": n_rows - hold,
        "heldout": hold,
        "steps": steps,
        "batch_size": cfg.batch_size * cfg.grad_accum,
        "lr": cfg.lr,
        "recon_weight": cfg.recon_weight,
        "align_weight": cfg.align_weight,
        "recon_trained": cfg.recon_weight > 0,
        "init_align": cfg.init_align,
        "tokens_only": cfg.tokens_only,
        "recon_only": cfg.recon_only,
        "max_response_tokens": cfg.max_response_tokens,
        "final": {k: last.get(k) for k in ("loss", "recon", "align", "cos")},
        "heldout_cos": evals[-1] if evals else None,
        "train_seconds": last.get("seconds"),
        "torch": torch.__version__,
        "transformers": transformers.__version__,
        "machine": platform.machine(),
    }
