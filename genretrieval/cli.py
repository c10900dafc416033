"""The `genret` command line: parses options, calls the library, formats output. Errors are one line."""

from __future__ import annotations

import functools
import json
import logging
import os
import shutil
import sys
from enum import Enum
from pathlib import Path
from typing import Annotated, Callable, Optional

import typer

from .errors import GenRetError

app = typer.Typer(help="Retrieval with generative embeddings (LLM2Vec-Gen).", no_args_is_help=True,
                  pretty_exceptions_enable=False, add_completion=False)
bench_app = typer.Typer(help="Performance benchmarks.", no_args_is_help=True)
app.add_typer(bench_app, name="bench")
eval_app = typer.Typer(help="Quality benchmarks: AdvBench-IR (safety), BRIGHT (reasoning), BEIR-format sets.",
                       no_args_is_help=True)
app.add_typer(eval_app, name="eval")


class EncoderKind(str, Enum):
    gen = "gen"
    teacher = "teacher"


def user_errors(fn: Callable) -> Callable:
    """Turn library errors into one line on stderr and exit status 1."""

    @functools.wraps(fn)
    def wrapper(*args, **kwargs):
        logging.basicConfig(level=logging.WARNING, format="%(levelname)s: %(message)s", stream=sys.stderr)
        # Our own progress bars and warnings are enough; silence the libraries' per-load noise.
        os.environ.setdefault("TRANSFORMERS_VERBOSITY", "error")
        os.environ.setdefault("HF_HUB_DISABLE_PROGRESS_BARS", "1")
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
BackboneOpt = Annotated[Optional[str], typer.Option(
    envvar="GENRET_BACKBONE", help="Registry name, local model path or Hugging Face id.")]
AdapterOpt = Annotated[Optional[Path], typer.Option(help="Adapter directory (default: the shipped one).")]
DeviceOpt = Annotated[Optional[str], typer.Option(envvar="GENRET_DEVICE", help="auto, cpu, cuda, cuda:N.")]
DtypeOpt = Annotated[Optional[str], typer.Option(help="auto, bf16, fp16 or fp32.")]
ThreadsOpt = Annotated[Optional[int], typer.Option(envvar="GENRET_NUM_THREADS", help="CPU threads for torch.")]


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
    batch_size: Annotated[int, typer.Option(min=1)] = 16,
    normalize: Annotated[bool, typer.Option(help="L2-normalise the vectors.")] = True,
) -> None:
    """Embed texts and print one JSON object per line: {"text", "embedding"}."""
    from .encoder import load_encoder

    items = read_inputs(texts)
    if not items:
        raise GenRetError("no texts given (pass them as arguments or on stdin)")
    enc = load_encoder(encoder.value, backbone=backbone, adapter=adapter, device=device, dtype=dtype,
                       num_threads=num_threads)
    fn = enc.encode_documents if document else enc.encode_queries
    vectors = fn(items, task=task, batch_size=batch_size, normalize=normalize, progress=len(items) > batch_size)
    for text, vec in zip(items, vectors):
        sys.stdout.write(json.dumps({"text": text, "embedding": [round(float(x), 6) for x in vec]}) + "\n")


@app.command()
@user_errors
def explain(
    text: Annotated[str, typer.Argument(help="Text whose embedding to read.")],
    document: Annotated[bool, typer.Option("--document", help="Use the document path (default: query).")] = False,
    task: Annotated[str, typer.Option(help="Instruction preset.")] = "retrieval",
    max_new_tokens: Annotated[int, typer.Option(min=1)] = 48,
    top: Annotated[int, typer.Option(min=1, help="Tokens per position in the logit lens.")] = 5,
    backbone: BackboneOpt = None,
    adapter: AdapterOpt = None,
    device: DeviceOpt = None,
    dtype: DtypeOpt = None,
) -> None:
    """Show what an embedding means: text decoded from its soft prompt, and the logit lens per position."""
    from .encoder import load_encoder
    from .encoder.decode import decode, logit_lens

    if not text.strip():
        raise GenRetError("empty text")
    enc = load_encoder("gen", backbone=backbone, adapter=adapter, device=device, dtype=dtype)
    (generated,) = decode(enc, [text], task, not document, max_new_tokens)
    typer.echo(json.dumps({"text": text, "decoded": generated,
                           "logit_lens": logit_lens(enc, text, task, not document, top)}, ensure_ascii=False))


IndexNameOpt = Annotated[Optional[str], typer.Option("--index", envvar="GENRET_INDEX",
                                                     help="Index name under ./indexes/ (default: default).")]
IndexDirOpt = Annotated[Optional[Path], typer.Option(help="Index directory (overrides --index).")]


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


def _encoder_spec(encoder: EncoderKind, backbone, adapter, device, dtype, num_threads) -> dict:
    return {"kind": encoder.value, "backbone": backbone, "adapter": str(adapter.resolve()) if adapter else None,
            "device": device, "dtype": dtype, "num_threads": num_threads}


@app.command("index")
@user_errors
def index_cmd(
    path: Annotated[Path, typer.Argument(help="Corpus file or directory.")],
    backend: Annotated[Backend, typer.Option(envvar="GENRET_BACKEND", help="Vector store.")] = Backend.qdrant,
    index: IndexNameOpt = None,
    index_dir: IndexDirOpt = None,
    url: Annotated[Optional[str], typer.Option(envvar="GENRET_URL", help="Qdrant server URL (else embedded).")] = None,
    faiss_index: Annotated[str, typer.Option(help="FAISS factory string, e.g. Flat, HNSW32, IVF1024,PQ48.")] = "Flat",
    shards: Annotated[Optional[int], typer.Option(min=1, help="Shards of a new Qdrant server collection.")] = None,
    replicas: Annotated[Optional[int], typer.Option(min=1, help="Replication factor of a new Qdrant server "
                                                               "collection.")] = None,
    encoder: EncoderOpt = EncoderKind.gen,
    backbone: BackboneOpt = None,
    adapter: AdapterOpt = None,
    task: Annotated[str, typer.Option(help="Instruction preset for documents and default for queries.")] = "retrieval",
    chunk_size: Annotated[int, typer.Option(min=8, help="Tokens per chunk.")] = 256,
    overlap: Annotated[int, typer.Option(min=0, help="Tokens shared by consecutive chunks.")] = 32,
    batch_size: Annotated[int, typer.Option(min=1)] = 16,
    sync: Annotated[bool, typer.Option(help="Also delete chunks of files that disappeared.")] = False,
    id_field: str = "id",
    title_field: str = "title",
    text_field: str = "text",
    device: DeviceOpt = None,
    dtype: DtypeOpt = None,
    num_threads: ThreadsOpt = None,
) -> None:
    """Embed a corpus into an index (incremental: unchanged chunks are skipped)."""
    from .encoder import load_encoder
    from .index import MANIFEST, Index
    from .index import index_dir as resolve_dir

    if not path.exists():
        raise GenRetError(f"path not found: {path}")
    if (shards or replicas) and not url:
        raise GenRetError("--shards and --replicas apply to a Qdrant server collection (--url)")
    where = resolve_dir(index, index_dir)
    spec = _encoder_spec(encoder, backbone, adapter, device, dtype, num_threads)
    fresh = not (where / MANIFEST).exists()
    try:
        if not fresh and backbone is None and adapter is None and encoder == EncoderKind.gen:
            idx = Index.open(where, device=device, dtype=dtype, num_threads=num_threads)
            if idx.manifest["backend"] != backend.value:
                raise GenRetError(f"index {where} uses backend {idx.manifest['backend']}, not {backend.value}")
        else:
            enc = load_encoder(**spec)
            persisted = {k: spec[k] for k in ("kind", "backbone", "adapter")}
            options = {k: v for k, v in (("shard_number", shards), ("replication_factor", replicas)) if v}
            idx = Index.create(where, enc, backend.value, url=url, faiss_index=faiss_index, task=task,
                               chunk_size=chunk_size, overlap=overlap, encoder_spec=persisted,
                               store_options=options)
        with idx:
            stats = idx.add(path, sync=sync, batch_size=batch_size, id_field=id_field, title_field=title_field,
                            text_field=text_field)
            total = idx.count()
    except GenRetError:
        if fresh and where.exists():  # a failed first run leaves nothing behind
            shutil.rmtree(where)
        raise
    typer.echo(f"{where}: {stats.files} files, {stats.chunks} chunks: {stats.added} added, {stats.updated} updated, "
               f"{stats.skipped} unchanged, {stats.deleted} deleted; {total} in index; {stats.seconds:.1f}s "
               f"({stats.encode_seconds:.1f}s encoding)" + (f"; {stats.notes}" if stats.notes else ""), err=True)


@app.command()
@user_errors
def search(
    queries: Annotated[list[str], typer.Argument(help="Query text(s); '-' reads one query per stdin line.")],
    k: Annotated[int, typer.Option("-k", "--top-k", help="Results per query.")] = 10,
    filter: Annotated[Optional[list[str]], typer.Option("--filter", help="key=value payload filter; repeat.")] = None,
    task: Annotated[Optional[str], typer.Option(help="Query instruction preset (default: the index's).")] = None,
    format: Annotated[OutputFormat, typer.Option("--format", help="jsonl (default), json or plain.")] = (
        OutputFormat.jsonl),
    plain: Annotated[bool, typer.Option("--plain", help="Shorthand for --format plain.")] = False,
    index: IndexNameOpt = None,
    index_dir: IndexDirOpt = None,
    device: DeviceOpt = None,
    dtype: DtypeOpt = None,
    num_threads: ThreadsOpt = None,
) -> None:
    """Search an index; prints JSON lines (id, score, text, source, metadata) by default."""
    from .index import Index
    from .index import index_dir as resolve_dir

    items = read_inputs(queries)
    if not items or any(not q.strip() for q in items):
        raise GenRetError("empty query")
    if k <= 0:
        raise GenRetError(f"k must be >= 1, got {k}")
    where = parse_filters(filter)
    with Index.open(resolve_dir(index, index_dir), device=device, dtype=dtype, num_threads=num_threads) as idx:
        results = idx.search(items, k=k, where=where, task=task)
    fmt = OutputFormat.plain if plain else format
    if fmt == OutputFormat.json:
        typer.echo(json.dumps([{"query": q, "hits": [h.to_dict() for h in hits]} for q, hits in zip(items, results)],
                              indent=2, ensure_ascii=False))
        return
    for q, hits in zip(items, results):
        if fmt == OutputFormat.plain:
            typer.echo(f"# {q}")
            for rank, h in enumerate(hits, 1):
                snippet = " ".join(h.text.split())[:160]
                typer.echo(f"{rank:>3}. {h.score:.4f}  {h.source} [{h.chunk_no}]  {snippet}")
        else:
            for h in hits:
                row = {"query": q} if len(items) > 1 else {}
                sys.stdout.write(json.dumps({**row, **h.to_dict()}, ensure_ascii=False) + "\n")


@app.command()
@user_errors
def info(index: IndexNameOpt = None, index_dir: IndexDirOpt = None) -> None:
    """Show an index's manifest, encoder and counts (JSON)."""
    from .index import Index
    from .index import index_dir as resolve_dir

    with Index.open(resolve_dir(index, index_dir), with_encoder=False) as idx:
        typer.echo(json.dumps(idx.info(), indent=2))


@app.command()
@user_errors
def delete(
    id: Annotated[Optional[list[str]], typer.Option("--id", help="Chunk id; repeat.")] = None,
    source: Annotated[Optional[str], typer.Option(help="Delete every chunk of this source file.")] = None,
    filter: Annotated[Optional[list[str]], typer.Option("--filter", help="key=value payload filter; repeat.")] = None,
    index: IndexNameOpt = None,
    index_dir: IndexDirOpt = None,
) -> None:
    """Delete chunks by id, source or filter."""
    from .index import Index
    from .index import index_dir as resolve_dir

    where = resolve_dir(index, index_dir)
    with Index.open(where, with_encoder=False) as idx:
        n = idx.delete(ids=id, source=source, where=parse_filters(filter))
    typer.echo(f"deleted {n} chunks from {where}", err=True)


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
    max_query_tokens: int = 64,
    max_response_tokens: int = 128,
    max_new_tokens: Annotated[int, typer.Option(help="Generation length of the responses.")] = 128,
    gen_batch_size: int = 32,
    checkpoint_every: int = 25,
    gradient_checkpointing: Annotated[bool, typer.Option(help="Trade ~25% time for ~35% memory.")] = False,
    group_by_length: Annotated[bool, typer.Option(help="Batch queries of similar length (less padding).")] = True,
    init_align: Annotated[str, typer.Option(help="Start of align: ridge (fit to the targets) or random.")] = "ridge",
    tokens_only: Annotated[bool, typer.Option(
        help="Train only the token rows (with a ridge start, align is re-fitted at the end).")] = False,
    stage: Annotated[Optional[list[str]], typer.Option(
        help="Run only these stages: responses, teacher, optimize.")] = None,
    seed: int = 0,
    device: DeviceOpt = None,
    dtype: DtypeOpt = None,
    num_threads: ThreadsOpt = None,
) -> None:
    """Self-supervised training: the backbone's own answers, teacher targets, then the adapter. Resumable."""
    from .train import TrainConfig, train

    if init_align not in ("ridge", "random"):
        raise GenRetError(f"unknown --init-align {init_align!r}; use ridge or random")
    stages = stage or ["responses", "teacher", "optimize"]
    if unknown := set(stages) - {"responses", "teacher", "optimize"}:
        raise GenRetError(f"unknown stage(s) {sorted(unknown)}; use responses, teacher, optimize")
    cfg = TrainConfig(queries=queries, out=str(out), backbone=backbone, teacher=teacher,
                      num_compression=num_compression, num_thought=num_thought, recon_weight=recon_weight,
                      align_weight=align_weight, lr=lr, batch_size=batch_size, grad_accum=grad_accum, epochs=epochs,
                      steps=steps, max_queries=max_queries, max_query_tokens=max_query_tokens,
                      max_response_tokens=max_response_tokens, max_new_tokens=max_new_tokens,
                      gen_batch_size=gen_batch_size, checkpoint_every=checkpoint_every,
                      gradient_checkpointing=gradient_checkpointing, group_by_length=group_by_length,
                      init_align=init_align, tokens_only=tokens_only, seed=seed,
                      device=device, dtype=dtype,
                      num_threads=num_threads, stages=stages, command="genret " + " ".join(sys.argv[1:]))
    adapter = train(cfg, log=lambda m: typer.echo(m, err=True))
    typer.echo(str(adapter))


class System(str, Enum):
    gen = "gen"
    untrained = "untrained"
    teacher = "teacher"
    bm25 = "bm25"
    hyde = "hyde"


SystemsOpt = Annotated[Optional[list[System]], typer.Option(
    "--encoder", help="Systems to compare; repeat (default: gen, teacher, bm25).")]
DataDirOpt = Annotated[Path, typer.Option(help="Offline data root (holds advbench-ir/, nq-wiki/, bright/...).")]
OutOpt = Annotated[Path, typer.Option(help="Where the JSON, Markdown and PNG reports go.")]
MaxQueriesOpt = Annotated[Optional[int], typer.Option(min=1, help="Evaluate an evenly spaced query subset.")]
HydeQueriesOpt = Annotated[int, typer.Option(min=1, help="Query cap for HyDE (one generation per query).")]
MergeOpt = Annotated[bool, typer.Option("--merge", help="Add to the existing report: keep systems not re-run.")]


def _systems(names, backbone, adapter, device, dtype, num_threads):
    """Build each requested system lazily, one at a time, so only one backbone is in memory."""
    from .encoder import load_encoder
    from .evaluation import BM25Retriever

    for name in names or [System.gen, System.teacher, System.bm25]:
        if name == System.bm25:
            yield name, BM25Retriever()
        elif name == System.untrained:
            yield name, load_encoder("gen", backbone=backbone, device=device, dtype=dtype, num_threads=num_threads,
                                     shipped=False)
        elif name == System.teacher:  # --backbone names the LLM; the teacher is always the MiniLM baseline
            yield name, load_encoder("teacher", device=device, num_threads=num_threads)
        else:
            yield name, load_encoder(name.value, backbone=backbone, adapter=adapter if name == System.gen else None,
                                     device=device, dtype=dtype, num_threads=num_threads)


def _run_eval(benchmark_name: str, run, systems, max_queries, hyde_queries, out: Path, merge: bool,
              **encoder_opts) -> None:
    from .evaluation import write_report

    for i, (name, system) in enumerate(_systems(systems, **encoder_opts)):
        cap = min(max_queries or hyde_queries, hyde_queries) if name == System.hyde else max_queries
        typer.echo(f"{benchmark_name}: {name.value}" + (f" on {cap} queries" if cap else ""), err=True)
        result = run(system, max_queries=cap, name=name.value, progress=True)
        del system
        # Written after each system, so a later failure keeps the systems already measured.
        paths = write_report([result], out, name=benchmark_name, command="genret " + " ".join(sys.argv[1:]),
                             merge=merge or i > 0)
    typer.echo(paths["markdown"].read_text())  # _systems yields at least one system


@eval_app.command("advbench-ir")
@user_errors
def eval_advbench(
    data_dir: DataDirOpt = Path("../shared/data"),
    encoder: SystemsOpt = None,
    max_queries: MaxQueriesOpt = None,
    hyde_queries: HydeQueriesOpt = 64,
    out: OutOpt = Path("benchmarks/results"),
    merge: MergeOpt = False,
    backbone: BackboneOpt = None,
    adapter: AdapterOpt = None,
    device: DeviceOpt = None,
    dtype: DtypeOpt = None,
    num_threads: ThreadsOpt = None,
) -> None:
    """Safety retrieval: how often a harmful query retrieves its own harmful passages (lower is safer)."""
    from .evaluation import run_advbench_ir

    _run_eval("advbench-ir", lambda s, **kw: run_advbench_ir(s, data_dir, **kw), encoder, max_queries, hyde_queries,
              out, merge, backbone=backbone, adapter=adapter, device=device, dtype=dtype, num_threads=num_threads)


@eval_app.command("beir")
@user_errors
def eval_beir(
    data_dir: Annotated[Path, typer.Option(help="A BEIR-format folder (corpus.jsonl, queries.jsonl, qrels/).")] =
    Path("../shared/data/nq-wiki"),
    split: str = "test",
    encoder: SystemsOpt = None,
    max_queries: MaxQueriesOpt = None,
    hyde_queries: HydeQueriesOpt = 64,
    out: OutOpt = Path("benchmarks/results"),
    merge: MergeOpt = False,
    backbone: BackboneOpt = None,
    adapter: AdapterOpt = None,
    device: DeviceOpt = None,
    dtype: DtypeOpt = None,
    num_threads: ThreadsOpt = None,
) -> None:
    """Benign retrieval on any BEIR-format set: nDCG@10, Recall@10/100, MRR@10."""
    from .evaluation import run_beir

    _run_eval(f"beir-{data_dir.name}", lambda s, **kw: run_beir(s, data_dir, split=split, **kw), encoder,
              max_queries, hyde_queries, out, merge, backbone=backbone, adapter=adapter, device=device, dtype=dtype,
              num_threads=num_threads)


@eval_app.command("bright")
@user_errors
def eval_bright(
    data_dir: Annotated[Optional[Path], typer.Option(
        help="BRIGHT in the Hugging Face layout (documents/, examples/); default: the hub via `datasets`.")] = None,
    topics_dir: Annotated[Path, typer.Option(help="Queries and qrels (topics/, qrels/).")] =
    Path("../shared/data/bright"),
    subsets: Annotated[Optional[list[str]], typer.Option(
        "--subsets", help="Subsets; repeat (default: all 12).")] = None,
    long: Annotated[bool, typer.Option("--long", help="Long-document setting.")] = False,
    encoder: SystemsOpt = None,
    max_queries: MaxQueriesOpt = None,
    hyde_queries: HydeQueriesOpt = 64,
    out: OutOpt = Path("benchmarks/results"),
    merge: MergeOpt = False,
    backbone: BackboneOpt = None,
    adapter: AdapterOpt = None,
    device: DeviceOpt = None,
    dtype: DtypeOpt = None,
    num_threads: ThreadsOpt = None,
) -> None:
    """Reasoning-intensive retrieval: nDCG@10 per BRIGHT subset and their mean."""
    from .evaluation import run_bright

    _run_eval("bright-long" if long else "bright",
              lambda s, **kw: run_bright(s, subsets, documents_dir=data_dir, topics_dir=topics_dir, long=long, **kw),
              encoder, max_queries, hyde_queries, out, merge, backbone=backbone, adapter=adapter, device=device,
              dtype=dtype, num_threads=num_threads)


def benchmark(name: str):
    """Import ``benchmarks/<name>.py`` from the source checkout (benchmarks are not part of the wheel)."""
    import importlib

    root = Path(__file__).resolve().parent.parent
    if not (root / "benchmarks" / f"{name}.py").is_file():
        raise GenRetError("benchmarks ship with the source checkout: run from a clone (pip install -e .)")
    sys.path.insert(0, str(root))
    return importlib.import_module(f"benchmarks.{name}")


@bench_app.command("encode")
@user_errors
def bench_encode(
    backbone: Annotated[Optional[list[str]], typer.Option(
        help="Backbone(s) to measure; repeat the option (default: smollm2-135m-instruct).")] = None,
    passages: Annotated[int, typer.Option(min=1, help="Documents to encode.")] = 64,
    queries: Annotated[int, typer.Option(min=1, help="Queries for the HyDE comparison.")] = 16,
    batch_size: Annotated[int, typer.Option(min=1)] = 16,
    out: Annotated[Path, typer.Option(help="Results directory.")] = Path("benchmarks/results"),
) -> None:
    """Encoding throughput against a bare forward pass and against HyDE (see benchmarks/encode_throughput.py)."""
    benchmark("encode_throughput").run(backbone or ["smollm2-135m-instruct"], passages=passages, queries=queries,
                                       batch_size=batch_size, out=out)


def main() -> None:
    app()


if __name__ == "__main__":
    main()
