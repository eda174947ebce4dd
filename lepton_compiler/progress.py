"""One progress bar for every long step: calibration, compilation, tuning, benchmarks.

    with progress(total=200, label="calibrating") as bar:
        for sample in samples:
            ...
            bar.update(1, note="sample 3")

It draws on stderr only when stderr is a terminal (or when ``enabled=True``); otherwise it
does nothing, so logs and pipes stay clean. ``LEPTON_PROGRESS=0`` turns every bar off and
``LEPTON_PROGRESS=1`` forces them on. The bar shows the count, a percentage, the elapsed
time, an ETA from the mean step time, and an optional note (e.g. the best figure so far).
"""

from __future__ import annotations

import os
import sys
import time
from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from typing import IO, TypeVar

T = TypeVar("T")
WIDTH = 24


def enabled_by_default(stream: IO[str] | None = None) -> bool:
    """Whether bars draw when not told: ``LEPTON_PROGRESS`` if set, else is-a-terminal."""
    env = os.environ.get("LEPTON_PROGRESS")
    if env is not None:
        return env.strip().lower() not in ("0", "false", "no", "off", "")
    stream = stream or sys.stderr
    return bool(getattr(stream, "isatty", lambda: False)())


def _clock(seconds: float) -> str:
    seconds = round(seconds)
    h, rest = divmod(seconds, 3600)
    m, s = divmod(rest, 60)
    return f"{h}:{m:02d}:{s:02d}" if h else f"{m:02d}:{s:02d}"


class Progress:
    """A progress bar; use :func:`progress` or :func:`track` to make one."""

    def __init__(self, total: int | None, label: str, enabled: bool | None = None,
                 stream: IO[str] | None = None) -> None:
        self.total = total
        self.label = label
        self.stream = stream or sys.stderr
        self.enabled = enabled_by_default(self.stream) if enabled is None else enabled
        self.count = 0
        self.note = ""
        self.start = time.perf_counter()
        self._last_draw = 0.0

    def eta_s(self) -> float | None:
        """Seconds left at the mean step time so far (``None`` while unknown)."""
        if not self.total or not self.count:
            return None
        elapsed = time.perf_counter() - self.start
        return elapsed / self.count * max(self.total - self.count, 0)

    def render(self) -> str:
        """The bar's current line (without the carriage return)."""
        elapsed = _clock(time.perf_counter() - self.start)
        if self.total:
            frac = min(self.count / self.total, 1.0)
            filled = int(frac * WIDTH)
            bar = "#" * filled + "-" * (WIDTH - filled)
            eta = self.eta_s()
            tail = f" eta {_clock(eta)}" if eta is not None and self.count < self.total else ""
            line = (f"{self.label} [{bar}] {self.count}/{self.total} {frac:4.0%} "
                    f"{elapsed}{tail}")
        else:
            line = f"{self.label} {self.count} {elapsed}"
        return f"{line} {self.note}".rstrip()

    def update(self, n: int = 1, note: str | None = None) -> None:
        """Advance by ``n`` steps, optionally replacing the note."""
        self.count += n
        if note is not None:
            self.note = note
        self._draw()

    def _draw(self, final: bool = False) -> None:
        if not self.enabled:
            return
        now = time.perf_counter()
        if not final and now - self._last_draw < 0.1 and self.count != self.total:
            return
        self._last_draw = now
        self.stream.write("\r\x1b[2K" + self.render() + ("\n" if final else ""))
        self.stream.flush()

    def close(self) -> None:
        """Draw the final state and end the line."""
        self._draw(final=True)


@contextmanager
def progress(total: int | None, label: str, enabled: bool | None = None,
             stream: IO[str] | None = None) -> Iterator[Progress]:
    """A progress bar over ``total`` steps (``None``: unknown), closed on exit."""
    bar = Progress(total, label, enabled, stream)
    bar._draw()
    try:
        yield bar
    finally:
        bar.close()


def track(items: Iterable[T], label: str, total: int | None = None,
          enabled: bool | None = None) -> Iterator[T]:
    """Yield ``items`` while showing a bar that advances by one per item."""
    if total is None and hasattr(items, "__len__"):
        total = len(items)  # type: ignore[arg-type]
    with progress(total, label, enabled) as bar:
        for item in items:
            yield item
            bar.update(1)
