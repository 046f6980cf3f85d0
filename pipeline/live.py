"""Live mode: source → detect → (later stages) → sink, as threads joined by bounded queues.

Each step runs in its own thread and hands its results to the next through a
``queue.Queue(maxsize=sources.queue_size)``: when a step is slow, the queue in
front of it fills and the step before it blocks (back-pressure) instead of
piling frames up in memory. The source is a paced replay
(``iter_frames(..., pace=True)``) or a ``CameraSource`` (which also writes the
recording in crash-safe segments, so nothing is lost when analysis falls
behind or the process dies). Frames keep their order: every queue is FIFO and
each step is one thread.

Threads, not processes: OpenCV decoding releases the GIL, and at the default
0.5 s sampling one detector thread keeps up on this machine (see
bench/bench_detect.py); batch mode (`run_stage --workers N`) is where
processes parallelise.

The default sink (`DetectionsChunkSink`) writes the same detections chunks
as the batch ``detect`` stage. Later stages (landmarks, …) plug in as extra
``steps``: callables ``item -> item`` run in order, each in its own thread.
"""
from __future__ import annotations

import math
import queue
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Iterable

import numpy as np

from pipeline.detect import make_finder
from pipeline.sources import Frame, chunk_name, sample_instants, slot_of
from pipeline.store import Detections, Workspace, write_detections

_END = object()


class BoundedQueue(queue.Queue):
    """queue.Queue that remembers the most items it ever held (for tests and reports)."""

    def __init__(self, maxsize: int):
        super().__init__(maxsize=maxsize)
        self.high_water = 0

    def _put(self, item):
        super()._put(item)
        self.high_water = max(self.high_water, len(self.queue))


@dataclass
class _Failure:
    step: str
    error: BaseException


@dataclass
class LiveReport:
    items_in: int = 0
    items_out: int = 0
    queue_size: int = 0
    high_water: list[int] = field(default_factory=list)   # per queue, most items waiting at once
    seconds: float = 0.0

    def line(self) -> str:
        return (f"live: {self.items_in} frames in, {self.items_out} out, queues (max {self.queue_size}) "
                f"peaked at {self.high_water}, {self.seconds:.1f} s")


@dataclass
class DetectedFrame:
    """A frame and its detections, passed from the detect step to later steps."""
    frame: Frame
    boxes_px: np.ndarray       # (D, 4) float32 [left, top, right, bottom]
    scores: np.ndarray         # (D,) float32
    band: np.ndarray           # (D,) int8 (0 front, 1 back)


class DetectStep:
    """The detect stage as a live step: Frame → DetectedFrame (gaps pass through empty)."""

    def __init__(self, cfg, height_px: int, session_meta: dict | None = None):
        self.finder = make_finder(cfg, height_px, session_meta)

    def __call__(self, frame: Frame) -> DetectedFrame:
        if frame.image is None:
            empty = np.zeros((0, 4), np.float32)
            return DetectedFrame(frame, empty, np.zeros(0, np.float32), np.zeros(0, np.int8))
        boxes, scores, band = self.finder(frame.image, frame.time_s)
        return DetectedFrame(frame, boxes, scores, band)


class DetectionsChunkSink:
    """Collects DetectedFrames and writes one detections chunk per chunk_s window.

    Every sampling instant of a finished chunk gets a frame row; instants no
    frame answered (dropped, corrupt, source stopped) are gaps (frame_ok False).
    A chunk is written (atomically) as soon as a frame of a later chunk
    arrives, and the last, partial chunk when the stream ends.
    """

    def __init__(self, workspace: Workspace, movie: str, session: str, camera: str, cfg, fps: float,
                 width_px: int, height_px: int, detector_names: tuple[str, str] = ("", "")):
        self.workspace, self.key = workspace, (movie, session, camera)
        self.every_s, self.chunk_s, self.fps = cfg.sources.sample_every_s, cfg.sources.chunk_s, fps
        self.size = (width_px, height_px)
        self.detector_names = detector_names
        self.written: list[Path] = []
        self._chunk = None
        self._items: list[DetectedFrame] = []
        self._last_time_s = 0.0

    def __call__(self, item: DetectedFrame) -> None:
        chunk = int(math.floor(item.frame.time_s / self.chunk_s + 1e-9))
        if self._chunk is not None and chunk != self._chunk:
            self._flush(end_s=(self._chunk + 1) * self.chunk_s)
        self._chunk = chunk
        self._items.append(item)
        self._last_time_s = item.frame.time_s

    def close(self) -> None:
        if self._chunk is not None and self._items:
            self._flush(end_s=min((self._chunk + 1) * self.chunk_s, self._last_time_s + 1.0 / self.fps))

    def _flush(self, end_s: float) -> None:
        start_s = self._chunk * self.chunk_s
        instants_s = sample_instants(start_s, end_s, self.every_s, self.fps)
        frame_index = np.ceil(instants_s * self.fps - 1e-3 * self.fps).astype(np.int64)
        frame_time_s = frame_index / self.fps
        frame_ok = np.zeros(len(frame_index), bool)
        rows = {"det_frame": [], "det_box_px": [], "det_score": [], "det_band": []}
        for item in self._items:
            slot = slot_of(item.frame.time_s, start_s, self.every_s, self.fps)
            if not 0 <= slot < len(frame_index) or frame_ok[slot]:
                continue
            frame_index[slot], frame_time_s[slot] = item.frame.index, item.frame.time_s
            frame_ok[slot] = item.frame.image is not None
            rows["det_frame"].append(np.full(len(item.scores), slot, np.int32))
            rows["det_box_px"].append(item.boxes_px.reshape(-1, 4))
            rows["det_score"].append(item.scores)
            rows["det_band"].append(item.band)
        arrays = {k: np.concatenate(v) if v else np.zeros((0, 4) if k == "det_box_px" else 0)
                  for k, v in rows.items()}
        movie, session, camera = self.key
        dets = Detections(frame_index=frame_index, frame_time_s=frame_time_s, frame_ok=frame_ok, **arrays,
                          attrs={"movie": movie, "session": session, "camera": camera,
                                 "chunk_start_s": float(start_s), "chunk_end_s": float(end_s),
                                 "fps": float(self.fps), "width_px": self.size[0], "height_px": self.size[1],
                                 "sample_every_s": float(self.every_s), "detector_front": self.detector_names[0],
                                 "detector_back": self.detector_names[1]})
        path = self.workspace.stage_output("detect", movie, session, camera, chunk_name(start_s))
        self.written.append(write_detections(path, dets))
        self._items = []


def _source_thread(items: Iterable, out_q: BoundedQueue, stop: threading.Event, report: LiveReport) -> None:
    try:
        for item in items:
            if stop.is_set():
                break
            out_q.put(item)
            report.items_in += 1
    except BaseException as err:  # noqa: BLE001 - handed to the main thread
        out_q.put(_Failure("source", err))
        return
    out_q.put(_END)


def _step_thread(name: str, step: Callable, in_q: BoundedQueue, out_q: BoundedQueue,
                 stop: threading.Event) -> None:
    while True:
        item = in_q.get()
        if item is _END or isinstance(item, _Failure):
            out_q.put(item)
            return
        if stop.is_set():
            continue                     # drain so upstream never blocks forever
        try:
            out_q.put(step(item))
        except BaseException as err:  # noqa: BLE001 - handed to the main thread
            stop.set()
            out_q.put(_Failure(name, err))
            _drain(in_q)
            return


def _drain(q: BoundedQueue) -> None:
    while True:
        item = q.get()
        if item is _END or isinstance(item, _Failure):
            return


def run_live(source: Iterable, steps: list[Callable], sink: Callable, queue_size: int = 8) -> LiveReport:
    """Run source → steps… → sink, each step in its own thread, joined by bounded queues.

    The sink runs in the calling thread. An exception in any step stops the
    source, lets already-queued items drain, and is re-raised here.
    """
    started = time.perf_counter()
    report = LiveReport(queue_size=queue_size)
    queues = [BoundedQueue(queue_size) for _ in range(len(steps) + 1)]
    stop = threading.Event()
    threads = [threading.Thread(target=_source_thread, args=(source, queues[0], stop, report),
                                name="live-source", daemon=True)]
    for i, step in enumerate(steps):
        name = getattr(step, "__name__", type(step).__name__)
        threads.append(threading.Thread(target=_step_thread, args=(name, step, queues[i], queues[i + 1], stop),
                                        name=f"live-{name}", daemon=True))
    for thread in threads:
        thread.start()
    failure = None
    try:
        while True:
            item = queues[-1].get()
            if item is _END:
                break
            if isinstance(item, _Failure):
                failure = item
                break
            sink(item)
            report.items_out += 1
    finally:
        stop.set()
        for q in queues:                 # unblock any producer still waiting on a full queue
            while not q.empty():
                try:
                    q.get_nowait()
                except queue.Empty:
                    break
        for thread in threads:
            thread.join(timeout=5.0)
    report.high_water = [q.high_water for q in queues]
    report.seconds = time.perf_counter() - started
    if failure is not None:
        raise RuntimeError(f"live step '{failure.step}' failed: {failure.error}") from failure.error
    return report


def run_live_detect(source: Iterable[Frame], cfg, workspace: Workspace, movie: str, session: str,
                    camera: str, fps: float, width_px: int, height_px: int, session_meta: dict | None = None,
                    later_steps: list[Callable] = ()) -> tuple[LiveReport, list[Path]]:
    """Live detection with the default chunk-writing sink; `later_steps` run after detection.

    When later_steps are given, the last must return DetectedFrame-like items
    only if the default sink should still write detections; otherwise pass
    your own sink to run_live.
    """
    detect = DetectStep(cfg, height_px, session_meta)
    names = (Path(detect.finder.front_name).name, Path(detect.finder.back_name).name)
    sink = DetectionsChunkSink(workspace, movie, session, camera, cfg, fps, width_px, height_px, names)
    report = run_live(source, [detect, *later_steps], sink, queue_size=cfg.sources.queue_size)
    sink.close()
    return report, sink.written


__all__ = ["run_live", "run_live_detect", "DetectStep", "DetectedFrame", "DetectionsChunkSink", "BoundedQueue",
           "LiveReport"]


# ----------------------------------------------------------------------------- command line


def add_capture_args(parser):
    source = parser.add_mutually_exclusive_group(required=True)
    source.add_argument("--camera", metavar="DEVICE_OR_URL", help="camera index (0, 1, …) or stream URL")
    source.add_argument("--replay", metavar="VIDEO", help="paced replay of a recorded file (stands in for a camera)")
    parser.add_argument("--session", required=True, help="session name, e.g. 2016-05-01_evening")
    parser.add_argument("--camera-name", default="cam0", help="camera name in the workspace (default %(default)s)")
    parser.add_argument("--fps", type=float, default=12.0, help="camera frame rate (default %(default)s)")
    parser.add_argument("--duration-s", type=float, help="stop after this many seconds (default: until Ctrl-C)")
    return parser


def capture_main(args, cfg) -> int:
    """Live (or paced-replay) detection into data/cache/detect/…; a camera is also recorded in segments."""
    import yaml

    from pipeline.sources import CameraSource, iter_frames, join_segments, probe_video

    from pipeline.store import DataError

    if not getattr(args, "movie", None):
        raise DataError("capture needs --movie NAME (the folder under raw/ and cache/ it writes to).")
    args.capture_movie = args.movie
    workspace = Workspace(Path(cfg.workspace.root))
    folder = workspace.session_dir(args.capture_movie, args.session)
    meta_path = folder / "session.yaml"
    meta = yaml.safe_load(meta_path.read_text()) if meta_path.is_file() else {}
    camera = None
    if args.replay:
        info = probe_video(args.replay)
        source = iter_frames(args.replay, 0.0, args.duration_s, cfg.sources.sample_every_s, pace=True,
                             speed=cfg.sources.replay_speed, info=info)
        fps, size = info.fps, (info.width_px, info.height_px)
    else:
        camera = CameraSource(args.camera, folder / f"{args.camera_name}.segments", fps=args.fps,
                              every_s=cfg.sources.sample_every_s, segment_s=cfg.sources.segment_s,
                              duration_s=args.duration_s)
        first = next(iter(_peek := iter(camera)))
        size = camera.size_hw[::-1]
        fps = args.fps
        source = _chain(first, _peek)
    try:
        report, written = run_live_detect(source, cfg, workspace, args.capture_movie, args.session,
                                          args.camera_name, fps, size[0], size[1], meta)
    finally:
        if camera is not None:
            camera.stop()
    print(report.line())
    print(f"wrote {len(written)} detections chunk(s) under {workspace.cache / 'detect' / args.capture_movie}")
    if camera is not None:
        out = join_segments(folder / f"{args.camera_name}.segments", folder / f"{args.camera_name}.mp4", fps)
        print(f"recording: {out}")
    else:
        out = _link_replayed(Path(args.replay), folder, args.camera_name)
        print(f"recording: {out} (linked to {Path(args.replay).resolve()})")
    print("run `audience run` for the later stages (landmarks … the movie's tensor)")
    return 0


def _link_replayed(video: Path, folder: Path, camera_name: str) -> Path:
    """The replayed file becomes the session's recording in raw/ (a link), so `audience run` finds it and
    finishes the stages after detection, as for a camera's recording."""
    import os

    from pipeline.store import DataError, ensure_dir

    target = ensure_dir(folder) / f"{camera_name}{video.suffix.lower()}"
    if target.is_symlink() or target.exists():
        if target.resolve() != video.resolve():
            raise DataError(f"{target} already holds another recording ({target.resolve()}); use another "
                            f"--session or --camera-name, or remove it.")
        return target
    os.symlink(video.resolve(), target)
    return target


def _chain(first, rest):
    yield first
    yield from rest


def register(subparsers) -> None:
    """Add the `capture` command to the main CLI (handler(args, cfg))."""
    p = subparsers.add_parser("capture", help="live detection from a camera (recorded in segments) or a paced replay")
    add_capture_args(p)
    p.set_defaults(handler=capture_main)
