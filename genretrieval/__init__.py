"""genretrieval: retrieval with generative embeddings (LLM2Vec-Gen)."""

import os as _os
from importlib import metadata as _metadata

# Idle OpenMP threads must sleep, not spin: with another process on a core, spinning makes torch ~10x slower.
_os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")

from .errors import GenRetError  # noqa: E402
from .instructions import TASKS, Task  # noqa: E402

__all__ = ["GenRetError", "TASKS", "Task", "load_encoder", "GenEncoder", "TeacherEncoder", "Index", "Hit"]
try:  # the installed distribution's version, so it cannot drift from pyproject.toml
    __version__ = _metadata.version("genretrieval")
except _metadata.PackageNotFoundError:  # a source tree on sys.path without an install
    __version__ = "0+unknown"


def __getattr__(name: str):
    # torch and transformers load lazily, so `import genretrieval` and `genret --help` stay fast.
    if name in ("load_encoder", "GenEncoder", "TeacherEncoder"):
        from . import encoder

        return getattr(encoder, name)
    if name in ("Index", "Hit"):
        from . import index

        return getattr(index, name)
    raise AttributeError(name)
