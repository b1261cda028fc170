"""What one meta-update consumes: the k inner batches and the post-update batch of T tasks, sampled with the policies
adapted in between (`collect`), with the views the updates take of them (a subset of tasks, every n-th episode)."""

from __future__ import annotations

from typing import Any, NamedTuple

import torch
from torch import Tensor, nn

from metarl.algos.maml_config import MAMLConfig
from metarl.algos.maml_inner import adapted_values, prepare_batch
from metarl.estimators import TaskData
from metarl.policies import Params, PolicyOutput, forward
from metarl.sampler import Batch, SamplerProtocol
from metarl.value_baseline import ValueBaseline, fit_stages, for_run, stage_values


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


def rollout_metrics(rollouts: MetaRollouts) -> dict[str, float]:
    """meta/return_pre and meta/return_post_j: mean returns with θ and after each of the k adaptation steps."""
    return {
        "meta/return_pre": rollouts.returns[0],
        **{f"meta/return_post_{j}": r for j, r in enumerate(rollouts.returns[1:], start=1)},
    }
