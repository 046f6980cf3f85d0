"""Benchmark of the vision stages on synthetic screenings with ground truth.

Generates (or reuses) a synthetic movie, runs detect → landmarks → frontalize →
members → bin with the runner, and prints:

* landmark error (mean point distance / true inter-ocular distance), front and
  back rows, for the stock ERT (and any other model given with --model);
* the box mapping (landmarks.box_scale/box_dx/box_dy) fitted from the detections;
* frontal error (frontal landmarks vs true frontal landmarks, same normalisation)
  and pose error in degrees;
* identity purity (share of each member's faces from its main true viewer) and
  coverage (share of visible (viewer, second) cells observed in the tensor);
* ms per frame and per face of each stage (from the runner's manifests).

    python bench/bench_vision.py --scale full --duration 12 --workspace /tmp/bv202   # the README numbers
    python bench/bench_vision.py --workspace /tmp/bench --scale small --duration 20
    python bench/bench_vision.py --detections oracle   # truth boxes (+ jitter) instead of the detector
    python bench/bench_vision.py --detections oracle --scale full --duration 12 --workspace /tmp/bench_vision_full
    python bench/bench_vision.py --variants "landmarks.engine=numpy landmarks.refine_passes=1" landmarks.engine=numpy

By default two landmark variants are compared: the former default (dlib's
predictor on upsampled crops, one refine pass) and the numpy engine.

`--detections oracle` writes detect chunks from the truth (the detector's box
convention, centre/size jitter `--jitter` of the box width, visible faces only),
which isolates this stage's numbers from detector recall.
"""
from __future__ import annotations

import argparse
import dataclasses
import json
import sys
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from pipeline.store import Workspace  # noqa: E402

BACK_ROWS = 3
ORACLE = "oracle_detections"    # manifest key of detect chunks made from the truth (the runner ignores it)
STAGES = ("survey", "detect", "landmarks", "frontalize", "members", "bin")


def make_config(root: Path, scale: str, duration_s: float, sessions: int, overrides: list[str]):
    from configs.schema import load_config

    return load_config(overrides=[f"workspace.root={root}", f"synthetic.scale={scale}",
                                  f"synthetic.duration_s={duration_s}", f"synthetic.sessions={sessions}",
                                  *overrides])


def oracle_detections(cfg, workspace: Workspace, jitter: float, seed: int = 0) -> None:
    """Write detect chunks made from the truth boxes (visible faces, jittered) in place of the detector's.

    They go through the runner as the detect stage's units (its manifest, its inputs: the recording and
    the survey, which runs first), so the declared graph lets the later stages run on them."""
    from pipeline.detector_training import face_box_from_landmarks
    from pipeline.runner import Graph, execute_unit, run_stage
    from pipeline.sources import expected_frame_times, probe_video
    from pipeline.stages import get_stage
    from pipeline.store import Detections, read_synthetic_truth, write_detections, write_text_atomic

    survey = run_stage(get_stage("survey"), cfg, workspace, progress=False)
    if survey.failed or survey.blocked:
        raise RuntimeError(f"survey failed: {survey.failed or survey.blocked}")
    rng = np.random.default_rng(seed)

    def compute(unit, cfg, tmp_outputs):
        video = Path(unit.get("video"))
        truth, _ = read_synthetic_truth(video.with_suffix(".truth.h5"), ("landmarks_image", "visible", "seat_row"))
        info = probe_video(video)
        start_s, end_s = float(unit.get("start_s")), float(unit.get("end_s"))
        index, time_s = expected_frame_times(info, start_s, end_s, cfg.sources.sample_every_s)
        rows_f, rows_v = np.nonzero(truth["visible"][index])
        boxes = face_box_from_landmarks(truth["landmarks_image"][index[rows_f], rows_v])
        w = boxes[:, 2] - boxes[:, 0]
        shift = rng.normal(0, jitter, (len(w), 2)) * w[:, None]
        grow = 1 + rng.normal(0, jitter, len(w))
        cx, cy = (boxes[:, 0] + boxes[:, 2]) / 2 + shift[:, 0], (boxes[:, 1] + boxes[:, 3]) / 2 + shift[:, 1]
        half = w * grow / 2
        det = Detections(frame_index=index, frame_time_s=time_s, frame_ok=np.ones(len(index), bool),
                         det_frame=rows_f.astype(np.int32),
                         det_box_px=np.stack([cx - half, cy - half, cx + half, cy + half], 1).astype(np.float32),
                         det_score=np.ones(len(w), np.float32),
                         det_band=(truth["seat_row"][rows_v] >= truth["seat_row"].max() - BACK_ROWS + 1).astype(np.int8),
                         attrs={"movie": unit.key[0], "session": unit.key[1], "camera": unit.key[2],
                                "chunk_start_s": start_s, "chunk_end_s": end_s, "fps": info.fps,
                                "width_px": info.width_px, "height_px": info.height_px,
                                "sample_every_s": cfg.sources.sample_every_s, "detector_front": "oracle",
                                "detector_back": "oracle"})
        write_detections(tmp_outputs["detections"], det)

    detect = dataclasses.replace(get_stage("detect"), compute=compute)
    graph = Graph(cfg, workspace)
    for unit in detect.plan(cfg, workspace):
        manifest = execute_unit(detect, unit, cfg, graph.fingerprints(detect, unit), root=workspace.root)
        write_text_atomic(unit.manifest_path, json.dumps({**manifest, ORACLE: True}, indent=1, sort_keys=True))


def forget_oracle_detections(cfg, workspace: Workspace) -> None:
    """Drop the manifests of oracle detect chunks, so the real detector redoes those chunks."""
    from pipeline.stages import get_stage

    for unit in get_stage("detect").plan(cfg, workspace):
        try:
            if json.loads(unit.manifest_path.read_text()).get(ORACLE):
                unit.manifest_path.unlink()
        except (OSError, ValueError):
            pass


# ----------------------------------------------------------------------------- matching to the truth


def match_faces(boxes_px: np.ndarray, truth_boxes: np.ndarray, visible: np.ndarray) -> np.ndarray:
    """Detections of one frame (d, 4) → true viewer (d,) whose box centre is within half a box width."""
    if len(boxes_px) == 0:
        return np.zeros(0, int)
    c = (boxes_px[:, :2] + boxes_px[:, 2:]) / 2
    tc = (truth_boxes[:, :2] + truth_boxes[:, 2:]) / 2
    tw = truth_boxes[:, 2] - truth_boxes[:, 0]
    dist = np.linalg.norm(c[:, None] - tc[None], axis=2)
    dist[:, ~visible] = np.inf
    best = dist.argmin(axis=1)
    ok = dist[np.arange(len(c)), best] < 0.5 * tw[best]
    return np.where(ok, best, -1)


def planned_chunks(stage: str, cfg, workspace: Workspace, movie: str, session: str, camera: str) -> list[Path]:
    """The chunk files the current plan writes for one camera (never stale files of earlier runs
    with another chunk_s or duration, which a glob of the cache folder would also pick up)."""
    from pipeline.stages import get_stage

    return [Path(u.outputs[0][1]) for u in get_stage(stage).plan(cfg, workspace)
            if u.key[:3] == (movie, session, camera)]


def outer_corner_error(estimate: np.ndarray, truth: np.ndarray) -> np.ndarray:
    """Mean point distance / distance between the outer eye corners (points 36, 45): the 300-W
    benchmark's 'inter-ocular' normalisation, larger than our eye-centre one (D,)."""
    corners = np.linalg.norm(truth[:, 36] - truth[:, 45], axis=-1)
    return np.linalg.norm(estimate - truth, axis=-1).mean(-1) / corners


def evaluate_camera(workspace: Workspace, movie: str, session: str, camera: str, cfg) -> dict:
    """Per-face errors and per-face viewer of one (session, camera)."""
    from pipeline.frontalize import canonical_mean_face, frontal_error, normalized_error, similarity_align
    from pipeline.store import read_frontal_chunk, read_landmarks_chunk, read_members, read_synthetic_truth

    truth, attrs = read_synthetic_truth(workspace.session_dir(movie, session) / f"{camera}.truth.h5")
    back_row = truth["seat_row"].max() - BACK_ROWS + 1
    out = {k: [] for k in ("lm_err", "lm_err_300w", "back", "frontal_err", "pose_err", "viewer", "frontal_delta", "pose_delta",
                           "viewer_hit")}
    paths = planned_chunks("landmarks", cfg, workspace, movie, session, camera)
    for path in paths:
        lm = read_landmarks_chunk(path)
        fr = read_frontal_chunk(workspace.stage_output("frontalize", movie, session, camera, path.stem))
        frame = lm["frame_index"][lm["det_frame"]]
        viewer = np.full(len(frame), -1)
        for f in np.unique(frame):
            rows = np.flatnonzero(frame == f)
            viewer[rows] = match_faces(lm["det_box_px"][rows], truth["face_box"][f], truth["visible"][f])
        hit = viewer >= 0
        gt_img = truth["landmarks_image"][frame[hit], viewer[hit]]
        gt_frontal = truth["landmarks_frontal"][frame[hit], viewer[hit]]
        out["lm_err"].append(normalized_error(lm["landmarks_px"][hit], gt_img))
        out["lm_err_300w"].append(outer_corner_error(lm["landmarks_px"][hit], gt_img))
        out["back"].append(truth["seat_row"][viewer[hit]] >= back_row)
        out["frontal_err"].append(frontal_error(fr["frontal"][hit], gt_frontal))
        out["pose_err"].append(np.abs(fr["pose_deg"][hit] - truth["pose_deg"][frame[hit], viewer[hit]]))
        model = canonical_mean_face()[None, :, :2].repeat(int(hit.sum()), axis=0)
        out["frontal_delta"].append(fr["frontal"][hit] - similarity_align(gt_frontal, model))
        out["pose_delta"].append(fr["pose_deg"][hit] - truth["pose_deg"][frame[hit], viewer[hit]])
        out["viewer_hit"].append(viewer[hit])
        out["viewer"].append(viewer)
    members = read_members(workspace.stage_output("members", movie, session, camera, "members"))
    result = {k: np.concatenate(v) if v else np.zeros(0) for k, v in out.items()}
    result.update(_debiased(result["frontal_delta"], result["pose_delta"], result["viewer_hit"]))
    result.update(truth=truth, truth_attrs=attrs, members=members)
    return result


def _debiased(frontal_delta: np.ndarray, pose_delta: np.ndarray, viewer: np.ndarray) -> dict:
    """Errors left after removing each true viewer's mean error (identity shape vs pose is
    ambiguous from one face; the per-viewer constant part does not vary over time)."""
    fe, pe = np.full(len(viewer), np.nan), np.full((len(viewer), 3), np.nan)
    for v in np.unique(viewer):
        rows = np.flatnonzero(viewer == v)
        fd = frontal_delta[rows] - np.nanmean(frontal_delta[rows], axis=0)
        fe[rows] = np.linalg.norm(fd, axis=-1).mean(-1)
        pe[rows] = np.abs(pose_delta[rows] - np.nanmean(pose_delta[rows], axis=0))
    return {"frontal_err_within": fe, "pose_err_within": pe}


def identity_scores(ev: dict, tensor, session: str, sample_every_s: float, offset_s: float) -> dict:
    """Purity per member and coverage of visible (viewer, second) cells."""
    from pipeline.binning import bin_index

    members, viewer = ev["members"], ev["viewer"]
    member = members["face_member"]
    purity, mixed, main_viewer = [], 0, {}
    for m in range(len(members["member_id"])):
        v = viewer[member == m]
        values, counts = np.unique(v, return_counts=True)
        purity.append(counts.max() / counts.sum() if len(v) else 0.0)
        mixed += int((values >= 0).sum() > 1)     # faces of two true viewers (unmatched boxes aside)
        if len(v) and values[counts.argmax()] >= 0:
            main_viewer[int(values[counts.argmax()])] = m
    truth = ev["truth"]
    rows = {mid: i for i, mid in enumerate(tensor.member_id) if tensor.session_id[i] == session}
    sampled = np.unique(members["frame_time_s"][members["frame_ok"]])
    frame = np.rint(sampled * float(ev["truth_attrs"]["fps"])).astype(int)
    frame = frame[frame < len(truth["time_s"])]
    bins = bin_index(truth["time_s"][frame] + offset_s, tensor.bin_seconds)
    visible_cells = observed = 0
    for v in range(truth["visible"].shape[1]):
        cells = np.unique(bins[truth["visible"][frame, v]])
        cells = cells[(cells >= 0) & (cells < tensor.mask.shape[1])]
        visible_cells += len(cells)
        m = main_viewer.get(v)
        if m is not None:
            observed += int(tensor.mask[rows[members["member_id"][m]], cells].sum())
    return {"purity": np.asarray(purity), "mixed": mixed, "visible_cells": visible_cells, "observed_cells": observed,
            "viewers": truth["visible"].shape[1], "members": len(members["member_id"]),
            "viewers_matched": len(main_viewer)}


def stage_timings(workspace: Workspace, cfg) -> dict[str, tuple[float, int, int]]:
    """stage → (seconds, frames, faces) from the manifests."""
    from pipeline.stages import get_stage
    from pipeline.store import read_detections

    frames = faces = 0
    for unit in get_stage("detect").plan(cfg, workspace):
        det = read_detections(unit.outputs[0][1])
        frames += int(det.frame_ok.sum())
        faces += len(det.det_frame)
    out = {}
    for name in STAGES:
        seconds = 0.0
        for unit in get_stage(name).plan(cfg, workspace):
            if unit.manifest_path.exists():
                seconds += json.loads(unit.manifest_path.read_text()).get("seconds", 0.0)
        out[name] = (seconds, frames, faces)
    return out


# ----------------------------------------------------------------------------- main


def run_pipeline(cfg, workspace: Workspace, detections: str, jitter: float, stages=STAGES) -> None:
    from pipeline.runner import run_stage
    from pipeline.stages import get_stage

    report = run_stage(get_stage("synthesize"), cfg, workspace, progress=False)
    if report.failed:
        raise SystemExit(f"synthesis failed: {report.failed}")
    for name in stages:
        if name == "detect" and detections == "oracle":
            oracle_detections(cfg, workspace, jitter)
            continue
        if name == "detect":
            forget_oracle_detections(cfg, workspace)
        report = run_stage(get_stage(name), cfg, workspace, progress=False)
        print("   ", report.line())
        for unit, err in report.failed.items():
            print(f"    FAILED {unit}: {err.strip().splitlines()[-1]}")


def summarize(cfg, workspace: Workspace, label: str) -> dict:
    from pipeline.landmarks import fit_box_mapping
    from pipeline.screenings import session_offset_s
    from pipeline.store import read_movie_tensor

    movie = cfg.synthetic.movie
    tensor = read_movie_tensor(workspace.tensor_path(movie))
    evs, ids = [], []
    for member_path in sorted((workspace.cache / "members" / movie).glob("*/*/members.h5")):
        session, camera = member_path.parts[-3], member_path.parts[-2]
        ev = evaluate_camera(workspace, movie, session, camera, cfg)
        evs.append(ev)
        ids.append(identity_scores(ev, tensor, session, cfg.sources.sample_every_s,
                                   session_offset_s(workspace, movie, session)))
    lm = np.concatenate([e["lm_err"] for e in evs])
    lm300 = np.concatenate([e["lm_err_300w"] for e in evs])
    back = np.concatenate([e["back"] for e in evs]).astype(bool)
    fe = np.concatenate([e["frontal_err"] for e in evs])
    pe = np.concatenate([e["pose_err"] for e in evs])
    few = np.concatenate([e["frontal_err_within"] for e in evs])
    pew = np.concatenate([e["pose_err_within"] for e in evs])
    purity = np.concatenate([i["purity"] for i in ids])
    coverage = sum(i["observed_cells"] for i in ids) / max(1, sum(i["visible_cells"] for i in ids))
    row = {"label": label, "front_med": np.nanmedian(lm[~back]), "front_mean": np.nanmean(lm[~back]),
           "back_med": np.nanmedian(lm[back]), "back_mean": np.nanmean(lm[back]),
           "front_mean_300w": np.nanmean(lm300[~back]), "back_mean_300w": np.nanmean(lm300[back]), "n_front": int((~back).sum()),
           "n_back": int(back.sum()), "frontal_front": np.nanmean(fe[~back]), "frontal_back": np.nanmean(fe[back]),
           "pose_front": np.nanmean(pe[~back], axis=0), "pose_back": np.nanmean(pe[back], axis=0),
           "frontal_within_f": np.nanmean(few[~back]), "frontal_within_b": np.nanmean(few[back]),
           "pose_within_f": np.nanmean(pew[~back], axis=0), "pose_within_b": np.nanmean(pew[back], axis=0),
           "purity_min": purity.min() if len(purity) else np.nan, "purity_mean": purity.mean() if len(purity) else np.nan,
           "members_99": float((purity >= 0.99).mean()) if len(purity) else np.nan, "coverage": coverage,
           "mixed": sum(i["mixed"] for i in ids), "members": sum(i["members"] for i in ids), "viewers": sum(i["viewers"] for i in ids),
           "viewers_matched": sum(i["viewers_matched"] for i in ids), "tensor_shape": tensor.shape}
    row["timings"] = stage_timings(workspace, cfg)
    try:
        from pipeline.store import read_detections

        boxes, truth_pts = [], []
        for ev, member_path in zip(evs, sorted((workspace.cache / "members" / movie).glob("*/*/members.h5"))):
            session, camera = member_path.parts[-3], member_path.parts[-2]
            for path in planned_chunks("detect", cfg, workspace, movie, session, camera):
                det = read_detections(path)
                frame = det.frame_index[det.det_frame]
                for f in np.unique(frame):
                    rows = np.flatnonzero(frame == f)
                    v = match_faces(det.det_box_px[rows], ev["truth"]["face_box"][f], ev["truth"]["visible"][f])
                    boxes.append(det.det_box_px[rows][v >= 0])
                    truth_pts.append(ev["truth"]["landmarks_image"][f, v[v >= 0]])
        row["box_mapping"] = fit_box_mapping(np.concatenate(boxes), np.concatenate(truth_pts))
    except Exception as err:  # noqa: BLE001 - a report line, not a failure
        row["box_mapping"] = {"error": str(err)}
    return row


def print_tables(rows: list[dict]) -> None:
    print("\nLandmark error (mean distance / true eye-centre distance; target ≤ 0.08 front, ≤ 0.15 back; "
          "300-W: / outer eye-corner distance)")
    print(f"{'model':<34} {'front med':>9} {'front mean':>10} {'back med':>9} {'back mean':>9} {'300-W f':>8} "
          f"{'300-W b':>8} {'faces f/b':>11}")
    for r in rows:
        print(f"{r['label']:<34} {r['front_med']:>9.3f} {r['front_mean']:>10.3f} {r['back_med']:>9.3f} "
              f"{r['back_mean']:>9.3f} {r['front_mean_300w']:>8.3f} {r['back_mean_300w']:>8.3f} "
              f"{r['n_front']:>5}/{r['n_back']:<5}")
    print("\nFrontalization (frontal error: same normalisation; pose error: mean |Δ| degrees yaw/pitch/roll)")
    print(f"{'model':<34} {'frontal f':>9} {'frontal b':>9} {'pose front':>20} {'pose back':>20}")
    for r in rows:
        pf = "/".join(f"{v:.1f}" for v in r["pose_front"])
        pb = "/".join(f"{v:.1f}" for v in r["pose_back"])
        print(f"{r['label']:<34} {r['frontal_front']:>9.3f} {r['frontal_back']:>9.3f} {pf:>20} {pb:>20}")
    print("\nSame, after removing each true viewer's mean error (time-varying part: what the tensor models)")
    print(f"{'model':<34} {'frontal f':>9} {'frontal b':>9} {'pose front':>20} {'pose back':>20}")
    for r in rows:
        pf = "/".join(f"{v:.1f}" for v in r["pose_within_f"])
        pb = "/".join(f"{v:.1f}" for v in r["pose_within_b"])
        print(f"{r['label']:<34} {r['frontal_within_f']:>9.3f} {r['frontal_within_b']:>9.3f} {pf:>20} {pb:>20}")
    print("\nIdentity (targets: ≥ 99 % of each member's faces from one viewer; ≥ 95 % visible cells observed)")
    print("(purity counts a face whose box matches no true viewer, e.g. a half-occluded face's shifted box, as "
          "impure; 'mixed' = members holding faces of two or more true viewers)")
    print(f"{'model':<34} {'members':>7} {'viewers':>7} {'purity min':>10} {'mean':>6} {'≥99%':>6} {'mixed':>6} "
          f"{'coverage':>8} {'tensor':>16}")
    for r in rows:
        print(f"{r['label']:<34} {r['members']:>7} {r['viewers']:>7} {r['purity_min']:>10.3f} {r['purity_mean']:>6.3f} "
              f"{r['members_99']:>6.2f} {r['mixed']:>6} {r['coverage']:>8.3f} {str(r['tensor_shape']):>16}")
    print("\nSpeed (2-core CPU; ms per good sampled frame and per detected face)")
    print(f"{'model':<34} " + " ".join(f"{s + ' f/face':>20}" for s in STAGES))
    for r in rows:
        cells = []
        for s in STAGES:
            sec, frames, faces = r["timings"][s]
            cells.append(f"{1e3 * sec / max(frames, 1):>9.1f}/{1e3 * sec / max(faces, 1):<9.2f}")
        print(f"{r['label']:<34} " + " ".join(f"{c:>20}" for c in cells))
    print("\nFitted detector→ERT box mapping (landmarks.box_scale / box_dx / box_dy):")
    for r in rows:
        print(f"  {r['label']}: {r['box_mapping']}")


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--workspace", type=Path, default=Path("/tmp/bench_vision"))
    parser.add_argument("--scale", choices=("small", "full"), default="small")
    parser.add_argument("--duration", type=float, default=20.0, help="seconds per session")
    parser.add_argument("--sessions", type=int, default=2)
    parser.add_argument("--seed", type=int, default=202,
                        help="synthetic audience seed (the shipped detectors were trained on 0, landmarks.box_scale "
                             "chosen on 101: 202 is held out from both)")
    parser.add_argument("--detections", choices=("detector", "oracle"), default="detector")
    parser.add_argument("--jitter", type=float, default=0.05, help="oracle box jitter, fraction of the width")
    parser.add_argument("--model", action="append", default=[], help="extra ERT .dat files to compare")
    parser.add_argument("--variants", nargs="*", default=["landmarks.engine=dlib landmarks.refine_passes=1",
                                                          "landmarks.engine=numpy"],
                        help="landmark variants to compare, each one or more space-separated config overrides "
                             "(default: the former dlib engine, then the numpy engine)")
    parser.add_argument("overrides", nargs="*", help="config overrides for every run (section.key=value)")
    args = parser.parse_args(argv)
    rows = []
    variants = [v.split() for v in args.variants] + [[f"landmarks.model_path={m}"] for m in args.model]
    for variant in variants or [[]]:
        cfg = make_config(args.workspace, args.scale, args.duration, args.sessions,
                          [f"synthetic.seed={args.seed}", *args.overrides, *variant])
        workspace = Workspace(args.workspace)
        label = "stock ERT " + " ".join(v.split(".", 1)[1] for v in variant) if variant else "stock ERT"
        print(f"== {label} ({args.detections} detections, {args.scale}, {args.sessions}×{args.duration:.0f} s)")
        run_pipeline(cfg, workspace, args.detections, args.jitter)
        rows.append(summarize(cfg, workspace, label))
    print_tables(rows)
    return 0


if __name__ == "__main__":
    sys.exit(main())
