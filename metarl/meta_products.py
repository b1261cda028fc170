"""MAML's meta-objective for the built-in Gaussian MLPs without autograd: inner steps, the meta-gradient, TRPO's
curvature products and line-search evaluations, written out with the products of metarl/surrogate_products.py and
processed one chunk of tasks at a time (every quantity is a sum of per-task terms).

The same quantities for any other policy come from autograd in metarl/algos/maml_objective.py (`meta_objective`,
metarl/curvature.py); tests/test_fused.py checks that both agree in float64 for every estimator, k = 1 and 2,
first-order, E-MAML's score term and episodes that end early.

    meta-gradient   ḡ_k = ∇L_out(θ_k);  ḡ_j = ḡ_{j+1} + α_j H_j ḡ_{j+1} (+ ∇score_j, formulation II);  ∇J = mean_T ḡ_0
    KL curvature    v ↦ mean_T J_tᵀ F_t J_t v,   J_t v = Π_j (I + α_j H^m_j) v        (metarl/curvature.py)

H_j is the Hessian of the estimator's inner surrogate at θ_j on pre[j] (DiCE's for "dice"), H^m_j that of the map
the line search evaluates (`curvature.metric_estimator`).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from functools import partial

import torch
from torch import Tensor, nn

from metarl.estimators import TaskData
from metarl.mlp_products import Backward, MLPLayout, layout
from metarl.policies import Params, stack
from metarl.surrogate_products import (
    Point,
    chunks,
    fisher_product,
    gradient,
    hessian_product,
    inner_coefficients,
    kl_to,
    linearize,
    outer_value,
    score_coupling,
    take,
    take_data,
)


def supports(policy: nn.Module, params: Params) -> MLPLayout | None:
    """The layout if the hand-derived products apply to `policy` (a built-in Gaussian MLP), else None."""
    return layout(policy, params)


def _rows(params: Params, lay: MLPLayout, rows: slice, total: int) -> Params:
    """Rows `rows` of stacked params, or shared params expanded to as many rows."""
    weight = params[lay.weights[0]]
    if weight.dim() == 2:  # shared
        n = len(range(*rows.indices(total)))
        return stack(params, n)
    return take(params, rows)


def inner_gradient(lay: MLPLayout, params: Params, data: TaskData, estimator: str) -> Params:
    """∇L_in per task, [T, ...], at stacked or shared params on data [T, E, H, ...] (the forward value of every
    estimator's inner gradient; "dice" equals "naive" in value)."""
    T, E, H = data.mask.shape
    parts = []
    for rows in chunks(T, E * H):
        chunk = take_data(data, rows)
        point = linearize(lay, _rows(params, lay, rows, T), chunk.obs, chunk.act, chunk.mask)
        parts.append(gradient(lay, point, inner_coefficients(point, chunk, estimator))[0])
    return {k: torch.cat([p[k] for p in parts]) for k in parts[0]}


def adapt(lay: MLPLayout, params: Params, pre: Sequence[TaskData], lrs: Sequence[float], estimator: str) -> Params:
    """θ_k per task [T, ...] from shared or stacked `params` by k inner steps on stored data (values only)."""
    for data, lr in zip(pre, lrs, strict=True):
        grad = inner_gradient(lay, params, data, estimator)
        if params[lay.weights[0]].dim() == 2:  # shared: one copy per task
            params = stack(params, data.mask.shape[0])
        params = {k: params[k] + lr * grad[k] for k in params}
    return params


# ----------------------------------------------------------------------------------------------- per-chunk caches
@dataclass
class _Step:
    """Inner step j of one chunk at θ_j: the linearisation, its vjp cotangents and c_s."""

    point: Point
    back: Backward
    coef: Tensor
    scale: Tensor


@dataclass
class _Chunk:
    rows: slice
    steps: list[_Step]
    post: Point
    post_data: TaskData


def _cache(lay: MLPLayout, path: Sequence[Params], pre: Sequence[TaskData], post: TaskData, estimator: str,
           rows: slice, need_steps: bool) -> _Chunk:
    """Linearise one chunk at θ_0..θ_k (`path`, stacked [T, ...]) on its pre-update batches and post batch."""
    steps = []
    if need_steps:
        for at, data in zip(path[:-1], pre, strict=True):
            chunk = take_data(data, rows)
            point = linearize(lay, take(at, rows), chunk.obs, chunk.act, chunk.mask)
            coef = inner_coefficients(point, chunk, estimator)
            _, back = gradient(lay, point, coef, keep=True)
            assert back is not None
            steps.append(_Step(point, back, coef, chunk.scale))
    post_chunk = take_data(post, rows)
    point = linearize(lay, take(path[-1], rows), post_chunk.obs, post_chunk.act, post_chunk.mask)
    return _Chunk(rows, steps, point, post_chunk)


def _add(a: Params, b: Params, scale: float = 1.0) -> Params:
    return {k: a[k] + scale * b[k] for k in a}


def _sum_rows(p: Params, order: Sequence[str]) -> Tensor:
    return torch.cat([p[k].sum(0).reshape(-1) for k in order])


def _expand(v: Tensor, like: Params, order: Sequence[str], rows: int) -> Params:
    """A shared flat vector [P] as params [rows, ...] shaped like the shared `like`."""
    out, i = {}, 0
    for name in order:
        shape = like[name].shape
        n = like[name].numel()
        out[name] = v[i : i + n].view(shape).unsqueeze(0).expand(rows, *shape).contiguous()
        i += n
    return out


class FusedMeta:
    """MAML's meta-objective at θ_old for a built-in Gaussian MLP: what TRPO (metarl/trpo.py) needs.

    Args:
        lay: the policy's layout (`supports`).
        params: θ_old, shared.
        path: θ_1..θ_k at θ_old, stacked [T, ...] (`MetaRollouts.adapted`).
        pre, post, old_mean, old_log_std, score_weight: the rollouts (`MetaRollouts`).
        lrs: α_1..α_k.
        estimator: the meta-gradient's estimator (dice, dice_cv, lvc, naive, emaml).
        dice_lambda: Loaded-DiCE λ.
        first_order: FOMAML (no Jacobian through the inner steps).
        metric: the inner surrogate whose Hessians form the curvature's J (`curvature.metric_estimator`).
        curvature_pre, curvature_post: the batches the curvature averages over (subsampled episodes, or pre/post).
    """

    def __init__(self, lay: MLPLayout, params: Params, path: Sequence[Params], pre: Sequence[TaskData],
                 post: TaskData, old_mean: Tensor, old_log_std: Tensor, score_weight: Tensor,
                 lrs: Sequence[float], estimator: str, dice_lambda: float, first_order: bool, metric: str,
                 curvature_pre: Sequence[TaskData], curvature_post: TaskData) -> None:
        self.lay, self.params, self.order = lay, params, list(params)
        self.T = post.mask.shape[0]
        # θ_0 materialised per task once: bmm copies a stride-0 (expanded) batch at every call otherwise
        self.path = [{k: v.contiguous() for k, v in stack(params, self.T).items()}, *path]
        self.pre, self.post, self.lrs = list(pre), post, list(lrs)
        self.old_mean, self.old_log_std, self.score_weight = old_mean, old_log_std, score_weight
        self.inner = "naive" if estimator == "emaml" else estimator
        self.emaml = estimator == "emaml" and not first_order
        self.first_order, self.dice_lambda, self.metric = first_order, dice_lambda, metric
        self.curvature_pre, self.curvature_post = list(curvature_pre), curvature_post
        self._curvature_cache: list[_Chunk] | None = None

    # --- the meta-gradient at θ_old
    def value_and_gradient(self) -> tuple[Tensor, Tensor]:
        """(mean_T surrogate, flat ∇J) at θ_old."""
        E, H = self.post.mask.shape[1:]
        total_value = torch.zeros((), dtype=self.post.adv.dtype)
        total_grad = None
        coupling = partial(self._coupling, self.inner)
        for rows in chunks(self.T, E * H):
            chunk = _cache(self.lay, self.path, self.pre, self.post, self.inner, rows, not self.first_order or
                           self.emaml)
            value, coef = outer_value(chunk.post, chunk.post_data)
            g, _ = gradient(self.lay, chunk.post, coef)
            for j in range(len(self.lrs) - 1, -1, -1):
                step = chunk.steps[j] if chunk.steps else None
                if not self.first_order:
                    assert step is not None
                    hg = hessian_product(self.lay, step.point, step.back, step.coef, partial(coupling, step), g)
                    g = _add(g, hg, self.lrs[j])
                if self.emaml:
                    assert step is not None
                    weight = self.score_weight[rows][:, None, None].expand_as(step.point.mask)
                    g = _add(g, gradient(self.lay, step.point, weight)[0])
                    value = value + self.score_weight[rows] * step.point.logp.sum((1, 2))
            total_value = total_value + value.sum()
            flat = _sum_rows(g, self.order)
            total_grad = flat if total_grad is None else total_grad + flat
        assert total_grad is not None
        return total_value / self.T, total_grad / self.T

    def _coupling(self, estimator: str, step: _Step, d: Tensor) -> Tensor | None:
        return score_coupling(estimator, step.coef, d, self.dice_lambda, step.scale)

    # --- TRPO's curvature
    def curvature(self, v: Tensor) -> Tensor:
        """mean_T J_tᵀ F_t J_t v with J from the metric estimator's Hessians (undamped), [P] -> [P]."""
        if self._curvature_cache is None:
            E, H = self.curvature_post.mask.shape[1:]
            self._curvature_cache = [
                _cache(self.lay, self.path, self.curvature_pre, self.curvature_post, self.metric, rows,
                       not self.first_order)
                for rows in chunks(self.T, E * H)
            ]
        total = torch.zeros_like(v)
        for chunk in self._curvature_cache:
            n = len(range(*chunk.rows.indices(self.T)))
            u = _expand(v, self.params, self.order, n)
            for step, lr in zip(chunk.steps, self.lrs, strict=False):
                u = _add(u, self._metric_hvp(step, u), lr)
            w = fisher_product(self.lay, chunk.post, chunk.post_data.weight, u)
            for step, lr in reversed(list(zip(chunk.steps, self.lrs, strict=False))):
                w = _add(w, self._metric_hvp(step, w), lr)
            total += _sum_rows(w, self.order)
        return total / self.T

    def _metric_hvp(self, step: _Step, u: Params) -> Params:
        return hessian_product(self.lay, step.point, step.back, step.coef,
                               partial(self._coupling, self.metric, step), u)

    # --- line-search evaluations
    def evaluate(self, theta: Params) -> tuple[Tensor, Tensor]:
        """(mean_T surrogate, mean_T KL(π_θ′old ‖ π_θ′(θ))) at shared params `theta`: values only."""
        E, H = self.post.mask.shape[1:]
        surrogate = torch.zeros((), dtype=self.post.adv.dtype)
        kl = torch.zeros((), dtype=self.post.adv.dtype)
        for rows in chunks(self.T, E * H):
            at = _rows(theta, self.lay, rows, self.T)
            value = torch.zeros((), dtype=surrogate.dtype)
            for data, lr in zip(self.pre, self.lrs, strict=True):
                chunk = take_data(data, rows)
                point = linearize(self.lay, at, chunk.obs, chunk.act, chunk.mask)
                if self.emaml:
                    value = value + (self.score_weight[rows] * point.logp.sum((1, 2))).sum()
                g, _ = gradient(self.lay, point, inner_coefficients(point, chunk, self.inner))
                at = _add(at, g, lr)
            post = take_data(self.post, rows)
            point = linearize(self.lay, at, post.obs, post.act, post.mask)
            surrogate = surrogate + value + outer_value(point, post)[0].sum()
            old_ls = self.old_log_std[rows] if self.old_log_std.dim() > 1 else self.old_log_std
            kl = kl + kl_to(point, self.old_mean[rows], old_ls, post.weight).sum()
        return surrogate / self.T, kl / self.T

