"""Families from outside metarl: the user's own modules and installed packages (issue 13).

A family registers itself when its module is imported (`metarl.register(FamilySpec(...))` at module level), so
"finding" a family means importing that module first. Four ways, for every `metarl` command:

- `--import-modules MOD[,MOD…]` (repeatable), e.g. `metarl train maml --import-modules my_fams --family my/X-v0`;
- the environment variable `METARL_IMPORT=MOD[,MOD…]`, for every command of a shell session or a job script;
- an installed package's entry point in the group `metarl.families` (pyproject.toml:
  `[project.entry-points."metarl.families"] my_fams = "my_pkg.families"`), imported at the first registry lookup in
  any process, library use included (the entry point may also name a function, `"my_pkg.families:register_all"`,
  which is called);
- the current directory is importable, as with `python -m`, so `my_fams.py` next to you is `--import-modules my_fams`.

A run directory stores its family's spec; a custom family's entry point names its module, which `metarl.make` imports
by itself. Families referred to by id only (the oracle baseline's base family) need one of the ways above.
"""

from __future__ import annotations

import importlib
import importlib.metadata
import os
import sys
import traceback
from collections.abc import Iterable
from types import ModuleType

ENTRY_POINT_GROUP = "metarl.families"
ENV_VAR = "METARL_IMPORT"
FLAG = "--import-modules"

HOW = (f"a family from your own module is found once the module is imported: `{FLAG} MOD[,MOD…]` on any metarl "
       f"command, `{ENV_VAR}=MOD[,MOD…]` in the environment, or a `{ENTRY_POINT_GROUP}` entry point of an installed "
       "package (modules in the current directory are importable)")
"""The ways to make a family known, for error messages (one clause, no full stop)."""


class PluginError(ImportError):
    """A module named to register families could not be imported (one line: which, from where, why)."""


def split_modules(values: Iterable[str]) -> list[str]:
    """["a,b", " c "] -> ["a", "b", "c"]: comma-separated module names, blanks dropped, order kept, no repeats."""
    names: list[str] = []
    for value in values:
        for name in value.split(","):
            name = name.strip()
            if name and name not in names:
                names.append(name)
    return names


def import_modules(names: Iterable[str], source: str = FLAG) -> list[ModuleType]:
    """Import each module (registering its families); `PluginError` names the module, `source` and the cause."""
    modules = []
    for name in names:
        try:
            modules.append(importlib.import_module(name))
        except ModuleNotFoundError as err:
            if err.name is not None and name.startswith(err.name):  # the module itself (or a parent) is not there
                raise PluginError(f"cannot import {name!r} (from {source}): no module named {err.name!r}; run metarl "
                                  "from the directory that holds it, add that directory to PYTHONPATH, or install "
                                  "its package") from None
            raise PluginError(f"cannot import {name!r} (from {source}): {_cause(err)}") from err
        except Exception as err:  # the user's module raised while registering: say where, keep the chain
            raise PluginError(f"cannot import {name!r} (from {source}): {_cause(err)}") from err
    return modules


def _cause(err: BaseException) -> str:
    """"ValueError: ... (my_fams.py:12)": the error and the innermost frame it came from."""
    frames = traceback.extract_tb(err.__traceback__)
    where = f" ({os.path.basename(frames[-1].filename)}:{frames[-1].lineno})" if frames else ""
    return f"{type(err).__name__}: {err}{where}"


def load_entry_points() -> list[str]:
    """Import (or call) every `metarl.families` entry point of the installed packages; returns their names.

    Called once per process by the registry before its first lookup, after the built-in families."""
    loaded = []
    for entry in importlib.metadata.entry_points(group=ENTRY_POINT_GROUP):
        dist = getattr(entry.dist, "name", None) or "an installed package"
        try:
            target = entry.load()
            if callable(target) and not isinstance(target, ModuleType):
                target()
        except Exception as err:
            raise PluginError(f"the {ENTRY_POINT_GROUP} entry point {entry.name} = {entry.value!r} of {dist} failed: "
                              f"{_cause(err)}; fix or uninstall {dist}") from err
        loaded.append(entry.name)
    return loaded


def cwd_importable() -> None:
    """Put the current directory on `sys.path` as `python -m` does (the console script `metarl` does not)."""
    cwd = os.getcwd()
    if cwd not in sys.path and "" not in sys.path:
        sys.path.insert(0, cwd)


def pop_flag(argv: list[str]) -> tuple[list[str], list[str]]:
    """(argv without every `--import-modules VALUE` / `--import-modules=VALUE`, the module names they give)."""
    rest: list[str] = []
    values: list[str] = []
    flags = (FLAG, "--import_modules")  # tyro accepts both spellings of its own flags
    i = 0
    while i < len(argv):
        arg = argv[i]
        if arg in flags:
            if i + 1 >= len(argv) or argv[i + 1].startswith("-"):
                raise PluginError(f"{FLAG} needs a value: MOD[,MOD…], e.g. {FLAG} my_fams")
            values.append(argv[i + 1])
            i += 2
            continue
        if arg.split("=", 1)[0] in flags and "=" in arg:
            values.append(arg.split("=", 1)[1])
        else:
            rest.append(arg)
        i += 1
    return rest, split_modules(values)


def load_for_command(argv: list[str]) -> list[str]:
    """What every command does first: the current directory importable, then `METARL_IMPORT`'s modules, then the
    `--import-modules` ones (popped from argv); returns the remaining arguments."""
    rest, names = pop_flag(argv)
    cwd_importable()
    import_modules(split_modules([os.environ.get(ENV_VAR, "")]), source=f"${ENV_VAR}")
    import_modules(names)
    return rest
