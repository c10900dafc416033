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
