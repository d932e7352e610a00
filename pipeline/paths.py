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

from pipeline.config import HORIZON_FREQUENCY, Config, parse_image_set


def panel_dir(cfg: Config) -> Path:
    return cfg.experiment_dir / "panel"


def images_dir(cfg: Config, image_set: str) -> Path:
    w, freq = parse_image_set(image_set)
    return cfg.experiment_dir / "images" / f"I{w}_{freq}"


def run_name(cfg: Config, model: str | None = None) -> str:
    """The run folder's name: everything that makes a run a different run, so none replaces another.

    ``<model>_R<horizon>`` (the model name is an ablation variant's when given), then, only where
    they differ from the paper's baseline: ``-rec`` for record-count labels (ret_5d/20d/60d instead
    of the period return), ``-<freq>`` for an image frequency other than the horizon's, ``-jf`` for
    the published split or ``-is<first>-<last>-os<first>-<last>`` for custom years, and the
    ``train.run_tag``. E.g. ``I20_R20`` (SSRN split), ``I20_R20-jf``, ``I20_R5-month``,
    ``I20_R20-is2005-2011-os2012-2019-fast``.
    """
    t = cfg.train
    parts = [f"{model or t.model}_R{t.horizon}"]
    if t.label_return == "records":
        parts.append("rec")
    freq = parse_image_set(t.image_set)[1]
    if freq != HORIZON_FREQUENCY.get(t.horizon):
        parts.append(freq)
    if t.split == "jf":
        parts.append("jf")
    elif t.split == "custom":
        (a, b), (c, d) = t.insample_years, t.test_years
        parts.append(f"is{a}-{b}-os{c}-{d}")
    if t.run_tag:
        parts.append(t.run_tag)
    return "-".join(parts)


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
