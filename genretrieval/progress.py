"""Progress bars on stderr (rich), with a known total, silent when disabled or not a terminal."""

from __future__ import annotations

import sys
from contextlib import contextmanager
from typing import Iterator

from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn, TimeRemainingColumn

_console = Console(file=sys.stderr)


@contextmanager
def progress_bar(description: str, total: int, enabled: bool = True) -> Iterator:
    """Yield ``advance(n=1, info=None)``; draws a bar on stderr when ``enabled``; ``info`` is shown after it."""
    if not enabled:
        yield lambda n=1, info=None: None
        return
    columns = (TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn(),
               TimeRemainingColumn(), TextColumn("{task.fields[info]}"))
    with Progress(*columns, console=_console, transient=False) as p:
        task = p.add_task(description, total=total, info="")

        def advance(n: int = 1, info: str | None = None) -> None:
            p.update(task, advance=n, **({"info": info} if info is not None else {}))

        yield advance
