"""Baselines: the oracle family, joint multi-task training, the PPO operator, and `metarl baseline` end to end."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path

import pytest
import torch

from metarl import registry
from metarl.algos.maml import MAMLConfig
from metarl.baselines import (
    BASELINES,
    _actor_params,
    _ppo_model,
    multitask_train,
    oracle_id,
    register_oracle,
    task_features,
)
from metarl.cli import main
from metarl.config import PolicyConfig, RunConfig, build_policy
from metarl.family import index_tasks
from metarl.policies import forward, params_of

TINY = ["--preset", "fast", "--meta-batch-size", "3", "--episodes-per-task", "2", "--policy.hidden", "8", "8",
        "--run.no-tensorboard", "--run.validate-every", "1", "--run.validation-tasks", "2", "--eval-tasks", "3",
        "--eval-steps", "1"]


@pytest.fixture
def oracle() -> Iterator[str]:
    spec = register_oracle("PointNav-v0")
    yield spec.id
    registry.unregister(spec.id)


def test_oracle_observes_the_task_and_changes_nothing_else(oracle: str, generator: torch.Generator) -> None:
    base, family = registry.make("PointNav-v0"), registry.make(oracle, high=0.3)
    assert oracle == oracle_id("PointNav-v0") == "oracle/PointNav-v0"
    assert family.obs_dim == base.obs_dim + 2 and family.base.high == 0.3  # kwargs reach the base family
    tasks = family.sample_tasks(3, generator)
    env, ref = family.make_env(3), base.make_env(3)
    obs, ref_obs = env.reset(tasks, generator), ref.reset(tasks, generator)
    assert torch.equal(obs, torch.cat([ref_obs, tasks.goal], -1))
    action = torch.full((3, 2), 0.05, dtype=torch.float64)
    out, ref_out = env.step(tasks, action), ref.step(tasks, action)
    assert torch.equal(out.reward, ref_out.reward) and torch.equal(out.obs[:, 2:], task_features(tasks))


def test_multitask_training_moves_the_policy_deterministically() -> None:
    cfg = MAMLConfig(family="PointNav-v0", meta_batch_size=3, episodes_per_task=2, policy=PolicyConfig(hidden=(8,)),
                     run=RunConfig(iterations=2))
    first, second = multitask_train(cfg), multitask_train(cfg)
    assert first.iteration == 2 and first.env_steps == 2 * 3 * 2 * 100
    assert all(torch.equal(first.params[k], second.params[k]) for k in first.params)
    start = params_of(build_policy(cfg.policy, registry.make("PointNav-v0"), 0))
    assert any(not torch.equal(first.params[k], start[k]) for k in start)  # TRPO moved the parameters


def test_ppo_actor_is_our_policy_network(generator: torch.Generator) -> None:
    """The SB3 actor built for a task computes exactly our policy's mean and log-std, and maps back losslessly."""
    family = registry.make("PointNav-v0")
    cfg = MAMLConfig(family="PointNav-v0", policy=PolicyConfig(hidden=(16, 16), activation="tanh", init_std=0.5))
    policy = build_policy(cfg.policy, family, 3)
    params = params_of(policy)
    model = _ppo_model(cfg, family, index_tasks(family.sample_tasks(1, generator), slice(0, 1)), policy, params,
                       episodes=1, seed=0)
    obs = torch.randn(5, 2, generator=generator)
    with torch.no_grad():
        dist = model.policy.get_distribution(obs)
    ours = forward(policy, params, obs)
    assert torch.equal(dist.distribution.mean, ours.mean)
    assert torch.allclose(dist.distribution.stddev.log(), ours.log_std.expand(5, 2))
    assert all(torch.equal(v, params[k]) for k, v in _actor_params(model, params).items())


def test_baseline_table_uses_the_same_adaptation_as_maml() -> None:
    from metarl.algos import ALGORITHMS

    for name in ("baseline-random", "baseline-pretrained", "baseline-oracle"):
        assert BASELINES[name].adaptation_returns is ALGORITHMS["maml"].adaptation_returns
    assert BASELINES["baseline-random"].defaults == {"run.iterations": 0}


@pytest.mark.parametrize("value", [False, True], ids=["linear", "value-baseline"])
@pytest.mark.parametrize("name", ["random", "pretrained", "oracle"])
def test_baseline_command_trains_and_evaluates(tmp_path: Path, name: str, value: bool) -> None:
    """Also with the learned value baseline (`--baseline value`): joint training fits it as MAML does, and the
    evaluation adapts with it (a random policy's run has none yet: no baseline, as MAML's first iteration)."""
    runs = tmp_path / "runs"
    try:
        assert main(["baseline", name, *TINY, "--run.iterations", "2", "--run.runs-dir", str(runs),
                     *(["--baseline", "value"] if value else [])]) == 0
    finally:
        if name == "oracle" and oracle_id("PointNav-v0") in {s.id for s in registry.registered()}:
            registry.unregister(oracle_id("PointNav-v0"))
    (run_dir,) = runs.glob("*")
    family = "oracle_PointNav-v0" if name == "oracle" else "PointNav-v0"
    assert run_dir.name.startswith(f"{family}__baseline-{name}__0__")
    record = json.loads((run_dir / "eval.json").read_text())
    assert [s["step"] for s in record["summary"]] == [0, 1] and record["protocol"]["step_sizes"] == [0.1]
    checkpoint = torch.load(run_dir / "checkpoint.pt", weights_only=False)
    assert checkpoint["state"]["iteration"] == (0 if name == "random" else 2)  # random: no training, ever
    assert ("value" in checkpoint["state"]["extra"]) == (value and name != "random")
    # every baseline meets the same seeded test tasks (here: the MAML runs' with --run.seed 0)
    assert torch.tensor(record["tasks"]["goal"]).shape == (3, 2)


def test_oracle_run_resumes_in_a_fresh_registry(tmp_path: Path) -> None:
    """A resumed oracle run rebuilds its family from family.json and registers it again on first use."""
    runs = tmp_path / "runs"
    assert main(["baseline", "oracle", *TINY, "--run.iterations", "1", "--run.runs-dir", str(runs)]) == 0
    registry.unregister(oracle_id("PointNav-v0"))  # as in a new process
    (run_dir,) = runs.glob("*")
    config = json.loads((run_dir / "config.json").read_text())
    config["config"]["run"]["iterations"] = 2
    (run_dir / "config.json").write_text(json.dumps(config))
    try:
        assert main(["baseline", "oracle", "--resume", str(run_dir), "--eval-tasks", "2", "--eval-steps", "1"]) == 0
    finally:
        registry.unregister(oracle_id("PointNav-v0"))
    assert [r["iteration"] for r in map(json.loads, (run_dir / "metrics.jsonl").read_text().splitlines())] == [1, 2]


def test_baselines_see_the_test_tasks_of_the_run_they_are_compared_with(tmp_path: Path) -> None:
    runs = tmp_path / "runs"
    assert main(["baseline", "random", *TINY, "--run.runs-dir", str(runs)]) == 0
    assert main(["train", "maml", "--preset", "fast", "--meta-batch-size", "3", "--episodes-per-task", "2",
                 "--policy.hidden", "8", "8", "--run.iterations", "0", "--run.no-tensorboard",
                 "--run.runs-dir", str(runs)]) == 0
    maml_dir = next(runs.glob("*__maml__*"))
    assert main(["eval", str(maml_dir), "--tasks", "3", "--steps", "1", "--quiet"]) == 0
    random_dir = next(runs.glob("*__baseline-random__*"))
    tasks = [json.loads((d / "eval.json").read_text())["tasks"] for d in (maml_dir, random_dir)]
    assert tasks[0] == tasks[1]
    returns = [json.loads((d / "eval.json").read_text())["returns"] for d in (maml_dir, random_dir)]
    assert returns[0] == returns[1]  # same seed, same initial policy, same adaptation: the same numbers


def test_ppo_baseline_end_to_end_and_deterministic(tmp_path: Path) -> None:
    records = []
    for name in ("a", "b"):
        runs = tmp_path / name
        assert main(["baseline", "ppo", "--preset", "fast", "--episodes-per-task", "1", "--no-cross-fit",
                     "--policy.hidden", "8", "8",
                     "--run.no-tensorboard", "--run.runs-dir", str(runs), "--eval-tasks", "2", "--eval-steps",
                     "2"]) == 0
        records.append(json.loads((next(runs.glob("*")) / "eval.json").read_text()))
    assert torch.tensor(records[0]["returns"]).shape == (3, 2, 1)
    assert records[0]["protocol"]["step_sizes"] == [3e-4, 3e-4]  # PPO's Adam learning rate per update
    assert records[0]["returns"] == records[1]["returns"]
    assert records[0]["returns"][1] != records[0]["returns"][0]  # PPO changed the policies


@pytest.mark.parametrize(("argv", "message"), [(["baseline", "nope"], "unknown baseline"),
                                               (["baseline", "random", "--eval-steps", "x"], "needs an integer")])
def test_bad_baseline_input(argv: list[str], message: str, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(argv) == 2
    assert message in capsys.readouterr().out


@pytest.mark.slow
def test_oracle_beats_pretrained_without_adapting(tmp_path: Path) -> None:
    """Knowing the goal is worth a lot on PointNav: after the same joint training, the oracle's un-adapted return is
    far above the pretrained policy's (MAML paper, 2-D navigation: oracle -2.3, pretrained -40.8)."""
    before = {s.id for s in registry.registered()}
    summaries = {}
    try:
        for name in ("pretrained", "oracle"):
            runs = tmp_path / name
            assert main(["baseline", name, "--preset", "fast", "--run.iterations", "30", "--run.no-tensorboard",
                         "--run.runs-dir", str(runs), "--eval-tasks", "20", "--eval-steps", "1"]) == 0
            summaries[name] = json.loads(next(runs.glob("*")).joinpath("eval.json").read_text())["summary"]
    finally:
        for id_ in {s.id for s in registry.registered()} - before:
            registry.unregister(id_)
    assert summaries["oracle"][0]["mean"] > summaries["pretrained"][0]["mean"] + 10


def test_a_random_baseline_is_never_trained_further(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    runs = tmp_path / "runs"
    assert main(["baseline", "random", *TINY, "--run.runs-dir", str(runs)]) == 0
    (run_dir,) = runs.glob("*")
    capsys.readouterr()
    assert main(["baseline", "random", "--resume", str(run_dir), "--run.iterations", "3"]) == 2
    assert "the random baseline never trains" in capsys.readouterr().out
    assert main(["baseline", "random", "--resume", str(run_dir), "--eval-tasks", "2", "--eval-steps", "1"]) == 0
    assert "nothing to train" in capsys.readouterr().out  # then evaluated again
    assert torch.load(run_dir / "checkpoint.pt", weights_only=False)["state"]["iteration"] == 0


@pytest.mark.parametrize("name", ["pretrained", "oracle"])
def test_trained_baselines_keep_the_best_return_before_adaptation(tmp_path: Path, name: str) -> None:
    """The pretrained and oracle policies are trained to act without adapting (the oracle's step-0 return is the
    papers' ceiling): best.pt holds the iteration with the best validation return *before* adaptation."""
    runs = tmp_path / "runs"
    try:
        assert main(["baseline", name, *TINY, "--run.iterations", "4", "--run.runs-dir", str(runs)]) == 0
    finally:
        if oracle_id("PointNav-v0") in {s.id for s in registry.registered()}:
            registry.unregister(oracle_id("PointNav-v0"))
    (run_dir,) = runs.glob("*")
    records = [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines()]
    pre = {r["iteration"]: r["val/return_pre"] for r in records if "val/return_pre" in r}
    top = max(pre, key=lambda i: pre[i])
    best = torch.load(run_dir / "best.pt", weights_only=False)
    assert best["best"] == {"iteration": top, "return_pre": pre[top]} and best["state"]["iteration"] == top
