"""GBDT artefacts: model.json through ehr.artefacts plus the engine's own text model."""

import json

import numpy as np
import pytest

from ehr.artefacts import ModelFormatError
from gbdt.model import GBDTClassifier


@pytest.mark.parametrize("backend, booster_file", [("lightgbm", "booster.txt"),
                                                   ("xgboost", "booster.json")])
def test_round_trip_predicts_identically(tiny_screens, tmp_path, backend, booster_file):
    m = GBDTClassifier(backend, n_estimators=20, trend=True, device="cpu").fit(tiny_screens)
    d = m.save(tmp_path / "m")
    assert sorted(p.name for p in d.iterdir()) == sorted([booster_file, "model.json"])
    meta = json.loads((d / "model.json").read_text())
    assert meta["kind"] == "gbdt" and meta["config"]["backend"] == backend
    assert meta["format_version"] == GBDTClassifier.format_version
    assert meta["state"]["features"]["encodings"]["department"] == ["MICU", "SICU", "ward"]
    assert meta["state"]["feature_names"] == m.feature_names_
    assert meta["features"] == m.features_in_ and "c0_delta" not in meta["features"]
    assert meta["config"] == m.get_params()
    assert set(meta["files"]) == {booster_file}
    loaded = GBDTClassifier.load(d)
    assert loaded.get_params() == m.get_params()
    np.testing.assert_array_equal(loaded.predict_proba(tiny_screens), m.predict_proba(tiny_screens))
    assert loaded.n_estimators_ == m.n_estimators_


def test_unfitted_model_cannot_be_saved(tmp_path):
    with pytest.raises(RuntimeError, match="not fitted"):
        GBDTClassifier().save(tmp_path / "m")


@pytest.fixture()
def saved(tiny_screens, tmp_path):
    return GBDTClassifier(n_estimators=3).fit(tiny_screens).save(tmp_path / "m")


def _edit(path, **changes):
    meta = json.loads((path / "model.json").read_text())
    meta.update(changes)
    (path / "model.json").write_text(json.dumps(meta))


def test_other_kind_is_refused(saved):
    _edit(saved, kind="cpn")
    with pytest.raises(ModelFormatError, match=r"model.json: kind is 'cpn', expected 'gbdt'"):
        GBDTClassifier.load(saved)


def test_other_version_is_refused(saved):
    _edit(saved, format_version=1)
    with pytest.raises(ModelFormatError, match="format_version 1"):
        GBDTClassifier.load(saved)


def test_missing_files_are_named(saved, tmp_path_factory):
    empty = tmp_path_factory.mktemp("empty")
    with pytest.raises(ModelFormatError, match="model.json: not found"):
        GBDTClassifier.load(empty)
    (saved / "booster.txt").unlink()
    with pytest.raises(ModelFormatError, match="booster.txt: not found"):
        GBDTClassifier.load(saved)


def test_truncated_booster_is_refused_before_lightgbm_reads_it(saved):
    """A truncated LightGBM text model used to abort the process inside LightGBM (exit 134)."""
    booster = saved / "booster.txt"
    booster.write_text(booster.read_text()[:200])
    with pytest.raises(ModelFormatError, match="sha256 differs"):
        GBDTClassifier.load(saved)


def test_corrupt_json_is_named(saved):
    (saved / "model.json").write_text("{not json")
    with pytest.raises(ModelFormatError, match="not valid JSON"):
        GBDTClassifier.load(saved)


def test_training_data_is_traceable(tiny_screens, tmp_path):
    m = GBDTClassifier(n_estimators=3).fit(tiny_screens)
    d = m.save(tmp_path / "m")
    meta = json.loads((d / "model.json").read_text())
    summary = meta["state"]["training_summary"]
    assert summary["n_screens"] == len(tiny_screens)
    assert summary["n_positive"] == int(tiny_screens["label"].sum())
    assert meta["data_hashes"] == {"features_and_labels": summary["sha256"]}
    other = GBDTClassifier(n_estimators=3).fit(tiny_screens.assign(c0=tiny_screens["c0"] + 1))
    assert len(summary["sha256"]) == 64 and other.training_summary_["sha256"] != summary["sha256"]
    assert GBDTClassifier.load(d).training_summary_ == summary
