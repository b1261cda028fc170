"""Config pieces shared by the algorithms: the policy and the run (seed, budget, output directory).

Every config is a frozen dataclass whose field docstrings are the CLI help (tyro). Invariants are checked in
`__post_init__` with messages that say how to fix them.
"""

from __future__ import annotations

from dataclasses import dataclass, field, replace
from typing import Any, Literal

import torch
from torch import nn

from metarl.family import TaskFamily
from metarl.policies import DeterministicMLP, GaussianMLP, glorot_init_


@dataclass(frozen=True)
class PolicyConfig:
    """The policy network."""

    hidden: tuple[int, ...] = (100, 100)
    """hidden layer widths (MAML: 100 100; pytorch-maml-rl: 64 64)"""
    activation: Literal["relu", "tanh"] = "relu"
    """nonlinearity between hidden layers"""
    init_std: float = 1.0
    """initial standard deviation of the Gaussian policy"""
    init: Literal["torch", "glorot"] = "torch"
    """weight initialisation: torch's nn.Linear default, or Glorot-uniform weights and zero biases (rllab's, so the
    MAML paper's, and pytorch-maml-rl's)"""
    deterministic: bool = False
    """a deterministic tanh policy (ES-MAML) instead of a Gaussian"""

    def __post_init__(self) -> None:
        if any(h < 1 for h in self.hidden):
            raise ValueError(f"policy.hidden sizes must be >= 1, got {self.hidden}")
        if self.init_std <= 0:
            raise ValueError(f"policy.init_std must be > 0, got {self.init_std}")
        if self.init not in ("torch", "glorot"):
            raise ValueError(f"policy.init must be 'torch' or 'glorot', got {self.init!r}")

    def build(self, family: TaskFamily) -> nn.Module:
        """A fresh policy for `family` (initialised from torch's global RNG: seed it around this call)."""
        if self.deterministic:
            scale = float(family.action_high.abs().max()) if family.action_high.isfinite().all() else 1.0
            module: nn.Module = DeterministicMLP(family.obs_dim, family.act_dim, self.hidden, self.activation, scale)
        else:
            module = GaussianMLP(family.obs_dim, family.act_dim, self.hidden, self.activation, self.init_std)
        if self.init == "glorot":
            glorot_init_(module)
        return module


@dataclass(frozen=True)
class RunConfig:
    """Where and how long a run goes."""

    seed: int = 0
    """random seed (policy initialisation, tasks, rollouts)"""
    iterations: int = 500
    """meta-iterations"""
    runs_dir: str = "runs"
    """parent directory of run directories"""
    checkpoint_every: int = 25
    """write a checkpoint every this many iterations (and at the end)"""
    validate_every: int = 10
    """every this many iterations measure the post-adaptation return on `validation_tasks` held-out tasks
    (val/return_post) and keep the best parameters in best.pt; 0: never"""
    validation_tasks: int = 10
    """tasks in the validation set (fixed, from their own seed stream: independent of training's and eval's)"""
    tensorboard: bool = True
    """also write TensorBoard event files"""
    family_kwargs: dict[str, float] = field(default_factory=dict)
    """overrides of the family's registered kwargs, e.g. high 3.0 horizon 100"""
    threads: int = 0
    """torch threads for the update: 0 follows the machine (every usable core, fewer while other processes keep
    cores busy: metarl/threads.py), N fixes it; the rollouts always use one (the simulator's threads need the cores)"""

    def __post_init__(self) -> None:
        if self.iterations < 0:
            raise ValueError(f"run.iterations must be >= 0, got {self.iterations}")
        if self.checkpoint_every < 1:
            raise ValueError(f"run.checkpoint_every must be >= 1, got {self.checkpoint_every}")
        if self.threads < 0:
            raise ValueError(f"run.threads must be >= 0 (0: automatic), got {self.threads}")
        if self.validate_every < 0 or self.validation_tasks < 1:
            raise ValueError(f"run.validate_every must be >= 0 and run.validation_tasks >= 1, got "
                             f"{self.validate_every}, {self.validation_tasks}")


def build_policy(cfg: PolicyConfig, family: TaskFamily, seed: int) -> nn.Module:
    """The policy, initialised from `seed` without touching the global RNG state."""
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        return cfg.build(family)


def apply_overrides(cfg: Any, overrides: dict[str, Any]) -> Any:
    """`cfg` with dotted-key overrides applied, e.g. {"trpo.max_kl": 0.02, "run.iterations": 10} (presets)."""
    nested: dict[str, dict[str, Any]] = {}
    flat: dict[str, Any] = {}
    for key, value in overrides.items():
        head, _, rest = key.partition(".")
        if rest:
            nested.setdefault(head, {})[rest] = value
        else:
            flat[key] = value
    for head, sub in nested.items():
        flat[head] = apply_overrides(getattr(cfg, head), sub)
    return replace(cfg, **flat)


def config_from_dict(config_type: type, data: dict[str, Any]) -> Any:
    """Rebuild a (nested) frozen config dataclass from `config_to_dict` output (lists become tuples)."""
    import dataclasses
    import typing

    hints = typing.get_type_hints(config_type)
    kwargs: dict[str, Any] = {}
    for f in dataclasses.fields(config_type):
        if f.name not in data:
            continue
        value, hint = data[f.name], hints[f.name]
        if dataclasses.is_dataclass(hint):
            value = config_from_dict(hint, value)  # type: ignore[arg-type]
        elif isinstance(value, list):
            value = tuple(value)
        kwargs[f.name] = value
    unknown = set(data) - {f.name for f in dataclasses.fields(config_type)}
    if unknown:
        raise ValueError(f"unknown {config_type.__name__} fields {sorted(unknown)} (config from another version?)")
    return config_type(**kwargs)
