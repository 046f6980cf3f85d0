"""Seat layout of one camera's view: rows in perspective, seat centres, face scales.

Rows are equally spaced in depth, so apparent size goes as 1/depth: the face
size (and seat pitch, and the vertical gap to the next row) is interpolated
linearly in 1/size between the front row and the back row. Row 0 is the front
row (bottom of the frame, biggest faces); row `rows-1` is the back row.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from pipeline.synthetic.config import TheatreGeometry

# canonical face frame (mean-face units): the face box spans x ±0.627 (jaw) and
# y from FOREHEAD_Y (hairline) to 0.584 (chin), i.e. 1.254 × 1.584 units.
FACE_BOX_UNITS = np.array([1.254, 1.584])
FOREHEAD_Y = -1.0


@dataclass(frozen=True)
class Layout:
    """All seats of one camera (S seats)."""
    width_px: int
    height_px: int
    row: np.ndarray          # (S,) int, 0 = front
    col: np.ndarray          # (S,) int, 0 = leftmost in the image
    centre_px: np.ndarray    # (S, 2) float, face centre (canonical origin) in the image
    scale_px: np.ndarray     # (S,) float, pixels per canonical face unit
    row_face_px: np.ndarray  # (R, 2) nominal (width, height) face box per row
    row_y_px: np.ndarray     # (R,) face-centre y per row

    @property
    def n_seats(self) -> int:
        return len(self.row)

    def row_band_px(self, rows: np.ndarray) -> tuple[float, float]:
        """(top, bottom) y-range covering the face boxes of the given rows."""
        rows = np.asarray(rows)
        half_h = self.row_face_px[rows, 1] * 0.5
        return float((self.row_y_px[rows] - half_h).min()), float((self.row_y_px[rows] + half_h).max())


def _inverse_lerp_sizes(front: float, back: float, n: int) -> np.ndarray:
    """n sizes from front to back, linear in 1/size (equal depth steps)."""
    if n == 1:
        return np.array([front], dtype=float)
    return 1.0 / np.linspace(1.0 / front, 1.0 / back, n)


def make_layout(geo: TheatreGeometry) -> Layout:
    """Seat centres and face scales for one camera (same for every session)."""
    face_w = _inverse_lerp_sizes(geo.face_front_px[0], geo.face_back_px[0], geo.rows)
    face_h = _inverse_lerp_sizes(geo.face_front_px[1], geo.face_back_px[1], geo.rows)
    scale = 0.5 * (face_w / FACE_BOX_UNITS[0] + face_h / FACE_BOX_UNITS[1])
    row_y = _row_centres_y(face_h, geo)
    seats = np.rint(np.linspace(geo.seats_front, geo.seats_back, geo.rows)).astype(int)
    rows, cols, centres, scales = [], [], [], []
    for r in range(geo.rows):
        pitch = min(geo.seat_pitch_faces * face_w[r], 0.96 * geo.width_px / seats[r])
        stagger = 0.5 * pitch * (r % 2)          # seats of alternate rows are offset half a seat
        xs = geo.width_px / 2 + (np.arange(seats[r]) - (seats[r] - 1) / 2) * pitch + stagger
        xs = np.clip(xs, face_w[r], geo.width_px - face_w[r])
        for c, x in enumerate(xs):
            rows.append(r)
            cols.append(c)
            centres.append((x, row_y[r]))
            scales.append(scale[r])
    return Layout(geo.width_px, geo.height_px, np.array(rows), np.array(cols),
                  np.array(centres, dtype=float), np.array(scales, dtype=float),
                  np.stack([face_w, face_h], axis=1), row_y)


def _row_centres_y(face_h: np.ndarray, geo: TheatreGeometry) -> np.ndarray:
    """Face-centre y per row: gaps proportional to the apparent row size, spanning the audience band."""
    top, bottom = geo.audience_top_frac * geo.height_px, geo.audience_bottom_frac * geo.height_px
    if len(face_h) == 1:
        return np.array([bottom])
    gaps = 0.5 * (face_h[:-1] + face_h[1:])            # gap between row r and r+1 ∝ their size
    offsets = np.concatenate([[0.0], np.cumsum(gaps)])
    return bottom - offsets / offsets[-1] * (bottom - top)
