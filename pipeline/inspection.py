"""Inspection figures: the paper's synchronicity plot and an overlay strip.

* `synchronicity(tensor)`: per time bin, the distance between the
  instantaneous mean face (mean over the members observed in the bin) and the
  global mean face, and the instantaneous variance (mean squared distance of
  the observed faces to the instantaneous mean), both per landmark, in
  canonical units (squared units for the variance). `plot_synchronicity`
  writes them as one PNG per movie.
* `overlay_strip`: sampled frames of one landmarks chunk with detection boxes
  (green front band, orange back band) and the fitted 68 points, tiled into a
  PNG for eyeballing.

    audience inspect --workspace data        # or scripts/inspect_figures.py
"""
from __future__ import annotations

from pathlib import Path

import numpy as np

from pipeline.store import DataError, Workspace, atomic_path, ensure_dir

MIN_MEMBERS_PER_BIN = 2


def synchronicity(landmarks: np.ndarray, mask: np.ndarray) -> dict[str, np.ndarray]:
    """landmarks (N, T, 136), mask (N, T) → distance (T,), variance (T,), observed (T,) int.

    distance_t = mean over the 68 points of |mean_t,i − mean_i|; variance_t = mean over
    observed members and points of |x_n,t,i − mean_t,i|². NaN where fewer than two members.
    """
    pts = np.asarray(landmarks, np.float64).reshape(*landmarks.shape[:2], 68, 2)
    m = np.asarray(mask, bool)
    observed = m.sum(axis=0)
    if not m.any():
        raise DataError("the tensor has no observed cell; nothing to plot.")
    global_mean = pts[m].mean(axis=0)                                  # (68, 2)
    w = m[..., None, None]
    filled = np.where(w, pts, 0.0)
    with np.errstate(invalid="ignore", divide="ignore"):
        inst_mean = filled.sum(axis=0) / observed[:, None, None]        # (T, 68, 2)
        distance = np.linalg.norm(inst_mean - global_mean, axis=2).mean(axis=1)
        sq = (np.where(w, pts - inst_mean[None], 0.0) ** 2).sum(axis=3).mean(axis=2)   # (N, T)
        variance = sq.sum(axis=0) / observed
    few = observed < MIN_MEMBERS_PER_BIN
    distance[few] = np.nan
    variance[few] = np.nan
    return {"distance": distance, "variance": variance, "observed": observed}


def plot_synchronicity(tensor, out_png: Path) -> Path:
    """One PNG: distance of the instantaneous mean face to the global mean, and the variance."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    stats = synchronicity(tensor.landmarks, tensor.mask)
    t_s = np.arange(tensor.landmarks.shape[1]) * tensor.bin_seconds
    fig, axes = plt.subplots(3, 1, figsize=(10, 6.5), sharex=True)
    axes[0].plot(t_s, stats["distance"], lw=0.9, color="tab:blue")
    axes[0].set_ylabel("|mean_t − mean|\n(canonical units)")
    axes[0].set_title(f"{tensor.movie}: synchronicity of {tensor.landmarks.shape[0]} members")
    axes[1].plot(t_s, stats["variance"], lw=0.9, color="tab:red")
    axes[1].set_ylabel("variance_t\n(units²)")
    axes[2].plot(t_s, stats["observed"], lw=0.9, color="0.3")
    axes[2].set_ylabel("members\nobserved")
    axes[2].set_xlabel("movie time (s)")
    for ax in axes:
        ax.grid(alpha=0.3)
    fig.tight_layout()
    with atomic_path(Path(out_png)) as tmp:
        fig.savefig(tmp, dpi=110, format="png")
    plt.close(fig)
    return Path(out_png)


def _draw(image: np.ndarray, chunk, row: int, scale: float) -> np.ndarray:
    import cv2

    canvas = cv2.cvtColor(cv2.resize(image, None, fx=scale, fy=scale, interpolation=cv2.INTER_AREA),
                          cv2.COLOR_GRAY2BGR)
    for d in np.flatnonzero(chunk["det_frame"] == row):
        l, t, r, b = (chunk["det_box_px"][d] * scale).round().astype(int)
        colour = (0, 200, 0) if chunk["det_band"][d] == 0 else (0, 140, 255)
        cv2.rectangle(canvas, (l, t), (r, b), colour, 1)
        pts = chunk["landmarks_px"][d]
        if np.isfinite(pts).all():
            for x, y in (pts * scale).round().astype(int):
                cv2.circle(canvas, (int(x), int(y)), 1, (255, 80, 0), -1)
    return canvas


def overlay_strip(landmarks_chunk: Path, video: Path, out_png: Path, n_frames: int = 4,
                  width_px: int = 900, zoom_faces: int = 6) -> Path:
    """PNG: `n_frames` frames of one chunk with boxes and landmarks, plus close-ups of faces."""
    import cv2

    from pipeline.sources import iter_frames
    from pipeline.store import read_landmarks_chunk

    chunk = read_landmarks_chunk(landmarks_chunk)
    rows = np.unique(chunk["det_frame"])
    if not len(rows):
        raise DataError(f"{landmarks_chunk}: no detections to draw.")
    pick = set(rows[np.linspace(0, len(rows) - 1, min(n_frames, len(rows))).round().astype(int)].tolist())
    wanted = {int(chunk["frame_index"][r]): r for r in pick}
    a = chunk.attrs
    tiles, zooms = [], []
    for frame in iter_frames(video, float(a["chunk_start_s"]), float(a["chunk_end_s"]),
                             float(a["sample_every_s"]) or None):
        row = wanted.pop(frame.index, None)
        if row is None or frame.image is None:
            continue
        tiles.append(_draw(frame.image, chunk, row, width_px / frame.image.shape[1]))
        if len(zooms) < zoom_faces:
            zooms.extend(_zooms(frame.image, chunk, row, zoom_faces - len(zooms)))
        if not wanted:
            break
    if not tiles:
        raise DataError(f"{video}: none of the frames of {landmarks_chunk} could be decoded.")
    strip = np.concatenate(tiles, axis=0)
    if zooms:
        side = strip.shape[1] // len(zooms)
        row_img = np.concatenate([cv2.resize(z, (side, side), interpolation=cv2.INTER_NEAREST) for z in zooms], 1)
        pad = np.zeros((side, strip.shape[1] - row_img.shape[1], 3), np.uint8)
        strip = np.concatenate([strip, np.concatenate([row_img, pad], 1)], axis=0)
    ensure_dir(Path(out_png).parent)
    with atomic_path(Path(out_png)) as tmp:
        cv2.imwrite(str(tmp), strip)
    return Path(out_png)


def _zooms(image: np.ndarray, chunk, row: int, count: int) -> list[np.ndarray]:
    """Close-ups (8× nearest) of up to `count` faces of one frame, smallest first, with points."""
    import cv2

    out = []
    dets = np.flatnonzero((chunk["det_frame"] == row) & chunk["fit_ok"])
    widths = chunk["det_box_px"][dets, 2] - chunk["det_box_px"][dets, 0]
    for d in dets[np.argsort(widths)][:count]:
        l, t, r, b = chunk["det_box_px"][d]
        m = 0.3 * (r - l)
        x0, y0 = int(max(0, l - m)), int(max(0, t - m))
        x1, y1 = int(min(image.shape[1], r + m)), int(min(image.shape[0], b + m))
        scale = 8
        crop = cv2.cvtColor(cv2.resize(image[y0:y1, x0:x1], None, fx=scale, fy=scale,
                                       interpolation=cv2.INTER_NEAREST), cv2.COLOR_GRAY2BGR)
        for x, y in chunk["landmarks_px"][d]:
            cv2.circle(crop, (int((x - x0 + 0.5) * scale), int((y - y0 + 0.5) * scale)), 2, (255, 80, 0), -1)
        out.append(crop)
    return out


def inspect_workspace(workspace: Workspace, movie: str | None = None, strips_per_camera: int = 1) -> list[Path]:
    """Synchronicity PNG per tensor and an overlay strip per (session, camera): paths written,
    under <root>/figures/."""
    from pipeline.store import read_movie_tensor

    written = []
    figures = workspace.root / "figures"
    for path in sorted(workspace.tensors.glob(f"{movie or '*'}.h5")) if workspace.tensors.is_dir() else []:
        written.append(plot_synchronicity(read_movie_tensor(path), figures / f"{path.stem}_synchronicity.png"))
    lm_root = workspace.cache / "landmarks"
    for cam_dir in sorted(lm_root.glob(f"{movie or '*'}/*/*")) if lm_root.is_dir() else []:
        m, s, c = cam_dir.parts[-3:]
        videos = [p for p in (workspace.session_dir(m, s)).glob(f"{c}.*") if p.suffix.lower() in
                  (".mp4", ".avi", ".mkv", ".mov", ".m4v")]
        chunks = sorted(p for p in cam_dir.glob("*.h5") if not p.name.startswith("."))
        if videos and chunks:
            for chunk in chunks[:strips_per_camera]:
                out = figures / f"{m}_{s}_{c}_{chunk.stem}_overlay.png"
                written.append(overlay_strip(chunk, videos[0], out))
    return written


__all__ = ["synchronicity", "plot_synchronicity", "overlay_strip", "inspect_workspace"]


def register(subparsers) -> None:
    """`audience inspect`: synchronicity PNG per movie and overlay strips per camera."""
    parser = subparsers.add_parser("inspect", help="synchronicity figure per movie and overlay strips "
                                                   "of detections and landmarks")
    parser.add_argument("--strips", type=int, default=1, metavar="N", help="overlay strips per camera")
    parser.set_defaults(handler=_cmd_inspect)


def _cmd_inspect(args, cfg) -> int:
    paths = inspect_workspace(Workspace(Path(cfg.workspace.root)), args.movie, args.strips)
    for path in paths:
        print(path)
    return 0
