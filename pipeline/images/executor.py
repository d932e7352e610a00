"""Where the image tasks run: one interface, a local process pool or a Dask cluster.

An executor maps a picklable top-level function over a list of picklable tasks and returns the
results in task order, showing a tqdm bar as tasks finish. Tasks write their own artifacts, so
results are small (counts); the same tasks give byte-identical artifacts on any executor.
"""

from __future__ import annotations

import logging
import multiprocessing
import os
from collections.abc import Callable, Sequence
from concurrent.futures import ProcessPoolExecutor, as_completed
from typing import Any, Protocol


from pipeline.errors import InputError
from pipeline.progress import progress
from pipeline.procs import die_with, usable_cores

log = logging.getLogger(__name__)


class Executor(Protocol):
    """``map(fn, tasks) -> [fn(t) for t in tasks]``, possibly in parallel, results in task order."""

    def map(self, fn: Callable[[Any], Any], tasks: Sequence[Any], desc: str = "tasks") -> list:
        ...

    def close(self) -> None:
        ...


class LocalExecutor:
    """Processes on this machine; ``workers=1`` runs in-process (no pickling, easy debugging)."""

    def __init__(self, workers: int | None = None) -> None:
        self.workers = int(workers) if workers else usable_cores()
        if self.workers < 1:
            raise InputError(f"workers must be >= 1, got {workers}")

    def map(self, fn: Callable[[Any], Any], tasks: Sequence[Any], desc: str = "tasks") -> list:
        tasks = list(tasks)
        if self.workers == 1 or len(tasks) <= 1:
            return [fn(t) for t in progress(tasks, desc=desc, unit="task", disable=not tasks)]
        results: list = [None] * len(tasks)
        # forkserver: children never inherit the parent's threads (pyarrow, BLAS) mid-lock.
        ctx = multiprocessing.get_context("forkserver")
        # Import the heavy modules once in the server instead of once per worker.
        ctx.set_forkserver_preload(["numpy", "pandas", "pyarrow.parquet", "pipeline.images.build"])
        with ProcessPoolExecutor(max_workers=min(self.workers, len(tasks)), mp_context=ctx,
                                 initializer=die_with, initargs=(os.getpid(),)) as pool:
            futures = {pool.submit(fn, t): i for i, t in enumerate(tasks)}
            for fut in progress(as_completed(futures), total=len(tasks), desc=desc, unit="task"):
                results[futures[fut]] = fut.result()
        return results

    def close(self) -> None:
        pass

    def __enter__(self) -> LocalExecutor:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


class DaskExecutor:
    """Dask distributed: a given scheduler address, or a local cluster of ``workers`` processes.

    Workers must see the same filesystem paths as this process (the tasks read the panel and
    write their part files themselves).
    """

    def __init__(self, scheduler: str | None = None, workers: int | None = None) -> None:
        from dask.distributed import Client, LocalCluster

        self._cluster = None
        if scheduler:
            self.client = Client(scheduler)
        else:
            n = int(workers) if workers else usable_cores()
            self._cluster = LocalCluster(n_workers=n, threads_per_worker=1, processes=True,
                                         dashboard_address=None)
            self.client = Client(self._cluster)
        log.info("dask client: %s", self.client)

    def map(self, fn: Callable[[Any], Any], tasks: Sequence[Any], desc: str = "tasks") -> list:
        from dask.distributed import as_completed as dask_as_completed

        tasks = list(tasks)
        if not tasks:
            return []
        futures = self.client.map(fn, tasks, pure=False)
        index = {f.key: i for i, f in enumerate(futures)}
        results: list = [None] * len(tasks)
        for fut in progress(dask_as_completed(futures), total=len(tasks), desc=desc, unit="task"):
            results[index[fut.key]] = fut.result()
        return results

    def close(self) -> None:
        self.client.close()
        if self._cluster is not None:
            self._cluster.close()

    def __enter__(self) -> DaskExecutor:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def make_executor(images_cfg: Any) -> LocalExecutor | DaskExecutor:
    """The executor a config asks for (``images.executor``: local | dask)."""
    if images_cfg.executor == "local":
        return LocalExecutor(images_cfg.workers)
    if images_cfg.executor == "dask":
        return DaskExecutor(images_cfg.dask_scheduler, images_cfg.workers)
    raise InputError(f"images.executor {images_cfg.executor!r}: choose local or dask")
