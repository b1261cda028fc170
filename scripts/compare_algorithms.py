"""Every meta-learner under the same sample budget: post-adaptation return on held-out tasks against environment steps.

Trains MAML (the default estimator and `lvc`), FOMAML, Reptile and ES-MAML on one family until each has taken
`--budget` environment steps, and every `--budget / --points` steps evaluates the current meta-parameters on the same
held-out tasks (their own seed stream, as `metarl eval`) with the algorithm's own adaptation operator: the mean return
after `--steps` adaptation steps (MAML's schedule α, α/2, ...; Reptile's and ES-MAML's their own). Writes
docs/results/algorithms-<family>.json and .png (one curve per algorithm).

    python scripts/compare_algorithms.py PointNav-v0 --budget 20000000
    python scripts/compare_algorithms.py PointNav-v0 --budget 200000 --points 2 --tasks 4   # a smoke run

Configurations: MAML and FOMAML at the family's preset (PointNav: pytorch-maml-rl's; MuJoCo families: the MAML
paper's), Reptile and ES-MAML at their defaults on the same family and policy size where they have one.
"""

from __future__ import annotations

import argparse
import json
import time
from dataclasses import replace
from pathlib import Path
from typing import Any

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt
import torch

from metarl import registry
from metarl.algos import ALGORITHMS, maml
from metarl.config import apply_overrides, build_policy
from metarl.evaluate import stream_generator
from metarl.sampler import Sampler
from metarl.training import TrainState

ROOT = Path(__file__).resolve().parent.parent


class BudgetReached(Exception):
    """Raised from the iteration hook once the environment-step budget is spent."""


def maml_preset(family: str) -> dict[str, Any]:
    if family == "PointNav-v0":
        return maml.PRESETS["pytorch-maml-rl-point"]
    for name, preset in maml.PRESETS.items():
        if name.startswith("maml2017") and preset["family"] == family:
            return preset
    return {"family": family}


def contenders(family: str, seed: int) -> dict[str, tuple[str, Any]]:
    """name -> (algorithm, config)."""
    base = {**maml_preset(family), "family": family, "run.seed": seed}
    policy = {k: v for k, v in base.items() if k.startswith("policy.")}
    # every contender on the same physics: the MAML paper presets step the MuJoCo families as rllab did
    env = {"family": family, "run.seed": seed, "run.family_kwargs": dict(base.get("run.family_kwargs", {}))}
    return {
        "MAML (lvc, default)": ("maml", apply_overrides(maml.MAMLConfig(), {**base, "estimator": "lvc"})),
        "MAML (dice, unbiased)": ("maml", apply_overrides(maml.MAMLConfig(), {**base, "estimator": "dice"})),
        "FOMAML": ("fomaml", apply_overrides(maml.MAMLConfig(), {**base, **maml.FOMAML})),
        "Reptile": ("reptile", apply_overrides(ALGORITHMS["reptile"].config_type(), {**env, **policy})),
        "ES-MAML": ("es-maml", apply_overrides(ALGORITHMS["es-maml"].config_type(), env)),
    }


def curve(algo_name: str, cfg: Any, budget: int, points: int, tasks: int, steps: int, seed: int) -> dict[str, list]:
    """Train until `budget` env steps; (env steps, post-adaptation return) at `points` evenly spaced moments."""
    algo = ALGORITHMS[algo_name]
    family = registry.make(cfg.family, **cfg.run.family_kwargs)
    policy = build_policy(cfg.policy, family, cfg.run.seed)
    sampler = Sampler(family)
    held_out = family.sample_tasks(tasks, stream_generator(seed, "test"))
    step_sizes = tuple(algo.eval_step_sizes(cfg, steps))
    episodes = getattr(cfg, "episodes_per_task", None) or getattr(cfg, "episodes_per_query", 1)
    marks = [budget * (i + 1) // points for i in range(points)]
    out: dict[str, list] = {"env_steps": [], "return_post": [], "return_pre": [], "iteration": []}
    clock = time.perf_counter()

    def evaluate(state: TrainState) -> None:
        returns = algo.adaptation_returns(cfg, sampler, policy, state.params, held_out, step_sizes, episodes,
                                          stream_generator(seed, "compare"), state.extra)
        per_step = returns.to(torch.float64).mean((1, 2))
        out["env_steps"].append(state.env_steps)
        out["return_pre"].append(float(per_step[0]))
        out["return_post"].append(float(per_step[-1]))
        out["iteration"].append(state.iteration)
        print(f"  {algo_name}: {state.env_steps:,} steps, return {per_step[0]:.1f} -> {per_step[-1]:.1f} "
              f"({time.perf_counter() - clock:.0f} s)", flush=True)

    def on_iteration(state: TrainState, metrics: dict[str, float]) -> None:
        while marks and state.env_steps >= marks[0]:
            marks.pop(0)
            evaluate(state)
        if not marks:
            raise BudgetReached

    cfg = replace(cfg, run=replace(cfg.run, iterations=10**9))
    try:
        algo.train(cfg, None, on_iteration)
    except BudgetReached:
        pass
    out["wall_s"] = [time.perf_counter() - clock]
    return out


def plot(result: dict[str, Any], path: Path) -> None:
    fig, ax = plt.subplots(figsize=(7, 4.5), constrained_layout=True)
    for name, c in result["curves"].items():
        ax.plot(c["env_steps"], c["return_post"], marker="o", ms=3, label=name)
    ax.set(xlabel="environment steps", ylabel=f"return after {result['steps']} adaptation step(s), held-out tasks",
           title=f"{result['family']}: the meta-learners under one sample budget")
    ax.legend(fontsize=8)
    fig.savefig(path, dpi=110)
    plt.close(fig)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("family")
    parser.add_argument("--budget", type=int, default=20_000_000, help="environment steps per algorithm")
    parser.add_argument("--points", type=int, default=10, help="evaluations along the way")
    parser.add_argument("--tasks", type=int, default=40, help="held-out tasks per evaluation")
    parser.add_argument("--steps", type=int, default=1, help="adaptation steps before the return is read")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--only", default=None, help="comma-separated subset of the contenders")
    parser.add_argument("--out", type=Path, default=ROOT / "docs/results")
    args = parser.parse_args()
    runs = contenders(args.family, args.seed)
    if args.only:
        unknown = set(args.only.split(",")) - set(runs)
        if unknown:  # a typo would otherwise leave nothing to run (or silently drop a contender)
            parser.error(f"--only: unknown contender(s) {sorted(unknown)}; choose from {list(runs)}")
        runs = {k: v for k, v in runs.items() if k in args.only.split(",")}
    family_kwargs = next(iter(runs.values()))[1].run.family_kwargs  # the same for every contender
    result: dict[str, Any] = {"family": args.family, "family_kwargs": family_kwargs, "budget": args.budget,
                              "steps": args.steps, "tasks": args.tasks, "seed": args.seed, "curves": {}}
    for name, (algo_name, cfg) in runs.items():
        print(name, flush=True)
        result["curves"][name] = curve(algo_name, cfg, args.budget, args.points, args.tasks, args.steps, args.seed)
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / f"algorithms-{args.family}.json").write_text(json.dumps(result, indent=1) + "\n")
    plot(result, args.out / f"algorithms-{args.family}.png")
    print(f"wrote {args.out / f'algorithms-{args.family}.json'} and .png")


if __name__ == "__main__":
    main()
