"""Benchmark face detection on full-size synthetic screenings with ground truth.

Generates (via the synthetic theatre) full-size 2750×2200 screenings with
~100 viewers, runs the `detect` stage, matches detections to the true face
boxes (our square box convention, IoU >= 0.5; faces the truth marks present
but turned away or occluded are "ignore" regions: neither missed nor false),
and prints:

  row group, faces, recall, precision, AP, ms/frame, ms/face, video s per CPU s, workers 1 vs 2

and, per row group, what the false positives are (mislocalised: IoU 0.3–0.5
with a visible face no detection matched; duplicate: IoU >= 0.3 with a face
another detection matched; background: no visible face within IoU 0.3).

Only the chunks the current plan names are scored (plan_detect), never
whatever *.h5 lies in the cache folder: a chunk left there by an earlier run
with another chunk_s (or another screening in the same workspace) would be
scored against this screening's truth. That stale-chunk artefact is what made
the first reported precision ~0.96.

    python bench/bench_detect.py                       # 2 held-out audiences × 12 s
    python bench/bench_detect.py --sessions 1 --duration-s 6 --modes known_rows
"""
from __future__ import annotations

import argparse
import dataclasses
import time
from pathlib import Path

import numpy as np

from configs.schema import WorkspaceConfig, load_config
from pipeline.detect import (DETECT, SURVEY, BAND_BACK, box_iou, make_finder, plan_detect, read_session_meta,
                             survey_video)
from pipeline.detector_training import face_box_from_landmarks
from pipeline.runner import run_stage
from pipeline.sources import iter_frames, probe_video
from pipeline.store import Workspace, read_detections, read_synthetic_truth
from pipeline.synthetic.animation import LEFT, VISIBLE
from pipeline.synthetic.stage import BACK_ROWS
from pipeline.synthetic.testing import make_test_screening

MODES = {
    "known_rows": [],                                                    # rows from session.yaml (default)
    "survey": ["detect.use_known_rows=false"],                           # rows found in the footage, rescans every 10 s
}


def ground_truth(truth_path: Path, frame_index: int):
    """The truth arrays the evaluation needs (landmarks, absence codes, rows, boxes)."""
    arrays, _ = read_synthetic_truth(truth_path, ("landmarks_image", "absence", "seat_row", "face_box"))
    return arrays


def match(det_boxes, det_scores, gt_boxes, gt_ignore, iou_min=0.5):
    """Greedy matching by score: (det_tp (D,), det_ignored (D,), gt_hit (G,))."""
    order = np.argsort(-det_scores)
    tp = np.zeros(len(det_boxes), bool)
    ignored = np.zeros(len(det_boxes), bool)
    hit = np.zeros(len(gt_boxes), bool)
    if len(gt_boxes) == 0 or len(det_boxes) == 0:
        return tp, ignored, hit
    iou = box_iou(det_boxes.astype(float), gt_boxes.astype(float))
    for d in order:
        candidates = np.where(~hit & ~gt_ignore & (iou[d] >= iou_min))[0]
        if len(candidates):
            g = candidates[np.argmax(iou[d, candidates])]
            hit[g] = tp[d] = True
        elif (iou[d, gt_ignore] >= 0.2).any() or (iou[d] >= iou_min).any():
            ignored[d] = True          # a hidden face, or a duplicate of a matched one, counts as neither
    return tp, ignored, hit


def average_precision(scores, tp, n_gt) -> float:
    if n_gt == 0:
        return float("nan")
    order = np.argsort(-scores)
    tps = np.cumsum(tp[order])
    precision = tps / np.arange(1, len(order) + 1)
    recall = tps / n_gt
    ap, prev_r = 0.0, 0.0
    for i in range(len(order)):                # area under the (monotone) PR curve
        if tp[order[i]]:
            ap += (recall[i] - prev_r) * precision[i:].max()
            prev_r = recall[i]
    return float(ap)


def planned_chunks(cfg, workspace: Workspace, video: Path) -> list[Path]:
    """The detections chunks the current plan writes for `video` (not stale files of other runs)."""
    return [u.outputs[0][1] for u in plan_detect(cfg, workspace) if Path(u.get("video")) == Path(video)]


FP_KINDS = ("mislocalised", "duplicate", "background")


def evaluate(screening, cfg) -> dict:
    """Per row group: faces, recall, precision, AP (and false-positive kinds) over the planned chunks.

    """
    stats = {g: {"scores": [], "tp": [], "n_gt": 0, "fp": dict.fromkeys(FP_KINDS, 0)} for g in ("front", "back")}
    n_rows = screening.config.synthetic.geometry.rows
    for video, truth in zip(screening.videos, screening.truths):
        gt = ground_truth(truth, 0)
        typical = _typical_boxes(gt["face_box"])
        for chunk in planned_chunks(cfg, screening.workspace, video):
            dets = read_detections(chunk)
            for row, f in enumerate(dets.frame_index):
                if not dets.frame_ok[row]:
                    continue
                state = gt["absence"][f]
                present = state != LEFT
                boxes = np.full((len(state), 4), np.nan)
                vis = state == VISIBLE
                boxes[vis] = face_box_from_landmarks(gt["landmarks_image"][f, vis])
                hidden = present & ~vis
                boxes[hidden] = typical[hidden]
                keep = present & np.isfinite(boxes).all(axis=1)
                back = gt["seat_row"] >= n_rows - BACK_ROWS
                sel = dets.det_frame == row
                d_boxes, d_scores, d_band = dets.det_box_px[sel], dets.det_score[sel], dets.det_band[sel]
                tp, ignored, hit = match(d_boxes, d_scores, boxes[keep], ~vis[keep])
                gt_back = back[keep]
                # a detection belongs to the row group of the face it matched, else to its band
                iou = box_iou(d_boxes.astype(float), boxes[keep].astype(float)) if keep.any() else None
                for d in range(len(d_boxes)):
                    if ignored[d]:
                        continue
                    is_back = bool(gt_back[np.argmax(iou[d])]) if iou is not None and iou[d].max() > 0.1 \
                        else d_band[d] == BAND_BACK
                    group = stats["back" if is_back else "front"]
                    group["scores"].append(d_scores[d])
                    group["tp"].append(tp[d])
                    if not tp[d]:
                        group["fp"][_fp_kind(iou[d] if iou is not None else np.zeros(0), vis[keep], hit)] += 1
                for name, mask in (("back", gt_back), ("front", ~gt_back)):
                    stats[name]["n_gt"] += int((mask & vis[keep]).sum())
    out = {}
    for name, s in stats.items():
        scores, tp = np.asarray(s["scores"]), np.asarray(s["tp"], bool)
        out[name] = {"faces": s["n_gt"], "recall": tp.sum() / max(s["n_gt"], 1),
                     "precision": tp.sum() / max(len(tp), 1), "ap": average_precision(scores, tp, s["n_gt"]),
                     "fp": s["fp"]}
    return out


def _fp_kind(iou_row: np.ndarray, visible: np.ndarray, hit: np.ndarray) -> str:
    """Why a false positive is one: near an unmatched visible face, near a matched one, or neither."""
    near = visible & (iou_row >= 0.3)
    if (near & ~hit).any():
        return "mislocalised"
    return "duplicate" if near.any() else "background"


def _typical_boxes(face_box):
    """(V, 4) each viewer's median true box over the recording, enlarged 1.4× (for hidden faces)."""
    import warnings

    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)
        med = np.nanmedian(face_box, axis=0)
    centre, half = 0.5 * (med[:, :2] + med[:, 2:]), 0.7 * (med[:, 2:] - med[:, :2])
    return np.concatenate([centre - half, centre + half], axis=1)


def time_stages(screening, cfg, max_frames: int) -> dict:
    """In-process CPU time (time.process_time: all threads of this process) of one video:
    decode ms/frame, detect ms/frame and ms/face (meaningful on a shared machine)."""
    video = screening.videos[0]
    info = probe_video(video)
    finder = make_finder(cfg, info.height_px, read_session_meta(video.parent), info.width_px, survey_video(video, cfg))
    decode_s = detect_s = 0.0
    n_frames = n_faces = 0
    frames = iter_frames(video, every_s=cfg.sources.sample_every_s, info=info)
    while n_frames < max_frames:
        t0 = time.process_time()
        frame = next(frames, None)
        t1 = time.process_time()
        if frame is None:
            break
        boxes, _, _ = finder(frame.image, frame.time_s)
        t2 = time.process_time()
        decode_s += t1 - t0
        detect_s += t2 - t1
        n_frames += 1
        n_faces += len(boxes)
    return {"decode_ms": 1e3 * decode_s / max(n_frames, 1), "detect_ms": 1e3 * detect_s / max(n_frames, 1),
            "ms_per_face": 1e3 * detect_s / max(n_faces, 1), "faces_per_frame": n_faces / max(n_frames, 1)}


def chunked(cfg):
    """cfg with two chunks per screening (so two workers have something to share)."""
    return cfg.replace(sources=dataclasses.replace(cfg.sources, chunk_s=cfg.synthetic.duration_s / 2))


def throughput(screening, cfg, workers: int) -> dict:
    """Seconds of recording per wall second (and, in-process with 1 worker, per CPU second) of the
    detect stage (decode + detect) run by the runner with `workers` processes."""
    run_stage(SURVEY, cfg, screening.workspace, progress=False)        # once per recording, not timed
    wall0, cpu0 = time.perf_counter(), time.process_time()
    report = run_stage(DETECT, chunked(cfg), screening.workspace, workers=workers, force=True, progress=False)
    wall_s, cpu_s = time.perf_counter() - wall0, time.process_time() - cpu0
    if report.failed:
        raise SystemExit(f"detect failed: {report.failed}")
    video_s = sum(probe_video(v).duration_s for v in screening.videos)
    return {"per_wall_s": video_s / wall_s, "per_cpu_s": video_s / cpu_s if workers <= 1 else float("nan")}


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--workdir", default="/tmp/bench_detect", help="where screenings are generated (cached)")
    parser.add_argument("--sessions", type=int, default=2, help="held-out audiences (default %(default)s)")
    parser.add_argument("--duration-s", type=float, default=12.0, help="seconds per screening")
    parser.add_argument("--seed", type=int, default=202, help="synthetic seed (detectors trained on 0, threshold picked on 101)")
    parser.add_argument("--modes", nargs="+", default=["known_rows", "survey"], choices=sorted(MODES))
    parser.add_argument("--timing-frames", type=int, default=12)
    parser.add_argument("--no-workers", action="store_true", help="skip the 2-worker run")
    parser.add_argument("--set", action="append", default=[], help="extra config override")
    args = parser.parse_args(argv)

    print(f"generating {args.sessions} full-size screening(s) of {args.duration_s:.0f} s (seed {args.seed}) ...")
    screening = make_test_screening(args.workdir, duration_s=args.duration_s, sessions=args.sessions, scale="full",
                                    seed=args.seed)
    header = (f"{'mode':<13}{'rows':<6}{'faces':>6}{'recall':>8}{'prec.':>7}{'AP':>7}{'dec ms/fr':>10}"
              f"{'det ms/fr':>10}{'ms/face':>8}{'1 wkr vid s/CPU s':>18}{'1 wkr vid s/wall s':>19}"
              f"{'2 wkr vid s/wall s':>19}")
    lines, fps = [header, "-" * len(header)], []
    for mode in args.modes:
        cfg = load_config(overrides=MODES[mode] + args.set)
        cfg = cfg.replace(workspace=WorkspaceConfig(root=str(args.workdir)), synthetic=screening.config.synthetic)
        speed1 = throughput(screening, cfg, 1)
        quality = evaluate(screening, chunked(cfg))
        speed2 = throughput(screening, cfg, 2) if not args.no_workers else {"per_wall_s": float("nan")}
        timing = time_stages(screening, cfg, args.timing_frames)
        for group in ("front", "back"):
            q = quality[group]
            lines.append(f"{mode:<13}{group:<6}{q['faces']:>6}{q['recall']:>8.3f}{q['precision']:>7.3f}{q['ap']:>7.3f}"
                         f"{timing['decode_ms']:>10.0f}{timing['detect_ms']:>10.0f}{timing['ms_per_face']:>8.2f}"
                         f"{speed1['per_cpu_s']:>18.2f}{speed1['per_wall_s']:>19.2f}{speed2['per_wall_s']:>19.2f}")
            fps.append(f"  {mode:<13}{group:<6}" + ", ".join(f"{k} {v}" for k, v in q["fp"].items()))
    print("\n".join(lines))
    print(f"frames: 2750×2200, sampled every {load_config().sources.sample_every_s} s; ms = CPU ms "
          f"(time.process_time); 'vid s/CPU s' = recording seconds processed (decode + detect) per CPU second")
    print("false positives by kind (mislocalised: IoU 0.3–0.5 with an unmatched visible face; duplicate: "
          "of a matched face; background: no visible face near):")
    print("\n".join(fps))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
