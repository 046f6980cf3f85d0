"""The known generative model behind every synthetic screening (no pixels here).

Per movie (shared by all its sessions):
  V (T_movie_s, K)  non-negative time courses at integer movie seconds: a low
                    smooth baseline plus sparse shared "funny moments" (a 1 s
                    rise, 2–5 s exponential decay) with a per-moment loading
                    over the K factors (joke: smile+laugh, surprise: brows, tension: frown).
  P (G, K)          viewer-group prototypes.
Per viewer i (per session and camera):
  group g_i, U_i = P[g_i] · lognormal(0, 0.2)  ≥ 0            (K,)
  e_i(t) = U_i ∘ V(t)   (V linearly interpolated to frame time)
  frontal landmarks = neutral_i + gain · Σ_k tanh(1.2 e_ik) · D_k + blink closure
        (D_k fixed displacement fields: smile, laugh/mouth-open, brow raise, frown;
        tanh is the saturating non-linearity)
  pose (yaw, pitch, roll) deg = screen-facing yaw bias + smooth wobble
        + 6° pitch-up when laughing
  absence state per frame: an alternating renewal process whose stationary
        share of absent time is `absence_fraction` (turned away / occluded / left).

Canonical frontal frame: the units of pipeline/assets/mean_face_68.npy — x right,
y down, origin at the mean face's centre, jaw span 1.254, eye-to-eye 0.53.
Image landmarks = scale_px · (R(yaw, pitch, roll) · [x, y, z_mean])[:2] + centre_px
(scaled orthographic; z from the mean face). R = Rz(roll) Rx(pitch) Ry(yaw):
yaw > 0 turns the nose towards image +x, pitch > 0 lifts the nose (towards −y),
roll > 0 turns the face clockwise in the image.
"""
from __future__ import annotations

import hashlib
from dataclasses import dataclass
from functools import lru_cache
from importlib import resources

import numpy as np
from scipy.ndimage import gaussian_filter1d

from pipeline.synthetic.config import SyntheticConfig
from pipeline.synthetic.layout import FOREHEAD_Y, Layout

FACTOR_NAMES = ("smile", "laugh", "brow_raise", "frown")
ABSENCE_CODES = {0: "visible", 1: "turned_away", 2: "occluded", 3: "left"}
VISIBLE, TURNED, OCCLUDED, LEFT = 0, 1, 2, 3
# (low, high) seconds of an absence episode, per kind (turned away, occluded, left)
EPISODE_S = ((1.0, 4.0), (0.5, 2.5), (10.0, 40.0))
MOMENT_LOADINGS = np.array([[0.8, 1.0, 0.2, 0.0],    # joke: laughter
                            [1.0, 0.3, 0.1, 0.0],    # gentle joke: smile
                            [0.2, 0.0, 1.0, 0.0],    # surprise
                            [0.0, 0.0, 0.3, 1.0]])   # tension
MOMENT_PROBS = np.array([0.45, 0.25, 0.18, 0.12])
SATURATION = 1.2


def rng_for(cfg: SyntheticConfig, *names: str) -> np.random.Generator:
    """A generator that depends only on the seed and the given names (never on run order)."""
    text = "/".join([str(cfg.seed), *names]).encode()
    return np.random.default_rng(int.from_bytes(hashlib.sha256(text).digest()[:8], "little"))


@lru_cache(maxsize=1)
def mean_face() -> np.ndarray:
    """(68, 3) float64 3D mean face, canonical units."""
    with resources.as_file(resources.files("pipeline") / "assets" / "mean_face_68.npy") as path:
        return np.load(path).astype(np.float64)


# ----------------------------------------------------------------------------- movie level


def movie_length_s(cfg: SyntheticConfig) -> int:
    """Seconds of movie time covered by V: long enough for every session's offset."""
    return int(np.ceil(cfg.duration_s + cfg.max_offset_s)) + 2


@dataclass(frozen=True)
class MovieFactors:
    V: np.ndarray            # (T_movie_s, K) at integer movie seconds
    moments_s: np.ndarray    # (M,) peak times of the funny moments, movie seconds
    moment_kind: np.ndarray  # (M,) index into MOMENT_LOADINGS
    prototypes: np.ndarray   # (G, K) group prototypes of U


def movie_factors(cfg: SyntheticConfig) -> MovieFactors:
    """The movie's shared time courses and viewer-group prototypes."""
    rng = rng_for(cfg, cfg.movie, "movie")
    k, t_len = cfg.k_true, movie_length_s(cfg)
    baseline = 0.08 + 0.06 * smooth_noise(rng, t_len, k, 3.0)
    n_moments = max(1, int(round(cfg.funny_per_min * t_len / 60)))
    moments = np.sort(rng.uniform(1.0, max(1.5, t_len - 3.0), n_moments))
    kinds = rng.choice(len(MOMENT_PROBS), n_moments, p=MOMENT_PROBS)
    seconds = np.arange(t_len, dtype=float)[:, None]
    V = np.clip(baseline, 0, None)
    for peak, kind in zip(moments, kinds):
        amplitude, decay_s = rng.uniform(0.8, 1.5), rng.uniform(2.0, 5.0)
        rise = np.clip(1 + (seconds - peak), 0, 1) * (seconds <= peak)
        fall = np.exp(-(seconds - peak) / decay_s) * (seconds > peak)
        V = V + amplitude * (rise + fall) * MOMENT_LOADINGS[kind, :k]
    return MovieFactors(V.astype(np.float32), moments, kinds, _prototypes(rng, cfg.groups, k))


def _prototypes(rng: np.random.Generator, groups: int, k: int) -> np.ndarray:
    """Group prototypes: a low floor, and each group strong on its own 1–2 factors."""
    protos = rng.uniform(0.1, 0.35, (groups, k))
    for g in range(groups):
        strong = {g % k} | ({int(rng.integers(k))} if rng.random() < 0.5 else set())
        protos[g, list(strong)] = rng.uniform(0.9, 1.4, len(strong))
    return protos


def V_at(V: np.ndarray, movie_time_s: np.ndarray) -> np.ndarray:
    """(F, K) V linearly interpolated at movie times."""
    knots = np.arange(len(V), dtype=float)
    return np.stack([np.interp(movie_time_s, knots, V[:, k]) for k in range(V.shape[1])], axis=1)


# ----------------------------------------------------------------------------- expressions


@lru_cache(maxsize=1)
def displacement_bases() -> np.ndarray:
    """(4, 68, 2) landmark displacements in canonical units at full intensity."""
    d = np.zeros((4, 68, 2))
    smile, laugh, brow, frown = d
    for left, right, w in ((48, 54, 1.0), (60, 64, 0.9), (49, 53, 0.5), (59, 55, 0.5)):
        smile[left] += (-0.055 * w, -0.045 * w)
        smile[right] += (0.055 * w, -0.045 * w)
    smile[[40, 41, 46, 47], 1] -= 0.012                 # cheeks push the lower lids up
    smile[[50, 51, 52], 1] -= 0.01
    jaw_w = np.clip(1 - np.abs(np.arange(17) - 8) / 5.0, 0, 1)
    laugh[:17, 1] += 0.13 * jaw_w                       # jaw drops
    laugh[[56, 57, 58], 1] += 0.15
    laugh[[55, 59], 1] += 0.09
    laugh[[65, 66, 67], 1] += 0.15
    laugh[[61, 62, 63], 1] -= 0.02
    laugh[[50, 51, 52], 1] -= 0.02
    laugh[[48, 60], 0] -= 0.015
    laugh[[54, 64], 0] += 0.015
    laugh[[48, 54, 60, 64], 1] += 0.04
    brow[17:27, 1] -= np.array([0.05, 0.06, 0.075, 0.08, 0.08, 0.08, 0.08, 0.075, 0.06, 0.05])
    brow[[37, 38, 43, 44], 1] -= 0.018
    frown[17:27, 1] += 0.035
    frown[[20, 21], 0] += 0.03
    frown[[22, 23], 0] -= 0.03
    frown[[48, 54], 1] += 0.035
    frown[[61, 62, 63], 1] += 0.006
    frown[[65, 66, 67], 1] -= 0.006
    return d


def expression_displacement(expression: np.ndarray, gain: float) -> np.ndarray:
    """(..., K) raw intensities U∘V → (..., 68, 2) displacement via the saturating map."""
    k = expression.shape[-1]
    weights = np.tanh(SATURATION * np.clip(expression, 0, None))
    return gain * np.einsum("...k,kpc->...pc", weights, displacement_bases()[:k])


def blink_closure(rng: np.random.Generator, n_frames: int, fps: float, rate_hz: float) -> np.ndarray:
    """(F,) eyelid closure 0..1: Poisson blinks, each a 0.2–0.35 s triangle."""
    closure = np.zeros(n_frames)
    t = np.arange(n_frames) / fps
    n_blinks = rng.poisson(rate_hz * n_frames / fps)
    for start in rng.uniform(-0.3, n_frames / fps, n_blinks):
        half = rng.uniform(0.1, 0.175)
        closure = np.maximum(closure, np.clip(1 - np.abs(t - start - half) / half, 0, 1))
    return np.clip(closure * 1.6, 0, 1)      # fully shut for the middle of the blink


def close_eyes(shape: np.ndarray, closure: np.ndarray) -> np.ndarray:
    """Move upper lids (37,38 / 43,44) towards the lower lids (41,40 / 47,46); shape (..., 68, 2)."""
    shape = shape.copy()
    c = closure[..., None, None]
    upper, lower = [37, 38, 43, 44], [41, 40, 47, 46]
    gap = shape[..., lower, :] - shape[..., upper, :]
    shape[..., upper, :] += 0.85 * c * gap
    shape[..., lower, :] -= 0.1 * c * gap
    return shape


# ----------------------------------------------------------------------------- pose


def rotation(pose_deg: np.ndarray) -> np.ndarray:
    """(..., 3) yaw, pitch, roll degrees → (..., 3, 3) R = Rz(roll) Rx(pitch) Ry(yaw)."""
    yaw, pitch, roll = np.moveaxis(np.deg2rad(pose_deg), -1, 0)
    cy, sy, cp, sp, cr, sr = np.cos(yaw), np.sin(yaw), np.cos(pitch), np.sin(pitch), np.cos(roll), np.sin(roll)
    one, zero = np.ones_like(yaw), np.zeros_like(yaw)
    ry = np.stack([np.stack([cy, zero, sy], -1), np.stack([zero, one, zero], -1), np.stack([-sy, zero, cy], -1)], -2)
    rx = np.stack([np.stack([one, zero, zero], -1), np.stack([zero, cp, -sp], -1), np.stack([zero, sp, cp], -1)], -2)
    rz = np.stack([np.stack([cr, -sr, zero], -1), np.stack([sr, cr, zero], -1), np.stack([zero, zero, one], -1)], -2)
    return rz @ rx @ ry


def project(points_xy: np.ndarray, depth: np.ndarray, pose_deg: np.ndarray, scale_px: np.ndarray,
            centre_px: np.ndarray) -> np.ndarray:
    """Scaled-orthographic image of canonical points: (..., P, 2) + depth (P,) → (..., P, 2) px."""
    depth = np.broadcast_to(depth, points_xy.shape[:-1])[..., None]
    pts3 = np.concatenate([points_xy, depth], axis=-1)
    rotated = np.einsum("...ij,...pj->...pi", rotation(pose_deg), pts3)
    return rotated[..., :2] * scale_px[..., None, None] + centre_px[..., None, :]


def smooth_noise(rng: np.random.Generator, n_frames: int, dims: int, sigma_frames: float) -> np.ndarray:
    """(F, dims) zero-mean unit-std Gaussian-smoothed noise."""
    pad = int(4 * sigma_frames) + 1
    noise = gaussian_filter1d(rng.normal(0, 1, (n_frames + 2 * pad, dims)), sigma_frames, axis=0)[pad:-pad]
    return noise / _filtered_std(sigma_frames)


def _filtered_std(sigma: float) -> float:
    """Std of unit white noise after gaussian_filter1d(sigma): the kernel's L2 norm. Dividing by it
    (not by the sample std) keeps short clips as lively as long ones."""
    impulse = np.zeros(8 * int(sigma + 1) + 1)
    impulse[len(impulse) // 2] = 1.0
    return float(np.linalg.norm(gaussian_filter1d(impulse, sigma)))


# ----------------------------------------------------------------------------- absences


def absence_states(rng: np.random.Generator, n_frames: int, fps: float, fraction: float,
                   shares: tuple[float, float, float]) -> np.ndarray:
    """(F,) int8 codes: an alternating renewal process (present gap, absence episode), started
    long before the clip so its first frame is already in the stationary regime."""
    states = np.zeros(n_frames, dtype=np.int8)
    if fraction <= 0:
        return states
    means = np.array([np.mean(b) for b in EPISODE_S])
    probs = np.asarray(shares, dtype=float) / means
    probs /= probs.sum()
    mean_episode = float((probs * means).sum())
    mean_gap = mean_episode * (1 - fraction) / fraction
    t = -3.0 * max(b[1] for b in EPISODE_S)
    end = n_frames / fps
    while t < end:
        t += rng.exponential(mean_gap)
        kind = int(rng.choice(3, p=probs))
        length = rng.uniform(*EPISODE_S[kind])
        first, last = int(np.ceil(t * fps)), int(np.ceil((t + length) * fps))
        if last > 0 and first < n_frames:
            states[max(first, 0):min(last, n_frames)] = kind + 1
        t += length
    return states


# ----------------------------------------------------------------------------- audience


@dataclass(frozen=True)
class Audience:
    """Who sits where in one (session, camera). V viewers."""
    seat: np.ndarray         # (V,) index into the layout's seats
    source: np.ndarray       # (V,) index into the source faces
    mirrored: np.ndarray     # (V,) bool: source face mirrored left-right
    U: np.ndarray            # (V, K) ≥ 0
    group: np.ndarray        # (V,) int
    neutral: np.ndarray      # (V, 68, 2) canonical neutral shape (from the source face)
    tone: np.ndarray         # (V, 4): IR gain, gamma, hair grey, clothes grey


def draw_audience(cfg: SyntheticConfig, layout: Layout, factors: MovieFactors, neutral_shapes: np.ndarray,
                  rng: np.random.Generator) -> Audience:
    """Fill seats at `occupancy`; each viewer gets a real face (mirrored or not), a group and U."""
    n_seats, n_src = layout.n_seats, len(neutral_shapes)
    n_viewers = max(1, int(round(cfg.occupancy * n_seats)))
    seat = np.sort(rng.choice(n_seats, n_viewers, replace=False))
    ids = rng.choice(2 * n_src, n_viewers, replace=n_viewers > 2 * n_src)
    source, mirrored = ids % n_src, ids >= n_src
    group = rng.integers(cfg.groups, size=n_viewers)
    U = factors.prototypes[group] * np.exp(0.2 * rng.normal(size=(n_viewers, cfg.k_true)))
    neutral = neutral_shapes[source].copy()
    neutral[mirrored] = mirror_shape(neutral[mirrored])
    tone = np.stack([rng.uniform(0.95, 1.25, n_viewers), rng.uniform(0.7, 0.95, n_viewers),
                     rng.uniform(12, 55, n_viewers), rng.uniform(22, 70, n_viewers)], axis=1)
    return Audience(seat, source, mirrored, U.astype(np.float32), group, neutral, tone)


def mirror_shape(shape: np.ndarray) -> np.ndarray:
    """Left-right mirror of canonical (..., 68, 2) shapes with iBUG re-indexing."""
    from pipeline.synthetic.faces import MIRROR_68

    out = shape[..., MIRROR_68, :].copy()
    out[..., 0] *= -1
    return out


# ----------------------------------------------------------------------------- animation


@dataclass(frozen=True)
class Animation:
    """Per-frame state of every viewer of one (session, camera): F frames, V viewers."""
    time_s: np.ndarray             # (F,) session time
    expression: np.ndarray         # (F, V, K) U∘V(t), before the saturating map
    blink: np.ndarray              # (F, V) eyelid closure 0..1
    frontal: np.ndarray            # (F, V, 68, 2) canonical frontal landmarks (NaN while left)
    pose_deg: np.ndarray           # (F, V, 3) yaw, pitch, roll (NaN while left)
    centre_px: np.ndarray          # (F, V, 2) head centre in the image
    scale_px: np.ndarray           # (V,) pixels per canonical unit
    state: np.ndarray              # (F, V) int8 absence code (0 = visible)
    image: np.ndarray              # (F, V, 68, 2) image landmarks (NaN unless visible)
    box: np.ndarray                # (F, V, 4) left, top, right, bottom px (NaN unless visible)


def animate(cfg: SyntheticConfig, layout: Layout, audience: Audience, factors: MovieFactors,
            offset_s: float, n_frames: int, rng: np.random.Generator) -> Animation:
    """Run the generative model for every viewer and frame (cheap: no pixels)."""
    n_view = len(audience.seat)
    time_s = np.arange(n_frames) / cfg.fps
    expression = V_at(factors.V, time_s + offset_s)[:, None, :] * audience.U[None]     # (F, V, K)
    blink = np.stack([blink_closure(rng, n_frames, cfg.fps, cfg.blink_rate_hz) for _ in range(n_view)], 1)
    frontal = audience.neutral[None] + expression_displacement(expression, cfg.expression_gain)
    frontal = close_eyes(frontal, blink)
    state = np.stack([absence_states(rng, n_frames, cfg.fps, cfg.absence_fraction, cfg.absence_shares)
                      for _ in range(n_view)], axis=1)
    pose = _poses(cfg, layout, audience, expression, state, rng)
    scale = layout.scale_px[audience.seat]
    sway = smooth_noise(rng, n_frames, 2 * n_view, 2.0 * cfg.fps).reshape(n_frames, n_view, 2)
    centre = layout.centre_px[audience.seat][None] + 0.04 * scale[None, :, None] * sway
    frontal[state == LEFT] = np.nan
    pose[state == LEFT] = np.nan
    image, box = image_landmarks(frontal, pose, scale, centre, state == VISIBLE)
    return Animation(time_s, expression.astype(np.float32), blink.astype(np.float32), frontal, pose,
                     centre, scale, state, image, box)


def _poses(cfg, layout, audience, expression, state, rng) -> np.ndarray:
    """(F, V, 3) yaw/pitch/roll: look towards the screen centre, wobble, laugh lifts the chin."""
    n_frames, n_view = state.shape
    wobble = smooth_noise(rng, n_frames, 3 * n_view, 1.5 * cfg.fps).reshape(n_frames, n_view, 3)
    pose = wobble * np.asarray(cfg.pose_std_deg)
    x = layout.centre_px[audience.seat, 0]
    pose[..., 0] += 14.0 * (layout.width_px / 2 - x) / (layout.width_px / 2)
    pose[..., 1] += rng.normal(0, 3, n_view)
    if expression.shape[-1] > 1:
        pose[..., 1] += 6.0 * np.tanh(SATURATION * expression[..., 1])
    turned = state == TURNED
    side = np.where(rng.random(n_view) < 0.5, -1.0, 1.0)
    pose[..., 0] = np.where(turned, side[None] * rng.uniform(80, 150, n_view)[None], pose[..., 0])
    return pose


def image_landmarks(frontal, pose, scale, centre, visible) -> tuple[np.ndarray, np.ndarray]:
    """(F, V, 68, 2) image landmarks and (F, V, 4) face boxes; NaN where not visible."""
    depth = mean_face()[:, 2]
    image = project(frontal, depth, np.nan_to_num(pose), np.broadcast_to(scale, visible.shape), centre)
    forehead = project(np.array([[0.0, FOREHEAD_Y]]), np.array([0.3]), np.nan_to_num(pose),
                       np.broadcast_to(scale, visible.shape), centre)[..., 0, :]
    box = np.stack([image[..., 0].min(-1), np.minimum(image[..., 1].min(-1), forehead[..., 1]),
                    image[..., 0].max(-1), image[..., 1].max(-1)], axis=-1)
    image[~visible] = np.nan
    box[~visible] = np.nan
    return image.astype(np.float32), box.astype(np.float32)
