"""make fetch-data against a local HTTP server: download, checksum, unpack, skip, refusals."""

from __future__ import annotations

import functools
import hashlib
import http.server
import subprocess
import sys
import threading
import zipfile

import pytest

from pipeline.errors import InputError
from pipeline.fetch import fetch_archive


@pytest.fixture()
def server(tmp_path):
    root = tmp_path / "www"
    root.mkdir()
    with zipfile.ZipFile(root / "d_us_txt.zip", "w") as z:
        z.writestr("data/daily/us/nyse stocks/1/aaa.us.txt",
                   "<TICKER>,<PER>,<DATE>,<TIME>,<OPEN>,<HIGH>,<LOW>,<CLOSE>,<VOL>,<OPENINT>\n"
                   "AAA.US,D,20190102,000000,10,11,9,10,100,0\n"
                   "AAA.US,D,20190103,000000,10,11,9,10.5,100,0\n")
    (root / "not_an_archive.zip").write_bytes(b"hello")
    with zipfile.ZipFile(root / "evil.zip", "w") as z:
        z.writestr("../outside.txt", "x")
    handler = functools.partial(http.server.SimpleHTTPRequestHandler, directory=str(root))
    handler.log_message = lambda *a, **k: None
    httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    t = threading.Thread(target=httpd.serve_forever, daemon=True)
    t.start()
    yield f"http://127.0.0.1:{httpd.server_address[1]}", root
    httpd.shutdown()


def test_download_checksum_unpack_and_skip(server, tmp_path):
    url, root = server
    sha = hashlib.sha256((root / "d_us_txt.zip").read_bytes()).hexdigest()
    dest = tmp_path / "data" / "raw" / "stooq"
    out = fetch_archive(f"{url}/d_us_txt.zip", dest, sha)
    f = out / "data" / "daily" / "us" / "nyse stocks" / "1" / "aaa.us.txt"
    assert f.read_text().startswith("<TICKER>")
    assert not [p for p in dest.parent.iterdir() if p.name.startswith(".")]  # no temporary left
    stamp = f.stat().st_mtime_ns
    fetch_archive(f"{url}/d_us_txt.zip", dest, sha)  # done: skipped, nothing rewritten
    assert f.stat().st_mtime_ns == stamp


def test_refusals_leave_nothing(server, tmp_path):
    url, _ = server
    dest = tmp_path / "raw"
    with pytest.raises(InputError, match="does not match the expected"):
        fetch_archive(f"{url}/d_us_txt.zip", dest, "0" * 64)
    with pytest.raises(InputError, match="neither a zip nor a tar"):
        fetch_archive(f"{url}/not_an_archive.zip", dest)
    with pytest.raises(InputError, match="outside"):
        fetch_archive(f"{url}/evil.zip", dest)
    with pytest.raises(InputError, match="cannot download"):
        fetch_archive(f"{url}/missing.zip", dest)
    assert not dest.exists() and not (tmp_path / "outside.txt").exists()
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".")]


def test_cli(server, tmp_path):
    url, _ = server
    r = subprocess.run([sys.executable, "-m", "pipeline.fetch", "--url", f"{url}/d_us_txt.zip",
                        "--dest", str(tmp_path / "raw")], capture_output=True, text=True, timeout=120)
    assert r.returncode == 0 and "panel.path=" in r.stdout
    r = subprocess.run([sys.executable, "-m", "pipeline.fetch", "--url", f"{url}/missing.zip",
                        "--dest", str(tmp_path / "raw2")], capture_output=True, text=True, timeout=120)
    assert r.returncode == 2 and r.stderr.startswith("error: cannot download") and "Traceback" not in r.stderr


def test_the_fetched_folder_builds_a_panel(server, tmp_path):
    from pipeline.config import load_config
    from pipeline.panel.build import build_panel

    url, _ = server
    out = fetch_archive(f"{url}/d_us_txt.zip", tmp_path / "raw" / "stooq-us-daily")
    df, stocks, meta = build_panel(load_config(None, ["panel.source=stooq", f"panel.path={out}",
                                                      "panel.start=2019-01-01"]))
    assert list(stocks["ticker"]) == ["AAA"] and meta.counts["files_read"] == 1
