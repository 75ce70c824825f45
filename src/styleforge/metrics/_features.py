"""Feature extraction shared by the metrics: image sources (dataset, generator, folder), feature networks, and
the on-disk cache of real-data statistics.

Real-data statistics are cached under ``cache_dir('metrics')`` in a file named by a SHA-256 over the dataset's
identity (name, path and its size / mtime when known, image count, resolution, channels, the file names and a
few sampled images) and the protocol (feature network file hash, heads, resize filter, image count, mirror).
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import re
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch

from styleforge.feature_nets.inception import file_sha256
from styleforge.metrics.feature_stats import FeatureStats
from styleforge.metrics.registry import MetricContext
from styleforge.utils.errors import UserInputError
from styleforge.utils.io import cache_dir

__all__ = [
    "FeatureNet",
    "get_inception",
    "get_vgg16",
    "nvidia_vgg16_file",
    "dataset_batches",
    "generator_batches",
    "collect",
    "real_stats",
    "generated_stats",
    "dataset_identity",
    "num_gen_for",
    "record_result",
    "eval_mode",
    "context_record",
]

CACHE_FORMAT = 1  # bump when the cached statistics change meaning
_SAMPLED_IMAGES = 4  # images hashed into the dataset identity (first, last and evenly spaced)


@dataclass(frozen=True)
class FeatureNet:
    """A loaded feature network and how it was made (recorded with results and hashed into cache keys).

    Attributes:
        module: the network (``FIDInceptionV3`` or ``VGG16``).
        name: ``"inception"``, ``"inception_random"`` or ``"vgg16"``.
        weights: the weight file path, or a description for random weights.
        weights_sha256: hash of the weight file (or the seed description).
        preprocessing: resize filter, input scaling and size.
    """

    module: torch.nn.Module
    name: str
    weights: str
    weights_sha256: str
    preprocessing: dict[str, Any]

    def protocol(self) -> dict[str, Any]:
        return {
            "feature_net": self.name,
            "weights": self.weights,
            "weights_sha256": self.weights_sha256,
            **self.preprocessing,
        }

    def extract(self, images: torch.Tensor, heads: Sequence[str]) -> dict[str, torch.Tensor]:
        """Features of ``[N, C, H, W]`` uint8 images for the requested heads."""
        with torch.no_grad():
            if self.name == "vgg16":
                return {"fc2": self.module.embed(images)}
            return self.module.features(images, heads)


def _memoised(ctx: MetricContext, key: tuple, make: Callable[[], FeatureNet]) -> FeatureNet:
    """``make()``, shared through ``ctx.options['feature_memo']`` when :func:`evaluate` runs several metrics."""
    memo = ctx.options.get("feature_memo")
    if not isinstance(memo, dict):
        return make()
    if key not in memo:
        memo[key] = make()
    return memo[key]


def get_inception(ctx: MetricContext, random_init: bool = False) -> FeatureNet:
    """The FID Inception for ``ctx`` (weights from ``ctx.options['inception']`` or the standard lookup), or
    the randomly initialised one for rFID (seed ``ctx.options.get('rfid_seed', 0)``)."""
    key = (
        "net",
        "inception",
        random_init,
        ctx.options.get("inception"),
        ctx.options.get("rfid_seed", 0),
        fid_protocol(ctx),
        str(ctx.device),
    )
    return _memoised(ctx, key, lambda: _load_inception(ctx, random_init))


#: ``options['fid_protocol']`` -> (Inception resize, input scaling, unbiased covariance): NVIDIA's (TensorFlow's
#: bilinear resize, ``(x - 128) / 128``, ``1/N`` covariance) or the pytorch-fid package's (``F.interpolate``
#: bilinear, ``x / 127.5 - 1``, ``1/(N-1)`` covariance as ``numpy.cov``)
FID_PROTOCOLS = {
    "nvidia": ("tf_bilinear", "nvidia", False),
    "pytorch-fid": ("torch_bilinear", "symmetric", True),
}


def fid_protocol(ctx: MetricContext) -> str:
    """The FID protocol of ``ctx`` (``options['fid_protocol']``, default ``"nvidia"``), validated."""
    name = ctx.options.get("fid_protocol") or "nvidia"
    if name not in FID_PROTOCOLS:
        raise UserInputError(f"Unknown FID protocol {name!r}; use one of {', '.join(FID_PROTOCOLS)}.")
    return name


def _load_inception(ctx: MetricContext, random_init: bool) -> FeatureNet:
    from styleforge.feature_nets.inception import load_fid_inception, random_fid_inception

    if random_init:
        seed = int(ctx.options.get("rfid_seed", 0))
        net = random_fid_inception(seed, device=ctx.device)
        sha = f"random-he-normal-seed{seed}"
        name = "inception_random"
    else:
        from styleforge.feature_nets.inception import InceptionConfig

        resize, scaling, _ = FID_PROTOCOLS[fid_protocol(ctx)]
        net = load_fid_inception(ctx.options.get("inception"), device=ctx.device,
                                 config=InceptionConfig(resize=resize, input_scaling=scaling))
        sha = file_sha256(net.weights_file)
        name = "inception"
    pre = {"resize": net.config.resize, "input_scaling": net.config.input_scaling, "input_size": 299}
    return FeatureNet(net, name, net.weights_file, sha, pre)


def get_vgg16(ctx: MetricContext) -> FeatureNet:
    """VGG16 for the precision/recall embedding: NVIDIA's ``vgg16.pt`` when :func:`nvidia_vgg16_file` finds it,
    else torchvision's weights."""
    return _memoised(ctx, ("net", "vgg16", ctx.options.get("vgg16"), str(ctx.device)), lambda: _load_vgg16(ctx))


def nvidia_vgg16_file(ctx: MetricContext) -> Path | None:
    """NVIDIA's ``vgg16.pt`` for precision/recall and PPL, or ``None`` (then torchvision's VGG16 and the ``lpips``
    calibration are used): ``options['vgg16']`` when it is a TorchScript archive, else (no explicit file)
    ``$STYLEFORGE_VGG16_LPIPS`` or ``vgg16.pt`` in the weights cache."""
    from styleforge.feature_nets.vgg16 import NVIDIA_LPIPS_ENV_VAR, NVIDIA_LPIPS_FILENAMES, is_nvidia_vgg16_file
    from styleforge.utils.io import WeightsNotFoundError, find_weight_file

    explicit = ctx.options.get("vgg16")
    if explicit is not None:
        return Path(explicit) if is_nvidia_vgg16_file(explicit) else None
    try:
        found = find_weight_file("VGG16 (NVIDIA)", NVIDIA_LPIPS_FILENAMES, env_var=NVIDIA_LPIPS_ENV_VAR)
    except WeightsNotFoundError:
        return None
    return found if is_nvidia_vgg16_file(found) else None


def _load_vgg16(ctx: MetricContext) -> FeatureNet:
    from styleforge.feature_nets.vgg16 import load_vgg16, load_vgg16_nvidia

    nvidia = nvidia_vgg16_file(ctx)
    if nvidia is not None:
        net = load_vgg16_nvidia(nvidia, device=ctx.device)
    else:
        net = load_vgg16(ctx.options.get("vgg16"), device=ctx.device)
    pre = {
        "resize": net.resize_mode,
        "input_scaling": "imagenet",
        "input_size": 224,
        "layer": "fc2_relu",
        "weights_format": "nvidia-vgg16.pt" if nvidia is not None else "torchvision",
    }
    return FeatureNet(net, "vgg16", net.weights_file, file_sha256(net.weights_file), pre)


# ----------------------------------------------------------------------------------------------------
# Image sources


def progress_bar(total: int, desc: str, enabled: bool):
    from tqdm import tqdm

    return tqdm(total=total, desc=desc, unit="img", disable=not enabled, leave=False)


def dataset_batches(
    dataset: Any,
    batch_size: int,
    max_items: int | None = None,
    progress: bool = False,
    desc: str = "real images",
    rank: int = 0,
    num_ranks: int = 1,
) -> Iterator[torch.Tensor]:
    """Yield uint8 ``[B, C, H, W]`` batches of ``dataset[i][0]`` for ``i < min(len, max_items)``, in order; with
    ``num_ranks > 1`` only batches ``rank, rank + num_ranks, ...`` (this process's share)."""
    n = len(dataset) if max_items is None else min(len(dataset), max_items)
    if n == 0:
        raise UserInputError("The dataset is empty; give a folder or zip with images.")
    with progress_bar(n, desc, progress) as bar:
        for b, lo in enumerate(range(0, n, batch_size)):
            if b % num_ranks != rank:
                continue
            imgs = [np.asarray(dataset[i][0]) for i in range(lo, min(lo + batch_size, n))]
            bar.update(len(imgs) * num_ranks)
            yield torch.from_numpy(np.stack(imgs))


def label_sampler(G: torch.nn.Module, dataset: Any, seed: int, device: torch.device | str):
    """A function ``n -> labels [n, c_dim]``: empty for unconditional G, else labels of random dataset items
    (``RandomState(seed)``), or random one-hot classes when the dataset has no labels."""
    c_dim = int(getattr(G, "c_dim", 0))
    rng = np.random.RandomState(seed)

    def sample(n: int) -> torch.Tensor:
        if c_dim == 0:
            return torch.zeros(n, 0, device=device)
        if dataset is not None and getattr(dataset, "has_labels", False):
            idx = rng.randint(len(dataset), size=n)
            labels = np.stack(
                [dataset.get_label(int(i)) if hasattr(dataset, "get_label") else dataset[int(i)][1] for i in idx]
            )
        else:
            labels = np.eye(c_dim, dtype=np.float32)[rng.randint(c_dim, size=n)]
        return torch.from_numpy(np.asarray(labels, dtype=np.float32)).to(device)

    return sample


@contextlib.contextmanager
def eval_mode(module: torch.nn.Module) -> Iterator[torch.nn.Module]:
    """Put ``module`` in eval mode for the block and restore its previous mode afterwards (the training loop's
    networks are evaluated in place, not copied)."""
    was_training = module.training
    module.eval()
    try:
        yield module
    finally:
        module.train(was_training)


def generator_images(
    G: torch.nn.Module,
    z: torch.Tensor,
    c: torch.Tensor,
    truncation_psi: float = 1.0,
    noise_mode: str = "random",
) -> torch.Tensor:
    """``G(z, c)`` converted to uint8 ``[N, C, H, W]`` the official way: ``(x * 127.5 + 128).clamp(0, 255)``."""
    with torch.no_grad():
        img = G(z, c, truncation_psi=truncation_psi, noise_mode=noise_mode)
    return (img * 127.5 + 128).clamp(0, 255).to(torch.uint8)


def generator_batches(ctx: MetricContext, num: int, progress_desc: str = "generated images") -> Iterator[torch.Tensor]:
    """Yield uint8 batches of ``num`` images from ``ctx.G``.

    z comes from a CPU ``torch.Generator`` seeded with ``ctx.seed``; labels of a conditional G are drawn from the
    dataset (or uniformly over classes); ``noise_mode`` is ``ctx.options.get('noise_mode', 'random')``, as in the
    official metrics. With ``ctx.num_ranks > 1`` every process draws the same z and labels and runs G on its
    share of the batches (``rank, rank + num_ranks, ...``), so the images are those of one process (G's random
    noise inputs aside).
    """
    G = ctx.G
    if G is None:
        raise UserInputError("This metric needs a generator; pass --network.")
    device = ctx.device
    gen = torch.Generator(device="cpu").manual_seed(ctx.seed)
    labels = label_sampler(G, ctx.dataset, ctx.seed, device)
    noise_mode = ctx.options.get("noise_mode", "random")
    with eval_mode(G), progress_bar(num, progress_desc, ctx.progress) as bar:
        done, index = 0, 0
        while done < num:
            b = min(ctx.batch_size, num - done)
            z = torch.randn(b, G.z_dim, generator=gen)
            c = labels(b)
            if index % ctx.num_ranks == ctx.rank:
                yield generator_images(G, z.to(device), c, ctx.truncation_psi, noise_mode)
                bar.update(b * ctx.num_ranks)
            done += b
            index += 1


def collect(
    batches: Iterator[torch.Tensor],
    net: FeatureNet,
    heads: Sequence[str],
    capture_all: bool,
    capture_mean_cov: bool,
    max_items: int | None = None,
    ctx: MetricContext | None = None,
) -> dict[str, FeatureStats]:
    """Run ``net`` over ``batches`` and accumulate one :class:`FeatureStats` per head.

    With ``ctx.num_ranks > 1`` the batches are this process's share; the statistics of all processes are then
    gathered and merged in batch order (:meth:`FeatureStats.merge_ranks`), and every process returns the whole.
    """
    stats = {
        h: FeatureStats(capture_all=capture_all, capture_mean_cov=capture_mean_cov, max_items=max_items) for h in heads
    }
    for images in batches:
        feats = net.extract(images, heads)
        for h in heads:
            stats[h].append(feats[h])
        if max_items is not None and all(s.is_full() for s in stats.values()):
            break
    if ctx is not None and ctx.num_ranks > 1:
        everyone = ctx.gather(stats)
        stats = {h: FeatureStats.merge_ranks([part[h] for part in everyone]) for h in heads}
    return stats


# ----------------------------------------------------------------------------------------------------
# Dataset identity and the cache


def dataset_identity(dataset: Any) -> dict[str, Any]:
    """What identifies a dataset's content for the cache key (cheap: metadata plus a few sampled images)."""
    ident: dict[str, Any] = {
        "name": getattr(dataset, "name", type(dataset).__name__),
        "count": len(dataset),
        "resolution": getattr(dataset, "resolution", None),
        "channels": getattr(dataset, "num_channels", None),
    }
    path = getattr(dataset, "path", None)
    if path is not None and os.path.exists(path):
        st = os.stat(path)
        ident.update(path=os.path.abspath(path), size=st.st_size, mtime=st.st_mtime)
    names = getattr(dataset, "names", None)
    if isinstance(names, (list, tuple)):
        ident["names_sha256"] = hashlib.sha256("\n".join(map(str, names)).encode()).hexdigest()
    n = len(dataset)
    h = hashlib.sha256()
    for i in sorted({int(round(k * (n - 1) / max(_SAMPLED_IMAGES - 1, 1))) for k in range(_SAMPLED_IMAGES)}):
        h.update(np.ascontiguousarray(dataset[i][0]).tobytes())
    ident["sampled_images_sha256"] = h.hexdigest()
    return ident


def _cache_file(key: dict[str, Any]) -> Path:
    digest = hashlib.sha256(json.dumps(key, sort_keys=True, default=str).encode()).hexdigest()[:32]
    name = re.sub(r"[^\w.-]", "_", str(key["dataset"]["name"]))
    return cache_dir("metrics") / f"{name}-{key['protocol']['feature_net']}-{digest}"


def real_stats(
    ctx: MetricContext,
    net: FeatureNet,
    heads: Sequence[str],
    capture_all: bool,
    capture_mean_cov: bool,
    max_items: int | None,
) -> tuple[dict[str, FeatureStats], dict[str, Any]]:
    """Statistics of the real dataset ``ctx.dataset`` (cached on disk when ``ctx.cache``).

    Returns ``(stats per head, record)`` where the record describes the data side of the protocol.
    """
    if ctx.dataset is None:
        raise UserInputError("This metric needs real data; pass --data (a folder, a zip or 'emoji').")
    n = len(ctx.dataset) if max_items is None else min(len(ctx.dataset), max_items)
    record = {
        "num_real": n,
        "mirror": bool(len(ctx.dataset) != getattr(ctx.dataset, "num_images", len(ctx.dataset))),
    }
    key = {
        "format": CACHE_FORMAT,
        "dataset": dataset_identity(ctx.dataset),
        "protocol": net.protocol(),
        "heads": sorted(heads),
        "capture_all": capture_all,
        "capture_mean_cov": capture_mean_cov,
        "num": n,
    }
    base = _cache_file(key) if ctx.cache else None
    files = {h: Path(f"{base}-{h}.npz") for h in heads} if base is not None else {}
    cached = base is not None and all(f.is_file() for f in files.values())
    if ctx.num_ranks > 1:  # all processes read the cache, or all compute their share
        cached = all(ctx.gather(cached))
    if cached:
        return {h: FeatureStats.load(f) for h, f in files.items()}, {**record, "cache": str(base)}
    stats = collect(
        dataset_batches(ctx.dataset, ctx.batch_size, n, ctx.progress and ctx.rank == 0, rank=ctx.rank,
                        num_ranks=ctx.num_ranks),
        net,
        heads,
        capture_all,
        capture_mean_cov,
        n,
        ctx,
    )
    for h, f in files.items() if ctx.rank == 0 else ():
        stats[h].save(f)
    return stats, {**record, "cache": str(base) if base else None}


def generated_stats(
    ctx: MetricContext,
    net: FeatureNet,
    heads: Sequence[str],
    capture_all: bool,
    capture_mean_cov: bool,
    num: int,
) -> tuple[dict[str, FeatureStats], int]:
    """Statistics of ``num`` images generated by ``ctx.G``, or, when there is no generator, of the first
    ``num`` images of the second image set ``ctx.options['gen_dataset']`` (folder-vs-folder mode).

    Returns ``(stats per head, number of images used)``.

    When ``ctx.options['feature_memo']`` is a dict (:func:`styleforge.metrics.evaluate` passes one when it runs
    several metrics), the statistics are captured in full (features and mean/covariance) and reused by later
    metrics that ask for the same network, heads, count and sampling settings: ``fid50k_full,kid50k_full``
    generates and embeds the 50k images once.
    """
    memo = ctx.options.get("feature_memo")
    if isinstance(memo, dict):
        key = (
            net.name,
            net.weights_sha256,
            tuple(sorted(heads)),
            num,
            ctx.seed,
            ctx.truncation_psi,
            ctx.options.get("noise_mode", "random"),
            id(ctx.G),
            id(ctx.options.get("gen_dataset")),
        )
        if key not in memo:
            memo[key] = _generated_stats(ctx, net, heads, True, True, num)
        return memo[key]
    return _generated_stats(ctx, net, heads, capture_all, capture_mean_cov, num)


def _generated_stats(
    ctx: MetricContext, net: FeatureNet, heads: Sequence[str], capture_all: bool, capture_mean_cov: bool, num: int
) -> tuple[dict[str, FeatureStats], int]:
    if ctx.G is None and ctx.options.get("gen_dataset") is not None:
        other = ctx.options["gen_dataset"]
        num = min(num, len(other))
        batches = dataset_batches(other, ctx.batch_size, num, ctx.progress, desc="second image set", rank=ctx.rank,
                                  num_ranks=ctx.num_ranks)
        return collect(batches, net, heads, capture_all, capture_mean_cov, num, ctx), num
    return collect(generator_batches(ctx, num), net, heads, capture_all, capture_mean_cov, num, ctx), num


def record_result(ctx: MetricContext, metric: str, record: dict[str, Any]) -> None:
    """Store the protocol of a result in ``ctx.options['records'][metric]`` when the caller asked for records
    (:func:`styleforge.metrics.evaluate` does)."""
    records = ctx.options.get("records")
    if isinstance(records, dict):
        records[metric] = record


def num_gen_for(ctx: MetricContext, default: int) -> int:
    """``ctx.num_gen`` when given (must be positive), else the metric's own count."""
    if ctx.num_gen is None:
        return default
    if ctx.num_gen <= 0:
        raise UserInputError(f"--num-gen must be positive, got {ctx.num_gen}.")
    return int(ctx.num_gen)


def context_record(ctx: MetricContext) -> dict[str, Any]:
    """Sampling settings recorded with a result."""
    return {
        "truncation_psi": ctx.truncation_psi,
        "seed": ctx.seed,
        "noise_mode": ctx.options.get("noise_mode", "random"),
    }
