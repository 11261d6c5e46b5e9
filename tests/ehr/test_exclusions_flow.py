"""Cohort exclusions (Johnson et al. 2018) and the cohort flow: every stay read is accounted for."""

from __future__ import annotations

import pandas as pd
import pytest

from ehr.exclusions import EXCLUSIONS, apply_exclusions, exclusion_reasons
from ehr.flow import cohort_flow

T = pd.Timestamp("2150-01-01")
H = pd.Timedelta(hours=1)


@pytest.fixture
def stays():
    return pd.DataFrame({
        "stay_id": [1, 2, 3, 4, 5, 6, 7, 8],
        "subject_id": [10, 10, 11, 12, 13, 14, 15, 16],
        "age": [70, 71, 16, 50, 60, 60, 60, 15],
        "admit_time": [T, T + 720 * H, T, T, T, T, T, pd.NaT],
        "discharge_time": [T + 48 * H] * 5 + [pd.NaT, T + 48 * H, T + 48 * H],
        "department": ["MICU", "MICU", "MICU", "CSRU", "SICU", "MICU", "MICU", "MICU"],
        "suspicion_time": [pd.NaT, pd.NaT, pd.NaT, pd.NaT, T - 30 * H, T, T + 30 * H, pd.NaT],
        "sepsis": [True, False, False, True, True, False, False, True],
    })


def test_johnson2018_reasons_in_order(stays):
    reasons, skipped = exclusion_reasons(stays, "johnson2018")
    assert reasons.tolist() == [None, "not the first ICU stay", "age <= 16", "cardiac surgery unit (CSRU)",
                                "suspicion of infection > 24 h before ICU admission",
                                "no admission or discharge time",
                                "suspicion of infection > 24 h after ICU admission", "age <= 16"]
    assert skipped == []
    kept, by_id, _ = apply_exclusions(stays, "johnson2018")
    assert kept["stay_id"].tolist() == [1] and by_id.index.tolist() == stays["stay_id"].tolist()


def test_rules_without_their_columns_are_skipped_and_named(stays):
    reasons, skipped = exclusion_reasons(stays.drop(columns=["suspicion_time", "department"]), "johnson2018")
    assert skipped == ["cardiac surgery unit (CSRU) (needs department)",
                       "suspicion of infection > 24 h before ICU admission (needs suspicion_time)",
                       "suspicion of infection > 24 h after ICU admission (needs suspicion_time)"]
    assert reasons.isna().sum() == 4
    with pytest.raises(ValueError, match="unknown exclusions 'x'"):
        exclusion_reasons(stays, "x")
    assert list(EXCLUSIONS) == ["johnson2018"]


def test_flow_accounts_for_every_stay(stays):
    kept, reasons, _ = apply_exclusions(stays.assign(age=60, department="MICU", suspicion_time=pd.NaT,
                                                     admit_time=T, discharge_time=T + 48 * H), "johnson2018")
    # stay 2 is excluded (second stay of subject 10); 3 has no screen; 4 has onset before its first screen;
    # 5 (septic) has screens before onset but none with new data; the others are screened normally
    rows = pd.DataFrame({"stay_id": [1, 1, 4, 5, 6, 7, 8], "screen_time": T,
                         "new_data": [True, True, True, False, True, True, True],
                         "onset_in_h": [5.0, 4.0, -2.0, 3.0, None, None, 10.0]})
    split = pd.Series(["train", "train", "test", "dev", "dev", "test", "test", "train"], index=stays["stay_id"])
    flow = cohort_flow(stays, rows, excluded=reasons, split=split,
                       reader_stages=[{"stage": "files read", "n_stays": 9, "n_septic": None, "reason": "9 files"}])
    got = {r.stage + (f" [{r.reason}]" if r.stage == "excluded" else ""): (r.n_stays, r.n_septic)
           for r in flow.itertuples()}
    assert got.pop("files read")[0] == 9 and pd.isna(flow["n_septic"].iloc[0])
    assert got == {"read": (8, 4), "excluded [not the first ICU stay]": (1, 0), "no hourly screen": (1, 0),
                   "onset before the first screen": (1, 1), "screened": (5, 3),
                   "septic, no new-data screen before onset": (1, 1), "split: train": (2, 2), "split: dev": (1, 1),
                   "split: test": (2, 0)}
    assert flow["stage"].iloc[0] == "files read"
    screened = flow.set_index("stage").loc["screened", "n_stays"]
    gone = flow[flow["stage"].isin(["excluded", "no hourly screen", "onset before the first screen"])]["n_stays"].sum()
    assert screened + gone == flow.set_index("stage").loc["read", "n_stays"]


@pytest.mark.realdata
@pytest.mark.slow
def test_mimic_demo_flow_and_johnson2018(mimic_demo_dir):
    """On the MIMIC-III demo, 39 of 81 Sepsis-3 stays have their onset before the first screen (measured)."""
    from ehr.screens import build_screens
    from ehr.sources.mimic import read_mimic

    c = read_mimic(mimic_demo_dir)
    rows = build_screens(c.events, c.stays, c.cxr, until_onset=False)
    flow = cohort_flow(c.stays, rows).set_index("stage")
    assert flow.loc["read", ["n_stays", "n_septic"]].tolist() == [136, 81]
    assert flow.loc["onset before the first screen", ["n_stays", "n_septic"]].tolist() == [39, 39]
    assert flow.loc["screened", ["n_stays", "n_septic"]].tolist() == [97, 42]
    kept, reasons, skipped = apply_exclusions(c.stays, "johnson2018")
    assert skipped == [] and reasons.value_counts()[["not the first ICU stay", "cardiac surgery unit (CSRU)"]].tolist() \
        == [36, 6]
    assert len(kept) == 136 - int(reasons.notna().sum())
