"""Issue 11, item 3: a full disk at any stage, synthesis and training checkpoints included, gives one clear
line naming the path, the free space and the space needed; nothing finished is lost; a rerun after freeing
space gives what an uninterrupted run gives. The disk is filled with write hooks (errno ENOSPC, and the
errno-less messages HDF5 and torch give)."""
from __future__ import annotations

import dataclasses
import errno

import h5py
import numpy as np
import pytest
import torch

import pipeline.runner as runner
from pipeline.runner import run_stage
from pipeline.store import DiskFullError, Workspace, atomic_path, is_disk_full
from toy_stages import KEYS, NUMBERS, SUMS, ToyConfig, compute_numbers

HDF5_FULL = RuntimeError("Can't decrement id ref count (file write failed: time = Thu Dec  3 22:19:19 2026, "
                         "filename = 'x.h5', file descriptor = 4, errno = 28, error message = 'No space left on "
                         "device', total write size = 3366)")
TORCH_FULL = RuntimeError("[enforce fail at inline_container.cc:603] . unexpected pos 1664 vs 1594")


def read_all(root):
    out = {}
    for path in sorted(root.rglob("*.h5")):
        with h5py.File(path, "r") as h5:
            out[str(path.relative_to(root))] = {k: h5[k][()] for k in h5}
    return out


@pytest.mark.parametrize("fault", ["enospc", "hdf5"])
def test_a_full_disk_stops_the_stage_with_one_line_and_keeps_what_finished(tmp_path, fault):
    full_from = KEYS.index("k2")

    def compute_until_full(unit, cfg, tmp):
        if KEYS.index(unit.key[0]) >= full_from:
            tmp["values"].write_bytes(b"\0" * 100)            # half written when the disk fills
            raise OSError(errno.ENOSPC, "No space left on device") if fault == "enospc" else HDF5_FULL
        compute_numbers(unit, cfg, tmp)

    ws, cfg = Workspace(tmp_path / "full"), ToyConfig()
    report = run_stage(dataclasses.replace(NUMBERS, compute=compute_until_full), cfg, ws, progress=False)
    assert report.done == ["k0", "k1"] and list(report.failed) == ["k2"]      # k3… were not tried
    line = report.disk_full
    assert line.startswith("DiskFullError: disk full: no space left to write ") and "\n" not in line
    assert str(ws.cache / "numbers" / "k2.h5") in line and "free there" in line and "needed" in line
    assert "rerun the same command" in line
    assert not [p for p in (ws.cache / "numbers").iterdir() if ".tmp-" in p.name]
    # space freed: the rerun finishes, equal to a run that never hit the full disk
    for stage in (NUMBERS, SUMS):
        assert not run_stage(stage, cfg, ws, progress=False).failed
    for stage in (NUMBERS, SUMS):
        run_stage(stage, cfg, Workspace(tmp_path / "clean"), progress=False)
    a, b = read_all(tmp_path / "full" / "cache"), read_all(tmp_path / "clean" / "cache")
    assert a.keys() == b.keys() and all(np.array_equal(a[k][d], b[k][d]) for k in a for d in a[k])


def test_a_unit_is_refused_before_it_writes_when_the_free_space_is_less_than_a_unit_takes(tmp_path, monkeypatch):
    ws, cfg = Workspace(tmp_path), ToyConfig()
    run_stage(NUMBERS, cfg, ws, progress=False)
    (ws.cache / "numbers" / "k4.h5.manifest.json").unlink()       # one unit left to do
    calls = []
    monkeypatch.setattr(runner, "free_bytes", lambda path: 1000)
    report = run_stage(dataclasses.replace(NUMBERS, compute=lambda *a: calls.append(a)), cfg, ws, progress=False)
    assert calls == [] and list(report.failed) == ["k4"]
    assert "(1000 B free there; about 2.5 MB needed)" in report.disk_full, report.disk_full


def test_a_training_checkpoint_on_a_full_disk_names_the_path_and_keeps_the_last_one(tmp_path, monkeypatch):
    from models import checkpoint

    folder = tmp_path / "ckpt"
    checkpoint.save(folder, "epoch_0001.pt", {"epoch": 1})
    real_save = torch.save

    def save_until_full(payload, path):
        real_save(payload, path)                              # torch says 'unexpected pos', no errno
        raise TORCH_FULL
    monkeypatch.setattr(torch, "save", save_until_full)
    monkeypatch.setattr("pipeline.store.free_bytes", lambda path: 0)
    with pytest.raises(DiskFullError) as err:
        checkpoint.save(folder, "epoch_0002.pt", {"epoch": 2})
    message = str(err.value)
    assert message.startswith(f"disk full: no space left to write {folder / 'epoch_0002.pt'} (0 B free there; "
                              f"at least ") and "\n" not in message
    assert checkpoint.load_last(folder)["epoch"] == 1             # the finished checkpoint is intact
    assert sorted(p.name for p in folder.iterdir()) == ["epoch_0001.pt", "last"]


def test_disk_full_is_recognised_in_what_each_library_says():
    assert is_disk_full(OSError(errno.ENOSPC, "No space left on device"))
    assert is_disk_full(OSError(errno.EDQUOT, "Disk quota exceeded"))
    assert is_disk_full(HDF5_FULL)
    assert not is_disk_full(OSError(errno.EACCES, "Permission denied"))
    assert not is_disk_full(ValueError("unit k3 was told to fail"))


def test_a_failed_atomic_write_on_a_full_disk_leaves_no_temp_file(tmp_path):
    with pytest.raises(DiskFullError, match="no space left to write .*out.txt"):
        with atomic_path(tmp_path / "out.txt") as tmp:
            tmp.write_text("half")
            raise OSError(errno.ENOSPC, "No space left on device")
    assert list(tmp_path.iterdir()) == []
