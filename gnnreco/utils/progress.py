"""Progress bars for long work (generation, processing, inference), using rich."""

from __future__ import annotations

import sys
from collections.abc import Iterable, Iterator
from typing import TypeVar

T = TypeVar("T")

__all__ = ["progress_iter"]


def progress_iter(items: Iterable[T], total: int | None = None, desc: str = "", enabled: bool = True,
                  unit: str = "events") -> Iterator[T]:
    """Iterate ``items`` with a rich progress bar showing the rate in ``unit``/s.

    The bar is drawn only when ``enabled`` and stderr is a terminal or ``GNNRECO_PROGRESS=1``; in CI
    logs it prints a single summary line instead.
    """
    import os
    import time

    show = enabled and (sys.stderr.isatty() or os.environ.get("GNNRECO_PROGRESS") == "1")
    if not show:
        t0 = time.perf_counter()
        n = 0
        for item in items:
            n += 1
            yield item
        if enabled and n:
            dt = time.perf_counter() - t0
            print(f"{desc}: {n} {unit} in {dt:.1f} s ({n / max(dt, 1e-9):.1f} {unit}/s)", file=sys.stderr)
        return
    from rich.progress import (
        BarColumn,
        MofNCompleteColumn,
        Progress,
        TextColumn,
        TimeElapsedColumn,
        TimeRemainingColumn,
    )

    class _Rate(TextColumn):
        def render(self, task):  # noqa: D401 - rich API
            from rich.text import Text

            speed = task.finished_speed or task.speed
            return Text(f"{speed:.1f} {unit}/s" if speed else f"? {unit}/s")

    with Progress(TextColumn("[bold]{task.description}"), BarColumn(), MofNCompleteColumn(),
                  _Rate(""), TimeElapsedColumn(), TimeRemainingColumn(), transient=False) as prog:
        task = prog.add_task(desc, total=total)
        for item in items:
            yield item
            prog.advance(task)
