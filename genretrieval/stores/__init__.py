"""Vector stores behind one interface: FAISS, embedded Qdrant (Edge) and a Qdrant server."""

from __future__ import annotations

import importlib
from pathlib import Path
from typing import Literal

from genretrieval.errors import GenRetError
from genretrieval.stores.base import StoreHit, VectorStore

__all__ = ["StoreHit", "VectorStore", "open_store"]

_INSTALL_HINTS = {
    "faiss": "pip install faiss-cpu (or faiss-gpu-cu12 on CUDA machines; never both)",
    "qdrant_edge": "pip install 'qdrant-edge-py>=0.9,<0.10'",
    "qdrant_client": "pip install qdrant-client",
}


def open_store(
    backend: Literal["faiss", "qdrant"],
    path: Path | None,
    dim: int,
    *,
    url: str | None = None,
    collection: str = "genret",
    faiss_index: str = "Flat",
    create: bool,
    read_only: bool = False,
    url_from_user: bool = True,
    **opts,
) -> VectorStore:
    """Open (or, with ``create=True``, open or create) a vector store of ``dim``-d vectors.

    - ``backend="faiss"``: :class:`~genretrieval.stores.faiss_store.FaissStore` in directory ``path``;
      ``faiss_index`` is a faiss factory string ("Flat", "IVF1024,Flat", "HNSW32", ...) used at creation.
    - ``backend="qdrant"``, ``url=None``: embedded Qdrant Edge shard in directory ``path``
      (:class:`~genretrieval.stores.qdrant_edge.QdrantEdgeStore`).
    - ``backend="qdrant"`` with ``url``: collection ``collection`` on a Qdrant server or cluster
      (:class:`~genretrieval.stores.qdrant_server.QdrantServerStore`); ``url=":memory:"`` runs in-process.

    ``opts`` go to the store class (e.g. ``nprobe``, ``ef_search``, ``exact_threshold``, ``hnsw_ef``,
    ``shard_number``). With ``create=False`` a missing store is a GenRetError. ``read_only`` opens an existing
    store for searching only (it never writes; Qdrant Edge cannot open a read-only folder). A server gets the
    ``QDRANT_API_KEY`` only if ``url_from_user`` (False for a URL read from an index manifest).
    """
    if backend == "faiss":
        if path is None:
            raise GenRetError("the faiss store needs a directory path")
        module = _import("faiss_store", "faiss")
        return module.FaissStore(path, dim, factory=faiss_index, create=create, read_only=read_only, **opts)
    if backend == "qdrant":
        if url is None:
            if path is None:
                raise GenRetError("embedded Qdrant needs a directory path (or pass a server url)")
            module = _import("qdrant_edge", "qdrant_edge")
            return module.QdrantEdgeStore(path, dim, create=create, read_only=read_only, **opts)
        module = _import("qdrant_server", "qdrant_client")
        return module.QdrantServerStore(
            url, dim, collection=collection, create=create, read_only=read_only, url_from_user=url_from_user, **opts
        )
    raise GenRetError(f"unknown store backend '{backend}'; choose faiss or qdrant")


def _import(module: str, engine: str):
    """Import a store module, turning a missing engine into a GenRetError with the pip command."""
    try:
        return importlib.import_module(f"genretrieval.stores.{module}")
    except ImportError as e:
        if (e.name or "").split(".")[0] != engine:
            raise
        raise GenRetError(f"the {engine} engine is not installed: {_INSTALL_HINTS[engine]}") from None
