"""Subgroup table: the evaluated split's stays only, the main table's screens, CIs from the bootstrap."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from evaluation.bootstrap import bootstrap_metrics
from evaluation.subgroup_metrics import subgroup_table
from tests.evaluation.test_bootstrap import _cohort

OPS = {"cpn": {"news2>=5": 0.6}, "news2": {"news2>=5": 5.0}}


@pytest.fixture(scope="module")
def split_tables():
    pred, screens, stays = _cohort(n_stays=60, seed=7)
    rng = np.random.default_rng(7)
    stays = stays.assign(sex=np.where(np.arange(60) % 2, "F", "M"), age=rng.uniform(20, 90, 60),
                         admit_time=pd.Timestamp("2022-05-01"), split=np.where(np.arange(60) < 40, "test", "dev"))
    split = stays.set_index("stay_id")["split"]
    pred = pred.assign(split=pred["stay_id"].map(split).to_numpy())
    screens = screens.assign(split=screens["stay_id"].map(split).to_numpy())
    return pred, screens, stays


def test_counts_are_the_evaluated_splits(split_tables):
    pred, screens, stays = split_tables   # stays of every split, as evaluate_run has them
    test_p, test_s = pred[pred.split == "test"], screens[screens.split == "test"]
    t = subgroup_table(test_p, test_s, stays, thresholds=OPS, n_resamples=30, seed=1)
    overall = t[t.subgroup == "overall"].iloc[0]
    test_ids = test_s["stay_id"].unique()
    assert overall.n_stays == 40 == len(test_ids)
    assert overall.n_septic == stays[stays.stay_id.isin(test_ids)]["onset_time"].notna().sum()
    eligible = test_s[test_s["new_data"]].merge(stays, on="stay_id")
    eligible = eligible[eligible["onset_time"].isna() | (eligible["screen_time"] < eligible["onset_time"])]
    assert overall.n_screens == len(eligible)  # new-data screens before onset, as in the main table
    levels = t.drop_duplicates(["subgroup", "level"])
    for name in ("sex", "age_band"):
        assert levels.loc[levels.subgroup == name, "n_stays"].sum() == 40
    assert set(t["metric"]) == {"auroc", "auprc", "sensitivity", "alarms_per_admission",
                                "false_alarms_per_true_alarm"}


def test_estimates_and_cis_are_the_bootstrap_of_the_level(split_tables):
    pred, screens, stays = split_tables
    test_p, test_s = pred[pred.split == "test"], screens[screens.split == "test"]
    t = subgroup_table(test_p, test_s, stays, thresholds=OPS, n_resamples=30, seed=1)
    ids = stays.loc[(stays.split == "test") & (stays.sex == "F"), "stay_id"]
    ref = bootstrap_metrics(test_p[test_p.stay_id.isin(ids)], test_s[test_s.stay_id.isin(ids)],
                            stays[stays.stay_id.isin(ids)], thresholds=OPS, n_resamples=30, seed=1,
                            reference=None, check_range=False).table.set_index(["model", "operating_point", "metric"])
    got = t[(t.subgroup == "sex") & (t.level == "F")].set_index(["model", "operating_point", "metric"])
    for key in [("cpn", "", "auroc"), ("news2", "", "auprc"), ("cpn", "news2>=5", "sensitivity")]:
        for col in ("estimate", "ci_low", "ci_high"):
            assert got.loc[key, col] == pytest.approx(ref.loc[key, col], nan_ok=True)
    assert (got["n_resamples"] == 30).all()
