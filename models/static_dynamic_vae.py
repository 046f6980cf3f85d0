"""The static/dynamic VAE from unordered frames ("sdvae"), on landmark vectors.

A deep generative model that learns a static and a dynamic representation from unordered
input (pairwise comparisons, a flexible prior). Here a sequence is one audience member's
faces over the movie, in no particular order:

    static   q(f | x_1..x_N) = N(μ_f, diag σ_f²): N random frames of the member, a shared
             pairwise encoder g([x_a, x_b]) over all N(N−1)/2 pairs, mean-pooled, then an MLP
             → (μ_f, log σ_f²);  prior p(f) = N(0, I)
    dynamic  q(z | f, x) = N(μ_z(f, x), diag σ_z²(f, x)) per frame;
             learned prior p(z | f) = N(h_μ(f), diag h_σ²(f))
    frames   p(x | f, z) = N(d(f, z), σ² I)
    −ELBO per face = −log p(x | f, z) + β KL(q(z|f,x) || p(z|f)) + β KL(q(f) || p(f)) · N_members / n_obs
             (the sequence-level KL spread over the observed faces, like the other priors).

Every network is an MLP (models.nets.mlp): the paper's convolutions over images become
fully connected layers over the 136 landmark coordinates. f should capture who the member
is (identity, resting face), z the expression at that second, with z small (2).

After training each member's f is the posterior mean from `eval_frames` of its training
faces, evenly spread (deterministic); a missing face (i, t) is predicted as d(f_i, h_μ(f_i)),
the member's typical face under the prior (no time factor: like the VAE, this model is not a
completion model). New members: f from their seen faces the same way. The figures (swap f
between members, sweep z for a fixed f, z over the movie) are drawn by `figures`.
"""
from __future__ import annotations

from pathlib import Path

import numpy as np
import torch
from torch import nn

from models.fvae import reparameterize
from models.nets import ObsNoise, TorchModel, decoder_mlp, mlp, seen_faces
from pipeline.store import N_COORDS, DataError


def kl_gauss(mu: torch.Tensor, logvar: torch.Tensor, p_mu: torch.Tensor, p_logvar: torch.Tensor) -> torch.Tensor:
    """Per-row KL( N(mu, e^logvar) || N(p_mu, e^p_logvar) ), diagonal: (B,)."""
    return 0.5 * (p_logvar - logvar + (logvar.exp() + (mu - p_mu) ** 2) / p_logvar.exp() - 1.0).sum(-1)


def pairs(n: int, device) -> tuple[torch.Tensor, torch.Tensor]:
    """All unordered pairs a < b of n frames (the frame with itself when n = 1)."""
    if n == 1:
        return torch.zeros(1, dtype=torch.long, device=device), torch.zeros(1, dtype=torch.long, device=device)
    a, b = torch.triu_indices(n, n, 1, device=device)
    return a, b


class StaticDynamicVAE(TorchModel):
    kind = "sdvae"
    finalize_sets_state = True

    def __init__(self, n_members: int, n_seconds: int, k: int = 0, hidden: int = 256, layers: int = 3,
                 obs_std: float | None = None, d: int = N_COORDS, f_dim: int = 8, z_dim: int = 2,
                 n_frames: int = 8, eval_frames: int = 32, **_):
        super().__init__()
        self._args = dict(n_members=n_members, n_seconds=n_seconds, k=k, hidden=hidden, layers=layers,
                          obs_std=obs_std, d=d, f_dim=f_dim, z_dim=z_dim, n_frames=n_frames, eval_frames=eval_frames)
        self.d, self.f_dim, self.z_dim = d, f_dim, z_dim
        self.n_frames, self.eval_frames = n_frames, eval_frames
        self.pair_net = mlp(2 * d, hidden, max(1, layers - 1), hidden)     # g([x_a, x_b]) → pair feature
        self.static_head = mlp(hidden, hidden, 1, 2 * f_dim)               # pooled → μ_f, log σ_f²
        self.dynamic_enc = mlp(d + f_dim, hidden, layers, 2 * z_dim)       # [x, f] → μ_z, log σ_z²
        self.z_prior = mlp(f_dim, hidden, 1, 2 * z_dim)                    # f → h_μ, log h_σ²
        self.decoder = decoder_mlp(f_dim + z_dim, hidden, layers, d)       # [f, z] → face
        self.noise = ObsNoise(obs_std)
        self.register_buffer("member_f", torch.zeros(n_members, f_dim))    # (N, F) after finalize
        self._frames = self._counts = None                                 # training frame lists (prepare)

    @classmethod
    def extra_config(cls, models_cfg) -> dict:
        s = models_cfg.static_dynamic
        return {"f_dim": s.f_dim, "z_dim": s.z_dim, "n_frames": s.n_frames, "eval_frames": s.eval_frames}

    # ------------------------------------------------------------------ parts

    def static(self, frames: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """frames (S, n, D): S sets of n frames → (μ_f, log σ_f²), each (S, F)."""
        a, b = pairs(frames.shape[1], frames.device)
        feats = self.pair_net(torch.cat([frames[:, a], frames[:, b]], -1))      # (S, P, H)
        mu, logvar = self.static_head(feats.mean(1)).float().chunk(2, -1)
        return mu, logvar.clamp(-12.0, 8.0)

    def dynamic(self, x: torch.Tensor, f: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        mu, logvar = self.dynamic_enc(torch.cat([x, f.to(x.dtype)], -1)).float().chunk(2, -1)
        return mu, logvar.clamp(-12.0, 8.0)

    def prior_z(self, f: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        mu, logvar = self.z_prior(f).float().chunk(2, -1)
        return mu, logvar.clamp(-8.0, 6.0)

    def decode(self, f: torch.Tensor, z: torch.Tensor) -> torch.Tensor:
        return self.decoder(torch.cat([f, z], -1)).float()

    # ------------------------------------------------------------------ training

    @torch.no_grad()
    def prepare(self, faces) -> None:
        """Each member's training frames as a padded (N, max) list; members with fewer than n_frames
        are a DataError naming them and the fix."""
        counts = faces.mask.sum(1)
        few = torch.nonzero(counts < self.n_frames).flatten().tolist()
        if few:
            ids = faces.movie.member_id if faces.movie is not None else None
            names = [str(ids[i]) if ids is not None else f"row {i}" for i in few[:8]]
            raise DataError(f"{len(few)} member(s) have fewer than models.static_dynamic.n_frames="
                            f"{self.n_frames} training faces to draw their static code from: {', '.join(names)}"
                            f"{' …' if len(few) > 8 else ''} ({', '.join(str(int(counts[i])) for i in few[:8])} "
                            f"faces). Lower models.static_dynamic.n_frames, or leave these members out of the tensor.")
        width = int(counts.max())
        frames = torch.zeros(len(counts), width, dtype=torch.long, device=faces.x.device)
        for i in range(len(counts)):
            ts = torch.nonzero(faces.mask[i]).flatten()
            frames[i, :len(ts)] = ts
        self._frames, self._counts, self._x = frames, counts, faces.x

    def draw_frames(self, members: torch.Tensor) -> torch.Tensor:
        """(M,) members → (M, n_frames, D) random training frames of each (without replacement)."""
        counts = self._counts[members].float()
        order = torch.rand(len(members), self._frames.shape[1], device=members.device)
        order = order.masked_fill(torch.arange(self._frames.shape[1], device=members.device)[None] >= counts[:, None], 2.0)
        pick = order.argsort(1)[:, :self.n_frames]                        # n_frames distinct valid slots
        t = torch.gather(self._frames[members], 1, pick)
        return self._x[members[:, None], t]

    def loss(self, x: torch.Tensor, i: torch.Tensor, t: torch.Tensor, n_obs: int, beta: float = 1.0) -> dict:
        if self._frames is None:
            raise RuntimeError("StaticDynamicVAE.loss before prepare(): the members' frames are not known")
        members, inverse = torch.unique(i, return_inverse=True)
        mu_f, logvar_f = self.static(self.draw_frames(members))
        f = reparameterize(mu_f, logvar_f)[inverse]
        mu_z, logvar_z = self.dynamic(x, f)
        p_mu, p_logvar = self.prior_z(f)
        recon = self.noise.nll(self.decode(f, reparameterize(mu_z, logvar_z)), x).mean()
        kl_z = kl_gauss(mu_z, logvar_z, p_mu, p_logvar).mean()
        kl_f = kl_gauss(mu_f, logvar_f, torch.zeros_like(mu_f), torch.zeros_like(mu_f)).mean()
        kl_f = kl_f * len(self.member_f) / max(n_obs, 1)
        return {"loss": recon + beta * (kl_z + kl_f), "recon": recon, "kl_z": kl_z, "kl_f": kl_f,
                "obs_std": self.noise.typical()}

    @torch.no_grad()
    def static_codes(self, x: torch.Tensor, seen: torch.Tensor) -> torch.Tensor:
        """(R, F) μ_f of members from `eval_frames` of their seen faces, evenly spread (zeros, the prior
        mean, for a member with none)."""
        out = torch.zeros(len(x), self.f_dim, device=x.device)
        for r in range(len(x)):
            ts = torch.nonzero(seen[r]).flatten()
            if len(ts) == 0:
                continue
            ts = ts[torch.linspace(0, len(ts) - 1, min(self.eval_frames, len(ts)), device=x.device).round().long()]
            out[r] = self.static(x[r, ts][None])[0][0]
        return out

    @torch.no_grad()
    def finalize(self, faces) -> None:
        self.member_f.copy_(self.static_codes(faces.x, faces.mask))

    # ------------------------------------------------------------------ the protocol

    def codes(self) -> torch.Tensor:
        return self.member_f

    def predict_rows(self, codes: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
        return self.decode(codes, self.prior_z(codes)[0])

    def predict(self, i: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
        return self.predict_rows(self.member_f[i], t)

    def reconstruct(self, x: torch.Tensor, i: torch.Tensor | None = None) -> torch.Tensor:
        f = self.member_f[i] if i is not None else self.member_f.mean(0, keepdim=True).expand(len(x), -1)
        return self.decode(f, self.dynamic(x, f)[0])

    def decode_latent(self, z: torch.Tensor) -> torch.Tensor:
        """Dynamic latents (B, z_dim) decoded with the audience's mean static code."""
        return self.decode(self.member_f.mean(0, keepdim=True).expand(len(z), -1), z)

    @torch.no_grad()
    def infer_codes(self, x: torch.Tensor, seen: torch.Tensor, steps: int = 0, lr: float = 0.0) -> torch.Tensor:
        return self.static_codes(x, seen)

    @torch.no_grad()
    def encode_faces(self, x: torch.Tensor, i: torch.Tensor) -> torch.Tensor:
        """(B, 136) faces of training members i → (B, z_dim) dynamic posterior means."""
        return self.dynamic(x, self.member_f[i])[0]

    @torch.no_grad()
    def encode_new(self, x: torch.Tensor, seen: torch.Tensor) -> torch.Tensor:
        """Dynamic posterior means (M, z_dim) of new members' seen faces (torch.nonzero(seen) order),
        with each member's f from those faces."""
        f = self.static_codes(x, seen)
        i, _, faces = seen_faces(x, seen)
        return self.dynamic(faces, f[i])[0]


# ----------------------------------------------------------------------------- figures


def figures(fitted, landmarks: np.ndarray, mask: np.ndarray, out_dir: str | Path, member: int = 0,
            bin_seconds: float = 1.0, n_swap: int = 4, points: int = 7) -> list[Path]:
    """The disentanglement figures of a trained sdvae for members of `landmarks` (R, T, 136), mask (R, T)
    (new or training members; f and z are inferred from their faces):
      sdvae_swap_f.png      rows: the static code f of member r; columns: the dynamic z of a face of
                            member c: identity should follow the row, expression the column;
      sdvae_sweep_z.png     z swept over each dimension (2nd–98th percentile of the faces' z), f fixed;
      sdvae_z_over_time.png z of one member over the movie (the paper's Fig. 4b)."""
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from pipeline.store import atomic_path

    model, dev = fitted.model, fitted.device
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    x = torch.from_numpy(np.nan_to_num(fitted.normalizer.encode(landmarks))).to(dev)
    seen = torch.from_numpy(mask).to(dev)
    f = model.static_codes(x, seen)
    z = model.encode_new(x, seen)
    ii, tt = (a.cpu().numpy() for a in torch.nonzero(seen, as_tuple=True))
    z_np = z.cpu().numpy()
    # the face of each member with the most extreme expression (largest ‖z − prior mean‖)
    with torch.no_grad():
        prior = model.prior_z(f)[0].cpu().numpy()
    members = np.unique(ii)[:n_swap]
    expressive = [int(np.flatnonzero(ii == m)[np.argmax(((z_np[ii == m] - prior[m]) ** 2).sum(1))]) for m in members]

    def draw(ax, face, title=""):
        pts = fitted.normalizer.decode(face.float().cpu().numpy()).reshape(68, 2)
        ax.scatter(pts[:, 0], pts[:, 1], s=2, c="k")
        ax.set_aspect("equal")
        ax.invert_yaxis()
        ax.set_xticks([])
        ax.set_yticks([])
        ax.set_title(title, fontsize=7)

    paths = []
    with torch.no_grad():
        fig, axes = plt.subplots(len(members), len(members), figsize=(1.6 * len(members), 1.6 * len(members)),
                                 squeeze=False)
        for r, mr in enumerate(members):
            for c, face in enumerate(expressive):
                draw(axes[r, c], model.decode(f[mr][None], z[face][None])[0], f"f: {mr}, z: {ii[face]}@{tt[face]}")
        fig.suptitle("sdvae: static f of the row's member, dynamic z of the column's face", fontsize=8)
        paths.append(_save(fig, out_dir / "sdvae_swap_f.png", atomic_path, plt))
        lo, hi = np.quantile(z_np, 0.02, axis=0), np.quantile(z_np, 0.98, axis=0)
        fig, axes = plt.subplots(model.z_dim, points, figsize=(1.4 * points, 1.6 * model.z_dim), squeeze=False)
        centre = np.median(z_np, axis=0)
        for dim in range(model.z_dim):
            for p, value in enumerate(np.linspace(lo[dim], hi[dim], points)):
                zz = torch.from_numpy(centre.copy()).float().to(dev)
                zz[dim] = float(value)
                draw(axes[dim, p], model.decode(f[members[0]][None], zz[None])[0], f"z{dim}={value:.2f}")
        fig.suptitle(f"sdvae: sweeping z with f of member {members[0]} fixed", fontsize=8)
        paths.append(_save(fig, out_dir / "sdvae_sweep_z.png", atomic_path, plt))
    rows = ii == member
    fig, ax = plt.subplots(figsize=(8, 2.5))
    for dim in range(model.z_dim):
        ax.plot(tt[rows] * bin_seconds, z_np[rows, dim], lw=0.8, label=f"z{dim}")
    ax.set_xlabel("movie time (s)")
    ax.set_ylabel("dynamic z")
    ax.legend(fontsize=7)
    ax.set_title(f"sdvae: z over the movie, member {member}", fontsize=8)
    paths.append(_save(fig, out_dir / "sdvae_z_over_time.png", atomic_path, plt))
    return paths


def _save(fig, path: Path, atomic_path, plt) -> Path:
    fig.tight_layout()
    with atomic_path(path) as tmp:
        fig.savefig(tmp, dpi=100, format="png")
    plt.close(fig)
    return path
