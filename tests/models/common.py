"""A reusable test battery for generators and discriminators (like diffusers' ``ModelTesterMixin``).

Usage from any model test::

    from tests.models.common import GENERATOR_CHECKS, DISCRIMINATOR_CHECKS, run_generator_battery

    @pytest.mark.parametrize("check", sorted(GENERATOR_CHECKS))
    def test_generator(check):
        GENERATOR_CHECKS[check](lambda: create_model("stylegan2-tiny"))

    # or everything at once:
    run_generator_battery(lambda: create_model("stylegan2-tiny"))

Every check takes a zero-argument factory (``make_G`` / ``make_D``) that builds a *fresh* network from a
preset (the save/load check needs two instances with different random initialisations) plus keyword options.
Generators are
expected to follow the official call convention: ``G(z, c, truncation_psi=..., truncation_cutoff=...,
noise_mode=...)``, ``G.mapping(z, c, ...)`` with a ``w_avg`` buffer, ``G.synthesis(ws, noise_mode=...)`` and
the attributes ``z_dim, c_dim, w_dim, img_resolution, img_channels, num_ws``. Checks that need a mapping
network or noise inputs are skipped (they return early) for networks without them (PGGAN, StyleGAN3's noise).
"""

from __future__ import annotations

import dataclasses
import json
from collections.abc import Callable
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file, save_file

from styleforge.models.base import Network, config_from_dict, network_from_description
from styleforge.utils.errors import UserInputError

__all__ = [
    "make_latents",
    "make_images",
    "GENERATOR_CHECKS",
    "DISCRIMINATOR_CHECKS",
    "run_generator_battery",
    "run_discriminator_battery",
]

Factory = Callable[[], Network]
BATCH = 4
SEED = 1234
#: images of the tiny test presets stay far inside this range at initialisation
MAX_ABS_OUTPUT = 1e3


def make_latents(G: Network, batch: int = BATCH, seed: int = SEED) -> tuple[torch.Tensor, torch.Tensor]:
    """Seeded ``z [batch, z_dim]`` and one-hot ``c [batch, c_dim]`` (``[batch, 0]`` when unconditional)."""
    gen = torch.Generator().manual_seed(seed)
    z = torch.randn([batch, G.z_dim], generator=gen)
    c = torch.zeros([batch, G.c_dim])
    if G.c_dim > 0:
        c[torch.arange(batch), torch.arange(batch) % G.c_dim] = 1
    return z, c


def make_images(D: Network, batch: int = BATCH, seed: int = SEED) -> tuple[torch.Tensor, torch.Tensor]:
    """Seeded images ``[batch, C, R, R]`` in ``[-1, 1]`` and one-hot labels for ``D``."""
    gen = torch.Generator().manual_seed(seed)
    img = torch.rand([batch, D.img_channels, D.img_resolution, D.img_resolution], generator=gen) * 2 - 1
    c = torch.zeros([batch, D.c_dim])
    if D.c_dim > 0:
        c[torch.arange(batch), torch.arange(batch) % D.c_dim] = 1
    return img, c


def _has_mapping(G: Network) -> bool:
    return hasattr(G, "mapping") and hasattr(G.mapping, "w_avg")


def _has_noise(G: Network) -> bool:
    return any(name.endswith("noise_strength") for name, _ in G.named_parameters())


def _with_nonzero_noise(G: Network) -> Network:
    """Noise strengths start at 0; give them a value so that noise modes make a visible difference."""
    with torch.no_grad():
        for name, p in G.named_parameters():
            if name.endswith("noise_strength"):
                p.fill_(0.5)
    return G


# ------------------------------------------------------------------------------------------------------------
# Checks shared by generators and discriminators.


def check_state_dict_roundtrip(
    make_net: Factory, run: Callable[[Network], torch.Tensor], tmp_dir: Path
) -> None:
    """Weights saved to safetensors and loaded into another random instance give identical outputs."""
    torch.manual_seed(1)
    a = make_net().eval()
    torch.manual_seed(2)
    b = make_net().eval()
    with torch.no_grad():
        out_a = run(a)
        assert not torch.equal(out_a, run(b)), "two random initialisations gave the same output"
    path = tmp_dir / "weights.safetensors"
    save_file({k: v.contiguous() for k, v in a.state_dict().items()}, str(path))
    loaded = load_file(str(path))
    assert set(loaded) == set(b.state_dict()), "state_dict keys differ between two instances of one config"
    b.load_state_dict(loaded, strict=True)
    with torch.no_grad():
        torch.testing.assert_close(run(b), out_a, rtol=0, atol=0)
    # derivable filters must not be saved
    assert not any(k.endswith("resample_filter") for k in loaded), (
        "filters derived from the config were saved"
    )


def check_config_roundtrip(make_net: Factory) -> None:
    """``describe()`` survives JSON, rebuilds the same config and the same parameter shapes."""
    net = make_net()
    desc = json.loads(json.dumps(net.describe()))
    assert desc["_class_name"] == type(net).__name__
    rebuilt = network_from_description(desc)
    assert type(rebuilt) is type(net)
    assert rebuilt.config == net.config
    shapes = {k: tuple(v.shape) for k, v in net.state_dict().items()}
    assert {k: tuple(v.shape) for k, v in rebuilt.state_dict().items()} == shapes


def check_strict_config(make_net: Factory) -> None:
    """An unknown config key is rejected with a message that lists the valid keys."""
    net = make_net()
    data = dataclasses.asdict(net.config)
    data["no_such_option"] = 1
    with pytest.raises(UserInputError, match="no_such_option") as info:
        config_from_dict(type(net.config), data)
    first_field = dataclasses.fields(net.config)[0].name
    assert first_field in str(info.value), "the error should list the valid options"
    with pytest.raises(UserInputError):
        type(net).from_config(data)


def check_repr(make_net: Factory) -> None:
    """``repr`` works and shows hyperparameters via ``extra_repr``."""
    text = repr(make_net())
    assert type(make_net()).__name__ in text
    assert "=" in text, "layers should print their hyperparameters (extra_repr)"


def check_ops_impl_switch(make_net: Factory, run: Callable[[Network], torch.Tensor]) -> None:
    """``set_ops_impl('ref')`` and ``('fast')`` give the same outputs (to float32 rounding)."""
    torch.manual_seed(0)
    net = make_net().eval()
    with torch.no_grad():
        ref = run(net.set_ops_impl("ref"))
        fast = run(net.set_ops_impl("fast"))
    impls = {m.ops_impl for m in net.modules() if hasattr(m, "ops_impl")}
    assert impls == {"fast"}, f"set_ops_impl did not reach every layer: {impls}"
    torch.testing.assert_close(fast, ref, rtol=1e-4, atol=1e-4)


# ------------------------------------------------------------------------------------------------------------
# Generator checks.


def g_output(make_G: Factory, **_: object) -> None:
    """Shape ``[N, C, R, R]``, float32, finite and not constant."""
    torch.manual_seed(0)
    G = make_G().eval()
    z, c = make_latents(G)
    with torch.no_grad():
        img = G(z, c)
    assert img.shape == (BATCH, G.img_channels, G.img_resolution, G.img_resolution)
    assert img.dtype == torch.float32
    assert torch.isfinite(img).all()
    assert img.abs().max() < MAX_ABS_OUTPUT
    assert img.std() > 1e-3, "generator output is constant"
    assert not torch.allclose(img[0], img[1]), "different latents gave the same image"
    if _has_mapping(G):
        ws = G.mapping(z, c)
        assert ws.shape == (BATCH, G.num_ws, G.w_dim)


def g_determinism(make_G: Factory, **_: object) -> None:
    """Two calls with the same inputs agree exactly; random noise follows the ``torch.Generator`` seed."""
    torch.manual_seed(0)
    G = _with_nonzero_noise(make_G().eval())
    z, c = make_latents(G)
    with torch.no_grad():
        assert torch.equal(G(z, c), G(z, c))
        if _has_noise(G):
            a = G(z, c, noise_mode="random", generator=torch.Generator().manual_seed(5))
            b = G(z, c, noise_mode="random", generator=torch.Generator().manual_seed(5))
            d = G(z, c, noise_mode="random", generator=torch.Generator().manual_seed(6))
            assert torch.equal(a, b)
            assert not torch.allclose(a, d)
    # construction is seeded by the global RNG
    torch.manual_seed(3)
    s1 = make_G().state_dict()
    torch.manual_seed(3)
    s2 = make_G().state_dict()
    assert all(torch.equal(s1[k], s2[k]) for k in s1)


def g_state_dict_roundtrip(make_G: Factory, tmp_dir: Path, **_: object) -> None:
    def run(G: Network) -> torch.Tensor:
        z, c = make_latents(G)
        return G(z, c)

    check_state_dict_roundtrip(lambda: _with_nonzero_noise(make_G()), run, tmp_dir)


def g_config_roundtrip(make_G: Factory, **_: object) -> None:
    check_config_roundtrip(make_G)


def g_strict_config(make_G: Factory, **_: object) -> None:
    check_strict_config(make_G)


def g_backward(make_G: Factory, **_: object) -> None:
    """Training mode: every trainable parameter gets a finite gradient, and most get a non-zero one."""
    torch.manual_seed(0)
    G = _with_nonzero_noise(make_G().train())
    z, c = make_latents(G)
    img = G(z, c, noise_mode="random") if _has_noise(G) else G(z, c)
    (img * torch.linspace(-1, 1, img.numel()).reshape(img.shape)).sum().backward()
    params = [(n, p) for n, p in G.named_parameters() if p.requires_grad]
    missing = [n for n, p in params if p.grad is None]
    assert not missing, f"parameters without gradient: {missing}"
    bad = [n for n, p in params if not torch.isfinite(p.grad).all()]
    assert not bad, f"non-finite gradients: {bad}"
    nonzero = sum(int(p.grad.abs().sum() > 0) for _, p in params)
    assert nonzero >= 0.9 * len(params), f"only {nonzero} of {len(params)} parameters got a non-zero gradient"


def g_noise_modes(make_G: Factory, **_: object) -> None:
    """``const`` is reproducible, ``random`` varies between calls, ``none`` differs from both."""
    torch.manual_seed(0)
    G = _with_nonzero_noise(make_G().eval())
    if not _has_noise(G):
        return
    z, c = make_latents(G)
    with torch.no_grad():
        const = G(z, c, noise_mode="const")
        assert torch.equal(const, G(z, c, noise_mode="const"))
        r1 = G(z, c, noise_mode="random")
        r2 = G(z, c, noise_mode="random")
        none = G(z, c, noise_mode="none")
        assert not torch.allclose(r1, r2)
        assert not torch.allclose(none, const)
        assert not torch.allclose(none, r1)
        # with zero noise strength every mode gives the same image
        for name, p in G.named_parameters():
            if name.endswith("noise_strength"):
                p.zero_()
        torch.testing.assert_close(
            G(z, c, noise_mode="random"), G(z, c, noise_mode="none"), rtol=0, atol=1e-6
        )
        with pytest.raises(ValueError, match="noise_mode"):
            G(z, c, noise_mode="sometimes")


def g_truncation(make_G: Factory, **_: object) -> None:
    """``psi = 0`` gives ``w_avg``; a cutoff truncates only the first ws; ``update_emas`` moves ``w_avg``."""
    torch.manual_seed(0)
    G = make_G().eval()
    if not _has_mapping(G):
        return
    z, c = make_latents(G)
    with torch.no_grad():
        G.mapping.w_avg.copy_(torch.randn_like(G.mapping.w_avg))
        ws0 = G.mapping(z, c, truncation_psi=0)
        if G.mapping.w_avg.ndim == 1:
            torch.testing.assert_close(ws0, G.mapping.w_avg.expand_as(ws0), rtol=0, atol=1e-6)
        ws = G.mapping(z, c)
        cut = max(G.num_ws // 2, 1)
        half = G.mapping(z, c, truncation_psi=0.5, truncation_cutoff=cut)
        torch.testing.assert_close(half[:, cut:], ws[:, cut:], rtol=0, atol=0)
        torch.testing.assert_close(half[:, :cut], (ws0[:, :cut] + ws[:, :cut]) / 2, rtol=1e-5, atol=1e-6)
        # same label -> identical images at psi = 0
        img = G(z, c[:1].expand_as(c), truncation_psi=0)
        torch.testing.assert_close(img[1:], img[:1].expand_as(img[1:]), rtol=0, atol=1e-5)
        before = G.mapping.w_avg.clone()
        G.mapping(z, c, update_emas=True)
        assert not torch.equal(before, G.mapping.w_avg), "update_emas=True did not move w_avg"
        moved = G.mapping.w_avg.clone()
        G.mapping(z, c)
        assert torch.equal(moved, G.mapping.w_avg), "w_avg moved without update_emas"


def g_synthesis_matches_full(make_G: Factory, **_: object) -> None:
    """``G(z, c) == G.synthesis(G.mapping(z, c))``."""
    torch.manual_seed(0)
    G = make_G().eval()
    if not _has_mapping(G):
        return
    z, c = make_latents(G)
    with torch.no_grad():
        full = G(z, c, truncation_psi=0.7, noise_mode="const")
        two = G.synthesis(G.mapping(z, c, truncation_psi=0.7), noise_mode="const")
    torch.testing.assert_close(full, two, rtol=0, atol=0)


def g_ops_impl(make_G: Factory, **_: object) -> None:
    def run(G: Network) -> torch.Tensor:
        z, c = make_latents(G)
        return G(z, c)

    check_ops_impl_switch(make_G, run)


def g_repr(make_G: Factory, **_: object) -> None:
    check_repr(make_G)


#: name -> check(make_G, tmp_dir=...) for generators
GENERATOR_CHECKS: dict[str, Callable[..., None]] = {
    "output": g_output,
    "determinism": g_determinism,
    "state_dict_roundtrip": g_state_dict_roundtrip,
    "config_roundtrip": g_config_roundtrip,
    "strict_config": g_strict_config,
    "backward": g_backward,
    "noise_modes": g_noise_modes,
    "truncation": g_truncation,
    "synthesis_matches_full": g_synthesis_matches_full,
    "ops_impl": g_ops_impl,
    "repr": g_repr,
}


# ------------------------------------------------------------------------------------------------------------
# Discriminator checks.


def d_output(make_D: Factory, **_: object) -> None:
    """Logits ``[N, 1]`` float32, finite, sample-dependent; wrong image shapes give a clear error."""
    torch.manual_seed(0)
    D = make_D().eval()
    img, c = make_images(D)
    with torch.no_grad():
        logits = D(img, c)
    assert logits.shape == (BATCH, 1)
    assert logits.dtype == torch.float32
    assert torch.isfinite(logits).all()
    assert logits.std() > 0, "logits do not depend on the image"
    bad = torch.zeros([BATCH, D.img_channels, D.img_resolution * 2, D.img_resolution * 2])
    with pytest.raises(ValueError, match="img_resolution|shape"):
        D(bad, c)


def d_determinism(make_D: Factory, **_: object) -> None:
    torch.manual_seed(0)
    D = make_D().eval()
    img, c = make_images(D)
    with torch.no_grad():
        assert torch.equal(D(img, c), D(img, c))


def d_state_dict_roundtrip(make_D: Factory, tmp_dir: Path, **_: object) -> None:
    def run(D: Network) -> torch.Tensor:
        img, c = make_images(D)
        return D(img, c)

    check_state_dict_roundtrip(make_D, run, tmp_dir)


def d_config_roundtrip(make_D: Factory, **_: object) -> None:
    check_config_roundtrip(make_D)


def d_strict_config(make_D: Factory, **_: object) -> None:
    check_strict_config(make_D)


def d_backward(make_D: Factory, **_: object) -> None:
    """Finite parameter gradients, and a finite second-order gradient (the R1 penalty needs it)."""
    torch.manual_seed(0)
    D = make_D().train()
    img, c = make_images(D)
    img.requires_grad_(True)
    logits = D(img, c)
    (grad_img,) = torch.autograd.grad(logits.sum(), img, create_graph=True)
    assert torch.isfinite(grad_img).all() and grad_img.abs().sum() > 0
    r1 = grad_img.square().sum(dim=[1, 2, 3]).mean()
    (logits.mean() + r1).backward()
    params = [(n, p) for n, p in D.named_parameters() if p.requires_grad]
    missing = [n for n, p in params if p.grad is None]
    assert not missing, f"parameters without gradient: {missing}"
    bad = [n for n, p in params if not torch.isfinite(p.grad).all()]
    assert not bad, f"non-finite gradients: {bad}"


def d_conditioning(make_D: Factory, **_: object) -> None:
    """A conditional D gives different logits for different labels."""
    torch.manual_seed(0)
    D = make_D().eval()
    if D.c_dim == 0:
        return
    img, c = make_images(D)
    with torch.no_grad():
        assert not torch.allclose(D(img, c), D(img, c.roll(1, dims=1)))


def d_ops_impl(make_D: Factory, **_: object) -> None:
    def run(D: Network) -> torch.Tensor:
        img, c = make_images(D)
        return D(img, c)

    check_ops_impl_switch(make_D, run)


def d_repr(make_D: Factory, **_: object) -> None:
    check_repr(make_D)


#: name -> check(make_D, tmp_dir=...) for discriminators
DISCRIMINATOR_CHECKS: dict[str, Callable[..., None]] = {
    "output": d_output,
    "determinism": d_determinism,
    "state_dict_roundtrip": d_state_dict_roundtrip,
    "config_roundtrip": d_config_roundtrip,
    "strict_config": d_strict_config,
    "backward": d_backward,
    "conditioning": d_conditioning,
    "ops_impl": d_ops_impl,
    "repr": d_repr,
}


def run_generator_battery(make_G: Factory, tmp_dir: Path) -> None:
    """Run every generator check on networks built by ``make_G``."""
    for check in GENERATOR_CHECKS.values():
        check(make_G, tmp_dir=tmp_dir)


def run_discriminator_battery(make_D: Factory, tmp_dir: Path) -> None:
    """Run every discriminator check on networks built by ``make_D``."""
    for check in DISCRIMINATOR_CHECKS.values():
        check(make_D, tmp_dir=tmp_dir)
