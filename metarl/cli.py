"""Command line: `metarl <command> [flags]` (also `python -m metarl`).

Commands:
    train ALGO   meta-train (ALGO: maml, fomaml, ...); `metarl train ALGO --help` lists flags and presets
    families     list the registered task families
    sample       roll out a random policy on a family and report env-steps/s
    demo         the README's main job on a small default

Each command's flags come from a frozen dataclass through tyro: field docstrings are the `--help` text.
"""

from __future__ import annotations

import json
import sys
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

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
    family = registry.make(args.family)
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


# ----------------------------------------------------------------------------------------------- train
def run_train(argv: Sequence[str]) -> Path:
    """`metarl train ALGO [--preset NAME] [--resume RUN_DIR] [config flags]`."""
    from metarl import training
    from metarl.algos import ALGORITHMS
    from metarl.config import apply_overrides

    if not argv or argv[0] in ("-h", "--help"):
        rows = "\n".join(f"  {name:10s} {a.summary}" for name, a in ALGORITHMS.items())
        console.print(f"usage: metarl train ALGO [--preset NAME] [--resume RUN_DIR] [flags]\n\nalgorithms:\n{rows}")
        raise UserError("name an algorithm") if not argv else SystemExit(0)
    name, args = argv[0], list(argv[1:])
    if name not in ALGORITHMS:
        raise UserError(f"unknown algorithm {name!r}; choose from {', '.join(ALGORITHMS)}")
    algo = ALGORITHMS[name]
    preset, args = _pop_flag(args, "--preset")
    resume, args = _pop_flag(args, "--resume")
    if resume is not None:
        return _resume(name, Path(resume), args)
    if preset is not None and preset not in algo.presets:
        raise UserError(f"unknown preset {preset!r} for {name}; presets: {', '.join(algo.presets)}")
    base = apply_overrides(algo.config_type(), {**(algo.presets[preset] if preset else {}), **algo.defaults})
    description = f"{algo.summary}.\nPresets (--preset NAME, then flags override): {', '.join(algo.presets)}"
    try:
        cfg = tyro.cli(algo.config_type, default=base, args=args, prog=f"metarl train {name}",
                       description=description)
    except ValueError as err:  # a config invariant (__post_init__) rejected a flag value
        raise UserError(str(err)) from None
    run_dir = training.run(name, cfg)
    console.print(f"run directory: {run_dir}")
    return run_dir


def _pop_flag(args: list[str], flag: str) -> tuple[str | None, list[str]]:
    """Remove `flag VALUE` (or `flag=VALUE`) from args; return the value."""
    for i, arg in enumerate(args):
        if arg == flag:
            if i + 1 >= len(args):
                raise UserError(f"{flag} needs a value")
            return args[i + 1], args[:i] + args[i + 2 :]
        if arg.startswith(f"{flag}="):
            return arg.split("=", 1)[1], args[:i] + args[i + 1 :]
    return None, args


def _resume(name: str, run_dir: Path, args: list[str]) -> Path:
    from metarl import training
    from metarl.algos import ALGORITHMS
    from metarl.config import config_from_dict

    if args:
        raise UserError(f"--resume continues a run with its saved config; drop the other flags ({' '.join(args)})")
    if not (run_dir / "config.json").is_file() or not (run_dir / "checkpoint.pt").is_file():
        raise UserError(f"{run_dir} is not a run directory with a checkpoint (config.json, checkpoint.pt)")
    saved = json.loads((run_dir / "config.json").read_text())
    if saved.get("algo") != name:
        raise UserError(f"{run_dir} was trained with {saved.get('algo')!r}, not {name!r}")
    cfg = config_from_dict(ALGORITHMS[name].config_type, saved["config"])
    training.run(name, cfg, resume_dir=run_dir)
    console.print(f"run directory: {run_dir}")
    return run_dir


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
    if name != "train" and name not in COMMANDS:
        console.print(f"[red]error:[/] unknown command {name!r}; commands: train, {', '.join(COMMANDS)}")
        return 2
    try:
        if name == "train":
            run_train(rest)
        else:
            args_type, run = COMMANDS[name]
            run(tyro.cli(args_type, args=rest, prog=f"metarl {name}"))
    except (UserError, registry.UnknownFamilyError, registry.FamilyKwargsError) as err:
        console.print(f"[red]error:[/] {err}")
        return 2
    except SystemExit as exit_:  # tyro has printed its own message (bad flag or config value)
        return int(exit_.code or 0)
    return 0
