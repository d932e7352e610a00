"""Scoring new data: P(up) per ticker at a panel's date, exactly the predict stage's numbers on the
same charts, and clear refusals."""

from __future__ import annotations

import subprocess
import sys

import numpy as np
import pandas as pd
import pytest

from pipeline import paths
from pipeline.config import load_config
from pipeline.images.build import build_image_set
from pipeline.images.executor import LocalExecutor
from pipeline.panel.build import make_panel
from pipeline.predict.core import predict_run
from pipeline.score.core import ScoreInputError, score_run
from pipeline.train.loop import train_run

OVER = ["synthetic.n_stocks=16", "synthetic.end='1995-12-31'", "images.sets=[I5/week]",
        "images.end_year=1995", "images.workers=1", "train.model=I5", "train.image_set=I5/week",
        "train.horizon=5", "train.split=custom", "train.insample_years=[1993,1994]",
        "train.test_years=[1995,1995]", "train.ensemble=2", "train.epochs=1", "train.threads=1",
        "train.parallel_members=1", "train.calibration=platt", "train.precision=fp32"]


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    root = tmp_path_factory.mktemp("score")
    cfg = load_config(None, [f"data_dir={root}", "name=s", *OVER])
    make_panel(cfg)
    build_image_set(cfg, "I5/week", LocalExecutor(1))
    train_run(cfg)
    predict_run(cfg)
    return cfg


def test_scores_equal_the_predict_stage_on_the_same_charts(trained):
    cfg = trained
    out = score_run(cfg, n_charts=2)  # the panel's latest day
    assert [f.name for f in out.glob("scores_*.parquet")] == ["scores_1995-12-29.parquet"]
    # The image stage leaves out the panel's final period (it may be incomplete): compare at the
    # last week end it drew.
    pred = pd.read_parquet(paths.run_dir(cfg) / "predictions.parquet")
    last = pred["date"].max()
    score_run(cfg, date=f"{last:%Y-%m-%d}", n_charts=2)
    s = pd.read_parquet(out / f"scores_{last:%Y-%m-%d}.parquet")
    # The image stage drew a chart for every stock with a record on that week end; so does score.
    want = pred[pred["date"] == last].set_index("stock_id")
    got = s.set_index("stock_id").loc[want.index]
    assert len(s) == len(want) > 0
    # float32 inference in other batch compositions: equal to a few ulps of float32
    for c in ("p_up", "p_up_uncalibrated", "p_up_m0", "p_up_m1"):
        np.testing.assert_allclose(got[c].to_numpy(), want[c].to_numpy(), rtol=0, atol=1e-6)
    # ... because the charts are the image stage's, byte for byte
    from pipeline.images.store import ImageSet
    from pipeline.panel.store import read_panel, read_stocks
    from pipeline.runs import load_ensemble
    from pipeline.score.core import score_panel
    from pipeline.train import ddp
    from pipeline.train.loop import resolve_runtime

    d = paths.panel_dir(cfg)
    sc = score_panel(load_ensemble(paths.run_dir(cfg)), read_panel(d), read_stocks(d),
                     resolve_runtime(cfg.train, ddp.resolve_device("cpu")), date=last)
    iset = ImageSet(paths.images_dir(cfg, "I5/week"))
    lab = iset.labels(1995)
    at = np.flatnonzero(lab["date"].to_numpy() == last.to_datetime64())
    ref = dict(zip(lab["stock_id"].to_numpy()[at], np.asarray(iset.images(1995))[at]))
    assert len(ref) == len(sc.table)
    for sid, img in zip(sc.table["stock_id"], sc.images):
        assert np.array_equal(img, ref[sid])
    assert s["ticker"].str.startswith("SYN").all()
    assert sorted(s["rank"]) == list(range(1, len(s) + 1))
    top = s.loc[s["rank"] == 1]
    assert top["p_up"].iloc[0] == s["p_up"].max() and top["decile"].iloc[0] == 10
    assert s.loc[s["rank"] == len(s), "decile"].iloc[0] == 1
    assert (out / f"charts_{last:%Y-%m-%d}.png").stat().st_size > 5000
    csv = pd.read_csv(out / f"scores_{last:%Y-%m-%d}.csv")
    assert list(csv["rank"]) == sorted(csv["rank"])


def test_tickers_and_dates(trained):
    cfg = trained
    out = score_run(cfg, date="1995-06-15", tickers=["syn0003", "SYN0005"], charts=["SYN0005"])
    s = pd.read_parquet(next(out.glob("scores_1995-06-15.parquet")))
    assert sorted(s["ticker"]) == ["SYN0003", "SYN0005"]
    with pytest.raises(ScoreInputError, match=r"tickers not in the panel: ZZZ"):
        score_run(cfg, tickers=["ZZZ", "SYN0003"])
    with pytest.raises(ScoreInputError, match="before the panel's first day"):
        score_run(cfg, date="1980-01-01")
    with pytest.raises(ScoreInputError, match=r"--charts SYN0009: not scored"):
        score_run(cfg, tickers=["SYN0003"], charts=["SYN0009"])


def test_predictions_name_each_stock_by_the_ticker_of_the_panel_the_images_came_from(trained):
    """make predict on a set the image stage built from the panel: ticker = stocks.parquet's."""
    from pipeline.panel.store import read_stocks

    cfg = trained
    pred = pd.read_parquet(paths.run_dir(cfg) / "predictions.parquet")
    assert list(pred.columns[:3]) == ["stock_id", "ticker", "date"] and pred["ticker"].notna().all()
    names = read_stocks(paths.panel_dir(cfg)).set_index("stock_id")["ticker"]
    assert (pred["ticker"].to_numpy() == names.loc[pred["stock_id"]].to_numpy()).all()
    assert pred["ticker"].str.fullmatch(r"SYN\d{4}").all() and pred["ticker"].nunique() > 1


def test_too_little_history_is_refused_with_the_reason(trained, tmp_path):
    """A panel whose stocks have only 3 records before the date cannot give 5-day charts."""
    from pipeline.panel.store import read_panel, read_stocks
    from pipeline.runs import load_ensemble
    from pipeline.score.core import score_panel
    from pipeline.train import ddp
    from pipeline.train.loop import resolve_runtime

    cfg = trained
    d = paths.panel_dir(cfg)
    panel = read_panel(d, years=[1995])
    short = panel.groupby("stock_id").head(3)
    rt = resolve_runtime(cfg.train, ddp.resolve_device("cpu"))
    with pytest.raises(ScoreInputError, match=r"nothing to score: .*can be drawn.*needs at least 5 records"):
        score_panel(load_ensemble(paths.run_dir(cfg)), short, read_stocks(d), rt)


def test_cli_one_line_errors(trained):
    cfg = trained
    r = subprocess.run([sys.executable, "-m", "pipeline.score", "--set", f"data_dir={cfg.data_dir}",
                        "--set", "name=s", *sum((["--set", o] for o in OVER), []), "--tickers", "NOPE"],
                       capture_output=True, text=True, timeout=300)
    assert r.returncode == 2 and "tickers not in the panel: NOPE" in r.stderr
    assert "Traceback" not in r.stderr


@pytest.fixture(scope="module")
def trained_regression(trained):
    """The same panel and images (the classifier's folders), a run trained on the return itself."""
    over = [o for o in OVER if not o.startswith("train.calibration")]
    cfg = load_config(None, [f"data_dir={trained.data_dir}", "name=s", *over, "train.target=return",
                             "train.calibration=none", "train.head_init=base_rate"])
    train_run(cfg)
    predict_run(cfg)
    return cfg


def test_a_regression_run_scores_its_predicted_return(trained_regression):
    import json

    cfg = trained_regression
    pred = pd.read_parquet(paths.run_dir(cfg) / "predictions.parquet")
    last = pred["date"].max()
    out = score_run(cfg, date=f"{last:%Y-%m-%d}", n_charts=2)
    assert out.name.startswith("I5_R5-reg")
    s = pd.read_parquet(out / f"scores_{last:%Y-%m-%d}.parquet")
    assert list(s.columns) == ["ticker", "stock_id", "date", "pred_return", "pred_return_m0",
                               "pred_return_m1", "rank", "decile"]
    want = pred[pred["date"] == last].set_index("stock_id")
    got = s.set_index("stock_id").loc[want.index]
    assert len(s) == len(want) > 0
    # the predict stage's numbers: the ensemble's predicted return, not a probability
    for c, w in (("pred_return", "p_up"), ("pred_return_m0", "p_up_m0"), ("pred_return_m1", "p_up_m1")):
        np.testing.assert_allclose(got[c].to_numpy(), want[w].to_numpy(), rtol=1e-5, atol=1e-8)
    top, bottom = s.loc[s["rank"] == 1].iloc[0], s.loc[s["rank"] == len(s)].iloc[0]
    assert top["pred_return"] == s["pred_return"].max() and top["decile"] == 10
    assert bottom["pred_return"] == s["pred_return"].min() and bottom["decile"] == 1
    meta = json.loads((out / f"scores_{last:%Y-%m-%d}.json").read_text())
    assert meta["target"] == "return" and meta["score_column"] == "pred_return"
    assert (out / f"charts_{last:%Y-%m-%d}.png").stat().st_size > 5000
    csv = pd.read_csv(out / f"scores_{last:%Y-%m-%d}.csv")
    assert list(csv["rank"]) == sorted(csv["rank"]) and "pred_return" in csv.columns
