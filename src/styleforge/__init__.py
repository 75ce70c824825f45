"""styleforge: style-based GANs (PGGAN, StyleGAN2, StyleGAN3, StyleGAN-XL) in plain PyTorch.

The top-level names are imported lazily so that ``import styleforge`` stays cheap:

- :func:`create_model` builds a network from a registered preset (``"stylegan2"``, ``"stylegan3-t"``, ...).
- :func:`load` reads our own format (``config.json`` + safetensors) and NVIDIA's official pickles, safely.
- :func:`transform_matrix` builds the StyleGAN3 input transform for a translation and rotation.
"""

from __future__ import annotations

import importlib
from typing import Any

__version__ = "0.1.0"

_LAZY = {
    "create_model": "styleforge.models.registry",
    "list_models": "styleforge.models.registry",
    "load": "styleforge.loading",
    "save": "styleforge.loading",
    "transform_matrix": "styleforge.ops.transforms",
}

__all__ = ["__version__", *_LAZY]


def __getattr__(name: str) -> Any:
    if name in _LAZY:
        return getattr(importlib.import_module(_LAZY[name]), name)
    raise AttributeError(f"module 'styleforge' has no attribute {name!r}")


def __dir__() -> list[str]:
    return sorted(__all__)
