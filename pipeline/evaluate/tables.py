"""Paper-style tables: decile portfolios, the benchmark comparison and the other evaluation tables.

Each table is built as a numeric DataFrame (NaN = not available) by a ``*_table`` function and
turned into string cells (digits per column kind, significance stars, percentages) by its
``format_*`` function; :data:`FORMATTERS` names them by table kind so the report formats the
numeric Parquet file exactly as the Markdown was. :func:`write` writes ``<base>.parquet``
(numbers, caption, notes: :mod:`pipeline.tabular`), ``.csv`` (numbers, then ``# `` caption and
note lines, read back with ``pd.read_csv(path, comment='#')``), ``.md`` and ``.tex``. The
conventions note of :func:`pipeline.evaluate.conventions.conventions_text` goes under every
table. The paper's numbers (:mod:`pipeline.paper_numbers`) are put beside ours in columns
prefixed ``Paper`` (:func:`pipeline.tabular.beside_paper`).
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from pipeline.evaluate.conventions import (DECILES, HL, decile_label, stars, weighting_short)
from pipeline.io import atomic_write_text
from pipeline.paper_numbers import SOURCES, DecileReference, HLReference
from pipeline.tabular import (NumericTable, beside_paper, latex_escape, latex_table, markdown_table,
                              number, text_mask, write_numeric)

DECILE_ROW_LABELS = [decile_label(d) for d in DECILES] + [HL, f"{HL} t-stat", f"{HL} Newey-West t",
                                                            "Turnover (%)"]


def _get(perf: pd.DataFrame, weighting: str, decile: str, col: str) -> float:
    try:
        return float(perf.loc[(weighting, decile), col])
    except KeyError:
        return float("nan")


def decile_table(perf: pd.DataFrame, turnover_pct: dict[str, float], mktcap_is_proxy: bool,
                 weights: tuple[str, ...] | list[str] = ("ew", "vw"),
                 paper: DecileReference | None = None, paper_hl: HLReference | None = None
                 ) -> pd.DataFrame:
    """Numeric decile table: rows Low, 2..9, High, H-L, H-L t-stat, H-L Newey-West t, Turnover (%).

    Args:
        perf: from :func:`pipeline.evaluate.portfolios.performance`, index (weighting, decile str).
        turnover_pct: weighting -> H-L turnover, % per month.
        paper, paper_hl: the paper's numbers for this strategy/horizon/universe, if any.
    Returns:
        DataFrame indexed by row label; columns '{EW|VW|DVW} ret' (annualised, decimal), '... SR'
        for each weighting, then 'Paper ...' columns where the paper reports something. The
        turnover row holds turnover in the 'ret' columns; the two t-stat rows in the 'ret' columns.
    """
    cols: dict[str, list[float]] = {}
    for w in weights:
        p = weighting_short(w, mktcap_is_proxy)
        ret = [_get(perf, w, str(d), "ann_ret") for d in DECILES] + [_get(perf, w, HL, "ann_ret")]
        sr = [_get(perf, w, str(d), "sharpe") for d in DECILES] + [_get(perf, w, HL, "sharpe")]
        ret += [_get(perf, w, HL, "t_stat"), _get(perf, w, HL, "t_nw"), turnover_pct.get(w, float("nan"))]
        sr += [float("nan"), float("nan"), float("nan")]
        cols[f"{p} ret"] = ret
        cols[f"{p} SR"] = sr
    ours = pd.DataFrame(cols, index=pd.Index(DECILE_ROW_LABELS, name="decile"))
    if paper is None and paper_hl is None:
        return ours
    ref: dict[str, list[float]] = {}
    for w in ("ew", "vw"):
        p = w.upper()
        ret = list(getattr(paper, f"{w}_ret")) if paper else [None] * 10 + [getattr(paper_hl, f"{w}_ret")]
        sr = list(getattr(paper, f"{w}_sr")) if paper else [None] * 10 + [getattr(paper_hl, f"{w}_sr")]
        to = getattr(paper, f"turnover_{w}") if paper else None
        if to is None and paper_hl is not None:
            to = getattr(paper_hl, f"turnover_{w}")
        ref[f"{p} ret"] = [np.nan if v is None else float(v) for v in ret + [None, None, to]]
        ref[f"{p} SR"] = [np.nan if v is None else float(v) for v in sr + [None, None, None]]
    return beside_paper(ours, pd.DataFrame(ref, index=ours.index))


def format_decile_table(num: pd.DataFrame, paper_hl_stars: str = "") -> pd.DataFrame:
    """Strings for Markdown/LaTeX: returns 3 decimals, SR 2, H-L return with stars, turnover in %."""
    out = pd.DataFrame(index=num.index, columns=num.columns, dtype=object)
    tstat_row = f"{HL} t-stat"
    for c in num.columns:
        for r in num.index:
            v = num.at[r, c]
            if r == "Turnover (%)":
                s = number(v, 0, suffix="%")
            elif r in (tstat_row, f"{HL} Newey-West t"):
                s = number(v, 2)
            elif c.endswith("SR"):
                s = number(v, 2)
            else:
                s = number(v, 3)
                if r == HL and s:
                    if c.startswith("Paper"):
                        s += paper_hl_stars if c == "Paper EW ret" else ""
                    else:
                        s += stars(num.at[tstat_row, c])
            out.at[r, c] = s
    return out


def benchmark_table(rows: list[dict], mktcap_is_proxy: bool,
                    weights: tuple[str, ...] | list[str] = ("ew", "vw")) -> pd.DataFrame:
    """Numeric benchmark comparison of H-L portfolios, one row per strategy (CNN first).

    Args:
        rows: one dict per strategy with keys strategy, n_rows, n_dates and, for each weighting w,
            '{w}_ret', '{w}_t', '{w}_sr', '{w}_turnover' (annualised decimal, t-stat, SR, % per
            month); optional 'sr_diff_t_{w}' (t of the CNN's Sharpe minus this one, one-sided) and
            'paper' (an HLReference or None).
    Returns:
        DataFrame indexed by strategy.
    """
    out, paper = [], []
    for r in rows:
        d = {"strategy": r["strategy"], "n rows": r["n_rows"], "n dates": r["n_dates"]}
        for w in weights:
            p = weighting_short(w, mktcap_is_proxy)
            d[f"{p} H-L ret"] = r.get(f"{w}_ret", np.nan)
            d[f"{p} H-L t"] = r.get(f"{w}_t", np.nan)
            d[f"{p} SR"] = r.get(f"{w}_sr", np.nan)
            d[f"{p} turnover (%)"] = r.get(f"{w}_turnover", np.nan)
            d[f"{p} SR diff t (CNN - this)"] = r.get(f"sr_diff_t_{w}", np.nan)
        out.append(d)
        ref: HLReference | None = r.get("paper")
        paper.append({name: (np.nan if ref is None or getattr(ref, key) is None else float(getattr(ref, key)))
                      for key, name in (("ew_ret", "EW H-L ret"), ("ew_sr", "EW SR"),
                                        ("vw_ret", "VW H-L ret"), ("vw_sr", "VW SR"),
                                        ("turnover_ew", "EW turnover (%)"))}
                     | {"source": "" if ref is None else f"{ref.source} ({ref.split.upper()})"})
    ours = pd.DataFrame(out).set_index("strategy")
    # Paper columns nobody fills are dropped, so the table stays readable.
    return beside_paper(ours, pd.DataFrame(paper, index=ours.index))


def format_benchmark_table(num: pd.DataFrame) -> pd.DataFrame:
    out = pd.DataFrame(index=num.index, columns=num.columns, dtype=object)
    for c in num.columns:
        for r in num.index:
            v = num.at[r, c]
            if isinstance(v, str):
                s = v
            elif c.startswith("n "):
                s = number(v, 0, thousands=True)
            elif "turnover" in c:
                s = number(v, 0, suffix="%")
            elif c.endswith("ret"):
                s = number(v, 3)
                tcol = c.replace("ret", "t")
                if s and tcol in num.columns and not c.startswith("Paper"):
                    s += stars(num.at[r, tcol])
            elif "SR diff t" in c:
                s = number(v, 2)
                if s:
                    s += stars(v, one_sided=True)
            else:
                s = number(v, 2)
            out.at[r, c] = s
    return out


def by_year_table(by_year: pd.DataFrame, mktcap_is_proxy: bool,
                  weights: tuple[str, ...] | list[str] = ("ew", "vw")) -> pd.DataFrame:
    """Numeric per-year H-L table.

    Args:
        by_year: from :func:`pipeline.evaluate.hl_analysis.by_year_performance`, index
            (weighting, year).
    Returns:
        DataFrame indexed by year (int, sorted); for each weighting (prefix EW/VW/DVW) the columns
        '{p} ret' (annualised mean, decimal), '{p} SR', '{p} t', '{p} NW t' and '{p} n' (periods).
    """
    years = sorted({int(y) for _, y in by_year.index}) if len(by_year) else []
    cols: dict[str, list[float]] = {}
    for w in weights:
        p = weighting_short(w, mktcap_is_proxy)
        for col, name in (("ann_ret", "ret"), ("sharpe", "SR"), ("t_stat", "t"), ("t_nw", "NW t"),
                          ("n_periods", "n")):
            cols[f"{p} {name}"] = [_get(by_year, w, y, col) for y in years]
    return pd.DataFrame(cols, index=pd.Index(years, name="year"))


def format_by_year_table(num: pd.DataFrame) -> pd.DataFrame:
    """Strings: returns 3 decimals with stars from the plain t, SR and t 2 decimals, n an integer."""
    out = pd.DataFrame(index=num.index, columns=num.columns, dtype=object)
    for c in num.columns:
        for r in num.index:
            v = num.at[r, c]
            if c.endswith(" n"):
                s = number(v, 0)
            elif c.endswith(" ret"):
                s = number(v, 3)
                if s:
                    s += stars(num.at[r, c[:-len("ret")] + "t"])
            else:
                s = number(v, 2)
            out.at[r, c] = s
    return out


NET_ROW_LABELS = {
    "long_ret": "Long leg (High) ret", "long_sr": "Long leg (High) SR",
    "short_ret": "Short leg (Low) ret", "short_sr": "Short leg (Low) SR",
    "gross_ann_ret": "H-L ret, gross", "gross_sharpe": "H-L SR, gross",
    "mean_turnover": "Turnover charged per rebalance (fraction)", "cost_bps": "Cost per side (bp)",
    "cost_ann": "Cost, annualised", "net_ann_ret": "H-L ret, net", "net_sharpe": "H-L SR, net",
    "net_t": "H-L net t-stat", "net_t_nw": "H-L net Newey-West t",
    "break_even_bps": "Break-even cost (bp per side)", "n_periods": "Periods",
    "max_drawdown": "Max drawdown (summed)", "peak_date": "Drawdown peak",
    "trough_date": "Drawdown trough",
}


def net_of_cost_table(net: dict[str, dict], legs: dict[str, dict], drawdown: dict[str, dict],
                      mktcap_is_proxy: bool,
                      weights: tuple[str, ...] | list[str] = ("ew", "vw")) -> pd.DataFrame:
    """The H-L portfolio in one table: its legs, gross and net-of-cost figures, the break-even cost
    and the maximum drawdown.

    Args:
        net, legs, drawdown: weighting -> :func:`hl_analysis.net_of_cost_summary`,
            :func:`hl_analysis.leg_summary`, :func:`hl_analysis.max_drawdown` of that weighting.
    Returns:
        DataFrame indexed by the labels of NET_ROW_LABELS, one column per weighting (EW/VW/DVW);
        returns and costs annualised decimals, the two date rows ISO strings (object column).
    """
    cols = {}
    for w in weights:
        n, lg, dd = net.get(w, {}), legs.get(w, {}), drawdown.get(w, {})
        vals = {"long_ret": lg.get("long", {}).get("ann_ret"), "long_sr": lg.get("long", {}).get("sharpe"),
                "short_ret": lg.get("short", {}).get("ann_ret"),
                "short_sr": lg.get("short", {}).get("sharpe"), **n,
                **{k: dd.get(k) for k in ("max_drawdown", "peak_date", "trough_date")}}
        col = []
        for key in NET_ROW_LABELS:
            v = vals.get(key)
            col.append(v if isinstance(v, str) else (np.nan if v is None else float(v)))
        cols[weighting_short(w, mktcap_is_proxy)] = col
    return pd.DataFrame(cols, index=pd.Index(list(NET_ROW_LABELS.values()), name="statistic"),
                        dtype=object)


def format_net_of_cost_table(num: pd.DataFrame) -> pd.DataFrame:
    """Strings: returns 3 decimals (net return with stars from the net t), SR/t 2, bp 1, counts 0."""
    out = pd.DataFrame(index=num.index, columns=num.columns, dtype=object)
    lab = NET_ROW_LABELS
    for c in num.columns:
        for r in num.index:
            v = num.at[r, c]
            if isinstance(v, str):
                s = v
            elif v is None or not np.isfinite(v):
                s = ""
            elif r == lab["n_periods"]:
                s = f"{int(v)}"
            elif r in (lab["cost_bps"], lab["break_even_bps"]):
                s = f"{v:.1f}"
            elif r in (lab["long_sr"], lab["short_sr"], lab["gross_sharpe"], lab["net_sharpe"],
                       lab["net_t"], lab["net_t_nw"], lab["mean_turnover"]):
                s = number(float(v), 2)
            else:
                s = number(float(v), 3)
                if r == lab["net_ann_ret"]:
                    t = num.at[lab["net_t"], c]
                    s += stars(float(t)) if t is not None and not isinstance(t, str) else ""
            out.at[r, c] = s
    return out


CHARACTERISTIC_COLUMNS = {"mean": "Mean corr", "sd": "SD", "t": "t", "t_nw": "Newey-West t",
                          "n_dates": "Dates", "n_dates_skipped": "Dates skipped",
                          "mean_n_stocks": "Mean stocks per date"}


def characteristics_table(corr: pd.DataFrame, labels: dict[str, str] | None = None) -> pd.DataFrame:
    """Numeric Table 5: the per-date Spearman correlation of P(up) with each characteristic.

    Args:
        corr: from :func:`pipeline.evaluate.characteristics.characteristic_correlations`, indexed by
            characteristic, columns mean, sd, t, t_nw, n_dates, n_dates_skipped, mean_n_stocks.
        labels: characteristic -> row label (default: the characteristic's name).
    Returns:
        DataFrame indexed by row label (name 'characteristic'), columns the values of
        CHARACTERISTIC_COLUMNS (correlations and t-statistics unitless, counts as floats).
    """
    labels = labels or {}
    out = corr[list(CHARACTERISTIC_COLUMNS)].astype(np.float64).rename(columns=CHARACTERISTIC_COLUMNS)
    out.index = pd.Index([labels.get(c, c) for c in corr.index], name="characteristic")
    return out


def format_characteristics_table(num: pd.DataFrame) -> pd.DataFrame:
    """Strings: mean correlation 3 decimals with stars from the Newey-West t, sd and t 2, counts 0."""
    out = pd.DataFrame(index=num.index, columns=num.columns, dtype=object)
    for c in num.columns:
        for r in num.index:
            v = num.at[r, c]
            if c in ("Dates", "Dates skipped", "Mean stocks per date"):
                s = number(v, 0, thousands=True)
            elif c == "Mean corr":
                s = number(v, 3)
                if s:
                    s += stars(num.at[r, "Newey-West t"])
            else:
                s = number(v, 2)
            out.at[r, c] = s
    return out


to_markdown = markdown_table  # the evaluation tables' Markdown is the project's one writer

FORMATTERS: dict[str, Callable[..., pd.DataFrame]] = {}  # table kind -> formatter (filled below)


def format_table(kind: str, num: pd.DataFrame, **options: Any) -> pd.DataFrame:
    """String cells of a numeric evaluation table of ``kind`` (a key of :data:`FORMATTERS`)."""
    if kind not in FORMATTERS:
        raise ValueError(f"unknown evaluation table kind {kind!r} (known: {sorted(FORMATTERS)})")
    return FORMATTERS[kind](num, **options)


def write_table(num: pd.DataFrame, fmt: pd.DataFrame, base: str | Path, note: str, caption: str,
                kind: str = "", options: dict[str, Any] | None = None,
                transpose: bool = False) -> list[Path]:
    """Write ``base``.csv (numeric + '# ' note lines), .md and .tex (formatted + note) and .parquet
    (numeric, with ``kind``, caption, note and formatter ``options``), atomically.

    Returns [csv, md, tex, parquet]. ``transpose``: see :func:`pipeline.tabular.write_numeric`.
    """
    base = Path(base)
    paths = [base.with_suffix(s) for s in (".csv", ".md", ".tex", ".parquet")]
    csv = num.to_csv(float_format="%.6g")
    csv += "".join(f"# {line}\n" for line in [caption, note])
    atomic_write_text(paths[0], csv)
    mask = text_mask(num)
    text_cols = [c for j, c in enumerate(num.columns) if len(num) and mask[:, j].all()]
    atomic_write_text(paths[1], f"**{caption}**\n\n{markdown_table(fmt, text_columns=text_cols)}\n{note}\n")
    tex = latex_table(fmt, text_columns=text_cols)
    atomic_write_text(paths[2], f"% {caption}\n" + tex + "\\par\\smallskip\n{\\footnotesize "
                      + latex_escape(note) + "}\n")
    write_numeric(paths[3], NumericTable(num, kind, caption, [note], dict(options or {})),
                  transpose=transpose)
    return paths


def write(kind: str, num: pd.DataFrame, base: str | Path, note: str, caption: str,
          **options: Any) -> list[Path]:
    """Format ``num`` with the ``kind`` formatter and write every form of it (:func:`write_table`)."""
    return write_table(num, format_table(kind, num, **options), base, note, caption, kind=kind,
                       options=options, transpose=kind == "net_of_cost")


def sources_note(refs: list[DecileReference | HLReference | None]) -> str:
    """One sentence naming the sources of the paper numbers shown, or '' when none."""
    used = sorted({(r.source, r.split) for r in refs if r is not None})
    if not used:
        return ""
    parts = [f"{SOURCES[s]} ({'JF 2023, test 2001-2019' if sp == 'jf' else 'SSRN 2020, test 2000-2019'})"
             for s, sp in used]
    return ("Paper columns: " + "; ".join(parts) + ". They are reference points from a different "
            "sample (CRSP), not targets.")


FORMATTERS.update({"deciles": format_decile_table, "benchmarks": format_benchmark_table,
                   "hl_by_year": format_by_year_table, "net_of_cost": format_net_of_cost_table,
                   "characteristics": format_characteristics_table})
