"""Face detection: bands, strips, merging, the detect stage, the detections schema, bad input."""
import functools
from pathlib import Path

import cv2
import numpy as np
import pytest

from configs.schema import load_config
from pipeline.detect import (BAND_BACK, BAND_FRONT, DETECT, SURVEY, FaceFinder, load_detector, make_finder,
                             merge_detections, plan_detect, read_geometry, survey_geometry)
from pipeline.geometry import Band, Row, band_strips, geometry_from_session, perspective_outliers, rows_from_boxes
from pipeline.runner import run_stage
from pipeline.sources import expected_frame_times, probe_video
from pipeline.store import DataError, Detections, Workspace, read_detections, write_detections

FRAME_HW = (400, 480)
FACE_PX = 120                                   # pasted crop; dlib's frontal box is ~75 px of it
FACE_TOPLEFTS = ((20, 40), (260, 300))          # (y, x): one back-row face, one front-row face

# a frame where dlib's stock frontal detector (80 px window) sees both faces
FRONTAL_OVERRIDES = ["detect.front_detector=dlib_frontal", "detect.back_detector=dlib_frontal",
                     "detect.target_face_px=88", "detect.survey_face_px=[40,160]"]
# row bands as a person would write them in session.yaml (image px of the face boxes)
BANDS_META = {"back_rows_band_px": [30, 130], "back_face_px": [72, 80],
              "front_rows_band_px": [272, 370], "front_face_px": [72, 80]}


def banded_finder(cfg, meta=BANDS_META) -> FaceFinder:
    return FaceFinder(cfg, geometry_from_session(cfg, FRAME_HW[0], FRAME_HW[1], meta))


@functools.lru_cache(maxsize=1)
def face_crop() -> np.ndarray:
    import skimage.data
    gray = cv2.cvtColor(skimage.data.astronaut(), cv2.COLOR_RGB2GRAY)
    return cv2.resize(gray[40:240, 120:320], (FACE_PX, FACE_PX), interpolation=cv2.INTER_AREA)


def face_frame(faces=True) -> np.ndarray:
    frame = np.full(FRAME_HW, 90, np.uint8)
    if faces:
        for y, x in FACE_TOPLEFTS:
            frame[y:y + FACE_PX, x:x + FACE_PX] = face_crop()
    return frame


def write_face_video(path: Path, n_frames: int, fps: float = 12.0, faces: bool = True) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    writer = cv2.VideoWriter(str(path), cv2.VideoWriter_fourcc(*"MJPG"), fps, FRAME_HW[::-1], False)
    frame = face_frame(faces)
    for _ in range(n_frames):
        writer.write(frame)
    writer.release()
    return path


def run_detect(cfg, ws):
    """The survey (rows from the footage), then detection; the detect report."""
    assert not run_stage(SURVEY, cfg, ws, progress=False).failed
    return run_stage(DETECT, cfg, ws, progress=False)


def frontal_cfg(*extra):
    return load_config(overrides=FRONTAL_OVERRIDES + list(extra))


def test_detections_roundtrip_and_validation(tmp_path):
    dets = Detections(frame_index=np.array([0, 6, 12]), frame_time_s=np.array([0.0, 0.5, 1.0]),
                      frame_ok=np.array([True, False, True]), det_frame=np.array([0, 2, 2]),
                      det_box_px=np.arange(12, dtype=np.float32).reshape(3, 4),
                      det_score=np.array([1.0, 0.5, 0.25]), det_band=np.array([0, 1, 0]),
                      attrs={"movie": "m", "fps": 12.0})
    back = read_detections(write_detections(tmp_path / "c.h5", dets))
    for name in ("frame_index", "frame_time_s", "frame_ok", "det_frame", "det_box_px", "det_score", "det_band"):
        np.testing.assert_array_equal(getattr(back, name), getattr(dets, name))
    assert back.det_box_px.dtype == np.float32 and back.det_band.dtype == np.int8
    assert back.attrs["movie"] == "m" and len(back.boxes_of(2)) == 2
    dets.det_frame = np.array([0, 2, 3])
    with pytest.raises(DataError, match="det_frame"):
        write_detections(tmp_path / "bad.h5", dets)
    with pytest.raises(DataError, match="Run the 'detect' stage"):
        read_detections(tmp_path / "missing.h5")


def test_finder_finds_both_faces_in_their_bands():
    cfg = frontal_cfg()
    finder = banded_finder(cfg)
    boxes, scores, band = finder(face_frame())
    assert len(boxes) == 2
    assert list(band) == [BAND_BACK, BAND_FRONT]              # sorted top to bottom
    for (y, x), box in zip(FACE_TOPLEFTS, boxes):
        cx, cy = 0.5 * (box[0] + box[2]), 0.5 * (box[1] + box[3])
        assert abs(cx - (x + FACE_PX * 0.5)) < 20 and abs(cy - (y + FACE_PX * 0.5)) < 25
    assert (scores > 0).all()
    assert len(finder(face_frame(faces=False))[0]) == 0


def test_face_in_both_bands_is_reported_once():
    cfg = frontal_cfg()
    both = {"back_rows_band_px": [30, 370], "back_face_px": [72, 80],
            "front_rows_band_px": [30, 370], "front_face_px": [72, 80]}
    boxes, _, _ = banded_finder(cfg, both)(face_frame())
    assert len(boxes) == 2


def test_survey_finds_rows_over_the_whole_height_without_any_band():
    """No seat map, no bands: the first frame is surveyed at every face size over the full height."""
    cfg = frontal_cfg()
    finder = make_finder(cfg, FRAME_HW[0], {}, FRAME_HW[1])
    boxes, _, band = finder(face_frame(), 0.0)
    assert len(boxes) == 2 and finder.geometry.source == "survey"
    assert [round(r.y_px / 100) for r in finder.geometry.rows] == [1, 3]       # both rows, top to bottom
    assert (band == BAND_FRONT).all()                                         # 75 px faces: front detector
    geometry = survey_geometry([face_frame(), face_frame()], FaceFinder(cfg))
    assert len(geometry.rows) == 2 and not geometry.notes
    empty = survey_geometry([face_frame(faces=False)], FaceFinder(cfg))
    assert not empty.rows and "found no faces" in empty.notes[0]


def test_small_faces_go_to_the_back_detector_and_odd_rows_are_dropped():
    cfg = load_config()
    boxes = np.array([[0, 100, 20, 120], [50, 102, 70, 122], [0, 300, 40, 340], [0, 500, 60, 560]], np.float32)
    rows = rows_from_boxes(boxes, cfg)
    assert [r.strip.band_id for r in rows] == [BAND_BACK, BAND_FRONT, BAND_FRONT]
    more = rows_from_boxes(np.array([[0, 200, 30, 230], [0, 400, 50, 450], [0, 620, 70, 690]], np.float32), cfg)
    odd = Row(rows[0].strip, face_px=6.0, y_px=420.0, faces=3)    # tiny "faces" between big ones
    assert perspective_outliers(rows + more + [odd]) == [odd]


def test_seat_map_outside_the_frame_is_a_clear_error():
    cfg = frontal_cfg()
    meta = {"rows": [{"y_px": 900.0, "face_w_px": 40.0, "face_h_px": 50.0, "seats_x_px": [100.0]}]}
    with pytest.raises(DataError, match="does not match the 480×400 px frame"):
        geometry_from_session(cfg, FRAME_HW[0], FRAME_HW[1], meta)


def test_merge_keeps_best_of_overlapping_boxes():
    boxes = np.array([[0, 0, 10, 10], [1, 1, 11, 11], [50, 50, 60, 60], [2, 2, 8, 8]], np.float32)
    keep = merge_detections(boxes, np.array([0.5, 0.9, 0.1, 0.3], np.float32), iou=0.3)
    assert sorted(keep.tolist()) == [1, 2]


def test_strips_cover_band_with_whole_faces():
    band = Band(0, 100, 600, face_top_px=20.0, face_bottom_px=40.0)
    strips = band_strips(band, target_face_px=44.0, strip_faces=2.3, step_faces=1.15)
    assert strips[0].top_px == 100 and strips[-1].bottom_px == 600
    for a, b in zip(strips[:-1], strips[1:]):
        overlap = a.bottom_px - b.top_px
        assert overlap >= band.face_px_at(b.top_px)             # a face never straddles two strips
    assert strips[0].scale == pytest.approx(44 / 20) and strips[-1].scale < strips[0].scale


def test_rows_found_from_boxes_make_cheaper_strips():
    cfg = load_config()
    boxes = np.array([[0, 100, 20, 120], [50, 102, 70, 122], [0, 300, 40, 340]], np.float32)
    rows = rows_from_boxes(boxes, cfg, np.array([1, 1, 0]))
    assert len(rows) == 2
    back = [r.strip for r in rows if r.strip.band_id == 1][0]
    assert back.top_px < 100 and back.bottom_px > 122 and back.bottom_px - back.top_px < 60


def test_row_tracking_gives_same_faces_as_full_scans():
    cfg = frontal_cfg()
    finder = banded_finder(cfg)
    first = finder(face_frame(), 0.0)
    tracked = finder(face_frame(), 0.5)
    assert finder.full_scans == 1 and len(finder.rows) == 2
    np.testing.assert_allclose(tracked[0], first[0], atol=12)
    finder(face_frame(), 10.0)
    assert finder.full_scans == 2                               # rescan_s elapsed


@pytest.mark.parametrize("name", ["missing.svm", "not_a_detector.svm"])
def test_bad_detector_file_is_a_clear_error(tmp_path, name):
    if name == "not_a_detector.svm":
        (tmp_path / name).write_bytes(b"\x00garbage" * 50)
    with pytest.raises(DataError, match=name):
        load_detector(str(tmp_path / name))


def _workspace(tmp_path, n_frames=20, faces=True) -> tuple[Workspace, Path]:
    ws = Workspace(tmp_path / "data")
    video = write_face_video(ws.raw / "movie" / "s1" / "cam0.avi", n_frames, faces=faces)
    (video.parent / "cam0.truth.h5").write_bytes(b"not a video")
    (video.parent / "session.yaml").write_text("offset_s: 1.5\n")
    return ws, video


def test_detect_stage_writes_one_row_per_sampling_instant(tmp_path):
    ws, video = _workspace(tmp_path, n_frames=20)               # 1.67 s
    cfg = frontal_cfg("sources.chunk_s=1.0", "sources.sample_every_s=0.25")
    units = plan_detect(cfg, ws)
    assert [u.key for u in units] == [("movie", "s1", "cam0", "000000.0"), ("movie", "s1", "cam0", "000001.0")]
    assert units[1].get("start_s") == 1.0 and units[1].inputs[0] == video
    assert units[1].inputs[1].name == "geometry.yaml"
    report = run_detect(cfg, ws)
    assert not report.failed and len(report.done) == 2
    dets = read_detections(units[0].output("detections"))
    np.testing.assert_array_equal(dets.frame_index, [0, 3, 6, 9])
    np.testing.assert_allclose(dets.frame_time_s, [0, 0.25, 0.5, 0.75])
    assert dets.frame_ok.all() and np.bincount(dets.det_frame).tolist() == [2, 2, 2, 2]
    assert dets.attrs["movie"] == "movie" and dets.attrs["chunk_end_s"] == 1.0
    assert dets.attrs["detector_front"] == "dlib_frontal" and dets.attrs["width_px"] == FRAME_HW[1]
    last = read_detections(units[1].output("detections"))
    np.testing.assert_array_equal(last.frame_index, [12, 15, 18])
    assert run_detect(cfg, ws).skipped == [u.name for u in units]
    geometry = read_geometry(units[0].inputs[1])
    assert geometry.source == "survey" and len(geometry.rows) == 2     # both rows found in the footage


def test_video_without_faces_gives_frames_without_detections(tmp_path):
    ws, _ = _workspace(tmp_path, n_frames=12, faces=False)
    cfg = frontal_cfg("sources.sample_every_s=0.25")
    assert not run_detect(cfg, ws).failed
    dets = read_detections(plan_detect(cfg, ws)[0].output("detections"))
    assert dets.n_frames == 4 and dets.frame_ok.all() and len(dets.det_frame) == 0


def test_truncated_video_records_gaps_not_a_shorter_chunk(tmp_path):
    ws, video = _workspace(tmp_path, n_frames=24)
    data = video.read_bytes()
    video.write_bytes(data[:int(len(data) * 0.55)])
    cfg = frontal_cfg("sources.sample_every_s=0.25")
    info = probe_video(video)
    expected, _ = expected_frame_times(info, 0.0, None, 0.25)
    assert not run_detect(cfg, ws).failed
    dets = read_detections(plan_detect(cfg, ws)[0].output("detections"))
    np.testing.assert_array_equal(dets.frame_index, expected)   # same rows as a complete file
    assert 0 < dets.frame_ok.sum() < len(expected)
    assert dets.frame_ok[0] and not dets.frame_ok[-1]


def test_corrupt_video_fails_its_units_and_keeps_the_others(tmp_path):
    ws, _ = _workspace(tmp_path, n_frames=12)
    cfg = frontal_cfg("sources.sample_every_s=0.25")
    assert not run_detect(cfg, ws).failed
    bad = ws.raw / "movie" / "s2" / "cam0.mp4"
    bad.parent.mkdir(parents=True)
    bad.write_bytes(b"\x00\x00\x00\x18ftypmp42" + b"\x00" * 500)
    # planning does not abort on it (issue 11): its survey unit fails naming the file, its chunk is blocked
    assert {u.key[1] for u in plan_detect(cfg, ws)} == {"s1", "s2"}
    from pipeline.stages import get_stage

    problems = {}
    survey = run_stage(get_stage("survey"), cfg, ws, progress=False, problems=problems)
    assert list(survey.failed) == ["movie/s2/cam0"] and "s2/cam0.mp4" in survey.failed["movie/s2/cam0"]
    detect = run_stage(get_stage("detect"), cfg, ws, progress=False, problems=problems)
    assert list(detect.blocked) == ["movie/s2/cam0/000000.0"] and not detect.failed
    assert read_detections(ws.stage_output("detect", "movie", "s1", "cam0", "000000.0")).frame_ok.all()


def test_worker_processes_use_one_thread_each(tmp_path):
    """In a runner worker (a spawned child), OpenCV is limited to one thread and videos open with one
    decoding thread; the main process keeps the library defaults."""
    import concurrent.futures as cf
    import multiprocessing as mp

    from pipeline.sources import _open_capture, in_worker_process, limit_worker_threads

    before = cv2.getNumThreads()
    limit_worker_threads()
    assert not in_worker_process() and cv2.getNumThreads() == before
    _, video = _workspace(tmp_path, n_frames=4)
    assert _open_capture(video).isOpened()
    with cf.ProcessPoolExecutor(1, mp_context=mp.get_context("spawn")) as pool:
        assert pool.submit(in_worker_process).result()
        pool.submit(limit_worker_threads).result()
        assert pool.submit(cv2.getNumThreads).result() == 1
        cap = pool.submit(_capture_threads, str(video)).result()
    assert cap == (True, 1.0)


def _capture_threads(path: str):
    from pipeline.sources import _open_capture

    cap = _open_capture(Path(path))
    return cap.isOpened(), cap.get(cv2.CAP_PROP_N_THREADS)


def test_bench_scores_only_the_chunks_the_plan_names(tmp_path):
    """A detections file left in the cache by an earlier run (other chunk_s, other screening) is not
    scored against this screening's truth: that stale chunk is what made precision look like 0.96."""
    import sys

    sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "bench"))
    from bench_detect import _fp_kind, planned_chunks

    ws, video = _workspace(tmp_path, n_frames=24)
    cfg = frontal_cfg("sources.chunk_s=1.0")
    assert not run_detect(cfg, ws).failed
    stale = ws.stage_output("detect", "movie", "s1", "cam0", "000000.5")
    stale.write_bytes(ws.stage_output("detect", "movie", "s1", "cam0", "000001.0").read_bytes())
    chunks = planned_chunks(cfg, ws, video)
    assert [c.name for c in chunks] == ["000000.0.h5", "000001.0.h5"] and stale not in chunks
    visible, hit = np.array([True, True, False]), np.array([True, False, False])
    assert _fp_kind(np.array([0.4, 0.0, 0.0]), visible, hit) == "duplicate"
    assert _fp_kind(np.array([0.0, 0.45, 0.0]), visible, hit) == "mislocalised"
    assert _fp_kind(np.array([0.1, 0.0, 0.9]), visible, hit) == "background"


def test_second_looks_pull_a_misplaced_box_back_onto_the_face():
    """detect.refine_boxes: a box shifted and scaled by a tenth of the face (HOG's cell grid) comes back."""
    from pipeline.detect import HogDetector

    cfg = frontal_cfg("detect.refine_boxes=false")
    boxes, _, band = banded_finder(cfg)(face_frame())
    detector = HogDetector("dlib_frontal")
    for box in boxes:
        side = box[2] - box[0]
        off = box + np.array([0.12, -0.1, 0.12, -0.1], np.float32) * side
        again = detector.refine(face_frame(), off)
        centre = lambda b: np.array([b[0] + b[2], b[1] + b[3]]) / 2  # noqa: E731
        assert np.linalg.norm(centre(again) - centre(box)) < 0.6 * np.linalg.norm(centre(off) - centre(box))
        assert abs((again[2] - again[0]) / side - 1) < 0.15
    assert np.array_equal(detector.refine(face_frame(faces=False), boxes[0]), boxes[0])   # nothing there: unchanged
    refined, _, _ = banded_finder(frontal_cfg())(face_frame())
    assert refined.shape == boxes.shape and np.abs(refined - boxes).max() < 0.2 * (boxes[0, 2] - boxes[0, 0])


def test_an_empty_theatre_is_not_scanned_whole_every_frame():
    """No rows known (the survey found none): full scans come every detect.rescan_s, not every frame."""
    cfg = frontal_cfg()
    finder = make_finder(cfg, FRAME_HW[0], {}, FRAME_HW[1])
    for k in range(8):
        boxes, _, _ = finder(face_frame(faces=False), 0.5 * k)
        assert len(boxes) == 0
    assert finder.full_scans == 1 and not finder.rows
    boxes, _, _ = finder(face_frame(), cfg.detect.rescan_s)         # people arrive: the next full scan finds them
    assert len(boxes) == 2 and finder.full_scans == 2 and len(finder.rows) == 2
