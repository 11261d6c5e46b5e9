"""The CPN on the project's synthetic linked cohort (ehr.synthetic + ehr.screens)."""

from __future__ import annotations

import numpy as np
import pytest
from sklearn.metrics import roc_auc_score

import ehr.screens as screens_mod
import ehr.synthetic as synthetic
from cpn import SepsisCPN


@pytest.mark.slow
def test_full_network_on_synthetic_cohort_with_cxr(tmp_path):
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
    # "auto" calibration prior = mean training probability; with the old fixed 0.5 the likelihood
    # ratios were all shrunk (mean < 1), and on larger cohorts EM drove P(present | parents) to ~0
    # for both parent states, which silenced the CXR leaves
    seen = s_tr["cxr_consolidation"].dropna()
    assert m.cxr_prior_["cxr_consolidation"] == pytest.approx(seen.mean())
    # axes: absent/present x resp_infection no/yes x sepsis (time to onset)
    cons = m.engine_.cpds["cxr_consolidation"]
    assert m.engine_.parents["cxr_consolidation"] == ["resp_infection", "sepsis"]
    assert cons[1].min() > 0.02 and abs(cons[1, 1].mean() - cons[1, 0].mean()) > 0.2
    # a film that shows consolidation moves the risk in the explanations (issue 13 item 5)
    shown = s_te[(s_te["cxr_consolidation"] >= 0.5) & (s_te["cxr_age_h"] <= 24.0)]
    ex = m.explain(shown)
    cons_ex = ex[ex["feature"] == "cxr_consolidation"]
    assert len(cons_ex) == len(shown) and (cons_ex["contribution"].abs() > 0.01).mean() > 0.5
    # the chest-film timing leaf is fitted: a recent film is commoner close to onset
    taken = m.engine_.cpds["xray_taken_24h"]
    assert taken.shape[0] == 2 and np.ptp(taken[1]) > 0.1
    # the calibration prevalences travel with the saved model (they change every CXR ratio)
    back = SepsisCPN.load(m.save(tmp_path / "m"))
    assert back.cxr_prior_ == m.cxr_prior_
    np.testing.assert_allclose(back.predict_proba(s_te), m.predict_proba(s_te), rtol=1e-12)
