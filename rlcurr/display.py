"""Terminal formatting that `rlcurr inspect` and `rlcurr inspect --compare` share: numbers and tables."""

from __future__ import annotations

from typing import Any


def fmt(x: Any, digits: int = 3) -> str:
    """`x` for a table cell: "-" for None, floats to `digits` decimals."""
    if x is None:
        return "-"
    if isinstance(x, float):
        return f"{x:.{digits}f}"
    return str(x)


def table(title: str, first: str, columns: list[str], show_header: bool = True):
    """A rich Table whose columns (`first`, then `columns`) are right-aligned."""
    from rich.table import Table

    t = Table(title=title, show_header=show_header)
    t.add_column(first, justify="right")
    for col in columns:
        t.add_column(col, justify="right")
    return t
