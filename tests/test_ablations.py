"""Table-18 ablations (METHOD 9): the table builder on hand-made metrics, config plumbing, end to end."""

from __future__ import annotations

import math

import numpy as np
import pandas as pd
import pytest

from pipeline import paths
from pipeline.ablations.core import ablation_config, ablation_models, variant_config
from pipeline.ablations.table import (
    METRICS,
    build_table18,
    latex_escape,
    table18_notes,
    to_latex,
    to_markdown,
    variant_metrics,
    write_table18,
)
from pipeline.config import ConfigError, load_config
from pipeline.models.registry import TABLE18


def fake_metrics(i: int, members: int = 5) -> dict:
    """Distinct, hand-checkable numbers per variant i."""
    return {"loss_v": 0.6 + i / 1000, "loss_t": 0.7 + i / 1000, "acc_v": 0.5 + i / 100,
            "acc_t": 0.4 + i / 100, "spearman": i / 100, "pearson": -i / 100, "sr_ew": 1.0 + i,
            "sr_vw": -1.0 - i, "members": members}


def test_variant_metrics_maps_keys() -> None:
    summary = {"members": [{}, {}, {}], "val_loss_mean": 0.689, "val_acc_mean": 0.538}
    metrics = {"n": 10, "loss": 0.692, "accuracy": 0.525, "mcc": 0.01, "spearman": 0.05,
               "pearson": 0.03, "sharpe_ew": 2.1, "sharpe_vw": None}
    m = variant_metrics(summary, metrics)
    assert m == {"loss_v": 0.689, "acc_v": 0.538, "loss_t": 0.692, "acc_t": 0.525, "spearman": 0.05,
                 "pearson": 0.03, "sr_ew": 2.1, "sr_vw": m["sr_vw"], "members": 3}
    assert math.isnan(m["sr_vw"])  # None (not computable) becomes NaN, shown as —
    with pytest.raises(ValueError, match="I20-relu: metrics.json has no key 'sharpe_ew'"):
        variant_metrics(summary, {k: v for k, v in metrics.items() if k != "sharpe_ew"},
                        where="I20-relu")
    with pytest.raises(ValueError, match="summary.json has no key 'val_loss_mean'"):
        variant_metrics({"members": []}, metrics)


def test_build_table18_every_row_grouped_with_paper_numbers() -> None:
    results = {r.model: fake_metrics(i) for i, r in enumerate(TABLE18)}
    frame = build_table18(results)
    assert len(TABLE18) == 17
    assert frame["model"].tolist() == [r.model for r in TABLE18]
    assert frame["group"].tolist() == [r.group for r in TABLE18]
    assert frame["variant"].tolist() == [r.label for r in TABLE18]
    assert frame["finished"].all()
    for i, rec in frame.iterrows():
        for m in METRICS:
            assert rec[m] == pytest.approx(fake_metrics(i)[m])
    # paper numbers (METHOD 9), checked by hand for three rows
    base = frame.iloc[0]
    assert base["model"] == "I20"
    assert [base[f"{m}_paper"] for m in METRICS] == [.688, .692, .540, .525, .052, .032, 2.18, .56]
    nobn = frame.set_index("model").loc["I20-nobn"]
    assert [nobn[f"{m}_paper"] for m in METRICS] == [.685, .691, .549, .528, .059, .037, 2.44, .58]
    last = frame.iloc[-1]
    assert last["model"] == "I20-dil11-str11" and last["sr_vw_paper"] == .52
    assert not frame[[f"{m}_paper" for m in METRICS]].isna().any().any()

    md = to_markdown(frame, table18_notes(frame))
    lines = md.splitlines()
    assert lines[0] == ("| Parameter (baseline) | Variant | Loss V | Loss T | Acc V | Acc T | Spearman "
                        "| Pearson | SR EW | SR VW |")
    # baseline row (i=0): bold, project (paper)
    assert lines[2] == ("| **Baseline** |  | **0.600 (0.688)** | **0.700 (0.692)** | **0.500 (0.540)** "
                        "| **0.400 (0.525)** | **0.000 (0.052)** | **0.000 (0.032)** | **1.00 (2.18)** "
                        "| **-1.00 (0.56)** |")
    # grouped: the parameter is printed on the first row of its group only
    assert lines[3].startswith("| Filters (64) | 32 | 0.601 (0.688) |")
    assert lines[4].startswith("|  | 128 | 0.602 (0.692) |")
    assert sum(line.startswith("| Dropout (0.50) |") for line in lines) == 1
    assert len([line for line in lines if line.startswith("|")]) == 2 + 17
    # 5 members everywhere: no ensemble note
    assert "member" not in md.split("\n\n", 1)[1].replace("members' mean", "")


def test_table18_notes_ensemble_and_missing() -> None:
    results = {"I20": fake_metrics(0, members=1), "I20-nobn": fake_metrics(1, members=1)}
    frame = build_table18(results)
    assert len(frame) == 17 and frame["finished"].sum() == 2
    notes = table18_notes(frame, extra=["Data: synthetic."])
    assert "Ensembles of 1 member (paper: 5)." in notes
    assert any(n.startswith("Not run: I20-filters32, ") for n in notes)
    assert notes[-1] == "Data: synthetic."
    md = to_markdown(frame, notes)
    assert "| Filters (64) | 32 | — (0.688) | — (0.691) |" in md
    mixed = build_table18({"I20": fake_metrics(0, 2), "I20-relu": fake_metrics(1, 3)})
    assert any("Ensemble sizes differ between variants (I20: 2, I20-relu: 3; paper: 5)." == n
               for n in table18_notes(mixed))
    # an extra model (not a Table-18 row) is kept in an "Other" group
    extra = build_table18({"I5": fake_metrics(3)})
    assert extra.iloc[-1][["group", "variant", "model"]].tolist() == ["Other", "I5", "I5"]
    assert math.isnan(extra.iloc[-1]["loss_v_paper"])
    with pytest.raises(ValueError, match="lack metric 'sr_vw'"):
        build_table18({"I20": {k: v for k, v in fake_metrics(0).items() if k != "sr_vw"}})


def test_latex_and_files(tmp_path) -> None:
    results = {r.model: fake_metrics(i, members=2) for i, r in enumerate(TABLE18)}
    frame = write_table18(tmp_path, results, extra_notes=["Data: x_y 50%."])
    csv = pd.read_csv(tmp_path / "table18.csv")
    assert len(csv) == 17 and list(csv.columns[:5]) == ["group", "variant", "model", "finished", "members"]
    np.testing.assert_allclose(csv["sr_ew"], frame["sr_ew"])
    tex = (tmp_path / "table18.tex").read_text()
    assert tex.startswith(r"\begin{tabular}{llrrrrrrrr}")
    assert r"Max-pool size (2$\times$1) & 2$\times$2 & " in tex
    assert r"\textbf{Baseline} &  & \textbf{0.600 (0.688)}" in tex
    assert r"Data: x\_y 50\%." in tex and "Ensembles of 2 members (paper: 5)." in tex
    assert tex.count(r"\\") == 1 + 17 + 3  # header, 17 rows, 3 notes (cell format, ensemble, data)
    md = (tmp_path / "table18.md").read_text()
    assert md.startswith("# Table 18") and "Ensembles of 2 members (paper: 5)." in md
    assert latex_escape("a_b & c") == r"a\_b \& c"
    assert to_latex(frame).count(r"\addlinespace") == 9  # between the 10 groups


def test_a_table_written_with_the_old_column_name_still_reads(tmp_path) -> None:
    """Tables written before ``finished`` had its name called it ``run``: the report reads both."""
    from pipeline.report.artifacts import load_ablations

    cfg = load_config(None, [f"data_dir={tmp_path}", "name=x"])
    d = paths.ablations_dir(cfg)
    d.mkdir(parents=True)
    results = {"I20": fake_metrics(0, members=2)}
    frame = write_table18(d, results)
    (d / "table18.parquet").unlink()
    frame.rename(columns={"finished": "run"}).to_csv(d / "table18.csv", index=False)
    loaded = load_ablations(cfg).table.frame
    assert loaded["finished"].sum() == 1 and "run" not in loaded.columns


def test_ablation_models_and_config(tmp_path) -> None:
    cfg = load_config(None, [f"data_dir={tmp_path}", "name=demo"])  # variants unset: all rows
    assert ablation_models(cfg) == [r.model for r in TABLE18]
    cfg.ablations.variants = ["I20-relu", "I20", "I20-relu"]
    assert ablation_models(cfg) == ["I20-relu", "I20"]
    cfg.ablations.variants = ["I20-nope"]
    with pytest.raises(ConfigError, match="I20-nope"):
        ablation_models(cfg)
    cfg.ablations.variants = None
    a = ablation_config(cfg)
    assert a.experiment_dir == tmp_path / "demo" / "ablations"
    assert a.train.ensemble == cfg.train.ensemble and a.evaluate.benchmarks == []
    assert cfg.evaluate.benchmarks  # the parent config is untouched
    cfg.ablations.ensemble = 1
    assert ablation_config(cfg).train.ensemble == 1
    v = variant_config(ablation_config(cfg), "I20-nobn")
    from pipeline import paths

    assert paths.run_dir(v) == tmp_path / "demo" / "ablations" / "runs" / "I20-nobn_R20"
    # The variants read the parent's inputs (no copy, no link): panel and images are the parent's.
    assert paths.images_dir(v, "I20/month") == tmp_path / "demo" / "images" / "I20_month"
    assert paths.panel_dir(v) == paths.panel_dir(cfg) == tmp_path / "demo" / "panel"


def test_ablation_test_years_keep_the_training_pool(tmp_path) -> None:
    from pipeline.config import split_years

    cfg = load_config(None, [f"data_dir={tmp_path}", "name=demo", "ablations.test_years=[2005, 2009]"])
    a = ablation_config(cfg)
    assert split_years(a.train) == ((1993, 1999), (2005, 2009))  # same in-sample years as ssrn
    assert cfg.train.split == "ssrn" and split_years(cfg.train)[1] == (2000, 2019)  # parent untouched
    for bad in ([1999, 2005], [2009, 2005], [2005], [2019, 2020]):
        cfg.ablations.test_years = bad
        with pytest.raises(ConfigError, match=r"ablations.test_years.*\[2000, 2019\]"):
            ablation_config(cfg)


def test_ablation_max_train_images_is_a_pool_preset(tmp_path) -> None:
    cfg = load_config(None, [f"data_dir={tmp_path}", "name=demo", "train.max_train_images=9000",
                             "ablations.max_train_images=3000"])
    assert ablation_config(cfg).train.max_train_images == 3000
    assert cfg.train.max_train_images == 9000  # parent untouched
    cfg.ablations.max_train_images = None
    assert ablation_config(cfg).train.max_train_images == 9000
    cfg.ablations.max_train_images = 5
    with pytest.raises(ConfigError, match="ablations.max_train_images"):
        ablation_config(cfg)


def test_table_only_lists_unfinished_variants_and_the_test_years(tmp_path) -> None:
    """`--table-only` on an ablation run with nothing finished: every row 'not run', the CPU-preset
    settings in the notes, and nothing trained."""
    import subprocess
    import sys

    sets = [f"data_dir={tmp_path}", "name=x", "ablations.test_years=[2010, 2019]",
            "ablations.variants=['I20', 'I20-relu']"]
    r = subprocess.run([sys.executable, "-m", "pipeline.ablations", "--table-only",
                        *[a for kv in sets for a in ("--set", kv)]],
                       capture_output=True, text=True, timeout=120)
    assert r.returncode == 0, r.stderr[-2000:]
    frame = pd.read_csv(tmp_path / "x" / "ablations" / "table18.csv")
    assert not frame["finished"].any()
    md = (tmp_path / "x" / "ablations" / "table18.md").read_text()
    assert "test years 2010-2019 only (ablations.test_years; the baseline's test period is 2000-2019)" in md
    assert "Configured ensemble size 5 (paper: 5)" not in md
    assert not (tmp_path / "x" / "ablations" / "runs").exists()


def test_execution_order_is_cheapest_first() -> None:
    from pipeline.ablations.core import execution_order

    order = execution_order([r.model for r in TABLE18])
    assert sorted(order) == sorted(r.model for r in TABLE18)
    assert order[0] == "I20-filters32" and order[-1] == "I20-filters128"  # 0.11 vs 1.77 GFLOP
    # equal-cost variants keep their given order (stable sort)
    same = ["I20-relu", "I20", "I20-nobn"]
    assert execution_order(same) == same


def test_inputs_dir_moves_only_the_panel_and_images(tmp_path) -> None:
    cfg = load_config("demo", [f"data_dir={tmp_path}", f"inputs_dir={tmp_path / 'shared'}"])
    assert paths.panel_dir(cfg) == tmp_path / "shared" / "panel"
    assert paths.images_dir(cfg, "I5x4/month") == tmp_path / "shared" / "images" / "I5x4_month"
    assert paths.run_dir(cfg).parent == tmp_path / "demo" / "runs"  # the runs stay the experiment's
    a = ablation_config(cfg)  # an ablation of such an experiment reads the same inputs
    assert paths.images_dir(a, "I20/month") == tmp_path / "shared" / "images" / "I20_month"


# --------------------------------------------------------------------------------------------------
# The driver end to end on a tiny experiment (real train, predict and evaluate stages)

E2E_VARIANTS = ["I20", "I20-nobn", "I20-pool2x2"]


@pytest.mark.slow
def test_run_ablations_end_to_end(tmp_path) -> None:
    from interp_experiment import make_tiny_experiment

    from pipeline import paths
    from pipeline.ablations.core import run_ablations
    from pipeline.io import read_json

    # two processes for three variants: exercises the process pool (spawned workers)
    cfg = make_tiny_experiment(tmp_path, overrides=[
        f"ablations.variants={E2E_VARIANTS}", "ablations.parallel=2"])
    out = run_ablations(cfg)
    assert out == paths.ablations_dir(cfg) == tmp_path / "tiny" / "ablations"
    # the main experiment's runs are untouched; every variant has its own run and evaluation
    assert not (tmp_path / "tiny" / "runs").exists()
    frame = pd.read_csv(out / "table18.csv")
    assert frame["model"].tolist() == [r.model for r in TABLE18]  # every Table-18 row, paper order
    assert frame.loc[frame["finished"], "model"].tolist() == E2E_VARIANTS
    acfg = ablation_config(cfg)
    for m in E2E_VARIANTS:
        v = variant_config(acfg, m)
        summary = read_json(paths.run_dir(v) / "summary.json")
        metrics = read_json(paths.eval_dir(v) / "metrics.json")
        assert summary["model"] == m
        row = frame.set_index("model").loc[m]
        assert row["members"] == 1 == len(summary["members"])
        assert row["loss_v"] == pytest.approx(summary["val_loss_mean"])
        assert row["acc_v"] == pytest.approx(summary["val_acc_mean"])
        assert row["loss_t"] == pytest.approx(metrics["loss"])
        assert row["acc_t"] == pytest.approx(metrics["accuracy"])
        assert row["spearman"] == pytest.approx(metrics["spearman"])
        assert row["sr_ew"] == pytest.approx(metrics["sharpe_ew"])  # 12 stocks: deciles form
        assert row["loss_t_paper"] > 0.68  # the paper's numbers sit beside ours
    md = (out / "table18.md").read_text()
    assert "Ensembles of 1 member (paper: 5)." in md
    assert (out / "config.yaml").exists() and (out / "table18.tex").exists()

    # resumable: a rerun trains nothing (run summaries unchanged) and rebuilds the same table
    stamp = (paths.run_dir(variant_config(acfg, "I20")) / "summary.json").stat().st_mtime_ns
    cfg.ablations.parallel = 1
    run_ablations(cfg)
    assert (paths.run_dir(variant_config(acfg, "I20")) / "summary.json").stat().st_mtime_ns == stamp
    pd.testing.assert_frame_equal(pd.read_csv(out / "table18.csv"), frame)

    # --table-only mode: the finished variants' rows, the others listed as not run, nothing trained
    from pipeline.ablations.core import write_finished_table

    cfg.ablations.variants = [*E2E_VARIANTS, "I20-relu"]
    write_finished_table(cfg)
    frame_t = pd.read_csv(out / "table18.csv")
    pd.testing.assert_frame_equal(frame_t[frame_t["finished"]], frame[frame["finished"]])
    assert not paths.run_dir(variant_config(acfg, "I20-relu")).exists()

    # a failing variant (I60 needs 96x180 images) does not lose the others; the table says so
    cfg.ablations.variants = ["I60", "I20"]
    with pytest.raises(RuntimeError, match=r"1 ablation variant\(s\) failed: \['I60'\]"):
        run_ablations(cfg)
    frame2 = pd.read_csv(out / "table18.csv")
    assert frame2.loc[frame2["finished"], "model"].tolist() == ["I20"]
    assert "Failed (see the stage log): I60." in (out / "table18.md").read_text()
