"""Returns, GAE, the linear feature baseline and advantage normalisation: pure, shape-documented functions.

Shapes: leading dims `[...]` are any batch dims (typically `[T, E]`), `H` is the horizon. `mask` is 1 for steps that
happened and 0 after an episode ended; rewards and values are 0 there.
"""

from __future__ import annotations

import torch
from torch import Tensor


def discounted_returns(rew: Tensor, mask: Tensor, gamma: float) -> Tensor:
    """Reward-to-go R_t = Σ_{t' ≥ t} γ^{t'−t} r_{t'} within each episode.

    Args:
        rew: [..., H] rewards.
        mask: [..., H] valid-step mask.
        gamma: discount γ ∈ [0, 1].

    Returns:
        [..., H], zero at masked steps.
    """
    return gae(rew, torch.zeros_like(rew), mask, gamma, 1.0)


def discounted_total(rew: Tensor, gamma: float) -> Tensor:
    """Σ_t γ^t r_t per episode: [..., H] -> [...] (the discounted return from the start state)."""
    weights = gamma ** torch.arange(rew.shape[-1], dtype=rew.dtype, device=rew.device)
    return (rew * weights).sum(-1)


def gae(rew: Tensor, values: Tensor, mask: Tensor, gamma: float, lam: float) -> Tensor:
    """Generalised advantage estimation (Schulman et al. 2016, eq. 16) for finite-horizon episodes.

    A_t = δ_t + γλ A_{t+1}, δ_t = r_t + γ V(s_{t+1}) − V(s_t), with V = 0 after the last valid step: the horizon is
    part of the MDP here (the families define H), so episodes are never bootstrapped past it.

    Args:
        rew: [..., H] rewards.
        values: [..., H] baseline values V(s_t).
        mask: [..., H] valid-step mask.
        gamma: discount γ.
        lam: GAE λ (1: Monte-Carlo returns minus the baseline).

    Returns:
        advantages [..., H], zero at masked steps.
    """
    values = values * mask
    next_values = torch.cat([values[..., 1:], torch.zeros_like(values[..., :1])], dim=-1)
    deltas = (rew + gamma * next_values - values) * mask
    adv = torch.zeros_like(rew)
    running = torch.zeros_like(rew[..., 0])
    for t in range(rew.shape[-1] - 1, -1, -1):  # H ≤ a few hundred: a reverse loop of vector ops
        running = deltas[..., t] + gamma * lam * running * mask[..., t]
        adv[..., t] = running
    return adv * mask


def linear_features(obs: Tensor) -> Tensor:
    """rllab's LinearFeatureBaseline features per step: [o, o², t, t², t³, 1] with o = clip(obs, ±10), t = step/100.

    Args:
        obs: [..., H, obs_dim].

    Returns:
        [..., H, 2·obs_dim + 4] float64.
    """
    o = obs.to(torch.float64).clamp(-10.0, 10.0)
    H = obs.shape[-2]
    t = (torch.arange(H, dtype=torch.float64, device=obs.device) / 100.0).view(*([1] * (o.dim() - 2)), H, 1)
    t = t.expand(*o.shape[:-1], 1)
    return torch.cat([o, o.square(), t, t.square(), t.pow(3), torch.ones_like(t)], dim=-1)


def fit_linear_baseline(obs: Tensor, returns: Tensor, mask: Tensor, reg: float = 1e-5) -> Tensor:
    """Fit rllab's linear feature baseline per task by ridge regression and return its values.

    MAML refits it on every task's batch (cbfinn/maml_rl, pytorch-maml-rl). The ridge coefficient grows ×10 until
    the solve succeeds and is finite, as in rllab (after 8 tries the baseline is zero).

    Args:
        obs: [T, E, H, obs_dim] observations.
        returns: [T, E, H] regression targets (discounted reward-to-go).
        mask: [T, E, H] valid steps (only these enter the fit).
        reg: initial ridge coefficient.

    Returns:
        values [T, E, H] in `returns.dtype`, zero at masked steps.
    """
    T = obs.shape[0]
    feats = linear_features(obs) * mask.to(torch.float64).unsqueeze(-1)  # [T, E, H, F]
    X = feats.reshape(T, -1, feats.shape[-1])
    y = (returns.to(torch.float64) * mask).reshape(T, -1, 1)
    coef = _ridge(X.transpose(1, 2) @ X, X.transpose(1, 2) @ y, reg)
    values = (feats @ coef.unsqueeze(1)).squeeze(-1)
    return values.to(returns.dtype) * mask


def linear_baseline_without_each(obs: Tensor, returns: Tensor, mask: Tensor, reg: float = 1e-5) -> Tensor:
    """The linear baseline fitted on all of a task's episodes but one, evaluated on every episode (cross-fitting).

    values[t, e, e'] are episode e′'s baseline values under the fit without episode e: for each e, neither the fit
    nor anything computed from the other episodes with it depends on episode e's actions. The E fits cost one Gram
    matrix per episode, subtracted from the task's.

    Args:
        obs: [T, E, H, obs_dim]; returns, mask: [T, E, H] (as `fit_linear_baseline`; E ≥ 2).

    Returns:
        values [T, E (left out), E (evaluated), H] in `returns.dtype`, zero at masked steps.
    """
    T, E, H = mask.shape
    if E < 2:
        raise ValueError("a leave-one-episode-out baseline needs at least 2 episodes per task")
    feats = linear_features(obs) * mask.to(torch.float64).unsqueeze(-1)  # [T, E, H, F]
    y = (returns.to(torch.float64) * mask).unsqueeze(-1)
    values = torch.empty(T, E, E, H, dtype=torch.float64, device=obs.device)
    for t in range(T):  # one task at a time: E Gram matrices of F × F (F = 214 on Ant) stay small
        gram_e = feats[t].transpose(1, 2) @ feats[t]  # [E, F, F]
        rhs_e = feats[t].transpose(1, 2) @ y[t]  # [E, F, 1]
        coef = _ridge(gram_e.sum(0) - gram_e, rhs_e.sum(0) - rhs_e, reg)  # [E, F, 1], each fit without its episode
        values[t] = torch.einsum("bhf,efo->ebh", feats[t], coef)
    return values.to(returns.dtype) * mask[:, None]


def cross_fitted_advantages(
    obs: Tensor, rew: Tensor, mask: Tensor, weight: Tensor, gamma: float, lam: float, baseline: bool = True,
    normalize: bool = True, eps: float = 1e-8, values: Tensor | None = None,
) -> tuple[Tensor, Tensor]:
    """GAE advantages whose baseline and normalisation never see the episode they are applied to.

    Episode e gets the baseline fitted on the task's other episodes (`linear_baseline_without_each`), and is
    standardised by the weighted mean and standard deviation of the *other* episodes' advantages computed with that
    same baseline: nothing applied to episode e depends on its actions, so every order of a score-function estimator
    stays unbiased (a fit on the same batch biases the meta-gradient by O(1/E); issue 16). Normalising then scales
    episode e's contribution by 1/σ_e, independent of it: in expectation the step is E[1/σ_e] times the raw one.

    Args:
        obs: [T, E, H, obs_dim]; rew, mask, weight: [T, E, H] (`step_weights`); E ≥ 2.
        gamma, lam: discount and GAE λ.
        baseline: fit the linear baseline (else none).
        normalize: standardise as above (else the raw advantages; σ = 1).
        eps: added to σ.
        values: [T, E, H] baseline values that depend on no episode of this batch (a value function fitted on
            earlier batches: `metarl.value_baseline`), used instead of the linear fit; only the normalisation is
            then cross-fitted.

    Returns:
        (advantages [T, E, H], zero at masked steps; σ_e [T, E, 1], the standard deviation episode e was divided by).
    """
    T, E, H = mask.shape
    if E < 2:
        raise ValueError("cross-fitted advantages need at least 2 episodes per task")
    if values is not None or not baseline:  # one baseline for every episode: O(T·E·H), no episode pairs
        own = gae(rew, torch.zeros_like(rew) if values is None else values.to(rew.dtype), mask, gamma, lam)
        if not normalize:
            return own, torch.ones(T, E, 1, dtype=rew.dtype, device=rew.device)
        return _standardize_by_others(own, weight, eps)
    # the episode pairs [T, E, E, H] of one chunk of tasks at a time: memory O(E²·H) per task, bounded per chunk
    rows = max(1, PAIR_ELEMENTS // (E * E * H))
    if T > rows:
        parts = [cross_fitted_advantages(obs[i:i + rows], rew[i:i + rows], mask[i:i + rows], weight[i:i + rows],
                                         gamma, lam, baseline, normalize, eps) for i in range(0, T, rows)]
        return torch.cat([a for a, _ in parts]), torch.cat([s for _, s in parts])
    returns = discounted_returns(rew, mask, gamma)
    values = linear_baseline_without_each(obs, returns, mask)
    if lam == 1.0:  # GAE(λ = 1) telescopes to R_t − V(s_t): no loop over the E² episode pairs
        pairs = (returns[:, None] - values) * mask[:, None]  # [T, e, e', H]
    else:
        pairs = gae(rew[:, None].expand_as(values), values, mask[:, None].expand_as(values), gamma, lam)
    own = pairs.diagonal(dim1=1, dim2=2).permute(0, 2, 1)  # [T, E, H]: each episode with its own cross-fit
    if not normalize:
        return own, torch.ones(T, E, 1, dtype=rew.dtype, device=rew.device)
    return _standardize_by_others(own, weight, eps, pairs)


PAIR_ELEMENTS = 1 << 24
"""Elements of the [T, E, E, H] episode-pair tensors built at once by `cross_fitted_advantages` (64 MB in float32):
the paper presets (E = 20, H = 200) take 200 tasks per chunk; E = 200 episodes, 2 tasks."""


def _standardize_by_others(own: Tensor, weight: Tensor, eps: float,
                           pairs: Tensor | None = None) -> tuple[Tensor, Tensor]:
    """Episode e's advantages `own` [T, E, H] standardised by the weighted mean and standard deviation of the other
    episodes' advantages `pairs[:, e, e']` [T, E, E, H] (e' ≠ e: episode e' under e's cross-fit). None: every
    episode's advantages are its own (no baseline, or one fitted without this batch), so the sums come from
    per-episode totals, without the pair dimension. Returns (advantages, σ_e + eps [T, E, 1])."""
    w = weight.to(own.dtype)
    if pairs is None:
        per_episode = [w.sum(-1), (own * w).sum(-1), (own.square() * w).sum(-1)]  # [T, E] each
        s0, s1, s2 = (x.sum(-1, keepdim=True) - x for x in per_episode)  # Σ over e' ≠ e
    else:  # weighted sums of each pair's advantages over its steps, then over the other episodes
        others = 1 - torch.eye(own.shape[1], dtype=own.dtype, device=own.device)  # [e, e'], e' ≠ e
        s0 = (w.sum(-1)[:, None, :] * others).sum(-1)  # [T, e]: Σ_{e'≠e} Σ_h w
        s1 = (torch.einsum("teph,tph->tep", pairs, w) * others).sum(-1)
        s2 = (torch.einsum("teph,tph->tep", pairs.square(), w) * others).sum(-1)
    s0 = s0.clamp_min(torch.finfo(own.dtype).tiny)
    mean = (s1 / s0)[..., None]  # [T, E, 1]
    std = (s2 / s0 - mean.squeeze(-1).square()).clamp_min(0.0).sqrt()[..., None]
    return (own - mean) / (std + eps) * (weight > 0), std + eps


def _ridge(gram: Tensor, rhs: Tensor, reg: float) -> Tensor:
    """(gram + reg·I)⁻¹ rhs for a batch of symmetric PSD systems [..., F, F], [..., F, 1]; the ridge grows ×10 until
    Cholesky succeeds and the solution is finite (zeros after 8 tries)."""
    eye = torch.eye(gram.shape[-1], dtype=gram.dtype, device=gram.device)
    coef = torch.zeros_like(rhs)
    for _ in range(8):
        # Cholesky, not LU: on Ant (features of contact forces that are always zero, episodes that end early: rank
        # 144 of 214) MKL's batched LU failed outright at the paper's batch ("Pivots given to lu_solve ...") where
        # Cholesky with the ridge term succeeds; `_ex` reports, never raises
        factor, info = torch.linalg.cholesky_ex(gram + reg * eye)
        if bool((info == 0).all()):
            coef = torch.cholesky_solve(rhs, factor)
            if bool(torch.isfinite(coef).all()):
                break
        reg *= 10.0
    return coef


def step_weights(mask: Tensor, average: str = "steps") -> Tensor:
    """Each step's weight in a task's batch averages (surrogates, KL, advantage normalisation).

    "steps": every step counts the same, w = 1/(E·H): a fixed denominator, so a surrogate Σ w·log π·A stays an
    unbiased estimate of ∇V/H when episodes end early (rllab's per-step average). "episodes": every episode counts
    the same and each averages over its own valid steps, w = 1/(E·L_e) (pytorch-maml-rl's `weighted_mean`): the steps
    of short episodes weigh more, which depends on the actions, so the estimate is biased under early termination.

    Args:
        mask: [..., E, H] valid steps.
        average: "steps" or "episodes".

    Returns:
        [..., E, H] weights, zero at masked steps.
    """
    E, H = mask.shape[-2:]
    if average == "steps":
        return mask / (E * H)
    if average == "episodes":
        return mask / (E * mask.sum(-1, keepdim=True).clamp_min(1.0))
    raise ValueError(f"average must be 'steps' or 'episodes', got {average!r}")


def normalized_weights(weight: Tensor, dims: tuple[int, ...] = (-2, -1)) -> Tensor:
    """`weight` scaled to sum to 1 over `dims`: the weights of a weighted mean (the valid-step mask gives the plain
    mean over valid steps). One place, so that the KL and its Fisher average over states the same way."""
    return weight / weight.sum(dims, keepdim=True).clamp_min(torch.finfo(weight.dtype).tiny)


def normalization_stats(adv: Tensor, weight: Tensor) -> tuple[Tensor, Tensor]:
    """Weighted mean and standard deviation of each task's advantages over its steps, [T, 1, ..., 1].

    Args:
        adv: [T, ...] advantages.
        weight: [T, ...] step weights (`step_weights`).
    """
    dims = tuple(range(1, adv.dim()))
    w = normalized_weights(weight, dims)
    mean = (adv * w).sum(dims, keepdim=True)
    return mean, ((adv - mean).square() * w).sum(dims, keepdim=True).sqrt()


def normalize_advantages(adv: Tensor, weight: Tensor, eps: float = 1e-8) -> Tensor:
    """Standardise advantages per task: zero weighted mean and unit weighted variance over its steps (rllab
    `center_adv`, pytorch-maml-rl `weighted_normalize`).

    Args:
        adv: [T, ...] advantages.
        weight: [T, ...] step weights (`step_weights`; proportional to the valid-step mask for a plain mean).
        eps: added to the standard deviation.

    Returns:
        [T, ...], zero where the weight is zero.
    """
    mean, std = normalization_stats(adv, weight)
    return (adv - mean) / (std + eps) * (weight > 0)
