"""A learned state-value baseline fitted on *earlier* batches only: unbiased at every order, lower variance.

Issue 16 measured that a better state baseline than the per-task linear fit cuts the variance of DiCE's second-order
terms (`scripts/probe_value_baselines.py`: an MLP value 0.31–0.57× the cross-fitted linear baseline's), and that
fitting an MLP on each batch itself, cross-fitted so that it stays unbiased, costs ten PointNav iterations. This
baseline takes TMAML's route instead (Liu, Socher & Xiong 2019, "Taming MAML", ICML: control variates learned across
tasks): one network V(s, t, task, stage) shared by all tasks, warm-started from iteration to iteration. Each batch's
values are predicted *before* the network sees that batch, so they are constants with respect to its actions: every
order of a score-function estimator stays unbiased (the baseline enters Loaded-DiCE in the all-orders form of Mao et
al. 2019), and the fit costs a few passes of a small network over data that is already there.

Inputs per step: the observation, t/H, the task's parameters (a critic may use what the policy must not see: the
baseline changes no expectation) and a one-hot of the adaptation stage (θ_0 … θ_k: the adapted policies earn more).
Inputs and targets (discounted returns) are standardised by running statistics of everything fitted so far.
"""

from __future__ import annotations

import copy
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import torch
from torch import Tensor, nn

from metarl.family import num_tasks
from metarl.returns import discounted_returns

if TYPE_CHECKING:
    from metarl.sampler import Batch


@dataclass(frozen=True)
class ValueConfig:
    """The learned value baseline (`--baseline value`)."""

    hidden: tuple[int, ...] = (64, 64)
    """hidden layer widths of V (tanh)"""
    lr: float = 1e-3
    """Adam step size of the value fit"""
    epochs: int = 2
    """passes over each iteration's valid steps (all stages) after the iteration has used its predictions"""
    minibatch: int = 4096
    """steps per Adam step"""
    max_rows: int = 100_000
    """valid steps one fit uses at most, a random subset beyond that (the fit's cost stays bounded: PointNav's
    iteration has 80,000, the MAML paper's locomotion batches 320,000)"""

    def __post_init__(self) -> None:
        if not self.hidden or any(h < 1 for h in self.hidden):
            raise ValueError(f"value.hidden needs at least one layer, all sizes >= 1, got {self.hidden}")
        if not self.lr > 0:
            raise ValueError(f"value.lr must be > 0, got {self.lr}")
        if min(self.epochs, self.minibatch, self.max_rows) < 1:
            raise ValueError("value.epochs, value.minibatch and value.max_rows must be >= 1, got "
                             f"{self.epochs}, {self.minibatch}, {self.max_rows}")


def task_features(tasks: Any, T: int) -> Tensor:
    """A family's task tuple (NamedTuple of tensors with leading dim T) as [T, k] float32 features."""
    fields = [torch.as_tensor(f).reshape(T, -1).to(torch.float32) for f in tasks]
    return torch.cat(fields, -1) if fields else torch.zeros(T, 0)


def step_features(obs: Tensor, tasks: Tensor, stage: int, stages: int) -> Tensor:
    """Inputs of V for every step of a batch.

    Args:
        obs: [T, E, H, obs_dim] observations.
        tasks: [T, k] `task_features`.
        stage: adaptation stage j of the batch (0: sampled with θ; k: the post-update batch).
        stages: number of stages k + 1.

    Returns:
        [T, E, H, obs_dim + 1 + k_task + stages] float32 (raw: standardised by `ValueBaseline`).
    """
    T, E, H = obs.shape[:3]
    t = (torch.arange(H, dtype=torch.float32, device=obs.device) / H).view(1, 1, H, 1).expand(T, E, H, 1)
    task = tasks.to(obs.device).view(T, 1, 1, -1).expand(T, E, H, tasks.shape[-1])
    one_hot = torch.zeros(T, E, H, stages, dtype=torch.float32, device=obs.device)
    one_hot[..., stage] = 1.0
    return torch.cat([obs.to(torch.float32), t, task, one_hot], -1)


class RunningMoments:
    """Count, mean and M2 of a stream of row vectors, merged batch by batch (Chan et al.'s parallel update)."""

    def __init__(self, dim: int) -> None:
        self.count = torch.zeros((), dtype=torch.float64)
        self.mean = torch.zeros(dim, dtype=torch.float64)
        self.m2 = torch.zeros(dim, dtype=torch.float64)

    def update(self, x: Tensor) -> None:
        """x: [N, dim]."""
        x = x.to(torch.float64)
        n = x.shape[0]
        if n == 0:
            return
        mean = x.mean(0)
        m2 = (x - mean).square().sum(0)
        total = self.count + n
        delta = mean - self.mean
        self.mean = self.mean + delta * (n / total)
        self.m2 = self.m2 + m2 + delta.square() * (self.count * n / total)
        self.count = total

    def std(self) -> Tensor:
        """Standard deviation per column (1 where there is no spread yet, so constant inputs pass unchanged)."""
        var = self.m2 / self.count.clamp_min(1.0)
        return torch.where(var > 1e-12, var.sqrt(), torch.ones_like(var))

    def state_dict(self) -> dict[str, Tensor]:
        return {"count": self.count.clone(), "mean": self.mean.clone(), "m2": self.m2.clone()}

    def load_state_dict(self, state: Mapping[str, Tensor]) -> None:
        self.count, self.mean, self.m2 = (state[k].clone().to(torch.float64) for k in ("count", "mean", "m2"))


class ValueBaseline:
    """V(s, t, task, stage), fitted by Adam on the discounted returns of the batches it has already predicted.

    Use: `predict` a batch's values (before `fit` has seen it), compute its advantages, then `fit` on it. Its whole
    state (network, Adam moments, running statistics, the generator that shuffles minibatches) is `state_dict()`,
    kept in the run's `TrainState.extra`, so a resumed run continues exactly.
    """

    def __init__(self, cfg: ValueConfig, obs_dim: int, task_dim: int, stages: int, seed: int) -> None:
        self.cfg, self.stages = cfg, stages
        dim = inputs = obs_dim + 1 + task_dim + stages
        torch_state = torch.random.get_rng_state()
        torch.manual_seed(seed)  # the network's initialisation depends on the seed only
        layers: list[nn.Module] = []
        for width in cfg.hidden:
            layers += [nn.Linear(dim, width), nn.Tanh()]
            dim = width
        layers.append(nn.Linear(dim, 1))
        self.net = nn.Sequential(*layers)
        torch.random.set_rng_state(torch_state)
        with torch.no_grad():  # start at the running mean of the returns: values 0 in standardised units
            self.net[-1].weight.zero_()
            self.net[-1].bias.zero_()
        self.optimizer = torch.optim.Adam(self.net.parameters(), lr=cfg.lr)
        self.inputs = RunningMoments(inputs)
        self.targets = RunningMoments(1)
        self.generator = torch.Generator().manual_seed(seed)
        self.last_loss = float("nan")
        """the last `fit`'s final-pass mean squared error (standardised units)"""
        self.last_fit_s = 0.0
        """the last `fit`'s wall time (`perf/value_s`: part of the sampling phase's time)"""

    @property
    def fitted(self) -> bool:
        return bool(self.targets.count > 0)

    def _standardize(self, x: Tensor) -> Tensor:
        mean, std = self.inputs.mean.to(x), self.inputs.std().to(x)
        return ((x - mean) / std).clamp(-10.0, 10.0)

    def predict(self, obs: Tensor, tasks: Any, mask: Tensor, stage: int) -> Tensor:
        """Values [T, E, H] float64 on the mask's device, zero at masked steps; all zero before the first fit (no
        baseline yet).

        Args:
            obs: [T, E, H, obs_dim]; mask: [T, E, H]; tasks: the family's task tuple for the T rows.
            stage: adaptation stage of the batch (0 … stages − 1).
        """
        self._check_stage(stage)
        T = obs.shape[0]
        if not self.fitted:
            return torch.zeros(mask.shape, dtype=torch.float64, device=mask.device)
        x = step_features(obs.cpu(), task_features(tasks, T).cpu(), stage, self.stages)
        with torch.no_grad():
            out = self.net(self._standardize(x)).squeeze(-1).to(torch.float64)
        values = out * self.targets.std()[0] + self.targets.mean[0]
        return values.to(mask.device) * mask.to(values.dtype)

    def fit(self, batches: Sequence[tuple[Tensor, Any, Tensor, Tensor, int]]) -> float:
        """Regress V on the discounted returns of `batches` [(obs, tasks, returns, mask, stage), …]: update the
        running statistics, then `cfg.epochs` shuffled passes of Adam over their valid steps (at most
        `cfg.max_rows` of them, drawn at random). Returns the last pass's mean squared error in standardised units (a
        diagnostic: `value/loss`)."""
        clock = time.perf_counter()
        xs, ys = [], []
        for obs, tasks, returns, mask, stage in batches:
            self._check_stage(stage)
            valid = mask.cpu() > 0
            x = step_features(obs.cpu(), task_features(tasks, obs.shape[0]).cpu(), stage, self.stages)
            xs.append(x[valid])
            ys.append(returns.cpu().to(torch.float64)[valid])
        x, y = torch.cat(xs), torch.cat(ys)[:, None]
        if x.shape[0] == 0:
            return float("nan")
        if x.shape[0] > self.cfg.max_rows:
            keep = torch.randperm(x.shape[0], generator=self.generator)[:self.cfg.max_rows]
            x, y = x[keep], y[keep]
        self.inputs.update(x)
        self.targets.update(y)
        x = self._standardize(x)
        y = ((y - self.targets.mean) / self.targets.std()).to(torch.float32)
        loss = torch.zeros(())
        for _ in range(self.cfg.epochs):
            order = torch.randperm(x.shape[0], generator=self.generator)
            total = torch.zeros(())
            for start in range(0, x.shape[0], self.cfg.minibatch):
                rows = order[start:start + self.cfg.minibatch]
                self.optimizer.zero_grad()
                mse = (self.net(x[rows]) - y[rows]).square().mean()
                mse.backward()
                self.optimizer.step()
                total = total + mse.detach() * rows.shape[0]
            loss = total / x.shape[0]
        self.last_loss = float(loss)
        self.last_fit_s = time.perf_counter() - clock
        return self.last_loss

    def _check_stage(self, stage: int) -> None:
        if not 0 <= stage < self.stages:
            raise ValueError(f"stage must be in [0, {self.stages}), got {stage}")

    def state_dict(self) -> dict[str, Any]:
        """A copy (Adam's own state_dict refers to its live moment tensors)."""
        return {
            "net": {k: v.clone() for k, v in self.net.state_dict().items()},
            "optimizer": copy.deepcopy(self.optimizer.state_dict()),
            "inputs": self.inputs.state_dict(),
            "targets": self.targets.state_dict(),
            "generator": self.generator.get_state(),
        }

    def load_state_dict(self, state: Mapping[str, Any]) -> None:
        self.net.load_state_dict(state["net"])
        self.optimizer.load_state_dict(state["optimizer"])
        self.inputs.load_state_dict(state["inputs"])
        self.targets.load_state_dict(state["targets"])
        self.generator.set_state(state["generator"])


# ----------------------------------------------------------------------------------------------- in a training run
def for_run(cfg: Any, obs_dim: int, tasks: Any, state: Mapping[str, Any] | None) -> ValueBaseline | None:
    """The learned baseline of a MAML config (`baseline`, `value`, `inner_steps`, `run.seed`) with baseline=value,
    None otherwise; restored from `state` (`TrainState.extra["value"]`) when given. One stage per inner step and one
    for the post-update batch."""
    if cfg.baseline != "value":
        return None
    task_dim = task_features(tasks, num_tasks(tasks)).shape[-1]
    value = ValueBaseline(cfg.value, obs_dim, task_dim, cfg.inner_steps + 1, cfg.run.seed)
    if state is not None:
        value.load_state_dict(state)
    return value


def stage_values(value: ValueBaseline | None, batch: Batch, tasks: Any, stage: int) -> Tensor | None:
    """The learned baseline's values for a batch of adaptation stage `stage` (None without one)."""
    return None if value is None else value.predict(batch.obs, tasks, batch.mask, stage)


def fit_stages(value: ValueBaseline, batches: Sequence[Batch], tasks: Any, gamma: float) -> None:
    """Fit on an iteration's batches, batch j being stage j, once all of them have been predicted."""
    value.fit([(b.obs, tasks, discounted_returns(b.rew, b.mask, gamma), b.mask, j) for j, b in enumerate(batches)])


def keep_in_state(value: ValueBaseline, extra: dict[str, Any]) -> dict[str, float]:
    """Store the fitted baseline in the run state's `extra` (`iterate` carries it on, checkpoints copy it) and return
    its metrics (`value/loss`, `perf/value_s`)."""
    extra["value"] = value.state_dict()
    return {"value/loss": value.last_loss, "perf/value_s": value.last_fit_s}
