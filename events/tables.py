"""Plain text tables and a progress line for management commands."""

from __future__ import annotations

import sys
from collections.abc import Iterable, Sequence
from typing import Any, TextIO


def render(headers: Sequence[str], rows: Iterable[Sequence[Any]]) -> str:
    """Columns padded to their widest cell; numbers right-aligned."""
    raw_rows = [list(r) for r in rows]
    body = [[("" if c is None else str(c)) for c in row] for row in raw_rows]
    widths = [len(h) for h in headers]
    for row in body:
        widths = [max(w, len(c)) for w, c in zip(widths, row, strict=False)]

    def fmt(cells: Sequence[str], raw: Sequence[Any] | None = None) -> str:
        out = []
        for i, (cell, width) in enumerate(zip(cells, widths, strict=False)):
            numeric = raw is not None and isinstance(raw[i], int | float)
            out.append(cell.rjust(width) if numeric else cell.ljust(width))
        return "  ".join(out).rstrip()

    lines = [fmt(list(headers)), "  ".join("-" * w for w in widths)]
    lines += [fmt(cells, raw) for cells, raw in zip(body, raw_rows, strict=False)]
    return "\n".join(lines)


class Progress:
    """``label  done/total`` rewritten in place on a terminal; silent elsewhere."""

    def __init__(self, label: str, total: int | None, stream: TextIO | None = None) -> None:
        self.label, self.total, self.done = label, total, 0
        self.stream = stream or sys.stderr
        self.live = self.stream.isatty()

    def advance(self, n: int = 1) -> None:
        self.done += n
        if self.live:
            total = f"/{self.total}" if self.total is not None else ""
            self.stream.write(f"\r{self.label}  {self.done}{total}")
            self.stream.flush()

    def close(self) -> None:
        if self.live:
            self.stream.write("\n")
