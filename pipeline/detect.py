"""Face detection: one HOG MMOD detector for the back rows, one for the front rows.

Each detector runs on its own horizontal *band* of the frame (row bands come
from the session's ``session.yaml`` or, failing that, from the ``detect``
config as fractions of the frame height). A band is cropped, resized by its
scale (the back band is upsampled so ~15×25 px faces clear HOG's ~400 px²
floor) and optionally cut into overlapping horizontal strips, which caps the
HOG pyramid depth to the face sizes that can occur there. Detections from all
bands are mapped back to full-frame pixels and merged by non-maximum
suppression, so a face on the band boundary is reported once.

Box convention (what the shipped detectors were trained on and what
``det_box_px`` holds): the *dlib-frontal-like square box*: a square whose
side is 1.1 × the width of the 68-landmark cloud, centred horizontally on the
cloud and 0.1 × that width above the cloud's vertical centre
(``pipeline.detector_training.face_box_from_landmarks``). On dlib's example
photos this matches the stock frontal detector's boxes (side 1.11 ± 0.09
widths, centre 0.10 ± 0.05 widths above the cloud centre), so the stock
68-point shape predictor fits inside them. On the synthetic theatre the side
is about 1.2 × the truth ``face_box`` width.

Where to look: when session.yaml lists the seat ``rows`` (y, face size, seat
x positions), each row is one strip (default ``detect.use_known_rows``);
otherwise both bands are tiled and, with ``detect.track_rows``, a full scan
every ``detect.rescan_s`` finds the rows, and the frames in between search
only around them.

Detector choices (``detect.front_detector`` / ``detect.back_detector``):
``"default"`` (the shipped ``pipeline/assets/detector_{front,back}.svm``), a
path to any ``.svm`` made by ``train-detector``, ``"dlib_frontal"`` (dlib's
stock frontal HOG detector) or ``"cnn"`` (dlib's CNN MMOD model from
``face_recognition_models``; ~1.4 s per 640×480 frame on this CPU).
"""
from __future__ import annotations

import dataclasses
import functools
import importlib.util
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import yaml

from pipeline.runner import Stage, Unit
from pipeline.sources import (VIDEO_EXTS, chunk_name, chunk_windows, expected_frame_times, iter_frames,
                              limit_worker_threads, probe_video, slot_of)
from pipeline.store import DataError, Detections, Workspace, write_detections

ASSETS = Path(__file__).resolve().parent / "assets"
BAND_FRONT, BAND_BACK = 0, 1
BUILTIN_DETECTORS = ("default", "dlib_frontal", "cnn")
BOX_SIDE_PER_FACE_W = 1.2   # our square box side / jaw width (see pipeline.detector_training)


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


# ----------------------------------------------------------------------------- bands


@dataclass(frozen=True)
class Band:
    """A horizontal region of the frame searched by one detector.

    top_px/bottom_px: rows of the full frame (bottom exclusive).
    face_top_px/face_bottom_px: expected face-box side at the band's top and
    bottom (perspective: linear in between), used to choose strip scales.
    """
    band_id: int
    top_px: int
    bottom_px: int
    face_top_px: float
    face_bottom_px: float

    def face_px_at(self, y_px: float) -> float:
        frac = (y_px - self.top_px) / max(1.0, self.bottom_px - self.top_px)
        return self.face_top_px + frac * (self.face_bottom_px - self.face_top_px)


@dataclass(frozen=True)
class Strip:
    """A slice [top_px, bottom_px) × [left_px, right_px) resized by `scale` before detection.

    right_px = 0 means the full frame width.
    """
    band_id: int
    top_px: int
    bottom_px: int
    scale: float
    left_px: int = 0
    right_px: int = 0


def band_strips(band: Band, target_face_px: float, strip_faces: float, step_faces: float) -> list[Strip]:
    """Cut a band into overlapping strips, each scaled so its faces are about target_face_px.

    A strip is strip_faces expected faces tall and the next starts step_faces
    later, so every face (at most strip_faces - step_faces faces tall) lies
    whole inside one strip. A short strip caps the HOG pyramid: faces much
    bigger than expected are not searched for, which is where the speed comes from.
    """
    strips, y = [], float(band.top_px)
    while True:
        face = band.face_px_at(y)
        bottom = min(band.bottom_px, y + strip_faces * face)
        strips.append(Strip(band.band_id, int(np.floor(y)), int(np.ceil(bottom)), target_face_px / face))
        if bottom >= band.bottom_px:
            return strips
        y += step_faces * face


BAND_KEYS = {"front": ("front_rows_band_px", "front_band_px"), "back": ("back_rows_band_px", "back_band_px")}


def bands_for(cfg, height_px: int, session_meta: dict | None = None) -> tuple[Band, Band]:
    """(front band, back band) from session.yaml's row bands, else from detect config.

    session.yaml may hold ``front_rows_band_px``/``back_rows_band_px: [top,
    bottom]`` (full-frame rows of the face boxes; ``*_band_px`` also accepted)
    and ``front_face_px``/``back_face_px: [side at top, side at bottom]``; a
    margin of ``detect.band_margin_faces`` expected faces is added above and
    below each band.
    """
    dc = cfg.detect
    meta = session_meta or {}
    bands = []
    for band_id, name, frac, faces in ((BAND_FRONT, "front", dc.front_band_frac, dc.front_face_px),
                                       (BAND_BACK, "back", dc.back_band_frac, dc.back_face_px)):
        given = next((meta[k] for k in BAND_KEYS[name] if meta.get(k) is not None), None)
        top, bottom = given or (frac[0] * height_px, frac[1] * height_px)
        face_top, face_bottom = (float(v) for v in (meta.get(f"{name}_face_px") or faces))
        top = int(max(0, np.floor(float(top) - dc.band_margin_faces * face_top)))
        bottom = int(min(height_px, np.ceil(float(bottom) + dc.band_margin_faces * face_bottom)))
        if bottom <= top or min(face_top, face_bottom) <= 0:
            raise DataError(f"row band '{name}' = [{top}, {bottom}) px with faces {face_top}..{face_bottom} px "
                            f"is empty for a {height_px} px tall frame. Fix session.yaml or "
                            f"detect.{name}_band_frac / detect.{name}_face_px.")
        bands.append(Band(band_id, top, bottom, face_top, face_bottom))
    return bands[0], bands[1]


def strips_from_rows(rows: list[dict], back_band_px, cfg, height_px: int, width_px: int = 0) -> list[Strip]:
    """One strip per known seat row (session.yaml ``rows``: y_px, face_w_px, face_h_px).

    The strip spans the row's face height plus detect.row_margin_faces face
    heights above and below; it is scaled so a face box (side ≈ 1.1 × face
    width, see the module docstring) of detect.row_min_face_frac × the row's
    face size becomes detect.target_face_px. Rows whose centre lies inside
    back_band_px [top, bottom] are searched by the back detector.
    """
    dc = cfg.detect
    strips = []
    for row in rows:
        y, face_w, face_h = float(row["y_px"]), float(row["face_w_px"]), float(row["face_h_px"])
        half = (0.5 + dc.row_margin_faces) * face_h
        back = back_band_px is not None and float(back_band_px[0]) - 1 <= y <= float(back_band_px[1]) + 1
        left, right = 0, 0
        seats_x = row.get("seats_x_px")
        if seats_x:
            reach = (0.5 + dc.row_margin_faces) * BOX_SIDE_PER_FACE_W * face_w + 8
            left = int(max(0, np.floor(min(seats_x) - reach)))
            right = int(np.ceil(max(seats_x) + reach))
            right = min(right, width_px) if width_px else right
        strips.append(Strip(BAND_BACK if back else BAND_FRONT, int(max(0, np.floor(y - half))),
                            int(min(height_px, np.ceil(y + half))),
                            dc.target_face_px / (dc.row_min_face_frac * BOX_SIDE_PER_FACE_W * face_w), left, right))
    return sorted(strips, key=lambda s: s.top_px)


def known_row_strips(cfg, height_px: int, session_meta: dict | None, width_px: int = 0) -> list[Strip] | None:
    """Row strips from session.yaml when it lists the seat rows (and detect.use_known_rows), else None."""
    meta = session_meta or {}
    rows = meta.get("rows")
    if not cfg.detect.use_known_rows or not isinstance(rows, list) or not rows:
        return None
    try:
        back = next((meta[k] for k in BAND_KEYS["back"] if meta.get(k) is not None), None)
        return strips_from_rows(rows, back, cfg, height_px, width_px)
    except (KeyError, TypeError, ValueError) as err:
        raise DataError(f"session.yaml 'rows' must be a list of {{y_px, face_w_px, face_h_px}} mappings "
                        f"({err}). Fix session.yaml or set detect.use_known_rows=false.") from err


def frame_strips(cfg, bands: tuple[Band, ...]) -> list[Strip]:
    dc = cfg.detect
    return [s for band in bands for s in band_strips(band, dc.target_face_px, dc.strip_faces, dc.step_faces)]


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


def rows_from_boxes(boxes: np.ndarray, band_ids: np.ndarray, cfg) -> list[Strip]:
    """Row strips around detected faces: cluster box centres by y, one scaled strip per row.

    boxes (D, 4) px. A row's strip spans its boxes plus detect.row_margin_faces
    faces above and below, scaled so faces down to detect.row_min_face_frac of
    the row's median size still fill the HOG window.
    """
    dc = cfg.detect
    strips = []
    for band_id in np.unique(band_ids):
        b = boxes[band_ids == band_id]
        side = b[:, 2] - b[:, 0]
        cy = 0.5 * (b[:, 1] + b[:, 3])
        order = np.argsort(cy)
        groups, current = [], [order[0]]
        for prev, i in zip(order[:-1], order[1:]):
            if cy[i] - cy[prev] > dc.row_gap_faces * np.median(side[current]):
                groups.append(current)
                current = []
            current.append(i)
        groups.append(current)
        for g in groups:
            face = float(np.median(side[g]))
            top = float(b[g, 1].min()) - dc.row_margin_faces * face
            bottom = float(b[g, 3].max()) + dc.row_margin_faces * face
            left = int(max(0, np.floor(float(b[g, 0].min()) - 2 * face)))
            right = int(np.ceil(float(b[g, 2].max()) + 2 * face))
            strips.append(Strip(int(band_id), int(max(0, np.floor(top))), int(np.ceil(bottom)),
                                dc.target_face_px / (dc.row_min_face_frac * face), left, right))
    return strips


def merge_rows(old: list[Strip], new: list[Strip]) -> list[Strip]:
    """Union of row strips: a new row replaces old ones it overlaps (widened to cover both), others stay."""
    def overlaps(a: Strip, b: Strip) -> bool:
        return a.band_id == b.band_id and a.top_px < b.bottom_px and b.top_px < a.bottom_px

    merged = []
    for n in new:
        for o in (o for o in old if overlaps(n, o)):
            n = dataclasses.replace(n, left_px=min(n.left_px, o.left_px), right_px=max(n.right_px, o.right_px))
        merged.append(n)
    kept = [o for o in old if not any(overlaps(n, o) for n in new)]
    return sorted(kept + merged, key=lambda s: s.top_px)


class FaceFinder:
    """Both detectors with their bands and strips; call on a grayscale frame.

    With detect.track_rows, a full scan of both bands (every detect.rescan_s
    seconds) finds the rows where faces are; frames in between scan only
    strips around those rows, which is ~10× cheaper on a theatre whose rows
    are far apart. Rows seen earlier stay searched even if a later full scan
    misses them.
    """

    def __init__(self, cfg, front: Band, back: Band, known_rows: list[Strip] | None = None):
        dc = cfg.detect
        self.cfg = cfg
        self.known_rows = known_rows
        self.front_name = resolve_detector_path(dc.front_detector, "front")
        self.back_name = resolve_detector_path(dc.back_detector, "back")
        self.detectors = {BAND_FRONT: _cached_detector(self.front_name),
                          BAND_BACK: _cached_detector(self.back_name)}
        self.bands = (front, back)
        self.strips = frame_strips(cfg, self.bands)
        self.rows: list[Strip] = []
        self.last_full_s = -np.inf
        self.full_scans = 0

    def _run(self, gray: np.ndarray, strips: list[Strip]):
        boxes, scores, band = [], [np.zeros(0, np.float32)], [np.zeros(0, np.int8)]
        boxes.append(np.zeros((0, 4), np.float32))
        for strip in strips:
            b, s = detect_strip(self.detectors[strip.band_id], gray, strip, self.cfg.detect.threshold)
            boxes.append(b)
            scores.append(s)
            band.append(np.full(len(s), strip.band_id, np.int8))
        boxes, scores, band = np.concatenate(boxes), np.concatenate(scores), np.concatenate(band)
        keep = merge_detections(boxes, scores, self.cfg.detect.merge_iou)
        keep = keep[np.lexsort((boxes[keep, 0], boxes[keep, 1]))] if len(keep) else keep
        return boxes[keep], scores[keep], band[keep]

    def __call__(self, gray: np.ndarray, time_s: float | None = None) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """gray (H, W) uint8 → boxes (D, 4) float32 px, scores (D,) float32, band (D,) int8."""
        dc = self.cfg.detect
        if self.known_rows:
            return self._run(gray, self.known_rows)
        full = (not dc.track_rows or not self.rows or time_s is None
                or time_s - self.last_full_s >= dc.rescan_s - 1e-6)
        if not full:
            return self._run(gray, self.rows)
        boxes, scores, band = self._run(gray, self.strips)
        self.full_scans += 1
        if time_s is not None:
            self.last_full_s = time_s
        if dc.track_rows and len(boxes):
            self.rows = merge_rows(self.rows, rows_from_boxes(boxes, band, self.cfg))
        return boxes, scores, band


def make_finder(cfg, height_px: int, session_meta: dict | None = None) -> FaceFinder:
    """A FaceFinder for frames `height_px` tall: known rows from session.yaml, else bands + row tracking."""
    front, back = bands_for(cfg, height_px, session_meta)
    return FaceFinder(cfg, front, back, known_row_strips(cfg, height_px, session_meta))


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


def plan_detect(cfg, workspace: Workspace) -> list[Unit]:
    units = []
    for movie, session, camera, path in find_videos(workspace):
        info = probe_video(path)
        for start_s, end_s in chunk_windows(info.duration_s, cfg.sources.chunk_s):
            chunk = chunk_name(start_s)
            units.append(Unit(
                stage="detect", key=(movie, session, camera, chunk), inputs=(path,),
                outputs=(("detections", workspace.stage_output("detect", movie, session, camera, chunk)),),
                payload=(("start_s", start_s), ("end_s", end_s), ("video", str(path)))))
    return units


def detect_chunk(video: Path, start_s: float, end_s: float, cfg, session_meta: dict | None = None,
                 frames=None) -> Detections:
    """Detect faces in every sampled frame of [start_s, end_s) of one video.

    One frame row per sampling instant (gaps included, frame_ok False), so a
    corrupt or truncated recording never yields a shorter or shifted chunk.
    `frames` may be given (e.g. a live source) instead of decoding `video`.
    """
    info = probe_video(video)
    every_s = cfg.sources.sample_every_s
    finder = make_finder(cfg, info.height_px, session_meta)
    exp_index, exp_time_s = expected_frame_times(info, start_s, end_s, every_s)
    frames = frames if frames is not None else iter_frames(video, start_s, end_s, every_s, info=info)
    return _detect_frames(frames, finder, exp_index, exp_time_s, start_s, every_s, info.fps,
                          attrs=_attrs(info, start_s, end_s, every_s, finder))


def _attrs(info, start_s, end_s, every_s, finder) -> dict:
    return {"chunk_start_s": float(start_s), "chunk_end_s": float(end_s), "fps": float(info.fps),
            "width_px": int(info.width_px), "height_px": int(info.height_px),
            "sample_every_s": float(every_s), "detector_front": Path(finder.front_name).name,
            "detector_back": Path(finder.back_name).name}


def _detect_frames(frames, finder, exp_index, exp_time_s, start_s, every_s, fps, attrs) -> Detections:
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


def compute_detect(unit: Unit, cfg, tmp_outputs: dict[str, Path]) -> None:
    limit_worker_threads()
    movie, session, camera, _ = unit.key
    video = Path(unit.get("video"))
    meta = read_session_meta(video.parent)
    dets = detect_chunk(video, float(unit.get("start_s")), float(unit.get("end_s")), cfg, meta)
    dets.attrs.update(movie=movie, session=session, camera=camera)
    write_detections(tmp_outputs["detections"], dets)


DETECT = Stage(name="detect", help="find faces (front/back HOG MMOD detectors) in sampled frames",
               version="1", sections=("sources", "detect"), plan=plan_detect, compute=compute_detect)

__all__ = ["DETECT", "FaceFinder", "Band", "bands_for", "detect_chunk", "merge_detections",
           "box_iou", "load_detector", "HogDetector", "CnnDetector", "plan_detect", "compute_detect",
           "find_videos", "read_session_meta", "BAND_FRONT", "BAND_BACK", "Strip", "band_strips", "frame_strips",
           "strip_image", "strip_to_frame", "detect_strip", "rows_from_boxes", "merge_rows", "make_finder",
           "strips_from_rows", "known_row_strips"]
