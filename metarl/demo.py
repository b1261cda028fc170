"""`metarl demo` (`make demo`): the README's main job, a newcomer's first few minutes.

1. Meta-train MAML briefly on a small default (`metarl train maml --preset fast`: PointNav-v0, 20 tasks × 10
   episodes per iteration, 64×64 tanh policy, 40 iterations).
2. Evaluate it as `metarl eval` does: 40 held-out test tasks, returns after 0..3 policy-gradient steps (α, α/2, α/2).
3. Evaluate the random-initialisation baseline on the same tasks with the same adaptation (`metarl baseline
   random --preset fast`): what meta-learning buys.

It prints a table, pre- versus post-adaptation per step for both, and the paths of the adaptation-curve PNGs.
"""

from __future__ import annotations

import dataclasses
import time
from dataclasses import dataclass
from pathlib import Path

from rich.console import Console
from rich.table import Table

from metarl.console import counted, print_table
from metarl.evaluate import EvalArgs, EvalOutcome, StepStats


@dataclass(frozen=True)
class DemoArgs:
    """The README's main job: meta-train MAML briefly on PointNav-v0 (`--preset fast`), then evaluate few-shot
    adaptation on 40 held-out test tasks next to a randomly initialised policy adapted the same way."""

    iterations: int = 40
    """meta-iterations (40 take a few minutes on 2 cores)"""
    seed: int = 0
    """random seed (training; the test tasks come from their own stream of it)"""
    runs_dir: str = "runs"
    """parent directory of the run directories"""
    steps: int = 3
    """adaptation steps evaluated"""
    tasks: int = 40
    """test tasks"""


def demo(args: DemoArgs, console: Console) -> Path:
    """Train, evaluate, compare; returns the path of the comparison PNG."""
    from metarl import driver
    from metarl.algos import ALGORITHMS
    from metarl.config import apply_overrides
    from metarl.evaluate import evaluate_run
    from metarl.logger import read_metrics
    from metarl.plots import PlotArgs, plot_runs

    algo = ALGORITHMS["maml"]
    cfg = apply_overrides(algo.config_type(), {**algo.presets["fast"], "run.iterations": args.iterations,
                                               "run.seed": args.seed, "run.runs_dir": args.runs_dir})
    eval_args = EvalArgs(Path(args.runs_dir), tasks=args.tasks, steps=args.steps)  # checks the options up front
    console.print(f"[bold]1/3[/] meta-training MAML on {cfg.family}: {cfg.run.iterations} iterations of "
                  f"{cfg.meta_batch_size} tasks × {cfg.episodes_per_task} episodes (`metarl train maml --preset fast`)")
    clock = time.perf_counter()
    run_dir = driver.run("maml", cfg)
    records = read_metrics(run_dir)
    if records:
        first, last = records[0], records[-1]
        console.print(f"    training tasks, return after one step: {first['meta/return_post_1']:.1f} → "
                      f"{last['meta/return_post_1']:.1f}  (before adapting: {first['meta/return_pre']:.1f} → "
                      f"{last['meta/return_pre']:.1f}), {time.perf_counter() - clock:.0f} s")
    console.print(f"[bold]2/3[/] evaluating on {args.tasks} held-out test tasks (`metarl eval {run_dir}`)",
                  soft_wrap=True)
    maml = evaluate_run(dataclasses.replace(eval_args, run_dir=run_dir))
    console.print("[bold]3/3[/] the same adaptation from a random initialisation (`metarl baseline random "
                  "--preset fast`)")
    baseline_cfg = dataclasses.replace(cfg, run=dataclasses.replace(cfg.run, iterations=0))
    random_dir = driver.run("baseline-random", baseline_cfg, quiet=True)
    random = evaluate_run(dataclasses.replace(eval_args, run_dir=random_dir))
    print_table(comparison_table({"MAML": maml, "random init": random}), console)
    compare = plot_runs(PlotArgs((run_dir, random_dir), out=run_dir / "compare.png"))
    console.print(f"results: {maml.paths['json']}", soft_wrap=True)
    console.print(f"adaptation curve: {maml.paths['png']}", soft_wrap=True)
    console.print(f"MAML vs random init (adaptation and training curves): {compare}", soft_wrap=True)
    return compare


def comparison_table(outcomes: dict[str, EvalOutcome]) -> Table:
    """Return after each adaptation step (mean ± SE over the test tasks) for several evaluations, with the change
    from step 0."""
    first = next(iter(outcomes.values()))
    p = first.record["protocol"]
    table = Table(title=f"average return on {counted(p['tasks'], 'test task')}, {counted(p['episodes'], 'episode')} "
                        "per step")
    table.add_column("step", justify="right")
    table.add_column("step size", justify="right")
    for label in outcomes:
        table.add_column(f"{label} (mean ± SE)", justify="right")
    stats = {label: o.result.stats for label, o in outcomes.items()}
    for j, s in enumerate(first.result.stats):
        cells = [_cell(stats[label][j], stats[label][0]) for label in outcomes]
        table.add_row("0 (pre)" if j == 0 else str(j), "" if s.step_size is None else f"{s.step_size:g}", *cells)
    return table


def _cell(s: StepStats, pre: StepStats) -> str:
    change = "" if s.step == 0 else f"  ({s.mean - pre.mean:+.1f})"
    return f"{s.mean:.1f} ± {s.se:.1f}{change}"
