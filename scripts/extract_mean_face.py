"""Extract the 3D 68-point mean face shipped as pipeline/assets/mean_face_68.npy.

Source: the MIT-licensed `insightface` wheel (PyPI), file
`insightface/data/objects/meanshape_68.pkl`: a (68, 3) float32 array in iBUG
68-point order, image convention (x right, y down, z towards the camera).
We read the pickle straight from the wheel, so insightface never has to be
installed.

    pip download --no-deps insightface -d /tmp/insf
    python scripts/extract_mean_face.py /tmp/insf/insightface-*.whl
"""
import argparse
import pickle
import zipfile
from pathlib import Path

import numpy as np

MEMBER = "insightface/data/objects/meanshape_68.pkl"
DEFAULT_OUT = Path(__file__).resolve().parents[1] / "pipeline" / "assets" / "mean_face_68.npy"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("wheel", type=Path, help="path to an insightface-*.whl file")
    parser.add_argument("--out", type=Path, default=DEFAULT_OUT, help="where to write the (68, 3) .npy")
    args = parser.parse_args()
    with zipfile.ZipFile(args.wheel) as wheel:
        mean_face = np.asarray(pickle.loads(wheel.read(MEMBER)), dtype=np.float32)
    if mean_face.shape != (68, 3):
        raise SystemExit(f"{args.wheel}: expected a (68, 3) mean face, got {mean_face.shape}")
    np.save(args.out, mean_face)
    print(f"wrote {args.out} {mean_face.shape}")


if __name__ == "__main__":
    main()
