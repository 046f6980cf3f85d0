"""Live detection from a camera (recorded in crash-safe segments) or a paced replay of a file.

    python scripts/capture.py --camera 0 --movie inside_out --session 2016-05-01 --duration-s 600
    python scripts/capture.py --replay data/raw/synthmovie/s01/cam0.mp4 --movie synthmovie --session live01
"""
import argparse
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from configs.schema import load_config  # noqa: E402
from pipeline.live import add_capture_args, capture_main  # noqa: E402
from pipeline.store import DataError  # noqa: E402


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--movie", required=True, help="movie name (folder under raw/ and cache/)")
    parser.add_argument("--workspace", default=None, help="workspace folder (= workspace.root)")
    parser.add_argument("--config", "-c", action="append", default=[], help="YAML overlay(s)")
    parser.add_argument("overrides", nargs="*", metavar="section.key=value")
    add_capture_args(parser)
    args = parser.parse_args(argv)
    overrides = list(args.overrides) + ([f"workspace.root={args.workspace}"] if args.workspace else [])
    try:
        return capture_main(args, load_config(args.config, overrides))
    except DataError as err:
        print(f"error: {err}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
