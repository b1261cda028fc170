"""Few-shot evaluation: returns after 0, 1, …, k adaptation steps on a fixed, seeded set of test tasks.

The protocol is MAML's (notes/anchors-metarl.md §1.1): 40 test tasks, each adapted from the meta-parameters with the
algorithm's own test-time operator (`Algorithm.adaptation_returns`) for k = 3 steps, step size α for the first step
and α/2 afterwards (`Algorithm.eval_step_sizes`), E fresh episodes per step. The test tasks come from their own seed
stream (`stream_seed(seed, "test")`), which neither training nor validation ever draws from; every run evaluated with
the same `--seed` (default: the run's seed) sees the same tasks, so algorithms and baselines compare task by task.

`metarl eval RUN_DIR` writes into the run directory, under a name that says the protocol (`eval_name`, e.g.
`eval-T40-E10-k3`; `--out NAME` chooses another):
- `<name>.json`: protocol, task parameters, per-step mean / standard error / 95% CI over tasks, per-task returns
  [k+1][T] (mean over E) and the raw episode returns [k+1][T][E];
- `<name>.csv`: one row per (step, task);
- `<name>.png`: the adaptation curve (mean ± 95% CI per step);
and the same three as `eval.json`, `eval.csv`, `eval.png`: the latest evaluation. Each set of three is replaced at
once (symlinks into `.<name>.<id>/`, `storage.publish_files`): a kill or a full disk leaves the previous set whole.
An evaluation never replaces a different earlier one silently (issue 13): the same name with the same checkpoint and
protocol is the same evaluation again; with another checkpoint (a run trained further) it is refused unless
`--replace`. The options are checked before anything runs, the command holds the run directory's lock, and returns
that are not finite are reported instead of written.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import math
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Annotated, Any, Literal

import torch
import tyro
from rich.progress import BarColumn, Progress, TextColumn, TimeElapsedColumn, TimeRemainingColumn
from torch import Tensor, nn

from metarl.config import SEED_RANGE
from metarl.eval_outputs import (  # noqa: F401  (eval_csv, eval_table, EvalExistsError: re-exported)
    NAME_RE,
    EvalExistsError,
    check_earlier,
    eval_csv,
    eval_name,
    eval_record,
    eval_table,
    write_eval,
)
from metarl.family import TaskFamily, index_tasks, num_tasks
from metarl.policies import Params, num_stacked
from metarl.runs import Interrupted, open_run, remove_stale_temp_files, run_label
from metarl.sampler import Batch, Sampler
from metarl.sim import check_device_name, resolve_backend

Progressor = Callable[[int, str], None]
"""(tasks done so far, status line) -> None; called after each chunk of tasks."""


# ----------------------------------------------------------------------------------------------- seeds and defaults
DEFAULT_TASKS = 40
"""test tasks of an evaluation without --tasks or --task-set (the MAML paper's 40)"""


def stream_seed(seed: int, stream: str) -> int:
    """A 63-bit seed for the named random stream ("test", "validation", ...) of run seed `seed`.

    Training seeds its generator with `seed` itself; hashing keeps every other stream independent of it and of
    each other (SHA-256 of "metarl/<stream>/<seed>"), so evaluation never reuses a training task or rollout draw.
    """
    digest = hashlib.sha256(f"metarl/{stream}/{seed}".encode()).digest()
    return int.from_bytes(digest[:8], "little") >> 1


def stream_generator(seed: int, stream: str) -> torch.Generator:
    return torch.Generator().manual_seed(stream_seed(seed, stream))


def default_episodes(cfg: Any) -> int:
    """E per adaptation step from the training config: `episodes_per_task` (MAML, Reptile) or `episodes_per_query`
    (ES-MAML)."""
    for name in ("episodes_per_task", "episodes_per_query"):
        if hasattr(cfg, name):
            return int(getattr(cfg, name))
    raise ValueError(f"{type(cfg).__name__} has no episodes_per_task; pass --episodes")


def training_steps(cfg: Any) -> int:
    """The number of adaptation steps the algorithm trains with (validation measures the return after them)."""
    return int(getattr(cfg, "inner_steps", 1))


# ----------------------------------------------------------------------------------------------- statistics
def t_quantile(p: float, df: int) -> float:
    """Student-t quantile (e.g. p = 0.975 for a two-sided 95% CI) without scipy: bisection on the CDF, the density
    integrated by Simpson's rule (error < 1e-6 for df ≥ 1; df = 39 gives 2.0227)."""
    if not 0.5 <= p < 1 or df < 1:
        raise ValueError(f"need 0.5 <= p < 1 and df >= 1, got p={p}, df={df}")
    log_norm = math.lgamma((df + 1) / 2) - math.lgamma(df / 2) - 0.5 * math.log(df * math.pi)

    def cdf(x: float) -> float:
        t = torch.linspace(0.0, x, 4001, dtype=torch.float64)
        pdf = torch.exp(log_norm - (df + 1) / 2 * torch.log1p(t.square() / df))
        weights = torch.ones(4001, dtype=torch.float64)
        weights[1:-1:2], weights[2:-1:2] = 4.0, 2.0
        return 0.5 + float((weights * pdf).sum()) * x / 4000 / 3

    low, high = 0.0, 1.0
    while cdf(high) < p:
        low, high = high, high * 2
    for _ in range(60):
        mid = (low + high) / 2
        low, high = (mid, high) if cdf(mid) < p else (low, mid)
    return (low + high) / 2


@dataclass(frozen=True)
class StepStats:
    """The return after `step` adaptation steps, over tasks: mean, standard error and 95% CI (Student t)."""

    step: int
    step_size: float | None
    """the size of the step that led here (None for step 0)"""
    mean: float
    se: float
    ci_low: float
    ci_high: float


def step_stats(per_task: Tensor, step_sizes: Sequence[float]) -> list[StepStats]:
    """per_task: [k+1, T] (mean return per task) -> one `StepStats` per step; SE and CI are NaN when T = 1."""
    T = per_task.shape[1]
    mean = per_task.mean(1)
    se = per_task.std(1, correction=1) / math.sqrt(T) if T > 1 else torch.full_like(mean, math.nan)
    half = se * (t_quantile(0.975, T - 1) if T > 1 else math.nan)
    sizes = [None, *step_sizes]
    return [StepStats(j, sizes[j], float(mean[j]), float(se[j]), float(mean[j] - half[j]), float(mean[j] + half[j]))
            for j in range(per_task.shape[0])]


# ----------------------------------------------------------------------------------------------- evaluation
@dataclass
class EvalResult:
    """Returns of the test tasks: `returns` float64 [k+1, T, E] (episode returns after j adaptation steps)."""

    returns: Tensor
    tasks: Any
    step_sizes: tuple[float, ...]
    adapted: Params | None = None
    """the parameters after k steps, stacked [T, ...], when the operator's last rollout is provably theirs (video)"""
    env_steps: int = 0

    @property
    def per_task(self) -> Tensor:
        """[k+1, T]: mean over the E episodes."""
        return self.returns.mean(-1)

    @property
    def stats(self) -> list[StepStats]:
        return step_stats(self.per_task, self.step_sizes)


class WatchedSampler:
    """The sampler handed to an adaptation operator: counts env steps (steps/s) and remembers the last call's
    parameters and returns. When those returns are the operator's final result, the parameters are the adapted
    policy's: how `evaluate` gets them without widening the `adaptation_returns` interface."""

    def __init__(self, sampler: Sampler) -> None:
        self.sampler, self.family = sampler, sampler.family
        self.steps = 0
        self.last: tuple[Params, Tensor] | None = None

    def sample(self, policy: nn.Module, params: Params, tasks: Any, episodes: int, generator: torch.Generator,
               deterministic: bool = False) -> Batch:
        batch = self.sampler.sample(policy, params, tasks, episodes, generator, deterministic)
        self.steps += batch.num_steps
        self.last = (params, batch.returns)
        return batch


def evaluate(
    algorithm: Any,
    cfg: Any,
    family: TaskFamily,
    policy: nn.Module,
    params: Params,
    *,
    tasks: int = 40,
    step_sizes: Sequence[float],
    episodes: int,
    seed: int,
    chunk_size: int = 10,
    progress: Progressor | None = None,
    backend: str = "cpu",
    extra: dict[str, Any] | None = None,
    test_tasks: Any | None = None,
) -> EvalResult:
    """Adapt `params` to `tasks` test tasks with the algorithm's operator and collect returns [k+1, T, E].

    Tasks are processed in chunks of `chunk_size` (progress, bounded memory); all randomness comes from the
    "test" stream of `seed`, consumed chunk after chunk, so the result depends only on the arguments. `backend`
    (`metarl.sim`: "cpu", "warp", "warp:cuda:0") simulates the rollouts; the policy and the adapted parameters live
    on its device, and the returns come back to the CPU. `extra` is the run state's `TrainState.extra` (MAML's
    learned value baseline adapts with it). `test_tasks` (the family's `Tasks`, e.g. `family.make_tasks(...)`)
    replaces the seeded draw (`tasks` is then their number).
    """
    if algorithm.adaptation_returns is None:
        raise ValueError("this algorithm has no test-time adaptation operator (adaptation_returns)")
    generator = stream_generator(seed, "test")
    tasks = tasks if test_tasks is None else num_tasks(test_tasks)
    drawn = family.sample_tasks(tasks, generator)
    # given tasks replace the draw after it is made: the rollouts' noise is the same either way, so given tasks
    # equal to the seeded draw reproduce the seeded evaluation exactly (tested)
    test_tasks = drawn if test_tasks is None else test_tasks
    sampler = WatchedSampler(Sampler(family, backend))
    policy = policy.to(sampler.sampler.device)
    params = {k: v.to(sampler.sampler.device) for k, v in params.items()}
    chunks, adapted, exact = [], [], True
    clock = time.perf_counter()
    for start in range(0, tasks, chunk_size):
        chunk = index_tasks(test_tasks, slice(start, start + chunk_size))
        returns = algorithm.adaptation_returns(cfg, sampler, policy, params, chunk, tuple(step_sizes), episodes,
                                               generator, extra).to("cpu", torch.float64)  # [k+1, t, E]
        chunks.append(returns)
        exact = exact and _last_call_is_final(sampler, policy, returns, num_tasks(chunk))
        if exact and sampler.last is not None:
            adapted.append(sampler.last[0])
        if progress is not None:
            done = start + num_tasks(chunk)
            post = torch.cat(chunks, 1)[-1].mean()
            progress(done, f"post {post:.1f}  {sampler.steps / (time.perf_counter() - clock):,.0f} steps/s")
    result = EvalResult(torch.cat(chunks, 1), test_tasks, tuple(step_sizes), env_steps=sampler.steps)
    if exact and adapted and len(step_sizes) > 0:
        result.adapted = {k: torch.cat([a[k] for a in adapted]).cpu() for k in adapted[0]}
    return result


def _last_call_is_final(sampler: WatchedSampler, policy: nn.Module, returns: Tensor, rows: int) -> bool:
    """Whether the last rollout gave exactly the operator's final returns with per-task (stacked) parameters."""
    if sampler.last is None:
        return False
    params, last = sampler.last
    stacked = num_stacked(policy, params) == rows
    return stacked and last.shape == returns[-1].shape and torch.equal(last.to("cpu", torch.float64), returns[-1])


# ----------------------------------------------------------------------------------------------- the command
@dataclass(frozen=True)
class EvalArgs:
    """Few-shot evaluation of a run: returns after 0..k adaptation steps on fixed seeded test tasks."""

    run_dir: Annotated[Path, tyro.conf.Positional]
    """the run directory (runs/<family>__<algo>__<seed>__<time>)"""
    tasks: int | None = None
    """test tasks T drawn from the seeded stream (default: 40, as MAML; with --task-set: that set's size)"""
    task_set: str | None = None
    """adapt to given test tasks instead of a seeded draw: `maml2017` (the MAML paper's own 40 test tasks of its
    five families, comparable task by task with its published returns: `metarl.maml2017`) or a JSON file of the
    family's task fields, e.g. {"goal_vel": [0.5, 1.5]} (an eval.json's "tasks" reads the same)"""
    steps: int = 3
    """adaptation steps k; returns are reported after 0..k steps"""
    episodes: int | None = None
    """episodes E per step (default: the training config's episodes_per_task)"""
    step_sizes: tuple[float, ...] = ()
    """one step size per step (default: the algorithm's test schedule; MAML: α, then α/2)"""
    seed: int | None = None
    """seed of the test-task stream (default: the run's seed; equal seeds give equal tasks across runs)"""
    checkpoint: Literal["best", "last"] = "best"
    """best.pt (best validation return; falls back to checkpoint.pt) or the last checkpoint.pt"""
    chunk_size: int = 10
    """tasks adapted per batched call"""
    video: bool = False
    """render episodes before and after adaptation (MuJoCo families; needs an OpenGL backend, e.g. MUJOCO_GL=egl)"""
    video_tasks: int = 2
    """test tasks to render"""
    video_camera: str | None = None
    """a camera of the model by name (e.g. one in your MJCF) instead of the family's own (`MujocoFamily.camera`)"""
    out: str | None = None
    """name of the outputs in the run directory: eval-NAME.json/.csv/.png (default: the protocol, e.g.
    eval-T40-E10-k3)"""
    replace: bool = False
    """replace an earlier evaluation of the same name made from another checkpoint (refused otherwise)"""
    backend: Literal["run", "auto", "cpu", "warp"] = "run"
    """simulator of the test rollouts, as train's --run.backend (run: the run's own setting); an evaluation on
    another backend than cpu is named after it (e.g. eval-T40-E20-k3-warp-cuda): float32 physics differs slightly"""
    device: str = "run"
    """where the rollouts and the adapted policies live, as train's --run.device: auto, cpu, cuda, cuda:N (run: the
    run's own setting)"""
    quiet: bool = False
    """no progress bar"""

    def __post_init__(self) -> None:
        checks = [
            (self.tasks is None or self.tasks >= 1, f"--tasks must be >= 1, got {self.tasks}"),
            (self.task_set is None or self.task_set == "maml2017" or NAME_RE.match(Path(self.task_set).stem),
             f"--task-set must be maml2017 or a JSON file whose name is letters, digits and . _ + - (it names the "
             f"evaluation's files), got {self.task_set!r}"),
            (self.steps >= 0, f"--steps must be >= 0, got {self.steps}"),
            (self.episodes is None or self.episodes >= 1, f"--episodes must be >= 1, got {self.episodes}"),
            (all(math.isfinite(a) and a > 0 for a in self.step_sizes),
             f"--step-sizes must all be > 0 and finite, got {self.step_sizes}"),
            (self.seed is None or SEED_RANGE[0] <= self.seed <= SEED_RANGE[1],
             f"--seed must be in [{SEED_RANGE[0]}, {SEED_RANGE[1]}], got {self.seed}"),
            (not self.step_sizes or len(self.step_sizes) == self.steps,
             f"--step-sizes needs one value per step ({self.steps}), got {len(self.step_sizes)}"),
            (self.chunk_size >= 1 and self.video_tasks >= 1, "--chunk-size and --video-tasks must be >= 1"),
            (self.out is None or (NAME_RE.match(self.out) is not None and self.out not in ("eval", "eval-")),
             f"--out must be a plain name of letters, digits and . _ + - (it names files eval-NAME.json, ...), "
             f"got {self.out!r}"),
        ]
        for ok, message in checks:
            if not ok:
                raise ValueError(message)
        if self.device != "run":
            try:
                check_device_name(self.device)
            except ValueError:
                raise ValueError(f"--device must be run, auto, cpu, cuda or cuda:N, got {self.device!r}") from None


@dataclass
class EvalOutcome:
    """What `evaluate_run` produced: the result and the files written."""

    result: EvalResult
    record: dict[str, Any]
    name: str = "eval"
    """the files' name in the run directory (`eval_name`)"""
    paths: dict[str, Path] = field(default_factory=dict)
    notes: list[str] = field(default_factory=list)
    """one-line messages for the user (e.g. why there is no video)"""


def evaluate_run(args: EvalArgs, label: str | None = None,
                 on_result: Callable[[EvalOutcome], None] | None = None) -> EvalOutcome:
    """`metarl eval`: lock and open the run (checked), evaluate, then write eval.json / eval.csv / eval.png as one set
    (and video). `on_result` sees the outcome before anything is written: a result that cannot be saved (a full
    disk) has been shown. Raises `NonFiniteError` when a return is NaN/Inf (nothing written)."""
    from metarl.storage import locked
    from metarl.training import NonFiniteError

    if not args.run_dir.is_dir():
        open_run(args.run_dir)  # raises: says whether it is missing or a file
    with locked(args.run_dir, f"metarl eval {args.run_dir}"):
        checkpoint = ("best.pt" if args.checkpoint == "best" and (args.run_dir / "best.pt").is_file()
                      else "checkpoint.pt")
        run = open_run(args.run_dir, checkpoint)
        if args.video and args.video_camera is not None and hasattr(run.family, "model"):
            from metarl.camera import render_camera

            render_camera(run.family.model, args.video_camera)  # a camera the model lacks: refused before the work
        given = given_tasks(run.family, run.spec.id, args.task_set)  # read once: the protocol and the rollouts
        protocol, default_sizes = eval_protocol(run, args, checkpoint, given)
        name = eval_name({**protocol, "requested": args.checkpoint}, args.out, default_sizes, run.cfg.run.seed)
        earlier = check_earlier(args.run_dir, name, protocol, args.replace)  # before the work, not after
        written = "nothing was written"
        try:
            outcome = _evaluate_opened(run, args, protocol, label, given)
            outcome.name = name
            outcome.notes += [earlier] if earlier else []
            bad = _non_finite_steps(outcome.result)
            if bad:
                raise NonFiniteError(f"{run.spec.id}: the returns after adaptation step(s) {bad} are NaN/Inf (the "
                                     "family's rewards or the adapted policy are not finite); nothing was written")
            if on_result is not None:
                on_result(outcome)
            written = (f"{name}.json/.csv/.png and eval.json/.csv/.png are each the earlier set or the new one, "
                       "whole")
            outcome.notes += [f"removed {p.name}: left by a write that was killed"
                              for p in remove_stale_temp_files(args.run_dir)]
            outcome.paths = write_eval(args.run_dir, outcome.record, outcome.result, name)
            if args.video:
                from metarl.video import record_videos

                written = "the evaluation is written; the video may be incomplete"
                outcome.notes.append(record_videos(run.family, run.policy, run.params, outcome.result,
                                                   args.run_dir / "video" / name, args.video_tasks,
                                                   camera=args.video_camera))
        except KeyboardInterrupt:
            raise Interrupted(f"evaluation of {args.run_dir} stopped: {written}") from None
    return outcome


def eval_protocol(run: Any, args: EvalArgs, checkpoint: str,
                  given: Any | None = None) -> tuple[dict[str, Any], tuple[float, ...] | None]:
    """(eval.json's `protocol`, the algorithm's default step sizes) from the options, the opened run and the
    `--task-set` tasks (`given_tasks`), before anything is evaluated."""
    cfg = run.cfg
    episodes = args.episodes or default_episodes(cfg)
    default = (tuple(run.algorithm.eval_step_sizes(cfg, args.steps)) if run.algorithm.eval_step_sizes is not None
               else None)
    step_sizes = args.step_sizes or default
    if step_sizes is None:
        raise ValueError(f"{run.algo} has no default test-time step sizes; pass --step-sizes")
    state = run.payload["state"]
    backend = eval_backend(cfg, args)
    tasks = num_tasks(given) if given is not None else (args.tasks or DEFAULT_TASKS)
    if given is not None and args.tasks not in (None, tasks):
        raise ValueError(f"--tasks {args.tasks} disagrees with --task-set {args.task_set}, which holds {tasks} tasks")
    return {
        "tasks": tasks, **({} if given is None else {"task_set": args.task_set}),  # none: as before task sets
        "steps": args.steps, "episodes": episodes, "step_sizes": [float(a) for a in step_sizes],
        "seed": cfg.run.seed if args.seed is None else args.seed, "chunk_size": args.chunk_size,
        "checkpoint": checkpoint, "iteration": state["iteration"], "env_steps_trained": state.get("env_steps", 0),
        **({} if backend == "cpu" else {"backend": backend}),  # cpu: as every evaluation before backends existed
    }, default


def given_tasks(family: TaskFamily, family_id: str, task_set: str | None) -> Any | None:
    """The tasks of `--task-set` for `family` (registered as `family_id`), or None for the seeded draw. Raises
    ValueError, naming the set, for a family the set does not fit or a file that is not a JSON object of its task
    fields."""
    if task_set is None:
        return None
    if task_set == "maml2017":
        from metarl.maml2017 import paper_tasks

        fields = paper_tasks(family_id.removeprefix("oracle/"))  # an oracle run meets its base family's tasks
    else:
        try:
            fields = json.loads(Path(task_set).read_text())
        except OSError as err:
            raise ValueError(f"--task-set {task_set}: cannot read it ({err.strerror})") from None
        except json.JSONDecodeError as err:
            raise ValueError(f"--task-set {task_set}: not JSON ({err})") from None
        if not isinstance(fields, dict):
            raise ValueError(f"--task-set {task_set}: needs a JSON object of task fields, e.g. {{\"goal_vel\": [0.5]}}")
    try:
        return family.make_tasks(**fields)
    except (TypeError, ValueError) as err:
        raise ValueError(f"--task-set {task_set}: {err}") from None


def eval_backend(cfg: Any, args: EvalArgs) -> str:
    """The backend string (`metarl.sim`) of the test rollouts: `--backend`/`--device`, each defaulting to the
    run's own `run.backend`/`run.device` (auto for a config written before they existed). Raises `BackendError`."""
    backend = cfg.run.backend if args.backend == "run" else args.backend
    device = cfg.run.device if args.device == "run" else args.device
    return resolve_backend(backend, device)


def _evaluate_opened(run: Any, args: EvalArgs, protocol: dict[str, Any], label: str | None,
                     given: Any | None) -> EvalOutcome:
    p = protocol
    with eval_progress(p["tasks"], f"eval {run.algo} {run.spec.id}", quiet=args.quiet) as progress:
        result = evaluate(run.algorithm, run.cfg, run.family, run.policy, run.params, tasks=p["tasks"],
                          step_sizes=p["step_sizes"], episodes=p["episodes"], seed=p["seed"],
                          chunk_size=p["chunk_size"], progress=progress, backend=p.get("backend", "cpu"),
                          extra=run.payload["state"].get("extra"),
                          test_tasks=given)
    label = label or run_label(run.algo, run.spec.id, run.cfg.run.seed)
    return EvalOutcome(result, eval_record(result, run.algo, run.spec.to_json(), label, protocol))


def _non_finite_steps(result: EvalResult) -> list[int]:
    """Adaptation steps j whose returns [T, E] hold a NaN or ±Inf."""
    finite = torch.isfinite(result.returns).flatten(1).all(1)
    return [j for j in range(finite.shape[0]) if not bool(finite[j])]


@contextlib.contextmanager
def eval_progress(total: int, description: str, quiet: bool = False) -> Iterator[Progressor]:
    """A rich progress bar over test tasks: tasks done, post-adaptation return so far, steps/s, elapsed, ETA."""
    bar = Progress(TextColumn("[bold]{task.description}"), BarColumn(),
                   TextColumn("{task.completed}/{task.total} tasks"), TextColumn("{task.fields[status]}"),
                   TimeElapsedColumn(), TextColumn("ETA"), TimeRemainingColumn(), disable=quiet)
    with bar:
        task = bar.add_task(description, total=total, status="")
        yield lambda done, status: bar.update(task, completed=done, status=status)


