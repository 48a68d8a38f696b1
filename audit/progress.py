"""Progress that everyone can read: live bars in a terminal, plain lines everywhere else.

In a terminal (stderr is a TTY) a stage shows a live rich bar with counts, rate and ETA. Without one
(CI logs, notebooks, `nohup`) a stage prints one line when it starts, a heartbeat at a bounded rate
(every AUDIT_HEARTBEAT_SECONDS, default 30 s, or at each further 10% of the stage, never more than one
line per sixth of that interval) with counts, rate and ETA, and one line when it ends; a silent CI log
for 40 minutes cannot tell "slow" from "hung". `audit --quiet` and AUDIT_NO_PROGRESS=1 silence all of it.
`announce()` says the size of a long job before it starts.
"""

from __future__ import annotations

import contextlib
import os
import sys
import time
from typing import Callable, Iterator, Optional

DEFAULT_HEARTBEAT_SECONDS = 30.0
#: A heartbeat is also printed when the stage crosses another tenth of its total.
HEARTBEAT_FRACTION = 0.1


def enabled() -> bool:
    """False when silenced by AUDIT_NO_PROGRESS (set by `audit --quiet`)."""
    return os.environ.get("AUDIT_NO_PROGRESS", "") in ("", "0")


def interactive() -> bool:
    """Live bars only when stderr is a terminal (and AUDIT_PROGRESS is not 'lines')."""
    return sys.stderr.isatty() and os.environ.get("AUDIT_PROGRESS", "") != "lines"


def heartbeat_seconds() -> float:
    try:
        value = float(os.environ.get("AUDIT_HEARTBEAT_SECONDS", DEFAULT_HEARTBEAT_SECONDS))
    except ValueError:
        value = DEFAULT_HEARTBEAT_SECONDS
    return value if value > 0 else DEFAULT_HEARTBEAT_SECONDS


def _emit(line: str) -> None:
    print(line, file=sys.stderr, flush=True)


def _clock() -> str:
    return time.strftime("%H:%M:%S")


def duration(seconds: float) -> str:
    """'42s', '3m05s', '1h02m': short enough for a log line."""
    s = int(round(max(0.0, seconds)))
    if s < 60:
        return f"{s}s"
    if s < 3600:
        return f"{s // 60}m{s % 60:02d}s"
    return f"{s // 3600}h{(s % 3600) // 60:02d}m"


def rate_text(rate: float) -> str:
    """'2,730/s' or '21.3/s' (no exponent notation in a log)."""
    return f"{rate:,.0f}/s" if rate >= 100 else f"{rate:.3g}/s"


def announce(message: str) -> None:
    """One stage line (e.g. the size of the job about to start), in a terminal or a log alike."""
    if enabled():
        _emit(f"[{_clock()}] {message}")


class LineProgress:
    """The non-terminal form of a bar: start line, bounded heartbeats, end line."""

    def __init__(self, description: str, total: Optional[int], emit: Callable[[str], None] = _emit,
                 interval: Optional[float] = None, clock: Callable[[], float] = time.monotonic, unit: str = "items"):
        self.description, self.total, self.emit, self.clock, self.unit = description, total, emit, clock, unit
        self.interval = interval if interval is not None else heartbeat_seconds()
        self.done = 0
        self.t0 = self.last = clock()
        self.next_fraction = HEARTBEAT_FRACTION

    def start(self) -> None:
        size = f"{self.total:,} {self.unit}" if self.total is not None else "size unknown"
        self.emit(f"[{_clock()}] {self.description}: started ({size})")

    def _status(self, now: float) -> str:
        elapsed = now - self.t0
        rate = self.done / elapsed if elapsed > 0 else 0.0
        if self.total:
            left = (self.total - self.done) / rate if rate > 0 else None
            eta = f", eta {duration(left)}" if left is not None else ""
            return (f"{self.done:,}/{self.total:,} ({100 * self.done / self.total:.0f}%), {rate_text(rate)}, "
                    f"elapsed {duration(elapsed)}{eta}")
        return f"{self.done:,} done, {rate_text(rate)}, elapsed {duration(elapsed)}"

    def advance(self, n: int = 1) -> None:
        self.done += n
        now = self.clock()
        since = now - self.last
        crossed = bool(self.total) and self.done / self.total >= self.next_fraction
        if since >= self.interval or (crossed and since >= self.interval / 6):
            if self.total and self.done >= self.total:
                return  # the end line follows
            self.emit(f"[{_clock()}] {self.description}: {self._status(now)}")
            self.last = now
        if crossed:
            self.next_fraction = (int(self.done / self.total / HEARTBEAT_FRACTION) + 1) * HEARTBEAT_FRACTION

    def finish(self) -> None:
        now = self.clock()
        rate = self.done / (now - self.t0) if now > self.t0 else 0.0
        self.emit(f"[{_clock()}] {self.description}: done, {self.done:,} {self.unit} in {duration(now - self.t0)} "
                  f"({rate_text(rate)})")


def _rich_bar(description: str, total: Optional[int]):
    from rich.progress import (BarColumn, MofNCompleteColumn, Progress, ProgressColumn, TextColumn,
                               TimeElapsedColumn, TimeRemainingColumn)
    from rich.text import Text

    class RateColumn(ProgressColumn):
        def render(self, task):
            return Text(f"{task.speed:.3g}/s" if task.speed else "?/s")

    return Progress(TextColumn("[bold]{task.description}"), BarColumn(), MofNCompleteColumn(), RateColumn(),
                    TimeElapsedColumn(), TextColumn("eta"), TimeRemainingColumn(), transient=False)


@contextlib.contextmanager
def bar(description: str, total: Optional[int], unit: str = "items") -> Iterator[Callable[..., None]]:
    """Yield an `advance(n=1)` callable for one stage of `total` units (see the module docstring)."""
    if not enabled():
        yield lambda n=1: None
        return
    if interactive():
        with _rich_bar(description, total) as prog:
            task = prog.add_task(description, total=total)
            yield lambda n=1: prog.advance(task, n)
        return
    line = LineProgress(description, total, unit=unit)
    line.start()
    yield line.advance
    line.finish()
