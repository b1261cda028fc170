"""The batched sampler: the only code that steps simulators.

One call rolls out E episodes for each of T rows (a row is a task, possibly with its own policy parameters) as a
single batch of T·E environments: one policy forward and one simulator step per time step for all of them. No
process pool, no queues, nothing that can hang.

Example:
    >>> fam = metarl.make("HalfCheetahVel-v0")
    >>> policy = GaussianMLP(fam.obs_dim, fam.act_dim)
    >>> g = torch.Generator().manual_seed(0)
    >>> batch = Sampler(fam).sample(policy, params_of(policy), fam.sample_tasks(40, g), episodes=20, generator=g)
    >>> batch.obs.shape   # [T, E, H, obs_dim]
    torch.Size([40, 20, 200, 17])
"""

from __future__ import annotations

from typing import Any, NamedTuple, Protocol

import torch
from torch import Tensor, nn

from metarl.family import TaskFamily, VecEnv, num_tasks, repeat_tasks
from metarl.policies import Params, broadcast_log_std, forward, gaussian_log_prob, num_stacked


class Batch(NamedTuple):
    """Rollouts of T rows × E episodes × H steps. Float tensors have the policy's dtype.

    Attributes:
        obs: [T, E, H, obs_dim], the observation each action was taken in.
        act: [T, E, H, act_dim], the sampled action (before clipping to the action bounds).
        rew: [T, E, H], zero after an episode ends.
        done: bool [T, E, H], True at the last step of each episode (termination or horizon).
        logp: [T, E, H], log π(act | obs) under the sampling policy (zero for deterministic policies).
        mask: [T, E, H], 1 for steps that happened, 0 after termination.
        returns: [T, E], undiscounted episode returns.
    """

    obs: Tensor
    act: Tensor
    rew: Tensor
    done: Tensor
    logp: Tensor
    mask: Tensor
    returns: Tensor

    @property
    def num_steps(self) -> int:
        """Environment steps that happened in this batch."""
        return int(self.mask.sum().item())


class SamplerProtocol(Protocol):
    """What algorithms call; a Ray- or GPU-backed sampler implements the same method."""

    family: TaskFamily

    def sample(
        self,
        policy: nn.Module,
        params: Params,
        tasks: Any,
        episodes: int,
        generator: torch.Generator,
        deterministic: bool = False,
    ) -> Batch: ...


class Sampler:
    """Rolls out a family's tasks on one backend, reusing its batched environments between calls.

    Args:
        family: the task family.
        backend: simulator backend ("cpu": `mujoco.batch`; pure-torch families accept a torch device string).
    """

    def __init__(self, family: TaskFamily, backend: str = "cpu") -> None:
        self.family = family
        self.backend = backend
        self._envs: dict[int, VecEnv] = {}

    def env(self, num_envs: int) -> VecEnv:
        """The cached batched environment of `num_envs` simulations."""
        if num_envs not in self._envs:
            self._envs[num_envs] = self.family.make_env(num_envs, self.backend)
        return self._envs[num_envs]

    @torch.no_grad()
    def sample(
        self,
        policy: nn.Module,
        params: Params,
        tasks: Any,
        episodes: int,
        generator: torch.Generator,
        deterministic: bool = False,
    ) -> Batch:
        """Roll out `episodes` episodes per task row.

        Args:
            policy: the policy module (evaluated functionally with `params`).
            params: shared params, or stacked params with one set per row (leading dim T).
            tasks: the family's Tasks with leading dim T.
            episodes: E, episodes per row.
            generator: the only source of randomness (resets and action noise).
            deterministic: act with the mean instead of sampling.

        Returns:
            A `Batch` of T × E episodes of the family's horizon H.
        """
        T, E, H = num_tasks(tasks), episodes, self.family.horizon
        if E < 1:
            raise ValueError(f"episodes must be >= 1, got {E}")
        rows = num_stacked(policy, params)
        if rows is not None and rows != T:
            raise ValueError(f"params are stacked for {rows} rows but {T} tasks were given")
        env_tasks = repeat_tasks(tasks, E)
        env = self.env(T * E)
        dtype = next(iter(params.values())).dtype
        obs = env.reset(env_tasks, generator)
        buf = _Buffers(T * E, H, self.family.obs_dim, self.family.act_dim, dtype)
        low, high = self.family.action_low, self.family.action_high
        alive = torch.ones(T * E, dtype=torch.bool)
        for h in range(H):
            out = forward(policy, params, obs.to(dtype).view(T, E, -1))
            if deterministic or out.log_std is None:
                act, logp = out.mean, torch.zeros(T, E, dtype=dtype)
            else:
                noise = torch.randn(out.mean.shape, generator=generator, dtype=dtype)
                act = out.mean + torch.exp(broadcast_log_std(out)) * noise
                logp = gaussian_log_prob(out, act)
            act, logp = act.reshape(T * E, -1), logp.reshape(T * E)
            env_act = torch.clamp(act.to(torch.float64), low, high)
            ids = None if bool(alive.all()) else alive.nonzero().squeeze(1)
            step = env.step(env_tasks, env_act, ids)
            last = h == H - 1
            buf.write(h, obs, act, step.reward, alive, step.terminated, logp, last)
            alive = alive & ~step.terminated
            obs = step.obs
            if not bool(alive.any()):
                break
        return buf.to_batch(T, E)


class _Buffers:
    """Preallocated [N, H, ...] storage filled one time step at a time."""

    def __init__(self, n: int, horizon: int, obs_dim: int, act_dim: int, dtype: torch.dtype) -> None:
        self.obs = torch.zeros(n, horizon, obs_dim, dtype=dtype)
        self.act = torch.zeros(n, horizon, act_dim, dtype=dtype)
        self.rew = torch.zeros(n, horizon, dtype=dtype)
        self.logp = torch.zeros(n, horizon, dtype=dtype)
        self.done = torch.zeros(n, horizon, dtype=torch.bool)
        self.mask = torch.zeros(n, horizon, dtype=dtype)

    def write(
        self,
        h: int,
        obs: Tensor,
        act: Tensor,
        rew: Tensor,
        alive: Tensor,
        terminated: Tensor,
        logp: Tensor,
        last: bool,
    ) -> None:
        live = alive.to(self.rew.dtype)
        self.obs[:, h] = obs.to(self.obs.dtype) * live[:, None]
        self.act[:, h] = act * live[:, None]
        self.rew[:, h] = rew.to(self.rew.dtype) * live
        self.logp[:, h] = logp * live
        self.mask[:, h] = live
        self.done[:, h] = alive & (terminated | last)

    def to_batch(self, T: int, E: int) -> Batch:
        def shape(x: Tensor) -> Tensor:
            return x.view(T, E, *x.shape[1:])

        rew = shape(self.rew)
        return Batch(shape(self.obs), shape(self.act), rew, shape(self.done), shape(self.logp), shape(self.mask),
                     rew.sum(-1))


def sample(
    policy: nn.Module,
    params: Params,
    family: TaskFamily,
    tasks: Any,
    episodes: int,
    generator: torch.Generator,
    deterministic: bool = False,
    backend: str = "cpu",
) -> Batch:
    """One-off `Sampler(family, backend).sample(...)` (builds fresh environments; keep a `Sampler` to reuse them)."""
    return Sampler(family, backend).sample(policy, params, tasks, episodes, generator, deterministic)
