"""A tiny image set whose up/down label is visible in the picture (for training tests).

Up images carry a rising diagonal, down images a falling one, over sparse random ink; a few rows
have a missing return (label 2, marked by a full first column of ink so they would be learnable
only if they leaked into training) and a few have ewma_vol == 0.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd

from pipeline.config import Config, load_config
from pipeline.images.store import IMAGE_SHAPES, LABEL_TABLE_COLUMNS, RETURN_SUFFIXES, labels_from_returns, write_year
from pipeline.io import mark_done
from pipeline.paths import images_dir


def make_year(year: int, n_stocks: int, rng: np.random.Generator, window: int = 5,
              freq: str = "W-FRI", missing_frac: float = 0.1, zero_vol_frac: float = 0.05
              ) -> tuple[np.ndarray, pd.DataFrame]:
    """Images (N, H, 3W) uint8 and their label table (LABEL_TABLE_COLUMNS), N = stocks x periods."""
    h, w = IMAGE_SHAPES[window]
    dates = pd.date_range(f"{year}-01-01", f"{year}-12-31", freq=freq)
    sid = np.repeat(np.arange(1, n_stocks + 1, dtype=np.int32), len(dates))
    dt = np.tile(dates.to_numpy(), n_stocks)
    n = len(sid)
    up = rng.random(n) < 0.5
    ret = np.where(up, 1, -1) * rng.uniform(0.001, 0.05, n)
    missing = rng.random(n) < missing_frac
    zero_vol = rng.random(n) < zero_vol_frac
    imgs = np.where(rng.random((n, h, w)) < 0.03, 255, 0).astype(np.uint8)
    cols = np.arange(w)
    rise = (h - 1 - np.rint(cols * (h - 1) / (w - 1))).astype(int)
    imgs[np.flatnonzero(up)[:, None], rise[None, :], cols[None, :]] = 255
    down = np.flatnonzero(~up)
    imgs[down[:, None], (h - 1 - rise)[None, :], cols[None, :]] = 255
    imgs[np.flatnonzero(missing), :, 0] = 255
    df = pd.DataFrame({"stock_id": sid, "date": dt, "mktcap": rng.uniform(1e6, 1e9, n),
                       "ewma_vol": np.where(zero_vol, 0.0, rng.uniform(1e-4, 1e-3, n))})
    for s in RETURN_SUFFIXES:
        r = ret.copy() if s in ("week", "5d") else rng.normal(0, 0.05, n)
        r[missing] = np.nan
        df[f"ret_{s}"] = r
    for s in RETURN_SUFFIXES:
        df[f"label_{s}"] = labels_from_returns(df[f"ret_{s}"].to_numpy())
    return imgs, df[LABEL_TABLE_COLUMNS]


def make_config(root: Path, **train) -> Config:
    """Config for the tiny I5/week set under ``root``: in-sample 1995-1996, test 1997."""
    sets = {"model": "I5", "image_set": "I5/week", "horizon": 5, "split": "custom",
            "insample_years": [1995, 1996], "test_years": [1997, 1997], "ensemble": 2, "epochs": 3,
            "lr": 1e-3, "precision": "fp32", "seed": 7, "threads": 1}
    sets.update(train)
    over = [f"data_dir={root}", "name=tiny"] + [f"train.{k}={v}" for k, v in sets.items()]
    return load_config(None, over)


def build_image_set(cfg: Config, years=(1995, 1996, 1997), n_stocks: int = 8, seed: int = 0) -> Path:
    d = images_dir(cfg, cfg.train.image_set)
    rng = np.random.default_rng(seed)
    for y in years:
        imgs, df = make_year(y, n_stocks, rng)
        write_year(d, y, imgs, df)
    mark_done(d, "fixture", image_set=cfg.train.image_set)  # finished (no panel: not compared with one)
    return d
