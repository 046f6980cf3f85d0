"""The paper's evaluation protocols; each writes a table (Markdown + CSV), a figure and results.json.

  completion  Table 3: per member 1 in 6 observed faces held out; train and held-out MSE
  ksweep      Fig. 5:  the same split for each K; K chosen on held-out error
  longterm    Fig. 9:  20% of members held out; observe a prefix λ of the movie, infer U_i, predict the rest
  factors     Figs. 6–8: latent sweeps drawn as faces, V over the movie, k-means on U,
              and, when the tensor carries the synthetic ground truth, recovery scores

Errors are in the tensor's units: squared error summed over the 136
coordinates of a face, averaged over faces. Models live under
<run_dir>/<protocol>/<model>/ and are reused (resumed) when already trained.
"""
from __future__ import annotations

import contextlib
import csv
import dataclasses
import json
import time
from pathlib import Path

import numpy as np
import torch
from scipy.optimize import linear_sum_assignment
from sklearn.cluster import KMeans
from sklearn.metrics import adjusted_rand_score

from models import checkpoint as ckpt
from models import plots, registry
from models.data import Movie, completion_split, member_split, mse_per_face, prefix_split
from models.train import Fitted, discard_checkpoints, fit_model, supported_k
from pipeline.store import write_text_atomic

PROTOCOLS = ("completion", "ksweep", "longterm", "factors")


# ----------------------------------------------------------------------------- tables


def write_table(rows: list[dict], folder: Path, name: str, title: str) -> Path:
    """rows → <name>.csv and <name>.md (floats to 4 significant digits); returns the .md path."""
    folder = Path(folder)
    columns = list(dict.fromkeys(k for r in rows for k in r))
    fmt = lambda v: f"{v:.4g}" if isinstance(v, float) else str(v)  # noqa: E731
    md = [f"### {title}", "", "| " + " | ".join(columns) + " |", "|" + "---|" * len(columns)]
    md += ["| " + " | ".join(fmt(r.get(c, "")) for c in columns) + " |" for r in rows]
    write_text_atomic(folder / f"{name}.md", "\n".join(md) + "\n")
    lines = [",".join(columns)] + [",".join(fmt(r.get(c, "")) for c in columns) for r in rows]
    write_text_atomic(folder / f"{name}.csv", "\n".join(lines) + "\n")
    return folder / f"{name}.md"


def write_results(folder: Path, results: dict) -> None:
    write_text_atomic(Path(folder) / "results.json", json.dumps(results, indent=1, default=_json_default))


def _json_default(value):
    if isinstance(value, (np.floating, np.integer)):
        return value.item()
    if isinstance(value, (Path, np.ndarray)):
        return str(value) if isinstance(value, Path) else value.tolist()
    return str(value)


# ----------------------------------------------------------------------------- baselines


def member_mean_faces(landmarks: np.ndarray, mask: np.ndarray) -> np.ndarray:
    """(N, 136) mean face per member over `mask` cells; the overall mean where a member has none."""
    counts = mask.sum(1, keepdims=True)
    sums = np.where(mask[:, :, None], landmarks, 0.0).sum(1, dtype=np.float64)
    overall = sums.sum(0) / max(counts.sum(), 1)
    return np.where(counts > 0, sums / np.maximum(counts, 1), overall)


def time_mean_faces(landmarks: np.ndarray, mask: np.ndarray) -> np.ndarray:
    """(T, 136) mean face per second over `mask` cells; the overall mean where a second has none."""
    return member_mean_faces(landmarks.transpose(1, 0, 2), mask.T)


def member_plus_time_faces(landmarks: np.ndarray, mask: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """The additive baseline face_it = m_i + r_t over `mask` cells: (member means m (N, 136),
    per-second means r (T, 136) of what the member means leave; 0 for a second with no face)."""
    means = member_mean_faces(landmarks, mask)
    counts = mask.sum(0)[:, None]
    sums = np.where(mask[:, :, None], landmarks - means[:, None], 0.0).sum(0, dtype=np.float64)
    return means, np.where(counts > 0, sums / np.maximum(counts, 1), 0.0)


def baseline_rows(movie: Movie, train_mask: np.ndarray, test_mask: np.ndarray) -> list[dict]:
    """Member mean, time mean and their additive combination (member + time) on train and test cells."""
    ii, tt = np.nonzero(test_mask)
    tr_i, tr_t = np.nonzero(train_mask)
    members, seconds = member_plus_time_faces(movie.landmarks, train_mask)
    rows = []
    for name, predict in (("member mean", lambda i, t: members[i]),
                          ("time mean", lambda i, t: time_mean_faces(movie.landmarks, train_mask)[t]),
                          ("member + time", lambda i, t: members[i] + seconds[t])):
        rows.append({"model": name, "train_mse": mse_per_face(predict(tr_i, tr_t), movie.landmarks[tr_i, tr_t]),
                     "test_mse": mse_per_face(predict(ii, tt), movie.landmarks[ii, tt])})
    return rows


# ----------------------------------------------------------------------------- completion


def fit_all(movie: Movie, train_mask: np.ndarray, cfg, folder: Path, split: dict, resume: bool = True,
            names: tuple[str, ...] | None = None) -> dict[str, Fitted]:
    """Fit (or load, when already trained under folder/<model>) every model in models.names; resume=False
    refits from scratch, discarding what folder/<model> held. With workspace.executor ray the models train
    as Ray tasks, one each, in their own folders, and are then loaded here."""
    kinds = tuple(names or cfg.models.names)
    if not resume:
        for kind in kinds:
            discard_checkpoints(Path(folder) / kind)
    executor = _executor(cfg) if len(kinds) > 1 else None
    if executor:
        try:
            executor.map(_train_one, [(kind, movie, train_mask, cfg, Path(folder) / kind, split) for kind in kinds])
        finally:
            executor.close()
    return {kind: _fit_one(kind, movie, train_mask, cfg, Path(folder) / kind, split) for kind in kinds}


def _fit_one(kind: str, movie: Movie, train_mask: np.ndarray, cfg, folder: Path, split: dict) -> Fitted:
    """One model fitted, resumed or reused in its folder, saying which."""
    print(f"[models] {kind}: {_fit_state(folder, cfg.train, True)} ({int(train_mask.sum())} training faces) → {folder}")
    return fit_model(kind, movie, train_mask, cfg.models, cfg.train, folder, resume=True, split=split)


def _train_one(*args) -> None:
    """_fit_one as a Ray task: the model stays in its folder, where fit_all then finds it."""
    _fit_one(*args)


def _fit_state(folder: Path, train_cfg, resume: bool) -> str:
    """What fit_model is about to do in `folder`: fit, resume an unfinished run, or reuse a finished one."""
    if not resume or not (folder / "checkpoints" / "last").is_file():
        return "fitting"
    saved = ckpt.load_last(folder / "checkpoints")
    done = saved is not None and (registry.spec(saved["kind"]).trainer == "als" or saved.get("stopped") or saved["epoch"] >= train_cfg.epochs)
    return "reusing the trained model" if done else "resuming"


def score_cells(fitted: Fitted, movie: Movie, mask: np.ndarray, batch_size: int) -> tuple[float, float]:
    """(MSE per face, prediction faces/s) of the model's prediction f(U_i∘V_t) on `mask` cells."""
    ii, tt = np.nonzero(mask)
    started = time.perf_counter()
    pred = fitted.predict(ii, tt, batch_size)
    rate = len(ii) / max(time.perf_counter() - started, 1e-9)
    return mse_per_face(pred, movie.landmarks[ii, tt]), rate


def reconstruction_mse(fitted: Fitted, movie: Movie, mask: np.ndarray, batch_size: int) -> float | None:
    """Encode-decode error for models with an encoder (FVAE, VAE): the VAE-style reconstruction;
    None for a model without one (its reconstruct() returns None)."""
    ii, tt = np.nonzero(mask)
    out = []
    with torch.no_grad():
        for s in range(0, len(ii), batch_size):
            rows = ii[s:s + batch_size]
            x = torch.from_numpy(fitted.encode(movie.landmarks[rows, tt[s:s + batch_size]], rows))
            members = torch.as_tensor(rows, device=fitted.device, dtype=torch.long)
            recon = fitted.model.reconstruct(x.to(fitted.device), members)
            if recon is None:
                return None
            out.append(fitted.decode(recon, rows))
    return mse_per_face(np.concatenate(out), movie.landmarks[ii, tt]) if out else None


def kept_model(fitted: Fitted) -> str:
    """Which fit was kept on the validation faces: 'epoch 7 of 19' (torch models), 'ridge 0.1' (TF)."""
    last = fitted.metrics[-1] if fitted.metrics else {}
    if "best_epoch" in last:
        return f"epoch {last['best_epoch']} of {last.get('epoch', '?')}"
    if "ridge" in last:
        return f"ridge {last['ridge']:g}"
    return f"epoch {last['epoch']}" if "epoch" in last else ""


def completion(movie: Movie, cfg, run_dir: Path, resume: bool = True) -> dict:
    """Paper Table 3 on this movie; writes <run_dir>/completion/{table.md,table.csv,completion.png}."""
    ev, folder = cfg.evaluate, Path(run_dir) / "completion"
    train_mask, test_mask = completion_split(movie.mask, ev.holdout_every, ev.seed)
    split = {"protocol": "completion", "holdout_every": ev.holdout_every, "seed": ev.seed}
    fitted = fit_all(movie, train_mask, cfg, folder, split, resume)
    rows = []
    for kind, model in fitted.items():
        train_mse, _ = score_cells(model, movie, train_mask, ev.batch_size)
        test_mse, rate = score_cells(model, movie, test_mask, ev.batch_size)
        row = {"model": kind, "train_mse": train_mse, "test_mse": test_mse,
               "fit_s": round(sum(m.get("seconds", 0.0) for m in model.metrics), 2),
               "predict_faces_per_s": round(rate), "kept": kept_model(model)}
        recon = reconstruction_mse(model, movie, train_mask, ev.batch_size)
        if recon is not None:
            row["autoencoder_recon_mse"] = recon
        rows.append(row)
    rows += baseline_rows(movie, train_mask, test_mask)
    noise_floor = movie.attrs.get("noise_floor")
    table = write_table(rows, folder, "table", "Matrix completion (paper Table 3): MSE per face")
    figure = plots.bar_table(rows, folder / "completion.png", f"Matrix completion — {movie.name}")
    curves = plots.training_curves({k: f.metrics for k, f in fitted.items()}, folder / "training_curves.png")
    results = {"rows": rows, "table": table, "figures": [figure, curves],
               "train_faces": int(train_mask.sum()), "test_faces": int(test_mask.sum()),
               "noise_floor": noise_floor}
    write_results(folder, results)
    return results


# ----------------------------------------------------------------------------- K sweep


def ksweep(movie: Movie, cfg, run_dir: Path, resume: bool = True) -> dict:
    """Paper Fig. 5: train and held-out MSE against K for each model; best K on held-out error."""
    ev, folder = cfg.evaluate, Path(run_dir) / "ksweep"
    train_mask, test_mask = completion_split(movie.mask, ev.holdout_every, ev.seed)
    split = {"protocol": "completion", "holdout_every": ev.holdout_every, "seed": ev.seed}
    train_cfg = cfg.train if ev.ksweep_epochs is None else dataclasses.replace(cfg.train, epochs=ev.ksweep_epochs)
    too_large = [k for k in ev.ks if k > supported_k(train_mask)]
    if too_large:
        print(f"[models] ksweep: skipping K = {too_large}: more than the {supported_k(train_mask)} this tensor "
              f"supports (members and seconds with training faces)")
    at_k = _fitted_here(cfg)        # a K's models train in its own task, not as tasks of their own
    jobs = [(movie, at_k.replace(models=dataclasses.replace(cfg.models, k=k), train=train_cfg), folder / f"k{k:03d}",
             split, resume, train_mask, test_mask) for k in ev.ks if k not in too_large]
    executor = _executor(cfg)       # with workspace.executor ray, one Ray task per K
    try:
        per_k = executor.map(_ksweep_point, jobs) if executor else [_ksweep_point(*job) for job in jobs]
    finally:
        if executor:
            executor.close()
    rows = [row for k_rows in per_k for row in k_rows]
    best = {kind: min((r for r in rows if r["model"] == kind), key=lambda r: r["test_mse"])["k"]
            for kind in dict.fromkeys(r["model"] for r in rows)}
    table = write_table(rows, folder, "table", f"K sweep (paper Fig. 5); best K on held-out error: {best}")
    figure = plots.ksweep_curves(rows, folder / "ksweep.png")
    results = {"rows": rows, "best_k": best, "table": table, "figures": [figure], "skipped_k": too_large}
    write_results(folder, results)
    return results


def _ksweep_point(movie: Movie, cfg_k, folder: Path, split: dict, resume: bool, train_mask: np.ndarray,
                  test_mask: np.ndarray) -> list[dict]:
    """Every model fitted at one K (its own folder): train and held-out MSE."""
    ev = cfg_k.evaluate
    return [{"model": kind, "k": cfg_k.models.k, "train_mse": score_cells(model, movie, train_mask, ev.batch_size)[0],
             "test_mse": score_cells(model, movie, test_mask, ev.batch_size)[0]}
            for kind, model in fit_all(movie, train_mask, cfg_k, folder, split, resume).items()]


def _fitted_here(cfg):
    """cfg with the local executor (a Ray task does not fan out again)."""
    workspace = getattr(cfg, "workspace", None)
    return cfg if workspace is None else cfg.replace(workspace=dataclasses.replace(workspace, executor="local"))


def _executor(cfg):
    """The Ray executor when the config asks for one (workspace.executor), else None (fit here)."""
    workspace = getattr(cfg, "workspace", None)
    if workspace is None or workspace.executor != "ray":
        return None
    from pipeline.ray_executor import executor_for

    return executor_for(cfg)


# ----------------------------------------------------------------------------- long-term prediction


@contextlib.contextmanager
def frozen(model):
    """Temporarily stop gradients into a model's own parameters (TF has none)."""
    params = [p for p in model.parameters() if p.requires_grad]
    for p in params:
        p.requires_grad_(False)
    try:
        yield
    finally:
        for p in params:
            p.requires_grad_(True)


def infer_members(fitted: Fitted, x_norm: np.ndarray, seen: np.ndarray, steps: int, lr: float,
                  rounds: int = 3) -> tuple[torch.Tensor, np.ndarray | None]:
    """(codes, offsets) of NEW members from their seen faces only, everything else frozen.

    x_norm: (R, T, 136) normalized faces (fitted.normalizer.encode), NaN or anything where
    not seen. Without member offsets this is infer_codes, with offsets None. With them,
    the offset starts as the shrunk mean of the seen faces (MemberOffsets.estimate; the
    audience's average for a member seen for no second), the codes are inferred on the
    faces minus it, and for `rounds` − 1 more rounds the offset is re-estimated from what
    the codes leave unexplained (so a prefix spent laughing does not move the member's
    neutral face) and the codes inferred again.
    """
    if fitted.offsets is None:
        return infer_codes(fitted, x_norm, seen, steps, lr), None
    x_norm = np.where(seen[:, :, None], np.nan_to_num(x_norm), 0.0).astype(np.float32)
    offsets = fitted.offsets.estimate(x_norm, seen)
    rounds = max(1, rounds)
    for step in range(rounds):
        codes = infer_codes(fitted, x_norm - offsets[:, None], seen, steps, lr)
        if step == rounds - 1 or not seen.any():
            break
        ii, tt = np.nonzero(seen)
        with torch.no_grad():
            expression = fitted.model.predict_rows(codes[torch.as_tensor(ii, device=fitted.device)],
                                                   torch.as_tensor(tt, device=fitted.device)).float().cpu().numpy()
        resid = np.zeros_like(x_norm)
        resid[ii, tt] = x_norm[ii, tt] - expression
        offsets = fitted.offsets.estimate(resid, seen)
    return codes, offsets


def infer_codes(fitted: Fitted, x_norm: np.ndarray, seen: np.ndarray, steps: int, lr: float) -> torch.Tensor:
    """Per-member codes of NEW members from their seen faces, everything else frozen.

    x_norm is what the model fits: normalized faces, minus the members' offsets when the
    model uses them (infer_members handles the offsets).

    Each model infers its own codes (models.registry.FactorModel.infer_codes): TF by
    ridge-regularized non-negative least squares for U; NLTF/FVAE by MAP of log U
    under a normal prior fitted to the training members' log U (their mean and
    covariance: Factors.log_u_prior_precision; a member seen for no second at all gets
    the mean); the VAE as the mean encoder latent of the seen faces.
    """
    x = torch.from_numpy(np.nan_to_num(x_norm)).to(fitted.device)
    mask = torch.from_numpy(seen).to(fitted.device)
    return fitted.model.infer_codes(x, mask, steps, lr)


def submovie(movie: Movie, rows: np.ndarray) -> Movie:
    return dataclasses.replace(movie, landmarks=movie.landmarks[rows], mask=movie.mask[rows],
                               member_id=movie.member_id[rows], session_id=movie.session_id[rows])


def longterm(movie: Movie, cfg, run_dir: Path, resume: bool = True) -> dict:
    """Paper Fig. 9: error on the rest of the movie after observing its first λ, per model."""
    ev, folder = cfg.evaluate, Path(run_dir) / "longterm"
    train_rows, test_rows = member_split(movie.n_members, ev.test_member_fraction, ev.seed)
    train_movie = submovie(movie, train_rows)
    split = {"protocol": "longterm", "test_member_fraction": ev.test_member_fraction, "seed": ev.seed}
    fitted = fit_all(train_movie, train_movie.mask, cfg, folder, split, resume)
    test_lm, test_mask = movie.landmarks[test_rows], movie.mask[test_rows]
    time_mean = time_mean_faces(train_movie.landmarks, train_movie.mask)
    _, per_second = member_plus_time_faces(train_movie.landmarks, train_movie.mask)
    rows = []
    for lam in ev.lambdas:
        seen, rest, t_cut = prefix_split(test_mask, lam)
        ii, tt = np.nonzero(rest)
        target = test_lm[ii, tt]
        for kind, model in fitted.items():
            codes, offsets = infer_members(model, model.normalizer.encode(test_lm), seen, ev.infer_steps,
                                           ev.infer_lr)
            pred = model.predict_rows(codes, ii, tt, ev.batch_size, offsets=offsets)
            rows.append({"model": kind, "lambda": lam, "t_cut": t_cut, "test_mse": mse_per_face(pred, target)})
        prefix_mean = member_mean_faces(test_lm, seen)
        if not seen.any():
            prefix_mean[:] = member_mean_faces(train_movie.landmarks, train_movie.mask).mean(0)
        rows.append({"model": "mean face", "lambda": lam, "t_cut": t_cut,
                     "test_mse": mse_per_face(prefix_mean[ii], target)})
        rows.append({"model": "time mean", "lambda": lam, "t_cut": t_cut,
                     "test_mse": mse_per_face(time_mean[tt], target)})
        own = member_mean_faces(test_lm - per_second[None], seen)      # member effect net of the seconds seen
        if not seen.any():
            own[:] = member_mean_faces(train_movie.landmarks, train_movie.mask).mean(0)
        rows.append({"model": "member + time", "lambda": lam, "t_cut": t_cut,
                     "test_mse": mse_per_face(own[ii] + per_second[tt], target)})
    table = write_table(rows, folder, "table", "Long-term prediction (paper Fig. 9): MSE per face on the "
                        "unobserved rest of the movie")
    figure = plots.longterm_curves(rows, folder / "longterm.png")
    results = {"rows": rows, "table": table, "figures": [figure], "train_members": len(train_rows),
               "test_members": len(test_rows)}
    write_results(folder, results)
    return results


# ----------------------------------------------------------------------------- factors


def latent_sweep(fitted: Fitted, z_obs: np.ndarray, points: int) -> tuple[np.ndarray, np.ndarray]:
    """Faces (K, points, 136) varying one latent dimension at a time around the median latent."""
    centre = np.median(z_obs, axis=0)
    grid = []
    for d in range(z_obs.shape[1]):
        z = np.repeat(centre[None], points, axis=0)
        z[:, d] = np.quantile(z_obs[:, d], np.linspace(0.02, 0.98, points))
        grid.append(z)
    z_all = torch.from_numpy(np.concatenate(grid)).float().to(fitted.device)
    with torch.no_grad():
        faces = fitted.normalizer.decode(fitted.model.decode_latent(z_all)).cpu().numpy()
        ref = fitted.normalizer.decode(fitted.model.decode_latent(
            torch.from_numpy(centre[None]).float().to(fitted.device))).cpu().numpy()[0]
    return faces.reshape(z_obs.shape[1], points, -1), ref


def member_features(fitted: Fitted, u: np.ndarray) -> np.ndarray:
    """Rows of U on a scale fit for k-means: log U for the log-normal models, U for TF; columns standardized."""
    feats = np.log(np.clip(u, 1e-12, None)) if fitted.spec.log_codes else u
    return (feats - feats.mean(0)) / feats.std(0).clip(1e-9)


def recovery_scores(learned: np.ndarray, true: np.ndarray) -> dict:
    """How well learned factors (R, K) span true ones (R, K*): linear R² and matched |corr|."""
    design = np.column_stack([learned, np.ones(len(learned))])
    coef, *_ = np.linalg.lstsq(design, true, rcond=None)
    resid = true - design @ coef
    r2 = 1 - resid.var(0) / true.var(0).clip(1e-12)
    corr = np.abs(np.corrcoef(true.T, learned.T)[: true.shape[1], true.shape[1]:])
    corr = np.nan_to_num(corr)
    rows, cols = linear_sum_assignment(-corr)
    return {"r2": float(r2.mean()), "matched_abs_corr": float(corr[rows, cols].sum() / true.shape[1])}


def factors(movie: Movie, cfg, run_dir: Path, resume: bool = True) -> dict:
    """Paper Figs. 6–8 for each factor model trained by the completion protocol (trained here if absent)."""
    ev, folder = cfg.evaluate, Path(run_dir) / "factors"
    train_mask, _ = completion_split(movie.mask, ev.holdout_every, ev.seed)
    split = {"protocol": "completion", "holdout_every": ev.holdout_every, "seed": ev.seed}
    names = tuple(k for k in cfg.models.names if registry.spec(k).factorized)
    fitted = fit_all(movie, train_mask, cfg, Path(run_dir) / "completion", split, resume, names)
    truth = {k: movie.extra[k] for k in ("true_u", "true_v", "true_group") if k in movie.extra}
    figures, scores = [], []
    for kind, model in fitted.items():
        u, v = (a.detach().float().cpu().numpy() for a in model.model.latents())
        ii, tt = np.nonzero(train_mask)
        pick = np.random.default_rng(ev.seed).choice(len(ii), size=min(20000, len(ii)), replace=False)
        sweep, ref = latent_sweep(model, u[ii[pick]] * v[tt[pick]], ev.sweep_points)
        figures.append(plots.face_grid(sweep, folder / f"{kind}_latent_sweep.png",
                                       [f"z{d}" for d in range(len(sweep))],
                                       f"{kind}: decoding a sweep along each latent dimension (grey: median latent)",
                                       reference=ref))
        figures.append(plots.factor_timecourse(v, folder / f"{kind}_v_over_time.png", movie.bin_seconds,
                                               f"{kind}: V_t over the movie"))
        feats = member_features(model, u)
        n_clusters = min(ev.clusters, len(u))
        km = KMeans(n_clusters=n_clusters, n_init=10, random_state=ev.seed).fit(feats)
        exemplars = [int(np.argmin(((feats - c) ** 2).sum(1) + 1e18 * (km.labels_ != j)))
                     for j, c in enumerate(km.cluster_centers_)]
        figures.append(plots.cluster_figure(feats, km.labels_, _expressive_faces(model, exemplars, movie.n_seconds),
                                            model.normalizer.mean, folder / f"{kind}_clusters.png",
                                            f"{kind}: k-means on U ({n_clusters} clusters) and exemplars"))
        row = {"model": kind, "kept": kept_model(model), "clusters": n_clusters}
        if truth:
            row.update(_truth_scores(model, u, v, feats, truth, ev.seed))
        scores.append(row)
    table = write_table(scores, folder, "table", "Factors: clusters, and recovery of the synthetic ground truth "
                        "(when the tensor carries true_u / true_v / true_group)")
    results = {"rows": scores, "table": table, "figures": figures}
    write_results(folder, results)
    return results


def _expressive_faces(fitted: Fitted, members: list[int], n_seconds: int) -> np.ndarray:
    """Each member's strongest predicted expression (the second where its predicted face departs most
    from its own mean over the movie), drawn on the audience's mean face so that clusters show
    reactions rather than face shapes."""
    out = []
    for i in members:
        faces = fitted.predict(np.full(n_seconds, i), np.arange(n_seconds))
        own = faces.mean(0)
        out.append(faces[np.argmax(((faces - own) ** 2).sum(1))] - own + fitted.normalizer.mean)
    return np.stack(out)


def _truth_scores(fitted: Fitted, u: np.ndarray, v: np.ndarray, feats: np.ndarray, truth: dict, seed: int) -> dict:
    out = {}
    if "true_v" in truth and len(truth["true_v"]) == len(v):
        s = recovery_scores(v, np.asarray(truth["true_v"], dtype=float))
        out.update(v_r2=s["r2"], v_matched_corr=s["matched_abs_corr"])
    if "true_u" in truth and len(truth["true_u"]) == len(u):
        learned = np.log(np.clip(u, 1e-12, None)) if fitted.spec.log_codes else u
        s = recovery_scores(learned, np.log(np.asarray(truth["true_u"], dtype=float)))
        out.update(log_u_r2=s["r2"], u_matched_corr=s["matched_abs_corr"])
    if "true_group" in truth and len(truth["true_group"]) == len(u):
        groups = np.asarray(truth["true_group"])
        n_true = len(np.unique(groups))
        labels = KMeans(n_clusters=min(n_true, len(u)), n_init=10, random_state=seed).fit_predict(feats)
        out["group_ari"] = float(adjusted_rand_score(groups, labels))
    return out


def run_protocols(protocols: list[str], movie: Movie, cfg, run_dir: Path, resume: bool = True) -> dict:
    table = {"completion": completion, "ksweep": ksweep, "longterm": longterm, "factors": factors}
    out = {}
    for name in protocols:
        if name not in table:
            raise ValueError(f"unknown protocol '{name}'; choose from {', '.join(PROTOCOLS)} or all")
        out[name] = table[name](movie, cfg, run_dir, resume)
    return out


def read_csv(path: Path) -> list[dict]:
    with open(path, newline="") as handle:
        return list(csv.DictReader(handle))
