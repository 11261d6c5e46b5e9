"""PhysioNet 2019 set A: a slice of the real data through features, CV, explanations, save/load."""

import zipfile

import numpy as np
import pytest

from gbdt import GBDTClassifier, contributions, cross_validate

pytestmark = pytest.mark.realdata


@pytest.fixture(scope="module")
def real_screens(physionet_zip, tmp_path_factory):
    from ehr.screens import build_screens
    from ehr.sources.physionet import read_physionet

    d = tmp_path_factory.mktemp("setA_slice")
    with zipfile.ZipFile(physionet_zip) as z:
        names = sorted(n for n in z.namelist() if n.endswith(".psv"))[:800]
        for n in names:
            (d / n.rsplit("/", 1)[-1]).write_bytes(z.read(n))
    cohort = read_physionet(d)
    events, stays = cohort.events, cohort.stays
    return build_screens(events, stays)


def test_real_screens_cv_explain_and_round_trip(real_screens, tmp_path):
    s = real_screens
    assert s["label"].sum() > 0
    pred, folds = cross_validate(s, GBDTClassifier(n_estimators=60, max_depth=4), n_splits=3)
    assert len(pred) == len(s)
    assert folds["auroc"].mean() > 0.65  # set A, 48 h label: full-data CV gives ~0.83
    m = GBDTClassifier("xgboost", n_estimators=30, max_depth=4, trend=True, device="cpu").fit(s)
    sub = s.iloc[:: max(1, len(s) // 300)]
    phi = contributions(m, sub)
    np.testing.assert_allclose(phi.sum(axis=1), m.decision_function(sub), atol=1e-4)
    d = m.save(tmp_path / "m")
    np.testing.assert_array_equal(GBDTClassifier.load(d).predict_proba(sub), m.predict_proba(sub))
