"""The README's "Register your own family" example runs as written, from a module of its own.

The code block after `<!-- example: custom-family -->` is written to a temporary module and imported, exactly as a
user's module would be: `__name__` is that module's name, so the registered entry point must resolve through a normal
import, without touching metarl's files. Imported, it only registers (no rollout); run as a script it prints the same
seeded numbers every time; and the CLI trains, evaluates and baselines it through `--import-modules` (issue 13).
"""

from __future__ import annotations

import importlib
import os
import re
import runpy
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from types import ModuleType

import mujoco
import numpy as np
import pytest
import torch

import metarl
from metarl.baselines import oracle_id
from metarl.cli import main
from metarl.logger import read_metrics
from metarl.policies import GaussianMLP, params_of
from metarl.sampler import Sampler

README = Path(__file__).resolve().parent.parent / "README.md"
MARKER = "<!-- example: custom-family -->"
FAMILY_ID = "my/HopperMass-v0"
MODULE = "metarl_readme_custom_family"  # unlikely to clash with anything importable


def extract_example(text: str) -> str:
    """The one ```python block that directly follows the marker comment."""
    assert text.count(MARKER) == 1, f"README.md must contain {MARKER!r} exactly once"
    match = re.search(re.escape(MARKER) + r"\s*```python\n(.*?)\n```", text, flags=re.DOTALL)
    assert match is not None, f"no ```python block right after {MARKER!r}"
    return match.group(1) + "\n"


@pytest.fixture
def example(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> Iterator[ModuleType]:
    """Import the README example as module `MODULE`; unregister its family and forget the module afterwards."""
    write_example(tmp_path)
    monkeypatch.syspath_prepend(str(tmp_path))
    try:
        capsys.readouterr()
        module = importlib.import_module(MODULE)
        assert capsys.readouterr().out == "", "importing the example must not run its rollout"
        yield module
    finally:
        forget_example()


def write_example(directory: Path) -> Path:
    path = directory / f"{MODULE}.py"
    path.write_text(extract_example(README.read_text(encoding="utf-8")), encoding="utf-8")
    return path


def forget_example() -> None:
    """What a new process would know: neither the family (nor its oracle) registered nor the module imported."""
    for family_id in (FAMILY_ID, oracle_id(FAMILY_ID)):
        if any(s.id == family_id for s in metarl.registered()):
            metarl.unregister(family_id)
    sys.modules.pop(MODULE, None)


def test_importing_the_example_only_registers(example: ModuleType) -> None:
    assert not hasattr(example, "batch") and not hasattr(example, "family")  # the rollout is behind __main__
    assert metarl.spec(FAMILY_ID).entry_point == f"{MODULE}:HopperMass"


def test_the_example_as_a_script_is_seeded(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """`python example.py` in a fresh process and the same file run here print the same numbers (seeded)."""
    path = write_example(tmp_path)
    fresh = subprocess.run([sys.executable, str(path)], capture_output=True, text=True, cwd=tmp_path, timeout=300)
    assert fresh.returncode == 0, fresh.stderr
    try:
        torch.manual_seed(12345)  # a different global state: the example must seed what it draws
        capsys.readouterr()
        runpy.run_path(str(path), run_name="__main__")
        here = capsys.readouterr().out
    finally:
        forget_example()
    assert "tensor(" in fresh.stdout and here == fresh.stdout


def test_example_registers_a_family_from_its_own_module(example: ModuleType) -> None:
    spec = metarl.spec(FAMILY_ID)
    assert spec.entry_point == f"{MODULE}:HopperMass"
    family = metarl.make(FAMILY_ID)
    assert isinstance(family, example.HopperMass) and isinstance(family, metarl.MujocoFamily)
    assert (family.obs_dim, family.act_dim, family.horizon) == (11, 3, 200)  # Hopper-v5's sizes
    # the spec survives the JSON round trip a run directory relies on
    assert metarl.make(metarl.FamilySpec.from_json(spec.to_json())).spec == spec
    # what the example samples when run as a script
    policy = GaussianMLP(family.obs_dim, family.act_dim)
    g = torch.Generator().manual_seed(0)
    batch = Sampler(family).sample(policy, params_of(policy), family.sample_tasks(4, g), episodes=2, generator=g)
    assert batch.returns.shape == (4, 2)
    assert torch.equal(batch.returns, batch.rew.sum(-1))


def test_mass_scale_changes_the_dynamics(example: ModuleType) -> None:
    family = metarl.make(FAMILY_ID)
    tasks = family.make_tasks(mass_scale=[0.5, 0.5, 1.5])
    env = family.make_env(3)
    env.reset(tasks, torch.Generator().manual_seed(0))  # writes each sim's masses
    qpos, qvel = env.sim.qpos[:1].repeat(3, 1), env.sim.qvel[:1].repeat(3, 1)
    env.set_state(qpos, qvel)  # all three start from the same state
    actions = torch.rand(20, 1, family.act_dim, generator=torch.Generator().manual_seed(1), dtype=torch.float64)
    for a in 0.8 * actions - 0.4:  # inside Hopper's ±0.4 control range, identical for all three
        step = env.step(tasks, a.expand(3, -1))
        terms = {k: v for k, v in step.info.items() if k.startswith("reward_")}
        torch.testing.assert_close(torch.stack(list(terms.values())).sum(0), step.reward)
    obs = step.obs
    assert torch.equal(obs[0], obs[1])  # same mass scale, same trajectory: the difference below is the mass
    assert (obs[0] - obs[2]).abs().max() > 1e-3


def test_per_sim_masses_equal_a_rescaled_single_model(example: ModuleType) -> None:
    # Independent reference: a plain MjModel with its masses scaled and its constants re-derived (mj_setConst), stepped
    # with mj_step; the batched per-simulation body_mass must give the same trajectory bit for bit.
    family = metarl.make(FAMILY_ID)
    scales = [0.5, 1.5]
    tasks = family.make_tasks(mass_scale=scales)
    env = family.make_env(2)
    env.reset(tasks, torch.Generator().manual_seed(0))
    qpos0, qvel0 = env.sim.qpos.clone(), env.sim.qvel.clone()
    actions = 0.8 * torch.rand(30, 2, family.act_dim, generator=torch.Generator().manual_seed(1), dtype=torch.float64)
    actions -= 0.4
    ours = torch.stack([env.step(tasks, a).obs for a in actions])
    for i, scale in enumerate(scales):
        model = mujoco.MjModel.from_xml_path(str(example.HopperMass.xml))
        model.body_mass[:] *= scale
        mujoco.mj_setConst(model, mujoco.MjData(model))
        data = mujoco.MjData(model)
        data.qpos[:], data.qvel[:] = qpos0[i].numpy(), qvel0[i].numpy()
        mujoco.mj_forward(model, data)
        for t, a in enumerate(actions[:, i]):
            data.ctrl[:] = a.numpy()
            mujoco.mj_step(model, data, nstep=family.frame_skip)
            reference = torch.from_numpy(np.concatenate([data.qpos[1:], data.qvel]))
            assert torch.equal(ours[t, i], reference), (scale, t)


def test_example_family_accepts_overrides(example: ModuleType) -> None:
    family = metarl.make(FAMILY_ID, low=0.8, high=0.9, horizon=50)
    assert family.horizon == 50 and family.spec.kwargs == {"low": 0.8, "high": 0.9}
    mass = family.sample_tasks(64, torch.Generator().manual_seed(0)).mass_scale
    assert mass.dtype == torch.float64 and bool(((mass >= 0.8) & (mass <= 0.9)).all())
    with pytest.raises(ValueError):
        metarl.make(FAMILY_ID, low=2.0, high=1.0)
    with pytest.raises(TypeError, match="low"):
        metarl.make(FAMILY_ID, mass=1.0)


TINY = ["--meta-batch-size", "2", "--episodes-per-task", "2", "--policy.hidden", "8", "--run.family-kwargs",
        "horizon", "10", "--run.iterations", "1", "--run.validate-every", "0", "--run.no-tensorboard"]


def metarl_command() -> list[str]:
    """The console script `metarl` (it does not put the current directory on sys.path: metarl does)."""
    script = Path(sys.executable).with_name("metarl")
    return [str(script)] if script.exists() else [sys.executable, "-m", "metarl"]


def test_the_cli_trains_and_evaluates_the_example_through_import_modules(tmp_path: Path) -> None:
    """The README's commands in a fresh process: the module in the current directory, named by --import-modules;
    the run directory then evaluates in another process from its family.json alone."""
    write_example(tmp_path)
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "METARL_IMPORT")}
    train = subprocess.run([*metarl_command(), "train", "maml", "--import-modules", MODULE, "--family", FAMILY_ID,
                            *TINY, "--run.runs-dir", "runs"], cwd=tmp_path, env=env, capture_output=True, text=True,
                           timeout=600)
    assert train.returncode == 0, train.stdout + train.stderr
    (run_dir,) = (tmp_path / "runs").glob("*")
    assert metarl.FamilySpec.from_json((run_dir / "family.json").read_text()).entry_point == f"{MODULE}:HopperMass"
    assert [r["iteration"] for r in read_metrics(run_dir)] == [1]
    without = subprocess.run([*metarl_command(), "sample", "--family", FAMILY_ID], cwd=tmp_path, env=env,
                             capture_output=True, text=True, timeout=600)
    assert without.returncode == 2 and "--import-modules MOD" in without.stdout and "METARL_IMPORT" in without.stdout
    evaluate = subprocess.run([*metarl_command(), "eval", str(run_dir), "--tasks", "2", "--steps", "1", "--episodes",
                               "1", "--quiet"], cwd=tmp_path, env={**env, "METARL_IMPORT": MODULE},
                              capture_output=True, text=True, timeout=600)
    assert evaluate.returncode == 0, evaluate.stdout + evaluate.stderr
    assert (run_dir / "eval-T2-E1-k1.json").is_file()


def test_a_custom_familys_oracle_baseline_reopens_through_import_modules(
    example: ModuleType, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """The oracle's family.json names its base family by id only: a process that has not imported the user's module
    is told how; with --import-modules it evaluates and resumes."""
    runs = tmp_path / "runs"
    assert main(["baseline", "oracle", "--import-modules", MODULE, "--family", FAMILY_ID, *TINY, "--run.runs-dir",
                 str(runs), "--eval-tasks", "2", "--eval-steps", "1"]) == 0
    (run_dir,) = runs.glob("*")
    assert run_dir.name.startswith("oracle_my.HopperMass-v0__baseline-oracle__")
    forget_example()  # as in a new process
    capsys.readouterr()
    assert main(["eval", str(run_dir), "--tasks", "2", "--steps", "1", "--quiet"]) == 2
    line = capsys.readouterr().out
    assert FAMILY_ID in line and "--import-modules" in line and "METARL_IMPORT" in line, line
    assert main(["eval", str(run_dir), "--tasks", "2", "--steps", "1", "--quiet", "--import-modules", MODULE]) == 0
    forget_example()
    assert main(["baseline", "oracle", "--resume", str(run_dir), "--import-modules", MODULE, "--eval-tasks", "2",
                 "--eval-steps", "1"]) == 0
    assert "nothing to train" in capsys.readouterr().out


def test_example_cleanup_leaves_the_registry_as_it_was() -> None:
    # runs after the fixture-using tests in file order: nothing of the example may remain registered or imported
    assert FAMILY_ID not in [s.id for s in metarl.registered()]
    assert MODULE not in sys.modules
