"""Exact meta-gradient tests on the analytic 2-step MDP (notes/metagrad.md §3), float64, through the public API.

The toy family is registered with `metarl.register` and sampled by metarl's own sampler; expectations are compared
with closed forms by z-scores over independent chunks (|z| < 5 for unbiased estimators). Estimators that are
*supposed* to be biased are asserted biased, so a regression to the naive surrogate fails here.

Per-step averages: metarl's surrogates average over E·H steps, so the inner gradient estimates ∇V/H (H = 2).
"""

from __future__ import annotations

import math
from collections.abc import Iterator
from dataclasses import replace

import pytest
import torch
from torch.func import jacfwd

import metarl
from metarl.algos.maml import (
    MAMLConfig,
    adapt,
    collect,
    index_rollouts,
    kl_curvature,
    meta_gradient,
    meta_objective,
    trust_region_problem,
)
from metarl.envs.toy_mdp import (
    GOALS,
    TOY_ID,
    GoalTasks,
    OpenLoopGaussian,
    grad_value,
    hess_value,
    inner_step_jacobians,
    j2_formulation_ii,
    register_toy,
    value,
)
from metarl.estimators import prepare
from metarl.policies import params_of
from metarl.returns import step_weights
from metarl.sampler import Sampler
from metarl.trpo import flatten, kl_hvp, unflatten
from metarl.value_baseline import ValueBaseline, ValueConfig

H = 2
ALPHA = 0.1
MU = (0.3, -0.2)
SIGMA = 0.7


@pytest.fixture(scope="module")
def family() -> metarl.TaskFamily:
    register_toy()
    yield metarl.make(TOY_ID)
    metarl.unregister(TOY_ID)


def exact_config(**overrides: object) -> MAMLConfig:
    """Raw returns (γ = 1, no baseline, no normalisation): the setting the closed forms describe."""
    base = {"family": TOY_ID, "inner_lr": ALPHA, "gamma": 1.0, "baseline": "none", "normalize_advantages": False,
            "estimator": "dice"}  # the unbiased estimator these closed forms test (the default is lvc)
    return MAMLConfig(**{**base, **overrides})  # type: ignore[arg-type]


def zscore(samples: torch.Tensor, exact: torch.Tensor) -> torch.Tensor:
    """(mean − exact) / standard error over the leading (independent chunk) dim."""
    se = samples.std(0) / math.sqrt(samples.shape[0])
    return (samples.mean(0) - exact) / se


def goal_tasks(goal: float, n: int) -> GoalTasks:
    return GoalTasks(torch.full((n,), goal, dtype=torch.float64))


def inner_jacobians(
    family: metarl.TaskFamily, estimator: str, goal: float, chunks: int, per_chunk: int
) -> torch.Tensor:
    """dθ′/dθ of one inner step, [chunks, 3, 3], each from `per_chunk` fresh trajectories at θ = (μ0, μ1, ℓ)."""
    policy = OpenLoopGaussian(MU, math.log(SIGMA))
    params = params_of(policy)
    batch = Sampler(family).sample(policy, params, goal_tasks(goal, chunks), per_chunk,
                                   torch.Generator().manual_seed(int(goal * 10) + 7))
    data = prepare(batch, gamma=1.0, baseline="none", normalize=False)  # one "task" row per chunk
    return inner_step_jacobians(policy, params, data, ALPHA, estimator)  # [chunks, 3, 3]


# ----------------------------------------------------------------------------------------------- check A1
def exact_jacobian(goal: float) -> torch.Tensor:
    """I + α∇²V/H at θ = (μ0, μ1, log σ), [3, 3]."""
    theta = torch.tensor([*MU, math.log(SIGMA)], dtype=torch.float64)
    return torch.eye(3, dtype=torch.float64) + ALPHA * hess_value(theta, goal) / H


@pytest.mark.parametrize("estimator", ["dice", "dice_cv"])
@pytest.mark.parametrize("goal", GOALS)
def test_a1_dice_inner_jacobian_is_unbiased(family: metarl.TaskFamily, goal: float, estimator: str) -> None:
    """E[dθ′/dθ] = I + α∇²V/H exactly, at any batch size: the Loaded-DiCE Hessian is unbiased for ∇²V, and so is
    dice_cv's (its control variate, the other episodes' cross-time score products, has expectation zero)."""
    z = zscore(inner_jacobians(family, estimator, goal, chunks=200, per_chunk=200), exact_jacobian(goal))
    assert z.abs().max() < 5, z


def test_a1_lvc_drops_the_cross_time_term(family: metarl.TaskFamily) -> None:
    """LVC keeps every Hessian entry but ∂²/∂μ0∂μ1, which it estimates as exactly 0 (the true value is −2)."""
    jac = inner_jacobians(family, "lvc", 1.0, chunks=200, per_chunk=200)
    exact = exact_jacobian(1.0)
    assert torch.all(jac[:, 0, 1] == 0) and torch.all(jac[:, 1, 0] == 0)
    others = zscore(jac, exact).flatten()[[0, 2, 4, 5, 6, 7, 8]]
    assert others.abs().max() < 5, others


def test_a1_naive_surrogate_hessian_is_biased(family: metarl.TaskFamily) -> None:
    """The REINFORCE surrogate's Hessian drops the score products: far from ∇²V (the peers' bug)."""
    exact = exact_jacobian(1.0)
    z = zscore(inner_jacobians(family, "naive", 1.0, chunks=100, per_chunk=100), exact)
    assert z[:2, :2].abs().min() > 20, z  # the whole μμ block is wrong


def test_a1_dice_cv_centred_on_its_own_episode_is_biased(family: metarl.TaskFamily,
                                                         monkeypatch: pytest.MonkeyPatch) -> None:
    """A control variate that sees the episode it multiplies (the mean over *all* episodes instead of the others)
    biases the cross-time entries by 1/E of their value: caught, so the leave-one-out in dice_cv is load-bearing."""
    from metarl import estimators

    def with_own(x: torch.Tensor) -> torch.Tensor:
        return x.mean(-2, keepdim=True).expand_as(x)

    exact = exact_jacobian(1.0)
    unbiased = zscore(inner_jacobians(family, "dice_cv", 1.0, chunks=4000, per_chunk=2), exact)
    monkeypatch.setattr(estimators, "others_mean", with_own)
    biased = zscore(inner_jacobians(family, "dice_cv", 1.0, chunks=4000, per_chunk=2), exact)
    assert unbiased.abs().max() < 5, unbiased
    assert biased[0, 1].abs() > 10 and biased[1, 0].abs() > 10, biased


# ----------------------------------------------------------------------------------------------- A1 at the defaults
def baseline_jacobian_deviation(family: metarl.TaskFamily, goal: float, cross_fit: bool, chunks: int,
                                per_chunk: int, estimator: str = "dice", value: str | None = None) -> torch.Tensor:
    """dθ′/dθ − I − α·c·∇²V/H per chunk, [chunks, 3, 3], with the linear baseline and normalised advantages.

    Each chunk is one task row of `per_chunk` episodes. Normalising episode e by a standard deviation σ_e that does
    not depend on its own actions scales its expected Hessian: E[dθ′/dθ] = I + α·E[1/σ_e]·∇²V/H, with c the chunk's
    mean of 1/σ_e (whose expectation is E[1/σ_e]), so the deviation has mean zero exactly when the baseline and the
    normalisation are fitted without the episode they are applied to.

    `value` replaces the linear baseline: "earlier" is the learned value baseline fitted on an independent batch
    (as training fits it on earlier iterations), "own" a deliberately wrong one that leaks each episode's own
    return."""
    from metarl.returns import cross_fitted_advantages, discounted_returns, normalization_stats

    policy = OpenLoopGaussian(MU, math.log(SIGMA))
    params = params_of(policy)
    tasks = goal_tasks(goal, chunks)
    batch = Sampler(family).sample(policy, params, tasks, per_chunk, torch.Generator().manual_seed(int(goal * 10) + 11))
    values = None
    if value == "earlier":
        earlier = Sampler(family).sample(policy, params, tasks, per_chunk, torch.Generator().manual_seed(99))
        fn = ValueBaseline(ValueConfig(epochs=3), family.obs_dim, 1, 1, seed=0)
        fn.fit([(earlier.obs, tasks, discounted_returns(earlier.rew, earlier.mask, 1.0), earlier.mask, 0)])
        values = fn.predict(batch.obs, tasks, batch.mask, 0)
    elif value == "own":
        values = 0.5 * discounted_returns(batch.rew, batch.mask, 1.0)
    data = prepare(batch, gamma=1.0, baseline="linear" if values is None else "value", normalize=True,
                   cross_fit=cross_fit, values=values)
    if cross_fit:  # σ_e of each episode: [chunks, E, 1]
        _, std = cross_fitted_advantages(batch.obs, batch.rew, batch.mask, data.weight, 1.0, 1.0, values=values)
    else:
        raw = prepare(batch, gamma=1.0, baseline="linear", normalize=False)
        std = normalization_stats(raw.adv, raw.weight)[1] + 1e-8
    scale = (1.0 / std).mean((1, 2))  # c per chunk
    theta = torch.tensor([*MU, math.log(SIGMA)], dtype=torch.float64)
    closed = ALPHA * hess_value(theta, goal) / H
    jac = inner_step_jacobians(policy, params, data, ALPHA, estimator)
    return jac - torch.eye(3, dtype=torch.float64) - scale[:, None, None] * closed


@pytest.mark.parametrize("estimator", ["dice", "dice_cv"])
@pytest.mark.parametrize("goal", [0.0, 2.0])
def test_a1_unbiased_at_the_training_defaults_with_cross_fitting(family: metarl.TaskFamily, goal: float,
                                                                 estimator: str) -> None:
    """With the linear baseline and normalisation on (E = 20), cross-fitted: E[dθ′/dθ] = I + α·E[1/σ]·∇²V/H (for
    dice_cv only if its control variate undoes the other episodes' σ, which depend on this one)."""
    z = zscore(baseline_jacobian_deviation(family, goal, True, chunks=3000, per_chunk=20, estimator=estimator),
               torch.zeros(3, 3, dtype=torch.float64))
    assert z.abs().max() < 5, z


@pytest.mark.parametrize("estimator", ["dice", "dice_cv"])
@pytest.mark.parametrize("goal", [0.0, 2.0])
def test_a1_unbiased_with_the_learned_value_baseline(family: metarl.TaskFamily, goal: float, estimator: str) -> None:
    """`--baseline value` (fitted on earlier batches, predicted before it sees this one), normalisation on and
    cross-fitted, E = 20: E[dθ′/dθ] = I + α·E[1/σ]·∇²V/H, for both unbiased estimators."""
    z = zscore(baseline_jacobian_deviation(family, goal, True, chunks=3000, per_chunk=20, estimator=estimator,
                                           value="earlier"), torch.zeros(3, 3, dtype=torch.float64))
    assert z.abs().max() < 5, z


def test_a1_a_value_baseline_that_sees_its_episode_is_caught(family: metarl.TaskFamily) -> None:
    """The same check has the power to catch a baseline that depends on the actions it weighs."""
    z = zscore(baseline_jacobian_deviation(family, 2.0, True, chunks=3000, per_chunk=20, value="own"),
               torch.zeros(3, 3, dtype=torch.float64))
    assert z.abs().max() > 6, z


def test_a1_same_batch_baseline_and_normalisation_are_biased(family: metarl.TaskFamily) -> None:
    """Fitted on the same episodes they weigh (the old default), they bias the Jacobian by O(1/E) (issue 16)."""
    z = zscore(baseline_jacobian_deviation(family, 2.0, False, chunks=3000, per_chunk=20),
               torch.zeros(3, 3, dtype=torch.float64))
    assert z.abs().max() > 6, z


# ----------------------------------------------------------------------------------------------- check B
def chunked_meta_gradients(
    family: metarl.TaskFamily, cfg: MAMLConfig, reps: int, chunks: int, seed: int
) -> torch.Tensor:
    """Meta-gradients w.r.t. μ (σ fixed), one per chunk of reps; each rep holds all four goals. Scaled by H."""
    policy = OpenLoopGaussian(MU, math.log(SIGMA), learn_std=False)
    params = params_of(policy)
    tasks = GoalTasks(torch.tensor(GOALS, dtype=torch.float64).repeat(reps))
    rollouts = collect(Sampler(family), policy, params, tasks, cfg, torch.Generator().manual_seed(seed))
    size = len(GOALS) * reps // chunks
    grads = [meta_gradient(policy, params, index_rollouts(rollouts, slice(i * size, (i + 1) * size)), cfg)["mean"]
             for i in range(chunks)]
    return torch.stack(grads) * H


def exact_j2_gradient(n: int) -> torch.Tensor:
    mu = torch.tensor(MU, dtype=torch.float64, requires_grad=True)
    objective = torch.stack([j2_formulation_ii(mu, SIGMA, g, ALPHA, n) for g in GOALS]).mean()
    return torch.autograd.grad(objective, mu)[0]


def test_b_emaml_is_unbiased_for_the_sampled_step_objective(family: metarl.TaskFamily) -> None:
    """Formulation II, N = 2 episodes per inner step: naive step + score term = ∇ E_τ V(θ + α ĝ(θ; τ)) exactly."""
    cfg = exact_config(estimator="emaml", meta_batch_size=4, episodes_per_task=2)
    grads = chunked_meta_gradients(family, cfg, reps=50_000, chunks=100, seed=0)
    z = zscore(grads, exact_j2_gradient(n=2))
    assert z.abs().max() < 5, z


def test_b_naive_meta_gradient_is_biased(family: metarl.TaskFamily) -> None:
    """Autograd through the REINFORCE inner step without the score term misses ∇J^II (metagrad.md check B: z≈96)."""
    cfg = exact_config(estimator="naive", meta_batch_size=4, episodes_per_task=2)
    grads = chunked_meta_gradients(family, cfg, reps=50_000, chunks=100, seed=0)
    z = zscore(grads, exact_j2_gradient(n=2))
    assert z.abs().max() > 6, z


# ----------------------------------------------------------------------------------------------- FOMAML
def test_fomaml_equals_gradient_at_the_adapted_point(family: metarl.TaskFamily) -> None:
    """With σ fixed, V is quadratic in μ, so E[∇V(θ + αĝ)] = ∇V(θ + α∇V/H) exactly: FOMAML's expectation."""
    cfg = exact_config(first_order=True, meta_batch_size=4, episodes_per_task=20)
    grads = chunked_meta_gradients(family, cfg, reps=5_000, chunks=50, seed=1)
    theta = torch.tensor([*MU, math.log(SIGMA)], dtype=torch.float64)
    exact = torch.stack([grad_value(theta + ALPHA * grad_value(theta, g) * torch.tensor([1.0, 1.0, 0.0]) / H, g)[:2]
                         for g in GOALS]).mean(0)
    z = zscore(grads, exact)
    assert z.abs().max() < 5, z


# ----------------------------------------------------------------------------------------------- two inner steps
def test_two_step_jacobian_is_the_product(family: metarl.TaskFamily) -> None:
    """k = 2 with fresh episodes per step: E[dθ₂/dθ] = (I + α∇²V/H)² (σ fixed, so ∇²V is constant)."""
    policy = OpenLoopGaussian(MU, math.log(SIGMA), learn_std=False)
    params = params_of(policy)
    cfg = exact_config(inner_steps=2, meta_batch_size=1, episodes_per_task=50)
    chunks, goal = 2000, 1.0
    rollouts = collect(Sampler(family), policy, params, goal_tasks(goal, chunks), cfg, torch.Generator().manual_seed(3))

    def two_steps(mu: torch.Tensor) -> torch.Tensor:
        return adapt(policy, {"mean": mu}, rollouts.pre, cfg.step_sizes)["mean"]  # [chunks, 2]

    jac = jacfwd(two_steps)(params["mean"])
    theta = torch.tensor([*MU, math.log(SIGMA)], dtype=torch.float64)
    one = torch.eye(2, dtype=torch.float64) + ALPHA * hess_value(theta, goal)[:2, :2] / H
    z = zscore(jac, one @ one)
    assert z.abs().max() < 5, z


# ----------------------------------------------------------------------------------------------- D1, D2
def mlp_setup(family_id: str = "PointNav-v0", tasks: int = 3, **overrides: object) -> tuple:
    family = metarl.make(family_id)
    policy = metarl.config.PolicyConfig(hidden=(8, 8), activation="tanh").build(family).double()
    params = params_of(policy)
    cfg = MAMLConfig(family=family_id, meta_batch_size=tasks, episodes_per_task=4, inner_steps=2, **overrides)
    gen = torch.Generator().manual_seed(5)
    rollouts = collect(Sampler(family), policy, params, family.sample_tasks(tasks, gen), cfg, gen)
    return policy, params, rollouts, cfg


def loop_meta_gradient(policy: torch.nn.Module, params: dict, rollouts: object, cfg: MAMLConfig) -> dict:
    """Reference: a Python loop over tasks with torch.autograd.grad(create_graph=True) for the inner steps."""
    from metarl.estimators import inner_objective, outer_objective
    from metarl.policies import forward

    leaves = {k: v.detach().clone().requires_grad_(True) for k, v in params.items()}
    total = torch.zeros((), dtype=torch.float64)
    T = rollouts.post.obs.shape[0]  # type: ignore[attr-defined]
    for t in range(T):
        adapted = leaves
        for data, lr in zip(rollouts.pre, cfg.step_sizes, strict=True):  # type: ignore[attr-defined]
            task_data = type(data)(*(f[t] for f in data))
            loss = inner_objective(policy, adapted, task_data, cfg.estimator, cfg.dice_lambda)
            grads = torch.autograd.grad(loss, list(adapted.values()), create_graph=True)
            adapted = {k: v + lr * g for (k, v), g in zip(adapted.items(), grads, strict=True)}
        post = type(rollouts.post)(*(f[t] for f in rollouts.post))  # type: ignore[attr-defined]
        total = total + outer_objective(forward(policy, adapted, post.obs), post)
    grads = torch.autograd.grad(total / T, list(leaves.values()))
    return dict(zip(leaves, grads, strict=True))


def test_d1_batched_tasks_equal_python_loop() -> None:
    policy, params, rollouts, cfg = mlp_setup()
    ours = meta_gradient(policy, params, rollouts, cfg)
    reference = loop_meta_gradient(policy, params, rollouts, cfg)
    for name in params:
        torch.testing.assert_close(ours[name], reference[name], rtol=1e-10, atol=1e-12)


def test_d2_trpo_hvp_equals_gauss_newton() -> None:
    """At θ_old, ∇²_θ KL(π_old ‖ π_θ′(θ)) = Jᵀ F J with J = dθ′/dθ and F the KL Hessian in θ′ (metagrad.md §2.2).

    θ′(θ) is the map the line search evaluates: for "dice" that is the naive step in value (the magic
    boxes are 1), so J is the naive step's Jacobian (`curvature.metric_estimator`), not DiCE's estimator of E[J]."""
    from metarl.estimators import mean_kl
    from metarl.policies import PolicyOutput, forward

    policy, params, rollouts, cfg = mlp_setup(tasks=2, estimator="dice")
    metric = replace(cfg, estimator="naive")
    theta = flatten(params).requires_grad_(True)
    _, kl = meta_objective(policy, unflatten(theta, params), rollouts, metric)
    v = torch.randn(theta.shape, generator=torch.Generator().manual_seed(0), dtype=torch.float64)
    ours = kl_hvp(kl, theta, damping=0.0)(v)

    reference = torch.zeros_like(theta)
    T = rollouts.post.obs.shape[0]
    for t in range(T):
        pre = tuple(type(d)(*(f[t] for f in d)) for d in rollouts.pre)
        post = type(rollouts.post)(*(f[t] for f in rollouts.post))
        old = PolicyOutput(rollouts.old.mean[t], rollouts.old.log_std[t])

        def adapted_flat(th: torch.Tensor, pre: tuple = pre) -> torch.Tensor:
            return flatten(adapt(policy, unflatten(th, params), pre, cfg.step_sizes, "naive"))

        def kl_of(phi: torch.Tensor, post: object = post, old: PolicyOutput = old) -> torch.Tensor:
            return mean_kl(old, forward(policy, unflatten(phi, params), post.obs), post.mask)  # type: ignore[attr-defined]

        jac = torch.func.jacrev(adapted_flat)(theta.detach())
        fisher = torch.func.hessian(kl_of)(adapted_flat(theta.detach()))
        reference += jac.T @ fisher @ jac @ v / T
    torch.testing.assert_close(ours, reference, rtol=1e-8, atol=1e-12)
    for derivatives in ("autograd", "fused"):  # what TRPO uses with dice, either way it is computed
        product = trust_region_problem(policy, params, rollouts, replace(cfg, derivatives=derivatives)).curvature
        torch.testing.assert_close(product(v), reference, rtol=1e-8, atol=1e-12)


@pytest.mark.parametrize("overrides", [{}, {"estimator": "lvc"}, {"estimator": "naive"}, {"estimator": "emaml"},
                                       {"dice_lambda": 0.5}, {"first_order": True}])
def test_curvature_predicts_the_kl_the_line_search_measures(overrides: dict) -> None:
    """For every estimator, ½ε²·vᵀHv from TRPO's curvature matches KL(θ_old + εv) as the line search evaluates it
    (`meta_objective`'s value) up to O(ε³): the quadratic model and the measured KL agree (issue 16). FOMAML's metric
    is first order by design (J = I, no inner Hessians): its model is off by O(α), here a few per cent."""
    policy, params, rollouts, cfg = mlp_setup(tasks=2, **overrides)
    v = torch.randn(flatten(params).shape, generator=torch.Generator().manual_seed(7), dtype=torch.float64)
    v = v / v.norm()
    quadratic = 0.5 * float(v @ trust_region_problem(policy, params, rollouts, cfg).curvature(v))
    for eps in (1e-3, 1e-4):
        with torch.no_grad():
            _, kl = meta_objective(policy, unflatten(flatten(params) + eps * v, params), rollouts, cfg)
        tolerance = 0.1 if overrides.get("first_order") else 50 * eps
        assert float(kl) / eps**2 == pytest.approx(quadratic, rel=tolerance), (eps, overrides)


def test_conjugate_gradient_solves_and_returns_the_product() -> None:
    """CG on an SPD matrix: n iterations solve H x = b exactly, and the H·x it returns (accumulated, TRPO's step
    length uses it) equals a fresh product, also when stopped early."""
    from metarl.trpo import conjugate_gradient

    g = torch.Generator().manual_seed(3)
    a = torch.randn(6, 6, generator=g, dtype=torch.float64)
    h = a @ a.T + 0.5 * torch.eye(6, dtype=torch.float64)
    b = torch.randn(6, generator=g, dtype=torch.float64)
    x, hx = conjugate_gradient(lambda v: h @ v, b, iters=6)
    torch.testing.assert_close(x, torch.linalg.solve(h, b), rtol=1e-8, atol=1e-10)
    torch.testing.assert_close(hx, h @ x, rtol=1e-10, atol=1e-12)
    x3, hx3 = conjugate_gradient(lambda v: h @ v, b, iters=3)
    assert not torch.allclose(x3, x)  # three iterations do not solve a 6-dim system
    torch.testing.assert_close(hx3, h @ x3, rtol=1e-10, atol=1e-12)


def test_trpo_line_search_that_only_meets_nan_raises_for_the_guard() -> None:
    """A quadratic objective whose surrogate or KL is NaN away from θ_old: if every candidate is non-finite, the
    step raises FloatingPointError (the training loop's guard counts it); if a shorter step is finite, it is taken."""
    from metarl.trpo import TRPOConfig, trpo_step

    start = {"w": torch.tensor([1.0, -2.0], dtype=torch.float64)}

    def objective(p: dict, nan_beyond: float) -> tuple[torch.Tensor, torch.Tensor]:
        d = p["w"] - start["w"]
        surrogate, kl = p["w"].sum() - d.square().sum(), 0.5 * d.square().sum()
        bad = float(d.detach().norm()) > nan_beyond
        return (surrogate, kl * float("nan")) if bad else (surrogate, kl)

    cfg = TRPOConfig(max_kl=0.01, ls_steps=5)
    with pytest.raises(FloatingPointError, match="line-search candidates"):
        trpo_step(lambda p: objective(p, nan_beyond=0.0), start, cfg)
    full = (2 * cfg.max_kl) ** 0.5  # the natural step's length on this KL (Hessian I)
    result = trpo_step(lambda p: objective(p, nan_beyond=0.7 * full), start, cfg)
    assert result.step_fraction == pytest.approx(cfg.ls_backtrack**2)  # 1 and 0.8 were NaN, 0.64 was taken


@pytest.mark.parametrize("kl_rescale", [False, True])
def test_trpo_kl_rescale_corrects_an_overestimated_curvature(kl_rescale: bool) -> None:
    """A quadratic KL ½‖d‖² with a curvature that claims 10·I: the plain step lands at max_kl/10; with kl_rescale
    the measured KL at the accepted step is max_kl (the curvature only sets the direction)."""
    from metarl.trpo import TRPOConfig, trpo_step

    start = {"w": torch.tensor([1.0, -2.0, 0.5], dtype=torch.float64)}

    def objective(p: dict) -> tuple[torch.Tensor, torch.Tensor]:
        d = p["w"] - start["w"]
        return p["w"] @ torch.tensor([1.0, 2.0, -1.0], dtype=torch.float64) - 0.01 * d.square().sum(), \
            0.5 * d.square().sum()

    cfg = TRPOConfig(max_kl=0.01, cg_damping=0.0, kl_rescale=kl_rescale)
    result = trpo_step(objective, start, cfg, curvature=lambda v: 10 * v)
    if kl_rescale:  # exactly at the boundary: KL ≤ max_kl may fail by rounding, and then the next fraction is taken
        assert result.step_fraction in (1.0, cfg.ls_backtrack)
        assert result.kl == pytest.approx(cfg.max_kl * result.step_fraction**2, rel=1e-9)
        assert result.line_search_evals == 1 + (1 if result.step_fraction == 1.0 else 2)  # the probe + candidates
    else:
        assert (result.step_fraction, result.line_search_evals) == (1.0, 1)
        assert result.kl == pytest.approx(cfg.max_kl / 10, rel=1e-9)
    assert result.kl_predicted == pytest.approx(10 * result.kl, rel=1e-9)  # the model's (wrong) prediction


def test_curvature_subsample_uses_every_nth_episode_at_the_full_batch_adaptation() -> None:
    """The subsampled product averages the Hessians and the Fisher over every n-th episode, evaluated at θ′ adapted
    on the *full* batch (`adapt` here, independently of `collect`): not at a θ′ adapted on the subsample, and not the
    full product."""
    from metarl.algos.maml import subsample_episodes
    from metarl.curvature import gauss_newton_kl_product, metric_estimator
    from metarl.policies import stack

    policy, params, rollouts, cfg = mlp_setup(tasks=2)
    v = torch.randn(flatten(params).shape, generator=torch.Generator().manual_seed(2), dtype=torch.float64)
    ours = kl_curvature(policy, params, rollouts, replace(cfg, curvature_subsample=2))(v)
    half = subsample_episodes(rollouts, 2)
    for data in (*half.pre, half.post):  # the averages are over the E/2 episodes kept
        torch.testing.assert_close(data.weight, step_weights(data.mask, cfg.average))

    def product_at(pre: tuple) -> torch.Tensor:
        path = [stack(params, 2)]  # θ_0..θ_k, each step adapted on `pre`
        for j in range(len(pre)):
            with torch.no_grad():
                path.append({k: t.detach() for k, t in adapt(policy, params, pre[: j + 1],
                                                             cfg.step_sizes[: j + 1]).items()})
        return gauss_newton_kl_product(policy, path, half.pre, cfg.step_sizes, half.post,
                                       metric_estimator(cfg.estimator), cfg.dice_lambda, cfg.first_order)(v)

    torch.testing.assert_close(ours, product_at(rollouts.pre), rtol=1e-10, atol=1e-14)
    assert not torch.allclose(ours, product_at(half.pre))
    assert not torch.allclose(ours, kl_curvature(policy, params, rollouts, cfg)(v))


@pytest.fixture
def wide_goals() -> Iterator[str]:
    """PointNav whose episodes often end early (goal tolerance 0.3), so that the two averages differ."""
    wide = metarl.registry.spec("PointNav-v0").with_kwargs(goal_tolerance=0.3)
    spec = metarl.registry.register(replace(wide, id="test/WideGoalNav-v0"))
    yield spec.id
    metarl.registry.unregister(spec.id)


@pytest.mark.parametrize("average", ["steps", "episodes"])
def test_d2_gauss_newton_for_every_estimator_and_order(wide_goals: str, average: str) -> None:
    """JᵀFJ equals double backward through the meta-objective at θ_old for each inner estimator and FOMAML, with
    either average (the Fisher must weigh states as the KL does); episodes here often end early. J is that of the map
    the line search evaluates (`metric_estimator`: the naive step for dice and emaml)."""
    from metarl.curvature import metric_estimator

    # same-batch baseline: with 4 episodes of 1 to 100 steps, cross-fitted normalisation can reach |A| ≈ 100 and the
    # two-step adaptation overflows; the products compared here do not depend on how advantages were made
    policy, params, rollouts, cfg = mlp_setup(wide_goals, tasks=2, average=average, cross_fit=False)
    assert not bool(rollouts.post.mask.all())  # some episodes ended early, or the averages would coincide
    v = torch.randn(flatten(params).shape, generator=torch.Generator().manual_seed(1), dtype=torch.float64)
    for overrides in ({"estimator": "lvc"}, {"estimator": "naive"}, {"estimator": "emaml"}, {"first_order": True},
                      {"dice_lambda": 0.5}):
        if average == "episodes" and overrides.get("estimator") == "emaml":
            with pytest.raises(ValueError, match="emaml needs average steps"):
                replace(cfg, **overrides)
            continue
        c = replace(cfg, **overrides)
        theta = flatten(params).requires_grad_(True)
        _, kl = meta_objective(policy, unflatten(theta, params), rollouts, replace(c, estimator=metric_estimator(
            c.estimator)))
        torch.testing.assert_close(kl_curvature(policy, params, rollouts, c)(v), kl_hvp(kl, theta, 0.0)(v),
                                   rtol=1e-8, atol=1e-12, msg=str(overrides))


# ----------------------------------------------------------------------------------------------- A2 (slow)
@pytest.mark.slow
def test_a2_dice_end_to_end_converges_to_formulation_one(family: metarl.TaskFamily) -> None:
    """Formulation I end to end (learned σ): the O(α²/N) same-batch bias is removed by Richardson extrapolation
    2G(2N) − G(N), which must match ∇J^I = ∇ mean_g V_g(θ + α∇V_g(θ)/H)."""
    policy = OpenLoopGaussian(MU, math.log(SIGMA))
    params = params_of(policy)
    sampler = Sampler(family)

    def mean_grad(n: int, reps: int, chunks: int, seed: int) -> torch.Tensor:
        cfg = exact_config(meta_batch_size=4, episodes_per_task=n)
        tasks = GoalTasks(torch.tensor(GOALS, dtype=torch.float64).repeat(reps))
        rollouts = collect(sampler, policy, params, tasks, cfg, torch.Generator().manual_seed(seed))
        size = len(GOALS) * reps // chunks
        chunk = [index_rollouts(rollouts, slice(i * size, (i + 1) * size)) for i in range(chunks)]
        return torch.stack([flatten(meta_gradient(policy, params, c, cfg)) for c in chunk]) * H

    small, large = mean_grad(100, 8000, 80, 11), mean_grad(200, 4000, 80, 12)
    extrapolated = 2 * large - small
    theta = torch.tensor([*MU, math.log(SIGMA)], dtype=torch.float64)

    def j1(th: torch.Tensor) -> torch.Tensor:
        return torch.stack([value(th + ALPHA * grad_value(th, g) / H, g) for g in GOALS]).mean()

    exact = torch.func.grad(j1)(theta)
    z = zscore(extrapolated, exact)
    assert z.abs().max() < 5, z
