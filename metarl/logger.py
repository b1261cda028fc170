"""Metrics to `metrics.jsonl` and TensorBoard, through one `Logger` passed explicitly (never a global).

Namespaces: `meta/return_pre`, `meta/return_post_k`, `outer/kl`, `outer/surrogate`, `perf/steps_per_s`, ...
Keys under `perf/` are wall-clock measurements; everything else is a deterministic function of the seed.
"""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any, Protocol


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
        self._file.write(json.dumps(record) + "\n")
        self._file.flush()
        if self._writer is not None:
            for key, value in metrics.items():
                self._writer.add_scalar(key, float(value), step)

    def close(self) -> None:
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
    """All records of a run's metrics.jsonl, in order."""
    path = Path(run_dir) / "metrics.jsonl"
    with path.open(encoding="utf-8") as f:
        return [json.loads(line) for line in f if line.strip()]
