"""How many torch threads the update gets: every usable core on an idle machine, fewer when others are busy.

On the 2-core boxes this project targets, OpenMP threads that outnumber the free cores do not just share them: they
wait at every parallel region for a preempted sibling. Measured on HalfCheetahVel's TRPO update with one other
CPU-bound process: 15.9 s with torch's default 2 threads against 3.8 s with one (3.2 s with two on an idle box, 6.3
with one). So the count is chosen per iteration from the load the *other* processes put on the machine: the 1-minute
load average minus this process's own CPU use over the last interval (both count runnable threads), rounded, taken
from the usable cores. `--run.threads N` fixes it instead. Rollouts always run torch on one thread
(metarl/sampler.py): there the simulator's threads need the cores.
"""

from __future__ import annotations

import os
import resource
import time

import torch

from metarl.sim import default_nthread


def _cpu_seconds() -> float:
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


def free_cores(cores: int, load: float, own_cpu: float) -> int:
    """Cores left for us: `cores` minus the rounded load of other processes (`load` − `own_cpu`), at least 1."""
    others = max(0.0, load - own_cpu)
    return max(1, min(cores, cores - round(others)))


class ThreadPolicy:
    """Sets torch's intra-op threads before each update.

    Args:
        threads: a fixed count (≥ 1), or 0 to follow the machine's load (`free_cores`).
    """

    def __init__(self, threads: int = 0) -> None:
        if threads < 0:
            raise ValueError(f"threads must be >= 0 (0: automatic), got {threads}")
        self.fixed = threads
        self.cores = default_nthread()
        self.clock, self.cpu = time.monotonic(), _cpu_seconds()

    def apply(self) -> int:
        """Choose and set the thread count for what follows; returns it."""
        if self.fixed:
            n = self.fixed
        else:
            now, cpu = time.monotonic(), _cpu_seconds()
            own = (cpu - self.cpu) / max(now - self.clock, 1e-3)  # cores this process kept busy since the last call
            self.clock, self.cpu = now, cpu
            n = free_cores(self.cores, os.getloadavg()[0], own)
        if torch.get_num_threads() != n:
            torch.set_num_threads(n)
        return n
