"""How to load an encoder again: what an index's manifest and an embeddings file record about their encoder."""

from __future__ import annotations

from dataclasses import asdict, dataclass, fields
from pathlib import Path
from typing import Any

from ..errors import GenRetError

KINDS = ("gen", "teacher", "hyde")


@dataclass(frozen=True)
class EncoderSpec:
    """``load_encoder`` settings that decide the vectors. Runtime choices (device, threads) are not part of it.

    ``backbone`` and ``adapter`` are names or local paths (made absolute by ``resolved``, so a manifest works
    from any folder); None means the default backbone and its shipped adapter. ``dtype`` and ``max_length``
    are kept only when a caller pinned them."""

    kind: str = "gen"
    backbone: str | None = None
    adapter: str | None = None
    dtype: str | None = None
    max_length: int | None = None

    @classmethod
    def from_dict(cls, data: dict[str, Any] | EncoderSpec | None, where: str = "the encoder spec") -> EncoderSpec:
        """The spec in ``data``; an unknown key or kind is a one-line GenRetError naming ``where``."""
        if isinstance(data, EncoderSpec):
            return data
        data = dict(data or {})
        known = [f.name for f in fields(cls)]
        if unknown := sorted(set(data) - set(known)):
            raise GenRetError(f"unknown encoder setting {unknown[0]!r} in {where} (known: {', '.join(known)})")
        spec = cls(**{k: v for k, v in data.items() if v is not None})
        if spec.kind not in KINDS:
            raise GenRetError(f"unknown encoder kind {spec.kind!r} in {where}; use {', '.join(KINDS)}")
        return spec

    def to_dict(self) -> dict[str, Any]:
        """kind, backbone and adapter always; dtype and max_length when set."""
        out = asdict(self)
        return {k: v for k, v in out.items() if v is not None or k in ("backbone", "adapter")}

    def resolved(self) -> EncoderSpec:
        """The same spec with a backbone or adapter that is a local path made absolute (names stay)."""

        def absolute(value: str | None) -> str | None:
            if value is None:
                return None
            return str(Path(value).resolve()) if Path(value).exists() else str(value)

        return EncoderSpec(self.kind, absolute(self.backbone), absolute(self.adapter), self.dtype, self.max_length)

    def load(self, **runtime):
        """The encoder, with ``runtime`` options (device, num_threads...) that are not None on top."""
        from . import load_encoder

        settings = {k: v for k, v in {**asdict(self), **runtime}.items() if v is not None}
        return load_encoder(**settings)
