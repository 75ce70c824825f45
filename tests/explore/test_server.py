"""The explorer's server protocol through starlette's TestClient (no browser)."""

from __future__ import annotations

import base64
import json
import re

import numpy as np
import pytest

from styleforge.explore.render import Explorer, parse_request
from tests.explore.conftest import decode, require


@pytest.fixture(scope="module")
def client(explorer):
    require("starlette")
    require("httpx2")
    from starlette.testclient import TestClient

    from styleforge.explore.server import create_app

    with TestClient(create_app(explorer)) as c:
        yield c


def _frame(ws):
    """The next binary message, skipping text messages other than errors."""
    from styleforge.explore.server import unpack_binary

    while True:
        msg = ws.receive()
        if msg.get("bytes") is not None:
            return unpack_binary(msg["bytes"])
        obj = json.loads(msg["text"])
        if obj["type"] == "error":
            raise AssertionError(obj["message"])


def _text(ws):
    msg = ws.receive()
    assert msg.get("text") is not None, "expected a JSON text message"
    return json.loads(msg["text"])


def test_page_and_static_files_are_served_offline(client):
    page = client.get("/")
    assert page.status_code == 200 and "text/html" in page.headers["content-type"]
    assert 'src="static/explore.js"' in page.text
    for name in ("explore.js", "explore.css"):
        r = client.get(f"/static/{name}")
        assert r.status_code == 200 and len(r.text) > 500
    for text in (page.text, client.get("/static/explore.js").text, client.get("/static/explore.css").text):
        assert not re.search(r"https?://", text), "the page must not load anything from another site"
    assert client.get("/static/../render.py").status_code == 404


def test_hello_open_render(client, explorer):
    with client.websocket_connect("/ws") as ws:
        ws.send_json({"type": "hello"})
        hello = _text(ws)
        assert hello["networks"] == ["builtin:emoji", "sg3", "cond"]
        ws.send_json({"type": "open", "id": 1, "network": "builtin:emoji"})
        info = _text(ws)
        assert info["type"] == "network" and info["info"]["num_ws"] == 8 and info["id"] == 1
        ws.send_json({"type": "render", "id": 7, "network": "builtin:emoji", "seed": 3, "psi": 0.5})
        header, payload = _frame(ws)
        assert header["type"] == "frame" and header["id"] == 7 and header["format"] == "png"
        assert header["render_ms"] > 0
        want = explorer.render(parse_request({"network": "builtin:emoji", "seed": 3, "psi": 0.5}))
        assert np.array_equal(decode(payload), decode(want.data))


@pytest.mark.parametrize(
    "send, words",
    [
        (lambda ws: ws.send_text("{not json"), "Not JSON"),
        (lambda ws: ws.send_text("[1, 2]"), "must be a JSON object"),
        (lambda ws: ws.send_json({"type": "paint"}), "Unknown message type 'paint'"),
        (lambda ws: ws.send_json({"type": "render", "id": "x", "network": "builtin:emoji"}), "'id' must be an"),
        (lambda ws: ws.send_json({"type": "render", "id": 1, "network": "builtin:emoji", "zoom": 2}), "zoom"),
        (lambda ws: ws.send_json({"type": "render", "id": 1, "network": "/etc/passwd"}), "Unknown network"),
        (lambda ws: ws.send_json({"type": "open", "network": "../../x.pkl"}), "Unknown network"),
        (lambda ws: ws.send_json({"type": "open", "path": "/tmp/net.pkl"}), "exactly one field, 'network'"),
        (lambda ws: ws.send_json({"type": "render", "id": 1, "network": "builtin:emoji", "layer": "b99"}), "b99"),
        (lambda ws: ws.send_json({"type": "upload_w", "data": "%%%"}), "not valid base64"),
        (lambda ws: ws.send_json({"type": "upload_w", "data": base64.b64encode(b"junk").decode()}), "not an .npz"),
        (lambda ws: ws.send_bytes(b"\x00\x01"), "Binary messages are not accepted"),
    ],
)
def test_malformed_messages_get_an_error_and_the_connection_survives(client, send, words):
    with client.websocket_connect("/ws") as ws:
        send(ws)
        reply = _text(ws)
        assert reply["type"] == "error" and words in reply["message"], reply
        ws.send_json({"type": "render", "id": 2, "network": "builtin:emoji", "seed": 1})
        header, _ = _frame(ws)
        assert header["id"] == 2


def test_latest_request_wins(client):
    with client.websocket_connect("/ws") as ws:
        n = 12
        for i in range(n):
            ws.send_json({"type": "render", "id": i, "network": "builtin:emoji", "seed": i, "batch": 16})
        frames, dropped = [], []
        while n - 1 not in frames:
            msg = ws.receive()
            if msg.get("bytes") is not None:
                from styleforge.explore.server import unpack_binary

                frames.append(unpack_binary(msg["bytes"])[0]["id"])
            else:
                obj = json.loads(msg["text"])
                assert obj["type"] == "dropped", obj
                dropped.append(obj["id"])
        assert sorted(frames + dropped) == list(range(n))  # every request answered exactly once
        assert len(frames) < n / 2, frames  # most of a burst is never rendered


def test_get_w_upload_w_round_trip(client, explorer):
    from styleforge.explore.server import unpack_binary

    fields = {"network": "builtin:emoji", "seed": 11, "psi": 0.7}
    with client.websocket_connect("/ws") as ws:
        ws.send_json({"type": "get_w", "id": 3, **fields})
        header, npz = unpack_binary(ws.receive_bytes())
        assert header == {"type": "w", "id": 3, "network": "builtin:emoji"}
        ws.send_json({"type": "upload_w", "id": 4, "data": base64.b64encode(npz).decode()})
        assert _text(ws) == {"type": "w_uploaded", "id": 4, "shape": [1, 8, 32]}
        ws.send_json({"type": "render", "id": 5, "network": "builtin:emoji", "latent": "w"})
        _, payload = _frame(ws)
    assert np.array_equal(decode(payload), decode(explorer.render(parse_request(fields)).data))


def test_several_connections_at_once(client):
    with client.websocket_connect("/ws") as a, client.websocket_connect("/ws") as b:
        a.send_json({"type": "render", "id": 1, "network": "builtin:emoji", "seed": 1})
        b.send_json({"type": "render", "id": 1, "network": "sg3", "seed": 1, "rotate": 45})
        ha, pa = _frame(a)
        hb, pb = _frame(b)
        assert (ha["network"], hb["network"]) == ("builtin:emoji", "sg3")
        assert decode(pa).shape == (32, 32, 3) and decode(pb).shape == (16, 16, 3)


def test_memory_refusal_is_a_message():
    require("starlette")
    from starlette.testclient import TestClient

    from styleforge.explore.server import create_app

    with TestClient(create_app(Explorer(["builtin:emoji"], memory_limit=2**20))) as c:
        with c.websocket_connect("/ws") as ws:
            ws.send_json({"type": "render", "id": 9, "network": "builtin:emoji", "batch": 16})
            reply = _text(ws)
            assert reply["type"] == "error" and reply["id"] == 9 and "lower the batch" in reply["message"]


def test_other_origins_are_refused(client):
    from starlette.websockets import WebSocketDisconnect

    with pytest.raises(WebSocketDisconnect):
        with client.websocket_connect("/ws", headers={"origin": "http://evil.example"}) as ws:
            ws.receive()
    with client.websocket_connect("/ws", headers={"origin": "http://testserver"}) as ws:
        ws.send_json({"type": "hello"})
        assert _text(ws)["type"] == "hello"
