"""Seconds per MAML-TRPO meta-iteration at a family's MAML-paper preset: sampling vs update, shipped vs exact curvature.

Each iteration samples the pre-update batch, adapts every task, samples the post-update batch (`sample_s`) and takes
the TRPO step (`update_s` = meta-gradient + conjugate gradient + line search). Two runs from the same seed advance
side by side, one iteration each in turn, so that both see the same load: the preset as it ships
(`--curvature-subsample 5`, the step scaled to the measured KL) and with exact curvature (`--curvature-subsample 1`).
Medians after the warm-up iterations; peak RSS per setting (Linux: the high-water mark is reset before each
iteration); the load average beside them, since these 2-core boxes are shared.

    python scripts/bench_iteration.py                          # HalfCheetahVel-v0 (about 3 minutes idle)
    python scripts/bench_iteration.py --family AntVel-v0
    python scripts/bench_iteration.py --iterations 3 --skip-exact
    python scripts/bench_iteration.py --frame-skip 5               # Gymnasium's 0.05 s step instead of the paper's

The paper presets step the physics as the paper's rllab envs did (HalfCheetah 0.01 s: `frame_skip` 1; Ant 0.02 s:
2); `--frame-skip` overrides it (5: Gymnasium's v5 step, five times the cheetah's physics per env step, on which
the targets below were first set).

The last line is one JSON object with `seconds_per_iteration`, `sample_s`, `update_s`, `update_over_sample`,
`peak_rss_mb`, `load_avg` (shipped preset) and the same with an `_exact` suffix. Targets (HalfCheetahVel, idle 2-core
box): update_over_sample ≤ 0.5, update_over_sample_exact ≤ 1.5, seconds_per_iteration ≤ 7, peak_rss_mb ≤ 1536.

    python scripts/bench_iteration.py --compare-threads --iterations 2   # automatic threads vs 1 and 2, idle/loaded

On a GPU: `--device cuda` runs the MJWarp backend and the whole learner there (`--backend` defaults to warp with a
CUDA device, cpu otherwise); `--batch-scale K` multiplies the number of tasks per meta-batch by K (the paper's 20
episodes per task kept), e.g. 16 for 16× the paper's batch. Each phase's clock is read after a CUDA synchronize, and
the JSON line adds `device`, `gpu` (its name) and `peak_gpu_mb` (torch's allocator high-water mark).

    python scripts/bench_iteration.py --device cuda --skip-exact --iterations 3
    python scripts/bench_iteration.py --device cuda --skip-exact --iterations 2 --batch-scale 16
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import time
from dataclasses import dataclass, field, replace
from pathlib import Path

import torch

from metarl.algos.maml import PRESETS, MAMLConfig, collect, meta_update
from metarl.config import apply_overrides
from metarl.sampler import Sampler
from metarl.sim import BackendError, default_nthread, resolve_backend
from metarl.threads import ThreadPolicy
from metarl.training import start

PHASES = ("sample_s", "update_s", "gradient_s", "cg_s", "line_search_s")


def paper_preset(family: str) -> str:
    """The MAML-paper preset (`maml2017-*`) whose family is `family`."""
    for name, preset in PRESETS.items():
        if name.startswith("maml2017") and preset["family"] == family:
            return name
    known = sorted(p["family"] for n, p in PRESETS.items() if n.startswith("maml2017"))
    raise SystemExit(f"no MAML-paper preset for {family}; one of {known}")


def reset_peak_rss() -> None:
    """Reset this process's VmHWM (Linux ≥ 4.0) so the next reading is the peak of what follows."""
    Path("/proc/self/clear_refs").write_text("5")


def peak_rss_mb() -> float:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) / 1024.0
    raise RuntimeError("VmHWM missing from /proc/self/status (Linux only)")


@dataclass
class Runner:
    """One training run advanced an iteration at a time, recording each iteration's phases."""

    cfg: MAMLConfig
    times: dict[str, list[float]] = field(default_factory=lambda: {k: [] for k in (*PHASES, "total_s")})
    rss: list[float] = field(default_factory=list)
    gpu_mb: list[float] = field(default_factory=list)
    kl: list[float] = field(default_factory=list)

    def __post_init__(self) -> None:
        self.policy_threads = ThreadPolicy(self.cfg.run.threads)  # what training does: metarl/threads.py
        self.threads: list[int] = []
        self.session = start(self.cfg, None)
        self.sampler = Sampler(self.session.family, self.session.backend)
        self.cuda = self.sampler.device.type == "cuda"
        self.params = self.session.state.params

    def sync(self) -> None:
        """Wait for the device's queued work (a no-op on the CPU), so that each clock reading covers the work of its
        phase and not just its launch."""
        if self.cuda:
            torch.cuda.synchronize(self.sampler.device)

    def step(self) -> None:
        reset_peak_rss()
        if self.cuda:
            torch.cuda.reset_peak_memory_stats(self.sampler.device)
        family, policy, generator = self.session.family, self.session.policy, self.session.generator
        self.sync()
        clock = time.perf_counter()
        rollouts = collect(self.sampler, policy, self.params, family.sample_tasks(self.cfg.meta_batch_size,
                                                                                 generator), self.cfg, generator)
        self.sync()
        sampled = time.perf_counter()
        self.threads.append(self.policy_threads.apply())
        self.params, _, metrics = meta_update(policy, self.params, rollouts, self.cfg, None)
        self.sync()
        done = time.perf_counter()
        for name, value in (("sample_s", sampled - clock), ("update_s", done - sampled), ("total_s", done - clock),
                            ("gradient_s", metrics["perf/gradient_s"]), ("cg_s", metrics["perf/cg_s"]),
                            ("line_search_s", metrics["perf/line_search_s"])):
            self.times[name].append(value)
        self.rss.append(peak_rss_mb())
        if self.cuda:
            self.gpu_mb.append(torch.cuda.max_memory_allocated(self.sampler.device) / 2**20)
        self.kl.append(metrics["outer/kl"])

    def summary(self, warmup: int, suffix: str) -> dict[str, float]:
        med = {k: statistics.median(v[warmup:] or v) for k, v in self.times.items()}
        out = {"seconds_per_iteration": med["total_s"], **{k: med[k] for k in PHASES},
               "update_over_sample": med["update_s"] / med["sample_s"], "peak_rss_mb": max(self.rss),
               "median_kl": statistics.median(self.kl), "torch_threads": statistics.median(self.threads)}
        if self.gpu_mb:
            out["peak_gpu_mb"] = max(self.gpu_mb)
        return {f"{k}{suffix}": v for k, v in out.items()}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--family", default="HalfCheetahVel-v0")
    parser.add_argument("--iterations", type=int, default=6, help="timed iterations per setting (after warm-up)")
    parser.add_argument("--warmup", type=int, default=1, help="iterations excluded from the medians")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--threads", type=int, default=0,
                        help="torch threads for the update (0: automatic, as training: metarl/threads.py)")
    parser.add_argument("--skip-exact", action="store_true", help="time only the preset as it ships")
    parser.add_argument("--frame-skip", type=int, default=None,
                        help="physics substeps per env step (default: the preset's, the paper's time step)")
    parser.add_argument("--device", default="cpu", help="cpu, cuda or cuda:N: where the simulation and learner run")
    parser.add_argument("--backend", default=None, choices=("cpu", "warp"),
                        help="the simulator backend (default: warp on a CUDA device, else cpu)")
    parser.add_argument("--batch-scale", type=int, default=1,
                        help="multiply the preset's tasks per meta-batch by this (episodes per task unchanged)")
    parser.add_argument("--compare-threads", action="store_true",
                        help="instead: the shipped preset with automatic, 1 and 2 torch threads, idle and next to a "
                             "CPU-bound process this script starts; is the default within 10%% of the best?")
    args = parser.parse_args()
    if args.compare_threads:
        print(json.dumps(compare_threads(args)))
        return

    preset = paper_preset(args.family)
    if args.batch_scale < 1:
        raise SystemExit(f"--batch-scale must be >= 1, got {args.batch_scale}")
    backend = args.backend or ("warp" if args.device.startswith("cuda") else "cpu")
    try:
        backend_string = resolve_backend(backend, args.device)
    except BackendError as err:  # one line that says what to install, not a traceback
        raise SystemExit(str(err)) from None
    shipped = apply_overrides(MAMLConfig(), {**PRESETS[preset], "run.seed": args.seed, "run.threads": args.threads,
                                             "run.backend": backend, "run.device": args.device})
    shipped = replace(shipped, meta_batch_size=shipped.meta_batch_size * args.batch_scale)
    if args.frame_skip is not None:
        shipped = replace(shipped, run=replace(shipped.run, family_kwargs={**shipped.run.family_kwargs,
                                                                           "frame_skip": args.frame_skip}))
    runners = {"": Runner(shipped)}
    if not args.skip_exact:
        runners["_exact"] = Runner(replace(shipped, curvature_subsample=1))
    load_before = os.getloadavg()[0]
    for i in range(args.warmup + args.iterations):
        for suffix, runner in runners.items():
            runner.step()
            t = runner.times
            print(f"iter {i}{suffix or '_shipped'}: sample {t['sample_s'][-1]:.2f} s, update {t['update_s'][-1]:.2f} s "
                  f"(gradient {t['gradient_s'][-1]:.2f}, CG {t['cg_s'][-1]:.2f}, line search "
                  f"{t['line_search_s'][-1]:.2f}), peak RSS {runner.rss[-1]:.0f} MB, KL {runner.kl[-1]:.4f}",
                  flush=True)
    result: dict[str, object] = {"family": args.family, "preset": preset, "iterations": args.iterations,
                                 "warmup": args.warmup, "sim_threads": default_nthread(),
                                 "frame_skip": runners[""].session.family.frame_skip,
                                 "curvature_subsample": shipped.curvature_subsample,
                                 "kl_rescale": shipped.trpo.kl_rescale, "backend": backend_string,
                                 "meta_batch_size": shipped.meta_batch_size,
                                 "episodes_per_task": shipped.episodes_per_task}
    if runners[""].cuda:
        result |= {"device": str(runners[""].sampler.device),
                   "gpu": torch.cuda.get_device_name(runners[""].sampler.device)}
    for suffix, runner in runners.items():
        result |= runner.summary(args.warmup, suffix)
    result["load_avg"] = max(load_before, os.getloadavg()[0])
    print(json.dumps(result))


def compare_threads(args: argparse.Namespace) -> dict[str, object]:
    """Seconds per iteration of the shipped preset for torch threads auto (0), 1 and 2, idle and loaded."""
    preset = paper_preset(args.family)
    out: dict[str, object] = {"family": args.family, "preset": preset, "iterations": args.iterations}
    for condition in ("idle", "loaded"):
        competitor = (subprocess.Popen([sys.executable, "-c", "while True: pass"]) if condition == "loaded"
                      else None)
        try:
            seconds = {}
            for threads in (0, 1, 2):
                cfg = apply_overrides(MAMLConfig(), {**PRESETS[preset], "run.seed": args.seed, "run.threads": threads})
                runner = Runner(cfg)
                for _ in range(args.warmup + args.iterations):
                    runner.step()
                key = "auto" if threads == 0 else str(threads)
                seconds[key] = runner.summary(args.warmup, "")["seconds_per_iteration"]
                print(f"{condition}, threads {key}: {seconds[key]:.2f} s/iter (update on "
                      f"{statistics.median(runner.threads)} threads)", flush=True)
        finally:
            if competitor is not None:
                competitor.kill()
                competitor.wait()
        best = min(seconds.values())
        out[condition] = seconds
        out[f"default_over_best_{condition}"] = seconds["auto"] / best
    out["load_avg"] = os.getloadavg()[0]
    return out


if __name__ == "__main__":
    main()
