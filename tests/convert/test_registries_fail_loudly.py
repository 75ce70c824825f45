"""Registry loops import every listed module: a missing one raises instead of silently shrinking the registry."""

from __future__ import annotations

import pytest

from styleforge.convert import official
from styleforge.metrics import registry as metric_registry
from styleforge.models import registry as model_registry

MISSING = "styleforge.no_such_module_for_this_test"


def test_converter_modules_all_import_and_a_missing_one_raises(monkeypatch):
    assert len(official.converters()) >= 4
    monkeypatch.setattr(official, "CONVERTER_MODULES", (*official.CONVERTER_MODULES, MISSING))
    with pytest.raises(ImportError, match="no_such_module"):
        official.converters()


@pytest.mark.parametrize(
    ("registry", "modules", "call"),
    [(metric_registry, "_METRIC_MODULES", "list_metrics"), (model_registry, "_MODEL_MODULES", "list_models")],
)
def test_metric_and_model_registries_raise_on_a_missing_module(monkeypatch, registry, modules, call):
    monkeypatch.setattr(registry, modules, (*getattr(registry, modules), MISSING))
    monkeypatch.setattr(registry, "_loaded", False)
    with pytest.raises(ImportError, match="no_such_module"):
        getattr(registry, call)()
