"""Choose the options of the shipped *full* network by patient-grouped CV on the synthetic cohort (issue 13).

The full variant (SepsisFinder's variable set, CXR finding leaves) has no real data, so its leaves
are chosen on the synthetic linked cohort that the main job (``sepsiscope run``) uses. Candidates
(:func:`cpn.structure.build_expert_network` options): the core network, + derived leaves, + derived
and the six measurement ages, + derived and the 14 (extended) measurement ages; each scored after
EM alone and after the default 40 steps of discriminative refinement (one fit per candidate and
fold: EM's CPDs are kept before the refinement and scored too). Reported per candidate: pooled
out-of-fold AUROC/AUPRC, per-fold AUROC (mean, sd), and on test screens with a recent film that shows
consolidation (probability >= 0.5, film <= 24 h old) the median |in-context log10 B| of
``cxr_consolidation`` and the share of those screens where it exceeds 0.01.

    SEPSISCOPE_THREADS=1 PYTHONPATH=$PWD .venv/bin/python scripts/cpn_full_options.py \\
        [--stays 2000] [--seeds 1] [--folds 3] [--out /work/scratch/full_options] [--candidates core ...]

Writes ``folds.csv`` (one row per candidate, seed and fold) and ``pooled.csv`` into ``--out``.
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

import numpy as np
import pandas as pd

from cpn import SepsisCPN
from cpn.structure import build_expert_network
from ehr.screens import build_screens
from ehr.splits import group_kfold
from ehr.synthetic import generate_cohort
from evaluation.metrics import average_precision, roc_auc

CANDIDATES = {
    "core": {},
    "derived": {"derived": True},
    "derived+age6": {"derived": True, "measurement_age": True},
    "derived+age14": {"derived": True, "measurement_age": "extended"},
}


class _KeepEM(SepsisCPN):
    """SepsisCPN that keeps EM's CPDs (``em_cpds_``) before refining them, so that one fit scores both."""

    def _refine(self, ev, rows, stays, t_state):
        self.em_cpds_ = {v: a.copy() for v, a in self.engine_.cpds.items()}
        return super()._refine(ev, rows, stays, t_state)


def _cxr_weight(model, s_te) -> tuple[float, float]:
    """Median |in-context log10 B| of a shown consolidation and the share above 0.01."""
    shown = np.flatnonzero(((s_te["cxr_consolidation"] >= 0.5) & (s_te["cxr_age_h"] <= 24.0)).to_numpy())
    if not shown.size:
        return np.nan, np.nan
    ex = model.explain(s_te, rows=shown)  # with every screen: the derived leaves read the stay's history
    c = ex.loc[ex["feature"] == "cxr_consolidation", "contribution"].abs()
    return float(c.median()), float((c > 0.01).mean())


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--stays", type=int, default=2000)
    ap.add_argument("--seeds", type=int, nargs="+", default=[1])
    ap.add_argument("--folds", type=int, default=3)
    ap.add_argument("--max-iter", type=int, default=30)
    ap.add_argument("--discriminative", type=int, default=40)
    ap.add_argument("--candidates", nargs="+", default=list(CANDIDATES), choices=list(CANDIDATES))
    ap.add_argument("--out", default="runs/cpn_full_options")
    a = ap.parse_args()
    out = Path(a.out)
    out.mkdir(parents=True, exist_ok=True)
    rows, oof, pooled = [], {}, {}
    for seed in a.seeds:
        c = generate_cohort(a.stays, seed=seed)
        s = build_screens(c.events, c.stays, c.cxr)
        y = s["label"].to_numpy()
        folds = group_kfold(s["subject_id"].to_numpy(), a.folds, random_state=seed)
        for name in a.candidates:
            net = build_expert_network("full", **CANDIDATES[name])
            for fold, (tr, te) in enumerate(folds):
                t0 = time.perf_counter()
                m = _KeepEM(net, max_iter=a.max_iter, discriminative_iter=a.discriminative,
                            random_state=seed).fit(s.iloc[tr])
                fit_s = time.perf_counter() - t0
                s_te = s.iloc[te]
                for tag, cpds in (("+refine", None), ("", m.em_cpds_)):
                    if cpds is not None:
                        m.engine_.set_cpds(cpds)
                    p = m.predict_proba(s_te)[:, 1]
                    med, share = _cxr_weight(m, s_te)
                    key = name + tag
                    oof.setdefault((seed, key), np.full(len(s), np.nan))[te] = p
                    rows.append({"candidate": key, "seed": seed, "fold": fold, "auroc": roc_auc(y[te], p),
                                 "auprc": average_precision(y[te], p), "cxr_cons_median_abs_log10b": med,
                                 "cxr_cons_share_gt_0.01": share, "fit_s": round(fit_s, 1)})
                    print(rows[-1], flush=True)
                pd.DataFrame(rows).to_csv(out / "folds.csv", index=False)
        for (sd, key), p in oof.items():
            if sd == seed:
                pooled[(sd, key)] = {"auroc": roc_auc(y, p), "auprc": average_precision(y, p)}
    folds_df = pd.DataFrame(rows)
    summary = []
    for (seed, key), met in pooled.items():
        f = folds_df[(folds_df.candidate == key) & (folds_df.seed == seed)]
        summary.append({"candidate": key, "seed": seed, "pooled_auroc": met["auroc"], "pooled_auprc": met["auprc"],
                        "fold_auroc_mean": f.auroc.mean(), "fold_auroc_sd": f.auroc.std(ddof=1),
                        "cxr_cons_share_gt_0.01": f["cxr_cons_share_gt_0.01"].mean()})
    summary = pd.DataFrame(summary)
    summary.to_csv(out / "pooled.csv", index=False)
    print(summary.round(4).to_string(index=False))


if __name__ == "__main__":
    main()
