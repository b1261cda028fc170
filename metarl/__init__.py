"""metarl: meta-reinforcement learning on batched simulators.

The public API: the task-family registry (`register`, `make`, `spec`, `registered`, `FamilySpec`), the family base
classes (`TaskFamily`, `MujocoFamily`) and the batched sampler (`sample`, `Sampler`, `Batch`).
"""

import os

# Torch's OpenMP workers spin at barriers; when another process wants a core they burn it, and one MAML-TRPO update on
# 2 cores went from 3.0 s to 7.0 s with one competing process. Passive waiting keeps it at 4.5 s (3.2 s idle). This
# only takes effect if torch is not imported yet (the CLI imports metarl first); set it yourself to override.
os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")

from metarl.family import MujocoFamily, StepResult, TaskFamily, VecEnv
from metarl.gym_adapter import TaskEnv, register_gymnasium
from metarl.registry import FamilySpec, make, register, registered, spec, unregister

register_gymnasium()  # `gymnasium.make("metarl/<family id>")` after `import metarl` (Gymnasium 1.x has no plugins)

__all__ = [
    "FamilySpec",
    "MujocoFamily",
    "StepResult",
    "TaskEnv",
    "TaskFamily",
    "VecEnv",
    "make",
    "register",
    "register_gymnasium",
    "registered",
    "spec",
    "unregister",
]
__version__ = "0.1.0"
