"""Saving and loading networks: styleforge's own format and NVIDIA's official pickles.

Our format is a directory::

    run/
      config.json          {"format": "styleforge", "styleforge_version": ..., "networks": {name: describe()},
      "extra": {...}} model.safetensors    tensors "<name>.<state-dict key>", e.g. "G_ema.synthesis.b4.const"

Networks are rebuilt from ``config.json`` (never unpickled) and their weights loaded strictly: a missing or an
unexpected tensor is an error that lists them. :func:`load` also accepts an official training pickle, which is
read without executing anything and converted (:mod:`styleforge.convert.official`), and ``builtin:NAME`` for
the networks shipped in ``styleforge/assets/NAME/``.

It also reads, without executing anything: a training run directory (its newest ``network-snapshot-*``), a
``training_state.pt`` (its ``G_ema``, ``G`` and ``D``, with the architecture of a snapshot of the same run) and
rosinality/stylegan2-pytorch checkpoints (:mod:`styleforge.convert.rosinality`); those ``.pt`` files are read
with ``torch.load(weights_only=True)``.
"""

from __future__ import annotations

import json
import os
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch

from styleforge.models.base import Network, network_from_description
from styleforge.utils.errors import UserInputError
from styleforge.utils.io import atomic_write_bytes, atomic_write_json

__all__ = ["LoadedNetworks", "save", "load", "resolve_path", "CONFIG_NAME", "WEIGHTS_NAME", "FORMAT_NAME"]

CONFIG_NAME = "config.json"
WEIGHTS_NAME = "model.safetensors"
#: value of the ``format`` field of our config.json
FORMAT_NAME = "styleforge"
#: prefix of the built-in networks shipped inside the package
BUILTIN_PREFIX = "builtin:"
#: names under which networks are stored, in the order they are written
NETWORK_NAMES = ("G", "D", "G_ema")
#: the first bytes of a pickle of protocol 2 or newer (PROTO opcode)
_PICKLE_MAGIC = b"\x80"
#: the first bytes of a zip archive (torch.save's default format)
_ZIP_MAGIC = b"PK\x03\x04"
#: how many missing/unexpected keys an error lists before summarising
_MAX_LISTED = 10


@dataclass
class LoadedNetworks:
    """What :func:`load` returns.

    Attributes:
        G, D, G_ema: the networks present in the file (``None`` when absent), in eval mode, on the requested
            device.
        config: the parsed ``config.json`` (for an official pickle: a summary of what was converted).
        source: ``"styleforge"``, ``"official"``, ``"training_state"`` or ``"rosinality"``.
        augment_p: the ADA augmentation probability ``p`` stored with the networks, if any.
        training_set_kwargs: the dataset options stored with an official snapshot (or in ``extra``), if any.
        path: the file or directory that was read.
        skipped: ``{name: reason}`` of networks in an official snapshot that styleforge cannot convert and
            left as ``None`` (StyleGAN-XL's projected discriminator); empty otherwise.
    """

    G: Network | None
    D: Network | None
    G_ema: Network | None
    config: dict[str, Any] = field(default_factory=dict)
    source: str = FORMAT_NAME
    augment_p: float | None = None
    training_set_kwargs: dict[str, Any] | None = None
    path: str = ""
    skipped: dict[str, str] = field(default_factory=dict)

    @property
    def generator(self) -> Network:
        """The generator to sample from: ``G_ema`` when present, else ``G``."""
        net = self.G_ema if self.G_ema is not None else self.G
        if net is None:
            raise UserInputError(f"{self.path or 'The file'} holds no generator (only a discriminator).")
        return net

    def networks(self) -> dict[str, Network]:
        """``{name: network}`` of the networks present."""
        return {n: net for n in NETWORK_NAMES if (net := getattr(self, n)) is not None}


# ------------------------------------------------------------------------------------------------------------
# Saving.
# ------------------------------------------------------------------------------------------------------------


def _check_json(extra: dict[str, Any]) -> dict[str, Any]:
    try:
        return json.loads(json.dumps(extra))
    except (TypeError, ValueError) as e:
        raise UserInputError(
            f"save(extra=...) must be JSON-serialisable (numbers, strings, lists, dicts): {e}"
        ) from e


def save(
    path: str | os.PathLike,
    G: Network | None = None,
    D: Network | None = None,
    G_ema: Network | None = None,
    extra: dict[str, Any] | None = None,
) -> Path:
    """Write networks to the directory ``path`` (created if needed) as ``config.json`` +
    ``model.safetensors``.

    Both files are written atomically, the weights first, so an interrupted save never leaves a
    ``config.json`` that points at incomplete weights.

    Args:
        path: output directory.
        G, D, G_ema: the networks to store (at least one).
        extra: JSON-serialisable metadata kept in ``config.json`` under ``"extra"`` (e.g. ``augment_p``).

    Returns:
        The directory written.
    """
    from safetensors.torch import save as safetensors_bytes

    import styleforge

    nets = {name: net for name, net in (("G", G), ("D", D), ("G_ema", G_ema)) if net is not None}
    if not nets:
        raise UserInputError("save() needs at least one of G, D, G_ema.")
    for name, net in nets.items():
        if not isinstance(net, Network):
            raise UserInputError(f"save(): {name} is a {type(net).__name__}, not a styleforge Network.")
    out = Path(path)
    if out.exists() and not out.is_dir():
        raise UserInputError(
            f"{out} exists and is not a directory; our format is a directory. Choose another path."
        )
    tensors: dict[str, torch.Tensor] = {}
    for name, net in nets.items():
        for key, value in net.state_dict().items():
            # clone: safetensors refuses tensors that share memory, and this detaches from the live network
            tensors[f"{name}.{key}"] = value.detach().to("cpu").contiguous().clone()
    config = {
        "format": FORMAT_NAME,
        "styleforge_version": styleforge.__version__,
        "networks": {name: net.describe() for name, net in nets.items()},
        "extra": _check_json(extra or {}),
    }
    out.mkdir(parents=True, exist_ok=True)
    atomic_write_bytes(out / WEIGHTS_NAME, safetensors_bytes(tensors, metadata={"format": "pt"}))
    atomic_write_json(out / CONFIG_NAME, config)
    return out


# ------------------------------------------------------------------------------------------------------------
# Loading.
# ------------------------------------------------------------------------------------------------------------


def _assets_dir() -> Path:
    return Path(__file__).resolve().parent / "assets"


#: the training loop's names: snapshot directories ``network-snapshot-<kimg>`` and the full training state
SNAPSHOT_PREFIX = "network-snapshot-"
STATE_NAME = "training_state.pt"
_SNAPSHOT_TAIL = re.compile(r"(\d+)(?:\.(\d{3}))?")


def _snapshot_nimg(directory: Path) -> int | None:
    """The image count a finished snapshot directory was written at (``None``: unfinished or unreadable)."""
    try:
        config = json.loads((directory / CONFIG_NAME).read_text(encoding="utf-8"))
        return int(config["extra"]["cur_nimg"])
    except (OSError, ValueError, KeyError, TypeError, UnicodeDecodeError):
        return None


def snapshot_path(run_dir: str | os.PathLike, cur_nimg: int) -> Path:
    """Where the training loop writes the snapshot taken at image ``cur_nimg``.

    The name is ``network-snapshot-<kimg>`` (whole kimg, as the official loops name them). When that name already
    holds a finished snapshot of another image count (two snapshots within one kimg: ticks under 1 kimg, a stage
    end followed by Ctrl-C), the new one is ``network-snapshot-<kimg>.<rest>`` (``000016.936`` for image 16,936),
    so a finished snapshot is never overwritten by a different network. The same count (a snapshot written again
    after a resume) keeps its name.
    """
    run_dir = Path(run_dir)
    base = run_dir / f"{SNAPSHOT_PREFIX}{cur_nimg // 1000:06d}"
    if not (base / CONFIG_NAME).is_file() or _snapshot_nimg(base) in (cur_nimg, None):
        return base
    return run_dir / f"{SNAPSHOT_PREFIX}{cur_nimg // 1000:06d}.{cur_nimg % 1000:03d}"


def _snapshots(run_dir: Path) -> list[Path]:
    """The network snapshots of a run directory, oldest first (by the kimg in their names; ``<kimg>`` before the
    ``<kimg>.<rest>`` names written after it in the same kimg)."""
    found = []
    for d in run_dir.glob(SNAPSHOT_PREFIX + "*"):
        m = _SNAPSHOT_TAIL.fullmatch(d.name[len(SNAPSHOT_PREFIX) :])
        if m and d.is_dir() and (d / CONFIG_NAME).is_file():
            found.append(((int(m[1]), -1 if m[2] is None else int(m[2])), d))
    return [d for _, d in sorted(found)]


def _has_networks(directory: Path) -> bool:
    try:
        config = json.loads((directory / CONFIG_NAME).read_text(encoding="utf-8"))
    except (OSError, json.JSONDecodeError, UnicodeDecodeError):
        return True  # let the loader report the broken file
    return not isinstance(config, dict) or "networks" in config


def resolve_path(spec: str | os.PathLike) -> tuple[str, Path]:
    """Work out what ``spec`` is.

    A training run directory resolves to its newest snapshot (``network-snapshot-*``), or to its
    ``training_state.pt`` when it has no snapshot.

    Returns:
        ``("styleforge", directory)``, ``("official", pickle file)`` or ``("torch", .pt file)`` (a training state
        or a rosinality checkpoint).

    Raises:
        UserInputError: missing file, unknown built-in, or a file that is neither format.
    """
    text = str(spec)
    if text.startswith(BUILTIN_PREFIX):
        name = text[len(BUILTIN_PREFIX) :]
        root = _assets_dir()
        target = root / name
        if not name or not (target / CONFIG_NAME).is_file():
            known = (
                sorted(p.name for p in root.iterdir() if (p / CONFIG_NAME).is_file()) if root.is_dir() else []
            )
            raise UserInputError(
                f"Unknown built-in network {text!r}; available: "
                f"{', '.join(BUILTIN_PREFIX + k for k in known) or 'none'}."
            )
        return FORMAT_NAME, target
    p = Path(text).expanduser()
    if not p.exists():
        raise UserInputError(
            f"{p} does not exist. Give a styleforge directory (with {CONFIG_NAME}), its {CONFIG_NAME} or "
            f"{WEIGHTS_NAME}, an official .pkl snapshot, or builtin:NAME."
        )
    if p.is_dir():
        if (p / CONFIG_NAME).is_file() and _has_networks(p):
            return FORMAT_NAME, p
        snapshots = _snapshots(p)
        if snapshots:
            return FORMAT_NAME, snapshots[-1]
        if (p / STATE_NAME).is_file():
            return "torch", p / STATE_NAME
        has_config = (p / CONFIG_NAME).is_file()
        what = f"a directory whose {CONFIG_NAME} holds no networks, with" if has_config else (
            f"a directory without {CONFIG_NAME} and with"
        )
        raise UserInputError(
            f"{p} is {what} no {SNAPSHOT_PREFIX}*/ snapshot or {STATE_NAME} either. Expected a saved styleforge "
            f"network (a directory with {CONFIG_NAME} + {WEIGHTS_NAME}), a training run directory (holding "
            f"{SNAPSHOT_PREFIX}NNNNNN/ or {STATE_NAME}), an official .pkl, a .pt checkpoint or builtin:NAME."
        )
    if p.name == CONFIG_NAME or p.suffix == ".safetensors":
        if not (p.parent / CONFIG_NAME).is_file():
            raise UserInputError(f"{p} has no {CONFIG_NAME} next to it; styleforge needs both files.")
        return FORMAT_NAME, p.parent
    with open(p, "rb") as f:
        head = f.read(4)
    if head.startswith(_PICKLE_MAGIC):
        return "official", p
    if head.startswith(_ZIP_MAGIC):
        return "torch", p
    raise UserInputError(
        f"{p}: unknown format. Expected an official .pkl snapshot, a styleforge directory, "
        f"its {CONFIG_NAME} or "
        f"{WEIGHTS_NAME}, or builtin:NAME."
    )


def _listed(keys: list[str]) -> str:
    more = f" (and {len(keys) - _MAX_LISTED} more)" if len(keys) > _MAX_LISTED else ""
    return ", ".join(keys[:_MAX_LISTED]) + more


def _load_styleforge(directory: Path) -> LoadedNetworks:
    from safetensors import SafetensorError
    from safetensors.torch import load_file

    try:
        config = json.loads((directory / CONFIG_NAME).read_text(encoding="utf-8"))
    except (json.JSONDecodeError, UnicodeDecodeError, RecursionError) as e:
        raise UserInputError(f"{directory / CONFIG_NAME} is not valid JSON: {type(e).__name__}: {e}") from e
    if not isinstance(config, dict) or not isinstance(config.get("networks"), dict) or not config["networks"]:
        raise UserInputError(
            f"{directory / CONFIG_NAME} has no 'networks' entry; it was not written by styleforge."
        )
    unknown = sorted(set(config["networks"]) - set(NETWORK_NAMES))
    if unknown:
        raise UserInputError(
            f"{directory / CONFIG_NAME}: unknown network name(s) {unknown}; expected {NETWORK_NAMES}."
        )
    weights = directory / WEIGHTS_NAME
    if not weights.is_file():
        raise UserInputError(
            f"{weights} is missing; a styleforge directory needs {CONFIG_NAME} and {WEIGHTS_NAME}."
        )
    try:
        tensors = load_file(str(weights), device="cpu")
    except (SafetensorError, OSError) as e:
        raise UserInputError(f"{weights} is not a readable safetensors file: {e}") from e
    nets: dict[str, Network] = {}
    claimed: set[str] = set()
    for name, desc in config["networks"].items():
        # The network is first built on the meta device (no memory) and checked against the file's tensors; only
        # a description whose tensors are all in the file is built for real, so a config.json declaring a huge
        # network is refused before allocating it.
        skeleton = _build_network(directory / CONFIG_NAME, name, desc, device="meta")
        prefix = name + "."
        state = {k[len(prefix) :]: v for k, v in tensors.items() if k.startswith(prefix)}
        claimed.update(prefix + k for k in state)
        expected = skeleton.state_dict()
        missing = [k for k in expected if k not in state]
        unexpected = [k for k in state if k not in expected]
        wrong = [
            f"{k} {tuple(state[k].shape)} vs {tuple(v.shape)}"
            for k, v in expected.items()
            if k in state and state[k].shape != v.shape
        ]
        if missing or unexpected or wrong:
            parts = []
            if missing:
                parts.append(f"missing tensors: {_listed(missing)}")
            if unexpected:
                parts.append(f"unexpected tensors: {_listed(unexpected)}")
            if wrong:
                parts.append(f"wrong shapes (file vs network): {_listed(wrong)}")
            raise UserInputError(
                f"{weights}: the weights of {name} do not match its config ({'; '.join(parts)}). "
                "The files may come "
                "from different saves or a different styleforge version."
            )
        _check_derived_size(directory / CONFIG_NAME, name, skeleton, weights)
        net = _build_network(directory / CONFIG_NAME, name, desc, device="cpu")
        net.load_state_dict(state, strict=True)
        nets[name] = net.eval()
    stray = sorted(set(tensors) - claimed)
    if stray:
        raise UserInputError(
            f"{weights}: tensors that belong to no network in {CONFIG_NAME}: {_listed(stray)}."
        )
    extra = config.get("extra") or {}
    return LoadedNetworks(
        G=nets.get("G"),
        D=nets.get("D"),
        G_ema=nets.get("G_ema"),
        config=config,
        source=FORMAT_NAME,
        augment_p=extra.get("augment_p"),
        training_set_kwargs=extra.get("training_set_kwargs"),
        path=str(directory),
    )


#: How many bytes of tensors a network may hold beyond those stored in its file (filters and other buffers derived
#: from the config), before a config.json is taken for a damaged or hostile one.
_DERIVED_BYTES_ALLOWED = 256 * 1024**2


def _build_network(config_path: Path, name: str, desc: Any, device: str) -> Network:
    """``network_from_description(desc)`` on ``device``; a description that cannot be built is a clear error."""
    if not isinstance(desc, dict):
        raise UserInputError(f"{config_path}: the description of {name} is a {type(desc).__name__}, not an object.")
    _check_config_numbers(config_path, name, desc.get("config"))
    try:
        with torch.device(device):
            return network_from_description(desc)
    except UserInputError:
        raise
    except Exception as e:  # noqa: BLE001  (constructors raise anything on nonsensical values)
        raise UserInputError(
            f"{config_path}: the configuration of {name} does not describe a network styleforge can build "
            f"({type(e).__name__}: {str(e).splitlines()[0] if str(e) else ''}). The file is damaged or was not "
            "written by styleforge."
        ) from None


#: The largest integer a network configuration holds (channel counts, dimensions, resolutions), and the most layers
#: of one kind (``mapping_layers``, ...): some constructors allocate or loop by these numbers before the meta device
#: can help (numpy bias initialisation, one Python object per layer).
_MAX_CONFIG_INT = 65536
_MAX_CONFIG_LAYERS = 256
#: StyleGAN3's filter design grows with its upsampling factors (``lrelu_upsampling`` 2 in the official configs).
_MAX_CONFIG_UPSAMPLING = 16


def _check_config_numbers(config_path: Path, name: str, config: Any, where: str = "") -> None:
    """Refuse integers in a network configuration that no real network has (a damaged or hostile config.json)."""
    if isinstance(config, dict):
        for key, value in config.items():
            _check_config_numbers(config_path, name, value, f"{where}.{key}" if where else str(key))
    elif isinstance(config, (list, tuple)):
        for i, value in enumerate(config):
            _check_config_numbers(config_path, name, value, f"{where}[{i}]")
    elif isinstance(config, int) and not isinstance(config, bool):
        limit = _MAX_CONFIG_LAYERS if where.endswith("layers") else \
            _MAX_CONFIG_UPSAMPLING if where.endswith("upsampling") else _MAX_CONFIG_INT
        if abs(config) > limit:
            raise UserInputError(
                f"{config_path}: {name}.{where} = {config} is beyond any network styleforge builds (at most "
                f"{limit}); the file is damaged. Refused before building the network."
            )


def _check_derived_size(config_path: Path, name: str, skeleton: Network, weights: Path) -> None:
    """Refuse a network whose non-stored tensors (derived buffers) would take far more memory than its file."""
    stored = set(skeleton.state_dict())
    derived = sum(t.numel() * t.element_size() for k, t in [*skeleton.named_parameters(), *skeleton.named_buffers()]
                  if k not in stored)
    if derived > _DERIVED_BYTES_ALLOWED:
        raise UserInputError(
            f"{config_path}: {name} would need {derived / 1024**2:,.0f} MB of derived buffers beyond the "
            f"{weights.stat().st_size / 1024**2:,.1f} MB of {weights.name}; the configuration is damaged. Refused "
            "before allocating."
        )


def _load_official(path: Path) -> LoadedNetworks:
    from styleforge.convert.official import load_official_pickle

    snap = load_official_pickle(path)
    pipe = snap.get("augment_pipe")
    config = {
        "format": "official",
        "networks": {n: snap[n].describe() for n in NETWORK_NAMES if snap.get(n) is not None},
        "augment_pipe": pipe,
        "training_set_kwargs": snap.get("training_set_kwargs"),
        "skipped": dict(snap.get("skipped") or {}),
    }
    return LoadedNetworks(
        G=snap.get("G"),
        D=snap.get("D"),
        G_ema=snap.get("G_ema"),
        config=config,
        source="official",
        augment_p=pipe.get("p") if pipe else None,
        training_set_kwargs=snap.get("training_set_kwargs"),
        path=str(path),
        skipped=dict(snap.get("skipped") or {}),
    )


def _state_architecture(state_file: Path) -> dict[str, Any]:
    """The network descriptions of a training state: those of a snapshot of the same run (the state holds weights
    and the training config, not the architecture)."""
    snapshots = _snapshots(state_file.parent)
    if not snapshots:
        raise UserInputError(
            f"{state_file} holds the weights but not the architecture of its networks, and there is no "
            f"{SNAPSHOT_PREFIX}*/ snapshot next to it to take it from. Give the run directory with its snapshots, or "
            "a snapshot directory."
        )
    config = json.loads((snapshots[-1] / CONFIG_NAME).read_text(encoding="utf-8"))
    return dict(config.get("networks") or {})


def _load_torch(path: Path) -> LoadedNetworks:
    """A ``training_state.pt`` (our training loop's) or a rosinality checkpoint, read with ``weights_only=True``."""
    from styleforge.convert.rosinality import is_rosinality_checkpoint, load_rosinality, read_checkpoint

    try:
        data = read_checkpoint(path)
    except UserInputError as e:
        raise UserInputError(
            f"{path} is a zip archive (a torch.save checkpoint) that styleforge cannot read: {e}"
        ) from None
    if "format_version" in data and isinstance(data.get("G_ema"), dict):
        descriptions = _state_architecture(path)
        nets: dict[str, Network] = {}
        for name, desc in descriptions.items():
            if not isinstance(data.get(name), dict):
                continue
            net = network_from_description(desc)
            try:
                net.load_state_dict(data[name], strict=True)
            except RuntimeError as e:
                raise UserInputError(
                    f"{path}: the {name} weights do not fit the architecture of the run's newest snapshot "
                    f"({str(e).splitlines()[0]})."
                ) from None
            nets[name] = net.eval()
        config = {"format": "training_state", "networks": {n: net.describe() for n, net in nets.items()}}
        return LoadedNetworks(G=nets.get("G"), D=nets.get("D"), G_ema=nets.get("G_ema"), config=config,
                              source="training_state", augment_p=data.get("augment_p"), path=str(path))
    if is_rosinality_checkpoint(data):
        nets = load_rosinality(path, data=data)
        config = {"format": "rosinality", "args": nets["args"],
                  "networks": {n: nets[n].describe() for n in NETWORK_NAMES if nets.get(n) is not None}}
        return LoadedNetworks(G=nets["G"], D=nets["D"], G_ema=nets["G_ema"], config=config, source="rosinality",
                              path=str(path))
    raise UserInputError(
        f"{path} is a zip archive (a torch.save checkpoint) but neither a styleforge {STATE_NAME} nor a "
        f"rosinality/stylegan2-pytorch checkpoint (keys: {sorted(map(str, data))[:8]}). styleforge reads those, "
        "official .pkl snapshots and its own config.json + model.safetensors format."
    )


def load(path: str | os.PathLike, device: str | torch.device = "cpu") -> LoadedNetworks:
    """Load networks from our format, an official pickle, or a built-in.

    Args:
        path: a styleforge directory, its ``config.json`` or ``model.safetensors``, an official ``.pkl``
            training snapshot or TensorFlow pickle (read safely, never executed), a training run directory (its
            newest snapshot), a ``training_state.pt``, a rosinality/stylegan2-pytorch ``.pt`` checkpoint, or
            ``builtin:NAME``.
        device: where to put the networks.

    Returns:
        :class:`LoadedNetworks` (use ``.generator`` for sampling: ``G_ema`` if present, else ``G``).

    Raises:
        UserInputError: a missing file, an unknown format, a pickle that is not a GAN snapshot, weights that
            do not match their config (the message lists missing and unexpected tensors).
    """
    kind, resolved = resolve_path(path)
    readers = {FORMAT_NAME: _load_styleforge, "official": _load_official, "torch": _load_torch}
    loaded = readers[kind](resolved)
    for name, net in loaded.networks().items():
        setattr(loaded, name, net.to(device))
    return loaded
