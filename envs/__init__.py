"""The built-in task families. Every built-in registration is in this one file (the analytic toy MDP in toy_mdp.py
is opt-in: `register_toy()`).

Task distributions, rewards and horizons reproduce the MAML paper (Finn et al. 2017; cbfinn/maml_rl): horizon 200 for
locomotion, 100 for navigation. The walkers' physics follow Gymnasium's v5 envs, 0.05 s per env step; the paper's rllab
envs stepped 0.01 s (cheetah) and 0.02 s (ant), which the `maml2017-*` presets set with `frame_skip`. Bounds, horizon
and frame_skip are kwargs: e.g. `make("HalfCheetahVel-v0", high=3.0, horizon=100)` is the ProMP/PEARL preset. The
cheetahs' and ants' `rllab=True` replaces Gymnasium's observation, velocity and reset with rllab's (`CheetahFamily`,
`AntFamily`; the ant's also its MJCF's integration step and contact softness); PointNav's scales the policy's
actions from [−1, 1]² to the ±0.1 box, as rllab's `normalize` did."""

from __future__ import annotations

from metarl.registry import FamilySpec, register

_MAML = "MAML (Finn et al. 2017), cbfinn/maml_rl"

register(FamilySpec(
    id="HalfCheetahVel-v0",
    entry_point="metarl.envs.half_cheetah_vel:HalfCheetahVel",
    horizon=200,
    kwargs={"low": 0.0, "high": 2.0},
    tasks="goal_vel ~ U[0, 2] m/s",
    reference=f"{_MAML}; U[0,3] in ProMP/PEARL/VariBAD, H=100 in pytorch-maml-rl/ProMP",
))
register(FamilySpec(
    id="HalfCheetahDir-v0",
    entry_point="metarl.envs.half_cheetah_dir:HalfCheetahDir",
    horizon=200,
    tasks="direction ∈ {−1, +1}",
    reference=f"{_MAML}; H=100 in pytorch-maml-rl/ProMP/learn2learn",
))
register(FamilySpec(
    id="AntVel-v0",
    entry_point="metarl.envs.ant_vel:AntVel",
    horizon=200,
    kwargs={"low": 0.0, "high": 3.0},
    tasks="goal_vel ~ U[0, 3] m/s",
    reference=_MAML,
))
register(FamilySpec(
    id="AntDir-v0",
    entry_point="metarl.envs.ant_dir:AntDir",
    horizon=200,
    tasks="direction ∈ {−1, +1}",
    reference=f"{_MAML} (40 episodes per adaptation step)",
))
register(FamilySpec(
    id="HalfCheetahUphill-v0",
    entry_point="metarl.envs.half_cheetah_uphill:HalfCheetahUphill",
    horizon=200,
    kwargs={"low_deg": 0.0, "high_deg": 15.0},
    tasks="slope ~ U[0°, 15°] (rotated gravity)",
    reference="sloped terrain after Nagabandi, Clavera et al. 2018 (learning_to_adapt): 3.2°–12.5° ramps",
))
register(FamilySpec(
    id="AntUphill-v0",
    entry_point="metarl.envs.ant_uphill:AntUphill",
    horizon=200,
    kwargs={"low_deg": 0.0, "high_deg": 15.0},
    tasks="slope ~ U[0°, 15°] (rotated gravity)",
    reference="metarl (uphill Ant; slope as a physics-side task parameter)",
))
register(FamilySpec(
    id="PointNav-v0",
    entry_point="metarl.envs.point_nav:PointNav",
    horizon=100,
    kwargs={"low": -0.5, "high": 0.5},
    tasks="goal ~ U[−0.5, 0.5]²",
    reference=f"{_MAML} 2-D navigation; U[−1,1]² in es_maml",
))
