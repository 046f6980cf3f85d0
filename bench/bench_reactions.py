"""Reactions recovered end to end: synthetic screenings → every video stage → tensor → models →
report, scored against the known truth (issue 10).

For each expression strength (`synthetic.expression_gain`), one workspace:
`audience run --synthesize` on a held-out synthetic seed (full-size 2750×2200
frames by default, ~95 viewers per session), then `audience evaluate
--protocol completion` and `--protocol factors`, whose report reads the
reactions from the tensor (models/reactions.py). Printed per strength:

* held-out MSE per face of each model ÷ the member-mean baseline's (completion protocol);
* per reaction, the correlation of the report's audience timeline with the true V;
* the models' best-matched learned V columns (mean |corr|, factors protocol);
* true moments found among the report's top moments within ±1 s;
* viewer groups' adjusted Rand index: the report's groups and each model's k-means on U.

    python bench/bench_reactions.py                          # seed 303, 2 × 120 s, full size, gains 1 and 0.5
    python bench/bench_reactions.py --scale small --duration 60 --gains 1   # quick look

The demo (seed 0, small theatre) is development data for models/reactions.py; seed 303 is not.
"""
from __future__ import annotations

import argparse
import json
import subprocess
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))


def audience(*args: str) -> None:
    cmd = [sys.executable, "-m", "pipeline.cli", *args]
    started = time.perf_counter()
    subprocess.run(cmd, check=True, stdout=subprocess.DEVNULL)
    print(f"  {' '.join(args[:3])} … {time.perf_counter() - started:.0f} s", flush=True)


def one_strength(ws: Path, gain: float, args) -> dict:
    common = ["--workspace", str(ws), "--quiet", "--workers", str(args.workers)]
    overrides = [f"synthetic.seed={args.seed}", f"synthetic.duration_s={args.duration}",
                 f"synthetic.sessions={args.sessions}", f"synthetic.expression_gain={gain}",
                 f"synthetic.movie={args.movie}", *args.overrides]
    run = ["run", *common, "--synthesize", *overrides] + (["--small"] if args.scale == "small" else [])
    audience(*run)
    tensor = ws / "tensors" / f"{args.movie}.h5"
    run_dir = ws / "runs" / "bench"
    for protocol in ("completion", "factors"):
        audience("evaluate", "--workspace", str(ws), "--quiet", "--tensor", str(tensor), "--run-dir", str(run_dir),
                 "--protocol", protocol, "train.device=cpu", *args.overrides)
    completion = json.loads((run_dir / "completion" / "results.json").read_text())["rows"]
    factors = model_recovery(ws, tensor, run_dir, args.overrides)
    reactions = json.loads((run_dir / "reactions" / "results.json").read_text())
    summary = json.loads((run_dir / "data_summary.json").read_text())
    return {"gain": gain, "completion": completion, "factors": factors, "reactions": reactions,
            "members": summary["members"], "seconds": summary["time_bins"], "report": str(run_dir / "report.html")}


def model_recovery(ws: Path, tensor: Path, run_dir: Path, overrides=()) -> list[dict]:
    """Per factor model trained by the completion protocol (reused, not refitted): its V columns matched to
    the true V (mean |corr|, Hungarian) and k-means on its U against the true viewer groups (ARI)."""
    import numpy as np
    from sklearn.cluster import KMeans
    from sklearn.metrics import adjusted_rand_score

    from configs.schema import load_config
    from models import registry
    from models.data import completion_split, load_movie
    from models.evaluate import fit_all, member_features, recovery_scores
    from pipeline.tensor_truth import truth_for_tensor

    cfg = load_config(overrides=[f"workspace.root={ws}", "train.device=cpu", "train.progress=false", *overrides])
    ev, movie, truth = cfg.evaluate, load_movie(tensor), truth_for_tensor(tensor)
    if truth is None:
        return []
    train_mask, _ = completion_split(movie.mask, ev.holdout_every, ev.seed)
    split = {"protocol": "completion", "holdout_every": ev.holdout_every, "seed": ev.seed}
    names = tuple(k for k in cfg.models.names if registry.spec(k).factorized)
    rows = []
    for kind, model in fit_all(movie, train_mask, cfg, run_dir / "completion", split, True, names).items():
        u, v = (a.detach().float().cpu().numpy() for a in model.model.latents())
        row = {"model": kind, "v_matched_corr": recovery_scores(v, np.asarray(truth["v"], float))["matched_abs_corr"]}
        known = np.asarray(truth["group"]) >= 0
        if known.sum() > 1:
            groups = np.asarray(truth["group"])[known]
            labels = KMeans(n_clusters=len(np.unique(groups)), n_init=10, random_state=ev.seed).fit_predict(
                member_features(model, u)[known])
            row["group_ari"] = float(adjusted_rand_score(groups, labels))
        rows.append(row)
    return rows


def print_tables(results: list[dict]) -> None:
    for res in results:
        base = next(r["test_mse"] for r in res["completion"] if r["model"] == "member mean")
        rec = res["reactions"].get("recovery", {})
        print(f"\n### expression strength {res['gain']:g}: {res['members']} members × {res['seconds']} s "
              f"({res['report']})\n")
        print("| model | held-out MSE per face | ÷ member mean | matched V |corr| | groups ARI |")
        print("|---|---|---|---|---|")
        factors = {r["model"]: r for r in res["factors"]}
        for row in res["completion"]:
            f = factors.get(row["model"], {})
            print(f"| {row['model']} | {row['test_mse']:.4f} | {row['test_mse'] / base:.3f} | "
                  f"{_num(f.get('v_matched_corr'))} | {_num(f.get('group_ari'))} |")
        print(f"| report (model-free reactions) | | | "
              + ", ".join(f"{k[5:]} {_num(v)}" for k, v in rec.items() if k.startswith("corr_"))
              + f" | {_num(rec.get('groups_ari'))} |")
        print(f"\ntrue moments found within ±1 s: {rec.get('true_moments_found')} of {rec.get('true_moments')}; "
              f"moments reported: {len(res['reactions']['moments'])}")


def _num(value) -> str:
    return "" if value is None else f"{value:.3f}"


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--workspace", type=Path, default=Path("/tmp/bench_reactions"))
    parser.add_argument("--scale", choices=("full", "small"), default="full")
    parser.add_argument("--duration", type=float, default=120.0, help="seconds per session")
    parser.add_argument("--sessions", type=int, default=2)
    parser.add_argument("--seed", type=int, default=303, help="synthetic seed (held out: nothing was tuned on it)")
    parser.add_argument("--gains", default="1,0.5", help="expression strengths, comma-separated")
    parser.add_argument("--movie", default="benchmovie")
    parser.add_argument("--workers", type=int, default=1)
    parser.add_argument("--out", type=Path, default=None, help="also write the results as JSON")
    parser.add_argument("overrides", nargs="*", help="config overrides for every run (section.key=value)")
    args = parser.parse_args(argv)
    results = []
    for gain in (float(g) for g in args.gains.split(",")):
        print(f"expression strength {gain:g}:", flush=True)
        results.append(one_strength(args.workspace / f"gain{gain:g}", gain, args))
    print_tables(results)
    if args.out:
        args.out.write_text(json.dumps(results, indent=1, default=str))
    return 0


if __name__ == "__main__":
    sys.exit(main())
