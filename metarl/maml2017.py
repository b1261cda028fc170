"""The MAML paper's own test tasks and its per-task results (Finn et al. 2017; github.com/cbfinn/maml_rl).

The paper evaluated each family on 40 test tasks drawn with a fixed NumPy seed in `maml_examples/test_maml_*.py`, and
its repository keeps every task's returns (`icml/icml_*_results_*.pkl`, vendored by `scripts/vendor_maml2017.py` into
`metarl/data/maml2017.json`). `metarl eval RUN --task-set maml2017` adapts to exactly those tasks, so a result
compares with the paper's task by task: the difference of two means over different draws of 40 tasks carries the
draws' own spread (HalfCheetahVel: the paper's goals average 0.92 m/s, the seed-0 test draw 1.00 m/s, and the
return before adaptation falls with the goal speed), the paired difference does not.
"""

from __future__ import annotations

import functools
import json
import math
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

DATA_PATH = Path(__file__).resolve().parent / "data" / "maml2017.json"
NUM_TASKS = 40
"""test tasks per family in the paper's scripts (`test_num_goals`)"""


@dataclass(frozen=True)
class PaperFamily:
    """How `maml_examples/test_maml_<env>.py` drew and evaluated one family's test tasks."""

    pickle: str
    """the env's name in the result pickles (`icml_<pickle>_results_<method>.pkl`)"""
    script: str
    """the test script, `maml_examples/test_maml_<script>.py`"""
    seed: int
    """`np.random.seed(seed)` before the draw"""
    low: float
    high: float
    """goals ~ U[low, high] (per coordinate)"""
    field: str
    """our family's task field"""
    dims: int = 0
    """coordinates per goal (0: a scalar goal)"""
    direction_below: float | None = None
    """direction families: the script drew a goal speed and ran backward (−1) below this, forward (+1) from it"""
    alpha: float = 0.1
    """the first step's size (`init_learning_rate`)"""
    episodes: int = 20
    """episodes per adaptation step (`batch_size` / H)"""
    later_factor: float = 0.5
    """step size after the first: later_factor · α (`tf_optimizer_args` learning_rate)"""
    checkpoint: str = ""
    """the training snapshot the paper evaluated"""


FAMILIES: dict[str, PaperFamily] = {
    "HalfCheetahVel-v0": PaperFamily("cheetah", "cheetah", 1, 0.0, 2.0, "goal_vel",
                                     checkpoint="itr_475 (trained with 10 episodes per task)"),
    "HalfCheetahDir-v0": PaperFamily("cheetahdirec", "cheetah_direc", 1, 0.0, 2.0, "direction", direction_below=1.0,
                                     checkpoint="itr_100"),
    "AntVel-v0": PaperFamily("ant", "ant", 1, 0.0, 3.0, "goal_vel", checkpoint="itr_375"),
    # batch_size 8000 (40 episodes); the later steps' step size was 0.01·α, so only the first step adapts
    "AntDir-v0": PaperFamily("antdirec", "ant_direc", 2, 0.0, 3.0, "direction", direction_below=1.5, episodes=40,
                             later_factor=0.01, checkpoint="itr_575"),
    # batch_size 4000 at H 100: 40 episodes (more where episodes end at the goal)
    "PointNav-v0": PaperFamily("point", "point", 1, -0.5, 0.5, "goal", dims=2, alpha=0.5, episodes=40,
                               checkpoint="the last (iteration 100)"),
}
"""The paper's families (ours by id) and their test scripts' settings."""


def paper_family(family_id: str) -> PaperFamily:
    """The paper's test settings of `family_id`; a clear error for a family the paper did not evaluate."""
    try:
        return FAMILIES[family_id]
    except KeyError:
        raise ValueError(f"the MAML paper has no test tasks for {family_id}; it evaluated "
                         f"{', '.join(FAMILIES)}") from None


def schedule(family_id: str, steps: int) -> tuple[float, ...]:
    """The test script's step sizes for `steps` adaptation steps: α, then later_factor·α."""
    info = paper_family(family_id)
    return tuple([info.alpha] + [info.later_factor * info.alpha] * (steps - 1))[:steps]


def paper_tasks(family_id: str) -> dict[str, list[Any]]:
    """The paper's 40 test tasks of `family_id` as task fields, in its order: {field: [40] or [40][dims]}."""
    info = paper_family(family_id)
    shape = (NUM_TASKS, info.dims) if info.dims else (NUM_TASKS,)
    # RandomState(seed) draws exactly what np.random.seed(seed); np.random.uniform(...) drew in the paper's script
    goals = np.random.RandomState(info.seed).uniform(info.low, info.high, size=shape)
    if info.direction_below is not None:
        goals = np.where(goals < info.direction_below, -1.0, 1.0)
    return {info.field: goals.tolist()}


@functools.cache
def _data() -> dict[str, Any]:
    return json.loads(DATA_PATH.read_text())


def paper_returns(family_id: str) -> dict[str, list[list[float]]]:
    """The paper's per-task returns on `paper_tasks(family_id)`: {method: [steps + 1][40]} for maml, pretrained,
    random ([4] steps; PointNav [5]) and oracle ([1]: it does not adapt)."""
    paper_family(family_id)
    return _data()["families"][family_id]["returns"]


def paired(ours: list[list[float]], theirs: list[list[float]]) -> dict[str, list[float]]:
    """Ours − the paper's on the same tasks, per step both have: the mean difference and its paired standard error.

    Args:
        ours, theirs: [steps + 1][T] per-task mean returns on the same T tasks in the same order.
    Returns:
        {"diff": [steps], "se": [steps]} over the steps both have (the shorter of the two).
    """
    steps = min(len(ours), len(theirs))
    a = [np.asarray(row, dtype=np.float64) for row in ours[:steps]]
    b = [np.asarray(row, dtype=np.float64) for row in theirs[:steps]]
    if any(x.ndim != 1 or x.shape != a[0].shape for x in a + b):
        raise ValueError("paired: every step needs the same tasks on both sides")
    diffs = [x - y for x, y in zip(a, b, strict=True)]
    n = diffs[0].shape[0] if diffs else 0
    se = [float(d.std(ddof=1) / math.sqrt(n)) if n > 1 else float("nan") for d in diffs]
    return {"diff": [float(d.mean()) for d in diffs], "se": se}
