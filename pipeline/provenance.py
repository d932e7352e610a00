"""Where and with what an artifact was made, written beside every output (not hashed: a rerun on
another machine or commit reuses what is current).

Light on purpose: no torch import (the image and evaluation stages never load torch; importing
it only to read its version costs about 2 s of CPU per call). Package versions come from the
installed distributions' metadata.
"""

from __future__ import annotations

import os
import platform
import subprocess
import sys
from importlib import metadata
from pathlib import Path


def _version(package: str) -> str | None:
    try:
        return metadata.version(package)
    except metadata.PackageNotFoundError:
        return None


def _git(*args: str) -> str | None:
    root = Path(__file__).resolve().parent.parent
    try:
        out = subprocess.run(["git", "-C", str(root), *args], capture_output=True, text=True,
                             timeout=10)
    except (OSError, subprocess.SubprocessError):
        return None
    return out.stdout.strip() if out.returncode == 0 else None


def provenance() -> dict:
    """{"commit", "uncommitted_changes", "python", "torch", "numpy", "pandas", "platform",
    "processor", "cores", "cuda_device"}: the repository commit (None outside a git checkout) and
    whether tracked files had uncommitted changes, the versions, the machine. ``cuda_device`` is
    the GPU this process's torch uses, or None where torch is not loaded (a CPU-only stage) or
    sees no GPU."""
    commit = _git("rev-parse", "HEAD") or None
    dirty = None
    if commit:
        status = _git("status", "--porcelain", "--untracked-files=no")
        dirty = None if status is None else bool(status)
    torch = sys.modules.get("torch")
    cuda = (torch.cuda.get_device_name(0) if torch is not None and torch.cuda.is_available()
            else None)
    return {"commit": commit, "uncommitted_changes": dirty, "python": sys.version.split()[0],
            "torch": _version("torch"), "numpy": _version("numpy"), "pandas": _version("pandas"),
            "platform": platform.platform(), "processor": platform.processor() or platform.machine(),
            "cores": os.cpu_count(), "cuda_device": cuda}
