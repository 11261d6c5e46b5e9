"""Sepsis-3 labels: suspicion of infection, hourly SOFA and onset, on tiny hand-made events."""

from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from ehr.labels import definition_params, label_stays, sofa_hourly, sofa_onset, suspected_infection

T0 = pd.Timestamp("2100-01-01 00:00")


def h(x: float) -> pd.Timestamp:
    return T0 + pd.Timedelta(hours=x)


def stays_table(los_h: float = 96, stay_id: int = 1) -> pd.DataFrame:
    return pd.DataFrame({"subject_id": [stay_id], "stay_id": [stay_id], "admit_time": [T0],
                         "discharge_time": [h(los_h)]})


def ev(rows) -> pd.DataFrame:
    """rows: (hour, code, value[, concept]) for stay 1; codes without a concept get concept None."""
    out = []
    for r in rows:
        hour, code, value = r[:3]
        concept = r[3] if len(r) > 3 else None
        out.append({"subject_id": 1, "stay_id": 1, "time": h(hour), "code": code, "numeric_value": value,
                    "text_value": None, "unit": None, "concept": concept})
    return pd.DataFrame(out, columns=["subject_id", "stay_id", "time", "code", "numeric_value",
                                      "text_value", "unit", "concept"])


def sofa_at(events, hour, component="sofa", los_h=96):
    s = sofa_hourly(events, stays_table(los_h)).set_index("time")
    return int(s.loc[h(hour), component])


# ---------------------------------------------------------------- definitions

def test_definitions_by_name_and_json():
    for name in ("sepsis3", "physionet2019"):
        p = definition_params(name)
        assert p["name"] == name
        json.dumps(p)  # recorded in run.json
    assert definition_params("sepsis3")["sofa_window_h"] == [-48.0, 24.0]
    assert definition_params("physionet2019")["sofa_window_h"] == [-24.0, 12.0]
    assert definition_params("physionet2019")["min_antibiotic_h"] == 72.0
    with pytest.raises(ValueError, match="unknown sepsis definition 'sepsis2'"):
        definition_params("sepsis2")


def test_definition_params_is_a_copy():
    p = definition_params("sepsis3")
    p["sofa_window_h"][0] = 0
    assert definition_params("sepsis3")["sofa_window_h"][0] == -48.0


# ---------------------------------------------------------------- suspicion

@pytest.mark.parametrize("abx_h, cul_h, expected", [
    (10, 0, 0),       # culture 10 h before the antibiotic: suspicion at the culture
    (71, 0, 0),       # 71 h before: still within 72 h
    (73, 0, None),    # 73 h before: too early
    (0, 10, 0),       # antibiotic first, culture 10 h later: suspicion at the antibiotic
    (0, 24, 0),       # exactly 24 h later: included
    (0, 25, None),    # 25 h later: too late
    (5, 5, 5),        # same time: counted as culture-first (documented deviation)
])
def test_suspicion_windows(abx_h, cul_h, expected):
    e = ev([(abx_h, "X/abx", 24.0), (cul_h, "X/culture", 0.0)])
    s = suspected_infection(e)
    if expected is None:
        assert s.empty
    else:
        assert s["suspicion_time"].tolist() == [h(expected)]
        assert s["antibiotic_time"].tolist() == [h(abx_h)]
        assert s["culture_time"].tolist() == [h(cul_h)]


def test_suspicion_uses_earliest_culture_before():
    e = ev([(50, "X/abx", 24.0), (10, "X/culture", 0.0), (30, "X/culture", 1.0), (60, "X/culture", 0.0)])
    s = suspected_infection(e)
    assert s["suspicion_time"].tolist() == [h(10)]


def test_suspicion_is_per_stay():
    e = ev([(0, "X/abx", 24.0)])
    other = ev([(2, "X/culture", 0.0)]).assign(stay_id=2, subject_id=2)
    assert suspected_infection(pd.concat([e, other], ignore_index=True)).empty


@pytest.mark.parametrize("durations, ok", [
    ([24.0], False),          # one day of antibiotics: not continued 72 h
    ([96.0], True),
    ([48.0, 48.0], True),     # two courses, the second starting when the first ends
    ([24.0, 24.0], False),    # 48 h in all
])
def test_physionet_requires_72h_antibiotics(durations, ok):
    rows = [(0, "X/culture", 0.0)]
    start = 2.0
    for d in durations:
        rows.append((start, "X/abx", d))
        start += d
    s = suspected_infection(ev(rows), "physionet2019")
    assert (not s.empty) == ok
    assert not suspected_infection(ev(rows), "sepsis3").empty  # sepsis3 has no duration rule


# ---------------------------------------------------------------- SOFA components

@pytest.mark.parametrize("concept, value, component, score", [
    ("plt", 160, "coagulation", 0), ("plt", 149, "coagulation", 1), ("plt", 99, "coagulation", 2),
    ("plt", 49, "coagulation", 3), ("plt", 19, "coagulation", 4),
    ("bili", 1.1, "liver", 0), ("bili", 1.2, "liver", 1), ("bili", 2.0, "liver", 2),
    ("bili", 6.0, "liver", 3), ("bili", 12.0, "liver", 4),
    ("crea", 1.1, "renal", 0), ("crea", 1.2, "renal", 1), ("crea", 2.0, "renal", 2),
    ("crea", 3.5, "renal", 3), ("crea", 5.0, "renal", 4),
    ("gcs", 15, "cns", 0), ("gcs", 13, "cns", 1), ("gcs", 10, "cns", 2), ("gcs", 6, "cns", 3), ("gcs", 5, "cns", 4),
    ("map", 70, "cardiovascular", 0), ("map", 69, "cardiovascular", 1),
])
def test_component_cutpoints(concept, value, component, score):
    e = ev([(2.5, f"X/{concept}", float(value), concept)])
    assert sofa_at(e, 3, component) == score
    assert sofa_at(e, 3) == score  # nothing else scores


@pytest.mark.parametrize("agent, rate, score", [
    ("dopamine", 3.0, 2), ("dobutamine", 1.0, 2), ("dopamine", 6.0, 3), ("dopamine", 16.0, 4),
    ("norepinephrine", 0.05, 3), ("norepinephrine", 0.2, 4), ("epinephrine", 0.1, 3),
    ("epinephrine", 0.11, 4), ("norepinephrine", 0.0, 0),
])
def test_cardiovascular_vasopressors(agent, rate, score):
    assert sofa_at(ev([(2.0, f"MIMIC-III/{agent}", rate)]), 2, "cardiovascular") == score


def test_vasopressor_rate_carried_at_most_4h_and_stopped_by_zero():
    e = ev([(1.0, "X/norepinephrine", 0.2)])
    s = sofa_hourly(e, stays_table()).set_index("time")["cardiovascular"]
    # carried 4 h (hours 1-5), then the 24 h window keeps the worst score until hour 5 + 23
    assert s[h(5)] == 4 and s[h(28)] == 4 and s[h(29)] == 0
    e2 = ev([(1.0, "X/norepinephrine", 0.2), (2.0, "X/norepinephrine", 0.0), (30, "X/dopamine", 3.0)])
    s2 = sofa_hourly(e2, stays_table()).set_index("time")["cardiovascular"]
    assert s2[h(25)] == 0 and s2[h(30)] == 2


def test_respiration_pf_ratio_and_ventilation():
    # PaO2 90 with FiO2 1.0 -> P/F 90: 4 points when ventilated, 2 when not (cap without vent)
    base = [(1.0, "X/fio2", 1.0, "fio2"), (2.0, "X/pao2", 90.0, "pao2")]
    assert sofa_at(ev(base + [(1.5, "X/vent", 1.0)]), 2, "respiration") == 4
    assert sofa_at(ev(base), 2, "respiration") == 2
    # P/F 180 ventilated -> 3; P/F 350 -> 1
    assert sofa_at(ev([(1.0, "X/fio2", 0.5, "fio2"), (2.0, "X/pao2", 90.0, "pao2"), (1.0, "X/vent", 1.0)]), 2,
                   "respiration") == 3
    assert sofa_at(ev([(1.0, "X/fio2", 0.2, "fio2"), (2.0, "X/pao2", 70.0, "pao2")]), 2, "respiration") == 1
    # FiO2 older than 4 h: no ratio, no score (no default FiO2)
    assert sofa_at(ev([(1.0, "X/fio2", 1.0, "fio2"), (6.0, "X/pao2", 60.0, "pao2")]), 6, "respiration") == 0
    # the vent flag lasts 8 h after the last charted setting
    e = ev([(1.0, "X/vent", 1.0), (9.5, "X/fio2", 1.0, "fio2"), (10.0, "X/pao2", 90.0, "pao2")])
    assert sofa_at(e, 10, "respiration") == 2


def test_urine_output_needs_22h_coverage():
    # 10 mL every hour from hour 1 to hour 30: 24 h volume 240 mL (< 500 -> 3 points) once covered
    e = ev([(float(k), "X/urine_output", 10.0) for k in range(1, 31)])
    s = sofa_hourly(e, stays_table()).set_index("time")["renal"]
    assert s[h(20)] == 0  # covered 20 h only
    assert s[h(24)] == 3
    e2 = ev([(float(k), "X/urine_output", 5.0) for k in range(1, 31)])  # 120 mL / 24 h -> 4
    assert sofa_hourly(e2, stays_table()).set_index("time").loc[h(26), "renal"] == 4


def test_worst_value_kept_24h():
    e = ev([(0.5, "X/plt", 40.0, "plt"), (3.0, "X/plt", 200.0, "plt")])
    s = sofa_hourly(e, stays_table()).set_index("time")["coagulation"]
    assert s[h(1)] == 3 and s[h(24)] == 3 and s[h(25)] == 0


def test_grid_starts_24h_before_admission():
    s = sofa_hourly(ev([(-10, "X/plt", 40.0, "plt")]), stays_table(10))
    assert s["time"].min() == h(-24) and s["time"].max() == h(10)
    assert s.set_index("time").loc[h(-10), "sofa"] == 3


def test_sofa_works_on_other_sources():
    # any namespace: concepts from the concept column, signals from the code's last segment
    e = ev([(1.0, "SYNTH/plt", 40.0, "plt"), (1.0, "FHIR/norepinephrine", 0.3)])
    assert sofa_at(e, 1) == 3 + 4


@settings(max_examples=20, deadline=None)
@given(st.lists(st.floats(1, 1000, allow_nan=False), min_size=2, max_size=2))
def test_coagulation_monotone(plts):
    lo, hi = sorted(plts)
    s_lo = sofa_at(ev([(1.0, "X/plt", lo, "plt")]), 1, "coagulation")
    s_hi = sofa_at(ev([(1.0, "X/plt", hi, "plt")]), 1, "coagulation")
    assert s_lo >= s_hi
    assert 0 <= s_hi <= 4


@settings(max_examples=15, deadline=None)
@given(st.lists(st.tuples(st.floats(-20, 90), st.sampled_from(["plt", "bili", "crea", "gcs", "map"]),
                          st.floats(0.1, 500)), min_size=0, max_size=12))
def test_sofa_is_sum_of_components_in_range(rows):
    e = ev([(t, f"X/{c}", v, c) for t, c, v in rows])
    s = sofa_hourly(e, stays_table())
    comps = ["respiration", "coagulation", "liver", "cardiovascular", "cns", "renal"]
    assert (s[comps].sum(axis=1) == s["sofa"]).all()
    assert s[comps].to_numpy().min() >= 0 and s[comps].to_numpy().max() <= 4


# ---------------------------------------------------------------- onset

def _sofa_frame(scores: dict[float, int]) -> pd.DataFrame:
    hours = np.arange(-24, 97)
    return pd.DataFrame({"stay_id": 1, "time": [h(x) for x in hours],
                         "sofa": [scores.get(float(x), 0) for x in hours]})


def _sus(hour):
    return pd.DataFrame({"stay_id": [1], "suspicion_time": [h(hour)]})


@pytest.mark.parametrize("sofa_hour, septic", [(-49, False), (-48, True), (0, True), (24, True), (25, False)])
def test_sepsis3_window(sofa_hour, septic):
    sofa = _sofa_frame({float(50 + sofa_hour): 2})
    o = sofa_onset(_sus(50), sofa, "sepsis3")
    assert (len(o) == 1) == septic
    if septic:
        assert o["onset_time"].iloc[0] == h(50 + sofa_hour)
        assert o["sofa_at_onset"].iloc[0] == 2


def test_sepsis3_first_suspicion_with_sofa_and_first_sofa_hour():
    sofa = _sofa_frame({60.0: 3, 61.0: 4, 10.0: 1})
    sus = pd.DataFrame({"stay_id": [1, 1], "suspicion_time": [h(0), h(40)]})
    o = sofa_onset(sus, sofa, "sepsis3")
    # suspicion at 0 has no SOFA >= 2 in [-48, 24]; the one at 40 has: onset = first such hour
    assert o[["suspicion_time", "sofa_time", "onset_time"]].iloc[0].tolist() == [h(40), h(60), h(60)]


def test_physionet_needs_increase_and_takes_earlier_time():
    chronic = {float(x): 3 for x in range(-24, 97)}  # SOFA 3 throughout: no deterioration
    assert len(sofa_onset(_sus(30), _sofa_frame(chronic), "sepsis3")) == 1
    assert len(sofa_onset(_sus(30), _sofa_frame(chronic), "physionet2019")) == 0
    rise = {float(x): (1 if x < 35 else 3) for x in range(-24, 97)}
    o = sofa_onset(_sus(30), _sofa_frame(rise), "physionet2019")
    # increase of 2 at hour 35, suspicion at 30: onset = min(30, 35) = 30
    assert o["sofa_time"].iloc[0] == h(35) and o["onset_time"].iloc[0] == h(30)
    assert len(sofa_onset(_sus(20), _sofa_frame(rise), "physionet2019")) == 0  # 35 > 20 + 12


def test_label_stays_end_to_end():
    rows = [(5, "X/culture", 1.0), (6, "X/abx", 96.0), (8, "X/crea", 2.5, "crea"), (8.5, "X/plt", 90.0, "plt")]
    e = ev(rows)
    st2 = pd.concat([stays_table(), stays_table(stay_id=2)], ignore_index=True)
    lab = label_stays(e, st2).set_index("stay_id")
    assert bool(lab.loc[1, "sepsis"]) and lab.loc[1, "suspicion_time"] == h(5)
    assert lab.loc[1, "onset_time"] == h(8) and lab.loc[1, "sofa_at_onset"] == 2
    assert not bool(lab.loc[2, "sepsis"]) and pd.isna(lab.loc[2, "suspicion_time"])
    # physionet: onset = min(suspicion 5, sofa 8) = 5 (hour 9 reaches 4 but 8 is the first +2)
    lab2 = label_stays(e, st2, "physionet2019").set_index("stay_id")
    assert lab2.loc[1, "onset_time"] == h(5)
