"""Inspection: synchronicity statistics and the PNG."""
import numpy as np
import pytest

from pipeline.inspection import plot_synchronicity, synchronicity
from pipeline.store import MovieTensor


def _tensor():
    rng = np.random.default_rng(0)
    lm = rng.normal(0, 0.01, (4, 10, 136)).astype(np.float32)
    lm[:, 5] += 0.5                        # everyone moves together at t = 5
    mask = np.ones((4, 10), bool)
    mask[1:, 7] = False                    # only one member at t = 7
    lm[~mask] = np.nan
    return MovieTensor(lm, mask, np.array(list("abcd"), object), np.array(["s"] * 4, object), "m")


def test_synchronicity_peaks_when_everyone_moves():
    t = _tensor()
    stats = synchronicity(t.landmarks, t.mask)
    assert np.nanargmax(stats["distance"]) == 5
    assert np.isnan(stats["distance"][7]) and stats["observed"][7] == 1
    assert stats["variance"][5] == pytest.approx(stats["variance"][0], rel=1.0)   # shared motion: no spread


def test_plot_writes_png(tmp_path):
    path = plot_synchronicity(_tensor(), tmp_path / "sync.png")
    assert path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
