"""Run the 'members' stage (same as `audience members`): see `python scripts/members.py --help`.

    python scripts/members.py --workspace data [--workers 2] [--force] [section.key=value ...]
"""
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from pipeline.cli import main  # noqa: E402

if __name__ == "__main__":
    sys.exit(main(["members", *sys.argv[1:]]))
