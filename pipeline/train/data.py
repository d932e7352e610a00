"""Training data: which in-sample images a model sees, their labels and normalisation.

Nothing here loads all years into memory: the in-sample pool is an *index* of (year, row, label)
triples into the image set's per-year memory maps (``pipeline.images.store.ImageSet``), and
:class:`MemmapImages` reads one batch of rows at a time.

Selection of the in-sample pool (docs/method.md 3.2, 3.4):
    1. years from ``pipeline.config.split_years(cfg.train)`` (in-sample range) present in the set;
    2. label = ``label_<suffix>``, suffix = ``store.label_suffix(horizon, label_return)``;
       drop label 2 (missing return) unless ``reproduce_nan_as_down`` (then 2 -> 0, the reference
       code's bug, for parity tests only);
    3. drop ``ewma_vol == 0``;
    4. leakage guard: drop images whose label window ends after the last in-sample day
       (:func:`label_window_end`; equals the fixed Dec 24 / Dec 1 / Oct 1 rule of METHOD 3.4 on the
       real trading calendar, see :func:`fixed_cutoff_keep`);
    5. optional deterministic subsample to ``max_train_images`` (seeded by ``cfg.train.seed``).
For a regression target (``train.target``, METHOD 3.6) the same images are kept (a missing return is
label 2) and the value learnt is ``pipeline.images.labels.regression_target`` of ``ret_<suffix>``;
images whose target is still undefined (a vol-adjusted target without a positive EWMA variance)
are dropped too and counted as ``dropped_target_missing``.

Normalisation: ``x = (img/255 - mean)/std`` with scalar mean/std (population std) of the pool's
pixels (``norm: insample``), or the reference's per-year statistics of the first 50,000 images of
each year file (``norm: per_year_first50k``, test years included).
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd
import torch

from pipeline.errors import InputError
from pipeline.config import FREQUENCIES, Config, is_regression, split_years
from pipeline.images.labels import regression_target
from pipeline.images.store import ImageSet, label_suffix
from pipeline.paths import images_dir

log = logging.getLogger(__name__)

PERIOD_SUFFIXES = FREQUENCIES  # label suffixes of period returns (the others count records)
# METHOD 3.4 fixed rule: first (month, day) of the last in-sample year whose images are dropped.
FIXED_CUTOFF = {5: (12, 24), 20: (12, 1), 60: (10, 1)}


# --------------------------------------------------------------------------------------------------
# Leakage guard


def label_window_end(dates: np.ndarray, suffix: str, period_ends: np.ndarray | None = None
                     ) -> np.ndarray:
    """Last trading day whose return enters the label of an image dated ``dates``.

    dates: datetime64[D] (n,) image dates. suffix: label suffix ("week", "month", "quarter" or
    "5d"/"20d"/"60d"). period_ends: sorted unique datetime64[D] of every period end of the image
    set (the image dates of all stocks); for period labels the window ends at the next period end
    after the image date (NaT when the calendar has none: unknown, treated as after any day).
    Record labels ("20d") end ``h`` business days later (Mon-Fri; holidays ignored, so this is a
    lower bound of the true end by at most the number of holidays in the window).
    Returns datetime64[D] (n,).
    """
    dates = np.asarray(dates, dtype="datetime64[D]")
    if suffix in PERIOD_SUFFIXES:
        if period_ends is None:
            raise ValueError("label_window_end: period labels need the period-end calendar")
        cal = np.asarray(period_ends, dtype="datetime64[D]")
        pos = np.searchsorted(cal, dates, side="right")
        out = np.full(dates.shape, np.datetime64("NaT"), dtype="datetime64[D]")
        ok = pos < len(cal)
        out[ok] = cal[pos[ok]]
        return out
    try:
        h = int(suffix.removesuffix("d"))
    except ValueError:
        raise ValueError(f"label_window_end: unknown label suffix {suffix!r}") from None
    return np.busday_offset(dates, h, roll="forward")


def leakage_keep(dates: np.ndarray, suffix: str, last_insample_day: np.datetime64,
                 period_ends: np.ndarray | None = None) -> np.ndarray:
    """bool (n,): True where the label window ends on/before ``last_insample_day`` (METHOD 3.4)."""
    end = label_window_end(dates, suffix, period_ends)
    return ~np.isnat(end) & (end <= np.datetime64(last_insample_day, "D"))


def fixed_cutoff_keep(dates: np.ndarray, horizon: int, last_year: int) -> np.ndarray:
    """The fixed rule of METHOD 3.4: drop images of ``last_year`` dated on/after Dec 24 (R5),
    Dec 1 (R20) or Oct 1 (R60); later years are dropped too. Returns bool keep mask (n,)."""
    m, d = FIXED_CUTOFF[horizon]
    cutoff = np.datetime64(f"{last_year:04d}-{m:02d}-{d:02d}", "D")
    return np.asarray(dates, dtype="datetime64[D]") < cutoff


# --------------------------------------------------------------------------------------------------
# Index of in-sample images


@dataclass
class SampleIndex:
    """Rows of an image set used for training: ``years[i]``, ``rows[i]`` (row in that year's
    file), ``labels[i]``: in {0, 1} (int64, ready for cross-entropy) for the classifier, the
    regression target (float32, METHOD 3.6) for a regression run. All arrays (n,)."""

    years: np.ndarray
    rows: np.ndarray
    labels: np.ndarray
    info: dict = field(default_factory=dict)

    def __len__(self) -> int:
        return len(self.rows)

    def subset(self, idx: np.ndarray) -> SampleIndex:
        """The entries at positions ``idx`` (order kept)."""
        return SampleIndex(self.years[idx], self.rows[idx], self.labels[idx], dict(self.info))


def select_labels(labels: pd.DataFrame, suffix: str, reproduce_nan_as_down: bool = False
                  ) -> tuple[np.ndarray, np.ndarray]:
    """Keep mask (n,) bool and label values (n,) int64 of one label table (METHOD 3.2).

    Drops label 2 (missing) and ``ewma_vol == 0``. With ``reproduce_nan_as_down`` a missing label
    becomes 0 ("down") as in the reference code, instead of being dropped.
    """
    col = f"label_{suffix}"
    for c in (col, "ewma_vol"):
        if c not in labels.columns:
            raise InputError(f"label table has no column {c!r} (columns: {list(labels.columns)})")
    lab = labels[col].to_numpy().astype(np.int64)
    bad = ~np.isin(lab, (0, 1, 2))
    if bad.any():
        raise InputError(f"column {col!r} row {int(np.flatnonzero(bad)[0])}: label "
                         f"{lab[bad][0]} not in {{0, 1, 2}}")
    keep = labels["ewma_vol"].to_numpy() != 0
    if reproduce_nan_as_down:
        lab = np.where(lab == 2, 0, lab)
    else:
        keep &= lab != 2
    return keep, lab


def insample_years(cfg: Config, image_set: ImageSet) -> list[int]:
    """In-sample years of the split that the image set holds (ValueError if none)."""
    (first, last), _ = split_years(cfg.train)
    years = [y for y in image_set.years if first <= y <= last]
    if not years:
        raise InputError(f"image set {image_set.directory} has years {image_set.years}, none in the "
                         f"in-sample range {first}-{last}")
    return years


def oos_years(cfg: Config, image_set: ImageSet) -> list[int]:
    """Out-of-sample years of the split that the image set holds (ValueError if none)."""
    _, (first, last) = split_years(cfg.train)
    years = [y for y in image_set.years if first <= y <= last]
    if not years:
        raise InputError(f"image set {image_set.directory} has years {image_set.years}, none in the "
                         f"test range {first}-{last}")
    return years


def build_index(image_set: ImageSet, years: list[int], horizon: int, label_return: str = "period",
                reproduce_nan_as_down: bool = False, last_insample_day: str | None = None,
                max_images: int | None = None, seed: int = 0, target: str = "class") -> SampleIndex:
    """Index of the training pool over ``years`` (see module docstring for the rules).

    last_insample_day: ISO date; default Dec 31 of the last of ``years``. target: ``train.target``.
    Returns a SampleIndex sorted by (year, row) with counts of every drop in ``.info``.
    """
    suffix = label_suffix(horizon, label_return)
    regression = is_regression(target)
    last_day = np.datetime64(last_insample_day or f"{max(years)}-12-31", "D")
    cols = ["date", "ewma_vol", f"label_{suffix}"] + ([f"ret_{suffix}"] if regression else [])
    tables = {y: image_set.labels(y, columns=cols) for y in years}
    for y, t in tables.items():
        n_img = image_set.count(y)
        if len(t) != n_img:
            raise InputError(f"{image_set.directory}/labels_{y}.parquet has {len(t)} rows but "
                             f"images_{y}.npy has {n_img}")
    period_ends = np.unique(np.concatenate(
        [t["date"].to_numpy().astype("datetime64[D]") for t in tables.values()]))
    ys, rs, ls = [], [], []
    info = {"images": 0, "dropped_label_missing": 0, "missing_as_down": 0, "dropped_ewma_vol_zero": 0,
            "dropped_leakage": 0}
    if regression:
        info["dropped_target_missing"] = 0
    for y, t in tables.items():
        keep, lab = select_labels(t, suffix, reproduce_nan_as_down)
        raw = t[f"label_{suffix}"].to_numpy()
        info["images"] += len(t)
        zero_vol = t["ewma_vol"].to_numpy() == 0
        info["dropped_ewma_vol_zero"] += int(zero_vol.sum())
        if reproduce_nan_as_down:
            info["missing_as_down"] += int(((raw == 2) & ~zero_vol).sum())
        else:
            info["dropped_label_missing"] += int(((raw == 2) & ~zero_vol).sum())
        leak_ok = leakage_keep(t["date"].to_numpy().astype("datetime64[D]"), suffix, last_day,
                               period_ends if suffix in PERIOD_SUFFIXES else None)
        if regression:
            lab = regression_target(t[f"ret_{suffix}"].to_numpy(), t["ewma_vol"].to_numpy(),
                                    horizon, target).astype(np.float32)
            undefined = keep & ~np.isfinite(lab)
            info["dropped_target_missing"] += int(undefined.sum())
            keep &= ~undefined
        info["dropped_leakage"] += int((keep & ~leak_ok).sum())
        keep &= leak_ok
        rows = np.flatnonzero(keep)
        ys.append(np.full(len(rows), y, dtype=np.int32))
        rs.append(rows.astype(np.int64))
        ls.append(lab[rows])
    index = SampleIndex(np.concatenate(ys), np.concatenate(rs), np.concatenate(ls), info)
    info["pool"] = len(index)
    if max_images is not None and len(index) > max_images:
        # Deterministic given the seed; sorted so reads stay sequential within a year.
        pick = np.sort(np.random.default_rng(seed).choice(len(index), max_images, replace=False))
        index = index.subset(pick)
        info["subsampled_to"] = max_images
    info["n"] = len(index)
    log.info("in-sample pool %s", info)
    return index


def insample_index(cfg: Config) -> tuple[ImageSet, SampleIndex]:
    """The image set of ``cfg.train.image_set`` and its in-sample training pool."""
    image_set = ImageSet(images_dir(cfg, cfg.train.image_set))
    years = insample_years(cfg, image_set)
    t = cfg.train
    index = build_index(image_set, years, t.horizon, t.label_return, t.reproduce_nan_as_down,
                        max_images=t.max_train_images, seed=t.seed, target=t.target)
    if len(index) == 0:
        raise InputError(f"no usable in-sample images in {image_set.directory} for years {years}")
    return image_set, index


def split_member(n: int, val_fraction: float, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """Random train/validation positions of an n-image pool: n_train = floor((1-val_fraction)*n).

    Each ensemble member uses its own seed (base + i), so its own split (METHOD 6)."""
    perm = np.random.default_rng(seed).permutation(n)
    # The epsilon keeps floor(0.7*10) == 7 despite 1-0.3 = 0.69999...
    n_train = int(np.floor((1.0 - val_fraction) * n + 1e-9))
    return np.sort(perm[:n_train]), np.sort(perm[n_train:])


# --------------------------------------------------------------------------------------------------
# Normalisation


def pixel_histogram(images: np.ndarray, chunk: int = 8192) -> np.ndarray:
    """Counts (256,) int64 of each uint8 value over ``images`` (N, H, W), read in chunks."""
    hist = np.zeros(256, dtype=np.int64)
    for s in range(0, len(images), chunk):
        hist += np.bincount(np.asarray(images[s:s + chunk]).ravel(), minlength=256)
    return hist


def stats_from_histogram(hist: np.ndarray) -> tuple[float, float]:
    """Mean and population std of img/255 given the value histogram (256,)."""
    n = hist.sum()
    if n == 0:
        raise ValueError("normalisation statistics of zero pixels")
    v = np.arange(256) / 255.0
    mean = float((hist * v).sum() / n)
    var = float((hist * (v - mean) ** 2).sum() / n)
    if var <= 0:
        raise InputError("normalisation: every pixel has the same value (std 0)")
    return mean, float(np.sqrt(var))


def compute_norm(image_set: ImageSet, index: SampleIndex, mode: str = "insample",
                 all_years: list[int] | None = None) -> dict:
    """norm.json content: {"mode", "mean", "std"} (+ "per_year" {year: {"mean","std"}}).

    insample: statistics of exactly the images in ``index``. per_year_first50k (reference parity):
    each year file of ``all_years`` (default every year of the set) gets the statistics of its
    first 50,000 images; top-level mean/std = those of the in-sample years pooled.
    """
    if mode == "insample":
        hist = np.zeros(256, dtype=np.int64)
        for y in np.unique(index.years):
            rows = index.rows[index.years == y]
            mm = image_set.images(int(y))
            for s in range(0, len(rows), 8192):
                hist += np.bincount(mm[rows[s:s + 8192]].ravel(), minlength=256)
        mean, std = stats_from_histogram(hist)
        return {"mode": mode, "mean": mean, "std": std}
    if mode == "per_year_first50k":
        per_year, pooled = {}, np.zeros(256, dtype=np.int64)
        insample = set(int(y) for y in np.unique(index.years))
        for y in all_years or image_set.years:
            h = pixel_histogram(image_set.images(y)[:50_000])
            m, s = stats_from_histogram(h)
            per_year[str(y)] = {"mean": m, "std": s}
            if y in insample:
                pooled += h
        mean, std = stats_from_histogram(pooled)
        return {"mode": mode, "mean": mean, "std": std, "per_year": per_year}
    raise InputError(f"unknown norm mode {mode!r}; choose insample or per_year_first50k")


def norm_for_year(norm: dict, year: int) -> tuple[float, float]:
    """(mean, std) to normalise images of ``year`` with (per-year stats when the run has them)."""
    per_year = norm.get("per_year")
    if per_year is not None:
        if str(year) not in per_year:
            raise InputError(f"norm.json has no statistics for year {year} (mode {norm.get('mode')})")
        return per_year[str(year)]["mean"], per_year[str(year)]["std"]
    return norm["mean"], norm["std"]


def _lut(mean: float, std: float) -> np.ndarray:
    # A 256-entry table: exactly (v/255 - mean)/std in float64, rounded once to float32.
    return ((np.arange(256) / 255.0 - mean) / std).astype(np.float32)


def normalise(images_uint8: np.ndarray, mean: float, std: float) -> torch.Tensor:
    """uint8 (N, H, W) -> float32 tensor (N, 1, H, W) = (img/255 - mean)/std."""
    a = np.asarray(images_uint8)
    if a.dtype != np.uint8 or a.ndim != 3:
        raise ValueError(f"normalise expects uint8 (N, H, W), got {a.dtype} {a.shape}")
    return torch.from_numpy(_lut(mean, std)[a]).unsqueeze(1)


# --------------------------------------------------------------------------------------------------
# Dataset


class MemmapImages(torch.utils.data.Dataset):
    """Normalised images + labels of a SampleIndex, read batch-wise from the year memory maps.
    A regression target is divided by ``norm["target_scale"]`` when the norm holds one.

    ``dataset[i]`` -> (x (1,H,W) float32, y int64); ``dataset.__getitems__(list)`` (used by
    DataLoader) -> ((B,1,H,W), (B,)) in one read per year. Memory maps are opened lazily, so the
    dataset can be sent to DataLoader worker processes without copying arrays.
    """

    def __init__(self, directory: str | Path, index: SampleIndex, norm: dict) -> None:
        self.directory = Path(directory)
        self.index = index
        self.norm = norm
        self._maps: dict[int, np.ndarray] = {}
        self._luts = {int(y): _lut(*norm_for_year(norm, int(y))) for y in np.unique(index.years)}

    def __len__(self) -> int:
        return len(self.index)

    def _map(self, year: int) -> np.ndarray:
        if year not in self._maps:
            self._maps[year] = np.load(self.directory / f"images_{year}.npy", mmap_mode="r")
        return self._maps[year]

    def __getstate__(self) -> dict:
        return {**self.__dict__, "_maps": {}}

    def read_uint8(self, positions: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Raw uint8 images (B, H, W) and their years (B,) at index positions (B,)."""
        positions = np.asarray(positions, dtype=np.int64)
        years = self.index.years[positions]
        rows = self.index.rows[positions]
        out = None
        for y in np.unique(years):
            sel = np.flatnonzero(years == y)
            order = np.argsort(rows[sel], kind="stable")  # ascending rows: sequential reads
            imgs = self._map(int(y))[rows[sel][order]]
            if out is None:
                out = np.empty((len(positions), *imgs.shape[1:]), dtype=np.uint8)
            out[sel[order]] = imgs
        assert out is not None
        return out, years

    def __getitems__(self, positions: list[int]) -> tuple[torch.Tensor, torch.Tensor]:
        raw, years = self.read_uint8(np.asarray(positions))
        uniq = np.unique(years)
        if len(uniq) == 1:
            x = self._luts[int(uniq[0])][raw]
        else:
            x = np.empty(raw.shape, dtype=np.float32)
            for y in uniq:
                m = years == y
                x[m] = self._luts[int(y)][raw[m]]
        y_lab = self.index.labels[np.asarray(positions, dtype=np.int64)]
        if "target_scale" in self.norm:  # a regression run learns target / scale (train.loop)
            y_lab = (y_lab / self.norm["target_scale"]).astype(np.float32)
        return torch.from_numpy(x).unsqueeze(1), torch.from_numpy(np.ascontiguousarray(y_lab))

    def __getitem__(self, i: int) -> tuple[torch.Tensor, torch.Tensor]:
        x, y = self.__getitems__([i])
        return x[0], y[0]


def collate_batch(batch):  # noqa: ANN001, ANN201 - DataLoader passes __getitems__ output through
    """DataLoader collate for :class:`MemmapImages`: the dataset already returns a batch."""
    return batch


__all__ = ["SampleIndex", "MemmapImages", "build_index", "insample_index", "split_member",
           "compute_norm", "normalise", "norm_for_year", "label_window_end", "leakage_keep",
           "fixed_cutoff_keep", "select_labels", "insample_years", "oos_years", "collate_batch"]
