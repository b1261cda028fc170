"""MAML's configuration (`metarl train maml`): batch, inner loop, estimator, baseline and outer optimiser."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Literal

from metarl.config import PolicyConfig, RunConfig
from metarl.estimators import ESTIMATORS
from metarl.trpo import TRPOConfig
from metarl.value_baseline import ValueConfig


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
