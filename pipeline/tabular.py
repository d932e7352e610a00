"""Tables as numbers, formatted once: cell formatting, the Markdown and LaTeX writers, the one
LaTeX-escaping rule, and the numeric table files the report and notebooks read.

A stage builds a numeric DataFrame (NaN = not available; a few cells may be text, e.g. a source
name or a date), turns it into string cells with its table's formatter (digits per column kind,
stars, percentages), and writes:

    <base>.parquet   the numeric frame, with kind, caption, notes and formatter options in the
                     Parquet schema metadata (:func:`write_numeric`, :func:`read_numeric`)
    <base>.md/.tex   the string cells through :func:`markdown_table` / :func:`latex_table`

The report reads ``<base>.parquet`` and calls the same formatter: no Markdown is parsed back and
no cell is guessed numeric from its text (a cell is text when its *value* is a string).
"""

from __future__ import annotations

import json
import math
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq

from pipeline.io import atomic_path

TABLE_META = b"pipeline.table"
MISSING = "–"  # how the report shows a value that is not available


# --------------------------------------------------------------------------------------------------
# Cells


def number(v: Any, digits: int, missing: str = "", thousands: bool = False, suffix: str = "") -> str:
    """One numeric cell: ``digits`` decimals, optional thousands separators and a suffix (``"%"``);
    a missing or non-finite value gives ``missing``; a string is returned unchanged."""
    if isinstance(v, str):
        return v
    if v is None:
        return missing
    f = float(v)
    if not math.isfinite(f):
        return missing
    return f"{f:{',' if thousands else ''}.{digits}f}{suffix}"


def fmt(value: Any, digits: int = 3) -> str:
    """A cell of a table the report builds itself: ints with thousands separators, floats with
    ``digits`` decimals (integral floats >= 1000 as ints), NaN/None as an en dash, booleans as
    yes/no, timestamps as dates, anything else as ``str``."""
    if value is None:
        return MISSING
    if isinstance(value, (bool, np.bool_)):
        return "yes" if value else "no"
    if isinstance(value, (int, np.integer)):
        return f"{int(value):,}"
    if isinstance(value, (float, np.floating)):
        v = float(value)
        if math.isnan(v):
            return MISSING
        if math.isinf(v):
            return "∞" if v > 0 else "−∞"
        if v.is_integer() and abs(v) >= 1000:
            return f"{int(v):,}"
        return f"{v:,.{digits}f}"
    if isinstance(value, pd.Timestamp):
        return str(value.date())
    return str(value)


def is_text(value: Any) -> bool:
    """Whether a value is shown as text (left-aligned): anything but a number or a missing value
    (booleans read yes/no, so they count as text)."""
    if value is None:
        return False
    if isinstance(value, (bool, np.bool_)):
        return True
    return not isinstance(value, (int, float, np.integer, np.floating))


def text_mask(num: pd.DataFrame) -> np.ndarray:
    """(rows, columns) bool array: which cells of a numeric table hold text rather than numbers."""
    return np.array([[is_text(v) for v in row] for row in num.itertuples(index=False)],
                    dtype=bool).reshape(num.shape)


# --------------------------------------------------------------------------------------------------
# Writers (one per format)


def markdown_table(cells: pd.DataFrame, index: bool = True, bold_rows: Sequence[int] = (),
                   text_columns: Sequence[str] = ()) -> str:
    """A GitHub Markdown table of string cells (the index, when shown, is the first column).

    Numeric columns are right-aligned (``---:``), the index and ``text_columns`` left; rows at the
    positions ``bold_rows`` are set in bold (empty cells stay empty); ``|`` in a cell is escaped.
    """
    head = ([str(cells.index.name or "")] if index else []) + [str(c) for c in cells.columns]
    align = (["---"] if index else []) + ["---" if c in text_columns else "---:" for c in cells.columns]
    lines = ["| " + " | ".join(head) + " |", "|" + "|".join(align) + "|"]
    for j, (idx, row) in enumerate(zip(cells.index, cells.itertuples(index=False))):
        out = ([str(idx)] if index else []) + ["" if v is None else str(v) for v in row]
        if j in bold_rows:
            out = [f"**{c}**" if c else c for c in out]
        lines.append("| " + " | ".join(c.replace("|", "\\|") for c in out) + " |")
    return "\n".join(lines) + "\n"


_LATEX_ESCAPES = {"\\": r"\textbackslash{}", "&": r"\&", "%": r"\%", "$": r"\$", "#": r"\#",
                  "_": r"\_", "{": r"\{", "}": r"\}", "~": r"\textasciitilde{}",
                  "^": r"\textasciicircum{}", "×": r"$\times$", "—": "---"}


def latex_escape(text: str) -> str:
    """Escape LaTeX special characters (and typeset × and —) in plain text."""
    return "".join(_LATEX_ESCAPES.get(ch, ch) for ch in str(text))


def latex_table(cells: pd.DataFrame, index: bool = True, bold_rows: Sequence[int] = (),
                text_columns: Sequence[str] = (), group_starts: Sequence[int] = (),
                notes: Sequence[str] = ()) -> str:
    """A booktabs ``tabular`` of string cells, every cell escaped with :func:`latex_escape`.

    Rows at ``bold_rows`` are bold; an ``\\addlinespace`` precedes each row in ``group_starts``;
    ``notes`` become full-width footnote rows under the table.
    """
    head = ([str(cells.index.name or "")] if index else []) + [str(c) for c in cells.columns]
    spec = ("l" if index else "") + "".join("l" if c in text_columns else "r" for c in cells.columns)
    lines = [r"\begin{tabular}{" + spec + "}", r"\toprule",
             " & ".join(latex_escape(h) for h in head) + r" \\", r"\midrule"]
    for j, (idx, row) in enumerate(zip(cells.index, cells.itertuples(index=False))):
        if j in group_starts and j > 0:
            lines.append(r"\addlinespace")
        out = [latex_escape(c) for c in ([str(idx)] if index else []) +
               ["" if v is None else str(v) for v in row]]
        if j in bold_rows:
            out = [rf"\textbf{{{c}}}" if c else c for c in out]
        lines.append(" & ".join(out) + r" \\")
    lines.append(r"\bottomrule")
    for n in notes:
        lines.append(rf"\multicolumn{{{len(head)}}}{{p{{0.95\linewidth}}}}{{\footnotesize "
                     rf"{latex_escape(n)}}} \\")
    lines.append(r"\end{tabular}")
    return "\n".join(lines) + "\n"


# --------------------------------------------------------------------------------------------------
# Numeric table files


@dataclass
class NumericTable:
    """A stage's table as numbers: ``frame`` (numeric, NaN = not available; text only where the
    cell is text), ``kind`` (which formatter draws it), its ``caption``, ``notes`` and the
    formatter's ``options``."""

    frame: pd.DataFrame
    kind: str
    caption: str
    notes: list[str] = field(default_factory=list)
    options: dict[str, Any] = field(default_factory=dict)


def write_numeric(path: str | Path, table: NumericTable, transpose: bool = False) -> None:
    """Write ``table`` as Parquet (index kept) with its kind, caption, notes and options in the schema
    metadata, atomically. ``transpose`` stores ``frame.T`` (for tables whose *rows* are the typed
    fields, e.g. a date row beside number rows); :func:`read_numeric` turns it back."""
    frame = table.frame.T.infer_objects() if transpose else table.frame
    arrow = pa.Table.from_pandas(frame, preserve_index=True)
    meta = {"kind": table.kind, "caption": table.caption, "notes": list(table.notes),
            "options": table.options, "transposed": transpose,
            "index_name": table.frame.index.name, "columns_name": table.frame.columns.name}
    arrow = arrow.replace_schema_metadata({**(arrow.schema.metadata or {}),
                                           TABLE_META: json.dumps(meta).encode()})
    with atomic_path(path) as tmp:
        pq.write_table(arrow, tmp)


def read_numeric(path: str | Path) -> NumericTable:
    """A table written by :func:`write_numeric` (``ValueError`` naming the file if it lacks the
    metadata)."""
    arrow = pq.read_table(path)
    raw = (arrow.schema.metadata or {}).get(TABLE_META)
    if raw is None:
        raise ValueError(f"{path}: not a pipeline table (no {TABLE_META.decode()} metadata)")
    meta = json.loads(raw)
    frame = arrow.to_pandas()
    if meta.get("transposed"):
        frame = frame.T
    frame.index.name, frame.columns.name = meta.get("index_name"), meta.get("columns_name")
    return NumericTable(frame=frame, kind=meta["kind"], caption=meta["caption"],
                        notes=list(meta.get("notes") or []), options=dict(meta.get("options") or {}))


def read_csv_numeric(path: str | Path, kind: str) -> NumericTable:
    """An older stage table that has only its CSV (numbers, then ``# caption`` and ``# note``
    lines): cells that read as numbers become floats, the rest stay text."""
    path = Path(path)
    comments = [ln[1:].strip() for ln in path.read_text().splitlines() if ln.startswith("#")]
    frame = pd.read_csv(path, comment="#", index_col=0)

    def value(v: Any) -> Any:
        try:
            return float(v)
        except (TypeError, ValueError):
            return v

    frame = frame.astype(object).map(value)
    return NumericTable(frame=frame, kind=kind, caption=comments[0] if comments else path.stem,
                        notes=comments[1:])


def beside_paper(ours: pd.DataFrame, paper: pd.DataFrame, name: str = "Paper {}",
                 keep_empty: bool = False) -> pd.DataFrame:
    """The paper's numbers joined beside ours, the one place tables merge them.

    ``paper`` has the same index as ``ours`` (missing rows are NaN) and its columns are renamed
    with ``name`` (``"Paper {}"`` -> ``Paper EW ret``; ``"{}_paper"`` -> ``sr_ew_paper``); columns
    the paper fills nowhere are dropped unless ``keep_empty``.
    """
    paper = paper.reindex(ours.index)
    if not keep_empty:
        paper = paper.loc[:, [c for c in paper.columns if paper[c].notna().any()
                              and not (paper[c].astype(str) == "").all()]]
    return pd.concat([ours, paper.rename(columns=lambda c: name.format(c))], axis=1)
