"""The MAML paper's own test tasks (`metarl.maml2017`) and `metarl eval --task-set`: the tasks against the paper's
scripts' draws, the vendored returns against the paper's published means, the paired statistics by hand, given
tasks against the seeded evaluation, and the errors."""

from __future__ import annotations

import json
import math
import shutil
from pathlib import Path

import numpy as np
import pytest
import torch
from test_evaluate import eval_argv
from test_train_cli import train

from metarl import registry
from metarl.cli import main
from metarl.evaluate import given_tasks
from metarl.maml2017 import FAMILIES, paired, paper_returns, paper_tasks, schedule

PAPER_MEANS = {  # the MAML paper's Fig. 5 / Fig. 4 means (the table; notes/anchors-metarl.md §3.1)
    "HalfCheetahVel-v0": ([-129.5, -78.6, -66.6, -60.8], -54.5),
    "HalfCheetahDir-v0": ([-50.7, 293.2, 313.5, 315.7], 442.7),
    "AntVel-v0": ([30.6, 96.7, 100.1, 101.4], 107.9),
    "AntDir-v0": ([8.7, 499.1, 500.7, 499.1], 524.8),
    "PointNav-v0": ([-40.4, -11.7, -3.3, -3.2, -3.4], -2.3),
}


@pytest.fixture(scope="module")
def trained(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return train(tmp_path_factory.mktemp("trained"), "maml", iterations=1)


@pytest.fixture
def run_dir(trained: Path, tmp_path: Path) -> Path:
    return Path(shutil.copytree(trained, tmp_path / trained.name))


def test_the_tasks_are_the_paper_scripts_draws() -> None:
    """As maml_examples/test_maml_*.py drew them: the global NumPy generator seeded, then one uniform draw."""
    np.random.seed(1)
    speeds = np.random.uniform(0.0, 2.0, size=(40,))
    assert paper_tasks("HalfCheetahVel-v0") == {"goal_vel": speeds.tolist()}
    assert paper_tasks("HalfCheetahDir-v0") == {"direction": [-1.0 if v < 1.0 else 1.0 for v in speeds]}
    np.random.seed(1)
    assert paper_tasks("AntVel-v0") == {"goal_vel": np.random.uniform(0.0, 3.0, size=(40,)).tolist()}
    np.random.seed(2)  # test_maml_ant_direc.py seeds 2, and turns at 1.5 m/s
    assert paper_tasks("AntDir-v0") == {"direction": [-1.0 if v < 1.5 else 1.0
                                                      for v in np.random.uniform(0.0, 3.0, size=(40,))]}
    np.random.seed(1)
    assert paper_tasks("PointNav-v0") == {"goal": np.random.uniform(-0.5, 0.5, size=(40, 2)).tolist()}
    assert paper_tasks("HalfCheetahVel-v0")["goal_vel"][0] == pytest.approx(0.834044, abs=1e-6)


@pytest.mark.parametrize("family", sorted(FAMILIES))
def test_the_vendored_returns_give_the_papers_means(family: str) -> None:
    means, oracle = PAPER_MEANS[family]
    returns = paper_returns(family)
    assert [len(row) for row in returns["maml"]] == [40] * len(means)
    assert [round(float(np.mean(row)), 1) for row in returns["maml"]] == means
    assert round(float(np.mean(returns["oracle"][0])), 1) == oracle and len(returns["oracle"]) == 1
    assert len(returns["random"]) == len(means)
    # and the tasks fit our family's fields
    assert registry.make(family).make_tasks(**paper_tasks(family))


def test_the_test_scripts_step_sizes() -> None:
    """init_learning_rate α, then tf_optimizer_args' learning_rate: 0.5·α (test_maml_ant_direc.py: 0.01·α)."""
    assert schedule("HalfCheetahVel-v0", 3) == (0.1, 0.05, 0.05)
    assert schedule("PointNav-v0", 3) == (0.5, 0.25, 0.25)
    assert schedule("AntDir-v0", 3) == pytest.approx((0.1, 0.001, 0.001)) and schedule("AntDir-v0", 0) == ()
    assert (FAMILIES["AntDir-v0"].episodes, FAMILIES["PointNav-v0"].episodes, FAMILIES["AntVel-v0"].episodes) == \
        (40, 40, 20)  # batch_size 8000 / H 200, 4000 / H 100, 4000 / H 200


def test_paired_difference_and_standard_error_by_hand() -> None:
    ours = [[1.0, 2.0, 6.0], [0.0, 0.0, 3.0]]
    theirs = [[0.0, 0.0, 0.0], [1.0, 1.0, 1.0], [9.0, 9.0, 9.0]]  # one step more: compared over the common two
    result = paired(ours, theirs)
    d0, d1 = np.array([1.0, 2.0, 6.0]), np.array([-1.0, -1.0, 2.0])
    assert result["diff"] == [3.0, 0.0]
    assert result["se"] == pytest.approx([math.sqrt(d0.var(ddof=1) / 3), math.sqrt(d1.var(ddof=1) / 3)])
    with pytest.raises(ValueError, match="same tasks"):
        paired([[1.0, 2.0]], [[1.0]])


def test_eval_on_the_papers_tasks(run_dir: Path) -> None:
    assert main(eval_argv(run_dir, "--tasks", "40", "--task-set", "maml2017")) == 0  # --tasks may repeat the size
    record = json.loads((run_dir / "eval-T40-E1-k1-maml2017.json").read_text())
    assert record["protocol"]["task_set"] == "maml2017" and record["protocol"]["tasks"] == 40
    assert record["tasks"] == paper_tasks("PointNav-v0")
    assert torch.tensor(record["per_task"]).shape == (2, 40)


def test_given_tasks_equal_to_the_seeded_draw_reproduce_its_evaluation(run_dir: Path, tmp_path: Path) -> None:
    assert main(eval_argv(run_dir)) == 0
    seeded = json.loads((run_dir / "eval-T2-E1-k1.json").read_text())
    tasks_file = tmp_path / "drawn.json"
    tasks_file.write_text(json.dumps(seeded["tasks"]))
    assert main(eval_argv(run_dir, "--task-set", str(tasks_file))) == 0
    given = json.loads((run_dir / "eval-T2-E1-k1-tasks-drawn.json").read_text())
    assert given["tasks"] == seeded["tasks"] and given["returns"] == seeded["returns"]
    moved = {"goal": [[0.4, -0.4], [0.0, 0.3], [-0.2, 0.1]]}  # other tasks: other returns, the file's count
    tasks_file.write_text(json.dumps(moved))
    assert main(eval_argv(run_dir, "--task-set", str(tasks_file), "--tasks", "3", "--out", "moved")) == 0
    assert json.loads((run_dir / "eval-moved.json").read_text())["tasks"] == moved


@pytest.mark.parametrize(
    ("content", "message"),
    [
        ('{"goal_vel": [1.0]}', "PointNav-v0 tasks have fields ['goal'], got ['goal_vel']"),
        ('{"goal": [[0.1, 0.2, 0.3]]}', "must be [T, *(2,)]"),
        ("[1, 2]", "needs a JSON object of task fields"),
        ("{goal", "not JSON"),
        (None, "cannot read it"),
    ],
)
def test_bad_task_files_are_refused(run_dir: Path, tmp_path: Path, content: str | None, message: str,
                                    capsys: pytest.CaptureFixture[str]) -> None:
    path = tmp_path / "tasks.json"
    if content is not None:
        path.write_text(content)
    capsys.readouterr()
    assert main(eval_argv(run_dir, "--task-set", str(path))) == 2
    captured = capsys.readouterr()
    assert message in captured.out + captured.err and f"--task-set {path}" in captured.out + captured.err
    assert not (run_dir / "eval.json").exists()


def test_the_paper_set_is_refused_where_it_does_not_exist_or_disagrees(run_dir: Path,
                                                                       capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(ValueError, match="no test tasks for HalfCheetahUphill-v0; it evaluated HalfCheetahVel-v0"):
        given_tasks(registry.make("HalfCheetahUphill-v0"), "HalfCheetahUphill-v0", "maml2017")
    assert given_tasks(registry.make("PointNav-v0"), "oracle/PointNav-v0", "maml2017") is not None  # its base's
    capsys.readouterr()
    assert main(eval_argv(run_dir, "--task-set", "maml2017")) == 2  # eval_argv asks for 2 tasks
    captured = capsys.readouterr()
    assert "--tasks 2 disagrees with --task-set maml2017, which holds 40 tasks" in captured.out + captured.err
