"""ES-MAML: exact checks C1/C2 of notes/metagrad.md §3.2 on the analytic MDP, batching, operators, learning.

C1 and C2 run metarl's own pipeline (perturb → adapt → evaluate through the sampler → antithetic ES terms) with
un-normalised fitness, and compare the mean of the per-pair terms with ∇J̃_σ computed exactly by Gauss–Hermite
quadrature (metarl.envs.toy_mdp). The pairs are independent, so the z-score uses their standard error directly.
"""

from __future__ import annotations

import math
from pathlib import Path

import pytest
import torch

import metarl
from metarl.algos import es_maml
from metarl.algos.es_maml import Adapted, ESMAMLConfig, Evaluator, draw, es_step, make_adapt, shape_fitness
from metarl.config import PolicyConfig, build_policy
from metarl.envs.toy_mdp import (
    GOALS,
    TOY_ID,
    OpenLoopGaussian,
    es_adapted_value,
    grad_value,
    pg_adapted_value,
    register_toy,
    smoothed,
    value,
)
from metarl.policies import params_of
from metarl.sampler import Sampler
from metarl.trpo import flatten

H = 2
MU = (0.3, -0.2)


@pytest.fixture(scope="module")
def family() -> metarl.TaskFamily:
    register_toy()
    yield metarl.make(TOY_ID)
    metarl.unregister(TOY_ID)


def zscore(samples: torch.Tensor, exact: torch.Tensor) -> torch.Tensor:
    """(mean − exact) / standard error over the leading dim of independent samples."""
    return (samples.mean(0) - exact) / (samples.std(0) / math.sqrt(samples.shape[0]))


def toy_config(**overrides: object) -> ESMAMLConfig:
    """Un-normalised fitness, one rollout per parameter, no exact-eval units: the setting the closed forms describe."""
    base = {"family": TOY_ID, "fitness": "none", "adaptation_fitness": "none", "exact_evals": 0,
            "episodes_per_query": 1, "policy": PolicyConfig(hidden=(), deterministic=False)}
    return ESMAMLConfig(**{**base, **overrides})  # type: ignore[arg-type]


def pair_terms(family: metarl.TaskFamily, policy: torch.nn.Module, cfg: ESMAMLConfig, adapt: es_maml.AdaptFn,
               seed: int, chunks: int = 1) -> torch.Tensor:
    """Per-pair ES terms [chunks · n, d] from metarl's pipeline (each chunk one meta-iteration's batched stages)."""
    params = params_of(policy)
    theta = flatten(params)
    generator = torch.Generator().manual_seed(seed)
    evaluate = Evaluator(Sampler(family), policy, params, generator, deterministic=False)
    terms = [es_step(evaluate, adapt, theta, draw(cfg, family, theta.numel(), theta.dtype, generator), cfg).pair_grads
             for _ in range(chunks)]
    return torch.cat(terms)


def exact_gradient(fn: object, theta: torch.Tensor, sigma: float, n: int = 24) -> torch.Tensor:
    theta = theta.clone().requires_grad_(True)
    return torch.autograd.grad(smoothed(fn, theta, sigma, n), theta)[0]


# ----------------------------------------------------------------------------------------------- C1
ALPHA_PG = 0.1


def exact_pg_adapt(evaluate: es_maml.Evaluate, points: torch.Tensor, tasks: object, noise: torch.Tensor) -> Adapted:
    """U(θ) = θ + α∇V_g(θ)/H with the exact gradient (per unit, its task's goal): a deterministic operator."""
    grads = torch.func.vmap(torch.func.grad(value))(points, tasks.goal)  # type: ignore[attr-defined]
    return Adapted(points + ALPHA_PG * grads / H, torch.zeros(points.shape[0], dtype=points.dtype))


def check_c1(family: metarl.TaskFamily, sigma: float, pairs: int, chunks: int) -> tuple[torch.Tensor, torch.Tensor]:
    """z-scores of ES-MAML's estimate (exact-PG U, one noisy evaluation rollout) against ∇J̃_σ and against the
    unsmoothed ∇J, θ = (μ0, μ1, ℓ) with learned σ."""
    policy = OpenLoopGaussian(MU, math.log(0.7))
    cfg = toy_config(perturbations=pairs, sigma=sigma, num_queries=1)
    terms = pair_terms(family, policy, cfg, exact_pg_adapt, seed=0, chunks=chunks)
    theta = flatten(params_of(policy))
    smooth = exact_gradient(lambda p: pg_adapted_value(p, ALPHA_PG), theta, sigma)
    leaf = theta.clone().requires_grad_(True)
    unsmoothed = torch.autograd.grad(pg_adapted_value(leaf.unsqueeze(0), ALPHA_PG).sum(), leaf)[0]
    return zscore(terms, smooth), zscore(terms, unsmoothed)


def test_c1_es_estimates_the_smoothed_objective(family: metarl.TaskFamily) -> None:
    """At σ = 0.5 the smoothing shifts the ℓ component from −1.448 to −0.917: the estimate matches ∇J̃_σ, not ∇J."""
    z_smooth, z_plain = check_c1(family, sigma=0.5, pairs=25_000, chunks=1)
    assert z_smooth.abs().max() < 5, z_smooth
    assert z_plain[2].abs() > 8, z_plain


@pytest.mark.slow
def test_c1_slow_notes_setting(family: metarl.TaskFamily) -> None:
    """notes/metagrad.md C1's σ = 0.25 (smoothing bias 0.115 in ℓ) with 400k pairs."""
    z_smooth, z_plain = check_c1(family, sigma=0.25, pairs=50_000, chunks=8)
    assert z_smooth.abs().max() < 5, z_smooth
    assert z_plain[2].abs() > 5, z_plain


# ----------------------------------------------------------------------------------------------- C2
def check_c2(family: metarl.TaskFamily, policy_std: float, alpha: float, sigma: float, pairs: int,
             chunks: int) -> tuple[torch.Tensor, torch.Tensor]:
    """z-scores of the full pipeline with metarl's ES adaptation operator (5 mirrored query pairs, σ_a = 0.3,
    un-normalised, one rollout per query and one evaluation rollout), σ fixed, against ∇F̃_σ and against the
    gradient without adaptation, ∇ mean_g V_g."""
    policy = OpenLoopGaussian(MU, math.log(policy_std), learn_std=False)
    cfg = toy_config(perturbations=pairs, sigma=sigma, num_queries=10, antithetic_queries=True, adaptation_lr=alpha,
                     adaptation_sigma=0.3)
    terms = pair_terms(family, policy, cfg, make_adapt(cfg), seed=1, chunks=chunks)
    mu = torch.tensor(MU, dtype=torch.float64)

    def objective(p: torch.Tensor) -> torch.Tensor:
        return torch.stack([es_adapted_value(p, policy_std, g, alpha, 0.3, pairs=5) for g in GOALS]).mean(0)

    exact = exact_gradient(objective, mu, sigma, n=6)
    theta = torch.tensor([*MU, math.log(policy_std)], dtype=torch.float64)
    no_adaptation = torch.stack([grad_value(theta, g)[:2] for g in GOALS]).mean(0)
    return zscore(terms, exact), zscore(terms, no_adaptation)


def test_c2_es_adaptation_pipeline_is_unbiased(family: metarl.TaskFamily) -> None:
    """Perturb → K queries → adapt → evaluate, all through the sampler: converges to ∇F̃_σ (= [0.101, 0.456] here),
    clearly not to the gradient that ignores adaptation ([0.5, 0.8])."""
    z_exact, z_plain = check_c2(family, policy_std=0.3, alpha=0.1, sigma=1.0, pairs=10_000, chunks=1)
    assert z_exact.abs().max() < 5, z_exact
    assert z_plain.abs().max() > 8, z_plain


@pytest.mark.slow
def test_c2_slow_notes_setting(family: metarl.TaskFamily) -> None:
    """notes/metagrad.md C2 exactly (σ_policy = 0.7, α = 0.05, σ_a = 0.3, K = 5 pairs; exact ∇F̃ = [0.262, 0.598])."""
    z_exact, z_plain = check_c2(family, policy_std=0.7, alpha=0.05, sigma=0.25, pairs=50_000, chunks=8)
    assert z_exact.abs().max() < 5, z_exact
    assert z_plain.abs().max() > 5, z_plain


# ----------------------------------------------------------------------------------------------- batching, operators
class CountingEvaluate:
    """Wraps an Evaluator and records (rows, tasks) of every call."""

    def __init__(self, evaluate: Evaluator) -> None:
        self.evaluate, self.calls = evaluate, []

    def __call__(self, points: torch.Tensor, tasks: object, episodes: int) -> torch.Tensor:
        self.calls.append((points.shape[0], tasks))
        return self.evaluate(points, tasks, episodes)


def point_nav(cfg: ESMAMLConfig, seed: int = 0) -> tuple:
    family = metarl.make("PointNav-v0")
    policy = build_policy(cfg.policy, family, seed)
    params = params_of(policy)
    generator = torch.Generator().manual_seed(seed)
    return family, policy, params, generator, Evaluator(Sampler(family), policy, params, generator, True)


@pytest.mark.parametrize(("adaptation", "calls"), [("es", 2), ("hill-climb", 5)])
def test_a_meta_iteration_is_a_few_batched_calls(adaptation: str, calls: int) -> None:
    """ES adaptation: one call for every pivot and query, one for the adapted points; hill climbing: K + 1."""
    cfg = ESMAMLConfig(perturbations=3, tasks_per_perturbation=2, num_queries=4, exact_evals=2, adaptation=adaptation)
    family, _, params, generator, evaluate = point_nav(cfg)
    counting = CountingEvaluate(evaluate)
    theta = flatten(params)
    step = es_step(counting, make_adapt(cfg), theta, draw(cfg, family, theta.numel(), theta.dtype, generator), cfg)
    units = 2 * 3 * 2 + 2
    assert len(counting.calls) == calls
    first = units * (1 + 4) if adaptation == "es" else units * 2  # hill climbing: pivot + 1 proposal in round 1
    assert counting.calls[0][0] == first and counting.calls[-1][0] == units
    tasks = counting.calls[-1][1].goal
    torch.testing.assert_close(tasks[:6], tasks[6:12])  # each antithetic pair shares its tasks
    assert step.pair_grads.shape == (3, theta.numel()) and step.post.shape == (units,)


def test_hill_climbing_never_gets_worse() -> None:
    """Deterministic policy and start: the incumbent's re-evaluated return is ≥ the pivot's, and often better."""
    cfg = ESMAMLConfig(adaptation="hill-climb", num_queries=5, hill_climb_proposals=3, adaptation_sigma=0.3)
    family, policy, params, generator, _ = point_nav(cfg)
    tasks = family.sample_tasks(16, generator)
    returns = es_maml.adaptation_returns(cfg, Sampler(family), policy, params, tasks, (0.0, 0.0), 2, generator)
    assert returns.shape == (3, 16, 2)
    assert bool((returns[1:] >= returns[:-1]).all()) and bool((returns[-1] > returns[0]).any())


def test_es_adaptation_returns_shape_and_determinism() -> None:
    cfg = ESMAMLConfig(num_queries=6)
    family, policy, params, _, _ = point_nav(cfg)
    tasks = family.sample_tasks(5, torch.Generator().manual_seed(1))

    def run() -> torch.Tensor:
        generator = torch.Generator().manual_seed(2)
        return es_maml.adaptation_returns(cfg, Sampler(family), policy, params, tasks,
                                          es_maml.eval_step_sizes(cfg, 2), 3, generator)

    first = run()
    assert first.shape == (3, 5, 3)
    torch.testing.assert_close(first, run(), rtol=0, atol=0)


def test_fitness_shaping() -> None:
    values = torch.tensor([[3.0, 1.0, 2.0, 2.0], [5.0, 5.0, 5.0, 5.0]])
    z = shape_fitness(values, "zscore")
    torch.testing.assert_close(z[0].mean(), torch.tensor(0.0))
    torch.testing.assert_close(z[0].std(correction=0), torch.tensor(1.0))
    assert torch.all(z[1] == 0)  # all tied: no signal, no NaN
    torch.testing.assert_close(shape_fitness(values, "rank"), torch.tensor([[0.5, -0.5, 0.0, 0.0], [0.0] * 4]))
    assert torch.equal(shape_fitness(values, "none"), values)


@pytest.mark.parametrize(("overrides", "message"), [
    ({"antithetic_queries": True, "num_queries": 5}, "even num_queries"),
    ({"sigma": 0.0}, "sigma"),
    ({"fitness": "centered"}, "fitness"),
])
def test_bad_config_values_raise(overrides: dict, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        ESMAMLConfig(**overrides)


def test_resume_with_adam_continues_exactly(tmp_path: Path) -> None:
    from test_train_cli import assert_resume_continues_exactly

    assert_resume_continues_exactly(tmp_path, "es-maml", "--meta-optimizer", "adam", "--meta-lr", "0.05")


# ----------------------------------------------------------------------------------------------- learning
@pytest.mark.slow
@pytest.mark.parametrize(("adaptation", "iterations", "margin"), [("es", 300, 15), ("hill-climb", 150, 6)])
def test_es_maml_learns_point_nav(adaptation: str, iterations: int, margin: float) -> None:
    """The `fast` preset clearly improves PointNav's post-adaptation return within a minute: late vs early training
    iterations, and the trained vs the initial policy under the same test-time adaptation. Hill climbing (K
    sequential rounds) adapts well from the start (early ≈ −25 against ES's ≈ −50), hence its smaller margin."""
    from metarl.config import apply_overrides

    torch.set_num_threads(1)
    overrides = {**es_maml.PRESETS["fast"], "adaptation": adaptation, "run.iterations": iterations}
    cfg = apply_overrides(ESMAMLConfig(), overrides)
    records: list[dict[str, float]] = []
    state = es_maml.train(cfg, on_iteration=lambda _, metrics: records.append(metrics))
    family = metarl.make(cfg.family)
    policy = build_policy(cfg.policy, family, cfg.run.seed)
    tasks = family.sample_tasks(100, torch.Generator().manual_seed(123))

    def adapted(params: dict) -> float:
        returns = es_maml.adaptation_returns(cfg, Sampler(family), policy, params, tasks, (cfg.adaptation_lr,), 1,
                                             torch.Generator().manual_seed(7))
        return float(returns[-1].mean())

    early = sum(r["meta/return_post_1"] for r in records[:10]) / 10
    late = sum(r["meta/return_post_1"] for r in records[-10:]) / 10
    before, after = adapted(params_of(policy)), adapted(state.params)
    print(f"{adaptation}: post-adaptation return early {early:.1f} -> late {late:.1f}; "
          f"test tasks from the initial policy {before:.1f}, from the trained one {after:.1f}")
    assert late > early + margin and after > before + 10
