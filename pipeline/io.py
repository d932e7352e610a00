"""Atomic artifact writing, stage completion markers and input stamps.

Every artifact is written to a temporary file in the destination folder and renamed into place, so
an interrupted run never leaves a half-written file under the final name. A stage (or one task of a
stage) records completion with a small JSON marker holding the hash of the settings it ran with;
a rerun with the same hash skips the work, a different hash redoes it. An input file that is not a
marked folder (a run's predictions.parquet) enters that hash as its :func:`input_stamp`, so a
changed input redoes the stage and an unchanged one does not.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
from pipeline.errors import InputError


@contextlib.contextmanager
def atomic_path(path: str | Path) -> Iterator[Path]:
    """Yield a temporary path beside ``path``; rename it onto ``path`` only if the block succeeds."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    os.close(fd)
    # mkstemp creates 0600 files; give artifacts the usual permissions (0666 minus the umask).
    umask = os.umask(0)
    os.umask(umask)
    os.chmod(tmp, 0o666 & ~umask)
    tmp_path = Path(tmp)
    try:
        yield tmp_path
        os.replace(tmp_path, path)
    finally:
        if tmp_path.exists():
            tmp_path.unlink()


def atomic_write_text(path: str | Path, text: str) -> None:
    with atomic_path(path) as tmp:
        tmp.write_text(text)


def atomic_write_bytes(path: str | Path, data: bytes) -> None:
    with atomic_path(path) as tmp:
        tmp.write_bytes(data)


def write_json(path: str | Path, obj: Any) -> None:
    atomic_write_text(path, json.dumps(obj, indent=2, sort_keys=True, default=_json_default) + "\n")


class ArtifactError(InputError):
    """An artifact exists but does not have the documented content; the message names the file."""


def read_json(path: str | Path) -> Any:
    """The parsed JSON file; a file that is not valid JSON is an :class:`ArtifactError` naming it."""
    path = Path(path)
    try:
        return json.loads(path.read_text())
    except json.JSONDecodeError as e:
        raise ArtifactError(f"{path}: not valid JSON ({e})") from None


def _json_default(o: Any) -> Any:
    if isinstance(o, (np.integer,)):
        return int(o)
    if isinstance(o, (np.floating,)):
        return float(o)
    if isinstance(o, (pd.Timestamp,)):
        return o.isoformat()
    if isinstance(o, Path):
        return str(o)
    raise TypeError(f"not JSON serialisable: {type(o)}")


def write_parquet(path: str | Path, df: pd.DataFrame, **kwargs: Any) -> None:
    """Write ``df`` atomically; ``kwargs`` go to ``DataFrame.to_parquet`` (e.g. ``use_dictionary``)."""
    with atomic_path(path) as tmp:
        df.to_parquet(tmp, index=False, **kwargs)


def write_npy(path: str | Path, array: np.ndarray) -> None:
    """Save an array as ``.npy`` (memory-mappable with ``np.load(mmap_mode='r')``)."""
    with atomic_path(path) as tmp:
        with open(tmp, "wb") as fh:
            np.save(fh, array, allow_pickle=False)


def write_figure(path: str | Path, fig: Any, **kwargs: Any) -> None:
    """Save a matplotlib figure atomically (format from the suffix); a pyplot-managed figure is
    closed (object-API figures need no closing)."""
    path = Path(path)
    kwargs.setdefault("dpi", 150)
    kwargs.setdefault("bbox_inches", "tight")
    with atomic_path(path) as tmp:
        fig.savefig(tmp, format=path.suffix.lstrip("."), **kwargs)
    import sys

    if "matplotlib.pyplot" in sys.modules:  # never import pyplot (it picks a backend) just to close
        sys.modules["matplotlib.pyplot"].close(fig)


# --------------------------------------------------------------------------------------------------
# Completion markers


def marker_path(directory: str | Path, name: str = "_DONE") -> Path:
    return Path(directory) / f"{name}.json"


def is_done(directory: str | Path, settings_hash: str, name: str = "_DONE") -> bool:
    """True if ``directory`` holds a completion marker written with the same settings hash."""
    p = marker_path(directory, name)
    if not p.exists():
        return False
    try:
        return read_json(p).get("hash") == settings_hash
    except (ArtifactError, OSError):
        return False


def mark_done(directory: str | Path, settings_hash: str, name: str = "_DONE", **info: Any) -> None:
    write_json(marker_path(directory, name), {"hash": settings_hash, **info})


# --------------------------------------------------------------------------------------------------
# What identifies an input file


def sha256_file(path: str | Path) -> str:
    """SHA-256 (64 hex digits) of the file's bytes, read in 1 MiB chunks."""
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def input_stamp(path: str | Path) -> dict:
    """What identifies an input file for the settings hash (and marker) of a stage that reads it:
    ``{"bytes": size, "sha256": 64 hex digits of its content}``.

    The one rule for an input that is a file rather than a marked folder (folders are identified
    by their completion marker's hash, :func:`require_done`): its content, not its modification
    time, so a copied, restored or rewritten-but-identical file keeps the stage current and any
    changed byte (a re-prediction) redoes it. Reads the whole file (a few seconds per GB).
    FileNotFoundError naming ``path`` when it is missing.
    """
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"{path} not found: no input to stamp")
    return {"bytes": path.stat().st_size, "sha256": sha256_file(path)}


# --------------------------------------------------------------------------------------------------
# One writer per artifact folder


class FolderBusyError(InputError):
    """Another process holds the folder's lock (two stages writing one artifact folder at once)."""


@contextlib.contextmanager
def folder_lock(directory: str | Path, what: str) -> Iterator[None]:
    """Hold an exclusive lock on ``directory`` (its ``.lock`` file) for the block, or raise
    FolderBusyError at once naming the folder and the process that holds it. ``what`` names the
    work (e.g. "train") for the message. The lock is the kernel's (flock): it ends with the
    process, so a killed stage never leaves a stale lock behind."""
    import fcntl

    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    path = directory / ".lock"
    fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o666)
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            holder = os.pread(fd, 64, 0).decode(errors="replace").strip() or "another process"
            raise FolderBusyError(f"{directory} is in use by {holder}: wait for it to finish "
                                  f"(or stop it) before running {what} there") from None
        os.ftruncate(fd, 0)
        os.pwrite(fd, f"pid {os.getpid()} ({what})".encode(), 0)
        yield
    finally:
        os.close(fd)


# --------------------------------------------------------------------------------------------------
# Inputs a stage may use, and what a killed stage left behind


class StaleInputError(InputError):
    """A stage's input is unfinished, or was produced under settings other than the ones given."""


def require_done(directory: str | Path, settings_hash: str, what: str, make_target: str) -> None:
    """StaleInputError unless ``directory`` holds a completion marker with ``settings_hash``.

    ``what`` names the input ("the panel"), ``make_target`` the stage that makes it ("panel").
    """
    p = marker_path(directory)
    if not p.exists():
        raise StaleInputError(f"{what} in {directory} is missing or unfinished: run "
                              f"`make {make_target}` first")
    if not is_done(directory, settings_hash):
        raise StaleInputError(f"{what} in {directory} was built with other settings than the ones "
                              f"given (or its rebuild failed): run `make {make_target}` again")


def remove_stale_temps(directory: str | Path, pattern: str = ".*.tmp", recursive: bool = True) -> int:
    """Delete the temporary files (``.<name>.*.tmp``, see :func:`atomic_path`) that a killed
    process left in ``directory`` (and below it when ``recursive``); ``pattern`` narrows them to
    one artifact's (``.predictions.parquet.*.tmp``). Returns how many. Call it only while holding
    the lock of the work that writes them (:func:`folder_lock`), so no live writer's file is taken."""
    directory = Path(directory)
    n = 0
    if directory.is_dir():
        for p in (directory.rglob(pattern) if recursive else directory.glob(pattern)):
            if p.is_file():
                p.unlink(missing_ok=True)
                n += 1
    return n
