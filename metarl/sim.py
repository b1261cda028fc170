"""Batched physics backends behind one torch-facing interface.

A `Simulator` holds N simulations of one MuJoCo model. Families read positions and velocities from it as float64
torch tensors and write per-simulation model fields (gravity for slopes, masses, friction) for physics-side task
parameters. The CPU backend wraps `mujoco.batch.Batch` (MuJoCo >= 3.17): bit-identical to stepping plain `MjData`,
and hence to Gymnasium's MuJoCo envs (notes/batched-sim.md §3.1). A GPU backend (MJWarp) implements the same
protocol (metarl/sim_warp.py); callers never see which one runs.

A *backend* string names the simulator and, for MJWarp, its device: ``"cpu"`` (mujoco.batch), ``"warp"`` (MJWarp on
Warp's CPU device), ``"warp:cuda"`` / ``"warp:cuda:1"`` (on a GPU). `resolve_backend` turns the run's
``--run.backend``/``--run.device`` into one; pure-torch families read only its device (`backend_device`).
"""

from __future__ import annotations

import os
from typing import Protocol

import mujoco
import mujoco.batch  # a submodule that `import mujoco` does not load (batched-sim.md §7.12)
import numpy as np
import torch
from torch import Tensor

from metarl.sim_warp import GPU_EXTRA, MujocoWarpSim, warp_available

BACKENDS = ("cpu", "warp") if warp_available() else ("cpu",)
"""Simulators available in this install (`make_simulator`'s `backend` argument, before any ":device")."""


class Simulator(Protocol):
    """N simulations of one model, stepped together. All tensors are float64 on `device`; `qpos`/`qvel`/`obs_state`
    are live views on the CPU backend and fresh copies on MJWarp's, so clone what you keep across a `step`.

    Shapes: `qpos [N, nq]`, `qvel [N, nv]`, `obs_state [N, nq + nv]`, `contact_forces [N, nbody, 6]`,
    `body_xpos [N, nbody, 3]`, `sensordata [N, nsensordata]`; `ids` are int64 [n] simulation indices (None: all).
    Derived fields (`body_xpos`, `sensordata`) lag the state by one substep after a step, as `mj_step` leaves them,
    unless the simulator was built with `current=True`.
    """

    num_envs: int
    model: mujoco.MjModel
    frame_skip: int
    device: torch.device

    @property
    def dt(self) -> float: ...
    @property
    def qpos(self) -> Tensor: ...
    @property
    def qvel(self) -> Tensor: ...
    @property
    def obs_state(self) -> Tensor: ...
    def contact_forces(self) -> Tensor: ...
    def body_xpos(self) -> Tensor: ...
    def sensordata(self) -> Tensor: ...
    def set_model_field(self, name: str, values: Tensor, ids: Tensor | None = None) -> None: ...
    def reset(self, qpos: Tensor, qvel: Tensor, ids: Tensor | None = None) -> None: ...
    def step(self, ctrl: Tensor, ids: Tensor | None = None) -> None: ...


def default_nthread() -> int:
    """Simulation threads: every core this process may use."""
    return len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)


def _np_ids(ids: Tensor | None) -> np.ndarray | None:
    return None if ids is None else ids.numpy().astype(np.int32)


class MujocoBatchSim:
    """The CPU backend: one `mujoco.batch.Batch` holding all N simulations.

    Each simulation is one row of `batch.state`; qpos and qvel are adjacent in that row, so the observation state
    `[qpos, qvel]` is a single slice (no gather, no Python loop over envs).

    Args:
        model: the compiled model (shared by all simulations; per-simulation fields via `set_model_field`).
        num_envs: N.
        frame_skip: physics substeps per env step (Gymnasium's HalfCheetah/Ant: 5).
        nthread: simulation threads (default: all usable cores).
        persistent: keep one MjData per simulation. Needed by `contact_forces()`, which runs
            `mj_rnePostConstraint` as Gymnasium does after each step (about 20 µs per simulation), and by
            `body_xpos()` and `sensordata()`, whose rows must stay meaningful after masked steps.
        current: after each step, compute the position and velocity stages (and their sensors) at the new state,
            as rllab's envs did by calling `mj_forward` after `mj_step`; the next step continues from them, so in a
            persistent batch this costs nothing and the trajectory is unchanged. `contact_forces()` then runs a
            whole `mj_forward` on each simulation's copy first, so they too are the new state's. Default: derived
            fields lag the state by one substep, as `mj_step` (and Gymnasium) leaves them.
    """

    def __init__(
        self,
        model: mujoco.MjModel,
        num_envs: int,
        frame_skip: int,
        nthread: int | None = None,
        persistent: bool = False,
        current: bool = False,
    ) -> None:
        if num_envs < 1:
            raise ValueError(f"num_envs must be >= 1, got {num_envs}")
        self.model = model
        self._stage = mujoco.mjtStage.mjSTAGE_VEL if current else mujoco.mjtStage.mjSTAGE_NONE
        self._current = current
        self.num_envs = num_envs
        self.frame_skip = frame_skip
        self.device = torch.device("cpu")
        nthread = default_nthread() if nthread is None else nthread
        # Callers stepping a threaded batch should keep torch to one thread meanwhile (the sampler does: torch's
        # OpenMP workers spin on the simulation's cores, batched-sim.md §0.2).
        self.nthread = min(nthread, num_envs)
        """Simulation threads in use (the caller's included)."""
        self._batch = mujoco.batch.Batch(model, num_envs, nthread=self.nthread, persistent=persistent)
        off_q, nq = self._batch._component(mujoco.mjtState.mjSTATE_QPOS)
        off_v, nv = self._batch._component(mujoco.mjtState.mjSTATE_QVEL)
        assert off_v == off_q + nq, "mujoco state layout changed: qvel no longer follows qpos"
        state = torch.from_numpy(self._batch.state)  # a live view: the tensors below see every step
        self._qpos = state[:, off_q : off_q + nq]
        self._qvel = state[:, off_v : off_v + nv]
        self._obs_state = state[:, off_q : off_v + nv]
        self._ctrl = torch.from_numpy(self._batch.bind("ctrl"))
        self._persistent = persistent
        self._xpos = self._batch.bind("xpos")  # an output refreshed by every call; read-only
        self._sensordata = self._batch.bind("sensordata")
        # contact forces are computed lazily, once per step, for the simulations stepped since the last read
        self._scratch = mujoco.MjData(model) if persistent else None
        self._cfrc = torch.zeros(num_envs, model.nbody, 6, dtype=torch.float64)
        self._cfrc_rows = self._cfrc.numpy()  # same memory; a row write costs 0.6 µs here, 3.6 µs via torch
        self._cfrc_stale: np.ndarray | None = None

    @property
    def dt(self) -> float:
        """Seconds per env step."""
        return float(self.model.opt.timestep) * self.frame_skip

    @property
    def qpos(self) -> Tensor:
        """float64 [N, nq], a live view: clone before the next `step` if you need the old values."""
        return self._qpos

    @property
    def qvel(self) -> Tensor:
        """float64 [N, nv], a live view."""
        return self._qvel

    @property
    def obs_state(self) -> Tensor:
        """float64 [N, nq + nv]: qpos then qvel, one slice of the state array (a live view)."""
        return self._obs_state

    def contact_forces(self) -> Tensor:
        """float64 [N, nbody, 6]: `cfrc_ext` after `mj_rnePostConstraint`, as Gymnasium computes it after a step.

        After a reset and before any step it is zero, as in Gymnasium (mj_resetData clears it; mj_forward does not
        compute it); with `current`, the reset state's.
        """
        if self._scratch is None:
            raise RuntimeError("build the simulator with persistent=True to read contact forces")
        if self._cfrc_stale is not None:
            data = self._scratch
            # Batch does not run rnePostConstraint; its per-sim MjData has all it needs. get_data (a whole MjData
            # copy, ~13 µs for the Ant) dominates this loop.
            for i in self._cfrc_stale.tolist():
                self._batch.get_data(i, data)
                if self._current:  # at the new state, as MuJoCo 1.x's mj_forward (run by rllab after mj_step) left them
                    mujoco.mj_forward(self.model, data)
                mujoco.mj_rnePostConstraint(self.model, data)
                self._cfrc_rows[i] = data.cfrc_ext
            self._cfrc_stale = None
        return self._cfrc

    def body_xpos(self) -> Tensor:
        """float64 [N, nbody, 3]: body positions from the last forward pass (a copy).

        After a step they lag the state as in `mj_step` (with RK4: the last intermediate stage). Gymnasium's Ant-v5
        measures its x-velocity from exactly these values.
        """
        if not self._persistent:
            raise RuntimeError("build the simulator with persistent=True to read derived fields after masked steps")
        return torch.tensor(self._xpos)

    def sensordata(self) -> Tensor:
        """float64 [N, nsensordata]: the model's sensors from the last forward pass (a copy); at the new state after
        a step when built with `current=True`, else one substep behind, as `mj_step` leaves them."""
        if not self._persistent:
            raise RuntimeError("build the simulator with persistent=True to read derived fields after masked steps")
        return torch.tensor(self._sensordata)

    def set_model_field(self, name: str, values: Tensor, ids: Tensor | None = None) -> None:
        """Give model field `name` (e.g. ``"opt.gravity"``, ``"body_mass"``) per-simulation values.

        Args:
            name: an MjModel field, MjOption fields as ``"opt.<name>"`` (`mujoco.batch.MODEL_FIELDS`).
            values: [n, ...] values for the n simulations written.
            ids: int64 [n] simulations to write (default: all).
        """
        field = self._batch.expand(name)
        rows = slice(None) if ids is None else ids.numpy()
        field[rows] = values.detach().cpu().numpy().reshape(field[rows].shape)
        if name.startswith("opt.") or name in mujoco.MjModel._setconst_inputs:
            # derived constants (inertia-dependent weights, bounding volumes) must follow (batched-sim.md §5)
            self._batch.set_const(_np_ids(ids))

    def reset(self, qpos: Tensor, qvel: Tensor, ids: Tensor | None = None) -> None:
        """Reset simulations to the model defaults, set their qpos/qvel and run mj_forward (Gymnasium's
        `mj_resetData` + `set_state`).

        Args:
            qpos: float64 [n, nq] for the n reset simulations.
            qvel: float64 [n, nv].
            ids: int64 [n] simulations to reset (default: all).
        """
        np_ids = _np_ids(ids)
        rows = slice(None) if ids is None else ids
        if self._persistent:
            self.contact_forces()  # settle pending rows before zeroing the reset ones
            self._cfrc[rows] = 0.0
        # writes made before reset() are discarded: reset, then write, then forward (batched-sim.md §7.4)
        self._batch.reset(np_ids, stage=mujoco.mjtStage.mjSTAGE_NONE)
        self._qpos[rows] = qpos
        self._qvel[rows] = qvel
        self._batch.forward(np_ids)
        if self._persistent and self._current:  # the reset state's, as rllab's mj_forward (MuJoCo 1.x) left them
            self._cfrc_stale = np.arange(self.num_envs) if np_ids is None else np_ids

    def step(self, ctrl: Tensor, ids: Tensor | None = None) -> None:
        """Apply `ctrl` (float64 [N, nu]) and advance `frame_skip` substeps; only `ids` (int64 [n]) if given."""
        self._ctrl.copy_(ctrl)
        np_ids = _np_ids(ids)
        self._batch.step(np_ids, nstep=self.frame_skip, stage=self._stage)
        if self._persistent:
            self._cfrc_stale = np.arange(self.num_envs) if np_ids is None else np_ids


def make_simulator(
    model: mujoco.MjModel,
    num_envs: int,
    frame_skip: int,
    backend: str = "cpu",
    persistent: bool = False,
    nthread: int | None = None,
    current: bool = False,
) -> Simulator:
    """Build a `Simulator` for `backend`: "cpu", "warp" or "warp:<device>" (see `BACKENDS`)."""
    name, _, device = backend.partition(":")
    if name == "cpu" and not device:
        return MujocoBatchSim(model, num_envs, frame_skip, nthread=nthread, persistent=persistent, current=current)
    if name == "warp":
        if not warp_available():
            raise BackendError(f"the warp backend needs mujoco-warp and warp-lang: {GPU_EXTRA}")
        return MujocoWarpSim(model, num_envs, frame_skip, device=device or "cpu", persistent=persistent,
                             current=current)
    raise ValueError(f"unknown simulator backend {backend!r}; available: {', '.join(BACKENDS)}")


class BackendError(ValueError):
    """A backend or device that this install or machine cannot provide: one line that says what to install."""


def backend_device(backend: str) -> torch.device:
    """The torch device a backend string puts its tensors on: "cpu" and "warp" -> cpu, "warp:cuda:0" -> cuda:0;
    a bare device ("cuda:0", as pure-torch families have always accepted) -> that device."""
    name, _, device = backend.partition(":")
    if name == "warp":
        return torch.device(device or "cpu")
    return torch.device(backend)


def resolve_backend(backend: str, device: str) -> str:
    """The backend string for a run's ``--run.backend`` (auto, cpu, warp) and ``--run.device`` (auto, cpu,
    cuda[:n]).

    `auto` backend: warp on CUDA when a GPU is visible (and the warp extra installed), else cpu. `auto` device: cuda
    for the warp backend when a GPU is visible, else cpu. Raises `BackendError` (one line: what to install or pass)
    for warp without mujoco-warp, cuda without CUDA, or the cpu backend on cuda.
    """
    check_device_name(device)
    if backend not in ("auto", "cpu", "warp"):
        raise BackendError(f"run.backend must be auto, cpu or warp, got {backend!r}")
    gpu = torch.cuda.is_available()
    if _is_cuda(device) and not gpu:
        raise BackendError(f"run.device {device}: CUDA is not available to torch here (a CPU build of torch, or no "
                           f"GPU visible); use --run.device cpu, or install a CUDA torch and {GPU_EXTRA}")
    if backend == "auto":
        backend = "warp" if (gpu and warp_available() and device != "cpu") or _is_cuda(device) else "cpu"
    if backend == "warp" and not warp_available():
        raise BackendError(f"run.backend warp needs mujoco-warp and warp-lang: {GPU_EXTRA}")
    if backend == "cpu":
        if _is_cuda(device):
            raise BackendError(f"run.backend cpu simulates on the CPU, not {device}: use --run.backend warp "
                               f"({GPU_EXTRA}) or --run.device cpu")
        return "cpu"
    if device == "auto":
        device = "cuda" if gpu else "cpu"
    return "warp" if device == "cpu" else f"warp:{device}"


def check_device_name(device: str) -> None:
    """`BackendError` unless `device` is a `--run.device` value: auto, cpu, cuda or cuda:N."""
    if device != "auto" and device != "cpu" and not _is_cuda(device):
        raise BackendError(f"run.device must be auto, cpu, cuda or cuda:N, got {device!r}")


def _is_cuda(device: str) -> bool:
    return device == "cuda" or (device.startswith("cuda:") and device[5:].isdigit())
