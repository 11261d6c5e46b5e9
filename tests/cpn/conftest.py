"""Tiny seeded fixtures for the CPN tests."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from cpn.sampling import sample_screens
from cpn.structure import load_network


@pytest.fixture(scope="session")
def physionet_net():
    return load_network("physionet")


@pytest.fixture(scope="session")
def full_net():
    return load_network("full")


@pytest.fixture(scope="session")
def tiny_screens():
    """Six hand-built screens of two stays following ehr.schema (screens)."""
    t0 = pd.Timestamp("2020-01-01 01:00")
    return pd.DataFrame({
        "subject_id": np.array([1, 1, 1, 2, 2, 2], dtype="int64"),
        "stay_id": np.array([10, 10, 10, 20, 20, 20], dtype="int64"),
        "screen_time": [t0, t0 + pd.Timedelta("1h"), t0 + pd.Timedelta("2h")] * 2,
        "hours_since_admit": [1.0, 2.0, 3.0, 1.0, 2.0, 3.0],
        "new_data": [True] * 6,
        "age": [71.0] * 3 + [45.0] * 3,
        "sex": ["F"] * 3 + ["M"] * 3,
        "department": ["MICU"] * 3 + ["SICU"] * 3,
        "hr": [95.0, 118.0, 131.0, 72.0, 70.0, np.nan],
        "hr_age_h": [0.0, 0.0, 0.0, 0.0, 1.0, np.nan],
        "temp": [38.4, 38.4, 39.2, 36.8, 36.8, 36.8],
        "temp_age_h": [0.0, 1.0, 0.0, 0.0, 1.0, 2.0],
        "lact": [np.nan, 3.1, 3.1, np.nan, np.nan, np.nan],
        "lact_age_h": [np.nan, 0.0, 1.0, np.nan, np.nan, np.nan],
        "onset_in_h": [5.0, 4.0, 3.0, np.nan, np.nan, np.nan],
        "label": np.array([1, 1, 1, 0, 0, 0], dtype="int64"),
    })


@pytest.fixture(scope="session")
def sampled_screens(physionet_net):
    """4,000 screens forward-sampled from the physionet expert network."""
    return sample_screens(physionet_net, 4000, seed=3)


@pytest.fixture(scope="session")
def fitted_cpn(sampled_screens):
    from cpn import SepsisCPN

    return SepsisCPN("physionet", half_lives="learn", half_life_grid=(0.5, 1.0, 2.0),
                     max_iter=8).fit(sampled_screens)
