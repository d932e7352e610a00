"""``make fetch-data`` (``python -m pipeline.fetch``): download and unpack the free Stooq US daily
bulk file into ``data/raw/`` so that a clone without ``../shared`` can build the real panel.

    fetch_archive(url, dest, sha256=None) -> folder the archive was unpacked into

The archive is streamed to a temporary file beside the destination (with a progress bar on a
terminal), its SHA-256 checked when one is given (a mismatch deletes it and names both hashes),
unpacked (zip or tar, by content) into a temporary folder that is renamed into place only when
complete, and recorded with a completion marker holding the URL and the hash: a rerun with the
same URL skips, an interrupted one starts over and leaves nothing half-written. Raw data is never
modified after that. Point ``panel.path`` at the unpacked folder (``panel.source: stooq`` reads
the bulk layout ``data/daily/us/...``).
"""

from __future__ import annotations

import argparse
import hashlib
import logging
import shutil
import sys
import tarfile
import tempfile
import urllib.error
import urllib.request
import zipfile
from pathlib import Path

from pipeline.errors import InputError
from pipeline.io import is_done, mark_done
from pipeline.progress import progress

log = logging.getLogger(__name__)

STOOQ_US_DAILY = "https://static.stooq.com/db/h/d_us_txt.zip"
CHUNK = 1 << 20


def download(url: str, path: Path, timeout: float = 60.0) -> str:
    """Stream ``url`` to ``path``; returns the SHA-256 of the bytes written."""
    h = hashlib.sha256()
    try:
        with urllib.request.urlopen(url, timeout=timeout) as r, open(path, "wb") as out:  # noqa: S310
            total = int(r.headers.get("Content-Length") or 0) or None
            with progress(total=total, unit="B", unit_scale=True, desc=Path(url).name) as bar:
                while chunk := r.read(CHUNK):
                    out.write(chunk)
                    h.update(chunk)
                    bar.update(len(chunk))
    except (urllib.error.URLError, OSError) as e:
        raise InputError(f"cannot download {url}: {e}") from None
    return h.hexdigest()


def unpack(archive: Path, into: Path) -> None:
    """Unpack a zip or tar archive (recognised by content) into ``into``, refusing members that
    would land outside it."""
    root = into.resolve()
    if zipfile.is_zipfile(archive):
        with zipfile.ZipFile(archive) as z:
            for name in z.namelist():
                if not (root / name).resolve().is_relative_to(root):
                    raise InputError(f"{archive}: member {name!r} would be written outside {into}")
            z.extractall(into)
    elif tarfile.is_tarfile(archive):
        with tarfile.open(archive) as t:
            t.extractall(into, filter="data")  # the data filter refuses paths outside `into`
    else:
        raise InputError(f"{archive}: neither a zip nor a tar archive")


def fetch_archive(url: str, dest: Path, sha256: str | None = None) -> Path:
    """Download ``url`` and unpack it into ``dest`` (skipped when done for the same URL and hash)."""
    dest = Path(dest)
    key = f"{url} {sha256 or ''}"
    if is_done(dest, key):
        log.info("%s already holds %s: skipping", dest, url)
        return dest
    if dest.exists() and any(p.name != "_DONE.json" for p in dest.iterdir()):
        raise InputError(f"{dest} exists and holds other files: choose another --dest or remove it")
    dest.parent.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(prefix=f".{dest.name}.", dir=dest.parent) as tmp:
        archive = Path(tmp) / "archive"
        got = download(url, archive)
        if sha256 and got != sha256.lower():
            raise InputError(f"{url}: SHA-256 {got} does not match the expected {sha256}; "
                             "nothing was kept")
        staged = Path(tmp) / "unpacked"
        unpack(archive, staged)
        if dest.exists():
            shutil.rmtree(dest)
        staged.rename(dest)
    mark_done(dest, key, url=url, sha256=got)
    log.info("%s -> %s (SHA-256 %s)", url, dest, got)
    return dest


def main(argv: list[str] | None = None) -> None:
    from pipeline.cli import setup_logging

    p = argparse.ArgumentParser(description="Download and unpack the free Stooq US daily bulk file")
    p.add_argument("--url", default=STOOQ_US_DAILY, help="archive to fetch (zip or tar)")
    p.add_argument("--sha256", default=None, help="expected SHA-256 of the archive (checked if given)")
    p.add_argument("--dest", default="data/raw/stooq-us-daily", help="folder to unpack into")
    a = p.parse_args(argv)
    setup_logging()
    try:
        out = fetch_archive(a.url, Path(a.dest), a.sha256)
    except InputError as e:
        print(f"error: {e}", file=sys.stderr)
        raise SystemExit(2) from None
    print(f"unpacked into {out}; build the panel with: make panel CONFIG=<config> "
          f"SET=\"panel.source=stooq panel.path={out}\"")


if __name__ == "__main__":
    main()
