"""SOFA points (ehr/sofa.py) against the two implementations they replaced and hand-checked boundaries."""

from __future__ import annotations

import numpy as np
from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.extra.numpy import arrays

from ehr.sofa import (MAP_ONLY_CUTS, cardiovascular_score, organ_score, respiration_score, score,
                      urine_output_score)

values = arrays(np.float64, st.integers(1, 40), elements=st.one_of(st.floats(0, 600), st.just(np.nan)))
finite = arrays(np.float64, st.integers(1, 40), elements=st.floats(0, 600))


def test_boundaries_by_hand():
    # a value on a cut-point: lower-is-worse organs score below it only, higher-is-worse from it on
    assert organ_score([150.0, 149.9, 20.0, 19.9], "coagulation").tolist() == [0, 1, 3, 4]
    assert organ_score([1.19, 1.2, 5.0, 12.0], "renal").tolist() == [0, 1, 4, 4]
    assert organ_score([15.0, 14.0, 9.0, 3.0], "cns").tolist() == [0, 1, 3, 4]
    assert organ_score([70.0, 69.0], "cardiovascular").tolist() == [0, 1]
    assert score([70.0, 59.9, 49.9], MAP_ONLY_CUTS, lower_is_worse=True).tolist() == [0, 2, 3]
    assert respiration_score([np.nan, 150.0, np.nan], [150.0, 350.0, np.nan]).tolist() == [2, 3, 0]
    assert urine_output_score([100.0, 400.0, 600.0, 100.0], [True, True, True, False]).tolist() == [4, 3, 0, 0]
    nan = np.full(4, np.nan)
    assert cardiovascular_score([65.0, 80.0, 80.0, 80.0], np.array([0, 3, 6, 16.0]), nan, nan, nan).tolist() == \
        [1, 2, 3, 4]
    assert cardiovascular_score([80.0] * 2, nan[:2], nan[:2], [0.05, 0.2], nan[:2]).tolist() == [3, 4]


@settings(max_examples=60, deadline=None)
@given(finite)
def test_organ_scores_equal_the_synthetic_digitize_formulas(x):
    """The synthetic cohort's former np.digitize formulas (finite values, as its trends are)."""
    assert (organ_score(x, "respiration") == 4 - np.digitize(x, [100.0, 200.0, 300.0, 400.0])).all()
    assert (organ_score(x, "coagulation") == 4 - np.digitize(x, [20.0, 50.0, 100.0, 150.0])).all()
    assert (organ_score(x, "liver") == np.digitize(x, [1.2, 2.0, 6.0, 12.0])).all()
    assert (organ_score(x, "renal") == np.digitize(x, [1.2, 2.0, 3.5, 5.0])).all()
    g = np.round(x / 40)
    assert (organ_score(g, "cns") == 4 - np.digitize(g, [6.0, 10.0, 13.0, 15.0])).all()
    assert (score(x, MAP_ONLY_CUTS, lower_is_worse=True) == 3 - np.digitize(x, [50.0, 60.0, 70.0])).all()


@settings(max_examples=60, deadline=None)
@given(values, st.data())
def test_respiration_equals_the_labels_step_rule(pf_vent, data):
    """ehr.labels' former rule: 1/2 from any P/F < 400/300, 3/4 from a ventilated P/F < 200/100."""
    pf_other = data.draw(arrays(np.float64, len(pf_vent), elements=st.one_of(st.floats(0, 600), st.just(np.nan))))
    pf_any = np.fmin(pf_vent, pf_other)
    s = np.zeros(len(pf_vent))
    s = np.where(pf_any < 400, 1, s)
    s = np.where(pf_any < 300, 2, s)
    s = np.where(pf_vent < 200, 3, s)
    s = np.where(pf_vent < 100, 4, s)
    assert (respiration_score(pf_vent, pf_other) == s).all()
