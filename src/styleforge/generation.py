"""Sampling images from a generator with the official seed convention.

A seed ``s`` always gives the latent ``z = RandomState(s).randn(1, z_dim)``
(:func:`styleforge.utils.seeding.z_from_seed`), exactly as NVIDIA's generation scripts do, so a converted
official network and the same seed give the same picture.
"""

from __future__ import annotations

import inspect
from collections.abc import Sequence

import torch

from styleforge.utils.errors import UserInputError
from styleforge.utils.seeding import z_from_seed

__all__ = ["NOISE_MODES", "generate_images", "make_labels", "accepts_transform", "DEFAULT_BATCH_SIZE"]

#: ``noise_mode`` values of the generators: stored per-layer noise, fresh random noise, or no noise at all
NOISE_MODES = ("const", "random", "none")
#: images generated per forward pass
DEFAULT_BATCH_SIZE = 8
#: generate_images(progress=True) shows a bar only for more seeds than this (a handful renders at once)
PROGRESS_MIN_SEEDS = 8


def make_labels(
    G: torch.nn.Module,
    class_idx: int | Sequence[int] | None,
    n: int,
    device: torch.device | str = "cpu",
    cond_vector: Sequence[float] | None = None,
) -> torch.Tensor:
    """The conditioning labels ``c`` ``[n, c_dim]`` for ``class_idx`` (one-hot), or ``[n, 0]`` for an
    unconditional G.

    Networks trained on several classes per image (``cond_encoding="multi-label"``) take a list of classes
    (multi-hot ``c``); those trained on continuous attributes take ``cond_vector`` (``c`` itself, ``c_dim``
    values), which any conditional network also accepts as an explicit ``c``.

    Raises:
        UserInputError: a class for an unconditional network, no class for a conditional one, or a class out
            of range.
    """
    encoding = getattr(getattr(G, "config", None), "cond_encoding", "class")
    if cond_vector is not None or not isinstance(class_idx, (int, type(None))) or encoding != "class":
        from styleforge.data.labels import label_vector

        classes = [class_idx] if isinstance(class_idx, int) else class_idx
        c = label_vector(int(getattr(G, "c_dim", 0)), encoding, classes, cond_vector)
        return torch.from_numpy(c).to(device).reshape(1, -1).repeat(n, 1)
    c_dim = int(getattr(G, "c_dim", 0))
    if c_dim == 0:
        if class_idx is not None:
            raise UserInputError(
                f"This network is unconditional (c_dim=0), but class {class_idx} was given; "
                "leave out --class."
            )
        return torch.zeros([n, 0], device=device)
    if class_idx is None:
        raise UserInputError(
            f"This network is conditional with {c_dim} classes; choose one with --class K (0 <= K < {c_dim})."
        )
    if not 0 <= int(class_idx) < c_dim:
        raise UserInputError(f"Class {class_idx} is out of range; this network has classes 0 to {c_dim - 1}.")
    c = torch.zeros([n, c_dim], device=device)
    c[:, int(class_idx)] = 1
    return c


def _accepts(G: torch.nn.Module, name: str) -> bool:
    try:
        return name in inspect.signature(G.forward).parameters
    except (TypeError, ValueError):
        return False


def accepts_transform(G: torch.nn.Module) -> bool:
    """Whether ``G(z, c, ..., transform=M)`` is supported (StyleGAN3 and StyleGAN-XL generators)."""
    return _accepts(G, "transform")


@torch.no_grad()
def generate_images(
    G: torch.nn.Module,
    seeds: Sequence[int],
    truncation_psi: float = 1.0,
    truncation_cutoff: int | None = None,
    class_idx: int | Sequence[int] | None = None,
    noise_mode: str = "const",
    transform: torch.Tensor | None = None,
    device: torch.device | str | None = None,
    batch_size: int = DEFAULT_BATCH_SIZE,
    full_resolution: bool = False,
    progress: bool = False,
    cond_vector: Sequence[float] | None = None,
    centroids: torch.Tensor | str | None = None,
) -> torch.Tensor:
    """Generate one image per seed.

    Args:
        G: a generator with the official call convention ``G(z, c, truncation_psi, truncation_cutoff,
            noise_mode)``.
        seeds: the seeds; seed ``s`` uses ``z = RandomState(s).randn(1, z_dim)``.
        truncation_psi: truncation ``psi`` (``w' = w_avg + psi (w - w_avg)``); 1 = no truncation.
        truncation_cutoff: truncate only the first this many ``w`` copies; ``None`` = all.
        class_idx: the class of a conditional generator (required then, refused otherwise); a list of classes
            for a multi-label one.
        cond_vector: the attribute values ``c`` of a network conditioned on continuous labels.
        noise_mode: ``"const"`` (the stored noise; reproducible), ``"random"`` or ``"none"``.
        transform: the 3x3 input transform of a StyleGAN3-type generator
            (``styleforge.transform_matrix(...)``); refused for generators without one.
        device: where to run; ``None`` = the generator's device.
        batch_size: images per forward pass (does not change the result beyond float rounding).
        full_resolution: for a progressively grown network (PGGAN) caught at a lower stage, upsample its output
            to the final resolution; networks that always produce their final resolution ignore it.
        progress: show a progress bar (on a terminal, for more than :data:`PROGRESS_MIN_SEEDS` seeds).
        centroids: ``[K, w_dim]`` W centroids or their ``.npy`` (:mod:`styleforge.centroids`): multi-modal
            truncation, each sample pulled toward its nearest centroid by ``truncation_psi`` on every layer (the
            StyleGAN-XL tool); ``None``: the usual truncation toward ``w_avg``.

    Returns:
        float32 images ``[len(seeds), img_channels, H, W]`` on the CPU, nominally in ``[-1, 1]``; convert with
        :func:`styleforge.utils.images.to_uint8`.
    """
    seeds = [int(s) for s in seeds]
    if not seeds:
        raise UserInputError("No seeds given; use for example --seeds 0-7.")
    if any(s < 0 or s >= 2**32 for s in seeds):
        raise UserInputError("Seeds must be between 0 and 2**32 - 1 (numpy RandomState seeds).")
    if noise_mode not in NOISE_MODES:
        raise UserInputError(f"Unknown noise mode {noise_mode!r}; choose one of {', '.join(NOISE_MODES)}.")
    if batch_size < 1:
        raise UserInputError(f"batch_size must be at least 1, got {batch_size}.")
    num_ws = getattr(G, "num_ws", None)
    if truncation_cutoff is not None and (
        truncation_cutoff < 0 or (num_ws is not None and truncation_cutoff > num_ws)
    ):
        raise UserInputError(
            f"truncation cutoff {truncation_cutoff} is outside 0..{num_ws} (the number of w copies)."
        )
    kwargs: dict[str, object] = {}
    if device is None:
        device = next(iter(G.parameters())).device
    if transform is not None:
        if not accepts_transform(G):
            raise UserInputError(
                f"{type(G).__name__} has no input transform; --translate/--rotate work with StyleGAN3 and "
                "StyleGAN-XL generators only."
            )
        transform = torch.as_tensor(transform, dtype=torch.float32)
        if tuple(transform.shape) != (3, 3):
            raise UserInputError(f"transform must be a 3x3 matrix, got shape {tuple(transform.shape)}.")
        kwargs["transform"] = transform.to(device)
    if full_resolution and _accepts(G, "full_resolution"):
        kwargs["full_resolution"] = True
    if centroids is not None:
        from styleforge.centroids import load_centroids

        if truncation_cutoff is not None:
            raise UserInputError("Multi-modal truncation (--centroids) acts on every layer; leave out --trunc-cutoff.")
        if not (hasattr(G, "mapping") and hasattr(G, "synthesis")):
            raise UserInputError(f"{type(G).__name__} has no mapping/synthesis split for --centroids.")
        centroids = centroids if torch.is_tensor(centroids) else load_centroids(centroids, G.w_dim)
    G = G.to(device)
    c_all = make_labels(G, class_idx, len(seeds), device, cond_vector=cond_vector)
    images = []
    from tqdm import tqdm

    show = progress and len(seeds) > PROGRESS_MIN_SEEDS
    bar = tqdm(total=len(seeds), desc="generate", unit="img", disable=None if show else True, leave=False)
    for start in range(0, len(seeds), batch_size):
        chunk = seeds[start : start + batch_size]
        z = torch.cat([z_from_seed(s, G.z_dim, device) for s in chunk])
        c = c_all[start : start + len(chunk)]
        if centroids is not None:
            from styleforge.centroids import truncate_to_centroids

            ws = truncate_to_centroids(G.mapping(z, c, truncation_psi=1.0), centroids, truncation_psi)
            img = G.synthesis(ws, noise_mode=noise_mode, **kwargs)
        else:
            img = G(
                z,
                c,
                truncation_psi=truncation_psi,
                truncation_cutoff=truncation_cutoff,
                noise_mode=noise_mode,
                **kwargs,
            )
        images.append(img.float().cpu())
        bar.update(len(chunk))
    bar.close()
    return torch.cat(images)
