"""The known truth behind a tensor built from synthetic screenings, on the tensor's own rows and bins.

A tensor `<workspace>/tensors/<movie>.h5` made by the pipeline from screenings
that `synthesize` wrote carries each member's session, camera and seat centre;
the truth files `<workspace>/raw/<movie>/<session>/<camera>.truth.h5` carry the
movie's true time courses V (on the movie clock, one row per movie second), the
peaks of its reaction moments and each true viewer's group and face boxes. A
member is matched to the true viewer whose typical face-box centre is nearest
(within half a face width); unmatched members get group −1.

Nothing here is used to build the tensor or the models: only to score what
they recovered (the demo's report, `bench/bench_reactions.py`).
"""
from __future__ import annotations

from pathlib import Path

import numpy as np

from pipeline.store import read_movie_tensor, read_synthetic_truth


def truth_for_tensor(tensor_path: str | Path) -> dict | None:
    """{'v' (T, K), 'v_names', 'moments_s', 'group' (N,)} for the tensor's bins and rows, or None when
    the tensor does not come from synthetic screenings of its workspace (no truth files)."""
    tensor_path = Path(tensor_path)
    tensor = read_movie_tensor(tensor_path)
    if "seat_xy_px" not in tensor.extra or "camera_id" not in tensor.extra:
        return None
    raw = tensor_path.parent.parent / "raw" / tensor.movie
    sessions = np.asarray(tensor.session_id).astype(str)
    cameras = np.asarray(tensor.extra["camera_id"]).astype(str)
    seats = np.asarray(tensor.extra["seat_xy_px"], float)
    group = np.full(len(sessions), -1)
    v = names = moments = None
    for session, camera in sorted(set(zip(sessions, cameras))):
        path = raw / session / f"{camera}.truth.h5"
        if not path.is_file():
            return None
        arrays, attrs = read_synthetic_truth(path, ("V_movie", "V_movie_time_s", "funny_moments_s",
                                                     "group", "face_box", "visible"))
        if v is None:
            v, names, moments = _on_bins(arrays, tensor.landmarks.shape[1], tensor.bin_seconds), \
                str(attrs["factor_names"]).split(","), np.asarray(arrays["funny_moments_s"], float)
        rows = np.flatnonzero((sessions == session) & (cameras == camera))
        boxes = np.where(np.asarray(arrays["visible"], bool)[..., None], np.asarray(arrays["face_box"], float), np.nan)
        width = np.nanmedian(boxes[..., 2] - boxes[..., 0], axis=0)            # (V,) per viewer
        centre = np.nanmedian((boxes[..., :2] + boxes[..., 2:]) / 2, axis=0)    # (V, 2) typical face centre
        dist = np.linalg.norm(seats[rows, None] - centre[None], axis=2)
        dist[:, ~np.isfinite(dist).all(0)] = np.inf
        nearest = dist.argmin(1)
        close = dist[np.arange(len(rows)), nearest] < 0.5 * np.nan_to_num(width[nearest], nan=np.inf)
        group[rows[close]] = np.asarray(arrays["group"])[nearest[close]]
    return {"v": v, "v_names": names, "moments_s": moments, "group": group}


def _on_bins(arrays: dict, n_bins: int, bin_seconds: float) -> np.ndarray:
    """True V averaged over each tensor bin [b·s, (b+1)·s) of the movie clock (linear between seconds)."""
    knots = np.asarray(arrays["V_movie_time_s"], float)
    v = np.asarray(arrays["V_movie"], float)
    steps = 8
    out = np.zeros((n_bins, v.shape[1]))
    for j in range(steps):
        t = (np.arange(n_bins) + (j + 0.5) / steps) * bin_seconds
        out += np.stack([np.interp(t, knots, v[:, k]) for k in range(v.shape[1])], 1)
    return out / steps
