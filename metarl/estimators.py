"""Policy-gradient surrogates for the inner and outer loops of meta-RL: pure functions of (params, data).

Every surrogate is an objective to *maximise* whose gradient at the sampling parameters is an unbiased estimate of
∇V/H (per-step average, as rllab and pytorch-maml-rl; so the papers' inner step sizes carry over). Each reduces the
last two dims [E, H] and keeps any leading ones: on [T, E, H] data they return one value per task, [T]. They differ in
their *Hessians*, which is what second-order MAML differentiates (notes/metagrad.md §1.6):

| name | Hessian terms kept | unbiased for |
|---|---|---|
| ``dice`` | Loaded-DiCE (Farquhar et al. 2019) with λ: all terms at λ = 1 | ∇²V (formulation I) |
| ``dice_cv`` | dice, cross-time score products centred by the other episodes' | ∇²V (formulation I) |
| ``lvc`` | per-step ratio (ProMP): drops cross-time score products | biased ∇²V, low variance |
| ``naive`` | REINFORCE `log π·A`: drops every score product | nothing: the peers' bug |

Every one of them reads the advantages `prepare` computes, so each takes any state baseline that does not depend on
the episode it is applied to: the cross-fitted linear one, or the learned V(s, t, task, stage) of
`metarl.value_baseline` (`--baseline value`, TMAML's learned control variate: Liu, Socher & Xiong 2019, ICML), which
enters Loaded-DiCE at every order in the form of Mao et al. 2019 and keeps `dice`/`dice_cv` unbiased for ∇²V.

`emaml` is not an inner surrogate but a meta-objective: the naive inner step (the sampled step is a deterministic map
given the samples) plus the score term (V̂(θ′) − c)·Σ log π_θ over the pre-update actions, unbiased for formulation
II (E-MAML / Al-Shedivat et al.; metagrad.md §1.3).
"""

from __future__ import annotations

from typing import Literal, NamedTuple

import torch
from torch import Tensor, nn

from metarl.policies import (
    Params,
    PolicyOutput,
    broadcast_log_std,
    diag_gaussian_kl,
    forward,
    gaussian_log_prob,
)
from metarl.returns import (
    cross_fitted_advantages,
    discounted_returns,
    discounted_total,
    fit_linear_baseline,
    gae,
    normalize_advantages,
    normalized_weights,
    step_weights,
)
from metarl.sampler import Batch

InnerEstimator = Literal["dice", "dice_cv", "lvc", "naive"]
ESTIMATORS = ("dice", "dice_cv", "emaml", "lvc", "naive")


class TaskData(NamedTuple):
    """A batch prepared for surrogates: per task [T, E, H, ...] (or [E, H, ...] for one task).

    Attributes:
        obs: observations, policy dtype.
        act: sampled actions.
        logp_old: log-probabilities under the sampling policy (detached).
        adv: advantages (detached, zero at masked steps).
        mask: valid-step mask.
        value0: [T, E], discounted return Σ_t γ^t r_t of each episode (the score term's V̂).
        weight: each step's weight in the batch averages (`metarl.returns.step_weights`), zero at masked steps.
        scale: [T, E], the standard deviation each episode's advantages were divided by (1 without normalisation):
            `dice_cv` undoes it to keep its control variate independent of the episode it is applied to.
    """

    obs: Tensor
    act: Tensor
    logp_old: Tensor
    adv: Tensor
    mask: Tensor
    value0: Tensor
    weight: Tensor
    scale: Tensor


def prepare(
    batch: Batch,
    gamma: float,
    gae_lambda: float = 1.0,
    baseline: Literal["linear", "none", "value"] = "linear",
    normalize: bool = True,
    average: Literal["steps", "episodes"] = "steps",
    cross_fit: bool = False,
    values: Tensor | None = None,
) -> TaskData:
    """Advantages for a sampled batch: rllab's linear baseline refit per task, GAE, per-task normalisation.

    Args:
        batch: from the sampler, [T, E, H, ...].
        gamma: discount.
        gae_lambda: GAE λ (MAML, pytorch-maml-rl: 1).
        baseline: "linear" (rllab's LinearFeatureBaseline, refit per task), "none", or "value": the given `values`.
        normalize: standardise advantages per task.
        average: how the batch averages weigh steps: "steps" (every step the same; unbiased) or "episodes" (every
            episode the same, pytorch-maml-rl's weighting); `metarl.returns.step_weights`.
        cross_fit: fit each episode's baseline and normalisation statistics on the task's other episodes, so that
            neither depends on the actions they weigh (unbiased estimators stay unbiased at every order).
        values: [T, E, H] baseline values for baseline="value", computed without this batch (a value function
            fitted on earlier ones, `metarl.value_baseline`): only the normalisation is then cross-fitted.
    """
    if baseline not in ("linear", "none", "value"):
        raise ValueError(f"baseline must be 'linear', 'none' or 'value', got {baseline!r}")
    if (baseline == "value") != (values is not None):
        raise ValueError("baseline='value' needs the values (and only it takes them)")
    weight = step_weights(batch.mask, average)
    scale = torch.ones(batch.mask.shape[:-1], dtype=batch.rew.dtype, device=batch.rew.device)
    if cross_fit:
        adv, std = cross_fitted_advantages(batch.obs, batch.rew, batch.mask, weight, gamma, gae_lambda,
                                           baseline == "linear", normalize, values=values)
        scale = std[..., 0]
    else:
        returns = discounted_returns(batch.rew, batch.mask, gamma)
        if values is None:
            values = fit_linear_baseline(batch.obs, returns, batch.mask) if baseline == "linear" else \
                torch.zeros_like(returns)
        values = values.to(returns.dtype) * batch.mask
        adv = gae(batch.rew, values, batch.mask, gamma, gae_lambda)
        if normalize:
            adv = normalize_advantages(adv, weight)
    return TaskData(batch.obs, batch.act, batch.logp, adv.detach(), batch.mask, discounted_total(batch.rew, gamma),
                    weight, scale)


# ----------------------------------------------------------------------------------------------- surrogates
def magic_box(x: Tensor) -> Tensor:
    """DiCE's ⊠(x) = exp(x − ⊥x): value 1, and ∇ⁿ⊠ gives the score-function terms of every order."""
    return torch.exp(x - x.detach())


def _weighted_sum(terms: Tensor, weight: Tensor) -> Tensor:
    """Σ_{e,t} w·terms: [..., E, H] -> [...]. With `step_weights` "steps" this is the per-step average over E·H; a
    fixed denominator (not the valid-step count) keeps the estimate unbiased under early termination."""
    return (terms * weight).sum((-2, -1))


def loaded_dice(logp: Tensor, adv: Tensor, weight: Tensor, lam: float = 1.0) -> Tensor:
    """Loaded-DiCE surrogate Σ_t (⊠(w_t) − ⊠(w_t − log π_t))·A_t with w_t = λ w_{t−1} + log π_t (Farquhar et al.
    2019, eq. 5). λ = 1: unbiased derivatives of every order; λ = 0: LVC.

    Args:
        logp: [..., E, H] log π_θ(a_t|s_t) (zero at masked steps), differentiable.
        adv: [..., E, H] detached advantages.
        weight: [..., E, H] step weights of the average (`metarl.returns.step_weights`).
        lam: λ ∈ [0, 1].

    Returns:
        [...], the weighted average over the E·H steps.
    """
    w = logp.cumsum(-1) if lam == 1.0 else logp @ lambda_decay(logp.shape[-1], lam, logp).T
    return _weighted_sum((magic_box(w) - magic_box(w - logp)) * adv, weight)


def lambda_decay(H: int, lam: float, like: Tensor) -> Tensor:
    """[H, H] lower-triangular D[t, t'] = λ^{t−t'} (t ≥ t'), in `like`'s dtype and device: x @ D.T is the discounted
    cumsum Σ_{t'≤t} λ^{t−t'} x_t' and x @ D the reverse one, as one matmul (no in-place ops for torch.func)."""
    t = torch.arange(H, device=like.device)
    lag = (t[:, None] - t[None, :]).clamp_min(0).to(like.dtype)  # in like's dtype: λ^lag in float32 would cost a
    return torch.where(t[:, None] >= t[None, :], lam**lag, 0.0).to(like.dtype)  # float64 policy 1e-8 of precision


def later_sum(x: Tensor, lam: float) -> Tensor:
    """Σ_{t>a} λ^{t−a} x_t for every a: [..., H] -> [..., H]."""
    if lam == 1.0:
        return x.flip(-1).cumsum(-1).flip(-1) - x
    return x @ lambda_decay(x.shape[-1], lam, x) - x


def others_mean(x: Tensor) -> Tensor:
    """Leave-one-out mean over the episodes: [..., E, H] -> [..., E, H], row e = mean of the rows e' ≠ e (zero for
    E = 1: no other episode, no control variate)."""
    E = x.shape[-2]
    if E < 2:
        return torch.zeros_like(x)
    return (x.sum(-2, keepdim=True) - x) / (E - 1)


def score_control_variate(logp: Tensor, adv: Tensor, weight: Tensor, scale: Tensor, lam: float = 1.0) -> Tensor:
    """The control variate of `dice_cv`: −Σ_{e,a} (⊠(l_a^e) − 1)·(Q̄_a^e − ⊥Q̄_a^e), zero in value and gradient.

    Loaded-DiCE's Hessian holds the cross-time score products Σ_a (s_a P_aᵀ + P_a s_aᵀ) of each episode, with s_a =
    ∇log π(a_a|s_a) and P_a = Σ_{t>a} λ^{t−a} w_t A_t s_t the episode's own policy gradient from step a + 1 on: a
    score times a noisy sum of up to H scores, the variance issue 16 measured. This term's Hessian subtracts
    s_a P̄_aᵀ + P̄_a s_aᵀ, with P̄_a^e = ∇Q̄_a^e the same sum averaged over the task's *other* episodes at the same
    step index (a time-dependent vector baseline for the score s_a, in the spirit of Mao et al. 2019, "A baseline for
    any order gradient estimation in stochastic computation graphs", ICML). P̄_a^e does not depend on episode e, so
    E[s_a^e P̄_a^eᵀ] = E[s_a^e]·E[P̄_a^e]ᵀ = 0 and the Hessian stays unbiased for ∇²V. Normalised advantages are
    divided by σ_{e'} fitted on the episodes other than e' (cross-fitting), which includes e: so the other episodes'
    terms are taken with σ_{e'} undone and divided by e's own σ_e, which is independent of e.

    Args:
        logp: [..., E, H] log π_θ(a|s), masked, differentiable.
        adv, weight: [..., E, H] detached advantages and step weights (their product is c_t of the Hessian).
        scale: [..., E] σ_e (`TaskData.scale`).
        lam: Loaded-DiCE λ (P_a carries the same decay).

    Returns:
        [...] (zero in value).
    """
    sigma = scale[..., None]
    q_bar = others_mean(later_sum(weight * adv * logp, lam) * sigma) / sigma
    return -((magic_box(logp) - 1) * (q_bar - q_bar.detach())).sum((-2, -1))


def lvc(logp: Tensor, logp_old: Tensor, adv: Tensor, weight: Tensor) -> Tensor:
    """LVC (ProMP, Rothfuss et al. 2019): Σ_t π_θ/π_old·A_t, weighted average. Shapes as `loaded_dice`."""
    return _weighted_sum(torch.exp(logp - logp_old) * adv, weight)


def naive(logp: Tensor, adv: Tensor, weight: Tensor) -> Tensor:
    """REINFORCE Σ_t log π_θ·A_t, weighted average: right gradient, wrong Hessian (kept for comparison)."""
    return _weighted_sum(logp * adv, weight)


def inner_objective(
    policy: nn.Module,
    params: Params,
    data: TaskData,
    estimator: InnerEstimator = "dice",
    dice_lambda: float = 1.0,
) -> Tensor:
    """Inner surrogate at `params` (to maximise): data [T, E, H, ...] with params stacked [T, ...] -> [T]; or one
    task's data [E, H, ...] with shared params -> scalar."""
    logp = gaussian_log_prob(forward(policy, params, data.obs), data.act) * data.mask
    if estimator == "dice":
        return loaded_dice(logp, data.adv, data.weight, dice_lambda)
    if estimator == "dice_cv":
        return loaded_dice(logp, data.adv, data.weight, dice_lambda) + \
            score_control_variate(logp, data.adv, data.weight, data.scale, dice_lambda)
    if estimator == "lvc":
        return lvc(logp, data.logp_old * data.mask, data.adv, data.weight)
    if estimator == "naive":
        return naive(logp, data.adv, data.weight)
    raise ValueError(f"unknown inner estimator {estimator!r}; choose from dice, dice_cv, lvc, naive")


def outer_objective(out: PolicyOutput, data: TaskData) -> Tensor:
    """Post-update surrogate Σ π_θ′/π_old·A (TRPO's), weighted average over [..., E, H] -> [...]."""
    logp = gaussian_log_prob(out, data.act)
    return _weighted_sum(torch.exp(logp - data.logp_old) * data.adv * data.mask, data.weight)


def mean_kl(old: PolicyOutput, new: PolicyOutput, weight: Tensor) -> Tensor:
    """KL(π_old ‖ π_new) averaged over the states with weights `weight` [..., E, H] (normalised to sum to 1; the
    valid-step mask gives the plain mean over valid states, `TaskData.weight` the batch's own average); outputs
    [..., E, H, act] -> [...]."""
    kl = diag_gaussian_kl(_expand_std(old), _expand_std(new))
    return (kl * normalized_weights(weight)).sum((-2, -1))


def _expand_std(out: PolicyOutput) -> PolicyOutput:
    return PolicyOutput(out.mean, broadcast_log_std(out))


def score_term(policy: nn.Module, params: Params, data: TaskData, weight: Tensor) -> Tensor:
    """E-MAML's missing term for formulation II: weight · Σ_{e,t} log π_params(a_t^e), summed (not averaged) over
    every pre-update action (metagrad.md §1.3: a mean-scaled term is biased). `weight` [...] = (V̂(θ′) − c) is
    detached and its baseline c must not depend on these samples. Returns [...]."""
    logp = gaussian_log_prob(forward(policy, params, data.obs), data.act) * data.mask
    return weight.detach() * logp.sum((-2, -1))
