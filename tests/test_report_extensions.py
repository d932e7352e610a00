"""The report's extension sections (pipeline.report.extensions) on hand-made artifacts with known
numbers: regression runs beside the classifier, delayed holding periods, the time-scale study and
transfers read from the experiments named by ``report.related``."""

from __future__ import annotations

import json
import re
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from pipeline import paths
from pipeline.config import ConfigError, load_config
from pipeline.report.extensions import (delay_table, planted_signal_pivot, regression_table, target_runs,
                                        target_variant)
from pipeline.report.render import write_report

BASE = """name: {name}
data_dir: {root}/data
reports_dir: {root}/reports
train: {{split: custom, insample_years: [1993, 1998], test_years: [1999, 2003]}}
"""


def _config(root: Path, name: str, extra: str = "") -> Path:
    p = root / f"{name}.yaml"
    p.write_text(BASE.format(name=name, root=root.as_posix()) + extra)
    return p


def _section(html: str, sid: str) -> str:
    start = html.index(f'<section id="{sid}"')
    return html[start:html.index("</section>", start)]


def _write_eval(d: Path, metrics: dict, hl: list[float] | None = None) -> None:
    d.mkdir(parents=True, exist_ok=True)
    (d / "metrics.json").write_text(json.dumps(metrics))
    if hl is not None:
        dates = pd.date_range("1999-01-31", periods=len(hl), freq="ME")
        pd.DataFrame({"date": dates, "strategy": "CNN", "weighting": "ew", "decile": "H-L",
                      "ret": hl, "n": 10}).to_parquet(d / "portfolios.parquet")


def _delays(d: Path) -> pd.DataFrame:
    rows = []
    for delay in range(3):
        for w in ("ew", "vw"):
            rows.append({"delay": delay, "weighting": w, "sharpe": 2.0 - delay - (w == "vw"),
                         "t_nw": 4.0 - delay, "ann_ret": 0.10 / (delay + 1), "ic_mean": 0.05 - 0.01 * delay})
    t = pd.DataFrame(rows)
    t.to_parquet(d / "delays.parquet")
    return t


def test_regression_and_delay_sections_show_each_runs_numbers(tmp_path):
    cfg = load_config(_config(tmp_path, "ext"))
    _write_eval(paths.eval_dir(cfg), {"n": 1000, "accuracy": 0.581, "share_up_pred": 0.47, "spearman": 0.21,
                                      "sharpe_ew": 5.5, "sharpe_vw": 3.25, "turnover_ew_pct": 150.0},
                [0.01, 0.02, -0.005])
    reg = target_variant(cfg, "vol_adjusted_return")
    assert "-regvol" in paths.run_name(reg)
    _write_eval(paths.eval_dir(reg), {"n": 1000, "accuracy": 0.566, "share_up_pred": 0.52, "spearman": 0.187,
                                      "sharpe_ew": 4.75, "sharpe_vw": 2.5, "turnover_ew_pct": 140.0,
                                      "regression": {"mse": 0.9876, "r2_oos": 0.0123}},
                [0.02, 0.0, 0.01])
    table = _delays(paths.eval_dir(cfg))

    evals = target_runs(cfg)
    assert list(evals) == ["class", "vol_adjusted_return"]
    rt = regression_table(evals)
    assert rt.loc["classifier: P(up)", "Accuracy (sign)"] == 0.581
    assert np.isnan(rt.loc["classifier: P(up)", "MSE"])
    assert rt.loc["regression: volatility-adjusted return", "R² (oos)"] == 0.0123
    dt = delay_table(table)
    assert list(dt.index) == [0, 1, 2]
    assert dt.loc[1, "EW SR"] == 1.0 and dt.loc[2, "VW SR"] == -1.0
    assert dt.loc[1, "EW return (% a year)"] == pytest.approx(5.0)

    res = write_report(cfg, pdf=False)
    status = {s["id"]: s["status"] for s in res.sections}
    assert status["regression"] == "ok" and status["delays"] == "ok"
    html = res.html.read_text()
    reg_html = _section(html, "regression")
    for cell in ("0.581", "0.566", "0.988", "0.012", "4.750"):
        assert f"<td>{cell}</td>" in reg_html, cell
    assert len(re.findall(r'<img src="data:image/png', reg_html)) == 1  # the cumulative H-L figure
    delay_html = _section(html, "delays")
    assert "<td>1.00</td>" in delay_html and "<td>5.00</td>" in delay_html
    # Not run here: the classifier alone has no regression to compare with.
    (paths.eval_dir(reg) / "metrics.json").unlink()
    res = write_report(cfg, pdf=False)
    status = {s["id"]: s["status"] for s in res.sections}
    assert status["regression"] == "not run" and status["delays"] == "ok"
    assert "make demo-extensions CONFIG=" in _section(res.html.read_text(), "regression")


def test_related_experiments_timescale_and_transfer(tmp_path):
    main = _config(tmp_path, "home", "report: {related: [%s, %s, %s]}\n" % (
        tmp_path / "ts.yaml", tmp_path / "other.yaml", tmp_path / "other_direct.yaml"))
    _config(tmp_path, "ts", "timescale: {source: 'I5/week', targets: ['I5x4/month']}\n"
                            "images: {sets: ['I5/week', 'I5x4/month', 'I20/month']}\n")
    _config(tmp_path, "other", "synthetic: {calendar: daily}\n")
    _config(tmp_path, "other_direct", f"synthetic: {{calendar: daily}}\n"
                                      f"transfer: {{mode: direct, source_config: {main}}}\n")
    cfg = load_config(main)
    res = write_report(cfg, pdf=False)
    status = {s["id"]: s["status"] for s in res.sections}
    assert status["timescale"] == "not run" and status["transfer"] == "not run"
    html = res.html.read_text()
    assert "make study-timescale CONFIG=ts" in _section(html, "timescale")

    ts = load_config(tmp_path / "ts.yaml")
    d = ts.experiment_dir / "timescale"
    d.mkdir(parents=True)
    pd.DataFrame({"window_days": [5, 20, 20], "kind": ["trained", "transfer", "trained"],
                  "trained_on": ["I5/week", "I5/week", "I20/month"],
                  "applied_to": ["I5/week", "I5x4/month", "I20/month"], "n": [100, 90, 90],
                  "accuracy": [0.61, 0.472, 0.59], "bayes": [0.62, 0.60, 0.60]}).to_parquet(d / "timescale.parquet")
    other = load_config(tmp_path / "other.yaml")
    _write_eval(paths.eval_dir(other), {"n": 500, "accuracy": 0.577, "spearman": 0.2, "sharpe_ew": 3.0,
                                        "bayes": {"accuracy": 0.6}})
    direct = load_config(tmp_path / "other_direct.yaml")
    assert "-direct_from_home" in paths.run_name(direct)
    _write_eval(paths.eval_dir(direct), {"n": 500, "accuracy": 0.5432, "spearman": 0.1, "sharpe_ew": 1.5})
    res = write_report(cfg, pdf=False)
    status = {s["id"]: s["status"] for s in res.sections}
    assert status["timescale"] == "ok" and status["transfer"] == "ok"
    html = res.html.read_text()
    ts_html = _section(html, "timescale")
    assert "<td>0.472</td>" in ts_html and "I5x4/month" in ts_html
    tr_html = _section(html, "transfer")
    assert "<td>0.577</td>" in tr_html and "<td>0.543</td>" in tr_html
    assert "trained on this market" in tr_html and "applied unchanged from" in tr_html


def test_bad_related_entry_names_the_key(tmp_path):
    cfg = load_config(_config(tmp_path, "bad", f"report: {{related: [{tmp_path / 'nope.yaml'}]}}\n"))
    with pytest.raises(ConfigError, match=r"'report.related' entry .*nope.yaml"):
        write_report(cfg, pdf=False)


def test_planted_signal_pivot():
    t = pd.DataFrame({"method": ["saliency", "saliency", "occlusion", "saliency"],
                      "region": ["last_days", "volume", "last_days", "volume"],
                      "subset": ["all", "all", "all", "surge_days"], "mean": [2.5, 0.8, 3.0, 1.7]})
    p = planted_signal_pivot(t)
    assert p.loc["saliency", "last_days"] == 2.5 and p.loc["occlusion", "last_days"] == 3.0
    assert np.isnan(p.loc["occlusion", "volume"])
    assert planted_signal_pivot(t, "surge_days").loc["saliency", "volume"] == 1.7
