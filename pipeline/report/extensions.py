"""The report's sections on the extensions beyond the paper's baseline (docs/method.md 3.6, 7.1, 8,
10 and 11), each from its stage's or study's own artifacts.

    section_characteristics   Table 5: P(up) against stock characteristics (make evaluate)
    section_regression        the classifier beside regressions on the same images (make demo-extensions)
    section_delays            the H-L portfolio with its holding period delayed 0..5 records
    section_interpret         filters, saliency, occlusion, embeddings, class models, robustness
                              and the share of each map on the planted signal (make interpret)
    section_timescale         the I5 model on aggregated 20/60-day windows (make study-timescale)
    section_transfer          other markets: a model of their own, this model applied unchanged,
                              and with a re-fitted head (make demo-crypto)

The last two read other experiments, named by ``report.related`` (config names or paths), from the
same data folder as this one (a time-scale study is one that draws aggregated image sets), and are left out of a report that names no such experiment; every
other section is "not run" with the command that produces it when its artifacts are missing. Like pipeline.report.sections, nothing here recomputes a result.
"""

from __future__ import annotations


import pandas as pd

from pipeline import paths
from pipeline.config import (REGRESSION_TARGETS, Config, ConfigError, derive, image_set_spec,
                             is_regression, load_config)
from pipeline.io import StaleInputError
from pipeline.report.artifacts import EvalArtifacts, Experiment, formatted_eval_table, hl_returns, load_eval
from pipeline.report.blocks import Section, figure_block, note, stage_table_block, table_block, text

TARGETS = ("class", *REGRESSION_TARGETS)  # the classifier first, then the regressions
TARGET_WORDS = {"class": "classifier: P(up)", "return": "regression: return",
                "vol_adjusted_return": "regression: volatility-adjusted return"}


def section_characteristics(exp: Experiment, config_ref: str) -> Section:
    sec = Section("characteristics", "Characteristic correlations (Table 5)")
    e = exp.evaluation
    t = formatted_eval_table(e, "characteristics") if e is not None else None
    if t is None:
        return sec.not_run("evaluate", "predict evaluate", config_ref,
                           "the characteristic correlations (evaluate.characteristics)")
    sec.blocks.append(text("What the CNN's signal resembles: on every rebalance date the Spearman "
                           "correlation across stocks of P(up) with each characteristic, averaged "
                           "over dates (docs/method.md section 8)."))
    sec.blocks.append(stage_table_block(*t))
    return sec


# --------------------------------------------------------------------------------------------------
# Regression and delays: runs of this experiment on the same images that differ in train.target


def target_variant(cfg: Config, target: str) -> Config:
    """``cfg`` with ``train.target`` replaced (the run and eval folders follow from it); a
    regression target comes without the classifier's calibration and NaN-as-down flag, as its runs
    are trained (both are refused with it)."""
    classifier_only = {} if not is_regression(target) else {"train.calibration": "none",
                                                            "train.reproduce_nan_as_down": False}
    return derive(cfg, {"train.target": target, **classifier_only})


def target_runs(cfg: Config) -> dict[str, EvalArtifacts]:
    """target -> the evaluation of this experiment's run for that target, for those evaluated."""
    out = {}
    for t in TARGETS:
        e = load_eval(paths.eval_dir(target_variant(cfg, t)))
        if e is not None:
            out[t] = e
    return out


def regression_table(evals: dict[str, EvalArtifacts]) -> pd.DataFrame:
    """One row per target (index "Target"): N, sign accuracy, share predicted up, Spearman, H-L
    Sharpe ratios (EW, VW), out-of-sample MSE and R^2 of a regression's scaled target (NaN for the
    classifier), turnover (EW, % per month). Values as in each run's metrics.json."""
    rows = {}
    for t, e in evals.items():
        m = e.metrics
        fit = m.get("regression") or {}
        rows[TARGET_WORDS[t]] = {
            "N": m.get("n"), "Accuracy (sign)": m.get("accuracy"), "Predicted up": m.get("share_up_pred"),
            "Spearman": m.get("spearman"), "SR EW": m.get("sharpe_ew"), "SR VW": m.get("sharpe_vw"),
            "MSE": fit.get("mse"), "R² (oos)": fit.get("r2_oos"), "Turnover EW (%)": m.get("turnover_ew_pct")}
    out = pd.DataFrame.from_dict(rows, orient="index").astype(float)
    out.index.name = "Target"
    return out


def section_regression(exp: Experiment, config_ref: str) -> Section:
    sec = Section("regression", "Regression on the return (beyond the paper)")
    evals = target_runs(exp.cfg)
    if not any(is_regression(t) for t in evals):
        return sec.not_run("train", "demo-extensions", config_ref,
                           "the regression runs (train.target=return | vol_adjusted_return)")
    sec.blocks.append(text(
        "The same CNN with one output trained by squared error on the holding-period return, raw or "
        "divided by its ex-ante volatility (docs/method.md 3.6), on the same images and member splits "
        "as the classifier. Portfolios sort on the prediction; accuracy is the share of rows whose "
        "predicted and realised signs agree."))
    sec.blocks.append(table_block(regression_table(evals), "Out-of-sample: the classifier and the "
                                  "regressions on the same test images", digits=3))
    hl = {}
    for t, e in evals.items():
        if e.portfolios is not None and len(e.portfolios):
            h = hl_returns(e.portfolios)
            main = [c for c in h.columns if c[0] == "CNN"]
            for s, w in main:
                hl[(TARGET_WORDS[t], w)] = h[(s, w)]
    if hl:
        from pipeline.evaluate import plots

        frame = pd.DataFrame(hl)
        frame.columns = pd.MultiIndex.from_tuples(frame.columns)
        sec.blocks.append(figure_block(plots.cumulative_hl_grid(frame, highlight=TARGET_WORDS["class"]),
                                       "Cumulative H-L return of the classifier (thick) and the "
                                       "regressions, sorted on their predictions.",
                                       "cumulative H-L return by target"))
    return sec


def delay_table(table: pd.DataFrame) -> pd.DataFrame:
    """A delays.parquet table (pipeline.evaluate.delays) as one row per delay: per weighting the
    H-L Sharpe ratio, its Newey-West t and the annualised mean return (%), and the mean IC."""
    wide = {}
    for w, g in table.groupby("weighting", sort=False):
        g = g.set_index("delay").sort_index()
        wide[f"{w.upper()} SR"] = g["sharpe"]
        wide[f"{w.upper()} t (NW)"] = g["t_nw"]
        wide[f"{w.upper()} return (% a year)"] = g["ann_ret"] * 100.0
        wide.setdefault("IC mean", g["ic_mean"])
    out = pd.DataFrame(wide)
    out.index.name = "Delay"
    return out


def section_delays(exp: Experiment, config_ref: str) -> Section:
    sec = Section("delays", "Delayed holding periods (signal decay)")
    found = []
    for t, e in target_runs(exp.cfg).items():
        p = e.directory / "delays.parquet"
        if p.exists():
            found.append((t, e, pd.read_parquet(p)))
    if not found:
        return sec.not_run("evaluate", "demo-extensions", config_ref,
                           "the delayed-return evaluation (evaluate.delays)")
    sec.blocks.append(text(
        "The same signal with its holding period starting d = 0..5 records after the image date (d = 0 "
        "is the paper's), evaluated with the same decile-portfolio code (docs/method.md 7.1): how fast "
        "the information in a chart is traded away."))
    for t, e, table in found:
        sec.blocks.append(table_block(delay_table(table), f"H-L portfolio of the {TARGET_WORDS[t]} run "
                                      f"{e.name} by delay", digits=2))
        fig = e.directory / "figures" / "delays.png"
        if fig.exists():
            sec.blocks.append(figure_block(fig, f"H-L Sharpe ratio and mean return against the delay "
                                           f"({TARGET_WORDS[t]}).", "signal decay"))
    return sec


# --------------------------------------------------------------------------------------------------
# Interpretation toolkit


def planted_signal_pivot(table: pd.DataFrame, subset: str = "all") -> pd.DataFrame:
    """planted_signal.csv (pipeline.interpret.regions.planted_signal_table) as methods x regions of
    the mean concentration ratio on ``subset`` (1 = spread evenly, > 1 = concentrated there)."""
    sel = table[table["subset"] == subset]
    out = sel.pivot_table(index="method", columns="region", values="mean", aggfunc="first")
    out.index.name = "Map"
    out.columns.name = None
    return out


def section_interpret(exp: Experiment, config_ref: str) -> Section:
    from pipeline.interpret.core import interpret_outputs

    sec = Section("interpret", "Interpretation toolkit (beyond Grad-CAM)")
    try:
        figs, tables = interpret_outputs(exp.cfg)
    except (StaleInputError, FileNotFoundError):
        return sec.not_run("interpret", "interpret", config_ref,
                           "the filters, saliency, occlusion, embedding and robustness maps")
    planted = tables.get("planted_signal.csv")
    if planted is not None and len(planted):
        sec.blocks.append(text(
            "How much of each map falls where the synthetic market plants its signal (docs/synthetic.md): "
            "the share of a map's mass in a region divided by the region's share of the image, averaged "
            "over the sampled images. 1 means the map is spread evenly; above 1, it concentrates there."
            if exp.cfg.panel.source == "synthetic" else
            "How much of each map falls on the regions where the synthetic market plants its signal "
            "(on real data these are reference regions, not known signal locations): 1 means spread "
            "evenly, above 1 concentrated there."))
        # All images, and the surge days where the volume signal is planted; the figure below
        # and planted_signal.csv hold the other subsets (strong reversal, strong trend, ...).
        for subset in [s for s in ("all", "surge_days") if s in set(planted["subset"])]:
            sec.blocks.append(table_block(planted_signal_pivot(planted, subset),
                                          f"Concentration ratio of each map by region ({subset})", digits=2))
    for path, caption in figs:
        sec.blocks.append(figure_block(path, caption, path.stem, tall=path.stem in ("saliency", "embedding")))
    return sec


# --------------------------------------------------------------------------------------------------
# Other experiments: the time-scale study and transfers (report.related)


def is_timescale_study(cfg: Config) -> bool:
    """A time-scale study draws aggregated image sets (I5x4/month: bars of several days)."""
    return any(image_set_spec(s).aggregated for s in cfg.images.sets)


def related_configs(cfg: Config) -> list[Config]:
    """The configs of ``report.related``, read from the same data folder as ``cfg``; a name that
    does not load is an error naming it and this report's key."""
    out = []
    for ref in cfg.report.related:
        try:
            out.append(load_config(ref, [f"data_dir={cfg.data_dir}"]))
        except (ConfigError, FileNotFoundError) as e:
            raise ConfigError(f"'report.related' entry {ref!r}: {e}") from None
    return out


TIMESCALE_COLUMNS = {"window_days": "Window (days)", "kind": "Model", "trained_on": "Trained on",
                     "applied_to": "Applied to", "n": "N", "accuracy": "Accuracy", "bayes": "Bayes",
                     "spearman": "Spearman", "sharpe_ew": "SR EW", "sharpe_vw": "SR VW",
                     "paper_sharpe_ew": "Paper SR EW"}


def section_timescale(exp: Experiment, config_ref: str) -> Section | None:
    sec = Section("timescale", "Time-scale transfer (docs/method.md section 11)")
    studies = [c for c in related_configs(exp.cfg) if is_timescale_study(c)]
    if not studies:
        return None
    shown = False
    for c in studies:
        d = c.experiment_dir / "timescale"
        if not (d / "timescale.parquet").exists():
            continue
        t = pd.read_parquet(d / "timescale.parquet")
        t = t[[k for k in TIMESCALE_COLUMNS if k in t.columns]].rename(columns=TIMESCALE_COLUMNS)
        sec.blocks.append(text(
            f"Experiment {c.name}: the model trained on {c.timescale.source} applied unchanged to "
            "longer windows drawn in the same number of bars (each bar aggregating k days), beside the "
            "model trained on the daily-bar images of that window, on the same stock-periods."))
        sec.blocks.append(table_block(t.set_index("Window (days)"), f"Time-scale transfer ({c.name})",
                                      digits=3))
        if (d / "timescale.png").exists():
            sec.blocks.append(figure_block(d / "timescale.png", "Accuracy and H-L Sharpe ratio of the "
                                           "transferred and the trained models by window length.",
                                           "time-scale transfer"))
        shown = True
    return sec if shown else sec.not_run("study-timescale", "study-timescale", studies[0].name,
                                         "the time-scale study")


def transfer_rows(cfg: Config) -> pd.DataFrame:
    """One row per related experiment with a transfer section or trained on another market, with
    its main run's evaluation: experiment, market (source and calendar), model (own | direct |
    head from ...), accuracy, Bayes, Spearman, H-L Sharpe ratios. Only evaluated runs appear."""
    rows = []
    for c in related_configs(cfg):
        if is_timescale_study(c):
            continue
        e = load_eval(paths.eval_dir(c))
        if e is None:
            continue
        m = e.metrics
        mode = c.transfer.mode
        model = ("trained on this market" if mode == "none" else
                 f"{'applied unchanged' if mode == 'direct' else 'frozen convolutions, re-fitted head'}"
                 f" from {c.transfer.source_config or c.transfer.source_run}")
        market = c.panel.source + (f", {c.synthetic.calendar} calendar" if c.panel.source == "synthetic" else "")
        rows.append({"Experiment": c.name, "Market": market, "Model": model, "N": m.get("n"),
                     "Accuracy": m.get("accuracy"), "Bayes": (m.get("bayes") or {}).get("accuracy"),
                     "Spearman": m.get("spearman"), "SR EW": m.get("sharpe_ew"), "SR VW": m.get("sharpe_vw")})
    return pd.DataFrame(rows)


def section_transfer(exp: Experiment, config_ref: str) -> Section | None:
    if all(is_timescale_study(c) for c in related_configs(exp.cfg)):
        return None
    sec = Section("transfer", "Other markets and transfer (docs/method.md 6.1)")
    rows = transfer_rows(exp.cfg)
    if rows.empty:
        return sec.not_run("train", "demo-crypto", config_ref, "the transfer experiments")
    sec.blocks.append(text(
        "Another market's images scored by a CNN trained there, by this experiment's CNN unchanged "
        "(direct transfer) and by its convolutions frozen with the final layer re-fitted on the other "
        "market's in-sample images."))
    sec.blocks.append(table_block(rows.set_index("Experiment"), "Out-of-sample results of each "
                                  "related experiment (its own eval/<run>/metrics.json)", digits=3))
    if exp.evaluation is not None:
        m = exp.evaluation.metrics
        sec.blocks.append(note(f"This experiment ({exp.cfg.name}) on its own market: accuracy "
                               f"{m.get('accuracy', float('nan')):.3f}, Spearman "
                               f"{m.get('spearman', float('nan')):.3f}, EW H-L Sharpe "
                               f"{m.get('sharpe_ew', float('nan')):.2f}."))
    return sec

