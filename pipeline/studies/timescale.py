"""Time-scale transfer (``make study-timescale``; METHOD 11, JF Tables 11-12).

The model trained on the daily-bar image set ``timescale.source`` (I5/week: an I5/R5 run) is
applied **unchanged** (its weights, normalisation and validation-fitted calibration) to each
aggregated set of ``timescale.targets`` (``I5x4/month``: 20-day windows drawn as 5 bars of 4 days;
``I5x12/quarter``: 60 days as 5 bars of 12), and judged beside the model trained at that scale on
the daily set of the same window and frequency (I20/R20 on I20/month, I60/R60 on I60/quarter).
The aggregated sets carry the labels and image dates of those daily sets (pipeline.images.build),
so the transferred and the trained model are scored on the same stock-periods.

A driver over the stages, not a copy of them: panel, images, train, predict and evaluate run
through their library functions, each resumable and skipped when done. Runs (``data/<name>/runs/``):

    I5_R5[...]                        the source, trained on timescale.source (the usual run name)
    I20_R20[...], I60_R60[...]        trained at each target's scale on its daily set
    I5_R20[...]-x4-from-R5            the transfer: predictions.parquet of the source's ensemble on
                                      I5x4/month, transfer.json naming the source run and weights

Each is evaluated by ``pipeline.evaluate.core.evaluate_run`` into ``data/<name>/eval/<run>/``.

A regression target (``train.target`` return | vol_adjusted_return, METHOD 3.6) applies to every
run of the study alike (they share the train section): the source predicts its target, the
transfer is that prediction unchanged on the aggregated images, and all are evaluated with the
regression metrics (sign accuracy, MSE, out-of-sample R^2; no log loss). Signs and ranks are
scale-free, so accuracy, IC and portfolios compare as for the classifier; the MSE and R^2 of the
transfer are those of the unchanged prediction against the target of the longer horizon (for
``return`` a 5-day return forecast judged against 20- or 60-day returns; a vol-adjusted return is
in standard deviations over its own horizon at every scale).

Outputs in ``data/<name>/timescale/``: timescale.parquet / .csv (:func:`comparison_table`, one row
per evaluated run), agreement.csv (transferred vs trained P(up) on their common rows),
timescale.png (:func:`plot_comparison`), config.yaml; and ``reports/<name>.md`` (+ .csv, .png).
"""

from __future__ import annotations

import logging
import time
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pandas as pd

from pipeline import paths, tabular
from pipeline.config import (FREQUENCY_HORIZON, Config, derive, image_set_spec, is_regression,
                             save_resolved, section_hash, split_years)
from pipeline.errors import InputError
from pipeline.direction import predicted_up
from pipeline.images.store import ImageSet, label_suffix
from pipeline.io import (atomic_write_text, folder_lock, is_done, mark_done, marker_path,
                         read_json, remove_stale_temps, write_figure, write_json, write_parquet)
from pipeline.studies.report import Column, study_markdown, write_study_report

log = logging.getLogger(__name__)

TRANSFER_CARD = "transfer.json"


# --------------------------------------------------------------------------------------------------
# The study's runs, as configs of the ordinary stages


def _with_train(cfg: Config, check: bool = True, **train) -> Config:  # noqa: ANN003
    return derive(cfg, {f"train.{k}": v for k, v in train.items()}, check=check)


def source_config(cfg: Config) -> Config:
    """The source run: model I{B} trained on ``timescale.source`` at its frequency's horizon."""
    s = image_set_spec(cfg.timescale.source)
    return _with_train(cfg, model=f"I{s.bars}", image_set=cfg.timescale.source,
                       horizon=FREQUENCY_HORIZON[s.freq])


def native_config(cfg: Config, target: str) -> Config:
    """The run trained at the target's scale: model I{W} on the daily set ``I{W}/{freq}``."""
    s = image_set_spec(target)
    return _with_train(cfg, model=f"I{s.window_days}", image_set=s.native,
                       horizon=FREQUENCY_HORIZON[s.freq])


def transfer_config(cfg: Config, target: str) -> Config:
    """The transfer's run: the source's model on ``target`` at the target frequency's horizon.
    Its run name (pipeline.paths.run_name) carries ``-x<k>`` and ``-from-R<source horizon>``, so
    it never replaces a run trained on I{B} images at that horizon."""
    s = image_set_spec(target)
    src = source_config(cfg)
    tag = "-".join(t for t in (cfg.train.run_tag, f"from-R{src.train.horizon}") if t)
    # Not checked as a config to train from: an I5 model on aggregated bars is only ever predicted.
    return _with_train(cfg, check=False, model=src.train.model, image_set=target,
                       horizon=FREQUENCY_HORIZON[s.freq], run_tag=tag)


def image_sets(cfg: Config) -> list[str]:
    """Every image set the study needs: the source, each target and its daily counterpart."""
    ts = cfg.timescale
    out = [ts.source]
    for t in ts.targets:
        out += [t, image_set_spec(t).native]
    return list(dict.fromkeys(out))


# --------------------------------------------------------------------------------------------------
# The transfer's predictions


def predict_transferred(source: Config, target: Config) -> Path:
    """Predict the finished run ``paths.run_dir(source)`` unchanged on the test years of the image
    set ``target.train.image_set``; write ``paths.run_dir(target)/predictions.parquet``.

    P(up) per member = the member's softmax output on the target images normalised with the
    source's training statistics, through the member's calibration when the source has one; the
    ensemble P(up) = their mean (exactly what ``make predict`` does for the source's own images).
    The table has the columns of ``make predict`` (pipeline.predict.core.prediction_frame), the
    label and returns of the target's horizon. Also writes ``transfer.json`` (source run, its
    training hash and weight hashes, image set) and ``_PREDICT_DONE.json``; skipped when done for
    the same source weights, image set and years. For a regression source ``p_up`` holds its
    predicted target, unchanged (no calibration). Refuses (InputError) an unfinished source run,
    an unfinished or stale image set, and an image set of another size than the model's input.
    """
    from pipeline.predict.core import (add_tickers, predict_proba, prediction_frame, stock_tickers,
                                       write_year_frames)
    from pipeline.runs import load_ensemble, read_model_card
    from pipeline.train import ddp
    from pipeline.train.data import norm_for_year, oos_years
    from pipeline.train.loop import check_images_current, resolve_runtime, set_threads

    src_run = paths.run_dir(source)
    train_marker = marker_path(src_run, "_TRAIN_DONE")
    if not train_marker.exists():
        raise FileNotFoundError(f"{src_run} is not a finished training run: train it first "
                                f"(`make study-timescale CONFIG={source.name}` trains it)")
    t = target.train
    image_set = ImageSet(paths.images_dir(target, t.image_set))
    check_images_current(target, image_set)
    card = read_model_card(src_run)
    if tuple(card["image_hw"]) != tuple(image_set.shape):
        raise InputError(
            f"the model of {src_run} takes {card['image_hw'][0]}x{card['image_hw'][1]} images but "
            f"the image set {t.image_set!r} ({image_set.directory}) holds {image_set.shape[0]}x"
            f"{image_set.shape[1]}: it cannot be applied unchanged")
    years = oos_years(target, image_set)
    out_dir = paths.run_dir(target)
    out = out_dir / "predictions.parquet"
    rt = resolve_runtime(t, ddp.resolve_device(t.device))
    origin = {"source_run": src_run.name, "source_train_hash": read_json(train_marker)["hash"],
              "weights": [m["sha256"] for m in card["members"]],
              "image_set": t.image_set, "images_hash": read_json(marker_path(image_set.directory)).get("hash"),
              "years": years, "counts": [image_set.count(y) for y in years],
              "horizon": t.horizon, "label_return": t.label_return, "precision": rt.precision}
    settings = section_hash(origin)
    if is_done(out_dir, settings, "_PREDICT_DONE") and out.exists():
        log.info("%s: transferred predictions up to date, skipping", out)
        return out
    t0 = time.perf_counter()
    with folder_lock(out_dir, "predict"):
        remove_stale_temps(out_dir, f".{out.name}.*.tmp", recursive=False)
        marker_path(out_dir, "_PREDICT_DONE").unlink(missing_ok=True)
        ens = load_ensemble(src_run)
        if rt.device.type == "cpu":
            set_threads(t)
        suffix = label_suffix(t.horizon, t.label_return)
        tickers, source_file = stock_tickers(target, image_set)

        def frames() -> Iterator[pd.DataFrame]:
            for y in years:
                mean, std = norm_for_year(ens.norm, y)
                probs = predict_proba(ens.members, image_set.images(y), mean, std, rt,
                                      target.evaluate.predict_batch_size, desc=f"transfer {y}")
                df = prediction_frame(image_set.labels(y), probs, suffix, ens.calibrations)
                add_tickers(df, tickers, source_file, where=f"{image_set.directory} year {y}")
                yield df

        rows = write_year_frames(out, frames())
        write_json(out_dir / TRANSFER_CARD, origin)
        save_resolved(target, out_dir)
    mark_done(out_dir, settings, "_PREDICT_DONE", rows=rows, seconds=round(time.perf_counter() - t0, 1),
              source_run=src_run.name)
    log.info("%s: %d transferred predictions from %s", out, rows, src_run.name)
    return out


# --------------------------------------------------------------------------------------------------
# The comparison


def _row(cfg: Config, kind: str, days: int, run_cfg: Config, trained_on: str) -> dict:
    """One row of the comparison table from a run's metrics.json."""
    from pipeline.paper_numbers import hl_reference

    m = read_json(paths.eval_dir(run_cfg) / "metrics.json")
    t = run_cfg.train
    # The paper's Sharpe ratios are those of its classifiers: a regression run has no reference.
    if is_regression(t.target):
        ref = None
    elif kind == "transfer":
        ref = hl_reference(f"I{image_set_spec(trained_on).bars}->I{days}", t.horizon)
    else:
        ref = hl_reference(t.model, t.horizon)

    def f(x):  # noqa: ANN001, ANN202
        return float("nan") if x is None else float(x)

    bayes = m.get("bayes") or {}
    fit = m.get("regression") or {}  # a regression run's squared-error fit (evaluate/regression.py)
    return {"window_days": days, "kind": kind, "model": t.model, "trained_on": trained_on,
            "applied_to": t.image_set, "horizon": t.horizon, "run": paths.run_name(run_cfg),
            "n": int(m["n"]), "accuracy": f(m["accuracy"]), "accuracy_se": f(m.get("accuracy_se")),
            "loss": f(m["loss"]), "mse": f(fit.get("mse")), "r2_oos": f(fit.get("r2_oos")),
            "spearman": f(m["spearman"]), "pearson": f(m["pearson"]),
            "sharpe_ew": f(m.get("sharpe_ew")), "sharpe_vw": f(m.get("sharpe_vw")),
            "hl_t_ew": f(m.get("hl_t_ew")), "hl_ret_ew": f(m.get("hl_ret_ew")),
            "turnover_ew_pct": f(m.get("turnover_ew_pct")),
            "bayes": f(bayes.get("accuracy")), "share_up_pred": f(m["share_up_pred"]),
            "share_up_realised": f(m["share_up_realised"]),
            "paper_sharpe_ew": f(ref.ew_sr if ref else None), "paper_sharpe_vw": f(ref.vw_sr if ref else None)}


def comparison_table(cfg: Config) -> pd.DataFrame:
    """One row per evaluated run, in scale order: the source at its own scale, then per target the
    transfer and the model trained at that scale.

    Columns: window_days (trading days the chart covers), kind ("trained" | "transfer"), model,
    trained_on / applied_to (image sets), horizon, run, n (evaluated stock-periods), accuracy
    (fraction, with accuracy_se: date-clustered s.e.; of the prediction's sign for a regression
    target), loss (nats; NaN for a regression target), mse / r2_oos (a regression target's mean
    squared error and out-of-sample R^2 against a forecast of zero, in the target's units; NaN for
    the classifier), spearman / pearson (mean per-date correlation of the score with the return),
    sharpe_ew / sharpe_vw (annualised H-L Sharpe ratio; VW is dollar-volume weighted on free data),
    hl_t_ew, hl_ret_ew (annualised, decimal), turnover_ew_pct (% per month), bayes (the synthetic
    market's Bayes accuracy of those rows, else NaN), share_up_pred / share_up_realised,
    paper_sharpe_ew / _vw (the paper's classifier at that scale, JF/NB; NaN if it has none and
    for a regression target, which the paper does not report).
    """
    src = source_config(cfg)
    rows = [_row(cfg, "trained", image_set_spec(cfg.timescale.source).window_days, src, src.train.image_set)]
    for target in cfg.timescale.targets:
        days = image_set_spec(target).window_days
        rows.append(_row(cfg, "transfer", days, transfer_config(cfg, target), src.train.image_set))
        nat = native_config(cfg, target)
        rows.append(_row(cfg, "trained", days, nat, nat.train.image_set))
    return pd.DataFrame(rows)


def agreement_table(cfg: Config) -> pd.DataFrame:
    """Per target, the transferred and the trained model's P(up) on their common stock-periods:
    window_days, n_common, n_transfer, n_trained, pearson / spearman (pooled over all rows),
    same_side (fraction predicting the same side: P(up) on the same side of 0.5; for a regression
    target, predictions on the same side of 0, pipeline.evaluate.regression.predicted_up)."""
    regression = is_regression(cfg.train.target)
    rows = []
    for target in cfg.timescale.targets:
        a = pd.read_parquet(paths.run_dir(transfer_config(cfg, target)) / "predictions.parquet",
                            columns=["stock_id", "date", "p_up"])
        b = pd.read_parquet(paths.run_dir(native_config(cfg, target)) / "predictions.parquet",
                            columns=["stock_id", "date", "p_up"])
        j = a.merge(b, on=["stock_id", "date"], suffixes=("_transfer", "_trained"))
        x, y = j["p_up_transfer"], j["p_up_trained"]
        rows.append({"window_days": image_set_spec(target).window_days, "applied_to": target,
                     "n_common": len(j), "n_transfer": len(a), "n_trained": len(b),
                     "pearson": float(x.corr(y)) if len(j) > 1 else float("nan"),
                     "spearman": float(x.corr(y, method="spearman")) if len(j) > 1 else float("nan"),
                     "same_side": float((_up(x, regression) == _up(y, regression)).mean())
                     if len(j) else float("nan")})
    return pd.DataFrame(rows)


def _up(score: pd.Series, regression: bool) -> np.ndarray:
    """Predicted up per row: P(up) > 0.5, or a regression prediction above 0."""
    x = score.to_numpy(dtype=np.float64)
    return predicted_up(x) if regression else x > 0.5


def plot_comparison(table: pd.DataFrame, axes=None):  # noqa: ANN001, ANN201
    """Two panels against the chart's window (trading days): accuracy (±2 s.e.; the Bayes accuracy
    as a dotted line on the synthetic market) and EW H-L Sharpe ratio; one marker per run, filled
    for models trained at that scale, open for the transferred model. Returns the Axes."""
    from matplotlib.figure import Figure

    if axes is None:
        axes = Figure(figsize=(10, 4)).subplots(1, 2)
    scales = sorted(table["window_days"].unique())
    pos = {d: i for i, d in enumerate(scales)}
    for kind, dx, mfc, colour in (("trained", -0.08, None, "C0"), ("transfer", 0.08, "white", "C1")):
        g = table[table["kind"] == kind]
        x = np.array([pos[d] for d in g["window_days"]]) + dx
        label = "trained at that scale" if kind == "trained" else \
            f"{g['model'].iat[0] if len(g) else ''} applied unchanged (aggregated bars)"
        axes[0].errorbar(x, g["accuracy"], yerr=2 * g["accuracy_se"], fmt="o", color=colour, mfc=mfc,
                         capsize=3, label=label)
        axes[1].bar(x, g["sharpe_ew"], width=0.16, color=colour if mfc is None else "white",
                    edgecolor=colour, label=label)
    if table["bayes"].notna().any():  # one bound per scale: each scale has its own label
        b = table.groupby("window_days")["bayes"].max().dropna()
        x = np.array([pos[d] for d in b.index])
        axes[0].hlines(b.to_numpy(), x - 0.3, x + 0.3, colors="black", linestyles=":",
                       label="Bayes bound (synthetic market)")
    axes[0].axhline(0.5, color="0.6", lw=0.8)
    axes[1].axhline(0, color="black", lw=0.8)
    names = {d: f"{d} days" for d in scales}
    for ax in axes:
        ax.set_xticks(range(len(scales)), [names[d] for d in scales])
        ax.set_xlabel("chart window (trading days; label and rebalancing at its frequency)")
    axes[0].set_ylabel("out-of-sample accuracy (±2 s.e.)")
    axes[1].set_ylabel("EW H−L Sharpe ratio (annualised)")
    axes[0].set_title("Accuracy")
    axes[1].set_title("Long-short decile portfolio")
    axes[0].legend(frameon=False, fontsize=8)
    axes[1].legend(frameon=False, fontsize=8)
    return axes


def _fmt(x: float, digits: int = 3) -> str:
    return tabular.number(x, digits, missing=tabular.MISSING)


def table_columns(regression: bool) -> tuple[Column, ...]:
    """The comparison table's columns; ``regression``: MSE and R²_oos in place of the loss."""
    fit = ((Column("mse", "MSE", 6), Column("r2_oos", "R²_oos", 4)) if regression
           else (Column("loss", "loss", 4),))
    return (Column("window_days", "window"), Column("kind", "", text=True),
            Column("model", "model", text=True), Column("trained_on", "trained on", text=True),
            Column("applied_to", "applied to", text=True), Column("horizon", "R"),
            Column("n", "test rows"), Column("accuracy", "accuracy", 4), Column("bayes", "Bayes", 4),
            *fit, Column("spearman", "Spearman", 4), Column("sharpe_ew", "EW H−L SR", 2),
            Column("sharpe_vw", "VW H−L SR", 2), Column("turnover_ew_pct", "EW turnover %/mo", 0),
            Column("paper_sharpe_ew", "paper EW SR", 2))


def markdown_table(table: pd.DataFrame, regression: bool = False) -> str:
    """The comparison table in Markdown (:func:`table_columns`)."""
    return study_markdown(table, table_columns(regression))


def write_outputs(cfg: Config, table: pd.DataFrame, agree: pd.DataFrame, out_dir: Path,
                  report_dir: Path, wall: float) -> None:
    from pipeline.gradcam.figures import score_name

    out_dir.mkdir(parents=True, exist_ok=True)
    write_parquet(out_dir / "timescale.parquet", table)
    atomic_write_text(out_dir / "timescale.csv", table.to_csv(index=False))
    atomic_write_text(out_dir / "agreement.csv", agree.to_csv(index=False))
    axes = plot_comparison(table)
    fig = axes[0].figure
    fig.suptitle(f"Time-scale transfer on {cfg.name}: the {source_config(cfg).train.model} model "
                 "on aggregated bars vs models trained at each scale", fontsize=10)
    fig.tight_layout()
    write_figure(out_dir / "timescale.png", fig)
    save_resolved(cfg, out_dir)
    (i0, i1), (t0, t1) = split_years(cfg.train)
    src = source_config(cfg)
    regression = is_regression(cfg.train.target)
    score = score_name(regression)
    agree_lines = [f"- {r.applied_to}: {r.n_common:,} common stock-periods (transfer {r.n_transfer:,}, "
                   f"trained {r.n_trained:,}); {score} correlation {_fmt(r.pearson)} (Spearman "
                   f"{_fmt(r.spearman)}), same side of {0 if regression else 0.5} on "
                   f"{_fmt(100 * r.same_side, 1)}%"
                   for r in agree.itertuples()]
    target_note = (
        f" Target: `train.target: {cfg.train.target}`, a regression (docs/method.md section 3.6): "
        "every run learns the label's return (not its up/down class); accuracy is that of the "
        "prediction's sign, MSE and R²_oos (against a forecast of zero) are in the target's units, "
        "and the transfer's "
        f"are those of its unchanged prediction of the R{src.train.horizon} target judged against "
        "the target of the longer horizon." if regression else "")
    lines = [
        f"# Time-scale transfer: {src.train.model} applied to {', '.join(cfg.timescale.targets)}",
        "",
        "Command (resumable; every stage skips finished work):",
        "",
        "```bash",
        f"make study-timescale CONFIG={cfg.name}",
        "```",
        "",
        f"The {src.train.model}/R{src.train.horizon} model trained on `{cfg.timescale.source}` is applied "
        f"unchanged (weights, normalisation{'' if regression else ', calibration'}) to longer "
        "windows drawn as "
        f"{image_set_spec(cfg.timescale.source).bars} bars of k days (docs/method.md section 11), "
        "beside the model trained at that scale on the daily chart of the same window. Both are "
        "scored on the same stock-periods and labels. "
        f"Market: {cfg.panel.source}"
        + (f" ({cfg.synthetic.n_stocks} stocks, {cfg.synthetic.start}..{cfg.synthetic.end}, seed "
           f"{cfg.synthetic.seed})" if cfg.panel.source == "synthetic" else "")
        + f"; in-sample {i0}–{i1}, test {t0}–{t1}; {cfg.train.ensemble} member(s) per trained run, at "
        f"most {cfg.train.epochs} epochs"
        + (f", at most {cfg.train.max_train_images:,} in-sample images" if cfg.train.max_train_images else "")
        + f". Wall time of this invocation: {wall / 60:.1f} min. Resolved config: "
        f"`data/{cfg.name}/timescale/config.yaml`." + target_note,
        "",
        markdown_table(table, regression),
        "",
        f"Accuracy and {'MSE' if regression else 'loss'} over every evaluated test row; Spearman = "
        f"mean per-date rank correlation of {score} with the realised return; H−L = decile 10 "
        "minus decile 1 at the label's frequency; "
        "VW is dollar-volume weighted on free data; the paper's figures (JF, NB) are reference "
        "points on CRSP, not targets"
        + (", and exist for its classifiers only, so a regression run has none." if regression else "."),
        "",
        "Agreement of the transferred and the trained model, image for image:",
        "",
        *agree_lines,
        "",
        f"![time-scale transfer]({cfg.name}.png)",
        "",
    ]
    write_study_report(report_dir, cfg.name, lines, table, {"": out_dir / "timescale.png"})


def run_study(cfg: Config, report_dir: Path | None = None) -> pd.DataFrame:
    """Build, train, predict, transfer and evaluate everything the comparison needs (each step
    resumable), then write the table, figure and report; returns the comparison table."""
    from pipeline.evaluate.core import evaluate_run
    from pipeline.images.build import build_image_set
    from pipeline.images.executor import make_executor
    from pipeline.panel.build import make_panel
    from pipeline.predict.core import predict_run
    from pipeline.train.loop import train_run

    t_start = time.perf_counter()
    make_panel(cfg)
    executor = make_executor(cfg.images)
    try:
        for s in image_sets(cfg):
            build_image_set(cfg, s, executor)
    finally:
        executor.close()
    src = source_config(cfg)
    trained = [src] + [native_config(cfg, t) for t in cfg.timescale.targets]
    for c in trained:
        log.info("time-scale study: %s on %s", c.train.model, c.train.image_set)
        train_run(c)
        predict_run(c)
        evaluate_run(c)
    for target in cfg.timescale.targets:
        tc = transfer_config(cfg, target)
        log.info("time-scale study: %s applied to %s", src.train.model, target)
        predict_transferred(src, tc)
        evaluate_run(tc)
    table = comparison_table(cfg)
    agree = agreement_table(cfg)
    out_dir = cfg.experiment_dir / "timescale"
    with folder_lock(out_dir, "timescale"):
        write_outputs(cfg, table, agree, out_dir, report_dir or Path(cfg.reports_dir),
                      time.perf_counter() - t_start)
    log.info("time-scale study: %d rows -> %s", len(table), out_dir)
    return table


def main() -> None:
    from pipeline.cli import run_stage

    run_stage("Time-scale transfer: the I5 model on 20/60-day windows aggregated into 5 bars, "
              "beside the models trained at those scales.", lambda cfg, args: run_study(cfg))


if __name__ == "__main__":
    main()
