"""Resuming a run (issue 13): what a resume may change, read from its flags, and what it says when there is nothing to
train.

`metarl train --resume RUN_DIR` continues a run with its saved config. Only `RESUME_OVERRIDES` may change with it,
`--run.iterations N` above all (a finished run trained further): fields that do not change what an iteration
computes (a subset of `runs.RUN_ONLY`), so the resumed run still equals an uninterrupted run of its new length.
Anything else keeps the one-line refusal it always had.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from metarl.config import ConfigError, apply_overrides, check_finite
from metarl.runs import RUN_ONLY

RESUME_OVERRIDES = ("run.iterations", "run.checkpoint_every", "run.tensorboard", "run.threads")
"""Config fields `--resume` may change."""
assert set(RESUME_OVERRIDES) <= set(RUN_ONLY)

RESUME_FLAGS = ("--run.iterations", "--run.checkpoint-every", "--run.threads", "--run.tensorboard",
                "--run.no-tensorboard")
"""Their flags: `--resume RUN --run.iterations N` extends a run."""


def overrides_from_flags(args: list[str]) -> dict[str, Any]:
    """`RESUME_FLAGS` in args -> {"run.iterations": 20, ...}; `ConfigError` for any other argument or a value that is
    not an integer."""
    overrides: dict[str, Any] = {}
    rest = list(args)
    for flag in ("--run.iterations", "--run.checkpoint-every", "--run.threads"):
        for spelling in (flag, "--" + flag[2:].replace("-", "_")):
            value, rest = _pop(rest, spelling)
            if value is not None:
                try:
                    overrides[flag[2:].replace("-", "_")] = int(value)
                except ValueError:
                    raise ConfigError(f"{flag} needs an integer, got {value!r}") from None
    for flag, on in (("--run.tensorboard", True), ("--run.no-tensorboard", False)):
        if flag in rest:
            rest = [a for a in rest if a != flag]
            overrides["run.tensorboard"] = on
    if rest:
        raise ConfigError(f"--resume continues a run with its saved config; drop the other flags ({' '.join(rest)}); "
                          f"only {', '.join(RESUME_FLAGS)} may be given with it")
    return overrides


def _pop(args: list[str], flag: str) -> tuple[str | None, list[str]]:
    """Remove `flag VALUE` (or `flag=VALUE`) from args; return the value."""
    for i, arg in enumerate(args):
        if arg == flag:
            if i + 1 >= len(args):
                raise ConfigError(f"{flag} needs a value")
            return args[i + 1], args[:i] + args[i + 2 :]
        if arg.startswith(f"{flag}="):
            return arg.split("=", 1)[1], args[:i] + args[i + 1 :]
    return None, args


def with_overrides(cfg: Any, overrides: dict[str, Any]) -> Any:
    """`cfg` with `RESUME_OVERRIDES` fields replaced; a `ConfigError` for any other field or a refused value."""
    other = sorted(set(overrides) - set(RESUME_OVERRIDES))
    if other:
        raise ConfigError(f"a resumed run keeps its config: {', '.join(other)} cannot change (only "
                          f"{', '.join(RESUME_OVERRIDES)} can)")
    try:
        new = apply_overrides(cfg, overrides)
        check_finite(new)
    except (TypeError, ValueError) as err:
        raise ConfigError(str(err)) from None
    return new


def nothing_to_do(algo_name: str, command: str, run_dir: Path, iteration: int, iterations: int) -> str:
    """The line for a resume (`command`) of a run whose checkpoint is at (or past) run.iterations."""
    what = "nothing to train" if algo_name.startswith("baseline-") else "nothing to do"
    done = (f"it has finished its {iterations} iterations" if iteration == iterations
            else f"its checkpoint.pt is at iteration {iteration}, past run.iterations {iterations}")
    return f"{what}: {run_dir} is complete ({done}); `{command} --run.iterations N` " \
           f"with N > {iteration} trains it further"
