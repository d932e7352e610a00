"""Tables as numbers (pipeline.tabular): the numeric files round-trip, the report formats them as the
Markdown does, the paper's numbers are merged in one place; the one plotting module's contract."""

from __future__ import annotations

import matplotlib
import numpy as np
import pandas as pd
import pytest
from matplotlib.figure import Figure

from pipeline import paper_numbers as P
from pipeline.evaluate import plots
from pipeline.evaluate import tables as T
from pipeline.report.blocks import stage_table_block
from pipeline.tabular import (NumericTable, beside_paper, latex_escape, markdown_table, read_csv_numeric,
                              read_numeric, text_mask, write_numeric)


def _net_table() -> pd.DataFrame:
    net = {"ew": {"gross_ann_ret": 0.1, "net_ann_ret": 0.05, "net_t": 2.5, "n_periods": 36.0,
                  "cost_bps": 10.0}}
    legs = {"ew": {"long": {"ann_ret": 0.2, "sharpe": 1.0}, "short": {"ann_ret": 0.1, "sharpe": 0.5}}}
    dd = {"ew": {"max_drawdown": -0.2, "peak_date": "2001-03-31", "trough_date": None}}
    return T.net_of_cost_table(net, legs, dd, False, ["ew"])


def test_numeric_table_round_trip_keeps_numbers_text_and_metadata(tmp_path):
    num = _net_table()  # rows mix numbers and dates: stored transposed
    paths = T.write("net_of_cost", num, tmp_path / "net_of_cost", "the note", "the caption")
    assert [p.suffix for p in paths] == [".csv", ".md", ".tex", ".parquet"]
    back = read_numeric(paths[3])
    assert (back.kind, back.caption, back.notes) == ("net_of_cost", "the caption", ["the note"])
    assert list(back.frame.index) == list(num.index) and back.frame.index.name == "statistic"
    assert back.frame.at["H-L ret, net", "EW"] == pytest.approx(0.05)
    assert back.frame.at["Drawdown peak", "EW"] == "2001-03-31"
    # The report's cells are the Markdown's cells: same formatter on the same numbers.
    cells = T.format_table(back.kind, back.frame, **back.options)
    pd.testing.assert_frame_equal(cells, T.format_net_of_cost_table(num))
    assert "| H-L ret, net | 0.050** |" in paths[1].read_text()
    # Only the date cell is text (left-aligned); a missing date is not.
    mask = text_mask(back.frame)
    assert mask.sum() == 1 and mask[list(back.frame.index).index("Drawdown peak"), 0]


def test_decile_options_travel_with_the_file(tmp_path):
    idx = pd.MultiIndex.from_tuples([("ew", str(d)) for d in range(1, 11)] + [("ew", "H-L")])
    perf = pd.DataFrame({"ann_ret": np.r_[np.arange(10) / 100, .09], "sharpe": np.r_[np.zeros(10), 2.5],
                         "t_stat": np.r_[np.zeros(10), 2.0]}, index=idx)
    ref = P.decile_reference("I20", 5, "top500")
    num = T.decile_table(perf, {"ew": 676.0}, True, ["ew"], ref)
    T.write("deciles", num, tmp_path / "deciles", "n", "c", paper_hl_stars=ref.hl_stars_ew)
    back = read_numeric(tmp_path / "deciles.parquet")
    cells = T.format_table(back.kind, back.frame, **back.options)
    assert cells.at["H-L", "Paper EW ret"] == "0.090***" and cells.at["H-L", "EW ret"] == "0.090**"
    block = stage_table_block(back, cells, highlight=("H-L",))
    hl = next(r for r in block["rows"] if r["label"] == "H-L")
    assert hl["strong"] and hl["text_cells"] == [] and hl["cells"][0] == "0.090**"
    # An older evaluation with only its CSV reads the same numbers.
    old = read_csv_numeric(tmp_path / "deciles.csv", "deciles")
    assert old.caption == "c" and old.frame.at["H-L", "EW SR"] == pytest.approx(2.5)
    with pytest.raises(ValueError, match="unknown evaluation table kind 'nope'"):
        T.format_table("nope", num)


def test_write_numeric_refuses_a_foreign_parquet(tmp_path):
    pd.DataFrame({"a": [1.0]}).to_parquet(tmp_path / "x.parquet")
    with pytest.raises(ValueError, match="x.parquet: not a pipeline table"):
        read_numeric(tmp_path / "x.parquet")
    write_numeric(tmp_path / "y.parquet", NumericTable(pd.DataFrame({"a": [1.5]}), "k", "c", ["n1", "n2"]))
    assert read_numeric(tmp_path / "y.parquet").notes == ["n1", "n2"]


def test_beside_paper_drops_empty_columns_unless_kept():
    ours = pd.DataFrame({"ret": [0.1, 0.2]}, index=["a", "b"])
    paper = pd.DataFrame({"ret": [np.nan, 0.3], "sr": [np.nan, np.nan], "source": ["", ""]},
                         index=["a", "b"])
    both = beside_paper(ours, paper)
    assert list(both.columns) == ["ret", "Paper ret"] and both.at["b", "Paper ret"] == 0.3
    kept = beside_paper(ours, paper[["sr"]], name="{}_paper", keep_empty=True)
    assert list(kept.columns) == ["ret", "sr_paper"]


def test_one_escape_rule_and_markdown_alignment():
    assert latex_escape("a_b & 5% {x} — 2×2") == r"a\_b \& 5\% \{x\} --- 2$\times$2"
    cells = pd.DataFrame({"src": ["JF"], "v": ["0.1"]}, index=pd.Index(["r"], name="row"))
    assert markdown_table(cells, text_columns=["src"]).splitlines()[1] == "|---|---|---:|"


def test_plots_take_an_axis_and_keep_global_style():
    before = dict(matplotlib.rcParams)
    ax = plots.p_up_histogram(np.array([0.4, 0.6, 0.55]))
    assert isinstance(ax.figure, Figure) and ax.patches  # drew its own figure
    given = Figure().subplots()
    idx = pd.to_datetime(["2001-01-31", "2001-02-28"])
    out = plots.cumulative_hl(pd.DataFrame({"EW": [0.01, 0.02]}, index=idx), ax=given)
    assert out is given
    np.testing.assert_allclose(given.lines[0].get_ydata(), [1.0, 3.0])
    assert given.lines[0].get_color() == plots.PALETTE[0]  # the style file's colour cycle
    assert dict(matplotlib.rcParams) == before  # the style is applied per call, never globally


def test_wide_benchmark_table_splits_by_weighting_with_counts_first():
    from pipeline.report.blocks import split_columns

    cols = ["n rows", "n dates", "EW H-L ret", "EW SR", "VW H-L ret", "VW SR", "Paper EW SR",
            "Paper source", "Paper VW SR"]
    assert split_columns(cols) == [("EW", ["n rows", "n dates", "EW H-L ret", "EW SR"]),
                                   ("VW", ["VW H-L ret", "VW SR"]),
                                   ("Paper", ["Paper EW SR", "Paper source", "Paper VW SR"])]
    assert split_columns(cols[:4]) == [("", cols[:4])]
