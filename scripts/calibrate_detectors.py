"""Calibrate the shipped detectors' boxes to the landmark fitter on REAL faces at theatre sizes.

Writes pipeline/assets/detector_{front,back}.calib.json (box_scale, box_dx,
box_dy: the ERT start box as a function of the detector box; see
pipeline.detector_training.read_calibration), one mapping per landmark model
(`--models`: the best start box depends on the model), and prints the landmark error
(mean point distance ÷ eye-centre distance) of each ERT (numpy engine)
started from (a) the old mapping 1.3/0/0, (b) the box match, (c) the
calibration written, (d) the ideal box of the reference landmarks.

Tune identities only (never the report identities of bench/real_theatre.py):
the photos of ../shared/data/dlib_faces (their 68 parts are dlib's fit at the
photo's resolution; photos without parts get dlib's frontal detector + the
stock 68-point model, as do) skimage's astronaut() and matplotlib's
grace_hopper.jpg. Each face is downscaled so its landmark cloud is
26-45 px wide (front) or 15-25 px (back), cut out with a soft head-shaped
mask in front of a dark seat (an IR auditorium), mirrored or not, dimmed,
blurred and given sensor noise, then searched by the shipped detector the way
the detect stage searches: a strip around its row resized so the face comes out
44-60 px (detect.target_face_px up to a row strip's larger faces), with
detect_strip at detect.threshold.

The views are pooled with as many made by the real-face benchmark's compositor
(bench/real_theatre.py theatre_face_samples, split "tune": the same identities,
its own face mask, IR look, roll and jitter), so the mapping does not fit one
way of rendering a face: fitted on either alone, it moves by 0.1 box widths in
size and the other compositor's mean error grows by a fifth or more.

    python scripts/calibrate_detectors.py                 # fit, print the table, write both assets
    python scripts/calibrate_detectors.py --dry-run       # fit and print only
"""
from __future__ import annotations

import argparse
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from pipeline.store import DataError  # noqa: E402

DLIB_FACES = REPO.parent / "shared" / "data" / "dlib_faces"
BANDS = {"front": (26.0, 45.0), "back": (15.0, 25.0)}     # landmark-cloud (jaw) width at theatre size, px: box
                                                           # sides 29-50 / 16-28 (detect.back_max_face_px 28)
STRIP_FACE_PX = (44.0, 60.0)   # box side on the strip: detect.target_face_px up to what row strips give a
                               # row's larger faces (target / row_min_face_frac = 52 for the median face)
CONTEXT_W = (3.0, 2.6)                                     # canvas half-width / half-height, in face widths


@dataclass
class TuneFace:
    identity: str            # "<source>#<k>", one real person
    image: np.ndarray        # (H, W) uint8 grey, full resolution
    landmarks_px: np.ndarray  # (68, 2) reference: dlib's fit at full resolution


@dataclass
class View:
    identity: str
    canvas: np.ndarray       # (h, w) uint8: the face at theatre size, degraded (what a frame holds)
    landmarks_px: np.ndarray  # (68, 2) reference in canvas px
    det_box_px: np.ndarray   # (4,) matched detection in canvas px, NaN when missed


def _dlib_reference(gray: np.ndarray, name: str) -> list[TuneFace]:
    import dlib

    from pipeline.landmarks import load_predictor

    predictor = load_predictor("")
    faces = []
    for k, rect in enumerate(dlib.get_frontal_face_detector()(gray, 1)):
        shape = predictor(gray, rect)
        pts = np.array([[p.x, p.y] for p in shape.parts()], np.float64)
        faces.append(TuneFace(f"{name}#{k}", gray, pts))
    return faces


def tune_faces(dlib_faces: Path = DLIB_FACES) -> list[TuneFace]:
    """The tune identity set: every face of dlib_faces' photos, astronaut(), grace_hopper.jpg."""
    import cv2
    import matplotlib
    import skimage.data

    from pipeline.imglab import read_dataset

    faces, listed = [], set()
    if not (dlib_faces / "training_with_face_landmarks.xml").is_file():
        raise DataError(f"{dlib_faces} lacks training_with_face_landmarks.xml: the tune photos are expected in "
                        f"../shared/data/dlib_faces (dlib's examples/faces). Pass --dlib-faces DIR.")
    for xml in ("training_with_face_landmarks.xml", "testing_with_face_landmarks.xml"):
        for image in read_dataset(dlib_faces / xml).images:
            listed.add(image.file)
            gray = cv2.imread(str(dlib_faces / image.file), cv2.IMREAD_GRAYSCALE)
            for k, box in enumerate(image.boxes):
                if len(box.parts) == 68:
                    pts = np.array([box.parts[f"{i:02d}"] for i in range(68)], np.float64)
                    faces.append(TuneFace(f"dlib_faces/{image.file}#{k}", gray, pts))
    for path in sorted(dlib_faces.glob("*.jpg")):
        if path.name not in listed:
            faces += _dlib_reference(cv2.imread(str(path), cv2.IMREAD_GRAYSCALE), f"dlib_faces/{path.name}")
    faces += _dlib_reference(cv2.cvtColor(skimage.data.astronaut(), cv2.COLOR_RGB2GRAY), "skimage/astronaut")
    hopper = Path(matplotlib.get_data_path()) / "sample_data" / "grace_hopper.jpg"
    faces += _dlib_reference(cv2.imread(str(hopper), cv2.IMREAD_GRAYSCALE), "matplotlib/grace_hopper")
    return faces


def render_view(face: TuneFace, width_px: float, mirror: bool, rng: np.random.Generator):
    """The face downscaled so its landmark cloud is width_px wide, cut out with a soft head-shaped
    mask, composited in front of a dark seat (an IR auditorium: lit faces, dark surroundings),
    mirrored or not, then dimmed, blurred and given sensor noise. → (canvas uint8, landmarks (68, 2))."""
    import cv2

    from pipeline.synthetic.faces import MIRROR_68

    pts = face.landmarks_px
    src_w = float(np.ptp(pts[:, 0]))
    factor = min(1.0, width_px / src_w)
    centre = 0.5 * (pts.min(0) + pts.max(0))
    half = np.array(CONTEXT_W) * src_w
    x0, y0 = np.floor(centre - half).astype(int)
    x1, y1 = np.ceil(centre + half).astype(int)
    pad = max(0, -x0, -y0, x1 - face.image.shape[1], y1 - face.image.shape[0])
    src = cv2.copyMakeBorder(face.image, pad, pad, pad, pad, cv2.BORDER_REFLECT_101) if pad else face.image
    crop = src[y0 + pad:y1 + pad, x0 + pad:x1 + pad]
    size = (max(8, int(round(crop.shape[1] * factor))), max(8, int(round(crop.shape[0] * factor))))
    photo = cv2.resize(crop, size, interpolation=cv2.INTER_AREA).astype(np.float32)
    fx, fy = size[0] / crop.shape[1], size[1] / crop.shape[0]
    lm = np.stack([(pts[:, 0] - x0 + 0.5) * fx - 0.5, (pts[:, 1] - y0 + 0.5) * fy - 0.5], axis=1)
    if mirror:
        photo = np.ascontiguousarray(photo[:, ::-1])
        lm = lm[MIRROR_68].copy()
        lm[:, 0] = size[0] - 1 - lm[:, 0]
    # the head: an ellipse over face and hair, soft edged
    w = float(np.ptp(lm[:, 0]))
    cx, cy = 0.5 * (lm[:, 0].min() + lm[:, 0].max()), 0.5 * (lm[:, 1].min() + lm[:, 1].max()) - 0.15 * w
    grow = rng.uniform(0.95, 1.2)
    yy, xx = np.mgrid[0:size[1], 0:size[0]].astype(np.float32)
    r = np.hypot((xx - cx) / (0.62 * grow * w), (yy - cy) / (0.85 * grow * w))
    alpha = np.clip((1.0 - r) / 0.15 + 0.5, 0.0, 1.0)
    # the seat behind: dark back-rest with a slightly lighter rim, darker body below the chin
    dark = rng.uniform(8.0, 28.0)
    seat = np.full_like(photo, dark)
    seat[(np.abs(xx - cx) < 1.1 * w) & (yy > cy - 1.3 * w)] = dark + rng.uniform(6.0, 18.0)
    seat[(np.abs(xx - cx) < 0.9 * w) & (yy > lm[:, 1].max() + 0.1 * w)] = dark * 0.6
    canvas = alpha * photo * rng.uniform(0.8, 1.1) + (1 - alpha) * seat
    canvas = cv2.GaussianBlur(canvas, (0, 0), rng.uniform(0.3, 0.8))
    canvas = canvas * rng.uniform(0.45, 0.8) + rng.uniform(2.0, 10.0)
    canvas = canvas + rng.normal(0.0, rng.uniform(2.0, 5.0), canvas.shape)
    return np.ascontiguousarray(np.clip(np.round(canvas), 0, 255).astype(np.uint8)), lm


def detect_view(detector, canvas: np.ndarray, landmarks_px: np.ndarray, cfg, rng: np.random.Generator):
    """Run the detector on a row strip of the canvas as the detect stage does; the matched box or NaN."""
    from pipeline.detect import BAND_FRONT, Strip, detect_strip
    from pipeline.detector_training import face_box_from_landmarks, match_boxes

    truth = face_box_from_landmarks(landmarks_px)
    side = truth[2] - truth[0]
    expected = side * cfg.detect.target_face_px / rng.uniform(*STRIP_FACE_PX)   # the face size the strip assumes
    cy = 0.5 * (truth[1] + truth[3])
    strip = Strip(BAND_FRONT, int(max(0, np.floor(cy - 1.15 * expected))),
                  int(min(canvas.shape[0], np.ceil(cy + 1.15 * expected))), cfg.detect.target_face_px / expected)
    boxes, _ = detect_strip(detector, canvas, strip, cfg.detect.threshold)
    if cfg.detect.refine_boxes:              # as the detect stage does: the calibration maps the boxes it writes
        boxes = np.array([detector.refine(canvas, b) for b in boxes], np.float32).reshape(-1, 4)
    hit = match_boxes(boxes, truth[None])[0]
    return boxes[hit].astype(np.float64) if hit >= 0 else np.full(4, np.nan)


def make_views(faces: list[TuneFace], band: str, detector, cfg, repeats: int, seed: int) -> list[View]:
    rng = np.random.default_rng(seed)
    lo, hi = BANDS[band]
    views = []
    for face in faces:
        src_w = float(np.ptp(face.landmarks_px[:, 0]))
        for r in range(repeats):
            width = rng.uniform(lo, max(lo, min(hi, src_w)))
            canvas, lm = render_view(face, width, mirror=bool(r % 2), rng=rng)
            views.append(View(face.identity, canvas, lm, detect_view(detector, canvas, lm, cfg, rng)))
    return views


def bench_views(band: str, detector, cfg, n: int, seed: int) -> list[View]:
    """`n` tune-identity faces rendered by the real-face benchmark's compositor at this band's sizes,
    searched as detect_view does."""
    sys.path.insert(0, str(REPO / "bench"))
    import real_theatre

    lo, hi = BANDS[band]
    rng = np.random.default_rng(seed)
    samples = real_theatre.theatre_face_samples("tune", sizes_px=tuple(np.linspace(lo, hi, 5)), n=n, seed=seed)
    views = []
    for image, _, landmarks in samples:
        pts = np.asarray(landmarks, np.float64)
        views.append(View("bench", image, pts, detect_view(detector, image, pts, cfg, rng)))
    return views


def mosaic(views: list[View]):
    """All found views pasted into one image (one batched ERT call per pass): a CalibrationSet."""
    from pipeline.detector_training import CalibrationSet

    found = [v for v in views if np.isfinite(v.det_box_px).all()]
    if not found:
        return CalibrationSet([], [], [])
    cell_h = max(v.canvas.shape[0] for v in found) + 4
    cell_w = max(v.canvas.shape[1] for v in found) + 4
    cols = int(np.ceil(np.sqrt(len(found))))
    rows = int(np.ceil(len(found) / cols))
    image = np.zeros((rows * cell_h, cols * cell_w), np.uint8)
    boxes, lms = [], []
    for i, v in enumerate(found):
        oy, ox = (i // cols) * cell_h, (i % cols) * cell_w
        image[oy:oy + v.canvas.shape[0], ox:ox + v.canvas.shape[1]] = v.canvas
        boxes.append(v.det_box_px + [ox, oy, ox, oy])
        lms.append(v.landmarks_px + [ox, oy])
    return CalibrationSet([image], [np.array(boxes)], [np.array(lms)])


def _summary(errors: np.ndarray) -> str:
    ok = np.isfinite(errors)
    e = errors[ok]
    gross = float(np.mean(~ok | (np.nan_to_num(errors, nan=9.0) > 0.25)))
    return f"{e.mean():7.3f} {np.median(e):7.3f} {100 * gross:6.1f}%"


def calibrate_band(band: str, faces, cfg, model, repeats: int, seed: int, search: bool = True, bench: bool = True):
    from pipeline.detect import load_detector
    from pipeline.detector_training import OLD_MAPPING, fit_calibration, landmark_errors

    detector = load_detector(getattr(cfg.detect, f"{band}_detector"), band)
    views = make_views(faces, band, detector, cfg, repeats, seed)
    if bench:
        views += bench_views(band, detector, cfg, len(views), seed)
    found = mosaic(views)
    recall = found.n_faces / max(1, len(views))
    mapping, report = fit_calibration(found, model, cfg.landmarks, search=search)
    rows = {"old mapping 1.3/0/0": landmark_errors(model, found, cfg.landmarks, OLD_MAPPING),
            "box match": landmark_errors(model, found, cfg.landmarks, report["box_match"]),
            "calibration (written)": landmark_errors(model, found, cfg.landmarks, mapping),
            "ideal box (reference)": landmark_errors(model, found, cfg.landmarks, ideal=True)}
    sides = [1.1 * np.ptp(v.landmarks_px[:, 0]) for v in views]
    return {"band": band, "views": views, "found": found, "recall": recall, "mapping": mapping,
            "report": report, "errors": rows, "identities": len({v.identity for v in views}),
            "box_px": (min(sides), max(sides))}


def cross_check(result, cfg, model) -> np.ndarray:
    """2-fold by source photo: fit on the faces of half the photos, score on the others' faces."""
    from pipeline.detector_training import fit_calibration, landmark_errors

    views = [v for v in result["views"] if np.isfinite(v.det_box_px).all()]
    photos = sorted({v.identity.split("#")[0] for v in views})
    fold_of = {p: i % 2 for i, p in enumerate(photos)}
    errors = []
    for fold in (0, 1):
        fit_on = mosaic([v for v in views if fold_of[v.identity.split("#")[0]] != fold])
        score_on = mosaic([v for v in views if fold_of[v.identity.split("#")[0]] == fold])
        mapping, _ = fit_calibration(fit_on, model, cfg.landmarks)
        errors.append(landmark_errors(model, score_on, cfg.landmarks, mapping))
    return np.concatenate(errors)


TRAINING: dict | None = None     # set by scripts/train_shipped_detectors.py: what the detectors were trained on


def shipped_training(band: str) -> dict:
    """What the shipped detectors were trained with: scripts/train_shipped_detectors.py's record (its
    defaults when this script runs alone)."""
    if TRAINING is not None:
        return dict(TRAINING)
    from train_shipped_detectors import default_training_record

    return default_training_record()


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--dlib-faces", type=Path, default=DLIB_FACES, help="dlib's examples/faces folder")
    parser.add_argument("--repeats", type=int, default=6, help="renditions per face and band (default %(default)s)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--bands", default="front,back", help="comma-separated (default %(default)s)")
    parser.add_argument("--no-search", action="store_true", help="box match only (no grid by landmark error)")
    parser.add_argument("--no-cross-check", action="store_true", help="skip the 2-fold check by photo")
    parser.add_argument("--dry-run", action="store_true", help="print, write nothing")
    parser.add_argument("--no-bench-compositor", action="store_true",
                        help="only this script's renderings (not also the real-face benchmark's compositor)")
    parser.add_argument("--models", default="stock,theatre",
                        help="landmark models to calibrate for, each filed under by_model (default %(default)s; "
                             "the config's landmarks.model_path is always one, and fills the top-level mapping)")
    parser.add_argument("--set", action="append", default=[], metavar="SECTION.KEY=VALUE",
                        help="config override (e.g. detect.threshold=0.3)")
    args = parser.parse_args(argv)
    try:
        return _run(args)
    except DataError as err:
        print(f"error: {err}", file=sys.stderr)
        return 2


def _run(args) -> int:
    import dataclasses

    from configs.schema import load_config
    from pipeline.detect import resolve_detector_path
    from pipeline.detector_training import write_calibration
    from pipeline.landmarks import load_landmarker, model_key

    started = time.perf_counter()
    cfg = load_config([], args.set)
    faces = tune_faces(args.dlib_faces)
    default_key = model_key(cfg.landmarks.model_path)
    keys = list(dict.fromkeys([default_key] + [k.strip() for k in args.models.split(",") if k.strip()]))
    print(f"tune set: {len(faces)} real faces from {len({f.identity.split('#')[0] for f in faces})} photos "
          f"(dlib_faces, astronaut, grace_hopper); {args.repeats} renditions per face and band")
    print(f"landmark error = mean point distance / eye-centre distance vs dlib's fit at full resolution; "
          f"engine {cfg.landmarks.engine}, refine_passes {cfg.landmarks.refine_passes}; models {', '.join(keys)}")
    for band in [b.strip() for b in args.bands.split(",") if b.strip()]:
        results = {}
        for key in keys:
            model_cfg = cfg.replace(landmarks=dataclasses.replace(cfg.landmarks, model_path=key, start_model_path=None))
            model = load_landmarker(model_cfg.landmarks)
            results[key] = calibrate_band(band, faces, model_cfg, model, args.repeats, args.seed + (band == "back"),
                                          search=not args.no_search, bench=not args.no_bench_compositor)
            _print_band(band, key, results[key], model_cfg, model, cross=not args.no_cross_check)
        if not args.dry_run:
            svm = resolve_detector_path(getattr(cfg.detect, f"{band}_detector"), band)
            print(f"  wrote {write_calibration(svm, _calibration(results, default_key, faces, cfg, band))}")
    print(f"\n{time.perf_counter() - started:.0f} s")
    return 0


def _print_band(band: str, key: str, result: dict, cfg, model, cross: bool) -> None:
    m, rep = result["mapping"], result["report"]
    lo, hi = BANDS[band]
    print(f"\n{band} detector, landmark model {key}: faces {lo:.0f}-{hi:.0f} px wide, {len(result['views'])} views "
          f"of {result['identities']} faces, found {result['found'].n_faces} (recall {result['recall']:.3f} "
          f"at detect.threshold {cfg.detect.threshold})")
    print(f"  box match:   box_scale {rep['box_match']['box_scale']:.3f}  box_dx {rep['box_match']['box_dx']:+.3f}"
          f"  box_dy {rep['box_match']['box_dy']:+.3f}")
    print(f"  calibration: box_scale {m['box_scale']:.3f}  box_dx {m['box_dx']:+.3f}  box_dy {m['box_dy']:+.3f}"
          f"  ({rep['method']})")
    print(f"  {'ERT start box':<26} {'mean':>7} {'median':>7} {'>0.25':>7}")
    for name, errors in result["errors"].items():
        print(f"  {name:<26} {_summary(errors)}")
    if cross:
        print(f"  {'2-fold by photo':<26} {_summary(cross_check(result, cfg, model))}")


def _tune_error(result: dict) -> dict:
    err_cal, err_ideal = result["errors"]["calibration (written)"], result["errors"]["ideal box (reference)"]
    return {"mean": round(float(np.nanmean(err_cal)), 4), "median": round(float(np.nanmedian(err_cal)), 4),
            "ideal_box_mean": round(float(np.nanmean(err_ideal)), 4),
            "ideal_box_median": round(float(np.nanmedian(err_ideal)), 4)}


def _calibration(results: dict, default_key: str, faces, cfg, band: str) -> dict:
    """The calibration document: the default landmark model's mapping at the top, every model's in by_model."""
    from pipeline.detector_training import make_calibration

    result = results[default_key]
    m, rep = result["mapping"], result["report"]
    lo, hi = BANDS[band]
    return make_calibration(
        m, result["found"].n_faces,
        source=(f"real faces (tune identities: {len(faces)} faces of dlib_faces' photos, skimage astronaut, "
                f"matplotlib grace_hopper) downscaled to {lo:.0f}-{hi:.0f} px wide landmark clouds, head cut out "
                f"onto a dark seat, mirrored or not, dimmed, blurred, sensor noise; reference: dlib's 68-point "
                f"fit at full resolution; detections of row strips with faces at {STRIP_FACE_PX[0]:.0f}-"
                f"{STRIP_FACE_PX[1]:.0f} px (scripts/calibrate_detectors.py), pooled with as many tune faces "
                f"rendered by bench/real_theatre.py's compositor; "
                f"mapping {rep['method']}"),
        window_px=40, face_px_range=_shipped_face_px(cfg, band), training=shipped_training(band),
        calibrated_face_px_range=[round(v, 1) for v in result["box_px"]],
        box_match={k: rep["box_match"][k] for k in ("box_scale", "box_dx", "box_dy")},
        tune_error=_tune_error(result), tune_recall=round(result["recall"], 4),
        fitted_for={**{k: getattr(cfg.landmarks, k) for k in ("engine", "refine_passes", "coarse_levels", "leaf_rank")},
                    "model_path": default_key},
        by_model={key: {**{k: round(float(r["mapping"][k]), 4) for k in ("box_scale", "box_dx", "box_dy")},
                        "tune_error": _tune_error(r)} for key, r in results.items()})


def _shipped_face_px(cfg, band: str) -> tuple[float, float]:
    """Full-frame face-box sides of the shipped detector's training rows: the synthetic theatre's
    (seed 0, full scale) visible faces in the rows searched by that detector."""
    import dataclasses

    from pipeline.detector_training import synthetic_frames
    from pipeline.synthetic.stage import BACK_ROWS

    syn = dataclasses.replace(cfg.synthetic, seed=0, sessions=1, scale="full")
    frame = synthetic_frames(syn, "s01", "cam0", [1.0])[0]
    n_rows = len(frame.meta["rows"])
    back = frame.row >= n_rows - BACK_ROWS
    ok = np.isfinite(frame.boxes_px).all(axis=1) & (back if band == "back" else ~back)
    sides = frame.boxes_px[ok, 2] - frame.boxes_px[ok, 0]
    return float(sides.min()), float(sides.max())


if __name__ == "__main__":
    sys.exit(main())
