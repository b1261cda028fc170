"""metarl: meta-reinforcement learning on batched simulators.

The public API: the task-family registry (`register`, `make`, `spec`, `registered`, `FamilySpec`), the family base
classes (`TaskFamily`, `MujocoFamily`) and the batched sampler (`sample`, `Sampler`, `Batch`).
"""

from metarl.family import MujocoFamily, StepResult, TaskFamily, VecEnv
from metarl.registry import FamilySpec, make, register, registered, spec, unregister

__all__ = [
    "FamilySpec",
    "MujocoFamily",
    "StepResult",
    "TaskFamily",
    "VecEnv",
    "make",
    "register",
    "registered",
    "spec",
    "unregister",
]
__version__ = "0.1.0"
