"""Atomic writes (genretrieval.fileio): the file and its folder fsynced, nothing half-written, no temporaries left."""

from __future__ import annotations

import json
import os

import pyarrow as pa
import pyarrow.parquet as pq
import pytest
import torch

from genretrieval.fileio import atomic_write, write_json_atomic, write_parquet_atomic, write_text_atomic


@pytest.fixture()
def synced(monkeypatch):
    """The paths os.fsync is called on, in order."""
    paths = []
    real = os.fsync

    def fsync(fd):
        paths.append(os.readlink(f"/proc/self/fd/{fd}"))
        real(fd)

    monkeypatch.setattr(os, "fsync", fsync)
    return paths


def test_write_fsyncs_the_file_then_renames_it_and_fsyncs_the_folder(tmp_path, synced):
    target = tmp_path / "a.json"
    write_json_atomic(target, {"x": 1}, indent=2)
    assert json.loads(target.read_text()) == {"x": 1} and target.read_text().endswith("}\n")
    assert len(synced) == 2
    assert os.path.basename(synced[0]).startswith(".a.json.") and synced[0].endswith(".tmp")  # before the rename
    assert synced[1] == str(tmp_path)
    assert os.listdir(tmp_path) == ["a.json"]


def test_a_failed_write_keeps_the_old_file_and_leaves_no_temporary(tmp_path):
    target = write_text_atomic(tmp_path / "notes.md", "old\n")

    def half(tmp):
        tmp.write_text("half of the new")
        raise OSError("disk full")

    with pytest.raises(OSError, match="disk full"):
        atomic_write(target, half)
    assert target.read_text() == "old\n" and os.listdir(tmp_path) == ["notes.md"]


def test_parquet_round_trip(tmp_path):
    table = pa.table({"id": ["a", "b"], "n": [1, 2]})
    assert pq.read_table(write_parquet_atomic(tmp_path / "part-000000.parquet", table)).equals(table)


def test_adapter_files_are_fsynced(tmp_path, synced):
    """The adapter writer goes through fileio (it used to rename without fsync)."""
    from genretrieval.encoder.adapter import AdapterConfig, read_adapter, write_adapter

    tensors = {
        "special": torch.zeros(3, 8),
        "recon.weight": torch.zeros(8, 8),
        "recon.bias": torch.zeros(8),
        "align.weight": torch.zeros(4, 8),
        "align.bias": torch.zeros(4),
    }
    config = AdapterConfig(backbone="tiny", backbone_weights="w", hidden_size=8, dim=4, num_compression=3)
    write_adapter(tensors, config, tmp_path)
    files = [os.path.basename(p) for p in synced[0::2]]
    assert files[0].startswith(".adapter.safetensors.") and files[1].startswith(".adapter.json.")
    assert synced[1::2] == [str(tmp_path)] * 2
    assert read_adapter(tmp_path)[0] == config
