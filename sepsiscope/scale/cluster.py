"""Where partition tasks run: in this process one after another, or on a Dask cluster.

A *mapper* runs a function over partitions. :class:`SerialMapper` calls it in this process, in
partition order (the path without Dask); :class:`DaskMapper` submits one task per partition to a
``distributed`` client and gathers the results in partition order, so reductions sum in the same
order on both paths and give the same floating-point answers. Tasks are retried
(``retries=2``) and a task whose worker dies is rescheduled by Dask on another one; a task that
keeps failing raises here, and nothing downstream writes a table as if complete.

:func:`dask_client` opens the client of ``--dask [ADDRESS]``: a scheduler address connects to a
running cluster (its workers must see the same file system); no address starts a
``LocalCluster`` sized to this machine (one single-threaded worker process per core, memory
split evenly), closed again when the block ends.

Examples
--------
>>> SerialMapper().gather(SerialMapper().map(lambda k, add: k + add, [1, 2], add=10))
[11, 12]
"""

from __future__ import annotations

import contextlib
import os
from collections.abc import Callable, Iterator

__all__ = ["SerialMapper", "DaskMapper", "dask_client", "require_dask", "worker_memory", "worker_peak_memory"]

_EXTRA = "scale"
_CLIENT_MAP_KEYWORDS = {"key", "workers", "retries", "resources", "priority", "allow_other_workers", "fifo_timeout",
                        "actor", "actors", "pure", "batch_size"}


def require_dask():
    """Import ``distributed``; a clear message naming the extra when it is not installed."""
    try:
        import distributed
    except ImportError as exc:  # pragma: no cover - the test environment has it
        raise ImportError(f"--dask needs dask and distributed: pip install 'sepsiscope[{_EXTRA}]'") from exc
    return distributed


class SerialMapper:
    """Run partition tasks in this process, in order (the single-process path)."""

    workers = 1  # tasks that run at once

    def map(self, fn: Callable, parts, **broadcast) -> list:
        return [fn(p, **broadcast) for p in parts]

    def gather(self, items) -> list:
        return list(items)

    def share(self, obj):
        """``obj`` itself (tasks run here)."""
        return obj

    def release(self, items) -> None:
        """Nothing to free: results are plain objects."""

    def reduce(self, fn: Callable, items, fan_in: int = 4):
        """``fn(list of results)`` of every item (``fn`` must take its own output back, as a sum does)."""
        return fn(list(items))


class DaskMapper:
    """Run partition tasks on a ``distributed.Client``; :meth:`map` returns futures."""

    def __init__(self, client, *, retries: int = 2):
        self.client, self.retries = client, retries

    @property
    def workers(self) -> int:
        """Workers of the cluster now (at least 1): how many tasks run at once."""
        return max(1, len(self.client.scheduler_info().get("workers", {})))

    def map(self, fn: Callable, parts, **broadcast) -> list:
        """One task per part; ``broadcast`` keywords go to every task (names of ``Client.map``'s own
        keywords, such as ``batch_size`` or ``key``, are refused)."""
        clash = sorted(set(broadcast) & _CLIENT_MAP_KEYWORDS)
        if clash:
            raise TypeError(f"{clash}: keyword(s) of distributed.Client.map; rename the task's parameter")
        parts = list(parts)
        if not parts:
            return []
        return self.client.map(fn, parts, pure=False, retries=self.retries, **broadcast)

    def gather(self, futures) -> list:
        return self.client.gather(list(futures))

    def share(self, obj):
        """``obj`` sent once to every worker; tasks given the returned future receive ``obj``."""
        if obj is None:
            return None
        return self.client.scatter([obj], broadcast=True, hash=False)[0]

    def release(self, futures) -> None:
        for f in futures:
            f.release()

    def reduce(self, fn: Callable, futures, fan_in: int = 4):
        """``fn`` of the results, as a tree of tasks on the workers: ``fn(list)`` of ``fan_in`` results at
        a time, then of those, so the client receives one result (not one per task) and no worker
        holds more than ``fan_in`` of them."""
        futures = list(futures)
        if not futures:
            return fn([])
        while len(futures) > 1:
            futures = [self.client.submit(_apply_to_list, fn, *futures[i:i + fan_in], pure=False,
                                          retries=self.retries) for i in range(0, len(futures), fan_in)]
        return futures[0].result()


def _apply_to_list(fn, *results):
    return fn(list(results))


def _local_cluster_size(n_workers: int | None, memory_limit) -> dict:
    import psutil

    n = n_workers or os.cpu_count() or 1
    memory = memory_limit or int(psutil.virtual_memory().total * 0.8 / n)
    return {"n_workers": n, "threads_per_worker": 1, "memory_limit": memory}


@contextlib.contextmanager
def dask_client(address: str | None = None, *, n_workers: int | None = None, memory_limit=None,
                processes: bool = True) -> Iterator:
    """A ``distributed.Client``: connected to ``address``, or on a new ``LocalCluster``.

    ``n_workers`` (default: one per core) and ``memory_limit`` (per worker, default 80 % of the
    machine's memory split evenly) size the local cluster; ``processes=False`` runs its workers as
    threads of this process (tests), with no memory limit of their own.
    """
    distributed = require_dask()
    if address:
        with distributed.Client(address) as client:
            yield client
        return
    size = _local_cluster_size(n_workers, memory_limit)
    # one thread per worker process for the CPN kernel and BLAS too, so n workers use n cores
    if processes:  # worker processes only: threads of this process take no environment of their own
        size["env"] = {"SEPSISCOPE_THREADS": "1", "OMP_NUM_THREADS": "1"}
    else:
        # threaded workers would measure this whole process against their own limit (a test
        # session passes 2 GB on its own) and pause at 80 %, so their tasks would never run
        size["memory_limit"] = 0
    with distributed.LocalCluster(processes=processes, dashboard_address=None, **size) as cluster, \
            distributed.Client(cluster) as client:
        yield client


def worker_memory(client) -> dict:
    """Resident memory (bytes) of each worker process now, by worker address (Dask's own report)."""
    return {addr: info.get("metrics", {}).get("memory") for addr, info in
            client.scheduler_info()["workers"].items()}


def peak_rss() -> int:
    """Peak resident memory (bytes) of this process: ``VmHWM`` of ``/proc/self/status``.

    Not ``getrusage``'s ``ru_maxrss``: Linux carries that over ``exec``, so a worker spawned from a
    large client would report the client's peak as its own.
    """
    with open("/proc/self/status", encoding="ascii") as fh:
        for line in fh:
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) * 1024
    import resource  # not Linux: the best there is

    return int(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss) * 1024


def worker_peak_memory(client) -> dict:
    """Peak resident memory (bytes) of each worker process since it started."""
    return client.run(peak_rss)
