"""The explorer's renderer: one validated request -> one encoded frame.

Everything the page can ask for is a field of :class:`RenderRequest`; :func:`parse_request` checks a decoded
JSON message against it strictly (unknown keys, wrong types and out-of-range values are refused with a message
naming the field). :class:`Explorer` holds the networks the command line allowed and renders requests:

- **latent**: a seed ``s`` gives the official ``z = RandomState(s).randn(1, z_dim)``; a fractional seed
  ``s = n + f`` blends ``(1 - f) w(n) + f w(n + 1)`` (each ``w`` already truncated; truncation is linear so the
  order does not matter). An integer seed runs exactly ``G.mapping`` then ``G.synthesis`` with the arguments
  ``G(z, c, ...)`` uses, so the frame equals ``styleforge generate`` pixel for pixel. ``latent="w"`` uses a
  projected ``w`` ``[1, num_ws, w_dim]`` uploaded by the page (the ``styleforge project`` format), untruncated.
- **conditioning**: ``c`` follows the network's ``cond_encoding`` (sent to the page with ``c_dim``): one
  ``class_idx`` (one-hot), a set of ``classes`` (multi-hot, multi-label networks) or a ``cond_vector`` of
  ``c_dim`` attribute values (continuous networks), as ``styleforge generate`` builds it (:func:`request_labels`).
- **style mixing**: ``ws[:, mix_start:mix_end]`` are taken from a second seed.
- **edits**: ``ws[:, layers] += sum_k edits[k] * scale[k] * d[k]`` for the directions of a ``dirs.npz`` file,
  where ``scale[k]`` is the standard deviation of ``w`` along ``d[k]`` (measured once on 512 seeds), so a slider
  at 1 moves one standard deviation.
- **transform** (StyleGAN3, StyleGAN-XL): ``G.synthesis(ws, transform=transform_matrix(translate, rotate))``.
- **layer view**: the output of one synthesis layer (the rendering stops there), shown as one channel, three
  channels as RGB, or the per-pixel magnitude over channels, optionally as its log power spectrum (FFT).
- **batch**: consecutive seeds ``seed, seed + 1, ...`` tiled into one grid; a batch whose activations would not
  fit into the device's free memory is refused.
"""

from __future__ import annotations

import io
import math
import os
import threading
import time
import zipfile
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import Any

import numpy as np
import torch
from PIL import Image

from styleforge.explore.directions import Directions, load_directions
from styleforge.generation import NOISE_MODES, make_labels
from styleforge.utils.errors import UserInputError
from styleforge.utils.images import make_grid, to_uint8
from styleforge.utils.seeding import z_from_seed

__all__ = [
    "RenderRequest",
    "parse_request",
    "parse_uploaded_w",
    "request_labels",
    "cond_encoding",
    "Explorer",
    "Frame",
    "FORMATS",
    "VIEWS",
    "MAX_BATCH",
    "OUTPUT_LAYER",
]

#: frame encodings; ``auto`` = PNG up to 256x256 pixels (exact, cheap at that size), JPEG above
FORMATS = ("auto", "png", "jpeg")
#: how a layer's activations are shown
VIEWS = ("rgb", "channel", "magnitude")
#: the pseudo-layer name of the generator's output image
OUTPUT_LAYER = "output"
#: most images one request may tile into a grid
MAX_BATCH = 16
#: the largest seed: seed + 1 must still be a numpy RandomState seed
MAX_SEED = 2**32 - 2
#: frames with more pixels than this are JPEG under ``format="auto"``
AUTO_PNG_PIXELS = 256 * 256
#: seeds used to measure the spread of w along each editing direction
SCALE_SAMPLES = 512
#: measured activation bytes per image are multiplied by this to allow for temporaries
MEMORY_SAFETY = 3.0
#: longest ``cond_vector`` / ``classes`` list a request may carry
MAX_COND_DIM = 4096
#: largest magnitude of a ``cond_vector`` entry
MAX_COND_VALUE = 1e6
#: largest uploaded .npz accepted, in bytes
MAX_UPLOAD_BYTES = 8 * 2**20
_MIB = 2**20


# ------------------------------------------------------------------------------------------------------------
# Requests.
# ------------------------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class RenderRequest:
    """Everything one frame depends on. See the module docstring for the meaning of each group."""

    network: str                            # A name from the explorer's list (never a path).
    seed: float = 0.0                       # Seed, fractional seeds blend neighbours.
    latent: str = "seed"                    # "seed" or "w" (the uploaded projected w).
    psi: float = 1.0                        # Truncation psi.
    cutoff: int | None = None               # Truncate only the first this many ws; None = all.
    noise_mode: str = "const"               # "const", "random" or "none".
    class_idx: int | None = None            # Class of a conditional network.
    classes: tuple[int, ...] | None = None  # Classes of a multi-label network (multi-hot c); () = none.
    cond_vector: tuple[float, ...] | None = None  # c of a network conditioned on continuous attributes.
    mix_seed: float | None = None           # Style mixing seed; None = no mixing.
    mix_start: int = 0                      # First ws index taken from the mixing seed.
    mix_end: int | None = None              # One past the last; None = num_ws.
    translate: tuple[float, float] = (0.0, 0.0)  # StyleGAN3 translation (image-size units).
    rotate: float = 0.0                     # StyleGAN3 rotation in degrees.
    layer: str = OUTPUT_LAYER               # Layer to show.
    view: str = "rgb"                       # Layer view: "rgb", "channel" or "magnitude".
    channel: int = 0                        # First channel shown by the layer view.
    fft: bool = False                       # Show the log power spectrum instead.
    gain: float = 1.0                       # Brightness of the layer view.
    fft_range_db: float = 50.0              # Dynamic range of the spectrum view.
    directions: str | None = None           # Name of a directions file.
    edits: tuple[float, ...] = field(default=())  # Slider values, in standard deviations of w.
    batch: int = 1                          # Consecutive seeds tiled into a grid.
    format: str = "auto"                    # "auto", "png" or "jpeg".
    quality: int = 90                       # JPEG quality.


_FIELD_NAMES = tuple(f.name for f in fields(RenderRequest))


def _is_number(v: Any) -> bool:
    return isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v)


def _number(name: str, v: Any, lo: float, hi: float) -> float:
    if not _is_number(v) or not lo <= v <= hi:
        raise UserInputError(f"'{name}' must be a number between {lo:g} and {hi:g}, got {v!r}.")
    return float(v)


def _integer(name: str, v: Any, lo: int, hi: int) -> int:
    if isinstance(v, float) and v.is_integer():
        v = int(v)
    if not isinstance(v, int) or isinstance(v, bool) or not lo <= v <= hi:
        raise UserInputError(f"'{name}' must be an integer between {lo} and {hi}, got {v!r}.")
    return v


def _choice(name: str, v: Any, choices: Sequence[str]) -> str:
    if v not in choices:
        raise UserInputError(f"'{name}' must be one of {', '.join(choices)}, got {v!r}.")
    return v


def _string(name: str, v: Any) -> str:
    if not isinstance(v, str) or not v or len(v) > 1000:
        raise UserInputError(f"'{name}' must be a non-empty string, got {v!r}.")
    return v


def _class_set(v: Any) -> tuple[int, ...]:
    """``classes``: a list of distinct class indices (the order does not matter; sorted)."""
    if not isinstance(v, (list, tuple)) or len(v) > MAX_COND_DIM:
        raise UserInputError(f"'classes' must be a list of class indices such as [3, 7], got {v!r:.200}.")
    out = tuple(_integer("classes", k, 0, 1 << 20) for k in v)
    twice = sorted({k for k in out if out.count(k) > 1})
    if twice:
        raise UserInputError(f"'classes' lists class {twice[0]} more than once; give each class once.")
    return tuple(sorted(out))


def _cond_vector(v: Any) -> tuple[float, ...]:
    """``cond_vector``: a list of finite numbers (its length is checked against the network later)."""
    if not isinstance(v, (list, tuple)) or len(v) > MAX_COND_DIM:
        raise UserInputError(f"'cond_vector' must be a list of numbers such as [0.2, 0.9], got {v!r:.200}.")
    for i, x in enumerate(v):
        if not _is_number(x) or abs(x) > MAX_COND_VALUE:
            what = "NaN" if isinstance(x, float) and math.isnan(x) else repr(x)
            raise UserInputError(
                f"'cond_vector' entry {i} is {what}; every entry must be a finite number within "
                f"+-{MAX_COND_VALUE:g}."
            )
    return tuple(float(x) for x in v)


def parse_request(message: Mapping[str, Any]) -> RenderRequest:
    """Check a decoded JSON object against :class:`RenderRequest` and build it.

    Ranges checked here do not depend on the network (those are checked by :meth:`Explorer.render`).

    Raises:
        UserInputError: not an object, an unknown or missing key, or a value of the wrong type or range.
    """
    if not isinstance(message, Mapping):
        raise UserInputError(f"A render request must be a JSON object, got {type(message).__name__}.")
    unknown = sorted(set(message) - set(_FIELD_NAMES))
    if unknown:
        raise UserInputError(f"Unknown field(s) {', '.join(unknown)}; valid fields: {', '.join(_FIELD_NAMES)}.")
    if "network" not in message:
        raise UserInputError("A render request needs 'network' (one of the names the server lists).")
    m = dict(message)
    out: dict[str, Any] = {"network": _string("network", m["network"])}
    numbers = {"seed": (0, MAX_SEED), "psi": (-4, 4), "rotate": (-3600, 3600), "gain": (1e-3, 1e3),
               "fft_range_db": (1, 200)}
    for name, (lo, hi) in numbers.items():
        if name in m:
            out[name] = _number(name, m[name], lo, hi)
    if m.get("mix_seed") is not None:
        out["mix_seed"] = _number("mix_seed", m["mix_seed"], 0, MAX_SEED)
    integers = {"mix_start": (0, 4096), "channel": (0, 1 << 16), "batch": (1, MAX_BATCH), "quality": (1, 100)}
    for name, (lo, hi) in integers.items():
        if name in m:
            out[name] = _integer(name, m[name], lo, hi)
    for name in ("cutoff", "class_idx", "mix_end"):
        if m.get(name) is not None:
            out[name] = _integer(name, m[name], 0, 1 << 20)
    choices = {"latent": ("seed", "w"), "noise_mode": NOISE_MODES, "view": VIEWS, "format": FORMATS}
    for name, options in choices.items():
        if name in m:
            out[name] = _choice(name, m[name], options)
    if "layer" in m:
        out["layer"] = _string("layer", m["layer"])
    if m.get("directions") is not None:
        out["directions"] = _string("directions", m["directions"])
    if "fft" in m:
        if not isinstance(m["fft"], bool):
            raise UserInputError(f"'fft' must be true or false, got {m['fft']!r}.")
        out["fft"] = m["fft"]
    if "translate" in m:
        t = m["translate"]
        if not isinstance(t, (list, tuple)) or len(t) != 2:
            raise UserInputError(f"'translate' must be a pair [tx, ty], got {t!r}.")
        out["translate"] = (_number("translate", t[0], -100, 100), _number("translate", t[1], -100, 100))
    if m.get("classes") is not None:
        out["classes"] = _class_set(m["classes"])
    if m.get("cond_vector") is not None:
        out["cond_vector"] = _cond_vector(m["cond_vector"])
    if "edits" in m:
        e = m["edits"]
        if not isinstance(e, (list, tuple)) or len(e) > 4096:
            raise UserInputError(f"'edits' must be a list of numbers, got {type(e).__name__}.")
        out["edits"] = tuple(_number("edits", v, -1000, 1000) for v in e)
    return RenderRequest(**out)


def cond_encoding(G: torch.nn.Module) -> str | None:
    """What ``c`` of ``G`` holds: ``"class"`` (one-hot), ``"multi-label"`` (multi-hot) or ``"continuous"``
    (attribute values), as recorded in its config (networks without the field are one-class); ``None`` when
    ``G`` is unconditional."""
    if not int(getattr(G, "c_dim", 0)):
        return None
    return getattr(getattr(G, "config", None), "cond_encoding", "class")


def _reference_labels(G: torch.nn.Module, n: int, device: torch.device) -> torch.Tensor:
    """``c`` for the explorer's own passes (layer shapes, direction scales): class 0, or for a network conditioned
    on continuous attributes the all-zero attribute vector."""
    if cond_encoding(G) == "continuous":
        return torch.zeros(n, int(G.c_dim), device=device)
    return make_labels(G, 0 if G.c_dim else None, n, device)


def request_labels(G: torch.nn.Module, req: RenderRequest, label: str = "this network") -> np.ndarray:
    """The conditioning vector ``c`` ``[c_dim]`` float32 that ``req`` asks of ``G`` (``label`` names it in
    errors).

    - unconditional: nothing (``class_idx``, ``classes`` and ``cond_vector`` are refused);
    - ``class``: ``class_idx`` (one-hot), as ``styleforge generate --class K``;
    - ``multi-label``: ``classes`` (multi-hot, ``[]`` = no class), as ``generate --class 3,7``; ``class_idx``
      counts as a set of one;
    - ``continuous``: ``cond_vector``, exactly ``c_dim`` values, as ``generate --cond-vector``.

    Any conditional network also takes an explicit ``cond_vector`` of ``c_dim`` values instead of classes.

    Raises:
        UserInputError: a field the network's encoding does not use, a missing one, the wrong length, or a
            class out of range; the message names the field and what the network needs.
    """
    c_dim = int(getattr(G, "c_dim", 0))
    encoding = cond_encoding(G)
    given = [f for f in ("class_idx", "classes", "cond_vector") if getattr(req, f) is not None]
    if encoding is None:
        if given:
            raise UserInputError(f"{label} is unconditional (c_dim 0); leave out {', '.join(repr(f) for f in given)}.")
        return np.zeros(0, dtype=np.float32)
    if len(given) > 1:
        raise UserInputError(f"Give one of 'class_idx', 'classes' and 'cond_vector', not {' and '.join(given)}.")
    if req.cond_vector is not None:
        if len(req.cond_vector) != c_dim:
            raise UserInputError(
                f"'cond_vector' has {len(req.cond_vector)} values, but {label} is conditioned on c_dim={c_dim}; "
                f"send exactly {c_dim}."
            )
        return np.asarray(req.cond_vector, dtype=np.float32)
    if encoding == "continuous":
        instead = f" instead of {given[0]!r}" if given else ""
        raise UserInputError(
            f"{label} is conditioned on {c_dim} continuous attributes: send 'cond_vector' with {c_dim} "
            f"numbers{instead}."
        )
    if not given:
        if encoding == "multi-label":
            raise UserInputError(
                f"{label} is conditioned on a set of classes: send 'classes' (e.g. [0, 2]; [] = none), "
                f"indices 0..{c_dim - 1}."
            )
        raise UserInputError(f"{label} is conditional with {c_dim} classes: send 'class_idx' (0..{c_dim - 1}).")
    classes = (req.class_idx,) if req.class_idx is not None else req.classes
    if encoding == "class" and len(classes) != 1:
        raise UserInputError(
            f"{label} was trained with one class per image: send one 'class_idx' (0..{c_dim - 1}), not the "
            f"{len(classes)} classes {list(classes)[:20]}."
        )
    bad = [k for k in classes if k >= c_dim]
    if bad:
        raise UserInputError(f"Class {bad[0]} is out of range: {label} has classes 0..{c_dim - 1}.")
    c = np.zeros(c_dim, dtype=np.float32)
    c[list(classes)] = 1
    return c


def parse_uploaded_w(data: bytes) -> np.ndarray:
    """A projected latent from the bytes of an ``.npz`` file with key ``w`` ``[1, num_ws, w_dim]``.

    Returns:
        float32 ``[1, num_ws, w_dim]``.

    Raises:
        UserInputError: too large, not an npz without pickles, no ``w``, the wrong shape, or non-finite values.
    """
    if len(data) > MAX_UPLOAD_BYTES:
        raise UserInputError(f"The uploaded file is {len(data)} bytes; at most {MAX_UPLOAD_BYTES} are accepted.")
    try:
        with np.load(io.BytesIO(data), allow_pickle=False) as npz:
            if "w" not in npz.files:
                raise UserInputError(
                    f"The uploaded .npz has no 'w' (keys: {', '.join(npz.files) or 'none'}); upload the "
                    "projected_w.npz written by `styleforge project`."
                )
            w = npz["w"]
    except (OSError, ValueError, EOFError, zipfile.BadZipFile) as e:
        if isinstance(e, UserInputError):
            raise
        raise UserInputError(f"The uploaded file is not an .npz archive without pickled objects ({e}).") from e
    if w.ndim != 3 or w.shape[0] != 1 or not np.issubdtype(w.dtype, np.floating):
        raise UserInputError(f"The uploaded w must be float [1, num_ws, w_dim], got {w.dtype} {list(w.shape)}.")
    if not np.isfinite(w).all():
        raise UserInputError("The uploaded w holds NaN or infinite values.")
    return w.astype(np.float32)


# ------------------------------------------------------------------------------------------------------------
# Networks.
# ------------------------------------------------------------------------------------------------------------


def builtin_names() -> list[str]:
    """The ``builtin:NAME`` networks shipped in ``styleforge/assets``."""
    from styleforge.loading import BUILTIN_PREFIX, CONFIG_NAME, _assets_dir

    root = _assets_dir()
    if not root.is_dir():
        return []
    return sorted(BUILTIN_PREFIX + p.name for p in root.iterdir() if (p / CONFIG_NAME).is_file())


def _label_for(spec: str) -> str:
    from styleforge.loading import BUILTIN_PREFIX, CONFIG_NAME

    if spec.startswith(BUILTIN_PREFIX):
        return spec
    p = Path(spec).expanduser()
    if p.name in (CONFIG_NAME,) or p.suffix == ".safetensors":
        p = p.parent
    return p.resolve().name or str(p)


def device_free_memory(device: torch.device) -> int | None:
    """Bytes free on ``device``: CUDA's free memory, or the CPU's ``MemAvailable``; ``None`` when unknown."""
    if device.type == "cuda":
        return int(torch.cuda.mem_get_info(device)[0])
    try:
        with open("/proc/meminfo") as f:
            for line in f:
                if line.startswith("MemAvailable:"):
                    return int(line.split()[1]) * 1024
    except OSError:
        pass
    try:
        return int(os.sysconf("SC_AVPHYS_PAGES") * os.sysconf("SC_PAGE_SIZE"))
    except (ValueError, OSError, AttributeError):
        return None


def _first_tensor(out: Any) -> torch.Tensor | None:
    if isinstance(out, torch.Tensor):
        return out
    if isinstance(out, (tuple, list)) and out and isinstance(out[0], torch.Tensor):
        return out[0]
    return None


def _accepts(fn: Any, name: str) -> bool:
    import inspect

    try:
        return name in inspect.signature(fn).parameters
    except (TypeError, ValueError):
        return False


class _StopRender(Exception):
    """Raised by the layer-view hook: the wanted activations are captured, the rest is not needed."""


@dataclass
class _Network:
    """A loaded generator and what the page needs to know about it."""

    label: str
    G: torch.nn.Module
    layers: dict[str, torch.nn.Module]       # viewable synthesis layers in execution order
    layer_shapes: dict[str, tuple[int, int, int]]
    bytes_per_image: int                     # activation bytes of one image (all layers)
    has_transform: bool
    directions: dict[str, tuple[Directions, np.ndarray]]  # name -> (file, per-direction scale)
    info: dict[str, Any]


@dataclass(frozen=True)
class Frame:
    """An encoded frame and its description (``format``, ``width``, ``height``, ``render_ms``, ...)."""

    data: bytes
    meta: dict[str, Any]


class Explorer:
    """Renders :class:`RenderRequest` s for the networks named on the command line.

    Args:
        networks: network specs as given on the command line (styleforge directories, official pickles,
            ``builtin:NAME``); each is offered to the page under a short name (its file or directory name).
            ``builtin:NAME`` networks are always offered.
        directions: ``dirs.npz`` files; each is offered for the networks whose ``w_dim`` it matches.
        device: where to render.
        memory_limit: bytes one request may use; ``None`` = the device's free memory at request time.
        preloaded: ``{name: generator}`` networks already in memory (benchmarks, tests), offered under ``name``.

    All rendering goes through one lock: several browser tabs share the networks, and layer hooks must not
    overlap.
    """

    def __init__(
        self,
        networks: Sequence[str] = (),
        directions: Sequence[str | os.PathLike] = (),
        device: str | torch.device = "cpu",
        memory_limit: int | None = None,
        preloaded: Mapping[str, torch.nn.Module] | None = None,
    ) -> None:
        from styleforge.loading import resolve_path

        self.device = torch.device(device)
        self.memory_limit = memory_limit
        self._sources: dict[str, str] = {}
        self._preloaded = dict(preloaded or {})
        for spec in networks:
            spec = str(spec)
            resolve_path(spec)  # a missing or unreadable network is an error now, not when the page opens it
            label = _label_for(spec)
            base, n = label, 2
            while label in self._sources or label in self._preloaded:
                label, n = f"{base} ({n})", n + 1
            self._sources[label] = spec
        self.directions = [load_directions(p) for p in directions]
        names = [d.name for d in self.directions]
        if len(set(names)) != len(names):
            raise UserInputError(f"Two directions files share a name ({', '.join(names)}); rename one.")
        self._loaded: dict[str, _Network] = {}
        self._lock = threading.Lock()

    # -- catalogue --------------------------------------------------------------------------------------------

    def network_names(self) -> list[str]:
        """Names the page may open: the command line's, the preloaded ones, then the built-in networks."""
        names = list(self._sources) + list(self._preloaded)
        return names + [b for b in builtin_names() if b not in names]

    def _spec_for(self, name: str) -> str | torch.nn.Module:
        if name in self._preloaded:
            return self._preloaded[name]
        if name in self._sources:
            return self._sources[name]
        if name in builtin_names():
            return name
        raise UserInputError(
            f"Unknown network {name[:200]!r}; this server offers {', '.join(self.network_names())}. Networks are "
            "chosen by name; start `styleforge explore --network PATH` to offer another one."
        )

    def open(self, name: str) -> dict[str, Any]:
        """Load network ``name`` (once) and describe it for the page."""
        with self._lock:
            return self._open(name).info

    def _open(self, name: str) -> _Network:
        if name in self._loaded:
            return self._loaded[name]
        spec = self._spec_for(name)
        if isinstance(spec, torch.nn.Module):
            G = spec.eval().requires_grad_(False).to(self.device)
        else:
            from styleforge.cli._common import load_generator

            G = load_generator(spec, str(self.device))
        if not hasattr(G, "mapping") or not hasattr(G, "synthesis"):
            raise UserInputError(
                f"{name} is a {type(G).__name__} without a mapping network; the explorer needs a style-based "
                "generator (StyleGAN2, StyleGAN3, StyleGAN-XL). Use `styleforge generate` for it."
            )
        net = self._describe(name, G)
        self._loaded[name] = net
        return net

    @torch.no_grad()
    def _describe(self, name: str, G: torch.nn.Module) -> _Network:
        # One forward pass with a hook on every synthesis module finds the viewable layers (modules that output
        # an image-shaped tensor and contain no smaller such module) and the activation memory of one image.
        outputs: dict[str, tuple[int, ...]] = {}
        handles = []
        for mod_name, mod in G.synthesis.named_modules():
            if mod_name:
                def hook(_m, _i, out, mod_name=mod_name):
                    t = _first_tensor(out)
                    if t is not None and t.ndim == 4:
                        outputs.setdefault(mod_name, tuple(t.shape))
                handles.append(mod.register_forward_hook(hook))
        try:
            c = _reference_labels(G, 1, self.device)
            ws = G.mapping(z_from_seed(0, G.z_dim, self.device), c)
            G.synthesis(ws, noise_mode="const")
        finally:
            for h in handles:
                h.remove()
        leaves = [n for n in outputs if not any(o.startswith(n + ".") for o in outputs)]
        modules = dict(G.synthesis.named_modules())
        layers = {n: modules[n] for n in leaves}
        shapes = {n: tuple(int(v) for v in outputs[n][1:]) for n in leaves}
        bytes_per_image = int(sum(math.prod(s[1:]) * 4 for s in outputs.values()))
        has_transform = _accepts(G.synthesis.forward, "transform")
        dirs = {}
        for d in self.directions:
            if d.w_dim == G.w_dim and (d.layers is None or int(d.layers.max()) < G.num_ws):
                dirs[d.name] = (d, self._direction_scales(G, d))
        info = {
            "name": name,
            "family": type(G).__name__,
            "z_dim": int(G.z_dim),
            "w_dim": int(G.w_dim),
            "c_dim": int(G.c_dim),
            "cond_encoding": cond_encoding(G),
            "num_ws": int(G.num_ws),
            "img_resolution": int(G.img_resolution),
            "img_channels": int(G.img_channels),
            "has_transform": has_transform,
            "has_noise": not has_transform,
            "layers": [{"name": OUTPUT_LAYER, "channels": int(G.img_channels),
                        "size": [int(getattr(G, "img_height", G.img_resolution)),
                                 int(getattr(G, "img_width", G.img_resolution))]}]
            + [{"name": n, "channels": shapes[n][0], "size": list(shapes[n][1:])} for n in leaves],
            "directions": [
                {
                    "name": d.name,
                    "method": d.method,
                    "count": len(d),
                    "values": d.values.tolist(),
                    "scales": scale.tolist(),
                    "layers": None if d.layers is None else d.layers.tolist(),
                }
                for d, scale in dirs.values()
            ],
            "bytes_per_image": bytes_per_image,
            "max_batch": MAX_BATCH,
        }
        return _Network(name, G, layers, shapes, bytes_per_image, has_transform, dirs, info)

    def _direction_scales(self, G: torch.nn.Module, d: Directions) -> np.ndarray:
        """Standard deviation of ``w - w_avg`` along each direction over :data:`SCALE_SAMPLES` seeded latents."""
        rng = np.random.RandomState(0)
        z = torch.from_numpy(rng.randn(SCALE_SAMPLES, G.z_dim)).to(self.device, torch.float32)
        c = _reference_labels(G, SCALE_SAMPLES, self.device)
        w = G.mapping(z, c)[:, 0].double().cpu().numpy()
        proj = w @ d.directions.astype(np.float64).T
        return proj.std(axis=0)

    # -- rendering --------------------------------------------------------------------------------------------

    def check_memory(self, net: _Network, batch: int) -> None:
        """Refuse a batch whose activations would not fit into the device's free memory."""
        need = int(batch * net.bytes_per_image * MEMORY_SAFETY)
        limit = self.memory_limit if self.memory_limit is not None else device_free_memory(self.device)
        if limit is not None and need > limit:
            res = net.info["img_resolution"]
            raise UserInputError(
                f"A batch of {batch} at {res}x{res} needs about {need / _MIB:.0f} MiB, more than the "
                f"{limit / _MIB:.0f} MiB free on {self.device}; lower the batch."
            )

    def _seed_ws(self, net: _Network, seed: float, c: torch.Tensor, req: RenderRequest) -> torch.Tensor:
        """``[1, num_ws, w_dim]`` truncated ws of a (possibly fractional) seed."""
        G = net.G
        base = math.floor(seed)
        frac = seed - base
        parts = [(base, 1.0)] if frac == 0 else [(base, 1.0 - frac), (base + 1, frac)]
        ws = None
        for s, weight in parts:
            w = G.mapping(z_from_seed(int(s), G.z_dim, self.device), c, truncation_psi=req.psi,
                          truncation_cutoff=req.cutoff)
            if len(parts) == 1:
                return w
            ws = weight * w if ws is None else ws + weight * w
        return ws

    def _ws(self, net: _Network, req: RenderRequest, uploaded_w: np.ndarray | None) -> torch.Tensor:
        """The final ``[batch, num_ws, w_dim]`` ws of a request: latent, truncation, mixing, edits."""
        G = net.G
        num_ws = int(G.num_ws)
        if req.cutoff is not None and req.cutoff > num_ws:
            raise UserInputError(f"'cutoff' {req.cutoff} is more than the {num_ws} ws of {net.label}.")
        if req.seed + req.batch - 1 > MAX_SEED:
            raise UserInputError(f"Seeds go up to {MAX_SEED}; lower 'seed' or 'batch'.")
        c = torch.from_numpy(request_labels(G, req, net.label)).to(self.device).reshape(1, -1)
        if req.latent == "w":
            if uploaded_w is None:
                raise UserInputError("latent 'w' needs a projected w; upload a projected_w.npz first.")
            if uploaded_w.shape[1:] != (num_ws, G.w_dim):
                raise UserInputError(
                    f"The uploaded w has shape {list(uploaded_w.shape)}, but {net.label} needs "
                    f"[1, {num_ws}, {G.w_dim}]; project the image with this network."
                )
            if req.batch != 1:
                raise UserInputError("A projected w is one image; use batch 1 with latent 'w'.")
            ws = torch.from_numpy(uploaded_w).to(self.device)
        else:
            ws = torch.cat([self._seed_ws(net, req.seed + i, c, req) for i in range(req.batch)])
        if req.mix_seed is not None:
            end = num_ws if req.mix_end is None else req.mix_end
            if not req.mix_start < end <= num_ws:
                raise UserInputError(
                    f"Style mixing layers {req.mix_start}..{end} are not a range inside 0..{num_ws}."
                )
            mix = self._seed_ws(net, req.mix_seed, c, req)
            ws = ws.clone()
            ws[:, req.mix_start : end] = mix[:, req.mix_start : end]
        if req.edits and req.directions is None:
            raise UserInputError("'edits' need 'directions' (the name of a directions file).")
        if req.directions is not None:
            if req.directions not in net.directions:
                raise UserInputError(
                    f"No directions {req.directions[:200]!r} for {net.label}; available: "
                    f"{', '.join(net.directions) or 'none (start the server with --directions FILE)'}."
                )
            d, scale = net.directions[req.directions]
            if len(req.edits) > len(d):
                raise UserInputError(f"{len(req.edits)} edits given, but {d.name} has {len(d)} directions.")
            if any(req.edits):
                k = len(req.edits)
                coef = np.asarray(req.edits, dtype=np.float64) * scale[:k]
                delta = torch.from_numpy(coef @ d.directions[:k].astype(np.float64)).to(self.device, torch.float32)
                idx = slice(None) if d.layers is None else torch.from_numpy(d.layers).to(self.device)
                ws = ws.clone()
                ws[:, idx] += delta
        return ws

    def current_w(self, req: RenderRequest, uploaded_w: np.ndarray | None = None) -> bytes:
        """The ws of the first image of ``req`` as ``.npz`` bytes (key ``w`` float32 ``[1, num_ws, w_dim]``)."""
        with self._lock, torch.no_grad():
            net = self._open(req.network)
            ws = self._ws(net, req, uploaded_w)[:1]
        buf = io.BytesIO()
        np.savez(buf, w=ws.float().cpu().numpy())
        return buf.getvalue()

    def render(self, req: RenderRequest, uploaded_w: np.ndarray | None = None) -> Frame:
        """Render ``req``.

        Raises:
            UserInputError: anything about the request that does not fit the network (layer, channel, class,
                cutoff, transform, mixing range, directions, memory).
        """
        with self._lock, torch.no_grad():
            net = self._open(req.network)
            self.check_memory(net, req.batch)
            start = time.perf_counter()
            x = self._forward(net, req, uploaded_w)
            pixels = self._pixels(net, req, x)
            render_ms = (time.perf_counter() - start) * 1000
        start = time.perf_counter()
        grid = make_grid(pixels)
        fmt = req.format
        if fmt == "auto":
            fmt = "png" if grid.shape[0] * grid.shape[1] <= AUTO_PNG_PIXELS else "jpeg"
        image = Image.fromarray(np.ascontiguousarray(grid[:, :, 0] if grid.shape[2] == 1 else grid))
        buf = io.BytesIO()
        if fmt == "png":
            image.save(buf, format="PNG", compress_level=1)
        else:
            image.convert("RGB" if image.mode not in ("L", "RGB") else image.mode).save(
                buf, format="JPEG", quality=req.quality
            )
        encode_ms = (time.perf_counter() - start) * 1000
        meta = {
            "network": net.label,
            "format": fmt,
            "width": int(grid.shape[1]),
            "height": int(grid.shape[0]),
            "render_ms": round(render_ms, 2),
            "encode_ms": round(encode_ms, 2),
            "seed": req.seed,
            "psi": req.psi,
            "layer": req.layer,
        }
        return Frame(buf.getvalue(), meta)

    def _forward(self, net: _Network, req: RenderRequest, uploaded_w: np.ndarray | None) -> torch.Tensor:
        """The generator's output, or the activations of ``req.layer`` ``[N, C, H, W]``."""
        G = net.G
        ws = self._ws(net, req, uploaded_w)
        kwargs: dict[str, Any] = {"noise_mode": req.noise_mode}
        if req.translate != (0.0, 0.0) or req.rotate != 0.0:
            if not net.has_transform:
                raise UserInputError(
                    f"{net.label} ({type(G).__name__}) has no input transform; translate and rotate work with "
                    "StyleGAN3 and StyleGAN-XL networks."
                )
            from styleforge.ops.transforms import transform_matrix

            kwargs["transform"] = transform_matrix(translate=req.translate, rotate=req.rotate).to(self.device)
        if req.layer == OUTPUT_LAYER:
            return G.synthesis(ws, **kwargs)
        if req.layer not in net.layers:
            raise UserInputError(
                f"{net.label} has no layer {req.layer[:200]!r}; choose one of "
                f"{', '.join([OUTPUT_LAYER, *net.layers])}."
            )
        captured: list[torch.Tensor] = []

        def hook(_m, _i, out):
            captured.append(_first_tensor(out).float())
            raise _StopRender

        handle = net.layers[req.layer].register_forward_hook(hook)
        try:
            G.synthesis(ws, **kwargs)
        except _StopRender:
            pass
        finally:
            handle.remove()
        return captured[0]

    def _pixels(self, net: _Network, req: RenderRequest, x: torch.Tensor) -> np.ndarray:
        """uint8 ``[N, H, W, C]`` of the output image or the layer view."""
        if req.layer == OUTPUT_LAYER:
            if req.channel != 0 or req.view != "rgb":
                raise UserInputError("'view' and 'channel' apply to layers; the output is shown as it is.")
            return to_uint8(_spectrum(x, req.fft_range_db)) if req.fft else to_uint8(x)
        num = x.shape[1]
        if req.channel >= num:
            raise UserInputError(f"Layer {req.layer} has channels 0..{num - 1}; 'channel' {req.channel} is out.")
        if req.view == "magnitude":
            sel = x.square().mean(dim=1, keepdim=True).sqrt()
        elif req.view == "channel":
            sel = x[:, req.channel : req.channel + 1]
        else:
            sel = x[:, req.channel : req.channel + 3]
            if sel.shape[1] < 3:
                sel = torch.cat([sel, sel.new_zeros(sel.shape[0], 3 - sel.shape[1], *sel.shape[2:])], dim=1)
        if req.fft:
            return to_uint8(_spectrum(sel, req.fft_range_db))
        peak = sel.abs().amax(dim=(1, 2, 3), keepdim=True).clamp_min(1e-8)
        v = sel / peak * req.gain
        if req.view == "magnitude":
            v = v * 2 - 1  # magnitudes are >= 0: black = 0, white = the peak
        return to_uint8(v.clamp(-1, 1))


def _spectrum(x: torch.Tensor, range_db: float) -> torch.Tensor:
    """Log power spectrum of ``[N, C, H, W]`` (summed over channels, DC at the centre) as grey ``[N, 1, H, W]``
    in ``[-1, 1]``: the peak is white, ``range_db`` below it black."""
    x = x.double()
    x = x - x.mean(dim=(2, 3), keepdim=True)
    power = torch.fft.fft2(x).abs().square().sum(dim=1, keepdim=True)
    db = 10 * torch.log10(torch.fft.fftshift(power, dim=(-2, -1)) + 1e-30)
    top = db.amax(dim=(2, 3), keepdim=True)
    return ((db - top) / range_db + 1).clamp(0, 1).float() * 2 - 1
