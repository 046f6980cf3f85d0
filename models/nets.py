"""Shared pieces of the neural models: the MLP and the per-member / per-second factors."""
from __future__ import annotations

import math

import torch
from torch import nn


def mlp(d_in: int, hidden: int, layers: int, d_out: int) -> nn.Sequential:
    """`layers` fully connected ReLU layers of width `hidden`, then a linear output layer."""
    blocks: list[nn.Module] = []
    width = d_in
    for _ in range(layers):
        blocks += [nn.Linear(width, hidden), nn.ReLU()]
        width = hidden
    blocks.append(nn.Linear(width, d_out))
    return nn.Sequential(*blocks)


def decoder_mlp(k: int, hidden: int, layers: int, d_out: int) -> nn.Sequential:
    """The decoder f_θ: an mlp whose output layer starts at zero.

    f_θ ≡ 0 at the start means every model starts by predicting the mean face (each
    member's offset when offsets are on), the 'epoch 0' that validation compares against.
    """
    net = mlp(k, hidden, layers, d_out)
    nn.init.zeros_(net[-1].weight)
    nn.init.zeros_(net[-1].bias)
    return net


class Factors(nn.Module):
    """U = exp(log_u) (N, K) log-normal per member, V (T, K) normal per second; latent u_i ∘ v_t.

    With d_bias > 0 each member also has a learned face bias b_i (N, d_bias), starting at 0:
    a correction to the fixed member offset subtracted before fitting (models.member_offsets),
    so that the model can move part of a member's mean face into f(u_i ∘ v_t) when that is
    where it belongs (e.g. a member who smiles through the whole movie). It is optimized with
    U and V and carries no prior (like the offsets it corrects); a new member's bias is part
    of the offset estimated from its own faces (models.evaluate.infer_members).
    """

    def __init__(self, n_members: int, n_seconds: int, k: int, u_prior_std: float, v_prior_std: float,
                 d_bias: int = 0):
        super().__init__()
        self.u_prior_std, self.v_prior_std = u_prior_std, v_prior_std
        self.log_u = nn.Parameter(0.1 * torch.randn(n_members, k))   # (N, K)
        self.v = nn.Parameter(torch.randn(n_seconds, k))             # (T, K)
        if d_bias > 0:
            self.bias = nn.Parameter(torch.zeros(n_members, d_bias))  # (N, D)
        else:
            self.bias = None

    def member_bias(self, i: torch.Tensor) -> torch.Tensor | float:
        """(B,) members → (B, D) learned face bias (0 when the model has none)."""
        return 0.0 if self.bias is None else self.bias[i]

    def latent(self, i: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
        """(B,) members, (B,) seconds → (B, K) u_i ∘ v_t."""
        return self.log_u[i].exp() * self.v[t]

    def latent_rows(self, log_u_rows: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
        return log_u_rows.exp() * self.v[t]

    def neg_log_prior(self) -> torch.Tensor:
        """−log p(U) − log p(V) up to constants (log-normal U: a normal prior on log U)."""
        return (0.5 * (self.log_u ** 2).sum() / self.u_prior_std ** 2
                + 0.5 * (self.v ** 2).sum() / self.v_prior_std ** 2)

    def log_u_prior_mean(self) -> torch.Tensor:
        """(1, K) mean log U over the training members: the start and pull of new members."""
        return self.log_u.detach().mean(0, keepdim=True)

    def log_u_prior_precision(self) -> torch.Tensor:
        """(K, K) inverse covariance of the training members' log U: the prior of new members.

        Empirical Bayes, like the offsets' (models.data.MemberOffsets): members' factors are
        correlated (viewer types), so what a short prefix shows of a new member (e.g. how much it
        laughs) moves the factors it does not show (e.g. how much it jumps at scares) the way it
        does across the training audience. The covariance is shrunk toward u_prior_std² I by one
        member's weight, so that a dimension no training member uses keeps a finite variance."""
        log_u = self.log_u.detach().double()
        n, k = log_u.shape
        centred = log_u - log_u.mean(0, keepdim=True)
        eye = torch.eye(k, dtype=torch.float64, device=log_u.device)
        cov = (centred.T @ centred + self.u_prior_std ** 2 * eye) / n
        return torch.linalg.inv(cov).float()


class ObsNoise(nn.Module):
    """Observation noise σ of x ~ N(f(z), σ² I): fixed (the paper: σ = 1) or learned, one number or
    (learned, dims = d) one per coordinate.

    Learning one scalar σ lets the likelihood match the data's real noise level
    in normalized units; with σ fixed at 1 a low-noise tensor is under-fitted
    and the FVAE's KL term dominates its reconstruction term. One σ per
    coordinate lets quiet coordinates (the brows) count for what they carry
    instead of being drowned by the noisy mouth and jaw.
    """

    def __init__(self, std: float | None, dims: int = 1):
        super().__init__()
        self.learned = std is None
        log_std = torch.tensor(0.0 if std is None else math.log(std))
        if std is None and dims > 1:
            log_std = torch.zeros(dims)
        if self.learned:
            self.log_std = nn.Parameter(log_std)
        else:
            self.register_buffer("log_std", log_std)

    def nll(self, x_hat: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
        """Per-face −log N(x; x̂, diag σ²) without the 2π constant: (B,). σ is one number, or one per
        coordinate (dims = d)."""
        log_std = self.log_std.expand(x.shape[-1])
        return 0.5 * (((x_hat.float() - x) ** 2) * torch.exp(-2 * log_std)).sum(-1) + log_std.sum()

    def typical(self) -> torch.Tensor:
        """σ for progress logs: its root mean square over the coordinates."""
        return torch.exp(2 * self.log_std).mean().sqrt()


def kl_normal(mu: torch.Tensor, logvar: torch.Tensor, prior_mean: torch.Tensor) -> torch.Tensor:
    """Per-face KL( N(mu, diag exp(logvar)) || N(prior_mean, I) ): (B,)."""
    return 0.5 * (logvar.exp() + (mu - prior_mean) ** 2 - 1.0 - logvar).sum(-1)




class TorchModel(nn.Module):
    """Base of the torch models: the parts of models.registry.FactorModel most models share.

    A subclass sets `kind`, takes (n_members, n_seconds, k, hidden=…, layers=…, …) and stores
    its constructor arguments in self._args; `extra_config` adds its own settings to what
    `from_config` passes.
    """
    kind = "?"
    finalize_sets_state = False          # True: finalize() writes buffers a checkpoint must hold

    @classmethod
    def extra_config(cls, models_cfg) -> dict:
        """Constructor arguments beyond the shared ones, from models_cfg (e.g. the FVAE's predictive_weight)."""
        return {}

    @classmethod
    def from_config(cls, n_members: int, n_seconds: int, models_cfg) -> "TorchModel":
        return cls(n_members, n_seconds, models_cfg.k, hidden=models_cfg.hidden, layers=models_cfg.layers,
                   u_prior_std=models_cfg.u_prior_std, v_prior_std=models_cfg.v_prior_std,
                   obs_std=models_cfg.obs_std, member_bias=models_cfg.member_offsets,
                   **cls.extra_config(models_cfg))

    @classmethod
    def from_args(cls, args: dict, device) -> "TorchModel":
        return cls(**args).to(device)

    def args(self) -> dict:
        return dict(self._args)

    def prepare(self, faces) -> None:
        """Data-derived state set before training (and again before resuming): none by default."""

    def finalize(self, faces) -> None:
        """Deterministic state set after training: none by default."""

    def latents(self):
        return None

    def reconstruct(self, x: torch.Tensor, i: torch.Tensor | None = None) -> torch.Tensor | None:
        return None

    def learned_member_bias(self) -> torch.Tensor | None:
        factors = getattr(self, "factors", None)
        return None if factors is None else factors.bias


CONVERGENCE_WINDOW = 10      # infer_log_u compares its objective every this many steps
CONVERGENCE_TOLERANCE = 1e-5  # and stops once a window improves it by less than this fraction


def infer_log_u(model, target: torch.Tensor, i: torch.Tensor, t: torch.Tensor, n_rows: int,
                steps: int, lr: float) -> torch.Tensor:
    """MAP log U (n_rows, K) of new members under the training members' prior (Factors.log_u_prior_*),
    by Adam on Σ model.row_objective(log_u[i], target, t) + the prior, everything else frozen.
    At most `steps` steps; it stops early once CONVERGENCE_WINDOW steps improve the objective
    by less than CONVERGENCE_TOLERANCE of it. A member with no face gets the prior mean."""
    prior_mean, precision = model.factors.log_u_prior_mean(), model.factors.log_u_prior_precision()
    log_u = prior_mean.repeat(n_rows, 1).clone().requires_grad_(True)
    optimizer = torch.optim.Adam([log_u], lr=lr)
    params = [p for p in model.parameters() if p.requires_grad]
    for p in params:
        p.requires_grad_(False)
    last = float("inf")
    try:
        with torch.enable_grad():
            for step in range(steps):
                data = model.row_objective(log_u[i], target, t).sum()
                centred = log_u - prior_mean
                objective = data + 0.5 * ((centred @ precision) * centred).sum()
                if step % CONVERGENCE_WINDOW == 0:
                    value = float(objective.detach())
                    if last - value <= CONVERGENCE_TOLERANCE * abs(value):
                        break
                    last = value
                optimizer.zero_grad(set_to_none=True)
                objective.backward()
                optimizer.step()
    finally:
        for p in params:
            p.requires_grad_(True)
    return log_u.detach()


def seen_faces(x: torch.Tensor, seen: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """(i, t, faces) of the seen cells of x (R, T, D), seen (R, T)."""
    i, t = torch.nonzero(seen, as_tuple=True)
    return i, t, x[i, t]


def mean_per_row(values: torch.Tensor, i: torch.Tensor, n_rows: int, fallback: torch.Tensor) -> torch.Tensor:
    """(n_rows, C) mean of `values` (M, C) per row index i (M,); `fallback` (1, C) for rows with none."""
    total = torch.zeros(n_rows, values.shape[1], device=values.device, dtype=values.dtype).index_add_(0, i, values)
    count = torch.bincount(i, minlength=n_rows).clamp_min(1)[:, None]
    has = torch.bincount(i, minlength=n_rows)[:, None] > 0
    return torch.where(has.expand_as(total), total / count, fallback.to(total.dtype).expand_as(total))
