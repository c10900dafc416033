"""Integrations with other frameworks, each behind an optional extra.

- :mod:`genretrieval.integrations.llamaindex` (``pip install 'genretrieval[llamaindex]'``):
  ``GenRetrievalEmbedding`` (a LlamaIndex embedding model) and ``GenRetrievalRetriever`` (a LlamaIndex
  retriever over an index built by ``genret index``).

Importing this package imports no framework; importing a module whose framework is missing raises
:class:`MissingExtraError` with the pip command to run.
"""

from __future__ import annotations

from ..errors import GenRetError

__all__ = ["MissingExtraError"]


class MissingExtraError(GenRetError, ImportError):
    """An integration's framework is not installed. Both a ``GenRetError`` (one line, with the pip command)
    and an ``ImportError`` (so ``except ImportError`` around an optional import keeps working)."""
