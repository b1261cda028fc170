"""Baselines for few-shot adaptation, evaluated by exactly the same code path as the meta-learners.

Each baseline is a row of `BASELINES` (the same `Algorithm` shape as `metarl.algos.ALGORITHMS`) whose config is
`MAMLConfig`, so its test-time adaptation is MAML's policy-gradient steps with the same α, α/2 schedule, E and
estimator. `metarl baseline NAME` trains it into an ordinary run directory (`runs/<family>__baseline-NAME__...`,
checkpoints, metrics, resume) and then runs `metarl eval` on it. The MAML paper's baselines (notes/anchors-metarl.md
§1.1, §3.1):

- `random`: a freshly initialised policy, no training; then the same PG steps.
- `pretrained`: trained jointly on the task distribution (TRPO on the mean return over sampled tasks, no
  meta-objective: `multitask_train`); then the same PG steps.
- `oracle`: the same joint training, but the task parameters are appended to the observation (`OracleFamily`,
  family id `oracle/<family>`): the ceiling. Its step-0 return is the oracle number.
- `ppo`: the random initial policy fine-tuned per test task by Stable-Baselines3 PPO on `metarl.TaskEnv`, one PPO
  update per adaptation step on E·H fresh env steps: the same sample budget as k PG steps.
"""

from __future__ import annotations

import contextlib
import random
from collections.abc import Iterator, Mapping
from typing import Any

import numpy as np
import torch
from torch import Tensor, nn

from metarl import registry
from metarl.algos import Algorithm, maml
from metarl.algos.maml import MAMLConfig
from metarl.estimators import mean_kl, outer_objective, prepare
from metarl.family import TaskFamily, index_tasks, num_tasks
from metarl.logger import Logger
from metarl.optim import adam_ascent
from metarl.policies import ACTIVATIONS, GaussianMLP, Params, PolicyOutput, forward
from metarl.registry import FamilySpec
from metarl.sampler import Sampler, SamplerProtocol
from metarl.training import OnIteration, TrainState, iterate, start
from metarl.trpo import trpo_step
from metarl.value_baseline import fit_stages, for_run, keep_in_state, stage_values


# ----------------------------------------------------------------------------------------------- oracle family
class OracleFamily(TaskFamily):
    """A family whose observation is the base family's followed by the task's parameters (every task field,
    flattened): the oracle policy knows the task and needs no adaptation. Tasks, actions, rewards and horizon are
    the base family's, so the oracle is evaluated on exactly the same test tasks."""

    def __init__(self, spec: FamilySpec, base: str, base_kwargs: dict[str, Any]) -> None:
        super().__init__(spec)
        self.base = registry.make(base, horizon=spec.horizon, **base_kwargs)
        self.Tasks = self.base.Tasks  # type: ignore[misc]
        probe = self.base.sample_tasks(1, torch.Generator().manual_seed(0))
        self.obs_dim = self.base.obs_dim + int(task_features(probe).shape[-1])
        self.act_dim = self.base.act_dim
        self.action_low, self.action_high = self.base.action_low, self.base.action_high

    def sample_tasks(self, n: int, generator: torch.Generator) -> Any:
        return self.base.sample_tasks(n, generator)

    def make_env(self, num_envs: int, backend: str = "cpu") -> OracleEnv:
        return OracleEnv(self.base.make_env(num_envs, backend))


def make_oracle(spec: FamilySpec, base: str, **kwargs: Any) -> OracleFamily:
    """The registry's entry point for oracle families: every kwarg but `base` goes to the base family (a function,
    so `metarl.make` lets any kwarg through to the base family, which checks them itself)."""
    return OracleFamily(spec, base, kwargs)


def task_features(tasks: Any) -> Tensor:
    """float64 [T, d]: every field of a Tasks NamedTuple flattened per task."""
    return torch.cat([f.reshape(f.shape[0], -1).to(torch.float64) for f in tasks], dim=-1)


class OracleEnv:
    """The base family's batched env with the task features appended to every observation."""

    def __init__(self, env: Any) -> None:
        self.env, self.num_envs = env, env.num_envs

    def reset(self, tasks: Any, generator: torch.Generator, ids: Tensor | None = None) -> Tensor:
        return self._observe(self.env.reset(tasks, generator, ids), tasks)

    def step(self, tasks: Any, action: Tensor, ids: Tensor | None = None) -> Any:
        out = self.env.step(tasks, action, ids)
        return out._replace(obs=self._observe(out.obs, tasks))

    @staticmethod
    def _observe(obs: Tensor, tasks: Any) -> Tensor:  # obs [N, obs_dim] for all envs, tasks per env [N, ...]
        return torch.cat([obs, task_features(tasks).to(obs)], dim=-1)


def oracle_id(base_id: str) -> str:
    """"PointNav-v0" -> "oracle/PointNav-v0" ("my/Hopper-v0" -> "oracle/my.Hopper-v0": one namespace allowed)."""
    return f"oracle/{base_id.replace('/', '.')}"


def register_oracle(base_id: str) -> FamilySpec:
    """The oracle variant of a registered family, registered as `oracle_id(base_id)` (idempotent)."""
    oid = oracle_id(base_id)
    if oid in {s.id for s in registry.registered()}:
        return registry.spec(oid)
    base = registry.spec(base_id)
    return registry.register(FamilySpec(
        id=oid, entry_point=f"{__name__}:make_oracle", horizon=base.horizon, kwargs={"base": base_id, **base.kwargs},
        tasks=f"{base.tasks} (observed by the policy)", reference=f"oracle baseline of {base_id}",
    ))


def family_spec(family_id: str) -> FamilySpec:
    """`registry.spec`, registering an oracle family on first use (a resumed oracle run in a fresh process)."""
    if family_id.startswith("oracle/") and family_id not in {s.id for s in registry.registered()}:
        rest = family_id.removeprefix("oracle/")
        namespaced = rest.replace(".", "/", 1)
        known = {s.id for s in registry.registered()}
        return register_oracle(namespaced if namespaced in known else rest)
    return registry.spec(family_id)


# ----------------------------------------------------------------------------------------------- multitask training
def joint_objective(policy: nn.Module, params: Params, data: Any, old: PolicyOutput) -> tuple[Tensor, Tensor]:
    """TRPO's surrogate and KL averaged over tasks, for one shared policy on every task's batch ([T, E, H, ...]):
    the multi-task objective, with no adaptation inside."""
    out = forward(policy, params, data.obs)
    return outer_objective(out, data).mean(), mean_kl(old, out, data.weight).mean()


def multitask_train(cfg: MAMLConfig, logger: Logger | None = None, on_iteration: OnIteration | None = None,
                    state: TrainState | None = None) -> TrainState:
    """Joint training on the task distribution (the pretrained and oracle baselines): per iteration, E episodes on
    each of T fresh tasks with θ, then one TRPO step (or Adam with outer=adam) on their mean surrogate. Same driver
    contract, guard and RNG handling as `maml.train`; inner-loop fields of the config are unused here."""
    session = start(cfg, state, family=registry.make(family_spec(cfg.family), **cfg.run.family_kwargs))
    family, policy, sampler = session.family, session.policy, Sampler(session.family, session.backend)

    def collect(state: TrainState, generator: torch.Generator) -> tuple[Any, dict[str, float], int]:
        tasks = family.sample_tasks(cfg.meta_batch_size, generator)
        batch = sampler.sample(policy, state.params, tasks, cfg.episodes_per_task, generator)
        value = for_run(cfg, family.obs_dim, tasks, state.extra.get("value"))
        data = prepare(batch, cfg.gamma, cfg.gae_lambda, cfg.baseline, cfg.normalize_advantages,
                       values=stage_values(value, batch, tasks, 0))
        metrics = {"meta/return_pre": float(batch.returns.mean())}
        if value is not None:  # as MAML's: predicted before it is fitted on this batch
            fit_stages(value, [batch], tasks, cfg.gamma)
            metrics |= keep_in_state(value, state.extra)
        return data, metrics, batch.num_steps

    def update(state: TrainState, data: Any) -> tuple[Params, dict[str, Any] | None, dict[str, float]]:
        return _joint_update(policy, state.params, data, cfg, state.optimizer_state)

    return iterate(cfg, session, collect, update, logger, on_iteration)


def _joint_update(policy: nn.Module, params: Params, data: Any, cfg: MAMLConfig,
                  optimizer_state: dict[str, Any] | None) -> tuple[Params, dict[str, Any] | None, dict[str, float]]:
    with torch.no_grad():
        out = forward(policy, params, data.obs)
    old = PolicyOutput(out.mean.detach(), None if out.log_std is None else out.log_std.detach())
    if cfg.outer == "trpo":
        objective = lambda p: joint_objective(policy, p, data, old)  # noqa: E731
        result = trpo_step(maml.joint_problem(policy, params, data, old, objective), params, cfg.trpo)
        return result.params, None, {"outer/kl": result.kl, "outer/step_fraction": result.step_fraction,
                                     "outer/grad_norm": result.grad_norm}
    leaves = {k: v.detach().requires_grad_(True) for k, v in params.items()}
    grads = dict(zip(leaves, torch.autograd.grad(joint_objective(policy, leaves, data, old)[0],
                                                 list(leaves.values())), strict=True))
    if not all(bool(torch.isfinite(g).all()) for g in grads.values()):
        raise FloatingPointError("non-finite gradient")
    new, state = adam_ascent(params, grads, cfg.outer_lr, optimizer_state)
    return new, state, {"outer/grad_norm": float(torch.sqrt(sum(g.square().sum() for g in grads.values())))}


# ----------------------------------------------------------------------------------------------- PPO per task
PPO_LEARNING_RATE = 3e-4
"""Stable-Baselines3's default Adam step size: the PPO baseline's default "step size" per update."""


def ppo_step_sizes(cfg: MAMLConfig, steps: int) -> tuple[float, ...]:
    return (PPO_LEARNING_RATE,) * steps


def ppo_adaptation_returns(cfg: MAMLConfig, sampler: SamplerProtocol, policy: nn.Module, params: Params, tasks: Any,
                           step_sizes: tuple[float, ...], episodes: int, generator: torch.Generator,
                           extra: Mapping[str, Any] | None = None) -> Tensor:
    """SB3 PPO fine-tuned from `params` on each task separately; returns [k+1, T, E] like every adaptation operator.

    Update j (learning rate `step_sizes[j]`) collects E·H env steps on `TaskEnv(family, task)` (n_steps = E·H, so
    exactly the samples of one policy-gradient adaptation step) and runs PPO's 10 epochs on them; SB3 and its
    one-environment rollouts run on the CPU backend whatever `sampler`'s backend. The actor is the
    config's policy network, initialised from `params`; returns after each update are measured with the batched
    sampler on E fresh episodes, as for the other operators.
    """
    if not isinstance(policy, GaussianMLP):
        raise ValueError("the PPO baseline needs a Gaussian policy (policy.deterministic is set)")
    family = sampler.family
    rows: list[list[Params]] = [[] for _ in step_sizes]
    for t in range(num_tasks(tasks)):
        seed = int(torch.randint(0, 2**31 - 1, (1,), generator=generator))
        model = _ppo_model(cfg, family, index_tasks(tasks, slice(t, t + 1)), policy, params, episodes, seed)
        for j, lr in enumerate(step_sizes):
            model.lr_schedule = lambda _progress, lr=lr: lr
            with _global_rng_kept():  # SB3 draws from the global RNGs: seed them per update, restore them after
                model.set_random_seed(seed + j)
                model.learn(total_timesteps=episodes * family.horizon, reset_num_timesteps=False)
            rows[j].append(_actor_params(model, params))
    returns = [sampler.sample(policy, params, tasks, episodes, generator).returns]
    for per_task in rows:
        stacked = {name: torch.stack([p[name] for p in per_task]) for name in params}
        returns.append(sampler.sample(policy, stacked, tasks, episodes, generator).returns)
    return torch.stack(returns)


def _ppo_model(cfg: MAMLConfig, family: TaskFamily, task: Any, policy: GaussianMLP, params: Params, episodes: int,
               seed: int) -> Any:
    """SB3 PPO on one task whose actor has the config's architecture and starts from `params`."""
    import gymnasium
    from stable_baselines3 import PPO

    from metarl.gym_adapter import TaskEnv

    n_steps = episodes * family.horizon
    env = gymnasium.wrappers.TimeLimit(TaskEnv(family, task=task), max_episode_steps=family.horizon)
    activation = ACTIVATIONS[cfg.policy.activation]  # our modules: SB3's actor computes exactly our policy
    with _global_rng_kept():
        model = PPO("MlpPolicy", env, n_steps=n_steps, batch_size=max(d for d in range(1, 65) if n_steps % d == 0),
                    gamma=cfg.gamma, seed=seed, device="cpu", verbose=0,
                    policy_kwargs={"net_arch": {"pi": list(cfg.policy.hidden), "vf": [64, 64]},
                                   "activation_fn": activation})
    with torch.no_grad():
        for ours, theirs in _actor_map(model, params).items():
            theirs.copy_(params[ours])
    return model


def _actor_map(model: Any, params: Params) -> dict[str, Tensor]:
    """Our GaussianMLP parameter name -> the SB3 actor tensor with the same role (net.2i <-> policy_net.2i, the last
    layer <-> action_net, log_std <-> log_std)."""
    sb3 = model.policy
    out = {"log_std": sb3.log_std}
    layers = sorted({int(name.split(".")[1]) for name in params if name.startswith("net.")})
    for i in layers[:-1]:
        out[f"net.{i}.weight"], out[f"net.{i}.bias"] = sb3.mlp_extractor.policy_net[i].weight, \
            sb3.mlp_extractor.policy_net[i].bias
    out[f"net.{layers[-1]}.weight"], out[f"net.{layers[-1]}.bias"] = sb3.action_net.weight, sb3.action_net.bias
    return out


def _actor_params(model: Any, like: Params) -> Params:
    """SB3's actor weights (on the CPU: SB3 runs there) as our params, on the device and dtype of `like`."""
    return {name: tensor.detach().clone().to(like[name].device, like[name].dtype)
            for name, tensor in _actor_map(model, like).items()}


@contextlib.contextmanager
def _global_rng_kept() -> Iterator[None]:
    """Restore Python's, NumPy's and torch's global RNG states afterwards (SB3 seeds and draws from them)."""
    states = random.getstate(), np.random.get_state(), torch.random.get_rng_state()
    try:
        yield
    finally:
        random.setstate(states[0])
        np.random.set_state(states[1])
        torch.random.set_rng_state(states[2])


# ----------------------------------------------------------------------------------------------- the table
_NO_TRAINING = {"run.iterations": 0}
BASELINES: dict[str, Algorithm] = {
    "baseline-random": Algorithm(MAMLConfig, multitask_train, maml.PRESETS, maml.adaptation_returns,
                                 maml.default_eval_step_sizes, defaults=_NO_TRAINING,
                                 summary="random initialisation + MAML's policy-gradient adaptation"),
    "baseline-pretrained": Algorithm(MAMLConfig, multitask_train, maml.PRESETS, maml.adaptation_returns,
                                     maml.default_eval_step_sizes,
                                     summary="joint multi-task TRPO (no meta-objective) + the same adaptation",
                                     selection="val/return_pre"),
    "baseline-oracle": Algorithm(MAMLConfig, multitask_train, maml.PRESETS, maml.adaptation_returns,
                                 maml.default_eval_step_sizes,
                                 summary="joint training with the task parameters observed (oracle/<family>)",
                                 selection="val/return_pre"),
    "baseline-ppo": Algorithm(MAMLConfig, multitask_train, maml.PRESETS, ppo_adaptation_returns, ppo_step_sizes,
                              defaults=_NO_TRAINING,
                              summary="Stable-Baselines3 PPO per test task with the adaptation sample budget"),
}
"""`metarl baseline NAME` trains `baseline-NAME` (random and ppo: nothing to train) and evaluates it."""
