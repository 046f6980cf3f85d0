"""Member offsets (each member's own mean face) and validation-based model selection."""
import dataclasses
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

from models import checkpoint as ckpt
from models import cli
from models.data import MemberOffsets, completion_split, movie_from_tensor, mse_per_face, validation_split
from models.evaluate import infer_members, member_mean_faces
from models.synthetic_tensor import SyntheticSpec, make_synthetic_movie
from models.train import fit_model, load_fitted

sys.path.insert(0, str(Path(__file__).parent))  # tests/ is not a package: find the fixtures module
from models_fixtures import identity_config, identity_movie, tiny_config, write_tiny_tensor  # noqa: E402


@pytest.fixture(scope="module")
def movie():
    """Strong per-member face shapes (identity) on top of the expressions, like real audiences."""
    return identity_movie()


@pytest.fixture(scope="module")
def split(movie):
    return completion_split(movie.mask, 6, 0)


def _held_out(fitted, movie, test):
    ii, tt = np.nonzero(test)
    return mse_per_face(fitted.predict(ii, tt), movie.landmarks[ii, tt])


def _member_mean(movie, train, test):
    ii, tt = np.nonzero(test)
    return mse_per_face(member_mean_faces(movie.landmarks, train)[ii], movie.landmarks[ii, tt])


# ----------------------------------------------------------------------------- offsets


def test_new_member_offsets_take_identity_directions_not_a_held_expression():
    """Members differ along a few face-shape directions; a short prefix spent in one expression
    (a direction in which members do not differ) must not move the new member's offset there."""
    rng = np.random.default_rng(0)
    n, t, d = 40, 50, 136
    identity_dirs = np.linalg.qr(rng.standard_normal((d, 4)))[0].T                  # (4, 136) orthonormal
    expression = np.linalg.qr(np.concatenate([identity_dirs.T, rng.standard_normal((d, 1))], 1))[0][:, -1]
    faces = rng.standard_normal((n, 4)) @ identity_dirs                              # (N, 136) identities
    x = faces[:, None] + 0.05 * rng.standard_normal((n, t, d))
    off = MemberOffsets.fit(x, np.ones((n, t), bool))
    assert len(off.modes) < n and off.noise == pytest.approx(0.05 ** 2, rel=0.1)
    new_face = rng.standard_normal(4) @ identity_dirs
    prefix = new_face + 0.8 * expression + 0.05 * rng.standard_normal((1, 5, d))   # 5 s of a held smile
    est = off.estimate(prefix, np.ones((1, 5), bool))[0]
    assert abs(float((est - off.prior) @ expression)) < 0.1                          # the smile stays out
    assert np.abs(est - new_face).sum() < 0.2 * np.abs(off.prior - new_face).sum()   # the identity comes in
    restored = MemberOffsets.from_state(off.state())
    assert np.allclose(restored.estimate(prefix, np.ones((1, 5), bool)), est[None], atol=1e-5)


def test_offsets_follow_identity_and_shrink_without_it():
    spec = SyntheticSpec(n_members=10, n_seconds=40, k_true=2, seed=1)
    for identity_std, own in ((0.08, True), (0.0, False)):
        tensor = make_synthetic_movie(dataclasses.replace(spec, identity_std=identity_std))[0]
        x, mask = np.nan_to_num(tensor.landmarks), tensor.mask
        off = MemberOffsets.fit(x, mask)
        means = member_mean_faces(x, mask)
        assert np.allclose(off.offsets, means, atol=1e-5)      # training members: their own mean face
        first = np.zeros_like(mask)                              # a new member seen for 2 seconds
        first[:, :2] = mask[:, :2]
        new = off.estimate(x, first)
        if own:     # real identity differences: 2 faces already say much about the member's face
            assert off.shrink < 1.0
            assert np.abs(new - means).mean() < 0.5 * np.abs(off.prior - means).mean()
        else:       # none: the estimate stays near the audience average
            assert off.shrink > 5.0
            assert np.abs(new - off.prior).mean() < 0.5 * np.abs(x[:, :2][first[:, :2]] - off.prior).mean()
    # a member with no face at all gets the prior
    est = off.estimate(x[:2], np.zeros_like(mask[:2]))
    assert np.allclose(est, off.prior[None], atol=1e-6)


@pytest.mark.parametrize("kind", ["tf", "nltf", "fvae"])
def test_each_model_beats_the_member_mean_when_members_differ(kind, movie, split, tmp_path):
    train, test = split
    cfg = identity_config()
    fitted = fit_model(kind, movie, train, cfg.models, cfg.train, tmp_path)
    assert fitted.offsets is not None
    assert _held_out(fitted, movie, test) < 0.6 * _member_mean(movie, train, test)


def test_without_offsets_tf_cannot_hold_every_face_shape(movie, split, tmp_path):
    """The failure the offsets fix: K factors spent on many face shapes lose to the member mean."""
    train, test = split
    cfg = identity_config()
    raw = fit_model("tf", movie, train, dataclasses.replace(cfg.models, member_offsets=False), cfg.train,
                    tmp_path / "raw")
    centred = fit_model("tf", movie, train, cfg.models, cfg.train, tmp_path / "centred")
    assert raw.offsets is None
    assert _held_out(raw, movie, test) > _member_mean(movie, train, test) > 2 * _held_out(centred, movie, test)


@pytest.mark.parametrize("kind", ["tf", "fvae"])
def test_prediction_adds_each_members_offset_back(kind, movie, split, tmp_path):
    train, _ = split
    cfg = tiny_config()
    fitted = fit_model(kind, movie, train, cfg.models, cfg.train, tmp_path)
    i, t = np.array([0, 1, 2, 2]), np.array([5, 5, 7, 8])
    with torch.no_grad():
        expression = fitted.model.predict(torch.as_tensor(i), torch.as_tensor(t)).float().numpy()
    want = fitted.normalizer.decode(expression + fitted.offsets.offsets[i])
    assert np.allclose(fitted.predict(i, t), want, atol=1e-5)
    # the offsets are each member's mean over the faces the model was fitted to, stored with the model:
    # the torch models never see the faces held back for validation, TF is refitted on every training face
    fit, _ = validation_split(train, cfg.train.validation_every, cfg.train.seed)
    fitted_to = train if kind == "tf" else fit
    assert not (fit == train).all()
    assert np.allclose(fitted.normalizer.decode(fitted.offsets.offsets), member_mean_faces(movie.landmarks, fitted_to),
                       atol=1e-4)
    again = load_fitted(tmp_path, "cpu")
    assert np.allclose(again.offsets.offsets, fitted.offsets.offsets)
    assert np.allclose(again.predict(i, t), fitted.predict(i, t), atol=1e-5)


def test_torch_models_learn_a_bias_on_top_of_the_offsets_only_when_on(movie, split, tmp_path):
    train, _ = split
    cfg = tiny_config()
    on = fit_model("nltf", movie, train, cfg.models, cfg.train, tmp_path / "on")
    assert on.model.factors.bias is not None and on.model.factors.bias.shape == (movie.n_members, 136)
    raw = dataclasses.replace(cfg.models, member_offsets=False)
    off = fit_model("nltf", movie, train, raw, cfg.train, tmp_path / "off")
    assert off.model.factors.bias is None and "factors.bias" not in off.model.state_dict()
    # new members are shrunk toward the training members' whole offsets (offset + learned bias)
    whole = on.offsets.offsets + on.model.factors.bias.detach().numpy()
    assert np.allclose(on.offsets.prior, whole.mean(0), atol=1e-5)
    assert np.allclose(load_fitted(tmp_path / "on", "cpu").offsets.prior, on.offsets.prior)
    i, t = torch.tensor([0, 4]), torch.tensor([3, 3])
    with torch.no_grad():   # predict = f(u_i∘v_t) + b_i; predict_rows (new members) has no b
        assert torch.allclose(on.model.predict(i, t),
                              on.model.predict_rows(on.model.factors.log_u[i], t) + on.model.factors.bias[i])


def test_autoencoder_reconstruction_uses_the_offsets(movie, split, tmp_path):
    from models.evaluate import reconstruction_mse
    train, _ = split
    cfg = tiny_config()
    fitted = fit_model("fvae", movie, train, cfg.models, cfg.train, tmp_path)
    recon = reconstruction_mse(fitted, movie, train, 1024)
    assert np.isfinite(recon) and recon < _member_mean(movie, train, train) * 1.5


# ----------------------------------------------------------------------------- checkpoints


def _as_saved_before_offsets(folder: Path) -> None:
    """Rewrite a member_offsets=false checkpoint the way it looked before the option existed."""
    path = folder / "checkpoints" / (folder / "checkpoints" / "last").read_text().strip()
    saved = torch.load(path, weights_only=False)
    del saved["fingerprint"]["member_offsets"]
    saved.pop("offsets")
    torch.save(saved, path)


def test_checkpoint_with_another_offset_setting_is_refused(movie, split, tmp_path):
    train, _ = split
    cfg = tiny_config()
    raw_models = dataclasses.replace(cfg.models, member_offsets=False)
    for kind in ("tf", "fvae"):
        fit_model(kind, movie, train, raw_models, cfg.train, tmp_path / kind)
        with pytest.raises(ValueError, match="member_offsets=false.*now says models.member_offsets=true"):
            fit_model(kind, movie, train, cfg.models, cfg.train, tmp_path / kind, resume=True)
        fit_model(kind, movie, train, raw_models, cfg.train, tmp_path / kind, resume=True)   # same setting: fine


def test_checkpoint_from_before_offsets_is_refused_or_loaded_as_raw(movie, split, tmp_path):
    train, _ = split
    cfg = tiny_config()
    raw_models = dataclasses.replace(cfg.models, member_offsets=False)
    fitted = fit_model("fvae", movie, train, raw_models, cfg.train, tmp_path)
    _as_saved_before_offsets(tmp_path)
    with pytest.raises(ValueError, match="saved before member offsets existed"):
        fit_model("fvae", movie, train, cfg.models, cfg.train, tmp_path, resume=True)
    old = load_fitted(tmp_path, "cpu")          # it fitted raw faces: loaded without offsets
    assert old.offsets is None
    i, t = np.array([0, 3]), np.array([2, 9])
    assert np.allclose(old.predict(i, t), fitted.predict(i, t), atol=1e-5)
    fit_model("fvae", movie, train, raw_models, cfg.train, tmp_path, resume=True)   # raw = what it was


# ----------------------------------------------------------------------------- long-term


def test_new_members_offsets_come_from_their_observed_prefix_only(movie, tmp_path):
    cfg = tiny_config()
    rows = np.arange(movie.n_members)
    train_rows, test_rows = rows[:-3], rows[-3:]
    train_movie = dataclasses.replace(movie, landmarks=movie.landmarks[train_rows], mask=movie.mask[train_rows],
                                      member_id=movie.member_id[train_rows], session_id=movie.session_id[train_rows])
    for kind in ("tf", "nltf"):
        fitted = fit_model(kind, train_movie, train_movie.mask, cfg.models, cfg.train, tmp_path / kind)
        x = fitted.normalizer.encode(movie.landmarks[test_rows])
        seen = movie.mask[test_rows].copy()
        seen[:, 10:] = False
        codes, off = infer_members(fitted, x, seen, steps=30, lr=0.05)
        changed = x.copy()
        changed[:, 10:] += 5.0                    # the unobserved rest must not matter
        codes2, off2 = infer_members(fitted, changed, seen, steps=30, lr=0.05)
        assert np.allclose(off, off2) and torch.allclose(codes, codes2)
        # the offset is the member's, not the audience's: closer to its own mean face than the prior is
        own = member_mean_faces(x, movie.mask[test_rows])
        assert (np.abs(off - own).sum(1) < np.abs(fitted.offsets.prior - own).sum(1)).all()
        none, off0 = infer_members(fitted, x, np.zeros_like(seen), steps=30, lr=0.05)
        assert np.allclose(off0, fitted.offsets.prior[None], atol=1e-6)
        pred = fitted.predict_rows(codes, np.array([0, 1]), np.array([20, 21]), offsets=off)
        assert pred.shape == (2, 136) and np.isfinite(pred).all()


# ----------------------------------------------------------------------------- validation


def test_validation_split_is_disjoint_and_per_member(movie):
    train, _ = completion_split(movie.mask, 6, 0)
    fit, val = validation_split(train, 10, 0)
    assert not (fit & val).any() and ((fit | val) == train).all()
    assert (val.sum(1) == train.sum(1) // 10).all()
    assert validation_split(train, 0, 0) == (train, None)


def test_early_stopping_keeps_the_best_epoch_and_stops(tmp_path):
    """Pure noise around each member's face: nothing to learn, so training stops early."""
    spec = SyntheticSpec(n_members=10, n_seconds=40, k_true=2, displacement=0.0, noise_std=0.05,
                         identity_std=0.05, seed=2)
    noise = movie_from_tensor(make_synthetic_movie(spec)[0])
    train, test = completion_split(noise.mask, 6, 0)
    cfg = tiny_config(epochs=60, patience=3)
    fitted = fit_model("nltf", noise, train, cfg.models, cfg.train, tmp_path)
    vals = [m["val_mse"] for m in fitted.metrics]
    best = fitted.metrics[-1]["best_epoch"]
    assert len(vals) < 60 and len(vals) - best == 3           # stopped `patience` epochs after the kept one
    saved = ckpt.load_last(tmp_path / "checkpoints")
    assert saved["stopped"] and saved["best"]["epoch"] == best
    if best > 0:
        assert saved["best"]["val_mse"] == vals[best - 1]
    # reloading gives the kept model, not the last epoch's
    assert np.allclose(load_fitted(tmp_path, "cpu").predict(*np.nonzero(test)), fitted.predict(*np.nonzero(test)),
                       atol=1e-6)
    # and on pure noise the kept model is about the member mean, never much worse
    assert _held_out(fitted, noise, test) < 1.1 * _member_mean(noise, train, test)


def test_tf_ridge_is_chosen_on_validation(tmp_path):
    spec = SyntheticSpec(n_members=10, n_seconds=40, k_true=2, displacement=0.0, noise_std=0.05,
                         identity_std=0.05, seed=2)
    noise = movie_from_tensor(make_synthetic_movie(spec)[0])
    train, test = completion_split(noise.mask, 6, 0)
    cfg = tiny_config()
    fitted = fit_model("tf", noise, train, cfg.models, cfg.train, tmp_path / "noise")
    grid = {float(r): v for r, v in fitted.metrics[-1]["val_mse_by_ridge"].items()}
    assert set(grid) == set(cfg.models.tf.ridge_grid)
    kept = fitted.metrics[-1]["ridge"]
    assert grid[kept] <= grid[max(grid)]                      # never worse than 'offsets alone' on validation
    assert _held_out(fitted, noise, test) < 1.05 * _member_mean(noise, train, test)
    # with expressions to learn, a weak ridge wins
    train_id, test_id = completion_split(identity_movie().mask, 6, 0)
    learned = fit_model("tf", identity_movie(), train_id, cfg.models, cfg.train, tmp_path / "signal")
    assert learned.metrics[-1]["ridge"] < max(cfg.models.tf.ridge_grid)
    off = dataclasses.replace(cfg.train, validation_every=0)
    plain = fit_model("tf", noise, train, cfg.models, off, tmp_path / "plain")
    assert plain.metrics[-1]["ridge"] == cfg.models.tf.ridge and "val_mse_by_ridge" not in plain.metrics[-1]


# ----------------------------------------------------------------------------- demo


def test_demo_retrains_when_its_settings_change(tmp_path, capsys, monkeypatch):
    import models.evaluate
    monkeypatch.setattr(models.evaluate, "factors", lambda *a, **k: {})   # completion is what matters here
    tensor = write_tiny_tensor(tmp_path)
    cfg = tiny_config()
    cfg = cfg.replace(models=dataclasses.replace(cfg.models, names=("tf",)))
    cli.run_models_demo(cfg, tensor, tmp_path / "demo")
    assert "retraining" not in capsys.readouterr().out
    cli.run_models_demo(cfg, tensor, tmp_path / "demo")                   # unchanged: the models are reused
    assert "retraining" not in capsys.readouterr().out
    tf = dataclasses.replace(cfg.models.tf, max_iters=7)
    changed = cfg.replace(models=dataclasses.replace(cfg.models, tf=tf))
    report = cli.run_models_demo(changed, tensor, tmp_path / "demo")      # no "different configuration" error
    assert report.is_file() and "retraining" in capsys.readouterr().out
    saved = ckpt.load_last(tmp_path / "demo" / "completion" / "tf" / "checkpoints")
    assert saved["fingerprint"]["tf"]["max_iters"] == 7


def test_a_one_value_ridge_grid_is_the_ridge_used_with_validation(movie, split, tmp_path):
    train, _ = split
    cfg = tiny_config()
    one = dataclasses.replace(cfg.models, tf=dataclasses.replace(cfg.models.tf, ridge_grid=(5.0,)))
    assert cfg.train.validation_every > 0 and one.tf.ridge != 5.0
    fitted = fit_model("tf", movie, train, one, cfg.train, tmp_path)
    assert fitted.metrics[-1]["ridge"] == 5.0 and fitted.model.args()["ridge"] == 5.0


def test_a_rebuilt_tensor_with_the_same_mask_does_not_resume_old_models(movie, split, tmp_path):
    train, _ = split
    cfg = tiny_config()
    fit_model("fvae", movie, train, cfg.models, cfg.train, tmp_path)
    rebuilt = dataclasses.replace(movie, landmarks=movie.landmarks + np.float32(0.01))
    with pytest.raises(ValueError, match="different configuration.*landmarks_sha"):
        fit_model("fvae", rebuilt, train, cfg.models, cfg.train, tmp_path, resume=True)


def test_new_members_factor_prior_carries_the_audience_correlations():
    """Training members who laugh more also jump more: a new member seen laughing gets the jump too."""
    from models.nets import Factors

    factors = Factors(200, 5, 3, u_prior_std=1.0, v_prior_std=1.0)
    g = torch.Generator().manual_seed(0)
    laugh = torch.randn(200, generator=g)
    with torch.no_grad():
        factors.log_u.copy_(torch.stack([laugh, 0.9 * laugh + 0.2 * torch.randn(200, generator=g),
                                         torch.randn(200, generator=g)], 1))
    cov = torch.linalg.inv(factors.log_u_prior_precision())
    # the prior's mean of each factor given only factor 0, one unit above its mean: Σ_j0 / Σ_00
    assert float(cov[1, 0] / cov[0, 0]) > 0.7
    assert abs(float(cov[2, 0] / cov[0, 0])) < 0.15                     # an unrelated factor stays put
