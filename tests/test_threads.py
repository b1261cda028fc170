"""The update's thread count: all usable cores when the machine is idle, fewer when other processes are busy."""

from __future__ import annotations

import pytest
import torch

from metarl.threads import ThreadPolicy, free_cores


@pytest.mark.parametrize(("cores", "load", "own", "expected"), [
    (2, 0.1, 0.0, 2),   # idle machine, our run just started
    (2, 2.0, 1.9, 2),   # only we keep the machine busy
    (2, 3.0, 1.3, 1),   # one other CPU-bound process next to our two threads
    (2, 2.0, 1.0, 1),   # ... and after we dropped to one thread
    (2, 9.0, 1.0, 1),   # heavily loaded: never below one
    (16, 4.2, 2.0, 14),
])
def test_free_cores(cores: int, load: float, own: float, expected: int) -> None:
    assert free_cores(cores, load, own) == expected


def test_fixed_threads_and_validation() -> None:
    before = torch.get_num_threads()
    try:
        assert ThreadPolicy(3).apply() == 3 and torch.get_num_threads() == 3
        assert 1 <= ThreadPolicy(0).apply() <= ThreadPolicy(0).cores
    finally:
        torch.set_num_threads(before)
    with pytest.raises(ValueError, match="threads"):
        ThreadPolicy(-1)
