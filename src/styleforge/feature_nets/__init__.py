"""Feature networks used by the metrics: the FID Inception-v3 and VGG16 (precision/recall, LPIPS).

Architectures only; weights are loaded from user-supplied or installed files, never downloaded. Nothing is
read at import time.
"""

from styleforge.feature_nets.inception import (
    FIDInceptionV3,
    InceptionConfig,
    find_inception_weights,
    load_fid_inception,
    random_fid_inception,
)

__all__ = [
    "FIDInceptionV3",
    "InceptionConfig",
    "find_inception_weights",
    "load_fid_inception",
    "random_fid_inception",
]
