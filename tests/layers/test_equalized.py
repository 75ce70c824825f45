"""Equalized-learning-rate layers: runtime scaling, parameter names, buffers, ops_impl."""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F

from styleforge.layers import EqualizedConv2d, EqualizedLinear
from styleforge.ops.conv2d_resample import conv2d_resample


def test_linear_runtime_scaling():
    torch.manual_seed(0)
    layer = EqualizedLinear(16, 8, lr_multiplier=0.01, bias_init=0.5)
    assert [n for n, _ in layer.named_parameters()] == ["weight", "bias"]
    assert layer.weight.std() > 10  # stored as N(0, 1) / lr_multiplier
    x = torch.randn(4, 16)
    expected = x @ (layer.weight * 0.01 / math.sqrt(16)).t() + layer.bias * 0.01
    assert torch.allclose(layer(x), expected, atol=1e-6)
    assert torch.allclose(layer.bias * 0.01, torch.full([8], 0.5))  # effective bias is bias_init


def test_linear_activation_and_init_options():
    torch.manual_seed(1)
    layer = EqualizedLinear(8, 4, activation="lrelu", bias_init=[1.0, 0.0, 0.0, 0.0], weight_init=0.0)
    y = layer(torch.randn(3, 8))
    assert torch.allclose(y, torch.tensor([[math.sqrt(2), 0.0, 0.0, 0.0]]).expand(3, 4))
    assert EqualizedLinear(8, 4, bias=False).bias is None
    with pytest.raises(ValueError, match="unknown activation"):
        EqualizedLinear(8, 4, activation="nope")


@pytest.mark.parametrize("up,down", [(1, 1), (2, 1), (1, 2)])
def test_conv_shapes_and_formula(up, down):
    torch.manual_seed(2)
    layer = EqualizedConv2d(4, 6, 3, activation="lrelu", up=up, down=down, conv_clamp=0.5)
    with torch.no_grad():
        layer.bias.normal_()
    x = torch.randn(2, 4, 8, 8)
    y = layer(x)
    assert y.shape == (2, 6, 8 * up // down, 8 * up // down)
    assert float(y.detach().abs().max()) <= 0.5
    w = layer.weight / math.sqrt(4 * 9)
    t = conv2d_resample(x, w, layer.resample_filter, up=up, down=down, padding=1, flip_weight=up == 1)
    expected = (F.leaky_relu(t + layer.bias.reshape(1, -1, 1, 1), 0.2) * math.sqrt(2)).clamp(-0.5, 0.5)
    assert torch.allclose(y, expected, atol=1e-6)
    # gain scales both the activation gain and the clamp
    assert torch.allclose(layer(x, gain=2.0), expected * 2, atol=1e-5)


def test_conv_state_dict_and_buffers():
    layer = EqualizedConv2d(3, 5, 1, bias=False, trainable=False, channels_last=True)
    assert list(layer.state_dict()) == ["weight"]  # the resample filter is not persistent
    assert "resample_filter" in dict(layer.named_buffers())
    assert layer.resample_filter.shape == (4, 4)
    assert layer.bias is None and not layer.weight.requires_grad
    assert layer.weight.is_contiguous(memory_format=torch.channels_last)
    assert "kernel_size=1" in repr(layer)


def test_ops_impl_switch_gives_same_result():
    torch.manual_seed(3)
    layer = EqualizedConv2d(4, 4, 3, activation="lrelu", up=2)
    x = torch.randn(2, 4, 8, 8)
    assert layer.ops_impl == "auto"
    fast = layer(x)
    layer.ops_impl = "ref"
    ref = layer(x)
    assert (fast - ref).abs().max() < 1e-5
    layer.ops_impl = "cuda"
    with pytest.raises(ValueError, match="impl"):
        layer(x)
