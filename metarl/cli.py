"""Command line: `metarl <command> [flags]` (also `python -m metarl`).

Commands:
    train ALGO      meta-train (ALGO: maml, fomaml, ...); `metarl train ALGO --help` lists flags and presets;
                    `metarl train --resume RUN_DIR` continues a run exactly
    eval RUN_DIR    few-shot evaluation: returns after 0..k adaptation steps on 40 seeded test tasks
    baseline NAME   train and evaluate a baseline: random, pretrained, oracle or ppo (`metarl baseline --help`)
    plot RUN_DIR..  overlay adaptation and training curves of several runs in one PNG
    families        list the registered task families
    sample          roll out a random policy on a family and report env-steps/s
    demo            the README's main job: a short MAML run on PointNav-v0, then `eval`

Every command takes `--import-modules MOD[,MOD…]`: modules to import first, which may register their own task
families (so do `METARL_IMPORT=MOD[,MOD…]` in the environment and the `metarl.families` entry points of installed
packages; modules in the current directory are importable, as with `python -m`).

Each command's flags come from a frozen dataclass through tyro: field docstrings are the `--help` text.
"""

from __future__ import annotations

import contextlib
import dataclasses
import json
import os
import signal
import sys
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import torch
import tyro
from rich.markup import escape as rich_escape
from rich.table import Table

from metarl import plugins, registry
from metarl.console import PipeConsole, counted, print_table
from metarl.demo import DemoArgs
from metarl.evaluate import EvalArgs
from metarl.plots import PlotArgs

if TYPE_CHECKING:
    from metarl.algos import Algorithm

console = PipeConsole()


class UserError(Exception):
    """Bad input: printed as one line, exit status 2."""


# ----------------------------------------------------------------------------------------------- families
@dataclass(frozen=True)
class FamiliesArgs:
    """List the registered task families."""

    json: bool = False
    """one JSON list (id, entry point, horizon, kwargs, task parameter, reference, obs and act dims) for scripts"""


def families_table() -> Table:
    """The registry as a table: id, task parameter and distribution, horizon, obs/act dims, reference."""
    table = Table(title="metarl task families")
    table.add_column("id", no_wrap=True)  # an id is copied into commands: never broken across lines
    for column in ("task parameter", "H", "obs", "act", "reference"):
        table.add_column(column, overflow="fold")
    for spec in registry.registered():
        family = registry.make(spec.id)
        table.add_row(spec.id, spec.tasks, str(spec.horizon), str(family.obs_dim), str(family.act_dim), spec.reference)
    return table


def families_json() -> list[dict[str, Any]]:
    """What `metarl families --json` prints: every registered spec with its family's observation/action sizes."""
    rows = []
    for spec in registry.registered():
        family = registry.make(spec.id)
        rows.append({**dataclasses.asdict(spec), "obs_dim": family.obs_dim, "act_dim": family.act_dim})
    return rows


def run_families(args: FamiliesArgs) -> None:
    if args.json:
        sys.stdout.write(json.dumps(families_json(), indent=2) + "\n")
    else:
        print_table(families_table(), console)


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
    """`metarl train ALGO [--preset NAME] [--resume RUN_DIR] [config flags]`, or `metarl train --resume RUN_DIR`."""
    from metarl import driver
    from metarl.algos import ALGORITHMS

    if argv and (argv[0] == "--resume" or argv[0].startswith("--resume=")):
        resume, rest = _pop_flag(list(argv), "--resume")
        return _resume(None, Path(str(resume)), rest)
    if not argv or argv[0] in ("-h", "--help"):
        rows = "\n".join(f"  {name:10s} {a.summary}" for name, a in ALGORITHMS.items())
        console.print(f"usage: metarl train ALGO [--preset NAME] [flags] | metarl train [ALGO] --resume RUN_DIR"
                      f"\n\nalgorithms:\n{rows}", markup=False, highlight=False, soft_wrap=True)
        raise UserError("name an algorithm") if not argv else SystemExit(0)
    name, args = argv[0], list(argv[1:])
    if name not in ALGORITHMS:
        raise UserError(f"unknown algorithm {name!r}; choose from {', '.join(ALGORITHMS)}")
    resume, args = _pop_flag(args, "--resume")
    if resume is not None:
        return _resume(name, Path(resume), args)
    cfg = parse_config(name, ALGORITHMS[name], args, f"metarl train {name}")
    run_dir = driver.run(name, cfg, inform=_inform)
    console.print(f"run directory: {run_dir}", soft_wrap=True)
    return run_dir


def _inform(message: str) -> None:
    console.print(message, soft_wrap=True, markup=False, highlight=False)


def parse_config(name: str, algo: Algorithm, args: list[str], prog: str) -> Any:
    """The algorithm's config from `--preset NAME`, then the algorithm's own defaults, then flags (tyro); every
    float finite (`check_finite`)."""
    from metarl.config import apply_overrides, check_finite

    preset, args = _pop_flag(args, "--preset")
    if preset is not None and preset not in algo.presets:
        raise UserError(f"unknown preset {preset!r} for {name}; presets: {', '.join(algo.presets)}")
    base = apply_overrides(algo.config_type(), {**(algo.presets[preset] if preset else {}), **algo.defaults})
    # A preset's family kwargs (the paper presets' frame_skip) are merged under the flag's, key by key: handed to tyro
    # as the default, a dict would become a struct of fixed keys (`--run.family-kwargs horizon 100` refused).
    preset_kwargs = dict(base.run.family_kwargs)
    base = dataclasses.replace(base, run=dataclasses.replace(base.run, family_kwargs={}))
    from metarl.resume import RESUME_FLAGS

    description = (f"{algo.summary}.\n\n"
                   f"--preset NAME    start from a preset, then flags override it: {', '.join(algo.presets)} "
                   "(--run.family-kwargs overrides a preset's family kwargs key by key)\n"
                   f"--resume RUN_DIR continue a run with its saved config (only {', '.join(RESUME_FLAGS)} may be "
                   "given with it: e.g. extend a finished run with --run.iterations N)\n"
                   f"{IMPORT_HELP}")
    try:
        args = merge_repeated_dict_flags(args, ("--run.family-kwargs", "--run.family_kwargs"))
        cfg = tyro.cli(algo.config_type, default=base, args=args, prog=prog, description=description)
        if preset_kwargs:
            kwargs = {**preset_kwargs, **cfg.run.family_kwargs}
            cfg = dataclasses.replace(cfg, run=dataclasses.replace(cfg.run, family_kwargs=kwargs))
        check_finite(cfg)
    except ValueError as err:  # a config invariant (__post_init__) rejected a flag value
        raise UserError(str(err)) from None
    return cfg


IMPORT_HELP = (f"{plugins.FLAG} MOD[,MOD…]  modules to import first, which may register task families (also "
               f"{plugins.ENV_VAR}=MOD[,MOD…], `{plugins.ENTRY_POINT_GROUP}` entry points, the current directory)")
"""The line every command's --help adds for the flag `main` handles for all of them."""


def merge_repeated_dict_flags(args: list[str], spellings: Sequence[str]) -> list[str]:
    """One `--flag K V K V ...` from every occurrence of a dict flag (any of its `spellings`), in order, so a later
    key overrides an earlier one: given twice, tyro would keep only the last occurrence and drop the first's keys
    without a word (`--run.family-kwargs frame_skip 1 --run.family-kwargs rllab 1` lost the time step)."""
    at = [i for i, arg in enumerate(args) if arg in spellings]
    if len(at) < 2:
        return args
    merged, rest, i = [], [], 0
    while i < len(args):
        if args[i] in spellings:
            i += 1
            while i < len(args) and not args[i].startswith("--"):
                merged.append(args[i])
                i += 1
        else:
            rest.append(args[i])
            i += 1
    return [*rest[: at[0]], args[at[0]], *merged, *rest[at[0] :]]


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


def _resume(name: str | None, run_dir: Path, args: list[str], hold: contextlib.ExitStack | None = None) -> Path:
    from metarl import driver
    from metarl.resume import overrides_from_flags

    driver.resume(run_dir, name, hold=hold, inform=_inform, overrides=overrides_from_flags(args))
    console.print(f"run directory: {run_dir}", soft_wrap=True)
    return run_dir


# ----------------------------------------------------------------------------------------------- eval, plot
def run_eval(args: EvalArgs) -> Path:
    """`metarl eval RUN_DIR`: evaluate, print the pre/post table, write eval-<protocol>.json/.csv/.png (and the
    latest as eval.json/.csv/.png); returns the PNG path."""
    from metarl.evaluate import EvalOutcome, eval_table, evaluate_run

    def show(outcome: EvalOutcome) -> None:  # before the files are written: a full disk cannot hide the result
        console.print(describe(outcome.record), soft_wrap=True)
        print_table(eval_table(outcome.result.stats), console)

    try:
        outcome = evaluate_run(args, on_result=show)
    except ValueError as err:  # RunDirError, or an option the run's algorithm cannot honour
        raise UserError(str(err)) from None
    for note in outcome.notes:
        console.print(note, soft_wrap=True, markup=False, highlight=False)
    console.print(f"results: {outcome.paths['json']}, {outcome.paths['csv']} (the latest also as eval.json, "
                  "eval.csv, eval.png)", soft_wrap=True)
    console.print(f"adaptation curve: {outcome.paths['png']}", soft_wrap=True)
    return outcome.paths["png"]


def describe(record: dict[str, Any]) -> str:
    """One line: what was evaluated, how."""
    p = record["protocol"]
    task_set = p.get("task_set")
    given = "" if task_set is None else ("the MAML paper's" if task_set == "maml2017" else f"from {task_set}")
    given += "; rollout " if given else ""
    return (f"{record['label']}: {counted(p['tasks'], 'test task')} ({given}seed {p['seed']}), "
            f"{counted(p['episodes'], 'episode')} per step, {p['checkpoint']} at iteration {p['iteration']}")


def run_demo(args: DemoArgs) -> Path:
    from metarl.demo import demo

    try:
        return demo(args, console)
    except ValueError as err:
        raise UserError(str(err)) from None


def run_plot(args: PlotArgs) -> Path:
    from metarl.plots import plot_runs

    path = plot_runs(args)
    console.print(f"plot: {path}", soft_wrap=True)
    return path


# ----------------------------------------------------------------------------------------------- baseline
BASELINE_HELP = """usage: metarl baseline NAME [--preset NAME] [MAML config flags] [--eval-tasks N] [--eval-steps K]
       metarl baseline NAME --resume RUN_DIR

Trains (if needed) and evaluates a baseline with exactly `metarl eval`'s protocol; the flags are `metarl train
maml`'s (family, episodes_per_task, inner_lr, policy, run.*), so a baseline adapts like the MAML run it is compared
with. Use the same --preset/--family/--run.seed as that run to get the same test tasks.

baselines:
  random      random initialisation + MAML's policy-gradient adaptation (no training)
  pretrained  joint multi-task TRPO on the task distribution (no meta-objective) + the same adaptation
  oracle      joint training with the task parameters appended to the observation: the ceiling
  ppo         Stable-Baselines3 PPO per test task, one update per step on E·H env steps (the same samples)

--resume RUN_DIR continues a baseline run (with --run.iterations N: trains it further), then evaluates it again.
""" + IMPORT_HELP


def run_baseline(argv: Sequence[str]) -> Path:
    """`metarl baseline NAME ...`: train into a run directory (random, ppo: nothing to train), then evaluate."""
    from metarl import baselines, driver
    from metarl.evaluate import EvalArgs

    names = [key.removeprefix("baseline-") for key in baselines.BASELINES]
    if not argv or argv[0] in ("-h", "--help"):
        console.print(BASELINE_HELP, markup=False, highlight=False, soft_wrap=True)
        raise UserError("name a baseline") if not argv else SystemExit(0)
    name, args = argv[0], list(argv[1:])
    if name not in names:
        raise UserError(f"unknown baseline {name!r}; choose from {', '.join(names)}")
    options = {}
    for flag in ("--eval-tasks", "--eval-steps"):
        value, args = _pop_flag(args, flag)
        if value is not None:
            options[flag.removeprefix("--eval-")] = _int(flag, value)
    try:
        eval_args = EvalArgs(Path("."), **options)  # checked before any training
    except ValueError as err:
        raise UserError(str(err)) from None
    resume, args = _pop_flag(args, "--resume")
    if resume is not None and name in ("random", "ppo") and any(a.split("=")[0] in ("--run.iterations",
                                                                                   "--run_iterations") for a in args):
        raise UserError(f"the {name} baseline never trains (its policy is the initial one): drop --run.iterations")
    with contextlib.ExitStack() as hold:  # one lock from training to the end of the evaluation
        if resume is not None:
            run_dir = _resume(f"baseline-{name}", Path(resume), args, hold)
        else:
            algo = f"baseline-{name}"
            cfg = parse_config(algo, baselines.BASELINES[algo], args, f"metarl baseline {name}")
            if cfg.run.iterations != 0 and name in ("random", "ppo"):  # nothing to train: keep the initial policy
                cfg = dataclasses.replace(cfg, run=dataclasses.replace(cfg.run, iterations=0))
            if name == "oracle":
                cfg = dataclasses.replace(cfg, family=baselines.register_oracle(cfg.family).id)
            run_dir = driver.run(algo, cfg, hold=hold, inform=_inform)
            console.print(f"run directory: {run_dir}", soft_wrap=True)
        run_eval(dataclasses.replace(eval_args, run_dir=run_dir))
    return run_dir


def _int(flag: str, value: str) -> int:
    try:
        return int(value)
    except ValueError:
        raise UserError(f"{flag} needs an integer, got {value!r}") from None


# ----------------------------------------------------------------------------------------------- dispatch
COMMANDS: dict[str, tuple[type, Callable]] = {
    "eval": (EvalArgs, run_eval),
    "plot": (PlotArgs, run_plot),
    "families": (FamiliesArgs, run_families),
    "sample": (SampleArgs, run_sample),
    "demo": (DemoArgs, run_demo),
}
"""Commands whose flags are one dataclass (tyro)."""
RAW_COMMANDS: dict[str, Callable[[Sequence[str]], Any]] = {"train": run_train, "baseline": run_baseline}
"""Commands that parse their own arguments (the config type depends on the algorithm)."""


class Terminated(KeyboardInterrupt):
    """SIGTERM, handled like Ctrl-C: the iteration in progress is abandoned, the last checkpoint stays."""


def _terminate(signum: int, frame: Any) -> None:
    raise Terminated()


@contextlib.contextmanager
def _sigterm_as_interrupt() -> Any:
    """SIGTERM raises `Terminated` while a command runs (the main thread only: elsewhere signals cannot be set)."""
    try:
        previous = signal.signal(signal.SIGTERM, _terminate)
    except ValueError:  # not the main thread
        yield
        return
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, previous)


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of the `metarl` console script; returns the exit status (2: bad input, 1: training failed,
    130/143: interrupted by Ctrl-C/SIGTERM, 141: the reader of stdout went away, e.g. `| head`)."""
    try:
        return _main(list(sys.argv[1:] if argv is None else argv))
    except BrokenPipeError:  # `metarl families | head`: the reader has what it wanted; no traceback (issue 13)
        _stdout_to_devnull()
        return 141  # 128 + SIGPIPE, what a shell reports for a process killed by the broken pipe


def _stdout_to_devnull() -> None:
    """Point stdout at /dev/null, so that the interpreter's final flush of the buffered rest does not raise again
    (the recipe of Python's signal module documentation)."""
    try:
        fd = sys.stdout.fileno()
    except (AttributeError, ValueError, OSError):  # stdout is not a file (captured): nothing will be flushed there
        return
    devnull = os.open(os.devnull, os.O_WRONLY)
    os.dup2(devnull, fd)
    os.close(devnull)


def _main(argv: list[str]) -> int:
    if not argv or argv[0] in ("-h", "--help"):
        console.print(__doc__, markup=False, highlight=False, soft_wrap=True)  # "[flags]" is not rich markup
        return 0 if argv else 2
    name, rest = argv[0], argv[1:]
    if name not in RAW_COMMANDS and name not in COMMANDS:
        console.print(f"[red]error:[/] unknown command {name!r}; commands: {', '.join([*RAW_COMMANDS, *COMMANDS])}")
        return 2
    with _sigterm_as_interrupt():
        return _run_command(name, rest)


def _run_command(name: str, rest: list[str]) -> int:
    from metarl.config import ConfigError
    from metarl.runs import Interrupted, RunDirError
    from metarl.storage import StorageError
    from metarl.training import NonFiniteError

    try:
        rest = plugins.load_for_command(rest)  # --import-modules, METARL_IMPORT, the current directory
        if name in RAW_COMMANDS:
            RAW_COMMANDS[name](rest)
        else:
            args_type, run = COMMANDS[name]
            run(_parse(args_type, rest, f"metarl {name}"))
    except (UserError, RunDirError, ConfigError, StorageError, registry.UnknownFamilyError,
            registry.FamilyKwargsError, plugins.PluginError) as err:
        _error(str(err))  # one line, however long: greppable, copyable
        return 2
    except NonFiniteError as err:
        _error(str(err))
        return 1
    except KeyboardInterrupt as err:
        why = "SIGTERM" if isinstance(err, Terminated) or isinstance(err.__context__, Terminated) else "Ctrl-C"
        message = err.message if isinstance(err, Interrupted) else "stopped before anything was written"
        console.print(f"[red]interrupted[/] ({why}): {message}", soft_wrap=True, highlight=False)
        return 143 if why == "SIGTERM" else 130
    except SystemExit as exit_:  # tyro has printed its own message (bad flag or config value)
        return int(exit_.code or 0)
    return 0


def _error(message: str) -> None:
    console.print(f"[red]error:[/] {rich_escape(message)}", soft_wrap=True, highlight=False)


def _parse(args_type: type, args: Sequence[str], prog: str) -> Any:
    description = f"{(args_type.__doc__ or '').strip()}\n\n{IMPORT_HELP}"
    try:
        return tyro.cli(args_type, args=list(args), prog=prog, description=description)
    except ValueError as err:  # __post_init__ rejected a value
        raise UserError(str(err)) from None
