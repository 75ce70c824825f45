"""bias_act: the activation table, clamp/gain semantics, gradients, fast == ref."""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F
from torch.autograd import gradcheck, gradgradcheck

from styleforge.ops.bias_act import ACTIVATIONS, bias_act

EXPECTED = {  # name -> (plain function, default gain)
    "linear": (lambda x: x, 1.0),
    "relu": (F.relu, math.sqrt(2)),
    "lrelu": (lambda x: F.leaky_relu(x, 0.2), math.sqrt(2)),
    "tanh": (torch.tanh, 1.0),
    "sigmoid": (torch.sigmoid, 1.0),
    "elu": (F.elu, 1.0),
    "selu": (F.selu, 1.0),
    "softplus": (F.softplus, 1.0),
    "swish": (lambda x: x * torch.sigmoid(x), math.sqrt(2)),
}


def test_table_defaults():
    assert set(ACTIVATIONS) == set(EXPECTED)
    assert ACTIVATIONS["lrelu"].def_alpha == 0.2
    for name, (_, gain) in EXPECTED.items():
        assert ACTIVATIONS[name].def_gain == pytest.approx(gain)
    assert not ACTIVATIONS["lrelu"].has_2nd_grad and ACTIVATIONS["tanh"].has_2nd_grad


@pytest.mark.parametrize("impl", ["ref", "fast"])
@pytest.mark.parametrize("act", list(EXPECTED))
def test_values(impl, act):
    x = torch.randn(3, 5, 4, 4, dtype=torch.float64)
    b = torch.randn(5, dtype=torch.float64)
    fn, gain = EXPECTED[act]
    y = bias_act(x, b, act=act, impl=impl)
    assert torch.allclose(y, fn(x + b.reshape(1, -1, 1, 1)) * gain)
    y = bias_act(x, b, act=act, gain=0.5, clamp=0.3, impl=impl)
    assert torch.allclose(y, (fn(x + b.reshape(1, -1, 1, 1)) * 0.5).clamp(-0.3, 0.3))
    assert float(y.abs().max()) <= 0.3


@pytest.mark.parametrize("impl", ["ref", "fast"])
def test_dim_alpha_and_no_bias(impl):
    x = torch.randn(4, 6, dtype=torch.float64)
    b = torch.randn(4, dtype=torch.float64)
    y = bias_act(x, b, dim=0, act="lrelu", alpha=0.1, gain=1.0, impl=impl)
    assert torch.allclose(y, F.leaky_relu(x + b[:, None], 0.1))
    x_before = x.clone()
    assert torch.equal(bias_act(x, act="lrelu", impl=impl), F.leaky_relu(x_before, 0.2) * math.sqrt(2))
    assert torch.equal(x, x_before)  # input untouched


@pytest.mark.parametrize("act", list(EXPECTED))
def test_fast_matches_ref_with_gradients(act):
    x = torch.randn(2, 3, 5, 5, dtype=torch.float64, requires_grad=True)
    b = torch.randn(3, dtype=torch.float64, requires_grad=True)
    outs = [bias_act(x, b, act=act, clamp=1.0, impl=impl) for impl in ("ref", "fast")]
    assert (outs[0] - outs[1]).abs().max() < 1e-12
    grad = torch.randn_like(outs[0])
    g0 = torch.autograd.grad(outs[0], (x, b), grad)
    g1 = torch.autograd.grad(outs[1], (x, b), grad)
    for a, c in zip(g0, g1, strict=True):
        assert (a - c).abs().max() < 1e-12


@pytest.mark.parametrize("impl", ["ref", "fast"])
@pytest.mark.parametrize("act", ["lrelu", "linear", "tanh"])
def test_gradcheck(impl, act):
    # keep x + b away from the lrelu kink so that finite differences are valid
    sign = torch.where(torch.rand(2, 3, 3, 3) > 0.5, 1.0, -1.0)
    x = (torch.rand(2, 3, 3, 3, dtype=torch.float64) + 0.1) * sign
    x.requires_grad_(True)
    b = torch.zeros(3, dtype=torch.float64, requires_grad=True)
    fn = lambda x, b: bias_act(x, b, act=act, impl=impl)
    assert gradcheck(fn, (x, b))
    assert gradgradcheck(fn, (x, b))


def test_errors():
    x = torch.randn(2, 3)
    with pytest.raises(ValueError, match="unknown activation"):
        bias_act(x, act="gelu2")
    with pytest.raises(ValueError, match="bias must have shape"):
        bias_act(x, torch.zeros(4))
