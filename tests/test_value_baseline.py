"""The learned value baseline (`--baseline value`, metarl/value_baseline.py): it learns, it never sees a batch
before predicting it, it survives resume exactly, and evaluation adapts with it."""

from __future__ import annotations

import json
from dataclasses import replace
from pathlib import Path

import pytest
import torch
from test_train_cli import assert_resume_continues_exactly, train

import metarl
from metarl.algos.maml import MAMLConfig, adaptation_returns, collect, prepare_batch
from metarl.cli import main
from metarl.config import build_policy
from metarl.policies import params_of
from metarl.returns import discounted_returns
from metarl.sampler import Sampler
from metarl.value_baseline import (
    RunningMoments,
    ValueBaseline,
    ValueConfig,
    for_run,
    step_features,
    task_features,
)


def test_running_moments_equal_the_moments_of_all_rows() -> None:
    g = torch.Generator().manual_seed(0)
    parts = [torch.randn(n, 3, generator=g, dtype=torch.float64) * 4 + 2 for n in (5, 1, 17, 0, 9)]
    moments = RunningMoments(3)
    for part in parts:
        moments.update(part)
    rows = torch.cat(parts)
    torch.testing.assert_close(moments.mean, rows.mean(0))
    torch.testing.assert_close(moments.std(), rows.std(0, unbiased=False))
    copy = RunningMoments(3)
    copy.load_state_dict(moments.state_dict())
    torch.testing.assert_close(copy.std(), moments.std())


def test_step_features_hold_obs_time_task_and_stage() -> None:
    obs = torch.randn(2, 3, 4, 5)
    x = step_features(obs, torch.tensor([[7.0], [8.0]]), stage=1, stages=3)
    assert x.shape == (2, 3, 4, 5 + 1 + 1 + 3)
    torch.testing.assert_close(x[..., :5], obs)
    torch.testing.assert_close(x[0, 0, :, 5], torch.arange(4) / 4)
    assert (x[1, ..., 6] == 8.0).all() and (x[..., 7:] == torch.tensor([0.0, 1.0, 0.0])).all()


def test_value_learns_a_task_dependent_return_and_predicts_zero_before_any_fit() -> None:
    """Returns −|s − goal|·(H − t): the fitted V explains most of their variance on fresh episodes, which a
    baseline blind to the task could not (the goal's sign flips the return's slope)."""
    g = torch.Generator().manual_seed(1)
    T, E, H = 8, 4, 10
    value = ValueBaseline(ValueConfig(epochs=20, minibatch=256, lr=3e-3), 1, 1, 2, seed=0)

    def batch() -> tuple:
        obs = torch.rand(T, E, H, 1, generator=g) * 4 - 2
        goal = torch.rand(T, generator=g) * 4 - 2
        returns = -(obs[..., 0] - goal[:, None, None]).abs() * (H - torch.arange(H))
        return obs, (goal,), returns, torch.ones(T, E, H)

    obs, tasks, returns, mask = batch()
    assert (value.predict(obs, tasks, mask, 0) == 0).all() and not value.fitted
    for _ in range(30):
        obs, tasks, returns, mask = batch()
        value.fit([(obs, tasks, returns, mask, 0)])
    obs, tasks, returns, mask = batch()
    mask[:, :, -3:] = 0
    predicted = value.predict(obs, tasks, mask, 0)
    assert (predicted[mask == 0] == 0).all()
    explained = 1 - (returns - predicted)[mask > 0].var() / returns[mask > 0].var()
    assert explained > 0.8, float(explained)
    with pytest.raises(ValueError, match="stage"):
        value.predict(obs, tasks, mask, 2)


def small_config(**overrides: object) -> MAMLConfig:
    base = {"family": "PointNav-v0", "meta_batch_size": 3, "episodes_per_task": 4, "baseline": "value",
            "estimator": "dice", "inner_lr": 0.1}
    cfg = MAMLConfig(**{**base, **overrides})  # type: ignore[arg-type]
    return replace(cfg, policy=replace(cfg.policy, hidden=(8, 8)))


def test_collect_predicts_each_batch_before_fitting_on_it() -> None:
    """The advantages `collect` hands to the estimators come from the baseline as it was *before* the iteration
    (so independent of the batch's actions, hence unbiased), and the baseline is then fitted on every stage."""
    cfg = small_config()
    family = metarl.make(cfg.family)
    policy = build_policy(cfg.policy, family, 0)
    params = params_of(policy)
    sampler = Sampler(family)
    g = torch.Generator().manual_seed(0)
    tasks = family.sample_tasks(cfg.meta_batch_size, g)
    value = for_run(cfg, family.obs_dim, tasks, None)
    collect(sampler, policy, params, tasks, cfg, g, value)  # a first fit, so the baseline is not zero
    before = value.state_dict()
    g_copy = torch.Generator()
    g_copy.set_state(g.get_state())
    rollouts = collect(sampler, policy, params, tasks, cfg, g, value)
    frozen = for_run(cfg, family.obs_dim, tasks, before)
    pre = sampler.sample(policy, params, tasks, cfg.episodes_per_task, g_copy)  # the same episodes again
    expected = prepare_batch(pre, cfg, frozen.predict(pre.obs, tasks, pre.mask, 0))
    torch.testing.assert_close(rollouts.pre[0].adv, expected.adv, rtol=0, atol=0)
    assert not torch.equal(value.state_dict()["net"]["0.weight"], before["net"]["0.weight"])  # then it was fitted
    fitted = value.predict(pre.obs, tasks, pre.mask, 0)
    assert not torch.equal(fitted, frozen.predict(pre.obs, tasks, pre.mask, 0))
    returns = discounted_returns(pre.rew, pre.mask, cfg.gamma)
    assert returns.shape == fitted.shape


def test_training_with_the_value_baseline_resumes_exactly(tmp_path: Path) -> None:
    assert_resume_continues_exactly(tmp_path, "maml", "--baseline", "value", "--estimator", "dice")


def test_eval_adapts_with_the_runs_value_baseline(tmp_path: Path) -> None:
    """The checkpoint carries the fitted baseline; `metarl eval` adapts with it, and adapting without it is a clear
    error rather than a silent switch to another baseline."""
    run_dir = train(tmp_path, "maml", "--baseline", "value", "--run.validate-every", "1",
                    "--run.validation-tasks", "2")
    payload = torch.load(run_dir / "checkpoint.pt", weights_only=False)
    assert set(payload["state"]["extra"]["value"]) == {"net", "optimizer", "inputs", "targets", "generator"}
    records = [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines()]
    assert all("value/loss" in r and "perf/value_s" in r and "val/return_post" in r for r in records)
    assert main(["eval", str(run_dir), "--tasks", "2", "--steps", "1", "--episodes", "2", "--quiet"]) == 0
    cfg = MAMLConfig(family="PointNav-v0", baseline="value")
    family = metarl.make(cfg.family)
    policy = build_policy(cfg.policy, family, 0)
    tasks = family.sample_tasks(2, torch.Generator().manual_seed(0))
    with pytest.raises(ValueError, match="learned value baseline"):
        adaptation_returns(cfg, Sampler(family), policy, params_of(policy), tasks, (0.1,), 2,
                           torch.Generator().manual_seed(0))
    # before the first iteration there is no fit yet: no baseline, as in training's first iteration
    fresh = adaptation_returns(cfg, Sampler(family), policy, params_of(policy), tasks, (0.1,), 2,
                               torch.Generator().manual_seed(0), {})
    plain = adaptation_returns(replace(cfg, baseline="none"), Sampler(family), policy, params_of(policy), tasks,
                               (0.1,), 2, torch.Generator().manual_seed(0))
    assert torch.equal(fresh, plain)


def test_a_fit_uses_at_most_max_rows_steps() -> None:
    """Beyond `max_rows` valid steps a fit draws a random subset (the statistics count only what it used)."""
    value = ValueBaseline(ValueConfig(max_rows=50, minibatch=16), 1, 1, 1, seed=0)
    obs, mask = torch.randn(2, 5, 10, 1), torch.ones(2, 5, 10)
    value.fit([(obs, (torch.zeros(2),), torch.randn(2, 5, 10), mask, 0)])
    assert int(value.targets.count) == 50


def test_task_features_flatten_every_field() -> None:
    tasks = (torch.tensor([1.0, 2.0]), torch.tensor([[3.0, 4.0], [5.0, 6.0]]))
    assert task_features(tasks, 2).tolist() == [[1.0, 3.0, 4.0], [2.0, 5.0, 6.0]]


@pytest.mark.parametrize("flags", [["--value.lr", "0"], ["--value.epochs", "0"], ["--value.hidden"],
                                   ["--value.max-rows", "0"]])
def test_bad_value_settings_are_refused(tmp_path: Path, flags: list[str], capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["train", "maml", "--baseline", "value", *flags, "--run.runs-dir", str(tmp_path)]) == 2
    assert "value." in capsys.readouterr().err
