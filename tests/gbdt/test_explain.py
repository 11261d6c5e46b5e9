import numpy as np
import pytest

from gbdt.explain import contributions
from gbdt.model import GBDTClassifier

BACKENDS = ["lightgbm", "xgboost"]


@pytest.fixture(scope="module", params=[(b, t) for b in BACKENDS for t in (False, True)],
                ids=lambda p: f"{p[0]}-trend{p[1]}")
def fitted(request, tiny_screens):
    backend, trend = request.param
    return GBDTClassifier(backend, n_estimators=25, max_depth=3, trend=trend, device="cpu").fit(tiny_screens)


def test_contributions_sum_to_raw_margin(fitted, tiny_screens):
    phi = contributions(fitted, tiny_screens)
    assert list(phi.columns) == [*fitted.feature_names_, "expected_value"]
    np.testing.assert_allclose(phi.sum(axis=1), fitted.decision_function(tiny_screens), atol=1e-4)


def test_grouped_explanations_are_exact_and_in_contract_shape(fitted, tiny_screens):
    screens = tiny_screens.iloc[::37]
    e = fitted.explain(screens)
    margin = fitted.decision_function(screens)
    items = e[e["feature"] != "total"]
    per_screen = items.groupby(["stay_id", "screen_time"], sort=False)["contribution"].sum()
    base = items.groupby(["stay_id", "screen_time"], sort=False)["baseline"].first()
    np.testing.assert_allclose((per_screen + base).to_numpy(), margin, atol=1e-4)
    total = e.loc[e["feature"] == "total", "contribution"].to_numpy()
    np.testing.assert_allclose(total, per_screen.to_numpy(), atol=1e-9)
    # one row per evidence item: concepts (value + age + trends grouped), CXR, static, total
    assert set(e["feature"]) == {"c0", "c1", "c2", "c3", "cxr_consolidation", "cxr_age_h", "age",
                                 "sex", "department", "hours_since_admit", "total"}
    c0 = e[e["feature"] == "c0"]
    np.testing.assert_allclose(c0["value"], screens["c0"])
    np.testing.assert_allclose(c0["age_h"], screens["c0_age_h"])
    assert e["state"].isna().all() and e["weight"].isna().all()
    assert (e["model"] == fitted.backend).all()


def test_ungrouped_rows_follow_features(fitted, tiny_screens):
    e = fitted.explain(tiny_screens.head(2), group=False, include_total=False)
    assert list(e["feature"].iloc[: len(fitted.feature_names_)]) == fitted.feature_names_
    phi = contributions(fitted, tiny_screens.head(2))
    np.testing.assert_allclose(e["contribution"].to_numpy(),
                               phi.drop(columns="expected_value").to_numpy().ravel())


@pytest.mark.parametrize("backend", BACKENDS)
def test_stump_contribution_by_hand(tiny_screens, backend):
    """One depth-1 tree: only the split feature contributes, and it gets margin - expected value,
    where the expected value is the cover-weighted mean of the two leaves."""
    m = GBDTClassifier(backend, n_estimators=1, max_depth=1, early_stopping_rounds=None,
                       class_weight=None, device="cpu").fit(tiny_screens)
    phi = contributions(m, tiny_screens)
    margin = m.decision_function(tiny_screens)
    nonzero = [c for c in m.feature_names_ if np.abs(phi[c]).max() > 0]
    assert len(nonzero) == 1
    leaves = np.unique(np.round(margin, 6))
    assert len(leaves) == 2
    # the expected value lies between the leaves, weighted by how many training rows reach each
    frac_hi = np.mean(np.round(margin, 6) == leaves[1])
    expected = leaves[0] * (1 - frac_hi) + leaves[1] * frac_hi
    np.testing.assert_allclose(phi["expected_value"], expected, atol=1e-4)
    np.testing.assert_allclose(phi[nonzero[0]], margin - expected, atol=1e-4)
