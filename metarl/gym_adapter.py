"""Any (family, task) as a standard `gymnasium.Env`, registered with Gymnasium as ``metarl/<family id>``.

`TaskEnv` is one environment of a family's batched `VecEnv` (``num_envs=1``) with one task fixed, so single-task
tools (Stable-Baselines3, CleanRL, Gymnasium's wrappers and env checker) run on any registered family:

    >>> import gymnasium, metarl
    >>> env = gymnasium.make("metarl/HalfCheetahVel-v0", task={"goal_vel": 1.5})   # TimeLimit at the horizon, 200
    >>> obs, info = env.reset(seed=0)

`import metarl` registers every family known at that moment (Gymnasium 1.x has no plugin entry points: packages
register at import, the ``import ale_py`` idiom). A family registered later becomes a Gymnasium id once
`register_gymnasium` is called again; `TaskEnv("MyFamily-v0", ...)` works without any registration.
"""

from __future__ import annotations

import warnings
from collections.abc import Mapping
from typing import Any, ClassVar

import gymnasium
import mujoco
import numpy as np
import torch
from gymnasium import spaces

from metarl import registry
from metarl.camera import Camera, render_camera
from metarl.family import MujocoFamily, TaskFamily, num_tasks
from metarl.registry import FamilySpec

NAMESPACE = "metarl"
"""Gymnasium namespace of the metarl families: ``gymnasium.make("metarl/HalfCheetahVel-v0")``."""
ENTRY_POINT = "metarl.gym_adapter:TaskEnv"


def gym_id(family_id: str) -> str:
    """The Gymnasium id of a family: ``"HalfCheetahVel-v0"`` -> ``"metarl/HalfCheetahVel-v0"``.

    A namespaced family id keeps its namespace as a name prefix (Gymnasium ids allow a single namespace):
    ``"mylab/Nav-v0"`` -> ``"metarl/mylab.Nav-v0"``.
    """
    return f"{NAMESPACE}/{family_id.replace('/', '.')}"


def register_gymnasium() -> list[str]:
    """Make Gymnasium's registry mirror metarl's: one ``metarl/<id>`` per family, TimeLimit at its horizon.

    Idempotent. Adds new families, updates ones whose horizon changed, and drops ids whose family was unregistered.
    `import metarl` calls it once; call it again after registering your own families. Returns the Gymnasium ids.

    Raises:
        ValueError: a Gymnasium id is already taken by an environment that is not a metarl `TaskEnv`.
    """
    wanted = {gym_id(spec.id): spec for spec in registry.registered()}
    for env_id in [k for k, v in gymnasium.registry.items() if v.entry_point == ENTRY_POINT and k not in wanted]:
        del gymnasium.registry[env_id]
    for env_id, spec in wanted.items():
        current = gymnasium.registry.get(env_id)
        kwargs = {"family": spec.id}
        if current is not None:
            if current.entry_point != ENTRY_POINT:
                raise ValueError(f"Gymnasium id {env_id!r} is already taken by {current.entry_point!r}")
            if current.max_episode_steps == spec.horizon and current.kwargs == kwargs:
                continue
            del gymnasium.registry[env_id]  # re-registering in place would make Gymnasium warn "Overriding"
        gymnasium.register(id=env_id, entry_point=ENTRY_POINT, max_episode_steps=spec.horizon, kwargs=kwargs)
    return sorted(wanted)


def torch_generator(rng: np.random.Generator) -> torch.Generator:
    """A torch generator seeded by one draw from `rng` (how `TaskEnv.reset` turns Gymnasium's seed into torch's).

    To replay a `TaskEnv` episode on the family's own `VecEnv`:
    ``vec.reset(tasks, torch_generator(gymnasium.utils.seeding.np_random(seed)[0]))``.
    """
    return torch.Generator().manual_seed(int(rng.integers(2**63 - 1)))


class TaskEnv(gymnasium.Env[np.ndarray, np.ndarray]):
    """One task of a family as a `gymnasium.Env` (no time limit of its own: `gymnasium.make` adds the horizon's).

    Spaces: observations ``Box(-inf, inf, (obs_dim,), float64)``, the family's own dtype (MuJoCo state is
    float64). Actions ``Box(action_low, action_high, (act_dim,), float32)``, as Gymnasium's MuJoCo envs and most
    agents expect; `step` converts any action to float64 and clips it to the family's float64 bounds (the float32
    bound may lie an ulp outside them, and agents may send unclipped samples), exactly as metarl's sampler does.

    Seeding: each `reset` draws a torch generator from Gymnasium's ``np_random`` (`torch_generator`) for the initial
    state, so ``reset(seed=s)`` always starts from the same state; the initial state for seed s does not depend on
    whether the task is fixed.

    Args:
        family: a registered family id or a `FamilySpec` (built with `metarl.make`), or a built `TaskFamily`.
        task: the task's field values, e.g. ``{"goal_vel": 1.5}`` or PointNav's ``{"goal": [0.3, -0.2]}``, or a
            `Tasks` NamedTuple holding one task. None: a task is drawn from the family's distribution whenever the
            env is seeded, i.e. at the first `reset` and at every ``reset(seed=...)``; unseeded resets keep it.
        render_mode: None or ``"rgb_array"`` (MuJoCo families; needs an OpenGL backend, see `render`).
        family_kwargs: constructor overrides when `family` is an id, e.g. ``{"high": 3.0}``. Not ``horizon``: the
            episode length is Gymnasium's TimeLimit (``gymnasium.make(..., max_episode_steps=100)``).
        width, height: rendered image size in pixels.
        camera: how `render` frames the robot: a `metarl.camera.Camera` or the name of a camera of the model;
            None: the family's own (`MujocoFamily.camera`, by default tracking the root body).

    Raises:
        TypeError: unknown task field names (the message lists the family's fields) or a task of the wrong type.
        ValueError: a task value of the wrong shape, more than one task, non-finite values, or a bad render mode.
    """

    metadata: ClassVar[dict[str, Any]] = {"render_modes": ["rgb_array"], "render_fps": None}

    def __init__(
        self,
        family: str | FamilySpec | TaskFamily,
        task: Mapping[str, Any] | tuple | None = None,
        render_mode: str | None = None,
        family_kwargs: Mapping[str, Any] | None = None,
        width: int = 480,
        height: int = 480,
        camera: Camera | str | None = None,
    ) -> None:
        self.family = _build_family(family, family_kwargs)
        self._fixed_task = _parse_task(self.family, task)
        self._tasks = self._fixed_task
        self._started = False
        self._env = self.family.make_env(1)
        self._low, self._high = self.family.action_low.view(1, -1), self.family.action_high.view(1, -1)
        self.observation_space = spaces.Box(-np.inf, np.inf, (self.family.obs_dim,), np.float64)
        self.action_space = spaces.Box(
            self.family.action_low.numpy().astype(np.float32),
            self.family.action_high.numpy().astype(np.float32),
            (self.family.act_dim,),
            np.float32,
        )
        mujoco_family = isinstance(self.family, MujocoFamily)
        fps = round(1.0 / (float(self.family.model.opt.timestep) * self.family.frame_skip)) if mujoco_family else None
        self.metadata = {"render_modes": ["rgb_array"] if mujoco_family else [], "render_fps": fps}
        if render_mode is not None and render_mode not in self.metadata["render_modes"]:
            raise ValueError(
                f"render_mode {render_mode!r} is not supported by {self.family.id}; "
                f"supported: {self.metadata['render_modes'] or 'none (only MuJoCo families render)'}"
            )
        self.render_mode = render_mode
        self._width, self._height = width, height
        self._renderer: mujoco.Renderer | None = None
        self._render_data: mujoco.MjData | None = None
        self._camera: int | mujoco.MjvCamera | None = None
        if mujoco_family:  # resolved now: a camera or body the model lacks is refused before any episode
            self._camera = render_camera(self.family.model, camera if camera is not None else self.family.camera)
        self._new_episode = True

    @property
    def task(self) -> Any:
        """The current task: the family's `Tasks` NamedTuple with T = 1 (None before the first reset when drawn)."""
        return None if self._tasks is None else type(self._tasks)(*(f.clone() for f in self._tasks))

    def reset(
        self, *, seed: int | None = None, options: dict[str, Any] | None = None
    ) -> tuple[np.ndarray, dict[str, Any]]:
        super().reset(seed=seed)
        if options:
            raise ValueError(f"TaskEnv.reset takes no options, got {sorted(options)}; pass the task to the constructor")
        generator = torch_generator(self.np_random)
        if self._fixed_task is None and (seed is not None or self._tasks is None):
            self._tasks = self.family.sample_tasks(1, torch_generator(self.np_random))
        obs = self._env.reset(self._tasks, generator)
        self._started, self._new_episode = True, True
        return _to_numpy(obs), {}

    def step(self, action: Any) -> tuple[np.ndarray, float, bool, bool, dict[str, Any]]:
        if not self._started:
            raise RuntimeError("call reset() before step()")
        act = np.asarray(action, dtype=np.float64)
        if act.shape != (self.family.act_dim,):
            raise ValueError(f"{self.family.id} actions have shape ({self.family.act_dim},), got {act.shape}")
        clipped = torch.clamp(torch.from_numpy(act).view(1, -1), self._low, self._high)
        out = self._env.step(self._tasks, clipped)
        info = {name: float(value[0]) for name, value in out.info.items()}
        # truncated is always False: the horizon is the TimeLimit wrapper's job (registered max_episode_steps)
        return _to_numpy(out.obs), float(out.reward[0]), bool(out.terminated[0]), False, info

    def render(self) -> np.ndarray | None:  # type: ignore[override]
        """uint8 [height, width, 3]: the current state, seen by the env's camera (the family's `camera`: by default
        one following the robot's root body).

        Draws the family's base model: per-task model fields (an uphill family's tilted gravity) are not drawn.

        Raises:
            RuntimeError: the env was built without ``render_mode="rgb_array"``, or MuJoCo cannot create an
                OpenGL context (headless: set ``MUJOCO_GL=egl`` or ``MUJOCO_GL=osmesa`` before importing mujoco).
        """
        if self.render_mode != "rgb_array":
            raise RuntimeError(f"build the env with render_mode='rgb_array' to render (got {self.render_mode!r})")
        assert isinstance(self.family, MujocoFamily)  # checked in __init__
        model = self.family.model
        if self._renderer is None:
            self._renderer = _make_renderer(model, self._width, self._height)
            self._render_data = mujoco.MjData(model)
        data = self._render_data
        assert data is not None
        sim = self._env.sim  # type: ignore[attr-defined]  # MujocoVecEnv
        data.qpos[:], data.qvel[:] = sim.qpos[0].cpu().numpy(), sim.qvel[0].cpu().numpy()
        mujoco.mj_forward(model, data)
        camera = self._camera
        if isinstance(camera, mujoco.MjvCamera) and self._new_episode:
            # MuJoCo's tracking camera moves its look-at point a fifth of the way to the body per frame: start there
            camera.lookat[:] = data.subtree_com[camera.trackbodyid]
        self._new_episode = False
        self._renderer.update_scene(data, camera=camera if camera is not None else -1)
        return self._renderer.render()

    def close(self) -> None:
        if self._renderer is not None:
            self._renderer.close()
            self._renderer = None


def _build_family(family: str | FamilySpec | TaskFamily, family_kwargs: Mapping[str, Any] | None) -> TaskFamily:
    if isinstance(family, TaskFamily):
        if family_kwargs:
            raise TypeError("family_kwargs apply only when family is an id; this family is already built")
        return family
    if not isinstance(family, (str, FamilySpec)):
        raise TypeError(f"family must be a family id, a FamilySpec or a TaskFamily, got {type(family).__name__}")
    kwargs = dict(family_kwargs or {})
    if "horizon" in kwargs:
        raise ValueError(
            "a Gymnasium env's episode length is its TimeLimit, not a family kwarg: pass max_episode_steps to "
            "gymnasium.make (or wrap the TaskEnv in gymnasium.wrappers.TimeLimit)"
        )
    return registry.make(family, **kwargs)


def _parse_task(family: TaskFamily, task: Mapping[str, Any] | tuple | None) -> Any:
    """The family's `Tasks` with T = 1 from field values or a `Tasks` NamedTuple (validated by `make_tasks`)."""
    if task is None:
        return None
    fields = list(family.Tasks._fields)  # type: ignore[attr-defined]
    if isinstance(task, tuple) and hasattr(task, "_asdict"):
        task = task._asdict()  # type: ignore[union-attr]
    if not isinstance(task, Mapping):
        raise TypeError(
            f"task must map {family.id}'s task fields {fields} to values (or be one {family.Tasks.__name__}), "
            f"got {type(task).__name__}"
        )
    tasks = family.make_tasks(**task)
    if num_tasks(tasks) != 1:
        raise ValueError(f"a TaskEnv holds one task, got {num_tasks(tasks)}: {dict(task)}")
    if not all(bool(torch.isfinite(value).all()) for value in tasks):
        raise ValueError(f"task values must be finite, got {dict(task)}")
    return tasks


def _to_numpy(obs: torch.Tensor) -> np.ndarray:
    """float64 [obs_dim], a fresh array (users keep observations; families may return views of simulator state)."""
    return np.array(obs[0].detach().cpu().numpy(), dtype=np.float64)


def _make_renderer(model: mujoco.MjModel, width: int, height: int) -> mujoco.Renderer:
    """A `mujoco.Renderer`, or a RuntimeError that says how to get an OpenGL context.

    Without a display GLFW reports its failure as warnings before MuJoCo raises; they are collected into the error.
    """
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        try:
            renderer = mujoco.Renderer(model, height=height, width=width)
        except Exception as err:  # GL back ends fail with FatalError, ImportError, AttributeError, ...
            details = "; ".join([str(w.message) for w in caught] + [f"{type(err).__name__}: {err}"])
            raise RuntimeError(
                "MuJoCo could not create an OpenGL context for rendering. Without a display set MUJOCO_GL=egl "
                f"(or osmesa) before mujoco is imported, or run with a display. Details: {details}"
            ) from err
    for w in caught:  # it worked: pass on whatever it warned about
        warnings.warn_explicit(w.message, w.category, w.filename, w.lineno)
    return renderer
