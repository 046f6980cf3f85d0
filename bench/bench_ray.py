"""The Ray executor against the local process pool on this machine (issue 13).

1. Per-task overhead: a stage of many tiny units (each writes a small file through the runner: manifest,
   fsync, rename), run by the local pool and by Ray with 1 and 2 workers: wall seconds per unit.
2. Real chunks: one synthetic screening (synthesized once, then copied), `audience run`'s video stages
   (survey, detect + landmarks in one decode, frontalize, members, bin) with --executor local / ray and
   --workers 1 / 2: wall seconds, chunks per second, and whether the outputs equal the local run's bytes.

Ray's start (about 2-5 s per command) is counted in part 2 and reported apart in part 1.

    python bench/bench_ray.py                        # small theatre, 2 sessions × 16 s, 2 s chunks
    python bench/bench_ray.py --scale full --duration 12 --chunk-s 3
"""
from __future__ import annotations

import argparse
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))
sys.path.insert(0, str(REPO / "tests"))
ENV = {**os.environ, "PYTHONPATH": os.pathsep.join([str(REPO), str(REPO / "tests")])}

from bench_reliability import snapshot  # noqa: E402  (every output's sha256, every manifest less its wall time)


TINY_UNITS = [60]        # how many units plan_tiny plans (set by --units)


def plan_tiny(cfg, ws):
    from pipeline.runner import Unit

    return [Unit("tiny", (f"u{i:03d}",), (), (("out", ws.cache / "tiny" / f"u{i:03d}.bin"),))
            for i in range(TINY_UNITS[0])]


def write_kilobyte(unit, cfg, tmp):
    Path(tmp["out"]).write_bytes(unit.name.encode().ljust(1024, b"."))


def tiny_units(n: int):
    """A stage of n units that each write 1 KB."""
    from pipeline.runner import Stage

    TINY_UNITS[0] = n
    return Stage("tiny", "per-task overhead", "1", (), plan_tiny, write_kilobyte)


def overhead(n_units: int) -> list[tuple]:
    from pipeline.ray_executor import RayExecutor
    from pipeline.runner import run_stage
    from pipeline.store import Workspace

    stage, rows = tiny_units(n_units), []
    for workers in (1, 2):
        root = Path(tempfile.mkdtemp(prefix="bench-ray-local-"))
        started = time.perf_counter()
        run_stage(stage, None, Workspace(root), workers=workers, progress=False)
        rows.append(("local pool", workers, time.perf_counter() - started, 0.0))
        shutil.rmtree(root)
        root = Path(tempfile.mkdtemp(prefix="bench-ray-ray-"))
        started = time.perf_counter()
        executor = RayExecutor(num_cpus=workers, workspace_root=root)
        start_s = time.perf_counter() - started
        started = time.perf_counter()
        run_stage(stage, None, Workspace(root), progress=False, executor=executor)
        rows.append(("ray", workers, time.perf_counter() - started, start_s))
        executor.close()
        shutil.rmtree(root)
    return rows


def chunks(args) -> list[tuple]:
    base = Path(tempfile.mkdtemp(prefix="bench-ray-chunks-"))
    common = [f"synthetic.duration_s={args.duration}", "synthetic.sessions=2", f"sources.chunk_s={args.chunk_s}",
              f"synthetic.scale={args.scale}"]
    made = subprocess.run([sys.executable, "-m", "pipeline.cli", "synthesize", "--workspace", str(base / "src"),
                           "--quiet", *common], env=ENV, capture_output=True, text=True)
    if made.returncode:
        raise SystemExit(made.stdout + made.stderr)
    rows, reference = [], None
    for executor in ("local", "ray"):
        for workers in (1, 2):
            ws = base / f"{executor}{workers}"
            shutil.copytree(base / "src", ws)
            started = time.perf_counter()
            done = subprocess.run([sys.executable, "-m", "pipeline.cli", "run", "--workspace", str(ws), "--quiet",
                                   "--executor", executor, "--workers", str(workers), *common], env=ENV,
                                  capture_output=True, text=True)
            wall = time.perf_counter() - started
            if done.returncode:
                raise SystemExit(done.stdout + done.stderr)
            n_chunks = len(list((ws / "cache" / "detect").rglob("*.h5.manifest.json")))
            snap = snapshot(ws, ("cache", "tensors"))
            reference = reference or snap
            rows.append((executor, workers, wall, n_chunks, snap == reference))
    shutil.rmtree(base)
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--units", type=int, default=60, help="tiny units for the per-task overhead")
    parser.add_argument("--scale", choices=("small", "full"), default="small")
    parser.add_argument("--duration", type=float, default=16.0, help="seconds per session")
    parser.add_argument("--chunk-s", type=float, default=2.0)
    args = parser.parse_args()

    print(f"1. per-task overhead: {args.units} tiny units (runner commit + manifest each)\n")
    print("| executor | workers | wall s | ms per unit | executor start s |")
    print("|---|---|---|---|---|")
    for name, workers, wall, start_s in overhead(args.units):
        print(f"| {name} | {workers} | {wall:.2f} | {1000 * wall / args.units:.1f} | {start_s:.1f} |")
    print(f"\n2. `audience run` video stages, {args.scale} theatre, 2 sessions × {args.duration:g} s, "
          f"{args.chunk_s:g} s chunks\n")
    print("| executor | workers | wall s (incl. start) | detect chunks | chunks per wall s | outputs = local 1 |")
    print("|---|---|---|---|---|---|")
    for name, workers, wall, n_chunks, same in chunks(args):
        print(f"| {name} | {workers} | {wall:.1f} | {n_chunks} | {n_chunks / wall:.2f} | {'yes' if same else 'NO'} |")


if __name__ == "__main__":
    main()
