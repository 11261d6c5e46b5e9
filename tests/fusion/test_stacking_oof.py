"""Out-of-fold predictions and cross-validated stacking: no screen is ever predicted by a model that saw its
patient, and no meta-learner input comes from a model that saw the outer test fold."""

from __future__ import annotations

from typing import ClassVar

import numpy as np
import pandas as pd
import pytest

from ehr.estimator import Labels, SepsisEstimator
from fusion.oof import fold_assignment, oof_predictions, pair_folds
from fusion.stack_cv import cv_summary, stack_cv
from gbdt._demo import demo_screens


class Memoriser(SepsisEstimator):
    """Predicts 0.9 for a patient it was trained on, else its training positive rate; logs every fit."""

    kind: ClassVar[str] = "memoriser"
    fits: ClassVar[list] = []

    def __init__(self, tag: str = "m"):
        self.tag = tag

    def fit(self, screens, labels=None, *, groups=None):
        labels = Labels.coerce(labels, screens)
        self.seen_ = set(screens["subject_id"])
        self.rate_ = float(labels.y.mean())
        self.features_in_ = ["subject_id"]
        self.groups_given_ = groups is not None
        Memoriser.fits.append((self.tag, frozenset(self.seen_)))
        return self

    def predict_proba(self, screens):
        p = np.where(screens["subject_id"].isin(self.seen_), 0.9, self.rate_)
        return np.column_stack([1 - p, p])


@pytest.fixture()
def screens():
    Memoriser.fits.clear()
    return demo_screens(n_stays=45, seed=1)


def test_oof_predictions_never_come_from_a_model_that_saw_the_patient(screens):
    oof = oof_predictions(Memoriser(), screens, n_splits=5)
    assert len(oof) == len(screens) and not (oof["risk"] == 0.9).any()
    assert set(oof["split"]) == {"train"} and sorted(oof["fold"].unique()) == [0, 1, 2, 3, 4]
    per_patient = oof.assign(subject_id=screens["subject_id"].to_numpy()).groupby("subject_id")["fold"].nunique()
    assert (per_patient == 1).all()
    assert len(Memoriser.fits) == 5
    assert oof[["stay_id", "screen_time"]].equals(screens[["stay_id", "screen_time"]].reset_index(drop=True))


def test_oof_passes_fit_params_and_shares_given_folds(screens):
    folds = fold_assignment(screens, 3, random_state=7)
    timings = []
    oof = oof_predictions(Memoriser(), screens, folds=folds, name="memo", split=None, timings=timings,
                          fit_params=lambda tr: {"groups": tr["subject_id"]})
    assert np.array_equal(oof["fold"].to_numpy(dtype=int), folds)
    assert set(oof["model"]) == {"memo"} and oof["split"].isna().all()
    assert [t["fold"] for t in timings] == [0, 1, 2] and sum(t["n_train"] for t in timings) == 2 * len(screens)
    with pytest.raises(ValueError, match="folds has shape"):
        oof_predictions(Memoriser(), screens, folds=folds[:-1])


def test_pair_folds_leave_out_exactly_two_folds():
    folds = np.repeat(np.arange(4), 3)
    pairs = pair_folds(folds)
    assert len(pairs) == 6
    for pair, rows in pairs.items():
        assert set(folds[rows]) == set(range(4)) - set(pair)


@pytest.mark.parametrize("scheme,inner_fits", [("pairs", 3), ("nested", 3 * 2)])
def test_stack_meta_learner_inputs_never_saw_the_outer_test_fold(screens, scheme, inner_fits):
    cv = stack_cv(screens, {"a": Memoriser("a")}, n_splits=3, schemes=(scheme,), inner_splits=2)
    folds = cv.folds
    everyone = set(screens["subject_id"])
    fold_subjects = [set(screens["subject_id"][folds == k]) for k in range(3)]
    outer_sets = [everyone - f for f in fold_subjects]
    fits = [seen for _, seen in Memoriser.fits]
    inner = [seen for seen in fits if seen not in outer_sets]
    assert len(fits) - len(inner) == 3 and len(inner) == inner_fits
    for seen in inner:
        left_out = [k for k in range(3) if not seen & fold_subjects[k]]
        # an inner fit serves the outer folds it left out entirely, and is out-of-fold on the rest
        assert left_out and seen < outer_sets[left_out[0]]
        if scheme == "pairs":
            assert len(left_out) == 2
    # a memoriser never predicts 0.9 out of fold, so the stack sees no leak and no 0.9 inputs
    p = cv.predictions
    assert not (p.loc[p.model == "a", "risk"] == 0.9).any()
    assert set(cv.timings["stage"]) == {"outer", "inner", "meta"}
    # the inner inputs are returned: every screen once per outer fold that does not hold it, never a 0.9
    inn = cv.inner
    assert len(inn) == 2 * len(screens) and set(inn["scheme"]) == {scheme}
    assert inn["risk_a"].notna().all() and not (inn["risk_a"] == 0.9).any()
    fold_of = pd.Series(folds, index=pd.MultiIndex.from_frame(screens[["stay_id", "screen_time"]]))
    held = fold_of.reindex(pd.MultiIndex.from_frame(inn[["stay_id", "screen_time"]])).to_numpy()
    assert (held != inn["outer_fold"].to_numpy()).all()


def test_naive_scheme_uses_outer_predictions_and_precomputed_members(screens):
    first = stack_cv(screens, {"a": Memoriser("a")}, n_splits=3, schemes=("naive",))
    pre = first.predictions[first.predictions.model == "a"].assign(model="b")
    Memoriser.fits.clear()
    cv = stack_cv(screens, {"a": Memoriser("a")}, precomputed=pre, n_splits=3, schemes=("naive", "pairs"))
    coefs = cv.coefficients
    assert set(coefs.loc[coefs.model == "stack_logistic_naive", "member"]) == {"a", "b"}
    assert set(coefs.loc[coefs.model == "stack_logistic_pairs", "member"]) == {"a"}  # no inner predictions of b
    moved = pre.assign(fold=(pre["fold"] + 1) % 3)
    with pytest.raises(ValueError, match="member 'b' was cross-validated on other folds"):
        stack_cv(screens, {"a": Memoriser("a")}, precomputed=moved, n_splits=3, schemes=("naive",))


def test_stack_cv_with_news2_scores_and_summary(screens):
    s = screens.reset_index(drop=True)
    keep = np.arange(len(s)) % 3 > 0
    news2 = pd.DataFrame({"stay_id": s.stay_id[keep], "screen_time": s.screen_time[keep], "model": "news2",
                          "risk": s.c0[keep].fillna(50).to_numpy() / 10, "fold": pd.NA, "split": None})
    news2["fold"] = news2["fold"].astype("Int64")
    cv = stack_cv(s, {"a": Memoriser("a")}, scores=news2, n_splits=3, schemes=("pairs",))
    n2 = cv.predictions[cv.predictions.model == "news2"]
    assert len(n2) == keep.sum() and n2["fold"].notna().all() and set(n2["split"]) == {"test"}
    summary = cv_summary(cv.predictions, s).set_index("model")
    assert summary.loc["news2", "n_screens"] == keep.sum()
    assert summary.loc["stack_logistic_pairs", "n_screens"] == len(s)
    # c0 carries the signal: the stack learns to trust NEWS2 (here c0) over the memoriser's base rate
    share = cv.coefficients.groupby("member")["share"].mean()
    assert share["news2"] > share["a"]
    with pytest.raises(ValueError, match="unknown fold scheme"):
        stack_cv(s, {"a": Memoriser("a")}, schemes=("loo",))
