"""Image sets on disk (ARCHITECTURE.md contract 2).

Layout of one image set, e.g. ``data/<experiment>/images/I20_month/``::

    images_1993.npy       uint8 (N, H, 3W), 0 background / 255 ink; np.load(mmap_mode="r")
    labels_1993.parquet   N rows aligned with the array, sorted by (stock_id, date)
    rejections.json       {year: {reason: count}}: windows that yielded no image (METHOD 2.7)
    provenance.json       how the image stage made it: stage, image_set, inputs (panel folder and
                          marker hash), commit, package versions, machine (not in the settings hash)
    config.yaml           resolved config;  _DONE.json  completion marker

Label table columns (one row per image):
    stock_id int32; date datetime64 (the image date = last chart day, a period end);
    mktcap float64 (at the image date; proxy for free data); ewma_vol float64 (a variance, METHOD 3.3);
    ret_5d, ret_20d, ret_60d (records ahead), ret_week, ret_month, ret_quarter (to the next period
    end) float64, NaN = missing; label_<same suffix> int8: 1 up (ret > 0), 0 down, 2 missing.
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import cached_property
from pathlib import Path

import numpy as np
import pandas as pd

from pipeline.config import FREQUENCIES, HORIZON_FREQUENCY
from pipeline.errors import InputError
from pipeline.io import read_json, write_npy, write_parquet

IMAGE_SHAPES = {5: (32, 15), 20: (64, 60), 60: (96, 180)}
# The labelled returns: h trading days from the image date ("5d", "20d", "60d"), then the calendar
# periods ("week", "month", "quarter").
RETURN_SUFFIXES = (*(f"{h}d" for h in HORIZON_FREQUENCY), *FREQUENCIES)
RETURN_COLUMNS = [f"ret_{s}" for s in RETURN_SUFFIXES]
LABEL_COLUMNS = [f"label_{s}" for s in RETURN_SUFFIXES]
LABEL_TABLE_COLUMNS = ["stock_id", "date", "mktcap", "ewma_vol", *RETURN_COLUMNS, *LABEL_COLUMNS]


def label_suffix(horizon: int, label_return: str = "period") -> str:
    """Which return a model of this horizon learns: ``month`` for R20 (period) or ``20d`` (records)."""
    return HORIZON_FREQUENCY[horizon] if label_return == "period" else f"{horizon}d"


def labels_from_returns(ret: np.ndarray) -> np.ndarray:
    """1 if ret > 0, 0 if ret <= 0, 2 if missing (METHOD 3.2)."""
    out = np.where(ret > 0, 1, 0).astype(np.int8)
    out[np.isnan(ret)] = 2
    return out


def write_year(directory: str | Path, year: int, images: np.ndarray, labels: pd.DataFrame) -> None:
    """Write one year's array and label table (row-aligned), each atomically."""
    if len(images) != len(labels):
        raise InputError(f"year {year}: {len(images)} images but {len(labels)} label rows")
    directory = Path(directory)
    write_npy(directory / f"images_{year}.npy", np.ascontiguousarray(images, dtype=np.uint8))
    write_parquet(directory / f"labels_{year}.parquet", labels.reset_index(drop=True))


@dataclass
class ImageSet:
    """Read access to one image set; arrays are memory-mapped, never loaded whole."""

    directory: Path

    def __post_init__(self) -> None:
        self.directory = Path(self.directory)
        if not self.directory.is_dir():
            raise FileNotFoundError(f"no image set at {self.directory}: run `make images` first")

    @cached_property
    def years(self) -> list[int]:
        return sorted(int(p.stem.split("_")[1]) for p in self.directory.glob("images_*.npy"))

    def images(self, year: int) -> np.ndarray:
        """uint8 (N, H, 3W) memory map of one year."""
        return np.load(self.directory / f"images_{year}.npy", mmap_mode="r")

    def labels(self, year: int, columns: list[str] | None = None) -> pd.DataFrame:
        return pd.read_parquet(self.directory / f"labels_{year}.parquet", columns=columns)

    def count(self, year: int) -> int:
        return int(self.images(year).shape[0])

    @property
    def shape(self) -> tuple[int, int]:
        """(H, 3W) of every image in the set."""
        return tuple(self.images(self.years[0]).shape[1:])  # type: ignore[return-value]

    def rejections(self) -> dict:
        p = self.directory / "rejections.json"
        return read_json(p) if p.exists() else {}

    def provenance(self) -> dict:
        """``provenance.json`` (written by the image stage; {} for a set made otherwise or before)."""
        p = self.directory / "provenance.json"
        return read_json(p) if p.exists() else {}
