"""Reptile: exact inner-loop expectations on the analytic MDP (notes/metagrad.md §3.3), the batched per-task Adam,
the outer update and its schedule, test-time adaptation, resume, and (slow) learning on PointNav.

With σ fixed, V is quadratic in μ, so the expected Reptile direction has a closed form at any batch size. metarl's
surrogates average over E·H steps, so one SGD step estimates α∇V/H (H = 2):
    k = 1:  E[φ₁ − θ] = α∇V/H                          (joint training)
    k = 2:  E[φ₂ − θ] = 2α∇V/H + α²∇²V∇V/H²            (the α² term is Reptile's meta-learning signal)
averaged over the four goals, as Reptile's mean_T.
"""

from __future__ import annotations

import math
from pathlib import Path

import pytest
import torch

import metarl
from metarl.algos import reptile
from metarl.algos.reptile import ReptileConfig, adam_init, adam_step, inner_loop, outer_lr_at, reptile_update
from metarl.config import PolicyConfig, apply_overrides, build_policy
from metarl.envs.toy_mdp import GOALS, TOY_ID, GoalTasks, OpenLoopGaussian, grad_value, hess_value, register_toy
from metarl.policies import params_of
from metarl.sampler import Sampler

H = 2
MU = (0.3, -0.2)
SIGMA = 0.7
ALPHA = 0.5  # large enough that the α² term (−0.19, −0.16) stands far out of the noise


@pytest.fixture(scope="module")
def family() -> metarl.TaskFamily:
    register_toy()
    yield metarl.make(TOY_ID)
    metarl.unregister(TOY_ID)


def zscore(samples: torch.Tensor, exact: torch.Tensor) -> torch.Tensor:
    return (samples.mean(0) - exact) / (samples.std(0) / math.sqrt(samples.shape[0]))


def reptile_directions(family: metarl.TaskFamily, k: int, reps: int, episodes: int, seed: int) -> torch.Tensor:
    """mean_T(φ_k − θ) for `reps` independent meta-batches of the four goals, from metarl's batched inner loop with
    raw returns (γ = 1, no baseline, no normalisation: the setting of the closed form). Returns [reps, 2]."""
    policy = OpenLoopGaussian(MU, math.log(SIGMA), learn_std=False)
    params = params_of(policy)
    cfg = ReptileConfig(family=TOY_ID, gamma=1.0, baseline="none", normalize_advantages=False)
    tasks = GoalTasks(torch.tensor(GOALS, dtype=torch.float64).repeat(reps))
    with torch.no_grad():
        inner = inner_loop(cfg, Sampler(family), policy, params, tasks, (ALPHA,) * k, episodes,
                           torch.Generator().manual_seed(seed))
    step = reptile_update(params, inner.adapted, outer_lr=1.0)["mean"] - params["mean"]  # one meta-batch: check
    per_task = inner.adapted["mean"] - params["mean"]
    torch.testing.assert_close(step, per_task.mean(0))
    return per_task.view(reps, len(GOALS), 2).mean(1)


def exact_direction(k: int) -> torch.Tensor:
    theta = torch.tensor([*MU, math.log(SIGMA)], dtype=torch.float64)
    out = []
    for g in GOALS:
        grad, hess = grad_value(theta, g)[:2], hess_value(theta, g)[:2, :2]
        out.append(ALPHA * grad / H if k == 1 else 2 * ALPHA * grad / H + ALPHA**2 * hess @ grad / H**2)
    return torch.stack(out).mean(0)


def test_one_step_is_joint_training(family: metarl.TaskFamily) -> None:
    """k = 1: E[φ₁ − θ] = α∇V/H."""
    z = zscore(reptile_directions(family, k=1, reps=2000, episodes=10, seed=0), exact_direction(1))
    assert z.abs().max() < 5, z


def test_two_steps_add_the_curvature_term(family: metarl.TaskFamily) -> None:
    """k = 2: E[φ₂ − θ] = 2α∇V/H + α²∇²V∇V/H², and clearly not the first-order part 2α∇V/H alone."""
    directions = reptile_directions(family, k=2, reps=2000, episodes=10, seed=1)
    z = zscore(directions, exact_direction(2))
    assert z.abs().max() < 5, z
    z_first_order = zscore(directions, 2 * exact_direction(1))
    assert z_first_order.abs().min() > 10, z_first_order


def test_batched_adam_equals_torch_adam_per_task() -> None:
    """One Adam per task on stacked [T, ...] params == torch.optim.Adam(maximize=True) run on each task alone."""
    generator = torch.Generator().manual_seed(0)
    params = {"w": torch.randn(3, 4, 2, generator=generator), "b": torch.randn(3, 2, generator=generator)}
    grads = [{k: torch.randn(v.shape, generator=generator) for k, v in params.items()} for _ in range(4)]
    betas, lr = (0.5, 0.9), 0.01
    ours, state = params, adam_init(params)
    for g in grads:
        ours, state = adam_step(ours, g, state, lr, betas, 1e-8)
    for t in range(3):
        leaves = {k: v[t].clone().requires_grad_(True) for k, v in params.items()}
        optimizer = torch.optim.Adam(leaves.values(), lr=lr, betas=betas, eps=1e-8, maximize=True)
        for g in grads:
            for k, leaf in leaves.items():
                leaf.grad = g[k][t].clone()
            optimizer.step()
        for k, leaf in leaves.items():
            torch.testing.assert_close(ours[k][t], leaf.detach())


def test_outer_update_and_linear_annealing() -> None:
    params = {"w": torch.zeros(2)}
    adapted = {"w": torch.tensor([[1.0, 2.0], [3.0, 4.0]])}
    torch.testing.assert_close(reptile_update(params, adapted, 0.5)["w"], torch.tensor([1.0, 1.5]))
    cfg = apply_overrides(ReptileConfig(), {"outer_lr": 1.0, "outer_lr_final": 0.2, "run.iterations": 10})
    assert [outer_lr_at(cfg, i) for i in (0, 5, 10)] == pytest.approx([1.0, 0.6, 0.2])


def test_adaptation_returns_replays_the_inner_loop() -> None:
    cfg = ReptileConfig(family="PointNav-v0", inner_optimizer="adam", inner_lr=0.01,
                        policy=PolicyConfig(hidden=(8,)))
    family = metarl.make(cfg.family)
    policy = build_policy(cfg.policy, family, 0)
    tasks = family.sample_tasks(4, torch.Generator().manual_seed(0))

    def run() -> torch.Tensor:
        return reptile.adaptation_returns(cfg, Sampler(family), policy, params_of(policy), tasks,
                                          reptile.eval_step_sizes(cfg, 3), 2, torch.Generator().manual_seed(1))

    first = run()
    assert first.shape == (4, 4, 2)
    torch.testing.assert_close(first, run(), rtol=0, atol=0)
    no_steps = reptile.adaptation_returns(cfg, Sampler(family), policy, params_of(policy), tasks, (), 2,
                                          torch.Generator().manual_seed(1))
    assert no_steps.shape == (1, 4, 2)


@pytest.mark.parametrize(("overrides", "message"), [
    ({"policy": PolicyConfig(deterministic=True)}, "stochastic policy"),
    ({"inner_steps": 0}, "inner_steps"),
    ({"adam_betas": (0.9, 1.0)}, "adam_betas"),
])
def test_bad_config_values_raise(overrides: dict, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        ReptileConfig(**overrides)


def test_resume_continues_exactly(tmp_path: Path) -> None:
    """With a constant ε (the annealing schedule depends on run.iterations, which extending a run changes)."""
    from test_train_cli import assert_resume_continues_exactly

    assert_resume_continues_exactly(tmp_path, "reptile", "--inner-optimizer", "adam", "--inner-lr", "0.01",
                                    "--outer-lr", "0.5", "--outer-lr-final", "0.5")


# ----------------------------------------------------------------------------------------------- learning
@pytest.mark.slow
def test_reptile_learns_point_nav() -> None:
    """The `fast` preset clearly improves PointNav's post-adaptation return in under a minute: late vs early
    training iterations, and the trained vs the initial policy under the same test-time adaptation."""
    torch.set_num_threads(1)
    cfg = apply_overrides(ReptileConfig(), reptile.PRESETS["fast"])
    records: list[dict[str, float]] = []
    state = reptile.train(cfg, on_iteration=lambda _, metrics: records.append(metrics))
    family = metarl.make(cfg.family)
    policy = build_policy(cfg.policy, family, cfg.run.seed)
    tasks = family.sample_tasks(40, torch.Generator().manual_seed(123))

    def adapted(params: dict) -> float:
        returns = reptile.adaptation_returns(cfg, Sampler(family), policy, params, tasks,
                                             reptile.eval_step_sizes(cfg, cfg.inner_steps), 10,
                                             torch.Generator().manual_seed(7))
        return float(returns[-1].mean())

    key = f"meta/return_post_{cfg.inner_steps}"
    early = sum(r[key] for r in records[:5]) / 5
    late = sum(r[key] for r in records[-5:]) / 5
    before, after = adapted(params_of(policy)), adapted(state.params)
    print(f"reptile: post-adaptation return early {early:.1f} -> late {late:.1f}; "
          f"test tasks from the initial policy {before:.1f}, from the trained one {after:.1f}")
    assert late > early + 10 and after > before + 10
