"""The evaluation stage end to end on a tiny panel, the top-500 filters and the refusals."""

from __future__ import annotations

import os

import numpy as np
import pandas as pd
import pytest

from pipeline import paths
from pipeline.config import load_config
from pipeline.evaluate.core import (PredictionsMismatchError, evaluate_run, top_n_annual_june,
                                    top_n_formation, validate_predictions)
from pipeline.io import mark_done, read_json, write_parquet
from pipeline.panel.build import panel_settings_hash
from pipeline.panel.store import PanelMeta, write_panel


def test_top_n_formation_by_hand():
    d1, d2 = pd.to_datetime(["2001-01-31", "2001-02-28"])
    df = pd.DataFrame({"stock_id": [1, 2, 3, 4, 7, 3, 5],
                       "date": [d1] * 4 + [d2] * 3,
                       "mktcap": [5, 3, np.nan, 9, 4, 4, 1]})
    # d1: caps 5, 3, NaN, 9 -> the two largest are stocks 4 (9) and 1 (5).
    # d2: caps 4, 4, 1 -> both 4s; with n = 1 the tie goes to the lower stock_id (3).
    assert top_n_formation(df, n=2).tolist() == [True, False, False, True, True, True, False]
    assert top_n_formation(df, n=1).tolist() == [False, False, False, True, False, True, False]


def test_top_n_annual_june_by_hand():
    pdates = pd.to_datetime(["2001-06-28", "2001-06-29", "2001-07-02", "2002-06-28"])
    panel = pd.DataFrame({"stock_id": [1, 2, 3, 1, 2, 3, 1, 2, 3, 1, 2, 3],
                          "date": np.repeat(pdates, 3),
                          "mktcap": [9, 8, 1, 1, 5, 7, 9, 9, 9, 2, 1, 3]})
    # 2001: last June day is 06-29: caps 1, 5, 7 -> top 2 = {3, 2}; 2002: 06-28: 2, 1, 3 -> {3, 1}.
    pred = pd.DataFrame({"stock_id": [1, 2, 3, 1, 2, 3],
                         "date": pd.to_datetime(["2001-01-31"] * 3 + ["2002-12-31"] * 3)})
    assert top_n_annual_june(pred, panel, n=2).tolist() == [False, True, True, True, False, True]


def test_refuses_mismatched_predictions():
    keys = pd.DataFrame({"stock_id": [1, 1, 2], "date": pd.to_datetime(
        ["2001-01-31", "2001-02-28", "2001-01-31"])})
    ok = keys.iloc[[0, 2]].reset_index(drop=True)
    validate_predictions(ok, keys)
    dup = pd.concat([ok, ok.iloc[[1]]], ignore_index=True)
    with pytest.raises(PredictionsMismatchError, match=r"2 rows share.*row 1 \(stock_id=2"):
        validate_predictions(dup, keys)
    with pytest.raises(PredictionsMismatchError, match=r"stock_ids not in the panel \(\[9\]\).*row 1"):
        validate_predictions(pd.DataFrame({"stock_id": [1, 9], "date": keys["date"].iloc[:2]}), keys)
    with pytest.raises(PredictionsMismatchError, match="dates on which the panel has no record: row 0"):
        validate_predictions(pd.DataFrame({"stock_id": [1], "date": [pd.Timestamp("2001-03-30")]}),
                             keys)
    with pytest.raises(PredictionsMismatchError, match=r"not panel records.*stock_id=2, date=2001-02-28"):
        validate_predictions(pd.DataFrame({"stock_id": [2], "date": [pd.Timestamp("2001-02-28")]}),
                             keys)


def _experiment(tmp_path, n_stocks=30, start="2000-01-03", end="2003-12-31", **set_):
    rng = np.random.default_rng(3)
    dates = pd.bdate_range(start, end)
    parts = []
    for s in range(n_stocks):
        r = rng.normal(0.0005, 0.02, len(dates))
        close = 20 * np.cumprod(1 + r)
        parts.append(pd.DataFrame({
            "stock_id": np.int32(s), "date": dates, "open": close, "high": close * 1.01,
            "low": close * 0.99, "close": close, "volume": 1000.0 + s, "ret": r,
            "mktcap": close * (1000.0 + s), "exchange": "NYSE", "source": "test"}))
    panel = pd.concat(parts, ignore_index=True)
    overrides = [f"data_dir={tmp_path}", "name=t", "evaluate.trend_history_days=250",
                 *[f"{k}={v}" for k, v in set_.items()]]
    cfg = load_config(None, overrides)
    write_panel(paths.panel_dir(cfg), panel, pd.DataFrame({"stock_id": range(n_stocks)}),
                PanelMeta(source="test", mktcap_is_proxy=True, mktcap_units="$ (proxy)"))
    mark_done(paths.panel_dir(cfg), panel_settings_hash(cfg))  # a finished panel for these settings
    # Month-end predictions for 2002-2003 with the next-month return; P(up) "knows" the sign,
    # so accuracy and MCC must be exactly 1.
    me = pd.Series(dates).groupby(dates.to_period("M")).max()
    me = me[me.dt.year >= 2002].to_numpy()
    px = panel.pivot(index="date", columns="stock_id", values="close")
    nxt = px.loc[me].shift(-1) / px.loc[me] - 1
    pred = nxt.stack(future_stack=True).rename("ret_month").reset_index()
    pred["stock_id"] = pred["stock_id"].astype("int32")
    pred["p_up"] = np.where(pred["ret_month"] > 0, 0.6, 0.4) + rng.normal(0, 0.01, len(pred))
    pred.loc[pred["ret_month"].isna(), "p_up"] = 0.5
    pred["mktcap"] = panel.set_index(["stock_id", "date"]).loc[
        pd.MultiIndex.from_frame(pred[["stock_id", "date"]]), "mktcap"].to_numpy()
    for c in ("ret_5d", "ret_20d", "ret_60d", "ret_week", "ret_quarter", "ewma_vol"):
        pred[c] = np.nan
    pred["label"] = np.int8(2)
    write_parquet(paths.run_dir(cfg) / "predictions.parquet", pred)
    return cfg, pred


def test_evaluate_run_end_to_end(tmp_path):
    cfg, pred = _experiment(tmp_path)
    m = evaluate_run(cfg)
    out = paths.eval_dir(cfg)
    # 24 month-ends x 30 stocks; the last month-end has no next-month return -> 23 x 30 rows.
    assert m["n_predictions"] == 720 and m["n"] == 690 and m["n_dropped_missing_return"] == 30
    assert m["accuracy"] == 1.0 and m["mcc"] == 1.0
    assert m["frequency"] == "month" and m["return_column"] == "ret_month"
    assert m["vw_label"] == "dollar-volume-weighted (proxy)"
    assert m["sharpe_ew"] is not None and m["strategies"]["TREND"]["n_rows"] > 0
    port = pd.read_parquet(out / "portfolios.parquet")
    assert list(port.columns) == ["date", "strategy", "weighting", "decile", "ret", "n"]
    assert set(port["strategy"]) == {"CNN", "MOM", "STR", "WSTR", "TREND"}
    assert set(port["decile"]) == {str(d) for d in range(1, 11)} | {"H-L"}
    # Perfect sign knowledge: the EW H-L return is positive every month.
    hl = port[(port.strategy == "CNN") & (port.weighting == "ew") & (port.decile == "H-L")]
    assert len(hl) == 23 and (hl["ret"] > 0).all()
    for name in ("deciles", "benchmarks", "deciles_TREND"):
        for ext in ("csv", "md", "tex"):
            assert (out / "tables" / f"{name}.{ext}").exists()
    dec = pd.read_csv(out / "tables" / "deciles.csv", comment="#", index_col=0)
    assert list(dec.index) == ["Low", "2", "3", "4", "5", "6", "7", "8", "9", "High", "H-L",
                               "H-L t-stat", "H-L Newey-West t", "Turnover (%)"]
    assert "Paper EW SR" in dec.columns  # the paper's I20/R20 numbers sit beside ours
    assert dec.at["H-L", "EW SR"] == pytest.approx(m["sharpe_ew"], rel=1e-5)
    assert "dollar-volume-weighted (proxy)" in (out / "tables" / "deciles.md").read_text()
    for f in ("deciles.png", "cumulative_hl.png", "p_up_hist.png", "reliability.png", "share_up_by_year.png"):
        assert (out / "figures" / f).stat().st_size > 1000
    # Calibration, per-year shares and the comparison with the benchmarks are in metrics.json.
    assert m["calibration"]["n_bins"] >= 1 and 0 <= m["calibration"]["ece"] <= 1
    assert sum(b["n"] for b in m["calibration"]["bins"]) == m["n"]
    assert sum(y["n"] for y in m["by_year"]) == m["n"]
    assert m["share_up_realised"] == pytest.approx(
        np.mean(pred.loc[pred["ret_month"].notna(), "ret_month"] > 0))
    assert m["uncalibrated"] is None and m["bayes"] is None  # no calibration, not synthetic
    vs = m["vs_benchmarks"]["ew"]
    assert set(vs["benchmarks"]) == {"MOM", "STR", "WSTR", "TREND"} and vs["best"] in vs["benchmarks"]
    assert -1 <= vs["benchmarks"]["MOM"]["corr"] <= 1
    assert m["strategies"]["CNN"]["ew_t_nw"] is not None
    assert np.isfinite(dec.at["H-L Newey-West t", "EW ret"])
    assert (out / "config.yaml").exists()
    assert set(read_json(out / "turnover.json")["CNN"]) == {"ew", "vw"}
    # Resumable: unchanged inputs -> nothing rewritten.
    mtime = (out / "portfolios.parquet").stat().st_mtime_ns
    assert evaluate_run(cfg) == m
    assert (out / "portfolios.parquet").stat().st_mtime_ns == mtime


def test_evaluate_run_top500_and_refusal(tmp_path):
    cfg, pred = _experiment(tmp_path / "a", n_stocks=12, **{"evaluate.top500": "true",
                                                              "evaluate.benchmarks": "[]"})
    m = evaluate_run(cfg)
    assert m["universe"] == "top500" and m["n_universe"] == m["n_predictions"]  # 12 < 500
    bad = pd.concat([pred, pred.iloc[[5]]], ignore_index=True)
    write_parquet(paths.run_dir(cfg) / "predictions.parquet", bad)
    with pytest.raises(PredictionsMismatchError, match="2 rows share a"):
        evaluate_run(cfg)


def test_refuses_a_stale_panel_and_predictions_older_than_the_run(tmp_path):
    from pipeline.io import StaleInputError, marker_path

    cfg, _ = _experiment(tmp_path, **{"evaluate.benchmarks": "[]"})
    run = paths.run_dir(cfg)
    mark_done(run, "trained", "_TRAIN_DONE")  # retrained after these predictions were written
    with pytest.raises(StaleInputError, match=r"predictions.parquet is unfinished or older than the trained run"):
        evaluate_run(cfg)
    mark_done(run, "predicted", "_PREDICT_DONE", trained="trained")  # predicted again: fine
    os.utime(marker_path(run, "_PREDICT_DONE"), ns=(1, 1))  # times do not matter, hashes do
    assert evaluate_run(cfg)["n"] > 0
    other = load_config(None, [f"data_dir={tmp_path}", "name=t", "panel.min_price=5"])
    with pytest.raises(StaleInputError, match="the panel in .* was built with other settings"):
        evaluate_run(other)
    marker_path(paths.panel_dir(cfg)).unlink()
    with pytest.raises(StaleInputError, match="the panel in .* is missing or unfinished"):
        evaluate_run(cfg)


def test_provenance_beside_the_evaluation_and_compute_without_io(tmp_path):
    """evaluate writes provenance.json (not hashed: a rerun skips); the computation and formatting
    run on frames alone and give exactly the metrics and the set of files the stage writes."""
    from pipeline.evaluate.core import compute, eval_spec, metrics_dict, read_inputs
    from pipeline.evaluate.outputs import format_outputs
    from pipeline.panel.store import read_meta

    cfg, pred = _experiment(tmp_path, n_stocks=12, **{"evaluate.benchmarks": "[MOM]",
                                                      "evaluate.characteristics": "false"})
    pred.insert(1, "ticker", "T" + pred["stock_id"].astype(str))  # as make predict writes them
    write_parquet(paths.run_dir(cfg) / "predictions.parquet", pred)
    m = evaluate_run(cfg)
    out = paths.eval_dir(cfg)
    prov = read_json(out / "provenance.json")
    assert set(prov) == {"stage", "run", "inputs", "commit", "uncommitted_changes", "python", "torch",
                         "numpy", "pandas", "platform", "processor", "cores", "cuda_device"}
    assert prov["stage"] == "evaluate" and prov["run"] == m["run"] == "I20_R20"
    assert prov["inputs"] == {"predictions": str((paths.run_dir(cfg) / "predictions.parquet").resolve()),
                              "panel": str(paths.panel_dir(cfg).resolve())}
    def stamps() -> dict:  # every artifact (the folder lock is rewritten by each run)
        return {p: p.stat().st_mtime_ns for p in out.rglob("*") if p.is_file() and p.name != ".lock"}

    before = stamps()
    assert evaluate_run(cfg) == m  # skipped: provenance is not part of the settings hash
    assert stamps() == before

    spec = eval_spec(cfg)
    inputs = read_inputs(spec, paths.run_dir(cfg) / "predictions.parquet", paths.panel_dir(cfg),
                         read_meta(paths.panel_dir(cfg)))
    ev = compute(cfg, spec, inputs)
    again = metrics_dict(spec, ev, seconds=m["seconds"])
    assert again == m
    files = format_outputs(spec, ev, again)
    written = {str(p.relative_to(out)) for p in out.rglob("*") if p.is_file()}
    expected = ({"metrics.json", "provenance.json", "config.yaml", "_DONE.json", ".lock"}
                | set(files.parquet) | set(files.json) | set(files.text) | set(files.figures)
                | {f"{b}.{ext}" for b in files.tables for ext in ("csv", "md", "tex", "parquet")})
    assert written == expected
    assert set(files.tables) == {"tables/deciles", "tables/deciles_MOM", "tables/benchmarks",
                                 "tables/net_of_cost", "tables/hl_by_year"}
