"""What the CXR *findings* add to the CPN in pneumonia-associated sepsis (issue 13 item 5).

On the synthetic linked cohort, the CPN on the full network is fitted twice on the same training
screens: with the CXR finding leaves (``cxr_<finding>``) and without them (the finding leaves
dropped from the network; the film-timing leaf ``xray_taken_24h`` stays in both, so the lift is
what the findings add beyond "a film was taken"). Both are scored on the same test screens. The
pneumonia-associated subgroup is every non-septic stay plus the septic stays whose infection is
pneumonia. Reported: AUROC/AUPRC overall and in the subgroup, the subgroup AUROC lift with a
paired stay-level bootstrap CI and DeLong's clustered test, and the in-context log10 Bayes
factor of each finding on test screens with a recent film that shows it (probability >= 0.5,
film <= 24 h old).

    PYTHONPATH=$PWD .venv/bin/python scripts/cxr_lift.py [--train 1500] [--test 800] [--seed 10] \\
        [--cache /work/scratch/cxr] [--n-boot 500] [--set key=value ...]

``--set`` passes SepsisCPN arguments to both fits (e.g. ``--set half_lives=prior``).
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import numpy as np
import pandas as pd

from cpn import SepsisCPN
from cpn.structure import SHIPPED_OPTIONS, build_expert_network
from ehr.schema import CXR_FINDINGS
from ehr.screens import build_screens
from ehr.synthetic import generate_cohort
from evaluation.bootstrap import cluster_counts, percentile_ci
from evaluation.delong import delong_test
from evaluation.metrics import average_precision, roc_auc

FINDING_NODES = [f"cxr_{f}" for f in CXR_FINDINGS]


def cohort_screens(n: int, seed: int, offset: int, cache: Path | None):
    """Screens and stays of one synthetic cohort (ids offset so cohorts never collide), cached."""
    paths = (cache / f"screens_{n}_{seed}.parquet", cache / f"stays_{n}_{seed}.parquet") if cache else None
    if paths and all(p.exists() for p in paths):
        return pd.read_parquet(paths[0]), pd.read_parquet(paths[1])
    c = generate_cohort(n, seed=seed)
    shift = {"stay_id": lambda d: d.stay_id + offset, "subject_id": lambda d: d.subject_id + offset}
    stays, events, cxr = c.stays.assign(**shift), c.events.assign(**shift), c.cxr.assign(**shift)
    s = build_screens(events, stays, cxr)
    if paths:
        cache.mkdir(parents=True, exist_ok=True)
        s.to_parquet(paths[0])
        stays.to_parquet(paths[1])
    return s, stays


def _value(v: str):
    try:
        return json.loads(v)
    except json.JSONDecodeError:
        return v


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--train", type=int, default=1500)
    ap.add_argument("--test", type=int, default=800)
    ap.add_argument("--seed", type=int, default=10)
    ap.add_argument("--cache", default=None, help="folder for the screens of each cohort")
    ap.add_argument("--n-boot", type=int, default=500)
    ap.add_argument("--set", nargs="*", default=[], help="SepsisCPN key=value (JSON values)")
    ap.add_argument("--out", default=None, help="write the results as JSON here")
    ap.add_argument("--save", default=None, help="save the model with findings here (a model directory)")
    a = ap.parse_args()
    cache = Path(a.cache) if a.cache else None
    s_tr, _ = cohort_screens(a.train, a.seed, 0, cache)
    s_te, st_te = cohort_screens(a.test, a.seed + 2, 20_000_000, cache)
    kw = {"max_iter": 15, "random_state": 0, **{k: _value(v) for k, v in (x.split("=", 1) for x in a.set)}}
    stays = st_te.set_index("stay_id")
    septic = stays["sepsis"].astype(bool)
    pneu = stays["pneumonia"].fillna(False).astype(bool)
    sub = (~septic | pneu).reindex(s_te.stay_id).to_numpy()
    y = s_te["label"].to_numpy()
    print(f"train {len(s_tr):,} screens; test {len(s_te):,} (pneumonia-associated subgroup {int(sub.sum()):,} "
          f"screens, {int(y[sub].sum())} positive, {int((septic & pneu).sum())} septic pneumonia stays)", flush=True)

    # the shipped full network (its options, cpn.structure.SHIPPED_OPTIONS), with and without the findings
    full = build_expert_network("full", **SHIPPED_OPTIONS["full"])
    no_findings = build_expert_network("full", drop=FINDING_NODES, **SHIPPED_OPTIONS["full"])
    risk, models = {}, {}
    for name, net in (("with findings", full), ("without findings", no_findings)):
        t0 = time.perf_counter()
        m = SepsisCPN(net, **kw).fit(s_tr)
        risk[name] = m.predict_proba(s_te)[:, 1]
        models[name] = m
        print(f"{name}: fit {time.perf_counter() - t0:.0f} s; AUROC {roc_auc(y, risk[name]):.4f} "
              f"AUPRC {average_precision(y, risk[name]):.4f}; pneumonia subgroup AUROC "
              f"{roc_auc(y[sub], risk[name][sub]):.4f} AUPRC {average_precision(y[sub], risk[name][sub]):.4f}; "
              f"half-lives x {m.half_life_scale_}", flush=True)

    ys, ra, rb = y[sub], risk["with findings"][sub], risk["without findings"][sub]
    groups = s_te["stay_id"].to_numpy()[sub]
    dl = delong_test(ys, ra, rb, groups=groups)
    uniq, inv = np.unique(groups, return_inverse=True)
    diffs = []
    for counts in cluster_counts(len(uniq), a.n_boot, seed=0):
        w = counts[inv].astype(float)
        if w[ys == 1].sum() > 0 and w[ys == 0].sum() > 0:
            diffs.append(roc_auc(ys, ra, sample_weight=w) - roc_auc(ys, rb, sample_weight=w))
    lo, hi = percentile_ci(np.array(diffs))
    print(f"\npneumonia-associated AUROC lift (with - without findings): {dl.difference:+.4f} "
          f"[paired stay bootstrap 95% CI {lo:+.4f}, {hi:+.4f}; DeLong clustered p {dl.p_value:.3g}]")

    m = models["with findings"]
    if a.save:
        m.save(a.save)
    bf = m.bayes_factors(s_te)
    age = s_te["cxr_age_h"].to_numpy(dtype=float) if "cxr_age_h" in s_te else np.full(len(s_te), np.nan)
    bfs = {}
    for v in FINDING_NODES:
        if v not in s_te.columns or v not in bf["in_context"]:
            continue
        p = s_te[v].to_numpy(dtype=float)
        present = (p >= 0.5) & (age <= 24.0)
        x = bf["in_context"][v][present]
        x = x[np.isfinite(x)]
        bfs[v] = {"n": int(present.sum()), "median_log10_bf": float(np.median(x)) if len(x) else float("nan"),
                  "share_abs_ge_0.05": float(np.mean(np.abs(x) >= 0.05)) if len(x) else float("nan")}
        print(f"{v}: present on {bfs[v]['n']:,} test screens (film <= 24 h); in-context log10 B median "
              f"{bfs[v]['median_log10_bf']:+.3f}, |log10 B| >= 0.05 on {bfs[v]['share_abs_ge_0.05']:.0%}; "
              f"CPD P(present | parents) = {np.round(m.engine_.cpds[v][1].ravel(), 3).tolist()}")
    if a.out:
        res = {"args": vars(a), "lift": dl.difference, "boot_ci": [lo, hi], "delong_p": dl.p_value,
               "auroc_sub": {k: roc_auc(ys, r[sub]) for k, r in risk.items()}, "bayes_factors": bfs}
        Path(a.out).write_text(json.dumps(res, indent=1))


if __name__ == "__main__":
    main()
