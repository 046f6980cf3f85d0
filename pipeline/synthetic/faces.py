"""Real source faces and the piecewise-affine warp that animates them.

pipeline/assets/source_faces.npz (made by scripts/make_source_faces.py) holds
real grey face crops with their dlib 68-point fits. Each source's landmarks are
aligned to the mean face by a similarity, giving the identity's neutral shape
in the canonical frame. A fixed ring of RING points around the face (forehead,
cheeks, chin margin) joins the 68 landmarks; one Delaunay triangulation of the
mean face + ring is shared by all faces. Rendering maps each target triangle
back to its source triangle (one affine per triangle, triangle ids rasterized
with cv2.fillPoly, one cv2.remap per face) and blends with a soft elliptical
alpha defined in the canonical frame.
"""
from __future__ import annotations

from dataclasses import dataclass
from functools import lru_cache
from importlib import resources

import cv2
import numpy as np
from scipy.spatial import Delaunay

from pipeline.landmarks import MIRROR_68
from pipeline.store import DataError
from pipeline.synthetic.animation import mean_face

RING = 12
RING_CENTRE, RING_RADII = np.array([0.0, -0.22]), np.array([0.92, 1.06])
ALPHA_CENTRE, ALPHA_RADII = np.array([0.0, -0.18]), np.array([0.70, 0.86])


@lru_cache(maxsize=1)
def ring_points() -> np.ndarray:
    """(RING, 2) canonical points around the face: they carry forehead and cheek texture."""
    angle = np.linspace(0, 2 * np.pi, RING, endpoint=False) + np.pi / RING
    return RING_CENTRE + RING_RADII * np.stack([np.cos(angle), np.sin(angle)], axis=1)


@lru_cache(maxsize=1)
def triangles() -> np.ndarray:
    """(T, 3) vertex ids over the 68 + RING points (Delaunay of the mean face)."""
    points = np.concatenate([mean_face()[:, :2], ring_points()])
    return Delaunay(points).simplices.astype(np.int32)


@lru_cache(maxsize=1)
def point_depth() -> np.ndarray:
    """(68 + RING,) canonical depth used to lift the points to 3D: the ring follows a head
    shape (forehead forward, sides back as far as the jaw) so turning the head does not shear."""
    up = np.clip((RING_CENTRE[1] - ring_points()[:, 1]) / RING_RADII[1], 0, 1)      # 1 at the top
    down = np.clip((ring_points()[:, 1] - RING_CENTRE[1]) / RING_RADII[1], 0, 1)    # 1 at the bottom
    ring_z = -0.35 + 0.5 * up + 0.25 * down
    return np.concatenate([mean_face()[:, 2], ring_z])


def similarity(src: np.ndarray, dst: np.ndarray) -> tuple[float, np.ndarray, np.ndarray]:
    """Least-squares scale s, rotation R, translation t with dst ≈ s R src + t (Umeyama)."""
    mu_s, mu_d = src.mean(0), dst.mean(0)
    a, b = src - mu_s, dst - mu_d
    u, sig, vt = np.linalg.svd(b.T @ a)
    d = np.diag([1.0, np.sign(np.linalg.det(u @ vt))])
    rot = u @ d @ vt
    scale = float((sig * np.diag(d)).sum() / (a ** 2).sum())
    return scale, rot, mu_d - scale * rot @ mu_s


@dataclass(frozen=True)
class SourceFaces:
    images: np.ndarray       # (S, H, W) uint8 grey crops
    points_px: np.ndarray    # (S, 68 + RING, 2) landmarks + ring in crop pixels
    neutral: np.ndarray      # (S, 68, 2) canonical neutral shapes
    alpha: np.ndarray        # (S, H, W) float32 soft face mask
    names: tuple[str, ...]


@lru_cache(maxsize=1)
def source_faces() -> SourceFaces:
    """Load the shipped crops and derive canonical shapes, ring points and alpha masks."""
    try:
        with resources.as_file(resources.files("pipeline") / "assets" / "source_faces.npz") as path:
            data = np.load(path)
            images, landmarks, names = data["images"], data["landmarks"].astype(np.float64), data["names"]
    except FileNotFoundError as err:
        raise DataError("pipeline/assets/source_faces.npz is missing; regenerate it with "
                        "`python scripts/make_source_faces.py`.") from err
    canon = mean_face()[:, :2]
    points, neutral, alphas = [], [], []
    for img, lm in zip(images, landmarks):
        s, rot, t = similarity(canon, lm)                  # canonical → crop px
        neutral.append((lm - t) @ rot / s)                 # crop px → canonical
        points.append(np.concatenate([lm, ring_points() @ rot.T * s + t]))
        alphas.append(_alpha_mask(img.shape, s, rot, t))
    return SourceFaces(images, np.stack(points), np.stack(neutral), np.stack(alphas).astype(np.float32),
                       tuple(str(n) for n in names))


def _alpha_mask(shape, s, rot, t) -> np.ndarray:
    """Soft ellipse (canonical frame) mapped into the crop: 1 inside the face, 0 outside."""
    ys, xs = np.mgrid[0:shape[0], 0:shape[1]].astype(float)
    canon = (np.stack([xs, ys], -1) - t) @ rot / s
    r = np.linalg.norm((canon - ALPHA_CENTRE) / ALPHA_RADII, axis=-1)
    x = np.clip((1.08 - r) / 0.22, 0, 1)
    return x * x * (3 - 2 * x)


def viewer_texture(src: SourceFaces, index: int, mirrored: bool, gain: float, gamma: float
                   ) -> tuple[np.ndarray, np.ndarray]:
    """(H, W, 2) float32 [IR-toned grey, alpha] and (68 + RING, 2) crop points for one viewer."""
    grey = src.images[index].astype(np.float32) / 255.0
    tex = np.clip(255.0 * gain * grey ** gamma, 0, 255)
    stacked = np.dstack([tex, src.alpha[index]]).astype(np.float32)
    pts = src.points_px[index].copy()
    if mirrored:
        stacked = stacked[:, ::-1].copy()
        pts[:68] = pts[MIRROR_68]
        pts[:, 0] = stacked.shape[1] - 1 - pts[:, 0]
        pts[68:] = pts[68:][_ring_mirror()]
    return stacked, pts


@lru_cache(maxsize=1)
def _ring_mirror() -> np.ndarray:
    """Ring index permutation of a left-right mirror (ring is symmetric about x = 0)."""
    ring = ring_points()
    flipped = ring * [-1, 1]
    return np.array([int(np.argmin(np.linalg.norm(ring - f, axis=1))) for f in flipped])


def warp_face(frame: np.ndarray, texture: np.ndarray, src_pts: np.ndarray, dst_pts: np.ndarray,
              dst_depth: np.ndarray) -> None:
    """Blend `texture` (H, W, 2) into `frame` (uint8, in place) so `src_pts` land on `dst_pts`.

    dst_depth (P,) orders overlapping triangles (far first) when the head turns.
    """
    h, w = frame.shape
    x0, y0 = np.floor(dst_pts.min(0)).astype(int) - 1
    x1, y1 = np.ceil(dst_pts.max(0)).astype(int) + 2
    x0, y0, x1, y1 = max(x0, 0), max(y0, 0), min(x1, w), min(y1, h)
    if x1 - x0 < 2 or y1 - y0 < 2:
        return
    tri = triangles()
    local_tri = dst_pts[tri] - (x0, y0)                             # (T, 3, 2)
    affine, ok = _triangle_affines(local_tri, src_pts[tri])
    ids = np.full((y1 - y0, x1 - x0), -1, dtype=np.int32)
    order = np.argsort(dst_depth[tri].mean(1))
    order = order[ok[order]]
    corners = np.rint(local_tri * 16).astype(np.int32)
    for t in order.tolist():
        cv2.fillConvexPoly(ids, corners[t], t, cv2.LINE_8, 4)
    ys, xs = np.mgrid[0:y1 - y0, 0:x1 - x0].astype(np.float32)
    m = affine.reshape(-1, 6)[np.maximum(ids, 0)]                   # (h, w, 6)
    map_x = m[..., 0] * xs + m[..., 1] * ys + m[..., 2]
    map_y = m[..., 3] * xs + m[..., 4] * ys + m[..., 5]
    map_x[ids < 0] = -10
    warped = cv2.remap(texture, map_x, map_y, cv2.INTER_LINEAR, borderMode=cv2.BORDER_CONSTANT, borderValue=0)
    patch = frame[y0:y1, x0:x1].astype(np.float32)
    alpha = warped[..., 1]
    frame[y0:y1, x0:x1] = np.clip(patch + alpha * (warped[..., 0] - patch) + 0.5, 0, 255).astype(np.uint8)


def _triangle_affines(dst_tri: np.ndarray, src_tri: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(T, 2, 3) affines mapping each destination triangle onto its source triangle, and (T,) non-degenerate."""
    ones = np.ones(dst_tri.shape[:2] + (1,))
    a = np.concatenate([dst_tri, ones], axis=2)                    # (T, 3, 3)
    det = np.linalg.det(a)
    ok = np.abs(det) > 1e-3
    a[~ok] = np.eye(3)
    sol = np.linalg.solve(a, src_tri)                               # (T, 3, 2): [x y 1] @ sol = src
    return np.transpose(sol, (0, 2, 1)).astype(np.float32), ok
