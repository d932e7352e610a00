"""The report stage: loaders, figures, HTML/PDF composition, headless-browser rendering.

Unit tests use small hand-written artifacts with exact expected values; the integration tests run
the real stage commands on a tiny synthetic experiment (tests/report_fixture.py) and check that
the report shows every section that has artifacts (with its figures) and "not run" otherwise.
"""

from __future__ import annotations

import base64
import json
import re
import shutil
import struct
import subprocess
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from pipeline.config import load_config
from pipeline.panel.store import PanelMeta, write_panel
from pipeline.evaluate import plots
from pipeline.report import artifacts
from pipeline.report.blocks import table_block
from pipeline.report.render import write_report
from pipeline.report.sections import SECTION_BUILDERS
from pipeline.tabular import fmt

sys.path.insert(0, str(Path(__file__).parent))
from report_fixture import REPO, tiny_experiment  # noqa: E402

SECTION_TITLES = ["Overview", "Data", "Chart images", "Training", "Classification and correlations",
                  "Decile portfolios", "Benchmark strategies", "Characteristic correlations (Table 5)",
                  "Grad-CAM", "Interpretation toolkit (beyond Grad-CAM)", "Ablations (Table 18)",
                  "Regression on the return (beyond the paper)", "Delayed holding periods (signal decay)",
                  "Comparison with the paper", "Conventions and caveats"]
DATA_URI = re.compile(r'<img src="data:image/png;base64,([A-Za-z0-9+/=]+)"')


def _config(tmp_path: Path, name: str, extra: str = ""):
    p = tmp_path / f"{name}.yaml"
    p.write_text(f"name: {name}\ndata_dir: {tmp_path / 'data'}\nreports_dir: {tmp_path / 'reports'}\n"
                 + extra)
    return load_config(p), p


def _section_html(html: str, sid: str) -> str:
    start = html.index(f'<section id="{sid}"')
    return html[start:html.index("</section>", start)]


def _png_size(data: bytes) -> tuple[int, int]:
    assert data[:8] == b"\x89PNG\r\n\x1a\n", "not a PNG"
    w, h = struct.unpack(">II", data[16:24])  # IHDR width, height
    return w, h


# --------------------------------------------------------------------------------------------------
# Pure helpers with exact expected values


def test_fmt_cells():
    assert fmt(1234567) == "1,234,567"
    assert fmt(np.int64(42)) == "42"
    assert fmt(0.52345) == "0.523"
    assert fmt(-0.5, 2) == "-0.50"
    assert fmt(2000.0) == "2,000"
    assert fmt(12.0) == "12.000"
    assert fmt(float("nan")) == "–"
    assert fmt(None) == "–"
    assert fmt(True) == "yes"
    assert fmt("3.366***") == "3.366***"


def test_table_block_formats_cells_and_marks_text_columns():
    df = pd.DataFrame({"This run": [0.5834, np.nan], "Source": ["SSRN Table 18", "JF [2nd]"],
                       "N": [1038, 12]}, index=pd.Index([2001, "H-L"], name="row"))
    b = table_block(df, "cap", highlight_rows=("H-L",))
    assert b["columns"] == ["This run", "Source", "N"] and b["index_name"] == "row"
    assert [r["label"] for r in b["rows"]] == ["2001", "H-L"]  # years without separators
    assert b["rows"][0]["cells"] == ["0.583", "SSRN Table 18", "1,038"]
    assert b["rows"][1]["cells"] == ["–", "JF [2nd]", "12"]
    assert [r["text_cells"] for r in b["rows"]] == [[1], [1]]
    assert [r["strong"] for r in b["rows"]] == [False, True]


def test_rejection_table_fills_missing_reasons_and_totals():
    t = artifacts.rejection_table({"2001": {"R1_short_history": 3, "R0_no_record_on_date": 1},
                                   "2000": {"R1_short_history": 2}})
    assert list(t.index) == ["R0_no_record_on_date", "R1_short_history"]
    assert list(t.columns) == [2000, 2001, "total"]
    assert t.to_numpy().tolist() == [[0, 1, 1], [2, 3, 5]]
    assert artifacts.rejection_table({}).empty


def _tiny_panel(directory: Path, counts: dict[str, int], proxy: bool = False) -> None:
    """Stock 1: two days of 2001 and one of 2002; stock 2: one day of 2001."""
    df = pd.DataFrame({
        "stock_id": np.array([1, 1, 1, 2], dtype="int32"),
        "date": pd.to_datetime(["2001-03-01", "2001-03-02", "2002-01-02", "2001-03-01"]),
        "open": 10.0, "high": 11.0, "low": 9.0, "close": 10.0, "volume": 100.0,
        "ret": [0.0, 0.01, -0.02, 0.0], "mktcap": 1000.0, "exchange": "NYSE", "source": "test"})
    stocks = pd.DataFrame({"stock_id": [1, 2], "ticker": ["AAA", "BBB"], "exchange": ["NYSE", "NYSE"]})
    write_panel(directory, df, stocks, PanelMeta(source="test", mktcap_is_proxy=proxy,
                                                 mktcap_units="$", counts=counts))


def test_panel_summary_counts_stocks_and_rows_per_year(tmp_path):
    cfg, _ = _config(tmp_path, "p")
    assert artifacts.load_panel_summary(cfg) is None  # not run yet
    _tiny_panel(tmp_path / "data" / "p" / "panel", {"dropped_weekend": 7})
    s = artifacts.load_panel_summary(cfg)
    assert s.universe.to_dict("index") == {2001: {"n_stocks": 2, "n_rows": 3},
                                           2002: {"n_stocks": 1, "n_rows": 1}}
    assert s.n_tickers == 2 and s.bayes_accuracy is None
    assert s.meta.counts == {"dropped_weekend": 7}


def test_hl_returns_pivots_long_short_rows():
    port = pd.DataFrame({
        "date": pd.to_datetime(["2001-01-31"] * 3 + ["2001-02-28"] * 3),
        "strategy": ["CNN", "CNN", "MOM"] * 2, "weighting": ["ew", "ew", "ew"] * 2,
        "decile": ["1", "H-L", "H-L"] * 2, "ret": [0.5, 0.02, -0.01, 0.6, 0.03, 0.04]})
    hl = artifacts.hl_returns(port)
    assert hl[("CNN", "ew")].tolist() == [0.02, 0.03]
    assert hl[("MOM", "ew")].tolist() == [-0.01, 0.04]
    with pytest.raises(artifacts.ArtifactError, match="lacks columns"):
        artifacts.hl_returns(port.drop(columns=["weighting"]))


def test_collect_metrics_and_bad_json(tmp_path):
    for run, m in [("I20_R20", {"accuracy": 0.53, "n": 100, "members": [{"loss": 1}],
                                "mktcap_is_proxy": True}),
                   ("I20-nobn_R20", {"accuracy": 0.52, "spearman": 0.04})]:
        (tmp_path / "exp" / "eval" / run).mkdir(parents=True)
        (tmp_path / "exp" / "eval" / run / "metrics.json").write_text(json.dumps(m))
    df = artifacts.collect_metrics(tmp_path / "exp")
    assert df["run"].tolist() == ["I20-nobn_R20", "I20_R20"]
    assert df["accuracy"].tolist() == [0.52, 0.53]
    assert np.isnan(df.loc[1, "spearman"]) and df.loc[1, "n"] == 100
    assert "members" not in df.columns and "mktcap_is_proxy" not in df.columns
    bad = tmp_path / "exp" / "eval" / "I20_R20" / "metrics.json"
    bad.write_text("{not json")
    with pytest.raises(artifacts.ArtifactError, match="I20_R20/metrics.json: not valid JSON"):
        artifacts.load_eval(bad.parent)


def test_member_log_missing_column_names_file(tmp_path):
    p = tmp_path / "member_0" / "log.csv"
    p.parent.mkdir()
    p.write_text("epoch,train_loss\n0,0.7\n")
    with pytest.raises(artifacts.ArtifactError, match=r"member_0/log.csv: missing columns \['train_acc'"):
        artifacts.read_member_log(p)


def test_training_curves_plot_every_member_log():
    logs = [pd.DataFrame({"epoch": [0, 1, 2], "train_loss": [0.70, 0.69, 0.68],
                          "val_loss": [0.695, 0.690, 0.692], "train_acc": [0.5, 0.52, 0.53],
                          "val_acc": [0.51, 0.52, 0.515]}) for _ in range(2)]
    fig = plots.training_curves(logs, [1, None])
    loss_ax, acc_ax = fig.axes
    # 2 lines per member on each axis, plus one best-epoch marker for member 0 on the loss axis.
    assert len(acc_ax.lines) == 4 and len(loss_ax.lines) == 5
    assert list(loss_ax.lines[0].get_ydata()) == [0.70, 0.69, 0.68]
    assert list(acc_ax.lines[1].get_ydata()) == [0.51, 0.52, 0.515]
    assert list(loss_ax.lines[2].get_xdata()) == [1] and list(loss_ax.lines[2].get_ydata()) == [0.690]
    with pytest.raises(ValueError, match="at least one member"):
        plots.training_curves([])


def test_cumulative_hl_is_running_sum_in_percent():
    idx = pd.to_datetime(["2001-01-31", "2001-02-28", "2001-03-30"])
    hl = pd.DataFrame({("CNN", "ew"): [0.01, np.nan, 0.02], ("MOM", "ew"): [0.0, -0.01, 0.01]},
                      index=idx)
    fig = plots.cumulative_hl_grid(hl, highlight="CNN")
    (ax,) = fig.axes
    np.testing.assert_allclose(ax.lines[0].get_ydata(), [1.0, 1.0, 3.0])
    np.testing.assert_allclose(ax.lines[1].get_ydata(), [0.0, -1.0, 0.0])
    assert ax.lines[0].get_linewidth() > ax.lines[1].get_linewidth()


# --------------------------------------------------------------------------------------------------
# Composition on hand-made artifacts


def test_empty_experiment_every_section_not_run_sections_flow(tmp_path):
    import pypdf

    cfg, _ = _config(tmp_path, "empty")
    res = write_report(cfg, config_ref="empty")
    status = {s["id"]: s["status"] for s in res.sections}
    assert [s["title"] for s in res.sections] == SECTION_TITLES
    assert status == {"overview": "ok", "data": "not run", "images": "not run", "training": "not run",
                      "metrics": "not run", "portfolios": "not run", "benchmarks": "not run",
                      "characteristics": "not run", "gradcam": "not run", "interpret": "not run",
                      "ablations": "not run", "regression": "not run", "delays": "not run",
                      "paper": "not run", "caveats": "ok"}
    html = res.html.read_text()
    for cmd in ("make panel CONFIG=empty", "make images CONFIG=empty", "make train CONFIG=empty",
                "make predict evaluate CONFIG=empty", "make gradcam CONFIG=empty",
                "make ablations CONFIG=empty"):
        assert cmd in html
    assert "data:image/png" not in html
    # Title page with the contents, then the sections flow: short "not run" sections share pages,
    # every one appears, numbered and in order.
    reader = pypdf.PdfReader(res.pdf)
    assert res.pages == len(reader.pages)
    assert 2 <= res.pages < 1 + len(SECTION_TITLES)
    assert len(SECTION_TITLES) < len(SECTION_BUILDERS)  # no related experiments: two left out
    body = " ".join(" ".join(p.extract_text().split()) for p in reader.pages[1:])
    at = [body.find(f"{k}. {title}") for k, title in enumerate(SECTION_TITLES, start=1)]
    assert -1 not in at and at == sorted(at), list(zip(SECTION_TITLES, at))
    assert json.loads((res.html.parent / "report.json").read_text())["pages"] == res.pages
    assert (res.html.parent / "config.yaml").exists()


def test_artifact_text_is_escaped_and_panel_numbers_shown(tmp_path):
    cfg, _ = _config(tmp_path, "esc", "panel: {source: stooq, path: x.parquet}\n")
    _tiny_panel(tmp_path / "data" / "esc" / "panel",
                {"<script>alert('x')</script>": 3, "dropped_weekend": 1234}, proxy=True)
    res = write_report(cfg, pdf=False)
    html = res.html.read_text()
    data = _section_html(html, "data")
    assert "<script>alert" not in html
    assert "&lt;script&gt;alert(&#39;x&#39;)&lt;/script&gt;" in data
    assert "1,234" in data  # the cleaning count, formatted
    assert "<th scope=\"row\" class=\"rowlabel\">2001</th><td>2</td><td>3</td>" in data
    assert len(DATA_URI.findall(data)) == 1  # the universe plot
    caveats = _section_html(html, "caveats")
    assert "Survivorship" in caveats and "Market-cap proxy" in caveats and "Synthetic" not in caveats
    assert res.pdf is None and not (res.html.parent / "report.pdf").exists()


# --------------------------------------------------------------------------------------------------
# The real stages on a tiny synthetic experiment


@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
    return tiny_experiment(tmp_path_factory)


@pytest.fixture(scope="module")
def tiny_report(tiny):
    """The report of the tiny experiment, made by the real command line."""
    res = subprocess.run([sys.executable, "-m", "pipeline.report", "--config", str(tiny.config)],
                         cwd=tiny.root, capture_output=True, text=True, timeout=600)
    assert res.returncode == 0, res.stderr
    out = tiny.root / "reports" / "tiny"
    return {"html": (out / "report.html").read_text(), "pdf": out / "report.pdf",
            "json": json.loads((out / "report.json").read_text()), "dir": out}


EXPECTED_STATUS_FROM = {"data": ("panel",), "images": ("images",), "training": ("train",),
                        "metrics": ("evaluate",), "portfolios": ("evaluate",),
                        "benchmarks": ("evaluate",), "gradcam": ("gradcam",),
                        "ablations": ("ablations",)}
MIN_FIGURES = {"data": 1, "training": 1, "portfolios": 1, "benchmarks": 1, "gradcam": 1}


def test_sections_follow_the_artifacts(tiny, tiny_report):
    html, rep = tiny_report["html"], tiny_report["json"]
    tiny.require("panel")
    assert [s["title"] for s in rep["sections"]] == SECTION_TITLES
    for s in rep["sections"]:
        sec = _section_html(html, s["id"])
        assert s["title"] in sec
        imgs = DATA_URI.findall(sec)
        assert len(imgs) == s["figures"], s["id"]
        needs = EXPECTED_STATUS_FROM.get(s["id"])
        if needs is None:
            continue
        if all(tiny.ran.get(n) for n in needs):
            assert s["status"] in ("ok", "partial"), s
            assert s["figures"] >= MIN_FIGURES.get(s["id"], 0), s
        else:
            assert s["status"] == "not run", s
            assert f"CONFIG={tiny.config}" in sec and "Not run:" in sec


def test_every_figure_is_an_embedded_png_and_nothing_is_fetched(tiny, tiny_report):
    html = tiny_report["html"]
    tiny.require("panel")
    uris = DATA_URI.findall(html)
    assert len(uris) == sum(s["figures"] for s in tiny_report["json"]["sections"]) >= 1
    for u in uris:
        w, h = _png_size(base64.b64decode(u))
        assert w > 50 and h > 50
    # Self-contained: no external stylesheet, script, font or image.
    assert not re.search(r'(src|href)="(https?:|//|file:)', html)
    assert "<link" not in html and "<script" not in html and "url(" not in html


def test_images_section_shows_contact_sheets_and_rejections(tiny, tiny_report):
    tiny.require("images")
    sec = _section_html(tiny_report["html"], "images")
    sheet = tiny.root / "data" / "tiny" / "images" / "I20_month" / "contact_sheet.png"
    if sheet.exists():
        assert base64.b64encode(sheet.read_bytes()).decode() in sec  # byte for byte
    rej = json.loads((sheet.parent / "rejections.json").read_text())
    total = sum(sum(v.values()) for v in rej.values())
    assert "R1_short_history" in sec and f"<td>{total:,}</td>" in sec


def test_key_numbers_in_html_and_pdf(tiny, tiny_report):
    import pypdf

    tiny.require("panel")
    html = tiny_report["html"]
    # provenance of the model (from its model card) and of the report
    card = json.loads(next((tiny.root / "data" / "tiny" / "runs").glob("I20_R20*/model.json")).read_text())
    assert "Model trained at commit" in html and "Report built at commit" in html
    assert f"torch {card['provenance']['torch']}" in html
    reader = pypdf.PdfReader(tiny_report["pdf"])
    assert len(reader.pages) == tiny_report["json"]["pages"]
    texts = [p.extract_text() for p in reader.pages]
    # The sections follow the contents page, in order (short ones share a page).
    pages = [next(i for i, t in enumerate(texts) if f"{k}. {title}" in t)
             for k, title in enumerate(SECTION_TITLES, start=1)]
    assert pages == sorted(pages) and pages[0] == 1 and pages[-1] < len(reader.pages)
    meta = json.loads((tiny.root / "data" / "tiny" / "panel" / "meta.json").read_text())
    n_rows = f"{meta['n_rows']:,}"
    assert n_rows in _section_html(html, "data") and n_rows in texts[pages[1]]
    bayes = json.loads((tiny.root / "data" / "tiny" / "panel" / "bayes_accuracy.json").read_text())
    assert f"{bayes['20']:.3f}" in _section_html(html, "data")
    if tiny.ran.get("evaluate"):
        m = json.loads((tiny.root / "data" / "tiny" / "eval" / "I20_R20-is1999-2000-os2001-2003"
                        / "metrics.json").read_text())
        acc = f"{m['accuracy']:.3f}"
        assert acc in _section_html(html, "metrics")
        assert acc in "".join(texts[pages[4]:pages[5] + 1])
        # The ceiling the report compares with is the bound of the evaluated rows and label.
        b = m["bayes"]
        assert b["label"] == "ret_month" and 19 <= b["horizon_min"] <= b["horizon_max"] <= 23
        assert (f"Bayes-optimal accuracy of the evaluated test rows and their label (ret_month, "
                f"{b['horizon_min']}-{b['horizon_max']} records ahead) is {b['accuracy']:.3f}") in \
            _section_html(html, "caveats")
        assert f"{b['gain_recovered']:.3f}" in _section_html(html, "overview")
        assert f"{m['calibration']['ece']:.3f}" in _section_html(html, "metrics")
        assert 'alt="reliability"' in _section_html(html, "metrics")


def test_chromium_renders_the_html(tiny, tiny_report, tmp_path):
    chromium = shutil.which("chromium") or ("/usr/bin/chromium" if Path("/usr/bin/chromium").exists() else None)
    if chromium is None:
        pytest.skip("no /usr/bin/chromium (Debian: apt-get install chromium) for the headless render")
    flags = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
             "--no-first-run", f"--user-data-dir={tmp_path / 'profile'}", "--hide-scrollbars"]
    url = (tiny_report["dir"] / "report.html").as_uri()
    shot = tmp_path / "shot.png"
    r = subprocess.run([chromium, *flags, "--window-size=1200,2400", f"--screenshot={shot}", url],
                       capture_output=True, text=True, timeout=120)
    assert r.returncode == 0, r.stderr[-2000:]
    w, h = _png_size(shot.read_bytes())
    assert (w, h) == (1200, 2400)
    import matplotlib.image as mpimg

    px = mpimg.imread(shot)
    assert px.std() > 0.01  # something was drawn, not a blank page
    dom = subprocess.run([chromium, *flags, "--dump-dom", url], capture_output=True, text=True,
                         timeout=120)
    assert dom.returncode == 0
    for s in tiny_report["json"]["sections"]:
        assert f'id="{s["id"]}"' in dom.stdout
    # The parsed DOM still holds every embedded image.
    assert dom.stdout.count("data:image/png;base64,") == len(DATA_URI.findall(tiny_report["html"]))


MEASURE_JS = """<script>
window.addEventListener("load", () => {
  const main = document.querySelector("main") || document.body;
  const right = main.getBoundingClientRect().right;
  const out = [];
  for (const t of document.querySelectorAll("table")) {
    const r = t.getBoundingClientRect();
    const wrap = t.closest(".table-wrap");
    const hidden = wrap ? wrap.scrollWidth - wrap.clientWidth : 0;
    const sec = t.closest("section");
    out.push([sec ? sec.id : "", Math.round(r.right - right), hidden].join(":"));
  }
  document.body.setAttribute("data-table-overflow", out.join(" "));
});
</script>"""


def test_chromium_every_table_fits_the_column(tiny, tiny_report, tmp_path):
    """Measured in a real browser: no table (Table 18 included) reaches past the text column or
    hides columns behind a horizontal scroll bar, at a laptop's window width."""
    chromium = shutil.which("chromium") or ("/usr/bin/chromium" if Path("/usr/bin/chromium").exists() else None)
    if chromium is None:
        pytest.skip("no /usr/bin/chromium (Debian: apt-get install chromium) for the headless render")
    html = tiny_report["html"].replace("</body>", MEASURE_JS + "</body>")
    page = tmp_path / "measure.html"
    page.write_text(html)
    flags = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
             "--no-first-run", f"--user-data-dir={tmp_path / 'profile'}", "--window-size=1280,900"]
    dom = subprocess.run([chromium, *flags, "--dump-dom", page.as_uri()], capture_output=True, text=True,
                         timeout=120)
    assert dom.returncode == 0, dom.stderr[-2000:]
    found = re.search(r'data-table-overflow="([^"]*)"', dom.stdout)
    assert found, "the measuring script did not run"
    rows = [r.split(":") for r in found.group(1).split()]
    assert any(sid == "ablations" for sid, _, _ in rows), "Table 18 is not in the tiny report"
    assert len(rows) >= 10
    bad = [(sid, int(past), int(hidden)) for sid, past, hidden in rows if int(past) > 1 or int(hidden) > 1]
    assert not bad, f"tables past the column or scrolled (section, px past, px hidden): {bad}"


def test_cli_bad_config_exits_2(tmp_path):
    r = subprocess.run([sys.executable, "-m", "pipeline.report", "--config", str(tmp_path / "nope.yaml")],
                       cwd=REPO, capture_output=True, text=True, timeout=120)
    assert r.returncode == 2 and "config file not found" in r.stderr
