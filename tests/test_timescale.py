"""Time-scale transfer (METHOD 11): k-day bars, aggregated image sets, the transfer study.

The study runs once (module fixture) on a tiny synthetic market: I5/R5 trained on weekly 5-day
charts, applied unchanged to 20-day and 60-day windows drawn as 5 bars, beside I20/R20 and I60/R60.
"""

from __future__ import annotations

import dataclasses
import json
import re
import subprocess
import sys

import numpy as np
import pandas as pd
import pytest
import torch

from pipeline import paths
from pipeline.config import ConfigError, image_set_spec, load_config, parse_image_set
from pipeline.errors import InputError
from pipeline.images.aggregate import aggregate_bars
from pipeline.images.render import render_windows
from pipeline.images.store import ImageSet
from pipeline.panel import store
from pipeline.runs import load_ensemble
from pipeline.studies.timescale import (TRANSFER_CARD, native_config, predict_transferred, run_study,
                                        source_config, transfer_config)
from pipeline.train.calibration import apply_calibration
from pipeline.train.data import normalise


def daily_block(n_days: int, seed: int = 0) -> np.ndarray:
    """One block (1, n_days, 6) of daily records whose prices agree with their returns."""
    rng = np.random.default_rng(seed)
    ret = rng.normal(0.0, 0.02, n_days)
    close = 30.0 * np.cumprod(1.0 + ret)
    high = close * (1 + rng.uniform(0.001, 0.03, n_days))
    low = close * (1 - rng.uniform(0.001, 0.03, n_days))
    open_ = low + (high - low) * rng.uniform(0, 1, n_days)
    vol = rng.integers(100, 1000, n_days).astype(float)
    return np.stack([open_, high, low, close, vol, ret], axis=1)[None]


# --------------------------------------------------------------------------------------------------
# Bars


def test_bars_equal_a_hand_computation():
    block = daily_block(40)
    block[0, 5, 4] = np.nan  # a missing volume inside bar 1: the others are summed
    block[0, 8:12, 4] = np.nan  # bar 2 has no volume at all
    bars, n_bars = aggregate_bars(block, np.array([30]), 4)
    assert bars.shape == (1, 10, 6) and n_bars.tolist() == [7]
    d = block[0]
    assert np.isnan(bars[0, :3]).all()  # 30 records: 7 complete bars, the partial 8th is padding
    for b in range(3, 10):
        days = d[4 * b:4 * b + 4]
        want = [days[0, 0], days[:, 1].max(), days[:, 2].min(), days[-1, 3],
                np.nan if b == 2 else np.nansum(days[:, 4]), np.prod(1 + days[:, 5]) - 1]
        np.testing.assert_allclose(bars[0, b], want, rtol=1e-12, atol=0, equal_nan=True)
    assert bars[0, 3, 4] == d[12:16, 4].sum()
    # the un-padded rows of a 40-record block: the same bars
    full, n_full = aggregate_bars(block, np.array([40]), 4)
    assert n_full.tolist() == [10] and np.array_equal(full[0, 3:], bars[0, 3:], equal_nan=True)


def test_a_split_inside_a_bar_does_not_mix_price_units():
    """A 2:1 split on day 6 (raw prices halve, the return does not): the bar of days 4-7 is in the
    post-split units of its last close, as if the panel had been split-adjusted."""
    block = daily_block(40, seed=1)
    adjusted = block.copy()
    raw = block.copy()
    raw[0, :6, :4] *= 2.0  # raw prices before the split are twice the adjusted ones
    agg_raw, _ = aggregate_bars(raw, np.array([40]), 4)
    agg_adj, _ = aggregate_bars(adjusted, np.array([40]), 4)
    np.testing.assert_allclose(agg_raw[0, 1:, :4], agg_adj[0, 1:, :4], rtol=1e-12)
    # a naive max over raw highs would take a pre-split price: far above the bar's true high
    assert raw[0, 4:8, 1].max() > 1.5 * agg_raw[0, 1, 1]
    img_raw, _ = render_windows(agg_raw, np.array([10]), 5)
    img_adj, _ = render_windows(agg_adj, np.array([10]), 5)
    assert np.array_equal(img_raw, img_adj)


def test_one_day_bars_are_the_daily_rows():
    block = daily_block(10)
    bars, n = aggregate_bars(block, np.array([10]), 1)
    assert np.array_equal(bars, block)
    assert n.tolist() == [10]


# --------------------------------------------------------------------------------------------------
# Config


def test_image_set_names():
    assert parse_image_set("I5x4/month") == (5, "month")
    s = image_set_spec("I5x12/quarter")
    assert (s.bars, s.bar_days, s.window_days, s.folder, s.native) == (5, 12, 60, "I5x12_quarter",
                                                                       "I60/quarter")
    assert image_set_spec("I20/month").folder == "I20_month"
    cfg = load_config(None, ["data_dir=/d", "name=e", "train.model=I5", "train.image_set=I5/month"])
    assert paths.images_dir(cfg, "I5x4/month").name == "I5x4_month"
    assert paths.images_dir(cfg, "I5/month").name == "I5_month"
    # predictions on aggregated images never take the folder of a run on daily bars
    agg = dataclasses.replace(cfg, train=dataclasses.replace(cfg.train, image_set="I5x4/month"))
    assert paths.run_name(cfg) == "I5_R20" and paths.run_name(agg) == "I5_R20-x4"


@pytest.mark.parametrize("override, message", [
    ("images.sets=[I5x2.5/month]", "'2.5' days per bar is not a whole number"),
    ("images.sets=[I5x1/month]", "k = 1 days per bar"),
    ("images.sets=[I5x0/month]", "k = 0 days per bar"),
    ("train.image_set=I5x4/fortnight", "frequency one of"),
    ("images.sets=[I5x2000/month]", "'images.sets' 'I5x2000/month' draws windows of 10000 trading days"),
    ("timescale.targets=[I20x3/quarter]", "the model's input size differs"),
    ("timescale.targets=[I5x3/month]", "covers 15 days: no model is trained"),
    ("timescale.targets=[I5/month]", "has daily bars"),
    ("timescale.source=I5x4/week", "trained on daily bars"),
    ("timescale.targets=[I5x4/month, I5x4/month]", "lists a set twice"),
    ("train.image_set=I5x4/month", "'train.image_set' 'I5x4/month' has aggregated bars"),
])
def test_impossible_combinations_are_refused_at_load(override, message):
    with pytest.raises(ConfigError, match=re.escape(message)):
        load_config(None, [override])


def test_history_refusal_names_the_settings():
    with pytest.raises(ConfigError) as e:
        load_config(None, ["synthetic.start=1993-01-01", "synthetic.end=1993-02-26",
                           "images.end_year=1993", "images.sets=[I5x12/quarter]"])
    msg = str(e.value)
    assert "'synthetic.start' 1993-01-01" in msg and "'synthetic.end' 1993-02-26" in msg and "60 trading days" in msg
    load_config(None, ["synthetic.start=1993-01-01", "synthetic.end=1993-03-31", "images.end_year=1993",
                       "images.sets=[I5x12/quarter]"])  # 64 weekdays: a window fits


def test_cli_refusal_is_one_line(tmp_path):
    r = subprocess.run([sys.executable, "-m", "pipeline.studies.timescale", "--set",
                        "timescale.targets=[I20x3/quarter]"], capture_output=True, text=True, timeout=120)
    assert r.returncode == 2 and "input size differs" in r.stderr and "Traceback" not in r.stderr


# --------------------------------------------------------------------------------------------------
# The study on a tiny synthetic market


def study_overrides(root) -> list[str]:  # noqa: ANN001
    return [f"data_dir={root}/data", f"reports_dir={root}/reports", "name=ts",
            "synthetic.n_stocks=16", "synthetic.end=1997-12-31", "synthetic.bayes_paths=16",
            "synthetic.bayes_samples=200", "images.end_year=1997", "images.workers=1",
            "train.split=custom", "train.insample_years=[1993, 1995]", "train.test_years=[1996, 1997]",
            "train.ensemble=1", "train.epochs=1", "train.threads=1", "train.max_train_images=400",
            "train.precision=fp32", "train.lr=1e-4", "train.calibration=platt",
            "evaluate.benchmarks=[]", "evaluate.characteristics=false"]


@pytest.fixture(scope="module")
def study(tmp_path_factory):
    root = tmp_path_factory.mktemp("ts")
    cfg = load_config(None, study_overrides(root))
    table = run_study(cfg)
    return cfg, table, root


def test_the_study_table_report_and_figure(study):
    cfg, table, root = study
    assert table[["window_days", "kind", "model", "applied_to", "horizon"]].values.tolist() == [
        [5, "trained", "I5", "I5/week", 5],
        [20, "transfer", "I5", "I5x4/month", 20], [20, "trained", "I20", "I20/month", 20],
        [60, "transfer", "I5", "I5x12/quarter", 60], [60, "trained", "I60", "I60/quarter", 60]]
    for c in ("accuracy", "spearman", "sharpe_ew", "sharpe_vw", "loss", "bayes"):
        assert table[c].notna().all(), c
    assert ((table["accuracy"] > 0.3) & (table["accuracy"] < 0.8)).all()
    # the transfer and the trained model are scored on the same rows
    assert table["n"].iat[1] == table["n"].iat[2] and table["n"].iat[3] == table["n"].iat[4]
    assert table["paper_sharpe_ew"].iat[1] == 2.14 and table["paper_sharpe_ew"].iat[3] == 0.90
    out = cfg.experiment_dir / "timescale"
    pd.testing.assert_frame_equal(pd.read_parquet(out / "timescale.parquet"), table)
    agree = pd.read_csv(out / "agreement.csv")
    assert (agree["n_common"] == agree["n_trained"]).all() and (agree["n_common"] == agree["n_transfer"]).all()
    assert (out / "timescale.png").stat().st_size > 5000
    md = (root / "reports" / "ts.md").read_text()
    assert "make study-timescale CONFIG=ts" in md and "I5x4/month" in md and "| 60 | transfer |" in md
    # resumable: a second run trains and predicts nothing, and gives the same table
    again = run_study(cfg)
    pd.testing.assert_frame_equal(table, again)


@pytest.mark.parametrize("target", ["I5x4/month", "I5x12/quarter"])
def test_labels_and_dates_equal_the_daily_set(study, target):
    cfg, _, _ = study
    agg = ImageSet(paths.images_dir(cfg, target))
    daily = ImageSet(paths.images_dir(cfg, image_set_spec(target).native))
    assert agg.years == daily.years and agg.shape == (32, 15)
    for y in agg.years:
        pd.testing.assert_frame_equal(agg.labels(y), daily.labels(y))
    assert agg.rejections() == daily.rejections()


def _hand_bars(panel: pd.DataFrame, stock: int, date: pd.Timestamp, bars: int, k: int):
    """The 2*bars bars of k days ending at (stock, date), by plain pandas: (2*bars, 6), n_bars."""
    p = panel[(panel["stock_id"] == stock) & (panel["date"] <= date)].tail(2 * bars * k)
    n_bars = len(p) // k
    p = p.tail(n_bars * k).reset_index(drop=True)
    g = p.groupby(p.index // k)
    hand = pd.DataFrame({"open": g["open"].nth(0).to_numpy(), "high": g["high"].max(), "low": g["low"].min(),
                         "close": g["close"].nth(-1).to_numpy(), "volume": g["volume"].sum(min_count=1),
                         "ret": g["ret"].apply(lambda r: np.prod(1 + r.to_numpy()) - 1)})
    out = np.full((2 * bars, 6), np.nan)
    out[2 * bars - n_bars:] = hand.to_numpy()
    return out, n_bars


@pytest.mark.parametrize("target", ["I5x4/month", "I5x12/quarter"])
def test_aggregated_images_equal_rendered_hand_bars(study, target):
    cfg, _, _ = study
    spec = image_set_spec(target)
    s = ImageSet(paths.images_dir(cfg, target))
    panel = store.read_panel(paths.panel_dir(cfg))
    rng = np.random.default_rng(0)
    checked = 0
    for y in (s.years[0], s.years[-1]):  # the first year holds images without the moving average
        lab = s.labels(y)
        pick = rng.choice(len(lab), size=min(40, len(lab)), replace=False)
        rows, n_bars = zip(*(_hand_bars(panel, int(lab["stock_id"].iat[i]), lab["date"].iat[i],
                                        spec.bars, spec.bar_days) for i in pick))
        n_bars = np.array(n_bars)
        imgs, status = render_windows(np.stack(rows), n_bars, spec.bars)
        assert (status == -1).all()
        assert np.array_equal(imgs, s.images(y)[pick])
        checked += len(pick)
    assert checked >= 40


def test_transfer_predictions_equal_the_source_ensemble(study):
    cfg, _, _ = study
    src = source_config(cfg)
    for target in cfg.timescale.targets:
        tc = transfer_config(cfg, target)
        run = paths.run_dir(tc)
        assert run.name == f"I5_R{tc.train.horizon}-is1993-1995-os1996-1997-x{image_set_spec(target).bar_days}-from-R5"
        assert run != paths.run_dir(src) and not (run / "model.json").exists()
        pred = pd.read_parquet(run / "predictions.parquet")
        # stocks named as in every prediction table: the ticker of the panel's stocks.parquet
        stocks = pd.read_parquet(paths.panel_dir(cfg) / "stocks.parquet").set_index("stock_id")["ticker"]
        assert list(pred.columns[:2]) == ["stock_id", "ticker"]
        assert (pred["ticker"].to_numpy() == stocks.loc[pred["stock_id"]].to_numpy()).all()
        ens = load_ensemble(paths.run_dir(src))
        s = ImageSet(paths.images_dir(cfg, target))
        got, want = [], []
        for y in (1996, 1997):
            x = normalise(s.images(y), ens.norm["mean"], ens.norm["std"])
            with torch.no_grad():
                p = torch.softmax(ens.members[0](x), 1)[:, 1].numpy().astype(np.float64)
            assert ens.calibrations[0]["method"] == "platt"
            want.append(apply_calibration(p, ens.calibrations[0]))
            got.append(pred.loc[pred["date"].dt.year == y, "p_up"].to_numpy())
        np.testing.assert_allclose(np.concatenate(got), np.concatenate(want), atol=1e-6, rtol=0)
        lab = pd.concat([s.labels(y) for y in (1996, 1997)], ignore_index=True)
        suffix = image_set_spec(target).freq
        assert (pred["label"].to_numpy() == lab[f"label_{suffix}"].to_numpy()).all()
        card = json.loads((run / TRANSFER_CARD).read_text())
        assert card["source_run"] == paths.run_dir(src).name and card["image_set"] == target


def test_a_transfer_to_another_input_size_is_refused(study):
    cfg, _, _ = study
    src = source_config(cfg)
    nat = native_config(cfg, "I5x4/month")  # the I20/month images: 64x60
    wrong = dataclasses.replace(nat, train=dataclasses.replace(nat.train, run_tag="wrong"))
    with pytest.raises(InputError, match="takes 32x15 images but the image set 'I20/month'"):
        predict_transferred(src, wrong)


# --------------------------------------------------------------------------------------------------
# The study with a regression source (METHOD 3.6): every run learns the vol-adjusted return


@pytest.fixture(scope="module")
def regression_study(study):
    _, _, root = study  # the same panel and image sets; only the runs differ
    cfg = load_config(None, [*study_overrides(root), "train.target=vol_adjusted_return",
                             "train.calibration=none", "train.head_init=base_rate"])
    return cfg, run_study(cfg), root


@pytest.mark.slow
def test_the_study_with_a_regression_source(regression_study):
    cfg, table, root = regression_study
    assert table[["window_days", "kind", "model", "applied_to", "horizon"]].values.tolist() == [
        [5, "trained", "I5", "I5/week", 5],
        [20, "transfer", "I5", "I5x4/month", 20], [20, "trained", "I20", "I20/month", 20],
        [60, "transfer", "I5", "I5x12/quarter", 60], [60, "trained", "I60", "I60/quarter", 60]]
    assert all("-regvol" in r for r in table["run"])
    assert table["loss"].isna().all()  # no cross-entropy for a regression run
    # the paper's Sharpe ratios are its classifiers': no reference for a regression run
    assert table["paper_sharpe_ew"].isna().all() and table["paper_sharpe_vw"].isna().all()
    for c in ("accuracy", "mse", "r2_oos", "spearman", "sharpe_ew"):
        assert table[c].notna().all(), c
    assert ((table["accuracy"] > 0.3) & (table["accuracy"] < 0.8)).all()
    assert table["n"].iat[1] == table["n"].iat[2] and table["n"].iat[3] == table["n"].iat[4]
    src = source_config(cfg)
    ens = load_ensemble(paths.run_dir(src))
    assert ens.target == "vol_adjusted_return"
    for i, target in enumerate(cfg.timescale.targets):
        tc = transfer_config(cfg, target)
        pred = pd.read_parquet(paths.run_dir(tc) / "predictions.parquet")
        # the transfer is the source's output itself on the aggregated images (no softmax)
        s = ImageSet(paths.images_dir(cfg, target))
        x = normalise(s.images(1996), ens.norm["mean"], ens.norm["std"])
        with torch.no_grad():
            out = ens.members[0](x)[:, 0].numpy().astype(np.float64)
        np.testing.assert_allclose(pred.loc[pred["date"].dt.year == 1996, "p_up"].to_numpy(), out,
                                   atol=1e-5, rtol=1e-5)
        # evaluated with the regression metrics against the target horizon's vol-adjusted return
        m = json.loads((paths.eval_dir(tc) / "metrics.json").read_text())
        assert m["target"] == "vol_adjusted_return" and m["loss"] is None
        row = table.iloc[1 + 2 * i]
        assert row["r2_oos"] == pytest.approx(m["regression"]["r2_oos"])
        known = pred[pred[f"ret_{image_set_spec(target).freq}"].notna()]
        assert m["accuracy"] == pytest.approx(np.mean((known["p_up"] > 0)
                                                      == (known[f"ret_{image_set_spec(target).freq}"] > 0)))
    # agreement: same side of 0 (not of 0.5) of the two models' predictions, by hand
    agree = pd.read_csv(cfg.experiment_dir / "timescale" / "agreement.csv")
    for r in agree.itertuples():
        a = pd.read_parquet(paths.run_dir(transfer_config(cfg, r.applied_to)) / "predictions.parquet")
        b = pd.read_parquet(paths.run_dir(native_config(cfg, r.applied_to)) / "predictions.parquet")
        j = a.merge(b, on=["stock_id", "date"], suffixes=("_a", "_b"))
        assert r.same_side == pytest.approx(np.mean((j["p_up_a"] > 0) == (j["p_up_b"] > 0)))
    md = (root / "reports" / "ts.md").read_text()
    assert "train.target: vol_adjusted_return" in md and "R²_oos" in md and "same side of 0 on" in md
    assert "classifiers only" in md
