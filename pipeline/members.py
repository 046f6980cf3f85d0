"""Stage 'members': which audience member (seat) each face belongs to, per session and camera.

No seat map is needed: viewers stay in their seats, so over a session their
face centres pile up around fixed points. Seats are discovered as density
peaks of face centres (each face counts its neighbours within
`members.seat_radius` face widths; peaks are taken greedily, highest first,
at least `members.seat_spacing` face widths apart, then refined by a few
mean-shift steps). Every face is then assigned to the nearest seat within
`seat_radius` of its own width; two faces on one seat in one frame keep the
closer one. A seat becomes a member only when it is observed in at least
`members.min_observed_fraction` of the session's good sampled frames (short,
spurious tracks are dropped, as in the paper). Seats may also be given:
`members.seat_source: session` reads `seats_px` ((S, 2) list of [x, y] px)
from the session's session.yaml (optionally keyed by camera).

Each face also gets a fit-quality score (`fit_scores`): how far its nose and
eye corners sit from its member's median frontal face; binning drops faces
above `binning.max_fit_score` (gross landmark misfits), not expressions.

Member ids: `<session>/<camera>/seat-r<row>-c<col>` with rows numbered from
the top of the image (row bands split where seat y jumps by more than
`members.row_gap` face heights) and columns from the left.
"""
from __future__ import annotations

import warnings
from collections import defaultdict
from pathlib import Path

import numpy as np

from pipeline.runner import Stage, Unit
from pipeline.store import DataError, Workspace

MEAN_SHIFT_STEPS = 3
MEMBERS_FILE = "members"
# points that expressions hardly move in the frontal face (nose, eye corners): a fit that displaces them is a misfit
RIGID_POINTS = np.r_[27:36, 36, 39, 42, 45]


# ----------------------------------------------------------------------------- seats


def box_centres_widths(box_px: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Boxes (D, 4) [l, t, r, b] → centres (D, 2) px, widths (D,) px."""
    box = np.asarray(box_px, np.float64).reshape(-1, 4)
    return np.stack([(box[:, 0] + box[:, 2]) / 2, (box[:, 1] + box[:, 3]) / 2], 1), box[:, 2] - box[:, 0]


def discover_seats(centres_px: np.ndarray, widths_px: np.ndarray, n_frames: int, cfg,
                   rng: np.random.Generator | None = None) -> tuple[np.ndarray, np.ndarray]:
    """Density peaks of face centres (D, 2) → seat centres (S, 2) px and seat face widths (S,) px.

    A candidate needs neighbours in at least half of min_observed_fraction × n_frames
    (sub-sampling scaled), so sparse false detections never make seats.
    """
    from scipy.spatial import cKDTree

    pts, widths = np.asarray(centres_px, np.float64), np.asarray(widths_px, np.float64)
    if len(pts) == 0:
        return np.zeros((0, 2)), np.zeros(0)
    rng = rng or np.random.default_rng(cfg.seed)
    keep_fraction = 1.0
    if len(pts) > cfg.max_discovery_faces:
        pick = rng.choice(len(pts), cfg.max_discovery_faces, replace=False)
        keep_fraction = cfg.max_discovery_faces / len(pts)
        pts, widths = pts[pick], widths[pick]
    tree = cKDTree(pts)
    radius = cfg.seat_radius * widths
    counts = np.array([len(n) for n in tree.query_ball_point(pts, radius)])
    min_count = max(2.0, 0.5 * cfg.min_observed_fraction * n_frames * keep_fraction)
    seats, seat_w = [], []
    for i in np.argsort(-counts, kind="stable"):
        if counts[i] < min_count:
            break
        if seats:
            gap = np.linalg.norm(np.asarray(seats) - pts[i], axis=1)
            if (gap < cfg.seat_spacing * np.maximum(widths[i], np.asarray(seat_w))).any():
                continue
        centre, width = _mean_shift(tree, pts, widths, pts[i], widths[i], cfg.seat_radius)
        seats.append(centre)
        seat_w.append(width)
    return np.asarray(seats, np.float64).reshape(-1, 2), np.asarray(seat_w, np.float64)


def _mean_shift(tree, pts, widths, centre, width, radius_faces):
    for _ in range(MEAN_SHIFT_STEPS):
        near = tree.query_ball_point(centre, radius_faces * width)
        if not near:
            break
        centre = np.median(pts[near], axis=0)
        width = float(np.median(widths[near]))
    return centre, width


def assign_faces(centres_px: np.ndarray, widths_px: np.ndarray, face_frame: np.ndarray,
                 seats_px: np.ndarray, radius_faces: float) -> np.ndarray:
    """Faces (D, 2) → seat index (D,) int32, -1 for none; at most one face per seat and frame
    (the one closest to the seat centre)."""
    from scipy.spatial import cKDTree

    seat = np.full(len(centres_px), -1, np.int32)
    if len(seats_px) == 0 or len(centres_px) == 0:
        return seat
    dist, nearest = cKDTree(seats_px).query(centres_px)
    inside = dist <= radius_faces * np.asarray(widths_px)
    seat[inside] = nearest[inside]
    order = np.lexsort((dist, seat, face_frame))               # by frame, seat, then distance
    f, s = np.asarray(face_frame)[order], seat[order]
    duplicate = np.zeros(len(order), bool)
    duplicate[1:] = (f[1:] == f[:-1]) & (s[1:] == s[:-1]) & (s[1:] >= 0)
    seat[order[duplicate]] = -1
    return seat


def seat_rows_cols(seats_px: np.ndarray, heights_px: np.ndarray, row_gap: float) -> tuple[np.ndarray, np.ndarray]:
    """Row (from the top) and column (from the left) of each seat (S, 2) → (S,), (S,) int."""
    n = len(seats_px)
    rows, cols = np.zeros(n, np.int16), np.zeros(n, np.int16)
    if n == 0:
        return rows, cols
    order = np.argsort(seats_px[:, 1], kind="stable")
    row = 0
    for prev, cur in zip(order[:-1], order[1:]):
        if seats_px[cur, 1] - seats_px[prev, 1] > row_gap * max(heights_px[cur], heights_px[prev]):
            row += 1
        rows[cur] = row
    for r in np.unique(rows):
        members = np.flatnonzero(rows == r)
        cols[members[np.argsort(seats_px[members, 0], kind="stable")]] = np.arange(len(members))
    return rows, cols


def seats_from_session(session_dir: Path, camera: str) -> np.ndarray | None:
    """`seats_px` from session.yaml: a list of [x, y], or {camera: list}; None if absent."""
    import yaml

    meta_path = Path(session_dir) / "session.yaml"
    if not meta_path.is_file():
        return None
    meta = yaml.safe_load(meta_path.read_text()) or {}
    seats = meta.get("seats_px")
    if isinstance(seats, dict):
        seats = seats.get(camera)
    if seats is None:
        return None
    seats = np.asarray(seats, np.float64)
    if seats.ndim != 2 or seats.shape[1] != 2:
        raise DataError(f"{meta_path}: 'seats_px' must be a list of [x, y] pixel pairs (or a mapping "
                        f"camera → such a list), got shape {seats.shape}.")
    return seats


# ----------------------------------------------------------------------------- one session/camera


def concat_chunks(chunks: list) -> dict[str, np.ndarray]:
    """Frontal chunks (time order) → one face table with frame rows renumbered across chunks."""
    frames_t, frames_ok, cols = [], [], defaultdict(list)
    offset = 0
    for chunk in chunks:
        frames_t.append(chunk["frame_time_s"])
        frames_ok.append(chunk["frame_ok"])
        cols["face_frame"].append(chunk["det_frame"].astype(np.int64) + offset)
        cols["face_time_s"].append(chunk["frame_time_s"][chunk["det_frame"]])
        for src, dst in (("det_box_px", "face_box_px"), ("det_score", "face_score"), ("det_band", "face_band"),
                         ("frontal", "face_frontal"), ("pose_deg", "face_pose_deg"), ("frontal_ok", "face_ok")):
            cols[dst].append(chunk[src])
        offset += len(chunk["frame_time_s"])
    table = {k: np.concatenate(v) for k, v in cols.items()} if chunks else {}
    table["frame_time_s"] = np.concatenate(frames_t) if frames_t else np.zeros(0)
    table["frame_ok"] = np.concatenate(frames_ok) if frames_ok else np.zeros(0, bool)
    return table


def build_members(table: dict, session: str, camera: str, cfg, seats_px: np.ndarray | None = None) -> dict:
    """Face table → members arrays (see store.MEMBERS_DATASETS). cfg: MembersConfig."""
    centres, widths = box_centres_widths(table["face_box_px"])
    heights = table["face_box_px"][:, 3] - table["face_box_px"][:, 1] if len(centres) else np.zeros(0)
    usable = table["face_ok"].astype(bool)
    n_frames = int(table["frame_ok"].sum())
    if seats_px is None:
        seats, seat_w = discover_seats(centres[usable], widths[usable], n_frames, cfg)
    else:
        seats = seats_px
        seat_w = _typical_widths(seats, centres[usable], widths[usable])
    seat = assign_faces(centres[usable], widths[usable], table["face_frame"][usable], seats, cfg.seat_radius)
    face_seat = np.full(len(centres), -1, np.int32)
    face_seat[usable] = seat
    observed = np.array([len(np.unique(table["face_frame"][face_seat == s])) for s in range(len(seats))])
    fraction = observed / max(n_frames, 1)
    kept = np.flatnonzero(fraction >= cfg.min_observed_fraction) if n_frames else np.zeros(0, int)
    remap = np.full(len(seats) + 1, -1, np.int32)
    remap[kept] = np.arange(len(kept))
    face_member = remap[face_seat]                               # -1 stays -1 (index -1 → last = -1)
    seats, seat_w, fraction = seats[kept], seat_w[kept], fraction[kept]
    seat_h = np.array([np.median(heights[face_member == m]) for m in range(len(kept))]) if len(kept) else seat_w
    rows, cols = seat_rows_cols(seats, seat_h, cfg.row_gap)
    ids = np.array([f"{session}/{camera}/seat-r{r:02d}-c{c:02d}" for r, c in zip(rows, cols)], dtype=object)
    return {"face_member": face_member, "member_id": ids, "seat_xy_px": seats.astype(np.float32),
            "seat_width_px": seat_w.astype(np.float32), "seat_row": rows, "seat_col": cols,
            "member_observed_fraction": fraction.astype(np.float32), "seats_discovered": len(remap) - 1}


def fit_scores(frontal: np.ndarray, member: np.ndarray) -> np.ndarray:
    """Landmark fit quality per face (D,): RMS distance of the rigid points (nose, eye corners) of the
    frontal face (D, 68, 2) from its member's median face, canonical units (≈ inter-ocular distances);
    lower = better, NaN without a member. Expressions move mouth, brows and lids, not these points, so a
    laugh keeps a low score while a fit that slipped off the face gets a high one."""
    score = np.full(len(member), np.nan, np.float32)
    rigid = np.asarray(frontal, np.float64)[:, RIGID_POINTS]
    for m in np.unique(member[member >= 0]):
        rows = np.flatnonzero(member == m)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", RuntimeWarning)          # a member whose faces are all unusable
            median = np.nanmedian(rigid[rows], axis=0)
        score[rows] = np.sqrt(((rigid[rows] - median) ** 2).sum(axis=2).mean(axis=1))
    return score


def _typical_widths(seats: np.ndarray, centres: np.ndarray, widths: np.ndarray) -> np.ndarray:
    if len(centres) == 0:
        return np.ones(len(seats))
    from scipy.spatial import cKDTree

    _, nearest = cKDTree(centres).query(seats)
    return widths[nearest]


# ----------------------------------------------------------------------------- stage


def plan(cfg, workspace: Workspace) -> list[Unit]:
    """One unit per (movie, session, camera): inputs = all its frontal chunks, in time order."""
    from pipeline.frontalize import FRONTALIZE

    groups: dict[tuple, list] = defaultdict(list)
    for unit in FRONTALIZE.plan(cfg, workspace):
        groups[unit.key[:3]].append(unit)
    units = []
    for key, chunks in sorted(groups.items()):
        chunks.sort(key=lambda u: u.key[3])
        inputs = tuple(Path(u.outputs[0][1]) for u in chunks)
        out = workspace.stage_output("members", *key, MEMBERS_FILE)
        units.append(Unit(stage="members", key=key, inputs=inputs, outputs=(("members", out),),
                          payload=(("session_dir", str(workspace.session_dir(*key[:2]))),)))
    return units


def compute(unit: Unit, cfg, tmp_outputs: dict[str, Path]) -> None:
    from pipeline.store import read_frontal_chunk, write_members

    movie, session, camera = unit.key
    chunks = [read_frontal_chunk(path) for path in unit.inputs]
    table = concat_chunks(chunks)
    mcfg = cfg.members
    seats = None
    if mcfg.seat_source == "session":
        seats = seats_from_session(Path(unit.get("session_dir")), camera)
        if seats is None:
            raise DataError(f"members.seat_source is 'session' but {unit.get('session_dir')}/session.yaml "
                            f"has no 'seats_px'. Add the seat centres or set members.seat_source=discover.")
    result = build_members(table, session, camera, mcfg, seats)
    first = chunks[0].attrs if chunks else {}
    attrs = {k: first[k] for k in ("fps", "width_px", "height_px", "sample_every_s", "units") if k in first}
    attrs.update(movie=movie, session=session, camera=camera, seats_discovered=result.pop("seats_discovered"),
                 duration_s=max((float(c.attrs["chunk_end_s"]) for c in chunks), default=0.0))
    arrays = {k: v for k, v in table.items() if k != "face_ok"}
    arrays.update(result)
    if len(table.get("face_frame", [])):
        arrays["face_fit_score"] = fit_scores(table["face_frontal"], result["face_member"])
    arrays["chunk_start_s"] = np.array([float(c.attrs["chunk_start_s"]) for c in chunks])
    arrays["chunk_end_s"] = np.array([float(c.attrs["chunk_end_s"]) for c in chunks])
    if not len(table.get("face_frame", [])):
        arrays.update(_empty_faces())
    write_members(tmp_outputs["members"], arrays, attrs)


def _empty_faces() -> dict[str, np.ndarray]:
    return {"face_frame": np.zeros(0, np.int32), "face_time_s": np.zeros(0), "face_box_px": np.zeros((0, 4)),
            "face_score": np.zeros(0), "face_band": np.zeros(0, np.int8), "face_frontal": np.zeros((0, 68, 2)),
            "face_pose_deg": np.zeros((0, 3)), "face_member": np.zeros(0, np.int32),
            "face_fit_score": np.zeros(0, np.float32)}


MEMBERS = Stage(name="members", help="discover seats and assign faces to audience members", version="2",
                sections=("sources", "detect", "landmarks", "frontalize", "members"), plan=plan, compute=compute)

__all__ = ["MEMBERS", "fit_scores", "discover_seats", "assign_faces", "seat_rows_cols", "build_members", "concat_chunks",
           "box_centres_widths", "seats_from_session"]
