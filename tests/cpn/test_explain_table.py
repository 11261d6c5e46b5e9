"""The numpy-built explanations table against the pandas one it replaced, exactly; and
``predict_explain`` against ``predict_proba`` and ``explain`` called apart, exactly."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from cpn import SepsisCPN
from cpn.explain import bayes_factors
from cpn.model import _GROUPS
from cpn.sampling import sample_screens


def explain_reference(model, screens, model_name="cpn"):
    """``SepsisCPN.explain`` as it was written before the table was built with numpy: one DataFrame
    per node, concatenated, then a stable sort by screen."""
    ev, det = model._evidence(screens, details=True)
    bf = bayes_factors(model.engine_, ev, _GROUPS, nodes=model.features_, batch_size=model.batch_size)
    n = len(screens)
    stay = screens["stay_id"].to_numpy() if "stay_id" in screens.columns else np.arange(n)
    times = screens["screen_time"].to_numpy() if "screen_time" in screens.columns \
        else np.full(n, np.datetime64("NaT"), dtype="datetime64[ns]")
    parts = []
    for v in bf["alone"]:
        value, state, age, weight = det[v]
        idx = np.flatnonzero(state >= 0)
        names = np.asarray(model.info_.states[v], dtype=object)
        parts.append(pd.DataFrame({
            "row": idx, "feature": v,
            "value": value[idx] if value is not None else np.nan,
            "state": names[state[idx]],
            "age_h": age[idx] if age is not None else np.nan,
            "weight": weight[idx] if weight is not None else 1.0,
            "contribution": bf["alone"][v][idx], "baseline": bf["in_context"][v][idx]}))
    parts.append(pd.DataFrame({"row": np.arange(n), "feature": "total", "value": np.nan,
                               "state": None, "age_h": np.nan, "weight": np.nan,
                               "contribution": bf["total"], "baseline": np.nan}))
    out = pd.concat(parts, ignore_index=True).sort_values(["row"], kind="stable")
    out.insert(0, "stay_id", stay[out["row"].to_numpy()].astype("int64"))
    out.insert(1, "screen_time", pd.to_datetime(times[out["row"].to_numpy()]))
    out.insert(2, "model", model_name)
    return out.drop(columns="row").reset_index(drop=True)


@pytest.fixture(scope="module")
def full_cpn():
    """A CPN on the full network (CXR leaves, every context node), fitted briefly on sampled screens."""
    from cpn.structure import load_network

    screens = sample_screens(load_network("full"), 600, seed=5)
    return SepsisCPN("full", half_lives="prior", max_iter=3).fit(screens), screens


def _cases(model, screens):
    """Whole tables, one screen, no screen, and screens with every value missing."""
    blank = screens.head(3).copy()
    blank[[c for c in model.features_in_ if c not in ("age", "hours_since_admit", "department")]] = np.nan
    cases = [screens, screens.iloc[[7]], screens.iloc[:0], blank]
    # a table without stay ids: only for a network without derived leaves (trends read the stay's screens)
    return cases + ([] if "stay_id" in model.features_in_ else [screens.drop(columns=["stay_id"])])


@pytest.mark.parametrize("which", ["physionet", "full"])
def test_the_table_equals_the_pandas_one_exactly(which, fitted_cpn, sampled_screens, full_cpn):
    model, screens = (fitted_cpn, sampled_screens.head(400)) if which == "physionet" else full_cpn
    for case in _cases(model, screens):
        got = model.explain(case, model_name="m")
        pd.testing.assert_frame_equal(got, explain_reference(model, case, "m"), check_exact=True)
        assert len(got) == 0 or got.feature.iloc[-1] == "total"


def test_predict_explain_equals_the_two_calls_exactly(full_cpn):
    model, screens = full_cpn
    rows = np.array([0, 5, len(screens) - 1])
    proba, ex = model.predict_explain(screens, rows)
    np.testing.assert_array_equal(proba, model.predict_proba(screens))
    # the rows are explained with their stays' earlier screens (the derived leaves' trends), as
    # explaining the whole table does, not as the rows read alone
    every = model.explain(screens)
    want = every[every["screen_time"].isin(screens["screen_time"].iloc[rows])].reset_index(drop=True)
    assert want["screen_time"].nunique() == len(rows)
    pd.testing.assert_frame_equal(ex, want, check_exact=True)
    proba, ex = model.predict_explain(screens, np.array([], dtype=int))
    assert proba.shape == (len(screens), 2) and ex.empty


def test_risk_is_the_same_whichever_call_compiles_the_kernel_first(tmp_path, full_cpn):
    """``predict_explain`` builds the explanation program first and the forward pass reuses it;
    ``predict_proba`` alone builds one of its own: both give the same risks, exactly."""
    model, screens = full_cpn
    d = model.save(tmp_path / "m")
    first, second = SepsisCPN.load(d), SepsisCPN.load(d)
    alone = first.predict_proba(screens)
    proba, _ = second.predict_explain(screens, [0])
    np.testing.assert_array_equal(proba, alone)
    np.testing.assert_array_equal(second.predict_proba(screens), alone)
