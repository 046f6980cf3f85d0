"""Frontalization: pose recovery, expression kept, jaw ignored, canonical frame."""
import numpy as np
import pytest

from pipeline.frontalize import (canonical_mean_face, euler_to_rotation, fit_pose, frontal_error, frontalize_faces,
                                 interocular, normalized_error, rotation_to_euler)
from pipeline.vision_config import FrontalizeConfig


def _scene(n=200, noise=0.0, seed=0):
    rng = np.random.default_rng(seed)
    model = canonical_mean_face()
    pose = rng.normal(0, 1, (n, 3)) * [15, 10, 5]
    face = np.repeat(model[None], n, 0)
    face[:, 48:68, 1] += rng.normal(0, 0.08, (n, 1)) * np.linspace(-1, 1, 20)     # mouth opens/closes
    face[:, 17:27, 1] -= rng.uniform(0, 0.1, (n, 1))                                # brows raise
    scale = rng.uniform(6, 40, n)
    shift = rng.uniform(50, 500, (n, 2))
    img = scale[:, None, None] * np.einsum("dij,dkj->dki", euler_to_rotation(pose)[:, :2], face) + shift[:, None]
    img += rng.normal(0, noise, img.shape) * scale[:, None, None]
    return img, face[..., :2], pose, scale


def test_canonical_frame_definition():
    model = canonical_mean_face()
    left, right = model[36:42].mean(0), model[42:48].mean(0)
    np.testing.assert_allclose((left + right)[:2] / 2, 0, atol=1e-9)
    assert interocular(model[None, :, :2])[0] == pytest.approx(1.0)


def test_euler_roundtrip():
    angles = np.random.default_rng(1).uniform(-60, 60, (50, 3))
    np.testing.assert_allclose(rotation_to_euler(euler_to_rotation(angles)), angles, atol=1e-9)


def test_pose_and_expression_are_recovered():
    img, truth, pose, scale = _scene()
    out = frontalize_faces(img, FrontalizeConfig())
    assert out["frontal_ok"].all()
    assert np.abs(out["pose_deg"] - pose).mean() < 1.0
    np.testing.assert_allclose(out["scale_px"], scale, rtol=0.05)       # brows only rise here: they pull the scale a little
    assert normalized_error(out["frontal"], truth).mean() < 0.02
    # expression survives: the mouth opening of the truth is visible in the frontal face
    opening = truth[:, 66, 1] - truth[:, 62, 1]
    assert np.corrcoef(out["frontal"][:, 66, 1] - out["frontal"][:, 62, 1], opening)[0, 1] > 0.99


def test_an_open_mouth_does_not_move_the_pose_and_keeps_its_size():
    """With the default mouth weight 0 a laugh (the mouth opening, the lower lip dropping) leaves the fitted
    pose alone, so the frontal face shows the whole opening; with weight 0.5 the fit absorbs part of it."""
    img, _, pose, scale = _scene(n=50)
    model = canonical_mean_face()
    closed = scale[:, None, None] * np.einsum("dij,kj->dki", euler_to_rotation(pose)[:, :2], model) + 100.0
    face = np.repeat(model[None], 50, 0)
    face[:, [56, 57, 58, 65, 66, 67], 1] += 0.3                                  # the lower lip drops
    opened = scale[:, None, None] * np.einsum("dij,dkj->dki", euler_to_rotation(pose)[:, :2], face) + 100.0
    a, b = fit_pose(closed), fit_pose(opened)
    np.testing.assert_allclose(a["rotation"], b["rotation"], atol=1e-9)
    np.testing.assert_allclose(a["scale_px"], b["scale_px"], rtol=1e-9)

    def opening(weight):
        front = frontalize_faces(opened, FrontalizeConfig(mouth_weight=weight))["frontal"]
        return (front[:, 66, 1] - front[:, 62, 1]) - (model[66, 1] - model[62, 1])

    np.testing.assert_allclose(opening(0.0), 0.3, atol=1e-3)
    assert opening(0.5).mean() < 0.29


def test_jaw_does_not_drive_the_pose():
    img, _, _, _ = _scene(n=20)
    moved = img.copy()
    moved[:, :17, 0] += 5.0                       # a wildly wrong jaw contour
    a, b = fit_pose(img, jaw_weight=0.0), fit_pose(moved, jaw_weight=0.0)
    np.testing.assert_allclose(a["rotation"], b["rotation"], atol=1e-9)


def test_frontal_error_ignores_the_truth_frame():
    img, truth, _, _ = _scene(n=30, noise=0.01)
    out = frontalize_faces(img, FrontalizeConfig())
    e1 = frontal_error(out["frontal"], truth)
    e2 = frontal_error(out["frontal"], truth * 3.7 + [11.0, -4.0])
    np.testing.assert_allclose(e1, e2, atol=1e-9)


def test_down_weighted_jaw_moves_the_pose_only_a_little():
    img, _, _, _ = _scene(n=20)
    moved = img.copy()
    span = (img[:, 45, 0] - img[:, 36, 0])[:, None, None]
    moved[:, :17] += np.random.default_rng(3).normal(0, 0.1, (20, 17, 2)) * span   # a noisy jaw contour
    def shift(weight):
        before = rotation_to_euler(fit_pose(img, jaw_weight=weight)["rotation"])
        return np.abs(rotation_to_euler(fit_pose(moved, jaw_weight=weight)["rotation"]) - before).max()

    assert shift(0.0) < 1e-6 < shift(0.3) < shift(1.0)


def test_failed_fits_stay_nan_without_breaking_others():
    img, _, _, _ = _scene(n=5)
    img[2] = np.nan
    out = frontalize_faces(img, FrontalizeConfig())
    assert not out["frontal_ok"][2] and np.isnan(out["frontal"][2]).all()
    assert out["frontal_ok"][[0, 1, 3, 4]].all()
