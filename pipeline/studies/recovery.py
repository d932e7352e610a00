"""Signal-recovery study (``make study-recovery``): how much of a known signal the CNN recovers.

On the synthetic market, whose Bayes-optimal accuracy is known (docs/synthetic.md), every recipe of
``recovery.recipes`` (pipeline.train.recipes) is trained at every in-sample pool size of
``recovery.pool_sizes`` and judged out of sample against the Bayes bound of exactly the evaluated
rows and label (pipeline.evaluate.bayes). Each trained run fits ``recovery.calibration`` on its
members' validation splits, so it yields two rows: raw (the recipe alone) and calibrated.

Which variant to use is decided on **validation loss only** (:func:`select_on_validation`): the
test-period columns are reported for every row, the choice never looks at them.

A driver over the stages, not a copy of them: panel, images, train, predict and evaluate run through
their library functions, each resumable, into ``data/<name>/runs/<model>_R<h>-<recipe>-p<pool>``
(``train.run_tag``). Outputs in ``data/<name>/study/``: recovery.csv (one row per run and
calibration), cells/<tag>.json (per-run wall times), recovery.png (learning curves),
reliability.png; and the committed summary ``reports/<name>.md`` + ``reports/<name>.csv`` +
``reports/<name>.png``.

Cells run smallest pool first, recipes in the configured order, and the outputs are rewritten after
every cell, so a run cut short has every recipe at the small sizes and says which runs are missing.
"""

from __future__ import annotations

import logging
import math
import time
from pathlib import Path

import numpy as np
import pandas as pd

from pipeline import paths, tabular
from pipeline.config import Config, ConfigError, derive, save_resolved, split_years
from pipeline.evaluate.bayes import gain_recovered_se
from pipeline.images.build import make_training_inputs
from pipeline.io import atomic_write_text, read_json, write_figure, write_json
from pipeline.studies.report import Column, study_markdown, write_study_report
from pipeline.train.recipes import apply_recipe

log = logging.getLogger(__name__)

LN2 = math.log(2.0)


def cell_tag(recipe: str, pool: int) -> str:
    return f"{recipe}-p{pool}"


def cell_config(cfg: Config, recipe: str, pool: int) -> Config:
    """The experiment config of one cell: ``cfg`` with the recipe, pool size, run tag and the
    study's calibration."""
    return derive(apply_recipe(cfg, recipe), {"train.max_train_images": int(pool),
                                              "train.run_tag": cell_tag(recipe, pool),
                                              "train.calibration": cfg.recovery.calibration})


def check_study(cfg: Config) -> None:
    """The study needs the synthetic market; the recovery section itself (pool sizes, recipe
    names) is checked when the config loads (pipeline.config.validate)."""
    if cfg.panel.source != "synthetic":
        raise ConfigError("the recovery study needs panel.source: synthetic (a market with a known "
                          f"Bayes bound); got {cfg.panel.source!r}")


def cell_predicted(cfg: Config, recipe: str, pool: int) -> bool:
    """True when the cell's run has finished training and prediction."""
    run = paths.run_dir(cell_config(cfg, recipe, pool))
    return (run / "_TRAIN_DONE.json").exists() and (run / "_PREDICT_DONE.json").exists()


def run_cell(cfg: Config, recipe: str, pool: int, study_dir: Path, evaluate_only: bool = False) -> dict:
    """Train, predict and evaluate one cell (each stage resumable; ``evaluate_only``: only the
    evaluation, of a cell already predicted); returns the cell record {"tag", "recipe", "pool",
    "seconds": {"train", "predict", "evaluate"}} (seconds of the first completed execution; a
    resumed or skipped stage keeps the recorded figure)."""
    from pipeline.evaluate.core import evaluate_run
    from pipeline.predict.core import predict_run
    from pipeline.train.loop import train_run

    c = cell_config(cfg, recipe, pool)
    tag = c.train.run_tag
    rec_path = study_dir / "cells" / f"{tag}.json"
    rec = read_json(rec_path) if rec_path.exists() else {"tag": tag, "recipe": recipe, "pool": int(pool),
                                                         "seconds": {}}
    stages = (("train", train_run), ("predict", predict_run), ("evaluate", evaluate_run))
    for stage, fn in stages[2:] if evaluate_only else stages:
        t0 = time.perf_counter()
        fn(c)
        dt = time.perf_counter() - t0
        # A stage that found its work done returns in well under a second: keep the real figure.
        if stage not in rec["seconds"] or dt > 5.0:
            rec["seconds"][stage] = round(dt, 1)
    write_json(rec_path, rec)
    return rec


def cell_rows(cfg: Config, recipe: str, pool: int, rec: dict) -> list[dict]:
    """Two rows of the study table for one trained cell: raw and calibrated."""
    c = cell_config(cfg, recipe, pool)
    run = paths.run_dir(c)
    m = read_json(paths.eval_dir(c) / "metrics.json")
    summary = read_json(run / "summary.json")
    members = summary["members"]
    cals = [read_json(run / f"member_{i}" / "calibration.json") for i in range(len(members))]
    bayes = m["bayes"]
    base = {"recipe": recipe, "pool": int(pool), "n_train": int(summary["n_train"]),
            "n_val": int(summary["n_val"]), "members": len(members),
            "best_epoch": float(np.mean([s["best_epoch"] for s in members])),
            "epochs_run": float(np.mean([s["epochs_run"] for s in members])),
            "train_s": rec["seconds"].get("train"), "n_test": int(m["n"]),
            "bayes": bayes["accuracy"], "bayes_se": bayes["stderr"], "bayes_label": bayes["label"],
            "share_up_realised": m["share_up_realised"], "share_up_bayes": bayes.get("share_up_bayes"),
            "spearman": m["spearman"],
            "sharpe_ew": m.get("sharpe_ew")}
    raw = m["uncalibrated"] or {"loss": m["loss"], "accuracy": m["accuracy"],
                                "share_up_pred": m["share_up_pred"], "ece": m["calibration"]["ece"]}
    rows = []
    for variant, val_loss, met in (
            ("raw", float(np.mean([s["best_val_loss"] for s in members])), raw),
            (cals[0]["method"], float(np.mean([cl["loss_after"] for cl in cals])),
             {"loss": m["loss"], "accuracy": m["accuracy"], "share_up_pred": m["share_up_pred"],
              "ece": m["calibration"]["ece"]})):
        acc = met["accuracy"]
        rows.append({**base, "variant": f"{recipe}" + ("" if variant == "raw" else f"+{variant}"),
                     "calibration": "none" if variant == "raw" else variant,
                     "val_loss": val_loss, "test_accuracy": acc, "test_loss": met["loss"],
                     "gain_recovered": (acc - 0.5) / (bayes["accuracy"] - 0.5),
                     "gain_se": gain_recovered_se(acc, m.get("accuracy_se", float("nan")), bayes["accuracy"],
                                                  bayes["stderr"]),
                     "share_up_pred": met["share_up_pred"], "ece": met["ece"],
                     "up_gap_pp": 100 * (met["share_up_pred"] - m["share_up_realised"])})
    return rows


def select_on_validation(table: pd.DataFrame) -> pd.Series:
    """Per pool size, True on the row with the lowest validation loss (ties: first row). Uses
    only the ``val_loss`` column: nothing from the test period enters the choice."""
    return pd.Series(table.index.isin(table.groupby("pool")["val_loss"].idxmin()), index=table.index)


def run_study(cfg: Config, report_dir: Path | None = None, table_only: bool = False) -> pd.DataFrame:
    """Run every cell (resumable) and write the study's table, figures and report.

    table_only: train and predict nothing; (re-)evaluate the cells already predicted and write the
    outputs from them (the missing cells are listed as such)."""
    check_study(cfg)
    study_dir = cfg.experiment_dir / "study"
    t0 = time.perf_counter()
    if not table_only:
        make_training_inputs(cfg)
    rows = []
    pools = sorted(set(int(p) for p in cfg.recovery.pool_sizes))
    for pool in pools:
        for recipe in cfg.recovery.recipes:
            if table_only and not cell_predicted(cfg, recipe, pool):
                log.info("recovery study: recipe %s, pool %d not predicted yet, left out", recipe, pool)
                continue
            log.info("recovery study: recipe %s, pool %d", recipe, pool)
            rec = run_cell(cfg, recipe, pool, study_dir, evaluate_only=table_only)
            rows.extend(cell_rows(cfg, recipe, pool, rec))
            # Written after every cell, so a study cut short still has its finished rows.
            table = pd.DataFrame(rows)
            table["chosen_on_validation"] = select_on_validation(table)
            done = len(rows) == 2 * len(pools) * len(cfg.recovery.recipes)
            write_outputs(cfg, table, study_dir, report_dir or Path(cfg.reports_dir),
                          time.perf_counter() - t0, complete=done)
    return table


# --------------------------------------------------------------------------------------------------
# Outputs


def learning_curves(table: pd.DataFrame, axes=None):  # noqa: ANN001, ANN201
    """Three panels against training images (log scale), one line per variant (colour = recipe,
    dashed/open = raw, solid/filled = calibrated): fraction of the Bayes accuracy gain recovered
    (±2 standard errors), test loss - ln 2, share predicted up - realised (pp). Returns the Axes."""
    from matplotlib.figure import Figure

    if axes is None:
        axes = Figure(figsize=(13, 4)).subplots(1, 3)
    colours = {r: f"C{i}" for i, r in enumerate(dict.fromkeys(table["recipe"]))}
    for v, g in table.groupby("variant", sort=False):
        g = g.sort_values("n_train")
        raw = (g["calibration"] == "none").all()
        kw = {"ls": "--" if raw else "-", "marker": "o" if raw else "s", "color": colours[g["recipe"].iat[0]],
              "label": v, "mfc": "white" if raw else None}
        axes[0].errorbar(g["n_train"], 100 * g["gain_recovered"], yerr=200 * g["gain_se"].astype(float),
                         capsize=2, **kw)
        axes[1].plot(g["n_train"], g["test_loss"] - LN2, **kw)
        axes[2].plot(g["n_train"], g["up_gap_pp"], **kw)
    for ax, ylab, ref in ((axes[0], "% of the Bayes accuracy gain recovered (±2 s.e.)", 100),
                          (axes[1], "test loss − ln 2 (nats; < 0 beats a coin)", 0),
                          (axes[2], "predicted up − realised up (pp)", 0)):
        ax.set_xscale("log")
        ax.axhline(ref, color="0.5", lw=0.8, ls=":")
        ax.set_xlabel("training images")
        ax.set_ylabel(ylab)
    axes[0].axhline(0, color="0.5", lw=0.8)
    axes[0].legend(frameon=False, fontsize=8)
    axes[0].set_title("Accuracy vs the Bayes bound")
    axes[1].set_title("Out-of-sample loss")
    axes[2].set_title("Share predicted up")
    return axes


def _gain_cell(row: pd.Series) -> str:
    v, se = row["gain_recovered"], row["gain_se"]
    if v is None or not math.isfinite(v):
        return tabular.MISSING
    return f"{100 * v:.0f}%" + (f" ± {100 * se:.0f}" if se is not None and math.isfinite(se) else "")


TABLE_COLUMNS = (
    Column("variant", "variant", text=True), Column("n_train", "train images"),
    Column("best_epoch", "best epoch", 1), Column("val_loss", "val loss", 4),
    Column("test_accuracy", "test acc.", 4), Column("bayes", "Bayes", 4),
    Column("gain_recovered", "gain recovered", cell=_gain_cell), Column("test_loss", "test loss", 4),
    Column("share_up_pred", "pred. up", 3), Column("share_up_bayes", "Bayes up", 3),
    Column("share_up_realised", "real. up", 3), Column("ece", "ECE", 4),
    Column("spearman", "Spearman", 3), Column("sharpe_ew", "EW H−L SR", 2),
    Column("chosen_on_validation", "chosen (val)",
           cell=lambda r: "**yes**" if r["chosen_on_validation"] else ""),
)


def markdown_table(table: pd.DataFrame) -> str:
    """The study table in Markdown (:data:`TABLE_COLUMNS`)."""
    return study_markdown(table, TABLE_COLUMNS)


def write_outputs(cfg: Config, table: pd.DataFrame, study_dir: Path, report_dir: Path, wall: float,
                  complete: bool = True) -> None:
    from pipeline.evaluate import plots

    study_dir.mkdir(parents=True, exist_ok=True)
    atomic_write_text(study_dir / "recovery.csv", table.to_csv(index=False))
    axes = learning_curves(table)
    fig = axes[0].figure
    fig.suptitle(f"Signal recovery on the synthetic market ({cfg.train.model}/R{cfg.train.horizon}, "
                 f"label {table['bayes_label'].iat[0]}): dashed = raw, solid = calibrated", fontsize=10)
    fig.tight_layout()
    write_figure(study_dir / "recovery.png", fig)
    save_resolved(cfg, study_dir)
    (i0, i1), (t0, t1) = split_years(cfg.train)
    largest = table[table["pool"] == table["pool"].max()]
    lines = [
        f"# Signal recovery on the synthetic market: {cfg.train.model}/R{cfg.train.horizon}",
        "",
        "Command (resumable; every stage skips finished work):",
        "",
        "```bash",
        f"make study-recovery CONFIG={cfg.name}",
        "```",
        "",
        f"Settings: `pipeline/configs/{cfg.name}.yaml`; resolved config in `data/{cfg.name}/study/config.yaml`. "
        f"Synthetic market: {cfg.synthetic.n_stocks} stocks, {cfg.synthetic.start}..{cfg.synthetic.end}, "
        f"seed {cfg.synthetic.seed}, signal strength {cfg.synthetic.signal_strength:g}. Image set "
        f"{cfg.train.image_set}, label `{table['bayes_label'].iat[0]}` ({cfg.train.label_return} returns). "
        f"In-sample {i0}–{i1} (each member: {1 - cfg.train.val_fraction:.0%} train / "
        f"{cfg.train.val_fraction:.0%} validation of the pool), test {t0}–{t1}. "
        f"{cfg.train.ensemble} member(s) per run, at most {cfg.train.epochs} epochs, patience "
        f"{cfg.train.patience}, batch {cfg.train.batch_size}. Pool sizes {sorted(set(cfg.recovery.pool_sizes))}; "
        f"recipes {cfg.recovery.recipes} (`pipeline/train/recipes.py`), each reported raw and with "
        f"`{cfg.recovery.calibration}` calibration fitted on the validation split. "
        f"Wall time of this invocation: {wall / 60:.1f} min (per-run stage times in "
        f"`data/{cfg.name}/study/cells/`).",
        "",
        *([] if complete else [f"**Partial:** {len(table) // 2} of "
                               f"{len(set(cfg.recovery.pool_sizes)) * len(cfg.recovery.recipes)} runs "
                               "(recipe × pool) are finished; the missing ones are "
                               + ", ".join(f"{r} at pool {p:,}" for p in sorted(set(cfg.recovery.pool_sizes))
                                           for r in cfg.recovery.recipes
                                           if not ((table['recipe'] == r) & (table['pool'] == p)).any())
                               + ". Rerun the command to resume.", ""]),
        "Bayes = the Bayes-optimal accuracy of exactly the evaluated test rows and label "
        "(`pipeline.evaluate.bayes`); gain recovered = (accuracy − 0.5) / (Bayes − 0.5), ± its standard "
        "error (test dates as clusters, plus the bound's; the same standard error applies to the "
        "raw and the calibrated row of a run). "
        "'chosen (val)' marks, per pool size, the variant with the lowest validation loss: the "
        "choice uses no test-period number.",
        "",
        markdown_table(table),
        "",
        f"![learning curves]({cfg.name}.png)",
        "",
        f"![reliability at the largest pool]({cfg.name}_reliability.png)",
        "",
    ]
    # Reliability diagrams of the largest pool (calibrated P(up) of every recipe's run).
    from matplotlib.figure import Figure

    fig = Figure(figsize=(5.5, 5.5))
    ax = fig.subplots()
    for recipe in largest["recipe"].unique():
        c = cell_config(cfg, recipe, int(largest["pool"].iat[0]))
        m = read_json(paths.eval_dir(c) / "metrics.json")
        for name, bins in ((f"{recipe}+{cfg.recovery.calibration}", m["calibration"]["bins"]),
                           (f"{recipe} raw", (m["uncalibrated"] or {}).get("bins"))):
            if bins:
                plots.reliability_diagram(pd.DataFrame(bins), ax=ax, label=name)
    ax.set_title(f"Reliability at {int(largest['n_train'].iat[0]):,} training images")
    write_figure(study_dir / "reliability.png", fig)
    write_study_report(report_dir, cfg.name, lines, table,
                       {"": study_dir / "recovery.png", "_reliability": study_dir / "reliability.png"})
    log.info("recovery study: %d rows -> %s, %s", len(table), study_dir, report_dir / f"{cfg.name}.md")


def main() -> None:
    from pipeline.cli import run_stage

    def extra(p) -> None:  # noqa: ANN001
        p.add_argument("--table-only", action="store_true",
                       help="train and predict nothing: evaluate the cells already predicted and "
                            "write the table, figures and report from them")

    run_stage("Signal-recovery study on the synthetic market: recipes x training-set sizes "
              "against the Bayes bound.", lambda cfg, args: run_study(cfg, table_only=args.table_only),
              extra=extra)


if __name__ == "__main__":
    main()
