"""Train and test dlib HOG MMOD face detectors from imglab XML.

``train-detector`` wraps ``dlib.train_simple_object_detector`` (HOG features,
max-margin object detection) and reports precision / recall / average
precision on a test XML with ``dlib.test_simple_object_detector``.

Box convention for the shipped detectors (``face_box_from_landmarks``): a
square, side = 1.1 × the width of the 68-landmark cloud, centred horizontally
on the cloud and 0.1 × its width above its vertical centre. Measured on the 43
faces of dlib's example photos, this matches dlib's stock frontal detector
(side 1.11 ± 0.09 widths, centre 0.10 ± 0.05 widths above the cloud centre),
so the stock 68-point shape predictor can be fitted inside our boxes.
"""
from __future__ import annotations

import argparse
import os
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from pipeline.imglab import check_images, read_dataset
from pipeline.store import DataError, atomic_path, ensure_dir

BOX_SIDE_PER_WIDTH = 1.1
BOX_RAISE_PER_WIDTH = 0.1


def face_box_from_landmarks(points_xy: np.ndarray) -> np.ndarray:
    """points (..., 68, 2) px → square boxes (..., 4) [left, top, right, bottom] px."""
    points_xy = np.asarray(points_xy, float)
    lo, hi = points_xy.min(axis=-2), points_xy.max(axis=-2)
    width = hi[..., 0] - lo[..., 0]
    cx = 0.5 * (lo[..., 0] + hi[..., 0])
    cy = 0.5 * (lo[..., 1] + hi[..., 1]) - BOX_RAISE_PER_WIDTH * width
    half = 0.5 * BOX_SIDE_PER_WIDTH * width
    return np.stack([cx - half, cy - half, cx + half, cy + half], axis=-1)


@dataclass(frozen=True)
class TrainOptions:
    C: float = 5.0                  # SVM regularisation: larger fits the training set harder
    epsilon: float = 0.01           # stop when the risk gap is below this (smaller = longer, better)
    window_px: int = 80             # detection window side (faces smaller than this are upsampled)
    flips: bool = True              # also train on left-right mirrored images
    upsample_limit: int = 2         # dlib may upsample training images at most this many times
    threads: int = 2
    verbose: bool = False


@dataclass(frozen=True)
class EvalResult:
    precision: float
    recall: float
    average_precision: float
    n_images: int
    n_faces: int

    def line(self, name: str) -> str:
        return (f"{name:<10} images {self.n_images:>4}  faces {self.n_faces:>5}  precision {self.precision:6.3f}  "
                f"recall {self.recall:6.3f}  AP {self.average_precision:6.3f}")


def _checked_xml(path: str | Path, what: str):
    dataset = read_dataset(path)
    check_images(path, dataset)
    if not dataset.images:
        raise DataError(f"{what} {path} lists no images. Make one with `make-detector-xml` or imglab.")
    return dataset


def _impossible_images(message: str) -> list[str]:
    """Image names dlib lists after 'The following images contain invalid boxes:'."""
    if "invalid boxes" not in message:
        return []
    tail = message.split("invalid boxes:", 1)[1]
    return [line.strip() for line in tail.splitlines() if line.strip() and not line.strip().startswith(".")]


def train_detector(train_xml: str | Path, out_svm: str | Path, options: TrainOptions = TrainOptions(),
                   drop_impossible: bool = True) -> Path:
    """Train a HOG MMOD detector from imglab XML and save it atomically as `out_svm`.

    dlib refuses a box that no detection window can match (HOG cells quantise
    window positions and sizes); with drop_impossible the few images holding
    such boxes are left out (and named on stdout) instead of failing the run.
    """
    import dlib

    from pipeline.imglab import Dataset, write_dataset

    dataset = _checked_xml(train_xml, "training XML")
    if dataset.n_boxes == 0:
        raise DataError(f"training XML {train_xml} has no (non-ignored) boxes; a detector needs faces.")
    opts = dlib.simple_object_detector_training_options()
    opts.C = options.C
    opts.epsilon = options.epsilon
    opts.add_left_right_image_flips = options.flips
    opts.detection_window_size = int(options.window_px) ** 2
    opts.upsample_limit = options.upsample_limit
    opts.num_threads = options.threads
    opts.be_verbose = options.verbose
    out_svm = Path(out_svm)
    ensure_dir(out_svm.parent)
    xml, dropped = Path(train_xml), []
    filtered = xml.with_name(f".{xml.stem}.trainable{xml.suffix}")
    try:
        for _ in range(4):
            try:
                with atomic_path(out_svm) as tmp:
                    dlib.train_simple_object_detector(str(xml), str(tmp), opts)
                break
            except RuntimeError as err:
                bad = _impossible_images(str(err)) if drop_impossible else []
                if not bad:
                    raise DataError(f"dlib could not train on {train_xml}: {err}. Usually the boxes' "
                                    f"aspect ratios differ too much (keep boxes square) or faces are too "
                                    f"small for the window (lower --window-px or raise --upsample-limit).") from err
            dropped += bad
            keep = [im for im in dataset.images if im.file not in set(dropped)]
            write_dataset(filtered, Dataset(keep, dataset.name, dataset.comment))
            xml = filtered
        if dropped:
            print(f"left out {len(dropped)} of {len(dataset.images)} training images with boxes no "
                  f"detection window can match: {', '.join(dropped)}")
    finally:
        filtered.unlink(missing_ok=True)
    return out_svm


def evaluate_detector(test_xml: str | Path, svm: str | Path, upsample: int = -1) -> EvalResult:
    """Precision, recall and AP of a detector on an imglab XML (dlib's matching rules)."""
    import dlib

    dataset = _checked_xml(test_xml, "test XML")
    svm = Path(svm)
    if not svm.is_file():
        raise DataError(f"detector file not found: {svm}. Train one with `train-detector` first.")
    try:
        result = dlib.test_simple_object_detector(str(test_xml), str(svm), upsample)
    except RuntimeError as err:
        raise DataError(f"cannot test {svm} on {test_xml}: {err}. Is {svm} a detector written by "
                        f"`train-detector`?") from err
    return EvalResult(result.precision, result.recall, result.average_precision, len(dataset.images),
                      dataset.n_boxes)


# ----------------------------------------------------------------------------- command line


def add_train_detector_args(parser: argparse.ArgumentParser) -> argparse.ArgumentParser:
    parser.add_argument("train_xml", help="imglab XML with the training images and face boxes")
    return _add_training_options(parser)


def _add_training_options(parser: argparse.ArgumentParser) -> argparse.ArgumentParser:
    parser.add_argument("--test-xml", help="imglab XML to report precision/recall/AP on (held out)")
    parser.add_argument("--out", required=True, help="where to save the trained detector (.svm)")
    parser.add_argument("--C", type=float, default=TrainOptions.C, help="SVM C (default %(default)s)")
    parser.add_argument("--epsilon", type=float, default=TrainOptions.epsilon,
                        help="stopping tolerance (default %(default)s)")
    parser.add_argument("--window-px", type=int, default=TrainOptions.window_px,
                        help="detection window side in px (default %(default)s; the shipped theatre "
                             "detectors use 40)")
    parser.add_argument("--upsample-limit", type=int, default=TrainOptions.upsample_limit,
                        help="max times dlib may upsample training images (default %(default)s)")
    parser.add_argument("--no-flips", action="store_true", help="do not add mirrored training images")
    parser.add_argument("--threads", type=int, default=min(2, os.cpu_count() or 1))
    parser.add_argument("--verbose", action="store_true", help="print dlib's training progress")
    return parser


def train_detector_main(args: argparse.Namespace) -> int:
    options = TrainOptions(C=args.C, epsilon=args.epsilon, window_px=args.window_px, flips=not args.no_flips,
                           upsample_limit=args.upsample_limit, threads=args.threads, verbose=args.verbose)
    out = train_detector(args.train_xml, args.out, options)
    print(f"saved {out} ({out.stat().st_size / 1024:.0f} KiB)")
    print(evaluate_detector(args.train_xml, out).line("train"))
    if args.test_xml:
        print(evaluate_detector(args.test_xml, out).line("test"))
    return 0




# ----------------------------------------------------------------------------- synthetic training XML


@dataclass(frozen=True)
class SyntheticFrame:
    """One rendered synthetic frame with its faces in our box convention."""
    image: np.ndarray          # (H, W) uint8
    boxes_px: np.ndarray       # (V, 4) [left, top, right, bottom], NaN where the face is not visible
    ignore_px: np.ndarray      # (V, 4) generous boxes of occluded faces (neither positive nor negative), else NaN
    row: np.ndarray            # (V,) seat row of each viewer (0 = front)
    meta: dict                 # the session.yaml document
    time_s: float


def synthetic_frames(syn, session: str, camera: str, times_s) -> list[SyntheticFrame]:
    """Render the synthetic theatre's frames at `times_s` for one (session, camera).

    syn: a SyntheticConfig. Frames come from the same simulator and renderer as
    the synthesize stage (so from the same seeds they match its video frames).
    """
    import yaml

    from pipeline.synthetic.animation import OCCLUDED, VISIBLE, rng_for
    from pipeline.synthetic.render import build_scene, render_frame
    from pipeline.synthetic.stage import session_yaml, simulate

    frames_idx = [int(round(t * syn.fps)) for t in times_s]
    sim = simulate(syn, session, camera, frames=max(frames_idx) + 1)
    scene = build_scene(sim.layout, sim.audience, syn.noise_std, rng_for(syn, syn.movie, session, camera, "scene"))
    rng = rng_for(syn, syn.movie, session, camera, "frames")
    meta = yaml.safe_load(session_yaml(syn, sim.layout, session, sim.offset_s))
    anim, out = sim.anim, []
    rows = sim.layout.row[sim.audience.seat]
    for f in frames_idx:
        state = anim.state[f]
        boxes = np.full((len(state), 4), np.nan)
        vis = state == VISIBLE
        if vis.any():
            boxes[vis] = face_box_from_landmarks(anim.image[f, vis])
        ignore = np.full((len(state), 4), np.nan)
        hidden = state == OCCLUDED          # a turned-away head (back of the head) stays a negative
        half = 0.9 * anim.scale_px[hidden]
        centre = anim.centre_px[f, hidden]
        ignore[hidden] = np.stack([centre[:, 0] - half, centre[:, 1] - 1.3 * half,
                                   centre[:, 0] + half, centre[:, 1] + 0.9 * half], axis=1)
        out.append(SyntheticFrame(render_frame(scene, anim, f, rng), boxes, ignore, rows, meta, f / syn.fps))
    return out


def strip_dataset_entries(frame: SyntheticFrame, strips, file_stem: str, out_dir: Path, min_visible_frac=0.999):
    """Cut `frame` into detection strips; save each as PNG; return {band_id: [ImageEntry]}.

    A face wholly inside a strip is a positive box; a face cut by the strip's
    edge, or occluded, is an ignore box (neither positive nor negative); the
    back of a turned-away head is background, so the detector learns to reject it.
    """
    import cv2

    from pipeline.detect import strip_image
    from pipeline.imglab import Box, ImageEntry

    entries: dict[int, list] = {}
    for k, strip in enumerate(strips):
        image = strip_image(frame.image, strip)
        left = strip.left_px
        right_edge = min(strip.right_px or frame.image.shape[1], frame.image.shape[1])
        sx = image.shape[1] / (right_edge - left)
        sy = image.shape[0] / (strip.bottom_px - strip.top_px)
        name = f"{file_stem}_s{k:02d}.png"
        boxes = []
        for box, ignore in ((frame.boxes_px, False), (frame.ignore_px, True)):
            for l, t, r, b in box[np.isfinite(box).all(axis=1)]:
                inside = (min(b, strip.bottom_px) - max(t, strip.top_px)) / max(b - t, 1e-6)
                if inside <= 0:
                    continue
                if r <= left or l >= right_edge:
                    continue
                cut = inside < min_visible_frac or l < left or r > right_edge
                top_s, bottom_s = (t - strip.top_px) * sy, (b - strip.top_px) * sy
                boxes.append(Box(int(round((l - left) * sx)), int(round(top_s)), int(round((r - l) * sx)),
                                 int(round(bottom_s - top_s)), ignore=ignore or cut))
        cv2.imwrite(str(out_dir / name), image)
        entries.setdefault(strip.band_id, []).append(ImageEntry(name, boxes, image.shape[1], image.shape[0]))
    return entries


def make_synthetic_xml(out_dir: str | Path, cfg, sessions: int = 4, frames_per_session: int = 4,
                       seed: int = 0, every_s: float = 3.0, scale: str = "full") -> dict[str, Path]:
    """Write {front,back}.xml (+ strip PNGs) under out_dir from rendered synthetic screenings.

    Sessions are named s01… with synthetic seed `seed` (use another seed for a
    held-out test set). Strips are exactly the ones detection uses (known seat
    rows from session.yaml, scaled by detect.* settings), so the detectors see
    the same face sizes at training and detection time.
    """
    import dataclasses

    from tqdm import tqdm

    from pipeline.detect import BAND_BACK, BAND_FRONT, known_row_strips
    from pipeline.imglab import Dataset, write_dataset

    out_dir = ensure_dir(Path(out_dir))
    syn = dataclasses.replace(cfg.synthetic, seed=seed, sessions=sessions, scale=scale)
    per_band: dict[int, list] = {BAND_FRONT: [], BAND_BACK: []}
    times_s = [1.0 + i * every_s for i in range(frames_per_session)]
    for s in tqdm(range(sessions), desc="synthetic sessions", leave=False):
        session = f"s{s + 1:02d}"
        for frame in synthetic_frames(syn, session, "cam0", times_s):
            strips = known_row_strips(cfg, frame.image.shape[0], frame.meta, frame.image.shape[1])
            stem = f"seed{seed}_{session}_t{frame.time_s:06.2f}"
            for band_id, entries in strip_dataset_entries(frame, strips, stem, out_dir).items():
                per_band[band_id].extend(entries)
    paths = {}
    for band_id, name in ((BAND_FRONT, "front"), (BAND_BACK, "back")):
        dataset = Dataset(per_band[band_id], name=f"synthetic theatre, {name} rows",
                          comment=f"seed {seed}, {sessions} sessions x {frames_per_session} frames, "
                                  f"scale {scale}; boxes: pipeline.detector_training.face_box_from_landmarks")
        paths[name] = write_dataset(out_dir / f"{name}.xml", dataset)
    return paths


def add_make_xml_args(parser: argparse.ArgumentParser) -> argparse.ArgumentParser:
    parser.add_argument("out_dir", help="folder for front.xml, back.xml and the strip images")
    parser.add_argument("--config", action="append", default=[], help="config overlay YAML (repeatable)")
    parser.add_argument("--set", action="append", default=[], metavar="SECTION.KEY=VALUE",
                        help="config override (repeatable)")
    return _add_xml_options(parser)


def _add_xml_options(parser: argparse.ArgumentParser) -> argparse.ArgumentParser:
    parser.add_argument("--sessions", type=int, default=4, help="synthetic audiences (default %(default)s)")
    parser.add_argument("--frames", type=int, default=4, help="frames per session (default %(default)s)")
    parser.add_argument("--every-s", type=float, default=3.0, help="seconds between frames (default %(default)s)")
    parser.add_argument("--seed", type=int, default=0, help="synthetic seed; use another for test data")
    parser.add_argument("--scale", choices=("full", "small"), default="full", help="theatre geometry")
    parser.add_argument("--train-shipped", action="store_true",
                        help="regenerate the shipped detectors: XML from seed S into OUT/train, from seed S+1 "
                             "into OUT/test, train both, write pipeline/assets/detector_{front,back}.svm")
    return parser


def make_xml_main(args: argparse.Namespace) -> int:
    from configs.schema import load_config

    return _make_xml_with(args, load_config(args.config, args.set))


SHIPPED_OPTIONS = TrainOptions(C=5.0, epsilon=0.01, window_px=40, flips=True, upsample_limit=0)


def regenerate_shipped(out_dir: Path, cfg, sessions: int = 6, frames: int = 4, seed: int = 0,
                       every_s: float = 3.0) -> dict[str, EvalResult]:
    """Make synthetic train/test XML and retrain both shipped detectors (≈ 4 min on 2 cores)."""
    from pipeline.detect import ASSETS

    train = make_synthetic_xml(Path(out_dir) / "train", cfg, sessions, frames, seed, every_s)
    test = make_synthetic_xml(Path(out_dir) / "test", cfg, max(1, sessions // 3), max(1, frames - 1), seed + 1,
                              every_s)
    results = {}
    for name in ("back", "front"):
        svm = train_detector(train[name], ASSETS / f"detector_{name}.svm", SHIPPED_OPTIONS)
        results[name] = evaluate_detector(test[name], svm)
        print(results[name].line(f"{name} test"))
    return results


def _make_xml_with(args: argparse.Namespace, cfg) -> int:
    if getattr(args, "train_shipped", False):
        regenerate_shipped(Path(args.out_dir), cfg, args.sessions, args.frames, args.seed, args.every_s)
        return 0
    paths = make_synthetic_xml(args.out_dir, cfg, args.sessions, args.frames, args.seed, args.every_s, args.scale)
    for name, path in paths.items():
        dataset = read_dataset(path)
        print(f"{name}: {path} ({len(dataset.images)} images, {dataset.n_boxes} faces)")
    return 0


__all__ = ["face_box_from_landmarks", "TrainOptions", "EvalResult", "train_detector", "evaluate_detector",
           "add_train_detector_args", "train_detector_main", "synthetic_frames", "make_synthetic_xml",
           "add_make_xml_args", "make_xml_main", "SyntheticFrame", "regenerate_shipped", "register"]


def register(subparsers) -> None:
    """Add `train-detector` and `make-detector-xml` to the main CLI (handler(args, cfg))."""
    p = subparsers.add_parser("train-detector", help="train a HOG MMOD face detector from imglab XML")
    p.add_argument("--train-xml", required=True, help="imglab XML with the training images and face boxes")
    _add_training_options(p)
    p.set_defaults(handler=lambda args, cfg: train_detector_main(args))
    p = subparsers.add_parser("make-detector-xml", help="labelled imglab XML from the synthetic theatre")
    p.add_argument("--out-dir", required=True, help="folder for front.xml, back.xml and the strip images")
    _add_xml_options(p)
    p.set_defaults(handler=lambda args, cfg: _make_xml_with(args, cfg))
