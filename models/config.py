"""Configuration sections of the models (owned by models/).

Three sections: `models` (what is fitted: K, network sizes, priors, TF solver),
`train` (how the torch models are optimized: epochs, batches, device, resume),
`evaluate` (the paper's protocols: splits, K sweep, λ list, clustering).
configs/default.yaml repeats every field with a comment; configs/paper.yaml is
the paper's recipe as an overlay.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Literal, Optional

from models import registry  # light: the registry imports no model at import


@dataclass(frozen=True)
class TFConfig:
    max_iters: int = 200           # alternating least-squares sweeps at most
    tol: float = 1e-4              # stop when the training loss improves by less than this fraction
    ridge: float = 1e-4            # L2 weight on U, V, F per observed face (keeps the K×K systems well posed)
    ridge_grid: tuple[float, ...] = (1e-4, 1e-2, 0.1, 1.0, 10.0)  # with validation: ridge chosen from these
    hals_sweeps: int = 3           # HALS coordinate sweeps for the non-negative U per ALS iteration

    def __post_init__(self):
        if self.max_iters < 1 or self.tol < 0 or self.ridge < 0 or self.hals_sweeps < 1:
            raise ValueError("models.tf: max_iters and hals_sweeps must be >= 1, tol and ridge >= 0")
        if not self.ridge_grid or any(r < 0 for r in self.ridge_grid):
            raise ValueError("models.tf.ridge_grid: give at least one ridge, all >= 0")


@dataclass(frozen=True)
class PerceptualConfig:
    """The perceptual VAE with a neutral face (m1) and its triplet prior (m2); models/perceptual_vae.py."""
    neutral_fraction: float = 0.2  # a member's calmest faces: this fraction of its faces nearest its median face
    min_faces: int = 5             # a member needs at least this many training faces to choose a neutral face
    triplets: Optional[str] = None  # m2: CSV of triplets (data/README.md "Triplets"); m2 without one is an error
    gamma: float = 0.1             # topological variance γ: the triplet prior Φ is weighted by 1/γ
    triplet_batch: int = 256       # triplets drawn per optimizer step
    anneal: Literal["kl", "prior"] = "kl"  # kl_warmup_epochs ramps the KL only, or the whole prior (KL + Φ/γ)

    def __post_init__(self):
        if not 0 < self.neutral_fraction <= 1 or self.min_faces < 1:
            raise ValueError("models.perceptual: neutral_fraction must be in (0, 1] and min_faces >= 1")
        if self.gamma <= 0 or self.triplet_batch < 1 or self.anneal not in ("kl", "prior"):
            raise ValueError("models.perceptual: gamma must be > 0, triplet_batch >= 1, anneal kl or prior")


@dataclass(frozen=True)
class StaticDynamicConfig:
    """The static/dynamic VAE from unordered frames (sdvae); models/static_dynamic_vae.py."""
    f_dim: int = 8                 # static latent f per member (identity, resting face)
    z_dim: int = 2                 # dynamic latent z per face (the expression at that second; the paper uses 2)
    n_frames: int = 8              # random frames of a member per training step, compared in all pairs, → f
    eval_frames: int = 32          # frames (evenly spread) f is computed from after training and for new members

    def __post_init__(self):
        if min(self.f_dim, self.z_dim) < 1 or self.n_frames < 2 or self.eval_frames < 2:
            raise ValueError("models.static_dynamic: f_dim and z_dim must be >= 1, n_frames and eval_frames >= 2")


@dataclass(frozen=True)
class ModelsConfig:
    k: int = 10                    # latent dimension K (factors per member and per second)
    hidden: int = 256              # width of every hidden fully connected layer (decoder and encoder)
    layers: int = 3                # hidden ReLU layers in the decoder f_θ and in the FVAE/VAE encoder
    u_prior_std: float = 1.0       # std of the normal prior on log U (U is log-normal)
    v_prior_std: float = 1.0       # std of the normal prior on V
    obs_std: Optional[float] = None  # σ of x ~ N(f(z), σ²I) in normalized units; null: learned (paper: 1.0)
    obs_noise: Literal["shared", "per_coordinate"] = "per_coordinate"  # FVAE, σ learned: one σ for all 136
                                   # coordinates, or one each (the quiet brows then count; bench_reactions seed 101)
    kl_weight: float = 1.0         # weight β of KL(q(z|x) || N(U∘V, I)) in the FVAE (and VAE) loss
    kl_warmup_epochs: int = 0      # ramp β linearly from 0 over this many epochs (0: full weight at once)
    predictive_weight: float = 1.0  # FVAE: weight of −log N(x; f(U∘V), σ²I) added to the −ELBO (0: the paper's loss)
    member_offsets: bool = True    # fit expressions around each member's own mean face (added back when predicting)
    coordinate_scale: Literal["pooled", "noise"] = "noise"  # normalize every coordinate by one scale, or
                                   # each by its own landmark noise (the models then weigh coordinates by 1/noise²)
    names: tuple[str, ...] = ("tf", "nltf", "fvae")  # models that train / completion / ksweep / longterm fit
    tf: TFConfig = field(default_factory=TFConfig)   # tensor factorization (masked ALS) settings
    perceptual: PerceptualConfig = field(default_factory=PerceptualConfig)   # m1 / m2 settings
    static_dynamic: StaticDynamicConfig = field(default_factory=StaticDynamicConfig)   # sdvae settings

    def __post_init__(self):
        if self.k < 1 or self.hidden < 1 or self.layers < 1:
            raise ValueError(f"models: k, hidden and layers must be >= 1 (got k={self.k}, "
                             f"hidden={self.hidden}, layers={self.layers})")
        if ((self.obs_std is not None and self.obs_std <= 0) or self.u_prior_std <= 0 or self.v_prior_std <= 0
                or min(self.kl_weight, self.kl_warmup_epochs, self.predictive_weight) < 0):
            raise ValueError("models: prior stds must be > 0; kl_weight, kl_warmup_epochs and predictive_weight >= 0")
        if self.coordinate_scale not in ("pooled", "noise"):
            raise ValueError(f"models.coordinate_scale must be 'pooled' or 'noise', got {self.coordinate_scale!r}")
        if self.obs_noise not in ("shared", "per_coordinate"):
            raise ValueError(f"models.obs_noise must be 'shared' or 'per_coordinate', got {self.obs_noise!r}")
        unknown = [m for m in self.names if m not in registry.REGISTRY]
        if unknown or not self.names:
            raise ValueError(f"models.names: unknown model(s) {unknown}; choose from {', '.join(registry.REGISTRY)}")


@dataclass(frozen=True)
class TrainConfig:
    seed: int = 0                  # seeds initialization and batch order; equal seeds give equal runs
    epochs: int = 100              # passes over the observed training faces at most (validation stops earlier)
    batch_size: int = 512          # faces per optimizer step, sampled by index on the device
    lr: float = 3e-3               # Adam learning rate of the networks
    factor_lr: float = 3e-2        # Adam learning rate of the per-member U and per-second V
    weight_decay: float = 0.0      # AdamW weight decay on network weights (not on U, V)
    device: Literal["auto", "cpu", "cuda"] = "auto"  # auto: CUDA when present, else CPU
    amp: bool = True               # bf16 autocast for the networks on CUDA (never on CPU)
    cpu_threads: int = 1           # torch threads while training on CPU (0: torch's default); small MLPs gain
                                   # little from more, and on busy cores extra threads spin and slow down
    compile: bool = False          # torch.compile the networks (CUDA; slow to start)
    validation_every: int = 10     # 1 in this many of each member's training faces is held back to choose the
                                   # epoch (NLTF/FVAE/VAE) or the ridge (TF) on; 0: no validation
    patience: int = 10             # stop after this many epochs without a kept improvement (0: never)
    checkpoint_every: int = 1      # write a checkpoint every this many epochs (and always the last)
    checkpoint_seconds: float = 10.0  # ... but not sooner than this after the previous one (0: no wait): saving
                                   # a small model every epoch took longer than training it
    keep_checkpoints: int = 2      # epoch checkpoints kept on disk (older ones are deleted)
    progress: bool = True          # tqdm progress bar with the loss terms

    def __post_init__(self):
        if self.cpu_threads < 0:
            raise ValueError("train.cpu_threads must be >= 0 (0: torch default)")
        if self.validation_every < 0 or self.validation_every == 1 or self.patience < 0:
            raise ValueError("train.validation_every must be 0 (off) or >= 2, train.patience >= 0")
        if self.epochs < 1 or self.batch_size < 1 or self.checkpoint_every < 1 or self.keep_checkpoints < 1:
            raise ValueError("train: epochs, batch_size, checkpoint_every and keep_checkpoints must be >= 1")
        if self.checkpoint_seconds < 0:
            raise ValueError("train.checkpoint_seconds must be >= 0 (0: a checkpoint every checkpoint_every epochs)")
        if self.lr <= 0 or self.factor_lr <= 0 or self.weight_decay < 0:
            raise ValueError("train: lr and factor_lr must be > 0 and weight_decay >= 0")


@dataclass(frozen=True)
class EvaluateConfig:
    seed: int = 0                  # seeds the held-out splits (faces and members)
    holdout_every: int = 6         # completion: 1 in this many observed faces per member is held out (5:1)
    ks: tuple[int, ...] = (2, 4, 8, 10, 16, 32)   # K sweep values
    ksweep_epochs: Optional[int] = None  # epochs per K-sweep fit (None: train.epochs)
    test_member_fraction: float = 0.2   # long-term: fraction of members held out entirely
    lambdas: tuple[float, ...] = (0.001, 0.01, 0.05, 0.1, 0.2, 0.4, 0.6, 0.8)  # observed movie prefixes
    infer_steps: int = 300         # Adam steps to estimate a new member's U with everything else frozen
    infer_lr: float = 0.05         # learning rate of those steps
    clusters: int = 3              # k-means clusters of the rows of U (factors protocol)
    sweep_points: int = 7          # faces drawn along each latent dimension
    batch_size: int = 65536        # faces per prediction batch

    def __post_init__(self):
        if self.holdout_every < 2:
            raise ValueError("evaluate.holdout_every must be >= 2 (6 gives the paper's 5:1 split)")
        if not 0 < self.test_member_fraction < 1:
            raise ValueError("evaluate.test_member_fraction must be in (0, 1)")
        if any(not 0 < lam < 1 for lam in self.lambdas):
            raise ValueError("evaluate.lambdas must lie in (0, 1)")
        if any(k < 1 for k in self.ks) or self.clusters < 1 or self.sweep_points < 2:
            raise ValueError("evaluate: ks and clusters must be >= 1, sweep_points >= 2")
