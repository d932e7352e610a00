"""Progress bars on a terminal only: ``progress(iterable, desc=...)`` is tqdm, switched off when
standard error is not a terminal (logs, CI, notebooks' captured output) and in worker processes
(``PIPELINE_PROGRESS=off``, set by pipeline.procs: several processes' bars would overwrite each
other on one line; the parent shows one bar over the jobs)."""

from __future__ import annotations

import os
import sys
from collections.abc import Iterable
from typing import Any

from tqdm import tqdm

ENV = "PIPELINE_PROGRESS"  # "off" disables every bar of this process


def on_terminal() -> bool:
    """True when bars should be drawn: stderr is a terminal and PIPELINE_PROGRESS is not "off"."""
    return os.environ.get(ENV, "auto") != "off" and sys.stderr.isatty()


def progress(iterable: Iterable | None = None, *, disable: bool = False, **kwargs: Any) -> tqdm:
    """tqdm(iterable, **kwargs), disabled when ``disable`` or off a terminal."""
    return tqdm(iterable, disable=disable or not on_terminal(), **kwargs)
