"""retained_heap sets and restores glibc's allocator parameters, and only when asked."""

from __future__ import annotations

import pytest
import torch

import styleforge.utils.heap as heap
from styleforge.utils.heap import retained_heap


class _FakeLibc:
    def __init__(self):
        self.calls = []

    def mallopt(self, param, value):
        self.calls.append(("mallopt", param, value))
        return 1

    def malloc_trim(self, pad):
        self.calls.append(("malloc_trim", pad))
        return 1


def test_sets_the_parameters_and_restores_them_even_on_error(monkeypatch):
    fake = _FakeLibc()
    monkeypatch.setattr(heap, "_glibc", lambda: fake)
    monkeypatch.delenv("STYLEFORGE_RETAIN_HEAP", raising=False)
    with pytest.raises(RuntimeError, match="boom"), retained_heap() as on:
        assert on
        assert fake.calls == [("mallopt", -4, 0), ("mallopt", -1, 1 << 30)]
        raise RuntimeError("boom")
    assert fake.calls[2:] == [("mallopt", -4, 65536), ("mallopt", -1, 128 * 1024), ("malloc_trim", 0)]


def test_a_refused_setting_leaves_the_allocator_at_its_defaults(monkeypatch):
    fake = _FakeLibc()
    fake.mallopt = lambda param, value: fake.calls.append(("mallopt", param, value)) or int(param != -1)
    monkeypatch.setattr(heap, "_glibc", lambda: fake)
    with retained_heap(True) as on:
        assert not on
    assert fake.calls[-2:] == [("mallopt", -4, 65536), ("mallopt", -1, 128 * 1024)]


def test_off_by_environment_or_argument(monkeypatch):
    fake = _FakeLibc()
    monkeypatch.setattr(heap, "_glibc", lambda: fake)
    monkeypatch.setenv("STYLEFORGE_RETAIN_HEAP", "0")
    with retained_heap() as on:
        assert not on
    monkeypatch.delenv("STYLEFORGE_RETAIN_HEAP")
    with retained_heap(False) as on:
        assert not on
    assert fake.calls == []


def test_no_op_without_glibc(monkeypatch):
    monkeypatch.setattr(heap, "_glibc", lambda: None)
    with retained_heap(True) as on:
        assert not on


def test_real_allocator_still_allocates_and_frees():
    with retained_heap(True):
        for _ in range(3):
            x = torch.ones(16 << 20)  # 64 MB, above any mmap threshold
            assert x.sum().item() == 16 << 20
            del x
