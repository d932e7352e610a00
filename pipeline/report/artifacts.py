"""Loaders for every stage's artifacts, shared by the report and the notebooks.

Each loader reads one stage's documented artifacts (ARCHITECTURE.md, docs/interfaces.md) and returns a
small typed object, or ``None`` when the stage has not been run, so a caller can say "not run"
instead of failing. Nothing here computes a result a stage already computed: the report and the
notebooks only *read* metrics, tables and figures; the only derived quantities are counts and
summaries of the artifacts themselves (stocks per year, images per year, label shares).

A malformed artifact (bad JSON, a log missing a documented column) is an error naming the file,
never silently skipped: "not run" is reserved for artifacts that do not exist.
"""

from __future__ import annotations

import dataclasses
import logging
import re
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow.parquet as pq

from pipeline import paths
from pipeline.config import FREQUENCY_HORIZON, Config, parse_image_set
from pipeline.evaluate.conventions import HL
from pipeline.images.store import ImageSet, label_suffix
from pipeline.panel.store import PanelMeta
from pipeline.io import ArtifactError, read_json  # ArtifactError re-exported (report callers)
from pipeline.tabular import NumericTable, read_csv_numeric, read_numeric
from pipeline.train.log import LOG_COLUMNS

log = logging.getLogger(__name__)

# The member log.csv columns the report draws (the train stage writes more: pipeline.train.log).
REPORTED_LOG_COLUMNS = LOG_COLUMNS[:5]


# --------------------------------------------------------------------------------------------------
# Panel


@dataclass
class PanelSummary:
    """The panel stage's artifacts, summarised.

    ``universe``: one row per calendar year (index ``year``, int) with columns ``n_stocks`` (distinct
    stock_id with at least one record that year) and ``n_rows`` (stock-day records).
    ``bayes_accuracy``: horizon key ("5", "20", "60", maybe "week", ...) -> accuracy in [0, 1] of the
    Bayes-optimal classifier of the synthetic market; ``None`` for real data.
    """

    directory: Path
    meta: PanelMeta
    universe: pd.DataFrame
    n_tickers: int | None = None
    bayes_accuracy: dict[str, float] | None = None


def universe_by_year(panel_dir: str | Path, years: list[int]) -> pd.DataFrame:
    """Distinct stocks and records per year, reading only the ``stock_id`` column of each partition.

    Returns a frame indexed by ``year`` (int) with int64 columns ``n_stocks`` and ``n_rows``.
    """
    panel_dir = Path(panel_dir)
    rows = []
    for y in years:
        p = panel_dir / f"year={int(y)}" / "part.parquet"
        if not p.exists():
            raise ArtifactError(f"{panel_dir}/meta.json lists year {y} but {p} is missing")
        sid = pq.read_table(p, columns=["stock_id"]).column("stock_id").to_numpy()
        rows.append((int(y), int(np.unique(sid).size), int(sid.size)))
    return pd.DataFrame(rows, columns=["year", "n_stocks", "n_rows"]).set_index("year")


def load_panel_summary(cfg: Config) -> PanelSummary | None:
    """The panel's meta.json, stocks per year and (synthetic source) Bayes accuracies; None if not run."""
    d = paths.panel_dir(cfg)
    meta_path = d / "meta.json"
    if not meta_path.exists():
        return None
    raw = read_json(meta_path)
    try:
        meta = PanelMeta(**raw)
    except TypeError as e:
        raise ArtifactError(f"{meta_path}: unexpected keys ({e})") from None
    universe = universe_by_year(d, meta.years)
    n_tickers = None
    if (d / "stocks.parquet").exists():
        n_tickers = int(pq.read_metadata(d / "stocks.parquet").num_rows)
    bayes = None
    if (d / "bayes_accuracy.json").exists():
        bayes = {str(k): float(v) for k, v in read_json(d / "bayes_accuracy.json").items()
                 if isinstance(v, (int, float))}
    return PanelSummary(directory=d, meta=meta, universe=universe, n_tickers=n_tickers,
                        bayes_accuracy=bayes)


# --------------------------------------------------------------------------------------------------
# Image sets


@dataclass
class ImageSetSummary:
    """One image set's artifacts.

    ``per_year``: index ``year``; columns ``n_images`` (int) and ``up_share`` (float, share of label 1
    among non-missing labels of ``label_column``; NaN when a year has none).
    ``rejections``: index = reason name (str), one int column per year, plus ``total``.
    """

    name: str  # "I20/month"
    directory: Path
    shape: tuple[int, int] | None
    per_year: pd.DataFrame
    rejections: pd.DataFrame
    label_column: str
    contact_sheet: Path | None


def rejection_table(rejections: dict) -> pd.DataFrame:
    """``{year: {reason: count}}`` (rejections.json) -> reasons x years table of ints plus ``total``.

    Years become int columns in ascending order; a reason missing in a year counts 0. Reasons are
    ordered by their name (the R0..R5 prefix gives the METHOD 2.7 order).
    """
    if not rejections:
        return pd.DataFrame(columns=["total"], dtype="int64")
    frame = pd.DataFrame({int(y): {str(k): int(v) for k, v in counts.items()}
                          for y, counts in rejections.items()})
    frame = frame.reindex(sorted(frame.columns), axis=1).fillna(0).astype("int64")
    frame = frame.sort_index()
    frame.index.name = "reason"
    frame["total"] = frame.sum(axis=1)
    return frame


def load_image_set_summary(cfg: Config, image_set: str) -> ImageSetSummary | None:
    """Counts, up-label shares, rejections and contact sheet of one image set; None if not built."""
    d = paths.images_dir(cfg, image_set)
    if not d.is_dir():
        return None
    s = ImageSet(d)
    if not s.years:
        return None
    w, freq = parse_image_set(image_set)
    # The label this set's natural horizon uses (the horizon sets the frequency, METHOD 2.9).
    horizon = FREQUENCY_HORIZON[freq]
    label_col = f"label_{label_suffix(horizon, cfg.train.label_return)}"
    rows = []
    for y in s.years:
        lab = s.labels(y, columns=[label_col])[label_col].to_numpy()
        valid = lab != 2
        up = float((lab[valid] == 1).mean()) if valid.any() else float("nan")
        rows.append((y, s.count(y), up))
    per_year = pd.DataFrame(rows, columns=["year", "n_images", "up_share"]).set_index("year")
    sheet = d / "contact_sheet.png"
    return ImageSetSummary(name=image_set, directory=d, shape=s.shape, per_year=per_year,
                           rejections=rejection_table(s.rejections()), label_column=label_col,
                           contact_sheet=sheet if sheet.exists() else None)


# --------------------------------------------------------------------------------------------------
# Runs


@dataclass
class RunArtifacts:
    """A training run: its summary.json, and per member its log.csv (DataFrame) and summary.json."""

    name: str
    directory: Path
    summary: dict
    member_logs: list[pd.DataFrame]
    member_summaries: list[dict]
    has_predictions: bool
    provenance: dict | None = None  # from the run's model card: commit, versions, hardware


def read_member_log(path: str | Path) -> pd.DataFrame:
    """One member's log.csv; columns epoch, train_loss, train_acc, val_loss, val_acc (+ others)."""
    path = Path(path)
    df = pd.read_csv(path)
    missing = [c for c in REPORTED_LOG_COLUMNS if c not in df.columns]
    if missing:
        raise ArtifactError(f"{path}: missing columns {missing} (has {list(df.columns)})")
    return df


def _member_dirs(run_dir: Path) -> list[Path]:
    dirs = [p for p in run_dir.glob("member_*") if p.is_dir() and re.fullmatch(r"member_\d+", p.name)]
    return sorted(dirs, key=lambda p: int(p.name.split("_")[1]))


def load_run(run_dir: str | Path) -> RunArtifacts | None:
    """Logs and summaries of a run directory; None when no member has a log yet."""
    run_dir = Path(run_dir)
    members = [m for m in _member_dirs(run_dir) if (m / "log.csv").exists()] if run_dir.is_dir() else []
    if not members:
        return None
    summary = read_json(run_dir / "summary.json") if (run_dir / "summary.json").exists() else {}
    return RunArtifacts(
        name=run_dir.name, directory=run_dir, summary=summary,
        member_logs=[read_member_log(m / "log.csv") for m in members],
        member_summaries=[read_json(m / "summary.json") if (m / "summary.json").exists() else {}
                          for m in members],
        has_predictions=(run_dir / "predictions.parquet").exists(),
        provenance=(read_json(run_dir / "model.json").get("provenance")
                    if (run_dir / "model.json").exists() else None))


# --------------------------------------------------------------------------------------------------
# Evaluation


@dataclass
class EvalArtifacts:
    """One run's evaluation: metrics.json, portfolios.parquet, turnover.json, tables and figures.

    ``tables``: stem (e.g. "deciles") -> {"parquet": Path | None, "csv": Path | None}
    (:func:`read_eval_table` reads one).
    ``figures``: PNG files of figures/, sorted by name.
    """

    name: str
    directory: Path
    metrics: dict
    portfolios: pd.DataFrame | None
    turnover: dict | None
    tables: dict[str, dict[str, Path | None]] = field(default_factory=dict)
    figures: list[Path] = field(default_factory=list)


def load_eval(eval_dir: str | Path) -> EvalArtifacts | None:
    """Read an eval directory; None when metrics.json does not exist (evaluate not run)."""
    eval_dir = Path(eval_dir)
    if not (eval_dir / "metrics.json").exists():
        return None
    metrics = read_json(eval_dir / "metrics.json")
    port = None
    if (eval_dir / "portfolios.parquet").exists():
        port = pd.read_parquet(eval_dir / "portfolios.parquet")
        # The decile column mixes 1..10 and "H-L"; one string dtype keeps comparisons simple.
        if "decile" in port.columns:
            port["decile"] = port["decile"].astype(str)
    turnover = read_json(eval_dir / "turnover.json") if (eval_dir / "turnover.json").exists() else None
    tables: dict[str, dict[str, Path | None]] = {}
    tdir = eval_dir / "tables"
    if tdir.is_dir():
        for p in sorted(tdir.iterdir()):
            if p.suffix in (".parquet", ".csv"):
                tables.setdefault(p.stem, {"parquet": None, "csv": None})[p.suffix[1:]] = p
    fdir = eval_dir / "figures"
    figures = sorted(fdir.glob("*.png")) if fdir.is_dir() else []
    return EvalArtifacts(name=eval_dir.name, directory=eval_dir, metrics=metrics, portfolios=port,
                         turnover=turnover, tables=tables, figures=figures)


def scalar_metrics(metrics: dict) -> dict[str, float]:
    """The numeric top-level entries of a metrics.json (nested dicts and lists are left out)."""
    return {k: float(v) for k, v in metrics.items()
            if isinstance(v, (int, float)) and not isinstance(v, bool)}


def collect_metrics(experiment_dirs: list[str | Path] | str | Path) -> pd.DataFrame:
    """Metrics of every evaluated run of one or more experiments, one row per run.

    ``experiment_dirs``: ``data/<name>`` folders. Returns a frame with columns ``experiment``,
    ``run`` followed by the union of numeric metrics.json keys (NaN where a run lacks one), sorted by
    experiment then run. Used by the report ("all evaluated runs") and notebook 02.
    """
    if isinstance(experiment_dirs, (str, Path)):
        experiment_dirs = [experiment_dirs]
    rows = []
    for exp in experiment_dirs:
        exp = Path(exp)
        for m in sorted((exp / "eval").glob("*/metrics.json")):
            rows.append({"experiment": exp.name, "run": m.parent.name,
                         **scalar_metrics(read_json(m))})
    if not rows:
        return pd.DataFrame(columns=["experiment", "run"])
    return pd.DataFrame(rows).sort_values(["experiment", "run"], kind="stable").reset_index(drop=True)


def hl_returns(portfolios: pd.DataFrame) -> pd.DataFrame:
    """Long-short returns from portfolios.parquet: index date, one column per (strategy, weighting).

    Columns are a MultiIndex (strategy, weighting); values are the per-period H-L returns (decimal).
    """
    need = {"date", "strategy", "weighting", "decile", "ret"}
    if not need <= set(portfolios.columns):
        raise ArtifactError(f"portfolios.parquet lacks columns {sorted(need - set(portfolios.columns))}")
    hl = portfolios[portfolios["decile"].astype(str) == HL]
    return hl.pivot_table(index="date", columns=["strategy", "weighting"], values="ret",
                          aggfunc="first").sort_index()


# --------------------------------------------------------------------------------------------------
# Stage tables (numbers; the report formats them with the stage's own formatter)


def eval_table_kind(stem: str) -> str:
    """The formatter kind of an evaluation table file stem (``deciles_MOM`` -> ``deciles``)."""
    return "deciles" if stem.startswith("deciles_") else stem


def read_eval_table(e: EvalArtifacts, stem: str) -> NumericTable | None:
    """One evaluation table as numbers (``tables/<stem>.parquet``; an evaluation written before
    those files existed falls back to its numeric CSV); None when the stage wrote neither."""
    t = e.tables.get(stem) or {}
    if t.get("parquet") is not None:
        try:
            return read_numeric(t["parquet"])
        except ValueError as err:
            raise ArtifactError(str(err)) from None
    if t.get("csv") is not None:
        return read_csv_numeric(t["csv"], eval_table_kind(stem))
    return None


def formatted_eval_table(e: EvalArtifacts, stem: str) -> tuple[NumericTable, pd.DataFrame] | None:
    """An evaluation table as numbers and as the evaluation stage's own formatter shows them
    (pipeline.evaluate.tables.format_table); None if the stage did not write it."""
    from pipeline.evaluate.tables import format_table

    t = read_eval_table(e, stem)
    return None if t is None else (t, format_table(t.kind, t.frame, **t.options))


# --------------------------------------------------------------------------------------------------
# Grad-CAM and ablations


@dataclass
class GradcamArtifacts:
    directory: Path
    panel: Path | None
    averages: Path | None
    other_figures: list[Path]
    selection: pd.DataFrame | None


def load_gradcam(cfg: Config) -> GradcamArtifacts | None:
    """The Grad-CAM stage's figures and selection table; None when no figure exists."""
    d = paths.gradcam_dir(cfg)
    pngs = sorted(d.glob("*.png")) if d.is_dir() else []
    if not pngs:
        return None
    panel = d / "panel.png"
    averages = next((p for p in pngs if p.stem.startswith("average")), None)
    others = [p for p in pngs if p != panel and p != averages]
    sel = pd.read_parquet(d / "selection.parquet") if (d / "selection.parquet").exists() else None
    return GradcamArtifacts(directory=d, panel=panel if panel.exists() else None, averages=averages,
                            other_figures=others, selection=sel)


@dataclass
class AblationArtifacts:
    """``table``: Table 18 as numbers (table18.parquet, tidy: one row per variant, columns group,
    variant, model, run, members, metric, metric_paper ...; its notes in the file's metadata)."""

    directory: Path
    table: NumericTable


def load_ablations(cfg: Config) -> AblationArtifacts | None:
    """Table 18 of the ablations stage; None when it has not written one. A table written before
    table18.parquet existed is read from table18.csv (its notes rebuilt from the frame)."""
    from pipeline.ablations.table import CAPTION, table18_notes, upgrade_frame

    d = paths.ablations_dir(cfg)
    if (d / "table18.parquet").exists():
        t = read_numeric(d / "table18.parquet")
        return AblationArtifacts(directory=d, table=dataclasses.replace(t, frame=upgrade_frame(t.frame)))
    if (d / "table18.csv").exists():
        frame = upgrade_frame(pd.read_csv(d / "table18.csv"))
        return AblationArtifacts(directory=d, table=NumericTable(frame, "table18", CAPTION,
                                                                 table18_notes(frame)))
    return None


# --------------------------------------------------------------------------------------------------
# Everything of one experiment


@dataclass
class Experiment:
    """All artifacts of one experiment's main run (``cfg.train.model``); absent stages are None."""

    cfg: Config
    panel: PanelSummary | None
    image_sets: dict[str, ImageSetSummary | None]
    run: RunArtifacts | None
    evaluation: EvalArtifacts | None
    gradcam: GradcamArtifacts | None
    ablations: AblationArtifacts | None
    all_metrics: pd.DataFrame


def load_experiment(cfg: Config) -> Experiment:
    """Read every artifact of ``cfg``'s experiment; never runs a stage."""
    sets = list(dict.fromkeys([*cfg.images.sets, cfg.train.image_set]))
    return Experiment(
        cfg=cfg,
        panel=load_panel_summary(cfg),
        image_sets={s: load_image_set_summary(cfg, s) for s in sets},
        run=load_run(paths.run_dir(cfg)),
        evaluation=load_eval(paths.eval_dir(cfg)),
        gradcam=load_gradcam(cfg),
        ablations=load_ablations(cfg),
        all_metrics=collect_metrics(run_roots(cfg)),
    )


def run_roots(cfg: Config) -> list[Path]:
    """Folders holding ``eval/<run>/`` of this experiment: the experiment itself and, when the
    ablations stage keeps its variants in a sub-experiment, ``ablations/``."""
    roots = [cfg.experiment_dir]
    if (paths.ablations_dir(cfg) / "eval").is_dir():
        roots.append(paths.ablations_dir(cfg))
    return roots


def hl_by_run(experiment_dirs: list[str | Path] | str | Path, weighting: str = "ew",
              strategy: str = "CNN") -> pd.DataFrame:
    """Per-period H-L returns of one strategy and weighting for every evaluated run, side by side.

    Returns a frame indexed by date with one column per run ("<experiment>/<run>"), values the
    per-period H-L return (decimal) from each eval dir's portfolios.parquet; runs without that
    strategy/weighting are left out. Used by notebook 02 and the report's ablation section.
    """
    if isinstance(experiment_dirs, (str, Path)):
        experiment_dirs = [experiment_dirs]
    cols = {}
    for exp in experiment_dirs:
        exp = Path(exp)
        for p in sorted((exp / "eval").glob("*/portfolios.parquet")):
            port = pd.read_parquet(p, columns=["date", "strategy", "weighting", "decile", "ret"])
            sel = port[(port["strategy"] == strategy) & (port["weighting"] == weighting)
                       & (port["decile"].astype(str) == HL)]
            if len(sel):
                cols[f"{exp.name}/{p.parent.name}"] = sel.set_index("date")["ret"].sort_index()
    if not cols:
        return pd.DataFrame()
    return pd.DataFrame(cols).sort_index()
