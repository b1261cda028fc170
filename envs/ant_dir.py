"""AntDir: run forward or backward (MAML, Finn et al. 2017, §5.3; cbfinn/maml_rl `ant_env_rand_direc.py`).

Reward per step, as in MAML: d·v_x − 0.005·‖a‖² − 5e-4·‖clip(cfrc_ext, −1, 1)‖² + 0.05, d = ±1 per task (H = 200;
MAML used 40 episodes per adaptation step here). ProMP/learn2learn use a +1.0 survive bonus (`survive_reward=1.0`).

## Version History
- v0: initial version (Gymnasium Ant-v5 physics and observation).
"""

from __future__ import annotations

import torch
from torch import Tensor

from metarl.envs.locomotion import AntFamily, DirTasks, sample_directions
from metarl.sim import Simulator


class AntDir(AntFamily):
    """Forward/backward Ant. Tasks: `DirTasks(direction [T])`."""

    Tasks = DirTasks

    def sample_tasks(self, n: int, generator: torch.Generator) -> DirTasks:
        return sample_directions(n, generator)

    def reward_terms(self, tasks: DirTasks, sim: Simulator, action: Tensor, x_velocity: Tensor) -> dict[str, Tensor]:
        return {"reward_forward": tasks.direction * x_velocity, **self.common_terms(sim, action)}
