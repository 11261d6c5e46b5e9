"""Hourly screens: carry-forward, ages, the leakage rule (brute force), labels, CXR."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from ehr.schema import SchemaError
from ehr.screens import add_labels, build_screens

T0 = pd.Timestamp("2024-03-01 08:00")
H = pd.Timedelta(hours=1)


def _stays(n_hours=(10,), onset=(None,)):
    rows = []
    for i, (n, o) in enumerate(zip(n_hours, onset), start=1):
        rows.append({"subject_id": 100 + i, "stay_id": i, "admit_time": T0, "discharge_time": T0 + n * H,
                     "onset_time": pd.NaT if o is None else T0 + o * H, "age": 60.0 + i, "sex": "F",
                     "department": "ward", "hypercapnic": False})
    return pd.DataFrame(rows)


def _events(rows):
    return pd.DataFrame([{"subject_id": 100 + s, "stay_id": s, "time": T0 + pd.Timedelta(hours=h),
                          "code": f"SYNTH/{c}", "numeric_value": v, "concept": c} for s, h, c, v in rows])


def test_carry_forward_never_back_fills_and_ages():
    ev = _events([(1, 0.2, "hr", 90.0), (1, 3.0, "hr", 110.0), (1, 4.5, "crp", 50.0)])
    s = build_screens(ev, _stays())
    assert s.hours_since_admit.tolist() == list(np.arange(1.0, 11.0))
    assert s.hr.tolist()[:5] == [90, 90, 110, 110, 110]
    np.testing.assert_allclose(s.hr_age_h[:4], [0.8, 1.8, 0.0, 1.0])
    assert s.crp.isna().tolist()[:4] == [True] * 4  # never back-filled
    assert s.crp[4] == 50 and s.crp_age_h[4] == pytest.approx(0.5)
    assert s.new_data.tolist()[:6] == [True, False, True, False, True, False]
    assert (s.age == 61.0).all() and (s.subject_id == 101).all()


def test_event_exactly_at_screen_time_is_visible_and_later_is_not():
    ev = _events([(1, 2.0, "hr", 80.0), (1, 2.0 + 1e-6, "hr", 200.0)])
    s = build_screens(ev, _stays())
    assert s.loc[s.hours_since_admit == 2, "hr"].item() == 80
    assert s.loc[s.hours_since_admit == 3, "hr"].item() == 200


def test_grid_starts_at_first_event_and_pre_admission_values_count():
    ev = _events([(1, -5.0, "crea", 1.1), (1, 3.5, "hr", 70.0)])
    s = build_screens(ev, _stays())
    assert s.hours_since_admit.iloc[0] == 1.0
    assert s.crea.iloc[0] == 1.1 and s.crea_age_h.iloc[0] == pytest.approx(6.0)
    ev2 = _events([(1, 3.5, "hr", 70.0)])
    assert build_screens(ev2, _stays()).hours_since_admit.iloc[0] == 4.0


def test_until_onset_and_labels():
    ev = _events([(1, 0.5, "hr", 80.0), (2, 0.5, "hr", 80.0)])
    stays = _stays(n_hours=(60, 60), onset=(50, None))
    s = build_screens(ev, stays, horizon_h=48)
    s1 = s[s.stay_id == 1]
    assert s1.hours_since_admit.max() == 49  # screens at/after onset are excluded
    assert s1.onset_in_h.tolist()[:2] == [49.0, 48.0]
    assert s1.label.tolist()[:3] == [0, 1, 1]
    assert s[s.stay_id == 2].label.sum() == 0 and s[s.stay_id == 2].onset_in_h.isna().all()
    full = build_screens(ev, stays, until_onset=False)
    assert full[full.stay_id == 1].hours_since_admit.max() == 60
    assert add_labels(full.copy(), 6).label.sum() == 6


def test_events_after_discharge_not_screened_but_counted():
    ev = _events([(1, 1.0, "hr", 80.0), (1, 30.0, "hr", 99.0)])
    s = build_screens(ev, _stays())
    assert len(s) == 10 and 99 not in s.hr.tolist()
    assert s.attrs["build_report"]["events_after_discharge_not_screened"] == 1


def test_bad_input_errors():
    ev = _events([(7, 1.0, "hr", 80.0)])
    with pytest.raises(SchemaError, match="stay_id 7"):
        build_screens(ev, _stays())
    with pytest.raises(SchemaError, match="unknown concept"):
        build_screens(_events([(1, 1.0, "hr", 80.0)]), _stays(), concepts=["heart_rate"])
    with pytest.raises(SchemaError, match=r"events: missing column\(s\) \['time'\] to build screens"):
        build_screens(_events([(1, 1.0, "hr", 80.0)]).drop(columns="time"), _stays())
    with pytest.raises(SchemaError, match=r"stays: missing column\(s\) \['admit_time'\] to build screens"):
        build_screens(_events([(1, 1.0, "hr", 80.0)]), _stays().drop(columns="admit_time"))
    with pytest.raises(SchemaError, match=r"cxr: missing column\(s\) \['time'\]"):
        build_screens(_events([(1, 1.0, "hr", 80.0)]), _stays(), pd.DataFrame({"stay_id": [1]}))
    with pytest.raises(SchemaError, match="stays: duplicate stay_id 1"):
        build_screens(_events([(1, 1.0, "hr", 80.0)]), pd.concat([_stays(), _stays()]))


def test_cxr_carried_with_age():
    ev = _events([(1, 0.5, "hr", 80.0)])
    cxr = pd.DataFrame({"study_id": [1, 2], "subject_id": [101, 101], "stay_id": [1, 1],
                        "time": [T0 + 2.5 * H, T0 + 6 * H], "image_path": [None, None],
                        "cxr_consolidation": [0.9, 0.2]})
    s = build_screens(ev, _stays(), cxr)
    assert s.cxr_consolidation.isna().tolist()[:2] == [True, True]
    assert s.cxr_consolidation.tolist()[2:7] == [0.9, 0.9, 0.9, 0.2, 0.2]
    np.testing.assert_allclose(s.cxr_age_h[2:7], [0.5, 1.5, 2.5, 0.0, 1.0])


event_rows = st.lists(
    st.tuples(st.integers(1, 3), st.floats(-3, 14, allow_nan=False), st.sampled_from(["hr", "temp", "lact"]),
              st.floats(30, 40, allow_nan=False)),
    min_size=1, max_size=40)


@settings(max_examples=60, deadline=None)
@given(event_rows)
def test_leakage_rule_against_brute_force(rows):
    """Every screen value is the last event with time <= screen_time, and nothing later."""
    ev = _events(rows)
    stays = _stays(n_hours=(12, 12, 12), onset=(None, 8.5, None))
    s = build_screens(ev, stays, until_onset=False)
    for _, scr in s.iterrows():
        seen = ev[(ev.stay_id == scr.stay_id) & (ev.time <= scr.screen_time)]
        for c in ("hr", "temp", "lact"):
            if c not in s.columns:
                continue
            sc = seen[seen.concept == c]
            if sc.empty:
                assert np.isnan(scr[c]) and np.isnan(scr[f"{c}_age_h"])
            else:
                last = sc.sort_values("time", kind="stable").iloc[-1]
                assert scr[c] == last.numeric_value
                assert scr[f"{c}_age_h"] == pytest.approx((scr.screen_time - last.time) / H)
        prev = scr.screen_time - H
        fresh = ev[(ev.stay_id == scr.stay_id) & (ev.time <= scr.screen_time) & (ev.time > prev)]
        # the first screen of a stay also sees everything registered before it
        if scr.hours_since_admit == s[s.stay_id == scr.stay_id].hours_since_admit.min():
            fresh = ev[(ev.stay_id == scr.stay_id) & (ev.time <= scr.screen_time)]
        assert bool(scr.new_data) == (not fresh.empty)
