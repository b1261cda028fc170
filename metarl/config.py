"""Config pieces shared by the algorithms: the policy and the run (seed, budget, output directory).

Every config is a frozen dataclass whose field docstrings are the CLI help (tyro). Invariants are checked in
`__post_init__` with messages that say how to fix them; `check_finite` refuses NaN/Inf in any float field of any
config (the algorithms' `> 0` checks let +inf through), and `config_from_dict` checks every value's type against the
field's annotation before anything is built (a config.json edited by hand: issue 12).
"""

from __future__ import annotations

import dataclasses
import math
import types
import typing
from dataclasses import dataclass, field, replace
from typing import Any, Literal

import torch
from torch import nn

from metarl.family import TaskFamily
from metarl.policies import DeterministicMLP, GaussianMLP, glorot_init_
from metarl.sim import BackendError, check_device_name, resolve_backend


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
        if not (math.isfinite(self.init_std) and self.init_std > 0):
            raise ValueError(f"policy.init_std must be finite and > 0, got {self.init_std}")
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
    cores busy: metarl/threads.py), N fixes it; the rollouts always use one (the simulator's threads need the cores).
    The count can change the update's float rounding: runs that must repeat bit for bit need a fixed N"""
    backend: Literal["auto", "cpu", "warp"] = "auto"
    """simulator: cpu (mujoco.batch), warp (MJWarp, float32: pip install 'metarl[gpu]'), or auto (warp on CUDA when a
    GPU is visible and the extra installed, else cpu); docs/gpu.md"""
    device: str = "auto"
    """where the simulation, rollouts and policy live: cpu, cuda, cuda:N, or auto (cuda with the warp backend when a
    GPU is visible, else cpu)"""

    def __post_init__(self) -> None:
        if not SEED_RANGE[0] <= self.seed <= SEED_RANGE[1]:
            raise ValueError(f"run.seed must be in [{SEED_RANGE[0]}, {SEED_RANGE[1]}] (torch's 64-bit seeds), got "
                             f"{self.seed}")
        for key, value in self.family_kwargs.items():
            if not _finite_number(value):
                raise ValueError(f"run.family_kwargs {key} must be a finite number, got {value!r}")
        if self.iterations < 0:
            raise ValueError(f"run.iterations must be >= 0, got {self.iterations}")
        if self.checkpoint_every < 1:
            raise ValueError(f"run.checkpoint_every must be >= 1, got {self.checkpoint_every}")
        if self.threads < 0:
            raise ValueError(f"run.threads must be >= 0 (0: automatic), got {self.threads}")
        check_device_name(self.device)  # a ValueError, as every check here
        if self.validate_every < 0 or self.validation_tasks < 1:
            raise ValueError(f"run.validate_every must be >= 0 and run.validation_tasks >= 1, got "
                             f"{self.validate_every}, {self.validation_tasks}")


def run_backend(run: RunConfig) -> str:
    """The backend string (`metarl.sim`: "cpu", "warp", "warp:cuda:0") for `run.backend` and `run.device` on this
    machine; `ConfigError` (one line naming what to install or pass) when it cannot run here."""
    try:
        return resolve_backend(run.backend, run.device)
    except BackendError as err:
        raise ConfigError(str(err)) from None


def _finite_number(value: Any) -> bool:
    """An int or float (not a bool) that is finite as a float."""
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        return False
    try:
        return math.isfinite(value)
    except OverflowError:  # an int beyond float range
        return False


SEED_RANGE = (-(2**63), 2**64 - 1)
"""What `torch.Generator.manual_seed` accepts."""


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


class ConfigError(ValueError):
    """A config value of the wrong type, out of range or not finite: one line, exit 2."""


def config_from_dict(config_type: type, data: Any, prefix: str = "") -> Any:
    """Rebuild a (nested) frozen config dataclass from `config_to_dict` output, strictly: every value must have its
    field's type (an int is not a float's `12.5`, `true` is not an int, a Literal is one of its values), unknown keys
    are refused, and the result passes the dataclasses' own checks and `check_finite`. Raises `ConfigError` naming
    the field."""
    if not isinstance(data, dict):
        raise ConfigError(f"{prefix.rstrip('.') or 'config'} must be a JSON object, got {_show(data)}")
    fields = {f.name: f for f in dataclasses.fields(config_type)}
    unknown = sorted(set(data) - set(fields))
    if unknown:
        raise ConfigError(f"unknown {config_type.__name__} fields {[prefix + k for k in unknown]} (a typo, or a "
                          "config from another metarl version?)")
    hints = typing.get_type_hints(config_type)
    kwargs = {name: _typed(data[name], hints[name], prefix + name) for name in fields if name in data}
    try:
        cfg = config_type(**kwargs)
    except (TypeError, ValueError) as err:
        raise ConfigError(str(err)) from None
    if not prefix:
        check_finite(cfg)
    return cfg


def _typed(value: Any, hint: Any, name: str) -> Any:
    """`value` as the annotation `hint` wants it (lists -> tuples, ints -> floats), or `ConfigError`."""
    origin, args = typing.get_origin(hint), typing.get_args(hint)
    if dataclasses.is_dataclass(hint):
        return config_from_dict(hint, value, f"{name}.")  # type: ignore[arg-type]
    if origin is Literal:
        if any(value == a and type(value) is type(a) for a in args):
            return value
        raise ConfigError(f"{name} must be one of {', '.join(map(repr, args))}, got {_show(value)}")
    if origin in (typing.Union, types.UnionType):
        for arg in args:
            try:
                return _typed(value, arg, name)
            except ConfigError:
                continue
        raise ConfigError(f"{name} must be {' or '.join(_describe(a) for a in args)}, got {_show(value)}")
    if origin is tuple:
        if not isinstance(value, (list, tuple)):
            raise ConfigError(f"{name} must be a list, got {_show(value)}")
        return tuple(_typed(v, args[0], f"{name}[{i}]") for i, v in enumerate(value))
    if origin is dict:
        if not isinstance(value, dict):
            raise ConfigError(f"{name} must be a JSON object (e.g. {{\"high\": 3.0}}), got {_show(value)}")
        return {k: _typed(v, args[1], f"{name}.{k}") for k, v in value.items()}
    if hint is type(None) and value is None:
        return None
    if hint is bool and isinstance(value, bool):
        return value
    if hint is int and isinstance(value, int) and not isinstance(value, bool):
        return value
    if hint is float and isinstance(value, (int, float)) and not isinstance(value, bool):
        try:
            return float(value)
        except OverflowError:  # an integer beyond float range
            raise ConfigError(f"{name} must be a finite number, got {_show(value)}") from None
    if hint is str and isinstance(value, str):
        return value
    if hint in (bool, int, float, str, type(None)):
        raise ConfigError(f"{name} must be {_describe(hint)}, got {_show(value)}")
    return value  # an annotation this reader does not know: the dataclass's own checks decide


def _describe(hint: Any) -> str:
    return {bool: "true or false", int: "an integer", float: "a number", str: "a string",
            type(None): "null"}.get(hint, str(hint))


def _show(value: Any) -> str:
    text = repr(value)
    return text if len(text) <= 60 else f"{text[:57]}..."


def check_finite(cfg: Any, prefix: str = "") -> None:
    """Raise `ConfigError` for a NaN or ±Inf anywhere in the (nested) config: float fields, tuples of floats and
    family kwargs. Range checks stay in each dataclass's `__post_init__`; this covers every float at once."""
    for f in dataclasses.fields(cfg):
        value, name = getattr(cfg, f.name), prefix + f.name
        if dataclasses.is_dataclass(value):
            check_finite(value, f"{name}.")
            continue
        values = value.values() if isinstance(value, dict) else value if isinstance(value, tuple) else (value,)
        for v in values:
            if isinstance(v, float) and not math.isfinite(v):
                raise ConfigError(f"{name} must be finite, got {value}")
