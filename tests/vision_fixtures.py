"""Generated face tables for the members / binning / inspect tests (no video, no dlib)."""
import numpy as np

from pipeline.frontalize import canonical_mean_face


def seat_grid(rows=3, cols=5, pitch_px=60.0, top_px=100.0, left_px=80.0) -> np.ndarray:
    """(S, 2) seat centres px, row by row from the top."""
    ys, xs = np.meshgrid(top_px + pitch_px * np.arange(rows), left_px + pitch_px * np.arange(cols), indexing="ij")
    return np.stack([xs.ravel(), ys.ravel()], 1)


def face_table(seats: np.ndarray, n_frames=80, every_s=0.5, face_px=20.0, present=0.9, jitter_px=2.0,
               false_per_frame=0.3, seed=0) -> tuple[dict, np.ndarray]:
    """A members-stage face table (as concat_chunks makes it) and the true seat of each face (-1 = false)."""
    rng = np.random.default_rng(seed)
    model = canonical_mean_face()[:, :2]
    rows = {k: [] for k in ("face_frame", "face_time_s", "face_box_px", "face_score", "face_band", "face_frontal",
                            "face_pose_deg", "face_ok")}
    truth = []
    for f in range(n_frames):
        here = np.flatnonzero(rng.random(len(seats)) < present)
        n_false = rng.poisson(false_per_frame)
        centres = np.concatenate([seats[here] + rng.normal(0, jitter_px, (len(here), 2)),
                                  rng.uniform(0, 500, (n_false, 2))])
        truth.extend(list(here) + [-1] * n_false)
        for c in centres:
            rows["face_frame"].append(f)
            rows["face_time_s"].append(f * every_s)
            rows["face_box_px"].append([c[0] - face_px / 2, c[1] - face_px / 2, c[0] + face_px / 2, c[1] + face_px / 2])
            rows["face_score"].append(1.0)
            rows["face_band"].append(0)
            rows["face_frontal"].append(model + rng.normal(0, 0.01, model.shape))
            rows["face_pose_deg"].append([0, 0, 0])
            rows["face_ok"].append(True)
    table = {k: np.asarray(v) for k, v in rows.items()}
    table["face_ok"] = table["face_ok"].astype(bool)
    table["frame_time_s"] = np.arange(n_frames) * every_s
    table["frame_ok"] = np.ones(n_frames, bool)
    return table, np.asarray(truth)
