"""`metarl plot` and the figure helpers: overlays of several runs, and clear refusals of unusable inputs."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

from metarl.cli import main
from metarl.envs.point_nav import GoalTasks
from metarl.evaluate import EvalResult, eval_record, write_eval
from metarl.plots import RunCurves, comparison_figure, figure_png, legends, read_curves, training_curves
from metarl.registry import spec

PNG_MAGIC = b"\x89PNG\r\n\x1a\n"


def fake_run(root: Path, name: str, algo: str, offset: float, iterations: int = 3, evaluate: bool = True,
             seed: int = 0, inner_lr: float = 0.1) -> Path:
    """A run directory with config.json, metrics.jsonl and (optionally) an evaluation, without training."""
    run_dir = root / name
    run_dir.mkdir(parents=True)
    (run_dir / "config.json").write_text(json.dumps({"format_version": 1, "algo": algo, "config": {
        "family": "PointNav-v0", "inner_lr": inner_lr, "run": {"seed": seed, "runs_dir": str(root)}}}))
    records = [{"iteration": i, "meta/return_pre": -50.0 + i + offset, "meta/return_post_1": -40.0 + i + offset,
                "perf/env_steps": 1000.0 * (i + 1), **({"val/return_post": -35.0 + i} if i % 2 else {})}
               for i in range(iterations)]
    (run_dir / "metrics.jsonl").write_text("".join(json.dumps(r) + "\n" for r in records))
    if evaluate:  # returns [k+1=3, T=4, E=2]
        returns = torch.linspace(-60, -20, 3 * 4 * 2, dtype=torch.float64).view(3, 4, 2) + offset
        result = EvalResult(returns, GoalTasks(torch.zeros(4, 2, dtype=torch.float64)), (0.1, 0.05))
        record = eval_record(result, algo, spec("PointNav-v0").to_json(), f"{algo} (PointNav-v0)", {"tasks": 4})
        write_eval(run_dir, record, result)
    return run_dir


def test_training_curves_pick_the_last_post_step_and_env_steps() -> None:
    records = [{"iteration": 0, "meta/return_pre": -3.0, "meta/return_post_1": -2.0, "meta/return_post_2": -1.0,
                "perf/env_steps": 10.0, "val/return_post": None},
               {"iteration": 1, "meta/return_pre": -2.5, "meta/return_post_1": -1.5, "meta/return_post_2": -0.5,
                "perf/env_steps": 20.0, "val/return_post": -0.7}]
    curves = training_curves(records)
    assert curves["post"] == ([10.0, 20.0], [-1.0, -0.5])
    assert curves["val"] == ([20.0], [-0.7])  # nulls (non-finite values) are skipped
    assert training_curves(records, x="iteration")["pre"] == ([0, 1], [-3.0, -2.5])


def test_plot_overlays_runs_and_baselines(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    runs = [fake_run(tmp_path, "a", "maml", 0.0), fake_run(tmp_path, "b", "baseline-random", -10.0),
            fake_run(tmp_path, "c", "maml", 5.0, evaluate=False)]
    out = tmp_path / "figs" / "compare.png"
    assert main(["plot", *map(str, runs), str(runs[0] / "eval.json"), "--out", str(out)]) == 0
    assert out.read_bytes().startswith(PNG_MAGIC) and out.stat().st_size > 10_000
    assert f"plot: {out}" in capsys.readouterr().out
    assert (runs[0] / "eval.png").read_bytes().startswith(PNG_MAGIC)  # write_eval's own single-run curve


def test_plot_x_axis_by_iteration(tmp_path: Path) -> None:
    run = fake_run(tmp_path, "a", "maml", 0.0, evaluate=False)
    assert main(["plot", str(run), "--out", str(tmp_path / "p.png"), "--x", "iteration"]) == 0
    assert (tmp_path / "p.png").read_bytes().startswith(PNG_MAGIC)


def corrupt_eval(run: Path) -> None:
    (run / "eval.json").write_text('{"format_version": 1, "kind": "eval", "summ')


def other_version(run: Path) -> None:
    record = json.loads((run / "eval.json").read_text())
    (run / "eval.json").write_text(json.dumps({**record, "format_version": 99}))


def empty(run: Path) -> None:
    (run / "eval.json").unlink()
    (run / "metrics.jsonl").write_text("")


@pytest.mark.parametrize(
    ("damage", "message"),
    [(corrupt_eval, "is corrupt"), (other_version, "format version 99"), (empty, "neither eval.json nor metrics")],
)
def test_bad_runs_are_refused_in_one_line(tmp_path: Path, damage: object, message: str,
                                          capsys: pytest.CaptureFixture[str]) -> None:
    run = fake_run(tmp_path, "a", "maml", 0.0)
    damage(run)  # type: ignore[operator]
    out = tmp_path / "p.png"
    assert main(["plot", str(run), "--out", str(out)]) == 2
    printed = capsys.readouterr().out
    assert message in printed and len(printed.strip().splitlines()) == 1
    assert not out.exists()


def test_missing_run_is_refused(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["plot", str(tmp_path / "nope"), "--out", str(tmp_path / "p.png")]) == 2
    assert "does not exist" in capsys.readouterr().out
    assert not (tmp_path / "p.png").exists()


# ----------------------------------------------------------------------------------------------- issue 13
def test_runs_are_labelled_by_algo_family_and_seed(tmp_path: Path) -> None:
    from metarl.plots import distinct_labels

    a = fake_run(tmp_path, "PointNav-v0__maml__0__1700000000", "maml", 0.0)
    b = fake_run(tmp_path, "PointNav-v0__maml__1__1700000001", "maml", 1.0, seed=1)
    c = fake_run(tmp_path, "PointNav-v0__maml__0__1700000002", "maml", 2.0, inner_lr=0.05)
    d = fake_run(tmp_path, "PointNav-v0__baseline-random__0__1700000003", "baseline-random", 3.0)
    labels = [r.label for r in distinct_labels([read_curves(p) for p in (a, b, c, d)])]
    assert labels == ["maml, PointNav-v0, seed 0 (inner_lr=0.1)", "maml, PointNav-v0, seed 1",
                      "maml, PointNav-v0, seed 0 (inner_lr=0.05)", "baseline-random, PointNav-v0, seed 0"]
    assert not any("1700000" in label for label in labels)  # never the directory's timestamp
    same = [read_curves(a), read_curves(a / "eval.json")]  # one run twice: its directory, its evaluation file
    assert len({r.label for r in distinct_labels(same)}) == 2


@pytest.mark.parametrize(("runs", "length"), [(1, 10), (2, 160), (3, 400), (14, 60), (40, 30)])
def test_legends_are_never_clipped(runs: int, length: int) -> None:
    """Every legend's bounding box, measured on the drawn figure, lies inside the figure (which is the PNG)."""
    records = [{"iteration": i, "meta/return_pre": -1.0 * i, "meta/return_post_1": 1.0 * i, "perf/env_steps": 10.0 * i,
                "val/return_post": 0.5 * i} for i in range(1, 4)]
    summary = [{"step": j, "mean": float(j), "ci_low": j - 1.0, "ci_high": j + 1.0} for j in range(3)]
    curves = [RunCurves((f"run {i} with a long label " * 40)[:length], {"summary": summary}, records)
              for i in range(runs)]
    fig = comparison_figure(curves)
    png = figure_png(fig, dpi=100)
    renderer = fig.canvas.get_renderer()  # type: ignore[attr-defined]
    boxes = [legend.get_window_extent(renderer) for legend in legends(fig)]
    assert len(boxes) == 2  # the runs' legend and the line styles'
    for box in boxes:
        assert fig.bbox.x0 - 0.5 <= box.x0 and box.x1 <= fig.bbox.x1 + 0.5, (box, fig.bbox)
        assert fig.bbox.y0 - 0.5 <= box.y0 and box.y1 <= fig.bbox.y1 + 0.5, (box, fig.bbox)
    from PIL import Image

    with Image.open(__import__("io").BytesIO(png)) as image:  # the PNG is the figure's box, nothing cut off
        assert image.size == (round(fig.bbox.width), round(fig.bbox.height))
