"""Progress on stderr: a live bar on a terminal, a plain line every few seconds otherwise; silent unless enabled."""

from __future__ import annotations

import os
import sys
import threading
import time
from contextlib import contextmanager
from contextvars import ContextVar
from typing import Callable, Iterator, TextIO


def _seconds(value: str | None, default: float) -> float:
    try:
        return float(value) if value and float(value) > 0 else default
    except ValueError:
        return default


# Seconds between plain progress lines when stderr is not a terminal (a log file, a pipe).
LINE_INTERVAL = _seconds(os.environ.get("GENRET_PROGRESS_INTERVAL"), 15.0)

_MIB = 1 << 20
_default_enabled = os.environ.get("GENRET_PROGRESS", "") not in ("", "0")
_active: ContextVar[Progress | None] = ContextVar("genret_progress", default=None)


def set_default(enabled: bool) -> None:
    """Show (True) or hide (False) progress for work whose caller did not choose, such as preparing a backbone.

    The library starts quiet (``GENRET_PROGRESS=1`` turns it on); the ``genret`` command turns it on.
    """
    global _default_enabled
    _default_enabled = bool(enabled)


def default_enabled() -> bool:
    return _default_enabled


def format_duration(seconds: float) -> str:
    """``42s``, ``3m05s``, ``1h02m``."""
    s = int(round(max(0.0, seconds)))
    if s < 60:
        return f"{s}s"
    if s < 3600:
        return f"{s // 60}m{s % 60:02d}s"
    return f"{s // 3600}h{s % 3600 // 60:02d}m"


def format_rate(per_second: float) -> str:
    """``3.1/s`` for fast work, ``12.0s each`` for slow work."""
    return f"{per_second:.1f}/s" if per_second >= 1 else f"{1 / per_second:.1f}s each"


class Progress:
    """The state of one piece of work: ``total`` items (None: unknown), finished and in-flight counts.

    ``advance(n)`` counts ``n`` finished items; ``partial(x)`` says how much of the work in flight is done
    (in items, fractional), so a batch that takes minutes still moves the count; the next ``advance`` clears it.
    Rate and ETA are averages since the start, over the items done since then (``initial`` items, e.g. the
    steps a resumed run already did, count as done but not towards the rate). ``unit="bytes"`` shows MiB.
    """

    def __init__(
        self,
        description: str,
        total: int | None,
        clock: Callable[[], float] = time.monotonic,
        unit: str = "",
        initial: float = 0,
    ):
        self.description = description
        self.total = total
        self.unit = unit
        self.initial = float(initial)
        self.done = float(initial)
        self.pending = 0.0
        self.info = ""
        self.on_change: Callable[[], None] | None = None  # e.g. redraw a bar
        self._clock = clock
        self.start = clock()

    def advance(self, n: float = 1, info: str | None = None) -> None:
        self.done += n
        self.pending = 0.0
        if info is not None:
            self.info = info
        if self.on_change is not None:
            self.on_change()

    def __call__(self, n: float = 1, info: str | None = None) -> None:
        self.advance(n, info)

    def partial(self, n: float) -> None:
        self.pending = max(0.0, float(n))
        if self.on_change is not None:
            self.on_change()

    @property
    def completed(self) -> float:
        c = self.done + self.pending
        return min(c, self.total) if self.total is not None else c

    def elapsed(self) -> float:
        return self._clock() - self.start

    def rate(self) -> float | None:
        """Items per second since the start, or None before the first (partial) item."""
        elapsed, done = self.elapsed(), self.completed - self.initial
        return done / elapsed if elapsed > 0 and done > 0 else None

    def eta(self) -> float | None:
        rate = self.rate()
        return (self.total - self.completed) / rate if rate and self.total is not None else None

    def _amount(self, n: float) -> str:
        return f"{n / _MIB:.0f}" if self.unit == "bytes" else f"{int(n)}"

    def count(self) -> str:
        """``120/500`` (``120`` when the total is unknown; MiB for bytes)."""
        done = self._amount(self.completed)
        if self.total is None:
            return done
        return f"{done}/{self._amount(self.total)}" + (" MiB" if self.unit == "bytes" else "")

    def status(self) -> str:
        """``120/500, 3.1/s, ETA 2m05s, elapsed 40s``: the part after the description."""
        parts = [self.count()] if self.total is not None or self.completed else []
        if (rate := self.rate()) is not None and self.total is not None:
            parts.append(f"{rate / _MIB:.1f} MiB/s" if self.unit == "bytes" else format_rate(rate))
            if (eta := self.eta()) is not None and self.completed < self.total:
                parts.append(f"ETA {format_duration(eta)}")
        parts.append(f"elapsed {format_duration(self.elapsed())}")
        if self.info:
            parts.append(self.info)
        return ", ".join(parts)

    def line(self) -> str:
        return f"{self.description}: {self.status()}"


def active() -> Progress | None:
    """The progress currently shown in this context, if any (work deep inside can report ``partial`` to it)."""
    return _active.get()


def item_counter(own: Progress) -> Callable[[int], None]:
    """For work that counts items inside ``progress_bar(...) as own`` (an encoder's batches): ``count(n)`` after
    each ``n`` items advances ``own`` when it is shown, else reports the items this work has done so far as
    ``partial`` progress to the bar shown by its caller (``active()``, e.g. an index's), else does nothing."""
    bar, done = active(), 0

    def count(n: int) -> None:
        nonlocal done
        done += n
        if bar is own:
            own.advance(n)
        elif bar is not None:
            bar.partial(done)

    return count


def _is_terminal(stream: TextIO) -> bool:
    try:
        return stream.isatty()
    except (AttributeError, ValueError):
        return False


class _LinePrinter:
    """Writes ``progress.line()`` at the start, every ``interval`` seconds from a thread, and at the end."""

    def __init__(self, progress: Progress, stream: TextIO, interval: float):
        self.progress, self.stream, self.interval = progress, stream, interval
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="genret-progress", daemon=True)

    def write(self, text: str) -> None:
        try:
            self.stream.write(text + "\n")
            self.stream.flush()
        except (OSError, ValueError):  # a closed or broken stream must not break the work
            pass

    def _run(self) -> None:
        while not self._stop.wait(self.interval):
            self.write(self.progress.line())

    def __enter__(self):
        self.write(self.progress.line())
        self._thread.start()
        return self

    def __exit__(self, exc_type, *_):
        self._stop.set()
        self._thread.join()
        p = self.progress
        if exc_type is None:
            rate = p.rate()
            tail = ""
            if rate is not None and p.total is not None:
                tail = f" ({rate / _MIB:.1f} MiB/s)" if p.unit == "bytes" else f" ({format_rate(rate)})"
            count = f"{p.count()} " if p.total is not None else ""
            self.write(f"{p.description}: {count}done in {format_duration(p.elapsed())}{tail}")
        else:
            self.write(f"{p.line()} (stopped)")


@contextmanager
def _rich_bar(progress: Progress, stream: TextIO) -> Iterator[Callable[[], None]]:
    from rich.console import Console
    from rich.progress import BarColumn, ProgressColumn, SpinnerColumn, TextColumn
    from rich.progress import Progress as RichProgress
    from rich.text import Text

    class StatusColumn(ProgressColumn):
        def render(self, task) -> Text:
            return Text(progress.status())

    known = progress.total is not None
    columns = (TextColumn("{task.description}"), BarColumn() if known else SpinnerColumn(), StatusColumn())
    # The bar redraws itself a few times a second, so elapsed time moves even while one long batch runs.
    with RichProgress(*columns, console=Console(file=stream), transient=False, refresh_per_second=4) as bar:
        task = bar.add_task(progress.description, total=progress.total)
        yield lambda: bar.update(task, completed=progress.completed)


@contextmanager
def progress_bar(
    description: str,
    total: int | None,
    enabled: bool | None = True,
    *,
    stream: TextIO | None = None,
    interval: float | None = None,
    unit: str = "",
    initial: float = 0,
    clock: Callable[[], float] = time.monotonic,
) -> Iterator[Progress]:
    """Show progress of ``total`` items (None: unknown) on ``stream`` (default stderr); yields a ``Progress``.

    Call it as ``advance(n=1, info=None)``, or ``.partial(n)`` for work in flight. On a terminal: a bar with the
    count, items/s, ETA and elapsed time, redrawn a few times a second. Otherwise one plain line at the start,
    one every ``interval`` seconds (default ``GENRET_PROGRESS_INTERVAL``, 15) and one at the end, e.g.
    ``embedding chunks: 120/500, 3.1/s, ETA 2m05s, elapsed 40s``. ``enabled=False`` shows nothing, ``None``
    follows ``set_default``. A bar opened while another is shown stays silent; work inside either can report
    ``partial`` progress to ``active()``. ``unit="bytes"`` counts bytes and shows MiB; ``initial`` items were
    done before (a resumed run) and do not count towards the rate.
    """
    progress = Progress(description, total, clock, unit, initial)
    outer = _active.get()
    if enabled is None:
        enabled = _default_enabled
    if not enabled or outer is not None:
        yield progress
        return
    stream = stream if stream is not None else sys.stderr
    token = _active.set(progress)
    try:
        if _is_terminal(stream):
            with _rich_bar(progress, stream) as refresh:
                progress.on_change = refresh
                yield progress
        else:
            with _LinePrinter(progress, stream, LINE_INTERVAL if interval is None else interval):
                yield progress
    finally:
        _active.reset(token)
