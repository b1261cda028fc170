"""Run directories and checkpoints.

A run lives in `runs/<family>__<algo>__<seed>__<unixtime>/` with `config.json` (algorithm, config, metarl version),
`family.json` (the FamilySpec), `metrics.jsonl`, TensorBoard events and `checkpoint.pt`. Files are written atomically
(temporary file + rename) so a killed run never leaves a torn checkpoint.
"""

from __future__ import annotations

import dataclasses
import json
import os
import tempfile
import time
from pathlib import Path
from typing import Any

import torch

from metarl.registry import FamilySpec

FORMAT_VERSION = 1
"""Bumped when the run-directory layout or checkpoint contents change incompatibly."""


def atomic_write_bytes(path: Path, data: bytes) -> None:
    """Write `data` to `path` so readers see either the old file or the complete new one."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def atomic_write_json(path: Path, obj: Any) -> None:
    atomic_write_bytes(path, (json.dumps(obj, indent=2, sort_keys=True) + "\n").encode())


def config_to_dict(config: Any) -> dict[str, Any]:
    """A frozen config dataclass as JSON-friendly nested dicts (tuples become lists)."""
    return json.loads(json.dumps(dataclasses.asdict(config)))


def new_run_dir(runs_dir: str | Path, family: str, algo: str, seed: int) -> Path:
    """Create `runs_dir/<family>__<algo>__<seed>__<unixtime>` (with a suffix if that name is taken)."""
    base = Path(runs_dir) / f"{family.replace('/', '_')}__{algo}__{seed}__{int(time.time())}"
    path, n = base, 1
    while path.exists():
        path, n = base.with_name(f"{base.name}_{n}"), n + 1
    path.mkdir(parents=True)
    return path


def write_run_files(run_dir: Path, algo: str, config: Any, spec: FamilySpec) -> None:
    """config.json and family.json at the start of a run."""
    from metarl import __version__

    atomic_write_json(run_dir / "config.json", {"format_version": FORMAT_VERSION, "metarl_version": __version__,
                                                "algo": algo, "config": config_to_dict(config)})
    atomic_write_bytes(run_dir / "family.json", (spec.to_json() + "\n").encode())


def save_checkpoint(path: Path, state: dict[str, Any]) -> None:
    """torch.save `state` atomically."""
    import io

    buffer = io.BytesIO()
    torch.save(state, buffer)
    atomic_write_bytes(path, buffer.getvalue())
