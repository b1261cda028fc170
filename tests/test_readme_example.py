"""The README's "Register your own family" example runs as written, from a module of its own.

The code block after `<!-- example: custom-family -->` is written to a temporary module and imported, exactly as a
user's module would be: `__name__` is that module's name, so the registered entry point must resolve through a normal
import, without touching metarl's files.
"""

from __future__ import annotations

import importlib
import re
import sys
from collections.abc import Iterator
from pathlib import Path
from types import ModuleType

import mujoco
import numpy as np
import pytest
import torch

import metarl

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
    (tmp_path / f"{MODULE}.py").write_text(extract_example(README.read_text(encoding="utf-8")), encoding="utf-8")
    monkeypatch.syspath_prepend(str(tmp_path))
    try:
        module = importlib.import_module(MODULE)
        printed = capsys.readouterr().out
        assert printed.strip(), "the example should print its returns"
        yield module
    finally:
        if any(s.id == FAMILY_ID for s in metarl.registered()):
            metarl.unregister(FAMILY_ID)
        sys.modules.pop(MODULE, None)


def test_example_registers_a_family_from_its_own_module(example: ModuleType) -> None:
    spec = metarl.spec(FAMILY_ID)
    assert spec.entry_point == f"{MODULE}:HopperMass"
    family = metarl.make(FAMILY_ID)
    assert isinstance(family, example.HopperMass) and isinstance(family, metarl.MujocoFamily)
    assert (family.obs_dim, family.act_dim, family.horizon) == (11, 3, 200)  # Hopper-v5's sizes
    # the spec survives the JSON round trip a run directory relies on
    assert metarl.make(metarl.FamilySpec.from_json(spec.to_json())).spec == spec
    # what the example itself sampled
    assert example.batch.returns.shape == (4, 2)
    assert torch.equal(example.batch.returns, example.batch.rew.sum(-1))


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


def test_example_cleanup_leaves_the_registry_as_it_was() -> None:
    # runs after the fixture-using tests in file order: nothing of the example may remain registered or imported
    assert FAMILY_ID not in [s.id for s in metarl.registered()]
    assert MODULE not in sys.modules
