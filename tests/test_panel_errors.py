"""Bad raw input: one error type, naming the file, the 1-based line (text) or row (Parquet) and
the column; never a raw pandas traceback; raw files never modified."""

from __future__ import annotations

import gzip
import hashlib
import os
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from pipeline.config import ConfigError, load_config
from pipeline.panel.build import build_panel
from pipeline.panel.clean import PanelInputError

FIX = Path(__file__).parent / "fixtures" / "panel"
HEAD = "<TICKER>,<PER>,<DATE>,<TIME>,<OPEN>,<HIGH>,<LOW>,<CLOSE>,<VOL>,<OPENINT>"
GOOD = "AAA.US,D,20190102,000000,10,11,9,10,100,0"


def bulk(tmp_path: Path, *lines: str, header: str = HEAD) -> Path:
    folder = tmp_path / "data" / "daily" / "us" / "nyse stocks" / "1"
    folder.mkdir(parents=True)
    f = folder / "aaa.us.txt"
    f.write_text("\n".join([header, *lines]) + "\n")
    return f


def build(source: str, path: Path, *sets: str):
    return build_panel(load_config(None, [f"panel.source={source}", f"panel.path={path}",
                                          "panel.start=2019-01-01", *sets]))


def expect(source: str, path: Path, file: Path, where: str, column: str | None, text: str):
    with pytest.raises(PanelInputError) as e:
        build(source, path)
    msg = str(e.value)
    assert str(file) in msg and where in msg and text in msg, msg
    if column:
        assert repr(column) in msg, msg
    assert "Traceback" not in msg
    return msg


@pytest.mark.parametrize("line3, column, text", [
    ("AAA.US,D,20190230,000000,10,11,9,10,100,0", "<DATE>", "not a valid date"),
    ("AAA.US,D,2019-01-03,000000,10,11,9,10,100,0", "<DATE>", "not a valid date"),
    ("AAA.US,D,20190103,000000,10,11,9,abc,100,0", "<CLOSE>", "'abc' is not a number"),
    ("AAA.US,D,20190103,000000,10,,9,10,100,0", "<HIGH>", "empty value"),
    ("AAA.US,D,20190103,000000,-10,11,9,10,100,0", "<OPEN>", "negative value"),
    ("AAA.US,D,20190103,000000,10,11,9,10,-5,0", "<VOL>", "negative value"),
    ("AAA.US,W,20190103,000000,10,11,9,10,100,0", "<PER>", "only daily"),
    ("BBB.US,D,20190103,000000,10,11,9,10,100,0", "<TICKER>", "differs"),
    ("AAA.US,D,20190103,000000,10,11,9,10", None, "8 fields, the header has 10"),
    ("", None, "empty line"),
])
def test_stooq_bad_cells_name_file_line_column(tmp_path, line3, column, text):
    f = bulk(tmp_path, GOOD, line3, "AAA.US,D,20190104,000000,10,11,9,10,100,0")
    expect("stooq", tmp_path, f, "line 3", column, text)


def test_stooq_missing_column_and_foreign_header(tmp_path):
    f = bulk(tmp_path, "AAA.US,D,20190102,000000,10,11,9,10,0",
             header=HEAD.replace("<VOL>,", ""))
    msg = expect("stooq", tmp_path, f, "line 1", None, "neither Stooq")
    # A second, mismatching file in an otherwise valid Stooq folder: named with its header.
    g = f.parent / "bbb.us.txt"
    f.write_text(HEAD + "\n" + GOOD + "\n")
    g.write_text("Date,Open,High,Low,Close,Volume,OpenInt\n2019-01-02,1,1,1,1,1,0\n")
    msg = expect("stooq", tmp_path, g, "line 1", None, "is not Stooq's")
    assert "Date" in msg


def test_kaggle_bad_date_and_yahoo_text(tmp_path):
    k = tmp_path / "k" / "Stocks"
    k.mkdir(parents=True)
    f = k / "a.us.txt"
    f.write_text("Date,Open,High,Low,Close,Volume,OpenInt\n2019-01-02,1,1,1,1,1,0\n"
                 "2019-13-02,1,1,1,1,1,0\n")
    expect("stooq", tmp_path / "k", f, "line 3", "Date", "not a valid date")
    y = tmp_path / "y"
    y.mkdir()
    g = y / "AAA.csv"
    g.write_text("Date,Open,High,Low,Close,Adj Close,Volume\n2019-01-02,1,1,1,1,1,10\n"
                 "2019-01-03,1,1,1,n/a,1,10\n")
    expect("yahoo", y, g, "line 3", "Close", "'n/a' is not a number")
    g.write_text("Date,Open,High,Low,Close,Volume\n2019-01-02,1,1,1,1,10\n")
    expect("yahoo", y, g, "line 1", "Adj Close", "missing")


def extract(path: Path, **override) -> None:
    cols = {"ticker": pa.array(["A.US", "A.US", "A.US"]).dictionary_encode(),
            "date": pa.array(pd.to_datetime(["2019-01-02", "2019-01-03", "2019-01-04"])
                             .to_numpy().astype("datetime64[us]")),
            "open": pa.array([1, 1, 1], pa.float32()), "high": pa.array([1, 1, 1], pa.float32()),
            "low": pa.array([1, 1, 1], pa.float32()), "close": pa.array([1, 1, 1], pa.float32()),
            "vol": pa.array([1, 1, 1], pa.float32()),
            "exch": pa.array(["nyse stocks"] * 3).dictionary_encode()}
    cols.update(override)
    pq.write_table(pa.table({k: v for k, v in cols.items() if v is not None}), path)


@pytest.mark.parametrize("override, where, column, text", [
    ({"vol": None}, "schema", None, "missing column(s) ['vol']"),
    ({"low": pa.array([1, -1, 1], pa.float32())}, "row 2", "low", "negative value"),
    ({"close": pa.array([1, None, 1], pa.float32())}, "row 2", "close", "missing value"),
    ({"high": pa.array(["1", "x", "1"])}, "all rows", "high", "expected numbers"),
    ({"date": pa.array(["2019-01-02", "2019-01-03", "nope"])}, "row 3", "date", "not a valid"),
])
def test_parquet_extract_errors(tmp_path, override, where, column, text):
    p = tmp_path / "x.parquet"
    extract(p, **override)
    expect("stooq", p, p, where, column, text)


CRSP_HEAD = "PERMNO,date,OPENPRC,ASKHI,BIDLO,PRC,VOL,RET,SHROUT,EXCHCD,SHRCD"


@pytest.mark.parametrize("line3, where, column, text", [
    ("10001,19930105,10,11,9,10,100,0.01,5,1,10", "line 3", "PERMNO/date", "duplicate of line 2"),
    ("10001,19930230,10,11,9,10,100,0.01,5,1,10", "line 3", "date", "not a valid date"),
    ("10001,19930106,10,11,9,ten,100,0.01,5,1,10", "line 3", "PRC", "'ten' is not a number"),
    ("10001,19930106,10,11,9,10,100,Z,5,1,10", "line 3", "RET", "neither a number nor"),
    ("10001,19930106,10,11,9,10,-5,0.01,5,1,10", "line 3", "VOL", "negative volume"),
    ("10001,19930106,10,11,9,10,100,0.01,5,1.5,10", "line 3", "EXCHCD", "not an integer code"),
    (",19930106,10,11,9,10,100,0.01,5,1,10", "line 3", "PERMNO", "missing value"),
])
def test_crsp_errors(tmp_path, line3, where, column, text):
    f = tmp_path / "dsf.csv"
    f.write_text(f"{CRSP_HEAD}\n10001,19930105,10,11,9,10,100,0.01,5,1,10\n{line3}\n")
    expect("crsp", f, f, where, column, text)


def test_crsp_missing_columns_named(tmp_path):
    f = tmp_path / "dsf.csv"
    f.write_text("PERMNO,date,PRC,RET\n10001,19930105,10,0.01\n")
    msg = expect("crsp", f, f, "line 1", None, "missing column(s)")
    assert "'OPENPRC'" in msg and "'SHRCD'" in msg and "'PRC'" not in msg.split("header")[0]


def test_missing_path_and_unset_path(tmp_path):
    with pytest.raises(FileNotFoundError, match="does not exist"):
        build("stooq", tmp_path / "nowhere")
    with pytest.raises(ConfigError, match="panel.path"):
        build_panel(load_config(None, ["panel.source=crsp"]))
    with pytest.raises(ConfigError, match="panel.end = 'end of 2019' is not a date"):
        build("stooq", FIX / "stooq_bulk", "panel.end=end of 2019")


def test_raw_inputs_never_modified(tmp_path):
    def digest(folder: Path) -> dict[str, str]:
        return {str(p.relative_to(folder)): hashlib.md5(p.read_bytes()).hexdigest()
                for p in sorted(folder.rglob("*")) if p.is_file()}

    before = digest(FIX)
    build("stooq", FIX / "stooq_bulk", "panel.end=2019-01-31")
    build("yahoo", FIX / "yahoo")
    assert digest(FIX) == before


def test_cli_reports_one_line_and_exit_code_2(tmp_path):
    f = bulk(tmp_path / "raw", GOOD, "AAA.US,D,20190103,000000,10,11,9,abc,100,0")
    cfg = tmp_path / "bad.yaml"
    cfg.write_text(f"name: bad\ndata_dir: {tmp_path / 'data'}\n"
                   f"panel: {{source: stooq, path: '{tmp_path / 'raw'}', start: 2019-01-01}}\n")
    r = subprocess.run([sys.executable, "-m", "pipeline.panel", "--config", str(cfg)],
                       capture_output=True, text=True, timeout=120)
    assert r.returncode == 2
    err = r.stderr.strip().splitlines()
    assert err[-1].startswith("error: ") and f"{f}: line 3, column '<CLOSE>'" in err[-1]
    assert "Traceback" not in r.stderr
    assert not (tmp_path / "data").exists()  # nothing written for a failed build
    shutil.rmtree(tmp_path / "raw")


# --------------------------------------------------------------------------------------------------
# Files that cannot be read at all: named, with what is wrong, never a traceback


CRSP_ROW = "10001,19930105,10,11,9,10,100,0.01,5,1,10"  # in CRSP_HEAD's column order


def test_unreadable_files_are_named(tmp_path):
    f = bulk(tmp_path, GOOD)
    if os.geteuid() != 0:  # root reads any file: the permission case cannot be staged as root
        f.chmod(0)
        try:
            expect("stooq", tmp_path / "data", f, "file", None, "permission denied")
        finally:
            f.chmod(0o644)
    folder = tmp_path / "crsp_dir"
    folder.mkdir()
    expect("crsp", folder, folder, "file", None, "is a folder, not a file")


def test_corrupt_parquet_body_is_named(tmp_path):
    p = tmp_path / "crsp.parquet"
    rng = np.random.default_rng(0)
    df = pd.DataFrame({c: rng.random(5000) for c in CRSP_HEAD.split(",")})
    df["date"] = 19930105
    pq.write_table(pa.Table.from_pandas(df), p, compression="none", use_dictionary=False)
    raw = bytearray(p.read_bytes())
    a, b = len(raw) // 4, len(raw) // 2  # inside the data pages, far from the footer
    raw[a:b] = b"\xff" * (b - a)
    p.write_bytes(bytes(raw))
    assert pq.read_schema(p).names  # the footer still reads
    expect("crsp", p, p, "file", None, "cannot be read")


@pytest.mark.parametrize("encode, text", [
    (lambda s: s.encode("utf-16"), "UTF-16 text: save it as UTF-8"),
    (lambda s: gzip.compress(s.encode()), "gzip-compressed: decompress it first"),
])
def test_encoding_and_compression_are_reported_as_such(tmp_path, encode, text):
    f = bulk(tmp_path, GOOD)
    f.write_bytes(encode(f.read_text()))
    expect("stooq", tmp_path / "data", f, "file", None, text)
    c = tmp_path / "crsp.csv"
    c.write_bytes(b"\xff\xfe" + f"{CRSP_HEAD}\n{CRSP_ROW}\n".encode("utf-16-le"))
    expect("crsp", c, c, "file", None, "UTF-16 text")


def test_numbers_in_messages_are_plain():
    from pipeline.panel.clean import input_error

    msg = str(input_error("f.csv", "row 3", "PRC", f"{np.float64(-126.36)!r} and {np.int64(7)!r}"))
    assert msg == "f.csv: row 3, column 'PRC': -126.36 and 7"


def test_an_empty_panel_names_the_input_the_window_and_the_rules(tmp_path):
    f = tmp_path / "dsf.csv"
    f.write_text(f"{CRSP_HEAD}\n{CRSP_ROW}\n")
    with pytest.raises(PanelInputError) as e:  # the share-code filter keeps nothing
        build("crsp", f, "panel.shrcd=[12]", "panel.start=1993-01-01")
    msg = str(e.value)
    assert str(f) in msg and "empty after cleaning" in msg and "share codes [12]" in msg
    assert "panel.start 1993-01-01" in msg and "rows removed by rule" in msg
    h = tmp_path / "hdr.csv"
    h.write_text(f"{CRSP_HEAD}\n")  # header only
    with pytest.raises(PanelInputError, match=r"hdr.csv.*empty after cleaning"):
        build("crsp", h)
    with pytest.raises(ConfigError, match=r"'panel.start' 2019-06-01 is after 'panel.end' 2019-01-01"):
        load_config(None, ["panel.start=2019-06-01", "panel.end=2019-01-01"])


def test_crsp_negative_bidlo_and_high_below_low_are_counted(tmp_path):
    f = tmp_path / "dsf.csv"
    # CRSP_HEAD order: PERMNO,date,OPENPRC,ASKHI,BIDLO,PRC,VOL,RET,SHROUT,EXCHCD,SHRCD
    f.write_text(f"{CRSP_HEAD}\n"
                 "10001,19930105,10,11,-9,10,100,0.01,5,1,10\n"   # negative BIDLO, trade PRC
                 "10001,19930106,10,9,11,10,100,0.01,5,1,10\n"    # high 9 below low 11
                 "10001,19930107,10,11,9,-10,100,0.01,5,1,10\n")  # a bid/ask PRC
    df, _, meta = build("crsp", f, "panel.start=1993-01-01")
    assert meta.counts["negative_bidlo_abs_with_trade_prc"] == 1
    assert meta.counts["negative_prc_abs"] == 1
    assert meta.counts["high_below_low_kept"] == 1
    assert (df["low"] > 0).all() and df["low"].iloc[0] == 9.0
