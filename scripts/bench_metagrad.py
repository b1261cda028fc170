"""Cost of one meta-gradient, second order vs first order, for k = 1..5 inner steps (sampling excluded).

HalfCheetahVel-v0 at the MAML paper's batch size by default: 40 tasks × 20 episodes × 200 steps per inner step and
for the post-update batch, 2×100 ReLU policy. For each k the k+1 batches are sampled once and shared by both orders.
Per (order, k) it reports
- wall time of one meta-gradient (meta-objective through k inner steps + backward), median of repeats;
- memory: the peak resident memory above the baseline while one meta-gradient is computed, measured in a fresh
  subprocess per (order, k) that loads the saved rollouts (Linux VmHWM − VmRSS before the step), so memory freed
  by earlier measurements cannot hide it.

    python scripts/bench_metagrad.py                    # paper batch size (takes a few minutes to sample)
    python scripts/bench_metagrad.py --tasks 8 --episodes 4 --max-k 3   # quick

The last line is one JSON object with `ratio_second_vs_first` (k = 1), times and memory per k. Targets: ratio ≤ 2.0,
memory linear in k.
"""

from __future__ import annotations

import argparse
import itertools
import json
import statistics
import subprocess
import sys
import tempfile
import time
from dataclasses import replace

import torch

import metarl
from metarl.algos.maml import MAMLConfig, collect, meta_gradient
from metarl.config import build_policy
from metarl.policies import params_of
from metarl.sampler import Sampler


def _status_kib(field: str) -> int:
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith(field + ":"):
                return int(line.split()[1])
    raise RuntimeError(f"{field} not in /proc/self/status (Linux only)")


def measure_memory(path: str, order: str) -> None:
    """Subprocess entry: load rollouts, compute one meta-gradient, print the peak extra RSS in MiB."""
    saved = torch.load(path, weights_only=False)
    cfg = replace(saved["cfg"], first_order=order == "first")
    family = metarl.make(cfg.family)
    policy = build_policy(cfg.policy, family, seed=0)
    before = _status_kib("VmRSS")
    meta_gradient(policy, saved["params"], saved["rollouts"], cfg)
    print((_status_kib("VmHWM") - before) / 1024.0)


def peak_extra_mib(path: str, order: str) -> float:
    out = subprocess.run([sys.executable, __file__, "--memory-of", path, "--order", order], check=True,
                         capture_output=True, text=True)
    return float(out.stdout.strip().splitlines()[-1])


def median_seconds(fn: object, repeats: int) -> float:
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        fn()  # type: ignore[operator]
        times.append(time.perf_counter() - start)
    return statistics.median(times)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--family", default="HalfCheetahVel-v0")
    parser.add_argument("--tasks", type=int, default=40)
    parser.add_argument("--episodes", type=int, default=20)
    parser.add_argument("--max-k", type=int, default=5)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--threads", type=int, default=0, help="torch threads for the maths (0: all cores)")
    parser.add_argument("--memory-of", help=argparse.SUPPRESS)  # internal: subprocess memory measurement
    parser.add_argument("--order", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.memory_of:
        measure_memory(args.memory_of, args.order)
        return

    family = metarl.make(args.family)
    base = MAMLConfig(family=args.family, meta_batch_size=args.tasks, episodes_per_task=args.episodes)
    policy = build_policy(base.policy, family, seed=0)
    params = params_of(policy)
    sampler = Sampler(family)
    generator = torch.Generator().manual_seed(0)
    rows = []
    for k in range(1, args.max_k + 1):
        cfg = replace(base, inner_steps=k)
        start = time.perf_counter()
        rollouts = collect(sampler, policy, params, family.sample_tasks(args.tasks, generator), cfg, generator)
        sample_s = time.perf_counter() - start
        if args.threads:
            torch.set_num_threads(args.threads)  # the sampler restores the thread count it changes
        row: dict[str, float] = {"k": k, "sample_s": sample_s}
        with tempfile.TemporaryDirectory() as tmp:
            path = f"{tmp}/rollouts.pt"
            torch.save({"cfg": cfg, "params": params, "rollouts": rollouts}, path)
            for order, first in (("second", False), ("first", True)):
                c = replace(cfg, first_order=first)
                row[f"{order}_s"] = median_seconds(lambda c=c, r=rollouts: meta_gradient(policy, params, r, c),
                                                   args.repeats)
                row[f"{order}_mib"] = peak_extra_mib(path, order)
        rows.append(row)
        print(f"k={k}: second {row['second_s']:.2f} s {row['second_mib']:.0f} MiB | "
              f"first {row['first_s']:.2f} s {row['first_mib']:.0f} MiB | sampling {sample_s:.1f} s", flush=True)
    k1 = rows[0]
    growth = [r["second_mib"] - p["second_mib"] for p, r in itertools.pairwise(rows)]
    print(json.dumps({
        "family": args.family, "tasks": args.tasks, "episodes": args.episodes, "horizon": family.horizon,
        "ratio_second_vs_first": k1["second_s"] / k1["first_s"],
        "seconds": {r["k"]: {"second": r["second_s"], "first": r["first_s"]} for r in rows},
        "memory_mib": {r["k"]: {"second": r["second_mib"], "first": r["first_mib"]} for r in rows},
        "second_order_mib_per_extra_step": growth,
    }))


if __name__ == "__main__":
    main()
