"""Data layer of the models: validation, normalization, splits, devices."""
import sys
from pathlib import Path
import dataclasses

import numpy as np
import pytest
import torch

from models.data import (Movie, Normalizer, completion_split, coordinate_noise, load_movie, member_split,
                         movie_from_tensor, pick_device, prefix_split)
from pipeline.store import DataError
sys.path.insert(0, str(Path(__file__).parent))  # tests/ is not a package: find the fixtures module
from models_fixtures import tiny_tensor, write_tiny_tensor  # noqa: E402


def test_load_roundtrip_and_summary(tmp_path):
    movie = load_movie(write_tiny_tensor(tmp_path))
    summary = movie.summary()
    assert (summary["members"], summary["time_bins"]) == (8, 30)
    assert 0 < summary["missing_percent"] < 50
    assert "true_u" in movie.extra and "noise_floor" in movie.attrs


def test_all_missing_member_is_dropped_with_warning():
    tensor = tiny_tensor()
    tensor.mask[2] = False
    tensor.landmarks[2] = np.nan
    with pytest.warns(UserWarning, match="dropping 1 member"):
        movie = movie_from_tensor(tensor)
    assert movie.n_members == 7 and movie.dropped == [str(tensor.member_id[2])]
    assert len(movie.extra["true_u"]) == 7


def test_bad_inputs_raise_clear_errors():
    tensor = tiny_tensor()
    empty = dataclasses.replace(tensor, mask=np.zeros_like(tensor.mask),
                                landmarks=np.full_like(tensor.landmarks, np.nan))
    with pytest.raises(DataError, match="no member has a single observed face"):
        movie_from_tensor(empty)
    nan_observed = dataclasses.replace(tensor, landmarks=tensor.landmarks.copy())
    i, t = np.argwhere(tensor.mask)[0]
    nan_observed.landmarks[i, t, 5] = np.nan
    with pytest.raises(DataError, match="mask=False where a face is missing"):
        movie_from_tensor(nan_observed)
    wrong = dataclasses.replace(tensor, landmarks=tensor.landmarks[:, :, :100])
    with pytest.raises(DataError, match=r"\(N, T, 136\)"):
        movie_from_tensor(wrong)
    no_time = dataclasses.replace(tensor, landmarks=tensor.landmarks[:, :0], mask=tensor.mask[:, :0])
    with pytest.raises(DataError, match="empty"):
        movie_from_tensor(no_time)


def test_completion_split_is_seeded_disjoint_and_five_to_one():
    mask = tiny_tensor().mask
    train, test = completion_split(mask, 6, seed=1)
    again, _ = completion_split(mask, 6, seed=1)
    other, _ = completion_split(mask, 6, seed=2)
    assert not (train & test).any() and ((train | test) == mask).all()
    assert np.array_equal(train, again) and not np.array_equal(train, other)
    assert np.array_equal(test.sum(1), mask.sum(1) // 6)


def test_member_and_prefix_splits():
    train_rows, test_rows = member_split(10, 0.2, seed=0)
    assert len(test_rows) == 2 and not set(train_rows) & set(test_rows)
    mask = np.ones((3, 100), bool)
    seen, rest, cut = prefix_split(mask, 0.05)
    assert cut == 5 and seen[:, :5].all() and not seen[:, 5:].any() and rest[:, 5:].all()
    assert prefix_split(mask, 0.001)[2] == 1            # at least one second is observed
    with pytest.raises(DataError, match="at least 2 members"):
        member_split(1)


def test_normalizer_uses_training_cells_only_and_round_trips():
    tensor = tiny_tensor()
    train, _ = completion_split(tensor.mask, 6, 0)
    norm = Normalizer.fit(tensor.landmarks, train)
    assert np.allclose(norm.mean, tensor.landmarks[train].mean(0), atol=1e-5)
    x = tensor.landmarks[tensor.mask]
    assert np.allclose(norm.decode(norm.encode(x)), x, atol=1e-5)
    assert np.allclose(Normalizer.from_state(norm.state()).mean, norm.mean)


@pytest.mark.skipif(torch.cuda.is_available(), reason="checks the message shown without a GPU")
def test_cuda_requested_without_gpu_names_the_fix():
    with pytest.raises(ValueError, match="train.device=auto"):
        pick_device("cuda")
    assert pick_device("auto").type == "cpu"


def _two_part_movie(seed=0, n=24, t=80):
    """Faces whose first 68 coordinates are noisy (SD 1) and carry a loud factor a(t) (amplitude 1), and
    whose last 68 are quiet (SD 0.1) and carry a faint factor b(t) (amplitude 0.3): like the jaw line
    and the brows of theatre faces. Returns the movie, a and b."""
    rng = np.random.default_rng(seed)
    a, b = np.sin(np.arange(t) / 5.0), np.cos(np.arange(t) / 3.0) ** 3
    u = rng.uniform(0.5, 1.5, size=(n, 1))
    signal = np.concatenate([np.repeat((u * a)[:, :, None], 68, 2),
                             np.repeat((0.3 * u * b)[:, :, None], 68, 2)], axis=2)
    noise = rng.standard_normal(signal.shape) * np.r_[np.full(68, 1.0), np.full(68, 0.1)]
    x = (signal + noise + rng.standard_normal((n, 1, 136))).astype(np.float32)   # plus each member's own face
    mask = rng.random((n, t)) > 0.1
    x[~mask] = np.nan
    movie = Movie(x, mask, np.array([f"m{i}" for i in range(n)]), np.array(["s"] * n))
    return movie, a, b


def test_coordinate_noise_measures_each_coordinates_noise_and_normalizes_by_it():
    movie, _, _ = _two_part_movie()
    noise = coordinate_noise(movie.landmarks, movie.mask)
    # a step from one second to the next holds √2 × the noise, plus the (smooth) signal's small step
    assert np.allclose(noise[:68], 1.0, rtol=0.15) and np.allclose(noise[68:], 0.1, rtol=0.35)
    norm = Normalizer.fit(movie.landmarks, movie.mask, per_member=True, per_coordinate=True)
    assert norm.scale.shape == (136,) and norm.scale[:68].mean() / norm.scale[68:].mean() > 8
    x = movie.landmarks[movie.mask]
    assert np.allclose(norm.decode(norm.encode(x)), x, atol=1e-4)
    again = Normalizer.from_state(norm.state())
    assert np.array_equal(again.scale, norm.scale)
    old = Normalizer.from_state({"mean": norm.mean.tolist(), "scale": 2.0})    # saved before per-coordinate scales
    assert old.scale == 2.0 and np.allclose(old.decode(old.encode(x)), x, atol=1e-4)
    assert coordinate_noise(movie.landmarks, np.eye(*movie.mask.shape, dtype=bool)) is None   # no two seconds in a row


def test_weighing_coordinates_by_their_noise_lets_tf_find_the_faint_quiet_factor(tmp_path):
    """With one factor, pooled TF spends it on the loud factor of the noisy coordinates; divided by
    their noise, the quiet coordinates' faint factor explains far more and TF learns it."""
    from models.config import ModelsConfig, TFConfig
    from models.train import fit_model
    from models_fixtures import tiny_config

    movie, a, b = _two_part_movie()
    learned = {}
    for scale in ("pooled", "noise"):
        cfg = tiny_config()
        models_cfg = ModelsConfig(k=1, tf=TFConfig(max_iters=50), coordinate_scale=scale)
        fitted = fit_model("tf", movie, movie.mask, models_cfg, cfg.train, tmp_path / scale, split={"seed": 0})
        v = fitted.model.latents()[1].cpu().numpy()[:, 0]
        learned[scale] = (abs(np.corrcoef(v, a)[0, 1]), abs(np.corrcoef(v, b)[0, 1]))
    assert learned["pooled"][0] > 0.9 and learned["pooled"][1] < 0.5
    assert learned["noise"][1] > 0.9 and learned["noise"][0] < 0.5
