r"""A check of LightGBM's text model format before LightGBM reads it.

LightGBM parses the trees of a model string in parallel and, on a malformed tree, aborts the
process instead of raising. ``model.json`` records the booster file's sha256, which catches a
truncated or swapped file; a file edited together with ``model.json`` is caught here: the
header's ``tree_sizes`` must locate every ``Tree=i`` block; each block must hold the fields
LightGBM needs as ``key=numbers``, with as many values as the tree has splits or leaves and
child and feature indices in range; ``end of trees`` must follow, and the parameters section
must be whole.

Examples
--------
>>> tree = b"Tree=0\nnum_leaves=1\nnum_cat=0\nleaf_value=0.5\nshrinkage=1\n\n\n"
>>> ok = (b"tree\nmax_feature_idx=3\ntree_sizes=%d\n\n" % len(tree) + tree
...       + b"end of trees\n\nend of parameters\n\npandas_categorical:null\n")
>>> check_lightgbm_text(ok, "m")[:4]
'tree'
>>> check_lightgbm_text(ok[:40], "m")
Traceback (most recent call last):
...
ehr.artefacts.ModelFormatError: m: tree 0 is cut short or misplaced (tree_sizes says 59 bytes); the LightGBM model is damaged
"""

from __future__ import annotations

import json
import re

from ehr.artefacts import ModelFormatError

__all__ = ["check_lightgbm_text"]

_PER_SPLIT = ("split_feature", "split_gain", "threshold", "decision_type", "left_child", "right_child",
              "internal_value", "internal_weight", "internal_count")
_PER_LEAF = ("leaf_value", "leaf_weight", "leaf_count")
_PARAM = re.compile(rb"\[[A-Za-z0-9_]+: [^\[\]\n]*\]")
_REQUIRED_SPLIT = ("split_feature", "threshold", "decision_type", "left_child", "right_child")


def _broken(where, why: str) -> ModelFormatError:
    return ModelFormatError(f"{where}: {why}; the LightGBM model is damaged")


def _fields(block: bytes, i: int, where) -> dict[str, list[float]]:
    fields = {}
    for line in block.split(b"\n")[1:]:
        if not line:
            continue
        key, eq, values = line.partition(b"=")
        try:
            fields[key.decode("ascii")] = [float(v) for v in values.split()]
            if not eq or not key:
                raise ValueError
        except (ValueError, UnicodeDecodeError):
            raise _broken(where, f"tree {i}: line {line[:40]!r} is not key=numbers") from None
    return fields


def _check_tree(f: dict, i: int, n_features: int | None, where) -> None:
    def one(key):
        v = f.get(key)
        if not v or len(v) != 1 or v[0] != int(v[0]):
            raise _broken(where, f"tree {i}: '{key}' is missing or not one integer")
        return int(v[0])

    leaves, n_cat = one("num_leaves"), one("num_cat")
    if leaves < 1 or n_cat < 0:
        raise _broken(where, f"tree {i}: num_leaves {leaves}, num_cat {n_cat}")
    if "leaf_value" not in f or "shrinkage" not in f:
        raise _broken(where, f"tree {i}: no leaf_value or shrinkage")
    for key in _PER_LEAF + (_PER_SPLIT if leaves > 1 else ()):
        want = leaves if key in _PER_LEAF else leaves - 1
        if key in f and len(f[key]) != want:
            raise _broken(where, f"tree {i}: {key} has {len(f[key])} values, expected {want}")
        if leaves > 1 and key in _REQUIRED_SPLIT and key not in f:
            raise _broken(where, f"tree {i}: no {key}")
    if leaves > 1:
        children = f["left_child"] + f["right_child"]
        # a tree: every node but the root is a child exactly once, every leaf (~k) exactly once
        if sorted(children) != list(range(-leaves, 0)) + list(range(1, leaves - 1)):
            raise _broken(where, f"tree {i}: left_child/right_child do not form a tree")
        if any(x != int(x) or x < 0 or (n_features is not None and x >= n_features) for x in f["split_feature"]):
            raise _broken(where, f"tree {i}: split_feature outside the model's features")
    if n_cat:
        bounds, cats = f.get("cat_boundaries", []), f.get("cat_threshold", [])
        if len(bounds) != n_cat + 1 or bounds[0] != 0 or bounds != sorted(bounds) or bounds[-1] != len(cats):
            raise _broken(where, f"tree {i}: cat_boundaries do not fit cat_threshold")


def check_lightgbm_text(raw: bytes, where) -> str:
    """The text of a LightGBM model file, after checking its layout; :class:`ModelFormatError` if broken."""
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError:
        raise _broken(where, "not UTF-8 text") from None
    head_end = raw.find(b"\n\n")
    if not raw.startswith(b"tree\n") or head_end < 0:
        raise _broken(where, "no LightGBM header")
    head = dict(line.partition(b"=")[::2] for line in raw[:head_end].split(b"\n")[1:])
    try:
        sizes = [int(x) for x in head.get(b"tree_sizes", b"").split()]
        n_features = int(head[b"max_feature_idx"]) + 1 if b"max_feature_idx" in head else None
    except ValueError:
        raise _broken(where, "tree_sizes or max_feature_idx is not a number") from None
    if not sizes or min(sizes) <= 0:
        raise _broken(where, "no valid tree_sizes in the header")
    pos = head_end + 2
    for i, n in enumerate(sizes):
        block = raw[pos:pos + n]
        if len(block) < n or not block.startswith(b"Tree=%d\n" % i):
            raise _broken(where, f"tree {i} is cut short or misplaced (tree_sizes says {n} bytes)")
        _check_tree(_fields(block, i, where), i, n_features, where)
        pos += n
    tail = raw[pos:]
    if not tail.lstrip(b"\n").startswith(b"end of trees"):
        raise _broken(where, "no 'end of trees' after the last tree")
    params_end = tail.find(b"\nend of parameters\n")
    if params_end < 0 or not tail.endswith(b"\n") or b"\npandas_categorical:" not in tail[params_end:]:
        raise _broken(where, "the parameters section is cut short")
    _check_sections(tail[:params_end], where)
    try:
        json.loads(tail[tail.rindex(b"\npandas_categorical:") + len(b"\npandas_categorical:"):])
    except ValueError:
        raise _broken(where, "pandas_categorical is not JSON") from None
    return text


def _check_sections(tail: bytes, where) -> None:
    """Feature importances (``name=count``) and parameters (``[key: value]``), line by line."""
    section = None
    for line in tail.split(b"\n"):
        if line in (b"", b"end of trees", b"feature_importances:", b"parameters:"):
            section = line or section
            continue
        if section == b"parameters:":
            ok = _PARAM.fullmatch(line) is not None
        else:
            name, eq, count = line.rpartition(b"=")
            ok = section == b"feature_importances:" and bool(eq and name) and count.isdigit()
        if not ok:
            raise _broken(where, f"line {line[:40]!r} after the trees is malformed")
