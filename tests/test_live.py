"""Live mode: a paced replay stands in for the camera; bounded queues, no loss, no reordering."""
import time

import numpy as np
import pytest

from pipeline.live import DetectStep, run_live, run_live_detect
from pipeline.sources import CameraSource, iter_frames, probe_video
from pipeline.store import Workspace, read_detections
from test_detect import FRAME_HW, frontal_cfg, write_face_video


@pytest.fixture(scope="module")
def clip(tmp_path_factory):
    return write_face_video(tmp_path_factory.mktemp("live") / "cam0.avi", 36)   # 3 s at 12 fps


def test_paced_replay_through_detect_and_a_slow_stage(clip, tmp_path):
    cfg = frontal_cfg("sources.sample_every_s=0.25", "sources.chunk_s=1.0", "sources.queue_size=2")
    info = probe_video(clip)
    seen = []

    def slow_stage(item):                       # stands in for landmarks: slower than the source
        time.sleep(0.15)
        seen.append(item.frame.index)
        return item

    source = iter_frames(clip, every_s=0.25, pace=True, speed=4.0, info=info)
    report, written = run_live_detect(source, cfg, Workspace(tmp_path / "data"), "movie", "s1", "cam0",
                                      info.fps, info.width_px, info.height_px, later_steps=[slow_stage])
    assert seen == list(range(0, 36, 3))                     # nothing lost, nothing reordered
    assert report.items_in == report.items_out == 12
    assert max(report.high_water) <= 2                       # the bound held
    assert report.high_water[0] == 2                         # ... and was reached: back-pressure
    assert [p.name for p in written] == ["000000.0.h5", "000001.0.h5", "000002.0.h5"]
    for path in written:
        dets = read_detections(path)
        assert dets.n_frames == 4 and dets.frame_ok.all()
        assert np.bincount(dets.det_frame).tolist() == [2, 2, 2, 2]


def test_live_camera_records_segments_while_detecting(clip, tmp_path):
    cfg = frontal_cfg("sources.sample_every_s=0.5", "sources.chunk_s=60")
    camera = CameraSource(str(clip), tmp_path / "rec", fps=12.0, every_s=0.5, segment_s=1.0, clock="stream")
    frames = []
    report = run_live(camera, [DetectStep(cfg, FRAME_HW[0])], frames.append, queue_size=3)
    assert [d.frame.index for d in frames] == list(range(0, 36, 6))
    assert all(len(d.boxes_px) == 2 for d in frames) and max(report.high_water) <= 3
    segments = sorted(p.name for p in (tmp_path / "rec").glob("*.avi"))
    assert segments == ["000000.0.avi", "000001.0.avi", "000002.0.avi"]
    assert sum(probe_video(tmp_path / "rec" / s).frame_count for s in segments) == 36


def test_a_failing_stage_stops_the_pipeline_with_its_error(clip):
    def broken(item):
        raise ValueError("landmark model exploded")

    with pytest.raises(RuntimeError, match="landmark model exploded"):
        run_live(iter_frames(clip, every_s=0.25), [broken], lambda item: None, queue_size=2)
