"""Export a generator as an ONNX graph or a TorchScript file, for inference without styleforge.

The exported graph is :class:`ExportableGenerator`: a thin wrapper whose inputs are plain tensors, so it runs in
onnxruntime, in C++ LibTorch or anywhere else:

=====================  =================  ==================================================================
input                  shape, dtype       meaning
=====================  =================  ==================================================================
``z``                  ``[N, z_dim]`` f32 latents (``part="full"`` and ``"mapping"``)
``class_idx``          ``[N]`` int64      class of each sample; only for conditional networks (StyleGAN-XL)
``truncation_psi``     ``[1]`` f32        truncation towards ``w_avg`` (per class for StyleGAN-XL); 1 = none
``ws``                 ``[N, num_ws, w]`` per-layer latents (``part="synthesis"``)
``transform``          ``[N, 3, 3]`` f32  StyleGAN3 / XL input transform; only with ``transform_input=True``
=====================  =================  ==================================================================

Outputs: ``img`` ``[N, C, H, W]`` in about ``[-1, 1]`` (``full``, ``synthesis``) or ``ws`` (``mapping``).

StyleGAN2 graphs use the stored constant noise (``noise_mode="const"``). Every network is exported with the
``ref`` implementation of its ops (set on a copy through the per-network ops switch), made of standard operators
only, and with the non-fused modulated convolution (activations scaled instead of per-sample weights), whose
kernels do not depend on the batch size. ONNX files are written by ``torch.onnx``'s ``torch.export``-based
exporter (it needs ``onnx`` and ``onnxscript``: the ``[onnx]`` extra). ``resolution`` exports the images resized
(bilinear, antialiased when shrinking) to another size. ``dynamic_batch`` leaves N free in the ONNX graph;
otherwise it is fixed to ``batch_size``.
"""

from __future__ import annotations

import copy
import logging
import os
import warnings
from dataclasses import dataclass
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn

from styleforge.models.base import Network
from styleforge.utils.errors import UserInputError
from styleforge.utils.io import atomic_path

__all__ = [
    "ExportOptions",
    "ExportableGenerator",
    "export_generator",
    "example_inputs",
    "run_exported",
    "check_export",
    "FORMATS",
    "PARTS",
]

FORMATS = ("onnx", "torchscript")
PARTS = ("full", "mapping", "synthesis")
#: ONNX opset of the exported graphs (torch.onnx's native opset: no version conversion; onnxruntime >= 1.16 runs it)
ONNX_OPSET = 18
#: run onnxscript's graph optimiser on the exported graph (constant folding, fusion)
OPTIMIZE = False
#: onnxruntime log level: errors only (its constant-folding notices are not for users)
ORT_LOG_ERRORS_ONLY = 3


@dataclass(frozen=True)
class ExportOptions:
    """What to export.

    Attributes:
        format: ``"onnx"`` or ``"torchscript"``.
        part: ``"full"`` (z -> image), ``"mapping"`` (z -> ws) or ``"synthesis"`` (ws -> image).
        resolution: resize the output images to this size (the longer side of a non-square network's images,
            whose aspect ratio is kept); ``None`` = the network's own resolution.
        dynamic_batch: leave the batch size free in the ONNX graph (TorchScript traces run at any batch size;
            checking them with ``dynamic_batch`` uses another batch size, as for ONNX).
        batch_size: the example batch used for tracing (and the fixed batch of a non-dynamic ONNX graph).
        transform_input: StyleGAN3 / XL only: add the ``transform`` input instead of baking in the stored one.
        truncation_cutoff: truncate only the first this-many ws (fixed in the graph); ``None`` = all.
    """

    format: str = "onnx"
    part: str = "full"
    resolution: int | None = None
    dynamic_batch: bool = False
    batch_size: int = 1
    transform_input: bool = False
    truncation_cutoff: int | None = None

    def __post_init__(self) -> None:
        if self.format not in FORMATS:
            raise UserInputError(f"format must be one of {', '.join(FORMATS)}, got {self.format!r}.")
        if self.part not in PARTS:
            raise UserInputError(f"part must be one of {', '.join(PARTS)}, got {self.part!r}.")
        if self.resolution is not None and self.resolution < 1:
            raise UserInputError(f"resolution must be positive, got {self.resolution}.")
        if self.batch_size < 1:
            raise UserInputError(f"batch_size must be positive, got {self.batch_size}.")


def _has_transform(G: nn.Module) -> bool:
    return hasattr(getattr(getattr(G, "synthesis", None), "input", None), "transform")


class ExportableGenerator(nn.Module):
    """``G`` with tensor-only inputs (see the module docstring); a copy, in eval mode, ops set to ``ref``."""

    def __init__(self, G: Network, options: ExportOptions) -> None:
        super().__init__()
        if not hasattr(G, "mapping") or not hasattr(G, "synthesis"):
            raise UserInputError(f"Only generators with mapping and synthesis networks can be exported, not "
                                 f"{type(G).__name__} (PGGAN generators have no mapping network).")
        self.G = copy.deepcopy(G).eval().requires_grad_(False).cpu().float()
        if hasattr(self.G, "set_ops_impl"):
            self.G.set_ops_impl("ref")
        for module in self.G.modules():  # StyleGAN3-type layers: batch-independent convolution kernels
            if hasattr(module, "fused_modconv"):
                module.fused_modconv = False
        self.options = options
        self.c_dim = int(getattr(G, "c_dim", 0))
        self.is_stylegan3 = _has_transform(G)
        if options.transform_input and not self.is_stylegan3:
            raise UserInputError(f"{type(G).__name__} has no input transform; drop the transform input option.")

    def input_names(self) -> list[str]:
        part = self.options.part
        names = ["ws"] if part == "synthesis" else ["z"] + (["class_idx"] if self.c_dim else []) + ["truncation_psi"]
        if part != "mapping" and self.options.transform_input:
            names.append("transform")
        return names

    def _one_hot(self, class_idx: torch.Tensor) -> torch.Tensor:
        classes = torch.arange(self.c_dim, device=class_idx.device)
        return (class_idx.reshape(-1, 1) == classes.reshape(1, -1)).to(torch.float32)

    def _synthesis(self, ws: torch.Tensor, transform: torch.Tensor | None) -> torch.Tensor:
        kwargs: dict = {"noise_mode": "const"}
        if transform is not None:
            kwargs["transform"] = transform
        if not self.is_stylegan3:  # StyleGAN2: scale activations, not weights, so kernels are batch-independent
            kwargs["fused_modconv"] = False
        img = self.G.synthesis(ws, **kwargs)
        size = self.options.resolution
        longer = max(img.shape[-2:])
        if size is not None and size != longer:  # the longer side becomes `size`; a non-square image keeps its ratio
            out_hw = (round(img.shape[-2] * size / longer), round(img.shape[-1] * size / longer))
            img = F.interpolate(img, size=out_hw, mode="bilinear", align_corners=False, antialias=size < longer)
        return img

    def forward(self, *inputs: torch.Tensor) -> torch.Tensor:
        """Tensors in the order of :meth:`input_names`."""
        named = dict(zip(self.input_names(), inputs, strict=True))
        transform = named.get("transform")
        if self.options.part == "synthesis":
            return self._synthesis(named["ws"], transform)
        c = self._one_hot(named["class_idx"]) if self.c_dim else None
        ws = self.G.mapping(named["z"], c)
        ws = self.G.mapping.truncate(ws, c, named["truncation_psi"].reshape(()), self.options.truncation_cutoff)
        if self.options.part == "mapping":
            return ws
        return self._synthesis(ws, transform)


def example_inputs(wrapper: ExportableGenerator, batch: int, seed: int = 0) -> tuple[torch.Tensor, ...]:
    """Inputs for ``wrapper`` (seeded normal latents, classes ``0, 1, ...``, psi 0.7, small rotations)."""
    gen = torch.Generator().manual_seed(seed)
    G = wrapper.G
    out = []
    for name in wrapper.input_names():
        if name == "z":
            out.append(torch.randn(batch, G.z_dim, generator=gen))
        elif name == "class_idx":
            out.append(torch.arange(batch, dtype=torch.int64) % wrapper.c_dim)
        elif name == "truncation_psi":
            out.append(torch.tensor([0.7]))
        elif name == "ws":
            with torch.no_grad():
                c = wrapper._one_hot(torch.arange(batch) % wrapper.c_dim) if wrapper.c_dim else None
                out.append(G.mapping(torch.randn(batch, G.z_dim, generator=gen), c))
        elif name == "transform":
            angle = torch.linspace(0.0, 0.3, batch)
            m = torch.zeros(batch, 3, 3)
            m[:, 0, 0], m[:, 0, 1], m[:, 1, 0], m[:, 1, 1] = angle.cos(), -angle.sin(), angle.sin(), angle.cos()
            m[:, 0, 2], m[:, 2, 2] = 0.1, 1.0
            out.append(m)
    return tuple(out)


def export_generator(G: Network, path: str | os.PathLike, options: ExportOptions) -> Path:
    """Write ``G`` as ONNX or TorchScript to ``path`` (atomically).

    Returns:
        The path written.

    Raises:
        UserInputError: bad options, a network that cannot be exported, or ``onnx`` missing for ONNX export
            (``pip install styleforge[onnx]``).
    """
    wrapper = ExportableGenerator(G, options).eval()
    inputs = example_inputs(wrapper, options.batch_size)
    out = Path(path)
    out.parent.mkdir(parents=True, exist_ok=True)
    if options.format == "torchscript":
        with torch.no_grad(), warnings.catch_warnings():
            warnings.simplefilter("ignore")  # tracer notices about shape checks turned into constants
            traced = torch.jit.trace(wrapper, inputs, check_trace=False)
        with atomic_path(out) as tmp:
            torch.jit.save(traced, str(tmp))
        return out
    try:
        import onnx  # noqa: F401  (torch.onnx needs both to write the file)
        import onnxscript  # noqa: F401
    except ImportError:
        raise UserInputError(
            "ONNX export needs the onnx and onnxscript packages: pip install 'styleforge[onnx]'."
        ) from None
    names = wrapper.input_names()
    output = "ws" if options.part == "mapping" else "img"
    dynamic = None
    if options.dynamic_batch:
        batch = torch.export.Dim("batch", min=1)
        dynamic = (tuple({0: batch} if n != "truncation_psi" else None for n in names),)  # forward(*inputs)
    # torch.onnx reports its steps, missing torchvision ops and tracer notices: keep the console to our own lines
    registration_log = logging.getLogger("torch.onnx._internal.exporter._registration")
    level = registration_log.level
    registration_log.setLevel(logging.ERROR)
    try:
        with torch.no_grad(), atomic_path(out) as tmp, warnings.catch_warnings():
            warnings.simplefilter("ignore")
            program = torch.onnx.export(wrapper, inputs, input_names=names, output_names=[output],
                                        dynamic_shapes=dynamic, opset_version=ONNX_OPSET, dynamo=True,
                                        optimize=OPTIMIZE, external_data=False, verbose=False)
            program.save(str(tmp), external_data=False)
    finally:
        registration_log.setLevel(level)
    return out


def run_exported(path: str | os.PathLike, options: ExportOptions, inputs: tuple[torch.Tensor, ...]) -> torch.Tensor:
    """Run an exported file: ONNX with onnxruntime (CPU), TorchScript with ``torch.jit.load``.

    Raises:
        ImportError: onnxruntime is not installed (ONNX only).
    """
    if options.format == "torchscript":
        module = torch.jit.load(str(path), map_location="cpu")
        with torch.no_grad():
            return module(*inputs)
    import onnxruntime

    so = onnxruntime.SessionOptions()
    so.log_severity_level = ORT_LOG_ERRORS_ONLY
    session = onnxruntime.InferenceSession(str(path), so, providers=["CPUExecutionProvider"])
    feed = {spec.name: x.numpy() for spec, x in zip(session.get_inputs(), inputs, strict=True)}
    return torch.from_numpy(session.run(None, feed)[0])


def check_export(G: Network, path: str | os.PathLike, options: ExportOptions, seed: int = 1) -> float | None:
    """Max absolute difference between the exported file and PyTorch on seeded inputs (another batch size when
    the batch is dynamic); ``None`` when onnxruntime is missing."""
    wrapper = ExportableGenerator(G, options).eval()
    batch = options.batch_size + 1 if options.dynamic_batch else options.batch_size
    inputs = example_inputs(wrapper, batch, seed=seed)
    try:
        got = run_exported(path, options, inputs)
    except ImportError:
        return None
    with torch.no_grad():
        want = wrapper(*inputs)
    return float((got - want).abs().max())
