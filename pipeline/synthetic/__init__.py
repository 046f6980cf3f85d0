"""Synthetic IR theatre: screenings that look like the paper's, with known ground truth.

Importing this package is light (configs/schema.py imports its config); the
generator itself lives in submodules:

- config      SyntheticConfig, TheatreGeometry
- layout      seats in perspective
- animation   the factor model (U, V, groups), expressions, blinks, pose, absences
- faces       real source faces and the piecewise-affine warp
- render      auditorium, bodies, per-frame composition, video writer
- stage       the runner stage SYNTHESIZE and the file formats
- testing     make_test_screening for tests, benchmarks and demos
"""
from __future__ import annotations

from pipeline.synthetic.config import SyntheticConfig, TheatreGeometry

__all__ = ["SyntheticConfig", "TheatreGeometry", "make_test_screening", "SYNTHESIZE"]


def __getattr__(name):
    """Heavy parts load on first use only."""
    if name == "make_test_screening":
        from pipeline.synthetic.testing import make_test_screening
        return make_test_screening
    if name == "SYNTHESIZE":
        from pipeline.synthetic.stage import SYNTHESIZE
        return SYNTHESIZE
    raise AttributeError(f"module 'pipeline.synthetic' has no attribute {name!r}")
