"""Viewer identity: seats discovered from where faces sit, faces assigned, short tracks dropped."""
import numpy as np

from pipeline.members import assign_faces, build_members, discover_seats, seat_rows_cols, seats_from_session
from pipeline.vision_config import MembersConfig
from vision_fixtures import face_table, seat_grid


def test_seats_are_discovered_and_faces_assigned_purely():
    seats = seat_grid()
    table, truth = face_table(seats, false_per_frame=0.1)
    out = build_members(table, "s1", "cam0", MembersConfig())
    assert len(out["member_id"]) == len(seats)
    # ≥ 99 % of every member's faces come from one true seat (a false detection may land on a seat)
    for m in range(len(seats)):
        values, counts = np.unique(truth[out["face_member"] == m], return_counts=True)
        assert counts.max() / counts.sum() >= 0.99 and values[counts.argmax()] >= 0
    assert (out["face_member"][truth == -1] == -1).mean() > 0.95
    found = out["seat_xy_px"][np.lexsort((out["seat_col"], out["seat_row"]))]
    np.testing.assert_allclose(found, seats, atol=2.0)
    assert out["member_id"][0].startswith("s1/cam0/seat-r")
    assert sorted(set(zip(out["seat_row"], out["seat_col"]))) == [(r, c) for r in range(3) for c in range(5)]


def test_short_tracks_are_dropped():
    seats = seat_grid(rows=1, cols=3)
    table, truth = face_table(seats, n_frames=100, present=1.0, false_per_frame=0)
    keep = ~((truth == 2) & (table["face_frame"] >= 10))           # seat 2 is seen in 10 % of frames only
    table = {k: (v[keep] if k.startswith("face_") else v) for k, v in table.items()}
    out = build_members(table, "s", "c", MembersConfig(min_observed_fraction=0.2))
    assert len(out["member_id"]) == 2
    assert (out["face_member"][truth[keep] == 2] == -1).all()


def test_two_faces_on_one_seat_keep_the_closest():
    seats = np.array([[100.0, 100.0]])
    centres = np.array([[101.0, 100.0], [104.0, 100.0], [100.0, 103.0]])
    seat = assign_faces(centres, np.full(3, 20.0), np.array([0, 0, 1]), seats, 0.6)
    assert seat.tolist() == [0, -1, 0]


def test_far_faces_are_not_assigned():
    seat = assign_faces(np.array([[150.0, 100.0]]), np.array([20.0]), np.array([0]), np.array([[100.0, 100.0]]), 0.6)
    assert seat.tolist() == [-1]


def test_no_faces_means_no_seats():
    seats, widths = discover_seats(np.zeros((0, 2)), np.zeros(0), 10, MembersConfig())
    assert seats.shape == (0, 2) and widths.shape == (0,)


def test_rows_and_columns():
    seats = np.array([[300.0, 50.0], [100.0, 52.0], [200.0, 150.0], [100.0, 149.0]])
    rows, cols = seat_rows_cols(seats, np.full(4, 30.0), 0.6)
    assert rows.tolist() == [0, 0, 1, 1] and cols.tolist() == [1, 0, 1, 0]


def test_seats_given_in_session_yaml(tmp_path):
    (tmp_path / "session.yaml").write_text("offset_s: 1.0\nseats_px:\n  cam0: [[10, 20], [30, 40]]\n")
    np.testing.assert_array_equal(seats_from_session(tmp_path, "cam0"), [[10, 20], [30, 40]])
    assert seats_from_session(tmp_path / "nowhere", "cam0") is None
