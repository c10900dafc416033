"""Integration tests on the real offline models: SmolLM2-135M-Instruct (GGUF from PyPI) and all-MiniLM-L6-v2."""

from __future__ import annotations

import numpy as np
import pytest

from genretrieval.encoder import load_encoder
from genretrieval.train.responses import chat_prompt_ids

pytestmark = pytest.mark.slow

PASSAGES = [
    "Paris is the capital and most populous city of France.",
    "Bread is made by baking a dough of flour and water. " * 8,
    "The Amazon river flows through South America.",
    "Photosynthesis converts light energy into chemical energy in plants.",
]


@pytest.fixture(scope="module")
def smollm():
    return load_encoder("gen", backbone="smollm2-135m-instruct")


@pytest.fixture(scope="module")
def teacher():
    return load_encoder("teacher")


def test_smollm2_encodes_in_bf16_and_batch_invariant(smollm):
    assert smollm.identity()["dtype"] in ("bfloat16", "float32")
    one = smollm.encode_documents(PASSAGES, batch_size=1)
    many = smollm.encode_documents(PASSAGES, batch_size=32)
    assert one.shape == (4, 384)
    assert np.min(np.sum(one * many, axis=1)) >= 0.999


def test_smollm2_chat_template_and_pad(smollm):
    tok = smollm.tokenizer
    assert tok.padding_side == "left" and tok.pad_token_id is not None
    (ids,) = chat_prompt_ids(tok, ["hi"])
    text = tok.decode(ids)
    assert text.rstrip().endswith("assistant") and "hi" in text


def test_teacher_retrieves_the_matching_passage(teacher):
    q = teacher.encode_queries(["What is the capital of France?", "Which river flows through South America?"])
    d = teacher.encode_documents(PASSAGES)
    assert q.shape == (2, 384)
    np.testing.assert_allclose(np.linalg.norm(d, axis=1), 1.0, atol=1e-5)
    assert list((q @ d.T).argmax(axis=1)) == [0, 2]


def test_teacher_raw_pool_is_unnormalised(teacher):
    raw = teacher.encode(PASSAGES[:2], normalize=False)
    unit = teacher.encode(PASSAGES[:2])
    assert np.all(np.linalg.norm(raw, axis=1) > 1.5)
    np.testing.assert_allclose(raw / np.linalg.norm(raw, axis=1, keepdims=True), unit, atol=1e-5)
