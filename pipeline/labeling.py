"""`audience label-frames`: frames of a recording + the current detections, as imglab XML to correct.

The paper's workflow for a new theatre: label some frames of your own
footage, train your detectors on them, detect with them.

1. ``audience label-frames --video rec.mp4 --out-dir labels/`` samples
   ``--frames`` frames spread over the recording, runs the detectors in use
   (``detect.*``: the shipped ones unless you set your own) the way the detect
   stage runs them, and writes each full frame as PNG plus ``labels.xml``
   (dlib imglab format) with the detections as pre-labels.
2. Correct them in dlib's ``imglab labels.xml`` (dlib/tools/imglab): shift +
   left-drag draws a box around a missed face; double-click selects a box,
   Delete removes a false one; ``i`` marks a selected box ignore (a face half
   hidden or cut by the frame's edge: neither taught as a face nor as
   background); ctrl + wheel zooms. Every visible face must have a box: an
   unboxed face is taught as background. Draw boxes square, brows to chin,
   about 1.1 face widths wide (the shipped detectors' convention). Save.
3. ``audience train-detector --train-xml labels/labels.xml --out-dir detectors/``
   (label frames of another session the same way for ``--test-xml``).
4. ``audience detect detect.front_detector=detectors/detector_front.svm
   detect.back_detector=detectors/detector_back.svm``.
"""
from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np

from pipeline.store import DataError, ensure_dir

LABEL_HELP = __doc__.split("\n\n", 1)[1]


def sample_times_s(duration_s: float, n_frames: int, start_s: float = 0.0, end_s: float | None = None) -> np.ndarray:
    """n_frames instants spread evenly over [start_s, end_s), each in the middle of its share."""
    end_s = duration_s if end_s is None else min(end_s, duration_s)
    if n_frames < 1:
        raise DataError(f"--frames {n_frames}: ask for at least one frame.")
    if end_s <= start_s:
        raise DataError(f"nothing to sample: [{start_s}, {end_s}) s is empty (recording {duration_s:.1f} s long). "
                        f"Check --start-s/--end-s.")
    step = (end_s - start_s) / n_frames
    return start_s + step * (np.arange(n_frames) + 0.5)


def _frame_at(video: Path, time_s: float, info):
    """The first decodable frame at or after time_s (within two frame periods), or None."""
    from pipeline.sources import iter_frames

    for frame in iter_frames(video, time_s, time_s + 2.0 / info.fps, None, info=info):
        if frame.image is not None:
            return frame
    return None


def label_frames(video: str | Path, out_dir: str | Path, cfg, n_frames: int = 30, session_meta: dict | None = None,
                 start_s: float = 0.0, end_s: float | None = None, progress: bool = True) -> Path:
    """Write n_frames full frames of `video` as PNG and out_dir/labels.xml with the detections as boxes.

    The detectors run exactly as in the detect stage (`make_finder`: bands or
    session.yaml rows, strips scaled to detect.target_face_px). Returns the XML path.
    """
    import cv2
    from tqdm import tqdm

    from pipeline.detect import make_finder
    from pipeline.imglab import Box, Dataset, ImageEntry, write_dataset
    from pipeline.sources import probe_video

    video = Path(video)
    if not video.is_file():
        raise DataError(f"video not found: {video}. Pass --video FILE, or --movie/--session/--camera of a "
                        f"recording registered in the workspace.")
    info = probe_video(video)
    out_dir = ensure_dir(Path(out_dir))
    finder = make_finder(cfg, info.height_px, session_meta, width_px=info.width_px)
    entries, n_boxes = [], 0
    for time_s in tqdm(sample_times_s(info.duration_s, n_frames, start_s, end_s), desc="label frames",
                       disable=not progress, leave=False):
        frame = _frame_at(video, float(time_s), info)
        if frame is None:
            continue
        boxes, scores, band = finder(frame.image, None)       # None: a full scan of both bands every frame
        name = f"{video.stem}_f{frame.index:06d}.png"
        cv2.imwrite(str(out_dir / name), frame.image)
        labelled = []
        for l, t, r, b in np.asarray(boxes, float):
            left, top = int(round(l)), int(round(t))
            labelled.append(Box(left, top, int(round(r)) - left, int(round(b)) - top))
        n_boxes += len(labelled)
        entries.append(ImageEntry(name, labelled, frame.image.shape[1], frame.image.shape[0]))
    if not entries:
        raise DataError(f"{video}: no frame could be decoded at the sampled times. Re-encode the recording "
                        f"(ffmpeg -i IN -c:v libx264 OUT.mp4) and retry.")
    comment = (f"{len(entries)} frames of {video} ({info.width_px}x{info.height_px}, {info.duration_s:.1f} s); "
               f"boxes: detections of front {finder.front_name} and back {finder.back_name} at detect.threshold "
               f"{cfg.detect.threshold}, pre-labels to correct in dlib's imglab")
    path = write_dataset(out_dir / "labels.xml", Dataset(entries, name=f"{video.stem} frames to label",
                                                         comment=comment))
    print(f"wrote {path}: {len(entries)} frames, {n_boxes} pre-labelled faces")
    print(f"next: correct them with dlib's `imglab {path}` (shift+drag: add a box; double-click + Delete: remove; "
          f"i: ignore), then `audience train-detector --train-xml {path} --out-dir DETECTORS`")
    return path


def video_of(cfg, movie: str | None, session: str | None, camera: str | None) -> Path:
    """The registered recording raw/<movie>/<session>/<camera>.<ext> of the workspace."""
    from pipeline.detect import find_videos
    from pipeline.store import Workspace

    workspace = Workspace(Path(cfg.workspace.root))
    found = [(m, s, c, p) for m, s, c, p in find_videos(workspace)
             if (movie is None or m == movie) and (session is None or s == session)
             and (camera is None or c == camera)]
    if len(found) != 1:
        listed = ", ".join(f"{m}/{s}/{c}" for m, s, c, _ in find_videos(workspace)[:8]) or "none"
        what = "no" if not found else f"{len(found)}"
        raise DataError(f"{what} recordings under {workspace.raw} match movie={movie} session={session} "
                        f"camera={camera} (registered: {listed}). Name one recording with --movie/--session/"
                        f"--camera, or pass --video FILE.")
    return found[0][3]


def _add_options(parser: argparse.ArgumentParser, with_movie: bool) -> argparse.ArgumentParser:
    parser.add_argument("--video", help="the recording (else --movie/--session/--camera of the workspace)")
    if with_movie:
        parser.add_argument("--movie", help="workspace movie (with --session, --camera)")
    parser.add_argument("--session", help="workspace session of --movie")
    parser.add_argument("--camera", help="workspace camera of --session")
    parser.add_argument("--out-dir", required=True, help="folder for the frame PNGs and labels.xml")
    parser.add_argument("--frames", type=int, default=30, help="frames spread over the recording "
                                                               "(default %(default)s)")
    parser.add_argument("--start-s", type=float, default=0.0, help="sample from this recording time (s)")
    parser.add_argument("--end-s", type=float, default=None, help="sample up to this recording time (s)")
    return parser


def label_frames_main(args: argparse.Namespace, cfg) -> int:
    from pipeline.detect import read_session_meta

    if args.video:
        video = Path(args.video)
    else:
        if not args.movie:
            raise DataError("label-frames needs --video FILE, or --movie (with --session/--camera when the movie "
                            "has several recordings) of the workspace.")
        video = video_of(cfg, args.movie, args.session, args.camera)
    label_frames(video, args.out_dir, cfg, args.frames, read_session_meta(video.parent), args.start_s, args.end_s,
                 progress=not getattr(args, "quiet", False))
    return 0


def add_label_frames_args(parser: argparse.ArgumentParser) -> argparse.ArgumentParser:
    """scripts/label_frames.py: its own --movie and config options."""
    _add_options(parser, with_movie=True)
    parser.add_argument("--config", action="append", default=[], help="config overlay YAML (repeatable)")
    parser.add_argument("--set", action="append", default=[], metavar="SECTION.KEY=VALUE",
                        help="config override (repeatable)")
    return parser


def register(subparsers) -> None:
    """Add `label-frames` to the main CLI (the common options already hold --movie)."""
    p = subparsers.add_parser("label-frames", help="frames of a recording + current detections as imglab XML, "
                                                   "to correct and train your own detectors",
                              description=LABEL_HELP, formatter_class=argparse.RawDescriptionHelpFormatter)
    _add_options(p, with_movie=False)
    p.set_defaults(handler=label_frames_main)


__all__ = ["label_frames", "sample_times_s", "video_of", "label_frames_main", "add_label_frames_args", "register"]
