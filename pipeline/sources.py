"""Video sources: replay of recorded files and live camera capture.

Frames are indexed by time, never by counting ``read()`` calls:

* ``Frame.time_s`` is the container timestamp (``CAP_PROP_POS_MSEC``) when it is
  *sane* (finite, >= 0 and strictly later than the previous frame's); otherwise
  it is ``index / fps`` with ``index`` one more than the previous frame's.
* ``Frame.index`` is ``round(time_s * fps)`` (the frame number from the start of
  the recording), so a dropped frame leaves a hole in the indices instead of
  shifting every later frame.
* A frame that cannot be decoded or has the wrong size is yielded with
  ``image=None`` (a *gap*); a truncated file simply ends early. Consumers learn
  about every missing sample by comparing what they got with
  :func:`expected_frame_times` (see :func:`slot_of`).

Sampling (``every_s``) keeps the first frame at or after each multiple
``k * every_s`` of the recording clock (absolute multiples, not relative to
``start_s``), so chunked and unchunked runs sample the same frames.

Chunks: a recording is cut into windows ``[start_s, end_s)`` of ``chunk_s``
seconds by :func:`chunk_windows`; a chunk's name is :func:`chunk_name`,
``f"{start_s:08.1f}"`` (e.g. ``"000060.0"``), which sorts in time order for
recordings up to 27 hours.
"""
from __future__ import annotations

import math
import os
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Iterator, Protocol

import numpy as np

from pipeline.store import DataError, ensure_dir, fsync_dir, fsync_file, tmp_path_for

VIDEO_EXTS = (".mp4", ".avi", ".mkv", ".mov")
TIME_EPS_S = 1e-3           # timestamps this close to a sampling instant count as on it
SEEK_MARGIN_S = 2.0         # seek this far before start_s, then decode forward
MAX_BAD_READS = 25          # consecutive failed reads before a stream counts as ended


@dataclass(frozen=True)
class VideoInfo:
    path: str
    fps: float
    width_px: int
    height_px: int
    frame_count: int         # container's count (best estimate; a truncated file may hold fewer)
    duration_s: float        # frame_count / fps


@dataclass
class Frame:
    index: int                       # frame number from the start of the recording
    time_s: float                    # recording time (container timestamp when sane)
    image: np.ndarray | None         # uint8 grayscale (H, W); None = gap (corrupt / wrong size)

    @property
    def ok(self) -> bool:
        return self.image is not None


class Capture(Protocol):
    """The part of cv2.VideoCapture the frame loop uses (fakes in tests implement it)."""
    def grab(self) -> bool: ...
    def retrieve(self) -> tuple[bool, np.ndarray | None]: ...
    def get(self, prop: int) -> float: ...


# ----------------------------------------------------------------------------- threads


def in_worker_process() -> bool:
    """True inside any multiprocessing child (the runner's pool with workers > 1 starts them)."""
    import multiprocessing

    return multiprocessing.parent_process() is not None


def limit_worker_threads() -> None:
    """In a runner worker process, let OpenCV and BLAS use one thread each.

    The runner starts one process per core; OpenCV (resize, decode) and BLAS
    each default to one thread per core, so with N workers N² threads compete
    for N cores. The main process (one worker, live mode) keeps the defaults.
    Video decoding is limited separately, when a capture is opened.
    """
    if not in_worker_process():
        return
    import cv2

    cv2.setNumThreads(1)
    try:
        from threadpoolctl import threadpool_limits
    except ImportError:          # optional: BLAS threads are then left as they are
        return
    threadpool_limits(1)


# ----------------------------------------------------------------------------- probing


def _open_capture(path: Path):
    import cv2

    path = Path(path)
    if not path.is_file():
        raise DataError(f"video not found: {path}. Fix the path (or the screening list that names it) "
                        f"or put the recording under data/raw/<movie>/<session>/<camera>.<ext>.")
    problem = recording_problem(path)      # before FFmpeg, which would only log 'moov atom not found'
    if problem:
        raise DataError(problem)
    cap = None
    if in_worker_process():      # one decoding thread per worker process (see limit_worker_threads)
        cap = cv2.VideoCapture(str(path), cv2.CAP_ANY, [cv2.CAP_PROP_N_THREADS, 1])
        if not cap.isOpened():   # a backend that does not take the parameter
            cap = None
    cap = cap or cv2.VideoCapture(str(path))
    if not cap.isOpened():
        raise DataError(diagnose_unreadable(path))
    return cap


MP4_EXTS = (".mp4", ".m4v", ".mov")


def _mp4_boxes(path: Path, limit: int = 10_000) -> list[tuple[str, int]] | None:
    """The top-level boxes (type, size) of an MP4/QuickTime file; None when it does not start like one."""
    boxes, size_file = [], path.stat().st_size
    with open(path, "rb") as handle:
        offset = 0
        while offset + 8 <= size_file and len(boxes) < limit:
            handle.seek(offset)
            header = handle.read(16)
            size, kind = int.from_bytes(header[:4], "big"), header[4:8]
            if size == 1 and len(header) >= 16:
                size = int.from_bytes(header[8:16], "big")
            elif size == 0:
                size = size_file - offset
            if not kind.isascii() or not kind.decode("ascii", "replace").isprintable() or size < 8:
                return boxes or None
            boxes.append((kind.decode("ascii"), size))
            offset += size
        if offset > size_file and boxes:
            boxes[-1] = (boxes[-1][0], -boxes[-1][1])       # the last box runs past the end: cut off
    return boxes


def diagnose_unreadable(path: Path) -> str:
    """Why a recording cannot be opened, what can and cannot be saved, and the fix (one message)."""
    path = Path(path)
    return recording_problem(path) or (
        f"video {path} cannot be opened ({path.stat().st_size} bytes; corrupt or an unsupported codec). "
        f"Re-encode it (e.g. ffmpeg -i IN -c:v mpeg4 OUT.mp4) or remove it from the screening list (and rerun: "
        f"its link under raw/ goes with it).")


def recording_problem(path: Path) -> str | None:
    """What is wrong with a recording that is plainly not a readable video (empty, text, an MP4 cut off
    before its index), with what can be saved and the fix; None when it may well be fine."""
    path = Path(path)
    where = f"video {path}"
    if path.is_symlink():
        where += f" (-> {path.resolve()})"
    size = path.stat().st_size
    remove = "remove it from the screening list (and rerun: its link under raw/ goes with it)"
    if size == 0:
        return (f"{where} is empty (0 bytes): nothing was recorded or the copy failed. Fix the path (or copy "
                f"the recording again), or {remove}.")
    with open(path, "rb") as handle:
        head = handle.read(512)
    if head and all(32 <= b < 127 or b in b"\t\r\n" for b in head):
        return (f"{where} is a text file, not a video (it starts {head[:40].decode('ascii')!r}). Fix the path "
                f"so the screening list points at the recording itself, or {remove}.")
    if path.suffix.lower() in MP4_EXTS:
        boxes = _mp4_boxes(path) or []
        kinds = [kind for kind, _ in boxes]
        if "ftyp" in kinds[:2] or "mdat" in kinds:
            if "moov" not in kinds:
                return (f"{where} is an MP4 whose index (the 'moov' atom) is missing: the recording was cut off "
                        f"before it was finalized (a crash, a full disk or a copy stopped early; {size} bytes). "
                        f"Re-muxing cannot fix this: without the index no tool can find the frames from this "
                        f"file alone. The frames in it can only be recovered with an index rebuilt from a "
                        f"good recording of the same camera and settings (e.g. the `untrunc` tool); otherwise "
                        f"{remove}. (`audience capture` records crash-safe segments that do not have this "
                        f"problem.)")
    return None


def probe_video(path: str | Path) -> VideoInfo:
    """Open a video, check its first frame decodes, and return its geometry and timing."""
    import cv2

    cap = _open_capture(Path(path))
    try:
        fps = float(cap.get(cv2.CAP_PROP_FPS))
        width_px = int(cap.get(cv2.CAP_PROP_FRAME_WIDTH))
        height_px = int(cap.get(cv2.CAP_PROP_FRAME_HEIGHT))
        count = int(cap.get(cv2.CAP_PROP_FRAME_COUNT))
        ok = cap.grab()
        ok, image = cap.retrieve() if ok else (False, None)
        if not ok or image is None:
            raise DataError(f"video {path}: the first frame cannot be decoded (corrupt file). "
                            f"Re-encode it or remove it from the screening.")
        if width_px <= 0 or height_px <= 0:
            height_px, width_px = image.shape[:2]
        if not (math.isfinite(fps) and 0 < fps <= 1000):
            raise DataError(f"video {path}: the container reports no usable frame rate ({fps}). "
                            f"Re-mux it with an explicit rate (ffmpeg -r 12 -i IN -c copy OUT).")
        if count <= 0:
            count = 1 + _count_remaining(cap)
    finally:
        cap.release()
    return VideoInfo(path=str(path), fps=fps, width_px=width_px, height_px=height_px,
                     frame_count=count, duration_s=count / fps)


def _count_remaining(cap) -> int:
    count = 0
    while cap.grab():
        count += 1
    return count


# ----------------------------------------------------------------------------- time bookkeeping


def chunk_windows(duration_s: float, chunk_s: float) -> list[tuple[float, float]]:
    """[(start_s, end_s)] covering [0, duration_s) in chunk_s pieces (the last may be shorter)."""
    if chunk_s <= 0:
        raise DataError(f"chunk length must be > 0 s, got {chunk_s}. Set sources.chunk_s to e.g. 60.")
    n = max(1, math.ceil(duration_s / chunk_s - 1e-9))
    return [(i * chunk_s, min((i + 1) * chunk_s, duration_s)) for i in range(n)]


def chunk_name(start_s: float) -> str:
    """'000060.0' for a chunk starting at 60 s: fixed width, sorts in time order."""
    return f"{start_s:08.1f}"


def sample_instants(start_s: float, end_s: float, every_s: float | None, fps: float) -> np.ndarray:
    """(S,) sampling instants k*every_s in [start_s, end_s); every frame instant when every_s is None."""
    step_s = every_s if every_s else 1.0 / fps
    k0 = math.ceil(start_s / step_s - 1e-9)
    k1 = math.ceil(end_s / step_s - 1e-9)
    return np.arange(k0, k1, dtype=np.int64) * step_s


def expected_frame_times(info: VideoInfo, start_s: float = 0.0, end_s: float | None = None,
                         every_s: float | None = None) -> tuple[np.ndarray, np.ndarray]:
    """The frames a complete recording would yield: (index (S,) int64, time_s (S,) float64).

    One entry per sampling instant in [start_s, min(end_s, duration_s)); the
    expected frame is the first at or after the instant.
    """
    end_s = info.duration_s if end_s is None else min(end_s, info.duration_s)
    instants_s = sample_instants(start_s, end_s, every_s, info.fps)
    index = np.ceil(instants_s * info.fps - TIME_EPS_S * info.fps).astype(np.int64)
    keep = index < info.frame_count
    return index[keep], index[keep] / info.fps


def slot_of(time_s: float, start_s: float, every_s: float | None, fps: float) -> int:
    """Which sampling instant (0-based within [start_s, …)) a sampled frame at time_s answers."""
    step_s = every_s if every_s else 1.0 / fps
    k0 = math.ceil(start_s / step_s - 1e-9)
    return int(math.floor(time_s / step_s + TIME_EPS_S / step_s)) - k0


# ----------------------------------------------------------------------------- frame loop


class _Clock:
    """Turns container timestamps into (index, time_s), falling back to index/fps."""

    def __init__(self, fps: float):
        self.fps = fps
        self.last_index = -1
        self.last_time_s = -math.inf

    def stamp(self, pos_ms: float) -> tuple[int, float]:
        time_s = pos_ms / 1000.0
        if math.isfinite(time_s) and time_s >= 0 and time_s > self.last_time_s + 1e-6:
            index = max(int(round(time_s * self.fps)), self.last_index + 1)
        else:
            index = self.last_index + 1
            time_s = index / self.fps
        self.last_index, self.last_time_s = index, time_s
        return index, time_s


def _to_gray(image: np.ndarray | None) -> np.ndarray | None:
    import cv2

    if image is None:
        return None
    if image.ndim == 3 and image.shape[2] == 3:
        return cv2.cvtColor(image, cv2.COLOR_BGR2GRAY)
    if image.ndim == 3 and image.shape[2] == 1:
        return image[:, :, 0]
    return image


class _Sampler:
    """Keeps the first frame at or after each multiple of every_s."""

    def __init__(self, start_s: float, every_s: float | None):
        self.every_s = every_s
        self.next_s = start_s

    def wants(self, time_s: float) -> bool:
        if time_s < self.next_s - TIME_EPS_S:
            return False
        if self.every_s:
            self.next_s = (math.floor(time_s / self.every_s + TIME_EPS_S / self.every_s) + 1) * self.every_s
        return True


def frames_from_capture(cap: Capture, size_hw: tuple[int, int], fps: float, start_s: float = 0.0,
                        end_s: float | None = None, every_s: float | None = None,
                        clock: _Clock | None = None) -> Iterator[Frame]:
    """Sequentially decode `cap`, yielding sampled frames in [start_s, end_s).

    Only sampled frames are retrieved (the others are just grabbed). Frames of
    the wrong size or that fail to decode are yielded as gaps (image=None).
    """
    import cv2

    clock = clock or _Clock(fps)
    sampler = _Sampler(start_s, every_s)
    bad_reads = 0
    while True:
        if not cap.grab():
            bad_reads += 1
            if bad_reads >= MAX_BAD_READS:
                return
            continue
        bad_reads = 0
        index, time_s = clock.stamp(cap.get(cv2.CAP_PROP_POS_MSEC))
        if end_s is not None and time_s >= end_s - TIME_EPS_S:
            return
        if time_s < start_s - TIME_EPS_S or not sampler.wants(time_s):
            continue
        ok, image = cap.retrieve()
        image = _to_gray(image) if ok else None
        if image is not None and image.shape[:2] != tuple(size_hw):
            image = None
        yield Frame(index=index, time_s=time_s, image=image)


def _pace(frames: Iterator[Frame], start_s: float, speed: float) -> Iterator[Frame]:
    """Sleep so each frame is yielded at its recording time (divided by speed) after the first."""
    t0 = None
    for frame in frames:
        if t0 is None:
            t0 = time.monotonic() - (frame.time_s - start_s) / speed
        delay = t0 + (frame.time_s - start_s) / speed - time.monotonic()
        if delay > 0:
            time.sleep(delay)
        yield frame


def iter_frames(path: str | Path, start_s: float = 0.0, end_s: float | None = None,
                every_s: float | None = None, pace: bool = False, speed: float = 1.0,
                info: VideoInfo | None = None) -> Iterator[Frame]:
    """Replay a recorded video: sampled frames in [start_s, end_s) in time order.

    pace=False decodes as fast as possible (batch); pace=True sleeps so frames
    come at the recording's own rate (×speed), standing in for a live camera.
    A start_s beyond a few seconds seeks to start_s - 2 s, then decodes
    forward; timestamps, not the seek, decide which frames are used.
    """
    info = info or probe_video(path)
    frames = _replay(info, start_s, end_s, every_s)
    return _pace(frames, start_s, speed) if pace else frames


def _replay(info: VideoInfo, start_s: float, end_s: float | None, every_s: float | None) -> Iterator[Frame]:
    import cv2

    cap = _open_capture(Path(info.path))
    try:
        if start_s > SEEK_MARGIN_S:
            cap.set(cv2.CAP_PROP_POS_MSEC, (start_s - SEEK_MARGIN_S) * 1000.0)
            if cap.grab() and cap.get(cv2.CAP_PROP_POS_MSEC) / 1000.0 > start_s - TIME_EPS_S:
                cap.release()            # the seek overshot: decode from the beginning instead
                cap = _open_capture(Path(info.path))
            else:
                cap.set(cv2.CAP_PROP_POS_MSEC, (start_s - SEEK_MARGIN_S) * 1000.0)
        yield from frames_from_capture(cap, (info.height_px, info.width_px), info.fps,
                                       start_s, end_s, every_s)
    finally:
        cap.release()


# ----------------------------------------------------------------------------- live capture


class SegmentWriter:
    """Writes frames into fixed-length video segments, each committed atomically.

    Segment k holds frame indices [k*n, (k+1)*n) with n = segment_s*fps and is
    named ``{chunk_name(k*segment_s)}.avi`` (MJPG, lossless enough for IR and
    readable by OpenCV alone). A segment is written to a temp file and
    os.replace'd onto its name when it closes, so a crash loses at most the
    open segment. Indices the camera skipped are filled with black frames, so
    a segment's frame i is always recording time (k*n + i) / fps; the skipped
    indices are listed in ``<segment>.gaps.txt``.
    """

    def __init__(self, folder: str | Path, fps: float, segment_s: float = 60.0, fourcc: str = "MJPG"):
        self.folder = ensure_dir(Path(folder))
        self.fps = fps
        self.frames_per_segment = max(1, int(round(segment_s * fps)))
        self.segment_s = self.frames_per_segment / fps
        self.fourcc = fourcc
        self.closed_segments: list[Path] = []
        self._writer = None
        self._segment = -1
        self._next_index = 0
        self._gaps: list[int] = []
        self._tmp: Path | None = None
        self._last_image: np.ndarray | None = None

    def _final(self, segment: int) -> Path:
        return self.folder / f"{chunk_name(segment * self.segment_s)}.avi"

    def _open(self, segment: int, shape_hw: tuple[int, int]) -> None:
        import cv2

        self._segment = segment
        self._tmp = tmp_path_for(self._final(segment))
        self._writer = cv2.VideoWriter(str(self._tmp), cv2.VideoWriter_fourcc(*self.fourcc), self.fps,
                                       (shape_hw[1], shape_hw[0]), False)
        if not self._writer.isOpened():
            raise DataError(f"cannot write video segment {self._tmp} (codec {self.fourcc}). "
                            f"Check the folder is writable or choose another codec.")
        self._next_index = segment * self.frames_per_segment
        self._gaps = []

    def close_segment(self) -> Path | None:
        """Finish the open segment: release, fsync, os.replace onto its final name."""
        if self._writer is None:
            return None
        self._writer.release()
        self._writer = None
        final = self._final(self._segment)
        fsync_file(self._tmp)
        os.replace(self._tmp, final)
        if self._gaps:
            Path(str(final) + ".gaps.txt").write_text("\n".join(map(str, self._gaps)) + "\n")
        fsync_dir(self.folder)
        self.closed_segments.append(final)
        return final

    def write(self, index: int, image: np.ndarray | None) -> None:
        """Write frame `index` (uint8 (H, W)); None or skipped indices become black gap frames."""
        if index < self._next_index:
            return                                   # late or repeated frame: time never goes back
        segment = index // self.frames_per_segment
        if image is not None:
            self._last_image = image
        if self._last_image is None:
            return                                   # nothing to size a segment by yet
        if segment != self._segment:
            if self._writer is not None:
                self._fill_to((self._segment + 1) * self.frames_per_segment)
                self.close_segment()
            self._open(segment, self._last_image.shape[:2])
        self._fill_to(index)
        frame = image if image is not None and image.shape == self._last_image.shape else None
        if frame is None:
            self._gaps.append(index)
            frame = np.zeros_like(self._last_image)
        self._writer.write(frame)
        self._next_index = index + 1

    def _fill_to(self, index: int) -> None:
        blank = np.zeros_like(self._last_image)
        while self._next_index < index:
            self._gaps.append(self._next_index)
            self._writer.write(blank)
            self._next_index += 1

    def close(self) -> list[Path]:
        self.close_segment()
        return self.closed_segments


class CameraSource:
    """Live capture from a camera (device index) or stream URL.

    Iterating yields sampled frames (every_s) while *every* frame is recorded
    into crash-safe segments under `record_dir` (see SegmentWriter). Frame
    times come from the wall clock since the first frame (clock="wall", for
    cameras) or from the stream's timestamps (clock="stream", for URLs/files
    with trustworthy timestamps). Stops after duration_s, on end of stream, or
    when stop() is called.
    """

    def __init__(self, device_or_url: int | str, record_dir: str | Path | None, fps: float = 12.0,
                 every_s: float | None = 0.5, segment_s: float = 60.0, duration_s: float | None = None,
                 clock: str = "wall"):
        if clock not in ("wall", "stream"):
            raise DataError(f"CameraSource clock must be 'wall' or 'stream', got {clock!r}.")
        self.device_or_url = device_or_url
        self.fps = fps
        self.every_s = every_s
        self.duration_s = duration_s
        self.clock = clock
        self.writer = SegmentWriter(record_dir, fps, segment_s) if record_dir is not None else None
        self.size_hw: tuple[int, int] | None = None
        self._stop = False

    def stop(self) -> None:
        self._stop = True

    def _open(self):
        import cv2

        source = self.device_or_url
        if isinstance(source, str) and source.isdigit():
            source = int(source)
        cap = cv2.VideoCapture(source)
        if not cap.isOpened():
            raise DataError(f"camera {self.device_or_url!r} cannot be opened. Check the device index "
                            f"(ls /dev/video*) or the stream URL, and that no other program holds it.")
        return cap

    def _stamp(self, cap, clock: _Clock, t0: float) -> tuple[int, float]:
        import cv2

        if self.clock == "stream":
            return clock.stamp(cap.get(cv2.CAP_PROP_POS_MSEC))
        return clock.stamp((time.monotonic() - t0) * 1000.0)

    def __iter__(self) -> Iterator[Frame]:
        cap = self._open()
        clock, sampler = _Clock(self.fps), _Sampler(0.0, self.every_s)
        t0 = time.monotonic()
        bad_reads = 0
        try:
            while not self._stop:
                ok, image = cap.read()
                if not ok:
                    bad_reads += 1
                    if bad_reads >= MAX_BAD_READS:
                        break
                    continue
                bad_reads = 0
                index, time_s = self._stamp(cap, clock, t0)
                if self.duration_s is not None and time_s >= self.duration_s:
                    break
                gray = _to_gray(image)
                if self.size_hw is None and gray is not None:
                    self.size_hw = gray.shape[:2]
                if gray is not None and gray.shape[:2] != self.size_hw:
                    gray = None
                if self.writer is not None:
                    self.writer.write(index, gray)
                if sampler.wants(time_s):
                    yield Frame(index=index, time_s=time_s, image=gray)
        finally:
            cap.release()
            if self.writer is not None:
                self.writer.close()


def join_segments(folder: str | Path, out_path: str | Path, fps: float, fourcc: str = "mp4v") -> Path:
    """Concatenate a capture's segments (in name order) into one recording, atomically."""
    import cv2

    segments = sorted(Path(folder).glob("*.avi"))
    segments = [s for s in segments if not s.name.startswith(".")]
    if not segments:
        raise DataError(f"no recorded segments in {folder}. Was the capture started with record_dir set?")
    out_path = Path(out_path)
    ensure_dir(out_path.parent)
    tmp = tmp_path_for(out_path)
    writer = None
    try:
        for segment in segments:
            info = probe_video(segment)
            if writer is None:
                writer = cv2.VideoWriter(str(tmp), cv2.VideoWriter_fourcc(*fourcc), fps,
                                         (info.width_px, info.height_px), False)
            for frame in iter_frames(segment, info=info):
                writer.write(frame.image if frame.ok else np.zeros((info.height_px, info.width_px), np.uint8))
        writer.release()
        fsync_file(tmp)
        os.replace(tmp, out_path)
    finally:
        tmp.unlink(missing_ok=True)
    return out_path


__all__ = ["VideoInfo", "Frame", "probe_video", "iter_frames", "expected_frame_times", "slot_of",
           "chunk_windows", "chunk_name", "sample_instants", "frames_from_capture", "CameraSource",
           "SegmentWriter", "join_segments", "VIDEO_EXTS", "in_worker_process", "limit_worker_threads"]
