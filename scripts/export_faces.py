"""Export every detected face to CSV / HDF5 (same as `audience export-faces`): see `python scripts/export_faces.py --help`.

    python scripts/export_faces.py --workspace data [--format csv|h5|both] [--movie NAME] [--force]
"""
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from pipeline.cli import main  # noqa: E402

if __name__ == "__main__":
    sys.exit(main(["export-faces", *sys.argv[1:]]))
