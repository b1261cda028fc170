"""Task families: tasks are data, environments are batched.

A family defines a typed ``Tasks`` NamedTuple of tensors with a leading task dim (e.g. ``VelTasks(goal_vel [T])``),
draws tasks with an explicit generator, and builds batched environments whose `reset`/`step` take the tasks as
arguments. There is no ``set_task`` and no mutable task state: reward-side parameters (goal velocity) are read in
`step`, physics-side ones (gravity tilt, masses) are written into the simulator at `reset`.

To add a family: subclass `TaskFamily` (pure torch dynamics, like PointNav) or `MujocoFamily` (an MJCF model stepped
by a batched simulator), then `metarl.register(FamilySpec(...))`. README.md has a complete example; docs/families.md
lists what a `MujocoFamily` subclass may override, with shapes.
"""

from __future__ import annotations

import math
from abc import ABC, abstractmethod
from pathlib import Path
from typing import Any, ClassVar, NamedTuple, Protocol, TypeVar

import mujoco
import torch
from torch import Tensor

from metarl.camera import Camera
from metarl.registry import FamilySpec
from metarl.sim import Simulator, make_simulator

TasksT = TypeVar("TasksT", bound=tuple)


class StepResult(NamedTuple):
    """What a batched env returns per step, N = number of envs.

    Attributes:
        obs: float64 [N, obs_dim], the observation after the step.
        reward: float64 [N].
        terminated: bool [N], the episode ended by the MDP (e.g. the Ant fell); the horizon is handled by the sampler.
        info: named float64 [N] diagnostics: the reward's terms and, for families with a forward axis
            (`MujocoFamily.reports_x_velocity`), ``x_velocity``.
    """

    obs: Tensor
    reward: Tensor
    terminated: Tensor
    info: dict[str, Tensor]


class VecEnv(Protocol):
    """N environments of one family, stepped together. Tasks are per env: every field has leading dim N."""

    num_envs: int

    def reset(self, tasks: Any, generator: torch.Generator, ids: Tensor | None = None) -> Tensor:
        """Start new episodes (all envs, or the int64 `ids`); returns obs float64 [N, obs_dim]."""
        ...

    def step(self, tasks: Any, action: Tensor, ids: Tensor | None = None) -> StepResult:
        """Apply float64 [N, act_dim] actions (already within the action bounds); step only `ids` if given."""
        ...


# ----------------------------------------------------------------------------------------------- Tasks helpers
def num_tasks(tasks: tuple) -> int:
    """T, the leading dim shared by all fields of a Tasks NamedTuple."""
    return int(tasks[0].shape[0])


def index_tasks(tasks: TasksT, index: Tensor | slice | int) -> TasksT:
    """Select tasks along the leading dim (keeps the NamedTuple type)."""
    return type(tasks)(*(f[index] for f in tasks))


def tasks_to(tasks: TasksT, device: torch.device | str) -> TasksT:
    """The same tasks with every field on `device` (keeps the NamedTuple type)."""
    return type(tasks)(*(f.to(device) for f in tasks))


def repeat_tasks(tasks: TasksT, repeats: int) -> TasksT:
    """[T] -> [T * repeats], each task repeated `repeats` times in a row (task-major, as the sampler lays envs out)."""
    return type(tasks)(*(f.repeat_interleave(repeats, dim=0) for f in tasks))


def tasks_to_dict(tasks: tuple) -> dict[str, list]:
    """JSON-friendly view of a Tasks NamedTuple."""
    return {name: value.tolist() for name, value in tasks._asdict().items()}  # type: ignore[attr-defined]


def uniform(n: int, low: float, high: float, generator: torch.Generator) -> Tensor:
    """float64 [n] ~ U[low, high] from `generator`."""
    return low + (high - low) * torch.rand(n, generator=generator, dtype=torch.float64)


def random_sign(n: int, generator: torch.Generator) -> Tensor:
    """float64 [n] of ±1 with probability 1/2 each."""
    return torch.randint(0, 2, (n,), generator=generator).to(torch.float64) * 2.0 - 1.0


# ----------------------------------------------------------------------------------------------- families
class TaskFamily(ABC):
    """A distribution over tasks plus batched environments that take tasks as data.

    Subclasses set `Tasks` (a NamedTuple type), `obs_dim`, `act_dim`, `action_low`/`action_high` and implement
    `sample_tasks` and `make_env`. The constructor receives the registered `FamilySpec` plus its kwargs.
    """

    Tasks: ClassVar[type]
    obs_dim: int
    act_dim: int
    action_low: Tensor
    action_high: Tensor

    def __init__(self, spec: FamilySpec) -> None:
        self.spec = spec

    @property
    def id(self) -> str:
        return self.spec.id

    @property
    def horizon(self) -> int:
        return self.spec.horizon

    @abstractmethod
    def sample_tasks(self, n: int, generator: torch.Generator) -> Any:
        """Draw n tasks: a `Tasks` NamedTuple whose fields have leading dim n."""

    @abstractmethod
    def make_env(self, num_envs: int, backend: str = "cpu") -> VecEnv:
        """Build `num_envs` batched environments on `backend`."""

    def make_tasks(self, **fields: Any) -> Any:
        """Tasks from plain values, e.g. ``family.make_tasks(goal_vel=[0.5, 1.0])`` (float64 tensors, leading dim T).

        A scalar becomes one task; for vector-valued fields (PointNav's ``goal``) pass [T, d] or a single [d].
        """
        expected = set(self.Tasks._fields)  # type: ignore[attr-defined]
        if set(fields) != expected:
            raise TypeError(f"{self.id} tasks have fields {sorted(expected)}, got {sorted(fields)}")
        reference = self.sample_tasks(1, torch.Generator().manual_seed(0))
        values = {}
        for name, value in fields.items():
            tensor = torch.as_tensor(value, dtype=torch.float64)
            per_task = getattr(reference, name).shape[1:]
            if tensor.shape == per_task:
                tensor = tensor.unsqueeze(0)
            if tensor.shape[1:] != per_task:
                raise ValueError(f"{self.id} task field {name!r} must be [T, *{tuple(per_task)}], "
                                 f"got {tuple(tensor.shape)}")
            values[name] = tensor
        if len({v.shape[0] for v in values.values()}) != 1:
            sizes = {k: v.shape[0] for k, v in values.items()}
            raise ValueError(f"all task fields need the same leading dim T, got {sizes}")
        return self.Tasks(**values)

    def __repr__(self) -> str:
        return f"{type(self).__name__}({self.id}, horizon={self.horizon}, obs={self.obs_dim}, act={self.act_dim})"


def check_range(name: str, low: float, high: float) -> None:
    """Raise a clear error unless low <= high are finite (task-distribution bounds)."""
    if not (math.isfinite(low) and math.isfinite(high) and low <= high):
        raise ValueError(f"{name}: need finite low <= high, got [{low}, {high}]")


def check_rllab(rllab: object) -> bool:
    """The `rllab` family kwarg as a bool (command-line kwargs arrive as 0.0 / 1.0); anything else is an error."""
    if not isinstance(rllab, bool) and rllab not in (0, 1):
        raise ValueError(f"rllab must be true or false, got {rllab!r}")
    return bool(rllab)


class MujocoFamily(TaskFamily):
    """A family on an MJCF model, stepped by a batched `Simulator`.

    Subclasses set `xml` (a path), `frame_skip`, `obs_skip` (leading qpos entries hidden from the policy, e.g. the
    x position), `Tasks`, `sample_tasks`, and implement `reward_terms`. They may override `physics` (physics-side
    task parameters: model field name -> per-env values), `initial_state`, `observe` (then set `obs_dim` to match),
    `x_position`, `x_velocity`, `terminated`, `load_model`, and the class attributes `persistent`, `current`,
    `reports_x_velocity` and `camera`; docs/families.md has each one's shapes. Resets follow Gymnasium's v5 envs:
    qpos0 + U(-s, s), qvel0 + s·N(0, 1), s = `reset_noise_scale`.
    """

    xml: ClassVar[Path]
    frame_skip: int = 5
    """physics substeps per env step, the class default (Gymnasium's v5 walkers: 5); `frame_skip=` overrides it"""
    obs_skip: ClassVar[int] = 1
    persistent: ClassVar[bool] = False
    """Whether the family reads `sim.contact_forces()` or `sim.body_xpos()` (needs a persistent simulator: derived
    fields are kept per simulation between steps)."""
    current: ClassVar[bool] = False
    """Whether derived fields (`sim.body_xpos()`, `sim.sensordata()`) are computed at the new state after each step,
    as rllab's envs had them (`mj_forward` after `mj_step`; with `persistent`, at no cost and the same trajectory).
    Default: one substep behind, as `mj_step` and Gymnasium's v5 envs leave them."""
    reports_x_velocity: ClassVar[bool] = True
    """Whether `StepResult.info` carries ``x_velocity`` (the finite difference of `x_position`): True for walkers;
    False for a family without a forward axis (a reacher, a manipulator), whose info then holds the reward terms
    only. `reward_terms` receives it either way."""
    camera: ClassVar[Camera] = Camera()
    """How videos frame the robot (`metarl.camera.Camera`): by default following body 1 from the side; e.g.
    ``Camera(track="torso", distance=3.0)`` or a camera of the MJCF, ``Camera(name="side")``."""

    def __init__(self, spec: FamilySpec, reset_noise_scale: float = 0.1, frame_skip: int | None = None) -> None:
        super().__init__(spec)
        if reset_noise_scale < 0:
            raise ValueError(f"reset_noise_scale must be >= 0, got {reset_noise_scale}")
        if frame_skip is not None:  # family kwargs from the command line arrive as floats: 1.0 is 1
            if (isinstance(frame_skip, bool) or not isinstance(frame_skip, (int, float))
                    or not float(frame_skip).is_integer() or frame_skip < 1):
                raise ValueError(f"frame_skip must be an integer >= 1, got {frame_skip!r}")
            self.frame_skip = int(frame_skip)
        self.reset_noise_scale = reset_noise_scale
        self.model = self.load_model()
        self.act_dim = int(self.model.nu)
        ctrl_range = torch.as_tensor(self.model.actuator_ctrlrange, dtype=torch.float64)
        self.action_low, self.action_high = ctrl_range[:, 0].clone(), ctrl_range[:, 1].clone()
        self.obs_dim = int(self.model.nq + self.model.nv - self.obs_skip)
        self.init_qpos = torch.as_tensor(self.model.qpos0, dtype=torch.float64).clone()
        self.init_qvel = torch.zeros(self.model.nv, dtype=torch.float64)

    def load_model(self) -> mujoco.MjModel:
        """Compile `xml` (override to edit the model, e.g. through `mujoco.MjSpec`)."""
        return mujoco.MjModel.from_xml_path(str(self.xml))

    def make_env(self, num_envs: int, backend: str = "cpu") -> MujocoVecEnv:
        sim = make_simulator(self.model, num_envs, self.frame_skip, backend, persistent=self.persistent,
                             current=self.current)
        return MujocoVecEnv(self, sim)

    # ------------------------------------------------------------------ hooks for subclasses
    def physics(self, tasks: Any) -> dict[str, Tensor]:
        """Per-env model fields for physics-side task parameters, e.g. ``{"opt.gravity": [N, 3]}``.

        `tasks` are on the CPU whatever the backend (the simulator copies the values to its device), so a family
        may combine them with CPU constants read from the model; `reward_terms` gets them on `sim.device`."""
        return {}

    def initial_state(self, n: int, generator: torch.Generator) -> tuple[Tensor, Tensor]:
        """float64 qpos [n, nq], qvel [n, nv] for new episodes (Gymnasium v5 reset noise)."""
        s = self.reset_noise_scale
        nq, nv = self.init_qpos.numel(), self.init_qvel.numel()
        qpos = self.init_qpos + (2 * s) * torch.rand(n, nq, generator=generator, dtype=torch.float64) - s
        qvel = self.init_qvel + s * torch.randn(n, nv, generator=generator, dtype=torch.float64)
        return qpos, qvel

    def observe(self, sim: Simulator) -> Tensor:
        """float64 [N, obs_dim]; by default qpos[obs_skip:] then qvel, one slice of the state array."""
        return sim.obs_state[:, self.obs_skip :].clone()

    def x_position(self, sim: Simulator) -> Tensor:
        """float64 [N], the forward coordinate whose finite difference is the forward velocity (default: qpos[0],
        as in Gymnasium's HalfCheetah-v5)."""
        return sim.qpos[:, 0]

    def x_velocity(self, sim: Simulator, x_before: Tensor) -> Tensor:
        """float64 [N], the forward velocity the reward sees, after a step: by default (x_position now − `x_before`,
        its value before the step) / dt, as Gymnasium's v5 envs compute it."""
        return (self.x_position(sim) - x_before) / sim.dt

    @abstractmethod
    def reward_terms(self, tasks: Any, sim: Simulator, action: Tensor, x_velocity: Tensor) -> dict[str, Tensor]:
        """The reward's named terms, float64 [N] each; the reward is their sum.

        Args:
            tasks: per-env tasks (leading dim N), on `sim.device` like every tensor here (the GPU with the warp
                backend on CUDA): move a constant there before combining it with them, e.g. `c.to(sim.device)`.
            sim: the simulator, after the step.
            action: float64 [N, act_dim], the (clipped) action applied.
            x_velocity: float64 [N], `x_velocity` (by default (x_after - x_before) / dt of `x_position`, as
                Gymnasium's v5 envs compute it).
        """

    def terminated(self, sim: Simulator) -> Tensor:
        """bool [N]: episodes the MDP ends after this step (default: none; the sampler handles the horizon)."""
        return torch.zeros(sim.num_envs, dtype=torch.bool, device=sim.device)


class MujocoVecEnv:
    """Batched environments of a `MujocoFamily` on one `Simulator`."""

    def __init__(self, family: MujocoFamily, sim: Simulator) -> None:
        self.family = family
        self.sim = sim
        self.num_envs = sim.num_envs

    def reset(self, tasks: Any, generator: torch.Generator, ids: Tensor | None = None) -> Tensor:
        sub = tasks if ids is None else index_tasks(tasks, ids)
        # on the CPU: a family's constants (masses read from the model, say) live there; once per reset, so the copy
        # from a GPU is no cost that matters
        for name, values in self.family.physics(tasks_to(sub, "cpu")).items():
            self.sim.set_model_field(name, values, ids)
        n = self.num_envs if ids is None else int(ids.numel())
        qpos, qvel = self.family.initial_state(n, generator)
        self.sim.reset(qpos, qvel, ids)
        return self.family.observe(self.sim)

    def set_state(self, qpos: Tensor, qvel: Tensor, ids: Tensor | None = None) -> Tensor:
        """Start episodes from an exact state (float64 [n, nq], [n, nv]); returns obs. Physics fields unchanged."""
        self.sim.reset(qpos, qvel, ids)
        return self.family.observe(self.sim)

    def step(self, tasks: Any, action: Tensor, ids: Tensor | None = None) -> StepResult:
        x_before = self.family.x_position(self.sim).clone()
        self.sim.step(action, ids)
        x_velocity = self.family.x_velocity(self.sim, x_before)
        terms = self.family.reward_terms(tasks, self.sim, action, x_velocity)
        reward = torch.stack(list(terms.values())).sum(0)
        info = {**terms, "x_velocity": x_velocity} if self.family.reports_x_velocity else dict(terms)
        return StepResult(self.family.observe(self.sim), reward, self.family.terminated(self.sim), info)
