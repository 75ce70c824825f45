"""Shared pieces of the hostile-input drills: fixed hypothesis settings, a time limit per input, mutations."""

from __future__ import annotations

import contextlib
import os
import signal
from collections.abc import Iterator

from hypothesis import HealthCheck, settings
from hypothesis import strategies as st

#: Examples per property (STYLEFORGE_RUN_SLOW=1: ten times as many).
SLOW = os.environ.get("STYLEFORGE_RUN_SLOW") == "1"


def drill_settings(examples: int) -> settings:
    """Deterministic (derandomized, no example database), bounded, no per-example deadline (the machine is shared;
    :func:`time_limit` catches hangs instead)."""
    return settings(max_examples=examples * (10 if SLOW else 1), derandomize=True, database=None, deadline=None,
                    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large,
                                           HealthCheck.function_scoped_fixture], print_blob=True)


class HangError(AssertionError):
    """An input took longer than its time limit: a hang."""


@contextlib.contextmanager
def time_limit(seconds: float) -> Iterator[None]:
    """Fail with :class:`HangError` when the block runs longer than ``seconds`` (SIGALRM; main thread only)."""

    def alarm(signum, frame):  # noqa: ANN001, ANN202
        raise HangError(f"no answer within {seconds} s")

    previous = signal.signal(signal.SIGALRM, alarm)
    signal.setitimer(signal.ITIMER_REAL, seconds)
    try:
        yield
    finally:
        signal.setitimer(signal.ITIMER_REAL, 0)
        signal.signal(signal.SIGALRM, previous)


@st.composite
def mutated(draw, seeds: list[bytes], extra_kinds: tuple = ()) -> bytes:  # noqa: ANN001
    """One of ``seeds`` damaged: bit flips, truncation, a spliced run of bytes, overwritten bytes, random bytes,
    or a kind from ``extra_kinds`` (``(name, function(draw, data) -> bytes)``)."""
    data = bytearray(draw(st.sampled_from(seeds)))
    kinds = ["flip", "truncate", "splice", "overwrite", "random", "intact", *(k for k, _ in extra_kinds)]
    kind = draw(st.sampled_from(kinds))
    n = len(data)
    if kind == "flip":
        for pos in draw(st.lists(st.integers(0, n * 8 - 1), min_size=1, max_size=8)):
            data[pos // 8] ^= 1 << (pos % 8)
    elif kind == "truncate":
        data = data[: draw(st.integers(0, max(n - 1, 0)))]
    elif kind == "splice":
        a, b, k = draw(st.integers(0, n - 1)), draw(st.integers(0, n - 1)), draw(st.integers(1, 64))
        data[a : a + k] = data[b : b + k]
    elif kind == "overwrite":
        pos = draw(st.integers(0, n - 1))
        data[pos : pos + 8] = draw(st.binary(min_size=1, max_size=8))
    elif kind == "random":
        data = bytearray(draw(st.binary(max_size=512)))
    elif kind != "intact":
        data = bytearray(dict(extra_kinds)[kind](draw, bytes(data)))
    return bytes(data)
