import numpy as np
import pytest
from sklearn.base import clone
from sklearn.metrics import roc_auc_score

from ehr.estimator import Labels
from ehr.schema import SchemaError
from ehr.splits import holdout_groups
from gbdt.model import GBDTClassifier, cuda_available

BACKENDS = ["lightgbm", "xgboost"]


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("trend", [False, True])
def test_fit_predict_contract(tiny_screens, backend, trend):
    model = GBDTClassifier(backend, n_estimators=30, max_depth=3, trend=trend, device="cpu")
    assert model.fit(tiny_screens) is model
    p = model.predict_proba(tiny_screens)
    assert p.shape == (len(tiny_screens), 2)
    np.testing.assert_allclose(p.sum(axis=1), 1.0)
    assert ((p >= 0) & (p <= 1)).all()
    np.testing.assert_array_equal(model.classes_, [0, 1])
    assert model.feature_names_[:2] == ["c0", "c0_age_h"]
    assert ("c0_delta" in model.feature_names_) == trend
    assert 1 <= model.n_estimators_ <= 30
    assert model.device_ == "cpu"
    # the ramp in c0 before onset is learnable
    assert roc_auc_score(tiny_screens["label"], p[:, 1]) > 0.8
    np.testing.assert_array_equal(model.predict(tiny_screens), (p[:, 1] >= 0.5).astype(int))


def test_hyperparameters_stored_unchanged_and_clonable(tiny_screens):
    model = GBDTClassifier("xgboost", max_depth=2, reg_alpha=0.5, class_weight=None)
    params = model.get_params()
    model.fit(tiny_screens)
    assert model.get_params() == params
    assert model.device_ == ("cuda" if cuda_available() else "cpu")  # device="auto"
    c = clone(model)
    assert c.get_params() == params and not hasattr(c, "booster_")


def test_scale_pos_weight_balanced_and_none(tiny_screens):
    y = tiny_screens["label"].to_numpy()
    m = GBDTClassifier(n_estimators=5, early_stopping_rounds=None).fit(tiny_screens)
    assert m.scale_pos_weight_ == pytest.approx((y == 0).sum() / (y == 1).sum())
    m = GBDTClassifier(n_estimators=5, early_stopping_rounds=None, class_weight=None).fit(tiny_screens)
    assert m.scale_pos_weight_ == 1.0


def test_validation_split_keeps_stays_whole_and_has_both_classes(tiny_screens):
    y = tiny_screens["label"].to_numpy()
    g = tiny_screens["stay_id"].to_numpy()
    tr, va = holdout_groups(g, 0.1, y=y, random_state=0)
    assert len(tr) + len(va) == len(y)
    assert not set(g[tr]) & set(g[va])
    assert set(y[va]) == {0, 1}
    n_stays = len(set(g))
    assert abs(len(set(g[va])) - 0.1 * n_stays) <= 1


@pytest.mark.parametrize("backend", BACKENDS)
def test_early_stopping_truncates(tiny_screens, backend):
    m = GBDTClassifier(backend, n_estimators=400, learning_rate=0.3, early_stopping_rounds=5,
                       device="cpu").fit(tiny_screens)
    assert m.n_estimators_ < 400
    n_trees = (m.booster_.num_trees() if backend == "lightgbm" else m.booster_.num_boosted_rounds())
    assert n_trees == m.n_estimators_


def test_groups_argument_is_used(tiny_screens):
    with pytest.raises(ValueError, match="groups has 3 entries"):
        GBDTClassifier().fit(tiny_screens, groups=[1, 2, 3])


def test_single_class_is_an_error(tiny_screens):
    with pytest.raises(ValueError, match=r"only one class \(\[0\]\)"):
        GBDTClassifier().fit(tiny_screens, Labels(np.full(len(tiny_screens), np.nan)))


def test_target_is_onset_within_the_labels_horizon(tiny_screens):
    """The target is ``labels.y``: a shorter horizon has fewer positive screens."""
    short = Labels(tiny_screens["onset_in_h"].to_numpy(), horizon_h=12)
    m = GBDTClassifier(n_estimators=3).fit(tiny_screens, short)
    assert m.training_summary_["n_positive"] == int(short.y.sum()) < int(tiny_screens["label"].sum())
    with pytest.raises(ValueError, match="labels have 3 rows"):
        GBDTClassifier().fit(tiny_screens, Labels(np.ones(3)))


def test_label_horizon_overrides_the_labels_horizon(tiny_screens, tmp_path):
    """``label_horizon`` trains on onset within that many hours (a multi-horizon stacking member)."""
    onset = tiny_screens["onset_in_h"].to_numpy()
    n12 = int(Labels(onset, horizon_h=12).y.sum())
    assert 0 < n12 < int(tiny_screens["label"].sum())
    m = GBDTClassifier(n_estimators=3, label_horizon=12).fit(tiny_screens)
    assert m.training_summary_["n_positive"] == n12
    # it wins over the horizon of labels given explicitly, and scores like the same model fitted on those labels
    m48 = GBDTClassifier(n_estimators=3, label_horizon=12).fit(tiny_screens, Labels(onset, horizon_h=48))
    ref = GBDTClassifier(n_estimators=3).fit(tiny_screens, Labels(onset, horizon_h=12))
    np.testing.assert_array_equal(m48.predict_proba(tiny_screens), ref.predict_proba(tiny_screens))
    # stored with the model
    back = GBDTClassifier.load(m.save(tmp_path / "m"))
    assert back.label_horizon == 12
    np.testing.assert_array_equal(back.predict_proba(tiny_screens), m.predict_proba(tiny_screens))


def test_baseline_view_fits_saves_and_explains(tiny_screens, tmp_path):
    m = GBDTClassifier(n_estimators=5, baseline=True).fit(tiny_screens)
    assert "c0_dev_base" in m.feature_names_ and "c0_n_24h" in m.feature_names_
    assert "c0_dev_base" not in m.features_in_  # computed from the stay's rows, not read as a column
    back = GBDTClassifier.load(m.save(tmp_path / "m"))
    assert back.baseline and back.features_.baseline
    np.testing.assert_array_equal(back.predict_proba(tiny_screens), m.predict_proba(tiny_screens))


@pytest.mark.parametrize("h", [0, -6, float("nan"), "12", True])
def test_bad_label_horizon(tiny_screens, h):
    with pytest.raises(ValueError, match="label_horizon"):
        GBDTClassifier(label_horizon=h).fit(tiny_screens)


def test_cross_validate_trains_on_the_label_horizon(tiny_screens):
    from gbdt.search import cross_validate

    _, f12 = cross_validate(tiny_screens, GBDTClassifier(n_estimators=3, label_horizon=12), n_splits=2)
    _, f48 = cross_validate(tiny_screens, GBDTClassifier(n_estimators=3), n_splits=2)
    assert not np.allclose(f12["auroc"], f48["auroc"])


def test_missing_onset_column(tiny_screens):
    with pytest.raises(SchemaError, match="onset_in_h"):
        GBDTClassifier().fit(tiny_screens.drop(columns="onset_in_h"))


def test_all_nan_features_are_an_error(tiny_screens):
    s = tiny_screens.copy()
    for c in GBDTClassifier(n_estimators=1).fit(tiny_screens, ).feature_names_:
        s[c] = np.nan if c not in ("sex", "department") else None
    with pytest.raises(ValueError, match="entirely NaN"):
        GBDTClassifier().fit(s)


def test_all_nan_column_is_dropped_and_reported(tiny_screens, caplog):
    s = tiny_screens.copy()
    s["c2"] = np.nan
    s["c2_age_h"] = np.nan
    m = GBDTClassifier(n_estimators=5).fit(s)
    assert m.dropped_features_ == ["c2", "c2_age_h"]
    assert "c2" not in m.feature_names_
    assert "all-NaN" in caplog.text
    assert m.predict_proba(s).shape == (len(s), 2)


@pytest.mark.parametrize("kw, msg", [({"backend": "catboost"}, "backend"),
                                     ({"device": "tpu"}, "device"),
                                     ({"device": "cuda"}, "only supported with backend='xgboost'"),
                                     ({"max_depth": 0}, "max_depth"),
                                     ({"class_weight": "auto"}, "class_weight"),
                                     ({"validation_fraction": 1.0}, "validation_fraction")])
def test_bad_hyperparameters(tiny_screens, kw, msg):
    with pytest.raises(ValueError, match=msg):
        GBDTClassifier(**kw).fit(tiny_screens)


def test_unfitted_predict_is_an_error(tiny_screens):
    with pytest.raises(RuntimeError, match="not fitted"):
        GBDTClassifier().predict_proba(tiny_screens)


def test_predictions_table(tiny_screens):
    m = GBDTClassifier(n_estimators=5).fit(tiny_screens)
    t = m.predictions(tiny_screens, fold=2, split="test")
    assert (t["model"] == "lightgbm").all() and (t["fold"] == 2).all()
    np.testing.assert_allclose(t["risk"], m.predict_proba(tiny_screens)[:, 1])
