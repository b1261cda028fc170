"""scripts/reproduce.py end to end on a tiny budget: the result JSON's schema and the generated docs/results.md."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def test_reproduce_writes_the_schema_and_regenerates_the_markdown(tmp_path: Path) -> None:
    out, markdown = tmp_path / "results", tmp_path / "results.md"
    common = ["--out", str(out), "--markdown", str(markdown)]
    subprocess.run([sys.executable, "scripts/reproduce.py", "PointNav-v0", "--iterations", "2", "--eval-tasks", "2",
                    "--set", "meta_batch_size=3", "--set", "episodes_per_task=2", "--set", "curvature_subsample=1",
                    "--baseline-iterations", "1", "--runs-dir", str(tmp_path / "runs"), *common],
                   cwd=ROOT, check=True, capture_output=True)
    result = json.loads((out / "PointNav-v0.json").read_text())
    for key in ("family", "paper", "methods", "iterations", "env_steps", "wall_s", "machine", "commit", "command",
                "seeds", "training"):
        assert key in result, key
    assert result["paper"]["maml"] == [-40.4, -11.7, -3.3] and result["iterations"] == 2
    assert set(result["methods"]) == {"maml", "random", "pretrained", "oracle", "ppo"}
    for method in result["methods"].values():
        assert len(method["mean"]) == len(method["se"]) == 4  # steps 0..3
    assert (out / "PointNav-v0.png").stat().st_size > 10_000
    written = markdown.read_bytes()
    markdown.unlink()
    subprocess.run([sys.executable, "scripts/reproduce.py", "--render-only", *common], cwd=ROOT, check=True,
                   capture_output=True)
    assert markdown.read_bytes() == written  # generated from the JSON alone, byte for byte
    text = written.decode()
    assert "| MAML paper | -40.4 | -11.7 | -3.3 |" in text and "| maml (ours) |" in text


def test_the_published_results_name_every_paper_family_with_its_numbers(load_script) -> None:
    """docs/results.md is regenerated from the JSONs byte for byte and names the 5 paper families with the paper's
    numbers (next to ours where a run is published)."""
    reproduce = load_script("reproduce")
    text = (ROOT / "docs/results.md").read_text()
    assert text == reproduce.render_markdown(reproduce.load_results(ROOT / "docs/results"))
    for family, paper in reproduce.PAPER.items():
        assert f"## {family}" in text
        assert "| MAML paper | " + " | ".join(reproduce.fmt(v) for v in paper["maml"]) in text

