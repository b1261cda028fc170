"""Durability: SIGKILL mid-run then resume, non-finite values, best.pt, and refusing unusable run directories."""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
import torch
from test_train_cli import deterministic_part

from metarl import registry
from metarl.cli import main
from metarl.envs.point_nav import PointNav
from metarl.logger import read_metrics
from metarl.registry import FamilySpec

SMALL = ["--preset", "fast", "--meta-batch-size", "3", "--episodes-per-task", "2", "--policy.hidden", "8", "8",
         "--run.no-tensorboard"]


def train_argv(runs: Path, *extra: str) -> list[str]:
    return ["train", "maml", *SMALL, "--run.runs-dir", str(runs), *extra]


def only_run(runs: Path) -> Path:
    (run_dir,) = runs.glob("*")
    return run_dir


def assert_finite_checkpoints(run_dir: Path) -> None:
    for path in run_dir.glob("*.pt"):
        payload = torch.load(path, weights_only=False)
        assert all(bool(torch.isfinite(v).all()) for v in payload["state"]["params"].values()), path


# ----------------------------------------------------------------------------------------------- SIGKILL
def test_sigkill_then_resume_matches_an_uninterrupted_run(tmp_path: Path) -> None:
    """Kill -9 a training process after its first checkpoint, resume it, and get an uninterrupted run's metrics,
    checkpoint and best.pt; a torn metrics line and a temp file left by a kill mid-write are cleaned up. The
    uninterrupted reference runs in a second process at the same time, every process on one torch thread (two
    processes × two threads on two cores would spin-wait on each other)."""
    extra = ["--run.iterations", "12", "--run.checkpoint-every", "2", "--run.validate-every", "3",
             "--run.validation-tasks", "2"]
    procs = {name: _metarl(train_argv(tmp_path / name, *extra)) for name in ("killed", "full")}
    try:
        deadline = time.monotonic() + 300
        while not _past_first_checkpoint(tmp_path / "killed"):
            assert procs["killed"].poll() is None, "training ended before it could be killed"
            assert time.monotonic() < deadline, "no checkpoint within the deadline"
            time.sleep(0.01)
        procs["killed"].send_signal(signal.SIGKILL)
        assert procs["killed"].wait(timeout=60) == -signal.SIGKILL
        assert procs["full"].wait(timeout=300) == 0
    finally:
        for proc in procs.values():
            if proc.poll() is None:
                proc.kill()
    run_dir, full = only_run(tmp_path / "killed"), only_run(tmp_path / "full")
    killed_at = len(read_metrics(run_dir))
    assert killed_at < 12, "training finished before the kill: lengthen the run"
    state = torch.load(run_dir / "checkpoint.pt", weights_only=False)["state"]
    assert 2 <= state["iteration"] <= killed_at
    assert_finite_checkpoints(run_dir)
    with (run_dir / "metrics.jsonl").open("a") as f:  # what a kill in the middle of a write leaves behind
        f.write('{"iteration": 11, "meta/return_pre": -4')
    (run_dir / ".checkpoint.pt.abc123.tmp").write_bytes(b"half a checkpoint")

    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # as in the processes (OMP_NUM_THREADS=1): the same reductions, the same numbers
    try:
        assert main(["train", "--resume", str(run_dir)]) == 0
    finally:
        torch.set_num_threads(threads)
    resumed, expected = read_metrics(run_dir), read_metrics(full)
    assert [r["iteration"] for r in resumed] == list(range(1, 13))
    assert [deterministic_part(r) for r in resumed] == [deterministic_part(r) for r in expected]
    for name in ("checkpoint.pt", "best.pt"):
        ours, theirs = (torch.load(d / name, weights_only=False) for d in (run_dir, full))
        assert ours["best"] == theirs["best"] and ours["state"]["iteration"] == theirs["state"]["iteration"]
        assert all(torch.equal(ours["state"]["params"][k], v) for k, v in theirs["state"]["params"].items())
    assert not list(run_dir.glob(".*.tmp"))


def _metarl(argv: list[str]) -> subprocess.Popen:
    env = {**os.environ, "PYTHONHASHSEED": "0", "OMP_NUM_THREADS": "1"}
    return subprocess.Popen([sys.executable, "-m", "metarl", *argv], stdout=subprocess.DEVNULL,
                            stderr=subprocess.DEVNULL, env=env)


def _past_first_checkpoint(runs: Path) -> bool:
    """A checkpoint exists and the run is a few iterations further (so the kill lands between checkpoints)."""
    run_dirs = list(runs.glob("*"))
    if not run_dirs or not (run_dirs[0] / "checkpoint.pt").exists():
        return False
    metrics = run_dirs[0] / "metrics.jsonl"
    return metrics.exists() and metrics.read_text().count("\n") >= 4


# ----------------------------------------------------------------------------------------------- best.pt
def test_best_checkpoint_follows_the_validation_return(tmp_path: Path) -> None:
    assert main(train_argv(tmp_path, "--run.iterations", "4", "--run.validate-every", "2",
                           "--run.validation-tasks", "2")) == 0
    run_dir = only_run(tmp_path)
    records = read_metrics(run_dir)
    validated = {r["iteration"]: r["val/return_post"] for r in records if "val/return_post" in r}
    assert sorted(validated) == [2, 4] and all("val/return_pre" in r for r in records if "val/return_post" in r)
    best = torch.load(run_dir / "best.pt", weights_only=False)
    top = max(validated, key=lambda i: validated[i])
    assert best["best"] == {"iteration": top, "return_post": validated[top]}
    assert best["state"]["iteration"] == top


def test_tensorboard_has_the_metrics_and_the_config_as_hparams(tmp_path: Path) -> None:
    from tensorboard.backend.event_processing.event_multiplexer import EventMultiplexer
    from tensorboard.plugins.hparams import plugin_data_pb2

    argv = [a for a in train_argv(tmp_path, "--run.iterations", "1", "--run.validate-every", "1",
                                  "--run.validation-tasks", "2") if a != "--run.no-tensorboard"]
    assert main(argv) == 0
    events = EventMultiplexer().AddRunsFromDirectory(str(tmp_path))
    events.Reload()
    (run,) = events.Runs()
    assert {"meta/return_post_1", "val/return_post", "perf/steps_per_s"} <= set(events.Runs()[run]["scalars"])
    content = events.PluginRunToTagToContent("hparams")[run]
    start = plugin_data_pb2.HParamsPluginData.FromString(content["_hparams_/session_start_info"])
    assert start.session_start_info.hparams["inner_lr"].number_value == 0.1
    assert start.session_start_info.hparams["policy.hidden"].string_value == "(8, 8)"


def test_no_validation_means_no_best_checkpoint(tmp_path: Path) -> None:
    assert main(train_argv(tmp_path, "--run.iterations", "1", "--run.validate-every", "0")) == 0
    run_dir = only_run(tmp_path)
    assert not (run_dir / "best.pt").exists() and "val/return_post" not in read_metrics(run_dir)[0]


# ----------------------------------------------------------------------------------------------- non-finite values
class FlakyNav(PointNav):
    """PointNav whose rewards are NaN in the episodes of resets [nan_from, nan_to) of each batched env. MAML with
    one inner step resets a batched env twice per iteration, so resets 2 and 3 are iteration 1."""

    def __init__(self, spec: FamilySpec, nan_from: int = 2, nan_to: int = 4, **kwargs: float) -> None:
        super().__init__(spec, **kwargs)
        self.nan_from, self.nan_to = nan_from, nan_to

    def make_env(self, num_envs: int, backend: str = "cpu") -> FlakyEnv:
        return FlakyEnv(super().make_env(num_envs, backend), self.nan_from, self.nan_to)


class FlakyEnv:
    def __init__(self, env: object, nan_from: int, nan_to: int) -> None:
        self.env, self.num_envs, self.resets, self.window = env, env.num_envs, 0, range(nan_from, nan_to)  # type: ignore[attr-defined]

    def reset(self, tasks: object, generator: torch.Generator, ids: torch.Tensor | None = None) -> torch.Tensor:
        self.resets += ids is None
        return self.env.reset(tasks, generator, ids)  # type: ignore[attr-defined]

    def step(self, tasks: object, action: torch.Tensor, ids: torch.Tensor | None = None) -> object:
        out = self.env.step(tasks, action, ids)  # type: ignore[attr-defined]
        return out._replace(reward=out.reward * float("nan")) if self.resets - 1 in self.window else out


@pytest.fixture
def flaky() -> Iterator[Callable[[int], str]]:
    ids: list[str] = []

    def register(nan_to: int) -> str:
        spec = registry.register(FamilySpec(id=f"test/FlakyNav{nan_to}-v0", entry_point=f"{__name__}:FlakyNav",
                                            horizon=20, kwargs={"nan_from": 2, "nan_to": nan_to}))
        ids.append(spec.id)
        return spec.id

    yield register
    for id_ in ids:
        registry.unregister(id_)


def test_nan_rewards_are_rejected_logged_and_the_run_recovers(tmp_path: Path, flaky: Callable[[int], str]) -> None:
    family = flaky(4)  # NaN rewards in iteration 1 only
    assert main(train_argv(tmp_path, "--family", family, "--run.iterations", "3", "--run.checkpoint-every", "1",
                           "--run.validate-every", "0")) == 0
    run_dir = only_run(tmp_path)
    records = read_metrics(run_dir)
    assert [r["guard/rejected"] for r in records] == [0.0, 1.0, 0.0]
    assert records[1]["meta/return_pre"] is None  # NaN is logged as null (valid JSON)
    assert records[2]["meta/return_pre"] is not None
    assert_finite_checkpoints(run_dir)


def test_persistent_nan_stops_with_one_clear_line(tmp_path: Path, flaky: Callable[[int], str],
                                                  capsys: pytest.CaptureFixture[str]) -> None:
    family = flaky(10**9)  # NaN from iteration 1 on
    assert main(train_argv(tmp_path, "--family", family, "--run.iterations", "10", "--run.checkpoint-every", "1",
                           "--run.validate-every", "0")) == 1
    printed = capsys.readouterr().out.strip().splitlines()
    assert "consecutive updates produced NaN/Inf" in printed[-1] and printed[-1].startswith("error:")
    run_dir = only_run(tmp_path)
    assert [r["guard/rejected"] for r in read_metrics(run_dir)] == [0.0, 1.0, 1.0, 1.0, 1.0]
    assert_finite_checkpoints(run_dir)
    first = torch.load(run_dir / "checkpoint.pt", weights_only=False)["state"]
    assert first["iteration"] == 5  # the last accepted parameters (from iteration 0), checkpointed finite


# ----------------------------------------------------------------------------------------------- bad run directories
@pytest.fixture(scope="module")
def trained(tmp_path_factory: pytest.TempPathFactory) -> Path:
    runs = tmp_path_factory.mktemp("trained")
    assert main(train_argv(runs, "--run.iterations", "1", "--run.validate-every", "1",
                           "--run.validation-tasks", "2")) == 0
    return only_run(runs)


def edit_json(name: str, change: Callable[[dict], None]) -> Callable[[Path], None]:
    def damage(run_dir: Path) -> None:
        data = json.loads((run_dir / name).read_text())
        change(data)
        (run_dir / name).write_text(json.dumps(data))

    return damage


def truncate(name: str) -> Callable[[Path], None]:
    def damage(run_dir: Path) -> None:
        data = (run_dir / name).read_bytes()
        (run_dir / name).write_bytes(data[: len(data) // 2])

    return damage


def nan_params(run_dir: Path) -> None:
    for name in ("checkpoint.pt", "best.pt"):
        payload = torch.load(run_dir / name, weights_only=False)
        payload["state"]["params"]["log_std"][0] = float("nan")
        torch.save(payload, run_dir / name)


DAMAGES = {
    "corrupt-config": (lambda d: (d / "config.json").write_text('{"format_version": 1, "al'), "config.json is corrupt"),
    "other-version": (edit_json("config.json", lambda c: c.update(format_version=0)), "format version 0"),
    "no-checkpoint": (lambda d: [(d / n).unlink() for n in ("checkpoint.pt", "best.pt")], "checkpoint.pt is missing"),
    "torn-checkpoint": (truncate("checkpoint.pt"), "checkpoint.pt is corrupt"),
    "other-family": (edit_json("family.json", lambda s: s["kwargs"].update(high=0.7)), "was trained on family"),
    "other-policy": (edit_json("config.json", lambda c: c["config"]["policy"].update(hidden=[16, 16])),
                     "the config's policy needs [16"),
    "nan-params": (nan_params, "is not finite"),
}


@pytest.mark.parametrize("command", ["eval", "resume"])
@pytest.mark.parametrize("damage", sorted(DAMAGES))
def test_unusable_run_directory_is_refused_and_left_untouched(trained: Path, tmp_path: Path, command: str,
                                                              damage: str,
                                                              capsys: pytest.CaptureFixture[str]) -> None:
    run_dir = Path(shutil.copytree(trained, tmp_path / trained.name))
    change, message = DAMAGES[damage]
    change(run_dir)
    before = {p.name: p.read_bytes() for p in run_dir.iterdir()}
    argv = ["eval", str(run_dir), "--checkpoint", "last"] if command == "eval" else ["train", "--resume",
                                                                                     str(run_dir)]
    capsys.readouterr()
    assert main(argv) == 2
    printed = capsys.readouterr().out.strip().splitlines()
    assert len(printed) == 1 and message in printed[0] and printed[0].startswith("error:"), printed
    assert {p.name: p.read_bytes() for p in run_dir.iterdir()} == before  # nothing written, nothing removed


def test_missing_run_directory(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    for argv in (["eval", str(tmp_path / "nope")], ["train", "maml", "--resume", str(tmp_path / "nope")]):
        assert main(argv) == 2
        assert "does not exist" in capsys.readouterr().out
    assert not any(tmp_path.iterdir())


def test_resume_refuses_a_run_of_another_algorithm(trained: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["train", "fomaml", "--resume", str(trained)]) == 2
    assert "was trained with 'maml', not 'fomaml'" in capsys.readouterr().out


@pytest.mark.parametrize(
    ("flags", "message"),
    [
        (["--meta-batch-size", "-1"], "meta_batch_size must be >= 1"),
        (["--inner-lr", "0"], "inner_lr (α) must be > 0"),
        (["--policy.hidden", "0"], "policy.hidden sizes must be >= 1"),
        (["--run.validate-every", "-1"], "run.validate_every must be >= 0"),
        (["--run.family-kwargs", "low", "1", "high", "0"], "need finite low <= high"),
        (["--run.family-kwargs", "horizon", "20.5"], "horizon must be a positive int"),
        (["--run.family-kwargs", "nope", "1"], "does not accept 'nope'"),
    ],
)
def test_invalid_config_values_are_refused_before_anything_is_written(tmp_path: Path, flags: list[str],
                                                                      message: str,
                                                                      capsys: pytest.CaptureFixture[str]) -> None:
    assert main(train_argv(tmp_path / "runs", "--run.iterations", "1", *flags)) == 2
    captured = capsys.readouterr()
    assert message in captured.out + captured.err  # flag values: tyro's box around the config's one-line message
    assert not (tmp_path / "runs").exists()
