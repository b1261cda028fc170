"""scripts/estimator_study.py's HalfCheetahVel section: read from training runs, refusing runs that do not compare."""

from __future__ import annotations

import json
from pathlib import Path

import pytest


def _run(root: Path, name: str, estimator: str, seed: int, post: list[float], kwargs: dict | None = None,
         baseline: str = "linear") -> str:
    run = root / name
    run.mkdir()
    config = {"estimator": estimator, "baseline": baseline, "run": {"seed": seed, "family_kwargs": kwargs or {}}}
    (run / "config.json").write_text(json.dumps({"algo": "maml", "config": config}))
    (run / "metrics.jsonl").write_text("".join(json.dumps({"meta/return_pre": 0.0, "meta/return_post_1": v}) + "\n"
                                               for v in post))
    return f"{estimator}={run}"


def test_the_mean_of_the_last_ten_of_the_first_n_iterations(tmp_path: Path, load_script) -> None:
    fs1 = {"frame_skip": 1}
    entries = [_run(tmp_path, "a", "lvc", 0, list(range(30)), fs1),
               _run(tmp_path, "b", "lvc", 1, [2.0] * 20 + [100.0] * 5, fs1),
               _run(tmp_path, "c", "dice", 0, [-1.0] * 20, fs1)]
    study = load_script("estimator_study").cheetah_study(entries, 20)
    assert study["lvc"]["per_seed"] == {"0": 14.5, "1": 2.0}  # mean of 10..19; seed 1's later iterations ignored
    assert study["lvc"]["post_mean"] == pytest.approx(8.25) and study["lvc"]["seeds"] == [0, 1]
    assert study["dice"]["post_sd"] is None and study["dice"]["family_kwargs"] == fs1
    assert study["lvc"]["iterations"] == 20


def test_a_value_baseline_run_is_its_own_label(tmp_path: Path, load_script) -> None:
    study = load_script("estimator_study")
    entries = [_run(tmp_path, "a", "dice", 0, [1.0] * 20),
               _run(tmp_path, "b", "dice", 0, [3.0] * 20, baseline="value").replace("dice=", "dice+value=")]
    result = study.cheetah_study(entries, 20)
    assert result["dice"]["post_mean"] == 1.0 and result["dice+value"]["post_mean"] == 3.0
    assert study.parse_label("lvc+value") == ("lvc", "value") and study.parse_label("lvc") == ("lvc", None)
    with pytest.raises(SystemExit):  # a value-baseline run under a plain label
        study.cheetah_study([entries[1].replace("dice+value=", "dice=")], 20)
    with pytest.raises(SystemExit):
        study.parse_label("dice+linear")


@pytest.mark.parametrize("problem", ["label", "physics", "seed", "short"])
def test_runs_that_do_not_compare_are_refused(tmp_path: Path, problem: str, load_script) -> None:
    entries = [_run(tmp_path, "a", "lvc", 0, [1.0] * 20, {"frame_skip": 1})]
    if problem == "label":
        entries.append(_run(tmp_path, "b", "dice", 1, [1.0] * 20, {"frame_skip": 1}).replace("dice=", "dice_cv="))
    elif problem == "physics":  # Gymnasium's time step next to the paper's
        entries.append(_run(tmp_path, "b", "dice", 0, [1.0] * 20))
    elif problem == "seed":
        entries.append(_run(tmp_path, "b", "lvc", 0, [1.0] * 20, {"frame_skip": 1}))
    else:
        entries.append(_run(tmp_path, "b", "dice", 0, [1.0] * 19, {"frame_skip": 1}))
    with pytest.raises(SystemExit):
        load_script("estimator_study").cheetah_study(entries, 20)
