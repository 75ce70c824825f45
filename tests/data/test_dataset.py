"""Datasets: folders, zips, labels, mirroring, bad-file reporting, the dataset tool and the emoji set."""

from __future__ import annotations

import io
import json
import warnings
import zipfile

import numpy as np
import pytest
from click.testing import CliRunner
from PIL import Image

from styleforge.cli.dataset import command as dataset_command
from styleforge.data import open_dataset
from styleforge.data.prepare import PrepareConfig, prepare_dataset
from styleforge.utils.errors import UserInputError


def _png(arr) -> bytes:
    buf = io.BytesIO()
    Image.fromarray(arr).save(buf, format="PNG")
    return buf.getvalue()


def _img(h, w, c=3, seed=0):
    rng = np.random.default_rng(seed)
    shape = (h, w) if c == 1 else (h, w, c)
    return rng.integers(0, 256, shape, dtype=np.uint8)


@pytest.fixture
def class_folder(tmp_path):
    root = tmp_path / "src"
    for k, cls in enumerate(["cats", "dogs", "owls"]):
        (root / cls).mkdir(parents=True)
        for i in range(2):
            Image.fromarray(_img(20, 30, seed=10 * k + i)).save(root / cls / f"{i}.png")
    Image.fromarray(_img(24, 24, c=4, seed=99)).save(root / "owls" / "rgba.png")  # RGBA among RGB
    Image.fromarray(_img(24, 24, c=1, seed=98)).convert("L").save(root / "dogs" / "gray.jpg")
    return root


def test_folder_labels_from_subfolders_and_xflip(class_folder):
    ds = open_dataset(class_folder, resolution=16, use_labels=True, xflip=True)
    assert ds.num_images == 8 and len(ds) == 16 and ds.resolution == 16 and ds.num_channels == 3
    assert ds.label_dim == 3 and ds.class_names == ["cats", "dogs", "owls"]
    img, label = ds[0]
    assert img.dtype == np.uint8 and img.shape == (3, 16, 16) and label.tolist() == [1, 0, 0]
    flipped, label2 = ds[ds.num_images]
    assert np.array_equal(flipped, img[:, :, ::-1]) and np.array_equal(label, label2)
    assert open_dataset(class_folder, resolution=16).label_dim == 0


def test_bad_files_are_listed_with_reasons(tmp_path):
    good = _png(_img(16, 16))
    path = tmp_path / "bad.zip"
    with zipfile.ZipFile(path, "w") as zf:
        for i in range(4):
            zf.writestr(f"ok{i}.png", good)
        zf.writestr("empty.png", b"")
        zf.writestr("trunc.png", good[: len(good) // 2])
        zf.writestr("text.png", b"this is not an image")
        zf.writestr("big.png", _png(_img(32, 32)))
        zf.writestr("gray.png", _png(_img(16, 16, c=1)))
    with pytest.raises(UserInputError) as e:
        open_dataset(path)
    msg = str(e.value)
    for name, reason in [("empty.png", "empty file"), ("trunc.png", "truncated"), ("text.png", "not an image"),
                         ("big.png", "size 32x32, expected 16x16"), ("gray.png", "1 channels, expected 3")]:
        assert f"{name}: {reason}" in msg
    assert "ok0.png" not in msg and "--skip-bad" in msg
    with warnings.catch_warnings(record=True) as w:
        warnings.simplefilter("always")
        ds = open_dataset(path, skip_bad=True)
    assert len(ds) == 4 and len(ds.bad_files) == 5 and any("Skipping 5" in str(x.message) for x in w)


def test_missing_and_labelless(tmp_path):
    with pytest.raises(UserInputError, match="not found"):
        open_dataset(tmp_path / "nope")
    (tmp_path / "flat").mkdir()
    Image.fromarray(_img(8, 8)).save(tmp_path / "flat" / "a.png")
    with pytest.raises(UserInputError, match="has no labels"):
        open_dataset(tmp_path / "flat", use_labels=True)


def test_dataset_tool_round_trip(class_folder, tmp_path):
    dest = tmp_path / "out.zip"
    res = prepare_dataset(class_folder, dest, PrepareConfig(resolution=16, transform="center-crop"))
    assert res.num_images == 8 and res.num_classes == 3 and res.channels == 3
    with zipfile.ZipFile(dest) as zf:
        assert all(i.compress_type == zipfile.ZIP_STORED for i in zf.infolist())
        meta = json.loads(zf.read("dataset.json"))
        assert meta["class_names"] == ["cats", "dogs", "owls"] and len(meta["labels"]) == 8
    ds = open_dataset(dest, use_labels=True)
    src = open_dataset(class_folder, resolution=16, use_labels=True)
    assert ds.resolution == 16 and ds.label_dim == 3
    assert [int(ds.get_label(i).argmax()) for i in range(8)] == [int(src.get_label(i).argmax()) for i in range(8)]
    # Grayscale / RGBA conversion and padding through the CLI.
    for channels, transform in (("1", "pad"), ("4", "center-crop-wide")):
        out = tmp_path / f"c{channels}.zip"
        r = CliRunner().invoke(dataset_command, ["--source", str(class_folder), "--dest", str(out), "--resolution",
                                                 "8", "--channels", channels, "--transform", transform,
                                                 "--max-images", "5"])
        assert r.exit_code == 0, r.output
        d = open_dataset(out)
        assert d.num_channels == int(channels) and d.num_images == 5 and d[0][0].shape == (int(channels), 8, 8)
    r = CliRunner().invoke(dataset_command, ["--source", str(class_folder), "--dest", str(tmp_path / "x.tar"),
                                             "--resolution", "8"])
    assert r.exit_code != 0 and "must end in .zip" in r.output


def test_pad_keeps_content_centred():
    arr = np.zeros((10, 20, 3), dtype=np.uint8)
    arr[:, :, 0] = 200
    from styleforge.data.prepare import transform_image

    out = np.asarray(transform_image(Image.fromarray(arr), PrepareConfig(resolution=20, transform="pad"), 3))
    assert out.shape == (20, 20, 3)
    assert out[:5, :, 0].max() == 0 and out[15:, :, 0].max() == 0 and out[5:15, :, 0].min() == 200


def test_builtin_emoji():
    ds = open_dataset("emoji")
    assert ds.resolution == 32 and ds.num_channels == 3 and 3800 <= ds.num_images <= 4000
    img = np.stack([ds[i][0] for i in range(0, ds.num_images, 97)]).astype(np.float64)
    assert img[:, :, 0, 0].mean() > 240  # flattened on white: corners are white
    assert img.std() > 40  # and the glyphs are colourful
