"""What the audience reacted to, and when: reaction timelines, top moments and viewer groups.

Read straight from the per-movie tensor (frontalized landmarks, canonical face
frame, 1 unit = the mean face's eye-centre distance), so the numbers mean the
same on any tensor and need no trained model:

* four reactions, each a plain geometric measure of the face, named by what
  it moves (see REACTIONS);
* each viewer's resting face is their own median over the movie, so a
  reaction is a departure from how this viewer usually looks (identity and
  seat-specific landmark bias cancel);
* the audience's reaction at a second is a trimmed mean over the viewers seen
  then (gross landmark misfits are the noise's tail), with a 95 % band from the
  trimmed mean's standard error (Tukey–McLaughlin);
* top moments are peaks of a timeline that stand out of its own noise
  (robust z, `robust_z`), merged across reactions within `merge_s`; the
  threshold grows with the movie's length (`moment_threshold`) so that noise
  alone gives a spurious moment in about 1 movie in 20, short or long;
* viewer groups: Gaussian mixtures (scikit-learn) on each viewer's responsiveness to
  each reaction (regression slope of their own deviation on the audience's
  timeline; 1 = a typical viewer), k chosen by BIC.
"""
from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

import numpy as np

from pipeline.store import atomic_path, ensure_dir, write_text_atomic

TRIM = 0.1                 # share trimmed from each end of the viewers at a second
MIN_VIEWERS = 3            # fewer viewers at a second: no audience value there
MIN_SECONDS = 30           # a shorter movie cannot show reactions against their own noise
MIN_FACES_PER_VIEWER = 10  # a viewer's responsiveness needs at least this many faces
MIN_PROMINENCE = 1.0       # a moment's peak rises at least this many noise SDs above the dip to any higher peak
                           # (a wiggle on a reaction's decaying tail is not a new moment)
PEAK_DISTANCE_S = 2.0      # two peaks of one reaction closer than this are one moment
MERGE_S = 1.0              # peaks of different reactions this close are one moment (a laugh also widens
                           # the mouth that second); at 2 s a surprise 2.6 s before a laugh was lost


def _y(p, idx):
    return p[..., idx, 1].mean(-1)


@dataclass(frozen=True)
class Reaction:
    name: str
    moves: str
    measure: Callable[[np.ndarray], np.ndarray]   # (..., 68, 2) → (...)


# iBUG 68 points: 17–26 brows, 33 nose base, 36–47 eyes, 48/54 mouth corners, 50–52 / 61–63 upper lip,
# 56–58 / 65–67 lower lip. y points down. Smile is the mouth's width alone: the corners' height also moves
# when the mouth opens, and on theatre-sized faces the fitted corners drop in every laugh (seed-101
# screening: the width's timeline correlates 0.98 with the true smile, width + corner lift 0.64).
REACTIONS = (
    Reaction("laugh", "mouth opens: lower lip and jaw drop away from the upper lip",
             lambda p: _y(p, [56, 57, 58, 65, 66, 67]) - _y(p, [50, 51, 52, 61, 62, 63])),
    Reaction("smile", "mouth corners pull apart: the mouth widens",
             lambda p: p[..., 54, 0] - p[..., 48, 0]),
    Reaction("surprise", "brows rise above the eyes",
             lambda p: _y(p, list(range(36, 48))) - _y(p, list(range(17, 27)))),
    Reaction("frown", "inner brows knit together",
             lambda p: p[..., 21, 0] - p[..., 22, 0]),
)
NAMES = tuple(r.name for r in REACTIONS)


def expression_measures(landmarks: np.ndarray) -> np.ndarray:
    """(..., 136) canonical faces → (..., R) reaction measures, inter-ocular units (NaN stays NaN)."""
    pts = np.asarray(landmarks, np.float64).reshape(*np.shape(landmarks)[:-1], 68, 2)
    return np.stack([r.measure(pts) for r in REACTIONS], axis=-1)


def deviations(landmarks: np.ndarray, mask: np.ndarray) -> np.ndarray:
    """(N, T, R): each viewer's measures minus their own median over the movie; NaN where unobserved."""
    m = expression_measures(landmarks)
    m[~np.asarray(mask, bool)] = np.nan
    with np.errstate(all="ignore"):
        import warnings
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", RuntimeWarning)
            return m - np.nanmedian(m, axis=1, keepdims=True)


def trimmed_mean_band(values: np.ndarray, trim: float = TRIM, min_n: int = MIN_VIEWERS):
    """values (N, T, R) with NaN → trimmed mean, its standard error and the count, over axis 0.

    SE = winsorized SD / ((1 − 2·trim)·√n) (Tukey & McLaughlin 1963)."""
    n_members, n_t, n_r = values.shape
    mean = np.full((n_t, n_r), np.nan)
    se = np.full((n_t, n_r), np.nan)
    count = np.isfinite(values[..., 0]).sum(0)
    ordered = np.sort(values, axis=0)            # NaN sorts last
    for t in np.flatnonzero(count >= min_n):
        n = count[t]
        x = ordered[:n, t]                          # (n, R), ascending per column
        g = int(np.floor(trim * n))
        core = x[g:n - g]
        mean[t] = core.mean(0)
        wins = np.concatenate([np.repeat(core[:1], g, 0), core, np.repeat(core[-1:], g, 0)])
        se[t] = wins.std(0, ddof=1) / ((1 - 2 * trim) * np.sqrt(n)) if n > 1 else np.nan
    return mean, se, count


def robust_z(series: np.ndarray) -> np.ndarray:
    """(T, R) → how far each value stands above the series' median, in units of the series' own
    second-to-second noise: 1.4826·MAD of its first differences / √2. Reactions rise and fall over
    seconds and are sparse, so the differences' MAD sees the noise, not the reactions (the MAD of the
    values themselves grows with every reaction and hides them in a reactive movie)."""
    med = np.nanmedian(series, axis=0)
    steps = np.diff(series, axis=0)
    noise = 1.4826 * np.nanmedian(np.abs(steps - np.nanmedian(steps, axis=0)), axis=0) / np.sqrt(2)
    noise = np.where(noise > 0, noise, np.nan)
    return (series - med) / noise


def moment_threshold(n_seconds: int, false_alarm: float = 0.05) -> float:
    """z a Gaussian noise timeline exceeds somewhere with probability ≈ false_alarm over the whole
    movie and all reactions (Bonferroni), at least 3."""
    from scipy.stats import norm

    return float(max(3.0, norm.isf(false_alarm / max(1, n_seconds * len(REACTIONS)))))


def timecode(seconds: float) -> str:
    s = int(round(seconds))
    return f"{s // 3600}:{s // 60 % 60:02d}:{s % 60:02d}" if s >= 3600 else f"{s // 60}:{s % 60:02d}"


# ----------------------------------------------------------------------------- moments


def top_moments(level: np.ndarray, z: np.ndarray, dev: np.ndarray, bin_seconds: float,
                min_z: float = 3.0, merge_s: float = MERGE_S, max_moments: int = 10,
                peak_distance_s: float = PEAK_DISTANCE_S) -> list[dict]:
    """Peaks of each reaction's timeline with z ≥ min_z, at least peak_distance_s apart, merged across
    reactions within merge_s (the strongest names the moment, the others are listed), strongest first."""
    from scipy.signal import find_peaks

    gap = max(1, int(round(merge_s / bin_seconds)))
    distance = max(1, int(round(peak_distance_s / bin_seconds)))
    peaks = []
    for r, name in enumerate(NAMES):
        zr = np.nan_to_num(z[:, r], nan=-np.inf)
        idx, _ = find_peaks(np.concatenate([[-np.inf], zr, [-np.inf]]), height=min_z, distance=distance,
                            prominence=MIN_PROMINENCE)
        peaks += [(float(zr[t - 1]), t - 1, r) for t in idx]
    peaks.sort(reverse=True)
    scale = _viewer_noise(dev)
    taken: list[dict] = []
    for zval, t, r in peaks:
        near = next((m for m in taken if abs(m["bin"] - t) <= gap), None)
        if near is not None:
            if NAMES[r] not in near["also"] and NAMES[r] != near["reaction"]:
                near["also"].append(NAMES[r])
            continue
        if len(taken) == max_moments:
            continue
        present = np.isfinite(dev[:, t, r])
        reacting = present & (dev[:, t, r] > 2 * scale[:, r])
        taken.append({"bin": int(t), "second": float(t * bin_seconds), "timecode": timecode(t * bin_seconds),
                      "reaction": NAMES[r], "also": [], "z": zval, "strength": float(level[t, r]),
                      "viewers_reacting": int(reacting.sum()), "viewers_present": int(present.sum())})
    return taken


def _viewer_noise(dev: np.ndarray) -> np.ndarray:
    """(N, R) each viewer's robust spread of each measure around their resting face."""
    import warnings
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)
        return 1.4826 * np.nanmedian(np.abs(dev), axis=1)


# ----------------------------------------------------------------------------- viewer groups


def responsiveness(dev: np.ndarray, level: np.ndarray, min_faces: int = MIN_FACES_PER_VIEWER) -> np.ndarray:
    """(N, R): slope of each viewer's deviation on the audience's timeline (through 0); NaN with too few faces."""
    out = np.full(dev.shape[0::2], np.nan)
    for r in range(dev.shape[2]):
        ok = np.isfinite(dev[:, :, r]) & np.isfinite(level[None, :, r])
        x = np.where(ok, level[None, :, r], 0.0)
        y = np.where(ok, dev[:, :, r], 0.0)
        denom = (x * x).sum(1)
        enough = (ok.sum(1) >= min_faces) & (denom > 0)
        out[enough, r] = (x * y).sum(1)[enough] / denom[enough]
    return out


def viewer_groups(resp: np.ndarray, seed: int = 0, max_groups: int = 4) -> tuple[np.ndarray, float]:
    """Gaussian mixtures (scikit-learn, full covariances) on the responsiveness profiles, the number of
    groups 1..max_groups chosen by BIC, so one group (no structure) is an answer too. Returns labels (N,)
    (−1 for viewers without a profile) and the silhouette of the grouping (NaN for one group).

    BIC, not the silhouette: each reaction's responsiveness has its own noise (and reactions that come
    together, such as laughs and smiles, correlated noise), which the covariances model. On the true
    frontal faces of two synthetic screenings BIC found the 3 true groups in both (ARI 1.0), the best
    k-means silhouette in one (k = 2, ARI 0.56 in the other)."""
    from sklearn.metrics import silhouette_score
    from sklearn.mixture import GaussianMixture

    labels = np.full(len(resp), -1)
    ok = np.isfinite(resp).all(1)
    if ok.sum() < 6:
        return labels, float("nan")
    x = resp[ok]
    fits = [GaussianMixture(k, covariance_type="full", n_init=5, random_state=seed).fit(x)
            for k in range(1, min(max_groups, len(x) // 3) + 1)]
    found = min(fits, key=lambda fit: fit.bic(x)).predict(x)
    score = float(silhouette_score(x, found)) if len(np.unique(found)) > 1 else float("nan")
    order = np.argsort(-np.bincount(found), kind="stable")          # number groups by size, largest first
    labels[ok] = np.argsort(order)[found]
    return labels, score


def describe_groups(resp: np.ndarray, labels: np.ndarray) -> list[str]:
    """One plain sentence per group: its size and the reactions it shows more or less than most."""
    n = int((labels >= 0).sum())
    if n == 0:
        return ["Too few faces per viewer to compare viewers."]
    if labels.max() == 0:
        return [f"No distinct viewer groups: the {n} viewers with enough faces react in similar proportions."]
    out = []
    for g in range(labels.max() + 1):
        members = labels == g
        profile = np.nanmedian(resp[members], axis=0)
        parts = [f"{name} {p:.1f}×" for name, p in zip(NAMES, profile)]
        strongest = NAMES[int(np.argmax(profile))]
        out.append(f"Group {g + 1} ({int(members.sum())} viewers, {100 * members.sum() / n:.0f} %): "
                   f"reacts most with {strongest}; responsiveness against a typical viewer: {', '.join(parts)}.")
    return out


# ----------------------------------------------------------------------------- the analysis


@dataclass
class Reactions:
    seconds: np.ndarray            # (T,) movie seconds at each bin's start
    level: np.ndarray              # (T, R) audience trimmed-mean deviation, inter-ocular units
    se: np.ndarray                 # (T, R)
    z: np.ndarray                  # (T, R)
    present: np.ndarray            # (T,) viewers seen at each second
    sessions: dict                 # session → (T, R) level over that session's viewers
    moments: list                  # top moments (dicts)
    resp: np.ndarray               # (N, R) responsiveness
    groups: np.ndarray             # (N,) group label, −1 none
    silhouette: float
    member_id: np.ndarray
    session_id: np.ndarray
    observed: np.ndarray           # (N,) faces per viewer
    too_little: str | None         # why no reactions can be read, in words (None when they can)


def analyse(landmarks: np.ndarray, mask: np.ndarray, member_id, session_id, bin_seconds: float = 1.0,
            min_z: float | None = None, max_moments: int = 10, seed: int = 0) -> Reactions:
    """The whole reading of one movie tensor (N, T, 136) with its mask (N, T)."""
    mask = np.asarray(mask, bool)
    n, t = mask.shape
    dev = deviations(landmarks, mask)
    level, se, present = trimmed_mean_band(dev)
    z = robust_z(level)
    member_id, session_id = np.asarray(member_id).astype(str), np.asarray(session_id).astype(str)
    sessions = {s: trimmed_mean_band(dev[session_id == s])[0] for s in sorted(set(session_id))}
    too_little = None
    enough = present >= MIN_VIEWERS
    if t * bin_seconds < MIN_SECONDS or enough.sum() * bin_seconds < MIN_SECONDS:
        too_little = (f"This movie has {int(enough.sum())} seconds with at least {MIN_VIEWERS} faces "
                      f"(of {t} s in all): at least {MIN_SECONDS} s are needed to tell reactions from the "
                      "landmark noise, so no reactions are reported.")
    min_z = moment_threshold(t) if min_z is None else min_z
    moments = [] if too_little else top_moments(level, z, dev, bin_seconds, min_z, max_moments=max_moments)
    resp = responsiveness(dev, level)
    groups, sil = (np.full(n, -1), float("nan")) if too_little else viewer_groups(resp, seed)
    return Reactions(np.arange(t) * bin_seconds, level, se, z, present, sessions, moments, resp, groups, sil,
                     member_id, session_id, mask.sum(1), too_little)


def summary_sentences(rx: Reactions) -> list[str]:
    """The report's first paragraph, in plain words."""
    if rx.too_little:
        return [rx.too_little]
    n_viewers = int((rx.observed > 0).sum())
    duration = timecode(len(rx.seconds) * (rx.seconds[1] - rx.seconds[0] if len(rx.seconds) > 1 else 1))
    out = [f"{n_viewers} viewers in {len(rx.sessions)} session(s) over {duration} of the movie."]
    if not rx.moments:
        out.append("No moment stands out of the landmark noise: no reaction of the audience as a whole was "
                   f"strong enough to report (z ≥ {moment_threshold(len(rx.seconds)):.1f} on a reaction timeline).")
        return out
    kinds = {}
    for m in rx.moments:
        kinds[m["reaction"]] = kinds.get(m["reaction"], 0) + 1
    out.append(f"The audience reacted together at {len(rx.moments)} moment(s): "
               + ", ".join(f"{c} × {k}" for k, c in kinds.items()) + ".")
    best = rx.moments[0]
    out.append(f"The strongest: {best['reaction']} at {best['timecode']}, "
               f"{best['viewers_reacting']} of {best['viewers_present']} viewers clearly reacting.")
    return out


# ----------------------------------------------------------------------------- files


def table_rows(rx: Reactions) -> list[dict]:
    """The per-second reactions table (one row per time bin)."""
    rows = []
    for t, sec in enumerate(rx.seconds):
        row = {"second": float(sec), "timecode": timecode(sec), "viewers_present": int(rx.present[t])}
        for r, name in enumerate(NAMES):
            lo, hi = rx.level[t, r] - 1.96 * rx.se[t, r], rx.level[t, r] + 1.96 * rx.se[t, r]
            row.update({name: rx.level[t, r], f"{name}_low95": lo, f"{name}_high95": hi, f"{name}_z": rx.z[t, r]})
        rows.append(row)
    return rows


def member_rows(rx: Reactions) -> list[dict]:
    rows = []
    for i, mid in enumerate(rx.member_id):
        row = {"member_id": str(mid), "session": str(rx.session_id[i]), "faces": int(rx.observed[i]),
               "group": int(rx.groups[i]) + 1 if rx.groups[i] >= 0 else None}
        row.update({f"{name}_responsiveness": rx.resp[i, r] for r, name in enumerate(NAMES)})
        rows.append(row)
    return rows


def _write_csv(rows: list[dict], path: Path) -> Path:
    import csv

    with atomic_path(path) as tmp, open(tmp, "w", newline="") as handle:
        writer = csv.DictWriter(handle, fieldnames=list(rows[0]) if rows else [])
        writer.writeheader()
        for row in rows:
            writer.writerow({k: ("" if v is None or (isinstance(v, float) and not np.isfinite(v)) else
                                 (f"{v:.6g}" if isinstance(v, float) else v)) for k, v in row.items()})
    return path


def _write_parquet(rows: list[dict], path: Path) -> Path:
    import pyarrow as pa
    import pyarrow.parquet as pq

    table = pa.Table.from_pylist([{k: (None if isinstance(v, float) and not np.isfinite(v) else v)
                                   for k, v in row.items()} for row in rows])
    with atomic_path(path) as tmp:
        pq.write_table(table, tmp)
    return path


def moment_faces(landmarks: np.ndarray, mask: np.ndarray, moments: list[dict]) -> tuple[np.ndarray, np.ndarray]:
    """The audience's average face at each moment and its resting face, both (…, 136): each viewer's
    face minus their own median face, averaged over the viewers seen then, added to the average resting
    face (so identities cancel and only the shared expression remains)."""
    import warnings

    x = np.where(np.asarray(mask, bool)[..., None], landmarks, np.nan).astype(np.float64)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)
        rest = np.nanmedian(x, axis=1)                                   # (N, 136)
        neutral = np.nanmean(rest, axis=0)
        faces = [neutral + np.nanmean(x[:, m["bin"]] - rest, axis=0) for m in moments]
    return np.asarray(faces).reshape(len(moments), -1), neutral


def write_outputs(rx: Reactions, folder: Path, movie_name: str, truth: dict | None = None,
                  landmarks: np.ndarray | None = None, mask: np.ndarray | None = None) -> dict:
    """reactions.csv / .parquet (per second), members.csv / .parquet (per viewer), figures and
    results.json in `folder`; returns the results dict the report reads. With the tensor's landmarks
    and mask, also the audience's average face at each moment."""
    from models import plots

    folder = ensure_dir(Path(folder))
    files = {}
    for stem, rows in (("reactions", table_rows(rx)), ("members", member_rows(rx))):
        files[f"{stem}_csv"] = str(_write_csv(rows, folder / f"{stem}.csv"))
        files[f"{stem}_parquet"] = str(_write_parquet(rows, folder / f"{stem}.parquet"))
    figures = []
    if not rx.too_little:
        figures.append(str(plots.reaction_timeline(rx, folder / "timeline.png", movie_name)))
    if rx.moments and landmarks is not None:
        faces, neutral = moment_faces(landmarks, mask, rx.moments)
        labels = [f"{m['timecode']} {m['reaction']}" for m in rx.moments]
        figures.append(str(plots.moment_faces(faces, neutral, labels, folder / "moment_faces.png", gain=3.0)))
    results = {"summary": summary_sentences(rx), "too_little": rx.too_little,
               "moments": rx.moments, "groups": describe_groups(rx.resp, rx.groups),
               "silhouette": rx.silhouette, "reactions": [{"reaction": r.name, "what moves": r.moves}
                                                          for r in REACTIONS],
               "files": files, "figures": figures}
    if truth:
        results["recovery"] = recovery(rx, truth)
    write_text_atomic(folder / "results.json", json.dumps(results, indent=1, default=_json_default))
    return results


def _json_default(value):
    if isinstance(value, (np.integer,)):
        return int(value)
    if isinstance(value, (np.floating,)):
        return float(value)
    raise TypeError(type(value))


# ----------------------------------------------------------------------------- against a known truth

TRUTH_NAMES = {"laugh": "laugh", "smile": "smile", "surprise": "brow_raise", "frown": "frown"}


def recovery(rx: Reactions, truth: dict, within_s: float = 1.0) -> dict:
    """Scores against a synthetic screening's truth: `v` (T, K) with `v_names`, `moments_s`,
    `group` (N,) per tensor row (−1 unknown). Correlation per reaction with its true time course,
    the share of true moments with a reported moment within ±within_s, and the groups' ARI."""
    from sklearn.metrics import adjusted_rand_score

    out: dict = {}
    v, names = np.asarray(truth["v"], float), list(truth["v_names"])
    for r, name in enumerate(NAMES):
        if TRUTH_NAMES[name] in names:
            k = names.index(TRUTH_NAMES[name])
            ok = np.isfinite(rx.level[:, r])
            varies = ok.sum() > 2 and np.std(v[ok, k]) > 0 and np.std(rx.level[ok, r]) > 0
            out[f"corr_{name}"] = float(np.corrcoef(rx.level[ok, r], v[ok, k])[0, 1]) if varies else None
    true_s = np.asarray(truth.get("moments_s", []), float)
    true_s = true_s[(true_s >= 0) & (true_s < len(rx.seconds) * _bin(rx))]
    found = np.array([m["second"] for m in rx.moments])
    if len(true_s):
        hit = [bool(len(found) and np.min(np.abs(found - np.floor(s))) <= within_s) for s in true_s]
        out["true_moments"] = int(len(true_s))
        out["true_moments_found"] = int(sum(hit))
    if "group" in truth:
        g = np.asarray(truth["group"])
        ok = (g >= 0) & (rx.groups >= 0)
        if ok.sum() >= 2:
            out["groups_ari"] = float(adjusted_rand_score(g[ok], rx.groups[ok]))
    return out


def _bin(rx: Reactions) -> float:
    return float(rx.seconds[1] - rx.seconds[0]) if len(rx.seconds) > 1 else 1.0
