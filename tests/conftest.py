"""Shared fixtures: an RNG-leak guard, GPU skipping, an explicit generator, and scripts/ loaded as modules."""

from __future__ import annotations

import importlib.util
from collections.abc import Callable, Iterator
from pathlib import Path
from types import ModuleType

import numpy as np
import pytest
import torch


def pytest_configure(config: pytest.Config) -> None:
    """One torch thread: the tests' batches are small, and on a busy 2-core box a second OpenMP thread makes them
    several times slower (metarl/threads.py); code under test that chooses threads itself still does."""
    torch.set_num_threads(1)


@pytest.fixture(autouse=True)
def _rng_guard() -> Iterator[None]:
    """Run every test from the same global RNG state and restore the caller's state afterwards.

    The library must draw randomness only from explicit generators (DESIGN.md idea 1), but tests build `nn.Module`s
    whose initialisation uses the global torch RNG. Seeding here makes each test independent of test order; restoring
    afterwards keeps one test's draws from leaking into the next.
    """
    torch_state, np_state = torch.random.get_rng_state(), np.random.get_state()
    torch.manual_seed(0)
    np.random.seed(0)
    try:
        yield
    finally:
        torch.random.set_rng_state(torch_state)
        np.random.set_state(np_state)


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    """Skip `gpu`-marked tests on machines without CUDA (they still run when selected with `-m gpu` on a GPU)."""
    if torch.cuda.is_available():
        return
    skip = pytest.mark.skip(reason="needs CUDA")
    for item in items:
        if "gpu" in item.keywords:
            item.add_marker(skip)


@pytest.fixture
def generator() -> torch.Generator:
    """A fresh CPU generator with a fixed seed: the only randomness a test should hand to the library."""
    return torch.Generator().manual_seed(0)


@pytest.fixture
def load_script() -> Callable[[str], ModuleType]:
    """name -> scripts/<name>.py imported as a module (scripts/ is not a package), for testing its functions."""

    def load(name: str) -> ModuleType:
        path = Path(__file__).resolve().parent.parent / "scripts" / f"{name}.py"
        spec = importlib.util.spec_from_file_location(name, path)
        assert spec is not None and spec.loader is not None
        module = importlib.util.module_from_spec(spec)
        spec.loader.exec_module(module)
        return module

    return load
