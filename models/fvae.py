"""FVAE (Deng et al. 2017, eq. 6) and a plain per-face VAE baseline.

FVAE: q_φ(z_it | x_it) = N(μ_φ(x), diag σ²_φ(x)), prior z_it ~ N(U_i ∘ V_t, I),
x_it ~ N(f_θ(z_it), I), U log-normal and V normal with MAP estimates, trained
end to end on observed faces. A missing face (i, t) is predicted by decoding
the prior mean: f_θ(U_i ∘ V_t).

The ELBO trains f_θ only at encoder samples z ~ q(z|x) and pulls U∘V toward the
encoder means in latent space, where every latent direction counts the same
whatever it does to the face; nothing trains the prediction f_θ(U∘V) itself.
With `predictive_weight` w > 0 the loss adds w·(−log N(x; f_θ(U_i∘V_t), σ²I)),
the likelihood of the face under the prediction (NLTF's data term) on the same
decoder and factors; w = 0 is the paper's loss.
"""
from __future__ import annotations

import torch
from torch import nn

from models.nets import (Factors, ObsNoise, TorchModel, decoder_mlp, infer_log_u, kl_normal, mean_per_row, mlp,
                         seen_faces)
from pipeline.store import N_COORDS


class Encoder(nn.Module):
    """x (B, 136) → (μ, log σ²), each (B, K)."""

    def __init__(self, d: int, hidden: int, layers: int, k: int):
        super().__init__()
        self.net = mlp(d, hidden, layers, 2 * k)

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        mu, logvar = self.net(x).float().chunk(2, dim=-1)
        return mu, logvar.clamp(-12.0, 8.0)


def reparameterize(mu: torch.Tensor, logvar: torch.Tensor) -> torch.Tensor:
    return mu + (0.5 * logvar).exp() * torch.randn_like(mu)


class FVAE(TorchModel):
    kind = "fvae"

    def __init__(self, n_members: int, n_seconds: int, k: int, hidden: int = 256, layers: int = 3,
                 u_prior_std: float = 1.0, v_prior_std: float = 1.0, obs_std: float | None = None,
                 d: int = N_COORDS, member_bias: bool = False, predictive_weight: float = 0.0,
                 obs_noise: str = "shared"):
        super().__init__()
        self._args = dict(n_members=n_members, n_seconds=n_seconds, k=k, hidden=hidden, layers=layers,
                          u_prior_std=u_prior_std, v_prior_std=v_prior_std, obs_std=obs_std, d=d,
                          member_bias=member_bias, predictive_weight=predictive_weight, obs_noise=obs_noise)
        self.predictive_weight = predictive_weight
        self.factors = Factors(n_members, n_seconds, k, u_prior_std, v_prior_std, d if member_bias else 0)
        self.encoder = Encoder(d, hidden, layers, k)
        self.decoder = decoder_mlp(k, hidden, layers, d)
        self.noise = ObsNoise(obs_std, d if obs_noise == "per_coordinate" else 1)

    @classmethod
    def extra_config(cls, models_cfg) -> dict:
        return {"predictive_weight": models_cfg.predictive_weight, "obs_noise": models_cfg.obs_noise}

    def loss(self, x: torch.Tensor, i: torch.Tensor, t: torch.Tensor, n_obs: int, beta: float = 1.0) -> dict:
        """−ELBO per observed face (β-weighted KL) plus the MAP priors on U and V spread over n_obs,
        plus predictive_weight × the face's −log-likelihood under the prediction f(U_i∘V_t).

        With a learned member bias b_i the encoder reads x − b_i and the decoder's face is
        f(z) + b_i: the latent codes only the expression."""
        bias = self.factors.member_bias(i)
        mu, logvar = self.encoder(x - bias)
        prior_mean = self.factors.latent(i, t)
        recon = self.noise.nll(self.decoder(reparameterize(mu, logvar)) + bias, x).mean()
        kl = kl_normal(mu, logvar, prior_mean).mean()
        prior = self.factors.neg_log_prior() / n_obs
        terms = {"recon": recon, "kl": kl, "prior": prior, "obs_std": self.noise.typical()}
        loss = recon + beta * kl + prior
        if self.predictive_weight > 0:
            terms["predictive"] = self.noise.nll(self.decoder(prior_mean) + bias, x).mean()
            loss = loss + self.predictive_weight * terms["predictive"]
        return {"loss": loss, **terms}

    # ------------------------------------------------------------------ prediction

    def codes(self) -> torch.Tensor:
        return self.factors.log_u

    def predict_rows(self, log_u_rows: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
        return self.decoder(self.factors.latent_rows(log_u_rows, t)).float()

    def predict(self, i: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
        return self.predict_rows(self.factors.log_u[i], t) + self.factors.member_bias(i)

    def reconstruct(self, x: torch.Tensor, i: torch.Tensor | None = None) -> torch.Tensor:
        """Encode then decode the posterior mean (the VAE-style reconstruction); i: the faces' members."""
        bias = 0.0 if i is None else self.factors.member_bias(i)
        return self.decoder(self.encoder(x - bias)[0]).float() + bias

    @torch.no_grad()
    def encode_faces(self, x: torch.Tensor, i: torch.Tensor | None = None) -> torch.Tensor:
        """(B, 136) faces of members i → (B, K) posterior means."""
        return self.encoder(x - (0.0 if i is None else self.factors.member_bias(i)))[0]

    @torch.no_grad()
    def encode_new(self, x: torch.Tensor, seen: torch.Tensor) -> torch.Tensor:
        """Posterior means (M, K) of new members' seen faces x (R, T, 136), seen (R, T), in
        torch.nonzero(seen) order (a new member has no learned bias)."""
        return self.encoder(seen_faces(x, seen)[2])[0]

    def decode_latent(self, z: torch.Tensor) -> torch.Tensor:
        return self.decoder(z).float()

    def latents(self) -> tuple[torch.Tensor, torch.Tensor]:
        return self.factors.log_u.exp(), self.factors.v

    def prepare_rows(self, x: torch.Tensor) -> torch.Tensor:
        """What row_objective compares against: the faces and their encoder means, side by side (B, D + K)."""
        return torch.cat([x, self.encoder(x)[0].detach()], -1)

    def row_objective(self, log_u_rows: torch.Tensor, target: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
        """The per-face training loss's terms that depend on a new member's U: the KL's ½‖μ − u∘v_t‖²
        plus predictive_weight × −log N(x; f(u∘v_t), σ²I)."""
        x, mu = target[:, :-self.factors.v.shape[1]], target[:, -self.factors.v.shape[1]:]
        z = self.factors.latent_rows(log_u_rows, t)
        loss = 0.5 * ((mu - z) ** 2).sum(-1)
        if self.predictive_weight > 0:
            loss = loss + self.predictive_weight * self.noise.nll(self.decoder(z).float(), x)
        return loss

    def infer_codes(self, x: torch.Tensor, seen: torch.Tensor, steps: int, lr: float) -> torch.Tensor:
        """New members' log U: MAP under the training members' prior (models.nets.infer_log_u)."""
        i, t, faces = seen_faces(x, seen)
        with torch.no_grad():
            target = self.prepare_rows(faces)
        return infer_log_u(self, target, i, t, len(x), steps, lr)


class VAE(TorchModel):
    """Per-face VAE with a N(0, I) prior: no factorization, a reference for reconstruction.

    It has no notion of members or seconds; a missing face is predicted by
    decoding the member's mean latent over its training faces (set by finalize).
    """
    kind = "vae"
    finalize_sets_state = True

    def __init__(self, n_members: int, n_seconds: int, k: int, hidden: int = 256, layers: int = 3,
                 obs_std: float | None = None, d: int = N_COORDS, **_):
        super().__init__()
        self._args = dict(n_members=n_members, n_seconds=n_seconds, k=k, hidden=hidden, layers=layers,
                          obs_std=obs_std, d=d)
        self.encoder = Encoder(d, hidden, layers, k)
        self.decoder = decoder_mlp(k, hidden, layers, d)
        self.noise = ObsNoise(obs_std)
        self.register_buffer("member_z", torch.zeros(n_members, k))   # (N, K) mean latent per member

    def loss(self, x: torch.Tensor, i: torch.Tensor, t: torch.Tensor, n_obs: int, beta: float = 1.0) -> dict:
        mu, logvar = self.encoder(x)
        recon = self.noise.nll(self.decoder(reparameterize(mu, logvar)), x).mean()
        kl = kl_normal(mu, logvar, torch.zeros_like(mu)).mean()
        return {"loss": recon + beta * kl, "recon": recon, "kl": kl, "obs_std": self.noise.typical()}

    @torch.no_grad()
    def finalize(self, faces) -> None:
        """member_z[i] = mean encoder μ over member i's training faces (deterministic)."""
        mu = torch.cat([self.encoder(faces.x[faces.i[s:s + 65536], faces.t[s:s + 65536]])[0]
                        for s in range(0, faces.n_observed, 65536)])
        total = torch.zeros_like(self.member_z).index_add_(0, faces.i, mu)
        count = torch.bincount(faces.i, minlength=len(self.member_z)).clamp_min(1)
        self.member_z.copy_(total / count[:, None])

    def codes(self) -> torch.Tensor:
        return self.member_z

    def predict_rows(self, z_rows: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
        return self.decoder(z_rows).float()

    def predict(self, i: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
        return self.predict_rows(self.member_z[i], t)

    def reconstruct(self, x: torch.Tensor, i: torch.Tensor | None = None) -> torch.Tensor:
        return self.decoder(self.encoder(x)[0]).float()

    def decode_latent(self, z: torch.Tensor) -> torch.Tensor:
        return self.decoder(z).float()

    @torch.no_grad()
    def encode_faces(self, x: torch.Tensor, i: torch.Tensor | None = None) -> torch.Tensor:
        """(B, 136) faces → (B, K) posterior means."""
        return self.encoder(x)[0]

    @torch.no_grad()
    def encode_new(self, x: torch.Tensor, seen: torch.Tensor) -> torch.Tensor:
        """Posterior means (M, K) of new members' seen faces x (R, T, 136), seen (R, T), in
        torch.nonzero(seen) order."""
        return self.encoder(seen_faces(x, seen)[2])[0]

    @torch.no_grad()
    def infer_codes(self, x: torch.Tensor, seen: torch.Tensor, steps: int = 0, lr: float = 0.0) -> torch.Tensor:
        """New members' code: the mean encoder latent of their seen faces (the training members'
        mean code for a member with none)."""
        i, _, faces = seen_faces(x, seen)
        return mean_per_row(self.encoder(faces)[0], i, len(x), self.member_z.mean(0, keepdim=True))
