"""Command line: `metarl <command> [flags]` (also `python -m metarl`).

Commands:
    families   list the registered task families
    sample     roll out a random policy on a family and report env-steps/s
    demo       the README's main job on a small default

Each command's flags come from a frozen dataclass through tyro: field docstrings are the `--help` text.
"""

from __future__ import annotations

import sys
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import torch
import tyro
from rich.console import Console
from rich.table import Table

from metarl import registry

console = Console()


class UserError(Exception):
    """Bad input: printed as one line, exit status 2."""


# ----------------------------------------------------------------------------------------------- families
@dataclass(frozen=True)
class FamiliesArgs:
    """List the registered task families."""

    import_modules: tuple[str, ...] = ()
    """modules to import first (they may register their own families), e.g. my_pkg.families"""


def families_table() -> Table:
    """The registry as a table: id, task parameter and distribution, horizon, obs/act dims, reference."""
    table = Table(title="metarl task families")
    for column in ("id", "task parameter", "H", "obs", "act", "reference"):
        table.add_column(column, overflow="fold")
    for spec in registry.registered():
        family = registry.make(spec.id)
        table.add_row(spec.id, spec.tasks, str(spec.horizon), str(family.obs_dim), str(family.act_dim), spec.reference)
    return table


def run_families(args: FamiliesArgs) -> None:
    _import_modules(args.import_modules)
    console.print(families_table())


def _import_modules(modules: Sequence[str]) -> None:
    import importlib

    for name in modules:
        try:
            importlib.import_module(name)
        except ImportError as err:
            raise UserError(f"cannot import {name!r}: {err}") from None


# ----------------------------------------------------------------------------------------------- sample
@dataclass(frozen=True)
class SampleArgs:
    """Roll out a randomly initialised Gaussian MLP policy on one family and report throughput."""

    family: str = "HalfCheetahVel-v0"
    """task family id (`metarl families`)"""
    tasks: int = 10
    """tasks T in the batch"""
    episodes: int = 10
    """episodes E per task"""
    seed: int = 0
    """random seed"""
    repeats: int = 3
    """timed repeats (the median is reported)"""


def run_sample(args: SampleArgs) -> dict[str, float]:
    from metarl.policies import GaussianMLP, params_of
    from metarl.sampler import Sampler

    if args.tasks < 1 or args.episodes < 1 or args.repeats < 1:
        raise UserError("--tasks, --episodes and --repeats must be >= 1")
    family = _make_family(args.family)
    torch.manual_seed(args.seed)  # policy initialisation only; sampling uses the explicit generator below
    policy = GaussianMLP(family.obs_dim, family.act_dim)
    generator = torch.Generator().manual_seed(args.seed)
    sampler = Sampler(family)
    times, steps, ret = [], 0, 0.0
    for _ in range(args.repeats):
        tasks = family.sample_tasks(args.tasks, generator)
        start = time.perf_counter()
        batch = sampler.sample(policy, params_of(policy), tasks, args.episodes, generator)
        times.append(time.perf_counter() - start)
        steps, ret = batch.num_steps, float(batch.returns.mean())
    seconds = sorted(times)[len(times) // 2]
    console.print(f"{args.family}: T={args.tasks} × E={args.episodes} × H={family.horizon}: {steps} env steps in "
                  f"{seconds:.2f} s (median of {args.repeats}) = [bold]{steps / seconds:,.0f} steps/s[/]; "
                  f"mean return of a random policy {ret:.1f}")
    return {"steps_per_s": steps / seconds, "mean_return": ret}


def _make_family(family_id: str) -> registry.TaskFamily:  # type: ignore[name-defined]
    try:
        return registry.make(family_id)
    except KeyError as err:
        raise UserError(err.args[0]) from None


# ----------------------------------------------------------------------------------------------- demo
@dataclass(frozen=True)
class DemoArgs:
    """The README's main job on a small default."""

    family: str = "HalfCheetahVel-v0"
    """task family id"""


def run_demo(args: DemoArgs) -> None:
    console.print(families_table())
    run_sample(SampleArgs(family=args.family))


# ----------------------------------------------------------------------------------------------- dispatch
COMMANDS: dict[str, tuple[type, Callable]] = {
    "families": (FamiliesArgs, run_families),
    "sample": (SampleArgs, run_sample),
    "demo": (DemoArgs, run_demo),
}


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of the `metarl` console script; returns the exit status."""
    argv = list(sys.argv[1:] if argv is None else argv)
    if not argv or argv[0] in ("-h", "--help"):
        console.print(__doc__)
        return 0 if argv else 2
    name, rest = argv[0], argv[1:]
    if name not in COMMANDS:
        console.print(f"[red]error:[/] unknown command {name!r}; commands: {', '.join(COMMANDS)}")
        return 2
    args_type, run = COMMANDS[name]
    args = tyro.cli(args_type, args=rest, prog=f"metarl {name}")
    try:
        run(args)
    except UserError as err:
        console.print(f"[red]error:[/] {err}")
        return 2
    return 0
