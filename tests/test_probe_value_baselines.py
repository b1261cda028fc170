"""scripts/probe_value_baselines.py's fits: the cross-fitted MLP never sees the episode it is applied to (so the
estimators stay unbiased), and the MLP regression learns a value function."""

from __future__ import annotations

import torch


def test_a_cross_fitted_value_ignores_the_episode_it_is_applied_to(load_script) -> None:
    probe = load_script("probe_value_baselines")
    g = torch.Generator().manual_seed(0)
    T, E, H = 2, 6, 5
    obs = torch.randn(T, E, H, 2, generator=g)
    returns = torch.randn(T, E, H, generator=g)
    mask = torch.ones(T, E, H)
    fit = {"hidden": 8, "steps": 20, "max_samples": 1000, "seed": 1}
    before = probe.cross_fitted_mlp(obs, returns, mask, 3, **fit)
    changed = returns.clone()
    changed[:, 0] += 100.0  # episode 0 lies in fold 0 (episodes 0 and 3)
    after = probe.cross_fitted_mlp(obs, changed, mask, 3, **fit)
    assert torch.equal(before[:, [0, 3]], after[:, [0, 3]])  # fold 0's values come from the other folds only
    assert not torch.allclose(before[:, [1, 2, 4, 5]], after[:, [1, 2, 4, 5]])


def test_the_mlp_value_fits_a_nonlinear_target(load_script) -> None:
    probe = load_script("probe_value_baselines")
    g = torch.Generator().manual_seed(0)
    obs = torch.rand(1, 40, 10, 2, generator=g) * 2 - 1
    target = obs.norm(dim=-1).double()  # ‖x‖: not in the span of the linear features (x, x², t...)
    values = probe.fit_mlp_values(obs, target, torch.ones(1, 40, 10), obs, hidden=32, steps=300, max_samples=400,
                                  seed=0)
    assert ((values - target) ** 2).mean() < 0.2 * ((target - target.mean()) ** 2).mean()


def test_the_probe_measures_the_learned_baseline(load_script, monkeypatch, capsys) -> None:
    """A tiny run of the probe with training's learned baseline: its values come from earlier meta-batches and it
    reports a variance ratio for every term."""
    probe = load_script("probe_value_baselines")
    monkeypatch.setattr("sys.argv", ["probe", "--reps", "2", "--warmup", "2", "--baselines", "learned"])
    probe.main()
    import json
    result = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert result["baselines"] == ["learned", "linear"] and result["warmup"] == 2
    assert {"dice Hv | learned", "lvc Hv | learned", "gradient | learned"} <= set(result["ratio_vs_linear"])


def test_the_step_probe_compares_both_baselines_from_the_same_theta(load_script, monkeypatch, capsys) -> None:
    """scripts/probe_value_step.py on a tiny budget: both baselines start from the same θ (equal returns before the
    step) and each α gives a row."""
    import json
    probe = load_script("probe_value_step")
    monkeypatch.setattr("sys.argv", ["probe", "--pretrain", "1", "--warmup", "2", "--tasks", "2", "--alphas", "0.1",
                                     "0.2"])
    probe.main()
    result = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert [r["alpha"] for r in result["rows"]] == [0.1, 0.2]
    for row in result["rows"]:
        assert row["linear"][0] == row["value"][0] and len(row["value"]) == 2
