"""NLTF: x_it ~ N(f_θ(exp(u_i) ∘ V_t), I); MAP on u, V and θ (Deng et al. 2017, eq. 3)."""
from __future__ import annotations

import torch
from torch import nn

from models.nets import Factors, ObsNoise, TorchModel, decoder_mlp, infer_log_u, seen_faces
from pipeline.store import N_COORDS


class NLTF(TorchModel):
    kind = "nltf"

    def __init__(self, n_members: int, n_seconds: int, k: int, hidden: int = 256, layers: int = 3,
                 u_prior_std: float = 1.0, v_prior_std: float = 1.0, obs_std: float | None = None,
                 d: int = N_COORDS, member_bias: bool = False):
        super().__init__()
        self._args = dict(n_members=n_members, n_seconds=n_seconds, k=k, hidden=hidden, layers=layers,
                          u_prior_std=u_prior_std, v_prior_std=v_prior_std, obs_std=obs_std, d=d,
                          member_bias=member_bias)
        self.factors = Factors(n_members, n_seconds, k, u_prior_std, v_prior_std, d if member_bias else 0)
        self.decoder = decoder_mlp(k, hidden, layers, d)                      # f_θ: K → 136
        self.noise = ObsNoise(obs_std)

    def loss(self, x: torch.Tensor, i: torch.Tensor, t: torch.Tensor, n_obs: int, beta: float = 1.0) -> dict:
        """Negative log posterior per observed face; the priors are spread over all n_obs faces."""
        recon = self.noise.nll(self.decoder(self.factors.latent(i, t)) + self.factors.member_bias(i), x).mean()
        prior = self.factors.neg_log_prior() / n_obs
        return {"loss": recon + prior, "recon": recon, "prior": prior, "obs_std": self.noise.typical()}

    # ------------------------------------------------------------------ prediction

    def codes(self) -> torch.Tensor:
        return self.factors.log_u

    def predict_rows(self, log_u_rows: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
        return self.decoder(self.factors.latent_rows(log_u_rows, t)).float()

    def predict(self, i: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
        return self.predict_rows(self.factors.log_u[i], t) + self.factors.member_bias(i)

    def decode_latent(self, z: torch.Tensor) -> torch.Tensor:
        return self.decoder(z).float()

    def latents(self) -> tuple[torch.Tensor, torch.Tensor]:
        return self.factors.log_u.exp(), self.factors.v

    def row_objective(self, log_u_rows: torch.Tensor, x: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
        """Per-face data term for estimating new members' log U: ½‖x − f(u∘v_t)‖²."""
        return self.noise.nll(self.predict_rows(log_u_rows, t), x)

    def prepare_rows(self, x: torch.Tensor) -> torch.Tensor:
        """What row_objective compares against (raw faces for NLTF)."""
        return x

    def infer_codes(self, x: torch.Tensor, seen: torch.Tensor, steps: int, lr: float) -> torch.Tensor:
        """New members' log U: MAP under the training members' prior (models.nets.infer_log_u)."""
        i, t, faces = seen_faces(x, seen)
        with torch.no_grad():
            target = self.prepare_rows(faces)
        return infer_log_u(self, target, i, t, len(x), steps, lr)
