"""`genret serve`: an HTTP JSON API over one index, with its encoder loaded once (FastAPI and uvicorn, the
``serve`` extra: ``pip install 'genretrieval[serve]'``).

``create_app(index, token=..., limits=...)`` builds the application around an open ``Index``; ``run(...)`` opens
an index and serves it with uvicorn until interrupted. Routes: ``GET /health``, ``GET /info``, ``POST /search``,
``POST /search/batch``, ``POST /documents``, ``DELETE /documents``, and FastAPI's ``GET /openapi.json`` and
``GET /docs``. Every error is JSON: ``{"error": "..."}``.

Writes need ``Authorization: Bearer <token>``, the token the server was started with (``GENRET_API_TOKEN``); a
server without one refuses them (403), a wrong or missing token gets 401. Requests are served one at a time
around the encoder and the store (a lock), and an index open for reading catches up with what another process
(``genret index``) wrote to it before each search.
"""

# No `from __future__ import annotations` here: FastAPI reads the route signatures' types at runtime.

import hashlib
import hmac
import ipaddress
import logging
import math
import os
import signal
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any
from urllib.parse import urlsplit

from .errors import GenRetError
from .stores.base import check_k

INSTALL_HINT = "the server needs the serve extra: pip install 'genretrieval[serve]' (FastAPI and uvicorn)"

try:
    import uvicorn
    from fastapi import Body, Depends, FastAPI
    from fastapi.exceptions import RequestValidationError
    from fastapi.responses import JSONResponse
    from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer
    from pydantic import AfterValidator, BaseModel, BeforeValidator, ConfigDict, Field, RootModel, WithJsonSchema
    from starlette.exceptions import HTTPException
except ImportError:
    raise GenRetError(INSTALL_HINT) from None

logger = logging.getLogger(__name__)

TOKEN_ENV = "GENRET_API_TOKEN"
#: Fields that the index writes itself into every chunk's payload (and the stores' "_id"): no document may set them.
_RESERVED = ("doc_id", "chunk_no", "char_start", "char_end", "content_hash", "_id")
_DEFAULT_SOURCE = "api"


@dataclass(frozen=True)
class Limits:
    """What one request may ask for; more is answered with a 4xx JSON error."""

    max_k: int = 100  # hits per query
    max_batch: int = 64  # queries per POST /search/batch
    max_documents: int = 256  # documents per POST /documents
    max_body: int = 4 * 1024 * 1024  # bytes of request body


# ---------------------------------------------------------------------------------------------- request bodies


def _one_or_list(types: tuple[type, ...], what: str, schema: list[dict]):
    """A value of ``types`` or a non-empty list of them, checked with one clear message (not one per type)."""

    def check(value):
        values = value if isinstance(value, list) else [value]
        if not values:
            raise ValueError(f"must be {what}, or a non-empty list of them")
        for v in values:
            if not isinstance(v, types) or (isinstance(v, float) and not math.isfinite(v)):
                raise ValueError(f"must be {what}, or a list of them")
        return value

    return Annotated[
        Any, AfterValidator(check), WithJsonSchema({"anyOf": [*schema, {"type": "array", "items": {"anyOf": schema}}]})
    ]


_SCALARS = [{"type": "string"}, {"type": "integer"}, {"type": "boolean"}]
if TYPE_CHECKING:  # built at runtime as Annotated[Any, <validator>, <schema>]: Any to a type checker
    FilterValue = Any
    MetaValue = Any
else:
    #: A filter value: what ``Index.search``'s ``where`` takes (a list means any of its values).
    FilterValue = _one_or_list((str, int), "a string, an integer or a boolean", _SCALARS)
    #: A metadata value of a posted document.
    MetaValue = _one_or_list((str, int, float), "a string, a number or a boolean", [*_SCALARS, {"type": "number"}])
Filter = dict[str, FilterValue]


class SearchRequest(BaseModel):
    model_config = ConfigDict(extra="forbid")

    query: str = Field(description="The query text.")
    k: int = Field(10, description="Hits to return (at most the server's max_k).")
    filter: Filter | None = Field(
        None,
        description="Payload equality filter: field -> value or list of values "
        "(any of them), as Index.search's `where`.",
    )
    task: str | None = Field(None, description="Query instruction preset (default: the index's).")


class BatchSearchRequest(BaseModel):
    model_config = ConfigDict(extra="forbid")

    queries: list[str] = Field(description="Query texts (at most the server's max_batch).")
    k: int = 10
    filter: Filter | None = None
    task: str | None = None


class DocumentIn(BaseModel):
    """A document to index. Other top-level fields are metadata, like the fields of a record in a JSONL corpus."""

    model_config = ConfigDict(extra="allow")
    __pydantic_extra__: dict[str, MetaValue] = Field(init=False)

    id: str | int | None = Field(
        None, description="Document id; the index stores it as `<source>#<id>`. Default: a hash of the title and text."
    )
    text: str = Field(description="The document's text; chunked as `genret index` chunks files.")
    title: str = ""
    source: str = Field(
        _DEFAULT_SOURCE,
        min_length=1,
        description="Where the document comes from: a filterable field, and what DELETE /documents takes.",
    )
    metadata: dict[str, MetaValue] | None = Field(None, description="More metadata fields (filterable).")


def _unwrap(body: Any) -> Any:
    """``{"documents": [...]}`` as the list it holds; anything else as it is."""
    if isinstance(body, dict) and set(body) == {"documents"}:
        return body["documents"]
    return body


class DocumentsIn(RootModel[list[DocumentIn]]):
    """A JSON list of documents (``{"documents": [...]}`` is taken too)."""

    root: Annotated[list[DocumentIn], BeforeValidator(_unwrap)]


class DeleteRequest(BaseModel):
    """What to delete; given several, a chunk must match all of them (as Index.delete)."""

    model_config = ConfigDict(extra="forbid")

    ids: list[str] | None = Field(None, description="Chunk ids (the `id` of a hit).")
    doc_ids: list[str] | None = Field(None, description="Document ids as stored (`<source>#<id>`), all chunks.")
    source: str | None = Field(None, description="Every chunk of this source.")
    filter: Filter | None = Field(None, description="Payload equality filter, as in /search.")


# ---------------------------------------------------------------------------------------------- the service


class _Service:
    """The index, the lock that serializes work on its encoder and store, and the write settings."""

    def __init__(self, index, token: str | None, limits: Limits):
        self.index = index
        self.limits = limits
        self.lock = threading.Lock()
        self.token = token.encode() if token else None
        self.writes = bool(self.token) and index.writable
        self._refresh_error: str | None = None

    @contextmanager
    def reading(self) -> Iterator[Any]:
        """The index, under the lock, caught up with what another process wrote to it."""
        with self.lock:
            try:
                if self.index.refresh():
                    logger.info("index %s changed on disk: reopened (%d chunks)", self.index.path, self.index.count())
                self._refresh_error = None
            except GenRetError as e:  # keep serving what was last read, and say why once
                if str(e) != self._refresh_error:
                    logger.warning("cannot reload index %s, serving it as last read: %s", self.index.path, e)
                self._refresh_error = str(e)
            yield self.index

    @contextmanager
    def writing(self) -> Iterator[Any]:
        with self.lock:
            yield self.index

    def check_k(self, k: int) -> None:
        check_k(k)
        if k > self.limits.max_k:
            raise GenRetError(f"k is {k}, more than this server's limit of {self.limits.max_k} (genret serve --max-k)")

    def where(self, filter: Filter | None) -> dict | None:
        return dict(filter) if filter else None


def _error(status: int, message: str, headers: dict | None = None, **extra) -> JSONResponse:
    return JSONResponse({"error": message, **extra}, status_code=status, headers=headers)


def _hits(query: str, hits) -> dict:
    return {"query": query, "hits": [h.to_dict() for h in hits]}


def _check_queries(queries: list[str]) -> None:
    if not queries:
        raise GenRetError("no queries given")
    if any(not q.strip() for q in queries):
        raise GenRetError("empty query")


def _document(doc: DocumentIn):
    """A ``corpus.Document`` for a posted document: id ``<source>#<id>``, its extra fields as metadata."""
    from .corpus import Document

    metadata = {**(doc.model_extra or {}), **(doc.metadata or {})}
    if reserved := sorted(set(metadata) & {*_RESERVED, "text", "title", "source"}):
        raise GenRetError(f"metadata field '{reserved[0]}' is reserved (the index sets it)")
    if not doc.text.strip():
        raise GenRetError(f"document {doc.id!r} has no text" if doc.id is not None else "a document has no text")
    name = doc.id if doc.id is not None else hashlib.sha256(f"{doc.title}\0{doc.text}".encode()).hexdigest()[:16]
    return Document(f"{doc.source}#{name}", doc.title, doc.text, doc.source, metadata)


#: Host names a server on a loopback address answers to (anything else is refused: DNS rebinding).
LOOPBACK_HOSTS = ("127.0.0.1", "localhost", "::1")


def _is_json(content_type: bytes | None) -> bool:
    media = (content_type or b"").split(b";")[0].strip().lower()
    return media == b"application/json" or (media.startswith(b"application/") and media.endswith(b"+json"))


class _Guard:
    """ASGI middleware that checks a request before the application sees it: its Host header (when
    ``allowed_hosts`` is given), its body size (at most ``max_body`` bytes, declared or streamed: 413) and that
    a body is JSON (415). Refusals are JSON, sent after the body was read and dropped, so that the client gets
    the answer rather than a reset connection."""

    def __init__(self, app, max_body: int, allowed_hosts: tuple[str, ...] | None = None):
        self.app, self.max_body = app, max_body
        self.allowed_hosts = None if allowed_hosts is None else {h.lower() for h in allowed_hosts}

    async def __call__(self, scope, receive, send):
        if scope["type"] != "http":
            return await self.app(scope, receive, send)
        headers = dict(scope.get("headers") or [])
        refusal = None
        if self.allowed_hosts is not None:
            host = headers.get(b"host", b"").decode("latin-1")
            try:
                name = urlsplit(f"//{host}").hostname or ""
            except ValueError:
                name = ""
            if name.lower() not in self.allowed_hosts:
                refusal = _error(
                    400,
                    f"this server does not answer to host {host!r} (it listens on a loopback "
                    "address; use 127.0.0.1 or localhost)",
                )
        declared = headers.get(b"content-length")
        too_big = declared is not None and declared.isdigit() and int(declared) > self.max_body
        body = bytearray()
        more = True
        while more:
            message = await receive()
            if message["type"] == "http.disconnect":
                return
            if not too_big:
                body += message.get("body", b"")
                too_big = len(body) > self.max_body
                if too_big:
                    body = bytearray()
            more = message.get("more_body", False)
        if refusal is None and too_big:
            refusal = _error(
                413, f"request body is over this server's limit of {self.max_body} bytes (genret serve --max-body)"
            )
        if refusal is None and body and not _is_json(headers.get(b"content-type")):
            refusal = _error(415, "send the request body as JSON, with Content-Type: application/json")
        if refusal is not None:
            return await refusal(scope, receive, send)
        replayed = False

        async def replay():
            nonlocal replayed
            if not replayed:
                replayed = True
                return {"type": "http.request", "body": bytes(body), "more_body": False}
            return await receive()

        await self.app(scope, replay, send)


def _validation_message(errors: list[dict]) -> tuple[int, str]:
    """A status and a one-line message for FastAPI's validation errors: 400 for a body that is not JSON."""
    for e in errors:
        if e.get("type") == "json_invalid":
            detail = (e.get("ctx") or {}).get("error") or e.get("msg")
            return 400, f"invalid JSON in the request body: {detail}"
    parts = []
    for e in errors[:5]:
        loc = ".".join(str(p) for p in e.get("loc", ()) if p != "body")
        parts.append(f"{loc}: {e.get('msg')}" if loc else str(e.get("msg")))
    more = f" (and {len(errors) - 5} more)" if len(errors) > 5 else ""
    return 422, "invalid request: " + "; ".join(parts) + more


def create_app(
    index, *, token: str | None = None, limits: Limits | None = None, allowed_hosts: tuple[str, ...] | None = None
) -> "FastAPI":
    """The HTTP API over ``index`` (an open ``genretrieval.Index`` with its encoder).

    Writes (POST and DELETE /documents) need ``token`` as a bearer token and an index open for writing; without
    a token they are refused (403). ``allowed_hosts``: the host names requests may be addressed to (Host header;
    ``LOOPBACK_HOSTS`` for a server on a loopback address, against DNS rebinding); None allows any. The caller
    keeps ownership of ``index`` and closes it after serving.
    """
    from . import __version__

    if index.encoder is None:
        raise GenRetError("the server needs an index opened with its encoder")
    limits = limits or Limits()
    service = _Service(index, token, limits)
    app = FastAPI(
        title="genretrieval",
        version=__version__,
        description="Search an index built with generative embeddings (LLM2Vec-Gen).",
    )
    app.state.service = service
    app.add_middleware(_Guard, max_body=limits.max_body, allowed_hosts=allowed_hosts)
    bearer = HTTPBearer(auto_error=False, description=f"The token in {TOKEN_ENV} when the server started.")

    @app.exception_handler(GenRetError)
    async def _library_error(request, exc: GenRetError):
        return _error(400, str(exc))

    @app.exception_handler(RequestValidationError)
    async def _invalid(request, exc: RequestValidationError):
        errors = list(exc.errors())
        status, message = _validation_message(errors)
        detail = [{"loc": list(e.get("loc", ())), "msg": str(e.get("msg")), "type": e.get("type")} for e in errors]
        return _error(status, message, detail=detail)

    @app.exception_handler(HTTPException)
    async def _http_error(request, exc: HTTPException):
        return _error(exc.status_code, str(exc.detail), headers=getattr(exc, "headers", None))

    @app.exception_handler(Exception)
    async def _crash(request, exc: Exception):
        logger.error("error serving %s %s", request.method, request.url.path, exc_info=exc)
        return _error(500, f"internal server error ({type(exc).__name__}); see the server's log")

    def writer(credentials: Annotated[HTTPAuthorizationCredentials | None, Depends(bearer)]) -> None:
        if service.token is None:
            raise HTTPException(403, f"writes are disabled: start the server with {TOKEN_ENV} set to allow them")
        if not service.writes:
            raise HTTPException(403, "writes are disabled: this server opened the index for reading (--read-only)")
        given = credentials.credentials.encode() if credentials else b""
        if not hmac.compare_digest(given, service.token):
            raise HTTPException(
                401,
                "missing or wrong bearer token (Authorization: Bearer $GENRET_API_TOKEN)",
                headers={"WWW-Authenticate": "Bearer"},
            )

    @app.get("/health", summary="Liveness")
    def health() -> dict:
        return {"status": "ok", "index": str(index.path), "writes": service.writes}

    @app.get("/info", summary="The index's manifest and counts (Index.info), and this server's limits")
    def info() -> dict:
        with service.reading() as idx:
            return {**idx.info(), "server": {"writes": service.writes, "limits": asdict(limits)}}

    @app.post("/search", summary="Top-k chunks for one query")
    def search(req: SearchRequest) -> dict:
        _check_queries([req.query])
        service.check_k(req.k)
        with service.reading() as idx:
            (hits,) = idx.search([req.query], k=req.k, where=service.where(req.filter), task=req.task)
        return _hits(req.query, hits)

    @app.post("/search/batch", summary="Top-k chunks for each of several queries")
    def search_batch(req: BatchSearchRequest) -> dict:
        if len(req.queries) > limits.max_batch:
            raise GenRetError(
                f"{len(req.queries)} queries, more than this server's limit of {limits.max_batch} per "
                "request (genret serve --max-batch)"
            )
        _check_queries(req.queries)
        service.check_k(req.k)
        with service.reading() as idx:
            results = idx.search(req.queries, k=req.k, where=service.where(req.filter), task=req.task)
        return {"results": [_hits(q, hits) for q, hits in zip(req.queries, results)]}

    @app.post("/documents", summary="Add or replace documents (needs the bearer token)", dependencies=[Depends(writer)])
    def add_documents(
        body: Annotated[DocumentsIn, Body(description='A list of documents, or {"documents": [...]}')],
    ) -> dict:
        posted = body.root
        if not posted:
            raise GenRetError("no documents given")
        if len(posted) > limits.max_documents:
            raise GenRetError(
                f"{len(posted)} documents, more than this server's limit of {limits.max_documents} "
                "per request (genret serve --max-documents)"
            )
        docs = [_document(d) for d in posted]
        with service.writing() as idx:
            stats = idx.add_documents(docs)
            doc_ids = [d.doc_id for d in docs]
            chunk_ids = idx.store.ids(where={"doc_id": doc_ids}) if idx.count() else []
            total = idx.count()
        by_doc: dict[str, list[str]] = {i: [] for i in doc_ids}
        for cid in chunk_ids:
            by_doc.setdefault(cid.rpartition("::")[0], []).append(cid)
        return {
            "added": stats.added,
            "updated": stats.updated,
            "unchanged": stats.skipped,
            "deleted": stats.deleted,
            "chunks": stats.chunks,
            "total": total,
            "documents": [{"id": i, "chunks": sorted(by_doc[i])} for i in doc_ids],
            "seconds": round(stats.seconds, 3),
        }

    @app.delete(
        "/documents",
        summary="Delete chunks by id, document id, source or filter (needs the bearer token)",
        dependencies=[Depends(writer)],
    )
    def delete_documents(req: DeleteRequest) -> dict:
        where = dict(req.filter or {})
        if req.doc_ids:
            where["doc_id"] = list(req.doc_ids)
        with service.writing() as idx:
            n = idx.delete(ids=req.ids, source=req.source, where=where or None)
            total = idx.count()
        return {"deleted": n, "total": total}

    return app


# ---------------------------------------------------------------------------------------------- running


def is_loopback(host: str) -> bool:
    """Whether ``host`` names this machine only (127.0.0.0/8, ::1, localhost)."""
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        return False


def run(
    path: str | Path,
    *,
    host: str = "127.0.0.1",
    port: int = 8000,
    token: str | None = None,
    read_only: bool = False,
    limits: Limits | None = None,
    url: str | None = None,
    log: Callable[[str], None] = logger.warning,
    log_level: str = "info",
    **encoder_overrides,
) -> None:
    """Open the index at ``path`` and serve it on ``host``:``port`` until interrupted (Ctrl-C, SIGTERM).

    ``token`` (default: ``$GENRET_API_TOKEN``) enables writes: the index is then opened for writing and holds
    its write lock while the server runs, so `genret index` waits its turn; without a token, or with
    ``read_only``, the index is opened for reading and writes are refused. ``encoder_overrides`` (``device``,
    ``dtype``, ``num_threads``...) go to the encoder, loaded once here. ``url``: the Qdrant server of an index
    kept on one.
    """
    from .index import Index

    token = token if token is not None else os.environ.get(TOKEN_ENV) or None
    writable = bool(token) and not read_only
    if not is_loopback(host):
        log(
            f"warning: listening on {host}, beyond this machine: anyone who can reach port {port} can search the "
            "index" + ("; the token travels in clear over plain HTTP, so put a TLS proxy in front" if writable else "")
        )
    if token and len(token) < 16:
        log(
            f"warning: {TOKEN_ENV} is short ({len(token)} characters); use a long random one "
            "(python -c 'import secrets; print(secrets.token_urlsafe(32))')"
        )
    t0 = time.perf_counter()
    index = Index.open(path, url=url, writable=writable, **encoder_overrides)
    try:
        app = create_app(
            index, token=token, limits=limits, allowed_hosts=(*LOOPBACK_HOSTS, host) if is_loopback(host) else None
        )
        writes = (
            "enabled (bearer token)"
            if writable
            else "disabled (--read-only)"
            if token
            else f"disabled (no {TOKEN_ENV})"
        )
        log(
            f"serving index {path} ({index.count()} chunks, loaded in {time.perf_counter() - t0:.1f}s) on "
            f"http://{host}:{port}; writes {writes}"
        )
        config = uvicorn.Config(app, host=host, port=port, log_level=log_level, timeout_graceful_shutdown=10)
        _serve(uvicorn.Server(config))
        log("server stopped")
    finally:
        index.close()


def _interrupt(signum, frame) -> None:
    raise KeyboardInterrupt


def _serve(server: "uvicorn.Server") -> None:
    """Run uvicorn until Ctrl-C or SIGTERM. uvicorn shuts down gracefully on either, then raises the signal
    again; here both become a normal return, so that the caller closes the index (and frees its lock)."""
    main = threading.current_thread() is threading.main_thread()
    previous = signal.signal(signal.SIGTERM, _interrupt) if main else None
    try:
        server.run()
    except KeyboardInterrupt:
        pass
    finally:
        if main:
            signal.signal(signal.SIGTERM, previous)
