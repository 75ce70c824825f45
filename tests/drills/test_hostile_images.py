"""Hostile image files into the dataset tool and the training loader (property-based, hypothesis).

Inputs: PNG/JPEG/WebP/TIFF/GIF/BMP files in odd modes (CMYK, 16-bit grayscale I;16, palette with alpha, LA, 1-bit,
float), damaged by bit flips, truncation, spliced and overwritten bytes, replaced by random bytes, or given huge
declared dimensions (decompression bombs). Each goes, next to one good image, into ``open_dataset`` (what
``styleforge train`` opens) and ``prepare_dataset`` (``styleforge dataset``). Every input ends in one of two ways:
a per-file report naming the file and the reason, or a correct conversion (uint8 ``[C, 16, 16]``); never another
exception, never longer than a few seconds, never an allocation of the declared pixels.
"""

from __future__ import annotations

import io
import os
import struct
import warnings
import zipfile
import zlib

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st
from PIL import Image

from styleforge.data import open_dataset
from styleforge.data.prepare import PrepareConfig, prepare_dataset
from styleforge.utils.errors import UserInputError
from tests.drills._hostile import drill_settings, mutated, time_limit

#: Hypothesis examples per property (10x under STYLEFORGE_RUN_SLOW=1).
EXAMPLES = 300
TRIED = {"decode": 0, "bombs": 0}


def _encode(img: Image.Image, fmt: str, **kw) -> bytes:
    buf = io.BytesIO()
    img.save(buf, format=fmt, **kw)
    return buf.getvalue()


def _seeds() -> dict[str, bytes]:
    rng = np.random.default_rng(0)
    rgb = Image.fromarray(rng.integers(0, 256, (20, 24, 3), dtype=np.uint8))
    gray16 = Image.fromarray(rng.integers(0, 65536, (20, 24), dtype=np.uint16))
    pal = rgb.convert("P", palette=Image.ADAPTIVE, colors=16)
    return {
        "rgb.png": _encode(rgb, "PNG"),
        "rgba.png": _encode(rgb.convert("RGBA"), "PNG"),
        "palette-alpha.png": _encode(pal, "PNG", transparency=3),
        "i16.png": _encode(gray16, "PNG"),
        "la.png": _encode(rgb.convert("LA"), "PNG"),
        "bits.png": _encode(rgb.convert("1"), "PNG"),
        "rgb.jpg": _encode(rgb, "JPEG", quality=80),
        "cmyk.jpg": _encode(rgb.convert("CMYK"), "JPEG"),
        "gray.jpg": _encode(rgb.convert("L"), "JPEG"),
        "rgb.webp": _encode(rgb, "WEBP"),
        "rgba.webp": _encode(rgb.convert("RGBA"), "WEBP", lossless=True),
        "i16.tif": _encode(gray16, "TIFF"),
        "float.tif": _encode(gray16.convert("F"), "TIFF"),
        "cmyk.tif": _encode(rgb.convert("CMYK"), "TIFF"),
        "anim.gif": _encode(pal, "GIF"),
        "rgb.bmp": _encode(rgb, "BMP"),
    }


SEEDS = _seeds()
GOOD = SEEDS["rgb.png"]


@pytest.fixture(autouse=True, scope="module")
def _private_cache(tmp_path_factory):
    """The dataset check caches its verdicts; keep the hundreds of throw-away folders out of the user's cache."""
    saved = os.environ.get("STYLEFORGE_CACHE")
    os.environ["STYLEFORGE_CACHE"] = str(tmp_path_factory.mktemp("cache"))
    yield
    if saved is None:
        os.environ.pop("STYLEFORGE_CACHE", None)
    else:
        os.environ["STYLEFORGE_CACHE"] = saved


def _png_chunk(kind: bytes, payload: bytes) -> bytes:
    return struct.pack(">I", len(payload)) + kind + payload + struct.pack(">I", zlib.crc32(kind + payload))


def png_declaring(width: int, height: int, mode: int = 2) -> bytes:
    """A PNG whose header (with a valid CRC) declares ``width x height`` pixels, followed by a tiny IDAT."""
    ihdr = struct.pack(">IIBBBBB", width, height, 8, mode, 0, 0, 0)
    return b"\x89PNG\r\n\x1a\n" + _png_chunk(b"IHDR", ihdr) + _png_chunk(b"IDAT", zlib.compress(b"\0" * 64)) + \
        _png_chunk(b"IEND", b"")


def gif_declaring(width: int, height: int) -> bytes:
    """A GIF whose screen and first image declare ``width x height`` (16-bit fields: at most 65535 x 65535)."""
    head = b"GIF89a" + struct.pack("<HHBBB", width, height, 0x80, 0, 0) + b"\0\0\0\xff\xff\xff"
    image = b"," + struct.pack("<HHHHB", 0, 0, width, height, 0) + b"\x02\x02\x44\x01\x00;"
    return head + image


def bmp_declaring(width: int, height: int) -> bytes:
    """A 24-bit BMP header declaring ``width x height`` with almost no pixel data."""
    info = struct.pack("<IiiHHIIiiII", 40, width, height, 1, 24, 0, 0, 2835, 2835, 0, 0)
    return b"BM" + struct.pack("<IHHI", 14 + 40 + 16, 0, 0, 14 + 40) + info + b"\0" * 16


def _huge_dims(draw, data: bytes) -> bytes:
    """Rewrite the declared size of a PNG (keeping a valid CRC), or replace the file by a bomb header."""
    w, h = draw(st.integers(1, 1 << 20)), draw(st.integers(1, 1 << 20))
    if data.startswith(b"\x89PNG") and data[12:16] == b"IHDR":
        ihdr = struct.pack(">II", w, h) + data[24:29]
        return data[:8] + _png_chunk(b"IHDR", ihdr) + data[33:]
    return draw(st.sampled_from([png_declaring(w, h), gif_declaring(min(w, 65535), min(h, 65535)),
                                 bmp_declaring(w, h)]))


hostile_images = mutated(list(SEEDS.values()), extra_kinds=(("huge", _huge_dims),))


def _write(folder, name: str, data: bytes) -> None:
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "good.png").write_bytes(GOOD)
    (folder / name).write_bytes(data)


def _check_loader_and_tool(tmp, name: str, data: bytes) -> str:
    """Run one hostile file through the training loader and the dataset tool; ``"reported"`` or ``"converted"``."""
    folder = tmp / "data"
    _write(folder, name, data)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)  # the skip_bad summary
        ds = open_dataset(folder, resolution=16, skip_bad=True)
    bad = {b.name: b.reason for b in ds.bad_files}
    if name in bad:
        assert bad[name].strip(), "a report without a reason"
        with pytest.raises(UserInputError, match=name.replace(".", r"\.") + ": "):
            open_dataset(folder, resolution=16)  # without --skip-bad the same file is named
        outcome = "reported"
    else:
        assert ds.names == sorted(["good.png", name]), ds.names
        for i in range(len(ds)):
            img, _ = ds[i]
            assert img.dtype == np.uint8 and img.shape == (ds.num_channels, 16, 16)
        outcome = "converted"
    dest = tmp / "out.zip"
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)
        result = prepare_dataset(folder, dest, PrepareConfig(resolution=16, skip_bad=True))
    skipped = {b.name for b in result.skipped}
    assert (name in skipped) == (outcome == "reported"), (name, skipped, outcome)
    with zipfile.ZipFile(dest) as zf:
        pngs = [n for n in zf.namelist() if n.endswith(".png")]
        assert len(pngs) == result.num_images == (1 if outcome == "reported" else 2)
        for n in pngs:
            with Image.open(io.BytesIO(zf.read(n))) as im:
                assert im.size == (16, 16)
    return outcome


@drill_settings(EXAMPLES)
@given(data=hostile_images, ext=st.sampled_from([".png", ".jpg", ".webp", ".tif", ".gif", ".bmp"]))
def test_hostile_images_are_reported_or_converted(tmp_path_factory, data, ext):
    tmp = tmp_path_factory.mktemp("hostile")
    with time_limit(10):
        _check_loader_and_tool(tmp, "hostile" + ext, data)
    TRIED["decode"] += 1


BOMBS = {
    "bomb.png": png_declaring(100_000, 100_000),
    "bomb-rgba.png": png_declaring(30_000, 30_000, mode=6),
    "bomb.gif": gif_declaring(65_535, 65_535),
    "bomb.bmp": bmp_declaring(200_000, 100_000),
    "just-over.png": png_declaring(9_500, 9_500),  # 90.25 Mpx: over PIL's 89.5 Mpx limit
}


@pytest.mark.parametrize("name", sorted(BOMBS))
def test_decompression_bombs_are_refused_from_their_header(tmp_path, name):
    with time_limit(5):
        assert _check_loader_and_tool(tmp_path, name, BOMBS[name]) == "reported"
    ds = open_dataset(tmp_path / "data", resolution=16, skip_bad=True)
    (reason,) = [b.reason for b in ds.bad_files]
    assert "decompression bomb" in reason or "too many pixels" in reason, reason
    TRIED["bombs"] += 1


def test_odd_modes_convert_correctly(tmp_path):
    """The seeds themselves (undamaged) are all converted, with the right values for the 16-bit and palette ones."""
    for name, data in SEEDS.items():
        assert _check_loader_and_tool(tmp_path / name, name, data) == "converted", name
    folder = tmp_path / "i16"
    folder.mkdir()
    Image.fromarray(np.full((16, 16), 65535, dtype=np.uint16)).save(folder / "white16.png")
    Image.fromarray(np.full((16, 16), 32768, dtype=np.uint16)).save(folder / "grey16.png")
    ds = open_dataset(folder)
    assert [int(ds.raw_image(i).mean()) for i in range(2)] == [128, 255]  # grey16, white16: scaled, not clipped
    pal = Image.new("P", (16, 16), 0)
    pal.putpalette([10, 20, 30] + [200, 100, 50] * 255)
    pal.putpixel((0, 0), 1)
    folder = tmp_path / "pal"
    folder.mkdir()
    pal.save(folder / "p.png", transparency=0)
    ds = open_dataset(folder)
    assert ds.num_channels == 4
    img = ds.raw_image(0)
    assert tuple(img[:, 0, 0]) == (200, 100, 50, 255) and img[3, 5, 5] == 0


def test_inputs_tried_are_recorded():
    """The counts of the drills above (run in this order by pytest), for the reliability table."""
    if not TRIED["decode"]:
        pytest.skip("run with the other tests of this file")
    print("hostile image files tried:", TRIED)
