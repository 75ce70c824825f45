"""Run ``styleforge`` in a subprocess with faults the drills need to land at exact moments.

``python -m tests.drills.harness train ...`` is ``styleforge train ...`` plus, chosen by environment variables:

- ``DRILL_EVENTS``: a folder where the harness drops a marker file when it reaches a fault point.
- ``DRILL_HOLD=write:N``: at the N-th ``fsync`` of a file inside the output folder (1-based; every file
  styleforge writes atomically is fsynced just before its rename), drop ``DRILL_EVENTS/hold`` and sleep: the
  process is now inside a snapshot or state write, waiting for the drill's SIGKILL.
- ``DRILL_HOLD=metric:N``: the same inside the N-th pass of the ``drill_mean_pixel`` metric.
- ``DRILL_FAIL=RANK:N``: on process RANK (torchrun's ``RANK``) the N-th call of the recipe's ``accumulate`` (one
  loss on one chunk, in the middle of a tick) raises ``RuntimeError("drill: rank RANK fails ...")``.
- ``DRILL_ENOSPC_AFTER=BYTES``: writes of styleforge's atomic writer (:mod:`styleforge.utils.io`) fail with
  ``OSError(ENOSPC)`` once BYTES bytes have been written in this process (a disk that fills up).

The metric ``drill_mean_pixel`` (the mean pixel of 4 generated images) is registered in every case, so that
runs can compute a metric at each snapshot without feature-network weights.
"""

from __future__ import annotations

import errno
import os
import sys
import time
from pathlib import Path

import torch

#: How long a held process sleeps (it is meant to be killed long before).
HOLD_SECONDS = 120.0


def _marker(name: str) -> None:
    events = os.environ.get("DRILL_EVENTS")
    if events:
        Path(events).mkdir(parents=True, exist_ok=True)
        (Path(events) / name).write_text(str(os.getpid()))


def _hold_spec() -> tuple[str, int] | None:
    spec = os.environ.get("DRILL_HOLD")
    if not spec:
        return None
    point, count = spec.split(":")
    return point, int(count)


def _install_write_hold(count: int, outdir: Path) -> None:
    real_fsync = os.fsync
    seen = [0]

    def fsync(fd: int) -> None:
        real_fsync(fd)
        try:
            target = Path(os.readlink(f"/proc/self/fd/{fd}"))
        except OSError:
            return
        if outdir in target.parents:
            seen[0] += 1
            if seen[0] == count:
                _marker("hold")
                time.sleep(HOLD_SECONDS)

    os.fsync = fsync


def _install_metric(hold_at: int | None) -> None:
    from styleforge.metrics import registry

    passes = [0]

    @registry.register_metric("drill_mean_pixel")
    def _mean_pixel(ctx: registry.MetricContext) -> dict[str, float]:
        passes[0] += 1
        g = torch.Generator().manual_seed(0)
        z = torch.randn(4, ctx.G.z_dim, generator=g)
        img = ctx.G(z, torch.zeros(4, ctx.G.c_dim), noise_mode="const")
        if passes[0] == hold_at:
            _marker("hold")
            time.sleep(HOLD_SECONDS)
        return {"mean": float(img.mean())}


def _install_failing_rank(rank: int, after: int) -> None:
    from styleforge.training.stylegan import StyleGANRecipe

    if int(os.environ.get("RANK", "0")) != rank:
        return
    real = StyleGANRecipe.accumulate
    calls = [0]

    def accumulate(self, loss, chunk, mb, gain):  # noqa: ANN001, ANN202  (the recipe's signature)
        calls[0] += 1
        if calls[0] == after:
            _marker(f"fail-rank{rank}")
            raise RuntimeError(f"drill: rank {rank} fails in minibatch {mb.index} ({loss})")
        return real(self, loss, chunk, mb, gain)

    StyleGANRecipe.accumulate = accumulate


class _QuotaFile:
    """A file whose writes fail with ENOSPC once its disk's free bytes are used up."""

    def __init__(self, f, disk: FullDisk) -> None:  # noqa: ANN001
        self._f, self._disk = f, disk

    def write(self, data):  # noqa: ANN001, ANN201
        if len(data) > self._disk.free:
            raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))
        self._disk.free -= len(data)
        return self._f.write(data)

    def __getattr__(self, name: str):  # noqa: ANN204
        return getattr(self._f, name)

    def __enter__(self) -> _QuotaFile:
        return self

    def __exit__(self, *exc) -> None:  # noqa: ANN002
        self._f.__exit__(*exc)


class FullDisk:
    """``os`` as :mod:`styleforge.utils.io` (the atomic writer) sees it, on a disk with ``free`` bytes left:
    ``monkeypatch.setattr(styleforge.utils.io, "os", FullDisk(n))``."""

    def __init__(self, free: int) -> None:
        self.free = free

    def __getattr__(self, name: str):  # noqa: ANN204
        return getattr(os, name)

    def fdopen(self, fd: int, *args, **kwargs) -> _QuotaFile:  # noqa: ANN002, ANN003
        return _QuotaFile(os.fdopen(fd, *args, **kwargs), self)


def main(argv: list[str]) -> None:
    hold = _hold_spec()
    if hold is not None and hold[0] == "write":
        outdir = Path(argv[argv.index("--outdir") + 1]).resolve() if "--outdir" in argv else Path.cwd()
        _install_write_hold(hold[1], outdir)
    _install_metric(hold[1] if hold is not None and hold[0] == "metric" else None)
    fail = os.environ.get("DRILL_FAIL")
    if fail:
        rank, after = fail.split(":")
        _install_failing_rank(int(rank), int(after))
    quota = os.environ.get("DRILL_ENOSPC_AFTER")
    if quota:
        import styleforge.utils.io as sio

        sio.os = FullDisk(int(quota))
    from styleforge.cli.main import cli

    cli.main(args=argv, prog_name="styleforge")


if __name__ == "__main__":
    main(sys.argv[1:])
