"""`metarl train` smoke runs for every algorithm with tiny budgets, run-directory contents, determinism, errors."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

from metarl.algos import ALGORITHMS
from metarl.cli import main
from metarl.logger import read_metrics
from metarl.registry import FamilySpec

TINY = {
    "maml": ["--meta-batch-size", "3", "--episodes-per-task", "2", "--policy.hidden", "8", "8"],
    "fomaml": ["--meta-batch-size", "3", "--episodes-per-task", "2", "--policy.hidden", "8", "8"],
    "reptile": ["--meta-batch-size", "3", "--episodes-per-task", "2", "--inner-steps", "2", "--policy.hidden", "8",
                "8"],
    "es-maml": ["--perturbations", "3", "--num-queries", "2", "--exact-evals", "2"],
}


def train(tmp_path: Path, algo: str, *extra: str, iterations: int = 2, seed: int = 0) -> Path:
    runs = tmp_path / "runs"
    before = set(runs.glob("*")) if runs.exists() else set()
    argv = ["train", algo, "--family", "PointNav-v0", *TINY.get(algo, []), "--run.iterations", str(iterations),
            "--run.runs-dir", str(runs), "--run.seed", str(seed), "--run.checkpoint-every", "1",
            "--run.no-tensorboard", "--run.threads", "1", *extra]  # a fixed count: bit-exact repeats (README)
    assert main(argv) == 0
    (run_dir,) = set(runs.glob("*")) - before
    return run_dir


def deterministic_part(record: dict) -> dict:
    """Everything but wall-clock measurements (perf/ keys other than the step count)."""
    return {k: v for k, v in record.items() if not k.startswith("perf/") or k == "perf/env_steps"}


@pytest.mark.parametrize("algo", sorted(TINY))
def test_train_writes_a_complete_run_directory(tmp_path: Path, algo: str) -> None:
    run_dir = train(tmp_path, algo)
    assert run_dir.name.startswith(f"PointNav-v0__{algo}__0__")
    config = json.loads((run_dir / "config.json").read_text())
    assert config["algo"] == algo and config["config"]["family"] == "PointNav-v0"
    assert config["config"].get("first_order", False) == (algo == "fomaml")
    assert FamilySpec.from_json((run_dir / "family.json").read_text()).id == "PointNav-v0"
    records = read_metrics(run_dir)
    assert [r["iteration"] for r in records] == [1, 2]  # numbered from 1, as checkpoints count (issue 13)
    trust_region = ("outer/kl",) if algo in ("maml", "fomaml") else ()  # Reptile and ES-MAML have no KL
    for key in ("meta/return_pre", "meta/return_post_1", "perf/steps_per_s", *trust_region):
        assert all(key in r for r in records), key
    checkpoint = torch.load(run_dir / "checkpoint.pt", weights_only=False)
    assert checkpoint["state"]["iteration"] == 2 and checkpoint["algo"] == algo
    assert set(checkpoint["state"]["params"]) <= set(checkpoint["policy_state"])


def test_tensorboard_events_are_written(tmp_path: Path) -> None:
    runs = tmp_path / "runs"
    argv = ["train", "maml", "--family", "PointNav-v0", *TINY["maml"], "--run.iterations", "1",
            "--run.runs-dir", str(runs)]
    assert main(argv) == 0
    (run_dir,) = runs.glob("*")
    assert list(run_dir.glob("events.out.tfevents.*"))


@pytest.mark.parametrize("algo", sorted(TINY))
def test_same_seed_gives_identical_metrics(tmp_path: Path, algo: str) -> None:
    first = read_metrics(train(tmp_path / "a", algo, seed=3))
    second = read_metrics(train(tmp_path / "b", algo, seed=3))
    other = read_metrics(train(tmp_path / "c", algo, seed=4))
    assert [deterministic_part(r) for r in first] == [deterministic_part(r) for r in second]
    assert [deterministic_part(r) for r in first] != [deterministic_part(r) for r in other]


def assert_resume_continues_exactly(tmp_path: Path, algo: str, *extra: str) -> None:
    """Stopping after 2 iterations and resuming to 4 gives the metrics of an uninterrupted 4-iteration run."""
    full = read_metrics(train(tmp_path / "full", algo, *extra, iterations=4))
    partial = train(tmp_path / "part", algo, *extra, iterations=2)
    config = json.loads((partial / "config.json").read_text())
    config["config"]["run"]["iterations"] = 4  # extend the run
    (partial / "config.json").write_text(json.dumps(config))
    assert main(["train", algo, "--resume", str(partial)]) == 0
    resumed = read_metrics(partial)
    assert [deterministic_part(r) for r in resumed] == [deterministic_part(r) for r in full]


def test_resume_continues_exactly(tmp_path: Path) -> None:
    assert_resume_continues_exactly(tmp_path, "maml")


def test_preset_then_flags_override(tmp_path: Path) -> None:
    run_dir = train(tmp_path, "maml", "--preset", "fast", iterations=1)
    config = json.loads((run_dir / "config.json").read_text())["config"]
    assert config["policy"]["hidden"] == [8, 8]  # the flag wins over the preset's 64 64
    assert config["policy"]["activation"] == "tanh"  # from the preset


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["train", "nope"], "unknown algorithm"),
        (["train", "maml", "--preset", "nope"], "unknown preset"),
        (["train", "maml", "--family", "HalfCheetahVell-v0", "--run.iterations", "1"], "Did you mean"),
        (["train", "maml", "--inner-lr", "-0.1"], "inner_lr"),
        (["train", "maml", "--resume", "/nonexistent/run"], "not a run directory"),
    ],
)
def test_bad_input_gives_one_clear_line(argv: list[str], message: str, tmp_path: Path,
                                        capsys: pytest.CaptureFixture[str]) -> None:
    assert main([*argv, "--run.runs-dir", str(tmp_path)] if "--resume" not in argv else argv) == 2
    captured = capsys.readouterr()
    assert message in captured.out + captured.err
    assert not any(tmp_path.iterdir())  # nothing was created


def test_every_algorithm_has_a_smoke_test() -> None:
    assert set(ALGORITHMS) == set(TINY)


# ----------------------------------------------------------------------------------------------- resume (issue 13)
def test_resume_extends_a_finished_run_with_run_iterations(tmp_path: Path,
                                                           capsys: pytest.CaptureFixture[str]) -> None:
    """`--resume RUN --run.iterations N`: says where it resumes, writes N into config.json, and ends with the metrics
    of an uninterrupted N-iteration run."""
    full = read_metrics(train(tmp_path / "full", "maml", iterations=4))
    partial = train(tmp_path / "part", "maml", iterations=2)
    capsys.readouterr()
    assert main(["train", "--resume", str(partial), "--run.iterations", "4"]) == 0
    out = " ".join(capsys.readouterr().out.split())
    assert "config.json: run.iterations 2 -> 4" in out
    assert f"resuming {partial} from checkpoint.pt at iteration 2: iterations 3-4 to go" in out
    assert json.loads((partial / "config.json").read_text())["config"]["run"]["iterations"] == 4
    assert [deterministic_part(r) for r in read_metrics(partial)] == [deterministic_part(r) for r in full]
    assert torch.load(partial / "checkpoint.pt", weights_only=False)["state"]["iteration"] == 4


def test_resuming_a_finished_run_has_nothing_to_do(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    from test_run_safety import snapshot

    run_dir = train(tmp_path, "maml", iterations=2)
    before = snapshot(run_dir)
    capsys.readouterr()
    assert main(["train", "maml", "--resume", str(run_dir)]) == 0
    out = " ".join(capsys.readouterr().out.split())
    assert f"nothing to do: {run_dir} is complete (it has finished its 2 iterations)" in out
    assert f"`metarl train --resume {run_dir} --run.iterations N` with N > 2 trains it further" in out
    assert snapshot(run_dir) == before


@pytest.mark.parametrize("flags", [["--inner-lr", "0.2"], ["--run.seed", "3"], ["--run.iterations", "4",
                                                                               "--meta-batch-size", "5"]])
def test_resume_refuses_flags_that_change_the_algorithm(tmp_path: Path, flags: list[str],
                                                        capsys: pytest.CaptureFixture[str]) -> None:
    from test_run_safety import snapshot

    run_dir = train(tmp_path, "maml", iterations=1)
    before = snapshot(run_dir)
    capsys.readouterr()
    assert main(["train", "--resume", str(run_dir), *flags]) == 2
    line = capsys.readouterr().out.strip()
    assert len(line.splitlines()) == 1 and "--resume continues a run with its saved config; drop the other flags" \
        in line and "only --run.iterations" in line, line
    assert snapshot(run_dir) == before
    assert main(["train", "--resume", str(run_dir), "--run.iterations", "-1"]) == 2
    assert "run.iterations must be >= 0" in capsys.readouterr().out
    assert snapshot(run_dir) == before


def test_a_run_numbered_from_zero_is_renumbered_when_it_resumes(tmp_path: Path) -> None:
    """Run directories written before issue 13 numbered metrics records from 0 (and their checkpoints say nothing
    about it): resumed, their records continue from 1, equal to a new run's."""
    full = read_metrics(train(tmp_path / "full", "maml", iterations=4))
    old = train(tmp_path / "old", "maml", iterations=2)
    records = read_metrics(old)
    (old / "metrics.jsonl").write_text("".join(json.dumps({**r, "iteration": r["iteration"] - 1}) + "\n"
                                               for r in records))
    for name in ("checkpoint.pt", "best.pt"):
        if (old / name).exists():
            payload = torch.load(old / name, weights_only=False)
            payload.pop("records_from")
            torch.save(payload, old / name)
    assert main(["train", "--resume", str(old), "--run.iterations", "4"]) == 0
    resumed = read_metrics(old)
    assert [r["iteration"] for r in resumed] == [1, 2, 3, 4]
    assert [deterministic_part(r) for r in resumed] == [deterministic_part(r) for r in full]


def test_resume_and_eval_names_from_the_command_line(tmp_path: Path) -> None:
    """The same in fresh processes, as a user types it: extend a run, find nothing to do, evaluate twice."""
    import subprocess
    import sys

    run_dir = train(tmp_path, "maml", iterations=1)

    def metarl(*argv: str) -> str:
        result = subprocess.run([sys.executable, "-m", "metarl", *argv], capture_output=True, text=True, timeout=600,
                                env={**__import__("os").environ, "OMP_NUM_THREADS": "1"})
        assert result.returncode == 0, result.stdout + result.stderr
        return " ".join(result.stdout.split())

    out = metarl("train", "--resume", str(run_dir), "--run.iterations", "2")
    assert "from checkpoint.pt at iteration 1: iterations 2-2 to go" in out
    # no terminal: one plain progress line per iteration, numbered as metrics.jsonl and the checkpoint are
    assert "maml PointNav-v0 2/2 pre " in out and "steps/s end to end ETA" in out and " 1/2 " not in out
    assert "nothing to do" in metarl("train", "--resume", str(run_dir))
    assert [r["iteration"] for r in read_metrics(run_dir)] == [1, 2]
    out = metarl("eval", str(run_dir), "--tasks", "2", "--steps", "1", "--episodes", "1", "--quiet")
    assert f"results: {run_dir / 'eval-T2-E1-k1.json'}" in out and "checkpoint.pt at iteration 2" in out
    metarl("eval", str(run_dir), "--tasks", "3", "--steps", "1", "--episodes", "1", "--quiet")
    assert sorted(p.name for p in run_dir.glob("eval-*.json")) == ["eval-T2-E1-k1.json", "eval-T3-E1-k1.json"]
