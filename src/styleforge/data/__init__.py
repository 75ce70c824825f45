"""Datasets: image folders, zips and built-in sets (:func:`open_dataset`), and the dataset tool.

``open_dataset(spec, resolution=None, use_labels=False, xflip=False, skip_bad=False)`` returns an
:class:`ImageDataset` whose items are ``(uint8 [C, H, W], float32 [label_dim])``. The dataset tool
(:func:`styleforge.data.prepare.prepare_dataset`) writes training zips; :mod:`styleforge.data.emoji` builds
the built-in emoji set from the Noto Color Emoji font.
"""

from styleforge.data.dataset import BUILTIN_DATASETS, BadFile, ImageDataset, open_dataset

__all__ = ["open_dataset", "ImageDataset", "BadFile", "BUILTIN_DATASETS"]
