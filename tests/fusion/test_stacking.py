"""The stack: member tables that refuse to mis-join, the meta-learner, its explanations and artefacts."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
from scipy.special import expit, logit
from sklearn.base import clone
from sklearn.linear_model import LogisticRegression

from ehr.artefacts import ModelFormatError
from ehr.schema import SchemaError
from evaluation.metrics import roc_auc
from fusion.members import member_frame, require_out_of_fold
from fusion.stacking import StackClassifier


def _predictions(n_stays=30, hours=10, seed=0, members=("cpn", "lightgbm"), news2=True, split="train", fold=True):
    """Long predictions of informative members (and NEWS2 on every other screen) and the screens."""
    rng = np.random.default_rng(seed)
    stay = np.repeat(np.arange(1, n_stays + 1), hours)
    t = pd.Timestamp("2021-03-01") + pd.to_timedelta(np.tile(np.arange(1, hours + 1), n_stays), unit="h")
    septic = np.isin(stay, rng.choice(np.arange(1, n_stays + 1), n_stays // 3, replace=False))
    hour = np.tile(np.arange(1, hours + 1), n_stays)
    onset_in_h = np.where(septic, hours + 6 - hour, np.nan)
    y = (onset_in_h <= 48).astype(float)
    screens = pd.DataFrame({"subject_id": stay + 100, "stay_id": stay, "screen_time": t, "onset_in_h": onset_in_h,
                            "label": y.astype(int)})
    folds = stay % 3 if fold else None
    rows = []
    for j, m in enumerate(members):
        risk = expit((1.5 - 0.5 * j) * (2 * y - 1) + rng.normal(0, 1, len(y)))
        rows.append(pd.DataFrame({"stay_id": stay, "screen_time": t, "model": m, "risk": risk, "fold": folds,
                                  "split": split}))
    if news2:
        keep = hour % 2 == 0
        rows.append(pd.DataFrame({"stay_id": stay[keep], "screen_time": t[keep], "model": "news2",
                                  "risk": (4 * y + rng.integers(0, 5, len(y)))[keep].astype(float), "fold": None,
                                  "split": split}))
    p = pd.concat(rows, ignore_index=True)
    p["fold"] = p["fold"].astype("Int64")
    return p, screens


# ---------------------------------------------------------------- member tables
def test_member_frame_is_one_row_per_screen_in_screen_order():
    p, s = _predictions()
    shuffled = s.sample(frac=1, random_state=1)
    t = member_frame(p.sample(frac=1, random_state=2), shuffled, optional=["news2"])
    assert t[["stay_id", "screen_time"]].equals(shuffled[["stay_id", "screen_time"]].reset_index(drop=True))
    got = t.set_index(["stay_id", "screen_time"])["risk_cpn"]
    want = p[p.model == "cpn"].set_index(["stay_id", "screen_time"])["risk"]
    assert np.array_equal(got.to_numpy(), want.reindex(got.index).to_numpy())
    assert t["risk_news2"].isna().sum() == len(s) // 2
    assert {"subject_id", "onset_in_h", "label"} <= set(t.columns)


def test_a_missing_member_is_named():
    p, s = _predictions()
    with pytest.raises(SchemaError, match=r"member\(s\) 'sequence'.*the table has cpn, lightgbm, news2"):
        member_frame(p, s, members=["cpn", "sequence"])


def test_members_scored_on_different_screens_are_an_error_not_a_silent_join():
    p, s = _predictions(news2=False)
    first = p.index[p.model == "lightgbm"][0]
    with pytest.raises(SchemaError, match=r"member 'lightgbm' has no prediction for 1 of 300 screens "
                                          r"\(first: stay 1 at 2021-03-01 01:00:00\)"):
        member_frame(p.drop(index=first), s)
    # without a screens table the union of the members' screens is the reference
    with pytest.raises(SchemaError, match="member 'lightgbm' has no prediction for 1 of 300"):
        member_frame(p.drop(index=first))
    # a member that scored a screen the others did not
    extra = p.loc[[first]].assign(screen_time=pd.Timestamp("2030-01-01"))
    with pytest.raises(SchemaError, match=r"member 'lightgbm' scored 1 screen\(s\) that are not among"):
        member_frame(pd.concat([p, extra], ignore_index=True), s)


def test_an_optional_member_may_miss_screens_but_not_add_them():
    p, s = _predictions()
    t = member_frame(p, s, optional=["news2"])
    assert t["risk_news2"].isna().sum() == len(s) // 2
    with pytest.raises(SchemaError, match="member 'news2' has no prediction for 150 of 300"):
        member_frame(p, s)
    extra = p[p.model == "news2"].head(1).assign(screen_time=pd.Timestamp("2030-01-01"))
    with pytest.raises(SchemaError, match="member 'news2' scored 1 screen"):
        member_frame(pd.concat([p, extra], ignore_index=True), s, optional=["news2"])


def test_two_rows_for_one_screen_are_refused():
    p, s = _predictions(news2=False)
    two_splits = pd.concat([p, p.assign(split="dev")], ignore_index=True)   # breaks the contract's key
    with pytest.raises(SchemaError, match=r"duplicate key \['stay_id', 'screen_time', 'model'\]"):
        member_frame(two_splits, s)
    with pytest.raises(ValueError, match="duplicate"):
        member_frame(p, pd.concat([s, s.head(1)]))


def test_in_sample_member_predictions_are_refused_for_fitting():
    p, s = _predictions()
    require_out_of_fold(p, ["cpn", "lightgbm", "news2"], split="train", exempt=["news2"])
    p.loc[p.model == "cpn", "fold"] = pd.NA
    with pytest.raises(ValueError, match="member 'cpn' has 300 prediction.*not out-of-fold"):
        StackClassifier().fit_predictions(p, s)
    with pytest.raises(ValueError, match="member 'news2'"):
        require_out_of_fold(p, ["news2"], split="train")


# ---------------------------------------------------------------- the meta-learner
def test_logistic_meta_learner_matches_an_unpenalised_fit_on_the_logits():
    p, s = _predictions(n_stays=200, news2=False, seed=3)
    stack = StackClassifier(C=1e8).fit_predictions(p, s)
    t = member_frame(p, s)
    X = logit(t[["risk_cpn", "risk_lightgbm"]].to_numpy())
    ref = LogisticRegression(C=1e8, max_iter=5000, tol=1e-10).fit(X, t["label"])
    assert np.allclose(stack.coef_, ref.coef_[0], atol=1e-4)
    assert stack.intercept_ == pytest.approx(ref.intercept_[0], abs=1e-4)
    assert np.allclose(stack.predict_proba(t)[:, 1], ref.predict_proba(X)[:, 1], atol=1e-5)
    coefs = stack.coefficients_.set_index("member")
    assert coefs.loc["cpn", "share"] > coefs.loc["lightgbm", "share"]     # the stronger member is trusted more
    assert coefs["share"].sum() == pytest.approx(1.0)


@pytest.mark.parametrize("meta", ["logistic", "lightgbm"])
def test_explanations_add_up_to_the_stacks_log_odds(meta):
    p, s = _predictions(n_stays=120, seed=4)
    stack = StackClassifier(meta=meta, min_child_samples=20, n_estimators=30).fit_predictions(p, s)
    t = stack.member_table(p, s)
    ex = stack.explain(t.head(6))
    assert set(ex.feature) == {"cpn", "lightgbm", "news2", "total"}
    items = ex[ex.feature != "total"]
    per_screen = items.groupby(["stay_id", "screen_time"], sort=False)["contribution"].sum().to_numpy()
    base = items.groupby(["stay_id", "screen_time"], sort=False)["baseline"].first().to_numpy()
    assert np.allclose(per_screen + base, stack.decision_function(t.head(6)), atol=1e-6)
    assert np.allclose(ex[ex.feature == "total"]["contribution"].to_numpy(), per_screen)
    assert np.allclose(items[items.feature == "cpn"]["value"].to_numpy(), t.head(6)["risk_cpn"].to_numpy())


def test_score_member_missing_gets_an_indicator_and_others_may_not_be_missing():
    p, s = _predictions(n_stays=120, seed=5)
    stack = StackClassifier().fit_predictions(p, s)
    assert stack.inputs_ == {"cpn": "logit", "lightgbm": "logit", "news2": "score"}
    assert np.isfinite(stack.coefficients_.set_index("member").loc["news2", "missing_coefficient"])
    t = stack.member_table(p, s)
    assert np.isfinite(stack.predict_proba(t)).all()
    t.loc[3, "risk_cpn"] = np.nan
    with pytest.raises(SchemaError, match=r"member 'cpn' has no risk on 1 screen\(s\) \(first: row 3\)"):
        stack.predict_proba(t)


def test_absent_members_at_fit_and_predict():
    p, s = _predictions(n_stays=60, members=("cpn",), seed=6)
    stack = StackClassifier().fit_predictions(p, s)            # works with whichever members exist
    assert stack.members_ == ["cpn", "news2"]
    with pytest.raises(SchemaError, match=r"member\(s\) 'lightgbm'; the table has cpn, news2"):
        StackClassifier(members=("cpn", "lightgbm")).fit_predictions(p, s)
    with pytest.raises(SchemaError, match=r"missing column\(s\) risk_news2 that this stack model was trained on"):
        stack.predict_proba(stack.member_table(p, s).drop(columns="risk_news2"))
    with pytest.raises(SchemaError, match="member.*'news2'"):
        stack.predictions_from(p[p.model != "news2"], s)


def test_a_probability_member_outside_0_1_is_refused():
    p, s = _predictions(n_stays=60, seed=7)
    bad = p.assign(risk=np.where(p.model == "cpn", p.risk * 3, p.risk))
    with pytest.raises(ValueError, match="member 'cpn': risk outside \\[0, 1\\].*scores="):
        StackClassifier().fit_predictions(bad, s)


def test_a_stack_of_complementary_members_beats_each_member_out_of_sample():
    rng = np.random.default_rng(8)
    n = 6000
    y = (rng.random(n) < 0.15).astype(int)
    half = rng.random(n) < 0.5
    a = np.where(half, 2.0 * y, 0) + rng.normal(0, 1, n)            # informative on one half
    b = np.where(~half, 2.0 * y, 0) + rng.normal(0, 1, n) + 0.8 * y  # on the other
    t = pd.DataFrame({"stay_id": np.arange(n), "screen_time": pd.Timestamp("2020-01-01"),
                      "onset_in_h": np.where(y == 1, 5.0, np.nan), "risk_a": expit(a), "risk_b": expit(b)})
    train, test = t.iloc[: n // 2], t.iloc[n // 2:]
    stack = StackClassifier().fit(train)
    yt = y[n // 2:]
    auc = roc_auc(yt, stack.predict_proba(test)[:, 1])
    assert auc > roc_auc(yt, test["risk_a"]) + 0.02 and auc > roc_auc(yt, test["risk_b"]) + 0.02


def test_bad_meta_and_single_class():
    p, s = _predictions(n_stays=30)
    with pytest.raises(ValueError, match="meta must be one of"):
        StackClassifier(meta="forest").fit_predictions(p, s)
    with pytest.raises(ValueError, match="single class"):
        StackClassifier().fit_predictions(p, s.assign(onset_in_h=np.nan))


@pytest.mark.parametrize("meta", ["logistic", "lightgbm"])
def test_save_load_round_trip(tmp_path, meta):
    p, s = _predictions(n_stays=120, seed=9)
    stack = StackClassifier(meta=meta, members=("cpn", "lightgbm", "news2"), min_child_samples=20,
                            n_estimators=20).fit_predictions(p, s)
    t = stack.member_table(p, s)
    back = StackClassifier.load(stack.save(tmp_path / "stack"))
    assert back.get_params() == stack.get_params()
    assert np.array_equal(back.predict_proba(t), stack.predict_proba(t))
    pd.testing.assert_frame_equal(back.coefficients_, stack.coefficients_)
    pd.testing.assert_frame_equal(back.explain(t.head(3)), stack.explain(t.head(3)))
    assert clone(back).get_params() == back.get_params()
    if meta == "lightgbm":
        (tmp_path / "stack" / "meta_lightgbm.txt").write_text("tampered")
        with pytest.raises(ModelFormatError, match="sha256"):
            StackClassifier.load(tmp_path / "stack")


def test_predictions_from_a_table_are_the_stacks_own_rows():
    p, s = _predictions(n_stays=60, seed=10)
    stack = StackClassifier().fit_predictions(p, s)
    dev = p.assign(split="dev", fold=pd.NA)
    out = stack.predictions_from(dev, s, split="dev")
    assert set(out.model) == {"stack"} and set(out.split) == {"dev"} and len(out) == len(s)
    assert out["fold"].isna().all()
