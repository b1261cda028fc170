"""Is one inner step better with the learned value baseline (`--baseline value`) or with the per-task linear one,
from a trained θ? (issue 16: the learned baseline's lower variance at θ₀ did not make MAML learn better.)

Trains `--pretrain` iterations of the PointNav preset as it ships (pytorch-maml-rl's configuration, `lvc`, linear
baseline), fits the learned baseline on `--warmup` meta-batches at that θ (as training keeps it fitted), then adapts
`--tasks` held-out tasks once with each baseline, for each α, from the same θ and with the same random numbers.
Prints the mean return before and after the step; the last line is one JSON object.

    python scripts/probe_value_step.py                       # 300 iterations, 200 tasks: about 5 minutes
"""

from __future__ import annotations

import argparse
import json
import os
from dataclasses import replace

import torch

from metarl.algos.maml import PRESETS, MAMLConfig, adaptation_returns, train, warm_value_baseline
from metarl.config import apply_overrides
from metarl.sampler import Sampler
from metarl.training import start


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--pretrain", type=int, default=300, help="MAML iterations before θ is fixed")
    parser.add_argument("--warmup", type=int, default=60, help="meta-batches the learned baseline fits on at θ")
    parser.add_argument("--tasks", type=int, default=200, help="held-out tasks adapted")
    parser.add_argument("--alphas", type=float, nargs="+", default=[0.07, 0.1, 0.14], help="inner step sizes")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    torch.set_num_threads(1)

    cfg = apply_overrides(MAMLConfig(), {**PRESETS["pytorch-maml-rl-point"], "run.iterations": args.pretrain,
                                         "run.seed": args.seed})
    state = train(cfg)
    session = start(cfg, state)
    family, policy, theta, sampler = session.family, session.policy, state.params, Sampler(session.family)
    value_cfg = replace(cfg, baseline="value")
    warmup_gen = torch.Generator().manual_seed(args.seed + 1)
    value = warm_value_baseline(sampler, policy, theta, value_cfg, args.warmup, warmup_gen)
    extra = {"value": value.state_dict()} if value is not None else {}
    held_out = family.sample_tasks(args.tasks, torch.Generator().manual_seed(args.seed + 2))
    rows = []
    for alpha in args.alphas:
        row = {"alpha": alpha}
        for name, c, ex in (("linear", cfg, None), ("value", value_cfg, extra)):
            returns = adaptation_returns(c, sampler, policy, theta, held_out, (alpha,), cfg.episodes_per_task,
                                         torch.Generator().manual_seed(args.seed + 3), ex)
            row[name] = [float(x) for x in returns.double().mean((1, 2))]
        rows.append(row)
        print(f"α {alpha}: linear {row['linear'][0]:.2f} -> {row['linear'][1]:.2f}   "
              f"value {row['value'][0]:.2f} -> {row['value'][1]:.2f}", flush=True)
    print(json.dumps({"family": cfg.family, "preset": "pytorch-maml-rl-point", "pretrain": args.pretrain,
                      "warmup": args.warmup, "tasks": args.tasks, "rows": rows, "load_avg": os.getloadavg()[0]}))


if __name__ == "__main__":
    main()
