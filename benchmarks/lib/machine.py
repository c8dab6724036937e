"""What a timing ran on and what else ran meanwhile: the BLAS libraries (threadpoolctl), the CPU,
and the CPU time other processes took on this process's CPUs during each timed interval."""

from __future__ import annotations

import os
import platform
import time

_HZ = os.sysconf("SC_CLK_TCK") if hasattr(os, "sysconf") else 100


def blas_info():
    """One dict per BLAS/OpenMP library loaded in this process (threadpoolctl): library, version,
    core type it chose (``architecture``), threads, file. Empty list without threadpoolctl."""
    try:
        from threadpoolctl import threadpool_info
    except ImportError:
        return [{"error": "threadpoolctl not installed"}]
    out = []
    for d in threadpool_info():
        out.append({k: d.get(k) for k in ("internal_api", "version", "architecture",
                                          "num_threads", "threading_layer", "filepath")
                    if d.get(k) is not None})
    return out


def cpu_model():
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def _busy_jiffies(cpus):
    """Busy clock ticks (user+nice+system+irq+softirq+steal) summed over the CPUs ``cpus``."""
    total = 0
    try:
        with open("/proc/stat") as f:
            for line in f:
                if not line.startswith("cpu") or line.startswith("cpu "):
                    continue
                parts = line.split()
                if int(parts[0][3:]) in cpus:
                    v = [int(x) for x in parts[1:9]]
                    total += v[0] + v[1] + v[2] + v[5] + v[6] + v[7]
    except (OSError, ValueError):
        return None
    return total


class LoadProbe:
    """``with LoadProbe() as p: work()`` then ``p.foreign``: the CPUs' worth of time that other
    processes ran on this process's CPUs during the block (0.0 = nobody else; 1.0 = one whole
    core taken), from /proc/stat minus this process's own CPU time; None where /proc is missing.
    ``p.wall`` is the block's wall time in seconds."""

    def __init__(self):
        self.cpus = sorted(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else []

    def __enter__(self):
        self._busy = _busy_jiffies(self.cpus)
        self._own = sum(os.times()[:2])
        self._t = time.perf_counter()
        return self

    def __exit__(self, *exc):
        self.wall = time.perf_counter() - self._t
        busy = _busy_jiffies(self.cpus)
        own = sum(os.times()[:2]) - self._own
        if self._busy is None or busy is None or self.wall <= 0:
            self.foreign = None
        else:
            # jiffies are coarse (10 ms): short blocks read noisy, never below zero
            self.foreign = max(0.0, ((busy - self._busy) / _HZ - own) / self.wall)
        return False
