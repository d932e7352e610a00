"""Evaluate one run: predictions + panel -> metrics, portfolios, benchmarks, tables, figures.

    evaluate_run(cfg) -> dict               (the metrics.json content)

The stage is: input checks and the skip test (:func:`_evaluate_run`), read (:func:`read_inputs`),
compute (:func:`compute`, :func:`compute_delays`, :func:`metrics_dict`: pure functions of the
frames read, returning frames and dicts), format (pipeline.evaluate.outputs.format_outputs: tables,
texts and figures, no I/O) and write (pipeline.evaluate.outputs.write_outputs: every file
atomically, the completion marker last).

It reads ``paths.run_dir(cfg)/predictions.parquet`` and the canonical panel, and writes into
``paths.eval_dir(cfg)``::

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
    provenance.json         stage, run, inputs (predictions and panel paths), commit, package
                            versions, machine (pipeline.runs.provenance; not in the settings hash)
    config.yaml, _DONE.json (settings hash: reruns with unchanged inputs do nothing)

The label/return column is ``ret_{label_suffix(horizon, label_return)}``; the rebalance frequency
follows the horizon (R5 weekly, R20 monthly, R60 quarterly).
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd

from pipeline.direction import P_UP_THRESHOLD, SIGN_THRESHOLD
from pipeline.errors import InputError
from pipeline import paths
from pipeline.config import PROCESS_SETTINGS, Config, hash_view, is_regression, section_hash
from pipeline.evaluate import calibration, delays, hl_analysis, regression
from pipeline.evaluate.bayes import bayes_bound, gain_recovered, gain_recovered_se
from pipeline.evaluate.calibration import calibration_summary
from pipeline.evaluate.benchmarks import benchmark_signals
from pipeline.evaluate.characteristics import CHARACTERISTICS, characteristic_correlations, characteristics
from pipeline.evaluate.conventions import (HL, conventions_text, frequency_of_horizon, periods_per_year,
                                           weighting_label)
from pipeline.evaluate.metrics import (accuracy_cluster_se, classification_metrics, correlations_by_date,
                                      ic_by_date, ic_summary, mean_correlations)
from pipeline.evaluate.outputs import format_outputs, json_ready, write_outputs
from pipeline.evaluate.portfolios import SignalEvaluation, evaluate_signal
from pipeline.evaluate.statistics import compare_with
from pipeline.images.build import PanelKeys, read_panel_keys
from pipeline.images.labels import regression_target
from pipeline.images.store import label_suffix
from pipeline.io import (StaleInputError, folder_lock, input_stamp, is_done, read_json,
                         remove_stale_temps, require_done)
from pipeline.panel import store
from pipeline.panel.build import panel_settings_hash
from pipeline.panel.store import PanelMeta
from pipeline.paper_numbers import classification_reference

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
# What is evaluated


@dataclass(frozen=True)
class EvalSpec:
    """What one evaluation evaluates and how, from the config alone (:func:`eval_spec`)."""

    run: str  # paths.run_name: the run folder and the eval folder's name
    model: str  # the model evaluated (train.model, or an ablation variant)
    horizon: int  # 5 | 20 | 60
    target: str  # train.target: class | return | vol_adjusted_return
    regression: bool  # the score is a predicted target, not P(up)
    freq: str  # rebalancing: week | month | quarter
    periods: int  # rebalances per year
    suffix: str  # label_suffix(horizon, label_return): week, month, ..., 5d, ...
    ret_col: str  # ret_<suffix>: the realised return portfolios are held for
    split: str  # train.split (which paper numbers apply)
    weights: list[str]  # ew | vw
    benchmarks: list[str]  # MOM, STR, WSTR, TREND
    characteristics: bool  # Table 5 correlations
    delays: list[int]  # delayed holding periods, records
    cost_bps: float  # trading cost per side, basis points
    top500: bool
    top500_mode: str  # formation | annual_june
    trend_history_days: int  # panel days of history the benchmarks and characteristics use
    period_ret_mode: str  # images.period_ret_mode (the delayed returns follow the label's rule)

    @property
    def label(self) -> str:
        """The run in titles: ``<model>/R<h>``, plus ``-reg`` or ``-regvol`` for a regression."""
        return f"{self.model}/R{self.horizon}" + (f"-{paths.TARGET_SUFFIX[self.target]}"
                                                  if self.regression else "")

    @property
    def needs_cap(self) -> bool:
        """Whether the predictions' mktcap is read (value weights or a top-500 universe)."""
        return "vw" in self.weights or self.top500

    @property
    def panel_columns(self) -> list[str]:
        """Panel columns read besides stock_id and date."""
        return (["ret"] + (["mktcap"] if self.top500_mode == "annual_june" else [])
                + (["close", "volume"] if self.characteristics else []))

    @property
    def needs_history(self) -> bool:
        """Whether panel years before the first prediction year are read (benchmarks,
        characteristics and the June universe look back)."""
        return (bool(self.benchmarks) or self.characteristics
                or (self.top500 and self.top500_mode == "annual_june"))


def eval_spec(cfg: Config) -> EvalSpec:
    """The :class:`EvalSpec` of ``cfg``'s run (``train.model``; an ablation variant's config names
    the variant there)."""
    horizon = cfg.train.horizon
    freq = frequency_of_horizon(horizon)
    suffix = label_suffix(horizon, cfg.train.label_return)
    e = cfg.evaluate
    return EvalSpec(
        run=paths.run_name(cfg), model=cfg.train.model, horizon=horizon,
        target=cfg.train.target, regression=is_regression(cfg.train.target), freq=freq,
        periods=periods_per_year(freq), suffix=suffix, ret_col=f"ret_{suffix}", split=cfg.train.split,
        weights=list(e.weights), benchmarks=list(e.benchmarks), characteristics=bool(e.characteristics),
        delays=list(e.delays), cost_bps=float(e.cost_bps), top500=bool(e.top500),
        top500_mode=e.top500_mode, trend_history_days=e.trend_history_days,
        period_ret_mode=cfg.images.period_ret_mode)


@dataclass
class EvalInputs:
    """What the stage reads (:func:`read_inputs`)."""

    path: Path  # predictions.parquet
    pred: pd.DataFrame  # every prediction (read_predictions: validated, (date, stock_id) order)
    panel: pd.DataFrame  # stock_id, date and EvalSpec.panel_columns of the years needed
    meta: PanelMeta


def read_inputs(spec: EvalSpec, pred_path: Path, panel_dir: Path, meta: PanelMeta) -> EvalInputs:
    """Read the predictions and the panel years and columns the evaluation needs, and refuse
    predictions that are not panel records (:func:`validate_predictions`)."""
    pred = read_predictions(pred_path, spec.ret_col, need_cap=spec.needs_cap,
                            probability=not spec.regression)
    years = sorted({int(y) for y in pred["date"].dt.year.unique()})
    panel_years = [y for y in meta.years if y <= max(years)] if spec.needs_history else years
    log.info("reading panel %s (years %s-%s)", panel_dir, min(panel_years), max(panel_years))
    panel = store.read_panel(panel_dir, years=panel_years, columns=spec.panel_columns)
    panel["date"] = panel["date"].astype("datetime64[ns]")
    validate_predictions(pred, panel[["stock_id", "date"]], where=str(pred_path))
    return EvalInputs(pred_path, pred, panel, meta)


def _settings_hash(cfg: Config, pred_path: Path, panel_dir: Path) -> str:
    meta = read_json(panel_dir / "meta.json")
    train = {k: v for k, v in hash_view("train", cfg.train).items() if k not in PROCESS_SETTINGS}
    return section_hash(hash_view("evaluate", cfg.evaluate), train, {"predictions": input_stamp(pred_path),
                                                  "panel": meta, "synthetic": cfg.synthetic, "version": 6})


# --------------------------------------------------------------------------------------------------
# Compute: pure functions of the inputs (no file is read or written)


@dataclass
class Evaluation:
    """Everything computed from the predictions and the panel (:func:`compute`)."""

    universe: str  # all | top500 | top500_june
    n_predictions: int  # prediction rows read
    universe_rows: pd.DataFrame  # the universe's predictions, missing returns kept (the delays' rows)
    rows: pd.DataFrame  # the evaluated rows: the universe's with a realised return, renamed "ret"
    mktcap_is_proxy: bool
    conventions: str  # the conventions note under every table
    cls: dict  # pooled classification (or sign) metrics of p_up
    calibration: dict | None  # calibration_summary; None for a regression
    share_up_realised: float
    by_year: pd.DataFrame  # per calendar year: shares, accuracy, ECE (calibration.by_year)
    regression: dict | None  # MSE, R2_oos of a regression run
    uncalibrated: dict | None  # metrics of p_up_uncalibrated, when present
    accuracy_se: float  # clustered by date
    bayes: dict | None  # synthetic market only
    correlations: dict  # date-averaged Spearman and Pearson
    ic: pd.DataFrame  # per-date IC: date, ic, n
    members: list[dict]  # per member: member, loss, accuracy, mcc
    evals: dict[str, SignalEvaluation]  # "CNN" and each benchmark
    characteristics: pd.DataFrame | None  # per characteristic: mean, sd, t, t_nw, n_dates
    summaries: dict[str, dict]  # per strategy: the H-L summary (:func:`_hl_summary`)
    details: dict  # net_of_cost, legs, drawdown, by_year_hl of the CNN (:func:`hl_details`)
    net: pd.DataFrame  # the CNN's H-L gross and net per date and weighting
    by_year_hl: pd.DataFrame  # the CNN's H-L per weighting and calendar year
    delays: pd.DataFrame | None = None  # :func:`pipeline.evaluate.delays.evaluate_delays`' table
    delay_portfolios: pd.DataFrame | None = None  # ... and portfolios


def select_universe(pred: pd.DataFrame, panel: pd.DataFrame, spec: EvalSpec) -> tuple[pd.DataFrame, str]:
    """The predictions of the evaluated universe (formation information only, before any row is
    dropped for a missing return) and its name: all | top500 | top500_june."""
    if not spec.top500:
        return pred, "all"
    if spec.top500_mode == "annual_june":
        return pred[top_n_annual_june(pred, panel)].reset_index(drop=True), "top500_june"
    return pred[top_n_formation(pred)].reset_index(drop=True), "top500"


def score_metrics(df: pd.DataFrame, spec: EvalSpec) -> dict:
    """Metrics of the score ``p_up`` against the realised ``ret`` of the evaluated rows ``df``:
    {"cls", "calibration", "share_up_realised", "by_year", "regression", "uncalibrated",
    "accuracy_se"} (a regression run: sign accuracy; loss and calibration do not apply,
    regression.py)."""
    p, r = df["p_up"].to_numpy(), df["ret"].to_numpy()
    out: dict = {"regression": None, "uncalibrated": None}
    if spec.regression:
        out["cls"] = {**regression.sign_metrics(p, r), "loss": float("nan")}
        out["calibration"] = None
        out["share_up_realised"] = float(np.mean(r > 0))
        out["by_year"] = regression.sign_by_year(df)
        out["regression"] = regression.regression_metrics(p, regression_target(
            r, df["ewma_vol"].to_numpy(), spec.horizon, spec.target))
    else:
        out["cls"] = classification_metrics(p, r)
        out["calibration"] = calibration_summary(p, r)
        out["share_up_realised"] = out["calibration"]["share_up_realised"]
        out["by_year"] = calibration.by_year(df)
    if "p_up_uncalibrated" in df.columns:
        u = classification_metrics(df["p_up_uncalibrated"].to_numpy(), r)
        uc = calibration_summary(df["p_up_uncalibrated"].to_numpy(), r)
        out["uncalibrated"] = {"loss": u["loss"], "accuracy": u["accuracy"], "mcc": u["mcc"],
                               "share_up_pred": u["share_up_pred"], "ece": uc["ece"], "bins": uc["bins"]}
    threshold = SIGN_THRESHOLD if spec.regression else P_UP_THRESHOLD
    out["accuracy_se"] = accuracy_cluster_se(p, r, df["date"].to_numpy(), threshold=threshold)
    return out


def bayes_summary(cfg: Config, df: pd.DataFrame, spec: EvalSpec, accuracy: float,
                  accuracy_se: float) -> dict:
    """The Bayes-optimal accuracy of exactly the evaluated rows on the synthetic market, and the
    fraction of its gain over a coin flip the CNN recovered (pipeline.evaluate.bayes)."""
    bayes = bayes_bound(cfg, df, spec.suffix)
    bayes["gain_recovered"] = gain_recovered(accuracy, bayes["accuracy"])
    bayes["gain_recovered_se"] = gain_recovered_se(accuracy, accuracy_se, bayes["accuracy"],
                                                   bayes["stderr"])
    return bayes


def member_metrics(df: pd.DataFrame, reg: bool) -> list[dict]:
    """Per ``p_up_m<j>`` column of ``df``, in member order: member, loss, accuracy, mcc."""
    members = []
    for c in sorted((c for c in df.columns if c.startswith("p_up_m")), key=lambda s: int(s[6:])):
        if reg:
            m = {**regression.sign_metrics(df[c].to_numpy(), df["ret"].to_numpy()), "loss": float("nan")}
        else:
            m = classification_metrics(df[c].to_numpy(), df["ret"].to_numpy())
        members.append({"member": int(c[6:]), "loss": m["loss"], "accuracy": m["accuracy"],
                        "mcc": m["mcc"]})
    return members


def signal_evaluations(df: pd.DataFrame, panel: pd.DataFrame, spec: EvalSpec
                       ) -> tuple[dict[str, SignalEvaluation], pd.DataFrame | None]:
    """Decile portfolios of the CNN's score and of every benchmark on the same rows and returns:
    ({"CNN": ..., "<BENCH>": ...}, the benchmark signals aligned with ``df`` or None)."""
    evals = {"CNN": evaluate_signal(df, "p_up", "ret", spec.freq, spec.weights)}
    if not spec.benchmarks:
        return evals, None
    sig = benchmark_signals(panel, df[["stock_id", "date"]], spec.freq, spec.benchmarks,
                            history_days=spec.trend_history_days)
    for b in spec.benchmarks:
        d = df[["stock_id", "date", "ret", "mktcap"]].copy() if "mktcap" in df.columns else \
            df[["stock_id", "date", "ret"]].copy()
        d[b] = sig[b].to_numpy()
        evals[b] = evaluate_signal(d, b, "ret", spec.freq, spec.weights)
    return evals, sig


def characteristic_summary(df: pd.DataFrame, panel: pd.DataFrame, spec: EvalSpec,
                           signals: pd.DataFrame | None) -> pd.DataFrame:
    """Table 5: per characteristic, the per-date Spearman correlation of P(up) with it over the
    evaluated rows (the portfolios' rows), summarised (characteristic_correlations)."""
    t0 = time.perf_counter()
    chars = characteristics(panel, df[["stock_id", "date"]], spec.freq,
                            history_days=spec.trend_history_days, signals=signals)
    out = characteristic_correlations(df[["stock_id", "date", "p_up"]], chars, names=CHARACTERISTICS)
    log.info("characteristics: %d rows, %.1f s", len(df), time.perf_counter() - t0)
    return out


def compute(cfg: Config, spec: EvalSpec, inputs: EvalInputs) -> Evaluation:
    """Everything the evaluation reports except the delayed holding periods (:func:`compute_delays`,
    which needs the panel's keys rather than its columns). ``cfg``: its synthetic market (the Bayes
    bound). Raises InputError when no row of the universe has a realised return."""
    pred, panel, meta = inputs.pred, inputs.panel, inputs.meta
    universe_rows, universe = select_universe(pred, panel, spec)
    df = universe_rows[universe_rows[spec.ret_col].notna()].reset_index(drop=True)
    df = df.rename(columns={spec.ret_col: "ret"})
    if df.empty:
        raise InputError(f"{inputs.path}: no rows with a non-missing {spec.ret_col} to evaluate")
    log.info("evaluating %d rows (%d predictions, %d in universe %s)", len(df), len(pred),
             len(universe_rows), universe)
    sm = score_metrics(df, spec)
    bayes = (bayes_summary(cfg, df, spec, sm["cls"]["accuracy"], sm["accuracy_se"])
             if meta.source == "synthetic" else None)
    corr_by_date = correlations_by_date(df, "p_up", "ret")
    corr = mean_correlations(corr_by_date)
    evals, sig = signal_evaluations(df, panel, spec)
    char_corr = characteristic_summary(df, panel, spec, sig) if spec.characteristics else None
    details, net, by_year_hl = hl_details(evals["CNN"], spec.weights, spec.freq, spec.cost_bps)
    proxy = bool(meta.mktcap_is_proxy)
    return Evaluation(
        universe=universe, n_predictions=len(pred), universe_rows=universe_rows, rows=df,
        mktcap_is_proxy=proxy,
        conventions=conventions_text(spec.freq, proxy, spec.weights, universe=universe,
                                     return_column=spec.ret_col),
        cls=sm["cls"], calibration=sm["calibration"], share_up_realised=sm["share_up_realised"],
        by_year=sm["by_year"], regression=sm["regression"], uncalibrated=sm["uncalibrated"],
        accuracy_se=sm["accuracy_se"], bayes=bayes, correlations=corr,
        ic=ic_by_date(corr_by_date),  # the IC is the per-date Spearman: its mean is metrics["spearman"]
        members=member_metrics(df, spec.regression), evals=evals, characteristics=char_corr,
        summaries={name: _hl_summary(ev, spec.weights) for name, ev in evals.items()},
        details=details, net=net, by_year_hl=by_year_hl)


def compute_delays(spec: EvalSpec, ev: Evaluation, keys: PanelKeys) -> None:
    """Fill ``ev.delays`` and ``ev.delay_portfolios``: the score evaluated with its holding period
    delayed (the universe's rows, before the missing-return filter; pipeline.evaluate.delays).
    ``keys``: the panel's key columns (:func:`pipeline.images.build.read_panel_keys`)."""
    ev.delays, ev.delay_portfolios = delays.evaluate_delays(
        ev.universe_rows, "p_up", spec.ret_col, spec.suffix, spec.freq, spec.weights, spec.delays,
        None, spec.period_ret_mode, keys=keys)


def metrics_dict(spec: EvalSpec, ev: Evaluation, seconds: float) -> dict:
    """The content of metrics.json (docs/interfaces.md; non-finite numbers as None)."""
    cls, cnn = ev.cls, ev.summaries["CNN"]
    n_universe = len(ev.universe_rows)
    metrics = {
        "run": spec.run, "model": spec.model, "horizon": spec.horizon, "target": spec.target,
        "frequency": spec.freq, "return_column": spec.ret_col, "universe": ev.universe,
        "mktcap_is_proxy": ev.mktcap_is_proxy, "vw_label": weighting_label("vw", ev.mktcap_is_proxy),
        "n_predictions": ev.n_predictions, "n_universe": n_universe, "n": cls["n"],
        "n_dropped_missing_return": n_universe - len(ev.rows),
        "loss": cls["loss"], "accuracy": cls["accuracy"], "accuracy_se": ev.accuracy_se, "mcc": cls["mcc"],
        "confusion": {key: cls[key] for key in ("tp", "tn", "fp", "fn")},
        "share_up_pred": cls["share_up_pred"],
        "share_up_realised": ev.share_up_realised,
        "ln2": float(np.log(2.0)),
        "calibration": ev.calibration,
        "by_year": [{"year": int(y), **{k: int(v) if k == "n" else float(v) for k, v in r.items()}}
                    for y, r in ev.by_year.iterrows()],
        "uncalibrated": ev.uncalibrated,
        "bayes": ev.bayes,
        "regression": ev.regression,
        "not_applicable": dict(regression.NOT_APPLICABLE) if spec.regression else {},
        "delays": None if ev.delays is None else ev.delays.to_dict(orient="records"),
        "spearman": ev.correlations["spearman"], "pearson": ev.correlations["pearson"],
        "n_dates_corr": ev.correlations["n_dates"],
        "n_dates_corr_undefined": ev.correlations["n_dates_undefined"],
        "members": ev.members,
        "strategies": ev.summaries,
        **ev.details,
        "ic": ic_summary(ev.ic),
        "characteristics": None if ev.characteristics is None else {
            c: {key: (int(r[key]) if key == "n_dates" else float(r[key]))
                for key in ("mean", "sd", "t", "t_nw", "n_dates")}
            for c, r in ev.characteristics.iterrows()},
        "conventions": ev.conventions,
        "paper": classification_reference(spec.model, spec.horizon, spec.split),
    }
    for w in ("ew", "vw"):
        metrics[f"sharpe_{w}"] = cnn.get(f"{w}_sr", float("nan"))
        metrics[f"hl_ret_{w}"] = cnn.get(f"{w}_ret", float("nan"))
        metrics[f"hl_t_{w}"] = cnn.get(f"{w}_t", float("nan"))
        metrics[f"turnover_{w}_pct"] = cnn.get(f"{w}_turnover", float("nan"))
    metrics["vs_benchmarks"] = versus_benchmarks(ev.evals, spec.weights, spec.freq)
    metrics["seconds"] = round(seconds, 1)
    return json_ready(metrics)


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


# --------------------------------------------------------------------------------------------------
# The stage


def evaluate_run(cfg: Config) -> dict:
    """Evaluate the run ``paths.run_dir(cfg)``; returns the metrics dict (also metrics.json).

    Resumable: when the eval dir holds a completion marker with the same settings hash (evaluate
    and train config, predictions file content, panel meta), nothing is recomputed. Refuses an
    unfinished or stale panel and predictions not from the run's current training; one process at a time
    writes the eval folder.
    """
    out_dir = paths.eval_dir(cfg)
    with folder_lock(out_dir, "evaluate"):  # one writer; what a killed run left is removed
        if n := remove_stale_temps(out_dir):
            log.info("removed %d temporary file(s) left in %s by an interrupted run", n, out_dir)
        return _evaluate_run(cfg)


def _evaluate_run(cfg: Config) -> dict:
    """Check the inputs, then read -> compute -> format -> write (or skip when done)."""
    spec = eval_spec(cfg)
    pred_path = paths.run_dir(cfg) / "predictions.parquet"
    out_dir = paths.eval_dir(cfg)
    pdir = paths.panel_dir(cfg)
    if not pred_path.exists():
        raise FileNotFoundError(f"no predictions at {pred_path}: run `make predict` first")
    require_done(pdir, panel_settings_hash(cfg), "the panel", "panel")
    run = pred_path.parent
    from pipeline.runs import require_current_predictions  # imported here: it brings in torch

    require_current_predictions(run, trained=False)  # a run folder without training: imported
    meta = store.read_meta(pdir)
    h = _settings_hash(cfg, pred_path, pdir)
    if is_done(out_dir, h) and (out_dir / "metrics.json").exists():
        log.info("evaluate %s: up to date (%s)", spec.run, out_dir)
        return read_json(out_dir / "metrics.json")

    t_start = time.perf_counter()
    card = run / "model.json"
    if card.exists() and read_json(card).get("target", "class") != spec.target:
        raise StaleInputError(f"{card} was trained for target {read_json(card).get('target', 'class')!r} "
                              f"but train.target is {spec.target!r}")
    inputs = read_inputs(spec, pred_path, pdir, meta)
    ev = compute(cfg, spec, inputs)
    del inputs  # the panel's columns are not needed any more; the delays read its keys
    if spec.delays:
        compute_delays(spec, ev, read_panel_keys(pdir))
    metrics = metrics_dict(spec, ev, time.perf_counter() - t_start)
    write_outputs(out_dir, format_outputs(spec, ev, metrics), cfg, h,
                  inputs={"predictions": str(pred_path.resolve()), "panel": str(pdir.resolve())})
    _log_summary(spec, ev, metrics, out_dir)
    return metrics


def _log_summary(spec: EvalSpec, ev: Evaluation, metrics: dict, out_dir: Path) -> None:
    cls, bayes, calib, fit = ev.cls, ev.bayes, ev.calibration, ev.regression
    fit_text = (f"loss {cls['loss']:.4f} (ln 2 = 0.6931)" if not spec.regression else
                f"MSE {fit['mse']:.4g}, R2_oos {fit['r2_oos']:.4f}, sign")
    log.info("evaluate %s: accuracy %.4f%s, %s, predicted up %.1f%% (realised "
             "%.1f%%), ECE %s, EW H-L SR %s -> %s", metrics["run"], cls["accuracy"],
             f" (Bayes {bayes['accuracy']:.4f}, {bayes['gain_recovered']:.0%} of the gain; the Bayes rule "
             f"calls {bayes['share_up_bayes']:.1%} up)" if bayes else "",
             fit_text, 100 * cls["share_up_pred"], 100 * ev.share_up_realised,
             "n/a" if calib is None else f"{calib['ece']:.4f}",
             "n/a" if metrics.get("sharpe_ew") is None else f"{metrics['sharpe_ew']:.2f}", out_dir)
