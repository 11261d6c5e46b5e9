"""model.json reader/writer: atomic replacement, confined paths, sha256 checks, the base estimator."""

from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pytest

from ehr.artefacts import ModelFormatError, atomic_dir, model_file, read_model_meta, write_model_dir
from ehr.estimator import Labels


def _write(d, payload="abc"):
    return write_model_dir(d, kind="demo", format_version=2, config={"x": (1, 2)}, features=["hr"],
                           write_files=lambda tmp: (tmp / "w.bin").write_text(payload))


def test_round_trip_and_checks(tmp_path):
    d = _write(tmp_path / "m")
    meta = read_model_meta(d, kind="demo", format_version=2)
    assert meta["config"] == {"x": [1, 2]} and meta["features"] == ["hr"]
    assert model_file(d, meta, "w.bin").read_text() == "abc"
    with pytest.raises(ModelFormatError, match="format_version 2"):
        read_model_meta(d, kind="demo", format_version=3)
    with pytest.raises(ModelFormatError, match="kind is 'demo', expected 'cpn' or 'gbdt'"):
        read_model_meta(d, kind=("cpn", "gbdt"))


def test_truncated_or_swapped_file_is_refused(tmp_path):
    d = _write(tmp_path / "m")
    meta = read_model_meta(d)
    (d / "w.bin").write_text("ab")
    with pytest.raises(ModelFormatError, match="sha256 differs"):
        model_file(d, meta, "w.bin")


@pytest.mark.parametrize("name", ["../outside.txt", "/etc/passwd", "link.txt", "unlisted.bin"])
def test_paths_are_confined_to_the_model_directory(tmp_path, name):
    d = _write(tmp_path / "m")
    (tmp_path / "outside.txt").write_text("secret")
    (d / "link.txt").symlink_to(tmp_path / "outside.txt")
    meta = read_model_meta(d)
    if name != "unlisted.bin":
        meta["files"][name] = "0" * 64
    with pytest.raises(ModelFormatError, match="outside|not listed"):
        model_file(d, meta, name)


def test_failed_write_leaves_the_old_directory_whole(tmp_path):
    d = _write(tmp_path / "m", "old")

    def boom(tmp):
        (tmp / "w.bin").write_text("new")
        raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        write_model_dir(d, kind="demo", format_version=2, config={}, features=[], write_files=boom)
    assert (d / "w.bin").read_text() == "old"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["m"]  # no temporary left behind
    _write(d, "new")
    assert (d / "w.bin").read_text() == "new"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["m"]


def test_atomic_dir_refuses_to_replace_a_file(tmp_path):
    f = tmp_path / "f"
    f.write_text("data")
    with pytest.raises(FileExistsError, match="not a directory"):
        with atomic_dir(f):
            pass
    assert f.read_text() == "data"


def test_damaged_json(tmp_path):
    d = _write(tmp_path / "m")
    (d / "model.json").write_text("{not json")
    with pytest.raises(ModelFormatError, match="not valid JSON"):
        read_model_meta(d)
    (d / "model.json").write_text(json.dumps({"kind": "demo"}))
    with pytest.raises(ModelFormatError, match="no 'format_version'"):
        read_model_meta(d)
    with pytest.raises(ModelFormatError, match="not found"):
        read_model_meta(tmp_path)


def test_labels():
    lab = Labels(np.array([60.0, 48.0, 0.0, -2.0, np.nan]), horizon_h=48)
    assert lab.y.tolist() == [0, 1, 0, 0, 0]
    assert Labels(lab.onset_in_h, horizon_h=72).y.tolist() == [1, 1, 0, 0, 0]
    assert lab.take([0, 1]).y.tolist() == [0, 1]
    with pytest.raises(ValueError, match="horizon_h"):
        Labels(lab.onset_in_h, horizon_h=-5)
    with pytest.raises(ValueError, match="horizon_h"):
        Labels(lab.onset_in_h, horizon_h=float("nan"))
    with pytest.raises(ValueError, match="labels have 5 rows but screens have 2"):
        Labels.coerce(lab, pd.DataFrame({"a": [1, 2]}))


def test_atomic_outputs_get_ordinary_permissions(tmp_path):
    """Folders and files written through a temporary name are not left private (0700 / 0600)."""
    import os

    from ehr.artefacts import atomic_dir, atomic_file

    mask = os.umask(0o022)
    try:
        with atomic_dir(tmp_path / "d") as d:
            (d / "x.txt").write_text("x")
        with atomic_file(tmp_path / "f.txt") as f:
            f.write_text("y")
    finally:
        os.umask(mask)
    assert (tmp_path / "d").stat().st_mode & 0o777 == 0o755
    assert (tmp_path / "f.txt").stat().st_mode & 0o777 == 0o644
