"""docs/families.md's reacher example runs as written from a module of its own, and trains from the CLI."""

from __future__ import annotations

import importlib
import math
import re
import sys
from collections.abc import Iterator
from pathlib import Path
from types import ModuleType

import mujoco
import pytest
import torch

import metarl
from metarl.camera import render_camera
from metarl.cli import main
from metarl.logger import read_metrics

DOC = Path(__file__).resolve().parent.parent / "docs" / "families.md"
MARKER = "<!-- example: reacher-family -->"
FAMILY_ID = "my/HiddenGoalReacher-v0"
MODULE = "metarl_docs_reacher_family"


@pytest.fixture
def reacher(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[ModuleType]:
    text = DOC.read_text(encoding="utf-8")
    match = re.search(re.escape(MARKER) + r"\s*```python\n(.*?)\n```", text, flags=re.DOTALL)
    assert match is not None, f"no ```python block right after {MARKER!r} in {DOC}"
    (tmp_path / f"{MODULE}.py").write_text(match.group(1) + "\n", encoding="utf-8")
    monkeypatch.syspath_prepend(str(tmp_path))
    try:
        yield importlib.import_module(MODULE)
    finally:
        if FAMILY_ID in {s.id for s in metarl.registered()}:
            metarl.unregister(FAMILY_ID)
        sys.modules.pop(MODULE, None)


def test_the_reacher_steps_with_its_own_observation_and_no_x_velocity(reacher: ModuleType) -> None:
    family = metarl.make(FAMILY_ID)
    assert (family.obs_dim, family.act_dim, family.horizon) == (6, 2, 50)
    tasks = family.sample_tasks(64, torch.Generator().manual_seed(0))
    assert tasks.goal.shape == (64, 2) and bool((tasks.goal.norm(dim=-1) <= 0.2).all())
    goals = family.make_tasks(goal=[[0.1, 0.0], [-0.1, 0.0]])
    env = family.make_env(2)
    obs = env.reset(goals, torch.Generator().manual_seed(0))
    assert obs.shape == (2, 6)
    env.set_state(env.sim.qpos[:1].repeat(2, 1), env.sim.qvel[:1].repeat(2, 1))  # both from the same state
    step = env.step(goals, torch.zeros(2, 2, dtype=torch.float64))
    assert set(step.info) == {"reward_dist", "reward_ctrl"}  # reports_x_velocity = False
    assert step.obs.shape == (2, 6) and torch.equal(step.obs[0], step.obs[1])  # same state: the goal is hidden
    assert step.reward[0] != step.reward[1]  # ... but it decides the reward
    tip = env.sim.body_xpos()[:, family.fingertip, :2]
    torch.testing.assert_close(step.info["reward_dist"], -(tip - goals.goal).norm(dim=-1))
    camera = render_camera(family.model, family.camera)
    assert isinstance(camera, mujoco.MjvCamera) and camera.trackbodyid == 0 and camera.elevation == -90.0
    assert math.isfinite(float(step.reward.sum()))


def test_the_reacher_trains_from_the_command_line(reacher: ModuleType, tmp_path: Path) -> None:
    sys.modules.pop(MODULE, None)  # the command imports it itself
    metarl.unregister(FAMILY_ID)
    runs = tmp_path / "runs"
    assert main(["train", "maml", "--import-modules", MODULE, "--family", FAMILY_ID, "--meta-batch-size", "2",
                 "--episodes-per-task", "2", "--policy.hidden", "8", "--run.family-kwargs", "horizon", "10",
                 "--run.iterations", "1", "--run.validate-every", "0", "--run.no-tensorboard", "--run.runs-dir",
                 str(runs)]) == 0
    (run_dir,) = runs.glob("*")
    (record,) = read_metrics(run_dir)
    assert record["iteration"] == 1 and math.isfinite(record["meta/return_post_1"])
