"""The explorer and networks conditioned beyond one class index: multi-label (a set of classes, multi-hot ``c``)
and continuous attributes (``c`` itself, ``c_dim`` numbers). The renderer and the WebSocket protocol here; the
page's controls in test_browser_conditioning.py."""

from __future__ import annotations

import io
import json

import numpy as np
import pytest
import torch

from styleforge.explore.render import Explorer, parse_request
from styleforge.generation import generate_images
from styleforge.utils.errors import UserInputError
from styleforge.utils.images import to_uint8
from styleforge.utils.seeding import z_from_seed
from tests.explore.conftest import decode, perturbed, require


def conditioned_networks() -> dict:
    """A tiny StyleGAN2 conditioned on 3 continuous attributes, one on sets of 4 classes, one on 3 classes."""
    return {
        "cont": perturbed("stylegan2-tiny", c_dim=3, cond_encoding="continuous"),
        "multi": perturbed("stylegan2-tiny", c_dim=4, cond_encoding="multi-label"),
        "onehot": perturbed("stylegan2-tiny", c_dim=3),
    }


@pytest.fixture(scope="module")
def explorer():
    return Explorer(["builtin:emoji"], preloaded=conditioned_networks())


def _render(explorer, **fields) -> np.ndarray:
    return decode(explorer.render(parse_request(fields)).data)


def _generated(G, seed: int, **kwargs) -> np.ndarray:
    return to_uint8(generate_images(G, [seed], **kwargs))[0][:, :, :3]


def test_network_info_says_encoding_and_c_dim(explorer):
    assert (explorer.open("cont")["cond_encoding"], explorer.open("cont")["c_dim"]) == ("continuous", 3)
    assert (explorer.open("multi")["cond_encoding"], explorer.open("multi")["c_dim"]) == ("multi-label", 4)
    assert explorer.open("onehot")["cond_encoding"] == "class"
    assert (explorer.open("builtin:emoji")["cond_encoding"], explorer.open("builtin:emoji")["c_dim"]) == (None, 0)


def test_cond_vector_of_a_continuous_network_equals_generate(explorer):
    G = explorer._preloaded["cont"]
    a = _render(explorer, network="cont", seed=2, cond_vector=[0.2, -0.9, 1.5])
    assert np.array_equal(a, _generated(G, 2, cond_vector=[0.2, -0.9, 1.5]))
    b = _render(explorer, network="cont", seed=2, cond_vector=[0.2, 0.9, 1.5])
    assert np.abs(a.astype(int) - b).mean() > 1, "changing one attribute must change the picture"


def test_classes_of_a_multi_label_network_equal_generate(explorer):
    G = explorer._preloaded["multi"]
    both = _render(explorer, network="multi", seed=4, classes=[3, 1])
    assert np.array_equal(both, _generated(G, 4, class_idx=[1, 3]))
    one = _render(explorer, network="multi", seed=4, classes=[1])
    assert not np.array_equal(both, one)
    assert np.array_equal(one, _render(explorer, network="multi", seed=4, class_idx=1))  # a set of one
    none = _render(explorer, network="multi", seed=4, classes=[])  # images with no class: c = 0
    assert np.array_equal(none, _generated(G, 4, cond_vector=[0, 0, 0, 0]))


@pytest.mark.parametrize(
    "fields, words",
    [
        ({"network": "cont", "cond_vector": [0.1, 0.2]}, "has 2 values, but cont is conditioned on c_dim=3"),
        ({"network": "cont"}, "send 'cond_vector' with 3 numbers"),
        ({"network": "cont", "class_idx": 1}, "send 'cond_vector' with 3 numbers instead of 'class_idx'"),
        ({"network": "multi", "classes": [1, 4]}, "Class 4 is out of range: multi has classes 0..3"),
        ({"network": "multi"}, "send 'classes'"),
        ({"network": "multi", "classes": [1], "cond_vector": [0, 1, 0, 0]}, "not classes and cond_vector"),
        ({"network": "onehot", "classes": [0, 2]}, "one class per image"),
        ({"network": "onehot", "class_idx": 3}, "Class 3 is out of range: onehot has classes 0..2"),
        ({"network": "builtin:emoji", "cond_vector": [0.5]}, "unconditional (c_dim 0); leave out 'cond_vector'"),
        ({"network": "builtin:emoji", "classes": []}, "leave out 'classes'"),
    ],
)
def test_conditioning_that_does_not_fit_the_network_is_refused(explorer, fields, words):
    with pytest.raises(UserInputError) as e:
        explorer.render(parse_request(fields))
    assert words in str(e.value)


@pytest.mark.parametrize(
    "fields, words",
    [
        ({"cond_vector": [0.1, float("nan"), 0.3]}, "'cond_vector' entry 1 is NaN"),
        ({"cond_vector": [0.1, None]}, "'cond_vector' entry 1 is None"),
        ({"cond_vector": [float("inf")]}, "entry 0 is inf"),
        ({"cond_vector": ["0.5"]}, "entry 0 is '0.5'"),
        ({"cond_vector": 0.5}, "'cond_vector' must be a list of numbers"),
        ({"classes": [1, 1]}, "class 1 more than once"),
        ({"classes": [1.5]}, "'classes' must be an integer"),
        ({"classes": "1,2"}, "'classes' must be a list of class indices"),
    ],
)
def test_malformed_conditioning_fields_are_refused(fields, words):
    with pytest.raises(UserInputError) as e:
        parse_request({"network": "cont", **fields})
    assert words in str(e.value)


def test_protocol_sends_the_encoding_and_validates_the_vector(explorer):
    require("starlette")
    require("httpx2")
    from starlette.testclient import TestClient

    from styleforge.explore.server import create_app, unpack_binary

    with TestClient(create_app(explorer)) as client, client.websocket_connect("/ws") as ws:
        ws.send_json({"type": "open", "id": 1, "network": "cont"})
        info = json.loads(ws.receive_text())["info"]
        assert (info["cond_encoding"], info["c_dim"]) == ("continuous", 3)
        # NaN as JSON text (Python's json reads it); the page itself would send null
        ws.send_text('{"type": "render", "id": 2, "network": "cont", "cond_vector": [0.5, NaN, 0]}')
        reply = json.loads(ws.receive_text())
        assert reply["type"] == "error" and "entry 1 is NaN" in reply["message"]
        ws.send_json({"type": "render", "id": 3, "network": "cont", "cond_vector": [0.5, 0.1]})
        reply = json.loads(ws.receive_text())
        assert reply["id"] == 3 and "has 2 values" in reply["message"] and "c_dim=3" in reply["message"]
        ws.send_json({"type": "render", "id": 4, "network": "cont", "seed": 1, "cond_vector": [0.5, 0.1, -1]})
        header, payload = unpack_binary(ws.receive_bytes())
        assert header["id"] == 4
        G = explorer._preloaded["cont"]
        assert np.array_equal(decode(payload), _generated(G, 1, cond_vector=[0.5, 0.1, -1]))
        ws.send_json({"type": "get_w", "id": 5, "network": "multi", "seed": 1, "classes": [0, 2]})
        header, npz = unpack_binary(ws.receive_bytes())
        assert header["type"] == "w"
    G = explorer._preloaded["multi"]
    with torch.no_grad():
        want = G.mapping(z_from_seed(1, G.z_dim), torch.tensor([[1.0, 0, 1, 0]]))
    with np.load(io.BytesIO(npz)) as data:
        assert np.array_equal(data["w"], want.numpy())  # the multi-hot c of classes 0 and 2
