"""Regenerate metarl/data/maml2017.json: the MAML paper's own per-task test returns.

cbfinn/maml_rl keeps the data behind the paper's locomotion and navigation figures as
`icml/icml_<env>_results_<method>.pkl` (key `task_avg_returns`: [adaptation steps + 1][40 test tasks], the tasks in
the order of `maml_examples/test_maml_*.py`'s goals). We keep those numbers (rounded to 1e-4) so that
`metarl eval --task-set maml2017` results compare with the paper task by task (`metarl.maml2017`); the tasks
themselves are regenerated from the scripts' NumPy seeds.

    python scripts/vendor_maml2017.py PATH/TO/maml_rl       # a checkout of github.com/cbfinn/maml_rl
"""

from __future__ import annotations

import argparse
import json
import pickle
import re
from pathlib import Path

import numpy as np

from metarl.maml2017 import DATA_PATH, FAMILIES

METHODS = {"maml": "maml", "pretrained": "pretrain", "random": "random", "oracle": "oracle"}
"""Our method names -> the pickles' suffixes."""


def load(repo: Path, env: str, suffix: str) -> list[list[float]] | None:
    path = repo / "icml" / f"icml_{env}_results_{suffix}.pkl"
    if not path.is_file():
        return None
    with path.open("rb") as f:
        data = pickle.load(f, encoding="latin1")  # written by Python 2
    returns = np.asarray(data["task_avg_returns"], dtype=np.float64)  # [steps + 1, 40]
    if returns.ndim != 2 or returns.shape[1] != 40:
        raise SystemExit(f"{path}: expected [steps, 40] returns, got {returns.shape}")
    return np.round(returns, 4).tolist()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("repo", type=Path, help="a checkout of cbfinn/maml_rl")
    args = parser.parse_args()
    out = {"source": "github.com/cbfinn/maml_rl icml/icml_*_results_*.pkl (task_avg_returns)", "families": {}}
    for family, info in FAMILIES.items():
        returns = {name: r for name, suffix in METHODS.items() if (r := load(args.repo, info.pickle, suffix))}
        out["families"][family] = {"returns": returns}
    text = json.dumps(out, indent=1)
    # one line per adaptation step (40 numbers), not one per number
    text = re.sub(r"\[\n\s*(-?[0-9][^\[\]]*?)\n\s*\]", lambda m: "[" + re.sub(r",\n\s*", ", ", m.group(1)) + "]", text)
    DATA_PATH.write_text(text + "\n")
    print(f"wrote {DATA_PATH}")


if __name__ == "__main__":
    main()
