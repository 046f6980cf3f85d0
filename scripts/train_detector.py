"""Train dlib HOG MMOD face detectors from imglab XML, calibrate them, report P/R/AP.

Full frames of your theatre (labels from label_frames.py, corrected in imglab) -> both detectors:
    python scripts/train_detector.py labels/labels.xml --test-xml other/labels.xml --out-dir detectors/

XML already at detection scale (strips, photos) -> one detector, trained as given:
    python scripts/train_detector.py ../shared/data/dlib_faces/training.xml \
        --test-xml ../shared/data/dlib_faces/testing.xml --out /tmp/faces.svm
"""
import argparse
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from pipeline.detector_training import add_train_detector_args, train_detector_main  # noqa: E402
from pipeline.store import DataError  # noqa: E402


def main(argv=None) -> int:
    parser = add_train_detector_args(argparse.ArgumentParser(description=__doc__,
                                                             formatter_class=argparse.RawDescriptionHelpFormatter))
    args = parser.parse_args(argv)
    try:
        return train_detector_main(args)
    except DataError as err:
        print(f"error: {err}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
