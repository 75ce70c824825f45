"""VGG16 feature networks: fc2 embeddings for precision/recall and LPIPS distances for the perceptual path
length.

Papers:
    Simonyan & Zisserman, "Very Deep Convolutional Networks for Large-Scale Image Recognition", ICLR
    2015 (VGG16).
    Kynkäänniemi et al., "Improved Precision and Recall Metric for Assessing Generative Models", NeurIPS 2019
    (k-NN manifolds in the 4096-d fc2 space of VGG16).
    Zhang et al., "The Unreasonable Effectiveness of Deep Features as a Perceptual Metric", CVPR 2018 (LPIPS:
    unit-normalised activations of relu1_2, relu2_2, relu3_3, relu4_3, relu5_3, weighted per channel by
    learned non-negative linear layers, averaged over space and summed over layers).
    Karras et al., "A Style-Based Generator Architecture for Generative Adversarial Networks", CVPR 2019
    (PPL).

Weights (user-supplied, never downloaded): torchvision's ``vgg16-397923af.pth`` state dict (BSD-3 code,
weights from the VGG authors, CC BY 4.0) and the LPIPS calibration layers ``vgg.pth`` of the ``lpips`` package
(BSD-2), keys ``lin{0..4}.model.1.weight`` of shape ``[1, C, 1, 1]``; or, for LPIPS alone, NVIDIA's
``vgg16.pt`` TorchScript archive (the file of the official projector and PPL; VGG16 and the LPIPS weights in one
file, parameters ``layers.conv{1..13}.*``, ``layers.fc{1..3}.*`` and ``lpips{0..4}``), whose parameters are
read and whose code is never run.
"""

from __future__ import annotations

import os
import re
import zipfile
from dataclasses import dataclass
from pathlib import Path

import torch
import torch.nn as nn
import torch.nn.functional as F

from styleforge.feature_nets._weights import load_state_file as _load_state
from styleforge.feature_nets._weights import strict_load as _strict_load
from styleforge.utils.errors import UserInputError
from styleforge.utils.io import find_weight_file

__all__ = [
    "VGG16Config",
    "VGG16",
    "LPIPSVGG16",
    "load_vgg16",
    "load_lpips_vgg16",
    "load_lpips_vgg16_nvidia",
    "lpips_vgg16_state_from_nvidia",
    "load_vgg16_nvidia",
    "vgg16_state_from_nvidia",
    "is_nvidia_vgg16_file",
    "vgg16_state_dict_from_torchvision",
    "lpips_lin_from_state_dict",
    "VGG16_FILENAMES",
    "LPIPS_FILENAMES",
]

# (name, out channels) of the 13 convolutions; "M" is a 2x2 max pool.
_LAYOUT = (
    ("conv1_1", 64),
    ("conv1_2", 64),
    "M",
    ("conv2_1", 128),
    ("conv2_2", 128),
    "M",
    ("conv3_1", 256),
    ("conv3_2", 256),
    ("conv3_3", 256),
    "M",
    ("conv4_1", 512),
    ("conv4_2", 512),
    ("conv4_3", 512),
    "M",
    ("conv5_1", 512),
    ("conv5_2", 512),
    ("conv5_3", 512),
    "M",
)
LPIPS_TAPS = ("conv1_2", "conv2_2", "conv3_3", "conv4_3", "conv5_3")  # ReLU outputs LPIPS compares
LPIPS_CHANNELS = (64, 128, 256, 512, 512)
# LPIPS input normalisation of [-1, 1] images: (x - shift) / scale per RGB channel.
LPIPS_SHIFT = (-0.030, -0.088, -0.188)
LPIPS_SCALE = (0.458, 0.448, 0.450)
LPIPS_NORM_EPS = 1e-10  # eps of the channel-wise unit normalisation
IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)
EMBED_SIZE = 224  # VGG16 input resolution for the fc2 embedding
FC_DIM = 4096

VGG16_ENV_VAR = "STYLEFORGE_VGG16"
LPIPS_ENV_VAR = "STYLEFORGE_LPIPS"
VGG16_FILENAMES = ("vgg16-397923af.pth", "vgg16.pth")
NVIDIA_LPIPS_ENV_VAR = "STYLEFORGE_VGG16_LPIPS"
NVIDIA_LPIPS_FILENAMES = ("vgg16.pt", "vgg16.pkl")
LPIPS_FILENAMES = ("lpips_vgg.pth", "vgg.pth")
_VGG_WHERE = (
    "torchvision's ImageNet VGG16 weights are the file vgg16-397923af.pth "
    "(download.pytorch.org/models/vgg16-397923af.pth)."
)
_NVIDIA_WHERE = (
    "NVIDIA's VGG16-LPIPS TorchScript is the file metrics/vgg16.pt of the stylegan2-ada-pytorch release "
    "(nvlabs-fi-cdn.nvidia.com/stylegan2-ada-pytorch/pretrained/metrics/vgg16.pt)."
)
_LPIPS_WHERE = (
    "The LPIPS calibration weights are lpips/weights/v0.1/vgg.pth in the `lpips` package "
    "(GitHub: richzhang/PerceptualSimilarity)."
)


@dataclass(frozen=True)
class VGG16Config:
    """Options of :class:`VGG16`.

    Attributes:
        with_classifier: build fc6, fc7 (the 4096-d "fc2" embedding) and fc8; ``False``: convolutions only.
        num_classes: size of fc8.
    """

    with_classifier: bool = True
    num_classes: int = 1000


class VGG16(nn.Module):
    """VGG16 (configuration D). Convolutions ``conv{b}_{i}`` (3x3, padding 1, ReLU), classifier ``fc6``,
    ``fc7``, ``fc8``. Inputs to :meth:`conv_taps` / :meth:`fc_features` are ImageNet-normalised ``[N, 3, H,
    W]`` floats."""

    def __init__(self, config: VGG16Config | None = None) -> None:
        super().__init__()
        self.config = config or VGG16Config()
        self.convs = nn.ModuleDict()
        in_ch = 3
        for item in _LAYOUT:
            if item == "M":
                continue
            name, out_ch = item
            self.convs[name] = nn.Conv2d(in_ch, out_ch, 3, padding=1)
            in_ch = out_ch
        if self.config.with_classifier:
            self.fc6 = nn.Linear(512 * 7 * 7, FC_DIM)
            self.fc7 = nn.Linear(FC_DIM, FC_DIM)
            self.fc8 = nn.Linear(FC_DIM, self.config.num_classes)
        self.weights_file = ""  # set by the loaders
        # resize of embed(): "bilinear_antialias" (torchvision weights) or "tf_bilinear" (NVIDIA's vgg16.pt
        # resizes like TensorFlow 1's resize_bilinear, as its FID Inception does; set by load_vgg16_nvidia)
        self.resize_mode = "bilinear_antialias"

    def conv_taps(self, x: torch.Tensor, taps: tuple[str, ...] = LPIPS_TAPS) -> list[torch.Tensor]:
        """ReLU outputs of the named convolutions, in network order (stops after the last one requested)."""
        out = []
        last = max(i for i, item in enumerate(_LAYOUT) if item != "M" and item[0] in taps)
        for item in _LAYOUT[: last + 1]:
            if item == "M":
                x = F.max_pool2d(x, 2)
                continue
            x = F.relu(self.convs[item[0]](x))
            if item[0] in taps:
                out.append(x)
        return out

    def fc_features(self, x: torch.Tensor) -> torch.Tensor:
        """fc7 ("fc2") activations after ReLU, ``[N, 4096]``, of ImageNet-normalised 224x224 inputs."""
        if not self.config.with_classifier:
            raise UserInputError("This VGG16 was built without its classifier; fc2 features need fc6 and fc7.")
        for item in _LAYOUT:
            if item == "M":
                x = F.max_pool2d(x, 2)
            else:
                x = F.relu(self.convs[item[0]](x))
        x = F.adaptive_avg_pool2d(x, 7).flatten(1)
        return F.relu(self.fc7(F.relu(self.fc6(x))))

    def embed(self, images: torch.Tensor) -> torch.Tensor:
        """Precision/recall embedding of ``[N, C, H, W]`` pixels in [0, 255]: resized to 224x224 (bilinear
        with anti-aliasing, or TensorFlow's bilinear for NVIDIA's weights: :attr:`resize_mode`),
        ImageNet-normalised, fc2 features ``[N, 4096]``."""
        return self.fc_features(self.embed_input(images))

    def embed_input(self, images: torch.Tensor) -> torch.Tensor:
        """The network input of :meth:`embed`: ``[N, 3, 224, 224]`` ImageNet-normalised floats."""
        x = images.to(dtype=torch.float32, device=self.convs["conv1_1"].weight.device) / 255.0
        if x.shape[1] == 1:
            x = x.repeat(1, 3, 1, 1)
        if x.shape[2:] != (EMBED_SIZE, EMBED_SIZE) and self.resize_mode == "tf_bilinear":
            from styleforge.feature_nets.inception import tf_bilinear_resize

            x = tf_bilinear_resize(x, (EMBED_SIZE, EMBED_SIZE))
        elif x.shape[2:] != (EMBED_SIZE, EMBED_SIZE):
            x = F.interpolate(x, size=(EMBED_SIZE, EMBED_SIZE), mode="bilinear", align_corners=False, antialias=True)
        mean = x.new_tensor(IMAGENET_MEAN).view(1, 3, 1, 1)
        std = x.new_tensor(IMAGENET_STD).view(1, 3, 1, 1)
        return (x - mean) / std

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        return self.embed(images)


class LPIPSVGG16(nn.Module):
    """LPIPS (VGG variant): ``d(x0, x1) = sum_l mean_hw( sum_c w_lc (f̂_l(x0) - f̂_l(x1))_c^2 )`` with ``f̂``
    the channel-wise unit-normalised ReLU activations of the five taps and ``w_l >= 0`` the calibration
    weights.

    :meth:`embed` returns a flat vector per image whose squared Euclidean distance equals that LPIPS distance,
    which is how the PPL metric evaluates it (``||e(x0) - e(x1)||^2 / eps^2``). Inputs are ``[N, 3, H, W]`` in
    [-1, 1].

    Parameters: the convolutions of :class:`VGG16` (``vgg.convs.*``) and ``lin.{0..4}`` of shape ``[C_l]``.
    """

    def __init__(self) -> None:
        super().__init__()
        self.vgg = VGG16(VGG16Config(with_classifier=False))
        self.lin = nn.ParameterList([nn.Parameter(torch.ones(c) / c) for c in LPIPS_CHANNELS])
        self.weights_file = ""  # set by the loaders

    def embed(self, images: torch.Tensor) -> torch.Tensor:
        """``[N, 3, H, W]`` images in [-1, 1] (C = 1 is repeated) -> ``[N, D]`` LPIPS embedding."""
        x = images.to(dtype=torch.float32, device=self.lin[0].device)
        if x.shape[1] == 1:
            x = x.repeat(1, 3, 1, 1)
        shift = x.new_tensor(LPIPS_SHIFT).view(1, 3, 1, 1)
        scale = x.new_tensor(LPIPS_SCALE).view(1, 3, 1, 1)
        parts = []
        for feat, w in zip(self.vgg.conv_taps((x - shift) / scale), self.lin, strict=True):
            norm = feat.square().sum(dim=1, keepdim=True).sqrt()
            unit = feat / (norm + LPIPS_NORM_EPS)
            h, wd = feat.shape[2:]
            parts.append((unit * (w.clamp(min=0).sqrt().view(1, -1, 1, 1) / (h * wd) ** 0.5)).flatten(1))
        return torch.cat(parts, dim=1)

    def forward(self, x0: torch.Tensor, x1: torch.Tensor) -> torch.Tensor:
        """LPIPS distance ``[N]`` between two batches of [-1, 1] images."""
        return (self.embed(x0) - self.embed(x1)).square().sum(dim=1)


# ----------------------------------------------------------------------------------------------------
# Weight files

_TV_CONV_INDEX = (
    0,
    2,
    5,
    7,
    10,
    12,
    14,
    17,
    19,
    21,
    24,
    26,
    28,
)  # torchvision features.<i> of the 13 convolutions
_TV_FC = {"classifier.0": "fc6", "classifier.3": "fc7", "classifier.6": "fc8"}


def vgg16_state_dict_from_torchvision(state: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """Map torchvision VGG16 keys (``features.<i>.weight``, ``classifier.<j>.bias``) to ours; every key must
    map."""
    conv_names = [item[0] for item in _LAYOUT if item != "M"]
    by_index = dict(zip(_TV_CONV_INDEX, conv_names, strict=True))
    out: dict[str, torch.Tensor] = {}
    unknown = []
    for k, v in state.items():
        m = re.fullmatch(r"features\.(\d+)\.(weight|bias)", k)
        if m and int(m.group(1)) in by_index:
            out[f"convs.{by_index[int(m.group(1))]}.{m.group(2)}"] = v
            continue
        m = re.fullmatch(r"(classifier\.\d+)\.(weight|bias)", k)
        if m and m.group(1) in _TV_FC:
            out[f"{_TV_FC[m.group(1)]}.{m.group(2)}"] = v
            continue
        unknown.append(k)
    if unknown:
        raise UserInputError(f"Not a torchvision VGG16 state dict: unexpected key(s) {unknown[:3]}.")
    return out


def lpips_lin_from_state_dict(state: dict[str, torch.Tensor]) -> list[torch.Tensor]:
    """The five LPIPS calibration vectors ``[C_l]`` from an ``lpips`` ``vgg.pth`` (``lin{l}.model.1.weight``,
    ``[1, C_l, 1, 1]``; the ``lin{l}.model.0`` dropout has no weights)."""
    out = []
    for layer, ch in enumerate(LPIPS_CHANNELS):
        key = f"lin{layer}.model.1.weight"
        if key not in state:
            raise UserInputError(f"Not an LPIPS VGG weight file: key {key!r} missing (found {sorted(state)[:5]}).")
        w = state[key]
        if tuple(w.shape) != (1, ch, 1, 1):
            raise UserInputError(f"LPIPS {key} has shape {tuple(w.shape)}, expected (1, {ch}, 1, 1).")
        out.append(w.reshape(ch))
    extra = sorted(set(state) - {f"lin{i}.model.1.weight" for i in range(len(LPIPS_CHANNELS))})
    if extra:
        raise UserInputError(f"LPIPS weight file has unexpected key(s) {extra[:3]}.")
    return out


def load_vgg16(path: str | os.PathLike | None = None, device: torch.device | str = "cpu") -> VGG16:
    """VGG16 with classifier from a torchvision state dict found by ``find_weight_file`` (explicit ``path``,
    ``$STYLEFORGE_VGG16``, ``cache_dir('weights')``)."""
    file = find_weight_file("VGG16", VGG16_FILENAMES, explicit=path, env_var=VGG16_ENV_VAR, where_to_get=_VGG_WHERE)
    net = VGG16()
    _strict_load(net, vgg16_state_dict_from_torchvision(_load_state(file)), file)
    net.weights_file = str(file)
    return net.eval().requires_grad_(False).to(device)


def load_lpips_vgg16(
    vgg_path: str | os.PathLike | None = None,
    lin_path: str | os.PathLike | None = None,
    device: torch.device | str = "cpu",
) -> LPIPSVGG16:
    """LPIPS-VGG16 from torchvision VGG16 weights (classifier ignored) plus the LPIPS ``vgg.pth``
    calibration."""
    vgg_file = find_weight_file(
        "VGG16", VGG16_FILENAMES, explicit=vgg_path, env_var=VGG16_ENV_VAR, where_to_get=_VGG_WHERE
    )
    lin_file = find_weight_file(
        "LPIPS (VGG)", LPIPS_FILENAMES, explicit=lin_path, env_var=LPIPS_ENV_VAR, where_to_get=_LPIPS_WHERE
    )
    net = LPIPSVGG16()
    conv_state = {
        k: v for k, v in vgg16_state_dict_from_torchvision(_load_state(vgg_file)).items() if k.startswith("convs.")
    }
    _strict_load(net.vgg, conv_state, vgg_file)
    with torch.no_grad():
        for p, w in zip(net.lin, lpips_lin_from_state_dict(_load_state(lin_file)), strict=True):
            p.copy_(w)
    net.weights_file = f"{vgg_file}+{lin_file}"
    return net.eval().requires_grad_(False).to(device)


def lpips_vgg16_state_from_nvidia(state: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """Map the parameters of NVIDIA's ``vgg16.pt`` to an :class:`LPIPSVGG16` state dict.

    ``layers.conv{k}.{weight,bias}`` (k = 1..13, network order) become ``vgg.convs.<name>.*`` and ``lpips{l}``
    (C_l values, any shape) ``lin.{l}``; the classifier ``layers.fc{1..3}.*`` is not used by LPIPS and is dropped.

    Raises:
        UserInputError: an unknown key, a missing key or an LPIPS weight of the wrong size.
    """
    conv_names = [item[0] for item in _LAYOUT if item != "M"]
    out: dict[str, torch.Tensor] = {}
    unknown = []
    for k, v in state.items():
        m = re.fullmatch(r"layers\.conv(\d+)\.(weight|bias)", k)
        if m and 1 <= int(m.group(1)) <= len(conv_names):
            out[f"vgg.convs.{conv_names[int(m.group(1)) - 1]}.{m.group(2)}"] = v
            continue
        m = re.fullmatch(r"lpips(\d)", k)
        if m and int(m.group(1)) < len(LPIPS_CHANNELS):
            layer = int(m.group(1))
            if v.numel() != LPIPS_CHANNELS[layer]:
                raise UserInputError(f"{k} has {v.numel()} values, expected {LPIPS_CHANNELS[layer]}.")
            out[f"lin.{layer}"] = v.reshape(-1)
            continue
        if re.fullmatch(r"layers\.fc\d\.(weight|bias)", k):
            continue
        unknown.append(k)
    if unknown:
        raise UserInputError(f"Not NVIDIA's VGG16-LPIPS network: unexpected key(s) {unknown[:3]}.")
    return out


def _nvidia_archive_state(path: str | os.PathLike | None) -> tuple[Path, dict[str, torch.Tensor]]:
    """The file found for NVIDIA's ``vgg16.pt`` and the parameters stored in its TorchScript archive (read as
    data; the archive's code is never run)."""
    from styleforge.feature_nets.inception import _embedded_zip, _is_torchscript, _torchscript_state

    file = find_weight_file(
        "VGG16-LPIPS (NVIDIA)",
        NVIDIA_LPIPS_FILENAMES,
        explicit=path,
        env_var=NVIDIA_LPIPS_ENV_VAR,
        where_to_get=_NVIDIA_WHERE,
    )
    data = file.read_bytes()
    archive = data if _is_torchscript(data) else _embedded_zip(data)
    if archive is None or not _is_torchscript(archive):
        raise UserInputError(f"{file}: not a TorchScript archive; expected NVIDIA's metrics/vgg16.pt.")
    return file, _torchscript_state(archive)


def is_nvidia_vgg16_file(path: str | os.PathLike) -> bool:
    """Whether ``path`` is a TorchScript archive (NVIDIA's ``vgg16.pt``) rather than a torchvision state dict (the
    zip directory is read; ``torch.save`` zips hold no ``code/``)."""
    try:
        with zipfile.ZipFile(path) as zf:
            return any(n.endswith("constants.pkl") or "/code/" in n for n in zf.namelist())
    except (zipfile.BadZipFile, OSError):
        return False


def load_lpips_vgg16_nvidia(path: str | os.PathLike | None = None, device: torch.device | str = "cpu") -> LPIPSVGG16:
    """LPIPS-VGG16 from NVIDIA's ``vgg16.pt`` TorchScript (explicit ``path``, ``$STYLEFORGE_VGG16_LPIPS``,
    ``cache_dir('weights')``); a ``.pkl`` that embeds the same archive works too. Only the parameters are read."""
    file, state = _nvidia_archive_state(path)
    net = LPIPSVGG16()
    _strict_load(net, lpips_vgg16_state_from_nvidia(state), file)
    net.weights_file = str(file)
    return net.eval().requires_grad_(False).to(device)


#: NVIDIA's classifier layers -> ours (``layers.fc2`` is the 4096-d "fc2" embedding of precision/recall)
_NVIDIA_FC = {"1": "fc6", "2": "fc7", "3": "fc8"}


def vgg16_state_from_nvidia(state: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """Map the parameters of NVIDIA's ``vgg16.pt`` to a :class:`VGG16` state dict (with classifier): the
    convolutions as in :func:`lpips_vgg16_state_from_nvidia`, ``layers.fc{1,2,3}`` -> ``fc6``, ``fc7``, ``fc8``;
    the LPIPS weights are not part of the plain network and are dropped."""
    out = {k[len("vgg.") :]: v for k, v in lpips_vgg16_state_from_nvidia(state).items() if k.startswith("vgg.")}
    for k, v in state.items():
        m = re.fullmatch(r"layers\.fc(\d)\.(weight|bias)", k)
        if m and m.group(1) in _NVIDIA_FC:
            out[f"{_NVIDIA_FC[m.group(1)]}.{m.group(2)}"] = v
    return out


def load_vgg16_nvidia(path: str | os.PathLike | None = None, device: torch.device | str = "cpu") -> VGG16:
    """VGG16 with classifier (precision/recall's fc2 embedding) from NVIDIA's ``vgg16.pt``, found as
    :func:`load_lpips_vgg16_nvidia` finds it. Only the parameters are read. Its :meth:`VGG16.embed` resizes to 224
    with TensorFlow 1's bilinear resize (no anti-aliasing), the resize of NVIDIA's file (as ported in public
    re-implementations; the file's own code is never run), then normalises with the ImageNet mean and std."""
    file, state = _nvidia_archive_state(path)
    net = VGG16()
    _strict_load(net, vgg16_state_from_nvidia(state), file)
    net.weights_file = str(file)
    net.resize_mode = "tf_bilinear"
    return net.eval().requires_grad_(False).to(device)
