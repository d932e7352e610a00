"""A committed summary of one evaluated run: ``reports/<config>[-<run_tag>].md`` + ``.metrics.json``.

    run_summary(cfg) -> dict              metrics.json + what was trained and how long it took
    write_run_summary(cfg, command) -> (markdown path, json path)

``python -m pipeline.evaluate.summary --config X [--set ...]`` (``make summary CONFIG=X``) writes
both from the artifacts of the train, predict and evaluate stages (and the top-500 evaluation when
it exists), so a long real-data run leaves a small, reviewable record in git: the command, the
settings that differ from the paper's, members, training images, epochs, stage wall times, the
decile and benchmark tables beside the paper's numbers, and how the CNN's H-L return relates to
each benchmark's (correlation, alpha with a Newey-West t).
"""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import pandas as pd

from pipeline import paths
from pipeline.config import Config, derive, split_years
from pipeline.evaluate.conventions import periods_per_year, weighting_short
from pipeline.io import atomic_write_text, marker_path, read_json, write_json


def _member_logs(run: Path, k: int) -> list[pd.DataFrame]:
    return [pd.read_csv(run / f"member_{i}" / "log.csv") for i in range(k)]


def run_summary(cfg: Config) -> dict:
    """Everything the committed record holds, as one JSON-ready dict."""
    run = paths.run_dir(cfg)
    ev = paths.eval_dir(cfg)
    for p, stage in ((run / "summary.json", "train"), (run / "_PREDICT_DONE.json", "predict"),
                     (ev / "metrics.json", "evaluate")):
        if not p.exists():
            raise FileNotFoundError(f"no {p}: run `make {stage} CONFIG={cfg.name}` first")
    train = read_json(run / "summary.json")
    logs = _member_logs(run, len(train["members"]))
    pred = read_json(marker_path(run, "_PREDICT_DONE"))
    metrics = read_json(ev / "metrics.json")
    top = None
    top_dir = top500_eval_dir(cfg) if not cfg.evaluate.top500 else None
    if top_dir is not None and (top_dir / "metrics.json").exists():
        top = read_json(top_dir / "metrics.json")
    (i0, i1), (t0, t1) = split_years(cfg.train)
    return {
        "config": cfg.name, "run": paths.run_name(cfg),
        "split": {"name": cfg.train.split, "insample": [i0, i1], "test": [t0, t1]},
        "recipe": {k: getattr(cfg.train, k) for k in ("lr", "weight_decay", "head_init", "calibration",
                                                       "epochs", "patience", "batch_size", "ensemble",
                                                       "max_train_images", "precision")},
        "n_train": train["n_train"], "n_val": train["n_val"], "members": [
            {**m, "epoch_seconds": [float(x) for x in lg["seconds"]],
             "train_images_per_s": float(lg["images_per_s"].median())}
            for m, lg in zip(train["members"], logs)],
        "seconds": {"train": float(sum(lg["seconds"].sum() for lg in logs)),
                    "predict": pred.get("seconds"), "evaluate": metrics.get("seconds")},
        "metrics": metrics, "metrics_top500": top,
    }


def _f(x, d: int = 3) -> str:  # noqa: ANN001
    return "–" if x is None or (isinstance(x, float) and not math.isfinite(x)) else f"{x:.{d}f}"


def _vs_table(metrics: dict, proxy: bool) -> list[str]:
    vs = metrics.get("vs_benchmarks") or {}
    if not vs:
        return []
    lines = ["| benchmark | weighting | benchmark H−L SR | CNN H−L SR | SR diff t | corr(H−L) | "
             "CNN alpha (ann.) | alpha NW t | beta | R² |", "|---|---|---:|---:|---:|---:|---:|---:|---:|---:|"]
    for w, block in vs.items():
        cnn_sr = metrics["strategies"]["CNN"].get(f"{w}_sr")
        n = metrics["strategies"]["CNN"].get(f"{w}_n_periods") or 0
        years = n / periods_per_year(metrics["frequency"])
        for b, r in block["benchmarks"].items():
            best = " (best)" if b == block["best"] else ""
            d_t = (cnn_sr - r["sharpe"]) * math.sqrt(years) if cnn_sr is not None and r["sharpe"] is not None else None
            lines.append(f"| {b}{best} | {weighting_short(w, proxy)} | {_f(r['sharpe'], 2)} | {_f(cnn_sr, 2)} | "
                         f"{_f(d_t, 2)} | {_f(r['corr'], 2)} | {_f(r['alpha_ann'], 3)} | "
                         f"{_f(r['alpha_t_nw'], 2)} | {_f(r['beta'], 2)} | {_f(r['r2'], 3)} |")
    return lines


def top500_eval_dir(cfg: Config) -> Path:
    """Where the same run's top-500 evaluation lives (beside the all-stock one)."""
    return paths.eval_dir(derive(cfg, {"evaluate.top500": True}))


def summary_markdown(s: dict, command: str, eval_dir: Path, top_dir: Path | None = None) -> str:
    m = s["metrics"]
    proxy = bool(m.get("mktcap_is_proxy"))
    mem = s["members"]
    sec = s["seconds"]
    lines = [
        f"# {s['config']}: {m['model']}/R{m['horizon']} ({m['return_column']}), "
        f"split {s['split']['name']} (in-sample {s['split']['insample'][0]}–{s['split']['insample'][1]}, "
        f"test {s['split']['test'][0]}–{s['split']['test'][1]})",
        "",
        "Command (resumable):", "", "```bash", command, "```", "",
        "Training recipe: " + ", ".join(f"{k} {v}" for k, v in s["recipe"].items()) + ".",
        f"Members: {len(mem)} (the paper: 5); each trained on {s['n_train']:,} images, validated on "
        f"{s['n_val']:,}; best epochs {[x['best_epoch'] for x in mem]}, epochs run "
        f"{[x['epochs_run'] for x in mem]}, median {np.median([x['train_images_per_s'] for x in mem]):.0f} "
        "training images/s.",
        f"Stage wall times: train {sec['train'] / 60:.1f} min (sum of epochs), predict "
        f"{(sec['predict'] or 0) / 60:.1f} min (last invocation), evaluate {(sec['evaluate'] or 0) / 60:.1f} min.",
        "",
        "## Classification", "",
        "| N | accuracy | loss (ln 2 = 0.693) | MCC | share predicted up | realised up | ECE | Spearman | Pearson |",
        "|---:|---:|---:|---:|---:|---:|---:|---:|---:|",
        f"| {m['n']:,} | {_f(m['accuracy'], 4)} | {_f(m['loss'], 4)} | {_f(m['mcc'], 4)} | "
        f"{_f(m['share_up_pred'])} | {_f(m.get('share_up_realised'))} | {_f(m['calibration']['ece'], 4)} | "
        f"{_f(m['spearman'])} | {_f(m['pearson'])} |",
        "",
    ]
    b = m.get("bayes")
    if b:
        lines += [f"Bayes-optimal accuracy of exactly these test rows and label ({b['label']}, "
                  f"{b['horizon_min']}–{b['horizon_max']} records ahead): {b['accuracy']:.4f} ± {b['stderr']:.4f}; "
                  f"gain recovered (accuracy − 0.5) / (Bayes − 0.5) = {b['gain_recovered']:.1%} ± "
                  f"{b['gain_recovered_se']:.1%} (test dates as clusters); the Bayes rule calls "
                  f"{b['share_up_bayes']:.1%} of these rows up.", ""]
    u = m.get("uncalibrated")
    if u:
        lines += [f"Without the validation-fitted calibration (the same members' raw softmax): accuracy "
                  f"{u['accuracy']:.4f}, loss {u['loss']:.4f}, share predicted up {u['share_up_pred']:.3f}, "
                  f"ECE {u['ece']:.4f}.", ""]
    paper = m.get("paper") or {}
    if paper:
        lines += ["Paper: " + ", ".join(f"{k} {v}" for k, v in paper.items() if v is not None) + ".", ""]
    for title, stem in (("Decile portfolios (all stocks)", "deciles"),
                        ("Legs, net of trading costs, drawdown", "net_of_cost"),
                        ("H−L by calendar year", "hl_by_year"),
                        ("P(up) and stock characteristics (the paper's Table 5)", "characteristics"),
                        ("H−L portfolios: CNN vs benchmarks", "benchmarks")):
        p = eval_dir / "tables" / f"{stem}.md"
        if p.exists():
            lines += [f"## {title}", "", p.read_text().strip(), ""]
    vs = _vs_table(m, proxy)
    if vs:
        lines += ["## Is the image signal a restatement of a benchmark?", "",
                  "Per weighting, each benchmark's H−L series against the CNN's on the same rebalance "
                  "dates: the correlation of the two series and the regression CNN H−L = alpha + beta × "
                  "benchmark H−L (alpha annualised; t with Newey–West standard errors).", "", *vs, ""]
    top = s.get("metrics_top500")
    if top and top_dir is not None and (top_dir / "tables" / "deciles.md").exists():
        lines += ["## Top-500 universe (the 500 largest by cap proxy at each formation)", "",
                  (top_dir / "tables" / "deciles.md").read_text().strip(), ""]
    return "\n".join(lines)


def write_run_summary(cfg: Config, command: str, out_dir: Path | None = None) -> tuple[Path, Path]:
    """Write ``<reports_dir>/<config>[-<run_tag>].md`` and ``.metrics.json``; returns both paths."""
    s = run_summary(cfg)
    out = Path(out_dir or cfg.reports_dir)
    stem = cfg.name + (f"-{cfg.train.run_tag}" if cfg.train.run_tag else "")
    md = out / f"{stem}.md"
    js = out / f"{stem}.metrics.json"
    s["command"] = command
    atomic_write_text(md, summary_markdown(s, command, paths.eval_dir(cfg), top500_eval_dir(cfg)))
    write_json(js, s)
    return md, js


def main() -> None:
    from pipeline.cli import run_stage

    def body(cfg: Config, args) -> None:  # noqa: ANN001
        sets = " ".join(args.overrides)
        command = f"make replicate CONFIG={cfg.name}" + (f' SET="{sets}"' if sets else "")
        md, js = write_run_summary(cfg, command)
        print(f"{md}\n{js}")

    run_stage("Write the committed summary (Markdown + metrics JSON) of an evaluated run.", body)


if __name__ == "__main__":
    main()
