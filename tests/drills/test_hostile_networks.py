"""Hostile network files into ``styleforge.load`` (property-based, hypothesis).

Inputs: official training pickles (tiny ones written by the fake official helpers, and the small reference
pickles) damaged by bit flips, truncation, spliced bytes, opcode substitutions, injected global references (also
nested ones that call ``posix.system`` / ``builtins.eval`` to create a sentinel file) and oversize length
fields; styleforge directories whose ``model.safetensors`` (bytes or header) or ``config.json`` (bytes or values)
are damaged.

What counts: ``load`` returns networks, or raises a :class:`styleforge.utils.errors.StyleforgeError`
(``UserInputError``, ``UnsafePickleError``, ``ConversionError``, ...: the CLI prints those as one ``Error:`` line).
Any other exception is a traceback from deep inside and fails the drill; so does the sentinel file appearing,
an input taking more than a few seconds, or memory growing (a pickle declaring a 1 TB storage, a config.json
declaring a 2^31-wide layer: refused before allocating).
"""

from __future__ import annotations

import copy
import io
import json
import pickle
import pickletools
import resource
import struct
import warnings

import numpy as np
import pytest
import torch
from hypothesis import given
from hypothesis import strategies as st

import styleforge
from styleforge.convert.safe_pickle import UnsafePickleError
from styleforge.models.registry import create_model
from styleforge.utils.errors import StyleforgeError
from tests.conftest import reference_file
from tests.convert.test_official_stylegan2 import make_networks, official_bytes
from tests.drills._hostile import drill_settings, mutated, time_limit

#: Hypothesis examples per property (10x under STYLEFORGE_RUN_SLOW=1).
PICKLE_EXAMPLES, REFERENCE_EXAMPLES, DIRECTORY_EXAMPLES = 80, 6, 120
#: Memory an input may add to the process (the tiny networks need a few MB).
MAX_RSS_GROWTH_MB = 400

OFFICIAL = official_bytes(*make_networks())
_OPS = [(pos, op.code) for op, _arg, pos in pickletools.genops(io.BytesIO(OFFICIAL))]
_OPCODES = [op.code.encode("latin1") for op in pickletools.opcodes]


def _rss_mb() -> int:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss // 1024


def _injections(sentinel: str) -> list[bytes]:
    """Pickle fragments that would run a command or reach a dangerous object if a loader allowed them."""
    cmd = f"touch {sentinel}".encode()
    return [
        b"cposix\nsystem\n(V" + cmd + b"\ntR0",
        b"cos\nsystem\n(V" + cmd + b"\ntR0",
        b"cbuiltins\neval\n(V__import__('os').system('" + cmd + b"')\ntR0",
        # nested: getattr(<module os>, 'system')(cmd), and getattr on a real class
        b"cbuiltins\ngetattr\n(cos\npath\nVsystem\ntR(V" + cmd + b"\ntR0",
        b"cbuiltins\ngetattr\n(cbuiltins\nobject\nV__subclasses__\ntR)R0",
        b"ctorch_utils.persistence\n_reconstruct_persistent_obj\n(}Vtype\nVclass\nstR0",
        b"cnumpy.core.multiarray\n_reconstruct\n(cnumpy\nndarray\n(\x8a\x06\x00\x00\x00\x00\x00\x01tC\x01btR0",
    ]


def _oversize(draw, data: bytes) -> bytes:
    """A length-prefixed opcode declaring far more bytes than the file holds, at an opcode boundary."""
    pos = draw(st.sampled_from([p for p, _ in _OPS]))
    n = draw(st.sampled_from([1 << 31, 1 << 40, (1 << 63) - 1]))
    frag = draw(st.sampled_from([b"\x8e" + struct.pack("<Q", n), b"\x8d" + struct.pack("<Q", n),
                                 b"B" + struct.pack("<I", min(n, (1 << 32) - 1)), b"\x95" + struct.pack("<Q", n)]))
    return data[:pos] + frag + data[pos:]


def _opcode(draw, data: bytes) -> bytes:
    out = bytearray(data)
    for pos, _ in draw(st.lists(st.sampled_from(_OPS), min_size=1, max_size=3)):
        out[pos : pos + 1] = draw(st.sampled_from(_OPCODES))
    return bytes(out)


def _inject(sentinel: str):  # noqa: ANN202
    def inject(draw, data: bytes) -> bytes:
        pos = draw(st.sampled_from([p for p, _ in _OPS]))
        return data[:pos] + draw(st.sampled_from(_injections(sentinel))) + data[pos:]

    return inject


def _load_or_refuse(path) -> str:  # noqa: ANN001
    """``styleforge.load(path)``: ``"loaded"``, ``"refused"`` or ``"unsafe"``; anything else fails the drill."""
    before = _rss_mb()
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            nets = styleforge.load(path)
        assert nets.networks(), "loaded without a network"
        outcome = "loaded"
    except UnsafePickleError:
        outcome = "unsafe"
    except StyleforgeError as e:
        assert str(e).strip()
        outcome = "refused"
    assert _rss_mb() - before < MAX_RSS_GROWTH_MB, "memory grew by more than the file could hold"
    return outcome


TRIED: dict[str, int] = {}


def _count(kind: str) -> None:
    TRIED[kind] = TRIED.get(kind, 0) + 1


@pytest.fixture(scope="module")
def sentinel(tmp_path_factory):
    path = tmp_path_factory.mktemp("sentinel") / "EXECUTED"
    yield path
    assert not path.exists(), "a hostile pickle ran a command"


def test_official_pickles_mutated(tmp_path_factory, sentinel):
    extra = (("opcode", _opcode), ("opcode2", _opcode), ("inject", _inject(str(sentinel))),
             ("inject2", _inject(str(sentinel))), ("oversize", _oversize))

    @drill_settings(PICKLE_EXAMPLES)
    @given(data=mutated([OFFICIAL], extra_kinds=extra))
    def check(data):
        path = tmp_path_factory.mktemp("pkl") / "snapshot.pkl"
        path.write_bytes(data)
        with time_limit(20):
            _load_or_refuse(path)
        assert not sentinel.exists()
        _count("official pickles")

    check()


def test_reference_pickles_mutated(tmp_path_factory, sentinel):
    data = reference_file("sg3_r_32_stripped.pkl").read_bytes()
    extra = (("inject", _inject(str(sentinel))),)

    @drill_settings(REFERENCE_EXAMPLES)
    @given(mutant=mutated([data], extra_kinds=extra))
    def check(mutant):
        path = tmp_path_factory.mktemp("ref") / "snapshot.pkl"
        path.write_bytes(mutant)
        with time_limit(60):
            _load_or_refuse(path)
        assert not sentinel.exists()
        _count("reference pickles")

    check()


def _legacy_storage(numel_bytes: int) -> bytes:
    """``torch.save`` (legacy format) bytes of a 24-byte storage whose record declares ``numel_bytes`` bytes."""
    buf = io.BytesIO()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        torch.save(torch.arange(6, dtype=torch.float32).untyped_storage(), buf, _use_new_zipfile_serialization=False)
    legacy = buf.getvalue()
    assert legacy.count(b"K\x18N") == 1  # BININT1 24, then the view metadata None
    return legacy.replace(b"K\x18N", b"\x8a\x06" + numel_bytes.to_bytes(6, "little") + b"N")


class _Call:
    def __init__(self, fn, *args) -> None:  # noqa: ANN001, ANN002
        self.fn, self.args = fn, args

    def __reduce__(self):  # noqa: ANN204
        return self.fn, self.args


@pytest.mark.parametrize("what", ["storage", "array", "bytes8", "unicode8"])
def test_a_pickle_declaring_a_terabyte_is_refused_before_allocating(tmp_path, what):
    tb = 1 << 40
    data = {
        "storage": lambda: pickle.dumps({"G": _Call(torch.storage._load_from_bytes, _legacy_storage(tb))}, 4),
        "array": lambda: pickle.dumps(_Call(np._core.multiarray._reconstruct, np.ndarray, (tb,), b"b"), 4),
        "bytes8": lambda: b"\x80\x04\x8e" + struct.pack("<Q", tb) + b"xyz.",
        "unicode8": lambda: b"\x80\x04\x8d" + struct.pack("<Q", tb) + b"xyz.",
    }[what]()
    path = tmp_path / "tb.pkl"
    path.write_bytes(data)
    with time_limit(10):
        assert _load_or_refuse(path) in ("refused", "unsafe")
    _count("terabyte pickles")


@pytest.fixture(scope="module")
def saved_dir(tmp_path_factory):
    torch.manual_seed(0)
    root = tmp_path_factory.mktemp("saved") / "net"
    styleforge.save(root, G=create_model("stylegan2-tiny", "G"), D=create_model("stylegan2-tiny", "D"))
    return root


_ODD_VALUES = st.sampled_from([0, -1, 1, 3, 1024, 65536, 1 << 31, 1 << 40, 1e308, float("nan"), -0.5, "x", None,
                               True, [], {}, [1, 2], {"a": 1}])


def _paths(obj, path=()):  # noqa: ANN001, ANN202
    if isinstance(obj, dict):
        for k, v in obj.items():
            yield path + (k,)
            yield from _paths(v, path + (k,))
    elif isinstance(obj, list):
        for i, v in enumerate(obj):
            yield path + (i,)
            yield from _paths(v, path + (i,))


@st.composite
def mutated_config(draw, config: dict) -> str:
    c = copy.deepcopy(config)
    for path in draw(st.lists(st.sampled_from(list(_paths(config))), min_size=1, max_size=3)):
        parent = c
        try:
            for p in path[:-1]:
                parent = parent[p]
            if draw(st.booleans()) or not isinstance(parent, dict):
                parent[path[-1]] = draw(_ODD_VALUES)
            else:
                del parent[path[-1]]
        except (KeyError, IndexError, TypeError):
            continue  # an earlier change removed or replaced this path
    return json.dumps(c)


@st.composite
def mutated_header(draw, weights: bytes) -> bytes:
    n = int.from_bytes(weights[:8], "little")
    header = json.loads(weights[8 : 8 + n])
    key = draw(st.sampled_from(sorted(k for k in header if k != "__metadata__")))
    field = draw(st.sampled_from(["dtype", "shape", "data_offsets"]))
    header[key][field] = draw(st.sampled_from({
        "dtype": ["F64", "I8", "BOOL", "F16", "X", 3],
        "shape": [[1 << 20, 1 << 20], [], [0], [-1], [3, 5], "x"],
        "data_offsets": [[0, 1 << 40], [5, 3], [0, 0], [-1, 4]],
    }[field]))
    raw = json.dumps(header).encode()
    if draw(st.booleans()):
        return struct.pack("<Q", len(raw)) + raw + weights[8 + n :]
    return struct.pack("<Q", draw(st.sampled_from([1 << 40, len(raw) + 7, 0]))) + raw + weights[8 + n :]


def test_styleforge_directories_mutated(tmp_path_factory, saved_dir):
    config_text = (saved_dir / "config.json").read_text()
    config, weights = json.loads(config_text), (saved_dir / "model.safetensors").read_bytes()
    damage = st.one_of(
        st.tuples(mutated_config(config), st.just(weights)),
        st.tuples(mutated([config_text.encode()]).map(lambda b: b.decode("utf-8", "replace")), st.just(weights)),
        st.tuples(st.just(config_text), mutated([weights])),
        st.tuples(st.just(config_text), mutated_header(weights)),
    )

    @drill_settings(DIRECTORY_EXAMPLES)
    @given(files=damage)
    def check(files):
        d = tmp_path_factory.mktemp("dir")
        (d / "config.json").write_text(files[0], encoding="utf-8")
        (d / "model.safetensors").write_bytes(files[1])
        with time_limit(20):
            assert _load_or_refuse(d) in ("loaded", "refused")
        _count("styleforge directories")

    check()


def test_inputs_tried_are_recorded():
    """The counts of the drills above (run in this order by pytest), for the reliability table."""
    if not TRIED:
        pytest.skip("run with the other tests of this file")
    print("hostile network files tried:", TRIED)
