"""Paper-style tables and the paper's reference numbers."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from pipeline import paper_numbers as P
from pipeline.evaluate.tables import (decile_table, format_decile_table, to_markdown, write_table)


def _perf():
    idx = pd.MultiIndex.from_tuples([("ew", str(d)) for d in range(1, 11)] + [("ew", "H-L")],
                                    names=["weighting", "decile"])
    return pd.DataFrame({"ann_ret": np.r_[np.arange(10) / 100, .09],
                         "sharpe": np.r_[np.arange(10) / 10, 2.5],
                         "t_stat": np.r_[np.zeros(10), 2.0]}, index=idx)


def test_decile_table_layout_stars_and_paper(tmp_path):
    ref = P.decile_reference("I20", 5, "top500")
    num = decile_table(_perf(), {"ew": 676.0}, True, ["ew"], ref)
    assert list(num.index[:11]) == list(P.DECILE_ROWS)
    assert num.at["Low", "EW ret"] == 0.0 and num.at["High", "EW SR"] == pytest.approx(.9)
    assert num.at["H-L t-stat", "EW ret"] == 2.0 and num.at["Turnover (%)", "EW ret"] == 676.0
    # [T4] top-500 I20/R5: H-L .09*** / SR .78, turnover 676%.
    assert num.at["H-L", "Paper EW ret"] == .09 and num.at["H-L", "Paper EW SR"] == .78
    assert num.at["Turnover (%)", "Paper EW ret"] == 676.0
    fmt = format_decile_table(num, ref.hl_stars_ew)
    assert fmt.at["H-L", "EW ret"] == "0.090**"  # t = 2.0 -> two-sided 5%
    assert fmt.at["H-L", "Paper EW ret"] == "0.090***"
    assert fmt.at["Turnover (%)", "EW ret"] == "676%"
    paths = write_table(num, fmt, tmp_path / "deciles", "NOTE 10% here", "Caption")
    back = pd.read_csv(paths[0], comment="#", index_col=0)
    assert back.at["H-L", "EW SR"] == pytest.approx(2.5)
    md = paths[1].read_text()
    assert md.startswith("**Caption**") and md.rstrip().endswith("NOTE 10% here")
    assert "\\% here" in paths[2].read_text() and "\\toprule" in paths[2].read_text()


def test_markdown_writer():
    df = pd.DataFrame({"a": ["1", "x|y"]}, index=pd.Index(["r1", "r2"], name="row"))
    assert to_markdown(df) == "| row | a |\n|---|---:|\n| r1 | 1 |\n| r2 | x\\|y |\n"


def test_paper_references():
    assert P.cnn_reference("I20", 20, "all", "ssrn").ew_sr == 2.18  # Table 18 baseline (SSRN)
    assert P.cnn_reference("I20-nobn", 20, "all", "ssrn").vw_sr == .58
    assert P.cnn_reference("I20", 20, "all", "jf").ew_sr == 2.16  # JF [2nd]
    assert P.cnn_reference("I20", 5, "all", "jf").turnover_vw == 729.0
    assert P.hl_reference("MOM", 20).turnover_ew == 63.0
    assert P.decile_reference("I20", 5).vw_ret[-1] == .223
    assert P.decile_reference("I20", 60) is None
    assert P.classification_reference("I20", 20, "jf")["accuracy"] == .533
    assert P.classification_reference("I20", 20, "ssrn")["accuracy"] == .525
    assert len(P.TABLE18) == 17 and all(len(v) == 8 for *_, v in P.TABLE18)
    for ref in P.DECILE_TABLES.values():
        assert len(ref.ew_ret) == len(ref.ew_sr) == 11
