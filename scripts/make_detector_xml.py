"""Make labelled imglab XML (front.xml, back.xml + strip PNGs) from the synthetic theatre.

    python scripts/make_detector_xml.py data/detector_xml/train --seed 0
    python scripts/make_detector_xml.py data/detector_xml/test --seed 1 --sessions 2

The shipped detectors are trained on real faces instead: scripts/train_shipped_detectors.py.
"""
import argparse
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from pipeline.detector_training import add_make_xml_args, make_xml_main  # noqa: E402
from pipeline.store import DataError  # noqa: E402


def main(argv=None) -> int:
    parser = add_make_xml_args(argparse.ArgumentParser(description=__doc__,
                                                       formatter_class=argparse.RawDescriptionHelpFormatter))
    try:
        return make_xml_main(parser.parse_args(argv))
    except DataError as err:
        print(f"error: {err}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
