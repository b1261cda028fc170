"""The MJWarp backend: all N simulations as worlds of one `mujoco_warp` model, on Warp's CPU or CUDA device.

It implements `metarl.sim.Simulator`, so families run on it unchanged. Differences from the CPU backend that a caller
can see, and why:

- Physics is float32 (MJWarp has no float64 build). The protocol hands out float64 tensors, so every read casts the
  zero-copy float32 views (`wp.to_torch`) once; the families' reward sums and the C backend's bit-exact tests stay in
  float64. Trajectories match C MuJoCo to float32 precision over the first steps and then drift chaotically
  (notes/batched-sim.md §4: 2e-6 after 20 env steps on flat ground, up to 5e-3 with rotated gravity).
- `qpos`/`qvel`/`obs_state` are fresh float64 tensors, not live views (the CPU backend's are views); callers clone
  before stepping anyway.
- Contacts and constraints live in fixed-size buffers sized at construction; an overflow is checked at every reset
  (one device sync per reset, not per step: batched-sim.md §4) and raises.

On CUDA (not yet run on a GPU) the `frame_skip` substeps replay as one captured CUDA graph, and Warp's stream is
ordered against torch's by stream waits rather than host synchronisation.

Warp compiles its kernels on first use (about 20 s on CPU for HalfCheetah) and caches them on disk: in
``$WARP_CACHE_PATH`` when set, else Warp's default (``~/.cache/warp``).
"""

from __future__ import annotations

import contextlib
import importlib.util
from collections.abc import Iterator
from typing import Any

import mujoco
import numpy as np
import torch
from torch import Tensor

GPU_EXTRA = "pip install 'metarl[gpu]'"
"""How to install this backend (pyproject's optional extra: mujoco-warp, warp-lang)."""


def warp_available() -> bool:
    """Whether `mujoco_warp` and `warp` are importable (without importing them: Warp's import is slow)."""
    return all(importlib.util.find_spec(name) is not None for name in ("warp", "mujoco_warp"))


def _import_warp() -> tuple[Any, Any]:
    """The `warp` and `mujoco_warp` modules, Warp initialised and quiet."""
    if not warp_available():
        raise ModuleNotFoundError(f"the warp simulator backend needs mujoco-warp and warp-lang: {GPU_EXTRA}")
    import mujoco_warp as mjw
    import warp as wp

    # no banner at init and no "Module ... load" line per kernel (Warp logs those at INFO)
    wp.config.quiet = True
    wp.config.log_level = max(wp.config.log_level, wp.LOG_WARNING)
    wp.init()
    return wp, mjw


def warp_device(device: torch.device) -> str:
    """The Warp device name of a torch device: "cpu" or "cuda:N" (Warp names CUDA devices by ordinal)."""
    if device.type == "cpu":
        return "cpu"
    if device.type == "cuda":
        return f"cuda:{device.index if device.index is not None else torch.cuda.current_device()}"
    raise ValueError(f"the warp backend runs on cpu or cuda devices, got {device}")


class MujocoWarpSim:
    """N simulations of `model` as MJWarp worlds, stepped by one kernel launch sequence per substep.

    Args:
        model: the compiled model (shared by all worlds; per-world fields via `set_model_field`).
        num_envs: N, the number of worlds.
        frame_skip: physics substeps per env step.
        device: where the worlds live (cpu, or cuda[:n]); every tensor this class returns is on it.
        persistent: keep derived fields per world between steps, as the CPU backend's flag: needed by
            `contact_forces()`, `body_xpos()` and `sensordata()`.
        current: after each step, compute the position and velocity stages and their sensors at the new state (MJWarp's
            `step1`), as the CPU backend's flag; here it costs one more kinematics pass per env step.
        nconmax: contacts allocated per world (MJWarp's default when None).
        njmax: constraint rows allocated per world (MJWarp's default when None).
        graph: replay the `frame_skip` substeps as one captured CUDA graph (default: on CUDA devices). Not yet run on
            a GPU (docs/gpu.md): pass False to launch the kernels one by one.
    """

    def __init__(
        self,
        model: mujoco.MjModel,
        num_envs: int,
        frame_skip: int,
        device: torch.device | str = "cpu",
        persistent: bool = False,
        nconmax: int | None = None,
        njmax: int | None = None,
        graph: bool | None = None,
        current: bool = False,
    ) -> None:
        if num_envs < 1:
            raise ValueError(f"num_envs must be >= 1, got {num_envs}")
        self._wp, self._mjw = _import_warp()
        self.model = model
        self.num_envs = num_envs
        self.frame_skip = frame_skip
        self.device = torch.device(device)
        self._wp_device = warp_device(self.device)
        wp, mjw = self._wp, self._mjw
        with wp.ScopedDevice(self._wp_device):
            self._m = mjw.put_model(model)
            self._d = mjw.make_data(model, nworld=num_envs, nconmax=nconmax, njmax=njmax)
            # the whole integration state of every world, for masked steps and resets (restore the others)
            self._sig = int(mjw.State.INTEGRATION)
            nstate = mujoco.mj_stateSize(model, self._sig)
            self._saved = wp.zeros((num_envs, nstate), dtype=wp.float32)
        d = self._d
        # zero-copy float32 views of the worlds' arrays (they stay valid: the Data's arrays are never reallocated)
        self._qpos32 = wp.to_torch(d.qpos)
        self._qvel32 = wp.to_torch(d.qvel)
        self._ctrl32 = wp.to_torch(d.ctrl)
        self._xpos32 = wp.to_torch(d.xpos)
        self._sensor32 = wp.to_torch(d.sensordata)
        self._cfrc32 = wp.to_torch(d.cfrc_ext)
        self._overflow = wp.to_torch(d.overflow) if hasattr(d, "overflow") else None
        self._persistent = persistent
        # derived fields are kept per world in float64, row by row, so a masked step or reset leaves the other rows
        # exactly as the CPU backend does (MJWarp recomputes them for every world)
        self._xpos = torch.zeros(num_envs, model.nbody, 3, dtype=torch.float64, device=self.device)
        self._sensordata = torch.zeros(num_envs, model.nsensordata, dtype=torch.float64, device=self.device)
        self._current = current
        self._cfrc = torch.zeros(num_envs, model.nbody, 6, dtype=torch.float64, device=self.device)
        self._cfrc_stale: Tensor | None = None  # bool [N]: rows stepped since contact forces were last computed
        self._use_graph = self.device.type == "cuda" if graph is None else graph
        self._graph: Any = None  # the captured substeps; captured after a first plain step has loaded the kernels
        self._stepped = False

    # ------------------------------------------------------------------ reads
    @property
    def dt(self) -> float:
        """Seconds per env step."""
        return float(self.model.opt.timestep) * self.frame_skip

    @property
    def qpos(self) -> Tensor:
        """float64 [N, nq], a copy."""
        return self._qpos32.to(torch.float64)

    @property
    def qvel(self) -> Tensor:
        """float64 [N, nv], a copy."""
        return self._qvel32.to(torch.float64)

    @property
    def obs_state(self) -> Tensor:
        """float64 [N, nq + nv]: qpos then qvel."""
        return torch.cat([self._qpos32, self._qvel32], dim=1).to(torch.float64)

    def contact_forces(self) -> Tensor:
        """float64 [N, nbody, 6]: `cfrc_ext` after the RNE post-constraint pass, as Gymnasium computes it after a
        step; zero after a reset and before any step. Unlike the CPU backend's, not recomputed at the new state when
        built with `current=True` (the ants' `rllab=True`, which needs that, refuses this backend)."""
        if not self._persistent:
            raise RuntimeError("build the simulator with persistent=True to read contact forces")
        if self._cfrc_stale is not None:
            with self._warp():
                self._mjw.rne_postconstraint(self._m, self._d)
            rows = self._cfrc_stale
            self._cfrc[rows] = self._cfrc32[rows].to(torch.float64)
            self._cfrc_stale = None
        return self._cfrc

    def body_xpos(self) -> Tensor:
        """float64 [N, nbody, 3]: body positions from each world's last forward pass (lagging the state after a
        step, as `mj_step` leaves them), a copy."""
        if not self._persistent:
            raise RuntimeError("build the simulator with persistent=True to read derived fields after masked steps")
        return self._xpos.clone()

    def sensordata(self) -> Tensor:
        """float64 [N, nsensordata]: the sensors from each world's last forward pass (at the new state after a step
        when built with `current=True`), a copy."""
        if not self._persistent:
            raise RuntimeError("build the simulator with persistent=True to read derived fields after masked steps")
        return self._sensordata.clone()

    # ------------------------------------------------------------------ writes
    def set_model_field(self, name: str, values: Tensor, ids: Tensor | None = None) -> None:
        """Give model field `name` (``"opt.gravity"``, ``"body_mass"``, any MJWarp model array with a world
        dimension) per-world values.

        Args:
            name: the field, MjOption fields as ``"opt.<name>"``.
            values: [n, ...] values for the n worlds written.
            ids: int64 [n] worlds to write (default: all).
        """
        field, replaced = wp_field_per_world(self._wp, self._m, name, self.num_envs)
        if replaced:
            self._graph = None  # a captured graph holds the old array's address: capture again
        view = self._wp.to_torch(field)
        rows = self._rows(ids)
        view[rows] = values.detach().to(device=self.device, dtype=view.dtype).reshape(view[rows].shape)
        if name in mujoco.MjModel._setconst_inputs:
            # derived constants (subtree masses, inverse weights) must follow, as with the CPU backend's set_const;
            # they need a world dim too (with one row, every world would write its value into it: measured wrong
            # masses in all worlds but one). set_const runs kinematics at qpos0 in every world: keep the states.
            for derived in SETCONST_OUTPUTS:
                if _batchable(self._wp, self._m, derived) and wp_field_per_world(
                        self._wp, self._m, derived, self.num_envs)[1]:
                    self._graph = None
            with self._warp():
                self._mjw.get_state(self._m, self._d, self._saved, self._sig)
                self._mjw.set_const(self._m, self._d, restore=False)
                self._mjw.set_state(self._m, self._d, self._saved, self._sig)

    def reset(self, qpos: Tensor, qvel: Tensor, ids: Tensor | None = None) -> None:
        """Reset worlds to the model defaults, set their qpos/qvel and run the forward pass.

        Args:
            qpos: float64 [n, nq] for the n reset worlds.
            qvel: float64 [n, nv].
            ids: int64 [n] worlds to reset (default: all).
        """
        self._check_overflow()
        rows = self._rows(ids)
        if self._persistent:
            self.contact_forces()  # settle pending rows before zeroing the reset ones
            self._cfrc[rows] = 0.0
        mask = None if ids is None else self._mask(ids)
        keep = None if mask is None else self._others_of(mask)
        wp, mjw = self._wp, self._mjw
        with self._warp():
            if keep is not None:
                mjw.get_state(self._m, self._d, self._saved, self._sig)
            mjw.reset_data(self._m, self._d, reset=None if mask is None else wp.from_torch(mask))
        # torch writes between two Warp blocks: on CUDA each block waits for torch's stream and torch for it
        self._qpos32[rows] = qpos.to(device=self.device, dtype=torch.float32)
        self._qvel32[rows] = qvel.to(device=self.device, dtype=torch.float32)
        with self._warp():
            mjw.forward(self._m, self._d)
            if keep is not None:  # forward ran in every world: give the others their integration state back
                mjw.set_state(self._m, self._d, self._saved, self._sig, active=keep)
        if self._persistent:
            self._xpos[rows] = self._xpos32[rows].to(torch.float64)
            self._sensordata[rows] = self._sensor32[rows].to(torch.float64)
        self._check_overflow()

    def step(self, ctrl: Tensor, ids: Tensor | None = None) -> None:
        """Apply `ctrl` (float64 [N, nu]) and advance `frame_skip` substeps; only worlds `ids` (int64 [n]) if given.

        MJWarp steps every world; with `ids` the others are restored afterwards (one state copy each way), so they
        stand still as in the CPU backend.
        """
        self._ctrl32.copy_(ctrl)
        mask = None if ids is None else self._mask(ids)
        keep = None if mask is None else self._others_of(mask)
        mjw = self._mjw
        with self._warp():
            if keep is not None:
                mjw.get_state(self._m, self._d, self._saved, self._sig)
            self._advance()
            if self._current:
                mjw.step1(self._m, self._d)  # positions, velocities and their sensors at the new state
            if keep is not None:
                mjw.set_state(self._m, self._d, self._saved, self._sig, active=keep)
        rows = self._rows(ids)
        if self._persistent:
            self._xpos[rows] = self._xpos32[rows].to(torch.float64)
            self._sensordata[rows] = self._sensor32[rows].to(torch.float64)
            stepped = torch.ones(self.num_envs, dtype=torch.bool, device=self.device) if mask is None else mask
            self._cfrc_stale = stepped if self._cfrc_stale is None else self._cfrc_stale | stepped

    # ------------------------------------------------------------------ helpers
    @contextlib.contextmanager
    def _warp(self) -> Iterator[None]:
        """Run Warp work on this simulator's device. On CUDA it goes on Warp's own stream (a graph cannot be captured
        on torch's legacy default stream), ordered after torch's pending work (the ctrl and qpos writes) and before
        torch's next reads by stream waits: no host synchronisation."""
        wp = self._wp
        with wp.ScopedDevice(self._wp_device):
            if self.device.type != "cuda":
                yield
                return
            torch_stream, warp_stream = wp.stream_from_torch(self.device), wp.get_stream(self._wp_device)
            warp_stream.wait_stream(torch_stream)
            yield
            torch_stream.wait_stream(warp_stream)

    def _advance(self) -> None:
        """`frame_skip` substeps of every world. With `graph`, they are captured once (after a first plain step has
        loaded every kernel: loading is not allowed during a capture) and replayed as one launch, instead of a few
        hundred kernel launches from Python per env step, which dominate at small N on a GPU."""
        wp, mjw = self._wp, self._mjw
        if self._graph is None and self._use_graph and self._stepped:
            with wp.ScopedCapture() as capture:
                for _ in range(self.frame_skip):
                    mjw.step(self._m, self._d)
            self._graph = capture.graph
        if self._graph is not None:
            wp.capture_launch(self._graph)
            return
        for _ in range(self.frame_skip):
            mjw.step(self._m, self._d)
        self._stepped = True

    def _rows(self, ids: Tensor | None) -> Tensor | slice:
        return slice(None) if ids is None else ids.to(self.device)

    def _mask(self, ids: Tensor) -> Tensor:
        """bool [N], True at `ids`."""
        mask = torch.zeros(self.num_envs, dtype=torch.bool, device=self.device)
        mask[ids.to(self.device)] = True
        return mask

    def _others_of(self, mask: Tensor) -> Any:
        """The Warp bool [N] mask of the worlds *not* in `mask` (computed by torch before the Warp block uses it)."""
        self._others = ~mask  # kept alive: the Warp array aliases its memory
        return self._wp.from_torch(self._others)

    def _check_overflow(self) -> None:
        if self._overflow is not None and bool(self._overflow.any()):
            worlds = self._overflow.nonzero().flatten().tolist()[:5]
            raise RuntimeError(f"MJWarp contact/constraint buffers overflowed in worlds {worlds}: build the "
                               "simulator with larger nconmax/njmax")


SETCONST_OUTPUTS = ("body_subtreemass", "dof_invweight0", "body_invweight0", "tendon_invweight0", "tendon_length0",
                    "actuator_acc0", "geom_aabb", "geom_rbound", "geom_size", "eq_data", "cam_pos0", "cam_poscom0",
                    "cam_mat0", "light_pos0", "light_poscom0", "light_dir0")
"""Model arrays MJWarp's `set_const` writes (mujoco_warp/_src/set_const.py); each row per world when written."""


def _batchable(wp: Any, m: Any, name: str) -> bool:
    field = getattr(m, name, None)
    return isinstance(field, wp.array) and getattr(field, "_is_batched", False)


def wp_field_per_world(wp: Any, m: Any, name: str, num_envs: int) -> tuple[Any, bool]:
    """The MJWarp model array `name` ("opt.gravity", "body_mass", ...) with a leading world dim of `num_envs`, and
    whether it was replaced by this call.

    MJWarp shares a field across worlds while its leading dim is 1 and indexes it by world otherwise (it reads row
    ``world % rows``), so the first write replaces the shared array by a per-world copy; later writes reuse it.
    """
    owner, attr = (m.opt, name[4:]) if name.startswith("opt.") else (m, name)
    field = getattr(owner, attr, None)
    if field is None or not isinstance(field, wp.array):
        raise ValueError(f"{name!r} is not an MJWarp model array")
    if field.shape[0] == num_envs:
        return field, False
    if field.shape[0] != 1 or not getattr(field, "_is_batched", False):
        raise ValueError(f"MJWarp model field {name!r} cannot be set per world (it has no world dimension)")
    tiled = np.repeat(field.numpy(), num_envs, axis=0)
    per_world = wp.array(tiled, dtype=field.dtype, device=field.device)
    per_world._is_batched = True  # as put_model marks the arrays it batches
    setattr(owner, attr, per_world)
    return per_world, True
