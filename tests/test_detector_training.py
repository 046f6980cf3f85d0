"""Detector calibration files, full-frame XML → both detectors, bad labelled input, label-frames."""
import dataclasses
import json
from pathlib import Path

import cv2
import numpy as np
import pytest

from pipeline.detector_training import (CalibrationSet, _impossible_box, calibration_path, fit_calibration,
                                        make_calibration, read_calibration, read_labelled_images, train_full_frame,
                                        write_calibration)
from pipeline.imglab import Box, Dataset, ImageEntry, read_dataset, write_dataset
from pipeline.store import DataError

ASSETS = Path(__file__).resolve().parents[1] / "pipeline" / "assets"


def _calib(**changes) -> dict:
    calib = make_calibration({"box_scale": 1.05, "box_dx": -0.02, "box_dy": -0.15}, 120, "test faces",
                             window_px=40, face_px_range=(18, 22), training={"C": 5.0, "window_px": 40})
    calib.update(changes)
    return calib


# ----------------------------------------------------------------------------- calibration files


def test_calibration_round_trip_beside_the_detector(tmp_path):
    svm = tmp_path / "detector_back.svm"
    path = write_calibration(svm, _calib())
    assert path == tmp_path / "detector_back.calib.json" == calibration_path(svm)
    calib = read_calibration(svm)
    assert calib == _calib()
    assert {k: calib[k] for k in ("box_scale", "box_dx", "box_dy")} == {"box_scale": 1.05, "box_dx": -0.02,
                                                                       "box_dy": -0.15}
    assert calib["code_version"] and calib["face_px_range"] == [18.0, 22.0]
    assert not list(tmp_path.glob(".*"))                       # atomic write: no temp file left


def test_no_calibration_is_none(tmp_path):
    assert read_calibration(tmp_path / "mine.svm") is None
    assert read_calibration("dlib_frontal") is None and read_calibration("cnn") is None


@pytest.mark.parametrize("text,match", [
    ("{not json", "not valid JSON"),
    ("[1, 2]", "must be a JSON object"),
    (json.dumps({k: v for k, v in _calib().items() if k != "box_dy"}), "lacks 'box_dy'"),
    (json.dumps(_calib(box_scale="big")), "'box_scale' = 'big' is not a"),
    (json.dumps(_calib(box_scale=-1.0)), "box_scale -1.0 is outside"),
    (json.dumps(_calib(face_px_range=[30, 20])), "face_px_range"),
    (json.dumps(_calib(n_faces=0)), "n_faces"),
    (json.dumps(_calib(by_model=[1])), "'by_model' must map"),
    (json.dumps(_calib(by_model={"theatre": {"box_scale": 1.1, "box_dx": 0.0}})), r"by_model\['theatre'\]: 'box_dy'"),
    (json.dumps(_calib(by_model={"theatre": {"box_scale": 9.0, "box_dx": 0.0, "box_dy": 0.0}})), "outside"),
])
def test_malformed_calibration_is_a_clear_error(tmp_path, text, match):
    svm = tmp_path / "front.svm"
    calibration_path(svm).write_text(text)
    with pytest.raises(DataError, match=match) as info:
        read_calibration(svm)
    assert "front.calib.json" in str(info.value) and "calibrate_detectors.py" in str(info.value)


def test_a_calibration_left_from_an_earlier_detector_is_refused(tmp_path):
    svm = tmp_path / "mine.svm"
    svm.write_bytes(b"detector v1")
    write_calibration(svm, _calib())
    assert len(read_calibration(svm)["detector_sha256"]) == 64
    svm.write_bytes(b"detector v2, retrained")
    with pytest.raises(DataError, match="another version of mine.svm"):
        read_calibration(svm)


def test_write_refuses_a_bad_calibration(tmp_path):
    with pytest.raises(DataError, match="box_dx"):
        write_calibration(tmp_path / "x.svm", _calib(box_dx=3.0))
    assert not calibration_path(tmp_path / "x.svm").exists()


def test_each_landmark_model_starts_from_its_own_mapping(tmp_path):
    """by_model entries win for the model of the first pass (start_model_path where there are refine passes,
    else model_path); a model without one gets the top-level mapping; the config's own numbers win over both."""
    from pipeline.landmarks import box_mapping
    from pipeline.vision_config import LandmarksConfig

    svm = tmp_path / "mine.svm"
    write_calibration(svm, _calib(by_model={"stock": {"box_scale": 1.0, "box_dx": 0.0, "box_dy": -0.1},
                                            "theatre": {"box_scale": 1.2, "box_dx": 0.01, "box_dy": -0.05}}))
    assert box_mapping(LandmarksConfig(model_path=""), str(svm)) == (1.2, 0.01, -0.05)     # boxes from theatre
    assert box_mapping(LandmarksConfig(model_path="", refine_passes=0), str(svm)) == (1.0, 0.0, -0.1)
    assert box_mapping(LandmarksConfig(model_path="", start_model_path=None), str(svm)) == (1.0, 0.0, -0.1)
    assert box_mapping(LandmarksConfig(start_model_path="stock"), str(svm)) == (1.0, 0.0, -0.1)
    own = LandmarksConfig(model_path=str(tmp_path / "own.dat"), start_model_path=None)
    assert box_mapping(own, str(svm)) == (1.05, -0.02, -0.15)
    assert box_mapping(LandmarksConfig(box_scale=1.4), str(svm)) == (1.4, 0.01, -0.05)


@pytest.mark.parametrize("name", ["front", "back"])
def test_shipped_detectors_carry_a_real_face_calibration(name):
    calib = read_calibration(ASSETS / f"detector_{name}.svm")
    assert calib is not None and calib["window_px"] == 40 and calib["n_faces"] >= 50
    assert 0.8 < calib["box_scale"] < 1.4 and calib["box_dy"] < 0       # real faces: start the ERT higher
    assert "real faces" in calib["source"] and calib["training"]["upsample_limit"] == 0
    assert set(calib["by_model"]) == {"stock", "theatre"}                # one start box per shipped model
    assert calib["by_model"][calib["fitted_for"]["model_path"]]["box_scale"] == calib["box_scale"]


def test_box_match_recovers_a_known_scale_and_shift():
    from pipeline.frontalize import canonical_mean_face
    from pipeline.landmarks import ert_boxes_from_landmarks

    rng = np.random.default_rng(3)
    face = canonical_mean_face()[:, :2]
    size = rng.uniform(15, 45, 40)
    landmarks = face[None] * size[:, None, None] + rng.uniform(50, 500, (40, 1, 2))
    ideal = ert_boxes_from_landmarks(landmarks)
    scale, dx, dy = 1.17, 0.04, -0.12                       # ERT box = detector box scaled and shifted
    side = (ideal[:, 2] - ideal[:, 0]) / scale
    cx = 0.5 * (ideal[:, 0] + ideal[:, 2]) - dx * side
    cy = 0.5 * (ideal[:, 1] + ideal[:, 3]) - dy * side
    det = np.stack([cx - side / 2, cy - side / 2, cx + side / 2, cy + side / 2], axis=1)
    det += rng.normal(0, 0.01, det.shape) * side[:, None]
    mapping, report = fit_calibration(CalibrationSet([None], [det], [landmarks]), search=False)
    assert mapping["box_scale"] == pytest.approx(scale, abs=0.01)
    assert mapping["box_dx"] == pytest.approx(dx, abs=0.01) and mapping["box_dy"] == pytest.approx(dy, abs=0.01)
    assert "box match" in report["method"]


def test_dlibs_impossible_box_message_is_parsed():
    message = ("An impossible set of object labels was detected. ...\nimage index              24\n"
               "match_eps:               0.5\ntruth rect:              [(569, 30) (620, 81)]\n")
    assert _impossible_box(message) == (24, (569, 30, 621, 82))
    assert _impossible_box("some other error") is None


# ----------------------------------------------------------------------------- full-frame XML → both detectors


def _synthetic_full_frames(out: Path, seed: int, times_s) -> Path:
    """Full synthetic frames (small theatre) as PNG + imglab XML of their faces, as a user would label them."""
    from configs.schema import load_config
    from pipeline.detector_training import synthetic_frames

    out.mkdir(parents=True, exist_ok=True)
    syn = dataclasses.replace(load_config().synthetic, seed=seed, sessions=1, scale="small")
    entries = []
    for frame in synthetic_frames(syn, "s01", "cam0", times_s):
        name = f"seed{seed}_t{frame.time_s:05.2f}.png"
        cv2.imwrite(str(out / name), frame.image)
        boxes = [Box(int(round(l)), int(round(t)), int(round(r - l)), int(round(b - t)), ignore=ignore)
                 for group, ignore in ((frame.boxes_px, False), (frame.ignore_px, True))
                 for l, t, r, b in group[np.isfinite(group).all(axis=1)]]
        entries.append(ImageEntry(name, boxes, frame.image.shape[1], frame.image.shape[0]))
    return write_dataset(out / "labels.xml", Dataset(entries, name="synthetic full frames"))


def test_full_frame_xml_trains_front_and_back_detectors(tmp_path, capsys):
    from configs.schema import load_config

    cfg = load_config()
    train = _synthetic_full_frames(tmp_path / "train", 0, [1.0, 5.0])
    test = _synthetic_full_frames(tmp_path / "test", 1, [2.0])
    results = train_full_frame(train, tmp_path / "det", cfg, test_xml=test)
    out = capsys.readouterr().out
    for name in ("front", "back"):
        svm = tmp_path / "det" / f"detector_{name}.svm"
        assert svm.is_file() and results[name]["train"].recall > 0.9
        strips = read_dataset(tmp_path / "det" / "strips" / "train" / f"{name}.xml")
        sides = [b.width for im in strips.images for b in im.boxes if not b.ignore]
        assert 35 < np.median(sides) < 60                     # faces at the detect stage's strip scale
        calib = read_calibration(svm)
        assert calib is not None and calib["training"]["window_px"] == 40
        assert calib["training"]["upsample_limit"] == 0 and 0.7 < calib["box_scale"] < 1.6
    back_sides = read_calibration(tmp_path / "det" / "detector_back.svm")["face_px_range"]
    front_sides = read_calibration(tmp_path / "det" / "detector_front.svm")["face_px_range"]
    assert back_sides[0] < front_sides[0]                 # small faces went to the back detector
    assert results["test"].n_faces > 10 and results["test"].recall > 0.7 and results["test"].precision > 0.9
    assert "full-frame test" in out


def test_train_detector_cli_full_frame_mode(tmp_path, capsys):
    from pipeline import cli

    train = _synthetic_full_frames(tmp_path / "train", 0, [1.0])
    code = cli.main(["train-detector", "--train-xml", str(train), "--out-dir", str(tmp_path / "det"),
                     "--no-calibrate", "--epsilon", "0.05"])
    out = capsys.readouterr().out
    assert code == 0 and (tmp_path / "det" / "detector_front.svm").is_file()
    assert "next: audience detect detect.front_detector=" in out


# ----------------------------------------------------------------------------- bad labelled input


def _xml_with(tmp_path, boxes, image_hw=(120, 160), write_image=True) -> Path:
    if write_image:
        cv2.imwrite(str(tmp_path / "frame.png"), np.full(image_hw, 40, np.uint8))
    return write_dataset(tmp_path / "labels.xml", Dataset([ImageEntry("frame.png", boxes)]))


@pytest.mark.parametrize("boxes,match,fix", [
    ([Box(10, 10, 8, 8)], "smaller than 12 px, too small to train on", "full-resolution"),
    ([], "no face boxes", "imglab"),
    ([Box(20, 20, 30, 30, ignore=True)], "no face boxes", "imglab"),
    ([Box(150, 10, 40, 40)], "lies outside the 160x120 image", "Fix or delete it"),
    ([Box(10, 10, 0, 30)], "no area", "Fix or delete it"),
])
def test_bad_labels_are_clear_errors(tmp_path, boxes, match, fix):
    xml = _xml_with(tmp_path, boxes)
    with pytest.raises(DataError, match=match) as info:
        read_labelled_images(xml)
    assert str(xml) in str(info.value) and fix in str(info.value)


def test_missing_and_unreadable_images_are_named(tmp_path):
    xml = _xml_with(tmp_path, [Box(10, 10, 40, 40)], write_image=False)
    with pytest.raises(DataError, match="frame.png"):
        read_labelled_images(xml)
    (tmp_path / "frame.png").write_text("not a png")
    with pytest.raises(DataError, match="cannot be read"):
        read_labelled_images(xml)
    write_dataset(tmp_path / "none.xml", Dataset([]))
    with pytest.raises(DataError, match="lists no images"):
        read_labelled_images(tmp_path / "none.xml")


def test_bad_labels_through_the_command_exit_2(tmp_path, capsys):
    from pipeline import cli

    xml = _xml_with(tmp_path, [Box(10, 10, 6, 6)])
    assert cli.main(["train-detector", "--train-xml", str(xml), "--out-dir", str(tmp_path / "d")]) == 2
    assert "too small to train on" in capsys.readouterr().err


# ----------------------------------------------------------------------------- label-frames


def _tiny_video(path: Path, n_frames: int = 8, fps: float = 4.0) -> Path:
    from configs.schema import load_config
    from pipeline.detector_training import synthetic_frames

    syn = dataclasses.replace(load_config().synthetic, seed=5, sessions=1, scale="small")
    frames = synthetic_frames(syn, "s01", "cam0", [1.0 + k / fps for k in range(n_frames)])
    height, width = frames[0].image.shape
    writer = cv2.VideoWriter(str(path), cv2.VideoWriter_fourcc(*"MJPG"), fps, (width, height), False)
    for frame in frames:
        writer.write(frame.image)
    writer.release()
    return path


def test_label_frames_writes_loadable_xml_with_the_detections(tmp_path, capsys):
    from configs.schema import load_config
    from pipeline import cli
    from pipeline.detect import make_finder

    video = _tiny_video(tmp_path / "rec.avi")
    assert cli.main(["label-frames", "--video", str(video), "--out-dir", str(tmp_path / "labels"),
                     "--frames", "3", "--quiet"]) == 0
    assert "imglab" in capsys.readouterr().out
    xml = tmp_path / "labels" / "labels.xml"
    dataset = read_dataset(xml)
    assert len(dataset.images) == 3 and dataset.n_boxes > 0
    items = read_labelled_images(xml, min_face_px=None)             # loadable for training as it is
    finder = make_finder(load_config(), items[0].image.shape[0], {}, width_px=items[0].image.shape[1])
    for entry in dataset.images:                                    # same detector, same frames, same order
        image = cv2.imread(str(tmp_path / "labels" / entry.file), cv2.IMREAD_GRAYSCALE)
        assert (entry.width, entry.height) == (image.shape[1], image.shape[0])
        boxes, _, _ = finder(image, None)
        expected = [(int(round(l)), int(round(t)), int(round(r)), int(round(b))) for l, t, r, b in boxes]
        assert [b.ltrb for b in entry.boxes] == expected


def test_label_frames_bad_input(tmp_path, capsys):
    from pipeline import cli

    assert cli.main(["label-frames", "--video", str(tmp_path / "nope.mp4"), "--out-dir", str(tmp_path)]) == 2
    assert "video not found" in capsys.readouterr().err
    assert cli.main(["label-frames", "--out-dir", str(tmp_path), "--workspace", str(tmp_path)]) == 2
    assert "--video FILE" in capsys.readouterr().err
    assert cli.main(["label-frames", "--movie", "m", "--out-dir", str(tmp_path), "--workspace", str(tmp_path)]) == 2
    assert "no recordings" in capsys.readouterr().err
