"""HalfCheetahDir: run forward or backward (MAML, Finn et al. 2017, §5.3).

Reward per step: d·v_x − 0.05·‖a‖², d = ±1 with probability 1/2 per task. MAML: H = 200; pytorch-maml-rl, ProMP and
learn2learn use H = 100 (override `horizon=100`).

## Version History
- v0: initial version (Gymnasium HalfCheetah-v5 physics and observation).
"""

from __future__ import annotations

import torch
from torch import Tensor

from metarl.envs.locomotion import CheetahFamily, DirTasks, control_cost, sample_directions
from metarl.sim import Simulator


class HalfCheetahDir(CheetahFamily):
    """Forward/backward HalfCheetah. Tasks: `DirTasks(direction [T])`."""

    Tasks = DirTasks

    def sample_tasks(self, n: int, generator: torch.Generator) -> DirTasks:
        return sample_directions(n, generator)

    def reward_terms(self, tasks: DirTasks, sim: Simulator, action: Tensor, x_velocity: Tensor) -> dict[str, Tensor]:
        return {
            "reward_forward": tasks.direction * x_velocity,
            "reward_ctrl": -control_cost(action, self.ctrl_cost_weight),
        }
