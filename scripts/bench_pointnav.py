"""End-to-end second-order MAML-TRPO on PointNav-v0 with pytorch-maml-rl's 2-D navigation configuration.

Configuration (tristandeleu/pytorch-maml-rl configs/maml/2d-navigation.yaml, notes/anchors-metarl.md §1.2): meta-batch
20 tasks, 20 episodes per task, horizon 100, one inner step α = 0.1, 2×64 tanh Gaussian policy, TRPO max-KL 0.01,
10 CG iterations (damping 1e-5), 15 line-search steps (×0.8), γ = 0.99, GAE λ = 1, linear baseline, normalised
advantages. That port needs about 4.6 s and 1 GB per meta-iteration on this 2-core machine.

    python scripts/bench_pointnav.py                      # timing: median seconds per meta-iteration, peak RSS
    python scripts/bench_pointnav.py --iterations 500 --evaluate   # + returns on 400 held-out tasks

With --evaluate, the meta-policy is evaluated on 400 tasks drawn from a generator training never uses: mean return
of 20 episodes per task before and after one adaptation step (α = 0.1), as pytorch-maml-rl's test.py reports them.
References: that port −39.8 → −12.6; MAML paper −40.4 → −11.7 (after one step).
The last line is one JSON object with `seconds_per_iteration` and `peak_rss_mb` (and the returns with --evaluate).
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import statistics
import time

import torch

import metarl
from metarl.algos.maml import PRESETS, MAMLConfig, adaptation_returns, train
from metarl.config import apply_overrides, build_policy
from metarl.sampler import Sampler
from metarl.training import TrainState

EVAL_SEED_OFFSET = 1_000_003  # a generator stream training never draws from


def peak_rss_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0  # Linux reports KiB


def evaluate(cfg: MAMLConfig, params: dict, tasks: int, episodes: int, seed: int) -> dict[str, float]:
    """Mean return over `tasks` held-out tasks × `episodes` episodes before and after one step of size α, each with
    its standard error over tasks (how much another draw of held-out tasks would move it)."""
    family = metarl.make(cfg.family)
    policy = build_policy(cfg.policy, family, cfg.run.seed)
    generator = torch.Generator().manual_seed(seed + EVAL_SEED_OFFSET)
    held_out = family.sample_tasks(tasks, generator)
    returns = adaptation_returns(cfg, Sampler(family), policy, params, held_out, (cfg.inner_lr,), episodes, generator)
    per_task = returns.to(torch.float64).mean(-1)  # [2, tasks]
    se = per_task.std(-1) / tasks**0.5
    return {"return_pre": float(per_task[0].mean()), "return_post_1": float(per_task[1].mean()),
            "return_pre_se": float(se[0]), "return_post_1_se": float(se[1])}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--iterations", type=int, default=12, help="meta-iterations to run")
    parser.add_argument("--warmup", type=int, default=2, help="iterations excluded from the timing median")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--evaluate", action="store_true", help="evaluate on 400 held-out tasks afterwards")
    parser.add_argument("--curvature-subsample", type=int, default=1,
                        help="TRPO curvature products on every n-th episode (1: exact, as the port)")
    parser.add_argument("--estimator", default="dice", choices=["dice", "emaml", "lvc", "naive"],
                        help="meta-gradient estimator (the port differentiates the naive surrogate)")
    parser.add_argument("--dice-lambda", type=float, default=1.0, help="Loaded-DiCE λ")
    parser.add_argument("--average", default=None, choices=["steps", "episodes"],
                        help="how batch averages weigh steps (default: the preset's)")
    args = parser.parse_args()

    cfg = apply_overrides(MAMLConfig(), {**PRESETS["pytorch-maml-rl-point"], "run.iterations": args.iterations,
                                         "run.seed": args.seed, "curvature_subsample": args.curvature_subsample,
                                         "estimator": args.estimator, "dice_lambda": args.dice_lambda,
                                         **({} if args.average is None else {"average": args.average})})
    times: list[float] = []
    fractions: list[float] = []  # accepted line-search fraction: 0.8^i means i rejected candidates, each an objective
    last = [time.perf_counter()]

    def on_iteration(state: TrainState, metrics: dict[str, float]) -> None:
        now = time.perf_counter()
        times.append(now - last[0])
        last[0] = now
        fractions.append(metrics["outer/step_fraction"])
        if state.iteration % 10 == 0 or state.iteration == args.iterations:
            print(f"iter {state.iteration:4d}  pre {metrics['meta/return_pre']:7.2f}  "
                  f"post {metrics['meta/return_post_1']:7.2f}  {times[-1]:.2f} s/iter", flush=True)

    state = train(cfg, on_iteration=on_iteration)
    timed = times[args.warmup :] or times
    result = {
        "config": "pytorch-maml-rl 2d-navigation",
        "iterations": args.iterations,
        "seconds_per_iteration": statistics.median(timed),
        "peak_rss_mb": peak_rss_mb(),
        "median_step_fraction": statistics.median(fractions[args.warmup :] or fractions),
        "torch_threads": torch.get_num_threads(),
        "curvature_subsample": args.curvature_subsample,
        "estimator": args.estimator,
        "dice_lambda": args.dice_lambda,
        "average": cfg.average,
        "load_average": os.getloadavg()[0],
    }
    if args.evaluate:
        result |= {"eval_tasks": 400, **evaluate(cfg, state.params, tasks=400, episodes=20, seed=args.seed),
                   "reference_port": [-39.8, -12.6], "reference_paper": [-40.4, -11.7]}
    print(json.dumps(result))


if __name__ == "__main__":
    main()
