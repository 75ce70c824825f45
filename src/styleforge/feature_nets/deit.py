"""DeiT (distilled Vision Transformers): the feature network of StyleGAN-XL's projected discriminator
(DeiT-base) and its classifier guidance (DeiT-small).

Papers:
    Dosovitskiy et al., "An Image is Worth 16x16 Words: Transformers for Image Recognition at Scale", ICLR 2021
    (ViT: patch embedding, pre-norm transformer blocks).
    Touvron et al., "Training data-efficient image transformers & distillation through attention", ICML 2021
    (DeiT: the distillation token and its second classifier head).
    Ranftl, Bochkovskiy & Koltun, "Vision Transformers for Dense Prediction", ICCV 2021 (DPT: the readout that
    turns the tokens of blocks 3, 6, 9 and 12 into four feature maps), used by Projected GAN / StyleGAN-XL.

Layout (patch 16, 224 x 224 input, 14 x 14 = 196 patches): a 16 x 16 stride-16 convolution embeds the patches
to ``dim`` channels, a class token and a distillation token are prepended (198 tokens) and a learnt position
embedding is added; then 12 blocks ``x + attn(LN(x))``, ``x + mlp(LN(x))`` (multi-head self-attention with a qkv
bias; MLP ``dim -> 4 dim -> dim`` with exact GELU; LayerNorm eps 1e-6), a final LayerNorm, and two linear
classifiers on the class and distillation tokens whose logits are averaged (the DeiT inference rule).

    variant               dim   heads   parameters
    deit_small_distilled  384   6       22.4 M
    deit_base_distilled   768   12      87.3 M

Weights (never downloaded): a file in timm's layout (``deit_base_distilled_patch16_224`` or
``deit_small_distilled_patch16_224``: ``cls_token``, ``dist_token``, ``pos_embed``, ``patch_embed.proj.*``,
``blocks.<i>.{norm1,attn.qkv,attn.proj,norm2,mlp.fc1,mlp.fc2}.*``, ``norm.*``, ``head.*``, ``head_dist.*``),
given by the user (``--deit-weights FILE``): a ``torch.save``d state dict or a ``.safetensors`` file, optionally
wrapped in ``{"model": ...}`` / ``{"state_dict": ...}``. :func:`deit_state_from_timm` is the pure renaming onto
our names; :func:`load_deit` reads and loads strictly.

Inputs of :class:`DeiT` are normalised with the ImageNet mean/std (:data:`IMAGENET_MEAN`, :data:`IMAGENET_STD`)
and 224 x 224; :class:`DeiTReadout` turns the tokens of blocks 2, 5, 8 and 11 into the four feature maps of
the projected discriminator.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

import torch
import torch.nn as nn
import torch.nn.functional as F

from styleforge.feature_nets._weights import load_state_file, rename_keys, strict_load
from styleforge.utils.errors import UserInputError

__all__ = [
    "DeiTConfig",
    "DEIT_CONFIGS",
    "DeiT",
    "DeiTReadout",
    "IMAGENET_MEAN",
    "IMAGENET_STD",
    "READOUT_BLOCKS",
    "deit_state_from_timm",
    "read_deit_weights",
    "load_deit",
]

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)
LN_EPS = 1e-6
PATCH_SIZE = 16
INPUT_SIZE = 224
NUM_CLASSES = 1000
NUM_PREFIX_TOKENS = 2  # class token, distillation token
#: the blocks whose outputs the readout reads (0-based)
READOUT_BLOCKS = (2, 5, 8, 11)


@dataclass(frozen=True)
class DeiTConfig:
    """A distilled ViT with 16 x 16 patches at 224 x 224. ``timm_name`` is the matching timm model name."""

    dim: int
    heads: int
    depth: int = 12
    mlp_ratio: int = 4
    timm_name: str = ""


DEIT_CONFIGS = {
    "deit_small_distilled": DeiTConfig(dim=384, heads=6, timm_name="deit_small_distilled_patch16_224"),
    "deit_base_distilled": DeiTConfig(dim=768, heads=12, timm_name="deit_base_distilled_patch16_224"),
}


class Attention(nn.Module):
    """Multi-head self-attention ``[N, T, dim] -> [N, T, dim]``. Parameters ``qkv.*`` (``[3 dim, dim]``, q then
    k then v, heads contiguous), ``proj.*``."""

    def __init__(self, dim: int, heads: int) -> None:
        super().__init__()
        self.heads = heads
        self.qkv = nn.Linear(dim, 3 * dim)
        self.proj = nn.Linear(dim, dim)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        n, t, d = x.shape
        q, k, v = self.qkv(x).reshape(n, t, 3, self.heads, d // self.heads).permute(2, 0, 3, 1, 4)
        y = F.scaled_dot_product_attention(q, k, v)  # softmax(q k^T / sqrt(d_head)) v
        return self.proj(y.transpose(1, 2).reshape(n, t, d))


class Mlp(nn.Module):
    """``fc2(GELU(fc1(x)))``, ``dim -> hidden -> dim``."""

    def __init__(self, dim: int, hidden: int) -> None:
        super().__init__()
        self.fc1 = nn.Linear(dim, hidden)
        self.fc2 = nn.Linear(hidden, dim)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc2(F.gelu(self.fc1(x)))


class Block(nn.Module):
    """Pre-norm transformer block: ``x + attn(norm1(x))``, then ``x + mlp(norm2(x))``."""

    def __init__(self, dim: int, heads: int, mlp_ratio: int) -> None:
        super().__init__()
        self.norm1 = nn.LayerNorm(dim, eps=LN_EPS)
        self.attn = Attention(dim, heads)
        self.norm2 = nn.LayerNorm(dim, eps=LN_EPS)
        self.mlp = Mlp(dim, dim * mlp_ratio)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = x + self.attn(self.norm1(x))
        return x + self.mlp(self.norm2(x))


class DeiT(nn.Module):
    """Distilled ViT-16 at 224 px (see the module docstring). Inputs ``[N, 3, 224, 224]``, ImageNet-normalised.

    Parameters: ``patch_embed.*``, ``cls_token [1, 1, dim]``, ``dist_token [1, 1, dim]``, ``pos_embed [1, 198,
    dim]``, ``blocks.<0..11>.*``, ``norm.*``, ``head.*``, ``head_dist.*``.
    """

    def __init__(self, config: DeiTConfig) -> None:
        super().__init__()
        self.config = config
        d = config.dim
        self.patch_embed = nn.Conv2d(3, d, PATCH_SIZE, stride=PATCH_SIZE)
        self.cls_token = nn.Parameter(torch.zeros(1, 1, d))
        self.dist_token = nn.Parameter(torch.zeros(1, 1, d))
        grid = INPUT_SIZE // PATCH_SIZE
        self.pos_embed = nn.Parameter(torch.randn(1, grid * grid + NUM_PREFIX_TOKENS, d) * 0.02)
        self.blocks = nn.ModuleList(Block(d, config.heads, config.mlp_ratio) for _ in range(config.depth))
        self.norm = nn.LayerNorm(d, eps=LN_EPS)
        self.head = nn.Linear(d, NUM_CLASSES)
        self.head_dist = nn.Linear(d, NUM_CLASSES)
        self.weights_file = ""  # set by the loader

    def tokens(self, x: torch.Tensor, taps: tuple[int, ...] = ()) -> tuple[torch.Tensor, list[torch.Tensor]]:
        """Run the blocks on ``x`` ``[N, 3, 224, 224]``: ``(final normalised tokens [N, 198, dim], [outputs of
        the blocks in taps, each [N, 198, dim]])``. Blocks after the last tap are skipped when only taps are
        needed (``taps`` given: the first return value is then ``None``)."""
        if x.shape[-2:] != (INPUT_SIZE, INPUT_SIZE):
            raise ValueError(f"DeiT takes {INPUT_SIZE} x {INPUT_SIZE} inputs, got {tuple(x.shape[-2:])}")
        n = x.shape[0]
        t = self.patch_embed(x).flatten(2).transpose(1, 2)  # [N, 196, dim], patches row by row
        prefix = torch.cat([self.cls_token, self.dist_token], dim=1).expand(n, -1, -1)
        t = torch.cat([prefix.to(t.dtype), t], dim=1) + self.pos_embed.to(t.dtype)
        out = []
        last = max(taps) if taps else len(self.blocks) - 1
        for i, block in enumerate(self.blocks[: last + 1]):
            t = block(t)
            if i in taps:
                out.append(t)
        return (None if taps else self.norm(t)), out

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """ImageNet logits ``[N, 1000]``: the mean of the class-token and distillation-token classifiers."""
        t, _ = self.tokens(x)
        return (self.head(t[:, 0]) + self.head_dist(t[:, 1])) / 2


class DeiTReadout(nn.Module):
    """The DPT readout of Projected GAN / StyleGAN-XL: four feature maps from the tokens of blocks 2, 5, 8, 11.

    Per tap: drop the class and distillation tokens, reshape the 196 patch tokens to ``[N, dim, 14, 14]``, a 1x1
    conv to ``dim/8, dim/4, dim/2, dim`` channels (96, 192, 384, 768 for DeiT-base), then a 4x4 stride-4
    transposed conv (56 px), a 2x2 stride-2 transposed conv (28 px), nothing (14 px), a 3x3 stride-2 conv with
    padding 1 (7 px). Parameters ``proj.<0..3>.*``, ``resample.{0,1,3}.*``. In the discriminator they stay at
    their random initialisation (frozen), as in the official code.
    """

    def __init__(self, dim: int) -> None:
        super().__init__()
        chans = (dim // 8, dim // 4, dim // 2, dim)
        self.channels = chans
        self.proj = nn.ModuleList(nn.Conv2d(dim, c, 1) for c in chans)
        self.resample = nn.ModuleList(
            [
                nn.ConvTranspose2d(chans[0], chans[0], 4, stride=4),
                nn.ConvTranspose2d(chans[1], chans[1], 2, stride=2),
                nn.Identity(),
                nn.Conv2d(chans[3], chans[3], 3, stride=2, padding=1),
            ]
        )

    def forward(self, taps: list[torch.Tensor]) -> list[torch.Tensor]:
        """``taps``: four ``[N, 198, dim]`` token tensors -> ``[N, 96, 56, 56], [N, 192, 28, 28], [N, 384, 14,
        14], [N, 768, 7, 7]`` (DeiT-base)."""
        out = []
        grid = INPUT_SIZE // PATCH_SIZE
        for t, proj, resample in zip(taps, self.proj, self.resample, strict=True):
            fmap = t[:, NUM_PREFIX_TOKENS:].transpose(1, 2).unflatten(2, (grid, grid))
            out.append(resample(proj(fmap)))
        return out


# ----------------------------------------------------------------------------------------------------
# Weights

_TIMM_KEY_RULES = (  # (pattern on a timm key, our key template)
    (r"(cls_token|dist_token|pos_embed)", "{0}"),
    (r"patch_embed\.proj\.(weight|bias)", "patch_embed.{0}"),
    (r"blocks\.(\d+)\.(norm1|norm2)\.(weight|bias)", "blocks.{0}.{1}.{2}"),
    (r"blocks\.(\d+)\.attn\.(qkv|proj)\.(weight|bias)", "blocks.{0}.attn.{1}.{2}"),
    (r"blocks\.(\d+)\.mlp\.(fc1|fc2)\.(weight|bias)", "blocks.{0}.mlp.{1}.{2}"),
    (r"norm\.(weight|bias)", "norm.{0}"),
    (r"(head|head_dist)\.(weight|bias)", "{0}.{1}"),
)


def deit_state_from_timm(state: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """Rename a timm ``deit_*_distilled_patch16_224`` state dict to our :class:`DeiT` names (values unchanged).

    Raises:
        UserInputError: a key that no rule maps (not a distilled DeiT in timm's layout).
    """
    out, unknown = rename_keys(state, _TIMM_KEY_RULES)
    if unknown:
        raise UserInputError(
            f"Not a distilled DeiT state dict in timm's layout (deit_*_distilled_patch16_224): unexpected key(s) "
            f"{unknown[:3]}."
        )
    return out


def _infer_variant(state: dict[str, torch.Tensor], source: object) -> str:
    emb = state.get("cls_token")
    if emb is None:
        raise UserInputError(f"{source}: no 'cls_token'; not a DeiT state dict in timm's layout.")
    for name, cfg in DEIT_CONFIGS.items():
        if emb.shape[-1] == cfg.dim:
            return name
    raise UserInputError(
        f"{source}: a DeiT of width {emb.shape[-1]}; supported: "
        + ", ".join(f"{n} ({c.dim})" for n, c in DEIT_CONFIGS.items())
        + "."
    )


def read_deit_weights(path: str | os.PathLike) -> dict[str, torch.Tensor]:
    """The timm-layout state dict in ``path`` (``torch.save`` file read with ``weights_only=True``, or
    ``.safetensors``); a ``{"model": ...}`` or ``{"state_dict": ...}`` wrapper is unwrapped."""
    file = Path(path).expanduser()
    if not file.is_file():
        raise UserInputError(
            f"DeiT weights: the file {file} does not exist. Pass a timm-layout state dict of "
            "deit_base_distilled_patch16_224 (or deit_small_distilled_patch16_224) saved with torch.save or as "
            ".safetensors."
        )
    if file.suffix == ".safetensors":
        from safetensors.torch import load_file

        state = load_file(str(file))
    else:
        state = load_state_file(file)
    for wrapper in ("model", "state_dict"):
        if isinstance(state.get(wrapper), dict):
            state = state[wrapper]
    return state


def load_deit(
    path: str | os.PathLike, variant: str | None = None, device: torch.device | str = "cpu"
) -> DeiT:
    """A :class:`DeiT` with the weights in ``path`` (timm layout, see :func:`read_deit_weights`), in eval mode
    and frozen.

    Args:
        path: the weights file.
        variant: ``"deit_base_distilled"`` or ``"deit_small_distilled"``; ``None`` infers it from the width.
            A file of the other variant is an error naming both.
        device: where to put the network.

    Raises:
        UserInputError: missing file, foreign keys, wrong variant, missing keys or shape mismatches.
    """
    state = read_deit_weights(path)
    found = _infer_variant(state, path)
    if variant is not None and variant != found:
        raise UserInputError(
            f"{path}: these are {found} weights (width {state['cls_token'].shape[-1]}), but {variant} weights "
            f"({DEIT_CONFIGS[variant].timm_name}) are needed here."
        )
    net = DeiT(DEIT_CONFIGS[found])
    strict_load(net, deit_state_from_timm(state), path)
    net.weights_file = str(path)
    return net.eval().requires_grad_(False).to(device)
