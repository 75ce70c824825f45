"""``styleforge explore``: the interactive visualizer in a browser (needs the ``[ui]`` extra)."""

from __future__ import annotations

import ipaddress
import socket

import click

from styleforge.cli._common import NETWORK_HELP, pick_device, user_errors
from styleforge.utils.errors import UserInputError

__all__ = ["command", "is_loopback"]

#: largest WebSocket message accepted (an uploaded projected w travels base64-encoded)
WS_MAX_BYTES = 16 * 2**20


def is_loopback(host: str) -> bool:
    """Whether ``host`` only accepts connections from this machine (``localhost``, ``127.x``, ``::1``)."""
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


@click.command("explore")
@click.option("--network", "networks", multiple=True, required=True, help=NETWORK_HELP + " Repeat for several.")
@click.option(
    "--directions",
    "directions",
    multiple=True,
    type=click.Path(dir_okay=False),
    help="A dirs.npz from `styleforge directions`: editing sliders for networks of its w_dim. Repeatable.",
)
@click.option("--host", default="127.0.0.1", show_default=True, help="Address to listen on (0.0.0.0 = everyone).")
@click.option("--port", type=click.IntRange(0, 65535), default=7860, show_default=True, help="Port (0 = any free).")
@click.option("--device", default="auto", show_default=True, help="'auto', 'cpu', 'cuda', 'cuda:1', ...")
@user_errors
def command(networks: tuple[str, ...], directions: tuple[str, ...], host: str, port: int, device: str) -> None:
    """Serve a web page to explore networks interactively: seeds, truncation, mixing, StyleGAN3 transforms,
    layer and spectrum views, editing directions. Only the networks named here (and builtin:*) can be opened."""
    try:
        import uvicorn

        from styleforge.explore.server import create_app
    except ImportError as e:
        raise UserInputError(
            f"styleforge explore needs the [ui] extra ({e.name} is missing): pip install 'styleforge[ui]'."
        ) from e
    from styleforge.explore.render import Explorer

    explorer = Explorer(networks, directions=directions, device=pick_device(device))
    first = explorer.network_names()[0]
    click.echo(f"Loading {first} ...")
    explorer.open(first)
    if not is_loopback(host):
        click.echo(f"Warning: listening on {host}: anyone who can reach this machine can use the explorer.")
    sock = _bind(host, port)
    port = sock.getsockname()[1]
    shown = f"[{host}]" if ":" in host else host
    click.echo(f"styleforge explore: open http://{shown}:{port}/ in a browser (Ctrl+C stops).")
    config = uvicorn.Config(create_app(explorer), log_level="warning", ws_max_size=WS_MAX_BYTES)
    uvicorn.Server(config).run(sockets=[sock])


def _bind(host: str, port: int) -> socket.socket:
    """A listening socket on ``host:port`` (port 0 = a free one), so the URL printed is the real one."""
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    try:
        sock.bind((host, port))
        sock.listen(128)  # connections made before uvicorn runs wait in the backlog
    except OSError as e:
        sock.close()
        raise UserInputError(f"Cannot listen on {host}:{port} ({e.strerror}); choose another --port or --host.") from e
    return sock
