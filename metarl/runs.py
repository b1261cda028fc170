"""Run directories and checkpoints.

A run lives in `runs/<family>__<algo>__<seed>__<unixtime>/` with `config.json` (algorithm, config, metarl version),
`family.json` (the FamilySpec), `metrics.jsonl` (one record per iteration, numbered from 1), TensorBoard events,
`checkpoint.pt` (the latest state), `best.pt` (the best by validation return) and, after `metarl eval`, a set
`eval-<protocol>.json`, `.csv`, `.png` per evaluation and `eval.json`, `eval.csv`, `eval.png` (the latest). Files
are written atomically (temporary file + rename) so a killed run never leaves a torn checkpoint; a new run directory
appears with its config, family and iteration-0 checkpoint or not at all, and one process at a time writes into it
(its lock: metarl/storage.py).

Reading is strict: a missing, corrupt or foreign run directory raises `RunDirError` with one line that names the file
and what is wrong, before anything is written.
"""

from __future__ import annotations

import dataclasses
import json
import math
import os
import pickle
import shutil
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any

import torch

from metarl import registry
from metarl.registry import FamilySpec
from metarl.storage import Lock, create_directory, remove_stale_sets, set_name_of, storage_errors

if TYPE_CHECKING:
    from torch import nn

    from metarl.algos import Algorithm
    from metarl.family import TaskFamily
    from metarl.policies import Params

FORMAT_VERSION = 1
"""Bumped when the run-directory layout or checkpoint contents change incompatibly."""


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


_UMASK = _umask()


def atomic_write_bytes(path: Path, data: bytes) -> None:
    """Write `data` to `path` so readers see either the old file or the complete new one; the environment's
    OSErrors (full disk, read-only file system, ...) become one-line `StorageError`s."""
    with storage_errors(f"write {path}"):
        _atomic_write(path, data)


def _atomic_write(path: Path, data: bytes) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        os.fchmod(fd, 0o666 & ~_UMASK)  # mkstemp creates 0600; give the file the permissions open() would
        with os.fdopen(fd, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def atomic_write_json(path: Path, obj: Any) -> None:
    """JSON with NaN/Inf written as null (`json.dumps` would write the invalid tokens NaN/Infinity)."""
    atomic_write_bytes(path, finite_json_bytes(obj))


def finite_json_bytes(obj: Any) -> bytes:
    return (json.dumps(_finite_json(obj), indent=2, sort_keys=True) + "\n").encode()


def _finite_json(obj: Any) -> Any:
    if isinstance(obj, float):
        return obj if math.isfinite(obj) else None
    if isinstance(obj, dict):
        return {k: _finite_json(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [_finite_json(v) for v in obj]
    return obj


def config_to_dict(config: Any) -> dict[str, Any]:
    """A frozen config dataclass as JSON-friendly nested dicts (tuples become lists)."""
    return json.loads(json.dumps(dataclasses.asdict(config)))


def new_run_dir(runs_dir: str | Path, family: str, algo: str, seed: int, fill: Callable[[Path], None],
                command: str) -> tuple[Path, Lock]:
    """Create `runs_dir/<family>__<algo>__<seed>__<unixtime>` (with a suffix `_1`, `_2`, ... if that name is taken)
    holding what `fill` writes, atomically; returns it with its lock held (`storage.create_directory`)."""
    name = f"{family.replace('/', '_')}__{algo}__{seed}__{int(time.time())}"
    return create_directory(Path(runs_dir), name, fill, command)


def run_label(algo: str, family: str, seed: int) -> str:
    """A run's readable name in tables and plot legends: "maml, PointNav-v0, seed 0"."""
    return f"{algo}, {family}, seed {seed}"


def write_run_files(run_dir: Path, algo: str, config: Any, spec: FamilySpec) -> None:
    """config.json and family.json at the start of a run."""
    write_config(run_dir, algo, config)
    atomic_write_bytes(run_dir / "family.json", (spec.to_json() + "\n").encode())


def write_config(run_dir: Path, algo: str, config: Any) -> None:
    """config.json (atomically): at the start of a run, and when a resume extends it."""
    from metarl import __version__

    atomic_write_json(run_dir / "config.json", {"format_version": FORMAT_VERSION, "metarl_version": __version__,
                                                "algo": algo, "config": config_to_dict(config)})


def save_checkpoint(path: Path, state: dict[str, Any]) -> None:
    """torch.save `state` atomically."""
    import io

    buffer = io.BytesIO()
    torch.save(state, buffer)
    atomic_write_bytes(path, buffer.getvalue())


# ----------------------------------------------------------------------------------------------- reading
class RunDirError(ValueError):
    """A run directory or checkpoint that cannot be used: missing, corrupt, another format version, mismatched."""


def read_json(path: Path) -> Any:
    """Parse `path`, or raise `RunDirError` saying whether it is missing or corrupt."""
    if not path.is_file():
        raise RunDirError(f"{path} is missing")
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except (json.JSONDecodeError, UnicodeDecodeError) as err:
        raise RunDirError(f"{path} is corrupt (invalid JSON: {err})") from None


def check_format(data: Any, path: Path) -> dict[str, Any]:
    """`data` (a parsed config.json or checkpoint) as a dict of this FORMAT_VERSION, else `RunDirError`."""
    if not isinstance(data, dict) or "format_version" not in data:
        raise RunDirError(f"{path} is not a metarl file (no format_version)")
    if data["format_version"] != FORMAT_VERSION:
        raise RunDirError(
            f"{path} has format version {data['format_version']} (metarl {data.get('metarl_version', '?')}); this "
            f"metarl reads version {FORMAT_VERSION}: use the metarl version that wrote it"
        )
    return data


def read_run(run_dir: Path) -> tuple[dict[str, Any], FamilySpec]:
    """config.json (checked: format version, algo, config) and family.json of `run_dir`."""
    if not run_dir.is_dir():
        why = "it is a file" if run_dir.exists() else "it does not exist"
        raise RunDirError(f"{run_dir} is not a run directory: {why} (expected runs/<family>__<algo>__<seed>__<time>)")
    config = check_format(read_json(run_dir / "config.json"), run_dir / "config.json")
    if not isinstance(config.get("algo"), str) or not isinstance(config.get("config"), dict):
        raise RunDirError(f"{run_dir / 'config.json'} is corrupt (needs 'algo' and 'config')")
    path = run_dir / "family.json"
    data = read_json(path)  # its RunDirError names the path already: not wrapped again (issue 12)
    try:
        spec = FamilySpec.from_json(json.dumps(data))
    except (TypeError, ValueError) as err:
        raise RunDirError(f"{path} is corrupt ({err})") from None
    return config, spec


_LOAD_ERRORS = (RuntimeError, EOFError, OSError, ValueError, pickle.UnpicklingError, ImportError, AttributeError)
"""What `torch.load` raises on a file that is not a readable checkpoint (ImportError/AttributeError: a pickled class
that no longer exists)."""


def load_checkpoint(path: Path) -> dict[str, Any]:
    """A checkpoint's payload, checked for format version and the keys the driver reads."""
    if not path.is_file():
        raise RunDirError(f"{path} is missing")
    try:
        payload = torch.load(path, weights_only=False, map_location="cpu")
    except _LOAD_ERRORS as err:  # measured on torn, empty and foreign files: RuntimeError, EOFError, UnpicklingError
        raise RunDirError(f"{path} is corrupt or not a checkpoint ({type(err).__name__}: {err})") from None
    check_format(payload, path)
    missing = {"algo", "family_spec", "policy_state", "state"} - set(payload)
    if missing or not isinstance(payload["state"], dict) or "params" not in payload["state"]:
        raise RunDirError(f"{path} is corrupt (missing {sorted(missing) or ['state.params']})")
    return payload


def check_checkpoint(payload: dict[str, Any], path: Path, algo: str, spec: FamilySpec,
                     policy: torch.nn.Module) -> None:
    """Raise `RunDirError` unless the checkpoint matches the run: algorithm, family (id, kwargs, horizon), and every
    parameter's shape in the policy the config builds; and its parameters are finite."""
    if payload["algo"] != algo:
        raise RunDirError(f"{path} was written by {payload['algo']!r}, but the run's config.json says {algo!r}")
    saved = FamilySpec.from_json(payload["family_spec"])
    if (saved.id, dict(saved.kwargs), saved.horizon) != (spec.id, dict(spec.kwargs), spec.horizon):
        raise RunDirError(f"{path} was trained on family {saved.id} {dict(saved.kwargs)} H={saved.horizon}, but "
                          f"the run is {spec.id} {dict(spec.kwargs)} H={spec.horizon}")
    expected = {name: tuple(p.shape) for name, p in policy.named_parameters()}
    params = payload["state"]["params"]
    if set(params) != set(expected):
        raise RunDirError(f"{path} holds parameters {sorted(params)}, the config's policy has {sorted(expected)}")
    for name, shape in expected.items():
        if tuple(params[name].shape) != shape:
            raise RunDirError(f"{path}: parameter {name} has shape {list(params[name].shape)} but the config's "
                              f"policy needs {list(shape)} (policy.hidden or the family's dimensions differ)")
        if not bool(torch.isfinite(params[name]).all()):
            raise RunDirError(f"{path}: parameter {name} is not finite")


def remove_stale_temp_files(run_dir: Path) -> list[Path]:
    """Delete what killed writes left behind: `.<name>.*.tmp` files of atomic writes and unpublished evaluation sets
    (`.eval.*`); returns them. Call it holding the run directory's lock: then nothing else is writing them."""
    stale = sorted(run_dir.glob(".*.tmp"))
    with storage_errors(f"clean up {run_dir}"):
        for path in stale:
            if path.is_dir() and not path.is_symlink():
                shutil.rmtree(path)
            else:
                path.unlink(missing_ok=True)
        names = {"eval"} | {set_name_of(p) for p in run_dir.glob(".eval-*.*") if p.is_dir()} - {None}
        for name in sorted(names):  # type: ignore[type-var]
            stale += remove_stale_sets(run_dir, name)  # type: ignore[arg-type]
    return stale


RUN_ONLY = ("run.iterations", "run.checkpoint_every", "run.tensorboard", "run.threads", "run.runs_dir")
"""Config fields a resume may change (extend the run, write checkpoints more often, ...): none changes what the
iterations compute. Every other difference between config.json and the checkpoint's config is refused."""


def check_same_config(config: dict[str, Any], saved: dict[str, Any], config_path: Path, path: Path) -> None:
    """Raise `RunDirError` unless `config` (config.json's) equals `saved` (the checkpoint's), both as
    `config_to_dict` writes them with defaults filled in, apart from `RUN_ONLY` fields (issue 12: an edited
    meta_batch_size changed a resumed run)."""
    ours, theirs = flat_dict(config), flat_dict(saved)
    differ = sorted(k for k in set(ours) | set(theirs) if k not in RUN_ONLY and ours.get(k, ...) != theirs.get(k, ...))
    if differ:
        shown = ", ".join(f"{k} {ours.get(k, '(absent)')!r} vs {theirs.get(k, '(absent)')!r}" for k in differ[:3])
        raise RunDirError(f"{config_path} differs from the config {path.name} was trained with ({shown}): a run "
                          f"continues with its own config; only {', '.join(RUN_ONLY)} may change")


def flat_dict(config: dict[str, Any], prefix: str = "") -> dict[str, Any]:
    """A nested config dict as dotted keys ({"trpo": {"max_kl": …}} -> {"trpo.max_kl": …}); family kwargs stay one
    value."""
    out: dict[str, Any] = {}
    for key, value in config.items():
        if isinstance(value, dict) and key != "family_kwargs":
            out.update(flat_dict(value, f"{prefix}{key}."))
        else:
            out[f"{prefix}{key}"] = value
    return out


def metrics_before(path: Path, iteration: int, from_zero: bool = False) -> bytes | None:
    """The content of metrics.jsonl with the records of iterations 1 .. `iteration` only (None: no file).

    Records after the checkpoint, a line torn by a kill and lines that are not records are dropped: the resumed run
    writes them again. But each of the `iteration` records before the checkpoint must be there, in order: a gap
    there (a line corrupted or lost) cannot be recomputed from the checkpoint, so the resume refuses (issue 12).
    `from_zero`: the run was written before issue 13, with records numbered 0 .. `iteration` - 1; they come back
    renumbered from 1, as the resumed run continues them."""
    from metarl.logger import parse_metrics

    if not path.exists():
        if iteration == 0:
            return None
        raise RunDirError(f"{path} is missing, but {path.parent / 'checkpoint.pt'} is at iteration {iteration}: the "
                          f"records of iterations 1-{iteration} cannot be recomputed from it")
    with storage_errors(f"read {path}"):
        data = path.read_bytes()
    records, bad = parse_metrics(data)
    shift = 1 if from_zero else 0
    kept = [(number, record) for number, record in records if record["iteration"] + shift <= iteration]
    iterations = [record["iteration"] + shift for _, record in kept]
    if iterations != list(range(1, iteration + 1)):
        missing = sorted(set(range(1, iteration + 1)) - set(iterations))
        what = (f"iteration {missing[0] - shift} is missing" if missing
                else f"iterations are out of order ({_first_disorder(iterations)})")
        line = next((f"; line {n}: {why}" for n, why in bad), "")
        raise RunDirError(f"{path}: {what} before {path.parent / 'checkpoint.pt'}'s iteration {iteration}{line}; a "
                          "resume cannot recompute it from the checkpoint: restore the file, or start the run again")
    if from_zero:
        return b"".join(json.dumps({**record, "iteration": record["iteration"] + 1}).encode() + b"\n"
                        for _, record in kept)
    lines = data.split(b"\n")
    return b"".join(lines[number - 1] + b"\n" for number, _ in kept)


def _first_disorder(iterations: list[int]) -> str:
    for i, value in enumerate(iterations):
        if value != i + 1:
            return f"record {i + 1} is iteration {value}"
    return f"{len(iterations)} records"


# ----------------------------------------------------------------------------------------------- opening a run
def find_algorithm(name: str) -> Algorithm:
    """The row for `name` in `ALGORITHMS` or the baselines' table (`metarl.baselines.BASELINES`)."""
    from metarl.algos import ALGORITHMS
    from metarl.baselines import BASELINES

    table = {**ALGORITHMS, **BASELINES}
    if name not in table:
        raise RunDirError(f"unknown algorithm {name!r}; this metarl has {', '.join(table)}")
    return table[name]


@dataclasses.dataclass(frozen=True)
class OpenedRun:
    """A run directory read and checked: its config, family, a policy built from the config, one checkpoint."""

    run_dir: Path
    algo: str
    algorithm: Algorithm
    cfg: Any
    spec: registry.FamilySpec
    family: TaskFamily
    policy: nn.Module
    checkpoint: Path
    payload: dict[str, Any]

    @property
    def params(self) -> Params:
        return self.payload["state"]["params"]


def open_run(run_dir: Path, checkpoint: str = "checkpoint.pt") -> OpenedRun:
    """Read and check `run_dir` and its `checkpoint`; raises `RunDirError` (one line) on anything unusable: a config
    that is not strictly valid or differs from the checkpoint's (run.iterations and other `RUN_ONLY` fields may)."""
    from metarl.config import ConfigError, config_from_dict

    run_dir = Path(run_dir)
    config, spec = read_run(run_dir)
    algorithm = find_algorithm(config["algo"])
    try:
        cfg = config_from_dict(algorithm.config_type, config["config"])
    except ConfigError as err:
        raise RunDirError(f"{run_dir / 'config.json'} does not hold a valid {config['algo']} config: {err}") from None
    if cfg.family != spec.id:
        raise RunDirError(f"{run_dir}: config.json trains {cfg.family} but family.json is {spec.id}")
    try:
        family = registry.make(spec)
    except ImportError as err:  # a user's family: its module must be importable
        raise RunDirError(f"cannot build family {spec.id} of {run_dir} ({err}); run metarl where that module is "
                          "importable (its directory, PYTHONPATH, or its installed package)") from None
    except registry.UnknownFamilyError as err:  # one it refers to by id (an oracle's base family): not imported
        raise RunDirError(f"cannot build family {spec.id} of {run_dir}: {err}") from None
    except (TypeError, ValueError) as err:  # kwargs the family refuses (a hand-edited family.json)
        raise RunDirError(f"{run_dir / 'family.json'}: family {spec.id} refuses its kwargs ({err})") from None
    policy = algorithm.build_policy(cfg, family)
    if checkpoint == "checkpoint.pt" and not (run_dir / checkpoint).exists():
        raise RunDirError(f"{run_dir / checkpoint} is missing: nothing to continue from (a run directory made by this "
                          "metarl has one from iteration 0 on; an older metarl wrote its first after "
                          "run.checkpoint_every iterations): start the run again")
    opened = OpenedRun(run_dir, config["algo"], algorithm, cfg, spec, family, policy, run_dir / checkpoint, {})
    return dataclasses.replace(opened, payload=read_checkpoint(opened, opened.checkpoint))


def read_checkpoint(run: OpenedRun, path: Path) -> dict[str, Any]:
    """The checkpoint at `path`, checked against `run`: algorithm, family, parameter shapes, finite parameters, and
    a config equal to the run's (RUN_ONLY fields aside)."""
    from metarl.config import ConfigError, config_from_dict

    payload = load_checkpoint(path)
    check_checkpoint(payload, path, run.algo, run.spec, run.policy)
    try:
        saved = config_from_dict(run.algorithm.config_type, payload.get("config"))
    except ConfigError as err:
        raise RunDirError(f"{path} is corrupt (its config: {err})") from None
    check_same_config(config_to_dict(run.cfg), config_to_dict(saved), run.run_dir / "config.json", path)
    return payload


class Interrupted(KeyboardInterrupt):
    """Ctrl-C or SIGTERM stopped a command; `message` says what was kept and how to continue."""

    def __init__(self, message: str) -> None:
        super().__init__(message)
        self.message = message
