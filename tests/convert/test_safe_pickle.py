"""The safe unpickler: official snapshots load without their code; anything else is refused before it runs."""

from __future__ import annotations

import io
import json
import os
import pickle
import subprocess
import warnings

import numpy as np
import pytest
import torch

from styleforge.convert.safe_pickle import (
    ModuleStub,
    PersistentObject,
    UnsafePickleError,
    load_official_pickle,
    safe_loads,
)
from styleforge.utils.errors import UserInputError
from tests.conftest import reference_file
from tests.convert import fake_official

# ------------------------------------------------------------------------------------------------------------
# Malicious pickles: nothing may run, and the error must name the global.
# ------------------------------------------------------------------------------------------------------------


class _Reduce:
    """Pickles as ``fn(*args)``."""

    def __init__(self, fn, *args):
        self.fn, self.args = fn, args

    def __reduce__(self):
        return self.fn, self.args


def _malicious_cases(marker: str) -> dict[str, tuple[bytes, str]]:
    """name -> (pickle bytes, text the error must contain). Each would create ``marker`` if executed."""
    cases = {
        "os.system": (pickle.dumps(_Reduce(os.system, f"touch {marker}")), f"{os.system.__module__}.system"),
        "builtins.eval": (pickle.dumps(_Reduce(eval, f"open({marker!r}, 'w')")), "builtins.eval"),
        "builtins.exec": (pickle.dumps(_Reduce(exec, f"open({marker!r}, 'w')")), "builtins.exec"),
        "subprocess.Popen": (pickle.dumps(_Reduce(subprocess.Popen, ["touch", marker])), "subprocess.Popen"),
        "protocol0 os.system": (f"cos\nsystem\n(S'touch {marker}'\ntR.".encode(), "os.system"),
        # builtins.getattr acts only on the loader's inert stand-ins: every way to reach a real callable fails
        "getattr(os.system, ...)": (b"cbuiltins\ngetattr\n(cos\nsystem\nS'x'\ntR.", "os.system"),
        "getattr(__import__('os'), 'system')": (
            f"cbuiltins\ngetattr\n(cbuiltins\n__import__\n(S'os'\ntRS'system'\ntR(S'touch {marker}'\ntR.".encode(),
            "builtins.__import__",
        ),
        "getattr(OrderedDict, 'fromkeys')": (
            b"cbuiltins\ngetattr\n(ccollections\nOrderedDict\nS'fromkeys'\ntR(S'x'\ntR.", "builtins.getattr(type"
        ),
        "getattr(getattr, '__self__')": (
            b"cbuiltins\ngetattr\n(cbuiltins\ngetattr\nS'__self__'\ntR.", "builtins.getattr(function"
        ),
        "setattr on a real object": (b"cbuiltins\nsetattr\n(ccollections\nOrderedDict\nS'x'\nI1\ntR.",
                                     "builtins.setattr(type"),
        "unknown class": (pickle.dumps(collections_counter()), "collections.Counter"),
        # torch.nn.modules classes are read as inert stubs (StyleGAN-XL's discriminator); functions are not
        "torch.nn.modules function": (
            pickle.dumps(torch.nn.modules.module.register_module_forward_hook),
            "torch.nn.modules.module.register_module_forward_hook",
        ),
    }
    # an evil global hidden deep inside an otherwise valid official snapshot
    with fake_official.official_globals():
        net = fake_official.module_state(torch.nn.Linear(2, 3), {"in_features": 2})
        net.state["evil"] = _Reduce(os.system, f"touch {marker}")
        cases["nested in a snapshot"] = (fake_official.dumps({"G": net}), f"{os.system.__module__}.system")
    return cases


def collections_counter():
    import collections

    return collections.Counter(a=1)


def test_malicious_pickles_are_refused_before_anything_runs(tmp_path):
    marker = str(tmp_path / "executed")
    for name, (data, expected) in _malicious_cases(marker).items():
        with pytest.raises(UnsafePickleError) as info:
            safe_loads(data)
        assert expected in str(info.value), (name, str(info.value))
        assert not os.path.exists(marker), f"{name}: the payload ran"
    assert issubclass(UnsafePickleError, UserInputError)


def test_extension_registry_globals_are_checked_too(tmp_path):
    import copyreg

    marker = tmp_path / "executed"
    key = (os.system.__module__, "system")
    code = 240
    copyreg.add_extension(*key, code)
    try:
        data = pickle.dumps(_Reduce(os.system, f"touch {marker}"), protocol=2)  # EXT1 opcode, no name
        assert key[1].encode() not in data
        with pytest.raises(UnsafePickleError, match=f"{key[0]}.system"):
            safe_loads(data)
    finally:
        copyreg.remove_extension(*key, code)
    assert not marker.exists()


def test_malicious_storage_bytes_are_refused_by_the_weights_only_loader(tmp_path):
    marker = tmp_path / "executed"
    inner = pickle.dumps(_Reduce(os.system, f"touch {marker}"), protocol=2)
    data = pickle.dumps(_Reduce(torch.storage._load_from_bytes, inner))
    with pytest.raises(UnsafePickleError, match="weights-only"):
        safe_loads(data)
    assert not marker.exists()


def test_module_src_is_never_executed(tmp_path):
    marker = tmp_path / "executed"
    src = f"import os\nos.system('touch {marker}')\nraise SystemExit('executed')\n"
    with fake_official.official_globals():
        net = fake_official.module_state(torch.nn.Linear(2, 3), {"in_features": 2}, module_src=src)
        data = fake_official.dumps({"G": net})
    assert src.encode() in data  # the payload really is in the file
    obj = safe_loads(data)["G"]
    assert isinstance(obj, PersistentObject)
    assert not hasattr(obj, "module_src") and "module_src" not in obj.state
    assert not marker.exists()


def test_object_arrays_are_refused():
    with pytest.raises(UnsafePickleError, match="object dtype"):
        safe_loads(pickle.dumps(np.array([1, "a"], dtype=object)))


def test_garbage_is_a_clear_user_error():
    with pytest.raises(UserInputError, match="not a readable pickle"):
        safe_loads(b"\x80\x04this is not a pickle")
    with pytest.raises(UserInputError, match="not a readable pickle"):
        safe_loads(pickle.dumps({"a": 1})[:-3])  # truncated


# ------------------------------------------------------------------------------------------------------------
# What is allowed is rebuilt faithfully.
# ------------------------------------------------------------------------------------------------------------


def test_tensors_parameters_and_numpy_values_round_trip():
    t = torch.arange(12, dtype=torch.float32).reshape(3, 4)
    value = {
        "view": t[1:, ::2],  # offset + strides
        "half": torch.tensor([1.5, -2.0], dtype=torch.float16),
        "param": torch.nn.Parameter(torch.ones(2)),
        "array": np.linspace(0, 1, 5),
        "scalar": np.float32(0.25),
        "int": np.int64(7),
    }
    for protocol in (3, 4, 5):  # what Python 3 writes (protocol 3 = legacy snapshots)
        out = safe_loads(pickle.dumps(value, protocol=protocol))
        assert torch.equal(out["view"], t[1:, ::2])
        assert out["half"].dtype == torch.float16 and out["half"].tolist() == [1.5, -2.0]
        assert isinstance(out["param"], torch.nn.Parameter) and out["param"].requires_grad
        np.testing.assert_array_equal(out["array"], np.linspace(0, 1, 5))
        assert out["scalar"] == np.float32(0.25) and out["scalar"].dtype == np.float32
        assert out["int"] == 7


def test_persistent_object_stub_records_class_kwargs_and_torch_names():
    net = torch.nn.Sequential(torch.nn.Linear(2, 3), torch.nn.BatchNorm1d(3))
    with fake_official.official_globals():
        obj = fake_official.module_state(net, {"z_dim": 4, "mapping_kwargs": {"num_layers": 2}})
        data = fake_official.dumps(
            {"G": obj, "training_set_kwargs": fake_official.easy_dict({"path": "x.zip"})}
        )
    snap = safe_loads(data)
    G = snap["G"]
    assert G.class_name == "Sequential" and G.version == fake_official.PERSISTENCE_VERSION
    assert G.init_kwargs == {"z_dim": 4, "mapping_kwargs": {"num_layers": 2}}
    assert type(G.init_kwargs) is dict and type(G.init_kwargs["mapping_kwargs"]) is dict  # EasyDict -> dict
    assert type(snap["training_set_kwargs"]) is dict
    ours = {k: v for k, v in net.state_dict().items()}
    stub = G.state_dict()
    assert list(stub) == list(ours)  # same names, same order as torch
    for k in ours:
        assert torch.equal(stub[k], ours[k]), k
    assert G.get_submodule("1").class_name == "BatchNorm1d"


def test_cuda_tagged_storages_load_on_cpu():
    net = torch.nn.Linear(3, 2)
    with fake_official.official_globals():
        data = fake_official.dumps({"G": fake_official.module_state(net)}, cuda_tags=True)
    assert b"cuda:0" in data
    if not torch.cuda.is_available():
        # the tag is real: torch refuses such a storage on a CPU-only machine unless told where to map it
        with pytest.raises(RuntimeError, match="CUDA"), warnings.catch_warnings():
            warnings.simplefilter("ignore")
            torch.load(io.BytesIO(_cuda_storage_bytes(net.weight)), weights_only=True)
    sd = safe_loads(data)["G"].state_dict()
    assert sd["weight"].device.type == "cpu"
    assert torch.equal(sd["weight"], net.weight.detach()) and torch.equal(sd["bias"], net.bias.detach())


def _cuda_storage_bytes(t: torch.Tensor) -> bytes:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        _, (data,) = t.detach().storage().__reduce__()
    return data.replace(fake_official._CPU_TAG, fake_official._CUDA_TAG)


# ------------------------------------------------------------------------------------------------------------
# The official reference pickles (current and 2021-era legacy formats, plain pickle and dill).
# ------------------------------------------------------------------------------------------------------------

REFERENCE_PICKLES = [
    ("sg2_skip_stripped.pkl", "sg2_skip.json"),
    ("sg2_skip_cond_stripped.pkl", "sg2_skip_cond.json"),
    ("sg2_skip_legacy_stripped.pkl", "sg2_skip.json"),
    ("sg3_t_32_stripped.pkl", "sg3_t_32.json"),
    ("sg3_t_32_legacy_stripped.pkl", "sg3_t_32.json"),
    ("sgxl_stem_16_stripped.pkl", "sgxl_stem_16.json"),
]


@pytest.mark.reference
@pytest.mark.parametrize("pkl,meta", REFERENCE_PICKLES, ids=[p for p, _ in REFERENCE_PICKLES])
def test_reference_pickles_load_with_official_names_and_shapes(pkl, meta):
    info = json.loads(reference_file(meta).read_text())
    snap = load_official_pickle(reference_file(pkl))
    assert set(snap) >= {"G", "D", "G_ema"}
    for key, state_key in (("G_ema", "G_ema_state"), ("D", "D_state")):
        expected = info.get(state_key)
        if expected is None:
            assert snap[key] is None
            continue
        obj = snap[key]
        assert isinstance(obj, ModuleStub)
        sd = obj.state_dict()
        assert [(k, list(v.shape), str(v.dtype).replace("torch.", "")) for k, v in sd.items()] == [
            (k, s, d) for k, s, d in expected
        ]
    assert snap["G_ema"].init_kwargs == info["G_ema_init_kwargs"]
    assert snap["G"].init_kwargs == info["G_ema_init_kwargs"]
    # G and G_ema are different networks in the file (the reference perturbed them differently)
    g, g_ema = snap["G"].state_dict(), snap["G_ema"].state_dict()
    assert any(not torch.equal(g[k], g_ema[k]) for k in g)
