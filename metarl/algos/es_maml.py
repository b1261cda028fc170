"""ES-MAML (Song, Gao, Yang, Choromanski, Pacchiano, Tang; ICLR 2020, arXiv 1910.01215): zero-order, Hessian-free.

The objective is the Gaussian-smoothed adapt-then-evaluate return J̃_σ(θ) = E_T E_{g∼N(0,I)} f^T(U(θ + σg, T)),
with U an adaptation operator that is never differentiated (notes/metagrad.md §4.1), so U may be non-smooth (hill
climbing) and the policy deterministic. Per meta-iteration, everything is a batch of independent rollouts:

1. n antithetic pairs θ ± σg_i over the flattened θ; each pair gets `tasks_per_perturbation` tasks, shared by both
   members, as is the adaptation noise (common random numbers: the pair difference then cancels task variance,
   which the paper's code, one task per perturbation, does not; the estimate stays unbiased). `exact_evals` more
   units sit at θ itself and only feed the logged returns (the paper's `num_exact_evals`).
2. Adapt every (point, task) unit: ES adaptation evaluates the pivot and K queries of *all* units in one batched
   sampler call with one parameter set per simulation, then takes θ′ = θ + α·ĝ_ES (a pure tensor op); hill climbing
   runs K rounds, one batched call each.
3. One more batched call evaluates every adapted point; fitness shaping; ĝ = (1/(2nσ))·Σ_i (f̃_i⁺ − f̃_i⁻)·g_i;
   θ ← θ + β·ĝ (SGD, as the paper) or Adam.

The estimator is unbiased for ∇J̃_σ (with fitness "none"), *not* for ∇J: tested exactly on the analytic MDP with an
exact policy-gradient U (check C1) and with the ES operator (check C2) in tests/test_es_maml.py.
"""

from __future__ import annotations

import functools
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Literal, NamedTuple

import torch
from torch import Tensor, nn

from metarl.config import PolicyConfig, RunConfig
from metarl.family import index_tasks, num_tasks, repeat_tasks
from metarl.logger import Logger
from metarl.optim import adam_ascent
from metarl.policies import Params, num_stacked
from metarl.sampler import Sampler, SamplerProtocol
from metarl.training import OnIteration, TrainState, iterate, start
from metarl.trpo import flatten, unflatten

Fitness = Literal["zscore", "rank", "none"]


@dataclass(frozen=True)
class ESMAMLConfig:
    """ES-MAML (Song et al. 2020): antithetic ES on the adapt-then-evaluate return; ES or hill-climbing adaptation."""

    family: str = "PointNav-v0"
    """task family id (`metarl families`)"""
    perturbations: int = 150
    """antithetic pairs n per meta-iteration (2n perturbed points; paper: 150)"""
    tasks_per_perturbation: int = 1
    """tasks m per pair, shared by its + and − members (paper: 1)"""
    sigma: float = 0.1
    """meta smoothing σ of the perturbations θ ± σg (paper: 0.1)"""
    meta_lr: float = 0.01
    """meta step β (paper: 0.01, SGD)"""
    meta_optimizer: Literal["sgd", "adam"] = "sgd"
    """meta optimiser: plain ascent θ + β·ĝ (paper) or Adam with step size β"""
    fitness: Fitness = "zscore"
    """meta fitness shaping over the 2n values: zscore (paper), rank (centred ranks), none (unbiased for ∇J̃_σ)"""
    adaptation: Literal["es", "hill-climb"] = "es"
    """adaptation operator U: one ES-gradient step, or hill climbing (better with sparse rewards, per the paper)"""
    num_queries: int = 20
    """K: ES queries around the pivot, or hill-climbing rounds (paper: 20)"""
    adaptation_lr: float = 0.05
    """ES adaptation step α (paper: 0.05); hill climbing has none"""
    adaptation_sigma: float = 0.1
    """σ_a of the adaptation queries and hill-climbing proposals (paper: 0.1)"""
    adaptation_fitness: Fitness = "zscore"
    """shaping of the pivot + K query values inside ES adaptation (paper: zscore)"""
    antithetic_queries: bool = False
    """ES adaptation queries in K/2 mirrored pairs (paper: K independent queries, centred by the z-score)"""
    hill_climb_proposals: int = 1
    """proposals per hill-climbing round, the best kept if it beats the incumbent (1: the paper's 'average' mode)"""
    episodes_per_query: int = 1
    """episodes per evaluated parameter (pivot, queries, adapted point; paper: 1); raise it for Gaussian policies"""
    exact_evals: int = 100
    """extra units at θ itself, for the logged meta/return_pre and meta/return_post_1 (paper: 100)"""
    policy: PolicyConfig = field(default_factory=lambda: PolicyConfig(hidden=(), deterministic=True))
    run: RunConfig = field(default_factory=RunConfig)

    def __post_init__(self) -> None:
        checks = [
            (self.perturbations >= 1, "perturbations (antithetic pairs) must be >= 1"),
            (self.tasks_per_perturbation >= 1, "tasks_per_perturbation must be >= 1"),
            (self.sigma > 0 and self.meta_lr > 0, "sigma and meta_lr must be > 0"),
            (self.meta_optimizer in ("sgd", "adam"), "meta_optimizer must be 'sgd' or 'adam'"),
            (self.fitness in ("zscore", "rank", "none") and self.adaptation_fitness in ("zscore", "rank", "none"),
             "fitness and adaptation_fitness must be one of zscore, rank, none"),
            (self.adaptation in ("es", "hill-climb"), "adaptation must be 'es' or 'hill-climb'"),
            (self.num_queries >= 1, "num_queries (K) must be >= 1"),
            (not (self.antithetic_queries and self.num_queries % 2),
             f"antithetic_queries needs an even num_queries (K/2 mirrored pairs), got {self.num_queries}"),
            (self.adaptation_lr > 0 and self.adaptation_sigma > 0, "adaptation_lr and adaptation_sigma must be > 0"),
            (self.hill_climb_proposals >= 1, "hill_climb_proposals must be >= 1"),
            (self.episodes_per_query >= 1, "episodes_per_query must be >= 1"),
            (self.exact_evals >= 0, "exact_evals must be >= 0"),
        ]
        for ok, message in checks:
            if not ok:
                raise ValueError(message)

    @property
    def noise_shape(self) -> tuple[int, ...]:
        """Adaptation noise per unit, before the parameter dim: [K or K/2] for ES, [K, proposals] for hill climbing."""
        if self.adaptation == "hill-climb":
            return (self.num_queries, self.hill_climb_proposals)
        return (self.num_queries // 2 if self.antithetic_queries else self.num_queries,)


# ----------------------------------------------------------------------------------------------- evaluation
def unflatten_rows(points: Tensor, like: Params) -> Params:
    """Flat parameter vectors [R, d] -> params stacked [R, ...] with the names and shapes of `like` (shared)."""
    out, i = {}, 0
    for name, p in like.items():
        out[name] = points[:, i : i + p.numel()].reshape(points.shape[0], *p.shape)
        i += p.numel()
    return out


class Evaluator:
    """points [R, d], tasks [R], E -> undiscounted returns [R, E]: one batched sampler call, one parameter set per
    row; counts the environment steps it sampled."""

    def __init__(self, sampler: SamplerProtocol, policy: nn.Module, like: Params, generator: torch.Generator,
                 deterministic: bool) -> None:
        self.sampler, self.policy, self.like = sampler, policy, like
        self.generator, self.deterministic = generator, deterministic
        self.env_steps = 0

    def __call__(self, points: Tensor, tasks: Any, episodes: int) -> Tensor:
        batch = self.sampler.sample(self.policy, unflatten_rows(points, self.like), tasks, episodes, self.generator,
                                    self.deterministic)
        self.env_steps += batch.num_steps
        return batch.returns


Evaluate = Callable[[Tensor, Any, int], Tensor]


class Adapted(NamedTuple):
    """An adaptation operator's result for U units: adapted points [U, d] and the pivot's mean return [U]."""

    points: Tensor
    pre: Tensor


AdaptFn = Callable[[Evaluate, Tensor, Any, Tensor], Adapted]
"""(evaluate, points [U, d], tasks [U], noise [U, *noise_shape, d]) -> Adapted."""


# ----------------------------------------------------------------------------------------------- fitness shaping
def shape_fitness(values: Tensor, mode: Fitness) -> Tensor:
    """Shape [..., N] along the last dim: z-scores (0 where all values tie), centred ranks in [−½, ½] (ties share
    their average rank), or unchanged."""
    if mode == "none":
        return values
    if mode == "zscore":
        std = values.std(-1, correction=0, keepdim=True)
        centred = values - values.mean(-1, keepdim=True)
        return torch.where(std > 0, centred / torch.where(std > 0, std, 1.0), 0.0)
    if mode == "rank":
        n = values.shape[-1]
        below = (values.unsqueeze(-1) > values.unsqueeze(-2)).sum(-1)
        ties = (values.unsqueeze(-1) == values.unsqueeze(-2)).sum(-1)
        rank = below + (ties - 1) / 2  # average rank of a tie group, 0..n-1
        return rank.to(values.dtype) / max(n - 1, 1) - 0.5
    raise ValueError(f"fitness must be zscore, rank or none, got {mode!r}")


def pair_gradients(plus: Tensor, minus: Tensor, g: Tensor, sigma: float) -> Tensor:
    """Per-pair antithetic terms (f⁺_i − f⁻_i)·g_i/(2σ): [n], [n], [n, d] -> [n, d]; their mean is ĝ."""
    return (plus - minus).unsqueeze(-1) * g / (2 * sigma)


# ----------------------------------------------------------------------------------------------- adaptation
def es_adapt(evaluate: Evaluate, points: Tensor, tasks: Any, noise: Tensor, *, lr: float, sigma: float,
             fitness: Fitness, antithetic: bool, episodes: int) -> Adapted:
    """One ES-gradient adaptation step for every unit, all pivots and queries in ONE batched call.

    Args:
        points: [U, d] starting points. tasks: [U].
        noise: [U, Q, d] standard normal query directions; K = Q queries, or 2Q mirrored ones if `antithetic`.

    The shaped values of pivot + queries are centred by their mean (a z-score already is: that is the paper's
    `MCBlackboxOptimizer` with its z-scored values, ĝ = Σ_k f̂_k ε_k/(Kσ_a)); mirrored pairs use their difference.
    With fitness "none" and mirrored queries the step is unbiased for α∇f̃_{σ_a} (check C2).
    """
    U, Q, d = noise.shape
    offsets = torch.cat([noise, -noise], 1) if antithetic else noise  # [U, K, d]
    K = offsets.shape[1]
    rows = torch.cat([points.unsqueeze(1), points.unsqueeze(1) + sigma * offsets], 1)  # [U, 1 + K, d]
    returns = evaluate(rows.reshape(U * (K + 1), d), repeat_tasks(tasks, K + 1), episodes).mean(-1).view(U, K + 1)
    values = shape_fitness(returns, fitness)
    if antithetic:
        weights = values[:, 1 : Q + 1] - values[:, Q + 1 :]  # [U, Q]
        step = (weights.unsqueeze(-1) * noise).sum(1) / (2 * Q * sigma)
    else:
        weights = values[:, 1:] - values.mean(-1, keepdim=True)  # [U, K]
        step = (weights.unsqueeze(-1) * noise).sum(1) / (K * sigma)
    return Adapted(points + lr * step, returns[:, 0])


def hill_climb(evaluate: Evaluate, points: Tensor, tasks: Any, noise: Tensor, *, sigma: float,
               episodes: int) -> Adapted:
    """Hill climbing (the paper's `HillClimbAdaptation`): K rounds, each ONE batched call evaluating B proposals
    x* + σ_a·ε per unit; the best replaces the incumbent x* if it beats the incumbent's value. Monotone, no step
    size, not differentiable (ES-MAML never differentiates U). The first round also evaluates the pivot.

    Args:
        points: [U, d]. tasks: [U]. noise: [U, K, B, d] standard normal proposal directions.
    """
    U, K, _, d = noise.shape  # B proposals per round
    best = points
    pivot = best_value = torch.empty(0)
    for r in range(K):
        proposals = best.unsqueeze(1) + sigma * noise[:, r]  # [U, B, d]
        rows = torch.cat([points.unsqueeze(1), proposals], 1) if r == 0 else proposals
        returns = evaluate(rows.reshape(-1, d), repeat_tasks(tasks, rows.shape[1]), episodes).mean(-1)
        returns = returns.view(U, rows.shape[1])
        if r == 0:
            pivot = best_value = returns[:, 0]
            returns = returns[:, 1:]
        value, index = returns.max(1)
        better = value > best_value
        best = torch.where(better.unsqueeze(1), proposals[torch.arange(U), index], best)
        best_value = torch.where(better, value, best_value)
    return Adapted(best, pivot)


def make_adapt(cfg: ESMAMLConfig, lr: float | None = None) -> AdaptFn:
    """The configured adaptation operator (ES step size `lr`, default cfg.adaptation_lr)."""
    if cfg.adaptation == "hill-climb":
        return functools.partial(hill_climb, sigma=cfg.adaptation_sigma, episodes=cfg.episodes_per_query)
    return functools.partial(es_adapt, lr=cfg.adaptation_lr if lr is None else lr, sigma=cfg.adaptation_sigma,
                             fitness=cfg.adaptation_fitness, antithetic=cfg.antithetic_queries,
                             episodes=cfg.episodes_per_query)


# ----------------------------------------------------------------------------------------------- meta-gradient
class Draws(NamedTuple):
    """One meta-iteration's randomness. Units are laid out [+ block (n·m), − block (n·m), θ block (exact_evals)].

    Attributes:
        tasks: [n·m + exact_evals] base tasks; pair i's j-th task is at i·m + j.
        g: [n, d] perturbation directions.
        noise: [n·m + exact_evals, *noise_shape, d] adaptation noise per base unit.
    """

    tasks: Any
    g: Tensor
    noise: Tensor


def draw(cfg: ESMAMLConfig, family: Any, dim: int, dtype: torch.dtype, generator: torch.Generator,
         device: torch.device | None = None) -> Draws:
    """Tasks, perturbation directions and adaptation noise for one meta-iteration, all from `generator` (on the CPU,
    then moved to `device`: the same perturbations on every device)."""
    n, m = cfg.perturbations, cfg.tasks_per_perturbation
    tasks = family.sample_tasks(n * m + cfg.exact_evals, generator)
    g = torch.randn(n, dim, generator=generator, dtype=dtype)
    noise = torch.randn(n * m + cfg.exact_evals, *cfg.noise_shape, dim, generator=generator, dtype=dtype)
    return Draws(tasks, g.to(device), noise.to(device))


class ESStep(NamedTuple):
    """One meta-iteration's evaluations.

    Attributes:
        pair_grads: [n, d] per-pair terms (f̃⁺ − f̃⁻)·g/(2σ) with shaped fitness; ĝ is their mean.
        plus, minus: [n] raw fitness of θ ± σg_i, the post-adaptation return averaged over the pair's tasks.
        pre, post: [U] every unit's pivot and post-adaptation mean returns.
    """

    pair_grads: Tensor
    plus: Tensor
    minus: Tensor
    pre: Tensor
    post: Tensor


def es_step(evaluate: Evaluate, adapt: AdaptFn, theta: Tensor, draws: Draws, cfg: ESMAMLConfig) -> ESStep:
    """Perturb, adapt every unit, evaluate every adapted point (one batched call), shape fitness, per-pair ES terms.

    Args:
        theta: [d] the flattened meta-parameters.
        draws: from `draw`; both members of a pair share its tasks and adaptation noise (common random numbers).
    """
    n, m = draws.g.shape[0], cfg.tasks_per_perturbation
    exact = num_tasks(draws.tasks) - n * m
    base = torch.arange(n * m)
    index = torch.cat([base, base, n * m + torch.arange(exact)])  # unit -> base unit (tasks, noise)
    offsets = (cfg.sigma * draws.g).repeat_interleave(m, 0)  # [n·m, d]
    points = torch.cat([theta + offsets, theta - offsets, theta.expand(exact, -1)])  # [U, d]
    tasks = index_tasks(draws.tasks, index)
    adapted = adapt(evaluate, points, tasks, draws.noise[index])
    post = evaluate(adapted.points, tasks, cfg.episodes_per_query).mean(-1)  # [U]
    plus, minus = post[: n * m].view(n, m).mean(1), post[n * m : 2 * n * m].view(n, m).mean(1)
    shaped = shape_fitness(torch.cat([plus, minus]), cfg.fitness)
    return ESStep(pair_gradients(shaped[:n], shaped[n:], draws.g, cfg.sigma), plus, minus, adapted.pre, post)


# ----------------------------------------------------------------------------------------------- evaluation
def adaptation_returns(
    cfg: ESMAMLConfig,
    sampler: SamplerProtocol,
    policy: nn.Module,
    params: Params,
    tasks: Any,
    step_sizes: Sequence[float],
    episodes: int,
    generator: torch.Generator,
    extra: Mapping[str, Any] | None = None,
) -> Tensor:
    """ES-MAML's test-time adaptation: undiscounted returns [k+1, T, E] at θ and after each of k = len(step_sizes)
    applications of the configured operator (ES step α_j = step_sizes[j]; hill climbing ignores the values), each
    measured on E fresh episodes per task; the operator itself queries as in training (cfg.episodes_per_query)."""
    T = num_tasks(tasks)
    stacked = num_stacked(policy, params) is not None
    like = {k: v[0] for k, v in params.items()} if stacked else params
    points = torch.cat([v.reshape(T, -1) for v in params.values()], 1) if stacked else flatten(params).expand(T, -1)
    evaluate = Evaluator(sampler, policy, like, generator, cfg.policy.deterministic)
    returns = []
    with torch.no_grad():
        for lr in step_sizes:
            returns.append(evaluate(points, tasks, episodes))
            noise = torch.randn(T, *cfg.noise_shape, points.shape[1], generator=generator, dtype=points.dtype)
            noise = noise.to(points.device)  # drawn on the CPU: the same noise on every device
            points = make_adapt(cfg, lr)(evaluate, points, tasks, noise).points
        returns.append(evaluate(points, tasks, episodes))
    return torch.stack(returns)


def eval_step_sizes(cfg: ESMAMLConfig, steps: int) -> tuple[float, ...]:
    """The training adaptation step α for every test-time application of the operator."""
    return (cfg.adaptation_lr,) * steps


# ----------------------------------------------------------------------------------------------- training
def meta_update(params: Params, grad: Tensor, cfg: ESMAMLConfig,
                optimizer_state: dict[str, Any] | None) -> tuple[Params, dict[str, Any] | None]:
    """θ + β·ĝ (the paper's plain ascent) or one Adam step; ĝ [d] is flat."""
    if cfg.meta_optimizer == "adam":
        return adam_ascent(params, unflatten(grad, params), cfg.meta_lr, optimizer_state)
    return unflatten(flatten(params) + cfg.meta_lr * grad, params), None


def _metrics(step: ESStep, grad: Tensor, exact: int) -> dict[str, float]:
    """meta/ returns at θ (the exact-eval units; all units if there are none), outer/ fitness and ĝ."""
    pre, post = (step.pre[-exact:], step.post[-exact:]) if exact else (step.pre, step.post)
    fitness = torch.cat([step.plus, step.minus])
    return {
        "meta/return_pre": float(pre.mean()),
        "meta/return_post_1": float(post.mean()),
        "outer/fitness_mean": float(fitness.mean()),
        "outer/fitness_std": float(fitness.std(correction=0)),
        "outer/grad_norm": float(grad.norm()),
    }


def train(
    cfg: ESMAMLConfig,
    logger: Logger | None = None,
    on_iteration: OnIteration | None = None,
    state: TrainState | None = None,
) -> TrainState:
    """Meta-train with `cfg` from `state` (default: a fresh start) to `cfg.run.iterations`; returns the final state.

    All randomness after the policy's initialisation comes from one generator whose state is part of `TrainState`
    (with the Adam state, if any), so continuing from a saved state reproduces an uninterrupted run exactly.
    """
    session = start(cfg, state)
    family = session.family
    evaluate = Evaluator(Sampler(family, session.backend), session.policy, session.state.params, session.generator,
                         cfg.policy.deterministic)
    adapt = make_adapt(cfg)

    def collect(state: TrainState, generator: torch.Generator) -> tuple[Tensor, dict[str, float], int]:
        before, theta = evaluate.env_steps, flatten(state.params)
        with torch.no_grad():
            draws = draw(cfg, family, theta.numel(), theta.dtype, generator, theta.device)
            step = es_step(evaluate, adapt, theta, draws, cfg)
        grad = step.pair_grads.mean(0)
        return grad, _metrics(step, grad, cfg.exact_evals), evaluate.env_steps - before

    def update(state: TrainState, grad: Tensor) -> tuple[Params, dict[str, Any] | None, dict[str, float]]:
        new, optimizer_state = meta_update(state.params, grad, cfg, state.optimizer_state)
        return new, optimizer_state, {}

    return iterate(cfg, session, collect, update, logger, on_iteration)


# ----------------------------------------------------------------------------------------------- presets
PRESETS: dict[str, dict[str, Any]] = {
    # the paper code's zero-order defaults (notes/anchors-metarl.md §6.2) on PointNav with its U[−1, 1]² goals and
    # H = 100; the paper's reward is −‖x − g‖² with positions clipped to [−1, 1]², ours −‖x − g‖ (docs/algorithms)
    "esmaml2020-nav": {"family": "PointNav-v0", "perturbations": 150, "tasks_per_perturbation": 1, "sigma": 0.1,
                       "meta_lr": 0.01, "meta_optimizer": "sgd", "fitness": "zscore", "adaptation": "es",
                       "num_queries": 20, "adaptation_lr": 0.05, "adaptation_sigma": 0.1,
                       "adaptation_fitness": "zscore", "antithetic_queries": False, "episodes_per_query": 1,
                       "exact_evals": 100, "policy.hidden": (), "policy.deterministic": True,
                       "run.family_kwargs": {"low": -1.0, "high": 1.0}, "run.iterations": 10000},
    # small and quick: visibly improves PointNav's post-adaptation return in about a minute on 2 cores
    "fast": {"family": "PointNav-v0", "perturbations": 50, "num_queries": 10, "exact_evals": 20,
             "run.iterations": 300, "run.checkpoint_every": 50},
}
