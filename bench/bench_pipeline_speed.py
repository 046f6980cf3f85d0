"""Speed of the per-frame vision chain (detect → landmarks → frontalize) on a full-size screening.

Generates (cached) one full-size 2750×2200 synthetic session (~95 viewers) of
--duration-s seconds at 12 fps, then runs the real stages through the runner
(pipeline/runner.py run_stage) at the default sampling (one frame every
sources.sample_every_s = 0.5 s), in chunks of --chunk-s so that several
workers have units to share. It prints

1. per step (one worker, in this process): CPU seconds (time.process_time:
   every thread of the process, so the figure means something on a shared
   machine), wall seconds, CPU ms per sampled frame and per face, and the part
   of it that is video decoding. As `audience run` does it, detect and
   landmarks run in one pass per chunk (one decode); `--apart` also times them
   as two stages (two decodes). The survey (rows from the footage, once per
   recording, whatever its length) is timed on its own;
2. the chain: seconds of recording processed per CPU-core second (≥ 1 = real
   time on one core), with and without decoding;
3. workers scaling: the three stages with --workers N (wall seconds, CPU
   seconds of all processes, recording seconds per wall second, speed-up).

    python bench/bench_pipeline_speed.py                    # 24 s session, workers 1 and 2
    python bench/bench_pipeline_speed.py --duration-s 12 --workers 1 2 --set landmarks.engine=dlib

Wall-clock figures depend on what else runs on the machine; CPU figures much less.
"""
from __future__ import annotations

import argparse
import dataclasses
import resource
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

STAGE_NAMES = ("detect", "landmarks", "frontalize")
# (label, stage, next stage computed in the same pass): the steps `audience run` takes per chunk
FUSED_STEPS = (("detect+landmarks", "detect", "landmarks"), ("frontalize", "frontalize", None))
APART_STEPS = (("detect", "detect", None), ("landmarks", "landmarks", None), ("frontalize", "frontalize", None))


def _cpu_all() -> float:
    """CPU seconds of this process and of its reaped children (runner workers)."""
    own, kids = resource.getrusage(resource.RUSAGE_SELF), resource.getrusage(resource.RUSAGE_CHILDREN)
    return own.ru_utime + own.ru_stime + kids.ru_utime + kids.ru_stime


def _counts(cfg, workspace) -> tuple[int, int]:
    """(sampled frames decoded fine, detected faces) over the planned detect chunks."""
    from pipeline.detect import DETECT
    from pipeline.store import read_detections

    frames = faces = 0
    for unit in DETECT.plan(cfg, workspace):
        det = read_detections(unit.outputs[0][1])
        frames += int(det.frame_ok.sum())
        faces += len(det.det_frame)
    return frames, faces


def decode_cpu(cfg, workspace) -> tuple[float, int]:
    """CPU seconds to decode the sampled frames of every planned chunk once (as each stage does)."""
    from pipeline.detect import DETECT
    from pipeline.sources import iter_frames, probe_video

    cpu, frames = 0.0, 0
    for unit in DETECT.plan(cfg, workspace):
        video = Path(unit.get("video"))
        info = probe_video(video)
        start = time.process_time()
        for frame in iter_frames(video, float(unit.get("start_s")), float(unit.get("end_s")),
                                 cfg.sources.sample_every_s, info=info):
            frames += frame.image is not None
        cpu += time.process_time() - start
    return cpu, frames


def _clear_model_caches() -> None:
    from pipeline import detect, landmarks

    for module, name in ((landmarks, "load_ert_model"), (landmarks, "_parsed_model"), (landmarks, "load_predictor"),
                         (detect, "_cached_detector")):
        if hasattr(module, name):
            getattr(module, name).cache_clear()


def _load_landmark_model(lcfg) -> None:
    from pipeline import landmarks

    landmarks.load_landmarker(lcfg)


def per_stage(cfg, workspace, steps) -> dict:
    """One worker, in this process: CPU and wall seconds of the survey and of each step (models loaded
    beforehand)."""
    from pipeline.detect import make_finder, read_session_meta
    from pipeline.runner import run_stage
    from pipeline.sources import probe_video
    from pipeline.stages import get_stage

    video = Path(next(iter(get_stage("detect").plan(cfg, workspace))).get("video"))
    start = time.process_time()
    make_finder(cfg, probe_video(video).height_px, read_session_meta(video.parent))
    _load_landmark_model(cfg.landmarks)
    out = {"model_load_cpu_s": time.process_time() - start}
    for label, name, then in (("survey", "survey", None),) + tuple(steps):
        cpu0, wall0 = time.process_time(), time.perf_counter()
        report = run_stage(get_stage(name), cfg, workspace, workers=1, force=True, progress=False,
                           then=get_stage(then) if then else None)
        out[label] = {"cpu_s": time.process_time() - cpu0, "wall_s": time.perf_counter() - wall0,
                      "decodes": name in ("detect", "landmarks")}
        if report.failed:
            raise SystemExit(f"{label} failed: {report.failed}")
    return out


def scaling(cfg, workspace, workers: int) -> dict:
    """The three stages with `workers` processes: wall seconds and CPU seconds of all processes
    (each process loads its own models, as in a real run)."""
    from pipeline.runner import run_stage
    from pipeline.stages import get_stage

    _clear_model_caches()
    cpu0, wall0 = _cpu_all(), time.perf_counter()
    for _, name, then in FUSED_STEPS:
        report = run_stage(get_stage(name), cfg, workspace, workers=workers, force=True, progress=False,
                           then=get_stage(then) if then else None)
        if report.failed:
            raise SystemExit(f"{name} failed with {workers} workers: {report.failed}")
    return {"wall_s": time.perf_counter() - wall0, "cpu_s": _cpu_all() - cpu0}


def _busy(n: int) -> float:
    """A fixed amount of single-threaded CPU work; returns its wall seconds."""
    start = time.perf_counter()
    total = 0
    for i in range(n):
        total += i * i % 7
    return time.perf_counter() - start


def cores_available(workers: int, loops: int = 4_000_000) -> float:
    """How many cores `workers` busy processes actually get now (others share the machine):
    workers × (wall of one task alone) / (wall of the slowest of `workers` tasks run together)."""
    import concurrent.futures as cf
    import multiprocessing as mp

    with cf.ProcessPoolExecutor(workers, mp_context=mp.get_context("spawn")) as pool:
        list(pool.map(_busy, [1000] * workers))                     # start the processes first
        alone = pool.submit(_busy, loops).result()
        together = max(pool.map(_busy, [loops] * workers))
    return workers * alone / together


def print_chain(timing, labels, frames, faces, dec_ms, dec_cpu, video_s) -> None:
    header = (f"{'step':<18}{'CPU s':>8}{'wall s':>8}{'CPU ms/frame':>14}{'CPU ms/face':>13}"
              f"{'decode ms/frame':>17}{'ms/face w/o decode':>20}")
    print("1 worker, in-process (CPU = time.process_time of the worker)")
    print(header + "\n" + "-" * len(header))
    chain_cpu = chain_dec = 0.0
    for name in labels:
        t = timing[name]
        dec = dec_ms if t["decodes"] else 0.0
        chain_cpu += t["cpu_s"]
        chain_dec += dec_cpu if t["decodes"] else 0.0
        per_frame = 1e3 * t["cpu_s"] / max(frames, 1)
        print(f"{name:<18}{t['cpu_s']:>8.1f}{t['wall_s']:>8.1f}{per_frame:>14.0f}"
              f"{1e3 * t['cpu_s'] / max(faces, 1):>13.2f}{dec:>17.0f}"
              f"{(per_frame - dec) * frames / max(faces, 1):>20.2f}")
    print(f"{'chain':<18}{chain_cpu:>8.1f}{sum(timing[n]['wall_s'] for n in labels):>8.1f}"
          f"{1e3 * chain_cpu / max(frames, 1):>14.0f}{1e3 * chain_cpu / max(faces, 1):>13.2f}"
          f"{1e3 * chain_dec / max(frames, 1):>17.0f}")
    print(f"\nrecording seconds per CPU-core second, {' → '.join(labels)}: {video_s / chain_cpu:.2f} "
          f"(without decoding: {video_s / max(chain_cpu - chain_dec, 1e-9):.2f}); 1.00 = real time on one core\n")


def main(argv=None) -> int:
    from configs.schema import WorkspaceConfig, load_config
    from pipeline.sources import probe_video
    from pipeline.synthetic.testing import make_test_screening

    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--workdir", default="/tmp/bench_pipeline_speed",
                        help="where the screening is generated (cached)")
    parser.add_argument("--duration-s", type=float, default=24.0, help="seconds of recording (default %(default)s)")
    parser.add_argument("--seed", type=int, default=202, help="synthetic seed")
    parser.add_argument("--chunk-s", type=float, default=6.0,
                        help="sources.chunk_s of the workers runs, so they have units to share (the per-stage "
                             "table uses the configured chunk_s, default 60 s: each chunk after the first "
                             "decodes 2 s before its start again)")
    parser.add_argument("--workers", type=int, nargs="*", default=[1, 2], help="worker counts to compare")
    parser.add_argument("--set", action="append", default=[], help="extra config override (section.key=value)")
    parser.add_argument("--apart", action="store_true", help="also time detect and landmarks as two passes")
    parser.add_argument("--survey", action="store_true",
                        help="rows from the survey (detect.use_known_rows=false), not from session.yaml's seat map")
    args = parser.parse_args(argv)
    if args.survey:
        args.set.append("detect.use_known_rows=false")

    print(f"generating one full-size screening of {args.duration_s:.0f} s (seed {args.seed}) in {args.workdir} ...",
          flush=True)
    screening = make_test_screening(args.workdir, duration_s=args.duration_s, sessions=1, scale="full", seed=args.seed)
    cfg = load_config(overrides=args.set).replace(workspace=WorkspaceConfig(root=str(args.workdir)),
                                                  synthetic=screening.config.synthetic)
    chunked = cfg.replace(sources=dataclasses.replace(cfg.sources, chunk_s=args.chunk_s))
    workspace = screening.workspace
    video_s = sum(probe_video(v).duration_s for v in screening.videos)

    frames = faces = 0
    for steps in (FUSED_STEPS, APART_STEPS) if args.apart else (FUSED_STEPS,):
        timing = per_stage(cfg, workspace, steps)
        if not frames:
            frames, faces = _counts(cfg, workspace)
            dec_cpu, dec_frames = decode_cpu(cfg, workspace)
            dec_ms = 1e3 * dec_cpu / max(dec_frames, 1)
            lm = cfg.landmarks
            print(f"\n{video_s:.0f} s of 2750×2200 video at {probe_video(screening.videos[0]).fps:.0f} fps, one frame "
                  f"every {cfg.sources.sample_every_s} s: {frames} frames, {faces} faces ({faces / max(frames, 1):.0f}"
                  f"/frame); chunks of {cfg.sources.chunk_s:g} s; rows from "
                  f"{'the survey' if args.survey else 'session.yaml'}; landmarks engine={lm.engine} "
                  f"refine_passes={lm.refine_passes}")
            print(f"models loaded once per process before timing: {timing['model_load_cpu_s']:.1f} CPU s; survey "
                  f"(once per recording): {timing['survey']['cpu_s']:.1f} CPU s\n")
        print_chain(timing, [label for label, _, _ in steps], frames, faces, dec_ms, dec_cpu, video_s)

    if args.workers:
        print(f"\nworkers scaling (detect + landmarks + frontalize through run_stage, chunks of {args.chunk_s:g} s; "
              f"each worker process loads its own models; wall depends on the machine's other load)")
        header = (f"{'workers':>8}{'wall s':>9}{'CPU s':>9}{'cores used':>12}{'cores free':>12}"
                  f"{'video s/wall s':>16}{'speed-up':>10}{'CPU s/video s':>15}")
        print(header + "\n" + "-" * len(header))
        base = None
        for n in args.workers:
            free = cores_available(n)
            r = scaling(chunked, workspace, n)
            base = base or r["wall_s"]
            print(f"{n:>8}{r['wall_s']:>9.1f}{r['cpu_s']:>9.1f}{r['cpu_s'] / r['wall_s']:>12.2f}{free:>12.2f}"
                  f"{video_s / r['wall_s']:>16.2f}{base / r['wall_s']:>10.2f}{r['cpu_s'] / video_s:>15.2f}",
                  flush=True)
        print("cores used = CPU s / wall s of the run; cores free = what n busy test processes got just before "
              "it (n = full use). With other jobs on the machine, wall and speed-up say more about them than "
              "about the pipeline; CPU s/video s should stay flat as workers grow.")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
