"""Pixels: a dark IR auditorium, seated bodies, and animated real faces.

Static layers are drawn once per (session, camera): the auditorium with seat
backs and seated bodies, and the same without bodies (copied over a seat
whose viewer has left). Per frame: copy the static layer, draw each head back
row first (hair, face warp, open-mouth interior, occluder or back of head),
then add IR sensor noise from a pre-drawn bank.
"""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import cv2
import numpy as np

from pipeline.store import DataError
from pipeline.synthetic.animation import LEFT, OCCLUDED, TURNED, Animation, Audience, rotation
from pipeline.synthetic.faces import point_depth, ring_points, source_faces, viewer_texture, warp_face
from pipeline.synthetic.layout import Layout

NOISE_MARGIN = 32
HAIR_CENTRE, HAIR_RADII = np.array([0.0, -0.42]), np.array([0.80, 0.78])


@dataclass
class Scene:
    """Everything the per-frame renderer needs for one (session, camera)."""
    with_bodies: np.ndarray          # (H, W) uint8 static layer
    empty: np.ndarray                # (H, W) uint8 static layer with no viewers
    seat_rect: np.ndarray            # (V, 4) x0, y0, x1, y1 of each viewer's seat region
    textures: list                   # per viewer (H, W, 2) float32
    src_pts: list                    # per viewer (68 + RING, 2)
    noise: np.ndarray                # (2, H + m, W + m) uint8: positive and negative noise parts
    occluder: np.ndarray             # (V, 3): dx, dy (face units), grey
    order: np.ndarray                # (V,) drawing order: back rows first
    hair_grey: np.ndarray            # (V,) grey of each viewer's hair / back of head
    lip_gap: np.ndarray              # (V,) inner-lip opening of the neutral face, canonical units


def build_scene(layout: Layout, audience: Audience, noise_std: float, rng: np.random.Generator) -> Scene:
    """Draw the static layers and prepare every viewer's texture."""
    h, w = layout.height_px, layout.width_px
    empty = _auditorium(layout, rng)
    bodies = empty.copy()
    rects = np.zeros((len(audience.seat), 4), dtype=int)
    for v in np.argsort(-layout.row[audience.seat], kind="stable"):
        rects[v] = _draw_body(bodies, layout, int(audience.seat[v]), audience.tone[v, 3])
        _redraw_front_seats(bodies, empty, layout, int(audience.seat[v]))
    vignette = _vignette(h, w)
    with_bodies = (bodies * vignette).astype(np.uint8)
    empty = (empty * vignette).astype(np.uint8)
    src = source_faces()
    textures, pts = [], []
    for v in range(len(audience.seat)):
        tex, p = viewer_texture(src, int(audience.source[v]), bool(audience.mirrored[v]),
                                float(audience.tone[v, 0]), float(audience.tone[v, 1]))
        textures.append(tex)
        pts.append(p)
    noise = rng.normal(0, noise_std, (h + NOISE_MARGIN, w + NOISE_MARGIN)).astype(np.float32)
    noise_parts = np.stack([np.clip(noise, 0, 255), np.clip(-noise, 0, 255)]).round().astype(np.uint8)
    occluder = np.stack([rng.uniform(-0.4, 0.4, len(audience.seat)), rng.uniform(-0.1, 0.5, len(audience.seat)),
                         rng.uniform(8, 30, len(audience.seat))], axis=1)
    order = np.argsort(-layout.row[audience.seat], kind="stable")
    return Scene(with_bodies, empty, rects, textures, pts, noise_parts, occluder, order, audience.tone[:, 2],
                 lip_gap(audience.neutral))


def _auditorium(layout: Layout, rng: np.random.Generator) -> np.ndarray:
    """(H, W) float32: dark wall gradient, seat backs of every row in perspective."""
    h, w = layout.height_px, layout.width_px
    ys = np.linspace(0, 1, h, dtype=np.float32)[:, None]
    img = np.broadcast_to(10 + 14 * ys, (h, w)).copy()
    texture = cv2.GaussianBlur(rng.normal(0, 1, (h // 8 + 1, w // 8 + 1)).astype(np.float32), (0, 0), 2)
    img += 3 * cv2.resize(texture, (w, h), interpolation=cv2.INTER_LINEAR)
    for seat in np.argsort(-layout.row, kind="stable"):
        _draw_seat_back(img, layout, int(seat))
    return img


def _seat_geometry(layout: Layout, seat: int) -> tuple[float, float, float, float]:
    """(x centre, face centre y, face width px, face height px) of a seat."""
    r = layout.row[seat]
    fw, fh = layout.row_face_px[r]
    return layout.centre_px[seat, 0], layout.centre_px[seat, 1], fw, fh


def _draw_seat_back(img: np.ndarray, layout: Layout, seat: int) -> None:
    x, y, fw, fh = _seat_geometry(layout, seat)
    half = 1.45 * fw
    top, bottom = y - 0.55 * fh, _body_bottom_px(layout, seat)
    pts = np.array([[x - half, bottom], [x - half, top + 0.3 * fh], [x - 0.8 * half, top],
                    [x + 0.8 * half, top], [x + half, top + 0.3 * fh], [x + half, bottom]])
    cv2.fillPoly(img, [np.rint(pts * 16).astype(np.int32)], 30.0, cv2.LINE_AA, 4)
    cv2.polylines(img, [np.rint(pts[1:5] * 16).astype(np.int32)], False, 42.0, max(1, int(fw / 12)), cv2.LINE_AA, 4)


def _draw_body(img: np.ndarray, layout: Layout, seat: int, grey: float) -> np.ndarray:
    """Neck and shoulders below the face; returns the seat's region (x0, y0, x1, y1)."""
    x, y, fw, fh = _seat_geometry(layout, seat)
    neck_top, shoulder_y = y + 0.35 * fh, y + 0.95 * fh
    bottom = _body_bottom_px(layout, seat)
    cv2.rectangle(img, _pt(x - 0.25 * fw, neck_top), _pt(x + 0.25 * fw, shoulder_y + 0.2 * fh), 0.8 * grey, -1)
    _ellipse(img, (x, shoulder_y + 0.9 * fh), (1.3 * fw, 0.9 * fh), 0.0, grey)     # rounded shoulders
    cv2.rectangle(img, _pt(x - 1.3 * fw, shoulder_y + 0.9 * fh), _pt(x + 1.3 * fw, bottom), float(grey), -1)
    h, w = img.shape
    return np.array([max(int(x - 1.5 * fw), 0), max(int(y - 1.2 * fh), 0),
                     min(int(x + 1.5 * fw) + 1, w), min(int(bottom) + 1, h)])


def _body_bottom_px(layout: Layout, seat: int) -> float:
    """Bodies reach down to the seat backs of the row in front (or 3 face heights for the front row)."""
    r = layout.row[seat]
    if r == 0:
        return layout.centre_px[seat, 1] + 3.0 * layout.row_face_px[0, 1]
    return layout.row_y_px[r - 1] + 0.2 * layout.row_face_px[r - 1, 1]


def _redraw_front_seats(img: np.ndarray, empty: np.ndarray, layout: Layout, seat: int) -> None:
    """Seat backs of the row in front hide the lower body: copy them back from the empty layer."""
    r = layout.row[seat]
    if r == 0:
        return
    for s in np.flatnonzero(layout.row == r - 1):
        x, y, fw, fh = _seat_geometry(layout, int(s))
        x0, x1 = max(int(x - 1.5 * fw), 0), min(int(x + 1.5 * fw) + 1, img.shape[1])
        y0, y1 = max(int(y - 0.6 * fh), 0), min(int(_body_bottom_px(layout, int(s))) + 1, img.shape[0])
        mask = empty[y0:y1, x0:x1] >= 29.5
        img[y0:y1, x0:x1][mask] = empty[y0:y1, x0:x1][mask]


def _vignette(h: int, w: int) -> np.ndarray:
    ys, xs = np.ogrid[-1:1:h * 1j, -1:1:w * 1j]
    return (1.0 - 0.3 * (xs ** 2 + ys ** 2) / 2).astype(np.float32)


def _pt(x: float, y: float) -> tuple[int, int]:
    return int(round(x)), int(round(y))


# ----------------------------------------------------------------------------- per frame


def render_frame(scene: Scene, anim: Animation, f: int, rng: np.random.Generator) -> np.ndarray:
    """(H, W) uint8 frame `f`."""
    frame = scene.with_bodies.copy()
    states = anim.state[f]
    for v in np.flatnonzero(states == LEFT):
        x0, y0, x1, y1 = scene.seat_rect[v]
        frame[y0:y1, x0:x1] = scene.empty[y0:y1, x0:x1]
    points, depth = frame_points(anim, f)
    for v in scene.order.tolist():
        if states[v] == TURNED:
            centre = anim.centre_px[f, v] + (0, -0.25 * anim.scale_px[v])
            _ellipse(frame, centre, HAIR_RADII * anim.scale_px[v] * (1.0, 1.15), anim.pose_deg[f, v, 2],
                     scene.hair_grey[v])
        elif states[v] != LEFT:
            _draw_face(frame, scene, anim, f, v, points[v], depth[v], states[v] == OCCLUDED)
    dy, dx = rng.integers(0, NOISE_MARGIN, 2)
    h, w = frame.shape
    cv2.add(frame, scene.noise[0, dy:dy + h, dx:dx + w], dst=frame)
    cv2.subtract(frame, scene.noise[1, dy:dy + h, dx:dx + w], dst=frame)
    return frame


def frame_points(anim: Animation, f: int) -> tuple[np.ndarray, np.ndarray]:
    """Image positions (V, 68 + RING + 1, 2) and rotated depths (V, 68 + RING + 1) of every
    viewer's landmarks, ring points and hair centre at frame f (one vectorized projection)."""
    n_view = anim.frontal.shape[1]
    extra = np.concatenate([ring_points(), HAIR_CENTRE[None]])
    xy = np.concatenate([anim.frontal[f], np.broadcast_to(extra, (n_view,) + extra.shape)], axis=1)
    z = np.broadcast_to(np.concatenate([point_depth(), [-0.3]]), xy.shape[:2])[..., None]
    rot = rotation(np.nan_to_num(anim.pose_deg[f]))
    rotated = np.einsum("vij,vpj->vpi", rot, np.concatenate([np.nan_to_num(xy), z], axis=-1))
    image = rotated[..., :2] * anim.scale_px[:, None, None] + anim.centre_px[f][:, None, :]
    return image, rotated[..., 2]


def _draw_face(frame, scene: Scene, anim: Animation, f: int, v: int, points: np.ndarray, depth: np.ndarray,
               occluded: bool) -> None:
    """Hair, warped real face, open mouth, and an occluder in front when occluded."""
    scale = anim.scale_px[v]
    _ellipse(frame, points[-1], HAIR_RADII * scale, anim.pose_deg[f, v, 2], scene.hair_grey[v])
    warp_face(frame, scene.textures[v], scene.src_pts[v], points[:-1], depth[:-1])
    _mouth_interior(frame, points[60:68], scene.lip_gap[v] * scale)
    if occluded:
        dx, dy, grey = scene.occluder[v]
        _ellipse(frame, anim.centre_px[f, v] + np.array([dx, dy]) * scale, np.array([0.85, 1.0]) * scale, 0.0, grey)


def _ellipse(frame: np.ndarray, centre, radii, angle_deg: float, grey: float) -> None:
    cv2.ellipse(frame, (int(round(centre[0] * 16)), int(round(centre[1] * 16))),
                (max(1, int(round(radii[0] * 16))), max(1, int(round(radii[1] * 16)))),
                float(angle_deg), 0, 360, float(grey), -1, cv2.LINE_AA, 4)


def lip_gap(shape: np.ndarray) -> np.ndarray:
    """(...,) largest inner-lip opening of (..., 68, 2) shapes."""
    return np.linalg.norm(shape[..., [61, 62, 63], :] - shape[..., [67, 66, 65], :], axis=-1).max(-1)


def _mouth_interior(frame: np.ndarray, inner_lips: np.ndarray, neutral_gap_px: float) -> None:
    """Dark mouth interior once the lips part (beyond the source face's own gap) by over a pixel."""
    if lip_gap(np.concatenate([np.zeros((60, 2)), inner_lips])) - neutral_gap_px > 1.0:
        cv2.fillPoly(frame, [np.rint(inner_lips * 16).astype(np.int32)], 28.0, cv2.LINE_AA, 4)


# ----------------------------------------------------------------------------- video


def open_writer(path: Path, codec: str, fps: float, width: int, height: int) -> cv2.VideoWriter:
    """A grey VideoWriter; raises DataError naming the codec when OpenCV cannot write it."""
    writer = cv2.VideoWriter(str(path), cv2.VideoWriter_fourcc(*codec), float(fps), (width, height), False)
    if not writer.isOpened():
        raise DataError(f"OpenCV cannot write codec '{codec}' to {path}; set synthetic.codec=mp4v "
                        f"(works with opencv-python-headless) or install an OpenCV built with that codec.")
    return writer
