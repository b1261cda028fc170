"""Metrics to `metrics.jsonl` and TensorBoard, through one `Logger` passed explicitly (never a global).

Namespaces: `meta/return_pre`, `meta/return_post_k`, `outer/kl`, `outer/surrogate`, `perf/steps_per_s`, ...
Keys under `perf/` are wall-clock measurements; everything else is a deterministic function of the seed.
"""

from __future__ import annotations

import json
import math
import os
from pathlib import Path
from typing import Any, Protocol

from metarl.storage import storage_errors


class Logger(Protocol):
    """Where training reports go."""

    def log(self, step: int, metrics: dict[str, float]) -> None: ...
    def close(self) -> None: ...


class NullLogger:
    """Discards everything (library use without a run directory)."""

    def log(self, step: int, metrics: dict[str, float]) -> None:
        pass

    def close(self) -> None:
        pass


def _finite_or_none(value: float) -> float | None:
    return value if math.isfinite(value) else None


class RunLogger:
    """Appends one JSON object per step to `<run_dir>/metrics.jsonl` and mirrors scalars to TensorBoard."""

    def __init__(
        self,
        run_dir: Path,
        tensorboard: bool = True,
        hparams: dict[str, Any] | None = None,
        purge_step: int | None = None,
    ) -> None:
        self.path = Path(run_dir) / "metrics.jsonl"
        with storage_errors(f"write {self.path}"):
            self._file = self.path.open("a", encoding="utf-8")
        self._writer = None
        if tensorboard:
            from torch.utils.tensorboard import SummaryWriter  # imported lazily: tensorboard is slow to import

            # purge_step: a resumed run hides the events logged after its checkpoint (they are recomputed)
            self._writer = SummaryWriter(log_dir=str(run_dir), purge_step=purge_step)
            if hparams and purge_step is None:  # once per run: a resumed run already has them
                table = "\n".join(f"|{k}|{v}|" for k, v in sorted(hparams.items()))
                self._writer.add_text("hyperparameters", f"|param|value|\n|-|-|\n{table}")
                _write_hparams(self._writer, hparams)

    def log(self, step: int, metrics: dict[str, float]) -> None:
        record = {"iteration": step, **{k: _finite_or_none(float(v)) for k, v in metrics.items()}}
        with storage_errors(f"write {self.path}"):
            self._file.write(json.dumps(record) + "\n")
            self._file.flush()
        if self._writer is not None:
            for key, value in metrics.items():
                self._writer.add_scalar(key, float(value), step)

    def sync(self) -> None:
        """Make the records so far durable: called before a checkpoint, so that after a power loss no checkpoint is
        ahead of the metrics (a resume cannot recompute records before its checkpoint)."""
        with storage_errors(f"write {self.path}"):
            self._file.flush()
            os.fsync(self._file.fileno())

    def close(self) -> None:
        with storage_errors(f"write {self.path}"):
            self._file.close()
        if self._writer is not None:
            self._writer.close()


HPARAM_METRICS = ("meta/return_pre", "meta/return_post_1", "val/return_pre", "val/return_post")
"""Scalars the TensorBoard HPARAMS tab shows next to each run's config (rows for a run lacking one stay empty)."""


def _write_hparams(writer: Any, hparams: dict[str, Any]) -> None:
    """The config in TensorBoard's HPARAMS tab, in this run's own event file.

    `SummaryWriter.add_hparams` would write it to a new sub-run named by the time; the summaries it builds go here
    instead, so the tab lists the run itself and reads its metrics from the scalars logged during training.
    """
    from torch.utils.tensorboard.summary import hparams as hparams_summary

    values = {k: v if isinstance(v, (bool, int, float, str)) else str(v) for k, v in hparams.items()}
    for summary in hparams_summary(values, dict.fromkeys(HPARAM_METRICS, 0.0)):
        writer.file_writer.add_summary(summary)


def read_metrics(run_dir: Path | str) -> list[dict[str, Any]]:
    """All records of a run's metrics.jsonl, in order; `RunDirError` on a line that is not a record (a last line
    without its newline, torn by a kill or still being written, is left out)."""
    from metarl.runs import RunDirError

    path = Path(run_dir) / "metrics.jsonl"
    if not path.is_file():
        raise RunDirError(f"{path} is missing")
    records, bad = parse_metrics(path.read_bytes())
    if bad:
        number, why = bad[0]
        raise RunDirError(f"{path} line {number} is not a metrics record ({why})")
    return [record for _, record in records]


def parse_metrics(data: bytes) -> tuple[list[tuple[int, dict[str, Any]]], list[tuple[int, str]]]:
    """metrics.jsonl content -> ([(line number, record)], [(line number, why it is not a record)]).

    A record is a JSON object with a non-negative integer `iteration` whose other values are numbers or null
    (`RunLogger.log`'s output). A last line without its newline (torn by a kill, or still being written) is
    neither: the caller recomputes or ignores it.
    """
    lines = data.split(b"\n")
    if lines and lines[-1] == b"":
        lines.pop()  # the newline after the last complete record
    elif lines:
        lines.pop()  # torn
    records, bad = [], []
    for number, line in enumerate(lines, 1):
        if not line.strip():
            continue
        why = None
        try:
            record = json.loads(line.decode("utf-8"))
        except (UnicodeDecodeError, json.JSONDecodeError) as err:
            why = f"{type(err).__name__}: {err}"
        else:
            why = record_problem(record)
        if why is None:
            records.append((number, record))
        else:
            bad.append((number, why))
    return records, bad


def record_problem(record: Any) -> str | None:
    """Why `record` is not a metrics record, or None."""
    if not isinstance(record, dict):
        return f"a JSON {type(record).__name__}, not an object"
    iteration = record.get("iteration")
    if not isinstance(iteration, int) or isinstance(iteration, bool) or iteration < 0:
        return f"iteration is {iteration!r}, not a non-negative integer"
    for key, value in record.items():
        if key != "iteration" and value is not None and (isinstance(value, bool)
                                                         or not isinstance(value, (int, float))):
            return f"{key} is {value!r}, not a number"
    return None
