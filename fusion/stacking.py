"""Stacking: a meta-learner over the member models' out-of-fold predictions (kind ``"stack"``).

:class:`StackClassifier` is a :class:`ehr.estimator.SepsisEstimator` whose "screens" are a member
table (:func:`fusion.members.member_frame`: one row per screen, one ``risk_<member>`` column per
member: CPN, LightGBM, the sequence or fusion model, and NEWS2 as a feature). It is evaluated by
the same protocol as its members because its output is one more model in ``predictions``.

Inputs: a probability member enters as its logit; a *score* member (``scores=``, NEWS2 by default)
enters as its value and may be missing on some screens: it is then filled with its training mean
and a missing-indicator input is added (logistic meta-learner) or left missing (LightGBM).

Meta-learners: ``"logistic"`` (default): L2 logistic regression on the inputs (standardised
internally; coefficients reported per unit and per standard deviation of each input) and
``"lightgbm"``: small gradient-boosted trees. :attr:`coefficients_` says which member the stack
trusts: its coefficient and its share of the mean absolute contribution on (at most 5,000 of)
the training screens, the same measure for both meta-learners. :meth:`explain` gives each
member's contribution at a screen in log-odds (logistic: ``coefficient x (input - training
mean)``, the exact SHAP value of a linear model; LightGBM: TreeSHAP), with the log-odds of the
average screen as ``baseline``, so contributions plus baseline give the stack's log-odds.

Fit only on out-of-fold predictions (:func:`fusion.oof.oof_predictions`, :meth:`fit_predictions`
checks): a meta-learner fitted on in-sample predictions trusts whichever member overfits most.

Examples
--------
>>> import numpy as np, pandas as pd
>>> from scipy.special import expit
>>> rng = np.random.default_rng(0)
>>> n = 2000
>>> y = (rng.random(n) < 0.2).astype(int)
>>> t = pd.Timestamp("2020-01-01") + pd.to_timedelta(np.arange(n) % 20, unit="h")
>>> table = pd.DataFrame({"stay_id": np.arange(n) // 20, "screen_time": t,
...                       "onset_in_h": np.where(y == 1, 12.0, np.nan),
...                       "risk_good": 1 / (1 + np.exp(-(2 * y - 1 + rng.normal(0, 1, n)))),
...                       "risk_weak": expit(y - 2 + rng.normal(0, 2, n)), "risk_noise": rng.random(n)})
>>> stack = StackClassifier().fit(table)
>>> stack.coefficients_.set_index("member")["share"].round(2).to_dict()
{'good': 0.8, 'weak': 0.18, 'noise': 0.02}
>>> stack.predict_proba(table).shape
(2000, 2)
>>> stack.predict_proba(table.drop(columns="risk_noise"))
Traceback (most recent call last):
...
ehr.schema.SchemaError: screens: missing column(s) risk_noise that this stack model was trained on; score screens built from the same concepts
"""

from __future__ import annotations

from pathlib import Path
from typing import ClassVar

import numpy as np
import pandas as pd
from scipy.special import expit, logit

from ehr.artefacts import ModelFormatError, model_file
from ehr.estimator import DEFAULT_HORIZON_H, Labels, SepsisEstimator
from ehr.schema import SchemaError
from fusion.members import member_column, member_frame, member_names, require_out_of_fold

__all__ = ["StackClassifier", "META_LEARNERS"]

META_LEARNERS = ("logistic", "lightgbm")
_BOOSTER = "meta_lightgbm.txt"
_EPS = 1e-6  # probabilities are clipped to [eps, 1 - eps] before the logit
_SHARE_ROWS = 5_000


class StackClassifier(SepsisEstimator):
    """A meta-learner over member predictions (see the module docstring).

    Parameters
    ----------
    members : tuple of str, optional
        Members to combine (default: every ``risk_*`` column of the table given to ``fit``).
    scores : tuple of str, default ("news2",)
        Members whose risk is a score (no probability scale; entered as is) and which may be
        missing on some screens.
    meta : {"logistic", "lightgbm"}, default "logistic"
    C : float, default 1.0
        Inverse L2 strength of the logistic meta-learner (on standardised inputs).
    n_estimators, learning_rate, num_leaves, min_child_samples : LightGBM meta-learner settings.
    random_state : int, default 0
    n_jobs : int, default 1
        LightGBM threads.

    Attributes
    ----------
    members_ : list of str
    inputs_ : dict member -> "logit" | "score"
    coefficients_ : DataFrame
        ``member, input, coefficient, coefficient_per_sd, missing_coefficient,
        mean_abs_contribution, share`` (coefficients NaN for LightGBM).
    intercept_ : float
        Log-odds at an input of zero (logistic; NaN for LightGBM).
    """

    kind: ClassVar[str] = "stack"
    format_version: ClassVar[int] = 1
    #: scores a member table built from predictions (``sepsiscope predict --predictions``), not screens
    reads_predictions: ClassVar[bool] = True

    def __init__(self, members=None, *, scores=("news2",), meta: str = "logistic", C: float = 1.0,
                 n_estimators: int = 200, learning_rate: float = 0.05, num_leaves: int = 7,
                 min_child_samples: int = 200, random_state: int = 0, n_jobs: int = 1):
        self.members = members
        self.scores = scores
        self.meta = meta
        self.C = C
        self.n_estimators = n_estimators
        self.learning_rate = learning_rate
        self.num_leaves = num_leaves
        self.min_child_samples = min_child_samples
        self.random_state = random_state
        self.n_jobs = n_jobs

    # ------------------------------------------------------------------ inputs
    def _inputs(self, table: pd.DataFrame) -> tuple[np.ndarray, np.ndarray]:
        """Transformed member inputs (n, k) with NaN where a score member is missing, and that mask."""
        self.check_screens(table)   # names each absent risk_<member> column
        X = np.empty((len(table), len(self.members_)))
        for j, m in enumerate(self.members_):
            r = table[member_column(m)].to_numpy(dtype="float64")
            missing = np.isnan(r)
            if missing.any() and self.inputs_[m] != "score":
                raise SchemaError(f"member table: member {m!r} has no risk on {int(missing.sum()):,} screen(s) "
                                  f"(first: row {int(np.flatnonzero(missing)[0])}); only score members "
                                  f"({', '.join(self.scores) or 'none'}) may be missing")
            if self.inputs_[m] == "logit":
                ok = r[~missing]
                if len(ok) and (ok.min() < 0 or ok.max() > 1):
                    raise ValueError(f"member {m!r}: risk outside [0, 1] (range {ok.min():g} to {ok.max():g}); "
                                     "list it in scores= if it is a score such as NEWS2")
                r = logit(np.clip(r, _EPS, 1 - _EPS))
            X[:, j] = r
        return X, np.isnan(X)

    def _design(self, X: np.ndarray, missing: np.ndarray) -> np.ndarray:
        """Logistic design: NaN filled with the training mean, plus the missing indicators."""
        Z = np.where(missing, self.fill_[None, :], X)
        return np.column_stack([Z, missing[:, self.indicators_].astype("float64")])

    # ------------------------------------------------------------------ fit
    def fit(self, screens: pd.DataFrame, labels: Labels | None = None) -> "StackClassifier":
        """Fit the meta-learner on a member table (``risk_<member>`` columns) and its labels."""
        if self.meta not in META_LEARNERS:
            raise ValueError(f"meta must be one of {META_LEARNERS}, got {self.meta!r}")
        labels = Labels.coerce(labels, screens)
        members = list(self.members) if self.members is not None else member_names(screens.columns)
        if not members:
            raise SchemaError("member table: no risk_<member> column to stack")
        self.members_ = members
        self.inputs_ = {m: "score" if m in set(self.scores) else "logit" for m in members}
        self.features_in_ = [member_column(m) for m in members]
        X, missing = self._inputs(screens)
        y = labels.y
        if len(np.unique(y)) < 2:
            raise ValueError(f"the stack's training screens have a single class ({len(y):,} screens)")
        all_missing = [m for j, m in enumerate(members) if missing[:, j].all()]
        if all_missing:
            raise SchemaError(f"member table: member(s) {', '.join(map(repr, all_missing))} have no risk on "
                              "any training screen")
        with np.errstate(invalid="ignore"):
            self.fill_ = np.nanmean(X, axis=0)
        self.indicators_ = np.flatnonzero(missing.any(axis=0))
        self.n_train_ = int(len(y))
        (self._fit_logistic if self.meta == "logistic" else self._fit_lightgbm)(X, missing, y)
        self.coefficients_ = self._coefficient_table(X, missing)
        return self

    def _fit_logistic(self, X, missing, y) -> None:
        from sklearn.linear_model import LogisticRegression

        D = self._design(X, missing)
        mu, sd = D.mean(axis=0), D.std(axis=0)
        sd = np.where(sd > 0, sd, 1.0)
        lr = LogisticRegression(C=self.C, max_iter=1000, tol=1e-8).fit((D - mu) / sd, y)
        self.coef_ = lr.coef_[0] / sd                      # per unit of each input
        self.intercept_ = float(lr.intercept_[0] - np.sum(self.coef_ * mu))
        self.design_mean_ = mu
        self.design_sd_ = sd
        self.booster_ = None

    def _fit_lightgbm(self, X, missing, y) -> None:
        import lightgbm as lgb

        params = {"objective": "binary", "learning_rate": self.learning_rate, "num_leaves": self.num_leaves,
                  "min_child_samples": self.min_child_samples, "seed": self.random_state,
                  "num_threads": self.n_jobs, "verbose": -1, "deterministic": True}
        data = lgb.Dataset(X, y, feature_name=list(self.members_), free_raw_data=True)
        self.booster_ = lgb.train(params, data, num_boost_round=self.n_estimators)
        self.coef_ = np.full(X.shape[1], np.nan)
        self.intercept_ = float("nan")
        self.design_mean_ = self.design_sd_ = None

    # ------------------------------------------------------------------ predict / explain
    def _contributions(self, X, missing) -> tuple[np.ndarray, np.ndarray]:
        """Per-member log-odds contributions (n, k) and the baseline per screen (n,)."""
        if self.booster_ is not None:
            phi = np.asarray(self.booster_.predict(X, pred_contrib=True, num_threads=self.n_jobs))
            return phi[:, :-1], phi[:, -1]
        D = self._design(X, missing)
        k = len(self.members_)
        centred = self.coef_ * (D - self.design_mean_)
        contrib = centred[:, :k].copy()
        for col, j in enumerate(self.indicators_):
            contrib[:, j] += centred[:, k + col]     # a member's missing indicator is part of that member
        baseline = np.full(len(X), self.intercept_ + float(np.sum(self.coef_ * self.design_mean_)))
        return contrib, baseline

    def decision_function(self, screens: pd.DataFrame) -> np.ndarray:
        """The stack's log-odds per screen."""
        self._check_fitted("members_")
        X, missing = self._inputs(screens)
        if self.booster_ is not None:
            return np.asarray(self.booster_.predict(X, raw_score=True, num_threads=self.n_jobs))
        return self._design(X, missing) @ self.coef_ + self.intercept_

    def predict_proba(self, screens: pd.DataFrame) -> np.ndarray:
        p = expit(self.decision_function(screens))
        return np.column_stack([1 - p, p])

    def explain(self, screens: pd.DataFrame, *, model_name: str | None = None) -> pd.DataFrame:
        """The ``explanations`` table: one row per screen and member, plus ``total``.

        ``value`` is the member's risk, ``contribution`` its log-odds contribution, ``baseline``
        the log-odds of the average training screen; ``state``, ``age_h`` and ``weight`` are null.
        """
        from ehr.schema import validate

        self._check_fitted("members_")
        X, missing = self._inputs(screens)
        contrib, baseline = self._contributions(X, missing)
        names = list(self.members_) + ["total"]
        values = np.column_stack([screens[member_column(m)].to_numpy(dtype="float64") for m in self.members_]
                                 + [np.full(len(screens), np.nan)])
        C = np.column_stack([contrib, contrib.sum(axis=1)])
        n, k = len(screens), len(names)
        out = pd.DataFrame({
            "stay_id": np.repeat(screens["stay_id"].to_numpy(dtype="int64"), k),
            "screen_time": np.repeat(screens["screen_time"].to_numpy(), k),
            "model": model_name or self.model_name,
            "feature": np.tile(np.array(names, dtype=object), n),
            "value": values.ravel(), "state": pd.Series([None] * (n * k), dtype="object"),
            "age_h": np.full(n * k, np.nan), "weight": np.full(n * k, np.nan),
            "contribution": C.ravel(), "baseline": np.repeat(baseline, k),
        })
        return validate(out, "explanations")

    def _coefficient_table(self, X, missing) -> pd.DataFrame:
        # TreeSHAP costs ~0.3 ms a screen: the shares are estimated on at most _SHARE_ROWS screens
        rows = np.arange(len(X))
        if len(X) > _SHARE_ROWS:
            rows = np.sort(np.random.default_rng(self.random_state).choice(len(X), _SHARE_ROWS, replace=False))
        contrib, _ = self._contributions(X[rows], missing[rows])
        mean_abs = np.abs(contrib).mean(axis=0)
        k = len(self.members_)
        per_sd = (self.coef_[:k] * np.nanstd(X, axis=0)) if self.booster_ is None else np.full(k, np.nan)
        miss = np.full(k, np.nan)
        if self.booster_ is None:
            miss[self.indicators_] = self.coef_[k:]
        return pd.DataFrame({"member": self.members_, "input": [self.inputs_[m] for m in self.members_],
                             "coefficient": self.coef_[:k], "coefficient_per_sd": per_sd,
                             "missing_coefficient": miss, "mean_abs_contribution": mean_abs,
                             "share": mean_abs / mean_abs.sum() if mean_abs.sum() > 0 else np.nan})

    # ------------------------------------------------------------------ from predictions tables
    def fit_predictions(self, predictions: pd.DataFrame, screens: pd.DataFrame, *, split: str | None = "train",
                        horizon_h: float = DEFAULT_HORIZON_H) -> "StackClassifier":
        """Fit on the out-of-fold member rows of ``predictions`` (``split``) for ``screens``.

        ``screens`` gives the screens to learn from (those of ``split`` when it has a ``split``
        column) and their labels (``onset_in_h``; onset within ``horizon_h``); every member but the
        score members must cover them with out-of-fold (``fold`` filled) predictions.
        """
        keys = screens if split is None or "split" not in screens.columns else screens[screens["split"] == split]
        table = member_frame(predictions, keys, members=self.members, optional=self.scores, split=split)
        require_out_of_fold(predictions, member_names(table.columns), split=split, exempt=self.scores)
        return self.fit(table, Labels.from_screens(table, horizon_h))

    def member_table(self, predictions: pd.DataFrame, screens: pd.DataFrame | None = None, *,
                     split: str | None = None, subset: bool = False) -> pd.DataFrame:
        """The member table of this stack's members from ``predictions`` (checked as in :meth:`fit`;
        ``subset``: ``screens`` select some of the predicted screens, see :func:`fusion.members.member_frame`)."""
        self._check_fitted("members_")
        return member_frame(predictions, screens, members=self.members_, optional=self.scores, split=split,
                            subset=subset)

    def predictions_from(self, predictions: pd.DataFrame, screens: pd.DataFrame | None = None, *,
                         split: str | None = None, name: str | None = None) -> pd.DataFrame:
        """The stack's own ``predictions`` rows, from its members' rows in ``predictions``."""
        return self.predictions(self.member_table(predictions, screens, split=split), name=name, split=split)

    # ------------------------------------------------------------------ artefacts
    @classmethod
    def _config_from_json(cls, config: dict) -> dict:
        members = config.get("members")
        return {**config, "members": tuple(members) if members is not None else None,
                "scores": tuple(config.get("scores", ()))}

    def _write_files(self, directory: Path) -> None:
        if self.booster_ is not None:
            self.booster_.save_model(str(directory / _BOOSTER))

    def _state(self) -> dict:
        lin = self.booster_ is None
        return {"members": self.members_, "inputs": self.inputs_, "fill": self.fill_.tolist(),
                "indicators": self.indicators_.tolist(), "n_train": self.n_train_,
                "coef": self.coef_.tolist() if lin else None, "intercept": self.intercept_ if lin else None,
                "design_mean": self.design_mean_.tolist() if lin else None,
                "design_sd": self.design_sd_.tolist() if lin else None,
                "coefficients": self.coefficients_.to_dict(orient="list")}

    def _restore(self, directory: Path, meta: dict) -> None:
        s = meta["state"]
        try:
            self.members_ = list(s["members"])
            self.inputs_ = dict(s["inputs"])
            self.fill_ = np.asarray(s["fill"], dtype="float64")
            self.indicators_ = np.asarray(s["indicators"], dtype="int64")
            self.n_train_ = int(s["n_train"])
            coefs = pd.DataFrame(s["coefficients"])
            self.coefficients_ = coefs.astype({c: "float64" for c in coefs.columns if c not in ("member", "input")})
        except (KeyError, TypeError) as exc:
            raise ModelFormatError(f"{directory / 'model.json'}: incomplete stack state ({exc})") from None
        if self.meta == "lightgbm":
            import lightgbm as lgb

            self.booster_ = lgb.Booster(model_file=str(model_file(directory, meta, _BOOSTER)))
            self.coef_ = np.full(len(self.members_), np.nan)
            self.intercept_ = float("nan")
            self.design_mean_ = self.design_sd_ = None
        else:
            self.booster_ = None
            self.coef_ = np.asarray(s["coef"], dtype="float64")
            self.intercept_ = float(s["intercept"])
            self.design_mean_ = np.asarray(s["design_mean"], dtype="float64")
            self.design_sd_ = np.asarray(s["design_sd"], dtype="float64")
