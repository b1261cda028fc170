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
import torch

from metarl import baselines, driver
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
    return [*lines, ""]


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
    args = parser.parse_args()
    if args.notes_only:
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
    reuse = dict(pair.split("=", 1) for pair in args.baseline_run)
    names = [] if args.baselines == "none" else [n for n in args.baselines.split(",") if n]
    for name in names:
        if name not in BASELINE_NAMES:
            raise SystemExit(f"unknown baseline {name!r}; choose from {', '.join(BASELINE_NAMES)}")
        b_cfg = baseline_config(name, cfg, args.baseline_iterations or cfg.run.iterations)
        b_dir = trained(f"baseline-{name}", b_cfg, Path(reuse[name]) if name in reuse else None)
        methods[name] = evaluated(b_dir, args, name)
    if args.algo != "maml":
        methods["maml"] = methods.pop(args.algo)
    result = {
        "family": args.family, "paper": PAPER.get(args.family), "methods": methods, "algo": args.algo,
        "iterations": int(state["iteration"]), "env_steps": int(state.get("env_steps", 0)), "wall_s": wall,
        "machine": machine(), "commit": commit(), "eval_tasks": args.eval_tasks,
        "seeds": [p["seed"] for p in methods["maml"]["per_seed"]] if "per_seed" in methods["maml"] else [cfg.run.seed],
        "eval_steps": args.eval_steps, "config": config_to_dict(cfg),
        "command": " ".join(["python", "scripts/reproduce.py", *map(shlex.quote, sys.argv[1:])]),
        "training": curve, "training_other_seeds": [training_curve(Path(p["run"]))
                                                     for p in methods["maml"].get("per_seed", [])[1:]],
        "notes": args.note, "generated": time.strftime("%Y-%m-%d"),
    }
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / f"{args.family}.json").write_text(json.dumps(result, indent=1) + "\n")
    plot(result, args.out / f"{args.family}.png")
    print(f"wrote {args.out / (args.family + '.json')} and .png")


def maml_entry(run_dir: Path, primary: Any, args: argparse.Namespace) -> dict[str, Any]:
    """The trained method's entry: one run's evaluation, or with --seed-run every seed's, combined (`over_seeds`).
    A seed run must be the same training (`same_training`) to the same iteration, with a seed of its own."""
    record = evaluation(run_dir, args, args.algo)
    if not args.seed_run:
        return summarized(record, run_dir)
    iteration = primary.payload["state"]["iteration"]
    runs, records, seeds = [run_dir], [record], [primary.cfg.run.seed]
    for other in args.seed_run:
        opened = driver.open_run(other)
        differ = same_training(config_to_dict(primary.cfg), config_to_dict(opened.cfg))
        if opened.algo != primary.algo or differ:
            raise SystemExit(f"{other} is not another seed of {run_dir}: it differs in {differ or ['algo']}")
        if opened.cfg.run.seed in seeds:
            raise SystemExit(f"{other} repeats seed {opened.cfg.run.seed}")
        if opened.payload["state"]["iteration"] != iteration:
            raise SystemExit(f"{other} stopped at iteration {opened.payload['state']['iteration']}, {run_dir} at "
                             f"{iteration}: train both to the same iteration (`metarl train --resume`)")
        runs.append(other)
        records.append(evaluation(other, args, args.algo))
        seeds.append(opened.cfg.run.seed)
    return over_seeds(records, runs, seeds)


if __name__ == "__main__":
    main()
