"""Train, test and calibrate dlib HOG MMOD face detectors from imglab XML.

``train-detector`` wraps ``dlib.train_simple_object_detector`` (HOG features,
max-margin object detection) and reports precision / recall / average
precision on held-out XML. Two modes:

* ``--out-dir DIR`` (full frames of one's own theatre, e.g. from
  ``audience label-frames`` corrected in dlib's imglab): the labelled faces are
  grouped into rows as the detect stage groups detections, rows of small faces
  (median box side ≤ detect.back_max_face_px) train the back detector and the
  others the front one, each on strips cut and scaled around its rows exactly
  as the detect stage cuts them (``labelled_row_strips``), so the detector sees
  the same face sizes at training and detection time (window 40, upsample 0:
  the shipped detectors' settings). Writes ``detector_{front,back}.svm``.
* ``--out FILE.svm``: one detector from XML whose images are already at
  detection scale (the strips of ``make-detector-xml``, photos).

Calibration (``<detector>.calib.json`` beside each ``.svm``, see
``read_calibration``): the mapping (box_scale, box_dx, box_dy) from the
detector's box to the landmark fitter's start box, fitted on the detector's
own detections of labelled faces: first the box match
(``pipeline.landmarks.fit_box_mapping``), then a small grid around it chosen
by the final landmark error (``fit_calibration``). Training writes it; the
shipped detectors' come from real faces (``scripts/calibrate_detectors.py``).

Box convention for the shipped detectors (``face_box_from_landmarks``): a
square, side = 1.1 × the width of the 68-landmark cloud, centred horizontally
on the cloud and 0.1 × its width above its vertical centre. Measured on the 43
faces of dlib's example photos, this matches dlib's stock frontal detector
(side 1.11 ± 0.09 widths, centre 0.10 ± 0.05 widths above the cloud centre),
so the stock 68-point shape predictor can be fitted inside our boxes. Labelled
boxes are made square (side √(w·h), same centre) before training.
"""
from __future__ import annotations

import argparse
import dataclasses
import functools
import json
import math
import os
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from pipeline import __version__
from pipeline.imglab import check_images, read_dataset
from pipeline.store import DataError, atomic_path, ensure_dir, write_text_atomic

BOX_SIDE_PER_WIDTH = 1.1
BOX_RAISE_PER_WIDTH = 0.1


def face_box_from_landmarks(points_xy: np.ndarray) -> np.ndarray:
    """points (..., 68, 2) px → square boxes (..., 4) [left, top, right, bottom] px."""
    points_xy = np.asarray(points_xy, float)
    lo, hi = points_xy.min(axis=-2), points_xy.max(axis=-2)
    width = hi[..., 0] - lo[..., 0]
    cx = 0.5 * (lo[..., 0] + hi[..., 0])
    cy = 0.5 * (lo[..., 1] + hi[..., 1]) - BOX_RAISE_PER_WIDTH * width
    half = 0.5 * BOX_SIDE_PER_WIDTH * width
    return np.stack([cx - half, cy - half, cx + half, cy + half], axis=-1)


@dataclass(frozen=True)
class TrainOptions:
    C: float = 5.0                  # SVM regularisation: larger fits the training set harder
    epsilon: float = 0.01           # stop when the risk gap is below this (smaller = longer, better)
    window_px: int = 40             # detection window side: the shipped detectors' (strips hold ~44 px faces)
    flips: bool = True              # also train on left-right mirrored images
    upsample_limit: int = 0         # dlib may upsample training images at most this many times (strips: 0)
    threads: int = 2
    verbose: bool = False


@dataclass(frozen=True)
class EvalResult:
    precision: float
    recall: float
    average_precision: float
    n_images: int
    n_faces: int

    def line(self, name: str) -> str:
        return (f"{name:<10} images {self.n_images:>4}  faces {self.n_faces:>5}  precision {self.precision:6.3f}  "
                f"recall {self.recall:6.3f}  AP {self.average_precision:6.3f}")


def _checked_xml(path: str | Path, what: str):
    dataset = read_dataset(path)
    check_images(path, dataset)
    if not dataset.images:
        raise DataError(f"{what} {path} lists no images. Make one with `make-detector-xml` or imglab.")
    return dataset


def _impossible_images(message: str) -> list[str]:
    """Image names dlib lists after 'The following images contain invalid boxes:'."""
    if "invalid boxes" not in message:
        return []
    tail = message.split("invalid boxes:", 1)[1]
    return [line.strip() for line in tail.splitlines() if line.strip() and not line.strip().startswith(".")]


def _impossible_box(message: str) -> tuple[int, tuple[int, int, int, int]] | None:
    """(image index, (l, t, r, b) exclusive) of the box dlib names in 'An impossible set of object
    labels was detected … image index N … truth rect: [(l, t) (r, b)]', else None."""
    import re

    index = re.search(r"image index\s+(\d+)", message)
    rect = re.search(r"truth rect:\s*\[\((-?\d+),\s*(-?\d+)\)\s*\((-?\d+),\s*(-?\d+)\)\]", message)
    if not index or not rect:
        return None
    l, t, r, b = (int(v) for v in rect.groups())
    return int(index.group(1)), (l, t, r + 1, b + 1)


MAX_TRAINING_RETRIES = 40


def _find_box(images: list, named: tuple[int, tuple], options: TrainOptions):
    """(image, box) of our dataset that dlib's (image index, rect) names: dlib appends mirrored copies
    of all images after them (flips) and may have upsampled an image (upsample_limit)."""
    index, rect = named
    n = len(images)
    flipped = index >= n
    if flipped and (not options.flips or index >= 2 * n):
        return None
    image = images[index - n if flipped else index]
    best, best_iou = None, 0.9
    for k in range(options.upsample_limit + 1):
        l, t, r, b = (v / 2 ** k for v in rect)
        if flipped:
            if image.width is None:
                return None
            l, r = image.width - r, image.width - l
        for box in image.boxes:
            if box.ignore:
                continue
            bl, bt, br, bb = box.ltrb
            inter = max(0, min(r, br) - max(l, bl)) * max(0, min(b, bb) - max(t, bt))
            iou = inter / max((r - l) * (b - t) + (br - bl) * (bb - bt) - inter, 1e-9)
            if iou > best_iou:
                best, best_iou = box, iou
    return (image, best) if best is not None else None


def train_detector(train_xml: str | Path, out_svm: str | Path, options: TrainOptions = TrainOptions(),
                   drop_impossible: bool = True) -> Path:
    """Train a HOG MMOD detector from imglab XML and save it atomically as `out_svm`.

    dlib refuses a box that no detection window can match (HOG cells quantise
    window positions and sizes; a face at an image's edge leaves no room for the
    window). With drop_impossible such a box is marked ignore (dlib names one per
    try), or the images dlib lists as holding invalid boxes are left out, and the
    run goes on; what was changed is printed.
    """
    import dlib

    from pipeline.imglab import Dataset, write_dataset

    dataset = _checked_xml(train_xml, "training XML")
    if dataset.n_boxes == 0:
        raise DataError(f"training XML {train_xml} has no (non-ignored) boxes; a detector needs faces.")
    opts = dlib.simple_object_detector_training_options()
    opts.C = options.C
    opts.epsilon = options.epsilon
    opts.add_left_right_image_flips = options.flips
    opts.detection_window_size = int(options.window_px) ** 2
    opts.upsample_limit = options.upsample_limit
    opts.num_threads = options.threads
    opts.be_verbose = options.verbose
    out_svm = Path(out_svm)
    ensure_dir(out_svm.parent)
    xml, dropped, ignored = Path(train_xml), [], []
    images = [dataclasses.replace(im, boxes=[dataclasses.replace(b) for b in im.boxes]) for im in dataset.images]
    filtered = xml.with_name(f".{xml.stem}.trainable{xml.suffix}")
    try:
        for _ in range(MAX_TRAINING_RETRIES):
            try:
                with atomic_path(out_svm) as tmp:
                    dlib.train_simple_object_detector(str(xml), str(tmp), opts)
                break
            except RuntimeError as err:
                bad = _impossible_images(str(err)) if drop_impossible else []
                box = _impossible_box(str(err)) if drop_impossible and not bad else None
                hit = _find_box(images, box, options) if box is not None else None
                if not bad and hit is None:
                    raise DataError(f"dlib could not train on {train_xml}: {err}. Usually the boxes' "
                                    f"aspect ratios differ too much (keep boxes square) or faces are too "
                                    f"small for the window (lower --window-px or raise --upsample-limit).") from err
            if hit is not None:
                hit[1].ignore = True
                ignored.append(f"{hit[0].file} {hit[1].ltrb}")
            dropped += bad
            images = [im for im in images if im.file not in set(bad)]
            if not sum(1 for im in images for b in im.boxes if not b.ignore):
                raise DataError(f"no box of {train_xml} can be matched by a {options.window_px} px detection "
                                f"window (upsample limit {options.upsample_limit}). Lower --window-px or raise "
                                f"--upsample-limit.")
            write_dataset(filtered, Dataset(images, dataset.name, dataset.comment))
            xml = filtered
        else:
            raise DataError(f"dlib still finds boxes no detection window can match in {train_xml} after "
                            f"{MAX_TRAINING_RETRIES} fixes. Keep boxes square and faces at least "
                            f"{options.window_px} px at the training scale.")
        if dropped:
            print(f"left out {len(dropped)} of {len(dataset.images)} training images with boxes no "
                  f"detection window can match: {', '.join(dropped)}")
        if ignored:
            print(f"marked {len(ignored)} box(es) ignore that no detection window can match (at an image edge "
                  f"or off the window's size): {', '.join(ignored[:5])}{' ...' if len(ignored) > 5 else ''}")
    finally:
        filtered.unlink(missing_ok=True)
    return out_svm


def evaluate_detector(test_xml: str | Path, svm: str | Path, upsample: int = -1) -> EvalResult:
    """Precision, recall and AP of a detector on an imglab XML (dlib's matching rules)."""
    import dlib

    dataset = _checked_xml(test_xml, "test XML")
    svm = Path(svm)
    if not svm.is_file():
        raise DataError(f"detector file not found: {svm}. Train one with `train-detector` first.")
    try:
        result = dlib.test_simple_object_detector(str(test_xml), str(svm), upsample)
    except RuntimeError as err:
        raise DataError(f"cannot test {svm} on {test_xml}: {err}. Is {svm} a detector written by "
                        f"`train-detector`?") from err
    return EvalResult(result.precision, result.recall, result.average_precision, len(dataset.images),
                      dataset.n_boxes)


# ----------------------------------------------------------------------------- box → landmark calibration

CALIB_SUFFIX = ".calib.json"
CALIB_FORMAT = 1
CODE_VERSION = f"{__version__}+detector_training.{CALIB_FORMAT}"
OLD_MAPPING = {"box_scale": 1.3, "box_dx": 0.0, "box_dy": 0.0}    # landmarks.box_* defaults before calibration
_CALIB_KEYS = {"box_scale": (int, float), "box_dx": (int, float), "box_dy": (int, float), "n_faces": int,
               "source": str, "window_px": int, "face_px_range": list, "code_version": str, "training": dict}
BUILTIN_NAMES = ("dlib_frontal", "cnn", "default")


def calibration_path(svm_path: str | Path) -> Path:
    """The calibration file beside a detector: detector_front.svm → detector_front.calib.json."""
    svm_path = Path(svm_path)
    return svm_path.with_name(svm_path.stem + CALIB_SUFFIX)


def _check_calibration(calib, where: str) -> dict:
    fix = (f"Regenerate it (`audience train-detector` for your detectors, `python scripts/calibrate_detectors.py` "
           f"for the shipped ones) or delete it to fall back to landmarks.box_scale/box_dx/box_dy.")
    if not isinstance(calib, dict):
        raise DataError(f"{where}: a detector calibration must be a JSON object, got {type(calib).__name__}. {fix}")
    for key, kind in _CALIB_KEYS.items():
        if key not in calib:
            raise DataError(f"{where}: lacks '{key}' (needs {', '.join(_CALIB_KEYS)}). {fix}")
        value = calib[key]
        if isinstance(value, bool) or not isinstance(value, kind):
            raise DataError(f"{where}: '{key}' = {value!r} is not a {getattr(kind, '__name__', 'number')}. {fix}")
    _check_mapping(calib, where, fix)          # the top-level mapping, then one per landmark model
    by_model = calib.get("by_model", {})
    if not isinstance(by_model, dict):
        raise DataError(f"{where}: 'by_model' must map landmark model names to mappings. {fix}")
    for name, mapping in by_model.items():
        if not isinstance(mapping, dict):
            raise DataError(f"{where}: by_model['{name}'] must be an object with box_scale, box_dx, box_dy. {fix}")
        _check_mapping(mapping, f"{where}: by_model['{name}']", fix)
    if calib["n_faces"] < 1 or calib["window_px"] < 1:
        raise DataError(f"{where}: n_faces and window_px must be positive. {fix}")
    rng = calib["face_px_range"]
    if (len(rng) != 2 or not all(isinstance(v, (int, float)) and not isinstance(v, bool) for v in rng)
            or not 0 < rng[0] <= rng[1]):
        raise DataError(f"{where}: face_px_range {rng!r} must be [smallest, largest] box side in px. {fix}")
    return calib


def _check_mapping(mapping: dict, where: str, fix: str) -> None:
    for key in ("box_scale", "box_dx", "box_dy"):
        value = mapping.get(key)
        if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
            raise DataError(f"{where}: '{key}' = {value!r} is not a finite number. {fix}")
    if not 0.2 <= mapping["box_scale"] <= 5.0:
        raise DataError(f"{where}: box_scale {mapping['box_scale']} is outside [0.2, 5] (ERT box side / detector "
                        f"box side). {fix}")
    if abs(mapping["box_dx"]) > 1.0 or abs(mapping["box_dy"]) > 1.0:
        raise DataError(f"{where}: box_dx/box_dy ({mapping['box_dx']}, {mapping['box_dy']}) must be within ±1 box "
                        f"side. {fix}")


def read_calibration(svm_path: str | Path) -> dict | None:
    """The box → ERT-start-box calibration saved beside a detector, or None when there is none.

    Builtin detector names ('dlib_frontal', 'cnn', 'default' before resolution) have none.
    A file that exists but is malformed is a DataError naming the file, the key and the fix.
    The mapping for `pipeline.landmarks.ert_boxes_from_detections` is
    ``{k: calib[k] for k in ("box_scale", "box_dx", "box_dy")}``, fitted for the landmark model named in
    ``fitted_for``; an optional ``by_model`` holds one such mapping per landmark model ("stock", "theatre", a
    .dat's file name: `pipeline.landmarks.model_key`), which `pipeline.landmarks.box_mapping` prefers.
    """
    if str(svm_path) in BUILTIN_NAMES:
        return None
    path = calibration_path(svm_path)
    if not path.is_file():
        return None
    try:
        calib = json.loads(path.read_text())
    except (OSError, UnicodeDecodeError) as err:
        raise DataError(f"{path}: cannot read the detector calibration ({err}).") from err
    except ValueError as err:
        raise DataError(f"{path}: not valid JSON ({err}). Regenerate it (`audience train-detector`, or "
                        f"`python scripts/calibrate_detectors.py` for the shipped detectors) or delete it.") from err
    _check_calibration(calib, str(path))
    recorded, svm_path = calib.get("detector_sha256"), Path(svm_path)
    if recorded and svm_path.is_file() and recorded != _sha256(svm_path):
        raise DataError(f"{path} was fitted for another version of {svm_path.name} (the detector was retrained "
                        f"since: its sha256 differs). Refit it: `python scripts/calibrate_detectors.py` for the "
                        f"shipped detectors, `audience train-detector` for yours (it writes both); or delete "
                        f"{path.name} to fall back to landmarks.box_scale/box_dx/box_dy.")
    return calib


def _sha256(path: Path) -> str:
    import hashlib

    return hashlib.sha256(Path(path).read_bytes()).hexdigest()


def write_calibration(svm_path: str | Path, calib: dict) -> Path:
    """Check `calib` and write it atomically beside the detector; returns the file's path.

    When the detector file exists its sha256 is recorded (``detector_sha256``), so
    read_calibration refuses a calibration left over from an earlier training.
    """
    path = calibration_path(svm_path)
    _check_calibration(calib, f"calibration for {svm_path}")
    if Path(svm_path).is_file():
        calib = {**calib, "detector_sha256": _sha256(Path(svm_path))}
    write_text_atomic(path, json.dumps(calib, indent=2) + "\n")
    return path


def make_calibration(mapping: dict, n_faces: int, source: str, window_px: int, face_px_range, training: dict,
                     **extra) -> dict:
    """A calibration document (see read_calibration) from a fitted mapping and what it was fitted on."""
    calib = {"box_scale": round(float(mapping["box_scale"]), 4), "box_dx": round(float(mapping["box_dx"]), 4),
             "box_dy": round(float(mapping["box_dy"]), 4), "n_faces": int(n_faces), "source": source,
             "window_px": int(window_px),
             "face_px_range": [round(float(face_px_range[0]), 1), round(float(face_px_range[1]), 1)],
             "code_version": CODE_VERSION, "training": dict(training)}
    calib.update(extra)
    return calib


def match_boxes(det_box_px: np.ndarray, ref_box_px: np.ndarray, min_iou: float = 0.3) -> np.ndarray:
    """Greedy one-to-one matching by IoU: for each reference box (R, 4), the index of its detection
    in det_box_px (D, 4), or -1 when none overlaps it by at least min_iou. (R,) int."""
    from pipeline.detect import box_iou

    det, ref = np.asarray(det_box_px, float).reshape(-1, 4), np.asarray(ref_box_px, float).reshape(-1, 4)
    out = np.full(len(ref), -1, np.int64)
    if not len(det) or not len(ref):
        return out
    iou = box_iou(ref, det)
    for flat in np.argsort(-iou, axis=None):
        r, d = np.unravel_index(flat, iou.shape)
        if iou[r, d] < min_iou:
            break
        if out[r] < 0 and d not in out:
            out[r] = d
    return out


@dataclass
class CalibrationSet:
    """Detections matched to reference landmarks, grouped by the image they were found in.

    images[i] (H, W) uint8 is what the landmark stage sees (the full frame, not
    a detection strip); det_box_px[i] (n_i, 4) full-frame px; landmarks_px[i] (n_i, 68, 2).
    """
    images: list
    det_box_px: list
    landmarks_px: list

    @property
    def n_faces(self) -> int:
        return int(sum(len(b) for b in self.det_box_px))

    def all_boxes(self) -> np.ndarray:
        return np.concatenate(self.det_box_px) if self.det_box_px else np.zeros((0, 4))

    def all_landmarks(self) -> np.ndarray:
        return np.concatenate(self.landmarks_px) if self.landmarks_px else np.zeros((0, 68, 2))


MISFIT_ERROR = 0.5     # a fit this far off (÷ eye-centre distance) counts as failed in the search objective


def landmark_errors(model, faces: CalibrationSet, lcfg, mapping: dict | None = None,
                    ideal: bool = False) -> np.ndarray:
    """Per-face landmark error (mean point distance ÷ reference eye-centre distance; NaN = no fit)
    when the ERT starts from the detector box mapped by `mapping` (or, with ideal, from the ERT
    box of the reference landmarks). lcfg: a LandmarksConfig (engine, refine passes, …)."""
    from pipeline.frontalize import normalized_error
    from pipeline.landmarks import ert_boxes_from_landmarks, fit_faces

    if ideal:
        mapping = {"box_scale": 1.0, "box_dx": 0.0, "box_dy": 0.0}
    cfg = dataclasses.replace(lcfg, **{k: float(v) for k, v in (mapping or {}).items()
                                       if k in ("box_scale", "box_dx", "box_dy")})
    errors = []
    for image, boxes, ref in zip(faces.images, faces.det_box_px, faces.landmarks_px):
        if not len(boxes):
            continue
        start = ert_boxes_from_landmarks(ref) if ideal else boxes
        fit = fit_faces(model, image, start, cfg)
        errors.append(normalized_error(fit["landmarks_px"], ref))
    return np.concatenate(errors) if errors else np.zeros(0)


def search_objective(errors: np.ndarray) -> float:
    """Mean error with gross misfits (and failed fits) capped at MISFIT_ERROR."""
    e = np.where(np.isfinite(errors), np.minimum(errors, MISFIT_ERROR), MISFIT_ERROR)
    return float(e.mean()) if e.size else float("nan")


def fit_calibration(faces: CalibrationSet, model=None, lcfg=None, search: bool = True,
                    scale_steps=(0.9, 1.0, 1.1, 1.2, 1.3), dy_steps=(-0.15, -0.1, -0.05, 0.0, 0.05),
                    dx_steps=(0.0,)) -> tuple[dict, dict]:
    """(mapping, report) for a detector from its matched detections.

    First the box match (`pipeline.landmarks.fit_box_mapping`: the median scale and
    shift taking detector boxes onto the reference landmarks' ERT boxes). With
    search (needs the ERT `model` and a LandmarksConfig `lcfg`), the mapping is then
    picked from a small grid around it (box_scale × scale_steps, box_dy + dy_steps,
    box_dx + dx_steps) by the final landmark error (`search_objective`): the ERT's
    refine passes forgive some offsets and not others, and a larger start box
    trades precision for fewer gross misfits on tiny faces.
    """
    from pipeline.landmarks import fit_box_mapping

    box = fit_box_mapping(faces.all_boxes(), faces.all_landmarks())
    report = {"box_match": {k: round(v, 4) for k, v in box.items()}}
    if not search or model is None or lcfg is None:
        report["method"] = "box match (median scale and shift onto the reference landmarks' ERT boxes)"
        return box, report
    scores = {}
    for fs in scale_steps:
        for ddy in dy_steps:
            for ddx in dx_steps:
                cand = {"box_scale": box["box_scale"] * fs, "box_dx": box["box_dx"] + ddx,
                        "box_dy": box["box_dy"] + ddy}
                scores[(fs, ddy, ddx)] = (search_objective(landmark_errors(model, faces, lcfg, cand)), cand)
    best_key = min(scores, key=lambda k: scores[k][0])
    best = scores[best_key][1]
    report["method"] = (f"grid around the box match by landmark error (mean, misfits capped at {MISFIT_ERROR}): "
                        f"scale x {list(scale_steps)}, dy + {list(dy_steps)}, dx + {list(dx_steps)}")
    report["objective_box_match"] = round(scores.get((1.0, 0.0, 0.0), (float('nan'),))[0], 4)
    report["objective_best"] = round(scores[best_key][0], 4)
    return {k: float(v) for k, v in best.items()}, report


# ----------------------------------------------------------------------------- labelled images (full frames or strips)

BACK_MAX_FACE_PX = 28.0   # rows whose median face-box side is at most this (full-frame px) go to the back
                          # detector: detect.back_max_face_px, the detect stage's rule (shipped back rows
                          # are 18-22 px, front rows 24-48 px); used when the config has no such key
MIN_TRAIN_FACE_PX = 12.0  # smaller labelled faces carry too little detail for HOG (8 px cells) to learn from
ROW_SCALES = (1.0, 0.85)  # each labelled row is cut at the detect stage's row-strip scale (faces about
                          # detect.target_face_px / detect.row_min_face_frac) and at 0.85 of it (its band-strip
                          # scale: faces about detect.target_face_px), the two sizes faces have at run time
MAX_CALIBRATION_FACES = 400


@dataclass
class LabelledImage:
    """One image of an imglab XML with its boxes as float arrays (square, [l, t, r, b] px)."""
    file: str
    image: np.ndarray          # (H, W) uint8 grey, as the detectors see it
    boxes_px: np.ndarray       # (N, 4) faces (squared: side √(w·h), same centre)
    ignore_px: np.ndarray      # (M, 4) ignore boxes (as labelled)
    parts_px: np.ndarray       # (N, 68, 2) labelled landmarks, NaN where a box has no 68 parts

    @property
    def sides_px(self) -> np.ndarray:
        return self.boxes_px[:, 2] - self.boxes_px[:, 0]


def _square(l: float, t: float, r: float, b: float) -> list[float]:
    side, cx, cy = np.sqrt(max(r - l, 0) * max(b - t, 0)), 0.5 * (l + r), 0.5 * (t + b)
    return [cx - side / 2, cy - side / 2, cx + side / 2, cy + side / 2]


def read_labelled_images(xml_path: str | Path, what: str = "training XML",
                         min_face_px: float | None = MIN_TRAIN_FACE_PX) -> list[LabelledImage]:
    """Load an imglab XML and its images, checking what training needs.

    Errors (DataError, naming the file, the problem and the fix): no images,
    a missing or unreadable image file, a box with no area or outside its
    image, no face boxes at all, faces smaller than `min_face_px`.
    """
    import cv2

    xml_path = Path(xml_path)
    dataset = read_dataset(xml_path)
    if not dataset.images:
        raise DataError(f"{what} {xml_path} lists no images. Make one with `audience label-frames` and correct "
                        f"it in dlib's imglab.")
    check_images(xml_path, dataset)
    out, small = [], []
    for entry in dataset.images:
        path = xml_path.parent / entry.file
        image = cv2.imread(str(path), cv2.IMREAD_GRAYSCALE)
        if image is None:
            raise DataError(f"{what} {xml_path}: image {path} cannot be read (not an image, or corrupt). "
                            f"Replace the file or remove its <image> entry.")
        height, width = image.shape
        boxes, ignore, parts = [], [], []
        for k, box in enumerate(entry.boxes, 1):
            l, t, r, b = box.ltrb
            side = max(box.width, box.height)
            if box.width <= 0 or box.height <= 0 or (l < -0.25 * side or t < -0.25 * side
                                                      or r > width + 0.25 * side or b > height + 0.25 * side):
                raise DataError(
                    f"{what} {xml_path}: box {k} of {entry.file} (left {box.left}, top {box.top}, width "
                    f"{box.width}, height {box.height}) lies outside the {width}x{height} image or has no area. "
                    f"Fix or delete it in imglab (a face cut by the frame's edge: select it and press i to "
                    f"mark it ignore).")
            if box.ignore:
                ignore.append([l, t, r, b])
                continue
            sq = _square(l, t, r, b)
            if min_face_px and sq[2] - sq[0] < min_face_px:
                small.append(f"{entry.file} box {k} ({box.width}x{box.height} px)")
            boxes.append(sq)
            pts = np.full((68, 2), np.nan)
            if len(box.parts) == 68:
                pts = np.array([box.parts[n] for n in sorted(box.parts)], float)
            parts.append(pts)
        out.append(LabelledImage(entry.file, image, np.array(boxes, float).reshape(-1, 4),
                                 np.array(ignore, float).reshape(-1, 4), np.array(parts, float).reshape(-1, 68, 2)))
    if small:
        raise DataError(
            f"{what} {xml_path}: {len(small)} face box(es) are smaller than {min_face_px:.0f} px, too small to "
            f"train on (HOG reads 8 px cells; the detect stage upsamples faces to detect.target_face_px, which "
            f"adds no detail), e.g. {', '.join(small[:3])}. If the frames were downscaled for labelling, label "
            f"the full-resolution frames (`audience label-frames` writes them) or upsample the images and their "
            f"boxes together; faces that really are this small need a higher-resolution recording or a zoomed "
            f"camera. To keep the rest, mark these boxes ignore in imglab (select, press i).")
    if not sum(len(im.boxes_px) for im in out):
        raise DataError(f"{what} {xml_path} holds {len(out)} image(s) but no face boxes (ignore boxes aside): "
                        f"an empty labelled set. Draw a box around every face in imglab (shift + left-drag), "
                        f"save, and rerun.")
    return out


def back_max_face_px(cfg) -> float:
    """The detect stage's front/back rule: rows of faces up to this box side use the back detector."""
    return float(getattr(cfg.detect, "back_max_face_px", BACK_MAX_FACE_PX))


def labelled_rows(item: LabelledImage, cfg, back_max_px: float | None = None) -> list[tuple[int, np.ndarray]]:
    """The labelled faces grouped into seat rows as the detect stage groups detections: [(band_id, indices)].

    `pipeline.geometry.cluster_rows` (a new row where the gap in centre y exceeds
    detect.row_gap_faces × the row's median box side); a row whose median box side
    is at most back_max_px (default detect.back_max_face_px) belongs to the back detector.
    """
    from pipeline.detect import BAND_BACK, BAND_FRONT
    from pipeline.geometry import cluster_rows

    limit = back_max_face_px(cfg) if back_max_px is None else back_max_px
    side = item.sides_px
    return [(BAND_BACK if np.median(side[g]) <= limit else BAND_FRONT, g)
            for g in cluster_rows(item.boxes_px, cfg.detect.row_gap_faces)]


def row_strip_of(boxes_px: np.ndarray, band_id: int, cfg, height_px: int, width_px: int, scale_mult: float = 1.0):
    """The detect stage's strip around one row of faces (D, 4) (`pipeline.geometry.row_strip`: their
    extent plus detect.row_margin_faces above and below, 2 faces left and right, scaled so faces down
    to detect.row_min_face_frac of the row's median side reach detect.target_face_px), × scale_mult."""
    from pipeline.geometry import row_strip

    face = float(np.median(boxes_px[:, 2] - boxes_px[:, 0]))
    strip = row_strip(int(band_id), boxes_px[:, 1].min(), boxes_px[:, 3].max(), boxes_px[:, 0].min(),
                      boxes_px[:, 2].max(), face, cfg, height_px, width_px)
    return dataclasses.replace(strip, scale=strip.scale * scale_mult)


def face_bands(item: LabelledImage, cfg, back_max_px: float | None = None) -> np.ndarray:
    """(N,) band id of each labelled face: the detector of its row."""
    out = np.zeros(len(item.boxes_px), np.int8)
    for band_id, g in labelled_rows(item, cfg, back_max_px):
        out[g] = band_id
    return out


def labelled_row_strips(item: LabelledImage, cfg, back_max_px: float | None = None, row_scales=(1.0,)) -> list:
    """The detect stage's row strips around the labelled faces, each at every multiplier in row_scales."""
    height, width = item.image.shape
    return [row_strip_of(item.boxes_px[g], band_id, cfg, height, width, m)
            for band_id, g in labelled_rows(item, cfg, back_max_px) for m in row_scales]


def make_strip_xml(items: list[LabelledImage], cfg, out_dir: str | Path, back_max_px: float | None = None,
                   row_scales=ROW_SCALES, title: str = "") -> dict[str, Path]:
    """Cut labelled full frames into the detect stage's strips: {front,back}.xml + PNGs under out_dir."""
    from pipeline.detect import BAND_BACK, BAND_FRONT
    from pipeline.imglab import Dataset, write_dataset

    out_dir = ensure_dir(Path(out_dir))
    limit = back_max_face_px(cfg) if back_max_px is None else back_max_px
    per_band: dict[int, list] = {BAND_FRONT: [], BAND_BACK: []}
    for i, item in enumerate(items):
        strips = labelled_row_strips(item, cfg, back_max_px, row_scales)
        stem = f"{i:04d}_{Path(item.file).stem}"
        for band_id, entries in cut_strip_entries(item.image, item.boxes_px, item.ignore_px, strips, stem,
                                                  out_dir).items():
            per_band[band_id].extend(entries)
    paths = {}
    for band_id, name in ((BAND_FRONT, "front"), (BAND_BACK, "back")):
        paths[name] = write_dataset(out_dir / f"{name}.xml", Dataset(
            per_band[band_id], name=f"{title} {name}-row strips".strip(),
            comment=f"cut from full frames by pipeline.detector_training.make_strip_xml: rows of faces with median "
                    f"box side {'<=' if band_id == BAND_BACK else '>'} {limit:g} px, row strips x {list(row_scales)}"))
    return paths


# ----------------------------------------------------------------------------- calibration from labelled images


def _reference_landmarks(item: LabelledImage, index: np.ndarray, model, lcfg) -> tuple[np.ndarray, int]:
    """68 points of the labelled faces `index`: their XML parts, else the stock ERT fitted inside the
    labelled box (taken as the ERT's own box convention). → ((n, 68, 2), how many came from parts)."""
    from pipeline.landmarks import fit_faces

    pts = item.parts_px[index].copy()
    missing = ~np.isfinite(pts).all(axis=(1, 2))
    if missing.any():
        cfg = dataclasses.replace(lcfg, box_scale=1.0, box_dx=0.0, box_dy=0.0)
        pts[missing] = fit_faces(model, item.image, item.boxes_px[index][missing], cfg)["landmarks_px"]
    return pts, int((~missing).sum())


def calibration_set(items: list[LabelledImage], find, model, lcfg, max_faces: int = MAX_CALIBRATION_FACES,
                    seed: int = 0) -> tuple[CalibrationSet, int]:
    """Detections matched to labelled faces. find(item) → (det boxes (D, 4) px, labelled indices it
    searched (K,)). → (CalibrationSet, faces whose reference came from XML parts)."""
    images, dets, refs, from_parts = [], [], [], 0
    for item in items:
        boxes, index = find(item)
        if not len(index):
            continue
        hit = match_boxes(boxes, item.boxes_px[index])
        found = index[hit >= 0]
        if not len(found):
            continue
        pts, n_parts = _reference_landmarks(item, found, model, lcfg)
        ok = np.isfinite(pts).all(axis=(1, 2))
        images.append(item.image)
        dets.append(np.asarray(boxes, float)[hit[hit >= 0]][ok])
        refs.append(pts[ok])
        from_parts += n_parts
    faces = CalibrationSet(images, dets, refs)
    if faces.n_faces > max_faces:         # a random subset keeps the grid search quick
        rng = np.random.default_rng(seed)
        keep = set(rng.choice(faces.n_faces, max_faces, replace=False).tolist())
        start, sub = 0, CalibrationSet([], [], [])
        for image, d, r in zip(images, dets, refs):
            sel = np.array([start + j in keep for j in range(len(d))], bool)
            start += len(d)
            if sel.any():
                sub.images.append(image)
                sub.det_box_px.append(d[sel])
                sub.landmarks_px.append(r[sel])
        faces = sub
    return faces, from_parts


def _run_hog(detector, image: np.ndarray, upsample: int, threshold: float) -> np.ndarray:
    import dlib

    rects, _, _ = dlib.fhog_object_detector.run_multiple([detector], image, upsample, threshold)
    return np.array([[r.left(), r.top(), r.right() + 1, r.bottom() + 1] for r in rects], float).reshape(-1, 4)


def calibrate_detector(svm: str | Path, items: list[LabelledImage], cfg, find=None, source: str = "",
                       training: dict | None = None, face_px_range=None, search: bool = True) -> dict | None:
    """Fit and write `svm`'s calibration from its detections on labelled images; None (and a printed
    reason) when fewer than 3 labelled faces were found. find: see calibration_set (default: the whole
    image, no upsampling)."""
    from pipeline.detect import HogDetector
    from pipeline.landmarks import load_landmarker

    detector = HogDetector(str(svm))
    threshold = cfg.detect.threshold
    if find is None:
        def find(item):
            return _run_hog(detector.detector, item.image, 0, threshold), np.arange(len(item.boxes_px))
    if cfg.detect.refine_boxes:              # as the detect stage does: the calibration maps the boxes it writes
        found = find

        def find(item):
            boxes, index = found(item)
            return np.array([detector.refine(item.image, b) for b in boxes], np.float32).reshape(-1, 4), index
    model = load_landmarker(cfg.landmarks)
    faces, from_parts = calibration_set(items, find, model, cfg.landmarks)
    if faces.n_faces < 3:
        print(f"  {Path(svm).name}: found only {faces.n_faces} labelled face(s) at detect.threshold {threshold}; "
              f"no calibration written (the landmark stage uses landmarks.box_scale/box_dx/box_dy)")
        return None
    mapping, report = fit_calibration(faces, model, cfg.landmarks, search=search)
    refs = (f"{from_parts} with the XML's 68 parts, {faces.n_faces - from_parts} from the stock ERT fitted inside "
            f"the labelled box") if from_parts < faces.n_faces else "the XML's 68 parts"
    sides = face_px_range or (0.0, 0.0)
    calib = make_calibration(mapping, faces.n_faces, f"{source}; references: {refs}; {report['method']}",
                             window_px=detector.window_hw[1], face_px_range=sides, training=training or {},
                             box_match=report["box_match"])
    write_calibration(svm, calib)
    print(f"  {calibration_path(svm).name}: box_scale {mapping['box_scale']:.3f}  box_dx {mapping['box_dx']:+.3f}  "
          f"box_dy {mapping['box_dy']:+.3f}  ({faces.n_faces} faces)")
    return calib


# ----------------------------------------------------------------------------- full-frame XML → both detectors


def auto_window_px(target_face_px: float) -> int:
    """The HOG window for strips whose faces are about target_face_px: the largest multiple of 8
    not above 0.92 × target (44 → 40, the shipped detectors' window)."""
    return max(24, int(8 * np.floor(0.92 * target_face_px / 8)))


def evaluate_full_frames(items: list[LabelledImage], svms: dict, cfg, back_max_px: float | None = None,
                         min_iou: float = 0.5) -> EvalResult:
    """Both detectors on labelled full frames, searched the way the detect stage searches rows it knows
    (row strips around the labelled faces, detect_strip, merged across strips): precision and recall
    at detect.threshold, AP over all detections scoring above 0 (dlib's convention). A detection on an
    ignore box counts neither way. svms: {BAND_FRONT: path, BAND_BACK: path} (a band may be absent)."""
    from pipeline.detect import HogDetector, box_iou, detect_strip, merge_detections

    detectors = {band: HogDetector(str(path)) for band, path in svms.items()}
    ranked, n_truth, threshold = [], 0, cfg.detect.threshold
    for item in items:
        boxes, scores = [np.zeros((0, 4), np.float32)], [np.zeros(0, np.float32)]
        for strip in labelled_row_strips(item, cfg, back_max_px):
            if strip.band_id in detectors:
                b, s = detect_strip(detectors[strip.band_id], item.image, strip, min(0.0, threshold))
                boxes.append(b)
                scores.append(s)
        boxes, scores = np.concatenate(boxes), np.concatenate(scores)
        keep = merge_detections(boxes, scores, cfg.detect.merge_iou)
        boxes, scores = boxes[keep], scores[keep]
        truth = item.boxes_px[np.isin(face_bands(item, cfg, back_max_px), list(detectors))]
        n_truth += len(truth)
        hit = match_boxes(boxes, truth, min_iou)
        tp = np.zeros(len(boxes), bool)
        tp[hit[hit >= 0]] = True
        ignored = (~tp & (box_iou(boxes, item.ignore_px).max(axis=1) >= min_iou)) if len(item.ignore_px) \
            else np.zeros(len(boxes), bool)
        ranked += [(float(s), bool(t)) for s, t, ig in zip(scores, tp, ignored) if not ig]
    ranked.sort(key=lambda st: -st[0])
    above = [t for s, t in ranked if s >= threshold]
    precision = sum(above) / len(above) if above else 1.0
    recall = sum(above) / n_truth if n_truth else 0.0
    hits, ap = 0, 0.0
    for k, (_, t) in enumerate(ranked, 1):
        if t:
            hits += 1
            ap += hits / k
    return EvalResult(precision, recall, ap / n_truth if n_truth else 0.0, len(items), n_truth)


def train_full_frame(train_xml: str | Path, out_dir: str | Path, cfg, options: TrainOptions | None = None,
                     back_max_px: float | None = None, row_scales=ROW_SCALES, test_xml: str | Path | None = None,
                     calibrate: bool = True) -> dict:
    """Full-frame imglab XML of one's own theatre → detector_front.svm and detector_back.svm (+ their
    .calib.json) in out_dir, and their scores on a held-out full-frame test XML.

    Labelled faces are grouped into rows as the detect stage groups detections; a
    row whose median box side is at most back_max_px (default detect.back_max_face_px)
    trains the back detector. Each detector trains on strips cut around its rows
    exactly as the detect stage cuts and scales them (faces come out about
    detect.target_face_px), at each multiplier in row_scales, with the HOG window
    from auto_window_px and no upsampling (the shipped detectors' settings).
    Returns {"front"/"back": {"svm", "train", "test_strips", "calibration"}, "test": EvalResult}.
    """
    from pipeline.detect import BAND_BACK, BAND_FRONT, detect_strip

    out_dir = ensure_dir(Path(out_dir))
    limit = back_max_face_px(cfg) if back_max_px is None else float(back_max_px)
    target = float(cfg.detect.target_face_px)
    options = options or dataclasses.replace(TrainOptions(), window_px=auto_window_px(target), upsample_limit=0)
    if options.window_px > 1.1 * target:
        raise DataError(f"--window-px {options.window_px} is larger than the faces on the detection strips "
                        f"(detect.target_face_px {target:.0f}): no face would fill the window. Use "
                        f"--window-px {auto_window_px(target)}, or raise detect.target_face_px for training and "
                        f"detection alike.")
    items = read_labelled_images(train_xml, "training XML")
    test_items = read_labelled_images(test_xml, "test XML") if test_xml else []
    bands = [face_bands(item, cfg, limit) for item in items]
    all_bands, all_sides = np.concatenate(bands), np.concatenate([im.sides_px for im in items])
    print(f"{train_xml}: {len(items)} frames, {len(all_sides)} faces: {int((all_bands == BAND_FRONT).sum())} in "
          f"front rows, {int((all_bands == BAND_BACK).sum())} in back rows (median box side <= {limit:g} px)")
    strips = make_strip_xml(items, cfg, out_dir / "strips" / "train", limit, row_scales, "training")
    test_strips = (make_strip_xml(test_items, cfg, out_dir / "strips" / "test", limit, row_scales, "test")
                   if test_items else {})
    training = {"C": options.C, "epsilon": options.epsilon, "window_px": options.window_px,
                "upsample_limit": options.upsample_limit, "flips": options.flips, "back_max_face_px": limit,
                "row_scales": list(row_scales), "target_face_px": target,
                "row_min_face_frac": cfg.detect.row_min_face_frac, "row_margin_faces": cfg.detect.row_margin_faces,
                "row_gap_faces": cfg.detect.row_gap_faces, "train_xml": str(train_xml), "frames": len(items)}
    results, svms = {}, {}
    for band_id, name in ((BAND_FRONT, "front"), (BAND_BACK, "back")):
        n = int((all_bands == band_id).sum())
        if not n:
            print(f"{name}: no labelled {name}-row faces (rows of median box side "
                  f"{'<=' if band_id == BAND_BACK else '>'} {limit:g} px): no {name} detector trained. Keep "
                  f"detect.{name}_detector=default, label {name}-row faces, or change --back-max-face-px.")
            continue
        svm = out_dir / f"detector_{name}.svm"
        print(f"{name}: training on {n} faces in {len(read_dataset(strips[name]).images)} strips "
              f"(window {options.window_px} px, upsample {options.upsample_limit}) ...", flush=True)
        train_detector(strips[name], svm, options)
        _cached_hog.cache_clear()
        svms[band_id] = svm
        result = {"svm": svm, "train": evaluate_detector(strips[name], svm, upsample=0)}
        print(result["train"].line(f"{name} train"))
        if test_strips and read_dataset(test_strips[name]).n_boxes:
            result["test_strips"] = evaluate_detector(test_strips[name], svm, upsample=0)
            print(result["test_strips"].line(f"{name} test"))
        if calibrate:
            detector = _cached_hog(str(svm))

            def find(item, band_id=band_id, detector=detector):
                index = np.flatnonzero(face_bands(item, cfg, limit) == band_id)
                found = [detect_strip(detector, item.image, s, cfg.detect.threshold)[0]
                         for s in labelled_row_strips(item, cfg, limit) if s.band_id == band_id]
                return (np.concatenate(found) if found else np.zeros((0, 4))), index

            sides = all_sides[all_bands == band_id]
            result["calibration"] = calibrate_detector(
                svm, items, cfg, find, source=f"{name}-row faces labelled in {train_xml}, found by this detector "
                                              f"in the detect stage's row strips at detect.threshold",
                training=training, face_px_range=(float(sides.min()), float(sides.max())))
        results[name] = result
    if test_items and svms:
        results["test"] = evaluate_full_frames(test_items, svms, cfg, limit)
        print(results["test"].line("full-frame test (both detectors, rows from the labels)"))
    if limit != back_max_face_px(cfg):
        print(f"note: detect with detect.back_max_face_px={limit:g} so rows go to the detector trained for them")
    return results


@functools.lru_cache(maxsize=4)
def _cached_hog(path: str):
    from pipeline.detect import HogDetector

    return HogDetector(path)


# ----------------------------------------------------------------------------- command line


def add_train_detector_args(parser: argparse.ArgumentParser) -> argparse.ArgumentParser:
    """scripts/train_detector.py: the XML as a positional argument, config from --config/--set."""
    parser.add_argument("train_xml", help="imglab XML with the training images and face boxes")
    parser.add_argument("--config", action="append", default=[], help="config overlay YAML (repeatable)")
    parser.add_argument("--set", action="append", default=[], metavar="SECTION.KEY=VALUE",
                        help="config override (repeatable)")
    return _add_training_options(parser)


TRAIN_HELP = """\
Two modes:
  --out-dir DIR   full-frame XML of your own theatre (e.g. from `audience label-frames`, corrected in dlib's
                  imglab) -> DIR/detector_front.svm and DIR/detector_back.svm, each with its .calib.json (the
                  box -> landmark start-box calibration the landmark stage reads). Faces are grouped into
                  rows; rows whose median box side is at most --back-max-face-px (detect.back_max_face_px,
                  28) train the back detector, the others the front one. Each detector trains on strips cut around the
                  labelled rows and scaled exactly as the detect stage scales them, so faces come out about
                  detect.target_face_px (44) wide: window 40, no upsampling, as the shipped detectors.
                  Then: audience detect detect.front_detector=DIR/detector_front.svm \\
                                        detect.back_detector=DIR/detector_back.svm
  --out FILE.svm  one detector from XML whose images are already at detection scale (e.g. the strips of
                  `make-detector-xml`, or photos): trained as given, calibration written beside it.
--test-xml (held out, same kind of XML) prints precision/recall/AP.
"""


def _add_training_options(parser: argparse.ArgumentParser) -> argparse.ArgumentParser:
    parser.add_argument("--test-xml", help="held-out imglab XML (same kind as the training XML) to report "
                                           "precision/recall/AP on")
    out = parser.add_mutually_exclusive_group(required=True)
    out.add_argument("--out-dir", help="full-frame mode: folder for detector_{front,back}.svm (+ .calib.json)")
    out.add_argument("--out", help="single mode: where to save the detector (.svm) trained on the XML as given")
    parser.add_argument("--back-max-face-px", type=float, default=None,
                        help="full-frame mode: rows whose median face-box side is at most this many px train the "
                             f"back detector (default: detect.back_max_face_px, {BACK_MAX_FACE_PX:g}, the detect "
                             "stage's rule; shipped back rows are 18-22 px, front rows 24-48 px)")
    parser.add_argument("--row-scales", default=",".join(f"{s:g}" for s in ROW_SCALES),
                        help="full-frame mode: each labelled row is cut at these multiples of the detect stage's "
                             "row-strip scale (default %(default)s: row strips and band strips)")
    parser.add_argument("--C", type=float, default=TrainOptions.C, help="SVM C (default %(default)s)")
    parser.add_argument("--epsilon", type=float, default=TrainOptions.epsilon,
                        help="stopping tolerance (default %(default)s)")
    parser.add_argument("--window-px", type=int, default=None,
                        help="HOG window side in px (default: 40 = 0.92 x detect.target_face_px in full-frame "
                             "mode; 40 in single mode, as the shipped detectors)")
    parser.add_argument("--upsample-limit", type=int, default=None,
                        help="times dlib may upsample training images (default: 0 in full-frame mode, the strips "
                             "are scaled already; single mode: just enough for the smallest faces to fill the "
                             "window, at most 3)")
    parser.add_argument("--no-flips", action="store_true", help="do not add mirrored training images")
    parser.add_argument("--no-calibrate", action="store_true", help="do not write the .calib.json")
    parser.add_argument("--threads", type=int, default=min(2, os.cpu_count() or 1))
    parser.add_argument("--verbose", action="store_true", help="print dlib's training progress")
    return parser


def _single_mode_upsample(items: list[LabelledImage], window_px: int) -> int:
    """Least upsampling (≤ 3) that lets the smallest 5 % of faces fill the window (dlib matches a face
    to a window down to ~0.8 of its side); DataError when even 3 is not enough for most faces."""
    sides = np.concatenate([im.sides_px for im in items])
    small = float(np.percentile(sides, 5))
    for up in range(4):
        if small * 2 ** up >= 0.8 * window_px:
            return up
    if float(np.median(sides)) * 8 < 0.8 * window_px:
        raise DataError(f"faces are too small for a {window_px} px window even upsampled 3 times (median box side "
                        f"{np.median(sides):.0f} px; the minimum is {0.1 * window_px:.0f} px). Use --out-dir "
                        f"(full-frame mode scales strips to the window) or a smaller --window-px.")
    return 3


def train_detector_main(args: argparse.Namespace, cfg=None) -> int:
    if cfg is None:
        from configs.schema import load_config

        cfg = load_config(getattr(args, "config", []), getattr(args, "set", []))
    try:
        row_scales = tuple(float(v) for v in str(args.row_scales).split(",") if v.strip())
    except ValueError:
        raise DataError(f"--row-scales {args.row_scales!r}: give comma-separated numbers, e.g. 1,0.85") from None
    if not row_scales or min(row_scales) <= 0:
        raise DataError(f"--row-scales {args.row_scales!r}: give positive numbers, e.g. 1,0.85")
    window = args.window_px or (auto_window_px(cfg.detect.target_face_px) if args.out_dir else 40)
    options = TrainOptions(C=args.C, epsilon=args.epsilon, window_px=window, flips=not args.no_flips,
                           upsample_limit=0 if args.upsample_limit is None else args.upsample_limit,
                           threads=args.threads, verbose=args.verbose)
    if args.out_dir:
        train_full_frame(args.train_xml, args.out_dir, cfg, options, args.back_max_face_px, row_scales, args.test_xml,
                         calibrate=not args.no_calibrate)
        front, back = Path(args.out_dir) / "detector_front.svm", Path(args.out_dir) / "detector_back.svm"
        print(f"\nnext: audience detect detect.front_detector={front if front.is_file() else 'default'} "
              f"detect.back_detector={back if back.is_file() else 'default'}")
        return 0
    items = read_labelled_images(args.train_xml, "training XML", min_face_px=None)
    if args.upsample_limit is None:
        options = dataclasses.replace(options, upsample_limit=_single_mode_upsample(items, window))
    out = train_detector(args.train_xml, args.out, options)
    print(f"saved {out} ({out.stat().st_size / 1024:.0f} KiB; window {window} px, upsample {options.upsample_limit})")
    print(evaluate_detector(args.train_xml, out).line("train"))
    if not args.no_calibrate:
        detector = _cached_hog(str(out))

        def find(item):
            return (_run_hog(detector.detector, item.image, options.upsample_limit, cfg.detect.threshold),
                    np.arange(len(item.boxes_px)))

        sides = np.concatenate([im.sides_px for im in items])
        calibrate_detector(out, items, cfg, find, source=f"faces labelled in {args.train_xml}, found by this "
                                                           f"detector at detect.threshold",
                           training=dataclasses.asdict(options) | {"train_xml": str(args.train_xml)},
                           face_px_range=(float(sides.min()), float(sides.max())))
    if args.test_xml:
        print(evaluate_detector(args.test_xml, out).line("test"))
    return 0



# ----------------------------------------------------------------------------- synthetic training XML


@dataclass(frozen=True)
class SyntheticFrame:
    """One rendered synthetic frame with its faces in our box convention."""
    image: np.ndarray          # (H, W) uint8
    boxes_px: np.ndarray       # (V, 4) [left, top, right, bottom], NaN where the face is not visible
    ignore_px: np.ndarray      # (V, 4) generous boxes of occluded faces (neither positive nor negative), else NaN
    row: np.ndarray            # (V,) seat row of each viewer (0 = front)
    meta: dict                 # the session.yaml document
    time_s: float


def synthetic_frames(syn, session: str, camera: str, times_s) -> list[SyntheticFrame]:
    """Render the synthetic theatre's frames at `times_s` for one (session, camera).

    syn: a SyntheticConfig. Frames come from the same simulator and renderer as
    the synthesize stage (so from the same seeds they match its video frames).
    """
    import yaml

    from pipeline.synthetic.animation import OCCLUDED, VISIBLE, rng_for
    from pipeline.synthetic.render import build_scene, render_frame
    from pipeline.synthetic.stage import session_yaml, simulate

    frames_idx = [int(round(t * syn.fps)) for t in times_s]
    sim = simulate(syn, session, camera, frames=max(frames_idx) + 1)
    scene = build_scene(sim.layout, sim.audience, syn.noise_std, rng_for(syn, syn.movie, session, camera, "scene"))
    rng = rng_for(syn, syn.movie, session, camera, "frames")
    meta = yaml.safe_load(session_yaml(syn, sim.layout, session, sim.offset_s))
    anim, out = sim.anim, []
    rows = sim.layout.row[sim.audience.seat]
    for f in frames_idx:
        state = anim.state[f]
        boxes = np.full((len(state), 4), np.nan)
        vis = state == VISIBLE
        if vis.any():
            boxes[vis] = face_box_from_landmarks(anim.image[f, vis])
        ignore = np.full((len(state), 4), np.nan)
        hidden = state == OCCLUDED          # a turned-away head (back of the head) stays a negative
        half = 0.9 * anim.scale_px[hidden]
        centre = anim.centre_px[f, hidden]
        ignore[hidden] = np.stack([centre[:, 0] - half, centre[:, 1] - 1.3 * half,
                                   centre[:, 0] + half, centre[:, 1] + 0.9 * half], axis=1)
        out.append(SyntheticFrame(render_frame(scene, anim, f, rng), boxes, ignore, rows, meta, f / syn.fps))
    return out


def strip_dataset_entries(frame: SyntheticFrame, strips, file_stem: str, out_dir: Path, min_visible_frac=0.999):
    """Cut a synthetic frame into detection strips (see cut_strip_entries)."""
    return cut_strip_entries(frame.image, frame.boxes_px, frame.ignore_px, strips, file_stem, out_dir,
                             min_visible_frac)


def cut_strip_entries(image: np.ndarray, boxes_px: np.ndarray, ignore_px: np.ndarray, strips, file_stem: str,
                      out_dir: Path, min_visible_frac: float = 0.999) -> dict[int, list]:
    """Cut a full frame (H, W) into detection strips; save each as PNG; return {band_id: [ImageEntry]}.

    boxes_px (N, 4) / ignore_px (M, 4) [l, t, r, b] full-frame px (NaN rows skipped).
    Each strip is cut and resized exactly as the detect stage does (`strip_image`).
    A face wholly inside a strip is a positive box; a face cut by the strip's
    edge, or an ignore box, is an ignore box (neither positive nor negative);
    everything else in the strip is background, so the detector learns to reject it.
    """
    import cv2

    from pipeline.detect import strip_image
    from pipeline.imglab import Box, ImageEntry

    entries: dict[int, list] = {}
    for k, strip in enumerate(strips):
        cut = strip_image(image, strip)
        left = strip.left_px
        right_edge = min(strip.right_px or image.shape[1], image.shape[1])
        sx = cut.shape[1] / (right_edge - left)
        sy = cut.shape[0] / (strip.bottom_px - strip.top_px)
        name = f"{file_stem}_s{k:02d}.png"
        boxes = []
        for group, ignore in ((boxes_px, False), (ignore_px, True)):
            group = np.asarray(group, float).reshape(-1, 4)
            for l, t, r, b in group[np.isfinite(group).all(axis=1)]:
                inside = (min(b, strip.bottom_px) - max(t, strip.top_px)) / max(b - t, 1e-6)
                if inside <= 0 or r <= left or l >= right_edge:
                    continue
                partial = inside < min_visible_frac or l < left or r > right_edge
                top_s, bottom_s = (t - strip.top_px) * sy, (b - strip.top_px) * sy
                boxes.append(Box(int(round((l - left) * sx)), int(round(top_s)), int(round((r - l) * sx)),
                                 int(round(bottom_s - top_s)), ignore=ignore or partial))
        cv2.imwrite(str(out_dir / name), cut)
        entries.setdefault(strip.band_id, []).append(ImageEntry(name, boxes, cut.shape[1], cut.shape[0]))
    return entries


def make_synthetic_xml(out_dir: str | Path, cfg, sessions: int = 4, frames_per_session: int = 4,
                       seed: int = 0, every_s: float = 3.0, scale: str = "full") -> dict[str, Path]:
    """Write {front,back}.xml (+ strip PNGs) under out_dir from rendered synthetic screenings.

    Sessions are named s01… with synthetic seed `seed` (use another seed for a
    held-out test set). Strips are exactly the ones detection uses (known seat
    rows from session.yaml, scaled by detect.* settings), so the detectors see
    the same face sizes at training and detection time.
    """
    import dataclasses

    from tqdm import tqdm

    from pipeline.detect import BAND_BACK, BAND_FRONT
    from pipeline.geometry import geometry_from_session
    from pipeline.imglab import Dataset, write_dataset

    out_dir = ensure_dir(Path(out_dir))
    syn = dataclasses.replace(cfg.synthetic, seed=seed, sessions=sessions, scale=scale)
    per_band: dict[int, list] = {BAND_FRONT: [], BAND_BACK: []}
    times_s = [1.0 + i * every_s for i in range(frames_per_session)]
    for s in tqdm(range(sessions), desc="synthetic sessions", leave=False):
        session = f"s{s + 1:02d}"
        for frame in synthetic_frames(syn, session, "cam0", times_s):
            geometry = geometry_from_session(cfg, frame.image.shape[0], frame.image.shape[1], frame.meta)
            strips = geometry.strips if geometry else []
            stem = f"seed{seed}_{session}_t{frame.time_s:06.2f}"
            for band_id, entries in strip_dataset_entries(frame, strips, stem, out_dir).items():
                per_band[band_id].extend(entries)
    paths = {}
    for band_id, name in ((BAND_FRONT, "front"), (BAND_BACK, "back")):
        dataset = Dataset(per_band[band_id], name=f"synthetic theatre, {name} rows",
                          comment=f"seed {seed}, {sessions} sessions x {frames_per_session} frames, "
                                  f"scale {scale}; boxes: pipeline.detector_training.face_box_from_landmarks")
        paths[name] = write_dataset(out_dir / f"{name}.xml", dataset)
    return paths


def add_make_xml_args(parser: argparse.ArgumentParser) -> argparse.ArgumentParser:
    parser.add_argument("out_dir", help="folder for front.xml, back.xml and the strip images")
    parser.add_argument("--config", action="append", default=[], help="config overlay YAML (repeatable)")
    parser.add_argument("--set", action="append", default=[], metavar="SECTION.KEY=VALUE",
                        help="config override (repeatable)")
    return _add_xml_options(parser)


def _add_xml_options(parser: argparse.ArgumentParser) -> argparse.ArgumentParser:
    parser.add_argument("--sessions", type=int, default=4, help="synthetic audiences (default %(default)s)")
    parser.add_argument("--frames", type=int, default=4, help="frames per session (default %(default)s)")
    parser.add_argument("--every-s", type=float, default=3.0, help="seconds between frames (default %(default)s)")
    parser.add_argument("--seed", type=int, default=0, help="synthetic seed; use another for test data")
    parser.add_argument("--scale", choices=("full", "small"), default="full", help="theatre geometry")
    return parser


def make_xml_main(args: argparse.Namespace) -> int:
    from configs.schema import load_config

    return _make_xml_with(args, load_config(args.config, args.set))


def _make_xml_with(args: argparse.Namespace, cfg) -> int:
    paths = make_synthetic_xml(args.out_dir, cfg, args.sessions, args.frames, args.seed, args.every_s, args.scale)
    for name, path in paths.items():
        dataset = read_dataset(path)
        print(f"{name}: {path} ({len(dataset.images)} images, {dataset.n_boxes} faces)")
    return 0


__all__ = ["face_box_from_landmarks", "TrainOptions", "EvalResult", "train_detector", "evaluate_detector",
           "add_train_detector_args", "train_detector_main", "synthetic_frames", "make_synthetic_xml",
           "add_make_xml_args", "make_xml_main", "SyntheticFrame", "register",
           "calibration_path", "read_calibration", "write_calibration", "make_calibration", "match_boxes",
           "CalibrationSet", "landmark_errors", "fit_calibration", "calibrate_detector", "LabelledImage",
           "read_labelled_images", "face_bands", "labelled_rows", "labelled_row_strips", "make_strip_xml", "cut_strip_entries",
           "evaluate_full_frames", "train_full_frame", "auto_window_px", "BACK_MAX_FACE_PX", "MIN_TRAIN_FACE_PX",
           "ROW_SCALES", "OLD_MAPPING"]


def register(subparsers) -> None:
    """Add `train-detector` and `make-detector-xml` to the main CLI (handler(args, cfg))."""
    p = subparsers.add_parser("train-detector", help="train the front and back HOG MMOD face detectors from "
                                                     "imglab XML of your theatre", description=TRAIN_HELP,
                              formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--train-xml", required=True, help="imglab XML with the training images and face boxes")
    _add_training_options(p)
    p.set_defaults(handler=lambda args, cfg: train_detector_main(args, cfg))
    p = subparsers.add_parser("make-detector-xml", help="labelled imglab XML from the synthetic theatre")
    p.add_argument("--out-dir", required=True, help="folder for front.xml, back.xml and the strip images")
    _add_xml_options(p)
    p.set_defaults(handler=lambda args, cfg: _make_xml_with(args, cfg))
