"""Training: a two-step smoke test, kill/resume equality, config checks, reproducibility, GPU."""
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

from models import checkpoint as ckpt
from models.data import completion_split, movie_from_tensor
from models.train import fit_model, load_fitted

sys.path.insert(0, str(Path(__file__).parent))  # tests/ is not a package: find the fixtures module
from models_fixtures import tiny_config, tiny_tensor  # noqa: E402


@pytest.fixture(scope="module")
def movie():
    return movie_from_tensor(tiny_tensor())


def _fit(kind, movie, folder, resume=False, on_epoch_end=None, **train):
    cfg = tiny_config(**train)
    train_mask, _ = completion_split(movie.mask, 6, 0)
    return fit_model(kind, movie, train_mask, cfg.models, cfg.train, folder, resume=resume,
                     split={"seed": 0}, on_epoch_end=on_epoch_end)


@pytest.mark.parametrize("kind", ["nltf", "fvae", "vae"])
def test_two_epoch_smoke(kind, movie, tmp_path):
    fitted = _fit(kind, movie, tmp_path)
    assert [m["epoch"] for m in fitted.metrics] == [1, 2]
    assert all(np.isfinite(m["loss"]) for m in fitted.metrics)
    assert (tmp_path / "checkpoints" / "last").read_text().strip() == "epoch_0002.pt"
    assert len((tmp_path / "metrics.jsonl").read_text().splitlines()) == 2
    pred = fitted.predict(np.array([0, 1]), np.array([3, 4]))
    assert pred.shape == (2, 136) and np.isfinite(pred).all()
    again = load_fitted(tmp_path, "cpu")
    assert np.allclose(again.predict(np.array([0, 1]), np.array([3, 4])), pred, atol=1e-6)


def test_tf_fits_and_reloads(movie, tmp_path):
    fitted = _fit("tf", movie, tmp_path)
    i, t = np.nonzero(movie.mask)
    assert np.allclose(load_fitted(tmp_path, "cpu").predict(i, t), fitted.predict(i, t), atol=1e-6)


class Killed(RuntimeError):
    pass


def _kill_at(epoch):
    def hook(e):
        if e == epoch:
            raise Killed(f"killed after epoch {e}")
    return hook


@pytest.mark.parametrize("kind", ["fvae", "nltf"])
def test_kill_and_resume_gives_the_uninterrupted_result(kind, movie, tmp_path):
    whole = _fit(kind, movie, tmp_path / "whole", epochs=4)
    with pytest.raises(Killed):
        _fit(kind, movie, tmp_path / "killed", epochs=4, on_epoch_end=_kill_at(2), checkpoint_seconds=0)
    assert (tmp_path / "killed" / "checkpoints" / "last").read_text().strip() == "epoch_0002.pt"
    resumed = _fit(kind, movie, tmp_path / "killed", resume=True, epochs=4)
    for (name, a), (_, b) in zip(whole.model.state_dict().items(), resumed.model.state_dict().items()):
        assert torch.equal(a, b), name
    assert [m["loss"] for m in whole.metrics] == [m["loss"] for m in resumed.metrics]


def test_checkpoints_wait_checkpoint_seconds_and_a_kill_before_the_first_retrains_to_the_same_result(movie, tmp_path):
    whole = _fit("fvae", movie, tmp_path / "whole", epochs=4, checkpoint_seconds=0)
    assert (tmp_path / "whole" / "checkpoints" / "last").read_text().strip() == "epoch_0004.pt"
    with pytest.raises(Killed):
        _fit("fvae", movie, tmp_path / "killed", epochs=4, on_epoch_end=_kill_at(3), checkpoint_seconds=3600)
    assert not (tmp_path / "killed" / "checkpoints" / "last").exists()   # no epoch was due yet
    rerun = _fit("fvae", movie, tmp_path / "killed", resume=True, epochs=4, checkpoint_seconds=3600)
    assert (tmp_path / "killed" / "checkpoints" / "last").read_text().strip() == "epoch_0004.pt"  # the last always
    for (name, a), (_, b) in zip(whole.model.state_dict().items(), rerun.model.state_dict().items()):
        assert torch.equal(a, b), name


@pytest.mark.parametrize("kind", ["vae", "fvae"])
def test_more_epochs_continue_from_the_last_epoch_not_the_kept_one(kind, movie, tmp_path):
    # the kept (best-validation) epoch is loaded after training; the last checkpoint must still
    # hold the last epoch's weights, so that asking for more epochs later continues the same run
    whole = _fit(kind, movie, tmp_path / "whole", epochs=6, patience=0)
    _fit(kind, movie, tmp_path / "grown", epochs=3, patience=0)
    grown = _fit(kind, movie, tmp_path / "grown", resume=True, epochs=6, patience=0)
    assert [m["val_mse"] for m in whole.metrics] == [m["val_mse"] for m in grown.metrics]
    for (name, a), (_, b) in zip(whole.model.state_dict().items(), grown.model.state_dict().items()):
        assert torch.equal(a, b), name


def test_kill_after_the_last_epoch_still_saves_the_kept_model(movie, tmp_path):
    # a kill between the last epoch's checkpoint and the save of the kept model: the rerun that
    # finds every epoch done writes it, and a later load gives what an uninterrupted run gives
    whole = _fit("fvae", movie, tmp_path / "whole", epochs=3)
    with pytest.raises(Killed):
        _fit("fvae", movie, tmp_path / "killed", epochs=3, on_epoch_end=_kill_at(3))
    assert "final" not in ckpt.load_last(tmp_path / "killed" / "checkpoints")
    _fit("fvae", movie, tmp_path / "killed", resume=True, epochs=3)
    assert "final" in ckpt.load_last(tmp_path / "killed" / "checkpoints")
    i, t = np.nonzero(movie.mask)
    assert np.allclose(load_fitted(tmp_path / "killed", "cpu").predict(i, t),
                       load_fitted(tmp_path / "whole", "cpu").predict(i, t), atol=1e-6)


def test_existing_run_needs_resume_and_the_same_config(movie, tmp_path):
    _fit("fvae", movie, tmp_path)
    with pytest.raises(ValueError, match="--resume"):
        _fit("fvae", movie, tmp_path)
    with pytest.raises(ValueError, match="different configuration.*lr"):
        _fit("fvae", movie, tmp_path, resume=True, lr=1e-2)
    _fit("fvae", movie, tmp_path, resume=True)        # same config: loads the finished model


def test_same_seed_same_model_other_seed_differs(movie, tmp_path):
    a = _fit("fvae", movie, tmp_path / "a")
    b = _fit("fvae", movie, tmp_path / "b")
    c = _fit("fvae", movie, tmp_path / "c", seed=1)
    assert torch.equal(a.model.factors.v, b.model.factors.v)
    assert not torch.equal(a.model.factors.v, c.model.factors.v)


def test_dangling_last_pointer_names_the_fix(tmp_path):
    (tmp_path / "last").write_text("epoch_0009.pt\n")
    with pytest.raises(ValueError, match="is missing"):
        ckpt.load_last(tmp_path)


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")
def test_fvae_trains_on_cuda_with_amp(movie, tmp_path):
    fitted = _fit("fvae", movie, tmp_path, device="cuda", amp=True)
    assert fitted.device.type == "cuda" and np.isfinite(fitted.metrics[-1]["loss"])
    assert np.isfinite(fitted.predict(np.array([0]), np.array([0]))).all()


def test_fvae_predictive_term_is_the_likelihood_of_its_prediction():
    """models.predictive_weight w adds w × −log N(x; f(U∘V), σ²) to the −ELBO; w = 0 is the paper's loss."""
    from models.fvae import FVAE
    from models.nets import ObsNoise

    torch.manual_seed(0)
    x, i, t = torch.randn(8, 136), torch.arange(8) % 3, torch.arange(8)
    plain, with_term = FVAE(3, 8, 4, hidden=16, layers=1), FVAE(3, 8, 4, hidden=16, layers=1, predictive_weight=2.0)
    with_term.load_state_dict(plain.state_dict())
    torch.manual_seed(1)
    a = plain.loss(x, i, t, n_obs=8)
    torch.manual_seed(1)
    b = with_term.loss(x, i, t, n_obs=8)
    assert "predictive" not in a
    expected = ObsNoise(None).nll(with_term.predict(i, t), x).mean()
    assert torch.allclose(b["predictive"], expected)
    assert torch.allclose(b["loss"], a["loss"] + 2.0 * expected)


def test_k_larger_than_the_data_supports_is_refused_with_the_fix(movie, tmp_path):
    from pipeline.store import DataError

    cfg = tiny_config()
    train_mask, _ = completion_split(movie.mask, 6, 0)
    k = int(min(train_mask.any(1).sum(), train_mask.any(0).sum())) + 1
    with pytest.raises(DataError, match=f"models.k={k} is more than this tensor supports.*models.k={k - 1} or less"):
        fit_model("tf", movie, train_mask, cfg.models.__class__(k=k), cfg.train, tmp_path)
    assert not (tmp_path / "checkpoints").exists()


def test_per_coordinate_noise_learns_each_coordinates_own_sigma_and_one_sigma_is_the_old_likelihood():
    """models.obs_noise: fitted to residuals whose noise differs by coordinate, one σ per coordinate finds
    each coordinate's level; a shared σ gives the isotropic likelihood it always gave."""
    from models.nets import ObsNoise

    rng = np.random.default_rng(0)
    true_std = np.where(np.arange(136) < 20, 0.2, 2.0)              # quiet brows, a noisy rest
    x = torch.tensor(rng.normal(0, true_std, (4000, 136)), dtype=torch.float32)
    zero = torch.zeros_like(x)
    noise = ObsNoise(None, dims=136)
    opt = torch.optim.Adam(noise.parameters(), lr=0.05)
    for _ in range(400):
        opt.zero_grad()
        noise.nll(zero, x).mean().backward()
        opt.step()
    learned = noise.log_std.exp().detach().numpy()
    np.testing.assert_allclose(learned, true_std, rtol=0.1)
    shared = ObsNoise(None)
    with torch.no_grad():
        shared.log_std.fill_(0.3)
        expected = 0.5 * (x ** 2).sum(-1) * np.exp(-0.6) + 136 * 0.3
    np.testing.assert_allclose(shared.nll(zero, x).detach().numpy(), expected.numpy(), rtol=1e-5)
    assert shared.log_std.shape == ()                                 # old checkpoints still load


def test_fvae_with_per_coordinate_noise_saves_and_reloads(movie, tmp_path):
    cfg = tiny_config()
    assert cfg.models.obs_noise == "per_coordinate"
    fitted = _fit("fvae", movie, tmp_path)
    assert fitted.model.noise.log_std.shape == (136,)
    again = load_fitted(tmp_path)
    assert torch.equal(again.model.noise.log_std, fitted.model.noise.log_std)
