"""The evaluation stage's files: format what :func:`pipeline.evaluate.core.compute` found, then
write it.

    format_outputs(spec, ev, metrics) -> Outputs          frames, texts, tables and figures; no I/O
    write_outputs(out_dir, outputs, cfg, settings_hash, inputs)
                                                          every file atomically, the marker last

Paths are relative to the eval folder (docs/interfaces.md, Evaluation, lists them). Tables are
numeric frames turned into string cells by their formatter (pipeline.evaluate.tables.FORMATTERS)
and written in every form by :func:`pipeline.evaluate.tables.write_table`; figures are built here
and saved by :func:`pipeline.io.write_figure`.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import pandas as pd
from matplotlib.figure import Figure

from pipeline.config import Config, save_resolved
from pipeline.evaluate import delays, plots, regression, tables
from pipeline.evaluate.characteristics import LABELS, MIN_STOCKS
from pipeline.evaluate.conventions import cost_text
from pipeline.io import atomic_write_text, mark_done, write_figure, write_json, write_parquet
from pipeline.paper_numbers import cnn_reference, decile_reference, hl_reference

if TYPE_CHECKING:  # the compute side imports this module: its types only for annotations
    from pipeline.evaluate.core import EvalSpec, Evaluation

# Tables stored with rows and columns swapped (their rows mix numbers and dates), as tables.write does.
TRANSPOSED_TABLES = ("net_of_cost",)


def json_ready(obj: Any) -> Any:
    """``obj`` with every non-finite float (NaN, inf) replaced by None, dicts and lists recursively:
    the JSON files write missing numbers as ``null``."""
    if isinstance(obj, dict):
        return {k: json_ready(v) for k, v in obj.items()}
    if isinstance(obj, list):
        return [json_ready(v) for v in obj]
    if isinstance(obj, float) and not np.isfinite(obj):
        return None
    return obj


@dataclass
class TableOutput:
    """One evaluation table: the numbers, their string cells, and the words around them."""

    kind: str  # a key of tables.FORMATTERS
    num: pd.DataFrame  # numeric, NaN = not available
    cells: pd.DataFrame  # tables.format_table(kind, num, **options)
    note: str
    caption: str
    options: dict = field(default_factory=dict)  # the formatter's options (kept in the .parquet)


@dataclass
class Outputs:
    """Every file of one evaluation, by path relative to the eval folder."""

    metrics: dict  # metrics.json (written after everything else, before config.yaml and the marker)
    parquet: dict[str, pd.DataFrame] = field(default_factory=dict)
    json: dict[str, dict] = field(default_factory=dict)
    text: dict[str, str] = field(default_factory=dict)
    tables: dict[str, TableOutput] = field(default_factory=dict)  # base path, no suffix
    figures: dict[str, Figure] = field(default_factory=dict)


def _table(kind: str, num: pd.DataFrame, note: str, caption: str, **options: Any) -> TableOutput:
    return TableOutput(kind, num, tables.format_table(kind, num, **options), note, caption, options)


def _with_sources(note: str, refs: list) -> str:
    src = tables.sources_note(refs)
    return note + (" " + src if src else "")


def benchmark_rows(spec: EvalSpec, ev: Evaluation, uni_key: str) -> tuple[list[dict], list]:
    """Rows of the benchmark table (:func:`pipeline.evaluate.tables.benchmark_table`): the CNN and
    each benchmark's H-L numbers, the paper's, and per benchmark the t of the Sharpe ratio
    difference; and the paper references used."""
    cnn = ev.summaries["CNN"]
    w0 = "ew" if "ew" in spec.weights else spec.weights[0]
    years_oos = cnn.get(f"{w0}_n_periods", 0) / spec.periods
    rows, refs = [], []
    for name, s in ev.summaries.items():
        ref = (cnn_reference(spec.model, spec.horizon, uni_key, spec.split) if name == "CNN"
               else hl_reference(name, spec.horizon, uni_key))
        refs.append(ref)
        row = {"strategy": f"CNN {spec.label}" if name == "CNN" else name, "n_rows": s["n_rows"],
               "n_dates": s["n_dates_sorted"], "paper": ref}
        for w in spec.weights:
            row[f"{w}_ret"], row[f"{w}_t"] = s[f"{w}_ret"], s[f"{w}_t"]
            row[f"{w}_sr"], row[f"{w}_turnover"] = s[f"{w}_sr"], s[f"{w}_turnover"]
            if name != "CNN":
                # Sharpe difference t = dSR * sqrt(OOS years), the authors' rule (METHOD 7).
                row[f"sr_diff_t_{w}"] = (cnn[f"{w}_sr"] - s[f"{w}_sr"]) * np.sqrt(years_oos)
        rows.append(row)
    return rows, refs


def _tables(spec: EvalSpec, ev: Evaluation) -> dict[str, TableOutput]:
    """The tables/ folder: deciles (CNN and each benchmark), benchmarks, net_of_cost, hl_by_year,
    characteristics."""
    note, proxy, universe, label = ev.conventions, ev.mktcap_is_proxy, ev.universe, spec.label
    uni_key = "top500" if universe != "all" else "all"
    out: dict[str, TableOutput] = {}
    cnn = ev.evals["CNN"]
    paper_dec = decile_reference(spec.model, spec.horizon, uni_key)
    paper_hl = cnn_reference(spec.model, spec.horizon, uni_key, spec.split)
    out["tables/deciles"] = _table(
        "deciles", tables.decile_table(cnn.performance, cnn.turnover_monthly_pct, proxy, spec.weights,
                                       paper_dec, paper_hl),
        _with_sources(note, [paper_dec or paper_hl]),
        f"CNN {label}: decile portfolios ({universe} stocks)",
        paper_hl_stars=paper_dec.hl_stars_ew if paper_dec else "")
    for b in spec.benchmarks:
        ref = decile_reference(b, spec.horizon, uni_key)
        out[f"tables/deciles_{b}"] = _table(
            "deciles", tables.decile_table(ev.evals[b].performance, ev.evals[b].turnover_monthly_pct,
                                           proxy, spec.weights, ref, None),
            _with_sources(note, [ref]),
            f"{b} (R{spec.horizon} rebalancing): decile portfolios ({universe} stocks)",
            paper_hl_stars=ref.hl_stars_ew if ref else "")
    rows, refs = benchmark_rows(spec, ev, uni_key)
    out["tables/benchmarks"] = _table(
        "benchmarks", tables.benchmark_table(rows, proxy, spec.weights),
        _with_sources(note + " Benchmarks are sorted in their predictive direction (STR and WSTR "
                      "negated) on the same (stock, date) rows and returns as the CNN, less rows where "
                      "the benchmark lacks history. SR diff t = (SR_CNN - SR) x sqrt(OOS years); "
                      "*/**/*** one-sided 10/5/1% (1.28/1.645/2.33).", refs),
        f"H-L portfolios: CNN {label} vs benchmarks ({universe} stocks)")
    d = ev.details
    out["tables/net_of_cost"] = _table(
        "net_of_cost", tables.net_of_cost_table(d["net_of_cost"], d["legs"], d["drawdown"], proxy,
                                                spec.weights),
        note + " " + cost_text(spec.cost_bps) + " Legs: the High and Low decile portfolios held long. "
        "Drawdown dates are formation dates of the periods ending at the peak and the trough.",
        f"CNN {label}: H-L legs, net of {spec.cost_bps:g} bp per side, drawdown ({universe} stocks)")
    out["tables/hl_by_year"] = _table(
        "hl_by_year", tables.by_year_table(ev.by_year_hl, proxy, spec.weights),
        note + " Years are calendar years of the formation date; returns are annualised with the "
        "full-year factor; */**/*** from the plain t.",
        f"CNN {label}: H-L portfolio by year ({universe} stocks)")
    if ev.characteristics is not None:
        out["tables/characteristics"] = _table(
            "characteristics", tables.characteristics_table(ev.characteristics, LABELS),
            note + " Per date, the Spearman correlation across stocks of P(up) with each "
            "characteristic at the formation date (no later data), averaged over dates; dates with "
            f"fewer than {MIN_STOCKS} stocks having both values are skipped. t = mean / (sd / "
            "sqrt(dates)); */**/*** from the Newey-West t, two-sided 10/5/1%. Characteristics from "
            "OHLCV only, the project's definitions (pipeline/evaluate/characteristics.py; the "
            "paper's are unverified); STR and WSTR are the benchmark signals, i.e. minus the past "
            "21- and 5-day returns; size and bid-ask spread need CRSP and are not computed.",
            f"CNN {label}: Spearman correlation of P(up) with stock characteristics (Table 5 of the "
            f"paper), {universe} stocks")
    return out


def _figures(spec: EvalSpec, ev: Evaluation) -> dict[str, Figure]:
    """The figures/ folder (a regression run: prediction_hist instead of the P(up) figures)."""
    proxy, label, cnn, df = ev.mktcap_is_proxy, spec.label, ev.evals["CNN"], ev.rows
    out: dict[str, Figure] = {}
    if ev.delays is not None:
        out["figures/delays.png"] = delays.delay_figure(
            ev.delays, proxy, f"CNN {label}: H-L portfolio with a delayed holding period")
    out["figures/deciles.png"] = plots.decile_bars(
        cnn.performance, proxy, f"CNN {label}: annualised decile returns", spec.weights).figure
    out["figures/cumulative_hl.png"] = plots.gross_and_net_hl(
        cnn.returns, proxy, f"CNN {label}: cumulative H-L return", spec.weights,
        net=ev.net, cost_bps=spec.cost_bps).figure
    out["figures/ic.png"] = plots.ic_bars(
        ev.ic, title=f"CNN {label}: information coefficient per {spec.freq}").figure
    if spec.regression:
        out["figures/prediction_hist.png"] = regression.prediction_histogram(
            df["p_up"].to_numpy(), title=f"CNN {label}: out-of-sample predictions, n = {len(df):,}",
            xlabel="predicted " + spec.target.replace("_", " ")).figure
    else:
        out["figures/reliability.png"] = plots.reliability_diagram(
            pd.DataFrame(ev.calibration["bins"]), label=f"CNN {label}").figure
        out["figures/share_up_by_year.png"] = plots.share_up_by_year(ev.by_year).figure
        out["figures/p_up_hist.png"] = plots.p_up_histogram(
            df["p_up"].to_numpy(), f"CNN {label}: out-of-sample P(up), n = {len(df):,}").figure
    return out


def format_outputs(spec: EvalSpec, ev: Evaluation, metrics: dict) -> Outputs:
    """Every file of the evaluation as content: frames, JSON, text, tables and figures (no I/O)."""
    out = Outputs(metrics=metrics)
    port = pd.concat([e.returns.assign(strategy=name) for name, e in ev.evals.items()], ignore_index=True)
    out.parquet["portfolios.parquet"] = port[["date", "strategy", "weighting", "decile", "ret", "n"]]
    out.parquet["turnover_by_date.parquet"] = pd.concat(
        [e.turnover.assign(strategy=name) for name, e in ev.evals.items()],
        ignore_index=True)[["date", "strategy", "weighting", "turnover"]]
    out.parquet["net_hl_by_date.parquet"] = ev.net
    out.parquet["ic_by_date.parquet"] = ev.ic
    if ev.delays is not None:
        out.parquet["delays.parquet"] = ev.delays
        out.parquet["delay_portfolios.parquet"] = ev.delay_portfolios
        out.text["tables/delays.csv"] = delays.table_csv(
            ev.delays, ev.conventions + f" Holding period delayed by d records after the image date "
            f"(the label's length kept); rows without a delayed {spec.ret_col} are dropped per delay.")
    out.json["turnover.json"] = json_ready({
        "unit": "% per month (mean per-rebalance H-L turnover x4 weekly, x1 monthly, /3 quarterly)",
        "frequency": spec.freq,
        **{name: {w: e.turnover_monthly_pct.get(w) for w in spec.weights} for name, e in ev.evals.items()},
    })
    out.tables = _tables(spec, ev)
    out.figures = _figures(spec, ev)
    return out


def write_outputs(out_dir: Path, outputs: Outputs, cfg: Config, settings_hash: str,
                  inputs: dict[str, str]) -> None:
    """Write every file of ``outputs`` under ``out_dir`` atomically, then ``provenance.json``
    (``stage``, ``run``, ``inputs`` and :func:`pipeline.runs.provenance`; not in the settings hash),
    ``metrics.json``, ``config.yaml`` and, last, the completion marker ``_DONE.json``."""
    from pipeline.provenance import provenance

    for rel, frame in outputs.parquet.items():
        write_parquet(out_dir / rel, frame)
    for rel, text in outputs.text.items():
        atomic_write_text(out_dir / rel, text)
    for rel, obj in outputs.json.items():
        write_json(out_dir / rel, obj)
    for base, t in outputs.tables.items():
        tables.write_table(t.num, t.cells, out_dir / base, t.note, t.caption, kind=t.kind,
                           options=t.options, transpose=t.kind in TRANSPOSED_TABLES)
    for rel, fig in outputs.figures.items():
        write_figure(out_dir / rel, fig)
    run = outputs.metrics["run"]
    write_json(out_dir / "provenance.json", {"stage": "evaluate", "run": run, "inputs": inputs,
                                             **provenance()})
    write_json(out_dir / "metrics.json", outputs.metrics)
    save_resolved(cfg, out_dir)
    mark_done(out_dir, settings_hash, run=run)
