"""StyleGAN2 generator/discriminator: the shared battery, StyleGAN2 specifics, official reference outputs."""

from __future__ import annotations

import copy
import importlib.util
import math
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

from styleforge.layers.mapping import MappingNetwork, normalize_2nd_moment
from styleforge.layers.stylegan2_blocks import MinibatchStdLayer
from styleforge.models.registry import create_model, get_preset, list_models
from styleforge.models.stylegan2 import (
    StyleGAN2Discriminator,
    StyleGAN2DiscriminatorConfig,
    StyleGAN2Generator,
    StyleGAN2GeneratorConfig,
)
from styleforge.utils.errors import UserInputError
from tests.conftest import reference_file
from tests.models.common import DISCRIMINATOR_CHECKS, GENERATOR_CHECKS, make_latents

TINY = "stylegan2-tiny"
G_VARIANTS = {
    "skip": dict(architecture="skip"),
    "orig": dict(architecture="orig"),
    "resnet": dict(architecture="resnet"),
    "skip_cond": dict(architecture="skip", c_dim=5),
}
D_VARIANTS = {
    "resnet": dict(architecture="resnet"),
    "orig": dict(architecture="orig"),
    "skip": dict(architecture="skip"),
    "resnet_cond": dict(architecture="resnet", c_dim=5),
}


# ------------------------------------------------------------------------------------------------------------
# The shared battery on every architecture.


@pytest.mark.parametrize("variant", sorted(G_VARIANTS))
@pytest.mark.parametrize("check", sorted(GENERATOR_CHECKS))
def test_generator_battery(check, variant, tmp_path):
    GENERATOR_CHECKS[check](lambda: create_model(TINY, **G_VARIANTS[variant]), tmp_dir=tmp_path)


@pytest.mark.parametrize("variant", sorted(D_VARIANTS))
@pytest.mark.parametrize("check", sorted(DISCRIMINATOR_CHECKS))
def test_discriminator_battery(check, variant, tmp_path):
    DISCRIMINATOR_CHECKS[check](lambda: create_model(TINY, net="D", **D_VARIANTS[variant]), tmp_dir=tmp_path)


# ------------------------------------------------------------------------------------------------------------
# StyleGAN2 specifics.


def test_presets_registered():
    names = list_models("stylegan2")
    assert {"stylegan2", "stylegan2-tiny", "stylegan2-64"} <= set(names)
    p = get_preset("stylegan2")
    assert p.G_config.channel_base == 32768 and p.G_config.channel_max == 512
    assert p.G_config.mapping_layers == 8 and p.G_config.z_dim == p.G_config.w_dim == 512
    assert p.G_config.img_resolution == 256


def test_config_f_at_1024_has_the_official_parameter_count():
    # the official config-F FFHQ generator has 30,370,060 parameters and 18 ws
    G = create_model("stylegan2", img_resolution=1024)
    assert G.num_ws == 18
    assert sum(p.numel() for p in G.parameters()) == 30_370_060


@pytest.mark.parametrize(("res", "num_ws"), [(4, 2), (8, 4), (32, 8), (256, 14)])
def test_num_ws_and_channels(res, num_ws):
    G = create_model(TINY, img_resolution=res, channel_base=res * 16, channel_max=64)
    assert G.num_ws == num_ws
    for block in G.synthesis.blocks():
        assert block.out_channels == min(res * 16 // block.resolution, 64)
    img = G(torch.randn(2, G.z_dim), None)
    assert img.shape == (2, 3, res, res)


def test_fp16_policy_is_per_block_and_cpu_stays_fp32():
    G = create_model("stylegan2-tiny", img_resolution=64, num_fp16_res=2)
    assert [b.use_fp16 for b in G.synthesis.blocks()] == [False, False, False, True, True]
    D = create_model("stylegan2-tiny", net="D", img_resolution=64, num_fp16_res=2)
    assert [getattr(D, f"b{r}").use_fp16 for r in D.block_resolutions] == [True, True, False, False]
    # never below 8x8, even when asked for every resolution
    G = create_model("stylegan2-tiny", img_resolution=16, num_fp16_res=10)
    assert [b.use_fp16 for b in G.synthesis.blocks()] == [False, True, True]
    with torch.no_grad():
        assert G(torch.randn(2, G.z_dim), None).dtype == torch.float32


def test_fused_and_nonfused_modconv_agree_and_inference_only_semantics():
    torch.manual_seed(0)
    G = create_model(TINY, c_dim=3).eval()
    z, c = make_latents(G)
    with torch.no_grad():
        fused = G(z, c, fused_modconv=True)
        nonfused = G(z, c, fused_modconv=False)
    torch.testing.assert_close(fused, nonfused, rtol=1e-4, atol=1e-5)
    block = G.synthesis.b8
    assert block.resolve_fused_modconv(None) is True  # eval
    G.train()
    assert block.resolve_fused_modconv(None) is False
    assert block.resolve_fused_modconv(True) is True


def test_conv_clamp_bounds_outputs():
    torch.manual_seed(0)
    G = create_model(TINY, conv_clamp=0.01, architecture="orig")
    with torch.no_grad():
        img = G(torch.randn(2, G.z_dim), None)
    assert img.abs().max() <= 0.01 + 1e-7  # the last tRGB output is clamped


def test_freeze_layers_turns_first_layers_into_buffers():
    D = create_model(TINY, net="D", freeze_layers=3)  # b16: fromrgb, conv0, conv1 frozen; skip trainable
    params = dict(D.named_parameters())
    buffers = dict(D.named_buffers())
    for name in ("b16.fromrgb.weight", "b16.conv0.weight", "b16.conv1.weight"):
        assert name in buffers and name not in params
    assert "b16.skip.weight" in params
    assert set(D.state_dict()) == set(create_model(TINY, net="D").state_dict())


def test_minibatch_std_matches_hand_computation():
    torch.manual_seed(0)
    x = torch.randn(4, 6, 3, 3)
    y = MinibatchStdLayer(group_size=2, num_channels=2)(x)
    assert y.shape == (4, 8, 3, 3)
    # groups are {0, 2} and {1, 3}; feature f averages channels 3f..3f+2
    for n in range(4):
        group = x[[n % 2, n % 2 + 2]]
        for f in range(2):
            part = group[:, 3 * f : 3 * f + 3]
            expected = (part.var(dim=0, unbiased=False) + 1e-8).sqrt().mean()
            torch.testing.assert_close(y[n, 6 + f], expected.expand(3, 3))
    with pytest.raises(UserInputError, match="divisible"):
        MinibatchStdLayer(group_size=4)(torch.randn(6, 2, 2, 2))


def test_mapping_network_normalisation_and_label_embedding():
    torch.manual_seed(0)
    m = MappingNetwork(z_dim=8, c_dim=3, w_dim=16, num_ws=None, num_layers=2)
    assert set(n for n, _ in m.named_parameters()) == {
        "embed.weight",
        "embed.bias",
        "fc0.weight",
        "fc0.bias",
        "fc1.weight",
        "fc1.bias",
    }
    assert m.fc0.weight.shape == (16, 8 + 16)
    z = torch.randn(5, 8)
    torch.testing.assert_close(
        normalize_2nd_moment(z).square().mean(dim=1), torch.ones(5), rtol=1e-5, atol=1e-5
    )
    c = torch.eye(3)[[0, 1, 2, 0, 1]]
    w = m(z, c)
    assert w.shape == (5, 16)
    # scaling z does not change w (second-moment normalisation)
    torch.testing.assert_close(m(z * 7.5, c), w, rtol=1e-5, atol=1e-5)
    with pytest.raises(ValueError, match="conditional"):
        m(z, None)
    d = MappingNetwork(z_dim=0, c_dim=3, w_dim=4, num_ws=None, w_avg_beta=None)
    assert d(None, c).shape == (5, 4) and not hasattr(d, "w_avg")
    with pytest.raises(ValueError, match="w_avg_beta=None"):
        d(None, c, truncation_psi=0.5)


class _PerClassMapping(MappingNetwork):
    """A StyleGAN-XL-like mapping: class embedding table and one w_avg per class, through the hooks only."""

    def _build_embedding(self):
        return torch.nn.Embedding(self.c_dim, self.embed_features)

    def embed_labels(self, c):
        return normalize_2nd_moment(self.embed(c.argmax(dim=1)))

    def w_avg_shape(self):
        return [self.c_dim, self.w_dim]

    def w_avg_for(self, c):
        return self.w_avg[c.argmax(dim=1)]


def test_mapping_network_hooks_allow_a_per_class_w_avg():
    torch.manual_seed(0)
    m = _PerClassMapping(z_dim=8, c_dim=3, w_dim=16, num_ws=4, num_layers=2)
    assert m.w_avg.shape == (3, 16) and isinstance(m.embed, torch.nn.Embedding)
    with torch.no_grad():
        m.w_avg.copy_(torch.randn(3, 16))
    labels = torch.tensor([2, 0, 1, 2])
    c = torch.nn.functional.one_hot(labels, 3).float()
    ws = m(torch.randn(4, 8), c, truncation_psi=0)
    torch.testing.assert_close(ws, m.w_avg[labels].unsqueeze(1).expand(4, 4, 16), rtol=0, atol=0)


def test_cpu_channels_last_gives_the_same_images():
    torch.manual_seed(0)
    G = create_model(TINY).eval()
    z, c = make_latents(G)
    with torch.no_grad():
        a = G(z, c)
        for block in G.synthesis.blocks():
            block.cpu_channels_last = True
        b = G(z, c)
    torch.testing.assert_close(b, a, rtol=1e-5, atol=1e-5)
    assert b.is_contiguous()


def test_training_path_gradients_match_the_inference_path():
    # train mode uses the non-fused modulated conv ('inference_only'); both must give the same gradients
    torch.manual_seed(0)
    G = create_model(TINY, architecture="resnet")
    z, c = make_latents(G)
    grads = {}
    for fused in (True, False):
        G.zero_grad()
        G(z, c, fused_modconv=fused).square().mean().backward()
        grads[fused] = {n: p.grad.clone() for n, p in G.named_parameters()}
    for name, g in grads[True].items():
        torch.testing.assert_close(grads[False][name], g, rtol=1e-3, atol=1e-6, msg=name)


def test_path_length_regularizer_double_backward():
    # the path length penalty differentiates d(img . y)/d(ws) once more with respect to the weights
    torch.manual_seed(0)
    G = create_model(TINY).train()
    z, c = make_latents(G)
    ws = G.mapping(z, c)
    img = G.synthesis(ws, noise_mode="random")
    y = torch.randn_like(img) / math.sqrt(img.shape[2] * img.shape[3])
    (grad_ws,) = torch.autograd.grad((img * y).sum(), ws, create_graph=True)
    penalty = grad_ws.square().sum(dim=2).mean(dim=1).sqrt().square().mean()
    penalty.backward()
    weight = G.synthesis.b8.conv0.weight
    assert weight.grad is not None and torch.isfinite(weight.grad).all() and weight.grad.abs().sum() > 0
    assert torch.isfinite(G.mapping.fc0.weight.grad).all()


def test_deepcopy_for_the_ema_generator():
    torch.manual_seed(0)
    G = create_model(TINY).eval()
    G_ema = copy.deepcopy(G).requires_grad_(False)
    z, c = make_latents(G)
    with torch.no_grad():
        torch.testing.assert_close(G_ema(z, c), G(z, c), rtol=0, atol=0)


def test_generator_benchmark_script_runs(capsys, monkeypatch):
    path = Path(__file__).resolve().parents[2] / "benchmarks" / "generator.py"
    spec = importlib.util.spec_from_file_location("generator_benchmark", path)
    bench = importlib.util.module_from_spec(spec)
    monkeypatch.setitem(sys.modules, spec.name, bench)  # dataclasses look their module up there
    spec.loader.exec_module(bench)
    bench.main(["--preset", TINY, "--res", "16", "--repeats", "1", "--warmup", "1"])
    out = capsys.readouterr().out
    assert "ref / fast" in out and "img/s" in out


@pytest.mark.parametrize("arch", ["skip", "resnet"])
def test_fp16_plumbing_with_fp16_forced_on_cpu(arch, monkeypatch):
    # fp16 runs only on CUDA; forcing it on CPU checks the dtype conversions between blocks without a GPU
    import styleforge.layers.stylegan2_blocks as blocks

    def fp16_everywhere(use_fp16, device, force_fp32=False):
        return torch.float16 if use_fp16 and not force_fp32 else torch.float32

    monkeypatch.setattr(blocks, "block_dtype", fp16_everywhere)
    torch.manual_seed(0)
    G = create_model(TINY, img_resolution=32, num_fp16_res=2, architecture=arch).eval()
    D = create_model(TINY, net="D", img_resolution=32, num_fp16_res=2, architecture=arch, c_dim=3).eval()
    z, _ = make_latents(G)
    labels = torch.eye(3)[[0, 1, 2, 0]]
    with torch.no_grad():
        img16, img32 = G(z, None), G(z, None, force_fp32=True)
        logits16, logits32 = D(img32, labels), D(img32, labels, force_fp32=True)
    assert img16.dtype == logits16.dtype == torch.float32
    assert 0 < (img16 - img32).abs().max() < 1e-2 * img32.abs().max()
    assert (logits16 - logits32).abs().max() < 1e-2 * (logits32.abs().max() + 1)


@pytest.mark.gpu
def test_fp16_blocks_on_cuda_stay_close_to_fp32():
    torch.manual_seed(0)
    G = create_model(TINY, img_resolution=32, num_fp16_res=2, fp16_channels_last=True).eval().cuda()
    D = create_model(TINY, net="D", img_resolution=32, num_fp16_res=2).eval().cuda()
    z = torch.randn(4, G.z_dim, device="cuda")
    with torch.no_grad():
        img16 = G(z, None)
        img32 = G(z, None, force_fp32=True)
        logits16, logits32 = D(img32, None), D(img32, None, force_fp32=True)
    assert img16.dtype == torch.float32 and torch.isfinite(img16).all()
    assert (img16 - img32).abs().max() < 0.05 * img32.abs().max()
    assert logits16.dtype == torch.float32 and torch.isfinite(logits16).all()
    assert (logits16 - logits32).abs().max() < 0.05 * (logits32.abs().max() + 1)


def test_generator_update_emas_moves_w_avg_towards_batch_mean():
    torch.manual_seed(0)
    G = create_model(TINY)
    z, c = make_latents(G)
    w = G.mapping(z, c)[:, 0]
    G(z, c, update_emas=True)
    expected = w.mean(0) * (1 - G.config.w_avg_beta)  # w_avg started at 0
    torch.testing.assert_close(G.mapping.w_avg, expected, rtol=1e-5, atol=1e-7)


@pytest.mark.parametrize(
    "overrides",
    [
        dict(img_resolution=48),
        dict(img_resolution=2),
        dict(architecture="wide"),
        dict(fused_modconv_default="x"),
        dict(z_dim=0),
        dict(c_dim=-1),
    ],
)
def test_bad_generator_configs_are_rejected(overrides):
    with pytest.raises(UserInputError):
        create_model(TINY, **overrides)


def test_bad_discriminator_config_and_unknown_override():
    with pytest.raises(UserInputError, match="power of two"):
        StyleGAN2DiscriminatorConfig(img_resolution=100)
    with pytest.raises(UserInputError, match=">= 8"):
        StyleGAN2DiscriminatorConfig(img_resolution=4)
    with pytest.raises(UserInputError, match="valid options"):
        create_model(TINY, no_such_option=3)


def test_extra_repr_shows_hyperparameters():
    text = repr(create_model(TINY))
    assert "architecture=skip" in text and "resolution=16" in text and "lr_multiplier=0.01" in text


# ------------------------------------------------------------------------------------------------------------
# Official reference outputs (NVlabs networks on CPU; see ../shared/reference/README.md).

REFERENCE_ATOL = 1e-4


def _official_state(stub) -> dict[str, torch.Tensor]:
    """The official state dict minus the resampling filters (non-persistent buffers here)."""
    return {k: v for k, v in stub.state_dict().items() if not k.endswith("resample_filter")}


def _load_reference(name: str):
    from styleforge.convert.safe_pickle import load_official_pickle

    snap = load_official_pickle(reference_file(f"{name}_stripped.pkl"))
    ref = dict(np.load(reference_file(f"{name}.npz")))
    gk = snap["G_ema"].init_kwargs
    g_cfg = StyleGAN2GeneratorConfig(
        z_dim=gk["z_dim"],
        c_dim=gk["c_dim"],
        w_dim=gk["w_dim"],
        img_resolution=gk["img_resolution"],
        img_channels=gk["img_channels"],
        mapping_layers=gk["mapping_kwargs"].get("num_layers", 8),
        channel_base=gk["channel_base"],
        channel_max=gk["channel_max"],
        fused_modconv_default=gk["fused_modconv_default"],
    )
    dk = snap["D"].init_kwargs
    d_cfg = StyleGAN2DiscriminatorConfig(
        c_dim=dk["c_dim"],
        img_resolution=dk["img_resolution"],
        img_channels=dk["img_channels"],
        channel_base=dk["channel_base"],
        channel_max=dk["channel_max"],
        mbstd_group_size=dk["epilogue_kwargs"]["mbstd_group_size"],
    )
    nets = {}
    for key, cls, cfg in (
        ("G_ema", StyleGAN2Generator, g_cfg),
        ("G", StyleGAN2Generator, g_cfg),
        ("D", StyleGAN2Discriminator, d_cfg),
    ):
        net = cls(cfg).eval()
        net.load_state_dict(_official_state(snap[key]), strict=True)
        nets[key] = net
    return nets, ref


def _close(out: torch.Tensor, ref: np.ndarray, what: str) -> None:
    err = (out - torch.from_numpy(ref)).abs().max().item()
    assert err <= REFERENCE_ATOL, f"{what}: max abs error {err:.3g} > {REFERENCE_ATOL}"


@pytest.mark.reference
@pytest.mark.parametrize("name", ["sg2_skip", "sg2_skip_cond"])
@pytest.mark.parametrize("impl", ["ref", "fast"])
def test_matches_official_outputs(name, impl):
    nets, ref = _load_reference(name)
    G, G_raw, D = (nets[k].set_ops_impl(impl) for k in ("G_ema", "G", "D"))
    z, c = torch.from_numpy(ref["z"]), torch.from_numpy(ref["c"])
    with torch.no_grad():
        _close(G.mapping.w_avg, ref["w_avg"], "w_avg")
        _close(G.mapping(z, c), ref["ws_psi1"], "ws psi=1")
        _close(G.mapping(z, c, truncation_psi=0.7), ref["ws_psi0.7"], "ws psi=0.7")
        _close(
            G.mapping(z, c, truncation_psi=0.5, truncation_cutoff=4), ref["ws_psi0.5_cutoff4"], "ws cutoff"
        )
        _close(G(z, c), ref["img_psi1_const"], "img psi=1")
        _close(G(z, c, truncation_psi=0.7), ref["img_psi0.7_const"], "img psi=0.7")
        _close(
            G(z, c, truncation_psi=0.5, truncation_cutoff=4), ref["img_psi0.5_cutoff4_const"], "img cutoff"
        )
        _close(
            G.synthesis(torch.from_numpy(ref["ws_psi1"]), noise_mode="const"),
            ref["img_synthesis_from_ws_psi1"],
            "synthesis",
        )
        _close(G(z, c, noise_mode="none"), ref["img_psi1_none"], "noise none")
        _close(G(z, c, fused_modconv=False), ref["img_psi1_const_nonfused"], "non-fused")
        _close(G_raw(z, c), ref["img_psi1_const_from_G_not_ema"], "G (not EMA)")
        _close(D(torch.from_numpy(ref["img_psi1_const"]), c), ref["d_logits_img_psi1"], "D(img psi=1)")
        _close(D(torch.from_numpy(ref["img_psi0.7_const"]), c), ref["d_logits_img_psi0.7"], "D(img psi=0.7)")
        _close(D(torch.from_numpy(ref["d_input_randn"]), c), ref["d_logits_randn"], "D(randn)")
        # per-block features of sample 0
        ws = G.mapping(z[:1], c[:1])
        x = img = None
        w_idx = 0
        for block in G.synthesis.blocks():
            x, img = block(x, img, ws.narrow(1, w_idx, block.num_conv + block.num_torgb), noise_mode="const")
            w_idx += block.num_conv
            _close(x, ref[f"feat/synthesis.b{block.resolution}/x"], f"b{block.resolution} x")
            _close(img, ref[f"feat/synthesis.b{block.resolution}/img"], f"b{block.resolution} img")
