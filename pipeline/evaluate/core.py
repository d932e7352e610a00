"""Evaluate one run: predictions + panel -> metrics, portfolios, benchmarks, tables, figures.

    evaluate_run(cfg, model=None) -> dict   (the metrics.json content)

reads ``paths.run_dir(cfg, model)/predictions.parquet`` and the canonical panel, and writes into
``paths.eval_dir(cfg, model)``::

    metrics.json            pooled classification metrics, date-averaged correlations, H-L summary
                            per weighting for the CNN and every benchmark, sample counts
    portfolios.parquet      date, strategy ('CNN', 'MOM', ...), weighting ('ew'|'vw'),
                            decile ('1'..'10', 'H-L'), ret (per period, decimal), n (stocks)
    turnover.json           monthly H-L turnover (%) per strategy and weighting
    turnover_by_date.parquet  date, strategy, weighting, turnover (fraction per rebalance)
    net_hl_by_date.parquet  the CNN's H-L per date and weighting: date, weighting, gross, turnover,
                            turnover_charged, cost, net (decimal per period; cost =
                            evaluate.cost_bps x turnover charged, conventions.py)
    ic_by_date.parquet      date, ic (Spearman of P(up) with the realised return across stocks), n
    tables/deciles.{csv,md,tex}, tables/deciles_<BENCH>.*, tables/benchmarks.{csv,md,tex},
    tables/net_of_cost.* (legs, gross and net H-L, break-even cost, drawdown),
    tables/hl_by_year.* (H-L per calendar year)
    tables/characteristics.* (Table 5: per-date Spearman of P(up) with OHLCV characteristics;
                            evaluate.characteristics, pipeline.evaluate.characteristics)
    figures/deciles.png, figures/cumulative_hl.png (gross and net of cost), figures/p_up_hist.png,
    figures/reliability.png, figures/share_up_by_year.png, figures/ic.png
metrics.json, for the CNN and per weighting: ``net_of_cost`` (net return, Sharpe, break-even cost),
``legs`` (deciles 10 and 1), ``drawdown`` (of the summed H-L return), ``by_year_hl``; and ``ic``
(mean, sd, t and Newey-West t of the per-date IC); ``characteristics``: characteristic -> {mean,
sd, t, t_nw, n_dates} of its per-date Spearman correlation with P(up) (None when switched off).
metrics.json also holds the calibration (ECE, reliability bins, share up predicted vs realised,
per year) and, on the synthetic market, ``bayes``: the Bayes-optimal accuracy of exactly the
evaluated rows and label (pipeline.evaluate.bayes) and the fraction of its gain recovered.
A regression run (``train.target``, METHOD 3.6) sorts on its prediction, reports the sign
accuracy and ``regression`` (MSE, out-of-sample R^2 of the target), and lists the classifier-only
metrics under ``not_applicable`` (loss, calibration: null); its figures replace p_up_hist,
reliability and share_up_by_year by prediction_hist.png (pipeline.evaluate.regression).
With ``evaluate.delays``: delays.parquet, delay_portfolios.parquet, tables/delays.csv,
figures/delays.png and metrics ``delays`` (pipeline.evaluate.delays).
    config.yaml, _DONE.json (settings hash: reruns with unchanged inputs do nothing)

The label/return column is ``ret_{label_suffix(horizon, label_return)}``; the rebalance frequency
follows the horizon (R5 weekly, R20 monthly, R60 quarterly).
"""

from __future__ import annotations

import logging
import time
from pathlib import Path

import numpy as np
import pandas as pd

from pipeline.errors import InputError
from pipeline import paths
from pipeline.config import PROCESS_SETTINGS, Config, hash_view, is_regression, save_resolved, section_hash
from pipeline.evaluate import calibration, delays, hl_analysis, plots, regression, tables
from pipeline.evaluate.bayes import bayes_bound, gain_recovered, gain_recovered_se
from pipeline.evaluate.calibration import calibration_summary
from pipeline.evaluate.benchmarks import benchmark_signals
from pipeline.evaluate.characteristics import (CHARACTERISTICS, LABELS, MIN_STOCKS,
                                               characteristic_correlations, characteristics)
from pipeline.evaluate.conventions import (HL, conventions_text, frequency_of_horizon,
                                           cost_text, periods_per_year, weighting_label)
from pipeline.evaluate.metrics import (accuracy_cluster_se, classification_metrics, correlations_by_date,
                                      ic_by_date, ic_summary, mean_correlations)
from pipeline.evaluate.portfolios import SignalEvaluation, evaluate_signal
from pipeline.evaluate.statistics import compare_with
from pipeline.images.labels import regression_target
from pipeline.images.store import label_suffix
from pipeline.io import (StaleInputError, atomic_write_text, folder_lock, is_done, mark_done, marker_path, read_json,
                         remove_stale_temps, require_done, write_figure, write_json, write_parquet)
from pipeline.panel import store
from pipeline.panel.build import panel_settings_hash
from pipeline.paper_numbers import (classification_reference, cnn_reference, decile_reference,
                                    hl_reference)

log = logging.getLogger(__name__)

TOP_N = 500


class PredictionsMismatchError(ValueError):
    """The predictions table does not match the panel (duplicates, unknown stocks or dates)."""


# --------------------------------------------------------------------------------------------------
# Input checks


def _rows_text(df: pd.DataFrame, mask: np.ndarray, limit: int = 5) -> str:
    idx = np.flatnonzero(mask)[:limit]
    items = [f"row {int(i)} (stock_id={df['stock_id'].iat[i]}, "
             f"date={pd.Timestamp(df['date'].iat[i]).date()})" for i in idx]
    more = int(mask.sum()) - len(idx)
    return "; ".join(items) + (f"; and {more} more" if more > 0 else "")


def validate_predictions(pred: pd.DataFrame, panel_keys: pd.DataFrame,
                         where: str = "predictions") -> None:
    """Refuse predictions that do not match the panel, naming the offending rows.

    Checks, in order: duplicate (stock_id, date) rows; stock_ids absent from the panel; dates on
    which the panel has no record at all; (stock_id, date) pairs that are not panel records (an image
    date is always one of the stock's records, METHOD 2.7).

    Args:
        pred: predictions with stock_id, date (row numbers in messages are positions in ``pred``).
        panel_keys: panel rows (stock_id, date) covering at least the predictions' years.
    Raises:
        PredictionsMismatchError naming the first offending rows and their count.
    """
    dup = pred.duplicated(["stock_id", "date"], keep=False).to_numpy()
    if dup.any():
        raise PredictionsMismatchError(
            f"{where}: {int(dup.sum())} rows share a (stock_id, date) with another row: "
            + _rows_text(pred, dup))
    unknown_stock = ~pred["stock_id"].isin(pd.unique(panel_keys["stock_id"])).to_numpy()
    if unknown_stock.any():
        ids = sorted(pd.unique(pred["stock_id"].to_numpy()[unknown_stock]).tolist())
        raise PredictionsMismatchError(
            f"{where}: {int(unknown_stock.sum())} rows have stock_ids not in the panel "
            f"({ids[:10]}{' ...' if len(ids) > 10 else ''}): " + _rows_text(pred, unknown_stock))
    unknown_date = ~pred["date"].isin(pd.unique(panel_keys["date"])).to_numpy()
    if unknown_date.any():
        raise PredictionsMismatchError(
            f"{where}: {int(unknown_date.sum())} rows have dates on which the panel has no record: "
            + _rows_text(pred, unknown_date))
    pidx = pd.MultiIndex.from_arrays([panel_keys["stock_id"].to_numpy(), panel_keys["date"].to_numpy()])
    found = pidx.get_indexer(pd.MultiIndex.from_arrays([pred["stock_id"].to_numpy(),
                                                         pred["date"].to_numpy()]))
    if (found < 0).any():
        bad = found < 0
        raise PredictionsMismatchError(
            f"{where}: {int(bad.sum())} rows are not panel records (the stock has no record on that "
            "date): " + _rows_text(pred, bad))


def read_predictions(path: Path, ret_col: str, need_cap: bool, probability: bool = True) -> pd.DataFrame:
    """Read predictions.parquet and check the columns the evaluation needs. ``probability``: the
    score ``p_up`` must lie in [0, 1] (a classifier); False for a regression run's predicted
    return, which must only be finite."""
    if not path.exists():
        raise FileNotFoundError(f"no predictions at {path}: run `make predict` first")
    pred = pd.read_parquet(path)
    if pred.empty:
        raise InputError(f"{path}: the predictions table has no rows")
    need = ["stock_id", "date", "p_up", ret_col] + (["mktcap"] if need_cap else [])
    missing = [c for c in need if c not in pred.columns]
    if missing:
        raise InputError(f"{path}: missing columns {missing}")
    if not np.issubdtype(pred["date"].dtype, np.datetime64):
        raise InputError(f"{path}: column 'date' must be datetime64, got {pred['date'].dtype}")
    pred["date"] = pred["date"].astype("datetime64[ns]")
    p = pred["p_up"].to_numpy(dtype=np.float64)
    bad = (np.isnan(p) | (p < 0) | (p > 1)) if probability else ~np.isfinite(p)
    if bad.any():
        what = "outside [0, 1]" if probability else "not finite (a regression prediction)"
        raise InputError(f"{path}: p_up missing or {what} in {int(bad.sum())} rows: "
                         + _rows_text(pred, bad))
    return pred.sort_values(["date", "stock_id"], kind="stable").reset_index(drop=True)


# --------------------------------------------------------------------------------------------------
# Universe


def top_n_formation(df: pd.DataFrame, n: int = TOP_N, cap: str = "mktcap") -> np.ndarray:
    """Mask of rows among the ``n`` largest ``cap`` on their date (ties: first by stock_id).

    Ranks use only formation information (the cap at the date), over all rows given, before any
    row is dropped for a missing next-period return. Rows with a missing cap are never selected.
    """
    c = df[cap].to_numpy(dtype=np.float64)
    t = pd.DataFrame({"date": df["date"].to_numpy(), "c": np.where(np.isfinite(c), c, -np.inf),
                      "s": df["stock_id"].to_numpy()})
    t = t.sort_values(["date", "c", "s"], ascending=[True, False, True], kind="stable")
    rank = t.groupby("date").cumcount().to_numpy()
    keep = np.zeros(len(df), dtype=bool)
    keep[t.index.to_numpy()] = (rank < n) & np.isfinite(t["c"].to_numpy())
    return keep


def top_n_annual_june(df: pd.DataFrame, panel: pd.DataFrame, n: int = TOP_N,
                      cap: str = "mktcap") -> np.ndarray:
    """Mask of rows whose stock is among the ``n`` largest at the end of June of the row's year.

    The reference's convention (METHOD 7): caps on the panel's last trading day on or before
    June 30 of year Y select the universe for every date of year Y (mild look-ahead for Jan-May).
    """
    p = panel[["stock_id", "date", cap]]
    june = p[(p["date"].dt.month <= 6)]
    last = june.groupby(june["date"].dt.year)["date"].max()
    snap = p[p["date"].isin(last.to_numpy())].copy()
    snap["year"] = snap["date"].dt.year
    snap = snap[np.isfinite(snap[cap].to_numpy(dtype=np.float64))]
    snap = snap.sort_values(["year", cap, "stock_id"], ascending=[True, False, True], kind="stable")
    snap = snap[snap.groupby("year").cumcount() < n]
    chosen = pd.MultiIndex.from_arrays([snap["year"].to_numpy(), snap["stock_id"].to_numpy()])
    keys = pd.MultiIndex.from_arrays([df["date"].dt.year.to_numpy(), df["stock_id"].to_numpy()])
    return keys.isin(chosen)


# --------------------------------------------------------------------------------------------------
# The stage


def _settings_hash(cfg: Config, pred_path: Path, panel_dir: Path) -> str:
    st = pred_path.stat()
    meta = read_json(panel_dir / "meta.json")
    train = {k: v for k, v in hash_view("train", cfg.train).items() if k not in PROCESS_SETTINGS}
    return section_hash(hash_view("evaluate", cfg.evaluate), train, {"predictions": [st.st_size, st.st_mtime_ns],
                                                  "panel": meta, "synthetic": cfg.synthetic, "version": 6})


def _hl_summary(ev: SignalEvaluation, weights: list[str]) -> dict:
    out: dict = {"n_rows": ev.n_rows, "n_dropped": ev.n_dropped, **ev.info}
    for w in weights:
        for col, key in (("ann_ret", "ret"), ("ann_vol", "vol"), ("sharpe", "sr"), ("t_stat", "t"),
                         ("t_nw", "t_nw"), ("n_periods", "n_periods")):
            try:
                v = ev.performance.loc[(w, HL), col]
            except KeyError:
                v = np.nan
            out[f"{w}_{key}"] = float(v) if col != "n_periods" else int(0 if pd.isna(v) else v)
        out[f"{w}_turnover"] = ev.turnover_monthly_pct.get(w, float("nan"))
    return out


def hl_series(ev: SignalEvaluation, weighting: str) -> pd.Series:
    """The H-L return per rebalance date of one weighting, indexed by date (sorted)."""
    r = ev.returns
    s = r[(r["weighting"] == weighting) & (r["decile"] == HL)]
    return s.set_index("date")["ret"].sort_index()


def hl_details(ev: SignalEvaluation, weights: list[str], freq: str, cost_bps: float
               ) -> tuple[dict, pd.DataFrame, pd.DataFrame]:
    """Net of cost, legs, drawdown and per-year statistics of one signal's H-L portfolios.

    Returns:
        (metrics, net, by_year): metrics = {"net_of_cost": {w: ...}, "legs": {w: ...},
        "drawdown": {w: ...}, "by_year_hl": {w: {"YYYY": ...}}} (pipeline.evaluate.hl_analysis);
        net = long table date, weighting, gross, turnover, turnover_charged, cost, net (returns
        decimal per period, turnovers fractions per rebalance; :func:`hl_analysis.net_of_cost`);
        by_year = :func:`hl_analysis.by_year_performance` (index weighting, year).
    """
    out: dict = {"net_of_cost": {}, "legs": {}, "drawdown": {}}
    nets = []
    for w in weights:
        gross = hl_series(ev, w)
        t = ev.turnover[ev.turnover["weighting"] == w]
        net = hl_analysis.net_of_cost(gross, t.set_index("date")["turnover"], cost_bps)
        nets.append(net.reset_index().assign(weighting=w))
        out["net_of_cost"][w] = hl_analysis.net_of_cost_summary(net, freq, cost_bps)
        out["legs"][w] = hl_analysis.leg_summary(ev.performance, w)
        out["drawdown"][w] = hl_analysis.max_drawdown(gross)
    by_year = hl_analysis.by_year_performance(ev.returns, freq)
    out["by_year_hl"] = hl_analysis.by_year_dict(by_year)
    cols = ["date", "weighting", "gross", "turnover", "turnover_charged", "cost", "net"]
    net_long = (pd.concat(nets, ignore_index=True)[cols] if nets
                else pd.DataFrame(columns=cols))
    return out, net_long, by_year


def versus_benchmarks(evals: dict[str, SignalEvaluation], weights: list[str], freq: str) -> dict:
    """Per weighting: each benchmark's H-L Sharpe beside the CNN's, the correlation of the two H-L
    series and the CNN's alpha (annualised, Newey-West t) in a regression of its H-L return on the
    benchmark's; ``best`` = the benchmark with the highest H-L Sharpe ratio."""
    out: dict = {}
    if "CNN" not in evals or len(evals) < 2:
        return out
    for w in weights:
        cnn = hl_series(evals["CNN"], w)
        per: dict = {}
        for name, ev in evals.items():
            if name == "CNN":
                continue
            try:
                sr = float(ev.performance.loc[(w, HL), "sharpe"])
            except KeyError:
                sr = float("nan")
            per[name] = {"sharpe": sr, **compare_with(cnn, hl_series(ev, w), freq)}
        finite = {k: v["sharpe"] for k, v in per.items() if np.isfinite(v["sharpe"])}
        out[w] = {"benchmarks": per, "best": max(finite, key=finite.get) if finite else None}
    return out


def _nan_to_none(obj):
    if isinstance(obj, dict):
        return {k: _nan_to_none(v) for k, v in obj.items()}
    if isinstance(obj, list):
        return [_nan_to_none(v) for v in obj]
    if isinstance(obj, float) and not np.isfinite(obj):
        return None
    return obj


def evaluate_run(cfg: Config, model: str | None = None) -> dict:
    """Evaluate the run ``paths.run_dir(cfg, model)``; returns the metrics dict (also metrics.json).

    Resumable: when the eval dir holds a completion marker with the same settings hash (evaluate
    and train config, predictions file size/mtime, panel meta), nothing is recomputed. Refuses an
    unfinished or stale panel and predictions older than the trained run; one process at a time
    writes the eval folder.
    """
    out_dir = paths.eval_dir(cfg, model)
    with folder_lock(out_dir, "evaluate"):  # one writer; what a killed run left is removed
        if n := remove_stale_temps(out_dir):
            log.info("removed %d temporary file(s) left in %s by an interrupted run", n, out_dir)
        return _evaluate_run(cfg, model)


def _evaluate_run(cfg: Config, model: str | None) -> dict:
    model_name = model or cfg.train.model
    horizon = cfg.train.horizon
    freq = frequency_of_horizon(horizon)
    k = periods_per_year(freq)
    ret_col = f"ret_{label_suffix(horizon, cfg.train.label_return)}"
    target = cfg.train.target
    reg = is_regression(target)
    weights = list(cfg.evaluate.weights)
    pred_path = paths.run_dir(cfg, model) / "predictions.parquet"
    out_dir = paths.eval_dir(cfg, model)
    pdir = paths.panel_dir(cfg)
    if not pred_path.exists():
        raise FileNotFoundError(f"no predictions at {pred_path}: run `make predict` first")
    require_done(pdir, panel_settings_hash(cfg), "the panel", "panel")
    run = pred_path.parent
    trained, predicted = marker_path(run, "_TRAIN_DONE"), marker_path(run, "_PREDICT_DONE")
    if trained.exists() and (not predicted.exists()
                             or trained.stat().st_mtime_ns > predicted.stat().st_mtime_ns):
        raise StaleInputError(f"{pred_path} is unfinished or older than the trained run in {run}: "
                              "run `make predict` again")
    meta = store.read_meta(pdir)
    h = _settings_hash(cfg, pred_path, pdir)
    if is_done(out_dir, h) and (out_dir / "metrics.json").exists():
        log.info("evaluate %s: up to date (%s)", paths.run_name(cfg, model), out_dir)
        return read_json(out_dir / "metrics.json")

    t_start = time.perf_counter()
    card = run / "model.json"
    if card.exists() and read_json(card).get("target", "class") != target:
        raise StaleInputError(f"{card} was trained for target {read_json(card).get('target', 'class')!r} "
                              f"but train.target is {target!r}")
    pred = read_predictions(pred_path, ret_col, need_cap="vw" in weights or cfg.evaluate.top500,
                            probability=not reg)
    years = sorted({int(y) for y in pred["date"].dt.year.unique()})
    benches = list(cfg.evaluate.benchmarks)
    want_chars = bool(cfg.evaluate.characteristics)
    need_history = (bool(benches) or want_chars
                    or (cfg.evaluate.top500 and cfg.evaluate.top500_mode == "annual_june"))
    panel_years = [y for y in meta.years if y <= max(years)] if need_history else years
    cols = (["ret"] + (["mktcap"] if cfg.evaluate.top500_mode == "annual_june" else [])
            + (["close", "volume"] if want_chars else []))
    log.info("reading panel %s (years %s-%s)", pdir, min(panel_years), max(panel_years))
    panel = store.read_panel(pdir, years=panel_years, columns=cols)
    panel["date"] = panel["date"].astype("datetime64[ns]")
    validate_predictions(pred, panel[["stock_id", "date"]], where=str(pred_path))

    # Universe (formation information only), then drop rows without a realised return.
    universe = "all"
    n_pred = len(pred)
    if cfg.evaluate.top500:
        if cfg.evaluate.top500_mode == "annual_june":
            mask = top_n_annual_june(pred, panel)
            universe = "top500_june"
        else:
            mask = top_n_formation(pred)
            universe = "top500"
        pred = pred[mask].reset_index(drop=True)
    n_universe = len(pred)
    df = pred[pred[ret_col].notna()].reset_index(drop=True)
    df = df.rename(columns={ret_col: "ret"})
    if df.empty:
        raise InputError(f"{pred_path}: no rows with a non-missing {ret_col} to evaluate")
    log.info("evaluating %d rows (%d predictions, %d in universe %s)", len(df), n_pred, n_universe,
             universe)

    fit = None
    if reg:  # sign accuracy; the classifier's loss and calibration do not apply (regression.py)
        cls = {**regression.sign_metrics(df["p_up"].to_numpy(), df["ret"].to_numpy()),
               "loss": float("nan")}
        calib = None
        share_up_realised = float(np.mean(df["ret"].to_numpy() > 0))
        years_tab = regression.sign_by_year(df)
        fit = regression.regression_metrics(df["p_up"].to_numpy(), regression_target(
            df["ret"].to_numpy(), df["ewma_vol"].to_numpy(), horizon, target))
    else:
        cls = classification_metrics(df["p_up"].to_numpy(), df["ret"].to_numpy())
        calib = calibration_summary(df["p_up"].to_numpy(), df["ret"].to_numpy())
        share_up_realised = calib["share_up_realised"]
        years_tab = calibration.by_year(df)
    uncal = None
    if "p_up_uncalibrated" in df.columns:
        u = classification_metrics(df["p_up_uncalibrated"].to_numpy(), df["ret"].to_numpy())
        uc = calibration_summary(df["p_up_uncalibrated"].to_numpy(), df["ret"].to_numpy())
        uncal = {"loss": u["loss"], "accuracy": u["accuracy"], "mcc": u["mcc"],
                 "share_up_pred": u["share_up_pred"], "ece": uc["ece"], "bins": uc["bins"]}
    acc_se = accuracy_cluster_se(df["p_up"].to_numpy(), df["ret"].to_numpy(), df["date"].to_numpy(),
                                 threshold=regression.SIGN_THRESHOLD if reg else 0.5)
    bayes = None
    if meta.source == "synthetic":
        bayes = bayes_bound(cfg, df, label_suffix(horizon, cfg.train.label_return))
        bayes["gain_recovered"] = gain_recovered(cls["accuracy"], bayes["accuracy"])
        bayes["gain_recovered_se"] = gain_recovered_se(cls["accuracy"], acc_se, bayes["accuracy"],
                                                       bayes["stderr"])
    corr_by_date = correlations_by_date(df, "p_up", "ret")
    corr = mean_correlations(corr_by_date)
    ic = ic_by_date(corr_by_date)  # the IC is the per-date Spearman: its mean is metrics["spearman"]
    members = []
    for c in sorted((c for c in df.columns if c.startswith("p_up_m")), key=lambda s: int(s[6:])):
        if reg:
            m = {**regression.sign_metrics(df[c].to_numpy(), df["ret"].to_numpy()), "loss": float("nan")}
        else:
            m = classification_metrics(df[c].to_numpy(), df["ret"].to_numpy())
        members.append({"member": int(c[6:]), "loss": m["loss"], "accuracy": m["accuracy"],
                        "mcc": m["mcc"]})

    evals: dict[str, SignalEvaluation] = {"CNN": evaluate_signal(df, "p_up", "ret", freq, weights)}
    sig = None
    if benches:
        sig = benchmark_signals(panel, df[["stock_id", "date"]], freq, benches,
                                history_days=cfg.evaluate.trend_history_days)
        for b in benches:
            d = df[["stock_id", "date", "ret", "mktcap"]].copy() if "mktcap" in df.columns else \
                df[["stock_id", "date", "ret"]].copy()
            d[b] = sig[b].to_numpy()
            evals[b] = evaluate_signal(d, b, "ret", freq, weights)
    char_corr = None
    if want_chars:
        # The evaluated rows (universe applied, missing returns dropped): the portfolios' rows.
        t_chars = time.perf_counter()
        chars = characteristics(panel, df[["stock_id", "date"]], freq,
                                history_days=cfg.evaluate.trend_history_days, signals=sig)
        char_corr = characteristic_correlations(df[["stock_id", "date", "p_up"]], chars,
                                                names=CHARACTERISTICS)
        del chars
        log.info("characteristics: %d rows, %.1f s", len(df), time.perf_counter() - t_chars)
    del panel
    delay_tab = delay_port = None
    if cfg.evaluate.delays:  # the universe's rows, before the missing-return filter (delays.py)
        delay_tab, delay_port = delays.evaluate_delays(
            pred, "p_up", ret_col, label_suffix(horizon, cfg.train.label_return), freq, weights,
            list(cfg.evaluate.delays), pdir, cfg.images.period_ret_mode)

    # ---- artifacts
    proxy = bool(meta.mktcap_is_proxy)
    note = conventions_text(freq, proxy, weights, universe=universe, return_column=ret_col)
    uni_key = "top500" if universe != "all" else "all"
    label = f"{model_name}/R{horizon}" + (f"-{paths.TARGET_SUFFIX[target]}" if reg else "")
    summaries = {name: _hl_summary(ev, weights) for name, ev in evals.items()}
    cnn = summaries["CNN"]
    cost_bps = float(cfg.evaluate.cost_bps)
    details, net_long, by_year = hl_details(evals["CNN"], weights, freq, cost_bps)
    metrics = {
        "run": paths.run_name(cfg, model), "model": model_name, "horizon": horizon, "target": target,
        "frequency": freq, "return_column": ret_col, "universe": universe,
        "mktcap_is_proxy": proxy, "vw_label": weighting_label("vw", proxy),
        "n_predictions": n_pred, "n_universe": n_universe, "n": cls["n"],
        "n_dropped_missing_return": n_universe - len(df),
        "loss": cls["loss"], "accuracy": cls["accuracy"], "accuracy_se": acc_se, "mcc": cls["mcc"],
        "confusion": {key: cls[key] for key in ("tp", "tn", "fp", "fn")},
        "share_up_pred": cls["share_up_pred"],
        "share_up_realised": share_up_realised,
        "ln2": float(np.log(2.0)),
        "calibration": calib,
        "by_year": [{"year": int(y), **{k: int(v) if k == "n" else float(v) for k, v in r.items()}}
                    for y, r in years_tab.iterrows()],
        "uncalibrated": uncal,
        "bayes": bayes,
        "regression": fit,
        "not_applicable": dict(regression.NOT_APPLICABLE) if reg else {},
        "delays": None if delay_tab is None else delay_tab.to_dict(orient="records"),
        "spearman": corr["spearman"], "pearson": corr["pearson"],
        "n_dates_corr": corr["n_dates"], "n_dates_corr_undefined": corr["n_dates_undefined"],
        "members": members,
        "strategies": summaries,
        **details,
        "ic": ic_summary(ic),
        "characteristics": None if char_corr is None else {
            c: {key: (int(r[key]) if key == "n_dates" else float(r[key]))
                for key in ("mean", "sd", "t", "t_nw", "n_dates")}
            for c, r in char_corr.iterrows()},
        "conventions": note,
        "paper": classification_reference(model_name, horizon, cfg.train.split),
    }
    for w in ("ew", "vw"):
        metrics[f"sharpe_{w}"] = cnn.get(f"{w}_sr", float("nan"))
        metrics[f"hl_ret_{w}"] = cnn.get(f"{w}_ret", float("nan"))
        metrics[f"hl_t_{w}"] = cnn.get(f"{w}_t", float("nan"))
        metrics[f"turnover_{w}_pct"] = cnn.get(f"{w}_turnover", float("nan"))
    metrics["vs_benchmarks"] = versus_benchmarks(evals, weights, freq)
    metrics["seconds"] = round(time.perf_counter() - t_start, 1)
    metrics = _nan_to_none(metrics)

    ports = []
    tos = []
    for name, ev in evals.items():
        ports.append(ev.returns.assign(strategy=name))
        tos.append(ev.turnover.assign(strategy=name))
    port = pd.concat(ports, ignore_index=True)[["date", "strategy", "weighting", "decile", "ret", "n"]]
    write_parquet(out_dir / "portfolios.parquet", port)
    write_parquet(out_dir / "turnover_by_date.parquet",
                  pd.concat(tos, ignore_index=True)[["date", "strategy", "weighting", "turnover"]])
    write_parquet(out_dir / "net_hl_by_date.parquet", net_long)
    write_parquet(out_dir / "ic_by_date.parquet", ic)
    if delay_tab is not None:
        write_parquet(out_dir / "delays.parquet", delay_tab)
        write_parquet(out_dir / "delay_portfolios.parquet", delay_port)
        atomic_write_text(out_dir / "tables" / "delays.csv", delays.table_csv(
            delay_tab, note + f" Holding period delayed by d records after the image date (the "
            f"label's length kept); rows without a delayed {ret_col} are dropped per delay."))
        write_figure(out_dir / "figures" / "delays.png", delays.delay_figure(
            delay_tab, proxy, f"CNN {label}: H-L portfolio with a delayed holding period"))
    write_json(out_dir / "turnover.json", _nan_to_none({
        "unit": "% per month (mean per-rebalance H-L turnover x4 weekly, x1 monthly, /3 quarterly)",
        "frequency": freq,
        **{name: {w: ev.turnover_monthly_pct.get(w) for w in weights} for name, ev in evals.items()},
    }))

    tdir = out_dir / "tables"
    paper_dec = decile_reference(model_name, horizon, uni_key)
    paper_hl = cnn_reference(model_name, horizon, uni_key, cfg.train.split)
    num = tables.decile_table(evals["CNN"].performance, evals["CNN"].turnover_monthly_pct, proxy,
                              weights, paper_dec, paper_hl)
    src = tables.sources_note([paper_dec or paper_hl])
    tables.write("deciles", num, tdir / "deciles", note + (" " + src if src else ""),
                 f"CNN {label}: decile portfolios ({universe} stocks)",
                 paper_hl_stars=paper_dec.hl_stars_ew if paper_dec else "")
    for b in benches:
        ref = decile_reference(b, horizon, uni_key)
        num_b = tables.decile_table(evals[b].performance, evals[b].turnover_monthly_pct, proxy,
                                    weights, ref, None)
        src_b = tables.sources_note([ref])
        tables.write("deciles", num_b, tdir / f"deciles_{b}", note + (" " + src_b if src_b else ""),
                     f"{b} (R{horizon} rebalancing): decile portfolios ({universe} stocks)",
                     paper_hl_stars=ref.hl_stars_ew if ref else "")
    years_oos = cnn.get("ew_n_periods", 0) / k if "ew" in weights else cnn.get(f"{weights[0]}_n_periods", 0) / k
    rows = []
    refs = []
    for name, s in summaries.items():
        strat = "CNN" if name == "CNN" else name
        ref = (cnn_reference(model_name, horizon, uni_key, cfg.train.split) if name == "CNN"
               else hl_reference(name, horizon, uni_key))
        refs.append(ref)
        row = {"strategy": f"CNN {label}" if name == "CNN" else name, "n_rows": s["n_rows"],
               "n_dates": s["n_dates_sorted"], "paper": ref}
        for w in weights:
            row[f"{w}_ret"], row[f"{w}_t"] = s[f"{w}_ret"], s[f"{w}_t"]
            row[f"{w}_sr"], row[f"{w}_turnover"] = s[f"{w}_sr"], s[f"{w}_turnover"]
            if strat != "CNN":
                # Sharpe difference t = dSR * sqrt(OOS years), the authors' rule (METHOD 7).
                row[f"sr_diff_t_{w}"] = (cnn[f"{w}_sr"] - s[f"{w}_sr"]) * np.sqrt(years_oos)
        rows.append(row)
    bnum = tables.benchmark_table(rows, proxy, weights)
    src = tables.sources_note(refs)
    bnote = (note + " Benchmarks are sorted in their predictive direction (STR and WSTR negated) "
             "on the same (stock, date) rows and returns as the CNN, less rows where the benchmark "
             "lacks history. SR diff t = (SR_CNN - SR) x sqrt(OOS years); */**/*** one-sided "
             "10/5/1% (1.28/1.645/2.33).") + (" " + src if src else "")
    tables.write("benchmarks", bnum, tdir / "benchmarks", bnote,
                 f"H-L portfolios: CNN {label} vs benchmarks ({universe} stocks)")

    cnum = tables.net_of_cost_table(details["net_of_cost"], details["legs"], details["drawdown"], proxy,
                                    weights)
    tables.write("net_of_cost", cnum, tdir / "net_of_cost",
                       note + " " + cost_text(cost_bps) + " Legs: the High and Low decile portfolios "
                       "held long. Drawdown dates are formation dates of the periods ending at the "
                       "peak and the trough.",
                       f"CNN {label}: H-L legs, net of {cost_bps:g} bp per side, drawdown "
                       f"({universe} stocks)")
    ynum = tables.by_year_table(by_year, proxy, weights)
    tables.write("hl_by_year", ynum, tdir / "hl_by_year",
                       note + " Years are calendar years of the formation date; returns are "
                       "annualised with the full-year factor; */**/*** from the plain t.",
                       f"CNN {label}: H-L portfolio by year ({universe} stocks)")

    if char_corr is not None:
        hnum = tables.characteristics_table(char_corr, LABELS)
        tables.write(
            "characteristics", hnum, tdir / "characteristics",
            note + " Per date, the Spearman correlation across stocks of P(up) with each "
            "characteristic at the formation date (no later data), averaged over dates; dates with "
            f"fewer than {MIN_STOCKS} stocks having both values are skipped. t = mean / (sd / "
            "sqrt(dates)); */**/*** from the Newey-West t, two-sided 10/5/1%. Characteristics from "
            "OHLCV only, the project's definitions (pipeline/evaluate/characteristics.py; the "
            "paper's are unverified); STR and WSTR are the benchmark signals, i.e. minus the past "
            "21- and 5-day returns; size and bid-ask spread need CRSP and are not computed.",
            f"CNN {label}: Spearman correlation of P(up) with stock characteristics (Table 5 of the "
            f"paper), {universe} stocks")

    fdir = out_dir / "figures"
    write_figure(fdir / "deciles.png", plots.decile_bars(
        evals["CNN"].performance, proxy, f"CNN {label}: annualised decile returns", weights).figure)
    write_figure(fdir / "cumulative_hl.png", plots.gross_and_net_hl(
        evals["CNN"].returns, proxy, f"CNN {label}: cumulative H-L return", weights,
        net=net_long, cost_bps=cost_bps).figure)
    write_figure(fdir / "ic.png", plots.ic_bars(
        ic, title=f"CNN {label}: information coefficient per {freq}").figure)
    if reg:
        write_figure(fdir / "prediction_hist.png", regression.prediction_histogram(
            df["p_up"].to_numpy(), title=f"CNN {label}: out-of-sample predictions, n = {len(df):,}",
            xlabel="predicted " + target.replace("_", " ")).figure)
    else:
        write_figure(fdir / "reliability.png", plots.reliability_diagram(
            pd.DataFrame(calib["bins"]), label=f"CNN {label}").figure)
        write_figure(fdir / "share_up_by_year.png", plots.share_up_by_year(years_tab).figure)
        write_figure(fdir / "p_up_hist.png", plots.p_up_histogram(
            df["p_up"].to_numpy(), f"CNN {label}: out-of-sample P(up), n = {len(df):,}").figure)

    write_json(out_dir / "metrics.json", metrics)
    save_resolved(cfg, out_dir)
    mark_done(out_dir, h, run=paths.run_name(cfg, model))
    fit_text = (f"loss {cls['loss']:.4f} (ln 2 = 0.6931)" if not reg else
                f"MSE {fit['mse']:.4g}, R2_oos {fit['r2_oos']:.4f}, sign")
    log.info("evaluate %s: accuracy %.4f%s, %s, predicted up %.1f%% (realised "
             "%.1f%%), ECE %s, EW H-L SR %s -> %s", metrics["run"], cls["accuracy"],
             f" (Bayes {bayes['accuracy']:.4f}, {bayes['gain_recovered']:.0%} of the gain; the Bayes rule "
             f"calls {bayes['share_up_bayes']:.1%} up)" if bayes else "",
             fit_text, 100 * cls["share_up_pred"], 100 * share_up_realised,
             "n/a" if calib is None else f"{calib['ece']:.4f}",
             "n/a" if metrics.get("sharpe_ew") is None else f"{metrics['sharpe_ew']:.2f}", out_dir)
    return metrics
