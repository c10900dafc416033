"""What an index records about itself (``manifest.json``), and how `genret index` settles its settings with it.

An index remembers how it was built: the store, the encoder (its identity, which must match whoever searches
the index, and the spec to load it again), the task and the chunking. Later runs default to those settings,
and a different explicit one is refused unless the index is rebuilt.
"""

from __future__ import annotations

import json
import time
from dataclasses import asdict, dataclass, field, fields, replace
from pathlib import Path
from typing import Any, Literal, TypedDict

from . import __version__
from .encoder.spec import EncoderSpec
from .errors import GenRetError
from .fileio import write_json_atomic
from .stores.base import StoreOptions, check_url

MANIFEST = "manifest.json"
FORMAT_VERSION = 1
Backend = Literal["faiss", "qdrant"]
BACKENDS: tuple[Backend, ...] = ("faiss", "qdrant")
# Keys every manifest has.
REQUIRED = ("backend", "url", "collection", "faiss_index", "encoder", "encoder_spec", "task", "chunk_size", "overlap")
# Identity fields that must match between the encoder that built an index and the one searching it.
BINDING = ("kind", "model", "backbone", "backbone_weights", "adapter", "dim", "num_compression", "num_thought")
# Record-file fields and their defaults (kept in the manifest, so a re-run reads the corpus the same way).
FIELDS = {"id_field": "id", "title_field": "title", "text_field": "text"}


class RecordFields(TypedDict):
    """The record-file fields (the keys of ``FIELDS``) with their values."""

    id_field: str
    title_field: str
    text_field: str


def describe_encoder(identity: dict[str, Any]) -> str:
    """An encoder identity in words, for error messages."""
    if identity.get("kind") == "gen":
        return (
            f"gen encoder on {identity.get('backbone')} with adapter {str(identity.get('adapter'))[:12]}"
            f"{'' if identity.get('trained', True) else ' (untrained)'}"
        )
    return f"{identity.get('kind')} encoder {identity.get('model') or identity.get('backbone')}"


def binding_differs(a: dict[str, Any], b: dict[str, Any]) -> bool:
    """Whether two encoder identities make different vectors."""
    return any(a.get(k) != b.get(k) for k in BINDING)


def timestamp() -> str:
    return time.strftime("%Y-%m-%dT%H:%M:%S%z")


@dataclass
class Manifest:
    """The contents of ``manifest.json``. ``encoder`` is the identity of the encoder that built the index
    (``Encoder.identity()``); ``encoder_spec`` how to load it again. ``url`` names a Qdrant server holding the
    collection (None: the store is in the index folder)."""

    backend: Backend
    collection: str
    encoder: dict[str, Any]
    encoder_spec: EncoderSpec
    url: str | None = None
    faiss_index: str = "Flat"
    task: str = "retrieval"
    chunk_size: int = 256
    overlap: int = 32
    fields: dict[str, str] = field(default_factory=lambda: dict(FIELDS))
    store_options: StoreOptions = field(default_factory=StoreOptions)
    normalized: bool = True
    created: str = field(default_factory=timestamp)
    updated: str | None = None
    corpus: str | None = None  # the corpus root last indexed (sources are relative to it)
    embeddings: str | None = None  # the embeddings folder last bulk-loaded
    genretrieval: str = __version__
    format_version: int = FORMAT_VERSION

    def to_dict(self) -> dict[str, Any]:
        out = asdict(self)
        out["encoder_spec"], out["store_options"] = self.encoder_spec.to_dict(), self.store_options.to_dict()
        return out

    @classmethod
    def from_dict(cls, data: Any, where: str = "the manifest") -> Manifest:
        """The manifest in ``data`` (the JSON object); GenRetError naming what is missing or unknown."""
        if not isinstance(data, dict):
            raise GenRetError(f"corrupt {where} (not a JSON object)")
        version = data.get("format_version", 1)
        if not isinstance(version, int) or version > FORMAT_VERSION:
            raise GenRetError(
                f"{where} has format version {version}, newer than this genretrieval reads "
                f"({FORMAT_VERSION}); upgrade genretrieval"
            )
        missing = [k for k in REQUIRED if k not in data]
        if not missing and not (isinstance(data["encoder"], dict) and "dim" in data["encoder"]):
            missing.append("encoder.dim")
        if not missing and not (isinstance(data["encoder_spec"], dict) and "kind" in data["encoder_spec"]):
            missing.append("encoder_spec.kind")
        if missing:
            raise GenRetError(f"incomplete {where} (no {', '.join(missing)})")
        known = {f.name for f in fields(cls)}
        if unknown := sorted(set(data) - known):
            raise GenRetError(f"corrupt {where} (unknown key {unknown[0]!r})")
        if data["backend"] not in BACKENDS:
            raise GenRetError(f"corrupt {where} (unknown backend {data['backend']!r})")
        return cls(
            **{
                **data,
                "encoder_spec": EncoderSpec.from_dict(data["encoder_spec"], where),
                "store_options": StoreOptions.from_dict(data.get("store_options"), where),
                "fields": {k: (data.get("fields") or {}).get(k, v) for k, v in FIELDS.items()},
            }
        )

    @classmethod
    def read(cls, path: str | Path) -> Manifest:
        """The manifest of the index in folder ``path``; GenRetError if it is missing, damaged or incomplete."""
        path = Path(path)
        file = path / MANIFEST
        try:
            text = file.read_text()
        except FileNotFoundError:
            raise GenRetError(f"no index at {path.absolute()} (build one with `genret index PATH`)") from None
        except (OSError, UnicodeDecodeError) as e:
            raise GenRetError(f"cannot read {file}: {getattr(e, 'strerror', None) or e}") from None
        fix = f"; rebuild the index with `genret index CORPUS --index-dir {path} --rebuild`"
        try:
            data = json.loads(text)
        except json.JSONDecodeError as e:
            raise GenRetError(f"corrupt manifest {file} ({'empty file' if not text.strip() else e}){fix}") from None
        try:
            return cls.from_dict(data, f"manifest {file}")
        except GenRetError as e:
            raise GenRetError(f"{e}{fix}") from None

    def write(self, path: str | Path) -> None:
        """Write (atomically) into the index folder ``path``."""
        write_json_atomic(Path(path) / MANIFEST, self.to_dict(), indent=2)


def read_manifest(path: str | Path) -> Manifest:
    """``Manifest.read``."""
    return Manifest.read(path)


@dataclass
class IndexSettings:
    """The `genret index` options an index is built with and remembers (``shards`` and ``replicas`` apply to
    a new Qdrant server collection)."""

    backend: str = "qdrant"
    url: str | None = None
    faiss_index: str = "Flat"
    encoder: str = "gen"
    backbone: str | None = None
    adapter: str | None = None
    task: str = "retrieval"
    chunk_size: int = 256
    overlap: int = 32
    shards: int | None = None
    replicas: int | None = None
    id_field: str = "id"
    title_field: str = "title"
    text_field: str = "text"

    @classmethod
    def names(cls) -> list[str]:
        return [f.name for f in fields(cls)]

    @classmethod
    def of(cls, manifest: Manifest) -> IndexSettings:
        """The settings an index was built with."""
        spec = manifest.encoder_spec
        return cls(
            backend=manifest.backend,
            url=manifest.url,
            faiss_index=manifest.faiss_index,
            encoder=spec.kind,
            backbone=spec.backbone,
            adapter=spec.adapter,
            task=manifest.task,
            chunk_size=manifest.chunk_size,
            overlap=manifest.overlap,
            shards=manifest.store_options.shard_number,
            replicas=manifest.store_options.replication_factor,
            **manifest.fields,
        )

    @property
    def spec(self) -> EncoderSpec:
        return EncoderSpec(self.encoder, self.backbone, self.adapter).resolved()

    @property
    def store_options(self) -> StoreOptions:
        return StoreOptions(self.shards, self.replicas)

    @property
    def fields(self) -> RecordFields:
        return {"id_field": self.id_field, "title_field": self.title_field, "text_field": self.text_field}

    def settle(
        self,
        manifest: Manifest | None,
        given: set[str],
        where: Path,
        *,
        rebuild: bool = False,
        named_url: str | None = None,
    ) -> IndexSettings:
        """The settings of a run on the index at ``where``: the ``given`` (explicit) ones, else the manifest's,
        else these (the defaults). Without ``rebuild``, a given setting that differs from the manifest's is a
        one-line GenRetError. ``named_url`` is the server the user named (option or environment): for an index
        on a server it is the address to use, as only a named server gets the API key."""
        mine = replace(self, backbone=self.spec.backbone, adapter=self.spec.adapter)
        if manifest is None:
            return mine.checked(given, where, rebuild, named_url)
        built = IndexSettings.of(manifest)
        for name in [] if rebuild else sorted(given):
            flag = "--" + name.replace("_", "-")
            if name == "url":
                if not built.url:
                    raise GenRetError(
                        f"index {where} is a local {built.backend} index, not one on a Qdrant server: "
                        "leave out --url, or add --rebuild to rebuild it on the server"
                    )
                continue  # naming the server of a server index is how its API key gets sent
            if name == "faiss_index" and built.backend != "faiss":
                continue  # refused below: --faiss-index does not apply to a qdrant index
            if not _same(name, getattr(mine, name), getattr(built, name), manifest):
                old = getattr(built, name)
                old = f"the default {flag}" if old is None else f"{flag} {old}"
                raise GenRetError(
                    f"index {where} was built with {old}; leave out {flag} (the index remembers it) "
                    f"or add --rebuild to rebuild it with {flag} {getattr(mine, name)}"
                )
        settled = replace(built, **{n: getattr(mine, n) for n in given})
        if named_url and built.url:
            settled.url = named_url
        return settled.checked(given, where, rebuild, named_url)

    def checked(self, given: set[str], where: Path, rebuild: bool, named_url: str | None) -> IndexSettings:
        """One-line errors for settings that do not go together."""
        if self.backend not in BACKENDS:
            raise GenRetError(f"unknown backend {self.backend!r}; use faiss or qdrant")
        if self.url and self.url != ":memory:":
            check_url(self.url)
        if (self.shards or self.replicas) and not self.url:
            raise GenRetError("--shards and --replicas apply to a Qdrant server collection (--url)")
        if self.backend != "faiss" and "faiss_index" in given:
            raise GenRetError(f"--faiss-index applies to --backend faiss, and this index uses {self.backend}")
        if rebuild and self.url and not named_url:
            raise GenRetError(f"index {where} is on a Qdrant server: name it with --url (or GENRET_URL) to rebuild it")
        return self


def _same(name: str, given: Any, built: Any, manifest: Manifest) -> bool:
    """Whether an explicit setting names what the index was built with."""
    if name == "backbone":  # the spec may hold None (the default) where the user names the default backbone
        identity = manifest.encoder
        return given in {built, identity.get("backbone"), identity.get("model")} - {None}
    return given == built
