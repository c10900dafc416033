"""Atomic file writes: a temporary file beside the target, fsynced, renamed over it, then the folder fsynced, so a
crash or ``kill -9`` leaves the old file or the new one, never part of one (and the rename survives a power cut)."""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any, Callable


def atomic_write(path: str | os.PathLike, write: Callable[[Path], Any]) -> Path:
    """Write ``path`` by calling ``write(tmp)`` on a temporary path beside it (``.NAME.PID.tmp``), then fsync that
    file, rename it over ``path`` and fsync the folder. If anything fails, the temporary file is removed and
    ``path`` is as it was. The folder must exist. Returns ``path``."""
    path = Path(path)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    try:
        write(tmp)
        _fsync(tmp)
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    _fsync(path.parent)
    return path


def _fsync(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def write_text_atomic(path: str | os.PathLike, text: str) -> Path:
    """``atomic_write`` of ``text`` as UTF-8."""
    return atomic_write(path, lambda p: p.write_text(text, encoding="utf-8"))


def write_json_atomic(path: str | os.PathLike, data: Any, **dumps: Any) -> Path:
    """``atomic_write`` of ``json.dumps(data, **dumps)`` and a newline."""
    return write_text_atomic(path, json.dumps(data, **dumps) + "\n")


def write_parquet_atomic(path: str | os.PathLike, table) -> Path:
    """``atomic_write`` of a pyarrow Table as Parquet."""
    import pyarrow.parquet as pq

    return atomic_write(path, lambda p: pq.write_table(table, p))
