"""StyleGAN-XL generators: tiny presets, per-class truncation, growing, and conversion of official-like stubs.

The super-resolution stage has no official reference file, so its conversion is tested on stubs built here in
the structure the official ``SuperresGenerator`` pickles have (``L<k>_<size>_<ch>`` layers numbered from
``len(kept) + 1`` in each new stage, the stem's ``SynthesisNetwork`` constructor arguments, a plain
``nn.Embedding``).
"""

from __future__ import annotations

import json
from collections import OrderedDict

import pytest
import torch

import styleforge
from styleforge.convert.official import convert_network
from styleforge.convert.official_stylegan_xl import can_convert_generator, stylegan_xl_config_from_stub
from styleforge.convert.safe_pickle import ModuleStub, PersistentObject
from styleforge.models.base import network_from_description
from styleforge.models.stylegan_xl import StyleGANXLGenerator
from styleforge.utils.errors import UserInputError
from tests.models.common import GENERATOR_CHECKS, make_latents

TINY_PRESETS = ["stylegan-xl-stem-tiny", "stylegan-xl-superres-tiny"]
PERSISTENCE_VERSION = 6
# layer attributes the official SynthesisLayer stores on itself
_LAYER_ATTRS = (
    "w_dim",
    "is_torgb",
    "is_critically_sampled",
    "use_fp16",
    "in_channels",
    "out_channels",
    "in_size",
    "out_size",
    "in_sampling_rate",
    "out_sampling_rate",
    "in_cutoff",
    "out_cutoff",
    "in_half_width",
    "out_half_width",
    "conv_kernel",
    "conv_clamp",
    "magnitude_ema_beta",
    "tmp_sampling_rate",
    "up_factor",
    "up_taps",
    "down_factor",
    "down_taps",
    "down_radial",
)


@pytest.mark.parametrize("preset", TINY_PRESETS)
@pytest.mark.parametrize("check", sorted(GENERATOR_CHECKS))
def test_generator_battery(preset, check, tmp_path):
    GENERATOR_CHECKS[check](lambda: styleforge.create_model(preset), tmp_dir=tmp_path)


# ----------------------------------------------------------------------------------------------------------
# Mapping: class embedding, per-class w_avg.


def test_per_class_truncation_pulls_to_own_class_average():
    torch.manual_seed(0)
    G = styleforge.create_model("stylegan-xl-stem-tiny").eval()
    z, c = make_latents(G)  # labels 0, 1, 2, 3
    with torch.no_grad():
        G.mapping.w_avg.copy_(torch.randn_like(G.mapping.w_avg))
        ws0 = G.mapping(z, c, truncation_psi=0)
        ws = G.mapping(z, c)
        ws_half = G.mapping(z, c, truncation_psi=0.5, truncation_cutoff=3)
    assert G.mapping.w_avg.shape == (G.c_dim, G.w_dim)
    torch.testing.assert_close(
        ws0, G.mapping.w_avg[[0, 1, 2, 3]].unsqueeze(1).expand_as(ws0), rtol=0, atol=1e-6
    )
    expected = ws.clone()
    expected[:, :3] = 0.5 * ws[:, :3] + 0.5 * ws0[:, :3]
    torch.testing.assert_close(ws_half, expected, rtol=1e-6, atol=1e-6)


def test_class_embedding_is_a_table_lookup_of_argmax():
    torch.manual_seed(0)
    G = styleforge.create_model("stylegan-xl-stem-tiny").eval()
    assert isinstance(G.mapping.embed, torch.nn.Embedding)
    assert G.mapping.embed.weight.shape == (10, 16)
    z = torch.randn(2, G.z_dim)
    soft = torch.tensor([[0.1, 0.7] + [0.0] * 8, [0.0] * 9 + [0.9]])
    hard = torch.zeros_like(soft)
    hard[0, 1], hard[1, 9] = 1, 1
    with torch.no_grad():
        torch.testing.assert_close(G.mapping(z, soft), G.mapping(z, hard), rtol=0, atol=0)
        other = G.mapping(z, torch.roll(hard, 1, dims=1))
        assert float((other - G.mapping(z, hard)).abs().max()) > 1e-3


def test_update_emas_moves_only_the_sample_classes_sequentially():
    torch.manual_seed(0)
    G = styleforge.create_model("stylegan-xl-stem-tiny").eval()
    z = torch.randn(3, G.z_dim)
    c = torch.zeros(3, G.c_dim)
    c[0, 2] = c[1, 2] = c[2, 5] = 1  # class 2 twice
    beta = G.mapping.w_avg_beta
    with torch.no_grad():
        start = torch.randn_like(G.mapping.w_avg)
        G.mapping.w_avg.copy_(start)
        w = G.mapping(z, c)[:, 0]
        G.mapping(z, c, update_emas=True)
    expected = start.clone()
    for i, label in enumerate([2, 2, 5]):
        expected[label] = w[i] + beta * (expected[label] - w[i])
    torch.testing.assert_close(G.mapping.w_avg, expected, rtol=1e-6, atol=1e-7)
    untouched = [k for k in range(G.c_dim) if k not in (2, 5)]
    assert torch.equal(G.mapping.w_avg[untouched], start[untouched])


def test_unconditional_variant():
    G = styleforge.create_model("stylegan-xl-stem-tiny", c_dim=0).eval()
    assert not hasattr(G.mapping, "embed") and G.mapping.w_avg.shape == (G.w_dim,)
    with torch.no_grad():
        img = G(torch.randn(2, G.z_dim), torch.zeros(2, 0), truncation_psi=0.7)
    assert img.shape == (2, 3, 16, 16) and torch.isfinite(img).all()


# ----------------------------------------------------------------------------------------------------------
# Layer schedule, growing, config.


def test_stem_and_superres_layer_structure():
    stem = styleforge.create_model("stylegan-xl-stem-tiny")
    sr = styleforge.create_model("stylegan-xl-superres-tiny")
    stem_names = [stem.synthesis.official_layer_name(i) for i in range(len(stem.synthesis.layers))]
    sr_names = [sr.synthesis.official_layer_name(i) for i in range(len(sr.synthesis.layers))]
    assert stem_names == ["L0_36_32", "L1_36_32", "L2_36_32", "L3_36_32", "L4_36_32", "L5_16_32", "L6_16_3"]
    # 4 kept stem layers (the last num_critical + 1 are dropped), L4 left out, 4 head layers + ToRGB.
    assert sr_names == [
        "L0_36_32",
        "L1_36_32",
        "L2_36_32",
        "L3_36_32",
        "L5_36_32",
        "L6_52_27",
        "L7_52_16",
        "L8_32_16",
        "L9_32_3",
    ]
    assert (stem.num_ws, sr.num_ws, sr.img_resolution) == (8, 10, 32)
    head = list(sr.synthesis.layers)[4:]
    assert [layer.is_critically_sampled for layer in head] == [False, False, True, True, True]
    # The head continues the schedule: same cutoff at the junction, Nyquist of the new resolution at the end.
    assert head[0].in_cutoff == pytest.approx(sr.synthesis.layers[3].out_cutoff)
    assert head[-1].out_cutoff == pytest.approx(16.0)
    assert head[-1].out_sampling_rate == 32 and head[-2].out_size == 32


def test_grow_keeps_stem_weights_and_runs():
    torch.manual_seed(0)
    stem = styleforge.create_model("stylegan-xl-stem-tiny").eval()
    with torch.no_grad():
        stem.mapping.w_avg.normal_()
    grown = stem.grow(head_layers=4, up_factor=2).eval()
    assert grown.config == styleforge.create_model("stylegan-xl-superres-tiny").config
    s_state, g_state = stem.state_dict(), grown.state_dict()
    for k, v in s_state.items():
        if k.startswith(("synthesis.layers.4.", "synthesis.layers.5.", "synthesis.layers.6.")):
            continue  # the critically sampled stem layers and ToRGB are dropped
        assert torch.equal(g_state[k], v), k
    z, c = make_latents(grown, batch=2)
    with torch.no_grad():
        torch.testing.assert_close(grown.mapping(z, c)[:, :5], stem.mapping(z, c)[:, :5], rtol=0, atol=0)
        img = grown(z, c, truncation_psi=0.7)
    assert img.shape == (2, 3, 32, 32) and torch.isfinite(img).all()
    # Growing twice, by 4 the second time: 32 -> 128 px.
    twice = grown.grow(head_layers=4, up_factor=4)
    assert twice.img_resolution == 128 and twice.config.superres_up_factors == (2, 4)


def test_config_from_json_rebuilds_grown_network():
    G = styleforge.create_model("stylegan-xl-superres-tiny")
    desc = G.describe()
    rebuilt = network_from_description(json.loads(json.dumps(desc)))
    assert isinstance(rebuilt, StyleGANXLGenerator) and rebuilt.config == G.config
    assert rebuilt.config.stem_resolution == 16


@pytest.mark.parametrize(
    "overrides, words",
    [
        (dict(superres_head_layers=(4,), superres_up_factors=()), "one entry per stage"),
        (dict(img_resolution=48, superres_head_layers=(4,), superres_up_factors=(3,)), "superres_up_factors"),
        (dict(img_resolution=32, superres_head_layers=(2,), superres_up_factors=(2,)), "head layers"),
        (dict(img_resolution=24, superres_head_layers=(4,), superres_up_factors=(2,)), "power of two"),
        (dict(num_embeddings=3), "num_embeddings"),
    ],
)
def test_config_errors(overrides, words):
    with pytest.raises(UserInputError, match=words):
        styleforge.create_model("stylegan-xl-stem-tiny", **overrides)


# ----------------------------------------------------------------------------------------------------------
# Conversion of official-like stubs (stem and super-resolution).


def _stub_state(params: dict, buffers: dict, modules: dict, **attrs) -> dict:
    return {
        "training": False,
        "_parameters": OrderedDict(params),
        "_buffers": OrderedDict(buffers),
        "_non_persistent_buffers_set": set(),
        "_modules": OrderedDict(modules),
        **attrs,
    }


def _fc_stub(lin) -> PersistentObject:
    params = {"weight": lin.weight.detach().clone(), "bias": lin.bias.detach().clone()}
    kwargs = {"in_features": lin.in_features, "out_features": lin.out_features, "activation": lin.activation}
    return PersistentObject(
        "FullyConnectedLayer", PERSISTENCE_VERSION, (), kwargs, _stub_state(params, {}, {})
    )


def _layer_stub(layer, extra_kwargs: dict) -> PersistentObject:
    attrs = {k: getattr(layer, k) for k in _LAYER_ATTRS}
    attrs["padding"] = list(layer.padding)
    buffers = {
        "magnitude_ema": layer.magnitude_ema.detach().clone(),
        "up_filter": None if layer.up_filter is None else layer.up_filter.clone(),
        "down_filter": None if layer.down_filter is None else layer.down_filter.clone(),
    }
    params = {"weight": layer.weight.detach().clone(), "bias": layer.bias.detach().clone()}
    kwargs = {k: attrs[k] for k in _LAYER_ATTRS[:14]} | extra_kwargs
    return PersistentObject(
        "SynthesisLayer",
        PERSISTENCE_VERSION,
        (),
        kwargs,
        _stub_state(params, buffers, {"affine": _fc_stub(layer.affine)}, **attrs),
    )


def official_like_stub(G: StyleGANXLGenerator) -> PersistentObject:
    """An official-format stub of ``G`` (``Generator`` for a stem, ``SuperresGenerator`` after growing)."""
    cfg = G.config
    syn = G.synthesis
    names = [syn.official_layer_name(i) for i in range(len(syn.layers))]
    stem_kwargs = {
        "w_dim": cfg.w_dim,
        "img_resolution": cfg.stem_resolution,
        "img_channels": cfg.img_channels,
        "channel_base": cfg.channel_base,
        "channel_max": cfg.channel_max,
        "num_layers": cfg.num_layers,
        "magnitude_ema_beta": cfg.magnitude_ema_beta,
        "conv_kernel": cfg.conv_kernel,
        "use_radial_filters": cfg.use_radial_filters,
    }
    inp = syn.input
    input_stub = PersistentObject(
        "SynthesisInput",
        PERSISTENCE_VERSION,
        (),
        {"w_dim": cfg.w_dim, "channels": inp.channels},
        _stub_state(
            {"weight": inp.weight.detach().clone()},
            {"transform": inp.transform.clone(), "freqs": inp.freqs.clone(), "phases": inp.phases.clone()},
            {"affine": _fc_stub(inp.affine)},
        ),
    )
    modules = {"input": input_stub}
    n_stem = len(syn.layers) if not cfg.superres_head_layers else None
    for idx, name in enumerate(names):
        is_head = n_stem is None and idx >= cfg.num_layers - cfg.num_critical
        extra = (
            {}
            if is_head
            else {
                "magnitude_ema_beta": cfg.magnitude_ema_beta,
                "conv_kernel": cfg.conv_kernel,
                "use_radial_filters": cfg.use_radial_filters,
            }
        )
        modules[name] = _layer_stub(syn.layers[idx], extra)
    synthesis = PersistentObject(
        "SynthesisNetwork",
        PERSISTENCE_VERSION,
        (),
        stem_kwargs,
        _stub_state(
            {},
            {},
            modules,
            w_dim=cfg.w_dim,
            num_ws=G.num_ws,
            img_resolution=G.img_resolution,
            num_layers=len(syn.layers),
            num_critical=cfg.num_critical,
            layer_names=list(names),
        ),
    )
    m = G.mapping
    embed = ModuleStub()  # what the safe unpickler builds for a plain torch.nn.Embedding
    embed.__setstate__(
        _stub_state(
            {"weight": m.embed.weight.detach().clone()},
            {},
            {},
            num_embeddings=m.embed.num_embeddings,
            embedding_dim=m.embed.embedding_dim,
        )
    )
    mapping_modules = {"embed": embed, "embed_proj": _fc_stub(m.embed_proj)}
    mapping_modules |= {f"fc{i}": _fc_stub(getattr(m, f"fc{i}")) for i in range(m.num_layers)}
    mapping = PersistentObject(
        "MappingNetwork",
        PERSISTENCE_VERSION,
        (),
        {
            "z_dim": cfg.z_dim,
            "c_dim": cfg.c_dim,
            "w_dim": cfg.w_dim,
            "num_ws": G.num_ws,
            "rand_embedding": False,
            "num_layers": cfg.mapping_layers,
        },
        _stub_state({}, {"w_avg": m.w_avg.clone()}, mapping_modules, num_ws=G.num_ws),
    )
    top = {"synthesis": synthesis, "mapping": mapping}
    if cfg.superres_head_layers:
        # The official SuperresGenerator's own kwargs: the last stage plus options it ignores.
        kwargs = {
            "img_resolution": G.img_resolution,
            "path_stem": "previous-stage.pkl",
            "head_layers": cfg.superres_head_layers[-1],
            "up_factor": cfg.superres_up_factors[-1],
            "z_dim": cfg.z_dim,
            "c_dim": cfg.c_dim,
            "channel_base": 12345,
        }
        return PersistentObject(
            "SuperresGenerator",
            PERSISTENCE_VERSION,
            (),
            kwargs,
            _stub_state({}, {}, top, img_resolution=G.img_resolution),
        )
    kwargs = {
        "z_dim": cfg.z_dim,
        "c_dim": cfg.c_dim,
        "w_dim": cfg.w_dim,
        "img_resolution": cfg.img_resolution,
        "img_channels": cfg.img_channels,
        "mapping_kwargs": {"rand_embedding": False, "num_layers": cfg.mapping_layers},
        **{k: v for k, v in stem_kwargs.items() if k not in ("w_dim", "img_resolution", "img_channels")},
    }
    return PersistentObject("Generator", PERSISTENCE_VERSION, (), kwargs, _stub_state({}, {}, top))


def _perturbed(G: StyleGANXLGenerator, seed: int = 3) -> StyleGANXLGenerator:
    gen = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, t in [*G.named_parameters(), *G.named_buffers()]:
            if name.endswith(("w_avg", "magnitude_ema", "bias")):
                t.add_(0.1 * torch.rand(t.shape, generator=gen) + 0.05)
    return G.eval()


@pytest.mark.parametrize(
    "stages",
    [(), ((4, 2),), ((4, 2), (5, 4)), ((3, 2), (4, 2))],
    ids=["stem", "one-stage", "two-stages", "single-kept-layer"],
)
def test_convert_official_like_stub(stages):
    torch.manual_seed(0)
    G = styleforge.create_model("stylegan-xl-stem-tiny")
    for head_layers, up in stages:
        G = G.grow(head_layers, up)
    G = _perturbed(G)
    stub = official_like_stub(G)
    assert can_convert_generator(stub)
    assert stylegan_xl_config_from_stub(stub) == G.config
    converted = convert_network(stub)
    assert isinstance(converted, StyleGANXLGenerator)
    z, c = make_latents(G, batch=2)
    with torch.no_grad():
        for psi in (1.0, 0.6):
            torch.testing.assert_close(
                converted(z, c, truncation_psi=psi), G(z, c, truncation_psi=psi), rtol=0, atol=0
            )


def test_convert_rejects_inconsistent_stub():
    torch.manual_seed(0)
    G = styleforge.create_model("stylegan-xl-stem-tiny").grow(4, 2)
    stub = official_like_stub(G)
    stub.init_kwargs["head_layers"] = 5
    with pytest.raises(UserInputError, match="head_layers"):
        convert_network(stub)
    stub = official_like_stub(G)
    stub.get_submodule("synthesis.L6_52_27").state["_parameters"]["weight"] = torch.zeros(27, 32, 1, 1)
    with pytest.raises(UserInputError, match="shape"):
        convert_network(stub)


def test_stylegan3_stub_is_not_taken_for_xl():
    G = styleforge.create_model("stylegan-xl-stem-tiny")
    stub = official_like_stub(G)
    del stub.get_submodule("mapping").state["_modules"]["embed"]
    assert not can_convert_generator(stub)


def test_unconditional_stub_drops_unused_embedding():
    torch.manual_seed(0)
    G = _perturbed(styleforge.create_model("stylegan-xl-stem-tiny", c_dim=0))
    ref = styleforge.create_model("stylegan-xl-stem-tiny")
    G.mapping.embed = ref.mapping.embed  # the official mapping always loads the class table
    G.mapping.embed_proj = ref.mapping.embed_proj
    stub = official_like_stub(G)
    del stub.get_submodule("mapping").state["_modules"]["embed_proj"]
    del G.mapping.embed, G.mapping.embed_proj
    converted = convert_network(stub)
    assert converted.config == G.config
    z = torch.randn(2, G.z_dim)
    with torch.no_grad():
        torch.testing.assert_close(converted(z, None), G(z, None), rtol=0, atol=0)


def test_save_and_load_grown_network(tmp_path):
    torch.manual_seed(0)
    G = _perturbed(styleforge.create_model("stylegan-xl-superres-tiny"))
    styleforge.save(tmp_path / "xl", G_ema=G)
    loaded = styleforge.load(tmp_path / "xl").G_ema
    assert isinstance(loaded, StyleGANXLGenerator) and loaded.config == G.config
    z, c = make_latents(G, batch=2)
    with torch.no_grad():
        expected = G(z, c, truncation_psi=0.5)
        torch.testing.assert_close(loaded(z, c, truncation_psi=0.5), expected, rtol=0, atol=0)
