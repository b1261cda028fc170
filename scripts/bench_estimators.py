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

from metarl.algos.maml import PRESETS, MAMLConfig, collect, meta_gradient, train
from metarl.config import apply_overrides
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


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--family", default="PointNav-v0")
    parser.add_argument("--preset", default=None, help="default: pytorch-maml-rl-point (PointNav), else maml2017-*")
    parser.add_argument("--tasks", type=int, default=None, help="tasks per meta-batch (default: the preset's)")
    parser.add_argument("--reps", type=int, default=40, help="independent meta-batches")
    parser.add_argument("--pretrain", type=int, default=0, help="MAML iterations before θ is fixed")
    parser.add_argument("--dice-lambdas", type=float, nargs="*", default=[0.9, 0.5])
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()

    paper = [n for n, p in PRESETS.items() if n.startswith("maml2017") and p["family"] == args.family]
    preset = args.preset or ("pytorch-maml-rl-point" if args.family == "PointNav-v0" else paper[0])
    cfg = apply_overrides(MAMLConfig(), {**PRESETS[preset], "run.seed": args.seed, "run.iterations": args.pretrain,
                                         **({} if args.tasks is None else {"meta_batch_size": args.tasks})})
    state = train(cfg)  # θ after `pretrain` iterations (θ_0 for 0), from the default estimator
    session = start(cfg, state)
    sampler, params = Sampler(session.family), state.params
    variants = estimators(args)
    grads: dict[str, list[torch.Tensor]] = {name: [] for name in variants}
    for r in range(args.reps):
        rollouts = collect(sampler, session.policy, params, session.family.sample_tasks(cfg.meta_batch_size,
                                                                                         session.generator),
                           cfg, session.generator)
        for name, overrides in variants.items():
            grads[name].append(flatten(meta_gradient(session.policy, params, rollouts, replace(cfg, **overrides))))
        print(f"meta-batch {r + 1}/{args.reps}", flush=True)
    table = summarise({k: torch.stack(v).double() for k, v in grads.items()})
    default = next(f for f in fields(MAMLConfig) if f.name == "estimator").default
    print(f"{'estimator':>10}  {'total variance':>15}  {'÷ lvc':>7}  {'÷ dice':>7}  {'|mean − dice mean| / SE':>24}")
    for name, row in table.items():
        print(f"{name:>10}  {row['total_variance']:15.4g}  {row['ratio_vs_lvc']:7.3f}  {row['ratio_vs_dice']:7.3f}  "
              f"{row['distance_to_dice_se']:24.2f}")
    print(json.dumps({"family": args.family, "preset": preset, "tasks": cfg.meta_batch_size,
                      "episodes": cfg.episodes_per_task, "reps": args.reps, "pretrain": args.pretrain,
                      "default": default, "default_unbiased": UNBIASED[str(default)],
                      "variance_ratio_default_vs_lvc": table[str(default)]["ratio_vs_lvc"],
                      "variance_ratio_default_vs_dice": table[str(default)]["ratio_vs_dice"],
                      "estimators": table, "load_avg": os.getloadavg()[0]}))


def summarise(grads: dict[str, torch.Tensor]) -> dict[str, dict[str, float]]:
    """grads[name]: [R, P] -> total variance, ratios to lvc and dice, distance of the mean to dice's mean."""
    var = {k: float(g.var(0).sum()) for k, g in grads.items()}
    dice = grads["dice"]
    out = {}
    for name, g in grads.items():
        diff = g.mean(0) - dice.mean(0)
        se = math.sqrt(float((g - dice).var(0).sum()) / g.shape[0]) if name != "dice" else 1.0
        out[name] = {"total_variance": var[name], "ratio_vs_lvc": var[name] / var["lvc"],
                     "ratio_vs_dice": var[name] / var["dice"],
                     "distance_to_dice_se": float(diff.norm()) / se if name != "dice" else 0.0}
    return out


if __name__ == "__main__":
    main()
