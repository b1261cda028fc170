"""One MAML-TRPO meta-step on identical data, metarl vs pytorch-maml-rl's own code: how far apart are the steps?

Needs a checkout of tristandeleu/pytorch-maml-rl (tested at 21d4ba1) given as --port; nothing of it is copied here, its
modules are imported from that path. Each iteration samples the pre-update episodes of 20 PointNav tasks with metarl's
sampler, hands the same episodes to both (pytorch-maml-rl's BatchEpisodes, linear baseline, GAE, normalisation and
inner step; metarl's `prepare` and `inner_step`), samples the post-update episodes with metarl's adapted policies, and
takes one TRPO meta-step with each (pytorch-maml-rl's MAMLTRPO.step; metarl's meta_update) from the same parameters.
Both then continue from metarl's parameters.

    python scripts/compare_pytorch_maml_rl.py --port ../pytorch-maml-rl                    # --average episodes
    python scripts/compare_pytorch_maml_rl.py --port ../pytorch-maml-rl --average steps    # metarl's default

Prints the relative differences ‖ours − port‖/‖port‖ of the advantages, the adapted parameters and the meta-step per
iteration; the last line is JSON with the largest of each. pytorch-maml-rl averages every surrogate, KL and the
advantage normalisation per episode over its valid steps (`weighted_mean`): with `--average episodes` the two agree
to float32 precision; with `--average steps` they differ where episodes end early.
"""

from __future__ import annotations

import argparse
import json
import sys
import types
from collections.abc import Generator
from typing import Any

import torch

import metarl
from metarl.algos import maml as M
from metarl.config import apply_overrides
from metarl.estimators import prepare
from metarl.policies import GaussianMLP, PolicyOutput, forward
from metarl.sampler import Batch, Sampler

PORT_NAMES = {"layer1.weight": "net.0.weight", "layer1.bias": "net.0.bias", "layer2.weight": "net.2.weight",
              "layer2.bias": "net.2.bias", "mu.weight": "net.4.weight", "mu.bias": "net.4.bias", "sigma": "log_std"}
"""pytorch-maml-rl's NormalMLPPolicy parameter names -> metarl's GaussianMLP names (2 hidden layers)."""


def import_port(path: str) -> types.SimpleNamespace:
    """The pieces of pytorch-maml-rl this comparison calls, imported from its checkout at `path`."""
    sys.path.insert(0, path)
    # its samplers need the old gym API, and MAMLTRPO only imports them for a type: a stand-in module suffices
    samplers = types.ModuleType("maml_rl.samplers")
    samplers.MultiTaskSampler = object  # type: ignore[attr-defined]
    sys.modules["maml_rl.samplers"] = samplers
    # torch 2.x's torch.lstsq only raises "removed"; its baseline solves the normal equations (XᵀX + rI) c = Xᵀy
    torch.lstsq = lambda b, a: (torch.linalg.solve(a, b), None)  # type: ignore[attr-defined]
    from maml_rl.baseline import LinearFeatureBaseline
    from maml_rl.episode import BatchEpisodes
    from maml_rl.metalearners.maml_trpo import MAMLTRPO
    from maml_rl.policies.normal_mlp import NormalMLPPolicy
    from maml_rl.utils.reinforcement_learning import reinforce_loss

    return types.SimpleNamespace(LinearFeatureBaseline=LinearFeatureBaseline, BatchEpisodes=BatchEpisodes,
                                 MAMLTRPO=MAMLTRPO, NormalMLPPolicy=NormalMLPPolicy, reinforce_loss=reinforce_loss)


class Ready:
    """An awaitable that is already done: MAMLTRPO.step awaits its episodes as futures."""

    def __init__(self, value: Any) -> None:
        self.value = value

    def __await__(self) -> Generator[None, None, Any]:
        return self.value
        yield  # a generator, so that `await` accepts it


def port_episodes(port: types.SimpleNamespace, batch: Batch, task: int, gamma: float, gae_lambda: float) -> Any:
    """Task `task` of a metarl batch as pytorch-maml-rl's BatchEpisodes, with its baseline fit and advantages."""
    E, H = batch.obs.shape[1:3]
    episodes = port.BatchEpisodes(batch_size=E, gamma=gamma)
    for h in range(H):
        alive = batch.mask[task, :, h] > 0
        if not bool(alive.any()):
            break
        ids = [e if bool(alive[e]) else None for e in range(E)]
        episodes.append(batch.obs[task, :, h].numpy(), batch.act[task, :, h].numpy(), batch.rew[task, :, h].numpy(),
                        ids)
    baseline = port.LinearFeatureBaseline(batch.obs.shape[-1])
    baseline.fit(episodes)
    episodes.compute_advantages(baseline, gae_lambda=gae_lambda, normalize=True)
    return episodes


def relative(ours: torch.Tensor, theirs: torch.Tensor) -> float:
    ours, theirs = ours.double(), theirs.double()
    return float((ours - theirs).norm() / theirs.norm().clamp_min(1e-30))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--port", required=True, help="path of a tristandeleu/pytorch-maml-rl checkout")
    parser.add_argument("--iterations", type=int, default=3)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--average", default="episodes", choices=["steps", "episodes"])
    args = parser.parse_args()

    port = import_port(args.port)
    cfg = apply_overrides(M.MAMLConfig(), {**M.PRESETS["pytorch-maml-rl-point"], "estimator": "naive",
                                           "cross_fit": False,  # the port fits its baseline on the same batch
                                           "average": args.average})
    family = metarl.make(cfg.family)
    torch.manual_seed(args.seed)
    port_policy = port.NormalMLPPolicy(2, 2, hidden_sizes=cfg.policy.hidden, nonlinearity=torch.tanh)
    policy = GaussianMLP(family.obs_dim, family.act_dim, cfg.policy.hidden, "tanh", cfg.policy.init_std)
    named = {PORT_NAMES[k]: v.detach().clone() for k, v in port_policy.named_parameters()}
    params = {name: named[name] for name, _ in policy.named_parameters()}
    sampler, generator = Sampler(family), torch.Generator().manual_seed(args.seed)
    learner = port.MAMLTRPO(port_policy, fast_lr=cfg.inner_lr, first_order=False)
    T, worst = cfg.meta_batch_size, {"advantages": 0.0, "adapted": 0.0, "meta_step": 0.0}

    def prepared(batch: Batch) -> Any:
        return prepare(batch, cfg.gamma, cfg.gae_lambda, cfg.baseline, cfg.normalize_advantages, cfg.average)

    for it in range(args.iterations):
        tasks = family.sample_tasks(T, generator)
        pre_batch = sampler.sample(policy, params, tasks, cfg.episodes_per_task, generator)
        pre = prepared(pre_batch)
        train = [port_episodes(port, pre_batch, t, cfg.gamma, cfg.gae_lambda) for t in range(T)]
        diffs = {"advantages": relative(pre.adv, torch.stack([e.advantages.T for e in train]))}
        with torch.no_grad():
            step = M.inner_step(policy, params, pre, cfg.inner_lr, "naive", first_order=True)
        adapted = {k: v.detach() for k, v in step.items()}
        theirs = [port_policy.update_params(port.reinforce_loss(port_policy, e), step_size=cfg.inner_lr,
                                            first_order=True) for e in train]
        step_ours = torch.cat([(adapted[PORT_NAMES[k]] - params[PORT_NAMES[k]]).reshape(-1) for k in PORT_NAMES])
        step_port = torch.cat([(torch.stack([p[k] for p in theirs]).detach() - params[PORT_NAMES[k]]).reshape(-1)
                               for k in PORT_NAMES])
        diffs["adapted"] = relative(step_ours, step_port)  # of the inner steps θ′ − θ

        post_batch = sampler.sample(policy, adapted, tasks, cfg.episodes_per_task, generator)
        post = prepared(post_batch)
        valid = [port_episodes(port, post_batch, t, cfg.gamma, cfg.gae_lambda) for t in range(T)]
        with torch.no_grad():
            old = forward(policy, adapted, post.obs)
        rollouts = M.MetaRollouts((pre,), post, PolicyOutput(old.mean, old.log_std), (adapted,),
                                  torch.zeros(T, dtype=post.adv.dtype), (0.0, 0.0))
        new, _, metrics = M.meta_update(policy, params, rollouts, cfg, None)
        before = {k: v.detach().clone() for k, v in port_policy.named_parameters()}
        learner.step([[Ready(e) for e in train]], [Ready(e) for e in valid], max_kl=cfg.trpo.max_kl,
                     cg_iters=cfg.trpo.cg_iters, cg_damping=cfg.trpo.cg_damping, ls_max_steps=cfg.trpo.ls_steps,
                     ls_backtrack_ratio=cfg.trpo.ls_backtrack)
        after = dict(port_policy.named_parameters())
        meta_port = torch.cat([(after[k].detach() - before[k]).reshape(-1) for k in PORT_NAMES])
        meta_ours = torch.cat([(new[PORT_NAMES[k]] - params[PORT_NAMES[k]]).reshape(-1) for k in PORT_NAMES])
        diffs["meta_step"] = relative(meta_ours, meta_port)
        print(f"iteration {it}: relative differences " + "  ".join(f"{k} {v:.1e}" for k, v in diffs.items())
              + f"  (step fraction {metrics['outer/step_fraction']:.2f}, "
              f"episodes ended early {float(1 - post.mask[..., -1].mean()):.0%})", flush=True)
        worst = {k: max(worst[k], diffs[k]) for k in worst}
        params = {k: v.detach().clone() for k, v in new.items()}
        with torch.no_grad():  # both continue from metarl's parameters
            for name, p in port_policy.named_parameters():
                p.copy_(params[PORT_NAMES[name]])
    print(json.dumps({"average": args.average, "iterations": args.iterations,
                      **{f"max_relative_difference_{k}": v for k, v in worst.items()}}))


if __name__ == "__main__":
    main()
