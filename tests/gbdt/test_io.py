import json

import numpy as np
import pytest

from gbdt.io import FORMAT_VERSION, ModelFormatError, load_model, save_model
from gbdt.model import GBDTClassifier


@pytest.mark.parametrize("backend, booster_file", [("lightgbm", "booster.txt"),
                                                   ("xgboost", "booster.json")])
def test_round_trip_predicts_identically(tiny_screens, tmp_path, backend, booster_file):
    m = GBDTClassifier(backend, n_estimators=20, trend=True, device="cpu").fit(tiny_screens)
    m.save(tmp_path)
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted([booster_file, "model.json"])
    meta = json.loads((tmp_path / "model.json").read_text())
    assert meta["kind"] == "gbdt" and meta["backend"] == backend
    assert meta["format_version"] == FORMAT_VERSION
    assert meta["features"]["encodings"]["department"] == ["MICU", "SICU", "ward"]
    assert meta["feature_names"] == m.feature_names_
    assert meta["config"] == m.get_params()
    loaded = GBDTClassifier.load(tmp_path)
    assert loaded.get_params() == m.get_params()
    np.testing.assert_array_equal(loaded.predict_proba(tiny_screens), m.predict_proba(tiny_screens))
    assert loaded.n_estimators_ == m.n_estimators_


def test_unfitted_model_cannot_be_saved(tmp_path):
    with pytest.raises(RuntimeError, match="not fitted"):
        save_model(GBDTClassifier(), tmp_path)


@pytest.fixture()
def saved(tiny_screens, tmp_path):
    save_model(GBDTClassifier(n_estimators=3).fit(tiny_screens), tmp_path)
    return tmp_path


def _edit(path, **changes):
    meta = json.loads((path / "model.json").read_text())
    meta.update(changes)
    (path / "model.json").write_text(json.dumps(meta))


def test_other_kind_is_refused(saved):
    _edit(saved, kind="cpn")
    with pytest.raises(ModelFormatError, match=r"model.json: kind is 'cpn', expected 'gbdt'"):
        load_model(saved)


def test_other_version_is_refused(saved):
    _edit(saved, format_version=99)
    with pytest.raises(ModelFormatError, match="format_version 99"):
        load_model(saved)


def test_missing_files_are_named(saved, tmp_path_factory):
    empty = tmp_path_factory.mktemp("empty")
    with pytest.raises(ModelFormatError, match="model.json: not found"):
        load_model(empty)
    (saved / "booster.txt").unlink()
    with pytest.raises(ModelFormatError, match="booster.txt: booster file not found"):
        load_model(saved)


def test_corrupt_json_is_named(saved):
    (saved / "model.json").write_text("{not json")
    with pytest.raises(ModelFormatError, match="not valid JSON"):
        load_model(saved)


def test_training_data_is_traceable(tiny_screens, tmp_path):
    m = GBDTClassifier(n_estimators=3).fit(tiny_screens)
    m.save(tmp_path)
    summary = json.loads((tmp_path / "model.json").read_text())["fitted"]["training_summary"]
    assert summary["n_screens"] == len(tiny_screens)
    assert summary["n_positive"] == int(tiny_screens["label"].sum())
    other = GBDTClassifier(n_estimators=3).fit(tiny_screens.assign(c0=tiny_screens["c0"] + 1))
    assert len(summary["sha256"]) == 64 and other.training_summary_["sha256"] != summary["sha256"]
    assert load_model(tmp_path).training_summary_ == summary
