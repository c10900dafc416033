"""Backbone registry: GGUF assembly and verification, name resolution."""

from __future__ import annotations

import hashlib

import pytest

from genretrieval import GenRetError
from genretrieval.encoder.backbones import BACKBONES, DEFAULT_BACKBONE, Part, assemble_gguf, resolve_backbone


def _parts(tmp_path, blobs):
    parts = []
    for i, blob in enumerate(blobs):
        path = tmp_path / f"part{i}.bin"
        path.write_bytes(blob)
        parts.append(Part(f"pkg-part{i}", lambda p=str(path): p, len(blob), hashlib.sha256(blob).hexdigest()))
    whole = b"".join(blobs)
    return tuple(parts), len(whole), hashlib.sha256(whole).hexdigest()


def test_assembly_concatenates_and_verifies(tmp_path):
    parts, size, sha = _parts(tmp_path, [b"GGUF" + b"a" * 1000, b"b" * 500, b"c" * 7])
    out = assemble_gguf(parts, size, sha, tmp_path / "out" / "model.gguf")
    assert out.read_bytes() == b"GGUF" + b"a" * 1000 + b"b" * 500 + b"c" * 7


def test_assembly_rejects_corrupted_part(tmp_path):
    parts, size, sha = _parts(tmp_path, [b"GGUF" + b"a" * 1000, b"b" * 500])
    (tmp_path / "part1.bin").write_bytes(b"b" * 499 + b"X")  # same size, one byte flipped
    with pytest.raises(GenRetError, match="part1.bin is corrupt .*reinstall pkg-part1"):
        assemble_gguf(parts, size, sha, tmp_path / "model.gguf")
    assert not (tmp_path / "model.gguf").exists()


def test_assembly_rejects_truncated_or_missing_part(tmp_path):
    parts, size, sha = _parts(tmp_path, [b"a" * 100, b"b" * 100])
    (tmp_path / "part0.bin").write_bytes(b"a" * 50)
    with pytest.raises(GenRetError, match="has 50 bytes, expected 100: reinstall pkg-part0"):
        assemble_gguf(parts, size, sha, tmp_path / "model.gguf")
    (tmp_path / "part0.bin").unlink()
    with pytest.raises(GenRetError, match="missing .*pkg-part0"):
        assemble_gguf(parts, size, sha, tmp_path / "model.gguf")


def test_assembly_rejects_wrong_whole_hash(tmp_path):
    parts, size, _ = _parts(tmp_path, [b"a" * 100])
    with pytest.raises(GenRetError, match="does not match the pinned"):
        assemble_gguf(parts, size, "0" * 64, tmp_path / "model.gguf")


def test_registered_parts_sum_to_the_pinned_size():
    for spec in BACKBONES.values():
        assert sum(p.size for p in spec.parts) == spec.size


def test_resolve():
    assert resolve_backbone(None).name == DEFAULT_BACKBONE
    assert resolve_backbone("Qwen/Qwen3-0.6B").weights_id == "hub:Qwen/Qwen3-0.6B"
    with pytest.raises(GenRetError, match="unknown backbone"):
        resolve_backbone("not-a-model")


def test_resolve_rejects_non_model_directory(tmp_path):
    with pytest.raises(GenRetError, match="not a model directory"):
        resolve_backbone(str(tmp_path))


@pytest.mark.slow
def test_installed_default_parts_verify(tmp_path):
    """The six PyPI parts of the default backbone are installed and match the pinned sha256."""
    spec = BACKBONES[DEFAULT_BACKBONE]
    out = assemble_gguf(spec.parts, spec.size, spec.sha256, tmp_path / "model.gguf")
    assert out.stat().st_size == 491_400_064


def test_loaded_backbone_feeds_lm_head_contiguous_rows(tiny_backbone):
    """generate() hands lm_head a non-contiguous slice of the prompt; the loader makes it contiguous (on CPU a bf16
    matmul over such a slice is several hundred times slower), without changing the logits."""
    import torch

    from genretrieval.encoder.backbones import load_backbone

    lm, _ = load_backbone(resolve_backbone(tiny_backbone), torch.float32)
    head = lm.get_output_embeddings()
    seen = []
    head.register_forward_hook(lambda _, args, out: seen.append(args[0].is_contiguous()))
    hidden = torch.randn(2, 5, head.in_features)
    last = hidden[:, -1:, :]
    assert not last.is_contiguous()
    logits = head(last)
    assert seen == [True]
    torch.testing.assert_close(logits, torch.nn.functional.linear(last.contiguous(), head.weight, head.bias))


def _bf16_copy(tiny_backbone, directory):
    """The tiny backbone stored in bf16, as the backbone cache stores the registered ones."""
    import shutil

    import torch
    from transformers import AutoModelForCausalLM

    shutil.copytree(tiny_backbone, directory)
    AutoModelForCausalLM.from_pretrained(directory, dtype=torch.bfloat16).save_pretrained(directory)
    return directory


def test_fp32_copy_of_a_bf16_cache_loads_the_same_weights(tmp_path, tiny_backbone):
    import torch
    from transformers import AutoModelForCausalLM

    from genretrieval.encoder.backbones import weights_dir

    cache = _bf16_copy(tiny_backbone, tmp_path / "cache")
    assert weights_dir(cache, torch.bfloat16) == cache  # the stored dtype loads as is
    copy = weights_dir(cache, torch.float32)
    assert copy == cache / "float32" and (copy / "genret-copy.json").exists()
    assert weights_dir(cache, torch.float32) == copy  # written once
    assert not [p for p in cache.iterdir() if p.name.startswith(".")]  # no temporary folder left behind
    converted = AutoModelForCausalLM.from_pretrained(cache, dtype=torch.float32).state_dict()
    mapped = AutoModelForCausalLM.from_pretrained(copy, dtype=torch.float32).state_dict()
    assert converted.keys() == mapped.keys()
    for name, tensor in converted.items():
        assert mapped[name].dtype == torch.float32 and torch.equal(mapped[name], tensor), name


def test_fp32_copy_falls_back_to_converting_when_the_cache_is_read_only(tmp_path, tiny_backbone, monkeypatch):
    import torch

    from genretrieval.encoder import backbones

    cache = _bf16_copy(tiny_backbone, tmp_path / "cache")

    def refuse(*_):
        raise PermissionError(13, "Permission denied")

    monkeypatch.setattr(backbones, "_write_dtype_copy", refuse)
    assert backbones.weights_dir(cache, torch.float32) == cache


def test_tokenizer_snapshot_behaves_like_the_original(tmp_path, tiny_backbone):
    import shutil

    from transformers import AutoTokenizer

    from genretrieval.encoder.backbones import load_cached_tokenizer

    cache = tmp_path / "cache"
    shutil.copytree(tiny_backbone, cache)
    original = AutoTokenizer.from_pretrained(cache)
    first = load_cached_tokenizer(cache)  # writes the snapshot
    assert (cache / "tokenizer-backend" / "settings.json").exists()
    snap = load_cached_tokenizer(cache)
    texts = ["what is the capital of france", "hello <eos> world", "Ünïcode  spaces\tand\nlines", "bread " * 40]
    for tok in (first, snap):
        assert tok(texts)["input_ids"] == original(texts)["input_ids"]
        assert (
            tok(texts, truncation=True, max_length=8)["input_ids"]
            == original(texts, truncation=True, max_length=8)["input_ids"]
        )
        assert (tok.pad_token_id, tok.eos_token_id, len(tok)) == (
            original.pad_token_id,
            original.eos_token_id,
            len(original),
        )
        chat = [{"role": "user", "content": "hello"}]
        assert tok.apply_chat_template(chat, add_generation_prompt=True) == original.apply_chat_template(
            chat, add_generation_prompt=True
        )
        ids = original("hello world <eos>")["input_ids"]
        assert tok.decode(ids, skip_special_tokens=True) == original.decode(ids, skip_special_tokens=True)


def test_loading_draws_no_transformers_bars(tiny_backbone, capfd):
    """The Python API stays quiet: transformers' "Loading weights" bar is off while we load, and back after."""
    import torch
    from transformers.utils import logging as hf_logging

    from genretrieval.encoder.backbones import load_backbone

    hf_logging.enable_progress_bar()
    capfd.readouterr()
    load_backbone(resolve_backbone(tiny_backbone), torch.float32)
    err = capfd.readouterr().err
    assert "Loading weights" not in err and "%|" not in err
    assert hf_logging.is_progress_bar_enabled()


def test_assembly_reports_progress_as_plain_lines(tmp_path, capsys):
    parts, size, sha = _parts(tmp_path, [b"a" * 3000, b"b" * 2000])
    assemble_gguf(parts, size, sha, tmp_path / "model.gguf", progress=True)
    lines = capsys.readouterr().err.splitlines()
    assert lines[0].startswith("verifying backbone weights: 0/0 MiB")
    assert lines[-1].startswith("verifying backbone weights: 0/0 MiB done in") and "MiB/s" in lines[-1]
    assemble_gguf(parts, size, sha, tmp_path / "again.gguf")  # quiet by default
    assert capsys.readouterr().err == ""
