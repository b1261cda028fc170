"""scripts/reproduce.py end to end on a tiny budget: the result JSON's schema and the generated docs/results.md."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from metarl import maml2017

ROOT = Path(__file__).resolve().parent.parent


def test_reproduce_writes_the_schema_and_regenerates_the_markdown(tmp_path: Path) -> None:
    out, markdown = tmp_path / "results", tmp_path / "results.md"
    common = ["--out", str(out), "--markdown", str(markdown)]
    subprocess.run([sys.executable, "scripts/reproduce.py", "PointNav-v0", "--iterations", "2", "--eval-tasks", "2",
                    "--set", "meta_batch_size=3", "--set", "episodes_per_task=2", "--set", "curvature_subsample=1",
                    "--baseline-iterations", "1", "--runs-dir", str(tmp_path / "runs"), *common],
                   cwd=ROOT, check=True, capture_output=True)
    result = json.loads((out / "PointNav-v0.json").read_text())
    for key in ("family", "paper", "methods", "iterations", "env_steps", "wall_s", "machine", "commit", "command",
                "seeds", "training"):
        assert key in result, key
    assert result["paper"]["maml"] == [-40.4, -11.7, -3.3] and result["iterations"] == 2
    assert set(result["methods"]) == {"maml", "random", "pretrained", "oracle", "ppo"}
    for method in result["methods"].values():
        assert len(method["mean"]) == len(method["se"]) == 4  # steps 0..3
    assert (out / "PointNav-v0.png").stat().st_size > 10_000
    check_paper_tasks(result["paper_tasks"], {"maml", "random", "oracle"})
    written = markdown.read_bytes()
    markdown.unlink()
    subprocess.run([sys.executable, "scripts/reproduce.py", "--render-only", *common], cwd=ROOT, check=True,
                   capture_output=True)
    assert markdown.read_bytes() == written  # generated from the JSON alone, byte for byte
    text = written.decode()
    assert "| MAML paper | -40.4 | -11.7 | -3.3 |" in text and "| maml (ours) |" in text
    assert "### PointNav-v0 on the paper's own test tasks" in text and "| maml: ours − paper | " in text


def check_paper_tasks(entry: dict, methods: set[str]) -> None:
    """A `paper_tasks` entry: the paper's tasks and schedule, per-task returns, and paired differences recomputed
    here from the per-task returns and the vendored paper data."""
    assert entry["tasks"] == maml2017.paper_tasks("PointNav-v0")
    assert (entry["episodes"], entry["step_sizes"]) == (40, [0.5, 0.25, 0.25])
    assert set(entry["methods"]) == methods
    paper = maml2017.paper_returns("PointNav-v0")
    for name, method in entry["methods"].items():
        ours = np.asarray(method["per_task"])
        assert ours.shape == ((1 if name == "oracle" else 4), 40)
        assert method["mean"] == pytest.approx(ours.mean(1).tolist())
        steps = min(len(ours), len(paper[name]))
        diff = ours[:steps] - np.asarray(paper[name])[:steps]
        assert entry["paired"][name]["diff"] == pytest.approx(diff.mean(1).tolist())
        assert entry["paired"][name]["se"] == pytest.approx((diff.std(1, ddof=1) / np.sqrt(40)).tolist())


def test_the_published_results_name_every_paper_family_with_its_numbers(load_script) -> None:
    """docs/results.md is regenerated from the JSONs byte for byte and names the 5 paper families with the paper's
    numbers (next to ours where a run is published)."""
    reproduce = load_script("reproduce")
    text = (ROOT / "docs/results.md").read_text()
    assert text == reproduce.render_markdown(reproduce.load_results(ROOT / "docs/results"))
    for family, paper in reproduce.PAPER.items():
        assert f"## {family}" in text
        assert "| MAML paper | " + " | ".join(reproduce.fmt(v) for v in paper["maml"]) in text



def test_over_seeds_averages_each_task_over_the_seeds_then_takes_mean_and_se_over_tasks(load_script) -> None:
    reproduce = load_script("reproduce")

    def record(per_task: list[list[float]], seed: int) -> dict:
        summary = [{"mean": sum(row) / len(row), "se": 0.0} for row in per_task]
        return {"per_task": per_task, "summary": summary, "tasks": {"goal": [1.0, 2.0, 3.0]},
                "protocol": {"iteration": 10, "checkpoint": "best.pt", "seed": seed}}

    a = record([[1.0, 2.0, 3.0], [4.0, 6.0, 8.0]], 0)
    b = record([[3.0, 2.0, 1.0], [6.0, 6.0, 6.0]], 0)
    entry = reproduce.over_seeds([a, b], [Path("a"), Path("b")], [0, 1])
    # task means over seeds: step 0 [2, 2, 2], step 1 [5, 6, 7]
    assert entry["mean"] == [2.0, 6.0]
    assert entry["se"][0] == 0.0 and abs(entry["se"][1] - 1.0 / 3**0.5) < 1e-12  # std([5, 6, 7]) = 1
    assert [p["seed"] for p in entry["per_seed"]] == [0, 1] and entry["per_seed"][1]["mean"] == [2.0, 6.0]
    assert entry["seed_sd"] == [0.0, 0.0]  # both seeds' means are 2 and 6
    other_tasks = {**b, "tasks": {"goal": [1.0, 2.0, 4.0]}}
    with pytest.raises(SystemExit, match="different test tasks"):
        reproduce.over_seeds([a, other_tasks], [Path("a"), Path("b")], [0, 1])


def test_same_training_ignores_seed_and_bookkeeping_but_not_physics_or_algorithm(load_script) -> None:
    reproduce = load_script("reproduce")
    base = {"estimator": "lvc", "trpo": {"max_kl": 0.01},
            "run": {"seed": 0, "runs_dir": "a", "iterations": 100, "family_kwargs": {"frame_skip": 1}}}
    seed = {**base, "run": {**base["run"], "seed": 1, "runs_dir": "b", "iterations": 500}}
    assert reproduce.same_training(base, seed) == []
    physics = {**base, "run": {**base["run"], "family_kwargs": {"frame_skip": 5}}}
    assert reproduce.same_training(base, physics) == ["run.family_kwargs"]
    assert reproduce.same_training(base, {**base, "estimator": "dice"}) == ["estimator"]
    assert reproduce.same_training(base, {**base, "trpo": {"max_kl": 0.02}}) == ["trpo.max_kl"]


def test_reproduce_combines_seed_runs_and_refuses_a_run_that_is_not_another_seed(tmp_path: Path) -> None:
    out, markdown, runs = tmp_path / "results", tmp_path / "results.md", tmp_path / "runs"
    tiny = ["--iterations", "2", "--eval-tasks", "3", "--set", "meta_batch_size=3", "--set", "episodes_per_task=2",
            "--set", "curvature_subsample=1", "--baselines", "none", "--runs-dir", str(runs), "--out", str(out),
            "--markdown", str(markdown)]
    no_paper = ["--no-paper-tasks"]  # checked once, at the end

    def reproduce(*extra: str) -> subprocess.CompletedProcess:
        return subprocess.run([sys.executable, "scripts/reproduce.py", "PointNav-v0", *tiny, *no_paper, *extra],
                              cwd=ROOT, capture_output=True, text=True)

    for seed in ("0", "1"):  # trains a run per seed
        assert reproduce("--seed", seed).returncode == 0
    by_seed = {json.loads((d / "config.json").read_text())["config"]["run"]["seed"]: d for d in runs.iterdir()}
    seed0, seed1 = by_seed[0], by_seed[1]
    done = reproduce("--from-run", str(seed0), "--seed-run", str(seed1))
    assert done.returncode == 0, done.stderr
    result = json.loads((out / "PointNav-v0.json").read_text())
    maml = result["methods"]["maml"]
    assert result["seeds"] == [0, 1] and [p["seed"] for p in maml["per_seed"]] == [0, 1]
    for step in range(4):  # 3 test tasks, the same for both seeds: the mean of the seeds' means
        assert abs(maml["mean"][step] - sum(p["mean"][step] for p in maml["per_seed"]) / 2) < 1e-9
    assert len(result["training_other_seeds"]) == 1
    assert "MAML over 2 seeds" in markdown.read_text()
    (evaluation,) = seed1.glob("eval-T3-E2-k3-seed0.json")  # seed 1 evaluated on seed 0's test tasks
    written = evaluation.stat().st_mtime_ns
    assert reproduce("--from-run", str(seed0), "--seed-run", str(seed1)).returncode == 0
    assert evaluation.stat().st_mtime_ns == written  # reused, not evaluated again
    refused = reproduce("--from-run", str(seed0), "--seed-run", str(seed1), "--seed-run", str(seed1))
    assert refused.returncode != 0 and "repeats seed 1" in refused.stderr
    refused = reproduce("--from-run", str(seed0), "--seed-run", str(seed0))
    assert refused.returncode != 0 and "repeats seed 0" in refused.stderr
    refused = reproduce("--from-run", str(seed0), "--seed-run", str(tmp_path / "nope"))
    assert refused.returncode != 0 and "is not a run directory" in refused.stderr
    assert "Traceback" not in refused.stderr
    # the paper's tasks for the published result alone: each task averaged over the two seeds, the rest unchanged
    no_paper.clear()
    assert reproduce("--paper-tasks-only", "--paper-checkpoint", "last", "--from-run", str(seed0), "--seed-run",
                     str(seed1)).returncode == 0
    added = json.loads((out / "PointNav-v0.json").read_text())
    assert {k: v for k, v in added.items() if k != "paper_tasks"} == result
    check_paper_tasks(added["paper_tasks"], {"maml"})
    assert added["paper_tasks"]["methods"]["maml"]["checkpoints"] == ["checkpoint.pt"] * 2
    per_seed = [json.loads(next(d.glob("eval-T40-E40-k3*-last-maml2017.json")).read_text())["per_task"]
                for d in (seed0, seed1)]  # (seed 1's named -seed0: evaluated on seed 0's rollout stream)
    assert added["paper_tasks"]["methods"]["maml"]["per_task"] == np.mean(per_seed, axis=0).tolist()
    assert "### PointNav-v0 on the paper's own test tasks" in markdown.read_text()
