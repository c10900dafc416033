"""Progress: rate and ETA, periodic plain lines when stderr is not a terminal, in-batch progress, quiet default."""

from __future__ import annotations

import io
import time

import numpy as np
import pytest

from genretrieval import progress as prog
from genretrieval.progress import Progress, format_duration, progress_bar


class FakeClock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


class FakeTerminal(io.StringIO):
    def isatty(self) -> bool:
        return True


def test_status_shows_count_rate_eta_and_elapsed():
    clock = FakeClock()
    p = Progress("embedding chunks", 500, clock)
    assert p.line() == "embedding chunks: 0/500, elapsed 0s"
    clock.now += 40
    p.advance(120)
    assert p.line() == "embedding chunks: 120/500, 3.0/s, ETA 2m07s, elapsed 40s"
    clock.now += 200
    p.advance(10, info="loss 0.31")
    assert p.line() == "embedding chunks: 130/500, 1.8s each, ETA 11m23s, elapsed 4m00s, loss 0.31"


def test_partial_progress_moves_the_count_until_the_batch_is_counted():
    clock = FakeClock()
    p = Progress("encoding", 32, clock)
    clock.now += 10
    p.partial(8.5)  # half of a batch of 16 is through the layers
    assert p.completed == 8.5 and p.line().startswith("encoding: 8/32, 1.2s each, ETA 28s, elapsed 10s")
    p.advance(16)
    assert p.completed == 16 and p.pending == 0


def test_unknown_total_and_bytes():
    clock = FakeClock()
    p = Progress("dequantizing", None, clock)
    clock.now += 75
    assert p.line() == "dequantizing: elapsed 1m15s"
    b = Progress("verifying", 100 << 20, clock, unit="bytes")
    clock.now += 2
    b.advance(50 << 20)
    assert b.line() == "verifying: 50/100 MiB, 25.0 MiB/s, ETA 2s, elapsed 2s"


def test_format_duration():
    assert [format_duration(s) for s in (0, 59.4, 61, 3599, 3600, 7325)] == [
        "0s",
        "59s",
        "1m01s",
        "59m59s",
        "1h00m",
        "2h02m",
    ]


def test_plain_lines_at_start_periodically_and_at_the_end_when_not_a_terminal():
    out = io.StringIO()
    with progress_bar("embedding chunks", 4, stream=out, interval=0.05) as advance:
        advance(1)
        time.sleep(0.4)  # one long batch: lines keep coming
        advance(3)
    lines = out.getvalue().splitlines()
    assert lines[0] == "embedding chunks: 0/4, elapsed 0s"
    periodic = lines[1:-1]
    assert len(periodic) >= 3 and all(line.startswith("embedding chunks: 1/4, ") for line in periodic)
    assert "/s" in periodic[-1] or "each" in periodic[-1]
    assert "ETA" in periodic[-1]
    assert lines[-1].startswith("embedding chunks: 4/4 done in ")


def test_a_failure_is_marked_in_the_last_line():
    out = io.StringIO()
    with pytest.raises(KeyboardInterrupt):
        with progress_bar("encoding", 10, stream=out, interval=60) as advance:
            advance(2)
            raise KeyboardInterrupt
    assert out.getvalue().splitlines()[-1].startswith("encoding: 2/10") and "(stopped)" in out.getvalue()


def test_disabled_is_silent_and_the_default_is_quiet(monkeypatch):
    out = io.StringIO()
    with progress_bar("encoding", 3, enabled=False, stream=out) as advance:
        advance(3)
    monkeypatch.setattr(prog, "_default_enabled", False)
    with progress_bar("preparing", None, None, stream=out):
        pass
    assert out.getvalue() == ""
    prog.set_default(True)
    with progress_bar("preparing", None, None, stream=out):
        pass
    assert out.getvalue().startswith("preparing: elapsed 0s\npreparing: done in 0s")


def test_terminal_bar_shows_rate_and_eta():
    out = FakeTerminal()
    with progress_bar("encoding", 4, stream=out) as advance:
        time.sleep(0.05)
        advance(2)
        time.sleep(0.3)
    text = out.getvalue()
    assert "encoding" in text and "2/4" in text and "ETA" in text and "elapsed" in text


def test_a_bar_inside_a_bar_is_silent_and_partial_progress_reaches_the_outer_one():
    out = io.StringIO()
    with progress_bar("embedding chunks", 10, stream=out, interval=60) as outer:
        assert prog.active() is outer
        with progress_bar("encoding", 5, stream=out) as inner:
            inner.advance(5)
            prog.active().partial(2.5)
        assert outer.completed == 2.5
    assert prog.active() is None
    assert "encoding" not in out.getvalue()


def test_encoder_moves_a_callers_bar_within_one_batch(tiny_backbone):
    from genretrieval.encoder import load_encoder

    enc = load_encoder("gen", backbone=tiny_backbone, dtype="fp32", max_length=64)
    texts = ["what is the capital of france", "how to bake bread", "hello", "who make the city"]
    seen = []
    with progress_bar("embedding chunks", len(texts), stream=io.StringIO(), interval=60) as bar:
        partial = bar.partial
        bar.partial = lambda n: (seen.append(n), partial(n))
        enc.encode_documents(texts, batch_size=len(texts))  # one batch through 2 decoder layers
        bar.advance(len(texts))
    assert seen[:2] == [2.0, 4.0] and seen[-1] == 4.0
    assert bar.completed == len(texts)


def test_encoder_own_bar_counts_every_text(tiny_backbone, monkeypatch):
    from genretrieval.encoder import load_encoder

    enc = load_encoder("gen", backbone=tiny_backbone, dtype="fp32", max_length=64)
    out = io.StringIO()
    monkeypatch.setattr("sys.stderr", out)
    monkeypatch.setattr(prog, "LINE_INTERVAL", 60)
    enc.encode_queries(["hello", "how to bake bread", "who make the city"], batch_size=2, progress=True)
    lines = out.getvalue().splitlines()
    assert lines[0] == "encoding: 0/3, elapsed 0s" and lines[-1].startswith("encoding: 3/3 done in")


def test_items_done_before_the_start_do_not_count_towards_the_rate():
    clock = FakeClock()
    p = Progress("training", 100, clock, initial=60)  # a resumed run
    clock.now += 10
    p.advance(5)
    assert p.line() == "training: 65/100, 2.0s each, ETA 1m10s, elapsed 10s"


def test_item_counter_advances_its_own_bar_or_moves_the_callers():
    with progress_bar("encoding", 5, stream=io.StringIO(), interval=60) as own:
        count = prog.item_counter(own)
        count(2)
        count(3)
    assert own.completed == 5
    with progress_bar("embedding chunks", 10, stream=io.StringIO(), interval=60) as outer:
        with progress_bar("encoding", 5, stream=io.StringIO()) as inner:  # silent inside outer
            count = prog.item_counter(inner)
            count(2)
            assert outer.completed == 2
            count(3)
        assert outer.completed == 5 and inner.completed == 0
    with progress_bar("encoding", 5, False) as quiet:
        prog.item_counter(quiet)(5)  # no bar anywhere: nothing to move
    assert quiet.completed == 0


class FakePool:
    """Stands in for the teacher's sentence-transformers model: records the batches it is given."""

    def __init__(self) -> None:
        self.batches: list[list[str]] = []

    def encode(self, texts, batch_size, convert_to_numpy, show_progress_bar, normalize_embeddings):
        assert show_progress_bar is False and len(texts) <= batch_size
        self.batches.append(list(texts))
        return np.array([[len(t), 1.0, 0.0] for t in texts], dtype=np.float32)


def test_teacher_progress_goes_through_our_bars_batch_by_batch(monkeypatch):
    from genretrieval.encoder.teacher import TeacherEncoder

    teacher = TeacherEncoder.__new__(TeacherEncoder)  # no model loaded: sentence-transformers is the fake pool
    teacher._pool, teacher.dim, teacher._report_truncation = FakePool(), 3, lambda texts: None
    texts = ["bb", "a", "dddd", "ccc", "eeeee"]
    out = io.StringIO()
    monkeypatch.setattr("sys.stderr", out)
    monkeypatch.setattr(prog, "LINE_INTERVAL", 60)
    vectors = teacher.encode(texts, batch_size=2, progress=True)
    assert teacher._pool.batches == [["eeeee", "dddd"], ["ccc", "bb"], ["a"]]  # sentence-transformers' own order
    assert vectors[:, 0].tolist() == [2, 1, 4, 3, 5]  # back in the given order
    lines = out.getvalue().splitlines()
    assert lines[0] == "encoding: 0/5, elapsed 0s" and lines[-1].startswith("encoding: 5/5 done in")
    seen = []
    with progress_bar("embedding chunks", len(texts), stream=io.StringIO(), interval=60) as bar:
        partial = bar.partial
        bar.partial = lambda n: (seen.append(n), partial(n))
        teacher.encode_documents(texts, batch_size=2)
    assert seen == [2, 4, 5]
