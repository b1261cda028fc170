"""The estimator learning study: post-adaptation return per estimator over seeds, into docs/results/estimators.json.

PointNav-v0 (pytorch-maml-rl's configuration, the preset as it ships): each (estimator, seed) is one
`scripts/bench_pointnav.py --iterations 500 --evaluate` run (400 held-out tasks, return after one step α = 0.1). Its
JSON line is kept in `--logs` as `pointnav_<estimator>_s<seed>.json`, so an interrupted study resumes where it stopped
and runs made elsewhere (e.g. in parallel, pinned to a core) are reused. HalfCheetahVel-v0 (the MAML paper's preset):
training runs named with `--cheetah ESTIMATOR=RUN_DIR`, compared at the same iteration (`--cheetah-iterations`) by the
mean post-adaptation return of their last 10 training iterations; runs on different physics (family kwargs,
e.g. the time step) or with another estimator than their label are refused.

    python scripts/estimator_study.py --estimators dice,lvc --seeds 0,1,2,3,4
    python scripts/estimator_study.py --no-run --cheetah lvc=runs/HalfCheetahVel-v0__maml__0__<time>

A label is an estimator name, or `ESTIMATOR+value` for that estimator with the learned value baseline
(`--baseline value`; plain names use the preset's linear baseline).

    python scripts/estimator_study.py --estimators dice+value,lvc+value --seeds 0,1,2,3,4

The JSON: {"PointNav-v0": {"<label>": {"post_mean", "post_sd", "seeds", "per_seed"}}, "HalfCheetahVel-v0":
{"<label>": {..., "iterations", "family_kwargs"}}, "default": "<estimator>"}; the last line printed is the same
object.
"""

from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
from dataclasses import fields
from pathlib import Path

from metarl.algos.maml import MAMLConfig

ROOT = Path(__file__).resolve().parent.parent


def parse_label(label: str) -> tuple[str, str | None]:
    """"dice" -> ("dice", None: the preset's baseline); "dice+value" -> ("dice", "value")."""
    estimator, plus, baseline = label.partition("+")
    if plus and baseline != "value":
        raise SystemExit(f"unknown label {label!r}: ESTIMATOR or ESTIMATOR+value")
    return estimator, (baseline or None)


def pointnav_result(label: str, seed: int, logs: Path, iterations: int, run: bool) -> dict | None:
    path = logs / f"pointnav_{label}_s{seed}.json"
    if not path.exists():
        if not run:
            return None
        estimator, baseline = parse_label(label)
        out = subprocess.run([sys.executable, str(ROOT / "scripts/bench_pointnav.py"), "--iterations", str(iterations),
                              "--evaluate", "--seed", str(seed), "--estimator", estimator,
                              *(["--baseline", baseline] if baseline else [])],
                             check=True, capture_output=True, text=True).stdout
        path.write_text(out.strip().splitlines()[-1] + "\n")
    return json.loads(path.read_text())


def summary(values: dict[int, float]) -> dict[str, object]:
    post = list(values.values())
    return {"post_mean": statistics.mean(post), "post_sd": statistics.stdev(post) if len(post) > 1 else None,
            "seeds": sorted(values), "per_seed": {str(k): v for k, v in sorted(values.items())}}


def cheetah_result(run_dir: Path, iterations: int) -> float:
    records = [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines() if line.strip()]
    if len(records) < iterations:  # the first `iterations` records (runs before 1-based numbering count from 0)
        raise SystemExit(f"{run_dir} has {len(records)} iterations, fewer than {iterations}")
    records = records[:iterations]
    post = [k for k in records[0] if k.startswith("meta/return_post_")]
    return statistics.mean(r[post[-1]] for r in records[-10:])


def cheetah_study(entries: list[str], iterations: int) -> dict[str, dict[str, object]]:
    """`LABEL=RUN_DIR` entries -> {label: summary at `iterations`, with the runs' family kwargs}.

    Refuses (SystemExit) a run whose config names another estimator or baseline than its label, two runs of one label
    with the same seed, and runs made on different physics (e.g. the paper's time step next to Gymnasium's): their
    returns are not comparable."""
    cheetah: dict[str, dict[int, float]] = {}
    physics: dict[str, object] | None = None
    for entry in entries:
        label, _, run_dir = entry.partition("=")
        estimator, baseline = parse_label(label)
        config = json.loads((Path(run_dir) / "config.json").read_text())
        config = config.get("config", config)
        if config.get("estimator") != estimator or (config.get("baseline") == "value") != (baseline == "value"):
            raise SystemExit(f"{run_dir} trained with estimator {config.get('estimator')!r} and baseline "
                             f"{config.get('baseline')!r}, labelled {label!r}")
        kwargs = config["run"].get("family_kwargs") or {}
        if physics is not None and kwargs != physics:
            raise SystemExit(f"{run_dir} ran with family kwargs {kwargs}, the study's other runs with {physics}")
        physics = kwargs
        seed = int(config["run"]["seed"])
        if seed in cheetah.setdefault(label, {}):
            raise SystemExit(f"two {label} runs with seed {seed}")
        cheetah[label][seed] = cheetah_result(Path(run_dir), iterations)
    return {k: {**summary(v), "iterations": iterations, "family_kwargs": physics} for k, v in cheetah.items()}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--estimators", default="dice,lvc")
    parser.add_argument("--seeds", default="0,1,2,3,4")
    parser.add_argument("--iterations", type=int, default=500)
    parser.add_argument("--logs", type=Path, default=Path("runs/estimator-study"))
    parser.add_argument("--no-run", action="store_true", help="only collect results that exist")
    parser.add_argument("--cheetah", action="append", default=[], metavar="LABEL=RUN_DIR")
    parser.add_argument("--cheetah-iterations", type=int, default=100)
    parser.add_argument("--out", type=Path, default=ROOT / "docs/results/estimators.json")
    args = parser.parse_args()
    args.logs.mkdir(parents=True, exist_ok=True)
    study: dict[str, object] = {}
    pointnav = {}
    for label in args.estimators.split(","):
        values = {}
        for seed in map(int, args.seeds.split(",")):
            result = pointnav_result(label, seed, args.logs, args.iterations, not args.no_run)
            if result is not None:
                values[seed] = result["return_post_1"]
                print(f"PointNav {label} seed {seed}: {result['return_pre']:.2f} -> {result['return_post_1']:.2f}",
                      flush=True)
        if values:
            pointnav[label] = summary(values)
    study["PointNav-v0"] = pointnav
    study["HalfCheetahVel-v0"] = cheetah_study(args.cheetah, args.cheetah_iterations)
    study["default"] = next(f.default for f in fields(MAMLConfig) if f.name == "estimator")
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(study, indent=1) + "\n")
    print(json.dumps(study))


if __name__ == "__main__":
    main()
