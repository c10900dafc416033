"""The `genret` command line: parses options, calls the library, formats output. Errors are one line."""

from __future__ import annotations

import functools
import json
import logging
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


class EncoderKind(str, Enum):
    gen = "gen"
    teacher = "teacher"


def user_errors(fn: Callable) -> Callable:
    """Turn library errors into one line on stderr and exit status 1."""

    @functools.wraps(fn)
    def wrapper(*args, **kwargs):
        logging.basicConfig(level=logging.WARNING, format="%(levelname)s: %(message)s", stream=sys.stderr)
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
    stage: Annotated[Optional[list[str]], typer.Option(help="Run only these stages: responses, teacher, optimize.")] = None,
    seed: int = 0,
    device: DeviceOpt = None,
    dtype: DtypeOpt = None,
    num_threads: ThreadsOpt = None,
) -> None:
    """Self-supervised training: the backbone's own answers, teacher targets, then the adapter. Resumable."""
    from .train import TrainConfig, train

    stages = stage or ["responses", "teacher", "optimize"]
    if unknown := set(stages) - {"responses", "teacher", "optimize"}:
        raise GenRetError(f"unknown stage(s) {sorted(unknown)}; use responses, teacher, optimize")
    cfg = TrainConfig(queries=queries, out=str(out), backbone=backbone, teacher=teacher,
                      num_compression=num_compression, num_thought=num_thought, recon_weight=recon_weight,
                      align_weight=align_weight, lr=lr, batch_size=batch_size, grad_accum=grad_accum, epochs=epochs,
                      steps=steps, max_queries=max_queries, max_query_tokens=max_query_tokens,
                      max_response_tokens=max_response_tokens, max_new_tokens=max_new_tokens,
                      gen_batch_size=gen_batch_size, checkpoint_every=checkpoint_every,
                      gradient_checkpointing=gradient_checkpointing, seed=seed, device=device, dtype=dtype,
                      num_threads=num_threads, stages=stages)
    adapter = train(cfg, log=lambda m: typer.echo(m, err=True))
    typer.echo(str(adapter))


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
    backbone: Annotated[list[str], typer.Option(help="Backbone(s) to measure; repeat the option.")] = ["smollm2-135m-instruct"],
    passages: Annotated[int, typer.Option(min=1, help="Documents to encode.")] = 64,
    queries: Annotated[int, typer.Option(min=1, help="Queries for the HyDE comparison.")] = 16,
    batch_size: Annotated[int, typer.Option(min=1)] = 16,
    out: Annotated[Path, typer.Option(help="Results directory.")] = Path("benchmarks/results"),
) -> None:
    """Encoding throughput against a bare forward pass and against HyDE (see benchmarks/encode_throughput.py)."""
    benchmark("encode_throughput").run(backbone, passages=passages, queries=queries, batch_size=batch_size,
                                       out=out)


def main() -> None:
    app()


if __name__ == "__main__":
    main()
