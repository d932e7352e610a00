"""The authors' published image files, both ways (docs/method.md 4.5).

Their layout, per year::

    {W}d_{freq}_has_vb_[{W}]_ma_{year}_images.dat            headerless uint8, (N, H, 3W) C order
    {W}d_{freq}_has_vb_[{W}]_ma_{year}_labels_w_delay.feather one row per image, same order

``[20]`` in those names is literal text (in a glob it is a character class, so names are matched
by listing the directory and comparing strings). Re-hosted copies are also accepted as
``..._has_vb_20_ma_...`` and ``..._has_vb_ma_...`` (and ``no_vb`` / ``None`` variants).
Label files come with 8 columns (``Date, StockID, MarketCap, Ret_5d, Ret_20d, Ret_60d, Ret_month,
EWMA_vol``) or 35; both map onto our label table (store.LABEL_TABLE_COLUMNS).
"""

from __future__ import annotations

import hashlib
import json
import logging
import re
from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.feather as feather

from pipeline.errors import InputError
from pipeline.images.store import (IMAGE_SHAPES, LABEL_TABLE_COLUMNS, RETURN_SUFFIXES,
                                   labels_from_returns, write_year)
from pipeline.io import StaleInputError, atomic_path, is_done, mark_done, read_json, write_json

log = logging.getLogger(__name__)

# Their column -> ours. Ret_month may also come as next_month_ret_0delay (METHOD 4.5).
COLUMN_MAP = {
    "StockID": "stock_id", "Date": "date", "MarketCap": "mktcap", "EWMA_vol": "ewma_vol",
    "Ret_5d": "ret_5d", "Ret_20d": "ret_20d", "Ret_60d": "ret_60d",
    "Ret_week": "ret_week", "Ret_month": "ret_month", "Ret_quarter": "ret_quarter",
}
REQUIRED = ["Date", "StockID"]
EIGHT_COLUMNS = ["Date", "StockID", "MarketCap", "Ret_5d", "Ret_20d", "Ret_60d", "Ret_month",
                 "EWMA_vol"]

_NAME = re.compile(
    r"^(?P<w>\d+)d_(?P<freq>week|month|quarter)_(?P<vb>has_vb|no_vb)_"
    r"(?:\[(?P<ma1>\d+|None)\]_|(?P<ma2>\d+|None)_)?ma_(?P<year>\d{4})_"
    r"(?P<kind>images\.dat|labels_w_delay\.feather)$")


def authors_stem(window: int, freq: str, year: int, volume: bool = True, ma: bool = True) -> str:
    """Their canonical file stem, e.g. ``20d_month_has_vb_[20]_ma_1993``."""
    return f"{window}d_{freq}_{'has_vb' if volume else 'no_vb'}_[{window if ma else 'None'}]_ma_{year}"


def find_authors_files(src_dir: str | Path, window: int, freq: str) -> dict[int, dict[str, Path]]:
    """{year: {"images": path, "labels": path}} for one (W, freq) in ``src_dir`` (not recursive).

    Raises FileNotFoundError when nothing matches or a year lacks one of its two files, and
    ValueError when a year matches more than one variant (e.g. both has_vb and no_vb).
    """
    src_dir = Path(src_dir)
    if not src_dir.is_dir():
        raise FileNotFoundError(f"{src_dir} is not a directory")
    found: dict[int, dict[str, Path]] = {}
    for p in sorted(src_dir.iterdir()):  # plain string comparison: '[20]' is no glob here
        m = _NAME.match(p.name)
        if not m or int(m["w"]) != window or m["freq"] != freq:
            continue
        kind = "images" if m["kind"] == "images.dat" else "labels"
        slot = found.setdefault(int(m["year"]), {})
        if kind in slot:
            raise InputError(f"{src_dir}: year {m['year']} has two {kind} files: "
                             f"{slot[kind].name} and {p.name}")
        slot[kind] = p
    if not found:
        raise FileNotFoundError(f"{src_dir}: no files named like "
                                f"{authors_stem(window, freq, 1993)}_images.dat")
    for y, slot in found.items():
        for kind in ("images", "labels"):
            if kind not in slot:
                raise FileNotFoundError(f"{src_dir}: year {y} has no {kind} file")
    return dict(sorted(found.items()))


def read_authors_labels(path: str | Path) -> pd.DataFrame:
    """Their label feather (8 or 35 columns, or ours exported) -> our label table columns.

    Missing return columns become NaN (label 2); labels are recomputed from the returns
    (METHOD 3.2), not copied.
    """
    path = Path(path)
    raw = feather.read_table(path).to_pandas()
    missing = [c for c in REQUIRED if c not in raw.columns]
    if missing:
        raise InputError(f"{path}: missing columns {missing}; have {list(raw.columns)}")
    out = pd.DataFrame(index=raw.index)
    sid = raw["StockID"]
    if sid.isna().any() or not np.all(np.mod(sid.to_numpy(dtype=np.float64), 1) == 0):
        i = int(np.flatnonzero(sid.isna().to_numpy() | (np.mod(sid.to_numpy(np.float64), 1) != 0))[0])
        raise InputError(f"{path}: StockID at row {i} is not an integer ({sid.iloc[i]!r})")
    out["stock_id"] = sid.to_numpy().astype(np.int32)
    out["date"] = pd.to_datetime(raw["Date"]).to_numpy().astype("datetime64[ns]")
    src = dict(COLUMN_MAP)
    if "Ret_month" not in raw.columns and "next_month_ret_0delay" in raw.columns:
        src["next_month_ret_0delay"] = "ret_month"
    for theirs, ours in src.items():
        if ours in ("stock_id", "date"):
            continue
        if theirs in raw.columns:
            out[ours] = raw[theirs].to_numpy(dtype=np.float64)
    for c in LABEL_TABLE_COLUMNS:
        if c.startswith(("mktcap", "ewma_vol", "ret_")) and c not in out.columns:
            out[c] = np.nan
    for s in RETURN_SUFFIXES:
        out[f"label_{s}"] = labels_from_returns(out[f"ret_{s}"].to_numpy())
    return out[LABEL_TABLE_COLUMNS].reset_index(drop=True)


def read_authors_images(path: str | Path, window: int, n_rows: int | None = None) -> np.ndarray:
    """Memory-map a headerless ``.dat`` as uint8 (N, H, 3W); checks size and row count."""
    path = Path(path)
    h, w3 = IMAGE_SHAPES[window]
    size = path.stat().st_size
    if size % (h * w3):
        raise InputError(f"{path}: {size} bytes is not a multiple of one {h}x{w3} image "
                         f"({h * w3} bytes)")
    n = size // (h * w3)
    if n_rows is not None and n != n_rows:
        raise InputError(f"{path}: {n} images but the label file has {n_rows} rows")
    if n == 0:
        return np.zeros((0, h, w3), dtype=np.uint8)
    return np.memmap(path, dtype=np.uint8, mode="r", shape=(n, h, w3))


def source_fingerprint(files: dict[int, dict[str, Path]]) -> dict[str, dict[str, int]]:
    """{file name: {"size": bytes, "mtime_ns": ...}} of the files an import reads.

    Size and modification time rather than a content hash: their image files are gigabytes a
    year, and a re-download or an edit changes at least one of the two.
    """
    out = {}
    for f in files.values():
        for path in f.values():
            st = path.stat()
            out[path.name] = {"size": int(st.st_size), "mtime_ns": int(st.st_mtime_ns)}
    return dict(sorted(out.items()))


def _import_hash(window: int, freq: str, fingerprint: dict) -> str:
    digest = hashlib.sha256(json.dumps(fingerprint, sort_keys=True).encode()).hexdigest()[:16]
    return f"authors:{window}:{freq}:{digest}"


def import_authors(src_dir: str | Path, dst_image_set_dir: str | Path, window: int,
                   freq: str) -> Path:
    """Convert their files into our image-set layout (images_{y}.npy + labels_{y}.parquet).

    Rows keep their order when already sorted by (stock_id, date), as published; otherwise they
    are sorted (images with them) and the fact is logged. rejections.json is written empty
    (their files carry no rejection counts); source.json records where the set came from and the
    size and modification time of every file read (source_fingerprint), so a consumer can refuse
    the set once the files change (check_authors_current). A rerun on unchanged files does nothing.
    """
    dst = Path(dst_image_set_dir)
    files = find_authors_files(src_dir, window, freq)
    fingerprint = source_fingerprint(files)
    h = _import_hash(window, freq, fingerprint)
    if is_done(dst, h):
        log.info("%s: already imported from unchanged files in %s", dst, src_dir)
        return dst
    total = 0
    for y, f in files.items():
        lab = read_authors_labels(f["labels"])
        imgs = read_authors_images(f["images"], window, len(lab))
        order = np.lexsort((lab["date"].to_numpy(), lab["stock_id"].to_numpy()))
        if (order != np.arange(len(order))).any():
            log.warning("%s: rows not sorted by (StockID, Date); sorted with their images",
                        f["labels"].name)
            lab = lab.iloc[order].reset_index(drop=True)
            imgs = np.asarray(imgs)[order]
        dup = (np.diff(lab["stock_id"].to_numpy()) == 0) & (np.diff(lab["date"].to_numpy()) == np.timedelta64(0))
        if dup.any():
            i = int(np.flatnonzero(dup)[0]) + 1
            raise InputError(f"{f['labels']}: duplicate (StockID, Date) at row {i}")
        write_year(dst, y, np.asarray(imgs), lab)
        total += len(lab)
    write_json(dst / "rejections.json", {})
    write_json(dst / "source.json", {"format": "authors", "src_dir": str(Path(src_dir).resolve()),
                                     "window": window, "freq": freq,
                                     "files": {str(y): {k: v.name for k, v in f.items()}
                                               for y, f in files.items()},
                                     "fingerprint": fingerprint})
    mark_done(dst, h, built_from="authors", n_images=total)
    return dst


def check_authors_current(image_set_dir: str | Path) -> None:
    """StaleInputError when an imported set no longer matches the authors' files it came from.

    The files are found again in the recorded ``src_dir``; a file that changed size or time, went
    missing, or a year that appeared or disappeared makes the set stale, named in the message.
    When ``src_dir`` no longer exists (the files were removed after the import) the set is kept
    and a warning says it could not be checked.
    """
    d = Path(image_set_dir)
    src = read_json(d / "source.json")
    recorded = src.get("fingerprint")
    src_dir = Path(src["src_dir"])
    if recorded is None:
        log.warning("%s was imported before imports recorded their files' sizes and times; it is "
                    "not checked against %s", d, src_dir)
        return
    if not src_dir.is_dir():
        log.warning("%s: the authors' files it was imported from (%s) are gone; the set is used "
                    "as imported", d, src_dir)
        return
    rerun = (f"import it again (pipeline.images.authors.import_authors({str(src_dir)!r}, "
             f"{str(d)!r}, {src['window']}, {src['freq']!r}))")
    try:
        now = source_fingerprint(find_authors_files(src_dir, int(src["window"]), src["freq"]))
    except FileNotFoundError as e:
        raise StaleInputError(f"the image set in {d} was imported from files that changed: {e}; "
                              f"{rerun}") from None
    changed = sorted(n for n in recorded.keys() | now.keys() if recorded.get(n) != now.get(n))
    if changed:
        what = "; ".join(f"{n} ({'new' if n not in recorded else 'missing' if n not in now else 'changed'})"
                         for n in changed[:5])
        raise StaleInputError(f"the image set in {d} is stale: the authors' files in {src_dir} "
                              f"changed since the import ({what}); {rerun}")
    if not is_done(d, _import_hash(int(src["window"]), src["freq"], now)):
        raise StaleInputError(f"the image set in {d} is unfinished or its marker does not match "
                              f"its source files; {rerun}")


def _set_variant(image_set_dir: Path) -> tuple[bool, bool]:
    """(volume, ma) of a set, from its config.yaml when present (the baseline otherwise)."""
    p = image_set_dir / "config.yaml"
    if not p.exists():
        return True, True
    import yaml

    images = (yaml.safe_load(p.read_text()) or {}).get("images", {})
    return bool(images.get("volume", True)), bool(images.get("ma", True))


def export_authors(image_set_dir: str | Path, dst_dir: str | Path) -> list[Path]:
    """Write an image set in their layout: ``.dat`` + ``_labels_w_delay.feather`` per year.

    The feather holds their 8 columns (MarketCap in the panel's units) plus Ret_week and
    Ret_quarter, which their 35-column files also use; reading it back gives our table exactly.
    Returns the written paths.
    """
    from pipeline.images.store import ImageSet

    src = ImageSet(Path(image_set_dir))
    dst = Path(dst_dir)
    volume, ma = _set_variant(src.directory)
    h, w3 = src.shape
    window = {v: k for k, v in IMAGE_SHAPES.items()}[(h, w3)]
    freq = _set_freq(src.directory)
    written = []
    for y in src.years:
        stem = authors_stem(window, freq, y, volume, ma)
        imgs = src.images(y)
        with atomic_path(dst / f"{stem}_images.dat") as tmp:
            np.ascontiguousarray(imgs, dtype=np.uint8).tofile(tmp)
        lab = src.labels(y)
        table = pd.DataFrame({
            "Date": lab["date"].to_numpy().astype("datetime64[ns]"),
            "StockID": lab["stock_id"].to_numpy().astype(np.int64),
            "MarketCap": lab["mktcap"], "Ret_5d": lab["ret_5d"], "Ret_20d": lab["ret_20d"],
            "Ret_60d": lab["ret_60d"], "Ret_month": lab["ret_month"], "EWMA_vol": lab["ewma_vol"],
            "Ret_week": lab["ret_week"], "Ret_quarter": lab["ret_quarter"],
        })
        with atomic_path(dst / f"{stem}_labels_w_delay.feather") as tmp:
            feather.write_feather(pa.Table.from_pandas(table, preserve_index=False), tmp)
        written += [dst / f"{stem}_images.dat", dst / f"{stem}_labels_w_delay.feather"]
    return written


def _set_freq(directory: Path) -> str:
    """The sampling frequency of a set: from source.json / _DONE.json, else the folder name."""
    for name in ("source.json", "_DONE.json"):
        p = directory / name
        if p.exists():
            info = read_json(p)
            if "freq" in info:
                return str(info["freq"])
            if "image_set" in info:
                return str(info["image_set"]).split("/")[1]
    m = re.search(r"_(week|month|quarter)$", directory.name)
    if not m:
        raise InputError(f"{directory}: cannot tell the set's frequency (no _DONE.json or "
                         "source.json, folder not named I<W>_<freq>)")
    return m.group(1)
