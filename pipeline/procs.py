"""Worker processes for the model stages: how many, how many threads each, and how they end.

    usable_cores() -> int                          cores this process may run on (affinity)
    plan_workers(requested, jobs, device) -> int   processes for ``jobs`` independent jobs
    run_jobs(fn, jobs, workers, threads) -> (results, failures)

Ensemble members are independent (own seed, own split), so on a CPU several 1-thread processes
train more images per second than one process with all the threads (two 1-thread processes trained
1.6x the images of one 2-thread process on a 2-core machine). Workers are spawned (torch's thread
pools do not survive a fork), die with their parent (Linux parent-death signal, so a killed stage
leaves no process behind), run without per-batch progress bars (the parent shows one bar over the
jobs) and log through the parent's format.
"""

from __future__ import annotations

import ctypes
import logging
import multiprocessing
import os
import select
import signal
import sys
import threading
import time
from collections.abc import Callable
from concurrent.futures import ProcessPoolExecutor, as_completed
from concurrent.futures.process import BrokenProcessPool
from typing import Any

from pipeline.progress import ENV as PROGRESS_ENV
from pipeline.progress import progress


log = logging.getLogger(__name__)

_PR_SET_PDEATHSIG = 1


def usable_cores() -> int:
    """Cores this process may run on (its CPU affinity where the OS has one)."""
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # pragma: no cover - non-Linux
        return os.cpu_count() or 1


def plan_workers(requested: int | None, jobs: int, device: str = "cpu") -> int:
    """Processes to run ``jobs`` independent model jobs at once.

    ``requested`` (a config value) wins, capped at ``jobs``; None means automatic: one per usable
    core on the CPU (at most ``jobs``), one per visible GPU on CUDA. Never below 1.
    """
    if jobs <= 1:
        return 1
    if requested is not None:
        return max(1, min(int(requested), jobs))
    if device == "cuda":
        import torch

        return max(1, min(torch.cuda.device_count(), jobs))
    return max(1, min(usable_cores(), jobs))


def threads_per_worker(workers: int, requested: int | None = None) -> int:
    """torch intra-op threads for each of ``workers`` processes: ``requested`` or an equal share."""
    return int(requested) if requested else max(1, usable_cores() // max(1, workers))


def die_with_parent() -> None:
    """Ask the kernel to SIGKILL this process when its parent dies (Linux; elsewhere a no-op), and
    exit at once if the parent is already gone."""
    if sys.platform.startswith("linux"):
        libc = ctypes.CDLL(None, use_errno=True)
        libc.prctl(_PR_SET_PDEATHSIG, signal.SIGKILL, 0, 0, 0)
    if os.getppid() == 1:
        os._exit(1)


def die_with(stage_pid: int) -> None:
    """Exit when process ``stage_pid`` (the stage that started this worker) dies, even when it is
    not this process's parent.

    A forkserver's pool workers are children of the forkserver, and each holds the forkserver's
    "alive" pipe, so neither notices a killed stage: the parent-death signal would wait for a
    forkserver that waits for its workers. A daemon thread blocks on a pidfd of the stage (Linux
    5.3+; polling elsewhere) and ends the worker the moment the stage is gone; the forkserver then
    sees its pipe close and exits too.
    """
    die_with_parent()
    if os.getppid() == stage_pid:
        return  # the parent-death signal covers it
    try:
        fd = os.pidfd_open(stage_pid)
    except ProcessLookupError:
        os._exit(1)
    except (AttributeError, OSError):  # no pidfd (old kernel, not Linux): poll
        fd = None

    def watch() -> None:
        if fd is not None:
            select.select([fd], [], [])  # readable once the process has exited
        else:
            while True:
                try:
                    os.kill(stage_pid, 0)
                except ProcessLookupError:
                    break
                time.sleep(0.5)
        os._exit(1)

    threading.Thread(target=watch, name=f"die-with-{stage_pid}", daemon=True).start()


def _init_worker(threads: int, verbose: bool) -> None:
    die_with_parent()
    os.environ[PROGRESS_ENV] = "off"
    import torch

    torch.set_num_threads(threads)
    from pipeline.cli import setup_logging

    setup_logging(verbose)


def run_jobs(fn: Callable[..., Any], jobs: dict[str, tuple], workers: int, threads: int,
             desc: str = "jobs") -> tuple[dict[str, Any], dict[str, str]]:
    """Run ``fn(*args)`` for each named job in ``workers`` spawned processes of ``threads`` threads.

    Returns (results by name, failures by name: the error text). A job that raises fails alone; a
    worker that dies (killed, out of memory) breaks the pool, and every job not finished by then
    is reported as failed with that cause. Jobs that finished keep their results (and whatever they
    wrote), so a rerun only redoes the failed ones.
    """
    results: dict[str, Any] = {}
    failures: dict[str, str] = {}
    ctx = multiprocessing.get_context("spawn")
    verbose = logging.getLogger("pipeline").getEffectiveLevel() <= logging.DEBUG
    with ProcessPoolExecutor(max_workers=workers, mp_context=ctx, initializer=_init_worker,
                             initargs=(threads, verbose)) as pool:
        futures = {pool.submit(fn, *args): name for name, args in jobs.items()}
        for fut in progress(as_completed(futures), total=len(futures), desc=desc, unit="job",
                        disable=len(futures) < 2):
            name = futures[fut]
            try:
                results[name] = fut.result()
            except BrokenProcessPool:
                failures[name] = ("its worker process died (killed or out of memory) before it "
                                  "finished")
            except Exception as e:  # noqa: BLE001 - one failed job must not lose the others
                failures[name] = f"{type(e).__name__}: {e}"
                log.error("%s failed: %s", name, failures[name], exc_info=e)
    return results, failures
