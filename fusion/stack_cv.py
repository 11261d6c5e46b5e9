"""Cross-validated stacking: members and stacks judged on the same patient-grouped outer folds.

For each outer fold ``k`` every member is fitted on the other folds and scores fold ``k`` (its
outer out-of-fold predictions), and each stack's meta-learner is fitted on member predictions of
the other folds that are themselves out-of-fold *and* never touched fold ``k``, then applied to the
members' predictions on fold ``k``. Fold schemes for those inner predictions:

``"pairs"``   (default) the member fitted without folds ``j`` and ``k`` predicts fold ``j`` for outer
              fold ``k`` (and fold ``k`` for outer fold ``j``): K(K-1)/2 inner fits per member
              (:func:`fusion.oof.pair_folds`)
``"nested"``  a fresh patient-grouped ``inner_splits``-fold split of the outer-training part:
              K x inner_splits inner fits per member
``"naive"``   the meta-learner reuses the outer out-of-fold predictions of the other folds; those
              models saw fold ``k``, so this leaks (slightly): a reference point that needs no
              inner fits, and the only scheme for members given as precomputed predictions

Score members (NEWS2) come as a ``predictions`` table and enter every stack unchanged.

Examples
--------
>>> from gbdt._demo import demo_screens
>>> from gbdt.model import GBDTClassifier
>>> s = demo_screens(n_stays=60, seed=0)
>>> members = {"a": GBDTClassifier(n_estimators=5, max_depth=2, early_stopping_rounds=None),
...            "b": GBDTClassifier(n_estimators=5, max_depth=1, early_stopping_rounds=None)}
>>> cv = stack_cv(s, members, n_splits=3, schemes=("pairs", "naive"))
>>> sorted(cv.predictions["model"].unique())
['a', 'b', 'stack_logistic_naive', 'stack_logistic_pairs']
>>> cv.timings.groupby("stage").size().to_dict()
{'inner': 6, 'meta': 6, 'outer': 6}
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd
from sklearn.base import clone

from ehr.artefacts import atomic_file
from ehr.estimator import Labels, predictions_frame
from evaluation.metrics import average_precision, roc_auc
from fusion.members import member_column, member_frame
from fusion.oof import fold_assignment, oof_predictions, pair_folds
from fusion.stacking import StackClassifier

__all__ = ["StackCV", "stack_cv", "cv_summary", "SCHEMES"]

SCHEMES = ("pairs", "nested", "naive")


@dataclass
class StackCV:
    """What :func:`stack_cv` returns.

    Attributes
    ----------
    predictions : DataFrame
        Contract ``predictions`` of every member and stack on every screen (``fold`` = the outer
        fold that held it out, ``split="test"``).
    timings : DataFrame
        ``model, stage (outer | inner | meta), fold, fit_s`` (an inner ``pairs`` fit names its
        two folds as ``"j+k"``).
    coefficients : DataFrame
        Each stack's :attr:`StackClassifier.coefficients_` per outer fold.
    folds : ndarray
        The outer fold of each screen.
    inner : DataFrame
        The meta-learners' training inputs of the ``pairs`` and ``nested`` schemes, so other
        meta-learners can be fitted on them later without refitting a member:
        ``stay_id, screen_time, scheme, outer_fold, risk_<member>...``, one row per screen and
        outer fold that does not hold it (empty for ``naive`` only).
    """

    predictions: pd.DataFrame
    timings: pd.DataFrame
    coefficients: pd.DataFrame
    folds: np.ndarray
    inner: pd.DataFrame | None = None


def _cached(cache, record, timings, compute):
    """``compute() -> (risk, [timing records])``, kept as ``cache/<model>_<stage>_<fold>.npz`` when
    ``cache`` is a folder, so an interrupted long experiment resumes where it stopped."""
    path = None if cache is None else Path(cache) / f"{record['model']}_{record['stage']}_{record['fold']}.npz"
    if path is not None and path.is_file():
        with np.load(path) as z:
            risk, fit_s = z["risk"], z["fit_s"]
    else:
        risk, fit_s = compute()
        if path is not None:
            path.parent.mkdir(parents=True, exist_ok=True)
            with atomic_file(path) as tmp, open(tmp, "wb") as fh:
                np.savez(fh, risk=risk, fit_s=np.asarray(fit_s, dtype="float64"))
    fit_s = np.atleast_1d(fit_s)
    if len(fit_s) == 1:
        timings.append({**record, "fit_s": float(fit_s[0])})
    else:  # nested inner folds: one record each
        timings.extend({**record, "fold": f"{record['fold']}/{i}", "fit_s": float(t)} for i, t in enumerate(fit_s))
    return risk


def _nested_oof(estimator, part, labels, n_splits, random_state, fit_params):
    tl: list = []
    p = oof_predictions(estimator, part, labels, n_splits=n_splits, random_state=random_state,
                        fit_params=fit_params, timings=tl)
    return p["risk"].to_numpy(), [t["fit_s"] for t in tl]


def _report(timings, callback):
    if callback is not None:
        callback(timings[-1])


def _fit_predict(estimator, screens, labels, train, score, fit_params):
    t0 = time.perf_counter()
    tr = screens.iloc[train]
    kw = fit_params(tr) if callable(fit_params) else dict(fit_params or {})
    model = clone(estimator).fit(tr, labels.take(train), **kw)
    risk = np.asarray(model.predict_proba(screens.iloc[score]))[:, 1]
    return risk, time.perf_counter() - t0


def stack_cv(screens: pd.DataFrame, members: dict, *, scores: pd.DataFrame | None = None,
             precomputed: pd.DataFrame | None = None, n_splits: int = 5, schemes=("pairs",), metas=None,
             inner_splits: int | None = None, fit_params: dict | None = None, random_state=None,
             callback: Callable[[dict], None] | None = None, cache=None) -> StackCV:
    """Outer K-fold CV of each member and of a stack per (meta-learner, fold scheme).

    Parameters
    ----------
    screens : DataFrame
        Screens with ``onset_in_h`` and ``subject_id`` (folds by patient).
    members : dict name -> SepsisEstimator
        Members fitted here (cloned per fit).
    scores : DataFrame, optional
        ``predictions`` of score members (NEWS2) on these screens; they may miss screens.
    precomputed : DataFrame, optional
        Outer out-of-fold ``predictions`` of further members (``fold`` must match the outer folds);
        used by the ``"naive"`` scheme only.
    n_splits : int, default 5
        Outer folds: :func:`fusion.oof.fold_assignment` (``random_state=None``: scikit-learn's
        deterministic ``GroupKFold``, the folds of ``scripts/cpn_cv.py``).
    schemes : tuple of {"pairs", "nested", "naive"}
    metas : dict name -> StackClassifier, optional
        Default ``{"logistic": StackClassifier()}``.
    inner_splits : int, optional
        Folds of the ``"nested"`` scheme (default ``n_splits``).
    fit_params : dict name -> callable or dict, optional
        Extra ``fit`` keywords per member (a callable receives the training screens).
    callback : callable, optional
        Called with each timing record as it is made (progress in scripts).
    cache : path, optional
        Folder keeping each fit's predictions, so a rerun (or an interrupted run) skips the fits
        already made. Clear it when members, folds or screens change.
    """
    unknown = [s for s in schemes if s not in SCHEMES]
    if unknown:
        raise ValueError(f"unknown fold scheme(s) {unknown}; choose from {SCHEMES}")
    screens = screens.reset_index(drop=True)
    labels = Labels.from_screens(screens)
    metas = metas or {"logistic": StackClassifier()}
    fit_params = fit_params or {}
    keys = screens[["stay_id", "screen_time"]]
    folds = fold_assignment(screens, n_splits, random_state=random_state)
    ks = np.unique(folds)
    timings: list = []

    score_cols = pd.DataFrame(index=screens.index)
    if scores is not None:
        sf = member_frame(scores, keys, optional=list(scores["model"].unique()))
        score_cols = sf[[c for c in sf.columns if c.startswith("risk_")]]
    outer = {m: np.full(len(screens), np.nan) for m in members}
    if precomputed is not None:
        pf = member_frame(precomputed, keys)
        pfold = member_frame(precomputed.assign(risk=precomputed["fold"].astype("float64")), keys)
        for m in precomputed["model"].unique():
            if not np.array_equal(pfold[member_column(m)].to_numpy(), folds.astype("float64")):
                raise ValueError(f"precomputed: member {m!r} was cross-validated on other folds than these "
                                 f"{n_splits} patient-grouped folds")
            outer[m] = pf[member_column(m)].to_numpy()
    inner = {s: {m: {k: np.full(len(screens), np.nan) for k in ks} for m in members} for s in schemes
             if s != "naive"}
    for k in ks:
        train, held = np.flatnonzero(folds != k), np.flatnonzero(folds == k)
        for m, est in members.items():
            params = fit_params.get(m)
            outer[m][held] = _cached(cache, {"model": m, "stage": "outer", "fold": str(k)}, timings,
                                     lambda: _fit_predict(est, screens, labels, train, held, params))
            if "nested" in schemes:
                inner["nested"][m][k][train] = _cached(
                    cache, {"model": m, "stage": "inner", "fold": str(k)}, timings,
                    lambda: _nested_oof(est, screens.iloc[train], labels.take(train), inner_splits or n_splits,
                                        random_state, params))
            _report(timings, callback)
    if "pairs" in schemes:
        for pair, train in pair_folds(folds).items():
            j, k = sorted(pair)
            both = np.flatnonzero((folds == j) | (folds == k))
            in_j = folds[both] == j
            for m, est in members.items():
                risk = _cached(cache, {"model": m, "stage": "inner", "fold": f"{j}+{k}"}, timings,
                               lambda: _fit_predict(est, screens, labels, train, both, fit_params.get(m)))
                _report(timings, callback)
                inner["pairs"][m][k][both[in_j]] = risk[in_j]     # fold j, for outer fold k
                inner["pairs"][m][j][both[~in_j]] = risk[~in_j]   # fold k, for outer fold j
    wide_outer = pd.concat([keys, score_cols, pd.DataFrame({member_column(m): r for m, r in outer.items()})], axis=1)
    preds = [predictions_frame(screens, r, model=m, split="test", fold=folds) for m, r in outer.items()]
    if scores is not None:
        fold_of = keys.assign(fold=pd.array(folds, dtype="Int64"))
        preds.append(scores.drop(columns="fold").merge(fold_of, on=["stay_id", "screen_time"], how="left")
                     .assign(split="test")[preds[0].columns])
    coefs = []
    for scheme in schemes:
        for meta_name, meta in metas.items():
            name = f"stack_{meta_name}_{scheme}"
            risk = np.full(len(screens), np.nan)
            for k in ks:
                train = np.flatnonzero(folds != k)
                if scheme == "naive":
                    tab = wide_outer.iloc[train]
                else:
                    cols = {member_column(m): inner[scheme][m][k][train] for m in members}
                    # only the members with inner predictions (not the precomputed ones)
                    tab = pd.concat([keys.iloc[train], score_cols.iloc[train],
                                     pd.DataFrame(cols, index=keys.index[train])], axis=1)
                t0 = time.perf_counter()
                stack = clone(meta).fit(tab, labels.take(train))
                timings.append({"model": name, "stage": "meta", "fold": str(k), "fit_s": time.perf_counter() - t0})
                _report(timings, callback)
                risk[folds == k] = stack.predict_proba(wide_outer.iloc[np.flatnonzero(folds == k)])[:, 1]
                coefs.append(stack.coefficients_.assign(model=name, fold=int(k)))
            preds.append(predictions_frame(screens, risk, model=name, split="test", fold=folds))
    inner_rows = [pd.concat([keys.iloc[train].assign(scheme=scheme, outer_fold=int(k)),
                             pd.DataFrame({member_column(m): inner[scheme][m][k][train] for m in members},
                                          index=keys.index[train])], axis=1)
                  for scheme in inner for k in ks for train in [np.flatnonzero(folds != k)]]
    inner_table = (pd.concat(inner_rows, ignore_index=True) if inner_rows else
                   pd.DataFrame(columns=["stay_id", "screen_time", "scheme", "outer_fold"]))
    return StackCV(predictions=pd.concat(preds, ignore_index=True), timings=pd.DataFrame(timings),
                   coefficients=pd.concat(coefs, ignore_index=True), folds=folds, inner=inner_table)


def cv_summary(predictions: pd.DataFrame, screens: pd.DataFrame) -> pd.DataFrame:
    """Screen-level AUROC and AUPRC per model: pooled over the folds, and the folds' mean and sd.

    ``screens`` supplies the label (``label``, else onset within 48 h from ``onset_in_h``). A model
    is judged on the screens it scored (NEWS2: those with an observation in the hour).
    """
    lab = screens[["stay_id", "screen_time"]].assign(
        y=screens["label"] if "label" in screens.columns else Labels.from_screens(screens).y)
    m = predictions.merge(lab, on=["stay_id", "screen_time"], how="inner", validate="many_to_one")
    rows = []
    for model, g in m.groupby("model", sort=False):
        per_fold = np.array([_aucs(f) for _, f in g.groupby("fold")] if g["fold"].notna().all() else [(np.nan,) * 2])
        sd = per_fold.std(axis=0, ddof=1) if len(per_fold) > 1 else np.full(2, np.nan)
        rows.append({"model": model, "n_screens": len(g), **dict(zip(("auroc", "auprc"), _aucs(g))),
                     "auroc_fold_mean": per_fold[:, 0].mean(), "auroc_fold_sd": sd[0],
                     "auprc_fold_mean": per_fold[:, 1].mean(), "auprc_fold_sd": sd[1]})
    return pd.DataFrame(rows)


def _aucs(frame: pd.DataFrame) -> tuple[float, float]:
    y, r = frame["y"].to_numpy(), frame["risk"].to_numpy()
    return roc_auc(y, r), average_precision(y, r)
