"""The report's content blocks: what a section holds and the template (templates/report.html.j2)
knows how to draw.

A :class:`Section` holds a list of blocks, each a dict with a ``kind``:

    text, note, subhead   a paragraph, a small-print paragraph, a sub-heading (``text``)
    list                  bullet points (``items``)
    kv                    a two-column key/value table (``caption``, ``items``)
    table                 a data table (``caption``, ``columns``, ``rows``, ``note``, ``wide``):
                          :func:`table_block` (a frame of values) or :func:`stage_table_block`
                          (a stage's numeric table, formatted by the stage's own formatter)
    figure                an embedded PNG (``src`` data URI, ``caption``, ``alt``, ``wide``, ``tall``)
    not_run               the stage and make command that would produce the missing artifacts

Cell text is formatted here, once (:mod:`pipeline.tabular`); the template only escapes and lays it
out. A cell is left-aligned when its value is text, right-aligned when it is a number.
"""

from __future__ import annotations

import base64
import io
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import matplotlib
import numpy as np
import pandas as pd
from matplotlib.axes import Axes

from pipeline.tabular import NumericTable, fmt, text_mask

FIGURE_DPI = 150
WIDE_COLUMNS = 8  # a table with more columns (row label included) gets the compact wide style


@dataclass
class Section:
    """One report section: ``status`` is "ok", "partial" or "not run"; ``blocks`` as above."""

    id: str
    title: str
    status: str = "ok"
    blocks: list[dict] = field(default_factory=list)

    def not_run(self, stage: str, target: str, config_ref: str, what: str) -> Section:
        """Mark the section "not run", with the make command that produces ``what``; returns it."""
        self.status = "not run"
        self.blocks.append(not_run(stage, target, config_ref, what))
        return self


def text(s: str) -> dict:
    return {"kind": "text", "text": s}


def note(s: str) -> dict:
    return {"kind": "note", "text": s}


def subhead(s: str) -> dict:
    return {"kind": "subhead", "text": s}


def bullets(items: list[str]) -> dict:
    return {"kind": "list", "items": items}


def kv(items: list[tuple[str, Any]], caption: str | None = None) -> dict:
    return {"kind": "kv", "caption": caption, "items": [(k, fmt(v)) for k, v in items]}


def cells_block(cells: pd.DataFrame, text_cells: np.ndarray, caption: str, index: bool = True,
                labels: list[str] | None = None, note_text: str | None = None,
                strong: Sequence[bool] = ()) -> dict:
    """A table block from string ``cells`` (rows x columns) and the mask of cells holding text."""
    labels = labels if labels is not None else [str(i) for i in cells.index]
    rows = []
    for j, r in enumerate(cells.itertuples(index=False)):
        rows.append({"label": labels[j] if index else None, "cells": list(r),
                     "text_cells": [int(k) for k in np.flatnonzero(text_cells[j])],
                     "strong": bool(strong[j]) if j < len(strong) else False})
    cols = [str(c) for c in cells.columns]
    return {"kind": "table", "caption": caption, "columns": cols,
            "wide": len(cols) + index > WIDE_COLUMNS,
            "index_name": (str(cells.index.name) if cells.index.name is not None else "") if index else None,
            "rows": rows, "note": note_text}


def table_block(df: pd.DataFrame, caption: str, index: bool = True, note_text: str | None = None,
                digits: int = 3, highlight_rows: tuple[str, ...] = ()) -> dict:
    """A frame of values (numbers, text) as a table block; cells formatted with :func:`fmt`."""
    cells = df.map(lambda v: fmt(v, digits)) if len(df.columns) else df
    # Row labels are identifiers (years, member ids): no thousands separators.
    labels = [str(i) if isinstance(i, (int, np.integer)) else fmt(i) for i in df.index]
    first = [str(r[0]) if len(r) else "" for r in cells.itertuples(index=False)]
    strong = [lab in highlight_rows or (not index and f in highlight_rows) for lab, f in zip(labels, first)]
    return cells_block(cells, text_mask(df), caption, index, labels, note_text, strong)


def stage_table_block(t: NumericTable, cells: pd.DataFrame, caption: str | None = None,
                      highlight: tuple[str, ...] = (), notes: bool = True,
                      bold_rows: Sequence[int] = (), columns: list[str] | None = None,
                      index: bool = True) -> dict:
    """A stage's numeric table ``t`` shown with its formatted ``cells`` (the stage's formatter),
    its caption and, if ``notes``, its notes; ``columns`` picks a subset (a split wide table)."""
    num, shown = t.frame, cells
    if columns is not None:
        num, shown = num[columns], cells[columns]
    labels = [str(i) for i in shown.index]
    strong = [lab in highlight or j in bold_rows for j, lab in enumerate(labels)]
    return cells_block(shown, text_mask(num), caption or t.caption, index, labels,
                       (" ".join(t.notes) or None) if notes else None, strong)


def split_columns(columns: Sequence[str], max_columns: int = WIDE_COLUMNS) -> list[tuple[str, list[str]]]:
    """Split a wide table's columns into narrower groups by the first word of their names.

    Columns whose capitalised first word is shared by several (``EW ...``, ``VW ...``,
    ``Paper ...``) form one group each, in first-seen order; the others (counts such as ``n rows``,
    ``n dates``) go with the first group. At most ``max_columns`` columns give ``[("", columns)]``.
    """
    columns = [str(c) for c in columns]
    if len(columns) <= max_columns:
        return [("", columns)]
    words = [c.split(" ")[0] for c in columns]
    shared = [w for w in dict.fromkeys(words) if words.count(w) > 1 and not w.islower()]
    if len(shared) < 2:
        return [("", columns)]
    loose = [c for c, w in zip(columns, words) if w not in shared]
    return [(w, (loose if j == 0 else []) + [c for c, cw in zip(columns, words) if cw == w])
            for j, w in enumerate(shared)]


def png_data_uri(data: bytes) -> str:
    return "data:image/png;base64," + base64.b64encode(data).decode("ascii")


def figure_to_png(fig: matplotlib.figure.Figure, dpi: int = FIGURE_DPI) -> bytes:
    """Render a Figure (object API: nothing to close) to PNG bytes."""
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=dpi, bbox_inches="tight", facecolor="white")
    return buf.getvalue()


def figure_block(source: Path | matplotlib.figure.Figure | Axes, caption: str, alt: str,
                 wide: bool = True, tall: bool = False) -> dict:
    """An embedded PNG: an artifact file (bytes unchanged) or a plot of pipeline.evaluate.plots
    (a Figure, or the Axes an axes-level plot returned)."""
    if isinstance(source, Axes):
        source = source.figure
    data = source.read_bytes() if isinstance(source, Path) else figure_to_png(source)
    if not data.startswith(b"\x89PNG\r\n\x1a\n"):
        raise ValueError(f"{source}: not a PNG file")
    # ``tall`` figures (image grids) keep their full height; others are capped to a reading size.
    return {"kind": "figure", "src": png_data_uri(data), "caption": caption, "alt": alt, "wide": wide,
            "tall": tall}


def not_run(stage: str, target: str, config_ref: str, what: str) -> dict:
    return {"kind": "not_run", "stage": stage, "what": what,
            "command": f"make {target} CONFIG={config_ref}",
            "report_command": f"make report CONFIG={config_ref}"}
