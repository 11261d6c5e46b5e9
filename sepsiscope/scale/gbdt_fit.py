"""GBDT training on partitioned screens: LightGBM's ``DaskLGBMClassifier`` or XGBoost's Dask API.

The result is an ordinary :class:`gbdt.GBDTClassifier` (features, booster, ``model.json``), so it
scores and explains per partition like any saved model. What differs from ``GBDTClassifier.fit``:

* the feature encodings are learned from every part's distinct category values (the same
  encodings as one table gives), and all-NaN columns are dropped by a per-part count;
* early stopping after the fact: the Dask estimators evaluate on each worker's local rows, so the
  model trains ``n_estimators`` rounds on the rows ``fit`` trains on (the same patient-grouped
  holdout left out), then the holdout rows are gathered here and the booster is cut at the
  iteration ``fit``'s early stopping would keep (best validation AUROC, stopping after
  ``early_stopping_rounds`` rounds without improvement);
* LightGBM builds its histograms from each worker's rows and merges them (data-parallel), so
  trees differ slightly from one process's: ``docs/scale.md`` reports by how much on set A.

Without a Dask client (the serial mapper) the parts are concatenated and ``fit`` runs as usual.
"""

from __future__ import annotations

import numpy as np
import pandas as pd

from ehr.estimator import Labels
from ehr.partitions import resolve_part
from ehr.splits import held_out_groups

__all__ = ["fit_gbdt_partitioned"]

_CATEGORICAL = ("sex", "department")


def _exemplars(part: pd.DataFrame) -> pd.DataFrame:
    """One row per distinct combination of categorical values (what the encodings are fitted on)."""
    return resolve_part(part).drop_duplicates(list(_CATEGORICAL))


def _matrix(part, features, horizon_h: float, held_stays, held: bool = False) -> tuple:
    part = resolve_part(part)
    keep = np.isin(part["stay_id"].to_numpy(), held_stays) == held
    part = part.loc[keep]
    X = features.transform(part).to_numpy(dtype="float32")
    y = Labels.from_screens(part, horizon_h).y
    return X, y


def _positives_by_stay(part, horizon_h: float) -> pd.DataFrame:
    part = resolve_part(part)
    y = Labels.from_screens(part, horizon_h).y
    subject = part["subject_id" if "subject_id" in part.columns else "stay_id"].to_numpy()
    return (pd.DataFrame({"stay_id": part["stay_id"].to_numpy(), "subject_id": subject, "y": y})
            .groupby(["stay_id", "subject_id"])["y"].max().reset_index())


def _not_nan(Xy: tuple) -> np.ndarray:
    return (~np.isnan(Xy[0])).any(axis=0)


def _rows(Xy: tuple) -> int:
    return len(Xy[1])


def _take(Xy: tuple, i: int):
    return Xy[i]


def _column_take(Xy: tuple, columns) -> np.ndarray:
    return np.ascontiguousarray(Xy[0][:, columns])


def fit_gbdt_partitioned(model, parts: list, mapper, *, horizon_h: float = 48.0):
    """Fit ``model`` (an unfitted :class:`gbdt.GBDTClassifier`) on parts of the training screens."""
    client = getattr(mapper, "client", None)
    if client is None:
        screens = pd.concat([resolve_part(p) for p in mapper.gather(parts)], ignore_index=True)
        groups = screens["subject_id" if "subject_id" in screens.columns else "stay_id"].to_numpy()
        return model.fit(screens, Labels.from_screens(screens, horizon_h), groups=groups)
    import dask
    import dask.array as da

    model._check_params()
    if model.label_horizon is not None:  # the model's own training horizon, as in GBDTClassifier.fit
        horizon_h = float(model.label_horizon)
    exemplars = pd.concat(mapper.gather(mapper.map(_exemplars, parts)), ignore_index=True)
    features = model.screen_features().fit(exemplars)
    held = np.array([], dtype=np.int64)
    if model.early_stopping_rounds and model.validation_fraction > 0:
        pos = pd.concat(mapper.gather(mapper.map(_positives_by_stay, parts, horizon_h=horizon_h)))
        # early stopping holds out whole patients, as the single-process fit does (a patient's stays
        # may sit in different parts: their labels meet here)
        by_subject = pos.groupby("subject_id")["y"].max().sort_index()
        idx = held_out_groups(len(by_subject), model.validation_fraction, has_pos=by_subject.to_numpy() > 0,
                              random_state=model.random_state)
        held = np.sort(pos.loc[pos["subject_id"].isin(by_subject.index[idx]), "stay_id"].to_numpy())
    Xy = mapper.map(_matrix, parts, features=mapper.share(features), horizon_h=horizon_h,
                    held_stays=mapper.share(held))
    not_nan = np.logical_or.reduce(mapper.gather(mapper.map(_not_nan, Xy)))
    names = features.feature_names_
    keep_cols = np.flatnonzero(not_nan)
    if not len(keep_cols):
        raise ValueError("training data: every feature column is entirely NaN; the screens carry no measured values")
    n_rows = mapper.gather(mapper.map(_rows, Xy))
    X = da.concatenate([da.from_delayed(dask.delayed(_column_take)(f, keep_cols), shape=(n, len(keep_cols)),
                                        dtype="float32") for f, n in zip(Xy, n_rows) if n])
    y = da.concatenate([da.from_delayed(dask.delayed(_take)(f, 1), shape=(n,), dtype="int64")
                        for f, n in zip(Xy, n_rows) if n])
    n_pos = int(y.sum().compute())
    if n_pos == 0 or n_pos == sum(n_rows):
        raise ValueError(f"training data: only one class among {sum(n_rows)} screens")
    model.scale_pos_weight_ = (sum(n_rows) - n_pos) / n_pos if model.class_weight == "balanced" else 1.0
    booster = _train(model, client, X, y)
    n_trees = int(model.n_estimators)
    if len(held):
        valid = mapper.gather(mapper.map(_matrix, parts, features=mapper.share(features), horizon_h=horizon_h,
                                         held_stays=mapper.share(held), held=True))
        X_va = np.concatenate([v[0] for v in valid])[:, keep_cols]
        y_va = np.concatenate([v[1] for v in valid])
        n_trees = _early_stopping_iteration(model, booster, X_va, y_va)
        booster = _truncate(model, booster, n_trees)
    model.features_ = features
    model.features_in_ = features.input_columns()
    model.dropped_features_ = [names[i] for i in np.flatnonzero(~not_nan)]
    model.feature_names_ = [names[i] for i in keep_cols]
    model.booster_, model.n_estimators_ = booster, n_trees
    model.device_ = "cpu"
    model.classes_ = np.array([0, 1])
    model.training_summary_ = {"n_screens": int(sum(n_rows)), "n_stays": None, "n_positive": n_pos,
                               "n_features_in": len(names), "distributed": True}
    model.data_hashes_ = {}
    return model


def _train(model, client, X, y):
    if model.backend == "lightgbm":
        import lightgbm as lgb
        from lightgbm.dask import DaskLGBMClassifier

        clf = DaskLGBMClassifier(
            client=client, objective="binary", learning_rate=model.learning_rate, max_depth=int(model.max_depth),
            num_leaves=int(min(2 ** model.max_depth, 4096)), reg_alpha=model.reg_alpha,
            reg_lambda=model.reg_lambda, scale_pos_weight=model.scale_pos_weight_, random_state=model.random_state,
            n_estimators=int(model.n_estimators), n_jobs=int(model.n_jobs), deterministic=True, verbosity=-1)
        clf.fit(X, y)
        return lgb.Booster(model_str=clf.booster_.model_to_string())
    import xgboost as xgb

    params = {"objective": "binary:logistic", "eta": model.learning_rate, "max_depth": int(model.max_depth),
              "alpha": model.reg_alpha, "lambda": model.reg_lambda, "scale_pos_weight": model.scale_pos_weight_,
              "seed": model.random_state, "nthread": int(model.n_jobs), "tree_method": "hist"}
    out = xgb.dask.train(client, params, xgb.dask.DaskDMatrix(client, X, y),
                         num_boost_round=int(model.n_estimators))
    booster = out["booster"]
    booster.set_param({"device": "cpu"})
    return booster


def _margins(model, booster, X, n_iter: int) -> np.ndarray:
    if model.backend == "lightgbm":
        return booster.predict(X, raw_score=True, num_iteration=n_iter)
    return booster.inplace_predict(X, predict_type="margin", iteration_range=(0, n_iter))


def _early_stopping_iteration(model, booster, X_va, y_va) -> int:
    """The iteration LightGBM's/XGBoost's early stopping on validation AUROC keeps: the first best,
    looking no further than ``early_stopping_rounds`` past it."""
    from evaluation.metrics import roc_auc

    rounds = int(model.early_stopping_rounds)
    best, best_auc = 1, -np.inf
    for i in range(1, int(model.n_estimators) + 1):
        auc = roc_auc(y_va, _margins(model, booster, X_va, i))
        if auc > best_auc:
            best, best_auc = i, auc
        elif i - best >= rounds:
            break
    return best


def _truncate(model, booster, n_trees: int):
    if model.backend == "lightgbm":
        import lightgbm as lgb

        return lgb.Booster(model_str=booster.model_to_string(num_iteration=n_trees))
    return booster[:n_trees]
