"""HalfCheetahUphill: run up a slope whose angle is the task (after Nagabandi, Clavera et al. 2018's sloped terrain).

The slope θ ~ U[low_deg, high_deg] degrees is physics-side: each simulation gets its own gravity
9.81·(−sin θ, 0, −cos θ) on flat ground, the exact equivalent of an infinite incline (notes/batched-sim.md §5).
Reward per step: v_x − 0.05·‖a‖², v_x the velocity along the slope. Slope 0 is plain HalfCheetah bit for bit; a
positive slope makes a zero-action cheetah slide backwards.

## Version History
- v0: initial version (Gymnasium HalfCheetah-v5 physics and observation, rotated gravity).
"""

from __future__ import annotations

from typing import Any

import torch
from torch import Tensor

from metarl.envs.locomotion import (
    CheetahFamily,
    SlopeTasks,
    check_slope_range,
    control_cost,
    sample_slopes,
    slope_gravity,
)
from metarl.registry import FamilySpec
from metarl.sim import Simulator


class HalfCheetahUphill(CheetahFamily):
    """Uphill HalfCheetah. Tasks: `SlopeTasks(slope [T])` in radians."""

    Tasks = SlopeTasks

    def __init__(self, spec: FamilySpec, low_deg: float = 0.0, high_deg: float = 15.0, **kwargs: Any) -> None:
        check_slope_range(low_deg, high_deg)
        super().__init__(spec, **kwargs)
        self.low_deg, self.high_deg = low_deg, high_deg

    def sample_tasks(self, n: int, generator: torch.Generator) -> SlopeTasks:
        return sample_slopes(n, self.low_deg, self.high_deg, generator)

    def physics(self, tasks: SlopeTasks) -> dict[str, Tensor]:
        return {"opt.gravity": slope_gravity(tasks.slope)}

    def reward_terms(self, tasks: SlopeTasks, sim: Simulator, action: Tensor, x_velocity: Tensor) -> dict[str, Tensor]:
        return {
            "reward_forward": x_velocity,
            "reward_ctrl": -control_cost(action, self.ctrl_cost_weight),
        }
