"""MAML's meta-objective as a function of θ through the inner steps, and the outer step on it: TRPO's trust-region
problem (fused products for the built-in MLPs, else autograd), the plain meta-gradient, Adam."""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import replace
from typing import Any

import torch
from torch import Tensor, nn

from metarl import meta_products
from metarl.algos.maml_config import MAMLConfig
from metarl.algos.maml_inner import inner_step, per_task
from metarl.algos.maml_rollouts import MetaRollouts, subsample_episodes
from metarl.curvature import gauss_newton_kl_product, metric_estimator
from metarl.estimators import TaskData, mean_kl, outer_objective, score_term
from metarl.optim import adam_ascent
from metarl.policies import Params, PolicyOutput, forward
from metarl.trpo import ObjectiveProblem, TrustRegionProblem, flatten, kl_hvp, trpo_step, unflatten


def meta_objective(policy: nn.Module, params: Params, rollouts: MetaRollouts, cfg: MAMLConfig) -> tuple[Tensor, Tensor]:
    """(surrogate, KL) averaged over the T tasks as functions of the meta-parameters θ, through all k inner steps.

    Pure in (params, rollouts). The KL is KL(π_θ′_old ‖ π_θ′(θ)) on the post-update states, so TRPO's trust region
    is measured on the adapted policies, as in MAML.
    """
    adapted = per_task(policy, params, rollouts.post)
    surrogate = torch.zeros(rollouts.score_weight.shape, dtype=rollouts.post.adv.dtype,
                            device=rollouts.post.adv.device)
    for data, lr in zip(rollouts.pre, cfg.step_sizes, strict=True):
        if cfg.estimator == "emaml" and not cfg.first_order:
            surrogate = surrogate + score_term(policy, adapted, data, rollouts.score_weight)
        adapted = inner_step(policy, adapted, data, lr, cfg.estimator, cfg.dice_lambda, cfg.first_order)
    out = forward(policy, adapted, rollouts.post.obs)
    surrogate = surrogate + outer_objective(out, rollouts.post)
    if rollouts.old.log_std is None:
        return surrogate.mean(), torch.zeros((), dtype=surrogate.dtype)
    return surrogate.mean(), mean_kl(rollouts.old, out, rollouts.post.weight).mean()


def kl_curvature(
    policy: nn.Module, params: Params, rollouts: MetaRollouts, cfg: MAMLConfig
) -> Callable[[Tensor], Tensor]:
    """v -> ∇²_θ KL·v at θ = `params` (where `rollouts` were collected) as the Gauss–Newton product JᵀFJ
    (metarl/curvature.py), at the adapted parameters `collect` computed on the full batches.

    With `cfg.curvature_subsample` n > 1 the Hessians and the Fisher average over every n-th episode only: a
    cheaper estimate of the same matrix, taken at the same θ_1..θ_k (not at parameters adapted on the subsample,
    whose noisier inner gradient would move the point where the Fisher is evaluated).
    """
    if cfg.curvature_subsample > 1:
        rollouts = subsample_episodes(rollouts, cfg.curvature_subsample)
    adapted = [per_task(policy, {k: v.detach() for k, v in params.items()}, rollouts.post), *rollouts.adapted]
    return gauss_newton_kl_product(policy, adapted, rollouts.pre, cfg.step_sizes, rollouts.post,
                                   metric_estimator(cfg.estimator), cfg.dice_lambda, cfg.first_order)


def trust_region_problem(
    policy: nn.Module, params: Params, rollouts: MetaRollouts, cfg: MAMLConfig
) -> TrustRegionProblem:
    """The meta-objective at θ_old = `params` as TRPO needs it: fused products for the built-in MLPs, else autograd
    (`meta_objective` with `kl_curvature`, or double backward through the KL of the map the line search evaluates)."""
    lay = meta_products.supports(policy, params) if cfg.derivatives == "fused" else None
    if lay is not None and cfg.kl_hvp == "gauss-newton":
        curv = subsample_episodes(rollouts, cfg.curvature_subsample) if cfg.curvature_subsample > 1 else rollouts
        return meta_products.FusedMeta(
            lay, params, rollouts.adapted, rollouts.pre, rollouts.post, rollouts.old.mean, rollouts.old.log_std,
            rollouts.score_weight, cfg.step_sizes, cfg.estimator, cfg.dice_lambda, cfg.first_order,
            metric_estimator(cfg.estimator), curv.pre, curv.post)
    objective = lambda p: meta_objective(policy, p, rollouts, cfg)  # noqa: E731
    if cfg.kl_hvp == "gauss-newton":
        product: list[Callable[[Tensor], Tensor]] = []  # built at the first product (its graphs cost memory)

        def curvature(v: Tensor) -> Tensor:
            if not product:
                product.append(kl_curvature(policy, params, rollouts, cfg))
            return product[0](v)

        return ObjectiveProblem(objective, params, curvature)
    # double backward through the KL of the map θ ↦ θ′ the line search measures (metric_estimator)
    metric = replace(cfg, estimator=metric_estimator(cfg.estimator), dice_lambda=1.0)
    return _KLFrom(objective, lambda p: meta_objective(policy, p, rollouts, metric)[1], params)


def joint_problem(policy: nn.Module, params: Params, data: TaskData, old: PolicyOutput,
                  objective: Callable[[Params], tuple[Tensor, Tensor]]) -> TrustRegionProblem:
    """TRPO on the plain (no adaptation) mean surrogate of a batch [T, E, H, ...] at θ_old = `params`, the
    pretrained and oracle baselines' joint training: MAML's problem with no inner steps, by the fused products for
    the built-in MLPs, else autograd on `objective` (params -> (surrogate, KL))."""
    lay = meta_products.supports(policy, params)
    if lay is None or old.log_std is None:
        return ObjectiveProblem(objective, params)
    zeros = torch.zeros(data.mask.shape[0], dtype=data.adv.dtype, device=data.adv.device)
    return meta_products.FusedMeta(lay, params, (), (), data, old.mean, old.log_std, zeros, (), "naive", 1.0, True,
                                   "naive", (), data)


class _KLFrom(ObjectiveProblem):
    """`ObjectiveProblem` whose curvature is double backward through a separately built KL."""

    def __init__(self, objective: Any, kl: Callable[[Params], Tensor], params: Params) -> None:
        super().__init__(objective, params)
        self._kl = kl

    def curvature(self, v: Tensor) -> Tensor:
        if self._hvp is None:
            theta = flatten(self.params).detach().requires_grad_(True)
            self._hvp = kl_hvp(self._kl(unflatten(theta, self.params)), theta, 0.0)
        return self._hvp(v)


def meta_gradient(policy: nn.Module, params: Params, rollouts: MetaRollouts, cfg: MAMLConfig) -> Params:
    """The meta-gradient ∇_θ J for a batch of tasks (ascent direction), one call for any family.

    Args:
        policy: the policy module (evaluated functionally).
        params: the meta-parameters θ (shared, not stacked).
        rollouts: from `collect` at θ.
        cfg: the estimator, step sizes and first_order flag are read from it.

    Returns:
        A dict like `params` with ∂J/∂θ.
    """
    if cfg.derivatives == "fused" and meta_products.supports(policy, params) is not None:
        return unflatten(trust_region_problem(policy, params, rollouts, cfg).value_and_gradient()[1], params)
    leaves = {k: v.detach().requires_grad_(True) for k, v in params.items()}
    surrogate, _ = meta_objective(policy, leaves, rollouts, cfg)
    grads = torch.autograd.grad(surrogate, list(leaves.values()))
    return dict(zip(leaves, grads, strict=True))


def meta_update(
    policy: nn.Module,
    params: Params,
    rollouts: MetaRollouts,
    cfg: MAMLConfig,
    optimizer_state: dict[str, Any] | None,
) -> tuple[Params, dict[str, Any] | None, dict[str, float]]:
    """One outer step (TRPO, or Adam from `optimizer_state`); returns new params, optimiser state, outer/* metrics."""
    if cfg.outer == "trpo":
        result = trpo_step(trust_region_problem(policy, params, rollouts, cfg), params, cfg.trpo)
        return result.params, None, {
            "outer/surrogate_before": result.surrogate_before,
            "outer/surrogate_after": result.surrogate_after,
            "outer/kl": result.kl,
            "outer/kl_predicted": result.kl_predicted,
            "outer/step_fraction": result.step_fraction,
            "outer/grad_norm": result.grad_norm,
            "perf/gradient_s": result.gradient_s,
            "perf/cg_s": result.cg_s,
            "perf/line_search_s": result.line_search_s,
            "perf/line_search_evals": float(result.line_search_evals),
            # a NaN here would make the non-finite guard reject a step whose accepted candidate is finite
            **({"outer/kl_full_step": result.kl_full_step} if math.isfinite(result.kl_full_step) else {}),
        }
    grads = meta_gradient(policy, params, rollouts, cfg)
    new, state = adam_ascent(params, grads, cfg.outer_lr, optimizer_state)
    norm = float(torch.sqrt(sum(g.square().sum() for g in grads.values())))
    return new, state, {"outer/grad_norm": norm}
