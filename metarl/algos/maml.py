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

This module is the algorithm's public face (`ALGORITHMS` row, `train`) and re-exports its parts, one module per
concept: `maml_config` (MAMLConfig), `maml_inner` (the inner loop and test-time adaptation), `maml_rollouts`
(sampling what a meta-update consumes), `maml_objective` (the meta-objective, TRPO's problem, the outer step) and
`maml_presets`.
"""

from __future__ import annotations

from typing import Any

import torch

from metarl.algos.maml_config import FOMAML, MAMLConfig
from metarl.algos.maml_inner import (
    adapt,
    adaptation_returns,
    adapted_values,
    default_eval_step_sizes,
    inner_step,
    per_task,
    prepare_batch,
)
from metarl.algos.maml_objective import (
    joint_problem,
    kl_curvature,
    meta_gradient,
    meta_objective,
    meta_update,
    trust_region_problem,
)
from metarl.algos.maml_presets import PRESETS
from metarl.algos.maml_rollouts import (
    MetaRollouts,
    collect,
    index_rollouts,
    rollout_metrics,
    subsample_episodes,
    warm_value_baseline,
)
from metarl.logger import Logger
from metarl.policies import Params
from metarl.sampler import Sampler
from metarl.training import OnIteration, TrainState, iterate, start
from metarl.value_baseline import for_run, keep_in_state

__all__ = [
    "FOMAML", "PRESETS", "MAMLConfig", "MetaRollouts", "adapt", "adaptation_returns", "adapted_values", "collect",
    "default_eval_step_sizes", "index_rollouts", "inner_step", "joint_problem", "kl_curvature", "meta_gradient",
    "meta_objective", "meta_update", "per_task", "prepare_batch", "rollout_metrics", "subsample_episodes", "train",
    "trust_region_problem", "warm_value_baseline",
]


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
