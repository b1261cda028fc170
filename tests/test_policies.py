"""Functional policy evaluation: the bound fast path equals the general one bit for bit; stacked params work for
every policy type; log-probs and KL match torch.distributions."""

from __future__ import annotations

import math
from typing import NamedTuple

import pytest
import torch
from torch import nn

import metarl
from metarl.config import PolicyConfig
from metarl.family import StepResult, TaskFamily
from metarl.policies import (
    DeterministicMLP,
    GaussianMLP,
    diag_gaussian_kl,
    forward,
    forward_fn,
    forward_reference,
    gaussian_log_prob,
    params_of,
    stack,
)
from metarl.sampler import Sampler, torch_threads


def perturbed_stack(module: nn.Module, rows: int, seed: int = 0) -> dict[str, torch.Tensor]:
    """`rows` distinct parameter sets around the module's own."""
    g = torch.Generator().manual_seed(seed)
    stacked = stack(params_of(module), rows)
    return {k: v + 0.1 * torch.randn(v.shape, generator=g, dtype=v.dtype) for k, v in stacked.items()}


POLICIES = {
    "gaussian-relu": lambda: GaussianMLP(5, 3, (16, 16), "relu"),
    "gaussian-tanh-f64": lambda: GaussianMLP(5, 3, (16,), "tanh").double(),
    "deterministic-linear": lambda: DeterministicMLP(5, 3, (), scale=0.5),
    "deterministic-mlp": lambda: DeterministicMLP(5, 3, (8, 8), "tanh"),
}


@pytest.mark.parametrize("name", sorted(POLICIES))
@pytest.mark.parametrize("stacked", [False, True])
def test_forward_fn_equals_forward_bit_for_bit(name: str, stacked: bool) -> None:
    module = POLICIES[name]()
    params = perturbed_stack(module, 4) if stacked else params_of(module)
    dtype = next(iter(params.values())).dtype
    obs = torch.randn(4, 6, 5, generator=torch.Generator().manual_seed(1), dtype=dtype)
    general, bound = forward_reference(module, params, obs), forward_fn(module, params)(obs)
    assert torch.equal(general.mean, bound.mean)
    assert (general.log_std is None) == (bound.log_std is None)
    if general.log_std is not None:
        assert torch.equal(general.log_std, bound.log_std)


@pytest.mark.parametrize("name", sorted(POLICIES))
def test_stacked_rows_use_their_own_parameters(name: str) -> None:
    module = POLICIES[name]()
    params = perturbed_stack(module, 3)
    obs = torch.randn(3, 7, 5, generator=torch.Generator().manual_seed(2), dtype=next(iter(params.values())).dtype)
    out = forward(module, params, obs)
    for r in range(3):
        row = forward(module, {k: v[r] for k, v in params.items()}, obs[r])
        torch.testing.assert_close(out.mean[r], row.mean, rtol=1e-6, atol=1e-7)


def test_log_prob_and_kl_match_torch_distributions() -> None:
    module = GaussianMLP(4, 2, (8,)).double()
    obs = torch.randn(10, 4, dtype=torch.float64)
    act = torch.randn(10, 2, dtype=torch.float64)
    out = forward(module, params_of(module), obs)
    normal = torch.distributions.Normal(out.mean, out.log_std.exp())
    torch.testing.assert_close(gaussian_log_prob(out, act), normal.log_prob(act).sum(-1))
    other = forward(module, {k: v + 0.05 for k, v in params_of(module).items()}, obs)
    reference = torch.distributions.kl_divergence(normal, torch.distributions.Normal(other.mean, other.log_std.exp()))
    torch.testing.assert_close(diag_gaussian_kl(out, other), reference.sum(-1))


class _NanTasks(NamedTuple):
    unused: torch.Tensor


class _NanFamily(TaskFamily):
    """Env 0 of each batch reaches a NaN state at step 1 and terminates; the others run to the horizon."""

    Tasks = _NanTasks
    obs_dim, act_dim = 1, 1
    action_low = torch.tensor([-1.0], dtype=torch.float64)
    action_high = torch.tensor([1.0], dtype=torch.float64)

    def sample_tasks(self, n: int, generator: torch.Generator) -> _NanTasks:
        return _NanTasks(torch.zeros(n, dtype=torch.float64))

    def make_env(self, num_envs: int, backend: str = "cpu") -> _NanEnv:
        return _NanEnv(num_envs)


class _NanEnv:
    def __init__(self, num_envs: int) -> None:
        self.num_envs, self.t = num_envs, 0

    def reset(self, tasks: _NanTasks, generator: torch.Generator, ids: torch.Tensor | None = None) -> torch.Tensor:
        self.t = 0
        return torch.ones(self.num_envs, 1, dtype=torch.float64)

    def step(self, tasks: _NanTasks, action: torch.Tensor, ids: torch.Tensor | None = None) -> StepResult:
        self.t += 1
        obs = torch.ones(self.num_envs, 1, dtype=torch.float64)
        terminated = torch.zeros(self.num_envs, dtype=torch.bool)
        if self.t == 1:
            obs[0], terminated[0] = float("nan"), True
        return StepResult(obs, torch.ones(self.num_envs, dtype=torch.float64), terminated, {})


def test_sampler_zeroes_steps_after_a_nonfinite_termination() -> None:
    """The steps after an episode ends on a NaN state are 0 (not NaN·0 = NaN), so baselines and losses stay finite."""
    spec = metarl.FamilySpec(id="test/NanEnd-v0", entry_point=f"{__name__}:_NanFamily", horizon=4)
    family = _NanFamily(spec)
    policy = GaussianMLP(1, 1, (4,))
    batch = Sampler(family).sample(policy, params_of(policy), family.sample_tasks(1, torch.Generator()), 3,
                                   torch.Generator().manual_seed(0))
    assert batch.mask[0, 0].tolist() == [1.0, 0.0, 0.0, 0.0] and batch.done[0, 0, 0]
    assert torch.isfinite(batch.obs).all() and torch.isfinite(batch.act).all()
    assert batch.mask[0, 1:].all()  # the other episodes are untouched


def test_sampling_restores_the_torch_thread_count() -> None:
    before = torch.get_num_threads()
    with torch_threads(1):
        assert torch.get_num_threads() == 1
    assert torch.get_num_threads() == before
    family = metarl.make("HalfCheetahVel-v0")
    policy = GaussianMLP(family.obs_dim, family.act_dim, (8,))
    Sampler(family).sample(policy, params_of(policy), family.sample_tasks(2, torch.Generator()), 1, torch.Generator())
    assert torch.get_num_threads() == before


def test_glorot_init_matches_rllab_scheme() -> None:
    family = metarl.make("PointNav-v0")
    torch.manual_seed(0)
    module = PolicyConfig(hidden=(64, 32), activation="tanh", init="glorot", init_std=0.5).build(family)
    linears = [m for m in module.modules() if isinstance(m, nn.Linear)]
    assert len(linears) == 3
    for layer in linears:
        fan_out, fan_in = layer.weight.shape
        largest = float(layer.weight.detach().abs().max())
        assert 0.8 * math.sqrt(6.0 / (fan_in + fan_out)) < largest <= math.sqrt(6.0 / (fan_in + fan_out))
        assert torch.equal(layer.bias, torch.zeros_like(layer.bias))
    torch.testing.assert_close(module.log_std.detach(), torch.full((2,), math.log(0.5)))
    with pytest.raises(ValueError, match=r"policy\.init"):
        PolicyConfig(init="he")  # type: ignore[arg-type]
