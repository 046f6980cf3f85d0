"""Run the 'detect' stage (same as `audience detect`): see `python scripts/detect.py --help`.

    python scripts/detect.py --workspace data [--workers 2] [--force] [detect.threshold=0.4 ...]
"""
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from pipeline.cli import main  # noqa: E402

if __name__ == "__main__":
    sys.exit(main(["detect", *sys.argv[1:]]))
