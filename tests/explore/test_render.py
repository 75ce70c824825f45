"""The explorer's renderer: requests, latents, mixing, transforms, layer views, edits, memory, names."""

from __future__ import annotations

import io

import numpy as np
import pytest
import torch

import styleforge
from styleforge.explore.directions import load_directions
from styleforge.explore.render import Explorer, parse_request, parse_uploaded_w
from styleforge.generation import generate_images
from styleforge.loading import save
from styleforge.utils.errors import UserInputError
from styleforge.utils.images import to_uint8
from styleforge.utils.seeding import z_from_seed
from tests.explore.conftest import decode, write_directions


def _render(explorer, **fields):
    return explorer.render(parse_request({"network": "builtin:emoji", **fields}))


def _generated(G, seed, **kwargs):
    return to_uint8(generate_images(G, [seed], **kwargs))[0]


def _emoji(explorer):
    explorer.open("builtin:emoji")
    return explorer._loaded["builtin:emoji"].G


# -- requests -------------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "message, words",
    [
        ([1, 2], "JSON object"),
        ({"seed": 1}, "needs 'network'"),
        ({"network": "builtin:emoji", "sed": 1}, "Unknown field(s) sed"),
        ({"network": "builtin:emoji", "psi": "0.5"}, "'psi' must be a number"),
        ({"network": "builtin:emoji", "psi": True}, "'psi' must be a number"),
        ({"network": "builtin:emoji", "psi": float("nan")}, "'psi' must be a number"),
        ({"network": "builtin:emoji", "seed": -1}, "'seed' must be a number between 0"),
        ({"network": "builtin:emoji", "batch": 1000}, "'batch' must be an integer between 1 and 16"),
        ({"network": "builtin:emoji", "noise_mode": "loud"}, "'noise_mode' must be one of"),
        ({"network": "builtin:emoji", "translate": [0.1]}, "'translate' must be a pair"),
        ({"network": "builtin:emoji", "fft": 1}, "'fft' must be true or false"),
        ({"network": "builtin:emoji", "edits": "up"}, "'edits' must be a list"),
        ({"network": ""}, "'network' must be a non-empty string"),
    ],
)
def test_parse_request_refuses_malformed_fields(message, words):
    with pytest.raises(UserInputError, match=None) as e:
        parse_request(message)
    assert words in str(e.value)


def test_network_names_never_paths(tmp_path, explorer):
    G = styleforge.create_model("stylegan2-tiny")
    saved = save(tmp_path / "mynet", G_ema=G)
    ex = Explorer([str(saved)])
    assert ex.network_names() == ["mynet", "builtin:emoji"]
    assert ex.open("mynet")["family"] == "StyleGAN2Generator"
    for name in (str(saved), str(tmp_path), "/etc/passwd", "builtin:../emoji", "builtin:nope"):
        with pytest.raises(UserInputError, match="Unknown network"):
            ex.open(name)
    with pytest.raises(UserInputError, match="does not exist"):
        Explorer([str(tmp_path / "missing")])


# -- latents --------------------------------------------------------------------------------------------------


def test_integer_seed_equals_generate(explorer):
    G = _emoji(explorer)
    frame = _render(explorer, seed=5, psi=0.7)
    assert frame.meta["format"] == "png" and (frame.meta["width"], frame.meta["height"]) == (32, 32)
    assert np.array_equal(decode(frame.data), _generated(G, 5, truncation_psi=0.7))
    cut = _render(explorer, seed=5, psi=0.5, cutoff=3)
    assert np.array_equal(decode(cut.data), _generated(G, 5, truncation_psi=0.5, truncation_cutoff=3))
    assert not np.array_equal(decode(cut.data), decode(frame.data))


def test_fractional_seed_blends_neighbouring_ws(explorer):
    G = _emoji(explorer)
    with torch.no_grad():
        w = [G.mapping(z_from_seed(s, G.z_dim), None, truncation_psi=0.8) for s in (7, 8)]
        want = to_uint8(G.synthesis(0.75 * w[0] + 0.25 * w[1], noise_mode="const"))[0]
    got = decode(_render(explorer, seed=7.25, psi=0.8).data)
    assert np.array_equal(got, want)
    assert not np.array_equal(got, decode(_render(explorer, seed=7, psi=0.8).data))


def test_style_mixing_takes_the_layer_range_from_the_second_seed(explorer):
    G = _emoji(explorer)
    with torch.no_grad():
        ws = G.mapping(z_from_seed(1, G.z_dim), None)
        ws[:, 4:8] = G.mapping(z_from_seed(2, G.z_dim), None)[:, 4:8]
        want = to_uint8(G.synthesis(ws, noise_mode="const"))[0]
    assert np.array_equal(decode(_render(explorer, seed=1, mix_seed=2, mix_start=4).data), want)
    with pytest.raises(UserInputError, match="not a range inside 0..8"):
        _render(explorer, seed=1, mix_seed=2, mix_start=5, mix_end=3)


def test_batch_tiles_consecutive_seeds_and_memory_is_checked(explorer):
    G = _emoji(explorer)
    frame = _render(explorer, seed=3, batch=4)
    grid = decode(frame.data)
    assert grid.shape == (64, 64, 3)
    assert np.array_equal(grid[32:, :32], _generated(G, 5))  # row-major: seeds 3, 4 / 5, 6
    small = Explorer(["builtin:emoji"], memory_limit=explorer._loaded["builtin:emoji"].bytes_per_image * 4)
    _render(small, batch=1)
    with pytest.raises(UserInputError, match=r"A batch of 2 at 32x32 needs about .* MiB.*lower the batch"):
        _render(small, batch=2)


def test_projected_w_round_trip(explorer):
    req = parse_request({"network": "builtin:emoji", "seed": 4, "psi": 0.6, "mix_seed": 9, "mix_start": 2})
    npz = explorer.current_w(req)
    w = parse_uploaded_w(npz)
    assert w.shape == (1, 8, 32) and w.dtype == np.float32
    frame = explorer.render(parse_request({"network": "builtin:emoji", "latent": "w"}), uploaded_w=w)
    assert np.array_equal(decode(frame.data), decode(explorer.render(req).data))
    with pytest.raises(UserInputError, match="upload a projected_w.npz first"):
        _render(explorer, latent="w")
    with pytest.raises(UserInputError, match=r"needs \[1, 6, 32\]"):
        explorer.render(parse_request({"network": "cond", "latent": "w", "class_idx": 0}), uploaded_w=w)


def test_uploaded_w_is_checked():
    buf = io.BytesIO()
    np.savez(buf, latent=np.zeros([1, 8, 32]))
    with pytest.raises(UserInputError, match="has no 'w'"):
        parse_uploaded_w(buf.getvalue())
    buf = io.BytesIO()
    np.savez(buf, w=np.zeros([8, 32]))
    with pytest.raises(UserInputError, match=r"float \[1, num_ws, w_dim\]"):
        parse_uploaded_w(buf.getvalue())
    buf = io.BytesIO()
    np.savez(buf, w=np.array([object()], dtype=object))
    with pytest.raises(UserInputError, match="without pickled objects"):
        parse_uploaded_w(buf.getvalue())
    with pytest.raises(UserInputError, match="not an .npz"):
        parse_uploaded_w(b"hello")


def test_class_of_a_conditional_network(explorer):
    G = explorer._preloaded["cond"]
    frame = explorer.render(parse_request({"network": "cond", "seed": 3, "class_idx": 2}))
    assert np.array_equal(decode(frame.data), _generated(G, 3, class_idx=2))
    with pytest.raises(UserInputError, match="conditional with 3 classes"):
        explorer.render(parse_request({"network": "cond", "seed": 3}))


# -- StyleGAN3 transform --------------------------------------------------------------------------------------


def test_translate_rotate_equal_generate_with_transform_matrix(explorer):
    G = explorer._preloaded["sg3"]
    info = explorer.open("sg3")
    assert info["has_transform"] and not info["has_noise"]
    frame = explorer.render(parse_request({"network": "sg3", "seed": 2, "translate": [0.1, -0.2], "rotate": 30}))
    M = styleforge.transform_matrix(translate=(0.1, -0.2), rotate=30)
    assert np.array_equal(decode(frame.data), _generated(G, 2, transform=M))
    plain = explorer.render(parse_request({"network": "sg3", "seed": 2}))
    assert np.array_equal(decode(plain.data), _generated(G, 2))
    assert not np.array_equal(decode(plain.data), decode(frame.data))
    with pytest.raises(UserInputError, match="no input transform"):
        _render(explorer, rotate=10)


# -- layer viewer ---------------------------------------------------------------------------------------------


def test_layer_list_and_views(explorer):
    info = explorer.open("builtin:emoji")
    names = [layer["name"] for layer in info["layers"]]
    assert names[0] == "output" and "b8.conv0" in names and names[-1] == "b32.torgb"
    sg3 = [layer["name"] for layer in explorer.open("sg3")["layers"]]
    assert sg3[:2] == ["output", "input"] and len(sg3) == 2 + 7  # input, 6 layers and ToRGB
    layer = next(entry for entry in info["layers"] if entry["name"] == "b16.conv1")
    assert layer["size"] == [16, 16]
    pictures = {}
    for view in ("rgb", "channel", "magnitude"):
        for fft in (False, True):
            px = decode(_render(explorer, seed=1, layer="b16.conv1", view=view, fft=fft, channel=2).data)
            assert px.shape == (16, 16, 3) and px.std() > 0, (view, fft)
            pictures[view, fft] = px
    assert len({p.tobytes() for p in pictures.values()}) == len(pictures)
    channel = pictures["channel", False]
    assert (channel[..., 0] == channel[..., 1]).all()  # one channel is grey
    spectrum = decode(_render(explorer, seed=1, fft=True).data)
    centre, corner = spectrum[12:20, 12:20].mean(), spectrum[:8, :8].mean()
    assert centre > corner + 20  # low frequencies (DC at the centre) are the strongest
    assert spectrum[16, 16].max() == 0  # the mean is removed before the transform
    with pytest.raises(UserInputError, match="has no layer 'b99'"):
        _render(explorer, layer="b99")
    with pytest.raises(UserInputError, match="'channel' 9999 is out"):
        _render(explorer, layer="b16.conv1", channel=9999)
    with pytest.raises(UserInputError, match="apply to layers"):
        _render(explorer, view="magnitude")


# -- editing directions ---------------------------------------------------------------------------------------


def test_edits_move_w_along_the_directions(explorer, dirs_file):
    G = _emoji(explorer)
    info = explorer.open("builtin:emoji")
    (entry,) = info["directions"]
    assert entry["name"] == "dirs" and entry["method"] == "test" and entry["layers"] == [0, 1, 2, 3]
    d = load_directions(dirs_file)
    scales = np.asarray(entry["scales"])
    assert scales.shape == (3,) and (scales > 0).all()
    with torch.no_grad():
        ws = G.mapping(z_from_seed(6, G.z_dim), None)
        delta = torch.from_numpy((np.array([1.5, -2.0]) * scales[:2]) @ d.directions[:2].astype(np.float64))
        ws[:, :4] += delta.float()
        want = to_uint8(G.synthesis(ws, noise_mode="const"))[0]
    got = decode(_render(explorer, seed=6, directions="dirs", edits=[1.5, -2.0]).data)
    assert np.array_equal(got, want)
    assert np.array_equal(decode(_render(explorer, seed=6, directions="dirs", edits=[0, 0, 0]).data),
                          _generated(G, 6))
    with pytest.raises(UserInputError, match="No directions 'other'"):
        _render(explorer, directions="other")
    with pytest.raises(UserInputError, match="4 edits given, but dirs has 3"):
        _render(explorer, directions="dirs", edits=[1, 1, 1, 1])


def test_directions_of_another_w_dim_are_not_offered(tmp_path):
    write_directions(tmp_path / "wide.npz", w_dim=64)
    assert Explorer(["builtin:emoji"], directions=[tmp_path / "wide.npz"]).open("builtin:emoji")["directions"] == []


@pytest.mark.parametrize(
    "change, words",
    [
        (lambda a: a.pop("values"), "lacks values"),
        (lambda a: a.update(directions=a["directions"] * 2), "must be a unit vector"),
        (lambda a: a.update(directions=a["directions"].astype(np.float64)), "must be float32"),
        (lambda a: a.update(values=a["values"][::-1].copy()), "descending order"),
        (lambda a: a.update(layers=np.array([0, 0])), "distinct non-negative"),
        (lambda a: a.update(method=np.array([1, 2])), "'method' must be a single string"),
    ],
)
def test_bad_directions_files_are_refused(tmp_path, change, words):
    write_directions(tmp_path / "ok.npz", w_dim=8)
    arrays = dict(np.load(tmp_path / "ok.npz"))
    change(arrays)
    np.savez(tmp_path / "bad.npz", **arrays)
    with pytest.raises(UserInputError) as e:
        load_directions(tmp_path / "bad.npz")
    assert words in str(e.value)
    with pytest.raises(UserInputError, match="does not exist"):
        load_directions(tmp_path / "none.npz")
