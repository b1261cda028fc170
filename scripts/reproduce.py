"""Reproduce a MAML-paper locomotion result: train with the family's paper preset, evaluate with the paper's protocol
next to the baselines, and publish docs/results/<family>.json, docs/results/<family>.png and docs/results.md.

    python scripts/reproduce.py HalfCheetahVel-v0                        # train 500 iterations, evaluate, baselines
    python scripts/reproduce.py HalfCheetahVel-v0 --from-run runs/HalfCheetahVel-v0__maml__0__<time>
    python scripts/reproduce.py PointNav-v0 --iterations 2 --eval-tasks 2 --set meta_batch_size=4   # a smoke run
    python scripts/reproduce.py --render-only                            # docs/results.md from the JSON files

Protocol (notes/anchors-metarl.md §1.1; `metarl eval`): 40 test tasks from the evaluation seed stream, returns after
0–3 policy-gradient steps (α for the first, α/2 after), E = the training batch's episodes per step, from the run's
best checkpoint (by validation return on held-out tasks, as the paper used its best). Baselines (`metarl baseline`):
`random` (a random initialisation adapted the same way), `pretrained` (joint TRPO on the task distribution),
`oracle` (the same with the task parameters observed: its step-0 return is the ceiling), `ppo` (Stable-Baselines3 PPO
per test task with the same samples). Every method meets the same test tasks. A training run that exists already is
reused with --from-run (and resumed to --iterations if it stopped short); baselines likewise with --baseline-run.
Further seeds of the same training (`--seed-run DIR`, repeatable; the same config but `run.seed`) are evaluated on the
same test tasks: MAML's row then averages each task's return over the seeds (mean ± SE over tasks) and the JSON keeps
every seed's own means under `methods.maml.per_seed`.

The JSON holds `family`, `paper` (the paper's numbers), `methods` → {name: {"mean": [step 0..k], "se": [...]}},
`iterations`, `env_steps`, `wall_s`, `machine`, `commit`, `command`, `seeds`, and the training curve.

For the paper's five families, `paper_tasks` adds a task-by-task comparison: MAML (each task averaged over the seeds),
the random initialisation and the oracle evaluated on the paper's own 40 test tasks with its test script's episodes
and step sizes (`metarl eval --task-set maml2017`; `metarl.maml2017`), next to the paper's per-task returns on the
same tasks, with the paired difference per step and by groups of tasks. `--paper-tasks-only` computes just that
entry for given runs and adds it to a published result.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import os
import platform
import shlex
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt
import numpy as np
import torch

from metarl import baselines, driver, maml2017
from metarl.algos.maml import PRESETS, MAMLConfig
from metarl.config import apply_overrides
from metarl.evaluate import EvalArgs, evaluate_run
from metarl.plots import read_training
from metarl.runs import RunDirError, config_to_dict, flat_dict

ROOT = Path(__file__).resolve().parent.parent
PAPER: dict[str, dict[str, Any]] = {
    # Finn, Abbeel, Levine 2017 (MAML), mean return over 40 test tasks; "maml": before, after 1 (and 2) steps
    "HalfCheetahVel-v0": {"maml": [-129.5, -78.6], "oracle": -54.5},
    "HalfCheetahDir-v0": {"maml": [-50.7, 293.2], "oracle": 442.7},
    "AntVel-v0": {"maml": [30.6, 96.7], "oracle": 107.9},
    "AntDir-v0": {"maml": [8.7, 499.1], "oracle": 524.8},
    "PointNav-v0": {"maml": [-40.4, -11.7, -3.3]},
}
"""The MAML paper's numbers (the issue's table; notes/anchors-metarl.md §1.1). HalfCheetahUphill has none."""
BASELINE_NAMES = ("random", "pretrained", "oracle", "ppo")


def paper_preset(family: str) -> str:
    """The `maml2017-*` preset of `family` (HalfCheetahUphill: the cheetah-vel settings on that family)."""
    for name, preset in PRESETS.items():
        if name.startswith("maml2017") and preset["family"] == family:
            return name
    if family.startswith("HalfCheetah"):
        return "maml2017-cheetah-vel"
    if family.startswith("Ant"):
        return "maml2017-ant-vel"
    raise SystemExit(f"no paper preset for {family}")


def config_for(args: argparse.Namespace) -> MAMLConfig:
    overrides = {**PRESETS[paper_preset(args.family)], "family": args.family, "run.seed": args.seed,
                 "run.runs_dir": str(args.runs_dir), **parse_sets(args.set)}
    if args.iterations is not None:
        overrides["run.iterations"] = args.iterations
    if args.algo == "fomaml":
        overrides["first_order"] = True
    return apply_overrides(MAMLConfig(), overrides)


def parse_sets(pairs: list[str]) -> dict[str, Any]:
    """["meta_batch_size=4", "trpo.max_kl=0.02"] -> {key: JSON value (or the string)}."""
    out = {}
    for pair in pairs:
        key, sep, raw = pair.partition("=")
        if not sep:
            raise SystemExit(f"--set needs KEY=VALUE, got {pair!r}")
        try:
            out[key] = json.loads(raw)
        except json.JSONDecodeError:
            out[key] = raw
        if isinstance(out[key], list):
            out[key] = tuple(out[key])
    return out


def trained(algo: str, cfg: Any, existing: Path | None) -> Path:
    """A run directory trained to `cfg.run.iterations`: `existing` (resumed if it stopped short) or a new run."""
    if existing is None:
        return driver.run(algo, cfg, quiet=True)
    opened = driver.open_run(existing)
    if opened.payload["state"]["iteration"] < cfg.run.iterations:
        raise SystemExit(f"{existing} stopped at iteration {opened.payload['state']['iteration']}; finish it first "
                         f"with `metarl train {opened.algo} --resume {existing}`")
    return existing


def evaluation(run_dir: Path, args: argparse.Namespace, label: str) -> dict[str, Any]:
    """The paper-protocol evaluation record of `run_dir` (`metarl eval`'s JSON): an earlier one of the same protocol
    and checkpoint is reused (a PPO baseline's evaluation takes most of an hour on a MuJoCo family), else it runs."""
    record = earlier_evaluation(run_dir, args)
    if record is None:
        # `replace`: a re-run after further training publishes the newer evaluation (metarl eval refuses by default)
        record = evaluate_run(EvalArgs(run_dir, tasks=args.eval_tasks, steps=args.eval_steps, seed=args.seed,
                                       quiet=True, replace=True), label=label).record
    return record


def summarized(record: dict[str, Any], run_dir: Path) -> dict[str, Any]:
    """A method's entry of the result JSON: mean and SE over tasks per adaptation step, and where they come from."""
    summary, protocol = record["summary"], record["protocol"]
    return {"mean": [s["mean"] for s in summary], "se": [s["se"] for s in summary], "run": str(run_dir),
            "iteration": protocol["iteration"], "checkpoint": protocol["checkpoint"]}


def evaluated(run_dir: Path, args: argparse.Namespace, label: str) -> dict[str, Any]:
    return summarized(evaluation(run_dir, args, label), run_dir)


def over_seeds(records: list[dict[str, Any]], runs: list[Path], seeds: list[int]) -> dict[str, Any]:
    """Several training seeds evaluated on the same test tasks, as one method's entry: each task's return averaged
    over the seeds, then mean and SE over the tasks per step (the single-seed rows' statistic, so the rows compare);
    every seed's own entry under `per_seed`, the spread of the seeds' means under `seed_sd`.

    Args:
        records: the seeds' evaluation records (`per_task`: [steps + 1][tasks] mean return per task).
        runs, seeds: their run directories and training seeds, in the same order.
    """
    tasks = [r["tasks"] for r in records]
    if any(t != tasks[0] for t in tasks[1:]):
        raise SystemExit("the seeds' evaluations met different test tasks; evaluate them with the same --seed")
    per_task = torch.tensor([r["per_task"] for r in records], dtype=torch.float64)  # [seeds, steps + 1, tasks]
    task_means = per_task.mean(0)  # [steps + 1, tasks]
    n_tasks = task_means.shape[-1]
    se = task_means.std(-1) / n_tasks**0.5 if n_tasks > 1 else torch.full((task_means.shape[0],), float("nan"))
    seed_means = per_task.mean(-1)  # [seeds, steps + 1]
    seed_sd = seed_means.std(0) if len(records) > 1 else torch.full((seed_means.shape[1],), float("nan"))
    first = summarized(records[0], runs[0])
    return {**first, "mean": task_means.mean(-1).tolist(), "se": se.tolist(), "seed_sd": seed_sd.tolist(),
            "per_seed": [{"seed": seed, **summarized(r, run)} for seed, r, run in zip(seeds, records, runs,
                                                                                     strict=True)]}


def same_training(primary: dict[str, Any], other: dict[str, Any]) -> list[str]:
    """The config keys on which two runs' trainings differ, beyond the seed and bookkeeping (`run.*` but the family
    kwargs, which set the physics): a seed run must differ in nothing else."""
    a, b = flat_dict(primary), flat_dict(other)
    kept = [k for k in sorted(set(a) | set(b)) if not k.startswith("run.") or k == "run.family_kwargs"]
    return [k for k in kept if a.get(k) != b.get(k)]


def earlier_evaluation(run_dir: Path, args: argparse.Namespace) -> dict[str, Any] | None:
    """An eval-T<tasks>-E*-k<steps>.json in `run_dir` with this protocol (tasks, steps, seed, the paper's step sizes)
    of the checkpoint as it is now, or None."""
    best = run_dir / "best.pt"
    checkpoint = "best.pt" if best.is_file() else "checkpoint.pt"
    iteration = driver.open_run(run_dir, checkpoint).payload["state"]["iteration"]
    # a seed run (another training seed) evaluated on this seed's test tasks carries the suffix -seed<S> (eval_name)
    names = [f"eval-T{args.eval_tasks}-E*-k{args.eval_steps}.json", f"eval-T{args.eval_tasks}-E*-k{args.eval_steps}"
             f"-seed{args.seed}.json"]
    for path in sorted(p for name in names for p in run_dir.glob(name)):
        record = json.loads(path.read_text())
        protocol = record.get("protocol", {})
        if (protocol.get("seed"), protocol.get("checkpoint"), protocol.get("iteration")) == (args.seed, checkpoint,
                                                                                          iteration):
            return record
    return None


def baseline_config(name: str, cfg: MAMLConfig, iterations: int) -> MAMLConfig:
    run = dataclasses.replace(cfg.run, iterations=0 if name in ("random", "ppo") else iterations)
    family = baselines.register_oracle(cfg.family).id if name == "oracle" else cfg.family
    return dataclasses.replace(cfg, family=family, run=run)


# ----------------------------------------------------------------------------------------------- the paper's own tasks
PAPER_TASK_BASELINES = ("random", "oracle")
"""Baselines also compared on the paper's tasks (its pretrained policy adapted with another step size, 0.02)."""


def on_paper_tasks(run_dir: Path, args: argparse.Namespace, label: str, steps: int) -> dict[str, Any]:
    """`run_dir` evaluated on the paper's 40 test tasks with its test script's episodes and step sizes
    (`metarl eval RUN --task-set maml2017`), rollouts from the test stream of --seed."""
    info = maml2017.paper_family(args.family)
    return evaluate_run(EvalArgs(run_dir, task_set="maml2017", steps=steps, episodes=info.episodes,
                                 step_sizes=maml2017.schedule(args.family, steps), seed=args.seed, quiet=True,
                                 checkpoint=args.paper_checkpoint, replace=True), label=label).record


def mean_se(per_task: np.ndarray) -> dict[str, list[float]]:
    """[steps + 1, T] -> mean and standard error over the tasks per step."""
    return {"mean": per_task.mean(1).tolist(), "se": (per_task.std(1, ddof=1) / np.sqrt(per_task.shape[1])).tolist()}


def paper_tasks_entry(args: argparse.Namespace, maml_runs: list[Path],
                      baseline_runs: dict[str, Path]) -> dict[str, Any]:
    """The task-by-task comparison with the paper: MAML (each task's return averaged over `maml_runs`, the seeds)
    and the baselines of PAPER_TASK_BASELINES on the paper's own test tasks, the paper's per-task returns on them,
    and the paired differences (`maml2017.paired`). The oracle is evaluated before adaptation only, as the paper's."""
    info = maml2017.paper_family(args.family)
    paper = maml2017.paper_returns(args.family)
    todo = [("maml", maml_runs)] + [(n, [baseline_runs[n]]) for n in PAPER_TASK_BASELINES if n in baseline_runs]
    methods, paired = {}, {}
    for name, runs in todo:
        records = [on_paper_tasks(run, args, name, 0 if name == "oracle" else args.eval_steps) for run in runs]
        per_task = np.mean([r["per_task"] for r in records], axis=0)  # [steps + 1, 40]
        methods[name] = {**mean_se(per_task), "per_task": per_task.tolist(), "runs": [str(r) for r in runs],
                         "iterations": [r["protocol"]["iteration"] for r in records],
                         "checkpoints": [r["protocol"]["checkpoint"] for r in records]}
        if name in paper:
            paired[name] = maml2017.paired(per_task.tolist(), paper[name])
    return {"tasks": maml2017.paper_tasks(args.family), "episodes": info.episodes, "checkpoint": args.paper_checkpoint,
            "step_sizes": list(maml2017.schedule(args.family, args.eval_steps)), "seed": args.seed,
            "script": f"maml_examples/test_maml_{info.script}.py", "paper_checkpoint": info.checkpoint,
            "methods": methods, "paired": paired,
            "paper": {name: mean_se(np.asarray(v)) for name, v in paper.items() if name in methods},
            "machine": machine(), "commit": commit(), "command": command_line(), "generated": time.strftime("%Y-%m-%d")}


def task_groups(tasks: dict[str, list[Any]]) -> list[tuple[str, list[int]]]:
    """Labelled groups of task indices, to locate a gap: directions apart, goal speeds in 0.5 m/s bins, 2-D goals
    by distance from the start in 0.25 bins."""
    ((field, values),) = tasks.items()
    v = np.asarray(values, dtype=np.float64)
    if field == "direction":
        return [(label, np.flatnonzero(v == sign).tolist()) for label, sign in (("backward", -1.0), ("forward", 1.0))]
    key, width, unit = (np.linalg.norm(v, axis=1), 0.25, "from the start") if v.ndim == 2 else (v, 0.5, "m/s")
    groups = []
    for low in np.arange(0.0, key.max() + 1e-12, width):
        index = np.flatnonzero((key >= low) & (key < low + width)).tolist()
        if index:
            groups.append((f"{low:g}–{low + width:g} {unit}", index))
    return groups


def command_line() -> str:
    return " ".join(["python", "scripts/reproduce.py", *map(shlex.quote, sys.argv[1:])])


def training_curve(run_dir: Path) -> dict[str, list[float]]:
    records = read_training(run_dir)
    post = [k for k in records[0] if k.startswith("meta/return_post_")] if records else []
    last = max(post, key=lambda k: int(k.rsplit("_", 1)[1])) if post else None
    return {"iteration": [r["iteration"] for r in records],
            "env_steps": [r.get("perf/env_steps", 0.0) for r in records],
            "return_pre": [r.get("meta/return_pre") for r in records],
            "return_post": [r.get(last) for r in records] if last else [],
            "val_return_post": [r.get("val/return_post") for r in records]}


def machine() -> str:
    cpu = platform.processor() or platform.machine()
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    cores = len(os.sched_getaffinity(0))
    system = f"{platform.system()}, Python {platform.python_version()}"
    return f"{cpu}, {cores} core{'s' if cores != 1 else ''} usable, {system}"


def commit() -> str:
    try:
        return subprocess.run(["git", "rev-parse", "--short", "HEAD"], cwd=ROOT, capture_output=True, text=True,
                              check=True).stdout.strip()
    except (OSError, subprocess.CalledProcessError):
        return "unknown"


# ----------------------------------------------------------------------------------------------- outputs
def plot(result: dict[str, Any], path: Path) -> None:
    """Adaptation curves of every method (mean ± SE per step) and the training curve."""
    fig, (ax, ax2) = plt.subplots(1, 2, figsize=(11, 4), constrained_layout=True)
    for name, method in result["methods"].items():
        steps = list(range(len(method["mean"])))
        se = [0.0 if s != s else s for s in method["se"]]  # NaN SE (one task) -> no band
        ax.errorbar(steps, method["mean"], yerr=se, marker="o", capsize=3, label=name)
    paper = result.get("paper") or {}
    if "maml" in paper:
        ax.plot(range(len(paper["maml"])), paper["maml"], "k--", marker="x", label="MAML paper")
    if "oracle" in paper:
        ax.axhline(paper["oracle"], color="gray", ls=":", label="paper oracle")
    ax.set(xlabel="adaptation steps", ylabel="average return", title=f"{result['family']}: adaptation")
    ax.set_xticks(range(result["eval_steps"] + 1))
    ax.legend(fontsize=8)
    curve = result["training"]
    ax2.plot(curve["env_steps"], curve["return_pre"], color="C0", label="before adaptation")
    if curve["return_post"]:
        ax2.plot(curve["env_steps"], curve["return_post"], color="C1", label="after adaptation")
    for other in result.get("training_other_seeds") or []:  # further seeds: the same colours, thinner
        ax2.plot(other["env_steps"], other["return_pre"], color="C0", lw=0.6, alpha=0.6)
        if other["return_post"]:
            ax2.plot(other["env_steps"], other["return_post"], color="C1", lw=0.6, alpha=0.6)
    ax2.set(xlabel="environment steps", ylabel="average return (training tasks)", title="training")
    ax2.legend(fontsize=8)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=110)
    plt.close(fig)


def fmt(mean: float | None, se: float | None = None) -> str:
    if mean is None:
        return ""
    return f"{mean:.1f}" if se is None or se != se else f"{mean:.1f} ± {se:.1f}"


def render_markdown(results: list[dict[str, Any]]) -> str:
    """docs/results.md from the result JSONs, one section per family (the paper's families even before a run is
    published): nothing in it is typed by hand."""
    lines = ["# Results: the MAML paper's experiments, reproduced", "",
             "Generated by `python scripts/reproduce.py --render-only` from `docs/results/*.json`; each family's "
             "section names the command that produced it. Returns are averages over the test tasks (mean ± standard "
             "error over tasks) after 0, 1, 2, 3 policy-gradient adaptation steps (α, then α/2); the paper reports "
             "steps 0 and 1 (2-D navigation: also 2).", ""]
    by_family = {r["family"]: r for r in results if "methods" in r}
    for family in sorted(set(PAPER) | set(by_family)):
        lines += result_section(by_family[family]) if family in by_family else pending_section(family)
    for r in (r for r in results if "curves" in r):
        lines += comparison_section(r)
    return "\n".join(lines)


def comparison_section(r: dict[str, Any]) -> list[str]:
    """A `scripts/compare_algorithms.py` result: every meta-learner under one sample budget."""
    lines = [f"## Every meta-learner under one sample budget: {r['family']}", "",
             f"![{r['family']}](results/algorithms-{r['family']}.png)", "",
             f"Return on {r['tasks']} held-out tasks before and after {r['steps']} adaptation step(s) (each "
             "algorithm's own adaptation), read when the algorithm has taken the budget's environment steps.", "",
             "| algorithm | environment steps | before | after |", "|---|---|---|---|"]
    for name, c in r["curves"].items():  # (wall times are in the JSON; the runs shared the machine with others)
        lines.append(f"| {name} | {c['env_steps'][-1]:,} | {fmt(c['return_pre'][-1])} | {fmt(c['return_post'][-1])} |")
    physics = r.get("family_kwargs") or {}
    if physics:  # e.g. the MAML paper's time step, which the family's own default does not take
        lines += ["", f"- Every algorithm on the family made with {fmt_kwargs(physics)}."]
    return [*lines, "", f"- Command: `python scripts/compare_algorithms.py {r['family']} --budget {r['budget']} "
            f"--points {len(next(iter(r['curves'].values()))['env_steps'])} --tasks {r['tasks']} --steps {r['steps']} "
            f"--seed {r['seed']}`", ""]


def fmt_kwargs(kwargs: dict[str, Any]) -> str:
    return ", ".join(f"`{k}={v!r}`" for k, v in sorted(kwargs.items()))


def paper_rows(paper: dict[str, Any], steps: int) -> list[str]:
    rows = []
    if "maml" in paper:
        cells = [fmt(v) for v in paper["maml"]] + [""] * (steps + 1 - len(paper["maml"]))
        rows.append("| MAML paper | " + " | ".join(cells[: steps + 1]) + " |")
    if "oracle" in paper:
        rows.append("| oracle, paper | " + " | ".join([fmt(paper["oracle"])] + [""] * steps) + " |")
    return rows


def pending_section(family: str) -> list[str]:
    return [f"## {family}", "", "| method | step 0 | step 1 | step 2 |", "|---|---|---|---|",
            *paper_rows(PAPER[family], 2), "",
            f"Not reproduced yet: `python scripts/reproduce.py {family}` publishes it here.", ""]


def result_section(r: dict[str, Any]) -> list[str]:
    k = r["eval_steps"]
    lines = [f"## {r['family']}", "", f"![{r['family']}](results/{r['family']}.png)", "",
             "| method | " + " | ".join(f"step {j}" for j in range(k + 1)) + " |", "|---|" + "---|" * (k + 1),
             *paper_rows(r.get("paper") or {}, k)]
    for name, m in r["methods"].items():
        lines.append(f"| {name} (ours) | " + " | ".join(fmt(a, b) for a, b in zip(m["mean"], m["se"], strict=True))
                     + " |")
    hours = r["wall_s"] / 3600
    lines += ["", f"- Training: {r['iterations']} meta-iterations, {r['env_steps']:,} environment steps, "
              f"{hours:.2f} h of training on {r['machine']}; seeds {r['seeds']}; commit `{r['commit']}`.",
              f"- Evaluation: {r['eval_tasks']} test tasks, checkpoint `{r['methods']['maml']['checkpoint']}` "
              f"(iteration {r['methods']['maml']['iteration']}).",
              f"- Command: `{r['command']}`"]
    lines += seeds_lines(r["methods"]["maml"])
    lines += [f"- {note}" for note in r.get("notes") or []]
    lines += paper_tasks_lines(r["family"], r["paper_tasks"]) if "paper_tasks" in r else []
    return [*lines, ""]


def paper_tasks_lines(family: str, p: dict[str, Any]) -> list[str]:
    """The `paper_tasks` entry: ours and the paper's on the paper's own test tasks, the paired differences, and
    where they arise (`task_groups`)."""
    k = len(p["step_sizes"])
    maml = p["methods"]["maml"]
    runs = ", ".join(f"`{run}` (iteration {it})" for run, it in zip(maml["runs"], maml["iterations"], strict=True))
    lines = ["", f"### {family} on the paper's own test tasks", "",
             f"The paper's 40 test tasks (cbfinn/maml_rl `{p['script']}`), adapted as that script did: "
             f"{p['episodes']} episodes per step, step sizes {', '.join(f'{a:g}' for a in p['step_sizes'])}; the "
             f"paper evaluated its checkpoint {p['paper_checkpoint']}, ours the {checkpoint_words(p)}. Each "
             "task's return is compared with the paper's on the same task: the difference rows are the mean of the "
             "per-task differences ± their standard error.", "",
             "| method | " + " | ".join(f"step {j}" for j in range(k + 1)) + " |", "|---|" + "---|" * (k + 1)]
    for name, ours in p["methods"].items():
        for label, row in ((f"{name}, paper", p["paper"].get(name)), (f"{name} (ours)", ours)):
            if row is not None:
                cells = [fmt(a, b) for a, b in zip(row["mean"], row["se"], strict=True)][: k + 1]
                lines.append(f"| {label} | " + " | ".join(cells + [""] * (k + 1 - len(cells))) + " |")
        if name in p["paired"]:
            cells = [fmt(a, b) for a, b in zip(p["paired"][name]["diff"], p["paired"][name]["se"], strict=True)]
            lines.append(f"| {name}: ours − paper | " + " | ".join(cells + [""] * (k + 1 - len(cells))) + " |")
    lines += ["", f"- Ours: {runs}, {len(maml['runs'])} seed(s) averaged per task; rollouts from the test stream of "
              f"seed {p['seed']}; commit `{p['commit']}`, {p['machine']}.", f"- Command: `{p['command']}`"]
    return [*lines, *task_group_lines(family, p)]


def checkpoint_words(p: dict[str, Any]) -> str:
    return {"best": "best by validation (best.pt)", "last": "last (checkpoint.pt)"}[p.get("checkpoint", "best")]


def task_group_lines(family: str, p: dict[str, Any]) -> list[str]:
    """MAML's before → after one step, ours and the paper's, per group of tasks, with the paired difference after."""
    ours, theirs = np.asarray(p["methods"]["maml"]["per_task"]), np.asarray(maml2017.paper_returns(family)["maml"])
    if ours.shape[0] < 2:
        return []
    lines = ["", "| tasks | n | ours: before → after one step | paper | ours − paper after one step |",
             "|---|---|---|---|---|"]
    for label, index in task_groups(p["tasks"]):
        after = maml2017.paired([ours[1, index]], [theirs[1, index]])
        lines.append(f"| {label} | {len(index)} | {fmt(ours[0, index].mean())} → {fmt(ours[1, index].mean())} | "
                     f"{fmt(theirs[0, index].mean())} → {fmt(theirs[1, index].mean())} | "
                     f"{fmt(after['diff'][0], after['se'][0])} |")
    return lines



def seeds_lines(maml: dict[str, Any]) -> list[str]:
    """With several seeds: each seed's own returns per step, and their spread (the table averages the seeds)."""
    if "per_seed" not in maml:
        return []
    runs = "; ".join(f"seed {p['seed']}: " + " → ".join(fmt(m) for m in p["mean"]) + f" (iteration {p['iteration']})"
                     for p in maml["per_seed"])
    sd = ", ".join(fmt(v) for v in maml["seed_sd"])
    return [f"- MAML over {len(maml['per_seed'])} seeds (the table averages each test task's return over them; the "
            f"training line is seed {maml['per_seed'][0]['seed']}'s, the plot draws every seed): {runs}. SD of the "
            f"seeds' means per step: {sd}."]


def load_results(out: Path) -> list[dict[str, Any]]:
    return [json.loads(p.read_text()) for p in sorted(out.glob("*.json"))]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("family", nargs="?", help="a family id, e.g. HalfCheetahVel-v0")
    parser.add_argument("--algo", default="maml", choices=["maml", "fomaml"])
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--iterations", type=int, default=None, help="meta-iterations (default: the preset's)")
    parser.add_argument("--set", action="append", default=[], metavar="KEY=VALUE", help="config override")
    parser.add_argument("--from-run", type=Path, default=None, help="evaluate this trained run instead of training")
    parser.add_argument("--seed-run", action="append", type=Path, default=[], metavar="RUN_DIR",
                        help="a further seed of the same training (repeatable): MAML's row averages over the seeds")
    parser.add_argument("--baselines", default=",".join(BASELINE_NAMES), help="comma-separated, or 'none'")
    parser.add_argument("--baseline-iterations", type=int, default=None,
                        help="iterations of the pretrained and oracle baselines (default: the MAML run's)")
    parser.add_argument("--baseline-run", action="append", default=[], metavar="NAME=RUN_DIR",
                        help="reuse a trained baseline run")
    parser.add_argument("--eval-tasks", type=int, default=40)
    parser.add_argument("--eval-steps", type=int, default=3)
    parser.add_argument("--runs-dir", type=Path, default=Path("runs"))
    parser.add_argument("--out", type=Path, default=ROOT / "docs/results", help="where <family>.json/.png go")
    parser.add_argument("--markdown", type=Path, default=ROOT / "docs/results.md")
    parser.add_argument("--note", action="append", default=[], help="a line for the family's section")
    parser.add_argument("--render-only", action="store_true", help="only regenerate the markdown from the JSONs")
    parser.add_argument("--notes-only", action="store_true",
                        help="replace the notes of FAMILY's published result with --note lines, then regenerate")
    parser.add_argument("--no-paper-tasks", action="store_true",
                        help="skip the task-by-task comparison on the paper's own test tasks")
    parser.add_argument("--paper-checkpoint", choices=["best", "last"], default="best",
                        help="the checkpoint evaluated on the paper's tasks (the paper's 2-D navigation: its last)")
    parser.add_argument("--paper-tasks-only", action="store_true",
                        help="only compare --from-run (--seed-run, --baseline-run) with the paper on its own test "
                             "tasks, into FAMILY's published result, then regenerate")
    args = parser.parse_args()
    if args.paper_tasks_only:
        try:
            add_paper_tasks(args)
        except (RunDirError, ValueError) as err:
            raise SystemExit(f"reproduce.py: {err}") from None
    elif args.notes_only:
        path = args.out / f"{args.family}.json"
        result = json.loads(path.read_text())
        path.write_text(json.dumps({**result, "notes": args.note}, indent=1) + "\n")
    elif not args.render_only:
        if args.family is None:
            parser.error("name a family (or --render-only)")
        try:
            run(args)
        except RunDirError as err:  # --from-run, --seed-run or --baseline-run naming no usable run: one line
            raise SystemExit(f"reproduce.py: {err}") from None
    args.markdown.write_text(render_markdown(load_results(args.out)))
    print(f"wrote {args.markdown}")


def run(args: argparse.Namespace) -> None:
    cfg = config_for(args)
    run_dir = trained(args.algo, cfg, args.from_run)
    opened = driver.open_run(run_dir)
    cfg, state = opened.cfg, opened.payload["state"]
    curve = training_curve(run_dir)
    wall = sum(float(r.get("perf/sample_s", 0) + r.get("perf/update_s", 0)) for r in read_training(run_dir))
    methods = {args.algo: maml_entry(run_dir, opened, args)}
    reuse = reused_baselines(args)
    names = [] if args.baselines == "none" else [n for n in args.baselines.split(",") if n]
    b_dirs = {}
    for name in names:
        if name not in BASELINE_NAMES:
            raise SystemExit(f"unknown baseline {name!r}; choose from {', '.join(BASELINE_NAMES)}")
        b_cfg = baseline_config(name, cfg, args.baseline_iterations or cfg.run.iterations)
        b_dirs[name] = trained(f"baseline-{name}", b_cfg, reuse.get(name))
        methods[name] = evaluated(b_dirs[name], args, name)
    if args.algo != "maml":
        methods["maml"] = methods.pop(args.algo)
    result = {
        "family": args.family, "paper": PAPER.get(args.family), "methods": methods, "algo": args.algo,
        "iterations": int(state["iteration"]), "env_steps": int(state.get("env_steps", 0)), "wall_s": wall,
        "machine": machine(), "commit": commit(), "eval_tasks": args.eval_tasks,
        "seeds": [p["seed"] for p in methods["maml"]["per_seed"]] if "per_seed" in methods["maml"] else [cfg.run.seed],
        "eval_steps": args.eval_steps, "config": config_to_dict(cfg),
        "command": command_line(),
        "training": curve, "training_other_seeds": [training_curve(Path(p["run"]))
                                                     for p in methods["maml"].get("per_seed", [])[1:]],
        "notes": args.note, "generated": time.strftime("%Y-%m-%d"),
    }
    if args.family in maml2017.FAMILIES and not args.no_paper_tasks:
        result["paper_tasks"] = paper_tasks_entry(args, [run_dir, *args.seed_run], b_dirs)
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / f"{args.family}.json").write_text(json.dumps(result, indent=1) + "\n")
    plot(result, args.out / f"{args.family}.png")
    print(f"wrote {args.out / (args.family + '.json')} and .png")


def reused_baselines(args: argparse.Namespace) -> dict[str, Path]:
    """--baseline-run NAME=RUN_DIR pairs as {name: run directory}."""
    pairs = {}
    for pair in args.baseline_run:
        name, sep, path = pair.partition("=")
        if not sep or name not in BASELINE_NAMES:
            raise SystemExit(f"--baseline-run needs NAME=RUN_DIR with NAME one of {', '.join(BASELINE_NAMES)}, "
                             f"got {pair!r}")
        pairs[name] = Path(path)
    return pairs


def add_paper_tasks(args: argparse.Namespace) -> None:
    """--paper-tasks-only: compute the `paper_tasks` entry for --from-run (and --seed-run, --baseline-run) and put it
    into the published <family>.json, leaving the rest of that result as it is."""
    path = args.out / f"{args.family}.json"
    if args.from_run is None or not path.is_file():
        raise SystemExit(f"--paper-tasks-only needs --from-run and a published {path}")
    seed_runs_checked(args.from_run, driver.open_run(args.from_run), args.seed_run)
    result = json.loads(path.read_text())
    entry = paper_tasks_entry(args, [args.from_run, *args.seed_run], reused_baselines(args))
    path.write_text(json.dumps({**result, "paper_tasks": entry}, indent=1) + "\n")


def maml_entry(run_dir: Path, primary: Any, args: argparse.Namespace) -> dict[str, Any]:
    """The trained method's entry: one run's evaluation, or with --seed-run every seed's, combined (`over_seeds`).
    A seed run must be the same training (`same_training`) to the same iteration, with a seed of its own."""
    seeds = seed_runs_checked(run_dir, primary, args.seed_run)
    record = evaluation(run_dir, args, args.algo)
    if not args.seed_run:
        return summarized(record, run_dir)
    runs = [run_dir, *args.seed_run]
    records = [record, *(evaluation(other, args, args.algo) for other in args.seed_run)]
    return over_seeds(records, runs, seeds)


def seed_runs_checked(run_dir: Path, primary: Any, others: list[Path]) -> list[int]:
    """The training seeds of `run_dir` (opened: `primary`) and `others`, after checking that each of `others` is
    the same training (`same_training`) to the same iteration, with a seed of its own; SystemExit otherwise."""
    iteration = primary.payload["state"]["iteration"]
    seeds = [primary.cfg.run.seed]
    for other in others:
        opened = driver.open_run(other)
        differ = same_training(config_to_dict(primary.cfg), config_to_dict(opened.cfg))
        if opened.algo != primary.algo or differ:
            raise SystemExit(f"{other} is not another seed of {run_dir}: it differs in {differ or ['algo']}")
        if opened.cfg.run.seed in seeds:
            raise SystemExit(f"{other} repeats seed {opened.cfg.run.seed}")
        if opened.payload["state"]["iteration"] != iteration:
            raise SystemExit(f"{other} stopped at iteration {opened.payload['state']['iteration']}, {run_dir} at "
                             f"{iteration}: train both to the same iteration (`metarl train --resume`)")
        seeds.append(opened.cfg.run.seed)
    return seeds


if __name__ == "__main__":
    main()
