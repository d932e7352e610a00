"""Table 18 (SSRN, I20/R20) from per-variant metrics: a pure function, then CSV / Markdown / LaTeX.

Layout (METHOD 9): grouped rows "Parameter (baseline) | Variant", columns Loss V, Loss T, Acc V,
Acc T, Spearman, Pearson, SR EW, SR VW. In the Markdown and LaTeX tables every cell reads
"project (paper)"; the CSV and the Parquet file (which the report reads, with the notes in its metadata:
:mod:`pipeline.tabular`) are tidy and numeric, with a ``<metric>_paper`` column beside each metric.
The paper's numbers come from :mod:`pipeline.paper_numbers` (SSRN Table 18, transcribed in METHOD 9).
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any

import pandas as pd

from pipeline.errors import InputError
from pipeline.io import atomic_write_text
from pipeline.paper_numbers import table18_reference
from pipeline.tabular import (NumericTable, beside_paper, latex_escape, latex_table, markdown_table,  # noqa: F401
                              number, write_numeric)


METRICS = ("loss_v", "loss_t", "acc_v", "acc_t", "spearman", "pearson", "sr_ew", "sr_vw")
HEADERS = ("Loss V", "Loss T", "Acc V", "Acc T", "Spearman", "Pearson", "SR EW", "SR VW")
DECIMALS = (3, 3, 3, 3, 3, 3, 2, 2)
PAPER_ENSEMBLE = 5
OTHER_GROUP = "Other"


def variant_metrics(run_summary: Mapping[str, Any], eval_metrics: Mapping[str, Any],
                    where: str = "variant") -> dict[str, float]:
    """One Table-18 row from a run's ``summary.json`` and its evaluation's ``metrics.json``.

    V columns = members' mean best-epoch validation loss / accuracy (``val_loss_mean``,
    ``val_acc_mean``); T columns, correlations and Sharpe ratios = the ensemble on the test set
    (``loss``, ``accuracy``, ``spearman``, ``pearson``, ``sharpe_ew``, ``sharpe_vw``).
    ``members`` = number of ensemble members. A missing key is an error naming it and ``where``.
    """
    def get(d: Mapping[str, Any], key: str, file: str) -> Any:
        if key not in d:
            raise InputError(f"{where}: {file} has no key {key!r}")
        return d[key]

    out = {
        "loss_v": get(run_summary, "val_loss_mean", "summary.json"),
        "acc_v": get(run_summary, "val_acc_mean", "summary.json"),
        "loss_t": get(eval_metrics, "loss", "metrics.json"),
        "acc_t": get(eval_metrics, "accuracy", "metrics.json"),
        "spearman": get(eval_metrics, "spearman", "metrics.json"),
        "pearson": get(eval_metrics, "pearson", "metrics.json"),
        "sr_ew": get(eval_metrics, "sharpe_ew", "metrics.json"),
        "sr_vw": get(eval_metrics, "sharpe_vw", "metrics.json"),
    }
    res: dict[str, float] = {k: (math.nan if v is None else float(v)) for k, v in out.items()}
    res["members"] = len(get(run_summary, "members", "summary.json"))
    return res


def _default_rows() -> list[tuple[str, str, str]]:
    # The registry builds torch models: imported only when the table needs its rows.
    from pipeline.models.registry import TABLE18

    return [(r.group, r.label, r.model) for r in TABLE18]


def build_table18(results: Mapping[str, Mapping[str, float]],
                  rows: Sequence[tuple[str, str, str]] | None = None,
                  paper: Callable[[str], Mapping[str, float] | None] | None = None) -> pd.DataFrame:
    """The tidy Table-18 frame, one row per Table-18 entry in the paper's order.

    Args:
        results: model name -> {loss_v, loss_t, acc_v, acc_t, spearman, pearson, sr_ew, sr_vw,
            members} (see :func:`variant_metrics`); models not run are simply absent.
        rows: (group, variant label, model name) in display order; default the registry's TABLE18
            (first row the baseline). Results for models not in ``rows`` are appended in a group
            "Other" labelled by model name, so nothing that was run is dropped.
        paper: model name -> the paper's metrics or None; default SSRN Table 18.

    Returns:
        DataFrame with columns group, variant, model, finished (bool: the variant has results),
        members (float, NaN if not run),
        then for each metric m in METRICS: m (NaN if not run) and m_paper (NaN if not reported).
    """
    rows = list(_default_rows() if rows is None else rows)
    paper = table18_reference if paper is None else paper
    listed = {m for _, _, m in rows}
    rows += [(OTHER_GROUP, m, m) for m in results if m not in listed]
    records, paper_records = [], []
    for group, label, model in rows:
        r = results.get(model)
        p = paper(model) or {}
        rec: dict[str, Any] = {"group": group, "variant": label, "model": model,
                               "finished": r is not None,
                               "members": float(r["members"]) if r is not None else math.nan}
        for m in METRICS:
            if r is not None and m not in r:
                raise InputError(f"results for {model!r} lack metric {m!r}")
            rec[m] = float(r[m]) if r is not None else math.nan
        records.append(rec)
        paper_records.append({m: float(p[m]) if p.get(m) is not None else math.nan for m in METRICS})
    ours = pd.DataFrame.from_records(records)
    both = beside_paper(ours, pd.DataFrame.from_records(paper_records, columns=list(METRICS)),
                        name="{}_paper", keep_empty=True)
    # Each metric followed by the paper's value of it.
    return both[["group", "variant", "model", "finished", "members",
                 *[c for m in METRICS for c in (m, f"{m}_paper")]]]


def upgrade_frame(frame: pd.DataFrame) -> pd.DataFrame:
    """A Table-18 frame as this version writes it: tables written before the ``finished`` column
    had that name called it ``run`` (a boolean, renamed because ``run`` is a run's name elsewhere)."""
    if "run" in frame.columns and "finished" not in frame.columns:
        return frame.rename(columns={"run": "finished"})
    return frame


def table18_notes(frame: pd.DataFrame, extra: Sequence[str] = ()) -> list[str]:
    """Notes printed under the table: cell format, ensemble sizes if not 5, variants not run."""
    notes = ["Each cell: this project (paper, SSRN Table 18). V = members' mean best-epoch validation "
             "metric; T, correlations and Sharpe ratios = the ensemble on the test set; — = not run or not "
             "computable (e.g. no decile portfolio could be formed)."]
    run = frame[frame["finished"]]
    sizes = sorted({int(m) for m in run["members"]})
    if sizes and sizes != [PAPER_ENSEMBLE]:
        if len(sizes) == 1:
            notes.append(f"Ensembles of {sizes[0]} member{'s' if sizes[0] != 1 else ''} "
                         f"(paper: {PAPER_ENSEMBLE}).")
        else:
            per = ", ".join(f"{m}: {int(k)}" for m, k in zip(run["model"], run["members"]))
            notes.append(f"Ensemble sizes differ between variants ({per}; paper: {PAPER_ENSEMBLE}).")
    missing = frame.loc[~frame["finished"], "model"].tolist()
    if missing:
        notes.append(f"Not run: {', '.join(missing)}.")
    notes.extend(extra)
    return notes


def _cells(rec: pd.Series) -> list[str]:
    out = []
    for m, d in zip(METRICS, DECIMALS):
        ours, theirs = number(rec[m], d, missing="—"), rec[f"{m}_paper"]
        out.append(ours if math.isnan(theirs) else f"{ours} ({theirs:.{d}f})")
    return out


def format_table18(frame: pd.DataFrame) -> tuple[pd.DataFrame, list[int], list[int]]:
    """The paper's layout of a tidy Table-18 frame, as string cells.

    Returns (cells, bold_rows, group_starts): cells has columns "Parameter (baseline)", "Variant"
    and :data:`HEADERS` (each "project (paper)"), the parameter shown on the first row of its group
    only; bold_rows = [0] (the baseline); group_starts = positions of each group's first row.
    """
    rows, starts = [], []
    prev = None
    for j, (_, rec) in enumerate(frame.iterrows()):
        first = rec["group"] != prev
        prev = rec["group"]
        if first:
            starts.append(j)
        rows.append([rec["group"] if first else "", rec["variant"], *_cells(rec)])
    cells = pd.DataFrame(rows, columns=[*TEXT_HEADERS, *HEADERS])
    return cells, [0] if len(cells) else [], starts


TEXT_HEADERS = ("Parameter (baseline)", "Variant")


def to_markdown(frame: pd.DataFrame, notes: Sequence[str] = ()) -> str:
    """GitHub Markdown table in the paper's layout (baseline row in bold), notes below."""
    cells, bold, _ = format_table18(frame)
    text = markdown_table(cells, index=False, bold_rows=bold, text_columns=TEXT_HEADERS)
    if notes:
        text += "\n" + "\n".join(f"- {n}" for n in notes) + "\n"
    return text


def to_latex(frame: pd.DataFrame, notes: Sequence[str] = ()) -> str:
    """A booktabs ``tabular`` in the paper's layout (baseline row in bold), notes as table rows."""
    cells, bold, starts = format_table18(frame)
    return latex_table(cells, index=False, bold_rows=bold, text_columns=TEXT_HEADERS,
                       group_starts=starts, notes=notes)


CAPTION = "Table 18: CNN architecture ablations (I20/R20)"


def write_table18(directory: str | Path, results: Mapping[str, Mapping[str, float]],
                  extra_notes: Sequence[str] = (),
                  rows: Sequence[tuple[str, str, str]] | None = None) -> pd.DataFrame:
    """Write table18.csv and table18.parquet (tidy; the Parquet file carries the notes),
    table18.md and table18.tex into ``directory`` atomically."""
    frame = build_table18(results, rows)
    notes = table18_notes(frame, extra_notes)
    d = Path(directory)
    atomic_write_text(d / "table18.csv", frame.to_csv(index=False))
    atomic_write_text(d / "table18.md", f"# {CAPTION}\n\n" + to_markdown(frame, notes))
    atomic_write_text(d / "table18.tex", to_latex(frame, notes))
    write_numeric(d / "table18.parquet", NumericTable(frame, "table18", CAPTION, notes))
    return frame
