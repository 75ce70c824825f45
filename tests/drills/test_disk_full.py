"""Disk-full drill: writes fail with ENOSPC; the previous snapshot and state stay intact, the run stops with a
message naming the directory and the free space needed, and resumes once space is freed.

Two disks: styleforge's atomic writer behind a byte quota (always), and a real 12 MB tmpfs filled up by another
file (STYLEFORGE_RUN_SLOW=1, where the machine lets a user namespace mount one: ``unshare -rm``).
"""

from __future__ import annotations

import dataclasses
import shutil
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
import torch

import styleforge.utils.io as sio
from styleforge.training.checkpoint import DiskFullError, load_latest_state
from styleforge.training.loop import train
from tests.drills import _proc
from tests.drills.harness import FullDisk
from tests.training.conftest import tiny_config


def _quiet(_msg: str) -> None:
    pass


def _files(run: Path) -> dict[str, bytes]:
    """Every file of a run except the logs that only grow."""
    return {p.relative_to(run).as_posix(): p.read_bytes() for p in sorted(run.rglob("*"))
            if p.is_file() and p.name not in ("log.txt", "stats.jsonl") and not p.name.startswith("events.")}


def test_enospc_keeps_the_last_snapshot_and_state_and_the_run_resumes(toy_data, tmp_path, monkeypatch):
    cfg = tiny_config(toy_data, ticks=3)
    run = tmp_path / "run"
    train(dataclasses.replace(cfg, kimg=0.008), run_dir=run, device="cpu", log=_quiet)
    before = _files(run)
    for free in (200_000, 1_000_000):  # fails in the snapshot's weights, then in the state
        monkeypatch.setattr(sio, "os", FullDisk(free))
        with pytest.raises(DiskFullError) as err:
            train(cfg, resume=str(run), device="cpu", log=_quiet)
        monkeypatch.undo()
        msg = str(err.value)
        assert f"No space left on the device of {run}" in msg and "MB free there" in msg
        needed = float(msg.split("needs about ")[1].split(" MB")[0])
        assert needed > 1.0  # state + snapshot of the tiny networks: a few MB
        after = _files(run)
        # The run's config.json holds the resumed --kimg, and the new snapshot (image 16, beside image 8's) may
        # have been written completely before the state failed; everything else is unchanged.
        changed = {k for k in after if before.get(k) != after[k]}
        assert changed <= {"config.json", "network-snapshot-000000.016/model.safetensors",
                           "network-snapshot-000000.016/config.json"}
        assert "training_state.pt" in after and after["training_state.pt"] == before["training_state.pt"]
        assert not [k for k in after if k.endswith(".tmp")]
        assert load_latest_state(run)[0]["cur_nimg"] == 8
    result = train(cfg, resume=str(run), device="cpu", log=_quiet)  # space freed
    assert result.cur_nimg == 24
    straight = train(cfg, run_dir=tmp_path / "straight", device="cpu", log=_quiet)
    a, b = load_latest_state(run)[0], load_latest_state(straight.run_dir)[0]
    assert all(torch.equal(a["G_ema"][k], v) for k, v in b["G_ema"].items())


_TMPFS_SCRIPT = """
set -u
mount -t tmpfs -o size=12m tmpfs "$DISK" || exit 77
cd "$REPO"
run() { "$PY" -m tests.drills.harness train "$@" --outdir "$DISK/runs" --device cpu >> "$OUT/log.txt" 2>&1; echo $?; }
echo "first $(run --cfg stylegan2-tiny --data "$DATA" --batch 4 --tick 0.004 --kimg 0.004 --snap 1)" > "$OUT/codes"
cp -a "$DISK/runs" "$OUT/before"
dd if=/dev/zero of="$DISK/filler" bs=64k 2>/dev/null
truncate -s -300k "$DISK/filler"
echo "full $(run --resume latest --kimg 0.008)" >> "$OUT/codes"
df -k "$DISK" | tail -1 >> "$OUT/df"
cp -a "$DISK/runs" "$OUT/full"
rm "$DISK/filler"
echo "freed $(run --resume latest --kimg 0.008)" >> "$OUT/codes"
cp -a "$DISK/runs" "$OUT/after"
"""


@pytest.mark.slow  # three start-ups of the CLI (~30 s on 2 busy cores); the quota drill above runs always
def test_a_real_full_tmpfs(toy_data, tmp_path):
    if shutil.which("unshare") is None:
        pytest.skip("no unshare(1) to mount a small tmpfs")
    probe = subprocess.run(["unshare", "-rm", "true"], capture_output=True)
    if probe.returncode != 0:
        pytest.skip(f"this machine does not allow user namespaces ({probe.stderr.decode().strip()})")
    disk, out = tmp_path / "disk", tmp_path / "out"
    disk.mkdir()
    out.mkdir()
    env = _proc.drill_env(DISK=str(disk), OUT=str(out), DATA=str(toy_data), REPO=str(_proc.REPO), PY=sys.executable)
    r = subprocess.run(["unshare", "-rm", "bash", "-c", textwrap.dedent(_TMPFS_SCRIPT)], env=env, timeout=300)
    if r.returncode == 77:
        pytest.skip("cannot mount a tmpfs in a user namespace here")
    log = (out / "log.txt").read_text()
    codes = dict(line.split() for line in (out / "codes").read_text().splitlines())
    assert codes == {"first": "0", "full": "1", "freed": "0"}, log[-3000:]
    (run_name,) = [p.name for p in (out / "before").iterdir()]
    assert f"No space left on the device of {disk}/runs/{run_name}" in log
    assert "A snapshot with its training state needs about" in log
    assert "free some space and continue with --resume latest" in log
    assert "Traceback" not in log
    before, full = _files(out / "before" / run_name), _files(out / "full" / run_name)
    assert full["training_state.pt"] == before["training_state.pt"]
    assert not [k for k in full if k.endswith(".tmp")]
    styleforge_load = __import__("styleforge").load
    styleforge_load(out / "full" / run_name / "network-snapshot-000000")
    assert load_latest_state(out / "after" / run_name)[0]["cur_nimg"] == 8
