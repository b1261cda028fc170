"""scripts/bench_estimators.py end to end on a tiny budget: its JSON line, and the toy MDP section's bias check."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def test_bench_estimators_reports_the_schema_and_finds_the_biased_estimators() -> None:
    out = subprocess.run([sys.executable, "scripts/bench_estimators.py", "--tasks", "2", "--reps", "2",
                          "--toy-batches", "4000", "--dice-lambdas", "0.5", "--value-warmup", "1"],
                         cwd=ROOT, check=True, capture_output=True, text=True).stdout
    result = json.loads(out.strip().splitlines()[-1])
    for key in ("default", "default_unbiased", "variance_ratio_default_vs_lvc", "variance_ratio_default_vs_dice",
                "estimators", "toy"):
        assert key in result, key
    assert result["default"] == "lvc" and result["default_unbiased"] is False
    assert {"dice+value", "lvc+value"} <= set(result["estimators"])
    assert all(row["relative_variance"] > 0 for row in result["estimators"].values())
    toy = result["toy"]["estimators"]
    assert set(toy) == {"naive", "lvc", "dice", "dice_cv", "dice-λ0.5"}
    # Against the closed form I + α∇²V/H: the unbiased estimators sit within noise, the naive surrogate (no score
    # products at all) far outside it.
    assert toy["dice"]["distance_to_exact_se"] < 5 and toy["dice_cv"]["distance_to_exact_se"] < 5
    assert toy["naive"]["distance_to_exact_se"] > 10
    for row in toy.values():
        assert row["mse"] >= 0.99 * row["total_variance"]  # MSE = variance + bias² (sample variance: n − 1)
