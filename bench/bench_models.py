"""Accuracy and speed of TF, NLTF and FVAE on a synthetic tensor with a known noise floor.

    python bench/bench_models.py                       # N=100, T=2000 (a few minutes per model on CPU)
    python bench/bench_models.py --members 40 --seconds 300 train.epochs=10   # quick
    python bench/bench_models.py --members 60 --seconds 600 --latent-noise 0.3 --no-longterm   # z_it ~ N(U∘V, σ²)

Prints: the completion table (train / held-out MSE per face, ratios to TF,
NLTF and the noise floor), training and prediction throughput (faces/s), and
long-term prediction at λ = 0.05 and 0.8. Extra arguments are config
overrides (section.key=value); --config adds YAML overlays.

GPU speed (training faces/s, a 16M-face epoch, prediction, CPU vs CUDA) is
bench/bench_gpu.py, which replaced this script's former --paper-epoch mode.
"""
from __future__ import annotations

import argparse
import dataclasses
import json
import tempfile
import time
from pathlib import Path

import numpy as np

from configs.schema import load_config
from models.data import movie_from_tensor
from models.evaluate import completion, longterm
from models.synthetic_tensor import SyntheticSpec, make_synthetic_movie


def accuracy(args, cfg) -> dict:
    spec = SyntheticSpec(n_members=args.members, n_seconds=args.seconds, seed=args.seed,
                         latent_noise=args.latent_noise)
    tensor, truth = make_synthetic_movie(spec)
    movie = movie_from_tensor(tensor)
    run_dir = Path(args.run_dir or tempfile.mkdtemp(prefix="bench_models_"))
    print(f"synthetic N={spec.n_members} T={spec.n_seconds}: {100 * (1 - movie.mask.mean()):.1f}% missing, "
          f"noise floor {truth['noise_floor']:.4f} per face; run folder {run_dir}")
    started = time.perf_counter()
    result = completion(movie, cfg, run_dir)
    rows = {r["model"]: r for r in result["rows"]}
    floor = truth["noise_floor"]
    print(f"\ncompletion ({time.perf_counter() - started:.0f} s)")
    print(f"{'model':<12}{'train MSE':>11}{'held-out':>11}{'/floor':>8}{'fit s':>8}{'train f/s':>11}{'pred f/s':>11}"
          f"  kept")
    for name, r in rows.items():
        metrics = _metrics(run_dir / "completion" / name)
        train_rate = np.mean([m["faces_per_s"] for m in metrics]) if metrics and "faces_per_s" in metrics[0] else np.nan
        print(f"{name:<12}{r['train_mse']:>11.4f}{r['test_mse']:>11.4f}{r['test_mse'] / floor:>8.2f}"
              f"{r.get('fit_s', np.nan):>8.1f}{train_rate:>11.0f}{r.get('predict_faces_per_s', np.nan):>11.0f}"
              f"  {r.get('kept', '')}")
    out = {"noise_floor": floor, "rows": result["rows"]}
    if {"fvae", "tf", "nltf"} <= rows.keys():
        f, t, n = (rows[k]["test_mse"] for k in ("fvae", "tf", "nltf"))
        out["ratios"] = {"fvae/tf": f / t, "fvae/nltf": f / n, "fvae/floor": f / floor}
        print(f"\nFVAE/TF {f / t:.3f} (target ≤ 0.8)   FVAE/NLTF {f / n:.3f} (≤ 0.9)   "
              f"FVAE/floor {f / floor:.3f} (≤ 1.3)")
    if args.longterm:
        lt_cfg = cfg.replace(evaluate=dataclasses.replace(cfg.evaluate, lambdas=(0.05, 0.8)))
        lt = longterm(movie, lt_cfg, run_dir)
        print("\nlong-term prediction (MSE per face on the rest of the movie)")
        for r in lt["rows"]:
            print(f"  λ={r['lambda']:<5} {r['model']:<10} {r['test_mse']:.4f}")
        out["longterm"] = lt["rows"]
    return out


def _metrics(folder: Path) -> list[dict]:
    path = folder / "metrics.jsonl"
    return [json.loads(line) for line in path.read_text().splitlines()] if path.is_file() else []


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--members", type=int, default=100)
    parser.add_argument("--seconds", type=int, default=2000)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--latent-noise", type=float, default=0.0,
                        help="std of per-face noise on z = U∘V (the FVAE's own generative story; 0: none)")
    parser.add_argument("--run-dir", default=None)
    parser.add_argument("--no-longterm", dest="longterm", action="store_false")
    parser.add_argument("--json", default=None, help="also write the results here")
    parser.add_argument("--config", action="append", default=[])
    parser.add_argument("overrides", nargs="*")
    args = parser.parse_args(argv)
    cfg = load_config(args.config, ["train.progress=false", *args.overrides])
    out = accuracy(args, cfg)
    if args.json:
        Path(args.json).write_text(json.dumps(out, indent=1, default=str))


if __name__ == "__main__":
    main()
