"""Data layer of the models: validation, normalization, splits, devices."""
import sys
from pathlib import Path
import dataclasses

import numpy as np
import pytest
import torch

from models.data import (Normalizer, completion_split, load_movie, member_split, movie_from_tensor,
                         pick_device, prefix_split)
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
