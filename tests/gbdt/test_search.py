import numpy as np
import pandas as pd
import pytest
from sklearn.metrics import roc_auc_score

from gbdt.features import ScreenFeatures
from gbdt.model import GBDTClassifier
from gbdt.search import (DEFAULT_GRID, FULL_GRID, best_params, cross_validate, grid_search,
                         write_grid_results)

GRID = {"max_depth": [1, 3], "n_estimators": [4, 8], "reg_alpha": [0.0], "reg_lambda": [1.0, 5.0]}


@pytest.fixture(scope="module")
def results(tiny_screens):
    return grid_search(tiny_screens, param_grid=GRID, n_splits=3)


def test_grid_results_table(results):
    assert len(results) == 2 * 2 * 1 * 2
    assert {"max_depth", "n_estimators", "reg_alpha", "reg_lambda", "mean_auroc", "std_auroc",
            "mean_auprc", "fit_time_s", "auroc_fold0", "auroc_fold2", "rank"} <= set(results.columns)
    assert results["rank"].iloc[0] == 1 and results["rank"].is_monotonic_increasing
    folds = results[["auroc_fold0", "auroc_fold1", "auroc_fold2"]].to_numpy()
    np.testing.assert_allclose(results["mean_auroc"], folds.mean(axis=1))
    assert results["mean_auroc"].between(0.5, 1.0).all()
    best = best_params(results)
    assert best == {k: type(best[k])(results.iloc[0][k]) for k in best}


def test_truncated_iterations_equal_a_shorter_fit(tiny_screens):
    """The search scores n rounds by truncating the longest fit; that must be the n-round model."""
    X = ScreenFeatures().fit_transform(tiny_screens)
    for backend in ("lightgbm", "xgboost"):
        kw = dict(max_depth=3, early_stopping_rounds=None, device="cpu")
        long = GBDTClassifier(backend, n_estimators=12, **kw).fit(tiny_screens)
        short = GBDTClassifier(backend, n_estimators=5, **kw).fit(tiny_screens)
        Xm = X[long.feature_names_].to_numpy(dtype="float32")
        np.testing.assert_allclose(long._margin_matrix(Xm, n_iter=5), short._margin_matrix(Xm),
                                   rtol=1e-6, atol=1e-6)


def test_grid_fold_scores_match_a_direct_fit(tiny_screens, results):
    """Recompute one cell by hand with sklearn's GroupKFold and a plain fit."""
    from sklearn.model_selection import GroupKFold

    y = tiny_screens["label"].to_numpy()
    g = tiny_screens["stay_id"].to_numpy()
    tr, te = list(GroupKFold(3, shuffle=True, random_state=0).split(tiny_screens, y, g))[1]
    m = GBDTClassifier(max_depth=3, n_estimators=8, reg_lambda=5.0, early_stopping_rounds=None)
    m.fit(tiny_screens.iloc[tr])
    auc = roc_auc_score(y[te], m.predict_proba(tiny_screens.iloc[te])[:, 1])
    row = results[(results.max_depth == 3) & (results.n_estimators == 8) & (results.reg_lambda == 5.0)]
    assert row["auroc_fold1"].item() == pytest.approx(auc, abs=1e-9)


def test_write_grid_results(results, tmp_path):
    path = write_grid_results(results, tmp_path / "run")
    assert path.name == "grid_results.csv"
    pd.testing.assert_frame_equal(pd.read_csv(path), results, check_dtype=False)


def test_single_class_fold_is_named(tiny_screens):
    s = tiny_screens.copy()
    septic = s.loc[s["label"] == 1, "stay_id"].unique()
    s = s[~s["stay_id"].isin(septic[1:])]  # one septic stay left: some fold has no positive
    with pytest.raises(ValueError, match=r"fold \d (test|training) part: only one class"):
        grid_search(s, param_grid=GRID, n_splits=3)


def test_bad_grid_and_splits(tiny_screens):
    with pytest.raises(ValueError, match="missing.*reg_alpha"):
        grid_search(tiny_screens, param_grid={"max_depth": [1], "n_estimators": [1], "reg_lambda": [1]})
    with pytest.raises(ValueError, match="'default', 'full'"):
        grid_search(tiny_screens, param_grid="huge")
    with pytest.raises(ValueError, match="n_splits"):
        grid_search(tiny_screens, param_grid=GRID, n_splits=1)


def test_grids_span_the_study_axes():
    for grid in (DEFAULT_GRID, FULL_GRID):
        assert set(grid) == {"max_depth", "n_estimators", "reg_alpha", "reg_lambda"}
    assert all(len(FULL_GRID[a]) >= len(DEFAULT_GRID[a]) for a in FULL_GRID)


def test_cross_validate_predicts_every_screen_once_out_of_fold(tiny_screens):
    pred, folds = cross_validate(tiny_screens, GBDTClassifier(n_estimators=10, device="cpu"),
                                 n_splits=4)
    assert len(pred) == len(tiny_screens) and pred["risk"].between(0, 1).all()
    assert sorted(pred["fold"].unique()) == [0, 1, 2, 3] and (pred["split"] == "test").all()
    per_stay = pred.groupby("stay_id")["fold"].nunique()
    assert (per_stay == 1).all()  # stays are never split across folds
    assert list(folds["fold"]) == [0, 1, 2, 3] and folds["auroc"].between(0.5, 1).all()
    assert folds["n_test"].sum() == len(tiny_screens)


def test_a_best_value_on_the_edge_widens_the_grid(tiny_screens, results):
    """The winner of the first search sits on at least one edge here; one more round searches beyond
    it, scores every point again and the round-0 points keep their scores."""
    from gbdt.search import extend_grid

    best = best_params(results)
    wider = extend_grid(GRID, best)
    assert wider != GRID  # the tiny grid's best point lies on an edge (else this test checks nothing)
    again = grid_search(tiny_screens, param_grid=GRID, n_splits=3, extend_edges=1)
    assert set(again["search_round"]) == {1} and len(again) == np.prod([len(v) for v in wider.values()])
    key = ["max_depth", "n_estimators", "reg_alpha", "reg_lambda"]
    both = results.merge(again, on=key, suffixes=("", "_wide"))
    assert len(both) == len(results)
    np.testing.assert_allclose(both["mean_auroc"], both["mean_auroc_wide"])
    assert grid_search(tiny_screens, param_grid=GRID, n_splits=3)["search_round"].eq(0).all()


def test_extend_grid_keeps_single_values_and_floors():
    from gbdt.search import extend_grid

    g = {"max_depth": [1, 3], "n_estimators": [1, 8], "reg_alpha": [0.0], "reg_lambda": [0.0, 5.0]}
    assert extend_grid(g, {"max_depth": 1, "n_estimators": 1, "reg_alpha": 0.0, "reg_lambda": 0.0}) is g
    assert extend_grid(g, {"max_depth": 3, "n_estimators": 8, "reg_alpha": 0.0, "reg_lambda": 5.0}) == \
        {"max_depth": [1, 3, 5], "n_estimators": [1, 8, 16], "reg_alpha": [0.0], "reg_lambda": [0.0, 5.0, 50.0]}
