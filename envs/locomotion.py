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
from metarl.family import MujocoFamily, MujocoVecEnv, check_range, check_rllab, random_sign, uniform
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

RLLAB_ANT_SOLIMP = (0.8, 0.8, 0.01)
"""rllab's ant.xml sets this solimp for every geom (MuJoCo's default: 0.9 0.95 0.001); its solref is the default."""

TORSO_COMVEL, TORSO_COM, TORSO_AXES = slice(0, 3), slice(3, 6), slice(6, 15)
"""Where `add_torso_sensors` puts the torso's readings in `sensordata` (columns)."""


def add_torso_sensors(spec: mujoco.MjSpec, axes: bool = False) -> None:
    """Sensors for rllab's readings of the torso, in `sensordata` columns `TORSO_COMVEL` (the torso subtree's COM
    velocity: rllab's `get_body_comvel`, bodies' COM velocities mass-weighted over the subtree), `TORSO_COM` (its
    COM: `get_body_com`) and, with `axes`, `TORSO_AXES` (the body frame's x, y, z axes, the columns of
    `get_body_xmat`; `torso_xmat` turns them into its rows)."""
    kinds = [(mujoco.mjtSensor.mjSENS_SUBTREELINVEL, mujoco.mjtObj.mjOBJ_BODY),
             (mujoco.mjtSensor.mjSENS_SUBTREECOM, mujoco.mjtObj.mjOBJ_BODY)]
    if axes:  # XBODY: the body frame (xmat), not the inertial frame (ximat)
        kinds += [(kind, mujoco.mjtObj.mjOBJ_XBODY) for kind in (
            mujoco.mjtSensor.mjSENS_FRAMEXAXIS, mujoco.mjtSensor.mjSENS_FRAMEYAXIS, mujoco.mjtSensor.mjSENS_FRAMEZAXIS)]
    for kind, objtype in kinds:
        spec.add_sensor(type=kind, objtype=objtype, objname="torso")


def torso_xmat(sensordata: Tensor) -> Tensor:
    """float64 [N, 9]: the torso's rotation matrix row-major (rllab's `get_body_xmat("torso").flat`) from the axis
    sensors of `add_torso_sensors` (float64 [N, nsensordata]), which hold its columns."""
    return sensordata[:, TORSO_AXES].reshape(-1, 3, 3).transpose(1, 2).flatten(1)


def rllab_initial_state(init_qpos: Tensor, init_qvel: Tensor, n: int,
                        generator: torch.Generator) -> tuple[Tensor, Tensor]:
    """float64 qpos [n, nq], qvel [n, nv]: rllab's reset, qpos0 + 0.01·N(0, 1), qvel0 + 0.1·N(0, 1)."""
    qpos = init_qpos + RLLAB_QPOS_NOISE * torch.randn(n, init_qpos.numel(), generator=generator, dtype=torch.float64)
    qvel = init_qvel + RLLAB_QVEL_NOISE * torch.randn(n, init_qvel.numel(), generator=generator, dtype=torch.float64)
    return qpos, qvel


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
        self.rllab = check_rllab(rllab)
        super().__init__(spec, reset_noise_scale=reset_noise_scale, frame_skip=frame_skip)
        self.ctrl_cost_weight = ctrl_cost_weight
        if self.rllab:
            self.persistent = self.current = True  # sensors read at the new state, kept per simulation
            self.obs_dim += 3

    def load_model(self) -> mujoco.MjModel:
        if not self.rllab:
            return super().load_model()
        spec = mujoco.MjSpec.from_file(str(self.xml))
        add_torso_sensors(spec)
        return spec.compile()

    def initial_state(self, n: int, generator: torch.Generator) -> tuple[Tensor, Tensor]:
        if not self.rllab:
            return super().initial_state(n, generator)
        return rllab_initial_state(self.init_qpos, self.init_qvel, n, generator)

    def observe(self, sim: Simulator) -> Tensor:
        if not self.rllab:
            return super().observe(sim)
        return torch.cat([sim.obs_state[:, self.obs_skip :], sim.sensordata()[:, TORSO_COM]], dim=1)

    def x_velocity(self, sim: Simulator, x_before: Tensor) -> Tensor:
        if not self.rllab:
            return super().x_velocity(sim, x_before)
        return sim.sensordata()[:, TORSO_COMVEL][:, 0]


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
        rllab: the env of the MAML paper's code instead (rllab's MujocoEnv and its `ant_env_rand*.py`), in the ways
            it differs from Gymnasium's Ant-v5 on the same bodies:
            - forward velocity: the torso subtree's (the whole ant's) centre-of-mass velocity at the new state
              (rllab's `get_body_comvel("torso")`), where Gymnasium differentiates the torso's position;
            - observation (125-D): the full qpos (x and y included), qvel, clip(cfrc_ext, −1, 1) of every body
              (the world's included), the torso's rotation matrix and the torso subtree's COM, with the contact
              forces at the new state (MuJoCo 1.x's `mj_forward`, which rllab ran after each step, computed them);
            - reset: the MJCF's standing pose (`init_qpos`: torso at 0.55 m, ankles bent) + 0.01·N(0, 1), qvel
              0.1·N(0, 1), where Gymnasium starts from qpos0 (torso at 0.75 m, legs flat) + U(±0.1);
            - physics: rllab's ant.xml: one RK4 step of the whole env step (its 0.02 s; here 0.01·frame_skip s)
              instead of `frame_skip` steps of 0.01 s, and softer contacts (every geom's solimp 0.8 0.8 0.01,
              MuJoCo's default being 0.9 0.95 0.001). Its motors (ctrlrange ±150, gear 1, actions scaled by
              rllab's `normalize`) apply the same torques as Gymnasium's (ctrlrange ±1, gear 150).
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
        rllab: bool = False,
    ) -> None:
        self.rllab = check_rllab(rllab)
        if self.rllab and not contact_obs:
            raise ValueError("rllab=True observes the contact forces (rllab's ant did): leave contact_obs on")
        super().__init__(spec, reset_noise_scale=reset_noise_scale, frame_skip=frame_skip)
        self.ctrl_cost_weight = ctrl_cost_weight
        self.contact_cost_weight = contact_cost_weight
        self.survive_reward = survive_reward
        self.contact_obs = contact_obs
        self.terminate_when_unhealthy = terminate_when_unhealthy
        if self.rllab:
            self.frame_skip = 1  # load_model made the model's time step the whole env step
            self.current = True  # sensors and contact forces read at the new state
            self.init_qpos = torch.as_tensor(self.model.numeric("init_qpos").data, dtype=torch.float64).clone()
            self.obs_dim = self.model.nq + self.model.nv + self.model.nbody * 6 + 9 + 3
        elif contact_obs:
            self.obs_dim += (self.model.nbody - 1) * 6

    def load_model(self) -> mujoco.MjModel:
        if not self.rllab:
            return super().load_model()
        spec = mujoco.MjSpec.from_file(str(self.xml))
        spec.option.timestep *= self.frame_skip  # rllab's ant.xml: one RK4 step of 0.02 s per env step
        for geom in spec.geoms:
            geom.solimp[:3] = RLLAB_ANT_SOLIMP
        add_torso_sensors(spec, axes=True)
        return spec.compile()

    def make_env(self, num_envs: int, backend: str = "cpu") -> MujocoVecEnv:
        if self.rllab and backend != "cpu":
            # the contact forces at the new state take a whole forward pass on a copy of each simulation (`current`
            # in metarl.sim); MJWarp's worlds have no such copy, and a forward pass on them is not built
            raise ValueError(f"the Ant's rllab=True runs on the cpu backend only, not {backend!r}")
        return super().make_env(num_envs, backend)

    def initial_state(self, n: int, generator: torch.Generator) -> tuple[Tensor, Tensor]:
        if not self.rllab:
            return super().initial_state(n, generator)
        return rllab_initial_state(self.init_qpos, self.init_qvel, n, generator)

    def x_velocity(self, sim: Simulator, x_before: Tensor) -> Tensor:
        if not self.rllab:
            return super().x_velocity(sim, x_before)
        return sim.sensordata()[:, TORSO_COMVEL][:, 0]

    def x_position(self, sim: Simulator) -> Tensor:
        # Ant-v5 differentiates the torso's xpos (not qpos): after an RK4 step it is the last intermediate stage
        return sim.body_xpos()[:, 1, 0]

    def observe(self, sim: Simulator) -> Tensor:
        if self.rllab:
            sensors = sim.sensordata()
            forces = sim.contact_forces().clamp(-1.0, 1.0).flatten(1)
            return torch.cat([sim.obs_state, forces, torso_xmat(sensors), sensors[:, TORSO_COM]], dim=1)
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

