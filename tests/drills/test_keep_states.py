"""--keep-states: the last K training states are kept, and a damaged newest state falls back to the previous one."""

from __future__ import annotations

import dataclasses
import json

import pytest
import torch

from styleforge.training.checkpoint import (
    STATE_FILE,
    load_latest_state,
    remove_stale_temporaries,
    save_rotated_state,
    state_files,
)
from styleforge.training.loop import train
from styleforge.utils.errors import UserInputError
from tests.training.conftest import tiny_config


def _quiet(_msg: str) -> None:
    pass


def _state(nimg: int) -> dict:
    return {"format_version": 2, "cur_nimg": nimg, "w": torch.full((3,), float(nimg))}


def test_rotation_keeps_the_last_k_and_training_state_pt_is_the_newest(tmp_path):
    for nimg in (8, 16, 24, 32):
        save_rotated_state(tmp_path, _state(nimg), keep=3)
    assert [n for n, _ in state_files(tmp_path)] == [32, 24, 16]
    state, path = load_latest_state(tmp_path)
    assert state["cur_nimg"] == 32 and path.name == STATE_FILE
    save_rotated_state(tmp_path, _state(40), keep=1)  # keep 1: training_state.pt alone
    assert state_files(tmp_path) == [] and load_latest_state(tmp_path)[0]["cur_nimg"] == 40
    # A resume from an older state abandons the newer numbered ones.
    for nimg in (8, 16, 24):
        save_rotated_state(tmp_path, _state(nimg), keep=2)
    save_rotated_state(tmp_path, _state(16), keep=2)
    assert [n for n, _ in state_files(tmp_path)] == [16]  # 24 abandoned, 8 rotated out earlier


def test_a_damaged_newest_state_falls_back_to_the_previous_one_with_a_message(tmp_path):
    for nimg in (8, 16):
        save_rotated_state(tmp_path, _state(nimg), keep=2)
    newest = tmp_path / "training_state-000000016.pt"
    newest.write_bytes(newest.read_bytes()[: 1000])  # torn in place: training_state.pt is the same file
    with pytest.warns(UserWarning, match=r"newest training state is unreadable.*previous state .*000000008.pt"):
        state, path = load_latest_state(tmp_path)
    assert state["cur_nimg"] == 8 and path.name == "training_state-000000008.pt"
    (tmp_path / "training_state-000000008.pt").write_bytes(b"garbage")
    with pytest.raises(UserInputError, match=r"No readable training state(.|\n)*000000016(.|\n)*000000008"):
        load_latest_state(tmp_path)


def test_a_state_written_but_not_yet_linked_is_the_newest(tmp_path):
    save_rotated_state(tmp_path, _state(8), keep=2)
    torch.save(_state(16), tmp_path / "training_state-000000016.pt")  # killed before the link step
    assert load_latest_state(tmp_path)[0]["cur_nimg"] == 16


def test_stale_temporaries_of_killed_writes_are_removed(tmp_path):
    (tmp_path / "network-snapshot-000000").mkdir()
    stale = [tmp_path / ".training_state-000000008.pt.k2j4_x.tmp", tmp_path / "network-snapshot-000000" /
             ".model.safetensors.abc123.tmp"]
    for p in stale:
        p.write_bytes(b"x")
    keep = tmp_path / "fakes000000.png"
    keep.write_bytes(b"x")
    assert sorted(remove_stale_temporaries(tmp_path)) == sorted(stale)
    assert keep.exists() and not any(p.exists() for p in stale)


def test_training_resumes_from_the_previous_state_when_the_newest_is_torn(toy_data, tmp_path):
    cfg = dataclasses.replace(tiny_config(toy_data, ticks=3), outdir=str(tmp_path / "runs"))
    straight = train(cfg, run_dir=tmp_path / "straight", device="cpu", log=_quiet)
    two = dataclasses.replace(cfg, kimg=0.016)
    run = train(two, device="cpu", log=_quiet).run_dir
    assert [n for n, _ in state_files(run)] == [16, 8]
    (run / STATE_FILE).write_bytes((run / STATE_FILE).read_bytes()[:-100])
    with pytest.warns(UserWarning, match="Resuming from the previous state"):
        train(cfg, resume="latest", device="cpu", log=_quiet)
    done = load_latest_state(run)[0]
    ref = load_latest_state(straight.run_dir)[0]
    assert done["cur_nimg"] == 24
    assert all(torch.equal(ref["G_ema"][k], v) for k, v in done["G_ema"].items())
    # the tick replayed from the previous state is recorded once, as in the uninterrupted run
    def kimgs(run_dir):
        return [json.loads(line)["kimg"] for line in (run_dir / "stats.jsonl").read_text().splitlines()]

    assert kimgs(run) == kimgs(straight.run_dir) == [0.008, 0.016, 0.024]
