"""MAML's inner loop: policy-gradient adaptation steps for a batch of tasks at once, differentiable (`inner_step`,
`adapt`: the meta-objective replays them) or values only (`adapted_values`: collecting and evaluating), and the
test-time adaptation that `metarl eval` measures (`adaptation_returns`, with the paper's step-size schedule)."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import torch
from torch import Tensor, nn
from torch.func import grad

from metarl import meta_products
from metarl.algos.maml_config import MAMLConfig
from metarl.estimators import TaskData, inner_objective, prepare
from metarl.policies import Params, num_stacked, stack
from metarl.sampler import Batch, SamplerProtocol
from metarl.value_baseline import for_run, stage_values


def per_task(policy: nn.Module, params: Params, data: TaskData) -> Params:
    """Params with one copy per task of `data` ([T, E, H, ...]): shared params are expanded (a differentiable
    view), stacked ones pass through. Single-task data ([E, H, ...]) keeps shared params as they are."""
    if num_stacked(policy, params) is None and data.adv.dim() == 3:
        return stack(params, data.adv.shape[0])
    return params


def inner_step(
    policy: nn.Module,
    params: Params,
    data: TaskData,
    lr: float,
    estimator: str = "dice",
    dice_lambda: float = 1.0,
    first_order: bool = False,
) -> Params:
    """θ_t + α·∇L_in(θ_t; data_t) for every task t at once; differentiable in θ unless `first_order`.

    With data [T, E, H, ...] the params are made per task ([T, ...]); the surrogates are separable across tasks, so
    the gradient of their *sum* w.r.t. the stacked copy is exactly the per-task gradients: one batched backward
    pass instead of a vmap over tasks. Formulation II ("emaml") differentiates the naive surrogate: given its
    samples, the sampled step is exactly θ ↦ θ + α ĝ_naive(θ).
    """
    inner = "naive" if estimator == "emaml" else estimator
    params = per_task(policy, params, data)
    g = grad(lambda p: inner_objective(policy, p, data, inner, dice_lambda).sum())(params)
    if first_order:
        g = {k: v.detach() for k, v in g.items()}
    return {k: params[k] + lr * g[k] for k in params}


def adapt(
    policy: nn.Module,
    params: Params,
    steps: Sequence[TaskData],
    lrs: Sequence[float],
    estimator: str = "dice",
    dice_lambda: float = 1.0,
    first_order: bool = False,
) -> Params:
    """Replay k inner steps on stored data (step j uses `steps[j]`, sampled with θ_j); returns θ_k per task."""
    for data, lr in zip(steps, lrs, strict=True):
        params = inner_step(policy, params, data, lr, estimator, dice_lambda, first_order)
    return params


def prepare_batch(batch: Batch, cfg: MAMLConfig, values: Tensor | None = None) -> TaskData:
    """Advantages and step weights of a sampled batch with `cfg`'s baseline, GAE, normalisation and averaging
    (`values` [T, E, H]: the learned baseline's prediction for baseline=value, `stage_values`). Cross-fitting needs
    another episode to fit on: an evaluation with one episode per step fits on the same one."""
    cross_fit = cfg.cross_fit and batch.mask.shape[1] >= 2
    return prepare(batch, cfg.gamma, cfg.gae_lambda, cfg.baseline, cfg.normalize_advantages, cfg.average, cross_fit,
                   values)


def adapted_values(
    policy: nn.Module, params: Params, data: TaskData, lr: float, cfg: MAMLConfig
) -> Params:
    """θ + α·∇L_in(θ) per task, detached (collecting and evaluating need the values only): the fused products for the
    built-in MLPs unless `cfg.derivatives` is "autograd"."""
    lay = meta_products.supports(policy, params) if cfg.derivatives == "fused" else None
    if lay is not None:
        inner = "naive" if cfg.estimator == "emaml" else cfg.estimator
        return meta_products.adapt(lay, params, [data], [lr], inner)
    with torch.no_grad():  # no graph needed; torch.func.grad still differentiates inside
        step = inner_step(policy, params, data, lr, cfg.estimator, cfg.dice_lambda, first_order=True)
    return {k: v.detach() for k, v in step.items()}


def adaptation_returns(
    cfg: MAMLConfig,
    sampler: SamplerProtocol,
    policy: nn.Module,
    params: Params,
    tasks: Any,
    step_sizes: Sequence[float],
    episodes: int,
    generator: torch.Generator,
    extra: Mapping[str, Any] | None = None,
) -> Tensor:
    """MAML's test-time adaptation: undiscounted returns [k+1, T, E] before and after each of the k = len(step_sizes)
    policy-gradient steps, each step on E fresh episodes sampled with the current adapted policies.

    `extra` is the trained run's `TrainState.extra`: with baseline=value the inner steps use its learned baseline
    (frozen; steps beyond training's k use its last inner stage; none yet before the first iteration, as there)."""
    value = None
    if cfg.baseline == "value":
        if extra is None:
            raise ValueError("baseline=value adapts with the run's learned value baseline: pass the run state's "
                             "`extra` (TrainState.extra, a checkpoint's state['extra'])")
        value = for_run(cfg, sampler.family.obs_dim, tasks, extra.get("value"))
    returns = []
    adapted = params
    for j, lr in enumerate(step_sizes):
        batch = sampler.sample(policy, adapted, tasks, episodes, generator)
        returns.append(batch.returns)
        data = prepare_batch(batch, cfg, stage_values(value, batch, tasks, min(j, cfg.inner_steps - 1)))
        adapted = adapted_values(policy, adapted, data, lr, cfg)
    returns.append(sampler.sample(policy, adapted, tasks, episodes, generator).returns)
    return torch.stack(returns)


def default_eval_step_sizes(cfg: MAMLConfig, steps: int) -> tuple[float, ...]:
    """The MAML paper's test-time schedule: α for the first step, α/2 afterwards (notes/anchors-metarl.md §1.1)."""
    alpha = cfg.step_sizes[0]
    return tuple([alpha] + [alpha / 2] * (steps - 1)) if steps > 0 else ()
