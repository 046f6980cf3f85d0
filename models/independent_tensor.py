"""A second, independent generator of benchmark tensors: a theatre audience drawn from face geometry.

models/synthetic_tensor.py draws data from NLTF's own family (template + A·tanh(W(U_i∘V_t) + b)),
so a model that fits it well may only be fitting its own assumptions. This module builds the
(N, T, 136) tensor from a hand-made face and movie instead, with no random linear map and no
tanh anywhere, so TF, NLTF and FVAE can be reported on data they were not designed on: the
expression map is a fixed, interpretable function of several drives at once (saturation 1 − e^(−x),
thresholds, brow competition, suppression) feeding member-specific geometric displacement fields
(identity × expression) and a 3-D jaw rotation; it is neither linear in U_i∘V_t (TF) nor
template + A·tanh(W z + b) (NLTF's family), and a slow head-pose drift adds a residue that no
f(member_i, U_i∘V_t) model can explain, so the best factorized model sits above the noise floor.

Audience (member i, random per seed):
    neutral face   Q_i = s_i · px · (F0 + Σ_m c_im α_m D_m)      F0 = template_face() (iBUG 68 points),
                   px = 60 / 0.84 (inter-ocular distance ≈ 60 units), s_i = e^N(0, face_size_std²),
                   D_m = 18 smooth geometric shape modes (face width/height, jaw width, chin, eye spacing,
                   eye size, brow height/slope/arch, nose length/width, mouth width/height/position, …),
                   c_im ~ N(0, identity_std²) clipped at ±2.5.
    group          g(i) ∈ {laughers, stoics, jumpy, critics, …} (the clustering ground truth)
    affinities     log a_ik = μ_g(i),k + N(0, affinity_spread²),  k ∈ ARCHETYPES (K = 6)
    style          β_ik ~ Beta(2, 2): mixture of two variants of each archetype's displacement field
    thresholds     θL_i (laugh), θY_i (yawn), Θmax_i (largest jaw opening), all e^N(·, ·)

Movie (shared by everyone, random per seed): d_k(t) ≥ 0, k = smile, laugh, surprise, frown, fear,
boredom, built from events: jokes (sharp onset, exponential decay: smile and, ∝ amplitude², laugh),
a slow warm mood (smile), scares (spikes: surprise, and a slower fear), tense scenes (plateaus with
smooth ramps: fear, some frown), a slow gloomy mood (frown), boredom (slow, damped by recent events).

Drives: r_ik(t) = a_ik · d_k(t) — exactly a factorization u_i ∘ v_t with u = a, v = d, K_true = 6.

Renderer (non-linear in the JOINT drives; S(x) = 1 − e^(−x), relu(x) = max(x, 0)):
    smile   = S(1.3 (r_smile + 0.5 r_laugh)) · e^(−1.2 r_frown) · (1 − 0.4 S(r_fear))   (frown suppresses)
    laugh   = S(relu(r_smile + r_laugh − θL_i) / 0.6)                                    (threshold)
    brows:  up = r_surprise + 0.4 r_fear, down = r_frown compete for the same muscles:
            total = S(max(up, down) + 0.25 min(up, down)),  w = up² / (up² + down²)
            brow_up = total · w,  brow_down = total · (1 − w)
    fear    = S(r_fear) · (1 − smile)                                                   (lip stretch)
    yawn    = S(2 relu(r_boredom − θY_i)²),   lid = 0.35 S(r_boredom)                   (drowsy lids)
    jaw     = S(1.6 laugh + 0.8 S(1.5 relu(r_surprise − 0.8)) + 0.8 yawn)  ∈ [0, 1]
    frontal face (3-D, depth z from a face-shaped depth map):
            P_it = Q_i + Σ_c channel_c(t) · E_ic      E_ic = geometric displacement fields of the
                   member's OWN face (mouth corners out/up ∝ its mouth half-width, brows ∝ its
                   brow–eye distance, lids ∝ its eye opening, …; theatre-sized, about twice a polite
                   everyday expression), mixed from two variants by β_ik;
            then the mandible points are rotated about the jaw hinge by the angle w_p · Θmax_i · jaw
            (a 3-D rotation, so the 2-D displacement goes as sin/cos of the angle).

Head-motion residue (not of the factorized form): each member's head drifts slowly in yaw, pitch and
roll (Gaussian-smoothed noise over pose_smooth_s, std pose_drift_deg·e^N(0, 0.3²)·(1, 0.8, 0.6) degrees,
zero mean per member); the frontal 3-D face is rotated about the head centre, projected orthographically
and re-centred (imperfect frontalization removes the translation only): clean_it = proj(R_it P_it) −
shift, residue_it = clean_it − P_it[xy].

Observation: x_it = clean_it + N(0, σ² I_136). Missing cells (~missing_target): per member a chance of
one long absence, plus short runs (geometric lengths, mean mean_run_s) whose start hazard is
base · (1 + turn_away_gain · excitement_it), excitement = laugh + fear + 0.7 brow_up + yawn (people who
laugh or are scared turn away); `base` is set by bisection so the missing fraction hits the target.

Exactly known quantities (truth and tensor.attrs):
    noise_floor  = 136 σ²                             (error of the clean face per observed face)
    oracle_mse   = 136 σ² + mean_observed ‖residue_it‖²  (expected error of the factorized oracle
                   f(i, u_i∘v_t) = P_it[xy], the clean face without the head-motion residue)
    oracle_ratio = oracle_mse / noise_floor
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from scipy.ndimage import gaussian_filter1d

from models.synthetic_tensor import template_face
from pipeline.store import N_COORDS, MovieTensor

ARCHETYPES = ("smile", "laugh", "surprise", "frown", "fear", "boredom")
CHANNELS = ("smile", "laugh", "brow_up", "brow_down", "fear", "yawn", "lid")
PX_PER_UNIT = 60.0 / 0.84          # template eye centres are 0.84 apart → inter-ocular ≈ 60 units
GROUP_NAMES = ("laughers", "stoics", "jumpy", "critics")
# mean log-affinity of each viewer type to smile, laugh, surprise, frown, fear, boredom
_GROUP_MEANS = np.array([[0.7, 0.9, 0.0, -0.5, -0.15, -0.3],      # laughers
                         [-0.8, -1.0, -0.8, 0.0, -0.65, 0.55],    # stoics
                         [0.0, -0.15, 0.9, -0.15, 0.95, -0.5],    # jumpy
                         [-0.55, -0.5, -0.15, 0.9, 0.0, 0.8]])    # critics
_FIELD_SCALE = 2.0                 # theatre-sized expressions: about twice a polite everyday one

# iBUG 68 index sets
JAW = np.arange(0, 17)
BROWS = np.arange(17, 27)
BRIDGE = np.arange(27, 31)
NOSTRILS = np.arange(31, 36)
EYES = np.arange(36, 48)
UPPER_LIDS = np.array([37, 38, 43, 44])
LOWER_LIDS = np.array([40, 41, 46, 47])
MOUTH = np.arange(48, 68)
CORNERS = np.array([48, 54, 60, 64])
NEAR_CORNERS = np.array([49, 59, 61, 67, 53, 55, 63, 65])
UPPER_LIP = np.array([50, 51, 52, 61, 62, 63])
LOWER_LIP = np.array([56, 57, 58, 65, 66, 67])
INNER_BROWS = np.array([20, 21, 22, 23])
_STREAMS = {"movie": 1, "audience": 2, "pose": 3, "missing": 4, "noise": 5}


@dataclass(frozen=True)
class IndependentSpec:
    """Parameters of one generated movie and audience (units: landmark units ≈ pixels, seconds)."""
    n_members: int = 60             # audience members N (split round-robin over the sessions)
    n_seconds: int = 600            # movie length T in one-second bins
    n_sessions: int = 2             # screenings
    n_groups: int = 4               # viewer types (clustering ground truth); >4 adds random types
    seed: int = 0                   # one seed = one movie (events) and one audience
    noise_std: float = 1.5          # σ of the per-coordinate Gaussian noise → floor 136 σ²
    missing_target: float = 0.13    # fraction of missing (member, second) cells
    mean_run_s: float = 2.5         # mean length of a short missing run (turning away, occlusion)
    absence_prob: float = 0.15      # chance a member leaves once for 5–15 % of the movie
    turn_away_gain: float = 6.0     # extra hazard of a missing run per unit of expression excitement
    identity_std: float = 1.0       # scale of the identity shape-mode coefficients
    face_size_std: float = 0.05     # log-std of the member's face size
    affinity_spread: float = 0.5    # std of a member's log-affinities around its group's means
    affinity_scale: float = 1.0     # multiplies every affinity (intensity sweeps, non-linearity checks)
    expression_gain: float = 1.0    # multiplies every expression displacement field and the jaw angle
    jaw_max_deg: float = 12.0       # typical largest jaw opening (mandible rotation)
    pose_drift_deg: float = 0.9     # typical std of the slow yaw / pitch / roll drift, degrees
    pose_smooth_s: float = 12.0     # time scale of the pose drift, seconds
    jokes_per_min: float = 1.4
    scares_per_min: float = 0.6
    tense_scenes_per_10min: float = 3.0


# ----------------------------------------------------------------------------- face geometry


def _rng(spec: IndependentSpec, stream: str) -> np.random.Generator:
    return np.random.default_rng([spec.seed, 0x1DE9, _STREAMS[stream]])


def _identity_modes(face: np.ndarray) -> np.ndarray:
    """(M, 68, 2) smooth shape modes of the template face, each scaled to a plausible 1-σ size."""
    x, y = face[:, 0], face[:, 1]
    side = np.sign(x)
    zeros = np.zeros_like(face)

    def field(points=None, dx=0.0, dy=0.0):
        out = zeros.copy()
        sel = np.arange(68) if points is None else points
        out[sel, 0] = np.broadcast_to(dx, x.shape)[sel]
        out[sel, 1] = np.broadcast_to(dy, y.shape)[sel]
        return out

    eye_centre = np.where(x[:, None] < 0, face[36:42].mean(0), face[42:48].mean(0))
    mouth_centre = face[MOUTH].mean(0)
    brow_u = np.clip((np.abs(x) - 0.15) / 0.6, 0, 1)
    jaw_mid = np.zeros(68)
    jaw_mid[JAW] = np.sin(np.linspace(0, np.pi, 17)) ** 2
    modes = [
        (field(dx=x), 0.06),                                              # face width
        (field(dy=y), 0.05),                                              # face height
        (field(JAW, dx=x * np.clip(y + 0.2, 0, 1)), 0.08),                # jaw width
        (field(JAW, dy=np.clip(y - 0.3, 0, None)), 0.15),                 # chin length
        (field(EYES, dx=side) + 0.5 * field(BROWS, dx=side), 0.03),       # eye spacing
        (field(EYES, dx=x - eye_centre[:, 0], dy=y - eye_centre[:, 1]), 0.15),   # eye size
        (field(np.r_[EYES, BROWS], dy=np.ones(68)), 0.03),                # eye height
        (field(BROWS, dy=-np.ones(68)), 0.04),                            # brow height
        (field(BROWS, dy=brow_u - 0.5), 0.08),                            # brow slope
        (field(BROWS, dy=-(1 - (2 * brow_u - 1) ** 2)), 0.03),            # brow arch
        (field(BRIDGE, dy=(y + 0.4) / 0.45) + field(NOSTRILS, dy=np.ones(68)), 0.05),   # nose length
        (field(NOSTRILS, dx=x), 0.25),                                    # nose width
        (field(MOUTH, dx=x - mouth_centre[0]), 0.12),                     # mouth width
        (field(MOUTH, dy=y - mouth_centre[1]), 0.2),                      # lip thickness
        (field(MOUTH, dy=np.ones(68)), 0.035),                            # mouth height on the face
        (field(CORNERS, dy=np.ones(68)), 0.03),                           # resting corner droop
        (field(JAW, dx=side * jaw_mid), 0.04),                            # jaw roundness
        (field(EYES, dy=-(x - eye_centre[:, 0]) * side), 0.15),           # canthal tilt
    ]
    return np.stack([m * a for m, a in modes])


def _depth(face: np.ndarray) -> np.ndarray:
    """(68,) depth toward the camera, template units: a rounded face with a protruding nose."""
    x, y = face[:, 0], face[:, 1]
    z = 0.5 * np.sqrt(np.clip(1 - (x / 1.05) ** 2, 0, 1)) * (1 - 0.15 * y ** 2)
    z[BRIDGE] += [0.12, 0.2, 0.28, 0.38]
    z[NOSTRILS] += [0.08, 0.13, 0.18, 0.13, 0.08]
    z[EYES] -= 0.08
    z[MOUTH[:12]] += 0.05
    z[MOUTH[12:]] += 0.02
    z[BROWS] += 0.02
    return z


def _mandible_weights(face: np.ndarray) -> np.ndarray:
    """(68,) how much each point follows the jaw when it opens (0: skull, 1: mandible)."""
    w = np.zeros(68)
    w[JAW] = np.clip((face[JAW, 1] - 0.25) / 0.65, 0, 1) ** 0.8
    w[[55, 56, 57, 58, 59, 65, 66, 67]] = 1.0
    w[CORNERS] = 0.5
    return w


def _expression_fields(q: np.ndarray, beta: np.ndarray) -> np.ndarray:
    """(C, 68, 2) displacement fields of the channels for one neutral face q (template units).

    Sizes follow the member's own geometry (identity × expression interaction) and each field is
    a β-mixture of two variants of the archetype (the member's expression style).
    """
    hw = (q[54, 0] - q[48, 0]) / 2                                   # mouth half-width
    eh = q[LOWER_LIDS, 1].mean() - q[UPPER_LIDS, 1].mean()           # eye opening
    bh = q[EYES, 1].mean() - q[BROWS, 1].mean()                      # brow–eye distance
    mouth_x = q[MOUTH, 0].mean()
    side = np.where(q[:, 0] < mouth_x, -1.0, 1.0)
    brow_u = np.clip((np.abs(q[:, 0] - mouth_x) - 0.15) / 0.6, 0, 1)   # 0 inner brow … 1 outer

    def f():
        return np.zeros((68, 2))

    # smile: A closed social smile, B broad smile showing teeth
    a, b = f(), f()
    a[CORNERS] = np.c_[0.22 * hw * side[CORNERS], np.full(4, -0.12 * hw)]
    a[NEAR_CORNERS] = np.c_[0.10 * hw * side[NEAR_CORNERS], np.full(8, -0.06 * hw)]
    a[[50, 51, 52, 56, 57, 58, 62, 66], 1] -= 0.02 * hw
    a[[31, 35]] += np.c_[0.03 * hw * side[[31, 35]], [-0.02 * hw] * 2]
    b[CORNERS] = np.c_[0.30 * hw * side[CORNERS], np.full(4, -0.08 * hw)]
    b[NEAR_CORNERS] = np.c_[0.15 * hw * side[NEAR_CORNERS], np.full(8, -0.05 * hw)]
    b[UPPER_LIP, 1] -= 0.08 * hw
    b[LOWER_LIP, 1] += 0.06 * hw
    b[LOWER_LIDS, 1] -= 0.25 * eh
    smile = (1 - beta[0]) * a + beta[0] * b
    # laugh (beyond smile and jaw): A lip raise + cheek push, B eyes squeezed shut
    a, b = f(), f()
    for g, squeeze in ((a, 1.0), (b, 1.5)):
        g[[49, 50, 51, 52, 53, 61, 62, 63], 1] -= 0.10 * hw
        g[CORNERS] += np.c_[0.10 * hw * side[CORNERS], np.full(4, -0.10 * hw)]
        g[LOWER_LIDS, 1] -= 0.45 * squeeze * eh
        g[UPPER_LIDS, 1] += 0.25 * squeeze * eh
        g[BROWS, 1] += 0.08 * bh
        g[[31, 35]] += np.c_[0.04 * hw * side[[31, 35]], [-0.03 * hw] * 2]
    laugh = (1 - beta[1]) * a + beta[1] * b
    # brow raise: A whole brow up, B inner brows up more (worried surprise)
    a, b = f(), f()
    a[BROWS, 1] = -0.45 * bh
    a[UPPER_LIDS, 1] = -0.4 * eh
    b[BROWS, 1] = -bh * (0.55 - 0.35 * brow_u[BROWS])
    b[UPPER_LIDS, 1] = -0.25 * eh
    brow_up = (1 - beta[2]) * a + beta[2] * b
    # frown: A brows down and together, B plus pressed lips and corners down
    a = f()
    a[BROWS, 1] = 0.3 * bh * (1 - 0.4 * brow_u[BROWS])
    a[BROWS, 0] = -0.05 * side[BROWS] * (1 - brow_u[BROWS])
    a[UPPER_LIDS, 1] = 0.2 * eh
    b = a.copy()
    b[[50, 51, 52], 1] += 0.03 * hw
    b[[56, 57, 58], 1] -= 0.04 * hw
    b[CORNERS, 1] += 0.08 * hw
    brow_down = (1 - beta[3]) * a + beta[3] * b
    # fear: A horizontal lip stretch with wide eyes, B grimace (lower lip down, neck tension)
    a = f()
    a[CORNERS] = np.c_[0.20 * hw * side[CORNERS], np.full(4, 0.06 * hw)]
    a[NEAR_CORNERS] = np.c_[0.10 * hw * side[NEAR_CORNERS], np.full(8, 0.03 * hw)]
    a[UPPER_LIP, 1] += 0.03 * hw
    a[LOWER_LIP, 1] -= 0.03 * hw
    a[INNER_BROWS] += np.c_[-0.03 * side[INNER_BROWS], np.full(4, -0.12 * bh)]
    a[UPPER_LIDS, 1] -= 0.3 * eh
    b = a.copy()
    b[CORNERS, 0] += 0.06 * hw * side[CORNERS]
    b[LOWER_LIP, 1] += 0.08 * hw
    b[5:12, 0] -= 0.01 * side[5:12]
    fear = (1 - beta[4]) * a + beta[4] * b
    # yawn (jaw drop comes from the jaw channel): eyes close, brows up, mouth narrows to an O
    yawn = f()
    yawn[UPPER_LIDS, 1] += 0.7 * eh
    yawn[LOWER_LIDS, 1] -= 0.2 * eh
    yawn[BROWS, 1] -= 0.15 * bh
    yawn[CORNERS, 0] -= 0.15 * hw * side[CORNERS]
    yawn[[31, 35], 0] += 0.03 * hw * side[[31, 35]]
    # drowsy lids: A lids only, B lids and corners down (boredom style)
    a = f()
    a[UPPER_LIDS, 1] += 0.35 * eh
    a[BROWS, 1] += 0.05 * bh
    b = a.copy()
    b[CORNERS, 1] += 0.06 * hw
    lid = (1 - beta[5]) * a + beta[5] * b
    return _FIELD_SCALE * np.stack([smile, laugh, brow_up, brow_down, fear, yawn, lid])


# ----------------------------------------------------------------------------- movie and audience


def _slow_positive(rng: np.random.Generator, n_t: int, width_s: float) -> np.ndarray:
    """(T,) smooth non-negative mood curve: softplus of smoothed unit noise, mostly low with bumps."""
    g = gaussian_filter1d(rng.standard_normal(n_t + 1), width_s, mode="reflect")[:n_t]
    g = g / max(g.std(), 1e-9)
    return np.logaddexp(0.0, 1.5 * g - 1.0)


def _decay(t: np.ndarray, t0: np.ndarray, tau: np.ndarray, rise_s: float = 0.0) -> np.ndarray:
    """(T, E) responses to events at t0: sharp onset (optional short rise), exponential decay tau."""
    dt = t[:, None] - t0[None, :]
    on = dt >= 0
    out = np.exp(-np.where(on, dt, 0.0) / tau) * on
    if rise_s > 0:
        out = out * (1 - np.exp(-(np.where(on, dt, 0.0) + 1.0) / rise_s))
    return out


def movie_drives(spec: IndependentSpec) -> tuple[np.ndarray, dict]:
    """(T, K) non-negative archetype drives d_k(t) of the movie and its event list."""
    rng = _rng(spec, "movie")
    n_t = spec.n_seconds
    t = np.arange(n_t, dtype=float)
    d = np.zeros((n_t, len(ARCHETYPES)))
    # tense scenes: plateaus with smooth ramps (fear, some frown)
    n_tense = max(1, rng.poisson(spec.tense_scenes_per_10min * n_t / 600))
    length = rng.uniform(20, 60, n_tense).clip(max=0.5 * n_t)
    start = rng.uniform(0, 1, n_tense) * (n_t - length)
    level = rng.uniform(0.6, 1.4, n_tense)
    plateau = (level * (1 / (1 + np.exp(-(t[:, None] - start) / 2.0)))
               * (1 / (1 + np.exp(-(start + length - t[:, None]) / 2.0)))).sum(1)
    d[:, 4] += plateau
    d[:, 3] += 0.5 * plateau
    # scares: spikes of surprise, a slower fear; half of them end a tense scene
    n_scare = max(1, rng.poisson(spec.scares_per_min * n_t / 60))
    t_scare = rng.uniform(0, n_t - 1, n_scare)
    ends = (start + length - rng.uniform(0, 5, n_tense)).clip(0, n_t - 1)
    t_scare[: min(n_scare // 2, n_tense)] = ends[: min(n_scare // 2, n_tense)]
    amp = rng.lognormal(0.3, 0.35, n_scare)
    d[:, 2] += _decay(t, t_scare, rng.uniform(1.0, 2.0, n_scare)) @ amp
    d[:, 4] += _decay(t, t_scare, rng.uniform(3.0, 6.0, n_scare), rise_s=0.7) @ (0.7 * amp)
    # jokes: sharp onset, exponential decay; big jokes make people laugh
    n_joke = max(1, rng.poisson(spec.jokes_per_min * n_t / 60))
    t_joke = rng.uniform(0, n_t - 1, n_joke)
    joke = rng.lognormal(0.0, 0.45, n_joke)
    d[:, 0] += _decay(t, t_joke, rng.uniform(4.0, 10.0, n_joke)) @ joke
    d[:, 1] += _decay(t, t_joke, rng.uniform(2.0, 4.0, n_joke)) @ (0.8 * joke ** 2)
    # moods: warm (smile), gloomy (frown)
    d[:, 0] += 0.5 * _slow_positive(rng, n_t, 40.0)
    d[:, 3] += 0.6 * _slow_positive(rng, n_t, 30.0)
    # boredom: slow, damped while things happen on screen
    activity = gaussian_filter1d(d[:, [0, 1, 2, 4]].sum(1), 10.0, mode="reflect")
    d[:, 5] = 1.6 * _slow_positive(rng, n_t, 50.0) * np.exp(-0.8 * activity)
    events = {"jokes_s": t_joke, "joke_size": joke, "scares_s": t_scare, "scare_size": amp,
              "tense_start_s": start, "tense_length_s": length, "tense_level": level}
    return d, events


@dataclass
class Audience:
    """Per-member ground truth of one audience (template units unless told)."""
    groups: np.ndarray          # (N,) int viewer type
    affinity: np.ndarray        # (N, K) a_ik > 0 (= true u)
    style: np.ndarray           # (N, K) β_ik ∈ (0, 1)
    laugh_threshold: np.ndarray  # (N,)
    yawn_threshold: np.ndarray  # (N,)
    jaw_max_rad: np.ndarray     # (N,)
    identity_coef: np.ndarray   # (N, M)
    size: np.ndarray            # (N,) face size factor s_i
    neutral: np.ndarray         # (N, 68, 2) neutral faces, template units (before s_i · px)
    depth: np.ndarray           # (N, 68)
    fields: np.ndarray          # (N, C, 68, 2) expression displacement fields, template units


def draw_audience(spec: IndependentSpec) -> Audience:
    rng = _rng(spec, "audience")
    n, k = spec.n_members, len(ARCHETYPES)
    groups = np.arange(n) % spec.n_groups
    rng.shuffle(groups)
    means = np.concatenate([_GROUP_MEANS, rng.normal(0, 0.5, (max(0, spec.n_groups - 4), k))])[: spec.n_groups]
    means = means + rng.normal(0, 0.15, means.shape)
    affinity = np.exp(means[groups] + rng.normal(0, spec.affinity_spread, (n, k))) * spec.affinity_scale
    style = rng.beta(2.0, 2.0, (n, k))
    laugh_threshold = np.exp(rng.normal(0.0, 0.25, n))
    yawn_threshold = np.exp(rng.normal(np.log(1.2), 0.2, n))
    jaw_max = np.deg2rad(spec.jaw_max_deg) * np.exp(rng.normal(0, 0.15, n))
    template = template_face().astype(float)
    modes = _identity_modes(template)
    coef = (rng.standard_normal((n, len(modes))) * spec.identity_std).clip(-2.5, 2.5)
    size = np.exp(rng.normal(0, spec.face_size_std, n))
    neutral = template + np.einsum("nm,mpd->npd", coef, modes)
    depth = np.broadcast_to(_depth(template), (n, 68)).copy()
    fields = np.stack([_expression_fields(neutral[i], style[i]) for i in range(n)]) * spec.expression_gain
    return Audience(groups=groups, affinity=affinity, style=style, laugh_threshold=laugh_threshold,
                    yawn_threshold=yawn_threshold, jaw_max_rad=jaw_max * spec.expression_gain,
                    identity_coef=coef, size=size, neutral=neutral, depth=depth, fields=fields)


# ----------------------------------------------------------------------------- renderer


def _s(x):
    return 1.0 - np.exp(-x)


def expression_channels(drives: np.ndarray, audience: Audience) -> tuple[np.ndarray, np.ndarray]:
    """(…, C) visible channel intensities in [0, 1] and (…,) jaw opening in [0, 1] from the drives
    r (N, T, K) — non-linear in several drives jointly (saturation, thresholds, competition)."""
    sm, la, su, fr, fe, bo = np.moveaxis(drives, -1, 0)
    lt = audience.laugh_threshold[:, None]
    yt = audience.yawn_threshold[:, None]
    smile = _s(1.3 * (sm + 0.5 * la)) * np.exp(-1.2 * fr) * (1 - 0.4 * _s(fe))
    laugh = _s(np.maximum(sm + la - lt, 0) / 0.6)
    up, down = su + 0.4 * fe, fr
    total = _s(np.maximum(up, down) + 0.25 * np.minimum(up, down))
    w_up = up ** 2 / (up ** 2 + down ** 2 + 1e-12)
    fear = _s(fe) * (1 - smile)
    yawn = _s(2.0 * np.maximum(bo - yt, 0) ** 2)
    lid = 0.35 * _s(bo)
    jaw = _s(1.6 * laugh + 0.8 * _s(1.5 * np.maximum(su - 0.8, 0)) + 0.8 * yawn)
    channels = np.stack([smile, laugh, total * w_up, total * (1 - w_up), fear, yawn, lid], -1)
    return channels, jaw


_HINGE_Y, _HINGE_Z, _HEAD_Z = -0.05, -0.9, -0.8


def render_frontal(channels: np.ndarray, jaw: np.ndarray, audience: Audience) -> np.ndarray:
    """(N, T, 68, 3) frontal 3-D faces in template units (x, y, depth) before size scaling."""
    xy = audience.neutral[:, None] + np.einsum("ntc,ncpd->ntpd", channels, audience.fields)
    z = np.broadcast_to(audience.depth[:, None], xy.shape[:-1])
    template = template_face().astype(float)
    angle = _mandible_weights(template)[None, None, :] * (audience.jaw_max_rad[:, None] * jaw)[..., None]
    dy, dz = xy[..., 1] - _HINGE_Y, z - _HINGE_Z
    c, s = np.cos(angle), np.sin(angle)
    y_new = _HINGE_Y + dy * c + dz * s
    z_new = _HINGE_Z - dy * s + dz * c
    return np.stack([xy[..., 0], y_new, z_new], -1)


def _rotation(angles: np.ndarray) -> np.ndarray:
    """(…, 3, 3) R = R_roll(z) · R_yaw(y) · R_pitch(x) from (…, 3) yaw, pitch, roll in radians."""
    yaw, pitch, roll = np.moveaxis(angles, -1, 0)
    cy, sy, cp, sp, cr, sr = np.cos(yaw), np.sin(yaw), np.cos(pitch), np.sin(pitch), np.cos(roll), np.sin(roll)
    one, zero = np.ones_like(yaw), np.zeros_like(yaw)
    rx = np.stack([one, zero, zero, zero, cp, -sp, zero, sp, cp], -1).reshape(angles.shape[:-1] + (3, 3))
    ry = np.stack([cy, zero, sy, zero, one, zero, -sy, zero, cy], -1).reshape(angles.shape[:-1] + (3, 3))
    rz = np.stack([cr, -sr, zero, sr, cr, zero, zero, zero, one], -1).reshape(angles.shape[:-1] + (3, 3))
    return rz @ ry @ rx


def pose_angles(spec: IndependentSpec) -> np.ndarray:
    """(N, T, 3) slow yaw / pitch / roll drift in radians, zero mean per member."""
    rng = _rng(spec, "pose")
    n, n_t = spec.n_members, spec.n_seconds
    g = gaussian_filter1d(rng.standard_normal((n, n_t + 1, 3)), spec.pose_smooth_s, axis=1, mode="reflect")[:, :n_t]
    g = g / g.reshape(-1, 3).std(0).clip(1e-9)
    g = g - g.mean(1, keepdims=True)
    amp = np.deg2rad(spec.pose_drift_deg) * np.exp(rng.normal(0, 0.3, (n, 1, 1))) * np.array([1.0, 0.8, 0.6])
    return g * amp


def head_motion(frontal: np.ndarray, angles: np.ndarray) -> np.ndarray:
    """(N, T, 68, 2) imperfectly frontalized faces: rotate about the head centre, project, re-centre."""
    centre = np.array([0.0, 0.0, _HEAD_Z])
    rotated = np.einsum("ntij,ntpj->ntpi", _rotation(angles), frontal - centre) + centre
    projected = rotated[..., :2]
    return projected - projected.mean(-2, keepdims=True) + frontal[..., :2].mean(-2, keepdims=True)


# ----------------------------------------------------------------------------- missing cells


def _missing_mask(spec: IndependentSpec, excitement: np.ndarray) -> np.ndarray:
    """(N, T) bool observed: long absences, plus short runs whose start hazard grows with excitement."""
    rng = _rng(spec, "missing")
    n, n_t = excitement.shape
    absent = np.zeros((n, n_t), bool)
    leaves = rng.random(n) < spec.absence_prob
    lengths = (n_t * rng.uniform(0.05, 0.15, n)).astype(int).clip(1, n_t)
    starts = (rng.random(n) * (n_t - lengths + 1)).astype(int)
    for i in np.flatnonzero(leaves):
        absent[i, starts[i]:starts[i] + lengths[i]] = True
    uniform = rng.random((n, n_t))
    run = rng.geometric(1.0 / spec.mean_run_s, (n, n_t))
    weight = 1.0 + spec.turn_away_gain * excitement
    t = np.arange(n_t)

    def missing(base: float) -> np.ndarray:
        start = uniform < base * weight
        end = np.where(start, t + run, -1)
        return absent | (np.maximum.accumulate(end, axis=1) > t)

    lo, hi = 0.0, 1.0 / weight.max()
    if missing(lo).mean() < spec.missing_target:
        for _ in range(40):
            mid = 0.5 * (lo + hi)
            lo, hi = (mid, hi) if missing(mid).mean() < spec.missing_target else (lo, mid)
    mask = ~missing(hi if missing(lo).mean() < spec.missing_target else lo)
    for i in np.flatnonzero(mask.sum(1) < 2):                          # keep every member seen
        mask[i, rng.choice(n_t, size=min(2, n_t), replace=False)] = True
    return mask


# ----------------------------------------------------------------------------- the movie


def make_independent_movie(spec: IndependentSpec = IndependentSpec(),
                           movie: str = "independent") -> tuple[MovieTensor, dict]:
    """Return (tensor, truth); truth holds u, v, groups, the clean faces, the pose residue, the oracle."""
    n, n_t = spec.n_members, spec.n_seconds
    d, events = movie_drives(spec)                                    # (T, K)
    audience = draw_audience(spec)
    u = audience.affinity                                             # (N, K)
    drives = u[:, None, :] * d[None, :, :]                            # r_ikt = u_ik v_tk
    channels, jaw = expression_channels(drives, audience)
    frontal = render_frontal(channels, jaw, audience)                 # (N, T, 68, 3) template units
    unit = (PX_PER_UNIT * audience.size)[:, None, None, None]
    oracle = frontal[..., :2] * unit
    clean = head_motion(frontal, pose_angles(spec)) * unit
    neutral = audience.neutral * unit[:, 0]
    excitement = np.clip(channels[..., 1] + channels[..., 4] + 0.7 * channels[..., 2] + channels[..., 5], 0, 2)
    mask = _missing_mask(spec, excitement)

    oracle = oracle.reshape(n, n_t, N_COORDS)
    clean = clean.reshape(n, n_t, N_COORDS)
    residue = clean - oracle
    noise = spec.noise_std * _rng(spec, "noise").standard_normal(clean.shape)
    landmarks = (clean + noise).astype(np.float32)
    landmarks[~mask] = np.nan
    floor = N_COORDS * spec.noise_std ** 2
    oracle_mse = floor + float((residue[mask] ** 2).sum(-1).mean())
    ratio = oracle_mse / floor

    u32, v32 = u.astype(np.float32), d.astype(np.float32)
    groups = audience.groups.astype(np.int64)
    member_id = np.array([f"m{i:03d}" for i in range(n)], dtype=object)
    session_id = np.array([f"s{i % spec.n_sessions}" for i in range(n)], dtype=object)
    template_px = template_face().reshape(-1).astype(float) * PX_PER_UNIT
    tensor = MovieTensor(landmarks=landmarks, mask=mask, member_id=member_id, session_id=session_id,
                         movie=movie, bin_seconds=1.0, units="synthetic pixel-like units (inter-ocular ≈ 60)",
                         extra={"true_u": u32, "true_group": groups, "true_v": v32},
                         attrs={"noise_floor": float(floor), "noise_std": float(spec.noise_std),
                                "oracle_mse": float(oracle_mse), "oracle_ratio": float(ratio)})
    truth = {"u": u32, "v": v32, "groups": groups, "group_names": GROUP_NAMES[: spec.n_groups],
             "noise_floor": float(floor), "oracle_mse": float(oracle_mse), "oracle_ratio": float(ratio),
             "clean": clean.astype(np.float32), "oracle": oracle.astype(np.float32),
             "pose_residue": residue.astype(np.float32),
             "displacement": (oracle - neutral.reshape(n, 1, N_COORDS)).astype(np.float32),
             "neutral": neutral.reshape(n, N_COORDS).astype(np.float32),
             "identity": (neutral.reshape(n, N_COORDS) - template_px).astype(np.float32),
             "identity_coef": audience.identity_coef, "channels": channels.astype(np.float32),
             "channel_names": CHANNELS, "jaw": jaw.astype(np.float32), "excitement": excitement,
             "archetypes": ARCHETYPES, "events": events, "audience": audience}
    return tensor, truth
