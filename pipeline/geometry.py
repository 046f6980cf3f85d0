"""Where the detect stage looks: seat rows and search bands, from a seat map or from the footage.

Three sources, in order of precedence (``geometry_for``):

* **seat map**: session.yaml lists the seat ``rows`` (y, face size, seat x
  positions; rows may be curved: each row's strip spans its seats' y range).
  Only those rows are searched.
* **session bands**: session.yaml gives ``front_rows_band_px`` /
  ``back_rows_band_px`` with their face sizes. The bands are tiled, and the
  rows found in them are tracked between full scans.
* **survey** (the default for a user's own recording): the ``survey`` stage
  scans a few frames spread over the recording over the WHOLE frame height at a
  ladder of face sizes (``detect.survey_face_px``), clusters the faces into
  rows, and gives each row the detector made for its face size (the back-rows
  detector for boxes up to ``detect.back_max_face_px``). No fraction of the
  frame height is assumed anywhere.

Rows are written to ``cache/survey/<movie>/<session>/<camera>/geometry.yaml``
(``Geometry.to_dict``): one line per row with what is searched there, so a user
can read (and copy into session.yaml as a seat map) what the run looked at.
"""
from __future__ import annotations

import dataclasses
from dataclasses import dataclass

import numpy as np

from pipeline.store import DataError

BAND_FRONT, BAND_BACK = 0, 1
BAND_NAMES = {BAND_FRONT: "front", BAND_BACK: "back"}
BOX_SIDE_PER_FACE_W = 1.2   # our square box side / jaw width (see pipeline.detector_training)
BAND_KEYS = {"front": ("front_rows_band_px", "front_band_px"), "back": ("back_rows_band_px", "back_band_px")}


@dataclass(frozen=True)
class Band:
    """A horizontal region of the frame searched by one detector.

    top_px/bottom_px: rows of the full frame (bottom exclusive).
    face_top_px/face_bottom_px: expected face-box side at the band's top and
    bottom (perspective: linear in between), used to choose strip scales.
    """
    band_id: int
    top_px: int
    bottom_px: int
    face_top_px: float
    face_bottom_px: float

    def face_px_at(self, y_px: float) -> float:
        frac = (y_px - self.top_px) / max(1.0, self.bottom_px - self.top_px)
        return self.face_top_px + frac * (self.face_bottom_px - self.face_top_px)


@dataclass(frozen=True)
class Strip:
    """A slice [top_px, bottom_px) × [left_px, right_px) resized by `scale` before detection.

    right_px = 0 means the full frame width.
    """
    band_id: int
    top_px: int
    bottom_px: int
    scale: float
    left_px: int = 0
    right_px: int = 0


@dataclass(frozen=True)
class Row:
    """A seat row as searched: its strip and what was seen there when it was found."""
    strip: Strip
    face_px: float          # typical face-box side in the row, px
    y_px: float             # typical face-centre y, px
    faces: int = 0          # faces that made the row (survey: over all survey frames)

    def to_dict(self) -> dict:
        s = self.strip
        return {"y_px": round(self.y_px, 1), "face_px": round(self.face_px, 1),
                "detector": BAND_NAMES[s.band_id], "top_px": s.top_px, "bottom_px": s.bottom_px,
                "left_px": s.left_px, "right_px": s.right_px, "scale": round(s.scale, 4), "faces": self.faces}

    @classmethod
    def from_dict(cls, d: dict) -> "Row":
        band = {v: k for k, v in BAND_NAMES.items()}[d["detector"]]
        strip = Strip(band, int(d["top_px"]), int(d["bottom_px"]), float(d["scale"]),
                      int(d["left_px"]), int(d["right_px"]))
        return cls(strip, float(d["face_px"]), float(d["y_px"]), int(d.get("faces", 0)))


@dataclass(frozen=True)
class Geometry:
    """Rows searched in every sampled frame, and bands fully rescanned every detect.rescan_s."""
    source: str                        # "seat map", "session bands" or "survey"
    rows: tuple[Row, ...]
    bands: tuple[Band, ...] = ()
    frame_hw: tuple[int, int] = (0, 0)
    notes: tuple[str, ...] = ()        # warnings found while making it (printed by the run report)

    @property
    def strips(self) -> list[Strip]:
        return [r.strip for r in self.rows]

    @property
    def tracks_rows(self) -> bool:
        """A seat map is taken as complete; other geometries keep looking for new rows."""
        return self.source != "seat map"

    def to_dict(self) -> dict:
        return {"source": self.source, "height_px": self.frame_hw[0], "width_px": self.frame_hw[1],
                "rows": [r.to_dict() for r in self.rows],
                "bands": [{"detector": BAND_NAMES[b.band_id], "top_px": b.top_px, "bottom_px": b.bottom_px,
                           "face_top_px": round(b.face_top_px, 2), "face_bottom_px": round(b.face_bottom_px, 2)}
                          for b in self.bands],
                "notes": list(self.notes)}

    @classmethod
    def from_dict(cls, d: dict) -> "Geometry":
        try:
            names = {v: k for k, v in BAND_NAMES.items()}
            bands = tuple(Band(names[b["detector"]], int(b["top_px"]), int(b["bottom_px"]),
                               float(b["face_top_px"]), float(b["face_bottom_px"])) for b in d.get("bands") or [])
            return cls(str(d["source"]), tuple(Row.from_dict(r) for r in d.get("rows") or []), bands,
                       (int(d.get("height_px", 0)), int(d.get("width_px", 0))), tuple(d.get("notes") or []))
        except (KeyError, TypeError, ValueError) as err:
            raise DataError(f"geometry file is malformed ({err!r}). Delete it and rerun `audience survey`.") from err


# ----------------------------------------------------------------------------- strips


def band_strips(band: Band, target_face_px: float, strip_faces: float, step_faces: float) -> list[Strip]:
    """Cut a band into overlapping strips, each scaled so its faces are about target_face_px.

    A strip is strip_faces expected faces tall and the next starts step_faces
    later, so every face (at most strip_faces - step_faces faces tall) lies
    whole inside one strip. A short strip caps the HOG pyramid: faces much
    bigger than expected are not searched for, which is where the speed comes from.
    """
    strips, y = [], float(band.top_px)
    while True:
        face = band.face_px_at(y)
        bottom = min(band.bottom_px, y + strip_faces * face)
        strips.append(Strip(band.band_id, int(np.floor(y)), int(np.ceil(bottom)), target_face_px / face))
        if bottom >= band.bottom_px:
            return strips
        y += step_faces * face


def detector_for_face(face_px: float, cfg) -> int:
    """The back-rows detector (trained on small upsampled faces) for boxes up to detect.back_max_face_px."""
    return BAND_BACK if face_px <= cfg.detect.back_max_face_px else BAND_FRONT


def survey_strips(cfg, height_px: int, width_px: int) -> list[Strip]:
    """Strips over the whole frame height at a geometric ladder of face sizes.

    Each step f of the ladder (detect.survey_face_px, ratio detect.survey_step)
    tiles the full height with strips scaled so faces of side f reach
    detect.target_face_px; a strip's HOG pyramid then covers faces from f up to
    its height, so consecutive steps overlap and every size in range is searched.
    """
    dc = cfg.detect
    lo, hi = dc.survey_face_px
    strips, face = [], float(lo)
    while face <= hi * dc.survey_step:
        band = Band(detector_for_face(face, cfg), 0, height_px, face, face)
        strips += band_strips(band, dc.target_face_px, dc.strip_faces, dc.step_faces)
        face *= dc.survey_step
    return strips


def row_strip(band_id: int, top: float, bottom: float, left: float, right: float, face_px: float, cfg,
              height_px: int = 0, width_px: int = 0) -> Strip:
    """A row's strip: faces' extent plus detect.row_margin_faces above and below, 2 faces left and right,
    scaled so faces down to detect.row_min_face_frac of the row's size still fill the HOG window."""
    dc = cfg.detect
    top = max(0.0, top - dc.row_margin_faces * face_px)
    bottom = bottom + dc.row_margin_faces * face_px
    left = max(0.0, left - 2 * face_px)
    right = right + 2 * face_px
    if height_px:
        bottom = min(bottom, height_px)
    if width_px:
        right = min(right, width_px)
    return Strip(band_id, int(np.floor(top)), int(np.ceil(bottom)), dc.target_face_px / (dc.row_min_face_frac * face_px),
                 int(np.floor(left)), int(np.ceil(right)))


def cluster_rows(boxes: np.ndarray, gap_faces: float) -> list[np.ndarray]:
    """Indices of boxes (D, 4) grouped into rows: sorted by centre y, a new row where the gap
    exceeds gap_faces × the current row's median box side."""
    if len(boxes) == 0:
        return []
    side = boxes[:, 2] - boxes[:, 0]
    cy = 0.5 * (boxes[:, 1] + boxes[:, 3])
    order = np.argsort(cy, kind="stable")
    groups, current = [], [order[0]]
    for prev, i in zip(order[:-1], order[1:]):
        if cy[i] - cy[prev] > gap_faces * np.median(side[current]):
            groups.append(np.asarray(current))
            current = []
        current.append(i)
    groups.append(np.asarray(current))
    return groups


def rows_from_boxes(boxes: np.ndarray, cfg, band_ids: np.ndarray | None = None, min_faces: int = 1,
                    height_px: int = 0, width_px: int = 0) -> list[Row]:
    """Rows around detected faces (D, 4) px. With band_ids, boxes keep the detector that found them
    (rows are clustered per detector); without, each row gets the detector made for its face size."""
    groups = []
    if band_ids is None:
        groups = [(None, g) for g in cluster_rows(boxes, cfg.detect.row_gap_faces)]
    else:
        for band_id in np.unique(band_ids):
            idx = np.flatnonzero(band_ids == band_id)
            groups += [(int(band_id), idx[g]) for g in cluster_rows(boxes[idx], cfg.detect.row_gap_faces)]
    rows = []
    for band_id, g in groups:
        if len(g) < min_faces:
            continue
        b = boxes[g]
        face = float(np.median(b[:, 2] - b[:, 0]))
        band_id = detector_for_face(face, cfg) if band_id is None else band_id
        strip = row_strip(band_id, b[:, 1].min(), b[:, 3].max(), b[:, 0].min(), b[:, 2].max(), face, cfg,
                          height_px, width_px)
        rows.append(Row(strip, face, float(np.median(0.5 * (b[:, 1] + b[:, 3]))), len(g)))
    return sorted(rows, key=lambda r: r.y_px)


def perspective_outliers(rows: list[Row], max_ratio: float = 1.5) -> list[Row]:
    """Rows whose face size is off the audience's perspective trend (log face size linear in y, a
    Theil-Sen fit) by more than max_ratio: small false detections on seat backs or walls make such
    "rows" between real ones."""
    if len(rows) < 3:
        return []
    from scipy.stats import theilslopes

    y = np.array([r.y_px for r in rows])
    log_face = np.log([r.face_px for r in rows])
    slope, intercept, _, _ = theilslopes(log_face, y)      # median of pairwise slopes: robust to a few odd rows
    keep = np.abs(log_face - (slope * y + intercept)) <= np.log(max_ratio)
    return [r for r, k in zip(rows, keep) if not k]


def merge_rows(old: list[Row], new: list[Row]) -> list[Row]:
    """Union of rows: a new row replaces old ones it overlaps (widened to cover both), others stay."""
    def overlaps(a: Strip, b: Strip) -> bool:
        return a.band_id == b.band_id and a.top_px < b.bottom_px and b.top_px < a.bottom_px

    merged = []
    for n in new:
        for o in (o for o in old if overlaps(n.strip, o.strip)):
            widened = dataclasses.replace(n.strip, left_px=min(n.strip.left_px, o.strip.left_px),
                                          right_px=max(n.strip.right_px, o.strip.right_px))
            n = dataclasses.replace(n, strip=widened)
        merged.append(n)
    kept = [o for o in old if not any(overlaps(n.strip, o.strip) for n in new)]
    return sorted(kept + merged, key=lambda r: r.strip.top_px)


def bands_from_rows(rows: list[Row], cfg, height_px: int) -> tuple[Band, ...]:
    """One band per detector spanning its rows (plus detect.band_margin_faces), for periodic rescans
    that catch people in rows nobody sat in while the rows were found."""
    bands = []
    for band_id in (BAND_FRONT, BAND_BACK):
        mine = sorted((r for r in rows if r.strip.band_id == band_id), key=lambda r: r.y_px)
        if not mine:
            continue
        top_face, bottom_face = mine[0].face_px, mine[-1].face_px
        margin = cfg.detect.band_margin_faces
        top = int(max(0, np.floor(mine[0].y_px - (0.5 + margin) * top_face)))
        bottom = int(min(height_px, np.ceil(mine[-1].y_px + (0.5 + margin) * bottom_face)))
        bands.append(Band(band_id, top, bottom, top_face, bottom_face))
    return tuple(bands)


# ----------------------------------------------------------------------------- from session.yaml


def bands_from_session(cfg, height_px: int, meta: dict) -> tuple[Band, ...] | None:
    """Bands from session.yaml's ``*_rows_band_px: [top, bottom]`` and ``*_face_px`` (None if it has none).

    A margin of detect.band_margin_faces expected faces is added above and below each band.
    """
    bands = []
    for band_id, name in ((BAND_FRONT, "front"), (BAND_BACK, "back")):
        given = next((meta[k] for k in BAND_KEYS[name] if meta.get(k) is not None), None)
        if given is None:
            continue
        faces = meta.get(f"{name}_face_px")
        try:
            top, bottom = (float(v) for v in given)
            if faces is None:
                raise ValueError(f"{name}_face_px is missing")
            face_top, face_bottom = (float(v) for v in faces)
        except (TypeError, ValueError) as err:
            raise DataError(f"session.yaml {BAND_KEYS[name][0]} needs [top, bottom] px and {name}_face_px "
                            f"[side at top, side at bottom] px ({err}). Fix session.yaml or remove the band "
                            f"to let the survey find the rows.") from err
        margin = cfg.detect.band_margin_faces
        top_i = int(max(0, np.floor(top - margin * face_top)))
        bottom_i = int(min(height_px, np.ceil(bottom + margin * face_bottom)))
        if bottom_i <= top_i or min(face_top, face_bottom) <= 0 or top >= height_px:
            raise DataError(f"session.yaml row band '{name}' = [{top}, {bottom}] px with faces {face_top}..{face_bottom} "
                            f"px does not fit a {height_px} px tall frame. Fix session.yaml (image px, y down) "
                            f"or remove the band to let the survey find the rows.")
        bands.append(Band(band_id, top_i, bottom_i, face_top, face_bottom))
    return tuple(bands) or None


def rows_from_seat_map(rows: list, back_band_px, cfg, height_px: int, width_px: int = 0) -> list[Row]:
    """One row per seat-map row (session.yaml ``rows``: y_px, face_w_px, face_h_px, optional seats_x_px
    and seats_y_px for curved rows). A row is searched by the back-rows detector when its centre lies in
    ``back_rows_band_px``, else by the detector made for its face size."""
    out = []
    for i, row in enumerate(rows):
        try:
            y, face_w, face_h = float(row["y_px"]), float(row["face_w_px"]), float(row["face_h_px"])
            seats_x = [float(v) for v in row.get("seats_x_px") or []]
            seats_y = [float(v) for v in row.get("seats_y_px") or []] or [y]
        except (KeyError, TypeError, ValueError, AttributeError) as err:
            raise DataError(f"session.yaml rows[{i}] must be a mapping with y_px, face_w_px, face_h_px "
                            f"(and optional seats_x_px, seats_y_px) ({err!r}). Fix session.yaml or delete "
                            f"'rows' to let the survey find them.") from err
        outside = [v for v in seats_y + [y] if not 0 <= v < height_px] + \
                  [v for v in seats_x if width_px and not 0 <= v < width_px]
        if outside or face_w <= 0 or face_h <= 0:
            raise DataError(f"session.yaml rows[{i}] (y_px {y}, faces {face_w}×{face_h} px) does not match the "
                            f"{width_px}×{height_px} px frame: {outside or 'face size <= 0'}. The seat map must be "
                            f"in image px of this camera (x right, y down); fix it or delete 'rows'.")
        box = BOX_SIDE_PER_FACE_W * face_w
        if back_band_px is not None:
            back = float(back_band_px[0]) - 1 <= y <= float(back_band_px[1]) + 1
            band_id = BAND_BACK if back else BAND_FRONT
        else:
            band_id = detector_for_face(box, cfg)
        left, right = (min(seats_x) - box / 2, max(seats_x) + box / 2) if seats_x else (0.0, 0.0)
        top, bottom = min(seats_y) - face_h / 2, max(seats_y) + face_h / 2
        strip = row_strip(band_id, top, bottom, left, right, box, cfg, height_px, width_px)
        if not seats_x:
            strip = dataclasses.replace(strip, left_px=0, right_px=0)
        out.append(Row(strip, box, y, len(seats_x)))
    return sorted(out, key=lambda r: r.y_px)


def geometry_from_session(cfg, height_px: int, width_px: int, meta: dict | None) -> Geometry | None:
    """The seat map or bands session.yaml gives, else None (also with detect.use_known_rows false)."""
    meta = meta or {}
    if not cfg.detect.use_known_rows:
        return None
    rows = meta.get("rows")
    back = next((meta[k] for k in BAND_KEYS["back"] if meta.get(k) is not None), None)
    if isinstance(rows, list) and rows:
        found = rows_from_seat_map(rows, back, cfg, height_px, width_px)
        return Geometry("seat map", tuple(found), (), (height_px, width_px), tuple(check_rows(found, cfg)))
    bands = bands_from_session(cfg, height_px, meta)
    if bands:
        return Geometry("session bands", (), bands, (height_px, width_px))
    return None


# ----------------------------------------------------------------------------- checks


def check_rows(rows: list[Row], cfg) -> list[str]:
    """Warnings: rows of small faces searched by the front detector (which misses them)."""
    notes = []
    for r in rows:
        if r.strip.band_id == BAND_FRONT and r.face_px <= cfg.detect.back_max_face_px:
            notes.append(f"row at y={r.y_px:.0f} px has {r.face_px:.0f} px faces but is searched by the FRONT "
                         f"detector (back-rows detector is for faces up to detect.back_max_face_px="
                         f"{cfg.detect.back_max_face_px:g} px): expect low recall there. Fix back_rows_band_px in "
                         f"session.yaml.")
    return notes


__all__ = ["Band", "Strip", "Row", "Geometry", "BAND_FRONT", "BAND_BACK", "band_strips", "survey_strips",
           "rows_from_boxes", "merge_rows", "bands_from_rows", "geometry_from_session", "rows_from_seat_map",
           "bands_from_session", "detector_for_face", "check_rows", "cluster_rows", "row_strip"]
