"""NEWS2: every band boundary of every component, hand-checked against the RCP 2017 chart."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from ehr.concepts import load_concepts
from ehr.schema import validate
from evaluation.news2 import (
    NEWS2_COMPONENTS,
    news2_components,
    news2_from_events,
    news2_predictions,
    news2_score,
)

T0 = pd.Timestamp("2021-03-01 08:00")
H = pd.Timedelta(hours=1)


def _points(column, value, component, **extra):
    frame = pd.DataFrame({column: [value], **{k: [v] for k, v in extra.items()}})
    return news2_components(frame)[component].iloc[0]


# (value, points) on both sides of every edge of the chart; non-integers follow the half-open rule.
RESP = [(3, 3), (8, 3), (8.5, 3), (9, 1), (11, 1), (11.9, 1), (12, 0), (20, 0), (20.5, 0), (21, 2),
        (24, 2), (24.99, 2), (25, 3), (60, 3)]
SPO2_SCALE1 = [(70, 3), (91, 3), (91.5, 3), (92, 2), (92.5, 2), (93, 2), (94, 1), (95, 1), (95.9, 1),
               (96, 0), (100, 0)]
SBP = [(60, 3), (90, 3), (90.5, 3), (91, 2), (100, 2), (101, 1), (110, 1), (111, 0), (219, 0),
       (219.5, 0), (220, 3), (260, 3)]
PULSE = [(30, 3), (40, 3), (40.5, 3), (41, 1), (50, 1), (51, 0), (90, 0), (91, 1), (110, 1), (111, 2),
         (130, 2), (130.9, 2), (131, 3), (180, 3)]
TEMP = [(33.0, 3), (35.0, 3), (35.05, 3), (35.1, 1), (36.0, 1), (36.1, 0), (38.0, 0), (38.05, 0),
        (38.1, 1), (39.0, 1), (39.1, 2), (41.0, 2), (35.0999999999, 1), ((95.18 - 32) * 5 / 9, 1)]
# scale 2: (spo2, on_o2, points); on_o2 NaN = unknown oxygen, counts as air
SPO2_SCALE2 = [(80, 0, 3), (83, 0, 3), (83.5, 0, 3), (84, 0, 2), (85, 0, 2), (86, 0, 1), (87, 0, 1),
               (88, 0, 0), (92, 0, 0), (93, 0, 0), (97, 0, 0), (100, 0, 0),
               (83, 1, 3), (84, 1, 2), (86, 1, 1), (88, 1, 0), (92, 1, 0), (92.5, 1, 0), (93, 1, 1),
               (94, 1, 1), (95, 1, 2), (96, 1, 2), (97, 1, 3), (100, 1, 3),
               (97, np.nan, 0), (85, np.nan, 2)]


@pytest.mark.parametrize("value,points", RESP)
def test_respiration_rate_bands(value, points):
    assert _points("resp", value, "respiration_rate") == points


@pytest.mark.parametrize("value,points", SPO2_SCALE1)
def test_spo2_scale1_bands(value, points):
    assert _points("spo2", value, "spo2") == points
    # scale 1 ignores oxygen for the SpO2 component, and hypercapnic=False means scale 1
    assert _points("spo2", value, "spo2", on_o2=1, hypercapnic=False) == points


@pytest.mark.parametrize("value,on_o2,points", SPO2_SCALE2)
def test_spo2_scale2_bands(value, on_o2, points):
    assert _points("spo2", value, "spo2", on_o2=on_o2, hypercapnic=True) == points


@pytest.mark.parametrize("value,points", SBP)
def test_systolic_bp_bands(value, points):
    assert _points("sbp", value, "systolic_bp") == points


@pytest.mark.parametrize("value,points", PULSE)
def test_pulse_bands(value, points):
    assert _points("hr", value, "pulse") == points


@pytest.mark.parametrize("value,points", TEMP)
def test_temperature_bands(value, points):
    assert _points("temp", value, "temperature") == points


@pytest.mark.parametrize("code,points", [(0, 0), (1, 3), (2, 3), (3, 3), (4, 3)])
def test_acvpu(code, points):
    assert _points("acvpu", code, "consciousness") == points


@pytest.mark.parametrize("gcs,points", [(15, 0), (14, 3), (14.5, 3), (8, 3), (3, 3)])
def test_consciousness_from_gcs_when_acvpu_absent(gcs, points):
    assert _points("gcs", gcs, "consciousness") == points
    assert _points("gcs", gcs, "consciousness", acvpu=np.nan) == points


def test_acvpu_wins_over_gcs():
    assert _points("gcs", 10, "consciousness", acvpu=0) == 0
    assert _points("gcs", 15, "consciousness", acvpu=2) == 3


@pytest.mark.parametrize(
    "extra,points",
    [
        ({"on_o2": 1}, 2), ({"on_o2": 0}, 0),
        ({"o2_flow": 2.0}, 2), ({"o2_flow": 0.0}, 0),
        ({"fio2": 0.21}, 0), ({"fio2": 0.4}, 2), ({"fio2": 0.22}, 2),
        ({"o2_flow": 0.0, "fio2": 0.5}, 2),
        ({"on_o2": 0, "o2_flow": 4.0}, 0),  # a charted on_o2 wins over inference
        ({}, np.nan),
    ],
)
def test_air_or_oxygen(extra, points):
    frame = pd.DataFrame({"hr": [70.0], **{k: [v] for k, v in extra.items()}})
    got = news2_components(frame)["air_or_oxygen"].iloc[0]
    if np.isnan(points):
        assert np.isnan(got)
    else:
        assert got == points


def test_scale2_uses_inferred_oxygen():
    assert _points("spo2", 97, "spo2", o2_flow=3.0, hypercapnic=True) == 3
    assert _points("spo2", 97, "spo2", o2_flow=0.0, hypercapnic=True) == 0


def test_missing_components_are_nan_and_total_sums_present():
    frame = pd.DataFrame({"resp": [25, np.nan, np.nan], "hr": [np.nan, 95, np.nan]})
    comp = news2_components(frame)
    assert list(comp.columns) == list(NEWS2_COMPONENTS)
    assert comp.iloc[0].notna().sum() == 1 and comp.iloc[2].isna().all()
    assert news2_score(frame).tolist()[:2] == [3.0, 1.0]
    assert np.isnan(news2_score(frame).iloc[2])


def test_full_chart_example():
    # hand-computed: RR 24 (2), SpO2 93 scale 1 (2), oxygen (2), SBP 100 (2), pulse 131 (3), V (3), 35.0 (3)
    frame = pd.DataFrame({"resp": [24], "spo2": [93], "on_o2": [1], "sbp": [100], "hr": [131],
                          "acvpu": [2], "temp": [35.0]})
    assert news2_components(frame).iloc[0].tolist() == [2, 2, 2, 2, 3, 3, 3]
    assert news2_score(frame).iloc[0] == 17


def test_bands_agree_with_concept_cuts():
    # the CPN discretises with concepts.toml cuts; where they are NEWS2 bands they must be the chart's
    c = load_concepts()
    assert c["hr"].cuts == (41, 51, 91, 111, 131)
    assert c["sbp"].cuts == (91, 101, 111, 220)
    assert c["resp"].cuts == (9, 12, 21, 25)
    assert c["temp"].cuts == (35.1, 36.1, 38.1, 39.1)
    assert c["acvpu"].news2 == "consciousness"


def _events(rows):
    return pd.DataFrame(rows, columns=["stay_id", "time", "concept", "numeric_value"])


def test_from_events_every_time_point_without_carry_forward():
    ev = _events([
        (1, T0, "hr", 135.0), (1, T0, "resp", 8.0), (1, T0, "crp", 100.0),
        (1, T0 + H, "temp", 36.5),                       # only temperature: no HR carried forward
        (1, T0 + 2 * H, "crp", 50.0),                    # no NEWS2 concept: no time point
        (1, T0 + 3 * H, "spo2", 90.0), (1, T0 + 3 * H, "o2_flow", 2.0),
        (2, T0, "spo2", 97.0), (2, T0, "on_o2", 1.0),     # hypercapnic: scale 2
    ])
    stays = pd.DataFrame({"stay_id": [1, 2], "hypercapnic": [False, True]})
    out = news2_from_events(ev, stays)
    assert list(out.columns) == ["stay_id", "time", *NEWS2_COMPONENTS, "total", "n_components"]
    assert out["time"].tolist() == [T0, T0 + H, T0 + 3 * H, T0]
    assert out["total"].tolist() == [6.0, 0.0, 5.0, 5.0]
    assert out["n_components"].tolist() == [2, 1, 2, 2]
    assert np.isnan(out.loc[1, "pulse"])
    assert out.loc[3, "spo2"] == 3 and out.loc[3, "air_or_oxygen"] == 2


def test_from_events_gcs_derived_and_duplicate_last_wins():
    ev = _events([(1, T0, "gcs", 13.0), (1, T0, "hr", 60.0), (1, T0, "hr", 45.0)])
    out = news2_from_events(ev, pd.DataFrame({"stay_id": [1]}))
    assert out.loc[0, "consciousness"] == 3 and out.loc[0, "pulse"] == 1
    assert out.loc[0, "total"] == 4


def test_from_events_unknown_stay_is_an_error():
    ev = _events([(9, T0, "hr", 60.0)])
    with pytest.raises(ValueError, match="stay_id 9"):
        news2_from_events(ev, pd.DataFrame({"stay_id": [1]}))


def test_predictions_align_to_screen_hour_and_drop_unscored():
    ev = _events([
        (1, T0 + pd.Timedelta("10min"), "hr", 135.0),   # in (T0, T0+1h]      -> screen T0+1h
        (1, T0 + pd.Timedelta("50min"), "hr", 95.0),    # most recent in hour -> wins
        (1, T0 + H, "resp", 26.0),                      # exactly at T0+1h    -> screen T0+1h (3)
        (1, T0 + 2 * H, "temp", 39.5),                  # at T0+2h            -> screen T0+2h, not T0+3h
        (2, T0 + 3 * H, "hr", 45.0),
    ])
    stays = pd.DataFrame({"stay_id": [1, 2]})
    screens = pd.DataFrame({
        "stay_id": [1, 1, 1, 2, 2],
        "screen_time": [T0 + H, T0 + 2 * H, T0 + 3 * H, T0 + 3 * H, T0 + 4 * H],
    })
    pred, n_unscored = news2_predictions(ev, stays, screens, split="test")
    validate(pred, "predictions")
    assert n_unscored == 2
    assert pred[["stay_id", "screen_time", "risk"]].values.tolist() == [
        [1, T0 + H, 3.0], [1, T0 + 2 * H, 2.0], [2, T0 + 3 * H, 1.0]]
    assert (pred["model"] == "news2").all() and (pred["split"] == "test").all()


def test_predictions_accept_other_time_resolutions():
    ev = _events([(1, T0 + pd.Timedelta("10min"), "hr", 135.0)])
    ev["time"] = ev["time"].astype("datetime64[us]")
    screens = pd.DataFrame({"stay_id": [1], "screen_time": pd.Series([T0 + H]).astype("datetime64[ms]")})
    pred, n_unscored = news2_predictions(ev, pd.DataFrame({"stay_id": [1]}), screens)
    assert pred["risk"].tolist() == [3.0] and n_unscored == 0


def test_screen_takes_the_highest_news2_of_its_hour():
    """A lone temperature after a full set of vitals must not hide the earlier score (review fix)."""
    t = pd.Timestamp("2020-01-01 08:00")
    rows = [("hr", 135.0, 10), ("resp", 26.0, 10), ("sbp", 85.0, 10), ("temp", 37.0, 40)]
    ev = pd.DataFrame({"stay_id": 1, "time": [t + pd.Timedelta(minutes=m) for _, _, m in rows],
                       "concept": [c for c, _, _ in rows], "numeric_value": [v for _, v, _ in rows]})
    st = pd.DataFrame({"stay_id": [1]})
    sc = pd.DataFrame({"stay_id": [1, 1], "screen_time": [t + pd.Timedelta(hours=1), t + pd.Timedelta(hours=2)]})
    pred, n_unscored = news2_predictions(ev, st, sc)
    assert pred["risk"].tolist() == [9.0]  # 3 (pulse) + 3 (resp) + 3 (SBP); the 08:40 temperature alone is 0
    assert n_unscored == 1
