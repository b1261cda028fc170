"""First- and second-order products of the built-in MLP policies, derived by hand (Pearlmutter 1994's R-operator).

MAML-TRPO's update is a few dozen passes of the policy network over every state of the batch: the inner gradients,
one Hessian-vector product per inner step for the meta-gradient, and per conjugate-gradient iteration two more plus a
Fisher product (metarl/curvature.py). Autograd's double backward builds these from generic graphs over the whole batch,
with 64 MB intermediates that are allocated (page-faulted) afresh by every operation: on the MAML paper's
HalfCheetahVel batch (160k states, 2×100 ReLU) one curvature product took 1.5–2.4 s, against a floor of about 0.5 s of
matrix products. Here the network's forward pass is recorded once per linearisation point and every product runs one
chunk of rows (tasks) at a time, so its intermediates stay in cache; the maths is the chain rule written out:

    forward      z_i = a_{i−1} W_iᵀ + b_i,   a_i = f(z_i) (i < n),   μ = z_n,   a_0 = x
    vjp          δz_n = δμ,   δa_{i−1} = δz_i W_i,   δz_i = f′ ⊙ δa_i,   ∇W_i = Σ δz_iᵀ a_{i−1},   ∇b_i = Σ δz_i
    jvp (R)      R{z_i} = a_{i−1} V_iᵀ + R{a_{i−1}} W_iᵀ + u_i,   R{a_i} = f′ ⊙ R{z_i}
    R-vjp        R{δa_{i−1}} = R{δz_i} W_i + δz_i V_i,   R{δz_i} = f′ ⊙ R{δa_i} + f″ ⊙ R{z_i} ⊙ δa_i,
                 R{∇W_i} = Σ R{δz_i}ᵀ a_{i−1} + δz_iᵀ R{a_{i−1}},   R{∇b_i} = Σ R{δz_i}

with (V, u) the tangent of (W, b). ReLU: f′ = [a > 0], f″ = 0. tanh: f′ = 1 − a², f″·R{z} = −2a ⊙ R{a}. The R-vjp of a
vjp whose output cotangent δμ itself moves with the tangent (R{δμ} given) is the Hessian-vector product of any loss of
the outputs (metarl/surrogate_products.py builds those). Tested against autograd in float64 (tests/test_fused.py).
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import Tensor, nn

from metarl.policies import GaussianMLP, Params, Tanh, fast_tanh

ACTIVATIONS = {nn.ReLU: "relu", Tanh: "tanh", nn.Tanh: "tanh"}


@dataclass(frozen=True)
class MLPLayout:
    """Where a built-in MLP policy keeps its layers in a params dict.

    Attributes:
        weights: the names of W_1..W_n ([out, in], stacked [R, out, in]).
        biases: the names of b_1..b_n.
        activation: "relu" or "tanh", between the linear layers.
        log_std: the name of the Gaussian log σ, or None (deterministic policy).
    """

    weights: tuple[str, ...]
    biases: tuple[str, ...]
    activation: str
    log_std: str | None

    @property
    def names(self) -> tuple[str, ...]:
        """Every parameter, in the module's order (W_1, b_1, ..., W_n, b_n, log σ)."""
        pairs = tuple(n for w, b in zip(self.weights, self.biases, strict=True) for n in (w, b))
        return pairs + ((self.log_std,) if self.log_std is not None else ())


def layout(policy: nn.Module, params: Params) -> MLPLayout | None:
    """The layout of `policy` if it is exactly one of our Gaussian MLPs (a subclass may override `forward`) with
    ReLU or tanh layers and `params` name every parameter; None otherwise (callers then use autograd)."""
    if type(policy) is not GaussianMLP or params.keys() != dict(policy.named_parameters()).keys():
        return None
    weights, biases, activations = [], [], set()
    for i, layer in enumerate(policy.net):
        if isinstance(layer, nn.Linear):
            weights.append(f"net.{i}.weight")
            biases.append(f"net.{i}.bias")
        elif type(layer) in ACTIVATIONS:
            activations.add(ACTIVATIONS[type(layer)])
        else:
            return None
    if len(activations) > 1:
        return None
    return MLPLayout(tuple(weights), tuple(biases), activations.pop() if activations else "relu", "log_std")



# ----------------------------------------------------------------------------------------------- one chunk of rows
@dataclass
class Tape:
    """The forward pass of one chunk of rows, kept for the products at this point.

    Attributes:
        weights: W_1..W_n, each [c, out, in].
        acts: a_0..a_{n−1} (a_0 = the observations), each [c, N, width].
        slopes: f′ at a_1..a_{n−1}, each [c, N, width].
        mean: μ [c, N, act].
        activation: "relu" or "tanh".
    """

    weights: list[Tensor]
    acts: list[Tensor]
    slopes: list[Tensor]
    mean: Tensor
    activation: str


def record(weights: list[Tensor], biases: list[Tensor], activation: str, obs: Tensor) -> Tape:
    """Run the network on `obs` [c, N, in] with per-row layers W_i [c, out, in], b_i [c, out]."""
    acts = [obs]
    slopes: list[Tensor] = []
    x = obs
    for i, (w, b) in enumerate(zip(weights, biases, strict=True)):
        x = torch.baddbmm(b.unsqueeze(1), x, w.transpose(1, 2))
        if i < len(weights) - 1:
            if activation == "relu":
                x = torch.relu(x)
                slopes.append((x > 0).to(x.dtype))
            else:
                x = fast_tanh(x)
                slopes.append(1 - x.square())
            acts.append(x)
    return Tape(list(weights), acts, slopes, x, activation)


@dataclass
class Backward:
    """A vjp of the tape with cotangent δμ, kept for R-vjps: δz_i [c, N, out] for i = 1..n and, for tanh, δa_i."""

    dz: list[Tensor]
    da: list[Tensor | None]


def vjp(tape: Tape, d_mean: Tensor, keep: bool = False) -> tuple[list[Tensor], list[Tensor], Backward | None]:
    """(∇W_i, ∇b_i) of Σ δμ·μ for cotangent `d_mean` [c, N, act]: each [c, out, in] and [c, out]; with `keep`, the
    intermediate cotangents for `r_vjp` (the Hessian-vector products at this point reuse them)."""
    n = len(tape.weights)
    gw: list[Tensor] = [None] * n  # type: ignore[list-item]
    gb: list[Tensor] = [None] * n  # type: ignore[list-item]
    dz_all: list[Tensor] = [None] * n  # type: ignore[list-item]
    da_all: list[Tensor | None] = [None] * n
    dz = d_mean
    for i in range(n - 1, -1, -1):
        gw[i] = torch.bmm(dz.transpose(1, 2), tape.acts[i])
        gb[i] = dz.sum(1)
        if keep:
            dz_all[i] = dz
        if i > 0:
            da = torch.bmm(dz, tape.weights[i])
            if keep and tape.activation == "tanh":
                da_all[i - 1] = da
                dz = da * tape.slopes[i - 1]
            else:
                dz = da.mul_(tape.slopes[i - 1])
    return gw, gb, Backward(dz_all, da_all) if keep else None


def jvp(tape: Tape, v_weights: list[Tensor], v_biases: list[Tensor]) -> tuple[list[Tensor], Tensor]:
    """The R-forward pass: (R{a_0..a_{n−1}} (R{a_0} = 0, given as a zero-size placeholder), R{μ} [c, N, act]) for the
    tangent (V_i [c, out, in], u_i [c, out])."""
    n = len(tape.weights)
    r_acts: list[Tensor] = [tape.acts[0].new_zeros(())]
    r = None
    for i in range(n):
        rz = torch.baddbmm(v_biases[i].unsqueeze(1), tape.acts[i], v_weights[i].transpose(1, 2))
        if r is not None:
            rz.baddbmm_(r, tape.weights[i].transpose(1, 2))  # in place: no copy of rz
        if i < n - 1:
            r = rz.mul_(tape.slopes[i])  # in place: rz is fresh (saves a 3 MB allocation per layer and chunk)
            r_acts.append(r)
        else:
            return r_acts, rz
    raise AssertionError("unreachable")


def r_vjp(
    tape: Tape,
    back: Backward,
    v_weights: list[Tensor],
    r_acts: list[Tensor],
    r_d_mean: Tensor,
) -> tuple[list[Tensor], list[Tensor]]:
    """R{∇W_i}, R{∇b_i}: the derivative along the tangent V of the vjp in `back`, whose output cotangent moves by
    `r_d_mean` [c, N, act]. With `r_acts` from `jvp` at the same tangent; the sum of the Hessian-vector product of the
    loss's network part and of the Gauss–Newton part the caller put into `r_d_mean`."""
    n = len(tape.weights)
    gw: list[Tensor] = [None] * n  # type: ignore[list-item]
    gb: list[Tensor] = [None] * n  # type: ignore[list-item]
    rdz = r_d_mean
    for i in range(n - 1, -1, -1):
        dz = back.dz[i]
        gw[i] = torch.bmm(rdz.transpose(1, 2), tape.acts[i])
        if i > 0:
            gw[i].baddbmm_(dz.transpose(1, 2), r_acts[i])
        gb[i] = rdz.sum(1)
        if i > 0:
            rda = torch.bmm(rdz, tape.weights[i]).baddbmm_(dz, v_weights[i])
            slope = tape.slopes[i - 1]
            if tape.activation == "tanh":  # f″·R{z} = −2a ⊙ R{a}
                da = back.da[i - 1]
                assert da is not None
                rdz = rda.mul_(slope).sub_(2 * tape.acts[i] * r_acts[i] * da)
            else:
                rdz = rda.mul_(slope)
    return gw, gb
