"""The committed summary of a study: one Markdown table writer and one writer of the report files.

Both studies (recovery, timescale) end the same way: a numeric table, formatted column by column
into a Markdown table, inside a page of prose, written as ``reports/<name>.md`` beside the numbers
(``reports/<name>.csv``) and the study's figures (``reports/<name><suffix>.png``).
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pandas as pd

from pipeline import tabular
from pipeline.io import atomic_write_bytes, atomic_write_text


@dataclass(frozen=True)
class Column:
    """One column of a study table: the frame's ``key``, its ``header``, and how a cell is shown:
    ``digits`` decimals for a number (missing -> an en dash), or ``cell(row)`` for anything else;
    with neither, ints get thousands separators and the rest is ``str``. ``text`` columns are
    left-aligned."""

    key: str
    header: str
    digits: int | None = None
    cell: Callable[[pd.Series], str] | None = None
    text: bool = False


def study_markdown(table: pd.DataFrame, columns: Sequence[Column]) -> str:
    """The Markdown table of ``table`` (one row per row, in order) in the given columns."""
    def show(col: Column, row: pd.Series) -> str:
        if col.cell is not None:
            return col.cell(row)
        v: Any = row[col.key]
        if col.digits is not None:
            return tabular.number(None if v is None else float(v), col.digits, missing=tabular.MISSING)
        return tabular.fmt(v)

    cells = pd.DataFrame([[show(c, row) for c in columns] for _, row in table.iterrows()],
                         columns=[c.header for c in columns])
    return tabular.markdown_table(cells, index=False,
                                  text_columns=[c.header for c in columns if c.text]).rstrip("\n")


def write_study_report(report_dir: Path, name: str, lines: Sequence[str], table: pd.DataFrame,
                       figures: Mapping[str, Path]) -> Path:
    """Write ``<report_dir>/<name>.md`` (``lines`` joined), ``<name>.csv`` (``table``) and copy each
    figure to ``<name><suffix>.png`` (``figures``: suffix -> the study's own PNG); returns the .md."""
    report_dir.mkdir(parents=True, exist_ok=True)
    md = report_dir / f"{name}.md"
    atomic_write_text(md, "\n".join(lines))
    atomic_write_text(report_dir / f"{name}.csv", table.to_csv(index=False))
    for suffix, src in figures.items():
        atomic_write_bytes(report_dir / f"{name}{suffix}.png", Path(src).read_bytes())
    return md
