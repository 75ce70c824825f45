"""Explorer frame rate: frames per second while a psi slider is dragged, through the real server and socket.

Runs ``styleforge explore``'s server (uvicorn) in this process on a free local port and connects to it as the
page does: send a render request with a new psi, wait for its frame, send the next (the page keeps one request
in flight, so this is the rate a user dragging a slider sees). Prints frames per second, and the median
server-side render and encode times and the median round trip per frame.

Examples::

    OMP_NUM_THREADS=2 python benchmarks/explore.py                                   # builtin:emoji, 32 px
    OMP_NUM_THREADS=2 python benchmarks/explore.py --preset stylegan3-t --res 256 --frames 10
    python benchmarks/explore.py --preset stylegan3-t --res 1024 --device cuda --frames 50
"""

from __future__ import annotations

import argparse
import socket
import statistics
import threading
import time

import torch

from styleforge.explore.render import Explorer
from styleforge.explore.server import create_app, unpack_binary


def build_explorer(args: argparse.Namespace) -> tuple[Explorer, str]:
    """The explorer to time and the network name to request."""
    if args.preset:
        from styleforge.models.registry import create_model

        torch.manual_seed(0)
        G = create_model(args.preset, img_resolution=args.res).eval()
        name = f"{args.preset}-{args.res}"
        return Explorer(device=args.device, preloaded={name: G}), name
    return Explorer([args.network], device=args.device), args.network


def serve(explorer: Explorer) -> tuple[object, threading.Thread, int]:
    import uvicorn

    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.bind(("127.0.0.1", 0))
    server = uvicorn.Server(uvicorn.Config(create_app(explorer), log_level="warning"))
    thread = threading.Thread(target=server.run, kwargs={"sockets": [sock]}, daemon=True)
    thread.start()
    while not server.started:
        time.sleep(0.02)
    return server, thread, sock.getsockname()[1]


def drag_psi(port: int, name: str, args: argparse.Namespace) -> dict[str, float]:
    """Emulate the page while psi is dragged from 1 towards 0 and back: one request in flight at a time."""
    import json

    from websockets.sync.client import connect

    render_ms, encode_ms, rtt_ms = [], [], []
    with connect(f"ws://127.0.0.1:{port}/ws", max_size=2**26) as ws:
        def frame(i: int) -> dict:
            psi = 1 - 0.5 * abs((i % 100) / 50 - 1)  # a triangle wave between 0.5 and 1
            msg = {"type": "render", "id": i, "network": name, "seed": 1, "psi": psi, "format": args.format}
            ws.send(json.dumps(msg))
            while True:
                reply = ws.recv()
                if isinstance(reply, bytes):
                    return unpack_binary(reply)[0]
                raise RuntimeError(f"server answered {reply}")

        for i in range(args.warmup):
            frame(-1 - i)
        start = time.perf_counter()
        n = 0
        while n < args.frames and time.perf_counter() - start < args.seconds:
            t0 = time.perf_counter()
            head = frame(n)
            rtt_ms.append((time.perf_counter() - t0) * 1000)
            render_ms.append(head["render_ms"])
            encode_ms.append(head["encode_ms"])
            n += 1
        elapsed = time.perf_counter() - start
    return {
        "frames": n,
        "fps": n / elapsed,
        "render_ms": statistics.median(render_ms),
        "encode_ms": statistics.median(encode_ms),
        "round_trip_ms": statistics.median(rtt_ms),
        "format": head["format"],
        "size": f"{head['width']}x{head['height']}",
    }


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--network", default="builtin:emoji", help="Network to explore (ignored with --preset).")
    p.add_argument("--preset", default=None, help="Time a registered preset with random weights instead.")
    p.add_argument("--res", type=int, default=256, help="img_resolution of --preset.")
    p.add_argument("--device", default="cpu")
    p.add_argument("--format", default="auto", choices=["auto", "png", "jpeg"])
    p.add_argument("--seconds", type=float, default=10.0, help="Stop after this long ...")
    p.add_argument("--frames", type=int, default=1000, help="... or after this many frames.")
    p.add_argument("--warmup", type=int, default=3)
    p.add_argument("--threads", type=int, default=None, help="torch.set_num_threads")
    args = p.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    explorer, name = build_explorer(args)
    explorer.open(name)
    server, thread, port = serve(explorer)
    try:
        r = drag_psi(port, name, args)
    finally:
        server.should_exit = True
        thread.join(10)
    print(
        f"{name} on {args.device} ({torch.get_num_threads()} threads), {r['size']} {r['format']}: "
        f"{r['fps']:.1f} fps over {r['frames']} frames dragging psi; per frame: render {r['render_ms']:.1f} ms, "
        f"encode {r['encode_ms']:.1f} ms, round trip {r['round_trip_ms']:.1f} ms (medians)"
    )


if __name__ == "__main__":
    main()
