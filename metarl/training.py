"""The training driver shared by every algorithm: run directory, logging, progress, checkpoints, resume.

An algorithm's `train(cfg, logger, on_iteration, state)` runs iterations `state.iteration ..` and calls
`on_iteration(state, metrics)` after each; the `TrainState` it passes holds everything needed to continue exactly
(parameters, the one torch.Generator's state, optimiser state), so a resumed run matches an uninterrupted one.
"""

from __future__ import annotations

import dataclasses
import json
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from rich.progress import BarColumn, Progress, TextColumn, TimeElapsedColumn, TimeRemainingColumn

from metarl import registry
from metarl.logger import RunLogger
from metarl.policies import Params
from metarl.runs import FORMAT_VERSION, config_to_dict, new_run_dir, save_checkpoint, write_run_files


@dataclass
class TrainState:
    """Everything a run needs to continue from `iteration` (the next iteration to run)."""

    iteration: int
    params: Params
    generator_state: torch.Tensor
    optimizer_state: dict[str, Any] | None = None
    env_steps: int = 0
    extra: dict[str, Any] = field(default_factory=dict)
    """algorithm-specific state (e.g. ES-MAML's observation statistics)"""


OnIteration = Callable[[TrainState, dict[str, float]], None]

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
    finite = new is not None and all_finite(new) and all(map(_finite, metrics.values()))
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


def _finite(value: float) -> bool:
    return value == value and value not in (float("inf"), float("-inf"))


def flat_config(cfg: Any, prefix: str = "") -> dict[str, Any]:
    """Nested config dataclass -> {"trpo.max_kl": 0.01, ...} for hyper-parameter tables."""
    out: dict[str, Any] = {}
    for f in dataclasses.fields(cfg):
        value = getattr(cfg, f.name)
        key = f"{prefix}{f.name}"
        if dataclasses.is_dataclass(value):
            out.update(flat_config(value, f"{key}."))
        else:
            out[key] = value
    return out


def checkpoint_payload(algo: str, cfg: Any, spec: registry.FamilySpec, policy: torch.nn.Module,
                       state: TrainState) -> dict[str, Any]:
    """What `checkpoint.pt` holds: the state plus enough to rebuild the policy and check compatibility."""
    from metarl import __version__

    policy.load_state_dict({**policy.state_dict(), **state.params}, strict=False)
    return {
        "format_version": FORMAT_VERSION,
        "metarl_version": __version__,
        "algo": algo,
        "config": config_to_dict(cfg),
        "family_spec": spec.to_json(),
        "policy_state": {k: v.clone() for k, v in policy.state_dict().items()},
        "state": dataclasses.asdict(state),
    }


def state_from_checkpoint(payload: dict[str, Any]) -> TrainState:
    return TrainState(**payload["state"])


class Checkpointer:
    """Writes `checkpoint.pt` every `every` iterations and at the end, atomically."""

    def __init__(self, run_dir: Path, algo: str, cfg: Any, spec: registry.FamilySpec, policy: torch.nn.Module,
                 every: int, total: int) -> None:
        self.run_dir, self.algo, self.cfg, self.spec, self.policy = run_dir, algo, cfg, spec, policy
        self.every, self.total = every, total

    def __call__(self, state: TrainState, metrics: dict[str, float]) -> None:
        if not all_finite(state.params):  # guard_update keeps this from happening; never write a NaN checkpoint
            raise NonFiniteError("refusing to checkpoint non-finite parameters")
        if state.iteration % self.every == 0 or state.iteration == self.total:
            save_checkpoint(self.run_dir / "checkpoint.pt",
                            checkpoint_payload(self.algo, self.cfg, self.spec, self.policy, state))


def progress_bar(total: int) -> Progress:
    return Progress(
        TextColumn("[bold]{task.description}"),
        BarColumn(),
        TextColumn("{task.completed}/{task.total}"),
        TextColumn("{task.fields[status]}"),
        TimeElapsedColumn(),
        TextColumn("ETA"),
        TimeRemainingColumn(),
    )


def summary(metrics: dict[str, float]) -> str:
    """One short status line: pre/post returns and throughput."""
    post = [k for k in metrics if k.startswith("meta/return_post_")]
    parts = []
    if "meta/return_pre" in metrics:
        parts.append(f"pre {metrics['meta/return_pre']:.1f}")
    if post:
        last = max(post, key=lambda k: int(k.rsplit("_", 1)[1]))
        parts.append(f"post {metrics[last]:.1f}")
    if "perf/steps_per_s" in metrics:
        parts.append(f"{metrics['perf/steps_per_s']:,.0f} steps/s")
    return "  ".join(parts)


def run(algo_name: str, cfg: Any, resume_dir: Path | None = None, quiet: bool = False) -> Path:
    """Train `algo_name` with `cfg` in a new run directory (or continue `resume_dir`); returns the run directory."""
    from metarl.algos import ALGORITHMS

    algo = ALGORITHMS[algo_name]
    spec = registry.spec(cfg.family).with_kwargs(**cfg.run.family_kwargs)
    registry.make(spec)  # fail early, before creating anything, if the family or its kwargs are wrong
    state: TrainState | None = None
    if resume_dir is None:
        run_dir = new_run_dir(cfg.run.runs_dir, cfg.family, algo_name, cfg.run.seed)
        write_run_files(run_dir, algo_name, cfg, spec)
    else:
        run_dir = resume_dir
        state = state_from_checkpoint(torch.load(run_dir / "checkpoint.pt", weights_only=False))
        _truncate_metrics(run_dir, state.iteration)
    policy = algo.build_policy(cfg, registry.make(spec))
    logger = RunLogger(run_dir, tensorboard=cfg.run.tensorboard, hparams=flat_config(cfg),
                       purge_step=None if state is None else state.iteration)
    checkpointer = Checkpointer(run_dir, algo_name, cfg, spec, policy, cfg.run.checkpoint_every, cfg.run.iterations)
    start = 0 if state is None else state.iteration
    with progress_bar(cfg.run.iterations) as bar:
        task = bar.add_task(f"{algo_name} {cfg.family}", total=cfg.run.iterations, completed=start, status="",
                            visible=not quiet)

        def on_iteration(s: TrainState, metrics: dict[str, float]) -> None:
            checkpointer(s, metrics)
            bar.update(task, completed=s.iteration, status=summary(metrics))

        try:
            algo.train(cfg, logger, on_iteration, state)
        finally:
            logger.close()
    return run_dir


def _truncate_metrics(run_dir: Path, iteration: int) -> None:
    """Drop metrics of iterations after the checkpoint: the resumed run recomputes them identically."""
    path = run_dir / "metrics.jsonl"
    if not path.exists():
        return
    lines = [line for line in path.read_text().splitlines() if line.strip()]
    kept = [line for line in lines if json.loads(line)["iteration"] < iteration]
    path.write_text("".join(f"{line}\n" for line in kept))


def timed() -> Callable[[], float]:
    """A stopwatch: call it to get seconds since creation."""
    start = time.perf_counter()
    return lambda: time.perf_counter() - start
