"""The explorer's web server: the static page and a WebSocket that streams frames (needs the ``[ui]`` extra).

Protocol on ``/ws`` (one JSON object per text message from the page; the server answers with JSON text
messages, and with binary messages for frames and captured latents):

- ``{"type": "hello"}`` -> ``{"type": "hello", "networks": [...], "version": ...}``
- ``{"type": "open", "network": NAME}`` -> ``{"type": "network", "info": {...}}`` (layers, directions, sizes,
  ``c_dim`` and ``cond_encoding``: ``null``, ``"class"``, ``"multi-label"`` or ``"continuous"``, which say whether
  a render request carries ``class_idx``, ``classes`` or ``cond_vector``)
- ``{"type": "render", "id": N, ...RenderRequest fields}`` -> a binary *frame*. Render requests are
  *latest-request-wins*: while one renders, a newer request replaces the waiting one, so a fast slider never
  builds a queue; every request that was replaced is answered ``{"type": "dropped", "id": N}``.
- ``{"type": "get_w", "id": N, ...RenderRequest fields}`` -> a binary *w* message: the current ws as ``.npz``.
- ``{"type": "upload_w", "data": BASE64}`` (a ``projected_w.npz``) -> ``{"type": "w_uploaded", "shape": [...]}``
- anything malformed -> ``{"type": "error", "id": N or null, "message": "..."}``; the connection stays open.

A binary message is ``uint32 big-endian header length | UTF-8 JSON header | payload``; the header has
``type`` (``"frame"`` or ``"w"``), ``id`` and, for frames, ``format``, ``width``, ``height``, ``render_ms``, ...

Connections whose ``Origin`` is another site than the server's own are refused, so a web page the user visits
cannot drive a server bound to localhost. The API takes network *names* only, never a path.
"""

from __future__ import annotations

import asyncio
import base64
import binascii
import json
import logging
import struct
from collections import deque
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

from starlette.applications import Starlette
from starlette.concurrency import run_in_threadpool
from starlette.responses import FileResponse
from starlette.routing import Mount, Route, WebSocketRoute
from starlette.staticfiles import StaticFiles
from starlette.websockets import WebSocket, WebSocketDisconnect

from styleforge.explore.render import Explorer, parse_request, parse_uploaded_w
from styleforge.utils.errors import UserInputError

__all__ = ["create_app", "STATIC_DIR", "pack_binary", "unpack_binary"]

#: the page, its script and its style sheet, shipped in the package
STATIC_DIR = Path(__file__).resolve().parents[1] / "assets" / "explore"
#: largest text message accepted (an uploaded w travels base64-encoded in one)
MAX_MESSAGE_CHARS = 12 * 2**20
_MESSAGE_TYPES = ("hello", "open", "render", "get_w", "upload_w")
_HEADER = struct.Struct(">I")
_log = logging.getLogger(__name__)


def pack_binary(header: dict[str, Any], payload: bytes) -> bytes:
    """``uint32 length | JSON header | payload``: the layout of the server's binary messages."""
    head = json.dumps(header).encode()
    return _HEADER.pack(len(head)) + head + payload


def unpack_binary(message: bytes) -> tuple[dict[str, Any], bytes]:
    """Inverse of :func:`pack_binary`."""
    (n,) = _HEADER.unpack_from(message)
    return json.loads(message[_HEADER.size : _HEADER.size + n]), message[_HEADER.size + n :]


def _same_origin(ws: WebSocket) -> bool:
    """True when the request has no ``Origin`` (not a browser) or its origin's host is the ``Host`` asked for."""
    origin = ws.headers.get("origin")
    if origin is None:
        return True
    return urlsplit(origin).netloc.lower() == ws.headers.get("host", "").lower()


def _request_id(msg: dict[str, Any]) -> int | None:
    rid = msg.get("id")
    if isinstance(rid, int) and not isinstance(rid, bool):
        return rid
    if rid is not None:
        raise UserInputError(f"'id' must be an integer, got {rid!r}.")
    return None


class _Session:
    """One WebSocket: a reader that answers cheap messages at once, and a worker that renders.

    The worker takes the captured-w jobs first (in order), then the newest render request; a render request
    arriving while another waits replaces it.
    """

    def __init__(self, ws: WebSocket, explorer: Explorer) -> None:
        self.ws = ws
        self.explorer = explorer
        self.uploaded_w = None
        self.pending: tuple[int | None, Any] | None = None
        self.jobs: deque[tuple[int | None, Any]] = deque()
        self.wake = asyncio.Event()
        self.send_lock = asyncio.Lock()

    async def send_json(self, obj: dict[str, Any]) -> None:
        async with self.send_lock:
            await self.ws.send_text(json.dumps(obj))

    async def send_bytes(self, data: bytes) -> None:
        async with self.send_lock:
            await self.ws.send_bytes(data)

    async def error(self, rid: int | None, message: str) -> None:
        await self.send_json({"type": "error", "id": rid, "message": message})

    async def run(self) -> None:
        worker = asyncio.create_task(self.work())
        try:
            while True:
                msg = await self.ws.receive()
                if msg["type"] == "websocket.disconnect":
                    break
                await self.handle(msg)
        except WebSocketDisconnect:
            pass
        finally:
            worker.cancel()
            try:
                await worker
            except (asyncio.CancelledError, WebSocketDisconnect, RuntimeError):
                pass

    async def handle(self, raw: dict[str, Any]) -> None:
        text = raw.get("text")
        if text is None:
            await self.error(None, "Binary messages are not accepted; send JSON text.")
            return
        rid = None
        try:
            if len(text) > MAX_MESSAGE_CHARS:
                raise UserInputError(f"Message of {len(text)} characters; at most {MAX_MESSAGE_CHARS} are accepted.")
            try:
                msg = json.loads(text)
            except json.JSONDecodeError as e:
                raise UserInputError(f"Not JSON: {e}.") from None
            if not isinstance(msg, dict):
                raise UserInputError(f"A message must be a JSON object, got {type(msg).__name__}.")
            rid = _request_id(msg)
            kind = msg.pop("type", None)
            msg.pop("id", None)
            if kind not in _MESSAGE_TYPES:
                raise UserInputError(f"Unknown message type {kind!r}; use one of {', '.join(_MESSAGE_TYPES)}.")
            await getattr(self, f"on_{kind}")(rid, msg)
        except UserInputError as e:
            await self.error(rid, str(e))
        except Exception as e:  # a bug must not take the connection down
            _log.exception("explore: unexpected error handling a message")
            await self.error(rid, f"Internal error: {type(e).__name__}: {e}")

    async def on_hello(self, rid: int | None, msg: dict[str, Any]) -> None:
        from styleforge import __version__

        await self.send_json({"type": "hello", "id": rid, "networks": self.explorer.network_names(),
                              "version": __version__})

    async def on_open(self, rid: int | None, msg: dict[str, Any]) -> None:
        name = msg.get("network")
        if set(msg) != {"network"} or not isinstance(name, str):
            raise UserInputError("'open' takes exactly one field, 'network' (a name the server lists).")
        self.jobs.append((rid, ("open", name)))
        self.wake.set()

    async def on_render(self, rid: int | None, msg: dict[str, Any]) -> None:
        req = parse_request(msg)
        if self.pending is not None:
            await self.send_json({"type": "dropped", "id": self.pending[0]})
        self.pending = (rid, req)
        self.wake.set()

    async def on_get_w(self, rid: int | None, msg: dict[str, Any]) -> None:
        self.jobs.append((rid, ("get_w", parse_request(msg))))
        self.wake.set()

    async def on_upload_w(self, rid: int | None, msg: dict[str, Any]) -> None:
        data = msg.get("data")
        if not isinstance(data, str):
            raise UserInputError("'upload_w' needs 'data': the .npz file encoded as base64.")
        try:
            raw = base64.b64decode(data, validate=True)
        except (binascii.Error, ValueError):
            raise UserInputError("'data' is not valid base64.") from None
        self.uploaded_w = parse_uploaded_w(raw)
        await self.send_json({"type": "w_uploaded", "id": rid, "shape": list(self.uploaded_w.shape)})

    async def work(self) -> None:
        while True:
            await self.wake.wait()
            if self.jobs:
                rid, (kind, arg) = self.jobs.popleft()
            elif self.pending is not None:
                (rid, arg), kind = self.pending, "render"
                self.pending = None
            else:
                self.wake.clear()
                continue
            try:
                if kind == "open":
                    info = await run_in_threadpool(self.explorer.open, arg)
                    await self.send_json({"type": "network", "id": rid, "info": info})
                elif kind == "get_w":
                    data = await run_in_threadpool(self.explorer.current_w, arg, self.uploaded_w)
                    await self.send_bytes(pack_binary({"type": "w", "id": rid, "network": arg.network}, data))
                else:
                    frame = await run_in_threadpool(self.explorer.render, arg, self.uploaded_w)
                    await self.send_bytes(pack_binary({"type": "frame", "id": rid, **frame.meta}, frame.data))
            except UserInputError as e:
                message = str(e)
            except WebSocketDisconnect:
                return  # the page went away
            except Exception as e:  # a bug in one request must not end the session
                _log.exception("explore: unexpected error while rendering")
                message = f"Internal error: {type(e).__name__}: {e}"
            else:
                continue
            try:
                await self.error(rid, message)
            except Exception:
                return  # the socket is closed


def create_app(explorer: Explorer) -> Starlette:
    """The ASGI application: ``/`` (the page), ``/static/*`` (its files), ``/ws`` (the frame socket)."""

    async def index(request):  # noqa: ANN001, ANN202
        return FileResponse(STATIC_DIR / "index.html", media_type="text/html")

    async def socket(ws: WebSocket) -> None:
        if not _same_origin(ws):
            await ws.close(code=1008)
            return
        await ws.accept()
        await _Session(ws, explorer).run()

    routes = [
        Route("/", index),
        Mount("/static", app=StaticFiles(directory=STATIC_DIR), name="static"),
        WebSocketRoute("/ws", socket),
    ]
    app = Starlette(routes=routes)
    app.state.explorer = explorer
    return app
