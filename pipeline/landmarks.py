"""Stage 'landmarks': 68 iBUG landmarks per detected face with dlib's ERT.

For each detection of a detect chunk the frame is decoded again (same
sampling as detect), the detector box is mapped to the box convention the
ERT was trained with, a crop around it is upsampled so the face is about
`landmarks.target_face_px` wide, the ERT runs on the crop and its points are
mapped back to full-frame pixel coordinates.

Box conventions
* detector box (`det_box_px`): whatever the detect stage writes, [left, top,
  right, bottom] px. `landmarks.box_scale/box_dx/box_dy` map it to an
  *ERT box*: side = box_scale × detector width, centre shifted by
  (box_dx × width, box_dy × height). `fit_box_mapping` learns the three numbers
  from detections with ground-truth landmarks (bench/bench_vision.py prints them).
* ERT box: the box dlib's frontal HOG detector gives for a face, which the stock
  68-point model was trained with. From landmarks it is a square of side
  ERT_BOX_SIDE × rms centred at the mean of the 51 inner points shifted by
  (ERT_BOX_DX, ERT_BOX_DY) × rms, where rms is the root-mean-square distance of
  the 51 inner points (17–67) to their mean. The constants were measured on
  the 43 faces of dlib's examples/faces (boxes from dlib's detector, points from
  the stock model). `refine_passes` refits with this box derived from the
  previous fit, which makes the result nearly independent of the detector's
  box convention.
"""
from __future__ import annotations

import functools
import importlib.util
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
STOCK_MODEL_FILE = "shape_predictor_68_face_landmarks.dat"


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
    """The configured model file ('' = stock); a relative path is taken from the repository root."""
    if not model_path:
        return stock_model_path()
    path = Path(model_path)
    if not path.is_absolute() and not path.exists():
        path = Path(__file__).resolve().parents[1] / path
    if not path.is_file():
        raise DataError(f"landmark model not found: {model_path}. Set landmarks.model_path to an existing "
                        f"dlib shape predictor .dat file, or to \"\" for the stock model.")
    return path


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


def fit_faces(predictor, image: np.ndarray, det_box_px: np.ndarray, cfg) -> dict[str, np.ndarray]:
    """Fit every detector box (D, 4) of one frame (cfg: LandmarksConfig).

    Returns landmarks_px (D, 68, 2), ert_box_px (D, 4), upsample (D,), fit_ok (D,).
    """
    boxes = ert_boxes_from_detections(det_box_px, cfg.box_scale, cfg.box_dx, cfg.box_dy)
    n = len(boxes)
    out = {"landmarks_px": np.full((n, N_POINTS, 2), np.nan, np.float32),
           "ert_box_px": boxes.astype(np.float32), "upsample": np.full(n, np.nan, np.float32)}
    for i in range(n):
        box = boxes[i]
        for _ in range(1 + cfg.refine_passes):
            pts, factor = fit_one(predictor, image, box, cfg.target_face_px, cfg.max_upsample, cfg.crop_margin)
            if not np.isfinite(pts).all():
                break
            out["landmarks_px"][i], out["ert_box_px"][i], out["upsample"][i] = pts, box, factor
            box = ert_boxes_from_landmarks(pts[None])[0]
    out["fit_ok"] = np.isfinite(out["landmarks_px"]).all(axis=(1, 2))
    return out


# ----------------------------------------------------------------------------- stage


def plan(cfg, workspace: Workspace) -> list[Unit]:
    """One unit per detect chunk: inputs = the detect chunk + its video."""
    from pipeline.detect import DETECT

    units = []
    for det in DETECT.plan(cfg, workspace):
        det_out = det.outputs[0][1]
        video = _video_of(det)
        units.append(Unit(stage="landmarks", key=det.key, inputs=(Path(det_out), video),
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


def compute(unit: Unit, cfg, tmp_outputs: dict[str, Path]) -> None:
    from pipeline.sources import iter_frames
    from pipeline.store import read_detections, write_landmarks_chunk

    dets = read_detections(Path(unit.get("detections")))
    lcfg = cfg.landmarks
    predictor = load_predictor(lcfg.model_path)
    d = len(dets.det_frame)
    fitted = {"landmarks_px": np.full((d, N_POINTS, 2), np.nan, np.float32),
              "ert_box_px": np.full((d, 4), np.nan, np.float32),
              "upsample": np.full(d, np.nan, np.float32), "fit_ok": np.zeros(d, bool)}
    wanted = {int(dets.frame_index[f]): f for f in np.unique(dets.det_frame)}
    if wanted:
        attrs = dets.attrs
        for frame in iter_frames(Path(unit.get("video")), float(attrs["chunk_start_s"]),
                                 float(attrs["chunk_end_s"]), float(attrs["sample_every_s"]) or None):
            slot = wanted.pop(frame.index, None)
            if slot is None or frame.image is None:
                continue
            rows = np.flatnonzero(dets.det_frame == slot)
            result = fit_faces(predictor, frame.image, dets.det_box_px[rows], lcfg)
            for name, values in result.items():
                fitted[name][rows] = values
            if not wanted:
                break
    model = model_path_of(lcfg.model_path).name
    write_landmarks_chunk(tmp_outputs["landmarks"], dets, fitted, model=model)


LANDMARKS = Stage(name="landmarks", help="fit 68 landmarks (dlib ERT) to every detection", version="1",
                  sections=("sources", "detect", "landmarks"), plan=plan, compute=compute)

__all__ = ["LANDMARKS", "fit_faces", "fit_one", "load_predictor", "stock_model_path", "ert_boxes_from_detections",
           "ert_boxes_from_landmarks", "fit_box_mapping", "N_POINTS"]
