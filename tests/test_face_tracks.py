"""Seated faces linked into tracks, and landmark fits started from the track's median box."""
import numpy as np
import pytest

from pipeline.face_tracks import TrackLinker, median_start
from pipeline.frontalize import normalized_error
from pipeline.landmarks import ChunkFitter, fit_faces, load_landmarker
from pipeline.vision_config import LandmarksConfig


def _box(cx, cy, w):
    return [cx - w / 2, cy - w / 2, cx + w / 2, cy + w / 2]


def test_linker_follows_seated_faces_through_gaps_and_starts_new_tracks():
    rng = np.random.default_rng(0)
    linker = TrackLinker(max_gap=3)
    seats = [(100, 100, 40), (150, 100, 40), (400, 300, 20)]
    ids = []
    for slot in range(8):
        present = [s for i, s in enumerate(seats) if not (i == 1 and slot in (3, 4))]   # seat 1 leaves 2 frames
        boxes = np.array([_box(cx + rng.normal(0, 2), cy + rng.normal(0, 2), w) for cx, cy, w in present])
        got = linker.link(slot, boxes[::-1])[::-1]                                     # order does not matter
        ids.append(dict(zip([seats.index(s) for s in present], got.tolist())))
    for seat in range(3):
        assert len({frame[seat] for frame in ids if seat in frame}) == 1          # one track per seat
    assert len({ids[0][s] for s in range(3)}) == 3
    new = linker.link(8, np.array([_box(700, 500, 30), _box(100, 101, 40)]))
    assert new[1] == ids[0][0] and new[0] not in ids[0].values()
    assert linker.link(20, np.array([_box(100, 100, 40)]))[0] != ids[0][0]        # gap > max_gap: a new track


def test_median_start_ignores_one_bad_box_and_stays_inside_the_window():
    history = [(s, np.array(_box(100, 100, 40)), 0.1) for s in range(6)] + [(3, np.array(_box(130, 90, 60)), 0.9)]
    box, roll = median_start(history, 3, 2)
    np.testing.assert_allclose(box, _box(100, 100, 40))
    assert roll == pytest.approx(0.1)
    history += [(s, np.array(_box(300, 300, 40)), -0.2) for s in range(20, 23)]
    box, roll = median_start(history, 21, 2)
    np.testing.assert_allclose(box, _box(300, 300, 40))
    assert roll == pytest.approx(-0.2)
    with pytest.raises(ValueError, match="no box"):
        median_start(history, 12, 2)


def _astronaut():
    import skimage.data

    return (skimage.data.astronaut().mean(axis=2)).astype(np.uint8)


def test_fitter_without_a_window_fits_each_frame_like_fit_faces():
    gray = _astronaut()
    cfg = LandmarksConfig(track_window_s=0.0)
    model = load_landmarker(cfg)
    boxes = np.array([[170, 60, 300, 190], [150, 50, 310, 210]], np.float32)
    fitter = ChunkFitter(model, cfg, np.array([[1.0, 0, 0], [1.0, 0, 0]]), every_s=0.5)
    for slot in range(3):
        fitter.add(slot, gray, boxes + slot, np.zeros(2, np.int8))
    results = fitter.finish()
    assert sorted(results) == [0, 1, 2]
    for slot in range(3):
        alone = fit_faces(model, gray, boxes + slot, cfg)
        np.testing.assert_allclose(results[slot]["landmarks_px"], alone["landmarks_px"])


def test_a_frame_with_a_bad_box_is_fitted_from_its_track_on_a_real_face():
    """A real face (skimage's astronaut) at about front-row size over 9 sampled frames with sensor noise;
    one frame's detector box is a third of a face off. Fitted from its own box that frame slips; from its
    track's median box it lands near the fit from a well-placed box."""
    import cv2

    rng = np.random.default_rng(1)
    small = cv2.resize(_astronaut(), None, fx=0.25, fy=0.25, interpolation=cv2.INTER_AREA)   # face ~35 px
    cfg = LandmarksConfig(track_window_s=2.0)
    model = load_landmarker(cfg)
    good = np.array([[42, 15, 76, 49]], np.float32)
    reference = fit_faces(model, small, good, cfg)["landmarks_px"]
    mapping = np.array([[1.0, 0, 0], [1.0, 0, 0]])
    tracked, own = ChunkFitter(model, cfg, mapping, every_s=0.5), {}
    for slot in range(9):
        frame = np.clip(small + rng.normal(0, 4, small.shape), 0, 255).astype(np.uint8)
        box = good + rng.normal(0, 1.0, 4).astype(np.float32)
        if slot == 4:
            box = good + np.array([11, 9, 11, 9], np.float32)
        tracked.add(slot, frame, box, np.zeros(1, np.int8))
        own[slot] = fit_faces(model, frame, box, LandmarksConfig(track_window_s=0.0))["landmarks_px"]
    fits = tracked.finish()
    err_tracked = {s: normalized_error(fits[s]["landmarks_px"], reference)[0] for s in fits}
    err_own = {s: normalized_error(own[s], reference)[0] for s in own}
    assert err_own[4] > 0.15                               # the bad box slips on its own
    assert err_tracked[4] < 0.5 * err_own[4]
    assert np.mean(list(err_tracked.values())) < np.mean(list(err_own.values()))
