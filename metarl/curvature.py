"""The KL curvature of the MAML meta-objective at θ_old, as a Gauss–Newton product JᵀFJ.

TRPO's trust region is KL(π_θ′old ‖ π_θ′(θ)) on the adapted policies θ′ = θ_k(θ). Its Hessian at θ_old is

    ∇²_θ KL = Jᵀ F J + Σ (∂KL/∂θ′)·∇²θ′ = Jᵀ F J        (∂KL/∂θ′ = 0 at θ_old; notes/metagrad.md §2.2)

with F the Fisher (KL Hessian) of the adapted policy and J = dθ_k/dθ = Π_j (I + α_j H_j), H_j the Hessian of the
inner surrogate at θ_j. So the product needs only *second*-order derivatives: two inner-surrogate Hessian-vector
products per inner step (J v forward, Jᵀ w backward; H_j is symmetric) and one Fisher-vector product. Their graphs
are built once per TRPO step and reused by every CG iteration. Double backward through the whole meta-objective
gives the same numbers (tested) but differentiates the inner gradient twice more: third-order terms that vanish.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

import torch
from torch import Tensor, nn

from metarl.estimators import TaskData, inner_objective
from metarl.policies import Params, broadcast_log_std, forward
from metarl.returns import normalized_weights


def metric_estimator(estimator: str) -> str:
    """The inner surrogate whose Hessians make J in TRPO's curvature: that of the map θ ↦ θ′ the line search
    actually evaluates, so that the quadratic model ½sᵀJᵀFJs predicts the KL the line search measures.

    DiCE's magic boxes are 1 in value, so a DiCE inner step *evaluates* as the naive one: θ′(θ) on the stored
    episodes is θ + α·ĝ_naive(θ) for "dice" (any λ), "dice_cv", "naive" and "emaml"; LVC's importance-weighted step
    is its own map. The meta-gradient keeps its estimator's (unbiased) Jacobian; only the trust region's metric uses
    this one. With the DiCE Jacobian instead, whose H-fold score products make JᵀFJ far larger than the curvature of
    the map, TRPO's accepted KL on HalfCheetahVel was 0.00012 against max_kl 0.01 (issue 16; the naive map's: 0.0106).
    """
    return "lvc" if estimator == "lvc" else "naive"


ParamsProduct = Callable[[Params], Params]
"""A linear map on stacked per-task params [T, ...] -> [T, ...]."""


def _hessian_product(objective: Tensor, at: Params) -> ParamsProduct:
    """u -> ∇²objective·u at `at` (leaves requiring grad), reusing one gradient graph for every call."""
    names = list(at)
    grads = torch.autograd.grad(objective, [at[n] for n in names], create_graph=True)

    def product(u: Params) -> Params:
        hv = torch.autograd.grad(grads, [at[n] for n in names], grad_outputs=[u[n] for n in names],
                                 retain_graph=True)
        return dict(zip(names, hv, strict=True))

    return product


def inner_hessian_product(policy: nn.Module, at: Params, data: TaskData, estimator: str,
                          dice_lambda: float) -> ParamsProduct:
    """Per-task H_t·u_t of the inner surrogate at stacked params `at` [T, ...] on data [T, E, H, ...]."""
    leaves = {k: v.detach().requires_grad_(True) for k, v in at.items()}
    objective = inner_objective(policy, leaves, data, estimator, dice_lambda).sum()  # separable across tasks
    return _hessian_product(objective, leaves)


def fisher_product(policy: nn.Module, at: Params, post: TaskData) -> ParamsProduct:
    """Per-task F_t·u_t: the Hessian of KL(π_old ‖ π_φ) over the post-update states at φ = `at` [T, ...], where
    π_old = π_at (TRPO evaluates it at θ_old).

    There ∇_out KL = 0, so the Hessian is exactly J_outᵀ M J_out with out = (μ, log σ) per state and M the
    diagonal-Gaussian Fisher diag(1/σ², 2) averaged over the states as the KL is (`post.weight`): a Jacobian-vector
    product and a vector-Jacobian product of the network, no second derivatives of it (2.7× cheaper than double
    backward of the KL on the 2-D navigation batch). J_out·u is the double-vjp trick: the vjp is linear in its
    cotangent, so differentiating it with respect to that cotangent gives the forward-mode product, on one reusable
    graph.
    """
    leaves = {k: v.detach().requires_grad_(True) for k, v in at.items()}
    out = forward(policy, leaves, post.obs)
    outputs = (out.mean, broadcast_log_std(out).expand_as(out.mean))  # both [T, E, H, act]
    valid = normalized_weights(post.weight)  # the KL's average over states (as `mean_kl`): [T, E, H]
    weights = (valid[..., None] * torch.exp(-2 * outputs[1].detach()), 2 * valid[..., None].expand_as(out.mean))
    cotangents = tuple(torch.zeros_like(o, requires_grad=True) for o in outputs)
    vjp_all = torch.autograd.grad(outputs, list(leaves.values()), cotangents, create_graph=True, allow_unused=True)
    used = [n for n, g in zip(leaves, vjp_all, strict=True) if g is not None]  # a policy may leave some unused
    vjp = [g for g in vjp_all if g is not None]

    def product(u: Params) -> Params:
        ju = torch.autograd.grad(vjp, cotangents, [u[n] for n in used], retain_graph=True)  # J_out·u
        fu = torch.autograd.grad(outputs, [leaves[n] for n in used], [w * j for w, j in zip(weights, ju, strict=True)],
                                 retain_graph=True)  # J_outᵀ·M·J_out·u
        grads = dict(zip(used, fu, strict=True))
        return {n: grads[n] if n in grads else torch.zeros_like(u[n]) for n in leaves}

    return product


def gauss_newton_kl_product(
    policy: nn.Module,
    adapted: Sequence[Params],
    pre: Sequence[TaskData],
    lrs: Sequence[float],
    post: TaskData,
    estimator: str,
    dice_lambda: float,
    first_order: bool,
) -> Callable[[Tensor], Tensor]:
    """v [P] -> (1/T) Σ_t J_tᵀ F_t J_t v, the Hessian of the mean post-update KL at θ_old.

    Args:
        policy: the policy module.
        adapted: θ_0..θ_k at θ_old, each stacked [T, ...] (θ_0 = θ expanded).
        pre: the k inner batches; pre[j] drives the step θ_j -> θ_{j+1}.
        lrs: the k inner step sizes.
        post: the post-update batch (its states define the KL).
        estimator: the inner surrogate whose Hessians form J ("naive" for formulation II).
        dice_lambda: Loaded-DiCE λ.
        first_order: FOMAML: J = I.
    """
    steps = [] if first_order else [
        (inner_hessian_product(policy, at, data, estimator, dice_lambda), lr)
        for at, data, lr in zip(adapted[:-1], pre, lrs, strict=True)
    ]
    fisher = fisher_product(policy, adapted[-1], post)
    like = adapted[0]
    T = next(iter(like.values())).shape[0]

    def product(v: Tensor) -> Tensor:
        u = _unflatten_stacked(v, like)
        for hessian, lr in steps:  # J v, step by step
            hu = hessian(u)
            u = {k: u[k] + lr * hu[k] for k in u}
        w = fisher(u)
        for hessian, lr in reversed(steps):  # Jᵀ w; each H_j is symmetric
            hw = hessian(w)
            w = {k: w[k] + lr * hw[k] for k in w}
        return torch.cat([w[k].sum(0).reshape(-1) for k in like]) / T

    return product


def _unflatten_stacked(v: Tensor, like: Params) -> Params:
    """A shared flat vector [P] as stacked params shaped like `like` [T, ...] (the same v for every task)."""
    out, i = {}, 0
    for name, p in like.items():
        n = p[0].numel()
        out[name] = v[i : i + n].view(p.shape[1:]).expand(p.shape).contiguous()
        i += n
    return out
