"""A tiny experiment on disk for the Grad-CAM and ablation end-to-end tests (INTERP).

A hand-made random-walk panel (``n_stocks`` stocks, business days 2000-2002) and an I20/month image
set whose label rows are that panel's month-end records with their true next-month returns. The
images are random sparse 0/255 charts with a planted cue (a bright top row for stocks whose next
month is up), so training, prediction and evaluation run on real artifacts in seconds.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd

from pipeline import paths
from pipeline.config import Config, load_config
from pipeline.images.store import LABEL_TABLE_COLUMNS, labels_from_returns, write_year
from pipeline.io import mark_done
from pipeline.panel.build import panel_settings_hash
from pipeline.panel.store import PanelMeta, write_panel


def make_tiny_experiment(tmp_path: Path, n_stocks: int = 12, overrides: list[str] = ()) -> Config:
    rng = np.random.default_rng(11)
    dates = pd.bdate_range("2000-01-03", "2002-12-31")
    parts = []
    for s in range(n_stocks):
        r = rng.normal(0.0005, 0.02, len(dates))
        close = 20 * np.cumprod(1 + r)
        parts.append(pd.DataFrame({
            "stock_id": np.int32(s), "date": dates, "open": close, "high": close * 1.01,
            "low": close * 0.99, "close": close, "volume": 1000.0 + s, "ret": r,
            "mktcap": close * (1000.0 + s), "exchange": "NYSE", "source": "test"}))
    panel = pd.concat(parts, ignore_index=True)
    cfg = load_config(None, [
        f"data_dir={tmp_path}", "name=tiny", "train.split=custom", "train.insample_years=[2000, 2001]",
        "train.test_years=[2002, 2002]", "train.ensemble=1", "train.epochs=1", "train.device=cpu",
        "train.precision=fp32", "train.batch_size=32", "train.max_train_images=64", "evaluate.benchmarks=[]",
        "gradcam.n_per_side=3", "gradcam.average_samples=40", *overrides])
    write_panel(paths.panel_dir(cfg), panel, pd.DataFrame({"stock_id": range(n_stocks)}),
                PanelMeta(source="test", mktcap_is_proxy=True, mktcap_units="$ (proxy)"))
    mark_done(paths.panel_dir(cfg), panel_settings_hash(cfg))  # a finished panel for these settings
    px = panel.pivot(index="date", columns="stock_id", values="close")
    me = pd.Series(dates).groupby(dates.to_period("M")).max().to_numpy()
    nxt = (px.loc[me].shift(-1) / px.loc[me] - 1).stack(future_stack=True).rename("ret_month")
    lab = nxt.reset_index()
    lab["stock_id"] = lab["stock_id"].astype(np.int32)
    lab = lab.sort_values(["stock_id", "date"]).reset_index(drop=True)
    cap = panel.set_index(["stock_id", "date"])["mktcap"]
    lab["mktcap"] = cap.loc[pd.MultiIndex.from_frame(lab[["stock_id", "date"]])].to_numpy()
    lab["ewma_vol"] = 0.0004
    for c in LABEL_TABLE_COLUMNS:
        if c.startswith("ret_") and c not in lab:
            lab[c] = np.nan
    for c in LABEL_TABLE_COLUMNS:
        if c.startswith("label_"):
            lab[c] = labels_from_returns(lab["ret_" + c[6:]].to_numpy())
    lab = lab[LABEL_TABLE_COLUMNS]
    d = paths.images_dir(cfg, "I20/month")
    for year in (2000, 2001, 2002):
        ly = lab[lab["date"].dt.year == year].reset_index(drop=True)
        img = (rng.random((len(ly), 64, 60)) < 0.05).astype(np.uint8) * 255
        img[ly["label_month"].to_numpy() == 1, 0, :] = 255
        write_year(d, year, img, ly)
    mark_done(d, "hand-made", image_set="I20/month")  # finished; not made by the image stage
    return cfg
