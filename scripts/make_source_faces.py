"""Regenerate pipeline/assets/source_faces.npz: real face crops + their 68 landmarks.

The synthetic theatre animates *real* faces so that real detectors and landmark
fitters work on its frames. Sources (all shipped inside installed wheels, so
nothing is downloaded):

- scikit-image `data.lfw_subset()`: the first 100 images are real 25×25 LFW
  faces (the other 100 are non-faces and are never used);
- scikit-image `data.astronaut()` (Eileen Collins) and `data.camera()`;
- matplotlib `sample_data/grace_hopper.jpg`.

For each image we find the face with dlib's HOG frontal detector on an
upsampled, edge-padded copy, fit dlib's 68-point predictor
(face_recognition_models) in that box, and keep the fit only when it is
self-consistent: the fit from a shifted/scaled box and the mirror-image fit
agree within `--max-disagreement` of the inter-ocular distance, and the
geometry is face-like (eyes above nose above mouth). Each kept face is stored
as a CROP_PX×CROP_PX grey crop, edge-padded, with the face in its centre half,
so the renderer can sample a forehead/cheek margin around the landmarks.

    python scripts/make_source_faces.py            # writes pipeline/assets/source_faces.npz
"""
from __future__ import annotations

import argparse
import importlib.util
from pathlib import Path

import cv2
import numpy as np

ROOT = Path(__file__).resolve().parents[1]
DEFAULT_OUT = ROOT / "pipeline" / "assets" / "source_faces.npz"
CROP_PX = 96            # stored crop size; the landmarks' jaw span is about CROP_PX / 2
FIT_UPSAMPLE = 6        # LFW faces are 25 px: fit on a 6× copy
MIRROR_68 = np.array(list(range(16, -1, -1)) + list(range(26, 16, -1)) + [27, 28, 29, 30]
                     + [35, 34, 33, 32, 31] + [45, 44, 43, 42, 47, 46] + [39, 38, 37, 36, 41, 40]
                     + [54, 53, 52, 51, 50, 49, 48] + [59, 58, 57, 56, 55] + [64, 63, 62, 61, 60]
                     + [67, 66, 65])


def dlib_models():
    """The detector and the 68-point predictor shipped by face_recognition_models."""
    import dlib

    spec = importlib.util.find_spec("face_recognition_models")
    if spec is None or spec.origin is None:
        raise SystemExit("face_recognition_models is not installed: pip install face_recognition_models")
    path = Path(spec.origin).parent / "models" / "shape_predictor_68_face_landmarks.dat"
    return dlib.get_frontal_face_detector(), dlib.shape_predictor(str(path))


def real_images() -> list[tuple[str, np.ndarray]]:
    """(name, grey uint8 image) for every real face image we may use."""
    import matplotlib
    import skimage.data as skd

    lfw = skd.lfw_subset()[:100]               # the first 100 are faces
    images = [(f"lfw_subset[{i}]", (lfw[i] * 255).round().astype(np.uint8)) for i in range(len(lfw))]
    images.append(("skimage.astronaut", cv2.cvtColor(skd.astronaut(), cv2.COLOR_RGB2GRAY)))
    images.append(("skimage.camera", skd.camera()))
    hopper = Path(matplotlib.get_data_path()) / "sample_data" / "grace_hopper.jpg"
    images.append(("matplotlib.grace_hopper", cv2.imread(str(hopper), cv2.IMREAD_GRAYSCALE)))
    return images


def fit(predictor, image: np.ndarray, box: tuple[float, float, float, float]) -> np.ndarray:
    """(68, 2) landmarks fitted in `box` (left, top, right, bottom)."""
    import dlib

    rect = dlib.rectangle(*[int(round(v)) for v in box])
    shape = predictor(image, rect)
    return np.array([(p.x, p.y) for p in shape.parts()], dtype=np.float64)


def detect_and_fit(detector, predictor, grey: np.ndarray, tiny: bool):
    """Landmarks in `grey`'s pixel coordinates and a disagreement score (fraction of IOD), or None."""
    pad = grey.shape[0] // 2 if tiny else 0
    scale = FIT_UPSAMPLE if tiny else 1
    big = cv2.copyMakeBorder(grey, pad, pad, pad, pad, cv2.BORDER_REPLICATE)
    big = cv2.resize(big, None, fx=scale, fy=scale, interpolation=cv2.INTER_CUBIC)
    rects, scores, _ = detector.run(big, 1, -0.3)
    if not rects:
        return None
    best = rects[int(np.argmax(scores))]
    box = np.array([best.left(), best.top(), best.right(), best.bottom()], dtype=float)
    pts = fit(predictor, big, box)
    size = box[2] - box[0]
    shifted = fit(predictor, big, box + np.array([-1, -1, 1, 1]) * 0.06 * size + 0.03 * size)
    flipped = big[:, ::-1].copy()
    w = big.shape[1] - 1
    mirror = fit(predictor, flipped, np.array([w - box[2], box[1], w - box[0], box[3]]))
    mirror = mirror[MIRROR_68] * [-1, 1] + [w, 0]
    iod = np.linalg.norm(pts[36:42].mean(0) - pts[42:48].mean(0))
    disagreement = max(np.linalg.norm(pts - shifted, axis=1).mean(), np.linalg.norm(pts - mirror, axis=1).mean()) / iod
    return (pts / scale - pad), float(disagreement)


def face_like(pts: np.ndarray) -> bool:
    """Eyes above nose tip above mouth, eyes level-ish, left eye left of right eye."""
    eye_l, eye_r = pts[36:42].mean(0), pts[42:48].mean(0)
    nose, mouth = pts[30], pts[48:60].mean(0)
    iod = eye_r[0] - eye_l[0]
    return bool(iod > 0 and abs(eye_r[1] - eye_l[1]) < 0.25 * iod
                and max(eye_l[1], eye_r[1]) < nose[1] < mouth[1])


def crop_around(grey: np.ndarray, pts: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """A CROP_PX square crop centred on the face, jaw span = CROP_PX/2; edge-padded."""
    span = np.ptp(pts[:17, 0])
    centre = np.array([pts[:, 0].mean(), pts[:, 1].mean() - 0.12 * span])
    scale = (CROP_PX / 2) / span
    matrix = np.array([[scale, 0, CROP_PX / 2 - scale * centre[0]],
                       [0, scale, CROP_PX / 2 - scale * centre[1]]])
    crop = cv2.warpAffine(grey, matrix, (CROP_PX, CROP_PX), flags=cv2.INTER_CUBIC,
                          borderMode=cv2.BORDER_REPLICATE)
    return crop, pts * scale + matrix[:, 2]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--out", type=Path, default=DEFAULT_OUT, help="where to write the .npz")
    parser.add_argument("--max-disagreement", type=float, default=0.12,
                        help="drop a face when refits disagree by more than this fraction of the inter-ocular distance")
    args = parser.parse_args()
    detector, predictor = dlib_models()
    crops, landmarks, names, scores, dropped = [], [], [], [], []
    for name, grey in real_images():
        result = detect_and_fit(detector, predictor, grey, tiny=grey.shape[0] < 64)
        if result is None or result[1] > args.max_disagreement or not face_like(result[0]):
            dropped.append(f"{name} ({'no face found' if result is None else f'disagreement {result[1]:.2f}'})")
            continue
        crop, pts = crop_around(grey, result[0])
        crops.append(crop)
        landmarks.append(pts.astype(np.float32))
        names.append(name)
        scores.append(result[1])
    args.out.parent.mkdir(parents=True, exist_ok=True)
    np.savez_compressed(args.out, images=np.stack(crops), landmarks=np.stack(landmarks),
                        names=np.array(names), fit_disagreement=np.array(scores, dtype=np.float32),
                        mirror_68=MIRROR_68)
    print(f"kept {len(crops)} faces → {args.out} ({args.out.stat().st_size / 1e3:.0f} kB)")
    print(f"dropped {len(dropped)}: " + "; ".join(dropped))


if __name__ == "__main__":
    main()
