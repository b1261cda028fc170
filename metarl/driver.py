"""The run driver around an algorithm's `train`: run directory, logging, progress, checkpoints, validation, resume.

After each iteration the driver, in this order: validates every `run.validate_every` iterations (post-adaptation
return on a fixed held-out task set, `val/*` metrics), writes the iteration's metrics record, writes `best.pt` when
the validation return improved, and writes `checkpoint.pt` every `run.checkpoint_every` iterations. Metrics go out
before the checkpoint (and are made durable first), so a kill at any point loses nothing a resume does not recompute
identically. A new run directory is created with its iteration-0 checkpoint, so every run directory is resumable.

Every command holds the run directory's lock (metarl/storage.py) for as long as it writes there: a second writer is
refused with the holder's pid. A resume checks everything before it changes anything: the config strictly (types,
ranges, and equal to the one in the checkpoint), the checkpoint, best.pt, and that metrics.jsonl holds every record
before the checkpoint (a gap there cannot be recomputed from the checkpoint, so the resume refuses).
"""

from __future__ import annotations

import contextlib
import dataclasses
import sys
import time
from collections.abc import Callable
from datetime import timedelta
from pathlib import Path
from typing import TYPE_CHECKING, Any

import torch
from rich.progress import BarColumn, Progress, TextColumn, TimeElapsedColumn, TimeRemainingColumn

from metarl import registry
from metarl.logger import RunLogger
from metarl.policies import Params
from metarl.resume import nothing_to_do, with_overrides
from metarl.runs import (  # noqa: F401  (OpenedRun, open_run, find_algorithm: re-exported for scripts)
    FORMAT_VERSION,
    Interrupted,
    OpenedRun,
    RunDirError,
    atomic_write_bytes,
    config_to_dict,
    find_algorithm,
    metrics_before,
    new_run_dir,
    open_run,
    read_checkpoint,
    read_run,
    remove_stale_temp_files,
    save_checkpoint,
    write_config,
    write_run_files,
)
from metarl.storage import Lock, StorageError, acquire, remove_abandoned_staging
from metarl.training import NonFiniteError, TrainState, all_finite, finite_value, start

if TYPE_CHECKING:
    from torch import nn

    from metarl.algos import Algorithm
    from metarl.family import TaskFamily


def flat_config(cfg: Any, prefix: str = "") -> dict[str, Any]:
    """Nested config dataclass -> {"trpo.max_kl": 0.01, ...} for hyper-parameter tables."""
    out: dict[str, Any] = {}
    for f in dataclasses.fields(cfg):
        value = getattr(cfg, f.name)
        key = f"{prefix}{f.name}"
        if dataclasses.is_dataclass(value):
            out.update(flat_config(value, f"{key}."))
        else:
            out[key] = value
    return out


def checkpoint_payload(algo: str, cfg: Any, spec: registry.FamilySpec, policy: torch.nn.Module,
                       state: TrainState, best: dict[str, float] | None = None) -> dict[str, Any]:
    """What `checkpoint.pt` / `best.pt` hold: the state plus enough to rebuild the policy and check compatibility;
    `best` is the best validation so far ({"iteration", <metric>}, the metric `Algorithm.selection` without its
    "val/" prefix: "return_post" or "return_pre"), restored on resume."""
    from metarl import __version__

    policy.load_state_dict({**policy.state_dict(), **state.params}, strict=False)
    return {
        "format_version": FORMAT_VERSION,
        "metarl_version": __version__,
        "algo": algo,
        "config": config_to_dict(cfg),
        "family_spec": spec.to_json(),
        "policy_state": {k: v.clone() for k, v in policy.state_dict().items()},
        "state": dataclasses.asdict(state),
        "best": best,
        "records_from": 1,  # metrics.jsonl numbers iterations from 1 (a checkpoint without it: from 0, before issue 13)
    }


def state_from_checkpoint(payload: dict[str, Any]) -> TrainState:
    return TrainState(**payload["state"])


class Checkpointer:
    """Writes `checkpoint.pt` every `every` iterations and at the end, and `best.pt` whenever the validation
    return improves; atomically, and never with non-finite parameters."""

    def __init__(self, run_dir: Path, algo: str, cfg: Any, spec: registry.FamilySpec, policy: torch.nn.Module,
                 every: int, total: int, best: dict[str, float] | None = None,
                 sync: Callable[[], None] | None = None, saved_iteration: int | None = None,
                 selection: str = "val/return_post") -> None:
        self.run_dir, self.algo, self.cfg, self.spec, self.policy = run_dir, algo, cfg, spec, policy
        self.selection, self.key = selection, selection.removeprefix("val/")
        # a best ranked by another metric (a checkpoint written before the baselines ranked by return_pre) is not
        # comparable: the next validation starts the ranking afresh
        self.every, self.total, self.best = every, total, best if best is None or self.key in best else None
        self.sync = sync
        """called before each write: makes the metrics durable, so no checkpoint is ever ahead of them"""
        self.saved_iteration = saved_iteration

    def __call__(self, state: TrainState, metrics: dict[str, float]) -> None:
        if not all_finite(state.params):  # guard_update keeps this from happening; never write a NaN checkpoint
            raise NonFiniteError("refusing to checkpoint non-finite parameters")
        value = metrics.get(self.selection)
        if value is not None and finite_value(value) and (self.best is None or value > self.best[self.key]):
            self.best = {"iteration": state.iteration, self.key: value}
            self._save("best.pt", state)
        if state.iteration % self.every == 0 or state.iteration == self.total:
            self.save_last(state)

    def save_last(self, state: TrainState) -> None:
        self._save("checkpoint.pt", state)
        self.saved_iteration = state.iteration

    def _save(self, name: str, state: TrainState) -> None:
        if self.sync is not None:
            self.sync()
        payload = checkpoint_payload(self.algo, self.cfg, self.spec, self.policy, state, self.best)
        save_checkpoint(self.run_dir / name, payload)


class Validator:
    """Return before and after adaptation on a fixed held-out task set: the criterion for `best.pt`.

    MAML evaluated "the model with the best average return during training" (notes/anchors-metarl.md §1.1). We rank
    checkpoints on held-out tasks instead of the training batch's return: those tasks are fixed, drawn from their own
    stream (never the training generator, so validating does not change training), and every validation replays the
    same rollout noise (common random numbers), so differences between iterations come from the parameters alone.
    """

    def __init__(self, algorithm: Algorithm, cfg: Any, family: TaskFamily, policy: nn.Module) -> None:
        from metarl.config import run_backend
        from metarl.evaluate import default_episodes, stream_generator, training_steps
        from metarl.sampler import Sampler

        if algorithm.adaptation_returns is None or algorithm.eval_step_sizes is None:
            raise ValueError("validation needs the algorithm's adaptation_returns and eval_step_sizes")
        generator = stream_generator(cfg.run.seed, "validation")
        self.tasks = family.sample_tasks(cfg.run.validation_tasks, generator)
        self.rollout_state = generator.get_state()
        self.adaptation_returns = algorithm.adaptation_returns
        self.step_sizes = algorithm.eval_step_sizes(cfg, training_steps(cfg))
        self.cfg, self.policy, self.episodes = cfg, policy, default_episodes(cfg)
        self.sampler = Sampler(family, run_backend(cfg.run))

    def __call__(self, params: Params, extra: dict[str, Any] | None = None) -> dict[str, float]:
        """`val/return_pre` (θ) and `val/return_post` (after the training number of adaptation steps); `extra` is
        the run state's (`TrainState.extra`)."""
        clock = time.perf_counter()
        generator = torch.Generator()
        generator.set_state(self.rollout_state)
        returns = self.adaptation_returns(self.cfg, self.sampler, self.policy, params, self.tasks, self.step_sizes,
                                          self.episodes, generator, extra)  # [k+1, T, E]
        per_step = returns.to(torch.float64).mean((1, 2))
        return {"val/return_pre": float(per_step[0]), "val/return_post": float(per_step[-1]),
                "perf/validate_s": time.perf_counter() - clock}


class _PendingLog:
    """Holds an algorithm's record of an iteration until the driver has added its validation metrics
    (`on_iteration`), then writes it; `close` writes anything left.

    Iterations are numbered from 1 in every output (issue 13): record i is the i-th iteration, and checkpoint.pt,
    best.pt, validation and progress of "iteration i" hold or show the parameters after it (`TrainState.iteration`
    counts the iterations done); iteration 0 is the initial policy. The algorithms' loop logs its 0-based loop index,
    so the record is written as index + 1."""

    def __init__(self, sink: RunLogger) -> None:
        self.sink = sink
        self.pending: tuple[int, dict[str, float]] | None = None

    def log(self, step: int, metrics: dict[str, float]) -> None:
        self.flush()
        self.pending = (step + 1, dict(metrics))

    def flush(self, extra: dict[str, float] | None = None) -> None:
        if self.pending is not None:
            (step, metrics), self.pending = self.pending, None  # a failed write is not retried by `close`
            self.sink.log(step, {**metrics, **(extra or {})})

    def close(self) -> None:
        try:
            self.flush()
        finally:
            self.sink.close()


def progress_bar(total: int) -> Progress:
    return Progress(
        TextColumn("[bold]{task.description}"),
        BarColumn(),
        TextColumn("{task.completed}/{task.total}"),
        TextColumn("{task.fields[status]}"),
        TimeElapsedColumn(),
        TextColumn("ETA"),
        TimeRemainingColumn(),
    )


class PlainProgress:
    """Progress where no terminal shows rich's bar (a log file, CI, nohup): one plain line per iteration, at most
    every `every` seconds (and for the last iteration), with returns, sample/update seconds, end-to-end steps/s, ETA."""

    def __init__(self, name: str, start: int, total: int, every: float = 10.0) -> None:
        self.name, self.start, self.total, self.every = name, start, total, every
        self.clock = self.last = time.monotonic()

    def __call__(self, iteration: int, metrics: dict[str, float]) -> None:
        now = time.monotonic()
        if now - self.last < self.every and self.start + 1 < iteration < self.total:
            return
        self.last = now
        done = iteration - self.start
        eta = (now - self.clock) / max(done, 1) * (self.total - iteration)
        print(f"{self.name} {iteration}/{self.total}  {summary(metrics)}  ETA {timedelta(seconds=round(eta))}",
              flush=True)


def summary(metrics: dict[str, float]) -> str:
    """One short status line: pre/post returns, sample and update seconds, end-to-end throughput."""
    post = [k for k in metrics if k.startswith("meta/return_post_")]
    parts = []
    if "meta/return_pre" in metrics:
        parts.append(f"pre {metrics['meta/return_pre']:.1f}")
    if post:
        last = max(post, key=lambda k: int(k.rsplit("_", 1)[1]))
        parts.append(f"post {metrics[last]:.1f}")
    if "val/return_post" in metrics:
        parts.append(f"val {metrics['val/return_post']:.1f}")
    if "perf/sample_s" in metrics and "perf/update_s" in metrics:
        sample, update = metrics["perf/sample_s"], metrics["perf/update_s"]
        parts.append(f"sample {sample:.2f} s  update {update:.2f} s")
        if "perf/steps_per_s" in metrics:  # the steps of the iteration over its whole time, not just sampling
            steps = metrics["perf/steps_per_s"] * sample
            parts.append(f"{steps / max(sample + update, 1e-9):,.0f} steps/s end to end")
    return "  ".join(parts)


Inform = Callable[[str], None]
"""Where the driver reports what it did besides training (e.g. stale temporary files it removed)."""


def run(algo_name: str, cfg: Any, resume_dir: Path | None = None, quiet: bool = False,
        hold: contextlib.ExitStack | None = None, inform: Inform | None = None) -> Path:
    """Train `algo_name` with `cfg` in a new run directory (or continue `resume_dir`: `resume`); returns the run
    directory. Everything is checked before the directory is created; it appears with config.json, family.json and
    the iteration-0 checkpoint.pt, locked. `hold`: keep the lock there after returning (`metarl baseline` evaluates
    the run it trained under the same lock)."""
    from metarl.config import check_finite

    if resume_dir is not None:
        return resume(resume_dir, algo_name, quiet=quiet, hold=hold, inform=inform)
    algo = find_algorithm(algo_name)
    check_finite(cfg)
    try:  # fail early, before creating anything, if the family or its kwargs are wrong
        spec = registry.spec(cfg.family).with_kwargs(**cfg.run.family_kwargs)
        family = registry.make(spec)
    except ValueError as err:  # e.g. low > high, a fractional horizon: bad input, not a bug
        raise registry.FamilyKwargsError(f"invalid run.family_kwargs for {cfg.family}: {err}") from None
    session = start(cfg, None, family)  # the algorithms' own initial state: what a resume from iteration 0 gets

    def fill(directory: Path) -> None:
        write_run_files(directory, algo_name, cfg, spec)
        save_checkpoint(directory / "checkpoint.pt",
                        checkpoint_payload(algo_name, cfg, spec, session.policy, session.state))

    with contextlib.ExitStack() as stack:
        for path in remove_abandoned_staging(Path(cfg.run.runs_dir)):
            _say(inform, f"removed {path}: a run directory whose creation was killed")
        run_dir, lock = new_run_dir(cfg.run.runs_dir, cfg.family, algo_name, cfg.run.seed, fill,
                                    command_of(algo_name))
        (hold or stack).callback(lock.release)
        _train(algo, algo_name, cfg, run_dir, spec, None, None, quiet, saved_iteration=0)
    return run_dir


def resume(run_dir: Path, algo_name: str | None = None, quiet: bool = False,
           hold: contextlib.ExitStack | None = None, inform: Inform | None = None,
           overrides: dict[str, Any] | None = None) -> Path:
    """Continue the run in `run_dir` with its saved config (`metarl train ALGO --resume RUN_DIR`), under its lock;
    everything is checked before anything in the directory changes. `overrides`: `RESUME_OVERRIDES` fields to change
    first, e.g. {"run.iterations": 20} extends a run (written to config.json). Says where it resumes, or that
    there is nothing to do when the checkpoint is at run.iterations already."""
    run_dir = Path(run_dir)
    if not run_dir.is_dir():
        read_run(run_dir)  # raises: says whether it is missing or a file
    with contextlib.ExitStack() as stack:
        lock: Lock = acquire(run_dir, resume_command(algo_name or "", run_dir))
        (hold or stack).callback(lock.release)
        opened = open_run(run_dir)
        if algo_name is not None and opened.algo != algo_name:
            raise RunDirError(f"{run_dir} was trained with {opened.algo!r}, not {algo_name!r}")
        if (run_dir / "best.pt").exists():  # best.pt is what eval reads: it must be usable too
            read_checkpoint(opened, run_dir / "best.pt")
        cfg = with_overrides(opened.cfg, overrides or {})
        state = state_from_checkpoint(opened.payload)
        kept = metrics_before(run_dir / "metrics.jsonl", state.iteration,
                              from_zero="records_from" not in opened.payload)
        if cfg != opened.cfg:
            write_config(run_dir, opened.algo, cfg)
            _say(inform, "config.json: " + ", ".join(f"{k} {flat_config(opened.cfg)[k]!r} -> {v!r}"
                                                     for k, v in (overrides or {}).items()))
        done = state.iteration >= cfg.run.iterations
        for path in remove_stale_temp_files(run_dir):
            _say(inform, f"removed {path.name}: left by a write that was killed")
        # drop the records after the checkpoint (recomputed); an old run's records are renumbered only if it trains
        # on (its checkpoint then says so)
        if kept is not None and not (done and "records_from" not in opened.payload):
            if kept != (run_dir / "metrics.jsonl").read_bytes():
                atomic_write_bytes(run_dir / "metrics.jsonl", kept)
        if done:
            _say(inform, nothing_to_do(opened.algo, resume_command(opened.algo, run_dir), run_dir, state.iteration,
                                       cfg.run.iterations))
            return run_dir
        _say(inform, f"resuming {run_dir} from checkpoint.pt at iteration {state.iteration}"
                     f"{' (the initial policy)' if state.iteration == 0 else ''}: iterations "
                     f"{state.iteration + 1}-{cfg.run.iterations} to go")
        _train(opened.algorithm, opened.algo, cfg, run_dir, opened.spec, state, opened.payload.get("best"),
               quiet, saved_iteration=state.iteration)
    return run_dir


def _say(inform: Inform | None, message: str) -> None:
    if inform is not None:
        inform(message)


def _train(algo: Algorithm, algo_name: str, cfg: Any, run_dir: Path, spec: registry.FamilySpec,
           state: TrainState | None, best: dict[str, float] | None, quiet: bool, saved_iteration: int) -> None:
    """Iterations from `state` (None: the start) to `cfg.run.iterations` in `run_dir`, which this process has locked.
    An interrupt (Ctrl-C, SIGTERM) or a storage error ends with one line that names the checkpoint and the resume
    command."""
    family = registry.make(spec)
    policy = algo.build_policy(cfg, family)
    checkpointer = Checkpointer(run_dir, algo_name, cfg, spec, policy, cfg.run.checkpoint_every, cfg.run.iterations,
                                best, saved_iteration=saved_iteration, selection=algo.selection)
    try:
        _iterate(algo, algo_name, cfg, run_dir, family, policy, state, checkpointer, quiet)
    except KeyboardInterrupt:
        raise Interrupted(f"{_kept(run_dir, checkpointer)}; `{resume_command(algo_name, run_dir)}` continues") \
            from None
    except StorageError as err:
        raise StorageError(f"{err}; {_kept(run_dir, checkpointer)}: fix that, then "
                           f"`{resume_command(algo_name, run_dir)}` continues") from None


def _iterate(algo: Algorithm, algo_name: str, cfg: Any, run_dir: Path, family: TaskFamily, policy: nn.Module,
             state: TrainState | None, checkpointer: Checkpointer, quiet: bool) -> None:
    validate = Validator(algo, cfg, family, policy) if _validates(algo, cfg) else None
    sink = RunLogger(run_dir, tensorboard=cfg.run.tensorboard, hparams=flat_config(cfg),
                     purge_step=None if state is None else state.iteration + 1)  # records are numbered from 1
    checkpointer.sync = sink.sync
    log = _PendingLog(sink)
    first = 0 if state is None else state.iteration
    plain = None if quiet or sys.stdout.isatty() else PlainProgress(f"{algo_name} {cfg.family}", first,
                                                                    cfg.run.iterations)
    with progress_bar(cfg.run.iterations) as bar:
        task = bar.add_task(f"{algo_name} {cfg.family}", total=cfg.run.iterations, completed=first, status="",
                            visible=not quiet and plain is None)

        def on_iteration(s: TrainState, metrics: dict[str, float]) -> None:
            # not "and at the end": a run's metrics must not depend on its length (resume extends runs)
            due = validate is not None and s.iteration % cfg.run.validate_every == 0
            extra = validate(s.params, s.extra) if validate is not None and due else {}
            log.flush(extra)  # the record first: a kill after it but before the checkpoint only repeats work
            checkpointer(s, {**metrics, **extra})
            bar.update(task, completed=s.iteration, status=summary({**metrics, **extra}))
            if plain is not None:
                plain(s.iteration, {**metrics, **extra})

        try:
            final = algo.train(cfg, log, on_iteration, state)
            if isinstance(final, TrainState) and checkpointer.saved_iteration != final.iteration:
                checkpointer.save_last(final)
        finally:
            log.close()


def _kept(run_dir: Path, checkpointer: Checkpointer) -> str:
    initial = " (the initial policy)" if checkpointer.saved_iteration == 0 else ""
    return f"{run_dir / 'checkpoint.pt'} holds iteration {checkpointer.saved_iteration}{initial}"


def command_of(algo_name: str) -> str:
    """The command that trains `algo_name`: "metarl train maml", "metarl baseline random"."""
    if algo_name.startswith("baseline-"):
        return f"metarl baseline {algo_name.removeprefix('baseline-')}"
    return f"metarl train {algo_name}"


def resume_command(algo_name: str, run_dir: Path) -> str:
    """The command that continues `run_dir` (`algo_name` "": unknown yet)."""
    if algo_name.startswith("baseline-"):
        return f"{command_of(algo_name)} --resume {run_dir}"
    return f"metarl train --resume {run_dir}"


def _validates(algo: Algorithm, cfg: Any) -> bool:
    return cfg.run.validate_every > 0 and algo.adaptation_returns is not None and algo.eval_step_sizes is not None
