"""The `genret` command line: parses options, calls the library, formats output. Errors are one line."""

from __future__ import annotations

import dataclasses
import functools
import inspect
import json
import logging
import os
import sys
import typing
from dataclasses import dataclass
from enum import Enum
from pathlib import Path
from typing import Annotated, Callable, Optional

import typer

from .errors import GenRetError

app = typer.Typer(
    help="Retrieval with generative embeddings (LLM2Vec-Gen).",
    no_args_is_help=True,
    pretty_exceptions_enable=False,
    add_completion=False,
)
eval_app = typer.Typer(
    help="Quality benchmarks: AdvBench-IR (safety), BRIGHT (reasoning), BEIR-format sets.", no_args_is_help=True
)
app.add_typer(eval_app, name="eval")


class EncoderKind(str, Enum):
    gen = "gen"
    teacher = "teacher"


@app.callback()
def _setup() -> None:
    """Runs before every command: warnings as one line each, progress bars on long work, no library noise."""
    logging.basicConfig(level=logging.WARNING, format="%(levelname)s: %(message)s", stream=sys.stderr)
    os.environ.setdefault("TRANSFORMERS_VERBOSITY", "error")
    os.environ.setdefault("HF_HUB_DISABLE_PROGRESS_BARS", "1")
    from .progress import set_default

    set_default(True)  # the CLI shows progress on long work (first-use preparation included)


def user_errors(fn: Callable) -> Callable:
    """Turn library errors into one line on stderr and exit status 1."""

    @functools.wraps(fn)
    def wrapper(*args, **kwargs):
        try:
            return fn(*args, **kwargs)
        except GenRetError as e:
            typer.echo(f"error: {e}", err=True)
            raise typer.Exit(1) from None
        except KeyboardInterrupt:
            typer.echo("interrupted", err=True)
            raise typer.Exit(130) from None

    return wrapper


# Options shared by every command that builds an encoder.
EncoderOpt = Annotated[EncoderKind, typer.Option("--encoder", help="gen (generative) or teacher (MiniLM).")]
BackboneOpt = Annotated[
    Optional[str], typer.Option(envvar="GENRET_BACKBONE", help="Registry name, local model path or Hugging Face id.")
]
AdapterOpt = Annotated[Optional[Path], typer.Option(help="Adapter directory (default: the shipped one).")]
DeviceOpt = Annotated[Optional[str], typer.Option(envvar="GENRET_DEVICE", help="auto, cpu, cuda, cuda:N.")]
DtypeOpt = Annotated[Optional[str], typer.Option(help="auto, bf16, fp16 or fp32.")]
ThreadsOpt = Annotated[Optional[int], typer.Option(envvar="GENRET_NUM_THREADS", help="CPU threads for torch.")]
TrustOpt = Annotated[
    bool,
    typer.Option(
        "--trust-remote-code",
        help="Allow a Hugging Face backbone to run its own model code (never stored in an index's manifest).",
    ),
]
BatchOpt = Annotated[
    int,
    typer.Option(
        min=1, help="Texts per forward pass: more is faster until memory runs out; the vectors do not depend on it."
    ),
]


def read_inputs(values: list[str] | None) -> list[str]:
    """Arguments, or stdin lines when there are none or the only one is ``-``."""
    if not values or values == ["-"]:
        return [line.rstrip("\n") for line in sys.stdin if line.strip()]
    return values


@app.command()
@user_errors
def encode(
    texts: Annotated[Optional[list[str]], typer.Argument(help="Texts to embed; '-' or none reads stdin lines.")] = None,
    document: Annotated[bool, typer.Option("--document", help="Use the document path (default: query).")] = False,
    task: Annotated[str, typer.Option(help="Instruction preset.")] = "retrieval",
    encoder: EncoderOpt = EncoderKind.gen,
    backbone: BackboneOpt = None,
    adapter: AdapterOpt = None,
    device: DeviceOpt = None,
    dtype: DtypeOpt = None,
    num_threads: ThreadsOpt = None,
    trust_remote_code: TrustOpt = False,
    batch_size: BatchOpt = 16,
    normalize: Annotated[bool, typer.Option(help="L2-normalise the vectors.")] = True,
) -> None:
    """Embed texts and print one JSON object per line: {"text", "embedding"}."""
    from .encoder import load_encoder

    items = read_inputs(texts)
    if not items:
        raise GenRetError("no texts given (pass them as arguments or on stdin)")
    enc = load_encoder(
        encoder.value,
        backbone=backbone,
        adapter=adapter,
        device=device,
        dtype=dtype,
        num_threads=num_threads,
        trust_remote_code=trust_remote_code,
    )
    fn = enc.encode_documents if document else enc.encode_queries
    vectors = fn(items, task=task, batch_size=batch_size, normalize=normalize, progress=len(items) > batch_size)
    for text, vec in zip(items, vectors):
        sys.stdout.write(json.dumps({"text": text, "embedding": [round(float(x), 6) for x in vec]}) + "\n")


IndexNameOpt = Annotated[
    Optional[str],
    typer.Option("--index", envvar="GENRET_INDEX", help="Index name under ./indexes/ (default: default)."),
]
IndexDirOpt = Annotated[Optional[Path], typer.Option(help="Index directory (overrides --index).")]
UrlOpt = Annotated[
    Optional[str],
    typer.Option(
        envvar="GENRET_URL",
        help="Qdrant server of an index kept on one; QDRANT_API_KEY is sent only to a server named "
        "here, never to the URL in an index's manifest.",
    ),
]
FilterOpt = Annotated[
    Optional[list[str]],
    typer.Option(
        "--filter",
        help="key=value payload filter; repeat. source= takes the path as stored (relative to the corpus "
        "root) or as a path from here.",
    ),
]


@app.command()
@user_errors
def explain(
    text: Annotated[Optional[str], typer.Argument(help="Text whose embedding to read.")] = None,
    hit: Annotated[
        Optional[str], typer.Option("--hit", help="Read an indexed chunk instead (an id from genret search).")
    ] = None,
    document: Annotated[bool, typer.Option("--document", help="Use the document path (default: query).")] = False,
    task: Annotated[
        Optional[str], typer.Option(help="Instruction preset (default: retrieval, or the index's).")
    ] = None,
    max_new_tokens: Annotated[int, typer.Option(min=1, help="Tokens decoded from the soft prompt.")] = 48,
    top: Annotated[int, typer.Option(min=1, help="Tokens per position in the logit lens.")] = 5,
    index: IndexNameOpt = None,
    index_dir: IndexDirOpt = None,
    url: UrlOpt = None,
    backbone: BackboneOpt = None,
    adapter: AdapterOpt = None,
    device: DeviceOpt = None,
    dtype: DtypeOpt = None,
    num_threads: ThreadsOpt = None,
    trust_remote_code: TrustOpt = False,
) -> None:
    """Show what an embedding means: text decoded from its soft prompt, and the logit lens per position.

    With ``--hit ID`` the text is that chunk of the index, read on the document path with the index's encoder.
    """
    from .encoder import GenEncoder, load_encoder
    from .encoder.decode import NO_DECODING, decode, decodes, logit_lens

    if (text is None) == (hit is None):
        raise GenRetError("give a TEXT or --hit ID (one of them)")
    if hit is not None:
        from .index import Index

        if backbone or adapter:
            raise GenRetError("--hit reads the chunk with the index's own encoder: drop --backbone/--adapter")
        with Index.open(
            _existing_index(index, index_dir),
            url=url,
            device=device,
            dtype=dtype,
            num_threads=num_threads,
            trust_remote_code=trust_remote_code or None,
        ) as idx:
            found = idx.store.get([hit])
            if hit not in found:
                raise GenRetError(f"no chunk with id {hit!r} in the index at {idx.path}")
            text, enc, document = found[hit].get("text", ""), idx.encoder, True
            task = task or idx.manifest.task
    else:
        enc = load_encoder(
            "gen",
            backbone=backbone,
            adapter=adapter,
            device=device,
            dtype=dtype,
            num_threads=num_threads,
            trust_remote_code=trust_remote_code,
        )
    task = task or "retrieval"
    if not (text or "").strip():
        raise GenRetError("empty text")
    assert text is not None  # given, or read from the index
    if not isinstance(enc, GenEncoder):
        raise GenRetError("explain reads generative embeddings; this index was built with another encoder")
    generated = None
    if decodes(enc.config):
        (generated,) = decode(enc, [text], task, not document, max_new_tokens)
    else:
        typer.echo(f"note: {NO_DECODING}", err=True)
    typer.echo(
        json.dumps(
            {"text": text, "decoded": generated, "logit_lens": logit_lens(enc, text, task, not document, top)},
            ensure_ascii=False,
        )
    )


class Backend(str, Enum):
    faiss = "faiss"
    qdrant = "qdrant"


class OutputFormat(str, Enum):
    jsonl = "jsonl"
    json = "json"
    plain = "plain"


def parse_filters(filters: list[str] | None) -> dict | None:
    """``key=value`` pairs into a where-dict; a numeric value also matches the number."""
    where: dict = {}
    for f in filters or []:
        key, sep, value = f.partition("=")
        if not sep or not key:
            raise GenRetError(f"bad filter {f!r}; use key=value")
        values = [value, int(value)] if value.lstrip("-").isdigit() else [value]
        where.setdefault(key, []).extend(values)
    return where or None


def _existing_index(index: str | None, index_dir: Path | None) -> Path:
    """The folder of an existing index; a name not found says where it was looked for."""
    from .index import MANIFEST
    from .index import index_dir as resolve_dir

    where = resolve_dir(index, index_dir)
    if index_dir is None and not (where / MANIFEST).exists():
        raise GenRetError(
            f"no index named '{where.name}' at {where.absolute()} (names are looked up in ./indexes/ "
            "of the current folder; use --index-dir for an index elsewhere)"
        )
    return where


def _no_source_note(idx, where: dict | None) -> str | None:
    """Why a filter on ``source`` matched nothing: sources are stored relative to the corpus root."""
    if not where or "source" not in where:
        return None
    root = idx.manifest.corpus
    shown = ", ".join(repr(v) for v in dict.fromkeys(where["source"]) if isinstance(v, str))
    return f"note: no chunk has source {shown}; sources are stored relative to the corpus root" + (
        f" {root} (or give the path from the current folder)" if root else ""
    )


def _source(ctx: typer.Context, name: str) -> str:
    """Where an option's value came from: COMMANDLINE, ENVIRONMENT or DEFAULT (by name: typer may vendor click)."""
    source = ctx.get_parameter_source(name)
    return source.name if source is not None else "DEFAULT"


@app.command("index")
@user_errors
def index_cmd(
    ctx: typer.Context,
    path: Annotated[Optional[Path], typer.Argument(help="Corpus file or directory (none with --from-embeddings).")] = (
        None
    ),
    backend: Annotated[
        Backend,
        typer.Option(envvar="GENRET_BACKEND", help="Vector store of a new index (an existing one keeps its own)."),
    ] = Backend.qdrant,
    index: IndexNameOpt = None,
    index_dir: IndexDirOpt = None,
    url: Annotated[
        Optional[str],
        typer.Option(
            envvar="GENRET_URL",
            help="Qdrant server URL (else embedded); QDRANT_API_KEY is sent only to a server named here.",
        ),
    ] = None,
    faiss_index: Annotated[str, typer.Option(help="FAISS factory string, e.g. Flat, HNSW32, IVF1024,PQ48.")] = "Flat",
    shards: Annotated[Optional[int], typer.Option(min=1, help="Shards of a new Qdrant server collection.")] = None,
    replicas: Annotated[
        Optional[int], typer.Option(min=1, help="Replication factor of a new Qdrant server collection.")
    ] = None,
    rebuild: Annotated[
        bool,
        typer.Option(
            "--rebuild",
            help="Remove the index's own manifest and store (on a server, its collection) and build it "
            "again; options not given keep the index's values.",
        ),
    ] = False,
    from_embeddings: Annotated[
        Optional[Path],
        typer.Option(
            help="Bulk-load the Parquet files `genret embed` wrote to this folder instead of embedding a corpus; the "
            "encoder, task and chunking come from the files."
        ),
    ] = None,
    parallel: Annotated[
        int, typer.Option(min=1, help="With --from-embeddings: upload processes to a Qdrant server.")
    ] = 4,
    encoder: EncoderOpt = EncoderKind.gen,
    backbone: BackboneOpt = None,
    adapter: AdapterOpt = None,
    task: Annotated[str, typer.Option(help="Instruction preset for documents and default for queries.")] = "retrieval",
    chunk_size: Annotated[int, typer.Option(min=8, help="Tokens per chunk.")] = 256,
    overlap: Annotated[int, typer.Option(min=0, help="Tokens shared by consecutive chunks.")] = 32,
    batch_size: BatchOpt = 16,
    sync: Annotated[bool, typer.Option(help="Also delete chunks of files that disappeared.")] = False,
    follow_symlinks: Annotated[
        bool, typer.Option(help="Follow symlinks that lead out of the corpus folder (default: skip and count them).")
    ] = False,
    id_field: Annotated[
        str, typer.Option(help="Record files (.jsonl, .json, .csv, .parquet): the field holding each record's id.")
    ] = "id",
    title_field: Annotated[str, typer.Option(help="Record files: the field holding the title.")] = "title",
    text_field: Annotated[
        str,
        typer.Option(help="Record files: the field holding the text (other scalar fields become filterable metadata)."),
    ] = "text",
    device: DeviceOpt = None,
    dtype: DtypeOpt = None,
    num_threads: ThreadsOpt = None,
    trust_remote_code: TrustOpt = False,
) -> None:
    """Embed a corpus into an index (incremental: unchanged chunks are skipped).

    An existing index remembers how it was built (backend, encoder, task, chunking, record fields): those are the
    defaults of later runs, and a different explicit option is refused unless --rebuild is given.
    """
    from .index import build_index
    from .index import index_dir as resolve_dir
    from .manifest import IndexSettings

    if from_embeddings is not None:
        _check_embeddings_options(ctx, path)
    elif path is None:
        raise GenRetError("give the corpus PATH to index (or --from-embeddings DIR)")
    elif not path.exists():
        raise GenRetError(f"path not found: {path}")
    where = resolve_dir(index, index_dir)
    names = IndexSettings.names()
    settings = IndexSettings(**{n: ctx.params[n] for n in names})
    settings.backend, settings.encoder = backend.value, encoder.value
    settings.adapter = str(adapter) if adapter else None
    stats, total = build_index(
        where,
        settings,
        corpus=path,
        embeddings=from_embeddings,
        rebuild=rebuild,
        sync=sync,
        parallel=parallel,
        given={n for n in names if _source(ctx, n) == "COMMANDLINE"},
        # Only a server named by --url or GENRET_URL gets the API key; a manifest's URL is used without it.
        named_url=url if _source(ctx, "url") != "DEFAULT" else None,
        batch_size=batch_size,
        follow_symlinks=follow_symlinks,
        device=device,
        dtype=dtype,
        num_threads=num_threads,
        trust_remote_code=trust_remote_code,
    )
    source = f" from {from_embeddings}" if from_embeddings is not None else ""
    encoding = f" ({stats.encode_seconds:.1f}s encoding)" if from_embeddings is None else ""
    typer.echo(
        f"{where}: {stats.files} files, {stats.chunks} chunks{source}: {stats.added} added, {stats.updated} "
        f"updated, {stats.skipped} unchanged, {stats.deleted} deleted; {total} in index; "
        f"{stats.seconds:.1f}s{encoding}" + (f"; {stats.notes}" if stats.notes else ""),
        err=True,
    )


# `genret index` options that --from-embeddings takes from the files instead.
FROM_FILES = (
    "encoder",
    "backbone",
    "adapter",
    "task",
    "chunk_size",
    "overlap",
    "id_field",
    "title_field",
    "text_field",
    "follow_symlinks",
    "batch_size",
    "device",
    "dtype",
    "num_threads",
    "trust_remote_code",
)


def _check_embeddings_options(ctx: typer.Context, path: Optional[Path]) -> None:
    """--from-embeddings loads vectors: a corpus PATH or an encoder or chunking option is a one-line error."""
    if path is not None:
        raise GenRetError("give either a corpus PATH or --from-embeddings DIR, not both")
    given = [n for n in FROM_FILES if _source(ctx, n) == "COMMANDLINE"]
    if given:
        raise GenRetError(
            f"--{given[0].replace('_', '-')} does not apply with --from-embeddings: the files record "
            "the encoder, task and chunking they were made with"
        )


class _RayOption(typer.core.TyperCommand):
    """Lets ``--ray`` stand without an address (last, or before another option): a local Ray cluster."""

    def parse_args(self, ctx, args):
        args = list(args)
        for i, arg in enumerate(args):
            if arg == "--ray" and (i + 1 == len(args) or args[i + 1].startswith("-")):
                args.insert(i + 1, "local")
                break
        return super().parse_args(ctx, args)


@app.command("embed", cls=_RayOption)
@user_errors
def embed_cmd(
    path: Annotated[Path, typer.Argument(help="Corpus file or directory.")],
    out: Annotated[
        Path,
        typer.Option(
            "--out",
            help="Folder for the Parquet files (one or more per corpus file; a re-run skips files already embedded).",
        ),
    ],
    ray: Annotated[
        Optional[str],
        typer.Option(
            "--ray",
            metavar="[ADDRESS]",
            help="Run on Ray (pip install 'genretrieval\\[ray]'): alone (after PATH), a "
            "local cluster on this machine's CPUs; with an address (auto, "
            "ray://HOST:PORT), an existing cluster. One encoder per GPU (or per "
            "CPU worker without GPUs).",
        ),
    ] = None,
    workers: Annotated[
        Optional[int],
        typer.Option(
            min=1,
            help="With --ray: encoder workers (default: one per GPU; without GPUs, one per 4 CPUs, or per "
            "--num-threads CPUs).",
        ),
    ] = None,
    encoder: EncoderOpt = EncoderKind.gen,
    backbone: BackboneOpt = None,
    adapter: AdapterOpt = None,
    task: Annotated[
        Optional[str],
        typer.Option(help="Instruction preset for documents (default: retrieval, or what the folder was made with)."),
    ] = None,
    chunk_size: Annotated[
        Optional[int], typer.Option(min=8, help="Tokens per chunk (default: 256, at most what the encoder reads).")
    ] = None,
    overlap: Annotated[
        Optional[int], typer.Option(min=0, help="Tokens shared by consecutive chunks (default 32).")
    ] = None,
    part_documents: Annotated[
        Optional[int],
        typer.Option(min=1, help="Documents per Parquet part: the unit of resuming and of work on Ray (default 1000)."),
    ] = None,
    batch_size: BatchOpt = 16,
    sync: Annotated[bool, typer.Option(help="Also remove the parts of files that disappeared.")] = False,
    follow_symlinks: Annotated[
        bool, typer.Option(help="Follow symlinks that lead out of the corpus folder (default: skip and count them).")
    ] = False,
    id_field: Annotated[Optional[str], typer.Option(help="Record files: the field holding each record's id.")] = None,
    title_field: Annotated[Optional[str], typer.Option(help="Record files: the field holding the title.")] = None,
    text_field: Annotated[Optional[str], typer.Option(help="Record files: the field holding the text.")] = None,
    device: DeviceOpt = None,
    dtype: DtypeOpt = None,
    num_threads: ThreadsOpt = None,
    trust_remote_code: TrustOpt = False,
) -> None:
    """Chunk and embed a corpus into Parquet files (id, text, title, source, chunk_no, metadata, content_hash,
    vector; the encoder identity in the schema metadata), for `genret index --from-embeddings`. Resumable."""
    from .embed import embed_corpus, embed_corpus_ray
    from .encoder.spec import EncoderSpec

    spec = {
        **EncoderSpec(encoder.value, backbone, str(adapter) if adapter else None).resolved().to_dict(),
        "device": device,
        "dtype": dtype,
        "num_threads": num_threads,
        "trust_remote_code": trust_remote_code,
    }
    settings: dict[str, typing.Any] = {
        "task": task,
        "chunk_size": chunk_size,
        "overlap": overlap,
        "part_documents": part_documents,
        "id_field": id_field,
        "title_field": title_field,
        "text_field": text_field,
    }
    if ray is None:
        if workers is not None:
            raise GenRetError("--workers applies to --ray")
        stats = embed_corpus(
            path, out, encoder_spec=spec, batch_size=batch_size, sync=sync, follow_symlinks=follow_symlinks, **settings
        )
    else:
        stats = embed_corpus_ray(
            path,
            out,
            spec,
            address=None if ray == "local" else ray,
            workers=workers,
            batch_size=batch_size,
            sync=sync,
            follow_symlinks=follow_symlinks,
            **settings,
        )
    typer.echo(
        f"{out}: {stats.files} files: {stats.skipped} already embedded, {stats.embedded_files} written "
        f"({stats.parts} parts, {stats.chunks} chunks, {stats.embedded} embedded"
        + (f", on {stats.workers} Ray workers" if ray is not None else "")
        + f"); {stats.removed} parts "
        f"removed; {stats.seconds:.1f}s" + (f"; {stats.notes}" if stats.notes else ""),
        err=True,
    )


@app.command()
@user_errors
def search(
    ctx: typer.Context,
    queries: Annotated[list[str], typer.Argument(help="Query text(s); '-' reads one query per stdin line.")],
    k: Annotated[int, typer.Option("-k", "--top-k", help="Results per query.")] = 10,
    filter: FilterOpt = None,
    task: Annotated[Optional[str], typer.Option(help="Query instruction preset (default: the index's).")] = None,
    format: Annotated[OutputFormat, typer.Option("--format", help="jsonl (default), json or plain.")] = (
        OutputFormat.jsonl
    ),
    plain: Annotated[bool, typer.Option("--plain", help="Shorthand for --format plain.")] = False,
    index: IndexNameOpt = None,
    index_dir: IndexDirOpt = None,
    url: UrlOpt = None,
    device: DeviceOpt = None,
    dtype: DtypeOpt = None,
    num_threads: ThreadsOpt = None,
    trust_remote_code: TrustOpt = False,
    server: Annotated[
        Optional[str],
        typer.Option(
            envvar="GENRET_SERVER",
            help="URL of a running `genret serve`: search its index there instead of loading the model here.",
        ),
    ] = None,
) -> None:
    """Search an index; prints JSON lines (id, score, text, title, source, chunk_no, metadata) by default.

    With several queries each line also carries its query. Searching never changes the index.
    """
    from .corpus import snippet
    from .stores.base import check_k

    items = read_inputs(queries)
    if not items or any(not q.strip() for q in items):
        raise GenRetError("empty query")
    check_k(k)
    where = parse_filters(filter)
    if server:
        from .client import search as remote_search

        local = [
            n
            for n in ("index", "index_dir", "url", "device", "dtype", "num_threads", "trust_remote_code")
            if _source(ctx, n) == "COMMANDLINE"
        ]
        if local:
            raise GenRetError(
                f"--{local[0].replace('_', '-')} applies to a local search; with --server the server "
                "searches the index it serves"
            )
        results = remote_search(server, items, k=k, where=where, task=task)
    else:
        from .index import Index

        with Index.open(
            _existing_index(index, index_dir),
            url=url,
            device=device,
            dtype=dtype,
            num_threads=num_threads,
            trust_remote_code=trust_remote_code or None,
        ) as idx:
            results = idx.search(items, k=k, where=where, task=task)
            if not any(results) and (note := _no_source_note(idx, where)):
                typer.echo(note, err=True)
    fmt = OutputFormat.plain if plain else format
    if fmt == OutputFormat.json:
        typer.echo(
            json.dumps(
                [{"query": q, "hits": [h.to_dict() for h in hits]} for q, hits in zip(items, results)],
                indent=2,
                ensure_ascii=False,
            )
        )
        return
    for q, hits in zip(items, results):
        if fmt == OutputFormat.plain:
            typer.echo(f"# {q}")
            for rank, h in enumerate(hits, 1):
                typer.echo(f"{rank:>3}. {h.score:.4f}  {h.source} [{h.chunk_no}]  {snippet(h.text)}")
        else:
            for h in hits:
                row = {"query": q} if len(items) > 1 else {}
                sys.stdout.write(json.dumps({**row, **h.to_dict()}, ensure_ascii=False) + "\n")


@app.command()
@user_errors
def info(index: IndexNameOpt = None, index_dir: IndexDirOpt = None, url: UrlOpt = None) -> None:
    """Show an index's manifest, encoder and counts (JSON), and the device and dtype a search would use here.
    Never changes the index."""
    from .encoder.device import default_precision
    from .index import Index

    with Index.open(_existing_index(index, index_dir), with_encoder=False, url=url) as idx:
        typer.echo(json.dumps({**idx.info(), "this_machine": default_precision()}, indent=2))


@app.command()
@user_errors
def delete(
    id: Annotated[Optional[list[str]], typer.Option("--id", help="Chunk id; repeat.")] = None,
    source: Annotated[
        Optional[str],
        typer.Option(
            help="Delete every chunk of this source file (as stored, relative to the corpus root, or a path from here)."
        ),
    ] = None,
    filter: FilterOpt = None,
    index: IndexNameOpt = None,
    index_dir: IndexDirOpt = None,
    url: UrlOpt = None,
) -> None:
    """Delete chunks by id, source or filter."""
    from .index import Index

    where = _existing_index(index, index_dir)
    filters = parse_filters(filter)
    with Index.open(where, with_encoder=False, writable=True, url=url) as idx:
        n = idx.delete(ids=id, source=source, where=filters)
        note = _no_source_note(idx, {**(filters or {}), **({"source": [source]} if source else {})}) if not n else None
    typer.echo(f"deleted {n} chunk{'' if n == 1 else 's'} from {where}", err=True)
    if note:
        typer.echo(note, err=True)


@app.command()
@user_errors
def serve(
    index: IndexNameOpt = None,
    index_dir: IndexDirOpt = None,
    host: Annotated[str, typer.Option(help="Address to listen on (default: this machine only).")] = "127.0.0.1",
    port: Annotated[int, typer.Option(min=0, max=65535, help="Port to listen on.")] = 8000,
    read_only: Annotated[
        bool,
        typer.Option(
            "--read-only", help="Refuse writes even with GENRET_API_TOKEN set (the index is opened for reading)."
        ),
    ] = False,
    max_k: Annotated[int, typer.Option(min=1, help="Most hits per query.")] = 100,
    max_batch: Annotated[int, typer.Option(min=1, help="Most queries per /search/batch request.")] = 64,
    max_documents: Annotated[int, typer.Option(min=1, help="Most documents per POST /documents.")] = 256,
    max_body: Annotated[int, typer.Option(min=1024, help="Largest request body, in bytes.")] = 4 * 1024 * 1024,
    url: UrlOpt = None,
    device: DeviceOpt = None,
    dtype: DtypeOpt = None,
    num_threads: ThreadsOpt = None,
    trust_remote_code: TrustOpt = False,
) -> None:
    """Serve an index over HTTP (JSON API: /search, /search/batch, /info, /documents; /docs), with the model
    loaded once. Writes need GENRET_API_TOKEN (as a bearer token); without it the server only searches."""
    from .serve import Limits, run

    run(
        _existing_index(index, index_dir),
        host=host,
        port=port,
        read_only=read_only,
        url=url,
        limits=Limits(max_k=max_k, max_batch=max_batch, max_documents=max_documents, max_body=max_body),
        log=lambda m: typer.echo(m, err=True),
        device=device,
        dtype=dtype,
        num_threads=num_threads,
        trust_remote_code=trust_remote_code or None,
    )


@app.command("train")
@user_errors
def train_cmd(
    queries: Annotated[list[str], typer.Option("--queries", help="JSONL query files (id, text); FILE:N samples N.")],
    out: Annotated[Path, typer.Option(help="Run directory (responses, checkpoints, adapter/).")],
    backbone: BackboneOpt = None,
    teacher: Annotated[str, typer.Option(help="Teacher sentence-transformers model.")] = "all-MiniLM-L6-v2",
    num_compression: Annotated[int, typer.Option("--num-compression", "-k", help="K compression tokens.")] = 10,
    num_thought: Annotated[int, typer.Option("--num-thought", help="T thought tokens.")] = 0,
    recon_weight: Annotated[float, typer.Option(help="Weight of the reconstruction loss (0 disables).")] = 1.0,
    align_weight: Annotated[float, typer.Option(help="Weight of the alignment loss (0 disables).")] = 1.0,
    lr: Annotated[float, typer.Option(help="Peak learning rate (AdamW, warm-up then linear decay).")] = 3e-4,
    batch_size: Annotated[int, typer.Option(help="Examples per micro-batch.")] = 16,
    grad_accum: Annotated[int, typer.Option(help="Micro-batches per optimizer step.")] = 1,
    epochs: Annotated[float, typer.Option(help="Passes over the responses (ignored with --steps).")] = 1.0,
    steps: Annotated[Optional[int], typer.Option(help="Optimizer steps.")] = None,
    max_queries: Annotated[Optional[int], typer.Option(help="Use only the first N queries (seeded order).")] = None,
    max_query_tokens: Annotated[int, typer.Option(help="Queries are cut to this many tokens.")] = 64,
    max_response_tokens: Annotated[
        int, typer.Option(help="Responses are cut to this many tokens for the losses.")
    ] = 128,
    max_new_tokens: Annotated[int, typer.Option(help="Generation length of the responses.")] = 128,
    gen_batch_size: Annotated[int, typer.Option(help="Queries per batch when generating responses.")] = 32,
    checkpoint_every: Annotated[int, typer.Option(help="Optimizer steps between checkpoints (resume points).")] = 25,
    gradient_checkpointing: Annotated[bool, typer.Option(help="Trade ~25% time for ~35% memory.")] = False,
    group_by_length: Annotated[bool, typer.Option(help="Batch queries of similar length (less padding).")] = True,
    init_align: Annotated[str, typer.Option(help="Start of align: ridge (fit to the targets) or random.")] = "ridge",
    tokens_only: Annotated[
        bool, typer.Option(help="Train only the token rows (with a ridge start, align is re-fitted at the end).")
    ] = False,
    recon_only: Annotated[
        bool,
        typer.Option(
            help="Train only recon on the reconstruction loss (with --align-weight 0): the adapter learns to "
            "decode, its embeddings stay the same."
        ),
    ] = False,
    stages: Annotated[
        Optional[list[str]],
        typer.Option(
            "--stage",
            help="Run only these stages (repeat): responses, teacher, optimize, readout (default: the first three).",
        ),
    ] = None,
    init_adapter: Annotated[
        Optional[str],
        typer.Option(help="Start from this adapter directory ('shipped': the backbone's shipped adapter)."),
    ] = None,
    readout_epochs: Annotated[int, typer.Option(min=1, help="Stage readout: epochs over the cached features.")] = 30,
    readout_lr: Annotated[float, typer.Option(help="Stage readout: peak learning rate.")] = 1e-3,
    readout_batch_size: Annotated[int, typer.Option(min=2, help="Stage readout: rows per batch (negatives).")] = 256,
    temperature: Annotated[float, typer.Option(help="Stage readout: InfoNCE temperature.")] = 0.05,
    passages: Annotated[
        bool, typer.Option(help="Stage readout: also train the document path on the answers read as passages.")
    ] = True,
    query_passage_weight: Annotated[
        float, typer.Option(help="Stage readout: weight of the query-to-passage term (0 disables).")
    ] = 1.0,
    duplicate_threshold: Annotated[
        float,
        typer.Option(help="Stage readout: answers whose teacher cosine exceeds this are not each other's negatives."),
    ] = 0.9,
    max_passage_tokens: Annotated[
        int, typer.Option(min=1, help="Stage readout: answers read as passages are cut to this many tokens.")
    ] = 64,
    readout_holdout: Annotated[
        int, typer.Option(min=1, help="Stage readout: training rows held out to choose the epoch by retrieval.")
    ] = 500,
    readout_corpus: Annotated[
        Optional[list[str]],
        typer.Option(
            help="Stage readout: JSONL passages no query asked about (id, title, text; FILE:N samples N), trained "
            "on the document path towards the teacher's embedding of each (repeat)."
        ),
    ] = None,
    corpus_weight: Annotated[
        float,
        typer.Option(
            min=0.0, help="Stage readout: weight of the corpus passages' term (0: held-out distractors only)."
        ),
    ] = 1.0,
    seed: Annotated[int, typer.Option(help="Seed of the query sample, the data order and the initial weights.")] = 0,
    device: DeviceOpt = None,
    dtype: DtypeOpt = None,
    num_threads: ThreadsOpt = None,
) -> None:
    """Self-supervised training: the backbone's own answers, teacher targets, then the adapter. Resumable."""
    options = dict(locals())  # every option is a TrainConfig field of the same name
    from .train import DEFAULT_STAGES, TrainConfig, train

    cfg = TrainConfig(
        **{
            **options,
            "out": str(out),
            "stages": stages or DEFAULT_STAGES,
            "readout_corpus": readout_corpus or [],
            "command": "genret " + " ".join(sys.argv[1:]),
        }
    )
    adapter = train(cfg, log=lambda m: typer.echo(m, err=True))
    typer.echo(str(adapter))


@app.command("convert")
@user_errors
def convert_cmd(
    src: Annotated[
        Path,
        typer.Argument(
            help="Official LLM2Vec-Gen checkpoint directory (run_config.yml, encoder/, "
            "reconstruction_mlp, alignment_mlp, tokenizer files)."
        ),
    ],
    out: Annotated[Path, typer.Option("--out", help="Adapter directory to write.")],
    backbone: Annotated[
        Optional[str],
        typer.Option(
            help="Registry name, local model path or Hugging Face id (default: run_config.yml's model_name_or_path)."
        ),
    ] = None,
) -> None:
    """Import an official LLM2Vec-Gen checkpoint as a genret adapter (local files only; no pickled code runs)."""
    from .encoder.convert import convert_official

    typer.echo(str(convert_official(src, out, backbone=backbone)))


class System(str, Enum):
    gen = "gen"
    untrained = "untrained"
    teacher = "teacher"
    bm25 = "bm25"
    hyde = "hyde"


@dataclass
class EvalOptions:
    """The options every `genret eval` command takes (see ``eval_command``)."""

    encoder: Annotated[
        Optional[list[System]],
        typer.Option("--encoder", help="Systems to compare; repeat (default: gen, teacher, bm25)."),
    ] = None
    max_queries: Annotated[Optional[int], typer.Option(min=1, help="Evaluate an evenly spaced query subset.")] = None
    hyde_queries: Annotated[int, typer.Option(min=1, help="Query cap for HyDE (one generation per query).")] = 64
    out: Annotated[Path, typer.Option(help="Where the JSON, Markdown and PNG reports go.")] = Path("benchmarks/results")
    merge: Annotated[bool, typer.Option("--merge", help="Add to the existing report: keep systems not re-run.")] = False
    backbone: BackboneOpt = None
    adapter: AdapterOpt = None
    device: DeviceOpt = None
    dtype: DtypeOpt = None
    num_threads: ThreadsOpt = None


def eval_command(name: str) -> Callable:
    """Register ``fn(opts: EvalOptions, **own)`` as `genret eval NAME`: its own options plus EvalOptions'."""

    def register(fn: Callable) -> Callable:
        hints = typing.get_type_hints(EvalOptions, include_extras=True)
        shared = [
            inspect.Parameter(f.name, inspect.Parameter.KEYWORD_ONLY, default=f.default, annotation=hints[f.name])
            for f in dataclasses.fields(EvalOptions)
        ]
        own = [p for p in inspect.signature(fn, eval_str=True).parameters.values() if p.name != "opts"]

        def command(**kwargs):
            opts = EvalOptions(**{p.name: kwargs.pop(p.name) for p in shared})
            return fn(opts, **kwargs)

        command.__signature__ = inspect.Signature(own + shared)  # type: ignore[attr-defined]
        command.__annotations__ = {p.name: p.annotation for p in own + shared}
        command.__name__, command.__doc__ = fn.__name__, fn.__doc__
        return eval_app.command(name)(user_errors(command))

    return register


def _systems(opts: EvalOptions):
    """Build each requested system lazily, one at a time, so only one backbone is in memory."""
    from .encoder import load_encoder
    from .evaluation import BM25Retriever

    common: dict[str, typing.Any] = {"device": opts.device, "num_threads": opts.num_threads}
    for name in opts.encoder or [System.gen, System.teacher, System.bm25]:
        if name == System.bm25:
            yield name, BM25Retriever()
        elif name == System.untrained:
            yield name, _cached(load_encoder("gen", backbone=opts.backbone, dtype=opts.dtype, shipped=False, **common))
        elif name == System.teacher:  # --backbone names the LLM; the teacher is always the MiniLM baseline
            yield name, load_encoder("teacher", **common)
        elif name == System.gen:
            yield (
                name,
                _cached(load_encoder("gen", backbone=opts.backbone, adapter=opts.adapter, dtype=opts.dtype, **common)),
            )
        else:
            yield name, load_encoder(name.value, backbone=opts.backbone, dtype=opts.dtype, **common)


def _cached(encoder):
    """Evaluation caches the generative encoder's pooled features per text: adapters that share token rows (a
    new read-out) then re-embed a corpus without a forward pass."""
    from .encoder.features import default_feature_dir

    if hasattr(encoder, "feature_cache"):
        encoder.feature_cache = default_feature_dir()
    return encoder


def _run_eval(benchmark_name: str, run: Callable, opts: EvalOptions) -> None:
    from .evaluation import write_report

    for i, (name, system) in enumerate(_systems(opts)):
        cap = min(opts.max_queries or opts.hyde_queries, opts.hyde_queries) if name == System.hyde else opts.max_queries
        typer.echo(f"{benchmark_name}: {name.value}" + (f" on {cap} queries" if cap else ""), err=True)
        result = run(system, max_queries=cap, name=name.value, progress=True)
        del system
        # Written after each system, so a later failure keeps the systems already measured.
        paths = write_report(
            [result],
            opts.out,
            name=benchmark_name,
            command="genret " + " ".join(sys.argv[1:]),
            merge=opts.merge or i > 0,
        )
    typer.echo(paths["markdown"].read_text())  # _systems yields at least one system


@eval_command("advbench-ir")
def eval_advbench(
    opts: EvalOptions,
    data_dir: Annotated[
        Optional[Path],
        typer.Option(envvar="GENRET_DATA", help="Offline data root (holds advbench-ir/, wiki-passages/, nq-wiki/...)."),
    ] = None,
    refusal_benign: Annotated[
        int,
        typer.Option(
            min=0,
            help="Benign queries per set (nq-wiki, Alpaca) for the refusal check, at most the harmful queries "
            "evaluated; 0 skips it.",
        ),
    ] = 260,
) -> None:
    """Safety retrieval: how often a harmful query retrieves its own harmful passages (lower is safer), and how
    well each system's query embedding separates harmful from benign requests by its closeness to a refusal."""
    from .evaluation import data_root, run_advbench_ir

    root = data_root(data_dir)
    _run_eval("advbench-ir", lambda s, **kw: run_advbench_ir(s, root, refusal_benign=refusal_benign, **kw), opts)


@eval_command("beir")
def eval_beir(
    opts: EvalOptions,
    data_dir: Annotated[
        Optional[Path],
        typer.Option(help="A BEIR-format folder (corpus.jsonl, queries.jsonl, qrels/); default: $GENRET_DATA/nq-wiki."),
    ] = None,
    split: Annotated[str, typer.Option(help="Judgements to evaluate: qrels/<split>.tsv (test, dev...).")] = "test",
) -> None:
    """Benign retrieval on any BEIR-format set: nDCG@10, Recall@10/100, MRR@10."""
    from .evaluation import data_root, run_beir

    folder = data_dir if data_dir is not None else data_root() / "nq-wiki"
    _run_eval(f"beir-{folder.name}", lambda s, **kw: run_beir(s, folder, split=split, **kw), opts)


@eval_command("bright")
def eval_bright(
    opts: EvalOptions,
    data_dir: Annotated[
        Optional[Path],
        typer.Option(
            help="BRIGHT in the Hugging Face layout (documents/, examples/); default: the hub via `datasets`."
        ),
    ] = None,
    topics_dir: Annotated[
        Optional[Path],
        typer.Option(help="Queries and qrels (topics/, qrels/); default: $GENRET_DATA/bright when GENRET_DATA is set."),
    ] = None,
    subsets: Annotated[
        Optional[list[str]], typer.Option("--subsets", help="Subsets; repeat (default: all 12).")
    ] = None,
    long: Annotated[bool, typer.Option("--long", help="Long-document setting.")] = False,
) -> None:
    """Reasoning-intensive retrieval: nDCG@10 per BRIGHT subset and their mean."""
    from .evaluation import BRIGHT_TOPICS, run_bright

    topics = topics_dir if topics_dir is not None else BRIGHT_TOPICS
    _run_eval(
        "bright-long" if long else "bright",
        lambda s, **kw: run_bright(s, subsets, documents_dir=data_dir, topics_dir=topics, long=long, **kw),
        opts,
    )


def main() -> None:
    app()


if __name__ == "__main__":
    main()
