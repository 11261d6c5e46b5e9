"""Explained alarms: true and false ones, readable items, prior/total/needed consistent with risk and threshold."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from evaluation.explained_alarms import EXPLAINED_COLUMNS, alarm_explanations

T = pd.Timestamp("2021-03-01")
H = pd.Timedelta(hours=1)


@pytest.fixture
def tables():
    # stays 1-3 septic (onset at hour 30), 4-6 not; every stay alarms once at hour 20 with risk 0.5 + stay/100
    stays = pd.DataFrame({"stay_id": range(1, 7), "onset_time": [T + 30 * H] * 3 + [pd.NaT] * 3})
    at = T + 20 * H
    alarms = pd.DataFrame({"stay_id": range(1, 7), "screen_time": at, "model": "cpn", "threshold": 0.3,
                           "fired": True, "silenced": False, "operating_point": "news2>=5"})
    alarms = pd.concat([alarms, alarms.assign(model="lightgbm", threshold=0.4)], ignore_index=True)
    pred = pd.concat([pd.DataFrame({"stay_id": range(1, 7), "screen_time": at, "model": m, "fold": 0,
                                    "split": "test", "risk": 0.5 + np.arange(1, 7) / 100}) for m in ("cpn", "lightgbm")],
                     ignore_index=True)
    ex = []
    for sid in range(1, 7):
        for f, v, st, alone, ctx in (("temp", 38.6, "38p1to39p1", 0.3, 0.2), ("hr", 118.0, "111to131", 0.2, 0.25),
                                     ("alb", 3.9, "ge3p5", -0.1, -0.05), ("total", None, None, 0.6, None)):
            ex.append({"stay_id": sid, "screen_time": at, "model": "cpn", "feature": f, "value": v, "state": st,
                       "age_h": None if f == "total" else 2.0, "weight": None if f == "total" else 0.7,
                       "contribution": alone, "baseline": ctx})
        for f, c in (("temp", 0.4), ("resp", -0.2), ("total", 0.2)):
            ex.append({"stay_id": sid, "screen_time": at, "model": "lightgbm", "feature": f,
                       "value": None if f == "total" else 1.0, "state": None, "age_h": None, "weight": None,
                       "contribution": c, "baseline": -1.5})
    return pd.DataFrame(ex), alarms, pred, stays


def test_true_and_false_alarms_with_readable_items(tables):
    ex, alarms, pred, stays = tables
    t = alarm_explanations(ex, alarms, pred, stays, per_kind=2)
    assert list(t.columns) == list(EXPLAINED_COLUMNS)
    cpn = t[t.model == "cpn"]
    # the two highest-risk alarms of each kind: septic 3, 2 (true, 10 h before onset); non-septic 6, 5 (false)
    assert cpn.drop_duplicates("stay_id")[["stay_id", "true_alarm"]].values.tolist() == [
        [3, True], [2, True], [6, False], [5, False]]
    first = cpn[cpn.stay_id == 3]
    assert first["feature"].tolist() == ["hr", "temp", "alb"]   # by |in-context factor|
    assert first["state_label"].tolist() == ["111–130 /min", "38.1–39.0 °C", "≥ 3.5 g/dL"]
    assert first["feature_label"].iloc[1] == "Body temperature" and first["unit"].iloc[1] == "°C"
    assert first["hours_before_onset"].iloc[0] == 10.0


def test_prior_total_and_needed(tables):
    ex, alarms, pred, stays = tables
    t = alarm_explanations(ex, alarms, pred, stays, per_kind=1).drop_duplicates(["model", "stay_id"])
    for r in t.itertuples():
        if r.explanation == "bayes_factor":   # log10 odds: prior + total = posterior, prior + needed = threshold
            assert r.prior + r.total == pytest.approx(np.log10(r.risk / (1 - r.risk)))
            assert r.prior + r.needed == pytest.approx(np.log10(r.threshold / (1 - r.threshold)))
            assert r.scale == "log10"
        else:                                 # additive: the base value is the prior (natural log-odds)
            assert r.prior == -1.5 and r.scale == "ln"
            assert r.prior + r.needed == pytest.approx(np.log(r.threshold / (1 - r.threshold)))
    lgb = alarm_explanations(ex, alarms, pred, stays, per_kind=1)
    assert lgb.loc[lgb.model == "lightgbm", "in_context"].isna().all()


def test_nothing_to_explain():
    empty = alarm_explanations(pd.DataFrame(columns=["stay_id", "screen_time", "model", "feature", "contribution",
                                                     "baseline"]),
                               pd.DataFrame(columns=["stay_id", "screen_time", "model", "threshold", "fired"]),
                               pd.DataFrame(columns=["stay_id", "screen_time", "model", "risk"]),
                               pd.DataFrame(columns=["stay_id", "onset_time"]))
    assert empty.empty and list(empty.columns) == list(EXPLAINED_COLUMNS)
