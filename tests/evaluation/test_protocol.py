"""Screening protocol: hand-checked alarms, silencing, windows, and property tests."""

from __future__ import annotations

import time

import numpy as np
import pandas as pd
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from ehr.schema import validate
from evaluation.protocol import prepare_screens, run_protocol, silence

T0 = pd.Timestamp("2021-01-01")


def _t(h):
    return T0 + pd.Timedelta(hours=h)


def _tables(rows, onsets, new_data=None):
    """rows: (stay, hour, risk); onsets: {stay: onset hour or None}."""
    pred = pd.DataFrame({
        "stay_id": [r[0] for r in rows], "screen_time": [_t(r[1]) for r in rows], "model": "m",
        "risk": [float(r[2]) for r in rows], "fold": np.nan, "split": "test",
    })
    stays = pd.DataFrame({"stay_id": list(onsets),
                          "onset_time": [pd.NaT if v is None else _t(v) for v in onsets.values()]})
    screens = pd.DataFrame({"stay_id": pred["stay_id"], "screen_time": pred["screen_time"],
                            "new_data": True if new_data is None else new_data})
    return pred, stays, screens


def test_hand_checked_alarms_and_outcomes():
    rows = [(1, h, 0.9) for h in (1, 2, 30, 49, 50)] + [(1, 80, 0.9)] + \
           [(2, 1, 0.2), (2, 10, 0.7), (2, 70, 0.7)] + [(3, 5, 0.1)]
    pred, stays, screens = _tables(rows, {1: 60, 2: None, 3: 20})
    res = run_protocol(pred, stays, screens, threshold=0.5)
    validate(res.alarms, "alarms")
    a = res.alarms
    # stay 1: screen at 80 is after onset (excluded); fires at 1, silenced 2, 30, 49 (<1+48), fires 50?
    # 49 < 49 is false -> 49 fires (exactly t+48), then 50 silenced.
    assert a.loc[a.stay_id == 1, "fired"].tolist() == [True, False, False, True, False]
    assert (a["silenced"] == ~a["fired"]).all()
    assert a.loc[a.stay_id == 2, "fired"].tolist() == [True, True]          # 70 - 10 = 60 >= 48
    ao = res.alarm_outcomes
    assert ao["true_positive"].tolist() == [False, True, False, False]       # 59 h, 11 h, non-septic
    so = res.stay_outcomes.set_index("stay_id")
    assert so.loc[1, "detected"] and not so.loc[3, "detected"]
    assert so.loc[1, "first_true_alarm_h"] == 11
    s = res.summary
    assert s["n_alarms"] == 4 and s["n_true_alarms"] == 1 and s["n_false_alarms"] == 3
    assert s["n_septic_screenable"] == 2 and s["sensitivity"] == 0.5
    assert s["alarms_per_admission"] == pytest.approx(4 / 3)
    assert s["false_alarms_per_true_alarm"] == 3
    assert s["screens_per_admission"] == pytest.approx(9 / 3)   # 5 + 3 + 1 eligible screens


def test_window_and_new_data():
    rows = [(1, 1, 0.9), (1, 40, 0.9)]
    pred, stays, screens = _tables(rows, {1: 50}, new_data=[True, False])
    res = run_protocol(pred, stays, screens, threshold=0.5, window_h=48)
    assert res.summary["n_screens"] == 1 and res.summary["n_true_alarms"] == 0   # 49 h before onset
    res = run_protocol(pred, stays, screens, threshold=0.5, new_data_only=False, silencing_h=12)
    assert res.summary["n_true_alarms"] == 1
    res = run_protocol(pred, stays, screens, threshold=0.5, window_h=49)
    assert res.summary["n_true_alarms"] == 1


def test_unscreenable_septic_stay_excluded_from_sensitivity():
    rows = [(1, 5, 0.1), (2, 3, 0.9)]
    pred, stays, screens = _tables(rows, {1: 2, 2: 10})
    res = run_protocol(pred, stays, screens, threshold=0.5)
    assert res.summary["n_septic"] == 2 and res.summary["n_septic_screenable"] == 1
    assert res.summary["n_septic_unscreenable"] == 1 and res.summary["sensitivity"] == 1.0


def test_bad_input_errors():
    pred, stays, screens = _tables([(1, 1, 0.9), (1, 2, 0.3)], {1: None})
    with pytest.raises(ValueError, match="duplicate"):
        run_protocol(pd.concat([pred, pred.iloc[:1]]), stays, screens, threshold=0.5)
    with pytest.raises(ValueError, match="not in stays"):
        run_protocol(pred.assign(stay_id=7), stays, screens, threshold=0.5)
    with pytest.raises(ValueError, match="not in predictions"):
        run_protocol(pred, stays, screens, threshold=0.5, model="cpn")
    with pytest.raises(ValueError, match="not a screen"):
        run_protocol(pred, stays, screens.iloc[:1], threshold=0.5)
    with pytest.raises(ValueError, match="pass model="):
        run_protocol(pd.concat([pred, pred.assign(model="x")]), stays, screens, threshold=0.5)


def _reference_silence(codes, times, s):
    fired, last = [], {}
    for c, t in zip(codes, times):
        ok = c not in last or s <= 0 or t >= last[c] + s
        fired.append(ok)
        if ok:
            last[c] = t
    return np.array(fired, dtype=bool)


candidates = st.lists(st.tuples(st.integers(0, 4), st.integers(0, 200)), min_size=0, max_size=60,
                      unique=True).map(sorted)


@given(candidates, st.sampled_from([0, 6, 12, 24, 48]))
def test_silence_matches_sequential_reference(cands, s):
    codes = np.array([c for c, _ in cands], dtype=int)
    times = np.array([t for _, t in cands], dtype=float)
    np.testing.assert_array_equal(silence(codes, times, s), _reference_silence(codes, times, s))


@st.composite
def cohorts(draw):
    n_stays = draw(st.integers(1, 5))
    rows, onsets = [], {}
    for s in range(n_stays):
        hours = draw(st.lists(st.integers(1, 150), min_size=1, max_size=25, unique=True))
        for h in sorted(hours):
            rows.append((s, h, draw(st.floats(0, 1))))
        onsets[s] = draw(st.one_of(st.none(), st.integers(1, 160)))
    return _tables(rows, onsets)


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(cohorts(), st.floats(0.05, 0.95), st.sampled_from([12, 24, 48]), st.sampled_from([12, 24, 48]))
def test_protocol_properties(tables, threshold, s, w):
    pred, stays, screens = tables
    prep = prepare_screens(pred, stays, screens)
    base = run_protocol(pred, stays, screens, threshold=threshold, silencing_h=s, window_h=w, prepared=prep)
    none = run_protocol(pred, stays, screens, threshold=threshold, silencing_h=0, window_h=w, prepared=prep)
    # silencing never adds alarms: fired alarms are a subset of the candidates
    assert base.summary["n_alarms"] <= none.summary["n_alarms"] == base.summary["n_candidates"]
    assert set(map(tuple, base.alarm_outcomes[["stay_id", "screen_time"]].values)) <= \
        set(map(tuple, none.alarm_outcomes[["stay_id", "screen_time"]].values))
    # longer silencing never adds fired alarms
    for longer in (s, s + 12, 2 * s):
        assert run_protocol(pred, stays, screens, threshold=threshold, silencing_h=longer, window_h=w,
                            prepared=prep).summary["n_alarms"] <= base.summary["n_alarms"]
    # a larger window never reduces true positives (alarms) nor detected stays
    wide = run_protocol(pred, stays, screens, threshold=threshold, silencing_h=s, window_h=w + 24, prepared=prep)
    assert wide.summary["n_true_alarms"] >= base.summary["n_true_alarms"]
    assert wide.summary["n_detected"] >= base.summary["n_detected"]


def test_speed_800k_screens():
    rng = np.random.default_rng(0)
    n_stays, per = 20_000, 40
    stay = np.repeat(np.arange(n_stays), per)
    hours = np.tile(np.arange(1, per + 1), n_stays)
    pred = pd.DataFrame({"stay_id": stay, "screen_time": T0 + pd.to_timedelta(hours, unit="h"),
                         "model": "m", "risk": rng.random(len(stay)), "fold": 0, "split": "test"})
    onset = np.where(rng.random(n_stays) < 0.1, rng.integers(5, 60, n_stays), -1)
    stays = pd.DataFrame({"stay_id": np.arange(n_stays),
                          "onset_time": [_t(h) if h > 0 else pd.NaT for h in onset]})
    screens = pred[["stay_id", "screen_time"]].assign(new_data=rng.random(len(stay)) < 0.9)
    start = time.perf_counter()
    prep = prepare_screens(pred, stays, screens)
    res = run_protocol(pred, stays, screens, threshold=0.3, silencing_h=12, prepared=prep)
    elapsed = time.perf_counter() - start
    assert res.summary["n_alarms"] > 0
    assert elapsed < 20, f"protocol on {len(pred)} screens took {elapsed:.1f} s"


def test_screens_at_or_after_onset_are_excluded():
    pred, stays, screens = _tables([(1, 9, 0.1), (1, 10, 0.9), (1, 11, 0.9)], {1: 10})
    prep = prepare_screens(pred, stays, screens)
    assert prep.frame["onset_in_h"].tolist() == [1.0]
    res = run_protocol(pred, stays, screens, threshold=0.5, prepared=prep)
    assert res.summary["n_alarms"] == 0 and res.summary["sensitivity"] == 0.0
