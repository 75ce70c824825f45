"""Shared test fixtures: the reference directory, markers selected by environment variables."""

from __future__ import annotations

import importlib
import os
from pathlib import Path
from typing import Any

import pytest
import torch

REPO = Path(__file__).resolve().parents[1]
REFERENCE_DIR = Path(os.environ.get("STYLEFORGE_REFERENCE", REPO.parent / "shared" / "reference"))
IN_CI = os.environ.get("CI", "").lower() in ("1", "true", "yes")


def reference_file(name: str) -> Path:
    """Path of a file in ../shared/reference; skips the test when absent, except in CI where it fails."""
    p = REFERENCE_DIR / name
    if not p.is_file():
        msg = f"reference file {p} is missing (set STYLEFORGE_REFERENCE to the folder holding the official outputs)"
        if IN_CI:
            pytest.fail(msg + "; in CI a missing reference is an error")
        pytest.skip(msg)
    return p


def skip_unless_ci(msg: str) -> None:
    """Skip the test with ``msg``, except in CI (``CI=true``), where what is missing must be installed: fail."""
    if IN_CI:
        pytest.fail(msg + "; in CI this must be installed (see .ci/run)")
    pytest.skip(msg)


def require_module(name: str, extra: str) -> Any:
    """Import ``name`` for a test; when it is missing, skip (or fail in CI) naming the extra that provides it."""
    try:
        return importlib.import_module(name)
    except ImportError:
        skip_unless_ci(f"{name} is not installed (pip install 'styleforge[{extra}]')")


def pytest_collection_modifyitems(config, items):
    run_slow = os.environ.get("STYLEFORGE_RUN_SLOW", "") not in ("", "0")
    has_gpu = torch.cuda.is_available()
    for item in items:
        if "slow" in item.keywords and not run_slow:
            item.add_marker(pytest.mark.skip(reason="slow test: set STYLEFORGE_RUN_SLOW=1 to run it"))
        if "gpu" in item.keywords and not has_gpu:
            item.add_marker(pytest.mark.skip(reason="needs a CUDA device"))


@pytest.fixture(autouse=True)
def _deterministic_threads():
    torch.manual_seed(0)
    yield
