"""How many torch threads the update gets: every usable core on an idle machine, fewer when others are busy.

On the 2-core boxes this project targets, OpenMP threads that outnumber the free cores do not just share them: they
wait at every parallel region for a preempted sibling. Measured on HalfCheetahVel's TRPO update with one other
CPU-bound process: 15.9 s with torch's default 2 threads against 3.8 s with one (2.0 s with two on an idle box). So
the count is chosen per iteration from the CPU time the *other* processes used since the last choice: the machine's
busy time (/proc/stat) minus this process's own, over the wall time, rounded, taken from the usable cores. (The load
average would lag by a minute: a benchmark started right after another job ends would run on one thread.)
`--run.threads N` fixes it instead. Rollouts always run torch on one thread (metarl/sampler.py): there the
simulator's threads need the cores.
"""

from __future__ import annotations

import os
import resource
import time

import torch

from metarl.sim import default_nthread


def _own_cpu_seconds() -> float:
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


def _machine_busy_seconds() -> float | None:
    """CPU seconds all processes spent busy since boot (summed over cores), or None without /proc/stat."""
    try:
        with open("/proc/stat") as f:
            fields = [int(x) for x in f.readline().split()[1:]]
    except (OSError, ValueError):
        return None
    idle = fields[3] + (fields[4] if len(fields) > 4 else 0)  # idle + iowait
    return (sum(fields[:8]) - idle) / os.sysconf("SC_CLK_TCK")  # user..steal; guest time is inside user


def free_cores(cores: int, others_busy: float) -> int:
    """Cores left for us: `cores` minus the cores other processes kept busy (rounded), at least 1."""
    return max(1, min(cores, cores - round(max(0.0, others_busy))))


class ThreadPolicy:
    """Sets torch's intra-op threads before each update.

    Args:
        threads: a fixed count (≥ 1), or 0 to follow the machine (`free_cores`).
    """

    def __init__(self, threads: int = 0) -> None:
        if threads < 0:
            raise ValueError(f"threads must be >= 0 (0: automatic), got {threads}")
        self.fixed = threads
        self.cores = default_nthread()
        self._mark()

    def _mark(self) -> None:
        self.clock, self.own, self.busy = time.monotonic(), _own_cpu_seconds(), _machine_busy_seconds()

    def others_busy(self) -> float:
        """Cores other processes kept busy since the last call (0 where /proc/stat is missing)."""
        clock, own, busy = self.clock, self.own, self.busy
        self._mark()
        if busy is None or self.busy is None:
            return 0.0
        return max(0.0, (self.busy - busy) - (self.own - own)) / max(self.clock - clock, 1e-3)

    def apply(self) -> int:
        """Choose and set the thread count for what follows; returns it."""
        n = self.fixed or free_cores(self.cores, self.others_busy())
        if torch.get_num_threads() != n:
            torch.set_num_threads(n)
        return n
