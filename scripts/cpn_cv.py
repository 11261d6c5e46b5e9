"""CPN patient-grouped cross-validation on PhysioNet set A, with node ablations (issue 3).

Each configuration is a list of observable nodes dropped from the PhysioNet network
(:func:`cpn.structure.build_expert_network` ``drop=``): context parents (department, age band,
hours since admission) and the informative-missingness leaves (``*_tested_24h``). Every
configuration is fitted on the same folds (``GroupKFold`` by patient) and scored on the held-out
fold (with ``--half-life-search``, once per half-life search). Screen-level AUROC/AUPRC of the 48 h ``label`` are reported pooled over the out-of-fold
screens and per fold (mean, sd), next to NEWS2 on the same screens (the screens with a NEWS2
observation in their hour; the models are also reported on exactly that subset) and, with
``--gbdt``, LightGBM on the same folds. The fitted half-life multipliers are printed per fold.

    nice -n 5 .venv/bin/python scripts/cpn_cv.py --out runs/cpn_cv \\
        [--configs full no_context no_hours no_tested] [--gbdt] [--screens CACHE.parquet] \\
        [--half-life-search grid golden] [--discriminative 150 --disc-lr 0.05 --disc-l2 78.4] \\
        [--evidence-states 8 --evidence-cuts quantile] [--derived] [--measurement-age [extended]]

``--discriminative N`` adds, per configuration, a ``CONFIG+disc`` model: the same network with the
discriminative refinement of its CPDs after EM (``SepsisCPN(discriminative_iter=N)``, issue 13).
After the pooled table, the AUROC within bands of hours since admission and its positives-weighted
mean (:func:`evaluation.stratified.auroc_by_hours_band`: screens with new data before onset) is
printed per model and written to ``bands.csv``.

Writes ``cv_results.csv`` (one row per configuration and fold, plus pooled rows) and
``half_lives.json`` into ``--out``; with ``--save-predictions`` also the out-of-fold risks
(``predictions.parquet``).
"""

from __future__ import annotations

import argparse
import json
import os
import time
from pathlib import Path

import numpy as np
import pandas as pd
from sklearn.model_selection import GroupKFold

from cpn import SepsisCPN
from cpn.structure import build_expert_network
from ehr.screens import build_screens
from ehr.sources.physionet import read_physionet
from evaluation.metrics import average_precision, roc_auc
from evaluation.news2 import news2_predictions

CONFIGS = {
    "full": [],
    "no_context": ["department", "age_band", "hours_band"],
    "no_hours": ["hours_band"],
    "no_department": ["department"],
    "no_age": ["age_band"],
    "no_tested": ["lact_tested_24h", "bloodgas_tested_24h"],
    "no_context_no_tested": ["department", "age_band", "hours_band", "lact_tested_24h",
                             "bloodgas_tested_24h"],
}


def _age_tag(measurement_age) -> str:
    return "" if not measurement_age else "+age" if measurement_age == "six" else f"+age_{measurement_age}"


def _metrics(y, p):
    return {"auroc": roc_auc(y, p), "auprc": average_precision(y, p)}


def _bands(screens, stays, risks: dict) -> pd.DataFrame:
    from ehr.estimator import predictions_frame
    from evaluation.stratified import auroc_by_hours_band

    pred = pd.concat([predictions_frame(screens, r, model=name, split="cv") for name, r in risks.items()])
    return auroc_by_hours_band(pred, screens, stays)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--zip", default=str(Path(__file__).resolve().parents[2] / "shared" / "data"
                                         / "physionet2019" / "training_setA.zip"))
    ap.add_argument("--screens", default=None, help="screens parquet cache (written when absent)")
    ap.add_argument("--out", default="runs/cpn_cv")
    ap.add_argument("--configs", nargs="+", default=["full", "no_context", "no_hours", "no_tested"],
                    choices=sorted(CONFIGS))
    ap.add_argument("--folds", type=int, default=5)
    ap.add_argument("--max-folds", type=int, default=None, help="run only the first N folds")
    ap.add_argument("--max-rows", type=int, default=300_000, help="0: every training screen")
    ap.add_argument("--max-iter", type=int, default=15)
    ap.add_argument("--half-lives", default="learn", choices=["learn", "prior"])
    ap.add_argument("--half-life-search", nargs="+", default=["grid"], choices=["grid", "golden"],
                    help="SepsisCPN half_life_search; several: each configuration is fitted with each "
                         "(named CONFIG+golden for the golden-section search)")
    ap.add_argument("--discriminative", type=int, default=0, metavar="N",
                    help="also fit each configuration with N discriminative refinement steps (CONFIG+disc)")
    ap.add_argument("--derived", action="store_true",
                    help="networks with the derived evidence leaves (build_expert_network(derived=True)); names +derived")
    ap.add_argument("--measurement-age", nargs="?", const="six", default=None, choices=["six", "extended"],
                    help="networks with the six measurement-age leaves (build_expert_network(measurement_age=True); "
                         "names +age); --measurement-age extended: measurement_age='extended' (14 ages, sepsis a "
                         "parent of each; names +age_extended)")
    ap.add_argument("--evidence-states", type=int, default=None, metavar="K",
                    help="concept leaves re-cut at K training-fold quantile states (SepsisCPN evidence_states); "
                         "names +qK (+cK with --evidence-cuts clinical)")
    ap.add_argument("--evidence-cuts", default="quantile", choices=["quantile", "clinical"])
    ap.add_argument("--hours-cuts", type=float, nargs="+", default=None, metavar="H",
                    help="hours_band cut-points instead of 6 24 72 (build_expert_network hours_cuts); names +hH1_H2_...")
    ap.add_argument("--disc-only", action="store_true", help="with --discriminative: only the +disc models")
    ap.add_argument("--disc-lr", type=float, default=0.05)
    ap.add_argument("--disc-l2", type=float, default=78.4,
                    help="the refinement's L2 pull on the summed conditional log-likelihood (SepsisCPN discriminative_l2)")
    ap.add_argument("--gbdt", action="store_true", help="also fit LightGBM (defaults) on the same folds")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--save-predictions", action="store_true",
                    help="also write the out-of-fold risks (stay_id, screen_time, label, one column per model) "
                         "to predictions.parquet")
    a = ap.parse_args()
    out = Path(a.out)
    out.mkdir(parents=True, exist_ok=True)

    t0 = time.time()
    cohort = read_physionet(a.zip)
    events, stays = cohort.events, cohort.stays
    if a.screens and Path(a.screens).exists():
        s = pd.read_parquet(a.screens)
    else:
        s = build_screens(events, stays)
        if a.screens:
            s.to_parquet(a.screens)
    s = s.reset_index(drop=True)
    news2, n_unscored = news2_predictions(events, stays, s)
    del events
    # NEWS2 scores only the screens with a NEWS2 observation in their hour; align them by key
    key = pd.MultiIndex.from_arrays([s["stay_id"].to_numpy(), s["screen_time"].to_numpy()])
    nkey = pd.MultiIndex.from_arrays([news2["stay_id"].to_numpy(), news2["screen_time"].to_numpy()])
    news2_risk = pd.Series(news2["risk"].to_numpy(), index=nkey).reindex(key).to_numpy()
    has_news2 = ~np.isnan(news2_risk)
    y = s["label"].to_numpy()
    print(f"{len(s):,} screens, {s['stay_id'].nunique():,} stays, label rate {y.mean():.4f}; "
          f"NEWS2 scored on {int(has_news2.sum()):,} ({n_unscored:,} without an observation) "
          f"[{time.time() - t0:.0f} s]", flush=True)

    folds = list(GroupKFold(n_splits=a.folds).split(s, y, groups=s["subject_id"]))[: a.max_folds]
    searches = {"grid": "", "golden": "+golden"}
    discs = ([] if a.disc_only else [0]) + ([a.discriminative] if a.discriminative else [])
    res_tag = f"+{a.evidence_cuts[0]}{a.evidence_states}" if a.evidence_states else ""
    res_tag += "+h" + "_".join(f"{c:g}" for c in a.hours_cuts) if a.hours_cuts else ""
    cpn_models = {f"{c}{'+derived' if a.derived else ''}{_age_tag(a.measurement_age)}{res_tag}{searches[h]}{'+disc' if d else ''}": (c, h, d) for c in a.configs
                  for h in a.half_life_search for d in discs}
    models = list(cpn_models) + (["lightgbm"] if a.gbdt else [])
    risk = {m: np.full(len(s), np.nan) for m in models}
    rows, half_lives = [], {}
    for k, (tr, te) in enumerate(folds):
        for name in models:
            t = time.time()
            if name == "lightgbm":
                from gbdt import GBDTClassifier

                m = GBDTClassifier(random_state=a.seed, n_jobs=int(os.environ.get("SEPSISCOPE_THREADS") or 2)).fit(s.iloc[tr], groups=s["subject_id"].iloc[tr])
                info = ""
            else:
                config, search, disc = cpn_models[name]
                net = build_expert_network("physionet", drop=CONFIGS[config], derived=a.derived,
                                           measurement_age=a.measurement_age, hours_cuts=a.hours_cuts)
                m = SepsisCPN(net, half_lives=a.half_lives, max_rows=a.max_rows or None, max_iter=a.max_iter,
                              half_life_search=search, random_state=a.seed + k, discriminative_iter=disc,
                              discriminative_lr=a.disc_lr, discriminative_l2=a.disc_l2,
                              evidence_states=a.evidence_states, evidence_cuts=a.evidence_cuts).fit(s.iloc[tr])
                half_lives.setdefault(name, []).append({"scale": m.half_life_scale_, "hours": m.half_lives_,
                                                        "profile": m.half_life_profile_})
                info = f" half-life x {m.half_life_scale_}, EM {len(m.em_history_)} it"
                if disc:
                    h = m.discriminative_history_
                    vals = [r["val"] for r in h if "val" in r]  # (a held-out score only with early stopping)
                    info += (f", discriminative {len(h)} steps" + (f" (held-out AUROC {max(vals):.4f})" if vals else "")
                             if h else "")

            risk[name][te] = m.predict_proba(s.iloc[te])[:, 1]
            yt, pt, hn = y[te], risk[name][te], has_news2[te]
            rows.append({"config": name, "fold": k, **_metrics(yt, pt),
                         **{f"{key}_news2_screens": v for key, v in _metrics(yt[hn], pt[hn]).items()},
                         "fit_s": round(time.time() - t, 1)})
            print(f"fold {k} {name}: AUROC {rows[-1]['auroc']:.4f} AUPRC {rows[-1]['auprc']:.4f} "
                  f"({rows[-1]['fit_s']} s){info}", flush=True)
        hn = has_news2[te]
        rows.append({"config": "news2", "fold": k, "auroc_news2_screens": roc_auc(y[te][hn], news2_risk[te][hn]),
                     "auprc_news2_screens": average_precision(y[te][hn], news2_risk[te][hn])})

    done = np.concatenate([te for _, te in folds])
    pooled = []
    for name in models:
        p = risk[name][done]
        hn = has_news2[done]
        pooled.append({"config": name, "fold": "pooled", **_metrics(y[done], p),
                       **{f"{key}_news2_screens": v for key, v in _metrics(y[done][hn], p[hn]).items()}})
    hn = has_news2[done]
    pooled.append({"config": "news2", "fold": "pooled",
                   "auroc_news2_screens": roc_auc(y[done][hn], news2_risk[done][hn]),
                   "auprc_news2_screens": average_precision(y[done][hn], news2_risk[done][hn])})
    res = pd.DataFrame(rows + pooled)
    res.to_csv(out / "cv_results.csv", index=False)
    (out / "half_lives.json").write_text(json.dumps(half_lives, indent=2))
    per_fold = res[res.fold != "pooled"].groupby("config")[
        ["auroc", "auprc", "auroc_news2_screens", "auprc_news2_screens"]].agg(["mean", "std"])
    print("\npooled out-of-fold:\n" + res[res.fold == "pooled"].round(4).to_string(index=False))
    print("\nper fold (mean, sd):\n" + per_fold.round(4).to_string())
    for name, fits in half_lives.items():
        if len(fits) < 2:
            continue
        # multipliers vary on a log scale: mean and t-interval of log2(multiplier) across folds
        from scipy import stats

        print(f"\nhalf-life multipliers, {name} (geometric mean [95% t-CI across {len(fits)} folds]; "
              "no decay = held-out likelihood still rising at the upper bound):")
        for g in fits[0]["scale"]:
            x = np.log2([f["scale"][g] for f in fits])
            hw = stats.t.ppf(0.975, len(x) - 1) * x.std(ddof=1) / np.sqrt(len(x))
            nd = sum(bool(f["profile"].get(g, {}).get("no_decay")) for f in fits)
            print(f"  {g}: x{2 ** x.mean():.3g} [{2 ** (x.mean() - hw):.3g}, {2 ** (x.mean() + hw):.3g}]"
                  f"{f'; no decay in {nd}/{len(fits)} folds' if nd else ''}")
    if a.save_predictions:
        oof = s.loc[done, ["stay_id", "screen_time", "hours_since_admit", "label"]].copy()
        for name in models:
            oof[name] = risk[name][done]
        oof.to_parquet(out / "predictions.parquet", index=False)
    bands = _bands(s.iloc[done], stays, {name: risk[name][done] for name in models})
    bands.to_csv(out / "bands.csv", index=False)
    print("\nAUROC within bands of hours since admission (screens with new data before onset):\n"
          + bands.pivot(index="model", columns="band", values="auroc").round(4).to_string())
    print(f"\nwritten {out / 'cv_results.csv'} [{time.time() - t0:.0f} s]")


if __name__ == "__main__":
    main()
