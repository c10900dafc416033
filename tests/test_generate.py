"""Greedy generation (encoder/generate.py), shared by HyDE and the training responses, on a tiny random backbone."""

from __future__ import annotations

from types import SimpleNamespace

import pytest

from genretrieval.encoder import HydeEncoder, load_gen_model
from genretrieval.encoder.generate import chat_prompt_ids, generate
from genretrieval.train.data import Query
from genretrieval.train.responses import generate_responses, read_responses

TEXTS = ["what is the capital of france", "how to bake bread", "hello world"]


@pytest.fixture(scope="module")
def lm_tok(tiny_backbone):
    model, tok, _, _ = load_gen_model(tiny_backbone, dtype="fp32")
    return model.lm, tok


def test_batches_follow_the_order_and_options_reach_generate(lm_tok):
    lm, tok = lm_tok
    calls = []
    real = lm.generate
    lm.generate = lambda **kw: calls.append(kw) or real(**kw)
    try:
        prompts = chat_prompt_ids(tok, TEXTS)
        out = list(generate(lm, tok, prompts, 2, 4, order=[2, 0, 1], min_new_tokens=1))
    finally:
        del lm.generate
    assert [idx for idx, _ in out] == [[2, 0], [1]]
    assert [tuple(new.shape)[0] for _, new in out] == [2, 1]
    assert all(new.device.type == "cpu" and 1 <= new.shape[1] <= 4 for _, new in out)
    assert [c["input_ids"].shape[0] for c in calls] == [2, 1]
    assert all(c["min_new_tokens"] == 1 and c["do_sample"] is False and c["max_new_tokens"] == 4 for c in calls)


def test_hyde_answers_are_the_training_responses(tmp_path, lm_tok):
    """Both paths generate through the same function: the same answer to the same question."""
    lm, tok = lm_tok
    hyde = HydeEncoder(lm, tok, SimpleNamespace(dim=4), backbone="tiny", max_new_tokens=6)
    answers = hyde.generate(TEXTS, batch_size=1)
    queries = [Query(str(i), t) for i, t in enumerate(TEXTS)]
    table = generate_responses(
        lm, tok, queries, tmp_path / "r", batch_size=1, max_new_tokens=6, progress=False, log=lambda *_: None
    )
    assert table.num_rows == len(TEXTS) == read_responses(tmp_path / "r").num_rows
    response = dict(zip(table.column("id").to_pylist(), table.column("response").to_pylist()))
    assert answers == [response[str(i)] or t for i, t in enumerate(TEXTS)]
