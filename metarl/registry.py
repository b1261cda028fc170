"""The task-family registry: Gymnasium's `register / make / spec` shape, stricter.

A family is registered once under a versioned id (``Name-vN``); any change to its task distribution, reward,
horizon, observation layout or physics bumps the version. The spec is frozen and JSON-serialisable, so every run
directory and checkpoint stores exactly which family it was trained on.

Example:
    >>> from metarl import registry
    >>> fam = registry.make("HalfCheetahVel-v0", high=3.0)   # override a kwarg
    >>> registry.spec("HalfCheetahVel-v0").horizon
    200
"""

from __future__ import annotations

import dataclasses
import difflib
import importlib
import inspect
import json
import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from metarl.family import TaskFamily

class UnknownFamilyError(KeyError):
    """No family is registered under this id (the message suggests close matches)."""

    def __str__(self) -> str:  # KeyError would show the message in quotes
        return str(self.args[0])


class FamilyKwargsError(TypeError):
    """`make` was given keyword arguments the family does not accept (the message lists the accepted ones)."""


MAX_HORIZON = 1_000_000
"""Episodes longer than this are a typo (horizon 1e30 crashed inside MuJoCo with a C++ frame dump: issue 12)."""

_ID_RE = re.compile(r"^(?:(?P<namespace>[\w.-]+)/)?(?P<name>[A-Za-z][\w.-]*?)-v(?P<version>\d+)$")


@dataclass(frozen=True)
class FamilySpec:
    """Everything needed to rebuild a task family; stored as JSON in every run directory.

    Attributes:
        id: ``[namespace/]Name-vN``, e.g. ``"HalfCheetahVel-v0"``.
        entry_point: ``"module:Class"`` (imported lazily by `make`) of a `TaskFamily` implementation.
        horizon: episode length H (the anchors differ: 100 vs 200, so it is part of the spec).
        kwargs: default constructor arguments, overridable in `make`.
        tasks: human-readable task parameter and its distribution, e.g. ``"goal_vel ~ U[low, high]"``.
        reference: provenance, e.g. which paper's preset these defaults reproduce.
    """

    id: str
    entry_point: str
    horizon: int
    kwargs: Mapping[str, Any] = field(default_factory=dict)
    tasks: str = ""
    reference: str = ""

    def __post_init__(self) -> None:
        if not _ID_RE.match(self.id):
            raise ValueError(f"family id {self.id!r} must look like 'Name-vN' (optionally 'namespace/Name-vN')")
        if ":" not in self.entry_point:
            raise ValueError(f"entry_point {self.entry_point!r} must be 'module.path:ClassName'")
        if not isinstance(self.horizon, int) or isinstance(self.horizon, bool) or not 1 <= self.horizon <= MAX_HORIZON:
            raise ValueError(f"horizon must be a positive int <= {MAX_HORIZON}, got {self.horizon!r}")
        # Freeze kwargs into a plain dict copy so later mutation of the caller's dict cannot change the spec.
        object.__setattr__(self, "kwargs", dict(self.kwargs))
        try:
            json.dumps(self.kwargs)
        except TypeError as err:
            raise ValueError(f"kwargs of {self.id} must be JSON-serialisable: {err}") from None

    def to_json(self) -> str:
        """Serialise to a JSON string (stable key order)."""
        return json.dumps(dataclasses.asdict(self), sort_keys=True)

    @classmethod
    def from_json(cls, text: str) -> FamilySpec:
        """Inverse of `to_json`."""
        data = json.loads(text)
        return cls(**data)

    def with_kwargs(self, **overrides: Any) -> FamilySpec:
        """A copy with `overrides` merged into kwargs (horizon is overridable the same way)."""
        kwargs = {**self.kwargs, **overrides}
        horizon = kwargs.pop("horizon", self.horizon)
        if isinstance(horizon, float) and horizon.is_integer():  # CLI kwargs arrive as floats (--run.family-kwargs)
            horizon = int(horizon)
        return dataclasses.replace(self, kwargs=kwargs, horizon=horizon)


# The one allowed global: id -> spec. Built-in registrations all live in envs/__init__.py.
_REGISTRY: dict[str, FamilySpec] = {}


def register(spec: FamilySpec) -> FamilySpec:
    """Add a family. Raises `ValueError` if the id is taken (Gymnasium only warns; we refuse to shadow)."""
    _ensure_builtins()
    if spec.id in _REGISTRY:
        raise ValueError(
            f"family {spec.id!r} is already registered (by {_REGISTRY[spec.id].entry_point}); "
            f"bump the version (e.g. '{_bump(spec.id)}') or call metarl.registry.unregister first"
        )
    _REGISTRY[spec.id] = spec
    return spec


def unregister(id: str) -> None:
    """Remove a family (used by tests and by users replacing their own registration)."""
    _ensure_builtins()
    if id not in _REGISTRY:
        raise UnknownFamilyError(_unknown_message(id))
    del _REGISTRY[id]


def spec(id: str) -> FamilySpec:
    """The registered spec for `id`; raises `KeyError` with 'did you mean …' suggestions."""
    _ensure_builtins()
    try:
        return _REGISTRY[id]
    except KeyError:
        raise UnknownFamilyError(_unknown_message(id)) from None


def registered() -> list[FamilySpec]:
    """All registered specs, sorted by id."""
    _ensure_builtins()
    return [_REGISTRY[k] for k in sorted(_REGISTRY)]


def make(id: str | FamilySpec, **overrides: Any) -> TaskFamily:
    """Build the family `id` with its registered kwargs updated by `overrides`.

    Raises:
        UnknownFamilyError: unknown id (with close matches); a KeyError.
        FamilyKwargsError: an override the family's constructor does not accept (lists the accepted names); a
            TypeError.
    """
    base = id if isinstance(id, FamilySpec) else spec(id)
    full = base.with_kwargs(**overrides)
    cls = load_entry_point(full.entry_point)
    accepted = _accepted_kwargs(cls)
    unknown = sorted(set(full.kwargs) - accepted) if accepted is not None else []
    if unknown:
        raise FamilyKwargsError(
            f"{full.id} does not accept {', '.join(map(repr, unknown))}; accepted kwargs: "
            f"{', '.join(sorted(accepted - {'spec'})) or '(none)'}, horizon"  # type: ignore[operator]
        )
    return cls(spec=full, **full.kwargs)


def load_entry_point(entry_point: str) -> Any:
    """Import ``"module:Attr"`` and return the attribute, with a clear error when it is missing."""
    module_name, _, attr = entry_point.partition(":")
    try:
        module = importlib.import_module(module_name)
    except ImportError as err:
        raise ImportError(f"cannot import {module_name!r} for entry point {entry_point!r}: {err}") from err
    try:
        return getattr(module, attr)
    except AttributeError:
        raise ImportError(f"module {module_name!r} has no attribute {attr!r} (entry point {entry_point!r})") from None


def _accepted_kwargs(cls: Any) -> set[str] | None:
    """Keyword names `cls(...)` accepts, following ``**kwargs`` up the MRO; None if anything goes."""
    names: set[str] = set()
    for klass in inspect.getmro(cls) if inspect.isclass(cls) else (cls,):
        init = klass.__dict__.get("__init__") if inspect.isclass(klass) else klass
        if init is None:
            continue
        params = inspect.signature(init).parameters
        names |= {n for n, p in params.items() if n != "self" and p.kind is not inspect.Parameter.VAR_KEYWORD}
        if not any(p.kind is inspect.Parameter.VAR_KEYWORD for p in params.values()):
            return names
    return None


def _unknown_message(id: str) -> str:
    matches = difflib.get_close_matches(id, list(_REGISTRY), n=3, cutoff=0.5)
    hint = f" Did you mean {' or '.join(map(repr, matches))}?" if matches else ""
    from metarl.plugins import HOW

    return f"no task family {id!r} is registered.{hint} `metarl families` lists them; {HOW}."


def _bump(id: str) -> str:
    m = _ID_RE.match(id)
    assert m is not None  # ids are validated at construction
    prefix = f"{m['namespace']}/" if m["namespace"] else ""
    return f"{prefix}{m['name']}-v{int(m['version']) + 1}"


_BUILTINS_LOADED = False


def _ensure_builtins() -> None:
    """Import metarl.envs once so the built-in families are registered before any lookup, then the installed
    packages' `metarl.families` entry points (metarl/plugins.py)."""
    global _BUILTINS_LOADED
    if not _BUILTINS_LOADED:
        _BUILTINS_LOADED = True  # first: the modules imported below register, which calls this again
        importlib.import_module("metarl.envs")
        from metarl.plugins import load_entry_points

        load_entry_points()
