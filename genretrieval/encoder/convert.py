"""Import an official LLM2Vec-Gen checkpoint directory (the layout its training script saves) as a genret adapter.

What is read, from a local directory (nothing is downloaded, nothing pickled is executed):

- ``run_config.yml``: the training arguments, one ``key: value`` line each. Used: ``special_tokens`` (the tokens
  appended to every text, in order), ``encoding_mode`` (``last_N_tokens``: the last N of them are pooled),
  ``model_name_or_path`` (the backbone), ``pretrained_teacher_path`` (recorded as the teacher),
  ``add_reconstruction_mlp`` / ``add_alignment_mlp`` (whether the projection files must exist).
- ``encoder_decoder_config.json`` (optional): its ``encoding_mode`` wins over run_config's, as in the official loader.
- ``tokenizer.json`` (or ``encoder/config.json``'s ``special_tokens_ids``): the ids of the special tokens;
  ``tokenizer_config.json``'s special-token list, when present, must name the same tokens.
- ``encoder/adapter_config.json`` + ``encoder/adapter_model.safetensors``: a PEFT trainable-tokens adapter
  (``peft_type`` TRAINABLE_TOKENS, ``token_indices``); its ``...trainable_tokens_delta`` tensor holds the full
  embedding row of each index (PEFT replaces those rows, it does not add to them).
- ``reconstruction_mlp``, ``alignment_mlp``: ``torch.save({"state_dict", "config"})`` of a projection; loaded with
  ``torch.load(weights_only=True)`` only.

The official embedding of a text is ``mean_k align(recon(h_k))`` over the final hidden states of the last N appended
special tokens, which is genret's model with T = len(special_tokens) - N thought tokens and K = N compression tokens.
Projections that convert: ``pooling_mode`` ``linear`` or ``mean_linear`` with ``size`` 1 (one ``nn.Linear``; the
mean of an affine map is the map of the mean, so both give the same embedding). Refused: ``size`` > 1 (one Linear per
position), other pooling modes, any other state-dict layout (a deeper MLP), a LoRA encoder, other encoding modes.
"""

from __future__ import annotations

import json
import logging
import pickle
import re
from pathlib import Path
from typing import Any

import torch

from ..errors import GenRetError
from .adapter import AdapterConfig, write_adapter
from .backbones import BACKBONES, BackboneRef, resolve_backbone

log = logging.getLogger("genretrieval")

RUN_CONFIG = "run_config.yml"
ENCODER_DIR = "encoder"
PEFT_CONFIG = "adapter_config.json"
PEFT_WEIGHTS = ("adapter_model.safetensors", "adapter_model.bin")
RECONSTRUCTION = "reconstruction_mlp"
ALIGNMENT = "alignment_mlp"
DEFAULT_ENCODING_MODE = "last_10_tokens"  # the official default when neither config names one
CONVERTIBLE_POOLING = ("linear", "mean_linear")


def _none(value: Any) -> Any:
    """run_config.yml writes Python's ``str(None)``; read it (and empty values) as None."""
    return None if value is None or (isinstance(value, str) and value.strip() in ("", "None", "null")) else value


def read_run_config(path: Path) -> dict[str, Any]:
    """The settings of ``run_config.yml``. YAML first (with any ``!!python/...`` tag read as its plain value, never
    constructed); a file YAML rejects as a whole is read line by line, each ``key: value`` on its own."""
    import yaml

    class Loader(yaml.SafeLoader):
        pass

    def python_tag(loader, suffix, node):
        if isinstance(node, yaml.ScalarNode):
            return loader.construct_scalar(node)
        if isinstance(node, yaml.SequenceNode):
            values = loader.construct_sequence(node, deep=True)
            return values if suffix == "tuple" else (values[0] if values else None)
        return None

    Loader.add_multi_constructor("tag:yaml.org,2002:python/", python_tag)
    try:
        text = path.read_text()
    except (OSError, UnicodeDecodeError) as e:
        raise GenRetError(f"cannot read {path}: {getattr(e, 'strerror', None) or e}") from None
    try:
        data = yaml.load(text, Loader=Loader)
        if isinstance(data, dict):
            return data
    except yaml.YAMLError:
        pass
    data = {}
    for line in text.splitlines():
        m = re.match(r"([A-Za-z_][\w.-]*):(?:\s+(.*))?$", line)
        if not m:
            continue
        raw = (m.group(2) or "").strip()
        try:
            data[m.group(1)] = yaml.load(raw, Loader=Loader) if raw else None
        except yaml.YAMLError:
            data[m.group(1)] = raw
    if not data:
        raise GenRetError(f"{path} holds no settings (expected key: value lines)")
    return data


def _read_json(path: Path) -> dict[str, Any]:
    try:
        data = json.loads(path.read_text())
    except OSError as e:
        raise GenRetError(f"cannot read {path}: {e.strerror or e}") from None
    except (json.JSONDecodeError, UnicodeDecodeError) as e:
        raise GenRetError(f"malformed {path}: {e}") from None
    if not isinstance(data, dict):
        raise GenRetError(f"malformed {path}: expected a JSON object")
    return data


def _required(path: Path, what: str) -> Path:
    if not path.is_file():
        raise GenRetError(f"not an official LLM2Vec-Gen checkpoint: {path} is missing ({what})")
    return path


def _special_tokens(src: Path, run: dict[str, Any]) -> list[str]:
    tokens = run.get("special_tokens")
    if not isinstance(tokens, list) or not tokens or not all(isinstance(t, str) for t in tokens):
        raise GenRetError(f"{src / RUN_CONFIG} has no special_tokens list")
    tok_cfg = src / "tokenizer_config.json"
    if tok_cfg.is_file():
        cfg = _read_json(tok_cfg)
        for key in ("additional_special_tokens", "extra_special_tokens"):
            listed = cfg.get(key)
            if isinstance(listed, list) and listed:
                names = [t.get("content") if isinstance(t, dict) else t for t in listed]
                if names != tokens:
                    raise GenRetError(
                        f"{tok_cfg} lists {key} {names}, but {RUN_CONFIG} has special_tokens "
                        f"{tokens}: cannot tell which tokens the model appends"
                    )
    return tokens


def _encoding_n(src: Path, run: dict[str, Any], count: int) -> tuple[str, int]:
    mode = _none(run.get("encoding_mode"))
    saved = src / "encoder_decoder_config.json"
    if saved.is_file():
        mode = _none(_read_json(saved).get("encoding_mode")) or mode
    mode = str(mode or DEFAULT_ENCODING_MODE)
    m = re.fullmatch(r"last_(\d+)_tokens", mode)
    if not m:
        raise GenRetError(
            f"encoding mode {mode!r} is not supported: genret pools the last N special tokens "
            "(last_N_tokens) and nothing else"
        )
    n = int(m.group(1))
    if not 1 <= n <= count:
        raise GenRetError(f"encoding mode {mode} pools {n} tokens, but the checkpoint appends {count} special tokens")
    return mode, n


def _token_ids(src: Path, tokens: list[str]) -> list[int]:
    """Ids of the special tokens: from tokenizer.json's added tokens, else from encoder/config.json."""
    tok_json = src / "tokenizer.json"
    if tok_json.is_file():
        added: dict[Any, Any] = {
            t.get("content"): t.get("id") for t in _read_json(tok_json).get("added_tokens", []) if isinstance(t, dict)
        }
        missing = [t for t in tokens if not isinstance(added.get(t), int)]
        if missing:
            raise GenRetError(f"{tok_json} does not define the special token(s) {missing}")
        return [added[t] for t in tokens]
    enc_cfg = src / ENCODER_DIR / "config.json"
    ids = _read_json(enc_cfg).get("special_tokens_ids") if enc_cfg.is_file() else None
    if isinstance(ids, list) and len(ids) == len(tokens) and all(isinstance(i, int) for i in ids):
        return ids
    raise GenRetError(
        f"cannot find the ids of the special tokens: {src} has no tokenizer.json, and "
        f"{enc_cfg} has no special_tokens_ids"
    )


def _trainable_rows(src: Path) -> tuple[list[int], torch.Tensor, dict[str, Any]]:
    """``(token_indices, rows (n, H) fp32, adapter_config)`` of the PEFT trainable-tokens adapter under encoder/."""
    enc = src / ENCODER_DIR
    cfg_path = _required(enc / PEFT_CONFIG, "the PEFT config of the trained special-token rows")
    cfg = _read_json(cfg_path)
    kind = cfg.get("peft_type")
    if kind == "LORA":
        raise GenRetError(
            f"{cfg_path}: the encoder is a LoRA adapter (trained with use_peft_for_encoder); it changes "
            "the backbone's own weights, which a genret adapter cannot hold (only TRAINABLE_TOKENS "
            "encoders convert)"
        )
    if kind != "TRAINABLE_TOKENS":
        raise GenRetError(f"{cfg_path}: peft_type {kind!r} is not supported (only TRAINABLE_TOKENS converts)")
    indices = cfg.get("token_indices")
    if not isinstance(indices, list) or not indices or not all(isinstance(i, int) for i in indices):
        raise GenRetError(f"{cfg_path} has no token_indices list")
    weights = next((enc / name for name in PEFT_WEIGHTS if (enc / name).is_file()), None)
    if weights is None:
        raise GenRetError(
            f"not an official LLM2Vec-Gen checkpoint: {enc / PEFT_WEIGHTS[0]} is missing (the trained "
            "special-token rows)"
        )
    if weights.suffix == ".safetensors":
        from safetensors import SafetensorError, safe_open

        try:
            with safe_open(str(weights), framework="pt") as f:
                keys = [k for k in f.keys() if k.endswith("trainable_tokens_delta")]
                rows = f.get_tensor(keys[0]) if len(keys) == 1 else None
        except (SafetensorError, OSError) as e:
            raise GenRetError(
                f"{weights} is corrupt or unreadable ({str(e).splitlines()[0] if str(e) else e})"
            ) from None
    else:
        state = _torch_load(weights)
        if not isinstance(state, dict):
            raise GenRetError(f"{weights} is not a PEFT state dict")
        keys = [k for k in state if isinstance(k, str) and k.endswith("trainable_tokens_delta")]
        rows = state[keys[0]] if len(keys) == 1 else None
    if rows is None:
        raise GenRetError(f"{weights} holds {len(keys)} trainable_tokens_delta tensors, expected exactly one")
    if rows.ndim != 2 or rows.shape[0] != len(indices):
        raise GenRetError(
            f"{weights}: trainable_tokens_delta is {tuple(rows.shape)}, expected ({len(indices)}, "
            "hidden size) for the token_indices of its config"
        )
    return indices, rows.float(), cfg


def _torch_load(path: Path) -> Any:
    """``torch.load`` restricted to tensors and plain containers: a file that needs other objects is refused."""
    try:
        return torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as e:
        if m := re.search(r"Unsupported global: GLOBAL (\S+)", str(e)):
            raise GenRetError(
                f"{path} is not a plain weights file: it needs the Python object {m.group(1)}, and "
                "genret loads with torch.load(weights_only=True), never unpickling code"
            ) from None
        raise GenRetError(
            f"{path} is corrupt or not a torch.save file (torch.load(weights_only=True) cannot read it)"
        ) from None
    except (RuntimeError, EOFError, OSError, ValueError) as e:
        first = next((line for line in str(e).splitlines() if line.strip()), type(e).__name__)
        raise GenRetError(f"{path} is corrupt or not a torch.save file ({first[:160]})") from None


def _projection(src: Path, name: str, enabled: Any, in_dim: int) -> tuple[torch.Tensor, torch.Tensor, str] | None:
    """``(weight (out, in), bias (out,), pooling_mode)`` of a saved projection; None when the checkpoint has none."""
    path = src / name
    if not path.is_file():
        if enabled is False:  # trained without this projection: the official model skips it
            return None
        raise GenRetError(
            f"not an official LLM2Vec-Gen checkpoint: {path} is missing (run_config.yml "
            f"{'has add_' + name + ': True' if enabled else 'does not say it was left out'})"
        )
    ckpt = _torch_load(path)
    if not isinstance(ckpt, dict) or not isinstance(ckpt.get("state_dict"), dict):
        raise GenRetError(f"{path} is not a saved projection (expected a dict with state_dict and config)")
    config = ckpt["config"] if isinstance(ckpt.get("config"), dict) else {}
    size = config.get("size", 1)
    mode = config.get("pooling_mode") or "linear"
    if size != 1:
        raise GenRetError(
            f"{path} has size {size}: one linear map per special-token position, but genret applies "
            "one map to every position (only size 1 converts)"
        )
    if mode not in CONVERTIBLE_POOLING:
        raise GenRetError(f"{path} has pooling_mode {mode!r}; only {' and '.join(CONVERTIBLE_POOLING)} convert")
    state = ckpt["state_dict"]
    if set(state) - {"projection.weight", "projection.bias"} or "projection.weight" not in state:
        raise GenRetError(
            f"{path} is not a single linear layer (tensors {sorted(state)}); genret's projections are "
            "one nn.Linear each"
        )
    weight = state["projection.weight"]
    if not isinstance(weight, torch.Tensor) or weight.ndim != 2 or weight.shape[1] != in_dim:
        shape = tuple(weight.shape) if isinstance(weight, torch.Tensor) else type(weight).__name__
        raise GenRetError(f"{path}: projection.weight is {shape}, expected (out, {in_dim})")
    bias = state.get("projection.bias")
    if bias is None:
        bias = torch.zeros(weight.shape[0])
    if not isinstance(bias, torch.Tensor) or tuple(bias.shape) != (weight.shape[0],):
        raise GenRetError(f"{path}: projection.bias does not match projection.weight {tuple(weight.shape)}")
    for key, got in (("input_dim", weight.shape[1]), ("output_dim", weight.shape[0])):
        if key in config and config[key] != got:
            raise GenRetError(f"{path}: config says {key} {config[key]}, but the weights have {got}")
    return weight.float(), bias.float(), mode


def _hidden_size(config: dict[str, Any]) -> int | None:
    for cfg in (config, config.get("text_config") or {}):
        if isinstance(cfg.get("hidden_size"), int):
            return cfg["hidden_size"]
    return None


def _resolve(src: Path, run: dict[str, Any], backbone: str | None, hidden: int, enc_cfg: dict) -> BackboneRef:
    name = backbone or _none(run.get("model_name_or_path"))
    if not name:
        raise GenRetError(f"{src / RUN_CONFIG} names no model_name_or_path; pass --backbone")
    name = str(name)
    if backbone is None:  # the official name of a backbone genret ships offline
        name = next((b.name for b in BACKBONES.values() if b.upstream.lower() == name.lower()), name)
    try:
        ref = resolve_backbone(name)
    except GenRetError as e:
        if backbone is not None:
            raise
        raise GenRetError(f"{e} (the checkpoint was trained on {name!r}: pass --backbone with a local copy)") from None
    local = Path(ref.name) / "config.json"
    if ref.weights_id.startswith("local:") and local.is_file():
        cfg = _read_json(local)
        if (size := _hidden_size(cfg)) is not None and size != hidden:
            raise GenRetError(
                f"backbone {ref.name} has hidden size {size}, but the checkpoint's token rows have "
                f"{hidden}: not the model it was trained on"
            )
        want, got = enc_cfg.get("model_type"), cfg.get("model_type")
        if want and got and want != got:
            raise GenRetError(f"backbone {ref.name} is a {got} model, but the checkpoint's encoder is {want}")
    return ref


def convert_official(src_dir: str | Path, out_dir: str | Path, backbone: str | None = None) -> Path:
    """Write a genret adapter to ``out_dir`` whose vectors equal those of the official checkpoint in ``src_dir``.

    ``backbone``: registry name, local model directory or Hugging Face id; default run_config.yml's
    ``model_name_or_path`` (a registered backbone's official name maps to the registry). Raises ``GenRetError``
    (one line) for a missing file or a checkpoint genret cannot represent. Returns ``out_dir``.
    """
    src, out = Path(src_dir).expanduser(), Path(out_dir).expanduser()
    if not src.is_dir():
        raise GenRetError(f"not a directory: {src}")
    if out.resolve() == src.resolve():
        raise GenRetError("--out must differ from the checkpoint directory")
    run = read_run_config(_required(src / RUN_CONFIG, "the training settings"))
    if run.get("use_peft_for_encoder") is True:
        raise GenRetError(
            f"{src / RUN_CONFIG}: the encoder was trained with LoRA (use_peft_for_encoder), which "
            "changes the backbone's own weights; a genret adapter cannot hold that"
        )
    tokens = _special_tokens(src, run)
    mode, n = _encoding_n(src, run, len(tokens))
    indices, delta, peft_cfg = _trainable_rows(src)
    hidden = delta.shape[1]
    rows = []
    for token, token_id in zip(tokens, _token_ids(src, tokens)):
        if token_id not in indices:
            raise GenRetError(
                f"special token {token!r} (id {token_id}) has no trained row in "
                f"{src / ENCODER_DIR / PEFT_CONFIG} (token_indices {indices})"
            )
        rows.append(delta[indices.index(token_id)])
    enc_cfg_path = src / ENCODER_DIR / "config.json"
    enc_cfg = _read_json(enc_cfg_path) if enc_cfg_path.is_file() else {}
    if (size := _hidden_size(enc_cfg)) is not None and size != hidden:
        raise GenRetError(f"{enc_cfg_path} says hidden size {size}, but the token rows have {hidden}")

    recon = _projection(src, RECONSTRUCTION, _none(run.get("add_reconstruction_mlp")), hidden)
    if recon is None:
        recon = (torch.eye(hidden), torch.zeros(hidden), "identity")
    if recon[0].shape[0] != hidden:
        raise GenRetError(
            f"{src / RECONSTRUCTION} maps to {recon[0].shape[0]} dimensions; genret's reconstruction "
            f"projection keeps the hidden size {hidden}"
        )
    align = _projection(src, ALIGNMENT, _none(run.get("add_alignment_mlp")), hidden)
    if align is None:
        align = (torch.eye(hidden), torch.zeros(hidden), "identity")
    ref = _resolve(src, run, backbone, hidden, enc_cfg)

    teacher = _none(run.get("pretrained_teacher_path"))
    config = AdapterConfig(
        backbone=ref.name,
        backbone_weights=ref.weights_id,
        hidden_size=hidden,
        dim=align[0].shape[0],
        num_compression=n,
        num_thought=len(tokens) - n,
        teacher=str(teacher or "unknown"),
        trained=True,
        provenance={
            "converted_from": "official LLM2Vec-Gen checkpoint",
            "recon_trained": True,  # the official recipe trains the reconstruction loss
            "source": str(src.resolve()),
            "model_name_or_path": run.get("model_name_or_path"),
            "special_tokens": tokens,
            "encoding_mode": mode,
            "reconstruction": recon[2],
            "alignment": align[2],
            "teacher_2": _none(run.get("pretrained_teacher_path_2")),
            "torch_dtype": _none(run.get("torch_dtype")),
            "peft_version": peft_cfg.get("peft_version"),
        },
    )
    tensors = {
        "special": torch.stack(rows).contiguous(),
        "recon.weight": recon[0].contiguous(),
        "recon.bias": recon[1].contiguous(),
        "align.weight": align[0].contiguous(),
        "align.bias": align[1].contiguous(),
    }
    try:
        write_adapter(tensors, config, out)
    except OSError as e:
        raise GenRetError(f"cannot write the adapter to {out}: {e.strerror or e}") from None
    log.info(
        "converted %s: backbone %s, %d thought + %d compression tokens, %d-d output",
        src,
        ref.name,
        config.num_thought,
        config.num_compression,
        config.dim,
    )
    return out
