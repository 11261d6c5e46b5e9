"""Chest X-ray studies of the synthetic cohort: when they are taken, what they truly show, and
what an imperfect imaging model would say.

Studies are ordered on arrival (more often in ICU, ED and for heart-failure / COPD patients),
routinely after some operations, on respiratory symptoms in every pneumonia (early: before the
inflammatory labs move), in a share of other infection work-ups, at septic deterioration and as
ICU follow-up films. Ground truth ``truth_<finding>`` in {0, 1} follows the latent state:
consolidation with pneumonia, effusion and oedema with fluid overload (heart failure, septic
resuscitation), effusion also parapneumonic, atelectasis after surgery and in ICU.

``cxr_<finding>`` in [0, 1] are *simulated imaging-model outputs*: sigmoid(b + d * truth +
cross-talk + noise), with separations d giving per-finding AUROCs of roughly 0.8-0.93 (about what
CheXpert-style DenseNets reach). They stand in for a CNN's output until the imaging model scores
real or procedural images; ``image_path`` is null here (procedural images are rendered
separately, from the truth columns).
"""

from __future__ import annotations

import numpy as np

from ehr.schema import CXR_FINDINGS
from ehr.synthetic.physiology import trends

__all__ = ["simulate_cxr", "finding_probabilities", "MODEL_SEPARATION"]

#: logit separation between positive and negative studies in the simulated model output
MODEL_SEPARATION = {"consolidation": 1.6, "effusion": 2.1, "edema": 2.0, "atelectasis": 1.3}
_BASE_LOGIT = -1.8


def simulate_cxr(P, onset_h: np.ndarray, septic: np.ndarray, rng: np.random.Generator):
    """Simulate CXR studies.

    Returns ``(stay_index, t_hours, truth, model)`` with ``truth`` and ``model`` dicts of finding
    -> array, sorted by stay then time; every study lies inside its stay.
    """
    n = len(P["los_h"])
    los = P["los_h"]
    dept = P["dept"]
    idx, tt, forced = [], [], []

    def add(mask, t, force=False):
        sel = np.flatnonzero(mask)
        idx.append(sel)
        tt.append(np.asarray(t)[sel] if np.ndim(t) else np.full(sel.size, t))
        forced.append(np.full(sel.size, force))

    p_adm = np.array([0.25, 0.15, 0.6, 0.45])[dept] + 0.5 * (P["copd"] | P["hf"])
    add(rng.random(n) < p_adm, rng.uniform(0.2, 3.0, n))
    add(P["surgical"] & (rng.random(n) < 0.4), P["surgery_h"] + rng.uniform(1.0, 4.0, n))
    add(P["pneumonia"], P["cxr_h"], force=True)  # respiratory symptoms: always imaged
    add(P["infected"] & ~P["pneumonia"] & (rng.random(n) < 0.35),
        P["suspicion_h"] + rng.uniform(0.0, 6.0, n))
    add(septic & (rng.random(n) < 0.5), onset_h + rng.uniform(-2.0, 6.0, n))
    # ICU follow-up films: each day with probability 0.35
    icu = np.flatnonzero(dept == 2)
    days = np.floor(los[icu] / 24.0).astype(np.int64)
    di = np.repeat(icu, days)
    dd = np.arange(di.size) - np.repeat(np.cumsum(days) - days, days)
    keep = rng.random(di.size) < 0.35
    idx.append(di[keep])
    tt.append((24.0 * (dd + 1) + rng.uniform(6.0, 10.0, di.size))[keep])
    forced.append(np.zeros(keep.sum(), bool))

    i = np.concatenate(idx)
    t = np.concatenate(tt)
    f = np.concatenate(forced)
    ok = np.isfinite(t) & (t >= 0.05) & (t < los[i] - 1 / 60.0)
    i, t, f = i[ok], t[ok], f[ok]
    order = np.lexsort((t, i))
    i, t, f = i[order], t[order], f[order]

    u = rng.random((4, i.size))
    p_true = finding_probabilities(P, i, t, onset_h, septic)
    truth = {k: (u[j] < p_true[k]).astype(np.int64) for j, k in enumerate(CXR_FINDINGS)}
    truth["consolidation"] = np.where(f, 1, truth["consolidation"])
    # the model confuses look-alike opacities (consolidation vs atelectasis / effusion, oedema vs effusion)
    cross = {
        "consolidation": 0.6 * truth["atelectasis"] + 0.4 * truth["effusion"],
        "effusion": 0.3 * truth["edema"],
        "edema": 0.5 * truth["effusion"],
        "atelectasis": 0.4 * truth["consolidation"],
    }
    subject = rng.normal(0.0, 0.3, n)[i]  # patient-level habitus / positioning effect
    model = {}
    for k in CXR_FINDINGS:
        logit = _BASE_LOGIT + MODEL_SEPARATION[k] * truth[k] + cross[k] + subject + rng.normal(0, 1, i.size)
        model[k] = np.round(1.0 / (1.0 + np.exp(-logit)), 4)
    return i, t, truth, model


def finding_probabilities(P, i, t, onset_h: np.ndarray, septic: np.ndarray) -> dict[str, np.ndarray]:
    """Probability that a film of stay ``i`` (plan index) at hour ``t`` shows each finding.

    The lung state of the latent trajectory (pneumonia activity, fluid overload, time after
    onset and after surgery, ICU); :func:`simulate_cxr` draws each study's truth from it and
    :mod:`ehr.synthetic.lung` evaluates it at any hour.
    """
    i = np.asarray(i, dtype=np.int64)
    t = np.asarray(t, dtype="float64")
    dept = P["dept"]
    x = trends(t, i, P, wander=False)
    with np.errstate(invalid="ignore"):
        pneu_active = P["pneumonia"][i] & (t >= P["infection_h"][i]) & (t < P["infection_h"][i] + 336.0)
        after_onset = septic[i] & (t >= onset_h[i])
        post_surg = (t >= P["surgery_h"][i]) & (t < P["surgery_h"][i] + 72.0)
    icu_i = dept[i] == 2
    p_true = {
        "consolidation": np.where(pneu_active, 0.95, 0.03 + 0.05 * P["copd"][i]),
        "effusion": np.clip(0.04 + 0.55 * x["overload"] + 0.3 * pneu_active + 0.2 * after_onset
                            + 0.1 * post_surg, 0, 0.95),
        "edema": np.clip(0.02 + 0.65 * x["overload"] + 0.25 * (after_onset & (t >= onset_h[i] + 12.0)),
                         0, 0.95),
        "atelectasis": np.clip(0.06 + 0.45 * post_surg + 0.1 * icu_i + 0.1 * P["copd"][i], 0, 0.95),
    }
    return p_true
