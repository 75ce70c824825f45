"""Converting official-format StyleGAN2 snapshots written inside the test from our own tiny networks."""

from __future__ import annotations

import pytest
import torch

from styleforge.convert import official, official_stylegan2
from styleforge.convert.official import ConversionError, NotASnapshotError, UnknownNetworkError
from styleforge.convert.safe_pickle import UnsafePickleError, safe_loads
from styleforge.models.stylegan2 import (
    StyleGAN2Discriminator,
    StyleGAN2DiscriminatorConfig,
    StyleGAN2Generator,
    StyleGAN2GeneratorConfig,
)
from tests.convert import fake_official

Z_DIM, W_DIM, C_DIM, RES = 16, 24, 3, 16
# the official constructor arguments of the tiny networks (StyleGAN3-repository layout: flat synthesis kwargs)
G_KWARGS = {
    "z_dim": Z_DIM,
    "w_dim": W_DIM,
    "mapping_kwargs": {"num_layers": 2},
    "channel_base": 256,
    "channel_max": 32,
    "fused_modconv_default": "inference_only",
    "c_dim": C_DIM,
    "img_resolution": RES,
    "img_channels": 3,
}
D_KWARGS = {
    "block_kwargs": {"freeze_layers": 0},
    "mapping_kwargs": {},
    "epilogue_kwargs": {"mbstd_group_size": 2},
    "channel_base": 256,
    "channel_max": 32,
    "c_dim": C_DIM,
    "img_resolution": RES,
    "img_channels": 3,
}


def _perturb(net: torch.nn.Module, seed: int) -> torch.nn.Module:
    """Move every parameter and persistent buffer off its initial value (biases, noise strengths, ...)."""
    g = torch.Generator().manual_seed(seed)
    persistent = net.state_dict()
    with torch.no_grad():
        for name, t in [*net.named_parameters(), *net.named_buffers()]:
            if name in persistent and t.is_floating_point() and "resample_filter" not in name:
                t.add_(0.1 * torch.randn(t.shape, generator=g))
    return net.eval()


def make_networks(arch: str = "skip") -> tuple[StyleGAN2Generator, StyleGAN2Discriminator]:
    torch.manual_seed(0)
    G = StyleGAN2Generator(
        StyleGAN2GeneratorConfig(
            z_dim=Z_DIM,
            w_dim=W_DIM,
            c_dim=C_DIM,
            img_resolution=RES,
            mapping_layers=2,
            channel_base=256,
            channel_max=32,
            architecture=arch,
        )
    )
    D = StyleGAN2Discriminator(
        StyleGAN2DiscriminatorConfig(
            c_dim=C_DIM, img_resolution=RES, channel_base=256, channel_max=32, mbstd_group_size=2
        )
    )
    return _perturb(G, 1), _perturb(D, 2)


def official_bytes(G, D, G_kwargs=G_KWARGS, D_kwargs=D_KWARGS, **snapshot_kwargs) -> bytes:
    with fake_official.official_globals():
        g = fake_official.module_state(G, G_kwargs, rename={"": "Generator"})
        d = fake_official.module_state(D, D_kwargs, rename={"": "Discriminator"})
        return fake_official.dumps(fake_official.snapshot(g, d, g, **snapshot_kwargs))


def _inputs(n: int = 2):
    g = torch.Generator().manual_seed(3)
    z = torch.randn(n, Z_DIM, generator=g)
    c = torch.nn.functional.one_hot(torch.arange(n) % C_DIM, C_DIM).float()
    return z, c


@pytest.mark.parametrize("arch", ["skip", "resnet", "orig"])
def test_converted_networks_compute_the_same_function(tmp_path, arch):
    G, D = make_networks(arch)
    path = tmp_path / "snapshot.pkl"
    G_kwargs = {**G_KWARGS, "architecture": arch}
    path.write_bytes(
        official_bytes(G, D, G_kwargs, augment_p=0.125, training_set_kwargs={"path": "data.zip"})
    )
    snap = official.load_official_pickle(path)
    G2, D2 = snap["G_ema"], snap["D"]
    assert type(G2) is StyleGAN2Generator and type(D2) is StyleGAN2Discriminator
    assert G2.config == G.config and D2.config == D.config
    z, c = _inputs()
    with torch.no_grad():
        img = G(z, c, truncation_psi=0.7, noise_mode="const")
        img2 = G2(z, c, truncation_psi=0.7, noise_mode="const")
        assert img.abs().mean() > 0.01
        assert torch.equal(img, img2)
        assert torch.equal(D(img, c), D2(img, c))
    assert snap["augment_pipe"]["p"] == pytest.approx(0.125)
    assert snap["augment_pipe"]["init_kwargs"] == {"xflip": 1, "rotate90": 1, "xint": 1}
    assert snap["training_set_kwargs"] == {"path": "data.zip"}


def test_ada_layout_nested_synthesis_kwargs_and_cuda_storages(tmp_path):
    G, D = make_networks()
    synthesis = {k: G_KWARGS[k] for k in ("channel_base", "channel_max")}
    ada_kwargs = {k: v for k, v in G_KWARGS.items() if k not in synthesis and k != "fused_modconv_default"}
    ada_kwargs["synthesis_kwargs"] = synthesis
    with fake_official.official_globals():
        g = fake_official.module_state(G, ada_kwargs)
        data = fake_official.dumps({"G_ema": g}, protocol=3, cuda_tags=True)
    path = tmp_path / "ada.pkl"
    path.write_bytes(data)
    snap = official.load_official_pickle(path)
    assert snap["G"] is None and snap["D"] is None and snap["augment_pipe"] is None
    G2 = snap["G_ema"]
    assert G2.config.fused_modconv_default == official_stylegan2.ADA_FUSED_MODCONV
    assert G2.config.w_avg_beta == official_stylegan2.ADA_W_AVG_BETA
    z, c = _inputs()
    with torch.no_grad():
        assert torch.equal(G(z, c, noise_mode="const"), G2(z, c, noise_mode="const"))


def _stub(G, G_kwargs=G_KWARGS, edit=None):
    with fake_official.official_globals():
        g = fake_official.module_state(G, G_kwargs)
        if edit is not None:
            edit(g)
        return safe_loads(fake_official.dumps({"G": g}))["G"]


def test_every_key_and_shape_is_accounted_for():
    G, _ = make_networks()

    def add_stray(g):
        g.state["_modules"]["synthesis"].state["_buffers"]["stray"] = torch.zeros(2)

    with pytest.raises(ConversionError, match=r"official keys no rule claims: synthesis\.stray"):
        official.convert_network(_stub(G, edit=add_stray))

    def drop_const(g):
        b4 = g.state["_modules"]["synthesis"].state["_modules"]["b4"]
        del b4.state["_parameters"]["const"]

    # still recognised? no: without the constant it is not a StyleGAN2 generator at all
    with pytest.raises(UnknownNetworkError, match="No converter recognises"):
        official.convert_network(_stub(G, edit=drop_const))

    def drop_bias(g):
        fc0 = g.state["_modules"]["mapping"].state["_modules"]["fc0"]
        del fc0.state["_parameters"]["bias"]

    with pytest.raises(ConversionError, match=r"styleforge keys left unfilled: mapping\.fc0\.bias"):
        official.convert_network(_stub(G, edit=drop_bias))

    def reshape(g):
        fc1 = g.state["_modules"]["mapping"].state["_modules"]["fc1"]
        fc1.state["_parameters"]["weight"] = torch.zeros(5, 5)

    with pytest.raises(
        ConversionError, match=r"mapping\.fc1\.weight -> mapping\.fc1\.weight \(shape \(5, 5\)"
    ):
        official.convert_network(_stub(G, edit=reshape))

    def other_filter(g):
        b8 = g.state["_modules"]["synthesis"].state["_modules"]["b8"]
        b8.state["_buffers"]["resample_filter"] = torch.full((4, 4), 1 / 16)

    with pytest.raises(ConversionError, match="value differs from the one derived from the config"):
        official.convert_network(_stub(G, edit=other_filter))


def test_unknown_constructor_arguments_are_an_error():
    G, _ = make_networks()
    with pytest.raises(ConversionError, match=r"mapping_kwargs\.fancy_option=1"):
        official.convert_network(
            _stub(G, {**G_KWARGS, "mapping_kwargs": {"num_layers": 2, "fancy_option": 1}})
        )
    # options without a field of ours are fine when they hold the only value we implement ...
    implied = {**G_KWARGS, "activation": "lrelu", "mapping_kwargs": {"num_layers": 2, "embed_features": None}}
    assert official.convert_network(_stub(G, implied)).config == G.config
    # ... and an error otherwise
    with pytest.raises(ConversionError, match=r"activation='relu'"):
        official.convert_network(_stub(G, {**G_KWARGS, "activation": "relu"}))


def test_not_a_snapshot(tmp_path):
    p = tmp_path / "x.pkl"
    p.write_bytes(safe_dumps({"hello": [1, 2, 3]}))
    with pytest.raises(NotASnapshotError, match="not a GAN training snapshot"):
        official.load_official_pickle(p)
    p.write_bytes(safe_dumps([1, 2]))
    with pytest.raises(NotASnapshotError):
        official.load_official_pickle(p)


def test_unsafe_snapshot_names_the_global(tmp_path):
    import pickle

    p = tmp_path / "evil.pkl"
    p.write_bytes(pickle.dumps({"G": _Eval()}))
    with pytest.raises(UnsafePickleError, match="builtins.eval"):
        official.load_official_pickle(p)


class _Eval:
    def __reduce__(self):
        return eval, ("1 + 1",)


def safe_dumps(obj) -> bytes:
    import pickle

    return pickle.dumps(obj, protocol=4)
