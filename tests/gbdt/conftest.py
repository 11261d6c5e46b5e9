"""Tiny seeded screens fixtures for the gbdt tests."""

from __future__ import annotations

import pandas as pd
import pytest

from gbdt._demo import demo_screens


@pytest.fixture(scope="session")
def tiny_screens() -> pd.DataFrame:
    """~120 stays x ~20 hourly screens, 4 concepts + a CXR finding, ~20 % septic stays."""
    return demo_screens(n_stays=120, seed=7, mean_hours=20.0, with_cxr=True)


@pytest.fixture(scope="session")
def hand_screens() -> pd.DataFrame:
    """Two stays written out by hand (rows deliberately out of time order, one 3 h gap)."""
    t = pd.Timestamp("2021-03-01 00:00")
    h = pd.Timedelta(hours=1)
    rows = [
        # stay, hour, hr, hr_age_h, lact, lact_age_h
        (2, 1, 90.0, 0.0, None, None),
        (1, 3, 100.0, 1.0, 2.0, 0.0),
        (1, 1, 80.0, 0.0, None, None),
        (1, 2, 100.0, 0.0, None, None),
        (1, 4, 100.0, 0.0, 4.0, 0.0),   # hr re-measured, same value
        (1, 8, 70.0, 1.0, 4.0, 4.0),    # 3-hour gap in screens; hr measured at hour 7
        (2, 2, 90.0, 1.0, 1.0, 0.0),
    ]
    df = pd.DataFrame(rows, columns=["stay_id", "hour", "hr", "hr_age_h", "lact", "lact_age_h"])
    df["screen_time"] = t + df["hour"] * h
    df["hours_since_admit"] = df["hour"].astype(float)
    df["subject_id"] = df["stay_id"] + 100
    df["age"] = df["stay_id"].map({1: 70.0, 2: 40.0})
    df["sex"] = df["stay_id"].map({1: "M", 2: "F"})
    df["department"] = df["stay_id"].map({1: "SICU", 2: None})
    df["label"] = [0, 1, 0, 0, 1, 1, 1]
    return df.drop(columns="hour")
