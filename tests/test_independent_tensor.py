"""models/independent_tensor.py: the geometry-based benchmark generator (not of any model's form)."""
from __future__ import annotations

import dataclasses

import numpy as np
import pytest

from contract import check_file, documented_schemas
from models.data import completion_split, movie_from_tensor
from models.evaluate import baseline_rows
from models.independent_tensor import ARCHETYPES, CHANNELS, IndependentSpec, make_independent_movie
from pipeline.store import N_COORDS, read_movie_tensor, write_movie_tensor

SMALL = IndependentSpec(n_members=12, n_seconds=120, seed=5)


@pytest.fixture(scope="module")
def default_movie():
    return make_independent_movie(IndependentSpec())


@pytest.fixture(scope="module")
def small_movie():
    return make_independent_movie(SMALL)


def test_shapes_dtypes_and_mask(default_movie):
    tensor, truth = default_movie
    spec = IndependentSpec()
    n, t, k = spec.n_members, spec.n_seconds, len(ARCHETYPES)
    tensor.validate()
    assert tensor.landmarks.shape == (n, t, N_COORDS) and tensor.landmarks.dtype == np.float32
    assert tensor.mask.shape == (n, t) and tensor.mask.dtype == bool
    assert np.array_equal(np.isnan(tensor.landmarks).any(-1), ~tensor.mask)
    assert np.isnan(tensor.landmarks[~tensor.mask]).all()
    assert np.isfinite(tensor.landmarks[tensor.mask]).all()
    assert 0.10 <= 1 - tensor.mask.mean() <= 0.16
    assert tensor.mask.any(1).all()
    assert truth["clean"].shape == truth["oracle"].shape == truth["pose_residue"].shape == (n, t, N_COORDS)
    assert truth["u"].shape == (n, k) and truth["v"].shape == (t, k)
    assert truth["groups"].shape == (n,) and len(np.unique(truth["groups"])) == spec.n_groups
    assert truth["identity"].shape == (n, N_COORDS) and truth["channels"].shape == (n, t, len(CHANNELS))
    assert np.array_equal(tensor.extra["true_u"], truth["u"]) and tensor.extra["true_u"].dtype == np.float32
    assert np.array_equal(tensor.extra["true_v"], truth["v"])
    assert np.array_equal(tensor.extra["true_group"], truth["groups"])
    assert sorted(set(tensor.session_id)) == ["s0", "s1"] and len(set(tensor.member_id)) == n


def test_identity_and_scale(default_movie):
    _, truth = default_movie
    neutral = truth["neutral"].reshape(-1, 68, 2)
    inter_ocular = np.linalg.norm(neutral[:, 36:42].mean(1) - neutral[:, 42:48].mean(1), axis=-1)
    assert 50 < np.median(inter_ocular) < 70
    assert truth["identity"].std(0).mean() > 1.0            # members' neutral faces differ visibly


def test_deterministic_per_seed_and_different_across_seeds(small_movie):
    tensor, truth = small_movie
    again, truth_again = make_independent_movie(SMALL)
    assert np.array_equal(tensor.mask, again.mask)
    np.testing.assert_array_equal(tensor.landmarks, again.landmarks)
    assert truth["oracle_mse"] == truth_again["oracle_mse"]
    other, truth_other = make_independent_movie(dataclasses.replace(SMALL, seed=6))
    assert not np.allclose(truth["v"], truth_other["v"])                  # a different movie
    assert not np.allclose(truth["u"], truth_other["u"])                  # a different audience
    assert not np.array_equal(tensor.mask, other.mask)


def test_floor_and_oracle(default_movie):
    tensor, truth = default_movie
    sigma = IndependentSpec().noise_std
    assert truth["noise_floor"] == pytest.approx(136 * sigma ** 2)
    assert tensor.attrs["noise_floor"] == truth["noise_floor"]
    assert truth["oracle_mse"] >= truth["noise_floor"]
    assert 1.0 <= truth["oracle_ratio"] <= 1.15
    assert tensor.attrs["oracle_ratio"] == pytest.approx(truth["oracle_mse"] / truth["noise_floor"])
    mask = tensor.mask
    residue = (truth["pose_residue"][mask].astype(float) ** 2).sum(-1).mean()
    assert truth["oracle_mse"] == pytest.approx(truth["noise_floor"] + residue, rel=1e-4)
    np.testing.assert_allclose(truth["clean"], truth["oracle"] + truth["pose_residue"], atol=1e-3)


def test_noise_has_the_stated_variance(default_movie):
    tensor, truth = default_movie
    sigma = IndependentSpec().noise_std
    resid = (tensor.landmarks - truth["clean"])[tensor.mask].astype(float)
    np.testing.assert_allclose(resid.var(0), sigma ** 2, rtol=0.05)
    assert abs(resid.mean()) < 0.05


def test_factors_are_non_negative_and_drive_the_faces(default_movie):
    _, truth = default_movie
    assert (truth["u"] > 0).all() and (truth["v"] >= 0).all()
    assert (truth["v"].max(0) > 0.5).all()                       # every archetype happens in the movie
    assert (truth["channels"] >= 0).all() and (truth["channels"] <= 1).all()


def test_missing_more_often_when_expressive(default_movie):
    tensor, truth = default_movie
    missing = ~tensor.mask
    excitement = truth["excitement"]
    high, low = excitement >= np.quantile(excitement, 0.9), excitement <= np.quantile(excitement, 0.5)
    assert missing[high].mean() > 2 * missing[low].mean()
    motion = np.linalg.norm(truth["displacement"], axis=-1)
    motion = motion - np.median(motion, axis=1, keepdims=True)
    assert missing[motion >= np.quantile(motion, 0.9)].mean() > 1.5 * missing[motion <= np.quantile(motion, 0.5)].mean()


def test_renderer_is_not_linear_in_the_drives(small_movie):
    _, truth = small_movie
    _, doubled = make_independent_movie(dataclasses.replace(SMALL, affinity_scale=2.0))
    np.testing.assert_allclose(doubled["u"], 2 * truth["u"], rtol=1e-6)
    np.testing.assert_array_equal(doubled["v"], truth["v"])
    one, two = truth["displacement"].astype(float), doubled["displacement"].astype(float)
    assert np.linalg.norm(two - 2 * one) > 0.2 * np.linalg.norm(2 * one)
    assert np.linalg.norm(two) < 1.7 * np.linalg.norm(one)          # saturation
    laugh = CHANNELS.index("laugh")                                    # threshold: laughs appear from none
    assert ((truth["channels"][..., laugh] == 0) & (doubled["channels"][..., laugh] > 0.1)).any()


def test_works_with_the_models_code(small_movie, tmp_path):
    tensor, _ = small_movie
    path = write_movie_tensor(tmp_path / "independent.h5", tensor)
    assert check_file(path, documented_schemas()["tensor"]) == []
    back = read_movie_tensor(path)
    assert back.attrs["oracle_ratio"] == pytest.approx(tensor.attrs["oracle_ratio"])
    movie = movie_from_tensor(back)
    assert movie.extra["true_u"].shape == (SMALL.n_members, len(ARCHETYPES))
    train, test = completion_split(movie.mask, 6, seed=0)
    rows = baseline_rows(movie, train, test)
    assert {r["model"] for r in rows} == {"member mean", "time mean", "member + time"}
    assert all(r["test_mse"] > tensor.attrs["noise_floor"] for r in rows)
