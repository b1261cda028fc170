"""Variance of the meta-gradient of every estimator at a fixed θ, on the same batches (one run).

For each of R independent meta-batches (T tasks × E episodes before and after one inner step), the meta-gradient of
each estimator is computed from the *same* episodes: the adaptation's value is the same for all of them at θ_old
(DiCE's magic boxes are 1, LVC's ratios are 1), so only the derivative differs. Reported per estimator: the total
variance (the trace of the covariance of the R estimates, per meta-batch), its ratio to LVC's and DiCE's, and how
far its mean lies from DiCE's mean in units of the standard error (DiCE is unbiased for formulation I: a large
distance means bias, as LVC's cross-time terms and the naive surrogate's score products).

    python scripts/bench_estimators.py                                # PointNav-v0 at the pytorch-maml-rl preset
    python scripts/bench_estimators.py --family HalfCheetahVel-v0 --tasks 10 --reps 20
    python scripts/bench_estimators.py --pretrain 50                   # θ after 50 MAML iterations, not θ_0

First, the analytic toy MDP (metarl.envs.toy_mdp, notes/metagrad.md §3), where the truth is known in closed form: per
estimator, the inner-step Jacobian dθ′/dθ of one batch of `--toy-episodes` episodes, with raw returns (E[dθ′/dθ] =
I + α∇²V/H exactly for the unbiased estimators): its total variance, its mean squared error against the closed form
(variance + squared bias) and the distance of its mean from the closed form in standard errors, over `--toy-batches`
independent batches (as the PointNav table's distance to DiCE).

`--value-warmup N` (default 20) adds `dice+value` and `lvc+value`: the same estimators with training's learned value
baseline (`--baseline value`), fitted on N meta-batches at θ first and then on each measured one after its
prediction, as in training. Their episodes are the same as everyone's (the generator is replayed); the adapted
policies, hence the post-update episodes, differ slightly (another baseline gives another inner step). With
normalised advantages a baseline also rescales the step (E[1/σ]), so across baselines compare `relative_variance`
(total variance ÷ the squared norm of the mean gradient, scale-free); within one baseline the plain ratios.

The last line is one JSON object with `default` (the default estimator), `default_unbiased` (as the exact tests in
tests/test_metagrad.py establish), `variance_ratio_default_vs_lvc`, `variance_ratio_default_vs_dice` and the table.
"""

from __future__ import annotations

import argparse
import json
import math
import os
from dataclasses import fields, replace

import torch

import metarl
from metarl.algos.maml import PRESETS, MAMLConfig, collect, meta_gradient, train, warm_value_baseline
from metarl.config import apply_overrides
from metarl.envs import toy_mdp
from metarl.estimators import prepare
from metarl.policies import params_of
from metarl.sampler import Sampler
from metarl.training import start
from metarl.trpo import flatten

UNBIASED = {"dice": True, "dice_cv": True, "emaml": True, "lvc": False, "naive": False}
"""Formulation I/II unbiasedness as tests/test_metagrad.py establishes it (dice and dice_cv at λ = 1; emaml for
formulation II)."""


def estimators(args: argparse.Namespace) -> dict[str, dict[str, object]]:
    out: dict[str, dict[str, object]] = {"naive": {"estimator": "naive"}, "lvc": {"estimator": "lvc"},
                                         "dice": {"estimator": "dice"},
                                         "dice_cv": {"estimator": "dice_cv"}}
    for lam in args.dice_lambdas:
        out[f"dice-λ{lam:g}"] = {"estimator": "dice", "dice_lambda": lam}
    return out


TOY_ALPHA = 0.1


def toy_table(variants: dict[str, dict[str, object]], batches: int, episodes: int, seed: int) -> dict[str, dict]:
    """Per estimator on the toy MDP: total variance of one batch's inner-step Jacobian, MSE against I + α∇²V/H, bias
    in SE. Every estimator differentiates the same `batches` × `episodes` episodes (one task row per batch) at
    θ = (μ0, μ1, log σ) = (0.3, −0.2, log 0.7), α = 0.1, raw returns (γ = 1, no baseline, no normalisation)."""
    toy_mdp.register_toy()
    family = metarl.make(toy_mdp.TOY_ID)
    policy = toy_mdp.OpenLoopGaussian((0.3, -0.2), math.log(0.7))
    params = params_of(policy)
    generator = torch.Generator().manual_seed(seed)
    batch = Sampler(family).sample(policy, params, family.sample_tasks(batches, generator), episodes, generator)
    data = prepare(batch, gamma=1.0, baseline="none", normalize=False)
    theta = flatten(params)
    exact = torch.eye(3, dtype=torch.float64) + TOY_ALPHA * toy_mdp.hess_value(theta, 0.0) / 2  # H = 2; ∇²V ∌ goal
    table = {}
    for name, variant in variants.items():
        jac = toy_mdp.inner_step_jacobians(policy, params, data, TOY_ALPHA, str(variant["estimator"]),
                                           float(variant.get("dice_lambda", 1.0))).flatten(1)
        err = jac - exact.flatten()
        variance = float(jac.var(0).sum())
        table[name] = {"total_variance": variance, "mse": float(err.square().mean(0).sum()),
                       "distance_to_exact_se": float(err.mean(0).norm()) / math.sqrt(variance / batches)}
    return table


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--family", default="PointNav-v0")
    parser.add_argument("--preset", default=None, help="default: pytorch-maml-rl-point (PointNav), else maml2017-*")
    parser.add_argument("--tasks", type=int, default=None, help="tasks per meta-batch (default: the preset's)")
    parser.add_argument("--reps", type=int, default=40, help="independent meta-batches")
    parser.add_argument("--pretrain", type=int, default=0, help="MAML iterations before θ is fixed")
    parser.add_argument("--dice-lambdas", type=float, nargs="*", default=[0.9, 0.5])
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--toy-batches", type=int, default=4000, help="toy MDP: independent batches")
    parser.add_argument("--toy-episodes", type=int, default=20, help="toy MDP: episodes per batch (inner step)")
    parser.add_argument("--value-warmup", type=int, default=20,
                        help="meta-batches the learned value baseline fits on before measuring (0: leave it out)")
    args = parser.parse_args()

    variants = estimators(args)
    toy = toy_table(variants, args.toy_batches, args.toy_episodes, args.seed)
    print(f"toy MDP, inner-step Jacobian, {args.toy_episodes} episodes per batch, {args.toy_batches} batches")
    print(f"{'estimator':>10}  {'total variance':>15}  {'MSE vs closed form':>19}  {'|mean − exact| / SE':>20}")
    for name, row in toy.items():
        print(f"{name:>10}  {row['total_variance']:15.4g}  {row['mse']:19.4g}  {row['distance_to_exact_se']:20.1f}")

    paper = [n for n, p in PRESETS.items() if n.startswith("maml2017") and p["family"] == args.family]
    preset = args.preset or ("pytorch-maml-rl-point" if args.family == "PointNav-v0" else paper[0])
    cfg = apply_overrides(MAMLConfig(), {**PRESETS[preset], "run.seed": args.seed, "run.iterations": args.pretrain,
                                         **({} if args.tasks is None else {"meta_batch_size": args.tasks})})
    state = train(cfg)  # θ after `pretrain` iterations (θ_0 for 0), from the default estimator
    session = start(cfg, state)
    sampler, params = Sampler(session.family), state.params
    with_value = {f"{e}+value": {"estimator": e} for e in ("dice", "lvc")} if args.value_warmup > 0 else {}
    value_cfg = replace(cfg, baseline="value")
    value_gen = torch.Generator().manual_seed(args.seed + 1)  # the warm-up's own episodes
    value = warm_value_baseline(sampler, session.policy, params, value_cfg, args.value_warmup, value_gen)
    grads: dict[str, list[torch.Tensor]] = {name: [] for name in (*variants, *with_value)}
    for r in range(args.reps):
        tasks = session.family.sample_tasks(cfg.meta_batch_size, session.generator)
        replay = session.generator.get_state()
        rollouts = collect(sampler, session.policy, params, tasks, cfg, session.generator)
        for name, overrides in variants.items():
            grads[name].append(flatten(meta_gradient(session.policy, params, rollouts, replace(cfg, **overrides))))
        if with_value:
            after = session.generator.get_state()
            session.generator.set_state(replay)  # the same episodes, advantages from the learned baseline
            rollouts = collect(sampler, session.policy, params, tasks, value_cfg, session.generator, value)
            session.generator.set_state(after)
            for name, overrides in with_value.items():
                grads[name].append(flatten(meta_gradient(session.policy, params, rollouts,
                                                         replace(value_cfg, **overrides))))
        print(f"meta-batch {r + 1}/{args.reps}", flush=True)
    table = summarise({k: torch.stack(v).double() for k, v in grads.items()})
    default = next(f for f in fields(MAMLConfig) if f.name == "estimator").default
    print(f"{'estimator':>10}  {'total variance':>15}  {'÷ lvc':>7}  {'÷ dice':>7}  {'|mean − dice mean| / SE':>24}  "
          f"{'relative variance':>17}")
    for name, row in table.items():
        print(f"{name:>10}  {row['total_variance']:15.4g}  {row['ratio_vs_lvc']:7.3f}  {row['ratio_vs_dice']:7.3f}  "
              f"{row['distance_to_dice_se']:24.2f}  {row['relative_variance']:17.4g}")
    print(json.dumps({"family": args.family, "preset": preset, "tasks": cfg.meta_batch_size,
                      "episodes": cfg.episodes_per_task, "reps": args.reps, "pretrain": args.pretrain,
                      "default": default, "default_unbiased": UNBIASED[str(default)],
                      "variance_ratio_default_vs_lvc": table[str(default)]["ratio_vs_lvc"],
                      "variance_ratio_default_vs_dice": table[str(default)]["ratio_vs_dice"],
                      "value_warmup": args.value_warmup, "estimators": table,
                      "toy": {"episodes": args.toy_episodes, "batches": args.toy_batches, "estimators": toy},
                      "load_avg": os.getloadavg()[0]}))


def summarise(grads: dict[str, torch.Tensor]) -> dict[str, dict[str, float]]:
    """grads[name]: [R, P] -> total variance, ratios to lvc and dice, distance of the mean to dice's mean, and the
    relative variance (total variance ÷ ‖mean‖²: noise per unit of signal, independent of the gradient's scale)."""
    var = {k: float(g.var(0).sum()) for k, g in grads.items()}
    dice = grads["dice"]
    out = {}
    for name, g in grads.items():
        diff = g.mean(0) - dice.mean(0)
        se = math.sqrt(float((g - dice).var(0).sum()) / g.shape[0]) if name != "dice" else 1.0
        out[name] = {"total_variance": var[name], "ratio_vs_lvc": var[name] / var["lvc"],
                     "ratio_vs_dice": var[name] / var["dice"],
                     "distance_to_dice_se": float(diff.norm()) / se if name != "dice" else 0.0,
                     "relative_variance": var[name] / float(g.mean(0).square().sum())}
    return out


if __name__ == "__main__":
    main()
