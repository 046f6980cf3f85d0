"""Figures of a run: written as PNG, whatever the sign of the losses."""
from __future__ import annotations

import warnings

from models.plots import training_curves


def test_training_curves_plot_negative_losses(tmp_path):
    # a learned observation σ makes the Gaussian NLL negative once σ < 1/sqrt(2π)
    curves = {"nltf": [{"epoch": e, "loss": -1.0 - e} for e in range(1, 6)],
              "fvae": [{"epoch": e, "loss": -0.5 * e} for e in range(1, 6)]}
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        path = training_curves(curves, tmp_path / "curves.png")
    assert path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
