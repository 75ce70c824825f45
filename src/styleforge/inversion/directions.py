"""Latent directions for editing: SeFa, GANSpace and InterFaceGAN boundaries, and the ``dirs.npz`` file format.

- **SeFa** (Shen & Zhou, "Closed-Form Factorization of Latent Semantics in GANs", CVPR 2021): the style affines
  ``s = A w + b`` of the chosen layers are stacked, ``A = [A_1; A_2; ...]`` (``[sum C_l, w_dim]``), each row (one
  style channel's weights over w) is normalised to unit length, and the directions are the eigenvectors of
  ``A^T A`` (``w_dim x w_dim``) by decreasing eigenvalue: the unit ``n`` maximising ``||A n||^2``. StyleGAN2 uses
  the modulated convolutions' affines (not the tRGB ones); StyleGAN3 / StyleGAN-XL the ``SynthesisLayer`` affines.
- **GANSpace** (Härkönen et al., "GANSpace: Discovering Interpretable GAN Controls", NeurIPS 2020): principal
  components of ``w = mapping(z)`` over sampled ``z`` (100,000 by default). The covariance is accumulated in
  float64 over batches (incremental in memory, exact in value), then eigendecomposed; ``values`` are the variances
  along the components (the explained variance), decreasing.
- **Boundary** (Shen et al., "InterFaceGAN", CVPR 2020): the unit normal of a linear decision boundary fitted
  to ``w`` codes with binary labels: a linear SVM (squared hinge loss, L2 penalty ``1 / (2 C)``; InterFaceGAN used
  a linear SVM) or logistic regression, minimised with scipy's L-BFGS on the standardised codes and mapped back to
  W. ``values`` holds the accuracy on the held-out 30 %.

File format (``dirs.npz``, read by other tools, e.g. the web explorer):

- ``directions``: float32 ``[K, w_dim]``, unit rows;
- ``values``: float64 ``[K]``, descending (eigenvalues, explained variance or validation accuracy);
- ``method``: a 0-d str array, ``"sefa"``, ``"ganspace"`` or ``"boundary"``;
- ``layers`` (optional): int array of the ``ws`` indices the method used (SeFa's layers).
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import scipy.optimize
import torch

from styleforge.utils.errors import UserInputError
from styleforge.utils.io import atomic_write

__all__ = [
    "Directions",
    "style_affines",
    "sefa_directions",
    "ganspace_directions",
    "boundary_direction",
    "save_directions",
    "load_directions",
    "read_labels",
    "METHODS",
]

METHODS = ("sefa", "ganspace", "boundary")
BOUNDARY_SOLVERS = ("svm", "logistic")
GANSPACE_SAMPLES = 100_000


@dataclass
class Directions:
    """Directions of one method: ``directions`` ``[K, w_dim]`` float32 unit rows, ``values`` ``[K]`` float64
    descending, ``method`` and the ``ws`` ``layers`` used (or ``None``)."""

    directions: np.ndarray
    values: np.ndarray
    method: str
    layers: np.ndarray | None = None


def style_affines(G: torch.nn.Module) -> list[tuple[int, torch.Tensor]]:
    """``(ws index, affine weight [C, w_dim])`` of every style-modulated convolution, in synthesis order.

    StyleGAN2: ``conv0``/``conv1`` of each block (the tRGB affines are left out, as SeFa does). StyleGAN3 and
    StyleGAN-XL: ``synthesis.layers[i]`` except the tRGB layer, reading ``ws[i + 1]``. The effective weight
    (times the equalised-lr gain) is returned; SeFa's row normalisation makes the gain irrelevant.
    """
    syn = G.synthesis
    out = []
    if hasattr(syn, "blocks") and callable(syn.blocks):
        w_idx = 0
        for block in syn.blocks():
            for k, name in enumerate(n for n in ("conv0", "conv1") if hasattr(block, n)):
                out.append((w_idx + k, _affine_weight(getattr(block, name))))
            w_idx += block.num_conv
    elif hasattr(syn, "layers"):
        for i, layer in enumerate(syn.layers):
            if not getattr(layer, "is_torgb", False):
                out.append((i + 1, _affine_weight(layer)))
    if not out:
        raise UserInputError(f"{type(G).__name__}: no style affines found; SeFa needs a StyleGAN2/3/XL generator.")
    return out


def _affine_weight(layer: torch.nn.Module) -> torch.Tensor:
    aff = layer.affine
    gain = getattr(aff, "weight_gain", 1.0)
    return (aff.weight.detach().to(torch.float64) * gain).cpu()


def sefa_directions(G: torch.nn.Module, num: int = 20, layers: list[int] | None = None) -> Directions:
    """SeFa directions of the style affines reading the ``ws`` indices in ``layers`` (``None`` = all)."""
    affines = style_affines(G)
    if layers is not None:
        wanted = set(layers)
        unknown = sorted(wanted - {i for i, _ in affines})
        if unknown:
            raise UserInputError(
                f"ws index/indices {unknown} have no style-modulated convolution; valid: "
                f"{sorted({i for i, _ in affines})}."
            )
        affines = [(i, a) for i, a in affines if i in wanted]
    A = torch.cat([a for _, a in affines]).numpy()  # [sum C, w_dim]
    A = A / np.linalg.norm(A, axis=1, keepdims=True).clip(min=1e-12)
    values, vectors = np.linalg.eigh(A.T @ A)
    order = np.argsort(values)[::-1][: _check_num(num, A.shape[1])]
    used = sorted({i for i, _ in affines})
    return Directions(vectors[:, order].T.astype(np.float32), values[order].astype(np.float64), "sefa",
                      np.asarray(used, dtype=np.int64))


def _check_num(num: int, w_dim: int) -> int:
    if not 1 <= num:
        raise UserInputError(f"--num must be at least 1, got {num}.")
    return min(num, w_dim)


@torch.no_grad()
def ganspace_directions(
    G: torch.nn.Module,
    num: int = 20,
    num_samples: int = GANSPACE_SAMPLES,
    seed: int = 0,
    class_idx: int | None = None,
    batch_size: int = 4096,
) -> Directions:
    """GANSpace principal components of ``w = mapping(z, c)`` over ``num_samples`` ``z ~ N(0, I)``."""
    if num_samples < 2:
        raise UserInputError(f"GANSpace needs at least 2 samples, got {num_samples}.")
    from styleforge.generation import make_labels

    device = next(iter(G.parameters())).device
    rng = np.random.RandomState(seed)
    w_dim = G.w_dim
    total = np.zeros(w_dim)
    outer = np.zeros((w_dim, w_dim))
    for start in range(0, num_samples, batch_size):
        n = min(batch_size, num_samples - start)
        z = torch.from_numpy(rng.randn(n, G.z_dim)).to(device, torch.float32)
        c = make_labels(G, class_idx, n, device)
        w = G.mapping(z, c if c.shape[1] else None)[:, 0].double().cpu().numpy()
        total += w.sum(axis=0)
        outer += w.T @ w
    mean = total / num_samples
    cov = (outer - num_samples * np.outer(mean, mean)) / (num_samples - 1)
    values, vectors = np.linalg.eigh(cov)
    order = np.argsort(values)[::-1][: _check_num(num, w_dim)]
    return Directions(vectors[:, order].T.astype(np.float32), values[order].clip(min=0), "ganspace")


def boundary_direction(
    w: np.ndarray, labels: np.ndarray, solver: str = "svm", C: float = 1.0, train_fraction: float = 0.7, seed: int = 0
) -> Directions:
    """InterFaceGAN: the unit normal (pointing to label 1) of a linear boundary separating ``w`` ``[N, w_dim]``
    with binary ``labels`` ``[N]``; trained on a random ``train_fraction`` split, ``values`` = [held-out
    accuracy] (training accuracy when too few samples are left over)."""
    w = np.asarray(w, dtype=np.float64)
    y = np.asarray(labels).reshape(-1)
    if w.ndim != 2 or len(w) != len(y):
        raise UserInputError(f"boundary: need codes [N, w_dim] and N labels, got {w.shape} and {y.shape}.")
    if not np.isin(y, (0, 1)).all() or len(np.unique(y)) != 2:
        raise UserInputError("boundary: labels must be 0 or 1, with both present.")
    if solver not in BOUNDARY_SOLVERS:
        raise UserInputError(f"Unknown boundary solver {solver!r}; choose one of {', '.join(BOUNDARY_SOLVERS)}.")
    perm = np.random.RandomState(seed).permutation(len(w))
    n_train = max(2, int(round(train_fraction * len(w))))
    train, val = perm[:n_train], perm[n_train:]
    if len(np.unique(y[train])) != 2:
        train, val = perm, perm[:0]
    mu, sd = w[train].mean(axis=0), w[train].std(axis=0).clip(min=1e-12)
    x = (w[train] - mu) / sd
    s = 2.0 * y[train] - 1.0  # labels as -1 / +1

    def objective(params: np.ndarray) -> tuple[float, np.ndarray]:
        coef, bias = params[:-1], params[-1]
        margin = s * (x @ coef + bias)
        if solver == "svm":  # C * sum max(0, 1 - m)^2 + ||coef||^2 / 2
            slack = np.maximum(0.0, 1.0 - margin)
            loss = C * np.sum(slack**2) + 0.5 * coef @ coef
            g_margin = -2.0 * C * slack
        else:  # C * sum log(1 + exp(-m)) + ||coef||^2 / 2
            loss = C * np.sum(np.logaddexp(0.0, -margin)) + 0.5 * coef @ coef
            g_margin = -C * np.exp(-np.logaddexp(0.0, margin))
        g = g_margin * s
        return loss, np.concatenate([x.T @ g + coef, [g.sum()]])

    res = scipy.optimize.minimize(objective, np.zeros(w.shape[1] + 1), jac=True, method="L-BFGS-B")
    coef_w = res.x[:-1] / sd  # the normal in W coordinates
    bias_w = res.x[-1] - coef_w @ mu
    normal = coef_w / max(np.linalg.norm(coef_w), 1e-12)
    check = val if len(val) else train
    accuracy = float(np.mean(((w[check] @ coef_w + bias_w) > 0) == (y[check] == 1)))
    return Directions(normal[None].astype(np.float32), np.array([accuracy]), "boundary")


def save_directions(path: str | os.PathLike, d: Directions) -> Path:
    """Write ``d`` as ``dirs.npz`` (format in the module docstring), atomically."""
    directions = np.asarray(d.directions, dtype=np.float32)
    norms = np.linalg.norm(directions, axis=1, keepdims=True)
    arrays = {
        "directions": directions / norms.clip(min=1e-12),
        "values": np.asarray(d.values, dtype=np.float64),
        "method": np.array(d.method),
    }
    if d.layers is not None:
        arrays["layers"] = np.asarray(d.layers, dtype=np.int64)
    path = Path(path)
    with atomic_write(path) as f:
        np.savez(f, **arrays)
    return path


def load_directions(path: str | os.PathLike) -> Directions:
    """Read a ``dirs.npz``; clear errors for files of another kind."""
    path = Path(path)
    try:
        with np.load(path, allow_pickle=False) as data:
            missing = [k for k in ("directions", "values", "method") if k not in data.files]
            if missing:
                raise UserInputError(f"{path}: not a directions file (missing {missing}); make one with "
                                     "`styleforge directions`.")
            layers = data["layers"] if "layers" in data.files else None
            directions = data["directions"]
            if directions.ndim != 2:
                raise UserInputError(f"{path}: 'directions' must be [K, w_dim], got shape {directions.shape}.")
            return Directions(directions.astype(np.float32), data["values"].astype(np.float64),
                              str(data["method"]), layers)
    except (OSError, ValueError) as e:
        if isinstance(e, UserInputError):
            raise
        raise UserInputError(f"{path}: cannot read it as a .npz directions file ({e}).") from e


def read_labels(
    path: str | os.PathLike, G: torch.nn.Module, class_idx: int | None = None
) -> tuple[np.ndarray, np.ndarray]:
    """Codes ``[N, w_dim]`` and 0/1 labels ``[N]`` for :func:`boundary_direction` from ``path``: an ``.npz`` with
    ``w`` (``[N, w_dim]`` or ``[N, num_ws, w_dim]``, the first row used) and ``labels``; or a text file of
    ``seed,label`` lines (``#`` comments allowed), whose codes are ``mapping(z_from_seed(seed))``."""
    path = Path(path)
    if path.suffix.lower() == ".npz":
        try:
            with np.load(path, allow_pickle=False) as data:
                if "w" not in data.files or "labels" not in data.files:
                    raise UserInputError(f"{path}: needs keys 'w' and 'labels', found {data.files}.")
                w, y = np.asarray(data["w"], np.float64), np.asarray(data["labels"])
        except (OSError, ValueError) as e:
            if isinstance(e, UserInputError):
                raise
            raise UserInputError(f"{path}: cannot read it as .npz ({e}).") from e
        w = w[:, 0] if w.ndim == 3 else w
        if w.ndim != 2 or w.shape[1] != G.w_dim:
            raise UserInputError(f"{path}: w has shape {list(w.shape)}; this network needs [N, {G.w_dim}].")
        return w, y.astype(np.int64)
    seeds, labels = [], []
    for lineno, line in enumerate(path.read_text().splitlines(), 1):
        line = line.split("#", 1)[0].strip()
        if not line:
            continue
        parts = [p.strip() for p in line.replace("\t", ",").split(",")]
        try:
            seeds.append(int(parts[0]))
            labels.append(int(parts[1]))
        except (ValueError, IndexError):
            raise UserInputError(f"{path}:{lineno}: expected 'seed,label', got {line!r}.") from None
    if not seeds:
        raise UserInputError(f"{path}: no 'seed,label' lines.")
    from styleforge.inversion.editing import ws_from_seeds

    w = ws_from_seeds(G, seeds, class_idx=class_idx)[:, 0].double().cpu().numpy()
    return w, np.asarray(labels, dtype=np.int64)
