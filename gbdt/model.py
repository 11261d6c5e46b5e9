"""The gradient-boosting comparator: one scikit-learn face over LightGBM's and XGBoost's engines.

Class imbalance is handled with ``scale_pos_weight = n_negative / n_positive`` of the training
part (``class_weight="balanced"``): every positive screen counts as much as all negatives
together, divided by their number. This shifts the predicted probabilities upwards (they are
not calibrated to the prevalence); ranking metrics (AUROC/AUPRC) and thresholds matched to an
operating point are unaffected. Use ``class_weight=None`` for probabilities on the data's scale.

Early stopping monitors AUROC on a validation part split off by patient
(:func:`ehr.splits.holdout_groups`: groups drawn at random, stratified by whether they have a
positive screen), never by screen, so no stay is on both sides.

A :class:`ehr.estimator.SepsisEstimator`: it saves to ``model.json`` (kind ``gbdt``) plus the
engine's own text model (see :mod:`gbdt.io`).

Examples
--------
>>> from gbdt.model import GBDTClassifier
>>> from gbdt._demo import demo_screens
>>> screens = demo_screens(n_stays=60, seed=0)
>>> model = GBDTClassifier(n_estimators=20, early_stopping_rounds=None).fit(screens)
>>> model.predict_proba(screens).shape == (len(screens), 2)
True
"""

from __future__ import annotations

import logging
from functools import lru_cache

import numpy as np
import pandas as pd
from ehr.estimator import Labels, SepsisEstimator
from ehr.splits import holdout_groups

from . import io
from .features import ScreenFeatures

__all__ = ["GBDTClassifier", "cuda_available"]

log = logging.getLogger(__name__)

_BACKENDS = ("lightgbm", "xgboost")
_DEVICES = ("auto", "cpu", "cuda")


@lru_cache(maxsize=1)
def cuda_available() -> bool:
    """Whether XGBoost can train on a CUDA GPU here (torch's view of the machine when importable)."""
    import xgboost

    if not xgboost.build_info().get("USE_CUDA", False):
        return False
    try:
        import torch
    except ImportError:  # no torch: trust the CUDA build only if the driver library loads
        import ctypes

        try:
            ctypes.CDLL("libcuda.so.1")
        except OSError:
            return False
        return True
    return bool(torch.cuda.is_available())


class GBDTClassifier(SepsisEstimator):
    """Gradient-boosted trees on the screens table (LightGBM or XGBoost).

    Parameters
    ----------
    backend : {"lightgbm", "xgboost"}, default "lightgbm"
    max_depth : int, default 3
        Tree depth. LightGBM grows leaf-wise, so it also gets ``num_leaves = 2**max_depth``
        (capped at 4096) to make depth the single complexity knob for both engines. 3 won the
        default grid on PhysioNet set A (5-fold patient-grouped CV; depth 6 overfits).
    n_estimators : int, default 300
        Maximum number of boosting iterations.
    learning_rate : float, default 0.1
    reg_alpha, reg_lambda : float, default 0.0 and 1.0
        L1 and L2 regularisation of leaf weights.
    trend : bool, default False
        Add trend features (see :mod:`gbdt.features`).
    baseline : bool, default False
        Add the baseline view (deviation from the stay's own first-24 h mean, measurement counts
        in the last 24 h; see :mod:`gbdt.features`).
    label_horizon : float or None, default None
        Train on onset within this many hours instead of the horizon of the labels given to
        :meth:`fit` (48 h by default). A stacking member trained on another horizon (6, 12, 24 h)
        of the same screens ranks them differently from the 48 h model (issue 14); its risk is
        still reported as the model's risk, so only the meta-learner sees the 48 h label.
    class_weight : {"balanced", None}, default "balanced"
        ``"balanced"`` sets ``scale_pos_weight = n_negative / n_positive``.
    early_stopping_rounds : int or None, default 30
        Stop when validation AUROC has not improved for this many rounds; ``None`` trains all
        ``n_estimators`` rounds on all data.
    validation_fraction : float, default 0.1
        Fraction of groups (stays, or the ``groups`` given to :meth:`fit`) held out for early stopping.
    random_state : int, default 0
    n_jobs : int, default 1
    device : {"auto", "cpu", "cuda"}, default "auto"
        XGBoost only: ``"auto"`` trains on CUDA when :func:`cuda_available`. LightGBM always
        trains on the CPU; asking it for ``"cuda"`` is an error.

    Attributes
    ----------
    classes_ : ndarray, ``[0, 1]``
    features_ : gbdt.features.ScreenFeatures
    features_in_ : list of str
        Screen columns the features are computed from; screens to score must have them.
    feature_names_ : list of str
        Features the booster uses (all-NaN training columns are dropped, see ``dropped_features_``).
    dropped_features_ : list of str
    booster_ : lightgbm.Booster or xgboost.Booster
        Truncated to the best iteration.
    n_estimators_ : int
        Iterations kept.
    scale_pos_weight_ : float
    device_ : str
        Where training ran.
    training_summary_ : dict
        Screens, stays, positives and features seen in training and (after :meth:`fit`) a
        sha256 of the feature matrix and labels, recorded in ``model.json`` so a model can be
        traced to its data.

    Examples
    --------
    >>> from gbdt._demo import demo_screens
    >>> s = demo_screens(n_stays=60, seed=0)
    >>> m = GBDTClassifier("xgboost", max_depth=3, n_estimators=20, device="cpu").fit(s)
    >>> m.classes_.tolist(), m.predict_proba(s).shape == (len(s), 2)
    ([0, 1], True)
    """

    kind = "gbdt"
    format_version = 2

    def __init__(self, backend: str = "lightgbm", *, max_depth: int = 3, n_estimators: int = 300,
                 learning_rate: float = 0.1, reg_alpha: float = 0.0, reg_lambda: float = 1.0,
                 trend: bool = False, baseline: bool = False, label_horizon: float | None = None, class_weight: str | None = "balanced",
                 early_stopping_rounds: int | None = 30, validation_fraction: float = 0.1,
                 random_state: int = 0, n_jobs: int = 1, device: str = "auto"):
        self.backend = backend
        self.max_depth = max_depth
        self.n_estimators = n_estimators
        self.learning_rate = learning_rate
        self.reg_alpha = reg_alpha
        self.reg_lambda = reg_lambda
        self.trend = trend
        self.baseline = baseline
        self.label_horizon = label_horizon
        self.class_weight = class_weight
        self.early_stopping_rounds = early_stopping_rounds
        self.validation_fraction = validation_fraction
        self.random_state = random_state
        self.n_jobs = n_jobs
        self.device = device

    # -- fitting ---------------------------------------------------------------------------
    def fit(self, screens: pd.DataFrame, labels: Labels | None = None, *, groups=None) -> "GBDTClassifier":
        """Fit on a screens table.

        Parameters
        ----------
        screens : DataFrame
            A screens table (``ehr.schema``).
        labels : ehr.estimator.Labels, optional
            The target is ``labels.y`` (onset within the horizon; ``label_horizon`` when set);
            default: from ``screens["onset_in_h"]`` with the 48 h horizon.
        groups : array-like, optional
            Patient/stay groups for the early-stopping split; defaults to ``screens["stay_id"]``.
        """
        self._check_params()
        features = self.screen_features().fit(screens)
        X = features.transform(screens)
        y = self.target(labels, screens)
        groups = screens["stay_id"].to_numpy() if groups is None else np.asarray(groups)
        if len(groups) != len(screens):
            raise ValueError(f"groups has {len(groups)} entries but screens has {len(screens)} rows")
        self._fit_matrix(X, y, groups, features)
        self.training_summary_["sha256"] = _data_hash(X, y)
        self.data_hashes_ = {"features_and_labels": self.training_summary_["sha256"]}
        return self

    def screen_features(self) -> ScreenFeatures:
        """The (unfitted) feature builder of this model's settings."""
        return ScreenFeatures(trend=self.trend, baseline=self.baseline)

    def target(self, labels: Labels | None, screens: pd.DataFrame) -> np.ndarray:
        """The binary training target of ``screens``: onset within ``label_horizon`` hours when set,
        else within the horizon of ``labels`` (default: ``screens["onset_in_h"]``, 48 h).

        >>> s = pd.DataFrame({"onset_in_h": [3.0, 10.0, 30.0, None]})
        >>> GBDTClassifier().target(None, s).tolist(), GBDTClassifier(label_horizon=12).target(None, s).tolist()
        ([1, 1, 1, 0], [1, 1, 0, 0])
        """
        self._check_params()
        labels = Labels.coerce(labels, screens)
        if self.label_horizon is not None:
            labels = Labels(labels.onset_in_h, self.label_horizon)
        return labels.y

    def _fit_matrix(self, X: pd.DataFrame, y: np.ndarray, groups: np.ndarray,
                    features: ScreenFeatures, *, where: str = "training data") -> "GBDTClassifier":
        """Fit on a precomputed feature matrix (grid search reuses one matrix across folds)."""
        self._check_params()
        _check_two_classes(y, where)
        all_nan = X.columns[X.isna().all(axis=0).to_numpy()].tolist()
        if len(all_nan) == X.shape[1]:
            raise ValueError(f"{where}: all {X.shape[1]} feature columns are entirely NaN; "
                             "the screens carry no measured values")
        if all_nan:
            log.warning("%s: dropping %d all-NaN feature column(s): %s", where, len(all_nan),
                        all_nan)
        self.features_ = features
        self.features_in_ = features.input_columns()
        self.dropped_features_ = all_nan
        self.feature_names_ = [c for c in X.columns if c not in set(all_nan)]
        Xm = X[self.feature_names_].to_numpy(dtype="float32")

        if self.early_stopping_rounds and self.validation_fraction > 0:
            tr, va = holdout_groups(groups, self.validation_fraction, y=y, random_state=self.random_state)
            _check_two_classes(y[va], f"{where}: early-stopping validation part "
                               f"({len(np.unique(groups[va]))} stays)")
            _check_two_classes(y[tr], f"{where}: early-stopping training part")
        else:
            tr, va = np.arange(len(y)), None
        n_pos = int(y[tr].sum())
        self.scale_pos_weight_ = (len(tr) - n_pos) / n_pos if self.class_weight == "balanced" else 1.0
        self.device_ = self._resolve_device()
        fit = _fit_lightgbm if self.backend == "lightgbm" else _fit_xgboost
        self.booster_, self.n_estimators_ = fit(self, Xm, y, tr, va)
        self.classes_ = np.array([0, 1])
        self.training_summary_ = _training_summary(X, y, groups)
        return self

    def _check_params(self) -> None:
        if self.backend not in _BACKENDS:
            raise ValueError(f"backend must be one of {_BACKENDS}, got {self.backend!r}")
        if self.device not in _DEVICES:
            raise ValueError(f"device must be one of {_DEVICES}, got {self.device!r}")
        if self.class_weight not in ("balanced", None):
            raise ValueError(f"class_weight must be 'balanced' or None, got {self.class_weight!r}")
        if not (isinstance(self.max_depth, (int, np.integer)) and self.max_depth >= 1):
            raise ValueError(f"max_depth must be an integer >= 1, got {self.max_depth!r}")
        if not (isinstance(self.n_estimators, (int, np.integer)) and self.n_estimators >= 1):
            raise ValueError(f"n_estimators must be an integer >= 1, got {self.n_estimators!r}")
        h = self.label_horizon
        if h is not None and not (isinstance(h, (int, float, np.integer, np.floating)) and not isinstance(h, bool)
                                  and np.isfinite(h) and h > 0):
            raise ValueError(f"label_horizon must be None or a positive number of hours, got {h!r}")
        if not 0 <= self.validation_fraction < 1:
            raise ValueError(f"validation_fraction must be in [0, 1), got {self.validation_fraction}")
        if self.backend == "lightgbm" and self.device == "cuda":
            raise ValueError("device='cuda' is only supported with backend='xgboost'")

    def _resolve_device(self) -> str:
        if self.backend == "lightgbm":
            return "cpu"
        if self.device == "auto":
            return "cuda" if cuda_available() else "cpu"
        return self.device

    # -- predicting ------------------------------------------------------------------------
    @property
    def model_name(self) -> str:
        """The backend (``lightgbm`` / ``xgboost``) names this model in predictions and explanations."""
        return self.backend

    def _matrix(self, screens: pd.DataFrame) -> np.ndarray:
        self.check_screens(screens)
        X = self.features_.transform(screens)
        return X[self.feature_names_].to_numpy(dtype="float32")

    def _margin_matrix(self, Xm: np.ndarray, n_iter: int | None = None) -> np.ndarray:
        if self.backend == "lightgbm":
            return self.booster_.predict(Xm, raw_score=True, num_iteration=n_iter)
        it = (0, n_iter) if n_iter else (0, 0)
        return self.booster_.inplace_predict(Xm, predict_type="margin", iteration_range=it)

    def decision_function(self, screens: pd.DataFrame) -> np.ndarray:
        """Raw margin (log-odds) per screen."""
        return np.asarray(self._margin_matrix(self._matrix(screens)), dtype="float64")

    def predict_proba(self, screens: pd.DataFrame) -> np.ndarray:
        """Probabilities, shape ``(n_screens, 2)``; column 1 is the risk of sepsis within the horizon."""
        p = 1.0 / (1.0 + np.exp(-self.decision_function(screens)))
        return np.column_stack([1.0 - p, p])

    def predict(self, screens: pd.DataFrame) -> np.ndarray:
        """Class (0/1) at probability 0.5 (rarely the operating point; see ``evaluation``)."""
        return (self.predict_proba(screens)[:, 1] >= 0.5).astype(np.int64)

    def explain(self, screens: pd.DataFrame, *, model_name: str | None = None, group: bool = True,
                include_total: bool = True) -> pd.DataFrame:
        """TreeSHAP ``explanations`` table of ``screens`` (see :func:`gbdt.explain.explanations_table`)."""
        from .explain import explanations_table

        return explanations_table(self, screens, model_name=model_name, group=group,
                                  include_total=include_total)

    # -- artefacts (model.json through ehr.artefacts; the booster file through gbdt.io) ------
    def _write_files(self, directory) -> None:
        io.write_booster(self, directory)

    def _state(self) -> dict:
        return io.fitted_state(self)

    def _restore(self, directory, meta: dict) -> None:
        io.restore(self, directory, meta)


def _training_summary(X: pd.DataFrame, y: np.ndarray, groups: np.ndarray) -> dict:
    return {"n_screens": int(len(y)), "n_stays": int(len(np.unique(groups))),
            "n_positive": int(y.sum()), "n_features_in": int(X.shape[1])}


def _data_hash(X: pd.DataFrame, y: np.ndarray) -> str:
    """sha256 of the feature names, the float32 feature matrix and the labels."""
    import hashlib

    h = hashlib.sha256()
    h.update(",".join(X.columns).encode())
    h.update(np.ascontiguousarray(X.to_numpy(dtype="float32")).tobytes())
    h.update(np.ascontiguousarray(y, dtype=np.int64).tobytes())
    return h.hexdigest()


def _check_two_classes(y: np.ndarray, where: str) -> None:
    classes = np.unique(y)
    if len(classes) < 2:
        raise ValueError(f"{where}: only one class ({classes.tolist()}) among {len(y)} screens; "
                         "both positive and negative screens are needed")


def _fit_lightgbm(model: GBDTClassifier, X, y, tr, va):
    import lightgbm as lgb

    params = {
        "objective": "binary", "learning_rate": model.learning_rate,
        "max_depth": int(model.max_depth), "num_leaves": int(min(2 ** model.max_depth, 4096)),
        "lambda_l1": model.reg_alpha, "lambda_l2": model.reg_lambda,
        "scale_pos_weight": model.scale_pos_weight_, "seed": model.random_state,
        "num_threads": model.n_jobs, "deterministic": True, "verbosity": -1,
        "feature_pre_filter": False, "metric": "auc",
    }
    dtrain = lgb.Dataset(X[tr], label=y[tr], free_raw_data=True)
    valid, callbacks = [], []
    if va is not None:
        valid = [lgb.Dataset(X[va], label=y[va], reference=dtrain)]
        callbacks = [lgb.early_stopping(int(model.early_stopping_rounds), verbose=False)]
    booster = lgb.train(params, dtrain, num_boost_round=int(model.n_estimators), valid_sets=valid,
                        callbacks=callbacks)
    n = booster.best_iteration if va is not None and booster.best_iteration > 0 \
        else booster.current_iteration()
    # Keep only the trees that are used, so the saved text model predicts exactly as fitted.
    booster = lgb.Booster(model_str=booster.model_to_string(num_iteration=n))
    return booster, int(n)


def _fit_xgboost(model: GBDTClassifier, X, y, tr, va):
    import xgboost as xgb

    params = {
        "objective": "binary:logistic", "eta": model.learning_rate, "max_depth": int(model.max_depth),
        "alpha": model.reg_alpha, "lambda": model.reg_lambda,
        "scale_pos_weight": model.scale_pos_weight_, "seed": model.random_state,
        "nthread": model.n_jobs, "tree_method": "hist", "device": model.device_,
        "eval_metric": "auc",
    }
    dtrain = xgb.QuantileDMatrix(X[tr], label=y[tr])
    evals, rounds = [], None
    if va is not None:
        evals = [(xgb.QuantileDMatrix(X[va], label=y[va], ref=dtrain), "valid")]
        rounds = int(model.early_stopping_rounds)
    booster = xgb.train(params, dtrain, num_boost_round=int(model.n_estimators), evals=evals,
                        early_stopping_rounds=rounds, verbose_eval=False)
    n = booster.best_iteration + 1 if va is not None else booster.num_boosted_rounds()
    booster = booster[:n]
    # Predict and explain on the CPU: inputs live in host memory, and this avoids device mismatch.
    booster.set_param({"device": "cpu"})
    return booster, int(n)
