"""The report's sections: one builder per section, each with its prose, from the artifacts only.

    build_sections(exp, config_ref) -> list[Section]    every section, in SECTION_BUILDERS order

A builder takes the loaded :class:`~pipeline.report.artifacts.Experiment` and the config reference
used in "make <target> CONFIG=..." hints, and returns one :class:`~pipeline.report.blocks.Section`;
a section whose artifacts are missing is "not run" with the make target that produces them.
Nothing is retrained or re-rendered: figures are the stages' own PNGs (embedded byte for byte) or
plots of artifact data (training logs, panel counts, the H-L series); stage tables are read as
numbers and formatted by the stage's own formatter (pipeline.evaluate.tables, pipeline.ablations.table).
"""

from __future__ import annotations

from typing import Any

import numpy as np
import pandas as pd

from pipeline import paper_numbers as pn
from pipeline import paths
from pipeline.ablations.table import TEXT_HEADERS, format_table18
from pipeline.config import split_years
from pipeline.evaluate import plots
from pipeline.evaluate.benchmarks import BENCHMARKS
from pipeline.evaluate.conventions import HL, conventions_text, frequency_of_horizon, weighting_label
from pipeline.report.artifacts import (EvalArtifacts, Experiment, formatted_eval_table, hl_by_run, hl_returns,
                                       run_roots)
from pipeline.report import extensions as ext
from pipeline.report.blocks import (Section, bullets, cells_block, figure_block, kv, not_run, note,
                                    split_columns, stage_table_block, subhead, table_block, text)
from pipeline.provenance import provenance

# Human names of metrics.json keys, in display order; other numeric keys follow with their own name.
METRIC_LABELS = {
    "n": "Observations (stock-periods)",
    "loss": "Cross-entropy loss",
    "accuracy": "Accuracy",
    "mcc": "Matthews correlation (MCC)",
    "spearman": "Spearman correlation (date-averaged)",
    "pearson": "Pearson correlation (date-averaged)",
    "sharpe_ew": "H-L Sharpe ratio, equal-weighted",
    "sharpe_vw": "H-L Sharpe ratio, value-weighted",
}
METRIC_SHORT = {"n": "N", "loss": "Loss", "accuracy": "Accuracy", "mcc": "MCC", "spearman": "Spearman",
                "pearson": "Pearson", "sharpe_ew": "SR EW", "sharpe_vw": "SR VW"}
CLASSIFICATION_KEYS = ("n", "loss", "accuracy", "mcc")
CORRELATION_KEYS = ("spearman", "pearson")


def _weighting_words(exp: Experiment) -> dict[str, str]:
    proxy = bool(exp.panel and exp.panel.meta.mktcap_is_proxy)
    return {w: weighting_label(w, proxy) for w in ("ew", "vw")}


def section_overview(exp: Experiment, config_ref: str) -> Section:
    cfg = exp.cfg
    (i0, i1), (t0, t1) = split_years(cfg.train)
    items: list[tuple[str, Any]] = [
        ("Experiment", cfg.name),
        ("Data source", cfg.panel.source + (f" ({cfg.panel.path})" if cfg.panel.path else "")),
        ("Image set / model", f"{cfg.train.image_set} / {cfg.train.model}"),
        ("Return horizon (label)", f"R{cfg.train.horizon} ({cfg.train.label_return} returns)"),
        ("Split", f"{cfg.train.split}: in-sample {i0}–{i1}, out-of-sample {t0}–{t1}"),
        ("Ensemble", f"{cfg.train.ensemble} members, ≤ {cfg.train.epochs} epochs, patience "
                     f"{cfg.train.patience}, lr {cfg.train.lr:g}, batch {cfg.train.batch_size}"),
    ]
    sec = Section("overview", "Overview", blocks=[kv(items, "Experiment settings (resolved config)")])
    if exp.evaluation:
        m = exp.evaluation.metrics
        head = [(METRIC_LABELS.get(k, k), m[k]) for k in
                ("accuracy", "spearman", "pearson", "sharpe_ew", "sharpe_vw") if k in m]
        if head:
            words = _weighting_words(exp)
            head = [(k.replace("value-weighted", words["vw"]), v) for k, v in head]
            b = m.get("bayes")
            if b:
                head.insert(1, (f"Bayes-optimal accuracy of these test rows ({b['label']}; synthetic "
                                "market ceiling)", b["accuracy"]))
                head.insert(2, ("Share of the Bayes accuracy gain over 0.5 recovered", b["gain_recovered"]))
            if "loss" in m:
                head.append(("Test loss (ln 2 = 0.6931 is a coin flip)", m["loss"]))
            if "share_up_realised" in m:
                head.append(("Share predicted up / realised up",
                             f"{m['share_up_pred']:.3f} / {m['share_up_realised']:.3f}"))
            sec.blocks.append(kv(head, f"Headline out-of-sample results ({exp.evaluation.name})"))
    stages = [("panel", exp.panel), ("images", any(exp.image_sets.values())), ("train", exp.run),
              ("predict", exp.run is not None and exp.run.has_predictions),
              ("evaluate", exp.evaluation), ("gradcam", exp.gradcam), ("ablations", exp.ablations)]
    done = [s for s, a in stages if a]
    missing = [s for s, a in stages if not a]
    sec.blocks.append(text("Stages with artifacts: " + (", ".join(done) or "none") + "."
                           + (f" Not run: {', '.join(missing)} (sections below say how to run them)."
                              if missing else "")))
    sec.blocks.append(kv(provenance_items(exp.run.provenance if exp.run else None, provenance()),
                         "Provenance (seeds: train.seed + member; every artifact folder holds its "
                         "resolved config.yaml)"))
    return sec


def provenance_items(trained: dict | None, now: dict) -> list[tuple[str, Any]]:
    """Rows of the provenance table: the model's (from its model card) and this report's."""
    def commit(p: dict) -> str:
        c = (p.get("commit") or "unknown")[:12]
        return c + (" + uncommitted changes" if p.get("uncommitted_changes") else "")

    items: list[tuple[str, Any]] = []
    if trained:
        items += [("Model trained at commit", commit(trained)),
                  ("Trained with", f"Python {trained.get('python')}, torch {trained.get('torch')}, "
                                   f"numpy {trained.get('numpy')}, pandas {trained.get('pandas')}"),
                  ("Trained on", f"{trained.get('processor')}, {trained.get('cores')} cores"
                                 + (f", {trained['cuda_device']}" if trained.get("cuda_device") else "")
                                 + f" ({trained.get('platform')})")]
    items.append(("Report built at commit", commit(now)))
    return items


def section_data(exp: Experiment, config_ref: str) -> Section:
    sec = Section("data", "Data")
    p = exp.panel
    if p is None:
        return sec.not_run("panel", "panel", config_ref, "the canonical daily panel")
    m = p.meta
    items: list[tuple[str, Any]] = [
        ("Source", m.source), ("Records (stock-days)", m.n_rows), ("Stocks", m.n_stocks),
        ("Period", f"{m.first_date} to {m.last_date}"),
        ("Market cap", ("proxy: " if m.mktcap_is_proxy else "") + m.mktcap_units),
        ("Market-cap proxy flag (mktcap_is_proxy)", bool(m.mktcap_is_proxy)),
    ]
    if p.n_tickers is not None:
        items.append(("Securities in the id map (stocks.parquet)", p.n_tickers))
    sec.blocks.append(kv(items, "Canonical panel (panel/meta.json)"))
    per_year = {name: s.per_year["n_images"] for name, s in exp.image_sets.items() if s is not None}
    sec.blocks.append(figure_block(
        plots.universe_plot(p.universe, per_year),
        "Universe size per year: stocks with at least one daily record in the panel (bars) and "
        "chart images per year of each image set (lines).", "universe size per year"))
    uni = p.universe.rename(columns={"n_stocks": "Stocks", "n_rows": "Stock-days"})
    sec.blocks.append(table_block(uni, "Universe per year", digits=0))
    if m.counts:
        counts = pd.DataFrame({"Count": list(m.counts.values())},
                              index=pd.Index(list(m.counts.keys()), name="Rule"))
        sec.blocks.append(table_block(counts, "Filters and cleaning: records dropped, repaired or "
                                      "masked by each rule (panel/meta.json counts)"))
    else:
        sec.blocks.append(note("meta.json records no cleaning counts."))
    if p.bayes_accuracy:
        keys = sorted(p.bayes_accuracy, key=lambda k: (not k.isdigit(), int(k) if k.isdigit() else 0, k))
        acc = pd.DataFrame({"Bayes accuracy": [p.bayes_accuracy[k] for k in keys]},
                           index=pd.Index([f"R{k}" if k.isdigit() else k for k in keys], name="Horizon"))
        sec.blocks.append(table_block(acc, "Accuracy of the Bayes-optimal classifier of the synthetic "
                                      "market for a uniformly drawn record and a fixed horizon in "
                                      "records (panel/bayes_accuracy.json). The bound of the run's own "
                                      "label at its image dates is in the classification section."))
    return sec


def section_images(exp: Experiment, config_ref: str) -> Section:
    sec = Section("images", "Chart images")
    built = {k: v for k, v in exp.image_sets.items() if v is not None}
    if not built:
        return sec.not_run("images", "images", config_ref, "the chart images and labels")
    for name, s in exp.image_sets.items():
        if s is None:
            sec.status = "partial"
            sec.blocks.append(not_run("images", "images", config_ref, f"image set {name}"))
            continue
        h, w = s.shape or (0, 0)
        per_year = s.per_year.rename(columns={"n_images": "Images",
                                              "up_share": f"Share up ({s.label_column})"})
        sec.blocks.append(subhead(f"{name} ({h}×{w} pixels)"))
        sec.blocks.append(table_block(per_year, f"{name}: images per year and share of up labels "
                                      "(missing labels excluded)"))
        if len(s.rejections):
            rej = s.rejections
            # Many years make the table too wide: keep the total and the last few years.
            years = [c for c in rej.columns if c != "total"]
            shown = rej[(years[-6:] if len(years) > 6 else years) + ["total"]]
            sec.blocks.append(table_block(
                shown, f"{name}: windows without an image, by rejection reason (METHOD 2.7)"
                + (f"; the last {len(years[-6:])} of {len(years)} years and the total" if len(years) > 6 else ""),
                digits=0))
        else:
            sec.blocks.append(note(f"{name}: no rejections recorded (rejections.json empty or absent)."))
        if s.contact_sheet is not None:
            sec.blocks.append(figure_block(s.contact_sheet, f"{name}: sample images (contact sheet "
                                           "written by the image stage).", f"{name} contact sheet", tall=True))
        else:
            sec.blocks.append(note(f"{name}: the image stage wrote no contact_sheet.png."))
    return sec


def section_training(exp: Experiment, config_ref: str) -> Section:
    sec = Section("training", "Training")
    r = exp.run
    if r is None:
        return sec.not_run("train", "train", config_ref, f"the {paths.run_name(exp.cfg)} ensemble")
    best = [ms.get("best_epoch") for ms in r.member_summaries]
    sec.blocks.append(figure_block(
        plots.training_curves(r.member_logs, best),
        f"{r.name}: training (solid) and validation (dashed) loss and accuracy per epoch for each "
        "ensemble member; the circle marks the restored best epoch (lowest validation loss).",
        "training curves"))
    rows = {}
    for i, (lg, ms) in enumerate(zip(r.member_logs, r.member_summaries)):
        rows[f"member {i}"] = {
            "Best epoch": ms.get("best_epoch"), "Epochs run": ms.get("epochs_run", len(lg)),
            "Stopped early": ms.get("stopped_early"),
            "Best val. loss": ms.get("best_val_loss", float(lg["val_loss"].min())),
            "Best val. acc.": ms.get("best_val_acc"),
            "Images/s": int(round(float(lg["images_per_s"].mean()))) if "images_per_s" in lg else None,
        }
    members = pd.DataFrame.from_dict(rows, orient="index")
    members.index.name = "Member"
    sec.blocks.append(table_block(members, "Ensemble members (member_<i>/summary.json; images/s is the "
                                  "mean over epochs of log.csv)"))
    s = r.summary
    labels = {"n_train": "Training images", "n_val": "Validation images",
              "val_loss_mean": "Validation loss (members' mean at best epoch)",
              "val_acc_mean": "Validation accuracy (members' mean at best epoch)",
              "precision": "Precision", "device": "Device"}
    items = [(label, s[k]) for k, label in labels.items() if k in s]
    if items:
        sec.blocks.append(kv(items, "Run summary (summary.json)"))
    if not r.has_predictions:
        sec.status = "partial"
        sec.blocks.append(not_run("predict", "predict", config_ref, "out-of-sample predictions"))
    return sec


def section_metrics(exp: Experiment, config_ref: str) -> Section:
    sec = Section("metrics", "Classification and correlations")
    e = exp.evaluation
    if e is None:
        return sec.not_run("evaluate", "predict evaluate", config_ref, "the evaluation")
    m = e.metrics
    cls = [(METRIC_LABELS[k], m[k]) for k in CLASSIFICATION_KEYS if k in m]
    if "share_up_pred" in m:
        cls.append(("Share predicted up (P(up) > 0.5)", m["share_up_pred"]))
    sec.blocks.append(kv(cls, "Out-of-sample classification of the ensemble (pooled over all "
                              "stock-periods with a realised return)"))
    conf = m.get("confusion")
    if isinstance(conf, dict) and {"tp", "tn", "fp", "fn"} <= set(conf):
        cm = pd.DataFrame({"Realised up": [conf["tp"], conf["fn"]],
                           "Realised down": [conf["fp"], conf["tn"]]},
                          index=pd.Index(["Predicted up", "Predicted down"], name=""))
        sec.blocks.append(table_block(cm, "Confusion matrix (counts)", digits=0))
    cor = [(METRIC_LABELS[k], m[k]) for k in CORRELATION_KEYS if k in m]
    if "n_dates_corr" in m:
        cor.append(("Rebalance dates averaged", m["n_dates_corr"]))
    if cor:
        sec.blocks.append(kv(cor, "Correlation of P(up) with the realised return, computed per "
                                  "rebalance date and averaged over dates"))
    members = m.get("members")
    if isinstance(members, list) and members:
        mf = pd.DataFrame(members)
        if "member" in mf.columns:
            mf = mf.set_index("member")
        mf.index.name = "Member"
        sec.blocks.append(table_block(mf.rename(columns=METRIC_SHORT),
                                      "Each ensemble member alone on the test set"))
    sec.blocks.extend(calibration_blocks(e))
    counts = [(label, m[k]) for k, label in (
        ("n_predictions", "Predictions"), ("n_universe", "In the portfolio universe"),
        ("n_dropped_missing_return", "Dropped: missing realised return")) if k in m]
    if counts:
        sec.blocks.append(kv(counts, "Sample (metrics.json)"))
    return sec


def _conventions(exp: Experiment) -> str:
    """The evaluation's own conventions note (metrics.json); rebuilt from the config only for an
    evaluation written before metrics.json carried it, or when there is none."""
    if exp.evaluation is not None and exp.evaluation.metrics.get("conventions"):
        return str(exp.evaluation.metrics["conventions"])
    proxy = bool(exp.panel and exp.panel.meta.mktcap_is_proxy)
    return conventions_text(frequency_of_horizon(exp.cfg.train.horizon), proxy,
                            exp.cfg.evaluate.weights,
                            universe="top500" if exp.cfg.evaluate.top500 else "all")


EVAL_FIGURE_CAPTIONS = {
    "deciles": "Annualised return of each decile portfolio sorted on P(up) (evaluation stage).",
    "cumulative_hl": "Cumulative return of the CNN's long-short (High minus Low decile) portfolio, out "
                     "of sample: running sum of per-period returns, gross (solid) and net of trading "
                     "costs (dashed, where drawn) (evaluation stage).",
    "p_up_hist": "Distribution of the ensemble's out-of-sample P(up) (evaluation stage).",
    "ic": "Information coefficient per rebalance date: Spearman correlation of P(up) with the realised "
          "return across stocks (bars), with its 12-period rolling mean (evaluation stage).",
}


CALIBRATION_FIGURES = {
    "reliability": "Reliability diagram: realised share of up returns against the mean predicted P(up) "
                   "in 10 equal-count bins of P(up), ±2 standard errors (evaluation stage).",
    "share_up_by_year": "Share of test images predicted up (P(up) > 0.5), mean P(up) and realised share "
                        "up, by year (evaluation stage).",
}


def calibration_blocks(e: EvalArtifacts) -> list[dict]:
    """Calibration and the Bayes bound of a run's evaluation (metrics.json + its figures)."""
    m = e.metrics
    blocks: list[dict] = []
    cal = m.get("calibration")
    if not cal:
        return blocks
    items = [("Expected calibration error (10 equal-count bins)", cal["ece"]),
             ("Mean P(up)", cal["mean_p_up"]), ("Share predicted up (P(up) > 0.5)", m["share_up_pred"]),
             ("Realised share up", m["share_up_realised"]),
             ("Loss minus ln 2 (negative: better than a coin flip)", m["loss"] - m.get("ln2", 0.6931471805599453))]
    b = m.get("bayes")
    if b:
        items += [(f"Bayes-optimal accuracy of the evaluated rows ({b['label']}, "
                   f"{b['horizon_min']}–{b['horizon_max']} records ahead)", b["accuracy"]),
                  ("Its standard error (states sampled, Monte-Carlo)", b["stderr"]),
                  ("Share of the evaluated rows the Bayes rule calls up", b.get("share_up_bayes")),
                  ("Expected share up under the true model (mean P(up))", b.get("mean_p_bayes")),
                  ("Share of the Bayes accuracy gain recovered, (acc − 0.5) / (Bayes − 0.5)", b["gain_recovered"]),
                  ("Its standard error (test dates as clusters, and the bound's)", b.get("gain_recovered_se"))]
    blocks.append(kv(items, "Calibration of P(up) and the known ceiling"))
    u = m.get("uncalibrated")
    if u:
        cmp_df = pd.DataFrame({"Calibrated (validation-fitted)": [m["accuracy"], m["loss"], m["share_up_pred"],
                                                                  cal["ece"]],
                               "Raw softmax": [u["accuracy"], u["loss"], u["share_up_pred"], u["ece"]]},
                              index=pd.Index(["Accuracy", "Loss", "Share predicted up", "ECE"], name=""))
        blocks.append(table_block(cmp_df, "The same trained members with and without the calibration "
                                          "fitted on their validation splits (train.calibration)", digits=4))
    years = m.get("by_year")
    if years:
        yf = pd.DataFrame(years).set_index("year")[["n", "share_up_pred", "share_up_realised", "mean_p_up",
                                                     "accuracy", "ece"]]
        yf.index.name = "Year"
        yf = yf.rename(columns={"n": "N", "share_up_pred": "Predicted up", "share_up_realised": "Realised up",
                                "mean_p_up": "Mean P(up)", "accuracy": "Accuracy", "ece": "ECE"})
        blocks.append(table_block(yf, "Share predicted up against realised, by test year", digits=3))
    names = {f.stem: f for f in e.figures}
    for stem, caption in CALIBRATION_FIGURES.items():
        if stem in names:
            blocks.append(figure_block(names[stem], caption, stem))
    return blocks


def section_portfolios(exp: Experiment, config_ref: str) -> Section:
    sec = Section("portfolios", "Decile portfolios")
    e = exp.evaluation
    if e is None:
        return sec.not_run("evaluate", "predict evaluate", config_ref, "the decile portfolios")
    t = formatted_eval_table(e, "deciles")
    if t is not None:
        sec.blocks.append(stage_table_block(*t, highlight=(HL,)))
    else:
        sec.status = "partial"
        sec.blocks.append(note("The evaluation wrote no tables/deciles.md or .csv."))
    # Net of trading costs, legs, drawdown and the per-year split, as the stage formatted them
    # (absent in evaluations written before they existed).
    for stem in ("net_of_cost", "hl_by_year"):
        extra = formatted_eval_table(e, stem)
        if extra is not None:
            sec.blocks.append(stage_table_block(*extra))
    if e.turnover:
        rows = {k: v for k, v in e.turnover.items() if isinstance(v, dict)}
        if rows:
            to = pd.DataFrame.from_dict(rows, orient="index")
            to.index.name = "Strategy"
            words = _weighting_words(exp)
            to = to.rename(columns={w: f"{words.get(w, w)} (%)" for w in to.columns})
            sec.blocks.append(table_block(
                to, "H-L turnover: " + str(e.turnover.get("unit", "% per month")), digits=0))
    names = {f.stem: f for f in e.figures}
    if "cumulative_hl" not in names and e.portfolios is not None and len(e.portfolios):
        hl = hl_returns(e.portfolios)
        main = _main_strategy(hl)
        only = hl.loc[:, [c for c in hl.columns if c[0] == main]] if main else hl
        sec.blocks.append(figure_block(
            plots.cumulative_hl_grid(only, highlight=main, weight_labels=_weighting_words(exp)),
            "Cumulative H-L return of the CNN: running sum of per-period returns of the long-short "
            "portfolio, out of sample.", "cumulative H-L return"))
    for f in e.figures:
        if f.stem in CALIBRATION_FIGURES:
            continue
        sec.blocks.append(figure_block(f, EVAL_FIGURE_CAPTIONS.get(
            f.stem, f"Evaluation figure {f.name} (evaluation stage)."), f.stem))
    return sec


def _main_strategy(hl: pd.DataFrame) -> str | None:
    """The CNN's strategy name among portfolios.parquet strategies: the one that is not a benchmark."""
    strategies = list(dict.fromkeys(hl.columns.get_level_values(0)))
    if "CNN" in strategies:
        return "CNN"
    cnn = [s for s in strategies if s not in BENCHMARKS]
    return cnn[0] if cnn else None


def section_benchmarks(exp: Experiment, config_ref: str) -> Section:
    sec = Section("benchmarks", "Benchmark strategies")
    e = exp.evaluation
    if e is None:
        return sec.not_run("evaluate", "predict evaluate", config_ref, "the benchmark strategies")
    shown = False
    t = formatted_eval_table(e, "benchmarks")
    if t is not None:
        num, cells = t
        parts = split_columns(cells.columns)
        for j, (group, cols) in enumerate(parts):
            sec.blocks.append(stage_table_block(
                num, cells, caption=num.caption + (f" — {group}" if len(parts) > 1 else ""),
                notes=j == len(parts) - 1, columns=cols))
        shown = True
    if e.portfolios is not None and len(e.portfolios):
        hl = hl_returns(e.portfolios)
        if len(set(hl.columns.get_level_values(0))) > 1:
            sec.blocks.append(figure_block(
                plots.cumulative_hl_grid(hl, highlight=_main_strategy(hl),
                                         weight_labels=_weighting_words(exp)),
                "Cumulative H-L return (running sum of per-period returns) of the CNN (thick, black) "
                "and of each benchmark strategy, sorted in its predictive direction (thin).",
                "cumulative H-L returns of all strategies"))
            shown = True
    bench_stems = sorted(s for s in e.tables if s.startswith("deciles_"))
    if bench_stems:
        sec.blocks.append(text("Decile portfolios of each benchmark follow; the conventions are those "
                               "of the CNN's decile table."))
    for stem in bench_stems:
        bt = formatted_eval_table(e, stem)
        if bt is not None:
            sec.blocks.append(stage_table_block(*bt, highlight=(HL,), notes=False))
    if not shown:
        sec.status = "partial"
        sec.blocks.append(note("The evaluation wrote no benchmark table and portfolios.parquet has only "
                               "the CNN strategy."))
    return sec


def section_gradcam(exp: Experiment, config_ref: str) -> Section:
    sec = Section("gradcam", "Grad-CAM")
    g = exp.gradcam
    if g is None:
        return sec.not_run("gradcam", "gradcam", config_ref, "the Grad-CAM maps")
    year = exp.cfg.gradcam.year
    if g.panel:
        sec.blocks.append(figure_block(
            g.panel, f"Grad-CAM of the {paths.run_name(exp.cfg)} model for the "
            f"{exp.cfg.gradcam.n_per_side} highest- and lowest-P(up) out-of-sample images"
            f"{f' of {year}' if year else ' of the last test year'}: the first row is the chart, each "
            "further row the heat map of one convolutional block (brighter = more influence on the "
            "predicted class).", "Grad-CAM panel", tall=True))
    if g.averages:
        sec.blocks.append(figure_block(
            g.averages, f"Mean image and mean Grad-CAM map of each block over up to "
            f"{exp.cfg.gradcam.average_samples:,} out-of-sample images, by predicted decile and by "
            "realised outcome.", "average Grad-CAM maps", tall=True))
    for f in g.other_figures:
        sec.blocks.append(figure_block(f, f"Grad-CAM figure {f.name}.", f.stem))
    if g.selection is not None and len(g.selection):
        sel = g.selection.head(2 * exp.cfg.gradcam.n_per_side).reset_index(drop=True)
        sel.index = sel.index + 1
        sel.index.name = "#"
        sec.blocks.append(table_block(sel, "Images shown (selection.parquet)", digits=3))
    return sec


def section_ablations(exp: Experiment, config_ref: str) -> Section:
    sec = Section("ablations", "Ablations (Table 18)")
    a = exp.ablations
    if a is None:
        sec.not_run("ablations", "ablations", config_ref, "the Table-18 variants")
    else:
        cells, bold, _ = format_table18(a.table.frame)
        cells = cells.set_index(TEXT_HEADERS[0])
        # Each cell "project (paper)" is a number; the variant names are text.
        is_text = np.zeros(cells.shape, dtype=bool)
        is_text[:, list(cells.columns).index(TEXT_HEADERS[1])] = True
        sec.blocks.append(cells_block(
            cells, is_text, "Table 18: one architecture or training change at a time against the "
            "baseline; each cell this project (paper, SSRN Table 18)",
            note_text=" ".join(a.table.notes) or None, strong=[j in bold for j in range(len(cells))]))
    if len(exp.all_metrics) > 1:
        m = exp.all_metrics.copy()
        m["run"] = [r if e == exp.cfg.name else f"{e}/{r}" for e, r in zip(m["experiment"], m["run"])]
        cols = [c for c in ("run", "n", "loss", "accuracy", "mcc", "spearman", "pearson", "sharpe_ew",
                            "sharpe_vw") if c in m.columns]
        sec.blocks.append(table_block(m[cols].set_index("run").rename(columns=METRIC_SHORT),
                                      "Every evaluated run of this experiment (eval/*/metrics.json; "
                                      "ablation variants under ablations/)"))
        hl = hl_by_run(run_roots(exp.cfg), weighting="ew")
        if hl.shape[1] > 1:
            hl.columns = pd.MultiIndex.from_product([hl.columns, ["ew"]])
            sec.blocks.append(figure_block(
                plots.cumulative_hl_grid(hl, highlight=f"{exp.cfg.name}/{paths.run_name(exp.cfg)}",
                                         weight_labels={"ew": "equal-weighted"}),
                "Cumulative equal-weighted H-L return of every evaluated run (baseline thick).",
                "cumulative H-L return of every run"))
    return sec


def paper_comparison(exp: Experiment) -> pd.DataFrame | None:
    """This run's headline numbers beside the paper's (pipeline.paper_numbers), one row per quantity.

    Returns index = quantity; columns Paper (float), Source (str), This run (float); None when the
    paper reports nothing for this model and horizon or the run is not evaluated. Validation rows
    (SSRN Table 18) use the run's summary.json means.
    """
    if exp.evaluation is None:
        return None
    cfg = exp.cfg
    model, h = cfg.train.model, cfg.train.horizon
    uni = "top500" if cfg.evaluate.top500 else "all"
    m = exp.evaluation.metrics
    words = _weighting_words(exp)["vw"]
    # Say how this run's "VW" was weighted only when it differs from the paper's (proxy caps).
    vw = f"this run: {words}" if words != "value-weighted" else ""
    rows: list[tuple[str, float, str, float]] = []

    def add(label: str, paper: float | None, source: str, ours: Any) -> None:
        if paper is not None:
            rows.append((label, float(paper), source,
                         float(ours) if isinstance(ours, (int, float)) else float("nan")))

    t18 = pn.table18_reference(model) if h == 20 and uni == "all" else None
    if t18:
        src = "SSRN Table 18 (test 2000–2019)"
        s = exp.run.summary if exp.run else {}
        add("Validation loss (members' mean)", t18["loss_v"], src, s.get("val_loss_mean"))
        add("Validation accuracy (members' mean)", t18["acc_v"], src, s.get("val_acc_mean"))
        add("Test loss", t18["loss_t"], src, m.get("loss"))
        add("Test accuracy", t18["acc_t"], src, m.get("accuracy"))
        add("Spearman correlation", t18["spearman"], src, m.get("spearman"))
        add("Pearson correlation", t18["pearson"], src, m.get("pearson"))
        add("H-L Sharpe ratio, equal-weighted", t18["sr_ew"], src, m.get("sharpe_ew"))
        add(f"H-L Sharpe ratio, value-weighted{f' ({vw})' if vw else ''}", t18["sr_vw"], src,
            m.get("sharpe_vw"))
    acc = pn.ACCURACY.get((model, h))
    if acc is not None:
        add("Test accuracy", acc, "JF 2023 Table 2 [2nd] (test 2001–2019)", m.get("accuracy"))
    cor = pn.CORRELATIONS.get((model, h))
    if cor:
        src = f"JF 2023 [{cor.get('source', '')}] (test 2001–2019)"
        add("Spearman correlation", cor.get("spearman"), src, m.get("spearman"))
        add("Pearson correlation", cor.get("pearson"), src, m.get("pearson"))
    ref = pn.hl_reference(model, h, uni)
    if ref is not None:
        src = f"JF 2023 [{ref.source}] (test 2001–2019)"
        add("H-L annualised return, equal-weighted", ref.ew_ret, src, m.get("hl_ret_ew"))
        add("H-L Sharpe ratio, equal-weighted", ref.ew_sr, src, m.get("sharpe_ew"))
        add(f"H-L annualised return, value-weighted{f' ({vw})' if vw else ''}", ref.vw_ret, src,
            m.get("hl_ret_vw"))
        add(f"H-L Sharpe ratio, value-weighted{f' ({vw})' if vw else ''}", ref.vw_sr, src,
            m.get("sharpe_vw"))
        add("H-L turnover, equal-weighted (% per month)", ref.turnover_ew, src, m.get("turnover_ew_pct"))
        add("H-L turnover, value-weighted (% per month)", ref.turnover_vw, src, m.get("turnover_vw_pct"))
    if not rows:
        return None
    out = pd.DataFrame(rows, columns=["Quantity", "Paper", "Source", "This run"]).set_index("Quantity")
    return out


def section_paper(exp: Experiment, config_ref: str) -> Section:
    sec = Section("paper", "Comparison with the paper")
    if exp.evaluation is None:
        return sec.not_run("evaluate", "predict evaluate", config_ref, "the numbers to compare")
    cmp_df = paper_comparison(exp)
    if cmp_df is not None:
        sec.blocks.append(table_block(cmp_df[["This run", "Paper", "Source"]],
                                      f"{exp.cfg.train.model}/R{exp.cfg.train.horizon}: this run beside "
                                      "the paper's published numbers (pipeline/paper_numbers.py)"))
    else:
        sec.blocks.append(text(f"The paper reports no headline numbers for {exp.cfg.train.model}/"
                               f"R{exp.cfg.train.horizon} in pipeline/paper_numbers.py."))
    sec.blocks.append(text("The decile, benchmark and Table-18 tables above carry the paper's values "
                           "in their 'Paper' columns (or in parentheses) wherever it reports them."))
    sec.blocks.append(note(
        "The paper (SSRN 2020 / JF 2023) uses CRSP stocks, about 2,000–7,000 a year. Numbers from other "
        "data, splits or ensemble sizes are reference points, not targets: see the caveats below."))
    return sec


def section_caveats(exp: Experiment, config_ref: str) -> Section:
    sec = Section("caveats", "Conventions and caveats")
    cfg = exp.cfg
    source = exp.panel.meta.source if exp.panel else cfg.panel.source
    items: list[str] = []
    if source == "synthetic":
        bm = exp.evaluation.metrics.get("bayes") if exp.evaluation else None
        b = ""
        if bm:
            b = (f" The Bayes-optimal accuracy of the evaluated test rows and their label "
                 f"({bm['label']}, {bm['horizon_min']}-{bm['horizon_max']} records ahead) is "
                 f"{bm['accuracy']:.3f} ± {bm['stderr']:.3f}; no model can exceed it except by chance, "
                 "so compare the model's accuracy with it.")
        items.append("Synthetic data: every price in this report comes from the embedded synthetic "
                     "market with planted, known predictive effects; the numbers test the pipeline "
                     "and say nothing about real markets." + b)
    if source != "crsp":
        items.append("Survivorship: free price data holds only firms alive at download, without "
                     "delisted stocks; early years have few, mostly large, surviving stocks, which "
                     "inflates decile returns (the low decile most) and shrinks H-L spreads."
                     if source != "synthetic" else
                     "Survivorship: the synthetic market lists and delists stocks over time and the "
                     "panel keeps every stock until its delisting, so it has no survivorship bias; "
                     "free real data (Stooq, Yahoo) do.")
    if exp.panel and exp.panel.meta.mktcap_is_proxy:
        items.append("Market-cap proxy: the data have no shares outstanding, so 'value' weights and "
                     f"size ranks use the {cfg.panel.mktcap_proxy_window}-record trailing mean of "
                     "close × volume (dollar volume). "
                     "Such results are labelled dollar-volume-weighted (proxy) and are not comparable "
                     "with CRSP value-weighted numbers.")
    if source in ("stooq", "yahoo"):
        items.append("Dividends: Stooq prices are split-adjusted but dividends are incompletely "
                     "adjusted, which biases returns slightly downwards." if source == "stooq" else
                     "Returns come from adjusted closes (total return).")
    sec.blocks.append(bullets(items))
    sec.blocks.append(text("Evaluation conventions: " + _conventions(exp)))
    sec.blocks.append(text(
        "Every number and figure here is read from the stages' artifacts under "
        f"{cfg.experiment_dir}/; the report never retrains or re-renders. The resolved configuration "
        "is saved beside each artifact and beside this report (config.yaml)."))
    return sec


SECTION_BUILDERS = (section_overview, section_data, section_images, section_training, section_metrics,
                    section_portfolios, section_benchmarks, ext.section_characteristics, section_gradcam,
                    ext.section_interpret, section_ablations, ext.section_regression, ext.section_delays,
                    ext.section_timescale, ext.section_transfer, section_paper, section_caveats)


def build_sections(exp: Experiment, config_ref: str | None = None) -> list[Section]:
    """Every section of the report, in order; missing artifacts give "not run" sections, and a
    builder with nothing to say for this experiment (None: no related experiment of its kind) is
    left out."""
    ref = config_ref or exp.cfg.name
    return [s for s in (b(exp, ref) for b in SECTION_BUILDERS) if s is not None]


