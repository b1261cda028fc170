"""metarl: meta-reinforcement learning on batched simulators.

The public API: the task-family registry (`register`, `make`, `spec`, `registered`, `FamilySpec`), the family base
classes (`TaskFamily`, `MujocoFamily`) and the batched sampler (`sample`, `Sampler`, `Batch`).
"""

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
