"""Returns, GAE, the linear feature baseline, step weights and advantage normalisation against hand-computed values."""

from __future__ import annotations

import pytest
import torch

from metarl.estimators import naive, outer_objective, prepare
from metarl.policies import PolicyOutput
from metarl.returns import (
    discounted_returns,
    discounted_total,
    fit_linear_baseline,
    gae,
    linear_features,
    normalize_advantages,
    step_weights,
)
from metarl.sampler import Batch

D = torch.float64
# one task, two episodes, H = 3: the second ends after its first step
REW = torch.tensor([[[1.0, 2.0, 4.0], [3.0, 0.0, 0.0]]], dtype=D)
MASK = torch.tensor([[[1.0, 1.0, 1.0], [1.0, 0.0, 0.0]]], dtype=D)


def test_discounted_returns_by_hand() -> None:
    g = 0.5
    expected = torch.tensor([[[1 + g * 2 + g * g * 4, 2 + g * 4, 4.0], [3.0, 0.0, 0.0]]], dtype=D)
    torch.testing.assert_close(discounted_returns(REW, MASK, g), expected)
    torch.testing.assert_close(discounted_total(REW, g), expected[..., 0])


def test_gae_by_hand() -> None:
    """λ = 1: returns minus values; λ = 0: one-step TD errors δ_t = r_t + γV(s_{t+1}) − V(s_t), with V = 0 after the
    last valid step (no bootstrap past an episode's end)."""
    g = 0.5
    values = torch.tensor([[[1.0, 1.0, 1.0], [2.0, 7.0, 7.0]]], dtype=D)  # the 7s are past the end: ignored
    torch.testing.assert_close(gae(REW, values, MASK, g, 1.0), (discounted_returns(REW, MASK, g) - values) * MASK)
    td = torch.tensor([[[1 + g * 1 - 1, 2 + g * 1 - 1, 4 + 0 - 1], [3 + 0 - 2, 0.0, 0.0]]], dtype=D)
    torch.testing.assert_close(gae(REW, values, MASK, g, 0.0), td)
    lam = 0.5  # A_1 = δ_1 + γλ δ_2 + (γλ)² δ_3
    first = td[0, 0, 0] + g * lam * td[0, 0, 1] + (g * lam) ** 2 * td[0, 0, 2]
    torch.testing.assert_close(gae(REW, values, MASK, g, lam)[0, 0, 0], first)


def test_linear_baseline_recovers_a_target_in_its_feature_span() -> None:
    """Targets that are an exact linear function of rllab's features are fitted exactly (ridge 1e-5 aside), per task,
    and masked steps neither enter the fit nor get a value."""
    gen = torch.Generator().manual_seed(0)
    obs = torch.rand(2, 5, 100, 3, generator=gen, dtype=D)  # H = 100: t = step/100 spans [0, 1)
    mask = torch.ones(2, 5, 100, dtype=D)
    mask[:, 0, 60:] = 0.0
    coef = torch.randn(2, 1, 1, 2 * 3 + 4, generator=gen, dtype=D)  # one linear function per task
    target = (linear_features(obs) * coef).sum(-1) * mask
    noise = torch.randn(target.shape, generator=gen, dtype=D) * (1 - mask) * 100  # junk past the ends
    values = fit_linear_baseline(obs, target + noise, mask)
    torch.testing.assert_close(values, target, rtol=1e-4, atol=1e-4)
    assert torch.equal(values * (1 - mask), torch.zeros_like(values))


def test_step_weights() -> None:
    steps = step_weights(MASK, "steps")
    torch.testing.assert_close(steps, MASK / 6)  # E·H = 6
    episodes = step_weights(MASK, "episodes")
    torch.testing.assert_close(episodes, torch.tensor([[[1 / 6, 1 / 6, 1 / 6], [1 / 2, 0.0, 0.0]]], dtype=D))
    torch.testing.assert_close(episodes.sum((-2, -1)), torch.ones(1, dtype=D))  # each episode weighs 1/E
    with pytest.raises(ValueError, match="average must be"):
        step_weights(MASK, "tasks")


def test_normalize_advantages_by_hand() -> None:
    adv = torch.tensor([[[1.0, 2.0, 3.0], [6.0, 9.0, 9.0]]], dtype=D)  # the 9s are past the end
    # every valid step the same: mean and std of (1, 2, 3, 6)
    flat = torch.tensor([1.0, 2.0, 3.0, 6.0], dtype=D)
    mean, std = flat.mean(), flat.std(unbiased=False)
    expected = ((adv - mean) / std) * MASK
    torch.testing.assert_close(normalize_advantages(adv, step_weights(MASK, "steps")), expected)
    # every episode the same (pytorch-maml-rl's weighted_normalize): mean of the episode means (2 and 6) = 4,
    # variance = mean over episodes of each episode's mean squared deviation: ((9 + 4 + 1)/3 + 4) / 2
    var = ((9 + 4 + 1) / 3 + 4) / 2
    expected = ((adv - 4.0) / var**0.5) * MASK
    torch.testing.assert_close(normalize_advantages(adv, step_weights(MASK, "episodes")), expected)


def test_surrogates_average_steps_or_episodes() -> None:
    """The weighted surrogates are the per-step average over E·H, or the mean over episodes of per-episode means."""
    logp = torch.tensor([[[0.5, -1.0, 2.0], [4.0, 0.0, 0.0]]], dtype=D)
    adv = torch.tensor([[[1.0, 2.0, 3.0], [-1.0, 0.0, 0.0]]], dtype=D)
    terms = [0.5 * 1, -1.0 * 2, 2.0 * 3, 4.0 * -1]
    torch.testing.assert_close(naive(logp, adv, step_weights(MASK, "steps")), torch.tensor([sum(terms) / 6], dtype=D))
    per_episode = (sum(terms[:3]) / 3 + terms[3] / 1) / 2
    torch.testing.assert_close(naive(logp, adv, step_weights(MASK, "episodes")), torch.tensor([per_episode], dtype=D))


def test_prepare_uses_the_requested_average_everywhere() -> None:
    """prepare's weights drive both the normalisation and the outer surrogate (its value at θ_old is Σ w·A)."""
    obs = torch.zeros(1, 2, 3, 1, dtype=D)
    batch = Batch(obs, torch.zeros(1, 2, 3, 1, dtype=D), REW, MASK.bool(), torch.zeros_like(REW), MASK, REW.sum(-1))
    for average in ("steps", "episodes"):
        data = prepare(batch, gamma=1.0, baseline="none", normalize=True, average=average)
        torch.testing.assert_close(data.weight, step_weights(MASK, average))
        out = PolicyOutput(torch.zeros(1, 2, 3, 1, dtype=D), torch.zeros(1, dtype=D))
        torch.testing.assert_close(outer_objective(out, data), (data.adv * data.weight).sum((-2, -1)))
        w = data.weight / data.weight.sum()
        torch.testing.assert_close((data.adv * w).sum(), torch.zeros((), dtype=D), atol=1e-12, rtol=0)


def test_linear_baseline_on_a_rank_deficient_batch() -> None:
    """Ant-like data: most observation features always zero and episodes ending early (rank-deficient Gram). The
    fit must come back finite and equal to the ridge solution (MKL's batched LU failed on Ant's paper batch)."""
    g = torch.Generator().manual_seed(0)
    T, E, H, D = 3, 5, 40, 30
    obs = torch.zeros(T, E, H, D, dtype=torch.float64)
    obs[..., :4] = torch.randn(T, E, H, 4, generator=g, dtype=torch.float64)
    lengths = torch.randint(5, H, (T, E), generator=g)
    mask = (torch.arange(H) < lengths[..., None]).to(torch.float64)
    returns = torch.randn(T, E, H, generator=g, dtype=torch.float64) * mask
    values = fit_linear_baseline(obs, returns, mask)
    assert torch.isfinite(values).all()
    feats = linear_features(obs) * mask[..., None]
    for t in range(T):
        X, y = feats[t].reshape(-1, feats.shape[-1]), returns[t].reshape(-1, 1)
        coef = torch.linalg.solve(X.T @ X + 1e-5 * torch.eye(X.shape[1], dtype=torch.float64), X.T @ y)
        torch.testing.assert_close(values[t], (feats[t] @ coef).squeeze(-1) * mask[t], rtol=1e-6, atol=1e-8)


@pytest.mark.parametrize("baseline", [True, False])
def test_cross_fitted_advantages_equal_a_loop_over_left_out_episodes(baseline: bool) -> None:
    """For each episode e: the linear baseline fitted on the other episodes alone (`fit_linear_baseline` on the
    subset; none without a baseline), e's advantages under it, standardised by the other episodes' advantages under
    the same fit."""
    from metarl.returns import cross_fitted_advantages

    g = torch.Generator().manual_seed(1)
    T, E, H, D = 2, 5, 12, 3
    obs = torch.randn(T, E, H, D, generator=g, dtype=torch.float64)
    rew = torch.randn(T, E, H, generator=g, dtype=torch.float64)
    lengths = torch.randint(3, H + 1, (T, E), generator=g)
    mask = (torch.arange(H) < lengths[..., None]).to(torch.float64)
    rew = rew * mask
    weight = step_weights(mask)
    for lam in (1.0, 0.9):
        ours, _ = cross_fitted_advantages(obs, rew, mask, weight, 0.99, lam, baseline)
        for t in range(T):
            for e in range(E):
                rest = [i for i in range(E) if i != e]
                returns = discounted_returns(rew[t:t + 1], mask[t:t + 1], 0.99)
                fit = fit_linear_baseline(obs[t:t + 1, rest], returns[:, rest], mask[t:t + 1, rest])
                # the fit's coefficients applied to every episode: refit with episode e's rows given zero weight
                feats = linear_features(obs[t]) * mask[t, ..., None]
                X, y = feats[rest].reshape(-1, feats.shape[-1]), (returns[0, rest] * mask[t, rest]).reshape(-1, 1)
                coef = torch.linalg.solve(X.T @ X + 1e-5 * torch.eye(X.shape[1], dtype=torch.float64), X.T @ y)
                values = (feats @ coef).squeeze(-1) * mask[t]
                torch.testing.assert_close(values[rest], fit[0])
                values = values if baseline else torch.zeros_like(values)
                adv = gae(rew[t], values, mask[t], 0.99, lam)
                others = normalize_advantages(adv[rest][None], weight[t, rest][None])  # their own statistics
                mean = (adv[rest] * weight[t, rest]).sum() / weight[t, rest].sum()
                std = (((adv[rest] - mean) ** 2) * weight[t, rest]).sum().div(weight[t, rest].sum()).sqrt()
                torch.testing.assert_close(others[0], (adv[rest] - mean) / (std + 1e-8) * (weight[t, rest] > 0))
                expected = (adv[e] - mean) / (std + 1e-8) * (weight[t, e] > 0)
                torch.testing.assert_close(ours[t, e], expected, rtol=1e-9, atol=1e-10)


def test_cross_fitted_advantages_chunked_over_tasks_equal_one_pass(monkeypatch: pytest.MonkeyPatch) -> None:
    """The episode pairs are built a chunk of tasks at a time (memory O(E²·H) per task): the same numbers."""
    from metarl import returns

    g = torch.Generator().manual_seed(2)
    T, E, H, D = 5, 4, 6, 2
    obs = torch.randn(T, E, H, D, generator=g, dtype=torch.float64)
    mask = (torch.arange(H) < torch.randint(2, H + 1, (T, E, 1), generator=g)).to(torch.float64)
    rew = torch.randn(T, E, H, generator=g, dtype=torch.float64) * mask
    weight = step_weights(mask)
    whole = returns.cross_fitted_advantages(obs, rew, mask, weight, 0.99, 0.95)
    monkeypatch.setattr(returns, "PAIR_ELEMENTS", 2 * E * E * H)  # two tasks per chunk: 3 chunks, the last short
    chunked = returns.cross_fitted_advantages(obs, rew, mask, weight, 0.99, 0.95)
    for a, b in zip(whole, chunked, strict=True):
        torch.testing.assert_close(a, b, rtol=0, atol=0)
