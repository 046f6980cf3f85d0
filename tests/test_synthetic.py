"""The synthetic IR theatre: files that open like real recordings, truth that matches the pixels."""
from __future__ import annotations

import dataclasses
import importlib.util
from pathlib import Path

import cv2
import numpy as np
import pytest
import yaml

from configs.schema import ConfigError, load_config
from pipeline.runner import run_stage
from pipeline.store import Workspace, read_synthetic_truth
from pipeline.synthetic import SyntheticConfig, make_test_screening
from pipeline.synthetic.animation import FACTOR_NAMES, absence_states
from pipeline.synthetic.overlay import write_overlay
from pipeline.synthetic.stage import SYNTHESIZE, simulate

DURATION_S = 2.0


@pytest.fixture(scope="module")
def screening(tmp_path_factory):
    return make_test_screening(tmp_path_factory.mktemp("synth"), duration_s=DURATION_S, sessions=2)


def decode_all(path: Path) -> list[np.ndarray]:
    cap = cv2.VideoCapture(str(path))
    frames = []
    while True:
        ok, frame = cap.read()
        if not ok:
            break
        frames.append(frame[..., 0])
    cap.release()
    return frames


def test_video_opens_with_stated_size_fps_and_frames(screening):
    geo = screening.config.synthetic.geometry
    cap = cv2.VideoCapture(str(screening.videos[0]))
    assert cap.isOpened()
    assert (cap.get(cv2.CAP_PROP_FRAME_WIDTH), cap.get(cv2.CAP_PROP_FRAME_HEIGHT)) == (geo.width_px, geo.height_px)
    assert cap.get(cv2.CAP_PROP_FPS) == pytest.approx(12.0)
    cap.release()
    frames = decode_all(screening.videos[0])
    assert len(frames) == int(DURATION_S * 12)
    assert frames[0].mean() < 60, "the auditorium should be dark"


def test_truth_shapes_and_visibility(screening):
    arrays, attrs = read_synthetic_truth(screening.truths[0])
    n_frames, n_view = arrays["visible"].shape
    k = screening.config.synthetic.k_true
    assert n_frames == int(DURATION_S * 12) and n_view >= 15
    assert arrays["landmarks_image"].shape == (n_frames, n_view, 68, 2)
    assert arrays["landmarks_frontal"].shape == (n_frames, n_view, 68, 2)
    assert arrays["face_box"].shape == (n_frames, n_view, 4)
    assert arrays["pose_deg"].shape == (n_frames, n_view, 3)
    assert arrays["U"].shape == (n_view, k) and (arrays["U"] >= 0).all()
    assert arrays["V_movie"].shape[1] == k and (arrays["V_movie"] >= 0).all()
    assert arrays["group"].shape == (n_view,)
    visible = arrays["visible"]
    assert np.isfinite(arrays["landmarks_image"][visible]).all()
    assert np.isnan(arrays["landmarks_image"][~visible]).all()
    assert (visible == (arrays["absence"] == 0)).all()
    box, lm = arrays["face_box"][visible], arrays["landmarks_image"][visible]
    assert (lm[..., 0] >= box[:, None, 0] - 1e-3).all() and (lm[..., 1] <= box[:, None, 3] + 1e-3).all()
    assert attrs["factor_names"] == ",".join(FACTOR_NAMES[:k])
    np.testing.assert_allclose(arrays["movie_time_s"] - arrays["time_s"], attrs["offset_s"])


def test_face_sizes_follow_perspective(screening):
    arrays, _ = read_synthetic_truth(screening.truths[0], ("face_box", "seat_row"))
    box = arrays["face_box"]
    seen = np.isfinite(box[..., 0]).any(axis=0)
    height = np.nanmedian(box[:, seen, 3] - box[:, seen, 1], axis=0)
    rows = arrays["seat_row"][seen]
    geo = screening.config.synthetic.geometry
    front, back = np.nanmedian(height[rows == 0]), np.nanmedian(height[rows == rows.max()])
    assert front == pytest.approx(geo.face_front_px[1], rel=0.2)
    assert back == pytest.approx(geo.face_back_px[1], rel=0.25)


def test_session_yaml_and_sessions_differ(screening):
    docs = [yaml.safe_load(p.read_text()) for p in screening.session_files]
    assert len(docs) == 2
    for doc in docs:
        assert doc["fps"] == 12.0 and doc["cameras"] == ["cam0"]
        assert 0 <= doc["offset_s"] <= screening.config.synthetic.max_offset_s
        top, bottom = doc["back_rows_band_px"]
        assert 0 < top < bottom <= doc["front_rows_band_px"][1]
    a, _ = read_synthetic_truth(screening.truths[0], ("U", "source_face", "V_movie"))
    b, _ = read_synthetic_truth(screening.truths[1], ("U", "source_face", "V_movie"))
    np.testing.assert_array_equal(a["V_movie"], b["V_movie"])           # same movie
    assert list(a["source_face"]) != list(b["source_face"])             # different audience


def test_absence_rate_over_long_run():
    cfg = SyntheticConfig()
    rng = np.random.default_rng(1)
    states = np.stack([absence_states(rng, 7200, 12.0, cfg.absence_fraction, cfg.absence_shares)
                       for _ in range(300)])
    assert (states != 0).mean() == pytest.approx(cfg.absence_fraction, abs=0.02)
    assert set(np.unique(states)) == {0, 1, 2, 3}


def test_expressions_follow_the_factor_model():
    cfg = dataclasses.replace(SyntheticConfig(), scale="small", duration_s=20.0, blink_rate_hz=0.0)
    sim = simulate(cfg, "s01", "cam0")
    still = simulate(dataclasses.replace(cfg, expression_gain=0.0), "s01", "cam0")
    ok = np.isfinite(sim.anim.frontal[..., 0, 0])
    np.testing.assert_allclose(still.anim.frontal[ok], np.broadcast_to(sim.audience.neutral, ok.shape + (68, 2))[ok])
    # the mouth widens with the smile intensity U_i V_t (factor 0)
    width = np.linalg.norm(sim.anim.frontal[..., 54, :] - sim.anim.frontal[..., 48, :], axis=-1)
    width = width - np.linalg.norm(sim.audience.neutral[:, 54] - sim.audience.neutral[:, 48], axis=-1)
    smile = np.tanh(1.2 * sim.anim.expression[..., 0])
    assert np.corrcoef(width[ok], smile[ok])[0, 1] > 0.5


def test_deterministic_and_independent_of_other_units(screening, tmp_path):
    cfg = screening.config.replace(workspace=dataclasses.replace(screening.config.workspace, root=str(tmp_path)))
    report = run_stage(SYNTHESIZE, cfg, Workspace(tmp_path), progress=False, select=lambda u: u.key[1] == "s02")
    assert report.done == ["synthmovie/s02/cam0"]
    mine = tmp_path / "raw" / "synthmovie" / "s02" / "cam0.truth.h5"
    a, _ = read_synthetic_truth(mine)
    b, _ = read_synthetic_truth(screening.truths[1])
    for name in a:
        np.testing.assert_array_equal(a[name], b[name], err_msg=name)
    frames_a, frames_b = decode_all(mine.with_name("cam0.mp4")), decode_all(screening.videos[1])
    assert all((fa == fb).all() for fa, fb in zip(frames_a, frames_b))


def test_rerun_is_cached(screening):
    report = run_stage(SYNTHESIZE, screening.config, screening.workspace, progress=False)
    assert not report.done and len(report.skipped) == 2


def _dlib_predictor():
    import dlib

    spec = importlib.util.find_spec("face_recognition_models")
    if spec is None:
        pytest.skip("face_recognition_models not installed")
    return dlib.shape_predictor(str(Path(spec.origin).parent / "models" / "shape_predictor_68_face_landmarks.dat"))


def test_rendered_faces_are_real_enough_for_dlib(screening):
    """HOG finds front-row faces; the 68-point fitter on GT boxes lands near the GT landmarks."""
    import dlib

    arrays, _ = read_synthetic_truth(screening.truths[0], ("face_box", "landmarks_image", "seat_row", "visible"))
    frames = decode_all(screening.videos[0])
    f = 6
    frame, boxes, lms = frames[f], arrays["face_box"][f], arrays["landmarks_image"][f]
    front = np.flatnonzero(arrays["visible"][f] & (arrays["seat_row"] <= 1))
    assert front.size >= 3
    detector = dlib.get_frontal_face_detector()
    found = 0
    for v in front:
        l, t, r, b = boxes[v]
        pad = b - t
        y0, x0 = int(max(t - pad, 0)), int(max(l - pad, 0))
        crop = frame[y0:int(b + pad), x0:int(r + pad)]
        rects = detector(np.ascontiguousarray(crop), 2)
        centre = np.array([(l + r) / 2 - x0, (t + b) / 2 - y0])
        found += any(rc.left() <= centre[0] <= rc.right() and rc.top() <= centre[1] <= rc.bottom() for rc in rects)
    assert found >= 0.6 * front.size, f"dlib found {found} of {front.size} front-row faces"
    predictor = _dlib_predictor()
    errors = []
    for v in front:
        l, t, r, b = boxes[v]
        side = r - l
        rect = dlib.rectangle(int(l), int(b - 1.05 * side), int(r), int(b))   # dlib-like square box
        pts = np.array([(p.x, p.y) for p in predictor(frame, rect).parts()], dtype=float)
        errors.append(np.linalg.norm(pts - lms[v], axis=1).mean() / side)
    assert np.median(errors) < 0.12, f"fitted landmarks are {np.median(errors):.2f} face widths off"


def test_overlay_png(screening, tmp_path):
    out = write_overlay(screening.videos[0], screening.truths[0], tmp_path / "overlay.png", time_s=1.0)
    img = cv2.imread(str(out))
    geo = screening.config.synthetic.geometry
    assert img is not None and img.shape[1] >= geo.width_px and img.shape[0] > geo.height_px
    assert (img[..., 1] > 200).any() and (img[..., 2] > 200).any()     # green boxes, red landmarks


def test_config_matches_yaml_and_rejects_bad_values():
    assert load_config().synthetic == SyntheticConfig()
    with pytest.raises(ConfigError, match="small"):
        load_config(overrides=["synthetic.smal.rows=2"])
    with pytest.raises(ValueError, match="sessions"):
        SyntheticConfig(sessions=0)
    with pytest.raises(ConfigError, match="scale"):
        load_config(overrides=["synthetic.scale=huge"])


def test_rendered_points_match_the_truth():
    """The renderer puts the texture exactly where the truth says the landmarks are."""
    from pipeline.synthetic.render import frame_points

    cfg = dataclasses.replace(SyntheticConfig(), scale="small", duration_s=1.0)
    anim = simulate(cfg, "s01", "cam0").anim
    for f in (0, 7):
        points, _ = frame_points(anim, f)
        visible = anim.state[f] == 0
        np.testing.assert_allclose(points[visible, :68], anim.image[f, visible], atol=1e-3)
