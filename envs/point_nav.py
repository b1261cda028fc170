"""PointNav: move a point mass to a goal in the plane (MAML, Finn et al. 2017, §5.2, "2D navigation").

Pure torch and fully batched. The point starts at the origin; each step moves it by the action clipped to
[−max_step, max_step]²; reward −‖x − g‖ after the move; the episode ends once |x − g| < goal_tolerance in both
coordinates (as in cbfinn/maml_rl `point_env_randgoal.py` and pytorch-maml-rl `2DNavigation-v0`). Goals
g ~ U[low, high]², MAML: U[−0.5, 0.5]², H = 100 (es_maml uses U[−1, 1]²).

By default the policy's action is the displacement itself (pytorch-maml-rl's `2DNavigation-v0`): a Gaussian with
a unit initial standard deviation starts ten times wider than the ±0.1 box. `rllab=True` is the MAML paper's env
instead: its code wrapped the point in rllab's `normalize`, so the policy acts in [−1, 1]² and each action is scaled
to the box (lb + (a + 1)·(ub − lb)/2, then clipped), one unit of the policy's noise being one maximal step.

## Version History
- v0: initial version.
"""

from __future__ import annotations

from typing import NamedTuple

import torch
from torch import Tensor

from metarl.family import StepResult, TaskFamily, check_range, check_rllab
from metarl.registry import FamilySpec
from metarl.sim import backend_device


class GoalTasks(NamedTuple):
    """2-D goal per task, float64 [T, 2]."""

    goal: Tensor


class PointNav(TaskFamily):
    """2-D navigation. Tasks: `GoalTasks(goal [T, 2])`; obs = position (2-D), action = displacement (2-D).

    Args:
        spec: the registered spec.
        low, high: goal coordinates ~ U[low, high].
        max_step: the largest displacement per coordinate and step.
        goal_tolerance: the episode ends once both coordinates are within it of the goal.
        rllab: the policy acts in [−1, 1]², scaled to [−max_step, max_step]² as rllab's `normalize` did in the
            MAML paper's code (default: the action is the displacement, clipped to ±max_step).
    """

    Tasks = GoalTasks
    obs_dim = 2
    act_dim = 2

    def __init__(
        self,
        spec: FamilySpec,
        low: float = -0.5,
        high: float = 0.5,
        max_step: float = 0.1,
        goal_tolerance: float = 0.01,
        rllab: bool = False,
    ) -> None:
        super().__init__(spec)
        check_range("goal coordinates", low, high)
        if max_step <= 0 or goal_tolerance < 0:
            raise ValueError(f"need max_step > 0 and goal_tolerance >= 0, got {max_step}, {goal_tolerance}")
        self.low, self.high, self.goal_tolerance = low, high, goal_tolerance
        self.rllab = check_rllab(rllab)
        self.max_step = max_step
        bound = 1.0 if self.rllab else max_step  # the box the policy's actions are clipped to (by the sampler)
        self.action_low = torch.full((2,), -bound, dtype=torch.float64)
        self.action_high = torch.full((2,), bound, dtype=torch.float64)

    def sample_tasks(self, n: int, generator: torch.Generator) -> GoalTasks:
        goal = self.low + (self.high - self.low) * torch.rand(n, 2, generator=generator, dtype=torch.float64)
        return GoalTasks(goal)

    def make_env(self, num_envs: int, backend: str = "cpu") -> PointNavEnv:
        device = backend_device(backend)  # "cpu", "warp" (cpu), "warp:cuda:0", or a bare torch device
        return PointNavEnv(self, num_envs, device)


class PointNavEnv:
    """`num_envs` point masses as one [N, 2] tensor."""

    def __init__(self, family: PointNav, num_envs: int, device: torch.device) -> None:
        self.family = family
        self.num_envs = num_envs
        self.pos = torch.zeros(num_envs, 2, dtype=torch.float64, device=device)

    def reset(self, tasks: GoalTasks, generator: torch.Generator, ids: Tensor | None = None) -> Tensor:
        # deterministic start at the origin, as in MAML; the generator is unused but part of the protocol
        self.pos[slice(None) if ids is None else ids] = 0.0
        return self.pos.clone()

    def displacement(self, action: Tensor) -> Tensor:
        """The move an action makes [N, 2]: the action itself, or with `rllab` rllab's `normalize` of it onto
        [−max_step, max_step]² (written as rllab computes it, so that the positions match its float arithmetic)."""
        if not self.family.rllab:
            return action
        lb, ub = -self.family.max_step, self.family.max_step
        return torch.clamp(lb + (action + 1.0) * 0.5 * (ub - lb), lb, ub)

    def step(self, tasks: GoalTasks, action: Tensor, ids: Tensor | None = None) -> StepResult:
        moved = self.pos + self.displacement(action.to(self.pos))
        if ids is None:
            self.pos = moved
        else:
            self.pos[ids] = moved[ids]
        delta = self.pos - tasks.goal.to(self.pos)
        distance = delta.norm(dim=-1)
        terminated = (delta.abs() < self.family.goal_tolerance).all(dim=-1)
        # info carries the reward's terms (StepResult contract) plus the raw distance as a diagnostic
        return StepResult(self.pos.clone(), -distance, terminated, {"reward_distance": -distance, "distance": distance})
