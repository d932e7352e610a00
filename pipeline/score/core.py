"""Scoring new data with a trained run: P(up) per stock at one date of any panel.

    chart_inputs(panel, window, date, ma, volume) -> (images, keys, rejected)
    score_panel(ensemble, panel, stocks, date=None, tickers=None) -> Scores
    score_column(target) -> str                    the score's column name for a run's target
    score_run(cfg, ...) -> output folder           (the `make score` stage)

The run is loaded from its model card (pipeline.runs), so scoring needs neither the experiment's
YAML nor its image set: each stock with a record on the scoring date gets the chart of its last W
records drawn exactly as the training images were (window, moving average, volume from the card;
the renderer of the image stage), normalised with the run's statistics, and each member's P(up)
(calibrated when the run was). The panel may be any panel the pipeline can build (Stooq, CRSP,
Yahoo, the synthetic market), including files newer than the training data; stocks whose history
is too short for the chart are listed as not scored, with the reason.

A regression run (``train.target`` return | vol_adjusted_return, METHOD 3.6; the model card says
which) is scored the same way, but its score is the ensemble's predicted target (the mean of the
members' outputs; no calibration), in a column named after it (:func:`score_column`):
``pred_return`` (a decimal return over the run's horizon) or ``pred_vol_adjusted_return`` (in
standard deviations over the horizon); rank and decile sort on it, as they sort on P(up).
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd

from pipeline.errors import InputError
from pipeline import paths
from pipeline.config import Config, derive, is_regression, save_resolved
from pipeline.images import windows
from pipeline.images.render import REJECTION_REASONS, render_windows
from pipeline.evaluate.portfolios import assign_deciles
from pipeline.io import atomic_write_text, write_figure, write_json, write_parquet
from pipeline.panel.store import read_meta, read_panel, read_stocks
from pipeline.predict.core import predict_proba
from pipeline.runs import MODEL_CARD, Ensemble, ModelArtifactError
from pipeline.train.calibration import apply_calibration
from pipeline.train.data import norm_for_year
from pipeline.train.loop import Runtime

log = logging.getLogger(__name__)


class ScoreInputError(InputError):
    """The panel cannot produce the run's images at the requested date (or names no such stocks)."""


@dataclass
class Scores:
    """One scoring: ``table`` one row per scored stock (ticker, stock_id, date, p_up, p_up_m<j>,
    [p_up_uncalibrated], rank 1 = highest P(up), decile 1..10 within the scored stocks by the
    evaluation's rule, 0 when fewer than 10 stocks are scored; a regression run has its
    :func:`score_column` and ``<column>_m<j>`` in place of p_up and p_up_m<j>, and no
    uncalibrated column); ``column`` the score's column;
    ``rejected`` the stocks with a record on the date that could not be drawn (ticker, stock_id,
    reason); ``images`` uint8 (n, H, 3W) in ``table`` order; ``date`` the scoring date."""

    table: pd.DataFrame
    rejected: pd.DataFrame
    images: np.ndarray
    date: pd.Timestamp
    column: str = "p_up"


def score_column(target: str) -> str:
    """The scores table's score column for a run trained for ``target`` (``train.target``):
    ``p_up`` for the classifier; ``pred_return`` or ``pred_vol_adjusted_return`` (the predicted
    target) for a regression run. The members' columns append ``_m<i>``."""
    return f"pred_{target}" if is_regression(target) else "p_up"


def scoring_date(panel: pd.DataFrame, date: str | pd.Timestamp | None) -> pd.Timestamp:
    """The panel's latest trading day, or its latest trading day on or before ``date``."""
    days = pd.DatetimeIndex(panel["date"].unique()).sort_values()
    if len(days) == 0:
        raise ScoreInputError("the panel has no rows to score")
    if date is None:
        return days[-1]
    want = pd.Timestamp(date)
    ok = days[days <= want]
    if len(ok) == 0:
        raise ScoreInputError(f"--date {want.date()} is before the panel's first day {days[0].date()}")
    return ok[-1]


def chart_inputs(panel: pd.DataFrame, window: int, date: pd.Timestamp, ma: bool = True,
                 volume: bool = True) -> tuple[np.ndarray, pd.DataFrame, pd.DataFrame]:
    """Draw every stock's chart ending at ``date`` from a canonical panel (rows sorted by
    (stock_id, date), columns stock_id, date and windows.RENDER_COLUMNS).

    Returns (images uint8 (n, H, 3W), keys DataFrame stock_id/date/n_hist of those images,
    rejected DataFrame stock_id/reason of the stocks with a record on ``date`` but no image).
    """
    sid = panel["stock_id"].to_numpy().astype(np.int64)
    day = windows.to_days(panel["date"].to_numpy())
    ids, offsets = windows.stock_offsets(sid)
    target = int(windows.to_days(np.array([np.datetime64(date, "ns")]))[0])
    starts = offsets[:-1]
    # Each stock's row on the date: the composite (stock, day) keys of the image stage, searched.
    rk, day0, span = windows.row_keys(day, offsets)
    if len(rk) and day0 <= target < day0 + span:
        q = windows.composite_keys(np.arange(len(ids)), np.full(len(ids), target), day0, span)
        pos = np.minimum(np.searchsorted(rk, q), len(rk) - 1)
        found = rk[pos] == q
    else:
        pos, found = np.zeros(len(ids), dtype=np.int64), np.zeros(len(ids), dtype=bool)
    rows = pos[found].astype(np.int64)
    for_stock = np.flatnonzero(found)
    n_hist = windows.history_lengths(rows, starts[for_stock], window)
    values = panel[windows.RENDER_COLUMNS].to_numpy(dtype=np.float64)
    block = windows.gather_blocks(values, rows, n_hist, window)
    images, status = render_windows(block, n_hist, window, ma=ma, volume=volume)
    ok = status == -1
    keys = pd.DataFrame({"stock_id": ids[for_stock][ok].astype(np.int64), "date": date,
                         "n_hist": n_hist[ok]})
    rejected = pd.DataFrame({"stock_id": ids[for_stock][~ok].astype(np.int64),
                             "reason": [REJECTION_REASONS[int(c)] for c in status[~ok]]})
    return images[ok], keys, rejected


def score_panel(ens: Ensemble, panel: pd.DataFrame, stocks: pd.DataFrame, rt: Runtime,
                date: str | pd.Timestamp | None = None, tickers: list[str] | None = None,
                batch_size: int = 1024) -> Scores:
    """P(up) of the run's ensemble for every stock (or ``tickers``) of ``panel`` at ``date``; for a
    regression run its predicted target (:func:`score_column`)."""
    names = stocks.set_index("stock_id")["ticker"] if "ticker" in stocks else pd.Series(dtype=str)
    if tickers:
        by_ticker = {str(t).upper(): int(s) for s, t in names.items()}
        unknown = [t for t in tickers if t.upper() not in by_ticker]
        if unknown:
            raise ScoreInputError(f"tickers not in the panel: {', '.join(unknown)} (the panel has "
                                  f"{len(by_ticker):,} tickers, e.g. {', '.join(list(by_ticker)[:5])})")
        keep = [by_ticker[t.upper()] for t in tickers]
        panel = panel[panel["stock_id"].isin(keep)]
    d = scoring_date(panel, date)
    chart = ens.chart
    images, keys, rejected = chart_inputs(panel, int(chart["window"]), d, chart["ma"], chart["volume"])
    if images.shape[1:] != ens.image_hw and len(images):
        raise ScoreInputError(f"the panel's charts are {images.shape[1]}x{images.shape[2]} but the "
                              f"run expects {ens.image_hw[0]}x{ens.image_hw[1]}")
    rejected.insert(0, "ticker", rejected["stock_id"].map(names))
    if len(images) == 0:
        why = (f"{len(rejected)} stock(s) have a record on {d.date()} but none can be drawn "
               f"({rejected['reason'].value_counts().to_dict()})") if len(rejected) else \
            f"no stock has a record on {d.date()}"
        raise ScoreInputError(f"nothing to score: {why}; a {chart['window']}-day chart needs at least "
                              f"{chart['window']} records up to the date")
    mean, std = scoring_norm(ens.norm, d.year)
    raw = predict_proba(ens.members, images, mean, std, rt, batch_size)
    cals = ens.calibrations
    col = score_column(ens.target)
    calibrated = any(c["method"] != "none" for c in cals)
    if calibrated and is_regression(ens.target):
        # The config refuses this; a card that has it was not written by this pipeline's rules.
        raise ModelArtifactError(f"{ens.run_dir / MODEL_CARD} is a {ens.target!r} regression run with a "
                                 "calibrated member: calibration maps a probability, not a return")
    member_p = np.column_stack([apply_calibration(raw[:, j], cals[j]) for j in range(raw.shape[1])])
    table = pd.DataFrame({"ticker": keys["stock_id"].map(names).to_numpy(),
                          "stock_id": keys["stock_id"].to_numpy(), "date": d,
                          col: member_p.mean(axis=1)})
    if calibrated:
        table["p_up_uncalibrated"] = raw.mean(axis=1)
    for j, i in enumerate(ens.indices):
        table[f"{col}_m{i}"] = member_p[:, j]
    order = np.argsort(-table[col].to_numpy(), kind="stable")
    table["rank"] = np.empty(len(table), dtype=np.int64)
    table.loc[order, "rank"] = np.arange(1, len(table) + 1)
    # The evaluation's own decile rule (breakpoints at the 10th..90th percentiles of the date);
    # 0 when the date has too few stocks to sort.
    table["decile"] = assign_deciles(table, col, "date")[0]
    return Scores(table, rejected, images, d, col)


def scoring_norm(norm: dict, year: int) -> tuple[float, float]:
    """(mean, std) for charts of ``year``: the run's statistics; a run normalised per year that
    has none for ``year`` (new data) uses its latest year's, with a warning."""
    if "per_year" not in norm or str(year) in norm["per_year"]:
        return norm_for_year(norm, year)
    last = max(norm["per_year"], key=int)
    log.warning("the run normalises per year and has no statistics for the scoring year: using %s's",
                last)
    return norm["per_year"][last]["mean"], norm["per_year"][last]["std"]


# --------------------------------------------------------------------------------------------------
# The stage


def scoring_panel(cfg: Config, panel_dir: str | Path | None = None, source: str | None = None,
                  path: str | None = None) -> tuple[pd.DataFrame, pd.DataFrame, str]:
    """(panel rows, stocks table, a description) to score from: by default the experiment's own
    panel folder; ``panel_dir`` another canonical panel folder; ``source``/``path`` raw files of
    any adapter, built in memory by the panel stage's rules with no end date (newer data is kept)."""
    if source is not None or path is not None:
        from pipeline.panel.build import build_panel

        changes: dict = {"panel.source": source or cfg.panel.source}
        if path is not None:
            changes["panel.path"] = path
        if changes["panel.source"] != "synthetic":
            changes["panel.end"] = "2262-04-11"  # the last day pandas can hold: no end date
        c = derive(cfg, changes)
        df, stocks, _ = build_panel(c)
        return df, stocks, f"{c.panel.source} files {c.panel.path}"
    d = Path(panel_dir) if panel_dir is not None else paths.panel_dir(cfg)
    meta = read_meta(d)
    years = meta.years[-2:]  # the longest chart (60 days, 120 records with its MA) fits in two
    return (read_panel(d, years=years, columns=[*windows.RENDER_COLUMNS]), read_stocks(d),
            f"panel {d} (years {years[0]}-{years[-1]})")


def score_run(cfg: Config, date: str | None = None, tickers: list[str] | None = None,
              charts: list[str] | None = None, n_charts: int = 5, panel_dir: str | None = None,
              source: str | None = None, path: str | None = None) -> Path:
    """``make score``: score the experiment's trained run on a panel; returns the output folder
    data/<name>/score/<run>/ with scores_<date>.{csv,parquet}, not_scored_<date>.csv and
    charts_<date>.png (chart and Grad-CAM of ``charts``, by default the ``n_charts`` highest and
    lowest P(up) stocks; of a regression run, the highest and lowest predictions, each map
    explaining the stock's predicted side)."""
    from pipeline.gradcam.core import ensemble_grad_cam
    from pipeline.gradcam.figures import charts_with_maps, score_text
    from pipeline.runs import load_ensemble
    from pipeline.train import ddp
    from pipeline.train.data import normalise
    from pipeline.train.loop import resolve_runtime, set_threads

    run = paths.run_dir(cfg)
    ens = load_ensemble(run)
    rt = resolve_runtime(cfg.train, ddp.resolve_device(cfg.train.device))
    if rt.device.type == "cpu":
        set_threads(cfg.train)
    panel, stocks, where = scoring_panel(cfg, panel_dir, source, path)
    log.info("scoring %s (%s, %d members) on %s", run.name, ens.image_set, len(ens.members), where)
    sc = score_panel(ens, panel, stocks, rt, date, tickers, cfg.evaluate.predict_batch_size)
    out = paths.score_dir(cfg)
    stamp = sc.date.strftime("%Y-%m-%d")
    write_parquet(out / f"scores_{stamp}.parquet", sc.table)
    atomic_write_text(out / f"scores_{stamp}.csv", sc.table.sort_values("rank").to_csv(
        index=False, float_format="%.6f"))
    atomic_write_text(out / f"not_scored_{stamp}.csv", sc.rejected.to_csv(index=False))
    t = sc.table.sort_values("rank")
    if charts:
        pick = t[t["ticker"].str.upper().isin([c.upper() for c in charts])]
        missing = sorted(set(c.upper() for c in charts) - set(pick["ticker"].str.upper()))
        if missing:
            raise ScoreInputError(f"--charts {', '.join(missing)}: not scored on {stamp} "
                                  f"(see {out / f'not_scored_{stamp}.csv'})")
    else:
        pick = pd.concat([t.head(n_charts), t.tail(n_charts)]).drop_duplicates("stock_id")
    rows = pick.index.to_numpy()
    mean, std = scoring_norm(ens.norm, sc.date.year)
    maps = ensemble_grad_cam(ens.members, normalise(sc.images[rows], mean, std))
    reg = is_regression(ens.target)
    sep = "\n" if reg else " "  # a signed prediction is long: its own line under a narrow chart
    titles = [f"{tk}\n{score_text(p, reg, sep)}" for tk, p in zip(pick["ticker"], pick[sc.column])]
    fig = charts_with_maps(sc.images[rows], maps, titles,
                           title=f"{run.name}: charts ending {stamp} and their Grad-CAM maps")
    write_figure(out / f"charts_{stamp}.png", fig)
    save_resolved(cfg, out)
    write_json(out / f"scores_{stamp}.json", {
        "run": str(run), "image_set": ens.image_set, "target": ens.target, "score_column": sc.column,
        "date": stamp, "source": where,
        "n_scored": len(sc.table), "n_not_scored": len(sc.rejected),
        "not_scored_reasons": sc.rejected["reason"].value_counts().to_dict(),
        "charts": list(pick["ticker"]), "train_hash": ens.card["train_hash"]})
    log.info("%d stocks scored at %s (%d not scored) -> %s", len(sc.table), stamp, len(sc.rejected), out)
    return out
