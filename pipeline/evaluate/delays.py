"""Delayed holding periods: how fast a run's signal decays (docs/method.md 7.1).

    delayed_returns_for(pred, panel_dir, suffix, delays, mode) -> DataFrame  ret per row and delay
    evaluate_delays(pred, ...) -> (table, portfolios)                        every delay, one code path
    plot_delays(table, value, ax=None) -> ax                                 one statistic against delay
    delay_figure(table, mktcap_is_proxy) -> Figure                           H-L Sharpe and mean return

The portfolios are formed exactly as for the undelayed evaluation (same rows, signal, deciles,
weights, breakpoints: :func:`pipeline.evaluate.portfolios.evaluate_signal`); only the holding period
moves: with delay d the position is bought at the close d records after the image date and held as
long as the label (``pipeline.images.labels.delayed_returns``). The delayed return is recomputed from
the panel with the label code itself; delay 0 is the stored label column, and the panel must
reproduce it (else the images were built from another panel and the stage stops). A delayed return
that passes the stock's last record is missing: the row is dropped from that delay's portfolios and
counted, like a missing label (METHOD 3.2).

Written by the evaluate stage when ``evaluate.delays`` is not empty, into the run's eval folder:
``delays.parquet`` (the table), ``delay_portfolios.parquet``, ``tables/delays.csv`` and
``figures/delays.png``; metrics.json gets the table as ``delays``.
"""

from __future__ import annotations

import numpy as np
import pandas as pd
from matplotlib.figure import Figure

from pipeline.evaluate.conventions import HL, weighting_label
from pipeline.evaluate.metrics import correlations_by_date, ic_by_date, ic_summary
from pipeline.evaluate.portfolios import evaluate_signal
from pipeline.images import windows
from pipeline.images.labels import delayed_label_returns
from pipeline.io import StaleInputError

# Columns of the delay table, one row per (delay, weighting).
TABLE_COLUMNS = ["delay", "weighting", "n_rows", "n_dropped_missing_return", "n_lost_to_delay",
                 "n_dates_sorted", "n_periods", "mean", "ann_ret", "ann_vol", "sharpe", "t_stat",
                 "t_nw", "turnover_pct", "ic_mean", "ic_t_nw"]


def panel_rows(keys, stock_id: np.ndarray, date: np.ndarray) -> np.ndarray:  # noqa: ANN001
    """Panel row (in ``keys``' (stock_id, date) order) of each (stock_id, date), int64 (n,).

    keys: :class:`pipeline.images.build.PanelKeys`. Raises StaleInputError naming the first pair
    that is not a panel record.
    """
    sid = np.asarray(stock_id, dtype=np.int64)
    day = windows.to_days(np.asarray(date))
    s = np.minimum(np.searchsorted(keys.stock_ids, sid), len(keys.stock_ids) - 1)
    rk, day0, span = windows.row_keys(keys.days, keys.offsets)
    q = windows.composite_keys(s.astype(np.int64), day, day0, span)
    pos = np.minimum(np.searchsorted(rk, q), len(rk) - 1)
    ok = (keys.stock_ids[s] == sid) & (rk[pos] == q)
    if not ok.all():
        i = int(np.flatnonzero(~ok)[0])
        raise StaleInputError(f"row {i} (stock_id={sid[i]}, date={np.datetime64(int(day[i]), 'D')}) "
                              "is not a panel record: the predictions do not belong to this panel")
    return pos.astype(np.int64)


def delayed_returns_for(pred: pd.DataFrame, panel_dir, suffix: str, delays: list[int],  # noqa: ANN001
                        mode: str = "strict", keys=None) -> pd.DataFrame:  # noqa: ANN001
    """The label return ``ret_<suffix>`` of every row of ``pred`` held from d records later.

    pred: rows with stock_id, date (panel records). keys: the panel's
    :func:`pipeline.images.build.read_panel_keys` (read from ``panel_dir`` when None).
    Returns a DataFrame aligned with ``pred`` (same index) with one float64 column ``d<d>`` per delay.
    """
    from pipeline.images.build import read_panel_keys

    keys = keys if keys is not None else read_panel_keys(panel_dir)
    rows = panel_rows(keys, pred["stock_id"].to_numpy(), pred["date"].to_numpy())
    out = delayed_label_returns(keys.offsets, keys.days, keys.ret, keys.calendar, rows, suffix,
                                sorted(set(delays)), mode)
    return pd.DataFrame({f"d{d}": v for d, v in out.items()}, index=pred.index)


def check_delay_zero(stored: np.ndarray, computed: np.ndarray, column: str, pred: pd.DataFrame) -> None:
    """StaleInputError unless the panel reproduces the stored label ``column`` (same missing rows,
    values equal to 1e-12): delayed returns are only comparable with the label they extend."""
    a = np.asarray(stored, dtype=np.float64)
    b = np.asarray(computed, dtype=np.float64)
    bad = (np.isnan(a) != np.isnan(b)) | ~np.isclose(a, b, rtol=1e-10, atol=1e-12, equal_nan=True)
    if bad.any():
        i = int(np.flatnonzero(bad)[0])
        raise StaleInputError(
            f"{int(bad.sum())} rows' {column} is not reproduced by the panel, e.g. row {i} "
            f"(stock_id={pred['stock_id'].iat[i]}, date={pd.Timestamp(pred['date'].iat[i]).date()}): "
            f"stored {a[i]!r}, from the panel {b[i]!r}; the images were built from another panel or "
            "with another images.period_ret_mode: rebuild them (`make images`)")


def evaluate_delays(pred: pd.DataFrame, score: str, ret_col: str, suffix: str, freq: str,
                    weights: list[str], delays: list[int], panel_dir, mode: str = "strict",  # noqa: ANN001
                    keys=None) -> tuple[pd.DataFrame, pd.DataFrame]:  # noqa: ANN001
    """Evaluate the signal ``score`` of ``pred`` with its holding period delayed by each of ``delays``.

    pred: the universe's rows (before rows with a missing return are dropped), with stock_id,
    date, ``score``, ``ret_col`` (the stored label return) and mktcap for VW. Delay 0 uses
    ``ret_col`` itself; every delay keeps the rows whose delayed return exists.
    Returns (table, portfolios): table = TABLE_COLUMNS, one row per (delay, weighting), returns
    decimal (mean per period; ann_ret, ann_vol annualised), turnover % per month, ic_* of the
    per-date Spearman IC of the score with the delayed return; portfolios = delay, date,
    weighting, decile ('1'..'10', 'H-L'), ret, n (as portfolios.parquet).
    """
    base = pred.reset_index(drop=True)
    need = sorted(set(delays) | {0})
    rets = delayed_returns_for(base, panel_dir, suffix, need, mode, keys)
    check_delay_zero(base[ret_col].to_numpy(), rets["d0"].to_numpy(), ret_col, base)
    has_label = base[ret_col].notna().to_numpy()
    cols = ["stock_id", "date", score] + (["mktcap"] if "mktcap" in base.columns else [])
    rows, ports = [], []
    for d in sorted(set(delays)):
        r = base[ret_col].to_numpy() if d == 0 else rets[f"d{d}"].to_numpy()
        ok = ~np.isnan(r)
        frame = base.loc[ok, cols].assign(ret=r[ok]).reset_index(drop=True)
        ev = evaluate_signal(frame, score, "ret", freq, weights)
        ic = ic_summary(ic_by_date(correlations_by_date(frame, score, "ret")))
        for w in weights:
            try:
                p = ev.performance.loc[(w, HL)]
            except KeyError:
                p = pd.Series(dtype=float)
            rows.append({"delay": d, "weighting": w, "n_rows": ev.n_rows,
                         "n_dropped_missing_return": int((~ok).sum()),
                         "n_lost_to_delay": int((has_label & ~ok).sum()),
                         "n_dates_sorted": ev.info["n_dates_sorted"],
                         "n_periods": int(p.get("n_periods", 0)),
                         **{k: float(p.get(k, np.nan)) for k in ("mean", "ann_ret", "ann_vol",
                                                                  "sharpe", "t_stat", "t_nw")},
                         "turnover_pct": float(ev.turnover_monthly_pct.get(w, np.nan)),
                         "ic_mean": ic["mean"], "ic_t_nw": ic["t_nw"]})
        ports.append(ev.returns.assign(delay=d))
    table = pd.DataFrame(rows, columns=TABLE_COLUMNS)
    port = (pd.concat(ports, ignore_index=True)[["delay", "date", "weighting", "decile", "ret", "n"]]
            if ports else pd.DataFrame(columns=["delay", "date", "weighting", "decile", "ret", "n"]))
    return table, port


def plot_delays(table: pd.DataFrame, value: str = "sharpe", ax=None, mktcap_is_proxy: bool = False,  # noqa: ANN001, ANN201
                ylabel: str | None = None, scale: float = 1.0):
    """One H-L statistic of a :func:`evaluate_delays` table against the delay, a line per
    weighting (``scale`` multiplies the values, e.g. 100 for percent). Returns the Axes."""
    if ax is None:
        ax = Figure(figsize=(5, 3.5)).subplots()
    for w, g in table.groupby("weighting", sort=False):
        g = g.sort_values("delay")
        ax.plot(g["delay"], g[value].to_numpy(dtype=float) * scale, "o-",
                label=weighting_label(str(w), mktcap_is_proxy))
    ax.axhline(0, color="black", lw=0.8)
    ax.set_xticks(sorted(table["delay"].unique()))
    ax.set_xlabel("delay of the holding period (records after the image date)")
    ax.set_ylabel(ylabel or value)
    ax.legend(frameon=False, fontsize=8)
    return ax


def delay_figure(table: pd.DataFrame, mktcap_is_proxy: bool = False, title: str = "") -> Figure:
    """Two panels: the annualised H-L Sharpe ratio and mean H-L return (%) against the delay."""
    fig = Figure(figsize=(10, 3.8))
    a1, a2 = fig.subplots(1, 2)
    plot_delays(table, "sharpe", a1, mktcap_is_proxy, "H-L Sharpe ratio (annualised)")
    plot_delays(table, "ann_ret", a2, mktcap_is_proxy, "H-L mean return (% a year)", scale=100.0)
    a1.set_title("Sharpe ratio")
    a2.set_title("Mean return")
    fig.suptitle(title or "Signal decay: H-L portfolio with a delayed holding period")
    fig.tight_layout()
    return fig


def table_csv(table: pd.DataFrame, note: str) -> str:
    """The delay table as CSV text, then ``# <note>`` (the evaluation tables' layout)."""
    return table.to_csv(index=False, float_format="%.6g") + f"# {note}\n"
