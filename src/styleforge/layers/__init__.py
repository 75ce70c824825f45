"""Layers built on :mod:`styleforge.ops`: equalized-learning-rate linear and conv layers (and the mapping
network in :mod:`styleforge.layers.mapping`)."""

from styleforge.layers.equalized import EqualizedConv2d, EqualizedLinear

__all__ = ["EqualizedConv2d", "EqualizedLinear"]
