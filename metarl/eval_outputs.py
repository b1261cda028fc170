"""The files of an evaluation (issue 13): named by protocol, never replacing a different earlier one silently,
published as whole sets; and its table.

`eval_name` gives the set's name, `check_earlier` decides before any work whether an existing set of that name may be
replaced, `write_eval` publishes `<name>.json/.csv/.png` and then the same as the latest, `eval.json/.csv/.png`
(`storage.publish_files`: each set appears whole or not at all).
"""

from __future__ import annotations

import csv
import io
import re
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

from rich.table import Table

from metarl.family import tasks_to_dict
from metarl.runs import FORMAT_VERSION, RunDirError, finite_json_bytes, read_json

if TYPE_CHECKING:
    from metarl.evaluate import EvalResult, StepStats

NAME_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._+-]*$")
DEFAULT_CHUNK_SIZE = 10


def eval_name(protocol: dict[str, Any], out: str | None, default_step_sizes: Sequence[float] | None,
              run_seed: int) -> str:
    """The name of an evaluation's files: `eval-<out>`, or the protocol `eval-T<tasks>-E<episodes>-k<steps>` with
    what else differs from the defaults appended: `-a<step sizes>` (not the algorithm's schedule), `-seed<S>` (not
    the run's seed), `-last` (`--checkpoint last`), `-c<chunk size>` (the rollout noise is drawn chunk by chunk),
    `-<backend>` (not the cpu one, e.g. `-warp-cuda-0`: float32 physics gives slightly different returns),
    `-maml2017` or `-tasks-<file stem>` (`--task-set`)."""
    if out is not None:
        return out if out.startswith("eval-") else f"eval-{out}"
    p = protocol
    parts = [f"T{p['tasks']}", f"E{p['episodes']}", f"k{p['steps']}"]
    if default_step_sizes is None or [float(a) for a in p["step_sizes"]] != [float(a) for a in default_step_sizes]:
        parts.append("a" + "_".join(f"{a:g}" for a in p["step_sizes"]))
    if p["seed"] != run_seed:
        parts.append(f"seed{p['seed']}")
    if p.get("requested") == "last":
        parts.append("last")
    if p["chunk_size"] != DEFAULT_CHUNK_SIZE:
        parts.append(f"c{p['chunk_size']}")
    if p.get("backend", "cpu") != "cpu":
        parts.append(p["backend"].replace(":", "-"))
    if p.get("task_set") is not None:  # given tasks, not the seeded draw: `maml2017`, or `tasks-<file stem>`
        parts.append(p["task_set"] if p["task_set"] == "maml2017" else f"tasks-{Path(p['task_set']).stem}")
    return "eval-" + "-".join(parts)


def check_earlier(run_dir: Path, name: str, protocol: dict[str, Any], replace: bool) -> str | None:
    """Before evaluating: whether `<name>.json` holds an earlier evaluation this one would replace. None: there is
    none; a note: it is the same evaluation (same checkpoint, iteration and protocol) again. A different one raises
    `EvalExistsError` unless `replace` (then the note says what is replaced)."""
    path = run_dir / f"{name}.json"
    if not path.exists():
        return None
    try:
        earlier = read_json(path).get("protocol", {})
        what = f"{earlier['checkpoint']} at iteration {earlier['iteration']}"
    except (RunDirError, AttributeError, KeyError, TypeError):
        earlier, what = {}, "something unreadable"
    if {k: v for k, v in earlier.items() if k in protocol} == protocol:
        return f"{name}: the same evaluation as before (same checkpoint and protocol), written again"
    if not replace:
        raise EvalExistsError(
            f"{path} holds an earlier evaluation ({what}); this one is of {protocol['checkpoint']} at iteration "
            f"{protocol['iteration']}: keep both with --out NAME, or replace it with --replace")
    return f"{name}: replaced the earlier evaluation ({what})"


class EvalExistsError(RunDirError):
    """An evaluation would replace a different earlier one of the same name."""


def eval_record(result: EvalResult, algo: str, family_spec_json: str, label: str,
                protocol: dict[str, Any]) -> dict[str, Any]:
    """The JSON-friendly content of eval.json."""
    import json

    from metarl import __version__

    return {
        "format_version": FORMAT_VERSION,
        "metarl_version": __version__,
        "kind": "eval",
        "label": label,
        "algo": algo,
        "family_spec": json.loads(family_spec_json),
        "protocol": protocol,
        "tasks": tasks_to_dict(result.tasks),
        "summary": [vars(s) for s in result.stats],
        "per_task": result.per_task.tolist(),
        "returns": result.returns.tolist(),
        "env_steps": result.env_steps,
    }


def write_eval(run_dir: Path, record: dict[str, Any], result: EvalResult, name: str = "eval") -> dict[str, Path]:
    """<name>.json, .csv and .png in `run_dir`, replaced together (`storage.publish_files`), then the same as the
    latest evaluation eval.json, .csv, .png; returns the paths of the first set. The caller holds the run
    directory's lock."""
    from metarl.plots import adaptation_figure, figure_png
    from metarl.storage import publish_files

    data = {"json": finite_json_bytes({**record, "name": name}), "csv": eval_csv(result).encode(),
            "png": figure_png(adaptation_figure([record]))}  # everything rendered before anything is written
    for set_name in dict.fromkeys([name, "eval"]):
        paths = publish_files(run_dir, set_name, {f"{set_name}.{kind}": value for kind, value in data.items()})
        if set_name == name:
            out = {kind: paths[f"{name}.{kind}"] for kind in data}
    return out


def eval_csv(result: EvalResult) -> str:
    """One row per (step, task): step, step_size, task, the task's parameters, mean and std of the E returns."""
    fields = tasks_to_dict(result.tasks)
    columns: list[str] = []
    for name, values in fields.items():
        width = len(values[0]) if isinstance(values[0], list) else 0
        columns += [f"{name}_{i}" for i in range(width)] if width else [name]
    out = io.StringIO()
    writer = csv.writer(out, lineterminator="\n")
    writer.writerow(["step", "step_size", "task", *columns, "return_mean", "return_std", "episodes"])
    sizes = [None, *result.step_sizes]
    for j in range(result.returns.shape[0]):
        for t in range(result.returns.shape[1]):
            params = [v for values in fields.values()
                      for v in (values[t] if isinstance(values[t], list) else [values[t]])]
            episodes = result.returns[j, t]
            std = float(episodes.std()) if episodes.numel() > 1 else 0.0
            writer.writerow([j, "" if sizes[j] is None else sizes[j], t, *params, float(episodes.mean()), std,
                             episodes.numel()])
    return out.getvalue()


def eval_table(stats: Sequence[StepStats], title: str = "returns after k adaptation steps") -> Table:
    """Pre- vs post-adaptation per step: mean ± SE, 95% CI and the change from step 0."""
    table = Table(title=title)
    for column in ("step", "step size", "return (mean ± SE)", "95% CI", "vs step 0"):
        table.add_column(column, justify="right")
    for s in stats:
        table.add_row("0 (pre)" if s.step == 0 else str(s.step), "" if s.step_size is None else f"{s.step_size:g}",
                      f"{s.mean:.2f} ± {s.se:.2f}", f"[{s.ci_low:.2f}, {s.ci_high:.2f}]",
                      "" if s.step == 0 else f"{s.mean - stats[0].mean:+.2f}")
    return table
