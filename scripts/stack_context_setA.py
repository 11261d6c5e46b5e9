"""Meta-learners that see context, on the set A out-of-fold member predictions of ``stack_setA_cv.py`` (issue 14).

Reads ``oof_predictions.parquet`` written by ``scripts/stack_setA_cv.py`` (every member's outer
out-of-fold predictions, ``fold`` = the outer fold that held the screen out) and the cached set A
screens, and compares meta-learners fitted, for each outer fold ``k``, on the other folds' outer
out-of-fold predictions and applied to fold ``k`` (the ``naive`` scheme of :mod:`fusion.stack_cv`:
those members saw fold ``k``; with a handful of meta-parameters the leak is small, and the plain
``logit`` row is the reference the context rows are judged against under the same scheme):

``logit``         logistic regression on the members' logits (NEWS2 as its value, with a missing
                  indicator): ``StackClassifier``'s default design
``logit_band``    the same plus one-hot bands of hours since admission (0-6, 6-24, 24-72, 72+ h,
                  ``evaluation.stratified.HOURS_BANDS``) and every band x member-logit interaction
``lgbm_context``  LightGBM meta-learner (``StackClassifier(meta="lightgbm")``'s settings) on the
                  same inputs plus hours since admission
``mean_logit``    the plain average of the probability members' logits (no fitting)

``--inner`` (``inner_predictions.parquet`` of ``stack_setA_cv.py --schemes pairs``) adds the
honest ``pairs`` scheme: the meta-learner of outer fold ``k`` is fitted on member predictions of
the other folds made by models that never saw fold ``k``, then applied to the outer out-of-fold
predictions of fold ``k``; those rows are named ``meta_<kind>_pairs``.

Paired patient-level bootstrap (every stay resampled, all screens) against the ``--reference``
member (default ``lightgbm``).

    nice -n 10 env OMP_NUM_THREADS=1 .venv/bin/python scripts/stack_context_setA.py \\
        --oof /work/scratch/h-fusion/stackA/oof_predictions.parquet --data /work/scratch/h-fusion/setA_data \\
        [--inner /work/scratch/h-fusion/stackA/inner_predictions.parquet]
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

import numpy as np
import pandas as pd
from scipy.special import expit, logit

from ehr.estimator import Labels
from evaluation.stratified import HOURS_BANDS

_EPS = 1e-6


def design(table: pd.DataFrame, members: list[str], scores: list[str], kind: str, fill: dict) -> np.ndarray:
    """Meta-learner inputs of a member table (``risk_<member>``, ``hours_since_admit``)."""
    cols = []
    for m in members:
        r = table[f"risk_{m}"].to_numpy(dtype="float64")
        if m in scores:
            cols += [np.where(np.isnan(r), fill[m], r), np.isnan(r).astype(float)]
        else:
            cols.append(logit(np.clip(r, _EPS, 1 - _EPS)))
    X = np.column_stack(cols)
    if kind == "logit_band":
        band = np.digitize(table["hours_since_admit"].to_numpy(dtype="float64"), HOURS_BANDS[1:-1])
        onehot = (band[:, None] == np.arange(1, len(HOURS_BANDS) - 1)[None, :]).astype(float)
        logits = X[:, [i for i, m in enumerate(members) if m not in scores]]
        X = np.column_stack([X, onehot] + [onehot[:, [j]] * logits for j in range(onehot.shape[1])])
    if kind == "lgbm_context":
        X = np.column_stack([X, table["hours_since_admit"].to_numpy(dtype="float64")])
    return X


def input_names(members: list[str], scores: list[str], kind: str) -> list[str]:
    """Names of :func:`design`'s columns (logistic kinds), for the coefficient table."""
    names = [n for m in members for n in ([m, f"{m}_missing"] if m in scores else [m])]
    if kind == "logit_band":
        bands = [f"hours {lo:g}-{hi:g}" for lo, hi in zip(HOURS_BANDS[1:-1], HOURS_BANDS[2:])]
        names += bands + [f"{m} x {b}" for b in bands for m in members if m not in scores]
    return names


def fit_predict(kind: str, train: pd.DataFrame, test: pd.DataFrame, members, scores, n_jobs: int,
                coefficients: list | None = None) -> np.ndarray:
    """Risk on ``test`` from a meta-learner of ``kind`` fitted on ``train``; a logistic meta-learner
    appends its coefficients (per unit and per sd of each input) to ``coefficients``."""
    if kind == "mean_logit":
        z = [logit(np.clip(test[f"risk_{m}"].to_numpy(dtype="float64"), _EPS, 1 - _EPS))
             for m in members if m not in scores]
        return expit(np.mean(z, axis=0))
    fill = {m: float(np.nanmean(train[f"risk_{m}"])) for m in scores}
    Xtr, Xte = design(train, members, scores, kind, fill), design(test, members, scores, kind, fill)
    y = train["y"].to_numpy()
    if kind == "lgbm_context":
        import lightgbm as lgb

        params = {"objective": "binary", "learning_rate": 0.05, "num_leaves": 7, "min_child_samples": 200,
                  "seed": 0, "num_threads": n_jobs, "verbose": -1, "deterministic": True}
        booster = lgb.train(params, lgb.Dataset(Xtr, y), num_boost_round=200)
        return booster.predict(Xte, num_threads=n_jobs)
    from sklearn.linear_model import LogisticRegression

    mu, sd = Xtr.mean(axis=0), Xtr.std(axis=0)
    sd = np.where(sd > 0, sd, 1.0)
    lr = LogisticRegression(C=1.0, max_iter=2000, tol=1e-8).fit((Xtr - mu) / sd, y)
    if coefficients is not None:
        coefficients.append(pd.DataFrame({"input": input_names(members, scores, kind),
                                          "coefficient": lr.coef_[0] / sd, "coefficient_per_sd": lr.coef_[0]}))
    return lr.predict_proba((Xte - mu) / sd)[:, 1]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--oof", type=Path, required=True, help="oof_predictions.parquet of stack_setA_cv.py")
    ap.add_argument("--data", type=Path, required=True, help="the set A parquet cache (setA_screens.parquet ...)")
    ap.add_argument("--members", nargs="+", default=None, help="default: every non-stack model in --oof")
    ap.add_argument("--scores", nargs="+", default=["news2"])
    ap.add_argument("--reference", default="lightgbm")
    ap.add_argument("--kinds", nargs="+", default=["logit", "logit_band", "lgbm_context", "mean_logit"])
    ap.add_argument("--n-boot", type=int, default=1000)
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--out", type=Path, default=None, help="default: next to --oof")
    ap.add_argument("--inner", type=Path, default=None,
                    help="inner_predictions.parquet of stack_setA_cv.py: adds the pairs scheme")
    ap.add_argument("--schemes", nargs="+", default=["naive", "pairs"], choices=["naive", "pairs"],
                    help="pairs needs --inner")
    ap.add_argument("--max-stays", type=int, default=None,
                    help="first N stays only (as stack_setA_cv.py --max-stays; a quick check)")
    a = ap.parse_args()
    from evaluation.bootstrap import bootstrap_metrics
    from fusion.members import member_frame
    from fusion.stack_cv import cv_summary

    t0 = time.time()
    out = a.out or a.oof.parent / "context_meta"
    out.mkdir(parents=True, exist_ok=True)
    screens = pd.read_parquet(a.data / "setA_screens.parquet")
    stays = pd.read_parquet(a.data / "setA_stays.parquet")
    oof = pd.read_parquet(a.oof)
    if a.max_stays:  # the subset of sepsiscope.datasets.experiment_tables(max_stays=)
        keep = stays["stay_id"].iloc[:a.max_stays]
        stays, screens = stays[stays["stay_id"].isin(keep)], screens[screens["stay_id"].isin(keep)]
    members = a.members or [m for m in oof["model"].unique() if not str(m).startswith("stack_")]
    scores = [m for m in a.scores if m in members]
    keys = screens[["stay_id", "screen_time", "hours_since_admit", "onset_in_h"]]
    table = member_frame(oof[oof.model.isin(members)], keys, members=members, optional=scores)
    table = table.merge(keys[["stay_id", "screen_time", "hours_since_admit"]], on=["stay_id", "screen_time"],
                        how="left", validate="one_to_one", suffixes=("", "_s"))
    table["y"] = Labels.from_screens(table).y
    fold = oof[oof.model == a.reference].set_index(["stay_id", "screen_time"])["fold"]
    table["fold"] = fold.reindex(pd.MultiIndex.from_frame(table[["stay_id", "screen_time"]])).to_numpy()
    print(f"{len(table):,} screens, members {members} (scores {scores}) [{time.time() - t0:.0f} s]", flush=True)
    inner = None
    if "pairs" in a.schemes:
        if a.inner is None:
            ap.error("--schemes pairs needs --inner")
        inner = pd.read_parquet(a.inner)
        inner = inner[inner["scheme"] == "pairs"]
        lacking = [m for m in members if m not in scores and f"risk_{m}" not in inner.columns]
        if lacking or inner.empty:
            raise SystemExit(f"{a.inner}: no pairs inner predictions for member(s) {lacking or members}")
        inner = inner.drop(columns=[c for c in inner.columns if c.startswith("risk_")
                                    and c[5:] not in members])
        # scores, hours and labels do not depend on the fold: taken from the screen's row
        extra = table[["stay_id", "screen_time", "hours_since_admit", "y"] + [f"risk_{m}" for m in scores]]
        inner = inner.merge(extra, on=["stay_id", "screen_time"], how="left", validate="many_to_one")
    preds, coefs = [], []
    for scheme in a.schemes:
        for kind in a.kinds:
            if scheme == "pairs" and kind == "mean_logit":
                continue  # nothing is fitted: the same as naive
            risk = np.full(len(table), np.nan)
            name = f"meta_{kind}" if scheme == "naive" else f"meta_{kind}_{scheme}"
            for k in sorted(table["fold"].dropna().unique()):
                te = (table["fold"] == k).to_numpy()
                train = table[~te] if scheme == "naive" else inner[inner["outer_fold"] == k]
                fold_coefs: list = []
                risk[te] = fit_predict(kind, train, table[te], members, scores, a.threads, fold_coefs)
                coefs += [c.assign(model=name, fold=int(k)) for c in fold_coefs]
            preds.append(pd.DataFrame({"stay_id": table["stay_id"], "screen_time": table["screen_time"],
                                       "model": name, "risk": risk, "fold": table["fold"].astype("Int64"),
                                       "split": "test"}))
            print(f"  {name} done [{time.time() - t0:.0f} s]", flush=True)
    pred = pd.concat(preds + [oof[oof.model.isin(members)]], ignore_index=True)
    pred.to_parquet(out / "predictions.parquet", index=False)
    summary = cv_summary(pred, screens)
    summary.to_csv(out / "summary.csv", index=False)
    compared = list(dict.fromkeys(p["model"].iloc[0] for p in preds)) + [m for m in members if m not in scores]
    boot = bootstrap_metrics(pred[pred.model.isin(compared)], keys, stays, reference=a.reference,
                             n_resamples=a.n_boot, seed=0, new_data_only=False)
    diff = boot.differences[boot.differences.metric.isin(["auroc", "auprc"])]
    diff.to_csv(out / "differences.csv", index=False)
    coef = pd.concat(coefs, ignore_index=True) if coefs else pd.DataFrame()
    if len(coef):
        coef.to_csv(out / "coefficients.csv", index=False)
    pd.set_option("display.width", 200)
    print("\npooled out-of-fold (fold mean, sd):\n" + summary.round(4).to_string(index=False))
    print(f"\npaired patient-level bootstrap ({a.n_boot} resamples), model - {a.reference}:\n"
          + diff.round(4).to_string(index=False))
    if len(coef):
        print("\nlogistic meta-learner coefficients per sd of each input, mean (sd) over folds:\n"
              + coef.groupby(["model", "input"], sort=False)["coefficient_per_sd"].agg(["mean", "std"])
              .round(3).to_string())
    print(f"\nwritten {out} [{time.time() - t0:.0f} s]")


if __name__ == "__main__":
    main()
