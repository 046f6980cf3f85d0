"""The per-movie tensor file: round trip, validation, and atomic writes."""
import h5py
import numpy as np
import pytest

from pipeline.store import (DataError, MovieTensor, atomic_path, read_movie_tensor,
                            write_movie_tensor)


def make_tensor(n=4, t=6, seed=0) -> MovieTensor:
    rng = np.random.default_rng(seed)
    mask = rng.random((n, t)) > 0.2
    landmarks = rng.normal(size=(n, t, 136)).astype(np.float32)
    landmarks[~mask] = np.nan
    return MovieTensor(landmarks, mask, np.array([f"m{i}" for i in range(n)], dtype=object),
                       np.array(["s0"] * n, dtype=object), movie="toy")


def test_round_trip(tmp_path):
    tensor = make_tensor()
    write_movie_tensor(tmp_path / "toy.h5", tensor)
    back = read_movie_tensor(tmp_path / "toy.h5")
    np.testing.assert_array_equal(back.mask, tensor.mask)
    np.testing.assert_array_equal(back.landmarks, tensor.landmarks)
    assert list(back.member_id) == list(tensor.member_id) and back.movie == "toy"


def test_foreign_writer_with_minimal_schema_is_accepted(tmp_path):
    """Another lab's program writes only what the contract requires (ints for the mask, bytes ids)."""
    tensor = make_tensor()
    with h5py.File(tmp_path / "foreign.h5", "w") as h5:
        h5["landmarks"] = tensor.landmarks
        h5["mask"] = tensor.mask.astype(np.uint8)
        h5["member_id"] = np.array([m.encode() for m in tensor.member_id])
        h5["session_id"] = np.array([b"s0"] * 4)
        h5.attrs.update(movie="foreign", bin_seconds=1.0, units="px", schema_version=1)
    back = read_movie_tensor(tmp_path / "foreign.h5")
    assert back.mask.dtype == bool and back.member_id[0] == "m0"


@pytest.mark.parametrize("breakage, message", [
    (lambda t: setattr(t, "landmarks", t.landmarks[..., :100]), "must have shape"),
    (lambda t: setattr(t, "mask", t.mask[:, :3]), "'mask' must have shape"),
    (lambda t: t.landmarks.__setitem__((0, np.argmax(t.mask[0])), np.nan), "marked observed"),
    (lambda t: setattr(t, "member_id", t.member_id[:2]), "'member_id' must have"),
])
def test_invalid_tensors_are_refused_with_a_reason(tmp_path, breakage, message):
    tensor = make_tensor()
    breakage(tensor)
    with pytest.raises(DataError, match=message):
        write_movie_tensor(tmp_path / "bad.h5", tensor)
    assert not (tmp_path / "bad.h5").exists()


def test_empty_and_missing_files(tmp_path):
    empty = MovieTensor(np.zeros((0, 5, 136), np.float32), np.zeros((0, 5), bool),
                        np.array([], dtype=object), np.array([], dtype=object), movie="e")
    with pytest.raises(DataError, match="empty"):
        empty.validate()
    with pytest.raises(DataError, match="tensor file not found"):
        read_movie_tensor(tmp_path / "nope.h5")
    (tmp_path / "junk.h5").write_text("not hdf5")
    with pytest.raises(DataError, match="not a readable HDF5"):
        read_movie_tensor(tmp_path / "junk.h5")


def test_atomic_path_leaves_nothing_on_error(tmp_path):
    final = tmp_path / "out.txt"
    final.write_text("old, complete")
    with pytest.raises(RuntimeError):
        with atomic_path(final) as tmp:
            tmp.write_text("half")
            raise RuntimeError("crash mid-write")
    assert final.read_text() == "old, complete"
    assert list(tmp_path.iterdir()) == [final]


def test_disk_full_is_a_clear_error_and_keeps_the_old_output(tmp_path, monkeypatch):
    import errno
    import os

    final = tmp_path / "tensor.h5"
    write_movie_tensor(final, make_tensor(seed=1))
    before = final.read_bytes()

    def full_disk(fd):
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(os, "fsync", full_disk)
    with pytest.raises(DataError, match="disk full.*workspace.root"):
        write_movie_tensor(final, make_tensor(seed=2))
    assert final.read_bytes() == before
    assert list(tmp_path.iterdir()) == [final]


def test_a_file_where_the_workspace_should_be_is_a_clear_error(tmp_path):
    from pipeline.store import ensure_dir

    blocker = tmp_path / "data"
    blocker.write_text("a file, not a folder")
    with pytest.raises(DataError, match="cannot create folder .*data/cache.*workspace.root"):
        ensure_dir(blocker / "cache")
