"""How much would a better state baseline (a learned value function, TMAML's route) cut the variance of DiCE's
second-order term? A probe at a fixed θ, same batches for every baseline (issue 16).

For each of R meta-batches (T tasks × E episodes at θ_0 of the pytorch-maml-rl PointNav preset), the inner batch's
advantages R_t − b(s_t) (raw: no normalisation, the same scale for every baseline) with the baseline b:

- ``none``;
- ``linear``: rllab's linear feature baseline, cross-fitted on the task's other episodes (the training default);
- ``mlp-crossfit``: a per-task MLP value V(features of s_t, t), K-fold cross-fitted on the batch itself (each fold's
  values from the MLP fitted on the other folds), as a learned baseline could be in training;
- ``mlp-independent``: the same MLP fitted on B fresh episodes of the same task (an idealised value function that
  training does not have: as good as this architecture gets, and independent of the batch, so unbiased);
- ``learned``: training's `--baseline value` (metarl/value_baseline.py), one network for all tasks fitted on the
  earlier meta-batches only (after `--warmup` meta-batches that are fitted on but not measured), as in training at
  a policy that has stopped moving.

Every one of them leaves the estimators unbiased (no baseline depends on the episode it is applied to). Per
baseline: the total variance (trace of the covariance over the R meta-batches, summed over tasks) of the inner
gradient and of the inner Hessian-vector product H·v of `dice` and `lvc` for a fixed unit vector v, and the mean
squared advantage. The last line is one JSON object with these and their ratios to ``linear``.

    python scripts/probe_value_baselines.py                # 30 meta-batches, about 20 minutes on one core
    python scripts/probe_value_baselines.py --reps 4       # a quick look
    python scripts/probe_value_baselines.py --baselines none linear learned   # without the slow MLP fits
"""

from __future__ import annotations

import argparse
import json
import os
import time

import torch
from torch import Tensor

import metarl
from metarl.algos.maml import PRESETS, MAMLConfig
from metarl.config import apply_overrides, build_policy
from metarl.curvature import inner_hessian_product
from metarl.estimators import TaskData, inner_objective, prepare
from metarl.policies import Params, params_of, stack
from metarl.returns import cross_fitted_advantages, discounted_returns, linear_features
from metarl.sampler import Sampler
from metarl.value_baseline import ValueBaseline, task_features

BASELINES = ("none", "linear", "mlp-crossfit", "mlp-independent", "learned")


def fit_mlp_values(obs: Tensor, returns: Tensor, mask: Tensor, query: Tensor, hidden: int, steps: int,
                   max_samples: int, seed: int) -> Tensor:
    """One MLP per task (2 × `hidden` tanh on rllab's baseline features), regressed on the discounted returns of
    the valid steps by full-batch Adam, evaluated at `query`.

    Args:
        obs: [T, E, H, obs_dim]; returns, mask: [T, E, H] (the fitting episodes).
        query: [T, E', H, obs_dim] observations to evaluate.
        max_samples: steps per task used for the fit (a random subset beyond that: the fit's cost).

    Returns:
        values [T, E', H] float64.
    """
    g = torch.Generator().manual_seed(seed)
    T = obs.shape[0]
    feats = linear_features(obs)
    x = feats.reshape(T, -1, feats.shape[-1]).float()
    y, m = returns.reshape(T, -1).float(), mask.reshape(T, -1).float()
    if x.shape[1] > max_samples:
        keep = torch.randperm(x.shape[1], generator=g)[:max_samples]
        x, y, m = x[:, keep], y[:, keep], m[:, keep]
    F = x.shape[-1]
    w1 = (torch.randn(T, F, hidden, generator=g) / F**0.5).requires_grad_()
    w2 = (torch.randn(T, hidden, hidden, generator=g) / hidden**0.5).requires_grad_()
    w3 = torch.zeros(T, hidden, 1, requires_grad=True)
    b1, b2 = (torch.zeros(T, 1, hidden, requires_grad=True) for _ in range(2))
    b3 = ((y * m).sum(1) / m.sum(1).clamp_min(1)).view(T, 1, 1).clone().requires_grad_()

    def net(z: Tensor) -> Tensor:
        return (torch.tanh(torch.tanh(z @ w1 + b1) @ w2 + b2) @ w3 + b3).squeeze(-1)

    opt = torch.optim.Adam([w1, b1, w2, b2, w3, b3], lr=1e-2)
    for _ in range(steps):
        opt.zero_grad()
        (((net(x) - y) ** 2 * m).sum() / m.sum()).backward()
        opt.step()
    with torch.no_grad():
        q = linear_features(query)
        return net(q.reshape(T, -1, F).float()).reshape(q.shape[:-1]).double()


def cross_fitted_mlp(obs: Tensor, returns: Tensor, mask: Tensor, folds: int, **fit: int) -> Tensor:
    """K-fold: episode e's values from the MLP fitted on the folds without e. [T, E, H]."""
    E = obs.shape[1]
    out = torch.zeros(returns.shape, dtype=torch.float64)
    for k in range(folds):
        held = torch.zeros(E, dtype=torch.bool)
        held[k::folds] = True
        out[:, held] = fit_mlp_values(obs[:, ~held], returns[:, ~held], mask[:, ~held], obs[:, held], **fit)
    return out


def second_order_terms(policy: torch.nn.Module, theta: Params, data: TaskData, v: Params) -> dict[str, Tensor]:
    """Flat [P] sums over tasks of the inner gradient and of H·v for dice and lvc, on `data` [T, E, H, ...]."""
    T = data.mask.shape[0]
    at = stack(theta, T)
    out = {}
    for estimator in ("dice", "lvc"):
        hv = inner_hessian_product(policy, at, data, estimator, 1.0)({k: x.expand(T, *x.shape) for k, x in v.items()})
        out[f"{estimator} Hv"] = torch.cat([h.sum(0).reshape(-1) for h in hv.values()]).double()
    leaves = {k: x.detach().requires_grad_(True) for k, x in at.items()}
    grad = torch.autograd.grad(inner_objective(policy, leaves, data, "naive", 1.0).sum(), list(leaves.values()))
    out["gradient"] = torch.cat([x.sum(0).reshape(-1) for x in grad]).double()
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--reps", type=int, default=30, help="independent meta-batches")
    parser.add_argument("--independent-episodes", type=int, default=200, help="B: episodes per task of the ideal fit")
    parser.add_argument("--folds", type=int, default=5, help="K of the cross-fitted MLP")
    parser.add_argument("--hidden", type=int, default=32)
    parser.add_argument("--fit-steps", type=int, default=150)
    parser.add_argument("--fit-samples", type=int, default=4000, help="steps per task an MLP fit uses at most")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--baselines", nargs="+", default=list(BASELINES), choices=BASELINES,
                        help="which baselines to compare (linear is always measured: the ratios are to it)")
    parser.add_argument("--warmup", type=int, default=20, help="meta-batches the learned baseline fits on first")
    args = parser.parse_args()
    chosen = set(args.baselines) | {"linear"}
    torch.set_num_threads(1)

    cfg = apply_overrides(MAMLConfig(), {**PRESETS["pytorch-maml-rl-point"]})
    family = metarl.make(cfg.family)
    policy = build_policy(cfg.policy, family, args.seed)
    theta, sampler = params_of(policy), Sampler(family)
    generator = torch.Generator().manual_seed(args.seed)
    v = {k: torch.randn(p.shape, generator=torch.Generator().manual_seed(123), dtype=p.dtype) for k, p in theta.items()}
    norm = torch.sqrt(sum(x.square().sum() for x in v.values()))
    v = {k: x / norm for k, x in v.items()}
    fit = {"hidden": args.hidden, "steps": args.fit_steps, "max_samples": args.fit_samples, "seed": args.seed + 1}
    samples: dict[str, list[Tensor]] = {}
    started = time.time()
    learned: ValueBaseline | None = None
    for r in range(-args.warmup if "learned" in chosen else 0, args.reps):
        tasks = family.sample_tasks(cfg.meta_batch_size, generator)
        pre = sampler.sample(policy, theta, tasks, cfg.episodes_per_task, generator)
        returns = discounted_returns(pre.rew, pre.mask, cfg.gamma)
        values: dict[str, Tensor] = {}
        if "learned" in chosen:
            if learned is None:
                learned = ValueBaseline(cfg.value, family.obs_dim, task_features(tasks, cfg.meta_batch_size).shape[-1],
                                        2, args.seed)
            values["learned"] = learned.predict(pre.obs, tasks, pre.mask, 0)  # before it fits on this batch
            learned.fit([(pre.obs, tasks, returns, pre.mask, 0)])
            if r < 0:
                print(f"warm-up {r + args.warmup + 1}/{args.warmup}  value loss {learned.last_loss:.3f}", flush=True)
                continue
        if "mlp-crossfit" in chosen:
            values["mlp-crossfit"] = cross_fitted_mlp(pre.obs, returns, pre.mask, args.folds, **fit)
        if "mlp-independent" in chosen:
            fresh = sampler.sample(policy, theta, tasks, args.independent_episodes, generator)
            values["mlp-independent"] = fit_mlp_values(
                fresh.obs, discounted_returns(fresh.rew, fresh.mask, cfg.gamma), fresh.mask, pre.obs, **fit)
        raw = prepare(pre, cfg.gamma, baseline="none", normalize=False)  # advantages = returns (GAE λ = 1)
        advantages = {  # R_t − b(s_t), raw
            **({"none": raw.adv} if "none" in chosen else {}),
            "linear": cross_fitted_advantages(pre.obs, pre.rew, pre.mask, raw.weight, cfg.gamma, 1.0,
                                              normalize=False)[0],
            **{name: (returns - v_.to(returns.dtype)) * pre.mask for name, v_ in values.items()},
        }
        for name, adv in advantages.items():
            adv = adv.detach()
            for term, x in second_order_terms(policy, theta, raw._replace(adv=adv), v).items():
                samples.setdefault(f"{term} | {name}", []).append(x)
            samples.setdefault(f"mean squared advantage | {name}", []).append(
                (adv.double().square() * pre.mask).sum().div(pre.mask.sum()).reshape(1))
        print(f"meta-batch {r + 1}/{args.reps}  {time.time() - started:.0f} s", flush=True)

    table = {k: float(torch.stack(x).mean()) if k.startswith("mean squared") else float(torch.stack(x).var(0).sum())
             for k, x in samples.items()}
    ratios = {k: val / table[k.split(" | ")[0] + " | linear"] for k, val in table.items()}
    print(f"{'quantity | baseline':>42}  {'total variance':>15}  {'÷ linear':>8}")
    for k, val in table.items():
        print(f"{k:>42}  {val:15.5g}  {ratios[k]:8.3f}")
    print(json.dumps({"family": cfg.family, "preset": "pytorch-maml-rl-point", "tasks": cfg.meta_batch_size,
                      "episodes": cfg.episodes_per_task, "reps": args.reps, "warmup": args.warmup,
                      "baselines": sorted(chosen), "variance": table,
                      "ratio_vs_linear": ratios, "load_avg": os.getloadavg()[0]}))


if __name__ == "__main__":
    main()
