"""The batched sampler: Batch layout, episode boundaries, log-probs, determinism and per-row parameters.

Short horizons (`make(..., horizon=...)`) and a few tasks keep every test well under a second; PointNav is used where
the dynamics do not matter, HalfCheetah/Ant where they do (MuJoCo envs, early termination).
"""

from __future__ import annotations

import pytest
import torch
from torch import Tensor

import metarl
from metarl.family import TaskFamily
from metarl.policies import DeterministicMLP, GaussianMLP, Params, forward, log_prob, params_of, stack
from metarl.sampler import Batch, Sampler

T, E = 3, 2


def _policy(family: TaskFamily, dtype: torch.dtype = torch.float32, init_std: float = 1.0) -> GaussianMLP:
    return GaussianMLP(family.obs_dim, family.act_dim, hidden=(16,), init_std=init_std).to(dtype)


def _sample(family: TaskFamily, policy: torch.nn.Module, params: Params, seed: int = 0,
            stop_ended: bool | None = None, **kwargs: object) -> Batch:
    """T tasks × E episodes; tasks and rollouts drawn from one generator seeded with `seed`."""
    g = torch.Generator().manual_seed(seed)
    tasks = family.sample_tasks(T, g)
    sampler = Sampler(family, stop_ended=stop_ended)
    return sampler.sample(policy, params, tasks, episodes=E, generator=g, **kwargs)  # type: ignore[arg-type]


def _constant_mover() -> tuple[GaussianMLP, Params]:
    """A linear PointNav policy whose mean is the constant action (0.1, -0.1): goal k·(0.1, -0.1) is reached after
    exactly k deterministic steps."""
    policy = GaussianMLP(2, 2, hidden=()).double()
    params = params_of(policy)
    params["net.0.weight"].zero_()
    params["net.0.bias"].copy_(torch.tensor([0.1, -0.1], dtype=torch.float64))
    return policy, params


def _check_episode_structure(batch: Batch, horizon: int) -> Tensor:
    """Assert every episode's layout; returns its length L [T, E].

    mask is 1 for steps 0..L-1 and 0 after, done is True exactly at step L-1 (termination or the horizon), and
    nothing is recorded after the end (zero obs, act, rew, logp), so sums over H need no extra masking.
    """
    steps = torch.arange(horizon)
    lengths = batch.mask.sum(-1).long()
    assert bool((lengths >= 1).all())
    assert torch.equal(batch.mask, (steps < lengths[..., None]).to(batch.mask.dtype))  # a prefix of ones
    assert torch.equal(batch.done, steps == (lengths - 1)[..., None])
    after = ~batch.mask.bool()
    for name in ("obs", "act", "rew", "logp"):
        assert not getattr(batch, name)[after].any(), f"{name} non-zero after the episode ended"
    return lengths


def _assert_batches_close(a: Batch, b: Batch, rtol: float, atol: float) -> None:
    assert torch.equal(a.done, b.done) and torch.equal(a.mask, b.mask)
    for name in ("obs", "act", "rew", "logp", "returns"):
        torch.testing.assert_close(getattr(a, name), getattr(b, name), rtol=rtol, atol=atol, msg=name)


# ----------------------------------------------------------------------------------------------- layout
@pytest.mark.parametrize("dtype", [torch.float32, torch.float64], ids=["float32", "float64"])
@pytest.mark.parametrize(("family_id", "horizon"), [("PointNav-v0", 20), ("HalfCheetahVel-v0", 12)])
def test_batch_shapes_and_dtypes_follow_the_policy(family_id: str, horizon: int, dtype: torch.dtype) -> None:
    family = metarl.make(family_id, horizon=horizon)
    policy = _policy(family, dtype)
    batch = _sample(family, policy, params_of(policy))
    H = horizon
    assert batch.obs.shape == (T, E, H, family.obs_dim)
    assert batch.act.shape == (T, E, H, family.act_dim)
    for name in ("rew", "done", "logp", "mask"):
        assert getattr(batch, name).shape == (T, E, H), name
    assert batch.returns.shape == (T, E)
    for name in ("obs", "act", "rew", "logp", "mask", "returns"):
        assert getattr(batch, name).dtype == dtype, name
    assert batch.done.dtype == torch.bool
    lengths = _check_episode_structure(batch, H)
    assert batch.num_steps == int(lengths.sum())
    assert torch.equal(batch.returns, batch.rew.sum(-1))


def test_episode_lengths_follow_termination_and_horizon() -> None:
    # a constant action (0.1, -0.1) reaches goal k·(0.1, -0.1) after exactly k steps; the last goal is never reached
    family = metarl.make("PointNav-v0", horizon=6)
    policy, params = _constant_mover()
    tasks = family.make_tasks(goal=[[0.1, -0.1], [0.2, -0.2], [0.3, -0.3], [0.3, 0.3]])
    g = torch.Generator().manual_seed(0)
    batch = Sampler(family).sample(policy, params, tasks, episodes=2, generator=g, deterministic=True)
    lengths = _check_episode_structure(batch, family.horizon)
    assert lengths.tolist() == [[1, 1], [2, 2], [3, 3], [6, 6]]
    assert torch.equal(batch.returns, batch.rew.sum(-1))


def test_ant_early_termination_masks_the_rest_of_the_episode() -> None:
    # σ = 100 makes bang-bang actions that flip the ant within ~15-35 steps (measured); some episodes then end early
    family = metarl.make("AntVel-v0", horizon=40)
    policy = _policy(family, init_std=100.0)
    batch = _sample(family, policy, params_of(policy))
    lengths = _check_episode_structure(batch, family.horizon)
    assert int(lengths.min()) < family.horizon, "no episode terminated: the test would check nothing"
    assert torch.equal(batch.returns, batch.rew.sum(-1))


def test_ended_episodes_stepping_on_give_the_same_batch() -> None:
    """`stop_ended=False` (the GPU default: no device sync per step) lets ended ants keep stepping and runs the whole
    horizon; the batch must equal the CPU default's, which stops them, field for field."""
    family = metarl.make("AntVel-v0", horizon=40)
    policy = _policy(family, init_std=100.0)  # flips ants within the horizon, as above
    batches = [_sample(family, policy, params_of(policy), stop_ended=stop) for stop in (True, False)]
    assert int(batches[0].mask.sum(-1).min()) < family.horizon, "no episode ended: the test would check nothing"
    for name, stopped, unmasked in zip(Batch._fields, *batches, strict=True):
        assert torch.equal(stopped, unmasked), name


def test_a_rollout_whose_episodes_all_end_early_is_the_same_without_stopping() -> None:
    family = metarl.make("PointNav-v0", horizon=8)
    policy, params = _constant_mover()
    tasks = family.make_tasks(goal=[[0.1, -0.1], [0.2, -0.2], [0.3, -0.3]])  # all reached within 3 steps
    batches = [Sampler(family, stop_ended=stop).sample(policy, params, tasks, 2, torch.Generator().manual_seed(0),
                                                       deterministic=True) for stop in (True, False)]
    assert batches[0].mask.sum(-1).tolist() == [[1, 1], [2, 2], [3, 3]]
    for name, stopped, unmasked in zip(Batch._fields, *batches, strict=True):
        assert torch.equal(stopped, unmasked), name


# ----------------------------------------------------------------------------------------------- log-probs, grads
@pytest.mark.parametrize("stacked", [False, True], ids=["shared", "stacked"])
def test_logp_matches_log_prob_recomputed(stacked: bool) -> None:
    family = metarl.make("HalfCheetahVel-v0", horizon=10)
    policy = _policy(family, torch.float64, init_std=0.5)
    params = params_of(policy)
    if stacked:  # distinct params per row: the recomputation must use each row's own
        params = {k: v + 0.1 * torch.randn(T, *v.shape, dtype=v.dtype) for k, v in params.items()}
    batch = _sample(family, policy, params)
    valid = batch.mask.bool()
    recomputed = log_prob(policy, params, batch.obs, batch.act)
    assert recomputed.shape == (T, E, family.horizon)
    torch.testing.assert_close(batch.logp[valid], recomputed[valid], rtol=1e-10, atol=1e-10)


def test_action_noise_has_the_policy_std() -> None:
    # logp is recomputed from whatever act was drawn, so it cannot catch a wrong noise scale; the standardised
    # residuals can: 2·600 draws give their std to about ±3%, and σ = 0.3 is far from the σ = 1 of a forgotten scale
    family = metarl.make("PointNav-v0", horizon=100)
    policy = _policy(family, torch.float64, init_std=0.3)
    params = params_of(policy)
    batch = _sample(family, policy, params)
    valid = batch.mask.bool()
    z = ((batch.act - forward(policy, params, batch.obs).mean) / 0.3)[valid]
    assert z.numel() > 1000
    assert abs(float(z.mean())) < 0.1 and abs(float(z.std()) - 1.0) < 0.1


def test_sampled_actions_carry_no_grad() -> None:
    family = metarl.make("PointNav-v0", horizon=5)
    policy = _policy(family)
    params = {k: v.requires_grad_(True) for k, v in params_of(policy).items()}
    batch = _sample(family, policy, params)
    for name, value in batch._asdict().items():
        assert not value.requires_grad, name
    assert all(p.grad is None for p in params.values())


@pytest.mark.parametrize("policy_kind", ["gaussian", "deterministic_mlp"])
def test_deterministic_acts_with_the_mean_and_zero_logp(policy_kind: str) -> None:
    family = metarl.make("HalfCheetahVel-v0", horizon=10)
    if policy_kind == "gaussian":
        policy: torch.nn.Module = _policy(family, torch.float64)
    else:  # a policy without a log-std: the sampler must not ask for one, even when not told deterministic
        policy = DeterministicMLP(family.obs_dim, family.act_dim, hidden=(16,)).double()
    batch = _sample(family, policy, params_of(policy), deterministic=policy_kind == "gaussian")
    assert not batch.logp.any()
    valid = batch.mask.bool()
    mean = forward(policy, params_of(policy), batch.obs).mean
    torch.testing.assert_close(batch.act[valid], mean[valid], rtol=1e-12, atol=1e-12)


# ----------------------------------------------------------------------------------------------- determinism, rows
def test_same_seed_gives_an_identical_batch() -> None:
    family = metarl.make("HalfCheetahVel-v0", horizon=15)
    policy = _policy(family)
    params = params_of(policy)
    a, b, c = (_sample(family, policy, params, seed=s) for s in (0, 0, 1))
    for name, x in a._asdict().items():
        assert torch.equal(x, getattr(b, name)), name
    assert not torch.equal(a.act, c.act)


@pytest.mark.parametrize(("family_id", "horizon"), [("PointNav-v0", 20), ("HalfCheetahVel-v0", 10)])
def test_stacked_copies_of_shared_params_give_the_same_batch(family_id: str, horizon: int) -> None:
    # Not bit-identical: vmap evaluates the stacked rows with a batched matmul whose summation order differs from
    # the shared matmul (measured 1e-16 on PointNav, 1e-10 on HalfCheetah after 20 steps of chaotic contacts, float64).
    family = metarl.make(family_id, horizon=horizon)
    policy = _policy(family, torch.float64)
    params = params_of(policy)
    shared = _sample(family, policy, params)
    stacked = _sample(family, policy, stack(params, T))
    _assert_batches_close(shared, stacked, rtol=1e-8, atol=1e-8)


def test_each_row_acts_with_its_own_params() -> None:
    family = metarl.make("HalfCheetahVel-v0", horizon=10)
    policy = _policy(family, torch.float64)
    base = params_of(policy)
    rows = [{k: v + 0.3 * r * torch.randn_like(v) for k, v in base.items()} for r in range(T)]
    stacked = {k: torch.stack([row[k] for row in rows]) for k in base}
    batch = _sample(family, policy, stacked, deterministic=True)
    for t, row in enumerate(rows):
        own = forward(policy, row, batch.obs[t]).mean
        torch.testing.assert_close(batch.act[t], own, rtol=1e-12, atol=1e-12)
        if t > 0:  # and the rows really differ: the first row's params would give other actions
            other = forward(policy, rows[0], batch.obs[t]).mean
            assert not torch.allclose(batch.act[t], other)


# ----------------------------------------------------------------------------------------------- errors
@pytest.mark.parametrize("episodes", [0, -1])
def test_episodes_below_one_raise(episodes: int, generator: torch.Generator) -> None:
    family = metarl.make("PointNav-v0", horizon=5)
    policy = _policy(family)
    with pytest.raises(ValueError, match="episodes"):
        Sampler(family).sample(policy, params_of(policy), family.sample_tasks(T, generator), episodes, generator)


@pytest.mark.parametrize("rows", [T - 1, T + 1])
def test_stacked_rows_must_match_tasks(rows: int, generator: torch.Generator) -> None:
    family = metarl.make("PointNav-v0", horizon=5)
    policy = _policy(family)
    params = stack(params_of(policy), rows)
    with pytest.raises(ValueError, match="rows"):
        Sampler(family).sample(policy, params, family.sample_tasks(T, generator), E, generator)
