"""End-to-end second-order MAML-TRPO on PointNav-v0 with pytorch-maml-rl's 2-D navigation configuration.

Configuration (tristandeleu/pytorch-maml-rl configs/maml/2d-navigation.yaml, notes/anchors-metarl.md §1.2): meta-batch
20 tasks, 20 episodes per task, horizon 100, one inner step α = 0.1, 2×64 tanh Gaussian policy, TRPO max-KL 0.01,
10 CG iterations (damping 1e-5), 15 line-search steps (×0.8), γ = 0.99, GAE λ = 1, linear baseline, normalised
advantages (metarl's preset `pytorch-maml-rl-point`, curvature on every 5th episode as it ships).

    python scripts/bench_pointnav.py                      # timing: median seconds per meta-iteration, peak RSS
    python scripts/bench_pointnav.py --peer /path/to/pytorch-maml-rl --peer-python /path/to/venv/bin/python
    python scripts/bench_pointnav.py --iterations 500 --evaluate   # + returns on 400 held-out tasks

With --peer, the port's own `train.py` runs on its own 2-D navigation config in the same run, interleaved with ours
(rounds of: the port for 1 and for 1 + k batches, so that its per-iteration time (T₁₊ₖ − T₁)/k excludes its start-up;
then ours as the preset ships; then ours with exact curvature), and `ratio_vs_peer` / `ratio_vs_peer_exact` are its
seconds per iteration over ours. The port needs its own environment (gym 0.17.3, numpy < 2, torch.lstsq replaced;
anchors-metarl.md §1.2).

With --evaluate, the meta-policy is evaluated on 400 tasks drawn from a generator training never uses: mean return
of 20 episodes per task before and after one adaptation step (α = 0.1), as pytorch-maml-rl's test.py reports them.
References: that port −39.8 → −12.6; MAML paper −40.4 → −11.7 (after one step).
The last line is one JSON object with `seconds_per_iteration` and `peak_rss_mb` (and the returns with --evaluate,
the ratios with --peer).
"""

from __future__ import annotations

import argparse
import json
import os
import re
import resource
import statistics
import subprocess
import sys
import tempfile
import time
from dataclasses import replace
from pathlib import Path

import torch

import metarl
from metarl.algos.maml import PRESETS, MAMLConfig, adaptation_returns, train
from metarl.config import apply_overrides, build_policy
from metarl.estimators import ESTIMATORS
from metarl.sampler import Sampler
from metarl.training import TrainState

EVAL_SEED_OFFSET = 1_000_003  # a generator stream training never draws from


def peak_rss_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0  # Linux reports KiB


def evaluate(cfg: MAMLConfig, params: dict, tasks: int, episodes: int, seed: int,
             extra: dict | None = None) -> dict[str, float]:
    """Mean return over `tasks` held-out tasks × `episodes` episodes before and after one step of size α, each with
    its standard error over tasks (how much another draw of held-out tasks would move it); `extra`: the run state's
    (the learned value baseline of --baseline value)."""
    family = metarl.make(cfg.family)
    policy = build_policy(cfg.policy, family, cfg.run.seed)
    generator = torch.Generator().manual_seed(seed + EVAL_SEED_OFFSET)
    held_out = family.sample_tasks(tasks, generator)
    returns = adaptation_returns(cfg, Sampler(family), policy, params, held_out, (cfg.inner_lr,), episodes, generator,
                                 extra)
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
    parser.add_argument("--curvature-subsample", type=int, default=None,
                        help="TRPO curvature products on every n-th episode (default: the preset's; 1: exact)")
    parser.add_argument("--peer", type=Path, default=None, help="a pytorch-maml-rl checkout to time in the same run")
    parser.add_argument("--peer-python", default=sys.executable, help="the Python of the port's environment")
    parser.add_argument("--peer-workers", type=int, default=2, help="the port's sampler worker processes")
    parser.add_argument("--rounds", type=int, default=2, help="interleaved rounds with --peer")
    parser.add_argument("--estimator", default=MAMLConfig.estimator, choices=list(ESTIMATORS),
                        help="meta-gradient estimator (default: the shipped one; the port differentiates `naive`)")
    parser.add_argument("--dice-lambda", type=float, default=1.0, help="Loaded-DiCE λ")
    parser.add_argument("--average", default=None, choices=["steps", "episodes"],
                        help="how batch averages weigh steps (default: the preset's)")
    parser.add_argument("--baseline", default=None, choices=["linear", "none", "value"],
                        help="state baseline (default: the preset's; value: the learned one)")
    args = parser.parse_args()

    overrides = {"run.seed": args.seed, "estimator": args.estimator, "dice_lambda": args.dice_lambda,
                 **({} if args.average is None else {"average": args.average}),
                 **({} if args.baseline is None else {"baseline": args.baseline}),
                 **({} if args.curvature_subsample is None else {"curvature_subsample": args.curvature_subsample})}
    cfg = apply_overrides(MAMLConfig(), {**PRESETS["pytorch-maml-rl-point"], **overrides})
    if args.peer is not None:
        print(json.dumps(compare_with_peer(args, cfg)))
        return
    timed, fractions, state = timed_run(cfg, args.iterations, verbose=True)
    result = {
        "config": "pytorch-maml-rl 2d-navigation",
        "iterations": args.iterations,
        "seconds_per_iteration": statistics.median(timed[args.warmup :] or timed),
        "peak_rss_mb": peak_rss_mb(),
        "median_step_fraction": statistics.median(fractions[args.warmup :] or fractions),
        "curvature_subsample": cfg.curvature_subsample,
        "kl_rescale": cfg.trpo.kl_rescale,
        "estimator": args.estimator,
        "dice_lambda": args.dice_lambda,
        "average": cfg.average,
        "baseline": cfg.baseline,
        "load_average": os.getloadavg()[0],
    }
    if args.evaluate:
        result |= {"eval_tasks": 400, **evaluate(cfg, state.params, tasks=400, episodes=20, seed=args.seed,
                                                     extra=state.extra),
                   "reference_port": [-39.8, -12.6], "reference_paper": [-40.4, -11.7]}
    print(json.dumps(result))


def timed_run(cfg: MAMLConfig, iterations: int, verbose: bool = False) -> tuple[list[float], list[float], TrainState]:
    """Train `iterations` meta-iterations; (seconds of each, accepted line-search fraction of each, final state)."""
    times: list[float] = []
    fractions: list[float] = []  # accepted line-search fraction: 0.8^i means i rejected candidates, each an objective
    last = [time.perf_counter()]

    def on_iteration(state: TrainState, metrics: dict[str, float]) -> None:
        now = time.perf_counter()
        times.append(now - last[0])
        last[0] = now
        fractions.append(metrics["outer/step_fraction"])
        if verbose and (state.iteration % 10 == 0 or state.iteration == iterations):
            print(f"iter {state.iteration:4d}  pre {metrics['meta/return_pre']:7.2f}  "
                  f"post {metrics['meta/return_post_1']:7.2f}  {times[-1]:.2f} s/iter", flush=True)

    state = train(replace(cfg, run=replace(cfg.run, iterations=iterations)), on_iteration=on_iteration)
    return times, fractions, state


def peer_seconds(args: argparse.Namespace, batches: int, workdir: Path) -> float:
    """Wall time of the port's `train.py` for `batches` meta-iterations of its own 2-D navigation config."""
    config = (args.peer / "configs/maml/2d-navigation.yaml").read_text()
    if not re.search(r"^num-batches: \d+$", config, flags=re.M):
        raise SystemExit(f"{args.peer} does not look like pytorch-maml-rl (no num-batches in its 2-D config)")
    path = workdir / f"2d-navigation-{batches}.yaml"
    path.write_text(re.sub(r"^num-batches: \d+$", f"num-batches: {batches}", config, flags=re.M))
    command = [args.peer_python, "train.py", "--config", str(path), "--output-folder", str(workdir / "out"),
               "--seed", str(args.seed), "--num-workers", str(args.peer_workers)]
    clock = time.perf_counter()
    subprocess.run(command, cwd=args.peer, check=True, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    return time.perf_counter() - clock


def compare_with_peer(args: argparse.Namespace, cfg: MAMLConfig) -> dict[str, object]:
    """Interleaved rounds: the port (1 and 1 + k batches), ours as shipped, ours with exact curvature."""
    k = max(args.iterations, 2)
    peer, ours, exact = [], [], []
    exact_cfg = replace(cfg, curvature_subsample=1)
    with tempfile.TemporaryDirectory() as tmp:
        for r in range(args.rounds):
            short, long = peer_seconds(args, 1, Path(tmp)), peer_seconds(args, 1 + k, Path(tmp))
            peer.append((long - short) / k)
            ours.append(statistics.median(timed_run(cfg, k + args.warmup)[0][args.warmup :]))
            exact.append(statistics.median(timed_run(exact_cfg, k + args.warmup)[0][args.warmup :]))
            print(f"round {r}: port {peer[-1]:.2f} s/iter, metarl {ours[-1]:.3f} (curvature subsample "
                  f"{cfg.curvature_subsample}), {exact[-1]:.3f} (exact)  load {os.getloadavg()[0]:.2f}", flush=True)
    seconds = {"peer": statistics.median(peer), "ours": statistics.median(ours), "exact": statistics.median(exact)}
    return {"config": "pytorch-maml-rl 2d-navigation", "rounds": args.rounds, "iterations_per_round": k,
            "peer_seconds_per_iteration": seconds["peer"], "seconds_per_iteration": seconds["ours"],
            "seconds_per_iteration_exact": seconds["exact"], "ratio_vs_peer": seconds["peer"] / seconds["ours"],
            "ratio_vs_peer_exact": seconds["peer"] / seconds["exact"], "curvature_subsample": cfg.curvature_subsample,
            "peer_workers": args.peer_workers, "estimator": cfg.estimator, "load_average": os.getloadavg()[0]}


if __name__ == "__main__":
    main()
