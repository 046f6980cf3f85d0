"""The `synthesize` stage: one unit per (movie, session, camera).

Writes data/raw/<movie>/<session>/<camera>.mp4, <camera>.truth.h5 and (camera
0 only, the single writer) session.yaml. Every random choice comes from a
generator seeded by (seed, movie, session, camera, purpose), so a unit's
output never depends on which other units ran, or in which order.
"""
from __future__ import annotations

from dataclasses import dataclass
from importlib import resources
from pathlib import Path

import numpy as np
import yaml
from tqdm import tqdm

from pipeline.runner import Stage, Unit
from pipeline.store import Workspace, write_synthetic_truth
from pipeline.synthetic.animation import (ABSENCE_CODES, FACTOR_NAMES, Animation, Audience, MovieFactors, animate,
                                          draw_audience, movie_factors, rng_for)
from pipeline.synthetic.config import SyntheticConfig
from pipeline.synthetic.layout import Layout, make_layout

VIDEO_SUFFIX = ".mp4"
TRUTH_SUFFIX = ".truth.h5"
SESSION_FILE = "session.yaml"
BACK_ROWS = 3            # the "back rows" band that gets its own detector downstream


def session_names(cfg: SyntheticConfig) -> list[str]:
    return [f"s{i + 1:02d}" for i in range(cfg.sessions)]


def camera_names(cfg: SyntheticConfig) -> list[str]:
    return [f"cam{c}" for c in range(cfg.cameras)]


def n_frames(cfg: SyntheticConfig) -> int:
    return int(round(cfg.duration_s * cfg.fps))


def session_offset_s(cfg: SyntheticConfig, session: str) -> float:
    """When this session's recording starts, in movie seconds (shared by its cameras)."""
    return round(float(rng_for(cfg, cfg.movie, session, "offset").uniform(0, cfg.max_offset_s)), 3)


@dataclass(frozen=True)
class Simulation:
    """The pixel-free part of one (session, camera): who sits where and what they do."""
    layout: Layout
    factors: MovieFactors
    audience: Audience
    anim: Animation
    offset_s: float


def simulate(cfg: SyntheticConfig, session: str, camera: str, frames: int | None = None) -> Simulation:
    """Run the animation model for one (session, camera); cheap enough for long test runs."""
    from pipeline.synthetic.faces import source_faces

    layout = make_layout(cfg.geometry)
    factors = movie_factors(cfg)
    audience = draw_audience(cfg, layout, factors, source_faces().neutral,
                             rng_for(cfg, cfg.movie, session, camera, "audience"))
    offset = session_offset_s(cfg, session)
    anim = animate(cfg, layout, audience, factors, offset, n_frames(cfg) if frames is None else frames,
                   rng_for(cfg, cfg.movie, session, camera, "animation"))
    return Simulation(layout, factors, audience, anim, offset)


def write_video(cfg: SyntheticConfig, sim: Simulation, session: str, camera: str, path: Path,
                progress: bool = False) -> None:
    """Render every frame of `sim` into a grey video at `path`."""
    from pipeline.synthetic.render import build_scene, open_writer, render_frame

    scene = build_scene(sim.layout, sim.audience, cfg.noise_std, rng_for(cfg, cfg.movie, session, camera, "scene"))
    frame_rng = rng_for(cfg, cfg.movie, session, camera, "frames")
    writer = open_writer(path, cfg.codec, cfg.fps, sim.layout.width_px, sim.layout.height_px)
    try:
        for f in tqdm(range(len(sim.anim.time_s)), desc=f"{session}/{camera}", unit="frame",
                      disable=not progress, leave=False):
            writer.write(render_frame(scene, sim.anim, f, frame_rng))
    finally:
        writer.release()
    _check_written(path, len(sim.anim.time_s))


def _check_written(path: Path, n_frames: int) -> None:
    """OpenCV's writer drops what it cannot write without a word (a full disk): read the video back."""
    import errno

    from pipeline.sources import probe_video
    from pipeline.store import DataError, LOW_SPACE_BYTES, free_bytes

    try:
        count = probe_video(path).frame_count
    except DataError:
        count = 0
    if count != n_frames:
        if free_bytes(path) < LOW_SPACE_BYTES:
            raise OSError(errno.ENOSPC, "No space left on device", str(path))
        raise RuntimeError(f"the video writer wrote {count} of {n_frames} frames into {path}")


def truth_arrays(cfg: SyntheticConfig, sim: Simulation, session: str, camera: str) -> tuple[dict, dict]:
    """The datasets and attributes of <camera>.truth.h5 (schema in data/README.md)."""
    lay, aud, anim = sim.layout, sim.audience, sim.anim
    from pipeline.synthetic.faces import source_faces

    names = source_faces().names
    viewer_id = [f"{session}/{camera}/r{lay.row[s]}c{lay.col[s]}" for s in aud.seat]
    arrays = {
        "time_s": anim.time_s, "movie_time_s": anim.time_s + sim.offset_s,
        "viewer_id": np.array(viewer_id, dtype=object), "seat_id": aud.seat.astype(np.int32),
        "seat_row": lay.row[aud.seat].astype(np.int16), "seat_col": lay.col[aud.seat].astype(np.int16),
        "seat_centre_px": lay.centre_px[aud.seat].astype(np.float32), "group": aud.group.astype(np.int16),
        "source_face": np.array([names[s] + (" (mirrored)" if m else "") for s, m in zip(aud.source, aud.mirrored)],
                                dtype=object),
        "U": aud.U, "V_movie": sim.factors.V, "V_movie_time_s": np.arange(len(sim.factors.V), dtype=np.float64),
        "funny_moments_s": sim.factors.moments_s,
        "face_box": anim.box, "landmarks_image": anim.image, "landmarks_frontal": anim.frontal.astype(np.float32),
        "pose_deg": anim.pose_deg.astype(np.float32), "visible": anim.state == 0, "absence": anim.state,
        "expression": anim.expression, "blink": anim.blink,
    }
    attrs = {
        "movie": cfg.movie, "session": session, "camera": camera, "fps": float(cfg.fps),
        "offset_s": sim.offset_s, "width_px": lay.width_px, "height_px": lay.height_px,
        "k_true": cfg.k_true, "factor_names": ",".join(FACTOR_NAMES[:cfg.k_true]),
        "absence_codes": ",".join(f"{k}={v}" for k, v in ABSENCE_CODES.items()),
        "bin_seconds": 1.0,
        "bin_definition": "V_movie[b] is V at movie time b s; frames use V linearly interpolated at "
                          "movie_time_s = time_s + offset_s; a 1 s bin b covers movie time [b, b+1).",
        "landmarks_frontal_frame": "mean-face units (pipeline/assets/mean_face_68.npy): x right, y down, "
                                   "origin at the mean-face centre, jaw span 1.254; NaN while the viewer has left",
        "landmarks_image_frame": "image pixels, x right, y down, pixel centres at integers (the top-left "
                                 "pixel's centre is (0, 0), as in dlib and OpenCV); NaN unless visible",
        "pose_convention": "yaw, pitch, roll degrees; R = Rz(roll) Rx(pitch) Ry(yaw); yaw>0 nose to image +x, "
                           "pitch>0 nose up, roll>0 clockwise",
    }
    return arrays, attrs


def session_yaml(cfg: SyntheticConfig, layout: Layout, session: str, offset_s: float) -> str:
    """session.yaml: what a reader needs to use the recording without the truth."""
    back = np.arange(max(layout.row_y_px.size - BACK_ROWS, 0), layout.row_y_px.size)
    front = np.arange(0, max(layout.row_y_px.size - BACK_ROWS, 1))
    rows = [{"row": int(r), "y_px": round(float(layout.row_y_px[r]), 1),
             "face_w_px": round(float(layout.row_face_px[r, 0]), 1),
             "face_h_px": round(float(layout.row_face_px[r, 1]), 1),
             "seats_x_px": [round(float(x), 1) for x in layout.centre_px[layout.row == r, 0]]}
            for r in range(layout.row_y_px.size)]
    doc = {
        "movie": cfg.movie, "session": session, "synthetic": True, "offset_s": offset_s,
        "fps": float(cfg.fps), "duration_s": float(cfg.duration_s), "n_frames": n_frames(cfg),
        "width_px": layout.width_px, "height_px": layout.height_px,
        "cameras": camera_names(cfg),
        "videos": {c: c + VIDEO_SUFFIX for c in camera_names(cfg)},
        "truth": {c: c + TRUTH_SUFFIX for c in camera_names(cfg)},
        "back_rows_band_px": [round(v, 1) for v in layout.row_band_px(back)],
        "front_rows_band_px": [round(v, 1) for v in layout.row_band_px(front)],
        "rows": rows,
    }
    return yaml.safe_dump(doc, sort_keys=False)


# ----------------------------------------------------------------------------- runner stage


def _assets() -> tuple[Path, ...]:
    base = resources.files("pipeline") / "assets"
    return tuple(Path(str(base / name)) for name in ("source_faces.npz", "mean_face_68.npy"))


def plan_synthesis(cfg, workspace: Workspace) -> list[Unit]:
    """One unit per (movie, session, camera); camera 0 also owns session.yaml."""
    syn: SyntheticConfig = cfg.synthetic
    units = []
    for session in session_names(syn):
        folder = workspace.session_dir(syn.movie, session)
        for c, camera in enumerate(camera_names(syn)):
            outputs = [("video", folder / f"{camera}{VIDEO_SUFFIX}"), ("truth", folder / f"{camera}{TRUTH_SUFFIX}")]
            if c == 0:
                outputs.append(("session", folder / SESSION_FILE))
            units.append(Unit(stage="synthesize", key=(syn.movie, session, camera), inputs=_assets(),
                              outputs=tuple(outputs)))
    return units


def compute_session_camera(unit: Unit, cfg, tmp_outputs: dict[str, Path]) -> None:
    """Simulate, write the truth, render the video (and session.yaml for camera 0)."""
    syn: SyntheticConfig = cfg.synthetic
    _, session, camera = unit.key
    sim = simulate(syn, session, camera)
    arrays, attrs = truth_arrays(syn, sim, session, camera)
    write_synthetic_truth(tmp_outputs["truth"], arrays, attrs, atomic=False)
    write_video(syn, sim, session, camera, tmp_outputs["video"])
    if "session" in tmp_outputs:
        Path(tmp_outputs["session"]).write_text(session_yaml(syn, sim.layout, session, sim.offset_s))


SYNTHESIZE = Stage(
    name="synthesize",
    help="generate synthetic IR screenings (video + ground truth) under raw/<movie>/<session>/",
    version="1",
    sections=("synthetic",),
    plan=plan_synthesis,
    compute=compute_session_camera,
)
