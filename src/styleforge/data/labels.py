"""Label encodings of ``dataset.json``: one class per image, several classes per image, continuous attributes.

``dataset.json`` holds ``{"labels": [[file name, label], ...]}``; a label is

- an integer ``3``: one class (``class``): the conditioning vector ``c`` is one-hot (the official format);
- a list of integers ``[3, 7]``: several classes (``multi-label``): ``c`` is multi-hot. Integer lists with a
  repeated entry (``[0, 1, 0]``: a vector written with integers) are read as numbers, as the official loader
  reads every list;
- a list of numbers ``[0.2, 0.9]``: continuous attributes such as age or pose (``continuous``): ``c`` is the
  list itself, and every list must have the same length.

:func:`detect_encoding` reads the encoding off the data (``auto``); ``--cond ENCODING`` forces it: ``multi-label``
also reads single integers as one-class lists, ``continuous`` also reads integer lists as numbers. Mixed or ragged
files are refused by name, with the first offending entries and the fix. The encoding is recorded in the
generator's config (``cond_encoding``) so that ``generate --class 3,7`` / ``--cond-vector 0.2,0.9`` know what to
build (:func:`label_vector`).
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from styleforge.utils.errors import UserInputError

__all__ = ["ENCODINGS", "detect_encoding", "encode_labels", "label_vector", "parse_numbers"]

#: ``auto`` plus the three encodings a network can be conditioned with
ENCODINGS = ("auto", "class", "multi-label", "continuous")
#: how many offending entries an error message shows
_SHOWN = 3


def _is_int(v: object) -> bool:
    return isinstance(v, int) and not isinstance(v, bool)


def _is_number(v: object) -> bool:
    return _is_int(v) or isinstance(v, float)


def _kind(v: object) -> str:
    """``int``, ``int-list``, ``float-list`` or ``other`` for one raw label."""
    if _is_int(v):
        return "int"
    if isinstance(v, list) and all(_is_number(x) for x in v):
        return "int-list" if all(_is_int(x) for x in v) else "float-list"
    return "other"


def _entries(names: Sequence[str], raw: Sequence[object], idx: Sequence[int]) -> str:
    shown = ", ".join(f"[{names[i]!r}, {raw[i]!r}]" for i in idx[:_SHOWN])
    more = f" and {len(idx) - _SHOWN} more" if len(idx) > _SHOWN else ""
    return shown + more


def detect_encoding(raw: Sequence[object], names: Sequence[str], where: str) -> str:
    """The encoding of the labels ``raw`` (of the files ``names``) in ``where``; raises on mixed labels."""
    kinds = [_kind(v) for v in raw]
    other = [i for i, k in enumerate(kinds) if k == "other"]
    if other:
        raise UserInputError(
            f"{where}: labels must be an integer, a list of integers or a list of numbers; these are not: "
            f"{_entries(names, raw, other)}. Fix those entries."
        )
    present = set(kinds)
    if present == {"int"}:
        return "class"
    if present <= {"int-list", "float-list"}:
        if "float-list" in present or any(len(set(v)) < len(v) for v in raw):
            # A repeated entry cannot be a list of classes: [0, 1, 0] is a vector written with integers, which
            # the official loader reads as numbers too.
            return "continuous"
        return "multi-label"
    ints = [i for i, k in enumerate(kinds) if k == "int"]
    lists = [i for i, k in enumerate(kinds) if k != "int"]
    raise UserInputError(
        f"{where} mixes single-integer labels ({_entries(names, raw, ints)}) with list labels "
        f"({_entries(names, raw, lists)}). Write every label the same way (a single class 3 as [3] for "
        "multi-label data), or pass --cond multi-label to read single integers as one-class lists."
    )


def encode_labels(raw: Sequence[object], names: Sequence[str], where: str,
                  encoding: str = "auto") -> tuple[np.ndarray, str]:
    """``(c [N, c_dim] float32, encoding)`` for the raw labels of ``names`` (read from ``where``).

    Args:
        raw: one JSON label per image.
        names: the file names (for error messages).
        where: the label file (for error messages).
        encoding: one of :data:`ENCODINGS`; ``auto`` detects it.
    """
    if encoding not in ENCODINGS:
        raise UserInputError(f"Unknown label encoding {encoding!r}; choose one of {', '.join(ENCODINGS)}.")
    if encoding == "auto":
        encoding = detect_encoding(raw, names, where)
    kinds = [_kind(v) for v in raw]
    if encoding == "class":
        wrong = [i for i, k in enumerate(kinds) if k != "int"]
        if wrong:
            raise UserInputError(
                f"{where}: --cond class needs one integer class per image; these are not: "
                f"{_entries(names, raw, wrong)}. Use --cond multi-label or --cond continuous for list labels."
            )
        return _one_hot([[int(v)] for v in raw], names, raw, where), encoding
    if encoding == "multi-label":
        wrong = [i for i, k in enumerate(kinds) if k not in ("int", "int-list")]
        if wrong:
            raise UserInputError(
                f"{where}: multi-label data needs lists of integer class indices; these are not: "
                f"{_entries(names, raw, wrong)}. Use --cond continuous for lists of numbers."
            )
        return _one_hot([[v] if _is_int(v) else list(v) for v in raw], names, raw, where), encoding
    wrong = [i for i, k in enumerate(kinds) if k not in ("int-list", "float-list")]
    if wrong:
        raise UserInputError(
            f"{where}: continuous labels must be lists of numbers; these are not: {_entries(names, raw, wrong)}. "
            "Write each label as a list such as [0.2, 0.9]."
        )
    lengths = [len(v) for v in raw]
    common = max(set(lengths), key=lengths.count)
    ragged = [i for i, n in enumerate(lengths) if n != common]
    if ragged or common == 0:
        raise UserInputError(
            f"{where}: continuous labels must all have the same length; most have {common}, these do not: "
            f"{_entries(names, raw, ragged)}. Give every image the same attributes (pad missing ones with a "
            "neutral value)."
        )
    return np.asarray(raw, dtype=np.float32).reshape(len(raw), common), encoding


def _one_hot(classes: list[list[int]], names: Sequence[str], raw: Sequence[object], where: str) -> np.ndarray:
    negative = [i for i, cl in enumerate(classes) if any(k < 0 for k in cl)]
    if negative:
        raise UserInputError(f"{where}: class labels must be >= 0; these are not: {_entries(names, raw, negative)}.")
    dim = max((k for cl in classes for k in cl), default=-1) + 1
    if dim == 0:
        raise UserInputError(f"{where}: every label list is empty; give at least one class index.")
    out = np.zeros((len(classes), dim), dtype=np.float32)
    for row, cl in enumerate(classes):
        out[row, cl] = 1
    return out


def parse_numbers(text: str, what: str) -> list[float]:
    """``"0.2, 0.9"`` -> ``[0.2, 0.9]`` (for ``--class 3,7`` and ``--cond-vector``)."""
    try:
        return [float(t) for t in text.split(",") if t.strip()]
    except ValueError:
        raise UserInputError(f"{what} must be comma-separated numbers, got {text!r}.") from None


def label_vector(c_dim: int, encoding: str, classes: Sequence[int] | None = None,
                 vector: Sequence[float] | None = None) -> np.ndarray:
    """The conditioning vector ``c`` ``[c_dim]`` for a network of this ``encoding``.

    ``classes`` (``--class``) gives one class (``class``) or several (``multi-label``); ``vector``
    (``--cond-vector``) gives the ``c_dim`` attribute values of a ``continuous`` network. Raises with the fix when
    the arguments do not fit the network.
    """
    if c_dim == 0:
        if classes or vector:
            raise UserInputError("This network is unconditional; leave out --class and --cond-vector.")
        return np.zeros(0, dtype=np.float32)
    if encoding == "continuous":
        if vector is None:
            raise UserInputError(
                f"This network is conditioned on {c_dim} continuous attributes: give --cond-vector with {c_dim} "
                "comma-separated numbers (e.g. --cond-vector " + ",".join(["0.5"] * c_dim) + ")."
            )
        if len(vector) != c_dim:
            raise UserInputError(f"--cond-vector has {len(vector)} values; this network needs {c_dim}.")
        return np.asarray(vector, dtype=np.float32)
    if vector is not None:
        if len(vector) != c_dim:
            raise UserInputError(f"--cond-vector has {len(vector)} values; this network needs {c_dim}.")
        return np.asarray(vector, dtype=np.float32)  # an explicit c (e.g. a soft mixture of classes)
    if not classes:
        raise UserInputError(f"This network is conditional ({c_dim} classes): give --class.")
    if encoding == "class" and len(classes) > 1:
        raise UserInputError(
            f"This network was trained with one class per image; --class takes one index, got {list(classes)}."
        )
    bad = [k for k in classes if not 0 <= k < c_dim]
    if bad:
        raise UserInputError(f"--class {bad[0]} is out of range: this network has classes 0..{c_dim - 1}.")
    out = np.zeros(c_dim, dtype=np.float32)
    out[list(classes)] = 1
    return out
