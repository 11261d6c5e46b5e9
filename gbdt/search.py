"""Hyperparameter grid search and patient-grouped cross-validation, as in the SepsisFinder study.

The grid spans tree depth, number of iterations, and L1/L2 regularisation; each candidate is
scored by AUROC over patient-grouped folds (:func:`ehr.splits.group_kfold` on stay ids unless
``groups`` are given; default 10, as in the study), so no stay is on both sides of a fold.
Iterations are searched for free: boosting is sequential and deterministic, so a model trained
for ``max(n_estimators)`` rounds and truncated to ``n`` rounds *is* the ``n``-round model. One
fit per (fold, depth, alpha, lambda) therefore scores every iteration count. Early stopping is
off inside the search (the iteration count is a grid axis).

Features are computed once for the whole table: they depend only on each stay's own past rows,
so a screen's features are the same whichever fold it falls in.

Examples
--------
>>> from gbdt._demo import demo_screens
>>> s = demo_screens(n_stays=80, seed=4)
>>> grid = {"max_depth": [2], "n_estimators": [5, 10], "reg_alpha": [0.0], "reg_lambda": [1.0]}
>>> res = grid_search(s, param_grid=grid, n_splits=3)
>>> res[["max_depth", "n_estimators", "rank"]].shape
(2, 3)
"""

from __future__ import annotations

import itertools
import logging
import time
from pathlib import Path

import numpy as np
import pandas as pd
from sklearn.base import clone
from sklearn.metrics import average_precision_score, roc_auc_score

from ehr.estimator import Labels
from ehr.splits import group_kfold

from .model import GBDTClassifier, _check_two_classes

__all__ = ["DEFAULT_GRID", "FULL_GRID", "grid_search", "best_params", "write_grid_results",
           "cross_validate", "GRID_RESULTS_FILE"]

log = logging.getLogger(__name__)

#: Small grid: 4 fits per fold (x 3 iteration counts for free); sized for set A in < 20 min on 2 cores.
DEFAULT_GRID: dict[str, list] = {
    "max_depth": [3, 6],
    "n_estimators": [50, 100, 200],
    "reg_alpha": [0.0],
    "reg_lambda": [1.0, 10.0],
}
#: The full grid (opt-in): 5 x 4 x 4 = 80 fits per fold.
FULL_GRID: dict[str, list] = {
    "max_depth": [2, 3, 4, 6, 8],
    "n_estimators": [100, 200, 400, 800],
    "reg_alpha": [0.0, 0.1, 1.0, 10.0],
    "reg_lambda": [0.0, 1.0, 10.0, 100.0],
}
GRID_RESULTS_FILE = "grid_results.csv"
_AXES = ("max_depth", "n_estimators", "reg_alpha", "reg_lambda")


def _resolve_grid(param_grid) -> dict[str, list]:
    if isinstance(param_grid, str):
        grids = {"default": DEFAULT_GRID, "full": FULL_GRID}
        if param_grid not in grids:
            raise ValueError(f"param_grid must be 'default', 'full' or a dict, got {param_grid!r}")
        return grids[param_grid]
    missing = [a for a in _AXES if a not in param_grid]
    extra = [k for k in param_grid if k not in _AXES]
    if missing or extra:
        raise ValueError(f"param_grid needs exactly the axes {list(_AXES)}; "
                         f"missing {missing}, unknown {extra}")
    empty = [a for a in _AXES if len(param_grid[a]) == 0]
    if empty:
        raise ValueError(f"param_grid axis/axes {empty} have no values")
    return {a: list(param_grid[a]) for a in _AXES}


def _folds(y, groups, n_splits, random_state):
    folds = group_kfold(groups, n_splits, random_state=random_state)
    for k, (tr, te) in enumerate(folds):
        _check_two_classes(y[tr], f"fold {k} training part")
        _check_two_classes(y[te], f"fold {k} test part")
    return folds


def _progress(it, total, progress, desc):
    if not progress:
        return it
    from tqdm.auto import tqdm

    return tqdm(it, total=total, desc=desc)


def grid_search(screens: pd.DataFrame, labels: Labels | None = None, groups=None, *, param_grid="default",
                n_splits: int = 10, estimator: GBDTClassifier | None = None,
                random_state: int = 0, progress: bool = False, extend_edges: int = 0) -> pd.DataFrame:
    """Score every grid point by patient-grouped k-fold AUROC.

    Parameters
    ----------
    screens : DataFrame
        Screens table (training set only).
    labels : ehr.estimator.Labels, optional
        The target is ``labels.y``; default from ``screens["onset_in_h"]`` (48 h horizon).
    groups : array-like, optional
        Patient groups of the folds; default ``screens["stay_id"]``.
    param_grid : "default", "full" or dict
        Lists of values for ``max_depth``, ``n_estimators``, ``reg_alpha``, ``reg_lambda``.
    n_splits : int, default 10
    estimator : GBDTClassifier, optional
        Supplies the other hyperparameters (backend, learning rate, trend, ...).
    random_state : int, default 0
        Seeds the fold assignment.
    progress : bool, default False
    extend_edges : int, default 0
        Rounds of widening: when the best value of an axis searched at two or more values is the
        largest (or, above its natural floor, the smallest) one, the axis gets a value beyond it
        (:func:`extend_grid`) and the widened grid is searched again, up to this many times. A
        comparator tuned on a grid whose winner sits on the edge is not tuned fairly.

    Returns
    -------
    DataFrame
        One row per grid point: the four axes, ``mean_auroc``, ``std_auroc``, ``mean_auprc``,
        ``fit_time_s`` (mean per fold of the fit that produced it), ``auroc_fold<k>``, ``rank``
        (1 = best mean AUROC), ``search_round`` (0: the grid as given); sorted by rank.
    """
    grid = _resolve_grid(param_grid)
    base = GBDTClassifier() if estimator is None else estimator
    features = base.screen_features().fit(screens)
    X = features.transform(screens)
    y = base.target(labels, screens)  # label_horizon, when set, is the training target
    groups = screens["stay_id"].to_numpy() if groups is None else np.asarray(groups)
    folds = _folds(y, groups, n_splits, random_state)
    for round_ in range(int(extend_edges) + 1):
        res = _score_grid(grid, base, features, X, y, groups, folds, progress).assign(search_round=round_)
        wider = extend_grid(grid, best_params(res))
        if wider == grid:
            break
        if round_ < int(extend_edges):
            log.info("best grid point on an edge: searching %s", wider)
        grid = wider
    return res


def extend_grid(grid: dict, best: dict) -> dict:
    """``grid`` with one value beyond each edge that ``best`` sits on (axes with two or more values).

    Upwards: twice the iterations, two levels deeper, ten times the regularisation. Downwards: half
    the iterations, one level shallower, a tenth of the regularisation (not below 1 iteration, depth
    1 or a penalty of 0, the natural floors).

    >>> g = {"max_depth": [3, 6], "n_estimators": [50, 200], "reg_alpha": [0.0], "reg_lambda": [1.0, 10.0]}
    >>> extend_grid(g, {"max_depth": 3, "n_estimators": 200, "reg_alpha": 0.0, "reg_lambda": 10.0})
    {'max_depth': [2, 3, 6], 'n_estimators': [50, 200, 400], 'reg_alpha': [0.0], 'reg_lambda': [1.0, 10.0, 100.0]}
    """
    up = {"max_depth": lambda v: v + 2, "n_estimators": lambda v: 2 * v, "reg_alpha": lambda v: 10.0 * v,
          "reg_lambda": lambda v: 10.0 * v}
    down = {"max_depth": lambda v: v - 1 if v > 1 else None, "n_estimators": lambda v: v // 2 if v >= 2 else None,
            "reg_alpha": lambda v: v / 10.0 if v > 0 else None, "reg_lambda": lambda v: v / 10.0 if v > 0 else None}
    out = {}
    for axis in _AXES:
        values = sorted(set(grid[axis]))
        if len(values) > 1 and best[axis] == values[-1] and up[axis](values[-1]) > values[-1]:
            values.append(type(values[-1])(up[axis](values[-1])))
        elif len(values) > 1 and best[axis] == values[0] and down[axis](values[0]) is not None:
            values.insert(0, type(values[0])(down[axis](values[0])))
        out[axis] = values
    return out if out != {a: sorted(set(grid[a])) for a in _AXES} else grid


def _score_grid(grid, base, features, X, y, groups, folds, progress) -> pd.DataFrame:
    """Mean fold AUROC (and AUPRC) of every point of ``grid`` (see :func:`grid_search`)."""
    n_list = sorted(int(n) for n in grid["n_estimators"])
    fit_points = list(itertools.product(grid["max_depth"], grid["reg_alpha"], grid["reg_lambda"]))
    auroc = {}
    auprc = {}
    fit_time: dict[tuple, list[float]] = {}
    jobs = [(k, p) for k in range(len(folds)) for p in fit_points]
    cached_fold, Xtr = None, None
    for k, (depth, alpha, lam) in _progress(jobs, len(jobs), progress, "grid search"):
        tr, te = folds[k]
        if cached_fold != k:  # one copy of the fold's training rows for all its grid points
            cached_fold, Xtr = k, X.iloc[tr]
        model = clone(base).set_params(max_depth=int(depth), reg_alpha=float(alpha),
                                       reg_lambda=float(lam), n_estimators=n_list[-1],
                                       early_stopping_rounds=None)
        t0 = time.perf_counter()
        model._fit_matrix(Xtr, y[tr], groups[tr], features, where=f"fold {k}")
        fit_time.setdefault((depth, alpha, lam), []).append(time.perf_counter() - t0)
        Xte = X.iloc[te][model.feature_names_].to_numpy(dtype="float32")
        for n in n_list:
            m = model._margin_matrix(Xte, n_iter=min(n, model.n_estimators_))
            auroc[(depth, n, alpha, lam, k)] = roc_auc_score(y[te], m)
            auprc[(depth, n, alpha, lam, k)] = average_precision_score(y[te], m)
        log.info("fold %d depth=%s alpha=%s lambda=%s: AUROC@%d=%.4f", k, depth, alpha, lam,
                 n_list[-1], auroc[(depth, n_list[-1], alpha, lam, k)])
    rows = []
    for depth, alpha, lam in fit_points:
        for n in n_list:
            a = np.array([auroc[(depth, n, alpha, lam, k)] for k in range(len(folds))])
            p = np.array([auprc[(depth, n, alpha, lam, k)] for k in range(len(folds))])
            row = {"max_depth": depth, "n_estimators": n, "reg_alpha": alpha, "reg_lambda": lam,
                   "mean_auroc": a.mean(), "std_auroc": a.std(ddof=1) if len(a) > 1 else 0.0,
                   "mean_auprc": p.mean(),
                   "fit_time_s": float(np.mean(fit_time[(depth, alpha, lam)]))}
            row.update({f"auroc_fold{k}": a[k] for k in range(len(folds))})
            rows.append(row)
    res = pd.DataFrame(rows)
    res["rank"] = res["mean_auroc"].rank(ascending=False, method="min").astype("int64")
    return res.sort_values(["rank", "n_estimators", "max_depth"], kind="stable").reset_index(drop=True)


def best_params(results: pd.DataFrame) -> dict:
    """The grid point with the best mean AUROC (ties: fewest iterations, shallowest trees)."""
    top = results.sort_values(["rank", "n_estimators", "max_depth"], kind="stable").iloc[0]
    return {"max_depth": int(top["max_depth"]), "n_estimators": int(top["n_estimators"]),
            "reg_alpha": float(top["reg_alpha"]), "reg_lambda": float(top["reg_lambda"])}


def write_grid_results(results: pd.DataFrame, run_dir) -> Path:
    """Write ``grid_results.csv`` into ``run_dir``; return its path."""
    d = Path(run_dir)
    d.mkdir(parents=True, exist_ok=True)
    path = d / GRID_RESULTS_FILE
    results.to_csv(path, index=False)
    return path


def cross_validate(screens: pd.DataFrame, estimator: GBDTClassifier | None = None,
                   labels: Labels | None = None, groups=None, *, n_splits: int = 5, random_state: int = 0,
                   model_name: str | None = None, progress: bool = False):
    """Out-of-fold predictions by patient-grouped k-fold cross-validation.

    Returns
    -------
    predictions : DataFrame
        ``predictions`` contract table, ``split="test"``, ``fold`` set; one row per screen.
    folds : DataFrame
        Per fold: ``fold``, ``n_train``, ``n_test``, ``auroc``, ``auprc``, ``fit_time_s``,
        ``n_estimators`` (kept after early stopping).

    Examples
    --------
    >>> from gbdt._demo import demo_screens
    >>> s = demo_screens(n_stays=80, seed=5)
    >>> pred, folds = cross_validate(s, GBDTClassifier(n_estimators=10), n_splits=3)
    >>> len(pred) == len(s), len(folds)
    (True, 3)
    """
    from ehr.schema import validate

    base = GBDTClassifier() if estimator is None else estimator
    features = base.screen_features().fit(screens)
    X = features.transform(screens)
    y = base.target(labels, screens)  # label_horizon, when set, is the training target
    groups = screens["stay_id"].to_numpy() if groups is None else np.asarray(groups)
    folds = _folds(y, groups, n_splits, random_state)
    risk = np.full(len(y), np.nan)
    fold_of = np.full(len(y), -1, dtype=np.int64)
    rows = []
    for k, (tr, te) in _progress(enumerate(folds), len(folds), progress, "cross-validation"):
        model = clone(base)
        t0 = time.perf_counter()
        model._fit_matrix(X.iloc[tr], y[tr], groups[tr], features, where=f"fold {k}")
        dt = time.perf_counter() - t0
        m = model._margin_matrix(X.iloc[te][model.feature_names_].to_numpy(dtype="float32"))
        risk[te] = 1.0 / (1.0 + np.exp(-np.asarray(m, dtype="float64")))
        fold_of[te] = k
        rows.append({"fold": k, "n_train": len(tr), "n_test": len(te),
                     "auroc": roc_auc_score(y[te], m), "auprc": average_precision_score(y[te], m),
                     "fit_time_s": dt, "n_estimators": model.n_estimators_})
    pred = pd.DataFrame({
        "stay_id": screens["stay_id"].to_numpy(dtype="int64"),
        "screen_time": screens["screen_time"].to_numpy(),
        "model": model_name or base.model_name,
        "risk": risk,
        "fold": fold_of,
        "split": "test",
    })
    return validate(pred, "predictions"), pd.DataFrame(rows)
