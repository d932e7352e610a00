"""Where each stage's artifacts live, derived from the config alone (one place, no duplication).

    data/<name>/panel/                         canonical panel              (panel)
    data/<name>/images/I20_month/              image set                    (images)
      (panel/ and images/ are under cfg.inputs_dir instead when it is set: ablations, benchmarks)
    data/<name>/runs/<run>/                    models, logs, predictions    (train, predict)
    data/<name>/eval/<run>/                    metrics, portfolios, tables  (evaluate)
    data/<name>/gradcam/<run>/                 Grad-CAM arrays and panels   (gradcam)
    data/<name>/interpret/<run>/               saliency, occlusion, ...     (interpret)
    data/<name>/ablations/                     Table-18 runs and table      (ablations)
    data/<name>/score/<run>/                   P(up) of new data per stock  (score)
    reports/<name>/                            HTML + PDF report            (report)
"""

from __future__ import annotations

from pathlib import Path

from pipeline.config import HORIZON_FREQUENCY, Config, image_set_spec, parse_image_set


# Run-name part of a regression target (the classifier, the paper's, has none).
TARGET_SUFFIX = {"return": "reg", "vol_adjusted_return": "regvol"}


def panel_dir(cfg: Config) -> Path:
    """``panel/`` of the experiment, or of the one ``cfg.inputs_dir`` names (``Config.inputs_root``)."""
    return cfg.inputs_root / "panel"


def images_dir(cfg: Config, image_set: str) -> Path:
    """``images/I20_month``; an aggregated set ``I5x4/month`` (METHOD 11) lives in ``images/I5x4_month``;
    under ``Config.inputs_root`` (the experiment's own folder unless ``inputs_dir`` is set)."""
    return cfg.inputs_root / "images" / image_set_spec(image_set).folder


def run_name(cfg: Config) -> str:
    """The run folder's name: everything that makes a run a different run, so none replaces another.

    ``<train.model>_R<horizon>`` (an ablation variant's config names the variant there), then, only where
    they differ from the paper's baseline: ``-rec`` for record-count labels (ret_5d/20d/60d instead
    of the period return), ``-reg`` / ``-regvol`` for a regression on the raw / volatility-adjusted
    return (``train.target``), ``-<freq>`` for an image frequency other than the horizon's, ``-jf`` for
    the published split or ``-is<first>-<last>-os<first>-<last>`` for custom years, ``-x<k>`` for
    images of k-day bars (``train.image_set`` ``I5x4/month``, METHOD 11), and the
    ``train.run_tag``. E.g. ``I20_R20`` (SSRN split), ``I20_R20-jf``, ``I20_R5-month``,
    ``I20_R20-is2005-2011-os2012-2019-fast``.
    """
    t = cfg.train
    parts = [f"{t.model}_R{t.horizon}"]
    if t.label_return == "records":
        parts.append("rec")
    if t.target in TARGET_SUFFIX:
        parts.append(TARGET_SUFFIX[t.target])
    freq = parse_image_set(t.image_set)[1]
    if freq != HORIZON_FREQUENCY.get(t.horizon):
        parts.append(freq)
    if t.split == "jf":
        parts.append("jf")
    elif t.split == "custom":
        (a, b), (c, d) = t.insample_years, t.test_years
        parts.append(f"is{a}-{b}-os{c}-{d}")
    bar_days = image_set_spec(t.image_set).bar_days
    if bar_days > 1:
        parts.append(f"x{bar_days}")
    if t.run_tag:
        parts.append(t.run_tag)
    if cfg.transfer.mode != "none":
        parts.append(transfer_suffix(cfg))
    return "-".join(parts)


def transfer_suffix(cfg: Config) -> str:
    """``<mode>_from_<source>`` for a transferred run (``transfer.mode`` direct | head): the source
    experiment's config name, with ``.<run>`` when ``transfer.source_run`` picks a run of it, or the
    run folder's ``<experiment>.<run>``; e.g. ``direct_from_demo``, ``head_from_demo``."""
    x = cfg.transfer
    if x.source_config is not None:
        src = Path(x.source_config).stem + (f".{x.source_run}" if x.source_run else "")
    else:
        run = Path(str(x.source_run)).resolve()
        src = f"{run.parent.parent.name}.{run.name}"
    return f"{x.mode}_from_" + "".join(ch if ch.isalnum() or ch in "._" else "_" for ch in src)


def run_dir(cfg: Config) -> Path:
    return cfg.experiment_dir / "runs" / run_name(cfg)


def eval_dir(cfg: Config) -> Path:
    """Evaluation of a run; the top-500 universe gets its own folder so both can coexist."""
    suffix = "_top500" if cfg.evaluate.top500 else ""
    return cfg.experiment_dir / "eval" / f"{run_name(cfg)}{suffix}"


def gradcam_dir(cfg: Config) -> Path:
    return cfg.experiment_dir / "gradcam" / run_name(cfg)


def interpret_dir(cfg: Config) -> Path:
    """``make interpret`` output of the experiment's run: data/<name>/interpret/<run>/."""
    return cfg.experiment_dir / "interpret" / run_name(cfg)


def score_dir(cfg: Config) -> Path:
    """``make score`` output of the experiment's run: data/<name>/score/<run>/."""
    return cfg.experiment_dir / "score" / run_name(cfg)


def ablations_dir(cfg: Config) -> Path:
    return cfg.experiment_dir / "ablations"


def report_dir(cfg: Config) -> Path:
    return Path(cfg.reports_dir) / cfg.name
