"""Import of an official LLM2Vec-Gen checkpoint directory (`genret convert`).

No released checkpoint is reachable offline, so these tests write a directory in the official layout themselves,
around the tiny random backbone: the special-token rows through a real PEFT trainable-tokens adapter (when peft is
installed; else the same file names and tensor names by hand), the projections with torch.save as the official
code saves them. The reference embedding is computed here, independently of genret, the way the official model
computes it: special tokens appended to the text, the encoder's final hidden states at the last N of them, the
reconstruction then alignment projection, the mean over the N positions.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest
import torch
from typer.testing import CliRunner

from genretrieval.cli import app
from genretrieval.encoder.convert import convert_official, read_run_config
from genretrieval.errors import GenRetError
from genretrieval.instructions import TASKS

try:
    import peft  # noqa: F401

    HAVE_PEFT = True
except ImportError:  # the dev extra installs it; without it the adapter files are written by hand
    HAVE_PEFT = False

TEXTS = ["what is the capital of france", "how to bake bread", "the river water"]
TEACHER = "BAAI/bge-example"


class Projection(torch.nn.Module):
    """The official projection's module layout: one nn.Linear named ``projection``."""

    def __init__(self, in_dim: int, out_dim: int):
        super().__init__()
        self.projection = torch.nn.Linear(in_dim, out_dim)


def save_projection(
    path: Path, in_dim: int, out_dim: int, seed: int, mode: str = "linear", dtype=torch.bfloat16
) -> None:
    g = torch.Generator().manual_seed(seed)
    m = Projection(in_dim, out_dim)
    with torch.no_grad():
        m.projection.weight.copy_(torch.randn(out_dim, in_dim, generator=g) * in_dim**-0.5)
        m.projection.bias.copy_(torch.randn(out_dim, generator=g) * 0.1)
    m.to(dtype)
    torch.save(
        {
            "state_dict": m.state_dict(),
            "config": {
                "input_dim": in_dim,
                "output_dim": out_dim,
                "dtype": str(dtype),
                "size": 1,
                "pooling_mode": mode,
            },
        },
        path,
    )


def write_run_config(path: Path, settings: dict) -> None:
    """The official training script appends ``f"{key}: {value}"`` lines, one block per argument group."""
    model = {
        "model_name_or_path": None,
        "pretrained_teacher_path": TEACHER,
        "pretrained_teacher_path_2": None,
        "tokenizer_padding_side": "left",
        "torch_dtype": "bfloat16",
        "special_tokens": None,
        "special_token_config_name": "total_6",
        "max_input_length": 512,
        "add_reconstruction_mlp": True,
        "add_alignment_mlp": True,
        "encoding_mode": None,
    }
    training = {
        "use_peft_for_encoder": False,
        "learning_rate": 0.0003,
        "report_to": ["wandb"],
        "fsdp_config": {"min_num_params": 0, "xla": False},
        "lr_scheduler_type": "linear",
    }
    model.update({k: v for k, v in settings.items() if k in model})
    training.update({k: v for k, v in settings.items() if k not in model})
    with open(path, "w") as f:
        for block in ({"wandb_run_id": "tiny", "wandb_run_notes": None}, {"dataset_name": "tulu"}, model, training):
            for key, value in block.items():
                f.write(f"{key}: {value}\n")
            f.write("\n")


def write_official(
    root: Path,
    backbone: str,
    *,
    special: int = 6,
    pooled: int = 4,
    recon: str | None = "linear",
    align: str | None = "linear",
    teacher_dim: int = 24,
    seed: int = 0,
    by_hand: bool = False,
) -> Path:
    """An official-layout checkpoint directory around ``backbone`` with random trained parts."""
    from transformers import AutoConfig, AutoTokenizer

    root.mkdir(parents=True)
    tokens = [f"<question{i}>" for i in range(1, special + 1)]
    tok = AutoTokenizer.from_pretrained(backbone)
    tok.add_special_tokens({"additional_special_tokens": tokens})
    tok.save_pretrained(root)
    ids = tok.convert_tokens_to_ids(tokens)
    config = AutoConfig.from_pretrained(backbone)
    hidden = config.hidden_size
    g = torch.Generator().manual_seed(seed)
    rows = torch.randn(len(ids), hidden, generator=g) * 0.2
    enc = root / "encoder"
    if HAVE_PEFT and not by_hand:
        from peft import TrainableTokensConfig, get_peft_model
        from transformers import AutoModel

        model = AutoModel.from_pretrained(backbone, dtype=torch.float32)
        model.resize_token_embeddings(len(tok))
        model = get_peft_model(model, TrainableTokensConfig(token_indices=ids))
        deltas = [p for n, p in model.named_parameters() if "trainable_tokens_delta" in n]
        assert len(deltas) == 1
        with torch.no_grad():
            deltas[0].copy_(rows)
        model.save_pretrained(enc)
    else:
        from safetensors.torch import save_file

        enc.mkdir()
        (enc / "adapter_config.json").write_text(
            json.dumps(
                {
                    "peft_type": "TRAINABLE_TOKENS",
                    "token_indices": ids,
                    "target_modules": "embed_tokens",
                    "init_weights": True,
                    "base_model_name_or_path": backbone,
                    "task_type": None,
                }
            )
        )
        save_file(
            {"base_model.model.embed_tokens.trainable_tokens_delta": rows.contiguous()},
            enc / "adapter_model.safetensors",
        )
    config.num_special_tokens, config.special_tokens_ids = len(ids), ids
    config.save_pretrained(enc)
    if recon:
        save_projection(root / "reconstruction_mlp", hidden, hidden, seed + 1, recon)
    if align:
        save_projection(root / "alignment_mlp", hidden, teacher_dim, seed + 2, align)
    write_run_config(
        root / "run_config.yml",
        {
            "model_name_or_path": backbone,
            "special_tokens": tokens,
            "encoding_mode": f"last_{pooled}_tokens",
            "add_reconstruction_mlp": recon is not None,
            "add_alignment_mlp": align is not None,
        },
    )
    (root / "encoder_decoder_config.json").write_text(
        json.dumps({"encoding_mode": f"last_{pooled}_tokens", "save_decoder": False})
    )
    return root


def _linear(path: Path):
    state = torch.load(path, weights_only=True)
    return (
        state["state_dict"]["projection.weight"].float(),
        state["state_dict"]["projection.bias"].float(),
        state["config"]["pooling_mode"],
    )


def _apply(projection, h: torch.Tensor) -> torch.Tensor:
    """The official projection forward: ``linear`` maps each position, ``mean_linear`` averages them first."""
    if projection is None:
        return h
    weight, bias, mode = projection
    if mode == "mean_linear":
        h = h.mean(dim=1, keepdim=True)
    return h @ weight.T + bias


@torch.no_grad()
def official_embeddings(root: Path, backbone: str, texts: list[str], pooled: int) -> np.ndarray:
    """The official model's unit embeddings, one text at a time (no padding)."""
    from transformers import AutoModel, AutoTokenizer

    tok = AutoTokenizer.from_pretrained(root)
    tokens = [f"<question{i}>" for i in range(1, 100) if f"<question{i}>" in tok.get_vocab()]
    model = AutoModel.from_pretrained(backbone, dtype=torch.float32)
    model.resize_token_embeddings(len(tok))
    if HAVE_PEFT:
        from peft import PeftModel

        model = PeftModel.from_pretrained(model, root / "encoder")
    else:
        from safetensors.torch import load_file

        rows = load_file(root / "encoder" / "adapter_model.safetensors")
        ids = json.loads((root / "encoder" / "adapter_config.json").read_text())["token_indices"]
        model.get_input_embeddings().weight.index_copy_(
            0, torch.tensor(ids), rows["base_model.model.embed_tokens.trainable_tokens_delta"]
        )
    model.eval()
    recon = _linear(root / "reconstruction_mlp") if (root / "reconstruction_mlp").exists() else None
    align = _linear(root / "alignment_mlp") if (root / "alignment_mlp").exists() else None
    out = []
    for text in texts:
        batch = tok([text + "".join(tokens)], return_tensors="pt")
        h = model(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"]).last_hidden_state
        emb = _apply(align, _apply(recon, h[:, -pooled:].float())).mean(dim=1)
        out.append(torch.nn.functional.normalize(emb, dim=-1)[0].numpy())
    return np.stack(out)


def assert_same_vectors(adapter: Path, root: Path, backbone: str, pooled: int) -> None:
    from genretrieval.encoder import load_encoder

    enc = load_encoder("gen", adapter=adapter, dtype="fp32", max_length=64)
    task = TASKS["retrieval"]
    for instruction, ours in ((task.query, enc.encode_queries(TEXTS)), (task.document, enc.encode_documents(TEXTS))):
        ref = official_embeddings(root, backbone, [f"{instruction} {t}" for t in TEXTS], pooled)
        cos = np.sum(ours * ref, axis=1)
        assert cos.min() >= 0.9999, cos


@pytest.fixture(scope="module")
def official(tmp_path_factory, tiny_backbone) -> Path:
    return write_official(tmp_path_factory.mktemp("official") / "ckpt", tiny_backbone)


@pytest.fixture()
def copy(official, tmp_path):
    """A fresh copy of the checkpoint, to break."""

    def make() -> Path:
        return Path(shutil.copytree(official, tmp_path / "ckpt"))

    return make


def test_layout_is_the_official_one(official):
    """What the test writes has the names the official loader reads (guards the fixture itself)."""
    for name in (
        "run_config.yml",
        "tokenizer_config.json",
        "encoder_decoder_config.json",
        "encoder/config.json",
        "encoder/adapter_config.json",
        "encoder/adapter_model.safetensors",
        "reconstruction_mlp",
        "alignment_mlp",
    ):
        assert (official / name).is_file(), name
    from safetensors import safe_open

    with safe_open(str(official / "encoder" / "adapter_model.safetensors"), framework="pt") as f:
        assert "base_model.model.embed_tokens.trainable_tokens_delta" in set(f.keys())
    assert json.loads((official / "encoder" / "adapter_config.json").read_text())["peft_type"] == "TRAINABLE_TOKENS"


def test_converted_vectors_equal_the_official_model(official, tiny_backbone, tmp_path):
    out = convert_official(official, tmp_path / "adapter")
    cfg = json.loads((out / "adapter.json").read_text())
    assert (cfg["num_thought"], cfg["num_compression"], cfg["dim"]) == (2, 4, 24)
    assert cfg["teacher"] == TEACHER and cfg["trained"] is True
    assert cfg["backbone"] == str(Path(tiny_backbone).resolve())
    assert cfg["provenance"]["encoding_mode"] == "last_4_tokens"
    assert_same_vectors(out, official, tiny_backbone, pooled=4)


def test_without_reconstruction_and_with_mean_linear_alignment(tmp_path, tiny_backbone):
    """No reconstruction_mlp (add_reconstruction_mlp False): the identity; a mean_linear alignment: the same
    embedding as linear, since a mean commutes with an affine map. All tokens pooled (no thought tokens)."""
    root = write_official(
        tmp_path / "ckpt", tiny_backbone, special=3, pooled=3, recon=None, align="mean_linear", seed=5
    )
    out = convert_official(root, tmp_path / "adapter")
    cfg = json.loads((out / "adapter.json").read_text())
    assert (cfg["num_thought"], cfg["num_compression"]) == (0, 3)
    assert cfg["provenance"]["reconstruction"] == "identity"
    assert_same_vectors(out, root, tiny_backbone, pooled=3)


def test_hand_written_adapter_files_convert_too(tmp_path, tiny_backbone):
    root = write_official(tmp_path / "ckpt", tiny_backbone, by_hand=True, seed=9)
    out = convert_official(root, tmp_path / "adapter")
    assert_same_vectors(out, root, tiny_backbone, pooled=4)


def test_backbone_override_and_check(copy, tmp_path, tiny_backbone, tiny_backbone_wide):
    root = copy()
    write_run_config(
        root / "run_config.yml",
        {
            "model_name_or_path": "/nowhere/Qwen3-8B",
            "special_tokens": [f"<question{i}>" for i in range(1, 7)],
            "encoding_mode": "last_4_tokens",
        },
    )
    with pytest.raises(GenRetError, match="pass --backbone"):
        convert_official(root, tmp_path / "a")
    out = convert_official(root, tmp_path / "b", backbone=tiny_backbone)
    assert json.loads((out / "adapter.json").read_text())["backbone"] == str(Path(tiny_backbone).resolve())
    with pytest.raises(GenRetError, match="hidden size 48"):
        convert_official(root, tmp_path / "c", backbone=tiny_backbone_wide)


@pytest.mark.parametrize(
    "name",
    [
        "run_config.yml",
        "encoder/adapter_config.json",
        "encoder/adapter_model.safetensors",
        "alignment_mlp",
        "reconstruction_mlp",
    ],
)
def test_missing_file_is_refused(copy, tmp_path, name):
    root = copy()
    (root / name).unlink()
    with pytest.raises(GenRetError, match="missing") as e:
        convert_official(root, tmp_path / "adapter")
    assert name in str(e.value) and "\n" not in str(e.value)
    assert not (tmp_path / "adapter").exists()


@pytest.mark.parametrize(
    "mode, message",
    [("mean", "not supported"), ("first_4_tokens", "not supported"), ("last_7_tokens", "appends 6 special tokens")],
)
def test_unsupported_encoding_mode_is_refused(copy, tmp_path, mode, message):
    root = copy()
    (root / "encoder_decoder_config.json").write_text(json.dumps({"encoding_mode": mode, "save_decoder": False}))
    with pytest.raises(GenRetError, match=message):
        convert_official(root, tmp_path / "adapter")


def test_unrepresentable_projections_are_refused(copy, tmp_path):
    root = copy()
    state = torch.load(root / "alignment_mlp", weights_only=True)
    per_position = {
        "state_dict": {
            f"projection.{i}.{p}": t
            for i in range(2)
            for p, t in (
                ("weight", state["state_dict"]["projection.weight"]),
                ("bias", state["state_dict"]["projection.bias"]),
            )
        },
        "config": {**state["config"], "size": 2},
    }
    torch.save(per_position, root / "alignment_mlp")
    with pytest.raises(GenRetError, match="size 2"):
        convert_official(root, tmp_path / "a")
    two_layers = {
        "state_dict": {"net.0.weight": torch.zeros(32, 32), "net.2.weight": torch.zeros(24, 32)},
        "config": {"input_dim": 32, "output_dim": 24},
    }
    torch.save(two_layers, root / "alignment_mlp")
    with pytest.raises(GenRetError, match="not a single linear layer"):
        convert_official(root, tmp_path / "b")
    torch.save({**state, "config": {**state["config"], "pooling_mode": "first_16_linear"}}, root / "alignment_mlp")
    with pytest.raises(GenRetError, match="pooling_mode 'first_16_linear'"):
        convert_official(root, tmp_path / "c")


def test_lora_encoder_is_refused(copy, tmp_path):
    root = copy()
    cfg_path = root / "encoder" / "adapter_config.json"
    cfg = json.loads(cfg_path.read_text())
    cfg["peft_type"] = "LORA"
    cfg_path.write_text(json.dumps(cfg))
    with pytest.raises(GenRetError, match="LoRA"):
        convert_official(root, tmp_path / "adapter")


def _mark(path: str) -> None:
    Path(path).write_text("code ran")


class Payload:
    """Unpickling this calls ``_mark``: what a weights-only load must refuse to do."""

    def __init__(self, marker: Path):
        self.marker = str(marker)

    def __reduce__(self):
        return _mark, (self.marker,)


def test_pickle_with_code_is_refused_unrun(copy, tmp_path):
    root = copy()
    marker = tmp_path / "marker"
    torch.save({"state_dict": {"projection.weight": Payload(marker)}, "config": {}}, root / "reconstruction_mlp")
    with pytest.raises(GenRetError, match="not a plain weights file") as e:
        convert_official(root, tmp_path / "adapter")
    assert "_mark" in str(e.value) and "\n" not in str(e.value)
    assert not marker.exists()
    (root / "reconstruction_mlp").write_bytes(b"not a torch file")
    with pytest.raises(GenRetError, match="corrupt"):
        convert_official(root, tmp_path / "adapter")


def test_tokenizer_disagreeing_with_run_config_is_refused(copy, tmp_path):
    root = copy()
    cfg_path = root / "tokenizer_config.json"
    cfg = json.loads(cfg_path.read_text())
    key = "additional_special_tokens" if "additional_special_tokens" in cfg else "extra_special_tokens"
    cfg[key] = list(reversed(cfg[key]))
    cfg_path.write_text(json.dumps(cfg))
    with pytest.raises(GenRetError, match="cannot tell which tokens"):
        convert_official(root, tmp_path / "adapter")


def test_run_config_read_tolerantly(tmp_path):
    """Python reprs, ``!!python`` tags (yaml.dump of enums) and a value YAML rejects as a whole file."""
    path = tmp_path / "run_config.yml"
    path.write_text(
        "special_tokens: ['<a>', '<b>']\nadd_alignment_mlp: False\npretrained_teacher_path: None\n"
        "lr_scheduler_type: !!python/object/apply:transformers.trainer_utils.SchedulerType\n- linear\n"
        "accelerator_config: AcceleratorConfig(split_batches=False)\n"
    )
    run = read_run_config(path)
    assert run["special_tokens"] == ["<a>", "<b>"] and run["add_alignment_mlp"] is False
    assert run["lr_scheduler_type"] == "linear"
    path.write_text("special_tokens: ['<a>']\nwandb_run_notes: lr: 3e-4, tokens: 10\nencoding_mode: last_1_tokens\n")
    run = read_run_config(path)
    assert run["special_tokens"] == ["<a>"] and run["encoding_mode"] == "last_1_tokens"


def test_cli_convert(official, tmp_path):
    runner = CliRunner()
    res = runner.invoke(app, ["convert", str(official), "--out", str(tmp_path / "adapter")])
    assert res.exit_code == 0, res.output
    assert res.stdout.strip() == str(tmp_path / "adapter")
    assert (tmp_path / "adapter" / "adapter.safetensors").is_file()
    (tmp_path / "a file").write_text("")
    for args in (
        [str(tmp_path / "nothing"), "--out", str(tmp_path / "a2")],
        [str(official), "--out", str(tmp_path / "a file")],
    ):
        res = runner.invoke(app, ["convert", *args])
        assert res.exit_code == 1
        assert res.stderr.startswith("error: ") and len(res.stderr.strip().splitlines()) == 1
