"""Triplets of faces (reference, more similar, less similar) for the perceptual VAE's prior (M2).

A triplet file is CSV (data/README.md, "Triplets"): one triplet per line,

    ref_member,ref_second,pos_member,pos_second,neg_member,neg_second,weight

faces named by the tensor's `member_id` and the movie time in seconds (the face of
bin floor(second / bin_seconds)); `pos` is the face judged more similar to `ref`
than `neg`; weight ≥ 0 (1 when unsure). Lines starting with '#' are comments.

Sources of triplets:
- human judgements: `write_question_sheets` draws each question (a reference face and
  two candidates A and B) into PNG sheets and writes `answers.csv` for the labeller to
  fill (A or B; blank or '?' skips); `read_answers` turns it into triplets;
- `artificial_triplets`: from expression labels, as Mikheeva et al. (FG 2018) do: a
  face is closer to one of its own class than to one of another class; within a
  class, closer intensity is closer; a neutral face is closer to an expression than
  an expression of another class is.
"""
from __future__ import annotations

import csv
import math
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from pipeline.store import DataError, atomic_path, write_text_atomic

COLUMNS = ("ref_member", "ref_second", "pos_member", "pos_second", "neg_member", "neg_second", "weight")


@dataclass
class Triplets:
    """M triplets: members (M, 3) str and seconds (M, 3) float of (ref, pos, neg); weight (M,)."""
    members: np.ndarray
    seconds: np.ndarray
    weight: np.ndarray

    def __len__(self) -> int:
        return len(self.weight)

    def subset(self, keep: np.ndarray) -> "Triplets":
        return Triplets(self.members[keep], self.seconds[keep], self.weight[keep])


def read_triplets(path: str | Path) -> Triplets:
    """Read a triplet file; a malformed line is a DataError naming the file, line and fix."""
    path = Path(path)
    if not path.is_file():
        raise DataError(f"triplet file not found: {path}. Set models.perceptual.triplets to a CSV file in the "
                        f"layout of data/README.md ('Triplets'), or train m1 (no triplets).")
    members, seconds, weight = [], [], []
    with open(path, newline="") as handle:
        lines = [(n, line) for n, line in enumerate(handle, 1) if line.strip() and not line.lstrip().startswith("#")]
    if not lines:
        raise DataError(f"{path} holds no triplet (only blank or comment lines).")
    header = [c.strip() for c in next(csv.reader([lines[0][1]]))]
    if header != list(COLUMNS):
        raise DataError(f"{path} line {lines[0][0]}: the header must be {','.join(COLUMNS)} (got {','.join(header)}).")
    for number, line in lines[1:]:
        row = [c.strip() for c in next(csv.reader([line]))]
        try:
            if len(row) != len(COLUMNS):
                raise ValueError(f"{len(row)} fields, expected {len(COLUMNS)}")
            secs = [float(row[1]), float(row[3]), float(row[5])]
            w = float(row[6])
            if not all(math.isfinite(v) and v >= 0 for v in secs + [w]):
                raise ValueError("seconds and weight must be finite and >= 0")
        except ValueError as err:
            raise DataError(f"{path} line {number}: {err} in {line.strip()!r}. Each line is "
                            f"{','.join(COLUMNS)} with seconds and weight numbers >= 0.") from None
        members.append([row[0], row[2], row[4]])
        seconds.append(secs)
        weight.append(w)
    if not weight:
        raise DataError(f"{path} has a header but no triplet.")
    return Triplets(np.asarray(members, dtype=object), np.asarray(seconds, np.float64), np.asarray(weight, np.float32))


def write_triplets(path: str | Path, triplets: Triplets) -> Path:
    lines = [",".join(COLUMNS)]
    for (a, b, c), (sa, sb, sc), w in zip(triplets.members, triplets.seconds, triplets.weight):
        lines.append(f"{a},{sa:g},{b},{sb:g},{c},{sc:g},{float(w):g}")
    write_text_atomic(Path(path), "\n".join(lines) + "\n")
    return Path(path)


def resolve(triplets: Triplets, member_id: np.ndarray, bin_seconds: float, observed: np.ndarray,
            usable: np.ndarray | None = None, source: str = "triplets") -> tuple[np.ndarray, np.ndarray, np.ndarray, int]:
    """Triplet faces as tensor cells: (rows (M', 3), bins (M', 3), weight (M',), dropped).

    A member the tensor does not hold, or a face the tensor did not observe, is a DataError
    naming them and the fix. Triplets with a face that is observed but not `usable` (held out
    for testing or validation) are dropped and counted, so no held-out face is trained on.
    """
    index = {str(m): n for n, m in enumerate(member_id)}
    unknown = sorted({str(m) for m in triplets.members.ravel()} - set(index))
    if unknown:
        raise DataError(f"{source}: {len(unknown)} member(s) are not in the tensor: {', '.join(unknown[:8])}"
                        f"{' …' if len(unknown) > 8 else ''}. Name members by the tensor's member_id (its "
                        f"members: {', '.join(map(str, list(member_id)[:5]))}, …), or leave those triplets out.")
    rows = np.vectorize(lambda m: index[str(m)], otypes=[np.int64])(triplets.members)
    bins = np.floor(triplets.seconds / bin_seconds + 1e-9).astype(np.int64)
    n_t = observed.shape[1]
    outside = bins >= n_t
    seen = np.zeros_like(outside)
    seen[~outside] = observed[rows[~outside], bins[~outside]]
    if not seen.all():
        bad = np.argwhere(~seen)[:5]
        names = ", ".join(f"{triplets.members[r, c]} at {triplets.seconds[r, c]:g} s" for r, c in bad)
        raise DataError(f"{source}: {int((~seen).any(1).sum())} triplet(s) name faces the tensor did not observe "
                        f"(e.g. {names}; the movie has {n_t} bins of {bin_seconds:g} s). Name only observed faces "
                        f"(the tensor's mask), e.g. regenerate the questions from this tensor.")
    keep = np.ones(len(triplets), bool) if usable is None else usable[rows, bins].all(1)
    return rows[keep], bins[keep], triplets.weight[keep], int((~keep).sum())


# ----------------------------------------------------------------------------- artificial triplets


def artificial_triplets(labels: np.ndarray, intensity: np.ndarray, n: int, seed: int = 0,
                        neutral: int | None = None) -> tuple[np.ndarray, np.ndarray]:
    """n triplets (n, 3) of face indices from expression labels (F,) and intensities (F,).

    Three rules, a third each (the paper's artificial triplets): (1) class: ref and pos share
    an expression class, neg has another; (2) intensity: all three share a class and
    |s_ref − s_pos| < |s_ref − s_neg|; (3) neutral: ref has an expression, pos is neutral
    (label `neutral`), neg has another expression. Rules that the labels cannot serve are
    skipped. Returns (indices (n', 3), weight (n',) all 1)."""
    rng = np.random.default_rng(seed)
    labels, intensity = np.asarray(labels), np.asarray(intensity, np.float64)
    classes = [c for c in np.unique(labels) if c != neutral]
    by_class = {c: np.flatnonzero(labels == c) for c in np.unique(labels)}
    if len(classes) < 2:
        raise DataError("artificial triplets need at least two expression classes besides neutral")
    rules = ["class", "intensity"] + (["neutral"] if neutral is not None and neutral in by_class else [])
    out = []
    for r in range(n):
        rule = rules[r % len(rules)]
        c = classes[rng.integers(len(classes))]
        other = [o for o in classes if o != c]
        if rule == "class":
            ref, pos = rng.choice(by_class[c], 2)
            neg = rng.choice(by_class[other[rng.integers(len(other))]])
        elif rule == "neutral":
            ref = rng.choice(by_class[c])
            pos = rng.choice(by_class[neutral])
            neg = rng.choice(by_class[other[rng.integers(len(other))]])
        else:
            ref, a, b = rng.choice(by_class[c], 3)
            da, db = abs(intensity[a] - intensity[ref]), abs(intensity[b] - intensity[ref])
            if da == db:
                continue
            pos, neg = (a, b) if da < db else (b, a)
        if ref != pos:
            out.append((ref, pos, neg))
    idx = np.asarray(out, np.int64).reshape(-1, 3)
    return idx, np.ones(len(idx), np.float32)


def triplets_from_faces(idx: np.ndarray, weight: np.ndarray, member_id: np.ndarray, rows: np.ndarray,
                        bins: np.ndarray, bin_seconds: float) -> Triplets:
    """Triplets over faces (rows[f], bins[f]) → a Triplets table (member ids, bin start seconds)."""
    return Triplets(np.asarray(member_id, dtype=object)[rows[idx]], bins[idx] * float(bin_seconds),
                    np.asarray(weight, np.float32))


def satisfied(z: np.ndarray, idx: np.ndarray) -> float:
    """Share of triplets (n, 3) over rows of z (F, K) with d(ref, pos) < d(ref, neg) (Euclidean)."""
    if len(idx) == 0:
        return float("nan")
    d_pos = np.linalg.norm(z[idx[:, 0]] - z[idx[:, 1]], axis=1)
    d_neg = np.linalg.norm(z[idx[:, 0]] - z[idx[:, 2]], axis=1)
    return float((d_pos < d_neg).mean())


# ----------------------------------------------------------------------------- labelling helper


def write_question_sheets(faces: np.ndarray, questions: Triplets, out_dir: str | Path,
                          per_sheet: int = 12) -> Path:
    """Draw each question as three faces (reference, A, B) in PNG sheets and write answers.csv.

    faces (M, 3, 136): the landmarks of (ref, a, b) of each question (real or decoded faces,
    in any frame with y down). answers.csv holds one row per question, with an empty
    `answer` column: write A or B, the candidate more similar in expression to the reference
    (blank or '?' skips the question). Returns the folder."""
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    n = len(questions)
    for sheet, start in enumerate(range(0, n, per_sheet)):
        stop = min(n, start + per_sheet)
        fig, axes = plt.subplots(stop - start, 3, figsize=(4.5, 1.6 * (stop - start)), squeeze=False)
        for r, q in enumerate(range(start, stop)):
            for c, title in enumerate(("reference", "A", "B")):
                pts = faces[q, c].reshape(68, 2)
                ax = axes[r, c]
                ax.scatter(pts[:, 0], pts[:, 1], s=3, c="k")
                ax.set_aspect("equal")
                ax.invert_yaxis()
                ax.set_xticks([])
                ax.set_yticks([])
                ax.set_title(f"q{q} {title}" if c == 0 else title, fontsize=7)
        fig.tight_layout()
        with atomic_path(out_dir / f"sheet_{sheet:03d}.png") as tmp:
            fig.savefig(tmp, dpi=90, format="png")
        plt.close(fig)
    lines = ["question,ref_member,ref_second,a_member,a_second,b_member,b_second,answer"]
    for q, ((m0, m1, m2), (s0, s1, s2)) in enumerate(zip(questions.members, questions.seconds)):
        lines.append(f"{q},{m0},{s0:g},{m1},{s1:g},{m2},{s2:g},")
    write_text_atomic(out_dir / "answers.csv", "\n".join(lines) + "\n")
    return out_dir


def read_answers(path: str | Path, weight: float = 1.0) -> Triplets:
    """answers.csv filled in (A or B per question) → triplets (ref, chosen, other); skips blanks and '?'."""
    path = Path(path)
    members, seconds = [], []
    with open(path, newline="") as handle:
        for n, row in enumerate(csv.DictReader(handle), 2):
            answer = (row.get("answer") or "").strip().upper()
            if answer in ("", "?"):
                continue
            if answer not in ("A", "B"):
                raise DataError(f"{path} line {n}: answer {answer!r}; write A or B (or leave it blank to skip).")
            a, b = ("a", "b") if answer == "A" else ("b", "a")
            members.append([row["ref_member"], row[f"{a}_member"], row[f"{b}_member"]])
            seconds.append([float(row["ref_second"]), float(row[f"{a}_second"]), float(row[f"{b}_second"])])
    return Triplets(np.asarray(members, dtype=object).reshape(-1, 3), np.asarray(seconds, np.float64).reshape(-1, 3),
                    np.full(len(members), weight, np.float32))
