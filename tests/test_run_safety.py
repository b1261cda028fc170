"""Run directories that never lose data (issue 12): one writer at a time, resumable from iteration 0, eval outputs as
one set, strict validation (exit 2, the directory unchanged byte for byte), one-line storage errors, creation races,
SIGTERM. The randomized kill loop is `test_random_kills_end_identical_to_an_uninterrupted_run` (slow)."""

from __future__ import annotations

import contextlib
import errno
import hashlib
import json
import multiprocessing
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
from test_durability import FlakyNav, only_run, train_argv
from test_train_cli import deterministic_part

from metarl import registry, storage
from metarl.cli import main
from metarl.logger import RunLogger, read_metrics
from metarl.registry import FamilySpec

FIXED = ["--run.threads", "1", "--run.validate-every", "2", "--run.validation-tasks", "2"]
"""One torch thread everywhere (same reductions in every process: identical numbers), validation for best.pt."""


def snapshot(directory: Path) -> dict[str, str]:
    """Every entry under `directory` (hidden ones too): file contents' SHA-256, symlink targets, directories."""
    out = {}
    for path in sorted(directory.rglob("*")):
        key = str(path.relative_to(directory))
        if path.is_symlink():
            out[key] = f"-> {os.readlink(path)}"
        elif path.is_dir():
            out[key] = "dir"
        else:
            out[key] = hashlib.sha256(path.read_bytes()).hexdigest()
    return out


def one_error_line(capsys: pytest.CaptureFixture[str]) -> str:
    captured = capsys.readouterr()
    lines = captured.out.strip().splitlines()
    assert lines and lines[-1].startswith("error:"), captured
    assert "Traceback" not in captured.out + captured.err
    return lines[-1]


def spawn(argv: list[str], **kwargs: object) -> subprocess.Popen:
    env = {**os.environ, "PYTHONHASHSEED": "0", "OMP_NUM_THREADS": "1"}
    return subprocess.Popen([sys.executable, "-m", "metarl", *argv], env=env, **kwargs)  # type: ignore[call-overload]


def wait_for(condition: Callable[[], bool], proc: subprocess.Popen | None = None, timeout: float = 300) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        assert proc is None or proc.poll() is None, "the process ended before the condition held"
        assert time.monotonic() < deadline, "timed out"
        time.sleep(0.005)


def freeze(proc: subprocess.Popen) -> None:
    """SIGSTOP `proc` and wait until it is stopped: the signal is asynchronous, and a process still running a moment
    after it can change its run directory (e.g. a checkpoint's temp file being written) under a snapshot."""
    proc.send_signal(signal.SIGSTOP)
    stat = Path(f"/proc/{proc.pid}/stat")
    wait_for(lambda: stat.read_text().rsplit(")", 1)[1].split()[0] in ("T", "t"), proc, timeout=60)


def records(run_dir: Path) -> int:
    path = run_dir / "metrics.jsonl"
    return path.read_bytes().count(b"\n") if path.exists() else 0


def in_one_thread(fn: Callable[[], int]) -> int:
    """Run `fn` with one torch thread, as the subprocesses (OMP_NUM_THREADS=1): the same numbers."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        return fn()
    finally:
        torch.set_num_threads(threads)


@pytest.fixture(scope="module")
def reference(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """An uninterrupted 8-iteration run: what every interrupted and resumed run must end as."""
    runs = tmp_path_factory.mktemp("reference")
    assert in_one_thread(lambda: main(train_argv(runs, "--run.iterations", "8", "--run.checkpoint-every", "3",
                                                 *FIXED))) == 0
    return only_run(runs)


def assert_same_run(run_dir: Path, reference: Path) -> None:
    ours, theirs = read_metrics(run_dir), read_metrics(reference)
    assert [r["iteration"] for r in ours] == list(range(1, len(theirs) + 1))  # numbered from 1 (issue 13)
    assert [deterministic_part(r) for r in ours] == [deterministic_part(r) for r in theirs]
    for name in ("checkpoint.pt", "best.pt"):
        a, b = (torch.load(d / name, weights_only=False) for d in (run_dir, reference))
        assert a["best"] == b["best"] and a["state"]["iteration"] == b["state"]["iteration"], name
        assert all(torch.equal(a["state"]["params"][k], v) for k, v in b["state"]["params"].items()), name
    assert not [p for p in run_dir.iterdir() if p.name.endswith(".tmp") or p.name == storage.LOCK_NAME]


def resume(run_dir: Path) -> int:
    return in_one_thread(lambda: main(["train", "--resume", str(run_dir)]))


# ----------------------------------------------------------------------------------------------- 1. the lock
def test_a_second_writer_is_refused_while_the_run_lives_and_resumes_after_it_dies(
        tmp_path: Path, reference: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """The live run is frozen (SIGSTOP) mid-training holding its lock: resume and eval are refused with its pid and
    change nothing; once it is killed, the OS has dropped the lock and the resume completes the run exactly."""
    proc = spawn(train_argv(tmp_path, "--run.iterations", "8", "--run.checkpoint-every", "3", *FIXED),
                 stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        wait_for(lambda: any(tmp_path.glob("*/metrics.jsonl")) and records(only_run(tmp_path)) >= 2, proc)
        freeze(proc)
        run_dir = only_run(tmp_path)
        before = snapshot(run_dir)
        for argv in (["train", "--resume", str(run_dir)], ["eval", str(run_dir), "--tasks", "2", "--quiet"],
                     ["train", "maml", "--resume", str(run_dir)], ["baseline", "random", "--resume", str(run_dir)]):
            assert main(argv) == 2
            line = one_error_line(capsys)
            assert f"is in use by process {proc.pid} (metarl train maml" in line, line
            assert snapshot(run_dir) == before
    finally:
        proc.kill()
        proc.wait(timeout=60)
    assert (run_dir / storage.LOCK_NAME).exists()  # left by the killed holder: no longer locked by anyone
    assert resume(run_dir) == 0
    assert_same_run(run_dir, reference)


def test_two_resumes_at_once_one_is_refused(tmp_path: Path, reference: Path,
                                            capsys: pytest.CaptureFixture[str]) -> None:
    """The first resume is frozen right after taking the lock; the second is refused; the first then finishes."""
    runs = tmp_path / "runs"
    assert in_one_thread(lambda: main(train_argv(runs, "--run.iterations", "3", "--run.checkpoint-every", "3",
                                                 *FIXED))) == 0
    run_dir = only_run(runs)
    config = json.loads((run_dir / "config.json").read_text())
    config["config"]["run"]["iterations"] = 8
    (run_dir / "config.json").write_text(json.dumps(config))
    first = spawn(["train", "--resume", str(run_dir)], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        wait_for(lambda: (run_dir / storage.LOCK_NAME).exists()
                 and (run_dir / storage.LOCK_NAME).read_text().startswith(f"{first.pid} "), first)
        freeze(first)
        assert resume(run_dir) == 2
        assert f"in use by process {first.pid} (metarl train --resume {run_dir}" in one_error_line(capsys)
        first.send_signal(signal.SIGCONT)
        assert first.wait(timeout=300) == 0
    finally:
        first.kill()
    assert_same_run(run_dir, reference)


def test_the_lock_is_reentrant_in_one_process_and_free_after_release(tmp_path: Path) -> None:
    with storage.locked(tmp_path, "outer"), storage.locked(tmp_path, "inner"):
        assert (tmp_path / storage.LOCK_NAME).read_text().startswith(f"{os.getpid()} outer ")
        other = subprocess.run([sys.executable, "-c", "import sys; from metarl import storage; "
                                f"storage.acquire(__import__('pathlib').Path({str(tmp_path)!r}), 'x')"],
                               capture_output=True, text=True)
        assert other.returncode == 1 and f"in use by process {os.getpid()} (outer, since" in other.stderr
    assert not (tmp_path / storage.LOCK_NAME).exists()
    with storage.locked(tmp_path, "again"):
        pass


# ----------------------------------------------------------------------------------------------- 2. iteration 0
def test_a_run_killed_before_its_first_checkpoint_resumes(tmp_path: Path, reference: Path,
                                                         capsys: pytest.CaptureFixture[str]) -> None:
    """checkpoint.pt of iteration 0 is written with the directory; stale temp files are removed and reported. (The
    first later checkpoint would be at iteration 6: the process is frozen after its first record, then killed.)"""
    argv = train_argv(tmp_path, "--run.iterations", "8", "--run.checkpoint-every", "6", *FIXED)
    proc = spawn(argv, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        wait_for(lambda: any(tmp_path.glob("*/metrics.jsonl")) and records(only_run(tmp_path)) >= 1, proc)
        freeze(proc)
    finally:
        proc.kill()
        proc.wait(timeout=60)
    run_dir = only_run(tmp_path)
    state = torch.load(run_dir / "checkpoint.pt", weights_only=False)["state"]
    assert state["iteration"] == 0 and records(run_dir) < 6
    (run_dir / ".checkpoint.pt.x1y2z3.tmp").write_bytes(b"half a checkpoint")
    capsys.readouterr()
    assert resume(run_dir) == 0
    assert "removed .checkpoint.pt.x1y2z3.tmp: left by a write that was killed" in capsys.readouterr().out
    assert_same_run(run_dir, reference)


def test_a_new_run_directory_appears_whole_or_not_at_all(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                                        capsys: pytest.CaptureFixture[str]) -> None:
    """A full disk while the iteration-0 checkpoint is written: one line, and no directory (nor staging) left."""
    from metarl import driver

    def full(path: Path, state: object) -> None:
        raise OSError(errno.ENOSPC, "No space left on device", str(path))

    monkeypatch.setattr(driver, "save_checkpoint", full)
    assert main(train_argv(tmp_path / "runs", "--run.iterations", "1")) == 2
    line = one_error_line(capsys)
    assert "cannot write a new run directory in" in line and "no space left on the device" in line
    assert list((tmp_path / "runs").iterdir()) == []


def test_an_abandoned_creation_is_removed_by_the_next_run(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    runs = tmp_path / "runs"
    staging = runs / f".PointNav-v0__maml__0__1.abc{storage.STAGING_SUFFIX}"
    staging.mkdir(parents=True)
    (staging / "config.json").write_text("{}")
    young = runs / f".PointNav-v0__maml__0__2.def{storage.STAGING_SUFFIX}"  # being created: not yet locked
    young.mkdir()
    os.utime(staging, (time.time() - 120, time.time() - 120))
    assert main(train_argv(runs, "--run.iterations", "0")) == 0
    assert f"removed {staging}" in capsys.readouterr().out
    assert sorted(p.name for p in runs.iterdir()) == sorted([young.name, only_visible(runs).name])


# ----------------------------------------------------------------------------------------------- 3, 6. metrics
@pytest.fixture(scope="module")
def checkpointed(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A run stopped at iteration 3 with its checkpoint there (records 0, 1, 2), to damage in copies."""
    runs = tmp_path_factory.mktemp("checkpointed")
    assert main(train_argv(runs, "--run.iterations", "3", "--run.checkpoint-every", "3", *FIXED)) == 0
    return only_run(runs)


def replace_line(number: int, content: bytes) -> Callable[[bytes], bytes]:
    def damage(data: bytes) -> bytes:
        lines = data.split(b"\n")
        lines[number] = content
        return b"\n".join(lines)

    return damage


METRICS_DAMAGES = {
    "torn": replace_line(1, b'{"iteration": 1, "meta/return_pre": -4'),
    "list": replace_line(1, b"[1, 2]"),
    "no-iteration": replace_line(1, b'{"foo": 1}'),
    "null-iteration": replace_line(1, b'{"iteration": null}'),
    "string-value": replace_line(1, b'{"iteration": 1, "meta/return_pre": "abc"}'),
    "binary": replace_line(1, b"\xff\xfe\x00\x81binary"),
    "dropped": lambda data: b"\n".join(line for i, line in enumerate(data.split(b"\n")) if i != 1),
    "duplicated": lambda data: data.split(b"\n")[0] + b"\n" + data,
    "empty-file": lambda data: b"",
}


@pytest.mark.parametrize("damage", sorted(METRICS_DAMAGES))
def test_a_metrics_gap_before_the_checkpoint_is_refused(checkpointed: Path, tmp_path: Path, damage: str,
                                                        capsys: pytest.CaptureFixture[str]) -> None:
    run_dir = Path(shutil.copytree(checkpointed, tmp_path / checkpointed.name))
    path = run_dir / "metrics.jsonl"
    path.write_bytes(METRICS_DAMAGES[damage](path.read_bytes()))
    before = snapshot(run_dir)
    capsys.readouterr()
    assert main(["train", "--resume", str(run_dir)]) == 2
    line = one_error_line(capsys)
    assert "metrics.jsonl" in line and "before" in line and "iteration 3" in line, line
    assert snapshot(run_dir) == before


@pytest.mark.parametrize("damage", ["list", "no-iteration", "null-iteration", "string-value", "binary"])
def test_plot_refuses_a_line_that_is_not_a_record(checkpointed: Path, tmp_path: Path, damage: str,
                                                  capsys: pytest.CaptureFixture[str]) -> None:
    run_dir = Path(shutil.copytree(checkpointed, tmp_path / checkpointed.name))
    path = run_dir / "metrics.jsonl"
    path.write_bytes(METRICS_DAMAGES[damage](path.read_bytes()))
    assert main(["plot", str(run_dir), "--out", str(tmp_path / "p.png")]) == 2
    assert "metrics.jsonl line 2 is not a metrics record" in one_error_line(capsys)
    assert not (tmp_path / "p.png").exists()


def test_junk_after_the_checkpoint_is_dropped_and_recomputed(checkpointed: Path, tmp_path: Path) -> None:
    run_dir = Path(shutil.copytree(checkpointed, tmp_path / checkpointed.name))
    expected = read_metrics(run_dir)
    with (run_dir / "metrics.jsonl").open("ab") as f:
        f.write(b'[1, 2]\n{"foo": 1}\n{"iteration": 7, "x": 1}\n\xff\n{"iteration": 3, "meta/ret')
    assert main(["train", "--resume", str(run_dir)]) == 0  # the run is complete: nothing to recompute
    assert read_metrics(run_dir) == expected


# ----------------------------------------------------------------------------------------------- 5. configs
def edit_config(change: Callable[[dict], None]) -> Callable[[Path], None]:
    def damage(run_dir: Path) -> None:
        data = json.loads((run_dir / "config.json").read_text())
        change(data["config"])
        (run_dir / "config.json").write_text(json.dumps(data))

    return damage


def set_run(**values: object) -> Callable[[dict], None]:
    return lambda c: c["run"].update(values)


CONFIG_DAMAGES = {
    "iterations-12.5": (set_run(iterations=12.5), "run.iterations must be an integer, got 12.5"),
    "meta-batch-20.0": (lambda c: c.update(meta_batch_size=20.0), "meta_batch_size must be an integer, got 20.0"),
    "meta-batch-true": (lambda c: c.update(meta_batch_size=True), "meta_batch_size must be an integer, got True"),
    "episodes-10.5": (lambda c: c.update(episodes_per_task=10.5), "episodes_per_task must be an integer"),
    "seed-abc": (set_run(seed="abc"), "run.seed must be an integer, got 'abc'"),
    "seed-0.5": (set_run(seed=0.5), "run.seed must be an integer, got 0.5"),
    "seed-2**64": (set_run(seed=2**64), "run.seed must be in"),
    "activation-sigmoid": (lambda c: c["policy"].update(activation="sigmoid"), "policy.activation must be one of"),
    "family-kwargs-string": (set_run(family_kwargs="high"), "run.family_kwargs must be a JSON object"),
    "family-kwargs-inf": (set_run(family_kwargs={"high": float("inf")}), "run.family_kwargs"),
    "inner-lr-string": (lambda c: c.update(inner_lr="0.1"), "inner_lr must be a number"),
    "inner-lr-nan": (lambda c: c.update(inner_lr=float("nan")), "inner_lr"),
    "inner-lr-10**400": (lambda c: c.update(inner_lr=10**400), "inner_lr must be a finite number"),
    "init-std-inf": (lambda c: c["policy"].update(init_std=1e999), "policy.init_std must be finite"),
    "policy-not-object": (lambda c: c.update(policy=3), "policy must be a JSON object"),
    "unknown-key": (lambda c: c.update(foo=1), "unknown MAMLConfig fields ['foo']"),
    "unknown-nested-key": (set_run(foo=1), "unknown RunConfig fields ['run.foo']"),
    "meta-batch-5": (lambda c: c.update(meta_batch_size=5), "was trained with (meta_batch_size 5 vs 3)"),
    "validation-tasks": (set_run(validation_tasks=3), "run.validation_tasks 3 vs 2"),
}


@pytest.mark.parametrize("command", ["resume", "eval"])
@pytest.mark.parametrize("damage", sorted(CONFIG_DAMAGES))
def test_a_bad_config_is_refused_and_nothing_changes(checkpointed: Path, tmp_path: Path, damage: str, command: str,
                                                     capsys: pytest.CaptureFixture[str]) -> None:
    run_dir = Path(shutil.copytree(checkpointed, tmp_path / checkpointed.name))
    change, message = CONFIG_DAMAGES[damage]
    edit_config(change)(run_dir)
    before = snapshot(run_dir)
    capsys.readouterr()
    argv = ["train", "--resume", str(run_dir)] if command == "resume" else ["eval", str(run_dir), "--quiet"]
    assert main(argv) == 2
    line = one_error_line(capsys)
    assert message in line, line
    assert snapshot(run_dir) == before


def test_a_longer_run_and_other_run_only_fields_may_change(checkpointed: Path, tmp_path: Path) -> None:
    run_dir = Path(shutil.copytree(checkpointed, tmp_path / checkpointed.name))
    edit_config(set_run(iterations=4, checkpoint_every=1, threads=1, runs_dir="elsewhere"))(run_dir)
    edit_config(lambda c: c.pop("kl_hvp"))(run_dir)  # a config.json from before a field existed: its default
    assert main(["train", "--resume", str(run_dir)]) == 0
    assert [r["iteration"] for r in read_metrics(run_dir)] == [1, 2, 3, 4]


def test_resume_checks_best_pt(checkpointed: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    run_dir = Path(shutil.copytree(checkpointed, tmp_path / checkpointed.name))
    (run_dir / "best.pt").write_bytes((run_dir / "best.pt").read_bytes()[:100])
    before = snapshot(run_dir)
    assert main(["train", "--resume", str(run_dir)]) == 2
    assert "best.pt is corrupt" in one_error_line(capsys)
    assert snapshot(run_dir) == before


def test_a_corrupt_family_json_is_named_once(checkpointed: Path, tmp_path: Path,
                                             capsys: pytest.CaptureFixture[str]) -> None:
    run_dir = Path(shutil.copytree(checkpointed, tmp_path / checkpointed.name))
    (run_dir / "family.json").write_text('{"id": "PointNav-v0", "entry')
    assert main(["train", "--resume", str(run_dir)]) == 2
    line = one_error_line(capsys)
    assert line.count("family.json") == 1 and "is corrupt (invalid JSON" in line, line


# ----------------------------------------------------------------------------------------------- 7, 8. flags
@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["--inner-lr", "inf"], "inner_lr must be finite"),
        (["--inner-lrs", "inf"], "inner_lrs must be finite"),
        (["--outer-lr", "inf"], "outer_lr must be finite"),
        (["--trpo.max-kl", "nan"], "max_kl"),
        (["--trpo.max-kl", "inf"], "max_kl"),
        (["--trpo.cg-damping", "nan"], "cg_damping"),
        (["--policy.init-std", "nan"], "policy.init_std must be finite"),
        (["--policy.init-std", "inf"], "policy.init_std must be finite"),
        (["--dice-lambda", "nan"], "dice_lambda"),
        (["--run.family-kwargs", "high", "inf"], "run.family_kwargs high must be a finite number"),
        (["--run.family-kwargs", "low", "nan"], "run.family_kwargs low must be a finite number"),
        (["--run.family-kwargs", "horizon", "1e30"], "horizon must be a positive int <= 1000000"),
        (["--run.seed", str(2**64)], "run.seed must be in"),
        (["--run.seed", str(-(2**63) - 1)], "run.seed must be in"),
    ],
)
def test_non_finite_and_out_of_range_settings_are_refused(tmp_path: Path, argv: list[str], message: str,
                                                          capsys: pytest.CaptureFixture[str]) -> None:
    assert main(train_argv(tmp_path / "runs", "--run.iterations", "1", *argv)) == 2
    captured = capsys.readouterr()
    assert message in " ".join((captured.out + captured.err).split()), captured  # tyro's box may wrap it
    assert "Traceback" not in captured.out + captured.err
    assert not (tmp_path / "runs").exists()


@pytest.mark.parametrize(("algo", "argv", "message"), [
    ("reptile", ["--outer-lr", "inf"], "outer_lr must be finite"),
    ("reptile", ["--inner-lr", "nan"], "inner_lr"),
    ("es-maml", ["--sigma", "inf"], "sigma must be finite"),
    ("es-maml", ["--meta-lr", "inf"], "meta_lr must be finite"),
])
def test_every_algorithms_floats_are_checked(tmp_path: Path, algo: str, argv: list[str], message: str,
                                             capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["train", algo, "--family", "PointNav-v0", "--run.runs-dir", str(tmp_path / "runs"), *argv]) == 2
    captured = capsys.readouterr()
    assert message in " ".join((captured.out + captured.err).split())
    assert not (tmp_path / "runs").exists()


def test_a_runs_dir_that_is_a_file_gives_one_line(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    runs = tmp_path / "runs"
    runs.write_text("not a directory")
    assert main(train_argv(runs, "--run.iterations", "1")) == 2
    assert f"cannot create a run directory in {runs}: it is a file" in one_error_line(capsys)
    assert main(train_argv(runs / "sub", "--run.iterations", "1")) == 2
    assert "a part of the path is not a directory" in one_error_line(capsys)
    assert runs.read_text() == "not a directory" and [p.name for p in tmp_path.iterdir()] == ["runs"]


def test_a_full_disk_during_training_names_the_checkpoint_and_the_resume(
        tmp_path: Path, reference: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]) -> None:
    """ENOSPC (injected into the file write) on the 6th metrics record: one line; the resume then ends as the
    uninterrupted run."""
    init = RunLogger.__init__

    def full_after_five(self: RunLogger, *args: object, **kwargs: object) -> None:
        init(self, *args, **kwargs)  # type: ignore[arg-type]
        self._file = FullFile(self._file, fail_at=6)  # type: ignore[assignment]

    monkeypatch.setattr(RunLogger, "__init__", full_after_five)
    argv = train_argv(tmp_path, "--run.iterations", "8", "--run.checkpoint-every", "3", *FIXED)
    assert in_one_thread(lambda: main(argv)) == 2
    run_dir = only_run(tmp_path)
    line = one_error_line(capsys)
    assert f"cannot write {run_dir / 'metrics.jsonl'}: no space left on the device" in line, line
    assert f"{run_dir / 'checkpoint.pt'} holds iteration 3" in line
    assert f"`metarl train --resume {run_dir}` continues" in line
    assert len(read_metrics(run_dir)) == 5
    monkeypatch.setattr(RunLogger, "__init__", init)
    assert resume(run_dir) == 0
    assert_same_run(run_dir, reference)


class FullFile:
    """A file whose `fail_at`-th write raises ENOSPC (what a full disk does to an append)."""

    def __init__(self, file: object, fail_at: int) -> None:
        self.file, self.fail_at, self.writes = file, fail_at, 0

    def write(self, text: str) -> int:
        self.writes += 1
        if self.writes == self.fail_at:
            raise OSError(errno.ENOSPC, "No space left on device")
        return self.file.write(text)  # type: ignore[attr-defined]

    def __getattr__(self, name: str) -> object:
        return getattr(self.file, name)


def test_a_read_only_run_directory_gives_one_line(checkpointed: Path, tmp_path: Path,
                                                  monkeypatch: pytest.MonkeyPatch,
                                                  capsys: pytest.CaptureFixture[str]) -> None:
    """EROFS (injected where the lock file is created) for resume and eval; a real read-only mount: below."""
    run_dir = Path(shutil.copytree(checkpointed, tmp_path / checkpointed.name))
    before = snapshot(run_dir)
    real_open = os.open

    def read_only(path: str | Path, flags: int, *args: int) -> int:
        if str(path).endswith(storage.LOCK_NAME):
            raise OSError(errno.EROFS, "Read-only file system", str(path))
        return real_open(path, flags, *args)

    monkeypatch.setattr(storage.os, "open", read_only)
    for argv in (["train", "--resume", str(run_dir)], ["eval", str(run_dir), "--quiet"]):
        assert main(argv) == 2
        assert f"cannot lock {run_dir}" in (line := one_error_line(capsys)) and "read-only" in line, line
    assert snapshot(run_dir) == before


# ----------------------------------------------------------------------------------------------- tmpfs
@pytest.fixture
def tmpfs(tmp_path: Path) -> Iterator[Path]:
    """A 3 MB tmpfs (skipped where this process may not mount one)."""
    mount = tmp_path / "tmpfs"
    mount.mkdir()
    if subprocess.run(["mount", "-t", "tmpfs", "-o", "size=3m", "tmpfs", str(mount)],
                      capture_output=True).returncode != 0:
        pytest.skip("cannot mount a tmpfs here (needs root)")
    try:
        yield mount
    finally:
        subprocess.run(["umount", "-l", str(mount)], check=False)


def fill_up(directory: Path) -> None:
    with (directory / "filler").open("wb") as f, pytest.raises(OSError):
        while True:
            f.write(b"\0" * 65536)
            f.flush()
            os.fsync(f.fileno())


def test_a_real_full_disk_and_a_read_only_mount(tmpfs: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """On a full tmpfs: train, resume and eval each give one line; a good evaluation survives; nothing half-made.
    Remounted read-only: the same."""
    runs = tmpfs / "runs"
    assert main(train_argv(runs, "--run.iterations", "2", *FIXED)) == 0
    run_dir = only_run(runs)
    assert main(["eval", str(run_dir), "--tasks", "2", "--steps", "1", "--quiet"]) == 0
    good = snapshot(run_dir)
    fill_up(tmpfs)
    capsys.readouterr()
    assert main(["eval", str(run_dir), "--tasks", "3", "--steps", "1", "--quiet"]) == 2
    captured = capsys.readouterr().out
    assert "0 (pre)" in captured  # the result was shown before the write failed
    assert "no space left on the device" in captured.strip().splitlines()[-1]
    assert snapshot(run_dir) == good
    assert main(train_argv(runs, "--run.iterations", "2")) == 2
    assert "no space left on the device" in one_error_line(capsys)
    assert [p.name for p in runs.iterdir()] == [run_dir.name]
    (tmpfs / "filler").unlink()
    subprocess.run(["mount", "-o", "remount,ro", str(tmpfs)], check=True)
    for argv in (train_argv(runs, "--run.iterations", "2"), ["train", "--resume", str(run_dir)],
                 ["eval", str(run_dir), "--quiet"]):
        assert main(argv) == 2
        assert "read-only" in one_error_line(capsys)
    assert snapshot(run_dir) == good


# ----------------------------------------------------------------------------------------------- 4. eval
@pytest.fixture
def evaluated(checkpointed: Path, tmp_path: Path) -> Path:
    run_dir = Path(shutil.copytree(checkpointed, tmp_path / checkpointed.name))
    assert main(["eval", str(run_dir), "--tasks", "2", "--steps", "1", "--quiet"]) == 0
    return run_dir


def test_eval_step_sizes_inf_is_refused_before_anything_is_written(evaluated: Path,
                                                                   capsys: pytest.CaptureFixture[str]) -> None:
    before = snapshot(evaluated)
    for value in ("inf", "nan", "-inf"):
        assert main(["eval", str(evaluated), "--steps", "1", "--step-sizes", value]) == 2
        assert "--step-sizes must all be > 0 and finite" in " ".join(capsys.readouterr().err.split())
    assert snapshot(evaluated) == before


def test_a_failed_eval_write_keeps_the_previous_set(evaluated: Path, monkeypatch: pytest.MonkeyPatch,
                                                    capsys: pytest.CaptureFixture[str]) -> None:
    """ENOSPC on the second file of the new set: one line, the old eval.json/csv/png unchanged, no stray files."""
    before = snapshot(evaluated)
    write = storage._write_synced
    written = []

    def full_on_second(path: Path, data: bytes) -> None:
        written.append(path)
        if len(written) == 2:
            raise OSError(errno.ENOSPC, "No space left on device", str(path))
        write(path, data)

    monkeypatch.setattr(storage, "_write_synced", full_on_second)
    capsys.readouterr()
    assert main(["eval", str(evaluated), "--tasks", "3", "--steps", "1", "--quiet"]) == 2
    assert "no space left on the device" in one_error_line(capsys)
    assert snapshot(evaluated) == before


def test_a_kill_between_files_leaves_one_whole_set(evaluated: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """A process that dies after writing part of the new set (simulated: SystemExit from inside the write): readers
    see the old set whole; the next eval removes the leftovers and publishes a new whole set."""
    old = {name: (evaluated / name).read_bytes() for name in ("eval.json", "eval.csv", "eval.png")}
    write = storage._write_synced

    def die_after_two(path: Path, data: bytes) -> None:
        if path.name == "eval.png":
            os.link(path.parent / "eval.json", path.parent / "leftover")  # keep something to prove cleanup
            raise SystemExit(137)
        write(path, data)

    monkeypatch.setattr(storage, "_write_synced", die_after_two)
    monkeypatch.setattr(storage.shutil, "rmtree", lambda *a, **k: None)  # a killed process removes nothing
    with pytest.raises(SystemExit):
        from metarl.evaluate import EvalArgs, evaluate_run

        evaluate_run(EvalArgs(evaluated, tasks=3, steps=1, quiet=True))
    monkeypatch.undo()
    assert {name: (evaluated / name).read_bytes() for name in old} == old
    assert len(list(evaluated.glob(".eval.*"))) == 2  # the published set and the abandoned one
    assert main(["eval", str(evaluated), "--tasks", "3", "--steps", "1", "--quiet"]) == 0
    record = json.loads((evaluated / "eval.json").read_text())
    assert record["protocol"]["tasks"] == 3 and len((evaluated / "eval.csv").read_text().splitlines()) == 1 + 2 * 3
    assert len(list(evaluated.glob(".eval.*"))) == 1


def test_eval_adopts_plain_files_of_a_copied_run_directory(evaluated: Path, tmp_path: Path) -> None:
    """`cp -rL` (symlinks followed) makes eval.json/csv/png plain files and `eval` a directory: eval still works."""
    copy = Path(shutil.copytree(evaluated, tmp_path / "copy", symlinks=False))
    assert not (copy / "eval.json").is_symlink() and (copy / "eval").is_dir()
    assert main(["eval", str(copy), "--tasks", "3", "--steps", "1", "--quiet"]) == 0
    assert (copy / "eval.json").is_symlink() and json.loads((copy / "eval.json").read_text())["protocol"]["tasks"] == 3
    assert len(list(copy.glob(".eval.*"))) == 1


@pytest.fixture
def nan_family() -> Iterator[str]:
    spec = registry.register(FamilySpec(id="test/AlwaysNaNNav-v0", entry_point=f"{FlakyNav.__module__}:FlakyNav",
                                        horizon=20, kwargs={"nan_from": 0, "nan_to": 10**9}))
    yield spec.id
    registry.unregister(spec.id)


def test_eval_of_a_family_that_produces_nan_says_so(tmp_path: Path, nan_family: str,
                                                    capsys: pytest.CaptureFixture[str]) -> None:
    assert main(train_argv(tmp_path, "--family", nan_family, "--run.iterations", "0", "--run.validate-every",
                           "0")) == 0
    run_dir = only_run(tmp_path)
    before = snapshot(run_dir)
    capsys.readouterr()
    assert main(["eval", str(run_dir), "--tasks", "2", "--steps", "1", "--quiet"]) == 1
    line = one_error_line(capsys)
    assert "returns after adaptation step(s) [0, 1] are NaN/Inf" in line and "nothing was written" in line
    assert snapshot(run_dir) == before


def test_ctrl_c_during_eval_says_nothing_was_written(evaluated: Path, monkeypatch: pytest.MonkeyPatch,
                                                     capsys: pytest.CaptureFixture[str]) -> None:
    from metarl import evaluate

    def interrupted(*args: object, **kwargs: object) -> None:
        raise KeyboardInterrupt

    monkeypatch.setattr(evaluate, "evaluate", interrupted)
    before = snapshot(evaluated)
    assert main(["eval", str(evaluated), "--quiet"]) == 130
    out = capsys.readouterr().out
    assert f"interrupted (Ctrl-C): evaluation of {evaluated} stopped: nothing was written" in " ".join(out.split())
    assert snapshot(evaluated) == before


# ----------------------------------------------------------------------------------------------- 9. races
def _create(parent: str, barrier: object, out: object) -> None:
    barrier.wait()  # type: ignore[attr-defined]
    final, lock = storage.create_directory(Path(parent), "same__name", lambda d: (d / "x").write_text("x"), "race")
    lock.release()
    out.put(final.name)  # type: ignore[attr-defined]


def test_concurrent_creations_each_get_their_own_directory(tmp_path: Path) -> None:
    """4 processes released together create the same name, 25 times: every one succeeds, with distinct suffixes."""
    context = multiprocessing.get_context("fork")
    for trial in range(25):
        parent = tmp_path / str(trial)
        barrier, out = context.Barrier(4), context.Queue()
        procs = [context.Process(target=_create, args=(str(parent), barrier, out)) for _ in range(4)]
        for proc in procs:
            proc.start()
        for proc in procs:
            proc.join(60)
        assert [proc.exitcode for proc in procs] == [0] * 4
        names = sorted(out.get(timeout=5) for _ in procs)
        assert names == ["same__name", "same__name_1", "same__name_2", "same__name_3"]
        assert sorted(p.name for p in parent.iterdir()) == names


# ----------------------------------------------------------------------------------------------- 10. SIGTERM
def test_sigterm_stops_like_ctrl_c_and_the_run_resumes(tmp_path: Path, reference: Path) -> None:
    """SIGTERM is delivered to a frozen run (SIGSTOP, then SIGTERM, then SIGCONT: it cannot finish first)."""
    proc = spawn(train_argv(tmp_path, "--run.iterations", "8", "--run.checkpoint-every", "3", *FIXED),
                 stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        wait_for(lambda: any(tmp_path.glob("*/metrics.jsonl")) and records(only_run(tmp_path)) >= 2, proc)
        freeze(proc)
        assert records(only_run(tmp_path)) < 8
        proc.send_signal(signal.SIGTERM)
        proc.send_signal(signal.SIGCONT)
        out, err = proc.communicate(timeout=120)
    finally:
        proc.kill()
    run_dir = only_run(tmp_path)
    assert proc.returncode == 143, err
    message = " ".join(out.split())
    assert f"interrupted (SIGTERM): {run_dir / 'checkpoint.pt'} holds iteration" in message, out
    assert f"`metarl train --resume {run_dir}` continues" in message
    assert not (run_dir / storage.LOCK_NAME).exists()
    assert resume(run_dir) == 0
    assert_same_run(run_dir, reference)


# ----------------------------------------------------------------------------------------------- the kill loop
@pytest.mark.slow
def test_random_kills_end_identical_to_an_uninterrupted_run(tmp_path: Path) -> None:
    """SIGKILL at random moments (seeded) and as soon as a write starts (a temporary file or a new evaluation set
    appears), ≥ 20 times across training runs and evaluations; after each kill the run is resumed (or the eval run
    again) and must end with an uninterrupted run's metrics, checkpoints and evaluation. Prints the counts for the
    README's reliability section."""
    import random

    rng = random.Random(12)
    extra = ["--run.iterations", "16", "--run.checkpoint-every", "1", "--run.threads", "1", "--run.validate-every",
             "1", "--run.validation-tasks", "2"]
    assert in_one_thread(lambda: main(train_argv(tmp_path / "full", *extra))) == 0
    full = only_run(tmp_path / "full")
    eval_argv = ["--tasks", "20", "--steps", "2", "--quiet"]
    assert main(["eval", str(full), *eval_argv]) == 0
    kills: dict[str, int] = {}
    runs = 0
    while sum(kills.values()) < 16:  # training: a new run killed and resumed until it completes, then another
        runs += 1
        where = tmp_path / f"killed{runs}"
        argv = train_argv(where, *extra)
        while True:
            kind = rng.choice(["random", "at a write"])
            proc = spawn(argv, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
            landed = _kill(proc, where, kind, rng, (".checkpoint.pt.", ".best.pt.", ".metrics.jsonl."))
            if landed is None:
                break  # the run completed
            kills[landed] = kills.get(landed, 0) + 1
            run_dirs = [d for d in where.glob("*") if not d.name.startswith(".")]
            if run_dirs:
                argv = ["train", "--resume", str(run_dirs[0])]
        assert_same_run(only_visible(where), full)
    run_dir = only_visible(where)
    while sum(kills.values()) < 24:  # evaluation: killed mid-run or while its set is being written
        kind = rng.choice(["random", "at a write"])
        proc = spawn(["eval", str(run_dir), *eval_argv], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        landed = _kill(proc, run_dir, kind, rng, (".eval.",), delay=(1.0, 5.0))
        if landed is not None:
            kills[f"eval {landed}"] = kills.get(f"eval {landed}", 0) + 1
        if (run_dir / "eval.json").exists():  # whatever a kill left: one whole evaluation
            record = json.loads((run_dir / "eval.json").read_text())
            assert len((run_dir / "eval.csv").read_text().splitlines()) == 1 + len(record["per_task"][0]) * 3
    assert main(["eval", str(run_dir), *eval_argv]) == 0
    ours, theirs = (json.loads((d / "eval.json").read_text()) for d in (run_dir, full))
    assert ours["returns"] == theirs["returns"] and ours["summary"] == theirs["summary"]
    assert len(list(run_dir.glob(".eval.*"))) == 1 and not list(run_dir.glob(".*.tmp"))
    print(f"\nkills survived: {sum(kills.values())} {kills} over {runs} training runs and the evaluations; "
          "data lost: 0")


def only_visible(runs: Path) -> Path:
    (run_dir,) = [d for d in runs.iterdir() if not d.name.startswith(".")]
    return run_dir


def _kill(proc: subprocess.Popen, where: Path, kind: str, rng: object, prefixes: tuple[str, ...],
          delay: tuple[float, float] = (2.5, 6.0)) -> str | None:
    """SIGKILL `proc` after a random delay, or as soon as a new entry starting with one of `prefixes` appears in
    `where` or a run directory in it (a write starting). Returns what the kill hit ("random", "at a write", or
    "inside a write" when a temporary file was left behind), or None if the process finished first."""
    def entries() -> set[Path]:
        found: set[Path] = set()
        for directory in [where, *where.glob("*")]:
            with contextlib.suppress(OSError):  # not a directory, or removed while we look
                found |= {p for p in directory.iterdir() if p.name.startswith(prefixes)}
        return found

    existing = entries()
    deadline = time.monotonic() + (rng.uniform(*delay) if kind == "random" else 300)  # type: ignore[attr-defined]
    while proc.poll() is None and time.monotonic() < deadline:
        if kind != "random" and entries() - existing:
            break
        time.sleep(0.0005)
    if proc.poll() is not None:
        return None
    proc.kill()
    proc.wait(timeout=60)
    return "inside a write" if kind != "random" and entries() - existing else kind
