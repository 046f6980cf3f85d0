"""The perceptual facial-expression VAE (Mikheeva, Ek, Kjellström, FG 2018), on landmark vectors.

m1, a VAE conditioned on the member's neutral face y_i:
    q(z | x, y) = N(μ(x, y), diag σ²(x, y)),  p(z) = N(0, I),  x ~ N(y + g(z, y), σ² I).
Encoder and decoder are MLPs (the paper's images become 136-vectors); the decoder adds
its output to y, so the face's identity is given and the latent is free to code the
expression. Its output layer starts at zero: the untrained model predicts the neutral face.

m2 = m1 plus the paper's topological prior from triplets (ref, more similar +, less
similar −, weight w):
    Φ = Σ_triplets w · softplus(d(z_ref, z+) − d(z_ref, z−)),   loss += Φ / γ
with d the Euclidean distance between posterior means μ(x, y) and γ the "topological
variance". Φ is a sum over the whole triplet set, spread over the observed faces like
the other priors (each step adds (M / n_obs) × the mean over a batch of
models.perceptual.triplet_batch triplets), so data batches and triplet batches form
one loss. models.kl_warmup_epochs anneals the KL term from 0 to 1 (anneal=kl, the
paper's first option) or the whole prior, KL and Φ together (anneal=prior).

The neutral face (no labels needed): a member's calmest faces are the fraction
models.perceptual.neutral_fraction of its training faces nearest (Euclidean, 136-d)
its per-coordinate median face, and y is their medoid (the calm face with the smallest
summed distance to the other calm faces): a real face of the member, typical and
low-expression, robust to a member who reacts often. With models.member_offsets (the
default) the faces are minus the member's mean face, so y is the member's neutral face
relative to its own mean; the benchmark (bench/bench_expression_models.py) uses raw
faces (member_offsets=false), the paper's setting.

A missing face (i, t) is predicted from the member's mean latent (like the plain VAE):
these models code one face at a time and carry no time factor. New members: y from
their seen faces by the same rule, their code the mean posterior mean of those faces.
"""
from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F

from models.fvae import Encoder, reparameterize
from models.nets import ObsNoise, TorchModel, decoder_mlp, kl_normal, mean_per_row, seen_faces
from pipeline.store import N_COORDS, DataError

MAX_CALM = 600      # calm faces compared pairwise for the medoid at most (evenly thinned beyond)


def neutral_face(faces: torch.Tensor, fraction: float) -> tuple[torch.Tensor, int]:
    """(F, D) faces of one member → (its neutral face (D,), the chosen face's index): the medoid of
    the `fraction` of faces nearest the member's per-coordinate median face."""
    median = faces.median(0).values
    dist = (faces - median).norm(dim=1)
    n_calm = max(1, int(np.ceil(fraction * len(faces))))
    calm = torch.argsort(dist)[:n_calm]
    if len(calm) > MAX_CALM:
        calm = calm[torch.linspace(0, len(calm) - 1, MAX_CALM).long()]
    pair = torch.cdist(faces[calm].double(), faces[calm].double())
    best = calm[int(pair.sum(1).argmin())]
    return faces[best], int(best)


def neutral_faces(x: torch.Tensor, mask: torch.Tensor, fraction: float, min_faces: int,
                  member_id=None, fallback: torch.Tensor | None = None) -> torch.Tensor:
    """(N, D) neutral face per member of x (N, T, D) over mask (N, T).

    A member with fewer than min_faces faces is a DataError naming it and the fix, unless
    `fallback` (D,) is given, which it then gets when it has no face at all."""
    counts = mask.sum(1)
    few = torch.nonzero(counts < min_faces).flatten().tolist()
    if few and fallback is None:
        names = [str(member_id[i]) if member_id is not None else f"row {i}" for i in few[:8]]
        raise DataError(f"{len(few)} member(s) have fewer than {min_faces} training faces to choose a neutral face "
                        f"from: {', '.join(names)}{' …' if len(few) > 8 else ''} "
                        f"({', '.join(str(int(counts[i])) for i in few[:8])} faces). Lower "
                        f"models.perceptual.min_faces, or leave these members out of the tensor.")
    out = torch.zeros(x.shape[0], x.shape[2], device=x.device, dtype=x.dtype)
    for i in range(x.shape[0]):
        if counts[i] == 0:
            out[i] = fallback
            continue
        out[i] = neutral_face(x[i][mask[i]], fraction)[0]
    return out


class NeutralFaceVAE(TorchModel):
    """m1: VAE with the member's neutral face as an extra input of encoder and decoder."""
    kind = "m1"
    finalize_sets_state = True

    def __init__(self, n_members: int, n_seconds: int, k: int, hidden: int = 256, layers: int = 3,
                 obs_std: float | None = None, d: int = N_COORDS, neutral_fraction: float = 0.2,
                 min_faces: int = 5, **_):
        super().__init__()
        self._args = dict(n_members=n_members, n_seconds=n_seconds, k=k, hidden=hidden, layers=layers,
                          obs_std=obs_std, d=d, neutral_fraction=neutral_fraction, min_faces=min_faces)
        self.d, self.k = d, k
        self.neutral_fraction, self.min_faces = neutral_fraction, min_faces
        self.encoder = Encoder(2 * d, hidden, layers, k)          # [x, y] → μ, log σ²
        self.decoder = decoder_mlp(k + d, hidden, layers, d)      # [z, y] → g; face = y + g
        self.noise = ObsNoise(obs_std)
        self.register_buffer("neutral", torch.zeros(n_members, d))   # (N, D) y_i
        self.register_buffer("member_z", torch.zeros(n_members, k))  # (N, K) mean latent per member

    @classmethod
    def extra_config(cls, models_cfg) -> dict:
        p = models_cfg.perceptual
        return {"neutral_fraction": p.neutral_fraction, "min_faces": p.min_faces}

    # ------------------------------------------------------------------ the model

    def encode(self, x: torch.Tensor, y: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        return self.encoder(torch.cat([x, y], -1))

    def decode(self, z: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        return y + self.decoder(torch.cat([z, y.to(z.dtype)], -1)).float()

    @torch.no_grad()
    def prepare(self, faces) -> None:
        """The members' neutral faces from their training faces (deterministic)."""
        member_id = None if faces.movie is None else faces.movie.member_id
        self.neutral.copy_(neutral_faces(faces.x, faces.mask, self.neutral_fraction, self.min_faces, member_id))

    def loss(self, x: torch.Tensor, i: torch.Tensor, t: torch.Tensor, n_obs: int, beta: float = 1.0) -> dict:
        y = self.neutral[i]
        mu, logvar = self.encode(x, y)
        recon = self.noise.nll(self.decode(reparameterize(mu, logvar), y), x).mean()
        kl = kl_normal(mu, logvar, torch.zeros_like(mu)).mean()
        return {"loss": recon + beta * kl, "recon": recon, "kl": kl, "obs_std": self.noise.typical()}

    @torch.no_grad()
    def finalize(self, faces) -> None:
        """member_z[i] = mean posterior mean over member i's training faces (deterministic)."""
        mu = torch.cat([self.encode_faces(faces.x[faces.i[s:s + 65536], faces.t[s:s + 65536]], faces.i[s:s + 65536])
                        for s in range(0, faces.n_observed, 65536)])
        self.member_z.copy_(mean_per_row(mu, faces.i, len(self.member_z), torch.zeros(1, self.k, device=mu.device)))

    # ------------------------------------------------------------------ the protocol

    @torch.no_grad()
    def encode_faces(self, x: torch.Tensor, i: torch.Tensor) -> torch.Tensor:
        """(B, 136) faces of members i → (B, K) posterior means: the expression code."""
        return self.encode(x, self.neutral[i])[0]

    @torch.no_grad()
    def encode_new(self, x: torch.Tensor, seen: torch.Tensor) -> torch.Tensor:
        """Posterior means (M, K) of new members' seen faces x (R, T, 136), seen (R, T), in
        torch.nonzero(seen) order, each with its member's neutral face chosen from those faces."""
        y = neutral_faces(x, seen, self.neutral_fraction, 1, fallback=self.neutral.mean(0))
        i, _, faces = seen_faces(x, seen)
        return self.encode(faces, y[i])[0]

    def codes(self) -> torch.Tensor:
        """(N, D + K): each member's neutral face and mean latent."""
        return torch.cat([self.neutral, self.member_z], -1)

    def predict_rows(self, codes: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
        return self.decode(codes[:, self.d:], codes[:, :self.d])

    def predict(self, i: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
        return self.decode(self.member_z[i], self.neutral[i])

    def reconstruct(self, x: torch.Tensor, i: torch.Tensor | None = None) -> torch.Tensor:
        y = self.neutral[i] if i is not None else self.neutral.mean(0, keepdim=True).expand_as(x)
        return self.decode(self.encode(x, y)[0], y)

    def decode_latent(self, z: torch.Tensor) -> torch.Tensor:
        """Latents (B, K) decoded on the audience's mean neutral face."""
        return self.decode(z, self.neutral.mean(0, keepdim=True).expand(len(z), -1))

    @torch.no_grad()
    def infer_codes(self, x: torch.Tensor, seen: torch.Tensor, steps: int = 0, lr: float = 0.0) -> torch.Tensor:
        """New members: neutral face from their seen faces (the same rule, any number of faces; the
        audience's mean neutral face for a member with none), code the mean posterior mean."""
        y = neutral_faces(x, seen, self.neutral_fraction, 1, fallback=self.neutral.mean(0))
        i, _, faces = seen_faces(x, seen)
        z = mean_per_row(self.encode(faces, y[i])[0], i, len(x), self.member_z.mean(0, keepdim=True))
        return torch.cat([y, z], -1)


class TripletVAE(NeutralFaceVAE):
    """m2: m1 plus the topological prior Φ / γ from a triplet file (models.perceptual.triplets)."""
    kind = "m2"

    def __init__(self, n_members: int, n_seconds: int, k: int, *args, triplets: str | None = None,
                 gamma: float = 0.1, triplet_batch: int = 256, anneal: str = "kl", **kwargs):
        super().__init__(n_members, n_seconds, k, *args, **kwargs)
        self._args.update(triplets=triplets, gamma=gamma, triplet_batch=triplet_batch, anneal=anneal)
        self.triplets_path, self.gamma, self.triplet_batch, self.anneal = triplets, gamma, triplet_batch, anneal
        self._trip_x = self._trip_rows = self._trip_w = None      # set by prepare (training only)
        self.n_triplets = 0

    @classmethod
    def extra_config(cls, models_cfg) -> dict:
        p = models_cfg.perceptual
        return {**super().extra_config(models_cfg), "triplets": p.triplets, "gamma": p.gamma,
                "triplet_batch": p.triplet_batch, "anneal": p.anneal}

    @torch.no_grad()
    def prepare(self, faces) -> None:
        """Neutral faces, then the triplets' faces (only triplets whose three faces are training faces)."""
        from models.triplets import read_triplets, resolve

        super().prepare(faces)
        if not self.triplets_path:
            raise DataError("model m2 needs triplets: set models.perceptual.triplets to a triplet file "
                            "(data/README.md, 'Triplets'; bench/bench_expression_models.py shows how to generate "
                            "artificial ones from labels), or train m1.")
        if faces.movie is None:
            raise DataError("m2 resolves its triplets' faces by member and second: train it through "
                            "models.train.fit_model (which passes the movie with the faces).")
        movie = faces.movie
        rows, bins, weight, dropped = resolve(read_triplets(self.triplets_path), movie.member_id, movie.bin_seconds,
                                              movie.mask, faces.mask.cpu().numpy(), str(self.triplets_path))
        if len(weight) == 0:
            raise DataError(f"{self.triplets_path}: none of its triplets has all three faces among the training "
                            f"faces ({dropped} name faces held out for testing or validation). Give triplets over "
                            f"training faces, or train on every face (train --split all).")
        if dropped:
            print(f"[models] m2: {dropped} of {dropped + len(weight)} triplets name held-out faces; left out")
        dev = faces.x.device
        self._trip_rows = torch.as_tensor(rows, device=dev)                         # (M, 3)
        self._trip_x = faces.x[self._trip_rows, torch.as_tensor(bins, device=dev)]  # (M, 3, D)
        self._trip_w = torch.as_tensor(weight, device=dev)
        self.n_triplets = len(weight)

    def triplet_prior(self, pick: torch.Tensor) -> torch.Tensor:
        """Mean over triplets `pick` of w · softplus(d(z_ref, z+) − d(z_ref, z−)) on posterior means."""
        x, rows = self._trip_x[pick], self._trip_rows[pick]                          # (B, 3, D), (B, 3)
        mu = self.encode(x.reshape(-1, self.d), self.neutral[rows.reshape(-1)])[0].reshape(len(pick), 3, -1)
        d_pos = (mu[:, 0] - mu[:, 1]).norm(dim=-1)
        d_neg = (mu[:, 0] - mu[:, 2]).norm(dim=-1)
        return (self._trip_w[pick] * F.softplus(d_pos - d_neg)).mean()

    def loss(self, x: torch.Tensor, i: torch.Tensor, t: torch.Tensor, n_obs: int, beta: float = 1.0) -> dict:
        terms = super().loss(x, i, t, n_obs, beta)
        if self._trip_x is None:
            raise RuntimeError("TripletVAE.loss before prepare(): its triplets are not loaded")
        pick = torch.randint(self.n_triplets, (min(self.triplet_batch, self.n_triplets),), device=x.device)
        phi = self.triplet_prior(pick) * self.n_triplets / max(n_obs, 1) / self.gamma
        weight = beta if self.anneal == "prior" else 1.0
        terms.update(loss=terms["loss"] + weight * phi, triplet=phi)
        return terms


class NeutralFaceFVAE(NeutralFaceVAE):
    """m1fvae: the FVAE's factorization on top of m1's code (issue 12, "together with the FVAE").

    m1's encoder and decoder (both given the member's neutral face y_i), with the FVAE's prior
    on the code, z_it ~ N(U_i∘V_t, I) (U log-normal, V normal, MAP), and its predictive term
    w·(−log N(x; y_i + g(U_i∘V_t, y_i), σ²I)) (models.predictive_weight, as models/fvae.py). A
    missing face (i, t) is y_i + g(U_i∘V_t, y_i): U∘V factorizes an expression code whose
    identity part the neutral face already carries. New members: y from their seen faces (m1's
    rule), then log U by MAP under the training members' prior (models.nets.infer_log_u).
    """
    kind = "m1fvae"
    finalize_sets_state = False

    def __init__(self, n_members: int, n_seconds: int, k: int, hidden: int = 256, layers: int = 3,
                 u_prior_std: float = 1.0, v_prior_std: float = 1.0, obs_std: float | None = None,
                 d: int = N_COORDS, neutral_fraction: float = 0.2, min_faces: int = 5,
                 predictive_weight: float = 1.0, **_):
        super().__init__(n_members, n_seconds, k, hidden=hidden, layers=layers, obs_std=obs_std, d=d,
                         neutral_fraction=neutral_fraction, min_faces=min_faces)
        from models.nets import Factors

        self._args.update(u_prior_std=u_prior_std, v_prior_std=v_prior_std, predictive_weight=predictive_weight)
        self.predictive_weight = predictive_weight
        self.factors = Factors(n_members, n_seconds, k, u_prior_std, v_prior_std)
        del self.member_z                     # the code of (i, t) is U_i∘V_t, not a member mean

    @classmethod
    def extra_config(cls, models_cfg) -> dict:
        return {**super().extra_config(models_cfg), "predictive_weight": models_cfg.predictive_weight}

    def loss(self, x: torch.Tensor, i: torch.Tensor, t: torch.Tensor, n_obs: int, beta: float = 1.0) -> dict:
        y = self.neutral[i]
        mu, logvar = self.encode(x, y)
        prior_mean = self.factors.latent(i, t)
        recon = self.noise.nll(self.decode(reparameterize(mu, logvar), y), x).mean()
        kl = kl_normal(mu, logvar, prior_mean).mean()
        prior = self.factors.neg_log_prior() / n_obs
        terms = {"recon": recon, "kl": kl, "prior": prior, "obs_std": self.noise.typical()}
        loss = recon + beta * kl + prior
        if self.predictive_weight > 0:
            terms["predictive"] = self.noise.nll(self.decode(prior_mean, y), x).mean()
            loss = loss + self.predictive_weight * terms["predictive"]
        return {"loss": loss, **terms}

    def finalize(self, faces) -> None:
        pass

    def codes(self) -> torch.Tensor:
        """(N, D + K): each member's neutral face and log U."""
        return torch.cat([self.neutral, self.factors.log_u], -1)

    def predict_rows(self, codes: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
        return self.decode(self.factors.latent_rows(codes[:, self.d:], t), codes[:, :self.d])

    def predict(self, i: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
        return self.decode(self.factors.latent(i, t), self.neutral[i])

    def latents(self) -> tuple[torch.Tensor, torch.Tensor]:
        return self.factors.log_u.exp(), self.factors.v

    def row_objective(self, log_u_rows: torch.Tensor, target: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
        """A new member's U terms of the loss: ½‖μ − u∘v_t‖² + w·(−log N(x; y + g(u∘v_t, y), σ²I)).
        target (B, D + D + K): the face, its member's neutral face, its posterior mean."""
        x, y, mu = target[:, :self.d], target[:, self.d:2 * self.d], target[:, 2 * self.d:]
        z = self.factors.latent_rows(log_u_rows, t)
        loss = 0.5 * ((mu - z) ** 2).sum(-1)
        if self.predictive_weight > 0:
            loss = loss + self.predictive_weight * self.noise.nll(self.decode(z, y), x)
        return loss

    def infer_codes(self, x: torch.Tensor, seen: torch.Tensor, steps: int, lr: float) -> torch.Tensor:
        from models.nets import infer_log_u

        with torch.no_grad():
            y = neutral_faces(x, seen, self.neutral_fraction, 1, fallback=self.neutral.mean(0))
            i, t, faces = seen_faces(x, seen)
            target = torch.cat([faces, y[i], self.encode(faces, y[i])[0]], -1)
        return torch.cat([y, infer_log_u(self, target, i, t, len(x), steps, lr)], -1)
