"""TRPO as functions (Schulman et al. 2015, Appendix C): conjugate gradient on KL Hessian-vector products, then a
backtracking line search that checks the KL constraint and the surrogate improvement.

A step needs three things of its objective at θ_old (`TrustRegionProblem`): the surrogate's value and gradient, the
KL Hessian's products, and values of (surrogate, KL) at line-search candidates. MAML's meta-objective provides them
by hand-derived products for the built-in MLPs (metarl/meta_products.py), any other objective through autograd
(`ObjectiveProblem`: double backward through the KL as pytorch-maml-rl and garage, or a given curvature such as
MAML's Gauss–Newton JᵀFJ, equal at θ_old because ∂KL/∂θ′ = 0 there).
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Protocol

import torch
from torch import Tensor

from metarl.policies import Params

Objective = Callable[[Params], tuple[Tensor, Tensor]]
"""params -> (surrogate to maximise, mean KL to the old policy), both scalars."""


def flatten(params: Params) -> Tensor:
    """Concatenate every tensor of a params dict into one vector."""
    return torch.cat([p.reshape(-1) for p in params.values()])


def unflatten(vector: Tensor, like: Params) -> Params:
    """Inverse of `flatten` with the shapes (and names) of `like`."""
    out, i = {}, 0
    for name, p in like.items():
        out[name] = vector[i : i + p.numel()].view_as(p)
        i += p.numel()
    return out


def conjugate_gradient(
    hvp: Callable[[Tensor], Tensor], b: Tensor, iters: int = 10, tol: float = 1e-10
) -> tuple[Tensor, Tensor]:
    """Approximately solve H x = b for symmetric positive-definite H given only products H·v.

    Returns:
        (x, H·x). H·x is accumulated from the products CG makes anyway (H·x_k = Σ α_i H·p_i), so TRPO's step length
        ½xᵀHx costs no extra product: one of eleven on MAML's meta-objective, each three Hessian-vector products.
    """
    x, hx = torch.zeros_like(b), torch.zeros_like(b)
    r, p = b.clone(), b.clone()
    rr = r @ r
    for _ in range(iters):
        hp = hvp(p)
        alpha = rr / (p @ hp)
        x += alpha * p
        hx += alpha * hp
        r -= alpha * hp
        rr_new = r @ r
        if rr_new < tol:
            break
        p = r + (rr_new / rr) * p
        rr = rr_new
    return x, hx


@dataclass(frozen=True)
class TRPOConfig:
    """Trust-region step settings (MAML and pytorch-maml-rl defaults)."""

    max_kl: float = 0.01
    """KL trust region δ on the post-adaptation policies (MAML: 0.01; 0.02 for HalfCheetahDir)"""
    cg_iters: int = 10
    """conjugate-gradient iterations"""
    cg_damping: float = 1e-5
    """damping added to the KL Hessian (H + λI)"""
    ls_steps: int = 15
    """backtracking line-search steps"""
    ls_backtrack: float = 0.8
    """step shrink factor per line-search step"""
    kl_rescale: bool = False
    """before backtracking, scale the natural-gradient step so that the KL *measured* there equals max_kl (one more
    objective evaluation; the KL is quadratic in the step length to second order): the curvature then sets only the
    direction. It corrects the step length of an approximate curvature (MAML's curvature_subsample, whose noisier
    Jacobian overestimates JᵀFJ); an exact curvature predicts the KL already"""

    def __post_init__(self) -> None:
        for name in ("max_kl", "cg_damping", "ls_backtrack"):
            if not math.isfinite(getattr(self, name)):
                raise ValueError(f"trpo.{name} must be finite, got {getattr(self, name)}")
        if self.max_kl <= 0 or self.cg_iters < 1 or self.cg_damping < 0 or self.ls_steps < 1:
            raise ValueError("TRPO needs max_kl > 0, cg_iters >= 1, cg_damping >= 0, ls_steps >= 1")
        if not 0 < self.ls_backtrack < 1:
            raise ValueError(f"ls_backtrack must be in (0, 1), got {self.ls_backtrack}")


@dataclass(frozen=True)
class TRPOResult:
    """What one trust-region step did."""

    params: Params
    surrogate_before: float
    surrogate_after: float
    kl: float
    step_fraction: float
    """accepted fraction of the full natural-gradient step (0: every line-search step was rejected)"""
    grad_norm: float
    kl_predicted: float = 0.0
    """the quadratic model's KL ½ sᵀHs of the accepted step (max_kl·fraction² unless CG returned a null step or
    `kl_rescale` moved the step): close to `kl` when the curvature describes the KL the line search measures"""
    kl_full_step: float = float("nan")
    """the KL measured at the natural-gradient step the quadratic model puts at max_kl (the first evaluation): its
    ratio to max_kl says how well the curvature describes the KL the line search measures (1: exactly)"""
    gradient_s: float = 0.0
    """seconds spent on the surrogate's value and gradient"""
    cg_s: float = 0.0
    """seconds spent in conjugate gradient (the curvature products)"""
    line_search_s: float = 0.0
    """seconds spent evaluating line-search candidates"""
    line_search_evals: int = 0
    """candidates evaluated"""


class TrustRegionProblem(Protocol):
    """What a TRPO step needs of its objective at θ_old (MAML's fused meta-objective implements it directly;
    `ObjectiveProblem` builds it with autograd from any `objective(params) -> (surrogate, kl)`)."""

    def value_and_gradient(self) -> tuple[Tensor, Tensor]:
        """(surrogate, flat gradient [P]) at θ_old."""
        ...

    def curvature(self, v: Tensor) -> Tensor:
        """The undamped KL Hessian at θ_old times v [P]."""
        ...

    def evaluate(self, theta: Params) -> tuple[Tensor, Tensor]:
        """(surrogate, KL) at candidate params, values only."""
        ...


class ObjectiveProblem:
    """A `TrustRegionProblem` from an objective by autograd: the gradient by backward, the curvature by `curvature`
    if given, else double backward through the objective's KL (pytorch-maml-rl, garage)."""

    def __init__(self, objective: Objective, params: Params,
                 curvature: Callable[[Tensor], Tensor] | None = None) -> None:
        self.objective, self.params, self._curvature = objective, params, curvature
        self._hvp: Callable[[Tensor], Tensor] | None = None

    def value_and_gradient(self) -> tuple[Tensor, Tensor]:
        theta = flatten(self.params).detach().requires_grad_(True)
        surr, kl = self.objective(unflatten(theta, self.params))
        (grad,) = torch.autograd.grad(surr, theta, retain_graph=self._curvature is None)
        if self._curvature is None:
            self._hvp = kl_hvp(kl, theta, 0.0)
        return surr.detach(), grad

    def curvature(self, v: Tensor) -> Tensor:
        if self._curvature is not None:
            return self._curvature(v)
        assert self._hvp is not None, "value_and_gradient builds the KL graph first"
        return self._hvp(v)

    def evaluate(self, theta: Params) -> tuple[Tensor, Tensor]:
        with torch.no_grad():  # torch.func transforms inside still differentiate the inner steps
            return self.objective(theta)


def kl_hvp(kl: Tensor, theta: Tensor, damping: float) -> Callable[[Tensor], Tensor]:
    """v -> (∇²KL + damping·I)·v by double backward at `theta` (a leaf vector `kl` was computed from)."""
    (grad_kl,) = torch.autograd.grad(kl, theta, create_graph=True)

    def hvp(v: Tensor) -> Tensor:
        (hv,) = torch.autograd.grad(grad_kl @ v, theta, retain_graph=True)
        return hv + damping * v

    return hvp


def trpo_step(
    problem: TrustRegionProblem | Objective,
    params: Params,
    cfg: TRPOConfig,
    curvature: Callable[[Tensor], Tensor] | None = None,
) -> TRPOResult:
    """One TRPO update of `params` (θ_old).

    `problem` is a `TrustRegionProblem`, or an objective `params -> (surrogate, kl)` differentiated by autograd
    (with `curvature`, v -> ∇²KL·v at θ_old, undamped, if given; else double backward through its KL). The step
    direction comes from CG on the damped KL Hessian; the line search then tries θ_old + βⁱ·step for
    i = 0..ls_steps−1 and accepts the first with KL ≤ max_kl and a positive surrogate improvement.

    Raises:
        FloatingPointError: the gradient, or every line-search candidate's surrogate or KL, is non-finite.
    """
    if not hasattr(problem, "value_and_gradient"):
        problem = ObjectiveProblem(problem, params, curvature=curvature)  # type: ignore[arg-type]
    clock = time.perf_counter()
    surr, grad = problem.value_and_gradient()  # type: ignore[union-attr]
    gradient_s = time.perf_counter() - clock
    if not bool(torch.isfinite(grad).all()):
        raise FloatingPointError("non-finite meta-gradient")
    clock = time.perf_counter()
    direction, h_direction = conjugate_gradient(
        lambda v: problem.curvature(v) + cfg.cg_damping * v, grad, cfg.cg_iters)  # type: ignore[union-attr]
    cg_s = time.perf_counter() - clock
    # the largest step along s = H⁻¹g whose quadratic KL model ½ sᵀHs·β² reaches max_kl
    shs = 0.5 * (direction @ h_direction).detach()
    scale = torch.sqrt(cfg.max_kl / shs.clamp_min(1e-12))
    full_step = direction.detach() * scale
    kl_full = float(shs * scale.square())
    theta_old = flatten(params).detach()
    surr_old = float(surr)
    nonfinite = 0
    clock = time.perf_counter()
    timing: dict[str, float] = {"gradient_s": gradient_s, "cg_s": cg_s}
    probes = 0
    timing["kl_full_step"] = float("nan")
    if cfg.kl_rescale:
        _, kl_probe = problem.evaluate(unflatten(theta_old + full_step, params))  # type: ignore[union-attr]
        probes, timing["kl_full_step"] = 1, float(kl_probe)
        if bool(torch.isfinite(kl_probe)) and float(kl_probe) > 0:
            factor = math.sqrt(cfg.max_kl / float(kl_probe))
            full_step, kl_full = full_step * factor, kl_full * factor**2
    for i in range(cfg.ls_steps):
        fraction = cfg.ls_backtrack**i
        candidate = unflatten(theta_old + fraction * full_step, params)
        surr_new, kl_new = problem.evaluate(candidate)  # type: ignore[union-attr]
        if i == 0 and not cfg.kl_rescale:
            timing["kl_full_step"] = float(kl_new)
        if not (bool(torch.isfinite(surr_new)) and bool(torch.isfinite(kl_new))):
            nonfinite += 1  # a NaN KL would also fail `<= max_kl`; counted so that it can be reported
            continue
        if float(kl_new) <= cfg.max_kl and float(surr_new) > surr_old:
            return TRPOResult({k: v.detach().clone() for k, v in candidate.items()}, surr_old, float(surr_new),
                              float(kl_new), fraction, float(grad.norm()), kl_full * fraction**2,
                              line_search_s=time.perf_counter() - clock, line_search_evals=probes + i + 1, **timing)
    if nonfinite == cfg.ls_steps:  # not an ordinary rejected step: the training loop's non-finite guard counts it
        raise FloatingPointError(f"all {nonfinite} line-search candidates gave a non-finite surrogate or KL")
    return TRPOResult({k: v.detach().clone() for k, v in params.items()}, surr_old, surr_old, 0.0, 0.0,
                      float(grad.norm()), 0.0, line_search_s=time.perf_counter() - clock,
                      line_search_evals=probes + cfg.ls_steps, **timing)
