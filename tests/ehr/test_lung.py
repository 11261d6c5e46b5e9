"""Ground-truth lung state at any hour (ehr/synthetic/lung.py) and the films it would show."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from ehr.schema import CXR_FINDINGS, SchemaError
from ehr.synthetic.lung import LungState, sample_screen_times


@pytest.fixture(scope="module")
def lungs():
    return LungState.from_generator(150, seed=4)


def test_replay_gives_the_generated_cohort(lungs):
    from ehr.synthetic import generate_cohort

    pd.testing.assert_frame_equal(lungs.cohort.cxr, generate_cohort(150, seed=4).cxr)


@pytest.mark.parametrize("draw", ["study", "persistent"])
def test_state_at_a_study_time_is_that_study(lungs, draw):
    cxr = lungs.cohort.cxr
    at = lungs.at(cxr[["stay_id", "time"]], draw=draw)
    for f in CXR_FINDINGS:
        np.testing.assert_array_equal(at[f"truth_{f}"].to_numpy(), cxr[f"truth_{f}"].to_numpy())
    np.testing.assert_array_equal(at["anatomy_study_id"].to_numpy(dtype=np.int64), cxr["study_id"].to_numpy())


def test_before_the_first_study_there_is_no_anatomy_study(lungs):
    stays = lungs.cohort.stays.set_index("stay_id")
    first = lungs.cohort.cxr.groupby("stay_id")["time"].min()
    sid = first.index[first > stays.loc[first.index, "admit_time"] + pd.Timedelta("2h")][:5]
    at = lungs.at(pd.DataFrame({"stay_id": sid, "time": stays.loc[sid, "admit_time"] + pd.Timedelta("1h")}))
    assert len(at) == len(sid) > 0 and at["anatomy_study_id"].isna().all()


def test_persistent_state_keeps_the_last_film_a_new_study_redraws(lungs):
    cxr = lungs.cohort.cxr
    later = cxr[["stay_id", "time"]].assign(time=cxr["time"] + pd.Timedelta("1min"))
    truth = cxr[[f"truth_{f}" for f in CXR_FINDINGS]].to_numpy()
    kept = lungs.at(later, draw="persistent")
    fresh = lungs.at(later, draw="study")
    same_kept = (kept[[f"truth_{f}" for f in CXR_FINDINGS]].to_numpy() == truth).all(axis=1).mean()
    same_fresh = (fresh[[f"truth_{f}" for f in CXR_FINDINGS]].to_numpy() == truth).all(axis=1).mean()
    assert same_kept > 0.97 and same_fresh < 0.9
    np.testing.assert_array_equal(kept["anatomy_study_id"].to_numpy(dtype=np.int64), cxr["study_id"].to_numpy())
    assert fresh["anatomy_study_id"].isna().all()
    with pytest.raises(ValueError, match="draw must be 'study' or 'persistent'"):
        lungs.at(later, draw="sometimes")


def test_findings_follow_the_trajectory(lungs):
    stays = lungs.cohort.stays
    q = sample_screen_times(stays, 4000, seed=1)
    at = lungs.at(q)
    pneu = at["stay_id"].isin(stays.loc[stays.pneumonia, "stay_id"])
    # consolidation only with pneumonia (active), oedema with heart failure
    assert at.loc[pneu, "truth_consolidation"].mean() > 0.3 > 0.1 > at.loc[~pneu, "truth_consolidation"].mean()
    hf = at["stay_id"].isin(lungs.cohort.truth.loc[lungs.cohort.truth.heart_failure, "stay_id"])
    assert at.loc[hf, "truth_edema"].mean() > 3 * at.loc[~hf, "truth_edema"].mean()
    for f in CXR_FINDINGS:  # present exactly when p is high enough on average
        assert at.loc[at[f"truth_{f}"] == 1, f"p_{f}"].mean() > at.loc[at[f"truth_{f}"] == 0, f"p_{f}"].mean()


def test_same_query_same_answer_and_bad_stays_are_named(lungs):
    q = sample_screen_times(lungs.cohort.stays, 50, seed=2)
    pd.testing.assert_frame_equal(lungs.at(q), lungs.at(q))
    with pytest.raises(SchemaError, match="stay_id 12345 is not in this cohort"):
        lungs.at(pd.DataFrame({"stay_id": [12345], "time": [pd.Timestamp("2024-01-02")]}))
    with pytest.raises(ValueError, match="n must be >= 1"):
        sample_screen_times(lungs.cohort.stays, 0)


def test_a_film_at_a_study_time_is_the_study_film(lungs, tmp_path):
    from PIL import Image

    from imaging.synthetic_images import render_cohort_images, render_truth_films

    cxr = lungs.cohort.cxr.iloc[:6]
    rendered = render_cohort_images(cxr, tmp_path, seed=4, size=48)
    films = render_truth_films(lungs.at(cxr[["stay_id", "time"]]), seed=4, size=48)
    for k, rel in enumerate(rendered["image_path"]):
        np.testing.assert_array_equal(films[k], np.asarray(Image.open(tmp_path / rel)))
    with pytest.raises(KeyError, match="anatomy_study_id"):
        render_truth_films(cxr, seed=4)


def test_cli_simulate_truth_films(tmp_path):
    from typer.testing import CliRunner

    from sepsiscope.cli import app

    res = CliRunner().invoke(app, ["simulate", "--n-stays", "15", "--seed", "2", "--truth-films", "4",
                                   "--out", str(tmp_path / "c"), "--no-progress"])
    assert res.exit_code == 0, res.output
    table = pd.read_parquet(tmp_path / "c" / "truth_films.parquet")
    assert len(table) == 4 and all((tmp_path / "c" / p).is_file() for p in table["image_path"])
