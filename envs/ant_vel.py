"""AntVel: run at a goal velocity (MAML, Finn et al. 2017, §5.3; cbfinn/maml_rl `ant_env_rand.py`).

Reward per step, as in MAML: −|v_x − v*| + 1 − 0.005·‖a‖² − 5e-4·‖clip(cfrc_ext, −1, 1)‖² + 0.05, with
v* ~ U[low, high] (MAML: U[0, 3], H = 200). The episode ends when the torso height leaves [0.2, 1.0].

## Version History
- v0: initial version (Gymnasium Ant-v5 physics and observation).
"""

from __future__ import annotations

from typing import Any

import torch
from torch import Tensor

from metarl.envs.locomotion import AntFamily, VelTasks, sample_velocities
from metarl.family import check_range
from metarl.registry import FamilySpec
from metarl.sim import Simulator


class AntVel(AntFamily):
    """Goal-velocity Ant. Tasks: `VelTasks(goal_vel [T])`."""

    Tasks = VelTasks
    velocity_bonus = 1.0
    """MAML's constant +1 in the forward reward ("make it happy, not suicidal")."""

    def __init__(self, spec: FamilySpec, low: float = 0.0, high: float = 3.0, **kwargs: Any) -> None:
        check_range("goal velocity", low, high)
        super().__init__(spec, **kwargs)
        self.low, self.high = low, high

    def sample_tasks(self, n: int, generator: torch.Generator) -> VelTasks:
        return sample_velocities(n, self.low, self.high, generator)

    def reward_terms(self, tasks: VelTasks, sim: Simulator, action: Tensor, x_velocity: Tensor) -> dict[str, Tensor]:
        forward = -(x_velocity - tasks.goal_vel).abs() + self.velocity_bonus
        return {"reward_forward": forward, **self.common_terms(sim, action)}
