"""Every registered family's contract, plus physics checked against independent references.

The contract tests run over `metarl.registered()`, so a family registered by a future module is tested too. The
physics tests compare the HalfCheetah and Ant families with Gymnasium's HalfCheetah-v5 / Ant-v5 bit for bit (same
MuJoCo, same model, same state, same actions: anything but 0.0 difference is a bug), recompute rewards by hand, and
check PointNav against positions and distances written out by hand.
"""

from __future__ import annotations

import json
import math
from pathlib import Path

import gymnasium as gym
import numpy as np
import pytest
import torch
from torch import Tensor

import metarl
from metarl.family import MujocoFamily, MujocoVecEnv, StepResult, TaskFamily, tasks_to_dict
from metarl.policies import GaussianMLP, params_of
from metarl.sampler import Sampler

FAMILY_IDS = [s.id for s in metarl.registered()]
N = 3  # envs per contract test: enough to see per-env differences, small enough for the Ant's contact loop
STEPS = 8


def _random_actions(family: TaskFamily, steps: int, n: int, seed: int) -> Tensor:
    """float64 [steps, n, act_dim] uniform within the family's action bounds."""
    u = torch.rand(steps, n, family.act_dim, generator=torch.Generator().manual_seed(seed), dtype=torch.float64)
    return family.action_low + (family.action_high - family.action_low) * u


def _rollout(family: TaskFamily, tasks: tuple, actions: Tensor, seed: int) -> tuple[Tensor, list[StepResult]]:
    """A fresh env of len(tasks) sims, reset from `seed`, stepped with `actions`: (reset obs, step results)."""
    env = family.make_env(actions.shape[1])
    obs = env.reset(tasks, torch.Generator().manual_seed(seed))
    return obs, [env.step(tasks, a) for a in actions]


def _reward_terms(info: dict[str, Tensor]) -> dict[str, Tensor]:
    """The reward's named terms: by convention the `reward_*` entries of `StepResult.info`."""
    return {k: v for k, v in info.items() if k.startswith("reward_")}


# ----------------------------------------------------------------------------------------------- contract, every family
@pytest.mark.parametrize("family_id", FAMILY_IDS)
def test_sample_tasks_shapes_dtypes_and_seeded_determinism(family_id: str) -> None:
    family = metarl.make(family_id)
    for n in (1, 16):
        tasks = family.sample_tasks(n, torch.Generator().manual_seed(0))
        assert isinstance(tasks, family.Tasks)
        for field in tasks:
            assert field.dtype == torch.float64 and field.shape[0] == n and torch.isfinite(field).all()
    a, b, c = (family.sample_tasks(16, torch.Generator().manual_seed(s)) for s in (0, 0, 1))
    assert all(torch.equal(x, y) for x, y in zip(a, b, strict=True))
    assert not all(torch.equal(x, z) for x, z in zip(a, c, strict=True))  # the seed matters (2^-16 for ±1 tasks)


@pytest.mark.parametrize("family_id", FAMILY_IDS)
def test_make_tasks_round_trip(family_id: str) -> None:
    family = metarl.make(family_id)
    tasks = family.sample_tasks(4, torch.Generator().manual_seed(0))
    for fields in (tasks._asdict(), tasks_to_dict(tasks)):  # tensors, and JSON-friendly lists
        back = family.make_tasks(**fields)
        assert type(back) is type(tasks)
        assert all(torch.equal(x, y) for x, y in zip(back, tasks, strict=True))
    with pytest.raises(TypeError, match="fields"):
        family.make_tasks(not_a_field=[0.0])


@pytest.mark.parametrize("family_id", FAMILY_IDS)
def test_horizon_and_id_follow_the_spec(family_id: str) -> None:
    family = metarl.make(family_id)
    assert family.horizon == family.spec.horizon == metarl.spec(family_id).horizon
    assert family.id == family_id
    assert metarl.make(family_id, horizon=7).horizon == 7


@pytest.mark.parametrize("family_id", FAMILY_IDS)
def test_reset_and_step_shapes_dtypes_and_reward_terms(family_id: str) -> None:
    family = metarl.make(family_id)
    assert family.action_low.shape == family.action_high.shape == (family.act_dim,)
    assert bool((family.action_low < family.action_high).all())
    tasks = family.sample_tasks(N, torch.Generator().manual_seed(0))
    obs, steps = _rollout(family, tasks, _random_actions(family, STEPS, N, seed=1), seed=0)
    assert obs.dtype == torch.float64 and obs.shape == (N, family.obs_dim)
    for step in steps:
        assert step.obs.dtype == torch.float64 and step.obs.shape == (N, family.obs_dim)
        assert step.reward.dtype == torch.float64 and step.reward.shape == (N,)
        assert step.terminated.dtype == torch.bool and step.terminated.shape == (N,)
        for name, value in step.info.items():
            assert value.dtype == torch.float64 and value.shape == (N,), name
        terms = _reward_terms(step.info)
        assert terms, f"{family_id} reports no reward_* terms in StepResult.info"
        torch.testing.assert_close(torch.stack(list(terms.values())).sum(0), step.reward, rtol=1e-12, atol=1e-12)


@pytest.mark.parametrize("family_id", FAMILY_IDS)
def test_seeded_resets_and_rollouts_are_identical(family_id: str) -> None:
    family = metarl.make(family_id)
    tasks = family.sample_tasks(N, torch.Generator().manual_seed(0))
    actions = _random_actions(family, STEPS, N, seed=1)
    obs_a, steps_a = _rollout(family, tasks, actions, seed=0)
    obs_b, steps_b = _rollout(family, tasks, actions, seed=0)
    assert torch.equal(obs_a, obs_b)
    for a, b in zip(steps_a, steps_b, strict=True):
        assert torch.equal(a.obs, b.obs) and torch.equal(a.reward, b.reward)
        assert torch.equal(a.terminated, b.terminated)
        assert a.info.keys() == b.info.keys() and all(torch.equal(a.info[k], b.info[k]) for k in a.info)
    if isinstance(family, MujocoFamily):  # PointNav starts at the origin whatever the seed
        obs_c, _ = _rollout(family, tasks, actions[:0], seed=1)
        assert not torch.equal(obs_a, obs_c)


@pytest.mark.parametrize("family_id", FAMILY_IDS)
def test_masked_step_and_reset_touch_only_their_ids(family_id: str) -> None:
    family = metarl.make(family_id)
    tasks = family.sample_tasks(N, torch.Generator().manual_seed(0))
    actions = _random_actions(family, 2, N, seed=1)
    env = family.make_env(N)
    generator = torch.Generator().manual_seed(0)
    env.reset(tasks, generator)
    before = env.step(tasks, actions[0]).obs
    after = env.step(tasks, actions[1], ids=torch.tensor([0, 2])).obs
    assert torch.equal(after[1], before[1])  # env 1 was not stepped
    assert not torch.equal(after[0], before[0]) and not torch.equal(after[2], before[2])
    reset = env.reset(tasks, generator, ids=torch.tensor([1]))
    assert torch.equal(reset[[0, 2]], after[[0, 2]])
    assert not torch.equal(reset[1], after[1])


# ----------------------------------------------------------------------------------------------- vs Gymnasium
GYM_IDS = {
    "HalfCheetahVel-v0": "HalfCheetah-v5",
    "HalfCheetahDir-v0": "HalfCheetah-v5",
    "HalfCheetahUphill-v0": "HalfCheetah-v5",
    "AntVel-v0": "Ant-v5",
    "AntDir-v0": "Ant-v5",
    "AntUphill-v0": "Ant-v5",
}
TASKS = {"Vel": {"goal_vel": [0.5, 1.5]}, "Dir": {"direction": [1.0, -1.0]}, "Uphill": {"slope": [0.0, 0.0]}}


def _kind(family_id: str) -> str:
    return next(k for k in TASKS if k in family_id)


def _hand_reward(family_id: str, task: dict[str, float], v: float, a: np.ndarray, cfrc: np.ndarray) -> float:
    """The family's reward written out from its docstring (MAML's task definitions), from Gymnasium's x-velocity
    and contact forces: nothing of metarl's reward code is reused."""
    kind = _kind(family_id)
    if kind == "Vel":
        forward = -abs(v - task["goal_vel"]) + (1.0 if family_id.startswith("Ant") else 0.0)  # MAML's ant +1
    elif kind == "Dir":
        forward = task["direction"] * v
    else:
        forward = v
    if family_id.startswith("HalfCheetah"):
        return forward - 0.05 * float(np.sum(a**2))
    contact = 5e-4 * float(np.sum(np.clip(cfrc, -1.0, 1.0) ** 2))
    return forward - 0.005 * float(np.sum(a**2)) - contact + 0.05


@pytest.mark.parametrize(("family_id", "frame_skip"),
                         [(f, None) for f in GYM_IDS] + [("HalfCheetahDir-v0", 1), ("AntVel-v0", 2)])
def test_bit_exact_against_gymnasium(family_id: str, frame_skip: int | None) -> None:
    """Also with `frame_skip` (the MAML paper's rllab time steps: 1 for the cheetah, 2 for the ant), against
    Gymnasium's env made with the same frame_skip."""
    family = metarl.make(family_id, **({} if frame_skip is None else {"frame_skip": frame_skip}))
    assert family.frame_skip == (frame_skip or 5)
    gym_kwargs = {} if frame_skip is None else {"frame_skip": frame_skip}
    gym_envs = [gym.make(GYM_IDS[family_id], **gym_kwargs).unwrapped for _ in range(2)]
    gym_obs = [g.reset(seed=seed)[0] for seed, g in enumerate(gym_envs)]
    is_ant = family_id.startswith("Ant")
    if is_ant:  # start the second ant 0.4 m too high: unhealthy at first, so termination is exercised both ways
        qpos = gym_envs[1].data.qpos.copy()
        qpos[2] += 0.4
        gym_envs[1].set_state(qpos, gym_envs[1].data.qvel.copy())
        gym_obs[1] = np.concatenate([qpos[2:], gym_obs[1][qpos.size - 2 :]])  # qvel, cfrc unchanged
    tasks = family.make_tasks(**TASKS[_kind(family_id)])
    env = family.make_env(2)
    assert isinstance(env, MujocoVecEnv)
    env.reset(tasks, torch.Generator().manual_seed(0))  # writes the physics-side task fields (gravity for slopes)
    qpos = torch.from_numpy(np.stack([g.data.qpos for g in gym_envs]))
    qvel = torch.from_numpy(np.stack([g.data.qvel for g in gym_envs]))
    assert torch.equal(env.set_state(qpos, qvel), torch.from_numpy(np.stack(gym_obs)))
    rng = np.random.default_rng(0)
    seen_terminated: set[bool] = set()
    for _ in range(100):
        action = rng.uniform(-1.0, 1.0, size=(2, family.act_dim))
        ours = env.step(tasks, torch.from_numpy(action))
        theirs = [g.step(a) for g, a in zip(gym_envs, action, strict=True)]
        assert torch.equal(ours.obs, torch.from_numpy(np.stack([t[0] for t in theirs])))
        gym_v = torch.tensor([t[4]["x_velocity"] for t in theirs], dtype=torch.float64)
        assert torch.equal(ours.info["x_velocity"], gym_v)
        cfrc = [g.data.cfrc_ext.copy() for g in gym_envs]
        for i in range(2):
            task = {k: float(v[i]) for k, v in tasks._asdict().items()}
            hand = _hand_reward(family_id, task, float(gym_v[i]), action[i], cfrc[i])
            assert math.isclose(float(ours.reward[i]), hand, rel_tol=1e-12, abs_tol=1e-12)
        if is_ant:
            contact = -5e-4 * torch.tensor([np.sum(np.clip(c, -1.0, 1.0) ** 2) for c in cfrc])
            torch.testing.assert_close(ours.info["reward_contact"], contact, rtol=1e-12, atol=1e-15)
            assert ours.terminated.tolist() == [t[2] for t in theirs]
            seen_terminated.update(ours.terminated.tolist())
        else:
            assert not ours.terminated.any()
    if is_ant:
        assert seen_terminated == {True, False}
    for g in gym_envs:
        g.close()


# ----------------------------------------------------------------------------------------------- slopes
def _step_all(family: TaskFamily, env: MujocoVecEnv, tasks: tuple, actions: Tensor) -> tuple[Tensor, Tensor]:
    """Stack obs [S, N, obs] and x_velocity [S, N] over the action sequence [S, N, act]."""
    steps = [env.step(tasks, a) for a in actions]
    return torch.stack([s.obs for s in steps]), torch.stack([s.info["x_velocity"] for s in steps])


@pytest.mark.parametrize(("uphill_id", "flat_id"), [("HalfCheetahUphill-v0", "HalfCheetahVel-v0"),
                                                    ("AntUphill-v0", "AntVel-v0")])
def test_slope_zero_is_flat_dynamics_bit_for_bit(uphill_id: str, flat_id: str) -> None:
    uphill, flat = metarl.make(uphill_id), metarl.make(flat_id)
    up_tasks, flat_tasks = uphill.make_tasks(slope=[0.0, 0.0]), flat.make_tasks(goal_vel=[1.0, 1.0])
    up_env, flat_env = uphill.make_env(2), flat.make_env(2)
    # the same seed gives the same initial state: both draw Gymnasium's reset noise from the generator alone
    assert torch.equal(up_env.reset(up_tasks, torch.Generator().manual_seed(3)),
                       flat_env.reset(flat_tasks, torch.Generator().manual_seed(3)))
    actions = _random_actions(uphill, 100, 2, seed=4)
    up_obs, up_v = _step_all(uphill, up_env, up_tasks, actions)
    flat_obs, flat_v = _step_all(flat, flat_env, flat_tasks, actions)
    assert torch.equal(up_obs, flat_obs) and torch.equal(up_v, flat_v)


def test_positive_slope_makes_a_passive_cheetah_slide_back() -> None:
    # measured: after 100 zero-action steps (5 s) x ≈ +0.05/-0.02 m on flat ground and ≈ -0.45 m on 10°
    family = metarl.make("HalfCheetahUphill-v0")
    tasks = family.make_tasks(slope=[0.0, 0.0, math.radians(10.0), math.radians(10.0)])
    env = family.make_env(4)
    env.reset(tasks, torch.Generator().manual_seed(0))
    x0 = env.sim.qpos[:, 0].clone()
    for _ in range(100):
        env.step(tasks, torch.zeros(4, family.act_dim, dtype=torch.float64))
    dx = env.sim.qpos[:, 0] - x0
    assert bool((dx[:2].abs() < 0.1).all()), dx
    assert bool((dx[2:] < -0.25).all()), dx


@pytest.mark.parametrize("family_id", ["HalfCheetahUphill-v0", "AntUphill-v0"])
def test_per_sim_slopes_equal_separate_single_sim_batches(family_id: str) -> None:
    family = metarl.make(family_id)
    slopes = [math.radians(d) for d in (0.0, 5.0, 10.0, 15.0)]
    tasks = family.make_tasks(slope=slopes)
    env = family.make_env(len(slopes))
    env.reset(tasks, torch.Generator().manual_seed(0))
    qpos, qvel = env.sim.qpos.clone(), env.sim.qvel.clone()
    actions = _random_actions(family, 50, len(slopes), seed=1)
    batched_obs, batched_v = _step_all(family, env, tasks, actions)
    for i, slope in enumerate(slopes):
        single_tasks = family.make_tasks(slope=[slope])
        single = family.make_env(1)
        single.reset(single_tasks, torch.Generator().manual_seed(0))  # writes this sim's gravity
        single.set_state(qpos[i : i + 1], qvel[i : i + 1])
        obs, v = _step_all(family, single, single_tasks, actions[:, i : i + 1])
        assert torch.equal(obs[:, 0], batched_obs[:, i]) and torch.equal(v[:, 0], batched_v[:, i]), slope


# ----------------------------------------------------------------------------------------------- PointNav
def test_point_nav_rewards_and_positions_by_hand() -> None:
    family = metarl.make("PointNav-v0")
    goal = (0.3, -0.25)
    tasks = family.make_tasks(goal=[goal])
    env = family.make_env(1)
    assert torch.equal(env.reset(tasks, torch.Generator()), torch.zeros(1, 2, dtype=torch.float64))
    actions = _random_actions(family, 20, 1, seed=0)
    x = y = 0.0
    for a in actions:
        step = env.step(tasks, a)
        x, y = x + float(a[0, 0]), y + float(a[0, 1])  # the env adds the action as given (the sampler clips)
        assert step.obs.tolist() == [[x, y]]
        assert math.isclose(float(step.reward[0]), -math.hypot(x - goal[0], y - goal[1]), rel_tol=1e-12)


@pytest.mark.parametrize(("goal_x", "reached"), [(0.3, True), (0.305, True), (0.3099, True), (0.3101, False)])
def test_point_nav_terminates_within_tolerance(goal_x: float, reached: bool) -> None:
    family = metarl.make("PointNav-v0")  # goal_tolerance 0.01 per coordinate
    tasks = family.make_tasks(goal=[[goal_x, -0.2]])
    env = family.make_env(1)
    env.reset(tasks, torch.Generator())
    moves = [(0.1, -0.1), (0.1, -0.1), (0.1, 0.0)]  # ends at (0.3, -0.2) up to rounding
    done = [bool(env.step(tasks, torch.tensor([m], dtype=torch.float64)).terminated[0]) for m in moves]
    assert done == [False, False, reached]


def test_point_nav_sampler_clips_actions_and_stops_at_the_goal() -> None:
    family = metarl.make("PointNav-v0")
    policy = GaussianMLP(2, 2, hidden=()).double()
    params = params_of(policy)
    params["net.0.weight"].zero_()
    # mean action (0.5, -0.3): the sampler must clip it to (0.1, -0.1) before it reaches the env
    params["net.0.bias"].copy_(torch.tensor([0.5, -0.3], dtype=torch.float64))
    tasks = family.make_tasks(goal=[[0.3, -0.3]])
    batch = Sampler(family).sample(policy, params, tasks, episodes=1, generator=torch.Generator(), deterministic=True)
    # recorded actions are the policy's (unclipped); positions advance by the clipped step and reach the goal at h=2
    assert torch.equal(batch.act[0, 0, :3], torch.tensor([[0.5, -0.3]] * 3, dtype=torch.float64))
    expected_obs = [[0.0, 0.0], [0.1, -0.1], [0.1 + 0.1, -0.1 - 0.1]]
    assert batch.obs[0, 0, :3].tolist() == expected_obs
    hand = [-math.hypot(0.1 * k - 0.3, -0.1 * k + 0.3) for k in (1, 2, 3)]
    torch.testing.assert_close(batch.rew[0, 0, :3], torch.tensor(hand, dtype=torch.float64), rtol=1e-12, atol=1e-15)
    assert batch.done[0, 0].nonzero().flatten().tolist() == [2]
    assert batch.mask[0, 0].tolist() == [1.0] * 3 + [0.0] * (family.horizon - 3)
    assert batch.rew[0, 0, 3:].abs().sum() == 0 and batch.act[0, 0, 3:].abs().sum() == 0


def _rllab_point_path(goal: tuple[float, float], actions: np.ndarray) -> tuple[list[list[float]], list[float], int]:
    """The MAML paper's point env, cbfinn/maml_rl `point_env_randgoal.py` inside rllab's `normalize`, written out in
    NumPy for one episode of the policy's raw actions [H, 2]: (positions, rewards, steps until done)."""
    lb, ub = -0.1, 0.1
    state = np.zeros(2)
    positions, rewards = [], []
    for a in actions:
        scaled = np.clip(lb + (a + 1.0) * 0.5 * (ub - lb), lb, ub)  # NormalizedEnv.step
        state = state + scaled
        x, y = state[0] - goal[0], state[1] - goal[1]
        positions.append(state.tolist())
        rewards.append(-((x**2 + y**2) ** 0.5))
        if abs(x) < 0.01 and abs(y) < 0.01:
            break
    return positions, rewards, len(rewards)


def test_point_nav_rllab_steps_as_the_papers_normalized_point_env() -> None:
    family = metarl.make("PointNav-v0", rllab=True)
    assert family.action_low.tolist() == [-1.0, -1.0] and family.action_high.tolist() == [1.0, 1.0]
    policy = GaussianMLP(2, 2, hidden=(8,)).double()  # unit std: many actions beyond ±1, which rllab clips too
    params = params_of(policy)
    goals = [(0.05, -0.03), (0.3, -0.25), (-0.45, 0.1)]
    tasks = family.make_tasks(goal=goals)
    batch = Sampler(family).sample(policy, params, tasks, episodes=4, generator=torch.Generator().manual_seed(0))
    assert (batch.act.abs() > 1).any()  # the clipping is exercised
    ended = 0
    for t, goal in enumerate(goals):
        for e in range(4):
            positions, rewards, n = _rllab_point_path(goal, batch.act[t, e].numpy())
            ended += n < family.horizon
            assert batch.mask[t, e].sum() == n
            assert batch.obs[t, e, 1:n].tolist() == positions[:-1]  # obs[h] is the state before step h
            # the positions agree bit for bit; the distance is torch's norm against rllab's (x² + y²)^0.5: an ulp
            torch.testing.assert_close(batch.rew[t, e, :n], torch.tensor(rewards, dtype=torch.float64),
                                       rtol=1e-15, atol=0)
    assert ended > 0  # some episodes reach the goal and stop, as rllab's would


def test_point_nav_rllab_scales_a_unit_action_to_one_maximal_step() -> None:
    family = metarl.make("PointNav-v0", rllab=True, max_step=0.2)
    tasks = family.make_tasks(goal=[[0.4, 0.4]])
    env = family.make_env(1)
    env.reset(tasks, torch.Generator())
    step = env.step(tasks, torch.tensor([[1.0, -0.5]], dtype=torch.float64))
    torch.testing.assert_close(step.obs, torch.tensor([[0.2, -0.1]], dtype=torch.float64), rtol=0, atol=1e-15)


@pytest.mark.parametrize("bad", [2, -1, 0.5, "yes"])
def test_point_nav_rllab_must_be_a_bool(bad: object) -> None:
    with pytest.raises(ValueError, match="rllab must be true or false"):
        metarl.make("PointNav-v0", rllab=bad)


@pytest.mark.parametrize("bad", [0, -1, 1.5, True, float("inf"), "2"])
def test_frame_skip_must_be_a_positive_integer(bad: object) -> None:
    with pytest.raises(ValueError, match="frame_skip must be an integer >= 1"):
        metarl.make("HalfCheetahVel-v0", frame_skip=bad)


@pytest.mark.parametrize(("preset", "dt"), [("maml2017-cheetah-vel", 0.01), ("maml2017-cheetah-dir", 0.01),
                                            ("maml2017-ant-vel", 0.02), ("maml2017-ant-dir", 0.02)])
def test_paper_presets_step_as_the_papers_rllab_envs(preset: str, dt: float) -> None:
    """rllab's half_cheetah.xml sets no frame_skip (one 0.01 s step per env step); its ant.xml one 0.02 s step."""
    from metarl.algos.maml import PRESETS, MAMLConfig
    from metarl.config import apply_overrides

    cfg = apply_overrides(MAMLConfig(), PRESETS[preset])
    family = metarl.make(cfg.family, **cfg.run.family_kwargs)
    assert family.frame_skip * float(family.model.opt.timestep) == pytest.approx(dt)
    assert metarl.make(cfg.family).frame_skip == 5  # the family itself keeps Gymnasium's step


def test_a_preset_time_step_is_stored_with_the_run(tmp_path: Path) -> None:
    """family.json keeps the preset's frame_skip, so a resumed or evaluated run steps as it trained (and runs made
    before the presets set it keep Gymnasium's)."""
    from metarl.cli import main

    argv = ["train", "maml", "--preset", "maml2017-cheetah-dir", "--meta-batch-size", "2", "--episodes-per-task", "5",
            "--policy.hidden", "8", "8", "--run.iterations", "1", "--run.runs-dir", str(tmp_path),
            "--run.no-tensorboard", "--run.family-kwargs", "horizon", "10", "--run.validation-tasks", "2"]
    assert main(argv) == 0
    (run_dir,) = tmp_path.glob("*")
    spec = json.loads((run_dir / "family.json").read_text())
    assert spec["kwargs"]["frame_skip"] == 1


def test_family_kwargs_flags_merge_with_a_presets() -> None:
    """`--run.family-kwargs K V` overrides the preset's family kwargs key by key (the preset's frame_skip stays unless
    named), so adding a horizon does not silently drop the paper's time step."""
    from metarl.algos import ALGORITHMS
    from metarl.cli import parse_config

    def kwargs(*flags: str) -> dict[str, float]:
        argv = ["--preset", "maml2017-cheetah-vel", *flags]
        return parse_config("maml", ALGORITHMS["maml"], argv, "t").run.family_kwargs

    assert kwargs() == {"frame_skip": 1}
    assert kwargs("--run.family-kwargs", "horizon", "100") == {"frame_skip": 1, "horizon": 100.0}
    assert kwargs("--run.family-kwargs", "frame_skip", "5") == {"frame_skip": 5.0}
    # given twice, the flag's keys add up (tyro alone keeps the last occurrence and drops the first's keys silently)
    assert kwargs("--run.family-kwargs", "horizon", "100", "--run.seed", "3", "--run.family-kwargs", "rllab", "1") == {
        "frame_skip": 1, "horizon": 100.0, "rllab": 1.0}
    assert kwargs("--run.family-kwargs", "frame_skip", "5", "--run.family-kwargs", "frame_skip", "2") == {
        "frame_skip": 2.0}  # a later key overrides an earlier one, as later flags do
