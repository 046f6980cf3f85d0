"""Inspection figures: a synchronicity PNG per movie tensor and an overlay strip
(detections + landmarks) per session and camera, written under <workspace>/figures/.

    python scripts/inspect_figures.py --workspace data [--movie NAME] [--strips 1]
"""
import sys
from pathlib import Path

# Not named scripts/inspect.py on purpose: a script's folder is sys.path[0], so a file
# called inspect.py there shadows the standard library's `inspect` for every script in it.
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import argparse  # noqa: E402


def main(argv=None) -> int:
    from pipeline.inspection import inspect_workspace
    from pipeline.store import DataError, Workspace

    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--workspace", default="data", help="workspace folder (default: data)")
    parser.add_argument("--movie", help="only this movie")
    parser.add_argument("--strips", type=int, default=1, help="overlay strips per session and camera")
    args = parser.parse_args(argv)
    try:
        paths = inspect_workspace(Workspace(Path(args.workspace)), args.movie, args.strips)
    except DataError as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    for path in paths:
        print(path)
    if not paths:
        print(f"nothing to draw under {args.workspace}: run the pipeline first", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
