"""Training the read-out (``recon`` then ``align``) on cached frozen features, with a contrastive loss.

Each training row gives three vectors: the query's features on the query path (``q``), the features of the
backbone's own answer read as a passage on the document path (``p``), and the teacher's embedding of that answer
(``t``). The read-out maps features to embeddings; the loss pulls each query and each passage towards the
teacher embedding of its answer against the other answers of the batch (InfoNCE), and optionally each query
towards its passage directly (the comparison search makes). Answers nearly equal to each other (refusals share
one target) are not used as negatives of each other.

Passages that no query asked about (``--readout-corpus``: text like the corpora users index) train the document
path too, each towards the teacher's embedding of itself, and serve every term as extra negatives; their
held-out part joins the held-out answers as distractors in the metric of record.
"""

from __future__ import annotations

import csv
import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

from ..progress import progress_bar


@dataclass
class ReadoutConfig:
    """Settings of the read-out fit; the defaults are the ones chosen on held-out training rows."""

    epochs: int = 30
    batch_size: int = 256
    lr: float = 1e-3
    weight_decay: float = 0.01
    temperature: float = 0.05
    passages: bool = True  # train the document path on answers read as passages
    query_passage_weight: float = 1.0  # weight of the direct query -> passage term (0 disables)
    duplicate_threshold: float = 0.9  # teacher cosine above which two answers are not negatives of each other
    corpus_weight: float = 1.0  # weight of the corpus-passage term (0: corpus passages are held-out distractors only)
    seed: int = 0


def info_nce(x: torch.Tensor, y: torch.Tensor, same: torch.Tensor, temperature: float) -> torch.Tensor:
    """InfoNCE of row i of ``x`` against row i of ``y``, the other rows of ``y`` as negatives.

    x: (B, D), y: (M, D) unit vectors, M >= B (rows past B are negatives only). same: (B, M) bool, True where
    row j must not count as a negative of row i (the diagonal is always the positive).
    """
    logits = x @ y.T / temperature
    eye = torch.eye(len(x), len(y), dtype=torch.bool, device=x.device)
    logits = logits.masked_fill(same & ~eye, float("-inf"))
    return F.cross_entropy(logits, torch.arange(len(x), device=x.device))


class Readout(torch.nn.Module):
    """A linear map from standardised features to embeddings: (N, H) -> (N, D)."""

    mean: torch.Tensor  # buffers
    std: torch.Tensor

    def __init__(self, mean: torch.Tensor, std: torch.Tensor, dim: int):
        super().__init__()
        self.register_buffer("mean", mean)
        self.register_buffer("std", std)
        self.linear = torch.nn.Linear(mean.shape[0], dim)

    def forward(self, feats: torch.Tensor) -> torch.Tensor:
        return self.linear((feats - self.mean) / self.std)

    def folded(self) -> tuple[torch.Tensor, torch.Tensor]:
        """``(weight, bias)`` of the same map on raw features: (D, H), (D,)."""
        w = self.linear.weight / self.std
        return w, self.linear.bias - w @ self.mean


def fit_readout(
    q: np.ndarray,
    p: np.ndarray | None,
    t: np.ndarray,
    cfg: ReadoutConfig,
    progress: bool = True,
    log=print,
    evaluate=None,
    c: np.ndarray | None = None,
    tc: np.ndarray | None = None,
) -> Readout:
    """Fit a read-out on features ``q`` (N, H), passages ``p`` (N, H) or None, teacher targets ``t`` (N, D),
    and corpus passages ``c`` (M, H) with their teacher targets ``tc`` (M, D), or None.

    ``evaluate(readout) -> dict`` is called after each epoch, and its numbers are logged.
    """
    g = torch.Generator().manual_seed(cfg.seed)
    torch.manual_seed(cfg.seed)
    qt = torch.from_numpy(q).float()
    pt = torch.from_numpy(p).float() if p is not None and cfg.passages else None
    tt = F.normalize(torch.from_numpy(t).float(), dim=-1)
    use_corpus = c is not None and tc is not None and len(c) > 0 and cfg.corpus_weight > 0
    ct = torch.from_numpy(c).float() if use_corpus else torch.zeros(0, qt.shape[1])
    tct = F.normalize(torch.from_numpy(tc).float(), dim=-1) if use_corpus else torch.zeros(0, tt.shape[1])
    both = torch.cat([qt, *([pt] if pt is not None else []), ct])
    model = Readout(both.mean(0), both.std(0) + 1e-6, tt.shape[1])
    corpus_batches = _cycle(len(ct), min(cfg.batch_size, len(ct)), g)
    opt = torch.optim.AdamW(model.parameters(), lr=cfg.lr, weight_decay=cfg.weight_decay)
    steps_per_epoch = max(1, len(qt) // cfg.batch_size)
    total = cfg.epochs * steps_per_epoch
    sched = torch.optim.lr_scheduler.OneCycleLR(opt, max_lr=cfg.lr, total_steps=max(1, total), pct_start=0.1)
    with progress_bar("fitting read-out", total, progress) as advance:
        for epoch in range(cfg.epochs):
            order = torch.randperm(len(qt), generator=g)
            for s in range(steps_per_epoch):
                idx = order[s * cfg.batch_size : (s + 1) * cfg.batch_size]
                cidx = next(corpus_batches)
                target, ctarget = tt[idx], tct[cidx]
                targets = torch.cat([target, ctarget])  # corpus targets: extra negatives for every term
                same = target @ targets.T > cfg.duplicate_threshold
                sq = F.normalize(model(qt[idx]), dim=-1)
                loss = info_nce(sq, targets, same, cfg.temperature)
                sc = F.normalize(model(ct[cidx]), dim=-1)
                if pt is not None:
                    sp = F.normalize(model(pt[idx]), dim=-1)
                    loss = loss + info_nce(sp, targets, same, cfg.temperature)
                    if cfg.query_passage_weight > 0:
                        loss = loss + cfg.query_passage_weight * info_nce(
                            sq, torch.cat([sp, sc]), same, cfg.temperature
                        )
                if len(cidx):
                    csame = ctarget @ torch.cat([ctarget, target]).T > cfg.duplicate_threshold
                    loss = loss + cfg.corpus_weight * info_nce(sc, torch.cat([ctarget, target]), csame, cfg.temperature)
                opt.zero_grad(set_to_none=True)
                loss.backward()
                opt.step()
                sched.step()
                advance(1, info=f"loss {loss.item():.3f}")
            if evaluate is not None:
                model.eval()
                with torch.no_grad():
                    scores = evaluate(model)
                model.train()
                log(
                    f"read-out epoch {epoch + 1}/{cfg.epochs}: loss {loss.item():.4f} "
                    + " ".join(f"{k} {v:.4f}" for k, v in scores.items())
                )
    model.eval()
    return model


def _cycle(n: int, size: int, g: torch.Generator):
    """Endless batches of ``size`` indices over ``range(n)``, reshuffled on each pass (empty ones if n is 0)."""
    while True:
        order = torch.randperm(n, generator=g)
        for s in range(0, max(1, n - size + 1), max(1, size)):
            yield order[s : s + size]


@torch.no_grad()
def retrieval_scores(
    readout,
    q: np.ndarray,
    p: np.ndarray,
    t: np.ndarray,
    duplicate_threshold: float = 0.9,
    distractors: np.ndarray | None = None,
) -> dict[str, float]:
    """Held-out metrics of record: each query retrieves its own answer (read as a passage) among all held-out
    answers and the ``distractors`` (features of held-out corpus passages, (M, H)); MRR@10 and nDCG@10 (one
    relevant answer), and the mean cosine to the teacher's answer embedding.

    Answers whose teacher embeddings are near duplicates of the own answer's (a refusal among refusals) do not
    count as ranked above it.
    """
    sq = F.normalize(readout(torch.from_numpy(q).float()), dim=-1)
    sp = F.normalize(readout(torch.from_numpy(p).float()), dim=-1)
    tt = F.normalize(torch.from_numpy(t).float(), dim=-1)
    scores = sq @ sp.T
    own = scores.diag()[:, None]
    same = tt @ tt.T > duplicate_threshold
    rank = ((scores > own) & ~same).sum(1)  # 0-based rank of the own answer
    if distractors is not None and len(distractors):
        sd = F.normalize(readout(torch.from_numpy(distractors).float()), dim=-1)
        rank = rank + (sq @ sd.T > own).sum(1)
    top10 = rank < 10
    mrr = torch.where(top10, 1.0 / (rank + 1).float(), torch.zeros(())).mean()
    ndcg = torch.where(top10, 1.0 / torch.log2(rank.float() + 2), torch.zeros(())).mean()
    return {"mrr@10": float(mrr), "ndcg@10": float(ndcg), "cos": float((sq * tt).sum(1).mean())}


@dataclass
class ReadoutData:
    """Features of every usable response row, and the held-out split that picks settings and epochs."""

    q: np.ndarray  # (N, H) recon(features) of the queries on the query path
    p: np.ndarray  # (N, H) recon(features) of the answers read as passages on the document path
    t: np.ndarray  # (N, D) raw teacher embeddings of the answers
    held: np.ndarray  # indices of held-out rows
    train: np.ndarray  # indices of training rows
    c: np.ndarray | None = None  # (M, H) recon(features) of the corpus passages on the document path
    tc: np.ndarray | None = None  # (M, D) raw teacher embeddings of the corpus passages
    c_held: np.ndarray = field(default_factory=lambda: np.zeros(0, dtype=np.int64))  # held-out: distractors
    c_train: np.ndarray = field(default_factory=lambda: np.zeros(0, dtype=np.int64))


def readout_data(
    cfg,
    model,
    tok,
    adapter_cfg,
    rows: list[dict],
    targets: np.ndarray,
    run: Path,
    progress: bool = True,
    log=print,
    passages: list | None = None,
    passage_targets: np.ndarray | None = None,
) -> ReadoutData:
    """Features (cached under ``run/features``) through the model's ``recon``, and the seeded held-out splits
    (of the response rows, and of the corpus ``passages`` with their teacher targets if given)."""
    from ..encoder.features import cached_features
    from ..encoder.gen import GenEncoder

    enc = GenEncoder(model, tok, adapter_cfg, "", str(model.special.device))
    task = enc.task("retrieval")
    w, b = (x.detach().double().cpu() for x in (model.recon.weight, model.recon.bias))

    def feats(texts: list[str], instruction: str) -> np.ndarray:
        h = torch.from_numpy(
            cached_features(enc, texts, instruction, run / "features", progress=progress, log=log)
        ).double()
        return (h @ w.T + b).float().numpy()

    cut = tok(
        [r["response"] for r in rows], truncation=True, max_length=cfg.max_passage_tokens, add_special_tokens=False
    )["input_ids"]
    q = feats([r["query"] for r in rows], task.query)
    p = feats([tok.decode(ids, skip_special_tokens=True) for ids in cut], task.document)
    data = ReadoutData(q, p, targets, *_split(len(rows), cfg.readout_holdout, cfg.seed))
    if passages:
        data.c, data.tc = feats([x.text for x in passages], task.document), passage_targets
        data.c_held, data.c_train = _split(len(passages), cfg.readout_holdout, cfg.seed)
    return data


def _split(n: int, holdout: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """Seeded (held-out, training) indices: ``holdout`` rows held out, at most a fifth."""
    perm = torch.randperm(n, generator=torch.Generator().manual_seed(seed)).numpy()
    hold = min(holdout, n // 5)
    return perm[:hold], perm[hold:]


def readout_config(cfg) -> ReadoutConfig:
    """The read-out settings of a ``TrainConfig``."""
    return ReadoutConfig(
        epochs=cfg.readout_epochs,
        batch_size=cfg.readout_batch_size,
        lr=cfg.readout_lr,
        temperature=cfg.temperature,
        passages=cfg.passages,
        query_passage_weight=cfg.query_passage_weight,
        duplicate_threshold=cfg.duplicate_threshold,
        corpus_weight=cfg.corpus_weight,
        seed=cfg.seed,
    )


def fit_best(data: ReadoutData, rcfg: ReadoutConfig, progress: bool = True, log=print) -> tuple[dict, list[dict]]:
    """Fit on the training rows; return the epoch with the best held-out nDCG@10 (``{"epoch", "scores",
    "state": (weight, bias) on recon-features}``) and the per-epoch history. Held-out corpus passages, if any,
    are distractors in the held-out retrieval."""
    history: list[dict] = []
    best: dict = {}
    held = data.held
    has_corpus = data.c is not None and data.tc is not None
    distractors = data.c[data.c_held] if data.c is not None else None

    def evaluate(readout: Readout) -> dict[str, float]:
        scores = retrieval_scores(
            readout, data.q[held], data.p[held], data.t[held], rcfg.duplicate_threshold, distractors
        )
        history.append({"epoch": len(history) + 1, **scores})
        if not best or scores["ndcg@10"] > best["scores"]["ndcg@10"]:
            best.update(scores=scores, epoch=len(history), state=readout.folded())
        return scores

    tr, ctr = data.train, data.c_train
    c, tc = (data.c[ctr], data.tc[ctr]) if has_corpus else (None, None)  # type: ignore[index]
    fit_readout(data.q[tr], data.p[tr], data.t[tr], rcfg, progress, log, evaluate, c, tc)
    return best, history


def train_readout(cfg, prep, run: Path, progress: bool = True, log=print) -> Path:
    """Stage "readout" of ``genret train``: features, then the read-out with the best held-out nDCG@10.

    The token rows come from ``cfg.init_adapter`` and stay fixed; ``recon`` is kept, ``align`` is replaced by
    the fitted map (on ``recon`` of the features). Writes ``readout.csv`` (one row per epoch) and
    ``adapter/`` with its model card. ``prep`` is ``trainer.prepare``'s result: the model, the usable
    responses and the teacher's raw embeddings of their answers, and the corpus passages with theirs.
    """
    import transformers

    from ..encoder.adapter import save_adapter
    from ..encoder.decode import decodes
    from .card import write_model_card
    from .trainer import data_summary

    t0 = time.time()
    model, adapter_cfg, rows = prep.model, prep.adapter_cfg, prep.rows
    data = readout_data(
        cfg,
        model,
        prep.tokenizer,
        adapter_cfg,
        rows,
        prep.targets,
        run,
        progress,
        log,
        prep.corpus,
        prep.corpus_targets,
    )
    rcfg = readout_config(cfg)
    best, history = fit_best(data, rcfg, progress, log)
    with (run / "readout.csv").open("w", newline="") as f:
        w = csv.DictWriter(f, fieldnames=list(history[0]))
        w.writeheader()
        w.writerows(history)
    weight, bias = best["state"]
    with torch.no_grad():
        model.align.weight.copy_(weight.to(model.align.weight.device))
        model.align.bias.copy_(bias.to(model.align.bias.device))
    log(
        f"read-out: best epoch {best['epoch']} of {cfg.readout_epochs}, held-out "
        + " ".join(f"{k} {v:.4f}" for k, v in best["scores"].items())
    )
    adapter_cfg.trained, adapter_cfg.teacher = True, cfg.teacher
    by_id = {x.id: x for x in prep.queries}
    # ``recon`` is the start adapter's, so its reconstruction step (if any) stays on record; the embeddings
    # are new, so the start adapter's eval rows no longer hold for this one.
    recon = {k: v for k, v in (adapter_cfg.provenance.get("recon") or {}).items() if k != "same_embeddings_as"}
    adapter_cfg.provenance = {
        "command": cfg.command,
        "queries": cfg.queries,
        "init_adapter": str(cfg.init_adapter),
        "recon_trained": decodes(adapter_cfg),  # recon and the token rows are the start adapter's
        "responses_used": len(data.train),
        "heldout": len(data.held),
        "stage": "readout",
        "readout": {
            **{
                k: getattr(rcfg, k)
                for k in (
                    "epochs",
                    "batch_size",
                    "lr",
                    "temperature",
                    "passages",
                    "query_passage_weight",
                    "duplicate_threshold",
                    "corpus_weight",
                )
            },
            "corpus": cfg.readout_corpus,
            "corpus_passages": len(data.c_train),
            "corpus_heldout": len(data.c_held),
            "max_passage_tokens": cfg.max_passage_tokens,
            "best_epoch": best["epoch"],
            "heldout": {k: round(v, 4) for k, v in best["scores"].items()},
        },
        "heldout_cos": f"{best['scores']['cos']:.4f}",
        "train_seconds": f"{time.time() - t0:.1f}",
        "data": data_summary([by_id[rows[i]["id"]] for i in data.train]),
        **({"corpus_data": data_summary([prep.corpus[i] for i in data.c_train])} if prep.corpus else {}),
        "torch": torch.__version__,
        "transformers": transformers.__version__,
        **({"recon": recon} if recon else {}),
    }
    out = save_adapter(model, adapter_cfg, run / "adapter")
    write_model_card(out)
    return out
