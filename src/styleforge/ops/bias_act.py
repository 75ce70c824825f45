"""Fused bias + activation + gain + clamp, with the per-activation constants of StyleGAN2/3.

``bias_act(x, b, act=...)`` computes ``clamp(act(x + b) * gain, -clamp, clamp)``. Each activation has a
default ``alpha`` (its shape parameter, e.g. the leaky-ReLU slope) and a default ``gain`` chosen to roughly
preserve the activation magnitude (``sqrt(2)`` for ReLU-like functions, He et al. 2015), listed in
:data:`ACTIVATIONS`.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass

import torch
import torch.nn.functional as F

from styleforge.ops._common import check_impl

__all__ = ["ActivationSpec", "ACTIVATIONS", "LRELU_SLOPE", "LRELU_GAIN", "bias_act"]

#: default leaky-ReLU slope of the style-based generators (alpha)
LRELU_SLOPE = 0.2
#: default gain after ReLU-like activations, keeps the second moment of a unit Gaussian
LRELU_GAIN = math.sqrt(2)


@dataclass(frozen=True)
class ActivationSpec:
    """One activation: ``func(x, alpha)``, its defaults, and whether its second derivative is non-zero."""

    func: Callable[[torch.Tensor, float], torch.Tensor]
    def_alpha: float
    def_gain: float
    has_2nd_grad: bool


def _swish(x: torch.Tensor, alpha: float) -> torch.Tensor:
    return torch.sigmoid(x) * x


#: name -> :class:`ActivationSpec`
ACTIVATIONS: dict[str, ActivationSpec] = {
    "linear": ActivationSpec(lambda x, alpha: x, 0.0, 1.0, False),
    "relu": ActivationSpec(lambda x, alpha: F.relu(x), 0.0, LRELU_GAIN, False),
    "lrelu": ActivationSpec(lambda x, alpha: F.leaky_relu(x, alpha), LRELU_SLOPE, LRELU_GAIN, False),
    "tanh": ActivationSpec(lambda x, alpha: torch.tanh(x), 0.0, 1.0, True),
    "sigmoid": ActivationSpec(lambda x, alpha: torch.sigmoid(x), 0.0, 1.0, True),
    "elu": ActivationSpec(lambda x, alpha: F.elu(x), 0.0, 1.0, True),
    "selu": ActivationSpec(lambda x, alpha: F.selu(x), 0.0, 1.0, True),
    "softplus": ActivationSpec(lambda x, alpha: F.softplus(x), 0.0, 1.0, True),
    "swish": ActivationSpec(_swish, 0.0, LRELU_GAIN, True),
}


def _resolve(act: str, alpha: float | None, gain: float | None, clamp: float | None) -> tuple:
    if act not in ACTIVATIONS:
        raise ValueError(f"unknown activation {act!r}; choose one of {', '.join(ACTIVATIONS)}")
    spec = ACTIVATIONS[act]
    alpha = float(alpha if alpha is not None else spec.def_alpha)
    gain = float(gain if gain is not None else spec.def_gain)
    if clamp is not None and clamp < 0:
        raise ValueError(f"clamp must be >= 0 or None, got {clamp}")
    return spec, alpha, gain, (float(clamp) if clamp is not None else None)


def _bias_shape(x: torch.Tensor, b: torch.Tensor, dim: int) -> list[int]:
    if b.ndim != 1 or b.shape[0] != x.shape[dim]:
        raise ValueError(f"bias must have shape [{x.shape[dim]}] (x.shape[{dim}]), got {list(b.shape)}")
    return [-1 if i == dim else 1 for i in range(x.ndim)]


def bias_act(
    x: torch.Tensor,
    b: torch.Tensor | None = None,
    dim: int = 1,
    act: str = "linear",
    alpha: float | None = None,
    gain: float | None = None,
    clamp: float | None = None,
    impl: str = "auto",
) -> torch.Tensor:
    """``clamp(act(x + b, alpha) * gain, -clamp, clamp)``.

    Args:
        x: any shape; ``x.shape[dim]`` is the channel axis.
        b: bias ``[x.shape[dim]]`` added along ``dim``, or ``None``.
        dim: channel axis of ``x``.
        act: a key of :data:`ACTIVATIONS`.
        alpha: shape parameter (leaky-ReLU slope); ``None`` = the activation's default.
        gain: output scale; ``None`` = the activation's default (``sqrt(2)`` for relu/lrelu/swish).
        clamp: clamp the result to ``[-clamp, clamp]``; ``None`` = no clamping.
        impl: ``"ref"``, ``"fast"`` or ``"auto"``. The fast path fuses the linear and lrelu cases in place
            where autograd allows.

    Returns:
        tensor of the shape and dtype of ``x``.
    """
    spec, alpha, gain, clamp = _resolve(act, alpha, gain, clamp)
    if b is not None:
        b = b.to(x.dtype).reshape(_bias_shape(x, b, dim))
    if check_impl(impl) == "ref":
        if b is not None:
            x = x + b
        x = spec.func(x, alpha)
        if gain != 1:
            x = x * gain
        if clamp is not None:
            x = x.clamp(-clamp, clamp)
        return x
    return _bias_act_fast(x, b, act, spec, alpha, gain, clamp)


def _bias_act_fast(
    x: torch.Tensor,
    b: torch.Tensor | None,
    act: str,
    spec: ActivationSpec,
    alpha: float,
    gain: float,
    clamp: float | None,
) -> torch.Tensor:
    """Same values as the reference. After the first new tensor, the remaining steps run in place when
    autograd does not need the intermediate values (inference): fewer allocations on large activations."""
    if b is not None:
        y = x + b
    elif act in ("relu", "lrelu"):
        y = F.leaky_relu(x, 0.0 if act == "relu" else alpha)
        act = "linear"  # already applied
    else:
        y = spec.func(x, alpha) if act != "linear" else x
        act = "linear"
    in_place = y is not x and not y.requires_grad
    if act in ("relu", "lrelu"):
        slope = 0.0 if act == "relu" else alpha
        y = F.leaky_relu_(y, slope) if in_place else F.leaky_relu(y, slope)
    elif act != "linear":
        y = spec.func(y, alpha)
        in_place = not y.requires_grad
    if gain != 1:
        y = y.mul_(gain) if in_place else y * gain
        in_place = not y.requires_grad
    if clamp is not None:
        y = y.clamp_(-clamp, clamp) if in_place else y.clamp(-clamp, clamp)
    return y
