"""Robustness transforms (no film, older films) and the robustness table."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from fusion._demo import demo_embeddings, demo_screens
from fusion.robustness import robustness_predictions, robustness_table, with_older_images, without_images


def _brute_force(screens, films, shift_h):
    """Per screen: the latest film taken at least ``shift_h`` hours before it (study time, or NaT)."""
    out = []
    for stay, t in zip(screens["stay_id"], screens["screen_time"]):
        seen = films[(films.stay_id == stay) & (films.time + pd.Timedelta(hours=shift_h) <= t)]
        out.append(seen["time"].max() if len(seen) else pd.NaT)
    return pd.Series(out)


@pytest.mark.parametrize("shift_h", [0.0, 3.0, 24.0])
def test_older_films_match_a_brute_force_lookup(shift_h):
    s = demo_screens(n_stays=12, seed=0, hours=8, images=True)
    films = demo_embeddings(12, 0, 8)
    older = with_older_images(s, shift_h)
    assert list(older.columns) == list(s.columns)
    taken = older["screen_time"] - pd.to_timedelta(older["emb_cxr_age_h"], unit="h")
    expected = _brute_force(s, films, shift_h)
    assert (taken.isna() == expected.isna()).all()
    got = taken.notna()
    assert (abs(taken[got] - expected[got]) < pd.Timedelta("1s")).all()
    assert (older.loc[got, "emb_cxr_age_h"] >= shift_h).all()
    same = s.drop(columns=[c for c in s.columns if c.startswith("emb_cxr")])
    pd.testing.assert_frame_equal(older[same.columns], same)


def test_without_images_removes_only_the_films():
    s = demo_screens(n_stays=6, seed=0, hours=5, images=True)
    out = without_images(s)
    assert out.filter(like="emb_cxr").isna().all().all()
    pd.testing.assert_frame_equal(out.drop(columns=out.filter(like="emb_cxr").columns),
                                  s.drop(columns=s.filter(like="emb_cxr").columns))
    with pytest.raises(ValueError, match="shift_h must be >= 0"):
        with_older_images(s, -1.0)


def test_robustness_table(fitted, screens_img):
    t = robustness_table({"sequence": fitted["sequence"], "fusion_mid": fitted["mid"]}, screens_img)
    assert set(t["condition"]) == {"observed", "no_cxr", "cxr_24h_older", "cxr_72h_older"}
    assert len(t) == 8
    seq = t[t.model == "sequence"]
    np.testing.assert_array_equal(seq["delta_auroc"], 0.0)  # the EHR-only model never reads the films
    mid = t[t.model == "fusion_mid"].set_index("condition")
    assert mid.loc["observed", "delta_auroc"] == 0.0
    assert mid.loc["no_cxr", "auroc"] != mid.loc["observed", "auroc"]


def test_robustness_predictions_name_model_and_condition(fitted, screens_img):
    pred = robustness_predictions({"mid": fitted["mid"]}, screens_img, conditions={"observed": 0.0, "no_cxr": None})
    assert sorted(pred["model"].unique()) == ["mid@no_cxr", "mid@observed"]
    observed = pred[pred.model == "mid@observed"]["risk"].to_numpy()
    np.testing.assert_array_equal(observed, fitted["mid"].predict_proba(screens_img)[:, 1])
