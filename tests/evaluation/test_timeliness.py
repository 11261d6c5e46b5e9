"""Timeliness: lead times of first true alarms, summaries, Mann-Whitney U comparisons."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
from scipy import stats

from evaluation.timeliness import alarm_lead_times, compare_timeliness, summarize_timeliness, timeliness_table

T = pd.Timestamp("2021-05-01")
H = pd.Timedelta(hours=1)


@pytest.fixture
def case():
    # stay 1: septic, onset 100 h, antibiotic 97 h; stay 2: septic, onset 50 h, no antibiotic time;
    # stay 3: not septic; stay 4: septic, onset 30 h, only an alarm 60 h before (outside 48 h).
    stays = pd.DataFrame({
        "stay_id": [1, 2, 3, 4],
        "onset_time": [T + 100 * H, T + 50 * H, pd.NaT, T + 30 * H],
        "antibiotic_time": [T + 97 * H, pd.NaT, pd.NaT, pd.NaT],
    })
    rows = [
        # model a: stay 1 alarms at 40 h (60 h before: false), 70 h (30 h before: first true), 90 h (true)
        (1, 40, "a", True, False), (1, 70, "a", True, False), (1, 80, "a", False, True), (1, 90, "a", True, False),
        # stay 2: a silenced crossing at 10 h must not count; fired at 45 h (5 h before onset)
        (2, 10, "a", False, True), (2, 45, "a", True, False),
        (3, 5, "a", True, False),  # non-septic: false alarm
        (4, -30, "a", True, False),  # 60 h before onset: outside window
        # model b (news2): stay 1 at 95 h (5 h before), stay 2 at 48 h (2 h before)
        (1, 95, "news2", True, False), (2, 48, "news2", True, False),
    ]
    alarms = pd.DataFrame([{"stay_id": s, "screen_time": T + h * H, "model": m, "threshold": 0.5 if m == "a" else 5.0,
                            "fired": f, "silenced": sl} for s, h, m, f, sl in rows])
    return alarms, stays


def test_first_true_alarm_lead_times(case):
    alarms, stays = case
    lt = alarm_lead_times(alarms, stays, window_h=48)
    a = lt[lt["model"] == "a"].set_index("stay_id")
    assert sorted(a.index) == [1, 2]
    assert a.loc[1, "hours_before_onset"] == 30.0  # 100 - 70, not the 40 h alarm (60 h before)
    assert a.loc[1, "hours_before_antibiotic"] == 27.0  # 97 - 70
    assert a.loc[2, "hours_before_onset"] == 5.0  # the silenced 10 h crossing is ignored
    assert np.isnan(a.loc[2, "hours_before_antibiotic"])
    n = lt[lt["model"] == "news2"].set_index("stay_id")["hours_before_onset"]
    assert n.to_dict() == {1: 5.0, 2: 2.0}


def test_all_true_alarms_and_window(case):
    alarms, stays = case
    lt = alarm_lead_times(alarms, stays, window_h=48, first_only=False)
    a = lt[(lt["model"] == "a") & (lt["stay_id"] == 1)]
    assert a["hours_before_onset"].tolist() == [30.0, 10.0]
    # a 12 h window keeps only the alarm 10 h before onset for stay 1 (and 5 h for stay 2)
    lt12 = alarm_lead_times(alarms, stays, window_h=12)
    assert lt12[lt12["model"] == "a"]["hours_before_onset"].tolist() == [10.0, 5.0]
    # widening the window to 60 h brings in the 60 h-before alarms (stay 1 and 4)
    lt60 = alarm_lead_times(alarms, stays, window_h=60)
    a60 = lt60[lt60["model"] == "a"].set_index("stay_id")["hours_before_onset"]
    assert a60.to_dict() == {1: 60.0, 2: 5.0, 4: 60.0}


def test_alarm_exactly_at_onset_is_not_true():
    stays = pd.DataFrame({"stay_id": [1], "onset_time": [T + 10 * H]})
    alarms = pd.DataFrame({"stay_id": [1, 1], "screen_time": [T + 10 * H, T - 38 * H], "model": "m", "threshold": 1.0,
                           "fired": True, "silenced": False})
    lt = alarm_lead_times(alarms, stays, window_h=48, first_only=False)
    assert lt["hours_before_onset"].tolist() == [48.0]  # 48 h before is inside (0, 48]; 0 h is not


def test_summary_values(case):
    alarms, stays = case
    lt = alarm_lead_times(alarms, stays, window_h=48)
    s = summarize_timeliness(lt).set_index("model")
    assert s.loc["a", "n_onset"] == 2
    assert s.loc["a", "mean_onset_h"] == 17.5
    assert s.loc["a", "median_onset_h"] == 17.5
    assert s.loc["a", "q1_onset_h"] == pytest.approx(11.25)  # numpy linear percentile of [5, 30]
    assert s.loc["a", "q3_onset_h"] == pytest.approx(23.75)
    assert s.loc["a", "n_antibiotic"] == 1 and s.loc["a", "median_antibiotic_h"] == 27.0
    assert s.loc["news2", "n_antibiotic"] == 1 and s.loc["news2", "mean_antibiotic_h"] == 2.0


def test_mann_whitney_matches_scipy():
    rng = np.random.default_rng(3)
    x, y = rng.uniform(0, 48, 17), rng.uniform(0, 30, 11)
    lt = pd.DataFrame({"model": ["cpn"] * 17 + ["news2"] * 11, "threshold": 0.3,
                       "hours_before_onset": np.concatenate([x, y])})
    r = compare_timeliness(lt, reference="news2")
    ref = stats.mannwhitneyu(x, y, alternative="two-sided")
    assert len(r) == 1
    assert r["u_statistic"].iloc[0] == pytest.approx(ref.statistic)
    assert r["p_value"].iloc[0] == pytest.approx(ref.pvalue)
    assert r["n"].iloc[0] == 17 and r["n_reference"].iloc[0] == 11


def test_compare_pairs_operating_points():
    lt = pd.DataFrame({
        "model": ["cpn", "cpn", "cpn", "cpn", "news2", "news2", "news2", "news2"],
        "operating_point": ["n5", "n5", "n7", "n7"] * 2,
        "threshold": [0.2, 0.2, 0.6, 0.6, 5, 5, 7, 7],
        "hours_before_onset": [20.0, 30, 5, 6, 1, 2, 3, 4],
    })
    r = compare_timeliness(lt).set_index("operating_point")
    assert r.loc["n5", "reference_threshold"] == 5 and r.loc["n7", "reference_threshold"] == 7
    assert r.loc["n5", "u_statistic"] == 4.0  # both cpn values exceed both news2 values
    assert r.loc["n7", "median_reference_h"] == 3.5


def test_timeliness_table_and_empty(case):
    alarms, stays = case
    t = timeliness_table(alarms, stays, window_h=48)
    assert set(t["model"]) == {"a", "news2"}
    assert t.set_index("model").loc["a", "p_value_vs_reference"] == pytest.approx(
        stats.mannwhitneyu([30.0, 5.0], [5.0, 2.0]).pvalue)
    none = alarms.assign(fired=False)
    assert alarm_lead_times(none, stays).empty
    assert timeliness_table(none, stays).empty


def test_errors(case):
    alarms, stays = case
    with pytest.raises(ValueError, match="stay_id 99 that is not in stays"):
        alarm_lead_times(pd.concat([alarms, alarms.head(1).assign(stay_id=99)]), stays)
    with pytest.raises(ValueError, match=r"alarms.*: missing column\(s\) \['fired'\]"):
        alarm_lead_times(alarms.drop(columns="fired"), stays)
    with pytest.raises(ValueError, match="column 'fired' is null at row 0"):
        alarm_lead_times(alarms.assign(fired=None), stays)
    with pytest.raises(ValueError, match="window_h"):
        alarm_lead_times(alarms, stays, window_h=0)
    with pytest.raises(ValueError, match="duplicate stay_id"):
        alarm_lead_times(alarms, pd.concat([stays, stays.head(1)]))
