import numpy as np
import pandas as pd
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from ehr.schema import SchemaError
from gbdt._demo import demo_screens
from gbdt.features import REQUIRED_COLUMNS, ScreenFeatures


def test_same_information_features_copy_screens(tiny_screens):
    f = ScreenFeatures().fit(tiny_screens)
    X = f.transform(tiny_screens)
    assert f.concepts_ == ["c0", "c1", "c2", "c3"]
    assert f.cxr_columns_ == ["cxr_consolidation", "cxr_age_h"]
    assert list(X.columns) == ["c0", "c0_age_h", "c1", "c1_age_h", "c2", "c2_age_h", "c3", "c3_age_h",
                               "cxr_consolidation", "cxr_age_h", "age", "sex", "department",
                               "hours_since_admit"]
    assert (X.dtypes == "float32").all()
    np.testing.assert_allclose(X["c1_age_h"], tiny_screens["c1_age_h"].astype("float32"))
    np.testing.assert_allclose(X["hours_since_admit"], tiny_screens["hours_since_admit"])


def test_categories_encoded_deterministically(hand_screens):
    f = ScreenFeatures().fit(hand_screens)
    assert f.encodings_ == {"sex": ["F", "M"], "department": ["SICU"]}
    new = hand_screens.copy()
    new["department"] = ["MICU"] + ["SICU"] * (len(new) - 1)  # MICU unseen at fit time
    X = f.transform(new)
    assert np.isnan(X["department"].iloc[0]) and (X["department"].iloc[1:] == 0).all()
    np.testing.assert_array_equal(X["sex"], np.where(new["sex"] == "M", 1.0, 0.0))
    # refitting on shuffled rows gives the same encodings (sorted, not first-seen order)
    assert ScreenFeatures().fit(hand_screens.iloc[::-1]).encodings_ == f.encodings_


def test_trend_features_by_hand(hand_screens):
    X = ScreenFeatures(trend=True).fit_transform(hand_screens)
    X.index = pd.MultiIndex.from_arrays([hand_screens["stay_id"],
                                         hand_screens["hours_since_admit"].astype(int)])
    # stay 1 hr: 80 @1, 100 @2, (carried @3), 100 re-measured @4, 70 measured @7 (screen @8)
    assert np.isnan(X.loc[(1, 1), "hr_delta"])
    assert X.loc[(1, 2), "hr_delta"] == 20.0
    assert X.loc[(1, 3), "hr_delta"] == 20.0          # carried forward with the value
    assert X.loc[(1, 4), "hr_delta"] == 0.0           # a re-measurement with the same value
    assert X.loc[(1, 8), "hr_delta"] == -30.0
    # stay 2 is separate: its first value has no previous one, and hour 2 still carries it
    assert np.isnan(X.loc[(2, 1), "hr_delta"]) and np.isnan(X.loc[(2, 2), "hr_delta"])
    # windows (t - w, t] over the stay's screens: at hour 8 the 6 h window holds hours 3, 4, 8
    assert X.loc[(1, 8), "hr_min_6h"] == 70.0 and X.loc[(1, 8), "hr_max_6h"] == 100.0
    assert X.loc[(1, 8), "hr_min_24h"] == 70.0 and X.loc[(1, 4), "hr_min_24h"] == 80.0
    assert X.loc[(1, 3), "lact_min_6h"] == 2.0 and X.loc[(1, 8), "lact_min_6h"] == 2.0
    assert np.isnan(X.loc[(1, 1), "lact_max_24h"])    # never measured yet: no back-fill
    assert X.loc[(2, 2), "lact_max_6h"] == 1.0


def _reference_trends(screens, concept, w):
    """Independent slow implementation: per stay, pandas time-based rolling and explicit loops."""
    out_min, out_max, out_delta = {}, {}, {}
    for _, g in screens.sort_values("screen_time").groupby("stay_id"):
        s = g.set_index("screen_time")[concept]
        r = s.rolling(f"{w}h", closed="right")
        for idx, mn, mx in zip(g.index, r.min(), r.max()):
            out_min[idx], out_max[idx] = mn, mx
        prev_meas, prev_val, last_delta = None, np.nan, np.nan
        for idx, t, v, a in zip(g.index, g["screen_time"], g[concept], g[f"{concept}_age_h"]):
            if not np.isnan(a):
                meas = t - pd.Timedelta(hours=float(a))
                if meas != prev_meas:
                    last_delta = v - prev_val
                    prev_meas = meas
            out_delta[idx] = last_delta
            prev_val = v
    idx = screens.index
    return (pd.Series(out_min)[idx].to_numpy(), pd.Series(out_max)[idx].to_numpy(),
            pd.Series(out_delta)[idx].to_numpy())


def test_trend_features_match_reference_on_shuffled_gappy_rows():
    s = demo_screens(n_stays=25, seed=3, mean_hours=40)
    rng = np.random.default_rng(0)
    s = s[rng.random(len(s)) < 0.7].sample(frac=1.0, random_state=1)  # gaps + shuffled order
    X = ScreenFeatures(trend=True).fit_transform(s)
    for c in ("c0", "c3"):
        for w in (6, 24):
            mn, mx, delta = _reference_trends(s, c, w)
            np.testing.assert_allclose(X[f"{c}_min_{w}h"], mn, rtol=1e-6)
            np.testing.assert_allclose(X[f"{c}_max_{w}h"], mx, rtol=1e-6)
        # rows removed at random may hide a measurement: the reference sees the same rows
        np.testing.assert_allclose(X[f"{c}_delta"], delta, rtol=1e-5, atol=1e-4)


def _reference_baseline(screens, concept, w=24):
    """Slow reference: per stay in time order, the mean of the values in the first ``w`` h so far,
    and the number of screens in ``(t - w, t]`` where the measurement time moved."""
    dev, count = {}, {}
    for _, g in screens.sort_values("screen_time").groupby("stay_id"):
        t0, early, moves, prev_meas = g["screen_time"].iloc[0], [], [], None
        for idx, t, v, a in zip(g.index, g["screen_time"], g[concept], g[f"{concept}_age_h"]):
            if t - t0 <= pd.Timedelta(hours=w) and not np.isnan(v):
                early.append(v)
            if not np.isnan(a):
                meas = t - pd.Timedelta(hours=float(a))
                if meas != prev_meas:
                    moves.append(t)
                    prev_meas = meas
            dev[idx] = v - np.mean(early) if early else np.nan
            count[idx] = sum(t - pd.Timedelta(hours=w) < m <= t for m in moves)
    idx = screens.index
    return pd.Series(dev)[idx].to_numpy(dtype=float), pd.Series(count)[idx].to_numpy(dtype=float)


def test_baseline_features_match_reference_on_shuffled_gappy_rows():
    s = demo_screens(n_stays=25, seed=4, mean_hours=40)
    rng = np.random.default_rng(1)
    s = s[rng.random(len(s)) < 0.7].sample(frac=1.0, random_state=2)  # gaps + shuffled order
    f = ScreenFeatures(baseline=True).fit(s)
    X = f.transform(s)
    assert "c0_dev_base" in f.feature_names_ and "c0_n_24h" in f.feature_names_ and "c0_delta" not in X
    for c in ("c0", "c3"):
        dev, count = _reference_baseline(s, c)
        assert np.isfinite(dev).sum() > len(s) / 2 and count.max() > 1
        np.testing.assert_allclose(X[f"{c}_dev_base"], dev, rtol=1e-4, atol=1e-4)
        np.testing.assert_array_equal(X[f"{c}_n_24h"], count)
    # both views together give the same columns as each alone, and the state round-trips
    both = ScreenFeatures(trend=True, baseline=True).fit(s)
    Xb = both.transform(s)
    pd.testing.assert_frame_equal(Xb[X.columns], X)
    pd.testing.assert_frame_equal(Xb, ScreenFeatures.from_dict(both.to_dict()).transform(s))
    assert both.item_of("c3_dev_base") == ("c3", "c3", "c3_age_h")


@settings(max_examples=15, deadline=None)
@given(seed=st.integers(0, 10_000), cut=st.integers(1, 30))
def test_no_leakage_future_rows_do_not_change_features(seed, cut):
    s = demo_screens(n_stays=4, seed=seed, mean_hours=25)
    f = ScreenFeatures(trend=True, baseline=True).fit(s)
    past = s[s["hours_since_admit"] <= cut]
    future_changed = s.copy()
    fut = future_changed["hours_since_admit"] > cut
    future_changed.loc[fut, ["c0", "c1", "c2", "c3"]] = 1e6  # wild future values
    a = f.transform(past)
    b = f.transform(future_changed).loc[past.index]
    pd.testing.assert_frame_equal(a, b)


@pytest.mark.parametrize("col", REQUIRED_COLUMNS)
def test_missing_required_column_is_named(tiny_screens, col):
    with pytest.raises(SchemaError, match=col):
        ScreenFeatures().fit(tiny_screens.drop(columns=col))


def test_missing_fitted_concept_at_transform(tiny_screens):
    f = ScreenFeatures().fit(tiny_screens)
    with pytest.raises(SchemaError, match="c2"):
        f.transform(tiny_screens.drop(columns=["c2"]))


def test_non_numeric_concept_names_column_and_row(hand_screens):
    bad = hand_screens.copy()
    bad["hr"] = bad["hr"].astype(object)
    bad.loc[bad.index[3], "hr"] = "high"
    with pytest.raises(SchemaError, match=r"'hr'.*row 3.*'high'"):
        ScreenFeatures().fit_transform(bad)


def test_duplicate_screen_is_an_error(hand_screens):
    dup = pd.concat([hand_screens, hand_screens.iloc[[2]]], ignore_index=True)
    with pytest.raises(SchemaError, match="duplicate"):
        ScreenFeatures(trend=True).fit_transform(dup)


def test_state_round_trips(tiny_screens):
    f = ScreenFeatures(trend=True).fit(tiny_screens)
    g = ScreenFeatures.from_dict(f.to_dict())
    pd.testing.assert_frame_equal(f.transform(tiny_screens), g.transform(tiny_screens))


def test_labels_and_outcomes_never_become_features(tiny_screens):
    s = tiny_screens.assign(sepsis_label=tiny_screens["label"], onset_in_h_age_h=1.0)
    names = ScreenFeatures(trend=True).fit(s).feature_names_
    leaky = {"label", "onset_in_h", "sepsis_label", "onset_in_h_age_h", "new_data", "subject_id",
             "stay_id", "screen_time"}
    assert not leaky & set(names)
    assert not any(n.startswith("onset_in_h") for n in names)
