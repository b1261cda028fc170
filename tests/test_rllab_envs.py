"""`rllab=True` on the HalfCheetah and Ant families: the env of the MAML paper's code (rllab's MujocoEnv), checked
against rllab's own algorithm written out on plain MjData, independently of the batched simulator and its sensors:
`mj_step` × frame_skip then `mj_forward`; the velocity is rllab's `body_comvels` (each body's COM velocity from
`mj_objectVelocity`, mass-weighted over the torso's subtree), the observation appends `com_subtree` of the torso
(the ant's also the torso's `xmat` and every body's clipped `cfrc_ext`, which MuJoCo 1.x's `mj_forward` computed)."""

from __future__ import annotations

import json
from pathlib import Path

import mujoco
import numpy as np
import pytest
import torch

import metarl
from metarl import driver
from metarl.cli import main
from metarl.envs.locomotion import ASSETS, RLLAB_QPOS_NOISE, RLLAB_QVEL_NOISE

N, STEPS = 3, 40


def rllab_comvel(model: mujoco.MjModel, data: mujoco.MjData, body: int) -> np.ndarray:
    """rllab's `body_comvels[body]`: the mass-weighted mean of the COM velocities of `body`'s subtree."""
    vel = np.zeros((model.nbody, 6))
    for i in range(model.nbody):
        mujoco.mj_objectVelocity(model, data, mujoco.mjtObj.mjOBJ_BODY, i, vel[i], 0)
    momentum, mass = vel[:, 3:] * model.body_mass[:, None], model.body_mass.copy()
    for i in range(model.nbody - 1, 0, -1):  # children have larger ids: accumulate leaves first
        parent = model.body_parentid[i]
        momentum[parent] += momentum[i]
        mass[parent] += mass[i]
    return momentum[body] / mass[body]


def rllab_rollout(frame_skip: int, qpos: np.ndarray, qvel: np.ndarray, actions: np.ndarray) -> dict[str, np.ndarray]:
    """Observations [T, N, 20] and forward velocities [T, N] of rllab's half-cheetah from the given states, on the
    MJCF without sensors."""
    model = mujoco.MjModel.from_xml_path(str(metarl.make("HalfCheetahVel-v0").xml))
    torso = model.body("torso").id
    obs, vel = np.zeros((len(actions), len(qpos), 20)), np.zeros((len(actions), len(qpos)))
    for n in range(len(qpos)):
        data = mujoco.MjData(model)
        data.qpos[:], data.qvel[:] = qpos[n], qvel[n]
        mujoco.mj_forward(model, data)
        for t, action in enumerate(actions[:, n]):
            data.ctrl[:] = action
            for _ in range(frame_skip):
                mujoco.mj_step(model, data)
            mujoco.mj_forward(model, data)
            obs[t, n] = np.concatenate([data.qpos[1:], data.qvel, data.subtree_com[torso]])
            vel[t, n] = rllab_comvel(model, data, torso)[0]
    return {"obs": obs, "vel": vel}


@pytest.mark.parametrize("frame_skip", [1, 5])
def test_rllab_cheetah_is_rllabs_env_step_for_step(frame_skip: int) -> None:
    family = metarl.make("HalfCheetahVel-v0", rllab=True, frame_skip=frame_skip)
    assert family.obs_dim == 20
    env = family.make_env(N)
    tasks = family.sample_tasks(N, torch.Generator().manual_seed(0))
    rng = np.random.default_rng(0)
    qpos = family.init_qpos.numpy() + 0.01 * rng.standard_normal((N, family.model.nq))
    qvel = 0.1 * rng.standard_normal((N, family.model.nv))
    actions = rng.uniform(-1.0, 1.0, (STEPS, N, family.act_dim))
    ref = rllab_rollout(frame_skip, qpos, qvel, actions)
    env.set_state(torch.from_numpy(qpos), torch.from_numpy(qvel))
    for t in range(STEPS):
        out = env.step(tasks, torch.from_numpy(actions[t]))
        np.testing.assert_allclose(out.obs.numpy(), ref["obs"][t], rtol=0, atol=1e-12)
        np.testing.assert_allclose(out.info["x_velocity"].numpy(), ref["vel"][t], rtol=0, atol=1e-12)
        # the paper's reward: −|v_com − v*| − 0.05‖a‖² (rllab: 1e-1·0.5·Σa²)
        expected = -np.abs(ref["vel"][t] - tasks.goal_vel.numpy()) - 0.05 * np.square(actions[t]).sum(-1)
        np.testing.assert_allclose(out.reward.numpy(), expected, rtol=0, atol=1e-12)


def test_rllab_changes_what_is_observed_and_rewarded_not_the_physics() -> None:
    """Same states and actions: the trajectory is Gymnasium's bit for bit (sensors computed at the new state do not
    change the next step); the COM velocity is not the root's finite difference; masked steps keep the others'."""
    gym, rllab = metarl.make("HalfCheetahDir-v0", frame_skip=1), metarl.make("HalfCheetahDir-v0", frame_skip=1,
                                                                           rllab=True)
    envs = [gym.make_env(N), rllab.make_env(N)]
    tasks = gym.sample_tasks(N, torch.Generator().manual_seed(0))
    g = torch.Generator().manual_seed(1)
    qpos = gym.init_qpos + 0.1 * torch.randn(N, gym.model.nq, generator=g, dtype=torch.float64)
    qvel = 0.1 * torch.randn(N, gym.model.nv, generator=g, dtype=torch.float64)
    for env in envs:
        env.set_state(qpos, qvel)
    for t in range(30):
        act = torch.rand(N, gym.act_dim, generator=g, dtype=torch.float64) * 2 - 1
        ids = None if t < 20 else torch.tensor([0, 2])
        if t == 20:
            frozen = envs[1].sim.sensordata()[1].clone()
        outs = [env.step(tasks, act, ids) for env in envs]
        assert torch.equal(envs[0].sim.qpos, envs[1].sim.qpos)
        assert torch.equal(outs[0].obs, outs[1].obs[:, :17])
    assert not torch.allclose(outs[0].info["x_velocity"], outs[1].info["x_velocity"], atol=1e-3)
    assert torch.equal(envs[1].sim.sensordata()[1], frozen)  # env 1 did not step after step 20


def test_rllab_reset_noise_is_rllabs() -> None:
    """qpos0 + 0.01·N(0, 1) and qvel0 + 0.1·N(0, 1) (Gymnasium: U(±0.1) and 0.1·N(0, 1)): sample moments, 4 SE."""
    family = metarl.make("HalfCheetahVel-v0", rllab=True)
    qpos, qvel = family.initial_state(20_000, torch.Generator().manual_seed(0))
    noise = qpos - family.init_qpos
    n = noise.numel()
    assert abs(noise.mean().item()) < 4 * RLLAB_QPOS_NOISE / n**0.5
    assert abs(noise.std().item() / RLLAB_QPOS_NOISE - 1) < 4 / (2 * n) ** 0.5
    assert abs(qvel.std().item() / RLLAB_QVEL_NOISE - 1) < 4 / (2 * qvel.numel()) ** 0.5
    gaussian_kurtosis = ((noise / noise.std()) ** 4).mean().item()  # 3 for a normal, 1.8 for a uniform
    assert abs(gaussian_kurtosis - 3.0) < 0.1


@pytest.mark.parametrize("bad", [2, "yes", 0.5])
def test_rllab_must_be_a_boolean(bad: object) -> None:
    with pytest.raises(ValueError, match="rllab must be true or false"):
        metarl.make("HalfCheetahVel-v0", rllab=bad)


def test_rllab_trains_and_resumes_from_the_command_line(tmp_path: Path) -> None:
    """The kwarg reaches the family through --run.family-kwargs and the run's family.json, which resume reads."""
    main(["train", "maml", "--family", "HalfCheetahVel-v0", "--meta-batch-size", "2", "--episodes-per-task", "2",
          "--run.iterations", "1", "--run.runs-dir", str(tmp_path), "--run.family-kwargs", "rllab", "1",
          "frame_skip", "1", "--policy.hidden", "8", "--run.no-tensorboard"])
    (run,) = tmp_path.iterdir()
    kwargs = json.loads((run / "family.json").read_text())["kwargs"]
    assert kwargs["rllab"] == 1 and kwargs["frame_skip"] == 1
    opened = driver.open_run(run)
    assert opened.payload["state"]["params"]["net.0.weight"].shape[-1] == 20  # the policy sees the 20-D observation
    main(["train", "--resume", str(run), "--run.iterations", "2"])
    assert len((run / "metrics.jsonl").read_text().splitlines()) == 2


# ---------------------------------------------------------------------------------------------------- the ant


def rllab_ant_model() -> mujoco.MjModel:
    """rllab's ant.xml as it differs from the vendored Gymnasium one, by editing the MJCF text: one RK4 step of
    0.02 s, solimp 0.8 0.8 0.01 in the geom default (rllab's motors, ±150 without gear, apply the same torques as
    Gymnasium's ±1 with gear 150 once rllab's `normalize` scales the actions)."""
    xml = (ASSETS / "ant.xml").read_text()
    edited = xml.replace('timestep="0.01"', 'timestep="0.02"').replace(
        '<geom conaffinity="0" condim="3"', '<geom solimp=".8 .8 .01" conaffinity="0" condim="3"')
    assert edited.count("0.02") == xml.count("0.02") + 1 and 'solimp=".8 .8 .01"' in edited
    return mujoco.MjModel.from_xml_string(edited)


def rllab_ant_rollout(qpos: np.ndarray, qvel: np.ndarray, actions: np.ndarray) -> dict[str, np.ndarray]:
    """rllab's AntEnvRand on plain MjData: observations [T, N, 125], COM velocities [T, N], contact costs [T, N],
    torso heights [T, N] from the given states and actions (in the bounds: the sampler clips them, as rllab's
    normalize did)."""
    model = rllab_ant_model()
    torso = model.body("torso").id
    steps, n = actions.shape[:2]
    out = {"first": np.zeros((n, 125)), "obs": np.zeros((steps, n, 125)), "vel": np.zeros((steps, n)),
           "contact": np.zeros((steps, n)), "z": np.zeros((steps, n))}

    def observe(data: mujoco.MjData) -> np.ndarray:
        mujoco.mj_forward(model, data)  # rllab: after the reset and after each step
        mujoco.mj_rnePostConstraint(model, data)  # part of MuJoCo 1.x's mj_forward
        forces = np.clip(data.cfrc_ext, -1.0, 1.0)
        return np.concatenate([data.qpos, data.qvel, forces.ravel(), data.xmat[torso], data.subtree_com[torso]])

    for i in range(n):
        data = mujoco.MjData(model)
        data.qpos[:], data.qvel[:] = qpos[i], qvel[i]
        out["first"][i] = observe(data)
        for t, action in enumerate(actions[:, i]):
            data.ctrl[:] = action
            mujoco.mj_step(model, data)
            out["obs"][t, i] = observe(data)
            forces = out["obs"][t, i, 29:113]
            out["vel"][t, i] = rllab_comvel(model, data, torso)[0]
            out["contact"][t, i] = np.square(forces).sum()
            out["z"][t, i] = data.qpos[2]
    return out


@pytest.mark.parametrize("family_id", ["AntVel-v0", "AntDir-v0"])
def test_rllab_ant_is_rllabs_env_step_for_step(family_id: str) -> None:
    family = metarl.make(family_id, rllab=True, frame_skip=2)
    env = family.make_env(N)
    assert family.obs_dim == 125 and env.sim.dt == pytest.approx(0.02)
    tasks = family.sample_tasks(N, torch.Generator().manual_seed(0))
    rng = np.random.default_rng(0)
    init = rllab_ant_model().numeric("init_qpos").data  # rllab starts from the MJCF's standing pose
    qpos = init + 0.01 * rng.standard_normal((N, family.model.nq))
    qvel = 0.1 * rng.standard_normal((N, family.model.nv))
    actions = rng.uniform(-1.0, 1.0, (STEPS, N, family.act_dim))
    ref = rllab_ant_rollout(qpos, qvel, actions)
    assert np.abs(ref["obs"][:, :, 29:113]).max() > 0.5  # the contact forces are in play,
    assert np.abs(ref["first"][:, 29:113]).max() > 0.1  # from the standing start
    first = env.set_state(torch.from_numpy(qpos), torch.from_numpy(qvel))
    np.testing.assert_allclose(first.numpy(), ref["first"], rtol=0, atol=1e-12)
    for t in range(STEPS):
        out = env.step(tasks, torch.from_numpy(actions[t]))
        np.testing.assert_allclose(out.obs.numpy(), ref["obs"][t], rtol=0, atol=1e-12)
        np.testing.assert_allclose(out.info["x_velocity"].numpy(), ref["vel"][t], rtol=0, atol=1e-12)
        costs = 0.005 * np.square(actions[t]).sum(-1) + 5e-4 * ref["contact"][t] - 0.05
        if family_id == "AntVel-v0":  # −|v_com − v*| + 1 − costs
            expected = -np.abs(ref["vel"][t] - tasks.goal_vel.numpy()) + 1.0 - costs
        else:  # d·v_com − costs
            expected = tasks.direction.numpy() * ref["vel"][t] - costs
        np.testing.assert_allclose(out.reward.numpy(), expected, rtol=0, atol=1e-12)
        healthy = (ref["z"][t] >= 0.2) & (ref["z"][t] <= 1.0)
        np.testing.assert_array_equal(out.terminated.numpy(), ~healthy)


def test_rllab_ant_reset_is_the_standing_pose_with_rllabs_noise() -> None:
    family = metarl.make("AntVel-v0", rllab=True)
    assert family.init_qpos[2].item() == 0.55 and family.init_qpos[8].item() == 1.0  # torso 0.55 m, ankle bent
    qpos, qvel = family.initial_state(20_000, torch.Generator().manual_seed(0))
    noise = qpos - family.init_qpos
    assert abs(noise.std().item() / RLLAB_QPOS_NOISE - 1) < 4 / (2 * noise.numel()) ** 0.5
    assert abs(qvel.std().item() / RLLAB_QVEL_NOISE - 1) < 4 / (2 * qvel.numel()) ** 0.5
    gym = metarl.make("AntVel-v0")
    assert gym.init_qpos[2].item() == 0.75 and gym.obs_dim == 105  # Gymnasium's Ant-v5 is untouched


def test_rllab_ant_rejects_what_it_cannot_honour() -> None:
    with pytest.raises(ValueError, match="leave contact_obs on"):
        metarl.make("AntVel-v0", rllab=True, contact_obs=False)
    with pytest.raises(ValueError, match="cpu backend only"):
        metarl.make("AntDir-v0", rllab=True).make_env(2, backend="warp")
    with pytest.raises(ValueError, match="rllab must be true or false"):
        metarl.make("AntDir-v0", rllab=2)
