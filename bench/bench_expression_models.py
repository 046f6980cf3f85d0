"""Expression models of issue 12 against raw landmarks, PCA and a plain VAE, on labelled faces.

The tensor comes from models/independent_tensor.py (a generator no model was written on):
members with their own face geometry (18 identity modes, size), six archetype drives
of the movie rendered non-linearly into visible channels. Each observed face gets an
expression label from its true channels (the largest of happy = max(smile, laugh),
surprise = brow up, frown = brow down, fear, bored = max(yawn, lid)), or neutral when that
largest channel is below 0.3; its intensity is that channel's value.

Members are split: the models, PCA and the SVMs are trained on the faces of the TRAIN
members; every score is measured on the TEST members, whom nothing saw:
- expression accuracy: a linear SVM (scikit-learn LinearSVC on standardized features)
  trained on train members' codes and labels, accuracy on test members' faces;
- held-out triplets: artificial triplets (models.triplets.artificial_triplets, the
  paper's rules) among test members' faces; share with d(ref, +) < d(ref, −);
- identity leakage: a linear SVM told to name the test member from its code, trained on
  half of each test member's faces (alternate seconds), accuracy on the other half
  (chance: 1 / test members);
- training throughput: faces per second per epoch on the CPU (median over epochs).
m2's triplets are artificial triplets among the TRAIN members' faces only.

Tune on one generator seed, report on another: `--seed 1` (tune: γ, epochs, K were chosen
there) and `--seed 2` (report: run once the choices were fixed). Each seed draws another
movie, audience and member split.

    python bench/bench_expression_models.py --seed 2 [--out results.json]
"""
from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
sys.path.insert(1, str(Path(__file__).resolve().parent))

from models import triplets as T  # noqa: E402
from models.config import ModelsConfig, PerceptualConfig, StaticDynamicConfig, TrainConfig  # noqa: E402
from models.data import Normalizer, movie_from_tensor  # noqa: E402
from models.evaluate import submovie  # noqa: E402
from models.independent_tensor import IndependentSpec, make_independent_movie  # noqa: E402
from models.train import fit_model  # noqa: E402

CLASSES = ("neutral", "happy", "surprise", "frown", "fear", "bored")
MODELS = ("vae", "m1", "m2", "sdvae")


def expression_labels(channels: np.ndarray, threshold: float = 0.3) -> tuple[np.ndarray, np.ndarray]:
    """channels (N, T, 7) of models.independent_tensor → labels (N, T) in CLASSES, intensity (N, T)."""
    groups = np.stack([np.maximum(channels[..., 0], channels[..., 1]), channels[..., 2], channels[..., 3],
                       channels[..., 4], np.maximum(channels[..., 5], channels[..., 6])], -1)
    strongest = groups.max(-1)
    return np.where(strongest < threshold, 0, 1 + groups.argmax(-1)), strongest


def linear_svm_accuracy(train_x, train_y, test_x, test_y, seed: int, max_train: int = 6000) -> float:
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler
    from sklearn.svm import LinearSVC

    rng = np.random.default_rng(seed)
    pick = rng.permutation(len(train_x))[:max_train]
    clf = make_pipeline(StandardScaler(), LinearSVC(C=1.0, max_iter=5000, dual="auto", random_state=seed))
    clf.fit(train_x[pick], train_y[pick])
    return float((clf.predict(test_x) == test_y).mean())


def identity_accuracy(codes: np.ndarray, rows: np.ndarray, seed: int) -> float:
    """Name the member from its code: trained on alternate faces of each member, tested on the rest."""
    order = np.zeros(len(rows), np.int64)
    for r in np.unique(rows):
        where = np.flatnonzero(rows == r)
        order[where] = np.arange(len(where))
    first = order % 2 == 0
    return linear_svm_accuracy(codes[first], rows[first], codes[~first], rows[~first], seed)


def static_identification(model, x: torch.Tensor, mask: np.ndarray, seed: int, draws: int = 10) -> float:
    """sdvae's f names the member: per test member, f from `draws` random sets of n_frames of its even
    faces (the gallery, averaged) and of its odd faces (the queries); nearest gallery f = the answer."""
    return _set_identification(lambda sets: model.static(sets)[0], x, mask, model.n_frames, seed, draws)


def _set_identification(embed, x: torch.Tensor, mask: np.ndarray, n_frames: int, seed: int, draws: int) -> float:
    rng = np.random.default_rng(seed)
    gallery, queries, truth = [], [], []
    with torch.no_grad():
        for r in range(len(mask)):
            ts = np.flatnonzero(mask[r])
            halves = (ts[0::2], ts[1::2])
            sets = [torch.stack([x[r, torch.as_tensor(rng.choice(h, n_frames, replace=len(h) < n_frames))]
                                 for _ in range(draws)]) for h in halves]
            gallery.append(embed(sets[0]).mean(0))
            queries.append(embed(sets[1]))
            truth += [r] * draws
    gallery, queries = torch.stack(gallery), torch.cat(queries)
    return float((torch.cdist(queries, gallery).argmin(1).cpu().numpy() == np.asarray(truth)).mean())


def drive_r2(z: np.ndarray, drives: np.ndarray) -> tuple[float, float]:
    """(mean R² of the true drives (M, 6) regressed linearly on z (M, K), mean over drives of the best
    |Pearson r| with one dimension of z)."""
    design = np.column_stack([z, np.ones(len(z))])
    coef, *_ = np.linalg.lstsq(design, drives, rcond=None)
    r2 = 1 - ((drives - design @ coef) ** 2).mean(0) / drives.var(0).clip(1e-12)
    corr = np.nan_to_num(np.corrcoef(drives.T, z.T)[: drives.shape[1], drives.shape[1]:])
    return float(r2.mean()), float(np.abs(corr).max(1).mean())


def train_models(names, movie, models_cfg, train_cfg, folder: Path) -> dict:
    fitted = {}
    for kind in names:
        started = time.perf_counter()
        done = (folder / kind / "checkpoints" / "last").is_file()
        fitted[kind] = fit_model(kind, movie, movie.mask, models_cfg, train_cfg, folder / kind, resume=True)
        print(f"  {kind}: {'loaded' if done else 'trained'} in {time.perf_counter() - started:.1f} s", flush=True)
    return fitted


def codes_of(fitted, landmarks: np.ndarray, mask: np.ndarray) -> np.ndarray:
    """(M, K) code of every face of `mask` (torch.nonzero order) of members the model may never have seen."""
    x = torch.from_numpy(np.nan_to_num(fitted.normalizer.encode(landmarks))).to(fitted.device)
    with torch.no_grad():
        return fitted.model.encode_new(x, torch.from_numpy(mask).to(fitted.device)).float().cpu().numpy()


def run(args) -> dict:
    spec = IndependentSpec(n_members=args.members, n_seconds=args.seconds, seed=args.seed)
    tensor, truth = make_independent_movie(spec, movie=f"independent-{args.seed}")
    movie = movie_from_tensor(tensor)
    labels, intensity = expression_labels(truth["channels"])
    order = np.random.default_rng(args.seed).permutation(movie.n_members)
    n_test = max(2, int(round(args.test_fraction * movie.n_members)))
    test_rows, train_rows = np.sort(order[:n_test]), np.sort(order[n_test:])
    train_movie, test_movie = submovie(movie, train_rows), submovie(movie, test_rows)
    tr_i, tr_t = np.nonzero(train_movie.mask)
    te_i, te_t = np.nonzero(test_movie.mask)
    tr_lab, te_lab = labels[train_rows][tr_i, tr_t], labels[test_rows][te_i, te_t]
    te_int = intensity[test_rows][te_i, te_t]
    print(f"seed {args.seed}: {movie.n_members} members ({len(train_rows)} train, {len(test_rows)} test) × "
          f"{movie.n_seconds} s; {len(tr_i)} train faces, {len(te_i)} test faces; test labels "
          + ", ".join(f"{c} {np.mean(te_lab == n):.2f}" for n, c in enumerate(CLASSES)), flush=True)

    folder = Path(args.workdir or tempfile.mkdtemp(prefix="bench_expr_")) / f"seed{args.seed}"
    folder.mkdir(parents=True, exist_ok=True)
    idx, w = T.artificial_triplets(tr_lab, intensity[train_rows][tr_i, tr_t], args.triplets, seed=args.seed, neutral=0)
    trip_path = T.write_triplets(folder / "train_triplets.csv", T.triplets_from_faces(
        idx, w, train_movie.member_id, tr_i, tr_t, movie.bin_seconds))
    held_idx, _ = T.artificial_triplets(te_lab, te_int, args.triplets, seed=args.seed + 1000, neutral=0)

    models_cfg = ModelsConfig(k=args.k, member_offsets=False, kl_warmup_epochs=args.warmup,
                              perceptual=PerceptualConfig(triplets=str(trip_path), gamma=args.gamma),
                              static_dynamic=StaticDynamicConfig(z_dim=args.z_dim))
    train_cfg = TrainConfig(epochs=args.epochs, validation_every=0, progress=False, seed=args.seed, device="cpu")
    fitted = train_models(args.models, train_movie, models_cfg, train_cfg, folder)

    normalizer = Normalizer.fit(train_movie.landmarks, train_movie.mask)
    raw_tr = normalizer.encode(train_movie.landmarks)[tr_i, tr_t]
    raw_te = normalizer.encode(test_movie.landmarks)[te_i, te_t]
    from sklearn.decomposition import PCA
    pca = PCA(args.k, random_state=args.seed).fit(raw_tr)
    reps = {"raw landmarks (136)": (raw_tr, raw_te), f"PCA ({args.k})": (pca.transform(raw_tr), pca.transform(raw_te))}
    for kind, model in fitted.items():
        dim = model.model.z_dim if kind == "sdvae" else args.k
        reps[f"{kind} ({dim})"] = (codes_of(model, train_movie.landmarks, train_movie.mask),
                                   codes_of(model, test_movie.landmarks, test_movie.mask))
    rows = []
    for name, (z_tr, z_te) in reps.items():
        kind = name.split(" (")[0]
        rate = None
        if kind in fitted:
            rates = [m["faces_per_s"] for m in fitted[kind].metrics if "faces_per_s" in m]
            rate = float(np.median(rates)) if rates else None
        rows.append({"representation": name,
                     "expression_svm_acc": linear_svm_accuracy(z_tr, tr_lab, z_te, te_lab, args.seed),
                     "heldout_triplets_satisfied": T.satisfied(z_te, held_idx),
                     "member_id_acc": identity_accuracy(z_te, te_i, args.seed),
                     "train_faces_per_s": rate})
    static = {}
    drives = (truth["u"][:, None, :] * truth["v"][None])[test_rows][te_i, te_t]          # (M, 6) true r_ikt
    pca_small = PCA(args.z_dim, random_state=args.seed).fit(raw_tr)
    static["PCA z"] = drive_r2(pca_small.transform(raw_te), drives)
    x_raw = torch.from_numpy(np.nan_to_num(normalizer.encode(test_movie.landmarks)))
    static["raw mean face of the frames: NN member ID"] = _set_identification(
        lambda sets: sets.mean(1), x_raw, test_movie.mask, models_cfg.static_dynamic.n_frames, args.seed, 10)
    if "sdvae" in fitted:
        sd = fitted["sdvae"]
        x = torch.from_numpy(np.nan_to_num(sd.normalizer.encode(test_movie.landmarks))).to(sd.device)
        static["sdvae f: NN member ID"] = static_identification(sd.model, x, test_movie.mask, args.seed)
        static["sdvae z"] = drive_r2(reps[f"sdvae ({sd.model.z_dim})"][1], drives)
        if args.figures:
            from models.static_dynamic_vae import figures
            paths = figures(sd, test_movie.landmarks, test_movie.mask, args.figures,
                            bin_seconds=movie.bin_seconds)
            print("figures: " + ", ".join(map(str, paths)))
    return {"seed": args.seed, "static_dynamic": static, "z_dim": args.z_dim, "members": int(movie.n_members), "test_members": int(len(test_rows)),
            "seconds": int(movie.n_seconds), "k": args.k, "epochs": args.epochs, "gamma": args.gamma,
            "warmup": args.warmup, "train_faces": int(len(tr_i)), "test_faces": int(len(te_i)),
            "train_triplets": int(len(idx)), "heldout_triplets": int(len(held_idx)),
            "member_chance": 1.0 / len(test_rows), "rows": rows}


def print_table(res: dict) -> None:
    print(f"\nseed {res['seed']}: K={res['k']}, {res['epochs']} epochs, γ={res['gamma']}, test members "
          f"{res['test_members']} (member chance {res['member_chance']:.3f}), {res['heldout_triplets']} held-out triplets")
    print("| representation | expression SVM acc | held-out triplets satisfied | member-ID acc (leakage) "
          "| train faces/s (CPU) |")
    print("|---|---|---|---|---|")
    for r in res["rows"]:
        rate = "" if r["train_faces_per_s"] is None else f"{r['train_faces_per_s']:,.0f}"
        print(f"| {r['representation']} | {r['expression_svm_acc']:.3f} | {r['heldout_triplets_satisfied']:.3f} | "
              f"{r['member_id_acc']:.3f} | {rate} |")
    sd = res.get("static_dynamic", {})
    if sd:
        print(f"\nstatic/dynamic: f names the member (nearest neighbour, {res['test_members']} test members, sets of "
              f"frames from alternate seconds); z (dim {res['z_dim']}) against the true drives u_i∘v_t")
        print("| measure | value |")
        print("|---|---|")
        for name, value in sd.items():
            if isinstance(value, (list, tuple)):
                print(f"| {name}: R² of the true drives (linear) / mean best abs corr | {value[0]:.3f} / {value[1]:.3f} |")
            else:
                print(f"| {name} | {value:.3f} |")


def factorized_on_code(args) -> dict:
    """The FVAE's factorization on m1's code (m1fvae) against the FVAE: the completion protocol
    (held-out MSE ÷ noise floor) and the factors protocol's recovery of the true U, V and viewer
    groups, with the default configuration (models/evaluate.py, as `audience evaluate`)."""
    from configs.schema import load_config
    from models.evaluate import completion, factors
    from bench_paper_protocols import make_movie

    generator, seed = args.factorized.split(":")
    movie, floor, oracle = make_movie(generator, int(seed), args.fz_members, args.fz_seconds)
    cfg = load_config([], ["models.names=[fvae,m1fvae]", "train.progress=false", "train.device=cpu"])
    run_dir = Path(args.workdir or tempfile.mkdtemp(prefix="bench_expr_")) / f"factorized-{generator}{seed}"
    comp = completion(movie, cfg, run_dir)
    fac = factors(movie, cfg, run_dir)
    rows = []
    for r in comp["rows"]:
        row = {"model": r["model"], "test_over_floor": r["test_mse"] / floor, "kept": r.get("kept", "")}
        row.update({k: v for f in fac["rows"] if f["model"] == r["model"] for k, v in f.items()
                    if k in ("v_r2", "log_u_r2", "group_ari")})
        rows.append(row)
    print(f"\n{generator} movie {seed}: held-out MSE per face ÷ noise floor (oracle {oracle / floor:.3f}); "
          f"recovery of the true V, log U (R²) and viewer groups (ARI of k-means on U)")
    print("| model | held-out ÷ floor | V R² | log U R² | group ARI | kept |")
    print("|---|---|---|---|---|---|")
    for r in rows:
        cells = [f"{r[k]:.3f}" if k in r else "" for k in ("test_over_floor", "v_r2", "log_u_r2", "group_ari")]
        print(f"| {r['model']} | " + " | ".join(cells) + f" | {r['kept']} |")
    return {"factorized": args.factorized, "rows": rows}


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--seed", type=int, default=2, help="generator seed: 1 = tune, 2 = report (default)")
    p.add_argument("--members", type=int, default=48)
    p.add_argument("--seconds", type=int, default=400)
    p.add_argument("--test-fraction", type=float, default=0.25)
    p.add_argument("--k", type=int, default=10, help="latent dimension of every model and of PCA")
    p.add_argument("--epochs", type=int, default=40)
    p.add_argument("--warmup", type=int, default=10, help="KL warm-up epochs (models.kl_warmup_epochs)")
    p.add_argument("--gamma", type=float, default=0.1, help="m2's topological variance γ")
    p.add_argument("--triplets", type=int, default=4000, help="artificial triplets for m2 and for scoring")
    p.add_argument("--z-dim", type=int, default=2, help="sdvae's dynamic latent dimension (the paper: 2)")
    p.add_argument("--models", type=lambda s: tuple(s.split(",")), default=MODELS)
    p.add_argument("--figures", default=None, help="write the sdvae figures (swap f, sweep z, z over time) here")
    p.add_argument("--threads", type=int, default=1, help="torch CPU threads")
    p.add_argument("--workdir", default=None, help="keep the trained models here (resumable)")
    p.add_argument("--out", default=None, help="write the results as JSON")
    p.add_argument("--factorized", default=None, metavar="GENERATOR:SEED",
                   help="instead: the FVAE's factorization on m1's code (m1fvae) vs the FVAE, completion and "
                        "factor recovery on bench_paper_protocols' generator (nltf:1 tune, independent:0 report)")
    p.add_argument("--fz-members", type=int, default=60)
    p.add_argument("--fz-seconds", type=int, default=600)
    args = p.parse_args(argv)
    torch.set_num_threads(args.threads)
    if args.factorized:
        res = factorized_on_code(args)
        if args.out:
            Path(args.out).write_text(json.dumps(res, indent=1, default=str))
        return 0
    res = run(args)
    print_table(res)
    if args.out:
        Path(args.out).write_text(json.dumps(res, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
