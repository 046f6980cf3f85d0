"""Figures (matplotlib, Agg backend, PNG): faces, bars, curves, factor plots."""
from __future__ import annotations

from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
from matplotlib.collections import LineCollection  # noqa: E402
import numpy as np  # noqa: E402

from pipeline.store import atomic_path  # noqa: E402

# iBUG 68-point outline: (first, last, closed)
FACE_PARTS = ((0, 16, False), (17, 21, False), (22, 26, False), (27, 30, False), (31, 35, False),
              (36, 41, True), (42, 47, True), (48, 59, True), (60, 67, True))
COLORS = {"tf": "tab:blue", "nltf": "tab:orange", "fvae": "tab:green", "vae": "tab:purple",
          "member mean": "tab:gray", "time mean": "tab:brown", "mean face": "tab:gray",
          "member + time": "tab:olive",
          "global mean": "black"}


def save(fig, path: Path) -> Path:
    path = Path(path)
    with atomic_path(path) as tmp:
        fig.savefig(tmp, dpi=110, bbox_inches="tight", format="png")
    plt.close(fig)
    return path


def draw_face(ax, face: np.ndarray, color="k", lw=1.0, alpha=1.0) -> None:
    """Draw a (136,) or (68, 2) landmark face as connected outlines, y pointing down."""
    pts = np.asarray(face, dtype=float).reshape(68, 2)
    for first, last, closed in FACE_PARTS:
        idx = list(range(first, last + 1)) + ([first] if closed else [])
        ax.plot(pts[idx, 0], pts[idx, 1], color=color, lw=lw, alpha=alpha)
    ax.set_aspect("equal")
    if not ax.yaxis_inverted():
        ax.invert_yaxis()
    ax.axis("off")


def bar_table(rows: list[dict], path: Path, title: str) -> Path:
    """Train and held-out MSE per model / baseline as grouped bars."""
    names = [r["model"] for r in rows]
    x = np.arange(len(names))
    fig, ax = plt.subplots(figsize=(max(5, 1.1 * len(names)), 3.5))
    ax.bar(x - 0.2, [r.get("train_mse", np.nan) for r in rows], 0.4, label="train (reconstruction)")
    ax.bar(x + 0.2, [r["test_mse"] for r in rows], 0.4, label="held-out (prediction)")
    ax.set_xticks(x, names, rotation=20)
    ax.set_ylabel("MSE per face (sum over 136 coords)")
    ax.set_title(title)
    ax.legend()
    return save(fig, path)


def ksweep_curves(rows: list[dict], path: Path) -> Path:
    fig, axes = plt.subplots(1, 2, figsize=(9, 3.5), sharey=True)
    for kind in sorted({r["model"] for r in rows}):
        sub = sorted((r for r in rows if r["model"] == kind), key=lambda r: r["k"])
        for ax, key in zip(axes, ("train_mse", "test_mse")):
            ax.plot([r["k"] for r in sub], [r[key] for r in sub], "o-", color=COLORS.get(kind), label=kind)
    for ax, title in zip(axes, ("train (reconstruction)", "held-out (prediction)")):
        ax.set_xscale("log", base=2)
        ax.set_xlabel("K")
        ax.set_title(title)
    axes[0].set_ylabel("MSE per face")
    axes[0].legend()
    return save(fig, path)


def longterm_curves(rows: list[dict], path: Path) -> Path:
    fig, ax = plt.subplots(figsize=(5.5, 3.8))
    for name in dict.fromkeys(r["model"] for r in rows):
        sub = [r for r in rows if r["model"] == name]
        ax.plot([r["lambda"] for r in sub], [r["test_mse"] for r in sub], marker="o", label=name,
                color=COLORS.get(name), ls="--" if "mean" in name else "-")
    ax.set_xscale("log")
    ax.set_xlabel("λ: fraction of the movie observed")
    ax.set_ylabel("MSE per face on the rest")
    ax.set_title("Long-term prediction of held-out members")
    ax.legend()
    return save(fig, path)


def training_curves(curves: dict[str, list[dict]], path: Path) -> Path:
    fig, ax = plt.subplots(figsize=(5.5, 3.5))
    lowest = np.inf
    for kind, metrics in curves.items():
        xs = [m.get("epoch", m.get("iteration")) for m in metrics]
        ys = [m.get("loss", m.get("recon")) for m in metrics]
        ax.plot(xs, ys, label=kind, color=COLORS.get(kind))
        lowest = min([lowest, *ys])
    ax.set_xlabel("epoch (ALS iteration for tf)")
    ax.set_ylabel("training loss per face")
    # with a learned σ the Gaussian NLL goes below zero once σ is small: a log axis cannot show it
    ax.set_yscale("log" if lowest > 0 else "symlog")
    ax.legend()
    return save(fig, path)


def face_grid(faces: np.ndarray, path: Path, row_labels: list[str], title: str,
              reference: np.ndarray | None = None) -> Path:
    """faces (R, C, 136) drawn as a grid; the reference face (136,) drawn faintly under each.

    One axes and two line collections for the whole grid: a subplot per face took seconds."""
    n_rows, n_cols = faces.shape[:2]
    pts = np.asarray(faces, dtype=float).reshape(n_rows, n_cols, 68, 2)
    every = pts.reshape(-1, 2) if reference is None else np.vstack([pts.reshape(-1, 2), np.reshape(reference, (68, 2))])
    low, high = np.nanmin(every, 0), np.nanmax(every, 0)
    cell = (high - low) * 1.15                        # one face's box plus a margin
    width = 1.3 * n_cols
    fig, ax = plt.subplots(figsize=(width, width * n_rows * cell[1] / (n_cols * cell[0])))
    mine, under = [], []
    for r in range(n_rows):
        for c in range(n_cols):
            shift = np.array([c, r]) * cell - low
            mine += _outline_segments(pts[r, c] + shift)
            if reference is not None:
                under += _outline_segments(np.reshape(reference, (68, 2)) + shift)
        ax.text(-0.1 * cell[0], (r + 0.45) * cell[1], row_labels[r], ha="right", va="center")
    ax.add_collection(LineCollection(under, colors="0.75", linewidths=0.8))
    ax.add_collection(LineCollection(mine, colors="k", linewidths=0.9))
    ax.set_xlim(-0.05 * cell[0], n_cols * cell[0])
    ax.set_ylim(n_rows * cell[1], -0.05 * cell[1])    # y pointing down, as in the image
    ax.set_aspect("equal")
    ax.axis("off")
    ax.set_title(title)
    return save(fig, path)


def _outline_segments(pts: np.ndarray) -> list[np.ndarray]:
    """The iBUG outline of one (68, 2) face as polylines (FACE_PARTS)."""
    return [pts[list(range(first, last + 1)) + ([first] if closed else [])] for first, last, closed in FACE_PARTS]


def factor_timecourse(v: np.ndarray, path: Path, bin_seconds: float, title: str) -> Path:
    """V (T, K) over the movie, one small panel per latent dimension."""
    k = v.shape[1]
    fig, axes = plt.subplots(k, 1, figsize=(8, 0.8 * k + 0.8), sharex=True, squeeze=False)
    seconds = np.arange(len(v)) * bin_seconds
    for d in range(k):
        axes[d, 0].plot(seconds, v[:, d], lw=0.8)
        axes[d, 0].set_ylabel(f"V{d}", rotation=0, ha="right")
    axes[-1, 0].set_xlabel("movie time (s)")
    fig.suptitle(title)
    return save(fig, path)


def cluster_figure(u_scaled: np.ndarray, labels: np.ndarray, exemplar_faces: np.ndarray,
                   mean_face: np.ndarray, path: Path, title: str) -> Path:
    """Rows of U sorted by cluster (heat map) and each cluster's exemplar face over the mean face."""
    n_clusters = len(exemplar_faces)
    fig = plt.figure(figsize=(3 + 1.6 * n_clusters, 3.4))
    grid = fig.add_gridspec(1, n_clusters + 2)
    ax = fig.add_subplot(grid[0, :2])
    order = np.argsort(labels, kind="stable")
    ax.imshow(u_scaled[order], aspect="auto", cmap="viridis", interpolation="nearest")
    ax.set_xlabel("latent dimension")
    ax.set_ylabel("members (sorted by cluster)")
    for c in range(n_clusters):
        axc = fig.add_subplot(grid[0, c + 2])
        draw_face(axc, mean_face, color="0.75", lw=0.8)
        draw_face(axc, exemplar_faces[c], color=f"C{c}", lw=1.0)
        axc.set_title(f"cluster {c} (n={int((labels == c).sum())})", fontsize=8)
    fig.suptitle(title)
    return save(fig, path)


def _timecode_axis(ax) -> None:
    from matplotlib.ticker import FuncFormatter

    ax.xaxis.set_major_formatter(FuncFormatter(lambda s, _: f"{int(s) // 60}:{int(s) % 60:02d}"))


def reaction_timeline(rx, path: Path, movie: str) -> Path:
    """One panel per reaction: the audience's trimmed-mean departure from each viewer's resting face,
    its 95 % band, each session on the movie clock, and the reported moments."""
    from models.reactions import REACTIONS

    n = len(REACTIONS)
    fig, axes = plt.subplots(n + 1, 1, figsize=(11, 1.55 * n + 1.6), sharex=True, squeeze=False)
    axes = axes[:, 0]
    t = rx.seconds
    for r, (ax, reaction) in enumerate(zip(axes, REACTIONS)):
        lo, hi = rx.level[:, r] - 1.96 * rx.se[:, r], rx.level[:, r] + 1.96 * rx.se[:, r]
        ax.fill_between(t, lo, hi, color=f"C{r}", alpha=0.25, lw=0, label="95 % band")
        ax.plot(t, rx.level[:, r], color=f"C{r}", lw=1.2, label="whole audience")
        for j, (session, level) in enumerate(rx.sessions.items()):
            if len(rx.sessions) > 1:
                ax.plot(t, level[:, r], color="0.35", lw=0.6, ls=("--", ":", "-.")[j % 3], label=f"session {session}")
        for m in rx.moments:
            if m["reaction"] == reaction.name:
                ax.axvline(m["second"], color="k", lw=0.7, alpha=0.6)
                ax.text(m["second"], 1.0, m["timecode"], transform=ax.get_xaxis_transform(), fontsize=7,
                        ha="center", va="bottom")
        ax.axhline(0, color="0.6", lw=0.5)
        ax.set_ylabel(f"{reaction.name}\n(IOD)", rotation=0, ha="right", va="center", fontsize=9)
        ax.grid(alpha=0.3)
    axes[0].legend(fontsize=7, ncol=4, loc="upper left", bbox_to_anchor=(0, 1.45))
    axes[-1].plot(t, rx.present, color="0.3", lw=0.9)
    axes[-1].set_ylabel("viewers\nseen", rotation=0, ha="right", va="center", fontsize=9)
    axes[-1].set_xlabel("movie time (min:s)")
    axes[-1].grid(alpha=0.3)
    _timecode_axis(axes[-1])
    fig.suptitle(f"{movie}: the audience's reactions over the movie. Each curve: how far the faces depart "
                 "from each viewer's resting face,\nin inter-ocular distances (IOD); vertical lines: reported "
                 "moments", fontsize=9, y=1.0)
    fig.tight_layout()
    return save(fig, path)


def moment_faces(faces: np.ndarray, neutral: np.ndarray, labels: list[str], path: Path, gain: float) -> Path:
    """The audience's average face at each moment (black) over its resting face (grey)."""
    n = len(faces)
    fig, axes = plt.subplots(1, n, figsize=(1.6 * n, 2.0), squeeze=False)
    for ax, face, label in zip(axes[0], faces, labels):
        draw_face(ax, neutral, color="0.7", lw=0.8)
        draw_face(ax, neutral + gain * (face - neutral), color="k", lw=0.9)
        ax.set_title(label, fontsize=8)
    fig.suptitle(f"the audience's average face at each moment (black, departures drawn {gain:g}× for visibility) "
                 "over its resting face (grey)", fontsize=8)
    return save(fig, path)
