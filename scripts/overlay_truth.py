"""Draw a synthetic screening's ground truth onto one of its frames and save a PNG.

    python scripts/overlay_truth.py data/raw/synthmovie/s01/cam0.mp4 --time 1.5 --out overlay.png

Boxes are green for visible faces; the 68 landmarks are red dots. Below the
frame: 4× zooms of a front-row face and a back-row face (visible ones).
"""
from __future__ import annotations

import argparse
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from pipeline.store import DataError  # noqa: E402
from pipeline.synthetic.overlay import write_overlay  # noqa: E402


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("video", type=Path, help="<camera>.mp4 (its <camera>.truth.h5 must sit next to it)")
    parser.add_argument("--truth", type=Path, help="truth file, if not next to the video")
    parser.add_argument("--time", type=float, default=0.0, help="session time of the frame to draw, seconds")
    parser.add_argument("--out", type=Path, help="PNG to write (default: <video>.overlay.png)")
    args = parser.parse_args(argv)
    truth = args.truth or args.video.with_name(args.video.name.replace(".mp4", ".truth.h5"))
    out = args.out or args.video.with_suffix(".overlay.png")
    try:
        write_overlay(args.video, truth, out, time_s=args.time)
    except DataError as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    print(f"wrote {out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
