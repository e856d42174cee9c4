"""What every command shares: one-line errors, settings, plain-text tables, progress."""

from __future__ import annotations

import os
import sys
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any, NoReturn

import click

from touchpoint.exceptions import TouchpointError
from touchpoint.settings import Settings, load_settings

__all__ = ["Progress", "fail", "one_line_errors", "progress_bar", "settings_or_exit",
           "show_progress", "text_table"]


def fail(message: str, code: int = 1) -> NoReturn:
    """Print ``Error: message`` on stderr and exit with ``code``."""
    click.echo(f"Error: {message}", err=True)
    sys.exit(code)


@contextmanager
def one_line_errors() -> Iterator[None]:
    """Our errors become one ``Error: ...`` line and a non-zero exit, no traceback."""
    try:
        yield
    except TouchpointError as exc:
        fail(str(exc))


def settings_or_exit(**overrides: Any) -> Settings:
    """The settings, with the options given (None: not given); a bad one is an error line."""
    with one_line_errors():
        return load_settings(**{k: v for k, v in overrides.items() if v is not None})


def text_table(columns: tuple[str, ...] | list[str], rows: list[Any]) -> str:
    """Columns and rows as an aligned plain-text table, a rule under the header."""
    cells = [[str(c) for c in columns]] + [["" if v is None else str(v) for v in r] for r in rows]
    widths = [max(len(row[i]) for row in cells) for i in range(len(columns))]
    lines = ["  ".join(c.ljust(w) for c, w in zip(row, widths, strict=True)) for row in cells]
    lines.insert(1, "  ".join("-" * w for w in widths))
    return "\n".join(lines)


class Progress:
    """Events sent, rate, and how far along: a live line on a terminal, else a line every 10 s.

    ``extra`` adds more to the line (the demo shows the worker's figures there).
    """

    def __init__(self, events: int | None, duration: float | None, quiet: bool, *,
                 live: bool, extra: Callable[[], str] | None = None) -> None:
        self.events, self.duration, self.quiet, self.live = events, duration, quiet, live
        self.extra = extra
        self.started = time.monotonic()
        self.last = 0
        self._shown = 0.0

    def __call__(self, sent: int) -> None:
        """Note ``sent`` events so far; show them (not live: at most every 10 s)."""
        self.last = sent
        now = time.monotonic()
        if self.quiet or (not self.live and now - self._shown < 10):
            return
        self._shown = now
        elapsed = max(now - self.started, 1e-6)
        parts = [f"{sent:>9,} events", f"{sent / elapsed:>8,.0f}/s"]
        if self.events:
            parts.append(f"{100 * sent / self.events:5.1f}%")
        elif self.duration:
            parts.append(f"{min(elapsed, self.duration):5.0f}/{self.duration:.0f}s")
        if self.extra is not None:
            parts.append(self.extra())
        line = "  ".join(parts)
        if self.live:
            click.echo("\r" + line + "\x1b[K", nl=False, err=True)
        else:
            click.echo(line, err=True)

    def close(self) -> None:
        """End the live line, so what follows starts on a line of its own."""
        if self.live and not self.quiet:
            click.echo("", err=True)


@contextmanager
def show_progress(events: int | None, duration: float | None, quiet: bool,
                  extra: Callable[[], str] | None = None) -> Iterator[Progress]:
    """A :class:`Progress` for the work ahead, live when stderr is a terminal; closed after."""
    progress = Progress(events, duration, quiet, live=sys.stderr.isatty(), extra=extra)
    try:
        yield progress
    finally:
        progress.close()


@contextmanager
def progress_bar(total: float | None, *, enabled: bool | None, unit: str = "events",
                 unit_scale: bool = False, desc: str | None = None) -> Iterator[Any]:
    """A progress bar on stderr (tqdm: done, rate, ETA), closed after.

    ``enabled`` None shows it on a terminal only (a log file gets no bar); True shows it
    anyway, as a line every 10 s when stderr is not a terminal.
    """
    from tqdm import tqdm

    live = sys.stderr.isatty()
    try:
        size = os.get_terminal_size(sys.stderr.fileno())
    except (AttributeError, OSError, ValueError):  # not a terminal, or no file at all
        size = os.terminal_size((0, 0))
    # A terminal that reports no size (some CI and serial consoles) would get no bar at
    # all from tqdm, which hides bars below the screen's last row: assume 80x24 there.
    shape: dict[str, Any] = ({"dynamic_ncols": True} if size.columns and size.lines else
                             {"nrows": 24, "ncols": 80 if live else None})
    bar = tqdm(total=total, unit=unit, unit_scale=unit_scale, desc=desc, file=sys.stderr,
               disable=not (live if enabled is None else enabled),
               mininterval=0.2 if live else 10.0, smoothing=0.05, **shape)
    try:
        yield bar
    finally:
        bar.close()
