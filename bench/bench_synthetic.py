"""Synthetic theatre generation speed and file sizes, full-size and small frames.

    python bench/bench_synthetic.py                  # 3 s full-size, 10 s small
    python bench/bench_synthetic.py --full-s 5 --small-s 20

Per scale: frame size, viewers, seconds of setup (animation model + static
scene), steady-state frames/s of rendering + mp4v encoding (wall clock and per
CPU-second, one process), MB of video and of truth per minute of recording.
"""
from __future__ import annotations

import argparse
import dataclasses
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from pipeline.store import write_synthetic_truth  # noqa: E402
from pipeline.synthetic.config import SyntheticConfig  # noqa: E402
from pipeline.synthetic.faces import source_faces  # noqa: E402
from pipeline.synthetic.stage import simulate, truth_arrays, write_video  # noqa: E402


def measure(scale: str, duration_s: float, folder: Path) -> dict:
    cfg = dataclasses.replace(SyntheticConfig(), scale=scale, duration_s=duration_s)
    source_faces()                                        # asset loading is once per process
    wall, cpu = time.perf_counter(), time.process_time()
    sim = simulate(cfg, "s01", "cam0")
    truth = folder / f"{scale}.truth.h5"
    write_synthetic_truth(truth, *truth_arrays(cfg, sim, "s01", "cam0"))
    setup_s = time.perf_counter() - wall
    video = folder / f"{scale}.mp4"
    wall, cpu = time.perf_counter(), time.process_time()
    write_video(cfg, sim, "s01", "cam0", video)           # includes building the static scene
    wall, cpu = time.perf_counter() - wall, time.process_time() - cpu
    n_frames, n_viewers = sim.anim.state.shape
    per_min = 60.0 / duration_s
    return {"scale": scale, "frame": f"{sim.layout.width_px}×{sim.layout.height_px}", "viewers": n_viewers,
            "frames": n_frames, "setup_s": setup_s, "fps": n_frames / wall, "fps_cpu": n_frames / cpu,
            "video_mb_min": video.stat().st_size / 1e6 * per_min,
            "truth_mb_min": truth.stat().st_size / 1e6 * per_min,
            "visible": float((sim.anim.state == 0).mean())}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--full-s", type=float, default=3.0, help="seconds of full-size video to generate")
    parser.add_argument("--small-s", type=float, default=10.0, help="seconds of small video to generate")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        rows = [measure("full", args.full_s, Path(tmp)), measure("small", args.small_s, Path(tmp))]
    print(f"{'scale':<6} {'frame':>10} {'viewers':>7} {'frames':>6} {'setup s':>7} {'gen fps':>7} "
          f"{'fps/cpu':>7} {'video MB/min':>12} {'truth MB/min':>12} {'visible':>7}")
    for r in rows:
        print(f"{r['scale']:<6} {r['frame']:>10} {r['viewers']:>7} {r['frames']:>6} {r['setup_s']:>7.1f} "
              f"{r['fps']:>7.1f} {r['fps_cpu']:>7.1f} {r['video_mb_min']:>12.1f} {r['truth_mb_min']:>12.2f} "
              f"{r['visible']:>7.2f}")


if __name__ == "__main__":
    main()
