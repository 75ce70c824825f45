"""The mapping network f: Z (x C) -> W shared by StyleGAN2, StyleGAN3 and StyleGAN-XL.

Karras et al., "Analyzing and Improving the Image Quality of StyleGAN" (CVPR 2020), Sec. 2 and Appendix B; the
conditional embedding follows Karras et al., "Training Generative Adversarial Networks with Limited Data"
(NeurIPS 2020). The network:

1. normalises ``z`` to unit second moment (``z / sqrt(mean(z^2) + eps)``),
2. embeds the label ``c`` with a linear layer, normalises it the same way and concatenates it to ``z``,
3. applies ``num_layers`` fully connected layers with leaky ReLU and a learning-rate multiplier of 0.01,
4. tracks the running average ``w_avg`` of the outputs (when ``update_emas=True``),
5. broadcasts ``w`` to ``num_ws`` per-layer copies,
6. applies the truncation trick ``w' = w_avg + psi * (w - w_avg)`` to the first ``truncation_cutoff`` copies.

State-dict names are those of the official networks: ``embed``, ``fc0``, ``fc1``, ..., ``w_avg``.

Subclassing (StyleGAN-XL, with an ``nn.Embedding`` for classes and a per-class ``w_avg``): override
:meth:`MappingNetwork._build_embedding`, :meth:`MappingNetwork.embed_labels`,
:meth:`MappingNetwork.w_avg_shape`, :meth:`MappingNetwork.update_w_avg` and :meth:`MappingNetwork.w_avg_for`;
the rest of the pipeline is shared.
"""

from __future__ import annotations

import torch
import torch.nn as nn

from styleforge.layers.equalized import EqualizedLinear

__all__ = ["MappingNetwork", "normalize_2nd_moment", "NORMALIZE_EPS", "MAPPING_LR_MULTIPLIER", "W_AVG_BETA"]

#: epsilon inside the square root of the second-moment normalisation of z and of the label embedding
NORMALIZE_EPS = 1e-8
#: learning-rate multiplier of the mapping layers (StyleGAN paper, Sec. 2: "lambda' = 0.01 lambda")
MAPPING_LR_MULTIPLIER = 0.01
#: decay of the running average of w that truncation pulls towards
W_AVG_BETA = 0.998


def normalize_2nd_moment(x: torch.Tensor, dim: int = 1, eps: float = NORMALIZE_EPS) -> torch.Tensor:
    """Scale ``x`` so that the mean of its squares along ``dim`` is 1 (pixel norm of a latent vector).

    Args:
        x: any tensor, typically ``[N, D]``.
        dim: the feature dimension.
        eps: added to the mean square before the reciprocal square root.
    """
    return x * (x.square().mean(dim=dim, keepdim=True) + eps).rsqrt()


class MappingNetwork(nn.Module):
    """The mapping network ``w = f(z, c)``.

    Args:
        z_dim: dimension of the input latent z; 0 = no latent (the label mapping of a conditional
        discriminator).
        c_dim: dimension of the conditioning label c; 0 = unconditional.
        w_dim: dimension of the intermediate latent w.
        num_ws: number of per-layer copies of w to output (``[N, num_ws, w_dim]``); ``None`` = output ``[N,
        w_dim]``.
        num_layers: number of fully connected layers (8 in StyleGAN2 config F, 2 in StyleGAN3).
        embed_features: width of the label embedding; ``None`` = ``w_dim`` (ignored when ``c_dim == 0``).
        layer_features: width of the hidden layers; ``None`` = ``w_dim``.
        activation: activation of the fully connected layers (a name of ``ops.bias_act.ACTIVATIONS``).
        lr_multiplier: learning-rate multiplier of the fully connected layers (not of the embedding).
        w_avg_beta: decay of the running average ``w_avg``; ``None`` = do not track it (then truncation is
            unavailable).
    """

    def __init__(
        self,
        z_dim: int,  # Input latent (Z) dimensionality, 0 = no latent.
        c_dim: int,  # Conditioning label (C) dimensionality, 0 = no label.
        w_dim: int,  # Intermediate latent (W) dimensionality.
        num_ws: int | None,  # Number of w copies to output, None = do not broadcast.
        num_layers: int = 8,  # Number of mapping layers.
        embed_features: int | None = None,  # Label embedding width, None = w_dim.
        layer_features: int | None = None,  # Hidden layer width, None = w_dim.
        activation: str = "lrelu",  # Activation of the mapping layers.
        lr_multiplier: float = MAPPING_LR_MULTIPLIER,  # Learning-rate multiplier of the mapping layers.
        w_avg_beta: float | None = W_AVG_BETA,  # Decay of the tracked w average, None = no tracking.
    ) -> None:
        super().__init__()
        if z_dim < 0 or c_dim < 0 or w_dim <= 0:
            raise ValueError(
                f"MappingNetwork needs z_dim >= 0, c_dim >= 0, w_dim > 0; got {z_dim}, {c_dim}, {w_dim}"
            )
        if z_dim == 0 and c_dim == 0:
            raise ValueError("MappingNetwork needs a latent (z_dim > 0) or a label (c_dim > 0)")
        if num_layers < 0:
            raise ValueError(f"MappingNetwork needs num_layers >= 0, got {num_layers}")
        self.z_dim = z_dim
        self.c_dim = c_dim
        self.w_dim = w_dim
        self.num_ws = num_ws
        self.num_layers = num_layers
        self.w_avg_beta = w_avg_beta
        self.embed_features = (w_dim if embed_features is None else embed_features) if c_dim > 0 else 0
        self.layer_features = w_dim if layer_features is None else layer_features

        if num_layers == 0 and z_dim + self.embed_features != w_dim:
            # without layers the output is the normalised input (a conditional discriminator's label projection)
            raise ValueError(
                f"MappingNetwork with num_layers=0 passes its input through, so z_dim + embed_features "
                f"({z_dim} + {self.embed_features}) must equal w_dim ({w_dim})"
            )
        embed = self._build_embedding()
        if embed is not None:
            self.embed = embed
        widths = [z_dim + self.embed_features] + [self.layer_features] * (num_layers - 1) + [w_dim]
        for idx in range(num_layers):
            layer = EqualizedLinear(
                widths[idx], widths[idx + 1], activation=activation, lr_multiplier=lr_multiplier
            )
            setattr(self, f"fc{idx}", layer)
        if w_avg_beta is not None:
            self.register_buffer("w_avg", torch.zeros(self.w_avg_shape()))

    # --------------------------------------------------------------------------------------------------------
    # Hooks for subclasses (StyleGAN-XL).

    def _build_embedding(self) -> nn.Module | None:
        """The label embedding module stored as ``self.embed`` (``None`` when unconditional)."""
        if self.c_dim == 0:
            return None
        return EqualizedLinear(self.c_dim, self.embed_features)

    def embed_labels(self, c: torch.Tensor) -> torch.Tensor:
        """Embedded, second-moment-normalised labels: ``[N, c_dim]`` -> ``[N, embed_features]``, float32."""
        return normalize_2nd_moment(self.embed(c.to(torch.float32)))

    def w_avg_shape(self) -> list[int]:
        """Shape of the ``w_avg`` buffer: ``[w_dim]`` (StyleGAN-XL overrides it with ``[c_dim, w_dim]``)."""
        return [self.w_dim]

    def update_w_avg(self, w: torch.Tensor, c: torch.Tensor | None) -> None:
        """Move ``w_avg`` towards the mean of ``w`` ``[N, w_dim]``: ``w_avg <- lerp(mean(w), w_avg, beta)``"""
        self.w_avg.copy_(w.detach().mean(dim=0).lerp(self.w_avg, self.w_avg_beta))

    def w_avg_for(self, c: torch.Tensor | None) -> torch.Tensor:
        """The average that truncation pulls each sample to: ``[w_dim]`` here, broadcast over the batch."""
        return self.w_avg

    # --------------------------------------------------------------------------------------------------------

    def _check_inputs(self, z: torch.Tensor | None, c: torch.Tensor | None) -> None:
        if self.z_dim > 0 and (z is None or z.ndim != 2 or z.shape[1] != self.z_dim):
            got = None if z is None else tuple(z.shape)
            raise ValueError(f"mapping expects z of shape [N, {self.z_dim}], got {got}")
        if self.c_dim > 0:
            if c is None or c.ndim != 2 or c.shape[1] != self.c_dim:
                got = None if c is None else tuple(c.shape)
                raise ValueError(
                    f"mapping expects c of shape [N, {self.c_dim}] (one-hot labels), got {got}; "
                    "the network is conditional"
                )
            if z is not None and self.z_dim > 0 and c.shape[0] != z.shape[0]:
                raise ValueError(f"z and c have different batch sizes: {z.shape[0]} and {c.shape[0]}")

    def forward(
        self,
        z: torch.Tensor | None,
        c: torch.Tensor | None,
        truncation_psi: float = 1,
        truncation_cutoff: int | None = None,
        update_emas: bool = False,
    ) -> torch.Tensor:
        """Map latents (and labels) to W.

        Args:
            z: ``[N, z_dim]`` latents (ignored when ``z_dim == 0``; pass ``None``).
            c: ``[N, c_dim]`` labels, usually one-hot (ignored when ``c_dim == 0``; an ``[N, 0]`` tensor is
            fine).
            truncation_psi: psi of the truncation trick; 1 = no truncation, 0 = every w equals ``w_avg``.
            truncation_cutoff: truncate only the first this-many of the ``num_ws`` copies; ``None`` = all.
            update_emas: update the running average ``w_avg`` from this batch (training only).

        Returns:
            ``[N, num_ws, w_dim]`` float32 (``[N, w_dim]`` when ``num_ws`` is ``None``).
        """
        self._check_inputs(z, c)
        x = normalize_2nd_moment(z.to(torch.float32)) if self.z_dim > 0 else None
        if self.c_dim > 0:
            y = self.embed_labels(c)
            x = y if x is None else torch.cat([x, y], dim=1)
        for idx in range(self.num_layers):
            x = getattr(self, f"fc{idx}")(x)

        if update_emas and self.w_avg_beta is not None:
            self.update_w_avg(x, c)
        if self.num_ws is not None:
            x = x.unsqueeze(1).repeat([1, self.num_ws, 1])
        if truncation_psi != 1:
            x = self.truncate(x, c, truncation_psi, truncation_cutoff)
        return x

    def truncate(
        self,
        ws: torch.Tensor,
        c: torch.Tensor | None,
        truncation_psi: float,
        truncation_cutoff: int | None = None,
    ) -> torch.Tensor:
        """The truncation trick ``w' = w_avg + psi (w - w_avg)`` on ``[N, num_ws, w_dim]`` or ``[N, w_dim]``.

        With ``truncation_cutoff`` only the first that-many copies of w are moved (the coarse layers).
        """
        if self.w_avg_beta is None:
            raise ValueError(
                "truncation needs w_avg, but this mapping network was built with w_avg_beta=None"
            )
        avg = self.w_avg_for(c)
        if ws.ndim == 3:
            avg = avg.unsqueeze(-2)  # broadcast over the num_ws axis
        if ws.ndim == 2 or truncation_cutoff is None:
            return avg.lerp(ws, truncation_psi)
        ws = ws.clone()
        ws[:, :truncation_cutoff] = avg.lerp(ws[:, :truncation_cutoff], truncation_psi)
        return ws

    def extra_repr(self) -> str:
        return (
            f"z_dim={self.z_dim}, c_dim={self.c_dim}, w_dim={self.w_dim}, num_ws={self.num_ws}, "
            f"num_layers={self.num_layers}, w_avg_beta={self.w_avg_beta}"
        )
