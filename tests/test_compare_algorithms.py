"""scripts/compare_algorithms.py: every contender runs on the same physics, and a tiny budget runs end to end."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def test_every_contender_steps_the_paper_presets_physics(load_script) -> None:
    # the MAML paper preset steps the cheetah as rllab did (frame_skip 1); Reptile and ES-MAML once ran on the
    # family's default (Gymnasium's 5) next to it, so their curves measured a different task
    contenders = load_script("compare_algorithms").contenders
    runs = contenders("HalfCheetahVel-v0", seed=3)
    assert set(runs) == {"MAML (lvc, default)", "MAML (dice, unbiased)", "FOMAML", "Reptile", "ES-MAML"}
    for name, (_, cfg) in runs.items():
        assert cfg.family == "HalfCheetahVel-v0", name
        assert cfg.run.family_kwargs == {"frame_skip": 1}, name
        assert cfg.run.seed == 3, name
    point = contenders("PointNav-v0", seed=0)
    assert all(cfg.run.family_kwargs == {} for _, cfg in point.values())


def test_a_tiny_budget_writes_one_curve_per_contender(tmp_path: Path) -> None:
    subprocess.run([sys.executable, "scripts/compare_algorithms.py", "PointNav-v0", "--budget", "100000", "--points",
                    "2", "--tasks", "2", "--only", "FOMAML,Reptile", "--out", str(tmp_path)],
                   cwd=ROOT, check=True, capture_output=True, text=True)
    result = json.loads((tmp_path / "algorithms-PointNav-v0.json").read_text())
    assert set(result["curves"]) == {"FOMAML", "Reptile"} and result["family_kwargs"] == {}
    for curve in result["curves"].values():
        assert len(curve["env_steps"]) == 2 and curve["env_steps"][-1] >= 100000
        assert all(isinstance(r, float) for r in curve["return_post"])
    assert (tmp_path / "algorithms-PointNav-v0.png").stat().st_size > 0


def test_results_md_names_the_physics_of_a_comparison(load_script) -> None:
    curve = {"env_steps": [10, 20], "return_pre": [-3.0, -2.0], "return_post": [-2.0, -1.0], "iteration": [1, 2]}
    result = {"family": "HalfCheetahVel-v0", "budget": 20, "steps": 1, "tasks": 2, "seed": 0,
              "curves": {"FOMAML": curve}}
    render = load_script("reproduce").comparison_section
    assert not any("family made with" in line for line in render(result))
    lines = render({**result, "family_kwargs": {"frame_skip": 1}})
    assert "- Every algorithm on the family made with `frame_skip=1`." in lines
    assert "| FOMAML | 20 | -2.0 | -1.0 |" in lines


def test_an_unknown_contender_is_a_clear_error() -> None:
    out = subprocess.run([sys.executable, "scripts/compare_algorithms.py", "PointNav-v0", "--only", "FOMAML,Reptil"],
                         cwd=ROOT, capture_output=True, text=True)
    assert out.returncode == 2 and "unknown contender(s) ['Reptil']" in out.stderr
