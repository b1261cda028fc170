"""Figures: adaptation curves from `eval.json` and training curves from `metrics.jsonl`, for one run or many.

`metarl plot RUN_DIR [RUN_DIR ...]` overlays runs, algorithms and baselines: the left panel is the return after
0..k adaptation steps (mean and 95% CI over the test tasks; only runs with an `eval.json`), the right one the
training curve (post-adaptation return solid, pre-adaptation dashed, validation return as dots; only runs with
metrics). Figures are built on matplotlib's Agg canvas directly, without pyplot's global state or backend switch.
"""

from __future__ import annotations

import dataclasses
import io
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any, Literal

import tyro

from metarl.runs import RunDirError, atomic_write_bytes, check_format, read_json

if TYPE_CHECKING:  # matplotlib is imported when a figure is drawn: `metarl families` need not pay for it
    from matplotlib.axes import Axes
    from matplotlib.figure import Figure


# ----------------------------------------------------------------------------------------------- reading
def read_eval(path: Path) -> dict[str, Any]:
    """An eval.json (checked: format version, kind, summary)."""
    record = check_format(read_json(path), path)
    if record.get("kind") != "eval" or not isinstance(record.get("summary"), list) or not record["summary"]:
        raise RunDirError(f"{path} is not an evaluation (run `metarl eval RUN_DIR` to write one)")
    return record


def read_training(run_dir: Path) -> list[dict[str, Any]]:
    """metrics.jsonl records (a torn last line, left by a killed run, is skipped); `RunDirError` on a line that is
    not a record."""
    from metarl.logger import read_metrics

    if not (run_dir / "metrics.jsonl").is_file():
        return []
    return read_metrics(run_dir)


def training_curves(records: Sequence[dict[str, Any]], x: str = "env_steps") -> dict[str, tuple[list, list]]:
    """{"post": (xs, ys), "pre": ..., "val": ...}: the last `meta/return_post_k`, `meta/return_pre` and
    `val/return_post` against `perf/env_steps` (x="env_steps") or the iteration, skipping missing/null values."""
    post_keys = sorted({k for r in records for k in r if k.startswith("meta/return_post_")},
                       key=lambda k: int(k.rsplit("_", 1)[1]))
    keys = {"post": post_keys[-1] if post_keys else None, "pre": "meta/return_pre", "val": "val/return_post"}
    curves: dict[str, tuple[list, list]] = {}
    for name, key in keys.items():
        points = [(r.get("perf/env_steps") if x == "env_steps" else r["iteration"], r.get(key)) for r in records]
        points = [(a, b) for a, b in points if a is not None and b is not None]
        if key is not None and points:
            curves[name] = ([a for a, _ in points], [b for _, b in points])
    return curves


# ----------------------------------------------------------------------------------------------- drawing
@dataclass(frozen=True)
class RunCurves:
    """What one run contributes to a figure: its label, eval.json record (or None) and metrics records."""

    label: str
    evaluation: dict[str, Any] | None = None
    training: Sequence[dict[str, Any]] = ()


def plot_adaptation(ax: Axes, record: dict[str, Any], color: str, label: str) -> None:
    """Mean return after 0..k steps with its 95% CI band."""
    summary = record["summary"]
    steps = [s["step"] for s in summary]
    ax.plot(steps, [_num(s["mean"]) for s in summary], marker="o", color=color, label=label)
    ax.fill_between(steps, [_num(s["ci_low"]) for s in summary], [_num(s["ci_high"]) for s in summary],
                    color=color, alpha=0.2, linewidth=0)


def plot_training(ax: Axes, records: Sequence[dict[str, Any]], color: str, label: str, x: str = "env_steps") -> None:
    """Post-adaptation return solid, pre-adaptation dashed, validation return as dots."""
    curves = training_curves(records, x)
    styles = {"post": {"linestyle": "-"}, "pre": {"linestyle": "--"}, "val": {"linestyle": "none", "marker": "o",
                                                                             "markersize": 3}}
    for name, style in styles.items():
        if name in curves:
            ax.plot(*curves[name], color=color, label=label, **style)  # type: ignore[arg-type]


def _num(value: float | None) -> float:
    return float("nan") if value is None else float(value)


def comparison_figure(runs: Sequence[RunCurves], x: str = "env_steps", title: str = "") -> Figure:
    """Adaptation curves (left, runs with an evaluation) and training curves (right, runs with metrics); one color
    per run in both panels and one legend of runs below them."""
    from matplotlib.figure import Figure
    from matplotlib.lines import Line2D

    evals = [(i, r) for i, r in enumerate(runs) if r.evaluation is not None]
    trains = [(i, r) for i, r in enumerate(runs) if r.training]
    panels = int(bool(evals)) + int(bool(trains))
    if panels == 0:
        raise ValueError("nothing to plot: no evaluation and no training metrics")
    fig = Figure(figsize=(6 * panels, 4.2 + 0.25 * len(runs)), layout="constrained")
    axes = fig.subplots(1, panels, squeeze=False)[0]
    if evals:
        ax = axes[0]
        for i, r in evals:
            plot_adaptation(ax, r.evaluation or {}, f"C{i % 10}", r.label)
        ax.set(title="few-shot adaptation (mean, 95% CI over test tasks)", xlabel="adaptation steps",
               ylabel="average return")
        ax.set_xticks(sorted({s["step"] for _, r in evals for s in (r.evaluation or {})["summary"]}))
        ax.grid(alpha=0.3)
    if trains:
        ax = axes[-1]
        for i, r in trains:
            plot_training(ax, r.training, f"C{i % 10}", r.label, x)
        ax.set(title="training", xlabel="environment steps" if x == "env_steps" else "iteration",
               ylabel="average return")
        ax.grid(alpha=0.3)
        styles = [Line2D([], [], color="gray", linestyle="-"), Line2D([], [], color="gray", linestyle="--"),
                  Line2D([], [], color="gray", linestyle="none", marker="o", markersize=3)]
        ax.legend(styles, ["post-adaptation", "pre-adaptation", "validation (post)"], fontsize="small")
    handles = [Line2D([], [], color=f"C{i % 10}", marker="o") for i in range(len(runs))]
    fig.legend(handles, [r.label for r in runs], loc="outside lower center", ncols=min(2, len(runs)),
               fontsize="small")
    if title:
        fig.suptitle(title)
    return fig


def adaptation_figure(records: Sequence[dict[str, Any]], title: str = "") -> Figure:
    """Adaptation curves of eval records (eval.png: one record, titled with its label)."""
    runs = [RunCurves(r.get("label", f"run {i}"), r) for i, r in enumerate(records)]
    return comparison_figure(runs, title=title or (records[0].get("label", "") if len(records) == 1 else ""))


def save_figure(fig: Figure, path: Path, dpi: int = 120) -> Path:
    """PNG, written atomically."""
    atomic_write_bytes(path, figure_png(fig, dpi))
    return path


def figure_png(fig: Figure, dpi: int = 120) -> bytes:
    from matplotlib.backends.backend_agg import FigureCanvasAgg

    buffer = io.BytesIO()
    FigureCanvasAgg(fig)  # attaches the Agg canvas: no pyplot, no global backend
    fig.savefig(buffer, format="png", dpi=dpi)
    return buffer.getvalue()


# ----------------------------------------------------------------------------------------------- the command
@dataclass(frozen=True)
class PlotArgs:
    """Overlay runs, algorithms and baselines: adaptation curves (eval.json) and training curves (metrics.jsonl)."""

    run_dirs: Annotated[tuple[Path, ...], tyro.conf.Positional]
    """run directories (or eval.json files)"""
    out: Path = Path("plot.png")
    """output PNG"""
    x: Literal["env_steps", "iteration"] = "env_steps"
    """x-axis of the training curves (env steps compare algorithms with different samples per iteration)"""


def plot_runs(args: PlotArgs) -> Path:
    """Read every run (checked), label them, draw, and write `args.out`; raises RunDirError on unusable input."""
    if not args.run_dirs:
        raise RunDirError("name at least one run directory")
    runs = [read_curves(path) for path in args.run_dirs]
    labels = [r.label for r in runs]
    runs = [dataclasses.replace(r, label=f"{r.label} [{path.name.split('__', 2)[-1]}]") if labels.count(r.label) > 1
            else r for r, path in zip(runs, args.run_dirs, strict=True)]  # same algorithm twice: seed and time
    return save_figure(comparison_figure(runs, args.x), args.out)


def read_curves(path: Path) -> RunCurves:
    """A run directory's evaluation and metrics (or an eval.json file on its own)."""
    if path.is_file() and path.suffix == ".json":
        record = read_eval(path)
        return RunCurves(str(record.get("label", path.parent.name)), record)
    if not path.is_dir():
        why = "it is not an eval.json file" if path.exists() else "it does not exist"
        raise RunDirError(f"{path} is not a run directory: {why}")
    records = read_training(path)
    evaluation = read_eval(path / "eval.json") if (path / "eval.json").exists() else None
    if evaluation is None and not records:
        raise RunDirError(f"{path} has neither eval.json nor metrics: run `metarl eval {path}` first")
    return RunCurves(_label(path), evaluation, records)


def _label(path: Path) -> str:
    """"<algo> (<family>)" from the run's config.json, else the directory name."""
    try:
        config = read_json(path / "config.json")
        return f"{config['algo']} ({config['config']['family']})"
    except (RunDirError, KeyError, TypeError):
        return path.name
