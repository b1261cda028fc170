"""Shared pieces of the HalfCheetah and Ant families: models, observations, costs, task types, slope gravity.

Both bodies follow Gymnasium's v5 envs exactly (vendored MJCF, frame_skip 5, reset noise 0.1, observations), so a
(family, task) rollout is bit-identical to Gymnasium's HalfCheetah-v5 / Ant-v5 for the same actions and initial state.
Rewards follow the MAML paper's task definitions (notes/anchors-metarl.md §2).
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import ClassVar, NamedTuple

import mujoco
import torch
from torch import Tensor

from metarl.camera import Camera
from metarl.family import MujocoFamily, check_range, random_sign, uniform
from metarl.registry import FamilySpec
from metarl.sim import Simulator

ASSETS = Path(__file__).resolve().parent / "assets"
GRAVITY = 9.81


class VelTasks(NamedTuple):
    """Goal forward velocity per task, float64 [T] (m/s)."""

    goal_vel: Tensor


class DirTasks(NamedTuple):
    """Direction per task, float64 [T] of ±1 (+1: run forward)."""

    direction: Tensor


class SlopeTasks(NamedTuple):
    """Slope per task, float64 [T] in radians (uphill along +x)."""

    slope: Tensor


def slope_gravity(slope: Tensor) -> Tensor:
    """float64 [N, 3] gravity for slopes [N] (radians): flat ground with gravity tilted by the slope angle.

    An infinite incline of angle θ is flat ground with g = 9.81·(−sin θ, 0, −cos θ): the same physics in slope
    coordinates (batched-sim.md §5, identical to a tilted plane to 1e-12), so qpos[0] is distance along the slope and
    the observation is slope-invariant.
    """
    return GRAVITY * torch.stack([-torch.sin(slope), torch.zeros_like(slope), -torch.cos(slope)], dim=-1)


def sample_velocities(n: int, low: float, high: float, generator: torch.Generator) -> VelTasks:
    return VelTasks(uniform(n, low, high, generator))


def sample_directions(n: int, generator: torch.Generator) -> DirTasks:
    return DirTasks(random_sign(n, generator))


def check_slope_range(low_deg: float, high_deg: float) -> None:
    """Slopes are degrees within ±45° (beyond that no gait stands, and the gravity tilt is meaningless)."""
    check_range("slope (degrees)", low_deg, high_deg)
    if not -45.0 <= low_deg <= high_deg <= 45.0:
        raise ValueError(f"slopes must lie within ±45°, got [{low_deg}, {high_deg}]")


def sample_slopes(n: int, low_deg: float, high_deg: float, generator: torch.Generator) -> SlopeTasks:
    return SlopeTasks(uniform(n, math.radians(low_deg), math.radians(high_deg), generator))


def control_cost(action: Tensor, weight: float) -> Tensor:
    """float64 [N]: weight·‖a‖²."""
    return weight * action.square().sum(-1)


RLLAB_QPOS_NOISE, RLLAB_QVEL_NOISE = 0.01, 0.1
"""rllab's MujocoEnv reset: qpos0 + 0.01·N(0, 1), qvel0 + 0.1·N(0, 1)."""


class CheetahFamily(MujocoFamily):
    """HalfCheetah (Gymnasium HalfCheetah-v5 model and observation: qpos[1:], qvel; 17-D obs, 6-D action).

    With `rllab=True`, the env of the MAML paper's code instead (rllab's MujocoEnv and its half-cheetah, on the same
    MJCF), in the three ways it differs from Gymnasium's:
    - forward velocity: the centre-of-mass velocity of the torso's subtree (the whole cheetah) at the new state
      (rllab's `get_body_comvel("torso")`: bodies' COM velocities, mass-weighted over the subtree, after the
      `mj_forward` it runs after `mj_step`), where Gymnasium differentiates qpos[0] (the root) over the step;
    - observation: qpos[1:], qvel and the torso subtree's centre of mass `get_body_com("torso")` (20-D);
    - reset: qpos0 + 0.01·N(0, 1), qvel0 + 0.1·N(0, 1) (`reset_noise_scale` is not used).
    Both read MuJoCo sensors (`subtreelinvel`, `subtreecom` on the torso) computed at the new state
    (`MujocoFamily.current`); the physics and the trajectory for given actions are Gymnasium's exactly.

    Args:
        spec: the registered spec.
        ctrl_cost_weight: w in the control cost −w·‖a‖² (MAML: 0.05).
        reset_noise_scale: Gymnasium's reset noise.
        frame_skip: physics substeps (0.01 s each) per env step. Gymnasium's 5 (the default: 200 steps are 10 s);
            the MAML paper's rllab cheetah stepped once (`frame_skip=1`: 200 steps are 2 s).
        rllab: the MAML paper's rllab env (above) instead of Gymnasium's HalfCheetah-v5.
    """

    xml: ClassVar[Path] = ASSETS / "half_cheetah.xml"
    obs_skip: ClassVar[int] = 1
    camera: ClassVar[Camera] = Camera(name="track")  # the MJCF's camera following the centre of mass, 3 m aside

    def __init__(self, spec: FamilySpec, ctrl_cost_weight: float = 0.05, reset_noise_scale: float = 0.1,
                 frame_skip: int | None = None, rllab: bool = False) -> None:
        if not isinstance(rllab, bool) and rllab not in (0, 1):  # command-line kwargs may arrive as 0.0 / 1.0
            raise ValueError(f"rllab must be true or false, got {rllab!r}")
        self.rllab = bool(rllab)
        super().__init__(spec, reset_noise_scale=reset_noise_scale, frame_skip=frame_skip)
        self.ctrl_cost_weight = ctrl_cost_weight
        if self.rllab:
            self.persistent = self.current = True  # sensors read at the new state, kept per simulation
            self.obs_dim += 3

    def load_model(self) -> mujoco.MjModel:
        if not self.rllab:
            return super().load_model()
        spec = mujoco.MjSpec.from_file(str(self.xml))
        # sensordata[:, 0:3]: the torso subtree's COM velocity; [:, 3:6]: its COM (rllab's body_comvels, com_subtree)
        for kind in (mujoco.mjtSensor.mjSENS_SUBTREELINVEL, mujoco.mjtSensor.mjSENS_SUBTREECOM):
            spec.add_sensor(type=kind, objtype=mujoco.mjtObj.mjOBJ_BODY, objname="torso")
        return spec.compile()

    def initial_state(self, n: int, generator: torch.Generator) -> tuple[Tensor, Tensor]:
        if not self.rllab:
            return super().initial_state(n, generator)
        nq, nv = self.init_qpos.numel(), self.init_qvel.numel()
        qpos = self.init_qpos + RLLAB_QPOS_NOISE * torch.randn(n, nq, generator=generator, dtype=torch.float64)
        qvel = self.init_qvel + RLLAB_QVEL_NOISE * torch.randn(n, nv, generator=generator, dtype=torch.float64)
        return qpos, qvel

    def observe(self, sim: Simulator) -> Tensor:
        if not self.rllab:
            return super().observe(sim)
        return torch.cat([sim.obs_state[:, self.obs_skip :], sim.sensordata()[:, 3:6]], dim=1)

    def x_velocity(self, sim: Simulator, x_before: Tensor) -> Tensor:
        if not self.rllab:
            return super().x_velocity(sim, x_before)
        return sim.sensordata()[:, 0]


class AntFamily(MujocoFamily):
    """Ant (Gymnasium Ant-v5 model and observation: qpos[2:], qvel, clip(cfrc_ext[1:], −1, 1); 105-D obs, 8-D action).

    The reward's costs follow MAML's ant envs: control 0.005·‖a‖², contact 5e-4·‖clip(cfrc_ext)‖², survive +0.05;
    the episode terminates when the torso height leaves [0.2, 1.0] or the state is not finite.

    Args:
        spec: the registered spec.
        ctrl_cost_weight: control cost weight (MAML: 0.5·1e-2).
        contact_cost_weight: contact cost weight (MAML: 0.5·1e-3).
        survive_reward: per-step bonus while alive (MAML: 0.05; ProMP/learn2learn: 1.0).
        contact_obs: append the 78 clipped contact forces to the observation (Ant-v5 default).
        terminate_when_unhealthy: end the episode when the ant falls or flips.
        reset_noise_scale: Gymnasium's reset noise.
        frame_skip: physics substeps (0.01 s each) per env step: Gymnasium's 5 by default; the MAML paper's rllab
            ant stepped 0.02 s (`frame_skip=2`).
    """

    xml: ClassVar[Path] = ASSETS / "ant.xml"
    obs_skip: ClassVar[int] = 2
    camera: ClassVar[Camera] = Camera(name="track")  # the MJCF's camera following the centre of mass, 3 m aside
    persistent: ClassVar[bool] = True
    healthy_z: ClassVar[tuple[float, float]] = (0.2, 1.0)

    def __init__(
        self,
        spec: FamilySpec,
        ctrl_cost_weight: float = 0.005,
        contact_cost_weight: float = 5e-4,
        survive_reward: float = 0.05,
        contact_obs: bool = True,
        terminate_when_unhealthy: bool = True,
        reset_noise_scale: float = 0.1,
        frame_skip: int | None = None,
    ) -> None:
        super().__init__(spec, reset_noise_scale=reset_noise_scale, frame_skip=frame_skip)
        self.ctrl_cost_weight = ctrl_cost_weight
        self.contact_cost_weight = contact_cost_weight
        self.survive_reward = survive_reward
        self.contact_obs = contact_obs
        self.terminate_when_unhealthy = terminate_when_unhealthy
        if contact_obs:
            self.obs_dim += (self.model.nbody - 1) * 6

    def x_position(self, sim: Simulator) -> Tensor:
        # Ant-v5 differentiates the torso's xpos (not qpos): after an RK4 step it is the last intermediate stage
        return sim.body_xpos()[:, 1, 0]

    def observe(self, sim: Simulator) -> Tensor:
        state = sim.obs_state[:, self.obs_skip :]
        if not self.contact_obs:
            return state.clone()
        forces = sim.contact_forces()[:, 1:].clamp(-1.0, 1.0).flatten(1)
        return torch.cat([state, forces], dim=1)

    def common_terms(self, sim: Simulator, action: Tensor) -> dict[str, Tensor]:
        """The task-independent reward terms: control and contact costs, survive bonus (float64 [N] each)."""
        contact = sim.contact_forces().clamp(-1.0, 1.0).square().sum((1, 2))
        return {
            "reward_ctrl": -control_cost(action, self.ctrl_cost_weight),
            "reward_contact": -self.contact_cost_weight * contact,
            "reward_survive": torch.full((sim.num_envs,), self.survive_reward, dtype=torch.float64,
                                         device=sim.device),
        }

    def terminated(self, sim: Simulator) -> Tensor:
        if not self.terminate_when_unhealthy:
            return super().terminated(sim)
        z = sim.qpos[:, 2]
        finite = torch.isfinite(sim.obs_state).all(dim=1)
        low, high = self.healthy_z
        return ~(finite & (z >= low) & (z <= high))

