"""Prediction stage: predictions.parquet columns, values and resumability."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch

sys.path.insert(0, str(Path(__file__).parent))
from train_fixtures import build_image_set, make_config  # noqa: E402

from pipeline.config import save_resolved  # noqa: E402
from pipeline.images.store import ImageSet  # noqa: E402
from pipeline.paths import images_dir  # noqa: E402
from pipeline.predict.core import predict_run  # noqa: E402
from pipeline.train.data import normalise  # noqa: E402
from pipeline.runs import load_ensemble, read_model_card  # noqa: E402
from pipeline.train.loop import train_run  # noqa: E402

COLUMNS = ["stock_id", "ticker", "date", "p_up", "p_up_m0", "p_up_m1", "ret_5d", "ret_20d", "ret_60d", "ret_week",
           "ret_month", "ret_quarter", "label", "mktcap", "ewma_vol"]


@pytest.fixture(scope="module")
def run(tmp_path_factory):
    root = tmp_path_factory.mktemp("pred")
    cfg = make_config(root, ensemble=2, epochs=1)
    build_image_set(cfg, n_stocks=3)
    return cfg, train_run(cfg)


def test_predict_before_training_is_a_clear_error(tmp_path):
    cfg = make_config(tmp_path)
    with pytest.raises(FileNotFoundError, match="make train"):
        predict_run(cfg)


def test_predictions_columns_and_values(run):
    cfg, rdir = run
    out = predict_run(cfg)
    assert out == rdir / "predictions.parquet"
    df = pd.read_parquet(out)
    assert list(df.columns) == COLUMNS
    assert df["stock_id"].dtype == np.int32 and df["label"].dtype == np.int8
    assert pd.api.types.is_datetime64_any_dtype(df["date"])
    for c in COLUMNS[3:12] + ["mktcap", "ewma_vol"]:
        assert df[c].dtype == np.float64, c
    s = ImageSet(images_dir(cfg, "I5/week"))
    lab = s.labels(1997)
    assert len(df) == len(lab)  # every test-year image, label 2 included
    assert (df["label"].to_numpy() == lab["label_week"].to_numpy()).all() and (df["label"] == 2).any()
    assert np.array_equal(df["ret_week"].to_numpy(), lab["ret_week"].to_numpy(), equal_nan=True)
    assert (df["date"].to_numpy() == lab["date"].to_numpy()).all()
    # a set written by code, not by the image stage from a panel: no id map, so no tickers
    assert df["ticker"].isna().all()
    # p_up = mean of members; each member = softmax(logits)[:, 1] of its best weights
    assert np.allclose(df["p_up"], (df["p_up_m0"] + df["p_up_m1"]) / 2, rtol=0, atol=1e-15)
    norm = read_model_card(rdir)["norm"]
    x = normalise(s.images(1997)[:50], norm["mean"], norm["std"])
    with torch.no_grad():
        p1 = torch.softmax(load_ensemble(rdir, [1]).members[0](x), 1)[:, 1].numpy()
    assert np.allclose(df["p_up_m1"].to_numpy()[:50], p1, atol=1e-6)
    # the learnt pattern carries over out of sample
    known = df["label"] < 2
    acc = ((df.loc[known, "p_up"] > 0.5) == (df.loc[known, "label"] == 1)).mean()
    assert acc > 0.8


def test_predict_skips_when_done(run, caplog):
    cfg, rdir = run
    out = predict_run(cfg)
    t = out.stat().st_mtime_ns
    caplog.set_level("INFO")
    predict_run(cfg)
    assert "up to date" in caplog.text and out.stat().st_mtime_ns == t


def test_cli_train_and_predict_with_per_year_norm(tmp_path):
    """`python -m pipeline.train` / `pipeline.predict` end to end with the reference's per-year
    normalisation: test-year images are normalised with their own year's statistics."""
    cfg = make_config(tmp_path, ensemble=1, epochs=1, norm="per_year_first50k")
    build_image_set(cfg, n_stocks=2)
    path = save_resolved(cfg, tmp_path)
    for stage in ("train", "predict"):
        r = subprocess.run([sys.executable, "-m", f"pipeline.{stage}", "--config", str(path)],
                           capture_output=True, text=True, timeout=300)
        assert r.returncode == 0, r.stderr[-2000:]
    from pipeline.paths import run_dir
    rdir = run_dir(cfg)
    norm = read_model_card(rdir)["norm"]
    assert norm["mode"] == "per_year_first50k" and set(norm["per_year"]) == {"1995", "1996", "1997"}
    s = ImageSet(images_dir(cfg, "I5/week"))
    st = norm["per_year"]["1997"]
    assert st["mean"] == pytest.approx((s.images(1997) / 255.0).mean())
    x = normalise(s.images(1997)[:20], st["mean"], st["std"])
    with torch.no_grad():
        p = torch.softmax(load_ensemble(rdir, [0]).members[0](x), 1)[:, 1].numpy()
    df = pd.read_parquet(rdir / "predictions.parquet")
    assert np.allclose(df["p_up"].to_numpy()[:20], p, atol=1e-6)
    bad = subprocess.run([sys.executable, "-m", "pipeline.train", "--config", str(path), "--set",
                          "train.model=I21"], capture_output=True, text=True, timeout=120)
    assert bad.returncode == 2 and "unknown model 'I21'" in bad.stderr and "Traceback" not in bad.stderr


def test_growing_the_ensemble_reuses_member_predictions(tmp_path):
    """Members keep their weights when the ensemble grows (the training hash excludes its size), so
    their per-year predictions are reused and only the new member is run."""
    cfg1 = make_config(tmp_path, ensemble=1, epochs=1)
    build_image_set(cfg1, n_stocks=2)
    train_run(cfg1)
    rdir = predict_run(cfg1).parent
    part0 = rdir / "predict_parts" / "m0_1997.npy"
    stamp, p0 = part0.stat().st_mtime_ns, pd.read_parquet(rdir / "predictions.parquet")["p_up_m0"]
    cfg2 = make_config(tmp_path, ensemble=2, epochs=1)
    train_run(cfg2)
    df = pd.read_parquet(predict_run(cfg2))
    assert part0.stat().st_mtime_ns == stamp  # member 0 was not predicted again
    assert (rdir / "predict_parts" / "m1_1997.npy").exists()
    assert np.array_equal(df["p_up_m0"].to_numpy(), p0.to_numpy())
    assert np.allclose(df["p_up"], (df["p_up_m0"] + df["p_up_m1"]) / 2, rtol=0, atol=1e-15)
    # a member part that no longer matches the label table is refused, not silently misaligned
    np.save(part0, np.zeros(3))
    (rdir / "_PREDICT_DONE.json").unlink()
    with pytest.raises(ValueError, match="predictions per member"):
        predict_run(cfg2)


def test_tickers_come_from_the_id_map_and_an_unknown_stock_is_refused(tmp_path):
    from pipeline.errors import InputError
    from pipeline.io import mark_done
    from pipeline.predict.core import add_tickers, stock_tickers

    df = pd.DataFrame({"stock_id": np.array([3, 1, 3], dtype=np.int32), "date": pd.Timestamp("2001-01-31")})
    names = pd.Series(["AAA", "CCC"], index=pd.Index([1, 3]))
    add_tickers(df, names, Path("stocks.parquet"))
    assert list(df.columns) == ["stock_id", "ticker", "date"] and df["ticker"].tolist() == ["CCC", "AAA", "CCC"]
    with pytest.raises(InputError, match=r"stocks.parquet: 1 stock_id\(s\) of year 2001 .* \[7\]"):
        add_tickers(pd.DataFrame({"stock_id": [1, 7]}), names, Path("stocks.parquet"), where="year 2001")
    # an image set built from a panel reads that panel's stocks.parquet, which must be whole
    cfg = make_config(tmp_path, ensemble=1)
    d = build_image_set(cfg, years=(1997,), n_stocks=2)
    mark_done(d, "fixture", image_set=cfg.train.image_set, built_from="panel")
    from pipeline.paths import panel_dir
    with pytest.raises(InputError, match=r"stocks.parquet is missing"):
        stock_tickers(cfg, ImageSet(d))
    panel_dir(cfg).mkdir(parents=True)
    pd.DataFrame({"stock_id": [1, 2]}).to_parquet(panel_dir(cfg) / "stocks.parquet")
    with pytest.raises(InputError, match=r"stocks.parquet: missing columns \['ticker'\]"):
        stock_tickers(cfg, ImageSet(d))
    pd.DataFrame({"stock_id": [1, 2, 2], "ticker": ["A", "B", "C"]}).to_parquet(panel_dir(cfg) / "stocks.parquet")
    with pytest.raises(InputError, match="stock_id 2 is listed more than once"):
        stock_tickers(cfg, ImageSet(d))
    pd.DataFrame({"stock_id": [2, 1], "ticker": ["B", "A"]}).to_parquet(panel_dir(cfg) / "stocks.parquet")
    got, path = stock_tickers(cfg, ImageSet(d))
    assert path == panel_dir(cfg) / "stocks.parquet" and got.to_dict() == {2: "B", 1: "A"}


def test_predictions_written_before_the_ticker_column_are_reassembled_from_their_parts(run):
    """A predictions table of the previous format (no ticker; its marker's hash lacks the format)
    is written again from the member parts, which are reused, not predicted again."""
    from pipeline.config import section_hash
    from pipeline.io import mark_done, read_json, write_parquet
    from pipeline.train.data import oos_years

    cfg, rdir = run
    out = predict_run(cfg)
    old = pd.read_parquet(out).drop(columns="ticker")
    write_parquet(out, old)
    s = ImageSet(images_dir(cfg, "I5/week"))
    years = oos_years(cfg, s)
    old_hash = section_hash({"train": read_json(rdir / "_TRAIN_DONE.json")["hash"], "years": years,
                             "precision": "fp32", "counts": [s.count(y) for y in years]})
    mark_done(rdir, old_hash, "_PREDICT_DONE", rows=len(old), seconds=0.0)
    parts = sorted((rdir / "predict_parts").glob("m*.npy"))
    stamps = [p.stat().st_mtime_ns for p in parts]
    df = pd.read_parquet(predict_run(cfg))
    assert list(df.columns) == COLUMNS and df["ticker"].isna().all()
    assert [p.stat().st_mtime_ns for p in parts] == stamps  # nothing was predicted again
    pd.testing.assert_frame_equal(df.drop(columns="ticker"), old)
