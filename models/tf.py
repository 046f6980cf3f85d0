"""TF: non-negative CP / PARAFAC, x_itd ≈ Σ_k U_ik V_tk F_dk with U ≥ 0, by exact masked ALS.

The mask depends only on (member i, second t), never on the coordinate d, so
every least-squares subproblem restricted to observed faces is small:
  V row t:  (FᵀF ∘ Σ_i m_it u_i u_iᵀ) v_t = Σ_i m_it u_i ∘ Fᵀx_it        (K×K per second)
  U row i:  same with the roles of U and V swapped, solved non-negatively by HALS
  F:        F (Σ_it m_it w_it w_itᵀ) = Σ_it x_it w_itᵀ,  w_it = u_i ∘ v_t   (one K×K system)
No missing value is ever filled in. The heavy work is two (N·T·136·K) products
per sweep, done as batched matrix products on whatever device holds the data.
"""
from __future__ import annotations

import torch

from pipeline.store import N_COORDS

EPS = 1e-8


def _outer_rows(a: torch.Tensor) -> torch.Tensor:
    """(R, K) → (R, K*K): each row's outer product a_r a_rᵀ, flattened."""
    return (a[:, :, None] * a[:, None, :]).reshape(a.shape[0], -1)


def _solve_spd(gram: torch.Tensor, rhs: torch.Tensor) -> torch.Tensor:
    """Batched (R, K, K) x = (R, K) solve in float64 (grams are tiny; precision is free)."""
    return torch.linalg.solve(gram.double(), rhs.double().unsqueeze(-1)).squeeze(-1)


def hals_nonneg(gram: torch.Tensor, rhs: torch.Tensor, u: torch.Tensor, sweeps: int) -> torch.Tensor:
    """min_u≥0 ½uᵀGu − rhsᵀu for every row at once by coordinate descent (HALS). gram (R,K,K)."""
    u = u.clone()
    diag = gram.diagonal(dim1=1, dim2=2).clamp_min(EPS)                  # (R, K)
    for _ in range(sweeps):
        for k in range(u.shape[1]):
            grad_k = (gram[:, k, :] * u).sum(1) - rhs[:, k]
            u[:, k] = (u[:, k] - grad_k / diag[:, k]).clamp_min(0.0)
    return u


class TensorFactorization:
    """Non-negative masked CP model; the same code runs on CPU or CUDA."""

    kind = "tf"
    finalize_sets_state = False

    def __init__(self, n_members: int, n_seconds: int, k: int, ridge: float = 1e-4,
                 device: torch.device | str = "cpu", d: int = N_COORDS):
        self.k, self.ridge, self.device = k, ridge, torch.device(device)
        self.u = torch.ones(n_members, k, device=self.device)           # (N, K) ≥ 0
        self.v = torch.zeros(n_seconds, k, device=self.device)          # (T, K)
        self.f = torch.zeros(d, k, device=self.device)                  # (136, K)
        self.history: list[float] = []

    @classmethod
    def from_config(cls, n_members: int, n_seconds: int, models_cfg, ridge: float | None = None,
                    device: torch.device | str = "cpu") -> "TensorFactorization":
        return cls(n_members, n_seconds, models_cfg.k, models_cfg.tf.ridge if ridge is None else ridge, device)

    @classmethod
    def from_args(cls, args: dict, device) -> "TensorFactorization":
        return cls(**args, device=device)

    # ------------------------------------------------------------------ fitting

    @torch.no_grad()
    def fit(self, x: torch.Tensor, mask: torch.Tensor, *, max_iters: int = 200, tol: float = 1e-5,
            hals_sweeps: int = 3, seed: int = 0, callback=None) -> list[float]:
        """Fit to observed faces. x: (N, T, 136) zero where missing; mask: (N, T) bool."""
        m = mask.to(x.dtype)
        x = x * m[:, :, None]
        self._init(x, m, seed)
        flat = x.reshape(-1)
        sum_x2 = float(flat @ flat)
        x_dt = x.transpose(1, 2).contiguous()                           # (N, 136, T): one GEMM for XV
        n_obs_member, n_obs_time = m.sum(1), m.sum(0)                   # (N,), (T,)
        self.history = []
        for _ in range(max_iters):
            p = x @ self.f                                               # (N, T, K) = Fᵀ x_it
            self._update_v(p, m, n_obs_time)
            self._update_u(p, m, n_obs_member, hals_sweeps)
            loss = self._update_f(x_dt, m, sum_x2)
            self._rebalance()
            self.history.append(loss)
            if callback is not None:
                callback(len(self.history), loss)
            if len(self.history) > 1 and self.history[-2] - loss <= tol * abs(self.history[-2]):
                break
        return self.history

    def _init(self, x: torch.Tensor, m: torch.Tensor, seed: int) -> None:
        """F from the top-K principal directions of the observed faces, U = 1, V from projections."""
        gen = torch.Generator(device="cpu").manual_seed(seed)
        faces = x[m.bool()]                                              # (M, 136)
        cov = (faces.T @ faces).double() / max(len(faces), 1)
        _, vecs = torch.linalg.eigh(cov)
        k_pca = min(self.k, vecs.shape[1])
        f = torch.randn((x.shape[2], self.k), generator=gen, dtype=torch.float64) * 1e-2
        f[:, :k_pca] = vecs[:, -k_pca:].flip(1)
        self.f = f.to(self.device, x.dtype)
        self.u = (1.0 + 0.1 * torch.rand(self.u.shape, generator=gen)).to(self.device, x.dtype)

    def _update_v(self, p: torch.Tensor, m: torch.Tensor, n_obs_time: torch.Tensor) -> None:
        k = self.k
        ftf = self.f.T @ self.f                                          # (K, K)
        uu_sum = (m.T @ _outer_rows(self.u)).reshape(-1, k, k)            # (T, K, K) Σ_i m_it u_i u_iᵀ
        gram = ftf * uu_sum + self._ridge_eye(n_obs_time)
        rhs = torch.einsum("nk,ntk->tk", self.u, p)                      # x is zero where missing
        self.v = _solve_spd(gram, rhs).to(self.v.dtype)

    def _update_u(self, p: torch.Tensor, m: torch.Tensor, n_obs_member: torch.Tensor, sweeps: int) -> None:
        gram, rhs = self._u_system(p, m, n_obs_member)
        self.u = hals_nonneg(gram, rhs, self.u, sweeps)

    def _u_system(self, p: torch.Tensor, m: torch.Tensor, n_obs_member: torch.Tensor):
        """Normal equations of the U rows: gram (N,K,K), rhs (N,K), given V and F."""
        k = self.k
        vv_sum = (m @ _outer_rows(self.v)).reshape(-1, k, k)              # (N, K, K) Σ_t m_it v_t v_tᵀ
        gram = (self.f.T @ self.f) * vv_sum + self._ridge_eye(n_obs_member)
        rhs = torch.einsum("tk,ntk->nk", self.v, p)
        return gram, rhs

    def _update_f(self, x_dt: torch.Tensor, m: torch.Tensor, sum_x2: float) -> float:
        """Solve for F and return the data term Σ_obs ||x − F(u∘v)||² at the new F. x_dt: (N, 136, T)."""
        k = self.k
        vv_sum = (m @ _outer_rows(self.v)).reshape(-1, k, k)              # (N, K, K)
        uu = _outer_rows(self.u).reshape(-1, k, k)
        gram = (uu * vv_sum).sum(0).double()                             # (K, K) Σ_obs w wᵀ
        xv = x_dt @ self.v                                               # (N, 136, K)
        b = torch.einsum("ndk,nk->dk", xv, self.u).double()              # (136, K) Σ_obs x wᵀ
        reg = self.ridge * float(m.sum()) + EPS
        f = torch.linalg.solve(gram + reg * torch.eye(k, dtype=torch.float64, device=gram.device), b.T).T
        self.f = f.to(self.f.dtype)
        return float(sum_x2 - 2 * (f * b).sum() + ((f.T @ f) * gram).sum())

    def _ridge_eye(self, counts: torch.Tensor) -> torch.Tensor:
        """Per-row ridge λ·(observed faces in the row) + ε on the diagonal: (R, K, K)."""
        eye = torch.eye(self.k, device=counts.device, dtype=self.f.dtype)
        return (self.ridge * counts + EPS)[:, None, None] * eye

    def _rebalance(self) -> None:
        """Fix CP's scale ambiguity: unit-norm columns of V and F, the scale moved into U (≥ 0 kept)."""
        v_norm = self.v.norm(dim=0).clamp_min(EPS) / self.v.shape[0] ** 0.5
        f_norm = self.f.norm(dim=0).clamp_min(EPS)
        self.v, self.f = self.v / v_norm, self.f / f_norm
        self.u = self.u * (v_norm * f_norm)

    # ------------------------------------------------------------------ prediction

    def codes(self) -> torch.Tensor:
        """Per-member codes (N, K): U itself."""
        return self.u

    @torch.no_grad()
    def predict_rows(self, u_rows: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
        """(B, K) member codes, (B,) seconds → (B, 136) normalized faces."""
        return (u_rows * self.v[t]) @ self.f.T

    def predict(self, i: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
        return self.predict_rows(self.u[i], t)

    def decode_latent(self, z: torch.Tensor) -> torch.Tensor:
        """(B, K) latent u∘v → (B, 136) normalized faces."""
        return z @ self.f.T

    def latents(self) -> tuple[torch.Tensor, torch.Tensor]:
        """(U (N,K), V (T,K)) in the space the decoder reads (U∘V)."""
        return self.u, self.v

    @torch.no_grad()
    def infer_members(self, x: torch.Tensor, mask: torch.Tensor, *, sweeps: int = 50, **_) -> torch.Tensor:
        """U rows of new members from their observed faces, V and F frozen.

        A ridge toward the training members' mean U makes a member seen for a
        few seconds (or not at all) predict like an average member.
        """
        m = mask.to(x.dtype)
        p = torch.einsum("ntd,dk->ntk", x * m[:, :, None], self.f)
        gram, rhs = self._u_system(p, m, m.sum(1))
        prior = (1.0 + self.ridge * m.sum(1))[:, None, None] * torch.eye(self.k, device=x.device, dtype=x.dtype)
        u_bar = self.u.mean(0, keepdim=True)
        rhs = rhs + (prior @ u_bar.T).squeeze(-1)
        start = u_bar.expand(len(x), -1)
        return hals_nonneg(gram + prior, rhs, start, sweeps)

    def infer_codes(self, x: torch.Tensor, seen: torch.Tensor, steps: int = 0, lr: float = 0.0) -> torch.Tensor:
        """New members' U (models.registry.FactorModel): ridge-regularized non-negative least squares."""
        return self.infer_members(x, seen)

    def prepare(self, faces) -> None:
        pass

    def finalize(self, *_):
        pass

    def reconstruct(self, x: torch.Tensor, i: torch.Tensor | None = None) -> None:
        return None          # no encoder

    def learned_member_bias(self) -> None:
        return None

    def parameters(self) -> list:
        return []            # fitted by ALS, not by gradients

    # ------------------------------------------------------------------ state

    def args(self) -> dict:
        return {"n_members": self.u.shape[0], "n_seconds": self.v.shape[0], "k": self.k,
                "ridge": self.ridge, "d": self.f.shape[0]}

    def state_dict(self) -> dict:
        return {"u": self.u.cpu(), "v": self.v.cpu(), "f": self.f.cpu(), "history": list(self.history)}

    def load_state_dict(self, state: dict) -> None:
        self.u, self.v, self.f = (state[k].to(self.device) for k in ("u", "v", "f"))
        self.history = list(state.get("history", []))

    def to(self, device) -> "TensorFactorization":
        self.device = torch.device(device)
        self.u, self.v, self.f = self.u.to(device), self.v.to(device), self.f.to(device)
        return self

    def eval(self):
        return self
