"""MAML's named presets (`metarl train maml --preset NAME`): the MAML paper's settings per family, pytorch-maml-rl's
2-D navigation, and a quick demo. Each is a dict of dotted config overrides (`metarl.config.apply_overrides`)."""

from __future__ import annotations

from typing import Any

_RLLAB_POLICY = {"policy.hidden": (100, 100), "policy.activation": "relu", "policy.init": "glorot"}
"""rllab's policy in the MAML paper: 2×100 ReLU, Glorot-uniform weights, zero biases."""
_CHEAP_CURVATURE = {"curvature_subsample": 5, "trpo.kl_rescale": True}
"""TRPO's curvature on every 5th episode (OpenAI baselines' subsampling), the step then scaled to the measured KL:
update ≤ 0.5× the sampling time at the paper's batch on 2 cores (README, MAML speed); learning compared with exact
curvature in the README. `--curvature-subsample 1` restores the exact product."""

_RLLAB_CHEETAH_STEP = {"run.family_kwargs": {"frame_skip": 1}}
"""The paper's rllab cheetah advanced 0.01 s per env step (its MJCF sets no frame_skip: 1 × 0.01 s), 200 steps being
2 s; the families default to Gymnasium's 5 × 0.01 s. With Gymnasium's step, HalfCheetahDir's post-adaptation return
reached 103 in 178 iterations; with the paper's, 159 in 37 (docs/results.md)."""
_RLLAB_ANT_STEP = {"run.family_kwargs": {"frame_skip": 2}}
"""The paper's rllab ant advanced 0.02 s per env step (one RK4 step of 0.02 s); Gymnasium's is 5 × 0.01 s."""
_RLLAB_POINT_ACTIONS = {"run.family_kwargs": {"rllab": 1}}
"""The paper's point env ran inside rllab's `normalize`: the policy acts in [−1, 1]², scaled to the ±0.1 box
(PointNav's `rllab`). With the action itself as the move (pytorch-maml-rl's env), the unit-std Gaussian starts ten
times wider than the box: 100 iterations reached −40.8 → −17.1 → −12.6 on the test tasks (seed 0), scaled
−40.4 → −13.2 → −6.6 (seeds 0–4; the paper −40.4 → −11.7 → −3.3; docs/results.md)."""

PRESETS: dict[str, dict[str, Any]] = {
    # MAML paper settings (notes/anchors-metarl.md §3.1; cbfinn/maml_rl cluster_maml_trpo_*.py)
    "maml2017-cheetah-vel": {"family": "HalfCheetahVel-v0", "meta_batch_size": 40, "episodes_per_task": 20,
                             "inner_lr": 0.1, "trpo.max_kl": 0.01, **_RLLAB_POLICY, **_CHEAP_CURVATURE,
                             **_RLLAB_CHEETAH_STEP, "run.iterations": 500},
    "maml2017-cheetah-dir": {"family": "HalfCheetahDir-v0", "meta_batch_size": 40, "episodes_per_task": 20,
                             "inner_lr": 0.1, "trpo.max_kl": 0.02, **_RLLAB_POLICY, **_CHEAP_CURVATURE,
                             **_RLLAB_CHEETAH_STEP, "run.iterations": 500},
    "maml2017-ant-vel": {"family": "AntVel-v0", "meta_batch_size": 40, "episodes_per_task": 20,
                         "inner_lr": 0.1, "trpo.max_kl": 0.01, **_RLLAB_POLICY, **_CHEAP_CURVATURE,
                         **_RLLAB_ANT_STEP, "run.iterations": 500},
    "maml2017-ant-dir": {"family": "AntDir-v0", "meta_batch_size": 40, "episodes_per_task": 40,
                         "inner_lr": 0.1, "trpo.max_kl": 0.01, **_RLLAB_POLICY, **_CHEAP_CURVATURE,
                         **_RLLAB_ANT_STEP, "run.iterations": 600},  # the paper's checkpoint: 575 of 800
    "maml2017-point": {"family": "PointNav-v0", "meta_batch_size": 20, "episodes_per_task": 20,
                       "inner_lr": 0.5, "trpo.max_kl": 0.01, **_RLLAB_POLICY, **_CHEAP_CURVATURE,
                       **_RLLAB_POINT_ACTIONS, "run.iterations": 100},
    # pytorch-maml-rl's 2-D navigation config (configs/maml/2d-navigation.yaml): the bench_pointnav.py setting
    "pytorch-maml-rl-point": {"family": "PointNav-v0", "meta_batch_size": 20, "episodes_per_task": 20,
                              "inner_lr": 0.1, "trpo.max_kl": 0.01, "policy.hidden": (64, 64),
                              "policy.activation": "tanh", "policy.init": "glorot", **_CHEAP_CURVATURE,
                              "run.iterations": 500},
    # small and quick: learns PointNav visibly in well under a minute on 2 cores
    "fast": {"family": "PointNav-v0", "meta_batch_size": 20, "episodes_per_task": 10, "inner_lr": 0.1,
             "policy.hidden": (64, 64), "policy.activation": "tanh", "run.iterations": 40,
             "run.checkpoint_every": 10},
}
