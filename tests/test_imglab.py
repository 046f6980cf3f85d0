"""imglab XML reading/writing, the box convention, and detector training from XML."""
from pathlib import Path

import numpy as np
import pytest

from pipeline.detector_training import (TrainOptions, face_box_from_landmarks, make_synthetic_xml, evaluate_detector,
                                        train_detector)
from pipeline.imglab import Box, Dataset, ImageEntry, check_images, read_dataset, write_dataset
from pipeline.store import DataError

DLIB_FACES = Path(__file__).resolve().parents[2] / "shared" / "data" / "dlib_faces"
needs_dlib_faces = pytest.mark.skipif(not (DLIB_FACES / "training.xml").is_file(),
                                      reason="../shared/data/dlib_faces not present")

GOLDEN = """<?xml version='1.0' encoding='ISO-8859-1'?>
<dataset>
<name>tiny</name>
<images>
  <image file='a.png' width='64' height='48'>
    <box top='5' left='6' width='20' height='21'>
      <part name='00' x='7' y='9'/>
    </box>
    <box top='10' left='30' width='12' height='12' ignore='1'/>
  </image>
  <image file='b.png'/>
</images>
</dataset>
"""


def test_read_golden_file(tmp_path):
    (tmp_path / "tiny.xml").write_text(GOLDEN)
    ds = read_dataset(tmp_path / "tiny.xml")
    assert ds.name == "tiny" and [im.file for im in ds.images] == ["a.png", "b.png"]
    first, second = ds.images[0].boxes
    assert first.ltrb == (6, 5, 26, 26) and first.parts == {"00": (7, 9)} and not first.ignore
    assert second.ignore and ds.n_boxes == 1
    assert ds.images[0].width == 64 and ds.images[1].boxes == []


def test_write_then_read_roundtrips(tmp_path):
    ds = Dataset([ImageEntry("x.png", [Box(1, 2, 30, 30, parts={"00": (3, 4)}), Box(50, 2, 10, 10, ignore=True)],
                             100, 80)], name="n", comment="c")
    assert read_dataset(write_dataset(tmp_path / "d.xml", ds)) == ds


@needs_dlib_faces
def test_reads_dlibs_own_files():
    ds = read_dataset(DLIB_FACES / "training_with_face_landmarks.xml")
    assert len(ds.images) == 4 and ds.n_boxes == 18
    assert all(len(b.parts) == 68 for im in ds.images for b in im.boxes)


@pytest.mark.parametrize("text,match", [("<dataset><images><image><box/></image></images></dataset>", "file"),
                                        ("<dataset><images><image file='a'><box top='1'/></image></images></dataset>",
                                         "lacks 'left'"),
                                        ("<notadataset/>", "not an imglab dataset"),
                                        ("<dataset", "not valid XML")])
def test_bad_xml_is_a_clear_error(tmp_path, text, match):
    (tmp_path / "bad.xml").write_text(text)
    with pytest.raises(DataError, match=match):
        read_dataset(tmp_path / "bad.xml")


def test_missing_images_are_named(tmp_path):
    ds = Dataset([ImageEntry("nope.png")])
    with pytest.raises(DataError, match="nope.png"):
        check_images(write_dataset(tmp_path / "d.xml", ds), ds)


def test_box_convention_is_a_square_around_the_landmarks():
    pts = np.stack(np.meshgrid(np.linspace(10, 50, 17), np.linspace(20, 60, 4)), -1).reshape(-1, 2)[:68]
    box = face_box_from_landmarks(pts)
    assert box[2] - box[0] == pytest.approx(44.0) and box[3] - box[1] == pytest.approx(44.0)
    assert 0.5 * (box[0] + box[2]) == pytest.approx(30.0)
    assert 0.5 * (box[1] + box[3]) == pytest.approx(40.0 - 4.0)


@needs_dlib_faces
def test_train_and_test_on_dlib_faces(tmp_path):
    svm = train_detector(DLIB_FACES / "training.xml", tmp_path / "faces.svm", TrainOptions(epsilon=0.05))
    result = evaluate_detector(DLIB_FACES / "testing.xml", svm)
    assert result.n_faces == 25 and result.precision > 0.8 and result.recall > 0.5
    with pytest.raises(DataError, match="not found"):
        evaluate_detector(DLIB_FACES / "testing.xml", tmp_path / "missing.svm")


def test_synthetic_xml_has_square_boxes_and_ignores(tmp_path):
    from configs.schema import load_config

    paths = make_synthetic_xml(tmp_path, load_config(), sessions=1, frames_per_session=1, scale="small")
    for name in ("front", "back"):
        ds = read_dataset(paths[name])
        check_images(paths[name], ds)
        sides = [(b.width, b.height) for im in ds.images for b in im.boxes if not b.ignore]
        assert len(sides) > 0
        assert all(abs(w - h) <= 1 for w, h in sides)
        assert 35 < np.median([w for w, _ in sides]) < 70          # faces at the detection scale


def test_train_detector_single_mode_on_strip_xml_writes_a_calibration(tmp_path, capsys):
    from configs.schema import load_config
    from pipeline import cli
    from pipeline.detector_training import read_calibration

    paths = make_synthetic_xml(tmp_path, load_config(), sessions=1, frames_per_session=2, scale="small")
    svm = tmp_path / "front.svm"
    assert cli.main(["train-detector", "--train-xml", str(paths["front"]), "--out", str(svm),
                     "--epsilon", "0.05"]) == 0
    out = capsys.readouterr().out
    assert "window 40 px, upsample 0" in out and "train" in out
    calib = read_calibration(svm)
    assert calib is not None and calib["training"]["window_px"] == 40 and calib["n_faces"] >= 3
