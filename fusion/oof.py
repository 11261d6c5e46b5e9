"""Out-of-fold predictions: the only predictions a stacking meta-learner may be fitted on.

:func:`oof_predictions` fits a fresh copy (``sklearn.base.clone``) of any
:class:`ehr.estimator.SepsisEstimator` on K-1 patient-grouped folds (:func:`ehr.splits.group_kfold`
on ``subject_id``) and scores the held-out fold, for every fold: each screen is predicted by a
model that never saw its patient. The result is an ordinary ``predictions`` table with ``fold``
filled (the fold that held the screen out) and ``split`` as given (``"train"`` in the main job), so
a meta-learner is fitted on the training split and never on the dev split that picks thresholds.

:func:`pair_folds` is the cheaper nested scheme used in cross-validated stacking experiments
(see :mod:`fusion.stack_cv`).

Examples
--------
>>> from gbdt._demo import demo_screens
>>> from gbdt.model import GBDTClassifier
>>> s = demo_screens(n_stays=40, seed=0)
>>> m = GBDTClassifier(n_estimators=5, early_stopping_rounds=None)
>>> oof = oof_predictions(m, s, n_splits=3)
>>> len(oof) == len(s), sorted(oof["fold"].unique().tolist()), oof["split"].unique().tolist()
(True, [0, 1, 2], ['train'])
>>> hasattr(m, "booster_")      # the estimator passed in is left unfitted
False
"""

from __future__ import annotations

import time
from collections.abc import Callable

import numpy as np
import pandas as pd
from sklearn.base import clone

from ehr.estimator import Labels, predictions_frame
from ehr.splits import group_kfold

__all__ = ["patient_groups", "fold_assignment", "oof_predictions", "pair_folds"]


def patient_groups(screens: pd.DataFrame) -> np.ndarray:
    """The grouping of screens for every split: ``subject_id`` (a patient), else ``stay_id``."""
    return screens["subject_id" if "subject_id" in screens.columns else "stay_id"].to_numpy()


def fold_assignment(screens: pd.DataFrame, n_splits: int = 5, *, random_state=None) -> np.ndarray:
    """Fold number (0..K-1) of each screen; all screens of a patient share one fold.

    >>> s = pd.DataFrame({"subject_id": [1, 1, 2, 3, 3, 4]})
    >>> f = fold_assignment(s, 2)
    >>> bool(f[0] == f[1] and f[3] == f[4]), sorted(set(f.tolist()))
    (True, [0, 1])
    """
    folds = np.full(len(screens), -1, dtype=np.int64)
    for k, (_, held) in enumerate(group_kfold(patient_groups(screens), n_splits, random_state=random_state)):
        folds[held] = k
    return folds


def _fit_kwargs(fit_params, train: pd.DataFrame) -> dict:
    if fit_params is None:
        return {}
    return fit_params(train) if callable(fit_params) else dict(fit_params)


def oof_predictions(estimator, screens: pd.DataFrame, labels: Labels | None = None, *, n_splits: int = 5,
                    folds=None, random_state=None, name: str | None = None, split: str | None = "train",
                    fit_params: Callable[[pd.DataFrame], dict] | dict | None = None,
                    timings: list | None = None) -> pd.DataFrame:
    """K-fold out-of-fold ``predictions`` of ``estimator`` on ``screens`` (grouped by patient).

    Parameters
    ----------
    estimator : SepsisEstimator
        Fitted or not; each fold fits ``sklearn.base.clone(estimator)``, so only its
        hyperparameters are used and it is left unchanged.
    screens : DataFrame
        Screens with labels (``onset_in_h``) or ``labels`` given, and ``subject_id`` (else
        ``stay_id``) for the groups.
    labels : ehr.estimator.Labels, optional
        Default: the screens' ``onset_in_h`` with the 48 h horizon.
    n_splits, random_state : int
        :func:`ehr.splits.group_kfold` folds (``random_state=None``: scikit-learn's deterministic
        balanced assignment). Ignored when ``folds`` is given.
    folds : array of int, optional
        A fold number per screen (e.g. from :func:`fold_assignment`), so several members share folds.
    name : str, optional
        Model name in the table (default: the fitted model's ``model_name``).
    split : str or None, default "train"
        Value of the ``split`` column.
    fit_params : callable or dict, optional
        Extra ``fit`` keywords; a callable receives the fold's training screens (e.g.
        ``lambda tr: {"groups": tr["subject_id"]}`` for a GBDT's early stopping by patient).
    timings : list, optional
        Receives one ``{"fold", "fit_s", "n_train"}`` record per fold.

    Returns
    -------
    DataFrame
        The contract ``predictions`` table, in the row order of ``screens``.
    """
    screens = screens.reset_index(drop=True)
    labels = Labels.coerce(labels, screens)
    folds = fold_assignment(screens, n_splits, random_state=random_state) if folds is None else np.asarray(folds)
    if folds.shape != (len(screens),):
        raise ValueError(f"folds has shape {folds.shape}, expected ({len(screens)},)")
    if (folds < 0).any():
        raise ValueError(f"folds: {int((folds < 0).sum())} screen(s) have no fold (negative number)")
    risk = np.full(len(screens), np.nan)
    model_name = name
    for k in np.unique(folds):
        held = folds == k
        train = screens[~held]
        if train.empty:
            raise ValueError(f"fold {k} holds out every screen; out-of-fold predictions need at least two folds")
        t0 = time.perf_counter()
        model = clone(estimator).fit(train, labels.take(~held), **_fit_kwargs(fit_params, train))
        if timings is not None:
            timings.append({"fold": int(k), "fit_s": time.perf_counter() - t0, "n_train": int((~held).sum())})
        risk[held] = np.asarray(model.predict_proba(screens[held]))[:, 1]
        model_name = model_name or model.model_name
    return predictions_frame(screens, risk, model=model_name, split=split, fold=folds)


def pair_folds(folds: np.ndarray) -> dict[frozenset, np.ndarray]:
    """Training rows of each pair of folds left out: ``{frozenset({j, k}): rows outside j and k}``.

    In nested stacking, the meta-learner of outer fold ``k`` needs out-of-fold member predictions
    on every other fold ``j``. A model fitted without folds ``j`` and ``k`` serves both the
    prediction of ``j`` for outer fold ``k`` and of ``k`` for outer fold ``j``, so K folds need
    K(K-1)/2 inner fits instead of K(K-1), and no inner model ever sees the outer test fold.

    >>> f = np.array([0, 0, 1, 2, 2])
    >>> {tuple(sorted(p)): rows.tolist() for p, rows in pair_folds(f).items()}
    {(0, 1): [3, 4], (0, 2): [2], (1, 2): [0, 1]}
    """
    ks = [int(k) for k in np.unique(folds)]
    return {frozenset((j, k)): np.flatnonzero((folds != j) & (folds != k))
            for a, j in enumerate(ks) for k in ks[a + 1:]}
