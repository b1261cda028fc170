"""Values, gradients and Hessian-vector products of metarl's surrogates for the built-in Gaussian MLPs, one chunk of
tasks at a time (the network part is metarl/mlp_products.py; autograd computes the same from metarl/estimators.py).

Every inner surrogate is a weighted sum over a task's steps whose step s sees the network only through its outputs
out_s = (μ_s, log σ), by the masked log-likelihood l_s = log π(a_s|s_s)·mask_s. With g_s = ∂l_s/∂out_s:

    gradient   ∇L    = Σ_s c_s ∇l_s = J_outᵀ(c_s g_s)
    Hessian    ∇²L v = Σ_s c_s ∇²l_s v + Σ_s ∇l_s β_s(v),    d_s = ∇l_s·v = g_s·(J_out v)_s

so a Hessian-vector product is one R-forward pass and one R-vjp whose output cotangent moves by
c_s (∂²l_s/∂out²)(J_out v)_s + g_s β_s. The estimators differ in c and β (their Hessians: notes/metagrad.md §1.4–1.6):

| estimator | c_s | β_s |
|---|---|---|
| naive | w·A | 0 |
| lvc | w·A·ρ, ρ = π/π_old | c_s d_s |
| dice (Loaded-DiCE, λ) | w·A | c_t d_t + c_t Σ_{t'<t} λ^{t−t'} d_{t'} + Σ_{u>t} λ^{u−t} c_u d_u |
| dice_cv | w·A | dice's, each of the two sums less its σ-rescaled mean over the task's other episodes |

The dice row is ∇²L = Σ_t c_t [∇²l_t + s_t s_tᵀ + λ(s_t G_{t−1}ᵀ + G_{t−1} s_tᵀ)] with G_t = Σ_{t'≤t} λ^{t−t'} s_{t'}
(the magic boxes are 1 in value, so the dice *gradient* is the naive one at every θ). Shapes: a chunk holds c tasks
of E episodes × H steps; per-step tensors are [c, E, H] or [c, E, H, act], stacked params [c, ...].
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import torch
from torch import Tensor

from metarl.estimators import TaskData, later_sum, others_mean
from metarl.mlp_products import Backward, MLPLayout, Tape, jvp, r_vjp, record, vjp
from metarl.policies import LOG_2PI, Params
from metarl.returns import normalized_weights

STATES_PER_CHUNK = 8192
"""Rows are processed in chunks of about this many states: 8192 × 100 float32 activations are 3.3 MB, in cache
(measured on the 2-core box: the HalfCheetahVel forward pass over 160k states, 125 ms whole vs 60 ms in chunks of
1–4 tasks, most of the difference being page faults of freshly allocated 64 MB tensors)."""


def chunks(rows: int, states_per_row: int) -> list[slice]:
    """Slices of rows with about `STATES_PER_CHUNK` states each (at least one row)."""
    size = max(1, STATES_PER_CHUNK // max(1, states_per_row))
    return [slice(i, min(i + size, rows)) for i in range(0, rows, size)]


def take(params: Params, rows: slice) -> Params:
    return {k: v[rows] for k, v in params.items()}


def take_data(data: TaskData, rows: slice) -> TaskData:
    return TaskData(*(f[rows] for f in data))


# ----------------------------------------------------------------------------------------------- one linearisation
@dataclass
class Point:
    """A chunk's policy at params θ [c, ...] on a batch [c, E, H, ...]: the network tape and the per-step Gaussian
    terms, everything the values, gradients and products at θ need.

    Attributes:
        tape: the network's forward pass over the c·E·H states (rows: tasks).
        log_std: [c, act].
        z: (a − μ)/σ, [c, E, H, act].
        logp: l_s = log π(a_s|s_s)·mask_s, [c, E, H].
        mask: [c, E, H].
    """

    tape: Tape
    log_std: Tensor
    z: Tensor
    logp: Tensor
    mask: Tensor

    @property
    def g_mean(self) -> Tensor:
        """∂l/∂μ = mask·z/σ, [c, E, H, act]."""
        return self.z * torch.exp(-self.log_std)[:, None, None] * self.mask[..., None]

    @property
    def g_log_std(self) -> Tensor:
        """∂l/∂log σ = mask·(z² − 1), [c, E, H, act]."""
        return (self.z.square() - 1) * self.mask[..., None]


def linearize(lay: MLPLayout, params: Params, obs: Tensor, act: Tensor, mask: Tensor) -> Point:
    """Record the policy `params` [c, ...] at `obs` [c, E, H, obs_dim] and the likelihood terms of `act`."""
    c, E, H = mask.shape
    tape = record([params[w] for w in lay.weights], [params[b] for b in lay.biases], lay.activation,
                  obs.reshape(c, E * H, obs.shape[-1]))
    assert lay.log_std is not None
    log_std = params[lay.log_std]
    mean = tape.mean.view(c, E, H, -1)
    z = (act - mean) * torch.exp(-log_std)[:, None, None]
    logp = (-0.5 * z.square() - log_std[:, None, None] - 0.5 * LOG_2PI).sum(-1) * mask
    return Point(tape, log_std, z, logp, mask)


def _as_params(lay: MLPLayout, gw: list[Tensor], gb: list[Tensor], g_log_std: Tensor) -> Params:
    out: Params = {}
    for name_w, name_b, w, b in zip(lay.weights, lay.biases, gw, gb, strict=True):
        out[name_w], out[name_b] = w, b
    assert lay.log_std is not None
    out[lay.log_std] = g_log_std
    return out


def _flat_mean(point: Point, d_mean: Tensor) -> Tensor:
    """[c, E, H, act] -> [c, E·H, act], the tape's layout."""
    return d_mean.reshape(point.tape.mean.shape)


def gradient(lay: MLPLayout, point: Point, coef: Tensor, keep: bool = False) -> tuple[Params, Backward | None]:
    """∇_θ Σ_s coef_s·l_s per task, [c, ...]; with `keep`, the vjp's cotangents for `hessian_product`."""
    gw, gb, back = vjp(point.tape, _flat_mean(point, coef[..., None] * point.g_mean), keep)
    return _as_params(lay, gw, gb, (coef[..., None] * point.g_log_std).sum((1, 2))), back


# ----------------------------------------------------------------------------------------------- surrogates
def inner_coefficients(point: Point, data: TaskData, estimator: str) -> Tensor:
    """c_s of the inner surrogate at this point: w·A (naive, dice, dice_cv) or w·A·π/π_old (lvc), [c, E, H]."""
    coef = data.weight * data.adv
    if estimator == "lvc":
        return coef * torch.exp(point.logp - data.logp_old * data.mask)
    if estimator in ("naive", "dice", "dice_cv"):
        return coef
    raise ValueError(f"unknown inner estimator {estimator!r}; choose from dice, dice_cv, lvc, naive")


def score_coupling(estimator: str, coef: Tensor, d: Tensor, dice_lambda: float,
                   scale: Tensor | None = None) -> Tensor | None:
    """β_s(v) of the table above from the directional scores d [c, E, H] (None: no score products); `scale` [c, E]
    is `TaskData.scale`, needed by dice_cv."""
    if estimator == "naive":
        return None
    cd = coef * d
    if estimator == "lvc" or (estimator in ("dice", "dice_cv") and dice_lambda == 0.0):
        return cd  # Loaded-DiCE at λ = 0 is LVC's Hessian
    if estimator not in ("dice", "dice_cv"):
        raise ValueError(f"unknown inner estimator {estimator!r}")
    later = later_sum(cd, dice_lambda)  # Σ_{u>t} λ^{u−t} c_u d_u
    earlier = later_sum(d.flip(-1), dice_lambda).flip(-1)  # Σ_{t'<t} λ^{t−t'} d_t'
    if estimator == "dice_cv":  # estimators.score_control_variate: s_a P̄_aᵀ + P̄_a s_aᵀ subtracted
        assert scale is not None, "dice_cv needs TaskData.scale"
        sigma = scale[..., None]
        later = later - others_mean(later * sigma) / sigma
        earlier = earlier - sigma * others_mean(earlier / sigma)
    return cd + coef * earlier + later


def hessian_product(
    lay: MLPLayout,
    point: Point,
    back: Backward,
    coef: Tensor,
    coupling: Callable[[Tensor], Tensor | None],
    v: Params,
) -> Params:
    """Σ_s c_s ∇²l_s v + Σ_s ∇l_s β_s(v) per task for tangents v [c, ...] (the Hessian of the surrogate whose
    gradient `gradient(lay, point, coef, keep=True)` recorded `back`); `coupling` maps d [c, E, H] to β or None."""
    assert lay.log_std is not None
    vw, vb, v_ls = [v[n] for n in lay.weights], [v[n] for n in lay.biases], v[lay.log_std]
    r_acts, r_mean = jvp(point.tape, vw, vb)
    r_mean = r_mean.view(point.z.shape)
    inv_std = torch.exp(-point.log_std)[:, None, None]  # [c, 1, 1, act]
    v_ls = v_ls[:, None, None]
    g_mean, g_ls = point.g_mean, point.g_log_std
    # ∂²l/∂μ² = −1/σ², ∂²l/∂μ∂log σ = −2z/σ, ∂²l/∂log σ² = −2z² (masked through coef, zero at masked steps)
    c = coef[..., None]
    r_d_mean = -c * (r_mean * inv_std.square() + 2 * point.z * inv_std * v_ls)
    r_d_ls = -c * (2 * point.z * inv_std * r_mean + 2 * point.z.square() * v_ls)
    beta = coupling((g_mean * r_mean + g_ls * v_ls).sum(-1))
    if beta is not None:
        r_d_mean = r_d_mean + beta[..., None] * g_mean
        r_d_ls = r_d_ls + beta[..., None] * g_ls
    gw, gb = r_vjp(point.tape, back, vw, r_acts, _flat_mean(point, r_d_mean))
    return _as_params(lay, gw, gb, r_d_ls.sum((1, 2)))


def fisher_product(lay: MLPLayout, point: Point, weight: Tensor, u: Params) -> Params:
    """F u per task: the Hessian of KL(π_point ‖ π_φ) over the states, averaged with `weight` [c, E, H] as the KL
    is, at φ = the point: J_outᵀ diag(ω/σ², 2ω) J_out u (no second derivatives of the network)."""
    assert lay.log_std is not None
    _, r_mean = jvp(point.tape, [u[n] for n in lay.weights], [u[n] for n in lay.biases])
    omega = normalized_weights(weight)
    d_mean = omega[..., None] * r_mean.view(point.z.shape) * torch.exp(-2 * point.log_std)[:, None, None]
    gw, gb, _ = vjp(point.tape, _flat_mean(point, d_mean))
    return _as_params(lay, gw, gb, 2 * u[lay.log_std] * omega.sum((1, 2))[:, None])


def outer_value(point: Point, data: TaskData) -> tuple[Tensor, Tensor]:
    """TRPO's post-update surrogate Σ w·A·mask·π/π_old per task [c] and its coefficients c_s [c, E, H]."""
    ratio = torch.exp(point.logp - data.logp_old * data.mask)  # l_s is masked; ratio 1 at masked steps
    coef = data.weight * data.adv * data.mask * ratio
    return coef.sum((1, 2)), coef


def kl_to(point: Point, old_mean: Tensor, old_log_std: Tensor, weight: Tensor) -> Tensor:
    """KL(π_old ‖ π_point) averaged over the states with `weight` as `estimators.mean_kl`, [c]."""
    mean = point.tape.mean.view(point.z.shape)
    ls_new, ls_old = point.log_std[:, None, None], old_log_std[:, None, None] if old_log_std.dim() == 2 else old_log_std
    var_ratio = torch.exp(2 * (ls_old - ls_new))
    kl = (ls_new - ls_old + 0.5 * (var_ratio + (old_mean - mean).square() * torch.exp(-2 * ls_new)) - 0.5).sum(-1)
    return (kl * normalized_weights(weight)).sum((1, 2))
