"""Meta-learning algorithms: one small module each, listed in `ALGORITHMS` (the CLI's `metarl train <name>`).

Adding an algorithm means one module with a frozen config dataclass and `train(cfg, logger, on_iteration, state)`,
one row here, one docs page and one CLI smoke test.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from torch import nn

from metarl.algos import es_maml, maml, reptile
from metarl.config import build_policy
from metarl.family import TaskFamily


@dataclass(frozen=True)
class Algorithm:
    """A row of the algorithm table."""

    config_type: type
    train: Callable[..., Any]
    presets: dict[str, dict[str, Any]]
    adaptation_returns: Callable[..., Any] | None = None
    """test-time adaptation for `metarl eval`: (cfg, sampler, policy, params, tasks, step_sizes, episodes,
    generator, extra) -> undiscounted returns [k+1, T, E] before and after each of k = len(step_sizes) steps;
    `extra` is the run's `TrainState.extra` (MAML's learned value baseline), None for a bare policy"""
    eval_step_sizes: Callable[[Any, int], tuple[float, ...]] | None = None
    """(cfg, k) -> the k test-time step sizes this algorithm adapts with by default"""
    defaults: dict[str, Any] = field(default_factory=dict)
    """config overrides that define this algorithm on top of `config_type` (FOMAML = MAML + first_order)"""
    summary: str = ""
    selection: str = "val/return_post"
    """the validation metric whose maximum `best.pt` holds: the return after adaptation for meta-learners; before it
    for policies trained to act without adapting (the pretrained and oracle baselines: the oracle's step-0 return is
    the ceiling the papers report, and its adaptation steps only add noise to it)"""

    def build_policy(self, cfg: Any, family: TaskFamily) -> nn.Module:
        return build_policy(cfg.policy, family, cfg.run.seed)


ALGORITHMS: dict[str, Algorithm] = {
    "maml": Algorithm(maml.MAMLConfig, maml.train, maml.PRESETS, maml.adaptation_returns,
                      maml.default_eval_step_sizes,
                      summary="second-order MAML (LVC by default; unbiased: --estimator dice), TRPO or Adam"),
    "fomaml": Algorithm(maml.MAMLConfig, maml.train, maml.PRESETS, maml.adaptation_returns,
                        maml.default_eval_step_sizes, defaults=maml.FOMAML,
                        summary="first-order MAML: MAML with the inner gradients detached"),
    "reptile": Algorithm(reptile.ReptileConfig, reptile.train, reptile.PRESETS, reptile.adaptation_returns,
                         reptile.eval_step_sizes,
                         summary="Reptile: k batched policy-gradient steps per task (SGD or Adam), θ += ε·mean(φ − θ)"),
    "es-maml": Algorithm(es_maml.ESMAMLConfig, es_maml.train, es_maml.PRESETS, es_maml.adaptation_returns,
                         es_maml.eval_step_sizes,
                         summary="ES-MAML: Hessian-free antithetic ES on the adapt-then-evaluate return"),
}
