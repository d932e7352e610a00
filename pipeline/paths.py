"""Where each stage's artifacts live, derived from the config alone (one place, no duplication).

    data/<name>/panel/                         canonical panel              (panel)
    data/<name>/images/I20_month/              image set                    (images)
    data/<name>/runs/<run>/                    models, logs, predictions    (train, predict)
    data/<name>/eval/<run>/                    metrics, portfolios, tables  (evaluate)
    data/<name>/gradcam/<run>/                 Grad-CAM arrays and panels   (gradcam)
    data/<name>/ablations/                     Table-18 runs and table      (ablations)
    data/<name>/score/<run>/                   P(up) of new data per stock  (score)
    reports/<name>/                            HTML + PDF report            (report)
"""

from __future__ import annotations

from pathlib import Path

from pipeline.config import Config, parse_image_set


def panel_dir(cfg: Config) -> Path:
    return cfg.experiment_dir / "panel"


def images_dir(cfg: Config, image_set: str) -> Path:
    w, freq = parse_image_set(image_set)
    return cfg.experiment_dir / "images" / f"I{w}_{freq}"


def run_name(cfg: Config, model: str | None = None) -> str:
    """``I20_R20`` for the baseline; an ablation variant replaces the model name; a
    ``train.run_tag`` is appended (``I20_R20-<tag>``)."""
    tag = f"-{cfg.train.run_tag}" if cfg.train.run_tag else ""
    return f"{model or cfg.train.model}_R{cfg.train.horizon}{tag}"


def run_dir(cfg: Config, model: str | None = None) -> Path:
    return cfg.experiment_dir / "runs" / run_name(cfg, model)


def eval_dir(cfg: Config, model: str | None = None) -> Path:
    """Evaluation of a run; the top-500 universe gets its own folder so both can coexist."""
    suffix = "_top500" if cfg.evaluate.top500 else ""
    return cfg.experiment_dir / "eval" / f"{run_name(cfg, model)}{suffix}"


def gradcam_dir(cfg: Config) -> Path:
    return cfg.experiment_dir / "gradcam" / run_name(cfg)


def score_dir(cfg: Config) -> Path:
    """``make score`` output of the experiment's run: data/<name>/score/<run>/."""
    return cfg.experiment_dir / "score" / run_name(cfg)


def ablations_dir(cfg: Config) -> Path:
    return cfg.experiment_dir / "ablations"


def report_dir(cfg: Config) -> Path:
    return Path(cfg.reports_dir) / cfg.name
