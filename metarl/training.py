"""The iteration loop shared by every algorithm: its state, the collect-then-update loop and the non-finite guard.

An algorithm's `train(cfg, logger, on_iteration, state)` runs iterations `state.iteration ..`, logs each iteration's
metrics and then calls `on_iteration(state, metrics)`; the `TrainState` it passes holds everything needed to continue
exactly (parameters, the one torch.Generator's state, optimiser state), so a resumed run matches an uninterrupted one.

The run directory around it (checkpoints, validation, resume, progress) is metarl/driver.py.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass, field, replace
from typing import TYPE_CHECKING, Any

import torch

from metarl import registry
from metarl.config import build_policy, run_backend
from metarl.logger import Logger, NullLogger
from metarl.policies import Params, params_of
from metarl.sim import backend_device
from metarl.threads import ThreadPolicy

if TYPE_CHECKING:
    from torch import nn

    from metarl.family import TaskFamily


@dataclass
class TrainState:
    """Everything a run needs to continue from `iteration` (the next iteration to run)."""

    iteration: int
    params: Params
    generator_state: torch.Tensor
    optimizer_state: dict[str, Any] | None = None
    env_steps: int = 0
    extra: dict[str, Any] = field(default_factory=dict)
    """algorithm-specific state that evolves with the run (MAML's learned value baseline under "value"): an
    algorithm's collect step updates it in place, `iterate` carries it to the next state, checkpoints copy it"""


OnIteration = Callable[[TrainState, dict[str, float]], None]

@dataclass
class Session:
    """What every algorithm's `train` builds first: its family, policy, state and the run's one generator."""

    family: TaskFamily
    policy: nn.Module
    state: TrainState
    generator: torch.Generator
    backend: str = "cpu"
    """the simulator backend and device (`metarl.sim`): `Sampler(family, backend)`; policy and params are on its
    device"""


def start(cfg: Any, state: TrainState | None, family: TaskFamily | None = None) -> Session:
    """Build the family (unless given), the policy from `cfg.run.seed` and the state to continue from (fresh: the
    policy's initial parameters and a generator seeded with `cfg.run.seed`)."""
    backend = run_backend(cfg.run) if hasattr(cfg.run, "backend") else "cpu"
    device = backend_device(backend)
    family = family or registry.make(cfg.family, **cfg.run.family_kwargs)
    # the learner follows the data: policy and parameters live where the rollouts come back (a no-op on cpu);
    # initialised on the CPU first, so a seed gives the same initial policy on every device
    policy = build_policy(cfg.policy, family, cfg.run.seed).to(device)
    if state is None:
        state = TrainState(0, params_of(policy), torch.Generator().manual_seed(cfg.run.seed).get_state())
    elif any(v.device != device for v in state.params.values()):  # a checkpoint read on another device
        state = replace(state, params={k: v.to(device) for k, v in state.params.items()})
    generator = torch.Generator()  # the run's one generator stays on the CPU (its state is in every checkpoint)
    generator.set_state(state.generator_state)
    return Session(family, policy, state, generator, backend)


Collect = Callable[[TrainState, torch.Generator], tuple[Any, dict[str, float], int]]
"""(state, generator) -> (data for the update, metrics of the sampling phase, env steps taken)."""
Update = Callable[[TrainState, Any], tuple["Params | None", Any, dict[str, float]]]
"""(state, data) -> (new params, new optimiser state, metrics); raises FloatingPointError on non-finite values."""


def iterate(
    cfg: Any,
    session: Session,
    collect: Collect,
    update: Update,
    logger: Logger | None = None,
    on_iteration: OnIteration | None = None,
) -> TrainState:
    """Run iterations `session.state.iteration ..< cfg.run.iterations` of collect-then-update.

    Shared by every algorithm: timing (`perf/*`), the non-finite guard (a FloatingPointError from `update` or any
    non-finite parameter or metric rejects the step: `guard_update`), logging, and the `TrainState` bookkeeping that
    makes a resumed run reproduce an uninterrupted one. Returns the final state.
    """
    logger = logger or NullLogger()
    state, generator, rejected = session.state, session.generator, 0
    threads = ThreadPolicy(getattr(cfg.run, "threads", 0))
    for it in range(state.iteration, cfg.run.iterations):
        clock = time.perf_counter()
        data, metrics, steps = collect(state, generator)
        sample_s = time.perf_counter() - clock
        metrics = {**metrics, "perf/threads": float(threads.apply())}
        try:
            new, optimizer_state, outer = update(state, data)
        except FloatingPointError:  # e.g. a NaN meta-gradient: guard_update rejects and logs the step
            new, optimizer_state, outer = None, state.optimizer_state, {}
        env_steps = state.env_steps + steps
        metrics = {**metrics, **outer, "perf/env_steps": float(env_steps), "perf/sample_s": sample_s,
                   "perf/update_s": time.perf_counter() - clock - sample_s,
                   "perf/steps_per_s": steps / max(sample_s, 1e-9)}
        params, metrics, rejected = guard_update(state.params, new, metrics, rejected)
        if rejected:
            optimizer_state = state.optimizer_state
        logger.log(it, metrics)
        state = TrainState(it + 1, params, generator.get_state(), optimizer_state, env_steps, state.extra)
        if on_iteration is not None:
            on_iteration(state, metrics)
    return state


MAX_REJECTIONS = 5
"""Consecutive non-finite updates after which a run stops (its last checkpoint is still finite)."""


class NonFiniteError(RuntimeError):
    """Training produced NaN/Inf repeatedly; the message says what to try."""


def all_finite(params: Params) -> bool:
    return all(bool(torch.isfinite(v).all()) for v in params.values())


def guard_update(
    old: Params, new: Params | None, metrics: dict[str, float], rejected: int
) -> tuple[Params, dict[str, float], int]:
    """Accept `new` only if it and the step's metrics are finite; otherwise keep `old` and log the rejection.

    `new` is None when the update itself failed on non-finite values (e.g. a NaN gradient). Returns (params to
    continue from, metrics with `guard/rejected` = 0 or 1, consecutive rejections so far).

    Raises:
        NonFiniteError: after `MAX_REJECTIONS` consecutive rejections.
    """
    finite = new is not None and all_finite(new) and all(map(finite_value, metrics.values()))
    if finite:
        assert new is not None
        return new, {**metrics, "guard/rejected": 0.0}, 0
    rejected += 1
    if rejected >= MAX_REJECTIONS:
        raise NonFiniteError(
            f"{rejected} consecutive updates produced NaN/Inf (rewards, advantages, gradients or KL); stopping. "
            "The last checkpoint holds finite parameters; try a smaller step size (inner_lr, max_kl, outer_lr)."
        )
    return old, {**metrics, "guard/rejected": 1.0}, rejected


def finite_value(value: float) -> bool:
    """Neither NaN nor ±inf (plain floats, as metrics are)."""
    return value == value and value not in (float("inf"), float("-inf"))
