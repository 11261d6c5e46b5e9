"""Sequence inputs: channels, training statistics, film histories, padding, bad input."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from ehr.schema import SchemaError
from fusion.embeddings import attach_embeddings
from fusion.sequences import SequenceInputs, studies_from_screens

T0 = pd.Timestamp("2024-01-01")


def _screens():
    """Stay 1: four hours, hr measured at 0.5 h and 2.5 h; stay 2: two hours, hr never measured."""
    return pd.DataFrame({
        "subject_id": [1, 1, 1, 1, 2, 2], "stay_id": [1, 1, 1, 1, 2, 2],
        "screen_time": T0 + pd.to_timedelta([1, 2, 3, 4, 1, 2], unit="h"),
        "hours_since_admit": [1.0, 2.0, 3.0, 4.0, 1.0, 2.0],
        "hr": [80.0, 80.0, 120.0, 120.0, np.nan, np.nan],
        "hr_age_h": [0.5, 1.5, 0.5, 1.5, np.nan, np.nan],
        "sex": ["M", "M", "M", "M", "F", "F"],
    })


def _films():
    return pd.DataFrame({"study_id": [1, 2, 3], "stay_id": [1, 1, 1],
                         "time": T0 + pd.to_timedelta([0.5, 2.2, 3.5], unit="h"),
                         "emb_cxr_000": [1.0, 2.0, 3.0], "emb_cxr_001": [0.0, 0.0, 6.0]})


def test_channels_follow_the_gru_d_recipe():
    s = _screens()
    inputs = SequenceInputs(max_age_h=168.0).fit(s)
    assert inputs.channels_ == ["hr", "hr:measured", "hr:gap", "hours_since_admit:log", "hours_since_admit:week",
                                "hours_since_admit:decay24", "hours_since_admit:decay72", "sex:M"]
    seq = inputs.transform(s)
    hr = s["hr"].to_numpy()
    mean, sd = np.nanmean(hr), np.nanstd(hr)
    np.testing.assert_allclose(seq.x[:4, 0], (hr[:4] - mean) / sd, rtol=1e-6)
    assert seq.x[4:, 0].tolist() == [0.0, 0.0]  # never measured: the mean
    assert seq.x[:, 1].tolist() == [1, 0, 1, 0, 0, 0]  # measured within the last hour
    np.testing.assert_allclose(seq.x[:4, 2], np.log1p([0.5, 1.5, 0.5, 1.5]) / np.log1p(168.0), rtol=1e-6)
    assert seq.x[4:, 2].tolist() == [1.0, 1.0]
    h = s["hours_since_admit"].to_numpy()
    expected = [np.log1p(h) / np.log1p(168.0), h / 168, np.exp(-h / 24), np.exp(-h / 72)]
    np.testing.assert_allclose(seq.x[:, 3:7].T, expected, rtol=1e-6)
    assert seq.x[:, 7].tolist() == [1, 1, 1, 1, 0, 0]


def test_transform_uses_the_training_statistics_and_restores_from_state():
    train, other = _screens(), _screens()
    other["hr"] = other["hr"] + 40.0
    inputs = SequenceInputs().fit(train)
    again = SequenceInputs.from_state(inputs.state())
    a, b = inputs.transform(other).x, again.transform(other).x
    np.testing.assert_array_equal(a, b)
    assert a[0, 0] == pytest.approx((120.0 - inputs.mean_[0]) / inputs.scale_[0])


def test_rows_in_any_order_map_back():
    s = _screens()
    shuffled = s.iloc[[5, 2, 0, 4, 3, 1]].reset_index(drop=True)
    seq = SequenceInputs().fit(s).transform(shuffled)
    assert shuffled["hours_since_admit"].to_numpy()[seq.order].tolist() == [1, 2, 3, 4, 1, 2]


def test_most_recent_films_and_their_ages():
    s = attach_embeddings(_screens(), _films())
    inputs = SequenceInputs(max_images=2).fit(s)
    seq = inputs.transform(s)
    # study rows 1..3 in order of appearance; 0 = none
    assert seq.image_index[:4].tolist() == [[1, 0], [1, 0], [2, 1], [3, 2]]
    assert seq.image_index[4:].tolist() == [[0, 0], [0, 0]]
    np.testing.assert_allclose(seq.image_age_h[:4], [[0.5, 0], [1.5, 0], [0.8, 2.5], [0.5, 1.8]], atol=1e-5)
    raw = _films()[["emb_cxr_000", "emb_cxr_001"]].to_numpy()
    np.testing.assert_allclose(seq.study_emb[1:], (raw - raw.mean(0)) / np.where(raw.std(0) > 0, raw.std(0), 1),
                               rtol=1e-6)
    assert (seq.study_emb[0] == 0).all()


def test_batches_are_right_padded_with_masks():
    s = attach_embeddings(_screens(), _films())
    seq = SequenceInputs(max_images=2).fit(s).transform(s)
    b = seq.batch([1, 0])
    assert tuple(b["x"].shape) == (2, 4, seq.x.shape[1])
    assert b["valid"].tolist() == [[True, True, False, False], [True, True, True, True]]
    assert (b["x"][0, 2:] == 0).all()
    np.testing.assert_array_equal(b["x"][1].numpy(), seq.x[:4])
    # batch-local film rows point at the same embeddings as the global ones
    np.testing.assert_array_equal(b["images"][b["image_index"][1]].numpy(), seq.study_emb[seq.image_index[:4]])
    assert (b["image_index"][0] == 0).all()


def test_studies_round_trip_through_the_screens():
    s = attach_embeddings(_screens(), _films())
    back = studies_from_screens(s)
    assert back["time"].tolist() == _films()["time"].tolist()
    np.testing.assert_array_equal(back["emb_cxr_001"].to_numpy(), [0.0, 0.0, 6.0])


def test_a_gap_in_a_stays_hours_is_refused():
    s = _screens().drop(index=1)
    with pytest.raises(SchemaError, match=r"stay 1 has screens at .* \(2 h apart\)"):
        SequenceInputs().fit(s).transform(s)
    dup = pd.concat([_screens(), _screens().iloc[[0]]])
    with pytest.raises(SchemaError, match="twice"):
        SequenceInputs().fit(_screens()).transform(dup)


def test_missing_embeddings_and_concepts_are_named():
    with pytest.raises(SchemaError, match="emb_cxr_age_h"):
        SequenceInputs(max_images=2).fit(_screens())
    inputs = SequenceInputs().fit(_screens())
    with pytest.raises(SchemaError, match="hr_age_h"):
        inputs.transform(_screens().drop(columns=["hr_age_h"]))
    broken = attach_embeddings(_screens(), _films())
    broken.loc[2, "emb_cxr_001"] = np.nan  # the row where study 2 first appears
    with pytest.raises(SchemaError, match="missing embedding values"):
        SequenceInputs(max_images=2).fit(attach_embeddings(_screens(), _films())).transform(broken)
