"""The panel stage: any configured source -> the canonical panel on disk (ARCHITECTURE contract 1).

:func:`build_panel` dispatches on ``cfg.panel.source`` and returns the panel in memory;
:func:`make_panel` is the resumable stage the CLI runs (``python -m pipeline.panel``).
"""

from __future__ import annotations

import importlib
import logging
import shutil
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd

from pipeline.config import Config, ConfigError, hash_view, save_resolved, section_hash
from pipeline.io import folder_lock, is_done, mark_done, marker_path, remove_stale_temps, write_json
from pipeline.panel.clean import PanelInputError, format_counts
from pipeline.panel.mktcap import proxy_min_periods
from pipeline.panel.store import PanelMeta, check_contract, write_panel
from pipeline.paths import panel_dir

log = logging.getLogger(__name__)

CRSP_UNITS = "$ thousands"


def proxy_units(window: int) -> str:
    return (f"$ (proxy: trailing mean close*volume over {window} records, "
            f"at least {proxy_min_periods(window)} present)")


def _source_path(cfg: Config) -> Path:
    if not cfg.panel.path:
        raise ConfigError(f"panel.path must name the raw {cfg.panel.source} file or folder "
                          f"(panel.source is {cfg.panel.source!r})")
    # Relative to the current directory, like any command-line path.
    path = Path(cfg.panel.path)
    if not path.exists():
        how = (" The shared free panel sits in ../shared/data beside a checkout that has it; without "
               "it, `make fetch-data` downloads the free Stooq US daily bulk file into "
               "data/raw/stooq-us-daily, and then `SET=\"panel.path=data/raw/stooq-us-daily\"` "
               "builds the panel from it." if cfg.panel.source == "stooq" else "")
        raise FileNotFoundError(f"panel.path {path} ({cfg.panel.source} source) does not exist.{how}")
    return path


@dataclass(frozen=True)
class FileSource:
    """A source read from ``panel.path``: where its adapter lives and how PanelMeta describes it.

    The adapter, ``<module>.<function>(cfg.panel[, cfg.generic], path)``, returns (panel, stocks,
    counts) or (panel, stocks, counts, layout); it is imported only when its source is built.
    """

    module: str
    function: str
    mktcap_is_proxy: bool  # True: the close*volume proxy of METHOD 3.5; False: price*shares
    layout: str = "{}"  # how a returned layout reads after the path in PanelMeta.inputs
    takes_generic: bool = False  # the adapter also takes cfg.generic


FILE_SOURCES: dict[str, FileSource] = {
    "stooq": FileSource("pipeline.panel.stooq", "build_stooq", True, layout="{} layout"),
    "yahoo": FileSource("pipeline.panel.yahoo", "build_yahoo", True),
    "generic": FileSource("pipeline.panel.generic", "build_generic", True, takes_generic=True),
    "crsp": FileSource("pipeline.panel.crsp", "build_crsp", False),
}


def _build_file_source(cfg: Config, source: str, spec: FileSource
                       ) -> tuple[pd.DataFrame, pd.DataFrame, PanelMeta]:
    """Run ``source``'s adapter on ``panel.path`` -> (panel, stocks, meta)."""
    path = _source_path(cfg)
    build = getattr(importlib.import_module(spec.module), spec.function)
    extra = (cfg.generic,) if spec.takes_generic else ()
    df, stocks, counts, *layout = build(cfg.panel, *extra, path)
    inputs = str(path.resolve())
    if layout:  # the adapters of sources with several layouts say which one they read
        inputs += f" ({spec.layout.format(layout[0])})"
    units = proxy_units(cfg.panel.mktcap_proxy_window) if spec.mktcap_is_proxy else CRSP_UNITS
    meta = PanelMeta(source=source, mktcap_is_proxy=spec.mktcap_is_proxy, mktcap_units=units,
                     counts=counts, inputs=[inputs])
    return df, stocks, meta


def build_panel(cfg: Config) -> tuple[pd.DataFrame, pd.DataFrame, PanelMeta]:
    """Read and clean ``cfg.panel.source`` -> (panel, stocks, meta), nothing written.

    panel: canonical columns (``pipeline.panel.store.PANEL_COLUMNS``), sorted by (stock_id, date);
    stocks: stock_id, ticker, exchange; meta: source, mktcap_is_proxy, units, counts by rule.
    """
    source = cfg.panel.source  # its dates were checked when the config loaded (config.validate)
    if source == "synthetic":
        from pipeline.panel.synthetic import generate_market  # owned by SYNTH; imported lazily

        df, stocks = generate_market(cfg.synthetic)
        counts = {"output_rows": int(len(df))}
        # The synthetic market plants shares outstanding: its mktcap is close*shares, not a proxy.
        meta = PanelMeta(source="synthetic", mktcap_is_proxy=False, mktcap_units=CRSP_UNITS,
                         counts=counts, inputs=[f"synthetic seed={cfg.synthetic.seed}"])
    elif source in FILE_SOURCES:
        df, stocks, meta = _build_file_source(cfg, source, FILE_SOURCES[source])
    else:  # validate() already refuses this; kept for direct callers
        raise ConfigError(f"panel.source {source!r} is not one of synthetic, stooq, crsp, yahoo, "
                          "generic")
    check_contract(df, where=f"{source} panel")
    if df.empty:
        where = ", ".join(meta.inputs) if meta.inputs else f"the {source} source"
        removed = {k: v for k, v in meta.counts.items() if v and k not in ("input_rows", "output_rows")}
        raise PanelInputError(
            f"the {source} panel built from {where} is empty after cleaning: no row is left for "
            f"panel.start {cfg.panel.start} .. panel.end {cfg.panel.end}"
            + (f" with share codes {cfg.panel.shrcd} and exchange codes {cfg.panel.exchcd}"
               if source == "crsp" else "")
            + f"; rows removed by rule: {removed or 'none (the input has no data rows)'}\n"
            + format_counts(meta.counts))
    return df, stocks, meta


def bayes_accuracy_dict(table: pd.DataFrame) -> dict[str, float]:
    """``synthetic.bayes_accuracy`` table -> ``{"5": acc, "20": acc, ...}`` (docs/interfaces.md).

    Accepts a ``horizon`` column (or index) and an ``accuracy`` column; horizon labels that are not
    integers (e.g. ``month``) are kept as strings.
    """
    t = table.reset_index() if "horizon" not in table.columns else table
    if "horizon" not in t.columns or "accuracy" not in t.columns:
        raise ValueError(f"bayes_accuracy table needs 'horizon' and 'accuracy' columns, "
                         f"got {list(table.columns)}")
    out = {}
    for h, a in zip(t["horizon"], t["accuracy"]):
        key = str(int(h)) if isinstance(h, (int, float, np.integer, np.floating)) and float(h).is_integer() else str(h)
        out[key] = float(a)
    return out


def make_panel(cfg: Config, force: bool = False) -> Path:
    """The resumable panel stage: build and write the panel into ``paths.panel_dir(cfg)``.

    Skips (returns at once) when the folder's completion marker holds the hash of
    ``(cfg.panel, cfg.synthetic)``. Otherwise: build in memory (a bad input fails here, before
    anything on disk changes), drop the old marker, write every file atomically, remove year
    partitions of an earlier build that the new one lacks, save config.yaml (and, for the synthetic
    source, bayes_accuracy.json), log the cleaning counts, and mark done last.
    """
    out = panel_dir(cfg)
    h = panel_settings_hash(cfg)
    if not force and is_done(out, h):
        log.info("panel already built in %s (settings hash %s): skipping", out, h)
        return out
    # Build in memory first: a bad input fails here, before anything on disk (even the folder)
    # exists or changes; then one writer at a time replaces the folder's files.
    df, stocks, meta = build_panel(cfg)
    with folder_lock(out, "panel"):
        n = remove_stale_temps(out)
        if n:
            log.info("removed %d temporary file(s) left in %s by an interrupted run", n, out)
        return _write(cfg, out, h, df, stocks, meta)


def panel_settings_hash(cfg: Config) -> str:
    """What the panel depends on (its completion marker holds it): the panel and synthetic settings,
    and the generic section for that source. The synthetic calendar enters only when it is not the
    business-day calendar the market had before it was a setting, so panels built then stay current."""
    synthetic = hash_view("synthetic", cfg.synthetic)
    generic = [cfg.generic] if cfg.panel.source == "generic" else []
    return section_hash(cfg.panel, synthetic, *generic)


def _write(cfg: Config, out: Path, h: str, df: pd.DataFrame, stocks: pd.DataFrame,
           meta: PanelMeta) -> Path:
    marker_path(out).unlink(missing_ok=True)  # half-rewritten folders must not look finished
    write_panel(out, df, stocks, meta)
    years = {f"year={y}" for y in meta.years}
    for stale in sorted(out.glob("year=*")):
        if stale.is_dir() and stale.name not in years:
            log.info("removing %s left by an earlier build", stale)
            shutil.rmtree(stale)
    save_resolved(cfg, out)
    if cfg.panel.source == "synthetic":
        from pipeline.panel.synthetic import bayes_accuracy

        acc = bayes_accuracy_dict(bayes_accuracy(cfg.synthetic))
        write_json(out / "bayes_accuracy.json", acc)
        log.info("Bayes-optimal accuracy by horizon: %s", acc)
    log.info("%s", format_counts(meta.counts, f"{meta.source} panel cleaning counts"))
    log.info("panel: %d rows, %d stocks, %s..%s, market cap %s -> %s", meta.n_rows, meta.n_stocks,
             meta.first_date, meta.last_date, meta.mktcap_units, out)
    mark_done(out, h, rows=meta.n_rows, stocks=meta.n_stocks)
    return out
