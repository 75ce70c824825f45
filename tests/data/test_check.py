"""Datasets open without decoding: the check of every image runs once (in worker processes), its verdicts are
cached and reused; decoded pixels are shared with the loader's workers."""

from __future__ import annotations

import io
import os
import zipfile

import numpy as np
import pytest
import torch
from PIL import Image

from styleforge.data import check as check_mod
from styleforge.data import open_dataset
from styleforge.utils.errors import UserInputError


def _png(seed: int, size: int = 8) -> bytes:
    buf = io.BytesIO()
    Image.fromarray(np.random.default_rng(seed).integers(0, 256, (size, size, 3), dtype=np.uint8)).save(buf, "PNG")
    return buf.getvalue()


@pytest.fixture
def own_cache(tmp_path, monkeypatch):
    monkeypatch.setenv("STYLEFORGE_CACHE", str(tmp_path / "cache"))
    return tmp_path / "cache"


def _zip(path, n, bad=()):
    with zipfile.ZipFile(path, "w") as zf:
        for i in range(n):
            zf.writestr(f"img{i:04d}.png", b"not a png" if i in bad else _png(i))
    return path


def test_parallel_check_reports_bad_files_and_is_cached(tmp_path, own_cache, monkeypatch):
    n = check_mod.INLINE_CHECK_MAX + 88  # above the inline limit: worker processes decode
    path = _zip(tmp_path / "set.zip", n, bad={7, 555})
    lines = []
    with pytest.raises(UserInputError) as err:
        open_dataset(path, check_workers=2, log=lines.append)
    msg = str(err.value)
    assert "2 unusable file(s)" in msg and "img0007.png: not an image file" in msg and "img0555.png" in msg
    assert any(f"Checking {n} image(s)" in x for x in lines)
    assert check_mod.check_cache_file(path).is_file()

    # Again (another rank, the next run): nothing is decoded, the same report comes from the cache.
    def no_decoding(*args, **kwargs):
        raise AssertionError("decoded again")

    monkeypatch.setattr(check_mod, "_run_checks", no_decoding)
    with pytest.raises(UserInputError, match="2 unusable file"):
        open_dataset(path)
    with pytest.warns(UserWarning, match="Skipping 2 unusable"):
        ds = open_dataset(path, skip_bad=True)
    assert ds.num_images == n - 2 and ds.resolution == 8
    assert ds[0][0].shape == (3, 8, 8)


def test_changed_zip_rechecks_only_changed_members(tmp_path, own_cache, monkeypatch):
    path = _zip(tmp_path / "set.zip", 20)
    open_dataset(path)
    with zipfile.ZipFile(path, "w") as zf:  # rewritten: member 3 now truncated, member 20 added
        for i in range(21):
            zf.writestr(f"img{i:04d}.png", _png(i)[:-30] if i == 3 else _png(i))
    os.utime(path, ns=(1, 1))  # a new mtime for certain
    checked = []
    real = check_mod._run_checks
    monkeypatch.setattr(check_mod, "_run_checks", lambda src, names, *a: checked.extend(names) or real(src, names, *a))
    with pytest.raises(UserInputError, match=r"img0003.png: truncated"):
        open_dataset(path)
    assert sorted(checked) == ["img0003.png", "img0020.png"]


def test_folder_cache_follows_file_changes(tmp_path, own_cache):
    root = tmp_path / "folder"
    root.mkdir()
    for i in range(5):
        (root / f"{i}.png").write_bytes(_png(i))
    assert open_dataset(root).num_images == 5
    (root / "2.png").write_bytes(b"")
    with pytest.raises(UserInputError, match=r"2.png: empty file"):
        open_dataset(root)


def test_without_cache_nothing_is_written(tmp_path, own_cache):
    path = _zip(tmp_path / "set.zip", 4)
    open_dataset(path, check_cache=False)
    assert not check_mod.check_cache_file(path).exists()


def test_decoded_pixels_are_shared_with_loader_workers(tmp_path, own_cache):
    path = _zip(tmp_path / "set.zip", 12)
    ds = open_dataset(path, xflip=True)
    assert ds._cache is not None and ds._cache.num_filled() == 0  # opening decoded nothing
    loader = torch.utils.data.DataLoader(ds, batch_size=4, num_workers=2)
    first = torch.cat([img for img, _ in loader])
    # The workers decoded; the training process sees their pixels without decoding (one copy, shared).
    assert ds._cache.num_filled() == 12
    again = torch.from_numpy(np.stack([ds[i][0] for i in range(len(ds))]))
    assert torch.equal(first, again)
    assert torch.equal(again[12], again[0].flip(-1))
