"""HalfCheetahVel: run at a goal velocity (MAML, Finn et al. 2017, §5.3).

Reward per step: −|v_x − v*| − 0.05·‖a‖², v* ~ U[low, high] per task. Defaults reproduce MAML (U[0, 2], H = 200);
ProMP/PEARL/VariBAD use U[0, 3] and pytorch-maml-rl/ProMP H = 100 (override `high=3.0, horizon=100`).

## Version History
- v0: initial version (Gymnasium HalfCheetah-v5 physics and observation).
"""

from __future__ import annotations

from typing import Any

import torch
from torch import Tensor

from metarl.envs.locomotion import CheetahFamily, VelTasks, control_cost, sample_velocities
from metarl.family import check_range
from metarl.registry import FamilySpec
from metarl.sim import Simulator


class HalfCheetahVel(CheetahFamily):
    """Goal-velocity HalfCheetah. Tasks: `VelTasks(goal_vel [T])`."""

    Tasks = VelTasks

    def __init__(self, spec: FamilySpec, low: float = 0.0, high: float = 2.0, **kwargs: Any) -> None:
        check_range("goal velocity", low, high)
        super().__init__(spec, **kwargs)
        self.low, self.high = low, high

    def sample_tasks(self, n: int, generator: torch.Generator) -> VelTasks:
        return sample_velocities(n, self.low, self.high, generator)

    def reward_terms(self, tasks: VelTasks, sim: Simulator, action: Tensor, x_velocity: Tensor) -> dict[str, Tensor]:
        return {
            "reward_forward": -(x_velocity - tasks.goal_vel).abs(),
            "reward_ctrl": -control_cost(action, self.ctrl_cost_weight),
        }
