"""The Gymnasium adapter: every registered family as a checked `gymnasium.Env`, bit-exact with its own VecEnv."""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

import gymnasium
import numpy as np
import pytest
import torch
from gymnasium.utils.env_checker import check_env
from gymnasium.utils.seeding import np_random

import metarl
from metarl import FamilySpec
from metarl.gym_adapter import TaskEnv, gym_id, register_gymnasium, torch_generator

FAMILY_IDS = [spec.id for spec in metarl.registered()]
TASKS = {  # one explicit task per built-in family (field values, as a user writes them)
    "HalfCheetahVel-v0": {"goal_vel": 1.5},
    "HalfCheetahDir-v0": {"direction": -1.0},
    "AntVel-v0": {"goal_vel": 0.7},
    "AntDir-v0": {"direction": 1.0},
    "HalfCheetahUphill-v0": {"slope": 0.2},
    "AntUphill-v0": {"slope": 0.1},
    "PointNav-v0": {"goal": [0.3, -0.2]},
}


def a_task(family_id: str) -> dict:
    """The table's task, or (for families other tests register) one drawn from the family."""
    if family_id in TASKS:
        return TASKS[family_id]
    drawn = metarl.make(family_id).sample_tasks(1, torch.Generator().manual_seed(0))
    return {name: value[0].tolist() for name, value in drawn._asdict().items()}


# Gymnasium's checker warns about every unbounded Box. Observations are physical state (positions, velocities) with
# no finite bound, as in Gymnasium's own MuJoCo envs, so these two warnings are expected and harmless.
UNBOUNDED_OBS = (
    "ignore:.*A Box observation space (minimum|maximum) value is (-)?infinity:UserWarning"
)


@pytest.mark.filterwarnings(UNBOUNDED_OBS)
@pytest.mark.parametrize("family_id", FAMILY_IDS)
@pytest.mark.parametrize("with_task", [True, False], ids=["task", "drawn"])
def test_check_env(family_id: str, with_task: bool) -> None:
    kwargs = {"task": a_task(family_id)} if with_task else {}
    env = gymnasium.make(gym_id(family_id), **kwargs)
    # on the unwrapped env, as Gymnasium recommends (its spec is set by make, so the close check runs too);
    # rendering needs an OpenGL context, tested in test_render
    check_env(env.unwrapped, skip_render_check=True)
    env.close()


@pytest.mark.parametrize("family_id", FAMILY_IDS)
def test_rollout_matches_vec_env(family_id: str) -> None:
    """Same task, seed-derived initial state and actions: bit-identical to the family's own VecEnv."""
    seed, steps = 7, 25
    env = TaskEnv(family_id, task=a_task(family_id))
    family = env.family
    vec = family.make_env(1)
    tasks = family.make_tasks(**a_task(family_id))
    low, high = family.action_low.numpy(), family.action_high.numpy()
    # 1.5x the bounds, so the clipping is exercised too
    actions = np.random.default_rng(0).uniform(1.5 * low, 1.5 * high, size=(steps, family.act_dim))

    obs, _ = env.reset(seed=seed)
    ref = vec.reset(tasks, torch_generator(np_random(seed)[0]))
    np.testing.assert_array_equal(obs, ref[0].numpy())
    for action in actions:
        obs, reward, terminated, truncated, info = env.step(action)
        out = vec.step(tasks, torch.clamp(torch.from_numpy(action).view(1, -1), family.action_low, family.action_high))
        np.testing.assert_array_equal(obs, out.obs[0].numpy())
        assert reward == out.reward[0].item()
        assert terminated == bool(out.terminated[0]) and truncated is False
        assert info == {name: value[0].item() for name, value in out.info.items()}
        assert type(reward) is float and all(type(v) is float for v in info.values())
        if terminated:
            break
    assert obs.dtype == np.float64 and obs in env.observation_space


@pytest.mark.parametrize("family_id", ["PointNav-v0", "HalfCheetahVel-v0"])
def test_make_truncates_at_horizon(family_id: str) -> None:
    horizon = metarl.spec(family_id).horizon
    env = gymnasium.make(gym_id(family_id), task=a_task(family_id))
    assert env.spec is not None and env.spec.max_episode_steps == horizon
    assert isinstance(env, gymnasium.wrappers.TimeLimit)
    env.reset(seed=0)
    zero = np.zeros(env.action_space.shape, dtype=np.float32)  # never reaches PointNav's goal (it is not the origin)
    for t in range(1, horizon + 1):
        _, _, terminated, truncated, _ = env.step(zero)
        assert not terminated and truncated == (t == horizon)
    # max_episode_steps overrides the horizon, as for any Gymnasium env
    short = gymnasium.make(gym_id(family_id), task=a_task(family_id), max_episode_steps=3)
    short.reset(seed=0)
    assert [short.step(zero)[3] for _ in range(3)] == [False, False, True]


def test_task_is_exposed_and_drawn_from_the_seed() -> None:
    fixed = TaskEnv("HalfCheetahVel-v0", task={"goal_vel": 1.5})
    assert isinstance(fixed.task, fixed.family.Tasks) and fixed.task.goal_vel.tolist() == [1.5]
    fixed.reset(seed=3)
    assert fixed.task.goal_vel.tolist() == [1.5]

    drawn = TaskEnv("HalfCheetahVel-v0")
    assert drawn.task is None
    obs_3, _ = drawn.reset(seed=3)
    goal_3 = drawn.task.goal_vel.item()
    drawn.reset()
    assert drawn.task.goal_vel.item() == goal_3  # unseeded resets keep the task
    drawn.reset(seed=4)
    assert drawn.task.goal_vel.item() != goal_3  # seeding draws a new one
    again, _ = drawn.reset(seed=3)
    assert drawn.task.goal_vel.item() == goal_3
    np.testing.assert_array_equal(again, obs_3)
    np.testing.assert_array_equal(fixed.reset(seed=3)[0], obs_3)  # the initial state ignores how the task came
    assert 0.0 <= goal_3 <= 2.0  # from the family's distribution, U[0, 2]

    tasks = drawn.family.sample_tasks(1, torch.Generator().manual_seed(0))
    assert TaskEnv(drawn.family, task=tasks).task.goal_vel.tolist() == tasks.goal_vel.tolist()


def test_bad_input_raises_clear_errors() -> None:
    with pytest.raises(TypeError, match=r"fields \['goal_vel'\]"):
        TaskEnv("HalfCheetahVel-v0", task={"goal": 1.0})
    with pytest.raises(TypeError, match=r"fields \['goal'\]"):
        gymnasium.make("metarl/PointNav-v0", task={"goal_x": 0.1})
    with pytest.raises(ValueError, match=r"'goal' must be \[T, \*\(2,\)\]"):
        TaskEnv("PointNav-v0", task={"goal": [0.1, 0.2, 0.3]})
    with pytest.raises(ValueError, match="one task"):
        TaskEnv("HalfCheetahVel-v0", task={"goal_vel": [0.5, 1.0]})
    with pytest.raises(ValueError, match="finite"):
        TaskEnv("HalfCheetahVel-v0", task={"goal_vel": float("nan")})
    with pytest.raises(TypeError, match=r"task fields \['goal_vel'\]"):
        TaskEnv("HalfCheetahVel-v0", task=1.5)  # type: ignore[arg-type]
    with pytest.raises(KeyError, match="Did you mean"):
        TaskEnv("HalfCheetahVell-v0")
    with pytest.raises(ValueError, match="max_episode_steps"):
        TaskEnv("HalfCheetahVel-v0", family_kwargs={"horizon": 100})
    with pytest.raises(TypeError, match="already built"):
        TaskEnv(metarl.make("PointNav-v0"), family_kwargs={"high": 1.0})
    with pytest.raises(ValueError, match="not supported by PointNav-v0"):
        TaskEnv("PointNav-v0", render_mode="rgb_array")
    env = TaskEnv("HalfCheetahVel-v0", task={"goal_vel": 1.0}, family_kwargs={"high": 3.0})
    assert env.family.high == 3.0
    assert TaskEnv(metarl.spec("PointNav-v0"), family_kwargs={"high": 1.0}).family.high == 1.0  # a spec, as stored
    with pytest.raises(RuntimeError, match="reset"):
        env.step(np.zeros(6))
    env.reset(seed=0)
    with pytest.raises(ValueError, match=r"shape \(6,\)"):
        env.step(np.zeros(5))
    with pytest.raises(ValueError, match="no options"):
        env.reset(options={"task": {"goal_vel": 2.0}})


def test_render() -> None:
    env = TaskEnv("HalfCheetahVel-v0", task={"goal_vel": 1.0}, render_mode="rgb_array", width=64, height=48)
    env.reset(seed=0)
    # whether an OpenGL context exists depends on the machine and MUJOCO_GL; both outcomes must be clean
    try:
        frame = env.render()
    except RuntimeError as err:
        assert "MUJOCO_GL=egl" in str(err)
    else:
        assert frame is not None and frame.shape == (48, 64, 3) and frame.dtype == np.uint8
    env.close()
    env.close()  # closing twice is allowed
    with pytest.raises(RuntimeError, match="render_mode='rgb_array'"):
        TaskEnv("HalfCheetahVel-v0").render()


def test_register_gymnasium_follows_the_registry() -> None:
    assert {gym_id(i) for i in FAMILY_IDS} <= set(gymnasium.registry)
    assert register_gymnasium() == register_gymnasium()  # idempotent, and no "Overriding" warning (an error here)
    specs = [
        FamilySpec(id="GymAdapterTest-v0", entry_point="metarl.envs.point_nav:PointNav", horizon=5),
        FamilySpec(id="gymtest/Nav-v0", entry_point="metarl.envs.point_nav:PointNav", horizon=4),
    ]
    for spec in specs:
        metarl.register(spec)
    try:
        ids = register_gymnasium()
        assert {"metarl/GymAdapterTest-v0", "metarl/gymtest.Nav-v0"} <= set(ids)
        for spec in specs:
            env = gymnasium.make(gym_id(spec.id))
            assert env.spec is not None and env.spec.max_episode_steps == spec.horizon
            env.reset(seed=0)
            assert env.unwrapped.family.spec == spec
    finally:
        for spec in specs:
            metarl.unregister(spec.id)
        register_gymnasium()
    assert "metarl/GymAdapterTest-v0" not in gymnasium.registry


def test_import_metarl_registers_without_importing_sb3() -> None:
    code = (
        "import sys, metarl, gymnasium\n"
        "env = gymnasium.make('metarl/HalfCheetahVel-v0', task={'goal_vel': 1.5})\n"
        "env.reset(seed=0)\n"
        "assert 'stable_baselines3' not in sys.modules, 'import metarl must not import SB3'\n"
    )
    subprocess.run([sys.executable, "-W", "error", "-c", code], check=True, timeout=120)


@pytest.mark.parametrize(
    ("family_id", "task"), [("PointNav-v0", {"goal": [0.3, -0.2]}), ("HalfCheetahVel-v0", {"goal_vel": 1.0})]
)
def test_sb3_ppo_trains(family_id: str, task: dict) -> None:
    from stable_baselines3 import PPO

    env = gymnasium.make(gym_id(family_id), task=task)
    model = PPO("MlpPolicy", env, n_steps=64, batch_size=32, n_epochs=1, seed=0, device="cpu")
    model.learn(total_timesteps=256)
    assert model.num_timesteps == 256
    obs, _ = env.reset(seed=1)
    action, _ = model.predict(obs, deterministic=True)
    assert action.shape == env.action_space.shape and action in env.action_space
    env.step(action)


def test_readme_example_runs(capsys: pytest.CaptureFixture[str]) -> None:
    """The README's Gymnasium block (after `<!-- example: gymnasium -->`) runs as written."""
    readme = (Path(__file__).resolve().parent.parent / "README.md").read_text(encoding="utf-8")
    match = re.search(r"<!-- example: gymnasium -->\s*```python\n(.*?)\n```", readme, flags=re.DOTALL)
    assert match is not None, "README.md lost its Gymnasium example"
    exec(compile(match.group(1), "README.md", "exec"), {})
    assert "reward_forward" in capsys.readouterr().out
