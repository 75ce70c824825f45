"""Latent edits along a direction, the StyleGAN style-mixing grid, and reading ``projected_w.npz``.

An edit moves the chosen rows of ``ws`` ``[N, num_ws, w_dim]`` along a unit direction ``n``:
``ws[:, l] += strength * n`` for ``l`` in ``layers`` (all rows by default). GANSpace strengths are in units of the
component's standard deviation (``sqrt(value)``), as GANSpace edits; SeFa and boundary strengths are distances in
W. Strength 0 returns the input unchanged (the same tensor values, not a recomputation).

Style mixing (Karras et al., "A Style-Based Generator Architecture for GANs", CVPR 2019, fig. 3; the official
``style_mixing.py``): a grid whose first row shows the column seeds' images, first column the row seeds' images,
and cell (r, c) the image of the row seed's ``ws`` with the rows ``styles`` taken from the column seed.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import torch

from styleforge.inversion.directions import Directions
from styleforge.utils.errors import UserInputError
from styleforge.utils.io import atomic_write

__all__ = [
    "apply_direction",
    "edit_images",
    "edit_strengths",
    "ws_from_seeds",
    "style_mix_grid",
    "load_projected_w",
    "save_projected_w",
    "parse_strengths",
    "parse_index_list",
    "render_projected_w",
]


def parse_strengths(spec: str) -> list[float]:
    """``"-3:3:7"`` (start:stop:count, inclusive) or ``"-2,0,2"`` -> list of floats."""
    try:
        if ":" in spec:
            start, stop, count = spec.split(":")
            n = int(count)
            if n < 1:
                raise ValueError
            return [float(v) for v in np.linspace(float(start), float(stop), n)]
        return [float(v) for v in spec.split(",") if v.strip()]
    except ValueError:
        raise UserInputError(
            f"Bad strengths {spec!r}: use start:stop:count like '-3:3:7' or a list '-2,0,2'."
        ) from None


def parse_index_list(spec: str | None, limit: int, what: str = "layer") -> list[int] | None:
    """``"0-5,8"`` -> ``[0, 1, 2, 3, 4, 5, 8]``, each below ``limit``; ``None`` stays ``None``."""
    if spec is None:
        return None
    from styleforge.utils.seeding import parse_seeds

    out = parse_seeds(spec)
    bad = [i for i in out if i >= limit]
    if bad:
        raise UserInputError(f"{what} index/indices {bad} out of range: valid are 0 to {limit - 1}.")
    return out


def edit_strengths(d: Directions, index: int, strengths: Sequence[float]) -> np.ndarray:
    """Strengths in W units: GANSpace strengths are multiplied by the component's standard deviation."""
    s = np.asarray(strengths, dtype=np.float64)
    if d.method == "ganspace":
        s = s * np.sqrt(max(float(d.values[index]), 0.0))
    return s


def apply_direction(
    ws: torch.Tensor, direction: torch.Tensor | np.ndarray, strength: float, layers: Sequence[int] | None = None
) -> torch.Tensor:
    """``ws`` ``[N, num_ws, w_dim]`` moved by ``strength * direction`` (``[w_dim]``) on the rows ``layers``
    (``None`` = all). A new tensor; strength 0 returns an exact copy."""
    out = ws.clone()
    if strength == 0:
        return out
    n = torch.as_tensor(np.asarray(direction), dtype=ws.dtype, device=ws.device).reshape(1, 1, -1)
    if n.shape[-1] != ws.shape[-1]:
        raise UserInputError(f"The direction has {n.shape[-1]} dimensions but this network's w has {ws.shape[-1]}.")
    rows = list(range(ws.shape[1])) if layers is None else list(layers)
    out[:, rows] = out[:, rows] + strength * n
    return out


@torch.no_grad()
def ws_from_seeds(
    G: torch.nn.Module, seeds: Sequence[int], truncation_psi: float = 1.0, class_idx: int | None = None
) -> torch.Tensor:
    """``ws`` ``[len(seeds), num_ws, w_dim]`` of the official seed latents (``RandomState(seed).randn``)."""
    from styleforge.generation import make_labels
    from styleforge.utils.seeding import z_from_seed

    device = next(iter(G.parameters())).device
    z = torch.cat([z_from_seed(s, G.z_dim, device) for s in seeds])
    c = make_labels(G, class_idx, len(seeds), device)
    return G.mapping(z, c if c.shape[1] else None, truncation_psi=truncation_psi)


@torch.no_grad()
def style_mix_grid(
    G: torch.nn.Module,
    row_seeds: Sequence[int],
    col_seeds: Sequence[int],
    styles: Sequence[int],
    truncation_psi: float = 1.0,
    class_idx: int | None = None,
    noise_mode: str = "const",
) -> torch.Tensor:
    """Images ``[(R + 1) * (C + 1), channels, H, W]`` of the style-mixing grid, row-major; the top-left cell is
    blank (white)."""
    bad = [s for s in styles if not 0 <= s < G.num_ws]
    if bad:
        raise UserInputError(f"--styles {bad} out of range: this network has ws 0 to {G.num_ws - 1}.")
    row_ws = ws_from_seeds(G, row_seeds, truncation_psi, class_idx)
    col_ws = ws_from_seeds(G, col_seeds, truncation_psi, class_idx)
    styles = list(styles)
    cells = []
    for r in range(-1, len(row_seeds)):
        for c in range(-1, len(col_seeds)):
            if r < 0 and c < 0:
                cells.append(None)
            elif r < 0:
                cells.append(col_ws[c])
            elif c < 0:
                cells.append(row_ws[r])
            else:
                w = row_ws[r].clone()
                w[styles] = col_ws[c][styles]
                cells.append(w)
    ws = torch.stack([w for w in cells if w is not None])
    device = next(iter(G.parameters())).device
    images = torch.cat(
        [G.synthesis(ws[i : i + 8].to(device), noise_mode=noise_mode).cpu() for i in range(0, len(ws), 8)]
    )
    blank = torch.ones_like(images[:1])
    return torch.cat([blank, images])


def save_projected_w(path: str | os.PathLike, ws: torch.Tensor) -> Path:
    """Write ``ws`` ``[1, num_ws, w_dim]`` as the official ``projected_w.npz`` (key ``w``), atomically."""
    path = Path(path)
    with atomic_write(path) as f:
        np.savez(f, w=ws.detach().cpu().numpy().astype(np.float32))
    return path


def load_projected_w(path: str | os.PathLike, G: torch.nn.Module) -> torch.Tensor:
    """``ws`` ``[N, num_ws, w_dim]`` from a ``projected_w.npz`` (key ``w``: ``[num_ws, w_dim]``,
    ``[N, num_ws, w_dim]``, or ``[N, 1, w_dim]`` / ``[N, w_dim]`` W codes, repeated), checked against ``G``."""
    path = Path(path)
    try:
        with np.load(path, allow_pickle=False) as data:
            if "w" not in data.files:
                raise UserInputError(f"{path}: no key 'w' (found {data.files}); expected a projected_w.npz.")
            w = np.asarray(data["w"], dtype=np.float32)
    except (OSError, ValueError) as e:
        if isinstance(e, UserInputError):
            raise
        raise UserInputError(f"{path}: cannot read it as a .npz file ({e}).") from e
    if w.ndim == 2:
        w = w[None] if w.shape[0] == G.num_ws else w[:, None]
    if w.ndim != 3 or w.shape[2] != G.w_dim or w.shape[1] not in (1, G.num_ws):
        raise UserInputError(
            f"{path}: w has shape {list(w.shape)}, but this network needs [N, {G.num_ws}, {G.w_dim}] "
            "(was it projected with another network?)."
        )
    ws = torch.from_numpy(w)
    return ws.repeat(1, G.num_ws, 1) if ws.shape[1] == 1 else ws


def render_projected_w(
    G: torch.nn.Module, path: str | os.PathLike, outdir: str | os.PathLike, noise_mode: str = "const"
) -> list[Path]:
    """``generate --projected-w``: the image of each latent in ``path`` as ``proj.png`` (one latent) or
    ``proj00.png``, ``proj01.png``, ... (several), written to ``outdir``."""
    from styleforge.inversion.projector import check_projectable
    from styleforge.utils.images import save_png, to_uint8

    check_projectable(G)
    ws = load_projected_w(path, G)
    device = next(iter(G.parameters())).device
    with torch.no_grad():
        images = torch.cat([G.synthesis(w[None].to(device), noise_mode=noise_mode).cpu() for w in ws])
    out = Path(outdir)
    out.mkdir(parents=True, exist_ok=True)
    names = ["proj.png"] if len(ws) == 1 else [f"proj{i:02d}.png" for i in range(len(ws))]
    for name, img in zip(names, to_uint8(images), strict=True):
        save_png(out / name, img)
    return [out / n for n in names]


@torch.no_grad()
def edit_images(
    G: torch.nn.Module,
    ws: torch.Tensor,
    direction: np.ndarray,
    strengths: Sequence[float],
    layers: Sequence[int] | None = None,
    noise_mode: str = "const",
) -> torch.Tensor:
    """Images ``[N, len(strengths), C, H, W]`` of ``ws`` ``[N, num_ws, w_dim]`` edited by each strength."""
    device = next(iter(G.parameters())).device
    ws = ws.to(device)
    out = [
        G.synthesis(apply_direction(ws, direction, float(s), layers), noise_mode=noise_mode).cpu() for s in strengths
    ]
    return torch.stack(out, dim=1)
