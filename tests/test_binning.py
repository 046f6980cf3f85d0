"""Binning: movie time axis, combination per bin, mask, metadata, and bad input."""
import numpy as np
import pytest

from pipeline.binning import bin_movie, combine_faces, n_bins, recorded_bins
from pipeline.members import RIGID_POINTS, build_members, fit_scores
from pipeline.store import DataError, FaceArrays, read_members, read_movie_tensor, write_members, write_movie_tensor
from pipeline.vision_config import BinningConfig, MembersConfig
from vision_fixtures import face_table, seat_grid


def _members_file(tmp_path, session, seed, n_frames=40, cols=3, edit=None):
    table, _ = face_table(seat_grid(rows=1, cols=cols), n_frames=n_frames, present=0.8, seed=seed)
    if edit:
        edit(table["face_frontal"])
    arrays = {k: v for k, v in table.items() if k != "face_ok"}
    result = build_members(table, session, "cam0", MembersConfig())
    result.pop("seats_discovered")
    result["face_fit_score"] = fit_scores(table["face_frontal"], result["face_member"])
    arrays.update(result, chunk_start_s=np.array([0.0]), chunk_end_s=np.array([n_frames * 0.5]))
    path = tmp_path / f"{session}.h5"
    write_members(path, arrays, {"movie": "m", "session": session, "camera": "cam0", "duration_s": n_frames * 0.5})
    return read_members(path)


def test_combine_mean_and_median():
    frontal = np.stack([np.full((68, 2), v) for v in (1.0, 2.0, 6.0, 5.0)])
    member, bins = np.array([0, 0, 0, 1]), np.array([0, 0, 0, 1])
    mean, counts = combine_faces(frontal, member, bins, 2, 3, "mean")
    median, _ = combine_faces(frontal, member, bins, 2, 3, "median")
    assert mean[0, 0, 0] == pytest.approx(3.0) and median[0, 0, 0] == pytest.approx(2.0)
    assert counts.tolist() == [[3, 0, 0], [0, 1, 0]]
    assert np.isnan(mean[0, 1]).all() and mean[1, 1, 5] == pytest.approx(5.0)


def test_sessions_share_the_movie_time_axis(tmp_path):
    a, b = _members_file(tmp_path, "s1", 0), _members_file(tmp_path, "s2", 1)
    tensor = bin_movie([a, b], {"s1": 0.0, "s2": 3.0}, "m", BinningConfig(bin_seconds=1.0))
    assert tensor.shape == (6, n_bins(3.0 + 20.0, 1.0), 136) == (6, 23, 136)
    assert list(tensor.session_id) == ["s1"] * 3 + ["s2"] * 3
    # s2 starts 3 s into the movie: nothing of it before bin 3, s1 ends at 20 s
    assert not tensor.mask[3:, :3].any() and tensor.mask[3:, 3:].mean() > 0.8
    assert not tensor.mask[:3, 20:].any()
    assert tensor.extra["recorded"][3:, :3].sum() == 0 and tensor.extra["recorded"][:3, :20].all()
    assert tensor.extra["faces_per_bin"][tensor.mask].min() >= 1
    path = write_movie_tensor(tmp_path / "m.h5", tensor)
    back = read_movie_tensor(path)
    assert back.shape == tensor.shape and back.units.startswith("canonical face frame")
    assert list(back.extra["camera_id"].astype(str)) == ["cam0"] * 6


def test_gross_misfits_are_dropped_and_laughs_kept(tmp_path):
    """A face whose nose and eye corners slipped (a misfit) leaves its bin; a wide-open mouth (a laugh) stays."""
    def edit(frontal):
        frontal[0][RIGID_POINTS] += 0.4                 # misfit: the fit slid off the face
        frontal[1][48:68, 1] += 0.4                     # laugh: mouth and jaw open
        frontal[1][5:12, 1] += 0.3
    members = _members_file(tmp_path, "s1", 0, edit=edit)
    score = members["face_fit_score"]
    assert score[0] > 0.3 and score[1] < 0.02 and np.nanmedian(score) < 0.02
    kept = bin_movie([members], {"s1": 0.0}, "m", BinningConfig(max_fit_score=0))
    cleaned = bin_movie([members], {"s1": 0.0}, "m", BinningConfig())
    assert cleaned.attrs["misfits_dropped"] == 1 and kept.attrs["misfits_dropped"] == 0
    assert cleaned.extra["faces_per_bin"].sum() == kept.extra["faces_per_bin"].sum() - 1
    member, t = members["face_member"][1], int(members["face_time_s"][1])
    np.testing.assert_allclose(cleaned.landmarks[member, t], kept.landmarks[member, t])   # the laugh is in the tensor


def test_bin_length_changes_T(tmp_path):
    a = _members_file(tmp_path, "s1", 0)
    assert bin_movie([a], {"s1": 0.0}, "m", BinningConfig(bin_seconds=2.0)).shape[1] == 10
    assert bin_movie([a], {"s1": 0.0}, "m", BinningConfig(bin_seconds=0.5)).shape[1] == 40


def test_gaps_are_not_recorded():
    covered = recorded_bins(np.arange(8) * 0.5, np.array([1, 1, 0, 0, 1, 1, 1, 1], bool), 0.0, 1.0, 4)
    assert covered.tolist() == [True, False, True, True]


def test_no_members_is_a_clear_error():
    empty = FaceArrays({"member_id": np.zeros(0, object), "face_time_s": np.zeros(0), "face_frontal": np.zeros((0, 68, 2)),
                        "face_member": np.zeros(0, np.int32), "face_fit_score": np.zeros(0, np.float32),
                        "frame_time_s": np.zeros(3), "frame_ok": np.ones(3, bool),
                        "seat_xy_px": np.zeros((0, 2)), "seat_row": np.zeros(0), "seat_col": np.zeros(0)},
                       {"session": "s", "camera": "c", "duration_s": 1.5})
    with pytest.raises(DataError, match="min_observed_fraction"):
        bin_movie([empty], {"s": 0.0}, "m", BinningConfig())
