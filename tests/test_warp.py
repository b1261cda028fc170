"""The MJWarp backend (issue 14) on Warp's CPU device: parity with the C MuJoCo backend, masked steps and resets,
per-world model fields, training through the CLI; and the one-line errors when warp or CUDA is asked for and absent.

Tests that need `mujoco_warp` are marked `warp` and skipped without it (`pip install 'metarl[gpu]'`); the same checks
on CUDA are marked `gpu` as well and skipped without a GPU. The first run compiles Warp's kernels (about a minute on 2
cores) into Warp's kernel cache; later runs load them.
"""

from __future__ import annotations

import json
from pathlib import Path

import mujoco
import pytest
import torch
from test_readme_example import FAMILY_ID, example  # noqa: F401  (the README example's fixture)

import metarl
from metarl.cli import main
from metarl.family import MujocoFamily, MujocoVecEnv, TaskFamily
from metarl.logger import read_metrics
from metarl.sim import BACKENDS, backend_device, make_simulator, resolve_backend
from metarl.sim_warp import warp_available

needs_warp = pytest.mark.skipif(not warp_available(), reason="needs mujoco-warp (pip install 'metarl[gpu]')")

ON_EACH_DEVICE = pytest.mark.parametrize(
    "backend", ["warp", pytest.param("warp:cuda", marks=pytest.mark.gpu)])
"""A check on Warp's CPU device (CI) and the same on CUDA (marked `gpu`: skipped without a GPU)."""

N = 4
STEPS = 10
"""Env steps compared: float32 against float64 physics agree to ~1e-4 here and then diverge chaotically (contact
events amplify any difference: notes/batched-sim.md §7.10)."""


def _envs(family: TaskFamily, backend: str) -> dict[str, MujocoVecEnv]:
    return {"cpu": family.make_env(N, "cpu"), "warp": family.make_env(N, backend)}


def _assert_close(name: str, cpu: torch.Tensor, warp: torch.Tensor, step: int, atol: float) -> None:
    assert warp.dtype == torch.float64  # the protocol's dtype, whatever the physics ran in
    err = (cpu - warp.cpu()).abs().max().item()
    assert err <= atol, f"{name} differs by {err:.2e} > {atol:.0e} at step {step}"


def run_parity(family: MujocoFamily, backend: str = "warp", steps: int = STEPS, obs_atol: float = 1e-2,
               rew_atol: float = 1e-3) -> None:
    """Both backends from the same reset, with the same actions; from step 3 only envs 0 and 2 step (masked), and
    env 1 is reset again at step 5 (a masked reset). qpos within 1e-3, observations (velocities, contact forces)
    within `obs_atol`, rewards within `rew_atol`, identical termination."""
    drawn = family.sample_tasks(N, torch.Generator().manual_seed(0))
    device = backend_device(backend)
    tasks = {"cpu": drawn, "warp": type(drawn)(*(f.to(device) for f in drawn))}  # as the sampler hands them over
    envs = _envs(family, backend)
    obs = {b: e.reset(tasks[b], torch.Generator().manual_seed(1)) for b, e in envs.items()}
    _assert_close("reset obs", obs["cpu"], obs["warp"], 0, 1e-6)
    actions = torch.Generator().manual_seed(2)
    for t in range(steps):
        act = torch.rand(N, family.act_dim, generator=actions, dtype=torch.float64) * 2 - 1
        ids = None if t < 3 else torch.tensor([0, 2])
        if t == 3:
            still = envs["warp"].sim.qpos[3].clone()
        if t == 5:
            obs = {b: e.reset(tasks[b], torch.Generator().manual_seed(5), ids=torch.tensor([1]))
                   for b, e in envs.items()}
            _assert_close("obs after a masked reset", obs["cpu"], obs["warp"], t, obs_atol)
        out = {"cpu": envs["cpu"].step(tasks["cpu"], act, ids),
               "warp": envs["warp"].step(tasks["warp"], act.to(device), None if ids is None else ids.to(device))}
        _assert_close("qpos", envs["cpu"].sim.qpos, envs["warp"].sim.qpos, t, 1e-3)
        _assert_close("obs", out["cpu"].obs, out["warp"].obs, t, obs_atol)
        _assert_close("reward", out["cpu"].reward, out["warp"].reward, t, rew_atol)
        assert torch.equal(out["cpu"].terminated, out["warp"].terminated.cpu())
    if steps > 3:  # env 3 was not stepped after step 3: it stood still exactly
        assert torch.equal(envs["warp"].sim.qpos[3], still)


@pytest.mark.parametrize("family_id", ["HalfCheetahVel-v0", "HalfCheetahUphill-v0"])
@ON_EACH_DEVICE
@pytest.mark.warp
@needs_warp
def test_cheetah_matches_the_cpu_backend(family_id: str, backend: str) -> None:
    """Flat and sloped (gravity set per world at reset) HalfCheetah."""
    family = metarl.make(family_id, low_deg=5.0, high_deg=15.0) if "Uphill" in family_id else metarl.make(family_id)
    run_parity(family, backend)


@ON_EACH_DEVICE
@pytest.mark.warp
@needs_warp
def test_rllab_cheetah_matches_the_cpu_backend(backend: str) -> None:
    """The rllab variant reads sensors computed at the new state (`current`, MJWarp's step1), also after masked steps
    and resets."""
    run_parity(metarl.make("HalfCheetahDir-v0", rllab=True, frame_skip=1), backend)


@ON_EACH_DEVICE
@pytest.mark.warp
@needs_warp
def test_ant_matches_the_cpu_backend_with_an_elliptic_cone(backend: str) -> None:
    """The Ant (RK4, contact forces in the observation and reward, torso xpos for the velocity, termination) with an
    elliptic friction cone. With the model's pyramidal cone the backends part at the first contact (next test)."""
    family = metarl.make("AntDir-v0")
    family.model.opt.cone = mujoco.mjtCone.mjCONE_ELLIPTIC
    run_parity(family, backend, obs_atol=1e-2, rew_atol=1e-3)


@ON_EACH_DEVICE
@pytest.mark.warp
@needs_warp
def test_ant_with_a_pyramidal_cone_matches_until_the_first_contact(backend: str) -> None:
    """MJWarp orients a capsule-plane contact's tangent frame differently from C MuJoCo (C: along the capsule; MJWarp:
    the world axes, measured here), and a pyramidal cone is not symmetric about the normal, so the friction forces,
    and the trajectories, part by ~1e-2 per env step from the first foot contact on: a modelling convention, not float
    error (an elliptic cone, symmetric, agrees to 1e-6). Before contact the backends agree."""
    run_parity(metarl.make("AntVel-v0"), backend, steps=2)


@ON_EACH_DEVICE
@pytest.mark.warp
@needs_warp
def test_per_world_masses_match_the_cpu_backend(backend: str) -> None:
    """`set_model_field("body_mass")` per world (derived constants follow through MJWarp's set_const)."""
    model = metarl.make("HalfCheetahVel-v0").model
    sims = {"cpu": make_simulator(model, N, 5, "cpu"), "warp": make_simulator(model, N, 5, backend)}
    masses = torch.as_tensor(model.body_mass).repeat(N, 1) * torch.linspace(0.5, 2.0, N)[:, None]
    qpos = torch.as_tensor(model.qpos0).repeat(N, 1)
    ctrl = torch.full((N, model.nu), 0.5, dtype=torch.float64)
    for sim in sims.values():
        sim.set_model_field("body_mass", masses)
        sim.reset(qpos, torch.zeros(N, model.nv, dtype=torch.float64))
        for _ in range(STEPS):
            sim.step(ctrl)
    _assert_close("qpos", sims["cpu"].qpos, sims["warp"].qpos, STEPS, 1e-3)
    assert (sims["warp"].qpos[0] - sims["warp"].qpos[-1]).abs().max() > 1e-2  # the masses made a difference
    assert sims["warp"].qpos.device.type == backend_device(backend).type


@pytest.mark.warp
@needs_warp
def test_warp_backend_is_listed_and_refuses_unknown_fields() -> None:
    assert BACKENDS == ("cpu", "warp")
    sim = make_simulator(metarl.make("HalfCheetahVel-v0").model, 2, 5, "warp")
    assert sim.device == torch.device("cpu") and sim.qpos.dtype == torch.float64
    with pytest.raises(ValueError, match="not an MJWarp model array"):
        sim.set_model_field("no_such_field", torch.zeros(2))
    with pytest.raises(RuntimeError, match="persistent=True"):
        sim.contact_forces()


TINY = {
    "maml": ["--meta-batch-size", "2", "--episodes-per-task", "2", "--policy.hidden", "8", "8"],
    "fomaml": ["--meta-batch-size", "2", "--episodes-per-task", "2", "--policy.hidden", "8", "8"],
    "reptile": ["--meta-batch-size", "2", "--episodes-per-task", "2", "--inner-steps", "2", "--policy.hidden", "8",
                "8"],
    "es-maml": ["--perturbations", "2", "--num-queries", "2", "--exact-evals", "2"],
}
"""test_train_cli.py's smoke sizes, on HalfCheetahVel with a 10-step horizon (PointNav never touches a simulator)."""


def _train(tmp_path: Path, algo: str, *extra: str) -> Path:
    runs = tmp_path / "runs"
    argv = ["train", algo, "--family", "HalfCheetahVel-v0", *TINY[algo], "--run.iterations", "1",
            "--run.runs-dir", str(runs), "--run.no-tensorboard", "--run.family-kwargs", "horizon", "10",
            "--run.validate-every", "1", "--run.validation-tasks", "2", *extra]
    assert main(argv) == 0
    (run_dir,) = runs.glob("*")
    return run_dir


@pytest.mark.parametrize("algo", sorted(TINY))
@pytest.mark.warp
@needs_warp
def test_every_algorithm_trains_on_the_warp_backend(tmp_path: Path, algo: str) -> None:
    """One iteration (with validation) of every algorithm with `--run.device cpu --run.backend warp`."""
    run_dir = _train(tmp_path, algo, "--run.device", "cpu", "--run.backend", "warp")
    config = json.loads((run_dir / "config.json").read_text())["config"]
    assert config["run"]["backend"] == "warp" and config["run"]["device"] == "cpu"
    (record,) = read_metrics(run_dir)
    assert torch.isfinite(torch.tensor(record["meta/return_pre"])) and "val/return_post" in record


@pytest.mark.warp
@needs_warp
def test_a_maml_iteration_on_warp_is_close_to_the_cpu_backend(tmp_path: Path) -> None:
    """The same seed on both backends: the same tasks and noise, physics within float32 over a 10-step horizon, so
    the pre-update returns agree closely."""
    warp_record = read_metrics(_train(tmp_path / "warp", "maml", "--run.backend", "warp"))[0]
    cpu_record = read_metrics(_train(tmp_path / "cpu", "maml", "--run.backend", "cpu"))[0]
    assert warp_record["meta/return_pre"] == pytest.approx(cpu_record["meta/return_pre"], abs=1e-3)
    assert warp_record["perf/env_steps"] == cpu_record["perf/env_steps"]


@pytest.mark.warp
@needs_warp
def test_eval_takes_the_backend_and_defaults_to_the_runs(tmp_path: Path) -> None:
    """`metarl eval --backend warp --device cpu` of a run trained on the CPU backend: its own file name and protocol
    entry, returns close to the CPU evaluation (float32 physics over a 10-step horizon); a run trained on warp is
    evaluated on warp unless told otherwise."""
    run_dir = _train(tmp_path / "cpu", "maml", "--run.backend", "cpu")
    flags = ["--tasks", "2", "--steps", "1", "--episodes", "2", "--quiet"]
    assert main(["eval", str(run_dir), *flags]) == 0
    assert main(["eval", str(run_dir), *flags, "--backend", "warp", "--device", "cpu"]) == 0
    cpu = json.loads((run_dir / "eval-T2-E2-k1.json").read_text())
    warp = json.loads((run_dir / "eval-T2-E2-k1-warp.json").read_text())
    assert "backend" not in cpu["protocol"] and warp["protocol"]["backend"] == "warp"
    assert torch.tensor(warp["returns"]) == pytest.approx(torch.tensor(cpu["returns"]), abs=1e-2)
    warp_run = _train(tmp_path / "warp", "maml", "--run.backend", "warp", "--run.device", "cpu")
    assert main(["eval", str(warp_run), *flags]) == 0
    assert json.loads((warp_run / "eval-T2-E2-k1-warp.json").read_text())["protocol"]["backend"] == "warp"


@pytest.mark.parametrize("name", ["pretrained", "ppo"])
@pytest.mark.warp
@needs_warp
def test_baselines_train_and_evaluate_on_the_warp_backend(tmp_path: Path, name: str) -> None:
    """The pretrained baseline trains (its TRPO rollouts) and both evaluate on warp; PPO's own updates stay on SB3's
    CPU, and the parameters it returns come back to the sampler's device."""
    runs = tmp_path / "runs"
    argv = ["baseline", name, "--family", "HalfCheetahVel-v0", *TINY["maml"], "--run.iterations", "1",
            "--run.runs-dir", str(runs), "--run.no-tensorboard", "--run.family-kwargs", "horizon", "10",
            "--run.validation-tasks", "2", "--run.backend", "warp", "--run.device", "cpu", "--eval-tasks", "2",
            "--eval-steps", "1"]
    assert main(argv) == 0
    (run_dir,) = runs.glob("*")
    record = json.loads((run_dir / "eval.json").read_text())
    assert record["protocol"]["backend"] == "warp" and torch.isfinite(torch.tensor(record["returns"])).all()


def test_eval_refuses_an_unknown_device(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["eval", str(tmp_path), "--device", "tpu"]) == 2
    captured = capsys.readouterr()
    text = " ".join((captured.out + captured.err).replace("│", " ").split())  # tyro boxes and wraps its message
    assert "--device must be run, auto, cpu, cuda or cuda:N, got 'tpu'" in text


# ----------------------------------------------------------------------------------------------- errors, config
def test_backend_resolution_on_a_machine_without_cuda(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    assert resolve_backend("auto", "auto") == "cpu"
    assert resolve_backend("cpu", "cpu") == "cpu"
    assert backend_device("warp:cuda:1") == torch.device("cuda:1") and backend_device("warp") == torch.device("cpu")
    if warp_available():
        assert resolve_backend("warp", "auto") == "warp"
        assert resolve_backend("warp", "cpu") == "warp"


def test_auto_picks_warp_on_cuda_when_a_gpu_is_visible(monkeypatch: pytest.MonkeyPatch) -> None:
    import metarl.sim

    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(metarl.sim, "warp_available", lambda: True)
    assert resolve_backend("auto", "auto") == "warp:cuda"
    assert resolve_backend("auto", "cuda:1") == "warp:cuda:1"
    assert resolve_backend("auto", "cpu") == "cpu"  # an explicit cpu device keeps the float64 CPU backend
    assert resolve_backend("warp", "cpu") == "warp"
    monkeypatch.setattr(metarl.sim, "warp_available", lambda: False)
    assert resolve_backend("auto", "auto") == "cpu"  # a GPU but no extra: the CPU backend, as before


@pytest.mark.parametrize(
    ("flags", "message"),
    [
        (["--run.backend", "warp"], "run.backend warp needs mujoco-warp and warp-lang: pip install 'metarl[gpu]'"),
        (["--run.device", "cuda"], "CUDA is not available"),
        (["--run.device", "cuda:1", "--run.backend", "cpu"], "CUDA is not available"),
    ],
)
def test_missing_warp_or_cuda_is_one_clear_line(flags: list[str], message: str, tmp_path: Path,
                                                monkeypatch: pytest.MonkeyPatch,
                                                capsys: pytest.CaptureFixture[str]) -> None:
    import metarl.sim

    monkeypatch.setattr(metarl.sim, "warp_available", lambda: False)  # as on a default (CPU-only) install
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    argv = ["train", "maml", "--family", "PointNav-v0", *TINY["maml"], "--run.iterations", "1",
            "--run.runs-dir", str(tmp_path), *flags]
    assert main(argv) == 2
    out = capsys.readouterr().out.strip()
    assert len(out.splitlines()) == 1 and message in out, out
    assert not any(tmp_path.iterdir())  # nothing was created


def test_an_unknown_device_is_refused(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    argv = ["train", "maml", "--family", "PointNav-v0", "--run.runs-dir", str(tmp_path), "--run.device", "tpu"]
    assert main(argv) == 2
    captured = capsys.readouterr()
    assert "run.device must be auto, cpu, cuda or cuda:N, got 'tpu'" in captured.out + captured.err


def test_a_config_without_backend_and_device_still_loads() -> None:
    """config.json files written before issue 14 lack run.backend and run.device: they load with the defaults."""
    from metarl.algos.maml import MAMLConfig
    from metarl.config import config_from_dict
    from metarl.runs import config_to_dict

    data = config_to_dict(MAMLConfig())
    del data["run"]["backend"], data["run"]["device"]
    cfg = config_from_dict(MAMLConfig, data)
    assert (cfg.run.backend, cfg.run.device) == ("auto", "auto")


# ----------------------------------------------------------------------------------------------- on a GPU
@pytest.mark.gpu
@pytest.mark.warp
@needs_warp
def test_the_captured_cuda_graph_steps_as_the_kernels_launched_one_by_one() -> None:
    """The `frame_skip` substeps replayed as one CUDA graph give the states of launching each kernel from Python,
    through masked steps and resets, and after a per-world field write that replaces a captured array (gravity): the
    graph must be captured again, not replay the old array's address."""
    from metarl.sim_warp import MujocoWarpSim

    family = metarl.make("HalfCheetahVel-v0")
    sims = [MujocoWarpSim(family.model, N, 5, "cuda", graph=graph) for graph in (True, False)]
    qpos = torch.as_tensor(family.model.qpos0).repeat(N, 1)
    actions = torch.Generator().manual_seed(0)
    for t in range(8):
        ctrl = (torch.rand(N, family.act_dim, generator=actions, dtype=torch.float64) * 2 - 1).cuda()
        ids = torch.tensor([0, 2], device="cuda") if t % 3 == 2 else None
        for sim in sims:
            if t == 0:
                sim.reset(qpos, torch.zeros(N, family.model.nv, dtype=torch.float64))
            if t == 4:  # after the graph was captured: gravity becomes per world, and world 1 starts again
                sim.set_model_field("opt.gravity", torch.tensor([[0.0, -3.0, -9.3]], dtype=torch.float64).repeat(N, 1))
                sim.reset(qpos[:1], torch.zeros(1, family.model.nv, dtype=torch.float64), torch.tensor([1]))
            sim.step(ctrl, ids)
        _assert_close("qpos", sims[1].qpos.cpu(), sims[0].qpos, t, 1e-5)
    assert sims[0]._graph is not None and sims[1]._graph is None  # the path under test was taken


@pytest.mark.gpu
@pytest.mark.warp
@needs_warp
def test_sampler_statistics_on_cuda_match_the_cpu_backend() -> None:
    """Mean return of 64 random-policy episodes per backend agrees within 4 standard errors (float32 chaos changes
    single episodes, not the distribution). A fixed seed repeats on CUDA within tolerance, not bit for bit: MJWarp
    sums contact and constraint terms with atomics, whose order varies from run to run, and chaos amplifies the
    float32 differences (measured on an H200: 62 of 64 50-step returns equal to 1e-4, two off by 0.1 and 1.4). So the
    first 10 steps' rewards agree to 1e-3 and the mean return to a tenth of its standard error."""
    from metarl.policies import GaussianMLP, params_of
    from metarl.sampler import Sampler

    family = metarl.make("HalfCheetahVel-v0", horizon=50)
    policy = GaussianMLP(family.obs_dim, family.act_dim, (16,))
    tasks = family.sample_tasks(8, torch.Generator().manual_seed(0))
    batches = {}
    for backend in ("cpu", "warp:cuda", "warp:cuda"):
        sampler = Sampler(family, backend)
        params = {k: v.to(sampler.device) for k, v in params_of(policy).items()}
        batch = sampler.sample(policy.to(sampler.device), params, tasks, 8, torch.Generator().manual_seed(1))
        batches.setdefault(backend, []).append(batch)
    cpu, (gpu, again) = batches["cpu"][0].returns.double().flatten(), batches["warp:cuda"]
    returns, repeated = gpu.returns.double().cpu().flatten(), again.returns.double().cpu().flatten()
    se = (cpu.var() / cpu.numel() + returns.var() / returns.numel()).sqrt()
    assert (cpu.mean() - returns.mean()).abs() < 4 * se
    assert torch.allclose(gpu.rew[..., :10], again.rew[..., :10], atol=1e-3)
    assert (returns.mean() - repeated.mean()).abs() < 0.1 * se


@ON_EACH_DEVICE
@pytest.mark.warp
@needs_warp
@pytest.mark.usefixtures("example")
def test_the_readme_hopper_family_runs_on_warp(backend: str) -> None:
    """A family written against the protocol (the README's HopperMass: per-sim masses, termination) runs unchanged
    on the warp backend and matches the CPU backend."""
    run_parity(metarl.make(FAMILY_ID), backend)


@pytest.mark.parametrize("algo", sorted(TINY))
@pytest.mark.gpu
@pytest.mark.warp
@needs_warp
def test_every_algorithm_trains_on_cuda_and_its_run_evaluates_on_the_cpu(tmp_path: Path, algo: str) -> None:
    """One iteration (with validation) of every algorithm with the simulation and the learner on the GPU; the
    checkpoint loads on a CPU-only evaluation (`--device cpu`) and on the run's own device."""
    run_dir = _train(tmp_path, algo, "--run.device", "cuda", "--run.backend", "warp")
    config = json.loads((run_dir / "config.json").read_text())["config"]
    assert config["run"]["backend"] == "warp" and config["run"]["device"] == "cuda"
    (record,) = read_metrics(run_dir)
    assert torch.isfinite(torch.tensor(record["meta/return_pre"])) and "val/return_post" in record
    flags = ["--tasks", "2", "--steps", "1", "--episodes", "2", "--quiet"]
    assert main(["eval", str(run_dir), *flags, "--backend", "cpu", "--device", "cpu"]) == 0
    assert main(["eval", str(run_dir), *flags]) == 0
    (named,) = run_dir.glob("eval-T2-E2-k1-warp-cuda*.json")  # the run's own backend and device, in the name
    on_gpu = json.loads(named.read_text())
    assert on_gpu["protocol"]["backend"].startswith("warp:cuda")
    assert torch.isfinite(torch.tensor(on_gpu["returns"])).all()


@pytest.mark.gpu
@pytest.mark.warp
@needs_warp
def test_a_maml_iteration_on_cuda_repeats_with_its_seed(tmp_path: Path) -> None:
    """With the simulation, sampler, policy and TRPO step on the GPU, a seed gives the same iteration again (within
    the tolerance of MJWarp's atomics over a 10-step horizon). Not the CPU backend's numbers: the action noise comes
    from a CUDA generator, seeded from the run's generator (the statistics test above compares the backends)."""
    records = [read_metrics(_train(tmp_path / name, "maml", "--run.backend", "warp", "--run.device", "cuda"))[0]
               for name in ("first", "again")]
    cpu_record = read_metrics(_train(tmp_path / "cpu", "maml", "--run.backend", "cpu"))[0]
    for key in ("meta/return_pre", "meta/return_post_1"):
        assert records[0][key] == pytest.approx(records[1][key], abs=1e-3), key
    assert records[0]["perf/env_steps"] == cpu_record["perf/env_steps"]
