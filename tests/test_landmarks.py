"""Landmark fitting: model lookup, box mappings, fitting small faces (real photos)."""
import xml.etree.ElementTree as ET
from pathlib import Path

import numpy as np
import pytest

from pipeline.frontalize import normalized_error
from pipeline.landmarks import (ert_boxes_from_detections, ert_boxes_from_landmarks, fit_box_mapping, fit_faces,
                                load_predictor, model_path_of, stock_model_path)
from pipeline.store import DataError
from pipeline.vision_config import LandmarksConfig

FACES_DIR = Path(__file__).resolve().parents[2] / "shared" / "data" / "dlib_faces"
FACES_XML = FACES_DIR / "testing_with_face_landmarks.xml"


def _photo_faces(limit=12):
    """(image, box [l, t, r, b], points (68, 2)) from dlib's example photos (test-only data)."""
    import cv2

    out = []
    for image in ET.parse(FACES_XML).getroot().iter("image"):
        gray = cv2.imread(str(FACES_DIR / image.get("file")), cv2.IMREAD_GRAYSCALE)
        for box in image.iter("box"):
            parts = sorted(box.iter("part"), key=lambda p: int(p.get("name")))
            pts = np.array([[float(p.get("x")), float(p.get("y"))] for p in parts])
            left, top, w, h = (float(box.get(k)) for k in ("left", "top", "width", "height"))
            out.append((gray, np.array([left, top, left + w, top + h]), pts))
    return out[:limit]


def test_stock_model_is_found():
    assert stock_model_path().name == "shape_predictor_68_face_landmarks.dat"
    assert model_path_of("") == stock_model_path()


def test_missing_model_is_a_clear_error():
    with pytest.raises(DataError, match="landmarks.model_path"):
        model_path_of("/nowhere/model.dat")


def test_box_mapping_roundtrip():
    rng = np.random.default_rng(0)
    pts = rng.normal(0, 1, (68, 2)) * 10 + 200
    truth = pts[None] + rng.normal(0, 30, (20, 1, 2))
    ideal = ert_boxes_from_landmarks(truth)
    # a detector whose boxes are 20 % larger and sit 10 % of their height higher
    w = ideal[:, 2] - ideal[:, 0]
    cx, cy = (ideal[:, 0] + ideal[:, 2]) / 2, (ideal[:, 1] + ideal[:, 3]) / 2 - 0.1 * 1.2 * w
    det = np.stack([cx - 0.6 * w, cy - 0.6 * w, cx + 0.6 * w, cy + 0.6 * w], 1)
    mapping = fit_box_mapping(det, truth)
    assert mapping["box_scale"] == pytest.approx(1 / 1.2, rel=1e-6)
    assert mapping["box_dy"] == pytest.approx(0.1, abs=1e-6)
    mapped = ert_boxes_from_detections(det, **mapping)
    np.testing.assert_allclose(mapped, ert_boxes_from_landmarks(truth), atol=1e-6)


@pytest.mark.skipif(not FACES_XML.exists(), reason="needs ../shared/data/dlib_faces")
@pytest.mark.parametrize("downscale", [1, 4])
def test_fit_recovers_points_on_real_faces_even_when_small(downscale):
    import cv2

    predictor = load_predictor("")
    errors = []
    for gray, box, pts in _photo_faces():
        small = cv2.resize(gray, None, fx=1 / downscale, fy=1 / downscale, interpolation=cv2.INTER_AREA)
        box_s, pts_s = (box + 0.5) / downscale - 0.5, (pts + 0.5) / downscale - 0.5
        out = fit_faces(predictor, small, box_s[None], LandmarksConfig(refine_passes=0))
        assert out["fit_ok"][0] and out["landmarks_px"].shape == (1, 68, 2)
        errors.append(normalized_error(out["landmarks_px"], pts_s[None])[0])
    # reference points come from the same model at full size; 4× smaller faces have ~4 px IOD
    assert np.median(errors) < (0.05 if downscale == 1 else 0.12)


def test_degenerate_box_is_not_fitted():
    out = fit_faces(load_predictor(""), np.zeros((50, 50), np.uint8), np.array([[10, 10, 11, 11.0]]),
                    LandmarksConfig())
    assert not out["fit_ok"][0] and np.isnan(out["landmarks_px"]).all()
