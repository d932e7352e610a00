"""Process-tree checks for the kill tests: which processes a stage started, and which outlive it."""

from __future__ import annotations

import os
import signal
import subprocess
import time
from pathlib import Path


def live_processes() -> dict[int, int]:
    """pid -> parent pid of every process that has not exited (zombies count as exited)."""
    out = {}
    for d in Path("/proc").iterdir():
        if not d.name.isdigit():
            continue
        try:
            fields = (d / "stat").read_text().rsplit(")", 1)[1].split()
        except (FileNotFoundError, ProcessLookupError, IndexError):
            continue
        if fields[0] != "Z":
            out[int(d.name)] = int(fields[1])
    return out


def descendants(pid: int) -> set[int]:
    """Every live process below ``pid`` (children, grandchildren, ...)."""
    parents = live_processes()
    found, frontier = set(), {pid}
    while frontier:
        frontier = {p for p, pp in parents.items() if pp in frontier} - found
        found |= frontier
    return found


def alive(pids: set[int]) -> set[int]:
    return pids & set(live_processes())


def kill_and_wait(proc: subprocess.Popen, watched: set[int], timeout: float = 15.0) -> set[int]:
    """SIGKILL ``proc`` and return those of ``watched`` still alive ``timeout`` seconds later."""
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait(timeout=10)
    deadline = time.time() + timeout
    while alive(watched) and time.time() < deadline:
        time.sleep(0.1)
    return alive(watched)
