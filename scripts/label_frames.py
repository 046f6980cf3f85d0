"""Sample frames of a recording, run the current detectors, write PNGs + imglab XML to correct.

    python scripts/label_frames.py --video rec.mp4 --out-dir labels/ --frames 30
    python scripts/label_frames.py --movie inside_out --session s01 --camera cam0 --out-dir labels/ \
        --set workspace.root=data

Then correct labels/labels.xml in dlib's imglab and train your detectors:
    python scripts/train_detector.py labels/labels.xml --out-dir detectors/
"""
import argparse
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from pipeline.labeling import add_label_frames_args, label_frames_main  # noqa: E402
from pipeline.store import DataError  # noqa: E402


def main(argv=None) -> int:
    parser = add_label_frames_args(argparse.ArgumentParser(description=__doc__,
                                                           formatter_class=argparse.RawDescriptionHelpFormatter))
    args = parser.parse_args(argv)
    try:
        from configs.schema import load_config

        return label_frames_main(args, load_config(args.config, args.set))
    except DataError as err:
        print(f"error: {err}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
