"""TensorFlow StyleGAN2 pickles ``(G, D, Gs)`` written inside the test from our own networks: read safely,
converted back exactly (G and Gs kept apart), foreign globals refused by name, unknown arguments reported."""

from __future__ import annotations

import contextlib
import copyreg
import pickle
import re
import sys
import types

import numpy as np
import pytest
import torch

import styleforge
from styleforge.convert.official import ConversionError
from styleforge.convert.safe_pickle import TFNetworkStub, UnsafePickleError
from styleforge.models.stylegan2 import (
    StyleGAN2Discriminator,
    StyleGAN2DiscriminatorConfig,
    StyleGAN2Generator,
    StyleGAN2GeneratorConfig,
)
from styleforge.utils.errors import UserInputError

RES, Z, W = 16, 8, 8
G_KWARGS = dict(z_dim=Z, w_dim=W, img_resolution=RES, channel_base=256, channel_max=16, mapping_layers=2)
TF_STATIC = dict(latent_size=Z, dlatent_size=W, resolution=RES, num_channels=3, label_size=0, fmap_base=128,
                 fmap_max=16, mapping_layers=2, architecture="skip")


class _FakeNetwork:
    """Pickled under the TensorFlow class's name; its state is what the TensorFlow class pickles."""

    def __init__(self, state):
        self.state = state

    def __reduce_ex__(self, protocol):
        return (copyreg.__newobj__, (type(self),), self.state)  # NEWOBJ + BUILD, as the real class pickles


@contextlib.contextmanager
def _tf_module():
    """Register throw-away ``dnnlib.tflib.network`` modules so that pickle can name the TensorFlow class."""
    names = ("dnnlib", "dnnlib.tflib", "dnnlib.tflib.network")
    saved = {n: sys.modules.get(n) for n in names}
    for n in names:
        sys.modules[n] = types.ModuleType(n)
    sys.modules["dnnlib.tflib.network"].Network = _FakeNetwork
    _FakeNetwork.__module__, _FakeNetwork.__qualname__ = "dnnlib.tflib.network", "Network"
    try:
        yield
    finally:
        for n, mod in saved.items():
            if mod is None:
                sys.modules.pop(n, None)
            else:
                sys.modules[n] = mod


def _tf_state(name, func, variables, components=None, static=None):
    return {"version": 4, "name": name, "static_kwargs": dict(static or TF_STATIC), "components": components or {},
            "build_module_src": "raise SystemExit('TensorFlow source must never run')", "build_func_name": func,
            "variables": [(k, np.asarray(v, dtype=np.float32)) for k, v in variables.items()]}


def _g_to_tf(G: StyleGAN2Generator) -> tuple[dict, dict, dict]:
    """Our generator's state in TensorFlow names and layouts (the inverse of the converter's table)."""
    top, mapping, synthesis = {"lod": 0.0}, {}, {"lod": 0.0}
    conv = lambda t: t.permute(2, 3, 1, 0).numpy()  # [out, in, kh, kw] -> [kh, kw, in, out]
    noise_idx = 0
    for key, t in G.state_dict().items():
        t = t.detach()
        if key == "mapping.w_avg":
            top["dlatent_avg"] = t.numpy()
        elif m := re.fullmatch(r"mapping\.fc(\d+)\.(weight|bias)", key):
            mapping[f"Dense{m[1]}/{m[2]}"] = t.t().numpy() if m[2] == "weight" else t.numpy()
        elif m := re.fullmatch(r"mapping\.embed\.(weight|bias)", key):
            mapping[f"LabelEmbed/{m[1]}"] = t.t().numpy() if m[1] == "weight" else t.numpy()
        elif key == "synthesis.b4.const":
            synthesis["4x4/Const/const"] = t[None].numpy()
        elif m := re.fullmatch(r"synthesis\.b(\d+)\.(conv0|conv1|torgb)\.(.*)", key):
            r, layer, what = m[1], m[2], m[3]
            tf_layer = {"conv0": "Conv0_up", "conv1": "Conv1" if r != "4" else "Conv", "torgb": "ToRGB"}[layer]
            scope = f"{r}x{r}/{tf_layer}"
            if what == "weight":
                synthesis[f"{scope}/weight"] = conv(t.flip(2, 3) if layer == "conv0" else t)
            elif what == "affine.weight":
                synthesis[f"{scope}/mod_weight"] = t.t().numpy()
            elif what == "affine.bias":
                synthesis[f"{scope}/mod_bias"] = (t - 1).numpy()
            elif what == "noise_const":
                synthesis[f"noise{noise_idx}"] = t[None, None].numpy()
                noise_idx += 1
            else:
                synthesis[f"{scope}/{what}"] = t.numpy()
        else:
            raise AssertionError(f"test helper does not know {key}")
    return top, mapping, synthesis


def _d_to_tf(D: StyleGAN2Discriminator) -> dict:
    conv = lambda t: t.permute(2, 3, 1, 0).numpy()
    out = {"lod": 0.0}
    names = {"fromrgb": "FromRGB", "conv0": "Conv0", "conv1": "Conv1_down", "skip": "Skip"}
    for key, t in D.state_dict().items():
        t = t.detach()
        if m := re.fullmatch(r"b(\d+)\.(fromrgb|conv0|conv1|skip)\.(weight|bias)", key):
            out[f"{m[1]}x{m[1]}/{names[m[2]]}/{m[3]}"] = conv(t) if m[3] == "weight" else t.numpy()
        elif m := re.fullmatch(r"mapping\.embed\.(weight|bias)", key):
            out[f"LabelEmbed/{m[1]}"] = t.t().numpy() if m[1] == "weight" else t.numpy()
        elif m := re.fullmatch(r"b4\.(conv|fc|out)\.(weight|bias)", key):
            scope = {"conv": "4x4/Conv", "fc": "4x4/Dense0", "out": "Output"}[m[1]]
            if m[2] == "bias":
                out[f"{scope}/bias"] = t.numpy()
            else:
                out[f"{scope}/weight"] = conv(t) if m[1] == "conv" else t.t().numpy()
        else:
            raise AssertionError(f"test helper does not know {key}")
    return out


def _perturbed(net: torch.nn.Module, seed: int) -> torch.nn.Module:
    gen = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for t in net.state_dict().values():
            if t.is_floating_point():
                t.add_(0.1 * torch.randn(t.shape, generator=gen))
    return net.eval()


def _generator_network(G, name, static=None):
    top, mapping, synthesis = _g_to_tf(G)
    comps = {"mapping": _FakeNetwork(_tf_state("G_mapping", "G_mapping", mapping, static=static)),
             "synthesis": _FakeNetwork(_tf_state("G_synthesis", "G_synthesis_stylegan2", synthesis, static=static))}
    return _FakeNetwork(_tf_state(name, "G_main", top, comps, static=static))


@pytest.fixture()
def tf_pickle(tmp_path):
    G = _perturbed(StyleGAN2Generator(StyleGAN2GeneratorConfig(**G_KWARGS)), 1)
    Gs = _perturbed(StyleGAN2Generator(StyleGAN2GeneratorConfig(**G_KWARGS)), 2)
    d_config = StyleGAN2DiscriminatorConfig(img_resolution=RES, channel_base=256, channel_max=16, architecture="resnet",
                                            mbstd_group_size=2)
    D = _perturbed(StyleGAN2Discriminator(d_config), 3)
    d_static = dict(resolution=RES, num_channels=3, label_size=0, fmap_base=128, fmap_max=16, architecture="resnet",
                    mbstd_group_size=2)
    path = tmp_path / "tf.pkl"
    with _tf_module():
        data = (_generator_network(G, "G"), _FakeNetwork(_tf_state("D", "D_stylegan2", _d_to_tf(D), static=d_static)),
                _generator_network(Gs, "Gs"))
        path.write_bytes(pickle.dumps(data, protocol=3))
    return path, G, D, Gs


@torch.no_grad()
def test_round_trip_equals_our_networks(tf_pickle):
    path, G, D, Gs = tf_pickle
    loaded = styleforge.load(path)
    z = torch.randn(4, Z, generator=torch.Generator().manual_seed(0))
    for ours, theirs in ((G, loaded.G), (Gs, loaded.G_ema)):
        assert torch.allclose(ours(z, None, noise_mode="const"), theirs(z, None, noise_mode="const"), atol=1e-5)
    img = Gs(z, None, noise_mode="const")
    assert torch.allclose(D(img, None), loaded.D(img, None), atol=1e-5)
    assert float((loaded.G(z, None, noise_mode="const") - img).abs().max()) > 1e-2  # G_ema is Gs, not G


def test_build_source_is_dropped_and_foreign_globals_refused(tf_pickle, tmp_path):
    path = tf_pickle[0]
    raw = styleforge.convert.safe_pickle.load_official_pickle(path)
    assert all(isinstance(net, TFNetworkStub) for net in raw)
    assert not hasattr(raw[0], "build_module_src") and raw[2].name == "Gs"
    evil = tmp_path / "evil.pkl"
    with _tf_module():
        state = _tf_state("G", "G_main", {"lod": 0.0})
        state["static_kwargs"] = {"x": types.SimpleNamespace()}  # an arbitrary class inside the TF pickle
        evil.write_bytes(pickle.dumps((_FakeNetwork(state),), protocol=3))
    with pytest.raises(UnsafePickleError, match="types.SimpleNamespace"):
        styleforge.load(evil)


def test_unknown_tensorflow_argument_is_reported(tmp_path):
    G = StyleGAN2Generator(StyleGAN2GeneratorConfig(**G_KWARGS))
    top, mapping, synthesis = _g_to_tf(G)
    static = {**TF_STATIC, "mystery_option": 3}
    comps = {"mapping": _FakeNetwork(_tf_state("G_mapping", "G_mapping", mapping, static=static)),
             "synthesis": _FakeNetwork(_tf_state("G_synthesis", "G_synthesis_stylegan2", synthesis, static=static))}
    path = tmp_path / "odd.pkl"
    with _tf_module():
        net = _FakeNetwork(_tf_state("Gs", "G_main", top, comps, static=static))
        path.write_bytes(pickle.dumps((net, net, net), protocol=3))
    with pytest.raises(ConversionError, match="mystery_option=3"):
        styleforge.load(path)


def test_other_tensorflow_pickles_are_refused_by_name(tmp_path):
    """The PGGAN release pickles ``tfutil.Network`` objects (G_paper / D_paper); styleforge does not read them."""
    path = tmp_path / "pggan.pkl"
    path.write_bytes(b"\x80\x02ctfutil\nNetwork\nq\x00)\x81q\x01.")
    with pytest.raises(UserInputError, match="tfutil.Network"):
        styleforge.load(path)


@torch.no_grad()
def test_conditional_pickle_with_label_embedding_and_projection_discriminator(tmp_path):
    """StyleGAN2-ADA's TensorFlow conditional networks: G embeds the label (LabelEmbed); D projects it with the
    embedding alone (mapping_layers=0, the TensorFlow default), onto cmap = mapping_fmaps channels."""
    c_dim, cmap = 3, 16
    Gs = _perturbed(StyleGAN2Generator(StyleGAN2GeneratorConfig(**G_KWARGS, c_dim=c_dim)), 4)
    d_config = StyleGAN2DiscriminatorConfig(img_resolution=RES, channel_base=256, channel_max=16, c_dim=c_dim,
                                            cmap_dim=cmap, mapping_layers=0, mbstd_group_size=2)
    D = _perturbed(StyleGAN2Discriminator(d_config), 5)
    g_static = {**TF_STATIC, "label_size": c_dim}
    d_static = dict(resolution=RES, num_channels=3, label_size=c_dim, fmap_base=128, fmap_max=16,
                    mapping_fmaps=cmap, mbstd_group_size=2)
    path = tmp_path / "cond.pkl"
    with _tf_module():
        g = _generator_network(Gs, "Gs", static=g_static)
        d = _FakeNetwork(_tf_state("D", "D_stylegan2", _d_to_tf(D), static=d_static))
        path.write_bytes(pickle.dumps((g, d, g), protocol=3))
    loaded = styleforge.load(path)
    z = torch.randn(4, Z, generator=torch.Generator().manual_seed(1))
    c = torch.eye(c_dim)[[0, 1, 2, 0]]
    img = Gs(z, c, noise_mode="const")
    assert torch.allclose(loaded.G_ema(z, c, noise_mode="const"), img, atol=1e-5)
    assert loaded.D.config.mapping_layers == 0 and loaded.D.config.cmap_dim == cmap
    assert torch.allclose(loaded.D(img, c), D(img, c), atol=1e-5)
