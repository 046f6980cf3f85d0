"""Reads the schema tables of data/README.md and checks HDF5 and YAML files against them.

A table row is `name | kind | dtype | shape | meaning` (see data/README.md):
kind `dataset`/`attr` (HDF5) or `key` (YAML, `a[].b` = key b of every item of
list a); shape letters are sizes shared within one file, `*` any size, `{C}` a
YAML mapping with C entries, `{C: (…)}` one with values of shape (…), ` or `
separates alternatives. A meaning starting with a tag such as `(optional)`
marks a conditional row: it is required only when the caller names its tag in
`expect`. Checks go both ways: with `strict` (the default) a dataset, attr or
key that no row documents is a problem too.
"""
from __future__ import annotations

import re
from pathlib import Path

import h5py
import numpy as np

README = Path(__file__).resolve().parents[1] / "data" / "README.md"
DTYPE_KINDS = {"float32": ("f", 4), "float64": ("f", 8), "float": ("f", None), "bool": ("b", None),
               "int8": ("i", 1), "int16": ("i", 2), "int32": ("i", 4), "int64": ("i", 8),
               "int": ("iu", None), "uint8": ("u", 1), "str": ("SUO", None)}
TAG_RE = re.compile(r"\(([a-z ]+)\)")


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


def documented_layout() -> list[str]:
    """The paths of the folder-layout block at the top of data/README.md (relative to data/)."""
    block = re.search(r"```\ndata/\n(.*?)```", README.read_text(), re.S).group(1)
    return [line.split()[0] for line in block.splitlines() if line.strip()]


def tag_of(row: dict) -> str | None:
    """The row's condition, e.g. 'optional' for a meaning starting with '(optional)'; None = always required."""
    match = TAG_RE.match(row.get("meaning", ""))
    return match.group(1) if match else None


def _required(row: dict, expect) -> bool:
    tag = tag_of(row)
    return tag is None or tag in expect


# ----------------------------------------------------------------------------- shapes


def _shape_alternatives(text: str) -> list:
    """'(N, 2) or {C: (*, 2)}' → [('tuple', dims), ('map', letter, dims)]."""
    alternatives = []
    for alt in text.split(" or "):
        alt = alt.strip()
        if alt.startswith("{"):
            letter, _, inner = alt.strip("{}").partition(":")
            alternatives.append(("map", letter.strip(), _parse_shape(inner) if inner.strip() else ()))
        else:
            alternatives.append(("tuple", _parse_shape(alt)))
    return alternatives


def _parse_shape(text: str) -> tuple:
    inner = text.strip().strip("()")
    return tuple(p.strip() for p in inner.split(",") if p.strip())


def _bind(dims: tuple, actual: tuple, sizes: dict, what: str, documented: str) -> str | None:
    """Match an actual shape (None entries = unknown) against dims; a problem, or None after binding
    the letters in `sizes` (a wrong fixed size still binds the letters, so later files are checked)."""
    if len(dims) != len(actual):
        return f"{what}: shape {actual}, documented {documented}"
    new, problem = {}, None
    for dim, size in zip(dims, actual):
        if dim == "*" or size is None:
            continue
        if dim.isdigit():
            if int(dim) != size:
                problem = problem or f"{what}: shape {actual}, documented {documented}"
            continue
        known = new.get(dim, sizes.get(dim))
        if known is not None and known != size:
            return f"{what}: size of {dim} is {size}, elsewhere {known}"
        new[dim] = size
    sizes.update(new)
    return problem


def _dtype_ok(value_dtype: np.dtype, documented: str) -> bool:
    kinds, size = DTYPE_KINDS[documented]
    if documented == "str" and h5py.check_string_dtype(value_dtype) is not None:
        return True
    return value_dtype.kind in kinds and (size is None or value_dtype.itemsize == size)


# ----------------------------------------------------------------------------- HDF5


def check_file(path: Path, schema: list[dict], expect=(), strict: bool = True,
               sizes: dict | None = None) -> list[str]:
    """Problems found (empty when the HDF5 file follows the documented schema).

    expect: tags of conditional rows that must be present (e.g. {"bin stage"}).
    sizes: shape letters already known (e.g. F and D of the detections chunk a
    later chunk repeats); filled with the letters this file binds.
    """
    problems, sizes = [], ({} if sizes is None else sizes)
    documented = {(row["kind"], row["name"]) for row in schema}
    with h5py.File(path, "r") as h5:
        for row in schema:
            name, kind = row["name"], row["kind"]
            if kind not in ("dataset", "attr"):
                problems.append(f"{name}: kind {kind!r} is not an HDF5 kind")
                continue
            if row["dtype"] not in DTYPE_KINDS:
                problems.append(f"{name}: unknown documented dtype {row['dtype']!r}")
                continue
            present = name in h5.attrs if kind == "attr" else name in h5
            if not present:
                if _required(row, expect):
                    problems.append(f"{kind} {name} missing")
                continue
            if kind == "attr":
                value = np.asarray(h5.attrs[name])
            else:
                value = h5[name]
                if not isinstance(value, h5py.Dataset):
                    problems.append(f"dataset {name}: is a {type(value).__name__}, not a dataset")
                    continue
            if not _dtype_ok(value.dtype, row["dtype"]):
                problems.append(f"{kind} {name}: dtype {value.dtype}, documented {row['dtype']}")
            problem = _bind(_parse_shape(row["shape"]), tuple(value.shape), sizes, f"{kind} {name}", row["shape"])
            if problem:
                problems.append(problem)
        if strict:
            problems += [f"undocumented dataset {name}" for name in h5 if ("dataset", name) not in documented]
            problems += [f"undocumented attr {name}" for name in h5.attrs if ("attr", name) not in documented]
    return problems


# ----------------------------------------------------------------------------- YAML


def _yaml_shape(value, ndim: int):
    """(shape, leaves) of nested lists `ndim` deep (None sizes where unknown), or None if not that deep."""
    if ndim == 0:
        return None if isinstance(value, list) else ((), [value])
    if not isinstance(value, list):
        return None
    subs = [_yaml_shape(v, ndim - 1) for v in value]
    if any(s is None for s in subs):
        return None
    inner = {s[0] for s in subs}
    if len(inner) > 1:
        return None
    shape = (len(value),) + (inner.pop() if inner else (None,) * (ndim - 1))
    return shape, [leaf for s in subs for leaf in s[1]]


def _yaml_type_ok(value, documented: str) -> bool:
    if documented == "str":
        return isinstance(value, str)
    if documented == "bool":
        return isinstance(value, bool)
    if documented == "map":
        return isinstance(value, dict)
    if documented in ("int", "int64", "int32", "int16", "int8"):
        return isinstance(value, int) and not isinstance(value, bool)
    if documented in ("float", "float64", "float32"):
        return isinstance(value, (int, float)) and not isinstance(value, bool)
    raise KeyError(f"unknown documented YAML type {documented!r}")


def _match_value(value, alternative, dtype: str, sizes: dict, what: str, documented: str) -> list[str]:
    if alternative[0] == "map":
        _, letter, dims = alternative
        if not isinstance(value, dict):
            return [f"{what}: a {type(value).__name__}, documented a mapping {documented}"]
        problem = _bind((letter,), (len(value),), sizes, what, documented)
        problems = [problem] if problem else []
        for key, item in value.items():
            problems += _match_value(item, ("tuple", dims), dtype, sizes, f"{what}.{key}", documented)
        return problems
    dims = alternative[1]
    found = _yaml_shape(value, len(dims))
    if found is None:
        return [f"{what}: {value!r} is not {len(dims)}-deep lists, documented {documented}"]
    shape, leaves = found
    problem = _bind(dims, shape, sizes, what, documented)
    problems = [problem] if problem else []
    bad = [leaf for leaf in leaves if not _yaml_type_ok(leaf, dtype)]
    if bad:
        problems.append(f"{what}: {bad[0]!r} is not {dtype}")
    return problems


def _check_yaml_value(value, row: dict, sizes: dict, what: str) -> list[str]:
    """Try each documented shape alternative; the first that fits binds its letters."""
    first = None
    for alternative in _shape_alternatives(row["shape"]):
        trial = dict(sizes)
        problems = _match_value(value, alternative, row["dtype"], trial, what, row["shape"])
        if not problems:
            sizes.update(trial)
            return []
        first = first or problems
    return first


def check_yaml(path: Path, schema: list[dict], expect=(), strict: bool = True,
               sizes: dict | None = None) -> list[str]:
    """Problems found in a YAML mapping file (e.g. session.yaml); same conventions as check_file."""
    import yaml

    sizes = {} if sizes is None else sizes
    doc = yaml.safe_load(Path(path).read_text())
    if not isinstance(doc, dict):
        return [f"{path}: top level is a {type(doc).__name__}, not a mapping"]
    top = [row for row in schema if "[]." not in row["name"]]
    nested: dict[str, list] = {}
    for row in schema:
        if "[]." in row["name"]:
            parent, child = row["name"].split("[].", 1)
            nested.setdefault(parent, []).append(dict(row, name=child))
    problems = []
    for row in top:
        if row["kind"] != "key":
            problems.append(f"{row['name']}: kind {row['kind']!r} is not a YAML kind")
        elif row["name"] not in doc:
            if _required(row, expect):
                problems.append(f"key {row['name']} missing")
        else:
            problems += _check_yaml_value(doc[row["name"]], row, sizes, f"key {row['name']}")
    for parent, rows in nested.items():
        items = doc.get(parent)
        if not isinstance(items, list):
            continue                     # absence or type already reported by the parent's row
        for i, item in enumerate(items):
            if not isinstance(item, dict):
                continue
            for row in rows:
                what = f"key {parent}[{i}].{row['name']}"
                if row["name"] not in item:
                    if _required(row, expect):
                        problems.append(f"{what} missing")
                else:
                    problems += _check_yaml_value(item[row["name"]], row, sizes, what)
            if strict:
                known = {row["name"] for row in rows}
                problems += [f"undocumented key {parent}[].{k}" for k in item if k not in known]
    if strict:
        known = {row["name"] for row in top}
        problems += [f"undocumented key {k}" for k in doc if k not in known]
    return problems
