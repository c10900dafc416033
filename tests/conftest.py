"""Shared fixtures: a tiny randomly initialised causal LM with a word-level tokenizer, saved as a local model."""

from __future__ import annotations

import json
import os
from pathlib import Path

os.environ.setdefault("OMP_NUM_THREADS", "2")

import pytest

WORDS = (
    "the a of to and in is what how why who capital france paris bread bake city river water bomb make "
    "generate relevant document that answers this query summarize following passage text semantically "
    "similar question answer model tokens long short hello world data"
).split()


@pytest.fixture(autouse=True)
def _quiet_library():
    """Each test starts with the library's own progress default (a `genret` command run in-process turns it on)."""
    from genretrieval import progress

    before = progress.default_enabled()
    yield
    progress.set_default(before)


def build_tiny_backbone(directory: Path, hidden: int = 32, seed: int = 0) -> Path:
    """Write a 2-layer Qwen2 with random weights and a whitespace tokenizer to ``directory``."""
    import torch
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import PreTrainedTokenizerFast, Qwen2Config, Qwen2ForCausalLM

    # A byte-level BPE trained on a few words, the same kind of tokenizer real Qwen2 models use.
    tk = Tokenizer(models.BPE(unk_token=None))
    tk.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tk.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=400, special_tokens=["<pad>", "<eos>"], initial_alphabet=pre_tokenizers.ByteLevel.alphabet()
    )
    tk.train_from_iterator([" ".join(WORDS)] * 4, trainer)
    tok = PreTrainedTokenizerFast(tokenizer_object=tk, pad_token="<pad>", eos_token="<eos>")
    tok.chat_template = (
        "{% for m in messages %}{{ m['content'] }} {% endfor %}{% if add_generation_prompt %}answer {% endif %}"
    )
    torch.manual_seed(seed)
    cfg = Qwen2Config(
        vocab_size=len(tok),
        hidden_size=hidden,
        intermediate_size=2 * hidden,
        num_hidden_layers=2,
        num_attention_heads=4,
        num_key_value_heads=2,
        max_position_embeddings=256,
        pad_token_id=0,
        eos_token_id=1,
        bos_token_id=None,
        tie_word_embeddings=False,
        initializer_range=0.2,
    )  # large enough that the input steers the output distribution
    Qwen2ForCausalLM(cfg).save_pretrained(directory)
    tok.save_pretrained(directory)
    return directory


@pytest.fixture(scope="session")
def tiny_backbone(tmp_path_factory) -> str:
    return str(build_tiny_backbone(tmp_path_factory.mktemp("tiny-backbone")))


@pytest.fixture(scope="session")
def tiny_backbone_wide(tmp_path_factory) -> str:
    """Same architecture with another hidden size, for adapter mismatch tests."""
    return str(build_tiny_backbone(tmp_path_factory.mktemp("tiny-backbone-48"), hidden=48))


@pytest.fixture()
def fake_backbone():
    """``--backbone fake`` (with the default ``--encoder gen`` and no adapter) loads ``fakes.FakeEncoder`` for the
    rest of the test: the CLI, ``Index.open`` (rebuilding the encoder from a manifest) and ``genret embed`` call
    ``genretrieval.encoder.load_encoder``, which is wrapped. Any other backbone loads as usual. Returns the name.

    Uses its own MonkeyPatch, so a test's ``monkeypatch.undo()`` leaves the fake registered; and the wrapper
    stops answering for the fake when the test ends, so one restored late by another patch loads as usual."""
    from fakes import FAKE_BACKBONE, FakeEncoder

    import genretrieval.encoder

    real = genretrieval.encoder.load_encoder
    active = True

    def load_encoder(kind="gen", backbone=None, adapter=None, max_length=512, **options):
        if active and backbone == FAKE_BACKBONE and kind == "gen" and adapter is None:
            return FakeEncoder(max_length=max_length)
        return real(kind, backbone=backbone, adapter=adapter, max_length=max_length, **options)

    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(genretrieval.encoder, "load_encoder", load_encoder)
        yield FAKE_BACKBONE
        active = False


@pytest.fixture()
def fake_enc():
    """A ``fakes.FakeEncoder`` to build an index directly; pair it with ``fake_backbone`` to reopen the index."""
    from fakes import FakeEncoder

    return FakeEncoder()


@pytest.fixture(scope="module")
def enc(tiny_backbone):
    """The generative encoder on the tiny backbone (fp32, 64 tokens)."""
    from genretrieval.encoder import load_encoder

    return load_encoder("gen", backbone=tiny_backbone, dtype="fp32", max_length=64)


@pytest.fixture()
def corpus(tmp_path):
    return write_corpus(tmp_path / "corpus")


def write_corpus(root: Path) -> Path:
    """A small corpus: Markdown, text and a JSONL record file with a filterable field, in a sub-folder."""
    (root / "sub").mkdir(parents=True)
    (root / "a.md").write_text("# Paris\nParis is the capital of France. " * 3)
    (root / "b.txt").write_text("bread is made of water")
    (root / "sub" / "c.jsonl").write_text(
        json.dumps({"id": "r1", "text": "the river flows to the sea", "lang": "en"})
        + "\n"
        + json.dumps({"id": "r2", "text": "le fleuve coule vers la mer", "lang": "fr"})
        + "\n"
    )
    return root
