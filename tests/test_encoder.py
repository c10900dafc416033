"""Generative encoder on a tiny random backbone: shapes, padding, truncation, invariance, adapters, gradients."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from genretrieval import GenRetError
from genretrieval.encoder import load_encoder, load_gen_model
from genretrieval.encoder.adapter import AdapterConfig, read_adapter, save_adapter

TEXTS = [
    "what is the capital of france",
    "how to bake bread",
    "hello",
    "why is the river water long " * 6,
    "who make the city",
    "the a of to and in is what how why who",
]


def test_shapes_dtype_and_normalisation(enc):
    q = enc.encode_queries(TEXTS)
    d = enc.encode_documents(TEXTS)
    assert q.shape == (len(TEXTS), 384) and q.dtype == np.float32
    np.testing.assert_allclose(np.linalg.norm(q, axis=1), 1.0, atol=1e-5)
    raw = enc.encode_queries(TEXTS, normalize=False)
    assert not np.allclose(np.linalg.norm(raw, axis=1), 1.0)
    # Query and document instructions differ, so the vectors do too.
    assert np.all(np.sum(q * d, axis=1) < 0.99999)


def test_batch_size_invariance(enc):
    one = enc.encode_documents(TEXTS, batch_size=1)
    many = enc.encode_documents(TEXTS, batch_size=32)
    assert np.min(np.sum(one * many, axis=1)) >= 0.999


def test_left_padding_matches_unpadded(enc):
    alone = enc.encode_queries(["hello"], batch_size=1)
    padded = enc.encode_queries(["hello", "why is the river water long " * 6], batch_size=2)[:1]
    assert float((alone @ padded.T)[0, 0]) > 0.9999


def test_order_is_preserved(enc):
    fwd = enc.encode_queries(TEXTS)
    rev = enc.encode_queries(TEXTS[::-1])[::-1]
    np.testing.assert_allclose(fwd, rev, atol=1e-5)


def test_truncation_keeps_special_tokens(enc):
    budget = enc.max_length - enc.model.num_special
    long_a = "the river " * 100 + "paris"
    long_b = "the river " * 100 + "bread bake"  # differs only after the cut
    rows = enc.tokenize([long_a], enc.task("retrieval").query)
    assert len(rows[0]) == budget
    seen = {}
    hook = enc.model.backbone().register_forward_hook(
        lambda m, args, kwargs, out: seen.update(len=kwargs["inputs_embeds"].shape[1]), with_kwargs=True
    )
    try:
        a, b = enc.encode_queries([long_a, long_b])
    finally:
        hook.remove()
    assert seen["len"] == enc.max_length  # text budget + T + K special positions
    assert float(a @ b) > 0.99999


def test_gradients_reach_only_adapter(tiny_backbone):
    model, tok, _, _ = load_gen_model(tiny_backbone, dtype="fp32")
    model.train()
    enc = tok(["what is the capital of france", "hello"], padding=True, return_tensors="pt")
    out = model(enc["input_ids"], enc["attention_mask"])
    (out["embedding"].pow(2).sum() + out["soft_prompt"].sum()).backward()
    assert all(p.grad is None for p in model.lm.parameters())
    for p in model.adapter_parameters():
        assert p.grad is not None and p.grad.abs().sum() > 0
    assert all(p.dtype == torch.float32 for p in model.adapter_parameters())


def test_adapter_round_trip(tmp_path, tiny_backbone, enc):
    model, _, config, adapter_id = load_gen_model(tiny_backbone, dtype="fp32")
    with torch.no_grad():
        model.align.bias.add_(0.5)  # make it differ from the seeded untrained default
    config.trained = True
    save_adapter(model, config, tmp_path / "ad")
    loaded = load_encoder("gen", adapter=tmp_path / "ad", dtype="fp32", max_length=64)
    assert loaded.identity()["adapter"] != enc.identity()["adapter"]
    cfg2, tensors = read_adapter(tmp_path / "ad")
    assert cfg2 == config
    torch.testing.assert_close(tensors["align.bias"], model.align.bias.detach())
    again = load_encoder("gen", adapter=tmp_path / "ad", dtype="fp32", max_length=64)
    assert again.identity() == loaded.identity()
    np.testing.assert_allclose(again.encode_queries(TEXTS), loaded.encode_queries(TEXTS), atol=1e-6)
    assert sorted(p.name for p in (tmp_path / "ad").iterdir()) == ["adapter.json", "adapter.safetensors"]


def test_untrained_adapter_is_seeded_and_warns(tiny_backbone, caplog):
    a = load_encoder("gen", backbone=tiny_backbone, dtype="fp32")
    b = load_encoder("gen", backbone=tiny_backbone, dtype="fp32")
    assert a.identity() == b.identity() and a.identity()["trained"] is False
    assert any("UNTRAINED" in r.message for r in caplog.records)


@pytest.mark.parametrize(
    "bad, message",
    [
        ([], "empty list"),
        ([""], "text 0 is empty"),
        (["ok", None], "text 1 is None"),
        (["ok", 3], "text 1 is int"),
        ("a string", "single string"),
        (None, "got None"),
    ],
)
def test_bad_texts(enc, bad, message):
    with pytest.raises(GenRetError, match=message):
        enc.encode_queries(bad)


def test_unknown_task(enc):
    with pytest.raises(GenRetError, match="unknown task 'nope'"):
        enc.encode_queries(["hello"], task="nope")


def test_unknown_backbone():
    with pytest.raises(GenRetError, match="unknown backbone 'no-such-model'"):
        load_encoder("gen", backbone="no-such-model")


def test_missing_adapter(tmp_path):
    with pytest.raises(GenRetError, match="adapter file missing"):
        load_encoder("gen", adapter=tmp_path)


def test_hidden_size_mismatch(tmp_path, tiny_backbone, tiny_backbone_wide):
    model, _, config, _ = load_gen_model(tiny_backbone, dtype="fp32")
    save_adapter(model, config, tmp_path / "ad")
    with pytest.raises(GenRetError, match="hidden size 32 .* this backbone has 48"):
        load_encoder("gen", backbone=tiny_backbone_wide, adapter=tmp_path / "ad", dtype="fp32")


def test_malformed_adapter_json(tmp_path, tiny_backbone):
    model, _, config, _ = load_gen_model(tiny_backbone, dtype="fp32")
    save_adapter(model, config, tmp_path / "ad")
    (tmp_path / "ad" / "adapter.json").write_text("{not json")
    with pytest.raises(GenRetError, match="malformed"):
        load_encoder("gen", adapter=tmp_path / "ad", dtype="fp32")


def test_adapter_config_defaults():
    cfg = AdapterConfig(backbone="x", backbone_weights="w", hidden_size=8, dim=4)
    assert cfg.num_compression == 10 and cfg.num_thought == 0 and cfg.trained is False


def test_untrained_adapter_identity_does_not_depend_on_dtype(tiny_backbone):
    fp32 = load_encoder("gen", backbone=tiny_backbone, dtype="fp32")
    bf16 = load_encoder("gen", backbone=tiny_backbone, dtype="bf16")
    assert fp32.identity()["adapter"] == bf16.identity()["adapter"]


def test_decode_and_logit_lens_shapes(enc):
    from genretrieval.encoder.decode import decode, logit_lens

    out = decode(enc, ["what is the capital of france", "hello"], max_new_tokens=4)
    assert len(out) == 2 and all(isinstance(t, str) for t in out)
    lens = logit_lens(enc, "hello", top=3)
    assert len(lens) == enc.model.num_compression and all(len(row) == 3 for row in lens)


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
def test_cuda_is_picked_with_bf16_and_agrees_with_cpu(tiny_backbone):
    gpu = load_encoder("gen", backbone=tiny_backbone)
    cpu = load_encoder("gen", backbone=tiny_backbone, device="cpu", dtype="fp32")
    assert gpu.device == "cuda" and gpu.dtype in (torch.bfloat16, torch.float16)
    assert np.min(np.sum(gpu.encode_queries(TEXTS) * cpu.encode_queries(TEXTS), axis=1)) > 0.99


def test_missing_teacher_model_is_a_one_line_error(tmp_path):
    from genretrieval.encoder.teacher import TeacherEncoder

    with pytest.raises(GenRetError, match="cannot load teacher model"):
        TeacherEncoder(str(tmp_path / "no-such-model"))


def test_batch_size_invariance_on_the_default_path(tiny_backbone):
    """No dtype given: what a user gets. A query alone and in a batch of six texts of other lengths agree to the
    tolerance stated for the chosen dtype (fp32 on a CPU without native bf16: 1e-5)."""
    from genretrieval.encoder.device import cpu_supports_bf16
    from genretrieval.encoder.gen import BATCH_TOLERANCE

    default = load_encoder("gen", backbone=tiny_backbone)
    if default.device == "cpu" and not cpu_supports_bf16():
        assert default.dtype == torch.float32
    together = default.encode_queries(TEXTS, batch_size=len(TEXTS))
    for i, text in enumerate(TEXTS):
        alone = default.encode_queries([text], batch_size=1)[0]
        assert float(alone @ together[i]) >= 1 - BATCH_TOLERANCE[default.dtype], text


def test_long_text_warns_once_with_the_number_of_dropped_tokens(tiny_backbone, caplog):
    fresh = load_encoder("gen", backbone=tiny_backbone, dtype="fp32", max_length=64)
    instruction = fresh.task("retrieval").query
    long_text = "the river " * 100
    full = len(fresh.tokenizer(f"{instruction} {long_text}")["input_ids"])
    budget = fresh.max_length - fresh.model.num_special
    caplog.clear()
    fresh.encode_queries(["hello", long_text])
    warnings = [r for r in caplog.records if r.levelname == "WARNING" and "dropped" in r.message]
    assert len(warnings) == 1 and "\n" not in warnings[0].message
    assert f"{full - budget:,} tokens at its end were dropped" in warnings[0].message
    caplog.clear()
    fresh.encode_queries([long_text])
    assert not [r for r in caplog.records if r.levelname == "WARNING"]  # once per encoder


def test_max_text_tokens_is_what_the_encoder_reads(enc, caplog):
    budget = enc.max_length - enc.model.num_special
    n = enc.max_text_tokens
    instruction_tokens = len(enc.tokenizer(enc.task("retrieval").query + " ")["input_ids"])
    assert n == budget - instruction_tokens
    fits = " ".join(["river"] * 200)
    ids = enc.tokenizer(fits, add_special_tokens=False)["input_ids"][:n]
    fits = enc.tokenizer.decode(ids)
    for instruction in (enc.task("retrieval").query, enc.task("retrieval").document):
        assert len(enc.tokenize([fits], instruction)[0]) <= budget
        assert len(enc.tokenizer(f"{instruction} {fits}")["input_ids"]) <= budget  # nothing was cut


@pytest.mark.parametrize("damage", ["zero-byte", "truncated"])
def test_damaged_adapter_weights_are_one_line_errors(tmp_path, tiny_backbone, damage):
    model, _, config, _ = load_gen_model(tiny_backbone, dtype="fp32")
    save_adapter(model, config, tmp_path / "ad")
    weights = tmp_path / "ad" / "adapter.safetensors"
    data = weights.read_bytes()
    weights.write_bytes(b"" if damage == "zero-byte" else data[: len(data) // 2])
    with pytest.raises(GenRetError, match=r"adapter weights .*adapter.safetensors are corrupt or truncated") as e:
        load_encoder("gen", adapter=tmp_path / "ad", dtype="fp32")
    assert "\n" not in str(e.value)


def _remote_code_model(directory):
    """A local model whose config asks transformers to import code shipped beside it."""
    directory.mkdir()
    (directory / "config.json").write_text(
        '{"model_type": "genret-custom", "architectures": ["CustomLM"], "auto_map": {"AutoConfig": '
        '"configuration_custom.CustomConfig", "AutoModelForCausalLM": "modeling_custom.CustomLM"}}'
    )
    for name in ("configuration_custom.py", "modeling_custom.py"):
        (directory / name).write_text('raise RuntimeError("remote code ran")\n')
    return directory


def test_backbone_needing_remote_code_is_refused_without_a_prompt(tmp_path, monkeypatch):
    import io
    import sys

    model_dir = _remote_code_model(tmp_path / "custom")
    monkeypatch.setattr(sys, "stdin", io.StringIO(""))  # a prompt would read from here
    with pytest.raises(GenRetError, match="needs custom code from its repository.*trust-remote-code") as e:
        load_encoder("gen", backbone=str(model_dir), dtype="fp32")
    assert "\n" not in str(e.value)


def test_trust_remote_code_reaches_transformers(tmp_path, monkeypatch):
    import transformers

    model_dir = _remote_code_model(tmp_path / "custom")
    seen = {}

    def fake_from_pretrained(name, **kwargs):
        seen.update(kwargs)
        raise OSError("stop here")

    monkeypatch.setattr(transformers.AutoModelForCausalLM, "from_pretrained", fake_from_pretrained)
    with pytest.raises(GenRetError, match="cannot load backbone"):
        load_encoder("gen", backbone=str(model_dir), dtype="fp32", trust_remote_code=True)
    assert seen["trust_remote_code"] is True


def test_unwritable_genret_home_is_a_one_line_error(tmp_path, monkeypatch):
    blocker = tmp_path / "a-file"
    blocker.write_text("not a folder")
    monkeypatch.setenv("GENRET_HOME", str(blocker / "home"))
    with pytest.raises(GenRetError, match="cannot prepare the backbone cache under .*GENRET_HOME") as e:
        load_encoder("gen", backbone="smollm2-135m-instruct", dtype="fp32")
    assert "\n" not in str(e.value)


@pytest.mark.slow
def test_teacher_warns_once_when_a_text_is_cut(caplog):
    from genretrieval.encoder.teacher import TeacherEncoder

    teacher = TeacherEncoder()
    assert teacher.max_text_tokens == 254  # all-MiniLM-L6-v2 reads 256 tokens, two of them [CLS] and [SEP]
    caplog.clear()
    teacher.encode_queries(["word " * 1000])
    warnings = [r.message for r in caplog.records if r.levelname == "WARNING"]
    assert len(warnings) == 1 and warnings[0].startswith("the text was cut to the 256 tokens all-MiniLM-L6-v2 reads")
    assert "746 tokens at its end were dropped" in warnings[0]
    caplog.clear()
    teacher.encode_queries(["word " * 1000])
    assert not [r for r in caplog.records if r.levelname == "WARNING"]


def test_feature_cache_gives_the_same_vectors_without_a_forward_pass(tmp_path, tiny_backbone, monkeypatch):
    from genretrieval.encoder.model import GenModel

    plain = load_encoder("gen", backbone=tiny_backbone, dtype="fp32", device="cpu")
    cached = load_encoder("gen", backbone=tiny_backbone, dtype="fp32", device="cpu")
    cached.feature_cache = tmp_path / "features"
    texts = ["the city of paris", "what is water", "how to bake bread in the river city", "the city of paris"]
    want = plain.encode_documents(texts)
    np.testing.assert_allclose(cached.encode_documents(texts), want, atol=1e-5)
    monkeypatch.setattr(GenModel, "compress", lambda *a, **k: pytest.fail("forward pass despite the cache"))
    np.testing.assert_allclose(cached.encode_documents(texts[::-1]), want[::-1], atol=1e-5)
    # Another instruction is another key: the query path is not served from the document cache.
    with pytest.raises(pytest.fail.Exception):
        cached.encode_queries(texts[:1])


def test_cpu_bf16_is_chosen_by_the_native_flags_not_by_onednn():
    from genretrieval.encoder.device import cpu_supports_bf16

    emulated = "processor\t: 0\nflags\t\t: fpu sse avx2 avx512f avx512bw avx512_vnni\n"
    native = "processor\t: 0\nflags\t\t: fpu sse avx2 avx512f avx512_bf16\n"
    amx = "processor\t: 0\nflags\t\t: fpu avx512f amx_bf16 amx_tile\n"
    assert not cpu_supports_bf16(emulated) and cpu_supports_bf16(native) and cpu_supports_bf16(amx)
    assert not cpu_supports_bf16("")
