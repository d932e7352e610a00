"""Regression targets (METHOD 3.6): label values, MSE training, one output, sign accuracy, sorting."""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch

sys.path.insert(0, str(Path(__file__).parent))
from train_fixtures import build_image_set, make_config  # noqa: E402

from pipeline import paths  # noqa: E402
from pipeline.config import ConfigError, load_config  # noqa: E402
from pipeline.evaluate.metrics import classification_metrics  # noqa: E402
from pipeline.evaluate.portfolios import assign_deciles, evaluate_signal  # noqa: E402
from pipeline.evaluate.regression import regression_metrics, sign_metrics  # noqa: E402
from pipeline.images import labels  # noqa: E402
from pipeline.images.store import ImageSet  # noqa: E402
from pipeline.predict.core import predict_run  # noqa: E402
from pipeline.runs import load_ensemble, read_model_card  # noqa: E402
from pipeline.train.data import build_index, normalise  # noqa: E402
from pipeline.train.loop import train_run  # noqa: E402

# One stock, nine records: daily returns by hand.
RET = np.array([0.01, -0.02, 0.03, 0.0, 0.01, 0.02, -0.01, 0.015, 0.005])


def test_regression_target_by_hand():
    offsets = np.array([0, len(RET)])
    cl = labels.cumulative_log_returns(RET, offsets)
    ev = labels.ewma_vol(RET, offsets)
    row = np.array([2])
    r5 = labels.forward_returns(cl, row, np.array([len(RET)]), 5)
    # Records 3..7 compounded, by hand.
    hand_r5 = (1 + 0.0) * (1 + 0.01) * (1 + 0.02) * (1 - 0.01) * (1 + 0.015) - 1
    assert r5[0] == pytest.approx(hand_r5, rel=1e-12)
    # EWMA variance at record 2 from records 1 and 0 (weights 1, 0.95), lagged one record.
    hand_var = (0.02 ** 2 + 0.95 * 0.01 ** 2) / (1 + 0.95)
    assert ev[2] == pytest.approx(hand_var, rel=1e-12)
    raw = labels.regression_target(r5, ev[row], 5, "return")
    assert raw[0] == pytest.approx(hand_r5, rel=1e-12)
    vol = labels.regression_target(r5, ev[row], 5, "vol_adjusted_return")
    # Scaled to the horizon: the 5-record standard deviation sqrt(5 * daily variance).
    assert vol[0] == pytest.approx(hand_r5 / np.sqrt(5 * hand_var), rel=1e-12)
    # No target without a return or without a positive variance.
    out = labels.regression_target(np.array([np.nan, 0.02, 0.02]), np.array([1e-4, 0.0, np.nan]), 20,
                                   "vol_adjusted_return")
    assert np.isnan(out).all()
    with pytest.raises(ValueError, match="regression target"):
        labels.regression_target(r5, ev[row], 5, "class")


def test_build_index_regression_keeps_the_classifier_rows(tmp_path):
    cfg = make_config(tmp_path)
    build_image_set(cfg, years=(1995, 1996), n_stocks=3)
    s = ImageSet(paths.images_dir(cfg, cfg.train.image_set))
    cls = build_index(s, [1995, 1996], 5)
    reg = build_index(s, [1995, 1996], 5, target="return")
    vol = build_index(s, [1995, 1996], 5, target="vol_adjusted_return")
    for idx in (reg, vol):
        assert np.array_equal(idx.years, cls.years) and np.array_equal(idx.rows, cls.rows)
        assert idx.labels.dtype == np.float32 and idx.info["dropped_target_missing"] == 0
    assert "dropped_target_missing" not in cls.info  # the classifier's pool.json is unchanged
    tab = pd.concat([s.labels(y).assign(year=y) for y in (1995, 1996)]).set_index(["year"], append=True)
    ret = np.concatenate([s.labels(y)["ret_week"].to_numpy()[cls.rows[cls.years == y]] for y in (1995, 1996)])
    var = np.concatenate([s.labels(y)["ewma_vol"].to_numpy()[cls.rows[cls.years == y]] for y in (1995, 1996)])
    assert len(tab) > len(ret)
    np.testing.assert_array_equal(reg.labels, ret.astype(np.float32))
    np.testing.assert_allclose(vol.labels, ret / np.sqrt(5 * var), rtol=1e-6)
    assert np.array_equal(cls.labels, (ret > 0).astype(np.int64))


@pytest.fixture(scope="module")
def reg_run(tmp_path_factory):
    root = tmp_path_factory.mktemp("reg")
    cfg = make_config(root, target="return", ensemble=1, epochs=3, lr=1e-4, head_init="base_rate")
    build_image_set(cfg, n_stocks=3)
    return cfg, train_run(cfg)


def test_mse_training_one_output_and_predictions(reg_run):
    cfg, run = reg_run
    assert run.name == "I5_R5-reg-is1995-1996-os1997-1997"
    log = pd.read_csv(run / "member_0" / "log.csv")
    # MSE in units of the pool's mean squared target (1 = predicting zero): it falls, and below 1.
    assert log["train_loss"].iloc[-1] < log["train_loss"].iloc[0]
    assert log["val_loss"].min() < 0.9 and log["val_loss"].min() < log["val_loss"].iloc[0]
    card = read_model_card(run)
    assert card["target"] == "return" and card["spec"]["n_outputs"] == 1
    scale = card["norm"]["target_scale"]
    assert 0.01 < scale < 0.05  # RMS of returns uniform in +-(0.001, 0.05)
    ens = load_ensemble(run)
    assert ens.target == "return" and ens.members[0].head[-1].out_features == 1

    df = pd.read_parquet(predict_run(cfg))
    # The classifier's schema: the score column p_up holds the predicted return.
    assert list(df.columns) == ["stock_id", "ticker", "date", "p_up", "p_up_m0", "ret_5d", "ret_20d",
                                "ret_60d", "ret_week", "ret_month", "ret_quarter", "label", "mktcap",
                                "ewma_vol"]
    s = ImageSet(paths.images_dir(cfg, "I5/week"))
    x = normalise(s.images(1997)[:40], card["norm"]["mean"], card["norm"]["std"])
    with torch.no_grad():
        out = ens.members[0](x)[:, 0].numpy()  # best.pt predicts the return itself (scale folded in)
    np.testing.assert_allclose(df["p_up_m0"].to_numpy()[:40], out, rtol=1e-5, atol=1e-7)
    assert (df["p_up"] < 0).any() and (df["p_up"] > 0).any()
    known = df["label"] < 2
    m = sign_metrics(df["p_up"].to_numpy(), df["ret_week"].to_numpy())
    assert m["n"] == int(known.sum()) and m["accuracy"] > 0.9


def test_sign_accuracy_and_fit_by_hand():
    pred = np.array([0.02, -0.01, 0.0, 0.03, -0.02, 0.01])
    ret = np.array([0.01, 0.02, -0.01, -0.03, -0.01, np.nan])
    m = sign_metrics(pred, ret)
    # up predicted: rows 0, 3 (0.0 is not up); realised up: rows 0, 1. tp 1, fp 1, fn 1, tn 2.
    assert (m["n"], m["tp"], m["fp"], m["fn"], m["tn"]) == (5, 1, 1, 1, 2)
    assert m["accuracy"] == pytest.approx(3 / 5) and m["share_up_pred"] == pytest.approx(2 / 5)
    assert m["mcc"] == pytest.approx((1 * 2 - 1 * 1) / np.sqrt(2 * 2 * 3 * 3))
    f = regression_metrics(pred, ret)
    sse = 0.01 ** 2 + 0.03 ** 2 + 0.01 ** 2 + 0.06 ** 2 + 0.01 ** 2
    assert f["mse"] == pytest.approx(sse / 5)
    assert f["r2_oos"] == pytest.approx(1 - sse / (0.01 ** 2 + 0.02 ** 2 + 0.01 ** 2 + 0.03 ** 2 + 0.01 ** 2))
    # The classifier's 0.5 rule on the same numbers would call every row down: a different metric.
    assert classification_metrics(np.clip(pred, 0, 1), ret)["share_up_pred"] == 0.0


def test_deciles_sort_on_the_prediction():
    rng = np.random.default_rng(0)
    dates = pd.to_datetime(["2001-01-31", "2001-02-28", "2001-03-30"])
    n = 40
    df = pd.DataFrame({"stock_id": np.tile(np.arange(n), 3), "date": np.repeat(dates, n)})
    df["pred"] = rng.normal(0, 0.02, len(df))  # negative and positive predicted returns
    df["ret"] = df["pred"] + rng.normal(0, 0.001, len(df))
    dec, _ = assign_deciles(df, "pred")
    # The four lowest predictions of each date are decile 1, the four highest decile 10.
    for d in dates:
        g = df["date"] == d
        order = np.argsort(df.loc[g, "pred"].to_numpy())
        assert (dec[g][order[:4]] == 1).all() and (dec[g][order[-4:]] == 10).all()
    # Any increasing map of the score (here to (0, 1)) forms the same portfolios.
    df["p"] = 1 / (1 + np.exp(-50 * df["pred"]))
    a = evaluate_signal(df, "pred", "ret", "month", ["ew"]).returns
    b = evaluate_signal(df, "p", "ret", "month", ["ew"]).returns
    pd.testing.assert_frame_equal(a, b)
    hl = a[a["decile"] == "H-L"]["ret"]
    assert len(hl) == 3 and (hl > 0).all()


def test_regression_settings_refused_at_load():
    with pytest.raises(ConfigError, match=r"'train.calibration' is 'platt' but 'train.target' is 'return'"):
        load_config(None, ["train.target=return", "train.calibration=platt"])
    with pytest.raises(ConfigError, match=r"'train.calibration' is 'temperature'.*vol_adjusted_return"):
        load_config(None, ["train.target=vol_adjusted_return", "train.calibration=temperature"])
    with pytest.raises(ConfigError, match=r"'train.reproduce_nan_as_down' is true but 'train.target'"):
        load_config(None, ["train.target=return", "train.reproduce_nan_as_down=true"])
    with pytest.raises(ConfigError, match=r"'train.target' is 'ranks'"):
        load_config(None, ["train.target=ranks"])
    cfg = load_config(None, ["train.target=vol_adjusted_return", "train.head_init=base_rate"])
    assert paths.run_name(cfg) == "I20_R20-regvol"
    assert paths.run_name(load_config(None, ["train.target=return", "train.label_return=records"])) \
        == "I20_R20-rec-reg"
    assert paths.run_name(load_config(None, [])) == "I20_R20"  # the classifier keeps its name


def test_new_settings_leave_the_classifiers_hashes_alone():
    from pipeline.config import hash_view, to_dict

    cfg = load_config(None, [])
    # At their defaults the new keys stay out of every settings hash: runs and evaluations made
    # before them are not redone (their hashes are those of the dicts without the keys).
    assert hash_view("train", cfg.train) == {k: v for k, v in to_dict(cfg.train).items() if k != "target"}
    assert hash_view("evaluate", cfg.evaluate) == {k: v for k, v in to_dict(cfg.evaluate).items()
                                                   if k != "delays"}
    reg = load_config(None, ["train.target=return", "evaluate.delays=[0,1]"])
    assert hash_view("train", reg.train)["target"] == "return"
    assert hash_view("evaluate", reg.evaluate)["delays"] == [0, 1]


def test_evaluate_a_regression_run(tmp_path):
    from test_delayed_returns import _experiment

    from pipeline.evaluate.core import evaluate_run
    from pipeline.io import write_parquet

    cfg, pred, _ = _experiment(tmp_path, **{"train.target": "return", "evaluate.delays": "[0,1]"})
    # A predicted return: the realised one shrunk, plus noise (negative values included).
    rng = np.random.default_rng(2)
    known = pred["ret_month"].notna()
    pred["p_up"] = np.where(known, 0.1 * pred["ret_month"].fillna(0), 0.0) + rng.normal(0, 0.002, len(pred))
    pred["ewma_vol"] = 4e-4
    write_parquet(paths.run_dir(cfg) / "predictions.parquet", pred)
    m = evaluate_run(cfg)
    out = paths.eval_dir(cfg)
    assert out.name == "I20_R20-reg" and m["target"] == "return"
    d = pred[known]
    hand = np.mean((d["p_up"] > 0) == (d["ret_month"] > 0))
    assert m["accuracy"] == pytest.approx(hand) and m["n"] == len(d)
    assert m["share_up_pred"] == pytest.approx(np.mean(d["p_up"] > 0))
    assert m["loss"] is None and m["calibration"] is None and m["uncalibrated"] is None
    assert set(m["not_applicable"]) == {"loss", "calibration", "uncalibrated"}
    sse = np.sum((d["ret_month"] - d["p_up"]) ** 2)
    assert m["regression"]["mse"] == pytest.approx(sse / len(d))
    assert m["regression"]["r2_oos"] == pytest.approx(1 - sse / np.sum(d["ret_month"] ** 2))
    assert all(r["loss"] is None for r in m["members"]) and sum(y["n"] for y in m["by_year"]) == m["n"]
    # Portfolios sort on the prediction: here it carries the sign, so H-L is strongly positive.
    assert m["sharpe_ew"] > 3 and m["spearman"] > 0.5
    assert (out / "figures" / "prediction_hist.png").exists()
    assert not (out / "figures" / "reliability.png").exists()
    assert [r["delay"] for r in m["delays"]][:2] == [0, 0]
    # The score of a regression run need not lie in [0, 1], but it must be finite.
    pred.loc[3, "p_up"] = np.inf
    write_parquet(paths.run_dir(cfg) / "predictions.parquet", pred)
    with pytest.raises(Exception, match="not finite"):
        evaluate_run(cfg)


def test_sign_threshold_is_the_labels_up_and_is_not_centred():
    """"Predicted up" of a regression run is the label's "up" (ret > 0) in the target's own units:
    a perfect forecast of either target has accuracy 1 (ret == 0 is down on both sides), the
    positive scale the train stage divides by and folds back moves no prediction across 0, and a
    constant forecast of the (positive) mean return calls every row up: the threshold is 0, not
    the mean (evaluate/regression.py says why)."""
    from pipeline.evaluate.regression import SIGN_THRESHOLD, predicted_up
    from pipeline.images.store import labels_from_returns
    from pipeline.models.registry import create_model
    from pipeline.train.loop import fold_target_scale, target_scale

    rng = np.random.default_rng(3)
    ret = np.concatenate([rng.normal(0.004, 0.03, 500), [0.0, 0.0, np.nan]])  # mean > 0
    vol = rng.uniform(1e-4, 1e-3, len(ret))
    lab = labels_from_returns(ret)
    for target in ("return", "vol_adjusted_return"):
        y = labels.regression_target(ret, vol, 5, target)
        known = lab < 2
        assert np.array_equal(predicted_up(y[known]), lab[known] == 1)
        m = sign_metrics(y, ret)
        assert m["accuracy"] == 1.0 and m["fp"] == 0 and m["fn"] == 0 and m["n"] == int(known.sum())
        assert m["share_up_pred"] == pytest.approx(np.mean(lab[known] == 1))
    assert SIGN_THRESHOLD == 0.0
    # A forecast of the mean return (what an uninformed model learns): every row "up".
    mean = float(np.nanmean(ret))
    assert mean > 0
    const = sign_metrics(np.full(len(ret), mean), ret)
    assert const["share_up_pred"] == 1.0
    assert const["accuracy"] == pytest.approx(np.mean(ret[lab < 2] > 0))
    # The in-sample scale is the RMS (nothing subtracted), and folding it into the output layer
    # rescales every prediction without moving any across 0.
    t = np.array([0.01, 0.03, -0.02])
    assert target_scale(t) == pytest.approx(np.sqrt(np.mean(t ** 2)))
    torch.manual_seed(0)
    net = create_model("I5", n_outputs=1).double().eval()
    with torch.no_grad():
        x = torch.randn(64, 1, 32, 15, dtype=torch.float64)
        net.head[-1].bias.zero_()
        # A bias that puts the outputs on both sides of 0, and not centred on it.
        net.head[-1].bias.fill_(0.01 - float(net(x)[:, 0].median()))
        before = net(x)[:, 0].clone()
        fold_target_scale(net, 0.03)
        after = net(x)[:, 0]
    torch.testing.assert_close(after, 0.03 * before, rtol=1e-9, atol=1e-12)
    assert torch.equal(predicted_up(after), predicted_up(before))
    assert bool(predicted_up(before).any()) and bool((~predicted_up(before)).any())
