"""Env-steps/s of our sampler against raw `mujoco.batch` physics and Gymnasium's vector envs, in one run.

Four ways to roll out N = T·E environments for H steps of a MuJoCo family, timed in the same process:

- **ours**: `Sampler(family).sample(policy, params, tasks, E, generator)`: one `mujoco.batch.Batch`, rewards,
  resets, action noise, log-probabilities and the [T, E, H] buffers.
- **physics**: the ceiling: a `mujoco.batch.Batch` of the same model (same thread count, same `persistent` flag as
  our simulator) stepping `nstep=frame_skip` with uniform random controls; no policy, no rewards, no buffers.
- **sync** / **async**: Gymnasium's `SyncVectorEnv` / `AsyncVectorEnv` (default fork context, shared memory) of N
  copies of the family's Gymnasium env (HalfCheetah-v5 or Ant-v5), built from our vendored XML (the same model, and
  no `settotalmass` warning from each of N workers). Actions come from the same `GaussianMLP` (same weights, torch on
  one thread) on the batched observations, with Gaussian noise and log-probabilities, and obs/act/rew/logp are stored
  in [N, H] buffers: the work a sampler does, so the comparison is apples to apples.

AsyncVectorEnv runs one process per env, so N=200 means 200 processes on this 2-core box. We measure exactly that
rather than fewer processes with several envs each (which Gymnasium does not offer): it is the peer as users run it.
Measured on 2 cores: 200 workers start in about 5 s and take about 1 GiB in all, and step at about 3k env-steps/s,
no slower than 20 workers; start-up and `close()` are not timed. Because it is by far the slowest, it gets fewer
repeats (`--async-repeats`).

Repeats are interleaved (ours, physics, sync, async, ours, ...) so that load from other processes on a shared box
hits every contender alike; each figure is the median over repeats of N·H / seconds for one rollout (for families
that terminate, our count is the steps that happened). Warm-ups are untimed. The last line printed is one JSON
object: `steps_per_s` (ours), `ratio_vs_physics`, `ratio_vs_sync`, `ratio_vs_async`, the per-contender medians,
`physics_ratio_vs_sync`/`_async` (the ceiling's own ratios: no sampler on this Batch can beat them) and the load
average. On a busy box the ceiling's lead shrinks: with load averages of 20+ from other processes we measured
physics at only 2.2-2.4x SyncVectorEnv (a 2-thread pool with a barrier per step loses more to preemption than one
thread does), against 4-4.5x at load 3-10. Compare ratios from runs at similar load.

`--backend warp` adds a fifth contender, **warp**: the same sampler on the MJWarp backend (float32 physics, all N
simulations as worlds of one model; `--device cuda` puts the worlds and the policy on the GPU), interleaved with the
others; its first rollout (Warp's kernel compile or cache load) is an untimed warm-up. The JSON line then also holds
`warp_steps_per_s`, `cpu_steps_per_s` (ours on the CPU backend), `ratio_warp_vs_cpu` and `device`. On Warp's CPU
device this measures correctness plumbing, not speed: MJWarp's CPU backend is 5-30x slower than mujoco.batch
(notes/batched-sim.md §4).

    python scripts/bench_sampler.py                         # HalfCheetahVel-v0, T=20 × E=10 = 200 envs, H=200
    python scripts/bench_sampler.py --horizon 50            # a quick run
    python scripts/bench_sampler.py --family AntVel-v0      # against Ant-v5
    python scripts/bench_sampler.py --sweep 20,200,1000 --skip async
    python scripts/bench_sampler.py --backend warp --device cuda --sweep 1024,4096,16384 --skip sync,async
"""

from __future__ import annotations

import argparse
import copy
import json
import os
import statistics
import time
from collections.abc import Callable
from dataclasses import dataclass

import gymnasium as gym
import mujoco
import mujoco.batch
import numpy as np
import torch

import metarl
from metarl.envs.locomotion import AntFamily, CheetahFamily
from metarl.family import MujocoFamily, MujocoVecEnv
from metarl.policies import GaussianMLP, gaussian_log_prob, params_of
from metarl.sampler import Sampler
from metarl.sim import BackendError, resolve_backend

CONTENDERS = ("ours", "physics", "sync", "async", "warp")
GYM_IDS: dict[type, str] = {CheetahFamily: "HalfCheetah-v5", AntFamily: "Ant-v5"}
"""The Gymnasium env whose model and observation each built-in MuJoCo family reproduces."""

Rollout = Callable[[], int]
"""Runs one timed rollout and returns the number of env steps it made."""


@dataclass(frozen=True)
class Setup:
    family: MujocoFamily
    gym_id: str
    tasks: int
    episodes: int
    horizon: int
    hidden: tuple[int, ...]
    seed: int
    warp: str | None = None
    """the MJWarp backend string to time as well ("warp", "warp:cuda"), or None"""

    @property
    def num_envs(self) -> int:
        return self.tasks * self.episodes


# ----------------------------------------------------------------------------------------------- contenders
def ours(setup: Setup, policy: GaussianMLP, backend: str = "cpu") -> tuple[Rollout, Sampler]:
    sampler = Sampler(setup.family, backend)
    policy = policy.to(sampler.device)  # a copy on a GPU, the module itself on the CPU
    params = params_of(policy)
    generator = torch.Generator().manual_seed(setup.seed)
    tasks = setup.family.sample_tasks(setup.tasks, generator)

    def rollout() -> int:
        return sampler.sample(policy, params, tasks, setup.episodes, generator).num_steps

    return rollout, sampler


def physics(setup: Setup, nthread: int, horizon: int | None = None) -> Rollout:
    """Random controls on a bare `Batch`: what stepping the simulation alone costs."""
    family = setup.family
    batch = mujoco.batch.Batch(family.model, setup.num_envs, nthread=nthread, persistent=family.persistent)
    ctrl = batch.bind("ctrl")
    low, high = family.model.actuator_ctrlrange.T
    rng = np.random.default_rng(setup.seed)
    steps = setup.horizon if horizon is None else horizon

    def rollout() -> int:
        batch.reset()
        for _ in range(steps):
            ctrl[:] = rng.uniform(low, high, size=ctrl.shape)
            batch.step(nstep=family.frame_skip)
        return setup.num_envs * steps

    return rollout


def gym_rollout(envs: gym.vector.VectorEnv, policy: GaussianMLP, horizon: int, seed: int) -> Rollout:
    """Our sampler's work on a Gymnasium vector env: policy, noise, log-probabilities, [N, H] buffers."""
    n, obs_dim = envs.observation_space.shape
    act_dim = envs.single_action_space.shape[0]
    low, high = envs.single_action_space.low, envs.single_action_space.high
    generator = torch.Generator().manual_seed(seed)

    @torch.no_grad()
    def rollout() -> int:
        buffers = torch.zeros(n, horizon, obs_dim), torch.zeros(n, horizon, act_dim), torch.zeros(n, horizon)
        obs_buf, act_buf, rew_buf = buffers
        logp_buf = torch.zeros(n, horizon)
        obs, _ = envs.reset(seed=seed)
        for h in range(horizon):
            obs_t = torch.from_numpy(obs).to(torch.float32)
            out = policy(obs_t)
            act = out.mean + torch.exp(out.log_std) * torch.randn(out.mean.shape, generator=generator)
            obs_buf[:, h], act_buf[:, h], logp_buf[:, h] = obs_t, act, gaussian_log_prob(out, act)
            obs, rew, _, _, _ = envs.step(np.clip(act.numpy().astype(np.float64), low, high))
            rew_buf[:, h] = torch.from_numpy(rew)
        return n * horizon

    return rollout


def make_vector_env(setup: Setup, asynchronous: bool) -> gym.vector.VectorEnv:
    xml = str(setup.family.xml)
    fns = [lambda: gym.make(setup.gym_id, xml_file=xml) for _ in range(setup.num_envs)]
    envs = gym.vector.AsyncVectorEnv(fns) if asynchronous else gym.vector.SyncVectorEnv(fns)
    if envs.single_observation_space.shape != (setup.family.obs_dim,):
        envs.close()
        raise ValueError(f"{setup.gym_id} observes {envs.single_observation_space.shape}, "
                         f"{setup.family.id} {setup.family.obs_dim}: pick a matching --gym-id")
    return envs


# ----------------------------------------------------------------------------------------------- timing
def measure(setup: Setup, skip: set[str], repeats: int, async_repeats: int) -> tuple[dict[str, float], int]:
    """Median env-steps/s of each contender over interleaved repeats, and the simulation threads used."""
    policy = GaussianMLP(setup.family.obs_dim, setup.family.act_dim, hidden=setup.hidden)
    rollouts: dict[str, Rollout] = {}
    vector_envs: list[gym.vector.VectorEnv] = []
    try:
        rollouts["ours"], sampler = ours(setup, policy)
        rollouts["ours"]()  # warm-up: builds the simulator
        env = sampler.env(setup.num_envs)
        assert isinstance(env, MujocoVecEnv)
        nthread: int = env.sim.nthread  # type: ignore[attr-defined]  # the CPU backend's
        if "physics" not in skip:
            physics(setup, nthread, horizon=10)()
            rollouts["physics"] = physics(setup, nthread)
        if setup.warp is not None:
            rollouts["warp"], _ = ours(setup, copy.deepcopy(policy), setup.warp)
            rollouts["warp"]()  # warm-up: Warp compiles (or loads from its cache) its kernels
        for name in ("sync", "async"):
            if name not in skip:
                envs = make_vector_env(setup, asynchronous=name == "async")
                vector_envs.append(envs)
                gym_rollout(envs, policy, min(10, setup.horizon), setup.seed)()  # warm-up
                rollouts[name] = gym_rollout(envs, policy, setup.horizon, setup.seed)
        rates: dict[str, list[float]] = {name: [] for name in rollouts}
        for r in range(max(repeats, async_repeats)):
            for name, rollout in rollouts.items():
                if r < (async_repeats if name == "async" else repeats):
                    start = time.perf_counter()
                    steps = rollout()
                    rates[name].append(steps / (time.perf_counter() - start))
    finally:
        for envs in vector_envs:
            envs.close()
    return {name: statistics.median(values) for name, values in rates.items()}, nthread


def result_row(setup: Setup, rates: dict[str, float], nthread: int) -> dict[str, float | int | str]:
    row: dict[str, float | int | str] = {"family": setup.family.id, "N": setup.num_envs, "T": setup.tasks,
                                         "E": setup.episodes, "H": setup.horizon, "nthread": nthread,
                                         "steps_per_s": round(rates["ours"])}
    for name in CONTENDERS[1:4]:
        if name in rates:
            row[f"{name}_steps_per_s"] = round(rates[name])
            row[f"ratio_vs_{name}"] = round(rates["ours"] / rates[name], 3)
    for name in ("sync", "async"):
        if "physics" in rates and name in rates:  # the most any sampler on this Batch could reach (load-dependent)
            row[f"physics_ratio_vs_{name}"] = round(rates["physics"] / rates[name], 3)
    if "warp" in rates:
        assert setup.warp is not None
        row["warp_steps_per_s"], row["cpu_steps_per_s"] = round(rates["warp"]), round(rates["ours"])
        row["ratio_warp_vs_cpu"] = round(rates["warp"] / rates["ours"], 4)
        row["device"] = setup.warp.partition(":")[2] or "cpu"
        if row["device"].startswith("cuda"):
            row["gpu"] = torch.cuda.get_device_name(row["device"])
    row["load_avg_1m"] = round(os.getloadavg()[0], 2)  # other processes' load at the end of this row
    return row


def table_header() -> str:
    rates = " ".join(f"{name:>9}" for name in CONTENDERS)
    ratios = " ".join(f"{'÷' + name:>9}" for name in CONTENDERS[1:4])
    return f"{'N':>6} {'H':>5} | {rates} | {ratios}\n" + "-" * (16 + 10 * len(CONTENDERS) + 10 * 3)


def table_row(row: dict) -> str:
    rates = [row.get("steps_per_s" if name == "ours" else f"{name}_steps_per_s") for name in CONTENDERS]
    ratios = [row.get(f"ratio_vs_{name}") for name in CONTENDERS[1:4]]
    return (f"{row['N']:>6} {row['H']:>5} | " + " ".join(f"{v:>9,}" if v else f"{'-':>9}" for v in rates)
            + " | " + " ".join(f"{v:>8.2f}×" if v else f"{'-':>9}" for v in ratios))


# ----------------------------------------------------------------------------------------------- CLI
def parse_args() -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--family", default="HalfCheetahVel-v0", help="a registered MuJoCo family")
    p.add_argument("--gym-id", default=None, help="the Gymnasium env to compare with (default: the family's body, "
                   "HalfCheetah-v5 or Ant-v5)")
    p.add_argument("--tasks", type=int, default=20, help="T")
    p.add_argument("--episodes", type=int, default=10, help="E (N = T·E envs)")
    p.add_argument("--horizon", type=int, default=200, help="H, steps per rollout")
    p.add_argument("--sweep", default=None, help="comma-separated N values (E = --episodes, T = N / E) instead of T·E")
    p.add_argument("--repeats", type=int, default=5, help="timed rollouts per contender (median reported)")
    p.add_argument("--async-repeats", type=int, default=3, help="timed rollouts for AsyncVectorEnv (the slowest)")
    p.add_argument("--skip", default="", help="comma-separated contenders to leave out: physics, sync, async")
    p.add_argument("--hidden", default="100,100", help="the MLP's hidden sizes")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--backend", choices=("cpu", "warp"), default="cpu",
                   help="warp: also time our sampler on the MJWarp backend (pip install 'metarl[gpu]')")
    p.add_argument("--device", default="cpu", help="the warp backend's device: cpu, cuda or cuda:N")
    return p.parse_args()


def gym_id_for(family: MujocoFamily) -> str:
    for cls, gym_id in GYM_IDS.items():
        if isinstance(family, cls):
            return gym_id
    raise SystemExit(f"no Gymnasium counterpart known for {family.id}: pass --gym-id")


def main() -> None:
    args = parse_args()
    torch.set_num_threads(1)  # the policy runs on one thread for every contender (batched-sim.md §0.2)
    skip = {name for name in args.skip.split(",") if name}
    if skip - set(CONTENDERS[1:]):
        raise SystemExit(f"--skip takes {', '.join(CONTENDERS[1:])}, got {sorted(skip)}")
    family = metarl.make(args.family, horizon=args.horizon)
    if not isinstance(family, MujocoFamily):
        raise SystemExit(f"{args.family} is not a MuJoCo family; this benchmark compares MuJoCo simulators")
    gym_id = args.gym_id or gym_id_for(family)
    sizes = [int(n) for n in args.sweep.split(",")] if args.sweep else [args.tasks * args.episodes]
    try:
        warp = resolve_backend("warp", args.device) if args.backend == "warp" else None
    except BackendError as err:  # one line that says what to install, not a traceback
        raise SystemExit(str(err)) from None
    print(f"{args.family} vs {gym_id}: H={args.horizon}, MLP {args.hidden}, {os.cpu_count()} CPUs, "
          f"load average {os.getloadavg()[0]:.2f}, torch {torch.__version__}, mujoco {mujoco.__version__}, "
          f"gymnasium {gym.__version__}")
    rows = []
    print("env-steps/s, medians over repeats; ÷x: ours / x")
    print(table_header(), flush=True)
    for n in sizes:
        episodes = min(args.episodes, n) if args.sweep else args.episodes
        if n % episodes:
            raise SystemExit(f"N={n} is not a multiple of E={episodes}")
        setup = Setup(family, gym_id, n // episodes, episodes, args.horizon,
                      tuple(int(h) for h in args.hidden.split(",")), args.seed, warp)
        rates, nthread = measure(setup, skip, args.repeats, args.async_repeats)
        rows.append(result_row(setup, rates, nthread))
        print(table_row(rows[-1]), flush=True)
    print(json.dumps({**rows[-1], "rows": rows} if len(rows) > 1 else rows[0]))


if __name__ == "__main__":
    main()
