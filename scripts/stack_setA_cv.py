"""The stack against its members on PhysioNet set A: 5-fold patient-grouped CV, 48 h screen label (issue 14).

Outer folds: ``ehr.splits.group_kfold(subject_id, 5)`` without shuffling (scikit-learn's
deterministic ``GroupKFold``; the folds of ``scripts/cpn_cv.py`` and ``scripts/fusion_setA_cv.py``).
Members: the CPN (PhysioNet network, learned half-lives, ``--cpn-max-rows`` screens, ``--cpn-max-iter``
EM iterations, as in the README's CV table) and LightGBM (``gbdt.GBDTClassifier`` defaults, early
stopping on held-out patients), NEWS2 as a feature. Stacks (:func:`fusion.stack_cv.stack_cv`): for
each outer fold the meta-learner is fitted on member predictions of the other folds that never saw
the outer fold (``pairs`` scheme; ``naive`` for comparison) and applied to the outer fold.
``--sequence-oof`` adds r-fusion's sequence-model out-of-fold predictions (naive scheme only: no
inner predictions exist for it). ``--members`` picks the fitted members: ``cpn``, ``lightgbm``
(the reference), ``lightgbm_trend`` (LightGBM with the trend features: change since the previous
value, rolling 6 h / 24 h min and max; ``gbdt.features``), ``lightgbm_shallow`` (depth 2, 400
trees, the best of ``train gbdt``'s grid on set A), ``lightgbm_base`` (LightGBM on the baseline view:
deviation from the stay's own first-24 h mean and measurement counts in 24 h, ``baseline=True``),
``xgboost`` and the multi-horizon members ``<lightgbm member>_h<N>`` (e.g. ``lightgbm_h12``,
``lightgbm_shallow_h24``: the same member trained on onset within ``N`` hours of the same screens,
``GBDTClassifier(label_horizon=N)``; the 48 h label enters only at the meta level).

Reports pooled and per-fold AUROC/AUPRC, the paired patient-level bootstrap difference of each
model against LightGBM (``evaluation.bootstrap.bootstrap_metrics``; every stay resampled, all
models on the same resamples; in set A a stay is a patient), the meta-learners' coefficients and
the training time per fold.

    nice -n 10 env OMP_NUM_THREADS=1 SEPSISCOPE_THREADS=1 .venv/bin/python scripts/stack_setA_cv.py \\
        --data /work/scratch/h-stack --out /work/scratch/h-stack/setA_stack [--sequence-oof DIR]
"""

from __future__ import annotations

import argparse
import json
import re
import time
from pathlib import Path

import pandas as pd

from fusion.stack_cv import cv_summary, stack_cv
from fusion.stacking import StackClassifier
from sepsiscope.datasets import experiment_tables

#: A LightGBM member trained on another label horizon: ``<member>_h<hours>``.
HORIZON_MEMBER = r"(lightgbm(?:_shallow|_trend|_base)?)_h(\d+)"

ZIP = Path(__file__).resolve().parents[2] / "shared" / "data" / "physionet2019" / "training_setA.zip"


def sequence_oof(folder: Path) -> pd.DataFrame:
    """r-fusion's sequence-model out-of-fold file(s) as a ``predictions`` table (model ``sequence``)."""
    files = sorted(folder.glob("*sequence*.parquet"))
    if not files:
        raise FileNotFoundError(f"{folder}: no *sequence*.parquet out-of-fold file")
    p = pd.concat([pd.read_parquet(f) for f in files], ignore_index=True)
    return p.assign(model="sequence", split="test", fold=p["fold"].astype("Int64"))[
        ["stay_id", "screen_time", "model", "risk", "fold", "split"]]


def per_fold_times(timings: pd.DataFrame, members: list[str], stack: str) -> pd.DataFrame:
    """Seconds to train each model for each outer fold; a stack's fold costs its members' outer fits,
    the inner fits that fold needs (pairs holding it) and its meta-learner."""
    t = timings.copy()
    rows = []
    for k in sorted(t.loc[t.stage == "outer", "fold"].unique()):
        row = {"fold": k}
        for m in members:
            row[m] = t.loc[(t.model == m) & (t.stage == "outer") & (t.fold == k), "fit_s"].sum()
        inner = t[(t.stage == "inner") & t.model.isin(members) & t.fold.str.split("+").map(lambda f: k in f)]
        meta = t.loc[(t.model == stack) & (t.stage == "meta") & (t.fold == k), "fit_s"].sum()
        row[f"{stack} (members' outer + inner fits + meta)"] = sum(row[m] for m in members) + inner.fit_s.sum() + meta
        row[f"{stack} meta-learner only"] = meta
        rows.append(row)
    return pd.DataFrame(rows)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--data", type=Path, default=Path("/work/scratch/h-stack"), help="parquet cache folder")
    ap.add_argument("--zip", type=Path, default=ZIP)
    ap.add_argument("--out", type=Path, default=Path("runs/stack_setA"))
    ap.add_argument("--folds", type=int, default=5)
    ap.add_argument("--schemes", nargs="+", default=["pairs", "naive"])
    ap.add_argument("--cpn-max-rows", type=int, default=300_000)
    ap.add_argument("--cpn-max-iter", type=int, default=15)
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--sequence-oof", type=Path, default=None)
    ap.add_argument("--n-boot", type=int, default=1000)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--max-stays", type=int, default=None, help="first N stays only (a quick check)")
    ap.add_argument("--members", nargs="+", default=["cpn", "lightgbm"],
                    help="cpn, lightgbm, lightgbm_trend, lightgbm_shallow, lightgbm_base, xgboost, and "
                         "<lightgbm member>_h<N> (N: label horizon in hours)")
    a = ap.parse_args()
    fixed = {"cpn", "lightgbm", "lightgbm_trend", "lightgbm_shallow", "lightgbm_base", "xgboost"}
    bad = [m for m in a.members if m not in fixed and not re.fullmatch(HORIZON_MEMBER, m)]
    if bad:
        ap.error(f"unknown member(s) {bad}")
    from cpn import SepsisCPN
    from evaluation.bootstrap import bootstrap_metrics
    from gbdt import GBDTClassifier

    t0 = time.time()
    t = experiment_tables("physionet", path=a.zip, cache=a.data, max_stays=a.max_stays)
    screens, stays, news2 = t.screens, t.stays, t.news2
    print(f"{len(screens):,} screens, {screens.stay_id.nunique():,} stays, NEWS2 on {len(news2):,} "
          f"[{time.time() - t0:.0f} s]", flush=True)
    available = {
        "cpn": lambda: SepsisCPN("physionet", max_rows=a.cpn_max_rows, max_iter=a.cpn_max_iter, random_state=a.seed),
        "lightgbm": lambda: GBDTClassifier(random_state=a.seed, n_jobs=a.threads),
        "lightgbm_trend": lambda: GBDTClassifier(trend=True, random_state=a.seed, n_jobs=a.threads),
        "lightgbm_shallow": lambda: GBDTClassifier(max_depth=2, n_estimators=400, early_stopping_rounds=None,
                                                   random_state=a.seed, n_jobs=a.threads),
        "lightgbm_base": lambda: GBDTClassifier(baseline=True, random_state=a.seed, n_jobs=a.threads),
        "xgboost": lambda: GBDTClassifier("xgboost", random_state=a.seed, n_jobs=a.threads, device="cpu")}
    for name in a.members:
        horizon = re.fullmatch(HORIZON_MEMBER, name)
        if horizon:  # the same member trained on another label horizon
            available[name] = (lambda base, h: lambda: available[base]().set_params(label_horizon=float(h)))(
                *horizon.groups())
    members = {name: available[name]() for name in a.members}
    metas = {"logistic": StackClassifier(), "lightgbm": StackClassifier(meta="lightgbm", n_jobs=a.threads)}
    pre = sequence_oof(a.sequence_oof) if a.sequence_oof else None

    def show(rec):
        print(f"  {rec['model']:<26} {rec['stage']:<6} fold {rec['fold']:<6} {rec['fit_s']:8.1f} s "
              f"[{time.time() - t0:.0f} s]", flush=True)

    cv = stack_cv(screens, members, scores=news2, precomputed=pre, n_splits=a.folds, schemes=tuple(a.schemes),
                  metas=metas, fit_params={m: (lambda tr: {"groups": tr["subject_id"]}) for m in members if m != "cpn"},
                  callback=show, cache=a.out / "fits")
    a.out.mkdir(parents=True, exist_ok=True)
    cv.predictions.to_parquet(a.out / "oof_predictions.parquet", index=False)
    cv.timings.to_csv(a.out / "timings.csv", index=False)
    cv.coefficients.to_csv(a.out / "coefficients.csv", index=False)
    if len(cv.inner):  # the pairs / nested meta-learner inputs, for scripts/stack_context_setA.py --inner
        cv.inner.to_parquet(a.out / "inner_predictions.parquet", index=False)
    summary = cv_summary(cv.predictions, screens)
    summary.to_csv(a.out / "summary.csv", index=False)

    main_stack = f"stack_logistic_{a.schemes[0]}"
    compared = [m for m in [main_stack, f"stack_lightgbm_{a.schemes[0]}", "stack_logistic_naive", "lightgbm",
                            "cpn", "sequence", "lightgbm_trend", "lightgbm_shallow", "xgboost"]
                + [m for m in a.members if m == "lightgbm_base" or re.fullmatch(HORIZON_MEMBER, m)]
                if m in set(cv.predictions.model)]
    keys = screens[["stay_id", "screen_time", "onset_in_h"]]
    boot = bootstrap_metrics(cv.predictions[cv.predictions.model.isin(compared)], keys, stays, reference="lightgbm",
                             n_resamples=a.n_boot, seed=a.seed, new_data_only=False)
    diff = boot.differences[boot.differences.metric.isin(["auroc", "auprc"])]
    diff.to_csv(a.out / "differences_vs_lightgbm.csv", index=False)
    times = per_fold_times(cv.timings, list(members), main_stack)
    times.to_csv(a.out / "fold_times.csv", index=False)
    coef = cv.coefficients.groupby(["model", "member"], sort=False)[["coefficient", "coefficient_per_sd", "share"]]
    pd.set_option("display.width", 200)
    print("\npooled out-of-fold (and fold mean, sd):\n" + summary.round(4).to_string(index=False))
    print(f"\npaired patient-level bootstrap ({a.n_boot} resamples), model - lightgbm:\n"
          + diff.round(4).to_string(index=False))
    print("\nmeta-learner coefficients, mean (sd) over folds:\n"
          + coef.agg(["mean", "std"]).round(3).to_string())
    print("\ntraining seconds per outer fold:\n" + times.round(1).to_string(index=False))
    (a.out / "args.json").write_text(json.dumps({k: str(v) for k, v in vars(a).items()}, indent=1))
    print(f"\nwritten {a.out} [{time.time() - t0:.0f} s]")


if __name__ == "__main__":
    main()
