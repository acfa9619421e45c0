"""How the `orbitos` command line prints: tables (rich), times (ISO-8601 UTC and mission elapsed
time), JSON, and the one-line error.

Tables are `rich` tables: boxed on a terminal, plain columns (no box, no colour, wide enough not
to wrap) when the output is a file or a pipe, so scripts can split them on whitespace. Everything
a command prints as data also has a `--json` form (`print_json`).
"""
from __future__ import annotations

import json
import sys
from datetime import datetime, timezone
from typing import Any, Sequence, TextIO

PLAIN_WIDTH_CHARS = 240  # a table written to a file or pipe is never wrapped below this


def is_terminal(out: TextIO) -> bool:
    isatty = getattr(out, "isatty", None)
    try:
        return bool(isatty and isatty())
    except ValueError:  # a closed stream
        return False


def iso_utc(utc_s: float | None) -> str:
    """UTC POSIX seconds as ISO-8601 with a Z, to the second ('-' for None)."""
    if utc_s is None:
        return "-"
    return datetime.fromtimestamp(float(utc_s), tz=timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ")


def mission_elapsed(utc_s: float | None, epoch_utc_s: float | None) -> str:
    """Mission elapsed time from the epoch: 'T+01:23:45' (days as 'T+2d01:23:45'; '-' if unknown)."""
    if utc_s is None or epoch_utc_s is None:
        return "-"
    seconds = int(round(float(utc_s) - float(epoch_utc_s)))
    sign = "+" if seconds >= 0 else "-"
    seconds = abs(seconds)
    days, rest = divmod(seconds, 86_400)
    clock = f"{rest // 3600:02d}:{rest % 3600 // 60:02d}:{rest % 60:02d}"
    return f"T{sign}{days}d{clock}" if days else f"T{sign}{clock}"


def print_json(data: Any, out: TextIO) -> None:
    json.dump(data, out, default=str)
    out.write("\n")
    out.flush()


def print_table(columns: Sequence[str], rows: Sequence[Sequence[Any]], out: TextIO,
                title: str | None = None, right: Sequence[str] = ()) -> None:
    """A table of `rows` under `columns` (those in `right` right-aligned), with rich."""
    from rich import box
    from rich.console import Console
    from rich.table import Table

    terminal = is_terminal(out)
    console = Console(file=out, force_terminal=terminal, no_color=not terminal, highlight=False,
                      width=None if terminal else PLAIN_WIDTH_CHARS, soft_wrap=False)
    table = Table(box=box.SIMPLE_HEAD if terminal else None, title=title if terminal else None,
                  show_edge=False, pad_edge=False, header_style="bold" if terminal else "")
    for column in columns:
        table.add_column(column, justify="right" if column in right else "left", no_wrap=True)
    for row in rows:
        table.add_row(*("-" if cell is None else str(cell) for cell in row))
    from rich.measure import Measurement

    needed = Measurement.get(console, console.options.update_width(10_000), table).maximum
    if needed > console.width:  # never cut a value short: a narrow terminal wraps the line instead
        console.width = needed
    if title and not terminal:
        console.print(title, markup=False)
    console.print(table)


def error_line(message: str, err: TextIO | None = None) -> None:
    """The one line a failure prints: 'orbitos: error: MESSAGE' on stderr."""
    err = err or sys.stderr
    first = " ".join(str(message).split())  # one line, whatever the message held
    print(f"orbitos: error: {first}", file=err, flush=True)
