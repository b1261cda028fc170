"""Optimiser steps with their state kept as data, so a checkpoint can hold it and a resumed run continues exactly."""

from __future__ import annotations

from typing import Any

import torch

from metarl.policies import Params


def adam_ascent(
    params: Params, grads: Params, lr: float, state: dict[str, Any] | None
) -> tuple[Params, dict[str, Any]]:
    """One Adam step *up* the gradient, with the optimiser state kept as data (checkpointable)."""
    leaves = [p.detach().clone().requires_grad_(True) for p in params.values()]
    optimizer = torch.optim.Adam(leaves, lr=lr, maximize=True)
    if state is not None:
        optimizer.load_state_dict(state)
    for leaf, name in zip(leaves, params, strict=True):
        leaf.grad = grads[name].detach().clone()
    optimizer.step()
    return {name: leaf.detach() for name, leaf in zip(params, leaves, strict=True)}, optimizer.state_dict()
