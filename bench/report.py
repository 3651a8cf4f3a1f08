"""What a benchmark section produces: a table (columns, rows), notes and remarks,
and the formatting of its cells.

Section modules (bench/batching.py, bench/cache.py, ...) import from here, and
bench/run.py (the command line and the report writer) imports them; nothing here
imports a section, so imports run one way (tests/test_bench_layering.py checks).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any


@dataclass(frozen=True)
class Column:
    header: str
    key: str
    fmt: Callable[[Any], str] = str


@dataclass
class Section:
    """One table of the report.

    `notes` are failures (a gateway that did not start, say): they make the run exit
    non-zero. `remarks` are information printed under the table (how a figure was
    obtained, a target and whether it was met) and never fail the run; neither does
    a missed target, which is a measurement, not an error.
    """

    key: str
    title: str
    description: str
    columns: list[Column]
    rows: list[dict[str, Any]] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)
    remarks: list[str] = field(default_factory=list)

    @property
    def failed(self) -> bool:
        return bool(self.notes) or any(row.get("error") for row in self.rows)

    def as_dict(self) -> dict[str, Any]:
        return {
            "key": self.key,
            "title": self.title,
            "description": self.description,
            "rows": self.rows,
            "notes": self.notes,
            "remarks": self.remarks,
        }

    def markdown(self) -> str:
        lines = [f"## {self.title}", "", self.description, ""]
        lines.append("| " + " | ".join(c.header for c in self.columns) + " |")
        lines.append("|" + "|".join("---" for _ in self.columns) + "|")
        for row in self.rows:
            cells = [cell(row.get(c.key), c.fmt) for c in self.columns]
            lines.append("| " + " | ".join(cells) + " |")
        lines.extend(f"\n{remark}" for remark in self.remarks)
        lines.extend(f"\n{note}" for note in self.notes)
        return "\n".join(lines) + "\n"


# ---- formatting helpers ---------------------------------------------------------------


def cell(value: Any, fmt: Callable[[Any], str]) -> str:
    """A table cell: '-' for a missing value, pipes escaped."""
    if value is None or value == "":
        return "-"
    return fmt(value).replace("|", "\\|")


def num(decimals: int) -> Callable[[Any], str]:
    """A number with thousands separators and `decimals` decimals."""
    return lambda v: f"{float(v):,.{decimals}f}"


def times(decimals: int = 2) -> Callable[[Any], str]:
    """A ratio, as '5.12x'."""
    return lambda v: f"{float(v):.{decimals}f}x"


def percent(decimals: int = 1) -> Callable[[Any], str]:
    """A signed percentage, as '+3.4%'."""
    return lambda v: f"{float(v):+.{decimals}f}%"


def ratio(numerator: float | None, denominator: float | None) -> float | None:
    """numerator / denominator, or None when either is missing or the denominator is 0."""
    if numerator is None or denominator is None or denominator == 0:
        return None
    return numerator / denominator


def mark(
    value: float | None, *, at_least: float | None = None, at_most: float | None = None
) -> str:
    """'pass' or 'miss' against a bound ('-' when there is no value to judge)."""
    if value is None:
        return ""
    ok = (at_least is None or value >= at_least) and (at_most is None or value <= at_most)
    return "pass" if ok else "miss"


def first_line(exc: BaseException) -> str:
    """An exception's first line, for a table cell (the whole text goes in the JSON)."""
    text = str(exc)
    return text.splitlines()[0] if text else type(exc).__name__
