"""The update's thread count: all usable cores when the machine is idle, fewer when other processes are busy."""

from __future__ import annotations

import pytest
import torch

from metarl.threads import ThreadPolicy, free_cores


@pytest.mark.parametrize(("cores", "others", "expected"), [
    (2, 0.0, 2),    # idle machine
    (2, 0.3, 2),    # a little background noise
    (2, 0.67, 1),   # one CPU-bound process next to our two threads gets two thirds of a core
    (2, 1.0, 1),    # ... and a whole one after we dropped to one thread
    (2, 7.0, 1),    # never below one
    (16, 2.2, 14),
])
def test_free_cores(cores: int, others: float, expected: int) -> None:
    assert free_cores(cores, others) == expected


def test_a_busy_process_next_door_is_seen() -> None:
    """A CPU-bound child process shows up as about one busy core (where /proc/stat exists)."""
    import subprocess
    import sys
    import time

    policy = ThreadPolicy(0)
    if policy.busy is None:
        pytest.skip("no /proc/stat")
    child = subprocess.Popen([sys.executable, "-c", "while True: pass"])
    try:
        time.sleep(0.3)
        policy.others_busy()
        time.sleep(1.0)
        assert policy.others_busy() > 0.6
    finally:
        child.kill()
        child.wait()


def test_fixed_threads_and_validation() -> None:
    before = torch.get_num_threads()
    try:
        assert ThreadPolicy(3).apply() == 3 and torch.get_num_threads() == 3
        assert 1 <= ThreadPolicy(0).apply() <= ThreadPolicy(0).cores
    finally:
        torch.set_num_threads(before)
    with pytest.raises(ValueError, match="threads"):
        ThreadPolicy(-1)
