"""Subgroup definitions, per-subgroup metric runs (with a stub metric) and sensitivity helpers."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
from sklearn.metrics import roc_auc_score

from evaluation.sensitivity import alternative_outcome, protocol_sensitivity, sensitivity_grid
from evaluation.subgroups import define_subgroups, run_by_subgroup

T = pd.Timestamp("2022-01-01")
H = pd.Timedelta(hours=1)
D = pd.Timedelta(days=1)


@pytest.fixture
def tables():
    stays = pd.DataFrame({
        "stay_id": [1, 2, 3, 4, 5, 6],
        "admit_time": [T] * 6,
        "hospital_admit_time": [T - 3 * D, T, T, pd.NaT, T, T],
        "discharge_time": [T + 1 * D, T + 2 * D, T + 2.5 * D, T + 7 * D, T + 12 * D, T + 10 * D],
        "department": ["ICU", "ICU", "ward", "ward", "ICU", None],
        "sepsis": [True, True, False, True, False, True],
        "onset_time": [T + 20 * H, T + 40 * H, pd.NaT, T + 100 * H, pd.NaT, T + 30 * H],
        "death": [True, False, False, None, False, True],
        "bsi": [True, False, False, True, True, None],
        "surgery_time": [pd.NaT, T + 10 * H, pd.NaT, pd.NaT, T + 30 * H, pd.NaT],
        "onset_setting": [None, None, None, None, None, "hospital"],
    })
    rows = []
    for sid, n in zip(stays["stay_id"], [19, 39, 60, 99, 130, 29]):
        for h in range(1, n + 1):
            rows.append((sid, T + h * H, float(h)))
    screens = pd.DataFrame(rows, columns=["stay_id", "screen_time", "hours_since_admit"])
    onset = screens["stay_id"].map(stays.set_index("stay_id")["onset_time"])
    screens["onset_in_h"] = (onset - screens["screen_time"]) / H
    screens["label"] = ((screens["onset_in_h"] > 0) & (screens["onset_in_h"] <= 12)).astype(int)
    rng = np.random.default_rng(0)
    risk = screens["label"] * 0.5 + rng.uniform(0, 0.6, len(screens))
    preds = screens[["stay_id", "screen_time"]].assign(model="m", risk=risk, fold=0, split="test")
    return stays, screens, preds


def test_definitions(tables):
    stays, screens, _ = tables
    sg = define_subgroups(stays, screens)
    assert set(sg) == {"episode_length", "department", "survival", "bsi", "onset_setting", "admission_day", "surgery",
                       "surgical"}
    assert sg["surgical"].labels.tolist() == ["non-surgical", "surgical", "non-surgical", "non-surgical", "surgical",
                                              "non-surgical"]
    assert sg["episode_length"].labels.tolist() == ["0-2 d", "0-2 d", "2-5 d", "5-10 d", ">10 d", "5-10 d"]
    assert sg["episode_length"].levels == ["0-2 d", "2-5 d", "5-10 d", ">10 d"]
    assert sg["survival"].labels.tolist() == ["non-survivor", "survivor", "survivor", None, "survivor", "non-survivor"]
    # positive-only: non-septic stays (3, 5) and unknown bsi (6) are unlabelled
    assert sg["bsi"].kind == "positive"
    assert sg["bsi"].labels.tolist() == ["BSI", "no BSI", None, "BSI", None, None]
    # 4-day rule from hospital admission (stay 1 admitted to hospital 3 days before: 72 + 20 h >= 96 h? no)
    assert sg["onset_setting"].labels.tolist() == ["community", "community", None, "hospital", None, "hospital"]
    day = sg["admission_day"].labels
    assert day[screens["hours_since_admit"] == 24].unique().tolist() == ["1"]
    assert day[screens["hours_since_admit"] == 25].unique().tolist() == ["2"]
    assert day[screens["hours_since_admit"] == 121].unique().tolist() == [">5"]
    assert sg["admission_day"].levels == ["1", "2", "3", "4", "5", ">5"]
    surg = sg["surgery"].labels
    s2 = surg[screens["stay_id"] == 2]
    assert s2.iloc[:9].eq("pre-surgery").all() and s2.iloc[9:].eq("post-surgery").all()  # surgery at hour 10
    assert surg[screens["stay_id"] == 1].eq("no surgery").all()


def test_age_sex_and_source(tables):
    stays, _, _ = tables
    st = stays.assign(age=[15.0, 44.9, 45.0, 79.9, 80.0, None], sex=["F", "M", "F", None, "M", "F"],
                      source=["physionet2019"] * 3 + ["mimic3"] * 3)
    sg = define_subgroups(st)
    assert sg["age_band"].labels.tolist() == ["< 45", "< 45", "45-64", "65-79", ">= 80", None]
    assert sg["age_band"].levels == ["< 45", "45-64", "65-79", ">= 80"]
    assert sg["sex"].levels == ["F", "M"] and sg["source"].levels == ["mimic3", "physionet2019"]
    assert "source" not in define_subgroups(st.assign(source="physionet2019"))  # one source: no subgroup


def test_four_day_rule_threshold(tables):
    stays, _, _ = tables
    st = stays.assign(hospital_admit_time=T - 4 * D + 20 * H)  # stay 1 onset exactly 96 h after
    assert define_subgroups(st)["onset_setting"].labels.iloc[0] == "hospital"
    assert define_subgroups(st, hospital_onset_h=97)["onset_setting"].labels.iloc[0] == "community"


def test_missing_fields_leave_definitions_out(tables):
    stays, _, _ = tables
    sg = define_subgroups(stays[["stay_id", "sepsis", "department"]])
    assert set(sg) == {"department"}


def _counts(pred, scr, st):
    return {"stays": len(st), "screens": len(scr), "preds": len(pred)}


def test_run_by_subgroup_with_stub_metric(tables):
    stays, screens, preds = tables
    r = run_by_subgroup(_counts, preds, screens, stays)
    ov = r[r["subgroup"] == "overall"].iloc[0]
    assert ov["stays"] == 6 and ov["screens"] == len(screens) == ov["n_screens"]
    dep = r[r["subgroup"] == "department"].set_index("level")
    assert dep.loc["ICU", "stays"] == 3 and dep.loc["ward", "stays"] == 2
    assert dep.loc["ICU", "n_septic"] == 2
    # positive kind: BSI level = septic stays 1, 4 plus the shared non-septic stays 3, 5
    bsi = r[r["subgroup"] == "bsi"].set_index("level")
    assert bsi.loc["BSI", "stays"] == 4 and bsi.loc["BSI", "n_septic"] == 2
    assert bsi.loc["no BSI", "stays"] == 3
    # screen kind: day 1 screens of every stay
    d1 = r[(r["subgroup"] == "admission_day") & (r["level"] == "1")].iloc[0]
    assert d1["screens"] == d1["preds"] == 19 + 5 * 24
    pre = r[(r["subgroup"] == "surgery") & (r["level"] == "pre-surgery")].iloc[0]
    assert pre["screens"] == 9 + 29 and pre["stays"] == 2


def test_metric_errors_are_noted_or_raised(tables):
    stays, screens, preds = tables

    def auroc(pred, scr, st):
        d = pred.merge(scr[["stay_id", "screen_time", "label"]], on=["stay_id", "screen_time"])
        if d["label"].nunique() < 2:
            raise ValueError("AUROC needs both outcomes; only one class here")
        return roc_auc_score(d["label"], d["risk"])

    r = run_by_subgroup(auroc, preds, screens, stays)
    ward = r[(r["subgroup"] == "department") & (r["level"] == "ward")].iloc[0]
    assert ward["note"] == "" and 0.5 < ward["value"] <= 1
    d5 = r[(r["subgroup"] == "admission_day") & (r["level"] == ">5")].iloc[0]  # only non-septic screens
    assert "one class" in d5["note"] and np.isnan(d5["value"])
    with pytest.raises(ValueError, match="metric failed on subgroup [a-z_]+=.*only one class"):
        run_by_subgroup(auroc, preds, screens, stays, errors="raise")


def test_frame_returning_metric(tables):
    stays, screens, preds = tables
    preds2 = pd.concat([preds, preds.assign(model="news2", risk=1.0)])
    per_model = lambda p, s, st: p.groupby("model")["risk"].size().rename("n").reset_index()
    r = run_by_subgroup(per_model, preds2, screens, stays,
                        subgroups={k: v for k, v in define_subgroups(stays).items() if k == "survival"})
    assert r.columns[:6].tolist() == ["subgroup", "level", "n_stays", "n_septic", "n_screens", "note"]
    assert r[(r["level"] == "survivor")]["model"].tolist() == ["m", "news2"]
    assert len(r) == 2 * 3  # overall + two levels, one row per model


def test_sensitivity_grid():
    calls = []

    def evaluate(window_h, silencing_h, scale):
        calls.append((window_h, silencing_h))
        return {"a": window_h * scale, "b": silencing_h}

    g = sensitivity_grid(evaluate, scale=2)
    assert len(g) == 9 and calls[0] == (12.0, 12.0)
    assert g.columns.tolist() == ["window_h", "silencing_h", "a", "b"]
    assert g[(g["window_h"] == 24) & (g["silencing_h"] == 48)][["a", "b"]].values.tolist() == [[48, 48]]


def test_alternative_outcome(tables):
    stays, screens, _ = tables
    st = stays.assign(sepsis_label_time=stays["onset_time"] - 6 * H)
    st2, sc2 = alternative_outcome(st, screens, horizon_h=12)
    assert (st2["onset_time"] == st["sepsis_label_time"]).all() or st2["onset_time"].isna().equals(
        st["sepsis_label_time"].isna())
    s1 = sc2[sc2["stay_id"] == 1]
    assert s1["hours_since_admit"].max() == 13  # new onset at 14 h: screens at or after it dropped
    assert s1["label"].sum() == 12 and s1.loc[s1["hours_since_admit"] == 13, "onset_in_h"].item() == 1.0
    assert len(sc2[sc2["stay_id"] == 3]) == 60  # non-septic untouched
    with pytest.raises(ValueError, match="sepsis_label_time"):
        alternative_outcome(stays, screens)


def test_errors(tables):
    stays, screens, preds = tables
    with pytest.raises(ValueError, match="duplicate stay_id"):
        define_subgroups(pd.concat([stays, stays.head(1)]))
    with pytest.raises(ValueError, match="errors must be"):
        run_by_subgroup(_counts, preds, screens, stays, errors="ignore")
    with pytest.raises(TypeError, match="metric returned list"):
        run_by_subgroup(lambda p, s, st: [1], preds, screens, stays)


def test_protocol_sensitivity_monotone_in_window(tables):
    stays, screens, preds = tables
    screens = screens.assign(new_data=True)
    g = protocol_sensitivity({"m": {"hi": 0.7}}, preds, screens, stays, silencing_h=(12.0, 48.0))
    assert len(g) == 6 and g.columns[:2].tolist() == ["window_h", "silencing_h"]
    assert g.columns.tolist().count("window_h") == 1
    for s_h, grp in g.groupby("silencing_h"):
        sens = grp.sort_values("window_h")["sensitivity"].to_numpy()
        assert np.all(np.diff(sens) >= 0)  # a wider window can only turn alarms true
    # silencing never adds alarms
    a = g.set_index(["window_h", "silencing_h"])["n_alarms"]
    assert all(a[(w, 48.0)] <= a[(w, 12.0)] for w in (12.0, 24.0, 48.0))
