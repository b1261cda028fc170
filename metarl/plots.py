"""Figures: adaptation curves from `eval.json` and training curves from `metrics.jsonl`, for one run or many.

`metarl plot RUN_DIR [RUN_DIR ...]` overlays runs, algorithms and baselines: the left panel is the return after
0..k adaptation steps (mean and 95% CI over the test tasks; only runs with an evaluation: the latest, `eval.json`, or
the one `--eval NAME` names), the right one the training curve (post-adaptation return solid, pre-adaptation dashed,
validation return as dots; only runs with metrics). Runs are labelled "algo, family, seed N"; runs that share a label
get what tells them apart (the config fields that differ, the evaluation's name, else the directory). Legends are
measured after layout and the figure grows until they fit (issue 13: long labels were clipped). Figures are built on
matplotlib's Agg canvas directly, without pyplot's global state or backend switch.
"""

from __future__ import annotations

import dataclasses
import io
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any, Literal

import tyro

from metarl.runs import RunDirError, atomic_write_bytes, check_format, flat_dict, read_json

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
    """What one run contributes to a figure: its label, evaluation record (or None) and metrics records; `config`
    (the run's config.json "config") and `source` (the directory or eval file) tell runs with one label apart."""

    label: str
    evaluation: dict[str, Any] | None = None
    training: Sequence[dict[str, Any]] = ()
    config: dict[str, Any] | None = None
    source: str = ""


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
    fit_legends(fig)
    return fig


def fit_legends(fig: Figure, margin: float = 0.15, rounds: int = 8) -> None:
    """Grow `fig` (after falling back to one legend column) until every legend lies inside it, measured after
    layout: a legend is never clipped, whatever the labels' length or number (issue 13)."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg

    FigureCanvasAgg(fig)
    for _ in range(rounds):
        fig.canvas.draw()
        renderer = fig.canvas.get_renderer()  # type: ignore[attr-defined]
        boxes = [legend.get_window_extent(renderer) for legend in legends(fig)]
        outer = fig.bbox
        if all(inside(box, outer) for box in boxes):
            return
        wide = max(box.width for box in boxes) - outer.width
        if wide > 0:
            for legend in fig.legends:
                legend.set_ncols(1)  # one label per row before a wider figure
        tall = sum(max(0.0, outer.y0 - box.y0) + max(0.0, box.y1 - outer.y1) for box in boxes)
        width, height = fig.get_size_inches()
        fig.set_size_inches(width + max(wide, 0.0) / fig.dpi + margin, height + tall / fig.dpi + margin)


def legends(fig: Figure) -> list[Any]:
    """The figure's own legends and those of its axes."""
    return [*fig.legends, *(ax.get_legend() for ax in fig.axes if ax.get_legend() is not None)]


def inside(box: Any, outer: Any, tolerance: float = 0.5) -> bool:
    """Whether bounding box `box` lies within `outer` (display pixels, `tolerance` for rounding)."""
    return (box.x0 >= outer.x0 - tolerance and box.y0 >= outer.y0 - tolerance
            and box.x1 <= outer.x1 + tolerance and box.y1 <= outer.y1 + tolerance)


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
    """Overlay runs, algorithms and baselines: adaptation curves (evaluations) and training curves (metrics.jsonl)."""

    run_dirs: Annotated[tuple[Path, ...], tyro.conf.Positional]
    """run directories (or evaluation .json files)"""
    out: Path = Path("plot.png")
    """output PNG"""
    x: Literal["env_steps", "iteration"] = "env_steps"
    """x-axis of the training curves (env steps compare algorithms with different samples per iteration)"""
    eval: str | None = None
    """which evaluation of each run directory: its name as `metarl eval` wrote it (e.g. eval-T40-E10-k3, or
    T40-E10-k3); default: the latest (eval.json)"""


def plot_runs(args: PlotArgs) -> Path:
    """Read every run (checked), label them, draw, and write `args.out`; raises RunDirError on unusable input."""
    if not args.run_dirs:
        raise RunDirError("name at least one run directory")
    runs = distinct_labels([read_curves(path, args.eval) for path in args.run_dirs])
    return save_figure(comparison_figure(runs, args.x), args.out)


def read_curves(path: Path, eval_name: str | None = None) -> RunCurves:
    """A run directory's evaluation (the latest, or `eval_name`) and metrics, or an evaluation .json on its own."""
    if path.is_file() and path.suffix == ".json":
        record = read_eval(path)
        config = _config(path.parent)
        return RunCurves(_record_label(record), record, config=config, source=path.stem)
    if not path.is_dir():
        why = "it is not an evaluation .json file" if path.exists() else "it does not exist"
        raise RunDirError(f"{path} is not a run directory: {why}")
    records = read_training(path)
    evaluation = None
    if eval_name is not None:
        name = eval_name if eval_name.startswith("eval") else f"eval-{eval_name}"
        if not (path / f"{name}.json").exists():
            have = ", ".join(evaluations(path)) or "none"
            raise RunDirError(f"{path} has no evaluation {name} (it has: {have}); `metarl eval {path}` with its "
                              "options writes one")
        evaluation = read_eval(path / f"{name}.json")
    elif (path / "eval.json").exists():
        evaluation = read_eval(path / "eval.json")
    if evaluation is None and not records:
        raise RunDirError(f"{path} has neither eval.json nor metrics: run `metarl eval {path}` first")
    config = _config(path)
    label = _record_label(evaluation) if config is None and evaluation else _label(path, config)
    return RunCurves(label, evaluation, records, config, source=str(evaluation.get("name", path.name))
                     if evaluation else path.name)


def evaluations(run_dir: Path) -> list[str]:
    """The names of a run directory's evaluations (eval-T40-E10-k3, ...), sorted."""
    return sorted(p.stem for p in run_dir.glob("eval-*.json"))


def _config(run_dir: Path) -> dict[str, Any] | None:
    try:
        config = read_json(run_dir / "config.json")
        return config if isinstance(config.get("config"), dict) else None
    except (RunDirError, AttributeError):
        return None


def _label(path: Path, config: dict[str, Any] | None) -> str:
    """"<algo>, <family>, seed <seed>" from the run's config.json, else the directory name."""
    from metarl.runs import run_label

    try:
        assert config is not None
        return run_label(config["algo"], config["config"]["family"], config["config"]["run"]["seed"])
    except (AssertionError, KeyError, TypeError):
        return path.name


def _record_label(record: dict[str, Any]) -> str:
    from metarl.runs import run_label

    try:
        return run_label(record["algo"], record["family_spec"]["id"], record["protocol"]["seed"])
    except (KeyError, TypeError):
        return str(record.get("label", "evaluation"))


IGNORED = ("run.runs_dir", "run.threads", "run.tensorboard", "run.checkpoint_every")
"""Config fields that never tell runs apart in a legend (they do not change the numbers)."""


def distinct_labels(runs: Sequence[RunCurves]) -> list[RunCurves]:
    """Runs that share a label get what tells them apart: the config fields in which they differ (at most three),
    else the evaluation's name, else the directory name."""
    out = list(runs)
    for label in {r.label for r in runs}:
        group = [i for i, r in enumerate(runs) if r.label == label]
        if len(group) < 2:
            continue
        flats = [flat_dict((runs[i].config or {}).get("config", {})) for i in group]
        keys = sorted(k for k in set().union(*flats) if k not in IGNORED and len({repr(f.get(k)) for f in flats}) > 1)
        for i, flat in zip(group, flats, strict=True):
            if keys:
                detail = ", ".join(f"{k}={flat.get(k)}" for k in keys[:3])
            else:
                detail = runs[i].source
            out[i] = dataclasses.replace(runs[i], label=f"{label} ({detail})")
    labels = [r.label for r in out]
    return [dataclasses.replace(r, label=f"{r.label} [{r.source}]") if labels.count(r.label) > 1 else r for r in out]
