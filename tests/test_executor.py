"""Executors: order of results, and byte-identical image sets from local and Dask runs."""

import math

import numpy as np
import pandas as pd
import pytest

from pipeline.config import load_config
from pipeline.images.build import build_image_set
from pipeline.images.executor import DaskExecutor, LocalExecutor, make_executor
from pipeline.io import mark_done
from pipeline.panel.build import panel_settings_hash
from pipeline.panel.store import PanelMeta, write_panel


def test_local_executor_keeps_task_order():
    tasks = [9.0, 1.0, 4.0, 16.0, 25.0]
    assert LocalExecutor(1).map(math.sqrt, tasks) == [3.0, 1.0, 2.0, 4.0, 5.0]
    assert LocalExecutor(2).map(math.sqrt, tasks) == [3.0, 1.0, 2.0, 4.0, 5.0]
    assert LocalExecutor(2).map(math.sqrt, []) == []
    with pytest.raises(ValueError, match="workers"):
        LocalExecutor(-1)


def test_worker_errors_propagate():
    with pytest.raises(ValueError, match="math domain"):
        LocalExecutor(2).map(math.sqrt, [1.0, -1.0])


def small_panel(path):
    rng = np.random.default_rng(1)
    days = pd.bdate_range("2000-09-01", "2001-12-31")
    frames = []
    for sid in (3, 5, 8):
        d = days[rng.random(len(days)) > 0.02]  # a few missing days: some R0
        n = len(d)
        ret = rng.normal(0, 0.02, n)
        close = 10 * np.cumprod(1 + ret)
        frames.append(pd.DataFrame({
            "stock_id": np.int32(sid), "date": d, "open": close, "high": close * 1.01,
            "low": close * 0.99, "close": close, "volume": rng.integers(1, 100, n).astype(float),
            "ret": ret, "mktcap": close, "exchange": "NYSE", "source": "test"}))
    write_panel(path, pd.concat(frames, ignore_index=True),
                pd.DataFrame({"stock_id": [3, 5, 8], "ticker": list("abc"), "exchange": "NYSE"}),
                PanelMeta(source="test", mktcap_is_proxy=True, mktcap_units="$"))
    mark_done(path, panel_settings_hash(load_config(None, [])))  # finished, default panel settings


def test_dask_output_identical_to_local(tmp_path):
    small_panel(tmp_path / "panel")
    cfg = load_config(None, ["images.start_year=2001", "images.end_year=2001",
                             "images.stocks_per_shard=1", "images.executor=dask",
                             "images.workers=2"])
    local = build_image_set(cfg, "I5/week", LocalExecutor(1), panel_dir=tmp_path / "panel",
                            out_dir=tmp_path / "local")
    with make_executor(cfg.images) as ex:
        assert isinstance(ex, DaskExecutor)
        dask = build_image_set(cfg, "I5/week", ex, panel_dir=tmp_path / "panel",
                               out_dir=tmp_path / "dask")
    names = ["images_2001.npy", "labels_2001.parquet", "rejections.json"]
    for n in names:
        assert (local / n).read_bytes() == (dask / n).read_bytes(), n
    assert np.load(local / "images_2001.npy").shape[0] > 100
