"""The CPN on the project's synthetic linked cohort (ehr.synthetic + ehr.screens)."""

from __future__ import annotations

import numpy as np
import pytest
from sklearn.metrics import roc_auc_score

from cpn import SepsisCPN

synthetic = pytest.importorskip("ehr.synthetic")
screens_mod = pytest.importorskip("ehr.screens")


@pytest.mark.slow
def test_full_network_on_synthetic_cohort_with_cxr():
    train = synthetic.generate_cohort(160, seed=0)
    test = synthetic.generate_cohort(80, seed=1)
    s_tr = screens_mod.build_screens(train.events, train.stays, train.cxr)
    s_te = screens_mod.build_screens(test.events, test.stays, test.cxr)
    m = SepsisCPN("full", max_iter=6, half_life_grid=(0.5, 1.0, 2.0)).fit(s_tr)
    p = m.predict_proba(s_te)[:, 1]
    assert roc_auc_score(s_te["label"], p) > 0.7
    assert "cxr" in m.half_life_scale_
    row = s_te[s_te["cxr_age_h"].notna()].iloc[[0]]
    ex = m.explain(row)
    assert ex["feature"].str.startswith("cxr_").any()
    assert np.isfinite(ex["contribution"]).all()
