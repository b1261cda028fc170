"""The hand-derived products (metarl/mlp_products.py, surrogate_products.py, meta_products.py) against autograd.

Everything in float64 on the built-in Gaussian MLPs (ReLU and tanh), on a family whose episodes often end early, so
that masks and step weights matter. Autograd is the reference: `estimators.inner_objective` differentiated twice,
`curvature.fisher_product`, and MAML's `meta_objective` / `kl_curvature` with `derivatives="autograd"`.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import replace

import pytest
import torch

import metarl
from metarl import meta_products
from metarl.algos.maml import MAMLConfig, collect, trust_region_problem
from metarl.curvature import fisher_product as autograd_fisher
from metarl.estimators import inner_objective
from metarl.policies import params_of, stack
from metarl.sampler import Sampler
from metarl.surrogate_products import (
    fisher_product,
    gradient,
    hessian_product,
    inner_coefficients,
    linearize,
    score_coupling,
)
from metarl.trpo import flatten, unflatten


@pytest.fixture(scope="module")
def wide_goals() -> Iterator[str]:
    """PointNav whose episodes often end early (goal tolerance 0.3)."""
    wide = metarl.registry.spec("PointNav-v0").with_kwargs(goal_tolerance=0.3)
    spec = metarl.registry.register(replace(wide, id="test/FusedWideNav-v0"))
    yield spec.id
    metarl.registry.unregister(spec.id)


def setup(family_id: str, activation: str, inner_steps: int = 2, tasks: int = 3, **overrides: object) -> tuple:
    family = metarl.make(family_id)
    policy = metarl.config.PolicyConfig(hidden=(7, 5), activation=activation).build(family).double()
    params = params_of(policy)
    cfg = MAMLConfig(family=family_id, meta_batch_size=tasks, episodes_per_task=4, inner_steps=inner_steps,
                     **overrides)  # type: ignore[arg-type]
    gen = torch.Generator().manual_seed(3)
    rollouts = collect(Sampler(family), policy, params, family.sample_tasks(tasks, gen), cfg, gen)
    assert not bool(rollouts.post.mask.all())  # some episodes ended early
    return policy, params, rollouts, cfg


def perturbed(params: dict, scale: float = 0.05, seed: int = 1) -> dict:
    g = torch.Generator().manual_seed(seed)
    return {k: v + scale * torch.randn(v.shape, generator=g, dtype=v.dtype) for k, v in params.items()}


@pytest.mark.parametrize("activation", ["relu", "tanh"])
@pytest.mark.parametrize(("estimator", "dice_lambda"), [("naive", 1.0), ("lvc", 1.0), ("dice", 1.0), ("dice", 0.6),
                                                        ("dice", 0.0), ("dice_cv", 1.0), ("dice_cv", 0.6)])
def test_inner_gradient_and_hessian_product_match_autograd(wide_goals: str, activation: str, estimator: str,
                                                           dice_lambda: float) -> None:
    """At θ ≠ θ_old (LVC's ratios differ from 1): ∇L and ∇²L·v per task equal autograd's double backward."""
    policy, params, rollouts, _ = setup(wide_goals, activation, inner_steps=1)
    data = rollouts.pre[0]
    T = data.mask.shape[0]
    at = stack(perturbed(params), T)
    lay = meta_products.supports(policy, params)
    assert lay is not None
    g = torch.Generator().manual_seed(2)
    v = {k: torch.randn(t.shape, generator=g, dtype=t.dtype) for k, t in at.items()}

    leaves = {k: t.detach().clone().requires_grad_(True) for k, t in at.items()}
    objective = inner_objective(policy, leaves, data, estimator, dice_lambda).sum()
    grads = torch.autograd.grad(objective, list(leaves.values()), create_graph=True)
    hv = torch.autograd.grad(grads, list(leaves.values()), grad_outputs=[v[k] for k in leaves])

    point = linearize(lay, at, data.obs, data.act, data.mask)
    coef = inner_coefficients(point, data, estimator)
    ours, back = gradient(lay, point, coef, keep=True)
    assert back is not None
    ours_hv = hessian_product(lay, point, back, coef,
                              lambda d: score_coupling(estimator, coef, d, dice_lambda, data.scale), v)
    for name, ref_g, ref_hv in zip(leaves, grads, hv, strict=True):
        torch.testing.assert_close(ours[name], ref_g, rtol=1e-10, atol=1e-13, msg=name)
        torch.testing.assert_close(ours_hv[name], ref_hv, rtol=1e-10, atol=1e-13, msg=name)


@pytest.mark.parametrize("activation", ["relu", "tanh"])
def test_fisher_product_matches_autograd(wide_goals: str, activation: str) -> None:
    policy, params, rollouts, _ = setup(wide_goals, activation, inner_steps=1)
    post = rollouts.post
    at = stack(perturbed(params), post.mask.shape[0])
    lay = meta_products.supports(policy, params)
    assert lay is not None
    g = torch.Generator().manual_seed(4)
    u = {k: torch.randn(t.shape, generator=g, dtype=t.dtype) for k, t in at.items()}
    ours = fisher_product(lay, linearize(lay, at, post.obs, post.act, post.mask), post.weight, u)
    reference = autograd_fisher(policy, at, post)(u)
    for name in at:
        torch.testing.assert_close(ours[name], reference[name], rtol=1e-10, atol=1e-13, msg=name)


CASES = [{}, {"estimator": "dice"}, {"estimator": "dice_cv"}, {"estimator": "naive"}, {"estimator": "emaml"},
         {"first_order": True}, {"estimator": "dice", "dice_lambda": 0.5}, {"estimator": "dice_cv", "dice_lambda": 0.5},
         {"curvature_subsample": 2}, {"average": "episodes"}]


@pytest.mark.parametrize("activation", ["relu", "tanh"])
@pytest.mark.parametrize("inner_steps", [1, 2])
@pytest.mark.parametrize("overrides", CASES, ids=lambda o: ",".join(f"{k}={v}" for k, v in o.items()) or "default")
def test_fused_meta_objective_matches_autograd(wide_goals: str, activation: str, inner_steps: int,
                                               overrides: dict) -> None:
    """TRPO's whole problem: the meta-gradient, the curvature products and line-search values at another θ."""
    policy, params, rollouts, cfg = setup(wide_goals, activation, inner_steps, **overrides)
    fused = trust_region_problem(policy, params, rollouts, cfg)
    reference = trust_region_problem(policy, params, rollouts, replace(cfg, derivatives="autograd"))
    assert isinstance(fused, meta_products.FusedMeta)
    assert not isinstance(reference, meta_products.FusedMeta)
    value, grad = fused.value_and_gradient()
    ref_value, ref_grad = reference.value_and_gradient()
    torch.testing.assert_close(value, ref_value, rtol=1e-9, atol=1e-12)
    torch.testing.assert_close(grad, ref_grad, rtol=1e-9, atol=1e-12)
    v = torch.randn(grad.shape, generator=torch.Generator().manual_seed(6), dtype=grad.dtype)
    torch.testing.assert_close(fused.curvature(v), reference.curvature(v), rtol=1e-9, atol=1e-12)
    candidate = unflatten(flatten(params) + 0.05 * v, params)
    for ours, ref in zip(fused.evaluate(candidate), reference.evaluate(candidate), strict=True):
        torch.testing.assert_close(ours, ref, rtol=1e-9, atol=1e-12)


def test_custom_policies_use_autograd() -> None:
    """A subclass of the built-in MLP may override `forward`: it never gets the hand-derived products."""

    class Shifted(metarl.policies.GaussianMLP):
        def forward(self, obs: torch.Tensor) -> metarl.policies.PolicyOutput:
            out = super().forward(obs)
            return metarl.policies.PolicyOutput(out.mean + 1.0, out.log_std)

    policy = Shifted(2, 2, (4,))
    assert meta_products.supports(policy, params_of(policy)) is None
    plain = metarl.policies.GaussianMLP(2, 2, (4,))
    assert meta_products.supports(plain, params_of(plain)) is not None
    assert meta_products.supports(plain, {k: v for k, v in params_of(plain).items() if k != "log_std"}) is None


def test_joint_problem_matches_autograd(wide_goals: str) -> None:
    """No inner steps (the pretrained/oracle baselines' TRPO): gradient, Fisher products, line-search values."""
    from metarl.algos.maml import joint_problem
    from metarl.baselines import joint_objective
    from metarl.policies import PolicyOutput, forward
    from metarl.trpo import ObjectiveProblem

    policy, params, rollouts, _ = setup(wide_goals, "relu", inner_steps=1)
    data = rollouts.pre[0]
    with torch.no_grad():
        out = forward(policy, params, data.obs)
    old = PolicyOutput(out.mean, out.log_std)
    objective = lambda p: joint_objective(policy, p, data, old)  # noqa: E731
    fused = joint_problem(policy, params, data, old, objective)
    assert isinstance(fused, meta_products.FusedMeta)
    reference = ObjectiveProblem(objective, params)
    for ours, ref in zip(fused.value_and_gradient(), reference.value_and_gradient(), strict=True):
        torch.testing.assert_close(ours, ref, rtol=1e-9, atol=1e-12)
    v = torch.randn(flatten(params).shape, generator=torch.Generator().manual_seed(8), dtype=torch.float64)
    torch.testing.assert_close(fused.curvature(v), reference.curvature(v), rtol=1e-9, atol=1e-12)
    candidate = unflatten(flatten(params) + 0.05 * v, params)
    for ours, ref in zip(fused.evaluate(candidate), reference.evaluate(candidate), strict=True):
        torch.testing.assert_close(ours, ref, rtol=1e-9, atol=1e-12)
