"""Reading an embedding (`genret explain`): decoded text only from adapters trained with the reconstruction loss."""

from __future__ import annotations

import json

import pytest
from typer.testing import CliRunner

from genretrieval.cli import app
from genretrieval.encoder import load_gen_model
from genretrieval.encoder.adapter import save_adapter
from genretrieval.encoder.decode import NO_DECODING, decodes

runner = CliRunner()


def _adapter(tmp_path, backbone, provenance, trained=True):
    model, _, config, _ = load_gen_model(backbone, dtype="fp32", num_compression=3)
    config.trained, config.provenance = trained, provenance
    return save_adapter(model, config, tmp_path / "adapter"), config


@pytest.mark.parametrize(
    "provenance, trained, expected",
    [
        ({"recon_weight": 0.0, "tokens_only": True}, True, False),  # the shipped adapters' recipe
        ({"recon_weight": 1.0}, True, True),
        ({"stage": "readout", "recon_trained": False}, True, False),
        ({"stage": "readout", "recon_trained": True}, True, True),
        ({"recon_weight": 1.0}, False, False),  # untrained: random rows decode nothing
    ],
)
def test_decodes_follows_the_recipe(tmp_path, tiny_backbone, provenance, trained, expected):
    assert decodes(_adapter(tmp_path, tiny_backbone, provenance, trained)[1]) is expected


def test_explain_without_reconstruction_shows_the_logit_lens_only(tmp_path, tiny_backbone):
    adapter, _ = _adapter(tmp_path, tiny_backbone, {"recon_weight": 0.0})
    res = runner.invoke(
        app,
        [
            "explain",
            "--backbone",
            tiny_backbone,
            "--adapter",
            str(adapter),
            "--dtype",
            "fp32",
            "--top",
            "2",
            "what is the capital of france",
        ],
    )
    assert res.exit_code == 0, res.output
    assert res.stderr.strip().splitlines()[-1] == f"note: {NO_DECODING}"
    out = json.loads(res.stdout)
    assert out["decoded"] is None
    assert len(out["logit_lens"]) == 3 and all(len(row) == 2 for row in out["logit_lens"])


def test_explain_decodes_a_reconstruction_trained_adapter(tmp_path, tiny_backbone):
    adapter, _ = _adapter(tmp_path, tiny_backbone, {"recon_weight": 1.0})
    res = runner.invoke(
        app,
        [
            "explain",
            "--backbone",
            tiny_backbone,
            "--adapter",
            str(adapter),
            "--dtype",
            "fp32",
            "--max-new-tokens",
            "4",
            "what is water",
        ],
    )
    assert res.exit_code == 0, res.output
    assert NO_DECODING not in res.stderr
    out = json.loads(res.stdout)
    assert isinstance(out["decoded"], str) and len(out["logit_lens"]) == 3


def test_explain_hit_reads_the_indexed_chunk_on_the_document_path(tmp_path, tiny_backbone):
    adapter, _ = _adapter(tmp_path, tiny_backbone, {"recon_weight": 1.0})
    corpus = tmp_path / "corpus"
    corpus.mkdir()
    (corpus / "water.txt").write_text("Water boils at one hundred degrees Celsius at sea level.")
    where = str(tmp_path / "idx")
    common = ["--backbone", tiny_backbone, "--adapter", str(adapter), "--dtype", "fp32"]
    res = runner.invoke(app, ["index", str(corpus), "--backend", "faiss", "--index-dir", where, *common])
    assert res.exit_code == 0, res.output
    res = runner.invoke(app, ["search", "boiling water", "--index-dir", where, "-k", "1"])
    hit = json.loads(res.stdout.splitlines()[0])
    res = runner.invoke(app, ["explain", "--hit", hit["id"], "--index-dir", where, "--max-new-tokens", "3"])
    assert res.exit_code == 0, res.output
    out = json.loads(res.stdout)
    assert out["text"] == hit["text"] and isinstance(out["decoded"], str) and len(out["logit_lens"]) == 3
    # One of TEXT / --hit; an id the index lacks is one line naming it.
    res = runner.invoke(app, ["explain", "--hit", "nope", "--index-dir", where])
    assert res.exit_code != 0 and "no chunk with id 'nope'" in res.stderr
    res = runner.invoke(app, ["explain", "some text", "--hit", hit["id"], "--index-dir", where])
    assert res.exit_code != 0 and "give a TEXT or --hit ID" in res.stderr
