"""styleforge.loading: our format (config.json + safetensors) and official pickles, with strict key checks."""

from __future__ import annotations

import json
import zipfile

import pytest
import torch
from safetensors.torch import load_file, save_file

import styleforge
from styleforge import loading
from styleforge.loading import LoadedNetworks, load, save
from styleforge.models.stylegan2 import StyleGAN2Discriminator, StyleGAN2Generator
from styleforge.utils.errors import UserInputError
from tests.conftest import reference_file
from tests.convert import fake_official
from tests.convert.test_official_stylegan2 import C_DIM, Z_DIM, make_networks, official_bytes


def _outputs(G, D):
    g = torch.Generator().manual_seed(5)
    z = torch.randn(2, Z_DIM, generator=g)
    c = torch.eye(C_DIM)[:2]
    with torch.no_grad():
        img = G(z, c, truncation_psi=0.5, noise_mode="const")
        return img, D(img, c)


def test_save_load_round_trip_is_exact(tmp_path):
    G, D = make_networks()
    G_ema = make_networks()[0]
    with torch.no_grad():
        G_ema.mapping.w_avg.add_(1.0)  # G_ema differs from G
    out = save(tmp_path / "run", G=G, D=D, G_ema=G_ema, extra={"augment_p": 0.3, "kimg": 12})
    config = json.loads((out / "config.json").read_text())
    assert config["format"] == "styleforge" and config["styleforge_version"] == styleforge.__version__
    assert config["networks"]["G"]["_class_name"] == "StyleGAN2Generator"
    assert config["extra"] == {"augment_p": 0.3, "kimg": 12}
    keys = set(load_file(str(out / "model.safetensors")))
    assert "G_ema.synthesis.b4.const" in keys and "D.b4.out.weight" in keys and "G.mapping.w_avg" in keys
    assert not [p for p in out.iterdir() if p.name.endswith(".tmp")]  # atomic writes leave no temporaries

    for spec in (out, out / "config.json", out / "model.safetensors"):
        loaded = load(spec)
        assert isinstance(loaded, LoadedNetworks) and loaded.source == "styleforge"
        assert type(loaded.G) is StyleGAN2Generator and type(loaded.D) is StyleGAN2Discriminator
        assert loaded.generator is loaded.G_ema and loaded.augment_p == 0.3
        for ours, theirs in ((loaded.G, G), (loaded.G_ema, G_ema)):
            img, logits = _outputs(ours, loaded.D)
            img_ref, logits_ref = _outputs(theirs, D)
            assert torch.equal(img, img_ref) and torch.equal(logits, logits_ref)


def test_generator_property_falls_back_to_G(tmp_path):
    G, _ = make_networks()
    loaded = load(save(tmp_path / "g", G=G))
    assert loaded.generator is loaded.G and loaded.D is None and loaded.G_ema is None
    _, D = make_networks()
    with pytest.raises(UserInputError, match="no generator"):
        _ = load(save(tmp_path / "d", D=D)).generator


def test_official_pickle_is_converted_and_survives_our_format(tmp_path):
    G, D = make_networks()
    pkl = tmp_path / "network-snapshot-000100.pkl"
    pkl.write_bytes(
        official_bytes(G, D, augment_p=0.0625, training_set_kwargs={"path": "faces.zip", "xflip": True})
    )
    loaded = load(pkl)
    assert loaded.source == "official" and loaded.augment_p == pytest.approx(0.0625)
    assert loaded.training_set_kwargs == {"path": "faces.zip", "xflip": True}
    img, logits = _outputs(loaded.generator, loaded.D)
    img_ref, logits_ref = _outputs(G, D)
    assert torch.equal(img, img_ref) and torch.equal(logits, logits_ref)

    out = save(tmp_path / "converted", **loaded.networks(), extra={"augment_p": loaded.augment_p})
    again = load(out)
    assert torch.equal(_outputs(again.generator, again.D)[0], img_ref)


@pytest.mark.reference
def test_reference_snapshot_convert_reload_identical(tmp_path):
    loaded = load(reference_file("sg2_skip_cond_stripped.pkl"))
    out = save(tmp_path / "sg2", **loaded.networks())
    again = load(out)
    z = torch.randn(3, loaded.generator.z_dim, generator=torch.Generator().manual_seed(1))
    c = torch.eye(loaded.generator.c_dim)[[1, 4, 9]]
    with torch.no_grad():
        for name in ("G", "G_ema"):
            a = getattr(loaded, name)(z, c, truncation_psi=0.7, noise_mode="const")
            b = getattr(again, name)(z, c, truncation_psi=0.7, noise_mode="const")
            assert torch.equal(a, b), name
        assert torch.equal(loaded.D(a, c), again.D(b, c))


def test_strict_loading_reports_missing_and_unexpected_tensors(tmp_path):
    G, _ = make_networks()
    out = save(tmp_path / "g", G=G)
    tensors = load_file(str(out / "model.safetensors"))
    tensors.pop("G.mapping.fc0.bias")
    tensors["G.mapping.extra_thing"] = torch.zeros(1)
    save_file(tensors, str(out / "model.safetensors"))
    with pytest.raises(UserInputError) as info:
        load(out)
    msg = str(info.value)
    assert "missing tensors: mapping.fc0.bias" in msg and "unexpected tensors: mapping.extra_thing" in msg

    tensors = load_file(str(save(tmp_path / "h", G=G) / "model.safetensors"))
    tensors["D.b4.out.weight"] = torch.zeros(1)
    save_file(tensors, str(tmp_path / "h" / "model.safetensors"))
    with pytest.raises(UserInputError, match=r"belong to no network.*D\.b4\.out\.weight"):
        load(tmp_path / "h")


def test_clear_errors_for_bad_paths(tmp_path, monkeypatch):
    with pytest.raises(UserInputError, match="does not exist"):
        load(tmp_path / "nope.pkl")
    (tmp_path / "empty").mkdir()
    with pytest.raises(UserInputError, match="directory without config.json"):
        load(tmp_path / "empty")
    text = tmp_path / "notes.txt"
    text.write_text("hello")
    with pytest.raises(UserInputError, match="unknown format"):
        load(text)
    ckpt = tmp_path / "model.pt"
    with zipfile.ZipFile(ckpt, "w") as zf:
        zf.writestr("archive/data.pkl", b"")
    with pytest.raises(UserInputError, match="zip archive"):
        load(ckpt)
    lone = tmp_path / "lone.safetensors"
    save_file({"x": torch.zeros(1)}, str(lone))
    with pytest.raises(UserInputError, match="no config.json next to it"):
        load(lone)
    not_gan = tmp_path / "numbers.pkl"
    with fake_official.official_globals():
        not_gan.write_bytes(fake_official.dumps({"numbers": [1, 2, 3]}))
    with pytest.raises(UserInputError, match="not a GAN training snapshot"):
        load(not_gan)
    with pytest.raises(UserInputError, match="at least one of G, D, G_ema"):
        save(tmp_path / "x")
    G, _ = make_networks()
    with pytest.raises(UserInputError, match="JSON-serialisable"):
        save(tmp_path / "y", G=G, extra={"t": torch.zeros(1)})


def test_builtin_networks_resolve_to_the_assets_folder(tmp_path, monkeypatch):
    G, _ = make_networks()
    save(tmp_path / "tiny", G_ema=G)
    monkeypatch.setattr(loading, "_assets_dir", lambda: tmp_path)
    loaded = load("builtin:tiny")
    assert torch.equal(_outputs(loaded.generator, make_networks()[1])[0], _outputs(G, make_networks()[1])[0])
    with pytest.raises(
        UserInputError, match=r"Unknown built-in network 'builtin:emoij'; available: builtin:tiny"
    ):
        load("builtin:emoij")
