"""One model interface: every kind in ``sepsiscope.models.MODEL_CLASSES`` passes the same checks.

Parameters survive ``clone``; save -> load predicts identically; a directory of another kind or
format version, a truncated file or a file outside the folder is refused (before the native
reader sees it); screens without a column the model was fitted on are refused with one message.
"""

from __future__ import annotations

import json
import subprocess
import sys
from dataclasses import dataclass

import numpy as np
import pandas as pd
import pytest
from PIL import Image
from sklearn.base import clone

from ehr.artefacts import ModelFormatError
from ehr.schema import SchemaError, validate
from sepsiscope.models import MODEL_CLASSES, load_model, model_class, model_name_of, scores_one_screen


@dataclass
class Case:
    model: object            # fitted
    data: pd.DataFrame       # what it scores
    column: str              # a column it was fitted on
    native_file: str         # the file its native reader (pgmpy, LightGBM, torch) reads
    native_reader: tuple     # (object, attribute) that reads it; must not run on a damaged file


def _cpn() -> Case:
    import cpn.model
    from cpn.sampling import sample_screens
    from cpn.structure import load_network

    s = sample_screens(load_network("physionet"), 800, seed=3)
    m = cpn.model.SepsisCPN("physionet", half_lives="prior", max_iter=2).fit(s)
    return Case(m, s, "hr", "network.xml", (cpn.model, "load_network"))


def _gbdt() -> Case:
    import lightgbm

    from gbdt._demo import demo_screens
    from gbdt.model import GBDTClassifier

    s = demo_screens(n_stays=60, seed=0)
    m = GBDTClassifier(n_estimators=10, early_stopping_rounds=None).fit(s)
    return Case(m, s, "c0", "booster.txt", (lightgbm, "Booster"))


def _imaging(tmp_path) -> Case:
    from imaging.datasets import ImageSet
    from imaging.estimator import CXRFindingClassifier
    from imaging.models import CXRFindingModel
    from imaging.synthetic_images import render_study

    y = np.arange(12) % 2
    imgs = np.stack([render_study({"effusion": int(v)}, seed=i, size=32) for i, v in enumerate(y)])
    m = CXRFindingClassifier(arch="small", image_size=32, epochs=1, batch_size=3, device="cpu").fit(
        ImageSet(imgs, y[:, None].astype(np.float32), ("effusion",), np.arange(12)))
    paths = []
    for i, a in enumerate(imgs[:4]):
        Image.fromarray(a).save(tmp_path / f"s{i}.png")
        paths.append(str(tmp_path / f"s{i}.png"))
    studies = pd.DataFrame({"study_id": range(5), "image_path": paths + [None]})
    return Case(m, studies, "image_path", "model.safetensors", (CXRFindingModel, "load_weights"))


def _stack() -> Case:
    import lightgbm
    from scipy.special import expit

    from fusion.stacking import StackClassifier

    rng = np.random.default_rng(0)
    y = (rng.random(400) < 0.3).astype(float)
    t = pd.DataFrame({"stay_id": np.arange(400) // 8, "screen_time": pd.Timestamp("2020-01-01")
                      + pd.to_timedelta(np.arange(400) % 8, unit="h"), "onset_in_h": np.where(y > 0, 6.0, np.nan),
                      "risk_cpn": expit(2 * y - 1 + rng.normal(size=400)), "risk_lightgbm": rng.random(400)})
    m = StackClassifier(meta="lightgbm", n_estimators=10, min_child_samples=20).fit(t)
    return Case(m, t, "risk_cpn", "meta_lightgbm.txt", (lightgbm, "Booster"))


def _deep(strategy: str | None) -> Case:
    import safetensors.torch

    from fusion._demo import demo_screens
    from fusion.models import FusionModel, SequenceModel

    s = demo_screens(n_stays=18, seed=0, hours=6, images=strategy is not None)
    tiny = {"hidden": 8, "head_hidden": 8, "epochs": 1, "batch_size": 8, "random_state": 0}
    m = (SequenceModel(**tiny) if strategy is None else FusionModel(strategy, max_images=2, image_proj=4, **tiny)).fit(s)
    return Case(m, s, m.features_in_[0], "weights.safetensors", (safetensors.torch, "load_file"))


KINDS = {"cpn": _cpn, "gbdt": _gbdt, "imaging": _imaging, "stack": _stack,
         "sequence": lambda: _deep(None), "fusion": lambda: _deep("mid")}


def test_every_registered_kind_is_checked_here():
    assert set(KINDS) == set(MODEL_CLASSES)


@pytest.fixture(scope="module", params=sorted(KINDS))
def case(request, tmp_path_factory):
    make = KINDS[request.param]
    c = make(tmp_path_factory.mktemp("images")) if request.param == "imaging" else make()
    assert c.model.kind == request.param and isinstance(c.model, model_class(request.param))
    return c


@pytest.fixture()
def saved(case, tmp_path):
    return case.model.save(tmp_path / "model")


def _edit(directory, **changes):
    meta = json.loads((directory / "model.json").read_text())
    meta.update(changes)
    (directory / "model.json").write_text(json.dumps(meta))


def test_clone_and_params_round_trip(case):
    params = case.model.get_params()
    fresh = clone(case.model)
    assert fresh.get_params() == params and not hasattr(fresh, "features_in_")
    assert type(fresh)(**params).get_params() == params


def test_save_load_predicts_identically(case, saved):
    back = load_model(saved)
    assert type(back) is type(case.model) and back.get_params() == case.model.get_params()
    assert back.features_in_ == case.model.features_in_
    np.testing.assert_array_equal(back.predict_proba(case.data), case.model.predict_proba(case.data))


def test_model_name_without_loading_the_files(case, saved):
    """The name in predictions and operating points (e.g. ``lightgbm`` for a GBDT), from model.json alone."""
    assert model_name_of(saved) == case.model.model_name


def test_which_models_score_one_screen_alone(case, saved):
    """The service scores one posted screen: stacks (members' predictions) and deep models (history) cannot."""
    assert scores_one_screen(saved) == (case.model.kind not in ("stack", "sequence", "fusion"))


def test_another_kind_is_refused(case, saved):
    other = next(k for k in sorted(MODEL_CLASSES) if k != case.model.kind)
    _edit(saved, kind=other)
    with pytest.raises(ModelFormatError, match=f"kind is '{other}', expected '{case.model.kind}'"):
        type(case.model).load(saved)


def test_another_format_version_is_refused(case, saved):
    _edit(saved, format_version=case.model.format_version + 1)
    with pytest.raises(ModelFormatError, match=f"format_version {case.model.format_version + 1}"):
        type(case.model).load(saved)


def _native_reader_must_not_run(case, monkeypatch):
    def refuse(*args, **kwargs):
        raise AssertionError(f"{case.native_file} reached the native reader")

    monkeypatch.setattr(*case.native_reader, refuse)


def test_truncated_file_is_refused_before_the_native_reader(case, saved, monkeypatch):
    path = saved / case.native_file
    path.write_bytes(path.read_bytes()[: path.stat().st_size // 2])
    _native_reader_must_not_run(case, monkeypatch)
    with pytest.raises(ModelFormatError, match="sha256 differs"):
        type(case.model).load(saved)


def test_file_outside_the_folder_is_refused(case, saved, tmp_path, monkeypatch):
    """Even an identical copy (same sha256) is refused when the folder only links to it."""
    outside = tmp_path / f"elsewhere_{case.native_file}"
    outside.write_bytes((saved / case.native_file).read_bytes())
    (saved / case.native_file).unlink()
    (saved / case.native_file).symlink_to(outside)
    _native_reader_must_not_run(case, monkeypatch)
    with pytest.raises(ModelFormatError, match="outside the model directory"):
        type(case.model).load(saved)


def test_missing_feature_is_refused_with_one_message(case):
    message = (f"screens: missing column(s) {case.column} that this {case.model.kind} model was trained on; "
               "score screens built from the same concepts")
    with pytest.raises(SchemaError) as err:
        case.model.predict_proba(case.data.drop(columns=case.column))
    assert str(err.value) == message


def test_explain_gives_the_explanations_table(case):
    if case.model.kind == "imaging":
        with pytest.raises(NotImplementedError, match="Grad-CAM"):
            case.model.explain(case.data)
        return
    ex = validate(case.model.explain(case.data.iloc[:3]), "explanations")
    assert set(ex["model"]) == {case.model.model_name} and (ex["feature"] == "total").sum() == 3
    with pytest.raises(SchemaError, match=f"missing column\\(s\\) {case.column} "):
        case.model.explain(case.data.drop(columns=case.column))


def test_registry_imports_a_kind_only_when_used(tmp_path):
    """Loading a GBDT through the registry imports neither torch nor the imaging or CPN packages."""
    from gbdt._demo import demo_screens
    from gbdt.model import GBDTClassifier

    d = GBDTClassifier(n_estimators=3, early_stopping_rounds=None).fit(demo_screens(30)).save(tmp_path / "m")
    code = ("import sys; from sepsiscope.models import load_model; load_model(sys.argv[1]); "
            "print(sorted(m for m in ('torch', 'imaging', 'cpn') if m in sys.modules))")
    out = subprocess.run([sys.executable, "-c", code, str(d)], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]"


def test_unknown_kind_is_a_model_format_error(tmp_path):
    (tmp_path / "model.json").write_text(json.dumps({"kind": "forest", "format_version": 1}))
    with pytest.raises(ModelFormatError, match="no model kind 'forest'"):
        load_model(tmp_path)
