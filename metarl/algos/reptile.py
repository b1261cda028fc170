"""Reptile for RL (Nichol, Achiam, Schulman 2018, arXiv 1803.02999) on the shared batched sampler.

Per meta-iteration, for T tasks in one batch:
1. k inner policy-gradient steps per task, φ_{j+1} = φ_j + α_j·step(ĝ_j) with φ_0 = θ, each on E fresh episodes
   sampled with the current φ_j of every task (one batched sampler call per step, one parameter set per task); the
   step is plain SGD or a per-task Adam whose state starts fresh every meta-iteration;
2. θ ← θ + ε·mean_T(φ_k − θ), with ε annealed linearly from `outer_lr` to `outer_lr_final` over the run (the
   Reptile paper anneals to 0).

Nothing is differentiated through the inner loop. With k = 1 and SGD, E[φ_1 − θ] = α∇V/H: Reptile is joint
(multi-task) training. The meta-learning signal appears at k ≥ 2: E[φ_2 − θ] = 2α∇V/H + α²∇²V∇V/H² for quadratic V
(notes/metagrad.md §5.1; the 1/H is the per-step-average surrogate scaling of metarl/estimators.py). Both are tested
exactly on the analytic MDP (tests/test_reptile.py).
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Literal, NamedTuple

import torch
from torch import Tensor, nn
from torch.func import grad

from metarl.algos.maml_inner import per_task
from metarl.config import PolicyConfig, RunConfig
from metarl.estimators import TaskData, inner_objective, prepare
from metarl.family import num_tasks
from metarl.logger import Logger
from metarl.policies import Params
from metarl.sampler import Sampler, SamplerProtocol
from metarl.training import OnIteration, TrainState, iterate, start


@dataclass(frozen=True)
class ReptileConfig:
    """Reptile (Nichol et al. 2018): k policy-gradient steps per task, then θ ← θ + ε·mean_T(φ_k − θ)."""

    family: str = "HalfCheetahVel-v0"
    """task family id (`metarl families`)"""
    meta_batch_size: int = 40
    """tasks T per meta-iteration"""
    episodes_per_task: int = 20
    """episodes E per task for each inner step (and for the logged post-adaptation batch)"""
    inner_steps: int = 3
    """policy-gradient steps k per task (k = 1 is joint training; the meta-signal needs k >= 2)"""
    inner_lr: float = 0.1
    """inner step size α (SGD on the per-step-average surrogate, as MAML's inner_lr; Adam's lr)"""
    inner_optimizer: Literal["sgd", "adam"] = "sgd"
    """inner optimiser, one per task, its state reset every meta-iteration"""
    adam_betas: tuple[float, float] = (0.0, 0.999)
    """inner Adam (β1, β2); the Reptile paper found β1 = 0 helpful"""
    adam_eps: float = 1e-8
    """inner Adam ε"""
    outer_lr: float = 1.0
    """meta step size ε at the first iteration (Reptile paper: 1.0)"""
    outer_lr_final: float = 0.0
    """meta step size at the end of the run; ε is interpolated linearly in between (equal values: constant)"""
    gamma: float = 0.99
    """discount"""
    gae_lambda: float = 1.0
    """GAE λ"""
    baseline: Literal["linear", "none"] = "linear"
    """state-value baseline: rllab's linear feature baseline refit per task, or none (raw returns)"""
    normalize_advantages: bool = True
    """standardise advantages per task (rllab center_adv)"""
    post_batch: bool = True
    """sample E more episodes per task with φ_k to log meta/return_post_k (logging only; costs 1/k more samples)"""
    policy: PolicyConfig = field(default_factory=PolicyConfig)
    run: RunConfig = field(default_factory=RunConfig)

    def __post_init__(self) -> None:
        checks = [
            (self.meta_batch_size >= 1, "meta_batch_size must be >= 1"),
            (self.episodes_per_task >= 1, "episodes_per_task must be >= 1"),
            (self.inner_steps >= 1, "inner_steps (k) must be >= 1"),
            (self.inner_lr > 0, "inner_lr (α) must be > 0"),
            (self.inner_optimizer in ("sgd", "adam"), "inner_optimizer must be 'sgd' or 'adam'"),
            (len(self.adam_betas) == 2 and all(0.0 <= b < 1.0 for b in self.adam_betas),
             "adam_betas must be two values in [0, 1)"),
            (self.adam_eps > 0, "adam_eps must be > 0"),
            (self.outer_lr > 0 and self.outer_lr_final >= 0, "need outer_lr (ε) > 0 and outer_lr_final >= 0"),
            (0.0 <= self.gamma <= 1.0 and 0.0 <= self.gae_lambda <= 1.0, "gamma and gae_lambda must be in [0, 1]"),
            (not self.policy.deterministic,
             "Reptile's inner policy-gradient steps need a stochastic policy; drop --policy.deterministic"),
        ]
        for ok, message in checks:
            if not ok:
                raise ValueError(message)


# ----------------------------------------------------------------------------------------------- inner loop
def policy_gradients(policy: nn.Module, params: Params, data: TaskData) -> tuple[Params, Params]:
    """(per-task params [T, ...], per-task policy-gradient estimates [T, ...] of ∇V/H at them).

    The REINFORCE surrogate's gradient is the plain PG estimate; its wrong Hessian is irrelevant here because
    Reptile never differentiates through the step. The surrogates are separable across tasks, so the gradient of
    their sum w.r.t. the stacked copy is exactly the per-task gradients (one batched backward pass).
    """
    stacked = per_task(policy, params, data)
    grads = grad(lambda p: inner_objective(policy, p, data, "naive").sum())(stacked)
    return stacked, {k: v.detach() for k, v in grads.items()}


class AdamState(NamedTuple):
    """Per-task Adam moments [T, ...] (same keys as the params) and the number of steps taken."""

    m: Params
    v: Params
    step: int


def adam_init(params: Params) -> AdamState:
    return AdamState({k: torch.zeros_like(v) for k, v in params.items()},
                     {k: torch.zeros_like(v) for k, v in params.items()}, 0)


def adam_step(params: Params, grads: Params, state: AdamState, lr: float, betas: tuple[float, float],
              eps: float) -> tuple[Params, AdamState]:
    """One Adam step *up* the gradient, element-wise, so stacked [T, ...] params get one optimiser per task.

    The arithmetic is torch.optim.Adam's (tested equal to it per task).
    """
    b1, b2 = betas
    t = state.step + 1
    m = {k: b1 * state.m[k] + (1 - b1) * g for k, g in grads.items()}
    v = {k: b2 * state.v[k] + (1 - b2) * g * g for k, g in grads.items()}
    step_size = lr / (1 - b1**t)
    root_bc2 = math.sqrt(1 - b2**t)
    new = {k: p + step_size * m[k] / (v[k].sqrt() / root_bc2 + eps) for k, p in params.items()}
    return new, AdamState(m, v, t)


class InnerLoop(NamedTuple):
    """What k inner steps produced.

    Attributes:
        adapted: φ_k, stacked [T, ...].
        returns: [k, T, E] undiscounted returns of the batch inner step j was taken on (sampled with φ_j).
        env_steps: environment steps sampled.
    """

    adapted: Params
    returns: Tensor
    env_steps: int


def inner_loop(
    cfg: ReptileConfig,
    sampler: SamplerProtocol,
    policy: nn.Module,
    params: Params,
    tasks: Any,
    lrs: Sequence[float],
    episodes: int,
    generator: torch.Generator,
) -> InnerLoop:
    """k = len(lrs) inner steps for all T tasks at once, each on `episodes` fresh episodes per task sampled with the
    current per-task params; the optimiser (cfg.inner_optimizer) starts fresh, as at test time (metagrad.md §5.1)."""
    adapted, state = params, None
    returns, steps = [], 0
    for lr in lrs:
        batch = sampler.sample(policy, adapted, tasks, episodes, generator)
        returns.append(batch.returns)
        steps += batch.num_steps
        data = prepare(batch, cfg.gamma, cfg.gae_lambda, cfg.baseline, cfg.normalize_advantages)
        stacked, grads = policy_gradients(policy, adapted, data)
        if cfg.inner_optimizer == "adam":
            adapted, state = adam_step(stacked, grads, state or adam_init(stacked), lr, cfg.adam_betas,
                                       cfg.adam_eps)
        else:
            adapted = {k: p + lr * grads[k] for k, p in stacked.items()}
    if not returns:  # k = 0 (e.g. `metarl eval --steps 0`): no inner batch
        dtype = next(iter(params.values())).dtype
        return InnerLoop(adapted, torch.empty(0, num_tasks(tasks), episodes, dtype=dtype), 0)
    return InnerLoop(adapted, torch.stack(returns), steps)


def reptile_update(params: Params, adapted: Params, outer_lr: float) -> Params:
    """θ + ε·mean_T(φ_T − θ): shared params, stacked adapted [T, ...] -> shared params."""
    return {k: v + outer_lr * (adapted[k] - v).mean(0) for k, v in params.items()}


def outer_lr_at(cfg: ReptileConfig, iteration: int) -> float:
    """ε at `iteration`: linear from outer_lr to outer_lr_final over run.iterations (Reptile paper, §5)."""
    frac = iteration / max(cfg.run.iterations, 1)
    return (1 - frac) * cfg.outer_lr + frac * cfg.outer_lr_final


# ----------------------------------------------------------------------------------------------- evaluation
def adaptation_returns(
    cfg: ReptileConfig,
    sampler: SamplerProtocol,
    policy: nn.Module,
    params: Params,
    tasks: Any,
    step_sizes: Sequence[float],
    episodes: int,
    generator: torch.Generator,
    extra: Mapping[str, Any] | None = None,
) -> Tensor:
    """Reptile's test-time adaptation, the training inner loop replayed: undiscounted returns [k+1, T, E] before and
    after each of the k = len(step_sizes) steps (same optimiser, fresh state), each on E fresh episodes."""
    with torch.no_grad():
        inner = inner_loop(cfg, sampler, policy, params, tasks, step_sizes, episodes, generator)
    final = sampler.sample(policy, inner.adapted, tasks, episodes, generator).returns
    return torch.cat([inner.returns, final.unsqueeze(0)])


def eval_step_sizes(cfg: ReptileConfig, steps: int) -> tuple[float, ...]:
    """The training step size for every test-time step (Reptile adapts at test time exactly as it trains)."""
    return (cfg.inner_lr,) * steps


# ----------------------------------------------------------------------------------------------- training
def _metrics(inner: InnerLoop, post: Tensor | None) -> dict[str, float]:
    """meta/return_pre and meta/return_post_j (j < k from the inner batches, k from the post batch)."""
    returns = [float(r.mean()) for r in inner.returns]
    if post is not None:
        returns.append(float(post.mean()))
    return {
        "meta/return_pre": returns[0],
        **{f"meta/return_post_{j}": r for j, r in enumerate(returns[1:], start=1)},
    }


def train(
    cfg: ReptileConfig,
    logger: Logger | None = None,
    on_iteration: OnIteration | None = None,
    state: TrainState | None = None,
) -> TrainState:
    """Meta-train with `cfg` from `state` (default: a fresh start) to `cfg.run.iterations`; returns the final state.

    All randomness after the policy's initialisation comes from one generator whose state is part of `TrainState`,
    so continuing from a saved state reproduces an uninterrupted run exactly.
    """
    session = start(cfg, state)
    family, policy, sampler = session.family, session.policy, Sampler(session.family, session.backend)
    lrs = (cfg.inner_lr,) * cfg.inner_steps

    def collect(state: TrainState, generator: torch.Generator) -> tuple[Params, dict[str, float], int]:
        tasks = family.sample_tasks(cfg.meta_batch_size, generator)
        with torch.no_grad():  # nothing is differentiated through; torch.func.grad still works inside
            inner = inner_loop(cfg, sampler, policy, state.params, tasks, lrs, cfg.episodes_per_task, generator)
            post, steps = None, inner.env_steps
            if cfg.post_batch:
                batch = sampler.sample(policy, inner.adapted, tasks, cfg.episodes_per_task, generator)
                post, steps = batch.returns, steps + batch.num_steps
        return inner.adapted, _metrics(inner, post), steps

    def update(state: TrainState, adapted: Params) -> tuple[Params, None, dict[str, float]]:
        outer_lr = outer_lr_at(cfg, state.iteration)
        new = reptile_update(state.params, adapted, outer_lr)
        norm = torch.sqrt(sum((new[k] - state.params[k]).square().sum() for k in new))
        return new, None, {"outer/lr": outer_lr, "outer/step_norm": float(norm)}

    return iterate(cfg, session, collect, update, logger, on_iteration)


# ----------------------------------------------------------------------------------------------- presets
PRESETS: dict[str, dict[str, Any]] = {
    # small and quick: clearly improves PointNav's post-adaptation return in under a minute on 2 cores
    "fast": {"family": "PointNav-v0", "meta_batch_size": 20, "episodes_per_task": 10, "inner_steps": 2,
             "inner_lr": 0.3, "policy.hidden": (64, 64), "policy.activation": "tanh", "run.iterations": 60,
             "run.checkpoint_every": 10},
}
