"""Seated faces linked across the sampled frames of one chunk, and each face's start box for the final
landmark fit taken from its track.

An audience sits still: a face's box hardly moves over a second or two, while one frame's fit can start
from a detector box a tenth of a face off and slip. So the final landmark pass of a face starts from the
per-coordinate median (centre x, centre y, side, roll) of its track's boxes within ±`half_window` sampled frames,
not from that frame's box alone (`landmarks.track_window_s`). The boxes are the refine passes' ERT boxes,
which follow the face, not the detector's grid.
"""
from __future__ import annotations

import numpy as np
from scipy.optimize import linear_sum_assignment

MAX_SHIFT = 0.5          # a face links to a track whose last box centre is within this many box widths


class TrackLinker:
    """Links the boxes of successive frames (in time order) into tracks by box centre: one-to-one, nearest
    first (Hungarian), within MAX_SHIFT box widths of the track's last box, seen at most `max_gap` frame
    slots ago. Returns a track id per box; a box that links to nothing starts a new track."""

    def __init__(self, max_gap: int):
        self.max_gap = max_gap
        self._last: dict[int, tuple[np.ndarray, float, int]] = {}    # track → (centre, width, slot)
        self._next = 0

    def link(self, slot: int, boxes: np.ndarray) -> np.ndarray:
        boxes = np.asarray(boxes, np.float64).reshape(-1, 4)
        ids = np.full(len(boxes), -1, np.int64)
        centre, width = (boxes[:, :2] + boxes[:, 2:]) / 2, boxes[:, 2] - boxes[:, 0]
        live = [t for t, (_, _, seen) in self._last.items() if slot - seen <= self.max_gap]
        usable = np.isfinite(centre).all(axis=1) & (width > 0)
        if live and usable.any():
            rows = np.flatnonzero(usable)
            t_centre = np.array([self._last[t][0] for t in live])
            t_width = np.array([self._last[t][1] for t in live])
            dist = (np.linalg.norm(centre[rows, None] - t_centre[None], axis=2)
                    / np.maximum(width[rows, None], t_width[None]))
            for i, j in zip(*linear_sum_assignment(np.where(dist < MAX_SHIFT, dist, 1e6))):
                if dist[i, j] < MAX_SHIFT:
                    ids[rows[i]] = live[j]
        for i in np.flatnonzero(ids < 0):
            ids[i], self._next = self._next, self._next + 1
        for i in np.flatnonzero(usable):
            self._last[int(ids[i])] = (centre[i], float(width[i]), slot)
        for t in [t for t, (_, _, seen) in self._last.items() if slot - seen > self.max_gap]:
            del self._last[t]
        return ids


def median_start(history: list[tuple[int, np.ndarray, float]], slot: int, half_window: int) -> tuple[np.ndarray, float]:
    """The median square box [l, t, r, b] (centre x, centre y and side each) and the median roll of a
    track's (slot, box, roll) entries within ±half_window slots of `slot`."""
    near = [(box, roll) for s, box, roll in history if abs(s - slot) <= half_window]
    if not near:
        raise ValueError(f"no box of the track within {half_window} slots of slot {slot}")
    boxes = np.array([box for box, _ in near], np.float64).reshape(-1, 4)
    cx = np.median((boxes[:, 0] + boxes[:, 2]) / 2)
    cy = np.median((boxes[:, 1] + boxes[:, 3]) / 2)
    half = np.median(boxes[:, 2] - boxes[:, 0]) / 2
    return np.array([cx - half, cy - half, cx + half, cy + half]), float(np.median([roll for _, roll in near]))
