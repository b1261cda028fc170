"""The analytic 2-step MDP of notes/metagrad.md §3, as a metarl task family, with its closed forms.

s0 = 0; a0 ~ N(μ0, σ²); a1 ~ N(μ1, σ²) (an open-loop Gaussian policy, θ = (μ0, μ1, ℓ = log σ));
r0 = −C·a0², r1 = −(a0 + a1 − g)², task = goal g.  V_g(θ) = −C(μ0² + σ²) − ((μ0 + μ1 − g)² + 2σ²).
The cross-time Hessian entry ∂²V/∂μ0∂μ1 = −2 is what separates DiCE from LVC. Everything is float64.

The family is not built in: `register_toy()` registers it through the public API (`metarl.register`) as
"test/ToyMDP-v0", for the exact tests (tests/test_metagrad.py, test_es_maml.py, test_reptile.py) and the toy section
of scripts/bench_estimators.py.
"""

from __future__ import annotations

import math
from typing import NamedTuple

import numpy as np
import torch
from torch import Tensor, nn

import metarl
from metarl.algos.maml_inner import inner_step
from metarl.estimators import TaskData
from metarl.family import StepResult, TaskFamily
from metarl.policies import Params, PolicyOutput
from metarl.registry import FamilySpec
from metarl.trpo import flatten, unflatten

C = 0.5
GOALS = (-1.0, 0.0, 1.0, 2.0)
TOY_ID = "test/ToyMDP-v0"


class GoalTasks(NamedTuple):
    goal: Tensor  # float64 [T]


class ToyMDP(TaskFamily):
    """obs = one-hot of the time step (so an open-loop policy is a linear map of it); no action bounds."""

    Tasks = GoalTasks
    obs_dim = 2
    act_dim = 1
    action_low = torch.tensor([-math.inf], dtype=torch.float64)
    action_high = torch.tensor([math.inf], dtype=torch.float64)

    def sample_tasks(self, n: int, generator: torch.Generator) -> GoalTasks:
        idx = torch.randint(0, len(GOALS), (n,), generator=generator)
        return GoalTasks(torch.tensor(GOALS, dtype=torch.float64)[idx])

    def make_env(self, num_envs: int, backend: str = "cpu") -> ToyEnv:
        return ToyEnv(num_envs)


class ToyEnv:
    def __init__(self, num_envs: int) -> None:
        self.num_envs = num_envs
        self.t = 0
        self.a0 = torch.zeros(num_envs, dtype=torch.float64)

    def _obs(self) -> Tensor:
        obs = torch.zeros(self.num_envs, 2, dtype=torch.float64)
        if self.t < 2:
            obs[:, self.t] = 1.0
        return obs

    def reset(self, tasks: GoalTasks, generator: torch.Generator, ids: Tensor | None = None) -> Tensor:
        self.t = 0
        return self._obs()

    def step(self, tasks: GoalTasks, action: Tensor, ids: Tensor | None = None) -> StepResult:
        a = action[:, 0]
        if self.t == 0:
            self.a0 = a.clone()
            reward = -C * a.square()
        else:
            reward = -(self.a0 + a - tasks.goal).square()
        self.t += 1
        return StepResult(self._obs(), reward, torch.zeros(self.num_envs, dtype=torch.bool), {})


class OpenLoopGaussian(nn.Module):
    """π(a_t) = N(μ_t, σ²): `mean` = (μ0, μ1); `log_std` is a parameter, or a fixed buffer if `learn_std=False`."""

    def __init__(self, mu: tuple[float, float], log_std: float, learn_std: bool = True) -> None:
        super().__init__()
        self.mean = nn.Parameter(torch.tensor(mu, dtype=torch.float64))
        ls = torch.tensor([log_std], dtype=torch.float64)
        if learn_std:
            self.log_std = nn.Parameter(ls)
        else:
            self.register_buffer("log_std", ls)

    def forward(self, obs: Tensor) -> PolicyOutput:
        return PolicyOutput((obs @ self.mean).unsqueeze(-1), self.log_std)


def register_toy() -> None:
    if TOY_ID not in {s.id for s in metarl.registered()}:
        metarl.register(FamilySpec(id=TOY_ID, entry_point="metarl.envs.toy_mdp:ToyMDP", horizon=2,
                                   tasks="goal ∈ {−1, 0, 1, 2}", reference="notes/metagrad.md §3"))


def inner_step_jacobians(policy: nn.Module, params: Params, data: TaskData, alpha: float, estimator: str,
                         dice_lambda: float = 1.0) -> Tensor:
    """dθ′/dθ of one inner step (metarl's `inner_step`) for every task row of `data`, [T, P, P] at θ = `params`.

    Forward mode: P tangents, not T·P cotangents (T is thousands of independent batches in the exact tests)."""

    def step(theta: Tensor) -> Tensor:
        adapted = inner_step(policy, unflatten(theta, params), data, alpha, estimator, dice_lambda)
        return torch.cat([v.reshape(v.shape[0], -1) for v in adapted.values()], dim=1)

    return torch.func.jacfwd(step)(flatten(params))


# ----------------------------------------------------------------------------------------------- closed forms
def value(theta: Tensor, g: float) -> Tensor:
    """V_g(θ) for θ = (μ0, μ1, ℓ) or θ = (μ0, μ1) with σ = `theta[2]` fixed elsewhere (pass 3 entries)."""
    mu0, mu1, sigma = theta[0], theta[1], torch.exp(theta[2])
    return -C * (mu0**2 + sigma**2) - ((mu0 + mu1 - g) ** 2 + 2 * sigma**2)


def mean_value(theta: Tensor) -> Tensor:
    return torch.stack([value(theta, g) for g in GOALS]).mean()


def grad_value(theta: Tensor, g: float) -> Tensor:
    return torch.func.grad(lambda th: value(th, g))(theta)


def hess_value(theta: Tensor, g: float) -> Tensor:
    return torch.func.hessian(lambda th: value(th, g))(theta)


def gauss_hermite(n: int) -> tuple[Tensor, Tensor]:
    """Probabilists' Gauss–Hermite nodes and weights normalised to a standard normal expectation."""
    z, w = np.polynomial.hermite_e.hermegauss(n)
    return torch.tensor(z, dtype=torch.float64), torch.tensor(w / w.sum(), dtype=torch.float64)


def j2_formulation_ii(mu: Tensor, sigma: float, g: float, alpha: float, n: int, horizon: int = 2) -> Tensor:
    """J^II_N for one goal with fixed σ: E over N pre-update trajectories of V(θ + α ĝ), ĝ the naive per-step-average
    inner gradient with raw returns (γ = 1, no baseline) — exactly what metarl's emaml pipeline adapts with.

    V is quadratic in μ, so E V(θ + αĝ) = V(θ + α E ĝ) + (α²/2) tr(∇²V Cov ĝ), Cov ĝ = Cov(q)/N for the
    single-trajectory term q = (1/H)·(R0 (a0 − μ0), R1 (a1 − μ1))/σ². E q and E qqᵀ are polynomial moments, exact
    under 2-D Gauss–Hermite quadrature with nodes a = μ + σz that move with μ (so autograd gives the exact ∇).
    """
    z, w = gauss_hermite(8)
    a0 = mu[0] + sigma * z[:, None]
    a1 = mu[1] + sigma * z[None, :]
    weight = w[:, None] * w[None, :]
    r0, r1 = -C * a0**2, -(a0 + a1 - g) ** 2
    q = torch.stack([(r0 + r1) * (a0 - mu[0]), r1 * (a1 - mu[1])]) / sigma**2 / horizon  # [2, n, n]
    eq = (q * weight).sum((1, 2))
    eqq = (q[:, None] * q[None, :] * weight).sum((2, 3))
    cov = (eqq - torch.outer(eq, eq)) / n
    ls = torch.tensor(math.log(sigma), dtype=torch.float64)
    adapted = torch.cat([mu + alpha * eq, ls.view(1)])
    hess = hess_value(torch.cat([mu, ls.view(1)]), g)[:2, :2]  # constant in μ
    return value(adapted, g) + 0.5 * alpha**2 * (hess * cov).sum()


# ----------------------------------------------------------------------------------------------- ES-MAML closed forms
def gauss_hermite_grid(n: int, dim: int) -> tuple[Tensor, Tensor]:
    """Product grid of `gauss_hermite(n)` in `dim` dimensions: nodes [n^dim, dim], weights [n^dim]."""
    z, w = gauss_hermite(n)
    nodes = torch.cartesian_prod(*[z] * dim).reshape(-1, dim)
    weights = torch.cartesian_prod(*[w] * dim).reshape(-1, dim).prod(-1)
    return nodes, weights


def smoothed(fn: object, theta: Tensor, sigma: float, n: int = 24) -> Tensor:
    """E_z fn(θ + σz), z ~ N(0, I): the ES-smoothed objective by GH quadrature (nodes move with θ, so autograd gives
    ∇ of the smoothed objective). `fn` maps points [N, d] to values [N]."""
    nodes, weights = gauss_hermite_grid(n, theta.shape[0])
    return (fn(theta + sigma * nodes) * weights).sum()  # type: ignore[operator]


def pg_adapted_value(points: Tensor, alpha: float, horizon: int = 2) -> Tensor:
    """mean_g V_g(θ + α∇V_g(θ)/H) for points [N, 3] (θ = (μ0, μ1, ℓ)): exact-PG adaptation then evaluation (C1)."""
    grad_fn = torch.func.vmap(torch.func.grad(value), in_dims=(0, None))
    vals = [torch.func.vmap(value, in_dims=(0, None))(points + alpha * grad_fn(points, g) / horizon, g)
            for g in GOALS]
    return torch.stack(vals).mean(0)


def _return_moments(mu: Tensor, sigma: float, g: float, n: int = 6) -> tuple[Tensor, Tensor]:
    """E R and Var R of one episode's return R = r0 + r1 at μ [..., 2] with fixed σ (2-D GH: R² is a polynomial
    of degree 4, exact)."""
    nodes, weights = gauss_hermite_grid(n, 2)
    a = mu.unsqueeze(-2) + sigma * nodes  # [..., n², 2]
    ret = -C * a[..., 0] ** 2 - (a[..., 0] + a[..., 1] - g) ** 2
    mean = (ret * weights).sum(-1)
    return mean, (ret.square() * weights).sum(-1) - mean.square()


def es_adapted_value(mu: Tensor, sigma: float, g: float, alpha: float, sigma_a: float, pairs: int,
                     n: int = 6) -> Tensor:
    """F_g(μ) = E V_g(μ + α ĝ) for metarl's ES adaptation with `pairs` mirrored query pairs, un-normalised values and
    one rollout per query: ĝ = (1/Q) Σ_q (R⁺_q − R⁻_q) ε_q/(2σ_a), R± one return at μ ± σ_a ε_q (C2). μ: [N, 2].

    V is quadratic in μ (σ fixed), so E V(μ + αĝ) = V(μ + α E ĝ) + (α²/2) tr(∇²V Cov ĝ), Cov ĝ = Cov(q)/Q for the
    single-pair term q; E q and E qqᵀ are GH integrals over ε of the return moments at μ ± σ_a ε (all polynomial:
    exact). This is the "6-D GH" of notes/metagrad.md §3.2 C2 with the rollout dims integrated in closed form.
    """
    eps, weights = gauss_hermite_grid(n, 2)  # [n², 2]
    plus_mean, plus_var = _return_moments(mu.unsqueeze(-2) + sigma_a * eps, sigma, g)  # [N, n²]
    minus_mean, minus_var = _return_moments(mu.unsqueeze(-2) - sigma_a * eps, sigma, g)
    diff = plus_mean - minus_mean
    eq = ((diff * weights).unsqueeze(-1) * eps).sum(-2) / (2 * sigma_a)  # [N, 2]
    second = (plus_var + minus_var + diff.square()) * weights  # E[(R⁺ − R⁻)² | ε]
    eqq = torch.einsum("nk,ki,kj->nij", second, eps, eps) / (4 * sigma_a**2)
    cov = (eqq - eq.unsqueeze(-1) * eq.unsqueeze(-2)) / pairs
    ls = torch.full((mu.shape[0], 1), math.log(sigma), dtype=mu.dtype)
    adapted = torch.cat([mu + alpha * eq, ls], -1)
    hess = hess_value(torch.tensor([0.0, 0.0, math.log(sigma)], dtype=mu.dtype), g)[:2, :2]  # constant in μ
    vals = torch.func.vmap(value, in_dims=(0, None))(adapted, g)
    return vals + 0.5 * alpha**2 * (hess * cov).sum((-2, -1))
