"""Training on a tiny random backbone: loss falls, backbone frozen, exact resume, response cache, bad input."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from genretrieval import GenRetError
from genretrieval.encoder import load_gen_model
from genretrieval.encoder.adapter import adapter_hash, read_adapter
from genretrieval.encoder.decode import decodes
from genretrieval.encoder.model import left_pad
from genretrieval.train import trainer as trainer_mod
from genretrieval.train.card import write_model_card
from genretrieval.train.data import load_queries
from genretrieval.train.responses import generate_responses, read_responses
from genretrieval.train.trainer import Batcher, TrainConfig, train

WORDS = [
    "what is the capital of france",
    "how to bake bread",
    "why is the river long",
    "who make the city",
    "what is water",
    "how is the model long",
    "the city of paris",
    "what is a question",
    "how to make data",
    "why is the world short",
    "who is the answer",
    "the river and the city",
    "hello world",
    "what tokens",
    "how long is the text",
    "the bread of paris",
    "what is similar",
    "summarize the passage",
    "the document answers",
    "generate relevant text",
]


@pytest.fixture()
def query_file(tmp_path):
    path = tmp_path / "queries.jsonl"
    path.write_text("".join(json.dumps({"id": i, "text": t}) + "\n" for i, t in enumerate(WORDS)))
    return path


def _cfg(tmp_path, query_file, backbone, **kw) -> TrainConfig:
    base = dict(
        queries=[str(query_file)],
        out=str(tmp_path / "run"),
        backbone=backbone,
        batch_size=4,
        steps=6,
        checkpoint_every=2,
        eval_every=2,
        max_new_tokens=6,
        max_response_tokens=8,
        gen_batch_size=8,
        holdout=4,
        lr=1e-3,
        dtype="fp32",
        device="cpu",
        num_compression=3,
    )
    base.update(kw)
    return TrainConfig(**base)


def _state(module: torch.nn.Module) -> dict[str, torch.Tensor]:
    return {k: v.detach().clone() for k, v in module.state_dict().items()}


def test_loss_falls_when_overfitting_a_batch(tiny_backbone):
    from genretrieval.encoder.teacher import TeacherEncoder

    model, tok, _, _ = load_gen_model(tiny_backbone, dtype="fp32", num_compression=3)
    responses = ["the city of paris", "bread is made of water", "the river is long", "hello world"]
    targets = TeacherEncoder().encode(responses, normalize=False)
    cfg = TrainConfig(queries=["x"], out="x", batch_size=4, max_response_tokens=8)
    batcher = Batcher(model, tok, WORDS[:4], responses, targets, cfg, "cpu")
    opt = torch.optim.AdamW(model.adapter_parameters(), lr=3e-3)
    model.train()
    first = None
    for _ in range(40):  # recon falls ~6.8 -> 3.9 and align ~2.0 -> 0.07 at this lr
        opt.zero_grad()
        res = batcher.losses([0, 1, 2, 3], cfg)
        res["loss"].backward()
        opt.step()
        first = first or (float(res["recon"].detach()), float(res["align"].detach()))
    assert float(res["recon"].detach()) < 0.7 * first[0]
    assert float(res["align"].detach()) < 0.5 * first[1]


def test_train_end_to_end_keeps_backbone_and_writes_artifacts(tmp_path, query_file, tiny_backbone):
    before = _state(load_gen_model(tiny_backbone, dtype="fp32")[0].lm)
    adapter = train(_cfg(tmp_path, query_file, tiny_backbone), progress=False, log=lambda *_: None)
    run = tmp_path / "run"
    for name in ("losses.csv", "loss.png", "teacher.parquet", "train_config.json"):
        assert (run / name).exists(), name
    cfg, tensors = read_adapter(adapter)
    assert cfg.trained and cfg.num_compression == 3 and cfg.provenance["steps"] == 6
    assert tensors["special"].shape == (3, 32)
    card = (adapter / "README.md").read_text()
    assert "| queries | queries |  | 18 |" in card and "held-out cosine" in card  # 20 queries, 2 held out
    # Evaluation reports add a table; the row produced with this adapter is marked.
    report = tmp_path / "b.json"
    report.write_text(
        json.dumps(
            {
                "commands": ["genret eval b"],
                "results": [
                    {
                        "benchmark": "b",
                        "system": "gen",
                        "identity": {"adapter": adapter_hash(cfg, tensors)},
                        "metrics": {"m": 0.5},
                    },
                    {"benchmark": "b", "system": "teacher", "identity": {}, "metrics": {"m": 0.25}},
                ],
            }
        )
    )
    card = write_model_card(adapter, [report]).read_text()
    assert "| **gen (this adapter)** | 0.500 |" in card and "| teacher | 0.250 |" in card
    assert "Command: `genret eval b`" in card and "held-out cosine" in card
    # The frozen backbone's weights on disk are untouched, and training only ever held adapter gradients.
    after = _state(load_gen_model(tiny_backbone, dtype="fp32")[0].lm)
    assert all(torch.equal(before[k], after[k]) for k in before)
    rows = (run / "losses.csv").read_text().splitlines()
    assert len(rows) == 7 and rows[0].startswith("step,loss")


def test_ridge_start_of_align_fits_the_targets(query_file, tiny_backbone):
    model, tok, _, _ = load_gen_model(tiny_backbone, dtype="fp32")
    queries = [q.text for q in load_queries([query_file])]
    targets = torch.randn(len(queries), model.dim).numpy()
    cfg = TrainConfig(queries=["q"], out="o", batch_size=4, ridge=1e-3)
    batcher = Batcher(model, tok, queries, queries, targets, cfg, "cpu")
    before = trainer_mod.evaluate_cosine(batcher, cfg)
    trainer_mod.fit_align_ridge(batcher, cfg, progress=False)
    after = trainer_mod.evaluate_cosine(batcher, cfg)
    assert abs(before) < 0.3 and after > 0.9  # 20 examples, 32 features: nearly exact fit


@pytest.mark.parametrize("group", [True, False])
def test_epoch_batches_visit_each_example_once(group):
    lengths = [(i * 37) % 50 for i in range(1000)]
    cfg = TrainConfig(queries=["q"], out="o", batch_size=8, group_by_length=group)
    for epoch in (0, 1):
        batches = trainer_mod._epoch_batches(lengths, cfg, epoch)
        flat = [i for b in batches for i in b]
        assert len(batches) == 125 and all(len(b) == 8 for b in batches) and len(set(flat)) == 1000
    padded = sum(max(lengths[i] for i in b) * len(b) for b in batches)
    # Grouping keeps each batch within a narrow length range; random batches pad to near the maximum.
    assert (padded < 1.1 * sum(lengths)) == group
    assert batches != trainer_mod._epoch_batches(lengths, cfg, 0)  # epochs differ, deterministically


def test_tokens_only_moves_only_the_token_rows_and_refits_align(tmp_path, query_file, tiny_backbone):
    adapter = train(
        _cfg(tmp_path, query_file, tiny_backbone, tokens_only=True, recon_weight=0), progress=False, log=lambda *_: None
    )
    cfg, tensors = read_adapter(adapter)
    start = load_gen_model(tiny_backbone, None, "cpu", "fp32", 3, 0, dim=384)[0]  # the same seeded start
    assert torch.equal(tensors["recon.weight"], start.recon.weight.detach())
    assert not torch.equal(tensors["special"], start.special.detach())
    assert not torch.equal(tensors["align.weight"], start.align.weight.detach())
    assert cfg.provenance["tokens_only"] and cfg.provenance["init_align"] == "ridge"


def test_recon_only_learns_to_decode_and_keeps_the_embeddings(tmp_path, query_file, tiny_backbone):
    first = train(_cfg(tmp_path / "a", query_file, tiny_backbone, recon_weight=0), progress=False, log=lambda *_: None)
    cfg = _cfg(tmp_path / "b", query_file, tiny_backbone, recon_only=True, align_weight=0, lr=1e-2)
    cfg.init_adapter = str(first)
    adapter = train(cfg, progress=False, log=lambda *_: None)
    config, tensors = read_adapter(adapter)
    start_config, start_tensors = read_adapter(first)
    assert not decodes(start_config) and decodes(config)
    assert torch.equal(tensors["special"], start_tensors["special"])
    assert not torch.allclose(tensors["recon.weight"], start_tensors["recon.weight"], atol=1e-3)
    # align was re-folded after every step: the same texts get the same embeddings.
    start, tok = load_gen_model(tiny_backbone, first, "cpu", "fp32")[:2]
    trained = load_gen_model(tiny_backbone, adapter, "cpu", "fp32")[0]
    ids, mask = left_pad(tok([q.text for q in load_queries([query_file])])["input_ids"], tok.pad_token_id)
    with torch.no_grad():
        torch.testing.assert_close(trained(ids, mask)["embedding"], start(ids, mask)["embedding"], rtol=0, atol=1e-4)
    recon = [float(r.split(",")[2]) for r in (tmp_path / "b" / "run" / "losses.csv").read_text().splitlines()[1:]]
    assert recon[-1] < recon[0]
    # The start's provenance (what made the embeddings) stays; the reconstruction step is added to it and the card.
    assert config.provenance["steps"] == start_config.provenance["steps"] and config.provenance["recon"]["recon_only"]
    assert "## Reconstruction (decoding)" in (adapter / "README.md").read_text()
    # ... and names the start adapter, so the card marks that adapter's eval rows as its own.
    start_id = adapter_hash(start_config, start_tensors)
    assert config.provenance["recon"]["same_embeddings_as"] == start_id != adapter_hash(config, tensors)
    report = tmp_path / "report.json"
    gen = {"benchmark": "b", "system": "gen", "identity": {"adapter": start_id}, "metrics": {}}
    report.write_text(json.dumps({"results": [gen, {"benchmark": "b", "system": "teacher", "metrics": {}}]}))
    card = write_model_card(adapter, [report]).read_text()
    assert "| **gen (this adapter)** |" in card and "| teacher |" in card


def test_recon_only_needs_the_reconstruction_loss_alone(tmp_path, query_file, tiny_backbone):
    with pytest.raises(GenRetError, match="--recon-only trains recon on the reconstruction loss alone"):
        train(_cfg(tmp_path, query_file, tiny_backbone, recon_only=True), progress=False)


def test_training_does_not_touch_backbone_in_memory(tmp_path, query_file, tiny_backbone, monkeypatch):
    seen = {}
    real = trainer_mod.Batcher.__init__

    def spy(self, model, *a, **k):
        seen.setdefault("before", _state(model.lm))
        seen["model"] = model
        real(self, model, *a, **k)

    monkeypatch.setattr(trainer_mod.Batcher, "__init__", spy)
    train(_cfg(tmp_path, query_file, tiny_backbone), progress=False, log=lambda *_: None)
    after = _state(seen["model"].lm)
    assert all(torch.equal(seen["before"][k], after[k]) for k in after)


def test_resume_matches_uninterrupted_run(tmp_path, query_file, tiny_backbone, monkeypatch):
    straight = train(_cfg(tmp_path / "a", query_file, tiny_backbone), progress=False, log=lambda *_: None)

    real_save = trainer_mod._save_checkpoint

    def crash_after_step_4(run, step, *a, **k):
        real_save(run, step, *a, **k)
        if step == 4:
            raise KeyboardInterrupt

    monkeypatch.setattr(trainer_mod, "_save_checkpoint", crash_after_step_4)
    cfg = _cfg(tmp_path / "b", query_file, tiny_backbone)
    with pytest.raises(KeyboardInterrupt):
        train(cfg, progress=False, log=lambda *_: None)
    monkeypatch.setattr(trainer_mod, "_save_checkpoint", real_save)
    messages = []
    resumed = train(cfg, progress=False, log=messages.append)
    assert any("resuming from step-000004" in m for m in messages)
    _, a = read_adapter(straight)
    _, b = read_adapter(resumed)
    for name in a:
        torch.testing.assert_close(a[name], b[name], rtol=0, atol=1e-6)
    csv_rows = (tmp_path / "b" / "run" / "losses.csv").read_text().splitlines()[1:]
    assert [int(r.split(",")[0]) for r in csv_rows] == [1, 2, 3, 4, 5, 6]


def test_response_cache_skips_finished_queries(tmp_path, query_file, tiny_backbone):
    model, tok, _, _ = load_gen_model(tiny_backbone, dtype="fp32")
    queries = load_queries([query_file])
    calls = []
    real = model.lm.generate
    model.lm.generate = lambda **kw: calls.append(kw["input_ids"].shape[0]) or real(**kw)
    generate_responses(
        model.lm, tok, queries[:6], tmp_path / "r", batch_size=4, max_new_tokens=4, progress=False, log=lambda *_: None
    )
    assert sum(calls) == 6
    calls.clear()
    table = generate_responses(
        model.lm, tok, queries[:10], tmp_path / "r", batch_size=4, max_new_tokens=4, progress=False, log=lambda *_: None
    )
    assert sum(calls) == 4
    assert table.num_rows == 10 and len(set(table.column("id").to_pylist())) == 10
    assert read_responses(tmp_path / "r").num_rows == 10


def test_query_sampling_is_seeded_and_capped(query_file):
    a = load_queries([f"{query_file}:5"], seed=1)
    b = load_queries([f"{query_file}:5"], seed=1)
    assert [q.id for q in a] == [q.id for q in b] and len(a) == 5


@pytest.mark.parametrize(
    "content, message",
    [
        ("", "has no queries"),
        ('{"id": 1, "query": "x"}\n', "missing field 'text'"),
        ('{"id": 1, "text": "x"}\nnot json\n', "queries.jsonl:2: invalid JSON"),
    ],
)
def test_bad_query_files(tmp_path, content, message):
    path = tmp_path / "queries.jsonl"
    path.write_text(content)
    with pytest.raises(GenRetError, match=message):
        load_queries([path])


def test_bad_settings(tmp_path, query_file, tiny_backbone):
    with pytest.raises(GenRetError, match="K .* must be >= 1"):
        train(_cfg(tmp_path, query_file, tiny_backbone, num_compression=0), progress=False)
    with pytest.raises(GenRetError, match="unknown backbone"):
        train(_cfg(tmp_path, query_file, "no-such-backbone"), progress=False)
    with pytest.raises(GenRetError, match="query file not found"):
        train(_cfg(tmp_path, tmp_path / "missing.jsonl", tiny_backbone), progress=False)
    with pytest.raises(GenRetError, match="not both 0"):
        train(_cfg(tmp_path, query_file, tiny_backbone, recon_weight=0, align_weight=0), progress=False)
    with pytest.raises(GenRetError, match="--tokens-only needs --init-align ridge"):
        train(_cfg(tmp_path, query_file, tiny_backbone, tokens_only=True, init_align="random"), progress=False)


# ---------------------------------------------------------------------------------------------- read-out stage


def test_info_nce_ignores_masked_negatives():
    from genretrieval.train.readout import info_nce

    g = torch.Generator().manual_seed(0)
    x = torch.nn.functional.normalize(torch.randn(4, 8, generator=g), dim=-1)
    y = torch.nn.functional.normalize(torch.randn(4, 8, generator=g), dim=-1)
    same = torch.zeros(4, 4, dtype=torch.bool)
    same[0, 1] = True  # row 1 is a duplicate of row 0's target: not a negative for row 0
    got = info_nce(x, y, same, 0.1)
    logits = x @ y.T / 0.1
    expected = torch.stack(
        [torch.logsumexp(logits[i, [j for j in range(4) if not same[i, j]]], 0) - logits[i, i] for i in range(4)]
    ).mean()
    torch.testing.assert_close(got, expected)
    assert not torch.isclose(got, info_nce(x, y, torch.zeros_like(same), 0.1))


def test_readout_learns_to_retrieve_on_held_out_rows():
    from genretrieval.train.readout import ReadoutConfig, fit_readout, retrieval_scores

    g = np.random.default_rng(0)
    n, h, d = 1200, 48, 16
    t = g.normal(size=(n, d)).astype(np.float32)
    mix_q, mix_p = g.normal(size=(d, h)), g.normal(size=(d, h))
    # Features: a linear image of the target, badly scaled, plus noise; queries and passages differ.
    scale = np.exp(g.normal(size=h) * 1.5)
    q = ((t @ mix_q + 0.3 * g.normal(size=(n, h))) * scale).astype(np.float32)
    p = ((t @ mix_p + 0.3 * g.normal(size=(n, h))) * scale).astype(np.float32)
    readout = fit_readout(q[:1000], p[:1000], t[:1000], ReadoutConfig(epochs=20, batch_size=100), progress=False)
    trained = retrieval_scores(readout, q[1000:], p[1000:], t[1000:])
    untrained = retrieval_scores(
        fit_readout(q[:1000], p[:1000], t[:1000], ReadoutConfig(epochs=0), progress=False), q[1000:], p[1000:], t[1000:]
    )
    assert trained["ndcg@10"] > 0.8 and untrained["ndcg@10"] < 0.3
    # The folded map on raw features is the same function.
    w, b = readout.folded()
    x = torch.from_numpy(q[:5])
    torch.testing.assert_close(x @ w.T + b, readout(x), rtol=1e-4, atol=1e-4)


def test_retrieval_scores_by_hand():
    from genretrieval.train.readout import retrieval_scores

    ident = torch.nn.Identity()
    q = np.array([[1, 0, 0], [1, 0, 0], [0, 0, 1]], dtype=np.float32)
    p = np.array([[1, 0, 0], [0.8, 0.6, 0], [0, 0, 1]], dtype=np.float32)  # query 1 ranks its answer 2nd
    t = np.eye(3, dtype=np.float32)
    s = retrieval_scores(ident, q, p, t)
    assert s["mrr@10"] == pytest.approx((1 + 0.5 + 1) / 3)
    # When answers 0 and 1 are near duplicates (same teacher target), outranking by a duplicate is no miss.
    t_dup = np.array([[1, 0, 0], [1, 0, 0], [0, 0, 1]], dtype=np.float32)
    assert retrieval_scores(ident, q, p, t_dup)["mrr@10"] == pytest.approx(1.0)


def test_info_nce_extra_rows_are_negatives_only():
    from genretrieval.train.readout import info_nce

    g = torch.Generator().manual_seed(1)
    x = torch.nn.functional.normalize(torch.randn(3, 8, generator=g), dim=-1)
    y = torch.nn.functional.normalize(torch.randn(5, 8, generator=g), dim=-1)  # rows 3, 4: extra negatives
    logits = x @ y.T / 0.1
    expected = (torch.logsumexp(logits, 1) - logits.diag()).mean()
    torch.testing.assert_close(info_nce(x, y, torch.zeros(3, 5, dtype=torch.bool), 0.1), expected)
    assert info_nce(x, y, torch.zeros(3, 5, dtype=torch.bool), 0.1) > info_nce(
        x, y[:3], torch.zeros(3, 3, dtype=torch.bool), 0.1
    )


def test_retrieval_scores_count_distractors_ranked_above_the_answer():
    from genretrieval.train.readout import retrieval_scores

    ident = torch.nn.Identity()
    q = np.array([[1, 0, 0], [0, 0, 1]], dtype=np.float32)
    p = np.array([[0.8, 0.6, 0], [0, 0, 1]], dtype=np.float32)
    t = np.eye(2, 3, dtype=np.float32)
    assert retrieval_scores(ident, q, p, t)["mrr@10"] == pytest.approx(1.0)
    # A corpus passage nearer query 0 than its answer pushes the answer to rank 2; query 1 is untouched.
    d = np.array([[1, 0, 0], [0, 1, 0]], dtype=np.float32)
    assert retrieval_scores(ident, q, p, t, distractors=d)["mrr@10"] == pytest.approx((0.5 + 1) / 2)


def test_readout_corpus_passages_stop_distracting():
    """Corpus passages whose features the answers do not cover: without training on them they land anywhere,
    some near the queries; trained towards their own targets, they stop outranking the answers."""
    from genretrieval.train.readout import ReadoutConfig, fit_readout, retrieval_scores

    g = np.random.default_rng(0)
    n, m, h, d = 1200, 1200, 48, 16
    t, tc = g.normal(size=(n, d)).astype(np.float32), g.normal(size=(m, d)).astype(np.float32)
    mix_q, mix_p = g.normal(size=(d, h)), g.normal(size=(d, h))
    mix_c = mix_q  # the corpus reads like the queries, unlike the answers the document path was trained on
    q = (t @ mix_q + 0.3 * g.normal(size=(n, h))).astype(np.float32)
    p = (t @ mix_p + 0.3 * g.normal(size=(n, h))).astype(np.float32)
    c = (tc @ mix_c + 0.3 * g.normal(size=(m, h))).astype(np.float32)
    rcfg = ReadoutConfig(epochs=20, batch_size=100)
    scores = {}
    for name, corpus in (("without", (None, None)), ("with", (c[:1000], tc[:1000]))):
        readout = fit_readout(q[:1000], p[:1000], t[:1000], rcfg, progress=False, c=corpus[0], tc=corpus[1])
        scores[name] = retrieval_scores(readout, q[1000:], p[1000:], t[1000:], distractors=c[1000:])["ndcg@10"]
    assert scores["with"] > scores["without"] + 0.1, scores


def _readout_cfg(tmp_path, query_file, backbone, init, **kw) -> TrainConfig:
    """Stage readout (after responses and teacher) from the adapter ``init``, on tiny batches."""
    base = dict(
        stages=["responses", "teacher", "readout"], init_adapter=str(init), readout_batch_size=4, readout_holdout=4
    )
    return _cfg(tmp_path, query_file, backbone, **{**base, **kw})


def test_readout_stage_end_to_end(tmp_path, query_file, tiny_backbone, monkeypatch):
    from genretrieval.encoder import load_encoder
    from genretrieval.encoder.model import GenModel

    init = train(_cfg(tmp_path / "init", query_file, tiny_backbone, steps=2), progress=False, log=lambda *_: None)
    # As if the start had a reconstruction step (--recon-only) that kept the embeddings of an earlier adapter.
    meta = json.loads((init / "adapter.json").read_text())
    meta["provenance"]["recon"] = {"steps": 7, "same_embeddings_as": "earlier"}
    (init / "adapter.json").write_text(json.dumps(meta))
    cfg = _readout_cfg(tmp_path, query_file, tiny_backbone, init, readout_epochs=3)
    adapter = train(cfg, progress=False, log=lambda *_: None)
    run = tmp_path / "run"
    assert len((run / "readout.csv").read_text().splitlines()) == 4  # header + 3 epochs
    a_cfg, tensors = read_adapter(adapter)
    _, start = read_adapter(init)
    assert torch.equal(tensors["special"], start["special"]) and torch.equal(
        tensors["recon.weight"], start["recon.weight"]
    )
    assert not torch.equal(tensors["align.weight"], start["align.weight"])
    assert a_cfg.provenance["stage"] == "readout" and 1 <= a_cfg.provenance["readout"]["best_epoch"] <= 3
    assert a_cfg.provenance["recon_trained"] is True  # carried over from the start adapter (recon weight 1)
    # The start's reconstruction step stays on record; its embeddings, and so its eval rows, are not this one's.
    assert a_cfg.provenance["recon"] == {"steps": 7}
    card = (adapter / "README.md").read_text()
    assert "read-out" in card and "fitted on the features through this `recon`" in card
    # The saved adapter embeds a query exactly as the read-out did on its cached features.
    enc = load_encoder("gen", backbone=tiny_backbone, adapter=adapter, dtype="fp32", device="cpu")
    text = WORDS[0]
    h = enc.model.compress(*enc.pad(enc.tokenize([text], enc.task("retrieval").query))).mean(1)
    via_features = enc.model.align(enc.model.recon(h))
    torch.testing.assert_close(
        torch.from_numpy(enc.encode_queries([text], normalize=False)), via_features, rtol=1e-4, atol=1e-5
    )
    # A second run reuses every cached feature (no forward pass).
    monkeypatch.setattr(GenModel, "compress", lambda *a, **k: pytest.fail("features recomputed"))
    train(cfg, progress=False, log=lambda *_: None)


def test_readout_stage_with_a_corpus(tmp_path, query_file, tiny_backbone):
    from genretrieval.train.data import load_passages

    corpus = tmp_path / "corpus.jsonl"
    rows = [{"_id": f"d{i}", "title": f"Entry {i}", "text": f"{w} is described here."} for i, w in enumerate(WORDS)]
    corpus.write_text("".join(json.dumps(r) + "\n" for r in rows))
    passages = load_passages([f"{corpus}:10"])
    assert len(passages) == 10 and passages[0].text.startswith("Entry ") and passages[0].id.startswith("corpus:d")
    init = train(_cfg(tmp_path / "init", query_file, tiny_backbone, steps=2), progress=False, log=lambda *_: None)
    cfg = _readout_cfg(tmp_path, query_file, tiny_backbone, init, readout_epochs=2, readout_corpus=[str(corpus)])
    adapter = train(cfg, progress=False, log=lambda *_: None)
    prov = read_adapter(adapter)[0].provenance
    assert prov["readout"]["corpus"] == [str(corpus)] and prov["readout"]["corpus_weight"] == 1.0
    assert prov["readout"]["corpus_heldout"] == 4 and prov["readout"]["corpus_passages"] == len(rows) - 4
    assert prov["corpus_data"] and (tmp_path / "run" / "corpus_teacher.parquet").exists()
    card = (adapter / "README.md").read_text()
    assert "Passages no query asked about" in card and "4 held-out corpus passages" in card
    # A passage without text is refused in one line, naming the file and line.
    corpus.write_text(json.dumps({"id": 1, "title": "x"}) + "\n")
    with pytest.raises(GenRetError, match="corpus.jsonl:1.*non-empty 'text'"):
        load_passages([corpus])


def test_stages_read_only_what_earlier_stages_cached(tmp_path, query_file, tiny_backbone):
    # Without stage "teacher", the targets come from the run's cache only: a run that never cached them says so.
    train(_cfg(tmp_path, query_file, tiny_backbone, stages=["responses"]), progress=False, log=lambda *_: None)
    assert not (tmp_path / "run" / "teacher.parquet").exists()
    with pytest.raises(GenRetError, match="add --stage teacher"):
        train(_cfg(tmp_path, query_file, tiny_backbone, stages=["optimize"]), progress=False, log=lambda *_: None)
    train(_cfg(tmp_path, query_file, tiny_backbone, stages=["teacher"]), progress=False, log=lambda *_: None)
    assert (tmp_path / "run" / "teacher.parquet").exists()
    assert (
        train(_cfg(tmp_path, query_file, tiny_backbone, stages=["optimize"]), progress=False, log=lambda *_: None)
        / "adapter.json"
    ).exists()


def test_adapter_dimension_must_match_the_teacher(tmp_path, query_file, tiny_backbone):
    from genretrieval.encoder.adapter import save_adapter

    model, _, a_cfg, _ = load_gen_model(tiny_backbone, dtype="fp32", num_compression=3, dim=16)
    init = save_adapter(model, a_cfg, tmp_path / "init16")
    with pytest.raises(GenRetError, match="16 dimensions.*384"):
        train(_cfg(tmp_path, query_file, tiny_backbone, init_adapter=str(init)), progress=False, log=lambda *_: None)


@pytest.mark.parametrize(
    "bad, message",
    [
        ({"stages": ["optimise"]}, "unknown stage"),
        ({"stages": ["optimize", "readout"]}, "run one of them"),
        ({"init_align": "zeros"}, "unknown --init-align"),
    ],
)
def test_config_validation(tmp_path, query_file, bad, message):
    with pytest.raises(GenRetError, match=message):
        _cfg(tmp_path, query_file, "x", **bad).validate()


def test_cli_defaults_are_the_config_defaults():
    import dataclasses
    import inspect

    from genretrieval.cli import train_cmd

    fields = {f.name: f for f in dataclasses.fields(TrainConfig)}
    for name, param in inspect.signature(train_cmd).parameters.items():
        assert name in fields, f"--{name} is not a TrainConfig field"
        field = fields[name]
        if field.default is not dataclasses.MISSING and name != "stages":
            assert param.default == field.default, name
