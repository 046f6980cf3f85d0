"""Run the 'landmarks' stage (same as `audience landmarks`): see `python scripts/landmarks.py --help`.

    python scripts/landmarks.py --workspace data [--workers 2] [--force] [section.key=value ...]
"""
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from pipeline.cli import main  # noqa: E402

if __name__ == "__main__":
    sys.exit(main(["landmarks", *sys.argv[1:]]))
