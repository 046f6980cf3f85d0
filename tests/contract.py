"""Reads the schema tables of data/README.md and checks HDF5 files against them."""
from __future__ import annotations

import re
from pathlib import Path

import h5py
import numpy as np

README = Path(__file__).resolve().parents[1] / "data" / "README.md"
DTYPE_KINDS = {"float32": ("f", 4), "float64": ("f", 8), "float": ("f", None), "bool": ("b", None),
               "int8": ("i", 1), "int16": ("i", 2), "int32": ("i", 4), "int64": ("i", 8),
               "int": ("iu", None), "uint8": ("u", 1), "str": ("SUO", None)}


def documented_schemas() -> dict[str, list[dict]]:
    text = README.read_text()
    schemas = {}
    for name, body in re.findall(r"<!-- schema: (\S+) -->\n(.*?)<!-- /schema -->", text, re.S):
        rows = []
        for line in body.strip().splitlines()[2:]:
            cells = [c.strip() for c in line.strip().strip("|").split("|")]
            rows.append(dict(zip(("name", "kind", "dtype", "shape", "meaning"), cells)))
        schemas[name] = rows
    return schemas


def _parse_shape(text: str) -> tuple:
    inner = text.strip().strip("()")
    return tuple(p.strip() for p in inner.split(",") if p.strip())


def _dtype_ok(value_dtype: np.dtype, documented: str) -> bool:
    kinds, size = DTYPE_KINDS[documented]
    if documented == "str" and h5py.check_string_dtype(value_dtype) is not None:
        return True
    return value_dtype.kind in kinds and (size is None or value_dtype.itemsize == size)


def check_file(path: Path, schema: list[dict]) -> list[str]:
    """Problems found (empty when the file follows the documented schema)."""
    problems, sizes = [], {}
    with h5py.File(path, "r") as h5:
        for row in schema:
            name, kind = row["name"], row["kind"]
            if kind == "attr":
                if name not in h5.attrs:
                    problems.append(f"attr {name} missing")
                    continue
                value = np.asarray(h5.attrs[name])
                if row["dtype"] != "str" and not _dtype_ok(value.dtype, row["dtype"]):
                    problems.append(f"attr {name}: dtype {value.dtype}, documented {row['dtype']}")
                continue
            if name not in h5:
                problems.append(f"dataset {name} missing")
                continue
            ds = h5[name]
            if not _dtype_ok(ds.dtype, row["dtype"]):
                problems.append(f"dataset {name}: dtype {ds.dtype}, documented {row['dtype']}")
            shape = _parse_shape(row["shape"])
            if len(shape) != ds.ndim:
                problems.append(f"dataset {name}: shape {ds.shape}, documented {row['shape']}")
                continue
            for dim, size in zip(shape, ds.shape):
                if dim.isdigit():
                    if int(dim) != size:
                        problems.append(f"dataset {name}: shape {ds.shape}, documented {row['shape']}")
                elif sizes.setdefault(dim, size) != size:
                    problems.append(f"dataset {name}: size of {dim} is {size}, elsewhere {sizes[dim]}")
    return problems
