"""Synthetic per-movie tensors with a known, non-linear generating process and noise floor.

    log U_i ~ N(c_g(i), s²)          members in groups g (the clustering ground truth)
    V_t     = smooth drifts + sparse reaction bursts (laughs), shared by everyone
    z_it    = U_i ∘ V_t (+ optional latent noise)
    x_it    = template + o_i + A · tanh(W z_it + b) + N(0, σ² I)       (68 landmarks × 2)

o_i is an optional per-member face shape (identity offset, `identity_std`; 0 by
default, so the benchmark tensors are unchanged), drawn from its own random stream.

The expression map tanh(·) saturates, so a linear CP model cannot capture it
with the true K. The noise floor of held-out prediction is 136·σ² per face
(plus the latent noise's spread through the map when it is used, estimated by
Monte Carlo). About 13% of faces are missing in runs of seconds and in a few
long absences. Used by the tests, the benchmarks and the demo.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from scipy.ndimage import gaussian_filter1d

from pipeline.store import N_COORDS, MovieTensor


def template_face() -> np.ndarray:
    """A plausible 68-point face in iBUG order, (68, 2), x right / y down, about 2 units across."""
    jaw = np.stack([np.linspace(-1, 1, 17), 0.15 + 0.85 * np.sin(np.linspace(0, np.pi, 17)) - 0.1], 1)
    jaw[:, 0] *= 0.95 * np.sqrt(np.clip(1 - (np.linspace(-1, 1, 17) * 0.3) ** 2, 0, 1))
    brow = np.stack([np.linspace(-0.75, -0.15, 5), -0.55 - 0.08 * np.sin(np.linspace(0, np.pi, 5))], 1)
    brows = np.concatenate([brow, brow[::-1] * [-1, 1]])
    nose = np.concatenate([np.stack([np.zeros(4), np.linspace(-0.4, 0.05, 4)], 1),
                           np.stack([np.linspace(-0.18, 0.18, 5), 0.15 + 0.04 * np.cos(np.linspace(-1.5, 1.5, 5))], 1)])
    ang = np.linspace(0, 2 * np.pi, 7)[:-1]
    eye = np.stack([0.14 * -np.cos(ang), 0.06 * -np.sin(ang)], 1)
    eyes = np.concatenate([eye + [-0.42, -0.35], eye + [0.42, -0.35]])
    a_out = np.linspace(0, 2 * np.pi, 13)[:-1]
    mouth_out = np.stack([0.38 * -np.cos(a_out), 0.45 + 0.14 * -np.sin(a_out)], 1)
    a_in = np.linspace(0, 2 * np.pi, 9)[:-1]
    mouth_in = np.stack([0.24 * -np.cos(a_in), 0.45 + 0.05 * -np.sin(a_in)], 1)
    face = np.concatenate([jaw, brows, nose, eyes, mouth_out, mouth_in])
    return face.astype(np.float32)                                   # (68, 2)


@dataclass(frozen=True)
class SyntheticSpec:
    n_members: int = 40            # audience members N (split over the sessions)
    n_seconds: int = 120           # movie length T in one-second bins
    k_true: int = 4                # true latent dimension
    n_groups: int = 3              # member groups (clustering ground truth)
    n_sessions: int = 2            # screenings; members are assigned round-robin
    hidden: int = 24               # expression units of the non-linear map
    gain: float = 2.0              # input scale of the tanh: higher = more saturation
    displacement: float = 0.08     # size of expression displacements (template units)
    noise_std: float = 0.01        # σ of the per-coordinate Gaussian noise (template units)
    latent_noise: float = 0.0      # std of per-face noise added to z (0: none)
    missing_runs_per_100s: float = 2.5   # starts of short missing runs per member per 100 s
    mean_run_s: float = 3.0        # mean length of a short missing run
    absence_prob: float = 0.15     # chance a member is absent for a long stretch
    identity_std: float = 0.0      # per-coordinate std of each member's own face shape offset (0: none)
    seed: int = 0


def _smooth(noise: np.ndarray, width_s: float) -> np.ndarray:
    """Gaussian-smooth each column of (T, K) noise and rescale it to unit std."""
    out = gaussian_filter1d(noise, width_s, axis=0, mode="reflect")
    return out / out.std(axis=0, keepdims=True).clip(1e-9)


def _time_factors(rng: np.random.Generator, n_t: int, k: int) -> np.ndarray:
    """V (T, K): slow drifts plus bursts (sudden reactions that decay over a few seconds)."""
    v = 0.7 * _smooth(rng.standard_normal((n_t, k)), width_s=6.0)
    for col in range(k):
        for start in rng.choice(n_t, size=max(1, n_t // 40), replace=False):
            length = min(n_t - start, int(rng.integers(3, 9)))
            v[start:start + length, col] += rng.choice([-1, 1]) * 1.5 * np.exp(-np.arange(length) / 3.0)
    return v.astype(np.float32)


def _missing_mask(rng: np.random.Generator, spec: SyntheticSpec) -> np.ndarray:
    """(N, T) bool observed: short runs of missing seconds and, for some, one long absence."""
    n, t = spec.n_members, spec.n_seconds
    mask = np.ones((n, t), bool)
    for i in range(n):
        n_runs = rng.poisson(spec.missing_runs_per_100s * t / 100)
        for start in rng.integers(0, t, size=n_runs):
            mask[i, start:start + 1 + rng.geometric(1 / spec.mean_run_s)] = False
        if rng.random() < spec.absence_prob:
            length = int(t * rng.uniform(0.1, 0.25))
            start = int(rng.integers(0, t - length))
            mask[i, start:start + length] = False
        if not mask[i].any():
            mask[i, rng.integers(0, t)] = True
    return mask


class ExpressionMap:
    """The fixed non-linear map z (…, K) → landmarks (…, 136)."""

    def __init__(self, rng: np.random.Generator, spec: SyntheticSpec):
        self.template = template_face().reshape(-1)                 # (136,)
        self.w = rng.standard_normal((spec.k_true, spec.hidden)) * spec.gain / np.sqrt(spec.k_true)
        self.b = rng.standard_normal(spec.hidden) * 0.5
        self.a = rng.standard_normal((spec.hidden, N_COORDS)) * spec.displacement / np.sqrt(spec.hidden)

    def __call__(self, z: np.ndarray) -> np.ndarray:
        return self.template + np.tanh(z @ self.w + self.b) @ self.a


def make_synthetic_movie(spec: SyntheticSpec = SyntheticSpec(), movie: str = "synthetic") -> tuple[MovieTensor, dict]:
    """Return (tensor, truth) where truth holds U, V, groups, the clean faces and the noise floor."""
    rng = np.random.default_rng(spec.seed)
    n, t, k = spec.n_members, spec.n_seconds, spec.k_true
    groups = np.arange(n) % spec.n_groups
    rng.shuffle(groups)
    centres = rng.normal(0.0, 0.6, size=(spec.n_groups, k))
    u = np.exp(centres[groups] + rng.normal(0.0, 0.15, size=(n, k))).astype(np.float32)   # (N, K)
    v = _time_factors(rng, t, k)                                                           # (T, K)
    expression = ExpressionMap(rng, spec)
    z = u[:, None, :] * v[None, :, :]                                                      # (N, T, K)
    z_noisy = z + spec.latent_noise * rng.standard_normal(z.shape)
    clean = expression(z_noisy)
    identity = _identity_offsets(spec)                                                     # (N, 136)
    clean = clean + identity[:, None, :]
    landmarks = (clean + spec.noise_std * rng.standard_normal(clean.shape)).astype(np.float32)
    mask = _missing_mask(rng, spec)
    landmarks[~mask] = np.nan
    floor = N_COORDS * spec.noise_std ** 2 + _latent_noise_floor(rng, expression, z, mask, spec)
    member_id = np.array([f"m{i:03d}" for i in range(n)], dtype=object)
    session_id = np.array([f"s{i % spec.n_sessions}" for i in range(n)], dtype=object)
    tensor = MovieTensor(landmarks=landmarks, mask=mask, member_id=member_id, session_id=session_id,
                         movie=movie, bin_seconds=1.0, units="synthetic template units",
                         extra={"true_u": u, "true_group": groups.astype(np.int64), "true_v": v},
                         attrs={"noise_floor": float(floor), "noise_std": spec.noise_std})
    truth = {"u": u, "v": v, "groups": groups, "noise_floor": float(floor), "clean": clean.astype(np.float32),
             "expression": expression, "identity": identity}
    return tensor, truth


def _identity_offsets(spec: SyntheticSpec, n_modes: int = 8) -> np.ndarray:
    """(N, 136) per-member face-shape offsets: random mixtures of a few fixed shape modes.

    Drawn from a stream of their own, so identity_std = 0 leaves every other draw unchanged.
    """
    if spec.identity_std <= 0:
        return np.zeros((spec.n_members, N_COORDS), np.float32)
    rng = np.random.default_rng([spec.seed, 0x1D])
    modes = rng.standard_normal((n_modes, N_COORDS))
    coef = rng.standard_normal((spec.n_members, n_modes)) / np.sqrt(n_modes)
    return (spec.identity_std * coef @ modes).astype(np.float32)


def _latent_noise_floor(rng, expression: ExpressionMap, z: np.ndarray, mask: np.ndarray,
                        spec: SyntheticSpec, n_draws: int = 32, n_cells: int = 2000) -> float:
    """E‖g(z+ε) − E_ε g(z+ε)‖² over observed cells (0 without latent noise), by Monte Carlo."""
    if spec.latent_noise <= 0:
        return 0.0
    cells = np.argwhere(mask)
    cells = cells[rng.choice(len(cells), size=min(n_cells, len(cells)), replace=False)]
    zc = z[cells[:, 0], cells[:, 1]]                                                     # (C, K)
    draws = expression(zc[None] + spec.latent_noise * rng.standard_normal((n_draws,) + zc.shape))
    return float(draws.var(axis=0).sum(-1).mean() * n_draws / (n_draws - 1))
