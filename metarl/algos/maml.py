"""MAML for RL (Finn et al. 2017) with a choice of second-order meta-gradients; FOMAML is the `first_order` preset.

Per meta-iteration, for T tasks in one batch:
1. sample E episodes per task with θ, take k policy-gradient steps θ_{j+1} = θ_j + α_j ∇L_in(θ_j), each on fresh
   episodes sampled with the adapted policies (one batched sampler call per step, one parameter set per task);
2. sample E post-update episodes with θ_k;
3. update θ with TRPO (or Adam) on the meta-objective  J(θ) = mean_T L_out(θ_k(θ)),  differentiating through all k
   inner steps.

Which objective the meta-gradient estimates depends on `estimator` (metarl/estimators.py, notes/metagrad.md):
- "lvc" (default): ProMP's low-variance inner surrogate. Its Hessian keeps every term of ∇²V but the cross-time
  score products, so it is biased for formulation I, with much lower variance: it learns best of those tried (README,
  "What it learns": PointNav over seeds, HalfCheetahVel), which is why it is the default.
- "dice": Loaded-DiCE inner surrogate, λ = `dice_lambda`. Its Hessian is unbiased for ∇²V, so the meta-gradient
  estimates formulation I, ∇ E_T V_T(θ + α∇V_T(θ)) (up to the O(α²/N) same-batch bias every formulation-I estimator
  has): the unbiased choice, at the price of the variance of products of up to H per-step scores.
- "dice_cv": "dice" with a control variate on those products: each episode's cross-time score products are centred
  by the same products of the task's other episodes (estimators.score_control_variate). Unbiased for formulation I
  as "dice" is; the same inner step and gradient, a lower-variance Jacobian.
- "emaml": naive inner step plus E-MAML's score term: exactly unbiased for formulation II, the objective of the
  *sampled* inner step, E_T E_τ V_T(θ + α ĝ(θ; τ)), at any batch size.
- "naive" (the REINFORCE surrogate every public PyTorch port differentiates; biased, its Hessian drops all score
  products) for comparison.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field, replace
from typing import Any, Literal, NamedTuple

import torch
from torch import Tensor, nn
from torch.func import grad

from metarl import meta_products
from metarl.algos.maml_presets import PRESETS  # noqa: F401  (re-exported: `maml.PRESETS`)
from metarl.config import PolicyConfig, RunConfig
from metarl.curvature import gauss_newton_kl_product, metric_estimator
from metarl.estimators import (
    ESTIMATORS,
    TaskData,
    inner_objective,
    mean_kl,
    outer_objective,
    prepare,
    score_term,
)
from metarl.logger import Logger
from metarl.optim import adam_ascent
from metarl.policies import Params, PolicyOutput, forward, num_stacked, stack
from metarl.sampler import Batch, Sampler, SamplerProtocol
from metarl.training import OnIteration, TrainState, iterate, start
from metarl.trpo import ObjectiveProblem, TRPOConfig, TrustRegionProblem, flatten, kl_hvp, trpo_step, unflatten
from metarl.value_baseline import ValueBaseline, ValueConfig, fit_stages, for_run, keep_in_state, stage_values


@dataclass(frozen=True)
class MAMLConfig:
    """MAML (Finn et al. 2017): policy-gradient inner steps, TRPO outer step, second order by default."""

    family: str = "HalfCheetahVel-v0"
    """task family id (`metarl families`)"""
    meta_batch_size: int = 40
    """tasks T per meta-iteration (MAML: 40 locomotion, 20 navigation)"""
    episodes_per_task: int = 20
    """episodes E per task for each inner step and for the post-update batch (MAML: 20)"""
    inner_steps: int = 1
    """policy-gradient adaptation steps k"""
    inner_lr: float = 0.1
    """inner step size α (MAML: 0.1 locomotion, 0.5 navigation)"""
    inner_lrs: tuple[float, ...] = ()
    """per-step sizes overriding inner_lr (one per inner step)"""
    first_order: bool = False
    """drop second-order terms (FOMAML)"""
    estimator: Literal["dice", "dice_cv", "emaml", "lvc", "naive"] = "lvc"
    """meta-gradient estimator: lvc (ProMP; biased, low variance, learns best), dice (Loaded-DiCE: unbiased for
    formulation I), dice_cv (dice with a control variate for its score products; unbiased), emaml (unbiased for
    formulation II), naive (the ports' surrogate)"""
    dice_lambda: float = 1.0
    """Loaded-DiCE λ (1: unbiased for every order; < 1 discounts distant cross-time terms)"""
    gamma: float = 0.99
    """discount"""
    gae_lambda: float = 1.0
    """GAE λ"""
    baseline: Literal["linear", "none", "value"] = "linear"
    """state-value baseline: rllab's linear feature baseline refit per task, none (raw returns), or value: a network
    V(s, t, task, stage) shared by all tasks and fitted only on earlier batches, so unbiased at every order with a
    lower variance than the per-task linear fit (metarl/value_baseline.py; kept in checkpoints, used at test time)"""
    normalize_advantages: bool = True
    """standardise advantages per task (rllab center_adv; the papers' step sizes assume it)"""
    cross_fit: bool = True
    """fit each episode's baseline and advantage normalisation on its task's other episodes (leave one out), so that
    they do not depend on the actions they weigh: the meta-gradient of an unbiased estimator then stays unbiased with
    the baseline and normalisation on (fitting on the same batch, as rllab and pytorch-maml-rl do, biases it by
    O(1/E)); --no-cross-fit restores the same-batch fit"""
    average: Literal["steps", "episodes"] = "steps"
    """how a task's surrogates, KL and advantage normalisation weigh its steps: every step the same (unbiased) or
    every episode the same over its own valid steps (pytorch-maml-rl; biased: short episodes weigh more)"""
    outer: Literal["trpo", "adam"] = "trpo"
    """outer optimiser"""
    trpo: TRPOConfig = field(default_factory=TRPOConfig)
    kl_hvp: Literal["gauss-newton", "double-backward"] = "gauss-newton"
    """TRPO's KL Hessian-vector product through the adaptation: JᵀFJ (second order only) or double backward
    (third order); equal at θ_old, where TRPO evaluates it"""
    derivatives: Literal["fused", "autograd"] = "fused"
    """how the inner steps, meta-gradient and curvature products are computed: hand-derived products for the built-in
    Gaussian MLPs, processed per chunk of tasks (metarl/meta_products.py; other policies always use autograd), or
    autograd; the same numbers either way (tested), fused is several times faster"""
    curvature_subsample: int = 1
    """compute TRPO's curvature products on every n-th episode of each task (1: all, exact). Only the trust-region
    metric is approximated: the gradient and the line search's KL check use every episode (OpenAI baselines' TRPO
    uses every 5th sample for its Fisher products)"""
    outer_lr: float = 1e-3
    """Adam step size (outer=adam)"""
    value: ValueConfig = field(default_factory=ValueConfig)
    """the learned value baseline (baseline=value)"""
    policy: PolicyConfig = field(default_factory=PolicyConfig)
    run: RunConfig = field(default_factory=RunConfig)

    def __post_init__(self) -> None:
        checks = [
            (self.meta_batch_size >= 1, "meta_batch_size must be >= 1"),
            (self.episodes_per_task >= 1, "episodes_per_task must be >= 1"),
            (self.inner_steps >= 1, "inner_steps must be >= 1 (MAML adapts at least once)"),
            (self.inner_lr > 0, "inner_lr (α) must be > 0"),
            (all(a > 0 for a in self.inner_lrs), "inner_lrs must all be > 0"),
            (not self.inner_lrs or len(self.inner_lrs) == self.inner_steps,
             f"inner_lrs needs one step size per inner step ({self.inner_steps}), got {len(self.inner_lrs)}"),
            (self.estimator in ESTIMATORS, f"estimator must be one of {ESTIMATORS}"),
            (0.0 <= self.dice_lambda <= 1.0, "dice_lambda must be in [0, 1]"),
            (0.0 <= self.gamma <= 1.0 and 0.0 <= self.gae_lambda <= 1.0, "gamma and gae_lambda must be in [0, 1]"),
            (self.outer_lr > 0, "outer_lr must be > 0"),
            (1 <= self.curvature_subsample <= self.episodes_per_task,
             "curvature_subsample must be between 1 and episodes_per_task"),
            (self.curvature_subsample == 1 or self.kl_hvp == "gauss-newton",
             "curvature_subsample needs kl_hvp gauss-newton"),
            (self.average in ("steps", "episodes"), "average must be 'steps' or 'episodes'"),
            (self.derivatives in ("fused", "autograd"), "derivatives must be 'fused' or 'autograd'"),
            (not self.cross_fit or self.episodes_per_task >= 2,
             "cross_fit (the default) fits each episode's baseline on the others: it needs episodes_per_task >= 2; "
             "pass --no-cross-fit for one episode per task"),
            (self.average == "steps" or self.estimator != "emaml",
             "estimator emaml needs average steps (its score term is derived for the per-step average)"),
        ]
        for ok, message in checks:
            if not ok:
                raise ValueError(message)

    @property
    def step_sizes(self) -> tuple[float, ...]:
        """α_j for j = 1..k."""
        return self.inner_lrs or (self.inner_lr,) * self.inner_steps


FOMAML = {"first_order": True}
"""FOMAML is MAML with the inner gradients detached (a preset, not a copy)."""


# ----------------------------------------------------------------------------------------------- inner loop
def per_task(policy: nn.Module, params: Params, data: TaskData) -> Params:
    """Params with one copy per task of `data` ([T, E, H, ...]): shared params are expanded (a differentiable
    view), stacked ones pass through. Single-task data ([E, H, ...]) keeps shared params as they are."""
    if num_stacked(policy, params) is None and data.adv.dim() == 3:
        return stack(params, data.adv.shape[0])
    return params


def inner_step(
    policy: nn.Module,
    params: Params,
    data: TaskData,
    lr: float,
    estimator: str = "dice",
    dice_lambda: float = 1.0,
    first_order: bool = False,
) -> Params:
    """θ_t + α·∇L_in(θ_t; data_t) for every task t at once; differentiable in θ unless `first_order`.

    With data [T, E, H, ...] the params are made per task ([T, ...]); the surrogates are separable across tasks, so
    the gradient of their *sum* w.r.t. the stacked copy is exactly the per-task gradients: one batched backward
    pass instead of a vmap over tasks. Formulation II ("emaml") differentiates the naive surrogate: given its
    samples, the sampled step is exactly θ ↦ θ + α ĝ_naive(θ).
    """
    inner = "naive" if estimator == "emaml" else estimator
    params = per_task(policy, params, data)
    g = grad(lambda p: inner_objective(policy, p, data, inner, dice_lambda).sum())(params)
    if first_order:
        g = {k: v.detach() for k, v in g.items()}
    return {k: params[k] + lr * g[k] for k in params}


def adapt(
    policy: nn.Module,
    params: Params,
    steps: Sequence[TaskData],
    lrs: Sequence[float],
    estimator: str = "dice",
    dice_lambda: float = 1.0,
    first_order: bool = False,
) -> Params:
    """Replay k inner steps on stored data (step j uses `steps[j]`, sampled with θ_j); returns θ_k per task."""
    for data, lr in zip(steps, lrs, strict=True):
        params = inner_step(policy, params, data, lr, estimator, dice_lambda, first_order)
    return params


def prepare_batch(batch: Batch, cfg: MAMLConfig, values: Tensor | None = None) -> TaskData:
    """Advantages and step weights of a sampled batch with `cfg`'s baseline, GAE, normalisation and averaging
    (`values` [T, E, H]: the learned baseline's prediction for baseline=value, `stage_values`). Cross-fitting needs
    another episode to fit on: an evaluation with one episode per step fits on the same one."""
    cross_fit = cfg.cross_fit and batch.mask.shape[1] >= 2
    return prepare(batch, cfg.gamma, cfg.gae_lambda, cfg.baseline, cfg.normalize_advantages, cfg.average, cross_fit,
                   values)


def adapted_values(
    policy: nn.Module, params: Params, data: TaskData, lr: float, cfg: MAMLConfig
) -> Params:
    """θ + α·∇L_in(θ) per task, detached (collecting and evaluating need the values only): the fused products for the
    built-in MLPs unless `cfg.derivatives` is "autograd"."""
    lay = meta_products.supports(policy, params) if cfg.derivatives == "fused" else None
    if lay is not None:
        inner = "naive" if cfg.estimator == "emaml" else cfg.estimator
        return meta_products.adapt(lay, params, [data], [lr], inner)
    with torch.no_grad():  # no graph needed; torch.func.grad still differentiates inside
        step = inner_step(policy, params, data, lr, cfg.estimator, cfg.dice_lambda, first_order=True)
    return {k: v.detach() for k, v in step.items()}


def adaptation_returns(
    cfg: MAMLConfig,
    sampler: SamplerProtocol,
    policy: nn.Module,
    params: Params,
    tasks: Any,
    step_sizes: Sequence[float],
    episodes: int,
    generator: torch.Generator,
    extra: Mapping[str, Any] | None = None,
) -> Tensor:
    """MAML's test-time adaptation: undiscounted returns [k+1, T, E] before and after each of the k = len(step_sizes)
    policy-gradient steps, each step on E fresh episodes sampled with the current adapted policies.

    `extra` is the trained run's `TrainState.extra`: with baseline=value the inner steps use its learned baseline
    (frozen; steps beyond training's k use its last inner stage; none yet before the first iteration, as there)."""
    value = None
    if cfg.baseline == "value":
        if extra is None:
            raise ValueError("baseline=value adapts with the run's learned value baseline: pass the run state's "
                             "`extra` (TrainState.extra, a checkpoint's state['extra'])")
        value = for_run(cfg, sampler.family.obs_dim, tasks, extra.get("value"))
    returns = []
    adapted = params
    for j, lr in enumerate(step_sizes):
        batch = sampler.sample(policy, adapted, tasks, episodes, generator)
        returns.append(batch.returns)
        data = prepare_batch(batch, cfg, stage_values(value, batch, tasks, min(j, cfg.inner_steps - 1)))
        adapted = adapted_values(policy, adapted, data, lr, cfg)
    returns.append(sampler.sample(policy, adapted, tasks, episodes, generator).returns)
    return torch.stack(returns)


def default_eval_step_sizes(cfg: MAMLConfig, steps: int) -> tuple[float, ...]:
    """The MAML paper's test-time schedule: α for the first step, α/2 afterwards (notes/anchors-metarl.md §1.1)."""
    alpha = cfg.step_sizes[0]
    return tuple([alpha] + [alpha / 2] * (steps - 1)) if steps > 0 else ()


# ----------------------------------------------------------------------------------------------- data
class MetaRollouts(NamedTuple):
    """Everything one meta-update needs, for T tasks.

    Attributes:
        pre: k prepared batches; pre[j] was sampled with θ_j (θ_0 = θ) and drives inner step j.
        post: the prepared post-update batch, sampled with θ_k.
        old: the post-update policy's outputs at θ_old on post.obs (detached): the KL reference.
        adapted: θ_1..θ_k at θ_old, stacked [T, ...] and detached: where TRPO's curvature is evaluated.
        score_weight: [T] formulation II's (V̂(θ′) − c)/H per task (zero unless estimator = "emaml").
        returns: mean undiscounted episode return per stage: [return with θ_0, ..., with θ_k] (floats).
    """

    pre: tuple[TaskData, ...]
    post: TaskData
    old: PolicyOutput
    adapted: tuple[Params, ...]
    score_weight: Tensor
    returns: tuple[float, ...]


def collect(
    sampler: SamplerProtocol,
    policy: nn.Module,
    params: Params,
    tasks: Any,
    cfg: MAMLConfig,
    generator: torch.Generator,
    value: ValueBaseline | None = None,
) -> MetaRollouts:
    """Sample the k inner batches and the post-update batch, adapting all tasks in between (one batched call each).

    With a learned `value` baseline, every batch's values are predicted before it is fitted on (then on all k + 1
    batches at once, after the last prediction), so no baseline depends on the actions it weighs."""
    E, H = cfg.episodes_per_task, sampler.family.horizon
    pre: list[TaskData] = []
    returns: list[float] = []
    path: list[Params] = []
    batches: list[Batch] = []
    adapted = params
    for j, lr in enumerate(cfg.step_sizes):
        batch = sampler.sample(policy, adapted, tasks, E, generator)
        data = prepare_batch(batch, cfg, stage_values(value, batch, tasks, j))
        pre.append(data)
        batches.append(batch)
        returns.append(float(batch.returns.mean()))
        adapted = adapted_values(policy, adapted, data, lr, cfg)
        path.append(adapted)
    batch = sampler.sample(policy, adapted, tasks, E, generator)
    post = prepare_batch(batch, cfg, stage_values(value, batch, tasks, cfg.inner_steps))
    batches.append(batch)
    returns.append(float(batch.returns.mean()))
    if value is not None:
        fit_stages(value, batches, tasks, cfg.gamma)
    with torch.no_grad():
        old = forward(policy, adapted, post.obs)
        old = PolicyOutput(old.mean.detach(), None if old.log_std is None else old.log_std.detach())
    return MetaRollouts(tuple(pre), post, old, tuple(path), _score_weights(post, cfg, H), tuple(returns))


def warm_value_baseline(sampler: SamplerProtocol, policy: nn.Module, params: Params, cfg: MAMLConfig, batches: int,
                        generator: torch.Generator) -> ValueBaseline | None:
    """The learned baseline of `cfg` (baseline=value) fitted at fixed `params` on `batches` meta-batches of fresh
    tasks, as training keeps it fitted (None for 0): the warm-up of the probes that compare baselines at one θ."""
    value = None
    for _ in range(batches):
        tasks = sampler.family.sample_tasks(cfg.meta_batch_size, generator)
        value = value or for_run(cfg, sampler.family.obs_dim, tasks, None)
        collect(sampler, policy, params, tasks, cfg, generator, value)
    return value


def index_rollouts(rollouts: MetaRollouts, index: Tensor | slice) -> MetaRollouts:
    """The rollouts of a subset of tasks (e.g. chunks for a standard error, or one task)."""
    old = rollouts.old
    log_std = old.log_std
    if log_std is not None and log_std.dim() > 1:
        log_std = log_std[index]
    return MetaRollouts(
        tuple(type(d)(*(f[index] for f in d)) for d in rollouts.pre),
        type(rollouts.post)(*(f[index] for f in rollouts.post)),
        PolicyOutput(old.mean[index], log_std),
        tuple({k: v[index] for k, v in a.items()} for a in rollouts.adapted),
        rollouts.score_weight[index],
        rollouts.returns,
    )


def subsample_episodes(rollouts: MetaRollouts, every: int) -> MetaRollouts:
    """Every `every`-th episode of each task (the leading dims of every batch are [T, E]); the adapted parameters
    stay those of the full batch."""
    def pick(data: TaskData) -> TaskData:
        picked = type(data)(*(f[:, ::every] for f in data))
        # the weights were normalised over all E episodes: rescale so that each task's averages keep their scale
        return picked._replace(weight=picked.weight * (data.weight.shape[1] / picked.weight.shape[1]))

    old = PolicyOutput(rollouts.old.mean[:, ::every], rollouts.old.log_std)
    return rollouts._replace(pre=tuple(pick(d) for d in rollouts.pre), post=pick(rollouts.post), old=old)


def _score_weights(post: TaskData, cfg: MAMLConfig, horizon: int) -> Tensor:
    """(V̂(θ′) − c)/H per task for formulation II; c = the mean over the *other* tasks, which is independent of this
    task's pre-update samples (a baseline that depends on them cancels the term: metagrad.md §1.3)."""
    value = post.value0.mean(-1)  # [T]
    if cfg.estimator != "emaml" or cfg.first_order:
        return torch.zeros_like(value)
    T = value.shape[0]
    c = (value.sum() - value) / (T - 1) if T > 1 else torch.zeros_like(value)
    return (value - c) / horizon  # the outer surrogate is a per-step average, hence /H


# ----------------------------------------------------------------------------------------------- meta-objective
def meta_objective(policy: nn.Module, params: Params, rollouts: MetaRollouts, cfg: MAMLConfig) -> tuple[Tensor, Tensor]:
    """(surrogate, KL) averaged over the T tasks as functions of the meta-parameters θ, through all k inner steps.

    Pure in (params, rollouts). The KL is KL(π_θ′_old ‖ π_θ′(θ)) on the post-update states, so TRPO's trust region
    is measured on the adapted policies, as in MAML.
    """
    adapted = per_task(policy, params, rollouts.post)
    surrogate = torch.zeros(rollouts.score_weight.shape, dtype=rollouts.post.adv.dtype,
                            device=rollouts.post.adv.device)
    for data, lr in zip(rollouts.pre, cfg.step_sizes, strict=True):
        if cfg.estimator == "emaml" and not cfg.first_order:
            surrogate = surrogate + score_term(policy, adapted, data, rollouts.score_weight)
        adapted = inner_step(policy, adapted, data, lr, cfg.estimator, cfg.dice_lambda, cfg.first_order)
    out = forward(policy, adapted, rollouts.post.obs)
    surrogate = surrogate + outer_objective(out, rollouts.post)
    if rollouts.old.log_std is None:
        return surrogate.mean(), torch.zeros((), dtype=surrogate.dtype)
    return surrogate.mean(), mean_kl(rollouts.old, out, rollouts.post.weight).mean()


def kl_curvature(
    policy: nn.Module, params: Params, rollouts: MetaRollouts, cfg: MAMLConfig
) -> Callable[[Tensor], Tensor]:
    """v -> ∇²_θ KL·v at θ = `params` (where `rollouts` were collected) as the Gauss–Newton product JᵀFJ
    (metarl/curvature.py), at the adapted parameters `collect` computed on the full batches.

    With `cfg.curvature_subsample` n > 1 the Hessians and the Fisher average over every n-th episode only: a
    cheaper estimate of the same matrix, taken at the same θ_1..θ_k (not at parameters adapted on the subsample,
    whose noisier inner gradient would move the point where the Fisher is evaluated).
    """
    if cfg.curvature_subsample > 1:
        rollouts = subsample_episodes(rollouts, cfg.curvature_subsample)
    adapted = [per_task(policy, {k: v.detach() for k, v in params.items()}, rollouts.post), *rollouts.adapted]
    return gauss_newton_kl_product(policy, adapted, rollouts.pre, cfg.step_sizes, rollouts.post,
                                   metric_estimator(cfg.estimator), cfg.dice_lambda, cfg.first_order)


def trust_region_problem(
    policy: nn.Module, params: Params, rollouts: MetaRollouts, cfg: MAMLConfig
) -> TrustRegionProblem:
    """The meta-objective at θ_old = `params` as TRPO needs it: fused products for the built-in MLPs, else autograd
    (`meta_objective` with `kl_curvature`, or double backward through the KL of the map the line search evaluates)."""
    lay = meta_products.supports(policy, params) if cfg.derivatives == "fused" else None
    if lay is not None and cfg.kl_hvp == "gauss-newton":
        curv = subsample_episodes(rollouts, cfg.curvature_subsample) if cfg.curvature_subsample > 1 else rollouts
        return meta_products.FusedMeta(
            lay, params, rollouts.adapted, rollouts.pre, rollouts.post, rollouts.old.mean, rollouts.old.log_std,
            rollouts.score_weight, cfg.step_sizes, cfg.estimator, cfg.dice_lambda, cfg.first_order,
            metric_estimator(cfg.estimator), curv.pre, curv.post)
    objective = lambda p: meta_objective(policy, p, rollouts, cfg)  # noqa: E731
    if cfg.kl_hvp == "gauss-newton":
        product: list[Callable[[Tensor], Tensor]] = []  # built at the first product (its graphs cost memory)

        def curvature(v: Tensor) -> Tensor:
            if not product:
                product.append(kl_curvature(policy, params, rollouts, cfg))
            return product[0](v)

        return ObjectiveProblem(objective, params, curvature)
    # double backward through the KL of the map θ ↦ θ′ the line search measures (metric_estimator)
    metric = replace(cfg, estimator=metric_estimator(cfg.estimator), dice_lambda=1.0)
    return _KLFrom(objective, lambda p: meta_objective(policy, p, rollouts, metric)[1], params)


def joint_problem(policy: nn.Module, params: Params, data: TaskData, old: PolicyOutput,
                  objective: Callable[[Params], tuple[Tensor, Tensor]]) -> TrustRegionProblem:
    """TRPO on the plain (no adaptation) mean surrogate of a batch [T, E, H, ...] at θ_old = `params`, the
    pretrained and oracle baselines' joint training: MAML's problem with no inner steps, by the fused products for
    the built-in MLPs, else autograd on `objective` (params -> (surrogate, KL))."""
    lay = meta_products.supports(policy, params)
    if lay is None or old.log_std is None:
        return ObjectiveProblem(objective, params)
    zeros = torch.zeros(data.mask.shape[0], dtype=data.adv.dtype, device=data.adv.device)
    return meta_products.FusedMeta(lay, params, (), (), data, old.mean, old.log_std, zeros, (), "naive", 1.0, True,
                                   "naive", (), data)


class _KLFrom(ObjectiveProblem):
    """`ObjectiveProblem` whose curvature is double backward through a separately built KL."""

    def __init__(self, objective: Any, kl: Callable[[Params], Tensor], params: Params) -> None:
        super().__init__(objective, params)
        self._kl = kl

    def curvature(self, v: Tensor) -> Tensor:
        if self._hvp is None:
            theta = flatten(self.params).detach().requires_grad_(True)
            self._hvp = kl_hvp(self._kl(unflatten(theta, self.params)), theta, 0.0)
        return self._hvp(v)


def meta_gradient(policy: nn.Module, params: Params, rollouts: MetaRollouts, cfg: MAMLConfig) -> Params:
    """The meta-gradient ∇_θ J for a batch of tasks (ascent direction), one call for any family.

    Args:
        policy: the policy module (evaluated functionally).
        params: the meta-parameters θ (shared, not stacked).
        rollouts: from `collect` at θ.
        cfg: the estimator, step sizes and first_order flag are read from it.

    Returns:
        A dict like `params` with ∂J/∂θ.
    """
    if cfg.derivatives == "fused" and meta_products.supports(policy, params) is not None:
        return unflatten(trust_region_problem(policy, params, rollouts, cfg).value_and_gradient()[1], params)
    leaves = {k: v.detach().requires_grad_(True) for k, v in params.items()}
    surrogate, _ = meta_objective(policy, leaves, rollouts, cfg)
    grads = torch.autograd.grad(surrogate, list(leaves.values()))
    return dict(zip(leaves, grads, strict=True))


# ----------------------------------------------------------------------------------------------- training
def meta_update(
    policy: nn.Module,
    params: Params,
    rollouts: MetaRollouts,
    cfg: MAMLConfig,
    optimizer_state: dict[str, Any] | None,
) -> tuple[Params, dict[str, Any] | None, dict[str, float]]:
    """One outer step (TRPO, or Adam from `optimizer_state`); returns new params, optimiser state, outer/* metrics."""
    if cfg.outer == "trpo":
        result = trpo_step(trust_region_problem(policy, params, rollouts, cfg), params, cfg.trpo)
        return result.params, None, {
            "outer/surrogate_before": result.surrogate_before,
            "outer/surrogate_after": result.surrogate_after,
            "outer/kl": result.kl,
            "outer/kl_predicted": result.kl_predicted,
            "outer/step_fraction": result.step_fraction,
            "outer/grad_norm": result.grad_norm,
            "perf/gradient_s": result.gradient_s,
            "perf/cg_s": result.cg_s,
            "perf/line_search_s": result.line_search_s,
            "perf/line_search_evals": float(result.line_search_evals),
            # a NaN here would make the non-finite guard reject a step whose accepted candidate is finite
            **({"outer/kl_full_step": result.kl_full_step} if math.isfinite(result.kl_full_step) else {}),
        }
    grads = meta_gradient(policy, params, rollouts, cfg)
    new, state = adam_ascent(params, grads, cfg.outer_lr, optimizer_state)
    norm = float(torch.sqrt(sum(g.square().sum() for g in grads.values())))
    return new, state, {"outer/grad_norm": norm}


def rollout_metrics(rollouts: MetaRollouts) -> dict[str, float]:
    """meta/return_pre and meta/return_post_j: mean returns with θ and after each of the k adaptation steps."""
    return {
        "meta/return_pre": rollouts.returns[0],
        **{f"meta/return_post_{j}": r for j, r in enumerate(rollouts.returns[1:], start=1)},
    }


def train(
    cfg: MAMLConfig,
    logger: Logger | None = None,
    on_iteration: OnIteration | None = None,
    state: TrainState | None = None,
) -> TrainState:
    """Meta-train with `cfg` from `state` (default: a fresh start) to `cfg.run.iterations`; returns the final state.

    All randomness after the policy's initialisation comes from one generator whose state is part of `TrainState`,
    so continuing from a saved state reproduces an uninterrupted run exactly.
    """
    session = start(cfg, state)
    family, policy, sampler = session.family, session.policy, Sampler(session.family, session.backend)

    def collect_step(state: TrainState, generator: torch.Generator) -> tuple[MetaRollouts, dict[str, float], int]:
        tasks = family.sample_tasks(cfg.meta_batch_size, generator)
        value = for_run(cfg, family.obs_dim, tasks, state.extra.get("value"))
        rollouts = collect(sampler, policy, state.params, tasks, cfg, generator, value)
        steps = int(sum(d.mask.sum() for d in (*rollouts.pre, rollouts.post)))
        metrics = rollout_metrics(rollouts)
        if value is not None:
            metrics |= keep_in_state(value, state.extra)
        return rollouts, metrics, steps

    def update_step(state: TrainState, rollouts: MetaRollouts) -> tuple[Params, Any, dict[str, float]]:
        return meta_update(policy, state.params, rollouts, cfg, state.optimizer_state)

    return iterate(cfg, session, collect_step, update_step, logger, on_iteration)
