"""TF by exact masked ALS: correctness, non-negativity, new-member inference, TensorLy as oracle."""
import sys
from pathlib import Path
import numpy as np
import pytest
import torch

from models.tf import TensorFactorization
sys.path.insert(0, str(Path(__file__).parent))  # tests/ is not a package: find the fixtures module
from models_fixtures import random_cp_tensor  # noqa: E402


def _fit(x, mask, k=3, iters=200):
    model = TensorFactorization(*mask.shape, k=k, ridge=1e-6)
    xt = torch.from_numpy(np.nan_to_num(x))
    model.fit(xt, torch.from_numpy(mask), max_iters=iters, tol=1e-9)
    return model, xt


def _mse(model, x, mask):
    i, t = np.nonzero(mask)
    pred = model.predict(torch.from_numpy(i), torch.from_numpy(t)).numpy()
    return float(((pred - x[i, t]) ** 2).sum(-1).mean())


def test_masked_als_recovers_a_cp_tensor_and_keeps_u_nonnegative():
    x, mask, clean = random_cp_tensor(noise=0.0, seed=1)
    model, _ = _fit(x, mask)
    assert (model.u >= 0).all()
    i, t = np.nonzero(~mask)                       # never-seen faces are predicted too
    pred = model.predict(torch.from_numpy(i), torch.from_numpy(t)).numpy()
    scale = (clean ** 2).sum(-1).mean()
    assert ((pred - clean[i, t]) ** 2).sum(-1).mean() < 1e-3 * scale
    slack = 1e-6 * model.history[0]              # float32 round-off once the fit is exact
    assert all(b <= a + slack for a, b in zip(model.history, model.history[1:]))


def test_infer_members_recovers_rows_with_factors_frozen():
    x, mask, clean = random_cp_tensor(noise=0.0, seed=2)
    model, xt = _fit(x, mask)
    u_new = model.infer_members(xt[:2], torch.from_numpy(mask[:2]), sweeps=200)
    assert torch.allclose(u_new, model.u[:2], rtol=2e-2, atol=2e-2)
    nothing = model.infer_members(xt[:2], torch.zeros(2, mask.shape[1], dtype=torch.bool))
    assert torch.allclose(nothing, model.u.mean(0, keepdim=True).expand(2, -1), atol=1e-6)


def test_matches_tensorly_masked_parafac_on_a_tiny_tensor():
    tl = pytest.importorskip("tensorly")
    from tensorly.decomposition import parafac

    x, mask, clean = random_cp_tensor(n=6, t=15, d=20, k=2, noise=0.05, seed=3)
    model, _ = _fit(x, mask, k=2)
    ours = _mse(model, x, mask)
    full_mask = np.repeat(mask[:, :, None], x.shape[2], axis=2)
    cp = parafac(tl.tensor(np.nan_to_num(x).astype(np.float64)), rank=2, mask=tl.tensor(full_mask.astype(float)),
                 n_iter_max=500, init="random", random_state=0, tol=1e-10)
    recon = tl.cp_to_tensor(cp)
    theirs = float(((recon - x) ** 2)[mask].sum(-1).mean())
    noise_floor = 0.05 ** 2 * x.shape[2]
    assert ours <= theirs * 1.05 + 1e-6          # at least as good as the oracle on observed faces
    assert ours < 1.5 * noise_floor              # and near the noise level
