"""Stage 'landmarks': 68 iBUG landmarks per detected face with dlib's ERT.

For each detection of a detect chunk the frame is decoded again (same
sampling as detect), the detector box is mapped to the box convention the
ERT was trained with, the ERT runs inside that box and its points come out
in full-frame pixel coordinates.

Engines (``landmarks.engine``)
* ``numpy`` (default): the same stock ERT, evaluated by this module for all
  faces of a frame at once (``read_shape_predictor`` turns dlib's .dat into
  arrays, ``ert_predict`` runs the cascade). Feature pixels are read from the
  frame itself at sub-pixel positions (bicubic, what dlib sees on a
  bicubic-upsampled crop), so no crop is cut or upsampled and the points are
  not rounded to a crop's pixel grid. The passes before the last (refine
  passes), whose only job is a better box, run just the first
  ``landmarks.coarse_levels`` of the 15 cascade levels, and each level's
  leaf table is summed in a rank-``landmarks.leaf_rank`` basis. On the
  full-size theatre: ~2.5–2.9 CPU ms per face (refine_passes 2) against
  8.8–10.9 for the dlib engine with one refine pass, with equal or lower
  landmark error (bench/bench_pipeline_speed.py, bench/bench_vision.py).
  Parsing the 100 MB stock model takes a few seconds; the arrays are kept in
  ~/.cache/audience_fvae/ert (or $AUDIENCE_CACHE_DIR) for later processes.
* ``dlib``: dlib's own shape_predictor, one face at a time, on a crop
  upsampled so the face is about ``target_face_px`` wide (``target_face_px``,
  ``max_upsample``, ``crop_margin`` apply only here).

Box conventions
* detector box (`det_box_px`): whatever the detect stage writes, [left, top,
  right, bottom] px. Three numbers (box_scale, box_dx, box_dy) map it to an
  *ERT box*: side = box_scale × detector width, centre shifted by
  (box_dx × width, box_dy × height). They come from the detector that found
  the face (front or back): its calibration file `<detector>.calib.json`,
  fitted on real faces with reference landmarks (`fit_box_mapping`, then a
  small grid on the landmark error: pipeline/detector_training.py), unless
  `landmarks.box_scale/box_dx/box_dy` set them for every detector.
* ERT box: the box dlib's frontal HOG detector gives for a face, which the stock
  68-point model was trained with. From landmarks it is a square of side
  ERT_BOX_SIDE × rms centred at the mean of the 51 inner points shifted by
  (ERT_BOX_DX, ERT_BOX_DY) × rms, where rms is the root-mean-square distance of
  the 51 inner points (17–67) to their mean. The constants were measured on
  the 43 faces of dlib's examples/faces (boxes from dlib's detector, points from
  the stock model). `refine_passes` refits with this box derived from the
  previous fit, which makes the result nearly independent of the detector's
  box convention.
* Upright: with `upright` each refit runs in the face's own frame, the box
  turned by the roll of the eye line of the fit before it, so the cascade sees
  a tilted head upright (it was trained on mostly upright faces).
* Track box: the final pass of a face starts from the median of those refined
  boxes over its track (the same seated face in the chunk's frames within
  ±`track_window_s`; pipeline/face_tracks.py), so one frame's bad start does
  not make a slipped fit (`ChunkFitter`).
* Mirror choice: with `mirror_choice` the final pass fits each face with both
  `model_path` and `start_model_path`, each also in the mirrored frame, and
  keeps the mean of the two fits of the model whose two fits agree better
  (`final_fit`): stock fits precisely where it holds, theatre where stock slips.
"""
from __future__ import annotations

import dataclasses
import functools
import importlib.util
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from pipeline.runner import Stage, Unit
from pipeline.store import DataError, Workspace

N_POINTS = 68
INNER = np.arange(17, 68)        # brows, nose, eyes, mouth: the points the box is derived from
ERT_BOX_SIDE = 3.574             # ERT box side / rms spread of the inner points
ERT_BOX_DX = 0.045               # ERT box centre - inner mean, in rms units (x)
ERT_BOX_DY = 0.120               # same, y (the box sits a little lower than the inner points)
MIN_BOX_PX = 2.0                 # boxes narrower than this are not fitted
MIRROR_68 = np.array(list(range(16, -1, -1)) + list(range(26, 16, -1)) + [27, 28, 29, 30]   # point k of a face ↔
                     + [35, 34, 33, 32, 31] + [45, 44, 43, 42, 47, 46] + [39, 38, 37, 36, 41, 40]  # this point of
                     + [54, 53, 52, 51, 50, 49, 48] + [59, 58, 57, 56, 55] + [64, 63, 62, 61, 60] + [67, 66, 65])  # its mirror image
STOCK_MODEL_FILE = "shape_predictor_68_face_landmarks.dat"
THEATRE_MODEL = Path(__file__).resolve().parent / "assets" / "theatre_landmarks_68.dat"   # scripts/train_landmarker.py


# ----------------------------------------------------------------------------- model


def stock_model_path() -> Path:
    """Path of the stock iBUG 68-point ERT shipped by `face_recognition_models`.

    The package's __init__ imports pkg_resources, so it is located, never imported.
    Licence: the model was trained on iBUG 300-W: not for commercial use.
    """
    spec = importlib.util.find_spec("face_recognition_models")
    if spec is None or spec.origin is None:
        raise DataError("the stock landmark model needs the 'face_recognition_models' package: "
                        "pip install face_recognition_models, or set landmarks.model_path to a .dat file.")
    path = Path(spec.origin).parent / "models" / STOCK_MODEL_FILE
    if not path.is_file():
        raise DataError(f"{path} is missing from face_recognition_models; reinstall the package "
                        f"or set landmarks.model_path.")
    return path


def model_path_of(model_path: str) -> Path:
    """The configured model file: "theatre" (shipped, trained for theatre-sized faces), "stock" or "" (dlib's
    iBUG model), else a .dat path (a relative path is taken from the repository root)."""
    if model_path in ("", "stock"):
        return stock_model_path()
    if model_path == "theatre":
        if not THEATRE_MODEL.is_file():
            raise DataError(f"the shipped theatre landmark model {THEATRE_MODEL} is missing: reinstall the package, "
                            f"rebuild it with scripts/train_landmarker.py, or set landmarks.model_path to \"stock\".")
        return THEATRE_MODEL
    path = Path(model_path)
    if not path.is_absolute() and not path.exists():
        path = Path(__file__).resolve().parents[1] / path
    if not path.is_file():
        raise DataError(f"landmark model not found: {model_path}. Set landmarks.model_path to an existing "
                        f"dlib shape predictor .dat file, or to \"\" for the stock model.")
    return path


def start_model_of(cfg) -> str:
    """The landmark model of the passes before the last (LandmarksConfig): start_model_path where there are
    refine passes and it is set, else model_path."""
    if cfg.refine_passes and cfg.start_model_path is not None:
        return cfg.start_model_path
    return cfg.model_path


def model_key(model_path: str) -> str:
    """The name a detector calibration files a landmark model under: "stock", "theatre" or the .dat's file name."""
    if model_path in ("", "stock", "theatre"):
        return model_path or "stock"
    return Path(model_path).name


@functools.lru_cache(maxsize=4)
def load_predictor(model_path: str = ""):
    """A dlib.shape_predictor (cached per process)."""
    import dlib

    path = model_path_of(model_path)
    try:
        return dlib.shape_predictor(str(path))
    except RuntimeError as err:
        raise DataError(f"{path}: not a dlib shape predictor ({err}). Set landmarks.model_path to a "
                        f"68-point .dat file.") from err


# ----------------------------------------------------------------------------- boxes


def ert_boxes_from_detections(det_box_px: np.ndarray, box_scale: float = 1.0, box_dx: float = 0.0,
                              box_dy: float = 0.0) -> np.ndarray:
    """Detector boxes (D, 4) [l, t, r, b] → square ERT boxes (D, 4) [l, t, r, b], px."""
    box = np.asarray(det_box_px, dtype=np.float64).reshape(-1, 4)
    w, h = box[:, 2] - box[:, 0], box[:, 3] - box[:, 1]
    cx = (box[:, 0] + box[:, 2]) / 2 + box_dx * w
    cy = (box[:, 1] + box[:, 3]) / 2 + box_dy * h
    half = box_scale * w / 2
    return np.stack([cx - half, cy - half, cx + half, cy + half], axis=1)


def ert_boxes_from_landmarks(landmarks_px: np.ndarray) -> np.ndarray:
    """68 points (D, 68, 2) → the box (D, 4) the stock ERT would have been given for them."""
    pts = np.asarray(landmarks_px, dtype=np.float64).reshape(-1, N_POINTS, 2)[:, INNER]
    centre = pts.mean(axis=1)
    rms = np.sqrt(((pts - centre[:, None]) ** 2).sum(axis=2).mean(axis=1))
    cx = centre[:, 0] + ERT_BOX_DX * rms
    cy = centre[:, 1] + ERT_BOX_DY * rms
    half = ERT_BOX_SIDE * rms / 2
    return np.stack([cx - half, cy - half, cx + half, cy + half], axis=1)


def fit_box_mapping(det_box_px: np.ndarray, landmarks_px: np.ndarray) -> dict[str, float]:
    """Learn (box_scale, box_dx, box_dy) mapping detector boxes (D, 4) to the ERT boxes of
    ground-truth landmarks (D, 68, 2) (medians: robust to a few bad detections)."""
    det = np.asarray(det_box_px, dtype=np.float64).reshape(-1, 4)
    ideal = ert_boxes_from_landmarks(landmarks_px)
    ok = np.isfinite(ideal).all(axis=1) & np.isfinite(det).all(axis=1)
    if ok.sum() < 3:
        raise DataError(f"fit_box_mapping needs at least 3 detections with ground truth, got {int(ok.sum())}.")
    det, ideal = det[ok], ideal[ok]
    w, h = det[:, 2] - det[:, 0], det[:, 3] - det[:, 1]
    scale = np.median((ideal[:, 2] - ideal[:, 0]) / w)
    dx = np.median(((ideal[:, 0] + ideal[:, 2]) - (det[:, 0] + det[:, 2])) / 2 / w)
    dy = np.median(((ideal[:, 1] + ideal[:, 3]) - (det[:, 1] + det[:, 3])) / 2 / h)
    return {"box_scale": float(scale), "box_dx": float(dx), "box_dy": float(dy)}


# ----------------------------------------------------------------------------- fitting


def _crop_upsampled(image: np.ndarray, box: np.ndarray, target_px: float, max_up: float,
                    margin: float) -> tuple[np.ndarray, float, float, float]:
    """Crop around `box` (4,) with margin, upsample; returns (crop, factor, x0, y0)."""
    import cv2

    height, width = image.shape[:2]
    side = box[2] - box[0]
    x0 = int(max(0, np.floor(box[0] - margin * side)))
    y0 = int(max(0, np.floor(box[1] - margin * side)))
    x1 = int(min(width, np.ceil(box[2] + margin * side)))
    y1 = int(min(height, np.ceil(box[3] + margin * side)))
    crop = image[y0:y1, x0:x1]
    factor = float(np.clip(target_px / side, 1.0, max_up))
    if factor > 1.0:
        size = (max(1, int(round(crop.shape[1] * factor))), max(1, int(round(crop.shape[0] * factor))))
        factor = size[0] / crop.shape[1]
        crop = cv2.resize(crop, size, interpolation=cv2.INTER_CUBIC)
    return np.ascontiguousarray(crop), factor, float(x0), float(y0)


def fit_one(predictor, image: np.ndarray, ert_box_px: np.ndarray, target_face_px: float = 96.0,
            max_upsample: float = 8.0, crop_margin: float = 0.6) -> tuple[np.ndarray, float]:
    """Fit 68 points inside one ERT box (4,) of a uint8 image (H, W) → ((68, 2) px, upsample factor).

    cv2.resize samples destination pixel centres, so a crop point p maps back to
    (p + 0.5) / factor - 0.5 + origin (matters at 8× upsampling).
    """
    import dlib

    box = np.asarray(ert_box_px, dtype=np.float64)
    if not np.isfinite(box).all() or box[2] - box[0] < MIN_BOX_PX:
        return np.full((N_POINTS, 2), np.nan, np.float32), np.nan
    crop, factor, x0, y0 = _crop_upsampled(image, box, target_face_px, max_upsample, crop_margin)
    l, t, r, b = ((box - [x0, y0, x0, y0]) + 0.5) * factor - 0.5
    rect = dlib.rectangle(int(round(l)), int(round(t)), int(round(r)), int(round(b)))
    shape = predictor(crop, rect)
    pts = np.array([[p.x, p.y] for p in shape.parts()], dtype=np.float64)
    pts = (pts + 0.5) / factor - 0.5 + [x0, y0]
    return pts.astype(np.float32), factor


def box_mapping(cfg, detector: str | None = None) -> tuple[float, float, float]:
    """(box_scale, box_dx, box_dy) for boxes of `detector` (a resolved detector path or builtin name):
    the config's numbers where set, else the detector's calibration file (its entry for the first pass's
    landmark model, `start_model_of`, where it has one: the best start box depends on the model), else (1, 0, 0)."""
    from pipeline.detector_training import read_calibration

    calib = (read_calibration(detector) if detector else None) or {}
    calib = calib.get("by_model", {}).get(model_key(start_model_of(cfg)), calib)
    return tuple(float(getattr(cfg, key) if getattr(cfg, key) is not None else calib.get(key, default))
                 for key, default in (("box_scale", 1.0), ("box_dx", 0.0), ("box_dy", 0.0)))


def band_mappings(cfg) -> np.ndarray:
    """(2, 3) box mapping per detect band (0 front, 1 back) for a ProjectConfig."""
    from pipeline.detect import resolve_detector_path

    return np.array([box_mapping(cfg.landmarks, resolve_detector_path(name, band)) for name, band in
                     ((cfg.detect.front_detector, "front"), (cfg.detect.back_detector, "back"))])


def calibration_files(cfg) -> list[Path]:
    """The detectors' calibration files in use (inputs of the landmarks stage: a new calibration refits)."""
    from pipeline.detect import resolve_detector_path
    from pipeline.detector_training import calibration_path

    paths = [calibration_path(resolve_detector_path(name, band)) for name, band in
             ((cfg.detect.front_detector, "front"), (cfg.detect.back_detector, "back"))]
    return sorted({p for p in paths if p.is_file()})


def fit_faces(predictor, image: np.ndarray, det_box_px: np.ndarray, cfg,
              mapping: np.ndarray | None = None, start_predictor=None) -> dict[str, np.ndarray]:
    """Fit every detector box (D, 4) of one frame (cfg: LandmarksConfig), each from its own box alone.

    mapping: (D, 3) box_scale, box_dx, box_dy per box (default: the config's numbers, 1/0/0 where unset).
    start_predictor: the refine passes' model (default: predictor); with `cfg.mirror_choice` also the final
    pass's rival model (`final_fit`).
    Returns landmarks_px (D, 68, 2), ert_box_px (D, 4), ert_roll_deg (D,), upsample (D,), fit_ok (D,).
    """
    start_predictor = start_predictor or predictor
    start = start_boxes(start_predictor, image, det_box_px, cfg, mapping)
    return final_fit(predictor, image, *start, cfg, rival=_rival(predictor, start_predictor, cfg))


def start_boxes(predictor, image: np.ndarray, det_box_px: np.ndarray, cfg,
                mapping: np.ndarray | None = None) -> tuple[np.ndarray, np.ndarray]:
    """The ERT boxes (D, 4) the final pass starts from, and their roll (D,) radians: the detector boxes
    mapped to the ERT's convention, then `cfg.refine_passes` times re-derived from a fit (coarse levels only
    on the numpy engine: only the box is kept). With `cfg.upright` (numpy engine) each refit runs in the face's
    own upright frame, turned by the roll of the line through the eye centres of the fit before it. NaN boxes
    where a box is unusable or a refit collapsed it."""
    if mapping is None:
        mapping = np.broadcast_to(np.array(box_mapping(cfg)), (len(det_box_px), 3))
    mapping = np.asarray(mapping, np.float64).reshape(-1, 3)
    boxes = ert_boxes_from_detections(det_box_px, mapping[:, 0], mapping[:, 1], mapping[:, 2])
    roll = np.zeros(len(boxes))
    upright = cfg.upright and isinstance(predictor, ErtModel)
    for _ in range(cfg.refine_passes):
        ok = _usable(boxes)
        boxes[~ok] = np.nan
        if not ok.any():
            break
        if isinstance(predictor, ErtModel):
            with _one_blas_thread():
                pts = ert_predict(predictor, image, boxes[ok], levels=cfg.coarse_levels or None,
                                  roll_rad=roll[ok] if upright else None)
        else:
            pts = np.array([fit_one(predictor, image, box, cfg.target_face_px, cfg.max_upsample, cfg.crop_margin)[0]
                            for box in boxes[ok]]).reshape(-1, N_POINTS, 2)
        boxes[ok] = ert_boxes_from_landmarks(pts)
        if upright:
            roll[ok] = eye_roll_rad(pts)
    bad = ~_usable(boxes) | ~np.isfinite(roll)
    boxes[bad], roll[bad] = np.nan, 0.0
    return boxes, roll


def eye_roll_rad(landmarks_px: np.ndarray) -> np.ndarray:
    """(D,) roll of each face (D, 68, 2): the angle of the line from the left eye centre to the right one
    (image y down: positive turns clockwise on screen)."""
    d = landmarks_px[:, 42:48].mean(axis=1) - landmarks_px[:, 36:42].mean(axis=1)
    return np.arctan2(d[:, 1], d[:, 0])


def final_fit(predictor, image: np.ndarray, boxes: np.ndarray, roll_rad: np.ndarray | None,
              cfg, rival=None) -> dict[str, np.ndarray]:
    """The full fit of every ERT box (D, 4) of one frame, turned by roll_rad (D,) (NaN boxes are not fitted;
    the dlib engine fits upright boxes only).

    rival: a second model (of the same engine). Each face is then fitted by both, and by both again on the
    mirrored frame, and keeps the mean of the two fits of the model whose two fits agree better
    (`mirror_disagreement`): a slipped fit rarely slips the same way on the mirrored face, so the
    disagreement flags it."""
    boxes = np.asarray(boxes, np.float64).reshape(-1, 4)
    n = len(boxes)
    roll = np.zeros(n) if roll_rad is None or not isinstance(predictor, ErtModel) else np.asarray(roll_rad, np.float64)
    out = {"landmarks_px": np.full((n, N_POINTS, 2), np.nan, np.float32),
           "ert_box_px": boxes.astype(np.float32), "ert_roll_deg": np.degrees(roll).astype(np.float32),
           "upsample": np.full(n, np.nan, np.float32)}
    ok = _usable(boxes)
    if ok.any():
        pts, upsample = _fit_boxes(predictor, image, boxes[ok], roll[ok], cfg)
        if rival is not None:
            flipped = np.ascontiguousarray(image[:, ::-1])
            pts, own = _with_mirrored(pts, _mirrored_fit(predictor, flipped, boxes[ok], roll[ok], cfg))
            rival_pts, rival_upsample = _fit_boxes(rival, image, boxes[ok], roll[ok], cfg)
            rival_pts, other = _with_mirrored(rival_pts, _mirrored_fit(rival, flipped, boxes[ok], roll[ok], cfg))
            take = other < own                                   # NaN (a failed fit) never wins
            pts[take], upsample[take] = rival_pts[take], rival_upsample[take]
        out["landmarks_px"][ok], out["upsample"][ok] = pts, upsample
    out["fit_ok"] = np.isfinite(out["landmarks_px"]).all(axis=(1, 2))
    return out


def _fit_boxes(predictor, image: np.ndarray, boxes: np.ndarray, roll: np.ndarray, cfg) -> tuple[np.ndarray, np.ndarray]:
    """Points (N, 68, 2) and upsample factors (N,) of usable ERT boxes (N, 4) turned by roll (N,) radians."""
    if isinstance(predictor, ErtModel):
        with _one_blas_thread():
            pts = ert_predict(predictor, image, boxes, roll_rad=roll if roll.any() else None)
        return pts.astype(np.float32), np.ones(len(boxes), np.float32)   # features read at sub-pixel positions
    fits = [fit_one(predictor, image, box, cfg.target_face_px, cfg.max_upsample, cfg.crop_margin) for box in boxes]
    return (np.array([f[0] for f in fits], np.float32).reshape(-1, N_POINTS, 2),
            np.array([f[1] for f in fits], np.float32))


def _mirrored_fit(predictor, flipped: np.ndarray, boxes: np.ndarray, roll: np.ndarray, cfg) -> np.ndarray:
    """Fit of each face in the left-right mirrored frame, mapped back onto the face (points renumbered,
    so point k is again point k of the unmirrored face)."""
    right = flipped.shape[1] - 1
    mirrored_boxes = np.stack([right - boxes[:, 2], boxes[:, 1], right - boxes[:, 0], boxes[:, 3]], axis=1)
    pts = _fit_boxes(predictor, flipped, mirrored_boxes, -roll, cfg)[0]
    pts[..., 0] = right - pts[..., 0]
    return pts[:, MIRROR_68]


def _with_mirrored(fit: np.ndarray, mirrored: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """The mean of a fit and its mirrored-face fit (N, 68, 2), and their disagreement (N,)."""
    return (0.5 * (fit + mirrored)).astype(np.float32), mirror_disagreement(fit, mirrored)


def mirror_disagreement(fit: np.ndarray, mirrored: np.ndarray) -> np.ndarray:
    """(N,) mean distance between a fit (N, 68, 2) and its mirrored-face fit, ÷ their mean's eye-centre
    distance (on held-out real faces it tracks the landmark error: Spearman 0.48–0.69)."""
    mean = 0.5 * (fit + mirrored)
    eyes = np.linalg.norm(mean[:, 42:48].mean(axis=1) - mean[:, 36:42].mean(axis=1), axis=1)
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.linalg.norm(fit - mirrored, axis=2).mean(axis=1) / eyes


def _rival(predictor, start_predictor, cfg):
    """The final pass's second model (`final_fit`): the start model, with `cfg.mirror_choice`, where it differs
    (by file: "" and "stock" name one model)."""
    same_file = model_path_of(cfg.model_path) == model_path_of(start_model_of(cfg))
    return start_predictor if cfg.mirror_choice and not same_file and start_predictor is not predictor else None


def _usable(boxes: np.ndarray) -> np.ndarray:
    return np.isfinite(boxes).all(axis=1) & (boxes[:, 2] - boxes[:, 0] >= MIN_BOX_PX)


class ChunkFitter:
    """Fits the faces of one chunk's sampled frames, handed in time order with `add`.

    Each face's final fit starts from the median box and roll of its track (pipeline/face_tracks.py)
    within ±cfg.track_window_s, so a frame waits for the frames its window needs: at most that many
    seconds of frames are held. With track_window_s 0 every face starts from its own frame's box, as
    `fit_faces`. `finish` returns {frame slot: fit_faces-like dict} for every frame added with boxes."""

    def __init__(self, predictor, cfg, mappings: np.ndarray, every_s: float, start_predictor=None):
        from pipeline.face_tracks import TrackLinker

        self.predictor, self.cfg, self.mappings = predictor, cfg, np.asarray(mappings, np.float64)
        self.start_predictor = start_predictor or predictor
        self.rival = _rival(predictor, self.start_predictor, cfg)
        self.half = int(round(cfg.track_window_s / every_s)) if cfg.track_window_s > 0 and every_s > 0 else 0
        self.linker = TrackLinker(max_gap=max(1, 2 * self.half))
        self.history: dict[int, list[tuple[int, np.ndarray, float]]] = {}     # track → (slot, box, roll)
        self.pending: list[tuple] = []           # (slot, image, track ids, start boxes, roll), in time order
        self.results: dict[int, dict[str, np.ndarray]] = {}

    def add(self, slot: int, image: np.ndarray, det_box_px: np.ndarray, band: np.ndarray) -> None:
        det_box_px = np.asarray(det_box_px, np.float32).reshape(-1, 4)
        if len(det_box_px):
            boxes, roll = start_boxes(self.start_predictor, image, det_box_px, self.cfg,
                                      self.mappings[np.clip(np.asarray(band), 0, 1)])
            if self.half == 0:
                self.results[slot] = final_fit(self.predictor, image, boxes, roll, self.cfg, self.rival)
                return
            ids = self.linker.link(slot, det_box_px)
            for track, box, angle in zip(ids, boxes, roll):
                if np.isfinite(box).all():
                    self.history.setdefault(int(track), []).append((slot, box, float(angle)))
            self.pending.append((slot, image, ids, boxes, roll))
        self._flush(slot - self.half)

    def finish(self) -> dict[int, dict[str, np.ndarray]]:
        self._flush(float("inf"))
        return self.results

    def _flush(self, upto: float) -> None:
        from pipeline.face_tracks import median_start

        while self.pending and self.pending[0][0] <= upto:
            slot, image, ids, boxes, roll = self.pending.pop(0)
            for i, track in enumerate(ids):
                if np.isfinite(boxes[i]).all():
                    boxes[i], roll[i] = median_start(self.history[int(track)], slot, self.half)
            self.results[slot] = final_fit(self.predictor, image, boxes, roll, self.cfg, self.rival)
        oldest = self.pending[0][0] if self.pending else upto
        for track, entries in self.history.items():          # entries no pending frame's window reaches
            self.history[track] = [e for e in entries if e[0] >= oldest - self.half]


# ----------------------------------------------------------------------------- numpy ERT engine


@dataclass(frozen=True)
class ErtModel:
    """A dlib shape predictor (ensemble of regression trees) as arrays.

    Shapes live in the unit box ([0, 1]² ↦ the ERT box). Level l has T trees of
    S splits (complete binary trees, S + 1 leaves); node k of tree t is entry
    t·S + k of split_a/split_b/thresh, leaf j of tree t is row t·(S + 1) + j of
    leaves. A split sends a face left (node 2k + 1) when
    pixel[split_a] − pixel[split_b] > thresh, else right (2k + 2), as in dlib.
    """
    initial: np.ndarray      # (P, 2) float32 mean shape
    anchor: np.ndarray       # (L, F) intp: landmark each feature pixel hangs from
    deltas: np.ndarray       # (L, F, 2) float32 offset from that landmark (mean-shape frame)
    split_a: np.ndarray      # (L, T·S) intp feature index
    split_b: np.ndarray      # (L, T·S) intp feature index
    thresh: np.ndarray       # (L, T·S) float32
    leaves: np.ndarray       # (L, T·(S+1), 2P) float32 shape increments
    n_trees: int
    n_splits: int
    leaf_basis: np.ndarray | None = None   # (L, T·(S+1), R): leaves ≈ leaf_basis @ leaf_dirs (with_leaf_rank)
    leaf_dirs: np.ndarray | None = None    # (L, R, 2P)

    @property
    def levels(self) -> int:
        return len(self.anchor)

    @property
    def n_points(self) -> int:
        return len(self.initial)


_SEG = 4096          # bytes of the model file walked by one speculative token chain
_OVERLAP = 512       # each chain starts this far before its segment, so it is in step by then
_BLOCK = 4096        # chains walked together


def _token_starts(b: np.ndarray) -> np.ndarray:
    """Offsets of every token of a dlib-serialized stream (uint8 array b).

    dlib writes every integer (and a float as mantissa, exponent integers) as
    one header byte (low nibble = payload bytes, 0x80 = negative) plus the
    little-endian payload, so the next token starts 1 + (b[k] & 15) bytes
    after token k. Walking 30 M tokens one by one in Python takes ~30 s, so the
    file is cut into segments and a chain is walked from a little before every
    segment, all at once (numpy, in lockstep). A chain started at a wrong byte
    falls into step with the true one within a few tokens, so it holds the
    segment's true tokens from the predecessor's exit token on; a chain not in
    step there is walked by hand until it is.
    """
    n = len(b)
    step = (b & np.uint8(15)) + np.uint8(1)
    seg = np.arange(0, n, _SEG, dtype=np.int64)
    seg_end = np.minimum(seg + _SEG, n)
    pieces, entry = [], 0
    for lo in range(0, len(seg), _BLOCK):
        ends = seg_end[lo:lo + _BLOCK]
        cur = np.maximum(seg[lo:lo + _BLOCK] - _OVERLAP, 0)
        rows = []
        while (cur < ends).any():
            rows.append(cur)
            cur = cur + step[np.minimum(cur, n - 1)]
        rows.append(cur)
        walked = np.stack(rows, axis=1)                           # (chains, steps), increasing
        past = walked >= ends[:, None]
        exits = walked[np.arange(len(ends)), past.argmax(axis=1)]  # first token at/after the segment end
        assumed = np.concatenate([[entry], exits[:-1]])           # chain i enters where chain i-1 exits
        in_step = (walked == assumed[:, None]).any(axis=1)
        start = assumed.copy()                                    # keep each chain's tokens from here on
        hand: dict[int, np.ndarray] = {}
        e = entry
        if not in_step.all():                                     # rare: fix up in order
            for i in range(len(ends)):
                start[i] = e
                if e == assumed[i] and in_step[i]:
                    e = int(exits[i])
                    continue
                row, own, p = walked[i], [], e
                while p < ends[i]:
                    k = int(np.searchsorted(row, p))
                    if k < len(row) and row[k] == p:
                        break
                    own.append(p)
                    p += int(step[p])
                start[i] = p
                hand[i] = np.asarray(own, np.int64)
                e = int(exits[i]) if p < ends[i] else p
        else:
            e = int(exits[-1])
        keep = (walked >= start[:, None]) & ~past
        flat = walked[keep]
        if hand:
            where = np.concatenate([[0], np.cumsum(keep.sum(axis=1))])
            idx = np.concatenate([np.full(len(v), where[i]) for i, v in hand.items()])
            flat = np.insert(flat, idx, np.concatenate(list(hand.values())))
        pieces.append(flat)
        entry = e
    return np.concatenate(pieces) if pieces else np.zeros(0, np.int64)


def _token_values(b: np.ndarray, starts: np.ndarray) -> np.ndarray:
    """int64 value of every token (dlib pack_int)."""
    from numpy.lib.stride_tricks import sliding_window_view

    windows = sliding_window_view(np.concatenate([b, np.zeros(9, np.uint8)]), 8)   # 8 bytes at every offset
    masks = np.array([0] + [(1 << (8 * k)) - 1 for k in range(1, 8)] + [(1 << 64) - 1], np.uint64)
    out = np.empty(len(starts), np.int64)
    for lo in range(0, len(starts), 1 << 22):        # blocks: bounded memory
        at = starts[lo:lo + (1 << 22)]
        head = b[at]
        nbytes = head & np.uint8(15)
        if (nbytes > 8).any():
            raise ValueError("not a dlib integer stream")
        value = (windows[at + 1].view("<u8")[:, 0] & masks[nbytes]).view(np.int64)
        out[lo:lo + len(at)] = np.where(head & np.uint8(0x80), -value, value)
    return out


class _Tokens:
    """Sequential reader over decoded tokens (grammar of dlib's shape_predictor serialization)."""

    def __init__(self, values: np.ndarray):
        self.v, self.i = values, 0

    def take(self, k: int) -> np.ndarray:
        if self.i + k > len(self.v):
            raise ValueError("truncated model file")
        out = self.v[self.i:self.i + k]
        self.i += k
        return out

    def int(self) -> int:
        return int(self.take(1)[0])

    def floats(self, k: int) -> np.ndarray:
        me = self.take(2 * k).reshape(k, 2)
        return np.ldexp(me[:, 0].astype(np.float64), me[:, 1]).astype(np.float32)


def read_shape_predictor(path: str | Path) -> ErtModel:
    """Parse a dlib shape_predictor .dat (format version 1) into an ErtModel.

    Layout (dlib serialize): version; initial_shape (matrix: -rows, -cols, values);
    forests (levels × trees × (splits × (idx1, idx2, thresh), leaves × matrix));
    anchor_idx (levels × features); deltas (levels × features × (x, y)).
    Every tree must have the same number of splits (dlib trains complete trees).
    """
    path = Path(path)
    b = np.fromfile(path, np.uint8)
    try:
        tok = _Tokens(_token_values(b, _token_starts(b)))
        if tok.int() != 1:
            raise ValueError("unknown shape_predictor format version")
        rows, cols = -tok.int(), -tok.int()
        initial = tok.floats(rows * cols).reshape(-1, 2)
        dims = rows * cols
        n_levels = tok.int()
        split_a, split_b, thresh, leaves = [], [], [], []
        n_trees = n_splits = None
        for _ in range(n_levels):
            trees = tok.int()
            first = tok.int()                          # split count of the level's first tree
            n_trees, n_splits = n_trees or trees, n_splits if n_splits is not None else first
            if (trees, first) != (n_trees, n_splits):
                raise ValueError("levels of different sizes")
            if n_splits < 1 or (n_splits + 1) & n_splits:
                raise ValueError("trees are not complete binary trees")
            per_tree = 4 * n_splits + 1 + (n_splits + 1) * (2 + 2 * dims)
            block = np.concatenate([[first], tok.take(n_trees * (1 + per_tree) - 1)]).reshape(n_trees, 1 + per_tree)
            splits = block[:, 1:1 + 4 * n_splits].reshape(n_trees, n_splits, 4)
            leaf = block[:, 2 + 4 * n_splits:].reshape(n_trees, n_splits + 1, 2 + 2 * dims)
            if ((block[:, 0] != n_splits).any() or (block[:, 1 + 4 * n_splits] != n_splits + 1).any()
                    or (leaf[:, :, 0] != -dims).any() or (leaf[:, :, 1] != -1).any()):
                raise ValueError("trees of different shapes")
            split_a.append(splits[..., 0].reshape(-1))
            split_b.append(splits[..., 1].reshape(-1))
            me = splits[..., 2:].reshape(-1, 2)
            thresh.append(np.ldexp(me[:, 0].astype(np.float64), me[:, 1]).astype(np.float32))
            me = leaf[:, :, 2:].reshape(-1, 2)
            leaves.append(np.ldexp(me[:, 0].astype(np.float64), me[:, 1]).astype(np.float32)
                          .reshape(n_trees * (n_splits + 1), dims))
        anchor = [tok.take(tok.int()) for _ in range(tok.int())]
        n_delta = tok.int()
        deltas = []
        for _ in range(n_delta):
            k = tok.int()
            deltas.append(tok.floats(2 * k).reshape(k, 2))
        if tok.i != len(tok.v) or len(anchor) != n_levels or n_delta != n_levels:
            raise ValueError("unexpected trailing data")
    except (ValueError, IndexError) as err:
        raise DataError(f"{path}: cannot read it as a dlib shape predictor for the numpy engine ({err}). "
                        f"Set landmarks.engine=dlib to use dlib's own reader.") from err
    return ErtModel(initial=initial.astype(np.float32), anchor=np.asarray(anchor, np.intp),
                    deltas=np.asarray(deltas, np.float32), split_a=np.asarray(split_a, np.intp),
                    split_b=np.asarray(split_b, np.intp), thresh=np.asarray(thresh, np.float32),
                    leaves=np.asarray(leaves, np.float32), n_trees=int(n_trees or 0), n_splits=int(n_splits or 0))


def _one_blas_thread():
    """Context limiting BLAS to one thread: these products are small, and OpenBLAS's extra
    threads spin for them (10× the CPU of one thread for a 136 × 8000 Gram matrix here)."""
    import contextlib

    try:
        from threadpoolctl import threadpool_limits
    except ImportError:
        return contextlib.nullcontext()
    return threadpool_limits(1, user_api="blas")


def with_leaf_rank(model: ErtModel, rank: int) -> ErtModel:
    """The model with each level's leaf table factored to `rank` (0 or >= 2P: exact).

    A level's 8000 leaf increments span few directions of the 136-dimensional
    shape space (rank 48 keeps > 99.6 % of every level's energy), so summing the
    500 chosen leaves in rank-R coordinates and mapping back once is ~3× cheaper.
    """
    dims = model.leaves.shape[2]
    if rank <= 0 or rank >= dims:
        return dataclasses.replace(model, leaf_basis=None, leaf_dirs=None)
    basis, dirs = [], []
    with _one_blas_thread():
        for table in model.leaves:
            _, vecs = np.linalg.eigh((table.T @ table).astype(np.float64))   # principal directions, ascending
            top = np.ascontiguousarray(vecs[:, ::-1][:, :rank], dtype=np.float32)
            basis.append(table @ top)
            dirs.append(top.T)
    return dataclasses.replace(model, leaf_basis=np.asarray(basis, np.float32), leaf_dirs=np.asarray(dirs, np.float32))


_ARRAYS = ("initial", "anchor", "deltas", "split_a", "split_b", "thresh", "leaves")


def _cache_file(path: Path) -> Path | None:
    """Where the parsed arrays of model `path` are kept: $AUDIENCE_CACHE_DIR or ~/.cache/audience_fvae
    (keyed by name, size and mtime, so a replaced model is parsed again)."""
    import os

    root = os.environ.get("AUDIENCE_CACHE_DIR") or os.path.join(os.path.expanduser("~"), ".cache", "audience_fvae")
    try:
        stat = path.stat()
    except OSError:
        return None
    return Path(root) / "ert" / f"{path.stem}-{stat.st_size}-{stat.st_mtime_ns}.npz"


@functools.lru_cache(maxsize=2)
def _parsed_model(model_path: str) -> ErtModel:
    """read_shape_predictor, with its arrays kept on disk: a later process loads them in ~0.1 s
    instead of parsing for a few seconds. The cache is optional (unwritable: parse every time)."""
    import os
    import tempfile

    path = model_path_of(model_path)
    cached = _cache_file(path)
    if cached is not None and cached.is_file():
        try:
            with np.load(cached) as z:
                arrays = {k: z[k] for k in _ARRAYS}
            shape = arrays["split_a"].shape[1], arrays["leaves"].shape[1]
            n_trees = shape[1] - shape[0]               # T·(S+1) − T·S
            return ErtModel(**arrays, n_trees=int(n_trees), n_splits=int(shape[0] // max(n_trees, 1)))
        except (OSError, ValueError, KeyError, ZeroDivisionError):
            pass                                        # unreadable: parse again and rewrite it
    model = read_shape_predictor(path)
    if cached is not None:
        try:
            cached.parent.mkdir(parents=True, exist_ok=True)
            fd, tmp = tempfile.mkstemp(dir=cached.parent, suffix=".tmp")
            with os.fdopen(fd, "wb") as fh:
                np.savez(fh, **{k: getattr(model, k) for k in _ARRAYS})
            os.replace(tmp, cached)
        except OSError:
            pass
    return model


@functools.lru_cache(maxsize=4)
def load_ert_model(model_path: str = "", leaf_rank: int = 0) -> ErtModel:
    """The configured model ('' = stock) as an ErtModel (cached per process; a few s to read)."""
    return with_leaf_rank(_parsed_model(model_path), leaf_rank)


def load_landmarker(cfg, start: bool = False):
    """What fit_faces needs for a LandmarksConfig: an ErtModel (engine numpy) or a dlib predictor, of the
    last pass's model, or (start) of the passes before it (`start_model_of`)."""
    model_path = start_model_of(cfg) if start else cfg.model_path
    if cfg.engine == "numpy":
        return load_ert_model(model_path, cfg.leaf_rank)
    return load_predictor(model_path)


def _similarity_2x2(initial_c: np.ndarray, initial_var: float, shape: np.ndarray) -> np.ndarray:
    """(N, 2, 2) least-squares similarity (scale·rotation) taking the centred mean shape onto each
    shape (N, P, 2): dlib's find_tform_between_shapes, in closed form for 2-D."""
    d = shape - shape.mean(axis=1, keepdims=True)
    dot = (d * initial_c).sum(axis=(1, 2)) / initial_var
    cross = (d[..., 1] * initial_c[..., 0] - d[..., 0] * initial_c[..., 1]).sum(axis=1) / initial_var
    return np.stack([np.stack([dot, -cross], -1), np.stack([cross, dot], -1)], -2).astype(np.float32)


def ert_predict(model: ErtModel, image: np.ndarray, boxes: np.ndarray, levels: int | None = None,
                roll_rad: np.ndarray | None = None) -> np.ndarray:
    """Run the cascade for every box (N, 4) [l, t, r, b] px of a uint8 image (H, W) at once.

    The unit box maps to x = l + u·(r − l), y = t + v·(b − t), as dlib maps it
    onto its rectangle's corners. Feature pixels are read at their sub-pixel
    positions (bicubic, 0 outside the image). `levels` runs only the first
    cascade levels. `roll_rad` (N,) turns each box about its centre by that
    angle (clockwise on screen, y down): the cascade then sees the face as if
    the image were turned upright, without resampling it. Returns (N, P, 2)
    float32 image points.
    """
    import cv2
    import scipy.sparse

    boxes = np.asarray(boxes, np.float32).reshape(-1, 4)
    n, n_levels = len(boxes), model.levels if levels is None else max(1, min(levels, model.levels))
    if n == 0:
        return np.zeros((0, model.n_points, 2), np.float32)
    left, top = boxes[:, 0:1], boxes[:, 1:2]
    width, height = boxes[:, 2:3] - left, boxes[:, 3:4] - top
    to_image = _box_to_image(left, top, width, height, roll_rad)
    initial_c = model.initial - model.initial.mean(axis=0)
    initial_var = float((initial_c ** 2).sum())
    shape = np.repeat(model.initial[None], n, axis=0)
    n_feat, n_leaves = model.deltas.shape[1], model.leaves.shape[1]
    row_off = (np.arange(n, dtype=np.intp) * n_feat)[:, None]
    tree_off = np.arange(model.n_trees, dtype=np.intp) * model.n_splits
    leaf_off = np.arange(model.n_trees, dtype=np.intp) * (model.n_splits + 1) - model.n_splits
    depth = int(round(np.log2(model.n_splits + 1)))
    ones = np.ones(n * model.n_trees, np.float32)
    indptr = np.arange(0, n * model.n_trees + 1, model.n_trees)
    for level in range(n_levels):
        tform = _similarity_2x2(initial_c, initial_var, shape)
        anchored = shape[:, model.anchor[level]]                       # (N, F, 2)
        dx, dy = model.deltas[level][:, 0], model.deltas[level][:, 1]
        ux = anchored[..., 0] + tform[:, 0, 0, None] * dx + tform[:, 0, 1, None] * dy
        uy = anchored[..., 1] + tform[:, 1, 0, None] * dx + tform[:, 1, 1, None] * dy
        pixels = cv2.remap(image, *to_image(ux, uy), cv2.INTER_CUBIC, borderMode=cv2.BORDER_CONSTANT, borderValue=0)
        feats = pixels.astype(np.float32).ravel()
        a, b, th = model.split_a[level], model.split_b[level], model.thresh[level]
        node = np.zeros((n, model.n_trees), np.intp)
        for _ in range(depth):
            k = node + tree_off
            node = 2 * node + 1 + (feats[a[k] + row_off] - feats[b[k] + row_off] <= th[k])
        chosen = scipy.sparse.csr_matrix((ones, (node + leaf_off).ravel(), indptr), shape=(n, n_leaves))
        if model.leaf_basis is not None:
            step = (chosen @ model.leaf_basis[level]) @ model.leaf_dirs[level]
        else:
            step = chosen @ model.leaves[level]
        shape += np.asarray(step, np.float32).reshape(n, -1, 2)
    return np.stack(to_image(shape[..., 0], shape[..., 1]), axis=-1).astype(np.float32)


def _box_to_image(left, top, width, height, roll_rad):
    """(u, v) in unit-box coordinates → image (x, y) px, for boxes (N, 1) turned by roll_rad (N,) or not."""
    if roll_rad is None:
        return lambda u, v: (left + u * width, top + v * height)
    cos = np.cos(np.asarray(roll_rad, np.float32)).reshape(-1, 1)
    sin = np.sin(np.asarray(roll_rad, np.float32)).reshape(-1, 1)
    cx, cy = left + width / 2, top + height / 2

    def to_image(u, v):
        a, b = (u - 0.5) * width, (v - 0.5) * height
        return (cx + cos * a - sin * b).astype(np.float32), (cy + sin * a + cos * b).astype(np.float32)
    return to_image


# ----------------------------------------------------------------------------- stage


def plan(cfg, workspace: Workspace) -> list[Unit]:
    """One unit per detect chunk: inputs = the detect chunk, its video, the landmark models and the detectors'
    calibrations."""
    from pipeline.detect import DETECT

    calibrations = calibration_files(cfg)
    models = sorted({model_path_of(cfg.landmarks.model_path), model_path_of(start_model_of(cfg.landmarks))})
    units = []
    for det in DETECT.plan(cfg, workspace):
        det_out = det.outputs[0][1]
        video = _video_of(det)
        units.append(Unit(stage="landmarks", key=det.key, inputs=(Path(det_out), video, *models, *calibrations),
                          outputs=(("landmarks", workspace.stage_output("landmarks", *det.key)),),
                          payload=(("detections", str(det_out)), ("video", str(video)))))
    return units


def _video_of(det_unit: Unit) -> Path:
    video = det_unit.get("video")
    if video:
        return Path(video)
    for path in det_unit.inputs:
        if Path(path).suffix.lower() in (".mp4", ".avi", ".mkv", ".mov", ".m4v"):
            return Path(path)
    raise DataError(f"detect unit {det_unit.name} names no video input; cannot refit its frames.")


def _empty_fits(d: int) -> dict[str, np.ndarray]:
    return {"landmarks_px": np.full((d, N_POINTS, 2), np.nan, np.float32),
            "ert_box_px": np.full((d, 4), np.nan, np.float32), "ert_roll_deg": np.zeros(d, np.float32),
            "upsample": np.full(d, np.nan, np.float32), "fit_ok": np.zeros(d, bool)}


def compute(unit: Unit, cfg, tmp_outputs: dict[str, Path]) -> None:
    """Refit one detections chunk, decoding its frames again (when detect ran in an earlier command)."""
    from pipeline.sources import iter_frames, limit_worker_threads
    from pipeline.store import read_detections

    limit_worker_threads()
    dets = read_detections(Path(unit.get("detections")))
    fitter = _chunk_fitter(cfg, dets.attrs)
    wanted = {int(dets.frame_index[f]): f for f in np.unique(dets.det_frame)}
    if wanted:
        attrs = dets.attrs
        for frame in iter_frames(Path(unit.get("video")), float(attrs["chunk_start_s"]),
                                 float(attrs["chunk_end_s"]), float(attrs["sample_every_s"]) or None):
            slot = wanted.pop(frame.index, None)
            if slot is None or frame.image is None:
                continue
            rows = np.flatnonzero(dets.det_frame == slot)
            fitter.add(slot, frame.image, dets.det_box_px[rows], dets.det_band[rows])
            if not wanted:
                break
    _write_fits(tmp_outputs["landmarks"], dets, fitter, cfg)


def compute_with_detect(det_unit: Unit, unit: Unit, cfg, det_tmp: dict[str, Path], tmp_outputs: dict[str, Path]) -> None:
    """Detect and fit one chunk in ONE decode: each frame's faces are handed to the fitter as they are found.

    Writes exactly what `detect` then `landmarks` would write (the boxes fitted are the float32 boxes
    the detections file holds, in the same frame order), so a rerun of either stage alone finds its unit
    up to date.
    """
    from pipeline.detect import detect_unit
    from pipeline.store import write_detections

    fitter = _chunk_fitter(cfg, {"sample_every_s": cfg.sources.sample_every_s})

    def fit_frame(slot: int, image: np.ndarray, boxes: np.ndarray, band: np.ndarray) -> None:
        if len(boxes):
            fitter.add(slot, image, np.asarray(boxes, np.float32), band)

    dets = detect_unit(det_unit, cfg, on_frame=fit_frame)
    write_detections(det_tmp["detections"], dets)
    _write_fits(tmp_outputs["landmarks"], dets, fitter, cfg)


def _chunk_fitter(cfg, det_attrs: dict) -> ChunkFitter:
    return ChunkFitter(load_landmarker(cfg.landmarks), cfg.landmarks, band_mappings(cfg),
                       float(det_attrs.get("sample_every_s") or cfg.sources.sample_every_s),
                       start_predictor=load_landmarker(cfg.landmarks, start=True))


def _write_fits(path: Path, dets, fitter: ChunkFitter, cfg) -> None:
    from pipeline.store import write_landmarks_chunk

    fitted = _empty_fits(len(dets.det_frame))
    for slot, result in fitter.finish().items():
        rows = np.flatnonzero(dets.det_frame == slot)
        for name, values in result.items():
            fitted[name][rows] = values
    write_landmarks_chunk(path, dets, fitted, model=model_description(cfg.landmarks), box_mappings=fitter.mappings)


def model_description(cfg) -> str:
    """What fitted the landmarks (LandmarksConfig), for the chunk's `landmark_model` attribute."""
    final, start = model_path_of(cfg.model_path).name, model_path_of(start_model_of(cfg)).name
    if start == final:
        return final
    if cfg.mirror_choice:
        return f"{final} or {start} per face, by mirror agreement (boxes from {start})"
    return f"{final} (boxes from {start})"


LANDMARKS = Stage(name="landmarks", help="fit 68 landmarks (dlib ERT) to every detection", version="4",
                  sections=("sources", "detect", "landmarks"), plan=plan, compute=compute,
                  upstream="detect", compute_with_upstream=compute_with_detect)

__all__ = ["LANDMARKS", "ChunkFitter", "fit_faces", "start_boxes", "final_fit", "eye_roll_rad", "fit_one", "load_predictor", "load_landmarker", "load_ert_model", "ErtModel",
           "read_shape_predictor", "ert_predict", "with_leaf_rank", "stock_model_path", "ert_boxes_from_detections",
           "ert_boxes_from_landmarks", "fit_box_mapping", "model_key", "start_model_of", "mirror_disagreement", "model_description", "MIRROR_68", "N_POINTS"]
