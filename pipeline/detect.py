"""Face detection: one HOG MMOD detector for the back rows, one for the front rows.

Where to look comes from a *Geometry* (``pipeline/geometry.py``): the seat
rows of a seat map in session.yaml, the row bands session.yaml gives, or
(the default for a user's own recording) the rows the ``survey`` stage found
in the footage itself by scanning a few frames over the whole frame height at
every face size. Each row is a strip of the frame, cropped and resized so its
faces reach ``detect.target_face_px`` (the back rows' ~15×25 px faces are
upsampled past HOG's ~400 px² floor), and searched by the detector made for
its face size. Unless the geometry is a seat map, a full scan of the bands
every ``detect.rescan_s`` adds rows where new faces appear. Detections from
all strips are mapped back to full-frame pixels and merged by non-maximum
suppression, so a face on a strip boundary is reported once.

Box convention (what the shipped detectors were trained on and what
``det_box_px`` holds): the *dlib-frontal-like square box*: a square whose
side is 1.1 × the width of the 68-landmark cloud, centred horizontally on the
cloud and 0.1 × that width above the cloud's vertical centre
(``pipeline.detector_training.face_box_from_landmarks``). On dlib's example
photos this matches the stock frontal detector's boxes (side 1.11 ± 0.09
widths, centre 0.10 ± 0.05 widths above the cloud centre), so the stock
68-point shape predictor fits inside them. On the synthetic theatre the side
is about 1.2 × the truth ``face_box`` width.

Detector choices (``detect.front_detector`` / ``detect.back_detector``):
``"default"`` (the shipped ``pipeline/assets/detector_{front,back}.svm``), a
path to any ``.svm`` made by ``train-detector``, ``"dlib_frontal"`` (dlib's
stock frontal HOG detector) or ``"cnn"`` (dlib's CNN MMOD model from
``face_recognition_models``; ~1.4 s per 640×480 frame on this CPU).
"""
from __future__ import annotations

import functools
import importlib.util
from pathlib import Path

import numpy as np
import yaml

from pipeline.geometry import (BAND_BACK, BAND_FRONT, Geometry, Row, Strip, band_strips, bands_from_rows,
                               check_rows, geometry_from_session, merge_rows, perspective_outliers, rows_from_boxes, survey_strips)
from pipeline.runner import Stage, Unit
from pipeline.sources import (VIDEO_EXTS, chunk_name, chunk_windows, expected_frame_times, iter_frames,
                              limit_worker_threads, probe_video, slot_of)
from pipeline.store import DataError, Detections, Workspace, write_detections

ASSETS = Path(__file__).resolve().parent / "assets"
BUILTIN_DETECTORS = ("default", "dlib_frontal", "cnn")


# ----------------------------------------------------------------------------- detectors


def _model_path(name: str) -> Path:
    spec = importlib.util.find_spec("face_recognition_models")
    if spec is None or spec.origin is None:
        raise DataError(f"detector 'cnn' needs the face_recognition_models package. Install it "
                        f"(pip install face_recognition_models) or choose another detector.")
    return Path(spec.origin).parent / "models" / name


def resolve_detector_path(name: str, band: str) -> str:
    """'default' → the shipped asset for `band`; builtin names pass through; else a checked path."""
    if name == "default":
        return str(ASSETS / f"detector_{band}.svm")
    return name


class HogDetector:
    """A dlib HOG (fhog) detector: a trained .svm or dlib's stock frontal detector."""
    kind = "hog"

    def __init__(self, name: str):
        import dlib

        self.name = name
        if name == "dlib_frontal":
            self.detector = dlib.get_frontal_face_detector()
            return
        path = Path(name)
        if not path.is_file():
            raise DataError(f"detector file not found: {path}. Train one with `train-detector`, "
                            f"or set detect.front_detector/back_detector to 'default' or 'dlib_frontal'.")
        try:
            self.detector = dlib.fhog_object_detector(str(path))
        except RuntimeError as err:
            raise DataError(f"{path} is not a dlib HOG detector ({err}). Pass a .svm written by "
                            f"`train-detector` (dlib.train_simple_object_detector).") from err

    @property
    def window_hw(self) -> tuple[int, int]:
        return self.detector.detection_window_height, self.detector.detection_window_width

    def __call__(self, image: np.ndarray, threshold: float) -> tuple[np.ndarray, np.ndarray]:
        """image uint8 (H, W) → boxes (D, 4) [l, t, r, b] px, scores (D,)."""
        import dlib

        rects, scores, _ = dlib.fhog_object_detector.run_multiple([self.detector], image, 0, threshold)
        return _rects_to_array(rects), np.asarray(scores, np.float32)

    def refine(self, gray: np.ndarray, box: np.ndarray) -> np.ndarray:
        """A better-placed box (4,) for one detection (4,) of `gray` (H, W).

        HOG places a box on its 8-px cell grid at pyramid steps of 6/5, so a box can be off by half a
        cell (about a tenth of the face) and by a tenth in size, which throws the landmark fitter off on
        small faces. The face's neighbourhood is searched again at REFINE_GRID (two scales, half-cell
        shifts) and the boxes found are averaged, weighted by score (a sharp softmax).
        """
        import cv2
        import dlib

        side = float(box[2] - box[0])
        cx, cy = (box[0] + box[2]) / 2, (box[1] + box[3]) / 2
        window = float(min(self.window_hw))
        found, weights = [], []
        for size_windows, dx_px, dy_px in REFINE_GRID:
            scale = size_windows * window / side
            half = REFINE_CROP_SIDES * side
            x0, y0 = cx - half + dx_px / scale, cy - half + dy_px / scale
            crop_px = int(round(2 * half * scale))
            warp = np.array([[scale, 0.0, -x0 * scale], [0.0, scale, -y0 * scale]])
            crop = cv2.warpAffine(gray, warp, (crop_px, crop_px), flags=cv2.INTER_LINEAR)
            rects, scores, _ = dlib.fhog_object_detector.run_multiple([self.detector], crop, 0, REFINE_THRESHOLD)
            for r, score in zip(_rects_to_array(rects), scores):
                b = r / scale + [x0, y0, x0, y0]
                if max(abs((b[0] + b[2]) / 2 - cx), abs((b[1] + b[3]) / 2 - cy)) < 0.4 * side:
                    found.append(b)
                    weights.append(score)
        if not found:
            return np.asarray(box, np.float32)
        w = np.exp(REFINE_SHARPNESS * (np.asarray(weights) - max(weights)))
        return ((np.asarray(found) * w[:, None]).sum(axis=0) / w.sum()).astype(np.float32)


# detect.refine_boxes: (face size in detector windows, x shift px, y shift px) of each second look; chosen on the
# real-face bench's tune identities (bench/bench_real_faces.py --faces tune): with these 4 looks the box scatter
# around the landmark fitter's ideal box shrinks and its mean error drops from 0.26 to 0.18 (a 24-look grid: 0.17)
REFINE_GRID = ((1.05, 0, 0), (1.05, 4, 4), (1.2, 0, 4), (1.2, 4, 0))
REFINE_CROP_SIDES = 1.0      # crop half-width around the box, in box sides (1.3: a little better, 1.7x the cost)
REFINE_THRESHOLD = -0.5      # second looks keep weaker windows too: they are weighted, not thresholded
REFINE_SHARPNESS = 4.0       # weight = exp(sharpness × (score - best score))


class CnnDetector:
    """dlib's CNN MMOD face detector (slow on CPU: an option, not the default)."""
    kind = "cnn"
    window_hw = (40, 40)   # the model's smallest face, roughly

    def __init__(self, name: str = "cnn"):
        import dlib

        self.name = name
        path = _model_path("mmod_human_face_detector.dat")
        if not path.is_file():
            raise DataError(f"CNN face model not found at {path}. Reinstall face_recognition_models.")
        self.detector = dlib.cnn_face_detection_model_v1(str(path))

    def __call__(self, image: np.ndarray, threshold: float) -> tuple[np.ndarray, np.ndarray]:
        found = self.detector(image, 0)
        keep = [d for d in found if d.confidence >= threshold]
        return (_rects_to_array([d.rect for d in keep]),
                np.asarray([d.confidence for d in keep], np.float32))


def _rects_to_array(rects) -> np.ndarray:
    """dlib rectangles (inclusive corners) → (D, 4) float32 [left, top, right, bottom) px."""
    if len(rects) == 0:
        return np.zeros((0, 4), np.float32)
    return np.array([[r.left(), r.top(), r.right() + 1, r.bottom() + 1] for r in rects], np.float32)


def load_detector(name: str, band: str = "front"):
    """A callable detector from a config name ('default', 'dlib_frontal', 'cnn' or a .svm path)."""
    path = resolve_detector_path(name, band)
    return CnnDetector(path) if path == "cnn" else HogDetector(path)


# ----------------------------------------------------------------------------- strips


def strip_image(gray: np.ndarray, strip: Strip) -> np.ndarray:
    """The strip's region of `gray` (H, W), resized by strip.scale, contiguous uint8."""
    import cv2

    crop = gray[strip.top_px:strip.bottom_px, strip.left_px:strip.right_px or gray.shape[1]]
    if abs(strip.scale - 1.0) > 1e-3:
        interp = cv2.INTER_LINEAR if strip.scale > 1 else cv2.INTER_AREA
        crop = cv2.resize(crop, (int(round(crop.shape[1] * strip.scale)), int(round(crop.shape[0] * strip.scale))),
                          interpolation=interp)
    return np.ascontiguousarray(crop)


def strip_to_frame(boxes: np.ndarray, strip: Strip, image_hw: tuple[int, int], frame_w: int) -> np.ndarray:
    """Boxes (D, 4) in strip-image px → full-frame px."""
    right = min(strip.right_px or frame_w, frame_w)
    sx = (right - strip.left_px) / image_hw[1]
    sy = (strip.bottom_px - strip.top_px) / image_hw[0]
    out = boxes * np.array([sx, sy, sx, sy], np.float32)
    out[:, [0, 2]] += strip.left_px
    out[:, [1, 3]] += strip.top_px
    return out.astype(np.float32)


def detect_strip(detector, gray: np.ndarray, strip: Strip, threshold: float) -> tuple[np.ndarray, np.ndarray]:
    """Run `detector` on one strip of `gray` (H, W); boxes (D, 4) in full-frame px, scores (D,)."""
    image = strip_image(gray, strip)
    if min(image.shape) < min(getattr(detector, "window_hw", (1, 1))):
        return np.zeros((0, 4), np.float32), np.zeros(0, np.float32)
    boxes, scores = detector(image, threshold)
    return strip_to_frame(boxes, strip, image.shape, gray.shape[1]), scores


def box_iou(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """IoU matrix (len(a), len(b)) of [l, t, r, b] boxes."""
    lt = np.maximum(a[:, None, :2], b[None, :, :2])
    rb = np.minimum(a[:, None, 2:], b[None, :, 2:])
    inter = np.prod(np.clip(rb - lt, 0, None), axis=2)
    area_a = np.prod(a[:, 2:] - a[:, :2], axis=1)
    area_b = np.prod(b[:, 2:] - b[:, :2], axis=1)
    return inter / np.maximum(area_a[:, None] + area_b[None, :] - inter, 1e-9)


def _overlap_min(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Intersection over the smaller box's area (catches a box inside another)."""
    lt = np.maximum(a[:, None, :2], b[None, :, :2])
    rb = np.minimum(a[:, None, 2:], b[None, :, 2:])
    inter = np.prod(np.clip(rb - lt, 0, None), axis=2)
    area_a = np.prod(a[:, 2:] - a[:, :2], axis=1)
    area_b = np.prod(b[:, 2:] - b[:, :2], axis=1)
    return inter / np.maximum(np.minimum(area_a[:, None], area_b[None, :]), 1e-9)


def merge_detections(boxes: np.ndarray, scores: np.ndarray, iou: float, contain: float = 0.8) -> np.ndarray:
    """Greedy NMS across bands and strips: indices kept, best score first."""
    order = np.argsort(-scores, kind="stable")
    keep: list[int] = []
    for i in order:
        if keep:
            kb = boxes[keep]
            if (box_iou(boxes[i:i + 1], kb)[0] > iou).any() or (_overlap_min(boxes[i:i + 1], kb)[0] > contain).any():
                continue
        keep.append(int(i))
    return np.asarray(keep, np.int64)


class FaceFinder:
    """Both detectors over a Geometry's rows (and bands); call on a grayscale frame.

    Every sampled frame searches the geometry's rows. Unless the geometry is a
    seat map, a full scan (every detect.rescan_s recording seconds, and on a
    chunk's first frame) also searches its bands, or the whole frame height when
    it has none, and the rows found there join the searched rows. Without a
    geometry the finder surveys its first frame (live capture).
    """

    def __init__(self, cfg, geometry: Geometry | None = None):
        dc = cfg.detect
        self.cfg = cfg
        self.front_name = resolve_detector_path(dc.front_detector, "front")
        self.back_name = resolve_detector_path(dc.back_detector, "back")
        self.detectors = {BAND_FRONT: _cached_detector(self.front_name),
                          BAND_BACK: _cached_detector(self.back_name)}
        self.geometry = geometry
        self.rows: list[Row] = list(geometry.rows) if geometry else []
        self.last_full_s = -np.inf
        self.full_scans = 0

    def detect(self, gray: np.ndarray, strips: list[Strip]):
        """Run each strip's detector; merged boxes (D, 4), scores (D,), band (D,) sorted top to bottom."""
        boxes, scores, band = [np.zeros((0, 4), np.float32)], [np.zeros(0, np.float32)], [np.zeros(0, np.int8)]
        for strip in strips:
            b, s = detect_strip(self.detectors[strip.band_id], gray, strip, self.cfg.detect.threshold)
            boxes.append(b)
            scores.append(s)
            band.append(np.full(len(s), strip.band_id, np.int8))
        boxes, scores, band = np.concatenate(boxes), np.concatenate(scores), np.concatenate(band)
        keep = merge_detections(boxes, scores, self.cfg.detect.merge_iou)
        keep = keep[np.lexsort((boxes[keep, 0], boxes[keep, 1]))] if len(keep) else keep
        return boxes[keep], scores[keep], band[keep]

    def refine(self, gray: np.ndarray, boxes: np.ndarray, band: np.ndarray) -> np.ndarray:
        """Each box (D, 4) re-placed by its own detector's second looks (HOG detectors only)."""
        out = np.asarray(boxes, np.float32).copy()
        for i, (box, b) in enumerate(zip(boxes, band)):
            detector = self.detectors[int(b)]
            if isinstance(detector, HogDetector):
                out[i] = detector.refine(gray, box)
        return out

    def full_scan_strips(self, height_px: int, width_px: int) -> list[Strip]:
        bands = self.geometry.bands if self.geometry else ()
        if bands:
            dc = self.cfg.detect
            return [s for b in bands for s in band_strips(b, dc.target_face_px, dc.strip_faces, dc.step_faces)]
        return survey_strips(self.cfg, height_px, width_px)

    def __call__(self, gray: np.ndarray, time_s: float | None = None) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """gray (H, W) uint8 → boxes (D, 4) float32 px, scores (D,) float32, band (D,) int8."""
        if self.geometry is None:
            self.geometry = survey_geometry([gray], self)
            self.rows = list(self.geometry.rows)
        strips = [r.strip for r in self.rows]
        # not every frame while no row is known: a dark or empty theatre would scan the whole height each frame
        full = self.geometry.tracks_rows and (time_s is None
                                              or time_s - self.last_full_s >= self.cfg.detect.rescan_s - 1e-6)
        if full:
            strips += self.full_scan_strips(*gray.shape)
            self.full_scans += 1
            if time_s is not None:
                self.last_full_s = time_s
        boxes, scores, band = self.detect(gray, strips)
        if full and len(boxes):
            found = rows_from_boxes(boxes, self.cfg, band, height_px=gray.shape[0], width_px=gray.shape[1])
            self.rows = merge_rows(self.rows, found)
        if self.cfg.detect.refine_boxes:
            boxes = self.refine(gray, boxes, band)
        return boxes, scores, band


# ----------------------------------------------------------------------------- survey


def survey_geometry(grays: list[np.ndarray], finder: "FaceFinder") -> Geometry:
    """Rows and bands from frames (H, W) scanned over their whole height at every face size.

    Faces from all frames are clustered into rows by height; a row needs
    detect.survey_min_faces faces and at least one per two survey frames (fewer
    when fewer frames are given), and a face size on the perspective trend of
    the other rows, which keeps stray false detections from becoming searched rows.
    """
    cfg = finder.cfg
    height, width = grays[0].shape
    strips = survey_strips(cfg, height, width)
    boxes = np.concatenate([finder.detect(g, strips)[0] for g in grays]) if grays else np.zeros((0, 4), np.float32)
    min_faces = min(max(cfg.detect.survey_min_faces, (len(grays) + 1) // 2), len(grays))
    rows = rows_from_boxes(boxes, cfg, min_faces=min_faces, height_px=height, width_px=width)
    odd = perspective_outliers(rows)
    rows = [r for r in rows if r not in odd]
    lo, hi = cfg.detect.survey_face_px
    notes = check_rows(rows, cfg) + [f"info: dropped a row of {r.faces} faces at y={r.y_px:.0f} px: their size ({r.face_px:.0f} "
                                     f"px) does not fit the other rows' perspective (false detections?)" for r in odd]
    if not rows:
        notes.append(f"the survey found no faces in {len(grays)} frame(s) at face-box sides {lo:g}-{hi:g} px: every "
                     f"full scan will search the whole frame (slow). If the faces are smaller or larger, set "
                     f"detect.survey_face_px; if the detectors do not fit this footage, label frames "
                     f"(`audience label-frames`) and `audience train-detector`, or give a seat map in session.yaml.")
    elif min(r.face_px for r in rows) < lo * 1.15:
        notes.append(f"faces of about {min(r.face_px for r in rows):.0f} px, the smallest size searched: smaller "
                     f"faces may be missed. Lower detect.survey_face_px[0] if the back rows look incomplete.")
    return Geometry("survey", tuple(rows), bands_from_rows(rows, cfg, height), (height, width), tuple(notes))


def survey_times(duration_s: float, n_frames: int) -> list[float]:
    """n_frames instants spread evenly over the recording (centres of n equal parts)."""
    return [(k + 0.5) * duration_s / n_frames for k in range(n_frames)]


def survey_video(video: Path, cfg) -> Geometry:
    """Survey frames spread over the whole recording, so people who sit down late still make rows.
    Frames are reached by seeking; an inexact seek is harmless here (no timestamps are kept)."""
    info = probe_video(video)
    grays = []
    for t in survey_times(info.duration_s, cfg.detect.survey_frames):
        frame = next((f for f in iter_frames(video, t, t + 3.0 / info.fps, None, info=info)
                      if f.image is not None), None)
        if frame is not None:
            grays.append(frame.image)
    if not grays:
        raise DataError(f"{video}: no survey frame could be decoded. Re-encode the recording or remove it.")
    return survey_geometry(grays, FaceFinder(cfg))


def make_finder(cfg, height_px: int, session_meta: dict | None = None, width_px: int = 0,
                survey: Geometry | None = None) -> FaceFinder:
    """A FaceFinder: the seat map or bands of session.yaml, else the survey's rows, else it surveys itself."""
    geometry = geometry_from_session(cfg, height_px, width_px, session_meta) or survey
    return FaceFinder(cfg, geometry)


@functools.lru_cache(maxsize=8)
def _cached_detector(path: str):
    return CnnDetector(path) if path == "cnn" else HogDetector(path)


# ----------------------------------------------------------------------------- the stage


def read_session_meta(session_dir: Path) -> dict:
    path = Path(session_dir) / "session.yaml"
    if not path.is_file():
        return {}
    try:
        meta = yaml.safe_load(path.read_text()) or {}
    except yaml.YAMLError as err:
        raise DataError(f"{path}: not valid YAML ({err}). Fix or delete it.") from err
    return meta if isinstance(meta, dict) else {}


def find_videos(workspace: Workspace) -> list[tuple[str, str, str, Path]]:
    """(movie, session, camera, path) for each data/raw/<movie>/<session>/<camera>.<ext> video."""
    found = []
    if not workspace.raw.is_dir():
        return found
    for path in sorted(workspace.raw.glob("*/*/*")):
        if path.suffix.lower() in VIDEO_EXTS and not path.name.startswith(".") and path.is_file():
            found.append((path.parent.parent.name, path.parent.name, path.stem, path))
    return found


def survey_path(workspace: Workspace, movie: str, session: str, camera: str) -> Path:
    return workspace.stage_output("survey", movie, session, camera, "geometry", suffix=".yaml")


def plan_survey(cfg, workspace: Workspace) -> list[Unit]:
    """One unit per recording (movie, session, camera)."""
    return [Unit(stage="survey", key=(movie, session, camera), inputs=(path,),
                 outputs=(("geometry", survey_path(workspace, movie, session, camera)),),
                 payload=(("video", str(path)),))
            for movie, session, camera, path in find_videos(workspace)]


def compute_survey(unit: Unit, cfg, tmp_outputs: dict[str, Path]) -> None:
    limit_worker_threads()
    geometry = survey_video(Path(unit.get("video")), cfg)
    tmp_outputs["geometry"].write_text(yaml.safe_dump(geometry.to_dict(), sort_keys=False))


def read_geometry(path: Path) -> Geometry:
    try:
        return Geometry.from_dict(yaml.safe_load(Path(path).read_text()) or {})
    except (OSError, yaml.YAMLError) as err:
        raise DataError(f"{path}: cannot read the survey ({err}). Rerun `audience survey --force`.") from err


def plan_detect(cfg, workspace: Workspace) -> list[Unit]:
    """One unit per chunk; inputs: the recording and its survey (the rows to search)."""
    units = []
    for movie, session, camera, path in find_videos(workspace):
        survey = survey_path(workspace, movie, session, camera)
        try:
            windows = chunk_windows(probe_video(path).duration_s, cfg.sources.chunk_s)
        except DataError:   # unreadable: its survey unit fails naming why, and blocks this one chunk
            windows = chunk_windows(cfg.sources.chunk_s, cfg.sources.chunk_s)
        for start_s, end_s in windows:
            chunk = chunk_name(start_s)
            units.append(Unit(
                stage="detect", key=(movie, session, camera, chunk), inputs=(path, survey),
                outputs=(("detections", workspace.stage_output("detect", movie, session, camera, chunk)),),
                payload=(("start_s", start_s), ("end_s", end_s), ("video", str(path)), ("survey", str(survey)))))
    return units


def detect_chunk(video: Path, start_s: float, end_s: float, cfg, session_meta: dict | None = None,
                 frames=None, survey: Geometry | None = None, on_frame=None) -> Detections:
    """Detect faces in every sampled frame of [start_s, end_s) of one video.

    One frame row per sampling instant (gaps included, frame_ok False), so a
    corrupt or truncated recording never yields a shorter or shifted chunk.
    `frames` may be given (e.g. a live source) instead of decoding `video`.
    Geometry: session.yaml's seat map or bands, else `survey`, else a survey of the chunk's first frame.
    `on_frame(slot, image, boxes, band)` is called for every decoded frame with its detections, so a later
    stage can use the same decoded frame (the landmarks stage does: one decode per chunk).
    """
    info = probe_video(video)
    every_s = cfg.sources.sample_every_s
    finder = make_finder(cfg, info.height_px, session_meta, info.width_px, survey)
    exp_index, exp_time_s = expected_frame_times(info, start_s, end_s, every_s)
    frames = frames if frames is not None else iter_frames(video, start_s, end_s, every_s, info=info)
    return _detect_frames(frames, finder, exp_index, exp_time_s, start_s, every_s, info.fps,
                          attrs=_attrs(info, start_s, end_s, every_s, finder), on_frame=on_frame)


def _attrs(info, start_s, end_s, every_s, finder) -> dict:
    return {"chunk_start_s": float(start_s), "chunk_end_s": float(end_s), "fps": float(info.fps),
            "width_px": int(info.width_px), "height_px": int(info.height_px),
            "sample_every_s": float(every_s), "detector_front": Path(finder.front_name).name,
            "detector_back": Path(finder.back_name).name}


def _detect_frames(frames, finder, exp_index, exp_time_s, start_s, every_s, fps, attrs, on_frame=None) -> Detections:
    frame_index = exp_index.astype(np.int64).copy()
    frame_time_s = exp_time_s.astype(np.float64).copy()
    frame_ok = np.zeros(len(exp_index), bool)
    det_frame, det_box, det_score, det_band = [], [], [], []
    for frame in frames:
        slot = slot_of(frame.time_s, start_s, every_s, fps)
        if not 0 <= slot < len(frame_index) or frame_ok[slot]:
            continue
        frame_index[slot], frame_time_s[slot] = frame.index, frame.time_s
        if frame.image is None:
            continue
        boxes, scores, band = finder(frame.image, frame.time_s)
        if on_frame is not None:
            on_frame(slot, frame.image, boxes, band)
        frame_ok[slot] = True
        det_frame.append(np.full(len(scores), slot, np.int32))
        det_box.append(boxes)
        det_score.append(scores)
        det_band.append(band)
    return Detections(
        frame_index=frame_index, frame_time_s=frame_time_s, frame_ok=frame_ok,
        det_frame=np.concatenate(det_frame) if det_frame else np.zeros(0, np.int32),
        det_box_px=np.concatenate(det_box) if det_box else np.zeros((0, 4), np.float32),
        det_score=np.concatenate(det_score) if det_score else np.zeros(0, np.float32),
        det_band=np.concatenate(det_band) if det_band else np.zeros(0, np.int8), attrs=attrs)


def detect_unit(unit: Unit, cfg, on_frame=None) -> Detections:
    """The detections of one detect unit (chunk), not yet written."""
    limit_worker_threads()
    movie, session, camera, _ = unit.key
    video = Path(unit.get("video"))
    meta = read_session_meta(video.parent)
    survey = read_geometry(Path(unit.get("survey"))) if unit.get("survey") else None
    dets = detect_chunk(video, float(unit.get("start_s")), float(unit.get("end_s")), cfg, meta, survey=survey,
                        on_frame=on_frame)
    dets.attrs.update(movie=movie, session=session, camera=camera)
    return dets


def compute_detect(unit: Unit, cfg, tmp_outputs: dict[str, Path]) -> None:
    write_detections(tmp_outputs["detections"], detect_unit(unit, cfg))


SURVEY = Stage(name="survey", help="find the seat rows and face sizes in a few frames of each recording",
               version="1", sections=("detect",), plan=plan_survey, compute=compute_survey)
DETECT = Stage(name="detect", help="find faces (front/back HOG MMOD detectors) in sampled frames",
               version="1", sections=("sources", "detect"), plan=plan_detect, compute=compute_detect)

__all__ = ["DETECT", "SURVEY", "FaceFinder", "detect_chunk", "merge_detections", "box_iou", "load_detector",
           "HogDetector", "CnnDetector", "plan_detect", "compute_detect", "find_videos", "read_session_meta",
           "strip_image", "strip_to_frame", "detect_strip", "make_finder", "survey_geometry", "survey_video",
           "survey_path", "read_geometry", "BAND_FRONT", "BAND_BACK", "Strip"]
