"""Video sources: timestamps not read() counts, sampling, gaps, truncation, chunks, live segments."""
from pathlib import Path

import cv2
import numpy as np
import pytest

from pipeline.sources import (CameraSource, SegmentWriter, chunk_name, chunk_windows, expected_frame_times,
                              frames_from_capture, iter_frames, join_segments, probe_video, slot_of)
from pipeline.store import DataError

FPS = 12.0
SIZE_HW = (96, 128)
BITS = 10


def coded_frame(index: int, size_hw=SIZE_HW) -> np.ndarray:
    """A gray frame whose top row of 12×12 blocks spells `index` in binary."""
    image = np.full(size_hw, 60, np.uint8)
    for bit in range(BITS):
        if index >> bit & 1:
            image[0:12, bit * 12:(bit + 1) * 12] = 230
    return image


def read_code(image: np.ndarray) -> int:
    return sum(1 << bit for bit in range(BITS) if image[3:9, bit * 12 + 3:bit * 12 + 9].mean() > 145)


def write_coded_video(path: Path, n_frames: int, fps: float = FPS, fourcc: str = "MJPG",
                      size_hw=SIZE_HW) -> Path:
    writer = cv2.VideoWriter(str(path), cv2.VideoWriter_fourcc(*fourcc), fps, (size_hw[1], size_hw[0]), False)
    for i in range(n_frames):
        writer.write(coded_frame(i, size_hw))
    writer.release()
    return path


@pytest.fixture(scope="module")
def video(tmp_path_factory) -> Path:
    return write_coded_video(tmp_path_factory.mktemp("v") / "cam0.avi", 60)   # 5 s


def test_probe(video):
    info = probe_video(video)
    assert (info.fps, info.width_px, info.height_px, info.frame_count) == (FPS, 128, 96, 60)
    assert info.duration_s == pytest.approx(5.0)


@pytest.mark.parametrize("make", ["missing", "garbage", "empty"])
def test_probe_bad_file_names_file_and_fix(tmp_path, make):
    path = tmp_path / "bad.mp4"
    if make == "garbage":
        path.write_bytes(b"not a video" * 100)
    elif make == "empty":
        path.write_bytes(b"")
    with pytest.raises(DataError, match="bad.mp4") as err:
        probe_video(path)
    assert any(word in str(err.value) for word in ("Re-mux", "Fix the path", "Re-encode"))


def test_all_frames_in_order_with_true_times(video):
    frames = list(iter_frames(video))
    assert [f.index for f in frames] == list(range(60))
    assert [read_code(f.image) for f in frames] == list(range(60))
    np.testing.assert_allclose([f.time_s for f in frames], np.arange(60) / FPS)
    assert all(f.image.dtype == np.uint8 and f.image.shape == SIZE_HW for f in frames)


def test_sampling_keeps_first_frame_at_or_after_each_multiple(video):
    frames = list(iter_frames(video, every_s=0.5))
    assert [f.index for f in frames] == list(range(0, 60, 6))
    frames = list(iter_frames(video, every_s=0.25, start_s=1.0, end_s=2.0))
    assert [f.index for f in frames] == [12, 15, 18, 21]
    # 1/3 s is not a whole number of frames: first frame at or after k/3 s
    frames = list(iter_frames(video, every_s=1 / 3, end_s=1.01))
    assert [f.index for f in frames] == [0, 4, 8, 12]


def test_seek_gives_same_frames_as_sequential(video):
    sequential = [f for f in iter_frames(video, every_s=0.5) if 3.0 <= f.time_s < 4.5]
    seeked = list(iter_frames(video, start_s=3.0, end_s=4.5, every_s=0.5))
    assert [f.index for f in seeked] == [f.index for f in sequential] == [36, 42, 48]
    assert [read_code(f.image) for f in seeked] == [36, 42, 48]


def test_expected_frame_times_and_slots(video):
    info = probe_video(video)
    index, time_s = expected_frame_times(info, 1.0, 3.0, 0.5)
    np.testing.assert_array_equal(index, [12, 18, 24, 30])
    np.testing.assert_allclose(time_s, [1.0, 1.5, 2.0, 2.5])
    assert [slot_of(t, 1.0, 0.5, FPS) for t in time_s] == [0, 1, 2, 3]
    # a chunk past the end of the file expects nothing
    assert len(expected_frame_times(info, 10.0, 20.0, 0.5)[0]) == 0


def test_chunks():
    assert chunk_windows(150.0, 60.0) == [(0.0, 60.0), (60.0, 120.0), (120.0, 150.0)]
    assert chunk_windows(120.0, 60.0) == [(0.0, 60.0), (60.0, 120.0)]
    assert chunk_name(60.0) == "000060.0" and chunk_name(0) < chunk_name(7199.5)
    with pytest.raises(DataError):
        chunk_windows(10.0, 0.0)


def test_truncated_file_ends_early_and_expected_times_show_the_gap(tmp_path, video):
    data = video.read_bytes()
    truncated = tmp_path / "trunc.avi"
    truncated.write_bytes(data[:len(data) // 2])
    info = probe_video(truncated)
    frames = list(iter_frames(truncated, every_s=0.5))
    expected, _ = expected_frame_times(info, 0.0, None, 0.5)
    assert 0 < len(frames) < len(expected)
    assert [read_code(f.image) for f in frames if f.ok] == [f.index for f in frames if f.ok]


class FakeCapture:
    """Stands in for cv2.VideoCapture: timestamps, a dropped frame, a failed read, a wrong-size frame."""

    def __init__(self, n: int, drop=(), fail=(), wrong_size=(), no_timestamps=False):
        self.n, self.drop, self.fail, self.wrong = n, set(drop), set(fail), set(wrong_size)
        self.no_timestamps = no_timestamps
        self.i = -1

    def grab(self):
        self.i += 1
        while self.i in self.drop:
            self.i += 1
        if self.i in self.fail:
            return False
        return self.i < self.n

    def retrieve(self):
        size = (50, 50) if self.i in self.wrong else SIZE_HW
        return True, cv2.cvtColor(coded_frame(self.i, size), cv2.COLOR_GRAY2BGR)

    def get(self, prop):
        assert prop == cv2.CAP_PROP_POS_MSEC
        return 0.0 if self.no_timestamps else self.i * 1000.0 / FPS


def test_dropped_failed_and_wrong_size_frames_never_shift_time():
    cap = FakeCapture(24, drop=[5], fail=[9], wrong_size=[12])
    frames = list(frames_from_capture(cap, SIZE_HW, FPS))
    assert [f.index for f in frames] == [i for i in range(24) if i not in (5, 9)]
    for f in frames:
        assert f.time_s == pytest.approx(f.index / FPS)
        assert (f.image is None) == (f.index == 12)
        if f.ok:
            assert read_code(f.image) == f.index


def test_insane_timestamps_fall_back_to_index_over_fps():
    frames = list(frames_from_capture(FakeCapture(10, no_timestamps=True), SIZE_HW, FPS))
    assert [f.index for f in frames] == list(range(10))
    np.testing.assert_allclose([f.time_s for f in frames], np.arange(10) / FPS)


def test_paced_replay_is_paced(video):
    import time
    start = time.monotonic()
    frames = list(iter_frames(video, end_s=1.0, every_s=0.25, pace=True, speed=4.0))
    assert [f.index for f in frames] == [0, 3, 6, 9]
    assert time.monotonic() - start >= 0.75 / 4.0 * 0.9   # behaviour: it waited for the clock


def test_segment_writer_commits_whole_segments_and_fills_gaps(tmp_path):
    writer = SegmentWriter(tmp_path / "rec", FPS, segment_s=1.0)
    for i in list(range(0, 7)) + list(range(9, 30)):       # camera skipped 7 and 8
        writer.write(i, coded_frame(i))
        if i == 14:                                        # mid-recording: closed segments are final
            done = sorted(p.name for p in (tmp_path / "rec").glob("*.avi") if not p.name.startswith("."))
            assert done == ["000000.0.avi"]
    segments = writer.close()
    assert [p.name for p in segments] == ["000000.0.avi", "000001.0.avi", "000002.0.avi"]
    assert (tmp_path / "rec" / "000000.0.avi.gaps.txt").read_text().split() == ["7", "8"]
    joined = join_segments(tmp_path / "rec", tmp_path / "cam0.avi", FPS, fourcc="MJPG")
    codes = [read_code(f.image) for f in iter_frames(joined)]
    assert codes[:7] == list(range(7)) and codes[9:30] == list(range(9, 30))
    assert len(codes) == 30                                # the gap kept its place in time


def test_camera_source_records_every_frame_and_yields_samples(tmp_path, video):
    camera = CameraSource(str(video), tmp_path / "rec", fps=FPS, every_s=0.5, segment_s=2.0, clock="stream")
    frames = list(camera)
    assert [f.index for f in frames] == list(range(0, 60, 6))
    names = sorted(p.name for p in (tmp_path / "rec").glob("*.avi"))
    assert names == ["000000.0.avi", "000002.0.avi", "000004.0.avi"]
    recorded = [read_code(f.image) for name in names for f in iter_frames(tmp_path / "rec" / name)]
    assert recorded == list(range(60))


def test_camera_that_cannot_open_is_a_clear_error(tmp_path):
    with pytest.raises(DataError, match="cannot be opened"):
        list(CameraSource(str(tmp_path / "nope.avi"), None))
