"""Stage 'bin': members × time bins → the per-movie tensor data/tensors/<movie>.h5.

Movie time = recording time + the session's `offset_s` (session.yaml, written
from the screening list). Bin k covers movie time [k·b, (k+1)·b) with
b = `binning.bin_seconds`; the frontal faces of one member inside a bin are
combined by `binning.combine` (mean or median). T = ceil(movie length / b),
where the movie length is the latest session end (offset_s + recording
duration). Members of every session and camera are stacked (N = their sum),
in (session, camera, seat) order. Missing cells hold NaN and mask False.

Extra datasets in the tensor file (beyond the data contract):
  camera_id (N,) str, seat_xy_px (N, 2) float32, seat_row (N,) int16,
  seat_col (N,) int16, faces_per_bin (N, T) int16 (frontal faces combined),
  recorded (N, T) bool (the member's recording covered the bin with at least
  one good frame: mask False & recorded True = face not seen, recorded False =
  outside the recording or a gap), session_offset_s (N,) float32.
Faces before the movie start (negative movie time) are dropped.
"""
from __future__ import annotations

import math
from collections import defaultdict
from pathlib import Path

import numpy as np

from pipeline.runner import Stage, Unit
from pipeline.store import DataError, MovieTensor, Workspace


def bin_index(movie_time_s: np.ndarray, bin_seconds: float) -> np.ndarray:
    """Movie times (…) → bin indices (…) int64 (floor, with a tolerance for float round-off)."""
    return np.floor(np.asarray(movie_time_s, np.float64) / bin_seconds + 1e-9).astype(np.int64)


def n_bins(length_s: float, bin_seconds: float) -> int:
    return max(1, math.ceil(length_s / bin_seconds - 1e-9))


def combine_faces(frontal: np.ndarray, member: np.ndarray, bins: np.ndarray, n_members: int, t_bins: int,
                  how: str = "mean") -> tuple[np.ndarray, np.ndarray]:
    """Faces (D, 68, 2) with member (D,) and bin (D,) → landmarks (n, T, 136) (NaN = none), counts (n, T)."""
    out = np.full((n_members, t_bins, 136), np.nan, np.float32)
    counts = np.zeros((n_members, t_bins), np.int16)
    flat = np.asarray(frontal, np.float64).reshape(len(frontal), 136)
    keep = (member >= 0) & (bins >= 0) & (bins < t_bins) & np.isfinite(flat).all(axis=1)
    flat, cell = flat[keep], member[keep].astype(np.int64) * t_bins + bins[keep]
    if not len(cell):
        return out, counts
    order = np.argsort(cell, kind="stable")
    flat, cell = flat[order], cell[order]
    starts = np.flatnonzero(np.r_[True, cell[1:] != cell[:-1]])
    sizes = np.diff(np.r_[starts, len(cell)])
    if how == "median":
        values = np.stack([np.median(flat[s:s + n], axis=0) for s, n in zip(starts, sizes)])
    else:
        values = np.add.reduceat(flat, starts, axis=0) / sizes[:, None]
    cells = cell[starts]
    out.reshape(-1, 136)[cells] = values
    counts.reshape(-1)[cells] = np.minimum(sizes, np.iinfo(np.int16).max)
    return out, counts


def recorded_bins(frame_time_s: np.ndarray, frame_ok: np.ndarray, offset_s: float, bin_seconds: float,
                  t_bins: int) -> np.ndarray:
    """(T,) bool: bins holding at least one good sampled frame of this recording."""
    bins = bin_index(np.asarray(frame_time_s)[np.asarray(frame_ok, bool)] + offset_s, bin_seconds)
    covered = np.zeros(t_bins, bool)
    covered[bins[(bins >= 0) & (bins < t_bins)]] = True
    return covered


def bin_movie(members_files: list, offsets_s: dict[str, float], movie: str, cfg) -> MovieTensor:
    """Members files (store.FaceArrays, one per session/camera) → MovieTensor. cfg: BinningConfig."""
    b = cfg.bin_seconds
    ends = [offsets_s[m.attrs["session"]] + float(m.attrs["duration_s"]) for m in members_files]
    t_bins = n_bins(max(ends, default=0.0), b)
    parts = defaultdict(list)
    dropped = 0
    for m in members_files:
        session, offset = m.attrs["session"], offsets_s[m.attrs["session"]]
        n = len(m["member_id"])
        bins = bin_index(m["face_time_s"] + offset, b)
        member = np.asarray(m["face_member"]).copy()
        if cfg.max_fit_score:
            misfit = np.asarray(m["face_fit_score"]) > cfg.max_fit_score        # NaN compares False
            dropped += int((misfit & (member >= 0)).sum())
            member[misfit] = -1
        lm, counts = combine_faces(m["face_frontal"], member, bins, n, t_bins, cfg.combine)
        covered = recorded_bins(m["frame_time_s"], m["frame_ok"], offset, b, t_bins)
        parts["landmarks"].append(lm)
        parts["faces_per_bin"].append(counts)
        parts["recorded"].append(np.repeat(covered[None], n, axis=0))
        parts["member_id"].append(m["member_id"])
        parts["session_id"].append(np.full(n, session, dtype=object))
        parts["camera_id"].append(np.full(n, m.attrs["camera"], dtype=object))
        parts["session_offset_s"].append(np.full(n, offset, np.float32))
        for name in ("seat_xy_px", "seat_row", "seat_col"):
            parts[name].append(m[name])
    if not parts["member_id"] or sum(len(x) for x in parts["member_id"]) == 0:
        raise DataError(f"movie {movie}: no audience member was observed long enough in any session "
                        f"({len(members_files)} recording(s)). Check the recordings contain faces, or lower "
                        f"members.min_observed_fraction.")
    stacked = {k: np.concatenate(v) for k, v in parts.items()}
    landmarks = stacked.pop("landmarks")
    mask = np.isfinite(landmarks).all(axis=2)
    extra = {k: stacked[k] for k in ("camera_id", "seat_xy_px", "seat_row", "seat_col", "faces_per_bin",
                                     "recorded", "session_offset_s")}
    from pipeline.frontalize import UNITS

    return MovieTensor(landmarks=landmarks, mask=mask, member_id=stacked["member_id"],
                       session_id=stacked["session_id"], movie=movie, bin_seconds=b, units=UNITS,
                       extra=extra, attrs={"combine": cfg.combine, "movie_length_s": max(ends),
                                           "misfits_dropped": dropped})


# ----------------------------------------------------------------------------- stage


def plan(cfg, workspace: Workspace) -> list[Unit]:
    """One unit per movie: inputs = every members file of it + the session.yaml files that exist."""
    from pipeline.members import MEMBERS

    movies: dict[str, list] = defaultdict(list)
    for unit in MEMBERS.plan(cfg, workspace):
        movies[unit.key[0]].append(unit)
    units = []
    for movie, members in sorted(movies.items()):
        sessions = sorted({u.key[1] for u in members})
        metas = [workspace.session_dir(movie, s) / "session.yaml" for s in sessions]
        inputs = tuple(Path(u.outputs[0][1]) for u in members) + tuple(p for p in metas if p.is_file())
        units.append(Unit(stage="bin", key=(movie,), inputs=inputs,
                          outputs=(("tensor", workspace.tensor_path(movie)),),
                          payload=(("members", tuple(str(u.outputs[0][1]) for u in members)),
                                   ("sessions", tuple(sessions)), ("root", str(workspace.root)))))
    return units


def compute(unit: Unit, cfg, tmp_outputs: dict[str, Path]) -> None:
    """The movie's tensor from its members files. When some recordings' units failed, the runner hands
    a unit without their members files (`left_out`): the tensor is built from the others and says so
    in its attr `partial_left_out` (movie/session/camera of each recording left out)."""
    from pipeline.screenings import session_offset_s
    from pipeline.store import read_members, write_movie_tensor

    movie = unit.key[0]
    workspace = Workspace(Path(unit.get("root")))
    inputs = {str(p) for p in unit.inputs}
    members = [p for p in unit.get("members") if str(p) in inputs]
    files = [read_members(Path(p)) for p in members]
    offsets = {s: session_offset_s(workspace, movie, s) for s in sorted({f.attrs["session"] for f in files})}
    tensor = bin_movie(files, offsets, movie, cfg.binning)
    left_out = [name.split(" ", 1)[-1] for name in unit.get("left_out", ())]
    if left_out:
        import h5py

        tensor.attrs["partial_left_out"] = np.array(left_out, dtype=h5py.string_dtype("utf-8"))
    write_movie_tensor(tmp_outputs["tensor"], tensor)


BIN = Stage(name="bin", help="bin members × seconds into data/tensors/<movie>.h5", version="1",
            sections=("sources", "detect", "landmarks", "frontalize", "members", "binning"),
            plan=plan, compute=compute)

__all__ = ["BIN", "bin_movie", "combine_faces", "bin_index", "n_bins", "recorded_bins"]
