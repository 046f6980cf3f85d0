"""The per-movie tensor as the models see it: checks, normalization, splits, device batches.

Policy for members with no observed face at all: they are dropped with a
warning (nothing can be fitted for them) and listed in the data summary; a
movie left with no observed face is an error.

Normalization: subtract the per-coordinate mean of the training faces and
divide by ONE global scale (the RMS of the centred training coordinates). A
single scale keeps face geometry and makes the training loss proportional to
the reported error, which is in the tensor's own units (sum over the 136
coordinates per face, averaged over faces, as in the paper).

Member offsets (models.member_offsets, on by default): each member's own face
shape (identity) usually carries more variance than their expressions, and a
rank-K factorization cannot spend its K factors on dozens of distinct mean
faces. So each member's offset (their mean training face) is subtracted before
fitting (the faces held back for validation excluded), stored with the model and
added back in every prediction; the models
then fit expressions around each member's own face. A new member's offset
(long-term prediction) comes from its observed faces only, shrunk toward the
audience's average by an empirical-Bayes weight. With offsets on, the global
scale is the RMS of what the models fit (faces minus their member's mean).
"""
from __future__ import annotations

import dataclasses
import math
import warnings
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch

from pipeline.store import N_COORDS, DataError, MovieTensor, read_movie_tensor


# ----------------------------------------------------------------------------- loading


@dataclass
class Movie:
    """A validated movie tensor with its all-missing members removed."""
    landmarks: np.ndarray           # (N, T, 136) float32, NaN where missing
    mask: np.ndarray                # (N, T) bool, True where observed
    member_id: np.ndarray           # (N,) str
    session_id: np.ndarray          # (N,) str
    name: str = "movie"
    bin_seconds: float = 1.0
    units: str = "unknown"
    dropped: list[str] = field(default_factory=list)   # member ids removed for having no face
    extra: dict = field(default_factory=dict)          # optional datasets (e.g. synthetic ground truth)
    attrs: dict = field(default_factory=dict)          # optional file attributes (e.g. noise_floor)

    @property
    def n_members(self) -> int:
        return self.landmarks.shape[0]

    @property
    def n_seconds(self) -> int:
        return self.landmarks.shape[1]

    def summary(self) -> dict:
        n, t = self.mask.shape
        sessions = sorted({str(s) for s in self.session_id})
        return {"movie": self.name, "members": n, "time_bins": t, "bin_seconds": self.bin_seconds,
                "sessions": sessions, "observed_faces": int(self.mask.sum()),
                "missing_percent": round(100.0 * (1 - self.mask.mean()), 2),
                "units": self.units, "dropped_members": list(self.dropped)}


def movie_from_tensor(tensor: MovieTensor, source: str = "tensor") -> Movie:
    """Validate (shape, NaN vs mask, emptiness) and drop members that were never observed."""
    tensor.validate(source)
    seen = tensor.mask.any(axis=1)
    dropped = [str(m) for m in np.asarray(tensor.member_id)[~seen]]
    if not seen.any():
        raise DataError(f"{source}: no member has a single observed face (mask is all False); "
                        f"there is nothing to fit. Check the detection and binning stages for this movie.")
    if dropped:
        warnings.warn(f"{source}: dropping {len(dropped)} member(s) with no observed face: "
                      f"{', '.join(dropped[:10])}{' …' if len(dropped) > 10 else ''}", stacklevel=2)
    per_member = {k: v[seen] for k, v in tensor.extra.items()
                  if isinstance(v, np.ndarray) and v.ndim >= 1 and v.shape[0] == len(seen)
                  and not k.startswith("true_v")}
    extra = {**tensor.extra, **per_member}
    return Movie(landmarks=tensor.landmarks[seen], mask=tensor.mask[seen],
                 member_id=np.asarray(tensor.member_id)[seen], session_id=np.asarray(tensor.session_id)[seen],
                 name=tensor.movie, bin_seconds=tensor.bin_seconds, units=tensor.units,
                 dropped=dropped, extra=extra, attrs=dict(tensor.attrs))


def load_movie(path: str | Path) -> Movie:
    """Read a per-movie tensor file (any writer following data/README.md) for the models."""
    return movie_from_tensor(read_movie_tensor(Path(path)), str(path))


# ----------------------------------------------------------------------------- normalization


@dataclass(frozen=True)
class Normalizer:
    """x_norm = (x - mean) / scale; fitted on training faces only, stored with every model.

    `scale` is one number (every coordinate alike) or one per coordinate (136,): then each
    coordinate is divided by its own landmark noise, so a model's squared error weighs the
    quiet, precisely fitted brows as much as the noisy jaw line (weighted least squares)."""
    mean: np.ndarray                # (136,)
    scale: float | np.ndarray       # a number, or (136,)

    @classmethod
    def fit(cls, landmarks: np.ndarray, train_mask: np.ndarray, per_member: bool = False,
            per_coordinate: bool = False) -> "Normalizer":
        """per_member: scale by the RMS of faces minus their member's mean (what offset models fit).
        per_coordinate: each coordinate's scale is proportional to its noise (coordinate_noise),
        the whole set such that the normalized faces still have RMS 1."""
        faces = landmarks[train_mask].astype(np.float64)          # (M, 136)
        if len(faces) == 0:
            raise DataError("no training faces to normalize with; the training mask is all False.")
        mean = faces.mean(axis=0)
        centred = faces - (member_means(landmarks, train_mask)[np.nonzero(train_mask)[0]] if per_member else mean)
        relative = coordinate_noise(landmarks, train_mask) if per_coordinate else None
        if relative is None:
            scale = float(np.sqrt((centred ** 2).mean()))
            return cls(mean=mean.astype(np.float32), scale=scale if scale > 0 else 1.0)
        relative = relative / relative.mean()
        overall = float(np.sqrt(((centred / relative) ** 2).mean()))
        return cls(mean=mean.astype(np.float32), scale=(relative * (overall if overall > 0 else 1.0)).astype(np.float32))

    def encode(self, landmarks: np.ndarray) -> np.ndarray:
        """(…, 136) original units → normalized; NaN stays NaN."""
        return ((landmarks - self.mean) / self.scale).astype(np.float32)

    def decode(self, x_norm):
        """Normalized → original units (numpy or torch)."""
        if isinstance(x_norm, torch.Tensor):
            mean = torch.as_tensor(self.mean, device=x_norm.device, dtype=x_norm.dtype)
            scale = torch.as_tensor(self.scale, device=x_norm.device, dtype=x_norm.dtype)
            return x_norm * scale + mean
        return x_norm * self.scale + self.mean

    def state(self) -> dict:
        scale = self.scale.tolist() if isinstance(self.scale, np.ndarray) else self.scale
        return {"mean": self.mean.tolist(), "scale": scale}

    @classmethod
    def from_state(cls, state: dict) -> "Normalizer":
        scale = state["scale"]
        scale = np.asarray(scale, dtype=np.float32) if isinstance(scale, list) else float(scale)
        return cls(mean=np.asarray(state["mean"], dtype=np.float32), scale=scale)


def coordinate_noise(landmarks: np.ndarray, mask: np.ndarray, floor: float = 0.05) -> np.ndarray | None:
    """(136,) each coordinate's landmark noise: 1.4826·MAD/√2 of its change from one observed second
    to the next within a member (reactions last seconds, so these steps are mostly noise; the MAD
    ignores gross misfits). At least `floor` × the median coordinate's, so no coordinate is weighed
    without bound. None when no member is seen in two consecutive seconds."""
    both = mask[:, 1:] & mask[:, :-1]
    if not both.any():
        return None
    steps = (landmarks[:, 1:] - landmarks[:, :-1])[both].astype(np.float64)     # (S, 136)
    noise = 1.4826 * np.median(np.abs(steps - np.median(steps, 0)), 0) / np.sqrt(2)
    return np.maximum(noise, floor * max(float(np.median(noise)), 1e-12))


def member_means(x: np.ndarray, mask: np.ndarray) -> np.ndarray:
    """(N, T, D), (N, T) → (N, D) float64 mean over each member's `mask` cells (0 where it has none)."""
    sums = np.where(mask[:, :, None], x, 0.0).sum(1, dtype=np.float64)
    return sums / np.maximum(mask.sum(1), 1)[:, None]


@dataclass(frozen=True)
class MemberOffsets:
    """Per-member offsets (each member's own mean face), in normalized units, stored with a model.

    A training member's offset is the mean of the faces the model is fitted to (its training
    faces less those held back for validation; a member without any gets `prior`, the
    average offset), so a model that predicts no expression at all is the 'member mean'
    baseline. A NEW member (long-term prediction) has only a
    few observed faces, so its offset is the posterior mean under a normal prior
    N(prior, Σ_b) fitted to the training members (empirical Bayes): Σ_b is their
    between-member covariance (its principal directions `modes` and variances, with the
    within-member noise taken out), so along each direction j the new member's mean face
    moves the offset by λ_j / (λ_j + w/n) (w: per-coordinate noise of one face, n: its faces).
    Faces differ from person to person along a few directions (face width, eye spacing, ...):
    along those a new member soon has its own face, while directions in which training
    members do not differ (where an expression held through a short prefix shows) keep the
    average. κ = within / between variance (one scalar, in faces) summarizes the same and is
    the fallback of checkpoints saved without modes: (Σ_t x_it + κ·prior) / (n + κ).
    """
    offsets: np.ndarray             # (N, 136) float32, training members
    prior: np.ndarray               # (136,) float32, the average member offset
    shrink: float                   # κ, in faces
    modes: np.ndarray | None = None       # (J, 136) float32 orthonormal directions of between-member spread
    variances: np.ndarray | None = None   # (J,) between-member variance along each (normalized units²)
    noise: float = 0.0                    # w: per-coordinate variance of one face about its member's offset

    MAX_SHRINK = 1e6                # no measurable identity variance: offsets = prior

    @classmethod
    def fit(cls, x_norm: np.ndarray, train_mask: np.ndarray) -> "MemberOffsets":
        """Offsets of the training members from their training faces (normalized (N, T, 136))."""
        counts = train_mask.sum(1).astype(np.float64)
        if not counts.any():
            raise DataError("no training faces to estimate member offsets from; the training mask is all False.")
        means = member_means(x_norm, train_mask)                                         # (N, 136)
        seen = counts > 0
        resid = np.where(train_mask[:, :, None], x_norm - means[:, None], 0.0)
        within = float((resid.astype(np.float64) ** 2).sum()) / max(counts.sum() - seen.sum(), 1.0)
        offsets = np.where(seen[:, None], means, means[seen].mean(0)).astype(np.float32)
        return cls(offsets=offsets, **cls._population(means[seen], counts[seen], within))

    @classmethod
    def _population(cls, faces: np.ndarray, counts: np.ndarray, within: float) -> dict:
        """prior, κ and the between-member covariance's directions from members' mean faces (M, 136)
        over counts (M,) faces with per-face noise `within` (squared error summed over coordinates)."""
        prior = faces.mean(0)
        centred = faces - prior
        noise = within / faces.shape[1]                                   # per coordinate, one face
        between = float((centred ** 2).sum() / max(len(faces) - 1, 1) - within * np.mean(1.0 / counts))
        shrink = cls.MAX_SHRINK if between <= within / cls.MAX_SHRINK else min(within / between, cls.MAX_SHRINK)
        _, sv, vt = np.linalg.svd(centred, full_matrices=False)
        variances = sv ** 2 / max(len(faces) - 1, 1) - noise * np.mean(1.0 / counts)
        keep = variances > 0
        return {"prior": prior.astype(np.float32), "shrink": float(shrink), "modes": vt[keep].astype(np.float32),
                "variances": variances[keep].astype(np.float32), "noise": float(noise)}

    def for_new_members(self, effective: np.ndarray, counts: np.ndarray, within: float) -> "MemberOffsets":
        """The same training offsets with `prior` and κ re-estimated from a fitted model.

        effective (N, 136): each training member's whole offset as the model uses it (its
        offset plus any learned bias); within: the model's residual error per face. A new
        member's offset is then estimated against what the model leaves unexplained.
        """
        seen = counts > 0
        return dataclasses.replace(self, **self._population(effective[seen], counts[seen], within))

    def estimate(self, x_norm: np.ndarray, seen: np.ndarray) -> np.ndarray:
        """(R, 136) offsets of members from their `seen` faces (R, T, 136), shrunk toward `prior`
        direction by direction (the prior where a member has no face)."""
        sums = np.where(seen[:, :, None], x_norm, 0.0).sum(1, dtype=np.float64)
        n = seen.sum(1).astype(np.float64)[:, None]
        if self.modes is None:                            # a checkpoint from before the modes
            return ((sums + self.shrink * self.prior) / (n + self.shrink)).astype(np.float32)
        coef = (sums / np.maximum(n, 1) - self.prior) @ self.modes.T.astype(np.float64)     # (R, J)
        gain = self.variances / (self.variances + self.noise / np.maximum(n, 1e-12))         # (R, J)
        return (self.prior + (gain * coef * (n > 0)) @ self.modes).astype(np.float32)

    def state(self) -> dict:
        out = {"offsets": self.offsets.tolist(), "prior": self.prior.tolist(), "shrink": self.shrink}
        if self.modes is not None:
            out.update(modes=self.modes.tolist(), variances=self.variances.tolist(), noise=self.noise)
        return out

    @classmethod
    def from_state(cls, state: dict | None) -> "MemberOffsets | None":
        if state is None:
            return None
        modes = state.get("modes")
        return cls(offsets=np.asarray(state["offsets"], dtype=np.float32),
                   prior=np.asarray(state["prior"], dtype=np.float32), shrink=float(state["shrink"]),
                   modes=None if modes is None else np.asarray(modes, dtype=np.float32).reshape(-1, len(state["prior"])),
                   variances=None if modes is None else np.asarray(state["variances"], dtype=np.float32),
                   noise=float(state.get("noise", 0.0)))


def mse_per_face(pred: np.ndarray, target: np.ndarray) -> float:
    """Mean over faces of the squared error summed over the 136 coordinates (the paper's metric)."""
    if len(pred) == 0:
        return float("nan")
    return float(((np.asarray(pred, np.float64) - target) ** 2).sum(axis=-1).mean())


# ----------------------------------------------------------------------------- splits


def completion_split(mask: np.ndarray, holdout_every: int = 6, seed: int | list[int] = 0) -> tuple[np.ndarray, np.ndarray]:
    """Per member, hold out 1 in `holdout_every` observed faces at random (5:1 for 6).

    Returns (train_mask, test_mask), both (N, T) bool and disjoint. A member with
    fewer than `holdout_every` faces keeps them all for training.
    """
    rng = np.random.default_rng(seed)
    train, test = mask.copy(), np.zeros_like(mask)
    for i in range(mask.shape[0]):
        seen_t = np.flatnonzero(mask[i])
        held = rng.permutation(seen_t)[: len(seen_t) // holdout_every]
        train[i, held], test[i, held] = False, True
    return train, test


def validation_split(train_mask: np.ndarray, every: int, seed: int) -> tuple[np.ndarray, np.ndarray | None]:
    """(fit_mask, val_mask): per member 1 in `every` training faces held back for model selection.

    every = 0, or no member with enough faces: (train_mask, None), i.e. no validation. The
    draw has its own random stream, so it never repeats the completion split's choices.
    """
    if every <= 0:
        return train_mask, None
    fit, val = completion_split(train_mask, every, seed=[seed, 0x7A1])
    return (fit, val) if val.any() else (train_mask, None)


def member_split(n_members: int, test_fraction: float = 0.2, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """Random members held out entirely (long-term prediction). Returns (train_rows, test_rows)."""
    if n_members < 2:
        raise DataError(f"long-term prediction needs at least 2 members (got {n_members}): "
                        f"some to learn V and θ from and some to predict.")
    n_test = min(n_members - 1, max(1, int(round(test_fraction * n_members))))
    order = np.random.default_rng(seed).permutation(n_members)
    return np.sort(order[n_test:]), np.sort(order[:n_test])


def prefix_split(mask: np.ndarray, fraction: float) -> tuple[np.ndarray, np.ndarray, int]:
    """Observe the first `fraction` of the movie (at least one time bin); predict the rest.

    Returns (seen_mask, rest_mask, t_cut) with seen = mask[:, :t_cut], rest = mask[:, t_cut:].
    """
    n_t = mask.shape[1]
    t_cut = min(n_t - 1, max(1, math.ceil(fraction * n_t)))
    seen, rest = mask.copy(), mask.copy()
    seen[:, t_cut:] = False
    rest[:, :t_cut] = False
    return seen, rest, t_cut


# ----------------------------------------------------------------------------- device data


def pick_device(name: str = "auto") -> torch.device:
    """'auto' → CUDA when present else CPU; 'cuda' without a GPU is an error naming the fix."""
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if name == "cuda" and not torch.cuda.is_available():
        raise ValueError("train.device=cuda was asked for but no CUDA GPU is available to torch. "
                         "Use train.device=auto (or cpu), or install a CUDA build of torch on a GPU machine.")
    if name not in ("cpu", "cuda"):
        raise ValueError(f"unknown device '{name}'; use auto, cpu or cuda")
    return torch.device(name)


class Faces:
    """Normalized faces and the observed (i, t) index lists, resident on one device.

    Batches are drawn by index from these tensors: no DataLoader, no host copies.
    """

    def __init__(self, x_norm: np.ndarray, mask: np.ndarray, device: torch.device, movie: "Movie | None" = None):
        if x_norm.ndim != 3 or x_norm.shape[2] != N_COORDS or mask.shape != x_norm.shape[:2]:
            raise DataError(f"faces must be (N, T, {N_COORDS}) with an (N, T) mask, got "
                            f"{x_norm.shape} and {mask.shape}")
        self.device = device
        self.x = torch.from_numpy(np.nan_to_num(x_norm, nan=0.0)).to(device)       # (N, T, 136)
        i_idx, t_idx = np.nonzero(mask)
        self.i = torch.from_numpy(i_idx).long().to(device)                           # (M,)
        self.t = torch.from_numpy(t_idx).long().to(device)                           # (M,)
        self.mask = torch.from_numpy(mask).to(device)                                # (N, T)
        # the movie these faces come from (member ids, bin length, its whole mask), for models whose
        # data-derived state names faces by member and second (e.g. triplet files); None when unknown
        self.movie = movie

    @property
    def n_observed(self) -> int:
        return int(self.i.numel())

    def batches(self, batch_size: int, generator: torch.Generator):
        """Yield (i, t, x) batches covering every observed face once, in a seeded random order."""
        order = torch.randperm(self.n_observed, generator=generator, device=generator.device)
        order = order.to(self.device)
        for start in range(0, self.n_observed, batch_size):
            pick = order[start:start + batch_size]
            i, t = self.i[pick], self.t[pick]
            yield i, t, self.x[i, t]
