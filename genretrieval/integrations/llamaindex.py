"""LlamaIndex integration: genretrieval encoders as a LlamaIndex embedding model, genret indexes as a retriever.

``GenRetrievalEmbedding`` embeds queries through the encoder's query path and nodes through its document path
(the two get different instructions; a query is never embedded as a document or the reverse), so it works with
any LlamaIndex vector store. ``GenRetrievalRetriever`` searches an index built by ``genret index`` (FAISS,
Qdrant Edge or a Qdrant server) and returns its chunks as ``TextNode``\\ s. See ``docs/llamaindex.md``.

Needs ``pip install 'genretrieval[llamaindex]'``.
"""

from __future__ import annotations

import asyncio
import json
import threading
from pathlib import Path
from typing import Any, Literal, Optional, cast

from . import MissingExtraError

try:
    from llama_index.core.base.base_retriever import BaseRetriever
    from llama_index.core.base.embeddings.base import BaseEmbedding
    from llama_index.core.bridge.pydantic import Field, PrivateAttr
    from llama_index.core.callbacks import CallbackManager
    from llama_index.core.constants import DEFAULT_SIMILARITY_TOP_K
    from llama_index.core.schema import NodeRelationship, NodeWithScore, QueryBundle, RelatedNodeInfo, TextNode
    from llama_index.core.vector_stores.types import (
        FilterCondition,
        FilterOperator,
        MetadataFilter,
        MetadataFilters,
    )
except ImportError as e:  # pragma: no cover - exercised by a test that hides llama_index
    if (e.name or "").split(".")[0] != "llama_index":
        raise
    error = MissingExtraError("LlamaIndex is not installed: pip install 'genretrieval[llamaindex]'")
    error.name = e.name
    raise error from None

from ..encoder.base import Encoder
from ..errors import GenRetError
from ..index import Hit, Index
from ..instructions import get_task

__all__ = ["GenRetrievalEmbedding", "GenRetrievalRetriever", "metadata_filters_to_where"]

#: Options of ``load_encoder`` that GenRetrievalEmbedding passes through when ``encoder`` is a kind string.
LOAD_OPTIONS = ("backbone", "adapter", "device", "dtype", "num_threads", "max_length", "shipped", "trust_remote_code")


def model_name_for(encoder: Encoder) -> str:
    """The encoder's identity as the JSON text of the dict an index manifest stores under ``encoder``
    (keys sorted): ``json.loads(model_name) == Index.manifest["encoder"]`` for the encoder that built it."""
    return json.dumps(encoder.identity(), sort_keys=True, separators=(",", ":"))


class GenRetrievalEmbedding(BaseEmbedding):
    """A genretrieval encoder as a LlamaIndex embedding model.

    ``encoder`` is a loaded encoder (``load_encoder(...)``, ``Index.encoder``) or a kind string (``"gen"``,
    the default, or ``"teacher"``), loaded with the given ``backbone``, ``adapter``, ``device``, ``dtype``,
    ``num_threads``, ``max_length``, ``shipped`` and ``trust_remote_code`` (see ``load_encoder``).

    Queries (``get_query_embedding``) go through ``encoder.encode_queries``, texts and nodes
    (``get_text_embedding``, ``get_text_embedding_batch``) through ``encoder.encode_documents``, with the
    instruction preset ``task`` (``genretrieval.TASKS``). Each batch LlamaIndex hands over (at most
    ``embed_batch_size`` texts) is one encoder call, which sorts the texts by length and runs them in batches
    of ``batch_size`` (default: the encoder's own). Vectors are L2-normalised float lists.

    ``model_name`` is the encoder's identity, the JSON of the dict an index manifest records (see
    :func:`model_name_for`); ``identity`` is that dict. Async methods run the encoder in a worker thread, one
    call at a time.
    """

    task: str = Field(default="retrieval", description="genretrieval instruction preset (genretrieval.TASKS).")
    batch_size: Optional[int] = Field(
        default=None, gt=0, description="Texts per forward pass inside one encoder call (None: the encoder's default)."
    )
    _encoder: Any = PrivateAttr()
    _lock: Any = PrivateAttr()

    def __init__(
        self,
        encoder: Encoder | str = "gen",
        *,
        task: str = "retrieval",
        batch_size: int | None = None,
        embed_batch_size: int = 64,
        backbone: str | None = None,
        adapter: str | Path | None = None,
        device: str | None = None,
        dtype: str | None = None,
        num_threads: int | None = None,
        max_length: int | None = None,
        shipped: bool | None = None,
        trust_remote_code: bool | None = None,
        **kwargs: Any,
    ) -> None:
        get_task(task)  # an unknown preset is refused before any model loads
        options: dict[str, Any] = {
            "backbone": backbone,
            "adapter": adapter,
            "device": device,
            "dtype": dtype,
            "num_threads": num_threads,
            "max_length": max_length,
            "shipped": shipped,
            "trust_remote_code": trust_remote_code,
        }
        options = {k: v for k, v in options.items() if v is not None}
        if isinstance(encoder, str):
            from ..encoder import load_encoder

            # A kind string from the caller: load_encoder refuses an unknown one.
            encoder = load_encoder(cast(Literal["gen", "teacher", "hyde"], encoder), **options)
        elif options:
            raise GenRetError(
                f"{', '.join(options)}: load options apply only when encoder is a kind string "
                "('gen' or 'teacher'), not to an encoder already loaded"
            )
        elif not isinstance(encoder, Encoder):
            raise GenRetError(f"encoder must be a genretrieval encoder or a kind string, not {type(encoder).__name__}")
        if "model_name" in kwargs:
            raise GenRetError("model_name is the encoder's identity and cannot be set")
        # task and batch_size are this model's own pydantic fields, which BaseEmbedding's __init__ does not name
        super().__init__(
            model_name=model_name_for(encoder),
            task=task,
            batch_size=batch_size,  # type: ignore[call-arg]
            embed_batch_size=embed_batch_size,
            **kwargs,
        )
        self._encoder = encoder
        self._lock = threading.Lock()

    @classmethod
    def from_index(cls, index: Index, **kwargs: Any) -> "GenRetrievalEmbedding":
        """The embedding with the encoder of an open ``Index`` and its task (queries embedded with it land
        in the index's space)."""
        if index.encoder is None:
            raise GenRetError(f"index {index.path} was opened without its encoder (with_encoder=False)")
        return cls(index.encoder, **{"task": index.manifest.task, **kwargs})

    @classmethod
    def class_name(cls) -> str:
        return "GenRetrievalEmbedding"

    @property
    def encoder(self) -> Encoder:
        """The genretrieval encoder behind this embedding."""
        return self._encoder

    @property
    def identity(self) -> dict[str, Any]:
        """The encoder's identity dict (what an index manifest stores under ``encoder``)."""
        return self._encoder.identity()

    def to_payload(self) -> dict[str, Any]:
        return {**super().to_payload(), "task": self.task}

    # ----------------------------------------------------------------------------------------- encoding
    def _encode(self, texts: list[str], *, query: bool) -> list[list[float]]:
        method = self._encoder.encode_queries if query else self._encoder.encode_documents
        kwargs: dict[str, Any] = (
            {"task": self.task} if self.batch_size is None else {"task": self.task, "batch_size": self.batch_size}
        )
        with self._lock:
            vectors = method(list(texts), **kwargs)
        return vectors.tolist()

    def _get_query_embedding(self, query: str) -> list[float]:
        return self._encode([query], query=True)[0]

    def _get_text_embedding(self, text: str) -> list[float]:
        return self._encode([text], query=False)[0]

    def _get_text_embeddings(self, texts: list[str]) -> list[list[float]]:
        return self._encode(texts, query=False)

    async def _aget_query_embedding(self, query: str) -> list[float]:
        return (await asyncio.to_thread(self._encode, [query], query=True))[0]

    async def _aget_text_embedding(self, text: str) -> list[float]:
        return (await asyncio.to_thread(self._encode, [text], query=False))[0]

    async def _aget_text_embeddings(self, texts: list[str]) -> list[list[float]]:
        return await asyncio.to_thread(self._encode, texts, query=False)


# --------------------------------------------------------------------------------------------- filters
_SUPPORTED = "== (FilterOperator.EQ) and in (FilterOperator.IN)"


def _leaf_to_where(f: MetadataFilter) -> dict[str, list]:
    op = FilterOperator(f.operator)
    if op not in (FilterOperator.EQ, FilterOperator.IN):
        raise GenRetError(
            f"filter operator {op.name} ({op.value!r}) on '{f.key}' is not supported by genret "
            f"indexes; use {_SUPPORTED} (a list-valued field matches when any element does)"
        )
    value = f.value
    if value is None:
        raise GenRetError(f"filter on '{f.key}' has no value")
    if op is FilterOperator.EQ:
        if isinstance(value, list):
            raise GenRetError(f"filter on '{f.key}' compares == with a list; use FilterOperator.IN for any-of")
        return {f.key: [value]}
    values = value if isinstance(value, list) else [value]
    if not values:
        raise GenRetError(f"filter on '{f.key}' has an empty list of values")
    return {f.key: list(values)}


def _group_to_where(group: MetadataFilters) -> dict[str, list]:
    condition = FilterCondition(group.condition or FilterCondition.AND)
    if condition not in (FilterCondition.AND, FilterCondition.OR):
        raise GenRetError(
            f"filter condition {condition.name} is not supported by genret indexes (only AND, and "
            "OR of conditions on one field)"
        )
    parts = [_leaf_to_where(f) if isinstance(f, MetadataFilter) else _group_to_where(f) for f in group.filters]
    parts = [p for p in parts if p]
    if condition is FilterCondition.AND or len(parts) <= 1:
        out: dict[str, list] = {}
        for part in parts:
            for key, values in part.items():
                if key in out:
                    raise GenRetError(
                        f"two conditions on '{key}' joined by AND are not supported by genret "
                        "indexes (one condition per field; use FilterOperator.IN for any-of)"
                    )
                out[key] = values
        return out
    keys = {key for part in parts for key in part}
    if len(keys) != 1 or any(len(part) != 1 for part in parts):
        raise GenRetError(
            f"filter condition OR across fields ({', '.join(sorted(keys))}) is not supported by "
            "genret indexes (only AND, and OR of conditions on one field)"
        )
    (key,) = keys
    return {key: list(dict.fromkeys(v for part in parts for v in part[key]))}


def metadata_filters_to_where(filters: MetadataFilters | None) -> dict[str, Any] | None:
    """LlamaIndex ``MetadataFilters`` as a genret ``where`` filter (``{field: value or [any of values]}``).

    Supported: ``==`` and ``in`` on payload fields, joined by AND (nested groups too), and OR of conditions
    on one field (an any-of). Anything else (another operator, OR across fields, NOT, two AND-ed conditions on
    one field) is a GenRetError naming it. Field names are checked by the index when searching.
    """
    if filters is None:
        return None
    if not isinstance(filters, MetadataFilters):
        raise GenRetError(f"filters must be a llama_index MetadataFilters, not {type(filters).__name__}")
    where = _group_to_where(filters)
    return {k: v[0] if len(v) == 1 else v for k, v in where.items()} or None


# --------------------------------------------------------------------------------------------- retriever
def hit_to_node(hit: Hit) -> NodeWithScore:
    """A genret search hit as a LlamaIndex node: the chunk text, the chunk id as node id, its document as the
    source node, and metadata ``source``, ``title``, ``chunk_no`` plus the document's own fields."""
    metadata = {**hit.metadata, "source": hit.source, "title": hit.title, "chunk_no": hit.chunk_no}
    doc_id = hit.id.rpartition("::")[0] or hit.id  # chunk ids are "<doc_id>::<name>"
    node = TextNode(
        id_=hit.id,
        text=hit.text,
        metadata=metadata,
        relationships={NodeRelationship.SOURCE: RelatedNodeInfo(node_id=doc_id)},
        excluded_llm_metadata_keys=["chunk_no"],
        excluded_embed_metadata_keys=list(metadata),
    )
    return NodeWithScore(node=node, score=hit.score)


class GenRetrievalRetriever(BaseRetriever):
    """A LlamaIndex retriever over an index built by ``genret index`` (or ``Index.create`` / ``add``).

    Build it from an open :class:`~genretrieval.index.Index` or with :meth:`from_index_dir`, which opens the
    index and loads the encoder its manifest names. Each query is embedded by the index's encoder (query path,
    the index's task unless ``task`` is given) and searched with ``Index.search``: the nodes are exactly its
    top ``similarity_top_k`` hits, with cosine scores.

    ``filters`` (LlamaIndex ``MetadataFilters``, see :func:`metadata_filters_to_where`) and ``where`` (a genret
    filter, ``{field: value or [values]}``) restrict the search; given both, both apply (one condition per
    field). A retriever that opened its index (``from_index_dir``) closes it in :meth:`close` (or on leaving a
    ``with`` block): a Qdrant Edge index is open in one process at a time.
    """

    def __init__(
        self,
        index: Index,
        similarity_top_k: int = DEFAULT_SIMILARITY_TOP_K,
        filters: MetadataFilters | None = None,
        where: dict[str, Any] | None = None,
        task: str | None = None,
        *,
        close_index: bool = False,
        callback_manager: CallbackManager | None = None,
        verbose: bool = False,
    ) -> None:
        if not isinstance(index, Index):
            raise GenRetError(f"index must be a genretrieval Index, not {type(index).__name__}")
        if index.encoder is None:
            raise GenRetError(f"index {index.path} was opened without its encoder (with_encoder=False)")
        if similarity_top_k < 1:
            raise GenRetError(f"similarity_top_k must be at least 1, got {similarity_top_k}")
        if task is not None:
            get_task(task)
        self._index = index
        self.similarity_top_k = similarity_top_k
        self.task = task
        self._where = self._combine(metadata_filters_to_where(filters), where)
        self._close_index = close_index
        self._lock = threading.Lock()
        super().__init__(callback_manager=callback_manager, verbose=verbose)

    @classmethod
    def from_index_dir(
        cls,
        path: str | Path,
        *,
        similarity_top_k: int = DEFAULT_SIMILARITY_TOP_K,
        filters: MetadataFilters | None = None,
        where: dict[str, Any] | None = None,
        task: str | None = None,
        encoder: Encoder | None = None,
        url: str | None = None,
        callback_manager: CallbackManager | None = None,
        verbose: bool = False,
        **encoder_overrides: Any,
    ) -> "GenRetrievalRetriever":
        """Open the index in ``path`` for reading (``Index.open``) and retrieve from it.

        The encoder is the one the manifest names, loaded with ``encoder_overrides`` (``device``, ``dtype``,
        ``num_threads``...), unless ``encoder`` is given (it must be the one the index was built with).
        ``url`` names the Qdrant server of an index kept on one (and gets ``QDRANT_API_KEY``).
        """
        index = Index.open(path, encoder, url=url, **encoder_overrides)
        try:
            return cls(
                index,
                similarity_top_k,
                filters,
                where,
                task,
                close_index=True,
                callback_manager=callback_manager,
                verbose=verbose,
            )
        except BaseException:
            index.close()
            raise

    @property
    def index(self) -> Index:
        """The genret index searched."""
        return self._index

    @property
    def where(self) -> dict[str, Any] | None:
        """The genret filter every search applies (from ``filters`` and ``where``)."""
        return self._where

    @staticmethod
    def _combine(a: dict[str, Any] | None, b: dict[str, Any] | None) -> dict[str, Any] | None:
        if not a or not b:
            return a or (dict(b) if b else None)
        if both := sorted(set(a) & set(b)):
            raise GenRetError(f"filters and where both restrict {', '.join(both)} (one condition per field)")
        return {**a, **b}

    def embedding(self, **kwargs: Any) -> GenRetrievalEmbedding:
        """A LlamaIndex embedding with this index's encoder and task (e.g. for ``Settings.embed_model``)."""
        return GenRetrievalEmbedding.from_index(self._index, **({"task": self.task} if self.task else {}), **kwargs)

    def close(self) -> None:
        """Close the index if this retriever opened it (``from_index_dir``); safe to call twice."""
        if self._close_index:
            self._close_index = False
            self._index.close()

    def __enter__(self) -> "GenRetrievalRetriever":
        return self

    def __exit__(self, *exc: Any) -> None:
        self.close()

    def _retrieve(self, query_bundle: QueryBundle) -> list[NodeWithScore]:
        with self._lock:
            (hits,) = self._index.search(
                query_bundle.query_str, k=self.similarity_top_k, where=self._where, task=self.task
            )
        return [hit_to_node(h) for h in hits]

    async def _aretrieve(self, query_bundle: QueryBundle) -> list[NodeWithScore]:
        return await asyncio.to_thread(self._retrieve, query_bundle)
