"""ehr.trends: the compiled pass (ehr._trends_kernel) against the vectorised numpy path, bit for bit,
on random stays with irregular screen times, gaps, NaNs, repeated and carried-forward measurements
and shuffled rows; the ``names`` subset; the errors; the fallback where numba is missing. (The
numpy path itself is checked against slow per-stay references in tests/gbdt/test_features.py.)"""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from ehr import trends
from ehr.schema import SchemaError
from ehr.trends import trend_features

needs_numba = pytest.mark.skipif(trends._load() is None, reason="numba is not installed")


def random_screens(seed: int, n_stays: int = 6, concepts=("a", "b")) -> pd.DataFrame:
    """Stays of irregular screens (whole hours, odd seconds, sub-second steps), each concept measured
    now and then (fresh ages, carried-forward ones, never measured, sometimes an age that does not fit
    any measurement), values with repeats, NaNs, zeros and negatives; rows shuffled."""
    rng = np.random.default_rng(seed)
    rows = []
    for stay in rng.permutation(np.arange(1, n_stays + 1) * 7):
        n = int(rng.integers(1, 60))
        steps = rng.choice([3600.0, 1800.0, 7200.0, 1.0, 0.25, 86_400.0], size=n) * rng.choice([1, 1, 1, 1.37], size=n)
        t = pd.Timestamp("2020-01-01") + pd.to_timedelta(np.cumsum(steps) + rng.integers(0, 10_000), unit="s")
        rec = {"stay_id": np.full(n, stay), "screen_time": t}
        hours = (t - t[0]).total_seconds().to_numpy() / 3600.0
        for c in concepts:
            value = np.full(n, np.nan)
            age = np.full(n, np.nan)
            last_v, last_t = np.nan, np.nan
            for i in range(n):
                if rng.random() < 0.4:  # a new measurement, up to an hour before the screen
                    last_t = hours[i] - rng.random() * min(1.0, hours[i] - (hours[i - 1] if i else -1.0))
                    last_v = rng.choice([np.nan, 0.0, -1.5, float(rng.integers(-3, 4)), rng.normal(10, 5)])
                    if rng.random() < 0.2:
                        last_v = value[i - 1] if i else last_v  # the same value again
                if not np.isnan(last_t):
                    value[i], age[i] = last_v, hours[i] - last_t
                if rng.random() < 0.05:
                    age[i] = rng.choice([np.nan, 0.0, 3.3])  # ages that fit no measurement history
            rec[c], rec[f"{c}_age_h"] = value, age
        rows.append(pd.DataFrame(rec))
    s = pd.concat(rows, ignore_index=True)
    return s.sample(frac=1.0, random_state=seed).reset_index(drop=True) if seed % 3 else s


def assert_same(a: dict, b: dict):
    assert list(a) == list(b)
    for k in a:
        assert a[k].dtype == b[k].dtype == np.float32, k
        np.testing.assert_array_equal(a[k], b[k], err_msg=k)


@needs_numba
@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(seed=st.integers(0, 100_000), n_stays=st.integers(1, 8), counts=st.booleans(), trend=st.booleans(),
       windows=st.sampled_from([(6, 24), (1,), (2, 5, 48)]), baseline_h=st.sampled_from([None, 1, 24]))
def test_compiled_pass_equals_numpy_path(seed, n_stays, counts, trend, windows, baseline_h):
    s = random_screens(seed, n_stays)
    kw = dict(counts=counts, trend=trend, baseline_h=baseline_h)
    ref = trend_features(s, ["a", "b"], windows, backend="numpy", **kw)
    assert_same(trend_features(s, ["a", "b"], windows, backend="numba", **kw), ref)
    # any subset of the features: the same numbers, in the same order
    names = [k for k in ref if np.random.default_rng(seed).random() < 0.4]
    sub = trend_features(s, ["a", "b"], windows, backend="numba", names=names, **kw)
    assert_same(sub, {k: ref[k] for k in names})
    assert_same(trend_features(s, ["a", "b"], windows, backend="numpy", names=names, **kw), sub)


@needs_numba
def test_compiled_pass_by_hand():
    s = pd.DataFrame({"stay_id": [2, 1, 1, 1, 1], "screen_time": pd.to_datetime(
        ["2020-01-01 00:00", "2020-01-01 03:00", "2020-01-01 01:00", "2020-01-01 02:00", "2020-01-01 09:00"]),
        "hr": [70.0, 95.0, 80.0, np.nan, 60.0], "hr_age_h": [0.0, 0.0, 0.0, 1.0, 0.0]})
    t = trend_features(s, ["hr"], (6,), counts=True, backend="numba")
    # stay 1 in time order: 80 @1, the same measurement @2 (value missing), 95 @3 (its delta reads
    # the missing value before it: NaN), 60 @9 (95 left the 6 h window); stay 2 alone
    np.testing.assert_array_equal(t["hr_delta"], [np.nan, np.nan, np.nan, np.nan, -35.0])
    np.testing.assert_array_equal(t["hr_min_6h"], [70.0, 80.0, 80.0, 80.0, 60.0])
    np.testing.assert_array_equal(t["hr_max_6h"], [70.0, 95.0, 80.0, 80.0, 60.0])
    np.testing.assert_array_equal(t["hr_n_6h"], [1.0, 2.0, 1.0, 1.0, 1.0])
    assert_same(t, trend_features(s, ["hr"], (6,), counts=True, backend="numpy"))


@needs_numba
def test_windows_of_a_fraction_of_a_second_take_the_numpy_path():
    s = random_screens(4, 3)
    w = (1.0001,)  # 3600.36 s
    assert_same(trend_features(s, ["a"], w, backend="numba"), trend_features(s, ["a"], w, backend="numpy"))


def test_names_and_backend_errors():
    s = random_screens(1, 2)
    with pytest.raises(ValueError, match="unknown feature"):
        trend_features(s, ["a"], names=["a_min_6h", "b_min_6h"])
    with pytest.raises(ValueError, match="backend"):
        trend_features(s, ["a"], backend="fortran")


@pytest.mark.parametrize("backend", ["numpy", pytest.param("numba", marks=needs_numba)])
def test_duplicate_screen_is_an_error_naming_the_row(backend):
    s = pd.DataFrame({"stay_id": [1, 1, 1], "screen_time": pd.to_datetime(["2020-01-01 01:00",
                      "2020-01-01 02:00", "2020-01-01 01:00"]), "hr": [1.0, 2.0, 3.0], "hr_age_h": 0.0})
    with pytest.raises(SchemaError, match="duplicate .* at row 2"):
        trend_features(s, ["hr"], backend=backend)


def test_without_numba_the_numpy_path_answers(monkeypatch):
    s = random_screens(2, 3)
    ref = trend_features(s, ["a", "b"], counts=True, backend="numpy")
    monkeypatch.setattr(trends, "_COMPILED", False)  # as where numba cannot be imported
    monkeypatch.setattr(trends, "SMALL_TABLE", 0)
    assert_same(trend_features(s, ["a", "b"], counts=True), ref)
    with pytest.raises(RuntimeError, match="needs numba"):
        trend_features(s, ["a"], backend="numba")


def test_small_tables_take_the_numpy_path_until_the_pass_is_loaded(monkeypatch):
    monkeypatch.setattr(trends, "_COMPILED", None)
    assert trends._compiled("auto", trends.SMALL_TABLE - 1) is None
    assert trends._compiled("numpy", 10 ** 7) is None
